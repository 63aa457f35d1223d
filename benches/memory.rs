//! Heap memory per manager and per de-duplication fingerprint, measured with a counting global
//! allocator (live bytes requested, not counting the system allocator's own overhead).
//!
//! Per manager: two fresh engines take the same number `n` of call events with unique ids on one
//! partition, one engine spread over `n` managers, the other all to one manager; the difference of
//! their live heap, over `n - 1`, is one manager's cost (map slot, `Arc<str>` key, team, entry,
//! call state and its window buckets), with the ledger's growth cancelled out.
//!
//! Per fingerprint: 1M events with unique ids to one existing manager on one partition, within the
//! 15-minute de-duplication horizon; the heap growth over the fingerprints held.
//!
//! Run: `cargo bench -p salespulse-engine --bench memory`.

#[allow(dead_code)]
mod common;

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use salespulse_calls::{CallExport, CallState};
use salespulse_core::table::Entry;
use salespulse_core::window::Layout;
use salespulse_engine::{Engine, ManagerState, Outcome};
use salespulse_events::{CallDirection, CallStatus};

use common::{blank_event, engine, fill_call, manager_id, team_of, T0, TOPIC};

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        let pointer = System.alloc(layout);
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        let pointer = System.alloc_zeroed(layout);
        if !pointer.is_null() {
            grew(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: AllocLayout) {
        System.dealloc(pointer, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(pointer, layout, new_size);
        if !moved.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Live heap of an engine (created and fed here) after `events` call events with unique ids on one
/// partition, spread round-robin over `managers` managers; the engine is returned to stay alive.
fn engine_after(events: usize, managers: usize) -> (usize, Engine) {
    let before = live();
    let (engine, clock, registry) = engine(managers);
    clock.set(T0);
    let inputs_before = live();
    let names: Vec<String> = (0..managers).map(manager_id).collect();
    let teams: Vec<String> = (0..managers).map(team_of).collect();
    let mut event = blank_event();
    let call = (CallDirection::Outbound, CallStatus::Answered);
    // The generator's own buffers (names, teams, the event) are not the engine's.
    let inputs = live() - inputs_before;
    for i in 0..events {
        let m = i % managers;
        fill_call(&mut event, i as u64 + 1, &names[m], &teams[m], T0 - 1_000, call, 60_000);
        let outcome = engine.ingest_event(TOPIC, 0, i as i64, &event);
        assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
    }
    let engine_bytes = live() - before - inputs;
    drop((names, teams, event, registry, clock));
    (engine_bytes, engine)
}

struct PerManager {
    managers: usize,
    total: f64,
}

fn per_manager(managers: usize) -> PerManager {
    let (spread, engine_spread) = engine_after(managers, managers);
    let (single, engine_single) = engine_after(managers, 1);
    assert_eq!(engine_spread.managers(), managers);
    assert_eq!(engine_single.managers(), 1);
    // Both ledgers hold `managers` fingerprints: the same growth, cancelled by the difference.
    assert_eq!(engine_spread.ledger_usage(), engine_single.ledger_usage());
    PerManager { managers, total: (spread as f64 - single as f64) / (managers - 1) as f64 }
}

struct LedgerCost {
    fingerprints: usize,
    reported_bytes: usize,
    live_delta: usize,
    peak_delta: usize,
}

/// 1M events with unique ids to one manager, 0.6 ms apart in event time (10 minutes in all, inside
/// the 15-minute horizon).
fn ledger_cost(events: usize) -> (LedgerCost, Engine) {
    let (engine, clock, _registry) = engine(1);
    let mut event = blank_event();
    let call = (CallDirection::Inbound, CallStatus::Answered);
    let (manager, team) = (manager_id(0), team_of(0));
    // The manager and its state exist before measuring.
    fill_call(&mut event, 0, &manager, &team, T0, call, 60_000);
    clock.set(T0);
    assert!(matches!(engine.ingest_event(TOPIC, 0, 0, &event), Outcome::Applied(_)));
    let (_, before_fingerprints) = engine.ledger_usage();
    let before = live();
    PEAK.store(before, Ordering::Relaxed);
    for i in 1..=events {
        let at = T0 + (i as i64 * 3) / 5;
        fill_call(&mut event, i as u64, &manager, &team, at, call, 60_000);
        clock.set(at);
        let outcome = engine.ingest_event(TOPIC, 0, i as i64, &event);
        assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
    }
    let live_delta = live() - before;
    let peak_delta = PEAK.load(Ordering::Relaxed) - before;
    let (reported_bytes, fingerprints) = engine.ledger_usage();
    assert_eq!(fingerprints, before_fingerprints + events);
    (LedgerCost { fingerprints, reported_bytes, live_delta, peak_delta }, engine)
}

fn main() {
    // Anything initialised lazily on first use (metrics, statics) is paid here, not measured.
    drop(engine_after(1_000, 100));

    let (engine, _clock, _registry) = engine(1);
    let windows = &engine.config().windows;
    let export = CallExport::default();
    let served: Vec<usize> = windows
        .specs()
        .iter()
        .enumerate()
        .filter(|(_, spec)| {
            [&export.calls, &export.successful_contacts, &export.missed_calls, &export.talk_seconds]
                .iter()
                .any(|list| list.contains(&spec.label))
        })
        .map(|(index, _)| index)
        .collect();
    // The call stream keeps 5 counters per bucket (calls in, calls out, missed, successful, talk);
    // checked against the engine's own figure.
    let dims = 5;
    let layout = Layout::new(windows, dims, &served);
    let call_state = engine.call_state_bytes();
    assert_eq!(layout.bytes() + std::mem::size_of::<CallState>(), call_state, "call layout is not 5 counters");
    let windowed_series = 2 * export.calls.len()
        + export.successful_contacts.len()
        + export.missed_calls.len()
        + export.talk_seconds.len();
    let labels: Vec<String> = served.iter().map(|&i| windows.specs()[i].label.clone()).collect();
    let levels: Vec<String> =
        windows.levels().iter().map(|level| format!("{} x {} s", level.slots, level.bucket_ms / 1000)).collect();
    drop(engine);

    println!("Window state (default windows, default call export)");
    println!("  windows served by the call layout: {} ({})", labels.len(), labels.join(", "));
    println!("  levels (slots x bucket): {}", levels.join(", "));
    println!("  counters per bucket: {dims}, plus one stamp");
    println!("  window buckets per manager:        {:>6} B", layout.bytes());
    println!("  call state per manager (Engine::call_state_bytes, buckets + totals): {call_state:>6} B");
    println!(
        "  bytes per counter per window: {} / ({dims} x {}) = {:.1} B",
        layout.bytes(),
        labels.len(),
        layout.bytes() as f64 / (dims * labels.len()) as f64
    );
    println!(
        "  bytes per exported windowed series: {} / {windowed_series} = {:.1} B",
        layout.bytes(),
        layout.bytes() as f64 / windowed_series as f64
    );
    println!(
        "  map entry (Arc<str> key + Entry<ManagerState>): {} B",
        std::mem::size_of::<(Arc<str>, Entry<ManagerState>)>()
    );
    println!();

    println!("Heap per manager (allocator, live bytes)");
    println!("  {:>9}  {:>10}  {:>12}  {:>20}", "managers", "total B", "call state B", "map, key, team, etc. B");
    for managers in [10_000, 100_000] {
        let cost = per_manager(managers);
        println!(
            "  {:>9}  {:>10.0}  {:>12}  {:>20.0}",
            cost.managers,
            cost.total,
            call_state,
            cost.total - call_state as f64
        );
    }
    println!();

    let (cost, engine) = ledger_cost(1_000_000);
    let per = |bytes: usize| bytes as f64 / cost.fingerprints as f64;
    println!("De-duplication ledger, 1M unique event ids within the horizon on one partition");
    println!("  fingerprints held: {}", cost.fingerprints);
    println!(
        "  Engine::ledger_usage():   {:>11} B  = {:>5.1} B per fingerprint",
        cost.reported_bytes,
        per(cost.reported_bytes)
    );
    println!(
        "  allocator, live delta:    {:>11} B  = {:>5.1} B per fingerprint",
        cost.live_delta,
        per(cost.live_delta)
    );
    println!(
        "  allocator, peak delta:    {:>11} B  = {:>5.1} B per fingerprint",
        cost.peak_delta,
        per(cost.peak_delta)
    );
    drop(engine);
}
