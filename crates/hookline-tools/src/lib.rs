//! hookline's operator tools, behind `hookline send`, `hookline tail` and `hookline dlq`.

pub mod dlq;
pub mod send;
pub mod tail;

use anyhow::{Context as _, Result};
use hookline_amqp::lapin::{Connection, ConnectionProperties};
use hookline_core::Config;

/// A connection to the first configured broker node that answers, named `name` in
/// RabbitMQ's connection list.
pub(crate) async fn connect(config: &Config, name: &str) -> Result<Connection> {
    let mut last = None;
    for uri in &config.amqp_uris {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            Connection::connect_uri(uri.0.clone(), properties),
        )
        .await
        {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(error)) => last = Some(format!("{uri}: {error}")),
            Err(_) => last = Some(format!("{uri}: no answer within 10 s")),
        }
    }
    Err(anyhow::anyhow!(
        last.unwrap_or_else(|| "no broker configured".into())
    ))
    .context("cannot connect to RabbitMQ (amqp.url)")
}
