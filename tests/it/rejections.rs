//! Every refusal of CONTRACT section 3, with nothing queued; asello's echo; the probes.

use crate::support::{Broker, metric, sign, start, sw_headers, wait_for_status};
use std::time::Duration;

const AISLE_BODY: &str = r#"{"id":"r-1","event":"ticket_created","data":{}}"#;
const SW_BODY: &str = r#"{"type":"invoice.paid","timestamp":"2026-11-22T10:00:00Z","data":{}}"#;

/// Standard Webhooks headers for `SW_BODY` signed at `now + skew` seconds, with `change`
/// applied (a header replaced, removed or repeated).
fn sw(
    skew: i64,
    change: impl FnOnce(&mut Vec<(&'static str, String)>),
) -> Vec<(&'static str, String)> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut headers = sw_headers("msg_rejections", now + skew, SW_BODY.as_bytes());
    change(&mut headers);
    headers
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    status: u16,
    code: Option<&'static str>,
}

fn signed(provider: &str, body: &str) -> Vec<(&'static str, String)> {
    let (h, v) = sign(provider, body.as_bytes());
    vec![(h, v)]
}

/// The signature values the case's own provider would have accepted for its body (none for
/// a path that is not a provider's source).
fn expected_signatures(case: &Case) -> Vec<String> {
    let source = case.path.trim_start_matches("/webhooks/");
    let source = source.split('?').next().unwrap_or_default();
    if hookline_core::provider::find(source).is_none() {
        return Vec::new();
    }
    crate::support::signed_headers(source, case.body.as_bytes())
        .into_iter()
        .filter(|(name, _)| !matches!(*name, "webhook-id" | "webhook-timestamp"))
        .map(|(_, value)| value)
        .collect()
}

fn cases() -> Vec<Case> {
    let big = format!(
        r#"{{"id":"x","event":"ticket_created","pad":"{}"}}"#,
        "a".repeat(5000)
    );
    let mut twice = signed("aisle", AISLE_BODY);
    twice.push(("x-aisle-webhook-signature", "00".into()));
    let mut twice_reversed = twice.clone();
    twice_reversed.reverse();
    let case = |name, method, path, headers, body: &str, status, code| Case {
        name,
        method,
        path,
        headers,
        body: body.to_owned(),
        status,
        code,
    };
    vec![
        case(
            "no signature",
            "POST",
            "/webhooks/aisle",
            vec![],
            AISLE_BODY,
            401,
            Some("missing_signature"),
        ),
        case(
            "empty signature",
            "POST",
            "/webhooks/aisle",
            vec![("x-aisle-webhook-signature", String::new())],
            AISLE_BODY,
            401,
            Some("missing_signature"),
        ),
        case(
            "another provider's header",
            "POST",
            "/webhooks/aisle",
            signed("auraconnect", AISLE_BODY),
            AISLE_BODY,
            401,
            Some("missing_signature"),
        ),
        case(
            "signature of another body",
            "POST",
            "/webhooks/aisle",
            signed("aisle", "{}"),
            AISLE_BODY,
            401,
            Some("invalid_signature"),
        ),
        case(
            "garbage signature",
            "POST",
            "/webhooks/aisle",
            vec![("X-Aisle-Webhook-Signature", "zz-not-hex".into())],
            AISLE_BODY,
            401,
            Some("invalid_signature"),
        ),
        case(
            "inline wrong",
            "POST",
            "/webhooks/inline",
            vec![("x-hub-signature", format!("sha1={}", "0".repeat(40)))],
            r#"{"events":[]}"#,
            401,
            Some("invalid_signature"),
        ),
        case(
            "auraconnect wrong",
            "POST",
            "/webhooks/auraconnect",
            vec![(
                "x-auraconnect-signature",
                format!("sha256={}", "ab".repeat(32)),
            )],
            r#"{"id":"e","type":"order.created"}"#,
            401,
            Some("invalid_signature"),
        ),
        case(
            "sixpark truncated",
            "POST",
            "/webhooks/sixpark",
            vec![(
                "x-sixpark-signature",
                sign("sixpark", b"{}").1[..60].to_owned(),
            )],
            "{}",
            401,
            Some("invalid_signature"),
        ),
        case(
            "asello wrong",
            "POST",
            "/webhooks/asello",
            vec![("signature", format!("sha256={}", "AB".repeat(32)))],
            r#"{"id":"a","notifications":[]}"#,
            401,
            Some("invalid_signature"),
        ),
        case(
            "too large",
            "POST",
            "/webhooks/aisle",
            signed("aisle", &big),
            &big,
            413,
            Some("payload_too_large"),
        ),
        case(
            "not JSON",
            "POST",
            "/webhooks/aisle",
            signed("aisle", "hello"),
            "hello",
            400,
            Some("malformed_payload"),
        ),
        case(
            "aisle without id",
            "POST",
            "/webhooks/aisle",
            signed("aisle", r#"{"event":"ticket_created"}"#),
            r#"{"event":"ticket_created"}"#,
            400,
            Some("malformed_payload"),
        ),
        case(
            "inline without events",
            "POST",
            "/webhooks/inline",
            signed("inline", r#"{"timestamp":1}"#),
            r#"{"timestamp":1}"#,
            400,
            Some("malformed_payload"),
        ),
        case(
            "auraconnect without type",
            "POST",
            "/webhooks/auraconnect",
            signed("auraconnect", r#"{"id":"e"}"#),
            r#"{"id":"e"}"#,
            400,
            Some("malformed_payload"),
        ),
        case(
            "sixpark without type",
            "POST",
            "/webhooks/sixpark",
            signed("sixpark", r#"{"data":{"id":"a"}}"#),
            r#"{"data":{"id":"a"}}"#,
            400,
            Some("malformed_payload"),
        ),
        case(
            "asello notification without action",
            "POST",
            "/webhooks/asello",
            signed("asello", r#"{"id":"a","notifications":[{"id":1}]}"#),
            r#"{"id":"a","notifications":[{"id":1}]}"#,
            400,
            Some("malformed_payload"),
        ),
        case(
            "aisle signature twice, valid first",
            "POST",
            "/webhooks/aisle",
            twice,
            AISLE_BODY,
            400,
            Some("duplicate_header"),
        ),
        case(
            "aisle signature twice, valid last",
            "POST",
            "/webhooks/aisle",
            twice_reversed,
            AISLE_BODY,
            400,
            Some("duplicate_header"),
        ),
        case(
            "standard-webhooks without webhook-id",
            "POST",
            "/webhooks/standard-webhooks",
            sw(0, |h| h.retain(|(k, _)| *k != "webhook-id")),
            SW_BODY,
            401,
            Some("missing_signature"),
        ),
        case(
            "standard-webhooks timestamp not an integer",
            "POST",
            "/webhooks/standard-webhooks",
            sw(0, |h| h[1].1 = "2026-11-22T10:00:00Z".into()),
            SW_BODY,
            401,
            Some("missing_signature"),
        ),
        case(
            "standard-webhooks signed 10 minutes ago",
            "POST",
            "/webhooks/standard-webhooks",
            sw(-600, |_| {}),
            SW_BODY,
            401,
            Some("stale_timestamp"),
        ),
        case(
            "standard-webhooks signed 10 minutes ahead",
            "POST",
            "/webhooks/standard-webhooks",
            sw(600, |_| {}),
            SW_BODY,
            401,
            Some("stale_timestamp"),
        ),
        case(
            "standard-webhooks tampered body",
            "POST",
            "/webhooks/standard-webhooks",
            sw(0, |_| {}),
            &SW_BODY.replace("paid", "void"),
            401,
            Some("invalid_signature"),
        ),
        case(
            "standard-webhooks signature header twice",
            "POST",
            "/webhooks/standard-webhooks",
            sw(0, |h| h.push(("webhook-signature", "v1,AAAA".into()))),
            SW_BODY,
            400,
            Some("duplicate_header"),
        ),
        case(
            "unknown source",
            "POST",
            "/webhooks/stripe",
            signed("aisle", AISLE_BODY),
            AISLE_BODY,
            404,
            Some("unknown_source"),
        ),
        case(
            "PUT",
            "PUT",
            "/webhooks/aisle",
            signed("aisle", AISLE_BODY),
            AISLE_BODY,
            405,
            None,
        ),
        case("DELETE", "DELETE", "/webhooks/aisle", vec![], "", 405, None),
        case(
            "GET on a non-echo source",
            "GET",
            "/webhooks/aisle?echo=x",
            vec![],
            "",
            405,
            None,
        ),
        case(
            "asello GET without echo",
            "GET",
            "/webhooks/asello",
            vec![],
            "",
            400,
            Some("malformed_payload"),
        ),
    ]
}

#[tokio::test]
async fn refusals_queue_nothing() {
    let (config, ingress, base) = start("ingress").await;
    let broker = Broker::connect(&config.prefix).await;
    let client = reqwest::Client::new();

    for case in cases() {
        let mut request =
            client.request(case.method.parse().unwrap(), format!("{base}{}", case.path));
        for (h, v) in &case.headers {
            request = request.header(*h, v);
        }
        let resp = request.body(case.body.clone()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), case.status, "{}", case.name);
        if let Some(code) = case.code {
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"], code, "{}: {body}", case.name);
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{}",
                case.name
            );
            // Neither what was sent as a signature nor what would have matched is repeated.
            let text = body.to_string();
            for expected in expected_signatures(&case) {
                assert!(
                    !text.contains(&expected),
                    "{}: expected signature leaked",
                    case.name
                );
            }
            for (_, sent) in case.headers.iter().filter(|(_, v)| v.len() >= 8) {
                assert!(
                    !text.contains(sent.as_str()),
                    "{}: sent signature echoed",
                    case.name
                );
            }
        }
    }

    // A chunked body (no Content-Length) is cut off while it is read.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))),
    );
    let resp = client
        .post(format!("{base}/webhooks/aisle"))
        .header("x-aisle-webhook-signature", "00")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413, "chunked over the limit");

    assert_eq!(
        broker.depth(&format!("{}.ingress", config.prefix)).await,
        0,
        "nothing queued"
    );
    let log = ingress.all_lines().join("\n");
    for case in cases() {
        for expected in expected_signatures(&case) {
            assert!(
                !log.contains(&expected),
                "{}: expected signature logged",
                case.name
            );
        }
        for (_, sent) in case.headers.iter().filter(|(_, v)| v.len() >= 8) {
            assert!(
                !log.contains(sent.as_str()),
                "{}: sent signature logged",
                case.name
            );
        }
    }
    broker.cleanup(&[]).await;
}

#[tokio::test]
async fn asello_echo_and_probes() {
    let (config, _hookline, base) = start("run").await;
    let client = reqwest::Client::new();

    let resp = client
        .get(format!(
            "{base}/webhooks/asello?echo=4acbe33406244d109888260d2c61b844"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(
        resp.text().await.unwrap(),
        "4acbe33406244d109888260d2c61b844"
    );

    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, answer) = crate::support::post_signed(&base, "aisle", "aisle", AISLE_BODY).await;
    assert_eq!(status, 200, "{answer}");
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(
        metrics.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let text = metrics.text().await.unwrap();
    let accepted = metric(
        &text,
        "hookline_ingress_requests_total",
        &[("source", "aisle"), ("code", "accepted")],
    );
    assert_eq!(accepted, 1.0, "the 200 is counted once: {text}");

    let worker = _hookline.metrics_base().await;
    wait_for_status(&format!("{worker}/healthz"), 200).await;
    let resp = client
        .get(format!("{worker}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4");
    // The worker counts the event once it is published.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = crate::support::scrape(&format!("{worker}/metrics")).await;
        let published = metric(
            &text,
            "hookline_worker_events_total",
            &[("source", "aisle"), ("outcome", "published")],
        );
        if published == 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never counted the event: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Broker::connect(&config.prefix).await.cleanup(&[]).await;
}

#[tokio::test]
async fn request_spans_name_the_route_not_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::TestConfig::new(dir.path());
    let ingress = crate::support::Process::start_with_env(
        &config.write(),
        "ingress",
        &[("RUST_LOG", "info,hookline_ingress=debug")],
    );
    let base = ingress.base().await;
    wait_for_status(&format!("{base}/readyz"), 200).await;
    let long = "n".repeat(5000);
    let resp = reqwest::Client::new()
        .post(format!("{base}/webhooks/{long}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let lines = ingress.logged("message", "Request refused.", 1).await;
    let line = lines.first().expect("the refusal is logged");
    let spans = line.to_string();
    assert!(spans.contains("/webhooks/{source}"), "{spans}");
    assert!(
        !spans.contains(&"n".repeat(100)),
        "the raw path reached the log: {spans}"
    );
}
