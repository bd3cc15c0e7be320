//! The input layout every fuzz target shares. Free of dependencies, so the regression tests
//! in `crates/hookline-core/tests/fuzz_regressions.rs` read crash files with this very code.

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
