//! inline (reservations, vouchers, food orders): `sha1=<hex>` over the canonical JSON
//! (keys sorted, as JavaScript prints it) or over the raw body; batches in `events`.

use super::fields::{Malformed, in_element, member_or_null, required_array, required_str};
use super::{Forwarded, Provider, ProviderEvent, Refusal, Request};
use crate::canonical_json::{canonical_value, canonicalize};
use crate::config::SourceSpec;
use crate::signature::{Algorithm, decode_hex, matches_any, sign_hex, strip_label};
use crate::timestamp::{epoch_millis, format_epoch_millis};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::OffsetDateTime;

const SIGNATURE: &str = "x-hub-signature";

/// inline's webhooks.
pub(crate) struct Inline;

impl Provider for Inline {
    fn name(&self) -> &'static str {
        "inline"
    }

    fn signed_headers(&self) -> &'static [&'static str] {
        &[SIGNATURE]
    }

    fn verify(&self, request: &Request<'_>, source: &SourceSpec) -> Result<(), Refusal> {
        let mismatch = Refusal::Mismatch { header: SIGNATURE };
        let signature = request.headers.require(SIGNATURE)?;
        let tag = decode_hex(strip_label(signature, "sha1")).ok_or(mismatch.clone())?;
        // GitHub-style senders sign the raw body, inline the sorted form: accept both, the
        // cheap one first so a forged request costs as little as possible.
        let secrets = &source.secrets;
        let matched = matches_any(Algorithm::Sha1, secrets, request.body, &tag)
            || canonicalize(request.body).is_ok_and(|canonical| {
                matches_any(Algorithm::Sha1, secrets, canonical.as_bytes(), &tag)
            });
        matched.then_some(()).ok_or(mismatch)
    }

    fn events(&self, body: &Value, _: &Forwarded<'_>) -> Result<Vec<ProviderEvent>, Malformed> {
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

    fn sign(
        &self,
        body: &[u8],
        key: &[u8],
        _: &str,
        _: OffsetDateTime,
    ) -> Vec<(&'static str, String)> {
        // inline signs the sorted form; a body JS could not parse is signed as it is.
        let signed = canonicalize(body).map_or_else(|_| body.to_vec(), String::into_bytes);
        vec![(
            SIGNATURE,
            format!("sha1={}", sign_hex(Algorithm::Sha1, key, &signed)),
        )]
    }

    fn example(&self, event_type: Option<&str>, id: &str, now: OffsetDateTime) -> String {
        let millis = epoch_millis(now);
        json!({
            "timestamp": millis,
            "events": [
                {
                    "type": event_type.unwrap_or("reservation-created"),
                    "timestamp": millis,
                    "data": {"id": id, "groupSize": 2, "status": "confirmed", "time": millis + 86_400_000, "customer": {"name": "Ada"}}
                },
                {
                    "type": "order-pickedup",
                    "timestamp": millis + 1,
                    "data": {"id": format!("order-{id}"), "order": {"total": 880, "currency": "TWD"}}
                }
            ]
        })
        .to_string()
    }

    fn retry_schedule(&self) -> &'static [Duration] {
        // "it'll retry every 5 seconds. And it'll retry at most to the 60th seconds."
        const SCHEDULE: [Duration; 12] = [Duration::from_secs(5); 12];
        &SCHEDULE
    }

    fn type_separator(&self) -> Option<char> {
        Some('-')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_support::{accepts, assert_malformed, json};
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
        let secrets = ["inline-test-secret"];
        for case in golden() {
            let header = format!("sha1={}", case.hmac_sha1_hex);
            assert!(
                accepts(&Inline, SIGNATURE, &header, case.body.as_bytes(), &secrets),
                "{}",
                case.name
            );
            assert!(
                accepts(
                    &Inline,
                    SIGNATURE,
                    &header.to_uppercase(),
                    case.body.as_bytes(),
                    &secrets
                ),
                "{} (upper-case)",
                case.name
            );
            assert!(
                !accepts(
                    &Inline,
                    SIGNATURE,
                    &header,
                    case.body.as_bytes(),
                    &["wrong"]
                ),
                "{} (wrong secret)",
                case.name
            );
            assert!(
                !accepts(
                    &Inline,
                    SIGNATURE,
                    &header[..header.len() - 2],
                    case.body.as_bytes(),
                    &secrets
                ),
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
        let secrets = ["s1", "s2"];
        let raw = format!("sha1={}", sign_hex(Algorithm::Sha1, b"s2", body));
        assert!(accepts(&Inline, SIGNATURE, &raw, body, &secrets));
        let tampered = br#"{"timestamp": 2, "events": []}"#;
        assert!(!accepts(&Inline, SIGNATURE, &raw, tampered, &secrets));
    }

    #[test]
    fn batch_elements_become_events() {
        let body = json(
            r#"{"timestamp":1524181344796,"events":[
                {"type":"reservation-time-changed","timestamp":1524181344796,"data":{"id":"r1"}},
                {"type":"order-pickedup","timestamp":1524181344797,"data":{"id":"o1"}}]}"#,
        );
        let events = Inline.events(&body, &Forwarded::default()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].provider_type, "reservation-time-changed");
        assert_eq!(
            events[0].occurred_at.as_deref(),
            Some("2018-04-19T23:42:24.796Z")
        );
        assert_eq!(events[1].data, json(r#"{"id":"o1"}"#));
        // sha256 of JSON.stringify(sortDeep(event)), computed with node.
        assert_eq!(
            events[0].key,
            "eb50fabbab2b7351fa30fd0302d91a27fc36d5ec986934cf4abde43165e421ec"
        );
        assert_ne!(events[0].key, events[1].key);
    }

    #[test]
    fn key_ignores_member_order_and_whitespace() {
        let a = json(r#"{"events":[{"type":"voucher-used","data":{"a":1,"b":2}}]}"#);
        let b = json(r#"{"events":[ { "data" : {"b":2.0,"a":1}, "type":"voucher-used" } ]}"#);
        assert_eq!(
            Inline.events(&a, &Forwarded::default()).unwrap()[0].key,
            Inline.events(&b, &Forwarded::default()).unwrap()[0].key
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
