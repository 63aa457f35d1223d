//! Set-up shared by the card tests: the default windows and a card change with nothing optional.

use salespulse_core::window::{Windows, WindowsConfig};
use salespulse_events::{CardChange, CardChangeKind, CardType};

use crate::{CardSnapshot, CardState, Cards, CardsConfig};

/// Default windows (5m, 1h, 8h, today, shift 09:00+9h, UTC) and cards configured by `config`.
pub(crate) fn setup(config: CardsConfig) -> (Windows, Cards) {
    let windows = Windows::new(&WindowsConfig::default()).unwrap();
    let cards = Cards::new(&windows, &config).unwrap();
    (windows, cards)
}

/// A change of `card` with every optional field absent.
pub(crate) fn blank(card: &str, card_type: CardType, change: CardChangeKind) -> CardChange {
    CardChange {
        card_id: card.into(),
        card_type,
        change,
        pipeline: None,
        stage_from: None,
        stage_to: None,
        stage_progress_pct: None,
        comment_length: None,
        task_id: None,
        task_due_at_ms: None,
        task_due_from_ms: None,
        amount: None,
        client_id: None,
        margin: None,
        invoice_id: None,
        currency: None,
    }
}

/// A deterministic shuffle from `seed` (xorshift).
pub(crate) fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut seed = seed | 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// A scrape of `state` at `now`.
pub(crate) fn snap(cards: &Cards, windows: &Windows, state: &CardState, now: i64) -> CardSnapshot {
    cards.snapshot(state, windows, &windows.plan(now), now)
}
