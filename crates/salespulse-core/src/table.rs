//! Concurrent per-manager state, kept per Kafka partition.
//!
//! Each partition has its own map from manager id to that manager's state, so that a rebalance can
//! drop (and later rebuild) exactly the state that came from a partition. The hot path takes a
//! shard read lock of the partition's `DashMap` and updates the manager's state through atomics
//! (see `window::Counters` for the single-writer rule); inserting a new manager is the only step
//! that write-locks a shard, and a scrape only ever takes read locks. A hard cap on the number of managers across all partitions keeps a
//! flood of random `manager_id`s from blowing up memory or Prometheus cardinality.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

/// A small number naming one Kafka topic-partition inside this process.
pub type PartitionId = u32;

/// The manager cap is reached; the event was not attributed to a new manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("manager cap reached: new managers are counted in the overflow series")]
pub struct Overflow;

/// One manager's state with the bookkeeping the table needs.
#[derive(Debug)]
pub struct Entry<S> {
    /// The team named by the manager's latest event that named one.
    team: Mutex<Option<Arc<str>>>,
    /// Fingerprint of `team`, so an unchanged team costs no lock.
    team_fingerprint: AtomicU64,
    /// Wall-clock time of the latest event applied, for idle eviction.
    last_update_ms: AtomicI64,
    /// The streams' state.
    pub state: S,
}

impl<S> Entry<S> {
    fn new(state: S, now_ms: i64) -> Self {
        Entry {
            team: Mutex::new(None),
            team_fingerprint: AtomicU64::new(0),
            last_update_ms: AtomicI64::new(now_ms),
            state,
        }
    }

    /// Sets the team if `team` names a different one (locks and allocates only on change).
    pub fn set_team(&self, team: Option<&str>) {
        let Some(team) = team else { return };
        let fingerprint = crate::ledger::fingerprint(team) | 1;
        if self.team_fingerprint.load(Ordering::Relaxed) == fingerprint {
            return;
        }
        *self.team.lock() = Some(Arc::from(team));
        self.team_fingerprint.store(fingerprint, Ordering::Relaxed);
    }

    /// The manager's team, if any event named one.
    pub fn team(&self) -> Option<Arc<str>> {
        self.team.lock().clone()
    }

    /// Wall-clock time of the latest event applied.
    pub fn last_update_ms(&self) -> i64 {
        self.last_update_ms.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Shared {
    max_managers: usize,
    managers: AtomicUsize,
    overflow_events: AtomicU64,
}

/// Manager state for all partitions.
#[derive(Debug)]
pub struct ManagerTable<S> {
    shared: Arc<Shared>,
    partitions: RwLock<BTreeMap<PartitionId, Arc<PartitionManagers<S>>>>,
}

/// The managers whose events came from one partition (group).
#[derive(Debug)]
pub struct PartitionManagers<S> {
    id: PartitionId,
    /// Held by whoever applies events to this partition's managers: the window counters rely on
    /// one writer at a time.
    writer: Mutex<()>,
    shared: Arc<Shared>,
    managers: DashMap<Arc<str>, Entry<S>>,
}

impl<S> ManagerTable<S> {
    /// An empty table that holds at most `max_managers` managers.
    pub fn new(max_managers: usize) -> Self {
        ManagerTable {
            shared: Arc::new(Shared {
                max_managers,
                managers: AtomicUsize::new(0),
                overflow_events: AtomicU64::new(0),
            }),
            partitions: RwLock::new(BTreeMap::new()),
        }
    }

    /// The managers of partition `id`, created empty on first use.
    pub fn partition(&self, id: PartitionId) -> Arc<PartitionManagers<S>> {
        if let Some(found) = self.partitions.read().get(&id) {
            return Arc::clone(found);
        }
        let mut partitions = self.partitions.write();
        let entry = partitions.entry(id).or_insert_with(|| {
            Arc::new(PartitionManagers {
                id,
                writer: Mutex::new(()),
                shared: Arc::clone(&self.shared),
                managers: DashMap::new(),
            })
        });
        Arc::clone(entry)
    }

    /// Drops every manager state that came from partition `id`; returns how many.
    pub fn remove_partition(&self, id: PartitionId) -> usize {
        let Some(removed) = self.partitions.write().remove(&id) else {
            return 0;
        };
        let count = removed.managers.len();
        self.shared.managers.fetch_sub(count, Ordering::Relaxed);
        removed.managers.clear();
        count
    }

    /// How many partitions hold state of `manager` (more than one when its events are not keyed
    /// by manager). Walks the partitions; meant for the rare moment a manager is created.
    pub fn partitions_holding(&self, manager: &str) -> usize {
        self.partitions.read().values().filter(|p| p.managers.contains_key(manager)).count()
    }

    /// Visits every manager of every partition under shard read locks. A manager whose events came
    /// from several partitions is visited once per partition.
    pub fn for_each(&self, mut visit: impl FnMut(PartitionId, &Arc<str>, &Entry<S>)) {
        let partitions: Vec<_> = self.partitions.read().values().cloned().collect();
        for partition in partitions {
            for item in partition.managers.iter() {
                visit(partition.id, item.key(), item.value());
            }
        }
    }

    /// Drops managers with no event applied since `before_ms` (wall clock); returns how many.
    pub fn evict_idle(&self, before_ms: i64) -> usize {
        self.evict_idle_with(before_ms, |_, _| ())
    }

    /// Like [`ManagerTable::evict_idle`], showing each manager to `on_evict` before it is dropped
    /// (to keep what must outlive it, such as team totals).
    pub fn evict_idle_with(&self, before_ms: i64, mut on_evict: impl FnMut(&Arc<str>, &Entry<S>)) -> usize {
        let partitions: Vec<_> = self.partitions.read().values().cloned().collect();
        let mut evicted = 0;
        for partition in partitions {
            partition.managers.retain(|manager, entry| {
                let keep = entry.last_update_ms() >= before_ms;
                if !keep {
                    on_evict(manager, entry);
                    evicted += 1;
                }
                keep
            });
        }
        self.shared.managers.fetch_sub(evicted, Ordering::Relaxed);
        evicted
    }

    /// Managers held now, across partitions.
    pub fn len(&self) -> usize {
        self.shared.managers.load(Ordering::Relaxed)
    }

    /// Whether no manager is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events that were not attributed because the cap was reached, since start.
    pub fn overflow_events(&self) -> u64 {
        self.shared.overflow_events.load(Ordering::Relaxed)
    }

    /// The configured cap.
    pub fn max_managers(&self) -> usize {
        self.shared.max_managers
    }
}

impl<S> PartitionManagers<S> {
    /// The partition's id.
    pub fn id(&self) -> PartitionId {
        self.id
    }

    /// Takes the partition's writer lock; hold it while applying events to its managers.
    pub fn writer(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.writer.lock()
    }

    /// Runs `update` on the state of `manager`, creating it with `init` if the cap allows.
    pub fn update<R>(
        &self,
        manager: &str,
        now_ms: i64,
        init: impl FnOnce() -> S,
        update: impl FnOnce(&Entry<S>) -> R,
    ) -> Result<R, Overflow> {
        if let Some(found) = self.managers.get(manager) {
            found.last_update_ms.store(now_ms, Ordering::Relaxed);
            return Ok(update(&found));
        }
        let shared = &self.shared;
        if shared.managers.fetch_add(1, Ordering::Relaxed) >= shared.max_managers {
            shared.managers.fetch_sub(1, Ordering::Relaxed);
            shared.overflow_events.fetch_add(1, Ordering::Relaxed);
            return Err(Overflow);
        }
        let slot = self.managers.entry(Arc::from(manager));
        if matches!(slot, dashmap::Entry::Occupied(_)) {
            // Another thread inserted it between our lookup and here.
            shared.managers.fetch_sub(1, Ordering::Relaxed);
        }
        let found = slot.or_insert_with(|| Entry::new(init(), now_ms)).downgrade();
        found.last_update_ms.store(now_ms, Ordering::Relaxed);
        Ok(update(&found))
    }

    /// Managers held for this partition.
    pub fn len(&self) -> usize {
        self.managers.len()
    }

    /// Whether the partition holds no manager.
    pub fn is_empty(&self) -> bool {
        self.managers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_create_then_reuse() {
        let table: ManagerTable<AtomicU64> = ManagerTable::new(10);
        let p = table.partition(0);
        for _ in 0..3 {
            p.update("ivanov", 1, || AtomicU64::new(0), |e| e.state.fetch_add(1, Ordering::Relaxed)).unwrap();
        }
        let mut seen = Vec::new();
        table.for_each(|pid, m, e| seen.push((pid, m.to_string(), e.state.load(Ordering::Relaxed))));
        assert_eq!(seen, vec![(0, "ivanov".to_owned(), 3)]);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn cap_counts_overflow_and_keeps_existing() {
        let table: ManagerTable<u64> = ManagerTable::new(2);
        let p = table.partition(7);
        p.update("a", 1, || 0, |_| ()).unwrap();
        p.update("b", 1, || 0, |_| ()).unwrap();
        assert_eq!(p.update("c", 1, || 0, |_| ()), Err(Overflow));
        assert_eq!(p.update("d", 1, || 0, |_| ()), Err(Overflow));
        assert!(p.update("a", 2, || 0, |_| ()).is_ok());
        assert_eq!((table.len(), table.overflow_events()), (2, 2));
    }

    #[test]
    fn partitions_are_dropped_whole() {
        let table: ManagerTable<u64> = ManagerTable::new(10);
        table.partition(1).update("a", 1, || 0, |_| ()).unwrap();
        table.partition(2).update("a", 1, || 0, |_| ()).unwrap();
        table.partition(2).update("b", 1, || 0, |_| ()).unwrap();
        assert_eq!(table.remove_partition(2), 2);
        assert_eq!(table.len(), 1);
        assert_eq!(table.remove_partition(2), 0);
    }

    #[test]
    fn partitions_holding_counts_split_managers() {
        let table: ManagerTable<u64> = ManagerTable::new(10);
        table.partition(1).update("a", 1, || 0, |_| ()).unwrap();
        table.partition(2).update("b", 1, || 0, |_| ()).unwrap();
        assert_eq!(table.partitions_holding("a"), 1);
        table.partition(3).update("a", 1, || 0, |_| ()).unwrap();
        assert_eq!(table.partitions_holding("a"), 2);
        assert_eq!(table.partitions_holding("c"), 0);
    }

    #[test]
    fn idle_managers_are_evicted() {
        let table: ManagerTable<u64> = ManagerTable::new(10);
        let p = table.partition(0);
        p.update("old", 100, || 0, |_| ()).unwrap();
        p.update("new", 500, || 0, |_| ()).unwrap();
        assert_eq!(table.evict_idle(200), 1);
        assert_eq!(table.len(), 1);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn team_follows_latest_event() {
        let table: ManagerTable<u64> = ManagerTable::new(10);
        let p = table.partition(0);
        p.update("a", 1, || 0, |e| e.set_team(Some("north"))).unwrap();
        p.update("a", 1, || 0, |e| e.set_team(None)).unwrap();
        let mut team = None;
        table.for_each(|_, _, e| team = e.team());
        assert_eq!(team.as_deref(), Some("north"));
    }
}
