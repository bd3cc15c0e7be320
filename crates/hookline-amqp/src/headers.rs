//! Reading and writing the string headers hookline puts on its messages.

use lapin::types::{AMQPValue, FieldTable, ShortString};

pub use hookline_core::wire::{PROVIDER, RECEIVED_AT, SOURCE};

/// Header on dead-lettered deliveries saying why they could not be processed.
pub const ERROR: &str = "x-hookline-error";
/// Header on dead-lettered deliveries counting processing attempts.
pub const ATTEMPTS: &str = "x-hookline-attempts";
/// Header on dead-lettered deliveries: when they were dead-lettered (RFC 3339).
pub const DIED_AT: &str = "x-hookline-died-at";

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
    value_str(headers?.inner().get(key)?)
}

/// Every header whose value is text, in table order.
pub fn string_pairs(headers: Option<&FieldTable>) -> Vec<(String, String)> {
    headers
        .map(|table| {
            table
                .inner()
                .iter()
                .filter_map(|(key, value)| Some((key.to_string(), value_str(value)?)))
                .collect()
        })
        .unwrap_or_default()
}

fn value_str(value: &AMQPValue) -> Option<String> {
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
        let mut table = table;
        table.insert("x-n".into(), AMQPValue::LongUInt(3));
        assert_eq!(
            string_pairs(Some(&table)),
            [
                ("x-a".to_owned(), "1".to_owned()),
                ("x-b".into(), "two".into())
            ]
        );
    }
}
