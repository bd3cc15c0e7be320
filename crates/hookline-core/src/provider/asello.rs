//! asello (documents, receipts, invoices, orders): `sha256=<HEX>` over the raw body;
//! batches in `notifications`; answers `GET ?echo=X` health checks.

use super::fields::{Malformed, in_element, required_array, required_key, required_str};
use super::{Forwarded, Provider, ProviderEvent, Refusal, Request};
use crate::config::SourceSpec;
use crate::signature::{Algorithm, raw_body_sha256_hex, sign_hex};
use serde_json::{Value, json};
use std::time::Duration;
use time::OffsetDateTime;

const SIGNATURE: &str = "signature";

/// asello's webhooks.
pub(crate) struct Asello;

impl Provider for Asello {
    fn name(&self) -> &'static str {
        "asello"
    }

    fn signed_headers(&self) -> &'static [&'static str] {
        &[SIGNATURE]
    }

    fn verify(&self, request: &Request<'_>, source: &SourceSpec) -> Result<(), Refusal> {
        raw_body_sha256_hex(request, SIGNATURE, &source.secrets)
    }

    fn events(&self, body: &Value, _: &Forwarded<'_>) -> Result<Vec<ProviderEvent>, Malformed> {
        let delivery = required_key(body, "id")?;
        required_array(body, "notifications")?
            .iter()
            .enumerate()
            .map(|(i, note)| {
                let action =
                    required_str(note, "action").map_err(|e| in_element("notifications", i, e))?;
                let note_id =
                    required_key(note, "id").map_err(|e| in_element("notifications", i, e))?;
                Ok(ProviderEvent {
                    key: format!("{delivery}:{action}:{note_id}"),
                    provider_type: action.to_owned(),
                    occurred_at: None,
                    data: note.clone(),
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
        // The documented example sends upper-case hex.
        let hex = sign_hex(Algorithm::Sha256, key, body).to_uppercase();
        vec![(SIGNATURE, format!("sha256={hex}"))]
    }

    fn example(&self, event_type: Option<&str>, id: &str, _: OffsetDateTime) -> String {
        json!({
            "id": id,
            "attempt": 1,
            "properties": {},
            "notifications": [
                {"action": event_type.unwrap_or("document.created"), "id": 9_420_657},
                {"action": "receipt.created", "id": 9_420_658}
            ]
        })
        .to_string()
    }

    fn retry_schedule(&self) -> &'static [Duration] {
        // The document shows an `attempt` counter but no schedule: assumed three retries
        // after 1, 5 and 15 minutes.
        const SCHEDULE: [Duration; 3] = [
            Duration::from_secs(60),
            Duration::from_secs(300),
            Duration::from_secs(900),
        ];
        &SCHEDULE
    }

    fn type_separator(&self) -> Option<char> {
        None
    }

    fn min_secret_len(&self) -> usize {
        32
    }

    fn answers_echo(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_support::{accepts, assert_malformed, json, parse_events};
    use crate::signature::{Algorithm, sign_hex};

    const SECRET: &str = "test-example-secret-with-minimum-length-32-chars";
    /// The documented example body.
    const BODY: &str = r#"{
  "id": "642f2a88afc54fb5b3dc5e93a48dad6a",
  "attempt": 1,
  "properties": {},
  "notifications": [
    {
      "action": "document.created",
      "id": 9420657
    }
  ]
}"#;

    #[test]
    fn verifies_upper_case_hex_as_documented() {
        let hex = sign_hex(Algorithm::Sha256, SECRET.as_bytes(), BODY.as_bytes()).to_uppercase();
        let secrets = [SECRET];
        assert!(accepts(
            &Asello,
            SIGNATURE,
            &format!("sha256={hex}"),
            BODY.as_bytes(),
            &secrets
        ));
        assert!(accepts(
            &Asello,
            SIGNATURE,
            &format!("sha256={}", hex.to_lowercase()),
            BODY.as_bytes(),
            &secrets
        ));
        assert!(!accepts(
            &Asello,
            SIGNATURE,
            &format!("sha256={}", &hex[..60]),
            BODY.as_bytes(),
            &secrets
        ));
        assert!(!accepts(
            &Asello,
            SIGNATURE,
            &format!("sha256={hex}"),
            BODY.replace('1', "2").as_bytes(),
            &secrets
        ));
        let filler = "x".repeat(32);
        let rotated = [filler.as_str(), SECRET];
        assert!(accepts(
            &Asello,
            SIGNATURE,
            &format!("sha256={hex}"),
            BODY.as_bytes(),
            &rotated
        ));
    }

    #[test]
    fn documented_example_becomes_one_event_per_notification() {
        let events = parse_events(&Asello, BODY).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].key,
            "642f2a88afc54fb5b3dc5e93a48dad6a:document.created:9420657"
        );
        assert_eq!(events[0].provider_type, "document.created");
        assert_eq!(
            events[0].data,
            json(r#"{"action":"document.created","id":9420657}"#)
        );
        let two = BODY.replace(
            r#""id": 9420657"#,
            r#""id": 9420657}, {"action":"receipt.updated","id":"r-1""#,
        );
        let events = parse_events(&Asello, &two).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1].key,
            "642f2a88afc54fb5b3dc5e93a48dad6a:receipt.updated:r-1"
        );
    }

    #[test]
    fn required_fields() {
        assert_malformed(&Asello, r#"{"notifications":[]}"#, "`id`");
        assert_malformed(&Asello, r#"{"id":"a"}"#, "`notifications`");
        assert_malformed(
            &Asello,
            r#"{"id":"a","notifications":[{"id":1}]}"#,
            "notifications[0]",
        );
        assert_malformed(
            &Asello,
            r#"{"id":"a","notifications":[{"action":"x.y"}]}"#,
            "`id`",
        );
    }
}
