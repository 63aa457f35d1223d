//! A structured read of the state for the live page and the JSON API: typed rows per manager
//! for one chosen window, and the ingest figures an operator debugging a source needs.
//!
//! The rows come from the same snapshots a scrape renders (`Engine::full_row`, merged across
//! partition groups by `Row::absorb`), so the page and `/metrics` never disagree. A value is `None`
//! where the manager has no state of its stream yet, or where the stream keeps no counters for
//! the chosen window (a window no family of that stream exports).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use salespulse_anomaly::Signal;
use salespulse_cards::{PlanStatus, Plans};
use salespulse_core::window::WindowKind;
use salespulse_events::{DecodeError, Kind};

use crate::{merge_option, Engine, Record, Rejection, Row};

/// The sparkline window: the sliding window one hour long.
const SPARKLINE_WINDOW_MS: i64 = 3_600_000;
/// Rejected records whose errors the ingest view keeps.
const RECENT_REJECTS: usize = 20;

/// Every manager's values in one window at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamView {
    /// The wall-clock instant the values were read at, ms since the epoch.
    pub at_ms: i64,
    /// The window the values are for.
    pub window: String,
    /// Every configured window, in configured order.
    pub windows: Vec<String>,
    /// What one sparkline point is; `None` when no sliding window of one hour is configured.
    pub sparkline: Option<SparklineSpec>,
    /// One row per manager, sorted by manager id.
    pub managers: Vec<ManagerView>,
}

/// What the points of [`ManagerView::calls_sparkline`] mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparklineSpec {
    /// The window the points cover (the sliding window of one hour).
    pub window: String,
    /// Width of one point's bucket, ms (2 minutes with the default windows).
    pub bucket_ms: i64,
    /// Points per sparkline (30 with the default windows).
    pub points: usize,
}

/// One manager's values in the chosen window.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerView {
    /// The manager id.
    pub manager: String,
    /// The manager's team, if an event named one.
    pub team: Option<String>,
    /// Wall-clock time of the manager's last applied event, ms since the epoch.
    pub last_event_ms: i64,
    /// Finished calls in the window, both directions.
    pub calls: Option<u64>,
    /// Successful contacts in the window.
    pub successful_contacts: Option<u64>,
    /// Inbound calls missed in the window.
    pub missed_calls: Option<u64>,
    /// Talk time in the window, seconds.
    pub talk_seconds: Option<f64>,
    /// Messages in the window, both directions.
    pub messages: Option<u64>,
    /// Dialogs active now (their latest message is younger than the dialog idle gap).
    pub dialogs_active: Option<u64>,
    /// Active dialogs whose client waits for an answer now.
    pub clients_waiting: Option<u64>,
    /// How long the oldest waiting client has waited, seconds (0 when none waits).
    pub oldest_wait_seconds: Option<f64>,
    /// p90 of response times in the window, seconds; `None` without a response or where no
    /// response-time histogram is kept for the window.
    pub response_p90_seconds: Option<f64>,
    /// Open tasks due before now.
    pub tasks_overdue: Option<u64>,
    /// Open tasks.
    pub tasks_open: Option<u64>,
    /// Share of the manager's plan done; `None` while no plan is known.
    pub plan_completion: Option<f64>,
    /// Inside the shift with no event for the silence time; `None` without a shift window.
    pub silent: Option<bool>,
    /// Self anomaly scores of the last hour (against the manager's own baseline).
    pub anomalies: Vec<AnomalyView>,
    /// Successful calls with no CRM change within the delay, since the manager appeared.
    pub calls_unlogged: u64,
    /// Finished calls per bucket of the last hour, oldest first (see [`SparklineSpec`]).
    pub calls_sparkline: Option<Vec<u64>>,
}

/// One signal's self score.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyView {
    /// The signal (`calls_made`, `successful_contacts`, ...).
    pub signal: &'static str,
    /// `(value - baseline) / spread`, signed.
    pub score: f64,
    /// The value judged.
    pub value: f64,
    /// The baseline it is compared with.
    pub baseline: f64,
}

/// What the ingest side has seen: per topic, per stream, and the last rejected records.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestView {
    /// The wall-clock instant of the read, ms since the epoch.
    pub at_ms: i64,
    /// Per topic seen, sorted by name.
    pub topics: Vec<TopicIngest>,
    /// Per stream.
    pub streams: Vec<StreamIngest>,
    /// Rejected records by reason, all topics (the `salespulse_events_rejected_total` counters).
    pub rejected: Vec<(&'static str, u64)>,
    /// Redelivered offsets dropped.
    pub duplicate_offsets: u64,
    /// Repeated event ids dropped.
    pub duplicate_event_ids: u64,
    /// Events of new managers dropped at the manager cap.
    pub overflow: u64,
    /// Managers held.
    pub managers: usize,
    /// The last rejected records, newest first.
    pub recent_rejects: Vec<RecentReject>,
}

/// One topic's ingest figures.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicIngest {
    /// The topic.
    pub topic: String,
    /// Records received.
    pub received: u64,
    /// Records rejected, by reason (reasons with none left out).
    pub rejected: Vec<(&'static str, u64)>,
    /// Per partition this process has seen, sorted.
    pub partitions: Vec<PartitionIngest>,
}

/// One partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionIngest {
    /// The partition.
    pub partition: i32,
    /// The lowest offset not yet applied.
    pub next_offset: Option<i64>,
}

/// One stream's ingest figures.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamIngest {
    /// `call`, `message` or `card_change`.
    pub stream: &'static str,
    /// Events applied.
    pub applied: u64,
    /// Events dropped as too late for every window.
    pub late: u64,
    /// Event time of the newest applied event, ms since the epoch; `None` before the first.
    pub last_event_ms: Option<i64>,
}

/// A rejected record, without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentReject {
    /// Wall-clock time of the rejection, ms since the epoch.
    pub at_ms: i64,
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The `reason` label.
    pub reason: &'static str,
    /// What was wrong. Never quotes a payload value: parser messages (which may quote one) are
    /// cut to their position.
    pub error: String,
}

/// The last rejected records and per-topic reject counts (the reject path is cold: one lock).
#[derive(Debug, Default)]
pub(crate) struct RejectLog {
    inner: Mutex<RejectLogInner>,
}

#[derive(Debug, Default)]
struct RejectLogInner {
    recent: VecDeque<RecentReject>,
    /// `(topic, reason, count)`; topics and reasons are both bounded.
    by_topic: Vec<(Box<str>, &'static str, u64)>,
}

impl RejectLog {
    pub(crate) fn record(&self, record: &Record<'_>, rejection: &Rejection, at_ms: i64) {
        let reason = rejection.reason();
        let mut inner = self.inner.lock();
        match inner.by_topic.iter_mut().find(|(t, r, _)| *r == reason && t.as_ref() == record.topic) {
            Some((_, _, count)) => *count += 1,
            None => inner.by_topic.push((record.topic.into(), reason, 1)),
        }
        if inner.recent.len() == RECENT_REJECTS {
            inner.recent.pop_back();
        }
        inner.recent.push_front(RecentReject {
            at_ms,
            topic: record.topic.to_owned(),
            partition: record.partition,
            offset: record.offset,
            reason,
            error: safe_error(rejection),
        });
    }
}

/// The rejection's message, without anything a parser may have quoted from the payload.
fn safe_error(rejection: &Rejection) -> String {
    match rejection {
        Rejection::Decode(DecodeError::MalformedJson { detail }) => {
            // serde_json ends its messages with " at line L column C"; the rest may quote a value.
            match detail.rfind(" at line ") {
                Some(at) => format!("malformed JSON{}", &detail[at..]),
                None if detail.starts_with("invalid UTF-8 at byte ") => format!("malformed JSON: {detail}"),
                None => "malformed JSON".to_owned(),
            }
        }
        Rejection::Decode(DecodeError::MalformedProtobuf { .. }) => "malformed protobuf".to_owned(),
        Rejection::Decode(DecodeError::UnknownKind { .. }) => "unknown kind".to_owned(),
        other => other.to_string(),
    }
}

impl Engine {
    /// Every manager's values in window `label` now; `None` when no such window is configured.
    pub fn team_view(&self, label: &str) -> Option<TeamView> {
        self.view(label, None)
    }

    /// Window `label` now with only `manager`'s row (none when the manager is not held); `None`
    /// when no such window is configured.
    pub fn manager_view(&self, label: &str, manager: &str) -> Option<TeamView> {
        self.view(label, Some(manager))
    }

    fn view(&self, label: &str, only: Option<&str>) -> Option<TeamView> {
        let windows = &self.config.windows;
        windows.index_of(label)?;
        let now_ms = self.clock.now_ms();
        let plan = windows.plan(now_ms);
        let spark = windows.specs().iter().find_map(|spec| match spec.kind {
            WindowKind::Sliding { length_ms: SPARKLINE_WINDOW_MS, buckets } => Some(SparklineSpec {
                window: spec.label.clone(),
                bucket_ms: windows.levels()[spec.level].bucket_ms,
                points: buckets as usize,
            }),
            _ => None,
        });
        let mut rows: Vec<(Row, i64, Option<Vec<u64>>)> = Vec::new();
        self.table.for_each(|_, manager, entry| {
            if only.is_some_and(|only| only != manager.as_ref()) {
                return;
            }
            let row = self.full_row(manager, entry, &plan, now_ms);
            let sparkline = match (&spark, entry.state.calls.get()) {
                (Some(spark), Some(calls)) => {
                    let mut points = Vec::with_capacity(spark.points);
                    self.calls.calls_series(calls, windows, &plan, &spark.window, &mut points);
                    (!points.is_empty()).then_some(points)
                }
                _ => None,
            };
            rows.push((row, entry.last_update_ms(), sparkline));
        });
        // A manager whose events came through several partition groups is one row, as in a scrape.
        rows.sort_unstable_by(|a, b| a.0.manager.cmp(&b.0.manager));
        rows.dedup_by(|(later, later_ms, later_spark), (kept, kept_ms, kept_spark)| {
            if later.manager != kept.manager {
                return false;
            }
            kept.absorb(later);
            *kept_ms = (*kept_ms).max(*later_ms);
            merge_option(kept_spark, later_spark.take(), |mine, theirs| {
                for (a, b) in mine.iter_mut().zip(theirs) {
                    *a += b;
                }
            });
            true
        });
        // The plans and their period once per view, not per manager.
        let plans = (self.plans(), self.cards.period_at(now_ms), now_ms);
        let managers = rows
            .into_iter()
            .map(|(row, last_event_ms, calls_sparkline)| {
                self.manager_row(row, label, last_event_ms, calls_sparkline, &plans)
            })
            .collect();
        Some(TeamView {
            at_ms: now_ms,
            window: label.to_owned(),
            windows: windows.specs().iter().map(|spec| spec.label.clone()).collect(),
            sparkline: spark,
            managers,
        })
    }

    fn manager_row(
        &self,
        row: Row,
        label: &str,
        last_event_ms: i64,
        calls_sparkline: Option<Vec<u64>>,
        (plans, period, now_ms): &(Arc<Plans>, (i64, i64), i64),
    ) -> ManagerView {
        let windows = &self.config.windows;
        let calls = row.calls.as_ref().and_then(|calls| self.calls.window_values(calls, windows, label));
        let messages = row.messages.as_ref();
        let cards = row.cards.as_ref();
        let anomalies = Signal::ALL
            .iter()
            .filter_map(|signal| {
                let score = row.anomalies.own[signal.index()]?;
                Some(AnomalyView {
                    signal: signal.as_str(),
                    score: score.score,
                    value: score.value,
                    baseline: score.baseline,
                })
            })
            .collect();
        ManagerView {
            manager: row.manager.to_string(),
            team: row.team.as_deref().map(str::to_owned),
            last_event_ms,
            calls: calls.map(|c| c.calls),
            successful_contacts: calls.map(|c| c.successful),
            missed_calls: calls.map(|c| c.missed),
            talk_seconds: calls.map(|c| c.talk_ms as f64 / 1000.0),
            messages: messages.and_then(|m| {
                let inbound = self.messages.window_messages(m, label, salespulse_events::MessageDirection::Inbound)?;
                let outbound =
                    self.messages.window_messages(m, label, salespulse_events::MessageDirection::Outbound)?;
                Some(inbound + outbound)
            }),
            dialogs_active: messages.map(|m| m.dialogs.active),
            clients_waiting: messages.map(|m| m.dialogs.waiting),
            oldest_wait_seconds: messages.map(|m| m.dialogs.oldest_wait_ms as f64 / 1000.0),
            response_p90_seconds: messages.and_then(|m| self.messages.window_response_quantile(m, label, 0.9)),
            tasks_overdue: cards.map(|c| c.tasks_overdue),
            tasks_open: cards.map(|c| c.tasks_open),
            // Revenue completion, as `salespulse_plan_completion_ratio{measure="revenue"}`.
            plan_completion: PlanStatus::of(
                plans,
                &row.manager,
                row.team.as_deref(),
                cards.map(|c| &c.commerce),
                *period,
                *now_ms,
            )
            .completion(0),
            silent: row.anomalies.silent,
            anomalies,
            calls_unlogged: row.joins.calls_unlogged,
            calls_sparkline,
        }
    }

    /// The ingest figures now.
    pub fn ingest_view(&self) -> IngestView {
        let partitions = self.partitions.read();
        let mut topics: Vec<TopicIngest> = Vec::new();
        for ((topic, partition), ctx) in partitions.iter() {
            let position = PartitionIngest { partition: *partition, next_offset: ctx.ledger.lock().next_offset() };
            match topics.iter_mut().find(|t| t.topic == topic.as_ref()) {
                Some(found) => found.partitions.push(position),
                None => topics.push(TopicIngest {
                    topic: topic.to_string(),
                    received: self.metrics.received_for(topic).get(),
                    rejected: Vec::new(),
                    partitions: vec![position],
                }),
            }
        }
        drop(partitions);
        let log = self.rejects.inner.lock();
        for (topic, reason, count) in &log.by_topic {
            if let Some(found) = topics.iter_mut().find(|t| t.topic == topic.as_ref()) {
                found.rejected.push((reason, *count));
            }
        }
        let recent_rejects = log.recent.iter().cloned().collect();
        drop(log);
        for topic in &mut topics {
            topic.partitions.sort_unstable_by_key(|p| p.partition);
            topic.rejected.sort_unstable();
        }
        topics.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
        let streams = [Kind::Call, Kind::Message, Kind::CardChange]
            .into_iter()
            .map(|kind| {
                let (applied, late, last_event_seconds) = self.metrics.stream(kind);
                StreamIngest {
                    stream: kind.as_str(),
                    applied,
                    late,
                    last_event_ms: (last_event_seconds > 0.0).then(|| (last_event_seconds * 1000.0).round() as i64),
                }
            })
            .collect();
        let (duplicate_offsets, duplicate_event_ids) = self.metrics.duplicates();
        IngestView {
            at_ms: self.clock.now_ms(),
            topics,
            streams,
            rejected: self.metrics.rejected_counts(),
            duplicate_offsets,
            duplicate_event_ids,
            overflow: self.metrics.overflow.get(),
            managers: self.table.len(),
            recent_rejects,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus::Registry;
    use salespulse_core::clock::ManualClock;
    use salespulse_core::window::Windows;
    use salespulse_events::{Call, CallDirection, CallStatus, Event, EventBody};

    use crate::{Engine, EngineConfig, Outcome, Record};

    /// On a 2-minute boundary.
    const T0: i64 = 1_760_000_040_000;

    fn engine(sliding: &[&str]) -> (Engine, Arc<ManualClock>) {
        let config = EngineConfig::new(Windows::parse(sliding).unwrap());
        let clock = Arc::new(ManualClock::new(T0));
        let engine = Engine::new(config, clock.clone(), &Registry::new()).unwrap();
        (engine, clock)
    }

    fn call(engine: &Engine, partition: i32, offset: i64, manager: &str, at: i64, talk_ms: u64) {
        let event = Event {
            event_id: format!("{manager}-{partition}-{offset}"),
            occurred_at_ms: at,
            manager_id: manager.into(),
            team: Some("north".into()),
            source: None,
            body: EventBody::Call(Call {
                call_id: format!("call-{offset}"),
                direction: CallDirection::Outbound,
                status: CallStatus::Answered,
                started_at_ms: at - talk_ms as i64,
                answered_at_ms: None,
                ended_at_ms: at,
                talk_ms,
                client_id: None,
                card_id: None,
            }),
        };
        assert!(matches!(engine.ingest_event("calls", partition, offset, &event), Outcome::Applied(_)));
    }

    #[test]
    fn rows_follow_the_chosen_window_and_the_sparkline_sums_to_the_hour() {
        let (engine, clock) = engine(&["5m", "1h"]);
        // ann: one successful call 1 s ago and one short call 20 min ago; bob: one call 3 min ago
        // through partition 0 and one 1 min ago through partition 1 (merged into one row).
        call(&engine, 0, 0, "ann", T0 - 1_000, 45_000);
        call(&engine, 0, 1, "ann", T0 - 20 * 60_000, 10_000);
        call(&engine, 0, 2, "bob", T0 - 3 * 60_000, 50_000);
        call(&engine, 1, 0, "bob", T0 - 60_000, 5_000);
        clock.set(T0 + 30_000);
        let five = engine.team_view("5m").unwrap();
        let hour = engine.team_view("1h").unwrap();
        let pick =
            |view: &super::TeamView, who: &str| view.managers.iter().find(|m| m.manager == who).cloned().unwrap();
        assert_eq!(five.managers.len(), 2);
        assert_eq!(five.windows, ["5m", "1h"]);
        let (ann5, ann60) = (pick(&five, "ann"), pick(&hour, "ann"));
        assert_eq!((ann5.calls, ann5.successful_contacts, ann5.talk_seconds), (Some(1), Some(1), Some(45.0)));
        assert_eq!((ann60.calls, ann60.successful_contacts, ann60.talk_seconds), (Some(2), Some(1), Some(55.0)));
        assert_eq!(ann60.team.as_deref(), Some("north"));
        let (bob5, bob60) = (pick(&five, "bob"), pick(&hour, "bob"));
        assert_eq!((bob5.calls, bob5.successful_contacts), (Some(2), Some(1)));
        assert_eq!(bob60.calls, Some(2));
        // No message or card state: those values are absent, not zero.
        assert_eq!((ann60.messages, ann60.clients_waiting, ann60.tasks_overdue), (None, None, None));
        assert_eq!(ann60.plan_completion, None);

        let spark = hour.sparkline.clone().unwrap();
        assert_eq!((spark.window.as_str(), spark.bucket_ms, spark.points), ("1h", 120_000, 30));
        for row in &hour.managers {
            let points = row.calls_sparkline.clone().unwrap();
            assert_eq!(points.len(), 30);
            assert_eq!(Some(points.iter().sum::<u64>()), row.calls, "{}", row.manager);
        }
        // ann's call 1 s before T0 is in the bucket before the current one; 20 min ago is 10 back.
        let ann_points = ann60.calls_sparkline.unwrap();
        assert_eq!((ann_points[28], ann_points[19]), (1, 1));

        assert_eq!(engine.manager_view("1h", "bob").unwrap().managers, [bob60]);
        assert_eq!(engine.manager_view("1h", "nobody").unwrap().managers, []);
        assert!(engine.manager_view("today", "bob").is_none());
        assert!(engine.team_view("today").is_none());
    }

    #[test]
    fn without_an_hour_window_there_is_no_sparkline() {
        let (engine, _clock) = engine(&["5m"]);
        call(&engine, 0, 0, "ann", T0 - 1_000, 45_000);
        let view = engine.team_view("5m").unwrap();
        assert_eq!(view.sparkline, None);
        assert_eq!(view.managers[0].calls_sparkline, None);
    }

    #[test]
    fn ingest_view_counts_topics_and_keeps_rejects_without_payload_values() {
        let (engine, _clock) = engine(&["5m", "1h"]);
        call(&engine, 0, 0, "ann", T0 - 1_000, 45_000);
        let bad = br#"{"kind": "call", "event_id": "+79151112233"#;
        let records = [
            Record { topic: "calls", partition: 0, offset: 1, content_type: None, payload: Some(bad) },
            Record { topic: "chats", partition: 2, offset: 7, content_type: None, payload: Some(b"") },
        ];
        for record in &records {
            assert!(matches!(engine.ingest(record), Outcome::Rejected(_)));
        }
        let view = engine.ingest_view();
        let topics: Vec<_> = view.topics.iter().map(|t| (t.topic.as_str(), t.received, t.rejected.clone())).collect();
        assert_eq!(topics, [("calls", 2, vec![("malformed_json", 1)]), ("chats", 1, vec![("empty_payload", 1)])]);
        assert_eq!(view.topics[1].partitions[0].partition, 2);
        assert_eq!(view.recent_rejects.len(), 2);
        assert_eq!(view.recent_rejects[0].reason, "empty_payload");
        let json_error = &view.recent_rejects[1].error;
        assert!(json_error.starts_with("malformed JSON at line 1 column"), "{json_error}");
        assert!(!json_error.contains("7915"), "{json_error}");
        let calls = view.streams.iter().find(|s| s.stream == "call").unwrap();
        assert_eq!((calls.applied, calls.last_event_ms), (1, Some(T0 - 1_000)));
        assert!(view.rejected.contains(&("malformed_json", 1)));
    }
}
