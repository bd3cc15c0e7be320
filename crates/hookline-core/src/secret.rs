//! A webhook signing secret that cannot leak through `Debug`, `Display` or serde output.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A signing secret; only [`Secret::expose`] reveals it, and only to the HMAC code.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps a secret as configured (text).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into_bytes())
    }

    /// Wraps an HMAC key derived from a configured secret (e.g. a decoded `whsec_`).
    pub fn from_key(key: Vec<u8>) -> Self {
        Self(key)
    }

    /// The secret's bytes, for keying an HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in characters, so validation can report it without printing the value.
    pub fn char_len(&self) -> usize {
        String::from_utf8_lossy(&self.0).chars().count()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", vec![secret]), "[[redacted]]");
    }
}
