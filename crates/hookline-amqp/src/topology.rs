//! The queues and exchanges of CONTRACT section 5, declared idempotently at every connect,
//! with the arguments the config asks for (quorum queues, a single active consumer, the
//! processed-id stream). A queue declared earlier with other arguments is named with the
//! way to migrate, never left as a bare PRECONDITION_FAILED.

use hookline_core::Config;
use hookline_core::Subscription;
use hookline_core::config::QueueType;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

/// Attempts a quorum queue allows beyond `worker.max_attempts` before the broker itself
/// dead-letters a delivery: only a backstop (e.g. for a worker that dies on a delivery
/// before it can count the attempt); hookline's own counting acts first.
const DELIVERY_LIMIT_MARGIN: u32 = 5;

/// The routing key of the worker's presence probes on `<prefix>.observe`. Every observer
/// binds it besides its patterns, so a probe is routed exactly while someone observes; it
/// has no dot, so no event's routing key is ever equal to it.
pub const PRESENCE_KEY: &str = "hookline-observer-presence";

/// Names derived from `amqp.prefix`, the subscription queues, and how queues are declared.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    subscriptions: Vec<Subscription>,
    queue_type: QueueType,
    failover: bool,
    max_attempts: u32,
    retention_days: u32,
}

/// Why the topology could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A queue exists with other arguments than this config needs; the text says how to
    /// migrate.
    #[error(
        "{queue} exists with other arguments than this config needs ({wanted}); a queue's arguments cannot change once declared. To migrate: {how}"
    )]
    Mismatch {
        /// The queue.
        queue: String,
        /// The arguments this config declares it with.
        wanted: String,
        /// The steps to take.
        how: String,
    },
    /// The broker refused or the connection failed.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

impl Topology {
    /// Classic queues, no failover: what tools and tests declare.
    pub fn new(prefix: &str, subscriptions: Vec<Subscription>) -> Self {
        Self {
            prefix: prefix.to_owned(),
            subscriptions,
            queue_type: QueueType::Classic,
            failover: false,
            max_attempts: 5,
            retention_days: 7,
        }
    }

    /// The topology `config` describes.
    pub fn from_config(config: &Config) -> Self {
        Self {
            prefix: config.amqp.prefix.clone(),
            subscriptions: config.subscriptions.clone(),
            queue_type: config.amqp.queue_type,
            failover: config.amqp.failover,
            max_attempts: config.worker.max_attempts,
            retention_days: config.worker.retention_days,
        }
    }

    /// `<prefix>.ingress`: raw verified deliveries.
    pub fn ingress_queue(&self) -> String {
        format!("{}.ingress", self.prefix)
    }

    /// `<prefix>.events`: the topic exchange of normalized events.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// `<prefix>.unrouted`: alternate exchange and queue for events nobody bound.
    pub fn unrouted(&self) -> String {
        format!("{}.unrouted", self.prefix)
    }

    /// `<prefix>.dead`: dead-letter exchange and queue.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// `<prefix>.observe`: a topic exchange carrying a copy of every event for observers
    /// (`hookline tail`) while any is bound there. Binding there never makes an event
    /// "routed" on `<prefix>.events`, so the unrouted capture stays exact while observers
    /// watch. Observers also bind [`PRESENCE_KEY`].
    pub fn observe_exchange(&self) -> String {
        format!("{}.observe", self.prefix)
    }

    /// `<prefix>.processed`: the stream of processed event ids every worker replica appends
    /// to and tails (with `amqp.failover`).
    pub fn processed_stream(&self) -> String {
        format!("{}.processed", self.prefix)
    }

    /// Whether worker replicas share the work (single active consumer, shared history).
    pub fn failover(&self) -> bool {
        self.failover
    }

    /// Declares everything; safe to repeat, and repeated after every reconnect.
    pub async fn declare(&self, channel: &Channel) -> Result<(), TopologyError> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let none = FieldTable::default;

        let ingress_args = self.ingress_arguments();
        self.queue(channel, &self.ingress_queue(), ingress_args)
            .await?;
        for name in [self.unrouted(), self.dead()] {
            channel
                .exchange_declare(
                    name.clone().into(),
                    ExchangeKind::Fanout,
                    durable_exchange,
                    none(),
                )
                .await?;
            self.queue(channel, &name, self.replicated()).await?;
            channel
                .queue_bind(
                    name.clone().into(),
                    name.into(),
                    "".into(),
                    QueueBindOptions::default(),
                    none(),
                )
                .await?;
        }

        let mut events_args = FieldTable::default();
        events_args.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString(self.unrouted().into_bytes().into()),
        );
        channel
            .exchange_declare(
                self.events_exchange().into(),
                ExchangeKind::Topic,
                durable_exchange,
                events_args,
            )
            .await?;
        channel
            .exchange_declare(
                self.observe_exchange().into(),
                ExchangeKind::Topic,
                durable_exchange,
                none(),
            )
            .await?;

        for sub in &self.subscriptions {
            self.queue(channel, &sub.queue, self.replicated()).await?;
            for pattern in &sub.patterns {
                channel
                    .queue_bind(
                        sub.queue.clone().into(),
                        self.events_exchange().into(),
                        pattern.clone().into(),
                        QueueBindOptions::default(),
                        none(),
                    )
                    .await?;
            }
        }

        if self.failover {
            let mut stream = FieldTable::default();
            stream.insert("x-queue-type".into(), text("stream"));
            stream.insert(
                "x-max-age".into(),
                text(&format!("{}D", self.retention_days)),
            );
            self.queue(channel, &self.processed_stream(), stream)
                .await?;
        }
        Ok(())
    }

    /// Declares a durable queue; a mismatch with an existing one becomes
    /// [`TopologyError::Mismatch`] with the way out.
    async fn queue(
        &self,
        channel: &Channel,
        name: &str,
        arguments: FieldTable,
    ) -> Result<(), TopologyError> {
        let wanted = describe(&arguments);
        let declared = channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await;
        match declared {
            Ok(_) => Ok(()),
            Err(error) if error.to_string().contains("PRECONDITION_FAILED") => {
                Err(TopologyError::Mismatch {
                    queue: name.to_owned(),
                    wanted,
                    how: self.migration(name),
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    fn migration(&self, queue: &str) -> String {
        if queue == self.ingress_queue() {
            format!(
                "run the worker with its previous config (the one that declared {queue}) until the queue is empty, while the ingress with the new config spools what arrives meanwhile; delete it (`rabbitmqctl delete_queue {queue}`); the ingress, retrying, then declares it anew and drains its spool into it; start the worker with the new config"
            )
        } else {
            format!(
                "move its messages elsewhere first if they matter (e.g. with a shovel), delete it (`rabbitmqctl delete_queue {queue}`), then restart hookline, which declares it anew"
            )
        }
    }

    /// `<prefix>.ingress`'s arguments: quorum with a backstop delivery limit, and a single
    /// active consumer with failover.
    fn ingress_arguments(&self) -> FieldTable {
        let mut args = self.replicated();
        if self.queue_type == QueueType::Quorum {
            let limit = self.max_attempts.saturating_add(DELIVERY_LIMIT_MARGIN);
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(i32::try_from(limit).unwrap_or(i32::MAX)),
            );
            args.insert("x-dead-letter-exchange".into(), text(&self.dead()));
        }
        if self.failover {
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        args
    }

    /// `x-queue-type = quorum` with `amqp.queue_type = "quorum"`, else nothing.
    fn replicated(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), text("quorum"));
        }
        args
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.as_bytes().to_vec().into())
}

/// `key = value, ...` of a queue's arguments, for messages.
fn describe(arguments: &FieldTable) -> String {
    if arguments.inner().is_empty() {
        return "no arguments (a classic queue)".into();
    }
    arguments
        .inner()
        .iter()
        .map(|(key, value): (&ShortString, &AMQPValue)| {
            let value = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::Boolean(b) => b.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            format!("{key} = {value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_follow_the_config() {
        let classic = Topology::new("p", Vec::new());
        assert!(classic.ingress_arguments().inner().is_empty());
        assert_eq!(
            describe(&classic.ingress_arguments()),
            "no arguments (a classic queue)"
        );
        let ha = Topology {
            queue_type: QueueType::Quorum,
            failover: true,
            ..classic
        };
        let text = describe(&ha.ingress_arguments());
        for part in [
            "x-queue-type = quorum",
            "x-delivery-limit = 10",
            "x-dead-letter-exchange = p.dead",
            "x-single-active-consumer = true",
        ] {
            assert!(text.contains(part), "{text}");
        }
        assert_eq!(describe(&ha.replicated()), "x-queue-type = quorum");
        assert!(
            ha.migration("p.ingress")
                .contains("rabbitmqctl delete_queue p.ingress")
        );
    }
}
