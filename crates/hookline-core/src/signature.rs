//! HMAC checks shared by the providers: label stripping, hex/base64 decoding and
//! constant-time comparison against every configured secret (rotation).

use crate::provider::{Refusal, Request};
use crate::secret::Secret;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};

/// The digest a provider signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA1.
    Sha1,
}

/// Removes an optional `<label>=` prefix such as `sha256=` (label matched case-insensitively).
pub fn strip_label<'a>(value: &'a str, label: &str) -> &'a str {
    let value = value.trim();
    match value.split_once('=') {
        Some((head, rest)) if head.eq_ignore_ascii_case(label) => rest,
        _ => value,
    }
}

/// Decodes a hex signature (any case); `None` when it is not hex.
pub fn decode_hex(value: &str) -> Option<Vec<u8>> {
    hex::decode(value).ok()
}

/// Decodes a base64 signature (standard or URL-safe alphabet, padded or not).
pub fn decode_base64(value: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(value).ok())
}

/// Whether `expected` is the HMAC of `message` under any of `secrets`.
///
/// `verify_slice` compares in constant time and treats a wrong length as a mismatch.
pub fn matches_any(
    algorithm: Algorithm,
    secrets: &[Secret],
    message: &[u8],
    expected: &[u8],
) -> bool {
    secrets.iter().any(|secret| match algorithm {
        Algorithm::Sha256 => verify::<Hmac<sha2::Sha256>>(secret, message, expected),
        Algorithm::Sha1 => verify::<Hmac<sha1::Sha1>>(secret, message, expected),
    })
}

/// The common rule: `header` holds a hex HMAC-SHA256 of the raw body, `sha256=` label optional.
pub fn raw_body_sha256_hex(
    request: &Request<'_>,
    header: &'static str,
    secrets: &[Secret],
) -> Result<(), Refusal> {
    let signature = request.headers.require(header)?;
    decode_hex(strip_label(signature, "sha256"))
        .is_some_and(|tag| matches_any(Algorithm::Sha256, secrets, request.body, &tag))
        .then_some(())
        .ok_or(Refusal::Mismatch { header })
}

fn verify<M: Mac + KeyInit>(secret: &Secret, message: &[u8], expected: &[u8]) -> bool {
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(secret.expose()) else {
        return false;
    };
    mac.update(message);
    mac.verify_slice(expected).is_ok()
}

/// Hex HMAC of `message`, for tests and tools that need to sign like a provider.
pub fn sign_hex(algorithm: Algorithm, secret: &[u8], message: &[u8]) -> String {
    fn run<M: Mac + KeyInit>(secret: &[u8], message: &[u8]) -> String {
        let mut mac = <M as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }
    match algorithm {
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(secret, message),
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(secret, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_labels_case_insensitively() {
        assert_eq!(strip_label("sha256=abc", "sha256"), "abc");
        assert_eq!(strip_label("SHA256=abc", "sha256"), "abc");
        assert_eq!(strip_label("abc", "sha256"), "abc");
        assert_eq!(strip_label("sha1=abc", "sha256"), "sha1=abc");
    }

    #[test]
    fn wrong_length_is_a_mismatch_not_a_prefix_match() {
        let secrets = [Secret::new("k")];
        let full = hex::decode(sign_hex(Algorithm::Sha256, b"k", b"m")).unwrap();
        assert!(matches_any(Algorithm::Sha256, &secrets, b"m", &full));
        assert!(!matches_any(Algorithm::Sha256, &secrets, b"m", &full[..16]));
        assert!(!matches_any(Algorithm::Sha256, &secrets, b"m", &[]));
    }

    #[test]
    fn any_configured_secret_is_accepted() {
        let secrets = [Secret::new("old"), Secret::new("new")];
        let tag = hex::decode(sign_hex(Algorithm::Sha1, b"new", b"m")).unwrap();
        assert!(matches_any(Algorithm::Sha1, &secrets, b"m", &tag));
        assert!(!matches_any(Algorithm::Sha1, &secrets[..1], b"m", &tag));
    }
}
