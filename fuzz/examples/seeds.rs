//! Writes the seed corpora in `seeds/<target>/` from the providers' documents, the unit
//! tests' fixtures and the shipped configs:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds [-- <providers dir>]`.

use bytes::Bytes;
use hookline_core::config::SourceSpec;
use hookline_core::{Secret, delivery, provider, wire};
use hookline_fuzz::join;
use hookline_fuzz::provider::{MESSAGE_ID, NOW_NANOS, ROTATED, SIGN, TAMPER, secrets};
use http::{HeaderMap, HeaderValue};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn main() {
    let docs = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("../shared/providers"));
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let now = OffsetDateTime::from_unix_timestamp_nanos(NOW_NANOS).expect("in range");
    let mut all_bodies = BTreeSet::new();
    let mut records = Vec::new();

    for provider in provider::PROVIDERS {
        let name = provider.name();
        let mut bodies = BTreeSet::new();
        let doc = std::fs::read_to_string(docs.join(format!("{name}.md"))).unwrap_or_default();
        for block in code_blocks(&doc) {
            bodies.insert(block.clone());
            // inline documents each event's `data` alone: wrap it as inline sends it.
            if name == "inline" {
                bodies.insert(format!(
                    r#"{{"timestamp":1524181344796,"events":[{{"type":"reservation-created","data":{block},"timestamp":1524181344796}}]}}"#
                ));
            }
        }
        let file = format!(
            "{ROOT}/crates/hookline-core/src/provider/{}.rs",
            name.replace('-', "_")
        );
        bodies.extend(raw_strings(
            &std::fs::read_to_string(file).expect("provider source"),
        ));
        bodies.insert(provider.example(None, "ex-1", now));
        bodies.insert(provider.example(Some("custom_type"), "ex-2", now));

        let target = format!("provider_{}", name.replace('-', "_"));
        let secret = provider
            .signing_key(secrets(name)[0])
            .expect("valid test secret");
        let mut n = 0;
        for body in &bodies {
            let mut write = |mode: u8, skew: u8, headers: &[(&str, &str)]| {
                let mut seed = vec![mode, skew];
                seed.extend(join(headers, body.as_bytes()));
                save(&out, &target, &mut n, &seed);
            };
            write(SIGN, 0, &[]);
            write(SIGN | ROTATED, 0, &[]);
            write(SIGN | TAMPER, 0, &[]);
            // Unsigned: the provider's header names with a signature for another key.
            let forged: Vec<(&str, String)> =
                provider.sign(body.as_bytes(), b"forged", MESSAGE_ID, now);
            let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
            write(0, 0, &forged);
            if name == "standard-webhooks" {
                write(SIGN, 70, &[]); // 350 s ahead: stale
                write(SIGN, 200, &[]); // 280 s behind: fresh
            }
            // A verified delivery of each valid example is a spool record seed.
            let mut headers = HeaderMap::new();
            for (header, value) in provider.sign(body.as_bytes(), &secret, MESSAGE_ID, now) {
                headers.append(header, HeaderValue::from_str(&value).expect("text"));
            }
            let source = SourceSpec::new("seed", *provider, vec![Secret::new(secrets(name)[0])])
                .expect("valid test secret");
            if let Ok(delivery) =
                delivery::verify(&source, &headers, Bytes::from(body.clone()), now)
            {
                records.push(delivery);
            }
        }
        all_bodies.extend(bodies);
    }

    let mut n = 0;
    let canonical_source =
        std::fs::read_to_string(format!("{ROOT}/crates/hookline-core/src/canonical_json.rs"))
            .expect("canonical_json.rs");
    for body in all_bodies.iter().chain(&raw_strings(&canonical_source)) {
        save(&out, "canonical_json", &mut n, body.as_bytes());
    }
    for tricky in [
        &b"[-0, -0.0, 1.0, 1e20, 1e21, 1e-6, 1e-7, 9007199254740993]"[..],
        br#"{"b":1,"a":2,"10":3,"9":4,"\u00e9":5,"\ud83d\ude00":6,"\uffff":7}"#,
        br#"["\u0000\u001f\"\\\/\b\f\n\r\t"]"#,
        b" \t\r\n[ 1 ,\n2 ] \r\n",
        b"1e400",
    ] {
        save(&out, "canonical_json", &mut n, tricky);
    }

    let mut n = 0;
    for file in ["hookline.toml", "hookline.docker.toml", "hookline.ha.toml"] {
        let text = std::fs::read_to_string(format!("{ROOT}/config/{file}")).expect("config");
        save(&out, "config_toml", &mut n, text.as_bytes());
    }
    let config_source =
        std::fs::read_to_string(format!("{ROOT}/crates/hookline-core/src/config.rs"))
            .expect("config.rs");
    for text in raw_toml_strings(&config_source) {
        save(&out, "config_toml", &mut n, text.as_bytes());
    }

    let (mut n, mut m) = (0, 0);
    let mut v1 = vec![1];
    for field in [
        "0192f0c4-0000-7000-8000-000000000001",
        "shop",
        "aisle",
        "2026-05-01T12:00:00.000Z",
    ] {
        v1.extend_from_slice(&(field.len() as u32).to_le_bytes());
        v1.extend_from_slice(field.as_bytes());
    }
    v1.extend_from_slice(br#"{"id":"1","event":"ticket_created"}"#);
    save(&out, "wire_record", &mut m, &v1);
    for (i, delivery) in records.iter().enumerate() {
        save(&out, "wire_record", &mut m, &wire::encode_record(delivery));
        let next = &records[(i + 1) % records.len()];
        for message in [wire::batch(&[delivery]), wire::batch(&[delivery, next])] {
            save(&out, "wire_message", &mut n, &message_seed(&message));
        }
    }
}

/// A message in the layout `hookline_fuzz::wire::message` reads.
fn message_seed(message: &wire::Message) -> Vec<u8> {
    let mut lines: Vec<(&str, &str)> = Vec::new();
    if let Some(id) = &message.message_id {
        lines.push(("message_id", id));
    }
    if let Some(kind) = &message.content_type {
        lines.push(("content_type", kind));
    }
    lines.extend(
        message
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    join(&lines, &message.body)
}

fn save(out: &Path, target: &str, n: &mut usize, bytes: &[u8]) {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir).expect("seeds directory");
    *n += 1;
    std::fs::write(dir.join(format!("{n:03}")), bytes).expect("seed written");
}

/// Fenced blocks of a Markdown document that are JSON once comments and `...` are removed.
fn code_blocks(doc: &str) -> Vec<String> {
    doc.split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|block| {
            let body = block.split_once('\n').map_or("", |(_, rest)| rest);
            let cleaned: String = body
                .lines()
                .filter(|line| {
                    let line = line.trim();
                    !line.starts_with("//") && !line.starts_with("...")
                })
                .collect::<Vec<_>>()
                .join("\n");
            serde_json::from_str::<serde_json::Value>(&cleaned)
                .ok()
                .map(|_| cleaned)
        })
        .collect()
}

/// `r#"..."#` literals of a Rust source that are JSON.
fn raw_strings(source: &str) -> Vec<String> {
    raw_literals(source)
        .filter(|text| serde_json::from_str::<serde_json::Value>(text).is_ok())
        .collect()
}

/// `r#"..."#` literals of a Rust source that look like config files.
fn raw_toml_strings(source: &str) -> Vec<String> {
    raw_literals(source)
        .filter(|text| text.contains('[') && text.contains('='))
        .map(|text| text.lines().map(str::trim).collect::<Vec<_>>().join("\n"))
        .collect()
}

fn raw_literals(source: &str) -> impl Iterator<Item = String> + '_ {
    source
        .split("r#\"")
        .skip(1)
        .filter_map(|rest| rest.split_once("\"#").map(|(text, _)| text.to_owned()))
}
