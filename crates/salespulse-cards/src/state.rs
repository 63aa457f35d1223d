//! One manager's cards and tasks: what the gauges and the join queries are computed from.
//!
//! Cards and tasks are keyed by 64-bit fingerprints of their ids ([`crate::key`]); no id string is
//! stored. Both live in plain vectors indexed by a hash map from key to position (removal swaps the
//! last entry in), with a hard cap each and two ways out: expiry of entries no window or gauge
//! needs any more, and, at the cap, eviction of the least valuable entry.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicU64;

use salespulse_events::{CardChange, CardChangeKind, CardType};

use crate::clients::{ClientChange, Clients, Share};
use crate::commerce::Money;
use crate::{bump, bump_f64, key, Cards};
use crate::{TOTALS, T_LOST, T_LOST_AMOUNT, T_RESCHEDULED, T_TASKS_COMPLETED, T_WON, T_WON_AMOUNT};

/// "Not known" for the time fields of a task.
pub(crate) const NONE: i64 = i64::MIN;
/// A card whose pipeline and stage are not known.
pub(crate) const NO_SLOT: u16 = u16::MAX;
/// How often (in the manager's event time) expired entries are swept out.
const SWEEP_EVERY_MS: i64 = 3_600_000;

/// Where a card stands for this manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// The manager holds it; for a deal, it is open.
    Open,
    /// Won (deals).
    Won,
    /// Lost (deals).
    Lost,
    /// Handed to another manager (`responsible_changed` from this manager's stream).
    Away,
}

#[derive(Debug, Clone)]
pub(crate) struct Card {
    pub(crate) key: u64,
    /// Newest event time about the card (recency for expiry and eviction).
    pub(crate) last_ms: i64,
    /// Event time of the event that set `slot`.
    pub(crate) location_ms: i64,
    /// Event time of the event that set `status`.
    pub(crate) status_ms: i64,
    /// Latest amount an event carried; NaN when none did.
    pub(crate) amount: f64,
    /// Latest margin an event carried; NaN when none did.
    pub(crate) margin: f64,
    /// Event time of the deal's `created` (the earliest seen).
    pub(crate) created_ms: i64,
    /// Event time the card entered its current slot.
    pub(crate) stage_since_ms: i64,
    /// `stage_progress_pct` of the event that set the location; NaN when it carried none.
    pub(crate) event_progress: f32,
    /// Whether the deal's duration was observed (once per deal).
    pub(crate) duration_observed: bool,
    /// Counted closed while its amount was unknown: the first amount seen is counted then.
    pub(crate) close_amount_missing: bool,
    /// The client of the newest event that named one (0: not known).
    pub(crate) client: u64,
    pub(crate) slot: u16,
    pub(crate) kind: CardType,
    pub(crate) status: Status,
}

impl Card {
    pub(crate) fn is_open_deal(&self) -> bool {
        self.kind == CardType::Deal && self.status == Status::Open
    }

    /// What the card contributes to its client's relationship type.
    pub(crate) fn share(&self) -> Share {
        match (self.kind, self.status) {
            (CardType::Deal, Status::Open) => Share::Open,
            (CardType::Deal, Status::Won) => Share::Won,
            _ => Share::Nothing,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) key: u64,
    /// The card the task is on (0: not known).
    pub(crate) card: u64,
    /// The client (0: not known).
    pub(crate) client: u64,
    pub(crate) created_ms: i64,
    pub(crate) rescheduled_ms: i64,
    pub(crate) due_ms: i64,
    /// Event time of the event that set `due_ms`.
    pub(crate) due_event_ms: i64,
    pub(crate) completed_ms: i64,
    pub(crate) last_ms: i64,
    pub(crate) reschedules: u32,
}

impl Task {
    pub(crate) fn is_open(&self) -> bool {
        self.completed_ms == NONE
    }
}

/// Fingerprints are hashes already.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
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

/// Key fingerprint to position in a vector (cards, tasks, invoices, clients).
pub(crate) type IdMap = HashMap<u64, u32, BuildHasherDefault<IdHasher>>;

/// The lock-protected part of a manager's card state.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) cards: Vec<Card>,
    card_index: IdMap,
    /// `stride` words of touch bits per card, parallel to `cards`.
    pub(crate) touch: Vec<u64>,
    pub(crate) tasks: Vec<Task>,
    task_index: IdMap,
    /// Stage transition counters, sorted by transition index.
    pub(crate) transitions: Vec<(u32, u64)>,
    /// Bit set of slots an open deal of this manager has sat in (their series stay, at 0).
    pub(crate) seen_slots: Vec<u64>,
    /// Whether the manager ever held a deal.
    pub(crate) had_deal: bool,
    pub(crate) evicted_cards: u64,
    pub(crate) evicted_tasks: u64,
    /// Invoices, payments, plan facts and deal durations.
    pub(crate) money: Money,
    /// Clients and their relationship types.
    pub(crate) clients: Clients,
    /// Newest event time applied (clamped to the wall clock).
    newest_ms: i64,
    next_sweep_ms: i64,
}

impl Inner {
    /// Entries evicted at their caps so far: cards, tasks, invoices and clients.
    pub(crate) fn evictions(&self) -> u64 {
        self.evicted_cards + self.evicted_tasks + self.money.evicted + self.clients.evicted
    }

    pub(crate) fn apply(
        &mut self,
        cards: &Cards,
        totals: &[AtomicU64; TOTALS],
        change: &CardChange,
        event_ms: i64,
        now_ms: i64,
    ) {
        let at = event_ms.min(now_ms);
        if self.cards.is_empty() && self.tasks.is_empty() {
            self.newest_ms = at;
            self.next_sweep_ms = at.saturating_add(SWEEP_EVERY_MS);
        } else if at > self.newest_ms {
            self.newest_ms = at;
        }
        if self.newest_ms >= self.next_sweep_ms {
            self.sweep(cards);
            self.next_sweep_ms = self.newest_ms.saturating_add(SWEEP_EVERY_MS);
        }
        let card_key = key(&change.card_id);
        let (i, existed) = self.card_position(cards, card_key);
        let before = if existed { (self.cards[i].client, self.cards[i].share()) } else { (0, Share::Nothing) };
        let stride = cards.touch.stride();
        cards.touch.touch(&mut self.touch[i * stride..(i + 1) * stride], at);
        self.update_card(cards, totals, i, existed, change, event_ms);
        let card = &self.cards[i];
        let client_change = ClientChange {
            client: change.client_id.as_deref().map_or(card.client, key),
            before,
            after: (card.client, card.share()),
            handed_over: change.change == CardChangeKind::ResponsibleChanged && card.status == Status::Away,
            event_ms,
            now_ms,
        };
        self.clients.apply(&cards.clients, client_change);
        if matches!(change.change, CardChangeKind::InvoiceIssued | CardChangeKind::PaymentReceived) {
            let deal = (self.cards[i].amount, self.cards[i].margin);
            self.money.apply(&cards.commerce, change, card_key, deal, event_ms);
        }
        if matches!(
            change.change,
            CardChangeKind::TaskCreated | CardChangeKind::TaskCompleted | CardChangeKind::TaskRescheduled
        ) {
            self.update_task(cards, totals, card_key, change, event_ms);
        }
    }

    fn update_card(
        &mut self,
        cards: &Cards,
        totals: &[AtomicU64; TOTALS],
        i: usize,
        existed: bool,
        change: &CardChange,
        event_ms: i64,
    ) {
        let funnel = &cards.funnel;
        let card = &mut self.cards[i];
        // Type and amount follow the newest event; an older one only fills in an unknown amount.
        let newest = !existed || event_ms >= card.last_ms;
        if newest {
            card.kind = change.card_type;
        }
        if let Some(client) = change.client_id.as_deref() {
            if newest || card.client == 0 {
                card.client = key(client);
            }
        }
        // Invoices and payments carry their own amounts, not the deal's.
        let money_event = matches!(change.change, CardChangeKind::InvoiceIssued | CardChangeKind::PaymentReceived);
        if let (Some(amount), false) = (change.amount, money_event) {
            if card.amount.is_nan() && card.close_amount_missing {
                // The deal was counted closed before any event told its amount (events out of
                // order): count the amount now, in the close's period.
                card.close_amount_missing = false;
                let won = card.status == Status::Won;
                bump_f64(&totals[if won { T_WON_AMOUNT } else { T_LOST_AMOUNT }], amount.max(0.0));
                if won {
                    let margin = change.margin.unwrap_or(0.0);
                    self.money.won(&cards.commerce, amount.max(0.0), margin, card.status_ms);
                }
            }
            if newest || card.amount.is_nan() {
                card.amount = amount;
            }
        }
        if let (Some(margin), false) = (change.margin, money_event) {
            if newest || card.margin.is_nan() {
                card.margin = margin;
            }
        }
        if change.change == CardChangeKind::Created {
            card.created_ms = if card.created_ms == NONE { event_ms } else { card.created_ms.min(event_ms) };
        }
        card.last_ms = card.last_ms.max(event_ms);

        // Funnel: pipeline from the event, else the one the card is known to be in.
        let known = (card.slot != NO_SLOT).then(|| funnel.split_slot(card.slot));
        let p = match change.pipeline.as_deref() {
            Some(name) => funnel.pipeline(Some(name)),
            None => known.map_or(funnel.other_pipeline(), |(p, _)| p),
        };
        let current_location = !existed || event_ms >= card.location_ms;
        let to = change.stage_to.as_deref().map(|stage| funnel.stage(p, Some(stage)));
        if change.change == CardChangeKind::StageChanged {
            if let Some(to) = to {
                let from = match change.stage_from.as_deref() {
                    Some(stage) => funnel.stage(p, Some(stage)),
                    None => match known {
                        Some((known_p, known_s)) if known_p == p && current_location => known_s,
                        _ => funnel.other_stage(p),
                    },
                };
                count_transition(&mut self.transitions, funnel.transition(p, from, to));
            }
        }
        if current_location {
            let moved = match to {
                Some(to) => Some(funnel.slot(p, to)),
                None if change.pipeline.is_some() && known.map(|(kp, _)| kp) != Some(p) => {
                    Some(funnel.slot(p, funnel.other_stage(p)))
                }
                None => None,
            };
            if let Some(slot) = moved {
                if slot != card.slot || card.stage_since_ms == NONE {
                    card.stage_since_ms = event_ms;
                }
                card.slot = slot;
                card.location_ms = event_ms;
            }
            if let Some(pct) = change.stage_progress_pct {
                card.event_progress = pct as f32;
            } else if moved.is_some() {
                card.event_progress = f32::NAN;
            }
        }

        // Status. A new card starts with its first event's status at that event's time.
        let before = card.status;
        let current_status = !existed || event_ms >= card.status_ms;
        let newer_status = !existed || event_ms > card.status_ms;
        let target = match change.change {
            CardChangeKind::Won | CardChangeKind::Lost => {
                let (status, count, amount) = if change.change == CardChangeKind::Won {
                    (Status::Won, T_WON, T_WON_AMOUNT)
                } else {
                    (Status::Lost, T_LOST, T_LOST_AMOUNT)
                };
                if change.card_type == CardType::Deal && !(existed && before == status) {
                    bump(&totals[count], 1);
                    let value = change.amount.or((!card.amount.is_nan()).then_some(card.amount)).unwrap_or(0.0);
                    bump_f64(&totals[amount], value.max(0.0));
                    card.close_amount_missing = change.amount.is_none() && card.amount.is_nan();
                    let won = change.change == CardChangeKind::Won;
                    if won {
                        let margin = change.margin.or((!card.margin.is_nan()).then_some(card.margin)).unwrap_or(0.0);
                        self.money.won(&cards.commerce, value.max(0.0), margin, event_ms);
                    }
                    if card.created_ms != NONE && !card.duration_observed {
                        card.duration_observed = true;
                        let seconds = (event_ms - card.created_ms) as f64 / 1000.0;
                        self.money.observe_duration(usize::from(!won), seconds);
                    }
                }
                current_status.then_some(status)
            }
            CardChangeKind::ResponsibleChanged => {
                // From the holder's stream the card leaves; otherwise this manager adopts it.
                let held = existed && before != Status::Away;
                current_status.then_some(if held { Status::Away } else { Status::Open })
            }
            // A stage change strictly after a close reopens the deal; after a hand-over, re-adopts;
            // on an open deal it dates the open status, so an older close arriving late cannot
            // close a deal that moved on after it.
            CardChangeKind::StageChanged => newer_status.then_some(Status::Open),
            // Any other event strictly after a hand-over: the manager holds the card again.
            _ => (!existed || (newer_status && before == Status::Away)).then_some(Status::Open),
        };
        let target = if existed { target } else { Some(target.unwrap_or(Status::Open)) };
        if let Some(status) = target {
            card.status = status;
            // Meetings, invoices and payments say nothing about whether the deal is open: a card
            // first seen through one is open until any status event, however old, says otherwise.
            let passive = !existed
                && matches!(
                    change.change,
                    CardChangeKind::MeetingScheduled
                        | CardChangeKind::MeetingHeld
                        | CardChangeKind::InvoiceIssued
                        | CardChangeKind::PaymentReceived
                );
            card.status_ms = if passive { NONE } else { event_ms };
        }
        // A `created` seen after the close: the duration can be told now.
        if change.change == CardChangeKind::Created
            && matches!(card.status, Status::Won | Status::Lost)
            && card.kind == CardType::Deal
            && !card.duration_observed
        {
            card.duration_observed = true;
            let seconds = (card.status_ms - card.created_ms) as f64 / 1000.0;
            self.money.observe_duration(usize::from(card.status == Status::Lost), seconds);
        }
        if card.kind == CardType::Deal {
            self.had_deal = true;
            if card.status == Status::Open {
                let slot = if card.slot == NO_SLOT { funnel.other_slot() } else { card.slot };
                mark(&mut self.seen_slots, usize::from(slot));
            }
        }
    }

    fn update_task(
        &mut self,
        cards: &Cards,
        totals: &[AtomicU64; TOTALS],
        card_key: u64,
        change: &CardChange,
        event_ms: i64,
    ) {
        // The task's key: its id, else the card's (the task card itself, or "the card's task").
        let task_key = change.task_id.as_deref().map_or(card_key, key);
        // A task event on a non-task card names the card the task is on.
        let on_card = (change.card_type != CardType::Task).then_some(card_key);
        let client = change.client_id.as_deref().map(key);
        let (j, existed) = self.task_position(cards, task_key);
        let task = &mut self.tasks[j];
        let newest = !existed || event_ms >= task.last_ms;
        if let Some(card) = on_card {
            if newest || task.card == 0 {
                task.card = card;
            }
        }
        if let Some(client) = client {
            if newest || task.client == 0 {
                task.client = client;
            }
        }
        task.last_ms = task.last_ms.max(event_ms);
        let due = change.task_due_at_ms;
        match change.change {
            CardChangeKind::TaskCreated => {
                task.created_ms = if task.created_ms == NONE { event_ms } else { task.created_ms.min(event_ms) };
            }
            CardChangeKind::TaskRescheduled => {
                let unmoved = due.is_some()
                    && (due == change.task_due_from_ms || (task.due_ms != NONE && due == Some(task.due_ms)));
                if !unmoved {
                    bump(&totals[T_RESCHEDULED], 1);
                    task.reschedules = task.reschedules.saturating_add(1);
                }
                task.rescheduled_ms = task.rescheduled_ms.max(event_ms);
            }
            CardChangeKind::TaskCompleted => {
                if task.completed_ms == NONE {
                    bump(&totals[T_TASKS_COMPLETED], 1);
                    task.completed_ms = event_ms;
                } else {
                    task.completed_ms = task.completed_ms.min(event_ms);
                }
            }
            _ => {}
        }
        if let Some(due) = due {
            if task.due_ms == NONE || event_ms >= task.due_event_ms {
                task.due_ms = due;
                task.due_event_ms = event_ms;
            }
        }
    }

    /// The card's position, inserting it (and evicting one at the cap) if new.
    fn card_position(&mut self, cards: &Cards, key: u64) -> (usize, bool) {
        if let Some(&i) = self.card_index.get(&key) {
            return (i as usize, true);
        }
        if self.cards.len() >= cards.max_cards {
            self.evict_card(cards);
        }
        let i = self.cards.len();
        self.cards.push(Card {
            key,
            last_ms: NONE,
            location_ms: NONE,
            status_ms: NONE,
            amount: f64::NAN,
            margin: f64::NAN,
            created_ms: NONE,
            stage_since_ms: NONE,
            event_progress: f32::NAN,
            duration_observed: false,
            close_amount_missing: false,
            client: 0,
            slot: NO_SLOT,
            kind: CardType::Deal,
            status: Status::Open,
        });
        self.touch.resize(self.touch.len() + cards.touch.stride(), 0);
        self.card_index.insert(key, i as u32);
        (i, false)
    }

    fn task_position(&mut self, cards: &Cards, key: u64) -> (usize, bool) {
        if let Some(&j) = self.task_index.get(&key) {
            return (j as usize, true);
        }
        if self.tasks.len() >= cards.max_tasks {
            self.evict_task();
        }
        let j = self.tasks.len();
        self.tasks.push(Task {
            key,
            card: 0,
            client: 0,
            created_ms: NONE,
            rescheduled_ms: NONE,
            due_ms: NONE,
            due_event_ms: NONE,
            completed_ms: NONE,
            last_ms: NONE,
            reschedules: 0,
        });
        self.task_index.insert(key, j as u32);
        (j, false)
    }

    /// At the cap: drops the least recently touched card that is not an open deal; only when every
    /// tracked card is an open deal, the least recently touched open deal.
    fn evict_card(&mut self, cards: &Cards) {
        let victim =
            self.cards.iter().enumerate().min_by_key(|(_, card)| (card.is_open_deal(), card.last_ms)).map(|(i, _)| i);
        if let Some(i) = victim {
            if self.cards[i].share() == Share::Open {
                self.clients.forget_open(self.cards[i].client);
            }
            self.remove_card(i, cards.touch.stride());
            self.evicted_cards += 1;
        }
    }

    /// At the cap: drops a completed task before an open one, the least recently changed first.
    fn evict_task(&mut self) {
        let victim =
            self.tasks.iter().enumerate().min_by_key(|(_, task)| (task.is_open(), task.last_ms)).map(|(j, _)| j);
        if let Some(j) = victim {
            self.remove_task(j);
            self.evicted_tasks += 1;
        }
    }

    fn remove_card(&mut self, i: usize, stride: usize) {
        let removed = self.cards.swap_remove(i);
        self.card_index.remove(&removed.key);
        let last = self.cards.len();
        if i != last {
            self.card_index.insert(self.cards[i].key, i as u32);
            self.touch.copy_within(last * stride..(last + 1) * stride, i * stride);
        }
        self.touch.truncate(last * stride);
    }

    fn remove_task(&mut self, j: usize) {
        let removed = self.tasks.swap_remove(j);
        self.task_index.remove(&removed.key);
        if j != self.tasks.len() {
            self.task_index.insert(self.tasks[j].key, j as u32);
        }
    }

    /// Drops entries nothing needs any more: cards other than open deals and completed tasks whose
    /// newest event is older than the expiry horizon (twice the largest window behind the manager's
    /// newest event). Events that old are dropped as late by the engine, so they cannot come back
    /// for these entries. A won deal stays counted in its client's won deals. Clients without an
    /// open deal expire after `client_idle`.
    fn sweep(&mut self, cards: &Cards) {
        self.clients.sweep(&cards.clients, self.newest_ms);
        let horizon = self.newest_ms.saturating_sub(cards.expiry_ms);
        let stride = cards.touch.stride();
        for i in (0..self.cards.len()).rev() {
            if !self.cards[i].is_open_deal() && self.cards[i].last_ms < horizon {
                self.remove_card(i, stride);
            }
        }
        for j in (0..self.tasks.len()).rev() {
            if !self.tasks[j].is_open() && self.tasks[j].last_ms < horizon {
                self.remove_task(j);
            }
        }
    }

    pub(crate) fn task(&self, key: u64) -> Option<&Task> {
        self.task_index.get(&key).and_then(|&j| self.tasks.get(j as usize))
    }

    /// Approximate heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, u32)>() + 1;
        self.cards.capacity() * std::mem::size_of::<Card>()
            + self.touch.capacity() * 8
            + self.tasks.capacity() * std::mem::size_of::<Task>()
            + (self.card_index.capacity() + self.task_index.capacity()) * entry
            + self.transitions.capacity() * std::mem::size_of::<(u32, u64)>()
            + self.seen_slots.capacity() * 8
            + self.money.heap_bytes()
            + self.clients.heap_bytes()
    }
}

fn count_transition(transitions: &mut Vec<(u32, u64)>, index: u32) {
    match transitions.binary_search_by_key(&index, |&(t, _)| t) {
        Ok(found) => transitions[found].1 = transitions[found].1.saturating_add(1),
        Err(at) => transitions.insert(at, (index, 1)),
    }
}

fn mark(bits: &mut Vec<u64>, index: usize) {
    if bits.len() <= index / 64 {
        bits.resize(index / 64 + 1, 0);
    }
    bits[index / 64] |= 1 << (index % 64);
}

pub(crate) fn is_marked(bits: &[u64], index: usize) -> bool {
    bits.get(index / 64).is_some_and(|word| word & (1 << (index % 64)) != 0)
}
