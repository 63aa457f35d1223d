//! CRM card metrics: what a head of sales reads off the CRM, per manager.
//!
//! From each card change ([`salespulse_events::CardChange`]) a manager's [`CardState`] counts
//! changes by type, comments (and *thin* ones, shorter than a threshold), stage transitions of the
//! configured pipelines, won and lost deals with their amounts, and task completions and
//! reschedules; it keeps, per card and per task, the little state the gauges need: which cards
//! were touched in which buckets (for the distinct `cards_touched` windows), where each open deal
//! sits in its pipeline, and which tasks are open, on which card, and when they are due. A scrape
//! turns that into the open deals per stage, the stage holding most of them, open and overdue
//! tasks, and the open deals without an open task.
//!
//! Pipelines and stages become label values only when configured ([`PipelineConfig`]); everything
//! else folds into `"other"`, so the funnel's cardinality is bounded by the configuration. Card,
//! task and client ids never become labels; the state keeps only their 64-bit fingerprints
//! ([`key`]). Both per-manager tables are capped (evictions are counted in the snapshot's
//! [`JoinStats`]) and shed entries no window or gauge needs any more.
//!
//! For the engine's joins with calls and messages (a task rescheduled without a contact),
//! [`Cards::task`], [`Cards::open_task_on`] and [`Cards::for_each_open_task`] expose each task's
//! card, client and the time it was created or last rescheduled ([`TaskView`]).
//!
//! The commercial side ([`CommerceConfig`], `commerce` module): meetings, invoices and payments
//! (each invoice counted once, in any order), receivables, the weighted pipeline by stage progress
//! (configured progress wins over the event's), hot deals, time in stage and stuck deals against
//! per-stage limits, deal durations, and plan facts per period; [`Cards::render_plans`] exports
//! them against the [`Plans`] in force, and [`PlanStatus`] is the same per-manager view for a
//! JSON page.
//!
//! Main types: [`Cards`] (configuration, folding and the shared layouts), [`CardState`] (one
//! manager), [`CardSnapshot`] and [`CardRow`] (a scrape). Names, meanings and every rule are in
//! `docs/metrics.md` (section "CRM cards").
#![deny(missing_docs)]

mod clients;
mod commerce;
mod funnel;
mod state;
mod touch;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use salespulse_core::expo::{MetricType, MetricWriter};
use salespulse_core::single_writer::add as bump;
use salespulse_core::window::{Counters, Layout, ReadPlan, Windows};
use salespulse_events::{CardChange, CardChangeKind};

pub use clients::Relationship;
use clients::{ClientRules, TRANSITIONS};
pub use commerce::{
    CommerceConfig, CommerceSnapshot, FactSource, Period, PeriodFacts, PlanStatus, Plans, StageRule, Target,
    DURATION_BUCKETS_SECONDS,
};
use commerce::{SlotRules, MEASURES};
use funnel::Funnel;
use state::{is_marked, Inner, NONE};
use touch::TouchLayout;

const CHANGES: usize = CardChangeKind::ALL.len();

/// Windowed counters per bucket: comments, thin comments.
const DIM_COMMENTS: usize = 0;
const DIM_THIN: usize = 1;
const DIMS: usize = 2;

/// Totals layout: changes by kind, then the rest. Amounts are `f64` bits.
const T_COMMENTS: usize = CHANGES;
const T_THIN: usize = CHANGES + 1;
const T_WON: usize = CHANGES + 2;
const T_LOST: usize = CHANGES + 3;
const T_WON_AMOUNT: usize = CHANGES + 4;
const T_LOST_AMOUNT: usize = CHANGES + 5;
const T_TASKS_COMPLETED: usize = CHANGES + 6;
const T_RESCHEDULED: usize = CHANGES + 7;
const TOTALS: usize = CHANGES + 8;

/// One configured pipeline: its name and its stages in funnel order, exactly as events spell
/// them (case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// The `pipeline` label value and the name events carry.
    pub name: String,
    /// The stages, in order; each is a `stage` label value.
    pub stages: Vec<String>,
}

/// Which windows each windowed card family exports, by window label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardExport {
    /// `salespulse_window_cards_touched`.
    pub cards_touched: Vec<String>,
    /// `salespulse_window_comments`.
    pub comments: Vec<String>,
    /// `salespulse_window_thin_comments`.
    pub thin_comments: Vec<String>,
    /// `salespulse_window_client_transitions`.
    pub client_transitions: Vec<String>,
}

impl Default for CardExport {
    /// Cards touched in the working-day windows, comments today; 4 windowed series per manager
    /// with all default windows configured.
    fn default() -> Self {
        let labels = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        CardExport {
            cards_touched: labels(&["1h", "today", "shift"]),
            comments: labels(&["today"]),
            thin_comments: labels(&["today"]),
            client_transitions: labels(&["today"]),
        }
    }
}

/// How card changes are judged, bounded and exported.
#[derive(Debug, Clone, PartialEq)]
pub struct CardsConfig {
    /// A comment with a known length below this many characters is thin.
    pub thin_comment_chars: u32,
    /// The pipelines whose names and stages become label values; others fold into `"other"`.
    pub pipelines: Vec<PipelineConfig>,
    /// Cards tracked per manager (deals, leads, contacts, ...); at the cap one is evicted.
    pub max_cards_per_manager: usize,
    /// Tasks tracked per manager; at the cap one is evicted.
    pub max_tasks_per_manager: usize,
    /// Which windows each windowed family exports.
    pub export: CardExport,
    /// Money, pipeline value, stage rules and plan periods.
    pub commerce: CommerceConfig,
    /// Clients tracked per manager (for their relationship types); at the cap one is evicted.
    pub max_clients_per_manager: usize,
    /// A client without an open deal and without an event for this long (event time) is
    /// forgotten: it leaves the manager's relationship counts.
    pub client_idle_ms: i64,
}

impl Default for CardsConfig {
    fn default() -> Self {
        CardsConfig {
            thin_comment_chars: 20,
            pipelines: Vec::new(),
            max_cards_per_manager: 1_000,
            max_tasks_per_manager: 1_000,
            export: CardExport::default(),
            commerce: CommerceConfig::default(),
            max_clients_per_manager: 2_000,
            client_idle_ms: 30 * 86_400_000,
        }
    }
}

pub use salespulse_core::window::ExportError;

/// The card configuration is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An export list names a window that is not configured.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A pipeline or stage name is empty, repeated, reserved (`"other"`), too long (over 128
    /// bytes) or has control characters.
    #[error("cards pipelines: {0}")]
    Pipeline(String),
    /// A per-manager cap is 0.
    #[error("cards: {0} must be at least 1")]
    Limit(&'static str),
    /// A stage rule names an unconfigured stage, or a value is out of range.
    #[error("cards commerce: {0}")]
    Commerce(String),
}

/// The card stream's configuration and layouts, shared by all managers.
#[derive(Debug, Clone)]
pub struct Cards {
    thin_comment_chars: u32,
    max_cards: usize,
    max_tasks: usize,
    /// Entries that are not open deals or open tasks expire this far behind the newest event.
    expiry_ms: i64,
    funnel: Funnel,
    layout: Layout,
    touch: TouchLayout,
    /// Per windowed comment family, the exported windows as `(position in the layout, label)`.
    comments: Vec<(usize, String)>,
    thin: Vec<(usize, String)>,
    commerce: CommerceConfig,
    rules: SlotRules,
    clients: ClientRules,
}

impl Cards {
    /// Resolves the export lists against `windows` and the pipelines. A window label that is not
    /// configured is an error, except in the default lists, which export what exists of them.
    pub fn new(windows: &Windows, config: &CardsConfig) -> Result<Cards, ConfigError> {
        if config.max_cards_per_manager == 0 {
            return Err(ConfigError::Limit("max_cards_per_manager"));
        }
        if config.max_tasks_per_manager == 0 {
            return Err(ConfigError::Limit("max_tasks_per_manager"));
        }
        if config.max_clients_per_manager == 0 {
            return Err(ConfigError::Limit("max_clients_per_manager"));
        }
        if config.client_idle_ms <= 0 {
            return Err(ConfigError::Limit("client_idle"));
        }
        let funnel = Funnel::new(&config.pipelines)?;
        let rules = slot_rules(&funnel, &config.pipelines, &config.commerce)?;
        let strict = config.export != CardExport::default();
        let resolve = |family, labels: &[String]| windows.resolve_export(family, labels, strict);
        let touched = resolve("cards_touched", &config.export.cards_touched)?;
        let comments = resolve("comments", &config.export.comments)?;
        let thin = resolve("thin_comments", &config.export.thin_comments)?;
        let client_export = resolve("client_transitions", &config.export.client_transitions)?;
        let mut specs: Vec<usize> = comments.iter().chain(&thin).map(|(spec, _)| *spec).collect();
        specs.sort_unstable();
        specs.dedup();
        let layout = Layout::new(windows, DIMS, &specs);
        let position = |list: Vec<(usize, String)>| -> Vec<(usize, String)> {
            list.into_iter()
                .filter_map(|(spec, label)| Some((layout.specs().iter().position(|&s| s == spec)?, label)))
                .collect()
        };
        let comments = position(comments);
        let thin = position(thin);
        Ok(Cards {
            thin_comment_chars: config.thin_comment_chars,
            max_cards: config.max_cards_per_manager,
            max_tasks: config.max_tasks_per_manager,
            expiry_ms: windows.largest_ms().saturating_mul(2),
            funnel,
            touch: TouchLayout::new(windows, &touched),
            layout,
            comments,
            thin,
            commerce: config.commerce.clone(),
            rules,
            clients: ClientRules {
                max_clients: config.max_clients_per_manager,
                idle_ms: config.client_idle_ms,
                export: client_export,
                recent_ms: windows.largest_ms().saturating_mul(2),
            },
        })
    }

    /// The commercial settings in force.
    pub fn commerce(&self) -> &CommerceConfig {
        &self.commerce
    }

    /// `[start, end)` of the plan period holding `now_ms`.
    pub fn period_at(&self, now_ms: i64) -> (i64, i64) {
        self.commerce.period.bounds(self.commerce.time_zone, now_ms)
    }

    /// Empty state for a new manager.
    pub fn new_state(&self) -> CardState {
        CardState {
            totals: Default::default(),
            windows: Counters::new(&self.layout),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether `change` is a thin comment: a `comment_added` whose `comment_length` is known and
    /// below the threshold. A comment without a length is not thin (nothing says it was short).
    pub fn is_thin(&self, change: &CardChange) -> bool {
        change.change == CardChangeKind::CommentAdded
            && change.comment_length.is_some_and(|length| length < self.thin_comment_chars)
    }

    /// Applies one card change that happened at `event_ms` (`occurred_at`), seen at wall-clock
    /// `now_ms`. Only one thread may apply to a given state at a time (the engine applies a
    /// partition's records in order); scrapes may run concurrently.
    ///
    /// Returns how many tracked entries (cards, tasks, invoices, clients) it evicted at their caps.
    pub fn apply(&self, state: &CardState, windows: &Windows, change: &CardChange, event_ms: i64, now_ms: i64) -> u64 {
        let totals = &state.totals;
        bump(&totals[change.change.index()], 1);
        if change.change == CardChangeKind::CommentAdded {
            let thin = self.is_thin(change);
            bump(&totals[T_COMMENTS], 1);
            if thin {
                bump(&totals[T_THIN], 1);
            }
            let mut deltas = [0u32; DIMS];
            deltas[DIM_COMMENTS] = 1;
            deltas[DIM_THIN] = u32::from(thin);
            state.windows.add(&self.layout, windows, event_ms, now_ms, &deltas);
        }
        let mut inner = state.inner.lock();
        let before = inner.evictions();
        inner.apply(self, totals, change, event_ms, now_ms);
        inner.evictions() - before
    }

    /// The values a scrape at the instant of `plan` (wall-clock `now_ms`, which also decides which
    /// tasks are overdue) exports.
    pub fn snapshot(&self, state: &CardState, windows: &Windows, plan: &ReadPlan, now_ms: i64) -> CardSnapshot {
        let load = |i: usize| state.totals[i].load(Ordering::Relaxed);
        let mut totals = CardTotals::default();
        for (i, value) in totals.changes.iter_mut().enumerate() {
            *value = load(i);
        }
        totals.comments = load(T_COMMENTS);
        totals.thin_comments = load(T_THIN);
        totals.deals_won = load(T_WON);
        totals.deals_lost = load(T_LOST);
        totals.deals_won_amount = f64::from_bits(load(T_WON_AMOUNT));
        totals.deals_lost_amount = f64::from_bits(load(T_LOST_AMOUNT));
        totals.tasks_completed = load(T_TASKS_COMPLETED);
        totals.tasks_rescheduled = load(T_RESCHEDULED);
        let mut windowed = vec![0; self.layout.specs().len() * DIMS];
        state.windows.read(&self.layout, windows, plan, &mut windowed);

        let inner = state.inner.lock();
        let stride = self.touch.stride();
        let mut touched = vec![0; self.touch.len()];
        let mut deals_open = vec![0; self.funnel.slots()];
        let mut open_deals = Vec::new();
        let (receivables, receivables_amount) = inner.money.receivables();
        let mut commerce = CommerceSnapshot {
            invoices_issued: inner.money.issued,
            invoices_issued_amount: inner.money.issued_amount,
            payments_received: inner.money.payments,
            payments_received_amount: inner.money.paid_amount,
            receivables,
            receivables_amount,
            evicted_invoices: inner.money.evicted,
            any_money: inner.money.len() > 0,
            pipeline_amount: vec![0.0; self.funnel.slots()],
            stuck: vec![0; self.funnel.slots()],
            oldest_in_stage: vec![f64::NAN; self.funnel.slots()],
            periods: inner.money.periods.clone(),
            durations: inner.money.durations,
            ..CommerceSnapshot::default()
        };
        for (i, card) in inner.cards.iter().enumerate() {
            self.touch.count(&inner.touch[i * stride..(i + 1) * stride], plan, &mut touched);
            if card.is_open_deal() {
                let slot = if card.slot == state::NO_SLOT { self.funnel.other_slot() } else { card.slot };
                let s = usize::from(slot);
                deals_open[s] += 1;
                open_deals.push(card.key);
                self.open_deal_value(&mut commerce, card, s, now_ms);
            }
        }
        let mut task_cards = Vec::new();
        let (mut tasks_open, mut tasks_overdue) = (0, 0);
        for task in inner.tasks.iter().filter(|task| task.is_open()) {
            tasks_open += 1;
            if task.due_ms != NONE && task.due_ms < now_ms {
                tasks_overdue += 1;
            }
            if task.card != 0 {
                task_cards.push(task.card);
            }
        }
        task_cards.sort_unstable();
        let deals_without_task = open_deals.iter().filter(|deal| task_cards.binary_search(deal).is_err()).count();
        let seen_slots = (0..self.funnel.slots()).map(|slot| is_marked(&inner.seen_slots, slot)).collect();
        let mut client_windows = vec![0; self.clients.export.len() * TRANSITIONS];
        inner.clients.read_windows(&self.clients, windows, plan, &mut client_windows);
        let clients = ClientSnapshot {
            ever: inner.clients.ever,
            counts: inner.clients.counts(),
            transitions: inner.clients.transitions.map(u64::from),
            windows: client_windows,
        };
        CardSnapshot {
            totals,
            tasks_open,
            tasks_overdue,
            deals_without_task: deals_without_task as u64,
            had_deal: inner.had_deal,
            join: JoinStats {
                invoices: inner.money.len() as u64,
                cards: inner.cards.len() as u64,
                tasks: inner.tasks.len() as u64,
                evicted_cards: inner.evicted_cards,
                evicted_tasks: inner.evicted_tasks,
                clients: inner.clients.len() as u64,
                evicted_clients: inner.clients.evicted,
            },
            windows: windowed,
            touched,
            deals_open,
            seen_slots,
            transitions: inner.transitions.clone(),
            commerce,
            clients,
        }
    }

    /// Adds one open deal in slot `s` to the pipeline, hot and stuck values.
    fn open_deal_value(&self, commerce: &mut CommerceSnapshot, card: &state::Card, s: usize, now_ms: i64) {
        let amount = if card.amount.is_nan() { 0.0 } else { card.amount };
        commerce.any_money |= !card.amount.is_nan();
        // Configured progress wins; else the event's; else 0.
        let configured = self.rules.progress[s];
        let progress = if !configured.is_nan() {
            configured
        } else if !card.event_progress.is_nan() {
            f64::from(card.event_progress)
        } else {
            0.0
        };
        commerce.pipeline_amount[s] += amount;
        commerce.weighted_pipeline += amount * progress / 100.0;
        if progress >= self.commerce.hot_deal_progress_pct {
            commerce.hot_deals += 1;
            commerce.hot_deals_amount += amount;
        }
        if card.stage_since_ms != NONE {
            let age_ms = (now_ms - card.stage_since_ms).max(0);
            let oldest = &mut commerce.oldest_in_stage[s];
            let seconds = age_ms as f64 / 1000.0;
            *oldest = if oldest.is_nan() { seconds } else { oldest.max(seconds) };
            let limit = self.rules.stuck_ms[s];
            if limit > 0 && age_ms > limit {
                commerce.stuck[s] += 1;
            }
        }
    }

    /// Bytes of one new manager's card state (the fixed part; cards and tasks add
    /// [`CardState::heap_bytes`]).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<CardState>() + self.layout.bytes()
    }

    /// The task `task` (its [`key`]: of the event's `task_id`, or of its `card_id` when the event
    /// has no `task_id`) as this manager's state knows it.
    pub fn task(&self, state: &CardState, task: u64) -> Option<TaskView> {
        state.inner.lock().task(task).map(TaskView::from)
    }

    /// The open task on card `card`, else the open task for client `client` (keys, see [`key`]),
    /// whichever exists; among several, the one created or rescheduled last. For the engine's
    /// joins: a call or message with the client after [`TaskView::anchor_ms`] is a contact made
    /// on the task.
    pub fn open_task_on(&self, state: &CardState, card: Option<u64>, client: Option<u64>) -> Option<TaskView> {
        let inner = state.inner.lock();
        let best = |matches: &dyn Fn(&state::Task) -> bool| {
            inner
                .tasks
                .iter()
                .filter(|task| task.is_open() && matches(task))
                .max_by_key(|task| task.created_ms.max(task.rescheduled_ms))
                .map(TaskView::from)
        };
        card.filter(|&c| c != 0)
            .and_then(|card| best(&|task| task.card == card))
            .or_else(|| client.filter(|&c| c != 0).and_then(|client| best(&|task| task.client == client)))
    }

    /// Calls `visit` with every open task of the manager.
    pub fn for_each_open_task(&self, state: &CardState, mut visit: impl FnMut(&TaskView)) {
        let inner = state.inner.lock();
        for task in inner.tasks.iter().filter(|task| task.is_open()) {
            visit(&TaskView::from(task));
        }
    }

    /// The open deals of `pipeline`/`stage` (label values, `"other"` included) in a snapshot.
    pub fn deals_open(&self, snapshot: &CardSnapshot, pipeline: &str, stage: &str) -> u64 {
        self.slot_of(pipeline, stage).and_then(|slot| snapshot.deals_open.get(usize::from(slot)).copied()).unwrap_or(0)
    }

    /// The stage transitions counted for `pipeline`, `stage_from` to `stage_to` (label values).
    pub fn stage_transitions(&self, snapshot: &CardSnapshot, pipeline: &str, from: &str, to: &str) -> u64 {
        let (Some(from), Some(to)) = (self.slot_of(pipeline, from), self.slot_of(pipeline, to)) else { return 0 };
        let ((p, from), (_, to)) = (self.funnel.split_slot(from), self.funnel.split_slot(to));
        let t = self.funnel.transition(p, from, to);
        snapshot.transitions.binary_search_by_key(&t, |&(t, _)| t).map_or(0, |i| snapshot.transitions[i].1)
    }

    /// Distinct cards touched in the exported window `label`; `None` if it is not exported.
    pub fn cards_touched(&self, snapshot: &CardSnapshot, label: &str) -> Option<u64> {
        let position = self.touch.labels().position(|l| l == label)?;
        snapshot.touched.get(position).copied()
    }

    /// `(comments, thin comments)` in window `label`; `None` where the family does not export it.
    pub fn window_comments(&self, snapshot: &CardSnapshot, label: &str) -> (Option<u64>, Option<u64>) {
        let find = |list: &[(usize, String)], dim: usize| {
            list.iter().find(|(_, l)| l == label).map(|(position, _)| snapshot.windows[position * DIMS + dim])
        };
        (find(&self.comments, DIM_COMMENTS), find(&self.thin, DIM_THIN))
    }

    /// The stage holding most of the snapshot's open deals, as label values: ties go to the
    /// earliest slot in configured order (a pipeline's stages in order, then its `"other"`; the
    /// `"other"` pipeline last). `None` without open deals.
    pub fn top_stage<'a>(&'a self, snapshot: &CardSnapshot) -> Option<(&'a str, &'a str)> {
        let mut best: Option<(usize, u64)> = None;
        for (slot, &count) in snapshot.deals_open.iter().enumerate() {
            if count > 0 && best.is_none_or(|(_, most)| count > most) {
                best = Some((slot, count));
            }
        }
        best.map(|(slot, _)| self.funnel.slot_labels(slot as u16))
    }

    fn slot_of(&self, pipeline: &str, stage: &str) -> Option<u16> {
        (0..self.funnel.slots() as u16).find(|&slot| self.funnel.slot_labels(slot) == (pipeline, stage))
    }

    /// Writes the card families for `rows`. Label sets that never occurred are not written; once
    /// they occurred, gauges stay (at 0 when empty) while the manager is kept.
    pub fn render(&self, rows: &[CardRow<'_>], out: &mut MetricWriter) {
        out.family(
            "salespulse_card_changes_total",
            "CRM card changes since the manager appeared, by change type.",
            MetricType::Counter,
        );
        for row in rows {
            for change in CardChangeKind::ALL {
                let value = row.cards.totals.changes[change.index()];
                if value > 0 {
                    let labels = [("change", change.as_str())];
                    out.sample_prefixed("salespulse_card_changes_total", row.labels, &labels, value as f64);
                }
            }
        }

        out.family("salespulse_window_cards_touched", "Distinct CRM cards changed in the window.", MetricType::Gauge);
        for row in rows.iter().filter(|row| row.cards.totals.any()) {
            for (label, value) in self.touch.labels().zip(&row.cards.touched) {
                let labels = [("window", label)];
                out.sample_prefixed("salespulse_window_cards_touched", row.labels, &labels, *value as f64);
            }
        }

        let commented = |row: &&CardRow<'_>| row.cards.totals.comments > 0;
        out.family("salespulse_comments_total", "Comments added since the manager appeared.", MetricType::Counter);
        for row in rows.iter().filter(commented) {
            out.sample_prefixed("salespulse_comments_total", row.labels, &[], row.cards.totals.comments as f64);
        }
        out.family(
            "salespulse_thin_comments_total",
            "Comments shorter than the thin-comment threshold since the manager appeared.",
            MetricType::Counter,
        );
        for row in rows.iter().filter(commented) {
            let value = row.cards.totals.thin_comments as f64;
            out.sample_prefixed("salespulse_thin_comments_total", row.labels, &[], value);
        }
        for (name, help, exported, dim) in [
            ("salespulse_window_comments", "Comments added in the window.", &self.comments, DIM_COMMENTS),
            (
                "salespulse_window_thin_comments",
                "Comments shorter than the thin-comment threshold in the window.",
                &self.thin,
                DIM_THIN,
            ),
        ] {
            out.family(name, help, MetricType::Gauge);
            for row in rows.iter().filter(commented) {
                for (position, label) in exported {
                    let value = row.cards.windows[position * DIMS + dim] as f64;
                    out.sample_prefixed(name, row.labels, &[("window", label.as_str())], value);
                }
            }
        }

        out.family(
            "salespulse_stage_transitions_total",
            "Pipeline stage changes since the manager appeared; unconfigured pipelines and stages are \"other\".",
            MetricType::Counter,
        );
        for row in rows {
            for &(t, value) in &row.cards.transitions {
                let (p, from, to) = self.funnel.split_transition(t);
                let labels = [
                    ("pipeline", self.funnel.pipeline_label(p)),
                    ("stage_from", self.funnel.stage_label(p, from)),
                    ("stage_to", self.funnel.stage_label(p, to)),
                ];
                out.sample_prefixed("salespulse_stage_transitions_total", row.labels, &labels, value as f64);
            }
        }

        let closed = |row: &&CardRow<'_>| row.cards.totals.deals_won + row.cards.totals.deals_lost > 0;
        for (name, help, value) in [
            (
                "salespulse_deals_won_total",
                "Deals won since the manager appeared.",
                (|t: &CardTotals| t.deals_won as f64) as fn(&CardTotals) -> f64,
            ),
            ("salespulse_deals_lost_total", "Deals lost since the manager appeared.", |t| t.deals_lost as f64),
            (
                "salespulse_deals_won_amount_total",
                "Sum of the amounts of deals won since the manager appeared, in the CRM's currency.",
                |t| t.deals_won_amount,
            ),
            (
                "salespulse_deals_lost_amount_total",
                "Sum of the amounts of deals lost since the manager appeared, in the CRM's currency.",
                |t| t.deals_lost_amount,
            ),
        ] {
            out.family(name, help, MetricType::Counter);
            for row in rows.iter().filter(closed) {
                out.sample_prefixed(name, row.labels, &[], value(&row.cards.totals));
            }
        }

        self.render_by_stage(
            rows,
            out,
            ("salespulse_deals_open", "Open deals held by the manager, by the last known pipeline stage."),
            |cards, slot| {
                let value = cards.deals_open[slot];
                (cards.seen_slots[slot] || value > 0).then_some(value as f64)
            },
        );

        out.family(
            "salespulse_deals_top_stage",
            "1 for the pipeline stage holding most of the manager's open deals (ties: earliest configured).",
            MetricType::Gauge,
        );
        for row in rows {
            if let Some((pipeline, stage)) = self.top_stage(row.cards) {
                let labels = [("pipeline", pipeline), ("stage", stage)];
                out.sample_prefixed("salespulse_deals_top_stage", row.labels, &labels, 1.0);
            }
        }

        out.family(
            "salespulse_deals_without_task",
            "Open deals of the manager with no open task on them.",
            MetricType::Gauge,
        );
        for row in rows.iter().filter(|row| row.cards.had_deal) {
            let value = row.cards.deals_without_task as f64;
            out.sample_prefixed("salespulse_deals_without_task", row.labels, &[], value);
        }

        let tasked = |row: &&CardRow<'_>| row.cards.totals.any_task();
        for (name, help, kind, value) in [
            (
                "salespulse_tasks_open",
                "Open (not completed) tasks of the manager.",
                MetricType::Gauge,
                (|s: &CardSnapshot| s.tasks_open as f64) as fn(&CardSnapshot) -> f64,
            ),
            (
                "salespulse_tasks_overdue",
                "Open tasks of the manager whose due time has passed.",
                MetricType::Gauge,
                |s| s.tasks_overdue as f64,
            ),
            (
                "salespulse_tasks_completed_total",
                "Tasks completed since the manager appeared.",
                MetricType::Counter,
                |s| s.totals.tasks_completed as f64,
            ),
            (
                "salespulse_tasks_rescheduled_total",
                "Task reschedules that moved the due time, since the manager appeared.",
                MetricType::Counter,
                |s| s.totals.tasks_rescheduled as f64,
            ),
        ] {
            out.family(name, help, kind);
            for row in rows.iter().filter(tasked) {
                out.sample_prefixed(name, row.labels, &[], value(row.cards));
            }
        }
        self.render_commerce(rows, out);
        self.render_clients(rows, out);
    }
}

/// The commercial families (money, pipeline value, stuck deals, durations) and the plans.
impl Cards {
    /// Writes gauge family `(name, help)` with a `pipeline`/`stage` sample per funnel slot of each
    /// row for which `value(snapshot, slot)` gives one.
    fn render_by_stage(
        &self,
        rows: &[CardRow<'_>],
        out: &mut MetricWriter,
        (name, help): (&str, &str),
        value: impl Fn(&CardSnapshot, usize) -> Option<f64>,
    ) {
        out.family(name, help, MetricType::Gauge);
        for row in rows {
            for slot in 0..self.funnel.slots() {
                if let Some(value) = value(row.cards, slot) {
                    let (pipeline, stage) = self.funnel.slot_labels(slot as u16);
                    out.sample_prefixed(name, row.labels, &[("pipeline", pipeline), ("stage", stage)], value);
                }
            }
        }
    }

    /// The client families: relationship types, their transitions, and evictions.
    fn render_clients(&self, rows: &[CardRow<'_>], out: &mut MetricWriter) {
        let with_clients = |row: &&CardRow<'_>| row.cards.clients.ever;
        out.family(
            "salespulse_clients",
            "Clients of the manager by relationship type: cold (never bought, no open deal), potential (an open deal), current (one won deal), regular (more than one).",
            MetricType::Gauge,
        );
        for row in rows.iter().filter(with_clients) {
            for relationship in Relationship::ALL {
                let labels = [("relationship", relationship.as_str())];
                let value = row.cards.clients.count(relationship) as f64;
                out.sample_prefixed("salespulse_clients", row.labels, &labels, value);
            }
        }
        out.family(
            "salespulse_client_transitions_total",
            "Changes of a client's relationship type since the manager appeared, by type before and after.",
            MetricType::Counter,
        );
        for row in rows {
            let clients = &row.cards.clients;
            for (t, (from, to)) in clients.occurred() {
                let labels = [("from", from.as_str()), ("to", to.as_str())];
                out.sample_prefixed(
                    "salespulse_client_transitions_total",
                    row.labels,
                    &labels,
                    clients.transitions[t] as f64,
                );
            }
        }
        out.family(
            "salespulse_window_client_transitions",
            "Changes of a client's relationship type in the window, by type before and after.",
            MetricType::Gauge,
        );
        for row in rows {
            let clients = &row.cards.clients;
            for (n, (_, window)) in self.clients.export.iter().enumerate() {
                for (t, (from, to)) in clients.occurred() {
                    let labels = [("from", from.as_str()), ("to", to.as_str()), ("window", window.as_str())];
                    let value = clients.windows[n * TRANSITIONS + t] as f64;
                    out.sample_prefixed("salespulse_window_client_transitions", row.labels, &labels, value);
                }
            }
        }
        out.family(
            "salespulse_clients_evicted_total",
            "Clients dropped from the manager's state at max_clients_per_manager.",
            MetricType::Counter,
        );
        for row in rows.iter().filter(with_clients) {
            let value = row.cards.join.evicted_clients as f64;
            out.sample_prefixed("salespulse_clients_evicted_total", row.labels, &[], value);
        }
    }

    fn render_commerce(&self, rows: &[CardRow<'_>], out: &mut MetricWriter) {
        fn change(s: &CardSnapshot, kind: CardChangeKind) -> f64 {
            s.totals.changes[kind.index()] as f64
        }
        for (name, help, kind, value) in [
            (
                "salespulse_meetings_scheduled_total",
                "Meetings scheduled (meeting_scheduled card changes) since the manager appeared.",
                MetricType::Counter,
                (|s: &CardSnapshot| change(s, CardChangeKind::MeetingScheduled)) as fn(&CardSnapshot) -> f64,
            ),
            (
                "salespulse_meetings_held_total",
                "Meetings held (meeting_held card changes) since the manager appeared.",
                MetricType::Counter,
                |s| change(s, CardChangeKind::MeetingHeld),
            ),
            (
                "salespulse_invoices_issued_total",
                "Distinct invoices issued since the manager appeared.",
                MetricType::Counter,
                |s| s.commerce.invoices_issued as f64,
            ),
            (
                "salespulse_invoices_issued_amount_total",
                "Sum of issued invoices' amounts since the manager appeared, in the configured currency.",
                MetricType::Counter,
                |s| s.commerce.invoices_issued_amount,
            ),
            (
                "salespulse_payments_received_total",
                "Invoices paid since the manager appeared.",
                MetricType::Counter,
                |s| s.commerce.payments_received as f64,
            ),
            (
                "salespulse_payments_received_amount_total",
                "Sum of payments received since the manager appeared, in the configured currency.",
                MetricType::Counter,
                |s| s.commerce.payments_received_amount,
            ),
            ("salespulse_receivables_invoices", "Invoices issued and not yet paid.", MetricType::Gauge, |s| {
                s.commerce.receivables as f64
            }),
            (
                "salespulse_receivables_amount",
                "Amount of invoices issued and not yet paid, in the configured currency.",
                MetricType::Gauge,
                |s| s.commerce.receivables_amount,
            ),
        ] {
            out.family(name, help, kind);
            for row in rows {
                out.sample_prefixed(name, row.labels, &[], value(row.cards));
            }
        }

        let dealt = |row: &&CardRow<'_>| row.cards.had_deal;
        for (name, help, value) in [
            (
                "salespulse_pipeline_weighted_amount",
                "Sum over the manager's open deals of amount x stage progress / 100, in the configured currency.",
                (|s: &CardSnapshot| s.commerce.weighted_pipeline) as fn(&CardSnapshot) -> f64,
            ),
            ("salespulse_deals_hot", "Open deals at or above the hot-deal progress.", |s| s.commerce.hot_deals as f64),
            ("salespulse_deals_hot_amount", "Amount of the hot open deals, in the configured currency.", |s| {
                s.commerce.hot_deals_amount
            }),
        ] {
            out.family(name, help, MetricType::Gauge);
            for row in rows.iter().filter(dealt) {
                out.sample_prefixed(name, row.labels, &[], value(row.cards));
            }
        }

        self.render_by_stage(
            rows,
            out,
            (
                "salespulse_pipeline_amount",
                "Amount of the manager's open deals, by the last known pipeline stage, in the configured currency.",
            ),
            |cards, slot| {
                let value = cards.commerce.pipeline_amount[slot];
                (cards.seen_slots[slot] || value != 0.0).then_some(value)
            },
        );
        self.render_by_stage(
            rows,
            out,
            ("salespulse_deals_stuck", "Open deals in a stage for longer than its configured stuck_after limit."),
            |cards, slot| {
                let value = cards.commerce.stuck[slot];
                let shown = self.rules.stuck_ms[slot] > 0 && (cards.seen_slots[slot] || value > 0);
                shown.then_some(value as f64)
            },
        );
        self.render_by_stage(
            rows,
            out,
            (
                "salespulse_deals_stage_age_max_seconds",
                "Longest time one of the manager's open deals has been in its current stage, seconds.",
            ),
            |cards, slot| Some(cards.commerce.oldest_in_stage[slot]).filter(|value| !value.is_nan()),
        );

        const NAME: &str = "salespulse_deal_duration_seconds";
        out.family(NAME, "Time from a deal's creation to its close, seconds, by outcome.", MetricType::Histogram);
        let le: Vec<String> =
            DURATION_BUCKETS_SECONDS.iter().map(|b| b.to_string()).chain(std::iter::once("+Inf".to_owned())).collect();
        for row in rows {
            let closed: Vec<_> = (0..2).map(|outcome| row.cards.commerce.durations(outcome)).collect();
            if closed.iter().all(|(_, count, _)| *count == 0) {
                continue;
            }
            for (outcome, (cumulative, count, sum)) in ["won", "lost"].iter().zip(&closed) {
                for (le, value) in le.iter().zip(cumulative) {
                    let labels = [("outcome", *outcome), ("le", le.as_str())];
                    out.sample_prefixed("salespulse_deal_duration_seconds_bucket", row.labels, &labels, *value as f64);
                }
                let labels = [("outcome", *outcome)];
                out.sample_prefixed("salespulse_deal_duration_seconds_sum", row.labels, &labels, *sum);
                out.sample_prefixed("salespulse_deal_duration_seconds_count", row.labels, &labels, *count as f64);
            }
        }
    }

    /// Writes the plan families at `now_ms`: per manager of `rows` the plan, the fact, the
    /// completion and the linear expected value; per planned team its target; and the share of the
    /// period elapsed. The plan period is computed once per scrape.
    pub fn render_plans(&self, rows: &[PlanRow<'_>], plans: &Plans, now_ms: i64, out: &mut MetricWriter) {
        let period = self.period_at(now_ms);
        let statuses: Vec<PlanStatus> = rows
            .iter()
            .map(|row| PlanStatus::of(plans, row.manager, row.team, row.cards.map(|c| &c.commerce), period, now_ms))
            .collect();
        out.family(
            "salespulse_plan_period_elapsed_ratio",
            "Share of the current plan period elapsed, 0 to 1.",
            MetricType::Gauge,
        );
        // Only with plans: without, nothing reads it, and a scrape stays a function of the events.
        if !(plans.managers.is_empty() && plans.teams.is_empty()) {
            out.sample("salespulse_plan_period_elapsed_ratio", &[], commerce::elapsed(period, now_ms));
        }
        out.family("salespulse_plan", "The manager's plan for the current period, by measure.", MetricType::Gauge);
        for (row, status) in rows.iter().zip(&statuses) {
            for (m, measure) in MEASURES.iter().enumerate() {
                if let Some(plan) = status.plan[m] {
                    out.sample_prefixed("salespulse_plan", row.labels, &[("measure", measure)], plan);
                }
            }
        }
        out.family(
            "salespulse_plan_fact",
            "The manager's fact in the current plan period (won deals or payments, per the plans file), by measure.",
            MetricType::Gauge,
        );
        for (row, status) in rows.iter().zip(&statuses) {
            if row.cards.is_none() && status.plan.iter().all(Option::is_none) {
                continue;
            }
            for (m, measure) in MEASURES.iter().enumerate() {
                out.sample_prefixed("salespulse_plan_fact", row.labels, &[("measure", measure)], status.fact[m]);
            }
        }
        for (name, help, value) in [
            (
                "salespulse_plan_completion_ratio",
                "Fact divided by plan in the current period, by measure.",
                PlanStatus::completion as fn(&PlanStatus, usize) -> Option<f64>,
            ),
            (
                "salespulse_plan_expected",
                "Plan times the share of the period elapsed: where a linear pace would be now, by measure.",
                PlanStatus::expected,
            ),
        ] {
            out.family(name, help, MetricType::Gauge);
            for (row, status) in rows.iter().zip(&statuses) {
                for (m, measure) in MEASURES.iter().enumerate() {
                    if let Some(value) = value(status, m) {
                        out.sample_prefixed(name, row.labels, &[("measure", measure)], value);
                    }
                }
            }
        }
        out.family(
            "salespulse_team_plan",
            "The team's plan for the current period, by measure (every replica exports the same value).",
            MetricType::Gauge,
        );
        let mut teams: Vec<_> = plans.teams.iter().collect();
        teams.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (team, (target, _)) in teams {
            for (m, measure) in MEASURES.iter().enumerate() {
                if let Some(plan) = target.measure(m) {
                    out.sample("salespulse_team_plan", &[("team", team), ("measure", measure)], plan);
                }
            }
        }
    }
}

/// One manager's row for [`Cards::render_plans`]: every held manager, with or without card state.
#[derive(Debug, Clone, Copy)]
pub struct PlanRow<'a> {
    /// The manager's `manager` and `team` labels, rendered once by `expo::label_prefix`.
    pub labels: &'a str,
    /// The manager id (the plans file's key).
    pub manager: &'a str,
    /// The manager's team.
    pub team: Option<&'a str>,
    /// The card values, if the manager has card state.
    pub cards: Option<&'a CardSnapshot>,
}

/// Resolves the stage rules onto funnel slots, checking each names a configured stage.
fn slot_rules(
    funnel: &Funnel,
    pipelines: &[PipelineConfig],
    config: &CommerceConfig,
) -> Result<SlotRules, ConfigError> {
    let bad = |what: String| Err(ConfigError::Commerce(what));
    if !(0.0..=100.0).contains(&config.hot_deal_progress_pct) {
        return bad("hot_deal_progress_pct must be within 0..=100".into());
    }
    if config.max_invoices_per_manager == 0 {
        return Err(ConfigError::Limit("max_invoices_per_manager"));
    }
    let mut rules = SlotRules { progress: vec![f64::NAN; funnel.slots()], stuck_ms: vec![0; funnel.slots()] };
    for rule in &config.stages {
        let Some(pipeline) = pipelines.iter().find(|p| p.name == rule.pipeline) else {
            return bad(format!("stage rule for pipeline {:?}, which is not configured", rule.pipeline));
        };
        if !pipeline.stages.contains(&rule.stage) {
            return bad(format!("stage {:?} is not a stage of pipeline {:?}", rule.stage, rule.pipeline));
        }
        let p = funnel.pipeline(Some(&rule.pipeline));
        let slot = usize::from(funnel.slot(p, funnel.stage(p, Some(&rule.stage))));
        if let Some(pct) = rule.progress_pct {
            if !(0.0..=100.0).contains(&pct) {
                return bad(format!("progress of stage {:?} must be within 0..=100", rule.stage));
            }
            rules.progress[slot] = pct;
        }
        if let Some(limit) = rule.stuck_after_ms {
            if limit <= 0 {
                return bad(format!("stuck_after of stage {:?} must be positive", rule.stage));
            }
            rules.stuck_ms[slot] = limit;
        }
    }
    Ok(rules)
}

/// The fingerprint an id is kept as (card, task and client ids): `ledger::fingerprint` with the
/// lowest bit set, so never 0 (the convention of the manager table and the engine's joins); stable
/// across processes.
pub fn key(id: &str) -> u64 {
    salespulse_core::ledger::fingerprint(id) | 1
}

/// Single-writer add to an `f64` kept as bits.
fn bump_f64(cell: &AtomicU64, delta: f64) {
    let sum = f64::from_bits(cell.load(Ordering::Relaxed)) + delta;
    if sum.is_finite() {
        cell.store(sum.to_bits(), Ordering::Relaxed);
    }
}

/// One manager's card state: totals and comment windows through atomics, cards and tasks behind a
/// lock that only the partition's writer and a scrape take.
#[derive(Debug)]
pub struct CardState {
    totals: [AtomicU64; TOTALS],
    windows: Counters,
    inner: Mutex<Inner>,
}

impl CardState {
    /// Heap bytes held by the card and task tables (beyond [`Cards::state_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        self.inner.lock().heap_bytes()
    }
}

/// What the engine needs to join a task with calls and messages. Ids are [`key`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskView {
    /// The task's key.
    pub task: u64,
    /// The card it is on, if a task event named a non-task card.
    pub card: Option<u64>,
    /// The client, if a task event named one.
    pub client: Option<u64>,
    /// Not completed.
    pub open: bool,
    /// When it was created, if the creation was seen.
    pub created_ms: Option<i64>,
    /// When it was created or last rescheduled, whichever is later; `None` if neither was seen.
    pub anchor_ms: Option<i64>,
    /// Its due time, from the newest event that carried one.
    pub due_ms: Option<i64>,
    /// When it was completed.
    pub completed_ms: Option<i64>,
    /// Reschedules that moved its due time.
    pub reschedules: u32,
}

impl From<&state::Task> for TaskView {
    fn from(task: &state::Task) -> Self {
        let known = |ms: i64| (ms != NONE).then_some(ms);
        TaskView {
            task: task.key,
            card: (task.card != 0).then_some(task.card),
            client: (task.client != 0).then_some(task.client),
            open: task.is_open(),
            created_ms: known(task.created_ms),
            anchor_ms: known(task.created_ms.max(task.rescheduled_ms)),
            due_ms: known(task.due_ms),
            completed_ms: known(task.completed_ms),
            reschedules: task.reschedules,
        }
    }
}

/// A manager's card totals since it appeared.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CardTotals {
    /// Changes by kind, indexed by `CardChangeKind::index`.
    pub changes: [u64; CHANGES],
    /// Comments added.
    pub comments: u64,
    /// Thin comments added.
    pub thin_comments: u64,
    /// Deals won.
    pub deals_won: u64,
    /// Deals lost.
    pub deals_lost: u64,
    /// Sum of won deals' amounts.
    pub deals_won_amount: f64,
    /// Sum of lost deals' amounts.
    pub deals_lost_amount: f64,
    /// Tasks completed.
    pub tasks_completed: u64,
    /// Reschedules that moved a task's due time.
    pub tasks_rescheduled: u64,
}

impl CardTotals {
    fn any(&self) -> bool {
        self.changes.iter().any(|&c| c > 0)
    }

    fn any_task(&self) -> bool {
        [CardChangeKind::TaskCreated, CardChangeKind::TaskCompleted, CardChangeKind::TaskRescheduled]
            .iter()
            .any(|kind| self.changes[kind.index()] > 0)
    }
}

/// How much join state a manager holds (`salespulse_join_state_entries{state="cards"}` sums it)
/// and how much was evicted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JoinStats {
    /// Invoices tracked.
    pub invoices: u64,
    /// Cards tracked.
    pub cards: u64,
    /// Tasks tracked.
    pub tasks: u64,
    /// Cards evicted at `max_cards_per_manager` since the manager appeared.
    pub evicted_cards: u64,
    /// Tasks evicted at `max_tasks_per_manager` since the manager appeared.
    pub evicted_tasks: u64,
    /// Clients tracked.
    pub clients: u64,
    /// Clients evicted at `max_clients_per_manager` since the manager appeared.
    pub evicted_clients: u64,
}

/// A manager's clients at one instant: counts by relationship type and transitions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientSnapshot {
    /// Whether the manager ever had a client (the gauges are exported from then on).
    pub ever: bool,
    /// Clients held (not handed over), by [`Relationship::index`].
    pub counts: [u64; 4],
    /// Transitions since the manager appeared, by transition index.
    transitions: [u64; TRANSITIONS],
    /// Windowed transitions per exported window, window-major.
    windows: Vec<u64>,
}

impl ClientSnapshot {
    /// Clients of type `relationship`.
    pub fn count(&self, relationship: Relationship) -> u64 {
        self.counts[relationship.index()]
    }

    /// Transitions `from -> to` since the manager appeared (0 for `from == to`).
    pub fn transitions(&self, from: Relationship, to: Relationship) -> u64 {
        if from == to {
            return 0;
        }
        self.transitions[clients::transition_index(from, to)]
    }

    /// The transitions that occurred, as `(index, (from, to))`: their series are exported.
    fn occurred(&self) -> impl Iterator<Item = (usize, (Relationship, Relationship))> + '_ {
        (0..TRANSITIONS).filter(|&t| self.transitions[t] > 0).map(|t| (t, clients::transition_at(t)))
    }

    fn merge(&mut self, other: &ClientSnapshot) {
        self.ever |= other.ever;
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in self.transitions.iter_mut().zip(&other.transitions) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in self.windows.iter_mut().zip(&other.windows) {
            *a = a.saturating_add(*b);
        }
    }
}

/// A manager's card values at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct CardSnapshot {
    /// Since the manager appeared.
    pub totals: CardTotals,
    /// Open tasks.
    pub tasks_open: u64,
    /// Open tasks due before the scrape's wall clock.
    pub tasks_overdue: u64,
    /// Open deals with no open task on them.
    pub deals_without_task: u64,
    /// Whether the manager ever held a deal (the without-task gauge is exported from then on).
    pub had_deal: bool,
    /// Cards and tasks tracked, and evictions.
    pub join: JoinStats,
    /// Comment counters, window-major in the layout's window order.
    windows: Vec<u64>,
    /// Distinct cards touched, per exported `cards_touched` window.
    touched: Vec<u64>,
    /// Open deals per slot.
    deals_open: Vec<u64>,
    /// Slots an open deal has sat in.
    seen_slots: Vec<bool>,
    /// Stage transitions, sorted by transition index.
    transitions: Vec<(u32, u64)>,
    /// Money, pipeline value, stuck deals, plan facts, deal durations.
    pub commerce: CommerceSnapshot,
    /// Clients by relationship type, and their transitions.
    pub clients: ClientSnapshot,
}

impl CardSnapshot {
    /// Adds `other` (the same manager seen through another partition). Distinct counts add up:
    /// exact as long as each card's events stay in one partition (producers keyed by manager or by
    /// card); the top stage is chosen at render time from the merged open deals.
    pub fn merge(&mut self, other: &CardSnapshot) {
        let (mine, theirs) = (&mut self.totals, &other.totals);
        for (a, b) in mine.changes.iter_mut().zip(&theirs.changes) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in [
            (&mut mine.comments, theirs.comments),
            (&mut mine.thin_comments, theirs.thin_comments),
            (&mut mine.deals_won, theirs.deals_won),
            (&mut mine.deals_lost, theirs.deals_lost),
            (&mut mine.tasks_completed, theirs.tasks_completed),
            (&mut mine.tasks_rescheduled, theirs.tasks_rescheduled),
            (&mut self.tasks_open, other.tasks_open),
            (&mut self.tasks_overdue, other.tasks_overdue),
            (&mut self.deals_without_task, other.deals_without_task),
            (&mut self.join.cards, other.join.cards),
            (&mut self.join.tasks, other.join.tasks),
            (&mut self.join.invoices, other.join.invoices),
            (&mut self.join.evicted_cards, other.join.evicted_cards),
            (&mut self.join.evicted_tasks, other.join.evicted_tasks),
            (&mut self.join.clients, other.join.clients),
            (&mut self.join.evicted_clients, other.join.evicted_clients),
        ] {
            *a = a.saturating_add(b);
        }
        mine.deals_won_amount += theirs.deals_won_amount;
        mine.deals_lost_amount += theirs.deals_lost_amount;
        self.had_deal |= other.had_deal;
        for (list, theirs) in [(&mut self.windows, &other.windows), (&mut self.touched, &other.touched)] {
            for (a, b) in list.iter_mut().zip(theirs) {
                *a = a.saturating_add(*b);
            }
        }
        for (a, b) in self.deals_open.iter_mut().zip(&other.deals_open) {
            *a = a.saturating_add(*b);
        }
        for (a, b) in self.seen_slots.iter_mut().zip(&other.seen_slots) {
            *a |= *b;
        }
        let mut merged = Vec::with_capacity(self.transitions.len() + other.transitions.len());
        let (mut a, mut b) = (self.transitions.iter().peekable(), other.transitions.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&(ta, va)), Some(&&(tb, vb))) if ta == tb => {
                    a.next();
                    b.next();
                    (ta, va.saturating_add(vb))
                }
                (Some(&&x), Some(&&y)) if x.0 < y.0 => {
                    a.next();
                    x
                }
                (_, Some(&&y)) => {
                    b.next();
                    y
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        self.transitions = merged;
        self.commerce.merge(&other.commerce);
        self.clients.merge(&other.clients);
    }
}

/// One manager's row in a scrape.
#[derive(Debug, Clone, Copy)]
pub struct CardRow<'a> {
    /// The manager's `manager` and `team` labels, rendered once by `expo::label_prefix`.
    pub labels: &'a str,
    /// The values.
    pub cards: &'a CardSnapshot,
}

#[cfg(test)]
mod clients_tests;
#[cfg(test)]
mod commerce_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
