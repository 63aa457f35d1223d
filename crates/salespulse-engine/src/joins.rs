//! Joins across streams, per manager: calls that never reached the CRM, and tasks rescheduled
//! without any contact with the client.
//!
//! Both need events of two streams (calls and card changes, or calls/messages and card changes)
//! of the same manager, which meet in one manager state because producers key every topic by
//! `manager_id` (see the partition groups in ARCHITECTURE.md). The join state is small, bounded
//! per manager, and expires; clients, cards and tasks are kept as 64-bit fingerprints, never as
//! their ids.
//!
//! Rules (also in docs/metrics.md):
//! - A *loggable call* is a successful contact (answered, talk at or above the threshold) that
//!   names a `client_id` or a `card_id`. It is *logged* when a card change by the same manager
//!   names the same client or card with an event time from the call's start to `delay` after its
//!   end; such a change may arrive before or after the call. A loggable call still unmatched when the
//!   wall clock passes its end plus `delay` is counted once as *unlogged*.
//! - A *contact* with a client is any call or message of the manager naming that `client_id`.
//!   A `task_rescheduled` is *without contact* when no contact with the task's client has an event
//!   time between the task's creation (or previous rescheduling) and this rescheduling. It is only
//!   judged when that creation or rescheduling was seen (a task older than the process is not).

use std::collections::{HashMap, VecDeque};

use salespulse_core::ledger::{fingerprint, FingerprintHasher};
use salespulse_events::{CardChange, CardChangeKind};

/// Bounds and timing of the join state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinConfig {
    /// How long after a call ends a card change may log it.
    pub unlogged_call_delay_ms: i64,
    /// Loggable calls awaiting a card change, per manager; the oldest is dropped beyond it.
    pub max_pending_calls: usize,
    /// Recent card changes kept to match calls that arrive after them, per manager.
    pub max_recent_changes: usize,
    /// Clients whose last contacts are remembered, per manager (between half of it and all of it).
    pub max_contacts: usize,
    /// Open tasks whose last scheduling is remembered, per manager (between half of it and all of it).
    pub max_tasks: usize,
}

impl Default for JoinConfig {
    fn default() -> Self {
        JoinConfig {
            unlogged_call_delay_ms: 30 * 60_000,
            max_pending_calls: 256,
            max_recent_changes: 256,
            max_contacts: 512,
            max_tasks: 512,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct PendingCall {
    client: u64,
    card: u64,
    started_ms: i64,
    due_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct Change {
    client: u64,
    card: u64,
    at_ms: i64,
}

/// One manager's join state.
#[derive(Debug, Default)]
pub struct JoinState {
    pending_calls: VecDeque<PendingCall>,
    recent_changes: VecDeque<Change>,
    /// Client fingerprint → event times of the latest contacts.
    contacts: Generations<ContactTimes>,
    /// Task fingerprint → (client fingerprint, event time it was created or last rescheduled).
    tasks: Generations<(u64, i64)>,
    counts: JoinCounts,
}

/// A bounded map in two generations: when the current one holds about half the bound
/// ([`Generations::generation_len`]), it becomes the previous one and the old previous one is
/// dropped. Every operation is O(1); what is dropped is what was least recently touched, give or
/// take a generation.
#[derive(Debug)]
struct Generations<V> {
    current: HashMap<u64, V, FingerprintHasher>,
    previous: HashMap<u64, V, FingerprintHasher>,
}

impl<V> Default for Generations<V> {
    fn default() -> Self {
        Generations { current: HashMap::default(), previous: HashMap::default() }
    }
}

impl<V: Default> Generations<V> {
    fn get(&self, key: &u64) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// The entry of `key`, moved into the current generation; returns how many entries were
    /// dropped to make room. One hash look-up when `key` is in the current generation (the
    /// usual case), two when it moves up from the previous one or is new.
    fn touch(&mut self, key: u64, bound: usize) -> (&mut V, u64) {
        let mut dropped = 0;
        if self.current.len() >= Self::generation_len(bound) && !self.current.contains_key(&key) {
            // The current generation is full: it becomes the previous one and the old previous
            // one is dropped, except for `key`'s entry. The dropped generation's table is reused,
            // so a busy manager's join state stops allocating once both have grown to the bound.
            let value = self.previous.remove(&key).unwrap_or_default();
            dropped = self.previous.len() as u64;
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.clear();
            self.current.insert(key, value);
        }
        match self.current.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => (entry.into_mut(), dropped),
            std::collections::hash_map::Entry::Vacant(entry) => {
                (entry.insert(self.previous.remove(&key).unwrap_or_default()), dropped)
            }
        }
    }

    /// Entries per generation: half the bound, less an eighth from 8 on. A hash table holds 7/8
    /// of its power-of-two buckets before it doubles, so 224 entries (of a bound of 512) stay in
    /// 256 buckets where 256 entries would take 512: the two generations of a busy manager's
    /// contacts take about 17 KB instead of 34 KB.
    fn generation_len(bound: usize) -> usize {
        let half = (bound / 2).max(1);
        if half >= 8 {
            half - half / 8
        } else {
            half
        }
    }

    fn remove(&mut self, key: &u64) {
        self.current.remove(key);
        self.previous.remove(key);
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// Contacts are remembered as the latest few event times, so a reschedule can ask "was there a
/// contact between then and now" even when events arrive somewhat out of order. Empty places hold
/// [`ContactTimes::EMPTY`], below every event time, so the entry is 24 bytes (32 with its key).
#[derive(Debug, Clone, Copy)]
struct ContactTimes {
    times: [i64; 3],
}

impl Default for ContactTimes {
    fn default() -> Self {
        ContactTimes { times: [Self::EMPTY; 3] }
    }
}

impl ContactTimes {
    const EMPTY: i64 = i64::MIN;

    /// Keeps the three latest times: `at_ms` replaces the oldest (or an empty place) when later.
    fn record(&mut self, at_ms: i64) {
        if let Some(oldest) = self.times.iter_mut().min() {
            if at_ms > *oldest {
                *oldest = at_ms;
            }
        }
    }

    fn any_between(&self, from_ms: i64, to_ms: i64) -> bool {
        self.times.iter().any(|&t| t != Self::EMPTY && (from_ms..=to_ms).contains(&t))
    }
}

/// Counters and sizes of one manager's join state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JoinCounts {
    /// Loggable calls matched by a card change in time.
    pub calls_logged: u64,
    /// Loggable calls with no card change in time.
    pub calls_unlogged: u64,
    /// Loggable calls awaiting a card change now.
    pub calls_awaiting: u64,
    /// Reschedulings judged, and those without contact.
    pub reschedules_judged: u64,
    /// Reschedulings with no contact since the task was created or last rescheduled.
    pub reschedules_without_contact: u64,
    /// Entries held now (pending calls, recent changes, contacts, tasks).
    pub entries: u64,
    /// Entries dropped because a bound was reached.
    pub evictions: u64,
}

impl JoinCounts {
    /// Adds `other` (the same manager in another partition group).
    pub fn merge(&mut self, other: &JoinCounts) {
        self.calls_logged += other.calls_logged;
        self.calls_unlogged += other.calls_unlogged;
        self.calls_awaiting += other.calls_awaiting;
        self.reschedules_judged += other.reschedules_judged;
        self.reschedules_without_contact += other.reschedules_without_contact;
        self.entries += other.entries;
        self.evictions += other.evictions;
    }
}

/// A fingerprint that is never 0 (0 means "not named").
fn key(id: Option<&str>) -> u64 {
    id.map_or(0, |id| fingerprint(id) | 1)
}

impl JoinState {
    /// A call of the manager: a contact with its client, and, when `loggable`, a call that a card
    /// change should follow.
    pub fn call(
        &mut self,
        config: &JoinConfig,
        client_id: Option<&str>,
        card_id: Option<&str>,
        started_ms: i64,
        ended_ms: i64,
        loggable: bool,
    ) {
        let (client, card) = (key(client_id), key(card_id));
        if client != 0 {
            self.contact(config, client, ended_ms);
        }
        if !loggable || (client == 0 && card == 0) {
            return;
        }
        let due_ms = ended_ms.saturating_add(config.unlogged_call_delay_ms);
        let matched = self.recent_changes.iter().any(|change| {
            names_same(change.client, change.card, client, card) && (started_ms..=due_ms).contains(&change.at_ms)
        });
        if matched {
            self.counts.calls_logged += 1;
            return;
        }
        if self.pending_calls.len() >= config.max_pending_calls {
            self.pending_calls.pop_front();
            self.counts.evictions += 1;
        }
        self.pending_calls.push_back(PendingCall { client, card, started_ms, due_ms });
    }

    /// A message of the manager: a contact with its client.
    pub fn message(&mut self, config: &JoinConfig, client_id: Option<&str>, at_ms: i64) {
        let client = key(client_id);
        if client != 0 {
            self.contact(config, client, at_ms);
        }
    }

    /// A card change of the manager: it may log pending calls, and tasks are tracked.
    pub fn card_change(&mut self, config: &JoinConfig, change: &CardChange, at_ms: i64) {
        let (client, card) = (key(change.client_id.as_deref()), key(Some(&change.card_id)));
        let before = self.pending_calls.len();
        self.pending_calls.retain(|call| {
            !(names_same(client, card, call.client, call.card) && (call.started_ms..=call.due_ms).contains(&at_ms))
        });
        self.counts.calls_logged += (before - self.pending_calls.len()) as u64;
        if self.recent_changes.len() >= config.max_recent_changes {
            self.recent_changes.pop_front();
        }
        self.recent_changes.push_back(Change { client, card, at_ms });

        let task = key(change.task_id.as_deref());
        if task == 0 {
            return;
        }
        match change.change {
            CardChangeKind::TaskCreated => self.schedule(config, task, client, at_ms),
            CardChangeKind::TaskRescheduled => {
                if let Some(&(task_client, since_ms)) = self.tasks.get(&task) {
                    let client = if client != 0 { client } else { task_client };
                    let contacted = self.contacts.get(&client).is_some_and(|c| c.any_between(since_ms, at_ms));
                    self.counts.reschedules_judged += 1;
                    if !contacted {
                        self.counts.reschedules_without_contact += 1;
                    }
                }
                self.schedule(config, task, client, at_ms);
            }
            CardChangeKind::TaskCompleted => {
                self.tasks.remove(&task);
            }
            _ => {}
        }
    }

    /// Counts the loggable calls whose delay has passed by wall-clock `now_ms` as unlogged.
    pub fn expire(&mut self, now_ms: i64) {
        let before = self.pending_calls.len();
        self.pending_calls.retain(|call| call.due_ms >= now_ms);
        self.counts.calls_unlogged += (before - self.pending_calls.len()) as u64;
        // Changes older than any call could still be matched with are of no use.
        let horizon = self.pending_calls.iter().map(|c| c.started_ms).min().unwrap_or(now_ms);
        let keep_after = horizon.min(now_ms) - 24 * 3_600_000;
        while self.recent_changes.front().is_some_and(|c| c.at_ms < keep_after) {
            self.recent_changes.pop_front();
        }
    }

    /// Entries dropped so far because a bound was reached.
    pub fn evictions(&self) -> u64 {
        self.counts.evictions
    }

    /// Counters and sizes now.
    pub fn counts(&self) -> JoinCounts {
        JoinCounts {
            calls_awaiting: self.pending_calls.len() as u64,
            entries: (self.pending_calls.len() + self.recent_changes.len() + self.contacts.len() + self.tasks.len())
                as u64,
            ..self.counts
        }
    }

    fn contact(&mut self, config: &JoinConfig, client: u64, at_ms: i64) {
        let (times, dropped) = self.contacts.touch(client, config.max_contacts);
        times.record(at_ms);
        self.counts.evictions += dropped;
    }

    fn schedule(&mut self, config: &JoinConfig, task: u64, client: u64, at_ms: i64) {
        let (entry, dropped) = self.tasks.touch(task, config.max_tasks);
        *entry = (client, at_ms);
        self.counts.evictions += dropped;
    }
}

/// Whether a change naming (`client`, `card`) is about a call naming (`call_client`, `call_card`).
fn names_same(client: u64, card: u64, call_client: u64, call_card: u64) -> bool {
    (client != 0 && client == call_client) || (card != 0 && card == call_card)
}

#[cfg(test)]
mod tests {
    use super::*;
    use salespulse_events::CardType;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_795_435_200_000;

    fn change(kind: CardChangeKind, card: &str, client: Option<&str>, task: Option<&str>) -> CardChange {
        CardChange {
            card_id: card.into(),
            card_type: if task.is_some() { CardType::Task } else { CardType::Deal },
            change: kind,
            pipeline: None,
            stage_from: None,
            stage_to: None,
            stage_progress_pct: None,
            comment_length: None,
            task_id: task.map(Into::into),
            task_due_at_ms: None,
            task_due_from_ms: None,
            amount: None,
            client_id: client.map(Into::into),
            margin: None,
            invoice_id: None,
            currency: None,
        }
    }

    fn comment(card: &str, client: Option<&str>) -> CardChange {
        change(CardChangeKind::CommentAdded, card, client, None)
    }

    #[test]
    fn a_call_followed_by_a_card_change_is_logged() {
        let config = JoinConfig::default();
        let mut state = JoinState::default();
        state.call(&config, Some("c1"), None, T0 - 2 * MIN, T0, true);
        assert_eq!(state.counts().calls_awaiting, 1);
        state.card_change(&config, &comment("deal-9", Some("c1")), T0 + 10 * MIN);
        state.expire(T0 + 60 * MIN);
        let counts = state.counts();
        assert_eq!((counts.calls_logged, counts.calls_unlogged, counts.calls_awaiting), (1, 0, 0));
    }

    #[test]
    fn a_call_with_no_card_change_in_time_is_unlogged_once() {
        let config = JoinConfig::default();
        let mut state = JoinState::default();
        state.call(&config, None, Some("deal-1"), T0 - 2 * MIN, T0, true);
        // Still within the delay: nothing is decided.
        state.expire(T0 + 30 * MIN);
        assert_eq!(state.counts().calls_unlogged, 0);
        state.expire(T0 + 30 * MIN + 1);
        state.expire(T0 + 90 * MIN);
        assert_eq!((state.counts().calls_unlogged, state.counts().calls_awaiting), (1, 0));
        // A change after the delay does not undo it.
        state.card_change(&config, &comment("deal-1", None), T0 + 31 * MIN);
        assert_eq!((state.counts().calls_logged, state.counts().calls_unlogged), (0, 1));
    }

    #[test]
    fn a_card_change_arriving_before_the_call_logs_it() {
        let config = JoinConfig::default();
        let mut state = JoinState::default();
        state.card_change(&config, &comment("deal-1", Some("c1")), T0 + 5 * MIN);
        state.call(&config, Some("c1"), None, T0 - 2 * MIN, T0, true);
        assert_eq!((state.counts().calls_logged, state.counts().calls_awaiting), (1, 0));
    }

    #[test]
    fn changes_about_someone_else_or_before_the_call_do_not_log_it() {
        let config = JoinConfig::default();
        let mut state = JoinState::default();
        state.card_change(&config, &comment("deal-1", Some("c1")), T0 - 10 * MIN);
        state.call(&config, Some("c1"), Some("deal-1"), T0 - 2 * MIN, T0, true);
        state.card_change(&config, &comment("deal-2", Some("c2")), T0 + MIN);
        state.expire(T0 + 31 * MIN);
        assert_eq!((state.counts().calls_logged, state.counts().calls_unlogged), (0, 1));
    }

    #[test]
    fn calls_that_are_not_loggable_are_not_tracked() {
        let config = JoinConfig::default();
        let mut state = JoinState::default();
        state.call(&config, Some("c1"), None, T0 - MIN, T0, false);
        state.call(&config, None, None, T0 - MIN, T0, true);
        state.expire(T0 + 60 * MIN);
        assert_eq!(state.counts(), JoinCounts { entries: 1, ..JoinCounts::default() });
    }

    #[test]
    fn reschedules_with_and_without_contact() {
        let config = JoinConfig::default();
        let mut state = JoinState::default();
        let task = |kind| change(kind, "task-card", Some("c1"), Some("t1"));
        state.card_change(&config, &task(CardChangeKind::TaskCreated), T0);
        // A call with the client, then a reschedule: with contact.
        state.call(&config, Some("c1"), None, T0 + MIN, T0 + 2 * MIN, false);
        state.card_change(&config, &task(CardChangeKind::TaskRescheduled), T0 + 10 * MIN);
        // No contact since: blind.
        state.card_change(&config, &task(CardChangeKind::TaskRescheduled), T0 + 20 * MIN);
        // A message counts as contact too.
        state.message(&config, Some("c1"), T0 + 25 * MIN);
        state.card_change(&config, &task(CardChangeKind::TaskRescheduled), T0 + 30 * MIN);
        let counts = state.counts();
        assert_eq!((counts.reschedules_judged, counts.reschedules_without_contact), (3, 1));
        // A task never seen created is not judged; a completed one is forgotten.
        state.card_change(&config, &change(CardChangeKind::TaskRescheduled, "x", Some("c9"), Some("t9")), T0);
        state.card_change(&config, &task(CardChangeKind::TaskCompleted), T0 + 40 * MIN);
        state.card_change(&config, &task(CardChangeKind::TaskRescheduled), T0 + 50 * MIN);
        assert_eq!(state.counts().reschedules_judged, 3);
    }

    #[test]
    fn bounds_evict_and_count() {
        let config = JoinConfig { max_pending_calls: 2, max_contacts: 2, ..JoinConfig::default() };
        let mut state = JoinState::default();
        for (i, client) in ["a", "b", "c"].iter().enumerate() {
            state.call(&config, Some(client), None, T0, T0 + i as i64, true);
        }
        let counts = state.counts();
        assert_eq!((counts.calls_awaiting, counts.evictions), (2, 2));
    }

    #[test]
    fn contacts_keep_the_three_latest_times_in_any_arrival_order() {
        let mut times = ContactTimes::default();
        assert!(!times.any_between(i64::MIN, i64::MAX), "empty places are no contact");
        for at in [50, 10, 40, 20, 30] {
            times.record(at);
        }
        let mut kept = times.times;
        kept.sort_unstable();
        assert_eq!(kept, [30, 40, 50]);
        assert!(times.any_between(25, 35));
        assert!(!times.any_between(5, 25), "10 and 20 were pushed out by later ones");
    }

    #[test]
    fn generations_move_entries_up_and_drop_the_older_generation_when_full() {
        let mut generations: Generations<u32> = Generations::default();
        // A bound of 4: two per generation.
        *generations.touch(1, 4).0 += 1;
        *generations.touch(2, 4).0 += 1;
        // Full: 1 and 2 become the previous generation, nothing dropped yet.
        assert_eq!(generations.touch(3, 4).1, 0);
        // 1 moves up from the previous generation with its value.
        let (value, dropped) = generations.touch(1, 4);
        assert_eq!((*value, dropped), (1, 0));
        // Full again: the previous generation (2) is dropped; 3 and 1 become the previous one.
        assert_eq!(generations.touch(4, 4).1, 1);
        assert_eq!(generations.get(&2), None);
        assert_eq!((generations.get(&1), generations.get(&3), generations.len()), (Some(&1), Some(&0), 3));
        // Touching a present key allocates nothing new.
        assert_eq!(generations.touch(4, 4), (&mut 0, 0));
        assert_eq!(generations.len(), 3);
    }

    #[test]
    fn a_busy_manager_s_generations_stay_in_their_first_power_of_two() {
        let bound = JoinConfig::default().max_contacts;
        let mut generations: Generations<ContactTimes> = Generations::default();
        let mut dropped = 0;
        for key in 1..=10_000u64 {
            dropped += generations.touch(key, bound).1;
            assert!(generations.len() <= bound);
        }
        assert_eq!(generations.len() as u64 + dropped, 10_000, "every key is held or counted as dropped");
        // 224 entries fit 256 buckets; half the bound (256) would have doubled both tables.
        let per_generation = Generations::<ContactTimes>::generation_len(bound);
        assert_eq!(per_generation, 224);
        for table in [&generations.current, &generations.previous] {
            assert!(table.capacity() < bound / 2, "capacity {} for {per_generation} entries", table.capacity());
        }
    }
}
