//! Aisle through `delivery::verify`: hex or base64 HMAC-SHA256, optional `sha256=`, then `id`/`event`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::provider::run("aisle", data));
