//! Hostile input against the real engine and exporter (hermetic: no broker). Every nasty record
//! is rejected with the expected reason, and the full scrape before and after it differs only by
//! the record's receipt and its rejection counter: no state, no other counter, no label moves.
//! A good event after them all still applies.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus::Registry;
use salespulse_core::clock::ManualClock;
use salespulse_core::expo::Format;
use salespulse_core::window::Windows;
use salespulse_engine::{Engine, EngineConfig, Outcome, Record, TopicConfig};
use salespulse_events::Kind;
use salespulse_exporter::Exporter;
use serde_json::{json, Value};

/// The wall clock of the test: 2026-11-23T12:00:00Z.
const NOW: i64 = 1_795_435_200_000;
const MIXED: &str = "events";
const CALLS: &str = "calls";

fn call(id: &str, manager: &str) -> Value {
    json!({
        "kind": "call", "event_id": id, "occurred_at": NOW - 1_000, "manager_id": manager, "team": "north",
        "call_id": format!("c-{id}"), "direction": "outbound", "status": "answered",
        "started_at": NOW - 120_000, "answered_at": NOW - 60_000, "ended_at": NOW - 1_000,
        "client_id": "+79151112233"
    })
}

/// `call("x", "ivanov")` with `field` set to `value` (`Value::Null` removes it).
fn call_with(field: &str, value: Value) -> Vec<u8> {
    let mut event = call("x", "ivanov");
    if value.is_null() {
        event.as_object_mut().unwrap().remove(field);
    } else {
        event[field] = value;
    }
    serde_json::to_vec(&event).unwrap()
}

/// 100000 nested arrays, as JSON.
fn deep_arrays() -> String {
    format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))
}

/// The same with a raw JSON fragment for `field` (for what serde_json cannot write: NaN, huge
/// integers).
fn call_raw(field: &str, raw: &str) -> Vec<u8> {
    let marker = "\"@RAW@\"";
    let text = String::from_utf8(call_with(field, json!("@RAW@"))).unwrap();
    text.replace(marker, raw).into_bytes()
}

fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A protobuf call event written by hand (so invalid values can be written too).
fn proto_call(manager: &[u8], direction: u64, talk_seconds: Option<f64>, occurred_at: i64) -> Vec<u8> {
    let field = |number: u64, wire: u64, out: &mut Vec<u8>| varint(number << 3 | wire, out);
    let bytes = |number: u64, value: &[u8], out: &mut Vec<u8>| {
        field(number, 2, out);
        varint(value.len() as u64, out);
        out.extend_from_slice(value);
    };
    let mut call = Vec::new();
    bytes(1, b"c-p", &mut call);
    field(2, 0, &mut call);
    varint(direction, &mut call);
    field(3, 0, &mut call);
    varint(1, &mut call);
    field(4, 0, &mut call);
    varint((NOW - 120_000) as u64, &mut call);
    field(5, 0, &mut call);
    varint((NOW - 60_000) as u64, &mut call);
    field(6, 0, &mut call);
    varint((NOW - 1_000) as u64, &mut call);
    if let Some(seconds) = talk_seconds {
        field(7, 1, &mut call);
        call.extend_from_slice(&seconds.to_le_bytes());
    }
    let mut event = Vec::new();
    bytes(1, b"p-1", &mut event);
    field(2, 0, &mut event);
    varint(occurred_at as u64, &mut event);
    bytes(3, manager, &mut event);
    bytes(10, &call, &mut event);
    event
}

struct Case {
    name: &'static str,
    topic: &'static str,
    content_type: Option<&'static str>,
    payload: Option<Vec<u8>>,
    reason: &'static str,
}

fn json_case(name: &'static str, payload: Vec<u8>, reason: &'static str) -> Case {
    Case { name, topic: MIXED, content_type: Some("application/json"), payload: Some(payload), reason }
}

fn proto_case(name: &'static str, payload: Vec<u8>, reason: &'static str) -> Case {
    Case { name, topic: MIXED, content_type: Some("application/x-protobuf"), payload: Some(payload), reason }
}

fn cases() -> Vec<Case> {
    let deep = |field: &str| call_raw(field, &deep_arrays());
    let mut deep_proto = Vec::new();
    for _ in 0..10_000 {
        // Field 99, start group: unknown groups nest without end.
        varint(99 << 3 | 3, &mut deep_proto);
    }
    let mut invalid_utf8 = call_with("manager_id", json!("AAAA"));
    let at = invalid_utf8.windows(4).position(|w| w == b"AAAA").unwrap();
    invalid_utf8[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    let mut huge = call_with("team", json!("north"));
    huge.splice(1..1, format!("\"padding\":\"{}\",", "x".repeat(2 << 20)).into_bytes());
    let ahead_ms = 24 * 3_600_000;
    vec![
        json_case("empty payload", Vec::new(), "empty_payload"),
        Case { name: "tombstone", topic: MIXED, content_type: None, payload: None, reason: "empty_payload" },
        json_case("2 MiB payload", huge, "too_large"),
        json_case("100000 nested arrays in a known field", deep("team"), "invalid_field"),
        proto_case("10000 nested protobuf groups", deep_proto, "malformed_protobuf"),
        json_case("invalid UTF-8 in a string", invalid_utf8, "malformed_json"),
        proto_case(
            "invalid UTF-8 in a protobuf string",
            proto_call(b"\xff\xfe", 2, None, NOW - 1_000),
            "malformed_protobuf",
        ),
        json_case("top-level array", b"[1,2,3]".to_vec(), "malformed_json"),
        json_case("top-level null", b"null".to_vec(), "malformed_json"),
        json_case("truncated", b"{\"kind\":\"call\",\"event_id\":\"e".to_vec(), "malformed_json"),
        json_case("duplicate key", br#"{"kind":"call","kind":"message"}"#.to_vec(), "malformed_json"),
        json_case("NaN talk time", call_raw("talk_seconds", "NaN"), "malformed_json"),
        json_case("negative talk time", call_with("talk_seconds", json!(-5)), "invalid_field"),
        json_case("overflowing talk time", call_raw("talk_seconds", "1e400"), "malformed_json"),
        json_case("huge talk time", call_with("talk_seconds", json!(1e300)), "invalid_field"),
        json_case("talk time as a string", call_with("talk_seconds", json!("forty")), "invalid_field"),
        proto_case("NaN talk time in protobuf", proto_call(b"ivanov", 2, Some(f64::NAN), NOW - 1_000), "invalid_field"),
        proto_case(
            "infinite talk time in protobuf",
            proto_call(b"ivanov", 2, Some(f64::INFINITY), NOW - 1_000),
            "invalid_field",
        ),
        proto_case(
            "negative talk time in protobuf",
            proto_call(b"ivanov", 2, Some(-1.0), NOW - 1_000),
            "invalid_field",
        ),
        json_case("overflowing timestamp", call_raw("occurred_at", "99999999999999999999999"), "invalid_field"),
        json_case("timestamp in 1970", call_with("occurred_at", json!(1_000)), "invalid_field"),
        json_case("timestamp 0", call_with("occurred_at", json!(0)), "invalid_field"),
        json_case("negative timestamp", call_with("occurred_at", json!(-1)), "invalid_field"),
        json_case("RFC 3339 in 1970", call_with("occurred_at", json!("1970-01-01T00:00:01Z")), "invalid_field"),
        json_case("RFC 3339 in 9999", call_with("occurred_at", json!("9999-12-31T23:59:59Z")), "invalid_field"),
        json_case("timestamp in 9999", call_with("occurred_at", json!(253_402_300_799_000_i64)), "invalid_field"),
        proto_case("protobuf timestamp in 9999", proto_call(b"ivanov", 2, None, 253_402_300_799_000), "invalid_field"),
        proto_case("protobuf negative timestamp", proto_call(b"ivanov", 2, None, -5), "invalid_field"),
        json_case("a day ahead of the clock", call_with("occurred_at", json!(NOW + ahead_ms)), "future_timestamp"),
        json_case(
            "answered 200 days before it ended",
            [("started_at", NOW - 200 * 86_400_000), ("answered_at", NOW - 200 * 86_400_000)]
                .iter()
                .fold(call("x", "ivanov"), |mut event, (field, at)| {
                    event[*field] = json!(at);
                    event
                })
                .to_string()
                .into_bytes(),
            "invalid_field",
        ),
        json_case("ended before it started", call_with("ended_at", json!(NOW - 200_000)), "invalid_field"),
        json_case("unknown kind", call_with("kind", json!("fax")), "unknown_kind"),
        json_case("unknown direction", call_with("direction", json!("sideways")), "invalid_field"),
        json_case("unknown status", call_with("status", json!("teleported")), "invalid_field"),
        proto_case("unknown protobuf enum value", proto_call(b"ivanov", 77, None, NOW - 1_000), "invalid_field"),
        json_case(
            "no kind and nothing to tell it by",
            serde_json::to_vec(&json!({"event_id": "k", "occurred_at": NOW - 1_000, "manager_id": "ivanov"})).unwrap(),
            "missing_field",
        ),
        json_case("empty event_id", call_with("event_id", json!("")), "missing_field"),
        json_case("empty manager_id", call_with("manager_id", json!("")), "missing_field"),
        json_case("blank manager_id", call_with("manager_id", json!("   ")), "missing_field"),
        json_case("empty call_id", call_with("call_id", json!("")), "missing_field"),
        json_case("event_id of 10 kB", call_with("event_id", json!("e".repeat(10_000))), "invalid_field"),
        json_case(
            "phone number as manager_id",
            call_with("manager_id", json!("+7 915 111-22-33")),
            "invalid_manager_id",
        ),
        json_case(
            "bare phone digits as manager_id",
            call_with("manager_id", json!("89151112233")),
            "invalid_manager_id",
        ),
        proto_case(
            "phone number as protobuf manager_id",
            proto_call(b"+79151112233", 2, None, NOW - 1_000),
            "invalid_manager_id",
        ),
        json_case(
            "control character in manager_id",
            call_with("manager_id", json!("iva\u{0}nov")),
            "invalid_manager_id",
        ),
        json_case("manager_id of 10 kB", call_with("manager_id", json!("m".repeat(10_000))), "invalid_manager_id"),
        json_case("team of 100 kB", call_with("team", json!("t".repeat(100_000))), "invalid_field"),
        Case {
            name: "a message on the calls topic",
            topic: CALLS,
            content_type: None,
            payload: Some(
                serde_json::to_vec(&json!({
                    "kind": "message", "event_id": "m-1", "occurred_at": NOW - 1_000, "manager_id": "ivanov",
                    "dialog_id": "d-1", "channel": "whatsapp", "direction": "inbound"
                }))
                .unwrap(),
            ),
            reason: "kind_mismatch",
        },
        Case {
            name: "garbage without a content type",
            topic: MIXED,
            content_type: None,
            payload: Some(b"\x00\x01\x02garbage\xff".to_vec()),
            reason: "malformed_protobuf",
        },
    ]
}

/// The whole `/metrics` body as lines, minus the render-time gauge (it moves on every scrape).
fn scrape(exporter: &Exporter) -> BTreeMap<String, String> {
    exporter
        .render(Format::Text)
        .lines()
        .filter(|line| !line.starts_with('#') && !line.contains("salespulse_scrape_render_seconds"))
        .filter_map(|line| line.rsplit_once(' ').map(|(series, value)| (series.to_owned(), value.to_owned())))
        .collect()
}

fn counter(lines: &BTreeMap<String, String>, series: &str) -> f64 {
    lines.get(series).map_or(0.0, |value| value.parse().unwrap())
}

#[test]
fn every_nasty_record_is_rejected_with_its_reason_and_nothing_else_changes() {
    let mut config = EngineConfig::new(Windows::parse(&["5m", "1h"]).unwrap());
    config.topics.push(TopicConfig { name: MIXED.into(), encoding: None, kind: None });
    config.topics.push(TopicConfig { name: CALLS.into(), encoding: None, kind: Some(Kind::Call) });
    let registry = Registry::new();
    let engine = Arc::new(Engine::new(config, Arc::new(ManualClock::new(NOW)), &registry).unwrap());
    let exporter = Exporter::new(Arc::clone(&engine), registry, Arc::new(|| true)).unwrap();

    let mut offsets: BTreeMap<&str, i64> = BTreeMap::new();
    let mut ingest = |topic: &'static str, content_type: Option<&str>, payload: Option<&[u8]>| {
        let offset = offsets.entry(topic).or_default();
        *offset += 1;
        let record =
            Record { topic, partition: 0, offset: *offset, content_type: content_type.map(str::as_bytes), payload };
        engine.ingest(&record)
    };
    // Some state first, on both topics, so "nothing changes" is about real series.
    for (topic, id, manager) in [(MIXED, "g1", "ivanov"), (MIXED, "g2", "petrova"), (CALLS, "g3", "ivanov")] {
        let good = serde_json::to_vec(&call(id, manager)).unwrap();
        assert!(matches!(ingest(topic, None, Some(&good)), Outcome::Applied(Kind::Call)));
    }

    let mut failures = Vec::new();
    for case in cases() {
        let before = scrape(&exporter);
        let outcome = ingest(case.topic, case.content_type, case.payload.as_deref());
        let after = scrape(&exporter);
        let Outcome::Rejected(rejection) = &outcome else {
            failures.push(format!("{}: not rejected but {outcome:?}", case.name));
            continue;
        };
        if rejection.reason() != case.reason {
            failures.push(format!(
                "{}: reason {} ({rejection}), expected {}",
                case.name,
                rejection.reason(),
                case.reason
            ));
            continue;
        }
        // The error text is for logs and dead letters: it never repeats a client's number.
        assert!(!rejection.to_string().contains("915"), "{}: {rejection}", case.name);
        let received = format!("salespulse_events_received_total{{topic=\"{}\"}}", case.topic);
        let rejected = format!("salespulse_events_rejected_total{{reason=\"{}\"}}", case.reason);
        let mut changed: Vec<&String> =
            after.keys().filter(|series| before.get(*series) != after.get(*series)).collect();
        changed.extend(before.keys().filter(|series| !after.contains_key(*series)));
        changed.retain(|series| !series.starts_with("process_"));
        let expected_changes = {
            let mut both = vec![&received, &rejected];
            both.sort();
            both
        };
        changed.sort();
        if changed != expected_changes {
            failures.push(format!("{}: series changed: {changed:?}", case.name));
            continue;
        }
        assert_eq!(counter(&after, &received), counter(&before, &received) + 1.0, "{}", case.name);
        assert_eq!(counter(&after, &rejected), counter(&before, &rejected) + 1.0, "{}", case.name);
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases().len(), failures.join("\n"));

    // The engine still applies good input after all that, even with 100000 nested arrays in an
    // unknown field: the contract ignores unknown fields whatever their shape, and the decoder
    // skips them without recursion (no stack overflow).
    let mut good = call("g4", "ivanov");
    good["extra"] = json!("@RAW@");
    let good = serde_json::to_string(&good).unwrap().replace("\"@RAW@\"", &deep_arrays()).into_bytes();
    assert!(matches!(ingest(MIXED, None, Some(&good)), Outcome::Applied(Kind::Call)));
    let lines = scrape(&exporter);
    assert_eq!(
        counter(
            &lines,
            r#"salespulse_calls_total{manager="ivanov",team="north",direction="outbound",status="answered"}"#
        ),
        3.0
    );
    assert!(lines.keys().all(|series| !series.contains("915")), "a phone number reached a label");
}
