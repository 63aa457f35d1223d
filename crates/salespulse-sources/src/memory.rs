//! Remembered previous values per (rule, entity), for sources that send only the new value, and
//! their snapshot (bytes the daemon writes to a file) that carries them over a restart.
//!
//! Why a snapshot with log positions, not the snapshot alone nor the replay alone: on start the
//! daemon rebuilds its windows by replaying each partition from `now - rebuild horizon` up to the
//! committed offset through the same mappings. Replay alone would forget every entity whose last
//! change is older than the horizon (its next change would then come without `stage_from` /
//! `task_due_from`, or an unchanged value would look new). A snapshot alone would be ahead of the
//! replay: a replayed record would see the value it itself set as "previous" and produce no
//! transition, or a wrong one. So each remembered value carries the log [`Position`] of the
//! record that set it and a few values before it ([`HISTORY`]); a record at position `p` sees the
//! latest value set before `p` in its partition, which is what it saw the first time, as long as
//! the entity changed fewer than [`HISTORY`] times in the replayed stretch.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Values kept per entity: the latest and the ones before it.
pub const HISTORY: usize = 4;

/// Format version of the snapshot file.
const SNAPSHOT_VERSION: u32 = 1;

/// Where a record sits in the log: its topic and partition (as one stable fingerprint) and its
/// offset. Values set by records of other partitions are not ordered against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// [`Position::new`]'s fingerprint of the topic and partition.
    pub stream: u64,
    /// The record's offset.
    pub offset: i64,
}

impl Position {
    /// The position of the record at `offset` of `topic`/`partition`.
    pub fn new(topic: &str, partition: i32, offset: i64) -> Position {
        Position { stream: fingerprint(&[topic.as_bytes(), &partition.to_le_bytes()]), offset }
    }

    /// Whether this value was set by the record at `at` or a later one of its partition.
    fn at_or_after(self, at: Position) -> bool {
        self.stream == at.stream && self.offset >= at.offset
    }
}

/// FNV-1a over the parts, with a 0xff byte (never in UTF-8) between them: stable across
/// processes and Rust versions, as the snapshot file needs.
fn fingerprint(parts: &[&[u8]]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash = (hash ^ 0xff).wrapping_mul(PRIME);
        }
        for &byte in *part {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    }
    hash
}

/// One entity's recent values, oldest first; values of one partition in offset order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct History(Vec<(Option<Position>, String)>);

impl History {
    /// The value a record at `at` sees: the latest one set before it (values set at or after it
    /// in its partition are a replay's future). Without a position, the latest.
    fn before(&self, at: Option<Position>) -> Option<&str> {
        let visible = |set: &Option<Position>| match (set, at) {
            (Some(set), Some(at)) => !set.at_or_after(at),
            _ => true,
        };
        self.0.iter().rev().find(|(set, _)| visible(set)).map(|(_, value)| value.as_str())
    }

    fn put(&mut self, value: String, at: Option<Position>) {
        match at {
            // The same record again (a replay): the same value, in the same place.
            Some(at) if self.0.iter().any(|(set, _)| *set == Some(at)) => {
                if let Some(slot) = self.0.iter_mut().find(|(set, _)| *set == Some(at)) {
                    slot.1 = value;
                }
                return;
            }
            // Before the values its partition set later (a replay), else last.
            Some(at) => {
                let index = self.0.iter().position(|(set, _)| set.is_some_and(|s| s.at_or_after(at)));
                self.0.insert(index.unwrap_or(self.0.len()), (Some(at), value));
            }
            None => self.0.push((None, value)),
        }
        if self.0.len() > HISTORY {
            self.0.remove(0);
        }
    }
}

/// A bounded map from an entity's fingerprint to its recent values, kept in two generations:
/// when the young one is full it becomes the old one and the previous old one is dropped. Memory
/// is therefore at most `capacity` entities, and an entity seen within the last `capacity / 2`
/// distinct entities is always remembered.
#[derive(Debug)]
pub(crate) struct Memory {
    young: HashMap<u64, History>,
    old: HashMap<u64, History>,
    half: usize,
}

impl Memory {
    pub(crate) fn new(capacity: usize) -> Memory {
        Memory { young: HashMap::new(), old: HashMap::new(), half: (capacity / 2).max(1) }
    }

    /// The fingerprint of `(rule, entity)`, stable across processes (it keys the snapshot).
    pub(crate) fn key(rule: &str, entity: &str) -> u64 {
        fingerprint(&[rule.as_bytes(), entity.as_bytes()])
    }

    /// The value the record at `at` sees as the entity's previous one.
    pub(crate) fn get(&self, key: u64, at: Option<Position>) -> Option<&str> {
        self.young.get(&key).or_else(|| self.old.get(&key)).and_then(|history| history.before(at))
    }

    pub(crate) fn put(&mut self, key: u64, value: String, at: Option<Position>) {
        let mut history = self.young.remove(&key).or_else(|| self.old.remove(&key)).unwrap_or_default();
        history.put(value, at);
        self.insert(key, history);
    }

    fn insert(&mut self, key: u64, history: History) {
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, history);
    }

    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Every entity, the old generation first (so that loading them in order keeps the recent
    /// ones in the young generation).
    fn entries(&self) -> Vec<(u64, History)> {
        self.old.iter().chain(self.young.iter()).map(|(key, history)| (*key, history.clone())).collect()
    }
}

/// Source name -> its entities' fingerprints and values.
type Entries = BTreeMap<String, Vec<(u64, History)>>;

/// The snapshot file: every source's remembered values.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    sources: Entries,
}

/// A snapshot of remembered values that cannot be restored.
#[derive(Debug, thiserror::Error)]
#[error("not a snapshot of remembered values (version {SNAPSHOT_VERSION}): {detail}")]
pub struct SnapshotError {
    /// What was wrong.
    pub detail: String,
}

/// The snapshot of `memories` (source name -> memory) as bytes (JSON), and the entities in it.
/// Each memory is locked only while it is copied.
pub(crate) fn snapshot<'m>(memories: impl Iterator<Item = (&'m str, &'m Mutex<Memory>)>) -> (Vec<u8>, usize) {
    let mut file = SnapshotFile { version: SNAPSHOT_VERSION, sources: BTreeMap::new() };
    let mut entities = 0;
    for (name, memory) in memories {
        let entries = memory.lock().entries();
        entities += entries.len();
        file.sources.insert(name.to_owned(), entries);
    }
    // Cannot fail: string keys, integers and strings only.
    (serde_json::to_vec(&file).unwrap_or_default(), entities)
}

/// Restores a [`snapshot`] into the named memories (sources no longer configured are skipped;
/// each memory keeps its own capacity). Returns the entities restored.
pub(crate) fn restore<'m>(
    bytes: &[u8],
    memories: impl Iterator<Item = (&'m str, &'m Mutex<Memory>)>,
) -> Result<usize, SnapshotError> {
    let file: SnapshotFile = serde_json::from_slice(bytes).map_err(|e| SnapshotError { detail: e.to_string() })?;
    if file.version != SNAPSHOT_VERSION {
        return Err(SnapshotError { detail: format!("version {}", file.version) });
    }
    let mut sources = file.sources;
    let mut restored = 0;
    for (name, memory) in memories {
        let mut memory = memory.lock();
        for (key, mut history) in sources.remove(name).unwrap_or_default() {
            // A hand-edited file cannot make an entity hold more than the history bound.
            let excess = history.0.len().saturating_sub(HISTORY);
            history.0.drain(..excess);
            memory.insert(key, history);
            restored += 1;
        }
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_recent_entities_survive() {
        let mut memory = Memory::new(10);
        for i in 0..1000u64 {
            memory.put(i, i.to_string(), None);
            assert!(memory.len() <= 10);
            // The last five entities are always there.
            for j in i.saturating_sub(4)..=i {
                assert_eq!(memory.get(j, None), Some(j.to_string().as_str()));
            }
        }
        assert_eq!(memory.get(0, None), None);
        memory.put(999, "new".into(), None);
        assert_eq!(memory.get(999, None), Some("new"));
        assert_ne!(Memory::key("a", "b"), Memory::key("ab", ""));
        // Fixed values: the snapshot's keys must not change between builds.
        assert_eq!(Memory::key("task_update", "42"), 0x0c6c_070c_275a_75f3);
    }

    #[test]
    fn a_replayed_record_sees_what_it_saw_the_first_time() {
        let at = |offset| Some(Position::new("amocrm-raw", 0, offset));
        let other = Some(Position::new("amocrm-raw", 1, 1));
        let mut memory = Memory::new(100);
        // First pass: offsets 10, 20, 30 set a, b, c.
        for (offset, value) in [(10, "a"), (20, "b"), (30, "c")] {
            memory.put(7, value.into(), at(offset));
        }
        // A replay of offset 20 sees a (not c, the latest), and re-setting it changes nothing.
        assert_eq!(memory.get(7, at(20)), Some("a"));
        memory.put(7, "b".into(), at(20));
        assert_eq!(memory.get(7, at(30)), Some("b"));
        assert_eq!(memory.get(7, at(31)), Some("c"));
        assert_eq!(memory.get(7, at(10)), None);
        // Another partition's records are not ordered against these: they see the latest.
        assert_eq!(memory.get(7, other), Some("c"));
        assert_eq!(memory.get(7, None), Some("c"));
        // Only HISTORY values are kept.
        for offset in 40..50 {
            memory.put(7, offset.to_string(), at(offset));
        }
        assert_eq!(memory.get(7, at(48)), Some("47"));
        // 46..=49 are kept: a replay of the oldest kept record finds nothing before it.
        assert_eq!(memory.get(7, at(50 - HISTORY as i64)), None);
    }
}
