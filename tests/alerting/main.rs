//! End-to-end alerting: a real Prometheus scrapes the `salespulse demo`, evaluates the repo's
//! recording and alerting rules (deploy/prometheus/) plus a test-only alert with a short `for`
//! (deploy/prometheus/e2e/e2e-alerts.yml), and a real Alertmanager delivers that alert to a webhook
//! served by this test. Needs `prometheus`, `promtool` and `prometheus-alertmanager` (Debian
//! packages; scripts/install-test-deps.sh installs them). Everything binds 127.0.0.1 only.

#[path = "../support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{free_port, get, wait_for, Daemon};

/// The whole test, from starting the demo to the webhook receiving the alert.
const OVERALL: Duration = Duration::from_secs(90);
/// `--managers 6`: the demo's first six names (crates/salespulse/src/demo.rs).
const MANAGERS: [&str; 6] = ["ivanov", "petrova", "sidorov", "smirnova", "kuznetsov", "popova"];
const E2E_ALERT: &str = "SalespulseE2EClientsWaiting";
const THRESHOLD: &str = "salespulse:threshold:oldest_wait_seconds";

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

/// The firing E2E alert in a webhook body, as (manager, status) of the first match.
fn e2e_alert(body: &str) -> Option<(String, String)> {
    let payload: Value = serde_json::from_str(body).ok()?;
    payload["alerts"].as_array()?.iter().find_map(|alert| {
        (alert["labels"]["alertname"] == E2E_ALERT).then(|| {
            let manager = alert["labels"]["manager"].as_str().unwrap_or_default().to_owned();
            let status = alert["status"].as_str().unwrap_or_default().to_owned();
            (manager, status)
        })
    })
}

#[test]
fn prometheus_scrapes_the_demo_and_alertmanager_delivers_an_alert() {
    for program in ["prometheus", "promtool", "prometheus-alertmanager"] {
        assert!(has(program), "{program} not found: run scripts/install-test-deps.sh");
    }
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

    // 2. The webhook receiver.
    let webhook = start_webhook();

    // 3. Alertmanager.
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: e2e\n  group_by: [alertname, manager]\n  group_wait: 1s\n  group_interval: 1s\n  \
             repeat_interval: 1h\nreceivers:\n  - name: e2e\n    webhook_configs:\n      - url: \"{}\"\n        \
             send_resolved: false\n",
            webhook.url
        ),
    )
    .unwrap();
    if has("amtool") {
        check("amtool", &["check-config", am_config.to_str().unwrap()]);
    }
    let am_storage = dir.path().join("alertmanager-data");
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
        dir.path(),
    );
    wait_for("Alertmanager's /-/ready", left(), || {
        processes.assert_running();
        get(&format!("http://{alertmanager}/-/ready"), None).filter(|a| a.status == 200)
    });

    // 4. Prometheus with the repo's rules and the test-only alert.
    let rule_files =
        ["deploy/prometheus/rules.yml", "deploy/prometheus/alerts.yml", "deploy/prometheus/e2e/e2e-alerts.yml"]
            .map(repo_path);
    let rules_yaml: String = rule_files.iter().map(|f| format!("  - \"{}\"\n", f.display())).collect();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{rules_yaml}\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{alertmanager}\"]\n\
             scrape_configs:\n  - job_name: salespulse\n    static_configs:\n      - targets: [\"{listen}\"]\n"
        ),
    )
    .unwrap();
    check("promtool", &["check", "config", prom_config.to_str().unwrap()]);
    let mut rules_args = vec!["check", "rules"];
    rules_args.extend(rule_files.iter().map(|f| f.to_str().unwrap()));
    check("promtool", &rules_args);
    let tsdb = dir.path().join("prometheus-data");
    let prometheus = local(free_port());
    processes.spawn(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", prom_config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address={prometheus}"),
        ],
        dir.path(),
    );
    wait_for("Prometheus's /-/ready", left(), || {
        processes.assert_running();
        get(&format!("http://{prometheus}/-/ready"), None).filter(|a| a.status == 200)
    });

    // 5. The target is up.
    wait_for("the salespulse target to be up", left(), || {
        let targets = api(prometheus, "/api/v1/targets")?;
        targets["activeTargets"].as_array()?.iter().find(|t| {
            t["labels"]["job"] == "salespulse"
                && t["scrapeUrl"] == format!("http://{listen}/metrics")
                && t["health"] == "up"
        })?;
        Some(())
    });

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
    let (manager, status) = loop {
        processes.assert_running();
        let body = match webhook.bodies.recv_timeout(left().min(Duration::from_secs(1))) {
            Ok(body) => body,
            Err(RecvTimeoutError::Timeout) if !left().is_zero() => continue,
            Err(e) => panic!("the webhook received no {E2E_ALERT} within {OVERALL:?}: {e}"),
        };
        if let Some(found) = e2e_alert(&body) {
            break found;
        }
    };
    assert!(MANAGERS.contains(&manager.as_str()), "{E2E_ALERT} for {manager:?}, not a demo manager");
    assert_eq!(status, "firing");

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
