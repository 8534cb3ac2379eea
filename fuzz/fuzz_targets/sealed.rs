//! Fuzz target `sealed`: the body is `gardenstate_replicator::fuzzing::sealed` (see its doc comment).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gardenstate_replicator::fuzzing::sealed(data));
