//! Activity baselines and anomaly scores: is this manager unusually quiet, busy or slow right now?
//!
//! A manager's [`Baseline`] learns, per time-of-day slot (24 of them with the default 60-minute
//! slot) and per day class (weekday or weekend, in the configured time zone), what the five
//! [`Signal`]s usually look like: an exponentially weighted mean and variance of the completed
//! slots, with each new observation clipped to three standard deviations so that one odd hour does
//! not blow the baseline up. [`Baseline::score`] compares the current window with that baseline
//! (a *self* score, a clamped z-score); [`team_scores`] compares managers of one team in the same
//! window with each other (a robust z-score around the median). Response time is judged against
//! load: the baseline also learns inbound messages per slot, and a p90 that rises in proportion to
//! the load is not an anomaly ([`load_normalised_p90`]).
//!
//! The crate is pure math on values the engine hands in: no clock, no threads, no logging. The only
//! I/O is [`write_snapshot`] / [`read_snapshot`], which keep baselines across restarts in a small
//! local file written atomically. Method and reasons are in `docs/anomalies.md`.
#![deny(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Datelike, Offset, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

const SIGNALS: usize = 5;
/// Position of inbound messages (the load) in a cell's statistics, after the signals.
const INBOUND: usize = SIGNALS;
const STATS: usize = SIGNALS + 1;
/// Day classes: weekday and weekend.
const CLASSES: usize = 2;
const DAY_MS: i64 = 86_400_000;
const MINUTES_PER_DAY: u32 = 1440;

/// Once a slot is warm, an observation further than this many standard deviations from the mean is
/// folded in as if it were exactly this far (a Huber-type clip).
const CLIP_SDS: f64 = 3.0;
/// Standard-deviation floor of inbound messages per slot, used for the clip.
const INBOUND_MIN_SD: f64 = 1.0;
/// Added to both sides of the load ratio, so that a quiet slot's 1 message against a usual 0.2 is
/// not a five-fold load.
const LOAD_PSEUDO_COUNT: f64 = 1.0;
/// Values are clamped into `[0, VALUE_LIMIT]` before any arithmetic: every signal is a count or a
/// duration, and the bound keeps squares far inside `f32`.
const VALUE_LIMIT: f64 = 1e12;
/// Spread used when a configured floor is zero or not a number.
const MIN_SPREAD: f64 = 1e-6;
/// Scales the median absolute deviation to a standard deviation under a normal distribution.
const MAD_TO_SD: f64 = 1.4826;
/// At least this share of the scored window must fall in warmed-up slots.
const MIN_WARM_WEIGHT: f64 = 0.5;

/// Format version written by [`write_snapshot`] and required by [`read_snapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// An activity signal with a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Finished calls in the slot.
    CallsMade,
    /// Successful contacts (answered calls above the talk threshold) in the slot.
    SuccessfulContacts,
    /// Outbound chat messages in the slot.
    OutboundMessages,
    /// Distinct CRM cards touched in the slot.
    CardsTouched,
    /// 90th percentile of reply times in the slot, seconds.
    ResponseTimeP90,
}

impl Signal {
    /// Every signal, in [`Signal::index`] order.
    pub const ALL: [Signal; SIGNALS] = [
        Signal::CallsMade,
        Signal::SuccessfulContacts,
        Signal::OutboundMessages,
        Signal::CardsTouched,
        Signal::ResponseTimeP90,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::CallsMade => "calls_made",
            Signal::SuccessfulContacts => "successful_contacts",
            Signal::OutboundMessages => "outbound_messages",
            Signal::CardsTouched => "cards_touched",
            Signal::ResponseTimeP90 => "response_time_p90",
        }
    }

    /// Position in [`Signal::ALL`], [`Observation::values`] and score arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How baselines are kept and scores computed. [`AnomalyConfig::validate`] rejects nonsense; the
/// math itself falls back to the defaults for invalid fields, so an unvalidated configuration can
/// never panic or produce a non-finite score.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyConfig {
    /// Length of a slot in minutes, a divisor of 1440. Values are per slot (calls in the last
    /// hour); baselines are kept per time-of-day slot and day class.
    pub slot_minutes: u32,
    /// Time zone of time-of-day and weekday.
    pub time_zone: Tz,
    /// Local weekdays that form the weekend class (Saturday and Sunday by default).
    pub weekend: Vec<Weekday>,
    /// Weight of a new observation in the exponentially weighted mean and variance, in `(0, 1]`.
    pub alpha: f64,
    /// No self score from a slot with fewer observations than this (at least 1).
    pub warmup_observations: u32,
    /// Per-signal floor of the standard deviation, in the signal's unit, by [`Signal::index`].
    pub min_sd: [f64; SIGNALS],
    /// Scores are clamped to `[-score_cap, score_cap]`.
    pub score_cap: f64,
}

impl Default for AnomalyConfig {
    /// Hourly slots in UTC, Saturday and Sunday as the weekend, `alpha` 0.2, 5 warm-up
    /// observations, floors of 1 call, 1 contact, 2 messages, 1 card and 30 s, scores within ±10.
    fn default() -> Self {
        AnomalyConfig {
            slot_minutes: 60,
            time_zone: Tz::UTC,
            weekend: vec![Weekday::Sat, Weekday::Sun],
            alpha: 0.2,
            warmup_observations: 5,
            min_sd: [1.0, 1.0, 2.0, 1.0, 30.0],
            score_cap: 10.0,
        }
    }
}

/// A configuration value [`AnomalyConfig::validate`] rejects.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The slot length does not divide the day.
    #[error("slot_minutes must divide 1440 (a day) evenly, got {0}")]
    SlotMinutes(u32),
    /// The EWMA weight is outside `(0, 1]`.
    #[error("alpha must be in (0, 1], got {0}")]
    Alpha(f64),
    /// The warm-up is zero or beyond what the per-slot counters hold.
    #[error("warmup_observations must be between 1 and 65535, got {0}")]
    Warmup(u32),
    /// A standard-deviation floor is negative or not finite.
    #[error("min_sd of {signal} must be finite and positive, got {value}")]
    MinSd {
        /// The signal's label value.
        signal: &'static str,
        /// The rejected floor.
        value: f64,
    },
    /// The score cap is not a positive finite number.
    #[error("score_cap must be finite and positive, got {0}")]
    ScoreCap(f64),
}

/// Where an instant falls: its baseline cell and its local wall-clock milliseconds.
#[derive(Clone, Copy, Debug)]
struct Place {
    cell: usize,
    local_ms: i64,
    offset_ms: i64,
}

impl AnomalyConfig {
    /// Checks every field; the first problem found is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.slot_minutes == 0 || !MINUTES_PER_DAY.is_multiple_of(self.slot_minutes) {
            return Err(ConfigError::SlotMinutes(self.slot_minutes));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(ConfigError::Alpha(self.alpha));
        }
        if self.warmup_observations == 0 || self.warmup_observations > u32::from(u16::MAX) {
            return Err(ConfigError::Warmup(self.warmup_observations));
        }
        for signal in Signal::ALL {
            let value = self.min_sd[signal.index()];
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::MinSd { signal: signal.as_str(), value });
            }
        }
        if !(self.score_cap.is_finite() && self.score_cap > 0.0) {
            return Err(ConfigError::ScoreCap(self.score_cap));
        }
        Ok(())
    }

    /// Time-of-day slots per day (24 for 60-minute slots); a baseline keeps twice as many cells.
    pub fn slots_per_day(&self) -> usize {
        (MINUTES_PER_DAY / self.minutes()) as usize
    }

    /// Start of the local slot that contains `t_ms` (slots start on local multiples of the slot
    /// length from local midnight). The engine should observe slots on these boundaries. `None`
    /// for instants outside the calendar's range.
    pub fn slot_start_ms(&self, t_ms: i64) -> Option<i64> {
        let place = self.place(t_ms)?;
        Some(place.local_ms - place.local_ms.rem_euclid(self.slot_ms()) - place.offset_ms)
    }

    fn minutes(&self) -> u32 {
        if self.slot_minutes == 0 || !MINUTES_PER_DAY.is_multiple_of(self.slot_minutes) {
            60
        } else {
            self.slot_minutes
        }
    }

    fn slot_ms(&self) -> i64 {
        i64::from(self.minutes()) * 60_000
    }

    fn alpha(&self) -> f64 {
        if self.alpha > 0.0 && self.alpha <= 1.0 {
            self.alpha
        } else {
            0.2
        }
    }

    fn warmup(&self) -> u16 {
        u16::try_from(self.warmup_observations.max(1)).unwrap_or(u16::MAX)
    }

    fn cap(&self) -> f64 {
        if self.score_cap.is_finite() && self.score_cap > 0.0 {
            self.score_cap
        } else {
            10.0
        }
    }

    fn floor(&self, signal: Signal) -> f64 {
        spread_floor(self.min_sd[signal.index()])
    }

    fn place(&self, t_ms: i64) -> Option<Place> {
        let local = DateTime::from_timestamp_millis(t_ms)?.with_timezone(&self.time_zone);
        let offset_ms = i64::from(local.offset().fix().local_minus_utc()) * 1000;
        let local_ms = t_ms.checked_add(offset_ms)?;
        let minute = local_ms.rem_euclid(DAY_MS) / 60_000;
        let slot = usize::try_from(minute / i64::from(self.minutes())).ok()?;
        let class = usize::from(self.weekend.contains(&local.weekday()));
        Some(Place { cell: class * self.slots_per_day() + slot, local_ms, offset_ms })
    }

    /// The cells the slot-length window ending at `now_ms` overlaps, with the share of the window
    /// in each (the second share is 0 when the window is one whole slot).
    fn window(&self, now_ms: i64) -> Option<[(usize, f64); 2]> {
        let slot_ms = self.slot_ms();
        let start = now_ms.checked_sub(slot_ms)?;
        let first = self.place(start)?;
        let boundary = start - first.local_ms.rem_euclid(slot_ms) + slot_ms;
        let share = (boundary - start) as f64 / slot_ms as f64;
        if boundary >= now_ms {
            return Some([(first.cell, 1.0), (first.cell, 0.0)]);
        }
        let second = self.place(boundary)?;
        Some([(first.cell, share), (second.cell, 1.0 - share)])
    }
}

fn spread_floor(min_sd: f64) -> f64 {
    if min_sd.is_finite() && min_sd > MIN_SPREAD {
        min_sd
    } else {
        MIN_SPREAD
    }
}

/// A finite value clamped into the range the math works in; `None` for a missing or non-finite one.
fn clean(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite()).map(|v| v.clamp(0.0, VALUE_LIMIT))
}

/// One slot's (or the current window's) values of one manager.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observation {
    /// By [`Signal::index`]. `None`: the manager has no such stream (not zero activity).
    pub values: [Option<f64>; SIGNALS],
    /// Inbound client messages in the same span: the load that explains slower replies.
    pub inbound_messages: Option<f64>,
}

/// One score of one signal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// `(value - baseline) / spread`, clamped to the configured cap: above 0 when the value is above
    /// the baseline.
    pub score: f64,
    /// The value judged (for response time in a self score: the load-normalised p90).
    pub value: f64,
    /// The expected value: the baseline mean (self) or the team median (team).
    pub baseline: f64,
    /// The standard deviation used, after the floor.
    pub spread: f64,
}

impl Score {
    /// `"above"` for a score of 0 or more, else `"below"`.
    pub fn direction(&self) -> &'static str {
        if self.score < 0.0 {
            "below"
        } else {
            "above"
        }
    }
}

fn make_score(value: f64, baseline: f64, spread: f64, cap: f64) -> Score {
    // `value` and `baseline` are within ±VALUE_LIMIT and `spread` at least MIN_SPREAD: the quotient
    // is finite.
    Score { score: ((value - baseline) / spread).clamp(-cap, cap), value, baseline, spread }
}

/// One time-of-day slot of one day class: per statistic (the signals, then inbound messages) the
/// number of observations, the exponentially weighted mean and the exponentially weighted mean
/// squared prediction error (the variance a new value has around the mean).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cell {
    n: [u16; STATS],
    mean: [f32; STATS],
    var: [f32; STATS],
}

impl Cell {
    fn mean_var(&self, stat: usize) -> (f64, f64) {
        (f64::from(self.mean[stat]), f64::from(self.var[stat]).max(0.0))
    }

    /// Folds `x` into statistic `stat`. `var` is kept as the mean squared one-step prediction error
    /// (`x` minus the mean before `x`): exactly the spread a new value's distance from the mean has.
    /// The first value sets the mean. After that the mean moves with weight `max(alpha, 1/n)` and the
    /// variance with `max(alpha/2, 1/(n-1))`, so both start as plain running averages and the
    /// variance, which needs more values than a mean to be as precise, looks back twice as far.
    /// From warm-up on, the error is clipped to `CLIP_SDS` standard deviations (floored at
    /// `min_sd`).
    fn fold(&mut self, stat: usize, x: f64, alpha: f64, warmup: u16, min_sd: f64) {
        let seen = self.n[stat];
        self.n[stat] = seen.saturating_add(1);
        if seen == 0 {
            self.mean[stat] = x as f32;
            self.var[stat] = 0.0;
            return;
        }
        let (mean, var) = self.mean_var(stat);
        let mut error = x - mean;
        if seen >= warmup {
            let limit = CLIP_SDS * var.sqrt().max(min_sd);
            error = error.clamp(-limit, limit);
        }
        let mean_weight = alpha.max(1.0 / (f64::from(seen) + 1.0));
        let var_weight = (alpha / 2.0).max(1.0 / f64::from(seen));
        self.mean[stat] = (mean + mean_weight * error) as f32;
        self.var[stat] = ((1.0 - var_weight) * var + var_weight * error * error) as f32;
    }

    fn is_consistent(&self) -> bool {
        self.mean.iter().all(|m| m.is_finite()) && self.var.iter().all(|v| v.is_finite() && *v >= 0.0)
    }
}

/// A manager's baselines: per day class and time-of-day slot, the mean and variance of every signal
/// and of inbound messages. Empty until the first observation; then `2 × slots_per_day` cells of 60
/// bytes (2,880 bytes with hourly slots).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Slots per day the cells were laid out for; a different configuration starts afresh.
    slots_per_day: u16,
    /// Start of the newest observed slot.
    last_slot_ms: Option<i64>,
    /// Weekday cells by slot, then weekend cells by slot.
    cells: Vec<Cell>,
}

impl Baseline {
    /// Folds a completed slot `[slot_start_ms, slot_start_ms + slot)` into the baseline of its
    /// time-of-day slot and day class. Idempotent: a slot start at or before the newest observed
    /// one is ignored (so a repeat and an out-of-order older slot change nothing). Response time is
    /// folded load-normalised against the slot's inbound baseline before this slot's own inbound
    /// count is folded. Values are clamped to `[0, 1e12]`; non-finite values count as missing.
    /// A baseline laid out for another slot length is discarded and started afresh.
    pub fn observe(&mut self, config: &AnomalyConfig, slot_start_ms: i64, observation: &Observation) {
        if self.last_slot_ms.is_some_and(|last| slot_start_ms <= last) {
            return;
        }
        let Some(place) = config.place(slot_start_ms) else { return };
        let slots = config.slots_per_day();
        if usize::from(self.slots_per_day) != slots || self.cells.len() != CLASSES * slots {
            self.slots_per_day = u16::try_from(slots).unwrap_or(u16::MAX);
            self.cells = vec![Cell::default(); CLASSES * slots];
        }
        let Some(cell) = self.cells.get_mut(place.cell) else { return };
        self.last_slot_ms = Some(slot_start_ms);
        let (alpha, warmup) = (config.alpha(), config.warmup());
        let inbound = clean(observation.inbound_messages);
        let load_ratio = match inbound {
            Some(now) if cell.n[INBOUND] >= warmup => ratio(now, cell.mean_var(INBOUND).0),
            _ => 1.0,
        };
        for signal in Signal::ALL {
            let Some(mut x) = clean(observation.values[signal.index()]) else { continue };
            if signal == Signal::ResponseTimeP90 {
                x = load_normalised_p90(x, load_ratio);
            }
            cell.fold(signal.index(), x, alpha, warmup, config.floor(signal));
        }
        if let Some(x) = inbound {
            cell.fold(INBOUND, x, alpha, warmup, INBOUND_MIN_SD);
        }
    }

    /// Self scores of `current` (values over the last slot-length window ending at `now_ms`). The
    /// window usually straddles two slots; its expected mean and variance are those of the two
    /// cells weighted by the share of the window in each. `None` per signal when the value is
    /// `None`, or when less than half the window lies in slots with `warmup_observations`
    /// observations of that signal. Response time is scored load-normalised
    /// ([`Baseline::load_ratio`]; without a ratio, the raw p90).
    pub fn score(&self, config: &AnomalyConfig, now_ms: i64, current: &Observation) -> [Option<Score>; SIGNALS] {
        let mut scores = [None; SIGNALS];
        let Some(window) = self.window(config, now_ms) else { return scores };
        let load_ratio = self.ratio_in(config, &window, current);
        for signal in Signal::ALL {
            let Some(mut x) = clean(current.values[signal.index()]) else { continue };
            if signal == Signal::ResponseTimeP90 {
                x = load_normalised_p90(x, load_ratio.unwrap_or(1.0));
            }
            let Some((mean, var)) = self.blend(config, &window, signal.index()) else { continue };
            let spread = var.sqrt().max(config.floor(signal));
            scores[signal.index()] = Some(make_score(x, mean, spread, config.cap()));
        }
        scores
    }

    /// Current inbound messages against the baseline of the window ending at `now_ms`, smoothed
    /// with one pseudo-message: `(inbound + 1) / (baseline + 1)`. `None` without a current inbound
    /// count or a warmed-up inbound baseline.
    pub fn load_ratio(&self, config: &AnomalyConfig, now_ms: i64, current: &Observation) -> Option<f64> {
        self.ratio_in(config, &self.window(config, now_ms)?, current)
    }

    /// Start of the newest observed slot.
    pub fn last_slot_ms(&self) -> Option<i64> {
        self.last_slot_ms
    }

    /// Heap bytes held (the cells), for memory accounting; add `size_of::<Baseline>()` for the
    /// inline part.
    pub fn heap_bytes(&self) -> usize {
        self.cells.capacity() * std::mem::size_of::<Cell>()
    }

    fn window(&self, config: &AnomalyConfig, now_ms: i64) -> Option<[(usize, f64); 2]> {
        if usize::from(self.slots_per_day) != config.slots_per_day() {
            return None;
        }
        config.window(now_ms)
    }

    fn ratio_in(&self, config: &AnomalyConfig, window: &[(usize, f64); 2], current: &Observation) -> Option<f64> {
        let now = clean(current.inbound_messages)?;
        let (usual, _) = self.blend(config, window, INBOUND)?;
        Some(ratio(now, usual))
    }

    /// Weighted mean and variance of statistic `stat` over the window's warm cells.
    fn blend(&self, config: &AnomalyConfig, window: &[(usize, f64); 2], stat: usize) -> Option<(f64, f64)> {
        let warmup = config.warmup();
        let (mut weight, mut mean, mut var) = (0.0, 0.0, 0.0);
        for &(index, share) in window {
            match self.cells.get(index) {
                Some(cell) if share > 0.0 && cell.n[stat] >= warmup => {
                    let (m, v) = cell.mean_var(stat);
                    weight += share;
                    mean += share * m;
                    var += share * v;
                }
                _ => {}
            }
        }
        (weight >= MIN_WARM_WEIGHT).then(|| (mean / weight, var / weight))
    }

    fn is_consistent(&self) -> bool {
        let slots = usize::from(self.slots_per_day);
        let layout = self.cells.is_empty()
            || (slots > 0 && (MINUTES_PER_DAY as usize).is_multiple_of(slots) && self.cells.len() == CLASSES * slots);
        layout && self.cells.iter().all(Cell::is_consistent)
    }
}

fn ratio(inbound_now: f64, inbound_usual: f64) -> f64 {
    (inbound_now.max(0.0) + LOAD_PSEUDO_COUNT) / (inbound_usual.max(0.0) + LOAD_PSEUDO_COUNT)
}

/// A reply-time p90 with the share explained by load taken out: `p90 / load_ratio` when the load is
/// above usual, the p90 unchanged at or below usual load (a quiet hour does not excuse nor demand
/// faster replies). A ratio that is not a finite number counts as 1.
pub fn load_normalised_p90(p90_seconds: f64, load_ratio: f64) -> f64 {
    if load_ratio.is_finite() && load_ratio > 1.0 {
        p90_seconds / load_ratio
    } else {
        p90_seconds
    }
}

/// Team scores of one signal: `values` are the team's managers' values in the same window; each
/// gets a robust z-score against the team, `(value - median) / max(1.4826 × MAD, min_sd)`, clamped
/// to the cap. Non-finite values get `None` and are left out of the median; with fewer than 3
/// finite values every score is `None`.
pub fn team_scores(config: &AnomalyConfig, signal: Signal, values: &[f64]) -> Vec<Option<Score>> {
    let clean_values: Vec<Option<f64>> = values.iter().map(|&v| clean(Some(v))).collect();
    let mut sorted: Vec<f64> = clean_values.iter().flatten().copied().collect();
    if sorted.len() < 3 {
        return vec![None; values.len()];
    }
    sorted.sort_by(f64::total_cmp);
    let center = median(&sorted);
    let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - center).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    let spread = (MAD_TO_SD * median(&deviations)).max(config.floor(signal));
    clean_values.into_iter().map(|v| v.map(|v| make_score(v, center, spread, config.cap()))).collect()
}

/// Median of a sorted, non-empty slice.
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Every manager's baseline at one instant, as kept on disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`] when written by this crate.
    pub version: u32,
    /// Wall-clock time of the snapshot, Unix milliseconds.
    pub saved_at_ms: i64,
    /// Manager id and baseline.
    pub managers: Vec<(String, Baseline)>,
}

impl Snapshot {
    /// The format version this build writes and reads ([`SNAPSHOT_VERSION`]).
    pub const VERSION: u32 = SNAPSHOT_VERSION;
}

/// Why a snapshot could not be written or read. A read error means: log it and start fresh.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file system refused.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The snapshot's path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not a snapshot (truncated, not JSON, wrong shape), or the snapshot could not be
    /// encoded.
    #[error("snapshot {path} is not valid: {source}")]
    Corrupt {
        /// The snapshot's path.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The file was written by another format version.
    #[error("snapshot {path} has format version {found}, this build reads {SNAPSHOT_VERSION}")]
    Version {
        /// The snapshot's path.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
    },
    /// A baseline in the file has an impossible layout or a non-finite statistic.
    #[error("snapshot {path}: the baseline of manager {manager:?} is inconsistent")]
    Inconsistent {
        /// The snapshot's path.
        path: PathBuf,
        /// The manager whose baseline is broken.
        manager: String,
    },
}

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `snapshot` to `path` atomically (see [`write_atomically`]).
pub fn write_snapshot(path: &Path, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    let bytes =
        serde_json::to_vec(snapshot).map_err(|source| SnapshotError::Corrupt { path: path.to_path_buf(), source })?;
    write_atomically(path, &bytes).map_err(|source| SnapshotError::Io { path: path.to_path_buf(), source })
}

/// Writes `bytes` to `path` atomically: to a new temporary file in the same directory, fsync,
/// rename over `path`, then fsync the directory (best effort). A reader sees the old file or the
/// new one, never a mix; a failed write removes its temporary file. (Also the daemon's writer of
/// other snapshot files, such as the source mappings' remembered values.)
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"));
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let unique = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{}.{}.{unique}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    // Makes the rename itself durable. Some file systems refuse to sync a directory; the file is
    // complete either way, at worst a crash now brings back the previous one.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Reads the snapshot at `path`: `Ok(None)` when there is no file, an error when it is unreadable,
/// not a snapshot, of another format version, or holds an inconsistent baseline.
pub fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path: path.to_path_buf(), source }),
    };
    let corrupt = |source| SnapshotError::Corrupt { path: path.to_path_buf(), source };
    #[derive(Deserialize)]
    struct Header {
        version: u32,
    }
    let header: Header = serde_json::from_slice(&bytes).map_err(corrupt)?;
    if header.version != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version { path: path.to_path_buf(), found: header.version });
    }
    let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(corrupt)?;
    if let Some((manager, _)) = snapshot.managers.iter().find(|(_, baseline)| !baseline.is_consistent()) {
        return Err(SnapshotError::Inconsistent { path: path.to_path_buf(), manager: manager.clone() });
    }
    Ok(Some(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-11-23T00:00:00Z, a Monday.
    const MONDAY: i64 = 1_795_392_000_000;
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    const CALLS: usize = 0;
    const P90: usize = 4;

    fn at(day: i64, hour: i64) -> i64 {
        MONDAY + day * DAY + hour * HOUR
    }

    fn is_weekend(day: i64) -> bool {
        day.rem_euclid(7) >= 5
    }

    /// Deterministic noise (xorshift64*), so every run sees the same history.
    struct Noise(u64);

    impl Noise {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }

        /// A whole number uniformly within `center ± half_width`.
        fn count(&mut self, center: f64, half_width: f64) -> f64 {
            (center + (2.0 * self.unit() - 1.0) * half_width).round()
        }
    }

    fn calls(value: f64) -> Observation {
        let mut observation = Observation::default();
        observation.values[CALLS] = Some(value);
        observation
    }

    fn replies(inbound: Option<f64>, p90: f64) -> Observation {
        let mut observation = Observation { inbound_messages: inbound, ..Observation::default() };
        observation.values[P90] = Some(p90);
        observation
    }

    /// Observes `days` days of hourly slots from `MONDAY`; `slot(day, hour)` gives each observation.
    fn history(config: &AnomalyConfig, days: i64, mut slot: impl FnMut(i64, i64) -> Observation) -> Baseline {
        let mut baseline = Baseline::default();
        for day in 0..days {
            for hour in 0..24 {
                baseline.observe(config, at(day, hour), &slot(day, hour));
            }
        }
        baseline
    }

    /// About 20 calls an hour from 9 to 18 every day, nothing at night.
    fn steady(noise: &mut Noise, hour: i64, rate: f64) -> Observation {
        calls(if (9..18).contains(&hour) { noise.count(rate, 3.0) } else { 0.0 })
    }

    fn self_score(baseline: &Baseline, config: &AnomalyConfig, now_ms: i64, current: &Observation, i: usize) -> f64 {
        match baseline.score(config, now_ms, current)[i] {
            Some(score) => score.score,
            None => panic!("no score at {now_ms}"),
        }
    }

    #[test]
    fn signal_names_and_indices() {
        let names = ["calls_made", "successful_contacts", "outbound_messages", "cards_touched", "response_time_p90"];
        for (i, signal) in Signal::ALL.into_iter().enumerate() {
            assert_eq!((signal.index(), signal.as_str()), (i, names[i]));
        }
    }

    #[test]
    fn validate_rejects_nonsense() {
        let default = AnomalyConfig::default;
        let mut bad_floor = default();
        bad_floor.min_sd[P90] = f64::NAN;
        for (config, expected) in [
            (default(), None),
            (AnomalyConfig { slot_minutes: 30, ..default() }, None),
            (AnomalyConfig { slot_minutes: 0, ..default() }, Some(ConfigError::SlotMinutes(0))),
            (AnomalyConfig { slot_minutes: 7, ..default() }, Some(ConfigError::SlotMinutes(7))),
            (AnomalyConfig { alpha: 0.0, ..default() }, Some(ConfigError::Alpha(0.0))),
            (AnomalyConfig { alpha: 1.5, ..default() }, Some(ConfigError::Alpha(1.5))),
            (AnomalyConfig { warmup_observations: 0, ..default() }, Some(ConfigError::Warmup(0))),
            (AnomalyConfig { warmup_observations: 70_000, ..default() }, Some(ConfigError::Warmup(70_000))),
            (AnomalyConfig { score_cap: f64::INFINITY, ..default() }, Some(ConfigError::ScoreCap(f64::INFINITY))),
        ] {
            assert_eq!(config.validate().err(), expected, "{config:?}");
        }
        let error = bad_floor.validate().unwrap_err();
        assert!(matches!(error, ConfigError::MinSd { signal: "response_time_p90", .. }), "{error}");
    }

    #[test]
    fn slots_follow_local_time_and_day_class() {
        let zone = |name: &str| name.parse::<Tz>().unwrap();
        let friday_weekend = vec![Weekday::Fri, Weekday::Sat];
        for (tz, slot_minutes, weekend, t_ms, cell, slot_start) in [
            ("UTC", 60, None, at(0, 10) + 30 * MINUTE, 10, at(0, 10)),
            ("UTC", 60, None, at(5, 10) + 30 * MINUTE, 24 + 10, at(5, 10)),
            ("UTC", 60, Some(friday_weekend.clone()), at(4, 10), 24 + 10, at(4, 10)),
            ("UTC", 60, Some(friday_weekend), at(6, 10), 10, at(6, 10)),
            // 22:30Z on Monday is 01:30 on Tuesday in Moscow (+03:00).
            ("Europe/Moscow", 60, None, at(0, 22) + 30 * MINUTE, 1, at(0, 22)),
            // 22:30Z on Friday is Saturday in Moscow: weekend.
            ("Europe/Moscow", 60, None, at(4, 22) + 30 * MINUTE, 24 + 1, at(4, 22)),
            // 00:00Z on Monday is 05:45 in Kathmandu; its hour began at 23:15Z on Sunday.
            ("Asia/Kathmandu", 60, None, at(0, 0), 5, at(0, 0) - 45 * MINUTE),
            ("Asia/Kathmandu", 30, None, at(0, 0), 11, at(0, 0) - 15 * MINUTE),
            ("UTC", 15, None, at(0, 10) + 50 * MINUTE, 43, at(0, 10) + 45 * MINUTE),
        ] {
            let config = AnomalyConfig {
                time_zone: zone(tz),
                slot_minutes,
                weekend: weekend.unwrap_or_else(|| AnomalyConfig::default().weekend),
                ..AnomalyConfig::default()
            };
            let place = config.place(t_ms).unwrap();
            assert_eq!((place.cell, config.slot_start_ms(t_ms)), (cell, Some(slot_start)), "{tz} {t_ms}");
        }
        assert_eq!(AnomalyConfig::default().slot_start_ms(i64::MAX), None);
    }

    #[test]
    fn fold_starts_as_a_running_mean_then_weights_and_clips() {
        let mut cell = Cell::default();
        for x in [2.0, 4.0, 6.0] {
            cell.fold(CALLS, x, 0.2, 5, 1.0);
        }
        // Running mean; the prediction errors were 4 - 2 and 6 - 3.
        let (mean, var) = cell.mean_var(CALLS);
        assert!((mean - 4.0).abs() < 1e-6 && (var - (4.0 + 9.0) / 2.0).abs() < 1e-5, "{mean} {var}");

        let mut cell = Cell::default();
        for _ in 0..10 {
            cell.fold(CALLS, 20.0, 0.2, 5, 1.0);
        }
        // Warm, variance 0: the error 180 is clipped to 3 × min_sd, and folded with weights 0.2 and 0.1.
        cell.fold(CALLS, 200.0, 0.2, 5, 1.0);
        let (mean, var) = cell.mean_var(CALLS);
        assert!((mean - 20.6).abs() < 1e-5 && (var - 0.9).abs() < 1e-5, "{mean} {var}");
        assert_eq!(cell.n[CALLS], 11);
    }

    #[test]
    fn stable_manager_scores_low_and_a_drop_scores_high() {
        let config = AnomalyConfig::default();
        let mut noise = Noise(7);
        let baseline = history(&config, 14, |_, hour| steady(&mut noise, hour, 20.0));
        // Day 14 is a Monday; windows 9-10 .. 17-18. Fresh hours from the same distribution.
        let mut fresh = Vec::new();
        for hour in 10..=18 {
            let now = at(14, hour);
            let usual = self_score(&baseline, &config, now, &calls(20.0), CALLS);
            assert!(usual.abs() < 1.0, "the usual 20 calls at {hour}:00 scored {usual}");
            for _ in 0..100 {
                fresh.push(self_score(&baseline, &config, now, &steady(&mut noise, hour - 1, 20.0), CALLS).abs());
            }
            let drop = baseline.score(&config, now, &calls(20.0 / 3.0))[CALLS].unwrap();
            assert!(drop.score < -3.0 && drop.direction() == "below", "a third at {hour}:00 scored {drop:?}");
        }
        fresh.sort_by(f64::total_cmp);
        let (median, worst) = (fresh[fresh.len() / 2], fresh[fresh.len() - 1]);
        assert!(median < 1.0 && worst < 3.0, "typical hours: median |z| {median}, worst {worst}");
        // Night: nothing usual, nothing now.
        assert_eq!(self_score(&baseline, &config, at(14, 3), &calls(0.0), CALLS), 0.0);
        // Other signals have no stream.
        assert_eq!(baseline.score(&config, at(14, 12), &calls(20.0))[1..], [None; 4]);
    }

    #[test]
    fn warm_up() {
        // (days observed from Monday, warm-up, scored day, whether a score exists)
        for (days, warmup, day, scored) in [
            (1, 5, 1, false),
            (4, 5, 4, false),
            (5, 5, 7, true),
            (2, 3, 2, false),
            (3, 3, 3, true),
            (3, 1, 3, true),
            // Weekends: 14 days hold 4 Saturdays and Sundays, 21 days hold 6.
            (14, 5, 19, false),
            (21, 5, 26, true),
        ] {
            let config = AnomalyConfig { warmup_observations: warmup, ..AnomalyConfig::default() };
            let mut noise = Noise(3);
            let baseline = history(&config, days, |_, hour| steady(&mut noise, hour, 20.0));
            let score = baseline.score(&config, at(day, 12), &calls(20.0))[CALLS];
            assert_eq!(score.is_some(), scored, "{days} days, warm-up {warmup}, day {day}: {score:?}");
        }
    }

    #[test]
    fn team_spike_is_high_for_self_and_low_for_the_team() {
        let config = AnomalyConfig::default();
        let rates = [20.0, 20.0, 21.0, 22.0, 22.0];
        let baselines: Vec<Baseline> = rates
            .iter()
            .enumerate()
            .map(|(i, &rate)| {
                let mut noise = Noise(100 + i as u64);
                history(&config, 14, |_, hour| steady(&mut noise, hour, rate))
            })
            .collect();
        let now = at(14, 12);
        let usual = team_scores(&config, Signal::CallsMade, &rates);
        let doubled: Vec<f64> = rates.iter().map(|r| 2.0 * r).collect();
        let spike = team_scores(&config, Signal::CallsMade, &doubled);
        for (i, baseline) in baselines.iter().enumerate() {
            let own = self_score(baseline, &config, now, &calls(doubled[i]), CALLS);
            let team = spike[i].unwrap().score;
            assert!(own > 3.0, "manager {i}: self {own}");
            assert!(team.abs() < 1.0, "manager {i}: team {team}");
            assert!((team - usual[i].unwrap().score).abs() < 1e-9, "manager {i}: team z is scale-free");
        }

        let mut alone = rates.to_vec();
        alone[4] *= 2.0;
        let scores = team_scores(&config, Signal::CallsMade, &alone);
        assert!(scores[4].unwrap().score > 3.0, "{:?}", scores[4]);
        assert!(scores[..4].iter().all(|s| s.unwrap().score.abs() < 1.0), "{scores:?}");
    }

    #[test]
    fn team_scores_are_robust_z_scores() {
        let config = AnomalyConfig::default();
        let spread = MAD_TO_SD;
        // (values, expected (score, median, spread) per manager)
        /// Per manager: score, median, spread.
        type Expected = Vec<Option<(f64, f64, f64)>>;
        let cases: Vec<(Vec<f64>, Expected)> = vec![
            (vec![], vec![]),
            (vec![1.0, 2.0], vec![None, None]),
            (vec![1.0, 2.0, f64::NAN], vec![None, None, None]),
            (vec![10.0, 10.0, 10.0], vec![Some((0.0, 10.0, 1.0)); 3]),
            (
                vec![1.0, 2.0, 3.0, f64::INFINITY],
                vec![
                    Some((-1.0 / spread, 2.0, spread)),
                    Some((0.0, 2.0, spread)),
                    Some((1.0 / spread, 2.0, spread)),
                    None,
                ],
            ),
            // Median 13, MAD 2: 100 is far out and capped.
            (
                vec![10.0, 12.0, 14.0, 100.0],
                vec![
                    Some((-3.0 / (2.0 * spread), 13.0, 2.0 * spread)),
                    Some((-1.0 / (2.0 * spread), 13.0, 2.0 * spread)),
                    Some((1.0 / (2.0 * spread), 13.0, 2.0 * spread)),
                    Some((10.0, 13.0, 2.0 * spread)),
                ],
            ),
        ];
        for (values, expected) in cases {
            let got = team_scores(&config, Signal::CallsMade, &values);
            assert_eq!(got.len(), expected.len(), "{values:?}");
            for (g, e) in got.iter().zip(&expected) {
                match (g, e) {
                    (None, None) => {}
                    (Some(g), Some((score, median, spread))) => {
                        assert!(
                            (g.score - score).abs() < 1e-9
                                && (g.baseline - median).abs() < 1e-9
                                && (g.spread - spread).abs() < 1e-9,
                            "{values:?}: {g:?} vs {e:?}"
                        );
                    }
                    _ => panic!("{values:?}: {got:?} vs {expected:?}"),
                }
            }
        }
    }

    #[test]
    fn response_time_is_judged_against_load() {
        let config = AnomalyConfig::default();
        let mut noise = Noise(11);
        let baseline = history(&config, 14, |_, hour| {
            if (9..18).contains(&hour) {
                replies(Some(noise.count(20.0, 3.0)), noise.count(300.0, 30.0))
            } else {
                Observation::default()
            }
        });
        let now = at(14, 12);
        // (inbound now, p90 now, check)
        type Check = fn(f64) -> bool;
        let cases: [(Option<f64>, f64, Check, &str); 6] = [
            (Some(20.0), 300.0, |z| z.abs() < 1.0, "usual load, usual replies"),
            (Some(40.0), 600.0, |z| z.abs() < 2.0, "double load, replies twice as slow"),
            (Some(20.0), 600.0, |z| z > 3.0, "usual load, replies twice as slow"),
            (Some(10.0), 300.0, |z| z.abs() < 1.0, "half the load, usual replies"),
            (Some(40.0), 300.0, |z| z < -3.0, "double load, usual replies: faster than the load suggests"),
            (None, 600.0, |z| z > 3.0, "no inbound count: the raw p90"),
        ];
        for (inbound, p90, check, what) in cases {
            let z = self_score(&baseline, &config, now, &replies(inbound, p90), P90);
            assert!(check(z), "{what}: {z}");
        }
        let ratio = baseline.load_ratio(&config, now, &replies(Some(40.0), 1.0)).unwrap();
        assert!((1.8..2.1).contains(&ratio), "{ratio}");
        assert_eq!(baseline.load_ratio(&config, now, &replies(None, 1.0)), None);
        assert_eq!(baseline.load_ratio(&config, at(14, 3), &replies(Some(3.0), 1.0)), None, "no warm inbound at night");
    }

    #[test]
    fn load_normalisation() {
        for (p90, ratio, expected) in [
            (600.0, 2.0, 300.0),
            (600.0, 1.0, 600.0),
            (600.0, 0.5, 600.0),
            (600.0, f64::NAN, 600.0),
            (600.0, f64::INFINITY, 600.0),
            (0.0, 3.0, 0.0),
        ] {
            assert_eq!(load_normalised_p90(p90, ratio), expected, "{p90} {ratio}");
        }
    }

    #[test]
    fn time_of_day() {
        let config = AnomalyConfig::default();
        let mut noise = Noise(5);
        let baseline = history(&config, 14, |_, hour| {
            calls(match hour {
                9..=12 => noise.count(30.0, 2.0),
                13..=17 => noise.count(5.0, 1.0),
                _ => 0.0,
            })
        });
        // (now, calls in the hour before, check)
        type Check = fn(f64) -> bool;
        let cases: [(i64, f64, Check, &str); 6] = [
            (at(14, 16), 5.0, |z| z.abs() < 1.0, "quiet afternoon"),
            (at(14, 11), 5.0, |z| z < -3.0, "quiet morning"),
            (at(14, 16), 30.0, |z| z > 3.0, "busy afternoon"),
            (at(14, 11), 30.0, |z| z.abs() < 1.0, "busy morning"),
            // 12:05-13:05 is 55 minutes of the busy 12:00 slot: about 28 calls is normal ...
            (at(14, 13) + 5 * MINUTE, 28.0, |z| z.abs() < 1.0, "window mostly in the morning"),
            // ... but not for 12:55-13:55, nearly all afternoon.
            (at(14, 13) + 55 * MINUTE, 28.0, |z| z > 3.0, "window mostly in the afternoon"),
        ];
        for (now, value, check, what) in cases {
            let z = self_score(&baseline, &config, now, &calls(value), CALLS);
            assert!(check(z), "{what}: {z}");
        }
    }

    #[test]
    fn weekday_and_weekend() {
        let config = AnomalyConfig::default();
        let mut noise = Noise(9);
        let baseline =
            history(&config, 21, |day, hour| steady(&mut noise, hour, if is_weekend(day) { 3.0 } else { 20.0 }));
        let (saturday, tuesday) = (26, 22);
        assert!(is_weekend(saturday) && !is_weekend(tuesday));
        type Check = fn(f64) -> bool;
        let cases: [(i64, f64, Check, &str); 4] = [
            (saturday, 3.0, |z| z.abs() < 1.0, "quiet Saturday"),
            (saturday, 20.0, |z| z > 3.0, "busy Saturday"),
            (tuesday, 3.0, |z| z < -3.0, "quiet Tuesday"),
            (tuesday, 20.0, |z| z.abs() < 1.0, "busy Tuesday"),
        ];
        for (day, value, check, what) in cases {
            let z = self_score(&baseline, &config, at(day, 12), &calls(value), CALLS);
            assert!(check(z), "{what}: {z}");
        }
    }

    #[test]
    fn observe_is_idempotent_and_ignores_older_slots() {
        let config = AnomalyConfig::default();
        // (slots observed in order, expected observations and mean of the Monday/Tuesday 10:00 cell)
        for (slots, n, mean) in [
            (vec![(at(0, 10), 10.0)], 1, 10.0),
            (vec![(at(0, 10), 10.0), (at(0, 10), 99.0)], 1, 10.0),
            (vec![(at(1, 10), 10.0), (at(0, 10), 99.0)], 1, 10.0),
            (vec![(at(0, 10), 10.0), (at(0, 9), 99.0), (at(1, 10), 20.0)], 2, 15.0),
            (vec![(at(0, 10), 10.0), (at(1, 10), 20.0), (at(1, 10), 20.0)], 2, 15.0),
        ] {
            let mut baseline = Baseline::default();
            for &(slot, value) in &slots {
                baseline.observe(&config, slot, &calls(value));
            }
            let cell = baseline.cells[10];
            assert_eq!((cell.n[CALLS], cell.mean_var(CALLS).0), (n, mean), "{slots:?}");
            assert_eq!(baseline.last_slot_ms(), slots.iter().map(|s| s.0).max());
            assert!(baseline.cells[9].n.iter().all(|&n| n == 0), "the older 09:00 slot was ignored");
        }
        let mut once = Baseline::default();
        once.observe(&config, at(0, 10), &calls(5.0));
        let mut twice = once.clone();
        twice.observe(&config, at(0, 10), &calls(5.0));
        assert_eq!(once, twice);
    }

    #[test]
    fn one_odd_hour_barely_moves_the_baseline() {
        let config = AnomalyConfig::default();
        let mut noise = Noise(21);
        let baseline =
            history(
                &config,
                15,
                |day, hour| {
                    if day == 14 && hour == 11 {
                        calls(200.0)
                    } else {
                        steady(&mut noise, hour, 20.0)
                    }
                },
            );
        // Tuesday, the 11:00 slot has seen the 200.
        let now = at(15, 12);
        assert!(self_score(&baseline, &config, now, &calls(20.0), CALLS).abs() < 1.5);
        assert!(self_score(&baseline, &config, now, &calls(20.0 / 3.0), CALLS) < -3.0);
    }

    #[test]
    fn a_lasting_change_is_flagged_then_learned_in_two_weeks() {
        let config = AnomalyConfig::default();
        // Four weeks at 20 calls an hour, then 40 from day 28 (a Monday) on.
        let rate = |day: i64| if day < 28 { 20.0 } else { 40.0 };
        for (days, check) in [(29, (|z| z > 3.0) as fn(f64) -> bool), (42, |z: f64| z.abs() < 2.0)] {
            let mut noise = Noise(33);
            let baseline = history(&config, days, |day, hour| steady(&mut noise, hour, rate(day)));
            let z = self_score(&baseline, &config, at(days, 12), &calls(40.0), CALLS);
            assert!(check(z), "after {} days at 40: {z}", days - 28);
        }
    }

    #[test]
    fn slow_replies_under_load_do_not_teach_the_baseline_slowness() {
        let config = AnomalyConfig::default();
        let mut noise = Noise(12);
        let usual = |noise: &mut Noise| replies(Some(noise.count(20.0, 3.0)), noise.count(300.0, 30.0));
        let quiet =
            history(
                &config,
                15,
                |_, hour| if (9..18).contains(&hour) { usual(&mut noise) } else { Observation::default() },
            );
        let mut noise = Noise(12);
        // The same history, except that on day 14 at 11:00 the load and the p90 doubled.
        let busy = history(&config, 15, |day, hour| match hour {
            11 if day == 14 => replies(Some(40.0), 600.0),
            9..=17 => usual(&mut noise),
            _ => Observation::default(),
        });
        let expected = |baseline: &Baseline| {
            baseline.score(&config, at(15, 12), &replies(Some(20.0), 300.0))[P90].unwrap().baseline
        };
        let moved = expected(&busy) - expected(&quiet);
        assert!(moved.abs() < 5.0, "the p90 baseline moved by {moved} s");
    }

    #[test]
    fn another_slot_length_starts_afresh() {
        let hourly = AnomalyConfig::default();
        let half_hourly = AnomalyConfig { slot_minutes: 30, ..AnomalyConfig::default() };
        let mut noise = Noise(1);
        let mut baseline = history(&hourly, 7, |_, hour| steady(&mut noise, hour, 20.0));
        assert!(baseline.score(&hourly, at(7, 12), &calls(20.0))[CALLS].is_some());
        assert_eq!(baseline.score(&half_hourly, at(7, 12), &calls(20.0)), [None; 5]);
        baseline.observe(&half_hourly, at(7, 12), &calls(20.0));
        assert_eq!(baseline.cells.len(), 96);
        assert_eq!(baseline.cells.iter().map(|c| u32::from(c.n[CALLS])).sum::<u32>(), 1);
    }

    #[test]
    fn bytes_per_manager() {
        assert_eq!(std::mem::size_of::<Cell>(), 60);
        assert_eq!(Baseline::default().heap_bytes(), 0);
        for (slot_minutes, bytes) in [(60, 2_880), (30, 5_760), (1440, 120)] {
            let config = AnomalyConfig { slot_minutes, ..AnomalyConfig::default() };
            let mut baseline = Baseline::default();
            baseline.observe(&config, at(0, 10), &calls(1.0));
            assert_eq!(baseline.heap_bytes(), bytes, "{slot_minutes}-minute slots");
        }
        assert!(std::mem::size_of::<Baseline>() <= 48);
    }

    #[test]
    fn direction() {
        for (score, expected) in [(2.5, "above"), (0.0, "above"), (-0.1, "below")] {
            let score = Score { score, value: 0.0, baseline: 0.0, spread: 1.0 };
            assert_eq!(score.direction(), expected);
        }
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let path = std::env::temp_dir().join(format!("salespulse-anomaly-{}-{tag}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> =
                fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sample_snapshot() -> Snapshot {
        let config = AnomalyConfig::default();
        let mut noise = Noise(2);
        let busy = history(&config, 7, |_, hour| {
            let mut observation = steady(&mut noise, hour, 20.0);
            observation.values[P90] = Some(noise.count(300.0, 30.0));
            observation.inbound_messages = Some(noise.count(20.0, 3.0));
            observation
        });
        Snapshot {
            version: Snapshot::VERSION,
            saved_at_ms: at(7, 0),
            managers: vec![("ivanov".into(), busy), ("petrova".into(), Baseline::default())],
        }
    }

    #[test]
    fn snapshot_round_trip_is_atomic() {
        let dir = TempDir::new("round-trip");
        let path = dir.0.join("baselines.json");
        assert!(read_snapshot(&path).unwrap().is_none(), "a missing file is no snapshot");
        let snapshot = sample_snapshot();
        write_snapshot(&path, &snapshot).unwrap();
        assert_eq!(read_snapshot(&path).unwrap().as_ref(), Some(&snapshot));
        // Overwrite: the new one replaces the old, and no temporary file stays behind.
        let newer = Snapshot { saved_at_ms: snapshot.saved_at_ms + HOUR, ..snapshot.clone() };
        write_snapshot(&path, &newer).unwrap();
        assert_eq!(read_snapshot(&path).unwrap(), Some(newer));
        assert_eq!(dir.entries(), ["baselines.json"]);
        // Scores survive the round trip.
        let config = AnomalyConfig::default();
        let (restored, original) = (read_snapshot(&path).unwrap().unwrap(), snapshot.managers[0].1.clone());
        let current = calls(7.0);
        assert_eq!(
            restored.managers[0].1.score(&config, at(7, 12), &current),
            original.score(&config, at(7, 12), &current)
        );
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = TempDir::new("failed-write");
        let error = write_snapshot(&dir.0.join("missing").join("baselines.json"), &sample_snapshot()).unwrap_err();
        assert!(matches!(error, SnapshotError::Io { .. }), "{error}");
        // A directory in the way of the rename.
        fs::create_dir(dir.0.join("taken")).unwrap();
        fs::write(dir.0.join("taken").join("x"), b"x").unwrap();
        let error = write_snapshot(&dir.0.join("taken"), &sample_snapshot()).unwrap_err();
        assert!(matches!(error, SnapshotError::Io { .. }), "{error}");
        assert_eq!(dir.entries(), ["taken"]);
        assert!(matches!(write_snapshot(Path::new("/"), &sample_snapshot()), Err(SnapshotError::Io { .. })));
    }

    #[test]
    fn bad_snapshots_are_errors() {
        let dir = TempDir::new("bad");
        let path = dir.0.join("baselines.json");
        let good = serde_json::to_string(&sample_snapshot()).unwrap();
        let mut broken = sample_snapshot();
        broken.managers[0].1.cells.pop();
        let mut infinite = sample_snapshot();
        infinite.managers[0].1.cells[10].mean[CALLS] = 12345.5;
        let infinite = serde_json::to_string(&infinite).unwrap().replacen("12345.5", "1e300", 1);
        assert!(infinite.contains("1e300"));
        // (file content, expected error)
        let cases: Vec<(String, &str)> = vec![
            (good[..good.len() / 2].to_string(), "corrupt"),
            ("not json at all".into(), "corrupt"),
            (String::new(), "corrupt"),
            (r#"{"managers": []}"#.into(), "corrupt"),
            (r#"{"version": 1, "saved_at_ms": 5}"#.into(), "corrupt"),
            (r#"{"version": 2, "saved_at_ms": 5, "managers": []}"#.into(), "version"),
            (serde_json::to_string(&broken).unwrap(), "inconsistent"),
            // An out-of-range float is refused either by the parser or by the check after it,
            // depending on serde_json's features in the build (float_roundtrip parses strictly).
            (infinite, "corrupt|inconsistent"),
        ];
        for (content, expected) in cases {
            fs::write(&path, &content).unwrap();
            let kind = match read_snapshot(&path) {
                Err(SnapshotError::Corrupt { .. }) => "corrupt",
                Err(SnapshotError::Version { found: 2, .. }) => "version",
                Err(SnapshotError::Inconsistent { manager, .. }) if manager == "ivanov" => "inconsistent",
                other => panic!("{content:.80}: {other:?}"),
            };
            assert!(expected.split('|').any(|e| e == kind), "{kind} is not {expected}: {content:.80}");
        }
        fs::write(&path, r#"{"version": 1, "saved_at_ms": 5, "managers": []}"#).unwrap();
        assert_eq!(read_snapshot(&path).unwrap().map(|s| s.managers.len()), Some(0));
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![0.0..100.0, -1e3..1e3, prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO]
    }

    fn any_value() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![4 => finite().prop_map(Some), 1 => Just(None), 1 => any::<f64>().prop_map(Some)]
    }

    fn observation() -> impl Strategy<Value = Observation> {
        (prop::array::uniform5(any_value()), any_value())
            .prop_map(|(values, inbound_messages)| Observation { values, inbound_messages })
    }

    fn check(score: &Score, cap: f64) -> Result<(), TestCaseError> {
        prop_assert!(score.score.is_finite() && score.score.abs() <= cap, "{score:?}");
        prop_assert!(score.value.is_finite() && score.baseline.is_finite(), "{score:?}");
        prop_assert!(score.spread.is_finite() && score.spread > 0.0, "{score:?}");
        Ok(())
    }

    proptest! {
        #[test]
        fn scores_are_finite_and_capped(
            history in prop::collection::vec(observation(), 0..40),
            current in observation(),
            alpha in 0.001..=1.0f64,
            min_sd in 1e-12..100.0f64,
            warmup in 1..4u32,
            minutes_past in 0..60i64,
        ) {
            let config = AnomalyConfig { alpha, min_sd: [min_sd; 5], warmup_observations: warmup, ..AnomalyConfig::default() };
            let mut baseline = Baseline::default();
            // Alternate the 10:00 and 11:00 slots so the window 10:xx-11:xx straddles two learned cells.
            for (day, observation) in history.iter().enumerate() {
                baseline.observe(&config, at(day as i64 / 2, 10 + day as i64 % 2), observation);
            }
            prop_assert!(baseline.is_consistent());
            let now = at(history.len() as i64, 11) + minutes_past * MINUTE;
            for score in baseline.score(&config, now, &current).iter().flatten() {
                check(score, config.score_cap)?;
            }
            if let Some(ratio) = baseline.load_ratio(&config, now, &current) {
                prop_assert!(ratio.is_finite() && ratio > 0.0);
            }
        }

        #[test]
        fn team_scores_are_finite_and_capped(values in prop::collection::vec(prop_oneof![finite(), any::<f64>()], 0..12)) {
            let config = AnomalyConfig::default();
            let scores = team_scores(&config, Signal::ResponseTimeP90, &values);
            prop_assert_eq!(scores.len(), values.len());
            for score in scores.iter().flatten() {
                check(score, config.score_cap)?;
            }
        }
    }
}
