//! The engine's own instrumentation. Every labelled child is created up front (or once per new
//! topic), so the hot path never looks a label set up.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, Opts, Registry};
use salespulse_core::ledger::Duplicate;
use salespulse_events::Kind;

use crate::reject_reasons;

pub(crate) struct EngineMetrics {
    received: IntCounterVec,
    applied: [IntCounter; 3],
    late: [IntCounter; 3],
    last_event: [prometheus::Gauge; 3],
    rejected: Vec<(&'static str, IntCounter)>,
    duplicate_offset: IntCounter,
    duplicate_event_id: IntCounter,
    pub(crate) overflow: IntCounter,
    pub(crate) join_evictions: IntCounter,
    pub(crate) split_managers: IntCounter,
}

const STREAMS: [Kind; 3] = [Kind::Call, Kind::Message, Kind::CardChange];

fn stream_index(kind: Kind) -> usize {
    match kind {
        Kind::Call => 0,
        Kind::Message => 1,
        Kind::CardChange => 2,
    }
}

impl EngineMetrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let received = IntCounterVec::new(
            Opts::new("salespulse_events_received_total", "Kafka records received, before decoding."),
            &["topic"],
        )?;
        let applied_vec = IntCounterVec::new(
            Opts::new("salespulse_events_applied_total", "Events applied to the state, by stream."),
            &["stream"],
        )?;
        let late_vec = IntCounterVec::new(
            Opts::new(
                "salespulse_events_late_total",
                "Events dropped because they were older than the partition's watermark by more than the largest window.",
            ),
            &["stream"],
        )?;
        let last_event_vec = GaugeVec::new(
            Opts::new("salespulse_last_event_timestamp_seconds", "Event time of the newest event applied, by stream."),
            &["stream"],
        )?;
        let rejected_vec = IntCounterVec::new(
            Opts::new(
                "salespulse_events_rejected_total",
                "Records not applied because they did not decode or validate, by reason.",
            ),
            &["reason"],
        )?;
        let duplicate_vec = IntCounterVec::new(
            Opts::new(
                "salespulse_events_duplicate_total",
                "Records not applied because they were applied before: a redelivered offset or a repeated event_id.",
            ),
            &["kind"],
        )?;
        let overflow = IntCounter::new(
            "salespulse_managers_overflow_events_total",
            "Events of new managers dropped because the manager cap was reached.",
        )?;
        let join_evictions = IntCounter::new(
            "salespulse_join_state_evictions_total",
            "Join state entries dropped because a per-manager bound was reached.",
        )?;
        let split_managers = IntCounter::new(
            "salespulse_managers_split_total",
            "Managers whose events arrived on more than one partition group of this replica (producers not keying by manager_id).",
        )?;
        for collector in [
            Box::new(received.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(applied_vec.clone()),
            Box::new(late_vec.clone()),
            Box::new(last_event_vec.clone()),
            Box::new(rejected_vec.clone()),
            Box::new(duplicate_vec.clone()),
            Box::new(overflow.clone()),
            Box::new(join_evictions.clone()),
            Box::new(split_managers.clone()),
        ] {
            registry.register(collector)?;
        }
        let per_stream = |vec: &IntCounterVec| STREAMS.map(|k| vec.with_label_values(&[k.as_str()]));
        Ok(EngineMetrics {
            received,
            applied: per_stream(&applied_vec),
            late: per_stream(&late_vec),
            last_event: STREAMS.map(|k| last_event_vec.with_label_values(&[k.as_str()])),
            rejected: reject_reasons().map(|r| (r, rejected_vec.with_label_values(&[r]))).collect(),
            duplicate_offset: duplicate_vec.with_label_values(&[Duplicate::Offset.as_str()]),
            duplicate_event_id: duplicate_vec.with_label_values(&[Duplicate::EventId.as_str()]),
            overflow,
            join_evictions,
            split_managers,
        })
    }

    pub(crate) fn received_for(&self, topic: &str) -> IntCounter {
        self.received.with_label_values(&[topic])
    }

    pub(crate) fn late(&self, kind: Kind) {
        self.late[stream_index(kind)].inc();
    }

    pub(crate) fn applied(&self, kind: Kind, event_ms: i64) {
        let i = stream_index(kind);
        self.applied[i].inc();
        let seconds = event_ms as f64 / 1000.0;
        if seconds > self.last_event[i].get() {
            self.last_event[i].set(seconds);
        }
    }

    pub(crate) fn rejected(&self, reason: &'static str) {
        if let Some((_, counter)) = self.rejected.iter().find(|(r, _)| *r == reason) {
            counter.inc();
        }
    }

    /// Applied, late, and the newest event time (seconds) of stream `kind`, for the ingest view.
    pub(crate) fn stream(&self, kind: Kind) -> (u64, u64, f64) {
        let i = stream_index(kind);
        (self.applied[i].get(), self.late[i].get(), self.last_event[i].get())
    }

    /// Rejected records by reason, every reason listed.
    pub(crate) fn rejected_counts(&self) -> Vec<(&'static str, u64)> {
        self.rejected.iter().map(|(reason, counter)| (*reason, counter.get())).collect()
    }

    /// Redelivered offsets and repeated event ids dropped.
    pub(crate) fn duplicates(&self) -> (u64, u64) {
        (self.duplicate_offset.get(), self.duplicate_event_id.get())
    }

    pub(crate) fn duplicate(&self, kind: Duplicate) {
        match kind {
            Duplicate::Offset => self.duplicate_offset.inc(),
            Duplicate::EventId => self.duplicate_event_id.inc(),
        }
    }
}
