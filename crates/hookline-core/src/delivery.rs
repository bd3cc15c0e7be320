//! The boundary between untrusted requests and queued deliveries: a [`VerifiedDelivery`]
//! can only be made by [`verify`], so nothing unsigned can reach the publisher.

use crate::config::SourceSpec;
use crate::envelope::format_timestamp;
use crate::provider::Malformed;
use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

/// What the ingress records about a delivery beside its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMeta {
    /// Time-ordered uuid (v7) the ingress gave the delivery.
    pub delivery_id: String,
    /// Source (endpoint) name.
    pub source: String,
    /// Provider name.
    pub provider: String,
    /// RFC 3339 time the ingress received it.
    pub received_at: String,
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

    /// Rebuilds a delivery that was verified before it was written to the local spool.
    ///
    /// Only the spool may call this: its records are written from verified deliveries alone.
    pub fn from_spool(meta: DeliveryMeta, body: Bytes) -> Self {
        Self { meta, body }
    }
}

/// Why a request was refused (all are 4xx: nothing is queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The provider's signature header is absent or empty.
    #[error("missing signature header `{header}`")]
    MissingSignature {
        /// The header that was expected.
        header: &'static str,
    },
    /// The signature does not match the body under any configured secret.
    #[error("signature in header `{header}` does not match the body")]
    InvalidSignature {
        /// The header that was checked.
        header: &'static str,
    },
    /// Signed correctly, but not JSON or missing a required field.
    #[error("{0}")]
    Malformed(String),
}

/// Checks a request for `source` and, if it holds, makes it a [`VerifiedDelivery`].
///
/// The signature is checked before the body is parsed, so an unsigned body costs no parsing.
pub fn verify(
    source: &SourceSpec,
    signature: Option<&[u8]>,
    body: Bytes,
) -> Result<VerifiedDelivery, Rejection> {
    let provider = source.provider;
    let header = provider.signature_header();
    let signature = match signature {
        None | Some([]) => return Err(Rejection::MissingSignature { header }),
        Some(bytes) => {
            std::str::from_utf8(bytes).map_err(|_| Rejection::InvalidSignature { header })?
        }
    };
    if !provider.verify(signature, &body, &source.secrets) {
        return Err(Rejection::InvalidSignature { header });
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Rejection::Malformed(format!("body is not JSON: {e}")))?;
    provider
        .events(&value)
        .map_err(|Malformed(message)| Rejection::Malformed(message))?;
    Ok(VerifiedDelivery {
        meta: DeliveryMeta {
            delivery_id: Uuid::now_v7().to_string(),
            source: source.name.clone(),
            provider: provider.name().to_owned(),
            received_at: format_timestamp(OffsetDateTime::now_utc()),
        },
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider;
    use crate::secret::Secret;
    use crate::signature::{Algorithm, sign_hex};

    fn aisle() -> SourceSpec {
        SourceSpec {
            name: "aisle".into(),
            provider: provider::find("aisle").unwrap(),
            secrets: vec![Secret::new("k")],
        }
    }

    fn sig(body: &[u8]) -> Vec<u8> {
        sign_hex(Algorithm::Sha256, b"k", body).into_bytes()
    }

    #[test]
    fn outcomes() {
        let good = Bytes::from_static(br#"{"id":"1","event":"ticket_created"}"#);
        let header = "x-aisle-webhook-signature";
        let delivery = verify(&aisle(), Some(&sig(&good)), good.clone()).unwrap();
        assert_eq!(delivery.meta().source, "aisle");
        assert_eq!(delivery.body(), &good);
        assert!(Uuid::parse_str(&delivery.meta().delivery_id).is_ok());

        assert_eq!(
            verify(&aisle(), None, good.clone()).unwrap_err(),
            Rejection::MissingSignature { header }
        );
        assert_eq!(
            verify(&aisle(), Some(b""), good.clone()).unwrap_err(),
            Rejection::MissingSignature { header }
        );
        assert_eq!(
            verify(&aisle(), Some(b"\xff\xfe"), good.clone()).unwrap_err(),
            Rejection::InvalidSignature { header }
        );
        assert_eq!(
            verify(&aisle(), Some(&sig(b"other")), good).unwrap_err(),
            Rejection::InvalidSignature { header }
        );
        let not_json = Bytes::from_static(b"hello");
        assert!(matches!(
            verify(&aisle(), Some(&sig(&not_json)), not_json),
            Err(Rejection::Malformed(m)) if m.starts_with("body is not JSON")
        ));
        let no_id = Bytes::from_static(br#"{"event":"ticket_created"}"#);
        assert_eq!(
            verify(&aisle(), Some(&sig(&no_id)), no_id).unwrap_err(),
            Rejection::Malformed("missing required field `id`".into())
        );
    }

    #[test]
    fn rejection_messages_never_echo_the_signature() {
        let body = Bytes::from_static(b"{}");
        let err = verify(&aisle(), Some(b"deadbeefcafe"), body).unwrap_err();
        assert!(!err.to_string().contains("deadbeef"));
    }
}
