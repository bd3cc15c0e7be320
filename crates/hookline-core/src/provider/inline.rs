//! inline (reservations, vouchers, food orders): `sha1=<hex>` over the canonical JSON
//! (keys sorted, as JavaScript prints it) or over the raw body; batches in `events`.

use super::fields::{Malformed, in_element, member_or_null, required_array, required_str};
use super::{Provider, ProviderEvent};
use crate::canonical_json::{canonical_value, canonicalize};
use crate::envelope::format_epoch_millis;
use crate::secret::Secret;
use crate::signature::{Algorithm, decode_hex, matches_any, strip_label};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// inline's webhooks.
pub(crate) struct Inline;

impl Provider for Inline {
    fn name(&self) -> &'static str {
        "inline"
    }

    fn signature_header(&self) -> &'static str {
        "x-hub-signature"
    }

    fn verify(&self, signature: &str, body: &[u8], secrets: &[Secret]) -> bool {
        let Some(tag) = decode_hex(strip_label(signature, "sha1")) else {
            return false;
        };
        // inline signs the sorted form; GitHub-style senders sign the raw body: accept both.
        // The raw-body HMAC goes first: it is far cheaper than canonicalizing.
        matches_any(Algorithm::Sha1, secrets, body, &tag)
            || canonicalize(body).is_ok_and(|canonical| {
                matches_any(Algorithm::Sha1, secrets, canonical.as_bytes(), &tag)
            })
    }

    fn events(&self, body: &Value) -> Result<Vec<ProviderEvent>, Malformed> {
        required_array(body, "events")?
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let provider_type =
                    required_str(event, "type").map_err(|e| in_element("events", i, e))?;
                Ok(ProviderEvent {
                    // inline events carry no id: the canonical form's hash identifies a resend.
                    key: hex::encode(Sha256::digest(canonical_value(event).as_bytes())),
                    provider_type: provider_type.to_owned(),
                    occurred_at: event
                        .get("timestamp")
                        .and_then(Value::as_f64)
                        .and_then(format_epoch_millis),
                    data: member_or_null(event, "data"),
                })
            })
            .collect()
    }

    fn type_separator(&self) -> Option<char> {
        Some('-')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_support::{assert_malformed, json};
    use crate::signature::sign_hex;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Golden {
        name: String,
        body: String,
        canonical: String,
        hmac_sha1_hex: String,
    }

    /// Golden vectors made by node; see `testdata/make_inline_golden.js`.
    fn golden() -> Vec<Golden> {
        serde_json::from_str(include_str!("../../testdata/inline_golden.json")).unwrap()
    }

    #[test]
    fn node_signatures_verify() {
        let secrets = [Secret::new("inline-test-secret")];
        for case in golden() {
            let header = format!("sha1={}", case.hmac_sha1_hex);
            assert!(
                Inline.verify(&header, case.body.as_bytes(), &secrets),
                "{}",
                case.name
            );
            assert!(
                Inline.verify(&header.to_uppercase(), case.body.as_bytes(), &secrets),
                "{} (upper-case)",
                case.name
            );
            assert!(
                !Inline.verify(&header, case.body.as_bytes(), &[Secret::new("wrong")]),
                "{} (wrong secret)",
                case.name
            );
            assert!(
                !Inline.verify(&header[..header.len() - 2], case.body.as_bytes(), &secrets),
                "{} (truncated)",
                case.name
            );
            assert_eq!(
                sign_hex(
                    Algorithm::Sha1,
                    b"inline-test-secret",
                    case.canonical.as_bytes()
                ),
                case.hmac_sha1_hex
            );
        }
    }

    #[test]
    fn raw_body_hmac_is_accepted_and_tampering_is_not() {
        let body = br#"{"timestamp": 1, "events": []}"#;
        let secrets = [Secret::new("s1"), Secret::new("s2")];
        let raw = sign_hex(Algorithm::Sha1, b"s2", body);
        assert!(Inline.verify(&format!("sha1={raw}"), body, &secrets));
        let tampered = br#"{"timestamp": 2, "events": []}"#;
        assert!(!Inline.verify(&format!("sha1={raw}"), tampered, &secrets));
    }

    #[test]
    fn batch_elements_become_events() {
        let body = json(
            r#"{"timestamp":1524181344796,"events":[
                {"type":"reservation-time-changed","timestamp":1524181344796,"data":{"id":"r1"}},
                {"type":"order-pickedup","timestamp":1524181344797,"data":{"id":"o1"}}]}"#,
        );
        let events = Inline.events(&body).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].provider_type, "reservation-time-changed");
        assert_eq!(
            events[0].occurred_at.as_deref(),
            Some("2018-04-19T23:42:24.796Z")
        );
        assert_eq!(events[1].data, json(r#"{"id":"o1"}"#));
        let expected = hex::encode(Sha256::digest(
            canonical_value(&body["events"][0]).as_bytes(),
        ));
        assert_eq!(events[0].key, expected);
        assert_ne!(events[0].key, events[1].key);
    }

    #[test]
    fn key_ignores_member_order_and_whitespace() {
        let a = json(r#"{"events":[{"type":"voucher-used","data":{"a":1,"b":2}}]}"#);
        let b = json(r#"{"events":[ { "data" : {"b":2.0,"a":1}, "type":"voucher-used" } ]}"#);
        assert_eq!(
            Inline.events(&a).unwrap()[0].key,
            Inline.events(&b).unwrap()[0].key
        );
    }

    #[test]
    fn required_fields() {
        assert_malformed(&Inline, r#"{"timestamp":1}"#, "`events`");
        assert_malformed(&Inline, r#"{"events":{}}"#, "`events`");
        assert_malformed(
            &Inline,
            r#"{"events":[{"type":"a-b"},{"data":{}}]}"#,
            "events[1]",
        );
    }
}
