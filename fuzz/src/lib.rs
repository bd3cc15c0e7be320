//! What the fuzz targets share: the input layout (a few control bytes, header lines, a body)
//! and the harnesses, so each file in `fuzz_targets/` is one line naming what it attacks.
//!
//! Inputs are text-like on purpose: the seeds in `seeds/` are readable and a crash file
//! shows the headers and body that caused it.

pub mod canonical_json;
pub mod config;
pub mod provider;
pub mod wire;

/// A header line: name and value, as bytes (the targets decide what is valid).
pub type Line<'a> = (&'a [u8], &'a [u8]);

/// Splits `data` into `name: value` header lines (up to the first NUL) and the body after it.
///
/// A line without `:` is a name with an empty value; one space after the colon is dropped.
pub fn split(data: &[u8]) -> (Vec<Line<'_>>, &[u8]) {
    let (head, body) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let headers = head
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| match line.iter().position(|&b| b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        })
        .collect();
    (headers, body)
}

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
