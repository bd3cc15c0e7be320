//! AuraConnect through `delivery::verify`: `sha256=<hex>` over the raw body, then `id`/`type`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::provider::run("auraconnect", data));
