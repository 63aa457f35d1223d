//! Commercial KPIs: money (invoices, payments, receivables), the weighted pipeline, hot and stuck
//! deals, deal duration, and plan facts per period.
//!
//! Amounts are `f64` in major units of the one configured currency (the engine rejects events in
//! another currency before they get here). Invoices are keyed by the fingerprint of `invoice_id`
//! (else of the card id: "the card's invoice"), bounded per manager like cards; an invoice counts
//! once when issued and once when paid, whatever the order and however often either event is
//! repeated, so receivables (issued, not yet paid) are a pure function of the set of events.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;
use salespulse_events::{CardChange, CardChangeKind};

use crate::state::{IdMap, NONE};

/// Upper bounds of the deal-duration histogram buckets, seconds (1, 3, 7, 14, 30, 60, 90, 180 and
/// 365 days; then `+Inf`).
pub const DURATION_BUCKETS_SECONDS: [f64; 9] =
    [86_400.0, 259_200.0, 604_800.0, 1_209_600.0, 2_592_000.0, 5_184_000.0, 7_776_000.0, 15_552_000.0, 31_536_000.0];
const DURATION_SLOTS: usize = DURATION_BUCKETS_SECONDS.len() + 1;
/// Plan periods kept per manager (the current one, and late events of the previous ones).
const PERIODS_KEPT: usize = 3;

/// The length of a plan period, in the configured time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Period {
    /// Calendar month (the default).
    #[default]
    Month,
    /// Calendar quarter.
    Quarter,
    /// ISO week, from Monday.
    Week,
}

impl Period {
    /// `"month"`, `"quarter"` or `"week"`.
    pub fn parse(value: &str) -> Option<Period> {
        match value {
            "month" => Some(Period::Month),
            "quarter" => Some(Period::Quarter),
            "week" => Some(Period::Week),
            _ => None,
        }
    }

    /// `[start, end)` in epoch milliseconds of the period holding instant `ms`, in zone `tz`.
    pub fn bounds(self, tz: Tz, ms: i64) -> (i64, i64) {
        let date = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().with_timezone(&tz).date_naive();
        let (start, end) = match self {
            Period::Month => {
                let start = date.with_day(1).unwrap_or(date);
                (start, start.checked_add_months(chrono::Months::new(1)).unwrap_or(start))
            }
            Period::Quarter => {
                let month0 = (date.month0() / 3) * 3;
                let start = NaiveDate::from_ymd_opt(date.year(), month0 + 1, 1).unwrap_or(date);
                (start, start.checked_add_months(chrono::Months::new(3)).unwrap_or(start))
            }
            Period::Week => {
                let start = date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday()));
                (start, start + chrono::Days::new(7))
            }
        };
        (local_midnight(tz, start), local_midnight(tz, end))
    }
}

/// The first instant of local date `date` (a midnight skipped by a DST change moves forward).
fn local_midnight(tz: Tz, date: NaiveDate) -> i64 {
    let mut local = date.and_time(NaiveTime::MIN);
    for _ in 0..16 {
        match tz.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) => return t.timestamp_millis(),
            chrono::LocalResult::Ambiguous(earliest, _) => return earliest.timestamp_millis(),
            chrono::LocalResult::None => local += chrono::Duration::minutes(15),
        }
    }
    tz.from_utc_datetime(&local).timestamp_millis()
}

/// What counts as a plan's fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FactSource {
    /// Deals won in the period, at their amount and margin (the default).
    #[default]
    Won,
    /// Payments received in the period.
    PaymentReceived,
}

impl FactSource {
    /// `"won"` or `"payment_received"`.
    pub fn parse(value: &str) -> Option<FactSource> {
        match value {
            "won" => Some(FactSource::Won),
            "payment_received" => Some(FactSource::PaymentReceived),
            _ => None,
        }
    }
}

/// A period target: revenue and margin, each optional.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Target {
    /// Revenue to reach in the period.
    pub revenue: Option<f64>,
    /// Margin to reach in the period.
    pub margin: Option<f64>,
}

impl Target {
    fn get(&self, measure: usize) -> Option<f64> {
        if measure == REVENUE {
            self.revenue
        } else {
            self.margin
        }
    }
}

/// Plans per manager and per team, from the reloadable plans file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plans {
    /// The fact source of teams without their own.
    pub fact: FactSource,
    /// Per `manager_id`.
    pub managers: HashMap<String, Target>,
    /// Per team: the team's target and, optionally, its own fact source (for its managers too).
    pub teams: HashMap<String, (Target, Option<FactSource>)>,
}

impl Plans {
    /// The fact source of a manager of `team`.
    pub fn fact_for(&self, team: Option<&str>) -> FactSource {
        team.and_then(|team| self.teams.get(team)).and_then(|(_, fact)| *fact).unwrap_or(self.fact)
    }
}

/// Per configured stage: its progress and how long a deal may sit in it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRule {
    /// A configured pipeline.
    pub pipeline: String,
    /// One of its configured stages.
    pub stage: String,
    /// How far along the pipeline the stage is, 0..=100; wins over the events' value.
    pub progress_pct: Option<f64>,
    /// An open deal in the stage for longer than this (ms) is stuck.
    pub stuck_after_ms: Option<i64>,
}

/// The commercial settings of the card stream.
#[derive(Debug, Clone, PartialEq)]
pub struct CommerceConfig {
    /// The one currency amounts are in (ISO 4217); the engine rejects events naming another.
    pub currency: Option<String>,
    /// Open deals at or above this progress are hot.
    pub hot_deal_progress_pct: f64,
    /// The plan period.
    pub period: Period,
    /// The zone plan periods are cut in.
    pub time_zone: Tz,
    /// Progress and stuck limits per stage.
    pub stages: Vec<StageRule>,
    /// Invoices tracked per manager; at the cap a paid one (else the oldest) is evicted.
    pub max_invoices_per_manager: usize,
}

impl Default for CommerceConfig {
    fn default() -> Self {
        CommerceConfig {
            currency: None,
            hot_deal_progress_pct: 80.0,
            period: Period::Month,
            time_zone: Tz::UTC,
            stages: Vec::new(),
            max_invoices_per_manager: 1_000,
        }
    }
}

/// The measure label values, indexed.
pub(crate) const MEASURES: [&str; 2] = ["revenue", "margin"];
pub(crate) const REVENUE: usize = 0;

/// Facts of one plan period.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeriodFacts {
    /// The period's first instant.
    pub start_ms: i64,
    /// Amount and margin of deals won in the period.
    pub won: [f64; 2],
    /// Amount and margin of payments received in the period.
    pub paid: [f64; 2],
}

#[derive(Debug, Clone)]
struct Invoice {
    key: u64,
    issued: bool,
    paid: bool,
    /// Issued amount and margin (NaN: not known).
    amount: f64,
    margin: f64,
    last_ms: i64,
}

/// One manager's money state (inside the card state's lock).
#[derive(Debug, Default)]
pub(crate) struct Money {
    invoices: Vec<Invoice>,
    index: IdMap,
    pub(crate) issued: u64,
    pub(crate) issued_amount: f64,
    pub(crate) payments: u64,
    pub(crate) paid_amount: f64,
    pub(crate) evicted: u64,
    pub(crate) periods: Vec<PeriodFacts>,
    /// Where facts of periods older than every kept one go.
    discarded: PeriodFacts,
    /// Per outcome (won, lost): bucket counts (not cumulative), sum of seconds.
    pub(crate) durations: [([u64; DURATION_SLOTS], f64); 2],
}

impl Money {
    /// An `invoice_issued` or `payment_received`. `deal` is the card's amount and margin (NaN:
    /// unknown), the fallback when the event carries none.
    pub(crate) fn apply(
        &mut self,
        config: &CommerceConfig,
        change: &CardChange,
        card_key: u64,
        deal: (f64, f64),
        event_ms: i64,
    ) {
        let invoice_key = change.invoice_id.as_deref().map_or(card_key, crate::key);
        let i = self.position(config, invoice_key);
        let invoice = &mut self.invoices[i];
        invoice.last_ms = invoice.last_ms.max(event_ms);
        let known = |value: f64| (!value.is_nan()).then_some(value);
        match change.change {
            CardChangeKind::InvoiceIssued if !invoice.issued => {
                invoice.issued = true;
                invoice.amount = change.amount.or(known(deal.0)).unwrap_or(0.0);
                invoice.margin = change.margin.or(known(deal.1)).unwrap_or(0.0);
                self.issued += 1;
                self.issued_amount += invoice.amount;
            }
            CardChangeKind::PaymentReceived if !invoice.paid => {
                invoice.paid = true;
                let amount = change.amount.or(known(invoice.amount)).or(known(deal.0)).unwrap_or(0.0);
                let margin = change.margin.or(known(invoice.margin)).or(known(deal.1)).unwrap_or(0.0);
                self.payments += 1;
                self.paid_amount += amount;
                let period = self.period(config, event_ms);
                period.paid[0] += amount;
                period.paid[1] += margin;
            }
            _ => {}
        }
    }

    /// A deal counted as won: its amount and margin go to the period of `event_ms`.
    pub(crate) fn won(&mut self, config: &CommerceConfig, amount: f64, margin: f64, event_ms: i64) {
        let period = self.period(config, event_ms);
        period.won[0] += amount;
        period.won[1] += margin;
    }

    /// A closed deal's duration from creation, `outcome` 0 for won, 1 for lost.
    pub(crate) fn observe_duration(&mut self, outcome: usize, seconds: f64) {
        let seconds = seconds.max(0.0);
        let bucket = DURATION_BUCKETS_SECONDS.iter().position(|&le| seconds <= le).unwrap_or(DURATION_SLOTS - 1);
        let (counts, sum) = &mut self.durations[outcome];
        counts[bucket] += 1;
        *sum += seconds;
    }

    /// `(open invoices, their amount)`: issued and not yet paid.
    pub(crate) fn receivables(&self) -> (u64, f64) {
        self.invoices
            .iter()
            .filter(|invoice| invoice.issued && !invoice.paid)
            .fold((0, 0.0), |(n, sum), invoice| (n + 1, sum + invoice.amount))
    }

    pub(crate) fn len(&self) -> usize {
        self.invoices.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.invoices.capacity() * std::mem::size_of::<Invoice>()
            + self.index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
            + self.periods.capacity() * std::mem::size_of::<PeriodFacts>()
    }

    fn period(&mut self, config: &CommerceConfig, event_ms: i64) -> &mut PeriodFacts {
        let (start_ms, _) = config.period.bounds(config.time_zone, event_ms);
        match self.periods.binary_search_by_key(&start_ms, |p| p.start_ms) {
            Ok(at) => &mut self.periods[at],
            // Older than every kept period: nothing exports it any more.
            Err(0) if self.periods.len() >= PERIODS_KEPT => {
                self.discarded = PeriodFacts { start_ms, ..PeriodFacts::default() };
                &mut self.discarded
            }
            Err(at) => {
                self.periods.insert(at, PeriodFacts { start_ms, ..PeriodFacts::default() });
                if self.periods.len() > PERIODS_KEPT {
                    self.periods.remove(0);
                    &mut self.periods[at - 1]
                } else {
                    &mut self.periods[at]
                }
            }
        }
    }

    fn position(&mut self, config: &CommerceConfig, key: u64) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i as usize;
        }
        if self.invoices.len() >= config.max_invoices_per_manager.max(1) {
            // A paid (or never issued) invoice first, the least recently changed first.
            let victim = self
                .invoices
                .iter()
                .enumerate()
                .min_by_key(|(_, invoice)| (invoice.issued && !invoice.paid, invoice.last_ms))
                .map(|(i, _)| i);
            if let Some(i) = victim {
                let removed = self.invoices.swap_remove(i);
                self.index.remove(&removed.key);
                if i != self.invoices.len() {
                    self.index.insert(self.invoices[i].key, i as u32);
                }
                self.evicted += 1;
            }
        }
        let i = self.invoices.len();
        self.invoices.push(Invoice {
            key,
            issued: false,
            paid: false,
            amount: f64::NAN,
            margin: f64::NAN,
            last_ms: NONE,
        });
        self.index.insert(key, i as u32);
        i
    }
}

/// One manager's commercial values at a scrape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CommerceSnapshot {
    /// Distinct invoices issued, and their amount.
    pub invoices_issued: u64,
    /// Sum of issued invoices' amounts.
    pub invoices_issued_amount: f64,
    /// Invoices paid, and the amount received.
    pub payments_received: u64,
    /// Sum of payments' amounts.
    pub payments_received_amount: f64,
    /// Issued, not yet paid invoices.
    pub receivables: u64,
    /// Their amount.
    pub receivables_amount: f64,
    /// Sum over open deals of amount × progress / 100.
    pub weighted_pipeline: f64,
    /// Open deals at or above the hot progress.
    pub hot_deals: u64,
    /// Their amount.
    pub hot_deals_amount: f64,
    /// Invoices evicted at the cap.
    pub evicted_invoices: u64,
    /// Whether the manager ever had a deal amount or an invoice (the money gauges are exported
    /// from then on).
    pub any_money: bool,
    /// Per slot: open deals' amount.
    pub(crate) pipeline_amount: Vec<f64>,
    /// Per slot: open deals stuck past the stage's limit.
    pub(crate) stuck: Vec<u64>,
    /// Per slot: the longest time (seconds) an open deal has been in it; NaN for none.
    pub(crate) oldest_in_stage: Vec<f64>,
    /// Facts of the kept periods, sorted by start.
    pub periods: Vec<PeriodFacts>,
    /// Deal durations, per outcome (won, lost): bucket counts and sum of seconds.
    pub(crate) durations: [([u64; DURATION_SLOTS], f64); 2],
}

impl CommerceSnapshot {
    pub(crate) fn merge(&mut self, other: &CommerceSnapshot) {
        for (a, b) in [
            (&mut self.invoices_issued, other.invoices_issued),
            (&mut self.payments_received, other.payments_received),
            (&mut self.receivables, other.receivables),
            (&mut self.hot_deals, other.hot_deals),
            (&mut self.evicted_invoices, other.evicted_invoices),
        ] {
            *a = a.saturating_add(b);
        }
        for (a, b) in [
            (&mut self.invoices_issued_amount, other.invoices_issued_amount),
            (&mut self.payments_received_amount, other.payments_received_amount),
            (&mut self.receivables_amount, other.receivables_amount),
            (&mut self.weighted_pipeline, other.weighted_pipeline),
            (&mut self.hot_deals_amount, other.hot_deals_amount),
        ] {
            *a += b;
        }
        self.any_money |= other.any_money;
        for (a, b) in self.pipeline_amount.iter_mut().zip(&other.pipeline_amount) {
            *a += b;
        }
        for (a, b) in self.stuck.iter_mut().zip(&other.stuck) {
            *a += b;
        }
        for (a, b) in self.oldest_in_stage.iter_mut().zip(&other.oldest_in_stage) {
            *a = if a.is_nan() { *b } else { a.max(*b) };
        }
        for theirs in &other.periods {
            match self.periods.binary_search_by_key(&theirs.start_ms, |p| p.start_ms) {
                Ok(at) => {
                    let mine = &mut self.periods[at];
                    for i in 0..2 {
                        mine.won[i] += theirs.won[i];
                        mine.paid[i] += theirs.paid[i];
                    }
                }
                Err(at) => self.periods.insert(at, *theirs),
            }
        }
        for (mine, theirs) in self.durations.iter_mut().zip(&other.durations) {
            for (a, b) in mine.0.iter_mut().zip(&theirs.0) {
                *a += b;
            }
            mine.1 += theirs.1;
        }
    }

    /// The facts (revenue, margin) of the period starting at `start_ms` from `source`.
    pub fn fact(&self, start_ms: i64, source: FactSource) -> [f64; 2] {
        self.periods.iter().find(|p| p.start_ms == start_ms).map_or([0.0; 2], |p| match source {
            FactSource::Won => p.won,
            FactSource::PaymentReceived => p.paid,
        })
    }

    /// Deal durations of `outcome` (0 won, 1 lost) as (cumulative bucket counts, count, sum).
    pub fn durations(&self, outcome: usize) -> (Vec<u64>, u64, f64) {
        let (counts, sum) = &self.durations[outcome];
        let mut running = 0;
        let cumulative: Vec<u64> = counts
            .iter()
            .map(|c| {
                running += c;
                running
            })
            .collect();
        (cumulative, running, *sum)
    }
}

/// Resolved stage rules, per funnel slot.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotRules {
    /// Progress per slot (NaN: not configured).
    pub(crate) progress: Vec<f64>,
    /// Stuck limit per slot (0: none).
    pub(crate) stuck_ms: Vec<i64>,
}

/// One manager's plan values at a scrape, in a form a JSON view can read.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PlanStatus {
    /// The period's first instant and its end (exclusive), epoch ms.
    pub period: (i64, i64),
    /// Share of the period elapsed, 0..=1.
    pub elapsed_ratio: f64,
    /// The manager's targets (revenue, margin), where planned.
    pub plan: [Option<f64>; 2],
    /// Facts so far in the period (revenue, margin), by the manager's fact source.
    pub fact: [f64; 2],
}

impl PlanStatus {
    /// `fact / plan` for measure 0 (revenue) or 1 (margin), where the plan is above 0.
    pub fn completion(&self, measure: usize) -> Option<f64> {
        self.plan[measure].filter(|&plan| plan > 0.0).map(|plan| self.fact[measure] / plan)
    }

    /// `plan × elapsed_ratio`: the linear "expected by now".
    pub fn expected(&self, measure: usize) -> Option<f64> {
        self.plan[measure].map(|plan| plan * self.elapsed_ratio)
    }

    /// The status of a manager of `team` with `snapshot` (if it has card state).
    pub fn of(
        plans: &Plans,
        manager: &str,
        team: Option<&str>,
        snapshot: Option<&CommerceSnapshot>,
        period: (i64, i64),
        now_ms: i64,
    ) -> PlanStatus {
        let target = plans.managers.get(manager).copied().unwrap_or_default();
        let fact = snapshot.map_or([0.0; 2], |s| s.fact(period.0, plans.fact_for(team)));
        PlanStatus { period, elapsed_ratio: elapsed(period, now_ms), plan: [target.get(0), target.get(1)], fact }
    }
}

/// Share of `period` elapsed at `now_ms`, clamped to 0..=1.
pub(crate) fn elapsed((start, end): (i64, i64), now_ms: i64) -> f64 {
    if end <= start {
        return 0.0;
    }
    ((now_ms - start) as f64 / (end - start) as f64).clamp(0.0, 1.0)
}

impl Target {
    /// The target of measure 0 (revenue) or 1 (margin).
    pub fn measure(&self, measure: usize) -> Option<f64> {
        self.get(measure)
    }
}
