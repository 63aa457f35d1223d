//! One manager's join state: the dialogs the manager is in, for new-dialog detection, response
//! matching and the clients waiting now.
//!
//! # Dialogs
//! A dialog is keyed by a 64-bit hash of `(channel, dialog_id)` (ids are never kept). It is
//! *active* while its latest message (event time) is less than the idle gap old: a message at
//! least the gap after the dialog's latest one starts the dialog afresh, and a scrape counts only
//! the dialogs active at its wall-clock instant.
//!
//! # Response matching
//! In event-time order (messages at the same millisecond: inbound first) a dialog alternates
//! between runs of inbound and runs of outbound messages. The first outbound after a run of
//! inbound ones is a *response*, measured from the run's first inbound. Per dialog the state
//! keeps the earliest unanswered inbound (`pending`) and the latest [`RING`] outbound times, each
//! marked as having answered a question or not. With them:
//! - an outbound at or after `pending` answers it;
//! - an outbound before `pending` (or with nothing pending) answers nothing and is remembered as
//!   unmatched;
//! - an inbound later than every remembered outbound becomes (or joins) the pending run;
//! - an inbound at or before a remembered outbound (the reply arrived before the question) is
//!   answered by the earliest remembered outbound at or after it: if that outbound answered
//!   nothing yet, the pair is a response (`outbound - inbound`, at the outbound's time); if it
//!   already answered a question, the inbound joined that question's run and counts nothing.
//!
//! This is exact when a dialog's messages arrive in event-time order, and when a reply arrives
//! before the question(s) it answers. Limits of the bounded state, for other reorderings:
//! - an inbound that arrives after its run was already answered, and is earlier than the run's
//!   first inbound, does not move the recorded response (counters never go back);
//! - an outbound that arrives after a later outbound already answered its question is kept as
//!   unmatched (the recorded response stays measured to the later one);
//! - an inbound at or before the oldest outbound the ring has forgotten (more than [`RING`]
//!   outbounds arrived after it) is ignored: neither a response nor waiting.

use std::collections::HashMap;

use salespulse_core::ledger::FingerprintHasher;
use salespulse_events::MessageDirection;

/// Outbound times remembered per dialog for replies that arrive before their question.
pub const RING: usize = 4;
/// No time: nothing pending, nothing forgotten.
const NONE: i64 = i64::MIN;

/// How dialogs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JoinRules {
    /// A dialog with no message for this long is over.
    pub gap_ms: i64,
    /// At most this many dialogs per manager.
    pub max_dialogs: usize,
    /// A dialog is dropped once the manager's newest event time is this far past its latest
    /// message: the gap plus a slack for messages that arrive late.
    pub keep_ms: i64,
    /// Dropping idle dialogs runs at most this often, in the manager's event time.
    pub sweep_every_ms: i64,
}

impl JoinRules {
    pub fn new(gap_ms: i64, max_dialogs: usize) -> JoinRules {
        const HOUR: i64 = 3_600_000;
        JoinRules {
            gap_ms,
            max_dialogs,
            keep_ms: gap_ms.saturating_add(gap_ms.min(HOUR)),
            sweep_every_ms: (gap_ms / 16).clamp(1_000, HOUR),
        }
    }
}

/// What one message did to its dialog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Joined {
    /// The message started a new dialog.
    pub new_dialog: bool,
    /// The message completed a response.
    pub response: Option<Response>,
}

/// One response: a question and its reply, event times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Response {
    /// The first inbound message of the answered run.
    pub question_ms: i64,
    /// The outbound message that answered it; the response's event time.
    pub reply_ms: i64,
}

/// How a dialog's start was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// Its first message said `new_dialog: false`: tracked, not counted.
    Uncounted,
    /// Counted from its first message without a flag.
    Implicit,
    /// Counted from a message with `new_dialog: true`.
    Explicit,
}

/// One dialog's state: 72 bytes.
#[derive(Debug, Clone)]
struct Dialog {
    /// Event time of its earliest message since it started.
    start_ms: i64,
    /// Event time of its latest message.
    last_ms: i64,
    /// Earliest inbound not answered yet, or [`NONE`]. Every remembered outbound is before it.
    pending_ms: i64,
    /// Latest outbound time dropped from `outs`, or [`NONE`]; all dropped ones are before `outs`.
    forgotten_ms: i64,
    /// The latest outbound times, ascending; the first `out_len` are valid.
    outs: [i64; RING],
    /// Outbound messages since it started.
    outbound: u32,
    out_len: u8,
    /// Bit `i`: `outs[i]` answered a question.
    answered: u8,
    opening: Opening,
}

impl Dialog {
    fn new(t: i64, flag: Option<bool>) -> Dialog {
        Dialog {
            start_ms: t,
            last_ms: t,
            pending_ms: NONE,
            forgotten_ms: NONE,
            outs: [0; RING],
            outbound: 0,
            out_len: 0,
            answered: 0,
            opening: match flag {
                Some(true) => Opening::Explicit,
                Some(false) => Opening::Uncounted,
                None => Opening::Implicit,
            },
        }
    }

    /// A `new_dialog` flag on a message of an active dialog; whether it counts as a new dialog.
    fn flag(&mut self, flag: Option<bool>, t: i64) -> bool {
        if flag != Some(true) {
            return false;
        }
        match self.opening {
            // The dialog was tracked but not counted: the flag opens it.
            Opening::Uncounted => {
                self.opening = Opening::Explicit;
                true
            }
            // Counted from a message without the flag: the flag marks the same opening, arriving
            // after the dialog's first message (a producer that flags only some messages).
            Opening::Implicit => {
                self.opening = Opening::Explicit;
                false
            }
            // A later flagged message restarts the dialog; one at or before the start is the same
            // opening again.
            Opening::Explicit if t > self.start_ms => {
                self.start_ms = t;
                self.outbound = 0;
                true
            }
            Opening::Explicit => false,
        }
    }

    fn inbound(&mut self, t: i64) -> Option<Response> {
        let len = usize::from(self.out_len);
        let Some(i) = self.outs[..len].iter().position(|&o| o >= t) else {
            // After every outbound seen: the question waits.
            if self.pending_ms == NONE || t < self.pending_ms {
                self.pending_ms = t;
            }
            return None;
        };
        if i == 0 && self.forgotten_ms >= t {
            // A forgotten outbound may lie between: which one answered is unknown.
            return None;
        }
        let bit = 1u8 << i;
        if self.answered & bit != 0 {
            return None;
        }
        self.answered |= bit;
        Some(Response { question_ms: t, reply_ms: self.outs[i] })
    }

    fn outbound(&mut self, t: i64) -> Option<Response> {
        self.outbound = self.outbound.saturating_add(1);
        let response = (self.pending_ms != NONE && self.pending_ms <= t)
            .then_some(Response { question_ms: self.pending_ms, reply_ms: t });
        if response.is_some() {
            self.pending_ms = NONE;
        }
        self.remember(t, response.is_some());
        response
    }

    /// Inserts outbound `t` into the ring, after equal times; drops the oldest when full.
    fn remember(&mut self, t: i64, answered: bool) {
        let len = usize::from(self.out_len);
        let at = self.outs[..len].iter().position(|&o| o > t).unwrap_or(len);
        let mut outs = [0i64; RING + 1];
        let mut bits = 0u16;
        for (j, slot) in outs.iter_mut().enumerate().take(len + 1) {
            let (value, was_answered) = match j.cmp(&at) {
                std::cmp::Ordering::Less => (self.outs[j], self.answered & (1 << j) != 0),
                std::cmp::Ordering::Equal => (t, answered),
                std::cmp::Ordering::Greater => (self.outs[j - 1], self.answered & (1 << (j - 1)) != 0),
            };
            *slot = value;
            bits |= u16::from(was_answered) << j;
        }
        let (skip, new_len) = if len < RING { (0, len + 1) } else { (1, RING) };
        if skip == 1 {
            self.forgotten_ms = self.forgotten_ms.max(outs[0]);
        }
        self.outs[..new_len].copy_from_slice(&outs[skip..skip + new_len]);
        self.answered = (bits >> skip) as u8;
        self.out_len = new_len as u8;
    }
}

/// The dialogs of one manager, as seen through one partition.
#[derive(Debug)]
pub(crate) struct Dialogs {
    map: HashMap<u64, Dialog, FingerprintHasher>,
    /// Newest event time applied.
    latest_ms: i64,
    next_sweep_ms: i64,
    evictions: u64,
}

impl Default for Dialogs {
    fn default() -> Self {
        Dialogs { map: HashMap::default(), latest_ms: NONE, next_sweep_ms: NONE, evictions: 0 }
    }
}

/// The dialogs of a manager at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DialogStats {
    /// Dialogs held in memory, active or not yet dropped (`salespulse_join_state_entries`).
    pub held: u64,
    /// Dialogs active at the scrape: their latest message is less than the idle gap old.
    pub active: u64,
    /// Active dialogs with at least one outbound message.
    pub with_outbound: u64,
    /// Outbound messages in those dialogs.
    pub outbound_messages: u64,
    /// Active dialogs with an unanswered inbound message.
    pub waiting: u64,
    /// Wall-clock time since the oldest unanswered inbound message of an active dialog, 0 when
    /// none waits.
    pub oldest_wait_ms: i64,
    /// Active dialogs dropped to stay under the per-manager cap, since the state was created.
    pub evictions: u64,
}

impl DialogStats {
    /// Adds `other` (the same manager through another partition); the oldest wait is the larger.
    pub fn merge(&mut self, other: &DialogStats) {
        self.held = self.held.saturating_add(other.held);
        self.active = self.active.saturating_add(other.active);
        self.with_outbound = self.with_outbound.saturating_add(other.with_outbound);
        self.outbound_messages = self.outbound_messages.saturating_add(other.outbound_messages);
        self.waiting = self.waiting.saturating_add(other.waiting);
        self.oldest_wait_ms = self.oldest_wait_ms.max(other.oldest_wait_ms);
        self.evictions = self.evictions.saturating_add(other.evictions);
    }
}

/// Where a message's dialog stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Absent,
    /// Held, but idle for the gap before this message.
    Over,
    /// The message is at least the gap before the held dialog started: an earlier dialog.
    Earlier,
    Active,
}

impl Dialogs {
    /// Applies one message of dialog `key` at event time `t`.
    pub fn apply(
        &mut self,
        rules: &JoinRules,
        key: u64,
        direction: MessageDirection,
        flag: Option<bool>,
        t: i64,
    ) -> Joined {
        self.latest_ms = self.latest_ms.max(t);
        if self.latest_ms >= self.next_sweep_ms {
            self.sweep(rules);
        }
        let status = match self.map.get(&key) {
            None => Status::Absent,
            Some(d) if t.saturating_sub(d.last_ms) >= rules.gap_ms => Status::Over,
            Some(d) if t <= d.start_ms.saturating_sub(rules.gap_ms) => Status::Earlier,
            Some(_) => Status::Active,
        };
        let mut joined = Joined::default();
        match status {
            Status::Earlier => return Joined { new_dialog: flag == Some(true), response: None },
            Status::Absent => {
                self.make_room(rules);
                self.map.insert(key, Dialog::new(t, flag));
                joined.new_dialog = flag != Some(false);
            }
            Status::Over => {
                self.map.insert(key, Dialog::new(t, flag));
                joined.new_dialog = flag != Some(false);
            }
            Status::Active => {}
        }
        let Some(dialog) = self.map.get_mut(&key) else { return joined };
        if status == Status::Active {
            joined.new_dialog = dialog.flag(flag, t);
        }
        dialog.start_ms = dialog.start_ms.min(t);
        dialog.last_ms = dialog.last_ms.max(t);
        joined.response = match direction {
            MessageDirection::Inbound => dialog.inbound(t),
            MessageDirection::Outbound => dialog.outbound(t),
        };
        joined
    }

    /// Drops dialogs idle past `keep_ms` of the newest event time.
    fn sweep(&mut self, rules: &JoinRules) {
        let horizon = self.latest_ms.saturating_sub(rules.keep_ms);
        self.map.retain(|_, d| d.last_ms > horizon);
        if self.map.capacity() > 64 && self.map.len() * 4 < self.map.capacity() {
            self.map.shrink_to_fit();
        }
        self.next_sweep_ms = self.latest_ms.saturating_add(rules.sweep_every_ms);
    }

    /// Active dialogs evicted at the cap so far.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Makes room for one more dialog: drops idle ones, then the least recently active.
    fn make_room(&mut self, rules: &JoinRules) {
        if self.map.len() < rules.max_dialogs {
            return;
        }
        self.sweep(rules);
        while self.map.len() >= rules.max_dialogs.max(1) {
            let Some((&key, dialog)) = self.map.iter().min_by_key(|(_, d)| d.last_ms) else { break };
            if self.latest_ms.saturating_sub(dialog.last_ms) < rules.gap_ms {
                self.evictions += 1;
            }
            self.map.remove(&key);
        }
    }

    /// The dialogs at wall-clock `now_ms`.
    pub fn stats(&self, gap_ms: i64, now_ms: i64) -> DialogStats {
        let mut stats = DialogStats { held: self.map.len() as u64, evictions: self.evictions, ..Default::default() };
        let mut oldest = i64::MAX;
        for dialog in self.map.values() {
            if now_ms.saturating_sub(dialog.last_ms) >= gap_ms {
                continue;
            }
            stats.active += 1;
            if dialog.outbound > 0 {
                stats.with_outbound += 1;
                stats.outbound_messages += u64::from(dialog.outbound);
            }
            if dialog.pending_ms != NONE {
                stats.waiting += 1;
                oldest = oldest.min(dialog.pending_ms);
            }
        }
        if stats.waiting > 0 {
            stats.oldest_wait_ms = now_ms.saturating_sub(oldest).max(0);
        }
        stats
    }

    /// Dialogs held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes on the heap, estimated from the table's capacity (hashbrown: a power of two of
    /// buckets at 7/8 load, one control byte per bucket plus a group of 16).
    pub fn heap_bytes(&self) -> usize {
        let capacity = self.map.capacity();
        if capacity == 0 {
            return 0;
        }
        let buckets =
            if capacity < 8 { (capacity + 1).next_power_of_two() } else { (capacity * 8 / 7).next_power_of_two() };
        buckets * (std::mem::size_of::<(u64, Dialog)>() + 1) + 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageDirection::{Inbound as In, Outbound as Out};

    const GAP: i64 = 86_400_000;

    fn rules(max_dialogs: usize) -> JoinRules {
        JoinRules::new(GAP, max_dialogs)
    }

    /// Applies `(dialog, direction, time)` in order; returns the responses as `(question, reply)`.
    fn run(dialogs: &mut Dialogs, rules: &JoinRules, messages: &[(u64, MessageDirection, i64)]) -> Vec<(i64, i64)> {
        messages
            .iter()
            .filter_map(|&(key, dir, t)| dialogs.apply(rules, key, dir, None, t).response)
            .map(|r| (r.question_ms, r.reply_ms))
            .collect()
    }

    #[test]
    fn response_table() {
        for (name, messages, expected, waiting) in [
            ("question then reply", vec![(1, In, 100), (1, Out, 160)], vec![(100, 160)], 0),
            (
                "several questions, one reply, from the first",
                vec![(1, In, 100), (1, In, 130), (1, In, 150), (1, Out, 400)],
                vec![(100, 400)],
                0,
            ),
            ("second reply answers nothing", vec![(1, In, 100), (1, Out, 160), (1, Out, 170)], vec![(100, 160)], 0),
            ("manager first: not a response", vec![(1, Out, 100), (1, In, 200)], vec![], 1),
            ("reply in another dialog: no response", vec![(1, In, 100), (2, Out, 160)], vec![], 1),
            ("reply arrives before the question", vec![(1, Out, 160), (1, In, 100)], vec![(100, 160)], 0),
            (
                "reply first, then the rest of the run",
                vec![(1, Out, 160), (1, In, 100), (1, In, 120)],
                vec![(100, 160)],
                0,
            ),
            ("reply first, question later than it: waits", vec![(1, Out, 160), (1, In, 200)], vec![], 1),
            (
                "same time as the pending one: counted once",
                vec![(1, In, 100), (1, In, 100), (1, Out, 130)],
                vec![(100, 130)],
                0,
            ),
            (
                "an earlier question moves the pending start",
                vec![(1, In, 100), (1, In, 90), (1, Out, 130)],
                vec![(90, 130)],
                0,
            ),
            ("reply at the question's millisecond: 0", vec![(1, In, 100), (1, Out, 100)], vec![(100, 100)], 0),
            ("question at the reply's millisecond after it", vec![(1, Out, 100), (1, In, 100)], vec![(100, 100)], 0),
            (
                "two rounds",
                vec![(1, In, 100), (1, Out, 110), (1, In, 200), (1, Out, 230)],
                vec![(100, 110), (200, 230)],
                0,
            ),
            (
                "late question between a follow-up and a reply",
                vec![(1, In, 100), (1, Out, 110), (1, Out, 150), (1, In, 200), (1, Out, 230), (1, In, 140)],
                vec![(100, 110), (200, 230), (140, 150)],
                0,
            ),
            (
                "late question inside an answered run: nothing",
                vec![(1, In, 100), (1, Out, 110), (1, In, 105)],
                vec![(100, 110)],
                0,
            ),
            (
                "reply first after the manager's earlier follow-ups",
                vec![(1, In, 10), (1, Out, 20), (1, Out, 30), (1, Out, 110), (1, In, 100)],
                vec![(10, 20), (100, 110)],
                0,
            ),
            ("late outbound before a pending question answers nothing", vec![(1, In, 100), (1, Out, 90)], vec![], 1),
        ] {
            let mut dialogs = Dialogs::default();
            let got = run(&mut dialogs, &rules(100), &messages);
            assert_eq!(got, expected, "{name}");
            assert_eq!(dialogs.stats(GAP, 1_000).waiting, waiting, "{name}");
        }
    }

    #[test]
    fn ring_forgets_the_oldest_outbound() {
        let mut dialogs = Dialogs::default();
        let r = rules(100);
        // Five unmatched outbounds: 10 is forgotten; a question at 5 or 10 cannot be placed.
        let outs: Vec<_> = [10, 20, 30, 40, 50].iter().map(|&t| (1, Out, t)).collect();
        assert!(run(&mut dialogs, &r, &outs).is_empty());
        assert_eq!(run(&mut dialogs, &r, &[(1, In, 10)]), vec![]);
        assert_eq!(dialogs.stats(GAP, 100).waiting, 0);
        // 15 lies after the forgotten one: answered by 20.
        assert_eq!(run(&mut dialogs, &r, &[(1, In, 15)]), vec![(15, 20)]);
        // A late outbound older than the ring is forgotten at once.
        assert!(run(&mut dialogs, &r, &[(1, Out, 1)]).is_empty());
        assert_eq!(run(&mut dialogs, &r, &[(1, In, 35)]), vec![(35, 40)]);
    }

    #[test]
    fn new_dialog_table() {
        let h = 3_600_000;
        for (name, messages, expected) in [
            ("first message without a flag", vec![(Out, None, 0)], vec![true]),
            ("flag false never starts one", vec![(In, Some(false), 0), (In, None, h)], vec![false, false]),
            ("flag false, then true opens it", vec![(In, Some(false), 0), (In, Some(true), h)], vec![false, true]),
            (
                "idle for the gap: new again",
                vec![(In, None, 0), (In, None, GAP - 1), (In, None, 2 * GAP - 1)],
                vec![true, false, true],
            ),
            (
                "flag after an unflagged start: same opening",
                vec![(Out, None, 10), (In, Some(true), 5)],
                vec![true, false],
            ),
            (
                "flag after an unflagged start, later: same opening",
                vec![(Out, None, 10), (In, Some(true), 20)],
                vec![true, false],
            ),
            (
                "later flag after a flagged start: restart",
                vec![(In, Some(true), 0), (In, Some(true), h)],
                vec![true, true],
            ),
            ("flag at the start again: once", vec![(In, Some(true), 0), (In, Some(true), 0)], vec![true, false]),
            ("flagged opener arriving late: once", vec![(In, Some(true), h), (In, Some(true), 0)], vec![true, false]),
            (
                "a message a gap before the start: an earlier dialog",
                vec![(In, None, GAP), (In, None, 0)],
                vec![true, false],
            ),
        ] {
            let mut dialogs = Dialogs::default();
            let got: Vec<bool> =
                messages.iter().map(|&(dir, flag, t)| dialogs.apply(&rules(10), 7, dir, flag, t).new_dialog).collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn restart_resets_the_outbound_count() {
        let mut dialogs = Dialogs::default();
        let r = rules(10);
        dialogs.apply(&r, 1, In, Some(true), 0);
        dialogs.apply(&r, 1, Out, None, 10);
        dialogs.apply(&r, 1, Out, None, 20);
        assert_eq!(dialogs.stats(GAP, 30).outbound_messages, 2);
        dialogs.apply(&r, 1, In, Some(true), 40);
        dialogs.apply(&r, 1, Out, None, 50);
        let stats = dialogs.stats(GAP, 60);
        assert_eq!((stats.active, stats.with_outbound, stats.outbound_messages), (1, 1, 1));
    }

    #[test]
    fn pending_question_expires_with_its_dialog() {
        let mut dialogs = Dialogs::default();
        let r = rules(10);
        dialogs.apply(&r, 1, In, None, 0);
        assert_eq!(dialogs.stats(GAP, GAP - 1).waiting, 1);
        assert_eq!(dialogs.stats(GAP, GAP).waiting, 0);
        // A reply a gap later opens a new dialog and answers nothing.
        let joined = dialogs.apply(&r, 1, Out, None, GAP);
        assert_eq!(joined, Joined { new_dialog: true, response: None });
    }

    #[test]
    fn cap_evicts_the_least_recently_active() {
        let mut dialogs = Dialogs::default();
        let r = rules(3);
        for (key, t) in [(1, 100), (2, 50), (3, 200)] {
            dialogs.apply(&r, key, In, None, t);
        }
        // Dialog 2 was active longest ago: it goes.
        dialogs.apply(&r, 4, In, None, 300);
        assert_eq!(dialogs.len(), 3);
        assert_eq!(dialogs.stats(GAP, 300).evictions, 1);
        // 2 comes back as a new dialog (its pending question is lost); 1 goes now.
        assert!(dialogs.apply(&r, 2, Out, None, 310).new_dialog);
        assert_eq!(dialogs.stats(GAP, 310).evictions, 2);
        let keys: std::collections::BTreeSet<u64> = dialogs.map.keys().copied().collect();
        assert_eq!(keys, [2, 3, 4].into());
        // A dialog already over the gap is dropped first, without counting an eviction.
        let mut dialogs = Dialogs::default();
        for (key, t) in [(1, 0), (2, GAP), (3, GAP + 1)] {
            dialogs.apply(&r, key, In, None, t);
        }
        dialogs.apply(&r, 4, In, None, GAP + 2);
        assert_eq!((dialogs.len(), dialogs.stats(GAP, GAP + 2).evictions), (3, 0));
    }

    #[test]
    fn idle_dialogs_are_dropped_by_event_time() {
        let mut dialogs = Dialogs::default();
        let r = rules(100);
        dialogs.apply(&r, 1, In, None, 0);
        dialogs.apply(&r, 2, In, None, GAP);
        // Kept for the gap and an hour of slack for late messages.
        dialogs.apply(&r, 3, In, None, GAP + 3_600_000 - 1);
        assert_eq!(dialogs.len(), 3);
        dialogs.apply(&r, 3, In, None, GAP + 3_600_000);
        assert_eq!(dialogs.len(), 2);
    }

    #[test]
    fn ring_insertion_keeps_order_and_bits() {
        let mut d = Dialog::new(0, None);
        for (t, answered) in [(30, true), (10, false), (20, true), (20, false), (40, false), (5, false)] {
            d.remember(t, answered);
        }
        assert_eq!(&d.outs[..usize::from(d.out_len)], &[20, 20, 30, 40]);
        assert_eq!(d.answered, 0b0101);
        assert_eq!(d.forgotten_ms, 10);
    }

    #[test]
    fn heap_at_the_default_cap() {
        let mut dialogs = Dialogs::default();
        let r = rules(2000);
        for key in 0..2000 {
            dialogs.apply(&r, key, In, None, key as i64);
        }
        assert_eq!(dialogs.len(), 2000);
        assert_eq!(dialogs.heap_bytes(), 4096 * 81 + 16);
        assert!(dialogs.map.capacity() >= 2000 && dialogs.map.capacity() < 4096);
        // The 2001st evicts the first.
        dialogs.apply(&r, 2000, In, None, 2000);
        assert_eq!((dialogs.len(), dialogs.evictions), (2000, 1));
        assert!(!dialogs.map.contains_key(&0));
    }

    #[test]
    fn dialog_is_72_bytes() {
        assert_eq!(std::mem::size_of::<Dialog>(), 72);
    }
}
