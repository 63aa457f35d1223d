//! The engine's configuration, already validated (the binary parses files into it).

use salespulse_calls::CallsConfig;
use salespulse_cards::CardsConfig;
use salespulse_core::window::Windows;
use salespulse_events::{Encoding, Kind};
use salespulse_messages::MessagesConfig;

use crate::{AnomalySettings, JoinConfig};

/// How the engine decodes, de-duplicates and applies records.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The sliding windows every windowed metric is kept for.
    pub windows: Windows,
    /// How calls are judged.
    pub calls: CallsConfig,
    /// At most this many managers are held; events of further new managers are counted as overflow.
    pub max_managers: usize,
    /// A manager with no event for this long (wall clock) is evicted with its series.
    pub manager_idle_ms: i64,
    /// Events whose time is further ahead of the wall clock than this are rejected.
    pub future_tolerance_ms: i64,
    /// A repeated `event_id` is recognised for at least this long of event time.
    pub dedup_horizon_ms: i64,
    /// The watermark trails the newest event time of a partition by this much; events older than
    /// the watermark by more than the largest window are dropped as late.
    pub allowed_lateness_ms: i64,
    /// How messages are joined into dialogs, judged and exported.
    pub messages: MessagesConfig,
    /// How card changes are judged, bounded and exported.
    pub cards: CardsConfig,
    /// Bounds and timing of the cross-stream joins.
    pub joins: JoinConfig,
    /// Baselines, scores and silence.
    pub anomalies: AnomalySettings,
    /// Per-topic decoding settings; topics not listed use the defaults (sniffed encoding, any kind).
    pub topics: Vec<TopicConfig>,
}

impl EngineConfig {
    /// How far the watermark trails a partition's newest event time unless configured.
    pub const DEFAULT_ALLOWED_LATENESS_MS: i64 = 2 * 60_000;

    /// The defaults around `windows`.
    pub fn new(windows: Windows) -> Self {
        EngineConfig {
            windows,
            calls: CallsConfig::default(),
            cards: CardsConfig::default(),
            messages: MessagesConfig::default(),
            max_managers: 50_000,
            manager_idle_ms: 24 * 3_600_000,
            future_tolerance_ms: 5 * 60_000,
            dedup_horizon_ms: 15 * 60_000,
            allowed_lateness_ms: Self::DEFAULT_ALLOWED_LATENESS_MS,
            joins: JoinConfig::default(),
            anomalies: AnomalySettings::default(),
            topics: Vec::new(),
        }
    }

    pub(crate) fn topic(&self, name: &str) -> Option<&TopicConfig> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// How records of one topic are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// The topic's name.
    pub name: String,
    /// The encoding when a record has no `content-type` header; `None` sniffs it.
    pub encoding: Option<Encoding>,
    /// The kind of event the topic carries; `None` for a mixed topic (the `kind` field decides).
    pub kind: Option<Kind>,
}
