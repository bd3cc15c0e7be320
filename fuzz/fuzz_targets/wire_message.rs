//! `wire::decode`: a queue message, single-delivery headers or a batch body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::wire::run_message(data));
