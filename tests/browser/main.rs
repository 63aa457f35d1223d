//! The live page and its JSON API end to end: events produced with `kcat` on a real Kafka broker
//! (`KAFKA_BOOTSTRAP`), the real daemon consuming them, the JSON API asserted value by value and
//! checked against `docs/openapi.yaml` (validated with openapi-spec-validator, bodies with
//! openapi-schema-validator), and the page driven in Debian's headless chromium through
//! playwright-core (`tests/browser/page.mjs`): rows and values, a window switch, the team filter,
//! sorting, threshold colours, the ingest panel, and a screenshot saved under
//! `target/test-artifacts/browser/`. Any page error or console error fails the test.

#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use salespulse_kafka::create_topics;
use serde_json::Value;
use support::{bootstrap, free_port, get, kcat_produce, now_ms, unique, wait_for, write_config, Daemon};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn get_json(daemon: &Daemon, path: &str) -> (u16, Value, String) {
    let answer = get(&daemon.url(path), None).unwrap_or_else(|| panic!("{path} did not answer"));
    assert!(answer.content_type.starts_with("application/json"), "{path}: {}", answer.content_type);
    let body: Value = serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{path}: {e}\n{}", answer.body));
    (answer.status, body, answer.body)
}

fn row<'a>(list: &'a Value, manager: &str) -> &'a Value {
    list["managers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == manager)
        .unwrap_or_else(|| panic!("no row for {manager} in {list}"))
}

/// Runs `tests/browser/check_openapi.py` on the spec and `(schema, body)` pairs.
fn check_openapi(dir: &Path, bodies: &[(&str, &str, &str)]) {
    let mut args: Vec<String> = vec![format!("{ROOT}/docs/openapi.yaml")];
    for (name, schema, body) in bodies {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, body).unwrap();
        args.push(schema.to_string());
        args.push(path.to_str().unwrap().to_owned());
    }
    let output = Command::new("python3")
        .arg(format!("{ROOT}/tests/browser/check_openapi.py"))
        .args(&args)
        .output()
        .expect("python3 (make test installs openapi-spec-validator)");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "OpenAPI check failed:\n{report}");
    assert_eq!(report.matches(": matches ").count(), bodies.len(), "{report}");
}

/// Drives the page in chromium; returns what `page.mjs` saw.
fn drive_page(url: &str, screenshot: &Path, windows: &[&str]) -> Value {
    let script = format!("{ROOT}/tests/browser/page.mjs");
    assert!(
        Path::new(&format!("{ROOT}/tests/browser/node_modules/playwright-core")).exists(),
        "playwright-core is missing: run scripts/install-test-deps.sh (npm ci --prefix tests/browser)"
    );
    let output = Command::new("node")
        .arg(&script)
        .arg(url)
        .arg(screenshot)
        .args(windows)
        .stderr(Stdio::inherit())
        .output()
        .expect("node (make test installs nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("page.mjs printed no JSON ({e}), exit {}:\n{stdout}", output.status));
    assert_eq!(seen["errors"], Value::Array(vec![]), "errors in the page: {}", seen["errors"]);
    assert!(output.status.success(), "page.mjs exited with {}", output.status);
    seen
}

fn page_row<'a>(rows: &'a Value, manager: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["manager"] == manager)
        .unwrap_or_else(|| panic!("no page row for {manager}: {rows}"))
}

/// The raw value the page shows in column `col` of `manager`'s row.
fn shown(rows: &Value, manager: &str, col: &str) -> Option<String> {
    page_row(rows, manager)["cells"][col]["value"].as_str().map(str::to_owned)
}

fn class(rows: &Value, manager: &str, col: &str) -> String {
    page_row(rows, manager)["cells"][col]["class"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn live_page_and_api_against_a_real_broker() {
    let bootstrap = bootstrap();
    let calls = unique("br-calls");
    let messages = unique("br-messages");
    let crm = unique("br-crm");
    create_topics(&bootstrap, &[(&calls, 1), (&messages, 1), (&crm, 1)]).expect("creating the topics");
    let now = now_ms();
    // ivanov: calls 1 and 2 minutes ago (60 s, 30 s talk), 20 minutes ago (120 s), an inbound
    // missed call 40 minutes ago, and one truncated record. petrova: a 45 s call 2 minutes ago, a
    // no-answer 30 minutes ago, and a client waiting since 20 minutes ago. sidorov: 5 tasks due
    // 5 minutes ago.
    kcat_produce(&bootstrap, &calls, include_str!("../fixtures/browser/calls.txt"), now);
    kcat_produce(&bootstrap, &messages, include_str!("../fixtures/browser/messages.txt"), now);
    kcat_produce(&bootstrap, &crm, include_str!("../fixtures/browser/crm.txt"), now);

    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tables = format!(
        "[[kafka.topics]]\nname = \"{calls}\"\nkind = \"call\"\n\
         [[kafka.topics]]\nname = \"{messages}\"\nkind = \"message\"\n\
         [[kafka.topics]]\nname = \"{crm}\"\nkind = \"card_change\"\n"
    );
    let config = write_config(dir.path(), &bootstrap, &unique("br-group"), &tables, listen);
    let daemon = Daemon::run(&config, listen);

    // Every record done: 6 calls, 1 message, 5 card changes applied and the truncated one rejected.
    let ingest = wait_for("all 13 records done", Duration::from_secs(60), || {
        let answer = get(&daemon.url("/api/v1/ingest"), None).filter(|a| a.status == 200)?;
        let body: Value = serde_json::from_str(&answer.body).ok()?;
        let applied: u64 = body["streams"].as_array()?.iter().filter_map(|s| s["applied"].as_u64()).sum();
        let rejected: u64 = body["rejected"].as_object()?.values().filter_map(Value::as_u64).sum();
        (applied + rejected >= 13).then_some(answer.body)
    });
    let ingest_json: Value = serde_json::from_str(&ingest).unwrap();
    assert_eq!(ingest_json["rejected"]["malformed_json"], 1, "{ingest}");
    let calls_topic = ingest_json["topics"].as_array().unwrap().iter().find(|t| t["topic"] == calls.as_str()).unwrap();
    assert_eq!(
        (calls_topic["received"].as_u64(), calls_topic["rejected"]["malformed_json"].as_u64()),
        (Some(7), Some(1))
    );
    // The client's connection state comes from librdkafka's statistics (once a second): await it.
    let kafka_up = wait_for("the Kafka client to report a connection", Duration::from_secs(30), || {
        let answer = get(&daemon.url("/api/v1/ingest"), None)?;
        let body: Value = serde_json::from_str(&answer.body).ok()?;
        (body["kafka"]["up"] == true).then_some(body)
    });
    assert!(kafka_up["kafka"]["contact_age_seconds"].as_f64().is_some(), "{kafka_up}");
    assert_eq!(kafka_up["sources"], serde_json::json!([]), "no source mapping configured");
    let age = calls_topic["record_age_seconds"].as_f64().expect("the Kafka client reports the topic");
    assert!((0.0..120.0).contains(&age), "{age}");
    let recent = &ingest_json["recent_rejects"][0];
    assert_eq!((recent["topic"].as_str(), recent["reason"].as_str()), (Some(calls.as_str()), Some("malformed_json")));
    assert!(!recent["error"].as_str().unwrap().contains("answe"), "no payload content: {recent}");

    // The JSON API, value by value.
    let (status, hour, hour_text) = get_json(&daemon, "/api/v1/managers");
    assert_eq!(status, 200);
    assert_eq!(hour["window"], "1h", "the default window");
    let (_, five, five_text) = get_json(&daemon, "/api/v1/managers?window=5m");
    let ivanov = (row(&five, "ivanov"), row(&hour, "ivanov"));
    let fields = |m: &Value| {
        (m["calls"].as_u64(), m["successful_contacts"].as_u64(), m["missed_calls"].as_u64(), m["talk_seconds"].as_f64())
    };
    assert_eq!(fields(ivanov.0), (Some(2), Some(1), Some(0), Some(90.0)));
    assert_eq!(fields(ivanov.1), (Some(4), Some(2), Some(1), Some(210.0)));
    let sparkline: Vec<u64> =
        ivanov.1["calls_sparkline"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert_eq!(hour["sparkline"]["points"].as_u64(), Some(sparkline.len() as u64));
    assert_eq!(hour["sparkline"]["bucket_seconds"], 120);
    assert_eq!(sparkline.iter().sum::<u64>(), 4, "the sparkline sums to the hour: {sparkline:?}");
    assert_eq!(fields(row(&five, "petrova")), (Some(1), Some(1), Some(0), Some(45.0)));
    assert_eq!(fields(row(&hour, "petrova")), (Some(2), Some(1), Some(0), Some(45.0)));
    let petrova = row(&hour, "petrova");
    assert_eq!(petrova["clients_waiting"], 1);
    let waited = petrova["oldest_wait_seconds"].as_f64().unwrap();
    assert!((1200.0..1500.0).contains(&waited), "waiting since 20 minutes ago: {waited}");
    assert_eq!(petrova["plan_completion"], Value::Null);
    let sidorov = row(&hour, "sidorov");
    assert_eq!((sidorov["tasks_overdue"].as_u64(), sidorov["tasks_open"].as_u64()), (Some(5), Some(5)));
    assert_eq!(sidorov["calls"], Value::Null, "no call state: null, not 0");
    assert_eq!(sidorov["team"], "north");

    let (status, north, _) = get_json(&daemon, "/api/v1/managers?team=north");
    assert_eq!(status, 200);
    let names: Vec<&str> =
        north["managers"].as_array().unwrap().iter().map(|m| m["manager"].as_str().unwrap()).collect();
    assert_eq!(names, ["ivanov", "sidorov"]);
    let (status, one, one_text) = get_json(&daemon, "/api/v1/managers/ivanov?window=5m");
    assert_eq!(status, 200);
    assert_eq!(&one["manager"], ivanov.0);
    let (status, _, missing_text) = get_json(&daemon, "/api/v1/managers/nobody");
    assert_eq!(status, 404);
    let (status, _, bad_window_text) = get_json(&daemon, "/api/v1/managers?window=3d");
    assert_eq!(status, 400);
    let (status, thresholds, thresholds_text) = get_json(&daemon, "/api/v1/thresholds");
    assert_eq!(status, 200);
    assert_eq!(thresholds["thresholds"]["oldest_wait_seconds"], 900.0);
    check_openapi(
        dir.path(),
        &[
            ("hour", "ManagerList", &hour_text),
            ("five", "ManagerList", &five_text),
            ("one", "ManagerOne", &one_text),
            ("ingest", "Ingest", &ingest),
            ("thresholds", "Thresholds", &thresholds_text),
            ("missing", "Error", &missing_text),
            ("bad-window", "Error", &bad_window_text),
        ],
    );

    // The page in a real browser.
    let artifacts = PathBuf::from(format!("{ROOT}/target/test-artifacts/browser"));
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("team-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let seen = drive_page(&daemon.url("/"), &screenshot, &["5m", "1h"]);
    assert_eq!(seen["status"], 200);
    assert_eq!(seen["initialWindow"], "1h");
    let offered: Vec<&str> = seen["offered"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(&offered[..4], ["5m", "1h", "shift", "today"]);
    let rows_5m = &seen["windows"]["5m"]["rows"];
    let rows_1h = &seen["windows"]["1h"]["rows"];
    assert_eq!(seen["windows"]["5m"]["pressed"], "true");
    for rows in [rows_5m, rows_1h] {
        let managers: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["manager"].as_str().unwrap()).collect();
        assert_eq!(managers, ["ivanov", "petrova", "sidorov"], "sorted by manager");
    }
    // Switching the window changes exactly the windowed values.
    for (col, in_5m, in_1h) in [("calls", "2", "4"), ("successful_contacts", "1", "2"), ("talk_seconds", "90", "210")] {
        assert_eq!(shown(rows_5m, "ivanov", col).as_deref(), Some(in_5m), "5m {col}");
        assert_eq!(shown(rows_1h, "ivanov", col).as_deref(), Some(in_1h), "1h {col}");
    }
    assert_eq!(shown(rows_1h, "petrova", "calls").as_deref(), Some("2"));
    assert_eq!(shown(rows_5m, "petrova", "calls").as_deref(), Some("1"));
    // The page read its sparkline a few seconds after the API did: the same buckets, or, when a
    // 2-minute boundary passed in between, the same shifted one point to the left.
    let page_points: Vec<u64> = shown(rows_1h, "ivanov", "calls_sparkline")
        .expect("a sparkline")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let shifted: Vec<u64> = sparkline[1..].iter().copied().chain([0]).collect();
    assert!(page_points == sparkline || page_points == shifted, "page {page_points:?} api {sparkline:?}");
    assert_eq!(page_row(rows_1h, "ivanov")["cells"]["calls_sparkline"]["svg"], true);
    assert_eq!(shown(rows_1h, "sidorov", "calls"), None, "absent, shown as a dash");
    assert_eq!(page_row(rows_1h, "sidorov")["cells"]["calls"]["text"], "–");
    assert_eq!(shown(rows_1h, "sidorov", "tasks_overdue").as_deref(), Some("5"));
    // Colours follow the alert thresholds: 5 overdue tasks (fires at >= 5), a wait of over 15 min.
    assert_eq!(class(rows_1h, "sidorov", "tasks_overdue"), "bad");
    assert_eq!(class(rows_1h, "petrova", "oldest_wait_seconds"), "bad");
    assert_eq!(class(rows_1h, "ivanov", "tasks_overdue"), "none");
    assert_eq!(seen["north"], serde_json::json!(["ivanov", "sidorov"]));
    assert_eq!(
        seen["sortedByCalls"],
        serde_json::json!(["ivanov", "petrova", "sidorov"]),
        "most calls first, absent last"
    );
    assert_eq!(seen["sortHeader"], "descending");

    let topics = seen["ingest"]["topics"].as_array().unwrap();
    let calls_row = topics.iter().find(|t| t["topic"] == calls.as_str()).unwrap();
    assert_eq!((calls_row["received"].as_str(), calls_row["rejected"].as_str()), (Some("7"), Some("malformed_json 1")));
    assert_eq!(seen["ingest"]["rejects"], serde_json::json!(["malformed_json"]));
    assert!(
        seen["ingest"]["totals"].as_str().unwrap().starts_with("Kafka up · Managers held 3"),
        "{}",
        seen["ingest"]["totals"]
    );
    let applied: Vec<(&str, &str)> = seen["ingest"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stream"].as_str().unwrap(), s["applied"].as_str().unwrap()))
        .collect();
    assert_eq!(applied, [("call", "6"), ("message", "1"), ("card_change", "5")]);

    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot: {} bytes", png.len());
    println!("screenshot of the live page: {}", screenshot.display());
}
