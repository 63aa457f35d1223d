//! Time to render the per-manager families of a 10k-manager scrape, default windows and call
//! export (`Engine::render` into a fresh `MetricWriter`, then `finish`). The daemon's own registry
//! (process and ingest metrics, a few dozen series) is appended by the exporter and not included.
//!
//! - `scrape/render_text/10000`: realistic activity: each manager had 6 calls over the last 8
//!   hours, directions and statuses drawn from a plausible mix, on 4 partitions.
//! - `scrape/render_openmetrics/10000`: the same state in OpenMetrics.
//! - `scrape/render_text_all_label_sets/10000`: the worst case for series: every manager had a
//!   call of every direction and status (10 label sets), so every family has every series.
//!
//! The set-up prints the body size, the number of samples (series) and series per manager.

#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use prometheus::Registry;
use salespulse_core::clock::ManualClock;
use salespulse_core::expo::{Format, MetricWriter};
use salespulse_engine::{Engine, Outcome};
use salespulse_events::{CallDirection, CallStatus};

use common::{blank_event, draw_call, engine, fill_call, manager_id, team_of, Rng, T0};

const MANAGERS: usize = 10_000;
const PARTITIONS: i32 = 4;
const HOUR: i64 = 3_600_000;

/// An engine whose clock stands at `T0` (12:00 UTC, inside the shift), where every manager had
/// the calls `calls(rng)` returns, at random times in the last 8 hours.
fn populated(calls: impl Fn(&mut Rng) -> Vec<(CallDirection, CallStatus)>) -> (Engine, Arc<ManualClock>, Registry) {
    let (engine, clock, registry) = engine(MANAGERS);
    clock.set(T0);
    let mut rng = Rng::new(42);
    let mut event = blank_event();
    let mut offsets = [0i64; PARTITIONS as usize];
    let mut seq = 0;
    for index in 0..MANAGERS {
        let (manager, team) = (manager_id(index), team_of(index));
        let partition = index as i32 % PARTITIONS;
        for call in calls(&mut rng) {
            seq += 1;
            let at = T0 - rng.below(8 * HOUR as u64) as i64;
            let talk_ms = 10_000 + rng.below(240_000);
            fill_call(&mut event, seq, &manager, &team, at, call, talk_ms);
            let offset = &mut offsets[partition as usize];
            let outcome = engine.ingest_event(common::TOPIC, partition, *offset, &event);
            assert!(matches!(outcome, Outcome::Applied(_)), "set-up: {outcome:?}");
            *offset += 1;
        }
    }
    assert_eq!(engine.managers(), MANAGERS);
    (engine, clock, registry)
}

/// Renders as the exporter does: the body pre-sized from the previous scrape (a 10k-manager body is
/// 21 to 28 MiB).
fn render(engine: &Engine, format: Format) -> String {
    let mut out = MetricWriter::with_capacity(format, 32 << 20);
    engine.render(&mut out);
    out.finish()
}

fn describe(name: &str, body: &str) {
    let series = body.lines().filter(|line| !line.is_empty() && !line.starts_with('#')).count();
    eprintln!(
        "{name}: {MANAGERS} managers, body {} bytes ({:.1} MiB), {series} series, {:.1} series per manager, {:.0} bytes per series",
        body.len(),
        body.len() as f64 / (1024.0 * 1024.0),
        series as f64 / MANAGERS as f64,
        body.len() as f64 / series as f64,
    );
}

fn scrape(c: &mut Criterion) {
    let mut group = c.benchmark_group("scrape");

    let realistic = populated(|rng| (0..6).map(|_| draw_call(rng)).collect());
    describe("scrape/render_text", &render(&realistic.0, Format::Text));
    describe("scrape/render_openmetrics", &render(&realistic.0, Format::OpenMetrics));
    group.bench_function(BenchmarkId::new("render_text", MANAGERS), |b| {
        b.iter(|| black_box(render(&realistic.0, Format::Text)))
    });
    group.bench_function(BenchmarkId::new("render_openmetrics", MANAGERS), |b| {
        b.iter(|| black_box(render(&realistic.0, Format::OpenMetrics)))
    });
    drop(realistic);

    let every = populated(|_| {
        CallDirection::ALL.into_iter().flat_map(|d| CallStatus::ALL.into_iter().map(move |s| (d, s))).collect()
    });
    describe("scrape/render_text_all_label_sets", &render(&every.0, Format::Text));
    group.bench_function(BenchmarkId::new("render_text_all_label_sets", MANAGERS), |b| {
        b.iter(|| black_box(render(&every.0, Format::Text)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = scrape
}
criterion_main!(benches);
