//! The queues and exchanges of CONTRACT section 5, declared idempotently at every connect.

use hookline_core::Subscription;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// Names derived from `amqp.prefix`, plus the subscription queues.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    subscriptions: Vec<Subscription>,
}

impl Topology {
    /// Topology for `prefix` with the configured subscriptions.
    pub fn new(prefix: &str, subscriptions: Vec<Subscription>) -> Self {
        Self {
            prefix: prefix.to_owned(),
            subscriptions,
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
    /// (`hookline tail`). Binding there never makes an event "routed" on `<prefix>.events`,
    /// so the unrouted capture stays exact while observers watch.
    pub fn observe_exchange(&self) -> String {
        format!("{}.observe", self.prefix)
    }

    /// Declares everything; safe to repeat, and repeated after every reconnect.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let none = FieldTable::default;

        channel
            .queue_declare(self.ingress_queue().into(), durable, none())
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
            channel
                .queue_declare(name.clone().into(), durable, none())
                .await?;
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
            channel
                .queue_declare(sub.queue.clone().into(), durable, none())
                .await?;
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
        Ok(())
    }
}
