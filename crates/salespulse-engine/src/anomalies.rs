//! Activity anomalies: each manager against their own baseline and against the team.
//!
//! Once per completed slot (an hour by default) [`Engine::tick`] reads every manager's values of
//! the slot from the window whose length is the slot (`1h`) and folds them into the manager's
//! baseline (`salespulse-anomaly`). A scrape scores the current window against the baseline of the
//! slot the wall clock is in (self score) and against the team's robust median and spread (team
//! score). Silence: a manager inside the shift with no event at all for `silence_after`.
//! The method and its limits are in `docs/anomalies.md`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;
use salespulse_anomaly::{team_scores, AnomalyConfig, Baseline, Observation, Score, Signal, Snapshot};
use salespulse_core::expo::{MetricType, MetricWriter};
use salespulse_core::window::{shift_bounds, WindowKind, Windows};
use salespulse_events::{CallDirection, MessageDirection};

use crate::{Engine, Row};

/// How anomalies are judged.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySettings {
    /// The baseline method's parameters.
    pub config: AnomalyConfig,
    /// A manager inside the shift with no event for this long is silent.
    pub silence_after_ms: i64,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        AnomalySettings { config: AnomalyConfig::default(), silence_after_ms: 30 * 60_000 }
    }
}

/// The engine's anomaly state.
#[derive(Debug)]
pub(crate) struct Anomalies {
    /// The label of the sliding window as long as one slot, read for every signal.
    window: Option<String>,
    /// Start of the last slot folded into the baselines.
    last_slot_ms: AtomicI64,
    /// Baselines read from a snapshot, waiting for their manager's first event.
    restored: Mutex<HashMap<String, Baseline>>,
}

impl Anomalies {
    pub(crate) fn new(windows: &Windows, settings: &AnomalySettings) -> Anomalies {
        let slot_ms = i64::from(settings.config.slot_minutes) * 60_000;
        let window = windows
            .specs()
            .iter()
            .find(|spec| matches!(spec.kind, WindowKind::Sliding { length_ms, .. } if length_ms == slot_ms))
            .map(|spec| spec.label.clone());
        Anomalies { window, last_slot_ms: AtomicI64::new(i64::MIN), restored: Mutex::new(HashMap::new()) }
    }

    /// Whether anomalies are computed at all: the window of one slot's length must be configured.
    pub(crate) fn window(&self) -> Option<&str> {
        self.window.as_deref()
    }

    pub(crate) fn take_restored(&self, manager: &str) -> Option<Baseline> {
        self.restored.lock().remove(manager)
    }
}

/// One manager's anomaly values in a scrape.
#[derive(Debug, Default, Clone)]
pub(crate) struct RowAnomalies {
    pub(crate) current: Observation,
    pub(crate) own: [Option<Score>; 5],
    pub(crate) load_normalised_p90: Option<f64>,
    pub(crate) silent: Option<bool>,
}

impl Engine {
    /// The values of the anomaly signals in window `label` of a manager's snapshots.
    pub(crate) fn observation(&self, row: &Row, label: &str) -> Observation {
        let mut values = [None; 5];
        let calls = row.calls.as_ref();
        let messages = row.messages.as_ref();
        values[Signal::CallsMade.index()] =
            calls.and_then(|c| self.calls.window_calls(c, label, CallDirection::Outbound)).map(|v| v as f64);
        values[Signal::SuccessfulContacts.index()] =
            calls.and_then(|c| self.calls.window_successful(c, label)).map(|v| v as f64);
        values[Signal::OutboundMessages.index()] = messages
            .and_then(|m| self.messages.window_messages(m, label, MessageDirection::Outbound))
            .map(|v| v as f64);
        values[Signal::CardsTouched.index()] =
            row.cards.as_ref().and_then(|c| self.cards.cards_touched(c, label)).map(|v| v as f64);
        values[Signal::ResponseTimeP90.index()] =
            messages.and_then(|m| self.messages.window_response_quantile(m, label, 0.9));
        let inbound_messages =
            messages.and_then(|m| self.messages.window_messages(m, label, MessageDirection::Inbound)).map(|v| v as f64);
        Observation { values, inbound_messages }
    }

    /// Folds the last completed slot into every manager's baseline, once per slot. Call it often
    /// (every few seconds to a minute): the slot is read from the ring of its window, which
    /// only holds it until that window's first bucket after the slot is reused.
    pub fn tick(&self) {
        let Some(label) = self.anomalies.window() else { return };
        let config = &self.config.anomalies.config;
        let slot_ms = i64::from(config.slot_minutes) * 60_000;
        let now_ms = self.clock.now_ms();
        // The last completed slot, on the local time grid of the configured zone.
        let Some(slot_start) = config.slot_start_ms(now_ms - slot_ms) else { return };
        if self.anomalies.last_slot_ms.swap(slot_start, Ordering::Relaxed) >= slot_start {
            return;
        }
        let windows = &self.config.windows;
        let end = slot_start + slot_ms - 1;
        let plan = windows.plan(end);
        self.table.for_each(|_, manager, entry| {
            let row = self.snapshot_row(manager, entry, &plan, end);
            let observation = self.observation(&row, label);
            let baseline = self.baseline_of(manager, &entry.state);
            baseline.lock().observe(config, slot_start, &observation);
        });
    }

    pub(crate) fn baseline_of<'a>(&self, manager: &str, state: &'a crate::ManagerState) -> &'a Mutex<Baseline> {
        state.baseline.get_or_init(|| Box::new(Mutex::new(self.anomalies.take_restored(manager).unwrap_or_default())))
    }

    /// The self scores, load-normalised response time and silence of one manager now.
    pub(crate) fn row_anomalies(
        &self,
        row: &Row,
        state: &crate::ManagerState,
        last_update_ms: i64,
        now_ms: i64,
    ) -> RowAnomalies {
        let Some(label) = self.anomalies.window() else { return RowAnomalies::default() };
        let config = &self.config.anomalies.config;
        let current = self.observation(row, label);
        let (own, load_normalised_p90) = match state.baseline.get() {
            Some(baseline) => {
                let baseline = baseline.lock();
                // `score` blends the baselines of the slots the window ending now spans.
                let own = baseline.score(config, now_ms, &current);
                let p90 = current.values[Signal::ResponseTimeP90.index()];
                let load = baseline.load_ratio(config, now_ms, &current);
                let normalised = p90.map(|p90| salespulse_anomaly::load_normalised_p90(p90, load.unwrap_or(1.0)));
                (own, normalised)
            }
            None => ([None; 5], None),
        };
        let silent = self
            .shift_end(now_ms)
            .map(|in_shift| in_shift && now_ms - last_update_ms >= self.config.anomalies.silence_after_ms);
        RowAnomalies { current, own, load_normalised_p90, silent }
    }

    /// `Some(true)` inside the configured shift, `Some(false)` outside, `None` without a shift.
    fn shift_end(&self, now_ms: i64) -> Option<bool> {
        let windows = &self.config.windows;
        windows.specs().iter().find_map(|spec| match spec.kind {
            WindowKind::Shift(shift) => {
                let (start, end) = shift_bounds(windows.time_zone(), shift, now_ms);
                Some(now_ms >= start && now_ms < end)
            }
            _ => None,
        })
    }

    /// The baselines of every manager held, for a snapshot file.
    pub fn baseline_snapshot(&self) -> Snapshot {
        let mut managers: Vec<(String, Baseline)> = Vec::new();
        self.table.for_each(|_, manager, entry| {
            if let Some(baseline) = entry.state.baseline.get() {
                managers.push((manager.to_string(), baseline.lock().clone()));
            }
        });
        // Baselines restored but not yet claimed by a manager are kept too.
        for (manager, baseline) in self.anomalies.restored.lock().iter() {
            managers.push((manager.clone(), baseline.clone()));
        }
        Snapshot { version: Snapshot::VERSION, saved_at_ms: self.clock.now_ms(), managers }
    }

    /// Restores baselines from a snapshot; each is claimed by its manager's first event.
    pub fn restore_baselines(&self, snapshot: Snapshot) -> usize {
        let mut restored = self.anomalies.restored.lock();
        let count = snapshot.managers.len();
        restored.extend(snapshot.managers);
        count
    }

    /// Writes the anomaly families.
    pub(crate) fn render_anomalies(&self, rows: &[Row], labels: &[String], out: &mut MetricWriter) {
        if self.anomalies.window().is_none() {
            return;
        }
        let config = &self.config.anomalies.config;
        // Team scores: per team and signal, the values of the team's managers.
        let mut team: Vec<[Option<Score>; 5]> = vec![[None; 5]; rows.len()];
        let mut by_team: HashMap<Option<&str>, Vec<usize>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            by_team.entry(row.team.as_deref()).or_default().push(i);
        }
        for members in by_team.values() {
            for signal in Signal::ALL {
                let with_value: Vec<(usize, f64)> = members
                    .iter()
                    .filter_map(|&i| Some((i, rows[i].anomalies.current.values[signal.index()]?)))
                    .collect();
                let values: Vec<f64> = with_value.iter().map(|(_, v)| *v).collect();
                for ((i, _), score) in with_value.iter().zip(team_scores(config, signal, &values)) {
                    team[*i][signal.index()] = score;
                }
            }
        }
        out.family(
            "salespulse_anomaly_score",
            "How unusual the manager's last-hour value of a signal is: against their own baseline (basis=self) or the team (basis=team); signed, direction says which way.",
            MetricType::Gauge,
        );
        for (i, (row, labels)) in rows.iter().zip(labels).enumerate() {
            for (basis, scores) in [("self", &row.anomalies.own), ("team", &team[i])] {
                for signal in Signal::ALL {
                    if let Some(score) = scores[signal.index()] {
                        let extra = [("signal", signal.as_str()), ("basis", basis), ("direction", score.direction())];
                        out.sample_prefixed("salespulse_anomaly_score", labels, &extra, score.score);
                    }
                }
            }
        }
        out.family(
            "salespulse_anomaly_baseline",
            "The manager's own baseline for this time of day that the self score compares against.",
            MetricType::Gauge,
        );
        for (row, labels) in rows.iter().zip(labels) {
            for signal in Signal::ALL {
                if let Some(score) = row.anomalies.own[signal.index()] {
                    let extra = [("signal", signal.as_str())];
                    out.sample_prefixed("salespulse_anomaly_baseline", labels, &extra, score.baseline);
                }
            }
        }
        // What team scores compare against is the same for every manager of a team: one series
        // per team and signal, not per manager.
        let mut teams: Vec<(&str, Signal, Score)> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            for signal in Signal::ALL {
                if let (Some(team_name), Some(score)) = (row.team.as_deref(), team[i][signal.index()]) {
                    teams.push((team_name, signal, score));
                }
            }
        }
        // Every member of a team carries the same median and spread: keep the first of each team
        // and signal (a stable sort, then dedup; a linear search per row was quadratic in teams).
        teams.sort_by(|a, b| (a.0, a.1.index()).cmp(&(b.0, b.1.index())));
        teams.dedup_by(|later, kept| later.0 == kept.0 && later.1 == kept.1);
        for (name, help, spread) in [
            (
                "salespulse_anomaly_team_median",
                "The team's median of a signal in the last hour (what team scores compare against).",
                false,
            ),
            (
                "salespulse_anomaly_team_spread",
                "The team's spread of a signal (scaled MAD, floored) that team scores divide by.",
                true,
            ),
        ] {
            out.family(name, help, MetricType::Gauge);
            for (team_name, signal, score) in &teams {
                let value = if spread { score.spread } else { score.baseline };
                out.sample(name, &[("team", team_name), ("signal", signal.as_str())], value);
            }
        }
        out.family(
            "salespulse_response_time_p90_load_normalised_seconds",
            "Last-hour p90 response time divided by how much the inbound load exceeds the manager's usual load for this slot.",
            MetricType::Gauge,
        );
        for (row, labels) in rows.iter().zip(labels) {
            if let Some(value) = row.anomalies.load_normalised_p90 {
                out.sample_prefixed("salespulse_response_time_p90_load_normalised_seconds", labels, &[], value);
            }
        }
        out.family(
            "salespulse_silent",
            "1 when the manager is inside the shift and no event of theirs arrived for the silence time.",
            MetricType::Gauge,
        );
        for (row, labels) in rows.iter().zip(labels) {
            if let Some(silent) = row.anomalies.silent {
                out.sample_prefixed("salespulse_silent", labels, &[], f64::from(u8::from(silent)));
            }
        }
    }
}
