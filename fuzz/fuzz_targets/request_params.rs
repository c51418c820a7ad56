#![no_main]
//! Fuzz target: see `ors::fuzzing::request_params`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ors::fuzzing::request_params(data));
