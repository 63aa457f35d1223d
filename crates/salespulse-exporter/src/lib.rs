//! The HTTP side of salespulse.
//!
//! [`serve`] answers `GET /metrics` with values computed at scrape time: the daemon's own
//! instrumentation from a `prometheus` [`Registry`], then the per-manager families straight from a
//! snapshot of the [`Engine`]'s state (in that order, so no counted outcome is missing from the
//! families). The format follows the `Accept` header: OpenMetrics for clients that
//! ask for it (Prometheus does), the text format 0.0.4 otherwise. `GET /healthz` answers while the
//! process serves; `GET /readyz` once ingest has joined its consumer group and rebuilt the state of its
//! partitions from Kafka.
//!
//! The same router serves the live team page at `GET /` (assets embedded in the binary, no CDN)
//! and its JSON API under `/api/v1` ([`api`], documented in `docs/api.md`), so whatever guards
//! `/metrics` guards them too.
//!
//! [`serve_with`] adds optional basic auth (every route but the probes `/healthz` and `/readyz`) and TLS ([`security`]).
//!
//! A scrape never holds a lock across an `.await`: rendering is synchronous and locks one manager
//! at a time, so ingest waits for at most one manager's snapshot.
#![deny(missing_docs)]

mod api;
pub mod security;
pub mod thresholds;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::proto::MetricType as ProtoType;
use prometheus::{Gauge, Registry};
use salespulse_core::expo::{Format, MetricType, MetricWriter};
use salespulse_engine::Engine;
pub use security::{BasicAuth, HttpSecurity};

/// Tells whether the daemon is ready to be scraped as complete.
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// What the HTTP handlers read.
pub struct Exporter {
    engine: Arc<Engine>,
    registry: Registry,
    ready: ReadyCheck,
    render_seconds: Gauge,
    /// Size of the previous body, so the next one is allocated once.
    last_body_bytes: std::sync::atomic::AtomicUsize,
    /// The alert thresholds the page colours by (from the embedded rule file).
    thresholds: Vec<(String, f64)>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter of `engine`'s state and of every collector in `registry`.
    pub fn new(engine: Arc<Engine>, registry: Registry, ready: ReadyCheck) -> prometheus::Result<Exporter> {
        let render_seconds = Gauge::new(
            "salespulse_scrape_render_seconds",
            "Time the previous /metrics scrape took to render its body.",
        )?;
        registry.register(Box::new(render_seconds.clone()))?;
        Ok(Exporter {
            engine,
            registry,
            ready,
            render_seconds,
            last_body_bytes: Default::default(),
            thresholds: thresholds::thresholds(),
        })
    }

    /// The daemon's own metrics only (`/metrics?scope=self`): ingest counters, Kafka client
    /// state, process metrics; a few dozen series however many managers there are, so a second,
    /// frequent scrape job (or a benchmark harness watching progress) costs next to nothing.
    pub fn render_self(&self, format: Format) -> String {
        let mut out = MetricWriter::with_capacity(format, 16 * 1024);
        write_registry(&self.registry, &mut out);
        out.finish()
    }

    /// The whole `/metrics` body in `format`.
    pub fn render(&self, format: Format) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let started = Instant::now();
        let expected = self.last_body_bytes.load(Relaxed);
        let mut out = MetricWriter::with_capacity(format, (expected + expected / 8).max(64 * 1024));
        // The daemon's own counters first: every outcome they count happened before the state is
        // snapshotted below, so a scrape never counts an applied event its families do not show.
        write_registry(&self.registry, &mut out);
        self.engine.render(&mut out);
        let body = out.finish();
        self.last_body_bytes.store(body.len(), Relaxed);
        self.render_seconds.set(started.elapsed().as_secs_f64());
        body
    }
}

/// Serves the exporter on `listener` until `shutdown` completes: plain HTTP, no auth.
pub async fn serve(
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let guard = security::Guard::new(&HttpSecurity::default(), &Registry::new()).map_err(std::io::Error::other)?;
    let app = security::protect(router(exporter), &guard);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Serves the exporter on `listener` until `shutdown` completes, with `security`'s basic auth on
/// every route but the probes and TLS when configured. Its refusals are counted in `registry`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
    security: &HttpSecurity,
    registry: &Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let guard = security::Guard::new(security, registry).map_err(std::io::Error::other)?;
    // Protect the finished router, so every route is covered, whoever adds it.
    let app = security::protect(router(exporter), &guard);
    match &security.tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
        Some(tls) => {
            let listener = security::TlsListener::new(listener, Arc::clone(tls), guard)?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
    }
}

/// Every route of the HTTP side.
fn router(exporter: Arc<Exporter>) -> Router {
    Router::new()
        .route("/", get(api::index))
        .route("/assets/app.js", get(api::app_js))
        .route("/assets/app.css", get(api::app_css))
        .route("/api/v1/managers", get(api::managers))
        .route("/api/v1/managers/{id}", get(api::manager))
        .route("/api/v1/ingest", get(api::ingest))
        .route("/api/v1/thresholds", get(api::thresholds))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(exporter)
}

/// `/metrics` query parameters.
#[derive(Debug, Default, serde::Deserialize)]
struct MetricsQuery {
    /// `self`: only the daemon's own metrics, without the per-manager families.
    scope: Option<String>,
}

async fn metrics(
    State(exporter): State<Arc<Exporter>>,
    headers: HeaderMap,
    Query(query): Query<MetricsQuery>,
) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let only_self = match query.scope.as_deref() {
        None | Some("all") => false,
        Some("self") => true,
        Some(_) => return (StatusCode::BAD_REQUEST, "scope must be `self` or `all`\n").into_response(),
    };
    // Rendering is CPU work on a snapshot; keep it off the async workers.
    let rendered =
        tokio::task::spawn_blocking(
            move || {
                if only_self {
                    exporter.render_self(format)
                } else {
                    exporter.render(format)
                }
            },
        )
        .await;
    match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering /metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(exporter): State<Arc<Exporter>>) -> Response {
    if (exporter.ready)() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: joining the consumer group or rebuilding state from Kafka\n")
            .into_response()
    }
}

/// Writes every family of `registry` (counters, gauges, histograms; the daemon registers no
/// other kind).
pub fn write_registry(registry: &Registry, out: &mut MetricWriter) {
    for family in registry.gather() {
        let name = family.name();
        let kind = match family.get_field_type() {
            ProtoType::COUNTER => MetricType::Counter,
            ProtoType::GAUGE => MetricType::Gauge,
            ProtoType::HISTOGRAM => MetricType::Histogram,
            _ => continue,
        };
        out.family(name, family.help(), kind);
        for metric in family.get_metric() {
            let labels: Vec<(&str, &str)> = metric.get_label().iter().map(|l| (l.name(), l.value())).collect();
            match kind {
                MetricType::Counter => out.sample(name, &labels, metric.get_counter().get_value()),
                MetricType::Gauge => out.sample(name, &labels, metric.get_gauge().get_value()),
                MetricType::Histogram => {
                    let histogram = metric.get_histogram();
                    let bucket_name = format!("{name}_bucket");
                    let bounds =
                        histogram.get_bucket().iter().map(|b| (b.upper_bound().to_string(), b.cumulative_count()));
                    let infinite = std::iter::once(("+Inf".to_owned(), histogram.get_sample_count()));
                    for (le, count) in bounds.chain(infinite) {
                        let mut with_le = labels.clone();
                        with_le.push(("le", &le));
                        out.sample(&bucket_name, &with_le, count as f64);
                    }
                    out.sample(&format!("{name}_sum"), &labels, histogram.get_sample_sum());
                    out.sample(&format!("{name}_count"), &labels, histogram.get_sample_count() as f64);
                }
            }
        }
    }
}
