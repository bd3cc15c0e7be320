//! The provider registry and the contract every provider module fulfils.
//!
//! Adding a provider is one new module here and one line in [`PROVIDERS`].

mod aisle;
mod asello;
mod auraconnect;
mod fields;
mod inline;
mod sixpark;

use crate::secret::Secret;
use serde_json::Value;

pub use fields::Malformed;

/// Every provider hookline knows, by the name used in `[[sources]] provider`.
pub static PROVIDERS: &[&dyn Provider] = &[
    &aisle::Aisle,
    &inline::Inline,
    &auraconnect::AuraConnect,
    &sixpark::SixPark,
    &asello::Asello,
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

    /// The header carrying the signature (matched case-insensitively).
    fn signature_header(&self) -> &'static str;

    /// Whether `signature` (the header value) signs `body` under any of `secrets`.
    fn verify(&self, signature: &str, body: &[u8], secrets: &[Secret]) -> bool;

    /// Splits a parsed body into events; `Malformed` names the missing or wrong field.
    fn events(&self, body: &Value) -> Result<Vec<ProviderEvent>, Malformed>;

    /// The character between entity and action in the provider's type names, if any.
    fn type_separator(&self) -> Option<char>;

    /// Shortest secret the provider allows.
    fn min_secret_len(&self) -> usize {
        1
    }

    /// Whether the provider checks the endpoint with `GET ?echo=X`.
    fn answers_echo(&self) -> bool {
        false
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Shared assertions for the per-provider tests.
    use super::*;

    /// Parses a JSON literal for tests.
    pub(crate) fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON parses")
    }

    /// Asserts that `body` is malformed and the message names `field`.
    pub(crate) fn assert_malformed(provider: &dyn Provider, body: &str, field: &str) {
        match provider.events(&json(body)) {
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
            ["aisle", "inline", "auraconnect", "sixpark", "asello"]
        );
        for name in names {
            assert_eq!(find(name).map(|p| p.name()), Some(name));
        }
        assert!(find("stripe").is_none());
    }
}
