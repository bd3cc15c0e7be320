//! inline's canonical JSON (`canonical_json::canonicalize`) on raw, unauthenticated bodies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::canonical_json::run(data));
