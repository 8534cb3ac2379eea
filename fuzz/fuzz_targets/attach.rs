//! Fuzz target `attach`: the body is `gardenstate::fuzzing::attach` (see its doc comment).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gardenstate::fuzzing::attach(data));
