//! Why a publish did not become durable.

/// A publish the broker did not confirm as stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to the broker right now.
    #[error("not connected to the broker")]
    NotConnected,
    /// The broker refused the message (nack).
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// No queue was bound to take the message (mandatory publish returned).
    #[error("the broker returned the message as unroutable: {0}")]
    Returned(String),
    /// The confirm did not arrive in time; the message may or may not be stored.
    #[error("no confirm within {0:?}")]
    Timeout(std::time::Duration),
    /// The channel or connection failed before the confirm arrived.
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
}
