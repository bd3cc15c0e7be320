//! Reading and writing the string headers hookline puts on its messages.

use lapin::types::{AMQPValue, FieldTable, ShortString};

/// Header naming the source (endpoint) of a raw delivery.
pub const SOURCE: &str = "x-hookline-source";
/// Header naming the provider of a raw delivery.
pub const PROVIDER: &str = "x-hookline-provider";
/// Header with the RFC 3339 time the ingress received a delivery.
pub const RECEIVED_AT: &str = "x-hookline-received-at";
/// Header on dead-lettered deliveries saying why they could not be processed.
pub const ERROR: &str = "x-hookline-error";
/// Header on dead-lettered deliveries counting processing attempts.
pub const ATTEMPTS: &str = "x-hookline-attempts";

/// Builds a header table of string values.
pub fn string_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert(
            ShortString::from(key),
            AMQPValue::LongString(value.as_bytes().to_vec().into()),
        );
    }
    table
}

/// A header as text, whether it was sent as a long or a short string.
pub fn header_str(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    let value = headers?.inner().get(key)?;
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let table = string_headers([("x-a", "1"), ("x-b", "two")]);
        assert_eq!(header_str(Some(&table), "x-b").as_deref(), Some("two"));
        assert_eq!(header_str(Some(&table), "x-c"), None);
        assert_eq!(header_str(None, "x-a"), None);
    }
}
