//! Rebuilding window state from Kafka when partitions are assigned.
//!
//! The state of a partition group lives only in memory, and Kafka is the durable log. So when a
//! replica is assigned partitions (start-up, failover, rebalance), it drops whatever it held of
//! their groups and replays each partition from the first record stamped at or after
//! `now - horizon` ([`salespulse_engine::Engine::rebuild_horizon_ms`]) up to the group's
//! committed offset, through the same `Engine::ingest` as live records. Then it goes on as
//! usual. Replayed records are not stored as offsets (the committed offset keeps meaning
//! "applied"); the engine's ledger makes the replay decide exactly as the first pass did.
//!
//! A partition is caught up when its next record to apply reaches the committed offset, seen
//! either from the records themselves or from the consumer's position (which also moves past
//! offsets that hold no record, such as transaction markers). Until every assigned partition is
//! caught up, [`crate::Health::ready`] is false and the `salespulse_rebuild_*` metrics show the
//! progress.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{Gauge, IntCounter, IntGauge, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use salespulse_engine::Engine;

use crate::status::Health;

/// Whether a record is replayed (state only) or live (state, then its offset is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Below the committed offset of a partition being rebuilt: applied before by someone.
    Replayed,
    /// At or past the committed offset.
    Live,
}

/// One partition being rebuilt.
#[derive(Debug)]
struct Pending {
    topic: Box<str>,
    partition: i32,
    /// The committed offset: the rebuild is done once the next record to apply reaches it.
    target: i64,
    /// The next offset expected (the start offset at first).
    next: i64,
}

impl Pending {
    /// Whether the consumer's position in `positions` has reached the target.
    fn reached(&self, positions: &TopicPartitionList) -> bool {
        let position = positions.find_partition(&self.topic, self.partition).map(|e| e.offset());
        matches!(position, Some(Offset::Offset(position)) if position >= self.target)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Few partitions per replica: a list scanned per record is cheaper than hashing a key.
    pending: Vec<Pending>,
    /// When the current round of rebuilds began.
    started: Option<Instant>,
    /// Groups whose assignment was lost but whose state is still served, until the next
    /// assignment drops or rebuilds them.
    orphaned: BTreeSet<i32>,
}

struct RebuildMetrics {
    partitions: IntGauge,
    remaining: IntGauge,
    records: IntCounter,
    started: IntCounter,
    failures: IntCounter,
    dropped_managers: IntCounter,
    duration: Gauge,
}

impl RebuildMetrics {
    fn register(registry: &Registry) -> prometheus::Result<RebuildMetrics> {
        let metrics = RebuildMetrics {
            partitions: IntGauge::new(
                "salespulse_rebuild_partitions",
                "Assigned partitions still replaying up to their committed offset (not ready while above 0).",
            )?,
            remaining: IntGauge::new(
                "salespulse_rebuild_records_remaining",
                "Offsets left to replay before the rebuilding partitions reach their committed offsets (at most).",
            )?,
            records: IntCounter::new(
                "salespulse_rebuild_records_total",
                "Records replayed to rebuild state (they are also counted as received).",
            )?,
            started: IntCounter::new(
                "salespulse_rebuild_partitions_total",
                "Partition rebuilds started: assigned partitions with a committed offset and history to replay.",
            )?,
            failures: IntCounter::new(
                "salespulse_rebuild_failures_total",
                "Offset look-ups that failed on assignment (the partition replays from its beginning, or resumes with empty state).",
            )?,
            dropped_managers: IntCounter::new(
                "salespulse_rebuild_dropped_managers_total",
                "Manager states dropped because their partition group was revoked or is rebuilt.",
            )?,
            duration: Gauge::new(
                "salespulse_rebuild_last_duration_seconds",
                "How long the last completed rebuild took, from assignment until every partition caught up.",
            )?,
        };
        registry.register(Box::new(metrics.partitions.clone()))?;
        registry.register(Box::new(metrics.remaining.clone()))?;
        registry.register(Box::new(metrics.records.clone()))?;
        registry.register(Box::new(metrics.started.clone()))?;
        registry.register(Box::new(metrics.failures.clone()))?;
        registry.register(Box::new(metrics.dropped_managers.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        Ok(metrics)
    }
}

/// The rebuilds in progress of one consumer.
pub(crate) struct Rebuilds {
    /// How much history a rebuild replays.
    horizon_ms: i64,
    /// Bound of each offset look-up on assignment.
    lookup_timeout: Duration,
    /// Set while anything is pending, so live records skip the lock.
    active: AtomicBool,
    state: Mutex<State>,
    health: Arc<Health>,
    metrics: RebuildMetrics,
}

impl Rebuilds {
    pub(crate) fn new(horizon_ms: i64, health: Arc<Health>, registry: &Registry) -> prometheus::Result<Rebuilds> {
        Ok(Rebuilds {
            horizon_ms,
            lookup_timeout: Duration::from_secs(10),
            active: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            health,
            metrics: RebuildMetrics::register(registry)?,
        })
    }

    /// Whether any partition is still rebuilding.
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Before `assignment` is assigned: drops what this replica held of its partition groups and
    /// sets each partition's start offset so that the history within the horizon is replayed.
    /// Partitions with no committed offset keep the default (`auto.offset.reset`): there is no
    /// applied history to rebuild. When a look-up fails the partition replays from its beginning
    /// (time look-up) or resumes at its committed offset with empty state (committed look-up):
    /// counted and logged.
    pub(crate) fn plan<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        engine: &Engine,
        assignment: &mut TopicPartitionList,
    ) {
        let mut groups: BTreeSet<i32> = assignment.elements().iter().map(|e| e.partition()).collect();
        groups.append(&mut self.state.lock().orphaned);
        self.forget(engine, &groups);
        let committed = match consumer.committed_offsets(assignment.clone(), self.lookup_timeout) {
            Ok(committed) => committed,
            Err(error) => {
                self.metrics.failures.inc();
                tracing::warn!(%error, "committed offsets unknown: assigned partitions resume with empty state");
                return;
            }
        };
        let mut to_rebuild: Vec<(String, i32, i64)> = Vec::new();
        for element in committed.elements() {
            match (element.error(), element.offset()) {
                (Ok(()), Offset::Offset(offset)) => {
                    to_rebuild.push((element.topic().to_owned(), element.partition(), offset))
                }
                (Ok(()), _) => {}
                (Err(error), _) => {
                    self.metrics.failures.inc();
                    tracing::warn!(topic = element.topic(), partition = element.partition(), %error,
                        "committed offset unknown: the partition resumes with empty state");
                }
            }
        }
        if to_rebuild.is_empty() {
            return;
        }
        let from_ms = now_ms() - self.horizon_ms;
        let mut times = TopicPartitionList::with_capacity(to_rebuild.len());
        for (topic, partition, _) in &to_rebuild {
            // `offsets_for_times` takes the timestamp in the offset field.
            let _ = times.add_partition_offset(topic, *partition, Offset::Offset(from_ms));
        }
        let by_time = consumer.offsets_for_times(times, self.lookup_timeout).map_err(|error| {
            self.metrics.failures.inc();
            tracing::warn!(%error, "offsets for the rebuild horizon unknown: partitions replay from their beginning");
        });
        let mut state = self.state.lock();
        for (topic, partition, committed) in to_rebuild {
            let found = by_time.as_ref().ok().and_then(|list| list.find_partition(&topic, partition));
            let (start, next) = match found.map(|e| (e.error(), e.offset())) {
                Some((Ok(()), Offset::Offset(offset))) if offset < committed => (Offset::Offset(offset), offset),
                // No record at or after the horizon start, or none before the committed offset:
                // nothing to replay.
                Some((Ok(()), Offset::Offset(_) | Offset::End)) => (Offset::Offset(committed), committed),
                _ => (Offset::Beginning, 0),
            };
            if let Err(error) = assignment.set_partition_offset(&topic, partition, start) {
                tracing::warn!(topic, partition, %error, "could not set the rebuild start offset");
                continue;
            }
            if next >= committed {
                continue;
            }
            self.metrics.started.inc();
            self.metrics.partitions.inc();
            self.metrics.remaining.add(committed - next);
            tracing::info!(topic, partition, start = next, committed, "rebuilding the partition's state");
            state.pending.push(Pending { topic: topic.into(), partition, target: committed, next });
        }
        if !state.pending.is_empty() {
            state.started.get_or_insert_with(Instant::now);
            self.active.store(true, Ordering::Relaxed);
        }
        self.health.rebuilding.store(state.pending.len() as u64, Ordering::Relaxed);
    }

    /// Partitions are revoked: their groups' state goes, and so do their rebuilds. When the
    /// assignment was `lost` (the group session expired, as during a broker outage) the state
    /// stays on show until the next assignment decides: a replica cut off from the broker keeps
    /// serving its windows rather than going blank. (If another replica took the partitions
    /// meanwhile, both export those managers until this one rejoins; docs/scaling.md.)
    pub(crate) fn revoke(&self, engine: &Engine, revoked: &TopicPartitionList, lost: bool) {
        let groups: BTreeSet<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
        if lost {
            let mut state = self.state.lock();
            self.cancel(&mut state, &groups);
            state.orphaned.extend(groups);
            return;
        }
        self.forget(engine, &groups);
    }

    /// Ends the rebuilds of `groups` in progress, unfinished.
    fn cancel(&self, state: &mut State, groups: &BTreeSet<i32>) {
        let before = state.pending.len();
        state.pending.retain(|p| {
            let keep = !groups.contains(&p.partition);
            if !keep {
                self.metrics.remaining.sub((p.target - p.next).max(0));
            }
            keep
        });
        if state.pending.len() != before {
            self.metrics.partitions.set(state.pending.len() as i64);
            self.settle(state);
        }
    }

    /// Drops the engine's state of `groups` and any rebuild of them in progress.
    fn forget(&self, engine: &Engine, groups: &BTreeSet<i32>) {
        let mut dropped = 0;
        for &group in groups {
            dropped += engine.drop_partition_group(group);
        }
        if dropped > 0 {
            self.metrics.dropped_managers.inc_by(dropped as u64);
            tracing::info!(managers = dropped, groups = ?groups, "dropped the state of partition groups");
        }
        let mut state = self.state.lock();
        for group in groups {
            state.orphaned.remove(group);
        }
        self.cancel(&mut state, groups);
    }

    /// Classifies a record about to be applied and counts the rebuild's progress.
    pub(crate) fn record(&self, topic: &str, partition: i32, offset: i64) -> Replay {
        if !self.active() {
            return Replay::Live;
        }
        let mut state = self.state.lock();
        let Some(index) = state.pending.iter().position(|p| p.partition == partition && p.topic.as_ref() == topic)
        else {
            return Replay::Live;
        };
        let pending = &mut state.pending[index];
        if offset >= pending.target {
            // The records up to the committed offset are gone (retention, markers): caught up.
            self.finish(&mut state, index);
            return Replay::Live;
        }
        let next = offset + 1;
        self.metrics.remaining.sub((next - pending.next).max(0).min(pending.target - pending.next));
        pending.next = pending.next.max(next);
        self.metrics.records.inc();
        if pending.next >= pending.target {
            self.finish(&mut state, index);
        }
        Replay::Replayed
    }

    /// Whether some rebuilding partition's consumer position has reached its target.
    pub(crate) fn any_reached(&self, positions: &TopicPartitionList) -> bool {
        self.state.lock().pending.iter().any(|pending| pending.reached(positions))
    }

    /// Marks partitions whose consumer position reached their target as caught up. The caller
    /// makes sure every record polled up to those positions is applied first.
    pub(crate) fn check_positions(&self, positions: &TopicPartitionList) {
        let mut state = self.state.lock();
        let mut index = 0;
        while index < state.pending.len() {
            let pending = &state.pending[index];
            if pending.reached(positions) {
                self.metrics.remaining.sub((pending.target - pending.next).max(0));
                state.pending[index].next = state.pending[index].target;
                self.finish(&mut state, index);
                continue;
            }
            index += 1;
        }
    }

    fn finish(&self, state: &mut State, index: usize) {
        let done = state.pending.swap_remove(index);
        self.metrics.remaining.sub((done.target - done.next).max(0));
        self.metrics.partitions.set(state.pending.len() as i64);
        tracing::debug!(topic = %done.topic, partition = done.partition, "partition rebuilt");
        self.settle(state);
    }

    /// Publishes the count of pending rebuilds; closes the round when none is left.
    fn settle(&self, state: &mut State) {
        self.health.rebuilding.store(state.pending.len() as u64, Ordering::Relaxed);
        if !state.pending.is_empty() {
            return;
        }
        self.active.store(false, Ordering::Relaxed);
        self.metrics.remaining.set(0);
        if let Some(started) = state.started.take() {
            let seconds = started.elapsed().as_secs_f64();
            self.metrics.duration.set(seconds);
            tracing::info!(seconds, replayed = self.metrics.records.get(), "state rebuilt; ready");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebuilds() -> (Rebuilds, Arc<Health>) {
        let health = Arc::new(Health::default());
        (Rebuilds::new(3_600_000, Arc::clone(&health), &Registry::new()).unwrap(), health)
    }

    fn pending(rebuilds: &Rebuilds, topic: &str, partition: i32, next: i64, target: i64) {
        let mut state = rebuilds.state.lock();
        state.pending.push(Pending { topic: topic.into(), partition, target, next });
        state.started.get_or_insert_with(Instant::now);
        rebuilds.metrics.partitions.inc();
        rebuilds.metrics.remaining.add(target - next);
        rebuilds.active.store(true, Ordering::Relaxed);
        rebuilds.health.rebuilding.store(state.pending.len() as u64, Ordering::Relaxed);
    }

    #[test]
    fn records_below_the_committed_offset_are_replays_until_caught_up() {
        let (rebuilds, health) = rebuilds();
        assert_eq!(rebuilds.record("calls", 0, 5), Replay::Live);
        pending(&rebuilds, "calls", 0, 10, 13);
        pending(&rebuilds, "calls", 1, 0, 2);
        assert_eq!(health.rebuilding(), 2);
        assert_eq!(rebuilds.metrics.remaining.get(), 5);
        assert_eq!(rebuilds.record("chat", 0, 10), Replay::Live);
        assert_eq!(rebuilds.record("calls", 0, 10), Replay::Replayed);
        assert_eq!(rebuilds.record("calls", 0, 11), Replay::Replayed);
        assert_eq!(rebuilds.metrics.remaining.get(), 3);
        assert_eq!(rebuilds.record("calls", 0, 12), Replay::Replayed);
        assert_eq!(health.rebuilding(), 1);
        assert_eq!(rebuilds.record("calls", 0, 13), Replay::Live);
        assert!(rebuilds.active());
        // Offset 0 is gone (retention): the first record is already the last one to replay.
        assert_eq!(rebuilds.record("calls", 1, 1), Replay::Replayed);
        assert!(!rebuilds.active());
        assert_eq!((health.rebuilding(), rebuilds.metrics.remaining.get()), (0, 0));
        assert_eq!(rebuilds.metrics.records.get(), 4);
        assert_eq!(rebuilds.metrics.partitions.get(), 0);
    }

    #[test]
    fn a_gap_up_to_the_target_ends_the_rebuild() {
        let (rebuilds, health) = rebuilds();
        pending(&rebuilds, "calls", 0, 0, 10);
        // The records before the committed offset were markers or are gone: the position says so.
        let mut positions = TopicPartitionList::new();
        positions.add_partition_offset("calls", 0, Offset::Offset(9)).unwrap();
        rebuilds.check_positions(&positions);
        assert_eq!(health.rebuilding(), 1);
        positions.set_partition_offset("calls", 0, Offset::Offset(10)).unwrap();
        rebuilds.check_positions(&positions);
        assert_eq!(health.rebuilding(), 0);
        assert_eq!(rebuilds.metrics.remaining.get(), 0);
        // Or the first record after the gap is already live.
        pending(&rebuilds, "calls", 0, 0, 10);
        assert_eq!(rebuilds.record("calls", 0, 12), Replay::Live);
        assert!(!rebuilds.active());
    }
}
