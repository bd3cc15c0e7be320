//! One provider's request check, driven through `delivery::check_headers` and
//! `delivery::verify` as the ingress drives it.
//!
//! Input: a mode byte, a skew byte, then [`crate::split`]'s header lines and body. With
//! [`SIGN`] set the harness signs the body as the provider would, so most inputs get past
//! the signature and into the parsing; the other bits vary how.

use bytes::Bytes;
use hookline_core::config::SourceSpec;
use hookline_core::delivery::{Rejection, check_headers, verify};
use hookline_core::provider::{self, Forwarded, Refusal};
use hookline_core::timestamp::to_millis;
use hookline_core::wire::{self, Entry};
use hookline_core::{Secret, normalize_delivery};
use http::{HeaderMap, HeaderName, HeaderValue};
use time::{Duration, OffsetDateTime};

/// Mode bit: add the headers the provider's own `sign` makes for the body.
pub const SIGN: u8 = 1;
/// Mode bit: sign with the second (rotated-in) secret instead of the first.
pub const ROTATED: u8 = 2;
/// Mode bit: flip the low bit of the body's last byte after signing.
pub const TAMPER: u8 = 4;

/// The receive time (sub-millisecond on purpose: deliveries keep milliseconds).
pub const NOW_NANOS: i128 = 1_777_636_800_123_456_789;

/// The message id `sign` puts in schemes that sign one.
pub const MESSAGE_ID: &str = "msg_2ZfVxJbY1e6dQhw";

/// Seconds per unit of the skew byte: ±640 s straddles the default 300 s tolerance.
pub const SKEW_STEP: i64 = 5;

/// The test source's two secrets (rotation), as a config would hold them.
pub fn secrets(provider: &str) -> [&'static str; 2] {
    match provider {
        "standard-webhooks" => [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        ],
        // asello wants 32 characters; the others take these too.
        _ => [
            "fuzz-secret-old-0123456789abcdef",
            "fuzz-secret-new-0123456789abcdef",
        ],
    }
}

/// Runs one input against the provider named `name`.
pub fn run(name: &str, data: &[u8]) {
    let [mode, skew, rest @ ..] = data else {
        return;
    };
    let (lines, body) = crate::split(rest);
    let provider = provider::find(name).expect("a registered provider");
    let configured = secrets(name);
    let source = SourceSpec::new("fuzz", provider, configured.map(Secret::new).to_vec())
        .expect("the test secrets are valid");
    let now = OffsetDateTime::from_unix_timestamp_nanos(NOW_NANOS).expect("in range");

    let mut headers = HeaderMap::new();
    let mut collides = false;
    for (name, value) in lines {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        collides |= provider.signed_headers().contains(&name.as_str());
        headers.append(name, value);
    }

    let signed = mode & SIGN != 0;
    let tampered = signed && mode & TAMPER != 0 && !body.is_empty();
    let skew_secs = i64::from(*skew as i8) * SKEW_STEP;
    let mut body = body.to_vec();
    let mut signatures = Vec::new();
    if signed {
        let key = source.secrets[usize::from(mode & ROTATED != 0)].expose();
        let signing_header = provider.signed_headers().last().copied();
        for (header, value) in
            provider.sign(&body, key, MESSAGE_ID, now + Duration::seconds(skew_secs))
        {
            if Some(header) == signing_header {
                signatures.push(value.clone());
            }
            headers.append(
                header,
                HeaderValue::from_str(&value).expect("sign makes text"),
            );
        }
        if let Some(last) = body.last_mut().filter(|_| tampered) {
            *last ^= 1;
        }
    }
    let body = Bytes::from(body);

    let header_check = check_headers(&source, &headers, now);
    let outcome = verify(&source, &headers, body.clone(), now);

    // verify runs the header checks first and stops at their refusal.
    if let Err(refusal) = &header_check {
        assert_eq!(
            outcome.as_ref().err(),
            Some(&Rejection::Signature(refusal.clone()))
        );
    }
    if let Err(rejection) = &outcome {
        let text = format!("{rejection} {rejection:?}");
        for secret in configured.iter().map(|s| s.to_string()).chain(signatures) {
            assert!(
                !text.contains(&secret),
                "a rejection shows a secret or signature: {text}"
            );
        }
    }

    let signature_passed = !matches!(outcome, Err(Rejection::Signature(_)));
    if !signed {
        assert!(!signature_passed, "an unsigned request passed: {outcome:?}");
    } else if collides {
        // The input sent a signed header as well as the harness: which one counts is ambiguous.
        assert!(
            matches!(
                outcome,
                Err(Rejection::Signature(Refusal::Duplicate { .. }))
            ),
            "{outcome:?}"
        );
    } else if name == "standard-webhooks"
        && skew_secs.unsigned_abs() > source.timestamp_tolerance.as_secs()
    {
        assert!(
            matches!(outcome, Err(Rejection::Signature(Refusal::Stale { .. }))),
            "{outcome:?}"
        );
    } else if !tampered {
        assert!(
            signature_passed,
            "a correctly signed request was refused: {outcome:?}"
        );
    } else if signature_passed {
        // Only inline's sorted form may survive a changed byte, and then both bodies must
        // have the same canonical form (what inline signs).
        assert_eq!(name, "inline", "a tampered body passed: {outcome:?}");
        let original = {
            let mut bytes = body.to_vec();
            *bytes.last_mut().expect("tampered bodies are not empty") ^= 1;
            bytes
        };
        let canonical = |b: &[u8]| hookline_core::canonical_json::canonicalize(b).ok();
        assert!(canonical(&body).is_some());
        assert_eq!(canonical(&body), canonical(&original));
    }

    let Ok(delivery) = outcome else {
        return;
    };
    let meta = delivery.meta();
    assert_eq!(delivery.body(), &body);
    assert_eq!(
        (meta.source.as_str(), meta.provider.as_str()),
        ("fuzz", name)
    );
    assert_eq!(meta.received_at, to_millis(now));
    for (header, value) in &meta.headers {
        assert!(provider.forwarded_headers().contains(&header.as_str()));
        assert_eq!(
            headers.get(header).map(HeaderValue::as_bytes),
            Some(value.as_bytes())
        );
    }

    // What the worker does with it later must work on everything verify let through.
    let value: serde_json::Value = serde_json::from_slice(&body).expect("verify parsed it");
    let events = provider
        .events(&value, &Forwarded(&meta.headers))
        .expect("verify checked the events");
    let envelopes = normalize_delivery(meta, &body).expect("a verified delivery normalizes");
    assert_eq!(envelopes.len(), events.len());
    for envelope in &envelopes {
        assert!(envelope.id.starts_with("fuzz:"));
        assert!(envelope.routing_key().starts_with(&format!("{name}.")));
    }

    // And it must survive the spool and the queue unchanged.
    let record = wire::decode_record(&wire::encode_record(&delivery)).expect("own record");
    assert_eq!((record.meta(), record.body()), (meta, &body));
    let entry = Entry {
        meta: meta.clone(),
        body: body.clone(),
    };
    assert_eq!(wire::decode(&wire::single(meta, &body)), Ok(vec![entry]));
}
