//! The consumer-group member.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge, Registry};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, TopicPartitionList};
use salespulse_engine::{Cursor, Engine, RateLimited, Record};

use crate::dlq::{DeadLetters, Source};
use crate::pipeline::{Batch, Dispatcher};
use crate::properties::KafkaProperties;
use crate::rebuild::{Rebuilds, Replay};
use crate::status::{Health, Liveness, LivenessCollector};
use crate::{kafka_error, Error};

/// How often a rebuilding consumer compares its positions with the committed offsets (for
/// partitions whose last records before the committed offset hold no record to see).
const POSITION_CHECK_EVERY: Duration = Duration::from_millis(250);

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
    pub properties: KafkaProperties,
    /// Threads that decode and apply records, partition `p` of every topic on thread
    /// `p % apply_threads`; the polling thread only copies records to them. 1 applies on the
    /// polling thread itself (no copy, no hand-over); 0 means one per available core.
    pub apply_threads: usize,
    /// Niceness added to the apply threads (Linux), so that scrapes, polling and librdkafka go
    /// first on busy cores; 0 leaves them as they are. Not applied with one apply thread (the
    /// polling thread applies then).
    pub apply_nice: i32,
}

/// The default of [`IngestConfig::apply_nice`]. Measured on the `make bench` 10k-manager topic
/// (6M events, a full scrape every second while ingesting, four interleaved rounds): scrape p99
/// 333-397 ms against 432-673 ms at 0, events/s no lower; 10 and 19 bought nothing more
/// (docs/performance.md, sixth session).
pub const DEFAULT_APPLY_NICE: i32 = 5;

impl IngestConfig {
    /// The apply threads to run: `apply_threads`, or one per available core when it is 0.
    pub fn apply_threads(&self) -> usize {
        match self.apply_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            threads => threads,
        }
    }
}

struct IngestContext {
    engine: Arc<Engine>,
    health: Arc<Health>,
    liveness: Arc<Liveness>,
    rebuilds: Rebuilds,
    /// librdkafka reports every failed reconnect: one line per interval while a broker is away.
    error_log: RateLimited,
    /// Commits fail once per partition and interval while the coordinator is away.
    commit_log: RateLimited,
    assigned: IntGauge,
    errors: IntCounter,
    rebalances: IntCounter,
    /// The apply threads' hand-over, while they run: a rebalance waits for them to apply what
    /// was polled before it drops or rebuilds state.
    pipeline: Mutex<Option<Arc<Dispatcher>>>,
}

impl IngestContext {
    /// Returns once every record polled so far is applied and its offset stored.
    fn quiesce(&self) {
        let pipeline = self.pipeline.lock().clone();
        if let Some(pipeline) = pipeline {
            pipeline.quiesce();
        }
    }
}

impl ClientContext for IngestContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.errors.inc();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.liveness.set_up(false);
        }
        if let Some(suppressed) = self.error_log.check() {
            tracing::warn!(%error, reason, suppressed, "kafka client error");
        }
    }

    /// librdkafka's statistics (every `statistics.interval.ms`) say which broker connections are
    /// up: the source of `salespulse_kafka_up`.
    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|broker| broker.state == "UP");
        self.liveness.set_up(up);
    }
}

impl ConsumerContext for IngestContext {
    /// Assignment with rebuild: before partitions are assigned, their groups' state is dropped
    /// and their start offsets are set to replay the history within the rebuild horizon
    /// (`rebuild::Rebuilds::plan`); revoked partitions drop their groups' state.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        self.rebalances.inc();
        // Records polled before the rebalance are applied (and their offsets stored, for the
        // commit on revoke) before any state is dropped or rebuilt.
        self.quiesce();
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.rebuilds.plan(consumer, &self.engine, tpl);
                let result = if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) };
                tracing::info!(partitions = tpl.count(), rebuilding = self.health.rebuilding(), "partitions assigned");
                result
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // librdkafka commits the stored offsets on revoke (auto commit). A lost assignment
                // (the session expired, typically while the broker is away) keeps its state
                // until the next assignment, so /metrics keeps serving the windows meanwhile.
                let lost = consumer.assignment_lost();
                self.rebuilds.revoke(&self.engine, tpl, lost);
                tracing::info!(partitions = tpl.count(), lost, "partitions revoked");
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                self.errors.inc();
                tracing::warn!(error = ?RDKafkaErrorCode::from(other), "rebalance failed; dropping the assignment");
                if let Ok(current) = consumer.assignment() {
                    self.rebuilds.revoke(&self.engine, &current, false);
                }
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            self.errors.inc();
            tracing::warn!(%error, "applying the rebalance failed");
        }
        let count = consumer.assignment().map_or(0, |a| a.count()) as u64;
        self.health.assigned.store(count, Ordering::Relaxed);
        self.assigned.set(count as i64);
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            self.health.joined.store(true, Ordering::Relaxed);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            // No offsets to commit is not a failure worth reporting.
            if !matches!(error, rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                self.errors.inc();
                if let Some(suppressed) = self.commit_log.check() {
                    tracing::warn!(%error, suppressed, "offset commit failed");
                }
            }
        }
    }
}

/// A subscribed consumer bound to an engine.
pub struct Ingest {
    consumer: BaseConsumer<IngestContext>,
    engine: Arc<Engine>,
    poll_errors: IntCounter,
    liveness: Arc<Liveness>,
    /// Where rejected records go, when a dead-letter topic is configured.
    pub(crate) dead_letters: Option<DeadLetters>,
    apply_threads: usize,
    apply_nice: i32,
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
        let liveness = Arc::new(Liveness::new(&config.topics));
        LivenessCollector::register(Arc::clone(&liveness), registry)?;
        let rebuilds = Rebuilds::new(engine.rebuild_horizon_ms(), Arc::clone(&health), registry)?;
        let context = IngestContext {
            engine: Arc::clone(&engine),
            health,
            liveness: Arc::clone(&liveness),
            rebuilds,
            error_log: RateLimited::new(Duration::from_secs(10)),
            commit_log: RateLimited::new(Duration::from_secs(10)),
            assigned,
            errors,
            rebalances,
            pipeline: Mutex::new(None),
        };

        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "true")
            // Offsets are stored by hand, after the engine has applied the record.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("client.id", "salespulse")
            // Partition p of every topic must go to one replica (a partition group shares one
            // manager map): the range assignor does that when the topics have equal partition
            // counts.
            .set("partition.assignment.strategy", "range")
            // The statistics tell whether a broker connection is up (`salespulse_kafka_up`).
            .set("statistics.interval.ms", "1000")
            // Keep the local fetch queue full while a backlog is applied (catch-up, rebuild).
            // librdkafka's default pauses a partition's fetching for a whole second once the
            // queue is full, and ingest then idles on an empty queue: measured on the `make bench`
            // topic (2M protobuf events, 8 partitions), 121k events/s with the default, 207-237k
            // with 10 ms. Raising the queue's bound to a million records bought nothing more and
            // cost 250 MiB of RSS.
            .set("fetch.queue.backoff.ms", "10")
            // The local queue is bounded by records and by fetch size. With librdkafka's defaults
            // (100,000 records per partition, 1 MiB per partition and fetch) queued fetch ops and
            // the fetch buffers they pin were about 64 MB at the peak (heaptrack), a third of all
            // the heap at 1k managers. 5,000 records and 256 KiB per partition and fetch keep
            // about 4 MB queued: peak RSS 86-88 against 114-117 MiB at 1k managers, 212-214
            // against 232-244 MiB at 10k, for about 5 % fewer events/s on the `make bench` topic
            // (docs/performance.md, sixth session).
            .set("queued.min.messages", "5000")
            .set("fetch.message.max.bytes", "262144")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in config.properties.iter() {
            client.set(key, value);
        }
        let consumer: BaseConsumer<IngestContext> =
            client.create_with_context(context).map_err(kafka_error("creating the consumer"))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(kafka_error("subscribing"))?;
        let apply_threads = config.apply_threads();
        let apply_nice = config.apply_nice;
        Ok(Ingest { consumer, engine, poll_errors, liveness, dead_letters: None, apply_threads, apply_nice })
    }

    /// Consumes until `stop` is set, then commits what was applied. Blocking: run it on its own
    /// thread (it starts the apply threads, if more than one, and joins them before it returns).
    /// Returns after the final commit; closing the consumer is left to drop.
    pub fn run(&self, stop: &AtomicBool) {
        if self.apply_threads <= 1 {
            self.poll_loop(stop, None);
        } else {
            let (dispatcher, workers) = Dispatcher::new(self.apply_threads);
            let dispatcher = Arc::new(dispatcher);
            *self.consumer.context().pipeline.lock() = Some(Arc::clone(&dispatcher));
            std::thread::scope(|scope| {
                for (index, worker) in workers.into_iter().enumerate() {
                    let dispatcher = &dispatcher;
                    let spawned =
                        std::thread::Builder::new().name(format!("apply-{index}")).spawn_scoped(scope, move || {
                            lower_thread_priority(self.apply_nice);
                            dispatcher.work(worker, |batch| self.apply_batch(batch))
                        });
                    if let Err(error) = spawned {
                        // Its lane's records then wait forever: better to stop than to stall.
                        tracing::error!(%error, "could not start an apply thread; ingest stops");
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                self.poll_loop(stop, Some(&dispatcher));
                dispatcher.close();
            });
            *self.consumer.context().pipeline.lock() = None;
        }
        self.commit_final();
        if let Some(dead_letters) = &self.dead_letters {
            dead_letters.flush(Duration::from_secs(5));
        }
    }

    /// Polls until `stop` is set; applies each record here, or hands it to `pipeline`.
    fn poll_loop(&self, stop: &AtomicBool, pipeline: Option<&Dispatcher>) {
        let mut last_error_log: Option<Instant> = None;
        let mut last_position_check = Instant::now();
        let context = self.consumer.context();
        // Records handed to the pipeline's partly filled batches since the last flush.
        let mut unflushed = false;
        while !stop.load(Ordering::Relaxed) {
            if context.rebuilds.active() && last_position_check.elapsed() >= POSITION_CHECK_EVERY {
                last_position_check = Instant::now();
                if let Ok(positions) = self.consumer.position() {
                    if context.rebuilds.any_reached(&positions) {
                        // Caught up only once what was polled up to the position is applied.
                        context.quiesce();
                        context.rebuilds.check_positions(&positions);
                    }
                }
            }
            // With records waiting in partly filled batches, look for more without waiting, and
            // hand the batches over as soon as there is nothing more to read.
            let timeout = if unflushed { Duration::ZERO } else { Duration::from_millis(100) };
            let Some(result) = self.consumer.poll(timeout) else {
                if let Some(pipeline) = pipeline.filter(|_| unflushed) {
                    pipeline.flush();
                    unflushed = false;
                }
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
            let topic = message.topic();
            self.liveness.record(topic);
            if let Some(pipeline) = pipeline {
                pipeline.push(&message, topic);
                unflushed = true;
                continue;
            }
            let content_type = message.headers().and_then(|headers| {
                headers.iter().find(|h| h.key.eq_ignore_ascii_case("content-type")).and_then(|h| h.value)
            });
            if self.settle(&mut self.engine.cursor(), &Source::of(&message), content_type, message.headers()) {
                if let Err(error) = self.consumer.store_offset_from_message(&message) {
                    // The partition was revoked meanwhile: its new owner re-reads from the last
                    // commit.
                    tracing::debug!(%error, "could not store offset");
                }
            }
        }
    }

    /// Applies one record and, unless it is replayed, sends it to the dead-letter topic if it
    /// was not applied for its content. Returns whether its offset is to be stored.
    fn settle<H: Headers>(
        &self,
        cursor: &mut Cursor,
        source: &Source<'_>,
        content_type: Option<&[u8]>,
        headers: Option<&H>,
    ) -> bool {
        let record = Record {
            topic: source.topic,
            partition: source.partition,
            offset: source.offset,
            content_type,
            payload: source.payload,
        };
        let replay = self.consumer.context().rebuilds.record(record.topic, record.partition, record.offset);
        let outcome = self.engine.ingest_in(cursor, &record);
        if replay == Replay::Replayed {
            // Handled before (that is why it is below the committed offset), side effects such
            // as a dead-letter copy included: only the state is rebuilt. Storing its offset
            // would move the committed offset back.
            return false;
        }
        if let Some(dead_letters) = &self.dead_letters {
            dead_letters.route_source(source, headers, &outcome);
        }
        true
    }

    /// An apply thread's work: every record of `batch` in order, then one offset store per
    /// partition (the batch's last record to store of that partition).
    fn apply_batch(&self, batch: &Batch) {
        let mut stores: Vec<(&str, i32, i64)> = Vec::new();
        let mut cursor = self.engine.cursor();
        for record in batch.iter() {
            let source = record.source();
            if !self.settle(&mut cursor, &source, record.header("content-type"), Some(record.headers())) {
                continue;
            }
            match stores
                .iter_mut()
                .find(|(topic, partition, _)| *partition == source.partition && *topic == source.topic)
            {
                Some(store) => store.2 = store.2.max(source.offset),
                None => stores.push((source.topic, source.partition, source.offset)),
            }
        }
        for (topic, partition, offset) in stores {
            if let Err(error) = self.consumer.store_offset(topic, partition, offset) {
                tracing::debug!(%error, "could not store offset");
            }
        }
    }

    fn commit_final(&self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("final offsets committed"),
            Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::warn!(%error, "final commit failed; the next start re-reads from the last commit"),
        }
    }
}

/// Adds `nice` to the calling thread's niceness (Linux: `setpriority` on the thread id affects
/// that thread only). Lowering needs no privilege; a failure is logged and changes nothing else.
fn lower_thread_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's id; no memory is passed.
        let result = unsafe {
            let tid = libc::gettid();
            let current = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, (current + nice).min(19))
        };
        if result != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), nice, "could not lower an apply thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's niceness, from `/proc/thread-self/stat` (field 19).
    #[cfg(target_os = "linux")]
    fn thread_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
        fields[16].parse().expect("nice")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_apply_thread_lowers_its_own_priority_only() {
        let before = thread_nice();
        let lowered = std::thread::spawn(|| {
            let start = thread_nice();
            lower_thread_priority(3);
            (start, thread_nice())
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, (before, (before + 3).min(19)));
        assert_eq!(thread_nice(), before, "the calling thread of the spawn is untouched");
        let unchanged = std::thread::spawn(|| {
            lower_thread_priority(0);
            thread_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(unchanged, before);
    }
}
