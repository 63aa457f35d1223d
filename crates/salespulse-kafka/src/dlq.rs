//! The dead-letter topic: records the engine rejected (or could not apply) are produced, with
//! their original key, payload and headers, to a configured topic, with headers naming why.
//!
//! The producer never stalls ingest: [`DeadLetters::route`] only queues (librdkafka's bounded
//! in-memory queue, `queue_capacity` records); librdkafka retries in the background until
//! `delivery_timeout`. A record that cannot be queued (queue full, a record over the producer's
//! size limit) is dropped; one that is not acknowledged within the timeout (broker down, topic
//! missing, refused by ACLs) has failed. Both are counted (`salespulse_dlq_dropped_total`,
//! `salespulse_dlq_failed_total`) and logged at a rate limit. Delivery is therefore at most
//! once: the source offset is committed whether or not its dead letter arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use salespulse_engine::Outcome;

use crate::consumer::Ingest;
use crate::properties::{producer_properties, KafkaProperties};
use crate::{kafka_error, Error};

/// Header: the `reason` label of the rejection (`malformed_json`, `manager_overflow`, ...).
pub const HEADER_REASON: &str = "salespulse.error.reason";
/// Header: the error's text (it names fields, never echoes their values).
pub const HEADER_ERROR: &str = "salespulse.error.message";
/// Header: the topic the record was consumed from.
pub const HEADER_TOPIC: &str = "salespulse.source.topic";
/// Header: its partition, decimal.
pub const HEADER_PARTITION: &str = "salespulse.source.partition";
/// Header: its offset, decimal.
pub const HEADER_OFFSET: &str = "salespulse.source.offset";
/// Header: its Kafka timestamp, epoch milliseconds, decimal (absent when the record had none).
pub const HEADER_TIMESTAMP: &str = "salespulse.source.timestamp";

/// The reason sent for a valid event of a new manager dropped at the manager cap.
pub const OVERFLOW_REASON: &str = "manager_overflow";

/// Where and how dead letters are produced.
#[derive(Debug, Clone)]
pub struct DeadLetterConfig {
    /// `bootstrap.servers` (normally the consumer's).
    pub bootstrap_servers: String,
    /// The dead-letter topic.
    pub topic: String,
    /// Records held in memory waiting for delivery; beyond it, new dead letters are dropped.
    pub queue_capacity: usize,
    /// How long librdkafka retries one record before it counts as failed.
    pub delivery_timeout: Duration,
    /// Further librdkafka properties (security settings shared with the consumer, then the
    /// dead-letter section's own); consumer-only keys are left out.
    pub properties: KafkaProperties,
}

impl DeadLetterConfig {
    /// The defaults for `topic` on `bootstrap_servers`.
    pub fn new(bootstrap_servers: &str, topic: &str) -> DeadLetterConfig {
        DeadLetterConfig {
            bootstrap_servers: bootstrap_servers.to_owned(),
            topic: topic.to_owned(),
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            delivery_timeout: Self::DEFAULT_DELIVERY_TIMEOUT,
            properties: KafkaProperties::default(),
        }
    }

    /// The default of [`DeadLetterConfig::queue_capacity`].
    pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
    /// The default of [`DeadLetterConfig::delivery_timeout`].
    pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
}

/// One record for the dead-letter topic, borrowed from the consumed record.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Source Kafka timestamp, epoch milliseconds.
    pub timestamp_ms: Option<i64>,
    /// The original key.
    pub key: Option<&'a [u8]>,
    /// The original payload (`None`: a tombstone).
    pub payload: Option<&'a [u8]>,
    /// The `reason` label.
    pub reason: &'a str,
    /// The error text.
    pub error: &'a str,
}

/// The dead-letter producer and its counters.
pub struct DeadLetters {
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
    dropped: IntCounterVec,
    log: RateLimit,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").field("topic", &self.topic).finish_non_exhaustive()
    }
}

/// Where a record came from and what it held: the part of a dead letter the record gives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
}

impl<'a> Source<'a> {
    /// Where `message` came from and what it held.
    pub(crate) fn of<M: Message>(message: &'a M) -> Source<'a> {
        Source {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key(),
            payload: message.payload(),
        }
    }
}

/// Why a dead letter was not even queued.
const DROP_REASONS: [&str; 3] = ["queue_full", "too_large", "error"];

impl DeadLetters {
    /// Creates the producer (it connects lazily) and registers `salespulse_dlq_*` in `registry`.
    pub fn new(config: &DeadLetterConfig, registry: &Registry) -> Result<DeadLetters, Error> {
        let produced = IntCounter::new(
            "salespulse_dlq_produced_total",
            "Records written to the dead-letter topic (acknowledged).",
        )?;
        let failed = IntCounter::new(
            "salespulse_dlq_failed_total",
            "Dead letters lost: not acknowledged by the broker within the delivery timeout, or refused.",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "salespulse_dlq_dropped_total",
                "Dead letters not queued for delivery (queue full, over the size limit), by reason.",
            ),
            &["reason"],
        )?;
        for reason in DROP_REASONS {
            dropped.with_label_values(&[reason]);
        }
        registry.register(Box::new(produced.clone()))?;
        registry.register(Box::new(failed.clone()))?;
        registry.register(Box::new(dropped.clone()))?;

        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("client.id", "salespulse-dlq")
            .set("acks", "all")
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", config.queue_capacity.max(1).to_string())
            .set("message.timeout.ms", config.delivery_timeout.as_millis().max(1).to_string())
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in producer_properties(&config.properties) {
            client.set(key, value);
        }
        let context = DeliveryCounter { produced, failed, log: RateLimit::new(Duration::from_secs(10)) };
        let producer: ThreadedProducer<DeliveryCounter> =
            client.create_with_context(context).map_err(kafka_error("creating the dead-letter producer"))?;
        Ok(DeadLetters { producer, topic: config.topic.clone(), dropped, log: RateLimit::new(Duration::from_secs(10)) })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends `message` to the dead-letter topic when `outcome` says it was not applied because
    /// of its content: a rejection, or a new manager over the cap. Applied, duplicate and late
    /// records are not dead letters, nor is a mapped record (its mapping errors are rejections).
    /// Never blocks.
    pub fn route(&self, message: &BorrowedMessage<'_>, outcome: &Outcome) {
        self.route_source(&Source::of(message), message.headers(), outcome);
    }

    /// [`DeadLetters::route`] for a record read from wherever it was copied to.
    pub(crate) fn route_source<H: Headers>(&self, source: &Source<'_>, headers: Option<&H>, outcome: &Outcome) {
        let (reason, error) = match outcome {
            Outcome::Rejected(rejection) => (rejection.reason(), rejection.to_string()),
            Outcome::Overflow => (OVERFLOW_REASON, "the manager cap is reached and the manager is new".to_owned()),
            Outcome::Applied(_) | Outcome::Duplicate(_) | Outcome::Late(_) | Outcome::Mapped { .. } => return,
            #[allow(unreachable_patterns)]
            _ => return,
        };
        let letter = DeadLetter {
            topic: source.topic,
            partition: source.partition,
            offset: source.offset,
            timestamp_ms: source.timestamp_ms,
            key: source.key,
            payload: source.payload,
            reason,
            error: &error,
        };
        self.send(&letter, headers);
    }

    /// Queues one dead letter; `original` headers are copied before the `salespulse.*` ones.
    /// Never blocks: a full queue drops the letter (counted, logged at a rate limit).
    pub fn send<H: Headers>(&self, letter: &DeadLetter<'_>, original: Option<&H>) {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let timestamp = letter.timestamp_ms.map(|ms| ms.to_string());
        let mut headers = OwnedHeaders::new();
        if let Some(original) = original {
            for header in original.iter() {
                if !header.key.starts_with("salespulse.") {
                    headers = headers.insert(header);
                }
            }
        }
        headers = headers
            .insert(Header { key: HEADER_REASON, value: Some(letter.reason) })
            .insert(Header { key: HEADER_ERROR, value: Some(letter.error) })
            .insert(Header { key: HEADER_TOPIC, value: Some(letter.topic) })
            .insert(Header { key: HEADER_PARTITION, value: Some(&partition) })
            .insert(Header { key: HEADER_OFFSET, value: Some(&offset) });
        if let Some(timestamp) = &timestamp {
            headers = headers.insert(Header { key: HEADER_TIMESTAMP, value: Some(timestamp) });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if let Some(payload) = letter.payload {
            record = record.payload(payload);
        }
        if let Err((error, _)) = self.producer.send(record) {
            use rdkafka::types::RDKafkaErrorCode;
            let reason = match error.rdkafka_error_code() {
                Some(RDKafkaErrorCode::QueueFull) => "queue_full",
                Some(RDKafkaErrorCode::MessageSizeTooLarge) => "too_large",
                _ => "error",
            };
            self.dropped.with_label_values(&[reason]).inc();
            if let Some(suppressed) = self.log.check() {
                tracing::warn!(
                    %error,
                    reason,
                    source_topic = letter.topic,
                    partition = letter.partition,
                    offset = letter.offset,
                    suppressed,
                    "dead letter dropped: it could not be queued"
                );
            }
        }
    }

    /// Waits at most `timeout` for queued dead letters to be delivered (on stop).
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            let pending = self.producer.in_flight_count();
            tracing::warn!(%error, pending, "dead letters still queued at stop are lost");
        }
    }
}

impl Ingest {
    /// Sends what this consumer rejects to `dead_letters` (see [`DeadLetters::route`]).
    pub fn with_dead_letters(mut self, dead_letters: DeadLetters) -> Ingest {
        self.dead_letters = Some(dead_letters);
        self
    }
}

/// Counts deliveries on librdkafka's background thread.
struct DeliveryCounter {
    produced: IntCounter,
    failed: IntCounter,
    log: RateLimit,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => self.produced.inc(),
            Err((error, message)) => {
                self.failed.inc();
                if let Some(suppressed) = self.log.check() {
                    tracing::warn!(
                        %error,
                        topic = message.topic(),
                        suppressed,
                        "dead letter lost: not delivered within the delivery timeout"
                    );
                }
            }
        }
    }
}

/// One log line per interval, with the number suppressed since the last one.
struct RateLimit {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimit {
    fn new(interval: Duration) -> RateLimit {
        RateLimit { interval, last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock();
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter<'a>(payload: &'a [u8]) -> DeadLetter<'a> {
        DeadLetter {
            topic: "calls",
            partition: 0,
            offset: 7,
            timestamp_ms: Some(1),
            key: Some(b"m-1"),
            payload: Some(payload),
            reason: "malformed_json",
            error: "malformed JSON: x",
        }
    }

    fn counter(registry: &Registry, name: &str, reason: Option<&str>) -> f64 {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().to_vec())
            .filter(|metric| reason.is_none_or(|r| metric.get_label().iter().any(|l| l.value() == r)))
            .map(|metric| metric.get_counter().get_value())
            .sum()
    }

    /// An unreachable broker: sends never block, the bounded queue drops the excess (counted), and
    /// what was queued fails after the delivery timeout (counted), all without a broker.
    #[test]
    fn an_unreachable_broker_never_blocks_and_everything_is_counted() {
        let registry = Registry::new();
        let mut config = DeadLetterConfig::new("127.0.0.1:1", "dead");
        config.queue_capacity = 10;
        config.delivery_timeout = Duration::from_millis(500);
        let dead_letters = DeadLetters::new(&config, &registry).unwrap();
        let started = Instant::now();
        for _ in 0..1_000 {
            dead_letters.send::<OwnedHeaders>(&letter(b"{"), None);
        }
        // A thousand sends against a dead broker are queue operations, not network round trips.
        assert!(started.elapsed() < Duration::from_secs(5), "sending took {:?}", started.elapsed());
        let dropped = counter(&registry, "salespulse_dlq_dropped_total", Some("queue_full"));
        assert_eq!(dropped, 990.0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while counter(&registry, "salespulse_dlq_failed_total", None) < 10.0 {
            assert!(Instant::now() < deadline, "queued letters never failed");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(counter(&registry, "salespulse_dlq_produced_total", None), 0.0);
        assert_eq!(counter(&registry, "salespulse_dlq_failed_total", None), 10.0);
        dead_letters.flush(Duration::from_millis(10));
    }
}
