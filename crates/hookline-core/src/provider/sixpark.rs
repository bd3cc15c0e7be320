//! Six Park (accounts): hex HMAC-SHA256 of the raw body, optional `sha256=`; JSON:API body.

use super::fields::{Malformed, at, member_or_null, required_key, required_str};
use super::{Forwarded, Provider, ProviderEvent, Refusal, Request};
use crate::config::SourceSpec;
use crate::signature::{Algorithm, raw_body_sha256_hex, sign_hex};
use serde_json::{Value, json};
use std::time::Duration;
use time::OffsetDateTime;

const SIGNATURE: &str = "x-sixpark-signature";

/// Six Park's webhooks.
pub(crate) struct SixPark;

impl Provider for SixPark {
    fn name(&self) -> &'static str {
        "sixpark"
    }

    fn signed_headers(&self) -> &'static [&'static str] {
        &[SIGNATURE]
    }

    fn verify(&self, request: &Request<'_>, source: &SourceSpec) -> Result<(), Refusal> {
        raw_body_sha256_hex(request, SIGNATURE, &source.secrets)
    }

    fn events(&self, body: &Value, _: &Forwarded<'_>) -> Result<Vec<ProviderEvent>, Malformed> {
        // Six Park's own sample spells the member `even_type`; `event_type` is accepted too.
        let kind_path = if at(body, "data.attributes.even_type").is_some() {
            "data.attributes.even_type"
        } else {
            "data.attributes.event_type"
        };
        Ok(vec![ProviderEvent {
            key: required_key(body, "data.id")?,
            provider_type: required_str(body, kind_path)?.to_owned(),
            occurred_at: None,
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

    fn example(&self, event_type: Option<&str>, id: &str, _: OffsetDateTime) -> String {
        json!({
            "data": {
                "id": id,
                "type": "webhook-event",
                "attributes": {"even_type": event_type.unwrap_or("ACCOUNT_OPENED")},
                "relationships": {
                    "webhook": {"data": {"type": "webhook", "id": "75fe2702-114a-401c-8a5f-61d9fa15e0eb"}},
                    "account": {"data": {"type": "account", "id": "f11b778a-3c83-43b5-a481-6b46e4d8aabb"}}
                }
            }
        })
        .to_string()
    }

    fn retry_schedule(&self) -> &'static [Duration] {
        // "up to 5 retries using an exponential backoff strategy"; the intervals are not
        // documented: assumed 10 s doubling.
        const SCHEDULE: [Duration; 5] = [
            Duration::from_secs(10),
            Duration::from_secs(20),
            Duration::from_secs(40),
            Duration::from_secs(80),
            Duration::from_secs(160),
        ];
        &SCHEDULE
    }

    fn type_separator(&self) -> Option<char> {
        Some('_')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_support::{accepts, assert_malformed, json, parse_events};
    use crate::signature::{Algorithm, sign_hex};

    /// The documented sample event, with the documented `signature_token`.
    const BODY: &str = r#"{"data":{"id":"ecb20ef1-a543-4ae5-9446-0661a882a616","type":"webhook-event","attributes":{"even_type":"ACCOUNT_OPENED"},"relationships":{"webhook":{"data":{"type":"webhook","id":"75fe2702-114a-401c-8a5f-61d9fa15e0eb"}},"account":{"data":{"type":"account","id":"f11b778a-3c83-43b5-a481-6b46e4d8aabb"}}}}}"#;
    const TOKEN: &str = "b7bcf4a088215ed9396b07c9e8b931a5697bc0c4";

    #[test]
    fn verifies_documented_sample() {
        let hex = sign_hex(Algorithm::Sha256, TOKEN.as_bytes(), BODY.as_bytes());
        let secrets = [TOKEN];
        for (sig, ok) in [
            (hex.clone(), true),
            (hex.to_uppercase(), true),
            (format!("sha256={hex}"), true),
            (hex[2..].to_owned(), false),
            (hex.replace(&hex[..1], "f"), hex.starts_with('f')),
        ] {
            assert_eq!(
                accepts(&SixPark, SIGNATURE, &sig, BODY.as_bytes(), &secrets),
                ok,
                "{sig}"
            );
        }
        assert!(!accepts(
            &SixPark,
            SIGNATURE,
            &hex,
            BODY.replace("OPENED", "CLOSED").as_bytes(),
            &secrets
        ));
    }

    #[test]
    fn parses_both_type_spellings() {
        let event = &parse_events(&SixPark, BODY).unwrap()[0];
        assert_eq!(event.key, "ecb20ef1-a543-4ae5-9446-0661a882a616");
        assert_eq!(event.provider_type, "ACCOUNT_OPENED");
        assert_eq!(event.occurred_at, None);
        assert_eq!(event.data, json(BODY)["data"]);
        let spelled = BODY.replace("even_type", "event_type");
        assert_eq!(
            parse_events(&SixPark, &spelled).unwrap()[0].provider_type,
            "ACCOUNT_OPENED"
        );
    }

    #[test]
    fn required_fields() {
        assert_malformed(
            &SixPark,
            r#"{"data":{"attributes":{"even_type":"X_Y"}}}"#,
            "`data.id`",
        );
        assert_malformed(
            &SixPark,
            r#"{"data":{"id":"a","attributes":{}}}"#,
            "event_type",
        );
        assert_malformed(&SixPark, r#"{}"#, "`data.id`");
    }
}
