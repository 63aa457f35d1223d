//! The salespulse pipeline between the transport and the metrics.
//!
//! An [`Engine`] takes one Kafka record at a time ([`Record`]: topic, partition, offset, headers'
//! content type, payload), decides its encoding, decodes it with `salespulse-events`, drops it if
//! its offset or event id was applied before, and applies it to the manager's state of the
//! stream it belongs to (`salespulse-calls`, later messages and cards). Every record ends in an
//! [`Outcome`]; bad input is counted by reason, logged at a rate limit, and never panics.
//! [`Engine::render`] writes the per-manager families for a scrape from a snapshot of the state.
//!
//! The engine knows nothing of Kafka clients or HTTP: the ingest crate feeds it, the exporter
//! reads it.
#![deny(missing_docs)]

mod anomalies;
mod config;
mod export;
mod joins;
mod metrics;
mod ratelimit;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use prometheus::Registry;
use salespulse_calls::{CallRow, CallSnapshot, CallState, Calls};
use salespulse_cards::{CardRow, CardSnapshot, CardState, Cards, PlanRow, Plans};
use salespulse_core::clock::Clock;
use salespulse_core::expo::{label_prefix, MetricType, MetricWriter};
use salespulse_core::ledger::{Duplicate, Ledger};
use salespulse_core::table::{Entry, ManagerTable, PartitionId, PartitionManagers};
use salespulse_core::window::ReadPlan;
use salespulse_events::{DecodeError, Encoding, Event, EventBody, Kind};
use salespulse_messages::{MessageRow, MessageSnapshot, MessageState, Messages, RetiredHistograms};

pub use anomalies::AnomalySettings;
use anomalies::{Anomalies, RowAnomalies};
pub use config::{EngineConfig, TopicConfig};
pub use export::OPTIONAL_FAMILIES;
use joins::JoinState;
pub use joins::{JoinConfig, JoinCounts};
use metrics::EngineMetrics;
pub use ratelimit::RateLimited;
pub use view::{
    AnomalyView, IngestView, ManagerView, PartitionIngest, RecentReject, SparklineSpec, StreamIngest, TeamView,
    TopicIngest,
};

/// One record as the transport delivered it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The topic it came from.
    pub topic: &'a str,
    /// The partition it came from.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The value of its `content-type` header, if any.
    pub content_type: Option<&'a [u8]>,
    /// Its value; `None` for a tombstone.
    pub payload: Option<&'a [u8]>,
}

/// What became of a record. Every outcome means the record is done: its offset may be committed.
#[derive(Debug)]
pub enum Outcome {
    /// Applied to the state of a stream.
    Applied(Kind),
    /// Seen before; not applied again.
    Duplicate(Duplicate),
    /// Not applied: the reason label and the error.
    Rejected(Rejection),
    /// Decoded and valid, but the manager cap is reached and the manager is new.
    Overflow,
    /// Older than the partition's watermark by more than the largest window: no window can
    /// count it any more, so it is dropped.
    Late(Kind),
    /// A record of a mapped topic that mapped without error: how many events its source mapping
    /// produced (0 for a payload the mapping filters out) and how many of them were applied.
    /// Each event's own fate (applied, duplicate, late, ...) is counted as a record's would be.
    Mapped {
        /// Events the mapping produced.
        events: usize,
        /// Of those, events applied.
        applied: usize,
    },
}

/// Turns one raw record of a mapped topic (a foreign payload: a webhook body, a PBX event) into
/// canonical events. Implemented over `salespulse-sources` by the binary.
pub trait RecordMapper: Send + Sync {
    /// The events the payload holds, and an error if part (or all) of it did not map.
    fn map(&self, payload: &[u8]) -> (Vec<Event>, Option<Box<dyn std::error::Error + Send + Sync>>);

    /// [`RecordMapper::map`] of a whole record, for mappers whose result depends on where the
    /// record sits in the log (remembered previous values, which a rebuild replays).
    fn map_record(&self, record: &Record<'_>) -> (Vec<Event>, Option<Box<dyn std::error::Error + Send + Sync>>) {
        self.map(record.payload.unwrap_or_default())
    }
}

/// The engine could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Registering the engine's metrics failed.
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// An export list names a window that is not configured.
    #[error(transparent)]
    Export(#[from] salespulse_calls::ExportError),
    /// The message stream's configuration is invalid.
    #[error("messages: {0}")]
    Messages(#[from] salespulse_messages::MessagesError),
    /// The card stream's configuration is invalid.
    #[error("cards: {0}")]
    Cards(#[from] salespulse_cards::ConfigError),
}

/// Why a record was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The payload did not decode or validate.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The event time is further in the future than the tolerance allows.
    #[error("occurred_at is {ahead_ms} ms ahead of the wall clock (tolerance {tolerance_ms} ms)")]
    Future {
        /// How far ahead it is.
        ahead_ms: i64,
        /// The configured tolerance.
        tolerance_ms: i64,
    },
    /// The topic's source mapping could not map (part of) the record.
    #[error("{0}")]
    Mapping(Box<dyn std::error::Error + Send + Sync>),
}

impl Rejection {
    /// The `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Decode(error) => error.reason(),
            Rejection::Future { .. } => "future_timestamp",
            Rejection::Mapping(_) => "mapping",
        }
    }
}

/// Every value `Rejection::reason` can take.
pub fn reject_reasons() -> impl Iterator<Item = &'static str> {
    salespulse_events::REJECT_REASONS.iter().copied().chain(["future_timestamp", "mapping"])
}

/// One manager's state across streams. A stream's part is created on its first event.
#[derive(Debug, Default)]
pub struct ManagerState {
    calls: std::sync::OnceLock<Box<CallState>>,
    cards: std::sync::OnceLock<Box<CardState>>,
    messages: std::sync::OnceLock<Box<MessageState>>,
    /// Boxed and created on first use, so the map entry stays small (fewer cache lines per event).
    joins: std::sync::OnceLock<Box<Mutex<JoinState>>>,
    /// Created at the first slot the manager is observed in.
    baseline: std::sync::OnceLock<Box<Mutex<salespulse_anomaly::Baseline>>>,
}

/// Per-partition context: the applied ledger and the partition's managers.
struct PartitionContext {
    /// The topic's name and the partition: what a [`Cursor`] compares.
    key: TopicPartition,
    topic: TopicSettings,
    ledger: Mutex<Ledger>,
    managers: Arc<PartitionManagers<ManagerState>>,
    received: prometheus::IntCounter,
    /// The topic's source mapping, if it carries foreign payloads.
    mapper: Option<Arc<dyn RecordMapper>>,
}

#[derive(Clone, Copy)]
struct TopicSettings {
    encoding: Option<Encoding>,
    kind: Option<Kind>,
}

/// A topic's name and a partition number.
type TopicPartition = (Box<str>, i32);

/// What a run of records applied by one thread shares: see [`Engine::cursor`].
pub struct Cursor {
    now_ms: i64,
    last: Option<Arc<PartitionContext>>,
}

impl Cursor {
    /// The context of `topic`/`partition`: the last one when it is the same, else looked up.
    fn context(&mut self, engine: &Engine, topic: &str, partition: i32) -> &PartitionContext {
        let same = self.last.as_ref().is_some_and(|ctx| ctx.key.1 == partition && &*ctx.key.0 == topic);
        if !same {
            self.last = Some(engine.partition(topic, partition));
        }
        self.last.as_deref().expect("set just above")
    }
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor").field("now_ms", &self.now_ms).finish_non_exhaustive()
    }
}

/// The pipeline's state and configuration.
pub struct Engine {
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    calls: Calls,
    cards: Cards,
    messages: Messages,
    anomalies: Anomalies,
    /// Response-time totals of evicted managers, so team histograms never go down.
    retired: Mutex<RetiredHistograms>,
    table: ManagerTable<ManagerState>,
    partitions: RwLock<HashMap<TopicPartition, Arc<PartitionContext>>>,
    /// Source mappings by topic, set before ingest starts.
    mappers: RwLock<HashMap<String, Arc<dyn RecordMapper>>>,
    metrics: EngineMetrics,
    reject_log: RateLimited,
    /// The last rejected records, for the ingest view.
    rejects: view::RejectLog,
    split_log: RateLimited,
    /// The plans in force; replaced whole by [`Engine::set_plans`] (a reload), read per scrape.
    plans: RwLock<Arc<Plans>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).field("managers", &self.table.len()).finish()
    }
}

impl Engine {
    /// A new engine whose own metrics register in `registry`.
    pub fn new(config: EngineConfig, clock: Arc<dyn Clock>, registry: &Registry) -> Result<Engine, EngineError> {
        let calls = Calls::new(&config.windows, &config.calls)?;
        let cards = Cards::new(&config.windows, &config.cards)?;
        let messages = Messages::new(&config.windows, &config.messages)?;
        let anomalies = Anomalies::new(&config.windows, &config.anomalies);
        let metrics = EngineMetrics::register(registry)?;
        Ok(Engine {
            calls,
            cards,
            messages,
            retired: Mutex::new(RetiredHistograms::default()),
            anomalies,
            table: ManagerTable::new(config.max_managers),
            config,
            clock,
            partitions: RwLock::new(HashMap::new()),
            mappers: RwLock::new(HashMap::new()),
            metrics,
            reject_log: RateLimited::new(std::time::Duration::from_secs(10)),
            rejects: view::RejectLog::default(),
            split_log: RateLimited::new(std::time::Duration::from_secs(60)),
            plans: RwLock::new(Arc::new(Plans::default())),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Decodes `topic`'s records with `mapper` instead of the event contract. Call before the
    /// topic's first record: partitions already seen keep how they decode.
    pub fn set_mapper(&self, topic: &str, mapper: Arc<dyn RecordMapper>) {
        self.mappers.write().insert(topic.to_owned(), mapper);
    }

    /// Replaces the plans in force (at start and on every successful reload); the next scrape
    /// exports them.
    pub fn set_plans(&self, plans: Plans) {
        *self.plans.write() = Arc::new(plans);
    }

    /// The plans in force.
    pub fn plans(&self) -> Arc<Plans> {
        Arc::clone(&self.plans.read())
    }

    /// Takes one record to its outcome.
    pub fn ingest(&self, record: &Record<'_>) -> Outcome {
        self.ingest_in(&mut self.cursor(), record)
    }

    /// A cursor for a run of records applied one after the other by one thread (a batch): it
    /// reads the wall clock once and keeps the partition looked up last, which a batch's records
    /// mostly share. Make a new one per batch, so the clock it read stays within a batch's
    /// processing time (well under a second) of the truth.
    pub fn cursor(&self) -> Cursor {
        Cursor { now_ms: self.clock.now_ms(), last: None }
    }

    /// [`Engine::ingest`] within a run of records (see [`Engine::cursor`]).
    pub fn ingest_in(&self, cursor: &mut Cursor, record: &Record<'_>) -> Outcome {
        let now_ms = cursor.now_ms;
        let partition = cursor.context(self, record.topic, record.partition);
        partition.received.inc();
        let _writer = partition.managers.writer();
        let mut ledger = partition.ledger.lock();
        if let Some(duplicate) = self.take_offset(&mut ledger, record.offset) {
            return duplicate;
        }
        if let Some(mapper) = &partition.mapper {
            return self.ingest_mapped(partition, &mut ledger, mapper.as_ref(), record, now_ms);
        }
        match self.decode(record, partition.topic) {
            Ok(event) => {
                let outcome = self.accept(partition, &mut ledger, &event, record, now_ms);
                // Its string buffers serve the next record's decode on this thread.
                salespulse_events::recycle(event);
                outcome
            }
            Err(rejection) => self.reject(record, rejection),
        }
    }

    /// Takes one event that was decoded elsewhere (a source mapping, a benchmark) to its outcome,
    /// exactly as if it had arrived as a record at `offset` of `topic`/`partition`.
    pub fn ingest_event(&self, topic: &str, partition: i32, offset: i64, event: &Event) -> Outcome {
        let context = self.partition(topic, partition);
        context.received.inc();
        let _writer = context.managers.writer();
        let mut ledger = context.ledger.lock();
        if let Some(duplicate) = self.take_offset(&mut ledger, offset) {
            return duplicate;
        }
        let record = Record { topic, partition, offset, content_type: None, payload: None };
        self.accept(&context, &mut ledger, event, &record, self.clock.now_ms())
    }

    /// A mapped record: every event it maps to takes the normal path; a mapping error rejects the
    /// record (for the dead-letter topic) after the events that did map are applied.
    fn ingest_mapped(
        &self,
        partition: &PartitionContext,
        ledger: &mut Ledger,
        mapper: &dyn RecordMapper,
        record: &Record<'_>,
        now_ms: i64,
    ) -> Outcome {
        let (events, failure) = mapper.map_record(record);
        let applied = events
            .iter()
            .filter(|e| matches!(self.accept(partition, ledger, e, record, now_ms), Outcome::Applied(_)))
            .count();
        match failure {
            Some(error) => self.reject(record, Rejection::Mapping(error)),
            None => Outcome::Mapped { events: events.len(), applied },
        }
    }

    /// Drops a redelivered offset; otherwise marks it done, whatever happens next.
    fn take_offset(&self, ledger: &mut Ledger, offset: i64) -> Option<Outcome> {
        if ledger.seen_offset(offset) {
            self.metrics.duplicate(Duplicate::Offset);
            return Some(Outcome::Duplicate(Duplicate::Offset));
        }
        ledger.mark_offset(offset);
        None
    }

    /// Time checks, event-id de-duplication and apply, under the partition group's writer lock:
    /// one writer per manager state at a time is what lets the window counters update without
    /// read-modify-write instructions.
    fn accept(
        &self,
        partition: &PartitionContext,
        ledger: &mut Ledger,
        event: &Event,
        record: &Record<'_>,
        now_ms: i64,
    ) -> Outcome {
        // Amounts in two currencies are never summed: another currency is a rejection.
        if let Some(currency) = &self.config.cards.commerce.currency {
            if let Err(error) = salespulse_events::check_currency(event, currency) {
                return self.reject(record, error.into());
            }
        }
        let ahead_ms = event.occurred_at_ms - now_ms;
        if ahead_ms > self.config.future_tolerance_ms {
            let tolerance_ms = self.config.future_tolerance_ms;
            return self.reject(record, Rejection::Future { ahead_ms, tolerance_ms });
        }
        // Late against the partition's own event time, not the wall clock, so a replay of the
        // same records decides the same way.
        let watermark = ledger.watermark(self.config.allowed_lateness_ms);
        if watermark.is_some_and(|w| event.occurred_at_ms < w - self.config.windows.largest_ms()) {
            self.metrics.late(event.kind());
            return Outcome::Late(event.kind());
        }
        if ledger.check_event_id(&event.event_id, event.occurred_at_ms) {
            self.metrics.duplicate(Duplicate::EventId);
            return Outcome::Duplicate(Duplicate::EventId);
        }
        ledger.advance(event.occurred_at_ms);
        self.apply(&partition.managers, event, now_ms)
    }

    /// Memory held by the de-duplication ledgers, and fingerprints in them.
    pub fn ledger_usage(&self) -> (usize, usize) {
        self.partitions.read().values().fold((0, 0), |(bytes, count), ctx| {
            let ledger = ctx.ledger.lock();
            (bytes + ledger.heap_bytes(), count + ledger.fingerprints_len())
        })
    }

    fn decode(&self, record: &Record<'_>, topic: TopicSettings) -> Result<Event, Rejection> {
        let payload = record.payload.unwrap_or_default();
        let declared = record
            .content_type
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(Encoding::from_content_type)
            .or(topic.encoding);
        let encoding = declared.unwrap_or_else(|| Encoding::sniff(payload));
        match salespulse_events::decode(payload, encoding, topic.kind) {
            // Sniffing can take a protobuf body for JSON (an `event_id` of 123 bytes encodes as
            // `\n{`): when nothing declared the encoding, give protobuf a chance before rejecting.
            Err(error) if declared.is_none() && encoding == Encoding::Json && error.reason() == "malformed_json" => {
                salespulse_events::decode(payload, Encoding::Protobuf, topic.kind).map_err(|_| error.into())
            }
            result => Ok(result?),
        }
    }

    fn reject(&self, record: &Record<'_>, rejection: Rejection) -> Outcome {
        let reason = rejection.reason();
        self.metrics.rejected(reason);
        self.rejects.record(record, &rejection, self.clock.now_ms());
        if let Some(suppressed) = self.reject_log.check() {
            tracing::warn!(
                topic = record.topic,
                partition = record.partition,
                offset = record.offset,
                reason,
                suppressed,
                "rejected a record: {rejection}"
            );
        }
        Outcome::Rejected(rejection)
    }

    fn apply(&self, managers: &PartitionManagers<ManagerState>, event: &Event, now_ms: i64) -> Outcome {
        let kind = event.kind();
        let windows = &self.config.windows;
        let joins = &self.config.joins;
        let at_ms = event.occurred_at_ms;
        let mut created = false;
        let init = || {
            created = true;
            ManagerState::default()
        };
        let applied = managers.update(&event.manager_id, now_ms, init, |entry| {
            entry.set_team(event.team.as_deref());
            let state = &entry.state;
            let mut join = state.joins.get_or_init(Box::default).lock();
            let evictions = join.evictions();
            match &event.body {
                EventBody::Call(call) => {
                    let calls = state.calls.get_or_init(|| Box::new(self.calls.new_state()));
                    self.calls.apply(calls, windows, call, at_ms, now_ms);
                    let (client, card) = (call.client_id.as_deref(), call.card_id.as_deref());
                    let loggable = self.calls.is_successful(call);
                    join.call(joins, client, card, call.started_at_ms, call.ended_at_ms, loggable);
                }
                EventBody::Message(message) => {
                    let messages = state.messages.get_or_init(|| Box::new(self.messages.new_state()));
                    self.metrics
                        .evicted(metrics::DIALOGS, self.messages.apply(messages, windows, message, at_ms, now_ms));
                    join.message(joins, message.client_id.as_deref(), at_ms);
                }
                EventBody::CardChange(change) => {
                    let cards = state.cards.get_or_init(|| Box::new(self.cards.new_state()));
                    self.metrics.evicted(metrics::CARDS, self.cards.apply(cards, windows, change, at_ms, now_ms));
                    join.card_change(joins, change, at_ms);
                }
            }
            self.metrics.evicted(metrics::JOINS, join.evictions() - evictions);
        });
        if applied.is_err() {
            self.metrics.overflow.inc();
            return Outcome::Overflow;
        }
        if created {
            self.check_split(&event.manager_id, managers.id());
        }
        self.metrics.applied(kind, at_ms);
        Outcome::Applied(kind)
    }

    /// Bytes of one manager's call state with this configuration.
    pub fn call_state_bytes(&self) -> usize {
        self.calls.state_bytes()
    }

    fn partition(&self, topic: &str, partition: i32) -> Arc<PartitionContext> {
        // The key is looked up without allocating: `(Box<str>, i32)` cannot borrow as
        // `(&str, i32)`, so the lookup walks the few partitions this process owns.
        if let Some(found) = self
            .partitions
            .read()
            .iter()
            .find(|((t, p), _)| *p == partition && t.as_ref() == topic)
            .map(|(_, ctx)| Arc::clone(ctx))
        {
            return found;
        }
        let mut partitions = self.partitions.write();
        let key: TopicPartition = (topic.into(), partition);
        let ctx = partitions.entry(key).or_insert_with(|| {
            let settings = self.config.topic(topic);
            Arc::new(PartitionContext {
                key: (topic.into(), partition),
                topic: TopicSettings {
                    encoding: settings.and_then(|t| t.encoding),
                    kind: settings.and_then(|t| t.kind),
                },
                ledger: Mutex::new(Ledger::new(self.config.dedup_horizon_ms)),
                // Partition p of every topic shares one manager map (a partition group): producers
                // key by manager, so a manager's calls, messages and cards meet in one state.
                managers: self.table.partition(partition.max(0) as PartitionId),
                received: self.metrics.received_for(topic),
                mapper: self.mappers.read().get(topic).cloned(),
            })
        });
        Arc::clone(ctx)
    }

    /// A manager new to partition group `group` that another group of this process holds too:
    /// its producers do not key by `manager_id` (or topics differ in partition count), so its
    /// state is split and, across replicas, its cross-stream joins miss. Checked only when a
    /// manager's state is created, so it costs nothing per event.
    fn check_split(&self, manager: &str, group: PartitionId) {
        let holders = self.table.partitions_holding(manager);
        if holders < 2 {
            return;
        }
        self.metrics.split_managers.inc();
        if let Some(suppressed) = self.split_log.check() {
            tracing::warn!(
                manager,
                partition = group,
                partitions = holders,
                suppressed,
                "a manager's events arrive on more than one partition: producers must key records by manager_id \
                 (see docs/scaling.md)"
            );
        }
    }

    /// Drops everything partition group `partition` holds: the ledgers of partition `partition`
    /// of every topic and the group's managers (a rebalance revoked it, or it is about to be
    /// rebuilt from Kafka). Returns the number of managers dropped. Team histograms do not keep
    /// the dropped managers' response times: the group's new owner rebuilds and exports them.
    pub fn drop_partition_group(&self, partition: i32) -> usize {
        let group = partition.max(0) as PartitionId;
        // Whoever applies to the group holds its writer lock; take it so no apply is half done.
        let managers = self.table.partition(group);
        let _writer = managers.writer();
        self.partitions.write().retain(|(_, p), _| *p != partition);
        self.table.remove_partition(group)
    }

    /// How far back a rebuild must replay so that every window, the event-id de-duplication and
    /// the future tolerance see what an uninterrupted run saw: the largest window (25 h when
    /// `today` or `shift` is kept), plus the de-duplication horizon (a producer retry in the
    /// replay finds its original), plus the future tolerance (an event may be stamped that much
    /// after the record's timestamp).
    pub fn rebuild_horizon_ms(&self) -> i64 {
        let config = &self.config;
        config.windows.largest_ms() + config.dedup_horizon_ms + config.future_tolerance_ms.max(0)
    }

    /// The lowest offset not yet applied for a topic-partition, if any record of it was seen.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        let partitions = self.partitions.read();
        let ctx = partitions.iter().find(|((t, p), _)| *p == partition && t.as_ref() == topic)?.1;
        let next = ctx.ledger.lock().next_offset();
        next
    }

    /// Drops managers with no event for the configured idle time; returns how many. Their `_total`
    /// series go with them; team histograms keep their response times.
    pub fn evict_idle(&self) -> usize {
        let now_ms = self.clock.now_ms();
        let windows = &self.config.windows;
        let plan = windows.plan(now_ms);
        let mut retired = self.retired.lock();
        self.table.evict_idle_with(now_ms - self.config.manager_idle_ms, |_, entry| {
            if let Some(messages) = entry.state.messages.get() {
                let snapshot = self.messages.snapshot(messages, windows, &plan, now_ms);
                retired.retire(entry.team().as_deref(), &snapshot);
            }
        })
    }

    /// Managers held now.
    pub fn managers(&self) -> usize {
        self.table.len()
    }

    /// Writes the per-manager families as of now.
    pub fn render(&self, out: &mut MetricWriter) {
        let windows = &self.config.windows;
        let now_ms = self.clock.now_ms();
        let plan = windows.plan(now_ms);
        let mut rows: Vec<Row> = Vec::with_capacity(self.table.len());
        self.table.for_each(|_, manager, entry| {
            rows.push(self.full_row(manager, entry, &plan, now_ms));
        });
        // A manager whose events came through several partition groups is one series: merge.
        rows.sort_unstable_by(|a, b| a.manager.cmp(&b.manager));
        rows.dedup_by(|later, kept| {
            if later.manager != kept.manager {
                return false;
            }
            kept.absorb(later);
            true
        });
        let labels: Vec<String> = rows
            .iter()
            .map(|row| match &row.team {
                Some(team) => label_prefix(&[("manager", &row.manager), ("team", team)]),
                None => label_prefix(&[("manager", &row.manager)]),
            })
            .collect();
        let call_rows: Vec<CallRow<'_>> = rows
            .iter()
            .zip(&labels)
            .filter_map(|(row, labels)| Some(CallRow { labels, calls: row.calls.as_ref()? }))
            .collect();
        self.calls.render(&call_rows, out);
        let card_rows: Vec<CardRow<'_>> = rows
            .iter()
            .zip(&labels)
            .filter_map(|(row, labels)| Some(CardRow { labels, cards: row.cards.as_ref()? }))
            .collect();
        self.cards.render(&card_rows, out);
        let plan_rows: Vec<PlanRow<'_>> = rows
            .iter()
            .zip(&labels)
            .map(|(row, labels)| PlanRow {
                labels,
                manager: &row.manager,
                team: row.team.as_deref(),
                cards: row.cards.as_ref(),
            })
            .collect();
        self.cards.render_plans(&plan_rows, &self.plans(), now_ms, out);
        let message_rows: Vec<MessageRow<'_>> = rows
            .iter()
            .filter_map(|row| {
                Some(MessageRow { manager: &row.manager, team: row.team.as_deref(), messages: row.messages.as_ref()? })
            })
            .collect();
        self.messages.render(&message_rows, &self.retired.lock(), out);
        render_joins(&rows, &labels, out);
        self.render_anomalies(&rows, &labels, out);
        self.render_ratios(&rows, &labels, out);
        // These two gauges are written with the families they describe, from the same snapshot
        // (the registry is rendered before the snapshot is taken).
        out.family("salespulse_managers", "Managers whose state is held.", MetricType::Gauge);
        out.sample("salespulse_managers", &[], rows.len() as f64);
        let card_entries = |row: &Row| {
            row.cards.as_ref().map_or(0, |c| c.join.cards + c.join.tasks + c.join.invoices + c.join.clients)
        };
        let dialogs = |row: &Row| row.messages.as_ref().map_or(0, |m| m.dialogs.held);
        let mut entries = [0_u64; 3];
        for row in &rows {
            entries[metrics::JOINS] += row.joins.entries;
            entries[metrics::CARDS] += card_entries(row);
            entries[metrics::DIALOGS] += dialogs(row);
        }
        out.family(
            "salespulse_join_state_entries",
            "Entries of the join state, by state: joins (calls awaiting a card change, recent changes, contacts, tasks), cards (cards, tasks, invoices, clients), dialogs.",
            MetricType::Gauge,
        );
        for (state, entries) in metrics::JOIN_STATES.iter().zip(entries) {
            out.sample("salespulse_join_state_entries", &[("state", state)], entries as f64);
        }
    }
}

impl Engine {
    /// Successful calls per card touched, in every window both families export, for managers
    /// with both streams; omitted while no card was touched in the window.
    fn render_ratios(&self, rows: &[Row], labels: &[String], out: &mut MetricWriter) {
        const NAME: &str = "salespulse_window_successful_calls_per_card_touched";
        out.family(
            NAME,
            "Successful contacts divided by distinct CRM cards touched, in the window.",
            MetricType::Gauge,
        );
        for (row, labels) in rows.iter().zip(labels) {
            let (Some(calls), Some(cards)) = (&row.calls, &row.cards) else { continue };
            for window in self.calls.successful_windows() {
                let successful = self.calls.window_successful(calls, window);
                let touched = self.cards.cards_touched(cards, window);
                if let (Some(successful), Some(touched @ 1..)) = (successful, touched) {
                    out.sample_prefixed(NAME, labels, &[("window", window)], successful as f64 / touched as f64);
                }
            }
        }
    }
}

impl Engine {
    /// A manager's whole row at the instant of `plan`: stream snapshots, join counts (expired to
    /// `now_ms` first) and anomaly scores. What a scrape and the JSON view both show.
    fn full_row(&self, manager: &Arc<str>, entry: &Entry<ManagerState>, plan: &ReadPlan, now_ms: i64) -> Row {
        let mut row = self.snapshot_row(manager, entry, plan, now_ms);
        row.joins = entry.state.joins.get().map_or_else(JoinCounts::default, |join| {
            let mut join = join.lock();
            join.expire(now_ms);
            join.counts()
        });
        row.anomalies = self.row_anomalies(&row, &entry.state, entry.last_update_ms(), now_ms);
        row
    }

    /// A manager's stream snapshots at the instant of `plan` (join counts and anomalies are
    /// filled in by [`Engine::full_row`]).
    fn snapshot_row(&self, manager: &Arc<str>, entry: &Entry<ManagerState>, plan: &ReadPlan, now_ms: i64) -> Row {
        let windows = &self.config.windows;
        let state = &entry.state;
        Row {
            manager: Arc::clone(manager),
            team: entry.team(),
            calls: state.calls.get().map(|calls| self.calls.snapshot(calls, windows, plan)),
            cards: state.cards.get().map(|cards| self.cards.snapshot(cards, windows, plan, now_ms)),
            messages: state.messages.get().map(|m| self.messages.snapshot(m, windows, plan, now_ms)),
            joins: JoinCounts::default(),
            anomalies: RowAnomalies::default(),
        }
    }
}

/// Adds `later` (the same manager's stream in another partition group) into `kept`.
fn merge_option<T>(kept: &mut Option<T>, later: Option<T>, merge: fn(&mut T, &T)) {
    match (kept.as_mut(), later) {
        (Some(mine), Some(theirs)) => merge(mine, &theirs),
        (None, theirs) => *kept = theirs,
        (Some(_), None) => {}
    }
}

impl Row {
    /// Folds `later`, the same manager's row from another partition group, into this one.
    fn absorb(&mut self, later: &mut Row) {
        merge_option(&mut self.calls, later.calls.take(), CallSnapshot::merge);
        merge_option(&mut self.cards, later.cards.take(), CardSnapshot::merge);
        merge_option(&mut self.messages, later.messages.take(), MessageSnapshot::merge);
        self.joins.merge(&later.joins);
        if self.team.is_none() {
            self.team = later.team.take();
        }
    }
}

/// One manager in a scrape.
struct Row {
    manager: Arc<str>,
    team: Option<Arc<str>>,
    calls: Option<CallSnapshot>,
    cards: Option<CardSnapshot>,
    messages: Option<MessageSnapshot>,
    joins: JoinCounts,
    anomalies: RowAnomalies,
}

/// The cross-stream families: unlogged calls (for managers with calls) and blind reschedules
/// (for managers with judged reschedules).
fn render_joins(rows: &[Row], labels: &[String], out: &mut MetricWriter) {
    out.family(
        "salespulse_calls_unlogged_total",
        "Successful calls naming a client or card with no card change by the manager within the delay.",
        MetricType::Counter,
    );
    for (row, labels) in rows.iter().zip(labels).filter(|(row, _)| row.calls.is_some()) {
        out.sample_prefixed("salespulse_calls_unlogged_total", labels, &[], row.joins.calls_unlogged as f64);
    }
    out.family(
        "salespulse_tasks_rescheduled_without_contact_total",
        "Task reschedulings with no call or message with the task's client since it was created or last rescheduled.",
        MetricType::Counter,
    );
    for (row, labels) in rows.iter().zip(labels).filter(|(row, _)| row.joins.reschedules_judged > 0) {
        let value = row.joins.reschedules_without_contact as f64;
        out.sample_prefixed("salespulse_tasks_rescheduled_without_contact_total", labels, &[], value);
    }
}

#[cfg(test)]
mod tests;
