//! AuraConnect (orders, payments, inventory, staff, POS): `sha256=<hex>` over the raw body.

use super::fields::{member_or_null, optional_str, required_key, required_str};
use super::{Forwarded, Malformed, Provider, ProviderEvent, Refusal, Request};
use crate::config::SourceSpec;
use crate::signature::{Algorithm, raw_body_sha256_hex, sign_hex};
use crate::timestamp::format_timestamp;
use serde_json::{Value, json};
use std::time::Duration;
use time::OffsetDateTime;

const SIGNATURE: &str = "x-auraconnect-signature";

/// AuraConnect's webhooks.
pub(crate) struct AuraConnect;

impl Provider for AuraConnect {
    fn name(&self) -> &'static str {
        "auraconnect"
    }

    fn signed_headers(&self) -> &'static [&'static str] {
        &[SIGNATURE]
    }

    fn verify(&self, request: &Request<'_>, source: &SourceSpec) -> Result<(), Refusal> {
        raw_body_sha256_hex(request, SIGNATURE, &source.secrets)
    }

    fn events(&self, body: &Value, _: &Forwarded<'_>) -> Result<Vec<ProviderEvent>, Malformed> {
        Ok(vec![ProviderEvent {
            key: required_key(body, "id")?,
            provider_type: required_str(body, "type")?.to_owned(),
            occurred_at: optional_str(body, "created"),
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
        vec![(
            SIGNATURE,
            format!("sha256={}", sign_hex(Algorithm::Sha256, key, body)),
        )]
    }

    fn example(&self, event_type: Option<&str>, id: &str, now: OffsetDateTime) -> String {
        json!({
            "id": id,
            "type": event_type.unwrap_or("order.created"),
            "created": format_timestamp(now),
            "data": {"object": {"id": 1001, "order_number": format!("ORD-{id}"), "total_amount": 45.99, "status": "pending"}}
        })
        .to_string()
    }

    fn retry_schedule(&self) -> &'static [Duration] {
        // "Retry intervals: 10s, 30s, 1m, 5m, 30m".
        const SCHEDULE: [Duration; 5] = [
            Duration::from_secs(10),
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(300),
            Duration::from_secs(1800),
        ];
        &SCHEDULE
    }

    fn type_separator(&self) -> Option<char> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_support::{accepts, assert_malformed, json, parse_events};
    use crate::signature::{Algorithm, sign_hex};

    const SECRET: &str = "your-webhook-secret";

    /// Documented examples: (body, type).
    const EXAMPLES: &[(&str, &str)] = &[
        (
            r#"{"id":"evt_123","type":"order.created","created":"2025-08-08T10:00:00Z","data":{"object":{"id":1001,"order_number":"ORD-2025-001","total_amount":45.99}}}"#,
            "order.created",
        ),
        (
            r#"{"id":"evt_126","type":"payment.completed","created":"2025-08-08T10:21:00Z","data":{"object":{"id":2001,"amount":45.99}}}"#,
            "payment.completed",
        ),
        (
            r#"{"id":"evt_128","type":"inventory.low_stock","created":"2025-08-08T12:00:00Z","data":{"object":{"item_id":301,"current_quantity":5.0}}}"#,
            "inventory.low_stock",
        ),
        (
            r#"{"id":"evt_130","type":"staff.clocked_in","created":"2025-08-08T08:00:00Z","data":{"object":{"staff_id":101}}}"#,
            "staff.clocked_in",
        ),
        (
            r#"{"id":"evt_133","type":"pos.sync_failed","created":"2025-08-08T13:01:00Z","data":{"object":{"sync_id":"sync_457"}}}"#,
            "pos.sync_failed",
        ),
    ];

    #[test]
    fn documented_examples_verify_and_parse() {
        let secrets = [SECRET];
        for (body, kind) in EXAMPLES {
            let hex = sign_hex(Algorithm::Sha256, SECRET.as_bytes(), body.as_bytes());
            assert!(accepts(
                &AuraConnect,
                SIGNATURE,
                &format!("sha256={hex}"),
                body.as_bytes(),
                &secrets
            ));
            assert!(
                accepts(&AuraConnect, SIGNATURE, &hex, body.as_bytes(), &secrets),
                "bare hex"
            );
            assert!(!accepts(
                &AuraConnect,
                SIGNATURE,
                &format!("sha256={}", &hex[..63]),
                body.as_bytes(),
                &secrets
            ));
            let tampered = body.replace("evt_", "evt-");
            assert!(!accepts(
                &AuraConnect,
                SIGNATURE,
                &format!("sha256={hex}"),
                tampered.as_bytes(),
                &secrets
            ));
            let events = parse_events(&AuraConnect, body).unwrap();
            assert_eq!(events[0].provider_type, *kind);
            assert_eq!(events[0].key, json(body)["id"].as_str().unwrap());
            assert_eq!(
                events[0].occurred_at.as_deref(),
                json(body)["created"].as_str()
            );
            assert_eq!(events[0].data, json(body)["data"]);
        }
    }

    #[test]
    fn rotation() {
        let body = EXAMPLES[0].0.as_bytes();
        let hex = sign_hex(Algorithm::Sha256, b"new-secret", body);
        let secrets = [SECRET, "new-secret"];
        assert!(accepts(
            &AuraConnect,
            SIGNATURE,
            &format!("sha256={hex}"),
            body,
            &secrets
        ));
    }

    #[test]
    fn required_fields() {
        assert_malformed(&AuraConnect, r#"{"type":"order.created"}"#, "`id`");
        assert_malformed(&AuraConnect, r#"{"id":"evt_1"}"#, "`type`");
    }
}
