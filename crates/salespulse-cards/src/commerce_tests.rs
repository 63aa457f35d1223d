//! Hand-written histories for the commercial families, and a property test of receivables,
//! weighted pipeline and plan facts against a plain reference model.

use std::collections::HashMap;

use proptest::prelude::*;
use salespulse_core::expo::{label_prefix, Format};
use salespulse_core::window::WindowsConfig;
use salespulse_events::CardType;

use super::*;
use crate::test_support::{blank, setup, shuffle, snap};

/// 2026-11-23T12:00:00Z.
const T0: i64 = 1_795_435_200_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// 2026-11-01T00:00:00Z and 2026-12-01T00:00:00Z.
const NOV: i64 = 1_793_491_200_000;
const DEC: i64 = 1_796_083_200_000;

use CardChangeKind as K;

fn ev(card: &str, change: CardChangeKind) -> CardChange {
    CardChange { pipeline: Some("b2b".into()), ..blank(card, CardType::Deal, change) }
}

fn at_stage(card: &str, change: CardChangeKind, stage: &str) -> CardChange {
    CardChange { stage_to: Some(stage.into()), ..ev(card, change) }
}

fn money(card: &str, change: CardChangeKind, invoice: &str, amount: f64) -> CardChange {
    // Money events need not say where the deal is (a pipeline without a stage would place a card
    // first seen through them in the pipeline's "other" stage).
    CardChange { invoice_id: Some(invoice.into()), amount: Some(amount), pipeline: None, ..ev(card, change) }
}

fn rule(stage: &str, progress: Option<f64>, stuck_days: Option<i64>) -> StageRule {
    StageRule {
        pipeline: "b2b".into(),
        stage: stage.into(),
        progress_pct: progress,
        stuck_after_ms: stuck_days.map(|d| d * DAY),
    }
}

fn config(stages: Vec<StageRule>) -> CardsConfig {
    CardsConfig {
        pipelines: vec![PipelineConfig {
            name: "b2b".into(),
            stages: ["qualification", "proposal", "negotiation"].iter().map(|s| s.to_string()).collect(),
        }],
        commerce: CommerceConfig { stages, ..CommerceConfig::default() },
        ..CardsConfig::default()
    }
}

fn configured() -> CardsConfig {
    config(vec![
        rule("qualification", Some(10.0), None),
        rule("proposal", Some(40.0), None),
        rule("negotiation", Some(80.0), Some(2)),
    ])
}

fn apply_all(cards: &Cards, windows: &Windows, state: &CardState, events: &[(CardChange, i64)], now: i64) {
    for (event, at) in events {
        cards.apply(state, windows, event, *at, now);
    }
}

/// `events` applied with the stage rules of [`configured`] and the wall clock at `now`, and a
/// scrape at `now`.
fn scraped(events: &[(CardChange, i64)], now: i64) -> (Cards, CardSnapshot) {
    let (windows, cards) = setup(configured());
    let state = cards.new_state();
    apply_all(&cards, &windows, &state, events, now);
    let s = snap(&cards, &windows, &state, now);
    (cards, s)
}

/// The sample lines of `name` (exactly that family, with labels) in a render of one manager.
fn lines_of(cards: &Cards, s: &CardSnapshot, name: &str) -> Vec<String> {
    let labels = label_prefix(&[("manager", "m1")]);
    let mut out = MetricWriter::new(Format::Text);
    cards.render(&[CardRow { labels: &labels, cards: s }], &mut out);
    let prefix = format!("{name}{{");
    out.finish().lines().filter(|l| l.starts_with(&prefix)).map(str::to_owned).collect()
}

#[test]
fn a_deal_moving_0_40_100_weights_the_pipeline_by_event_progress() {
    // No progress configured: the events' stage_progress_pct counts.
    let (windows, cards) = setup(config(Vec::new()));
    let state = cards.new_state();
    let steps = [
        (
            CardChange {
                stage_progress_pct: Some(0.0),
                amount: Some(1000.0),
                ..at_stage("d", K::Created, "qualification")
            },
            0.0,
            0,
        ),
        (CardChange { stage_progress_pct: Some(40.0), ..at_stage("d", K::StageChanged, "proposal") }, 400.0, 0),
        (CardChange { stage_progress_pct: Some(100.0), ..at_stage("d", K::StageChanged, "negotiation") }, 1000.0, 1),
    ];
    for (i, (event, weighted, hot)) in steps.into_iter().enumerate() {
        cards.apply(&state, &windows, &event, T0 + i as i64 * HOUR, T0 + 3 * HOUR);
        let s = snap(&cards, &windows, &state, T0 + 3 * HOUR);
        assert_eq!(s.commerce.weighted_pipeline, weighted, "step {i}");
        assert_eq!(s.commerce.hot_deals, hot, "step {i}");
        assert_eq!(s.commerce.hot_deals_amount, 1000.0 * hot as f64, "step {i}");
    }
    let s = snap(&cards, &windows, &state, T0 + 3 * HOUR);
    assert_eq!(
        lines_of(&cards, &s, "salespulse_pipeline_amount"),
        [
            r#"salespulse_pipeline_amount{manager="m1",pipeline="b2b",stage="qualification"} 0"#,
            r#"salespulse_pipeline_amount{manager="m1",pipeline="b2b",stage="proposal"} 0"#,
            r#"salespulse_pipeline_amount{manager="m1",pipeline="b2b",stage="negotiation"} 1000"#,
        ]
    );
    assert_eq!(
        lines_of(&cards, &s, "salespulse_pipeline_weighted_amount"),
        [r#"salespulse_pipeline_weighted_amount{manager="m1"} 1000"#]
    );
    // Won: out of the pipeline.
    cards.apply(&state, &windows, &ev("d", K::Won), T0 + 3 * HOUR, T0 + 3 * HOUR);
    let s = snap(&cards, &windows, &state, T0 + 3 * HOUR);
    assert_eq!((s.commerce.weighted_pipeline, s.commerce.hot_deals), (0.0, 0));

    // Configured progress wins over the event's.
    let (windows, cards) = setup(configured());
    let state = cards.new_state();
    let event =
        CardChange { stage_progress_pct: Some(100.0), amount: Some(1000.0), ..at_stage("d", K::Created, "proposal") };
    cards.apply(&state, &windows, &event, T0, T0);
    assert_eq!(snap(&cards, &windows, &state, T0).commerce.weighted_pipeline, 400.0);
    // An unconfigured stage ("other") takes the event's progress.
    let event = CardChange { stage_progress_pct: Some(50.0), amount: Some(10.0), ..at_stage("e", K::Created, "x") };
    cards.apply(&state, &windows, &event, T0, T0);
    assert_eq!(snap(&cards, &windows, &state, T0).commerce.weighted_pipeline, 405.0);
}

#[test]
fn a_deal_sitting_in_negotiation_past_its_limit_is_stuck() {
    let (windows, cards) = setup(configured());
    let state = cards.new_state();
    let now = T0;
    apply_all(
        &cards,
        &windows,
        &state,
        &[
            (at_stage("stuck", K::Created, "qualification"), now - 10 * DAY),
            (at_stage("stuck", K::StageChanged, "negotiation"), now - 3 * DAY),
            // An update without a stage does not restart the clock.
            (CardChange { amount: Some(5.0), ..ev("stuck", K::Updated) }, now - DAY),
            (at_stage("fresh", K::Created, "negotiation"), now - DAY),
            (at_stage("early", K::Created, "proposal"), now - 30 * DAY),
        ],
        now,
    );
    let s = snap(&cards, &windows, &state, now);
    assert_eq!(
        lines_of(&cards, &s, "salespulse_deals_stuck"),
        [r#"salespulse_deals_stuck{manager="m1",pipeline="b2b",stage="negotiation"} 1"#]
    );
    assert_eq!(
        lines_of(&cards, &s, "salespulse_deals_stage_age_max_seconds"),
        [
            r#"salespulse_deals_stage_age_max_seconds{manager="m1",pipeline="b2b",stage="proposal"} 2592000"#,
            r#"salespulse_deals_stage_age_max_seconds{manager="m1",pipeline="b2b",stage="negotiation"} 259200"#,
        ]
    );
    // Moving on unsticks it; the gauge stays at 0 for the stage.
    cards.apply(&state, &windows, &at_stage("stuck", K::StageChanged, "proposal"), now, now);
    let s = snap(&cards, &windows, &state, now + DAY);
    assert_eq!(
        lines_of(&cards, &s, "salespulse_deals_stuck"),
        [r#"salespulse_deals_stuck{manager="m1",pipeline="b2b",stage="negotiation"} 0"#]
    );
    // Two days after the move, "fresh" (in negotiation since now - 1d) is stuck.
    let s = snap(&cards, &windows, &state, now + 2 * DAY);
    assert_eq!(s.commerce.stuck.iter().sum::<u64>(), 1);
}

#[test]
fn an_invoice_paid_after_the_month_boundary() {
    let (windows, cards) = setup(configured());
    let state = cards.new_state();
    let issued = DEC - 2 * DAY;
    let paid = DEC + DAY;
    apply_all(
        &cards,
        &windows,
        &state,
        &[
            (
                CardChange { amount: Some(900.0), margin: Some(300.0), ..at_stage("d", K::Created, "proposal") },
                issued - DAY,
            ),
            (money("d", K::InvoiceIssued, "inv-1", 900.0), issued),
            (ev("d", K::Won), issued),
        ],
        issued,
    );
    let november = cards.period_at(issued);
    assert_eq!(november, (NOV, DEC));
    let s = snap(&cards, &windows, &state, issued);
    assert_eq!((s.commerce.receivables, s.commerce.receivables_amount), (1, 900.0));
    assert_eq!(s.commerce.fact(NOV, FactSource::Won), [900.0, 300.0]);
    assert_eq!(s.commerce.fact(NOV, FactSource::PaymentReceived), [0.0, 0.0]);

    cards.apply(&state, &windows, &money("d", K::PaymentReceived, "inv-1", 900.0), paid, paid);
    // Repeated: still one payment.
    cards.apply(&state, &windows, &money("d", K::PaymentReceived, "inv-1", 900.0), paid + MIN, paid + MIN);
    let s = snap(&cards, &windows, &state, paid);
    assert_eq!((s.commerce.receivables, s.commerce.receivables_amount), (0, 0.0));
    assert_eq!((s.commerce.payments_received, s.commerce.payments_received_amount), (1, 900.0));
    assert_eq!((s.commerce.invoices_issued, s.commerce.invoices_issued_amount), (1, 900.0));
    let december = cards.period_at(paid);
    assert_eq!(december.0, DEC);
    // The payment is December's fact, the win November's; the payment's margin is the invoice's.
    assert_eq!(s.commerce.fact(DEC, FactSource::PaymentReceived), [900.0, 300.0]);
    assert_eq!(s.commerce.fact(DEC, FactSource::Won), [0.0, 0.0]);
    assert_eq!(s.commerce.fact(NOV, FactSource::PaymentReceived), [0.0, 0.0]);
    assert_eq!(
        lines_of(&cards, &s, "salespulse_receivables_amount"),
        [r#"salespulse_receivables_amount{manager="m1"} 0"#]
    );
    assert_eq!(
        lines_of(&cards, &s, "salespulse_payments_received_amount_total"),
        [r#"salespulse_payments_received_amount_total{manager="m1"} 900"#]
    );
}

#[test]
fn plan_facts_completion_and_expected_follow_the_plans_in_force() {
    let (windows, cards) = setup(configured());
    let state = cards.new_state();
    let now = NOV + 15 * DAY; // half of November (30 days) gone
    apply_all(
        &cards,
        &windows,
        &state,
        &[
            (CardChange { amount: Some(400.0), margin: Some(100.0), ..ev("d1", K::Won) }, NOV + DAY),
            (money("d2", K::PaymentReceived, "inv", 250.0), NOV + 2 * DAY),
            // October's win is not November's fact.
            (CardChange { amount: Some(7000.0), ..ev("d3", K::Won) }, NOV - DAY),
        ],
        now,
    );
    let s = snap(&cards, &windows, &state, now);
    let render = |plans: &Plans| {
        let labels = label_prefix(&[("manager", "m1"), ("team", "north")]);
        let rows = [
            PlanRow { labels: &labels, manager: "m1", team: Some("north"), cards: Some(&s) },
            PlanRow { labels: r#"manager="m2""#, manager: "m2", team: None, cards: None },
        ];
        let mut out = MetricWriter::new(Format::Text);
        cards.render_plans(&rows, plans, now, &mut out);
        out.finish().lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect::<Vec<_>>()
    };
    let target = |revenue, margin| Target { revenue, margin };
    let first = Plans {
        fact: FactSource::Won,
        managers: HashMap::from([("m1".to_owned(), target(Some(1000.0), None))]),
        teams: HashMap::from([("north".to_owned(), (target(Some(5000.0), Some(900.0)), None))]),
    };
    assert_eq!(
        render(&first),
        [
            "salespulse_plan_period_elapsed_ratio 0.5",
            r#"salespulse_plan{manager="m1",team="north",measure="revenue"} 1000"#,
            r#"salespulse_plan_fact{manager="m1",team="north",measure="revenue"} 400"#,
            r#"salespulse_plan_fact{manager="m1",team="north",measure="margin"} 100"#,
            r#"salespulse_plan_completion_ratio{manager="m1",team="north",measure="revenue"} 0.4"#,
            r#"salespulse_plan_expected{manager="m1",team="north",measure="revenue"} 500"#,
            r#"salespulse_team_plan{team="north",measure="revenue"} 5000"#,
            r#"salespulse_team_plan{team="north",measure="margin"} 900"#,
        ]
    );
    // Reloaded mid-run: the team counts payments now, m2 got a plan, m1's plan doubled.
    let second = Plans {
        fact: FactSource::Won,
        managers: HashMap::from([
            ("m1".to_owned(), target(Some(2000.0), Some(100.0))),
            ("m2".to_owned(), target(Some(10.0), None)),
        ]),
        teams: HashMap::from([("north".to_owned(), (target(Some(5000.0), None), Some(FactSource::PaymentReceived)))]),
    };
    assert_eq!(
        render(&second),
        [
            "salespulse_plan_period_elapsed_ratio 0.5",
            r#"salespulse_plan{manager="m1",team="north",measure="revenue"} 2000"#,
            r#"salespulse_plan{manager="m1",team="north",measure="margin"} 100"#,
            r#"salespulse_plan{manager="m2",measure="revenue"} 10"#,
            r#"salespulse_plan_fact{manager="m1",team="north",measure="revenue"} 250"#,
            r#"salespulse_plan_fact{manager="m1",team="north",measure="margin"} 0"#,
            r#"salespulse_plan_fact{manager="m2",measure="revenue"} 0"#,
            r#"salespulse_plan_fact{manager="m2",measure="margin"} 0"#,
            r#"salespulse_plan_completion_ratio{manager="m1",team="north",measure="revenue"} 0.125"#,
            r#"salespulse_plan_completion_ratio{manager="m1",team="north",measure="margin"} 0"#,
            r#"salespulse_plan_completion_ratio{manager="m2",measure="revenue"} 0"#,
            r#"salespulse_plan_expected{manager="m1",team="north",measure="revenue"} 1000"#,
            r#"salespulse_plan_expected{manager="m1",team="north",measure="margin"} 50"#,
            r#"salespulse_plan_expected{manager="m2",measure="revenue"} 5"#,
            r#"salespulse_team_plan{team="north",measure="revenue"} 5000"#,
        ]
    );
}

#[test]
fn plan_periods_are_cut_in_the_configured_zone() {
    let moscow: chrono_tz::Tz = "Europe/Moscow".parse().unwrap();
    // 2026-11-30T22:00Z is already December 1st in Moscow (UTC+3).
    let at = DEC - 2 * HOUR;
    assert_eq!(Period::Month.bounds(chrono_tz::Tz::UTC, at), (NOV, DEC));
    assert_eq!(Period::Month.bounds(moscow, at), (DEC - 3 * HOUR, DEC - 3 * HOUR + 31 * DAY));
    // Monday 2026-11-23 .. Monday 2026-11-30; Q4 = October .. January.
    assert_eq!(Period::Week.bounds(chrono_tz::Tz::UTC, T0), (T0 - 12 * HOUR, T0 - 12 * HOUR + 7 * DAY));
    let (start, end) = Period::Quarter.bounds(chrono_tz::Tz::UTC, T0);
    assert_eq!((start, end), (NOV - 31 * DAY, DEC + 31 * DAY));
}

#[test]
fn deal_durations_are_observed_once_whatever_the_order() {
    let (cards, s) = scraped(
        &[
            (at_stage("w", K::Created, "proposal"), T0 - 10 * DAY),
            (ev("w", K::Won), T0),
            (ev("w", K::Won), T0 + MIN),
            // The close arrives before the creation.
            (ev("l", K::Lost), T0),
            (at_stage("l", K::Created, "proposal"), T0 - 2 * DAY),
            // No creation seen: no duration.
            (ev("x", K::Won), T0),
        ],
        T0 + MIN,
    );
    let (won, won_count, won_sum) = s.commerce.durations(0);
    assert_eq!((won_count, won_sum), (1, 10.0 * 86_400.0));
    assert_eq!(won, [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]);
    let (lost, lost_count, _) = s.commerce.durations(1);
    assert_eq!(lost_count, 1);
    assert_eq!(lost, [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    let lines = lines_of(&cards, &s, "salespulse_deal_duration_seconds_bucket");
    assert_eq!(lines.len(), 20);
    assert!(lines
        .contains(&r#"salespulse_deal_duration_seconds_bucket{manager="m1",outcome="won",le="1209600"} 1"#.to_owned()));
    assert!(lines
        .contains(&r#"salespulse_deal_duration_seconds_bucket{manager="m1",outcome="lost",le="+Inf"} 1"#.to_owned()));
}

#[test]
fn meetings_and_money_counters_render() {
    let (cards, s) = scraped(
        &[
            (ev("d", K::MeetingScheduled), T0 - HOUR),
            (ev("d", K::MeetingHeld), T0),
            (money("d", K::InvoiceIssued, "a", 100.0), T0),
            (money("d", K::InvoiceIssued, "a", 100.0), T0),
            (money("d", K::InvoiceIssued, "b", 50.5), T0),
            // An invoice without an amount takes the deal's; without an id, it is the card's one.
            (CardChange { amount: Some(70.0), ..ev("e", K::Updated) }, T0),
            (ev("e", K::InvoiceIssued), T0),
        ],
        T0,
    );
    let one = |name: &str| lines_of(&cards, &s, name).join("\n");
    assert_eq!(one("salespulse_meetings_scheduled_total"), r#"salespulse_meetings_scheduled_total{manager="m1"} 1"#);
    assert_eq!(one("salespulse_meetings_held_total"), r#"salespulse_meetings_held_total{manager="m1"} 1"#);
    assert_eq!(one("salespulse_invoices_issued_total"), r#"salespulse_invoices_issued_total{manager="m1"} 3"#);
    assert_eq!(
        one("salespulse_invoices_issued_amount_total"),
        r#"salespulse_invoices_issued_amount_total{manager="m1"} 220.5"#
    );
    assert_eq!(one("salespulse_receivables_invoices"), r#"salespulse_receivables_invoices{manager="m1"} 3"#);
    assert_eq!(one("salespulse_receivables_amount"), r#"salespulse_receivables_amount{manager="m1"} 220.5"#);
    assert_eq!(s.join.invoices, 3);
}

#[test]
fn stage_rules_are_checked() {
    let windows = Windows::new(&WindowsConfig::default()).unwrap();
    for stages in [
        vec![StageRule { pipeline: "retail".into(), ..rule("new", Some(1.0), None) }],
        vec![rule("won", Some(1.0), None)],
        vec![rule("proposal", Some(101.0), None)],
        vec![rule("proposal", None, Some(0))],
    ] {
        assert!(matches!(Cards::new(&windows, &config(stages.clone())), Err(ConfigError::Commerce(_))), "{stages:?}");
    }
    let mut bad = configured();
    bad.commerce.hot_deal_progress_pct = -1.0;
    assert!(matches!(Cards::new(&windows, &bad), Err(ConfigError::Commerce(_))));
    bad.commerce.hot_deal_progress_pct = 80.0;
    bad.commerce.max_invoices_per_manager = 0;
    assert!(matches!(Cards::new(&windows, &bad), Err(ConfigError::Limit(_))));
}

/// One deal's history for the reference model: created in a stage with an amount, later stage
/// changes, maybe a close; one invoice, maybe paid.
#[derive(Debug, Clone)]
struct DealPlan {
    stages: Vec<usize>,
    amount: u32,
    close: Option<bool>,
    invoice: Option<(u32, bool)>,
}

const STAGES: [&str; 3] = ["qualification", "proposal", "negotiation"];
const PROGRESS: [f64; 3] = [10.0, 40.0, 80.0];

fn deal_plan() -> impl Strategy<Value = DealPlan> {
    (
        proptest::collection::vec(0usize..3, 1..4),
        1u32..100_000,
        proptest::option::of(any::<bool>()),
        proptest::option::of((1u32..100_000, any::<bool>())),
    )
        .prop_map(|(stages, amount, close, invoice)| DealPlan { stages, amount, close, invoice })
}

/// The events of `deals`, times strictly increasing per deal, all within November.
fn events_of(deals: &[DealPlan]) -> Vec<(CardChange, i64)> {
    let mut events = Vec::new();
    for (d, plan) in deals.iter().enumerate() {
        let id = format!("deal-{d}");
        let mut at = NOV + DAY + d as i64 * HOUR;
        let created =
            CardChange { amount: Some(f64::from(plan.amount)), ..at_stage(&id, K::Created, STAGES[plan.stages[0]]) };
        events.push((created, at));
        for &stage in &plan.stages[1..] {
            at += MIN;
            events.push((at_stage(&id, K::StageChanged, STAGES[stage]), at));
        }
        if let Some(won) = plan.close {
            at += MIN;
            events.push((ev(&id, if won { K::Won } else { K::Lost }), at));
        }
        if let Some((amount, paid)) = plan.invoice {
            let invoice = format!("inv-{d}");
            events.push((money(&id, K::InvoiceIssued, &invoice, f64::from(amount)), at + MIN));
            if paid {
                events.push((money(&id, K::PaymentReceived, &invoice, f64::from(amount)), at + 2 * MIN));
            }
        }
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn receivables_pipeline_and_facts_match_a_reference_model(
        deals in proptest::collection::vec(deal_plan(), 1..12),
        order in any::<u64>(),
        repeats in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let (windows, cards) = setup(configured());
        let mut events = events_of(&deals);
        for repeat in &repeats {
            let copy = events[repeat.index(events.len())].clone();
            events.push(copy);
        }
        shuffle(&mut events, order);
        let now = NOV + 20 * DAY;
        let state = cards.new_state();
        apply_all(&cards, &windows, &state, &events, now);
        let s = snap(&cards, &windows, &state, now);

        let mut receivables = (0u64, 0.0);
        let mut weighted = 0.0;
        let mut won = 0.0;
        let mut paid = 0.0;
        for plan in &deals {
            let amount = f64::from(plan.amount);
            match plan.close {
                None => weighted += amount * PROGRESS[*plan.stages.last().unwrap()] / 100.0,
                Some(true) => won += amount,
                Some(false) => {}
            }
            if let Some((invoice, was_paid)) = plan.invoice {
                if was_paid {
                    paid += f64::from(invoice);
                } else {
                    receivables.0 += 1;
                    receivables.1 += f64::from(invoice);
                }
            }
        }
        prop_assert_eq!((s.commerce.receivables, s.commerce.receivables_amount), receivables);
        prop_assert!((s.commerce.weighted_pipeline - weighted).abs() < 1e-6, "{} vs {}", s.commerce.weighted_pipeline, weighted);
        prop_assert_eq!(s.commerce.fact(NOV, FactSource::Won)[0], won);
        prop_assert_eq!(s.commerce.fact(NOV, FactSource::PaymentReceived)[0], paid);
        prop_assert_eq!(s.commerce.payments_received_amount, paid);

        // Split over two partitions (by deal) and merged: the same numbers.
        let (a, b) = (cards.new_state(), cards.new_state());
        for (event, at) in &events {
            let part = if (crate::key(&event.card_id) >> 1).is_multiple_of(2) { &a } else { &b };
            cards.apply(part, &windows, event, *at, now);
        }
        let mut merged = snap(&cards, &windows, &a, now);
        merged.merge(&snap(&cards, &windows, &b, now));
        prop_assert_eq!((merged.commerce.receivables, merged.commerce.receivables_amount), receivables);
        prop_assert_eq!(merged.commerce.fact(NOV, FactSource::Won)[0], won);
        prop_assert!((merged.commerce.weighted_pipeline - weighted).abs() < 1e-6);
    }
}
