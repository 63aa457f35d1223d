//! The webhook gateway end to end on a real Kafka broker (`KAFKA_BOOTSTRAP`): real-shaped Twilio,
//! Wazzup and Bitrix24 webhooks are POSTed over HTTP to `salespulse gateway`, which writes them to
//! raw topics; `salespulse run` consumes those topics through the shipped mappings, and the
//! metrics it serves are asserted exactly.

#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use salespulse_kafka::create_topics;
use support::{bootstrap, free_port, get, now_ms, unique, value, wait_for, write_config, Daemon};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const TWILIO_TOKEN: &str = "twilio-auth-token-for-tests";
const WAZZUP_TOKEN: &str = "wazzup-secret";
const BITRIX_TOKEN: &str = "bitrix-app-token";
const PUBLIC_URL: &str = "https://hooks.example.test";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/tests/fixtures/sources/{name}")).unwrap()
}

/// POSTs `body` and returns the status code.
fn post(url: &str, content_type: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let mut request = agent.post(url).header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send(body).map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Replaces `key=value` of a form body (value taken up to the next `&`).
fn set_form(body: &str, key: &str, value: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    body.split('&')
        .map(|pair| if pair.split('=').next() == Some(key) { format!("{key}={encoded}") } else { pair.to_owned() })
        .collect::<Vec<_>>()
        .join("&")
}

fn twilio_signed(body: &str) -> String {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(body.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    salespulse_sources::twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_URL}/hooks/twilio"), &params)
}

#[test]
fn webhooks_through_the_gateway_become_exact_metrics() {
    let bootstrap = bootstrap();
    let (twilio, wazzup, bitrix) = (unique("raw-twilio"), unique("raw-wazzup"), unique("raw-bitrix24"));
    create_topics(&bootstrap, &[(&twilio, 1), (&wazzup, 2), (&bitrix, 1)]).expect("creating the topics");

    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hooks: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let topics = format!(
        "topics = [{{ name = \"{twilio}\", mapping = \"twilio\" }}, {{ name = \"{wazzup}\", mapping = \"wazzup\" }}, \
         {{ name = \"{bitrix}\", mapping = \"bitrix24\" }}]"
    );
    let config = write_config(dir.path(), &bootstrap, &unique("gw"), &topics, listen);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("\"session.timeout.ms\"", "\"auto.offset.reset\" = \"earliest\"\n\"session.timeout.ms\"");
    text.push_str(&format!(
        "\n[sources]\ndir = \"{ROOT}/sources\"\ndirectory = \"{ROOT}/tests/fixtures/sources/managers.csv\"\n\
         [gateway]\nlisten = \"{hooks}\"\npublic_url = \"{PUBLIC_URL}\"\nmax_body_bytes = 8192\n"
    ));
    std::fs::write(&config, &text).unwrap();
    let config_arg = config.to_str().unwrap();

    let env = [
        ("RUST_LOG", "info"),
        ("SALESPULSE_TWILIO_AUTH_TOKEN", TWILIO_TOKEN),
        ("SALESPULSE_WAZZUP_TOKEN", WAZZUP_TOKEN),
        ("SALESPULSE_BITRIX24_APPLICATION_TOKEN", BITRIX_TOKEN),
    ];
    let mut gateway = Daemon::start(&["gateway", "--config", config_arg], &env, hooks);
    wait_for("the gateway to answer", Duration::from_secs(30), || {
        get(&gateway.url("/healthz"), None).filter(|a| a.status == 200)
    });
    let mut daemon = Daemon::run(&config, listen);
    daemon.scrape();

    let now = now_ms();
    let rfc2822 = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc2822();
    let rfc3339 = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339();
    let hook = |source: &str| format!("http://{hooks}/hooks/{source}");

    // Twilio: a completed call (73 s talk), signed; a ringing callback (no event); a forged one.
    let completed = set_form(&fixture("twilio-status-completed.form"), "Timestamp", &rfc2822(now - 60_000));
    let form = "application/x-www-form-urlencoded";
    assert_eq!(
        post(&hook("twilio"), form, &[("X-Twilio-Signature", &twilio_signed(&completed))], completed.as_bytes()),
        202
    );
    let ringing = set_form(&fixture("twilio-status-ringing.form"), "Timestamp", &rfc2822(now - 120_000));
    assert_eq!(
        post(&hook("twilio"), form, &[("X-Twilio-Signature", &twilio_signed(&ringing))], ringing.as_bytes()),
        202
    );
    let forged = completed.replace("CallDuration=73", "CallDuration=7300");
    assert_eq!(
        post(&hook("twilio"), form, &[("X-Twilio-Signature", &twilio_signed(&completed))], forged.as_bytes()),
        401
    );

    // Wazzup: the ping, a batch of three messages and a receipt, the same batch retried, a bad token.
    let json = "application/json";
    let wazzup_url = format!("{}?token={WAZZUP_TOKEN}", hook("wazzup"));
    assert_eq!(post(&wazzup_url, json, &[], fixture("wazzup-test.json").as_bytes()), 200);
    let batch = fixture("wazzup-messages.json")
        .replace("2026-07-27T14:50:59.220Z", &rfc3339(now - 300_000))
        .replace("2026-07-27T14:53:10.002Z", &rfc3339(now - 200_000))
        .replace("2026-07-27T15:01:00.000Z", &rfc3339(now - 100_000));
    assert_eq!(post(&wazzup_url, json, &[], batch.as_bytes()), 200);
    assert_eq!(post(&wazzup_url, json, &[], batch.as_bytes()), 200);
    assert_eq!(post(&format!("{}?token=nope", hook("wazzup")), json, &[], batch.as_bytes()), 401);

    // Bitrix24: an answered inbound call of 95 s with the application token in the body.
    let call =
        set_form(&fixture("bitrix24-voximplant-call-end.form"), "data%5BCALL_START_DATE%5D", &rfc3339(now - 400_000));
    let call = format!("{call}&auth%5Bapplication_token%5D={BITRIX_TOKEN}");
    assert_eq!(post(&hook("bitrix24"), form, &[], call.as_bytes()), 202);
    assert_eq!(post(&hook("bitrix24"), form, &[], call.replace(BITRIX_TOKEN, "x").as_bytes()), 401);

    // Limits: an oversized body and an unknown source.
    assert_eq!(post(&wazzup_url, json, &[], &vec![b' '; 9000]), 413);
    assert_eq!(post(&hook("nobody"), json, &[], b"{}"), 404);

    // Six raw records were written (2 Twilio, 3 Wazzup, 1 Bitrix24): wait until all are consumed
    // and their eight events have an outcome (a record is counted as received before the apply
    // threads are done with it): two calls and three messages applied, the retried batch's three
    // messages dropped as duplicates.
    let received =
        |body: &str, topic: &str| value(body, &format!("salespulse_events_received_total{{topic=\"{topic}\"}}"));
    let applied = |body: &str, stream: &str| {
        value(body, &format!("salespulse_events_applied_total{{stream=\"{stream}\"}}")).unwrap_or(0.0)
    };
    let body = daemon.scrape_until("every raw record consumed and applied", Duration::from_secs(60), |body| {
        let done = received(body, &twilio) == Some(2.0)
            && received(body, &wazzup) == Some(3.0)
            && received(body, &bitrix) == Some(1.0)
            && applied(body, "call") + applied(body, "message") >= 5.0
            && value(body, r#"salespulse_events_duplicate_total{kind="event_id"}"#) >= Some(3.0);
        done.then(|| body.to_owned())
    });
    let calls = |labels: &str| value(&body, &format!("salespulse_calls_total{{{labels}}}"));
    // Twilio's 73 s call and Bitrix24's 95 s call, both inbound to m-ivanov (team north).
    assert_eq!(calls(r#"manager="m-ivanov",team="north",direction="inbound",status="answered""#), Some(2.0));
    assert_eq!(
        value(&body, r#"salespulse_call_talk_seconds_total{manager="m-ivanov",team="north",direction="inbound"}"#),
        Some(168.0)
    );
    let messages = |labels: &str| value(&body, &format!("salespulse_messages_total{{{labels}}}"));
    assert_eq!(messages(r#"manager="m-ivanov",team="north",channel="whatsapp",direction="inbound""#), Some(1.0));
    assert_eq!(messages(r#"manager="m-ivanov",team="north",channel="whatsapp",direction="outbound""#), Some(1.0));
    assert_eq!(messages(r#"manager="unattributed",channel="telegram",direction="inbound""#), Some(1.0));
    // The retried batch mapped again and was dropped by event id.
    assert_eq!(value(&body, r#"salespulse_events_duplicate_total{kind="event_id"}"#), Some(3.0));
    assert_eq!(value(&body, r#"salespulse_source_events_total{rule="message",source="wazzup"}"#), Some(6.0));
    assert_eq!(value(&body, r#"salespulse_source_events_total{rule="call_end",source="twilio"}"#), Some(1.0));
    assert_eq!(value(&body, r#"salespulse_events_rejected_total{reason="mapping"}"#), Some(0.0));

    let gateway_metrics = get(&gateway.url("/metrics"), None).unwrap().body;
    let requests = |source: &str, outcome: &str| {
        value(
            &gateway_metrics,
            &format!("salespulse_gateway_requests_total{{outcome=\"{outcome}\",source=\"{source}\"}}"),
        )
    };
    assert_eq!(requests("twilio", "accepted"), Some(2.0));
    assert_eq!(requests("twilio", "unauthorized"), Some(1.0));
    assert_eq!(requests("wazzup", "accepted"), Some(3.0));
    assert_eq!(requests("wazzup", "unauthorized"), Some(1.0));
    assert_eq!(requests("wazzup", "too_large"), Some(1.0));
    assert_eq!(requests("bitrix24", "accepted"), Some(1.0));
    assert_eq!(requests("", "unknown_source"), Some(1.0));

    assert!(daemon.terminate(Duration::from_secs(20)).success());
    assert!(gateway.terminate(Duration::from_secs(20)).success());
}
