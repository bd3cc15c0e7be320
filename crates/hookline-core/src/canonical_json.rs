//! Canonical JSON for the "inline" provider's signature, byte-identical to what its JavaScript prints.
//!
//! The provider computes, in JavaScript,
//! `JSON.stringify(sortDeep(JSON.parse(body)))` where `sortDeep` rebuilds each
//! object from `Object.keys(o).sort()`. Matching it means copying three JS
//! behaviours that serde_json does not share: numbers are f64 printed by
//! `Number.prototype.toString`, keys sort by UTF-16 code units, and objects
//! enumerate array-index keys before all others.

use std::cmp::Ordering;

use serde_json::Value;

/// Why a body has no canonical form.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// Not JSON serde_json accepts: bad syntax or UTF-8, a lone surrogate, a number past f64, depth > 128.
    #[error("body has no canonical JSON form: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// Canonical form of a raw JSON body (parse as JSON.parse would, then print as above).
pub fn canonicalize(body: &[u8]) -> Result<String, CanonicalError> {
    // Inputs JS would accept but serde_json rejects (lone surrogates, 1e400 which
    // JS turns into Infinity and prints as null) are errors, so the caller can fall
    // back to a raw-body HMAC instead of signing something JS would not produce.
    let value: Value = serde_json::from_slice(body)?;
    let mut out = String::with_capacity(body.len());
    write_value(&mut out, &value);
    Ok(out)
}

/// Canonical form of an already parsed value (used to hash each `events[i]`).
pub fn canonical_value(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            // JSON.parse yields an f64 for every number, so integers beyond 2^53
            // must round exactly as `as f64` does. ryu-js also prints -0 as "0".
            Some(f) if f.is_finite() => out.push_str(ryu_js::Buffer::new().format_finite(f)),
            // Only reachable if feature unification enables serde_json's arbitrary_precision;
            // JSON.stringify prints non-finite numbers as null.
            _ => out.push_str("null"),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| js_key_order(a, b));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write_value(out, &map[key]);
            }
            out.push('}');
        }
    }
}

/// Order in which a JS object built from sorted keys enumerates them.
fn js_key_order(a: &str, b: &str) -> Ordering {
    match (array_index(a), array_index(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        // UTF-8 byte order differs from Array.prototype.sort for astral
        // characters versus U+E000..=U+FFFF.
        (None, None) => a.encode_utf16().cmp(b.encode_utf16()),
    }
}

/// The numeric value of an ECMAScript array-index key: a canonical decimal in 0..=2^32-2.
fn array_index(key: &str) -> Option<u32> {
    // Rust's parse would also take "+1" and "01", which JS treats as plain strings.
    if key != "0" && (key.starts_with('0') || !key.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    // 2^32-1 fits a u32 but is not an array index (array lengths top out there).
    key.parse().ok().filter(|&n| n != u32::MAX)
}

/// Writes `s` quoted and escaped exactly as `JSON.stringify` does.
fn write_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\x08' => "\\b",
            b'\x0c' => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..0x20 => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `start..i` always lies on char boundaries.
        out.push_str(&s[start..i]);
        start = i + 1;
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(short);
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use sha1::Sha1;
    use std::io::Write;
    use std::process::{Command, Stdio};

    const GOLDEN: &str = include_str!("../testdata/inline_golden.json");

    fn hmac_sha1_hex(key: &[u8], data: &[u8]) -> String {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("any key length");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn golden_vectors_from_node() {
        let cases: Vec<Value> = serde_json::from_str(GOLDEN).expect("golden file is JSON");
        assert!(cases.len() >= 20, "golden file lost its cases");
        for case in &cases {
            let field = |k: &str| case[k].as_str().expect("golden field is a string");
            let (name, body, canonical) = (field("name"), field("body"), field("canonical"));
            let got = canonicalize(body.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: canonicalize failed: {e}"));
            assert_eq!(got, canonical, "{name}: canonical form");
            let parsed: Value = serde_json::from_str(body).expect("golden body parses");
            assert_eq!(
                canonical_value(&parsed),
                canonical,
                "{name}: canonical_value"
            );
            assert_eq!(
                hmac_sha1_hex(b"inline-test-secret", got.as_bytes()),
                field("hmac_sha1_hex"),
                "{name}: signature"
            );
        }
    }

    #[test]
    fn rejects_invalid_json() {
        for body in [&b"{"[..], b"{\"a\":1,}", b"01", b"", b"{} x", b"\"\xff\""] {
            assert!(matches!(
                canonicalize(body),
                Err(CanonicalError::NotJson(_))
            ));
        }
        // JS nests far deeper than serde_json's recursion limit of 128.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(canonicalize(deep.as_bytes()).is_err());
    }

    #[test]
    fn rejects_out_of_range_number() {
        // JS would print Infinity as null; no exact mirror, so refuse.
        assert!(canonicalize(b"1e400").is_err());
        assert!(canonicalize(b"{\"a\":[-1e400]}").is_err());
    }

    #[test]
    fn rejects_lone_surrogates() {
        // JS keeps these and prints "\ud800"; a Rust String cannot hold them.
        assert!(canonicalize(br#""\ud800""#).is_err());
        assert!(canonicalize(br#"{"\udc00":1}"#).is_err());
        assert!(canonicalize(br#"["\ud83d x"]"#).is_err());
    }

    #[test]
    fn numbers_print_like_js() {
        let got = canonicalize(b"[-0, -0.0, 1.0, 1e20, 1e21, 1e-6, 1e-7, 9007199254740993]");
        assert_eq!(
            got.unwrap(),
            "[0,0,1,100000000000000000000,1e+21,0.000001,1e-7,9007199254740992]"
        );
    }

    #[test]
    fn array_index_keys() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("4294967294"), Some(u32::MAX - 1));
        let not_indexes = [
            "",
            "01",
            "-1",
            "+1",
            "1.0",
            " 1",
            "4294967295",
            "4294967296",
        ];
        for key in not_indexes {
            assert_eq!(array_index(key), None, "{key:?}");
        }
    }

    /// Deterministic xorshift64* so the cross-check is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
        fn pick_word<'a>(&mut self, words: &'a str) -> &'a str {
            self.pick(&words.split_whitespace().collect::<Vec<_>>())
        }
    }

    fn gen_ws(rng: &mut Rng, out: &mut String) {
        if rng.below(4) == 0 {
            out.push_str(rng.pick(&[" ", "\n", "\t", "\r\n", "  "]));
        }
    }

    fn gen_digits(rng: &mut Rng, out: &mut String, len: usize) {
        for _ in 0..len {
            out.push(char::from(b'0' + rng.below(10) as u8));
        }
    }

    fn gen_number(rng: &mut Rng, out: &mut String) {
        const SPECIAL: &str = "0 -0 -0.0 1.0 1e21 1e20 1e-7 0.000001 5e-324 9007199254740993 \
            18446744073709551615 18446744073709551616 -9223372036854775808 -9223372036854775809 \
            1.7976931348623157e308 2.2250738585072014e-308 1e-400 0e999 25.0766335 121.5270664 \
            0.1 123456789012345678901234";
        if rng.below(5) == 0 {
            out.push_str(rng.pick_word(SPECIAL));
            return;
        }
        if rng.below(3) == 0 {
            out.push('-');
        }
        // At most 20 integer digits and exponent <= 280 keeps every value finite.
        let int_len = rng.below(21);
        if int_len == 0 {
            out.push('0');
        } else {
            out.push(char::from(b'1' + rng.below(9) as u8));
            gen_digits(rng, out, int_len - 1);
        }
        if rng.below(2) == 0 {
            out.push('.');
            let len = 1 + rng.below(18);
            gen_digits(rng, out, len);
        }
        if rng.below(3) == 0 {
            out.push_str(rng.pick(&["e", "E", "e+", "E-", "e-"]));
            out.push_str(&rng.below(281).to_string());
        }
    }

    fn gen_string(rng: &mut Rng, out: &mut String, max_len: usize) {
        const CHARS: &str = "abzA09 /\"\\\0\x08\t\n\x0c\r\x1f\x7fé範\u{2028}\u{2029}\u{d7ff}\
            \u{e000}\u{fb01}\u{feff}\u{fffd}\u{ffff}\u{10000}😀\u{1f44d}\u{10ffff}";
        let chars: Vec<char> = CHARS.chars().collect();
        out.push('"');
        for _ in 0..rng.below(max_len + 1) {
            match (rng.pick(&chars), rng.below(4)) {
                (c, 1) => push_unicode_escape(rng, out, c),
                ('"', _) => out.push_str("\\\""),
                ('\\', _) => out.push_str("\\\\"),
                ('/', 0) => out.push_str("\\/"),
                ('\u{8}', 0) => out.push_str("\\b"),
                ('\u{c}', 0) => out.push_str("\\f"),
                ('\n', 0) => out.push_str("\\n"),
                ('\r', 0) => out.push_str("\\r"),
                ('\t', 0) => out.push_str("\\t"),
                (c @ '\0'..'\u{20}', _) => push_unicode_escape(rng, out, c),
                (c, _) => out.push(c),
            }
        }
        out.push('"');
    }

    fn push_unicode_escape(rng: &mut Rng, out: &mut String, c: char) {
        for unit in c.encode_utf16(&mut [0; 2]).iter() {
            if rng.below(2) == 0 {
                out.push_str(&format!("\\u{unit:04x}"));
            } else {
                out.push_str(&format!("\\u{unit:04X}"));
            }
        }
    }

    fn gen_key(rng: &mut Rng, out: &mut String) {
        // Empty keys come from gen_string.
        const KEYS: &str = "0 1 2 10 01 00 -1 1.0 4294967294 4294967295 4294967296 a B __proto__ \
            😀 \u{10000} \u{e000} \u{ffff} é";
        if rng.below(2) == 0 {
            gen_string(rng, out, 4);
        } else {
            out.push('"');
            out.push_str(rng.pick_word(KEYS));
            out.push('"');
        }
    }

    fn gen_doc(rng: &mut Rng, out: &mut String, depth: usize) {
        let kind = if depth >= 5 {
            2 + rng.below(4)
        } else {
            rng.below(6)
        };
        gen_ws(rng, out);
        match kind {
            0 => {
                out.push('{');
                for i in 0..rng.below(7) {
                    if i > 0 {
                        out.push(',');
                    }
                    gen_ws(rng, out);
                    gen_key(rng, out);
                    gen_ws(rng, out);
                    out.push(':');
                    gen_doc(rng, out, depth + 1);
                }
                gen_ws(rng, out);
                out.push('}');
            }
            1 => {
                out.push('[');
                for i in 0..rng.below(7) {
                    if i > 0 {
                        out.push(',');
                    }
                    gen_doc(rng, out, depth + 1);
                }
                gen_ws(rng, out);
                out.push(']');
            }
            2 => gen_number(rng, out),
            3 => gen_string(rng, out, 12),
            _ => out.push_str(rng.pick(&["null", "true", "false"])),
        }
        gen_ws(rng, out);
    }

    /// Runs every body through the provider's own JavaScript in one node process.
    fn node_canonicalize(bodies: &[String]) -> Option<Vec<Option<String>>> {
        const SCRIPT: &str = r#"
            const sortDeep = v => Array.isArray(v) ? v.map(sortDeep)
              : v !== null && typeof v === 'object'
                ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sortDeep(v[k])])) : v;
            const bodies = JSON.parse(require('fs').readFileSync(0, 'utf8'));
            const out = bodies.map(b => {
              try { return JSON.stringify(sortDeep(JSON.parse(b))); } catch (e) { return null; }
            });
            process.stdout.write(JSON.stringify(out));
        "#;
        let mut child = match Command::new("node")
            .args(["-e", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("failed to start node: {e}"),
        };
        let input = serde_json::to_vec(bodies).expect("bodies serialize");
        let mut stdin = child.stdin.take().expect("piped stdin");
        // Write from a thread so a full stdout pipe cannot deadlock us.
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().expect("node ran");
        writer
            .join()
            .expect("writer thread")
            .expect("wrote to node");
        assert!(output.status.success(), "node failed: {:?}", output.status);
        Some(serde_json::from_slice(&output.stdout).expect("node printed JSON"))
    }

    #[test]
    fn random_documents_match_node() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let bodies: Vec<String> = (0..400)
            .map(|_| {
                let mut body = String::new();
                gen_doc(&mut rng, &mut body, 0);
                body
            })
            .collect();
        let Some(expected) = node_canonicalize(&bodies) else {
            eprintln!("random_documents_match_node: SKIPPED, node is not installed (not on PATH)");
            return;
        };
        assert_eq!(expected.len(), bodies.len());
        for (body, want) in bodies.iter().zip(&expected) {
            let want = want
                .as_deref()
                .unwrap_or_else(|| panic!("node rejected {body:?}"));
            let got = canonicalize(body.as_bytes())
                .unwrap_or_else(|e| panic!("canonicalize failed on {body:?}: {e}"));
            assert_eq!(got, want, "body: {body:?}");
        }
    }
}
