//! Reading required fields out of provider bodies with errors that name the field.

use serde_json::Value;

/// A verified body that lacks a field the provider requires; the text names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Follows a `.`-separated path of object members.
pub(crate) fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// A required non-empty string member at `path`.
pub(crate) fn required_str<'a>(value: &'a Value, path: &str) -> Result<&'a str, Malformed> {
    match at(value, path) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(Malformed(format!("field `{path}` is empty"))),
        Some(other) => Err(Malformed(format!(
            "field `{path}` must be a string, found {}",
            kind(other)
        ))),
        None => Err(Malformed(format!("missing required field `{path}`"))),
    }
}

/// A required identifier at `path`: a non-empty string, or an integer written as JSON writes it.
pub(crate) fn required_key(value: &Value, path: &str) -> Result<String, Malformed> {
    match at(value, path) {
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(Malformed(format!("field `{path}` is empty"))),
        Some(other) => Err(Malformed(format!(
            "field `{path}` must be a string or an integer, found {}",
            kind(other)
        ))),
        None => Err(Malformed(format!("missing required field `{path}`"))),
    }
}

/// A required array member at `path`.
pub(crate) fn required_array<'a>(value: &'a Value, path: &str) -> Result<&'a [Value], Malformed> {
    match at(value, path) {
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(Malformed(format!(
            "field `{path}` must be an array, found {}",
            kind(other)
        ))),
        None => Err(Malformed(format!("missing required field `{path}`"))),
    }
}

/// An optional string member, `None` when absent or not a string.
pub(crate) fn optional_str(value: &Value, path: &str) -> Option<String> {
    at(value, path).and_then(Value::as_str).map(str::to_owned)
}

/// The member at `path`, or JSON `null` when absent.
pub(crate) fn member_or_null(value: &Value, path: &str) -> Value {
    at(value, path).cloned().unwrap_or(Value::Null)
}

/// Prefixes a batch element's errors with its position, e.g. `events[2]: ...`.
pub(crate) fn in_element(list: &str, index: usize, error: Malformed) -> Malformed {
    Malformed(format!("{list}[{index}]: {}", error.0))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
