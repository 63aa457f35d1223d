//! Call metrics: what a head of sales counts on the phone side, per manager.
//!
//! From each finished call ([`salespulse_events::Call`]) a manager's [`CallState`] counts calls by
//! direction and status, talk time, and successful contacts (answered calls whose talk time is at
//! least the configured threshold, 40 s by default; the threshold itself counts). Every number is
//! kept twice over: as monotonic totals since the manager appeared (for PromQL's `rate()` and
//! `increase()`) and in the configured sliding windows (read at scrape time against the wall
//! clock). [`render`] writes the families from a snapshot; the metric names and their meaning are
//! documented in `docs/metrics.md`.
//!
//! Main types: [`CallsConfig`], [`CallState`], [`CallSnapshot`], [`CallRow`].
#![deny(missing_docs)]

use salespulse_core::expo::{MetricType, MetricWriter};
use salespulse_core::window::{Windowed, Windows};
use salespulse_events::{Call, CallDirection, CallStatus};

const DIRECTIONS: usize = 2;
const STATUSES: usize = 5;

/// How calls are judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallsConfig {
    /// An answered call with at least this much talk is a successful contact.
    pub successful_talk_ms: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig { successful_talk_ms: 40_000 }
    }
}

/// Call counters for one span of time (one bucket, one window, or all time).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls by `[direction][status]`, indexed by `CallDirection::index` and `CallStatus::index`.
    pub calls: [[u64; STATUSES]; DIRECTIONS],
    /// Successful contacts by direction.
    pub successful: [u64; DIRECTIONS],
    /// Talk time by direction, milliseconds.
    pub talk_ms: [u64; DIRECTIONS],
}

impl CallCounts {
    fn add_call(&mut self, call: &Call, successful: bool) {
        let d = call.direction.index();
        let s = call.status.index();
        self.calls[d][s] = self.calls[d][s].saturating_add(1);
        self.talk_ms[d] = self.talk_ms[d].saturating_add(call.talk_ms);
        if successful {
            self.successful[d] = self.successful[d].saturating_add(1);
        }
    }

    fn add(&mut self, other: &CallCounts) {
        for d in 0..DIRECTIONS {
            for s in 0..STATUSES {
                self.calls[d][s] = self.calls[d][s].saturating_add(other.calls[d][s]);
            }
            self.successful[d] = self.successful[d].saturating_add(other.successful[d]);
            self.talk_ms[d] = self.talk_ms[d].saturating_add(other.talk_ms[d]);
        }
    }

    /// Calls of any status in direction `d`.
    fn calls_in(&self, d: usize) -> u64 {
        self.calls[d].iter().sum()
    }
}

/// One manager's call state: totals and windows.
#[derive(Debug, Clone)]
pub struct CallState {
    totals: CallCounts,
    windows: Windowed<CallCounts>,
}

impl CallState {
    /// Empty state for the configured windows.
    pub fn new(windows: &Windows) -> Self {
        CallState { totals: CallCounts::default(), windows: Windowed::new(windows) }
    }

    /// Applies one call that happened at `event_ms`, seen at wall-clock `now_ms`. Returns in how
    /// many windows it landed (0: late for all; the totals count it anyway).
    pub fn apply(&mut self, windows: &Windows, config: &CallsConfig, call: &Call, event_ms: i64, now_ms: i64) -> usize {
        let successful = is_successful(config, call);
        self.totals.add_call(call, successful);
        self.windows.update(windows, event_ms, now_ms, |bucket| bucket.add_call(call, successful))
    }

    /// The values a scrape at `now_ms` exports.
    pub fn snapshot(&self, windows: &Windows, now_ms: i64) -> CallSnapshot {
        let per_window = (0..windows.specs().len())
            .map(|i| {
                let mut sum = CallCounts::default();
                self.windows.fold(windows, i, now_ms, |bucket| sum.add(bucket));
                sum
            })
            .collect();
        CallSnapshot { totals: self.totals, windows: per_window }
    }

    /// Bytes this state holds, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.windows.heap_bytes()
    }
}

/// Whether `call` is a successful contact: answered, with talk time at or above the threshold.
pub fn is_successful(config: &CallsConfig, call: &Call) -> bool {
    call.status == CallStatus::Answered && call.talk_ms >= config.successful_talk_ms
}

/// A manager's call values at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSnapshot {
    /// Since the manager appeared.
    pub totals: CallCounts,
    /// One entry per configured window, in configured order.
    pub windows: Vec<CallCounts>,
}

impl CallSnapshot {
    /// Adds `other` (the same manager seen through another partition).
    pub fn merge(&mut self, other: &CallSnapshot) {
        self.totals.add(&other.totals);
        for (mine, theirs) in self.windows.iter_mut().zip(&other.windows) {
            mine.add(theirs);
        }
    }
}

/// One manager's row in a scrape.
#[derive(Debug, Clone, Copy)]
pub struct CallRow<'a> {
    /// The `manager` label.
    pub manager: &'a str,
    /// The `team` label; omitted when `None`.
    pub team: Option<&'a str>,
    /// The values.
    pub calls: &'a CallSnapshot,
}

/// Writes the call families for `rows`. Label sets that never occurred (a direction or status a
/// manager never had) are not written; once they occurred, their windowed gauges stay and decay to 0.
pub fn render(rows: &[CallRow<'_>], windows: &Windows, out: &mut MetricWriter) {
    let specs = windows.specs();

    out.family(
        "salespulse_calls_total",
        "Finished calls since the manager appeared, by direction and status.",
        MetricType::Counter,
    );
    for_each_status(rows, |row, dir, status| {
        let value = row.calls.totals.calls[dir.index()][status.index()];
        let mut labels = Labels::new(row);
        labels.push("direction", dir.as_str()).push("status", status.as_str());
        out.sample("salespulse_calls_total", labels.as_slice(), value as f64);
    });

    out.family(
        "salespulse_call_talk_seconds_total",
        "Talk time of finished calls since the manager appeared, seconds.",
        MetricType::Counter,
    );
    for_each_direction(rows, |row, dir| {
        let mut labels = Labels::new(row);
        labels.push("direction", dir.as_str());
        out.sample(
            "salespulse_call_talk_seconds_total",
            labels.as_slice(),
            seconds(row.calls.totals.talk_ms[dir.index()]),
        );
    });

    out.family(
        "salespulse_successful_contacts_total",
        "Answered calls with talk time at or above the successful-contact threshold, since the manager appeared.",
        MetricType::Counter,
    );
    for_each_direction(rows, |row, dir| {
        let mut labels = Labels::new(row);
        labels.push("direction", dir.as_str());
        out.sample(
            "salespulse_successful_contacts_total",
            labels.as_slice(),
            row.calls.totals.successful[dir.index()] as f64,
        );
    });

    out.family(
        "salespulse_window_calls",
        "Finished calls in the sliding window, by direction and status.",
        MetricType::Gauge,
    );
    for_each_status(rows, |row, dir, status| {
        for (spec, counts) in specs.iter().zip(&row.calls.windows) {
            let mut labels = Labels::new(row);
            labels.push("direction", dir.as_str()).push("status", status.as_str()).push("window", &spec.label);
            out.sample("salespulse_window_calls", labels.as_slice(), counts.calls[dir.index()][status.index()] as f64);
        }
    });

    out.family(
        "salespulse_window_call_talk_seconds",
        "Talk time of finished calls in the sliding window, seconds.",
        MetricType::Gauge,
    );
    for_each_direction(rows, |row, dir| {
        for (spec, counts) in specs.iter().zip(&row.calls.windows) {
            let mut labels = Labels::new(row);
            labels.push("direction", dir.as_str()).push("window", &spec.label);
            out.sample("salespulse_window_call_talk_seconds", labels.as_slice(), seconds(counts.talk_ms[dir.index()]));
        }
    });

    out.family(
        "salespulse_window_successful_contacts",
        "Answered calls with talk time at or above the successful-contact threshold, in the sliding window.",
        MetricType::Gauge,
    );
    for_each_direction(rows, |row, dir| {
        for (spec, counts) in specs.iter().zip(&row.calls.windows) {
            let mut labels = Labels::new(row);
            labels.push("direction", dir.as_str()).push("window", &spec.label);
            out.sample(
                "salespulse_window_successful_contacts",
                labels.as_slice(),
                counts.successful[dir.index()] as f64,
            );
        }
    });
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

fn for_each_status<'a>(rows: &[CallRow<'a>], mut visit: impl FnMut(&CallRow<'a>, CallDirection, CallStatus)) {
    for row in rows {
        for dir in CallDirection::ALL {
            for status in CallStatus::ALL {
                if row.calls.totals.calls[dir.index()][status.index()] > 0 {
                    visit(row, dir, status);
                }
            }
        }
    }
}

/// A fixed-capacity label list: no allocation per sample.
struct Labels<'a> {
    items: [(&'a str, &'a str); 5],
    len: usize,
}

impl<'a> Labels<'a> {
    fn new(row: &CallRow<'a>) -> Self {
        let mut labels = Labels { items: [("", ""); 5], len: 0 };
        labels.push("manager", row.manager);
        if let Some(team) = row.team {
            labels.push("team", team);
        }
        labels
    }

    fn push(&mut self, key: &'a str, value: &'a str) -> &mut Self {
        self.items[self.len] = (key, value);
        self.len += 1;
        self
    }

    fn as_slice(&self) -> &[(&'a str, &'a str)] {
        &self.items[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salespulse_core::expo::Format;

    const T0: i64 = 1_700_000_000_000;

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

    #[test]
    fn successful_contact_threshold_is_inclusive() {
        let config = CallsConfig::default();
        for (status, talk_ms, expected) in [
            (CallStatus::Answered, 40_000, true),
            (CallStatus::Answered, 39_999, false),
            (CallStatus::Answered, 39_900, false),
            (CallStatus::Answered, 600_000, true),
            (CallStatus::Missed, 60_000, false),
            (CallStatus::Busy, 0, false),
        ] {
            assert_eq!(
                is_successful(&config, &call(CallDirection::Inbound, status, talk_ms)),
                expected,
                "{status:?} {talk_ms}"
            );
        }
    }

    #[test]
    fn totals_and_windows() {
        let windows = Windows::parse(&["5m", "1h"]).unwrap();
        let config = CallsConfig::default();
        let mut state = CallState::new(&windows);
        let answered = call(CallDirection::Outbound, CallStatus::Answered, 45_000);
        assert_eq!(state.apply(&windows, &config, &answered, T0 - 10_000, T0), 2);
        assert_eq!(state.apply(&windows, &config, &answered, T0 - 20 * 60_000, T0), 1);
        assert_eq!(
            state.apply(
                &windows,
                &config,
                &call(CallDirection::Inbound, CallStatus::Missed, 0),
                T0 - 2 * 3_600_000,
                T0
            ),
            0
        );
        let snap = state.snapshot(&windows, T0);
        assert_eq!(snap.totals.calls[1][0], 2);
        assert_eq!(snap.totals.calls[0][1], 1);
        assert_eq!(snap.totals.successful, [0, 2]);
        assert_eq!(snap.totals.talk_ms, [0, 90_000]);
        assert_eq!(snap.windows[0].calls[1][0], 1);
        assert_eq!(snap.windows[1].calls[1][0], 2);
        assert_eq!(snap.windows[1].successful, [0, 2]);
        assert_eq!(snap.windows[1].calls[0][1], 0);
    }

    #[test]
    fn render_writes_only_label_sets_that_occurred() {
        let windows = Windows::parse(&["5m"]).unwrap();
        let config = CallsConfig::default();
        let mut state = CallState::new(&windows);
        state.apply(&windows, &config, &call(CallDirection::Inbound, CallStatus::Answered, 40_500), T0, T0);
        let snap = state.snapshot(&windows, T0);
        let mut out = MetricWriter::new(Format::Text);
        render(&[CallRow { manager: "ivanov", team: Some("north"), calls: &snap }], &windows, &mut out);
        let body = out.finish();
        let samples: Vec<&str> = body.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            vec![
                r#"salespulse_calls_total{manager="ivanov",team="north",direction="inbound",status="answered"} 1"#,
                r#"salespulse_call_talk_seconds_total{manager="ivanov",team="north",direction="inbound"} 40.5"#,
                r#"salespulse_successful_contacts_total{manager="ivanov",team="north",direction="inbound"} 1"#,
                r#"salespulse_window_calls{manager="ivanov",team="north",direction="inbound",status="answered",window="5m"} 1"#,
                r#"salespulse_window_call_talk_seconds{manager="ivanov",team="north",direction="inbound",window="5m"} 40.5"#,
                r#"salespulse_window_successful_contacts{manager="ivanov",team="north",direction="inbound",window="5m"} 1"#,
            ]
        );
        // Later the window decays to zero but the series stay.
        let later = state.snapshot(&windows, T0 + 3_600_000);
        let mut out = MetricWriter::new(Format::Text);
        render(&[CallRow { manager: "ivanov", team: None, calls: &later }], &windows, &mut out);
        let body = out.finish();
        assert!(
            body.contains(
                r#"salespulse_window_calls{manager="ivanov",direction="inbound",status="answered",window="5m"} 0"#
            ),
            "{body}"
        );
    }

    #[test]
    fn merge_adds_partitions() {
        let windows = Windows::parse(&["5m"]).unwrap();
        let config = CallsConfig::default();
        let mut a = CallState::new(&windows);
        let mut b = CallState::new(&windows);
        a.apply(&windows, &config, &call(CallDirection::Inbound, CallStatus::Answered, 50_000), T0, T0);
        b.apply(&windows, &config, &call(CallDirection::Inbound, CallStatus::Answered, 10_000), T0, T0);
        let mut snap = a.snapshot(&windows, T0);
        snap.merge(&b.snapshot(&windows, T0));
        assert_eq!(snap.totals.calls[0][0], 2);
        assert_eq!(snap.windows[0].talk_ms[0], 60_000);
        assert_eq!(snap.windows[0].successful[0], 1);
    }
}
