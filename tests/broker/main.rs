//! End-to-end tests against a real Apache Kafka broker named by `KAFKA_BOOTSTRAP`
//! (`make test` starts one with `scripts/kafka.sh`). JSON fixtures are produced with `kcat`, a
//! different Kafka client than ours; protobuf ones with the crate's producer. The daemon is the real
//! binary, scraped over HTTP.

#[path = "../support/mod.rs"]
mod support;

mod dlq;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use salespulse_events::{Call, CallDirection, CallStatus, Event, EventBody, Message, MessageDirection};
use salespulse_kafka::{create_topics, EventProducer};
use support::{bootstrap, free_port, get, kcat_produce, now_ms, unique, value, wait_for, write_config, Daemon};

fn proto_call(
    id: &str,
    manager: &str,
    now: i64,
    direction: CallDirection,
    status: CallStatus,
    answered_ago_ms: Option<i64>,
    talk_ms: u64,
) -> Vec<u8> {
    salespulse_events::encode_protobuf(&Event {
        event_id: id.into(),
        occurred_at_ms: now,
        manager_id: manager.into(),
        team: Some("south".into()),
        source: Some("pbx".into()),
        body: EventBody::Call(Call {
            call_id: format!("call-{id}"),
            direction,
            status,
            started_at_ms: now - 300_000,
            answered_at_ms: answered_ago_ms.map(|ago| now - ago),
            ended_at_ms: now,
            talk_ms,
            client_id: None,
            card_id: None,
        }),
    })
}

#[test]
fn calls_end_to_end_exact_values_then_clean_restart() {
    let bootstrap = bootstrap();
    let topic = unique("it-calls");
    create_topics(&bootstrap, &[(&topic, 2)]).expect("creating the topic");
    let now = now_ms();

    // 6 JSON records through kcat: 40 s exactly, 39.9 s, missed, busy, a truncated body, and a
    // producer retry of the first event (same event_id, new offset).
    kcat_produce(&bootstrap, &topic, include_str!("../fixtures/e2e/calls-json.txt"), now);
    // 2 protobuf records: 125 s outbound, and inbound whose talk is derived from answered_at (61 s).
    let producer = EventProducer::new(&bootstrap).unwrap();
    let a = proto_call("e2e-p1", "petrova", now, CallDirection::Outbound, CallStatus::Answered, Some(125_000), 125_000);
    producer.send(&topic, "petrova", &a, Some("application/x-protobuf")).unwrap();
    // Leave talk_seconds out of the wire form: the daemon derives it from answered_at..ended_at.
    let proto = {
        use prost::Message as _;
        let full =
            proto_call("e2e-p2", "petrova", now, CallDirection::Inbound, CallStatus::Answered, Some(61_000), 61_000);
        let mut wire = salespulse_events::proto::Event::decode(full.as_slice()).unwrap();
        if let Some(salespulse_events::proto::event::Kind::Call(call)) = wire.kind.as_mut() {
            call.talk_seconds = None;
        }
        wire.encode_to_vec()
    };
    producer.send(&topic, "petrova", &proto, Some("application/x-protobuf")).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let group = unique("it-group");
    // Export lists are configuration too: talk time in the 1h window (by default it is today/shift).
    // One apply thread: this test covers applying on the polling thread; the others use the
    // default (one apply thread per core, records handed over in batches).
    let tables = format!(
        "apply_threads = 1\n[[kafka.topics]]\nname = \"{topic}\"\nkind = \"call\"\n\
         [windows.export]\ncalls = [\"5m\", \"1h\"]\nsuccessful_contacts = [\"1h\"]\n\
         missed_calls = [\"1h\"]\ncall_talk_seconds = [\"1h\"]\n"
    );
    let config = write_config(dir.path(), &bootstrap, &group, &tables, listen);
    let mut daemon = Daemon::run(&config, listen);

    let received = format!(r#"salespulse_events_received_total{{topic="{topic}"}}"#);
    // Wait for the outcomes, not the receipts: they are counted once a record is done.
    let outcomes = |body: &str| -> f64 {
        let applied = value(body, r#"salespulse_events_applied_total{stream="call"}"#).unwrap_or(0.0);
        let rejected = value(body, r#"salespulse_events_rejected_total{reason="malformed_json"}"#).unwrap_or(0.0);
        let duplicate = value(body, r#"salespulse_events_duplicate_total{kind="event_id"}"#).unwrap_or(0.0);
        applied + rejected + duplicate
    };
    let body = daemon.scrape_until("all 8 records done", Duration::from_secs(60), |body| {
        (outcomes(body) >= 8.0).then(|| body.to_owned())
    });
    assert_eq!(value(&body, &received), Some(8.0));
    let expect = [
        (r#"salespulse_calls_total{manager="ivanov",team="north",direction="outbound",status="answered"}"#, 2.0),
        (r#"salespulse_successful_contacts_total{manager="ivanov",team="north",direction="outbound"}"#, 1.0),
        (r#"salespulse_call_talk_seconds_total{manager="ivanov",team="north",direction="outbound"}"#, 79.9),
        (r#"salespulse_calls_total{manager="ivanov",team="north",direction="outbound",status="busy"}"#, 1.0),
        (r#"salespulse_calls_total{manager="ivanov",team="north",direction="inbound",status="missed"}"#, 1.0),
        (r#"salespulse_successful_contacts_total{manager="ivanov",team="north",direction="inbound"}"#, 0.0),
        (r#"salespulse_calls_total{manager="petrova",team="south",direction="outbound",status="answered"}"#, 1.0),
        (r#"salespulse_successful_contacts_total{manager="petrova",team="south",direction="outbound"}"#, 1.0),
        (r#"salespulse_call_talk_seconds_total{manager="petrova",team="south",direction="inbound"}"#, 61.0),
        (r#"salespulse_successful_contacts_total{manager="petrova",team="south",direction="inbound"}"#, 1.0),
        (r#"salespulse_window_calls{manager="ivanov",team="north",direction="outbound",window="5m"}"#, 3.0),
        (r#"salespulse_window_calls{manager="ivanov",team="north",direction="inbound",window="1h"}"#, 1.0),
        (r#"salespulse_window_successful_contacts{manager="ivanov",team="north",window="1h"}"#, 1.0),
        (r#"salespulse_window_missed_calls{manager="ivanov",team="north",window="1h"}"#, 1.0),
        (r#"salespulse_window_call_talk_seconds{manager="ivanov",team="north",window="1h"}"#, 79.9),
        (r#"salespulse_window_successful_contacts{manager="petrova",team="south",window="1h"}"#, 2.0),
        (r#"salespulse_window_missed_calls{manager="petrova",team="south",window="1h"}"#, 0.0),
        (r#"salespulse_events_rejected_total{reason="malformed_json"}"#, 1.0),
        (r#"salespulse_events_duplicate_total{kind="event_id"}"#, 1.0),
        (r#"salespulse_events_applied_total{stream="call"}"#, 6.0),
        ("salespulse_managers", 2.0),
    ];
    for (series, expected) in expect {
        assert_eq!(value(&body, series), Some(expected), "{series}\n{body}");
    }
    // The truncated record and the retry touched nothing else: the busy and missed lines are
    // the only other call series of ivanov.
    assert_eq!(
        body.lines().filter(|l| l.starts_with(r#"salespulse_calls_total{manager="ivanov""#)).count(),
        3,
        "{body}"
    );
    // No client phone number reaches a label.
    assert!(!body.contains("79151112233"));

    // The text format passes Prometheus' own linter; OpenMetrics is served to clients that ask.
    promtool_check_metrics(&body);
    let open =
        get(&daemon.url("/metrics"), Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")).unwrap();
    assert!(open.content_type.starts_with("application/openmetrics-text"), "{}", open.content_type);
    assert!(open.body.ends_with("# EOF\n"));
    assert!(open.body.contains("# TYPE salespulse_calls counter\n"));
    assert_eq!(get(&daemon.url("/readyz"), None).unwrap().status, 200);

    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");

    // Restart in the same group: the state is rebuilt by replaying the 8 committed records
    // (they are within the largest window), without storing their offsets again; then the one
    // new record is applied once. Every value is what it was, plus the new call.
    let mut daemon = Daemon::run(&config, listen);
    let readyz = daemon.url("/readyz");
    wait_for("the restarted daemon to join and rebuild", Duration::from_secs(60), || {
        get(&readyz, None).filter(|a| a.status == 200)
    });
    let next = proto_call("e2e-p3", "petrova", now_ms(), CallDirection::Outbound, CallStatus::NoAnswer, None, 0);
    producer.send(&topic, "petrova", &next, Some("application/x-protobuf")).unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let rebuilt = daemon.scrape_until("the replay and the new record", Duration::from_secs(60), |body| {
        (outcomes(body) >= 9.0).then(|| body.to_owned())
    });
    assert_eq!(value(&rebuilt, &received), Some(9.0), "{rebuilt}");
    assert_eq!(value(&rebuilt, "salespulse_rebuild_records_total"), Some(8.0), "{rebuilt}");
    assert_eq!(value(&rebuilt, "salespulse_rebuild_partitions"), Some(0.0), "{rebuilt}");
    assert_eq!(value(&rebuilt, r#"salespulse_events_duplicate_total{kind="offset"}"#), Some(0.0), "{rebuilt}");
    assert_eq!(
        value(
            &rebuilt,
            r#"salespulse_calls_total{manager="petrova",team="south",direction="outbound",status="no_answer"}"#
        ),
        Some(1.0)
    );
    for (series, expected) in expect.iter().filter(|(series, _)| !series.starts_with("salespulse_events_")) {
        assert_eq!(value(&rebuilt, series), Some(*expected), "{series}\n{rebuilt}");
    }
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}

fn message(id: &str, dialog: &str, channel: &str, inbound: bool, at: i64, new_dialog: Option<bool>) -> Vec<u8> {
    salespulse_events::encode_protobuf(&Event {
        event_id: id.into(),
        occurred_at_ms: at,
        manager_id: "sidorov".into(),
        team: Some("east".into()),
        source: Some("gateway".into()),
        body: EventBody::Message(Message {
            message_id: format!("m-{id}"),
            dialog_id: dialog.into(),
            channel: channel.into(),
            direction: if inbound { MessageDirection::Inbound } else { MessageDirection::Outbound },
            client_id: Some("cl-1".into()),
            new_dialog,
        }),
    })
}

/// The value of the sample of `family` that has exactly `labels` (in any order).
fn sample(body: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(family)?.strip_prefix('{')?;
        let (inside, value) = rest.rsplit_once("} ")?;
        let mut found: Vec<(&str, &str)> = inside
            .split("\",")
            .map(|pair| {
                let (k, v) = pair.split_once("=\"").unwrap_or((pair, ""));
                (k, v.trim_end_matches('"'))
            })
            .collect();
        found.sort_unstable();
        let mut wanted = labels.to_vec();
        wanted.sort_unstable();
        (found == wanted).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn three_streams_on_separate_topics() {
    let bootstrap = bootstrap();
    let (calls, messages, crm) = (unique("it3-calls"), unique("it3-messages"), unique("it3-crm"));
    create_topics(&bootstrap, &[(&calls, 2), (&messages, 2), (&crm, 2)]).expect("creating the topics");
    let now = now_ms();
    let min = 60_000;
    // Calls and card changes as JSON through kcat; messages as protobuf through our producer.
    kcat_produce(&bootstrap, &calls, include_str!("../fixtures/e2e/three-streams-calls.txt"), now);
    kcat_produce(&bootstrap, &crm, include_str!("../fixtures/e2e/three-streams-crm.txt"), now);
    let producer = EventProducer::new(&bootstrap).unwrap();
    for payload in [
        message("ts-m1", "d1", "whatsapp", true, now - 15 * min, Some(true)),
        message("ts-m2", "d1", "whatsapp", false, now - 12 * min, None),
        message("ts-m3", "d1", "whatsapp", true, now - 3 * min, None),
        message("ts-m4", "d2", "telegram", true, now - 8 * min, None),
    ] {
        producer.send(&messages, "sidorov", &payload, Some("application/x-protobuf")).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tables = format!(
        "[[kafka.topics]]\nname = \"{calls}\"\nkind = \"call\"\n\
         [[kafka.topics]]\nname = \"{messages}\"\nkind = \"message\"\n\
         [[kafka.topics]]\nname = \"{crm}\"\nkind = \"card_change\"\n\
         [windows.export]\ncards_touched = [\"1h\"]\ncomments = [\"1h\"]\nthin_comments = [\"1h\"]\n\
         [[cards.pipelines]]\nname = \"sales\"\nstages = [\"new\", \"proposal\"]\n"
    );
    let config = write_config(dir.path(), &bootstrap, &unique("it3-group"), &tables, listen);
    let mut daemon = Daemon::run(&config, listen);
    let body = daemon.scrape_until("all 10 events applied", Duration::from_secs(60), |body| {
        let applied: f64 = ["call", "message", "card_change"]
            .iter()
            .filter_map(|s| sample(body, "salespulse_events_applied_total", &[("stream", s)]))
            .sum();
        (applied >= 10.0).then(|| body.to_owned())
    });
    let me = [("manager", "sidorov"), ("team", "east")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        me.iter().copied().chain(extra.iter().copied()).collect()
    };
    type Labels = Vec<(&'static str, &'static str)>;
    let expect: Vec<(&str, Labels, f64)> = vec![
        ("salespulse_events_applied_total", vec![("stream", "call")], 2.0),
        ("salespulse_events_applied_total", vec![("stream", "message")], 4.0),
        ("salespulse_events_applied_total", vec![("stream", "card_change")], 4.0),
        // Calls: c1 was noted in the CRM 5 minutes later; c2, 40 minutes ago, never was.
        ("salespulse_calls_unlogged_total", with(&[]), 1.0),
        ("salespulse_successful_contacts_total", with(&[("direction", "outbound")]), 2.0),
        // Cards: a real comment and a thin one ("Called", 6 characters), an overdue task on deal-1,
        // deal-2 moved to "proposal" with no task on it.
        ("salespulse_comments_total", with(&[]), 2.0),
        ("salespulse_thin_comments_total", with(&[]), 1.0),
        ("salespulse_window_cards_touched", with(&[("window", "1h")]), 2.0),
        ("salespulse_tasks_open", with(&[]), 1.0),
        ("salespulse_tasks_overdue", with(&[]), 1.0),
        ("salespulse_deals_open", with(&[("pipeline", "sales"), ("stage", "proposal")]), 1.0),
        ("salespulse_deals_without_task", with(&[]), 1.0),
        // Messages: one reply after 3 minutes, two dialogs waiting now.
        ("salespulse_messages_total", with(&[("channel", "whatsapp"), ("direction", "inbound")]), 2.0),
        ("salespulse_messages_total", with(&[("channel", "whatsapp"), ("direction", "outbound")]), 1.0),
        ("salespulse_messages_total", with(&[("channel", "telegram"), ("direction", "inbound")]), 1.0),
        ("salespulse_new_dialogs_total", with(&[("channel", "whatsapp")]), 1.0),
        ("salespulse_new_dialogs_total", with(&[("channel", "telegram")]), 1.0),
        ("salespulse_responses_total", with(&[("channel", "whatsapp")]), 1.0),
        ("salespulse_responses_within_target_total", with(&[("channel", "whatsapp")]), 1.0),
        ("salespulse_window_service_level", with(&[("window", "1h")]), 1.0),
        ("salespulse_dialogs_waiting", with(&[]), 2.0),
        (
            "salespulse_response_time_seconds_count",
            vec![("team", "east"), ("channel", "whatsapp"), ("hours", "all")],
            1.0,
        ),
        (
            "salespulse_response_time_seconds_sum",
            vec![("team", "east"), ("channel", "whatsapp"), ("hours", "all")],
            180.0,
        ),
    ];
    for (family, labels, expected) in &expect {
        assert_eq!(sample(&body, family, labels), Some(*expected), "{family}{labels:?}\n{body}");
    }
    // The oldest waiting question is 8 minutes old, plus however long the test took to get here.
    let oldest = sample(&body, "salespulse_oldest_wait_seconds", &me).unwrap();
    assert!((480.0..600.0).contains(&oldest), "{oldest}");
    // The 3-minute response lies in the (128 s, 181 s] bucket: so does its windowed median.
    let median = sample(
        &body,
        "salespulse_window_response_time_seconds",
        &with(&[("hours", "all"), ("q", "0.5"), ("window", "1h")]),
    );
    assert!(median.is_some_and(|m| (128.0..=181.0).contains(&m)), "{median:?}\n{body}");
    assert!(!body.contains("cl-1") && !body.contains("deal-1") && !body.contains("\"d1\""));
    promtool_check_metrics(&body);
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}

fn promtool_check_metrics(body: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (make test installs Debian's prometheus)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let problems = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "promtool check metrics: {problems}");
}
