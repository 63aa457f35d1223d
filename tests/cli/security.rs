//! Security basics of the real binary (hermetic: Kafka is unreachable, the daemon serves anyway):
//! basic auth on every route but the probes (/healthz, /readyz), TLS with a self-signed certificate made by the openssl
//! CLI and checked by curl, and secrets read from files and the environment that never show up in
//! `check-config`, an error, or the log (at debug level).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{free_port, wait_for};

const METRICS_PASSWORD: &str = "metrics-pw-Zq81xv";
const KAFKA_PASSWORD: &str = "kafka-pw-Hh27cd";
const DLQ_PASSWORD: &str = "dlq-pw-Pp55kk";

/// `curl` a URL over HTTPS trusting `ca`; returns (status, body). Status 0: no HTTP answer.
fn curl(url: &str, ca: &Path, user: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "5", "--cacert", ca.to_str().unwrap(), "-w", "\n%{http_code}", url]);
    if let Some(user) = user {
        command.args(["-u", user]);
    }
    let output = command.output().expect("curl must be installed (make test installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed (make test installs it)");
    assert!(status.success(), "openssl failed");
    (cert, key)
}

fn config(dir: &Path, listen: SocketAddr, cert: &Path, key: &Path) -> std::path::PathBuf {
    let metrics_password = dir.join("metrics-password");
    std::fs::write(&metrics_password, format!("{METRICS_PASSWORD}\n")).unwrap();
    let kafka_password = dir.join("kafka-password");
    std::fs::write(&kafka_password, KAFKA_PASSWORD).unwrap();
    let path = dir.join("secure.toml");
    let text = format!(
        "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\ntopics = [\"calls\"]\n\
         [kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
         \"sasl.username\" = \"salespulse\"\n\"sasl.password_file\" = \"{}\"\n\
         [kafka.dead_letter]\ntopic = \"dead\"\n[kafka.dead_letter.properties]\n\"sasl.password_env\" = \"SALESPULSE_TEST_DLQ_PASSWORD\"\n\
         [http]\nlisten = \"{listen}\"\n\
         [http.basic_auth]\nusername = \"prometheus\"\npassword_file = \"{}\"\n\
         [http.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        kafka_password.display(),
        metrics_password.display(),
        cert.display(),
        key.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [METRICS_PASSWORD, KAFKA_PASSWORD, DLQ_PASSWORD] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn basic_auth_and_tls_guard_every_route_but_the_probes_and_secrets_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (cert, key) = self_signed(dir.path());
    let config = config(dir.path(), listen, &cert, &key);
    let binary = env!("CARGO_BIN_EXE_salespulse");

    // check-config resolves the secrets and prints the properties, redacted.
    let checked = Command::new(binary)
        .args(["check-config", "--config", config.to_str().unwrap()])
        .env("SALESPULSE_TEST_DLQ_PASSWORD", DLQ_PASSWORD)
        .output()
        .unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success(), "{printed}");
    assert!(
        printed.contains("https://") && printed.contains("sasl.password") && printed.contains("<redacted>"),
        "{printed}"
    );
    assert_no_secret("check-config", &printed);
    // A missing variable is an error naming the variable, not a value.
    let failed = Command::new(binary).args(["check-config", "--config", config.to_str().unwrap()]).output().unwrap();
    let error = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success() && error.contains("SALESPULSE_TEST_DLQ_PASSWORD is not set"), "{error}");

    let log = dir.path().join("daemon.log");
    let mut daemon = Command::new(binary)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("SALESPULSE_TEST_DLQ_PASSWORD", DLQ_PASSWORD)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("https://localhost:{}", listen.port());
    let good = format!("prometheus:{METRICS_PASSWORD}");

    let healthz = wait_for("/healthz over TLS", Duration::from_secs(30), || {
        Some(curl(&format!("{base}/healthz"), &cert, None)).filter(|(status, _)| *status == 200)
    });
    assert_eq!(healthz.1, "ok\n");
    // Not ready (Kafka is unreachable), but it answers without credentials.
    assert_eq!(curl(&format!("{base}/readyz"), &cert, None).0, 503);
    for path in ["/metrics", "/", "/api/v1/anything", "/no-such-route"] {
        let url = format!("{base}{path}");
        assert_eq!(curl(&url, &cert, None).0, 401, "{path} without credentials");
        assert_eq!(curl(&url, &cert, Some("prometheus:wrong")).0, 401, "{path} with a wrong password");
        assert_eq!(curl(&url, &cert, Some(&format!("other:{METRICS_PASSWORD}"))).0, 401, "{path} with a wrong user");
    }
    let (status, body) = curl(&format!("{base}/metrics"), &cert, Some(&good));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("salespulse_kafka_assigned_partitions"), "{body}");
    assert!(body.contains(r#"salespulse_http_auth_failures_total{reason="missing"} 4"#), "{body}");
    assert!(body.contains(r#"salespulse_http_auth_failures_total{reason="wrong"} 8"#), "{body}");
    assert!(body.contains("salespulse_dlq_produced_total 0"), "{body}");
    assert_no_secret("/metrics", &body);
    // The right password with a wrong route reaches the router: 404, not 401.
    assert_eq!(curl(&format!("{base}/no-such-route"), &cert, Some(&good)).0, 404);
    // Plain HTTP on the TLS port gets no HTTP answer, and curl refuses an untrusted certificate.
    assert!(crate::support::get(&format!("http://{listen}/healthz"), None).is_none_or(|a| a.status != 200));
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let other_ca = self_signed(&other).0;
    assert_eq!(curl(&format!("{base}/healthz"), &other_ca, None).0, 0);

    let pid = daemon.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_for("the daemon to stop", Duration::from_secs(30), || daemon.try_wait().ok().flatten());
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("HTTP request refused"), "{log}");
    assert_no_secret("the log", &log);
}
