//! The dead-letter topic on a real broker: bad records go there with their key, payload, original
//! headers and `salespulse.*` headers naming the error and the source; the good records around
//! them are all counted. The dead-letter topic is read back with kcat, a different client.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use salespulse_kafka::create_topics;

use crate::support::{bootstrap, free_port, now_ms, unique, value, write_config, Daemon};

/// Produces `key<TAB>value` lines with kcat, every record with `headers`.
fn kcat_lines(bootstrap: &str, topic: &str, lines: &str, headers: &[&str]) {
    let mut args = vec!["-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-z", "none"];
    for header in headers {
        args.extend(["-H", header]);
    }
    let mut kcat = Command::new("kcat").args(&args).stdin(Stdio::piped()).spawn().expect("kcat");
    kcat.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(kcat.wait().unwrap().success(), "kcat failed");
}

fn good_call(id: &str, manager: &str, now: i64) -> String {
    format!(
        "{manager}\t{{\"kind\":\"call\",\"event_id\":\"{id}\",\"occurred_at\":{now},\"manager_id\":\"{manager}\",\
         \"team\":\"north\",\"call_id\":\"c-{id}\",\"direction\":\"outbound\",\"status\":\"answered\",\
         \"started_at\":{},\"answered_at\":{},\"ended_at\":{now}}}\n",
        now - 120_000,
        now - 60_000
    )
}

/// One dead letter as kcat's JSON envelope shows it.
#[derive(Debug)]
struct Letter {
    key: String,
    payload: String,
    headers: Vec<(String, String)>,
}

impl Letter {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }
}

/// Reads the whole topic with kcat (`-e`: exit at its end).
fn kcat_read(bootstrap: &str, topic: &str) -> Vec<Letter> {
    let output = Command::new("kcat")
        .args(["-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q"])
        .output()
        .expect("kcat");
    assert!(output.status.success(), "kcat -C failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .expect("utf-8 envelopes")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let envelope: serde_json::Value = serde_json::from_str(line).expect("kcat JSON envelope");
            let text = |field: &str| envelope[field].as_str().unwrap_or_default().to_owned();
            let flat: Vec<String> = envelope["headers"]
                .as_array()
                .map(|items| items.iter().map(|item| item.as_str().unwrap_or_default().to_owned()).collect())
                .unwrap_or_default();
            let headers = flat.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
            Letter { key: text("key"), payload: text("payload"), headers }
        })
        .collect()
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_with_their_error_and_good_ones_all_count() {
    let bootstrap = bootstrap();
    let topic = unique("it-dlq-src");
    let dead = unique("it-dlq");
    // One partition: offsets of the source records are known (0, 1, 2, ...).
    create_topics(&bootstrap, &[(&topic, 1), (&dead, 1)]).expect("creating the topics");
    let now = now_ms();

    // Offsets 0..=6, JSON: good, truncated, good, unknown kind, good, a phone number as manager id, good.
    let bad_truncated = "{\"kind\":\"call\",\"event_id\":\"x1\"";
    let bad_kind = format!("{{\"kind\":\"fax\",\"event_id\":\"x2\",\"occurred_at\":{now},\"manager_id\":\"ivanov\"}}");
    let bad_phone = good_call("x3", "+79151112233", now);
    let bad_phone = bad_phone.split_once('\t').unwrap().1.trim_end();
    let json = [
        good_call("g1", "ivanov", now),
        format!("ivanov\t{bad_truncated}\n"),
        good_call("g2", "ivanov", now),
        format!("ivanov\t{bad_kind}\n"),
        good_call("g3", "petrova", now),
        format!("someone\t{bad_phone}\n"),
        good_call("g4", "petrova", now),
    ]
    .concat();
    kcat_lines(&bootstrap, &topic, &json, &["content-type=application/json", "trace-id=t-42"]);
    // Offset 7: declared protobuf, not protobuf.
    kcat_lines(&bootstrap, &topic, "petrova\tnot a protobuf message\n", &["content-type=application/x-protobuf"]);
    // Offset 8: a good one after them all.
    kcat_lines(&bootstrap, &topic, &good_call("g5", "petrova", now), &["content-type=application/json"]);

    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tables = format!(
        "[[kafka.topics]]\nname = \"{topic}\"\nkind = \"call\"\n\
         [kafka.dead_letter]\ntopic = \"{dead}\"\ndelivery_timeout = \"20s\"\n"
    );
    let config = write_config(dir.path(), &bootstrap, &unique("it-dlq-group"), &tables, listen);
    let mut daemon = Daemon::run(&config, listen);

    let body = daemon.scrape_until("4 dead letters acknowledged", Duration::from_secs(60), |body| {
        (value(body, "salespulse_dlq_produced_total") >= Some(4.0)).then(|| body.to_owned())
    });
    for (series, expected) in [
        (r#"salespulse_events_applied_total{stream="call"}"#, 5.0),
        (r#"salespulse_events_rejected_total{reason="malformed_json"}"#, 1.0),
        (r#"salespulse_events_rejected_total{reason="unknown_kind"}"#, 1.0),
        (r#"salespulse_events_rejected_total{reason="invalid_manager_id"}"#, 1.0),
        (r#"salespulse_events_rejected_total{reason="malformed_protobuf"}"#, 1.0),
        ("salespulse_dlq_produced_total", 4.0),
        ("salespulse_dlq_failed_total", 0.0),
        (r#"salespulse_dlq_dropped_total{reason="queue_full"}"#, 0.0),
        (r#"salespulse_calls_total{manager="ivanov",team="north",direction="outbound",status="answered"}"#, 2.0),
        (r#"salespulse_calls_total{manager="petrova",team="north",direction="outbound",status="answered"}"#, 3.0),
    ] {
        assert_eq!(value(&body, series), Some(expected), "{series}\n{body}");
    }
    assert!(!body.contains("79151112233"), "a phone number reached a label");

    let letters = kcat_read(&bootstrap, &dead);
    assert_eq!(letters.len(), 4, "{letters:#?}");
    let expected = [
        ("1", "malformed_json", "ivanov", bad_truncated.to_owned(), "malformed JSON"),
        ("3", "unknown_kind", "ivanov", bad_kind.clone(), "unknown kind"),
        ("5", "invalid_manager_id", "someone", bad_phone.to_owned(), "invalid manager_id"),
        ("7", "malformed_protobuf", "petrova", "not a protobuf message".to_owned(), "malformed protobuf"),
    ];
    for (letter, (offset, reason, key, payload, error)) in letters.iter().zip(expected) {
        assert_eq!(letter.key, key, "{letter:?}");
        assert_eq!(letter.payload, payload, "{letter:?}");
        assert_eq!(letter.header("salespulse.error.reason"), Some(reason), "{letter:?}");
        assert!(letter.header("salespulse.error.message").is_some_and(|m| m.starts_with(error)), "{letter:?}");
        assert_eq!(letter.header("salespulse.source.topic"), Some(topic.as_str()), "{letter:?}");
        assert_eq!(letter.header("salespulse.source.partition"), Some("0"), "{letter:?}");
        assert_eq!(letter.header("salespulse.source.offset"), Some(offset), "{letter:?}");
        let timestamp: i64 = letter.header("salespulse.source.timestamp").unwrap().parse().unwrap();
        assert!((now - 60_000..now_ms() + 1).contains(&timestamp), "{letter:?}");
        // The original headers travel along, so a fixed record can be replayed as it was.
        assert!(letter.header("content-type").is_some(), "{letter:?}");
    }
    assert_eq!(letters[0].header("trace-id"), Some("t-42"));
    // The error text names the field, never the value (the phone number is in the payload only).
    assert!(!letters[2].header("salespulse.error.message").unwrap().contains("79151112233"));

    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}
