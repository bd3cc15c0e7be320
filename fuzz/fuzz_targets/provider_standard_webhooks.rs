//! Standard Webhooks' header checks (id, timestamp, freshness), signature and body parsing,
//! through `delivery::verify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::provider::run("standard-webhooks", data));
