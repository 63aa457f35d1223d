//! The relationship type of each client, from the deals the manager's stream shows for it.
//!
//! A client is named by `client_id` on card changes (or is the client a card is known to belong
//! to). Per client the state keeps its fingerprint, the newest event time about it, how many of its
//! deals are open and how many are won, and whether its newest event handed one of its cards to
//! another manager. Its type is a pure function of the two counts:
//!
//! | won deals | open deals | type |
//! |---|---|---|
//! | 2 or more | any | `regular` |
//! | 1 | any | `current` |
//! | 0 | 1 or more | `potential` |
//! | 0 | 0 | `cold` |
//!
//! The counts come from the deal cards' statuses, which the card state keeps order-independent
//! (the newest status event wins), so the gauges are a function of the set of events, whatever
//! their order or repetition. A deal counts for one client: the `client_id` of its newest event
//! that named one. A won deal whose card leaves the state (expired) stays counted as won.
//!
//! Transitions are counted when applying an event changes the client's type, at that event's
//! time: in event-time order they are exactly the changes of the client's history; an event that
//! arrives after newer ones of the same client changes only the present (a `won` before its deal's
//! `created` counts `cold -> current`, not `cold -> potential -> current`).

use std::collections::VecDeque;

use salespulse_core::window::{ReadPlan, Windows};

use crate::state::{IdMap, NONE};

/// The relationship type of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub enum Relationship {
    /// Never bought and no open deal.
    #[default]
    Cold,
    /// An open deal, nothing won.
    Potential,
    /// Exactly one won deal.
    Current,
    /// More than one won deal.
    Regular,
}

impl Relationship {
    /// Every type, in index order.
    pub const ALL: [Relationship; 4] =
        [Relationship::Cold, Relationship::Potential, Relationship::Current, Relationship::Regular];

    /// The type of a client with `won` won deals and `open` open deals.
    pub fn of(won: u32, open: u32) -> Relationship {
        match (won, open) {
            (0, 0) => Relationship::Cold,
            (0, _) => Relationship::Potential,
            (1, _) => Relationship::Current,
            _ => Relationship::Regular,
        }
    }

    /// The `relationship` (`from`, `to`) label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Relationship::Cold => "cold",
            Relationship::Potential => "potential",
            Relationship::Current => "current",
            Relationship::Regular => "regular",
        }
    }

    /// Position in [`Relationship::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Ordered pairs of distinct types.
pub(crate) const TRANSITIONS: usize = 12;

/// The index of the transition `from -> to` (`from != to`) among the [`TRANSITIONS`].
pub(crate) fn transition_index(from: Relationship, to: Relationship) -> usize {
    let (from, to) = (from.index(), to.index());
    from * 3 + if to < from { to } else { to - 1 }
}

/// The transition at `index`.
pub(crate) fn transition_at(index: usize) -> (Relationship, Relationship) {
    let from = index / 3;
    let to = index % 3;
    let to = if to < from { to } else { to + 1 };
    (Relationship::ALL[from], Relationship::ALL[to])
}

/// What one deal card contributes to its client's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Share {
    /// Not a deal, or a deal that is lost or handed over.
    Nothing,
    /// An open deal.
    Open,
    /// A won deal.
    Won,
}

/// How clients are bounded and which windows count their transitions; shared by all managers.
#[derive(Debug, Clone)]
pub(crate) struct ClientRules {
    pub(crate) max_clients: usize,
    /// A client without an open deal and with no event for this long (event time) is forgotten.
    pub(crate) idle_ms: i64,
    /// The exported windows as `(index into Windows::specs, label)`.
    pub(crate) export: Vec<(usize, String)>,
    /// Recent transitions are kept this far behind the manager's newest event (twice the
    /// largest window, like closed cards).
    pub(crate) recent_ms: i64,
}

/// Recent transitions kept per manager at most (a few a day are usual); at the cap the oldest
/// goes.
const MAX_RECENT: usize = 1_024;

/// One event's effect on clients, as the card state saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientChange {
    /// The client the event is about (its `client_id`, else the card's known client); 0: none.
    pub(crate) client: u64,
    /// The card's client and share before the event.
    pub(crate) before: (u64, Share),
    /// The card's client and share after it.
    pub(crate) after: (u64, Share),
    /// The event handed the card to another manager.
    pub(crate) handed_over: bool,
    pub(crate) event_ms: i64,
    pub(crate) now_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Client {
    key: u64,
    /// Newest event time of an event about the client.
    last_ms: i64,
    won: u32,
    open: u32,
    /// The newest event about the client handed one of its cards to another manager: the client
    /// is not this manager's (not counted in the gauges) until a newer event about it.
    away: bool,
    /// The type last counted, for transitions.
    kind: Relationship,
}

/// One manager's clients (inside the card state's lock).
#[derive(Debug, Default)]
pub(crate) struct Clients {
    list: Vec<Client>,
    index: IdMap,
    /// Whether the manager ever had a client (the gauges are exported from then on).
    pub(crate) ever: bool,
    /// Clients dropped at `max_clients_per_manager`.
    pub(crate) evicted: u64,
    /// Transitions since the manager appeared, by transition index.
    pub(crate) transitions: [u32; TRANSITIONS],
    /// Recent transitions as (event time, clamped to the wall clock; transition index), for the
    /// windows: far fewer than a bucket ring of twelve counters would take.
    recent: Recent,
}

impl Clients {
    /// Applies one event's effect: moves the card's share from its old client to its new one,
    /// marks the client seen, and counts the transitions of the clients involved.
    pub(crate) fn apply(&mut self, rules: &ClientRules, change: ClientChange) {
        let (before, after) = (change.before, change.after);
        if before != after {
            if let (key @ 1.., share) = before {
                if let Some(i) = self.find(key) {
                    let client = &mut self.list[i];
                    match share {
                        Share::Open => client.open = client.open.saturating_sub(1),
                        Share::Won => client.won = client.won.saturating_sub(1),
                        Share::Nothing => {}
                    }
                }
            }
            if let (key @ 1.., share @ (Share::Open | Share::Won)) = after {
                let i = self.position(rules, key);
                let client = &mut self.list[i];
                if share == Share::Open {
                    client.open += 1;
                } else {
                    client.won += 1;
                }
            }
        }
        if change.client != 0 {
            let i = self.position(rules, change.client);
            let client = &mut self.list[i];
            if change.event_ms >= client.last_ms {
                client.away = change.handed_over;
                client.last_ms = change.event_ms;
            }
        }
        let mut settled = [0u64; 3];
        for key in [before.0, after.0, change.client] {
            if key != 0 && !settled.contains(&key) {
                settled[settled.iter().position(|&k| k == 0).unwrap_or(0)] = key;
                self.settle(rules, key, change.event_ms, change.now_ms);
            }
        }
    }

    /// A deal card counted `Open` for `client` is evicted from the card state: its share goes
    /// (without a transition: eviction is a bound of the state, not an event).
    pub(crate) fn forget_open(&mut self, client: u64) {
        if let Some(i) = self.find(client) {
            let client = &mut self.list[i];
            client.open = client.open.saturating_sub(1);
            client.kind = Relationship::of(client.won, client.open);
        }
    }

    /// Drops clients without an open deal whose newest event is older than `idle_ms` behind
    /// `newest_ms`.
    /// Recent transitions older than the windows can show go too.
    pub(crate) fn sweep(&mut self, rules: &ClientRules, newest_ms: i64) {
        let horizon = newest_ms.saturating_sub(rules.idle_ms);
        for i in (0..self.list.len()).rev() {
            if self.list[i].open == 0 && self.list[i].last_ms < horizon {
                self.remove(i);
            }
        }
        self.recent.drop_before(newest_ms.saturating_sub(rules.recent_ms));
    }

    /// Clients held by this manager (not handed over), by type index.
    pub(crate) fn counts(&self) -> [u64; 4] {
        let mut counts = [0; 4];
        for client in self.list.iter().filter(|client| !client.away) {
            counts[client.kind.index()] += 1;
        }
        counts
    }

    /// Adds the windowed transitions into `out` (`export.len() * TRANSITIONS`, window-major): a
    /// transition counts in a window when its bucket (at the window's resolution) is in the
    /// window's bucket range, as for the bucket rings of the other windowed families.
    pub(crate) fn read_windows(&self, rules: &ClientRules, windows: &Windows, plan: &ReadPlan, out: &mut [u64]) {
        for (n, (spec, _)) in rules.export.iter().enumerate() {
            let (Some(window), Some((first, last))) = (windows.specs().get(*spec), plan.range(*spec)) else {
                continue;
            };
            let bucket_ms = windows.levels()[window.level].bucket_ms;
            let range = i64::from(first)..=i64::from(last);
            for (at, t) in self.recent.iter() {
                if range.contains(&at.div_euclid(bucket_ms)) {
                    out[n * TRANSITIONS + usize::from(t)] += 1;
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.list.capacity() * std::mem::size_of::<Client>()
            + self.index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
            + self.recent.0.capacity() * std::mem::size_of::<i64>()
    }

    /// Recomputes the type of `key` and counts a change as a transition at `event_ms`.
    fn settle(&mut self, rules: &ClientRules, key: u64, event_ms: i64, now_ms: i64) {
        let Some(i) = self.find(key) else { return };
        let client = &mut self.list[i];
        let kind = Relationship::of(client.won, client.open);
        if kind == client.kind {
            return;
        }
        let t = transition_index(client.kind, kind);
        client.kind = kind;
        self.transitions[t] = self.transitions[t].saturating_add(1);
        if rules.export.is_empty() {
            return;
        }
        self.recent.push(event_ms.min(now_ms), t as u8);
    }

    fn find(&self, key: u64) -> Option<usize> {
        self.index.get(&key).map(|&i| i as usize)
    }

    /// The client's position, inserting it (cold, never seen) and evicting one at the cap.
    fn position(&mut self, rules: &ClientRules, key: u64) -> usize {
        if let Some(i) = self.find(key) {
            return i;
        }
        if self.list.len() >= rules.max_clients.max(1) {
            // A client without an open deal before one with, nothing won before won deals, the
            // least recently seen first.
            let victim = self
                .list
                .iter()
                .enumerate()
                .min_by_key(|(_, client)| (client.open > 0, client.won > 0, client.last_ms))
                .map(|(i, _)| i);
            if let Some(i) = victim {
                self.remove(i);
                self.evicted += 1;
            }
        }
        self.ever = true;
        let i = self.list.len();
        self.list.push(Client { key, last_ms: NONE, won: 0, open: 0, away: false, kind: Relationship::Cold });
        self.index.insert(key, i as u32);
        i
    }

    fn remove(&mut self, i: usize) {
        let removed = self.list.swap_remove(i);
        self.index.remove(&removed.key);
        if i != self.list.len() {
            self.index.insert(self.list[i].key, i as u32);
        }
    }
}

/// Recent transitions ordered by event time (oldest first), at most [`MAX_RECENT`]: at the cap
/// the oldest goes. Events mostly arrive in order, so a push is usually an append, and dropping
/// the oldest or everything before a time is a pop at the front (a search for the oldest in an
/// unordered list of 1,024 was a few percent of all ingest CPU). Each is one `i64`, the time
/// times 16 plus the transition index: 8 bytes where a `(i64, u8)` takes 16.
#[derive(Debug, Default)]
struct Recent(VecDeque<i64>);

/// Event times beyond this (about 18 million years from 1970) are clamped so the packing cannot
/// overflow; validated events are far inside it.
const RECENT_MAX_MS: i64 = i64::MAX >> 4;

impl Recent {
    fn pack(at_ms: i64, transition: u8) -> i64 {
        debug_assert!(usize::from(transition) < TRANSITIONS);
        (at_ms.clamp(-RECENT_MAX_MS, RECENT_MAX_MS) << 4) | i64::from(transition & 0x0f)
    }

    fn unpack(packed: i64) -> (i64, u8) {
        (packed >> 4, (packed & 0x0f) as u8)
    }

    fn push(&mut self, at_ms: i64, transition: u8) {
        if self.0.len() >= MAX_RECENT {
            self.0.pop_front();
        }
        // After the last one not newer, so equal times keep their arrival order.
        let at = self.0.partition_point(|&packed| Self::unpack(packed).0 <= at_ms);
        self.0.insert(at, Self::pack(at_ms, transition));
    }

    fn drop_before(&mut self, horizon_ms: i64) {
        while self.0.front().is_some_and(|&packed| Self::unpack(packed).0 < horizon_ms) {
            self.0.pop_front();
        }
    }

    /// (event time, transition index), oldest first.
    fn iter(&self) -> impl Iterator<Item = (i64, u8)> + '_ {
        self.0.iter().map(|&packed| Self::unpack(packed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_transitions_stay_in_time_order_and_the_oldest_goes_at_the_cap() {
        let mut recent = Recent::default();
        // Out of order, with a repeated time.
        for (at, t) in [(50, 1), (10, 2), (30, 3), (30, 4), (70, 5), (20, 6)] {
            recent.push(at, t);
        }
        let order: Vec<_> = recent.iter().collect();
        assert_eq!(order, [(10, 2), (20, 6), (30, 3), (30, 4), (50, 1), (70, 5)]);
        recent.drop_before(30);
        assert_eq!(recent.iter().next(), Some((30, 3)));
        assert_eq!(recent.0.len(), 4);

        let mut full = Recent::default();
        for i in 0..MAX_RECENT as i64 {
            full.push(1_000 + i, 0);
        }
        // An older transition at the cap: the oldest held goes, the new one is kept, as when
        // the list was unordered and the minimum was searched for.
        full.push(5, 1);
        assert_eq!(full.0.len(), MAX_RECENT);
        assert_eq!(full.iter().next(), Some((5, 1)));
        assert_eq!(full.iter().nth(1), Some((1_001, 0)));
        full.push(9_999, 2);
        assert_eq!(full.iter().next(), Some((1_001, 0)));
        assert_eq!(full.iter().last(), Some((9_999, 2)));
    }

    #[test]
    fn a_packed_transition_keeps_its_time_and_index() {
        for at in [0, -1, -5, 1_700_000_000_123, RECENT_MAX_MS, -RECENT_MAX_MS] {
            for t in 0..TRANSITIONS as u8 {
                assert_eq!(Recent::unpack(Recent::pack(at, t)), (at, t), "{at} {t}");
            }
        }
        // Beyond the packable range the time is clamped, never wrapped.
        assert_eq!(Recent::unpack(Recent::pack(i64::MAX, 11)), (RECENT_MAX_MS, 11));
        assert_eq!(Recent::unpack(Recent::pack(i64::MIN, 0)), (-RECENT_MAX_MS, 0));
    }

    #[test]
    fn transition_indices_cover_the_twelve_pairs_once() {
        let mut seen = [false; TRANSITIONS];
        for from in Relationship::ALL {
            for to in Relationship::ALL.into_iter().filter(|&to| to != from) {
                let t = transition_index(from, to);
                assert!(!seen[t], "{from:?} -> {to:?}");
                seen[t] = true;
                assert_eq!(transition_at(t), (from, to));
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn the_type_follows_won_then_open_deals() {
        for (won, open, expected) in [
            (0, 0, Relationship::Cold),
            (0, 1, Relationship::Potential),
            (0, 3, Relationship::Potential),
            (1, 0, Relationship::Current),
            (1, 2, Relationship::Current),
            (2, 0, Relationship::Regular),
            (5, 1, Relationship::Regular),
        ] {
            assert_eq!(Relationship::of(won, open), expected, "won {won}, open {open}");
        }
    }
}
