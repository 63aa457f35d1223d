//! Scale-out and survival against a real Apache Kafka broker (`KAFKA_BOOTSTRAP`; the outage test
//! starts its own broker with `scripts/kafka.sh` so stopping it disturbs no other test). The
//! daemons are the real binary, killed with SIGKILL and scraped over HTTP; every wait polls a
//! condition with a deadline.
//!
//! What "equal" means here: every series a scrape shows, except the process's own
//! instrumentation, which legitimately differs between a process that crashed and one that did
//! not (see [`compared`]).

#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use salespulse_events::{Call, CallDirection, CallStatus, Event, EventBody, Message, MessageDirection};
use salespulse_kafka::{create_topics, EventProducer};
use support::{bootstrap, free_port, get, now_ms, unique, value, wait_for, Daemon};

/// Families left out of every comparison, and why. They describe the process, not the sales
/// team: a replica that crashed and rebuilt has counted its own history differently.
/// - `process_*`: CPU, memory, file descriptors, start time of the process.
/// - `salespulse_scrape_render_seconds`: how long the previous scrape took.
/// - `salespulse_events_*_total`: ingest outcomes since this process started; a restarted
///   process starts at 0 and counts its replay again (received, applied, duplicate, ...).
/// - `salespulse_kafka_*`: this consumer's connection, assignment and rebalance bookkeeping,
///   staleness ages measured from its own start.
/// - `salespulse_rebuild_*`: rebuild progress of this process (the crashed one rebuilt).
/// - `salespulse_managers_overflow_events_total`, `salespulse_managers_split_total`,
///   `salespulse_join_state_evictions_total`: process counters of ingest decisions (0 here).
///
/// Everything else is compared: every windowed gauge, every per-manager `_total` counter (the
/// state's own totals: all events of these tests lie within the rebuild horizon, so a rebuilt
/// state has them all), team histograms, joins, anomaly scores, `salespulse_managers`,
/// `salespulse_join_state_entries` and `salespulse_last_event_timestamp_seconds`.
fn compared(series: &str) -> bool {
    const PROCESS: [&str; 8] = [
        "process_",
        "salespulse_scrape_render_seconds",
        "salespulse_events_",
        "salespulse_kafka_",
        "salespulse_rebuild_",
        "salespulse_managers_overflow_events_total",
        "salespulse_managers_split_total",
        "salespulse_join_state_evictions_total",
    ];
    !PROCESS.iter().any(|prefix| series.starts_with(prefix))
}

/// Gauges that are not sums over managers, left out when replicas are added up: the newest
/// event time is a maximum, and the team median, spread and team scores of the anomaly
/// families are computed over the team members *of one replica* (docs/scaling.md says so).
fn additive(series: &str) -> bool {
    !series.starts_with("salespulse_last_event_timestamp_seconds")
        && !series.starts_with("salespulse_anomaly_team_")
        && !series.contains("basis=\"team\"")
}

/// Ages measured at the scrape instant: two daemons scraped a few milliseconds apart differ by
/// that much, so these compare within a tolerance.
fn scrape_time_dependent(series: &str) -> bool {
    series.starts_with("salespulse_oldest_wait_seconds")
}

/// A scrape as `series -> value`.
fn parse(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn scrape_map(daemon: &Daemon) -> Option<BTreeMap<String, f64>> {
    get(&daemon.url("/metrics"), None).filter(|a| a.status == 200).map(|a| parse(&a.body))
}

/// The differences between two scrapes over the compared series (empty when equal).
fn differences(actual: &BTreeMap<String, f64>, expected: &BTreeMap<String, f64>) -> Vec<String> {
    let mut keys: Vec<&String> = actual.keys().chain(expected.keys()).filter(|k| compared(k)).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (a, e) = (actual.get(key), expected.get(key));
            let equal = match (a, e) {
                (Some(a), Some(e)) if scrape_time_dependent(key) => (a - e).abs() <= 5.0,
                (Some(a), Some(e)) => a == e || (a - e).abs() <= 1e-9 * e.abs().max(1.0),
                _ => false,
            };
            (!equal).then(|| format!("{key}: got {a:?}, want {e:?}"))
        })
        .collect()
}

/// Series-wise sum of several replicas' scrapes (additive series only).
fn summed(scrapes: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut total = BTreeMap::new();
    for scrape in scrapes {
        for (series, value) in scrape.iter().filter(|(s, _)| additive(s)) {
            *total.entry(series.clone()).or_insert(0.0) += value;
        }
    }
    total
}

/// Polls until `actual()` equals `expected()` on the compared series, or panics with the last
/// differences.
fn wait_equal(
    what: &str,
    timeout: Duration,
    mut actual: impl FnMut() -> Option<BTreeMap<String, f64>>,
    mut expected: impl FnMut() -> Option<BTreeMap<String, f64>>,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + timeout;
    let mut last = vec!["no scrape answered".to_owned()];
    loop {
        if let (Some(a), Some(e)) = (actual(), expected()) {
            last = differences(&a, &e);
            if last.is_empty() {
                return e;
            }
        }
        assert!(Instant::now() < deadline, "{what}: still different after {timeout:?}:\n{}", last.join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The events of a test: calls and chat messages of 12 managers in 3 teams, at most 90 s old,
/// keyed by manager; every 25th record repeats an earlier event (a producer retry).
struct Events {
    rng: StdRng,
    sent: Vec<(String, Vec<u8>)>,
    distinct_calls: usize,
    distinct_messages: usize,
}

impl Events {
    fn new(seed: u64) -> Events {
        Events { rng: StdRng::seed_from_u64(seed), sent: Vec::new(), distinct_calls: 0, distinct_messages: 0 }
    }

    fn next(&mut self) -> (String, Vec<u8>) {
        let n = self.sent.len();
        if n > 0 && n % 25 == 24 {
            let repeat = self.sent[self.rng.random_range(0..n)].clone();
            self.sent.push(repeat.clone());
            return repeat;
        }
        let rng = &mut self.rng;
        let manager_index = rng.random_range(0..12);
        let manager = format!("mgr{manager_index:02}");
        let team = ["north", "south", "east"][manager_index % 3];
        let at = now_ms() - rng.random_range(0..90_000);
        let id = format!("ev-{n}-{}", rng.random::<u32>());
        let body = if rng.random_bool(0.5) {
            self.distinct_calls += 1;
            let status = [CallStatus::Answered, CallStatus::NoAnswer, CallStatus::Busy, CallStatus::Missed]
                [rng.random_range(0..4)];
            let direction = if status == CallStatus::Missed || rng.random_bool(0.3) {
                CallDirection::Inbound
            } else {
                CallDirection::Outbound
            };
            let talk_ms = if status == CallStatus::Answered { rng.random_range(5_000..200_000) } else { 0 };
            EventBody::Call(Call {
                call_id: format!("call-{id}"),
                direction,
                status,
                started_at_ms: at - 300_000,
                answered_at_ms: (status == CallStatus::Answered).then_some(at - talk_ms as i64),
                ended_at_ms: at,
                talk_ms,
                client_id: Some(format!("client-{}", rng.random_range(0..30))),
                card_id: None,
            })
        } else {
            self.distinct_messages += 1;
            EventBody::Message(Message {
                message_id: format!("m-{id}"),
                dialog_id: format!("dialog-{manager}-{}", rng.random_range(0..3)),
                channel: ["whatsapp", "telegram"][rng.random_range(0..2)].into(),
                direction: if rng.random_bool(0.5) { MessageDirection::Inbound } else { MessageDirection::Outbound },
                client_id: Some(format!("client-{}", rng.random_range(0..30))),
                new_dialog: None,
            })
        };
        let event = Event {
            event_id: id,
            occurred_at_ms: at,
            manager_id: manager.clone(),
            team: Some(team.into()),
            source: Some("scaling-test".into()),
            body,
        };
        let record = (manager, salespulse_events::encode_json(&event));
        self.sent.push(record.clone());
        record
    }

    /// Produces `count` more records to `topic` and waits for their acknowledgement.
    fn produce(&mut self, producer: &EventProducer, topic: &str, count: usize) {
        for _ in 0..count {
            let (key, payload) = self.next();
            producer.send(topic, &key, &payload, Some("application/json")).expect("queueing a record");
        }
        producer.flush(Duration::from_secs(60)).expect("flushing the producer");
    }
}

/// The calls a scrape shows in the `1h` window, summed over managers and directions.
fn calls_in_hour(scrape: &BTreeMap<String, f64>) -> f64 {
    scrape
        .iter()
        .filter(|(s, _)| s.starts_with("salespulse_window_calls{") && s.contains("window=\"1h\""))
        .map(|(_, v)| v)
        .sum()
}

/// The chat messages a scrape shows in the `1h` window, summed over managers and directions.
fn messages_in_hour(scrape: &BTreeMap<String, f64>) -> f64 {
    scrape
        .iter()
        .filter(|(s, _)| s.starts_with("salespulse_window_messages{") && s.contains("window=\"1h\""))
        .map(|(_, v)| v)
        .sum()
}

/// Waits until `daemon` shows every distinct event of `events` in its windows.
fn wait_truth(daemon: &mut Daemon, events: &Events, timeout: Duration) {
    let (calls, messages) = (events.distinct_calls as f64, events.distinct_messages as f64);
    daemon.scrape_until(&format!("{calls} calls and {messages} messages in the 1h windows"), timeout, |body| {
        let scrape = parse(body);
        (calls_in_hour(&scrape) == calls && messages_in_hour(&scrape) == messages).then_some(())
    });
}

fn ready(daemon: &Daemon) -> bool {
    get(&daemon.url("/readyz"), None).is_some_and(|a| a.status == 200)
}

fn gauge(daemon: &Daemon, series: &str) -> Option<f64> {
    get(&daemon.url("/metrics"), None).filter(|a| a.status == 200).and_then(|a| value(&a.body, series))
}

fn listen() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// One daemon's directory, config and address; it can be started again on the same port.
struct Replica {
    _dir: tempfile::TempDir,
    config: PathBuf,
    address: SocketAddr,
}

impl Replica {
    fn new(bootstrap: &str, group: &str, topic: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let address = listen();
        // Offsets are committed every 200 ms (librdkafka's default is 5 s), so that a crash at
        // any point of these short runs usually leaves committed history to rebuild.
        let config = dir.path().join("salespulse.toml");
        let text = format!(
            "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n\
             [[kafka.topics]]\nname = \"{topic}\"\n\
             [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             \"auto.commit.interval.ms\" = \"200\"\n\
             [http]\nlisten = \"{address}\"\n"
        );
        std::fs::write(&config, text).expect("writing the config");
        Replica { _dir: dir, config, address }
    }

    fn start(&self) -> Daemon {
        Daemon::run(&self.config, self.address)
    }
}

fn kill9(daemon: &mut Daemon) {
    daemon.child.kill().expect("SIGKILL");
    daemon.child.wait().expect("reaping the killed daemon");
}

#[test]
fn two_replicas_split_the_partitions_and_the_survivor_rebuilds_the_dead_ones_state() {
    let bootstrap = bootstrap();
    let topic = unique("scale-events");
    create_topics(&bootstrap, &[(&topic, 4)]).expect("creating the topic");
    let producer = EventProducer::new(&bootstrap).unwrap();
    let mut events = Events::new(now_ms() as u64);

    // The single-replica truth, and two replicas in another group.
    let truth_replica = Replica::new(&bootstrap, &unique("scale-truth"), &topic);
    let mut truth = truth_replica.start();
    let group = unique("scale-group");
    let (replica_one, replica_two) =
        (Replica::new(&bootstrap, &group, &topic), Replica::new(&bootstrap, &group, &topic));
    let one = replica_one.start();
    let mut two = replica_two.start();
    let assigned = "salespulse_kafka_assigned_partitions";
    wait_for("both replicas to hold 2 of the 4 partitions", Duration::from_secs(90), || {
        (gauge(&one, assigned)? == 2.0 && gauge(&two, assigned)? == 2.0 && ready(&one) && ready(&two)).then_some(())
    });

    events.produce(&producer, &topic, 400);
    wait_truth(&mut truth, &events, Duration::from_secs(60));
    // Each manager lives in one replica; added up, the replicas are the single-replica truth.
    let before = wait_equal(
        "the replicas added up vs. one replica",
        Duration::from_secs(60),
        || Some(summed(&[scrape_map(&one)?, scrape_map(&two)?])),
        || scrape_map(&truth).map(|s| summed(&[s])),
    );
    assert!(calls_in_hour(&before) > 0.0 && messages_in_hour(&before) > 0.0);
    let managers_one = gauge(&one, "salespulse_managers").unwrap();
    assert!(managers_one > 0.0 && managers_one < 12.0, "managers of replica one: {managers_one}");

    // One replica dies; the other takes its partitions, rebuilds their state and serves it all.
    kill9(&mut two);
    wait_for("the survivor to hold all 4 partitions, rebuilt", Duration::from_secs(90), || {
        (gauge(&one, assigned)? == 4.0 && ready(&one)).then_some(())
    });
    let rebuilt = scrape_map(&one).unwrap();
    assert!(rebuilt["salespulse_rebuild_records_total"] > 0.0, "nothing was replayed");
    assert_eq!(rebuilt["salespulse_rebuild_partitions"], 0.0);
    events.produce(&producer, &topic, 200);
    wait_truth(&mut truth, &events, Duration::from_secs(60));
    wait_equal("the survivor vs. one replica", Duration::from_secs(60), || scrape_map(&one), || scrape_map(&truth));
    assert_eq!(gauge(&one, "salespulse_managers"), Some(12.0));
}

#[test]
fn two_kill_9_at_random_points_change_no_series() {
    let bootstrap = bootstrap();
    let topic = unique("crash-events");
    create_topics(&bootstrap, &[(&topic, 3)]).expect("creating the topic");
    let seed = now_ms() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let reference = Replica::new(&bootstrap, &unique("crash-reference"), &topic);
    let mut uninterrupted = reference.start();
    let crashing = Replica::new(&bootstrap, &unique("crash-group"), &topic);
    let mut daemon = crashing.start();
    wait_for("both daemons to join", Duration::from_secs(60), || {
        (ready(&uninterrupted) && ready(&daemon)).then_some(())
    });

    // Events keep coming while the daemon is killed: 1,200 records in batches of 40, paced so
    // the crashes fall in the middle of the stream.
    let producing_topic = topic.clone();
    let producing_bootstrap = bootstrap.clone();
    let producer = std::thread::spawn(move || {
        let producer = EventProducer::new(&producing_bootstrap).unwrap();
        let mut events = Events::new(seed);
        for _ in 0..30 {
            events.produce(&producer, &producing_topic, 40);
            std::thread::sleep(Duration::from_millis(200));
        }
        events
    });

    // Crash 1: once a random number of records has been applied.
    let first = rng.random_range(200..700) as f64;
    let outcomes = |body: &str| {
        ["call", "message"]
            .iter()
            .map(|s| value(body, &format!("salespulse_events_applied_total{{stream=\"{s}\"}}")).unwrap_or(0.0))
            .sum::<f64>()
    };
    daemon.scrape_until(&format!("{first} records applied"), Duration::from_secs(60), |body| {
        (outcomes(body) >= first).then_some(())
    });
    kill9(&mut daemon);
    // Crash 2: after a random number of records received by the restarted daemon, which may
    // fall in its rebuild or after it.
    let mut daemon = crashing.start();
    let second = rng.random_range(1..800) as f64;
    daemon.scrape_until(&format!("{second} records received after the restart"), Duration::from_secs(60), |body| {
        let received = parse(body)
            .iter()
            .filter(|(s, _)| s.starts_with("salespulse_events_received_total"))
            .map(|(_, v)| v)
            .sum::<f64>();
        (received >= second).then_some(())
    });
    kill9(&mut daemon);
    let daemon = crashing.start();

    let events = producer.join().expect("the producer thread");
    wait_truth(&mut uninterrupted, &events, Duration::from_secs(60));
    let truth = wait_equal(
        "the crashed daemon vs. the uninterrupted one",
        Duration::from_secs(90),
        || scrape_map(&daemon).filter(|_| ready(&daemon)),
        || scrape_map(&uninterrupted),
    );
    assert_eq!(calls_in_hour(&truth), events.distinct_calls as f64);
    assert_eq!(messages_in_hour(&truth), events.distinct_messages as f64);
    // The last start had committed history to rebuild (the first crash came after commits).
    let rebuilt = scrape_map(&daemon).unwrap();
    assert!(rebuilt["salespulse_rebuild_records_total"] > 0.0, "the restarted daemon replayed nothing");
    let compared_series = truth.keys().filter(|k| compared(k)).count();
    assert!(compared_series > 300, "only {compared_series} series compared");
}

/// A Kafka broker of this test alone, stopped on drop.
struct OwnBroker {
    dir: tempfile::TempDir,
}

impl OwnBroker {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka.sh")
    }

    fn run(&self, verb: &str) -> String {
        let output = Command::new(Self::script())
            .arg(verb)
            .env("SALESPULSE_KAFKA_DIR", self.dir.path())
            .output()
            .expect("running scripts/kafka.sh");
        assert!(output.status.success(), "kafka.sh {verb}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().trim().to_owned()
    }

    fn start() -> (OwnBroker, String) {
        let broker = OwnBroker { dir: tempfile::tempdir().unwrap() };
        let bootstrap = broker.run("start");
        (broker, bootstrap)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(Self::script()).arg("stop").env("SALESPULSE_KAFKA_DIR", self.dir.path()).status();
    }
}

#[test]
fn a_broker_outage_is_visible_and_loses_nothing() {
    // How long the broker stays away: long enough for the consumer's session (6 s in these
    // tests) to expire, so the group is rejoined and the state rebuilt on return; short enough
    // for `make test`. The minute is `SALESPULSE_TEST_OUTAGE_SECONDS=60`.
    let outage: f64 = std::env::var("SALESPULSE_TEST_OUTAGE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let (broker, bootstrap) = OwnBroker::start();
    let topic = unique("outage-events");
    create_topics(&bootstrap, &[(&topic, 2)]).expect("creating the topic");
    let producer = EventProducer::new(&bootstrap).unwrap();
    let mut events = Events::new(now_ms() as u64);
    events.produce(&producer, &topic, 100);

    let replica = Replica::new(&bootstrap, &unique("outage-group"), &topic);
    let mut daemon = replica.start();
    wait_truth(&mut daemon, &events, Duration::from_secs(60));
    let up = "salespulse_kafka_up";
    let contact_age = "salespulse_kafka_contact_age_seconds";
    let record_age = format!("salespulse_kafka_record_age_seconds{{topic=\"{topic}\"}}");
    daemon.scrape_until("kafka up", Duration::from_secs(30), |body| (value(body, up)? == 1.0).then_some(()));

    broker.run("stop");
    daemon.scrape_until("kafka down", Duration::from_secs(30), |body| (value(body, up)? == 0.0).then_some(()));
    let first_age = gauge(&daemon, &record_age).unwrap();
    // Records produced during the outage wait in the producer's queue.
    for _ in 0..50 {
        let (key, payload) = events.next();
        producer.send(&topic, &key, &payload, Some("application/json")).unwrap();
    }
    // The outage lasts until the daemon itself has seen no broker for `outage` seconds; all the
    // while it serves /metrics, down, with growing ages.
    daemon.scrape_until(
        &format!("{outage} s without broker contact"),
        Duration::from_secs_f64(outage + 30.0),
        |body| {
            assert_eq!(value(body, up), Some(0.0), "kafka up during the outage");
            (value(body, contact_age)? >= outage).then_some(())
        },
    );
    let later = parse(&daemon.scrape());
    assert!(later[&record_age] > first_age + outage / 2.0, "record age {} after {first_age}", later[&record_age]);
    assert_eq!(later["salespulse_kafka_up"], 0.0);
    assert!(!ready(&daemon) || calls_in_hour(&later) > 0.0, "the windows are kept while the broker is away");
    assert!(calls_in_hour(&later) > 0.0);

    // The broker comes back on the same port with its data: the daemon reconnects and resumes.
    assert_eq!(broker.run("restart"), bootstrap);
    producer.flush(Duration::from_secs(60)).expect("the queued records reach the broker");
    events.produce(&producer, &topic, 100);
    // Usually a second or two. The bound is librdkafka's own: a connection opened while the old
    // broker was still shutting down (its listener open, nothing answering) is only given up at
    // `socket.timeout.ms` (60 s), then `reconnect.backoff.max.ms` (10 s) at most. A CI run on a
    // loaded machine once took longer than 60 s here with no connection error logged in between.
    daemon.scrape_until("kafka up again", Duration::from_secs(120), |body| (value(body, up)? == 1.0).then_some(()));
    wait_truth(&mut daemon, &events, Duration::from_secs(90));
    wait_for("ready again", Duration::from_secs(60), || ready(&daemon).then_some(()));
    wait_truth(&mut daemon, &events, Duration::from_secs(10));
    assert!(gauge(&daemon, contact_age).unwrap() < outage);
}
