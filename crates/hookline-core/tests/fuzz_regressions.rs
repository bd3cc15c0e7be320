//! Replays the inputs the fuzz targets (`fuzz/`) found bugs with, through the same library
//! functions, so the normal test suite keeps them fixed without nightly or libFuzzer.
//!
//! Each input is kept byte for byte as libFuzzer wrote it, in `tests/fuzz_regressions/`,
//! named `<target>-<what it found>`; `cargo +nightly fuzz run <target> <file>` replays one
//! under the fuzzer too. The layout (header lines up to a NUL, then the body) is the one
//! `fuzz/src/split.rs` reads.

/// The fuzz targets' own input layout (`fuzz/src/split.rs`), so a crash file means here
/// what it meant to the fuzzer.
#[path = "../../../fuzz/src/split.rs"]
#[allow(unreachable_pub)]
mod split;
use split::split;

use hookline_core::config::Config;
use hookline_core::timestamp::{epoch_millis, format_timestamp, from_epoch_millis};
use hookline_core::wire::{self, Entry, Message};
use std::path::Path;

/// Which fuzz target the input belongs to.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// `wire::decode` of a queue message.
    WireMessage,
    /// `wire::decode_record` of a spool record.
    WireRecord,
    /// `Config::from_toml` of a config file.
    ConfigToml,
}

/// Where the input is, and what replaying it must now give.
struct Case {
    target: Target,
    /// A file in `tests/fuzz_regressions/`, or the bytes themselves.
    input: Input,
    /// `accepted: <summary>` or `refused: <error>`.
    expect: &'static str,
}

enum Input {
    File(&'static str),
    Bytes(&'static [u8]),
}

const CASES: &[Case] = &[
    // The receive time kept nanoseconds from the header: a batch or the spool (milliseconds)
    // then gave another time for the same delivery.
    Case {
        target: Target::WireMessage,
        input: Input::File("wire_message-sub-millisecond-time"),
        expect: "accepted: 1 delivery, received 2026-05-01T12:00:00.123Z",
    },
    // A batch of zero deliveries was accepted, so the worker would ack a message that
    // carried nothing.
    Case {
        target: Target::WireMessage,
        input: Input::File("wire_message-empty-batch"),
        expect: "refused: batch holds no delivery",
    },
    // Found while fixing the first: in UTC this is year 10000, and formatting it (for a
    // batch, the spool or the envelope) panicked in `time`.
    Case {
        target: Target::WireMessage,
        input: Input::Bytes(
            b"message_id: 0192f0c4-0000-7000-8000-000000000001\n\
              x-hookline-source: s\nx-hookline-provider: aisle\n\
              x-hookline-received-at: 9999-12-31T23:59:59.999-23:59\n\0{}",
        ),
        expect: "refused: header `x-hookline-received-at` \"9999-12-31T23:59:59.999-23:59\" is not an RFC 3339 time in years 0000 to 9999",
    },
    Case {
        target: Target::WireRecord,
        input: Input::Bytes(
            b"\x01\x24\x00\x00\x000192f0c4-0000-7000-8000-000000000001\
              \x01\x00\x00\x00s\x05\x00\x00\x00aisle\
              \x19\x00\x00\x009999-12-31T23:00:00-01:00{}",
        ),
        expect: "refused: receive time is not an RFC 3339 time in years 0000 to 9999",
    },
    // The target's check caught this hand-written input (its 240 s run did not reach it):
    // figment's type error quoted the value, here a secret written without its brackets.
    Case {
        target: Target::ConfigToml,
        input: Input::Bytes(
            b"[[sources]]\nname = \"a\"\nprovider = \"aisle\"\nsecrets = \"super-secret-value\"\n",
        ),
        expect: "refused: fuzz.toml: sources.0.secrets: invalid type: expected a sequence (the value is not shown: it may be a secret)",
    },
];

#[test]
fn fuzz_findings_stay_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for case in CASES {
        let (name, bytes) = match case.input {
            Input::File(name) => (
                name.to_owned(),
                std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")),
            ),
            Input::Bytes(bytes) => (format!("{:?} bytes", case.target), bytes.to_vec()),
        };
        let outcome = match case.target {
            Target::WireMessage => wire_message(&bytes),
            Target::WireRecord => wire_record(&bytes),
            Target::ConfigToml => config_toml(&bytes),
        };
        assert_eq!(outcome, case.expect, "{name}");
    }
}

#[test]
fn every_input_file_is_in_the_table() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for file in std::fs::read_dir(dir).unwrap() {
        let name = file.unwrap().file_name().into_string().unwrap();
        assert!(
            CASES
                .iter()
                .any(|case| matches!(case.input, Input::File(f) if f == name)),
            "{name} is not replayed"
        );
    }
}

/// `fuzz/src/wire.rs`'s message, decoded, with the invariants the target checks.
fn wire_message(data: &[u8]) -> String {
    let (lines, body) = split(data);
    let mut message = Message {
        body: bytes::Bytes::copy_from_slice(body),
        ..Message::default()
    };
    for (name, value) in lines {
        let (name, value) = (text(name), text(value));
        match name.as_str() {
            "message_id" => message.message_id = Some(value),
            "content_type" => message.content_type = Some(value),
            _ => message.headers.push((name, value)),
        }
    }
    match wire::decode(&message) {
        Ok(entries) => {
            assert!(!entries.is_empty());
            let again = wire::decode(&wire::batch_entries(&entries)).unwrap();
            assert_eq!(again, entries, "re-encoding changed it");
            accepted(&entries)
        }
        Err(error) => format!("refused: {error}"),
    }
}

/// `fuzz/src/wire.rs`'s record, decoded, with the invariants the target checks.
fn wire_record(data: &[u8]) -> String {
    match wire::decode_record(data) {
        Ok(delivery) => {
            let entry = Entry {
                meta: delivery.meta().clone(),
                body: delivery.body().clone(),
            };
            let queued = wire::decode(&wire::batch(&[&delivery])).unwrap();
            assert_eq!(queued, std::slice::from_ref(&entry), "changed on the queue");
            accepted(&[entry])
        }
        Err(error) => format!("refused: {error}"),
    }
}

/// `fuzz/src/config.rs`'s load, with its check that no problem repeats a secret.
fn config_toml(data: &[u8]) -> String {
    match Config::from_toml(&text(data), Path::new("fuzz.toml")) {
        Ok(config) => format!("accepted: {} sources", config.sources.len()),
        Err(error) => {
            let shown = error.to_string();
            assert!(!shown.contains("super-secret-value"), "{shown}");
            format!("refused: {shown}")
        }
    }
}

fn accepted(entries: &[Entry]) -> String {
    let times: Vec<String> = entries
        .iter()
        .map(|entry| {
            let at = entry.meta.received_at;
            assert_eq!(from_epoch_millis(epoch_millis(at)), Some(at), "whole ms");
            format_timestamp(at)
        })
        .collect();
    let noun = if entries.len() == 1 {
        "delivery"
    } else {
        "deliveries"
    };
    format!(
        "accepted: {} {noun}, received {}",
        entries.len(),
        times.join(", ")
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec())
        .expect("the recorded inputs are UTF-8 where the target needs it")
}
