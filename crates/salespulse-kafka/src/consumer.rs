//! The consumer-group member.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge, Registry};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, TopicPartitionList};
use salespulse_engine::{Engine, Record};

use crate::{kafka_error, Error};

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `group.id`: replicas in one group split the partitions.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Further librdkafka properties, passed through as they are (they override the defaults).
    pub properties: BTreeMap<String, String>,
}

/// What the HTTP side reports about ingest (`/readyz`).
#[derive(Debug, Default)]
pub struct Health {
    joined: AtomicBool,
    assigned: AtomicU64,
}

impl Health {
    /// Whether the consumer has joined its group and received an assignment.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// Partitions assigned now.
    pub fn assigned(&self) -> u64 {
        self.assigned.load(Ordering::Relaxed)
    }
}

struct IngestContext {
    health: Arc<Health>,
    assigned: IntGauge,
    errors: IntCounter,
    rebalances: IntCounter,
}

impl ClientContext for IngestContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.errors.inc();
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for IngestContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.inc();
        match rebalance {
            Rebalance::Assign(partitions) => {
                let count = partitions.count() as u64;
                self.health.assigned.store(count, Ordering::Relaxed);
                self.health.joined.store(true, Ordering::Relaxed);
                self.assigned.set(count as i64);
                tracing::info!(partitions = count, "partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                self.health.assigned.store(0, Ordering::Relaxed);
                self.assigned.set(0);
                tracing::info!(partitions = partitions.count(), "partitions revoked");
            }
            Rebalance::Error(error) => {
                self.errors.inc();
                tracing::warn!(%error, "rebalance failed");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            // No offsets to commit is not a failure worth reporting.
            if !matches!(error, rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset))
            {
                self.errors.inc();
                tracing::warn!(%error, "offset commit failed");
            }
        }
    }
}

/// A subscribed consumer bound to an engine.
pub struct Ingest {
    consumer: BaseConsumer<IngestContext>,
    engine: Arc<Engine>,
    poll_errors: IntCounter,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").finish_non_exhaustive()
    }
}

impl Ingest {
    /// Creates the consumer and subscribes; nothing is consumed before [`Ingest::run`].
    pub fn new(
        config: &IngestConfig,
        engine: Arc<Engine>,
        health: Arc<Health>,
        registry: &Registry,
    ) -> Result<Ingest, Error> {
        let assigned = IntGauge::new("salespulse_kafka_assigned_partitions", "Partitions assigned to this replica.")?;
        let errors = IntCounter::new(
            "salespulse_kafka_errors_total",
            "Errors reported by the Kafka client (connection, commit, rebalance).",
        )?;
        let rebalances =
            IntCounter::new("salespulse_kafka_rebalances_total", "Rebalance events (assignments and revocations).")?;
        let poll_errors =
            IntCounter::new("salespulse_kafka_poll_errors_total", "Errors returned while polling for records.")?;
        registry.register(Box::new(assigned.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(rebalances.clone()))?;
        registry.register(Box::new(poll_errors.clone()))?;
        let context = IngestContext { health, assigned, errors, rebalances };

        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "true")
            // Offsets are stored by hand, after the engine has applied the record.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("client.id", "salespulse")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        let consumer: BaseConsumer<IngestContext> =
            client.create_with_context(context).map_err(kafka_error("creating the consumer"))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(kafka_error("subscribing"))?;
        Ok(Ingest { consumer, engine, poll_errors })
    }

    /// Consumes until `stop` is set, then commits what was applied. Blocking: run it on its own
    /// thread. Returns after the final commit; closing the consumer is left to drop.
    pub fn run(&self, stop: &AtomicBool) {
        let mut last_error_log: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let Some(result) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = match result {
                Ok(message) => message,
                Err(error) => {
                    self.poll_errors.inc();
                    if last_error_log.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        last_error_log = Some(Instant::now());
                        tracing::warn!(%error, "kafka poll error");
                    }
                    continue;
                }
            };
            let content_type = message.headers().and_then(|headers| {
                headers.iter().find(|h| h.key.eq_ignore_ascii_case("content-type")).and_then(|h| h.value)
            });
            let record = Record {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                content_type,
                payload: message.payload(),
            };
            self.engine.ingest(&record);
            if let Err(error) = self.consumer.store_offset_from_message(&message) {
                // The partition was revoked meanwhile: its new owner re-reads from the last commit.
                tracing::debug!(%error, "could not store offset");
            }
        }
        self.commit_final();
    }

    fn commit_final(&self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("final offsets committed"),
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "final commit failed; the next start re-reads from the last commit"),
        }
    }
}
