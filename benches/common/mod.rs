//! Shared set-up of the engine benchmarks: an engine with the default windows on a manual clock, and
//! a generator of realistic call events that rewrites events in place (no allocation per event once
//! its buffers have grown), so that generating the input costs as little as possible outside the
//! timed loops.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus::Registry;
use salespulse_core::clock::ManualClock;
use salespulse_core::window::{Windows, WindowsConfig};
use salespulse_engine::{Engine, EngineConfig};
use salespulse_events::{Call, CallDirection, CallStatus, Event, EventBody};

/// 2026-11-23T12:00:00Z, a Monday, inside the default shift (09:00 for 9 hours, UTC).
pub const T0: i64 = 1_795_435_200_000;

/// The topic every benchmark record comes from.
pub const TOPIC: &str = "salespulse.calls";

/// An engine with the default configuration (windows `5m`, `1h`, `8h`, `today`, `shift`; default
/// call export), except `max_managers`, which the 100k-manager runs must raise above the default
/// 50k.
pub fn engine(max_managers: usize) -> (Engine, Arc<ManualClock>, Registry) {
    engine_with(max_managers, |_| {})
}

/// [`engine`], with a change to the configuration (diagnostic variants only).
pub fn engine_with(
    max_managers: usize,
    configure: impl FnOnce(&mut EngineConfig),
) -> (Engine, Arc<ManualClock>, Registry) {
    let windows = Windows::new(&WindowsConfig::default()).expect("default windows");
    let mut config = EngineConfig::new(windows);
    config.max_managers = config.max_managers.max(max_managers);
    configure(&mut config);
    let clock = Arc::new(ManualClock::new(T0));
    let registry = Registry::new();
    let engine = Engine::new(config, clock.clone(), &registry).expect("engine");
    (engine, clock, registry)
}

/// splitmix64: a cheap, well-mixed pseudo-random sequence.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n small against 2^64; the bias is negligible).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The id of manager `i`, like a CRM user login.
pub fn manager_id(i: usize) -> String {
    format!("manager-{i:06}")
}

/// The team of manager `i`: 20 teams.
pub fn team_of(i: usize) -> String {
    format!("team-{:02}", i % 20)
}

/// A call event with empty ids, to be filled by [`Generator::fill`].
pub fn blank_event() -> Event {
    Event {
        event_id: String::with_capacity(36),
        occurred_at_ms: T0,
        manager_id: String::with_capacity(16),
        team: Some(String::with_capacity(8)),
        source: Some("pbx".into()),
        body: EventBody::Call(Call {
            call_id: String::with_capacity(24),
            direction: CallDirection::Outbound,
            status: CallStatus::Answered,
            started_at_ms: T0,
            answered_at_ms: None,
            ended_at_ms: T0,
            talk_ms: 0,
            client_id: Some("client-000001".into()),
            card_id: None,
        }),
    }
}

/// A call's direction and status drawn from a plausible mix: 70 % outbound (half answered, then
/// no answer, busy, failed), 30 % inbound (80 % answered, 20 % missed).
pub fn draw_call(rng: &mut Rng) -> (CallDirection, CallStatus) {
    let roll = rng.below(100);
    match roll {
        0..35 => (CallDirection::Outbound, CallStatus::Answered),
        35..56 => (CallDirection::Outbound, CallStatus::NoAnswer),
        56..66 => (CallDirection::Outbound, CallStatus::Busy),
        66..70 => (CallDirection::Outbound, CallStatus::Failed),
        70..94 => (CallDirection::Inbound, CallStatus::Answered),
        _ => (CallDirection::Inbound, CallStatus::Missed),
    }
}

/// Writes a call into `event`: a fresh UUID-shaped `event_id` (unique per `seq`), the manager's id
/// and team, and the call's fields, ending at `occurred_at_ms`.
pub fn fill_call(
    event: &mut Event,
    seq: u64,
    manager: &str,
    team: &str,
    occurred_at_ms: i64,
    call: (CallDirection, CallStatus),
    talk_ms: u64,
) {
    // 36 characters like a UUID; the 64-bit sequence number makes it unique, its mix makes the
    // ids look random (the de-duplication fingerprint reads every byte).
    let mixed = Rng::new(seq).next_u64();
    event.event_id.clear();
    let _ = write!(
        event.event_id,
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        mixed >> 32,
        (mixed >> 16) & 0xffff,
        mixed & 0xfff,
        0x8000 | ((seq >> 48) & 0x3fff),
        seq & 0xffff_ffff_ffff
    );
    event.manager_id.clear();
    event.manager_id.push_str(manager);
    if let Some(slot) = event.team.as_mut() {
        slot.clear();
        slot.push_str(team);
    }
    event.occurred_at_ms = occurred_at_ms;
    if let EventBody::Call(body) = &mut event.body {
        body.call_id.clear();
        let _ = write!(body.call_id, "call-{seq}");
        body.direction = call.0;
        body.status = call.1;
        let talk_ms = if call.1 == CallStatus::Answered { talk_ms } else { 0 };
        body.talk_ms = talk_ms;
        body.ended_at_ms = occurred_at_ms;
        body.answered_at_ms = (talk_ms > 0).then(|| occurred_at_ms - talk_ms as i64);
        body.started_at_ms = occurred_at_ms - talk_ms as i64 - 15_000;
    }
}

/// A stream of call events over `managers` managers chosen uniformly at random, one event per
/// millisecond of wall clock, each event 0 to 3 s old when it arrives (slightly out of order).
#[derive(Debug)]
pub struct Generator {
    managers: Vec<String>,
    teams: Vec<String>,
    rng: Rng,
    /// Events generated so far; also the source of unique ids.
    pub seq: u64,
    /// Wall clock of the next event.
    pub now_ms: i64,
}

impl Generator {
    pub fn new(managers: usize, start_ms: i64, seed: u64) -> Self {
        Generator {
            managers: (0..managers).map(manager_id).collect(),
            teams: (0..managers).map(team_of).collect(),
            rng: Rng::new(seed),
            seq: 0,
            now_ms: start_ms,
        }
    }

    pub fn managers(&self) -> usize {
        self.managers.len()
    }

    /// Rewrites `event` as the next event for manager `index`; returns the wall clock at which it
    /// arrives.
    pub fn fill_for(&mut self, event: &mut Event, index: usize) -> i64 {
        let now_ms = self.now_ms;
        self.now_ms += 1;
        self.seq += 1;
        let age_ms = self.rng.below(3_000) as i64;
        let call = draw_call(&mut self.rng);
        let talk_ms = 5_000 + self.rng.below(300_000);
        fill_call(event, self.seq, &self.managers[index], &self.teams[index], now_ms - age_ms, call, talk_ms);
        now_ms
    }

    /// Rewrites `event` as the next event, for a random manager; returns its arrival wall clock.
    pub fn fill(&mut self, event: &mut Event) -> i64 {
        let index = self.rng.below(self.managers.len() as u64) as usize;
        self.fill_for(event, index)
    }
}
