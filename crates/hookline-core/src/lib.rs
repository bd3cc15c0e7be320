//! hookline's pure logic: configuration, providers, signatures, canonical JSON and the
//! normalized event envelope. Nothing here touches the network.

pub mod canonical_json;
pub mod config;
pub mod delivery;
pub mod envelope;
pub mod group_commit;
pub mod provider;
pub mod secret;
pub mod signature;
pub mod storage;
pub mod timestamp;
pub mod wire;

pub use config::{Config, ConfigError, SourceSpec, Subscription};
pub use delivery::{DeliveryMeta, Rejection, VerifiedDelivery};
pub use envelope::{Envelope, normalize_delivery};
pub use provider::{Provider, ProviderEvent, Refusal};
pub use secret::Secret;
