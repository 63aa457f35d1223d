//! The engine's own instrumentation. Every labelled child is created up front (or once per new
//! topic), so the hot path never looks a label set up.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, Metric, MetricFamily};
use prometheus::{GaugeVec, IntCounter, IntCounterVec, Opts, Registry};
use salespulse_core::ledger::Duplicate;
use salespulse_events::Kind;

use crate::reject_reasons;

pub(crate) struct EngineMetrics {
    received: IntCounterVec,
    applied: [IntCounter; 3],
    late: [IntCounter; 3],
    newest: Arc<NewestEvent>,
    rejected: Vec<(&'static str, IntCounter)>,
    duplicate_offset: IntCounter,
    duplicate_event_id: IntCounter,
    pub(crate) overflow: IntCounter,
    /// By [`JOIN_STATES`]: the cross-stream joins, the card stream's tracked entries, dialogs.
    join_evictions: [IntCounter; 3],
    pub(crate) split_managers: IntCounter,
}

const STREAMS: [Kind; 3] = [Kind::Call, Kind::Message, Kind::CardChange];

/// The `state` label of `salespulse_join_state_entries` and `salespulse_join_state_evictions_total`:
/// the cross-stream joins (calls awaiting a card change, recent changes, contacts, tasks), the card
/// stream's tracked cards, tasks, invoices and clients, and the message stream's dialogs.
pub(crate) const JOIN_STATES: [&str; 3] = ["joins", "cards", "dialogs"];
pub(crate) const JOINS: usize = 0;
pub(crate) const CARDS: usize = 1;
pub(crate) const DIALOGS: usize = 2;

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
        let newest = Arc::new(NewestEvent::new()?);
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
        let join_evictions = IntCounterVec::new(
            Opts::new(
                "salespulse_join_state_evictions_total",
                "Join state entries dropped because a per-manager bound was reached, by state.",
            ),
            &["state"],
        )?;
        let split_managers = IntCounter::new(
            "salespulse_managers_split_total",
            "Managers whose events arrived on more than one partition group of this replica (producers not keying by manager_id).",
        )?;
        for collector in [
            Box::new(received.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(applied_vec.clone()),
            Box::new(late_vec.clone()),
            Box::new(NewestCollector(Arc::clone(&newest))),
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
            newest,
            rejected: reject_reasons().map(|r| (r, rejected_vec.with_label_values(&[r]))).collect(),
            duplicate_offset: duplicate_vec.with_label_values(&[Duplicate::Offset.as_str()]),
            duplicate_event_id: duplicate_vec.with_label_values(&[Duplicate::EventId.as_str()]),
            overflow,
            join_evictions: JOIN_STATES.map(|state| join_evictions.with_label_values(&[state])),
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
        self.newest.observe(i, event_ms);
    }

    /// Counts `count` entries of join state `state` (an index into [`JOIN_STATES`]) evicted at
    /// their per-manager bound; nothing to do for none, the usual case.
    pub(crate) fn evicted(&self, state: usize, count: u64) {
        if count > 0 {
            self.join_evictions[state].inc_by(count);
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
        (self.applied[i].get(), self.late[i].get(), self.newest.seconds(i))
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

/// `salespulse_last_event_timestamp_seconds`: the newest event time applied per stream, a true
/// maximum whichever apply thread saw it (`fetch_max`, and the gauge's values are read from the
/// atomics at collection rather than written per event).
struct NewestEvent {
    ms: [AtomicI64; 3],
    family: GaugeVec,
}

impl NewestEvent {
    fn new() -> prometheus::Result<Self> {
        let family = GaugeVec::new(
            Opts::new("salespulse_last_event_timestamp_seconds", "Event time of the newest event applied, by stream."),
            &["stream"],
        )?;
        for kind in STREAMS {
            family.with_label_values(&[kind.as_str()]);
        }
        Ok(NewestEvent { ms: [const { AtomicI64::new(0) }; 3], family })
    }

    fn observe(&self, stream: usize, event_ms: i64) {
        // A plain load first: most events are not the newest, and a read-modify-write on a line
        // both apply threads share would cost every event.
        if event_ms > self.ms[stream].load(Ordering::Relaxed) {
            self.ms[stream].fetch_max(event_ms, Ordering::Relaxed);
        }
    }

    fn seconds(&self, stream: usize) -> f64 {
        self.ms[stream].load(Ordering::Relaxed) as f64 / 1000.0
    }
}

/// Registers [`NewestEvent`]: the children exist from the start (at 0), their values are filled
/// in from the atomics.
struct NewestCollector(Arc<NewestEvent>);

impl Collector for NewestCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.family.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.0.family.collect();
        for metric in families.iter_mut().flat_map(|family| family.mut_metric().iter_mut()) {
            let stream = metric.get_label().iter().find(|l| l.name() == "stream");
            if let Some(i) = stream.and_then(|l| STREAMS.iter().position(|k| k.as_str() == l.value())) {
                set_gauge(metric, self.0.seconds(i));
            }
        }
        families
    }
}

fn set_gauge(metric: &mut Metric, value: f64) {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    metric.set_gauge(gauge);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(registry: &Registry, stream: &str) -> f64 {
        let families = registry.gather();
        let family = families.iter().find(|f| f.name() == "salespulse_last_event_timestamp_seconds").unwrap();
        let metric = family.get_metric().iter().find(|m| m.get_label()[0].value() == stream).unwrap();
        metric.get_gauge().get_value()
    }

    #[test]
    fn the_newest_event_time_is_a_maximum_across_apply_threads() {
        let registry = Registry::new();
        let metrics = Arc::new(EngineMetrics::register(&registry).unwrap());
        assert_eq!(exported(&registry, "call"), 0.0, "every stream is there from the start");
        // Two threads apply interleaved event times, each ending on an older one than the other
        // thread's newest: a check-then-set per thread could leave either last value behind.
        let threads: Vec<_> = [0_i64, 1]
            .into_iter()
            .map(|offset| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for i in 0..20_000_i64 {
                        metrics.applied(Kind::Call, 1_000_000 + 2 * i + offset);
                    }
                    metrics.applied(Kind::Call, 5_000);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        metrics.applied(Kind::Message, 7_500);
        assert_eq!(exported(&registry, "call"), (1_000_000 + 2 * 19_999 + 1) as f64 / 1000.0);
        assert_eq!(exported(&registry, "message"), 7.5);
        assert_eq!(exported(&registry, "card_change"), 0.0);
        assert_eq!(metrics.stream(Kind::Call).2, exported(&registry, "call"));
    }
}
