//! Apply throughput of one ingest thread (so: per core), default windows and call export.
//!
//! - `apply/ingest_event/{10,10000,100000}`: `Engine::ingest_event` of pre-built call events with
//!   unique ids and increasing offsets on one partition, to managers chosen uniformly at random, all
//!   of which exist (warm-up). Includes the offset check, the future and lateness checks, the
//!   event-id fingerprint and its insert into the de-duplication ledger, the manager lookup, the
//!   team check, the totals and the window buckets, and the ingest counters.
//! - `apply/duplicate_event_id/10000`: the same events again at new offsets: the event-id path.
//! - `apply/ingest_protobuf/10000`, `apply/ingest_json/10000`: `Engine::ingest` of encoded
//!   records, decoding included.
//! - `clock/system_now_ms`: what the production clock adds per event (the benchmarks use a manual
//!   clock).
//!
//! The wall clock moves 1 ms per event, so windows roll and ledger generations turn over as they
//! would at 1000 events/s per partition. Every timed loop counts its outcomes and the benchmark
//! fails if any is not the one measured, so no short-circuit is mistaken for throughput.

#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prometheus::Registry;
use salespulse_core::clock::{Clock, ManualClock, SystemClock};
use salespulse_core::ledger::Duplicate;
use salespulse_engine::{Engine, EngineConfig, Outcome, Record};
use salespulse_events::{encode_json, encode_protobuf, Event};

use common::{blank_event, engine_with, Generator, T0, TOPIC};

/// Events generated per untimed refill.
const CHUNK: usize = 8_192;

/// An engine, its clock and a stream of fresh events, with the partition's next offset.
struct Stream {
    engine: Engine,
    clock: Arc<ManualClock>,
    _registry: Registry,
    generator: Generator,
    events: Vec<Event>,
    arrivals: Vec<i64>,
    offset: i64,
}

impl Stream {
    /// An engine where each of `managers` managers has had one event already.
    fn new(managers: usize) -> Stream {
        Stream::with(managers, |_| {})
    }

    /// [`Stream::new`] with a change to the default configuration.
    fn with(managers: usize, configure: impl FnOnce(&mut EngineConfig)) -> Stream {
        let (engine, clock, registry) = engine_with(managers, configure);
        let mut stream = Stream {
            engine,
            clock,
            _registry: registry,
            generator: Generator::new(managers, T0, 0x5eed),
            events: (0..CHUNK).map(|_| blank_event()).collect(),
            arrivals: vec![0; CHUNK],
            offset: 0,
        };
        let mut event = blank_event();
        for index in 0..managers {
            let now = stream.generator.fill_for(&mut event, index);
            stream.clock.set(now);
            let outcome = stream.engine.ingest_event(TOPIC, 0, stream.offset, &event);
            assert!(matches!(outcome, Outcome::Applied(_)), "warm-up: {outcome:?}");
            stream.offset += 1;
        }
        assert_eq!(stream.engine.managers(), managers);
        stream
    }

    /// Regenerates the first `n` events (untimed).
    fn refill(&mut self, n: usize) {
        for (event, arrival) in self.events[..n].iter_mut().zip(&mut self.arrivals[..n]) {
            *arrival = self.generator.fill(event);
        }
    }

    /// Ingests `iters` fresh events; returns the time spent in `ingest_event` (and setting the
    /// manual clock).
    fn apply(&mut self, iters: u64) -> Duration {
        let mut timed = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            self.refill(n);
            let mut applied = 0usize;
            let start = Instant::now();
            for (event, &arrival) in self.events[..n].iter().zip(&self.arrivals[..n]) {
                self.clock.set(arrival);
                let outcome = self.engine.ingest_event(TOPIC, 0, self.offset, event);
                applied += usize::from(matches!(outcome, Outcome::Applied(_)));
                self.offset += 1;
            }
            timed += start.elapsed();
            assert_eq!(applied, n, "every event must be applied");
            left -= n as u64;
        }
        timed
    }
}

fn ingest_event(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));
    for managers in [10, 10_000, 100_000] {
        let mut stream = Stream::new(managers);
        group
            .bench_function(BenchmarkId::new("ingest_event", managers), |b| b.iter_custom(|iters| stream.apply(iters)));
        let (bytes, fingerprints) = stream.engine.ledger_usage();
        eprintln!(
            "apply/ingest_event/{managers}: {} events applied, ledger holds {fingerprints} fingerprints in ~{} KiB",
            stream.generator.seq,
            bytes / 1024
        );
    }

    // Diagnostic, not the production configuration: a 1-second de-duplication horizon keeps the
    // ledger at about 2k fingerprints, in cache, so the difference to `ingest_event` is what the
    // 15-minute ledger (about 1M fingerprints at 1000 events/s of event time) costs in cache misses.
    for managers in [10, 10_000] {
        let mut stream = Stream::with(managers, |config| config.dedup_horizon_ms = 1_000);
        group.bench_function(BenchmarkId::new("ingest_event_hot_ledger", managers), |b| {
            b.iter_custom(|iters| stream.apply(iters))
        });
    }

    // Replays of event ids already applied, at new offsets, with the wall clock standing still
    // (so every id stays within the horizon).
    let mut stream = Stream::new(10_000);
    stream.apply(CHUNK as u64);
    let mut offset = stream.offset;
    group.bench_function(BenchmarkId::new("duplicate_event_id", 10_000), |b| {
        b.iter_custom(|iters| {
            let mut duplicates = 0u64;
            let start = Instant::now();
            for i in 0..iters {
                let event = &stream.events[(i % CHUNK as u64) as usize];
                let outcome = stream.engine.ingest_event(TOPIC, 0, offset, event);
                duplicates += u64::from(matches!(outcome, Outcome::Duplicate(Duplicate::EventId)));
                offset += 1;
            }
            let timed = start.elapsed();
            assert_eq!(duplicates, iters, "every replay must be a duplicate");
            timed
        })
    });
    group.finish();
}

/// `Engine::ingest` of records encoded by `encode`, with the given `content-type` header.
fn ingest_encoded(c: &mut Criterion, name: &str, content_type: &'static [u8], encode: fn(&Event) -> Vec<u8>) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));
    let managers = 10_000;
    let mut stream = Stream::new(managers);
    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(CHUNK);
    let bytes: usize = {
        stream.refill(1);
        encode(&stream.events[0]).len()
    };
    eprintln!("apply/{name}: a call event is {bytes} bytes encoded");
    group.bench_function(BenchmarkId::new(name, managers), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                stream.refill(n);
                payloads.clear();
                payloads.extend(stream.events[..n].iter().map(encode));
                let mut applied = 0usize;
                let start = Instant::now();
                for (payload, &arrival) in payloads.iter().zip(&stream.arrivals[..n]) {
                    stream.clock.set(arrival);
                    let record = Record {
                        topic: TOPIC,
                        partition: 0,
                        offset: stream.offset,
                        content_type: Some(content_type),
                        payload: Some(payload),
                    };
                    applied += usize::from(matches!(stream.engine.ingest(&record), Outcome::Applied(_)));
                    stream.offset += 1;
                }
                timed += start.elapsed();
                assert_eq!(applied, n, "every record must be applied");
                left -= n as u64;
            }
            timed
        })
    });
    group.finish();
}

fn ingest_protobuf(c: &mut Criterion) {
    ingest_encoded(c, "ingest_protobuf", b"application/x-protobuf", encode_protobuf);
}

fn ingest_json(c: &mut Criterion) {
    ingest_encoded(c, "ingest_json", b"application/json", encode_json);
}

fn system_clock(c: &mut Criterion) {
    c.bench_function("clock/system_now_ms", |b| b.iter(|| black_box(SystemClock.now_ms())));
}

fn config() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = ingest_event, ingest_protobuf, ingest_json, system_clock
}
criterion_main!(benches);
