//! Message metrics: what a head of sales counts on the chat side, per manager.
//!
//! From each chat message ([`salespulse_events::Message`]) a manager's [`MessageState`] counts
//! messages by channel and direction, new dialogs, responses (the first reply after a client's
//! question) with their raw and working-hours response times, responses within the service-level
//! target, and, at scrape time, the dialogs whose client is waiting for an answer now. Totals are
//! monotonic counters since the manager appeared; the headline numbers are also kept in the
//! configured windows ([`MessageExport`]), read at scrape time against the wall clock.
//!
//! Joining messages into dialogs needs per-dialog state: it is bounded per manager (at most
//! [`MessagesConfig::max_dialogs_per_manager`] dialogs, the least recently active evicted beyond
//! it, idle ones dropped after the idle gap) and kept behind a mutex that only the partition's
//! writer and a scrape take. How questions and replies are matched, out-of-order arrival included,
//! is described in the `dialogs` module and in `docs/metrics.md` (section "Messages").
//!
//! Channels are label values from the events (`[a-z0-9_.-]{1,64}`); a manager's state keeps at
//! most [`MAX_CHANNELS`] distinct ones, later ones (and a channel literally named `other`) count
//! under `channel="other"`.
//!
//! Main types: [`Messages`] (configuration and the shared layouts), [`MessageState`] (one manager),
//! [`MessageSnapshot`] and [`MessageRow`] (a scrape), [`WorkingHours`] (the schedule of the
//! working-hours response time). Names and meanings are in `docs/metrics.md`.
#![deny(missing_docs)]

mod dialogs;
mod hours;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use salespulse_core::expo::{label_prefix, MetricType, MetricWriter};
use salespulse_core::histogram::{HistogramTotals, LogBuckets, WindowHistogram, WindowedHistogram};
use salespulse_core::single_writer::add as bump;
use salespulse_core::window::{Counters, Layout, ReadPlan, Windows};
use salespulse_events::{Message, MessageDirection};

use dialogs::{Dialogs, JoinRules};

pub use dialogs::{DialogStats, RING};
pub use hours::{WorkingHours, WorkingHoursError};

/// Distinct channels kept per manager state; further ones count as [`OTHER_CHANNEL`].
pub const MAX_CHANNELS: usize = 16;
/// The channel label of messages beyond [`MAX_CHANNELS`].
pub const OTHER_CHANNEL: &str = "other";

const DIRECTIONS: usize = 2;
/// Windowed counters per bucket: messages in, messages out, new dialogs, responses, responses
/// within the target.
const DIM_MESSAGES: [usize; DIRECTIONS] = [0, 1];
const DIM_NEW_DIALOGS: usize = 2;
const DIM_RESPONSES: usize = 3;
const DIM_WITHIN_TARGET: usize = 4;
const DIMS: usize = 5;
/// The exported quantiles and their label values.
const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99")];
/// The label naming the quantile of `salespulse_window_response_time_seconds`. Not `quantile`:
/// `promtool check metrics` (run on the scrape by the broker tests) refuses that label outside a
/// summary, and these are gauges, not a summary (their window's count is no counter).
const QUANTILE_LABEL: &str = "q";

/// Which clock a response time is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hours {
    /// Wall-clock time from question to reply.
    All,
    /// Only the time inside the [`WorkingHours`] schedule.
    Working,
}

impl Hours {
    /// Both, in index order.
    pub const ALL: [Hours; 2] = [Hours::All, Hours::Working];

    /// The `hours` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Hours::All => "all",
            Hours::Working => "working",
        }
    }

    /// Position in [`Hours::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Which windows each windowed message family exports, by window label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageExport {
    /// `salespulse_window_messages{direction}`.
    pub messages: Vec<String>,
    /// `salespulse_window_new_dialogs`.
    pub new_dialogs: Vec<String>,
    /// `salespulse_window_response_time_seconds{hours,quantile}`; each window is one windowed
    /// histogram ring per hours variant, the most memory-hungry part of the state.
    pub response_time: Vec<String>,
    /// `salespulse_window_service_level` and `salespulse_window_responses`.
    pub service_level: Vec<String>,
    /// The `q` values `salespulse_window_response_time_seconds` exports (`0.5`, `0.9`, `0.99`):
    /// each is one series per manager, `hours` and window. Default `0.5` and `0.9`; a p99 of one
    /// manager's hour of replies rests on a handful of them.
    pub response_time_quantiles: Vec<String>,
    /// The `hours` values `salespulse_window_response_time_seconds` exports (`all`, `working`).
    /// Default `all`; the team histogram `salespulse_response_time_seconds` has both.
    pub response_time_hours: Vec<String>,
}

impl Default for MessageExport {
    /// With all default windows configured: 4 + 1 + 2 + 4 = 11 windowed series per manager.
    fn default() -> Self {
        let labels = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        MessageExport {
            messages: labels(&["1h", "today"]),
            new_dialogs: labels(&["today"]),
            response_time: labels(&["1h"]),
            service_level: labels(&["1h", "today"]),
            response_time_quantiles: labels(&["0.5", "0.9"]),
            response_time_hours: labels(&["all"]),
        }
    }
}

/// How messages are joined, judged and exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesConfig {
    /// A dialog with no message for this long (event time) is over: its next message starts a new
    /// dialog, and a question in it stops waiting. Default 24 h.
    pub dialog_idle_gap_ms: i64,
    /// A response within this time (raw, inclusive) meets the service level. Default 5 min.
    pub service_level_target_ms: i64,
    /// The schedule of `hours="working"` response times.
    pub working_hours: WorkingHours,
    /// Dialogs tracked per manager (per partition); beyond it the least recently active goes.
    /// Default 2000.
    pub max_dialogs_per_manager: usize,
    /// Which windows each windowed family exports.
    pub export: MessageExport,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            dialog_idle_gap_ms: 24 * 3_600_000,
            service_level_target_ms: 5 * 60_000,
            working_hours: WorkingHours::default(),
            max_dialogs_per_manager: 2000,
            export: MessageExport::default(),
        }
    }
}

pub use salespulse_core::window::ExportError;

/// The message stream's configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessagesError {
    /// An export list names a window that is not configured.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A value is out of range.
    #[error("messages: {field} {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The message stream's configuration and layouts, shared by all managers.
#[derive(Debug, Clone)]
pub struct Messages {
    gap_ms: i64,
    target_ms: i64,
    working_hours: WorkingHours,
    join: JoinRules,
    /// Windowed counters ([`DIMS`] per bucket) of the messages, new-dialog and service-level
    /// windows.
    layout: Layout,
    /// Windowed response-time histograms: the response-time windows only.
    response_layout: Layout,
    /// No window: per-channel all-time response-time histograms.
    totals_layout: Layout,
    buckets: LogBuckets,
    /// `le` label values: the finite bounds in seconds, then `+Inf`.
    le: Vec<String>,
    /// Hashes `(channel, dialog_id)` into dialog keys; random per process.
    keys: RandomState,
    /// Per family, the exported windows as `(position in its layout's windows, label)`.
    messages: Vec<(usize, String)>,
    new_dialogs: Vec<(usize, String)>,
    service_level: Vec<(usize, String)>,
    response_time: Vec<(usize, String)>,
    /// The exported `q` and `hours` of `salespulse_window_response_time_seconds`.
    response_quantiles: Vec<(f64, &'static str)>,
    response_hours: Vec<Hours>,
    /// Channel names shared by every manager's channel states (see [`Messages::channel_name`]).
    channel_names: Arc<Mutex<Vec<Arc<str>>>>,
}

/// Distinct channel names shared between managers; names beyond these get their own copy.
const SHARED_CHANNEL_NAMES: usize = 256;

impl Messages {
    /// Resolves the export lists against `windows`. A label that is not configured is an error,
    /// except in the defaults, which export what exists of them.
    pub fn new(windows: &Windows, config: &MessagesConfig) -> Result<Messages, MessagesError> {
        if config.dialog_idle_gap_ms <= 0 {
            return Err(MessagesError::Invalid { field: "dialog_idle_gap", reason: "must be positive" });
        }
        if config.service_level_target_ms < 0 {
            return Err(MessagesError::Invalid { field: "service_level_target", reason: "must not be negative" });
        }
        if config.max_dialogs_per_manager == 0 {
            return Err(MessagesError::Invalid { field: "max_dialogs_per_manager", reason: "must be at least 1" });
        }
        // Only the window lists decide whether unconfigured windows are an error.
        let defaults = MessageExport::default();
        let strict = MessageExport {
            response_time_quantiles: defaults.response_time_quantiles.clone(),
            response_time_hours: defaults.response_time_hours.clone(),
            ..config.export.clone()
        } != defaults;
        let response_quantiles = config
            .export
            .response_time_quantiles
            .iter()
            .map(|q| QUANTILES.iter().copied().find(|(_, label)| label == q))
            .collect::<Option<Vec<_>>>()
            .ok_or(MessagesError::Invalid { field: "response_time_quantiles", reason: "must be 0.5, 0.9 or 0.99" })?;
        let response_hours = config
            .export
            .response_time_hours
            .iter()
            .map(|h| Hours::ALL.into_iter().find(|hours| hours.as_str() == h))
            .collect::<Option<Vec<_>>>()
            .ok_or(MessagesError::Invalid { field: "response_time_hours", reason: "must be all or working" })?;
        let resolve = |family, labels: &[String]| windows.resolve_export(family, labels, strict);
        let messages = resolve("messages", &config.export.messages)?;
        let new_dialogs = resolve("new_dialogs", &config.export.new_dialogs)?;
        let response_time = resolve("response_time", &config.export.response_time)?;
        let service_level = resolve("service_level", &config.export.service_level)?;

        let mut specs: Vec<usize> =
            messages.iter().chain(&new_dialogs).chain(&service_level).map(|&(s, _)| s).collect();
        specs.sort_unstable();
        specs.dedup();
        let layout = Layout::new(windows, DIMS, &specs);
        let mut response_specs: Vec<usize> = response_time.iter().map(|&(s, _)| s).collect();
        response_specs.sort_unstable();
        response_specs.dedup();
        let buckets = LogBuckets::latency();
        let response_layout = WindowedHistogram::layout(windows, &buckets, &response_specs);
        let totals_layout = WindowedHistogram::layout(windows, &buckets, &[]);
        let position = |layout: &Layout, list: Vec<(usize, String)>| -> Vec<(usize, String)> {
            list.into_iter()
                .filter_map(|(spec, label)| Some((layout.specs().iter().position(|&s| s == spec)?, label)))
                .collect()
        };
        let le =
            buckets.upper_bounds_seconds().map(|b| b.to_string()).chain(std::iter::once("+Inf".to_owned())).collect();
        Ok(Messages {
            gap_ms: config.dialog_idle_gap_ms,
            target_ms: config.service_level_target_ms,
            working_hours: config.working_hours.clone(),
            join: JoinRules::new(config.dialog_idle_gap_ms, config.max_dialogs_per_manager),
            messages: position(&layout, messages),
            new_dialogs: position(&layout, new_dialogs),
            service_level: position(&layout, service_level),
            response_time: position(&response_layout, response_time),
            response_quantiles,
            response_hours,
            layout,
            response_layout,
            totals_layout,
            buckets,
            le,
            keys: RandomState::new(),
            channel_names: Arc::default(),
        })
    }

    /// Empty state for a new manager.
    pub fn new_state(&self) -> MessageState {
        MessageState {
            channels: std::array::from_fn(|_| OnceLock::new()),
            windows: Counters::new(&self.layout),
            response_times: Hours::ALL
                .map(|hours| self.keeps(hours).then(|| WindowedHistogram::new(&self.response_layout, &self.buckets))),
            dialogs: Mutex::new(Dialogs::default()),
        }
    }

    /// Whether managers keep a windowed response-time histogram of `hours`: `all` always (the
    /// JSON view reads its quantiles), `working` only when `salespulse_window_response_time_seconds`
    /// exports it (each is about 4 KiB per manager, and an update per reply).
    fn keeps(&self, hours: Hours) -> bool {
        hours == Hours::All || self.response_hours.contains(&hours)
    }

    /// The response-time histogram buckets.
    pub fn buckets(&self) -> &LogBuckets {
        &self.buckets
    }

    /// The working schedule of `hours="working"`.
    pub fn working_hours(&self) -> &WorkingHours {
        &self.working_hours
    }

    /// Whether a response that took `raw_ms` meets the service level: at or under the target.
    pub fn within_target(&self, raw_ms: i64) -> bool {
        raw_ms <= self.target_ms
    }

    /// Applies one message that happened at `event_ms` (its `occurred_at`), seen at wall-clock
    /// `now_ms`. Only one thread may apply to a given state at a time (see
    /// `salespulse_core::window::Counters`); the engine applies a partition's records in order.
    ///
    /// Returns how many active dialogs it evicted at `max_dialogs_per_manager`.
    pub fn apply(&self, state: &MessageState, windows: &Windows, message: &Message, event_ms: i64, now_ms: i64) -> u64 {
        let d = message.direction.index();
        let channel = self.channel(state, &message.channel);
        bump(&channel.messages[d], 1);
        let key = self.dialog_key(&message.channel, &message.dialog_id);
        let (joined, evicted) = {
            let mut dialogs = state.dialogs.lock();
            let before = dialogs.evictions();
            let joined = dialogs.apply(&self.join, key, message.direction, message.new_dialog, event_ms);
            (joined, dialogs.evictions() - before)
        };
        let mut deltas = [0u32; DIMS];
        deltas[DIM_MESSAGES[d]] = 1;
        if joined.new_dialog {
            bump(&channel.new_dialogs, 1);
            deltas[DIM_NEW_DIALOGS] = 1;
        }
        if let Some(response) = joined.response {
            let (question, reply) = (response.question_ms, response.reply_ms);
            let raw = reply.saturating_sub(question).max(0);
            let working = self.working_hours.working_ms(question, reply);
            let within = self.within_target(raw);
            bump(&channel.responses, 1);
            bump(&channel.within_target, u64::from(within));
            let mut counted = [0u32; DIMS];
            counted[DIM_RESPONSES] = 1;
            counted[DIM_WITHIN_TARGET] = u32::from(within);
            if reply == event_ms {
                deltas[DIM_RESPONSES] = counted[DIM_RESPONSES];
                deltas[DIM_WITHIN_TARGET] = counted[DIM_WITHIN_TARGET];
            } else {
                // The reply arrived before its question: the response counts at the reply's time.
                state.windows.add(&self.layout, windows, reply, now_ms, &counted);
            }
            for (hours, value) in [(Hours::All, raw), (Hours::Working, working)] {
                let h = hours.index();
                if let Some(histogram) = &state.response_times[h] {
                    histogram.observe(&self.response_layout, windows, &self.buckets, value, reply, now_ms);
                }
                channel.response_times[h].observe(&self.totals_layout, windows, &self.buckets, value, reply, now_ms);
            }
        }
        state.windows.add(&self.layout, windows, event_ms, now_ms, &deltas);
        evicted
    }

    /// The values a scrape at the instant of `plan`, wall-clock `now_ms`, exports. Takes the
    /// state's dialog lock for one pass over its dialogs.
    pub fn snapshot(&self, state: &MessageState, windows: &Windows, plan: &ReadPlan, now_ms: i64) -> MessageSnapshot {
        let mut channels: Vec<ChannelSnapshot> = state
            .channels
            .iter()
            .filter_map(|slot| slot.get())
            .map(|c| {
                let responses = load(&c.responses);
                ChannelSnapshot {
                    channel: Arc::clone(&c.name),
                    messages: c.messages.each_ref().map(load),
                    new_dialogs: load(&c.new_dialogs),
                    responses,
                    within_target: load(&c.within_target),
                    // No allocation for a channel without responses (most of a manager's channels
                    // at the start of the day).
                    response_times: match responses {
                        0 => Default::default(),
                        _ => c.response_times.each_ref().map(WindowedHistogram::totals),
                    },
                }
            })
            .collect();
        channels.sort_unstable_by(|a, b| a.channel.cmp(&b.channel));
        let mut per_window = vec![0; self.layout.specs().len() * DIMS];
        state.windows.read(&self.layout, windows, plan, &mut per_window);
        let response_times = state.response_times.each_ref().map(|h| {
            h.as_ref().map_or_else(Vec::new, |h| h.read_windows(&self.response_layout, windows, &self.buckets, plan))
        });
        let dialogs = state.dialogs.lock().stats(self.gap_ms, now_ms);
        MessageSnapshot { channels, windows: per_window, response_times, dialogs }
    }

    /// Messages of `direction` in window `label` of `snapshot`; `None` where the `messages`
    /// family does not export that window.
    pub fn window_messages(&self, snapshot: &MessageSnapshot, label: &str, direction: MessageDirection) -> Option<u64> {
        let (position, _) = self.messages.iter().find(|(_, l)| l == label)?;
        snapshot.windows.get(position * DIMS + DIM_MESSAGES[direction.index()]).copied()
    }

    /// The `q`-quantile of raw response times in window `label` of `snapshot`, seconds; `None`
    /// where the window is not exported or had no response.
    pub fn window_response_quantile(&self, snapshot: &MessageSnapshot, label: &str, q: f64) -> Option<f64> {
        let (position, _) = self.response_time.iter().find(|(_, l)| l == label)?;
        snapshot.response_times[Hours::All.index()].get(*position)?.quantile(&self.buckets, q)
    }

    /// Dialogs held in `state` (for `salespulse_join_state_entries{state="dialogs"}`).
    pub fn join_entries(&self, state: &MessageState) -> usize {
        state.dialogs.lock().len()
    }

    /// Bytes of one new manager's message state (no channel, no dialog yet).
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<MessageState>()
            + self.layout.bytes()
            + Hours::ALL.into_iter().filter(|&h| self.keeps(h)).count()
                * WindowedHistogram::bytes_for(&self.response_layout, &self.buckets)
    }

    /// Bytes one more channel adds to a manager's state.
    pub fn channel_bytes(&self) -> usize {
        std::mem::size_of::<ChannelState>()
            + Hours::ALL.len() * WindowedHistogram::bytes_for(&self.totals_layout, &self.buckets)
    }

    /// Bytes held by `state` now: [`Messages::state_bytes`], its channels, and its dialog table
    /// (estimated from the table's capacity). Channel names are not counted.
    pub fn held_bytes(&self, state: &MessageState) -> usize {
        let channels = state.channels.iter().filter(|slot| slot.get().is_some()).count();
        self.state_bytes() + channels * self.channel_bytes() + state.dialogs.lock().heap_bytes()
    }

    /// Writes the message families for `rows`. Per-manager label sets that never occurred (a
    /// direction or channel a manager never had) are not written; the window gauges of a manager
    /// who had a message stay and decay to 0, except the ratios and quantiles, which are omitted
    /// for a window without responses. The response-time histogram is written per team and channel
    /// (rows without a team together, without a `team` label), summed over the rows' managers.
    pub fn render(&self, rows: &[MessageRow<'_>], retired: &RetiredHistograms, out: &mut MetricWriter) {
        // Each manager's `manager`/`team` labels are rendered once, not per sample.
        let rows: Vec<Prefixed<'_, '_>> = rows
            .iter()
            .filter(|row| row.messages.any())
            .map(|row| Prefixed { row, labels: Labels::new(row).prefix() })
            .collect();

        out.family(
            "salespulse_messages_total",
            "Chat messages since the manager appeared, by channel and direction.",
            MetricType::Counter,
        );
        for row in &rows {
            for channel in &row.messages.channels {
                for dir in MessageDirection::ALL {
                    let value = channel.messages[dir.index()];
                    if value > 0 {
                        let labels = [("channel", &*channel.channel), ("direction", dir.as_str())];
                        out.sample_prefixed("salespulse_messages_total", &row.labels, &labels, value as f64);
                    }
                }
            }
        }

        out.family("salespulse_window_messages", "Chat messages in the window, by direction.", MetricType::Gauge);
        for row in &rows {
            for dir in MessageDirection::ALL {
                if row.messages.messages(dir) == 0 {
                    continue;
                }
                for (position, label) in &self.messages {
                    let labels = [("direction", dir.as_str()), ("window", label.as_str())];
                    let value = row.messages.windows[position * DIMS + DIM_MESSAGES[dir.index()]];
                    out.sample_prefixed("salespulse_window_messages", &row.labels, &labels, value as f64);
                }
            }
        }

        self.per_channel(
            &rows,
            out,
            "salespulse_new_dialogs_total",
            "Dialogs started since the manager appeared, by channel.",
            |c| c.new_dialogs,
        );
        self.windowed(
            &rows,
            out,
            "salespulse_window_new_dialogs",
            "Dialogs started in the window.",
            &self.new_dialogs,
            DIM_NEW_DIALOGS,
        );

        out.family(
            "salespulse_outbound_messages_per_dialog",
            "Mean outbound messages per active dialog that has at least one, over the dialogs active within the idle gap.",
            MetricType::Gauge,
        );
        for row in &rows {
            let stats = &row.messages.dialogs;
            if stats.with_outbound > 0 {
                let value = stats.outbound_messages as f64 / stats.with_outbound as f64;
                out.sample_prefixed("salespulse_outbound_messages_per_dialog", &row.labels, &[], value);
            }
        }

        out.family(
            "salespulse_dialogs_waiting",
            "Active dialogs whose client's latest question is not answered yet.",
            MetricType::Gauge,
        );
        for row in &rows {
            let value = row.messages.dialogs.waiting as f64;
            out.sample_prefixed("salespulse_dialogs_waiting", &row.labels, &[], value);
        }
        out.family(
            "salespulse_oldest_wait_seconds",
            "Time since the oldest unanswered client question of an active dialog, seconds; 0 when none waits.",
            MetricType::Gauge,
        );
        for row in &rows {
            let value = row.messages.dialogs.oldest_wait_ms as f64 / 1000.0;
            out.sample_prefixed("salespulse_oldest_wait_seconds", &row.labels, &[], value);
        }

        self.per_channel(
            &rows,
            out,
            "salespulse_responses_total",
            "Replies to client questions since the manager appeared, by channel.",
            |c| c.responses,
        );
        self.per_channel(
            &rows,
            out,
            "salespulse_responses_within_target_total",
            "Replies within the service-level target since the manager appeared, by channel.",
            |c| c.within_target,
        );
        self.windowed(
            &rows,
            out,
            "salespulse_window_responses",
            "Replies to client questions in the window.",
            &self.service_level,
            DIM_RESPONSES,
        );

        out.family(
            "salespulse_window_service_level",
            "Share of the window's replies within the service-level target; absent without replies.",
            MetricType::Gauge,
        );
        for row in &rows {
            for (position, label) in &self.service_level {
                let responses = row.messages.windows[position * DIMS + DIM_RESPONSES];
                if responses > 0 {
                    let within = row.messages.windows[position * DIMS + DIM_WITHIN_TARGET];
                    let value = within as f64 / responses as f64;
                    out.sample_prefixed("salespulse_window_service_level", &row.labels, &[("window", label)], value);
                }
            }
        }

        out.family(
            "salespulse_window_response_time_seconds",
            "Estimated quantiles of the response time of the window's replies, seconds; absent without replies.",
            MetricType::Gauge,
        );
        for row in &rows {
            for &hours in &self.response_hours {
                for (position, label) in &self.response_time {
                    let Some(window) = row.messages.response_times[hours.index()].get(*position) else { continue };
                    for &(q, q_label) in &self.response_quantiles {
                        // An interpolated estimate: milliseconds are precision enough.
                        if let Some(value) = window.quantile(&self.buckets, q).map(|v| (v * 1000.0).round() / 1000.0) {
                            let labels =
                                [("hours", hours.as_str()), (QUANTILE_LABEL, q_label), ("window", label.as_str())];
                            out.sample_prefixed("salespulse_window_response_time_seconds", &row.labels, &labels, value);
                        }
                    }
                }
            }
        }

        self.render_histograms(&rows, retired, out);
    }

    /// `salespulse_response_time_seconds`: per team and channel, summed over managers.
    fn render_histograms(&self, rows: &[Prefixed<'_, '_>], retired: &RetiredHistograms, out: &mut MetricWriter) {
        const NAME: &str = "salespulse_response_time_seconds";
        const BUCKET: &str = "salespulse_response_time_seconds_bucket";
        const SUM: &str = "salespulse_response_time_seconds_sum";
        const COUNT: &str = "salespulse_response_time_seconds_count";
        // Managers no longer held still count: the team histogram must never go down.
        let mut teams: BTreeMap<(Option<&str>, &str), [HistogramTotals; 2]> = retired
            .teams
            .iter()
            .map(|((team, channel), sums)| ((team.as_deref(), channel.as_str()), sums.clone()))
            .collect();
        for row in rows {
            for channel in row.messages.channels.iter().filter(|c| c.responses > 0) {
                let sums = teams.entry((row.team, &channel.channel)).or_default();
                for (sum, totals) in sums.iter_mut().zip(&channel.response_times) {
                    sum.merge(totals);
                }
            }
        }
        out.family(
            NAME,
            "Response time of replies to client questions since start, seconds, by team and channel.",
            MetricType::Histogram,
        );
        for ((team, channel), sums) in &teams {
            for hours in Hours::ALL {
                let totals = &sums[hours.index()];
                let labels = match team {
                    Some(team) => Labels::empty().with("team", team),
                    None => Labels::empty(),
                };
                let labels = labels.with("channel", channel).with("hours", hours.as_str());
                for (le, count) in self.le.iter().zip(totals.cumulative()) {
                    out.sample(BUCKET, labels.with("le", le).as_slice(), count as f64);
                }
                out.sample(SUM, labels.as_slice(), totals.sum_seconds);
                out.sample(COUNT, labels.as_slice(), totals.count as f64);
            }
        }
    }

    /// A counter per channel the manager had.
    fn per_channel(
        &self,
        rows: &[Prefixed<'_, '_>],
        out: &mut MetricWriter,
        name: &str,
        help: &str,
        value: impl Fn(&ChannelSnapshot) -> u64,
    ) {
        out.family(name, help, MetricType::Counter);
        for row in rows {
            for channel in &row.messages.channels {
                let labels = [("channel", &*channel.channel)];
                out.sample_prefixed(name, &row.labels, &labels, value(channel) as f64);
            }
        }
    }

    /// A windowed gauge without a direction.
    fn windowed(
        &self,
        rows: &[Prefixed<'_, '_>],
        out: &mut MetricWriter,
        name: &str,
        help: &str,
        exported: &[(usize, String)],
        dim: usize,
    ) {
        out.family(name, help, MetricType::Gauge);
        for row in rows {
            for (position, label) in exported {
                let value = row.messages.windows[position * DIMS + dim] as f64;
                out.sample_prefixed(name, &row.labels, &[("window", label)], value);
            }
        }
    }

    /// The channel's state, created on its first message; beyond [`MAX_CHANNELS`] the shared
    /// `other` one. Single writer: only `apply` creates channels.
    fn channel<'s>(&self, state: &'s MessageState, name: &str) -> &'s ChannelState {
        let (named, other) = state.channels.split_at(MAX_CHANNELS);
        if name != OTHER_CHANNEL && valid_channel(name) {
            for slot in named {
                match slot.get() {
                    Some(channel) if &*channel.name == name => return channel,
                    Some(_) => continue,
                    None => return slot.get_or_init(|| Box::new(self.new_channel(name))),
                }
            }
        }
        match other.first() {
            Some(slot) => slot.get_or_init(|| Box::new(self.new_channel(OTHER_CHANNEL))),
            // Unreachable: the array has MAX_CHANNELS + 1 slots.
            None => named[MAX_CHANNELS - 1].get_or_init(|| Box::new(self.new_channel(OTHER_CHANNEL))),
        }
    }

    fn new_channel(&self, name: &str) -> ChannelState {
        ChannelState {
            name: self.channel_name(name),
            messages: Default::default(),
            new_dialogs: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            within_target: AtomicU64::new(0),
            response_times: Hours::ALL.map(|_| WindowedHistogram::new(&self.totals_layout, &self.buckets)),
        }
    }

    /// `name` as an `Arc` shared by every manager with that channel: one allocation per name, so
    /// matching a message's channel (every message) and writing the label (every scrape) read
    /// memory that stays in cache, instead of a copy per manager and channel. At most
    /// [`SHARED_CHANNEL_NAMES`] names are shared, so random names cannot grow the list.
    fn channel_name(&self, name: &str) -> Arc<str> {
        let mut names = self.channel_names.lock();
        if let Some(known) = names.iter().find(|known| &***known == name) {
            return Arc::clone(known);
        }
        let name: Arc<str> = Arc::from(name);
        if names.len() < SHARED_CHANNEL_NAMES {
            names.push(Arc::clone(&name));
        }
        name
    }

    fn dialog_key(&self, channel: &str, dialog_id: &str) -> u64 {
        let mut hasher = self.keys.build_hasher();
        channel.hash(&mut hasher);
        dialog_id.hash(&mut hasher);
        hasher.finish()
    }
}

/// A channel the event contract allows as a label value: 1 to 64 bytes of `[a-z0-9_.-]`. The
/// decoder guarantees it; events built elsewhere (`Engine::ingest_event`) may not.
fn valid_channel(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

fn load(cell: &AtomicU64) -> u64 {
    cell.load(Ordering::Relaxed)
}

/// One manager's message state: per-channel totals, windowed counters and response-time
/// histograms (atomics, single writer), and the dialogs (behind a mutex).
#[derive(Debug)]
pub struct MessageState {
    /// [`MAX_CHANNELS`] named channels, then `other`; filled in order of first appearance.
    channels: [OnceLock<Box<ChannelState>>; MAX_CHANNELS + 1],
    windows: Counters,
    /// By [`Hours`]: over the response-time windows, all channels; `None` for hours that are
    /// neither exported nor read (see `Messages::keeps`).
    response_times: [Option<WindowedHistogram>; 2],
    dialogs: Mutex<Dialogs>,
}

/// One channel's totals in a manager's state.
#[derive(Debug)]
struct ChannelState {
    name: Arc<str>,
    messages: [AtomicU64; DIRECTIONS],
    new_dialogs: AtomicU64,
    responses: AtomicU64,
    within_target: AtomicU64,
    /// By [`Hours`]: all-time totals only.
    response_times: [WindowedHistogram; 2],
}

/// One channel's totals since the manager appeared.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSnapshot {
    /// The `channel` label.
    pub channel: Arc<str>,
    /// Messages by direction, indexed by `MessageDirection::index`.
    pub messages: [u64; DIRECTIONS],
    /// Dialogs started.
    pub new_dialogs: u64,
    /// Responses.
    pub responses: u64,
    /// Responses within the service-level target.
    pub within_target: u64,
    /// Response-time histograms by [`Hours`].
    pub response_times: [HistogramTotals; 2],
}

impl ChannelSnapshot {
    fn merge(&mut self, other: &ChannelSnapshot) {
        for (a, b) in self.messages.iter_mut().zip(other.messages) {
            *a = a.saturating_add(b);
        }
        self.new_dialogs = self.new_dialogs.saturating_add(other.new_dialogs);
        self.responses = self.responses.saturating_add(other.responses);
        self.within_target = self.within_target.saturating_add(other.within_target);
        for (a, b) in self.response_times.iter_mut().zip(&other.response_times) {
            a.merge(b);
        }
    }
}

/// A manager's message values at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageSnapshot {
    /// Totals per channel, by channel name.
    pub channels: Vec<ChannelSnapshot>,
    /// Windowed counters, window-major in the layout's window order.
    windows: Vec<u64>,
    /// Per [`Hours`], the response-time histogram of each response-time window.
    response_times: [Vec<WindowHistogram>; 2],
    /// The dialogs at the scrape's wall-clock instant.
    pub dialogs: DialogStats,
}

impl MessageSnapshot {
    /// Adds `other` (the same manager seen through another partition).
    pub fn merge(&mut self, other: &MessageSnapshot) {
        for theirs in &other.channels {
            match self.channels.binary_search_by(|c| c.channel.cmp(&theirs.channel)) {
                Ok(i) => self.channels[i].merge(theirs),
                Err(i) => self.channels.insert(i, theirs.clone()),
            }
        }
        for (a, b) in self.windows.iter_mut().zip(&other.windows) {
            *a = a.saturating_add(*b);
        }
        for (mine, theirs) in self.response_times.iter_mut().zip(&other.response_times) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.merge(b);
            }
        }
        self.dialogs.merge(&other.dialogs);
    }

    /// Messages in `direction` since the manager appeared, all channels.
    pub fn messages(&self, direction: MessageDirection) -> u64 {
        self.channels.iter().map(|c| c.messages[direction.index()]).sum()
    }

    fn any(&self) -> bool {
        self.channels.iter().any(|c| c.messages.iter().any(|&m| m > 0))
    }
}

/// The response-time totals of managers no longer held (evicted when idle, or dropped with their
/// partition), per team and channel, so the team histogram stays monotonic.
#[derive(Debug, Default, Clone)]
pub struct RetiredHistograms {
    teams: BTreeMap<(Option<String>, String), [HistogramTotals; 2]>,
}

impl RetiredHistograms {
    /// Keeps the response-time totals of a manager of `team` about to be dropped.
    pub fn retire(&mut self, team: Option<&str>, snapshot: &MessageSnapshot) {
        for channel in snapshot.channels.iter().filter(|c| c.responses > 0) {
            let sums = self.teams.entry((team.map(str::to_owned), channel.channel.to_string())).or_default();
            for (sum, totals) in sums.iter_mut().zip(&channel.response_times) {
                sum.merge(totals);
            }
        }
    }
}

/// One manager's row in a scrape.
#[derive(Debug, Clone, Copy)]
pub struct MessageRow<'a> {
    /// The `manager` label.
    pub manager: &'a str,
    /// The `team` label; omitted when `None`.
    pub team: Option<&'a str>,
    /// The values.
    pub messages: &'a MessageSnapshot,
}

/// A fixed-capacity label list: no allocation per sample.
#[derive(Clone, Copy)]
struct Labels<'a> {
    items: [(&'a str, &'a str); 6],
    len: usize,
}

impl<'a> Labels<'a> {
    fn empty() -> Self {
        Labels { items: [("", ""); 6], len: 0 }
    }

    fn new(row: &MessageRow<'a>) -> Self {
        let labels = Labels::empty().with("manager", row.manager);
        match row.team {
            Some(team) => labels.with("team", team),
            None => labels,
        }
    }

    fn with(mut self, key: &'a str, value: &'a str) -> Self {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = (key, value);
            self.len += 1;
        }
        self
    }

    fn as_slice(&self) -> &[(&'a str, &'a str)] {
        &self.items[..self.len]
    }

    /// The labels rendered once, for `MetricWriter::sample_prefixed`.
    fn prefix(&self) -> String {
        label_prefix(self.as_slice())
    }
}

/// A row with its `manager`/`team` labels already rendered.
struct Prefixed<'r, 'a> {
    row: &'r MessageRow<'a>,
    labels: String,
}

impl<'a> std::ops::Deref for Prefixed<'_, 'a> {
    type Target = MessageRow<'a>;

    fn deref(&self) -> &MessageRow<'a> {
        self.row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salespulse_core::expo::Format;
    use salespulse_core::window::WindowsConfig;
    use MessageDirection::{Inbound as In, Outbound as Out};

    /// 2026-11-23T12:00:00Z, a Monday.
    const T0: i64 = 1_795_435_200_000;
    const SECOND: i64 = 1_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;

    fn message(dialog: &str, channel: &str, direction: MessageDirection, new_dialog: Option<bool>) -> Message {
        Message {
            message_id: "m".into(),
            dialog_id: dialog.into(),
            channel: channel.into(),
            direction,
            client_id: Some("client-1".into()),
            new_dialog,
        }
    }

    fn export(
        messages: &[&str],
        new_dialogs: &[&str],
        response_time: &[&str],
        service_level: &[&str],
    ) -> MessageExport {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        MessageExport {
            messages: list(messages),
            new_dialogs: list(new_dialogs),
            response_time: list(response_time),
            service_level: list(service_level),
            // Every quantile and both clocks, so the tests see each series the state can give.
            response_time_quantiles: list(&["0.5", "0.9", "0.99"]),
            response_time_hours: list(&["all", "working"]),
        }
    }

    fn setup(sliding: &[&str], export: MessageExport) -> (Windows, Messages) {
        let windows = Windows::parse(sliding).unwrap();
        let messages = Messages::new(&windows, &MessagesConfig { export, ..MessagesConfig::default() }).unwrap();
        (windows, messages)
    }

    fn hour_only() -> (Windows, Messages) {
        setup(&["1h"], export(&["1h"], &["1h"], &["1h"], &["1h"]))
    }

    /// Applies `(dialog, channel, direction, flag, event time)` with the wall clock at `now`.
    fn feed(
        m: &Messages,
        windows: &Windows,
        state: &MessageState,
        now: i64,
        events: &[(&str, &str, MessageDirection, Option<bool>, i64)],
    ) {
        for &(dialog, channel, dir, flag, at) in events {
            m.apply(state, windows, &message(dialog, channel, dir, flag), at, now);
        }
    }

    fn snap(m: &Messages, windows: &Windows, state: &MessageState, now: i64) -> MessageSnapshot {
        m.snapshot(state, windows, &windows.plan(now), now)
    }

    fn channel<'a>(s: &'a MessageSnapshot, name: &str) -> &'a ChannelSnapshot {
        s.channels.iter().find(|c| &*c.channel == name).unwrap()
    }

    #[test]
    fn channel_names_are_one_allocation_shared_by_managers_up_to_a_bound() {
        let (windows, m) = hour_only();
        let now = 1_795_435_200_000;
        let (first, second) = (m.new_state(), m.new_state());
        for state in [&first, &second] {
            feed(&m, &windows, state, now, &[("d1", "whatsapp", In, None, now), ("d2", "telegram", In, None, now)]);
        }
        let (a, b) = (snap(&m, &windows, &first, now), snap(&m, &windows, &second, now));
        for name in ["whatsapp", "telegram"] {
            assert!(Arc::ptr_eq(&channel(&a, name).channel, &channel(&b, name).channel), "{name} is shared");
        }
        // Past the bound a name is still counted under its own label, only no longer shared.
        for i in 0..SHARED_CHANNEL_NAMES {
            m.channel_name(&format!("c{i}"));
        }
        assert_eq!(m.channel_names.lock().len(), SHARED_CHANNEL_NAMES);
        let third = m.new_state();
        feed(&m, &windows, &third, now, &[("d1", "max", In, None, now)]);
        assert_eq!(channel(&snap(&m, &windows, &third, now), "max").messages, [1, 0]);
        assert_eq!(m.channel_names.lock().len(), SHARED_CHANNEL_NAMES);
    }

    fn render(m: &Messages, rows: &[MessageRow<'_>]) -> String {
        let mut out = MetricWriter::new(Format::Text);
        m.render(rows, &RetiredHistograms::default(), &mut out);
        out.finish()
    }

    fn samples(body: &str) -> Vec<&str> {
        body.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn value(body: &str, series: &str) -> Option<f64> {
        body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn messages_and_new_dialogs_table() {
        let (windows, m) = hour_only();
        for (name, events, expected_messages, expected_new, expected_window) in [
            // (messages [in, out] per channel "wa", new dialogs, window [in, out, new])
            ("one inbound", vec![("d1", "wa", In, None, T0)], [1, 0], 1, [1, 0, 1]),
            (
                "a dialog of three",
                vec![
                    ("d1", "wa", In, None, T0 - 3 * MINUTE),
                    ("d1", "wa", Out, None, T0 - 2 * MINUTE),
                    ("d1", "wa", In, None, T0),
                ],
                [2, 1],
                1,
                [2, 1, 1],
            ),
            (
                "flag false never starts one",
                vec![("d1", "wa", Out, Some(false), T0 - MINUTE), ("d1", "wa", In, None, T0)],
                [1, 1],
                0,
                [1, 1, 0],
            ),
            (
                "flag true on a tracked flagged dialog restarts it",
                vec![("d1", "wa", In, Some(true), T0 - 10 * MINUTE), ("d1", "wa", In, Some(true), T0)],
                [2, 0],
                2,
                [2, 0, 2],
            ),
            (
                "idle for the gap: a new dialog (the old one is out of the window)",
                vec![("d1", "wa", In, None, T0 - 24 * HOUR), ("d1", "wa", In, None, T0)],
                [2, 0],
                2,
                [1, 0, 1],
            ),
            (
                "one minute short of the gap: the same dialog",
                vec![("d1", "wa", In, None, T0 - 24 * HOUR + MINUTE), ("d1", "wa", In, None, T0)],
                [2, 0],
                1,
                [1, 0, 0],
            ),
            (
                "two dialogs",
                vec![("d1", "wa", In, None, T0 - MINUTE), ("d2", "wa", Out, None, T0)],
                [1, 1],
                2,
                [1, 1, 2],
            ),
            (
                "same dialog id in another channel is another dialog",
                vec![("d1", "wa", In, None, T0 - MINUTE), ("d1", "tg", In, None, T0)],
                [1, 0],
                1,
                [2, 0, 2],
            ),
        ] {
            let state = m.new_state();
            feed(&m, &windows, &state, T0, &events);
            let s = snap(&m, &windows, &state, T0);
            let wa = channel(&s, "wa");
            assert_eq!((wa.messages, wa.new_dialogs), (expected_messages, expected_new), "{name}");
            assert_eq!(&s.windows[..3], &expected_window, "{name}");
        }
    }

    #[test]
    fn response_metrics_table() {
        let (windows, m) = hour_only();
        // (events on channel "wa", expected raw response times in ms, within target)
        for (name, events, expected_raw, expected_within) in [
            ("question and reply", vec![("d", In, T0 - 10 * MINUTE), ("d", Out, T0 - 8 * MINUTE)], vec![2 * MINUTE], 1),
            (
                "several questions before one reply count once, from the first",
                vec![
                    ("d", In, T0 - 10 * MINUTE),
                    ("d", In, T0 - 9 * MINUTE),
                    ("d", In, T0 - 8 * MINUTE),
                    ("d", Out, T0 - 4 * MINUTE),
                ],
                vec![6 * MINUTE],
                0,
            ),
            (
                "reply arrives before the question",
                vec![("d", Out, T0 - 5 * MINUTE), ("d", In, T0 - 7 * MINUTE)],
                vec![2 * MINUTE],
                1,
            ),
            (
                "reply in another dialog: no response",
                vec![("d", In, T0 - 10 * MINUTE), ("e", Out, T0 - 8 * MINUTE)],
                vec![],
                0,
            ),
            (
                "manager writes first: no response",
                vec![("d", Out, T0 - 10 * MINUTE), ("d", In, T0 - 8 * MINUTE)],
                vec![],
                0,
            ),
            (
                "exactly at the target is within",
                vec![("d", In, T0 - 10 * MINUTE), ("d", Out, T0 - 5 * MINUTE)],
                vec![5 * MINUTE],
                1,
            ),
            (
                "a millisecond over is not",
                vec![("d", In, T0 - 10 * MINUTE), ("d", Out, T0 - 5 * MINUTE + 1)],
                vec![5 * MINUTE + 1],
                0,
            ),
            (
                "two rounds, follow-ups answer nothing",
                vec![
                    ("d", In, T0 - 30 * MINUTE),
                    ("d", Out, T0 - 29 * MINUTE),
                    ("d", Out, T0 - 28 * MINUTE),
                    ("d", In, T0 - 20 * MINUTE),
                    ("d", Out, T0 - 10 * MINUTE),
                ],
                vec![MINUTE, 10 * MINUTE],
                1,
            ),
        ] {
            let state = m.new_state();
            for &(dialog, dir, at) in &events {
                m.apply(&state, &windows, &message(dialog, "wa", dir, None), at, T0);
            }
            let s = snap(&m, &windows, &state, T0);
            let wa = channel(&s, "wa");
            let count = expected_raw.len() as u64;
            let sum: i64 = expected_raw.iter().sum();
            assert_eq!((wa.responses, wa.within_target), (count, expected_within), "{name}");
            let raw = &wa.response_times[Hours::All.index()];
            assert_eq!((raw.count, raw.sum_seconds), (count, sum as f64 / 1000.0), "{name}");
            // A channel without responses reads no histogram: empty counts.
            let mut buckets = vec![0u64; if count == 0 { 0 } else { m.buckets().len() }];
            for &v in &expected_raw {
                buckets[m.buckets().index(v)] += 1;
            }
            assert_eq!(raw.counts, buckets, "{name}");
            // Monday noon UTC is working time: the working response time equals the raw one.
            assert_eq!(wa.response_times[Hours::Working.index()], *raw, "{name}");
            // Windowed: responses and within-target in the hour, and the same histogram.
            assert_eq!((s.windows[DIM_RESPONSES], s.windows[DIM_WITHIN_TARGET]), (count, expected_within), "{name}");
            assert_eq!(s.response_times[0][0].count, count, "{name}");
        }
    }

    #[test]
    fn working_hours_response_across_a_night_and_a_weekend() {
        // A week-long idle gap, so that a question can wait over a weekend.
        let windows = Windows::parse(&["1h"]).unwrap();
        let config = MessagesConfig {
            dialog_idle_gap_ms: 7 * 24 * HOUR,
            export: export(&[], &[], &["1h"], &["1h"]),
            ..MessagesConfig::default()
        };
        let m = Messages::new(&windows, &config).unwrap();
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        for (question, reply, working) in [
            // Tuesday 23:00 → Wednesday 09:05: 5 minutes of working time.
            ("2026-11-24T23:00:00Z", "2026-11-25T09:05:00Z", 5 * MINUTE),
            // Friday 17:30 → Monday 09:10: 30 + 10 minutes.
            ("2026-11-27T17:30:00Z", "2026-11-30T09:10:00Z", 40 * MINUTE),
            // Saturday → Sunday: none.
            ("2026-11-28T10:00:00Z", "2026-11-29T10:00:00Z", 0),
        ] {
            let state = m.new_state();
            let (q, r) = (at(question), at(reply));
            m.apply(&state, &windows, &message("d", "wa", In, None), q, r);
            m.apply(&state, &windows, &message("d", "wa", Out, None), r, r);
            let s = snap(&m, &windows, &state, r);
            let wa = channel(&s, "wa");
            assert_eq!(wa.response_times[Hours::All.index()].sum_seconds, (r - q) as f64 / 1000.0, "{question}");
            assert_eq!(wa.response_times[Hours::Working.index()].sum_seconds, working as f64 / 1000.0, "{question}");
            assert_eq!(wa.within_target, 0, "{question}: the target is on raw time");
        }
    }

    #[test]
    fn working_hours_response_across_daylight_saving() {
        let windows = Windows::parse(&["1h"]).unwrap();
        let week: Vec<(&str, Vec<&str>)> =
            ["mon", "tue", "wed", "thu", "fri"].iter().map(|d| (*d, vec!["09:00-18:00"])).collect();
        let config = MessagesConfig {
            working_hours: WorkingHours::parse("Europe/Berlin", week).unwrap(),
            dialog_idle_gap_ms: 7 * 24 * HOUR,
            export: export(&[], &[], &["1h"], &[]),
            ..MessagesConfig::default()
        };
        let m = Messages::new(&windows, &config).unwrap();
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        // Friday 17:50 CET → Monday 09:20 CEST, over the night clocks went forward: 10 + 20 min,
        // though the wall-clock span is an hour shorter than the same local times a week earlier.
        let (q, r) = (at("2026-03-27T17:50:00+01:00"), at("2026-03-30T09:20:00+02:00"));
        let state = m.new_state();
        m.apply(&state, &windows, &message("d", "wa", In, None), q, r);
        m.apply(&state, &windows, &message("d", "wa", Out, None), r, r);
        let s = snap(&m, &windows, &state, r);
        let wa = channel(&s, "wa");
        assert_eq!(wa.response_times[Hours::Working.index()].sum_seconds, 1_800.0);
        assert_eq!(wa.response_times[Hours::All.index()].sum_seconds, ((2 * 24 + 14) * 3600 + 30 * 60) as f64);
    }

    #[test]
    fn reply_before_question_counts_at_the_reply_time() {
        let windows = Windows::parse(&["5m", "1h"]).unwrap();
        let m = Messages::new(
            &windows,
            &MessagesConfig { export: export(&["5m"], &[], &["5m"], &["5m", "1h"]), ..MessagesConfig::default() },
        )
        .unwrap();
        let state = m.new_state();
        // The reply at T0 - 10 min arrives first; the question at T0 - 12 min (outside the 5m window)
        // arrives later. The response belongs to T0 - 10 min: in 1h, not in 5m.
        m.apply(&state, &windows, &message("d", "wa", Out, None), T0 - 10 * MINUTE, T0);
        m.apply(&state, &windows, &message("d", "wa", In, None), T0 - 12 * MINUTE, T0);
        let s = snap(&m, &windows, &state, T0);
        let position = |label: &str| m.service_level.iter().find(|(_, l)| l == label).unwrap().0;
        assert_eq!(s.windows[position("5m") * DIMS + DIM_RESPONSES], 0);
        assert_eq!(s.windows[position("1h") * DIMS + DIM_RESPONSES], 1);
        assert_eq!(s.windows[position("1h") * DIMS + DIM_WITHIN_TARGET], 1);
        assert_eq!(s.response_times[0][0].count, 0);
        assert_eq!(channel(&s, "wa").responses, 1);
    }

    #[test]
    fn waiting_now_ages_with_the_clock() {
        let (windows, m) = hour_only();
        let state = m.new_state();
        feed(
            &m,
            &windows,
            &state,
            T0,
            &[
                ("a", "wa", In, None, T0 - 10 * MINUTE),
                ("a", "wa", In, None, T0 - 5 * MINUTE),
                ("b", "wa", In, None, T0 - 2 * MINUTE),
                ("c", "wa", In, None, T0 - 20 * MINUTE),
                ("c", "wa", Out, None, T0 - 19 * MINUTE),
            ],
        );
        for (now, waiting, oldest_ms) in [
            (T0, 2, 10 * MINUTE),
            (T0 + 50 * MINUTE, 2, 60 * MINUTE),
            // Dialog a's latest message was at T0 - 5 min: it is over 24 h later, b a little later.
            (T0 + 24 * HOUR - 5 * MINUTE - 1, 2, 24 * HOUR + 5 * MINUTE - 1),
            (T0 + 24 * HOUR - 5 * MINUTE, 1, 24 * HOUR - 3 * MINUTE),
            (T0 + 24 * HOUR - 2 * MINUTE, 0, 0),
        ] {
            let s = snap(&m, &windows, &state, now);
            assert_eq!((s.dialogs.waiting, s.dialogs.oldest_wait_ms), (waiting, oldest_ms), "now = T0 + {}", now - T0);
        }
        // Answering a takes it off.
        m.apply(&state, &windows, &message("a", "wa", Out, None), T0, T0);
        let s = snap(&m, &windows, &state, T0);
        assert_eq!((s.dialogs.waiting, s.dialogs.oldest_wait_ms), (1, 2 * MINUTE));
        // A question a few seconds ahead of the wall clock waits for 0 s, never less.
        let ahead = m.new_state();
        m.apply(&ahead, &windows, &message("z", "wa", In, None), T0 + 3 * SECOND, T0);
        let s = snap(&m, &windows, &ahead, T0);
        assert_eq!((s.dialogs.waiting, s.dialogs.oldest_wait_ms), (1, 0));
    }

    #[test]
    fn outbound_messages_per_dialog() {
        let (windows, m) = hour_only();
        let state = m.new_state();
        feed(
            &m,
            &windows,
            &state,
            T0,
            &[
                // a: 3 outbound; b: 1 outbound; c: none (not in the mean); d: 2, but over by now.
                ("d", "wa", Out, None, T0 - 25 * HOUR),
                ("d", "wa", Out, None, T0 - 25 * HOUR),
                ("a", "wa", In, None, T0 - 30 * MINUTE),
                ("a", "wa", Out, None, T0 - 29 * MINUTE),
                ("a", "wa", Out, None, T0 - 28 * MINUTE),
                ("a", "wa", Out, None, T0 - 27 * MINUTE),
                ("b", "tg", Out, None, T0 - 20 * MINUTE),
                ("c", "wa", In, None, T0 - 10 * MINUTE),
            ],
        );
        let s = snap(&m, &windows, &state, T0);
        assert_eq!((s.dialogs.active, s.dialogs.with_outbound, s.dialogs.outbound_messages), (3, 2, 4));
        let body = render(&m, &[MessageRow { manager: "ivanov", team: None, messages: &s }]);
        assert_eq!(value(&body, r#"salespulse_outbound_messages_per_dialog{manager="ivanov"}"#), Some(2.0));
        // A day later nothing is active: the gauge is absent.
        let s = snap(&m, &windows, &state, T0 + 24 * HOUR);
        assert_eq!(s.dialogs.with_outbound, 0);
        let body = render(&m, &[MessageRow { manager: "ivanov", team: None, messages: &s }]);
        assert!(!body.contains("salespulse_outbound_messages_per_dialog{"), "{body}");
    }

    #[test]
    fn eviction_at_the_cap_is_counted() {
        let windows = Windows::parse(&["1h"]).unwrap();
        let config = MessagesConfig { max_dialogs_per_manager: 2, ..MessagesConfig::default() };
        let m = Messages::new(&windows, &config).unwrap();
        let state = m.new_state();
        feed(
            &m,
            &windows,
            &state,
            T0,
            &[
                ("a", "wa", In, None, T0 - 3 * MINUTE),
                ("b", "wa", In, None, T0 - 2 * MINUTE),
                // c evicts a (least recently active); a's question is lost.
                ("c", "wa", In, None, T0 - MINUTE),
                // a again: a new dialog, and its reply answers nothing.
                ("a", "wa", Out, None, T0),
            ],
        );
        let s = snap(&m, &windows, &state, T0);
        assert_eq!((s.dialogs.held, s.dialogs.evictions, s.dialogs.waiting), (2, 2, 1));
        assert_eq!(m.join_entries(&state), 2);
        let wa = channel(&s, "wa");
        assert_eq!((wa.new_dialogs, wa.responses), (4, 0));
    }

    #[test]
    fn channels_are_bounded() {
        let (windows, m) = hour_only();
        let state = m.new_state();
        for i in 0..20 {
            m.apply(&state, &windows, &message("d", &format!("ch{i:02}"), In, None), T0, T0);
        }
        m.apply(&state, &windows, &message("d", "other", Out, None), T0, T0);
        m.apply(&state, &windows, &message("d", "ch03", Out, None), T0, T0);
        let s = snap(&m, &windows, &state, T0);
        assert_eq!(s.channels.len(), MAX_CHANNELS + 1);
        assert_eq!(channel(&s, "ch03").messages, [1, 1]);
        // ch16..ch19 and the channel named "other" share one series.
        assert_eq!(channel(&s, "other").messages, [4, 1]);
        assert_eq!(channel(&s, "other").new_dialogs, 5);
        assert!(s.channels.iter().all(|c| &*c.channel != "ch16"));
        assert_eq!(m.held_bytes(&state) - m.state_bytes() - state.dialogs.lock().heap_bytes(), 17 * m.channel_bytes());
        // A channel the contract would refuse (from an event built outside the decoder) is "other".
        let state = m.new_state();
        for name in ["We Chat", "", "x".repeat(65).as_str(), "ok-1.2_3"] {
            m.apply(&state, &windows, &message("d", name, In, None), T0, T0);
        }
        let s = snap(&m, &windows, &state, T0);
        let names: Vec<&str> = s.channels.iter().map(|c| &*c.channel).collect();
        assert_eq!(names, ["ok-1.2_3", "other"]);
        assert_eq!(channel(&s, "other").messages, [3, 0]);
    }

    #[test]
    fn default_export_writes_the_median_and_p90_on_the_wall_clock_only() {
        let all = export(&["1h"], &["1h"], &["1h"], &["1h"]);
        let defaults = MessageExport {
            response_time_quantiles: MessageExport::default().response_time_quantiles,
            response_time_hours: MessageExport::default().response_time_hours,
            ..all.clone()
        };
        let bodies: Vec<String> = [all, defaults]
            .into_iter()
            .map(|export| {
                let (windows, m) = setup(&["1h"], export);
                let state = m.new_state();
                feed(
                    &m,
                    &windows,
                    &state,
                    T0,
                    &[
                        ("d1", "whatsapp", In, Some(true), T0 - 10 * MINUTE),
                        ("d1", "whatsapp", Out, None, T0 - 7 * MINUTE),
                    ],
                );
                let s = snap(&m, &windows, &state, T0);
                render(&m, &[MessageRow { manager: "ivanov", team: None, messages: &s }])
            })
            .collect();
        let quantiles = |body: &str| -> Vec<String> {
            samples(body)
                .into_iter()
                .filter(|l| l.starts_with("salespulse_window_response_time_seconds"))
                .map(str::to_owned)
                .collect()
        };
        let (every, default) = (quantiles(&bodies[0]), quantiles(&bodies[1]));
        assert_eq!(every.len(), 6, "{every:?}");
        assert_eq!(
            default,
            [
                r#"salespulse_window_response_time_seconds{manager="ivanov",hours="all",q="0.5",window="1h"} 154.5"#,
                r#"salespulse_window_response_time_seconds{manager="ivanov",hours="all",q="0.9",window="1h"} 175.7"#,
            ]
            .map(str::to_owned)
        );
        // The same values as with every quantile exported, and nothing else differs.
        assert!(default.iter().all(|line| every.contains(line)), "{default:?} not in {every:?}");
        let rest = |body: &str| -> Vec<String> {
            samples(body)
                .into_iter()
                .filter(|l| !l.starts_with("salespulse_window_response_time_seconds"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(rest(&bodies[0]), rest(&bodies[1]));
    }

    #[test]
    fn unknown_quantiles_and_hours_are_configuration_errors() {
        for (quantiles, hours, field) in [
            (&["0.95"][..], &["all"][..], "response_time_quantiles"),
            (&["0.9"][..], &["night"][..], "response_time_hours"),
        ] {
            let export = MessageExport {
                response_time_quantiles: quantiles.iter().map(|s| s.to_string()).collect(),
                response_time_hours: hours.iter().map(|s| s.to_string()).collect(),
                ..MessageExport::default()
            };
            let windows = Windows::parse(&["1h"]).unwrap();
            let error = Messages::new(&windows, &MessagesConfig { export, ..MessagesConfig::default() }).err();
            assert!(matches!(error, Some(MessagesError::Invalid { field: f, .. }) if f == field), "{error:?}");
        }
        // Changing only the quantiles keeps the lenient defaults for windows not configured.
        let export = MessageExport { response_time_quantiles: vec!["0.99".into()], ..MessageExport::default() };
        let windows = Windows::parse(&["1h"]).unwrap();
        assert!(Messages::new(&windows, &MessagesConfig { export, ..MessagesConfig::default() }).is_ok());
    }

    #[test]
    fn render_exact_text() {
        let (windows, m) = hour_only();
        let state = m.new_state();
        feed(
            &m,
            &windows,
            &state,
            T0,
            &[
                ("d1", "whatsapp", In, Some(true), T0 - 10 * MINUTE),
                ("d1", "whatsapp", In, None, T0 - 9 * MINUTE),
                ("d1", "whatsapp", Out, None, T0 - 7 * MINUTE),
                ("d2", "telegram", In, None, T0 - 2 * MINUTE),
            ],
        );
        let s = snap(&m, &windows, &state, T0);
        let body = render(&m, &[MessageRow { manager: "ivanov", team: Some("north"), messages: &s }]);
        let lines = samples(&body);
        let head: Vec<&str> =
            lines.iter().copied().filter(|l| !l.starts_with("salespulse_response_time_seconds")).collect();
        // A single response of 180 s: bucket (128 s, 181 s]; median 128 + 53 × 0.5, 0.9 → 128 + 53 × 0.9.
        assert_eq!(
            head,
            vec![
                r#"salespulse_messages_total{manager="ivanov",team="north",channel="telegram",direction="inbound"} 1"#,
                r#"salespulse_messages_total{manager="ivanov",team="north",channel="whatsapp",direction="inbound"} 2"#,
                r#"salespulse_messages_total{manager="ivanov",team="north",channel="whatsapp",direction="outbound"} 1"#,
                r#"salespulse_window_messages{manager="ivanov",team="north",direction="inbound",window="1h"} 3"#,
                r#"salespulse_window_messages{manager="ivanov",team="north",direction="outbound",window="1h"} 1"#,
                r#"salespulse_new_dialogs_total{manager="ivanov",team="north",channel="telegram"} 1"#,
                r#"salespulse_new_dialogs_total{manager="ivanov",team="north",channel="whatsapp"} 1"#,
                r#"salespulse_window_new_dialogs{manager="ivanov",team="north",window="1h"} 2"#,
                r#"salespulse_outbound_messages_per_dialog{manager="ivanov",team="north"} 1"#,
                r#"salespulse_dialogs_waiting{manager="ivanov",team="north"} 1"#,
                r#"salespulse_oldest_wait_seconds{manager="ivanov",team="north"} 120"#,
                r#"salespulse_responses_total{manager="ivanov",team="north",channel="telegram"} 0"#,
                r#"salespulse_responses_total{manager="ivanov",team="north",channel="whatsapp"} 1"#,
                r#"salespulse_responses_within_target_total{manager="ivanov",team="north",channel="telegram"} 0"#,
                r#"salespulse_responses_within_target_total{manager="ivanov",team="north",channel="whatsapp"} 1"#,
                r#"salespulse_window_responses{manager="ivanov",team="north",window="1h"} 1"#,
                r#"salespulse_window_service_level{manager="ivanov",team="north",window="1h"} 1"#,
                r#"salespulse_window_response_time_seconds{manager="ivanov",team="north",hours="all",q="0.5",window="1h"} 154.5"#,
                r#"salespulse_window_response_time_seconds{manager="ivanov",team="north",hours="all",q="0.9",window="1h"} 175.7"#,
                r#"salespulse_window_response_time_seconds{manager="ivanov",team="north",hours="all",q="0.99",window="1h"} 180.47"#,
                r#"salespulse_window_response_time_seconds{manager="ivanov",team="north",hours="working",q="0.5",window="1h"} 154.5"#,
                r#"salespulse_window_response_time_seconds{manager="ivanov",team="north",hours="working",q="0.9",window="1h"} 175.7"#,
                r#"salespulse_window_response_time_seconds{manager="ivanov",team="north",hours="working",q="0.99",window="1h"} 180.47"#,
            ]
        );
        let histogram: Vec<&str> =
            lines.iter().copied().filter(|l| l.starts_with("salespulse_response_time_seconds")).collect();
        // 34 buckets, sum and count, for each hours variant; only whatsapp had a response.
        assert_eq!(histogram.len(), 2 * 36);
        for expected in [
            r#"salespulse_response_time_seconds_bucket{team="north",channel="whatsapp",hours="all",le="1"} 0"#,
            r#"salespulse_response_time_seconds_bucket{team="north",channel="whatsapp",hours="all",le="128"} 0"#,
            r#"salespulse_response_time_seconds_bucket{team="north",channel="whatsapp",hours="all",le="181"} 1"#,
            r#"salespulse_response_time_seconds_bucket{team="north",channel="whatsapp",hours="all",le="92682"} 1"#,
            r#"salespulse_response_time_seconds_bucket{team="north",channel="whatsapp",hours="all",le="+Inf"} 1"#,
            r#"salespulse_response_time_seconds_sum{team="north",channel="whatsapp",hours="all"} 180"#,
            r#"salespulse_response_time_seconds_count{team="north",channel="whatsapp",hours="all"} 1"#,
            r#"salespulse_response_time_seconds_count{team="north",channel="whatsapp",hours="working"} 1"#,
        ] {
            assert!(histogram.contains(&expected), "{expected} not in {histogram:#?}");
        }
        assert!(body.contains("# TYPE salespulse_response_time_seconds histogram\n"), "{body}");
        assert!(body.contains("# TYPE salespulse_responses_total counter\n"), "{body}");

        // An hour later: window gauges at 0, ratio and quantiles absent, counters unchanged.
        let later = snap(&m, &windows, &state, T0 + HOUR);
        let body = render(&m, &[MessageRow { manager: "ivanov", team: None, messages: &later }]);
        assert_eq!(value(&body, r#"salespulse_window_responses{manager="ivanov",window="1h"}"#), Some(0.0));
        assert_eq!(
            value(&body, r#"salespulse_window_messages{manager="ivanov",direction="inbound",window="1h"}"#),
            Some(0.0)
        );
        assert!(!body.contains("salespulse_window_service_level{"), "{body}");
        assert!(!body.contains("salespulse_window_response_time_seconds{"), "{body}");
        assert_eq!(value(&body, r#"salespulse_responses_total{manager="ivanov",channel="whatsapp"}"#), Some(1.0));
        assert_eq!(
            value(&body, r#"salespulse_response_time_seconds_count{channel="whatsapp",hours="all"}"#),
            Some(1.0)
        );
        // A manager without messages writes nothing.
        let empty = snap(&m, &windows, &m.new_state(), T0);
        assert!(samples(&render(&m, &[MessageRow { manager: "x", team: None, messages: &empty }])).is_empty());
    }

    #[test]
    fn service_level_and_quantiles_per_window() {
        let (windows, m) = hour_only();
        let state = m.new_state();
        // Responses of 1 min, 5 min (at the target: within) and 5 min 1 s.
        for (dialog, q, r) in [("a", 40, 39), ("b", 30, 25), ("c", 20, 15)] {
            m.apply(&state, &windows, &message(dialog, "wa", In, None), T0 - q * MINUTE, T0);
            let reply = T0 - r * MINUTE + if dialog == "c" { SECOND } else { 0 };
            m.apply(&state, &windows, &message(dialog, "wa", Out, None), reply, T0);
        }
        let s = snap(&m, &windows, &state, T0);
        let body = render(&m, &[MessageRow { manager: "m", team: None, messages: &s }]);
        let service = value(&body, r#"salespulse_window_service_level{manager="m",window="1h"}"#).unwrap();
        assert!((service - 2.0 / 3.0).abs() < 1e-12, "{service}");
        assert_eq!(value(&body, r#"salespulse_window_responses{manager="m",window="1h"}"#), Some(3.0));
        // 60 s in (45, 64]; 300 s and 301 s in (256, 362]. Median: rank 1.5 → 0.5 into that bucket.
        let median = r#"salespulse_window_response_time_seconds{manager="m",hours="all",q="0.5",window="1h"}"#;
        assert_eq!(value(&body, median), Some(256.0 + 106.0 * 0.25));
    }

    #[test]
    fn team_histogram_sums_managers_and_merge_adds_partitions() {
        let (windows, m) = hour_only();
        let q_and_r = |state: &MessageState, dialog: &str, channel: &str, seconds: i64| {
            m.apply(state, &windows, &message(dialog, channel, In, None), T0 - HOUR / 2, T0);
            m.apply(state, &windows, &message(dialog, channel, Out, None), T0 - HOUR / 2 + seconds * SECOND, T0);
        };
        // Manager a on two partitions, manager b on one, both in team north; c without a team.
        let (a1, a2, b, c) = (m.new_state(), m.new_state(), m.new_state(), m.new_state());
        q_and_r(&a1, "x", "wa", 10);
        q_and_r(&a2, "y", "wa", 100);
        q_and_r(&a2, "z", "tg", 1000);
        m.apply(&a2, &windows, &message("w", "wa", In, None), T0 - MINUTE, T0);
        q_and_r(&b, "x", "wa", 2);
        q_and_r(&c, "x", "wa", 3);
        m.apply(&a1, &windows, &message("v", "wa", In, None), T0 - 3 * MINUTE, T0);

        let mut a = snap(&m, &windows, &a1, T0);
        a.merge(&snap(&m, &windows, &a2, T0));
        let wa = channel(&a, "wa");
        assert_eq!((wa.messages, wa.responses, wa.new_dialogs), ([4, 2], 2, 4));
        assert_eq!(wa.response_times[0].sum_seconds, 110.0);
        assert_eq!(channel(&a, "tg").responses, 1);
        assert_eq!(a.channels.iter().map(|c| &*c.channel).collect::<Vec<_>>(), ["tg", "wa"]);
        assert_eq!((a.dialogs.waiting, a.dialogs.oldest_wait_ms, a.dialogs.held), (2, 3 * MINUTE, 5));
        assert_eq!(a.windows[DIM_RESPONSES], 3);
        assert_eq!(a.response_times[0][0].count, 3);

        let (sb, sc) = (snap(&m, &windows, &b, T0), snap(&m, &windows, &c, T0));
        let rows = [
            MessageRow { manager: "a", team: Some("north"), messages: &a },
            MessageRow { manager: "b", team: Some("north"), messages: &sb },
            MessageRow { manager: "c", team: None, messages: &sc },
        ];
        let body = render(&m, &rows);
        let count = |labels: &str| value(&body, &format!("salespulse_response_time_seconds_count{{{labels}}}"));
        let sum = |labels: &str| value(&body, &format!("salespulse_response_time_seconds_sum{{{labels}}}"));
        assert_eq!(count(r#"team="north",channel="wa",hours="all""#), Some(3.0));
        assert_eq!(sum(r#"team="north",channel="wa",hours="all""#), Some(112.0));
        assert_eq!(count(r#"team="north",channel="tg",hours="working""#), Some(1.0));
        assert_eq!(count(r#"channel="wa",hours="all""#), Some(1.0));
        assert_eq!(sum(r#"channel="wa",hours="all""#), Some(3.0));
        // le="2": b's 2 s; le="11": b's and a's 10 s.
        let bucket = |le: &str| {
            value(
                &body,
                &format!(
                    r#"salespulse_response_time_seconds_bucket{{team="north",channel="wa",hours="all",le="{le}"}}"#
                ),
            )
        };
        assert_eq!(
            (bucket("1"), bucket("2"), bucket("11"), bucket("128")),
            (Some(0.0), Some(1.0), Some(2.0), Some(3.0))
        );
        // Not per manager.
        assert!(!body.lines().any(|l| l.starts_with("salespulse_response_time_seconds") && l.contains("manager=")));
    }

    #[test]
    fn default_export_and_memory() {
        let windows = Windows::new(&WindowsConfig::default()).unwrap();
        let m = Messages::new(&windows, &MessagesConfig::default()).unwrap();
        let windowed =
            2 * m.messages.len() + m.new_dialogs.len() + 2 * 3 * m.response_time.len() + 2 * m.service_level.len();
        assert_eq!(windowed, 15);
        // Counters: 1h (a ring of 30 slots) and today (one slot) × 6 cells × 4 bytes.
        assert_eq!(m.layout.bytes(), 31 * 6 * 4);
        // One response-time histogram over 1h (`hours="all"`; `working` is not exported by
        // default, so not kept): 30 slots × 19 cells (stamp, 34 counts two to a cell, sum) × 4
        // bytes + 34 all-time counts × 4.
        let histogram = 30 * 19 * 4 + 34 * 4;
        assert_eq!(m.state_bytes(), std::mem::size_of::<MessageState>() + 31 * 6 * 4 + histogram);
        let state = m.new_state();
        assert_eq!(m.held_bytes(&state), m.state_bytes());
        assert_eq!(Some(histogram), state.response_times[0].as_ref().map(WindowedHistogram::heap_bytes));
        assert!(state.response_times[Hours::Working.index()].is_none());
        // Exporting `working` keeps its histogram too.
        let config = MessagesConfig {
            export: MessageExport { response_time_hours: vec!["all".into(), "working".into()], ..Default::default() },
            ..MessagesConfig::default()
        };
        let both = Messages::new(&windows, &config).unwrap();
        assert_eq!(both.state_bytes(), m.state_bytes() + histogram);
        assert!(both.new_state().response_times.iter().all(Option::is_some));
        // One channel and 100 dialogs.
        for i in 0..100 {
            m.apply(&state, &windows, &message(&format!("d{i}"), "wa", In, None), T0, T0);
        }
        let with_dialogs = m.held_bytes(&state);
        assert_eq!(m.join_entries(&state), 100);
        // 112 entries of capacity: 128 buckets of (key, dialog) and a control byte, plus a group.
        assert_eq!(with_dialogs - m.state_bytes() - m.channel_bytes(), 128 * (8 + 72 + 1) + 16);
        // The figures docs/metrics.md quotes (64-bit).
        assert_eq!((m.state_bytes(), m.channel_bytes(), with_dialogs), (3_592, 408, 14_384));
    }

    #[test]
    fn unknown_export_window_is_an_error() {
        let windows = Windows::parse(&["5m"]).unwrap();
        let config = MessagesConfig { export: export(&["5m"], &[], &["2h"], &[]), ..MessagesConfig::default() };
        let Err(MessagesError::Export(error)) = Messages::new(&windows, &config) else { panic!("accepted") };
        assert_eq!((error.family, error.label.as_str()), ("response_time", "2h"));
        // The defaults skip what is not configured.
        let m = Messages::new(&windows, &MessagesConfig::default()).unwrap();
        assert!(m.messages.is_empty() && m.response_time.is_empty());
        for (config, field) in [
            (MessagesConfig { dialog_idle_gap_ms: 0, ..MessagesConfig::default() }, "dialog_idle_gap"),
            (MessagesConfig { service_level_target_ms: -1, ..MessagesConfig::default() }, "service_level_target"),
            (MessagesConfig { max_dialogs_per_manager: 0, ..MessagesConfig::default() }, "max_dialogs_per_manager"),
        ] {
            let Err(MessagesError::Invalid { field: got, .. }) = Messages::new(&windows, &config) else { panic!() };
            assert_eq!(got, field);
        }
    }

    mod reference {
        //! Response times against a plain model: every dialog's messages sorted by event time
        //! (inbound first at equal times), the first outbound after a run of inbound is a response
        //! from the run's first inbound.
        use super::*;
        use proptest::prelude::*;

        /// One generated message: dialog, direction, event time.
        type Generated = (usize, MessageDirection, i64);

        fn sorted(mut events: Vec<Generated>) -> Vec<Generated> {
            events.sort_by_key(|&(dialog, dir, t)| (t, dir.index(), dialog));
            events
        }

        /// Responses `(dialog, question, reply)` and the pending question per dialog.
        type Model = (Vec<(usize, i64, i64)>, Vec<Option<i64>>);

        fn model(events: &[Generated], dialogs: usize) -> Model {
            let mut pending = vec![None; dialogs];
            let mut responses = Vec::new();
            for &(dialog, dir, t) in &sorted(events.to_vec()) {
                match (dir, pending[dialog]) {
                    (In, None) => pending[dialog] = Some(t),
                    (Out, Some(q)) => {
                        responses.push((dialog, q, t));
                        pending[dialog] = None;
                    }
                    _ => {}
                }
            }
            (responses, pending)
        }

        fn events() -> impl Strategy<Value = (usize, Vec<Generated>)> {
            (1usize..5).prop_flat_map(|dialogs| {
                let message = (0..dialogs, any::<bool>(), 0i64..6 * 3_600_000, 0u8..4);
                (Just(dialogs), proptest::collection::vec(message, 0..60)).prop_map(|(dialogs, raw)| {
                    let events = raw
                        .into_iter()
                        .map(|(d, inbound, t, coarse)| {
                            // Coarse times make ties between messages likely.
                            let t = if coarse == 0 { t - t % 60_000 } else { t };
                            (d, if inbound { In } else { Out }, T0 + t)
                        })
                        .collect();
                    (dialogs, events)
                })
            })
        }

        /// Applies `arrival` and checks per-channel totals, service level and waiting against the
        /// model.
        fn check(events: &[Generated], dialogs: usize, arrival: &[Generated]) -> Result<(), TestCaseError> {
            let windows = Windows::parse(&["1h"]).unwrap();
            let m = Messages::new(&windows, &MessagesConfig::default()).unwrap();
            let state = m.new_state();
            let now = T0 + 7 * 3_600_000;
            let channel = |d: usize| if d.is_multiple_of(2) { "wa" } else { "tg" };
            for &(d, dir, t) in arrival {
                m.apply(&state, &windows, &message(&format!("d{d}"), channel(d), dir, None), t, now);
            }
            let (responses, pending) = model(events, dialogs);
            let s = snap(&m, &windows, &state, now);
            for name in ["wa", "tg"] {
                let expected: Vec<&(usize, i64, i64)> = responses.iter().filter(|r| channel(r.0) == name).collect();
                let Some(got) = s.channels.iter().find(|c| &*c.channel == name) else {
                    prop_assert!(expected.is_empty());
                    continue;
                };
                prop_assert_eq!(got.responses, expected.len() as u64);
                let within = expected.iter().filter(|r| r.2 - r.1 <= 5 * 60_000).count() as u64;
                prop_assert_eq!(got.within_target, within);
                let len = if expected.is_empty() { 0 } else { m.buckets().len() };
                let (mut raw, mut working) = (vec![0u64; len], vec![0u64; len]);
                let (mut raw_sum, mut working_sum) = (0i64, 0i64);
                for &&(_, q, r) in &expected {
                    let w = m.working_hours().working_ms(q, r);
                    raw[m.buckets().index(r - q)] += 1;
                    working[m.buckets().index(w)] += 1;
                    raw_sum += r - q;
                    working_sum += w;
                }
                prop_assert_eq!(&got.response_times[0].counts, &raw);
                prop_assert_eq!(&got.response_times[1].counts, &working);
                prop_assert_eq!(got.response_times[0].sum_seconds, raw_sum as f64 / 1000.0);
                prop_assert_eq!(got.response_times[1].sum_seconds, working_sum as f64 / 1000.0);
            }
            let waiting: Vec<i64> = pending.iter().flatten().copied().collect();
            prop_assert_eq!(s.dialogs.waiting, waiting.len() as u64);
            let oldest = waiting.iter().min().map(|&q| now - q).unwrap_or(0);
            prop_assert_eq!(s.dialogs.oldest_wait_ms, oldest);
            Ok(())
        }

        proptest! {
            /// Arrival in event-time order: exact.
            #[test]
            fn in_order_is_exact((dialogs, events) in events()) {
                check(&events, dialogs, &sorted(events.clone()))?;
            }

            /// Each reply arriving before the run of questions it answers: still exact.
            #[test]
            fn replies_before_their_questions_are_exact((dialogs, events) in events(), flips in any::<u64>()) {
                let in_order = sorted(events.clone());
                // Arrival key: a message's own time, except a moved reply, which takes its run's
                // first question's time and goes just before it.
                let mut keyed: Vec<((i64, i8, usize), Generated)> = Vec::new();
                let mut run_start: Vec<Option<i64>> = vec![None; dialogs];
                for (i, &(d, dir, t)) in in_order.iter().enumerate() {
                    match dir {
                        In => {
                            run_start[d].get_or_insert(t);
                            keyed.push(((t, 0, i), (d, dir, t)));
                        }
                        Out => {
                            let key = match run_start[d].take() {
                                Some(q) if flips >> (i % 64) & 1 == 1 => (q, -1, i),
                                _ => (t, 1, i),
                            };
                            keyed.push((key, (d, dir, t)));
                        }
                    }
                }
                keyed.sort_by_key(|&(key, _)| key);
                let arrival: Vec<Generated> = keyed.into_iter().map(|(_, e)| e).collect();
                check(&events, dialogs, &arrival)?;
            }

            /// Any arrival order: no more responses than runs, never negative, never more waiting
            /// dialogs than dialogs.
            #[test]
            fn any_order_stays_sane((dialogs, events) in events(), seed in any::<u64>()) {
                let mut arrival = events.clone();
                let mut x = seed | 1;
                for i in (1..arrival.len()).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    arrival.swap(i, (x % (i as u64 + 1)) as usize);
                }
                let windows = Windows::parse(&["1h"]).unwrap();
                let m = Messages::new(&windows, &MessagesConfig::default()).unwrap();
                let state = m.new_state();
                let now = T0 + 7 * 3_600_000;
                for &(d, dir, t) in &arrival {
                    m.apply(&state, &windows, &message(&format!("d{d}"), "wa", dir, None), t, now);
                }
                let s = snap(&m, &windows, &state, now);
                let outbound = events.iter().filter(|e| e.1 == Out).count() as u64;
                let inbound = events.iter().filter(|e| e.1 == In).count() as u64;
                let responses = s.channels.first().map(|c| c.responses).unwrap_or(0);
                prop_assert!(responses <= outbound.min(inbound));
                prop_assert!(s.dialogs.waiting <= dialogs as u64);
                if let Some(c) = s.channels.first() {
                    prop_assert!(c.response_times[0].sum_seconds >= 0.0);
                    prop_assert_eq!(c.response_times[0].count, responses);
                }
            }
        }
    }
}
