//! Fuzz target `snapshot`: the body is `gardenstate_replicator::fuzzing::snapshot` (see its doc comment).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gardenstate_replicator::fuzzing::snapshot(data));
