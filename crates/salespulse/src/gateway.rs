//! `salespulse gateway`: receives vendors' webhooks at `/hooks/<source>`, checks the source's
//! token or signature, and writes the raw body to the source's Kafka topic, answering only once
//! the brokers acknowledged it. The daemon maps the topic like any other (docs/sources/gateway.md).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry};
use salespulse_kafka::RawProducer;
use salespulse_sources::{twilio_signature, verify_token, Auth, Source, Sources, TokenLocation};

use crate::config::{GatewaySection, Settings};

/// The request outcomes counted by `salespulse_gateway_requests_total{outcome}`.
const OUTCOMES: [&str; 6] = ["accepted", "unauthorized", "rate_limited", "too_large", "unknown_source", "kafka_error"];

/// Headers never copied to Kafka: they carry credentials.
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

struct Hook {
    source: Arc<Source>,
    topic: String,
    /// The secret of the source's `[auth]`, read from its environment variable at start-up.
    secret: Option<String>,
    bucket: Mutex<Bucket>,
    counters: HashMap<&'static str, IntCounter>,
}

/// A token bucket: `rate` tokens a second up to `burst`.
struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Gateway {
    hooks: HashMap<String, Hook>,
    producer: RawProducer,
    config: GatewaySection,
    registry: Registry,
    unknown: IntCounter,
}

/// Runs the gateway until `shutdown` completes.
pub async fn run(
    settings: Settings,
    gateway: GatewaySection,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Some(sources_settings) = &settings.sources else {
        bail!("the gateway needs a [sources] section and topics with a `mapping`");
    };
    let sources = Sources::load(&sources_settings.dir, sources_settings.directory.as_deref())?;
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new("salespulse_gateway_requests_total", "Webhook requests by source and outcome."),
        &["source", "outcome"],
    )?;
    registry.register(Box::new(requests.clone()))?;
    let mut hooks = HashMap::new();
    for (topic, name) in &sources_settings.topics {
        let Some(source) = sources.get(name) else {
            bail!("topic {topic:?} names mapping {name:?}, which is not in {}", sources_settings.dir.display());
        };
        let secret = match source.auth() {
            Some(auth) => Some(
                std::env::var(auth.secret_env())
                    .with_context(|| format!("source {name}: the secret variable {} is not set", auth.secret_env()))?,
            ),
            None => None,
        };
        if matches!(source.auth(), Some(Auth::TwilioSignature { .. })) && gateway.public_url.is_none() {
            bail!("source {name} checks signatures over the public URL: set [gateway] public_url");
        }
        let counters = OUTCOMES.iter().map(|o| (*o, requests.with_label_values(&[name.as_str(), o]))).collect();
        let bucket = Mutex::new(Bucket { tokens: f64::from(gateway.rate_limit_burst), last: Instant::now() });
        let hook = Hook { source: Arc::clone(source), topic: topic.clone(), secret, bucket, counters };
        if hooks.insert(name.clone(), hook).is_some() {
            bail!("source {name} is mapped by two topics: the gateway would not know where to write");
        }
    }
    let unknown = requests.with_label_values(&["", "unknown_source"]);
    let producer = RawProducer::new(&settings.ingest.bootstrap_servers, &Default::default(), gateway.produce_timeout)?;
    let listener =
        tokio::net::TcpListener::bind(gateway.listen).await.with_context(|| format!("binding {}", gateway.listen))?;
    let address = listener.local_addr()?;
    let names: Vec<&String> = hooks.keys().collect();
    tracing::info!(sources = ?names, "salespulse gateway listening on http://{address}/hooks/<source>");
    let state = Arc::new(Gateway { hooks, producer, config: gateway, registry, unknown });
    let app = Router::new()
        .route("/hooks/{source}", post(hook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("serving the gateway")?;
    tracing::info!("gateway stopped");
    Ok(())
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let mut out = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&gateway.registry.gather(), &mut out);
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

fn answer(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

async fn hook(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(hook) = gateway.hooks.get(&name) else {
        gateway.unknown.inc();
        return answer(StatusCode::NOT_FOUND, "unknown source\n");
    };
    let count = |outcome: &str| {
        if let Some(counter) = hook.counters.get(outcome) {
            counter.inc();
        }
    };
    if !hook.take_token(&gateway.config) {
        count("rate_limited");
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "rate limited\n").into_response();
    }
    let body = match axum::body::to_bytes(body, gateway.config.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            count("too_large");
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
    };
    if !authorized(hook, &gateway.config, &name, query.as_deref(), &headers, &body) {
        count("unauthorized");
        return answer(StatusCode::UNAUTHORIZED, "unauthorized\n");
    }
    let received_at = crate::gateway::now_ms().to_string();
    let mut kafka_headers: Vec<(String, Vec<u8>)> = vec![
        ("salespulse-source".into(), name.clone().into_bytes()),
        ("salespulse-received-at".into(), received_at.into_bytes()),
    ];
    let token_header = match hook.source.auth() {
        Some(Auth::Token { location: TokenLocation::Header(h), .. }) => Some(h.to_ascii_lowercase()),
        _ => None,
    };
    for (header, value) in &headers {
        let header = header.as_str();
        if SECRET_HEADERS.contains(&header) || token_header.as_deref() == Some(header) {
            continue;
        }
        // The content type keeps its usual name; the vendor's other headers are prefixed.
        let key = if header == "content-type" { header.to_owned() } else { format!("http-{header}") };
        kafka_headers.push((key, value.as_bytes().to_vec()));
    }
    let borrowed: Vec<(&str, &[u8])> = kafka_headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    // A retry of the same body lands in the same partition, where the daemon's event-id ledger
    // drops it.
    let key = body_key(&body);
    match gateway.producer.send(&hook.topic, key.as_bytes(), &body, &borrowed).await {
        Ok(_) => {
            count("accepted");
            let status = StatusCode::from_u16(hook.source.accept_status()).unwrap_or(StatusCode::ACCEPTED);
            answer(status, "accepted\n")
        }
        Err(error) => {
            count("kafka_error");
            tracing::warn!(source = name, %error, "could not write a webhook to Kafka; answered 503");
            answer(StatusCode::SERVICE_UNAVAILABLE, "try again later\n")
        }
    }
}

impl Hook {
    fn take_token(&self, config: &GatewaySection) -> bool {
        let mut bucket = self.bucket.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens =
            (bucket.tokens + elapsed * config.rate_limit_per_second).min(f64::from(config.rate_limit_burst));
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn authorized(
    hook: &Hook,
    config: &GatewaySection,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> bool {
    let (Some(auth), Some(secret)) = (hook.source.auth(), hook.secret.as_deref()) else {
        return true;
    };
    match auth {
        Auth::Token { location, .. } => {
            let presented: Option<String> = match location {
                TokenLocation::Header(h) => headers.get(h.as_str()).and_then(|v| v.to_str().ok()).map(str::to_owned),
                TokenLocation::Query(q) => form_value(query.unwrap_or("").as_bytes(), q),
                TokenLocation::FormField(f) => form_value(body, f),
            };
            presented.is_some_and(|p| verify_token(secret, &p))
        }
        Auth::TwilioSignature { .. } => {
            let Some(signature) = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let base = config.public_url.as_deref().unwrap_or("").trim_end_matches('/');
            let mut url = format!("{base}/hooks/{name}");
            if let Some(query) = query {
                url.push('?');
                url.push_str(query);
            }
            let params: Vec<(String, String)> =
                form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            verify_token(&twilio_signature(secret, &url, &params), signature)
        }
    }
}

fn form_value(encoded: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(encoded).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn body_key(body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_refill_at_the_rate_and_cap_at_the_burst() {
        let config = GatewaySection { rate_limit_per_second: 10.0, rate_limit_burst: 3, ..GatewaySection::default() };
        let source = Source::compile(
            "source = \"s\"\ndecoder = \"json\"\n[[rules]]\nname = \"r\"\nkind = \"call\"\nfields.event_id = \"$.a\"\nfields.occurred_at = \"1\"\nfields.manager_id = \"'m'\"\n",
            Default::default(),
        )
        .unwrap();
        let start = Instant::now();
        let hook = Hook {
            source: Arc::new(source),
            topic: "t".into(),
            secret: None,
            bucket: Mutex::new(Bucket { tokens: 3.0, last: start }),
            counters: HashMap::new(),
        };
        let taken = (0..10).filter(|_| hook.take_token(&config)).count();
        assert!((3..=4).contains(&taken), "{taken}");
        // A second later the bucket is full again, never fuller than the burst.
        hook.bucket.lock().last = Instant::now() - Duration::from_secs(1);
        let taken = (0..10).filter(|_| hook.take_token(&config)).count();
        assert_eq!(taken, 3);
    }
}
