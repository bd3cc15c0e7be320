//! Signed Aisle webhook bodies, generated before the clock starts so HMAC and formatting
//! cost nothing on the load generator's timed path.

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use hyper::header::HeaderValue;
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use uuid::Uuid;

/// Name of the Aisle signature header.
pub(crate) const SIGNATURE_HEADER: &str = "x-aisle-webhook-signature";

/// Padding that brings a body to roughly 500 bytes, like a real ticket notification.
const NOTE: &str = "Party of four, window seat if possible; one high chair; \
                    allergic to peanuts; arriving from the parking garage on level two";
/// A longer note for the forged requests of `attack` (bodies of about 600 bytes).
const FORGED_NOTE: &str = "Party of four, window seat if possible; one high chair; \
                           allergic to peanuts; arriving from the parking garage on level two; \
                           celebrating a birthday, would love a quiet corner away from the door \
                           and the kitchen; two guests use wheelchairs, step-free entrance please; \
                           please text the number on file if the table is ready early";

/// One signed request body with its Aisle event id.
#[derive(Clone)]
pub(crate) struct Payload {
    /// The Aisle `id` (the event key the worker deduplicates on).
    pub(crate) id: Uuid,
    /// Raw JSON body.
    pub(crate) body: Bytes,
    /// Hex HMAC-SHA256 of `body` under the source secret.
    pub(crate) signature: HeaderValue,
}

/// A pre-generated pool of unique payloads; once exhausted, further payloads are made on
/// the fly (counted, so a report can say the pool was too small).
pub(crate) struct Payloads {
    secret: Vec<u8>,
    items: Vec<Payload>,
    next: AtomicUsize,
    made_late: AtomicU64,
}

impl Payloads {
    /// Generates `count` payloads signed with `secret`, on two threads.
    pub(crate) fn generate(secret: &str, count: usize) -> Payloads {
        let secret = secret.as_bytes().to_vec();
        let half = count / 2;
        let (mut first, second) = std::thread::scope(|scope| {
            let other = scope.spawn(|| make_many(&secret, count - half));
            let mine = make_many(&secret, half);
            (mine, other.join().unwrap_or_default())
        });
        first.extend(second);
        Payloads {
            secret,
            items: first,
            next: AtomicUsize::new(0),
            made_late: AtomicU64::new(0),
        }
    }

    /// The next unused payload.
    pub(crate) fn next(&self) -> Payload {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        match self.items.get(index) {
            Some(payload) => payload.clone(),
            None => {
                self.made_late.fetch_add(1, Ordering::Relaxed);
                make(&self.secret)
            }
        }
    }

    /// Payloads that had to be generated during timing because the pool ran out.
    pub(crate) fn made_late(&self) -> u64 {
        self.made_late.load(Ordering::Relaxed)
    }
}

fn make_many(secret: &[u8], count: usize) -> Vec<Payload> {
    (0..count).map(|_| make(secret)).collect()
}

/// One body like the webhook bodies, same size (for the bare broker ceiling).
pub(crate) fn sample_body() -> Bytes {
    make(b"unused").body
}

/// A realistic Aisle ticket notification with event id `id` (about 400 bytes).
pub(crate) fn aisle_body(id: Uuid) -> Bytes {
    body_with_note(id, NOTE)
}

/// `count` Aisle requests of about 600 bytes whose signature is well-formed hex but made
/// with a key no source has, so the ingress answers them 401 after computing the HMAC.
pub(crate) fn forged(count: usize) -> Vec<Payload> {
    (0..count)
        .map(|_| {
            let id = Uuid::new_v4();
            let body = body_with_note(id, FORGED_NOTE);
            let signature = sign(b"forged-by-hookline-bench", &body);
            Payload {
                id,
                body,
                signature,
            }
        })
        .collect()
}

fn make(secret: &[u8]) -> Payload {
    let id = Uuid::new_v4();
    let body = aisle_body(id);
    let signature = sign(secret, &body);
    Payload {
        id,
        body,
        signature,
    }
}

fn body_with_note(id: Uuid, note: &str) -> Bytes {
    let ticket = Uuid::new_v4();
    let body = format!(
        concat!(
            r#"{{"id":"{id}","event":"ticket_created","broadcasted_at":"2026-11-22T10:00:00Z","#,
            r#""data":{{"id":"{ticket}","store_id":"store-0042","party_size":4,"#,
            r#""user":{{"first_name":"Ada","last_name":"L","phone_number":"+15555550100"}},"#,
            r#""note":"{note}"}}}}"#
        ),
        id = id,
        ticket = ticket,
        note = note,
    );
    Bytes::from(body)
}

fn sign(secret: &[u8], body: &[u8]) -> HeaderValue {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let hex = hex::encode(mac.finalize().into_bytes());
    HeaderValue::from_str(&hex).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_unique_signed_json_of_about_500_bytes() {
        let pool = Payloads::generate("s3cret", 3);
        let (a, b) = (pool.next(), pool.next());
        assert_ne!(a.id, b.id);
        assert!((400..=600).contains(&a.body.len()), "{}", a.body.len());
        let text = std::str::from_utf8(&a.body).unwrap_or_default();
        assert!(text.starts_with(&format!(r#"{{"id":"{}""#, a.id)));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"s3cret").unwrap();
        mac.update(&a.body);
        assert_eq!(
            a.signature.to_str().unwrap(),
            hex::encode(mac.finalize().into_bytes())
        );
        pool.next();
        pool.next();
        assert_eq!(pool.made_late(), 1);
    }

    #[test]
    fn forged_requests_are_about_600_bytes_and_fail_verification() {
        let forged = forged(2);
        assert_ne!(forged[0].id, forged[1].id);
        assert!(
            (550..=650).contains(&forged[0].body.len()),
            "{}",
            forged[0].body.len()
        );
        // A well-formed 32-byte hex tag, so the ingress does the full HMAC to refuse it.
        let signature = forged[0].signature.to_str().unwrap();
        assert_eq!(hex::decode(signature).map(|tag| tag.len()), Ok(32));
        // It matches no secret: not even the body's HMAC under the empty key, or under
        // the signature's own text.
        for key in [&b""[..], signature.as_bytes()] {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
            mac.update(&forged[0].body);
            assert_ne!(signature, hex::encode(mac.finalize().into_bytes()));
        }
    }
}
