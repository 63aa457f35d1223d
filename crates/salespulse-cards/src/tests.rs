use super::*;
use crate::test_support::{blank, setup, snap};
use proptest::prelude::*;
use salespulse_core::expo::{label_prefix, Format};
use salespulse_core::window::{local_day_start, shift_bounds, WindowKind, WindowsConfig};
use salespulse_events::CardType;

/// 2026-11-23T12:00:00Z, a Monday: inside the default 09:00–18:00 UTC shift.
const T0: i64 = 1_795_435_200_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

use CardChangeKind as K;

fn ev(card: &str, card_type: CardType, change: CardChangeKind) -> CardChange {
    CardChange { client_id: Some("client-1".into()), ..blank(card, card_type, change) }
}

fn deal(card: &str, change: CardChangeKind) -> CardChange {
    ev(card, CardType::Deal, change)
}

/// A deal event placing the card in `pipeline`/`to` (from `from`, if given).
fn staged(card: &str, change: CardChangeKind, pipeline: &str, from: Option<&str>, to: &str) -> CardChange {
    CardChange {
        pipeline: Some(pipeline.into()),
        stage_from: from.map(Into::into),
        stage_to: Some(to.into()),
        ..deal(card, change)
    }
}

fn amount(change: CardChange, amount: f64) -> CardChange {
    CardChange { amount: Some(amount), ..change }
}

fn comment(card: &str, length: Option<u32>) -> CardChange {
    CardChange { comment_length: length, ..deal(card, K::CommentAdded) }
}

/// A task event on `card` (of `card_type`) with `task_id` and due time.
fn task(
    change: CardChangeKind,
    card: &str,
    card_type: CardType,
    task_id: Option<&str>,
    due: Option<i64>,
) -> CardChange {
    CardChange { task_id: task_id.map(Into::into), task_due_at_ms: due, ..ev(card, card_type, change) }
}

fn pipelines() -> Vec<PipelineConfig> {
    let pipeline = |name: &str, stages: &[&str]| PipelineConfig {
        name: name.into(),
        stages: stages.iter().map(|s| s.to_string()).collect(),
    };
    vec![pipeline("b2b", &["qualification", "proposal", "negotiation"]), pipeline("retail", &["new", "paid"])]
}

fn config() -> CardsConfig {
    CardsConfig { pipelines: pipelines(), ..CardsConfig::default() }
}

fn export_all() -> CardExport {
    let all: Vec<String> = ["5m", "1h", "8h", "today", "shift"].iter().map(|s| s.to_string()).collect();
    CardExport {
        cards_touched: all.clone(),
        comments: all.clone(),
        thin_comments: all.clone(),
        client_transitions: all,
    }
}

/// Applies `(event, minutes relative to T0)` with the wall clock at T0.
fn run(cards: &Cards, windows: &Windows, events: &[(CardChange, i64)]) -> CardState {
    let state = cards.new_state();
    for (event, minutes) in events {
        cards.apply(&state, windows, event, T0 + minutes * MIN, T0);
    }
    state
}

fn render(cards: &Cards, rows: &[CardRow<'_>]) -> String {
    let mut out = MetricWriter::new(Format::Text);
    cards.render(rows, &mut out);
    out.finish()
}

fn samples(body: &str) -> Vec<&str> {
    body.lines().filter(|l| !l.starts_with('#')).collect()
}

/// Every open-deal count of the configured slots, as `(pipeline, stage, count)` with count > 0.
fn open_deals(cards: &Cards, snapshot: &CardSnapshot) -> Vec<(String, String, u64)> {
    (0..cards.funnel.slots() as u16)
        .filter_map(|slot| {
            let (p, s) = cards.funnel.slot_labels(slot);
            let n = cards.deals_open(snapshot, p, s);
            (n > 0).then(|| (p.to_string(), s.to_string(), n))
        })
        .collect()
}

/// Expected open deals: `(pipeline, stage, count)`.
type Open<'a> = Vec<(&'a str, &'a str, u64)>;

fn open(list: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    list.iter().map(|(p, s, n)| (p.to_string(), s.to_string(), *n)).collect()
}

#[test]
fn thin_comment_threshold_is_exclusive_and_needs_a_length() {
    let (_, cards) = setup(config());
    for (event, thin) in [
        (comment("d", Some(0)), true),
        (comment("d", Some(19)), true),
        (comment("d", Some(20)), false),
        (comment("d", Some(500)), false),
        (comment("d", None), false),
        (CardChange { comment_length: Some(3), ..deal("d", K::Updated) }, false),
    ] {
        assert_eq!(cards.is_thin(&event), thin, "{:?} {:?}", event.change, event.comment_length);
    }
}

#[test]
fn changes_and_comments_totals_and_windows() {
    let (windows, cards) = setup(CardsConfig { export: export_all(), ..config() });
    let state = run(
        &cards,
        &windows,
        &[
            (comment("d1", Some(5)), -1),       // thin; in every window
            (comment("d1", Some(80)), -30),     // 1h, 8h, today, shift
            (comment("c1", None), -150),        // 8h, today, shift (09:30)
            (comment("c2", Some(1)), -11 * 60), // 01:00 today: 8h? no (04:00 start); today yes
            (comment("c3", Some(1)), -13 * 60), // 23:00 yesterday: none
            (deal("d1", K::Updated), -2),
            (ev("c1", CardType::Contact, K::Created), -3),
        ],
    );
    let s = snap(&cards, &windows, &state, T0);
    let mut changes = [0u64; CHANGES];
    changes[K::CommentAdded.index()] = 5;
    changes[K::Updated.index()] = 1;
    changes[K::Created.index()] = 1;
    assert_eq!(s.totals.changes, changes);
    assert_eq!((s.totals.comments, s.totals.thin_comments), (5, 3));
    for (window, comments, thin) in [("5m", 1, 1), ("1h", 2, 1), ("8h", 3, 1), ("today", 4, 2), ("shift", 3, 1)] {
        assert_eq!(cards.window_comments(&s, window), (Some(comments), Some(thin)), "{window}");
    }
}

#[test]
fn cards_touched_counts_distinct_cards_across_buckets() {
    let (windows, cards) = setup(CardsConfig { export: export_all(), ..config() });
    let touch = |card: &str| ev(card, CardType::Lead, K::Updated);
    let state = run(
        &cards,
        &windows,
        &[
            // "a": three touches in different buckets of every level, and one the day before.
            (touch("a"), -10),
            (touch("a"), -9),
            (touch("a"), -1),
            (touch("a"), -13 * 60),
            (touch("b"), -2 * 60),  // 10:00
            (touch("c"), -4 * 60),  // 08:00: before the shift
            (touch("d"), -13 * 60), // 23:00 yesterday
            // "e": three touches, the older one applied last.
            (touch("e"), 0),
            (touch("e"), -1),
            (comment("e", Some(3)), 0),
        ],
    );
    for (now, expected) in [
        (T0, [("5m", 2), ("1h", 2), ("8h", 4), ("today", 4), ("shift", 3)]),
        // Five minutes on: the 5m window is empty; the rest stay.
        (T0 + 5 * MIN, [("5m", 0), ("1h", 2), ("8h", 4), ("today", 4), ("shift", 3)]),
        // 18:00: the shift is over, its cards stay readable; 8h keeps a and e (b at 10:00 left).
        (T0 + 6 * HOUR, [("5m", 0), ("1h", 0), ("8h", 2), ("today", 4), ("shift", 3)]),
        // Next day 00:00: today starts over; the last shift (yesterday's) still reads 3.
        (T0 + 12 * HOUR, [("5m", 0), ("1h", 0), ("8h", 0), ("today", 0), ("shift", 3)]),
        // Next shift: empty.
        (T0 + 21 * HOUR, [("5m", 0), ("1h", 0), ("8h", 0), ("today", 0), ("shift", 0)]),
    ] {
        let s = snap(&cards, &windows, &state, now);
        for (window, count) in expected {
            assert_eq!(cards.cards_touched(&s, window), Some(count), "{window} at T0{:+}m", (now - T0) / MIN);
        }
    }
    let s = snap(&cards, &windows, &state, T0);
    assert_eq!(s.join.cards, 5);
}

#[test]
fn funnel_transitions_open_deals_and_top_stage() {
    let (windows, cards) = setup(config());
    let state = run(
        &cards,
        &windows,
        &[
            (staged("d1", K::Created, "b2b", None, "qualification"), -60),
            (staged("d2", K::Created, "b2b", None, "qualification"), -59),
            (staged("d1", K::StageChanged, "b2b", Some("qualification"), "proposal"), -50),
            // No stage_from: the deal's known stage is used.
            (CardChange { stage_from: None, ..staged("d2", K::StageChanged, "b2b", None, "proposal") }, -40),
            // An unconfigured pipeline folds whole into other/other.
            (staged("d3", K::StageChanged, "wholesale", Some("a"), "b"), -30),
            // An unconfigured stage of a configured pipeline folds into its "other".
            (staged("d1", K::StageChanged, "b2b", Some("proposal"), "contract"), -20),
            (staged("d4", K::StageChanged, "retail", Some("new"), "paid"), -10),
            (amount(deal("d4", K::Won), 1000.0), -5),
            (deal("d3", K::Lost), -4),
            // No stage_to: counted as a change only.
            (CardChange { stage_to: None, ..staged("d2", K::StageChanged, "b2b", None, "x") }, -3),
        ],
    );
    let s = snap(&cards, &windows, &state, T0);
    for (pipeline, from, to, expected) in [
        ("b2b", "qualification", "proposal", 2),
        ("b2b", "proposal", "other", 1),
        ("b2b", "other", "proposal", 0),
        ("retail", "new", "paid", 1),
        ("other", "other", "other", 1),
    ] {
        assert_eq!(cards.stage_transitions(&s, pipeline, from, to), expected, "{pipeline} {from} -> {to}");
    }
    assert_eq!(s.transitions.iter().map(|t| t.1).sum::<u64>(), 5);
    assert_eq!(open_deals(&cards, &s), open(&[("b2b", "proposal", 1), ("b2b", "other", 1)]));
    // Tie between b2b/proposal and b2b/other: the earlier configured stage wins.
    assert_eq!(cards.top_stage(&s), Some(("b2b", "proposal")));
    assert_eq!((s.totals.deals_won, s.totals.deals_lost), (1, 1));
    assert_eq!((s.totals.deals_won_amount, s.totals.deals_lost_amount), (1000.0, 0.0));
    let mut changes = [0u64; CHANGES];
    changes[K::Created.index()] = 2;
    changes[K::StageChanged.index()] = 6;
    changes[K::Won.index()] = 1;
    changes[K::Lost.index()] = 1;
    assert_eq!(s.totals.changes, changes);
    // Every stage an open deal sat in keeps its series (d4 sat open in retail/paid before its win).
    let body = render(&cards, &[CardRow { labels: &label_prefix(&[("manager", "m")]), cards: &s }]);
    let open_series: Vec<&str> =
        samples(&body).into_iter().filter(|l| l.starts_with("salespulse_deals_open")).collect();
    assert_eq!(
        open_series,
        vec![
            r#"salespulse_deals_open{manager="m",pipeline="b2b",stage="qualification"} 0"#,
            r#"salespulse_deals_open{manager="m",pipeline="b2b",stage="proposal"} 1"#,
            r#"salespulse_deals_open{manager="m",pipeline="b2b",stage="other"} 1"#,
            r#"salespulse_deals_open{manager="m",pipeline="retail",stage="paid"} 0"#,
            r#"salespulse_deals_open{manager="m",pipeline="other",stage="other"} 0"#,
        ]
    );
}

#[test]
fn top_stage_is_the_largest_then_the_earliest() {
    let (windows, cards) = setup(config());
    let at = |card: &str, pipeline: &str, stage: &str| (staged(card, K::Created, pipeline, None, stage), -1);
    for (events, expected) in [
        (vec![], None),
        (vec![at("a", "retail", "paid")], Some(("retail", "paid"))),
        (vec![at("a", "retail", "paid"), at("b", "b2b", "negotiation")], Some(("b2b", "negotiation"))),
        (
            vec![at("a", "retail", "paid"), at("b", "retail", "paid"), at("c", "b2b", "negotiation")],
            Some(("retail", "paid")),
        ),
        (vec![at("a", "zzz", "x"), at("b", "yyy", "x")], Some(("other", "other"))),
        (vec![at("a", "zzz", "x"), at("b", "b2b", "nope")], Some(("b2b", "other"))),
    ] {
        let state = run(&cards, &windows, &events);
        let s = snap(&cards, &windows, &state, T0);
        assert_eq!(cards.top_stage(&s), expected, "{events:?}");
    }
}

#[test]
fn out_of_order_events_settle_on_the_latest_state() {
    let (windows, cards) = setup(config());
    // Each case: events in arrival order; expected open deals, won, completed tasks, open tasks.
    type Events = Vec<(CardChange, i64)>;
    let cases: Vec<(&str, Events, Open<'_>, u64, u64, u64)> = vec![
        (
            "stage change before the deal's creation",
            vec![
                (staged("d", K::StageChanged, "b2b", Some("qualification"), "proposal"), -10),
                (staged("d", K::Created, "b2b", None, "qualification"), -20),
            ],
            vec![("b2b", "proposal", 1)],
            0,
            0,
            0,
        ),
        (
            "won before an older stage change",
            vec![(amount(deal("d", K::Won), 500.0), -5), (staged("d", K::StageChanged, "b2b", None, "proposal"), -10)],
            vec![],
            1,
            0,
            0,
        ),
        (
            "stage change at the instant of the win does not reopen",
            vec![(deal("d", K::Won), -3), (staged("d", K::StageChanged, "b2b", None, "negotiation"), -3)],
            vec![],
            1,
            0,
            0,
        ),
        (
            "stage change after the win reopens",
            vec![(deal("d", K::Won), -8), (staged("d", K::StageChanged, "b2b", None, "negotiation"), -2)],
            vec![("b2b", "negotiation", 1)],
            1,
            0,
            0,
        ),
        (
            "task completed before its creation arrives",
            vec![
                (task(K::TaskCompleted, "d", CardType::Deal, Some("k"), None), -1),
                (task(K::TaskCreated, "d", CardType::Deal, Some("k"), Some(T0 - 10 * MIN)), -30),
            ],
            vec![("other", "other", 1)],
            0,
            1,
            0,
        ),
        (
            "reschedule before creation: open, due from the newest event",
            vec![
                (
                    CardChange {
                        task_due_from_ms: Some(T0 + HOUR),
                        ..task(K::TaskRescheduled, "d", CardType::Deal, Some("k"), Some(T0 + 2 * HOUR))
                    },
                    -5,
                ),
                (task(K::TaskCreated, "d", CardType::Deal, Some("k"), Some(T0 + HOUR)), -30),
            ],
            vec![("other", "other", 1)],
            0,
            0,
            1,
        ),
    ];
    for (name, events, deals, won, completed, tasks_open) in cases {
        let state = run(&cards, &windows, &events);
        let s = snap(&cards, &windows, &state, T0);
        assert_eq!(open_deals(&cards, &s), open(&deals), "{name}");
        assert_eq!(s.totals.deals_won, won, "{name}");
        assert_eq!((s.totals.tasks_completed, s.tasks_open), (completed, tasks_open), "{name}");
    }
    // The late creation fills in what it knows without reopening the completed task.
    let state = run(
        &cards,
        &windows,
        &[
            (task(K::TaskCompleted, "d", CardType::Deal, Some("k"), None), -1),
            (task(K::TaskCreated, "d", CardType::Deal, Some("k"), Some(T0 - 10 * MIN)), -30),
        ],
    );
    let view = cards.task(&state, key("k")).unwrap();
    assert_eq!(
        (view.open, view.created_ms, view.completed_ms, view.due_ms, view.card),
        (false, Some(T0 - 30 * MIN), Some(T0 - MIN), Some(T0 - 10 * MIN), Some(key("d")))
    );
    let s = snap(&cards, &windows, &state, T0);
    assert_eq!(s.tasks_overdue, 0);
    // Due time from the newest event that carried one, whatever the arrival order.
    let state = run(
        &cards,
        &windows,
        &[
            (task(K::TaskRescheduled, "d", CardType::Deal, Some("k"), Some(T0 + 2 * HOUR)), -5),
            (task(K::TaskCreated, "d", CardType::Deal, Some("k"), Some(T0 + HOUR)), -30),
        ],
    );
    let view = cards.task(&state, key("k")).unwrap();
    assert_eq!((view.due_ms, view.anchor_ms, view.reschedules), (Some(T0 + 2 * HOUR), Some(T0 - 5 * MIN), 1));
}

#[test]
fn repeated_state_changes_are_idempotent() {
    let (windows, cards) = setup(config());
    let due = Some(T0 + HOUR);
    let moved = CardChange {
        task_due_from_ms: Some(T0 + HOUR),
        ..task(K::TaskRescheduled, "d1", CardType::Deal, Some("k1"), Some(T0 + 2 * HOUR))
    };
    let state = run(
        &cards,
        &windows,
        &[
            (staged("d1", K::Created, "b2b", None, "qualification"), -30),
            (staged("d1", K::Created, "b2b", None, "qualification"), -29),
            (staged("d1", K::StageChanged, "b2b", Some("qualification"), "proposal"), -20),
            (staged("d1", K::StageChanged, "b2b", Some("qualification"), "proposal"), -19),
            (staged("d2", K::Created, "b2b", None, "proposal"), -18),
            (amount(deal("d2", K::Won), 10.0), -10),
            (amount(deal("d2", K::Won), 10.0), -9),
            (task(K::TaskCreated, "d1", CardType::Deal, Some("k1"), due), -8),
            (task(K::TaskCreated, "d1", CardType::Deal, Some("k1"), due), -8),
            (moved.clone(), -7),
            // The same move again (another event id): the task is already due then.
            (moved, -6),
            // A reschedule to the due time it came from does not move it either.
            (
                CardChange {
                    task_due_from_ms: Some(T0 + 3 * HOUR),
                    ..task(K::TaskRescheduled, "d1", CardType::Deal, Some("k1"), Some(T0 + 3 * HOUR))
                },
                -5,
            ),
            (task(K::TaskCreated, "c", CardType::Contact, Some("k2"), None), -4),
            (task(K::TaskCompleted, "c", CardType::Contact, Some("k2"), None), -3),
            (task(K::TaskCompleted, "c", CardType::Contact, Some("k2"), None), -2),
        ],
    );
    let s = snap(&cards, &windows, &state, T0);
    assert_eq!(open_deals(&cards, &s), open(&[("b2b", "proposal", 1)]));
    assert_eq!(cards.stage_transitions(&s, "b2b", "qualification", "proposal"), 2, "transitions count events");
    assert_eq!((s.totals.deals_won, s.totals.deals_won_amount), (1, 10.0));
    assert_eq!((s.totals.tasks_rescheduled, s.totals.tasks_completed, s.tasks_open), (1, 1, 1));
    assert_eq!(s.deals_without_task, 0);
    assert_eq!(s.totals.changes[K::TaskRescheduled.index()], 3);
}

#[test]
fn responsible_changes_hand_deals_over() {
    let (windows, cards) = setup(config());
    let rc = |card: &str| deal(card, K::ResponsibleChanged);
    // Steps applied in order to one manager's state; after each, the open deals.
    let steps: Vec<(&str, CardChange, i64, Open<'_>)> = vec![
        ("holds d1", staged("d1", K::Created, "b2b", None, "qualification"), -60, vec![("b2b", "qualification", 1)]),
        ("hands d1 over", rc("d1"), -30, vec![]),
        ("an older comment does not bring it back", comment("d1", Some(50)), -40, vec![]),
        (
            "adopts d2 it did not hold",
            CardChange { pipeline: Some("b2b".into()), stage_to: Some("proposal".into()), ..rc("d2") },
            -20,
            vec![("b2b", "proposal", 1)],
        ),
        ("an older hand-over of d2 is stale", rc("d2"), -25, vec![("b2b", "proposal", 1)]),
        (
            "a later stage change takes d1 back",
            staged("d1", K::StageChanged, "b2b", None, "negotiation"),
            -10,
            vec![("b2b", "proposal", 1), ("b2b", "negotiation", 1)],
        ),
        ("hands d2 over", rc("d2"), -5, vec![("b2b", "negotiation", 1)]),
        ("a comment after the hand-over takes d2 back", comment("d2", Some(50)), -4, {
            vec![("b2b", "proposal", 1), ("b2b", "negotiation", 1)]
        }),
    ];
    let state = cards.new_state();
    for (name, event, minutes, expected) in steps {
        cards.apply(&state, &windows, &event, T0 + minutes * MIN, T0);
        let s = snap(&cards, &windows, &state, T0);
        assert_eq!(open_deals(&cards, &s), open(&expected), "{name}");
    }
}

#[test]
fn tasks_open_overdue_and_deals_without_task_follow_the_clock() {
    let (windows, cards) = setup(config());
    let state = run(
        &cards,
        &windows,
        &[
            (staged("d4", K::Created, "b2b", None, "qualification"), -90),
            (task(K::TaskCreated, "d1", CardType::Deal, Some("k1"), Some(T0 + 30 * MIN)), -60),
            (task(K::TaskCreated, "d2", CardType::Deal, Some("k2"), Some(T0 - 5 * MIN)), -59),
            (task(K::TaskCreated, "c1", CardType::Contact, Some("k3"), None), -58),
            // A task card without task_id: the card is the task; it is on no deal.
            (task(K::TaskCreated, "task-9", CardType::Task, None, Some(T0 + 2 * HOUR)), -57),
            (task(K::TaskCreated, "d3", CardType::Deal, Some("k5"), Some(T0 + HOUR)), -56),
            (
                CardChange {
                    task_due_from_ms: Some(T0 + 30 * MIN),
                    ..task(K::TaskRescheduled, "d1", CardType::Deal, Some("k1"), Some(T0 + 90 * MIN))
                },
                -30,
            ),
            (task(K::TaskCompleted, "d3", CardType::Deal, Some("k5"), None), -1),
        ],
    );
    // d1, d2 have open tasks; d3's is completed; d4 never had one.
    for (now, open_tasks, overdue, without) in [
        (T0 - 10 * MIN, 4, 0, 2),
        (T0, 4, 1, 2),
        (T0 + 90 * MIN, 4, 1, 2),
        (T0 + 90 * MIN + 1, 4, 2, 2),
        (T0 + 2 * HOUR + 1, 4, 3, 2),
    ] {
        let s = snap(&cards, &windows, &state, now);
        assert_eq!((s.tasks_open, s.tasks_overdue, s.deals_without_task), (open_tasks, overdue, without), "{now}");
    }
    let s = snap(&cards, &windows, &state, T0);
    assert_eq!((s.totals.tasks_completed, s.totals.tasks_rescheduled), (1, 1));
    assert_eq!(s.join, JoinStats { invoices: 0, cards: 6, tasks: 5, clients: 1, ..JoinStats::default() });
    // Completing d2's task leaves it without one.
    cards.apply(&state, &windows, &task(K::TaskCompleted, "d2", CardType::Deal, Some("k2"), None), T0, T0);
    let s = snap(&cards, &windows, &state, T0);
    assert_eq!((s.tasks_open, s.tasks_overdue, s.deals_without_task), (3, 0, 3));
}

#[test]
fn won_and_lost_amounts() {
    let (windows, cards) = setup(config());
    for (name, events, won, won_amount, lost, lost_amount) in [
        ("amount on the event", vec![amount(deal("d", K::Won), 100.0)], 1, 100.0, 0, 0.0),
        (
            "amount known from an earlier event",
            vec![amount(staged("d", K::StageChanged, "b2b", None, "proposal"), 250.0), deal("d", K::Won)],
            1,
            250.0,
            0,
            0.0,
        ),
        ("no amount anywhere", vec![deal("d", K::Won)], 1, 0.0, 0, 0.0),
        ("negative amounts count as 0", vec![amount(deal("d", K::Won), -50.0)], 1, 0.0, 0, 0.0),
        ("lost", vec![amount(deal("d", K::Lost), 30.5)], 0, 0.0, 1, 30.5),
        ("a lead is not a deal", vec![amount(ev("l", CardType::Lead, K::Won), 100.0)], 0, 0.0, 0, 0.0),
        (
            "lost, reopened, won",
            vec![
                amount(deal("d", K::Lost), 10.0),
                staged("d", K::StageChanged, "b2b", None, "proposal"),
                amount(deal("d", K::Won), 20.0),
            ],
            1,
            20.0,
            1,
            10.0,
        ),
    ] {
        let events: Vec<(CardChange, i64)> = events.into_iter().enumerate().map(|(i, e)| (e, i as i64 - 10)).collect();
        let state = run(&cards, &windows, &events);
        let t = snap(&cards, &windows, &state, T0).totals;
        assert_eq!(
            (t.deals_won, t.deals_won_amount, t.deals_lost, t.deals_lost_amount),
            (won, won_amount, lost, lost_amount),
            "{name}"
        );
    }
}

#[test]
fn caps_evict_the_least_valuable_entries() {
    let (windows, cards) = setup(CardsConfig { max_cards_per_manager: 3, max_tasks_per_manager: 2, ..config() });
    let contact = |card: &str| ev(card, CardType::Contact, K::Updated);
    let opened = |card: &str| staged(card, K::Created, "b2b", None, "proposal");
    let state = cards.new_state();
    // (event, minutes, tracked card keys after it, evicted cards so far)
    let steps: Vec<(CardChange, i64, Vec<&str>, u64)> = vec![
        (opened("d1"), -180, vec!["d1"], 0),
        (contact("c1"), -120, vec!["d1", "c1"], 0),
        (contact("c2"), -60, vec!["d1", "c1", "c2"], 0),
        // Full: the least recently touched card that is not an open deal goes.
        (contact("c3"), 0, vec!["d1", "c2", "c3"], 1),
        (opened("d2"), 0, vec!["d1", "c3", "d2"], 2),
        (opened("d3"), 0, vec!["d1", "d2", "d3"], 3),
        // Only open deals left: the least recently touched of them goes.
        (opened("d4"), 0, vec!["d2", "d3", "d4"], 4),
    ];
    for (event, minutes, expected, evicted) in steps {
        cards.apply(&state, &windows, &event, T0 + minutes * MIN, T0);
        let mut held: Vec<u64> = state.inner.lock().cards.iter().map(|c| c.key).collect();
        let mut want: Vec<u64> = expected.iter().map(|c| key(c)).collect();
        held.sort_unstable();
        want.sort_unstable();
        assert_eq!(held, want, "after {}", event.card_id);
        assert_eq!(snap(&cards, &windows, &state, T0).join.evicted_cards, evicted, "after {}", event.card_id);
    }
    let s = snap(&cards, &windows, &state, T0);
    assert_eq!(open_deals(&cards, &s), open(&[("b2b", "proposal", 3)]));
    // Distinct touched counts only what is still tracked: 3 of the 7 cards touched today.
    assert_eq!(cards.cards_touched(&s, "today"), Some(3));

    let t = |change, id: &str| task(change, "c9", CardType::Contact, Some(id), None);
    let state = run(
        &cards,
        &windows,
        &[
            (t(K::TaskCreated, "k1"), -5),
            (t(K::TaskCreated, "k2"), -4),
            (t(K::TaskCompleted, "k2"), -3),
            // Full: the completed task goes first, then the least recently changed open one.
            (t(K::TaskCreated, "k3"), -2),
            (t(K::TaskCreated, "k4"), -1),
        ],
    );
    let s = snap(&cards, &windows, &state, T0);
    assert_eq!((s.join.tasks, s.join.evicted_tasks, s.tasks_open), (2, 2, 2));
    assert!(cards.task(&state, key("k1")).is_none() && cards.task(&state, key("k2")).is_none());
    assert!(cards.task(&state, key("k3")).is_some() && cards.task(&state, key("k4")).is_some());
}

#[test]
fn entries_nothing_needs_expire_after_two_largest_windows() {
    let (windows, cards) = setup(config());
    assert_eq!(windows.largest_ms(), 25 * HOUR);
    let state = run(
        &cards,
        &windows,
        &[
            (deal("lost", K::Lost), 0),
            (ev("c1", CardType::Contact, K::Updated), 0),
            (staged("open", K::Created, "b2b", None, "proposal"), 0),
            (task(K::TaskCreated, "c1", CardType::Contact, Some("done"), None), 0),
            (task(K::TaskCompleted, "c1", CardType::Contact, Some("done"), None), 0),
            (task(K::TaskCreated, "c1", CardType::Contact, Some("todo"), None), 0),
        ],
    );
    let later = T0 + 51 * HOUR;
    for (at, cards_held, tasks_held) in [(T0 + 49 * HOUR, 4, 2), (later, 2, 1)] {
        cards.apply(&state, &windows, &ev("c2", CardType::Contact, K::Updated), at, at);
        let s = snap(&cards, &windows, &state, at);
        assert_eq!((s.join.cards, s.join.tasks), (cards_held, tasks_held), "at T0+{}h", (at - T0) / HOUR);
        assert_eq!((s.join.evicted_cards, s.join.evicted_tasks), (0, 0));
    }
    let s = snap(&cards, &windows, &state, later);
    assert_eq!(open_deals(&cards, &s), open(&[("b2b", "proposal", 1)]));
    assert_eq!(s.tasks_open, 1);
}

#[test]
fn render_writes_a_small_case_exactly() {
    let windows = Windows::parse(&["1h"]).unwrap();
    let one = vec!["1h".to_string()];
    let config = CardsConfig {
        pipelines: vec![PipelineConfig { name: "b2b".into(), stages: vec!["new".into()] }],
        export: CardExport {
            cards_touched: one.clone(),
            comments: one.clone(),
            thin_comments: one.clone(),
            client_transitions: one,
        },
        ..CardsConfig::default()
    };
    let cards = Cards::new(&windows, &config).unwrap();
    let state = cards.new_state();
    for (event, at) in [
        (staged("d1", K::Created, "b2b", None, "new"), T0 - 10 * MIN),
        (comment("d1", Some(5)), T0 - 5 * MIN),
        (task(K::TaskCreated, "d1", CardType::Deal, Some("k1"), Some(T0 + HOUR)), T0 - MIN),
    ] {
        cards.apply(&state, &windows, &event, at, T0);
    }
    let s = cards.snapshot(&state, &windows, &windows.plan(T0), T0);
    let labels = label_prefix(&[("manager", "ivanov"), ("team", "north")]);
    let body = render(&cards, &[CardRow { labels: &labels, cards: &s }]);
    let expected = r#"# HELP salespulse_card_changes_total CRM card changes since the manager appeared, by change type.
# TYPE salespulse_card_changes_total counter
salespulse_card_changes_total{manager="ivanov",team="north",change="created"} 1
salespulse_card_changes_total{manager="ivanov",team="north",change="comment_added"} 1
salespulse_card_changes_total{manager="ivanov",team="north",change="task_created"} 1
# HELP salespulse_window_cards_touched Distinct CRM cards changed in the window.
# TYPE salespulse_window_cards_touched gauge
salespulse_window_cards_touched{manager="ivanov",team="north",window="1h"} 1
# HELP salespulse_comments_total Comments added since the manager appeared.
# TYPE salespulse_comments_total counter
salespulse_comments_total{manager="ivanov",team="north"} 1
# HELP salespulse_thin_comments_total Comments shorter than the thin-comment threshold since the manager appeared.
# TYPE salespulse_thin_comments_total counter
salespulse_thin_comments_total{manager="ivanov",team="north"} 1
# HELP salespulse_window_comments Comments added in the window.
# TYPE salespulse_window_comments gauge
salespulse_window_comments{manager="ivanov",team="north",window="1h"} 1
# HELP salespulse_window_thin_comments Comments shorter than the thin-comment threshold in the window.
# TYPE salespulse_window_thin_comments gauge
salespulse_window_thin_comments{manager="ivanov",team="north",window="1h"} 1
# HELP salespulse_stage_transitions_total Pipeline stage changes since the manager appeared; unconfigured pipelines and stages are "other".
# TYPE salespulse_stage_transitions_total counter
# HELP salespulse_deals_won_total Deals won since the manager appeared.
# TYPE salespulse_deals_won_total counter
# HELP salespulse_deals_lost_total Deals lost since the manager appeared.
# TYPE salespulse_deals_lost_total counter
# HELP salespulse_deals_won_amount_total Sum of the amounts of deals won since the manager appeared, in the CRM's currency.
# TYPE salespulse_deals_won_amount_total counter
# HELP salespulse_deals_lost_amount_total Sum of the amounts of deals lost since the manager appeared, in the CRM's currency.
# TYPE salespulse_deals_lost_amount_total counter
# HELP salespulse_deals_open Open deals held by the manager, by the last known pipeline stage.
# TYPE salespulse_deals_open gauge
salespulse_deals_open{manager="ivanov",team="north",pipeline="b2b",stage="new"} 1
# HELP salespulse_deals_top_stage 1 for the pipeline stage holding most of the manager's open deals (ties: earliest configured).
# TYPE salespulse_deals_top_stage gauge
salespulse_deals_top_stage{manager="ivanov",team="north",pipeline="b2b",stage="new"} 1
# HELP salespulse_deals_without_task Open deals of the manager with no open task on them.
# TYPE salespulse_deals_without_task gauge
salespulse_deals_without_task{manager="ivanov",team="north"} 0
# HELP salespulse_tasks_open Open (not completed) tasks of the manager.
# TYPE salespulse_tasks_open gauge
salespulse_tasks_open{manager="ivanov",team="north"} 1
# HELP salespulse_tasks_overdue Open tasks of the manager whose due time has passed.
# TYPE salespulse_tasks_overdue gauge
salespulse_tasks_overdue{manager="ivanov",team="north"} 0
# HELP salespulse_tasks_completed_total Tasks completed since the manager appeared.
# TYPE salespulse_tasks_completed_total counter
salespulse_tasks_completed_total{manager="ivanov",team="north"} 0
# HELP salespulse_tasks_rescheduled_total Task reschedules that moved the due time, since the manager appeared.
# TYPE salespulse_tasks_rescheduled_total counter
salespulse_tasks_rescheduled_total{manager="ivanov",team="north"} 0
"#;
    // The commercial families follow (their own tests are in commerce_tests).
    let cut = body.find("# HELP salespulse_meetings_scheduled_total").unwrap();
    assert_eq!(&body[..cut], expected);

    // Two hours later, after a stage change and a win: windows at 0, the closed deal's stage stays
    // at 0, no top stage, and the won/lost families appear together.
    cards.apply(&state, &windows, &staged("d1", K::StageChanged, "b2b", Some("new"), "signed"), T0, T0);
    cards.apply(&state, &windows, &amount(deal("d1", K::Won), 99.5), T0, T0);
    let later = T0 + 2 * HOUR;
    let s = cards.snapshot(&state, &windows, &windows.plan(later), later);
    let labels = label_prefix(&[("manager", "ivanov")]);
    let body = render(&cards, &[CardRow { labels: &labels, cards: &s }]);
    let cut = body.find("# HELP salespulse_meetings_scheduled_total").unwrap();
    let lines: Vec<&str> = samples(&body[..cut])
        .into_iter()
        .filter(|l| !l.starts_with("salespulse_card_changes_total") && !l.contains("comments"))
        .collect();
    assert_eq!(
        lines,
        vec![
            r#"salespulse_window_cards_touched{manager="ivanov",window="1h"} 0"#,
            r#"salespulse_stage_transitions_total{manager="ivanov",pipeline="b2b",stage_from="new",stage_to="other"} 1"#,
            r#"salespulse_deals_won_total{manager="ivanov"} 1"#,
            r#"salespulse_deals_lost_total{manager="ivanov"} 0"#,
            r#"salespulse_deals_won_amount_total{manager="ivanov"} 99.5"#,
            r#"salespulse_deals_lost_amount_total{manager="ivanov"} 0"#,
            r#"salespulse_deals_open{manager="ivanov",pipeline="b2b",stage="new"} 0"#,
            r#"salespulse_deals_open{manager="ivanov",pipeline="b2b",stage="other"} 0"#,
            r#"salespulse_deals_without_task{manager="ivanov"} 0"#,
            r#"salespulse_tasks_open{manager="ivanov"} 1"#,
            r#"salespulse_tasks_overdue{manager="ivanov"} 1"#,
            r#"salespulse_tasks_completed_total{manager="ivanov"} 0"#,
            r#"salespulse_tasks_rescheduled_total{manager="ivanov"} 0"#,
        ]
    );
}

#[test]
fn merge_adds_partitions() {
    let (windows, cards) = setup(config());
    let a = run(
        &cards,
        &windows,
        &[
            (staged("d1", K::StageChanged, "b2b", Some("qualification"), "proposal"), -30),
            (staged("d1", K::StageChanged, "retail", Some("new"), "paid"), -25),
            (comment("d1", Some(3)), -20),
        ],
    );
    let b = run(
        &cards,
        &windows,
        &[
            (staged("d2", K::StageChanged, "b2b", Some("qualification"), "proposal"), -30),
            (staged("d3", K::StageChanged, "b2b", Some("qualification"), "proposal"), -29),
            (staged("d5", K::StageChanged, "zzz", None, "x"), -28),
            (task(K::TaskCreated, "d2", CardType::Deal, Some("k"), Some(T0 - MIN)), -10),
            (amount(deal("d4", K::Won), 100.0), -5),
        ],
    );
    let mut s = snap(&cards, &windows, &a, T0);
    let sb = snap(&cards, &windows, &b, T0);
    assert_eq!(cards.top_stage(&s), Some(("retail", "paid")));
    s.merge(&sb);
    assert_eq!(open_deals(&cards, &s), open(&[("b2b", "proposal", 2), ("retail", "paid", 1), ("other", "other", 1)]));
    assert_eq!(cards.top_stage(&s), Some(("b2b", "proposal")));
    for (pipeline, from, to, n) in
        [("b2b", "qualification", "proposal", 3), ("retail", "new", "paid", 1), ("other", "other", "other", 1)]
    {
        assert_eq!(cards.stage_transitions(&s, pipeline, from, to), n);
    }
    assert_eq!(s.transitions.windows(2).filter(|w| w[0].0 >= w[1].0).count(), 0, "sorted, no duplicates");
    // d1 (A) and d3, d5 (B) have no task; d2's is open and overdue.
    assert_eq!((s.deals_without_task, s.tasks_open, s.tasks_overdue), (3, 1, 1));
    assert_eq!((s.totals.deals_won, s.totals.deals_won_amount), (1, 100.0));
    assert_eq!((s.totals.comments, s.totals.thin_comments), (1, 1));
    assert_eq!(cards.cards_touched(&s, "today"), Some(5));
    assert_eq!(cards.window_comments(&s, "today"), (Some(1), Some(1)));
    // The one client seen through both partitions is held in each.
    assert_eq!(s.join, JoinStats { invoices: 0, cards: 5, tasks: 1, clients: 2, ..JoinStats::default() });
    assert!(s.had_deal);
    let mut changes = [0u64; CHANGES];
    changes[K::StageChanged.index()] = 5;
    changes[K::CommentAdded.index()] = 1;
    changes[K::TaskCreated.index()] = 1;
    changes[K::Won.index()] = 1;
    assert_eq!(s.totals.changes, changes);
}

#[test]
fn join_queries_expose_tasks_by_card_and_client() {
    let (windows, cards) = setup(config());
    let with_client = |change: CardChange, client: &str| CardChange { client_id: Some(client.into()), ..change };
    let state = run(
        &cards,
        &windows,
        &[
            (with_client(task(K::TaskCreated, "d1", CardType::Deal, Some("k1"), Some(T0)), "cl-1"), -60),
            (with_client(task(K::TaskCreated, "d1", CardType::Deal, Some("k2"), Some(T0)), "cl-1"), -50),
            (with_client(task(K::TaskRescheduled, "d1", CardType::Deal, Some("k1"), Some(T0 + HOUR)), "cl-1"), -20),
            (with_client(task(K::TaskCreated, "c7", CardType::Contact, Some("k3"), None), "cl-2"), -10),
            (with_client(task(K::TaskCompleted, "c7", CardType::Contact, Some("k3"), None), "cl-2"), -5),
        ],
    );
    let k1 = cards.task(&state, key("k1")).unwrap();
    assert_eq!(
        k1,
        TaskView {
            task: key("k1"),
            card: Some(key("d1")),
            client: Some(key("cl-1")),
            open: true,
            created_ms: Some(T0 - 60 * MIN),
            anchor_ms: Some(T0 - 20 * MIN),
            due_ms: Some(T0 + HOUR),
            completed_ms: None,
            reschedules: 1,
        }
    );
    for (card, client, expected) in [
        // Two open tasks on d1: the one rescheduled last (k1) is the anchor.
        (Some(key("d1")), None, Some("k1")),
        (None, Some(key("cl-1")), Some("k1")),
        (Some(key("unknown")), Some(key("cl-1")), Some("k1")),
        // k3 is completed.
        (Some(key("c7")), Some(key("cl-2")), None),
        (None, None, None),
    ] {
        let found = cards.open_task_on(&state, card, client).map(|view| view.task);
        assert_eq!(found, expected.map(key), "{card:?} {client:?}");
    }
    let mut open = Vec::new();
    cards.for_each_open_task(&state, |view| open.push(view.task));
    open.sort_unstable();
    let mut want = vec![key("k1"), key("k2")];
    want.sort_unstable();
    assert_eq!(open, want);
    assert_ne!(key(""), 0);
}

#[test]
fn configuration_errors() {
    let windows = Windows::parse(&["5m"]).unwrap();
    // The defaults skip windows that are not configured.
    let cards = Cards::new(&windows, &CardsConfig::default()).unwrap();
    assert_eq!((cards.touch.len(), cards.comments.len(), cards.thin.len()), (0, 0, 0));
    let explicit = CardExport { cards_touched: vec!["5m".into(), "today".into()], ..CardExport::default() };
    match Cards::new(&windows, &CardsConfig { export: explicit, ..CardsConfig::default() }) {
        Err(ConfigError::Export(e)) => assert_eq!((e.family, e.label.as_str()), ("cards_touched", "today")),
        other => panic!("{other:?}"),
    }
    for (config, limit) in [
        (CardsConfig { max_cards_per_manager: 0, ..CardsConfig::default() }, "max_cards_per_manager"),
        (CardsConfig { max_tasks_per_manager: 0, ..CardsConfig::default() }, "max_tasks_per_manager"),
    ] {
        assert!(matches!(Cards::new(&windows, &config), Err(ConfigError::Limit(l)) if l == limit));
    }
    let reserved = vec![PipelineConfig { name: "b2b".into(), stages: vec!["other".into()] }];
    assert!(matches!(
        Cards::new(&windows, &CardsConfig { pipelines: reserved, ..CardsConfig::default() }),
        Err(ConfigError::Pipeline(_))
    ));
}

#[test]
fn default_export_fits_the_budget_and_memory() {
    let windows = Windows::new(&WindowsConfig::default()).unwrap();
    let cards = Cards::new(&windows, &CardsConfig::default()).unwrap();
    assert_eq!(cards.touch.len() + cards.comments.len() + cards.thin.len(), 5);
    // Comments keep `today` only: one cell of 3 counters x 4 bytes (a calendar window keeps no ring).
    assert_eq!(cards.layout.bytes(), 3 * 4);
    // Touch bits: the 2-minute level of 30 slots (newest index, one word) and the 15-minute level
    // of 101 slots (newest index, two words); `1h` feeds the cards-touched anomaly signal.
    assert_eq!(cards.touch.stride(), 5);
    let empty = cards.state_bytes();
    let state = cards.new_state();
    assert_eq!(state.heap_bytes(), 0);
    for i in 0..100 {
        let deal = staged(&format!("deal-{i}"), K::Created, "b2b", None, "proposal");
        cards.apply(&state, &windows, &deal, T0 - i * MIN, T0);
        let task = task(K::TaskCreated, &format!("deal-{i}"), CardType::Deal, Some(&format!("task-{i}")), None);
        cards.apply(&state, &windows, &task, T0 - i * MIN, T0);
    }
    let full = empty + state.heap_bytes();
    println!("card state: {empty} bytes empty, {full} bytes with 100 deals and 100 tasks");
    // 48 bytes of funnel and status, 32 of commercial state (margin, created, stage entry, progress),
    // 8 for the client.
    assert_eq!(std::mem::size_of::<state::Card>(), 88);
    assert_eq!(std::mem::size_of::<state::Task>(), 80);
    // Of which 136 bytes hold the (empty) client table and its transition counts.
    assert!(empty < 1_024, "{empty}");
    assert!(full < 34 * 1024, "{full}");
}

#[test]
fn scrapes_run_while_the_writer_applies() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let (windows, cards) = setup(config());
    let state = Arc::new(cards.new_state());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (state, stop, windows, cards) = (state.clone(), stop.clone(), windows.clone(), cards.clone());
        std::thread::spawn(move || {
            let mut scrapes = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let s = cards.snapshot(&state, &windows, &windows.plan(T0), T0);
                let open: u64 = s.deals_open.iter().sum();
                assert!(open <= s.join.cards && s.tasks_open <= s.join.tasks && s.deals_without_task <= open);
                scrapes += 1;
            }
            scrapes
        })
    };
    for i in 0..20_000i64 {
        let card = format!("d{}", i % 700);
        let event = match i % 4 {
            0 => staged(&card, K::StageChanged, "b2b", None, "proposal"),
            1 => task(K::TaskCreated, &card, CardType::Deal, Some(&format!("k{}", i % 300)), Some(T0)),
            2 => task(K::TaskCompleted, &card, CardType::Deal, Some(&format!("k{}", i % 300)), None),
            _ => comment(&card, Some(5)),
        };
        cards.apply(&state, &windows, &event, T0 - 20_000 + i, T0);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let s = snap(&cards, &windows, &state, T0);
    assert_eq!((s.join.cards, s.totals.comments), (700, 5_000));
}

proptest! {
    /// Distinct cards touched against a brute-force count over random touches of a few cards, in
    /// random order: calendar windows exact, sliding ones between the counts over `(now - L + b,
    /// now]` and `(now - L, now]`.
    #[test]
    fn cards_touched_matches_reference(
        touches in proptest::collection::vec((0u8..12, 0i64..(30 * HOUR)), 0..120),
        now_offset in 0i64..(30 * HOUR),
    ) {
        let windows = Windows::new(&WindowsConfig::default()).unwrap();
        let cards = Cards::new(&windows, &CardsConfig { export: export_all(), ..CardsConfig::default() }).unwrap();
        let now = T0 + now_offset;
        let state = cards.new_state();
        let mut applied = Vec::new();
        for (card, ago) in &touches {
            let at = now - ago;
            cards.apply(&state, &windows, &ev(&format!("card-{card}"), CardType::Lead, K::Updated), at, now);
            applied.push((*card, at));
        }
        let s = cards.snapshot(&state, &windows, &windows.plan(now), now);
        let distinct = |from: i64, to: i64| {
            let mut ids: Vec<u8> = applied.iter().filter(|(_, at)| *at >= from && *at <= to).map(|(c, _)| *c).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len() as u64
        };
        for spec in windows.specs() {
            let got = cards.cards_touched(&s, &spec.label).unwrap();
            match spec.kind {
                WindowKind::Sliding { length_ms, .. } => {
                    let bucket = windows.levels()[spec.level].bucket_ms;
                    let upper = distinct(now - length_ms + 1, now);
                    let lower = distinct(now - length_ms + bucket + 1, now);
                    prop_assert!(got <= upper && got >= lower, "{}: {} not in {}..={}", spec.label, got, lower, upper);
                }
                WindowKind::Today => {
                    prop_assert_eq!(got, distinct(local_day_start(windows.time_zone(), now), now), "today");
                }
                WindowKind::Shift(shift) => {
                    let (start, end) = shift_bounds(windows.time_zone(), shift, now);
                    prop_assert_eq!(got, distinct(start, end - 1), "shift");
                }
            }
        }
    }
}
