//! `salespulse demo`: the daemon on librdkafka's in-process mock cluster, fed by a simulated sales
//! team, so a newcomer sees numbers move within seconds with nothing installed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::Rng;
use salespulse_cards::{PipelineConfig, StageRule};
use salespulse_core::window::{ShiftConfig, Windows, WindowsConfig};
use salespulse_engine::{EngineConfig, TopicConfig};
use salespulse_events::{
    Call, CallDirection, CallStatus, CardChange, CardChangeKind, CardType, Event, EventBody, Kind, Message,
    MessageDirection,
};
use salespulse_kafka::{EventProducer, IngestConfig, MockKafka};

use crate::config::{LogSection, Settings};
use crate::daemon;

const CALLS: &str = "salespulse.calls";
const MESSAGES: &str = "salespulse.messages";
const CRM: &str = "salespulse.crm";
const STAGES: [&str; 5] = ["new", "qualified", "proposal", "invoice", "payment"];
/// The simulated manager who stops working after `QUIET_AFTER` (sidorov).
const QUIET: usize = 2;
const QUIET_AFTER: Duration = Duration::from_secs(60);
/// The simulated manager who answers chats slowly at the same load (smirnova).
const SLOW: usize = 3;
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
pub fn run(listen: SocketAddr, managers: usize, events_per_second: f64) -> anyhow::Result<()> {
    let log = LogSection::default();
    daemon::init_logging(&log)?;
    let kafka = MockKafka::start()?;
    let bootstrap = kafka.bootstrap_servers();

    // The demo's shift started this hour, so "in shift" and silence make sense whenever it runs.
    let hour = (now_ms() / 3_600_000 % 24) as u32;
    let shift =
        ShiftConfig { start: chrono::NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or_default(), length_minutes: 720 };
    let windows = WindowsConfig { shift: Some(shift), ..WindowsConfig::default() };
    let mut engine = EngineConfig::new(Windows::new(&windows).context("demo windows")?);
    engine.cards.pipelines =
        vec![PipelineConfig { name: "sales".into(), stages: STAGES.iter().map(|s| s.to_string()).collect() }];
    // Money in roubles; stage progress for the weighted pipeline; deals "stuck" within minutes.
    engine.cards.commerce.currency = Some("RUB".into());
    for (stage, progress, stuck_minutes) in [
        ("new", 0.0, None),
        ("qualified", 20.0, Some(3)),
        ("proposal", 40.0, Some(3)),
        ("invoice", 70.0, Some(5)),
        ("payment", 90.0, None),
    ] {
        engine.cards.commerce.stages.push(StageRule {
            pipeline: "sales".into(),
            stage: stage.into(),
            progress_pct: Some(progress),
            stuck_after_ms: stuck_minutes.map(|m: i64| m * 60_000),
        });
    }
    let plans_file = std::env::temp_dir().join(format!("salespulse-demo-plans-{}.toml", std::process::id()));
    std::fs::write(&plans_file, demo_plans(managers)).context("writing the demo plans file")?;
    // A short delay, so unlogged calls show up within minutes; likewise silence.
    engine.joins.unlogged_call_delay_ms = 2 * 60_000;
    engine.anomalies.silence_after_ms = 2 * 60_000;
    for (topic, kind) in [(CALLS, Kind::Call), (MESSAGES, Kind::Message), (CRM, Kind::CardChange)] {
        // Equal partition counts: a manager's events meet in one partition group.
        kafka.create_topic(topic, 3)?;
        engine.topics.push(TopicConfig { name: topic.into(), encoding: None, kind: Some(kind) });
    }
    let settings = Settings {
        engine,
        ingest: IngestConfig {
            bootstrap_servers: bootstrap.clone(),
            group_id: "salespulse-demo".into(),
            topics: vec![CALLS.into(), MESSAGES.into(), CRM.into()],
            properties: Default::default(),
            apply_threads: 0,
            apply_nice: salespulse_kafka::DEFAULT_APPLY_NICE,
        },
        listen,
        log,
        baseline_snapshot: None,
        sources: None,
        dead_letter: None,
        http_security: Default::default(),
        plans_file: Some(plans_file.clone()),
        export: Default::default(),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let producer = EventProducer::new(&bootstrap)?;
    let team = Team::new(managers.clamp(1, 1000));
    let simulator_stop = Arc::clone(&stop);
    let rate = events_per_second.clamp(0.01, 10_000.0);
    let simulator = std::thread::Builder::new()
        .name("simulator".into())
        .spawn(move || team.simulate(&producer, rate, &simulator_stop))?;

    println!("salespulse demo: {managers} simulated managers calling, chatting and updating the CRM through an in-process Kafka ({bootstrap})");
    println!("  metrics: http://{listen}/metrics");
    println!("  try:     curl -s http://{listen}/metrics | grep '^salespulse_window_successful_contacts'");
    println!(
        "  sidorov goes quiet after a minute (salespulse_silent, team scores below); smirnova answers chats slowly"
    );
    println!("  (salespulse_anomaly_score{{signal=\"response_time_p90\",basis=\"team\"}}); self scores need a few days of baseline");
    println!(
        "  plans:   {} (edit, then `kill -HUP {}` to reload: salespulse_plan_completion_ratio)",
        plans_file.display(),
        std::process::id()
    );
    println!("  stop:    Ctrl-C");
    let result = daemon::block_on(daemon::run(settings, daemon::shutdown_signal()));
    stop.store(true, Ordering::Relaxed);
    let _ = simulator.join();
    let _ = std::fs::remove_file(&plans_file);
    result
}

/// Monthly plans for the simulated team: the busier managers (the first ones) get more.
fn demo_plans(managers: usize) -> String {
    let mut text = String::from("# The demo's plans; edit and send SIGHUP to reload.\nfact = \"won\"\n");
    for (i, name) in NAMES.iter().enumerate().take(managers.clamp(1, 1000)) {
        let revenue = 3_000_000 - i as u64 * 200_000;
        text.push_str(&format!("\n[managers.{name}]\nrevenue = {revenue}\nmargin = {}\n", revenue / 4));
    }
    text.push_str(
        "\n[teams.north]\nrevenue = 12000000\n\n[teams.south]\nrevenue = 10000000\nfact = \"payment_received\"\n",
    );
    text
}

/// A simulated team: who calls, chats and updates the CRM, how often, how long.
struct Team {
    managers: Vec<(String, &'static str)>,
}

/// Dialogs awaiting the manager's reply, by (manager index, dialog number).
type Pending = std::collections::HashSet<(usize, u32)>;

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

    fn simulate(&self, producer: &EventProducer, events_per_second: f64, stop: &AtomicBool) {
        let mut rng = rand::rng();
        let mut sequence: u64 = 0;
        let mut pending = Pending::new();
        let started = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // Poisson arrivals: exponential gaps with the configured mean.
            let gap = -(1.0 - rng.random::<f64>()).ln() / events_per_second;
            std::thread::sleep(Duration::from_secs_f64(gap.min(5.0)));
            // Activity is skewed: the first managers work more, as in real teams.
            let weight = rng.random::<f64>().powi(2);
            let index = (weight * self.managers.len() as f64) as usize % self.managers.len();
            let (manager, team) = &self.managers[index];
            // One manager goes quiet after the first minute: silence and low scores show it.
            if index == QUIET && started.elapsed() > QUIET_AFTER {
                continue;
            }
            sequence += 1;
            // The event mix of a contact centre: calls 30 %, messages 55 %, CRM changes 15 %.
            let roll = rng.random::<f64>();
            let (topic, event) = if roll < 0.30 {
                (CALLS, simulated_call(&mut rng, sequence, manager, team))
            } else if roll < 0.85 {
                (MESSAGES, simulated_message(&mut rng, sequence, index, manager, team, &mut pending))
            } else {
                (CRM, simulated_card_change(&mut rng, sequence, manager, team))
            };
            // Half the producers speak JSON, half protobuf, each saying so in the header.
            let (payload, content_type) = if sequence.is_multiple_of(2) {
                (salespulse_events::encode_json(&event), "application/json")
            } else {
                (salespulse_events::encode_protobuf(&event), "application/x-protobuf")
            };
            let mut sent = producer.send(topic, manager, &payload, Some(content_type));
            // Now and then a webhook retry (counted once) or a broken record (counted as rejected).
            if sent.is_ok() && rng.random_bool(0.02) {
                sent = producer.send(topic, manager, &payload, Some(content_type));
            }
            if sent.is_ok() && rng.random_bool(0.01) {
                sent = producer.send(topic, manager, b"{\"event_id\": \"broken", Some("application/json"));
            }
            if let Err(error) = sent {
                tracing::warn!(%error, "simulator could not produce");
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A manager's clients: a small book, so calls, chats and CRM notes name the same people.
fn client(rng: &mut impl Rng, manager: &str) -> String {
    format!("client-{manager}-{}", rng.random_range(0..40))
}

fn simulated_message(
    rng: &mut impl Rng,
    sequence: u64,
    index: usize,
    manager: &str,
    team: &str,
    pending: &mut Pending,
) -> Event {
    let dialog = rng.random_range(0..6u32);
    // A waiting client is usually answered next; otherwise clients write more often than managers.
    // One manager answers slowly at the same load: waiting clients are answered far less often.
    let answer = if index == SLOW { 0.02 } else { 0.7 };
    let outbound = if pending.contains(&(index, dialog)) { rng.random_bool(answer) } else { rng.random_bool(0.3) };
    if outbound {
        pending.remove(&(index, dialog));
    } else {
        pending.insert((index, dialog));
    }
    let channel = ["whatsapp", "telegram", "viber"][dialog as usize % 3];
    Event {
        event_id: format!("demo-m-{sequence}"),
        occurred_at_ms: now_ms(),
        manager_id: manager.to_owned(),
        team: Some(team.to_owned()),
        source: Some("demo-gateway".into()),
        body: EventBody::Message(Message {
            message_id: format!("msg-{sequence}"),
            dialog_id: format!("dialog-{manager}-{dialog}"),
            channel: channel.into(),
            direction: if outbound { MessageDirection::Outbound } else { MessageDirection::Inbound },
            client_id: Some(format!("client-{manager}-{dialog}")),
            new_dialog: None,
        }),
    }
}

fn simulated_card_change(rng: &mut impl Rng, sequence: u64, manager: &str, team: &str) -> Event {
    let now = now_ms();
    let deal = rng.random_range(0..12);
    let roll = rng.random::<f64>();
    let (change, card_type) = match roll {
        r if r < 0.30 => (CardChangeKind::CommentAdded, CardType::Deal),
        r if r < 0.46 => (CardChangeKind::StageChanged, CardType::Deal),
        r if r < 0.54 => (CardChangeKind::TaskCreated, CardType::Deal),
        r if r < 0.60 => (CardChangeKind::TaskRescheduled, CardType::Deal),
        r if r < 0.66 => (CardChangeKind::TaskCompleted, CardType::Deal),
        r if r < 0.72 => (CardChangeKind::MeetingScheduled, CardType::Deal),
        r if r < 0.78 => (CardChangeKind::MeetingHeld, CardType::Deal),
        r if r < 0.84 => (CardChangeKind::InvoiceIssued, CardType::Deal),
        r if r < 0.89 => (CardChangeKind::PaymentReceived, CardType::Deal),
        r if r < 0.93 => (CardChangeKind::Created, CardType::Deal),
        r if r < 0.97 => (CardChangeKind::Won, CardType::Deal),
        _ => (CardChangeKind::Lost, CardType::Deal),
    };
    // Deals 0-5 are sold: every status event on them is a win, so clients 0 and 1 (two such
    // deals each) become regular and clients 2 and 3 current; the other deals come and go.
    let sold = deal < 6
        && matches!(
            change,
            CardChangeKind::Created | CardChangeKind::StageChanged | CardChangeKind::Lost | CardChangeKind::Won
        );
    let change = if sold { CardChangeKind::Won } else { change };
    // Half the comments go on the contact card of a client with no deal: the cold clients.
    let contact = (change == CardChangeKind::CommentAdded && rng.random_bool(0.5)).then(|| rng.random_range(11..40));
    let card_type = if contact.is_some() { CardType::Contact } else { card_type };
    let card_id = match contact {
        Some(client) => format!("contact-{manager}-{client}"),
        None => format!("deal-{manager}-{deal}"),
    };
    // Each deal belongs to one client: deals 0 and 1 to client 0, 2 and 3 to client 1, then one each.
    let client_number = contact.unwrap_or(if deal < 4 { deal / 2 } else { deal - 2 });
    // Each deal has a fixed amount and margin; invoices and payments are for the whole deal.
    let deal_amount = ((deal as u64 * 7 + manager.len() as u64 * 3) % 20 + 1) as f64 * 25_000.0;
    let money = matches!(change, CardChangeKind::InvoiceIssued | CardChangeKind::PaymentReceived);
    let carries_amount = money
        || matches!(
            change,
            CardChangeKind::Created | CardChangeKind::StageChanged | CardChangeKind::Won | CardChangeKind::Lost
        );
    // Now and then a payment in dollars: rejected (currency_mismatch), never summed with roubles.
    let currency = if money && rng.random_bool(0.02) { "USD" } else { "RUB" };
    let stage = rng.random_range(1..STAGES.len());
    let task =
        matches!(change, CardChangeKind::TaskCreated | CardChangeKind::TaskRescheduled | CardChangeKind::TaskCompleted);
    Event {
        event_id: format!("demo-k-{sequence}"),
        occurred_at_ms: now,
        manager_id: manager.to_owned(),
        team: Some(team.to_owned()),
        source: Some("demo-crm".into()),
        body: EventBody::CardChange(CardChange {
            card_id,
            card_type,
            change,
            pipeline: Some("sales".into()),
            stage_from: (change == CardChangeKind::StageChanged).then(|| STAGES[stage - 1].to_owned()),
            stage_to: match change {
                CardChangeKind::StageChanged => Some(STAGES[stage].to_owned()),
                CardChangeKind::Created => Some(STAGES[0].to_owned()),
                _ => None,
            },
            stage_progress_pct: None,
            // A quarter of the comments are "Called"-style one-liners.
            comment_length: (change == CardChangeKind::CommentAdded).then(|| {
                if rng.random_bool(0.25) {
                    rng.random_range(3..20)
                } else {
                    rng.random_range(20..400)
                }
            }),
            task_id: task.then(|| format!("task-{manager}-{deal}")),
            task_due_at_ms: task.then(|| now + rng.random_range(-30..240) * 60_000),
            task_due_from_ms: None,
            amount: carries_amount.then_some(deal_amount),
            client_id: Some(format!("client-{manager}-{client_number}")),
            margin: carries_amount.then_some(deal_amount * 0.3),
            // A new invoice per deal every ten minutes, so money keeps moving in a long demo.
            invoice_id: money.then(|| format!("inv-{manager}-{deal}-{}", now / 600_000)),
            currency: Some(currency.into()),
        }),
    }
}

fn simulated_call(rng: &mut impl Rng, sequence: u64, manager: &str, team: &str) -> Event {
    let now_ms = now_ms();
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
            client_id: Some(client(rng, manager)),
            card_id: None,
        }),
    }
}
