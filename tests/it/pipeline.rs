//! One documented delivery per provider goes in at the ingress and comes out as
//! normalized events on `<prefix>.events`, every envelope field and property checked.

use crate::support::{Broker, field_of, post_signed, start};
use serde_json::{Value, json};
use std::time::Duration;

struct Case {
    provider: &'static str,
    body: &'static str,
    /// (routing key, provider_type, occurred_at, event key, data)
    events: Vec<(&'static str, &'static str, Value, String, Value)>,
}

fn cases() -> Vec<Case> {
    let inline_events: Value = json!([
        {"type": "reservation-time-changed", "timestamp": 1524181344796u64, "data": {"id": "r1", "groupSize": 2, "lat": 25.0766335}},
        {"type": "order-pickedup", "timestamp": 1524181344797u64, "data": {"id": "o1", "order": {"total": 880, "currency": "TWD"}}}
    ]);
    // sha256 of JSON.stringify(sortDeep(event)), computed with node.
    let inline_key = |i: usize| {
        [
            "3d5c3a7f83bf050a797f2a9ad1714f9be2d2a9faf0abac261e111ff10453c96f",
            "bbfdcde6dccb917d3ffcc35d7d6ddb6eb657a8a2366808774c80d240a0a4ec60",
        ][i]
            .to_owned()
    };
    vec![
        Case {
            provider: "aisle",
            body: r#"{"id":"5f1c2d3e-aaaa-4bbb-8ccc-000000000001","event":"ticket_created","broadcasted_at":"2026-11-22T10:00:00Z","data":{"id":"t1","store_id":"s1","user_id":"u1","user":{"id":"u1","first_name":"Ada","last_name":"L","phone_number":"+15555550100"},"created_at":"2026-11-22T10:00:00Z","updated_at":"2026-11-22T10:00:00Z"}}"#,
            events: vec![(
                "aisle.ticket.created",
                "ticket_created",
                json!("2026-11-22T10:00:00Z"),
                "5f1c2d3e-aaaa-4bbb-8ccc-000000000001".into(),
                json!({"id":"t1","store_id":"s1","user_id":"u1","user":{"id":"u1","first_name":"Ada","last_name":"L","phone_number":"+15555550100"},"created_at":"2026-11-22T10:00:00Z","updated_at":"2026-11-22T10:00:00Z"}),
            )],
        },
        Case {
            provider: "inline",
            // Pretty-printed and unsorted: inline signs the sorted form, not these bytes.
            body: r#"{
  "timestamp": 1524181344796,
  "events": [
    {"type": "reservation-time-changed", "timestamp": 1524181344796, "data": {"id": "r1", "groupSize": 2, "lat": 25.0766335}},
    {"type": "order-pickedup", "timestamp": 1524181344797, "data": {"id": "o1", "order": {"total": 880, "currency": "TWD"}}}
  ]
}"#,
            events: vec![
                (
                    "inline.reservation.time_changed",
                    "reservation-time-changed",
                    json!("2018-04-19T23:42:24.796Z"),
                    inline_key(0),
                    inline_events[0]["data"].clone(),
                ),
                (
                    "inline.order.pickedup",
                    "order-pickedup",
                    json!("2018-04-19T23:42:24.797Z"),
                    inline_key(1),
                    inline_events[1]["data"].clone(),
                ),
            ],
        },
        Case {
            provider: "auraconnect",
            body: r#"{"id":"evt_126","type":"payment.completed","created":"2025-08-08T10:21:00Z","data":{"object":{"id":2001,"order_id":1001,"amount":45.99,"payment_method":"card","status":"completed"}}}"#,
            events: vec![(
                "auraconnect.payment.completed",
                "payment.completed",
                json!("2025-08-08T10:21:00Z"),
                "evt_126".into(),
                json!({"object":{"id":2001,"order_id":1001,"amount":45.99,"payment_method":"card","status":"completed"}}),
            )],
        },
        Case {
            provider: "sixpark",
            body: r#"{"data":{"id":"ecb20ef1-a543-4ae5-9446-0661a882a616","type":"webhook-event","attributes":{"even_type":"ACCOUNT_OPENED"},"relationships":{"account":{"data":{"type":"account","id":"f11b778a-3c83-43b5-a481-6b46e4d8aabb"}}}}}"#,
            events: vec![(
                "sixpark.account.opened",
                "ACCOUNT_OPENED",
                Value::Null,
                "ecb20ef1-a543-4ae5-9446-0661a882a616".into(),
                json!({"id":"ecb20ef1-a543-4ae5-9446-0661a882a616","type":"webhook-event","attributes":{"even_type":"ACCOUNT_OPENED"},"relationships":{"account":{"data":{"type":"account","id":"f11b778a-3c83-43b5-a481-6b46e4d8aabb"}}}}),
            )],
        },
        Case {
            provider: "asello",
            body: r#"{"id":"642f2a88afc54fb5b3dc5e93a48dad6a","attempt":1,"properties":{},"notifications":[{"action":"document.created","id":9420657},{"action":"deliverynote.created","id":"dn-7"}]}"#,
            events: vec![
                (
                    "asello.document.created",
                    "document.created",
                    Value::Null,
                    "642f2a88afc54fb5b3dc5e93a48dad6a:document.created:9420657".into(),
                    json!({"action":"document.created","id":9420657}),
                ),
                (
                    "asello.deliverynote.created",
                    "deliverynote.created",
                    Value::Null,
                    "642f2a88afc54fb5b3dc5e93a48dad6a:deliverynote.created:dn-7".into(),
                    json!({"action":"deliverynote.created","id":"dn-7"}),
                ),
            ],
        },
        Case {
            provider: "standard-webhooks",
            body: SW_BODY,
            events: vec![(
                "standard-webhooks.invoice.paid",
                "invoice.paid",
                json!("2022-11-03T20:26:10.344522Z"),
                // The event key is the webhook-id header the test client sends.
                crate::support::signed_headers("standard-webhooks", SW_BODY.as_bytes())[0]
                    .1
                    .clone(),
                json!({"id":"in_1SXw","amount_paid":2000,"customer":{"id":"cus_1"}}),
            )],
        },
    ]
}

/// A Standard Webhooks delivery as Svix documents its payloads.
const SW_BODY: &str = r#"{"type":"invoice.paid","timestamp":"2022-11-03T20:26:10.344522Z","data":{"id":"in_1SXw","amount_paid":2000,"customer":{"id":"cus_1"}}}"#;

#[tokio::test]
async fn every_provider_end_to_end() {
    let (config, hookline, base) = start("run").await;
    let broker = Broker::connect(&config.prefix).await;
    let mut events = broker.watch_events("#").await;
    let mut published: Vec<(String, String)> = Vec::new();

    for case in cases() {
        let before = time::OffsetDateTime::now_utc();
        let (status, answer) = post_signed(&base, case.provider, case.provider, case.body).await;
        assert_eq!(status, 200, "{}: {answer}", case.provider);
        assert_eq!(answer["accepted"], true);
        let delivery_id = answer["delivery_id"].as_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&delivery_id).is_ok());

        let got = events
            .take(case.events.len(), Duration::from_secs(10))
            .await;
        for (seen, (routing_key, provider_type, occurred_at, key, data)) in
            got.iter().zip(&case.events)
        {
            let id = format!("{}:{key}", case.provider);
            let body = &seen.body;
            assert_eq!(seen.routing_key, *routing_key);
            assert_eq!(body["id"], json!(id));
            assert_eq!(body["provider"], case.provider);
            assert_eq!(body["source"], case.provider);
            assert_eq!(body["type"], routing_key.split_once('.').unwrap().1);
            assert_eq!(body["provider_type"], *provider_type);
            assert_eq!(body["occurred_at"], *occurred_at);
            assert_eq!(body["delivery_id"], json!(delivery_id));
            assert_eq!(&body["data"], data);
            let received = time::OffsetDateTime::parse(
                body["received_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            assert!(
                (received - before).whole_seconds().abs() < 5,
                "received_at {received}"
            );
            let mut keys: Vec<&str> = body
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                [
                    "data",
                    "delivery_id",
                    "id",
                    "occurred_at",
                    "provider",
                    "provider_type",
                    "received_at",
                    "source",
                    "type"
                ],
                "exactly the contract's fields"
            );
            published.push((id.clone(), (*routing_key).to_owned()));

            let p = &seen.properties;
            assert_eq!(p.delivery_mode(), &Some(2), "persistent");
            assert_eq!(
                p.content_type().as_ref().map(|s| s.as_str()),
                Some("application/json")
            );
            assert_eq!(
                p.message_id().as_ref().map(|s| s.as_str()),
                Some(id.as_str())
            );
            assert_eq!(p.kind().as_ref().map(|s| s.as_str()), body["type"].as_str());
        }
    }
    assert!(
        events.rest(Duration::from_millis(500)).await.is_empty(),
        "no extra events"
    );

    // CONTRACT section 7: one INFO line per event, with these fields, naming that event.
    let lines = hookline.logged("outcome", "published", 8).await;
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let text = |line: &Value, field: &str| {
        field_of(line, field)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{field} missing in {line}"))
            .to_owned()
    };
    let mut logged: Vec<(String, String)> = lines
        .iter()
        .map(|line| {
            assert_eq!(line["level"], "INFO");
            let routing_key = text(line, "routing_key");
            assert_eq!(
                routing_key,
                format!("{}.{}", text(line, "provider"), text(line, "type")),
                "{line}"
            );
            assert_eq!(text(line, "source"), text(line, "provider"), "{line}");
            (text(line, "event_id"), routing_key)
        })
        .collect();
    logged.sort();
    published.sort();
    assert_eq!(logged, published);
    broker.cleanup(&[]).await;
}

#[tokio::test]
async fn raw_delivery_is_queued_exactly_as_received() {
    let (config, _ingress, base) = start("ingress").await;
    let broker = Broker::connect(&config.prefix).await;
    let body = "{ \"id\" : \"raw-1\", \"event\":\"ticket_called\" ,\n \"data\": {\"n\": 1.0} }";
    let (status, answer) = post_signed(&base, "aisle", "aisle", body).await;
    assert_eq!(status, 200, "{answer}");
    // No worker runs: the raw delivery waits in the ingress queue.
    let mut raw = broker
        .watch_queue(&format!("{}.ingress", config.prefix))
        .await;
    let seen = &raw.take(1, Duration::from_secs(5)).await[0];
    assert_eq!(seen.raw, body.as_bytes(), "body exactly as received");
    let props = &seen.properties;
    assert_eq!(props.delivery_mode(), &Some(2));
    assert_eq!(
        props.message_id().as_ref().unwrap().as_str(),
        answer["delivery_id"].as_str().unwrap()
    );
    let header = |k: &str| hookline_amqp::headers::header_str(props.headers().as_ref(), k);
    assert_eq!(header("x-hookline-source").as_deref(), Some("aisle"));
    assert_eq!(header("x-hookline-provider").as_deref(), Some("aisle"));
    broker.cleanup(&[]).await;
}
