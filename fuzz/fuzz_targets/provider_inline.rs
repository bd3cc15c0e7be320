//! inline through `delivery::verify`: `sha1=` over the raw body or its canonical JSON, then `events[]`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::provider::run("inline", data));
