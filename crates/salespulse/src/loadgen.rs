//! `salespulse loadgen`: fills a Kafka topic with a realistic event mix for the end-to-end
//! benchmark (`make bench`, `scripts/bench.py`).
//!
//! The mix is a contact centre's: calls 30 %, chat messages 55 %, CRM card changes 15 %, from
//! `managers` managers whose activity follows a Zipf law (a few managers do much of the work,
//! every manager does some). Event times are spread evenly over the last `span` before the start,
//! so every window of the daemon has data and nothing is late or from the future. Every record is
//! keyed by `manager_id` (as producers are asked to do) and says its encoding in a `content-type`
//! header. Events are written as JSON and, for protobuf, decoded with the daemon's own decoder and
//! re-encoded, so the two variants carry the same events.
//!
//! The last line on stdout is a JSON summary the harness reads: events, bytes, seconds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use salespulse_events::{Encoding, Kind};
use salespulse_kafka::EventProducer;

/// What to generate.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// The topic; created with `partitions` if missing.
    pub topic: String,
    /// Partitions of a newly created topic.
    pub partitions: i32,
    /// Events to produce.
    pub events: u64,
    /// Managers in the team.
    pub managers: usize,
    /// `json` or `protobuf`.
    pub encoding: Encoding,
    /// Event times are spread over this span before now.
    pub span: Duration,
    /// Seed of the generator: the same seed gives the same events.
    pub seed: u64,
}

/// Produces the events and prints the summary.
pub fn run(options: &LoadgenOptions) -> anyhow::Result<()> {
    if options.managers == 0 || options.events == 0 {
        bail!("--managers and --events must be positive");
    }
    salespulse_kafka::create_topics(&options.bootstrap, &[(options.topic.as_str(), options.partitions)])
        .context("creating the topic")?;
    let producer = EventProducer::bulk(&options.bootstrap)?;
    let content_type = match options.encoding {
        Encoding::Json => "application/json",
        Encoding::Protobuf => "application/x-protobuf",
    };
    let mut generator = Generator::new(options);
    let started = Instant::now();
    let mut bytes: u64 = 0;
    let mut payload = Vec::with_capacity(512);
    for sequence in 0..options.events {
        let manager = generator.manager();
        generator.event_json(sequence, manager, &mut payload);
        let encoded;
        let value: &[u8] = match options.encoding {
            Encoding::Json => &payload,
            Encoding::Protobuf => {
                let event = salespulse_events::decode(&payload, Encoding::Json, None)
                    .map_err(|error| anyhow::anyhow!("generated event does not decode: {error}"))?;
                encoded = salespulse_events::encode_protobuf(&event);
                &encoded
            }
        };
        bytes += value.len() as u64;
        let key = &generator.names[manager];
        producer.send_waiting(&options.topic, key, value, Some(content_type), Duration::from_secs(120))?;
    }
    producer.flush(Duration::from_secs(300))?;
    let seconds = started.elapsed().as_secs_f64();
    let kinds = generator.kinds;
    eprintln!(
        "loadgen: {} events ({} calls, {} messages, {} card changes), {} bytes, to {} in {seconds:.1} s",
        options.events, kinds[0], kinds[1], kinds[2], bytes, options.topic
    );
    println!(
        "{{\"topic\":\"{}\",\"events\":{},\"bytes\":{bytes},\"seconds\":{seconds:.3},\"managers\":{},\"encoding\":\"{}\"}}",
        options.topic,
        options.events,
        options.managers,
        options.encoding.as_str()
    );
    Ok(())
}

struct Generator {
    rng: StdRng,
    names: Vec<String>,
    teams: Vec<String>,
    /// Cumulative Zipf weights over managers, for sampling by binary search.
    cumulative: Vec<f64>,
    start_ms: i64,
    step_ms: f64,
    seed: u64,
    kinds: [u64; 3],
}

impl Generator {
    fn new(options: &LoadgenOptions) -> Generator {
        let names: Vec<String> = (0..options.managers).map(|i| format!("m-{i:06}")).collect();
        // Teams of 25, as sales departments are usually organised.
        let teams = (0..options.managers).map(|i| format!("team-{:03}", i / 25)).collect();
        let mut total = 0.0;
        let cumulative = (0..options.managers)
            .map(|rank| {
                total += 1.0 / (rank as f64 + 1.0);
                total
            })
            .collect();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let span_ms = options.span.as_millis() as i64;
        Generator {
            rng: StdRng::seed_from_u64(options.seed),
            names,
            teams,
            cumulative,
            start_ms: now_ms - span_ms,
            step_ms: span_ms as f64 / options.events as f64,
            seed: options.seed,
            kinds: [0; 3],
        }
    }

    /// A manager index drawn from the Zipf law.
    fn manager(&mut self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let target = self.rng.random::<f64>() * total;
        self.cumulative.partition_point(|&c| c < target).min(self.names.len() - 1)
    }

    /// Writes event number `sequence` of manager `manager` as JSON into `out`.
    fn event_json(&mut self, sequence: u64, manager: usize, out: &mut Vec<u8>) {
        use std::io::Write;
        out.clear();
        let at = self.start_ms + (sequence as f64 * self.step_ms) as i64;
        let name = &self.names[manager];
        let team = &self.teams[manager];
        let seed = self.seed;
        let client = self.rng.random_range(0..200u32);
        let roll = self.rng.random::<f64>();
        // The writes go to a Vec: they cannot fail.
        let _ = write!(
            out,
            r#"{{"event_id":"lg-{seed}-{sequence}","occurred_at":{at},"manager_id":"{name}","team":"{team}","source":"loadgen","#
        );
        if roll < 0.30 {
            self.kinds[Kind::Call.index()] += 1;
            let outbound = self.rng.random_bool(0.65);
            let answered = self.rng.random_bool(0.6);
            let ring = self.rng.random_range(3_000..25_000);
            let talk = if answered { self.rng.random_range(5_000..600_000) } else { 0 };
            let started = at - ring - talk;
            let (direction, status) = match (outbound, answered) {
                (true, true) | (false, true) => (if outbound { "outbound" } else { "inbound" }, "answered"),
                (true, false) => ("outbound", "no_answer"),
                (false, false) => ("inbound", "missed"),
            };
            let _ = write!(
                out,
                r#""kind":"call","call_id":"c-{seed}-{sequence}","direction":"{direction}","status":"{status}","started_at":{started},"#
            );
            if answered {
                let _ = write!(out, r#""answered_at":{},"talk_seconds":{},"#, started + ring, talk / 1000);
            }
            let _ = write!(out, r#""ended_at":{at},"client_id":"cl-{manager}-{client}"}}"#);
        } else if roll < 0.85 {
            self.kinds[Kind::Message.index()] += 1;
            let dialog = client % 20;
            let direction = if self.rng.random_bool(0.55) { "inbound" } else { "outbound" };
            let channel = ["whatsapp", "telegram", "viber"][dialog as usize % 3];
            let _ = write!(
                out,
                r#""kind":"message","message_id":"msg-{seed}-{sequence}","dialog_id":"d-{manager}-{dialog}","channel":"{channel}","direction":"{direction}","client_id":"cl-{manager}-{client}"}}"#
            );
        } else {
            self.kinds[Kind::CardChange.index()] += 1;
            const STAGES: [&str; 5] = ["new", "qualified", "proposal", "invoice", "payment"];
            let deal = client % 50;
            let change = self.rng.random::<f64>();
            let _ = write!(out, r#""kind":"card_change","card_id":"deal-{manager}-{deal}","card_type":"deal","#);
            if change < 0.45 {
                let length = self.rng.random_range(3..400);
                let _ = write!(out, r#""change":"comment_added","comment_length":{length},"#);
            } else if change < 0.75 {
                let stage = self.rng.random_range(1..STAGES.len());
                let _ = write!(
                    out,
                    r#""change":"stage_changed","pipeline":"sales","stage_from":"{}","stage_to":"{}","#,
                    STAGES[stage - 1],
                    STAGES[stage]
                );
            } else {
                let due = at + self.rng.random_range(-60..480) * 60_000;
                let _ =
                    write!(out, r#""change":"task_created","task_id":"task-{manager}-{deal}","task_due_at":{due},"#);
            }
            let _ = write!(out, r#""client_id":"cl-{manager}-{client}"}}"#);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(encoding: Encoding) -> LoadgenOptions {
        LoadgenOptions {
            bootstrap: String::new(),
            topic: "t".into(),
            partitions: 8,
            events: 10_000,
            managers: 1_000,
            encoding,
            span: Duration::from_secs(3600),
            seed: 7,
        }
    }

    #[test]
    fn every_generated_event_decodes_and_the_mix_is_a_contact_centres() {
        let options = options(Encoding::Json);
        let mut generator = Generator::new(&options);
        let mut payload = Vec::new();
        let mut per_manager = vec![0u32; options.managers];
        for sequence in 0..options.events {
            let manager = generator.manager();
            per_manager[manager] += 1;
            generator.event_json(sequence, manager, &mut payload);
            let event = salespulse_events::decode(&payload, Encoding::Json, None)
                .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&payload)));
            assert_eq!(event.manager_id, generator.names[manager]);
            // Protobuf carries the same event.
            let again =
                salespulse_events::decode(&salespulse_events::encode_protobuf(&event), Encoding::Protobuf, None)
                    .expect("protobuf round trip");
            assert_eq!(again, event);
        }
        let [calls, messages, cards] = generator.kinds.map(|n| n as f64 / options.events as f64);
        assert!((calls - 0.30).abs() < 0.02, "calls {calls}");
        assert!((messages - 0.55).abs() < 0.02, "messages {messages}");
        assert!((cards - 0.15).abs() < 0.02, "cards {cards}");
        // Zipf: the busiest manager far above the median one.
        let mut sorted = per_manager.clone();
        sorted.sort_unstable();
        assert!(sorted[sorted.len() - 1] > 20 * sorted[sorted.len() / 2].max(1), "{:?}", &sorted[sorted.len() - 5..]);
    }

    #[test]
    fn event_times_span_the_window_in_order() {
        let options = options(Encoding::Protobuf);
        let mut generator = Generator::new(&options);
        let mut payload = Vec::new();
        let mut times = Vec::new();
        for sequence in [0, options.events / 2, options.events - 1] {
            generator.event_json(sequence, 0, &mut payload);
            times.push(salespulse_events::decode(&payload, Encoding::Json, None).expect("decodes").occurred_at_ms);
        }
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]));
        let spread = times[2] - times[0];
        assert!((3_599_000..=3_600_000).contains(&spread), "{spread}");
    }
}
