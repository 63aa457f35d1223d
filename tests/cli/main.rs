//! End-to-end tests of the `salespulse` binary that need no broker: configuration checking,
//! serving and prompt shutdown while Kafka is unreachable, and the zero-setup demo.

#[path = "../support/mod.rs"]
mod support;

mod security;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::{free_port, get, value, wait_for, write_config, Daemon};

fn salespulse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_salespulse")).args(args).output().expect("running salespulse")
}

#[test]
fn check_config_accepts_a_good_file_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = "127.0.0.1:9898".parse().unwrap();
    let good = write_config(dir.path(), "127.0.0.1:9092", "g", "topics = [\"calls\"]", listen);
    let output = salespulse(&["check-config", "--config", good.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[kafka]\nbootstrap_servers = \"b:1\"\ntopics = [\"calls\"]\ngroupid = \"typo\"\n").unwrap();
    let output = salespulse(&["check-config", "--config", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("groupid"), "the error should name the unknown key: {stderr}");

    let output = salespulse(&["check-config", "--config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}

#[test]
fn the_shipped_example_configuration_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/salespulse.toml");
    let output = salespulse(&["check-config", "--config", example]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(r#"["5m", "1h", "8h", "today", "shift"]"#), "{stdout}");
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = "127.0.0.1:9898".parse().unwrap();
    let config = write_config(dir.path(), "127.0.0.1:9092", "g", "topics = [\"calls\"]", listen);
    let output = Command::new(env!("CARGO_BIN_EXE_salespulse"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .env("SALESPULSE__KAFKA__GROUP_ID", "from-env")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"from-env\""), "{output:?}");
}

#[test]
fn serves_and_stops_promptly_while_kafka_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Nothing listens on port 1: the consumer never joins a group.
    let config = write_config(dir.path(), "127.0.0.1:1", "g", "topics = [\"calls\"]", listen);
    let mut daemon = Daemon::run(&config, listen);
    let body = daemon.scrape();
    assert!(body.contains("salespulse_events_received_total") || body.contains("salespulse_events_rejected_total"));
    assert_eq!(get(&daemon.url("/healthz"), None).unwrap().status, 200);
    assert_eq!(get(&daemon.url("/readyz"), None).unwrap().status, 503);
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn baselines_are_saved_on_stop_and_read_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let snapshot = dir.path().join("state").join("baselines.json");
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    let extra = format!("topics = [\"calls\"]\n[anomalies]\nsnapshot_path = \"{}\"\n", snapshot.display());
    let config = write_config(dir.path(), "127.0.0.1:1", "g", &extra, listen);
    let mut daemon = Daemon::run(&config, listen);
    daemon.scrape();
    assert!(daemon.terminate(Duration::from_secs(20)).success());
    let saved = std::fs::read_to_string(&snapshot).expect("the snapshot is written on stop");
    assert!(saved.contains("\"version\""), "{saved}");
    // Only the snapshot is left in the directory: the temporary file was renamed over it.
    assert_eq!(std::fs::read_dir(snapshot.parent().unwrap()).unwrap().count(), 1);
    // A corrupt snapshot does not stop the daemon: it starts with empty baselines.
    std::fs::write(&snapshot, "{ not json").unwrap();
    let mut daemon = Daemon::run(&config, listen);
    daemon.scrape();
    assert!(daemon.terminate(Duration::from_secs(20)).success());
}

#[test]
fn demo_shows_moving_numbers_on_the_in_process_kafka() {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let address = listen.to_string();
    let mut daemon = Daemon::start(
        &["demo", "--listen", &address, "--managers", "6", "--events-per-second", "150"],
        &[("RUST_LOG", "warn")],
        listen,
    );
    let readyz = daemon.url("/readyz");
    wait_for("the demo to join its group", Duration::from_secs(60), || get(&readyz, None).filter(|a| a.status == 200));
    // Every stream moves: calls, messages and CRM changes.
    let families = [
        "salespulse_window_calls{",
        "salespulse_messages_total{",
        "salespulse_comments_total{",
        "salespulse_plan_completion_ratio{",
        "salespulse_pipeline_weighted_amount{",
        "salespulse_invoices_issued_total{",
    ];
    let body = daemon.scrape_until("the demo to apply events of every stream", Duration::from_secs(60), |body| {
        let applied = |stream: &str| value(body, &format!(r#"salespulse_events_applied_total{{stream="{stream}"}}"#));
        let moving = ["call", "message", "card_change"].iter().all(|s| applied(s).is_some_and(|n| n >= 10.0));
        let ivanov = families.iter().all(|f| body.contains(&format!(r#"{f}manager="ivanov",team="north""#)));
        // Team anomaly scores need no history: they appear as soon as a team has three managers.
        let scored = body.contains(r#"basis="team""#);
        (moving && ivanov && scored).then(|| body.to_owned())
    });
    assert!(body.contains(r#"salespulse_anomaly_team_median{team="north""#), "{body}");
    // The cheap self scrape: the daemon's counters without any per-manager family.
    let own = get(&daemon.url("/metrics?scope=self"), None).expect("self scrape");
    assert_eq!(own.status, 200);
    assert!(value(&own.body, r#"salespulse_events_applied_total{stream="call"}"#).is_some_and(|n| n >= 10.0));
    assert!(!own.body.contains("manager=\""), "{}", own.body);
    assert_eq!(get(&daemon.url("/metrics?scope=managers"), None).expect("answer").status, 400);
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn sources_test_prints_events_and_precise_errors() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let fixtures = format!("{root}/tests/fixtures/sources");
    let output = salespulse(&[
        "sources",
        "test",
        &format!("{root}/sources/wazzup.toml"),
        &format!("{fixtures}/wazzup-test.json"),
        &format!("{fixtures}/wazzup-messages.json"),
        "--directory",
        &format!("{fixtures}/managers.csv"),
    ]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("wazzup-test.json: 0 event(s), 0 error(s)"), "{stdout}");
    assert!(stdout.contains("wazzup-messages.json: 3 event(s), 0 error(s)"), "{stdout}");
    assert!(stdout.contains(r#""manager_id":"m-ivanov""#), "{stdout}");
    assert!(stdout.contains(r#""manager_id":"unattributed""#), "{stdout}");

    // A payload the mapping cannot read: the error names the rule, field, expression and value.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"messages":[{"messageId":"m1","chatId":"c","dateTime":"yesterday","chatType":"whatsapp"}]}"#,
    )
    .unwrap();
    let output = salespulse(&["sources", "test", &format!("{root}/sources/wazzup.toml"), bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("rule `message`, field `occurred_at` = `time(@.dateTime, 'rfc3339')`"), "{stdout}");
    assert!(stdout.contains(r#"(value: Str("yesterday"))"#), "{stdout}");
}

#[test]
fn sources_check_compiles_the_configured_mappings() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = "127.0.0.1:9898".parse().unwrap();
    let topics = "topics = [\"calls\", { name = \"raw-twilio\", mapping = \"twilio\" }]";
    let config = write_config(dir.path(), "127.0.0.1:9092", "g", topics, listen);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[sources]\ndir = \"{root}/sources\"\ndirectory = \"{root}/sources/managers.csv\"\n"));
    std::fs::write(&config, &text).unwrap();
    let output = salespulse(&["sources", "check", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("twilio: form decoder, rules [\"call_end\"]"), "{stdout}");
    assert!(stdout.contains("topic \"raw-twilio\" -> twilio"), "{stdout}");

    std::fs::write(&config, text.replace("mapping = \"twilio\"", "mapping = \"twillio\"")).unwrap();
    let output = salespulse(&["sources", "check", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("twillio"), "{output:?}");

    // Relative `[sources]` paths are read from the config file's directory: the command runs in
    // the test's working directory, where `mappings/` does not exist.
    let mappings = dir.path().join("mappings");
    std::fs::create_dir(&mappings).unwrap();
    for entry in std::fs::read_dir(format!("{root}/sources")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, mappings.join(path.file_name().unwrap())).unwrap();
    }
    assert!(!std::path::Path::new("mappings").exists());
    let relative = text
        .replace(&format!("dir = \"{root}/sources\""), "dir = \"mappings\"")
        .replace(&format!("directory = \"{root}/sources/managers.csv\""), "directory = \"mappings/managers.csv\"");
    assert!(relative.contains("dir = \"mappings\"") && relative.contains("directory = \"mappings/managers.csv\""));
    std::fs::write(&config, relative).unwrap();
    let output = salespulse(&["sources", "check", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("twilio: form decoder"), "{output:?}");
}

#[test]
fn sighup_reloads_the_plans_file_and_a_bad_one_keeps_the_old_plans() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let plans = dir.path().join("plans.toml");
    std::fs::write(&plans, "[teams.north]\nrevenue = 100\n").unwrap();
    let extra = format!("topics = [\"crm\"]\n[plans]\nfile = \"{}\"\n", plans.display());
    let config = write_config(dir.path(), "127.0.0.1:1", "g", &extra, listen);
    let mut daemon = Daemon::run(&config, listen);
    let team_plan = r#"salespulse_team_plan{team="north",measure="revenue"}"#;
    let reloads =
        |body: &str, result: &str| value(body, &format!(r#"salespulse_plans_reloads_total{{result="{result}"}}"#));
    let body = daemon.scrape();
    assert_eq!(value(&body, team_plan), Some(100.0), "{body}");
    assert_eq!((reloads(&body, "ok"), reloads(&body, "error")), (Some(1.0), Some(0.0)));

    let hangup = |daemon: &Daemon| {
        let pid = daemon.child.id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    };
    std::fs::write(&plans, "[teams.north]\nrevenue = 250\n[managers.m-1]\nrevenue = 10\n").unwrap();
    hangup(&daemon);
    daemon.scrape_until("the new plans after SIGHUP", Duration::from_secs(30), |body| {
        (value(body, team_plan) == Some(250.0) && reloads(body, "ok") == Some(2.0)).then_some(())
    });

    // A broken file: counted, and the plans in force stay.
    std::fs::write(&plans, "[teams.north]\nrevenue = -5\n").unwrap();
    hangup(&daemon);
    let body = daemon.scrape_until("the failed reload to be counted", Duration::from_secs(30), |body| {
        (reloads(body, "error") == Some(1.0)).then(|| body.to_owned())
    });
    assert_eq!(value(&body, team_plan), Some(250.0), "{body}");
    assert_eq!(reloads(&body, "ok"), Some(2.0));
    let status = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");

    // A bad file at start is a configuration error.
    let output = salespulse(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("revenue"), "{output:?}");
}
