#![no_main]
//! Fuzz target: see `ors::fuzzing::grammars`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ors::fuzzing::grammars(data));
