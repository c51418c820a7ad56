#![no_main]
//! Fuzz target: see `ors::fuzzing::document`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ors::fuzzing::document(data));
