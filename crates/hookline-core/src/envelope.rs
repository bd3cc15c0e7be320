//! The normalized event every app consumes, and the rules that build it from a delivery.

use crate::delivery::DeliveryMeta;
use crate::provider::{self, Malformed, Provider, ProviderEvent};
use crate::timestamp::format_timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One normalized event, as published on `<prefix>.events` (CONTRACT section 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// `<source>:<event key>`: the dedup identity.
    pub id: String,
    /// Provider name, e.g. `aisle`.
    pub provider: String,
    /// Source (endpoint) name from the config.
    pub source: String,
    /// Normalized type, e.g. `ticket.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The provider's own type, e.g. `ticket_created`.
    pub provider_type: String,
    /// When the provider says it happened, if it says.
    pub occurred_at: Option<String>,
    /// When the ingress received the delivery.
    pub received_at: String,
    /// The ingress delivery that carried the event.
    pub delivery_id: String,
    /// The provider's own member, unchanged.
    pub data: Value,
}

impl Envelope {
    /// Routing key on the events exchange: `<provider>.<type>`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.provider, self.event_type)
    }
}

/// Normalizes a provider type: lowercase, the first separator becomes the dot between entity
/// and action, and any other character outside `[a-z0-9_.]` becomes `_`.
pub fn normalize_type(raw: &str, separator: Option<char>) -> String {
    let mut seen_separator = false;
    raw.chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if Some(c) == separator && !seen_separator {
                seen_separator = true;
                '.'
            } else if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Why a queued delivery cannot be normalized.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    /// The delivery names a provider this build does not know.
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The body lacks a required field.
    #[error("{0}")]
    Malformed(#[from] Malformed),
}

/// Parses a verified delivery's body and builds one envelope per event, in body order.
pub fn normalize_delivery(
    meta: &DeliveryMeta,
    body: &[u8],
) -> Result<Vec<Envelope>, NormalizeError> {
    let provider = provider::find(&meta.provider)
        .ok_or_else(|| NormalizeError::UnknownProvider(meta.provider.clone()))?;
    let value: Value = serde_json::from_slice(body)?;
    Ok(provider
        .events(&value, &meta.forwarded())?
        .into_iter()
        .map(|event| envelope(provider, meta, event))
        .collect())
}

fn envelope(provider: &dyn Provider, meta: &DeliveryMeta, event: ProviderEvent) -> Envelope {
    Envelope {
        id: format!("{}:{}", meta.source, event.key),
        provider: provider.name().to_owned(),
        source: meta.source.clone(),
        event_type: normalize_type(&event.provider_type, provider.type_separator()),
        provider_type: event.provider_type,
        occurred_at: event.occurred_at,
        received_at: format_timestamp(meta.received_at),
        delivery_id: meta.delivery_id.to_string(),
        data: event.data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_normalization_table() {
        let cases = [
            ("ticket_created", Some('_'), "ticket.created"),
            ("ticket_cancelled", Some('_'), "ticket.cancelled"),
            (
                "reservation-time-changed",
                Some('-'),
                "reservation.time_changed",
            ),
            ("order-pickedup", Some('-'), "order.pickedup"),
            ("order.created", None, "order.created"),
            ("inventory.low_stock", None, "inventory.low_stock"),
            ("ACCOUNT_OPENED", Some('_'), "account.opened"),
            (
                "ACCOUNT_ONBOARDED_LATE",
                Some('_'),
                "account.onboarded_late",
            ),
            ("deliverynote.created", None, "deliverynote.created"),
            ("Weird Type!", None, "weird_type_"),
            ("ping", Some('_'), "ping"),
            ("a#b*c", Some('-'), "a_b_c"),
        ];
        for (raw, sep, expected) in cases {
            assert_eq!(normalize_type(raw, sep), expected, "{raw}");
        }
    }

    fn meta(provider: &str, source: &str) -> DeliveryMeta {
        DeliveryMeta {
            delivery_id: "0192f0c4-0000-7000-8000-000000000001".parse().unwrap(),
            source: source.into(),
            provider: provider.into(),
            received_at: crate::timestamp::parse_timestamp("2026-11-22T10:00:00.123Z").unwrap(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn aisle_envelope_has_every_field() {
        let body = br#"{"id":"t1","event":"ticket_created","broadcasted_at":"2026-11-22T10:00:00Z","data":{"id":"x"}}"#;
        let events = normalize_delivery(&meta("aisle", "front-door"), body).unwrap();
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "front-door:t1",
                "provider": "aisle",
                "source": "front-door",
                "type": "ticket.created",
                "provider_type": "ticket_created",
                "occurred_at": "2026-11-22T10:00:00Z",
                "received_at": "2026-11-22T10:00:00.123Z",
                "delivery_id": "0192f0c4-0000-7000-8000-000000000001",
                "data": {"id": "x"}
            })
        );
        assert_eq!(events[0].routing_key(), "aisle.ticket.created");
    }

    #[test]
    fn sixpark_and_asello_have_null_occurred_at() {
        let body = br#"{"data":{"id":"a1","attributes":{"even_type":"ACCOUNT_OPENED"}}}"#;
        let e = &normalize_delivery(&meta("sixpark", "sp"), body).unwrap()[0];
        assert_eq!(
            (e.routing_key().as_str(), &e.occurred_at),
            ("sixpark.account.opened", &None)
        );
        let body = br#"{"id":"d","notifications":[{"action":"deliverynote.created","id":5}]}"#;
        let e = &normalize_delivery(&meta("asello", "shop"), body).unwrap()[0];
        assert_eq!(e.id, "shop:d:deliverynote.created:5");
        assert_eq!(e.routing_key(), "asello.deliverynote.created");
    }

    #[test]
    fn errors_are_specific() {
        let err = normalize_delivery(&meta("stripe", "s"), b"{}").unwrap_err();
        assert_eq!(err.to_string(), "unknown provider `stripe`");
        let err = normalize_delivery(&meta("aisle", "s"), b"not json").unwrap_err();
        assert!(err.to_string().starts_with("body is not JSON"));
        let err = normalize_delivery(&meta("aisle", "s"), b"{}").unwrap_err();
        assert_eq!(err.to_string(), "missing required field `id`");
    }
}
