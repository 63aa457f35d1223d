//! Exactly-once effect over at-least-once delivery, per Kafka partition.
//!
//! Kafka redelivers after a crash or a rebalance: an offset below the partition's next offset has
//! been applied already. Producers resend too (webhook retries): the same `event_id` at a new
//! offset. For those the ledger keeps 64-bit fingerprints of event ids in two generations keyed by
//! event time: a fingerprint is remembered for at least `horizon` and at most `2 * horizon` of the
//! partition's event time, so memory is bounded by the event rate, not by uptime, and a replay of
//! the same partition decides exactly as the first pass did.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// Why an event was not applied again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicate {
    /// The offset was applied before (redelivery).
    Offset,
    /// The event id was seen within the horizon (a producer retry).
    EventId,
}

impl Duplicate {
    /// The value of the `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Duplicate::Offset => "offset",
            Duplicate::EventId => "event_id",
        }
    }
}

/// What one partition has applied.
#[derive(Debug)]
pub struct Ledger {
    /// The lowest offset not applied yet; `None` before the first event.
    next_offset: Option<i64>,
    /// The newest event time accepted on this partition.
    max_event_ms: Option<i64>,
    fingerprints: Fingerprints,
}

impl Ledger {
    /// An empty ledger remembering event ids for `horizon_ms` of event time.
    pub fn new(horizon_ms: i64) -> Self {
        Ledger { next_offset: None, max_event_ms: None, fingerprints: Fingerprints::new(horizon_ms) }
    }

    /// Whether the message at `offset` was applied already.
    pub fn seen_offset(&self, offset: i64) -> bool {
        self.next_offset.is_some_and(|next| offset < next)
    }

    /// Records that the message at `offset` is done (applied, rejected or dropped as duplicate).
    pub fn mark_offset(&mut self, offset: i64) {
        let next = offset.saturating_add(1);
        if self.next_offset.is_none_or(|current| next > current) {
            self.next_offset = Some(next);
        }
    }

    /// The lowest offset not applied yet.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// The partition's watermark: the newest event time accepted, less `allowed_lateness_ms`.
    /// Events before it are late. `None` before the first event.
    pub fn watermark(&self, allowed_lateness_ms: i64) -> Option<i64> {
        self.max_event_ms.map(|max| max.saturating_sub(allowed_lateness_ms))
    }

    /// Records an accepted event's time; only accepted events move the watermark, so a rejected
    /// event from the future never does.
    pub fn advance(&mut self, event_ms: i64) {
        if self.max_event_ms.is_none_or(|max| event_ms > max) {
            self.max_event_ms = Some(event_ms);
        }
    }

    /// Remembers `event_id` at event time `event_ms`; `true` if it was already remembered.
    pub fn check_event_id(&mut self, event_id: &str, event_ms: i64) -> bool {
        self.fingerprints.check_and_insert(fingerprint(event_id), event_ms)
    }

    /// Fingerprints held now (both generations).
    pub fn fingerprints_len(&self) -> usize {
        self.fingerprints.current.len() + self.fingerprints.previous.len()
    }

    /// Approximate heap bytes held by the fingerprints.
    pub fn heap_bytes(&self) -> usize {
        // hashbrown keeps one control byte per bucket besides the value.
        (self.fingerprints.current.capacity() + self.fingerprints.previous.capacity()) * 9
    }
}

/// The 64-bit fingerprint of an event id. FNV-1a then a final mix: stable across runs and
/// processes, which replays rely on.
pub fn fingerprint(event_id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in event_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser: spreads FNV's weak high bits over the whole word.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Two generations of fingerprints; the older one is dropped when the partition's event time has
/// moved a horizon past the start of the current one.
#[derive(Debug)]
struct Fingerprints {
    horizon_ms: i64,
    generation_start_ms: Option<i64>,
    current: HashSet<u64, FingerprintHasher>,
    previous: HashSet<u64, FingerprintHasher>,
}

impl Fingerprints {
    fn new(horizon_ms: i64) -> Self {
        Fingerprints {
            horizon_ms: horizon_ms.max(1),
            generation_start_ms: None,
            current: HashSet::default(),
            previous: HashSet::default(),
        }
    }

    fn check_and_insert(&mut self, fingerprint: u64, event_ms: i64) -> bool {
        let start = *self.generation_start_ms.get_or_insert(event_ms);
        if event_ms.saturating_sub(start) >= self.horizon_ms {
            // The current generation becomes the previous one, and the old previous one's table,
            // emptied, the current one: it has room for about a generation already, so it does
            // not grow through every power of two again (each doubling holds the old and the new
            // table at once, and rehashes every fingerprint).
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.clear();
            // Two horizons without events: the previous generation is out of reach too.
            if event_ms.saturating_sub(start) >= 2 * self.horizon_ms {
                self.previous.clear();
            }
            // After a busy generation, a quiet one (or a silence) gives the room back.
            if self.current.capacity() > 2 * self.previous.len().max(1_024) {
                self.current.shrink_to(self.previous.len());
            }
            self.generation_start_ms = Some(event_ms);
        }
        if self.previous.contains(&fingerprint) {
            return true;
        }
        !self.current.insert(fingerprint)
    }
}

/// A `Hasher` for keys that are [`fingerprint`]s already: hashing them again is wasted work, so
/// a `u64` key is its own hash. Only for such keys: other input gets a weak hash.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityHasher(u64);

/// The `BuildHasher` of maps and sets keyed by fingerprints.
pub type FingerprintHasher = BuildHasherDefault<IdentityHasher>;

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn offsets_below_next_are_seen() {
        let mut ledger = Ledger::new(15 * MIN);
        assert!(!ledger.seen_offset(0));
        ledger.mark_offset(5);
        assert_eq!(ledger.next_offset(), Some(6));
        assert!(ledger.seen_offset(5));
        assert!(ledger.seen_offset(0));
        assert!(!ledger.seen_offset(6));
        // Marking an older offset never moves the ledger back.
        ledger.mark_offset(2);
        assert_eq!(ledger.next_offset(), Some(6));
    }

    #[test]
    fn event_ids_are_remembered_for_the_horizon() {
        let mut ledger = Ledger::new(15 * MIN);
        let t0 = 1_700_000_000_000;
        assert!(!ledger.check_event_id("a", t0));
        assert!(ledger.check_event_id("a", t0 + MIN));
        assert!(!ledger.check_event_id("b", t0 + 16 * MIN));
        // "a" is in the previous generation now, still remembered.
        assert!(ledger.check_event_id("a", t0 + 16 * MIN));
        // Two generations later it is gone.
        assert!(!ledger.check_event_id("c", t0 + 32 * MIN));
        assert!(!ledger.check_event_id("a", t0 + 33 * MIN));
    }

    #[test]
    fn watermark_follows_the_newest_accepted_event() {
        let mut ledger = Ledger::new(15 * MIN);
        assert_eq!(ledger.watermark(2 * MIN), None);
        ledger.advance(10 * MIN);
        ledger.advance(5 * MIN);
        assert_eq!(ledger.watermark(2 * MIN), Some(8 * MIN));
        ledger.advance(11 * MIN);
        assert_eq!(ledger.watermark(2 * MIN), Some(9 * MIN));
    }

    #[test]
    fn long_silence_drops_both_generations() {
        let mut ledger = Ledger::new(MIN);
        assert!(!ledger.check_event_id("a", 0));
        assert!(!ledger.check_event_id("a", 10 * MIN));
        assert_eq!(ledger.fingerprints_len(), 1);
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(fingerprint("evt-1"), fingerprint("evt-1"));
        let distinct: HashSet<u64> = (0..100_000).map(|i| fingerprint(&format!("evt-{i}"))).collect();
        assert_eq!(distinct.len(), 100_000);
    }
}
