//! `hookline send <source>`: fires a realistic delivery at an ingress, signed exactly as the
//! source's provider signs (its own [`Provider::sign`]), and prints one line per attempt:
//! status, delivery id (or the refusal code), latency. With `--retry` it follows the
//! provider's retry schedule, compressed by `--time-scale`, to show what the provider will
//! do while hookline is down.

use anyhow::{Context as _, Result, bail};
use hookline_core::{Config, Provider, SourceSpec};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

/// What to send and how.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The configured source to send as.
    pub source: String,
    /// Ingress base URL (default: the configured `ingress.listen`).
    pub url: Option<String>,
    /// Sign with this secret instead of the source's configured one.
    pub secret: Option<String>,
    /// The provider's own event type (its documented default when absent).
    pub event_type: Option<String>,
    /// Event id (a new uuid per delivery when absent; `<id>-<n>` with `count` > 1).
    pub id: Option<String>,
    /// Send this file's bytes as the body instead of a generated example.
    pub body: Option<PathBuf>,
    /// asello's echo handshake (`GET ?echo=X`) instead of a delivery.
    pub echo: bool,
    /// Deliveries to send.
    pub count: u64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// On failure, retry on the provider's schedule.
    pub retry: bool,
    /// Divides the retry schedule's pauses (e.g. 60: a minute becomes a second).
    pub time_scale: f64,
    /// Print only the summary.
    pub quiet: bool,
}

/// One attempt's outcome.
#[derive(Debug, Clone)]
struct Attempt {
    status: Option<u16>,
    /// The delivery id of a 200, else the `error` code or the transport error.
    detail: String,
    latency: Duration,
}

impl Attempt {
    fn ok(&self) -> bool {
        self.status == Some(200)
    }

    fn line(&self, label: &str) -> String {
        let status = self
            .status
            .map_or_else(|| "---".to_owned(), |s| s.to_string());
        format!(
            "{status} {label}{} {:.1} ms",
            self.detail,
            self.latency.as_secs_f64() * 1000.0
        )
    }
}

/// Sends as `options` says; `Ok(true)` when every delivery (or the echo) got a 200.
pub async fn run(config: &Config, options: SendOptions, out: &mut dyn Write) -> Result<bool> {
    let source = config.source(&options.source).with_context(|| {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        format!(
            "no source named {:?} in {} (configured: {})",
            options.source,
            config.path.display(),
            names.join(", ")
        )
    })?;
    if options.count == 0 || options.concurrency == 0 {
        bail!("--count and --concurrency must be at least 1");
    }
    if !(options.time_scale.is_finite() && options.time_scale > 0.0) {
        bail!("--time-scale must be a positive number");
    }
    let key = match &options.secret {
        Some(secret) => source
            .provider
            .signing_key(secret)
            .map_err(|e| anyhow::anyhow!("--secret: {e}"))?,
        None => source
            .secrets
            .first()
            .context("the source has no secret")?
            .expose()
            .to_vec(),
    };
    let base = options.url.clone().unwrap_or_else(|| default_base(config));
    let url = format!("{}/webhooks/{}", base.trim_end_matches('/'), source.name);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;
    if options.echo {
        return echo(&client, source, &url, out).await;
    }
    let body_file = match &options.body {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --body {}", path.display()))?,
        ),
        None => None,
    };
    let sender = Arc::new(Sender {
        client,
        url,
        provider: source.provider,
        key,
        body_file,
        options: options.clone(),
    });
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..options.concurrency.min(options.count as usize) {
        let (sender, tx, next) = (sender.clone(), tx.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= sender.options.count {
                    return;
                }
                for line in sender.deliver(n).await {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut finals: Vec<Attempt> = Vec::new();
    while let Some((line, attempt)) = rx.recv().await {
        if !options.quiet {
            writeln!(out, "{line}")?;
        }
        if let Some(attempt) = attempt {
            finals.push(attempt);
        }
    }
    for worker in workers {
        worker.await.context("a sending task failed")?;
    }
    let all_ok = finals.iter().all(Attempt::ok);
    if options.count > 1 || options.quiet {
        writeln!(out, "{}", summary(&finals, started.elapsed()))?;
    }
    Ok(all_ok)
}

/// The configured listen address as a URL a local client can reach.
fn default_base(config: &Config) -> String {
    let mut address = config.ingress.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{address}")
}

struct Sender {
    client: reqwest::Client,
    url: String,
    provider: &'static dyn Provider,
    key: Vec<u8>,
    body_file: Option<Vec<u8>>,
    options: SendOptions,
}

impl Sender {
    /// Delivery `n` and, with `--retry`, its retries; returns the lines to print, the last
    /// with the final attempt.
    async fn deliver(&self, n: u64) -> Vec<(String, Option<Attempt>)> {
        let options = &self.options;
        let id = match (&options.id, options.count) {
            (Some(id), 1) => id.clone(),
            (Some(id), _) => format!("{id}-{n}"),
            (None, _) => Uuid::new_v4().to_string(),
        };
        let body = self.body_file.clone().unwrap_or_else(|| {
            self.provider
                .example(
                    options.event_type.as_deref(),
                    &id,
                    OffsetDateTime::now_utc(),
                )
                .into_bytes()
        });
        let schedule: &[Duration] = if options.retry {
            self.provider.retry_schedule()
        } else {
            &[]
        };
        let mut lines = Vec::new();
        let mut attempt = self.post(&body, &id).await;
        let mut number = 1;
        for pause in schedule {
            if attempt.ok() {
                break;
            }
            lines.push((attempt.line(&format!("attempt {number}: ")), None));
            let scaled = pause.div_f64(options.time_scale);
            lines.push((
                format!(
                    "... {} retries after {} (scaled to {:.1} s)",
                    self.provider.name(),
                    humantime::format_duration(*pause),
                    scaled.as_secs_f64()
                ),
                None,
            ));
            tokio::time::sleep(scaled).await;
            number += 1;
            // A provider signs again at each attempt (schemes with a timestamp must).
            attempt = self.post(&body, &id).await;
        }
        let label = if number > 1 {
            format!("attempt {number}: ")
        } else {
            String::new()
        };
        lines.push((attempt.line(&label), Some(attempt)));
        lines
    }

    async fn post(&self, body: &[u8], id: &str) -> Attempt {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        let signed = self
            .provider
            .sign(body, &self.key, id, OffsetDateTime::now_utc());
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let started = Instant::now();
        match request.send().await {
            Err(error) => Attempt {
                status: None,
                detail: format!("error: {}", error_chain(&error)),
                latency: started.elapsed(),
            },
            Ok(response) => {
                let status = response.status().as_u16();
                let answer: serde_json::Value = response.json().await.unwrap_or_default();
                let latency = started.elapsed();
                let detail = if status == 200 {
                    format!(
                        "delivery_id={}",
                        answer["delivery_id"].as_str().unwrap_or("?")
                    )
                } else {
                    format!(
                        "{}: {}",
                        answer["error"].as_str().unwrap_or("error"),
                        answer["message"].as_str().unwrap_or("")
                    )
                };
                Attempt {
                    status: Some(status),
                    detail,
                    latency,
                }
            }
        }
    }
}

async fn echo(
    client: &reqwest::Client,
    source: &SourceSpec,
    url: &str,
    out: &mut dyn Write,
) -> Result<bool> {
    if !source.provider.answers_echo() {
        bail!(
            "--echo: source {:?} is a {} source; only asello sources answer the echo check",
            source.name,
            source.provider.name()
        );
    }
    let token = Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    // The token is hex: nothing to escape.
    let response = client
        .get(format!("{url}?echo={token}"))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("echo check failed: {}", error_chain(&e)))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let ok = status == 200 && text == token;
    let detail = if ok {
        format!("echo={token}")
    } else {
        format!("echo mismatch: sent {token}, got {:?}", cut(&text, 80))
    };
    writeln!(
        out,
        "{status} {detail} {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    )?;
    Ok(ok)
}

fn summary(attempts: &[Attempt], took: Duration) -> String {
    let mut by_status = std::collections::BTreeMap::new();
    for attempt in attempts {
        *by_status
            .entry(attempt.status.map_or("error".to_owned(), |s| s.to_string()))
            .or_insert(0u64) += 1;
    }
    let mut latencies: Vec<Duration> = attempts.iter().map(|a| a.latency).collect();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let statuses: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    format!(
        "sent {} in {:.2} s ({:.0}/s): {}; latency p50 {:.1} ms, p99 {:.1} ms",
        attempts.len(),
        took.as_secs_f64(),
        attempts.len() as f64 / took.as_secs_f64().max(1e-9),
        statuses.join(", "),
        at(0.5),
        at(0.99)
    )
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

fn cut(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(i, _)| &text[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_summary() {
        let ok = Attempt {
            status: Some(200),
            detail: "delivery_id=x".into(),
            latency: Duration::from_millis(3),
        };
        assert_eq!(ok.line(""), "200 delivery_id=x 3.0 ms");
        let down = Attempt {
            status: None,
            detail: "error: connection refused".into(),
            latency: Duration::from_millis(1),
        };
        assert_eq!(
            down.line("attempt 1: "),
            "--- attempt 1: error: connection refused 1.0 ms"
        );
        let text = summary(&[ok.clone(), ok, down], Duration::from_secs(1));
        assert!(
            text.starts_with("sent 3 in 1.00 s (3/s): 200×2, error×1"),
            "{text}"
        );
    }
}
