//! `wire::decode_record`: a spool record (versions 1 and 2) read back from disk.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::wire::run_record(data));
