//! The JSON API under `/api/v1` and the live page's embedded assets. Documented in `docs/api.md`;
//! the schema is `docs/openapi.yaml`, and the browser tests check live responses against it.
//!
//! Absent values are `null`, never 0: a manager with no chat state has no waiting clients to
//! report, which is not the same as none waiting.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use salespulse_engine::{IngestView, ManagerView, SparklineSpec, TeamView};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::Exporter;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// The window a request without `?window=` gets, when configured.
const DEFAULT_WINDOW: &str = "1h";

/// `?window=...&team=...`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManagersQuery {
    window: Option<String>,
    team: Option<String>,
}

/// `?window=...`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManagerQuery {
    window: Option<String>,
}

pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub(crate) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub(crate) async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub(crate) async fn managers(
    State(exporter): State<Arc<Exporter>>,
    query: Result<Query<ManagersQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else { return error(StatusCode::BAD_REQUEST, "unknown or malformed query parameter") };
    let window = window_or_default(&exporter, query.window);
    let read = tokio::task::spawn_blocking(move || exporter.engine.team_view(&window).ok_or(window)).await;
    match read {
        Ok(Ok(view)) => {
            let team = query.team.as_deref();
            let rows: Vec<Value> = view
                .managers
                .iter()
                .filter(|row| team.is_none_or(|team| row.team.as_deref() == Some(team)))
                .map(manager_json)
                .collect();
            let mut body = header_json(&view);
            body["managers"] = Value::Array(rows);
            json_response(StatusCode::OK, &body)
        }
        Ok(Err(window)) => unknown_window(&window),
        Err(join) => internal(join),
    }
}

pub(crate) async fn manager(
    State(exporter): State<Arc<Exporter>>,
    Path(id): Path<String>,
    query: Result<Query<ManagerQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else { return error(StatusCode::BAD_REQUEST, "unknown or malformed query parameter") };
    let window = window_or_default(&exporter, query.window);
    let read = tokio::task::spawn_blocking(move || exporter.engine.manager_view(&window, &id).ok_or(window)).await;
    match read {
        Ok(Ok(mut view)) => match view.managers.pop() {
            Some(row) => {
                let mut body = header_json(&view);
                body["manager"] = manager_json(&row);
                json_response(StatusCode::OK, &body)
            }
            None => error(StatusCode::NOT_FOUND, "no such manager is held"),
        },
        Ok(Err(window)) => unknown_window(&window),
        Err(join) => internal(join),
    }
}

pub(crate) async fn ingest(State(exporter): State<Arc<Exporter>>) -> Response {
    let read = tokio::task::spawn_blocking(move || {
        let kafka = KafkaStatus::gather(&exporter.registry);
        (exporter.engine.ingest_view(), kafka)
    })
    .await;
    match read {
        Ok((view, kafka)) => json_response(StatusCode::OK, &ingest_json(&view, &kafka)),
        Err(join) => internal(join),
    }
}

/// The Kafka client's liveness gauges, when the ingest crate registered them (not in tests that
/// feed the engine directly).
#[derive(Debug, Default)]
struct KafkaStatus {
    up: Option<bool>,
    contact_age_seconds: Option<f64>,
    /// Per subscribed topic: seconds since its last record arrived.
    record_age_seconds: Vec<(String, f64)>,
    /// Per source mapping, summed over its rules: `(source, events produced, items not mapped)`.
    sources: Vec<(String, u64, u64)>,
}

impl KafkaStatus {
    fn gather(registry: &prometheus::Registry) -> KafkaStatus {
        let mut status = KafkaStatus::default();
        for family in registry.gather() {
            let gauge = |m: &prometheus::proto::Metric| m.get_gauge().get_value();
            match family.name() {
                "salespulse_kafka_up" => status.up = family.get_metric().first().map(|m| gauge(m) > 0.0),
                "salespulse_kafka_contact_age_seconds" => {
                    status.contact_age_seconds = family.get_metric().first().map(gauge)
                }
                "salespulse_kafka_record_age_seconds" => {
                    for metric in family.get_metric() {
                        if let Some(topic) = metric.get_label().iter().find(|l| l.name() == "topic") {
                            status.record_age_seconds.push((topic.value().to_owned(), gauge(metric)));
                        }
                    }
                }
                name @ ("salespulse_source_events_total" | "salespulse_source_errors_total") => {
                    let errors = name == "salespulse_source_errors_total";
                    for metric in family.get_metric() {
                        let Some(source) = metric.get_label().iter().find(|l| l.name() == "source") else { continue };
                        let count = metric.get_counter().get_value() as u64;
                        let entry = match status.sources.iter().position(|(s, _, _)| s == source.value()) {
                            Some(i) => &mut status.sources[i],
                            None => {
                                status.sources.push((source.value().to_owned(), 0, 0));
                                status.sources.last_mut().expect("just pushed")
                            }
                        };
                        if errors {
                            entry.2 += count;
                        } else {
                            entry.1 += count;
                        }
                    }
                }
                _ => {}
            }
        }
        status.sources.sort();
        status
    }

    fn record_age(&self, topic: &str) -> Option<f64> {
        self.record_age_seconds.iter().find(|(t, _)| t == topic).map(|(_, age)| *age)
    }
}

pub(crate) async fn thresholds(State(exporter): State<Arc<Exporter>>) -> Response {
    let values: serde_json::Map<String, Value> =
        exporter.thresholds.iter().map(|(name, value)| (name.clone(), json!(value))).collect();
    json_response(StatusCode::OK, &json!({ "thresholds": values }))
}

fn window_or_default(exporter: &Exporter, asked: Option<String>) -> String {
    asked.unwrap_or_else(|| {
        let windows = &exporter.engine.config().windows;
        match windows.index_of(DEFAULT_WINDOW) {
            Some(_) => DEFAULT_WINDOW.to_owned(),
            // `Windows` is never empty: the daemon refuses a configuration without a window.
            None => windows.specs().first().map(|spec| spec.label.clone()).unwrap_or_default(),
        }
    })
}

fn header_json(view: &TeamView) -> Value {
    json!({
        "at_ms": view.at_ms,
        "window": view.window,
        "windows": view.windows,
        "sparkline": view.sparkline.as_ref().map(sparkline_json),
    })
}

fn sparkline_json(spec: &SparklineSpec) -> Value {
    json!({ "window": spec.window, "bucket_seconds": spec.bucket_ms / 1000, "points": spec.points })
}

fn manager_json(row: &ManagerView) -> Value {
    let anomalies: Vec<Value> = row
        .anomalies
        .iter()
        .map(|a| json!({ "signal": a.signal, "score": a.score, "value": a.value, "baseline": a.baseline }))
        .collect();
    json!({
        "manager": row.manager,
        "team": row.team,
        "last_event_at_ms": row.last_event_ms,
        "calls": row.calls,
        "successful_contacts": row.successful_contacts,
        "missed_calls": row.missed_calls,
        "talk_seconds": row.talk_seconds,
        "messages": row.messages,
        "dialogs_active": row.dialogs_active,
        "clients_waiting": row.clients_waiting,
        "oldest_wait_seconds": row.oldest_wait_seconds,
        "response_p90_seconds": row.response_p90_seconds,
        "tasks_overdue": row.tasks_overdue,
        "tasks_open": row.tasks_open,
        "plan_completion": row.plan_completion,
        "silent": row.silent,
        "calls_unlogged": row.calls_unlogged,
        "anomalies": anomalies,
        "calls_sparkline": row.calls_sparkline,
    })
}

fn ingest_json(view: &IngestView, kafka: &KafkaStatus) -> Value {
    let reasons = |list: &[(&'static str, u64)]| -> HashMap<&'static str, u64> { list.iter().copied().collect() };
    let mut topics: Vec<Value> = view
        .topics
        .iter()
        .map(|topic| {
            let partitions: Vec<Value> = topic
                .partitions
                .iter()
                .map(|p| json!({ "partition": p.partition, "next_offset": p.next_offset }))
                .collect();
            json!({
                "topic": topic.topic,
                "received": topic.received,
                "rejected": reasons(&topic.rejected),
                "partitions": partitions,
                "record_age_seconds": kafka.record_age(&topic.topic),
            })
        })
        .collect();
    // Subscribed topics that sent nothing yet are rows too: a silent source is what an operator
    // looks for.
    for (topic, age) in &kafka.record_age_seconds {
        if !view.topics.iter().any(|t| &t.topic == topic) {
            topics.push(json!({
                "topic": topic,
                "received": 0,
                "rejected": {},
                "partitions": [],
                "record_age_seconds": age,
            }));
        }
    }
    topics.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    let streams: Vec<Value> = view
        .streams
        .iter()
        .map(|s| {
            json!({
                "stream": s.stream,
                "applied": s.applied,
                "late": s.late,
                "last_event_at_ms": s.last_event_ms,
            })
        })
        .collect();
    let recent: Vec<Value> = view
        .recent_rejects
        .iter()
        .map(|r| {
            json!({
                "at_ms": r.at_ms,
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "reason": r.reason,
                "error": r.error,
            })
        })
        .collect();
    json!({
        "at_ms": view.at_ms,
        "topics": topics,
        "streams": streams,
        "rejected": reasons(&view.rejected),
        "duplicates": { "offset": view.duplicate_offsets, "event_id": view.duplicate_event_ids },
        "overflow": view.overflow,
        "managers": view.managers,
        "kafka": { "up": kafka.up, "contact_age_seconds": kafka.contact_age_seconds },
        "sources": kafka
            .sources
            .iter()
            .map(|(source, events, errors)| json!({ "source": source, "events": events, "errors": errors }))
            .collect::<Vec<Value>>(),
        "recent_rejects": recent,
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body.to_string())
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn unknown_window(window: &str) -> Response {
    // The label is echoed only when it is a plausible window label, never arbitrary input.
    let shown = if window.len() <= 16 && window.bytes().all(|b| b.is_ascii_alphanumeric()) { window } else { "?" };
    error(StatusCode::BAD_REQUEST, &format!("unknown window `{shown}`"))
}

fn internal(join: tokio::task::JoinError) -> Response {
    tracing::error!(error = %join, "reading the state for the API failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "reading the state failed")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use prometheus::Registry;
    use salespulse_core::clock::ManualClock;
    use salespulse_core::window::Windows;
    use salespulse_engine::{Engine, EngineConfig, Outcome};
    use salespulse_events::{Call, CallDirection, CallStatus, Event, EventBody};
    use serde_json::Value;

    use crate::{serve, Exporter};

    pub(crate) const T0: i64 = 1_760_000_040_000;

    /// Applies an answered outbound call of 50 s by `manager` of `team`, `ago_ms` before `T0`,
    /// as the record at `offset` of partition 0 of `calls`.
    pub(crate) fn call(engine: &Engine, offset: i64, manager: &str, team: &str, ago_ms: i64) {
        let at = T0 - ago_ms;
        let event = Event {
            event_id: format!("e{offset}"),
            occurred_at_ms: at,
            manager_id: manager.into(),
            team: Some(team.into()),
            source: None,
            body: EventBody::Call(Call {
                call_id: format!("c{offset}"),
                direction: CallDirection::Outbound,
                status: CallStatus::Answered,
                started_at_ms: at - 50_000,
                answered_at_ms: None,
                ended_at_ms: at,
                talk_ms: 50_000,
                client_id: None,
                card_id: None,
            }),
        };
        assert!(matches!(engine.ingest_event("calls", 0, offset, &event), Outcome::Applied(_)));
    }

    /// `(status, content type, body)` of `GET path`.
    fn fetch(base: &str, path: &str) -> (u16, String, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut response = agent.get(&format!("{base}{path}")).call().unwrap();
        let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        let mut body = String::new();
        response.body_mut().as_reader().read_to_string(&mut body).unwrap();
        (response.status().as_u16(), content_type, body)
    }

    #[test]
    fn routes_answer_with_the_documented_shapes_and_errors() {
        let clock = Arc::new(ManualClock::new(T0));
        let registry = Registry::new();
        let config = EngineConfig::new(Windows::parse(&["5m", "1h"]).unwrap());
        let engine = Arc::new(Engine::new(config, clock.clone(), &registry).unwrap());
        call(&engine, 0, "ann", "north", 60_000);
        call(&engine, 1, "ann", "north", 30 * 60_000);
        call(&engine, 2, "bob", "south", 60_000);
        // A source mapping's counters, as salespulse-sources registers them.
        let source_events = prometheus::IntCounterVec::new(
            prometheus::Opts::new("salespulse_source_events_total", "events"),
            &["source", "rule"],
        )
        .unwrap();
        registry.register(Box::new(source_events.clone())).unwrap();
        source_events.with_label_values(&["twilio", "call"]).inc_by(3);
        source_events.with_label_values(&["twilio", "sms"]).inc_by(2);
        source_events.with_label_values(&["amocrm", "lead"]).inc();
        let exporter = Arc::new(Exporter::new(Arc::clone(&engine), registry, Arc::new(|| true)).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(serve(listener, exporter, async {
            let _ = stopped.await;
        }));

        let (status, content_type, body) = fetch(&base, "/api/v1/managers");
        assert_eq!((status, content_type.as_str()), (200, "application/json"));
        let hour: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(hour["window"], "1h");
        assert_eq!(hour["managers"][0]["manager"], "ann");
        assert_eq!(hour["managers"][0]["calls"], 2);
        assert_eq!(hour["managers"][0]["messages"], Value::Null);
        let (_, _, body) = fetch(&base, "/api/v1/managers?window=5m&team=south");
        let five: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(five["managers"].as_array().unwrap().len(), 1);
        assert_eq!(
            (five["managers"][0]["manager"].as_str(), five["managers"][0]["calls"].as_u64()),
            (Some("bob"), Some(1))
        );
        let (status, _, body) = fetch(&base, "/api/v1/managers/ann?window=5m");
        let one: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, one["manager"]["calls"].as_u64()), (200, Some(1)));
        // Errors: JSON bodies, and input is not echoed unless it looks like a window label.
        for (path, expected_status, message) in [
            ("/api/v1/managers?window=2d", 400, "unknown window `2d`"),
            ("/api/v1/managers?window=%3Cscript%3E", 400, "unknown window `?`"),
            ("/api/v1/managers?limit=3", 400, "unknown or malformed query parameter"),
            ("/api/v1/managers/nobody", 404, "no such manager is held"),
            ("/api/v1/managers/ann?window=today", 400, "unknown window `today`"),
        ] {
            let (status, content_type, body) = fetch(&base, path);
            assert_eq!((status, content_type.as_str()), (expected_status, "application/json"), "{path}");
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], message, "{path}");
        }
        let (_, _, body) = fetch(&base, "/api/v1/thresholds");
        let thresholds: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(thresholds["thresholds"]["tasks_overdue"], 5.0);
        let (_, _, body) = fetch(&base, "/api/v1/ingest");
        let ingest: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ingest["streams"][0]["applied"], 3);
        assert_eq!(ingest["kafka"]["up"], Value::Null, "no Kafka client registered its gauges");
        assert_eq!(
            ingest["sources"],
            serde_json::json!([
                {"source": "amocrm", "events": 1, "errors": 0},
                {"source": "twilio", "events": 5, "errors": 0}
            ])
        );

        // The page and its assets come from the binary.
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/assets/app.js", "text/javascript; charset=utf-8"),
            ("/assets/app.css", "text/css; charset=utf-8"),
        ] {
            let (status, got, body) = fetch(&base, path);
            assert_eq!((status, got.as_str()), (200, content_type), "{path}");
            assert!(!body.is_empty());
        }
        let _ = stop.send(());
        runtime.block_on(server).unwrap().unwrap();
    }

    #[test]
    fn the_page_loads_nothing_from_outside() {
        for (name, text) in [("index.html", super::INDEX_HTML), ("app.js", super::APP_JS), ("app.css", super::APP_CSS)]
        {
            // The only absolute URL is the SVG namespace, which is a name, not a request.
            let outside = text.matches("://").count() - text.matches("http://www.w3.org/2000/svg").count();
            assert_eq!(outside, 0, "{name} refers to an outside URL");
            assert!(!text.contains("src=\"//") && !text.contains("href=\"//"), "{name}");
        }
        for asset in ["assets/app.js", "assets/app.css"] {
            assert!(super::INDEX_HTML.contains(asset), "{asset} is referenced");
        }
    }
}
