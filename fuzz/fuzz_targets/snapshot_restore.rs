#![no_main]
//! Fuzz target: see `ors::fuzzing::snapshot_restore`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ors::fuzzing::snapshot_restore(data));
