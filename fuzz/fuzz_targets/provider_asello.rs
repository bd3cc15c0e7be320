//! asello through `delivery::verify`: `sha256=<HEX>` over the raw body, then `notifications[]`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::provider::run("asello", data));
