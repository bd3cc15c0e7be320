//! How a verified delivery looks on `<prefix>.ingress`: the body exactly as received,
//! `message_id` = delivery id, and headers naming the source and provider.

use crate::spool::SpoolRecord;
use hookline_amqp::headers::{PROVIDER, RECEIVED_AT, SOURCE, string_headers};
use hookline_amqp::lapin::BasicProperties;
use hookline_core::{DeliveryMeta, VerifiedDelivery};

/// AMQP properties of a raw delivery.
pub(crate) fn properties(meta: &DeliveryMeta) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(meta.delivery_id.as_str().into())
        .with_content_type("application/json".into())
        .with_app_id("hookline".into())
        .with_headers(string_headers([
            (SOURCE, meta.source.as_str()),
            (PROVIDER, meta.provider.as_str()),
            (RECEIVED_AT, meta.received_at.as_str()),
        ]))
}

/// The spool's copy of a delivery.
pub(crate) fn to_record(delivery: &VerifiedDelivery) -> SpoolRecord {
    let meta = delivery.meta();
    SpoolRecord {
        delivery_id: meta.delivery_id.clone(),
        source: meta.source.clone(),
        provider: meta.provider.clone(),
        received_at: meta.received_at.clone(),
        body: delivery.body().to_vec(),
    }
}

/// A spooled record back as the delivery it was written from.
pub(crate) fn from_record(record: SpoolRecord) -> VerifiedDelivery {
    VerifiedDelivery::from_spool(
        DeliveryMeta {
            delivery_id: record.delivery_id,
            source: record.source,
            provider: record.provider,
            received_at: record.received_at,
        },
        record.body.into(),
    )
}
