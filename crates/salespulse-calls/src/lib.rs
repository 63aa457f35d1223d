//! Call metrics: what a head of sales counts on the phone side, per manager.
//!
//! From each finished call ([`salespulse_events::Call`]) a manager's [`CallState`] counts calls by
//! direction and status, talk time, and successful contacts (answered calls whose talk time is at
//! least the configured threshold, 40 s by default; the threshold itself counts). The numbers are
//! kept as monotonic totals since the manager appeared (for PromQL's `rate()` and `increase()`) and,
//! for the headline ones, in the configured windows (read at scrape time against the wall clock).
//! Which windows each windowed family exports is configurable ([`CallExport`]), because every
//! window is one more series per manager.
//!
//! Main types: [`Calls`] (configuration and the shared bucket layout), [`CallState`] (one manager),
//! [`CallSnapshot`] and [`CallRow`] (a scrape). Names and meanings are in `docs/metrics.md`.
#![deny(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};

use salespulse_core::expo::{MetricType, MetricWriter};
use salespulse_core::single_writer::add as bump;
use salespulse_core::window::{Counters, Layout, ReadPlan, Windows};
use salespulse_events::{Call, CallDirection, CallStatus};

const DIRECTIONS: usize = 2;
const STATUSES: usize = 5;

/// Windowed counters per bucket: calls in, calls out, missed inbound, successful, talk ms.
const DIM_CALLS: [usize; DIRECTIONS] = [0, 1];
const DIM_MISSED: usize = 2;
const DIM_SUCCESSFUL: usize = 3;
const DIM_TALK_MS: usize = 4;
const DIMS: usize = 5;

/// Which windows each windowed call family exports, by window label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallExport {
    /// `salespulse_window_calls{direction}`.
    pub calls: Vec<String>,
    /// `salespulse_window_successful_contacts`.
    pub successful_contacts: Vec<String>,
    /// `salespulse_window_missed_calls`.
    pub missed_calls: Vec<String>,
    /// `salespulse_window_call_talk_seconds`.
    pub talk_seconds: Vec<String>,
}

impl Default for CallExport {
    /// The headline families in the short and the working-day windows; the rest are `_total`
    /// counters only. With all default windows configured this is 14 windowed series per manager.
    fn default() -> Self {
        let labels = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        CallExport {
            calls: labels(&["5m", "1h", "today", "shift"]),
            successful_contacts: labels(&["1h", "today", "shift"]),
            missed_calls: labels(&["1h", "today"]),
            talk_seconds: labels(&["today"]),
        }
    }
}

/// How calls are judged and exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallsConfig {
    /// An answered call with at least this much talk is a successful contact.
    pub successful_talk_ms: u64,
    /// Which windows each windowed family exports.
    pub export: CallExport,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig { successful_talk_ms: 40_000, export: CallExport::default() }
    }
}

pub use salespulse_core::window::ExportError;

/// The call stream's configuration and bucket layout, shared by all managers.
#[derive(Debug, Clone)]
pub struct Calls {
    successful_talk_ms: u64,
    layout: Layout,
    /// Per family, the exported windows as `(position in the layout's windows, label)`.
    calls: Vec<(usize, String)>,
    successful: Vec<(usize, String)>,
    missed: Vec<(usize, String)>,
    talk: Vec<(usize, String)>,
}

impl Calls {
    /// Resolves the export lists against `windows`. A label that is not configured is an error,
    /// except in the defaults, which export what exists of them.
    pub fn new(windows: &Windows, config: &CallsConfig) -> Result<Calls, ExportError> {
        let strict = config.export != CallExport::default();
        let families: [(&'static str, &Vec<String>); 4] = [
            ("calls", &config.export.calls),
            ("successful_contacts", &config.export.successful_contacts),
            ("missed_calls", &config.export.missed_calls),
            ("talk_seconds", &config.export.talk_seconds),
        ];
        let mut specs: Vec<usize> = Vec::new();
        let mut resolved: Vec<Vec<(usize, String)>> = Vec::new();
        for (family, labels) in families {
            let list = windows.resolve_export(family, labels, strict)?;
            for (spec, _) in &list {
                if !specs.contains(spec) {
                    specs.push(*spec);
                }
            }
            resolved.push(list);
        }
        specs.sort_unstable();
        let layout = Layout::new(windows, DIMS, &specs);
        let position = |list: Vec<(usize, String)>| -> Vec<(usize, String)> {
            list.into_iter()
                .filter_map(|(spec, label)| Some((layout.specs().iter().position(|&s| s == spec)?, label)))
                .collect()
        };
        let mut resolved = resolved.into_iter();
        let mut next = || position(resolved.next().unwrap_or_default());
        Ok(Calls {
            successful_talk_ms: config.successful_talk_ms,
            calls: next(),
            successful: next(),
            missed: next(),
            talk: next(),
            layout,
        })
    }

    /// Empty state for a new manager.
    pub fn new_state(&self) -> CallState {
        CallState { totals: Default::default(), windows: Counters::new(&self.layout) }
    }

    /// Whether `call` is a successful contact: answered, with talk time at or above the threshold.
    pub fn is_successful(&self, call: &Call) -> bool {
        call.status == CallStatus::Answered && call.talk_ms >= self.successful_talk_ms
    }

    /// Applies one call that happened at `event_ms`, seen at wall-clock `now_ms`. Only one thread
    /// may apply to a given state at a time (the engine applies a partition's records in order).
    pub fn apply(&self, state: &CallState, windows: &Windows, call: &Call, event_ms: i64, now_ms: i64) {
        let d = call.direction.index();
        let successful = self.is_successful(call);
        let totals = &state.totals;
        bump(&totals[d * STATUSES + call.status.index()], 1);
        bump(&totals[TOTAL_TALK + d], call.talk_ms);
        if successful {
            bump(&totals[TOTAL_SUCCESSFUL + d], 1);
        }
        let mut deltas = [0u32; DIMS];
        deltas[DIM_CALLS[d]] = 1;
        deltas[DIM_MISSED] = u32::from(call.direction == CallDirection::Inbound && call.status == CallStatus::Missed);
        deltas[DIM_SUCCESSFUL] = u32::from(successful);
        deltas[DIM_TALK_MS] = u32::try_from(call.talk_ms).unwrap_or(u32::MAX);
        state.windows.add(&self.layout, windows, event_ms, now_ms, &deltas);
    }

    /// The values a scrape at the instant of `plan` exports.
    pub fn snapshot(&self, state: &CallState, windows: &Windows, plan: &ReadPlan) -> CallSnapshot {
        let load = |i: usize| state.totals[i].load(Ordering::Relaxed);
        let mut totals = CallTotals::default();
        for d in 0..DIRECTIONS {
            for s in 0..STATUSES {
                totals.calls[d][s] = load(d * STATUSES + s);
            }
            totals.successful[d] = load(TOTAL_SUCCESSFUL + d);
            totals.talk_ms[d] = load(TOTAL_TALK + d);
        }
        let mut per_window = vec![0; self.layout.specs().len() * DIMS];
        state.windows.read(&self.layout, windows, plan, &mut per_window);
        CallSnapshot { totals, windows: per_window }
    }

    /// Successful contacts in window `label` of `snapshot`; `None` where the family does not export
    /// that window.
    pub fn window_successful(&self, snapshot: &CallSnapshot, label: &str) -> Option<u64> {
        let (position, _) = self.successful.iter().find(|(_, l)| l == label)?;
        snapshot.windows.get(position * DIMS + DIM_SUCCESSFUL).copied()
    }

    /// Calls of `direction` in window `label` of `snapshot`; `None` where `salespulse_window_calls`
    /// does not export that window.
    pub fn window_calls(&self, snapshot: &CallSnapshot, label: &str, direction: CallDirection) -> Option<u64> {
        let (position, _) = self.calls.iter().find(|(_, l)| l == label)?;
        snapshot.windows.get(position * DIMS + DIM_CALLS[direction.index()]).copied()
    }

    /// Every call value of window `label` in `snapshot`, whichever families export it; `None`
    /// where the call stream keeps no counters for that window (no family exports it).
    pub fn window_values(&self, snapshot: &CallSnapshot, windows: &Windows, label: &str) -> Option<CallWindow> {
        let spec = windows.index_of(label)?;
        let position = self.layout.specs().iter().position(|&s| s == spec)?;
        let values = snapshot.windows.get(position * DIMS..(position + 1) * DIMS)?;
        Some(CallWindow {
            calls: values[DIM_CALLS[0]] + values[DIM_CALLS[1]],
            successful: values[DIM_SUCCESSFUL],
            missed: values[DIM_MISSED],
            talk_ms: values[DIM_TALK_MS],
        })
    }

    /// Adds into `out` the finished calls (both directions) per bucket of window `label` at the
    /// instant of `plan`, oldest first (see `Counters::series`); nothing where the stream keeps no
    /// counters for that window.
    pub fn calls_series(&self, state: &CallState, windows: &Windows, plan: &ReadPlan, label: &str, out: &mut Vec<u64>) {
        let Some(spec) = windows.index_of(label) else { return };
        if !self.layout.specs().contains(&spec) {
            return;
        }
        for dim in DIM_CALLS {
            state.windows.series(&self.layout, windows, plan, spec, dim, out);
        }
    }

    /// The windows `salespulse_window_successful_contacts` exports.
    pub fn successful_windows(&self) -> impl Iterator<Item = &str> {
        self.successful.iter().map(|(_, label)| label.as_str())
    }

    /// Bytes of one manager's call state.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<CallState>() + self.layout.bytes()
    }

    /// Writes the call families for `rows`. Label sets that never occurred (a direction or status a
    /// manager never had) are not written; once they occurred, their window gauges stay and decay
    /// to 0.
    pub fn render(&self, rows: &[CallRow<'_>], out: &mut MetricWriter) {
        out.family(
            "salespulse_calls_total",
            "Finished calls since the manager appeared, by direction and status.",
            MetricType::Counter,
        );
        for row in rows {
            for dir in CallDirection::ALL {
                for status in CallStatus::ALL {
                    let value = row.calls.totals.calls[dir.index()][status.index()];
                    if value > 0 {
                        let labels = [("direction", dir.as_str()), ("status", status.as_str())];
                        out.sample_prefixed("salespulse_calls_total", row.labels, &labels, value as f64);
                    }
                }
            }
        }

        out.family(
            "salespulse_call_talk_seconds_total",
            "Talk time of finished calls since the manager appeared, seconds.",
            MetricType::Counter,
        );
        for_each_direction(rows, |row, dir| {
            let value = seconds(row.calls.totals.talk_ms[dir.index()]);
            out.sample_prefixed(
                "salespulse_call_talk_seconds_total",
                row.labels,
                &[("direction", dir.as_str())],
                value,
            );
        });

        out.family(
            "salespulse_successful_contacts_total",
            "Answered calls with talk time at or above the successful-contact threshold, since the manager appeared.",
            MetricType::Counter,
        );
        for_each_direction(rows, |row, dir| {
            let value = row.calls.totals.successful[dir.index()] as f64;
            let labels = [("direction", dir.as_str())];
            out.sample_prefixed("salespulse_successful_contacts_total", row.labels, &labels, value);
        });

        out.family("salespulse_window_calls", "Finished calls in the window, by direction.", MetricType::Gauge);
        for_each_direction(rows, |row, dir| {
            for (position, label) in &self.calls {
                let labels = [("direction", dir.as_str()), ("window", label.as_str())];
                let value = row.calls.windows[position * DIMS + DIM_CALLS[dir.index()]];
                out.sample_prefixed("salespulse_window_calls", row.labels, &labels, value as f64);
            }
        });

        let windowed = [
            WindowedFamily {
                name: "salespulse_window_successful_contacts",
                help: "Answered calls with talk time at or above the successful-contact threshold, in the window.",
                exported: &self.successful,
                dim: DIM_SUCCESSFUL,
                divisor: 1.0,
            },
            WindowedFamily {
                name: "salespulse_window_missed_calls",
                help: "Inbound calls missed, in the window.",
                exported: &self.missed,
                dim: DIM_MISSED,
                divisor: 1.0,
            },
            WindowedFamily {
                name: "salespulse_window_call_talk_seconds",
                help: "Talk time of finished calls in the window, seconds.",
                exported: &self.talk,
                dim: DIM_TALK_MS,
                divisor: 1000.0,
            },
        ];
        for family in windowed {
            out.family(family.name, family.help, MetricType::Gauge);
            for row in rows.iter().filter(|row| row.calls.totals.any()) {
                for (position, label) in family.exported {
                    let value = row.calls.windows[position * DIMS + family.dim] as f64 / family.divisor;
                    out.sample_prefixed(family.name, row.labels, &[("window", label.as_str())], value);
                }
            }
        }
    }
}

/// A windowed family without a direction label.
struct WindowedFamily<'a> {
    name: &'static str,
    help: &'static str,
    exported: &'a [(usize, String)],
    dim: usize,
    /// Divides the stored integer into the exported unit (milliseconds to seconds).
    divisor: f64,
}

/// Totals layout: calls by `[direction][status]`, then successful by direction, then talk ms by
/// direction.
const TOTAL_SUCCESSFUL: usize = DIRECTIONS * STATUSES;
const TOTAL_TALK: usize = TOTAL_SUCCESSFUL + DIRECTIONS;
const TOTALS: usize = TOTAL_TALK + DIRECTIONS;

/// One manager's call state: totals and windowed buckets, updated through atomics.
#[derive(Debug)]
pub struct CallState {
    totals: [AtomicU64; TOTALS],
    windows: Counters,
}

/// A manager's call totals since it appeared.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallTotals {
    /// Calls by `[direction][status]`, indexed by `CallDirection::index` and `CallStatus::index`.
    pub calls: [[u64; STATUSES]; DIRECTIONS],
    /// Successful contacts by direction.
    pub successful: [u64; DIRECTIONS],
    /// Talk time by direction, milliseconds.
    pub talk_ms: [u64; DIRECTIONS],
}

impl CallTotals {
    fn calls_in(&self, d: usize) -> u64 {
        self.calls[d].iter().sum()
    }

    fn any(&self) -> bool {
        (0..DIRECTIONS).any(|d| self.calls_in(d) > 0)
    }
}

/// A manager's call values at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSnapshot {
    /// Since the manager appeared.
    pub totals: CallTotals,
    /// Windowed counters, window-major in the layout's window order.
    windows: Vec<u64>,
}

impl CallSnapshot {
    /// Adds `other` (the same manager seen through another partition).
    pub fn merge(&mut self, other: &CallSnapshot) {
        let (mine, theirs) = (&mut self.totals, &other.totals);
        for d in 0..DIRECTIONS {
            for s in 0..STATUSES {
                mine.calls[d][s] = mine.calls[d][s].saturating_add(theirs.calls[d][s]);
            }
            mine.successful[d] = mine.successful[d].saturating_add(theirs.successful[d]);
            mine.talk_ms[d] = mine.talk_ms[d].saturating_add(theirs.talk_ms[d]);
        }
        for (a, b) in self.windows.iter_mut().zip(&other.windows) {
            *a = a.saturating_add(*b);
        }
    }
}

/// A manager's call values in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallWindow {
    /// Finished calls, both directions.
    pub calls: u64,
    /// Successful contacts.
    pub successful: u64,
    /// Inbound calls missed.
    pub missed: u64,
    /// Talk time, milliseconds.
    pub talk_ms: u64,
}

/// One manager's row in a scrape.
#[derive(Debug, Clone, Copy)]
pub struct CallRow<'a> {
    /// The manager's `manager` and `team` labels, rendered once by `expo::label_prefix`.
    pub labels: &'a str,
    /// The values.
    pub calls: &'a CallSnapshot,
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn for_each_direction<'a>(rows: &[CallRow<'a>], mut visit: impl FnMut(&CallRow<'a>, CallDirection)) {
    for row in rows {
        for dir in CallDirection::ALL {
            if row.calls.totals.calls_in(dir.index()) > 0 {
                visit(row, dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salespulse_core::expo::{label_prefix, Format};
    use salespulse_core::window::WindowsConfig;

    /// 2026-11-23T12:00:00Z, a Monday.
    const T0: i64 = 1_795_435_200_000;

    fn call(direction: CallDirection, status: CallStatus, talk_ms: u64) -> Call {
        Call {
            call_id: "c".into(),
            direction,
            status,
            started_at_ms: T0 - 100_000,
            answered_at_ms: None,
            ended_at_ms: T0,
            talk_ms,
            client_id: None,
            card_id: None,
        }
    }

    fn setup(sliding: &[&str], export: CallExport) -> (Windows, Calls) {
        let windows = Windows::parse(sliding).unwrap();
        let calls = Calls::new(&windows, &CallsConfig { successful_talk_ms: 40_000, export }).unwrap();
        (windows, calls)
    }

    fn every(labels: &[&str]) -> CallExport {
        let list: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        CallExport {
            calls: list.clone(),
            successful_contacts: list.clone(),
            missed_calls: list.clone(),
            talk_seconds: list,
        }
    }

    fn samples(body: &str) -> Vec<&str> {
        body.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn successful_contact_threshold_is_inclusive() {
        let (_, calls) = setup(&["5m"], every(&["5m"]));
        for (status, talk_ms, expected) in [
            (CallStatus::Answered, 40_000, true),
            (CallStatus::Answered, 39_999, false),
            (CallStatus::Answered, 39_900, false),
            (CallStatus::Answered, 600_000, true),
            (CallStatus::Missed, 60_000, false),
            (CallStatus::Busy, 0, false),
        ] {
            let got = calls.is_successful(&call(CallDirection::Inbound, status, talk_ms));
            assert_eq!(got, expected, "{status:?} {talk_ms}");
        }
    }

    #[test]
    fn totals_and_windows() {
        let (windows, calls) = setup(&["5m", "1h"], every(&["5m", "1h"]));
        let state = calls.new_state();
        let answered = call(CallDirection::Outbound, CallStatus::Answered, 45_000);
        calls.apply(&state, &windows, &answered, T0 - 10_000, T0);
        calls.apply(&state, &windows, &answered, T0 - 20 * 60_000, T0);
        calls.apply(&state, &windows, &call(CallDirection::Inbound, CallStatus::Missed, 0), T0 - 30_000, T0);
        let snap = calls.snapshot(&state, &windows, &windows.plan(T0));
        assert_eq!(snap.totals.calls[1][0], 2);
        assert_eq!(snap.totals.calls[0][1], 1);
        assert_eq!(snap.totals.successful, [0, 2]);
        assert_eq!(snap.totals.talk_ms, [0, 90_000]);
        // 5m: one outbound, one missed inbound, one successful, 45 s; 1h: both outbound.
        assert_eq!(&snap.windows[..DIMS], &[1, 1, 1, 1, 45_000]);
        assert_eq!(&snap.windows[DIMS..], &[1, 2, 1, 2, 90_000]);
    }

    #[test]
    fn render_writes_exported_windows_and_only_label_sets_that_occurred() {
        let export = CallExport {
            calls: vec!["5m".into(), "1h".into()],
            successful_contacts: vec!["1h".into()],
            missed_calls: vec![],
            talk_seconds: vec!["5m".into()],
        };
        let (windows, calls) = setup(&["5m", "1h"], export);
        let state = calls.new_state();
        calls.apply(&state, &windows, &call(CallDirection::Inbound, CallStatus::Answered, 40_500), T0, T0);
        let snap = calls.snapshot(&state, &windows, &windows.plan(T0));
        let mut out = MetricWriter::new(Format::Text);
        let labels = label_prefix(&[("manager", "ivanov"), ("team", "north")]);
        calls.render(&[CallRow { labels: &labels, calls: &snap }], &mut out);
        let body = out.finish();
        assert_eq!(
            samples(&body),
            vec![
                r#"salespulse_calls_total{manager="ivanov",team="north",direction="inbound",status="answered"} 1"#,
                r#"salespulse_call_talk_seconds_total{manager="ivanov",team="north",direction="inbound"} 40.5"#,
                r#"salespulse_successful_contacts_total{manager="ivanov",team="north",direction="inbound"} 1"#,
                r#"salespulse_window_calls{manager="ivanov",team="north",direction="inbound",window="5m"} 1"#,
                r#"salespulse_window_calls{manager="ivanov",team="north",direction="inbound",window="1h"} 1"#,
                r#"salespulse_window_successful_contacts{manager="ivanov",team="north",window="1h"} 1"#,
                r#"salespulse_window_call_talk_seconds{manager="ivanov",team="north",window="5m"} 40.5"#,
            ]
        );
        // Later the windows decay to zero but the series stay.
        let later = calls.snapshot(&state, &windows, &windows.plan(T0 + 3_600_000));
        let mut out = MetricWriter::new(Format::Text);
        let labels = label_prefix(&[("manager", "ivanov")]);
        calls.render(&[CallRow { labels: &labels, calls: &later }], &mut out);
        let body = out.finish();
        assert!(
            body.contains(r#"salespulse_window_calls{manager="ivanov",direction="inbound",window="5m"} 0"#),
            "{body}"
        );
    }

    #[test]
    fn default_export_fits_the_budget() {
        let windows = Windows::new(&WindowsConfig::default()).unwrap();
        let calls = Calls::new(&windows, &CallsConfig::default()).unwrap();
        let windowed = 2 * calls.calls.len() + calls.successful.len() + calls.missed.len() + calls.talk.len();
        assert_eq!(windowed, 14);
        // Rings of 30 buckets for 5m and 1h and a cell each for today and shift, 6 cells (stamp and
        // 5 counters) of 4 bytes per bucket, then the all-time totals.
        assert_eq!(calls.state_bytes(), (30 + 30 + 2) * 6 * 4 + 128);
    }

    #[test]
    fn window_successful_reads_the_exported_windows() {
        let export = CallExport { successful_contacts: vec!["1h".into()], ..every(&["5m"]) };
        let (windows, calls) = setup(&["5m", "1h"], export);
        let state = calls.new_state();
        calls.apply(&state, &windows, &call(CallDirection::Outbound, CallStatus::Answered, 41_000), T0, T0);
        let snap = calls.snapshot(&state, &windows, &windows.plan(T0));
        assert_eq!(calls.window_successful(&snap, "1h"), Some(1));
        assert_eq!(calls.window_successful(&snap, "5m"), None);
        assert_eq!(calls.successful_windows().collect::<Vec<_>>(), ["1h"]);
    }

    #[test]
    fn unknown_export_window_is_an_error() {
        let windows = Windows::parse(&["5m"]).unwrap();
        let config = CallsConfig { successful_talk_ms: 40_000, export: every(&["5m", "2h"]) };
        let error = Calls::new(&windows, &config).unwrap_err();
        assert_eq!((error.family, error.label.as_str()), ("calls", "2h"));
    }

    #[test]
    fn merge_adds_partitions() {
        let (windows, calls) = setup(&["5m"], every(&["5m"]));
        let (a, b) = (calls.new_state(), calls.new_state());
        calls.apply(&a, &windows, &call(CallDirection::Inbound, CallStatus::Answered, 50_000), T0, T0);
        calls.apply(&b, &windows, &call(CallDirection::Inbound, CallStatus::Answered, 10_000), T0, T0);
        let plan = windows.plan(T0);
        let mut snap = calls.snapshot(&a, &windows, &plan);
        snap.merge(&calls.snapshot(&b, &windows, &plan));
        assert_eq!(snap.totals.calls[0][0], 2);
        assert_eq!(&snap.windows[..], &[2, 0, 0, 1, 60_000]);
    }
}
