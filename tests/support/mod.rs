//! Helpers shared by the end-to-end tests: run the real `salespulse` binary, scrape it over HTTP,
//! wait for conditions (never a fixed sleep), stop it by PID.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The Kafka broker of the real-broker tests (`make test` starts one and sets it).
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").expect("KAFKA_BOOTSTRAP must name a Kafka broker (make test starts one)")
}

/// The wall clock, epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A name no other test run uses (topics, consumer groups, managers).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), now_ms())
}

/// A free TCP port on 127.0.0.1 (bound and released; the daemon binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET url` with an optional `Accept` header; `None` when nothing answers.
pub fn get(url: &str, accept: Option<&str>) -> Option<Answer> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let mut response = request.call().ok()?;
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut body = String::new();
    response.body_mut().as_reader().read_to_string(&mut body).ok()?;
    Some(Answer { status, content_type, body })
}

/// The value of the sample `series` (name with its labels exactly as rendered) in `body`.
pub fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A running `salespulse` process, killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub address: SocketAddr,
}

impl Daemon {
    /// Starts `salespulse ARGS` with extra environment; the daemon must serve on `address`.
    pub fn start(args: &[&str], env: &[(&str, &str)], address: SocketAddr) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_salespulse"));
        command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("starting salespulse");
        Daemon { child, address }
    }

    /// `salespulse run --config CONFIG` serving on `address`.
    pub fn run(config: &Path, address: SocketAddr) -> Daemon {
        let config = config.to_str().expect("utf-8 path");
        Daemon::start(&["run", "--config", config], &[("RUST_LOG", "info")], address)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Waits until `/metrics` answers and returns the body.
    pub fn scrape(&self) -> String {
        let url = self.url("/metrics");
        wait_for("/metrics to answer", Duration::from_secs(30), || get(&url, None).filter(|a| a.status == 200)).body
    }

    /// Scrapes until `check` finds what it wants in the body.
    pub fn scrape_until<T>(&mut self, what: &str, timeout: Duration, mut check: impl FnMut(&str) -> Option<T>) -> T {
        let url = self.url("/metrics");
        let child = &mut self.child;
        wait_for(what, timeout, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("salespulse exited with {status} while waiting for {what}");
            }
            get(&url, None).filter(|a| a.status == 200).and_then(|a| check(&a.body))
        })
    }

    /// Sends SIGTERM and waits for the exit status, at most `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let child = &mut self.child;
        wait_for("salespulse to exit after SIGTERM", timeout, || child.try_wait().ok().flatten())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A config file for `salespulse run` in `dir`.
pub fn write_config(
    dir: &Path,
    bootstrap: &str,
    group: &str,
    topic_tables: &str,
    listen: SocketAddr,
) -> std::path::PathBuf {
    let path = dir.join("salespulse.toml");
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n{topic_tables}\n\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         [http]\nlisten = \"{listen}\"\n"
    );
    std::fs::write(&path, text).expect("writing the config");
    path
}

/// An RFC 3339 time with milliseconds in UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Produces the JSON fixture lines (`key<TAB>value`) with kcat, times filled in relative to `now`
/// (`@AGO_<minutes>@` is that many minutes before `now`, in epoch milliseconds).
pub fn kcat_produce(bootstrap: &str, topic: &str, fixture: &str, now: i64) {
    let mut fixture = fixture.to_owned();
    while let Some(start) = fixture.find("@AGO_") {
        let end = start + 5 + fixture[start + 5..].find('@').expect("closing @");
        let minutes: i64 = fixture[start + 5..end].parse().expect("minutes");
        fixture.replace_range(start..=end, &(now - minutes * 60_000).to_string());
    }
    let text = fixture
        .replace("@NOW_MS@", &now.to_string())
        .replace("@MS_AGO_60@", &(now - 60_000).to_string())
        .replace("@MS_AGO_120@", &(now - 120_000).to_string())
        .replace("@RFC3339_NOW@", &rfc3339(now))
        .replace("@RFC3339_AGO_120@", &rfc3339(now - 120_000));
    let mut kcat = Command::new("kcat")
        .args(["-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-H", "content-type=application/json", "-z", "none"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat must be installed (make test installs it)");
    kcat.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let status = kcat.wait().unwrap();
    assert!(status.success(), "kcat failed: {status}");
}
