//! The raw-delivery format ([`hookline_core::wire`]) in lapin's terms: a
//! [`Message`](hookline_core::wire::Message) becomes AMQP properties and back.

use crate::headers::{string_headers, string_pairs};
use hookline_core::wire::Message;
use lapin::BasicProperties;

/// The AMQP properties of a raw-delivery message (persistence is added by the publisher).
pub fn properties(message: &Message) -> BasicProperties {
    let mut properties = BasicProperties::default().with_app_id("hookline".into());
    if let Some(id) = &message.message_id {
        properties = properties.with_message_id(id.as_str().into());
    }
    if let Some(content_type) = &message.content_type {
        properties = properties.with_content_type(content_type.as_str().into());
    }
    if !message.headers.is_empty() {
        properties = properties.with_headers(string_headers(
            message
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        ));
    }
    properties
}

/// What the format needs of a received message.
pub fn received(properties: &BasicProperties, body: &[u8]) -> Message {
    Message {
        message_id: properties.message_id().as_ref().map(|id| id.to_string()),
        content_type: properties.content_type().as_ref().map(|c| c.to_string()),
        headers: string_pairs(properties.headers().as_ref()),
        body: bytes::Bytes::copy_from_slice(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_core::wire::{BATCH_CONTENT_TYPE, SOURCE};

    #[test]
    fn round_trip() {
        let message = Message {
            message_id: Some("id".into()),
            content_type: Some(BATCH_CONTENT_TYPE.into()),
            headers: vec![(SOURCE.into(), "shop".into())],
            body: bytes::Bytes::from_static(b"x"),
        };
        assert_eq!(received(&properties(&message), b"x"), message);
    }
}
