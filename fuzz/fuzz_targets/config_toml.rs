//! The config loader (`Config::from_toml`: figment layering and validation) on file contents.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::config::run(data));
