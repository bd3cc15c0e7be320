//! The whole request path of CONTRACT section 3: find the source, take a place among the
//! requests in flight, check the signature headers, read the body under its limits, verify,
//! make durable, answer, all within `request_timeout_ms`.

use crate::body;
use crate::durable::{Durable, StoredIn};
use crate::error::ApiError;
use crate::limits::Limits;
use crate::telemetry;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hookline_core::config::IngressConfig;
use hookline_core::{SourceSpec, delivery};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

/// Everything a request needs.
pub struct AppState {
    sources: HashMap<String, SourceSpec>,
    max_body_bytes: usize,
    body_timeout: Duration,
    request_timeout: Duration,
    limits: Limits,
    durable: Durable,
    metrics: PrometheusHandle,
}

impl AppState {
    /// State for the router, with the limits of `[ingress]`.
    pub fn new(
        sources: &[SourceSpec],
        ingress: &IngressConfig,
        durable: Durable,
        metrics: PrometheusHandle,
    ) -> Arc<Self> {
        Arc::new(Self {
            sources: sources
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            max_body_bytes: ingress.max_body_bytes,
            body_timeout: ingress.body_timeout(),
            request_timeout: ingress.request_timeout(),
            limits: Limits::new(ingress.max_in_flight, ingress.body_budget_bytes),
            durable,
            metrics,
        })
    }

    fn source(&self, name: &str) -> Result<&SourceSpec, ApiError> {
        self.sources
            .get(name)
            .ok_or_else(|| ApiError::unknown_source(name))
    }

    /// The label metrics and logs use: a configured name, or `unknown` for all the others.
    fn label<'a>(&'a self, name: &str) -> &'a str {
        self.sources
            .get_key_value(name)
            .map_or(telemetry::UNKNOWN_SOURCE, |(name, _)| name.as_str())
    }
}

/// The ingress router; `/metrics` is on it only with `with_metrics` (no
/// `ingress.metrics_listen`), otherwise it answers 404 like any other unknown path.
pub fn router(state: Arc<AppState>, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/webhooks/{source}", post(receive).get(echo))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let router = if with_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router
        .with_state(state)
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// The router of `ingress.metrics_listen`: `/metrics` and `/healthz`, nothing a sender uses.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// A DEBUG span per request naming the matched route, never the raw path: a path is the
/// client's text (an unknown source's name could be 60 KB long).
fn request_span(request: &axum::http::Request<Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", MatchedPath::as_str);
    tracing::debug_span!("request", method = %request.method(), route)
}

async fn healthz() -> &'static str {
    "ok"
}

#[derive(Serialize)]
struct Accepted {
    accepted: bool,
    delivery_id: Uuid,
}

async fn receive(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let label = app.label(&name);
    let outcome = tokio::time::timeout(app.request_timeout, accept(&app, &name, &headers, body))
        .await
        .unwrap_or(Err(ApiError::RequestTimeout));
    let budget = app
        .sources
        .get(&name)
        .map_or(app.request_timeout, |source| source.budget);
    match outcome {
        Ok((delivery_id, stored)) => {
            telemetry::accepted(
                label,
                &delivery_id,
                stored.label(),
                started.elapsed(),
                budget,
            );
            Json(Accepted {
                accepted: true,
                delivery_id,
            })
            .into_response()
        }
        Err(error) => {
            telemetry::refused(label, &error);
            telemetry::answered(label, started.elapsed(), budget);
            error.into_response()
        }
    }
}

async fn accept(
    app: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Uuid, StoredIn), ApiError> {
    let source = app.source(name)?;
    let _slot = app.limits.enter()?;
    let received_at = OffsetDateTime::now_utc();
    // Missing, repeated or stale signature headers are refused before any body is read.
    delivery::check_headers(source, headers, received_at)?;
    let limit = app.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let deadline = tokio::time::Instant::now() + app.body_timeout;
    let body = body::read(body, limit, app.limits.lease(), deadline).await?;
    let delivery = delivery::verify(source, headers, body.bytes.clone(), received_at)?;
    let stored = app
        .durable
        .store(&delivery)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok((delivery.meta().delivery_id, stored))
}

/// Longest `echo` answered: asello sends a 32-character token.
const MAX_ECHO: usize = 1024;

#[derive(Deserialize)]
struct EchoQuery {
    echo: Option<String>,
}

/// asello checks an endpoint with `GET ?echo=X` and expects `X` back as text.
async fn echo(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<EchoQuery>,
) -> Result<Response, ApiError> {
    let source = app.source(&name)?;
    if !source.provider.answers_echo() {
        return Err(ApiError::MethodNotAllowed);
    }
    let echo = query
        .echo
        .ok_or(ApiError::BadEcho("missing `echo` query parameter"))?;
    if echo.chars().count() > MAX_ECHO {
        return Err(ApiError::BadEcho("`echo` is longer than 1024 characters"));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        echo,
    )
        .into_response())
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.durable.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no broker and no writable spool",
        )
            .into_response()
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    //! The request path in-process with `oneshot`, no socket and no broker: with the broker
    //! unreachable every accepted delivery goes to the spool.
    use super::*;
    use crate::spool::Spool;
    use axum::http::Request;
    use hookline_amqp::{Broker, BrokerOptions, Topology};
    use hookline_core::provider;
    use hookline_core::secret::Secret;
    use hookline_core::signature::{Algorithm, sign_hex};
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    const SECRET: &str = "router-test-secret";
    /// A needle meaning "the body is empty".
    const EMPTY: &str = "<empty>";

    async fn app(dir: &std::path::Path) -> (Router, Spool, CancellationToken) {
        let (state, spool, stop) = state(dir).await;
        (router(state, true), spool, stop)
    }

    async fn state(dir: &std::path::Path) -> (Arc<AppState>, Spool, CancellationToken) {
        let stop = CancellationToken::new();
        let broker = Broker::start(
            BrokerOptions {
                // Port 9 (discard) on loopback: nothing answers AMQP there.
                uris: vec!["amqp://guest:guest@127.0.0.1:9/%2f".parse().unwrap()],
                role: "test",
                channels: 1,
                topology: Topology::new("routertest", vec![]),
            },
            stop.clone(),
        );
        let spool = Spool::open(dir).unwrap();
        let durable = Durable::new(
            broker,
            spool.clone(),
            "routertest.ingress".into(),
            Duration::from_millis(200),
            Some(Duration::from_millis(3)),
            false,
        );
        let sources = [
            SourceSpec::new(
                "aisle",
                provider::find("aisle").unwrap(),
                vec![Secret::new(SECRET)],
            )
            .unwrap(),
            SourceSpec::new(
                "shop",
                provider::find("asello").unwrap(),
                vec![Secret::new("s".repeat(32))],
            )
            .unwrap(),
        ];
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        (
            AppState::new(
                &sources,
                &IngressConfig {
                    max_body_bytes: 64,
                    ..IngressConfig::default()
                },
                durable,
                metrics,
            ),
            spool,
            stop,
        )
    }

    fn post(body: &str, signature: Option<String>) -> Request<Body> {
        let mut request = Request::post("/webhooks/aisle");
        if let Some(signature) = signature {
            request = request.header("X-Aisle-Webhook-Signature", signature);
        }
        request.body(Body::from(body.to_owned())).unwrap()
    }

    async fn answer(router: &Router, request: Request<Body>) -> (StatusCode, String) {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn request_path_table() {
        let dir = tempfile::tempdir().unwrap();
        let (router, spool, stop) = app(dir.path()).await;
        let body = r#"{"id":"1","event":"ticket_created"}"#;
        let good = sign_hex(Algorithm::Sha256, SECRET.as_bytes(), body.as_bytes());
        let big = format!(r#"{{"id":"1","event":"x","pad":"{}"}}"#, "a".repeat(64));
        let cases = [
            (
                post(body, Some(good.clone())),
                StatusCode::OK,
                "\"accepted\":true",
            ),
            (
                post(body, None),
                StatusCode::UNAUTHORIZED,
                "missing_signature",
            ),
            (
                post(body, Some("00".into())),
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
            ),
            (
                post(&big, Some(good.clone())),
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            ),
            (
                post(
                    "[]",
                    Some(sign_hex(Algorithm::Sha256, SECRET.as_bytes(), b"[]")),
                ),
                StatusCode::BAD_REQUEST,
                "missing required field `id`",
            ),
            (
                Request::post("/webhooks/nope").body(Body::empty()).unwrap(),
                StatusCode::NOT_FOUND,
                "unknown_source",
            ),
            (
                Request::get("/webhooks/shop?echo=a%20b")
                    .body(Body::empty())
                    .unwrap(),
                StatusCode::OK,
                "a b",
            ),
            (
                // axum's own 405, with an empty body.
                Request::put("/webhooks/aisle").body(Body::empty()).unwrap(),
                StatusCode::METHOD_NOT_ALLOWED,
                EMPTY,
            ),
            (
                Request::get("/healthz").body(Body::empty()).unwrap(),
                StatusCode::OK,
                "ok",
            ),
            (
                Request::get("/readyz").body(Body::empty()).unwrap(),
                StatusCode::OK,
                "ready",
            ),
        ];
        for (request, status, needle) in cases {
            let what = format!("{} {}", request.method(), request.uri());
            let (got, text) = answer(&router, request).await;
            assert_eq!(got, status, "{what}: {text}");
            if needle == EMPTY {
                assert!(text.is_empty(), "{what}: {text}");
            } else {
                assert!(text.contains(needle), "{what}: {text}");
            }
            // The signature that would match is never repeated to a client.
            assert!(!text.contains(&good[8..]), "{what}: {text}");
        }
        assert_eq!(spool.depth(), 1, "only the accepted delivery was stored");
        let (_, stored) = spool.oldest(1).await.unwrap().pop().unwrap();
        assert_eq!(stored.body().as_ref(), body.as_bytes());
        assert_eq!(stored.meta().source, "aisle");
        stop.cancel();
    }

    #[tokio::test]
    async fn chunked_body_over_the_limit_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (router, spool, stop) = app(dir.path()).await;
        let chunks = futures_util::stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b' '; 16]))),
        );
        let request = Request::post("/webhooks/aisle")
            .header("x-aisle-webhook-signature", "00")
            .body(Body::from_stream(chunks))
            .unwrap();
        let (status, text) = answer(&router, request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
        assert_eq!(spool.depth(), 0);
        stop.cancel();
    }

    #[tokio::test]
    async fn metrics_move_to_their_own_router() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _spool, stop) = state(dir.path()).await;
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let public = router(state.clone(), false);
        let private = metrics_router(state.clone());
        assert_eq!(
            answer(&public, get("/metrics")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(answer(&public, get("/healthz")).await.0, StatusCode::OK);
        assert_eq!(answer(&private, get("/metrics")).await.0, StatusCode::OK);
        assert_eq!(answer(&private, get("/healthz")).await.0, StatusCode::OK);
        assert_eq!(
            answer(&private, get("/readyz")).await.0,
            StatusCode::NOT_FOUND
        );
        let with_metrics = router(state, true);
        assert_eq!(
            answer(&with_metrics, get("/metrics")).await.0,
            StatusCode::OK
        );
        stop.cancel();
    }
}
