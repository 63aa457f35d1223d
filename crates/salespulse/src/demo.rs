//! `salespulse demo`: the daemon on librdkafka's in-process mock cluster, fed by a simulated sales
//! team, so a newcomer sees numbers move within seconds with nothing installed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::Rng;
use salespulse_core::window::{Windows, WindowsConfig};
use salespulse_engine::{EngineConfig, TopicConfig};
use salespulse_events::{Call, CallDirection, CallStatus, Event, EventBody, Kind};
use salespulse_kafka::{EventProducer, IngestConfig, MockKafka};

use crate::config::{LogSection, Settings};
use crate::daemon;

const TOPIC: &str = "salespulse.calls";
const TEAMS: [&str; 2] = ["north", "south"];
const NAMES: [&str; 12] = [
    "ivanov",
    "petrova",
    "sidorov",
    "smirnova",
    "kuznetsov",
    "popova",
    "volkov",
    "sokolova",
    "morozov",
    "novikova",
    "fedorov",
    "lebedeva",
];

/// Runs the demo until SIGINT or SIGTERM.
pub fn run(listen: SocketAddr, managers: usize, calls_per_second: f64) -> anyhow::Result<()> {
    let log = LogSection::default();
    daemon::init_logging(&log)?;
    let kafka = MockKafka::start()?;
    kafka.create_topic(TOPIC, 3)?;
    let bootstrap = kafka.bootstrap_servers();

    let mut engine = EngineConfig::new(Windows::new(&WindowsConfig::default()).context("demo windows")?);
    engine.topics.push(TopicConfig { name: TOPIC.into(), encoding: None, kind: Some(Kind::Call) });
    let settings = Settings {
        engine,
        ingest: IngestConfig {
            bootstrap_servers: bootstrap.clone(),
            group_id: "salespulse-demo".into(),
            topics: vec![TOPIC.into()],
            properties: Default::default(),
        },
        listen,
        log,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let producer = EventProducer::new(&bootstrap)?;
    let team = Team::new(managers.clamp(1, 1000));
    let simulator_stop = Arc::clone(&stop);
    let rate = calls_per_second.clamp(0.01, 10_000.0);
    let simulator = std::thread::Builder::new()
        .name("simulator".into())
        .spawn(move || team.simulate(&producer, rate, &simulator_stop))?;

    println!("salespulse demo: {managers} simulated managers calling through an in-process Kafka ({bootstrap})");
    println!("  metrics: http://{listen}/metrics");
    println!("  try:     curl -s http://{listen}/metrics | grep '^salespulse_window_successful_contacts'");
    println!("  stop:    Ctrl-C");
    let result = daemon::block_on(daemon::run(settings, daemon::shutdown_signal()));
    stop.store(true, Ordering::Relaxed);
    let _ = simulator.join();
    result
}

/// A simulated team: who calls, how often, how long.
struct Team {
    managers: Vec<(String, &'static str)>,
}

impl Team {
    fn new(size: usize) -> Team {
        let managers = (0..size)
            .map(|i| {
                let name = NAMES[i % NAMES.len()];
                let id = if i < NAMES.len() { name.to_owned() } else { format!("{name}-{}", i / NAMES.len()) };
                (id, TEAMS[i % TEAMS.len()])
            })
            .collect();
        Team { managers }
    }

    fn simulate(&self, producer: &EventProducer, calls_per_second: f64, stop: &AtomicBool) {
        let mut rng = rand::rng();
        let mut sequence: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            // Poisson arrivals: exponential gaps with the configured mean.
            let gap = -(1.0 - rng.random::<f64>()).ln() / calls_per_second;
            std::thread::sleep(Duration::from_secs_f64(gap.min(5.0)));
            // Activity is skewed: the first managers call more, as in real teams.
            let weight = rng.random::<f64>().powi(2);
            let (manager, team) = &self.managers[(weight * self.managers.len() as f64) as usize % self.managers.len()];
            sequence += 1;
            let event = simulated_call(&mut rng, sequence, manager, team);
            // Half the producers speak JSON, half protobuf, each saying so in the header.
            let (payload, content_type) = if sequence.is_multiple_of(2) {
                (salespulse_events::encode_json(&event), "application/json")
            } else {
                (salespulse_events::encode_protobuf(&event), "application/x-protobuf")
            };
            let mut sent = producer.send(TOPIC, manager, &payload, Some(content_type));
            // Now and then a webhook retry (counted once) or a broken record (counted as rejected).
            if sent.is_ok() && rng.random_bool(0.02) {
                sent = producer.send(TOPIC, manager, &payload, Some(content_type));
            }
            if sent.is_ok() && rng.random_bool(0.01) {
                sent = producer.send(TOPIC, manager, b"{\"event_id\": \"broken", Some("application/json"));
            }
            if let Err(error) = sent {
                tracing::warn!(%error, "simulator could not produce");
            }
        }
    }
}

fn simulated_call(rng: &mut impl Rng, sequence: u64, manager: &str, team: &str) -> Event {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let outbound = rng.random_bool(0.65);
    let roll = rng.random::<f64>();
    let status = match (outbound, roll) {
        (true, r) if r < 0.55 => CallStatus::Answered,
        (true, r) if r < 0.80 => CallStatus::NoAnswer,
        (true, r) if r < 0.93 => CallStatus::Busy,
        (true, _) => CallStatus::Failed,
        (false, r) if r < 0.82 => CallStatus::Answered,
        (false, _) => CallStatus::Missed,
    };
    let ring_ms = rng.random_range(3_000..25_000);
    // Talk time is log-normal: median about a minute, a long tail of long conversations.
    let talk_ms = if status == CallStatus::Answered {
        let normal =
            (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt() * (std::f64::consts::TAU * rng.random::<f64>()).cos();
        (60_000.0 * (1.1 * normal).exp()).clamp(3_000.0, 1_800_000.0) as i64
    } else {
        0
    };
    let started_at_ms = now_ms - talk_ms - ring_ms;
    Event {
        event_id: format!("demo-{now_ms}-{sequence}"),
        occurred_at_ms: now_ms,
        manager_id: manager.to_owned(),
        team: Some(team.to_owned()),
        source: Some("demo-pbx".into()),
        body: EventBody::Call(Call {
            call_id: format!("call-{sequence}"),
            direction: if outbound { CallDirection::Outbound } else { CallDirection::Inbound },
            status,
            started_at_ms,
            answered_at_ms: (status == CallStatus::Answered).then_some(started_at_ms + ring_ms),
            ended_at_ms: now_ms,
            talk_ms: talk_ms as u64,
            client_id: Some(format!("client-{}", rng.random_range(1..5000))),
            card_id: None,
        }),
    }
}
