//! Fuzz target `config`: the body is `gardenstate_replicator::fuzzing::config` (see its doc comment).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gardenstate_replicator::fuzzing::config(data));
