//! Standard Webhooks (Svix and many SaaS senders): `v1,<base64>` HMAC-SHA256 of
//! `<webhook-id>.<webhook-timestamp>.<raw body>` with the base64-decoded `whsec_` secret;
//! the timestamp must lie within the source's tolerance. <https://www.standardwebhooks.com>

use super::fields::{member_or_null, optional_str, required_str};
use super::{Forwarded, Malformed, Provider, ProviderEvent, Refusal, Request};
use crate::config::SourceSpec;
use crate::signature::decode_base64;
use crate::timestamp::format_timestamp;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use time::OffsetDateTime;

const ID: &str = "webhook-id";
const TIMESTAMP: &str = "webhook-timestamp";
const SIGNATURE: &str = "webhook-signature";

/// Any sender of the Standard Webhooks scheme.
pub(crate) struct StandardWebhooks;

impl Provider for StandardWebhooks {
    fn name(&self) -> &'static str {
        "standard-webhooks"
    }

    fn signed_headers(&self) -> &'static [&'static str] {
        &[ID, TIMESTAMP, SIGNATURE]
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        // The event key is the message id, which only the header carries.
        &[ID]
    }

    fn check_headers(&self, request: &Request<'_>, source: &SourceSpec) -> Result<(), Refusal> {
        // CONTRACT section 4's order: missing or unreadable, then stale, then the signature.
        let headers = &request.headers;
        headers.require(ID)?;
        let signed_at = timestamp(headers.require(TIMESTAMP)?)?;
        headers.require(SIGNATURE)?;
        let skew_secs = signed_at.saturating_sub(request.received_at.unix_timestamp());
        let tolerance_secs = source.timestamp_tolerance.as_secs();
        if skew_secs.unsigned_abs() > tolerance_secs {
            return Err(Refusal::Stale {
                header: TIMESTAMP,
                skew_secs,
                tolerance_secs,
            });
        }
        Ok(())
    }

    fn verify(&self, request: &Request<'_>, source: &SourceSpec) -> Result<(), Refusal> {
        let headers = &request.headers;
        let (id, signed_at) = (headers.require(ID)?, headers.require(TIMESTAMP)?);
        let candidates: Vec<Vec<u8>> = headers
            .require(SIGNATURE)?
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, signature)| decode_base64(signature))
            .collect();
        // One HMAC per secret however many signatures the header lists: a long list costs
        // comparisons, never more hashing of the body.
        let matched = source.secrets.iter().any(|secret| {
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose()) else {
                return false;
            };
            for part in [
                id.as_bytes(),
                b".",
                signed_at.as_bytes(),
                b".",
                request.body,
            ] {
                mac.update(part);
            }
            candidates
                .iter()
                .any(|tag| mac.clone().verify_slice(tag).is_ok())
        });
        matched
            .then_some(())
            .ok_or(Refusal::Mismatch { header: SIGNATURE })
    }

    fn events(
        &self,
        body: &Value,
        forwarded: &Forwarded<'_>,
    ) -> Result<Vec<ProviderEvent>, Malformed> {
        let key = forwarded
            .get(ID)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Malformed(format!("missing header `{ID}`")))?;
        Ok(vec![ProviderEvent {
            key: key.to_owned(),
            provider_type: required_str(body, "type")?.to_owned(),
            occurred_at: optional_str(body, "timestamp"),
            data: member_or_null(body, "data"),
        }])
    }

    fn sign(
        &self,
        body: &[u8],
        key: &[u8],
        id: &str,
        now: OffsetDateTime,
    ) -> Vec<(&'static str, String)> {
        let timestamp = now.unix_timestamp().to_string();
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
        for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
            mac.update(part);
        }
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        vec![
            (ID, id.to_owned()),
            (TIMESTAMP, timestamp),
            (SIGNATURE, format!("v1,{signature}")),
        ]
    }

    fn example(&self, event_type: Option<&str>, id: &str, now: OffsetDateTime) -> String {
        json!({
            "type": event_type.unwrap_or("invoice.paid"),
            "timestamp": format_timestamp(now),
            "data": {"id": format!("in_{id}"), "amount_paid": 2000, "currency": "eur", "customer": {"id": "cus_1"}}
        })
        .to_string()
    }

    fn retry_schedule(&self) -> &'static [Duration] {
        // The specification's example schedule (after the immediate first attempt).
        const SCHEDULE: [Duration; 9] = [
            Duration::from_secs(5),
            Duration::from_secs(5 * 60),
            Duration::from_secs(30 * 60),
            Duration::from_secs(2 * 3600),
            Duration::from_secs(5 * 3600),
            Duration::from_secs(10 * 3600),
            Duration::from_secs(14 * 3600),
            Duration::from_secs(20 * 3600),
            Duration::from_secs(24 * 3600),
        ];
        &SCHEDULE
    }

    fn type_separator(&self) -> Option<char> {
        None
    }

    fn signing_key(&self, secret: &str) -> Result<Vec<u8>, String> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(key),
            Ok(_) => Err("a standard-webhooks secret must not be empty".into()),
            Err(_) => Err("a standard-webhooks secret must be `whsec_` followed by base64".into()),
        }
    }
}

/// Seconds since the epoch, as the scheme writes them.
fn timestamp(value: &str) -> Result<i64, Refusal> {
    value.parse().map_err(|_| Refusal::Unreadable {
        header: TIMESTAMP,
        problem: "is not an integer (seconds since 1970)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::test_support::{headers, json, source};
    use time::OffsetDateTime;

    /// The scheme's published test vector (standard-webhooks libraries' tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SIGNED_AT: i64 = 1_614_265_330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE_V1: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    /// Both checks of a request with these headers, received at `now` (unix seconds).
    fn check(pairs: &[(&str, &str)], body: &str, now: i64) -> Result<(), Refusal> {
        let spec = source(&StandardWebhooks, &[SECRET]);
        let map = headers(pairs);
        let request = Request::new(&map, body.as_bytes(), at(now));
        StandardWebhooks.check_headers(&request, &spec)?;
        StandardWebhooks.verify(&request, &spec)
    }

    /// Header pairs of a test request.
    type Headers = Vec<(&'static str, String)>;

    fn vector(signature: &str) -> Headers {
        vec![
            (ID, MSG_ID.to_owned()),
            (TIMESTAMP, SIGNED_AT.to_string()),
            (SIGNATURE, signature.to_owned()),
        ]
    }

    fn pairs<'a>(list: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        list.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn published_vector_verifies_with_the_clock_passed_in() {
        let list = vector(SIGNATURE_V1);
        assert_eq!(check(&pairs(&list), BODY, SIGNED_AT), Ok(()));
        assert_eq!(check(&pairs(&list), BODY, SIGNED_AT + 300), Ok(()));
        assert_eq!(check(&pairs(&list), BODY, SIGNED_AT - 300), Ok(()));
    }

    #[test]
    fn second_library_vector() {
        // libraries/rust: signing `{"email":...}` under another secret and id.
        let spec = source(
            &StandardWebhooks,
            &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
        );
        let map = headers(&[
            (ID, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
            (TIMESTAMP, "1649367553"),
            (SIGNATURE, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="),
        ]);
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let request = Request::new(&map, body, at(1_649_367_553));
        assert_eq!(StandardWebhooks.verify(&request, &spec), Ok(()));
    }

    #[test]
    fn refusals_in_contract_order() {
        let mismatch = Err(Refusal::Mismatch { header: SIGNATURE });
        let stale = |skew_secs| {
            Err(Refusal::Stale {
                header: TIMESTAMP,
                skew_secs,
                tolerance_secs: 300,
            })
        };
        let good = vector(SIGNATURE_V1);
        let without =
            |name: &str| -> Headers { good.iter().filter(|(k, _)| *k != name).cloned().collect() };
        let with = |name: &'static str, value: &str| -> Headers {
            let mut list = without(name);
            list.push((name, value.to_owned()));
            list
        };
        // (name, headers, body, receive time, expected)
        type Case = (
            &'static str,
            Headers,
            &'static str,
            i64,
            Result<(), Refusal>,
        );
        let cases: Vec<Case> = vec![
            (
                "no id",
                without(ID),
                BODY,
                SIGNED_AT,
                Err(Refusal::Missing { header: ID }),
            ),
            (
                "no timestamp",
                without(TIMESTAMP),
                BODY,
                SIGNED_AT,
                Err(Refusal::Missing { header: TIMESTAMP }),
            ),
            (
                "no signature, stale too",
                without(SIGNATURE),
                BODY,
                SIGNED_AT + 9999,
                Err(Refusal::Missing { header: SIGNATURE }),
            ),
            (
                "timestamp not an integer",
                with(TIMESTAMP, "2021-02-25T15:02:10Z"),
                BODY,
                SIGNED_AT,
                Err(Refusal::Unreadable {
                    header: TIMESTAMP,
                    problem: "is not an integer (seconds since 1970)",
                }),
            ),
            ("too old", good.clone(), BODY, SIGNED_AT + 301, stale(-301)),
            (
                "from the future",
                good.clone(),
                BODY,
                SIGNED_AT - 301,
                stale(301),
            ),
            (
                "stale and tampered: stale wins",
                good.clone(),
                "{}",
                SIGNED_AT + 301,
                stale(-301),
            ),
            (
                "tampered body",
                good.clone(),
                r#"{"test": 2432232315}"#,
                SIGNED_AT,
                mismatch.clone(),
            ),
            (
                "other id",
                with(ID, "msg_other"),
                BODY,
                SIGNED_AT,
                mismatch.clone(),
            ),
            (
                "v1 only",
                with(
                    SIGNATURE,
                    "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                ),
                BODY,
                SIGNED_AT,
                mismatch.clone(),
            ),
            (
                "just v1,",
                with(SIGNATURE, "v1,"),
                BODY,
                SIGNED_AT,
                mismatch.clone(),
            ),
            (
                "no comma",
                with(SIGNATURE, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
                BODY,
                SIGNED_AT,
                mismatch.clone(),
            ),
            (
                "several signatures, one good",
                with(
                    SIGNATURE,
                    &format!(
                        "v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q= v1a,abc {SIGNATURE_V1}"
                    ),
                ),
                BODY,
                SIGNED_AT,
                Ok(()),
            ),
            (
                "several signatures, none good",
                with(
                    SIGNATURE,
                    "v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q= v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ=",
                ),
                BODY,
                SIGNED_AT,
                mismatch.clone(),
            ),
        ];
        for (name, list, body, now, expected) in cases {
            assert_eq!(check(&pairs(&list), body, now), expected, "{name}");
        }
    }

    #[test]
    fn tolerance_comes_from_the_source() {
        let mut spec = source(&StandardWebhooks, &[SECRET]);
        spec.timestamp_tolerance = std::time::Duration::from_secs(10);
        let list = vector(SIGNATURE_V1);
        let map = headers(&pairs(&list));
        let request = Request::new(&map, BODY.as_bytes(), at(SIGNED_AT + 11));
        assert!(matches!(
            StandardWebhooks.check_headers(&request, &spec),
            Err(Refusal::Stale {
                tolerance_secs: 10,
                ..
            })
        ));
    }

    #[test]
    fn secrets_must_be_base64() {
        let key = StandardWebhooks.signing_key(SECRET).unwrap();
        assert_eq!(
            key,
            StandardWebhooks
                .signing_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
        );
        assert!(StandardWebhooks.signing_key("whsec_not base64!").is_err());
        assert!(StandardWebhooks.signing_key("whsec_").is_err());
    }

    #[test]
    fn events_take_the_id_from_the_header() {
        let body = json(
            r#"{"type":"invoice.paid","timestamp":"2022-11-03T20:26:10.344522Z","data":{"id":"in_1"}}"#,
        );
        let forwarded = [(ID.to_owned(), "msg_1".to_owned())];
        let events = StandardWebhooks
            .events(&body, &Forwarded(&forwarded))
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].key, "msg_1");
        assert_eq!(events[0].provider_type, "invoice.paid");
        assert_eq!(
            events[0].occurred_at.as_deref(),
            Some("2022-11-03T20:26:10.344522Z")
        );
        assert_eq!(events[0].data, json(r#"{"id":"in_1"}"#));
        let missing = StandardWebhooks.events(&body, &Forwarded::default());
        assert!(missing.unwrap_err().0.contains("webhook-id"));
        let untyped = StandardWebhooks.events(&json(r#"{"data":{}}"#), &Forwarded(&forwarded));
        assert!(untyped.unwrap_err().0.contains("`type`"));
    }
}
