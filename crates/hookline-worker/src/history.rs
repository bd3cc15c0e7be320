//! The processed-id history that follows the work across worker replicas (`amqp.failover`).
//!
//! RabbitMQ gives one replica at a time the deliveries (`x-single-active-consumer` on
//! `<prefix>.ingress`); this module makes every replica know every id any of them
//! published. The active replica appends the ids it publishes to the stream
//! `<prefix>.processed` (batched across deliveries, confirmed, before the ids are recorded
//! locally and the delivery acked); every replica tails the stream into its own sled store,
//! the local index. A replica does not learn from RabbitMQ when it becomes active, so on
//! the first delivery of each consuming session it appends a marker and processes nothing
//! until its tail has read up to that marker: by then every id appended before the takeover
//! is in its store. A replica on an empty disk reads the stream from the start.

use crate::processed::ProcessedStore;
use futures_util::StreamExt;
use hookline_amqp::lapin::BasicProperties;
use hookline_amqp::lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use hookline_amqp::lapin::types::{AMQPValue, FieldTable};
use hookline_amqp::{Broker, PublishError, Session, Topology};
use hookline_core::storage::StorageError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

/// Most ids in one stream message.
const MAX_IDS: usize = 4096;
/// Stream messages the tail reads ahead.
const TAIL_PREFETCH: u16 = 256;
/// Longest wait for a marker to come back through the tail.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);
/// A confirm for an append later than this counts as lost.
const APPEND_TIMEOUT: Duration = Duration::from_secs(15);

/// One message on the stream.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "kind")]
enum Record {
    /// Event ids published at `at` (unix milliseconds).
    Ids { at: u64, ids: Vec<String> },
    /// A replica's catch-up marker.
    Marker { id: String },
}

/// Why the history could not be written or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HistoryError {
    /// The stream did not take an append.
    #[error("cannot append to the processed-id stream: {0}")]
    Publish(#[from] PublishError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StorageError),
    /// The tail did not reach the marker in time.
    #[error("the processed-id stream's tail did not catch up within {0:?}")]
    CatchUp(Duration),
}

struct Append {
    ids: Vec<String>,
    reply: oneshot::Sender<Result<(), Arc<PublishError>>>,
}

/// The shared history (cheap to clone).
#[derive(Clone)]
pub(crate) struct History {
    inner: Arc<Inner>,
}

struct Inner {
    stream: String,
    store: ProcessedStore,
    appends: mpsc::UnboundedSender<Append>,
    /// Markers the tail has read.
    seen: Mutex<HashSet<String>>,
    seen_changed: Notify,
}

impl History {
    /// The history on `topology`'s stream, appended through `broker`, applied to `store`.
    pub(crate) fn new(topology: &Topology, broker: Broker, store: ProcessedStore) -> Self {
        let (appends, rx) = mpsc::unbounded_channel();
        let stream = topology.processed_stream();
        tokio::spawn(append_loop(stream.clone(), broker, rx));
        Self {
            inner: Arc::new(Inner {
                stream,
                store,
                appends,
                seen: Mutex::new(HashSet::new()),
                seen_changed: Notify::new(),
            }),
        }
    }

    /// Appends `ids` to the stream and waits for the confirm; appends that arrive together
    /// share one message.
    pub(crate) async fn append(&self, ids: Vec<String>) -> Result<(), HistoryError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .appends
            .send(Append { ids, reply })
            .map_err(|_| PublishError::NotConnected)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(HistoryError::Publish(unshare(&error))),
            Err(_) => Err(PublishError::NotConnected.into()),
        }
    }

    /// Makes sure every id appended before now is in the local store: appends a marker and
    /// waits until the tail has read it.
    pub(crate) async fn catch_up(&self, session: &Session) -> Result<(), HistoryError> {
        let marker = uuid::Uuid::new_v4().to_string();
        let body = serde_json::to_vec(&Record::Marker { id: marker.clone() })
            .expect("a marker serializes");
        session
            .publish("", &self.inner.stream, &body, properties(), false)
            .await?;
        let wait = async {
            loop {
                let changed = self.inner.seen_changed.notified();
                if self.seen().remove(&marker) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(CATCH_UP_LIMIT, wait)
            .await
            .map_err(|_| HistoryError::CatchUp(CATCH_UP_LIMIT))
    }

    /// Tails the stream into the store from where this replica left off (the start, on an
    /// empty disk) until the session ends.
    pub(crate) async fn tail(&self, session: Session) {
        if let Err(error) = self.tail_until_closed(&session).await {
            warn!(%error, "The processed-id stream's tail stopped; it resumes after reconnect.");
        }
    }

    async fn tail_until_closed(
        &self,
        session: &Session,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let store = self.inner.store.clone();
        let from = tokio::task::spawn_blocking(move || store.stream_offset()).await??;
        let offset = match from {
            Some(last) => AMQPValue::LongLongInt(last + 1),
            None => AMQPValue::LongString("first".into()),
        };
        let channel = session.create_channel().await?;
        // A stream consumer must set a prefetch, and ack for flow control (acks remove nothing).
        channel
            .basic_qos(TAIL_PREFETCH, BasicQosOptions::default())
            .await?;
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), offset);
        let mut consumer = channel
            .basic_consume(
                self.inner.stream.as_str().into(),
                "hookline-history".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await?;
        info!(stream = %self.inner.stream, from = ?from, "Tailing the processed-id stream.");
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            let offset = stream_offset(&delivery.properties);
            match serde_json::from_slice::<Record>(&delivery.data) {
                Ok(Record::Ids { at, ids }) => {
                    let store = self.inner.store.clone();
                    let at = UNIX_EPOCH + Duration::from_millis(at);
                    tokio::task::spawn_blocking(move || {
                        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                        match offset {
                            Some(offset) => store.record_from_stream(&refs, at, offset),
                            None => store.record(&refs, at),
                        }
                    })
                    .await??;
                    if let Some(offset) = offset {
                        metrics::gauge!("hookline_processed_stream_offset").set(offset as f64);
                    }
                }
                Ok(Record::Marker { id }) => {
                    self.seen().insert(id);
                    self.inner.seen_changed.notify_waiters();
                }
                Err(error) => {
                    debug!(%error, "Skipping a message on the processed-id stream that is not hookline's.")
                }
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Natural batching of appends: whatever is queued while one append awaits its confirm
/// goes into the next message, on whatever session the broker has now.
async fn append_loop(stream: String, broker: Broker, mut rx: mpsc::UnboundedReceiver<Append>) {
    while let Some(first) = rx.recv().await {
        let mut count = first.ids.len();
        let mut batch = vec![first];
        while count < MAX_IDS {
            let Ok(append) = rx.try_recv() else { break };
            count += append.ids.len();
            batch.push(append);
        }
        let ids: Vec<String> = batch.iter().flat_map(|a| a.ids.iter().cloned()).collect();
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let body = serde_json::to_vec(&Record::Ids { at, ids }).expect("ids serialize");
        let publish = broker.publish("", &stream, &body, properties(), false);
        let outcome = tokio::time::timeout(APPEND_TIMEOUT, publish)
            .await
            .unwrap_or(Err(PublishError::Timeout(APPEND_TIMEOUT)))
            .map_err(Arc::new);
        metrics::histogram!("hookline_processed_stream_batch_ids").record(count as f64);
        for append in batch {
            let _ = append.reply.send(outcome.clone());
        }
    }
}

fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_app_id("hookline".into())
}

/// The `x-stream-offset` RabbitMQ puts on every message read from a stream.
fn stream_offset(properties: &BasicProperties) -> Option<i64> {
    match properties
        .headers()
        .as_ref()?
        .inner()
        .get("x-stream-offset")?
    {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// A shared publish error as an owned one for the caller (the detail is in the text).
fn unshare(error: &PublishError) -> PublishError {
    match error {
        PublishError::NotConnected => PublishError::NotConnected,
        PublishError::Nacked => PublishError::Nacked,
        PublishError::Returned(text) => PublishError::Returned(text.clone()),
        PublishError::Timeout(after) => PublishError::Timeout(*after),
        PublishError::Amqp(error) => PublishError::Amqp(error.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for record in [
            Record::Ids {
                at: 5,
                ids: vec!["aisle:1".into(), "inline:abc".into()],
            },
            Record::Marker { id: "m-1".into() },
        ] {
            let text = serde_json::to_string(&record).unwrap();
            assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
        }
        assert_eq!(
            serde_json::to_string(&Record::Marker { id: "m".into() }).unwrap(),
            r#"{"kind":"marker","id":"m"}"#
        );
    }
}
