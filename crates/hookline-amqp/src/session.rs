//! One live connection with a small pool of confirm-mode channels; many publishes are in
//! flight on each channel at once, so no caller waits behind another's confirm.
//!
//! Mandatory publishes are the exception: each goes out alone on a channel of its own
//! until its confirm arrives. lapin (4.12) attaches a returned message to one of the
//! confirms that the same multiple-ack completes, picked from a `HashMap`, so on a shared
//! channel an unroutable message could be reported stored and a stored one returned.

use crate::error::PublishError;
use crate::topology::{Topology, TopologyError};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// AMQP delivery mode 2: written to disk by the broker.
const PERSISTENT: u8 = 2;

/// Longest wait for the broker to acknowledge closing a connection or channel: a frozen
/// peer never answers.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connected broker session (cheap to clone).
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    channels: Vec<Channel>,
    /// Idle confirm channels for mandatory publishes, one publish at a time on each.
    alone: std::sync::Mutex<Vec<Channel>>,
    /// A channel without confirms, for best-effort copies nobody waits for.
    unconfirmed: Channel,
    next: AtomicUsize,
}

impl Session {
    /// Connects, declares the topology and opens `pool` confirm channels.
    pub(crate) async fn open(
        uri: AMQPUri,
        name: &str,
        pool: usize,
        topology: &Topology,
    ) -> Result<Session, TopologyError> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = Connection::connect_uri(uri, properties).await?;
        let setup = connection.create_channel().await?;
        topology.declare(&setup).await?;
        setup.close(200, "topology declared".into()).await?;
        let unconfirmed = connection.create_channel().await?;
        let mut channels = Vec::with_capacity(pool);
        for _ in 0..pool.max(1) {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        Ok(Session {
            inner: Arc::new(Inner {
                connection,
                channels,
                alone: std::sync::Mutex::new(Vec::new()),
                unconfirmed,
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connection {
        &self.inner.connection
    }

    /// Whether the connection is still up.
    pub fn is_alive(&self) -> bool {
        self.inner.connection.status().connected()
    }

    /// Opens a fresh channel (e.g. for a consumer).
    pub async fn create_channel(&self) -> lapin::Result<Channel> {
        self.inner.connection.create_channel().await
    }

    /// Publishes one persistent message and waits for the broker's confirm.
    ///
    /// With `mandatory`, an unroutable message is returned by the broker and reported
    /// as [`PublishError::Returned`]: acked but not stored anywhere, so not durable.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let sent = if mandatory {
            self.send_mandatory(exchange, routing_key, body, properties)
                .await
        } else {
            let lane = self.inner.next.fetch_add(1, Ordering::Relaxed);
            self.send(lane, exchange, routing_key, body, properties)
                .await
        };
        sent?.confirmed().await
    }

    /// Sends on channel `lane` (modulo the pool) without waiting for the confirm; messages
    /// sent on one lane one after another keep their order.
    pub async fn send(
        &self,
        lane: usize,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Pending, PublishError> {
        let channel = &self.inner.channels[lane % self.inner.channels.len()];
        let confirm =
            publish_persistent(channel, exchange, routing_key, body, properties, false).await?;
        Ok(Pending {
            confirm,
            alone: None,
        })
    }

    /// Sends a `mandatory` message without waiting for the confirm, alone on a channel
    /// that carries nothing else until its confirm, so a return is always reported on the
    /// message it belongs to.
    pub async fn send_mandatory(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Pending, PublishError> {
        let channel = self.alone_channel().await?;
        let confirm =
            publish_persistent(&channel, exchange, routing_key, body, properties, true).await?;
        Ok(Pending {
            confirm,
            alone: Some((self.clone(), channel)),
        })
    }

    /// An idle channel for one mandatory publish, or a new one.
    async fn alone_channel(&self) -> Result<Channel, PublishError> {
        let idle = self.inner.alone.lock().expect("channel list lock").pop();
        if let Some(channel) = idle {
            return Ok(channel);
        }
        let channel = self.inner.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(channel)
    }

    /// Takes back a channel whose one publish is confirmed.
    fn give_back(&self, channel: Channel) {
        if channel.status().connected() {
            self.inner
                .alone
                .lock()
                .expect("channel list lock")
                .push(channel);
        }
    }

    /// Publishes a transient copy nobody waits for (no confirm, no persistence): what
    /// observers see is best effort and costs the broker no disk.
    pub async fn send_best_effort(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        self.inner
            .unconfirmed
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(1),
            )
            .await?;
        Ok(())
    }

    /// Closes the connection politely, waiting at most [`CLOSE_TIMEOUT`] for the broker.
    pub async fn close(&self) {
        // A frozen peer never answers Connection.Close; the supervisor must still move on.
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT,
            self.inner.connection.close(200, "shutting down".into()),
        )
        .await;
    }
}

/// Publishes on `channel`; every hookline message must survive a broker restart.
async fn publish_persistent(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Result<PublisherConfirm, PublishError> {
    let options = BasicPublishOptions {
        mandatory,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties.with_delivery_mode(PERSISTENT),
        )
        .await?;
    Ok(confirm)
}

/// A sent message whose confirm has not arrived yet.
pub struct Pending {
    confirm: PublisherConfirm,
    /// A mandatory message's own channel, reused once the confirm is in (a `Pending`
    /// dropped before that takes its channel with it: a late return must not reach the
    /// next message on it).
    alone: Option<(Session, Channel)>,
}

impl Pending {
    /// Waits for the broker's confirm; see [`Session::publish`] for what counts as stored.
    pub async fn confirmed(self) -> Result<(), PublishError> {
        let Pending { confirm, alone } = self;
        let outcome = confirm.await;
        if let (Ok(_), Some((session, channel))) = (&outcome, alone) {
            session.give_back(channel);
        }
        match outcome? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => {
                Err(PublishError::Returned(returned.reply_text.to_string()))
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => Err(PublishError::Nacked),
        }
    }
}
