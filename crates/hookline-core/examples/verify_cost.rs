//! What a forged webhook costs to refuse: inline's canonical-JSON check next to Aisle's raw-body HMAC.
//!
//! Run with `cargo run --release -p hookline-core --example verify_cost`. Bodies are
//! ~230 KB: a realistic inline batch, an Aisle-shaped body, and shapes an attacker
//! could pick to make canonicalization expensive (float-heavy, escape-heavy, one
//! huge object, deep nesting). Each signature is wrong, so every check runs in full.

use std::hint::black_box;
use std::time::{Duration, Instant};

use hookline_core::canonical_json::{canonical_value, canonicalize};
use hookline_core::provider::{Request, find};
use hookline_core::{Secret, SourceSpec};
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use time::OffsetDateTime;

const TARGET: usize = 230 * 1024;

/// A header map holding one header.
fn headers(name: &'static str, value: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(name, HeaderValue::from_str(value).expect("ASCII header"));
    map
}

fn main() {
    let secret = || vec![Secret::new("a-webhook-signing-secret-of-32ch")];
    let aisle = find("aisle").expect("aisle is registered");
    let inline = find("inline").expect("inline is registered");
    let aisle_source = SourceSpec::new("aisle", aisle, secret()).expect("valid");
    let inline_source = SourceSpec::new("inline", inline, secret()).expect("valid");
    // A well-formed but wrong signature for each: the verifier cannot stop early.
    let aisle_sig = headers(
        "x-aisle-webhook-signature",
        &format!("sha256={}", "ab".repeat(32)),
    );
    let inline_sig = headers("x-hub-signature", &format!("sha1={}", "cd".repeat(20)));
    let now = OffsetDateTime::now_utc();
    let refused = |headers: &HeaderMap, body: &[u8], source: &SourceSpec| {
        source
            .provider
            .verify(&Request::new(headers, body, now), source)
            .is_err()
    };

    let aisle_body = aisle_body();
    let [aisle_own] = per_call([&mut || {
        refused(&aisle_sig, black_box(&aisle_body), &aisle_source);
    }]);
    println!(
        "aisle body, {} bytes: aisle verify {}",
        aisle_body.len(),
        show(aisle_own, aisle_body.len())
    );

    for (name, body) in [
        ("inline batch (realistic)", inline_body()),
        ("floats with exponents", float_body()),
        ("escape-heavy strings", escape_body()),
        ("one object, many scrambled keys", wide_object_body()),
        ("127 levels deep, unsorted", deep_body()),
    ] {
        let len = body.len();
        assert!(
            canonicalize(&body).is_ok(),
            "{name}: body must canonicalize"
        );
        let [old, new, aisle_cost, inline_cost] = per_call([
            &mut || {
                let value: Value = serde_json::from_slice(black_box(&body)).expect("JSON");
                black_box(canonical_value(&value));
            },
            &mut || {
                black_box(canonicalize(black_box(&body)).expect("canonical"));
            },
            &mut || {
                assert!(refused(&aisle_sig, black_box(&body), &aisle_source));
            },
            &mut || {
                assert!(refused(&inline_sig, black_box(&body), &inline_source));
            },
        ]);
        println!("\n{name}, {len} bytes:");
        println!("  old DOM canonicalization  {}", show(old, len));
        println!("  new canonicalize          {}", show(new, len));
        println!("  aisle verify (wrong sig)  {}", show(aisle_cost, len));
        println!("  inline verify (wrong sig) {}", show(inline_cost, len));
        println!(
            "  inline/aisle {:.2}x   old/new canonicalization {:.1}x",
            inline_cost.as_secs_f64() / aisle_cost.as_secs_f64(),
            old.as_secs_f64() / new.as_secs_f64()
        );
    }
}

/// Time per call of each function: the fastest of many short batches, run in
/// turn so that load from other processes on the machine hits them all alike
/// (the fastest batch is the one least disturbed by it).
fn per_call<const N: usize>(mut fs: [&mut dyn FnMut(); N]) -> [Duration; N] {
    // Size batches to about 10 ms each.
    let batches = fs.each_mut().map(|f| {
        let start = Instant::now();
        let mut calls = 0u32;
        while start.elapsed() < Duration::from_millis(10) {
            f();
            calls += 1;
        }
        calls
    });
    let mut best = [Duration::MAX; N];
    for _ in 0..40 {
        for ((f, &calls), best) in fs.iter_mut().zip(&batches).zip(&mut best) {
            let start = Instant::now();
            for _ in 0..calls {
                f();
            }
            *best = (*best).min(start.elapsed() / calls);
        }
    }
    best
}

fn show(time: Duration, len: usize) -> String {
    let micros = time.as_secs_f64() * 1e6;
    let mb_per_s = len as f64 / time.as_secs_f64() / 1e6;
    format!("{micros:>9.1} µs/call {mb_per_s:>8.0} MB/s")
}

/// Repeats `item(i)` inside `open`/`close` until the body reaches the target size.
fn build(open: &str, close: &str, mut item: impl FnMut(usize) -> String) -> Vec<u8> {
    let mut body = String::from(open);
    let mut i = 0;
    while body.len() < TARGET {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&item(i));
        i += 1;
    }
    body.push_str(close);
    body.into_bytes()
}

/// A batch of inline events in their documented shape, members in sender order.
fn inline_body() -> Vec<u8> {
    build(r#"{"timestamp":1524181344796,"events":["#, "]}", |i| {
        let kind = ["order-pickedup", "reservation-time-changed", "voucher-used"][i % 3];
        format!(
            r#"{{"type":"{kind}","timestamp":{ts},"data":{{"id":"o{i}","serial":"A-{i}","order":{{"total":{total},"currency":"TWD","items":[{{"itemId":"{item}","quantity":1,"price":880,"modifierFor":null,"name":{{"en":"Sample Meal Set","zh-tw":"範例套餐"}},"modifiers":[{{"itemId":"5030","modifierName":{{"zh-tw":"ENTRÉE 前菜"}},"parentItemId":5705,"quantity":1.2}}]}}],"state":"pickedup","note":"Ring twice \"please\"\nthen wait 😀 caf\u00e9","delivery":{{"address":{{"line1":"No. {i}, Sec. 3, Zhongshan N. Rd.","lat":25.{lat:07},"lng":121.{lng:07}}}}}}},"guests":{{"adults":2,"children":{children},"tags":["vip","window","birthday"]}}}}}}"#,
            ts = 1_524_181_344_796u64 + i as u64 * 1000,
            total = 880 + i % 97,
            item = 5705 + i,
            lat = (i * 7919) % 10_000_000,
            lng = (i * 104_729) % 10_000_000,
            children = i % 3,
        )
    })
}

/// An Aisle `ticket_created` with a long list in `data`; only its length matters to Aisle.
fn aisle_body() -> Vec<u8> {
    build(
        r#"{"id":"7d4c8a52-1f3b-4c1e-9a51-3f0c5b6f7a10","event":"ticket_created","broadcasted_at":"2026-11-22T10:00:00Z","data":{"id":"b1","store_id":"s1","history":["#,
        "]}}",
        |i| {
            format!(
                r#"{{"user":{{"id":"u{i}","first_name":"Ada","last_name":"L","phone_number":"+1555555{i:04}"}},"created_at":"2026-11-22T10:00:00Z","party_size":{size}}}"#,
                size = i % 8 + 1
            )
        },
    )
}

/// Floats JS prints differently from how they are written: each needs a real parse and format.
fn float_body() -> Vec<u8> {
    build("[", "]", |i| {
        format!("{}.{:016}e-{}", i % 9 + 1, i * 7_777_777_777, i % 300)
    })
}

/// Strings made mostly of escapes, which must be decoded and printed as JS does.
fn escape_body() -> Vec<u8> {
    build("[", "]", |i| {
        format!(r#""\u00e9\n\"q\"\\ \ud83d\ude00 \u2028 \t\u0001 {i}""#)
    })
}

/// One object with thousands of keys in scrambled order, all sharing a long
/// prefix: the worst case for sorting by comparing keys.
fn wide_object_body() -> Vec<u8> {
    build("{", "}", |i| {
        let scrambled = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        format!(
            r#""member-name-with-a-long-shared-prefix-{scrambled:08}":{}"#,
            i % 10
        )
    })
}

/// A big payload under 127 levels of objects whose members are out of order.
fn deep_body() -> Vec<u8> {
    let depth = 126;
    let mut body = String::new();
    for _ in 0..depth {
        body.push_str(r#"{"z":1,"y":"#);
    }
    let mut payload = String::from("\"");
    while payload.len() < TARGET {
        payload.push_str("payload text é ");
    }
    payload.push('"');
    body.push_str(&payload);
    for _ in 0..depth {
        body.push_str(r#","a":[1,2]}"#);
    }
    body.into_bytes()
}
