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
//! A scrape never holds a lock on the state across an `.await`: rendering is synchronous and
//! locks one manager at a time, so ingest waits for at most one manager's snapshot. Full scrapes
//! are single-flight per format: a scrape arriving while a body renders waits for that body instead
//! of rendering a second one beside it (two Prometheus servers of an HA pair, a retry after a
//! client timeout), and with [`ExportOptions::max_age`] a body is reused for that long.
//! The per-manager families in `salespulse_engine::OPTIONAL_FAMILIES` are left out unless
//! [`ExportOptions::include`] names them.
#![deny(missing_docs)]

mod api;
pub mod security;
pub mod thresholds;

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::proto::MetricType as ProtoType;
use prometheus::{Gauge, IntCounter, Registry};
use salespulse_core::expo::{Format, MetricType, MetricWriter};
use salespulse_engine::Engine;
pub use security::{BasicAuth, HttpSecurity};

/// Tells whether the daemon is ready to be scraped as complete.
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// What `/metrics` writes beyond the defaults, and how long a rendered body may be reused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Families of `salespulse_engine::OPTIONAL_FAMILIES` to write as well (off by default:
    /// they cost series per manager that no shipped dashboard or rule reads).
    pub include: Vec<String>,
    /// A full scrape that arrives within this long of the start of the previous full render (in
    /// the same format) gets that body: the values can be this much older than the scrape. Zero
    /// (the default) renders for every scrape, except that scrapes arriving while a body renders
    /// share it.
    pub max_age: Duration,
}

/// What the HTTP handlers read.
pub struct Exporter {
    engine: Arc<Engine>,
    registry: Registry,
    ready: ReadyCheck,
    render_seconds: Gauge,
    shared_scrapes: IntCounter,
    /// `OPTIONAL_FAMILIES` not included.
    skip: Vec<&'static str>,
    max_age: Duration,
    /// The last full body per [`Format`], behind the lock that makes renders single-flight.
    last: [tokio::sync::Mutex<Option<LastBody>>; 2],
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
        let shared_scrapes = IntCounter::new(
            "salespulse_scrape_shared_total",
            "Full /metrics scrapes answered with a body rendered for another scrape (in flight, or within [export] max_age).",
        )?;
        registry.register(Box::new(shared_scrapes.clone()))?;
        Ok(Exporter {
            engine,
            registry,
            ready,
            render_seconds,
            shared_scrapes,
            skip: salespulse_engine::OPTIONAL_FAMILIES.to_vec(),
            max_age: Duration::ZERO,
            last: Default::default(),
            last_body_bytes: Default::default(),
            thresholds: thresholds::thresholds(),
        })
    }

    /// The same exporter writing `options.include` too and reusing bodies for `options.max_age`.
    pub fn with_options(mut self, options: &ExportOptions) -> Exporter {
        self.skip = salespulse_engine::OPTIONAL_FAMILIES
            .iter()
            .copied()
            .filter(|family| !options.include.iter().any(|included| included == family))
            .collect();
        self.max_age = options.max_age;
        self
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
        out.skip_families(&self.skip);
        // The daemon's own counters first: every outcome they count happened before the state is
        // snapshotted below, so a scrape never counts an applied event its families do not show.
        write_registry(&self.registry, &mut out);
        self.engine.render(&mut out);
        let body = out.finish();
        self.last_body_bytes.store(body.len(), Relaxed);
        self.render_seconds.set(started.elapsed().as_secs_f64());
        body
    }

    /// A full body for a scrape that arrived at `arrived`: the one rendering now or, within
    /// `max_age`, the last one; else a new one, rendered on a blocking thread.
    async fn scrape(self: &Arc<Self>, format: Format, arrived: Instant) -> Result<Bytes, tokio::task::JoinError> {
        let mut last = self.last[format as usize].lock().await;
        if let Some(body) = last.as_ref().and_then(|last| last.reusable(arrived, self.max_age)) {
            self.shared_scrapes.inc();
            return Ok(body);
        }
        let started = Instant::now();
        let exporter = Arc::clone(self);
        // Rendering is CPU work on a snapshot; keep it off the async workers.
        let body = Arc::new(tokio::task::spawn_blocking(move || exporter.render(format)).await?);
        // Without a max age only scrapes waiting now may share the body: hold it weakly, so its
        // memory goes with the last response that carries it.
        let held =
            if self.max_age.is_zero() { Held::Weak(Arc::downgrade(&body)) } else { Held::Strong(Arc::clone(&body)) };
        *last = Some(LastBody { started, finished: Instant::now(), body: held });
        Ok(Bytes::from_owner(SharedBody(body)))
    }
}

/// The last full body of one format.
struct LastBody {
    started: Instant,
    finished: Instant,
    body: Held,
}

enum Held {
    Weak(Weak<String>),
    Strong(Arc<String>),
}

impl LastBody {
    /// The body, if a scrape that arrived at `arrived` may have it: it was still rendering then,
    /// or it started at most `max_age` before.
    fn reusable(&self, arrived: Instant, max_age: Duration) -> Option<Bytes> {
        let in_flight = self.finished >= arrived;
        if !in_flight && arrived.saturating_duration_since(self.started) > max_age {
            return None;
        }
        let body = match &self.body {
            Held::Weak(weak) => weak.upgrade()?,
            Held::Strong(strong) => Arc::clone(strong),
        };
        Some(Bytes::from_owner(SharedBody(body)))
    }
}

/// A rendered body shared by the responses that carry it, without copying.
struct SharedBody(Arc<String>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
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
    let arrived = Instant::now();
    let rendered = if only_self {
        // A few dozen series: cheap enough to render on the async worker, never shared.
        Ok(Bytes::from(exporter.render_self(format)))
    } else {
        exporter.scrape(format, arrived).await
    };
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use prometheus::Registry;
    use salespulse_core::clock::ManualClock;
    use salespulse_core::expo::Format;
    use salespulse_core::window::Windows;
    use salespulse_engine::{Engine, EngineConfig, OPTIONAL_FAMILIES};

    use super::{serve, ExportOptions, Exporter, Held, LastBody};
    use crate::api::tests::T0;

    const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

    fn call(engine: &Engine, offset: i64, manager: &str) {
        crate::api::tests::call(engine, offset, manager, "north", 60_000);
    }

    fn exporter(managers: i64, options: &ExportOptions) -> (Arc<Engine>, Arc<Exporter>) {
        let clock = Arc::new(ManualClock::new(T0));
        let registry = Registry::new();
        let config = EngineConfig::new(Windows::parse(&["5m", "1h"]).unwrap());
        let engine = Arc::new(Engine::new(config, clock, &registry).unwrap());
        for offset in 0..managers {
            call(&engine, offset, &format!("m{offset:04}"));
        }
        let exporter = Exporter::new(Arc::clone(&engine), registry, Arc::new(|| true)).unwrap().with_options(options);
        (engine, Arc::new(exporter))
    }

    fn get(base: &str) -> String {
        let mut response = ureq::get(&format!("{base}/metrics")).header("Accept", OPENMETRICS).call().unwrap();
        let mut body = String::new();
        response.body_mut().as_reader().read_to_string(&mut body).unwrap();
        body
    }

    /// The body without the daemon's own scrape instrumentation, which a shared scrape counts.
    fn families(body: &str) -> String {
        body.lines().filter(|l| !l.contains("salespulse_scrape_")).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn concurrent_scrapes_get_whole_bodies_with_the_values_of_a_plain_render() {
        let (_engine, exporter) = exporter(2_000, &ExportOptions::default());
        let expected = families(&exporter.render(Format::OpenMetrics));
        assert!(expected
            .contains(r#"salespulse_window_calls{manager="m1999",team="north",direction="outbound",window="1h"} 1"#));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(serve(listener, Arc::clone(&exporter), async {
            let _ = stopped.await;
        }));
        let bodies: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| get(&base))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for body in &bodies {
            assert!(body.ends_with("# EOF\n"));
            assert_eq!(families(body), expected);
        }
        let _ = stop.send(());
        runtime.block_on(server).unwrap().unwrap();
    }

    #[test]
    fn a_body_is_reused_within_max_age_and_never_without_one() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for (max_age, reused) in [(Duration::from_secs(3600), true), (Duration::ZERO, false)] {
            let (engine, exporter) = exporter(3, &ExportOptions { max_age, ..ExportOptions::default() });
            let first = runtime.block_on(exporter.scrape(Format::Text, Instant::now())).unwrap();
            call(&engine, 100, "newcomer");
            let second = runtime.block_on(exporter.scrape(Format::Text, Instant::now())).unwrap();
            let newcomer = String::from_utf8_lossy(&second).contains(r#"manager="newcomer""#);
            assert_eq!((first == second, newcomer), (reused, !reused), "max_age {max_age:?}");
            assert_eq!(exporter.shared_scrapes.get(), u64::from(reused));
            // The other format has its own body.
            let other = runtime.block_on(exporter.scrape(Format::OpenMetrics, Instant::now())).unwrap();
            assert!(String::from_utf8_lossy(&other).contains(r#"manager="newcomer""#));
        }
    }

    #[test]
    fn a_scrape_shares_a_body_that_was_rendering_when_it_arrived() {
        let body = Arc::new("x 1\n".to_owned());
        let started = Instant::now();
        let finished = started + Duration::from_millis(300);
        let last = LastBody { started, finished, body: Held::Weak(Arc::downgrade(&body)) };
        // Arrived while rendering: shared; after it finished: not, without a max age.
        assert!(last.reusable(started + Duration::from_millis(100), Duration::ZERO).is_some());
        assert!(last.reusable(finished + Duration::from_millis(1), Duration::ZERO).is_none());
        assert!(last.reusable(finished + Duration::from_millis(1), Duration::from_secs(1)).is_some());
        // A weakly held body is gone with the last response that carried it.
        drop(body);
        assert!(last.reusable(started + Duration::from_millis(100), Duration::ZERO).is_none());
    }

    #[test]
    fn optional_families_are_written_only_when_included() {
        let type_line = |body: &str, family: &str| {
            body.lines().any(|l| l.strip_prefix("# TYPE ").and_then(|rest| rest.split(' ').next()) == Some(family))
        };
        let (_engine, default) = exporter(1, &ExportOptions::default());
        let body = default.render(Format::Text);
        assert!(type_line(&body, "salespulse_window_calls"));
        let include = OPTIONAL_FAMILIES.iter().map(|s| s.to_string()).collect();
        let (_engine, every) = exporter(1, &ExportOptions { include, ..ExportOptions::default() });
        let every = every.render(Format::Text);
        for family in OPTIONAL_FAMILIES {
            assert!(!type_line(&body, family), "{family} is written by default");
            assert!(type_line(&every, family), "{family} is not a family the engine writes");
        }
        // Nothing else differs.
        let without = |body: &str| -> Vec<String> {
            body.lines()
                .filter(|l| !OPTIONAL_FAMILIES.iter().any(|f| l.contains(f)) && !l.contains("salespulse_scrape_"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(without(&body), without(&every));
    }
}
