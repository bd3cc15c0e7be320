//! Aisle (waitlist tickets): HMAC-SHA256 of the raw body, hex or base64, optional `sha256=`.

use super::fields::{member_or_null, optional_str, required_key, required_str};
use super::{Forwarded, Malformed, Provider, ProviderEvent, Refusal, Request};
use crate::config::SourceSpec;
use crate::signature::{Algorithm, decode_base64, decode_hex, matches_any, sign_hex, strip_label};
use crate::timestamp::format_timestamp;
use serde_json::{Value, json};
use std::time::Duration;
use time::OffsetDateTime;

const SIGNATURE: &str = "x-aisle-webhook-signature";

/// The Aisle firehose.
pub(crate) struct Aisle;

impl Provider for Aisle {
    fn name(&self) -> &'static str {
        "aisle"
    }

    fn signed_headers(&self) -> &'static [&'static str] {
        &[SIGNATURE]
    }

    fn verify(&self, request: &Request<'_>, source: &SourceSpec) -> Result<(), Refusal> {
        let value = strip_label(request.headers.require(SIGNATURE)?, "sha256");
        // Aisle's docs do not fix an encoding, so both are tried; each is compared in full.
        let matched = [decode_hex(value), decode_base64(value)]
            .into_iter()
            .flatten()
            .any(|tag| matches_any(Algorithm::Sha256, &source.secrets, request.body, &tag));
        matched
            .then_some(())
            .ok_or(Refusal::Mismatch { header: SIGNATURE })
    }

    fn events(&self, body: &Value, _: &Forwarded<'_>) -> Result<Vec<ProviderEvent>, Malformed> {
        Ok(vec![ProviderEvent {
            key: required_key(body, "id")?,
            provider_type: required_str(body, "event")?.to_owned(),
            occurred_at: optional_str(body, "broadcasted_at"),
            data: member_or_null(body, "data"),
        }])
    }

    fn sign(
        &self,
        body: &[u8],
        key: &[u8],
        _: &str,
        _: OffsetDateTime,
    ) -> Vec<(&'static str, String)> {
        vec![(SIGNATURE, sign_hex(Algorithm::Sha256, key, body))]
    }

    fn example(&self, event_type: Option<&str>, id: &str, now: OffsetDateTime) -> String {
        let at = format_timestamp(now);
        json!({
            "id": id,
            "event": event_type.unwrap_or("ticket_created"),
            "broadcasted_at": at,
            "data": {
                "id": format!("ticket-{id}"),
                "store_id": "store-1",
                "user_id": "user-1",
                "user": {"id": "user-1", "first_name": "Ada", "last_name": "Lovelace", "phone_number": "+15555550100"},
                "created_at": at,
                "updated_at": at
            }
        })
        .to_string()
    }

    fn retry_schedule(&self) -> &'static [Duration] {
        // "We will attempt to deliver your event a maximum of 2 times": one retry, whose
        // pause the document does not give; assumed 1 s.
        const SCHEDULE: [Duration; 1] = [Duration::from_secs(1)];
        &SCHEDULE
    }

    fn type_separator(&self) -> Option<char> {
        Some('_')
    }

    fn response_budget(&self) -> Duration {
        // "a response timeout of 1000ms", tried twice.
        Duration::from_millis(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_support::{accepts, assert_malformed, parse_events};
    use crate::signature::sign_hex;
    use base64::Engine as _;

    const SECRET: &str = "aisle-client-secret";
    /// The body from Aisle's documentation, with values filled in.
    const BODY: &str = r#"{"id":"7d4c8a52-1f3b-4c1e-9a51-3f0c5b6f7a10","event":"ticket_created","broadcasted_at":"2026-11-22T10:00:00Z","data":{"id":"b1","store_id":"s1","user_id":"u1","user":{"id":"u1","first_name":"Ada","last_name":"L","phone_number":"+15555550100"},"created_at":"2026-11-22T10:00:00Z","updated_at":"2026-11-22T10:00:00Z"}}"#;

    fn hex_sig() -> String {
        sign_hex(Algorithm::Sha256, SECRET.as_bytes(), BODY.as_bytes())
    }

    #[test]
    fn signature_encodings() {
        let hex = hex_sig();
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(&hex).unwrap());
        let cases = [
            (hex.clone(), true, "lowercase hex"),
            (hex.to_uppercase(), true, "uppercase hex"),
            (format!("sha256={hex}"), true, "sha256= prefix"),
            (b64.clone(), true, "base64"),
            (format!("sha256={b64}"), true, "prefixed base64"),
            (hex[..62].to_owned(), false, "truncated hex"),
            (format!("{hex}00"), false, "extended hex"),
            ("".to_owned(), false, "empty"),
            ("not a signature".to_owned(), false, "garbage"),
        ];
        for (signature, ok, name) in cases {
            assert_eq!(
                accepts(&Aisle, SIGNATURE, &signature, BODY.as_bytes(), &[SECRET]),
                ok,
                "{name}"
            );
        }
    }

    #[test]
    fn tampered_body_and_wrong_secret_fail() {
        let tampered = BODY.replace("Ada", "Eve");
        let sig = hex_sig();
        assert!(!accepts(
            &Aisle,
            SIGNATURE,
            &sig,
            tampered.as_bytes(),
            &[SECRET]
        ));
        assert!(!accepts(
            &Aisle,
            SIGNATURE,
            &sig,
            BODY.as_bytes(),
            &["other"]
        ));
    }

    #[test]
    fn rotation_accepts_any_configured_secret() {
        let secrets = ["retired", SECRET];
        assert!(accepts(
            &Aisle,
            SIGNATURE,
            &hex_sig(),
            BODY.as_bytes(),
            &secrets
        ));
    }

    #[test]
    fn documented_body_becomes_one_event() {
        let events = parse_events(&Aisle, BODY).unwrap();
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.key, "7d4c8a52-1f3b-4c1e-9a51-3f0c5b6f7a10");
        assert_eq!(event.provider_type, "ticket_created");
        assert_eq!(event.occurred_at.as_deref(), Some("2026-11-22T10:00:00Z"));
        assert_eq!(event.data["user"]["first_name"], "Ada");
    }

    #[test]
    fn required_fields() {
        assert_malformed(&Aisle, r#"{"event":"ticket_created"}"#, "`id`");
        assert_malformed(&Aisle, r#"{"id":"x"}"#, "`event`");
        assert_malformed(&Aisle, r#"{"id":"x","event":7}"#, "`event`");
        assert_malformed(&Aisle, r#"[1,2]"#, "`id`");
    }
}
