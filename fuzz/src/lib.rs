//! What the fuzz targets share: the input layout (a few control bytes, header lines, a body)
//! and the harnesses, so each file in `fuzz_targets/` is one line naming what it attacks.
//!
//! Inputs are text-like on purpose: the seeds in `seeds/` are readable and a crash file
//! shows the headers and body that caused it.

pub mod canonical_json;
pub mod config;
pub mod provider;
pub mod wire;

mod split;

pub use split::{Line, split};

/// The inverse of [`split`], for writing seeds.
pub fn join(headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    out.push(0);
    out.extend_from_slice(body);
    out
}
