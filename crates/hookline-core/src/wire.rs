//! The raw-delivery format, both ways and in one place: the messages on `<prefix>.ingress`
//! (one delivery per message, or a batch of them) and the records of the local spool.
//!
//! **Single-delivery message**: the body exactly as received; `message_id` = delivery id;
//! string headers [`SOURCE`], [`PROVIDER`], [`RECEIVED_AT`] and one
//! `x-hookline-header-<name>` per header the provider forwards. A dead letter put back by
//! hand, and everything written before batches existed, has this form.
//!
//! **Batch message**: `content_type` = [`BATCH_CONTENT_TYPE`], `message_id` = the first
//! delivery's id; the body is `HLB\x01`, a little-endian `u32` count, then per delivery a
//! `u32` length and an entry.
//!
//! **Entry** (also the spool's record format, version 2): byte `2`; the delivery id as 16
//! bytes; the receive time as little-endian `i64` unix milliseconds; source and provider
//! as `u16` length + UTF-8; a `u8` count of forwarded headers, each a `u16` length + name
//! and a `u32` length + value; then the body as the rest of the entry. Version 1 spool
//! records (text fields with `u32` lengths) are still read.

use crate::delivery::{DeliveryMeta, VerifiedDelivery};
use crate::timestamp::{epoch_millis, format_timestamp, from_epoch_millis, parse_received_at};
use bytes::Bytes;
use uuid::Uuid;

/// Header naming the source (endpoint) of a single-delivery message.
pub const SOURCE: &str = "x-hookline-source";
/// Header naming the provider of a single-delivery message.
pub const PROVIDER: &str = "x-hookline-provider";
/// Header with the RFC 3339 time the ingress received a single delivery.
pub const RECEIVED_AT: &str = "x-hookline-received-at";
/// Prefix of the headers carrying a provider's forwarded request headers.
pub const FORWARDED_PREFIX: &str = "x-hookline-header-";
/// `content_type` of a batch message.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.hookline.batch";
/// `content_type` of a single-delivery message (the body is the provider's JSON).
pub const SINGLE_CONTENT_TYPE: &str = "application/json";

const BATCH_MAGIC: &[u8; 4] = b"HLB\x01";
const RECORD_V1: u8 = 1;
const ENTRY_V2: u8 = 2;

/// One raw delivery read from the queue: what the worker processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its metadata.
    pub meta: DeliveryMeta,
    /// The body exactly as the provider sent it.
    pub body: Bytes,
}

/// The parts of an AMQP message this format uses, without any AMQP library's types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// `message_id` property.
    pub message_id: Option<String>,
    /// `content_type` property.
    pub content_type: Option<String>,
    /// Headers whose values are strings.
    pub headers: Vec<(String, String)>,
    /// The message body.
    pub body: Bytes,
}

impl Message {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a batch message.
    pub fn is_batch(&self) -> bool {
        self.content_type.as_deref() == Some(BATCH_CONTENT_TYPE)
    }
}

/// Why bytes are not a raw delivery in this format; the text says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

fn bad(reason: impl Into<String>) -> FormatError {
    FormatError(reason.into())
}

/// One delivery as a single-delivery message.
pub fn single(meta: &DeliveryMeta, body: &Bytes) -> Message {
    let mut headers = vec![
        (SOURCE.to_owned(), meta.source.clone()),
        (PROVIDER.to_owned(), meta.provider.clone()),
        (RECEIVED_AT.to_owned(), format_timestamp(meta.received_at)),
    ];
    headers.extend(
        meta.headers
            .iter()
            .map(|(name, value)| (format!("{FORWARDED_PREFIX}{name}"), value.clone())),
    );
    Message {
        message_id: Some(meta.delivery_id.to_string()),
        content_type: Some(SINGLE_CONTENT_TYPE.to_owned()),
        headers,
        body: body.clone(),
    }
}

/// Several deliveries as one batch message; one delivery stays a single-delivery message.
pub fn batch(deliveries: &[&VerifiedDelivery]) -> Message {
    let parts: Vec<(&DeliveryMeta, &Bytes)> =
        deliveries.iter().map(|d| (d.meta(), d.body())).collect();
    batch_of(&parts)
}

/// [`batch`] for entries read back from a queue (tools that re-publish them).
pub fn batch_entries(entries: &[Entry]) -> Message {
    let parts: Vec<(&DeliveryMeta, &Bytes)> = entries.iter().map(|e| (&e.meta, &e.body)).collect();
    batch_of(&parts)
}

fn batch_of(deliveries: &[(&DeliveryMeta, &Bytes)]) -> Message {
    match deliveries {
        [] => Message::default(),
        [(meta, body)] => single(meta, body),
        [(first, _), ..] => {
            let size = 8 + deliveries
                .iter()
                .map(|(meta, body)| 4 + entry_len(meta, body))
                .sum::<usize>();
            let mut out = Vec::with_capacity(size);
            out.extend_from_slice(BATCH_MAGIC);
            put_u32(&mut out, deliveries.len());
            for (meta, body) in deliveries {
                put_u32(&mut out, entry_len(meta, body));
                write_entry(&mut out, meta, body);
            }
            Message {
                message_id: Some(first.delivery_id.to_string()),
                content_type: Some(BATCH_CONTENT_TYPE.to_owned()),
                headers: Vec::new(),
                body: out.into(),
            }
        }
    }
}

/// The deliveries a message carries, in order.
pub fn decode(message: &Message) -> Result<Vec<Entry>, FormatError> {
    if message.is_batch() {
        return decode_batch(&message.body);
    }
    let header = |name: &str| {
        message
            .header(name)
            .ok_or_else(|| bad(format!("missing header `{name}`")))
    };
    let id = message
        .message_id
        .as_deref()
        .ok_or(bad("missing message_id"))?;
    let received_at = header(RECEIVED_AT)?;
    let meta = DeliveryMeta {
        delivery_id: Uuid::parse_str(id).map_err(|_| {
            bad(format!(
                "message_id {:?} is not a delivery id (uuid)",
                cut(id)
            ))
        })?,
        source: header(SOURCE)?.to_owned(),
        provider: header(PROVIDER)?.to_owned(),
        // Every copy of a delivery keeps whole milliseconds (spool, batches, envelope).
        received_at: parse_received_at(received_at).ok_or_else(|| {
            bad(format!(
                "header `{RECEIVED_AT}` {:?} is not an RFC 3339 time in years 0000 to 9999",
                cut(received_at)
            ))
        })?,
        headers: message
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let name = name.strip_prefix(FORWARDED_PREFIX)?;
                Some((name.to_owned(), value.clone()))
            })
            .collect(),
    };
    Ok(vec![Entry {
        meta,
        body: message.body.clone(),
    }])
}

/// A spool record for `delivery` (an entry, format version 2).
pub fn encode_record(delivery: &VerifiedDelivery) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry_len(delivery.meta(), delivery.body()));
    write_entry(&mut out, delivery.meta(), delivery.body());
    out
}

/// A spool record back as the verified delivery it was written from (versions 1 and 2).
pub fn decode_record(bytes: &[u8]) -> Result<VerifiedDelivery, FormatError> {
    let entry = match bytes.first() {
        Some(&RECORD_V1) => decode_record_v1(&bytes[1..])?,
        Some(&ENTRY_V2) => read_entry(&Bytes::copy_from_slice(bytes))?,
        Some(other) => return Err(bad(format!("unknown format version {other}"))),
        None => return Err(bad("empty record")),
    };
    // Only verified deliveries are ever written to the spool.
    Ok(VerifiedDelivery::trusted(entry.meta, entry.body))
}

fn decode_batch(body: &Bytes) -> Result<Vec<Entry>, FormatError> {
    let mut reader = Reader(body);
    if reader.take(4)? != BATCH_MAGIC {
        return Err(bad("batch does not start with HLB\\x01"));
    }
    let count = reader.u32()?;
    // Acking a message that carries nothing would hide whatever made it (found by fuzzing).
    if count == 0 {
        return Err(bad("batch holds no delivery"));
    }
    // Each entry takes at least 4 bytes of framing, so a huge count cannot make us allocate.
    let mut entries = Vec::with_capacity(count.min(reader.0.len() / 4));
    for i in 0..count {
        let len = reader.u32()?;
        let bytes = reader
            .take(len)
            .map_err(|e| bad(format!("batch entry {i}: {e}")))?;
        // The entry's body is a view of the message's, not a copy.
        let entry = body.slice_ref(bytes);
        entries.push(read_entry(&entry).map_err(|e| bad(format!("batch entry {i}: {e}")))?);
    }
    if !reader.0.is_empty() {
        return Err(bad("bytes after the last batch entry"));
    }
    Ok(entries)
}

fn entry_len(meta: &DeliveryMeta, body: &[u8]) -> usize {
    1 + 16
        + 8
        + 2
        + meta.source.len()
        + 2
        + meta.provider.len()
        + 1
        + meta
            .headers
            .iter()
            .map(|(n, v)| 2 + n.len() + 4 + v.len())
            .sum::<usize>()
        + body.len()
}

fn write_entry(out: &mut Vec<u8>, meta: &DeliveryMeta, body: &[u8]) {
    out.push(ENTRY_V2);
    out.extend_from_slice(meta.delivery_id.as_bytes());
    out.extend_from_slice(&epoch_millis(meta.received_at).to_le_bytes());
    put_short(out, &meta.source);
    put_short(out, &meta.provider);
    // Providers forward one or a few headers; the count is ours, never the sender's.
    let headers = &meta.headers[..meta.headers.len().min(usize::from(u8::MAX))];
    out.push(headers.len() as u8);
    for (name, value) in headers {
        put_short(out, name);
        put_u32(out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(body);
}

fn read_entry(bytes: &Bytes) -> Result<Entry, FormatError> {
    let mut reader = Reader(bytes);
    match reader.u8()? {
        ENTRY_V2 => {}
        other => return Err(bad(format!("unknown entry version {other}"))),
    }
    let delivery_id = Uuid::from_bytes(reader.take(16)?.try_into().expect("16 bytes"));
    let millis = i64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes"));
    let received_at = from_epoch_millis(millis).ok_or(bad("receive time out of range"))?;
    let source = reader.short_text()?;
    let provider = reader.short_text()?;
    let count = reader.u8()?;
    let mut headers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let name = reader.short_text()?;
        let len = reader.u32()?;
        headers.push((name, reader.text(len)?));
    }
    Ok(Entry {
        meta: DeliveryMeta {
            delivery_id,
            source,
            provider,
            received_at,
            headers,
        },
        body: bytes.slice_ref(reader.0),
    })
}

/// Version 1 (before batches): delivery id, source, provider and received-at as `u32`
/// length + text, then the body.
fn decode_record_v1(bytes: &[u8]) -> Result<Entry, FormatError> {
    let mut reader = Reader(bytes);
    let mut field = || reader.u32().and_then(|len| reader.text(len));
    let (id, source, provider, received_at) = (field()?, field()?, field()?, field()?);
    Ok(Entry {
        meta: DeliveryMeta {
            delivery_id: Uuid::parse_str(&id).map_err(|_| bad("delivery id is not a uuid"))?,
            source,
            provider,
            received_at: parse_received_at(&received_at).ok_or(bad(
                "receive time is not an RFC 3339 time in years 0000 to 9999",
            ))?,
            headers: Vec::new(),
        },
        body: Bytes::copy_from_slice(reader.0),
    })
}

fn put_u32(out: &mut Vec<u8>, len: usize) {
    // Bodies are bounded by ingress.max_body_bytes, far below 4 GiB.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_short(out: &mut Vec<u8>, text: &str) {
    // Source, provider and header names come from our config and code: short.
    let len = text.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..len]);
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], FormatError> {
        if self.0.len() < len {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<usize, FormatError> {
        let bytes: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
        usize::try_from(u32::from_le_bytes(bytes)).map_err(|_| bad("length too large"))
    }

    fn text(&mut self, len: usize) -> Result<String, FormatError> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| bad("text field is not UTF-8"))
    }

    fn short_text(&mut self) -> Result<String, FormatError> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
        self.text(usize::from(len))
    }
}

/// Attacker-controlled text in an error message is cut short.
fn cut(text: &str) -> &str {
    let end = text.char_indices().nth(64).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u8, headers: &[(&str, &str)]) -> VerifiedDelivery {
        VerifiedDelivery::trusted(
            DeliveryMeta {
                delivery_id: Uuid::now_v7(),
                source: format!("source-{n}"),
                provider: "aisle".into(),
                received_at: from_epoch_millis(1_764_000_000_123 + i64::from(n)).unwrap(),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
            // Not UTF-8: the body is kept as raw bytes.
            Bytes::from([b'{', n, 0xff, 0x00, b'}'].to_vec()),
        )
    }

    fn entry(d: &VerifiedDelivery) -> Entry {
        Entry {
            meta: d.meta().clone(),
            body: d.body().clone(),
        }
    }

    #[test]
    fn single_round_trip() {
        let d = delivery(1, &[("webhook-id", "msg_1")]);
        let message = single(d.meta(), d.body());
        assert_eq!(message.message_id, Some(d.meta().delivery_id.to_string()));
        assert_eq!(message.header(SOURCE), Some("source-1"));
        assert_eq!(
            message.header(RECEIVED_AT),
            Some("2025-11-24T16:00:00.124Z")
        );
        assert_eq!(
            message.header("x-hookline-header-webhook-id"),
            Some("msg_1")
        );
        assert!(!message.is_batch());
        assert_eq!(decode(&message).unwrap(), vec![entry(&d)]);
    }

    #[test]
    fn batch_round_trip() {
        let ds: Vec<_> = (0..5).map(|n| delivery(n, &[("a", "b")])).collect();
        let refs: Vec<_> = ds.iter().collect();
        let message = batch(&refs);
        assert!(message.is_batch());
        assert_eq!(
            message.message_id,
            Some(ds[0].meta().delivery_id.to_string())
        );
        let decoded = decode(&message).unwrap();
        assert_eq!(decoded, ds.iter().map(entry).collect::<Vec<_>>());
        assert_eq!(
            batch_entries(&decoded),
            message,
            "re-batching what was read"
        );
        // One delivery needs no batch.
        assert!(!batch(&refs[..1]).is_batch());
    }

    #[test]
    fn records_round_trip_and_old_records_still_read() {
        let d = delivery(7, &[("webhook-id", "msg_7")]);
        let back = decode_record(&encode_record(&d)).unwrap();
        assert_eq!((back.meta(), back.body()), (d.meta(), d.body()));

        // A version 1 record as the spool wrote it before this format existed.
        let id = "0192f0c4-0000-7000-8000-000000000001";
        let mut v1 = vec![RECORD_V1];
        for field in [id, "shop", "aisle", "2026-05-01T12:00:00.000Z"] {
            v1.extend_from_slice(&(field.len() as u32).to_le_bytes());
            v1.extend_from_slice(field.as_bytes());
        }
        v1.extend_from_slice(b"{\"id\":1}");
        let old = decode_record(&v1).unwrap();
        assert_eq!(old.meta().delivery_id.to_string(), id);
        assert_eq!(old.meta().source, "shop");
        assert_eq!(
            format_timestamp(old.meta().received_at),
            "2026-05-01T12:00:00.000Z"
        );
        assert_eq!(old.body().as_ref(), b"{\"id\":1}");
    }

    #[test]
    fn bad_bytes_are_errors_never_panics() {
        assert!(decode_record(&[]).is_err());
        assert!(decode_record(&[9]).is_err());
        let good = encode_record(&delivery(1, &[("h", "v")]));
        let body_len = delivery(1, &[]).body().len();
        for cut in 0..good.len() - body_len {
            assert!(decode_record(&good[..cut]).is_err(), "cut at {cut}");
        }
        let refs = [&delivery(1, &[]), &delivery(2, &[])];
        let message = batch(&refs);
        for cut in 0..message.body.len() {
            let truncated = Message {
                body: message.body.slice(..cut),
                ..message.clone()
            };
            assert!(decode(&truncated).is_err(), "batch cut at {cut}");
        }
        let mut huge = BATCH_MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let message = Message {
            content_type: Some(BATCH_CONTENT_TYPE.into()),
            body: huge.into(),
            ..Message::default()
        };
        assert!(decode(&message).is_err());

        let mut empty = BATCH_MAGIC.to_vec();
        empty.extend_from_slice(&0u32.to_le_bytes());
        let message = Message {
            body: empty.into(),
            ..message
        };
        assert_eq!(decode(&message).unwrap_err().0, "batch holds no delivery");
    }

    #[test]
    fn receive_times_read_back_are_whole_milliseconds_in_four_digit_years() {
        let d = delivery(1, &[]);
        let mut message = single(d.meta(), d.body());
        // Found by fuzzing: a finer time read back was not what a batch or the spool keeps.
        message.headers[2].1 = "2025-11-24T16:00:00.124999999Z".into();
        assert_eq!(decode(&message).unwrap(), vec![entry(&d)]);
        // In UTC this is in year 10000, which formatting the envelope's time would panic on.
        message.headers[2].1 = "9999-12-31T23:59:59.999-23:59".into();
        assert!(
            decode(&message)
                .unwrap_err()
                .0
                .contains("years 0000 to 9999")
        );

        let mut v1 = vec![RECORD_V1];
        for field in [
            "0192f0c4-0000-7000-8000-000000000001",
            "s",
            "aisle",
            "9999-12-31T23:00:00-01:00",
        ] {
            v1.extend_from_slice(&(field.len() as u32).to_le_bytes());
            v1.extend_from_slice(field.as_bytes());
        }
        assert!(
            decode_record(&v1)
                .unwrap_err()
                .0
                .contains("years 0000 to 9999")
        );
    }

    #[test]
    fn single_message_errors_name_what_is_missing() {
        let d = delivery(1, &[]);
        let good = single(d.meta(), d.body());
        let without = |name: &str| Message {
            headers: good
                .headers
                .iter()
                .filter(|(n, _)| n != name)
                .cloned()
                .collect(),
            ..good.clone()
        };
        assert_eq!(
            decode(&without(SOURCE)).unwrap_err().0,
            "missing header `x-hookline-source`"
        );
        let no_id = Message {
            message_id: None,
            ..good.clone()
        };
        assert_eq!(decode(&no_id).unwrap_err().0, "missing message_id");
        let long = Message {
            message_id: Some("p".repeat(1000)),
            ..good.clone()
        };
        assert!(
            decode(&long).unwrap_err().0.len() < 200,
            "attacker text is cut"
        );
        let mut bad_time = good.clone();
        bad_time.headers[2].1 = "yesterday".into();
        assert!(decode(&bad_time).unwrap_err().0.contains(RECEIVED_AT));
    }
}
