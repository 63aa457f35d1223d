//! End-to-end alerting: a real Prometheus evaluates the repo's recording and alerting rules
//! (deploy/prometheus/) over a real salespulse daemon, and a real Alertmanager delivers the alerts to
//! a webhook served by this test.
//!
//! - `prometheus_scrapes_the_demo_and_alertmanager_delivers_an_alert`: the `salespulse demo` plus a
//!   test-only alert with a short `for` (deploy/prometheus/e2e/e2e-alerts.yml).
//! - `clients_waiting_alert_fires_and_resolves_on_real_kafka`: `salespulse run` on the real broker
//!   named by `KAFKA_BOOTSTRAP`, the real `SalespulseClientsWaitingTooLong` (`for: 2m`, so this one
//!   takes a bit over 2 minutes), firing and then resolved.
//!
//! Needs `prometheus`, `promtool` and `prometheus-alertmanager` (Debian packages;
//! scripts/install-test-deps.sh installs them). Everything binds 127.0.0.1 only.

#[path = "../support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use salespulse_events::{Event, EventBody, Message, MessageDirection};
use salespulse_kafka::{create_topics, EventProducer};
use serde_json::Value;
use support::{bootstrap, free_port, get, now_ms, unique, wait_for, write_config, Daemon};

/// The whole demo test, from starting the demo to the webhook receiving the alert.
const OVERALL: Duration = Duration::from_secs(90);
/// `--managers 6`: the demo's first six names (crates/salespulse/src/demo.rs).
const MANAGERS: [&str; 6] = ["ivanov", "petrova", "sidorov", "smirnova", "kuznetsov", "popova"];
const E2E_ALERT: &str = "SalespulseE2EClientsWaiting";
const THRESHOLD: &str = "salespulse:threshold:oldest_wait_seconds";
const WAITING_ALERT: &str = "SalespulseClientsWaitingTooLong";

fn repo_path(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative);
    path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One child process started by the test, with its output in `log`.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// Every external process the test starts; each is stopped by PID on drop, also on panic (then the
/// tail of its log is printed). Declared after the temp dir, so it drops (stops them) first.
#[derive(Default)]
struct Processes(Vec<Process>);

impl Processes {
    fn spawn(&mut self, name: &'static str, program: &str, args: &[String], dir: &Path) -> &mut Child {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("creating a log file");
        let err = out.try_clone().expect("cloning the log file");
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        self.0.push(Process { name, child, log });
        &mut self.0.last_mut().unwrap().child
    }

    /// Panics if a process has exited: it should serve until the end of the test.
    fn assert_running(&mut self) {
        for process in &mut self.0 {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("{} exited early with {status}", process.name);
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for process in self.0.iter_mut().rev() {
            stop(&mut process.child);
            if panicking {
                let log = std::fs::read_to_string(&process.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                eprintln!("---- last lines of {} (pid {}) ----\n{tail}", process.name, process.child.id());
            }
        }
    }
}

/// SIGTERM by PID, up to 10 s to exit, then SIGKILL.
fn stop(child: &mut Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a checker (`promtool`, `amtool`) and panics with its output if it fails.
fn check(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn has(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `GET url` as JSON when it answers 200.
fn json(url: &str) -> Option<Value> {
    let answer = get(url, None).filter(|a| a.status == 200)?;
    serde_json::from_str(&answer.body).ok()
}

/// Prometheus API `data` for `path` when `status` is "success".
fn api(prometheus: SocketAddr, path: &str) -> Option<Value> {
    let mut answer = json(&format!("http://{prometheus}{path}"))?;
    (answer["status"] == "success").then(|| answer["data"].take())
}

/// A webhook receiver: answers every POST with 200 and passes its body on.
struct Webhook {
    url: String,
    bodies: Receiver<String>,
}

fn start_webhook() -> Webhook {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the webhook");
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let (sender, bodies) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sender = sender.clone();
            std::thread::spawn(move || {
                let _ = serve_webhook(stream, &sender);
            });
        }
    });
    Webhook { url, bodies }
}

/// Serves one (keep-alive) connection: reads requests with a Content-Length body.
fn serve_webhook(mut stream: TcpStream, sender: &Sender<String>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
        stream.flush()?;
        if request_line.starts_with("POST ") && sender.send(String::from_utf8_lossy(&body).into_owned()).is_err() {
            return Ok(());
        }
    }
}

/// The alerts of one webhook body (Alertmanager's webhook payload), empty if it is not one.
fn webhook_alerts(body: &str) -> Vec<Value> {
    let mut payload: Value = serde_json::from_str(body).unwrap_or_default();
    match payload["alerts"].take() {
        Value::Array(alerts) => alerts,
        _ => Vec::new(),
    }
}

/// Receives webhook bodies until one holds an alert that `matches`, and returns that alert; panics
/// after `timeout` (or when a started process exits). Bodies without a match are skipped.
fn next_webhook_alert(
    webhook: &Webhook,
    processes: &mut Processes,
    what: &str,
    timeout: Duration,
    mut matches: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        processes.assert_running();
        let left = deadline.saturating_duration_since(Instant::now());
        let body = match webhook.bodies.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(body) => body,
            Err(RecvTimeoutError::Timeout) if !left.is_zero() => continue,
            Err(e) => panic!("the webhook received no {what} within {timeout:?}: {e}"),
        };
        if let Some(alert) = webhook_alerts(&body).into_iter().find(|a| matches(a)) {
            return alert;
        }
    }
}

fn require_tools() {
    for program in ["prometheus", "promtool", "prometheus-alertmanager"] {
        assert!(has(program), "{program} not found: run scripts/install-test-deps.sh");
    }
}

/// Starts Alertmanager routing every alert (grouped by alertname and manager, group wait and
/// interval 1 s) to the `webhook`, and waits until it is ready.
fn start_alertmanager(
    processes: &mut Processes,
    dir: &Path,
    webhook: &Webhook,
    send_resolved: bool,
    timeout: Duration,
) -> SocketAddr {
    let am_config = dir.join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: e2e\n  group_by: [alertname, manager]\n  group_wait: 1s\n  group_interval: 1s\n  \
             repeat_interval: 1h\nreceivers:\n  - name: e2e\n    webhook_configs:\n      - url: \"{}\"\n        \
             send_resolved: {send_resolved}\n",
            webhook.url
        ),
    )
    .unwrap();
    if has("amtool") {
        check("amtool", &["check-config", am_config.to_str().unwrap()]);
    }
    let am_storage = dir.join("alertmanager-data");
    let alertmanager = local(free_port());
    processes.spawn(
        "alertmanager",
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", am_storage.display()),
            format!("--web.listen-address={alertmanager}"),
            "--cluster.listen-address=".to_owned(),
        ],
        dir,
    );
    wait_for("Alertmanager's /-/ready", timeout, || {
        processes.assert_running();
        get(&format!("http://{alertmanager}/-/ready"), None).filter(|a| a.status == 200)
    });
    alertmanager
}

/// Starts Prometheus (scrape, evaluation and scrape timeout 1 s) with the repo's `rule_files`
/// (checked with promtool), scraping `target` as job `salespulse` and alerting to `alertmanager`;
/// waits until it is ready and the target is up.
fn start_prometheus(
    processes: &mut Processes,
    dir: &Path,
    rule_files: &[&str],
    alertmanager: SocketAddr,
    target: SocketAddr,
    timeout: Duration,
) -> SocketAddr {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let rule_files: Vec<PathBuf> = rule_files.iter().map(|f| repo_path(f)).collect();
    let rules_yaml: String = rule_files.iter().map(|f| format!("  - \"{}\"\n", f.display())).collect();
    let prom_config = dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{rules_yaml}\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{alertmanager}\"]\n\
             scrape_configs:\n  - job_name: salespulse\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    check("promtool", &["check", "config", prom_config.to_str().unwrap()]);
    let mut rules_args = vec!["check", "rules"];
    rules_args.extend(rule_files.iter().map(|f| f.to_str().unwrap()));
    check("promtool", &rules_args);
    let tsdb = dir.join("prometheus-data");
    let prometheus = local(free_port());
    processes.spawn(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", prom_config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address={prometheus}"),
        ],
        dir,
    );
    wait_for("Prometheus's /-/ready", left(), || {
        processes.assert_running();
        get(&format!("http://{prometheus}/-/ready"), None).filter(|a| a.status == 200)
    });
    wait_for("the salespulse target to be up", left(), || {
        processes.assert_running();
        let targets = api(prometheus, "/api/v1/targets")?;
        targets["activeTargets"].as_array()?.iter().find(|t| {
            t["labels"]["job"] == "salespulse"
                && t["scrapeUrl"] == format!("http://{target}/metrics")
                && t["health"] == "up"
        })?;
        Some(())
    });
    prometheus
}

#[test]
fn prometheus_scrapes_the_demo_and_alertmanager_delivers_an_alert() {
    require_tools();
    let started = Instant::now();
    let deadline = started + OVERALL;
    let left = || deadline.saturating_duration_since(Instant::now());

    // Dropped last (declared first): the processes are stopped before their directories go.
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut processes = Processes::default();

    // 1. The demo on the in-process Kafka.
    let listen = local(free_port());
    let listen_text = listen.to_string();
    let mut daemon = Daemon::start(
        &["demo", "--listen", &listen_text, "--managers", "6", "--events-per-second", "100"],
        &[("RUST_LOG", "warn")],
        listen,
    );
    let readyz = daemon.url("/readyz");
    wait_for("the demo's /readyz", left(), || get(&readyz, None).filter(|a| a.status == 200));

    // 2. The webhook receiver. 3. Alertmanager.
    let webhook = start_webhook();
    let alertmanager = start_alertmanager(&mut processes, dir.path(), &webhook, false, left());

    // 4. Prometheus with the repo's rules and the test-only alert; 5. the target is up.
    let prometheus = start_prometheus(
        &mut processes,
        dir.path(),
        &["deploy/prometheus/rules.yml", "deploy/prometheus/alerts.yml", "deploy/prometheus/e2e/e2e-alerts.yml"],
        alertmanager,
        listen,
        left(),
    );

    // A PromQL query over the scraped counters.
    let applied = wait_for("salespulse_events_applied_total in Prometheus", left(), || {
        let data = api(prometheus, "/api/v1/query?query=salespulse_events_applied_total")?;
        let result = data["result"].as_array()?.clone();
        (!result.is_empty()).then_some(result)
    });
    let streams: Vec<&str> = applied.iter().filter_map(|r| r["metric"]["stream"].as_str()).collect();
    assert!(streams.contains(&"call") && streams.contains(&"message"), "applied streams: {streams:?}");

    // A recording rule from rules.yml has its value.
    let threshold = wait_for(&format!("the recording rule {THRESHOLD}"), left(), || {
        let data = api(prometheus, &format!("/api/v1/query?query={THRESHOLD}"))?;
        data["result"].as_array()?.first()?["value"][1].as_str()?.parse::<f64>().ok()
    });
    assert_eq!(threshold, 900.0, "{THRESHOLD}");

    // The webhook receives the test alert through Alertmanager.
    let alert = next_webhook_alert(&webhook, &mut processes, E2E_ALERT, left(), |alert| {
        alert["labels"]["alertname"] == E2E_ALERT
    });
    let manager = alert["labels"]["manager"].as_str().unwrap_or_default().to_owned();
    assert!(MANAGERS.contains(&manager.as_str()), "{E2E_ALERT} for {manager:?}, not a demo manager");
    assert_eq!(alert["status"], "firing", "{alert}");

    // Every rule group of the repo is loaded and no rule has failed to evaluate.
    let groups = api(prometheus, "/api/v1/rules").expect("/api/v1/rules");
    let groups = groups["groups"].as_array().expect("rule groups");
    let loaded: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    for (name, kind) in [
        ("salespulse-thresholds", "recording"),
        ("salespulse-team", "recording"),
        ("salespulse-team-daily", "recording"),
        ("salespulse-sales", "alerting"),
        ("salespulse-daemon", "alerting"),
        ("salespulse-e2e", "alerting"),
    ] {
        let group = groups.iter().find(|g| g["name"] == name).unwrap_or_else(|| panic!("no group {name}: {loaded:?}"));
        let rules = group["rules"].as_array().expect("rules");
        assert!(!rules.is_empty(), "group {name} has no rules");
        for rule in rules {
            assert_eq!(rule["type"], kind, "{name}: {rule}");
            let error = rule["lastError"].as_str().unwrap_or_default();
            assert!(error.is_empty() && rule["health"] != "err", "{name}: {rule}");
        }
    }

    // 6. Stop everything by PID: Prometheus and Alertmanager, then the demo (which exits 0).
    drop(processes);
    let exit = daemon.terminate(Duration::from_secs(20));
    assert!(exit.success(), "the demo exited with {exit}");
    drop(dir);
    eprintln!("alerting e2e: {manager} alert delivered; took {:?}", started.elapsed());
}

/// A protobuf message event of `manager` (team east) in `dialog` on WhatsApp.
fn message(manager: &str, id: &str, dialog: &str, inbound: bool, at: i64) -> Vec<u8> {
    salespulse_events::encode_protobuf(&Event {
        event_id: id.into(),
        occurred_at_ms: at,
        manager_id: manager.into(),
        team: Some("east".into()),
        source: Some("gateway".into()),
        body: EventBody::Message(Message {
            message_id: format!("m-{id}"),
            dialog_id: dialog.into(),
            channel: "whatsapp".into(),
            direction: if inbound { MessageDirection::Inbound } else { MessageDirection::Outbound },
            client_id: Some(format!("cl-{dialog}")),
            new_dialog: None,
        }),
    })
}

/// The state (`pending`, `firing`) of the waiting alert of `manager` in Prometheus' /api/v1/alerts,
/// `Some(None)` when Prometheus answers without that alert, `None` when it does not answer.
fn waiting_alert_state(prometheus: SocketAddr, manager: &str) -> Option<Option<String>> {
    let data = api(prometheus, "/api/v1/alerts")?;
    let alerts = data["alerts"].as_array()?;
    Some(
        alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == WAITING_ALERT && a["labels"]["manager"] == manager)
            .and_then(|a| a["state"].as_str().map(str::to_owned)),
    )
}

const DIALOGS: [&str; 3] = ["d1", "d2", "d3"];

#[test]
fn clients_waiting_alert_fires_and_resolves_on_real_kafka() {
    require_tools();
    let started = Instant::now();
    let bootstrap = bootstrap();
    let manager = unique("waiting");
    let topic = unique("alerting-messages");
    create_topics(&bootstrap, &[(&topic, 1)]).expect("creating the topic");

    // Dropped last (declared first): the processes are stopped before their directories go.
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut processes = Processes::default();

    // 1. `salespulse run` on the real broker.
    let listen = local(free_port());
    let tables = format!("[[kafka.topics]]\nname = \"{topic}\"\nkind = \"message\"\n");
    let config = write_config(dir.path(), &bootstrap, &unique("alerting-group"), &tables, listen);
    let mut daemon = Daemon::run(&config, listen);
    let readyz = daemon.url("/readyz");
    wait_for("the daemon's /readyz", Duration::from_secs(60), || {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("salespulse exited with {status} before it was ready");
        }
        get(&readyz, None).filter(|a| a.status == 200)
    });

    // 2. Webhook, Alertmanager (resolved notifications on), Prometheus with the repo's real rules.
    let webhook = start_webhook();
    let alertmanager = start_alertmanager(&mut processes, dir.path(), &webhook, true, Duration::from_secs(30));
    let prometheus = start_prometheus(
        &mut processes,
        dir.path(),
        &["deploy/prometheus/rules.yml", "deploy/prometheus/alerts.yml"],
        alertmanager,
        listen,
        Duration::from_secs(30),
    );
    assert_eq!(waiting_alert_state(prometheus, &manager), Some(None), "{WAITING_ALERT} before any message");

    // 3. A burst of client questions, 20 minutes old, in 3 dialogs: already over the 900 s threshold.
    let producer = EventProducer::new(&bootstrap).unwrap();
    let asked = now_ms() - 20 * 60_000;
    for (n, dialog) in DIALOGS.iter().enumerate() {
        for k in 0..3 {
            let id = format!("{manager}-{dialog}-q{k}");
            let at = asked + (n as i64) * 1_000 + k * 10_000;
            producer
                .send(&topic, &manager, &message(&manager, &id, dialog, true, at), Some("application/x-protobuf"))
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let labels = format!("manager=\"{manager}\",team=\"east\"");
    let waiting = daemon.scrape_until("3 dialogs waiting", Duration::from_secs(60), |body| {
        let dialogs = support::value(body, &format!("salespulse_dialogs_waiting{{{labels}}}"))?;
        let oldest = support::value(body, &format!("salespulse_oldest_wait_seconds{{{labels}}}"))?;
        (dialogs == 3.0).then_some(oldest)
    });
    assert!(waiting > 900.0, "salespulse_oldest_wait_seconds {waiting}, not over 900 s");

    // 4. Prometheus: pending first, then firing once `for: 2m` has passed.
    let state = |processes: &mut Processes| {
        processes.assert_running();
        waiting_alert_state(prometheus, &manager).flatten()
    };
    let first =
        wait_for(&format!("{WAITING_ALERT} pending in Prometheus"), Duration::from_secs(60), || state(&mut processes));
    assert_eq!(first, "pending", "{WAITING_ALERT} for {manager} was {first} before it was pending");
    let pending_at = Instant::now();
    let fired = wait_for(&format!("{WAITING_ALERT} firing in Prometheus"), Duration::from_secs(240), || {
        let now = state(&mut processes);
        assert!(now.is_some(), "{WAITING_ALERT} for {manager} went away while pending");
        now.filter(|s| s == "firing")
    });
    assert_eq!(fired, "firing");
    let pending_for = pending_at.elapsed();
    assert!(pending_for >= Duration::from_secs(110), "{WAITING_ALERT} fired after {pending_for:?} pending, not 2m");

    // The webhook receives it through Alertmanager.
    let alert = next_webhook_alert(&webhook, &mut processes, "firing notification", Duration::from_secs(60), |a| {
        a["labels"]["alertname"] == WAITING_ALERT && a["labels"]["manager"] == manager.as_str()
    });
    assert_eq!(alert["status"], "firing", "{alert}");
    assert_eq!(alert["labels"]["team"], "east", "{alert}");
    assert_eq!(alert["labels"]["severity"], "page", "{alert}");
    let fired_after = started.elapsed();

    // 5. The manager replies in every dialog: nothing waits, the alert resolves.
    for dialog in DIALOGS {
        let id = format!("{manager}-{dialog}-reply");
        producer
            .send(&topic, &manager, &message(&manager, &id, dialog, false, now_ms()), Some("application/x-protobuf"))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    daemon.scrape_until("no dialog waiting", Duration::from_secs(60), |body| {
        let dialogs = support::value(body, &format!("salespulse_dialogs_waiting{{{labels}}}"))?;
        let oldest = support::value(body, &format!("salespulse_oldest_wait_seconds{{{labels}}}"))?;
        (dialogs == 0.0 && oldest == 0.0).then_some(())
    });
    wait_for(&format!("{WAITING_ALERT} to stop firing in Prometheus"), Duration::from_secs(60), || {
        state(&mut processes).is_none().then_some(())
    });
    let resolved =
        next_webhook_alert(&webhook, &mut processes, "resolved notification", Duration::from_secs(90), |a| {
            a["labels"]["alertname"] == WAITING_ALERT
                && a["labels"]["manager"] == manager.as_str()
                && a["status"] == "resolved"
        });
    assert_eq!(resolved["status"], "resolved", "{resolved}");

    // 6. Stop everything by PID: Prometheus and Alertmanager, then the daemon (which exits 0).
    drop(processes);
    let exit = daemon.terminate(Duration::from_secs(20));
    assert!(exit.success(), "salespulse exited with {exit}");
    drop(dir);
    eprintln!(
        "alerting e2e: {WAITING_ALERT} for {manager} pending {pending_for:?}, fired after {fired_after:?}, \
         resolved after {:?}",
        started.elapsed()
    );
}
