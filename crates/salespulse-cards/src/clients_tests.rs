//! Hand-written client histories for the relationship types, and a property test against a plain
//! reference model (in order, shuffled, repeated, split over partitions).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use salespulse_core::expo::{label_prefix, Format};
use salespulse_events::CardType;

use super::*;
use crate::test_support::{blank, setup, shuffle, snap};

/// 2026-11-23T12:00:00Z.
const T0: i64 = 1_795_435_200_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

use CardChangeKind as K;
use Relationship as R;

fn deal(card: &str, client: &str, change: CardChangeKind) -> CardChange {
    CardChange { client_id: Some(client.into()), ..blank(card, CardType::Deal, change) }
}

fn contact(card: &str, client: &str, change: CardChangeKind) -> CardChange {
    CardChange { client_id: Some(client.into()), ..blank(card, CardType::Contact, change) }
}

/// Clients by type, in `Relationship::ALL` order.
fn counts(s: &CardSnapshot) -> [u64; 4] {
    s.clients.counts
}

/// The transitions that occurred, `(from, to, count)`.
fn moves(s: &CardSnapshot) -> Vec<(R, R, u64)> {
    let mut out = Vec::new();
    for from in R::ALL {
        for to in R::ALL {
            let n = s.clients.transitions(from, to);
            if n > 0 {
                out.push((from, to, n));
            }
        }
    }
    out
}

/// The samples of the client families in a render of one manager.
fn client_lines(cards: &Cards, s: &CardSnapshot) -> Vec<String> {
    let labels = label_prefix(&[("manager", "m1")]);
    let mut out = MetricWriter::new(Format::Text);
    cards.render(&[CardRow { labels: &labels, cards: s }], &mut out);
    out.finish()
        .lines()
        .filter(|l| !l.starts_with('#') && (l.contains("client") || l.starts_with("salespulse_clients")))
        .map(str::to_owned)
        .collect()
}

/// An event, the clients by type after it, and the transition it makes.
type Step = (CardChange, [u64; 4], Option<(R, R)>);

#[test]
fn a_client_goes_cold_potential_current_regular() {
    let (windows, cards) = setup(CardsConfig::default());
    let state = cards.new_state();
    let now = T0 + 5 * HOUR;
    let steps: [Step; 5] = [
        (contact("c", "acme", K::CommentAdded), [1, 0, 0, 0], None),
        (deal("d1", "acme", K::Created), [0, 1, 0, 0], Some((R::Cold, R::Potential))),
        (deal("d1", "acme", K::Won), [0, 0, 1, 0], Some((R::Potential, R::Current))),
        // A second open deal of a current client: still current.
        (deal("d2", "acme", K::Created), [0, 0, 1, 0], None),
        (deal("d2", "acme", K::Won), [0, 0, 0, 1], Some((R::Current, R::Regular))),
    ];
    let mut expected = Vec::new();
    for (i, (event, expected_counts, moved)) in steps.into_iter().enumerate() {
        cards.apply(&state, &windows, &event, T0 + i as i64 * HOUR, now);
        let s = snap(&cards, &windows, &state, now);
        assert_eq!(counts(&s), expected_counts, "step {i}");
        if let Some((from, to)) = moved {
            expected.push((from, to, 1));
            expected.sort();
        }
        assert_eq!(moves(&s), expected, "step {i}");
    }
    let s = snap(&cards, &windows, &state, now);
    assert_eq!(s.join.clients, 1);
    assert_eq!(
        client_lines(&cards, &s),
        [
            r#"salespulse_clients{manager="m1",relationship="cold"} 0"#,
            r#"salespulse_clients{manager="m1",relationship="potential"} 0"#,
            r#"salespulse_clients{manager="m1",relationship="current"} 0"#,
            r#"salespulse_clients{manager="m1",relationship="regular"} 1"#,
            r#"salespulse_client_transitions_total{manager="m1",from="cold",to="potential"} 1"#,
            r#"salespulse_client_transitions_total{manager="m1",from="potential",to="current"} 1"#,
            r#"salespulse_client_transitions_total{manager="m1",from="current",to="regular"} 1"#,
            r#"salespulse_window_client_transitions{manager="m1",from="cold",to="potential",window="today"} 1"#,
            r#"salespulse_window_client_transitions{manager="m1",from="potential",to="current",window="today"} 1"#,
            r#"salespulse_window_client_transitions{manager="m1",from="current",to="regular",window="today"} 1"#,
            r#"salespulse_clients_evicted_total{manager="m1"} 0"#,
        ]
    );
    // The next day the transitions leave the window; the gauges and totals stay.
    let tomorrow = T0 + DAY;
    let s = snap(&cards, &windows, &state, tomorrow);
    assert_eq!(counts(&s), [0, 0, 0, 1]);
    assert_eq!(moves(&s).len(), 3);
    assert!(client_lines(&cards, &s).iter().filter(|l| l.contains("window=")).all(|l| l.ends_with(" 0")));
}

#[test]
fn lost_and_reopened_deals() {
    let (windows, cards) = setup(CardsConfig::default());
    let state = cards.new_state();
    let now = T0 + DAY;
    let history = [
        // A potential client loses its only deal: cold again ("never bought").
        (deal("a1", "lost-only", K::Created), T0),
        (deal("a1", "lost-only", K::Lost), T0 + HOUR),
        // A current client's lost deal changes nothing.
        (deal("b1", "one-won", K::Won), T0),
        (deal("b2", "one-won", K::Created), T0 + HOUR),
        (deal("b2", "one-won", K::Lost), T0 + 2 * HOUR),
        // A won deal reopened (a stage change after the close) is open again: the client is
        // potential until it is won again; one deal won twice is still one won deal.
        (deal("c1", "reopened", K::Created), T0),
        (deal("c1", "reopened", K::Won), T0 + HOUR),
        (deal("c1", "reopened", K::StageChanged), T0 + 2 * HOUR),
    ];
    for (event, at) in &history {
        cards.apply(&state, &windows, event, *at, now);
    }
    let s = snap(&cards, &windows, &state, now);
    // cold: lost-only; potential: reopened; current: one-won.
    assert_eq!(counts(&s), [1, 1, 1, 0]);
    assert_eq!(
        moves(&s),
        [
            (R::Cold, R::Potential, 2),
            (R::Cold, R::Current, 1),
            (R::Potential, R::Cold, 1),
            (R::Potential, R::Current, 1),
            (R::Current, R::Potential, 1),
        ]
    );
    cards.apply(&state, &windows, &deal("c1", "reopened", K::Won), T0 + 3 * HOUR, now);
    let s = snap(&cards, &windows, &state, now);
    assert_eq!(counts(&s), [1, 0, 2, 0]);
    assert_eq!(s.totals.deals_won, 3);
}

#[test]
fn duplicates_and_out_of_order_delivery_settle_on_the_same_types() {
    let (windows, cards) = setup(CardsConfig::default());
    let now = T0 + DAY;
    let history = [
        (contact("k", "x", K::CommentAdded), T0),
        (deal("d1", "x", K::Created), T0 + HOUR),
        (deal("d1", "x", K::Won), T0 + 2 * HOUR),
        (deal("d2", "x", K::Created), T0 + 3 * HOUR),
        (deal("d2", "x", K::Lost), T0 + 4 * HOUR),
        (deal("d3", "y", K::Created), T0 + HOUR),
        (deal("d3", "y", K::Won), T0 + 2 * HOUR),
        (deal("d4", "y", K::Won), T0 + 5 * HOUR),
    ];
    let in_order = cards.new_state();
    for (event, at) in &history {
        cards.apply(&in_order, &windows, event, *at, now);
    }
    let expected = snap(&cards, &windows, &in_order, now);
    assert_eq!(counts(&expected), [0, 0, 1, 1]);
    assert_eq!(
        moves(&expected),
        [(R::Cold, R::Potential, 2), (R::Potential, R::Current, 2), (R::Current, R::Regular, 1)]
    );

    // Backwards, every event twice: the same types. The win of d1 arrives before its creation,
    // so x goes cold -> current directly; a transition is never counted twice.
    let backwards = cards.new_state();
    for (event, at) in history.iter().rev() {
        cards.apply(&backwards, &windows, event, *at, now);
        cards.apply(&backwards, &windows, event, *at, now);
    }
    let s = snap(&cards, &windows, &backwards, now);
    assert_eq!(counts(&s), counts(&expected));
    assert_eq!(moves(&s), [(R::Cold, R::Current, 2), (R::Current, R::Regular, 1)]);
    // Either way, what flows into each type less what flows out is what it holds now (every
    // client enters cold).
    for state in [&in_order, &backwards] {
        assert_conserved(&snap(&cards, &windows, state, now), 2);
    }
}

/// For each type: transitions in minus transitions out = clients of the type now, less the
/// `clients` that entered as cold.
fn assert_conserved(s: &CardSnapshot, clients: i64) {
    for kind in R::ALL {
        let into: u64 = R::ALL.iter().map(|&from| s.clients.transitions(from, kind)).sum();
        let out: u64 = R::ALL.iter().map(|&to| s.clients.transitions(kind, to)).sum();
        let entered = if kind == R::Cold { clients } else { 0 };
        assert_eq!(into as i64 - out as i64, s.clients.count(kind) as i64 - entered, "{kind:?}");
    }
}

#[test]
fn a_client_handed_over_leaves_the_manager_until_its_next_event() {
    let (windows, cards) = setup(CardsConfig::default());
    let state = cards.new_state();
    let now = T0 + DAY;
    cards.apply(&state, &windows, &deal("d", "acme", K::Won), T0, now);
    cards.apply(&state, &windows, &contact("c", "acme", K::Updated), T0 + MIN, now);
    assert_eq!(counts(&snap(&cards, &windows, &state, now)), [0, 0, 1, 0]);
    // The contact goes to another manager: its newest event here is the hand-over.
    cards.apply(&state, &windows, &contact("c", "acme", K::ResponsibleChanged), T0 + HOUR, now);
    assert_eq!(counts(&snap(&cards, &windows, &state, now)), [0, 0, 0, 0]);
    // An older event does not bring it back; a newer one does.
    cards.apply(&state, &windows, &contact("c", "acme", K::CommentAdded), T0 + 30 * MIN, now);
    assert_eq!(counts(&snap(&cards, &windows, &state, now)), [0, 0, 0, 0]);
    cards.apply(&state, &windows, &contact("c", "acme", K::CommentAdded), T0 + 2 * HOUR, now);
    assert_eq!(counts(&snap(&cards, &windows, &state, now)), [0, 0, 1, 0]);
    // The won deal itself handed over: it no longer counts for this manager.
    cards.apply(&state, &windows, &deal("d", "acme", K::ResponsibleChanged), T0 + 3 * HOUR, now);
    let s = snap(&cards, &windows, &state, now);
    assert_eq!(counts(&s), [0, 0, 0, 0]);
    assert_eq!(moves(&s), [(R::Cold, R::Current, 1), (R::Current, R::Cold, 1)]);
}

#[test]
fn clients_are_bounded_and_idle_ones_expire() {
    let config = CardsConfig { max_clients_per_manager: 2, client_idle_ms: 10 * DAY, ..CardsConfig::default() };
    let (windows, cards) = setup(config);
    let state = cards.new_state();
    let now = T0;
    cards.apply(&state, &windows, &deal("d", "buyer", K::Won), T0 - 3 * HOUR, now);
    cards.apply(&state, &windows, &contact("c1", "cold-1", K::CommentAdded), T0 - 2 * HOUR, now);
    // At the cap the cold client goes before the one who bought, though it was seen later.
    cards.apply(&state, &windows, &contact("c2", "cold-2", K::CommentAdded), T0 - HOUR, now);
    let s = snap(&cards, &windows, &state, now);
    assert_eq!(counts(&s), [1, 0, 1, 0]);
    assert_eq!((s.join.clients, s.join.evicted_clients), (2, 1));
    assert!(client_lines(&cards, &s).contains(&r#"salespulse_clients_evicted_total{manager="m1"} 1"#.to_owned()));

    // Eleven days later only a client with an open deal survives the idle limit.
    let later = T0 + 11 * DAY;
    cards.apply(&state, &windows, &deal("o", "open-deal", K::Created), T0 - 30 * MIN, now);
    cards.apply(&state, &windows, &contact("c3", "fresh", K::CommentAdded), later, later);
    let s = snap(&cards, &windows, &state, later);
    assert_eq!(counts(&s), [1, 1, 0, 0], "fresh (cold) and open-deal (potential)");
    assert_eq!(s.join.clients, 2);
}

#[test]
fn a_won_deal_stays_counted_after_its_card_expires() {
    let (windows, cards) = setup(CardsConfig::default());
    let state = cards.new_state();
    cards.apply(&state, &windows, &deal("d1", "acme", K::Won), T0, T0);
    cards.apply(&state, &windows, &deal("d2", "acme", K::Won), T0, T0);
    // Three days later the closed cards have expired from the card state.
    let later = T0 + 3 * DAY;
    cards.apply(&state, &windows, &contact("c", "acme", K::CommentAdded), later, later);
    let s = snap(&cards, &windows, &state, later);
    assert_eq!(s.join.cards, 1);
    assert_eq!(counts(&s), [0, 0, 0, 1]);
}

#[test]
fn partitions_merge_by_adding_and_no_client_id_becomes_a_label() {
    let (windows, cards) = setup(CardsConfig::default());
    let (a, b) = (cards.new_state(), cards.new_state());
    cards.apply(&a, &windows, &deal("d1", "client-secret-1", K::Won), T0, T0);
    cards.apply(&b, &windows, &deal("d2", "client-secret-2", K::Created), T0, T0);
    cards.apply(&b, &windows, &contact("c", "client-secret-3", K::Created), T0, T0);
    // Events without a client name none.
    cards.apply(&b, &windows, &blank("d9", CardType::Deal, K::Won), T0, T0);
    let mut merged = snap(&cards, &windows, &a, T0);
    merged.merge(&snap(&cards, &windows, &b, T0));
    assert_eq!(counts(&merged), [1, 1, 1, 0]);
    assert_eq!(merged.join.clients, 3);
    assert_eq!(moves(&merged), [(R::Cold, R::Potential, 1), (R::Cold, R::Current, 1)]);
    let labels = label_prefix(&[("manager", "m1")]);
    let mut out = MetricWriter::new(Format::Text);
    cards.render(&[CardRow { labels: &labels, cards: &merged }], &mut out);
    assert!(!out.finish().contains("secret"));
}

#[test]
fn client_limits_are_checked() {
    let windows = Windows::parse(&["1h"]).unwrap();
    for config in [
        CardsConfig { max_clients_per_manager: 0, ..CardsConfig::default() },
        CardsConfig { client_idle_ms: 0, ..CardsConfig::default() },
    ] {
        assert!(matches!(Cards::new(&windows, &config), Err(ConfigError::Limit(_))));
    }
    let strict = CardExport { client_transitions: vec!["5m".into()], ..CardExport::default() };
    assert!(matches!(
        Cards::new(&windows, &CardsConfig { export: strict, ..CardsConfig::default() }),
        Err(ConfigError::Export(_))
    ));
}

#[test]
fn client_state_bytes() {
    let (windows, cards) = setup(CardsConfig::default());
    let state = cards.new_state();
    for i in 0..1_000 {
        cards.apply(&state, &windows, &contact(&format!("c{i}"), &format!("client-{i}"), K::Updated), T0, T0);
    }
    let with_cards = state.heap_bytes();
    let clients = state.inner.lock().clients.heap_bytes();
    println!("1000 clients: {clients} bytes of client state ({with_cards} with their cards)");
    // A client is 32 bytes plus its index entry; spare capacity at most doubles it.
    assert_eq!(std::mem::size_of::<clients::Client>(), 32);
    assert!(clients < 1_000 * 100, "{clients}");
}

/// One client's history for the reference model: its deals' status sequences (the first is
/// the creation), and whether a contact card of it is commented.
#[derive(Debug, Clone)]
struct ClientPlan {
    deals: Vec<Vec<u8>>,
    comment: bool,
}

/// 0 open (created, or a stage change), 1 won, 2 lost.
fn client_plan() -> impl Strategy<Value = ClientPlan> {
    (proptest::collection::vec(proptest::collection::vec(0u8..3, 0..5), 0..4), any::<bool>())
        .prop_map(|(deals, comment)| ClientPlan { deals, comment })
}

/// An event of the reference: (client, deal or None for a comment, status).
type RefEvent = (usize, Option<usize>, u8);

/// The events of `clients`, interleaved by `seed`, at distinct increasing times (a minute apart,
/// ending at T0).
fn history(clients: &[ClientPlan], seed: u64) -> Vec<(RefEvent, i64)> {
    // Each deal's events stay in order; deals and clients interleave.
    let mut streams: Vec<Vec<RefEvent>> = Vec::new();
    for (c, plan) in clients.iter().enumerate() {
        if plan.comment {
            streams.push(vec![(c, None, 0)]);
        }
        for (d, statuses) in plan.deals.iter().enumerate() {
            let mut stream = vec![(c, Some(d), 0)];
            stream.extend(statuses.iter().map(|&s| (c, Some(d), s)));
            streams.push(stream);
        }
    }
    let mut picks: Vec<usize> = streams.iter().enumerate().flat_map(|(i, s)| std::iter::repeat_n(i, s.len())).collect();
    shuffle(&mut picks, seed);
    let mut next = vec![0; streams.len()];
    let total = picks.len() as i64;
    picks
        .into_iter()
        .enumerate()
        .map(|(k, stream)| {
            let event = streams[stream][next[stream]];
            next[stream] += 1;
            (event, T0 - (total - k as i64) * MIN)
        })
        .collect()
}

/// The card change of a reference event; the first status of a deal is its creation.
fn change_of(event: RefEvent, first: bool) -> CardChange {
    let (c, deal_index, status) = event;
    let client = format!("client-{c}");
    match deal_index {
        None => contact(&format!("contact-{c}"), &client, K::CommentAdded),
        Some(d) => {
            let kind = match status {
                0 if first => K::Created,
                0 => K::StageChanged,
                1 => K::Won,
                _ => K::Lost,
            };
            deal(&format!("deal-{c}-{d}"), &client, kind)
        }
    }
}

/// The reference: per client, each deal's status is that of its newest event; the type follows
/// from the won and open deals. Applied in time order, the type changes are the transitions.
fn reference(events: &[(RefEvent, i64)]) -> ([u64; 4], BTreeMap<(R, R), u64>) {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|&(_, at)| at);
    let mut deals: HashMap<(usize, usize), u8> = HashMap::new();
    let mut types: BTreeMap<usize, R> = BTreeMap::new();
    let mut moves = BTreeMap::new();
    for ((c, deal_index, status), _) in sorted {
        if let Some(d) = deal_index {
            deals.insert((c, d), status);
        }
        let won = deals.iter().filter(|(&(dc, _), &s)| dc == c && s == 1).count() as u32;
        let open = deals.iter().filter(|(&(dc, _), &s)| dc == c && s == 0).count() as u32;
        let now = R::of(won, open);
        let before = types.insert(c, now).unwrap_or(R::Cold);
        if before != now {
            *moves.entry((before, now)).or_insert(0) += 1;
        }
    }
    let mut counts = [0; 4];
    for kind in types.values() {
        counts[kind.index()] += 1;
    }
    (counts, moves)
}

fn all_moves(s: &CardSnapshot) -> BTreeMap<(R, R), u64> {
    moves(s).into_iter().map(|(from, to, n)| ((from, to), n)).collect()
}

/// Applies `events` (marking each deal's first status, in time order, as its creation).
fn apply_history(cards: &Cards, windows: &Windows, state: &CardState, events: &[(RefEvent, i64)], order: &[usize]) {
    let mut first_at: HashMap<(usize, usize), i64> = HashMap::new();
    for &((c, deal_index, _), at) in events {
        if let Some(d) = deal_index {
            let first = first_at.entry((c, d)).or_insert(at);
            *first = (*first).min(at);
        }
    }
    for &i in order {
        let (event, at) = events[i];
        let first = event.1.is_some_and(|d| first_at[&(event.0, d)] == at);
        cards.apply(state, windows, &change_of(event, first), at, T0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn relationship_types_match_a_reference_model(
        clients in proptest::collection::vec(client_plan(), 1..7),
        interleave in any::<u64>(),
        order in any::<u64>(),
        repeats in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let (windows, cards) = setup(CardsConfig::default());
        let events = history(&clients, interleave);
        let seen = clients.iter().filter(|c| c.comment || !c.deals.is_empty()).count() as i64;
        let (counts_expected, moves_expected) = reference(&events);

        // In time order: the types and every transition, also in the `today` window.
        let in_order = cards.new_state();
        let sequence: Vec<usize> = (0..events.len()).collect();
        apply_history(&cards, &windows, &in_order, &events, &sequence);
        let s = snap(&cards, &windows, &in_order, T0);
        prop_assert_eq!(counts(&s), counts_expected);
        prop_assert_eq!(all_moves(&s), moves_expected.clone());
        let windowed: u64 = s.clients.windows.iter().sum();
        prop_assert_eq!(windowed, moves_expected.values().sum::<u64>());

        // Shuffled, with repeats: the same types; transitions still add up to them.
        let mut shuffled = sequence.clone();
        for repeat in &repeats {
            if !events.is_empty() {
                shuffled.push(repeat.index(events.len()));
            }
        }
        shuffle(&mut shuffled, order);
        let state = cards.new_state();
        apply_history(&cards, &windows, &state, &events, &shuffled);
        let s = snap(&cards, &windows, &state, T0);
        prop_assert_eq!(counts(&s), counts_expected);
        assert_conserved(&s, seen);

        // Split over two partitions by client and merged: the same types.
        let (a, b) = (cards.new_state(), cards.new_state());
        let (left, right): (Vec<usize>, Vec<usize>) = shuffled.iter().partition(|&&i| events[i].0 .0.is_multiple_of(2));
        apply_history(&cards, &windows, &a, &events, &left);
        apply_history(&cards, &windows, &b, &events, &right);
        let mut merged = snap(&cards, &windows, &a, T0);
        merged.merge(&snap(&cards, &windows, &b, T0));
        prop_assert_eq!(counts(&merged), counts_expected);
    }
}
