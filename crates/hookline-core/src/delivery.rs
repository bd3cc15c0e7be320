//! The boundary between untrusted requests and queued deliveries: a [`VerifiedDelivery`]
//! can only be made by [`verify`] (or read back from the spool by [`crate::wire`], which
//! only ever holds verified deliveries), so nothing unsigned can reach the publisher.

use crate::config::SourceSpec;
use crate::provider::{Forwarded, Malformed, Refusal, Request};
use bytes::Bytes;
use http::HeaderMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// What the ingress records about a delivery beside its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMeta {
    /// Time-ordered uuid (v7) the ingress gave the delivery.
    pub delivery_id: Uuid,
    /// Source (endpoint) name.
    pub source: String,
    /// Provider name.
    pub provider: String,
    /// When the ingress received it (millisecond precision survives the queue).
    pub received_at: OffsetDateTime,
    /// Headers the provider needs later ([`crate::Provider::forwarded_headers`]), lowercase.
    pub headers: Vec<(String, String)>,
}

impl DeliveryMeta {
    /// The forwarded headers, for [`crate::Provider::events`].
    pub fn forwarded(&self) -> Forwarded<'_> {
        Forwarded(&self.headers)
    }
}

/// A delivery whose signature matched and whose body has the provider's required fields.
#[derive(Debug, Clone)]
pub struct VerifiedDelivery {
    meta: DeliveryMeta,
    body: Bytes,
}

impl VerifiedDelivery {
    /// Its metadata.
    pub fn meta(&self) -> &DeliveryMeta {
        &self.meta
    }

    /// The raw body exactly as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Only this crate makes one: [`verify`], and the spool codec reading back what was
    /// verified before it was written.
    pub(crate) fn trusted(meta: DeliveryMeta, body: Bytes) -> Self {
        Self { meta, body }
    }
}

/// Why a request was refused (all are 4xx: nothing is queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The signature, or a header it covers, is missing, repeated, stale or wrong.
    #[error(transparent)]
    Signature(#[from] Refusal),
    /// Signed correctly, but not JSON or missing a required field.
    #[error("{0}")]
    Malformed(String),
}

/// The checks the headers allow before any of the body is read: every header the provider
/// signs is sent once, and the provider's own header checks (presence, freshness) pass.
pub fn check_headers(
    source: &SourceSpec,
    headers: &HeaderMap,
    received_at: OffsetDateTime,
) -> Result<(), Refusal> {
    let request = Request::new(headers, &[], received_at);
    let provider = source.provider;
    if let Some(header) = provider
        .signed_headers()
        .iter()
        .find(|name| request.headers.repeated(name))
    {
        return Err(Refusal::Duplicate { header });
    }
    provider.check_headers(&request, source)
}

/// Checks a request for `source` and, if it holds, makes it a [`VerifiedDelivery`].
///
/// The signature is checked before the body is parsed, so an unsigned body costs no parsing.
pub fn verify(
    source: &SourceSpec,
    headers: &HeaderMap,
    body: Bytes,
    received_at: OffsetDateTime,
) -> Result<VerifiedDelivery, Rejection> {
    check_headers(source, headers, received_at)?;
    let provider = source.provider;
    provider.verify(&Request::new(headers, &body, received_at), source)?;
    let forwarded: Vec<(String, String)> = provider
        .forwarded_headers()
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Rejection::Malformed(format!("body is not JSON: {e}")))?;
    provider
        .events(&value, &Forwarded(&forwarded))
        .map_err(|Malformed(message)| Rejection::Malformed(message))?;
    Ok(VerifiedDelivery::trusted(
        DeliveryMeta {
            delivery_id: Uuid::now_v7(),
            source: source.name.clone(),
            provider: provider.name().to_owned(),
            // Milliseconds are what every copy of the delivery keeps (queue, spool, envelope).
            received_at: crate::timestamp::to_millis(received_at),
            headers: forwarded,
        },
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{self, test_support::headers};
    use crate::secret::Secret;
    use crate::signature::{Algorithm, sign_hex};

    const HEADER: &str = "x-aisle-webhook-signature";

    fn aisle() -> SourceSpec {
        SourceSpec::new(
            "aisle",
            provider::find("aisle").unwrap(),
            vec![Secret::new("k")],
        )
        .unwrap()
    }

    fn sig(body: &[u8]) -> String {
        sign_hex(Algorithm::Sha256, b"k", body)
    }

    fn run(pairs: &[(&str, &str)], body: &[u8]) -> Result<VerifiedDelivery, Rejection> {
        verify(
            &aisle(),
            &headers(pairs),
            Bytes::copy_from_slice(body),
            OffsetDateTime::now_utc(),
        )
    }

    #[test]
    fn outcomes() {
        let good = br#"{"id":"1","event":"ticket_created"}"#;
        let delivery = run(&[(HEADER, &sig(good))], good).unwrap();
        assert_eq!(delivery.meta().source, "aisle");
        assert_eq!(delivery.meta().provider, "aisle");
        assert_eq!(delivery.body().as_ref(), good);
        assert_eq!(delivery.meta().delivery_id.get_version_num(), 7);
        assert!(delivery.meta().headers.is_empty());

        let refused = |header| Err(Rejection::Signature(header));
        assert_eq!(
            run(&[], good).map(|_| ()),
            refused(Refusal::Missing { header: HEADER })
        );
        assert_eq!(
            run(&[(HEADER, "")], good).map(|_| ()),
            refused(Refusal::Missing { header: HEADER })
        );
        assert_eq!(
            run(&[(HEADER, &sig(b"other"))], good).map(|_| ()),
            refused(Refusal::Mismatch { header: HEADER })
        );
        let not_json = b"hello";
        assert!(matches!(
            run(&[(HEADER, &sig(not_json))], not_json),
            Err(Rejection::Malformed(m)) if m.starts_with("body is not JSON")
        ));
        let no_id = br#"{"event":"ticket_created"}"#;
        assert_eq!(
            run(&[(HEADER, &sig(no_id))], no_id).map(|_| ()),
            Err(Rejection::Malformed("missing required field `id`".into()))
        );
    }

    #[test]
    fn a_signed_header_sent_twice_is_refused_whatever_the_order() {
        let good = br#"{"id":"1","event":"ticket_created"}"#;
        for pairs in [
            [(HEADER, sig(good)), (HEADER, "00".to_owned())],
            [(HEADER, "00".to_owned()), (HEADER, sig(good))],
        ] {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(
                run(&pairs, good).map(|_| ()),
                Err(Rejection::Signature(Refusal::Duplicate { header: HEADER }))
            );
        }
    }

    #[test]
    fn rejection_messages_never_echo_the_signature() {
        let err = run(&[(HEADER, "deadbeefcafe")], b"{}").unwrap_err();
        assert!(!err.to_string().contains("deadbeef"));
        // Nor the signature that would have matched.
        assert!(!err.to_string().contains(&sig(b"{}")));
        assert!(!format!("{err:?}").contains(&sig(b"{}")));
    }
}
