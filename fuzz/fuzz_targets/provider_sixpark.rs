//! Six Park through `delivery::verify`: hex HMAC-SHA256, then the JSON:API `data.id`/`even_type`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::provider::run("sixpark", data));
