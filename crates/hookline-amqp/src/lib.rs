//! hookline's RabbitMQ side: one supervised connection per process role, the topology of
//! CONTRACT section 5, and publishing that waits for the broker's confirm.

mod broker;
mod error;
pub mod headers;
pub mod message;
mod session;
mod topology;

pub use broker::{Broker, BrokerOptions};
pub use error::PublishError;
pub use lapin;
pub use session::{CLOSE_TIMEOUT, Pending, Session};
pub use topology::{PRESENCE_KEY, Topology, TopologyError};
