use std::sync::Arc;

use proptest::prelude::*;
use salespulse_core::clock::ManualClock;
use salespulse_core::expo::{Format, MetricWriter};
use salespulse_core::window::Windows;
use salespulse_events::{Call, CallDirection, CallStatus, Event, EventBody};

use super::*;

const T0: i64 = 1_760_000_000_000;

struct Fixture {
    engine: Engine,
    clock: Arc<ManualClock>,
    registry: Registry,
}

fn fixture(configure: impl FnOnce(&mut EngineConfig)) -> Fixture {
    let mut config = EngineConfig::new(Windows::parse(&["5m", "1h"]).unwrap());
    configure(&mut config);
    let clock = Arc::new(ManualClock::new(T0));
    let registry = Registry::new();
    let engine = Engine::new(config, clock.clone(), &registry).unwrap();
    Fixture { engine, clock, registry }
}

fn call_event(id: &str, manager: &str, at: i64, status: CallStatus, talk_ms: u64) -> Event {
    Event {
        event_id: id.into(),
        occurred_at_ms: at,
        manager_id: manager.into(),
        team: Some("north".into()),
        source: None,
        body: EventBody::Call(Call {
            call_id: format!("call-{id}"),
            direction: CallDirection::Outbound,
            status,
            started_at_ms: at - 120_000,
            answered_at_ms: None,
            ended_at_ms: at,
            talk_ms,
            client_id: Some("+79151112233".into()),
            card_id: None,
        }),
    }
}

fn record<'a>(topic: &'a str, partition: i32, offset: i64, payload: &'a [u8]) -> Record<'a> {
    Record { topic, partition, offset, content_type: None, payload: Some(payload) }
}

impl Fixture {
    fn scrape(&self) -> String {
        let mut out = MetricWriter::new(Format::Text);
        self.engine.render(&mut out);
        out.finish()
    }

    /// The value of the sample whose line starts with `series` (name and labels).
    fn value(&self, series: &str) -> Option<f64> {
        value_in(&self.scrape(), series)
    }

    fn counter(&self, name: &str, label: (&str, &str)) -> u64 {
        for family in self.registry.gather() {
            if family.name() != name {
                continue;
            }
            for metric in family.get_metric() {
                if metric.get_label().iter().any(|l| l.name() == label.0 && l.value() == label.1) {
                    return metric.get_counter().get_value() as u64;
                }
            }
        }
        0
    }
}

fn value_in(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const ANSWERED_OUT: &str = r#"{manager="ivanov",team="north",direction="outbound",status="answered"}"#;
const SUCCESS_OUT: &str = r#"{manager="ivanov",team="north",direction="outbound"}"#;

#[test]
fn applies_json_and_protobuf_calls() {
    let f = fixture(|_| ());
    let json = salespulse_events::encode_json(&call_event("e1", "ivanov", T0 - 1_000, CallStatus::Answered, 40_000));
    let proto =
        salespulse_events::encode_protobuf(&call_event("e2", "ivanov", T0 - 1_000, CallStatus::Answered, 39_900));
    assert!(matches!(f.engine.ingest(&record("calls", 0, 0, &json)), Outcome::Applied(Kind::Call)));
    assert!(matches!(f.engine.ingest(&record("calls", 0, 1, &proto)), Outcome::Applied(Kind::Call)));
    assert_eq!(f.value(&format!("salespulse_calls_total{ANSWERED_OUT}")), Some(2.0));
    assert_eq!(f.value(&format!("salespulse_successful_contacts_total{SUCCESS_OUT}")), Some(1.0));
    assert_eq!(f.value(&format!("salespulse_call_talk_seconds_total{SUCCESS_OUT}")), Some(79.9));
    let windowed = r#"salespulse_window_calls{manager="ivanov",team="north",direction="outbound",window="5m"}"#;
    assert_eq!(f.value(windowed), Some(2.0));
    f.clock.advance(10 * 60_000);
    assert_eq!(f.value(windowed), Some(0.0));
    assert_eq!(f.counter("salespulse_events_applied_total", ("stream", "call")), 2);
}

#[test]
fn redelivered_offsets_and_repeated_event_ids_count_once() {
    let f = fixture(|_| ());
    let payload = salespulse_events::encode_json(&call_event("e1", "ivanov", T0, CallStatus::Answered, 50_000));
    assert!(matches!(f.engine.ingest(&record("calls", 0, 7, &payload)), Outcome::Applied(_)));
    assert!(matches!(f.engine.ingest(&record("calls", 0, 7, &payload)), Outcome::Duplicate(Duplicate::Offset)));
    assert!(matches!(f.engine.ingest(&record("calls", 0, 8, &payload)), Outcome::Duplicate(Duplicate::EventId)));
    assert_eq!(f.value(&format!("salespulse_calls_total{ANSWERED_OUT}")), Some(1.0));
    assert_eq!(f.counter("salespulse_events_duplicate_total", ("kind", "offset")), 1);
    assert_eq!(f.counter("salespulse_events_duplicate_total", ("kind", "event_id")), 1);
    assert_eq!(f.engine.next_offset("calls", 0), Some(9));
}

#[test]
fn bad_records_are_counted_and_do_not_disturb_good_ones() {
    let f = fixture(|_| ());
    let good = salespulse_events::encode_json(&call_event("e1", "ivanov", T0, CallStatus::Answered, 50_000));
    let future =
        salespulse_events::encode_json(&call_event("e2", "ivanov", T0 + 6 * 60_000, CallStatus::Answered, 50_000));
    let cases: [(&[u8], &str); 5] = [
        (b"{\"event_id\": \"x\", truncated", "malformed_json"),
        (b"", "empty_payload"),
        (&[0xff, 0xfe, 0x01, 0x02], "malformed_protobuf"),
        (&future, "future_timestamp"),
        (br#"{"kind":"call","event_id":"e3","occurred_at":1760000000000,"manager_id":"+7 915 111-22-33","call_id":"c","direction":"inbound","status":"missed","started_at":1760000000000,"ended_at":1760000000000}"#, "invalid_manager_id"),
    ];
    let mut offset = 0;
    for (payload, reason) in cases {
        match f.engine.ingest(&record("calls", 0, offset, payload)) {
            Outcome::Rejected(rejection) => assert_eq!(rejection.reason(), reason),
            other => panic!("{reason}: {other:?}"),
        }
        assert_eq!(f.counter("salespulse_events_rejected_total", ("reason", reason)), 1, "{reason}");
        offset += 1;
    }
    assert!(matches!(f.engine.ingest(&record("calls", 0, offset, &good)), Outcome::Applied(_)));
    let body = f.scrape();
    assert_eq!(value_in(&body, &format!("salespulse_calls_total{ANSWERED_OUT}")), Some(1.0));
    assert!(!body.contains("915"), "a phone-like manager id reached a label: {body}");
}

#[test]
fn header_wins_over_topic_encoding_and_topic_over_sniffing() {
    let f = fixture(|c| {
        c.topics.push(TopicConfig { name: "pbx".into(), encoding: Some(Encoding::Protobuf), kind: Some(Kind::Call) })
    });
    let json = salespulse_events::encode_json(&call_event("e1", "ivanov", T0, CallStatus::Missed, 0));
    // The topic says protobuf: a JSON body without a header is rejected as protobuf garbage...
    match f.engine.ingest(&record("pbx", 0, 0, &json)) {
        Outcome::Rejected(r) => assert_eq!(r.reason(), "malformed_protobuf"),
        other => panic!("{other:?}"),
    }
    // ...and accepted when its header says JSON.
    let with_header = Record { content_type: Some(b"application/json; charset=utf-8"), ..record("pbx", 0, 1, &json) };
    assert!(matches!(f.engine.ingest(&with_header), Outcome::Applied(Kind::Call)));
    // An unconfigured topic sniffs.
    let other = salespulse_events::encode_json(&call_event("e2", "ivanov", T0, CallStatus::Missed, 0));
    assert!(matches!(f.engine.ingest(&record("misc", 0, 0, &other)), Outcome::Applied(Kind::Call)));
}

#[test]
fn sniffing_recovers_protobuf_that_looks_like_json() {
    let f = fixture(|_| ());
    // Field 1 (tag 0x0a) with length 123 (`{`): the body starts with "\n{".
    let id = "x".repeat(123);
    let payload = salespulse_events::encode_protobuf(&call_event(&id, "ivanov", T0, CallStatus::Missed, 0));
    assert_eq!(&payload[..2], b"\n{");
    assert!(matches!(f.engine.ingest(&record("calls", 0, 0, &payload)), Outcome::Applied(Kind::Call)));
}

#[test]
fn manager_cap_counts_overflow() {
    let f = fixture(|c| c.max_managers = 2);
    for (offset, manager) in ["a", "b", "c", "a"].iter().enumerate() {
        let payload =
            salespulse_events::encode_json(&call_event(&format!("e{offset}"), manager, T0, CallStatus::Missed, 0));
        let outcome = f.engine.ingest(&record("calls", 0, offset as i64, &payload));
        assert_eq!(matches!(outcome, Outcome::Overflow), *manager == "c", "{manager}: {outcome:?}");
    }
    assert_eq!(f.engine.managers(), 2);
    assert_eq!(f.counter_plain("salespulse_managers_overflow_events_total"), 1);
}

impl Fixture {
    fn counter_plain(&self, name: &str) -> u64 {
        self.registry
            .gather()
            .iter()
            .find(|family| family.name() == name)
            .map(|family| family.get_metric()[0].get_counter().get_value() as u64)
            .unwrap_or(0)
    }
}

#[test]
fn a_manager_seen_on_two_partitions_is_one_series() {
    let f = fixture(|_| ());
    let a = salespulse_events::encode_json(&call_event("e1", "ivanov", T0, CallStatus::Answered, 41_000));
    let b = salespulse_events::encode_json(&call_event("e2", "ivanov", T0, CallStatus::Answered, 41_000));
    f.engine.ingest(&record("calls", 0, 0, &a));
    f.engine.ingest(&record("calls", 1, 0, &b));
    let body = f.scrape();
    assert_eq!(body.matches("salespulse_calls_total{").count(), 1, "{body}");
    assert_eq!(value_in(&body, &format!("salespulse_calls_total{ANSWERED_OUT}")), Some(2.0));
    // Mis-keyed producers are counted once per manager, when its state appears in a second group.
    assert_eq!(f.counter_plain("salespulse_managers_split_total"), 1);
    let c = salespulse_events::encode_json(&call_event("e3", "ivanov", T0, CallStatus::Answered, 41_000));
    f.engine.ingest(&record("calls", 1, 1, &c));
    assert_eq!(f.counter_plain("salespulse_managers_split_total"), 1);
}

#[test]
fn dropping_a_partition_group_forgets_its_managers_and_ledgers_and_a_replay_rebuilds_them() {
    let f = fixture(|_| ());
    let event = |id: &str, manager: &str| {
        salespulse_events::encode_json(&call_event(id, manager, T0 - 60_000, CallStatus::Answered, 41_000))
    };
    // Partition 0 of two topics is one group; partition 1 is another.
    let records = [
        ("calls", 0, 0, event("a1", "ivanov")),
        ("chat", 0, 0, event("a2", "ivanov")),
        ("calls", 1, 0, event("b1", "petrova")),
    ];
    for (topic, partition, offset, payload) in &records {
        f.engine.ingest(&record(topic, *partition, *offset, payload));
    }
    let before = f.scrape();
    assert_eq!(f.engine.managers(), 2);
    assert_eq!(f.engine.drop_partition_group(0), 1);
    assert_eq!(f.engine.managers(), 1);
    assert_eq!((f.engine.next_offset("calls", 0), f.engine.next_offset("chat", 0)), (None, None));
    assert_eq!(f.engine.next_offset("calls", 1), Some(1));
    assert_eq!(value_in(&f.scrape(), &format!("salespulse_calls_total{ANSWERED_OUT}")), None);
    // A replay of the group's records (with a redelivery) restores exactly the same families.
    for (topic, partition, offset, payload) in records.iter().filter(|r| r.1 == 0).chain(records.iter().take(1)) {
        f.engine.ingest(&record(topic, *partition, *offset, payload));
    }
    assert_eq!(f.scrape(), before);
    assert_eq!(f.counter_plain("salespulse_managers_split_total"), 0);
}

/// An event `id` of manager ivanov (team north), `ago` ms before T0, as JSON.
fn ivanov_json(id: &str, ago: i64, body: EventBody) -> Vec<u8> {
    salespulse_events::encode_json(&Event {
        event_id: id.into(),
        occurred_at_ms: T0 - ago,
        manager_id: "ivanov".into(),
        team: Some("north".into()),
        source: None,
        body,
    })
}

/// A deal change of `client` by manager ivanov, `ago` ms before T0, as JSON.
fn deal_change(id: &str, deal: &str, client: &str, change: salespulse_events::CardChangeKind, ago: i64) -> Vec<u8> {
    ivanov_json(
        id,
        ago,
        EventBody::CardChange(salespulse_events::CardChange {
            card_id: deal.into(),
            card_type: salespulse_events::CardType::Deal,
            change,
            pipeline: None,
            stage_from: None,
            stage_to: None,
            stage_progress_pct: None,
            comment_length: None,
            task_id: None,
            task_due_at_ms: None,
            task_due_from_ms: None,
            amount: None,
            client_id: Some(client.into()),
            margin: None,
            invoice_id: None,
            currency: None,
        }),
    )
}

#[test]
fn client_relationships_are_rebuilt_by_a_replay_and_a_retry_counts_once() {
    use salespulse_events::CardChangeKind as K;
    let f = fixture(|_| ());
    let log = [
        deal_change("k1", "d1", "acme", K::Created, 50 * 60_000),
        deal_change("k2", "d1", "acme", K::Won, 40 * 60_000),
        deal_change("k3", "d2", "acme", K::Created, 30 * 60_000),
        // A producer retry under a new event id: the deal is already won.
        deal_change("k2-retry", "d1", "acme", K::Won, 40 * 60_000),
        deal_change("k4", "d2", "acme", K::Won, 20 * 60_000),
        deal_change("k5", "d3", "globex", K::Created, 10 * 60_000),
    ];
    let ingest_all = || {
        for (offset, payload) in log.iter().enumerate() {
            f.engine.ingest(&record("crm", 0, offset as i64, payload));
        }
    };
    ingest_all();
    let first = f.scrape();
    let clients = |body: &str, kind: &str| {
        value_in(body, &format!(r#"salespulse_clients{{manager="ivanov",team="north",relationship="{kind}"}}"#))
    };
    assert_eq!(clients(&first, "regular"), Some(1.0));
    assert_eq!(clients(&first, "potential"), Some(1.0));
    let moved = r#"salespulse_client_transitions_total{manager="ivanov",team="north",from="current",to="regular"}"#;
    assert_eq!(value_in(&first, moved), Some(1.0));
    f.engine.drop_partition_group(0);
    assert_eq!(clients(&f.scrape(), "regular"), None);
    ingest_all();
    assert_eq!(f.scrape(), first);
}

#[test]
fn the_rebuild_horizon_covers_the_largest_window_dedup_and_future_tolerance() {
    let f = fixture(|config| {
        config.dedup_horizon_ms = 900_000;
        config.future_tolerance_ms = 300_000;
    });
    assert_eq!(f.engine.rebuild_horizon_ms(), 3_600_000 + 900_000 + 300_000);
}

#[test]
fn events_too_old_for_the_watermark_are_dropped_and_counted() {
    let f = fixture(|_| ());
    let at =
        |id: &str, t: i64| salespulse_events::encode_json(&call_event(id, "ivanov", t, CallStatus::Answered, 41_000));
    // The first event sets the watermark: T0 - 2 min (allowed lateness).
    assert!(matches!(f.engine.ingest(&record("calls", 0, 0, &at("e1", T0))), Outcome::Applied(_)));
    // 50 minutes behind: late, but inside the 1h window, so applied.
    assert!(matches!(f.engine.ingest(&record("calls", 0, 1, &at("e2", T0 - 50 * 60_000))), Outcome::Applied(_)));
    // More than 1h behind the watermark: no window can count it.
    assert!(matches!(f.engine.ingest(&record("calls", 0, 2, &at("e3", T0 - 63 * 60_000))), Outcome::Late(Kind::Call)));
    let body = f.scrape();
    assert_eq!(value_in(&body, &format!("salespulse_calls_total{ANSWERED_OUT}")), Some(2.0));
    let hour = r#"salespulse_window_calls{manager="ivanov",team="north",direction="outbound",window="1h"}"#;
    assert_eq!(value_in(&body, hour), Some(2.0));
    assert_eq!(f.counter("salespulse_events_late_total", ("stream", "call")), 1);
    // The late record is done: its offset is not read again.
    assert_eq!(f.engine.next_offset("calls", 0), Some(3));
}

#[test]
fn a_rejected_future_event_never_moves_the_watermark() {
    let f = fixture(|_| ());
    let at =
        |id: &str, t: i64| salespulse_events::encode_json(&call_event(id, "ivanov", t, CallStatus::Answered, 41_000));
    assert!(matches!(f.engine.ingest(&record("calls", 0, 0, &at("e1", T0 + 3_600_000))), Outcome::Rejected(_)));
    assert!(matches!(f.engine.ingest(&record("calls", 0, 1, &at("e2", T0 - 30 * 60_000))), Outcome::Applied(_)));
}

proptest! {
    /// A rebuild is a replay into fresh state: after the groups are dropped, replaying every
    /// partition's records, producer retries included as they arrived, renders exactly what the
    /// first pass rendered, for every family; a redelivery afterwards changes nothing.
    #[test]
    fn dropping_the_groups_and_replaying_renders_the_same(
        events in proptest::collection::vec((0usize..6, 0i64..1_800_000, 0u64..90_000, any::<bool>()), 1..50),
        retries in proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
    ) {
        let f = fixture(|c| c.dedup_horizon_ms = 2 * 3_600_000);
        let managers = ["a", "b", "c", "d", "e", "f"];
        // Partition = manager index % 2, as a keyed producer would; retries repeat an earlier
        // payload at a new offset of the same partition.
        let mut log: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        for (i, (manager, ago, talk, answered)) in events.iter().enumerate() {
            let status = if *answered { CallStatus::Answered } else { CallStatus::NoAnswer };
            let event = call_event(&format!("e{i}"), managers[*manager], T0 - ago, status, *talk);
            log[manager % 2].push(salespulse_events::encode_json(&event));
        }
        for retry in &retries {
            for partition in &mut log {
                if !partition.is_empty() {
                    let repeat = partition[retry.index(partition.len())].clone();
                    partition.push(repeat);
                }
            }
        }
        let ingest_all = || {
            for (partition, records) in log.iter().enumerate() {
                for (offset, payload) in records.iter().enumerate() {
                    f.engine.ingest(&record("calls", partition as i32, offset as i64, payload));
                }
            }
        };
        ingest_all();
        let first = f.scrape();
        f.engine.drop_partition_group(0);
        f.engine.drop_partition_group(1);
        prop_assert_eq!(f.engine.managers(), 0);
        ingest_all();
        prop_assert_eq!(&f.scrape(), &first);
        // And once more with a redelivery of everything: nothing moves.
        ingest_all();
        prop_assert_eq!(&f.scrape(), &first);
    }

    /// Against a reference model: whatever mix of redeliveries (same offset) and producer
    /// retries (same event id, new offset) arrives, each manager's totals and 1h window equal a
    /// brute-force count over the distinct events (all within the de-duplication horizon).
    #[test]
    fn totals_match_reference_under_duplicates(
        events in proptest::collection::vec((0usize..4, 0i64..3_000_000, 0u64..90_000, any::<bool>()), 1..60),
        replays in proptest::collection::vec((any::<proptest::sample::Index>(), any::<bool>()), 0..40),
    ) {
        // Every retry here is within the de-duplication horizon (events span under an hour).
        let f = fixture(|c| c.dedup_horizon_ms = 2 * 3_600_000);
        let managers = ["a", "b", "c", "d"];
        let payloads: Vec<(usize, i64, u64, bool, Vec<u8>)> = events
            .iter()
            .enumerate()
            .map(|(i, (m, back, talk, answered))| {
                let status = if *answered { CallStatus::Answered } else { CallStatus::NoAnswer };
                let event = call_event(&format!("e{i}"), managers[*m], T0 - back, status, *talk);
                (*m, T0 - back, *talk, *answered, salespulse_events::encode_protobuf(&event))
            })
            .collect();
        let mut offset = 0i64;
        for (_, _, _, _, payload) in &payloads {
            f.engine.ingest(&record("calls", 0, offset, payload));
            offset += 1;
        }
        for (index, same_offset) in &replays {
            let i = index.index(payloads.len());
            // A redelivery carries its original offset; a producer retry gets a new one.
            let at = if *same_offset { i as i64 } else { offset += 1; offset };
            f.engine.ingest(&record("calls", 0, at, &payloads[i].4));
        }
        let body = f.scrape();
        for (m, manager) in managers.iter().enumerate() {
            let mine: Vec<_> = payloads.iter().filter(|p| p.0 == m).collect();
            let answered = mine.iter().filter(|p| p.3).count();
            let successful = mine.iter().filter(|p| p.3 && p.2 >= 40_000).count();
            let in_hour = mine.iter().filter(|p| p.1 > T0 - 3_600_000 + 120_000).count();
            let series = format!(r#"{{manager="{manager}",team="north",direction="outbound",status="answered"}}"#);
            let got = value_in(&body, &format!("salespulse_calls_total{series}")).unwrap_or(0.0) as usize;
            prop_assert_eq!(got, answered, "{}", manager);
            let dir = format!(r#"{{manager="{manager}",team="north",direction="outbound"}}"#);
            let got = value_in(&body, &format!("salespulse_successful_contacts_total{dir}")).unwrap_or(0.0) as usize;
            prop_assert_eq!(got, successful, "{}", manager);
            let windowed = format!(r#"salespulse_window_calls{{manager="{manager}",team="north",direction="outbound",window="1h"}}"#);
            let got = value_in(&body, &windowed).unwrap_or(0.0) as usize;
            let upper = mine.iter().filter(|p| p.1 > T0 - 3_600_000).count();
            prop_assert!(got >= in_hour && got <= upper, "{} window {} not in [{}, {}]", manager, got, in_hour, upper);
        }
    }
}

#[test]
fn every_record_ends_in_exactly_one_outcome() {
    let f = fixture(|c| c.max_managers = 1);
    let good = salespulse_events::encode_json(&call_event("e1", "ivanov", T0, CallStatus::Answered, 50_000));
    let other = salespulse_events::encode_json(&call_event("e2", "petrova", T0, CallStatus::Answered, 50_000));
    let late = salespulse_events::encode_json(&call_event("e3", "ivanov", T0 - 3 * 3_600_000, CallStatus::Missed, 0));
    let records: [(i64, &[u8]); 6] = [(0, &good), (0, &good), (1, &good), (2, b"{"), (3, &other), (4, &late)];
    for (offset, payload) in records {
        f.engine.ingest(&record("calls", 0, offset, payload));
    }
    let sum = |name: &str| -> u64 {
        f.registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
            .sum()
    };
    let outcomes = sum("salespulse_events_applied_total")
        + sum("salespulse_events_rejected_total")
        + sum("salespulse_events_duplicate_total")
        + sum("salespulse_events_late_total")
        + sum("salespulse_managers_overflow_events_total");
    assert_eq!(sum("salespulse_events_received_total"), 6);
    assert_eq!(outcomes, 6);
    assert_eq!(
        [
            sum("salespulse_events_applied_total"),
            sum("salespulse_events_duplicate_total"),
            sum("salespulse_events_late_total")
        ],
        [1, 2, 1]
    );
}

#[test]
fn calls_not_logged_in_the_crm_are_counted_after_the_delay() {
    let f = fixture(|c| {
        c.cards.export = salespulse_cards::CardExport {
            cards_touched: vec!["1h".into()],
            comments: Vec::new(),
            thin_comments: Vec::new(),
            client_transitions: Vec::new(),
        }
    });
    // call_event names client "+79151112233"; the second call names another client.
    let logged = salespulse_events::encode_json(&call_event("e1", "ivanov", T0 - 60_000, CallStatus::Answered, 60_000));
    let mut other = call_event("e2", "ivanov", T0 - 60_000, CallStatus::Answered, 60_000);
    if let EventBody::Call(call) = &mut other.body {
        call.client_id = Some("client-2".into());
    }
    let unlogged = salespulse_events::encode_json(&other);
    let note = br#"{"kind":"card_change","event_id":"n1","occurred_at":1760000300000,"manager_id":"ivanov","card_id":"deal-1","card_type":"deal","change":"comment_added","comment_length":80,"client_id":"+79151112233"}"#;
    f.engine.ingest(&record("calls", 0, 0, &logged));
    f.engine.ingest(&record("calls", 0, 1, &unlogged));
    assert!(matches!(f.engine.ingest(&record("crm", 0, 0, note)), Outcome::Applied(Kind::CardChange)));
    let series = r#"salespulse_calls_unlogged_total{manager="ivanov",team="north"}"#;
    assert_eq!(f.value(series), Some(0.0));
    // Two successful calls, one card touched, in the windows both families export.
    let ratio = r#"salespulse_window_successful_calls_per_card_touched{manager="ivanov",team="north",window="1h"}"#;
    assert_eq!(f.value(ratio), Some(2.0));
    f.clock.advance(29 * 60_000);
    assert_eq!(f.value(series), Some(0.0));
    f.clock.advance(2 * 60_000);
    assert_eq!(f.value(series), Some(1.0));
    f.clock.advance(60 * 60_000);
    let body = f.scrape();
    assert_eq!(value_in(&body, series), Some(1.0));
    assert!(!body.contains("client-2") && !body.contains("79151112233"));
}

#[test]
fn team_histograms_keep_the_response_times_of_evicted_managers() {
    let f = fixture(|c| c.manager_idle_ms = 3_600_000);
    let message = |id: &str, manager: &str, inbound: bool, at: i64| {
        let direction = if inbound { "inbound" } else { "outbound" };
        format!(
            r#"{{"kind":"message","event_id":"{id}","occurred_at":{at},"manager_id":"{manager}","team":"north","message_id":"{id}","dialog_id":"d-{manager}","channel":"whatsapp","direction":"{direction}"}}"#
        )
    };
    let events = [
        message("q1", "ivanov", true, T0 - 120_000),
        message("a1", "ivanov", false, T0 - 60_000),
        message("q2", "petrova", true, T0 - 120_000),
        message("a2", "petrova", false, T0),
    ];
    for (offset, event) in events.iter().enumerate() {
        assert!(matches!(
            f.engine.ingest(&record("messages", 0, offset as i64, event.as_bytes())),
            Outcome::Applied(_)
        ));
    }
    let count = r#"salespulse_response_time_seconds_count{team="north",channel="whatsapp",hours="all"}"#;
    let sum = r#"salespulse_response_time_seconds_sum{team="north",channel="whatsapp",hours="all"}"#;
    assert_eq!((f.value(count), f.value(sum)), (Some(2.0), Some(180.0)));
    // Both managers go idle and are evicted; the team's histogram does not go down.
    f.clock.advance(2 * 3_600_000);
    assert_eq!(f.engine.evict_idle(), 2);
    let body = f.scrape();
    assert_eq!((value_in(&body, count), value_in(&body, sum)), (Some(2.0), Some(180.0)));
    assert!(!body.contains(r#"manager="ivanov""#), "{body}");
}

mod anomalies {
    //! The engine's anomaly wiring: team scores, baselines fed by `tick`, silence.

    use salespulse_core::window::WindowsConfig;

    use super::*;

    /// 2026-11-23T10:00:00Z, a Monday, inside the default 09:00-18:00 UTC shift.
    const MONDAY_10: i64 = 1_795_428_000_000;
    const HOUR: i64 = 3_600_000;

    fn engine() -> Fixture {
        let config = EngineConfig::new(Windows::new(&WindowsConfig::default()).unwrap());
        let clock = Arc::new(ManualClock::new(MONDAY_10));
        let registry = Registry::new();
        let engine = Engine::new(config, clock.clone(), &registry).unwrap();
        Fixture { engine, clock, registry }
    }

    /// `count` outbound answered calls of `manager` spread over the hour before the clock.
    fn calls(f: &Fixture, manager: &str, count: usize, offset: &mut i64) {
        let now = f.clock.now_ms();
        for i in 0..count {
            // Inside the last 55 minutes: clear of the window's trailing bucket.
            let at = now - 55 * 60_000 + (i as i64) * 50 * 60_000 / count.max(1) as i64;
            let event = call_event(&format!("{manager}-{now}-{i}"), manager, at, CallStatus::Answered, 45_000);
            assert!(matches!(f.engine.ingest_event("calls", 0, *offset, &event), Outcome::Applied(_)));
            *offset += 1;
        }
    }

    fn score(body: &str, manager: &str, signal: &str, basis: &str) -> Option<(f64, String)> {
        body.lines().find_map(|line| {
            let rest = line.strip_prefix("salespulse_anomaly_score{")?;
            let wanted =
                [format!(r#"manager="{manager}""#), format!(r#"signal="{signal}""#), format!(r#"basis="{basis}""#)];
            if !wanted.iter().all(|w| rest.contains(w.as_str())) {
                return None;
            }
            let direction = rest.split("direction=\"").nth(1)?.split('"').next()?.to_owned();
            Some((rest.rsplit_once(' ')?.1.parse().ok()?, direction))
        })
    }

    #[test]
    fn a_manager_far_below_the_team_gets_a_negative_team_score() {
        let f = engine();
        let mut offset = 0;
        for (manager, count) in [("a", 10), ("b", 11), ("c", 9), ("d", 10), ("slow", 1)] {
            calls(&f, manager, count, &mut offset);
        }
        let body = f.scrape();
        let (low, direction) = score(&body, "slow", "calls_made", "team").expect("a team score");
        assert!(low < -3.0, "{low}\n{body}");
        assert_eq!(direction, "below");
        let (typical, _) = score(&body, "a", "calls_made", "team").unwrap();
        assert!(typical.abs() < 1.0, "{typical}");
        // The team's median is one series per team, not per manager.
        assert_eq!(value_in(&body, r#"salespulse_anomaly_team_median{team="north",signal="calls_made"}"#), Some(10.0));
        assert_eq!(
            body.matches(r#"salespulse_anomaly_team_median{team="north",signal="calls_made"}"#).count(),
            1,
            "{body}"
        );
        // No self score before the baseline has warmed up.
        assert_eq!(score(&body, "a", "calls_made", "self"), None);
    }

    #[test]
    fn baselines_fed_by_tick_score_a_drop_against_the_managers_own_history() {
        let f = engine();
        let mut offset = 0;
        // Three weeks of Mondays to Fridays at 09:00-10:00: about 20 calls each time.
        let mut day = 0;
        let mut observed = 0;
        while observed < 12 {
            f.clock.set(MONDAY_10 - 21 * 24 * HOUR + day * 24 * HOUR);
            day += 1;
            let weekday = (day - 1) % 7 < 5;
            if !weekday {
                continue;
            }
            calls(&f, "steady", 19 + (day as usize % 3), &mut offset);
            // Just after the slot ends, the daemon's tick folds it into the baseline.
            f.clock.advance(10_000);
            f.engine.tick();
            observed += 1;
        }
        // Today, Monday: a normal hour scores near 0 ...
        f.clock.set(MONDAY_10);
        calls(&f, "steady", 20, &mut offset);
        let body = f.scrape();
        let (normal, _) = score(&body, "steady", "calls_made", "self").expect("a self score after warm-up");
        assert!(normal.abs() < 1.5, "{normal}\n{body}");
        // ... and a third of the usual rate in the same hour on Tuesday is far below.
        f.clock.set(MONDAY_10 + 24 * HOUR);
        calls(&f, "steady", 7, &mut offset);
        let body = f.scrape();
        let (drop, direction) = score(&body, "steady", "calls_made", "self").unwrap();
        assert!(drop < -3.0, "{drop}\n{body}");
        assert_eq!(direction, "below");
        let baseline = r#"salespulse_anomaly_baseline{manager="steady",team="north",signal="calls_made"}"#;
        assert!(value_in(&body, baseline).is_some_and(|b| (18.0..22.0).contains(&b)), "{body}");
    }

    #[test]
    fn silence_inside_the_shift() {
        let f = engine();
        let mut offset = 0;
        calls(&f, "quiet", 3, &mut offset);
        let silent = r#"salespulse_silent{manager="quiet",team="north"}"#;
        assert_eq!(f.value(silent), Some(0.0));
        f.clock.advance(29 * 60_000);
        assert_eq!(f.value(silent), Some(0.0));
        f.clock.advance(60_000);
        assert_eq!(f.value(silent), Some(1.0));
        // After the shift (18:00) nobody is silent.
        f.clock.set(MONDAY_10 + 9 * HOUR);
        assert_eq!(f.value(silent), Some(0.0));
    }

    #[test]
    fn baselines_survive_a_snapshot_round_trip() {
        let f = engine();
        let mut offset = 0;
        calls(&f, "a", 5, &mut offset);
        f.clock.advance(HOUR);
        f.engine.tick();
        let snapshot = f.engine.baseline_snapshot();
        assert_eq!(snapshot.managers.len(), 1);
        let g = engine();
        assert_eq!(g.engine.restore_baselines(snapshot), 1);
        // Not yet claimed: still in the next snapshot.
        assert_eq!(g.engine.baseline_snapshot().managers.len(), 1);
    }
}

mod reference {
    //! The engine against a brute-force model over the default windows (sliding and calendar):
    //! events arrive shuffled, late, redelivered (same offset) and retried (same id, new offset).

    use proptest::prelude::*;
    use salespulse_calls::{CallExport, CallsConfig};
    use salespulse_core::window::{local_day_start, shift_bounds, WindowKind, WindowsConfig};
    use salespulse_events::CallDirection;

    use super::*;

    const HOUR: i64 = 3_600_000;

    #[derive(Debug, Clone)]
    struct Generated {
        manager: usize,
        age_ms: i64,
        inbound: bool,
        status: usize,
        talk_ms: u64,
    }

    fn generated() -> impl Strategy<Value = Generated> {
        (0usize..3, 0i64..(30 * HOUR), any::<bool>(), 0usize..5, 0u64..120_000).prop_map(
            |(manager, age_ms, inbound, status, talk_ms)| Generated { manager, age_ms, inbound, status, talk_ms },
        )
    }

    fn engine_at(now: i64) -> Fixture {
        let all: Vec<String> = ["5m", "1h", "8h", "today", "shift"].iter().map(|s| s.to_string()).collect();
        let windows =
            Windows::new(&WindowsConfig { time_zone: "Asia/Kathmandu".parse().unwrap(), ..WindowsConfig::default() })
                .unwrap();
        let mut config = EngineConfig::new(windows);
        config.calls = CallsConfig {
            successful_talk_ms: 40_000,
            export: CallExport {
                calls: all.clone(),
                successful_contacts: all.clone(),
                missed_calls: all.clone(),
                talk_seconds: all,
            },
        };
        // Every retry here is within the de-duplication horizon.
        config.dedup_horizon_ms = 48 * HOUR;
        let clock = Arc::new(ManualClock::new(now));
        let registry = Registry::new();
        let engine = Engine::new(config, clock.clone(), &registry).unwrap();
        Fixture { engine, clock, registry }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_window_matches_the_reference(
            events in proptest::collection::vec(generated(), 1..80),
            order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
            replays in proptest::collection::vec((any::<proptest::sample::Index>(), any::<bool>()), 0..30),
            now_offset in 0i64..(48 * HOUR),
        ) {
            let now = T0 + now_offset;
            let f = engine_at(now);
            let windows = f.engine.config().windows.clone();
            let statuses = CallStatus::ALL;
            let calls: Vec<(Generated, Event)> = events
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let mut event = call_event(&format!("e{i}"), ["a", "b", "c"][g.manager], now - g.age_ms, statuses[g.status], g.talk_ms);
                    if let EventBody::Call(call) = &mut event.body {
                        call.direction = if g.inbound { CallDirection::Inbound } else { CallDirection::Outbound };
                    }
                    (g.clone(), event)
                })
                .collect();
            // Arrival order: a seeded shuffle.
            let mut arrival: Vec<usize> = (0..calls.len()).collect();
            let mut seed = order | 1;
            for i in (1..arrival.len()).rev() {
                seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
                arrival.swap(i, (seed % (i as u64 + 1)) as usize);
            }
            // The model: which events count, deciding lateness as the engine must.
            let mut max_event: Option<i64> = None;
            let mut counted = Vec::new();
            let mut offset = 0i64;
            let mut offsets = Vec::new();
            for &i in &arrival {
                let event = &calls[i].1;
                let outcome = f.engine.ingest_event("calls", 0, offset, event);
                offsets.push((offset, i));
                offset += 1;
                let late = max_event.is_some_and(|m| event.occurred_at_ms < m - 2 * 60_000 - windows.largest_ms());
                prop_assert_eq!(matches!(outcome, Outcome::Late(_)), late, "event {} {:?}", i, outcome);
                if !late {
                    max_event = Some(max_event.map_or(event.occurred_at_ms, |m| m.max(event.occurred_at_ms)));
                    counted.push(i);
                }
            }
            for (index, same_offset) in &replays {
                let (original_offset, i) = offsets[index.index(offsets.len())];
                let at = if *same_offset { original_offset } else { offset += 1; offset };
                let outcome = f.engine.ingest_event("calls", 0, at, &calls[i].1);
                prop_assert!(matches!(outcome, Outcome::Duplicate(_) | Outcome::Late(_)), "{:?}", outcome);
            }
            let body = f.scrape();
            let plan_now = f.clock.now_ms();
            for (m, manager) in ["a", "b", "c"].iter().enumerate() {
                let mine: Vec<&Generated> = counted.iter().map(|&i| &calls[i].0).filter(|g| g.manager == m).collect();
                if mine.is_empty() {
                    continue;
                }
                let series = |family: &str, extra: &str| format!(r#"{family}{{manager="{manager}",team="north"{extra}}}"#);
                // Totals are exact.
                for (d, dir) in ["inbound", "outbound"].iter().enumerate() {
                    for (s, status) in statuses.iter().enumerate() {
                        let expected = mine.iter().filter(|g| usize::from(!g.inbound) == d && g.status == s).count();
                        let got = value_in(&body, &series("salespulse_calls_total", &format!(r#",direction="{dir}",status="{}""#, status.as_str())));
                        prop_assert_eq!(got.unwrap_or(0.0) as usize, expected, "{} {} {}", manager, dir, status.as_str());
                    }
                }
                for (w, spec) in windows.specs().iter().enumerate() {
                    // Event-time ranges `[from, to)` the window must count (`certain`) and may
                    // count (`possible`).
                    let (certain, possible) = match spec.kind {
                        WindowKind::Sliding { length_ms, .. } => {
                            let bucket = windows.levels()[spec.level].bucket_ms;
                            ((now - length_ms + bucket + 1, now + 1), (now - length_ms + 1, now + 1))
                        }
                        WindowKind::Today => {
                            let start = local_day_start(windows.time_zone(), plan_now);
                            ((start, now + 1), (start, now + 1))
                        }
                        WindowKind::Shift(shift) => {
                            let bounds = shift_bounds(windows.time_zone(), shift, plan_now);
                            (bounds, bounds)
                        }
                    };
                    let label = format!(r#",window="{}""#, spec.label);
                    let families = [
                        ("salespulse_window_calls", format!(r#",direction="outbound"{label}"#)),
                        ("salespulse_window_successful_contacts", label.clone()),
                        ("salespulse_window_missed_calls", label.clone()),
                        ("salespulse_window_call_talk_seconds", label.clone()),
                    ];
                    let weight = |family: &str, g: &Generated| -> u64 {
                        match family {
                            "salespulse_window_calls" => u64::from(!g.inbound),
                            "salespulse_window_successful_contacts" => u64::from(g.status == 0 && g.talk_ms >= 40_000),
                            "salespulse_window_missed_calls" => u64::from(g.inbound && g.status == 1),
                            _ => g.talk_ms,
                        }
                    };
                    let sum = |family: &str, (from, to): (i64, i64)| -> u64 {
                        mine.iter().filter(|g| (from..to).contains(&(now - g.age_ms))).map(|g| weight(family, g)).sum()
                    };
                    for (family, labels) in families {
                        if family == "salespulse_window_calls" && !mine.iter().any(|g| !g.inbound) {
                            continue;
                        }
                        let (low, high) = (sum(family, certain), sum(family, possible));
                        let scale = if family.ends_with("talk_seconds") { 1000.0 } else { 1.0 };
                        let got = value_in(&body, &series(family, &labels));
                        let got = (got.unwrap_or(f64::NAN) * scale).round() as u64;
                        prop_assert!(low <= got && got <= high, "{} {}{}: {} not in [{}, {}] (window {})", manager, family, labels, got, low, high, w);
                    }
                }
            }
        }
    }
}

/// A mapping for the hook's test: each line of the payload is one canonical JSON event; a line
/// that does not decode is the mapping's error (the real mappings live in `salespulse-sources`).
struct LinesMapper;

impl RecordMapper for LinesMapper {
    fn map(&self, payload: &[u8]) -> (Vec<Event>, Option<Box<dyn std::error::Error + Send + Sync>>) {
        let mut events = Vec::new();
        let mut error = None;
        for line in payload.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match salespulse_events::decode(line, salespulse_events::Encoding::Json, None) {
                Ok(event) => events.push(event),
                Err(e) => error = Some(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        }
        (events, error)
    }
}

#[test]
fn a_mapped_topic_applies_every_event_of_a_record_through_the_normal_path() {
    let f = fixture(|_| ());
    f.engine.set_mapper("raw", Arc::new(LinesMapper));
    let line = |id: &str, status| {
        let mut json = salespulse_events::encode_json(&call_event(id, "ivanov", T0, status, 50_000));
        json.push(b'\n');
        json
    };
    let two = [line("e1", CallStatus::Answered), line("e2", CallStatus::Answered)].concat();
    assert!(matches!(f.engine.ingest(&record("raw", 0, 0, &two)), Outcome::Mapped { events: 2, applied: 2 }));
    // The same offset again: nothing; the same events at a new offset: duplicates by event id.
    assert!(matches!(f.engine.ingest(&record("raw", 0, 0, &two)), Outcome::Duplicate(Duplicate::Offset)));
    assert!(matches!(f.engine.ingest(&record("raw", 0, 1, &two)), Outcome::Mapped { events: 2, applied: 0 }));
    // A filtered payload maps to nothing and is done.
    assert!(matches!(f.engine.ingest(&record("raw", 0, 2, b"")), Outcome::Mapped { events: 0, applied: 0 }));
    // A partly bad record: the good event is applied, the record is rejected for the DLQ.
    let partly = [line("e3", CallStatus::Answered), b"{broken\n".to_vec()].concat();
    match f.engine.ingest(&record("raw", 0, 3, &partly)) {
        Outcome::Rejected(rejection) => assert_eq!(rejection.reason(), "mapping"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.value(&format!("salespulse_calls_total{ANSWERED_OUT}")), Some(3.0));
    assert_eq!(f.counter("salespulse_events_applied_total", ("stream", "call")), 3);
    assert_eq!(f.counter("salespulse_events_duplicate_total", ("kind", "event_id")), 2);
    assert_eq!(f.counter("salespulse_events_rejected_total", ("reason", "mapping")), 1);
    // Other topics keep the contract's decoding.
    let plain = salespulse_events::encode_json(&call_event("e4", "ivanov", T0, CallStatus::Answered, 50_000));
    assert!(matches!(f.engine.ingest(&record("calls", 0, 0, &plain)), Outcome::Applied(_)));
    assert_eq!(f.engine.next_offset("raw", 0), Some(4));
}

mod commerce {
    use std::collections::HashMap;

    use salespulse_cards::{Plans, Target};

    use super::*;

    fn payment(id: &str, currency: Option<&str>) -> Vec<u8> {
        let currency = currency.map_or(String::new(), |c| format!(r#","currency":"{c}""#));
        format!(
            r#"{{"kind":"card_change","event_id":"{id}","occurred_at":{T0},"manager_id":"m1","team":"north",
            "card_id":"deal-1","card_type":"deal","change":"payment_received","invoice_id":"inv-{id}",
            "amount":100{currency}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn an_event_in_another_currency_is_rejected_with_a_reason() {
        let f = fixture(|c| c.cards.commerce.currency = Some("RUB".into()));
        let records =
            [payment("a", Some("RUB")), payment("b", Some("usd")), payment("c", None), payment("d", Some("rub"))];
        let outcomes: Vec<Outcome> =
            records.iter().enumerate().map(|(i, p)| f.engine.ingest(&record("crm", 0, i as i64, p))).collect();
        assert!(matches!(outcomes[0], Outcome::Applied(_)));
        assert!(matches!(&outcomes[1], Outcome::Rejected(r) if r.reason() == "currency_mismatch"));
        assert!(matches!(outcomes[2], Outcome::Applied(_)));
        assert!(matches!(outcomes[3], Outcome::Applied(_)));
        assert_eq!(f.counter("salespulse_events_rejected_total", ("reason", "currency_mismatch")), 1);
        // Three payments summed, the dollars not among them.
        assert_eq!(f.value(r#"salespulse_payments_received_amount_total{manager="m1",team="north"}"#), Some(300.0));
        assert!(reject_reasons().any(|r| r == "currency_mismatch"));
    }

    #[test]
    fn plans_replaced_mid_run_show_at_the_next_scrape() {
        let f = fixture(|_| {});
        f.engine.ingest(&record("crm", 0, 0, &payment("a", None)));
        let won = format!(
            r#"{{"kind":"card_change","event_id":"w","occurred_at":{T0},"manager_id":"m1","team":"north",
            "card_id":"deal-2","card_type":"deal","change":"won","amount":250,"margin":50}}"#
        );
        f.engine.ingest(&record("crm", 0, 1, won.as_bytes()));
        let series = |measure: &str| {
            format!(r#"salespulse_plan_completion_ratio{{manager="m1",team="north",measure="{measure}"}}"#)
        };
        assert_eq!(f.value(&series("revenue")), None, "no plan yet");
        assert_eq!(f.value(r#"salespulse_plan_fact{manager="m1",team="north",measure="revenue"}"#), Some(250.0));
        f.engine.set_plans(Plans {
            managers: HashMap::from([("m1".into(), Target { revenue: Some(1000.0), margin: Some(100.0) })]),
            ..Plans::default()
        });
        assert_eq!(f.value(&series("revenue")), Some(0.25));
        assert_eq!(f.value(&series("margin")), Some(0.5));
        // The JSON view reads the same revenue completion.
        let view = f.engine.team_view("1h").unwrap();
        assert_eq!(view.managers[0].plan_completion, Some(0.25));
        // The team counts payments from now on.
        f.engine.set_plans(Plans {
            managers: HashMap::from([("m1".into(), Target { revenue: Some(1000.0), margin: None })]),
            teams: HashMap::from([(
                "north".into(),
                (Target::default(), Some(salespulse_cards::FactSource::PaymentReceived)),
            )]),
            ..Plans::default()
        });
        assert_eq!(f.value(&series("revenue")), Some(0.1));
        assert_eq!(f.value(&series("margin")), None);
        assert_eq!(f.engine.plans().managers.len(), 1);
    }
}

/// One cursor over records of several topics and partitions, interleaved as a batch has them,
/// leaves the same state as ingesting them one by one (a cursor per record), duplicates and a
/// rejection included.
#[test]
fn a_cursor_across_partitions_and_topics_applies_as_single_records_do() {
    let mut payloads = Vec::new();
    for i in 0..40i64 {
        let manager = ["ivanov", "petrova", "sidorov"][(i % 3) as usize];
        let event = call_event(&format!("e{}", i % 35), manager, T0 - 60_000 + i * 1_000, CallStatus::Answered, 45_000);
        let payload = if i % 2 == 0 {
            salespulse_events::encode_protobuf(&event)
        } else {
            salespulse_events::encode_json(&event)
        };
        payloads.push(if i == 17 { b"{not json".to_vec() } else { payload });
    }
    let topics = ["calls", "calls-b"];
    let records: Vec<Record<'_>> = payloads
        .iter()
        .enumerate()
        // A repeated event id comes back on its first copy's topic and partition.
        .map(|(i, payload)| record(topics[i % 35 % 4 / 2], (i % 35 % 3) as i32, i as i64, payload))
        .collect();

    let one_by_one = fixture(|_| {});
    let single: Vec<_> = records.iter().map(|r| format!("{:?}", one_by_one.engine.ingest(r))).collect();
    let batched = fixture(|_| {});
    let mut cursor = batched.engine.cursor();
    let together: Vec<_> = records.iter().map(|r| format!("{:?}", batched.engine.ingest_in(&mut cursor, r))).collect();

    assert_eq!(single, together);
    assert!(single.iter().any(|o| o.starts_with("Duplicate")), "{single:?}");
    assert!(single.iter().any(|o| o.starts_with("Rejected")), "{single:?}");
    assert_eq!(one_by_one.scrape(), batched.scrape());
    assert!(batched.scrape().contains("manager=\"ivanov\""));
}

/// A client message of manager ivanov in `dialog`, `ago` ms before T0, as JSON.
fn client_message(id: &str, dialog: &str, ago: i64) -> Vec<u8> {
    let message = salespulse_events::Message {
        message_id: id.into(),
        dialog_id: dialog.into(),
        channel: "whatsapp".into(),
        direction: salespulse_events::MessageDirection::Inbound,
        client_id: None,
        new_dialog: None,
    };
    ivanov_json(id, ago, EventBody::Message(message))
}

#[test]
fn entries_and_evictions_at_the_caps_are_exported_by_state() {
    use salespulse_events::CardChangeKind as K;
    let f = fixture(|config| {
        config.messages.max_dialogs_per_manager = 2;
        config.cards.max_cards_per_manager = 3;
    });
    // Five active dialogs within a minute against a cap of 2: three evictions. Five deals
    // against a cap of 3 cards: two.
    for i in 0..5_i64 {
        f.engine.ingest(&record("chat", 0, i, &client_message(&format!("m{i}"), &format!("dialog-{i}"), 60_000 - i)));
        let deal = deal_change(&format!("c{i}"), &format!("deal-{i}"), "acme", K::Created, 60_000 - i);
        f.engine.ingest(&record("crm", 0, i, &deal));
    }
    let body = f.scrape();
    let evicted = |state: &str| f.counter("salespulse_join_state_evictions_total", ("state", state));
    let held = |state: &str| value_in(&body, &format!(r#"salespulse_join_state_entries{{state="{state}"}}"#));
    assert_eq!((evicted("dialogs"), held("dialogs")), (3, Some(2.0)));
    // Three deal cards and their one client.
    assert_eq!((evicted("cards"), held("cards")), (2, Some(4.0)));
    assert_eq!(evicted("joins"), 0);
}
