//! inline's canonical JSON, which hookline computes for every request claiming to be inline.

use hookline_core::canonical_json::{canonical_value, canonicalize};

/// Checks `canonicalize` against serde_json + `canonical_value` (the reference method) and
/// that its output is a fixed point.
pub fn run(body: &[u8]) {
    let fast = canonicalize(body);
    let reference = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|value| canonical_value(&value));
    match &fast {
        Ok(canonical) => {
            assert_eq!(
                Some(canonical),
                reference.as_ref(),
                "differs from the DOM method"
            );
            let again = canonicalize(canonical.as_bytes()).expect("its own output is JSON");
            assert_eq!(&again, canonical, "not idempotent");
            assert!(
                canonical.len() <= 8 * body.len().max(1) + 32,
                "output out of bounds"
            );
        }
        Err(error) => {
            assert_eq!(reference, None, "refused what serde_json accepts: {error}");
            let text = error.to_string();
            let offset: usize = text
                .rsplit_once("at byte ")
                .and_then(|(_, n)| n.parse().ok())
                .expect("the error names a byte offset");
            assert!(offset <= body.len(), "{text} for {} bytes", body.len());
        }
    }
}
