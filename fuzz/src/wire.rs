//! The raw-delivery format: queue messages (single or batch) and spool records.
//!
//! A message input is [`crate::split`]'s header lines and body; the lines `message_id: ...`
//! and `content_type: ...` set those properties, every other line is a string header.

use hookline_core::delivery::DeliveryMeta;
use hookline_core::timestamp::{
    epoch_millis, format_timestamp, from_epoch_millis, parse_timestamp,
};
use hookline_core::wire::{self, Entry, Message};

/// Longest error text: attacker text in it is cut to 64 characters.
const MAX_ERROR_LEN: usize = 512;

/// The message an input describes; `None` when a line is not UTF-8.
pub fn message(data: &[u8]) -> Option<Message> {
    let (lines, body) = crate::split(data);
    let mut message = Message {
        body: bytes::Bytes::copy_from_slice(body),
        ..Message::default()
    };
    for (name, value) in lines {
        let name = std::str::from_utf8(name).ok()?.to_owned();
        let value = std::str::from_utf8(value).ok()?.to_owned();
        match name.as_str() {
            "message_id" => message.message_id = Some(value),
            "content_type" => message.content_type = Some(value),
            _ => message.headers.push((name, value)),
        }
    }
    Some(message)
}

/// Decodes a queue message; what it accepts must be non-empty, well-formed and re-encode to
/// the same deliveries.
pub fn run_message(data: &[u8]) {
    let Some(message) = message(data) else {
        return;
    };
    let entries = match wire::decode(&message) {
        Ok(entries) => entries,
        Err(error) => {
            assert!(
                error.0.len() <= MAX_ERROR_LEN,
                "error too long: {}",
                error.0.len()
            );
            return;
        }
    };
    assert!(
        !entries.is_empty(),
        "a message with no delivery was accepted"
    );
    for entry in &entries {
        check_meta(&entry.meta);
    }
    // The dead-letter tools re-publish what they read: it must read back the same.
    let again = wire::batch_entries(&entries);
    assert_eq!(
        wire::decode(&again).as_ref(),
        Ok(&entries),
        "re-encoding changed it"
    );
    if message.is_batch() && entries.len() > 1 {
        assert_eq!(again.body, message.body, "a batch has one encoding");
    }
}

/// Decodes a spool record; what it accepts must re-encode to the same delivery and survive
/// the queue (the drainer publishes it, the worker decodes it).
pub fn run_record(data: &[u8]) {
    let delivery = match wire::decode_record(data) {
        Ok(delivery) => delivery,
        Err(error) => {
            assert!(
                error.0.len() <= MAX_ERROR_LEN,
                "error too long: {}",
                error.0.len()
            );
            return;
        }
    };
    let (meta, body) = (delivery.meta(), delivery.body());
    check_meta(meta);
    let record = wire::encode_record(&delivery);
    if data.first() == Some(&2) {
        assert_eq!(record, data, "a version 2 record has one encoding");
    }
    let back = wire::decode_record(&record).expect("own record");
    assert_eq!((back.meta(), back.body()), (meta, body));
    let entry = Entry {
        meta: meta.clone(),
        body: body.clone(),
    };
    let queued = wire::decode(&wire::batch(&[&delivery])).expect("own single message");
    assert_eq!(queued, std::slice::from_ref(&entry), "changed on the queue");
    let batch = wire::decode(&wire::batch(&[&delivery, &back])).expect("own batch");
    assert_eq!(batch, [entry.clone(), entry], "changed in a batch");
    // The worker's first step; unknown providers and bad bodies are errors, not panics.
    let _ = hookline_core::normalize_delivery(meta, body);
}

/// A receive time is whole milliseconds in years 0..=9999, so every copy of it agrees.
fn check_meta(meta: &DeliveryMeta) {
    let at = meta.received_at;
    assert_eq!(
        from_epoch_millis(epoch_millis(at)),
        Some(at),
        "not whole ms in range: {at}"
    );
    assert_eq!(parse_timestamp(&format_timestamp(at)), Some(at), "{at}");
}
