//! The provider registry and the contract every provider module fulfils.
//!
//! Adding a provider is one new module here and one line in [`PROVIDERS`].

mod aisle;
mod asello;
mod auraconnect;
mod fields;
mod inline;
mod request;
mod sixpark;
mod standard_webhooks;

use crate::config::SourceSpec;
use serde_json::Value;
use std::time::Duration;
use time::OffsetDateTime;

pub use fields::Malformed;
pub use request::{Forwarded, Headers, Refusal, Request};

/// Every provider hookline knows, by the name used in `[[sources]] provider`.
pub static PROVIDERS: &[&dyn Provider] = &[
    &aisle::Aisle,
    &inline::Inline,
    &auraconnect::AuraConnect,
    &sixpark::SixPark,
    &asello::Asello,
    &standard_webhooks::StandardWebhooks,
];

/// Looks a provider up by its config name.
pub fn find(name: &str) -> Option<&'static dyn Provider> {
    PROVIDERS.iter().copied().find(|p| p.name() == name)
}

/// Names of all providers, for error messages.
pub fn names() -> Vec<&'static str> {
    PROVIDERS.iter().map(|p| p.name()).collect()
}

/// One event as the provider described it, before it becomes an envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderEvent {
    /// The provider's dedup key for this event (without the source prefix).
    pub key: String,
    /// The provider's own event type, e.g. `ticket_created`.
    pub provider_type: String,
    /// When the provider says the event happened (RFC 3339), if it says.
    pub occurred_at: Option<String>,
    /// The provider's own member for the event, unchanged.
    pub data: Value,
}

/// How one webhook provider signs, shapes and names its deliveries.
pub trait Provider: Send + Sync + 'static {
    /// Config name, also the first word of every routing key.
    fn name(&self) -> &'static str;

    /// Headers the signature check reads (lowercase); each must be sent exactly once.
    fn signed_headers(&self) -> &'static [&'static str];

    /// Headers the worker needs to build events (lowercase); they travel with the delivery.
    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[]
    }

    /// The checks the headers allow on their own (presence, format, freshness), run before
    /// the body is read so that such refusals cost no body.
    fn check_headers(&self, request: &Request<'_>, source: &SourceSpec) -> Result<(), Refusal> {
        let _ = source;
        for name in self.signed_headers() {
            request.headers.require(name)?;
        }
        Ok(())
    }

    /// Whether the request is signed by one of the source's secrets; runs after
    /// [`Provider::check_headers`] passed, with the whole body.
    fn verify(&self, request: &Request<'_>, source: &SourceSpec) -> Result<(), Refusal>;

    /// Splits a parsed body into events; `Malformed` names the missing or wrong field.
    fn events(
        &self,
        body: &Value,
        forwarded: &Forwarded<'_>,
    ) -> Result<Vec<ProviderEvent>, Malformed>;

    /// The character between entity and action in the provider's type names, if any.
    fn type_separator(&self) -> Option<char>;

    /// Signs `body` exactly as the provider does with `key` (from
    /// [`Provider::signing_key`]); returns the headers to send. `id` and `now` are used by
    /// schemes that sign a message id or a time. (For `hookline send` and the tests.)
    fn sign(
        &self,
        body: &[u8],
        key: &[u8],
        id: &str,
        now: OffsetDateTime,
    ) -> Vec<(&'static str, String)>;

    /// A realistic body as the provider's documentation shows it, with event id `id` and
    /// type `event_type` (the provider's own spelling; a documented default when `None`).
    fn example(&self, event_type: Option<&str>, id: &str, now: OffsetDateTime) -> String;

    /// The delays before each retry the provider makes after a failed delivery, as its
    /// documentation gives them (or as assumed where it gives none; see the provider file).
    fn retry_schedule(&self) -> &'static [Duration];

    /// Turns a configured secret into the HMAC key, or says why it is unusable.
    fn signing_key(&self, secret: &str) -> Result<Vec<u8>, String> {
        Ok(secret.as_bytes().to_vec())
    }

    /// Shortest secret the provider allows.
    fn min_secret_len(&self) -> usize {
        1
    }

    /// Whether the provider checks the endpoint with `GET ?echo=X`.
    fn answers_echo(&self) -> bool {
        false
    }

    /// How long the provider waits for an answer (its documentation's figure).
    fn response_budget(&self) -> Duration {
        Duration::from_secs(10)
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Shared helpers for the per-provider tests.
    use super::*;
    use crate::secret::Secret;
    use http::{HeaderMap, HeaderName, HeaderValue};
    use time::OffsetDateTime;

    /// Parses a JSON literal for tests.
    pub(crate) fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON parses")
    }

    /// A source of `provider` with `secrets`, validated as the config would.
    pub(crate) fn source(provider: &dyn Provider, secrets: &[&str]) -> SourceSpec {
        let provider = find(provider.name()).expect("registered provider");
        SourceSpec::new(
            "test",
            provider,
            secrets.iter().map(|s| Secret::new(*s)).collect(),
        )
        .expect("test secrets are valid")
    }

    /// Header map from `(name, value)` pairs.
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        map
    }

    /// Runs both checks of `provider` on a request made of `headers` and `body`, received now.
    pub(crate) fn check(
        provider: &dyn Provider,
        source: &SourceSpec,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let request = Request::new(headers, body, OffsetDateTime::now_utc());
        provider.check_headers(&request, source)?;
        provider.verify(&request, source)
    }

    /// Whether `signature` in `header` verifies `body` under `secrets`.
    pub(crate) fn accepts(
        provider: &dyn Provider,
        header: &str,
        signature: &str,
        body: &[u8],
        secrets: &[&str],
    ) -> bool {
        let source = source(provider, secrets);
        check(provider, &source, &headers(&[(header, signature)]), body).is_ok()
    }

    /// Events of a body without forwarded headers.
    pub(crate) fn parse_events(
        provider: &dyn Provider,
        body: &str,
    ) -> Result<Vec<ProviderEvent>, Malformed> {
        provider.events(&json(body), &Forwarded::default())
    }

    /// Asserts that `body` is malformed and the message names `field`.
    pub(crate) fn assert_malformed(provider: &dyn Provider, body: &str, field: &str) {
        match parse_events(provider, body) {
            Err(Malformed(message)) => assert!(
                message.contains(field),
                "message {message:?} should name {field:?} for {body}"
            ),
            Ok(events) => panic!("{body} should be malformed, got {events:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_findable() {
        let names = names();
        assert_eq!(
            names,
            [
                "aisle",
                "inline",
                "auraconnect",
                "sixpark",
                "asello",
                "standard-webhooks"
            ]
        );
        for name in names {
            assert_eq!(find(name).map(|p| p.name()), Some(name));
        }
        assert!(find("stripe").is_none());
    }

    #[test]
    fn every_example_is_signed_verified_and_normalized() {
        use crate::secret::Secret;
        use http::{HeaderMap, HeaderName, HeaderValue};
        let now = OffsetDateTime::now_utc();
        for provider in PROVIDERS {
            let secret = if provider.name() == "standard-webhooks" {
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()
            } else {
                "k".repeat(provider.min_secret_len().max(8))
            };
            let source = SourceSpec::new(
                "example",
                find(provider.name()).unwrap(),
                vec![Secret::new(secret)],
            )
            .unwrap();
            for event_type in [None, Some("custom_type")] {
                let body = provider.example(event_type, "ex-1", now);
                let mut headers = HeaderMap::new();
                for (name, value) in
                    provider.sign(body.as_bytes(), source.secrets[0].expose(), "ex-1", now)
                {
                    headers.append(
                        HeaderName::from_static(name),
                        HeaderValue::from_str(&value).unwrap(),
                    );
                }
                let delivery = crate::delivery::verify(
                    &source,
                    &headers,
                    bytes::Bytes::from(body.clone()),
                    now,
                )
                .unwrap_or_else(|e| panic!("{}: {e}: {body}", provider.name()));
                let events = crate::normalize_delivery(delivery.meta(), delivery.body()).unwrap();
                assert!(!events.is_empty(), "{}", provider.name());
                if let Some(kind) = event_type {
                    assert_eq!(events[0].provider_type, kind, "{}", provider.name());
                }
                // A second example with another id is another event.
                let other = provider.example(event_type, "ex-2", now);
                assert_ne!(body, other, "{}", provider.name());
            }
            assert!(!provider.retry_schedule().is_empty(), "{}", provider.name());
        }
    }

    #[test]
    fn signed_and_forwarded_headers_are_lowercase() {
        for provider in PROVIDERS {
            for name in provider
                .signed_headers()
                .iter()
                .chain(provider.forwarded_headers())
            {
                assert_eq!(*name, name.to_ascii_lowercase(), "{}", provider.name());
            }
            assert!(!provider.signed_headers().is_empty(), "{}", provider.name());
        }
    }
}
