//! What a provider sees of a request, and why it may refuse one.

use http::HeaderMap;
use time::OffsetDateTime;

/// A request as the signature checks see it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Its headers.
    pub headers: Headers<'a>,
    /// The raw body (empty while only the headers are checked).
    pub body: &'a [u8],
    /// When the ingress received it; freshness checks compare against this.
    pub received_at: OffsetDateTime,
}

impl<'a> Request<'a> {
    /// A request made of `headers` and `body`, received at `received_at`.
    pub fn new(headers: &'a HeaderMap, body: &'a [u8], received_at: OffsetDateTime) -> Self {
        Self {
            headers: Headers(headers),
            body,
            received_at,
        }
    }
}

/// Request headers with the lookups providers need.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a>(pub &'a HeaderMap);

impl<'a> Headers<'a> {
    /// The value of `name`, which must be present once, non-empty and text.
    ///
    /// The one place that decides what a missing, repeated or unreadable signature header is.
    pub fn require(&self, name: &'static str) -> Result<&'a str, Refusal> {
        let mut values = self.0.get_all(name).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Err(Refusal::Missing { header: name }),
            (Some(_), Some(_)) => return Err(Refusal::Duplicate { header: name }),
            (Some(value), None) => value,
        };
        if value.is_empty() {
            return Err(Refusal::Missing { header: name });
        }
        // A signature that is not text cannot match any hex or base64 tag.
        value
            .to_str()
            .map_err(|_| Refusal::Mismatch { header: name })
    }

    /// Whether `name` was sent more than once.
    pub fn repeated(&self, name: &str) -> bool {
        self.0.get_all(name).iter().nth(1).is_some()
    }

    /// The value of `name` as text, if present once.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.get(name)?.to_str().ok()
    }
}

/// Headers a provider asked to keep with the delivery ([`super::Provider::forwarded_headers`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Forwarded<'a>(pub &'a [(String, String)]);

impl Forwarded<'_> {
    /// The value of a forwarded header (names are lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a provider refused a request's signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A header the signature needs is absent or empty.
    #[error("missing signature header `{header}`")]
    Missing {
        /// The header that was expected.
        header: &'static str,
    },
    /// A signed header is present but unusable, e.g. a timestamp that is not an integer.
    #[error("header `{header}` {problem}")]
    Unreadable {
        /// The header at fault.
        header: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A header the signature covers was sent more than once: which one counts is ambiguous.
    #[error("header `{header}` was sent more than once")]
    Duplicate {
        /// The repeated header.
        header: &'static str,
    },
    /// The signed timestamp is outside the source's tolerance.
    #[error(
        "timestamp in header `{header}` is {skew_secs} s from the receive time (tolerance {tolerance_secs} s)"
    )]
    Stale {
        /// The timestamp header.
        header: &'static str,
        /// Signed time minus receive time, in seconds.
        skew_secs: i64,
        /// The source's tolerance.
        tolerance_secs: u64,
    },
    /// The signature does not match the request under any configured secret.
    #[error("signature in header `{header}` does not match the body")]
    Mismatch {
        /// The header that was checked.
        header: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_support::headers;

    #[test]
    fn require_table() {
        let map = headers(&[("a", "1"), ("b", ""), ("c", "x"), ("c", "y")]);
        let h = Headers(&map);
        assert_eq!(h.require("a"), Ok("1"));
        assert_eq!(h.require("b"), Err(Refusal::Missing { header: "b" }));
        assert_eq!(h.require("c"), Err(Refusal::Duplicate { header: "c" }));
        assert_eq!(h.require("d"), Err(Refusal::Missing { header: "d" }));
        assert!(h.repeated("c") && !h.repeated("a"));

        let mut map = HeaderMap::new();
        map.insert("e", http::HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert_eq!(
            Headers(&map).require("e"),
            Err(Refusal::Mismatch { header: "e" })
        );
    }
}
