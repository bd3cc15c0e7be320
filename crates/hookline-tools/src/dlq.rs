//! `hookline dlq`: list, show, replay and purge the dead letters in `<prefix>.dead`.
//!
//! The tool reads every waiting dead letter without acking it, decides, then acks only what
//! it removes: a replayed letter is acked after its copy on `<prefix>.ingress` is confirmed,
//! so no letter is lost between reading and republishing; everything else goes back to the
//! queue when the tool's channel closes (also if the tool dies). Replays go back through the
//! worker, which still drops duplicates.

use crate::connect;
use anyhow::{Context as _, Result, bail};
use futures_util::StreamExt;
use hookline_amqp::Topology;
use hookline_amqp::headers::{self, ATTEMPTS, DIED_AT, ERROR};
use hookline_amqp::lapin::message::Delivery;
use hookline_amqp::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use hookline_amqp::lapin::types::{AMQPValue, FieldTable};
use hookline_amqp::lapin::{BasicProperties, Channel, Confirmation};
use hookline_core::Config;
use hookline_core::timestamp::{format_timestamp, parse_timestamp};
use hookline_core::wire;
use serde::Serialize;
use std::io::Write;
use std::time::Duration;
use time::OffsetDateTime;
use tracing::info;

/// Header added to a replayed delivery: when it was put back.
pub const REPLAYED_AT: &str = "x-hookline-replayed-at";

/// Longest wait for the next dead letter while reading the queue.
const READ_IDLE: Duration = Duration::from_secs(2);

/// What to do with the dead letters.
#[derive(Debug, Clone)]
pub enum Action {
    /// A table (or JSON lines) of every dead letter.
    List {
        /// One JSON object per line instead of a table.
        json: bool,
    },
    /// One dead letter's headers and body.
    Show {
        /// Its delivery id.
        id: String,
    },
    /// Back to `<prefix>.ingress`.
    Replay {
        /// These delivery ids (empty with `all`).
        ids: Vec<String>,
        /// Every dead letter (of `provider`, if given).
        all: bool,
        /// Only this provider's, with `all`.
        provider: Option<String>,
    },
    /// Delete dead letters, all or those older than a duration.
    Purge {
        /// Only letters that died longer ago than this.
        older_than: Option<Duration>,
        /// Without it, only list what would be removed.
        yes: bool,
    },
}

/// How the command ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// A purge without `--yes`: it listed what it would remove (exit 2).
    NotConfirmed,
}

/// One dead letter as the tool shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The delivery id (`message_id`), or `-` for a message that has none.
    pub delivery_id: String,
    /// `x-hookline-provider`.
    pub provider: String,
    /// `x-hookline-source`.
    pub source: String,
    /// `x-hookline-attempts`.
    pub attempts: Option<u64>,
    /// `x-hookline-error`.
    pub error: String,
    /// When it died (`x-hookline-died-at`), RFC 3339.
    pub died_at: Option<String>,
    /// Seconds since it died.
    pub age_secs: Option<i64>,
}

/// Runs `action` on the dead letters of `config`'s prefix.
pub async fn run(config: &Config, action: Action, out: &mut dyn Write) -> Result<Outcome> {
    let topology = Topology::from_config(config);
    let connection = connect(config, "hookline-dlq").await?;
    let channel = connection.create_channel().await?;
    let letters = read_all(&channel, &topology.dead()).await?;
    let now = OffsetDateTime::now_utc();
    let described: Vec<DeadLetter> = letters.iter().map(|d| describe(d, now)).collect();
    let outcome = match action {
        Action::List { json } => {
            list(&described, json, out)?;
            Outcome::Done
        }
        Action::Show { id } => {
            let index = find(&described, &id)?;
            show(&letters[index], &described[index], out)?;
            Outcome::Done
        }
        Action::Replay { ids, all, provider } => {
            let chosen: Vec<usize> = if all {
                (0..letters.len())
                    .filter(|&i| {
                        provider
                            .as_ref()
                            .is_none_or(|p| &described[i].provider == p)
                    })
                    .collect()
            } else {
                if ids.is_empty() {
                    bail!("name the delivery ids to replay, or pass --all");
                }
                ids.iter()
                    .map(|id| find(&described, id))
                    .collect::<Result<_>>()?
            };
            replay(&connection, &topology, &letters, &described, &chosen, out).await?;
            Outcome::Done
        }
        Action::Purge { older_than, yes } => {
            let chosen: Vec<usize> = (0..letters.len())
                .filter(|&i| match older_than {
                    None => true,
                    // A letter without a death time is younger than any bound we can prove.
                    Some(bound) => described[i]
                        .age_secs
                        .is_some_and(|age| age >= 0 && age as u64 >= bound.as_secs()),
                })
                .collect();
            let picked: Vec<DeadLetter> = chosen.iter().map(|&i| described[i].clone()).collect();
            if !yes {
                writeln!(
                    out,
                    "would remove {} dead letter(s); run again with --yes:",
                    picked.len()
                )?;
                list(&picked, false, out)?;
                Outcome::NotConfirmed
            } else {
                for &i in &chosen {
                    letters[i]
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .context("cannot remove a dead letter")?;
                    info!(delivery_id = %described[i].delivery_id, "Dead letter purged.");
                }
                writeln!(out, "removed {} dead letter(s)", chosen.len())?;
                Outcome::Done
            }
        }
    };
    // Closing the channel puts every letter not acked back in the queue.
    let _ = channel.close(200, "dlq done".into()).await;
    let _ = connection.close(200, "dlq done".into()).await;
    Ok(outcome)
}

/// Every dead letter waiting now, unacked (held by this channel until it closes).
async fn read_all(channel: &Channel, queue: &str) -> Result<Vec<Delivery>> {
    let waiting = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("{queue} does not exist yet: has a worker run with this prefix?"))?
        .message_count();
    if waiting == 0 {
        return Ok(Vec::new());
    }
    channel.basic_qos(0, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "hookline-dlq".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut letters = Vec::with_capacity(waiting as usize);
    while letters.len() < waiting as usize {
        match tokio::time::timeout(READ_IDLE, consumer.next()).await {
            Ok(Some(delivery)) => letters.push(delivery?),
            // Another reader holds some: show what this one got.
            Ok(None) | Err(_) => break,
        }
    }
    Ok(letters)
}

fn describe(delivery: &Delivery, now: OffsetDateTime) -> DeadLetter {
    let table = delivery.properties.headers().as_ref();
    let text = |name: &str| headers::header_str(table, name);
    let died_at = text(DIED_AT);
    let age_secs = died_at
        .as_deref()
        .and_then(parse_timestamp)
        .map(|at| (now - at).whole_seconds());
    let attempts = table.and_then(|t| match t.inner().get(ATTEMPTS)? {
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        _ => None,
    });
    DeadLetter {
        delivery_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map_or_else(|| "-".to_owned(), |id| id.to_string()),
        provider: text(wire::PROVIDER).unwrap_or_else(|| "-".into()),
        source: text(wire::SOURCE).unwrap_or_else(|| "-".into()),
        attempts,
        error: text(ERROR).unwrap_or_default(),
        died_at,
        age_secs,
    }
}

fn find(letters: &[DeadLetter], id: &str) -> Result<usize> {
    letters
        .iter()
        .position(|l| l.delivery_id == id)
        .with_context(|| {
            format!("no dead letter with delivery id {id:?} (see `hookline dlq list`)")
        })
}

fn list(letters: &[DeadLetter], json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        for letter in letters {
            writeln!(out, "{}", serde_json::to_string(letter)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<36}  {:<17}  {:<14}  {:>8}  {:>8}  ERROR",
        "DELIVERY ID", "PROVIDER", "SOURCE", "ATTEMPTS", "AGE"
    )?;
    for l in letters {
        writeln!(
            out,
            "{:<36}  {:<17}  {:<14}  {:>8}  {:>8}  {}",
            l.delivery_id,
            l.provider,
            l.source,
            l.attempts.map_or("-".into(), |n| n.to_string()),
            l.age_secs.map_or("-".into(), age),
            l.error
        )?;
    }
    writeln!(out, "{} dead letter(s)", letters.len())?;
    Ok(())
}

/// An age as the largest whole unit: `45s`, `12m`, `3h`, `2d`.
fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn show(delivery: &Delivery, letter: &DeadLetter, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "delivery id: {}", letter.delivery_id)?;
    let p = &delivery.properties;
    if let Some(kind) = p.content_type() {
        writeln!(out, "content-type: {kind}")?;
    }
    if let Some(table) = p.headers() {
        for (name, value) in table.inner() {
            let text = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.to_string(),
                other => format!("{other:?}"),
            };
            writeln!(out, "{name}: {text}")?;
        }
    }
    writeln!(out)?;
    out.write_all(&delivery.data)?;
    writeln!(out)?;
    Ok(())
}

async fn replay(
    connection: &hookline_amqp::lapin::Connection,
    topology: &Topology,
    letters: &[Delivery],
    described: &[DeadLetter],
    chosen: &[usize],
    out: &mut dyn Write,
) -> Result<()> {
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = topology.ingress_queue();
    let mut replayed = 0;
    for &i in chosen {
        let letter = &letters[i];
        let properties = replay_properties(&letter.properties);
        let confirm = publisher
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &letter.data,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => {
                bail!("{queue} does not exist: nothing was replayed from here on")
            }
            _ => bail!("the broker refused a replay: nothing was replayed from here on"),
        }
        // Only now is the copy durable, so only now may the letter go.
        letter
            .acker
            .ack(BasicAckOptions::default())
            .await
            .context("replayed, but the dead letter could not be removed (it will be replayed again as a duplicate, which the worker drops)")?;
        let d = &described[i];
        info!(delivery_id = %d.delivery_id, provider = %d.provider, source = %d.source, "Dead letter replayed.");
        writeln!(out, "replayed {}", d.delivery_id)?;
        replayed += 1;
    }
    writeln!(out, "{replayed} dead letter(s) replayed to {queue}")?;
    Ok(())
}

/// The letter's properties for the ingress queue again: persistent, without the
/// dead-letter headers, marked with the replay time.
fn replay_properties(properties: &BasicProperties) -> BasicProperties {
    let mut table = FieldTable::default();
    if let Some(old) = properties.headers() {
        for (name, value) in old.inner() {
            if ![ERROR, ATTEMPTS, DIED_AT].contains(&name.as_str()) {
                table.insert(name.clone(), value.clone());
            }
        }
    }
    table.insert(
        REPLAYED_AT.into(),
        AMQPValue::LongString(
            format_timestamp(OffsetDateTime::now_utc())
                .into_bytes()
                .into(),
        ),
    );
    properties.clone().with_headers(table).with_delivery_mode(2)
}

/// Parses `7d`, `12h`, `30m` (what `--older-than` takes).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 7d, 12h or 30m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_durations() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(3 * 86_400 + 5), "3d");
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_age("soon").is_err());
    }

    #[test]
    fn replays_drop_the_dead_letter_headers() {
        let mut table = headers::string_headers([
            (ERROR, "boom"),
            (DIED_AT, "2026-11-29T00:00:00.000Z"),
            (wire::SOURCE, "aisle"),
        ]);
        table.insert(ATTEMPTS.into(), AMQPValue::LongUInt(5));
        let props = BasicProperties::default().with_headers(table);
        let replay = replay_properties(&props);
        let table = replay.headers().as_ref();
        assert_eq!(
            headers::header_str(table, wire::SOURCE).as_deref(),
            Some("aisle")
        );
        assert!(headers::header_str(table, ERROR).is_none());
        assert!(headers::header_str(table, DIED_AT).is_none());
        assert!(!table.unwrap().inner().contains_key(ATTEMPTS));
        assert!(headers::header_str(table, REPLAYED_AT).is_some());
        assert_eq!(replay.delivery_mode(), &Some(2));
    }
}
