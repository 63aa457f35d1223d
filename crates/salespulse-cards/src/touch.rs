//! Which buckets a card was touched in: one bit per bucket of each level the `cards_touched`
//! windows use, kept per card.
//!
//! Per kept level a card holds one word with the newest bucket index it was touched in, then a ring
//! of `slots` bits (bucket `i` at bit `i % slots`) valid for the buckets `newest - slots + 1 ..=
//! newest`. Moving `newest` forward clears the bits it passes over, so a bit is never read for a
//! bucket it was not set in. A window counts the card when any bit of its bucket range is set: the
//! distinct count of cards over a window is then exact at bucket resolution, like the event
//! counters (calendar windows exact, sliding ones within one bucket at the trailing edge).

use salespulse_core::window::{ReadPlan, Windows};

/// The bucket index of `ms` in `bucket_ms` buckets, exactly as `salespulse_core::window` computes
/// it (bucket 0 is reserved; times clamp into `1..u32::MAX`).
fn bucket_index(ms: i64, bucket_ms: i64) -> u32 {
    ms.div_euclid(bucket_ms).clamp(1, i64::from(u32::MAX - 1)) as u32
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TouchLevel {
    bucket_ms: i64,
    slots: u32,
    /// First word of this level in a card's words.
    offset: usize,
}

impl TouchLevel {
    fn words(&self) -> usize {
        1 + (self.slots as usize).div_ceil(64)
    }
}

/// The per-card layout of touch bits, shared by all managers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TouchLayout {
    levels: Vec<TouchLevel>,
    /// Words per card.
    stride: usize,
    /// Exported windows: `(index in Windows::specs, index in levels, label)`.
    windows: Vec<(usize, usize, String)>,
}

impl TouchLayout {
    /// Keeps the levels of `exported` windows (`(index in Windows::specs, label)`).
    pub(crate) fn new(windows: &Windows, exported: &[(usize, String)]) -> TouchLayout {
        let mut levels: Vec<(usize, TouchLevel)> = Vec::new();
        let mut stride = 0;
        let mut kept = Vec::new();
        for (spec, label) in exported {
            let Some(level_index) = windows.specs().get(*spec).map(|s| s.level) else { continue };
            let Some(level) = windows.levels().get(level_index) else { continue };
            let position = match levels.iter().position(|(l, _)| *l == level_index) {
                Some(position) => position,
                None => {
                    let touch = TouchLevel { bucket_ms: level.bucket_ms, slots: level.slots.max(1), offset: stride };
                    stride += touch.words();
                    levels.push((level_index, touch));
                    levels.len() - 1
                }
            };
            kept.push((*spec, position, label.clone()));
        }
        TouchLayout { levels: levels.into_iter().map(|(_, level)| level).collect(), stride, windows: kept }
    }

    /// Words one card holds.
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// The exported windows' labels, in export order.
    pub(crate) fn labels(&self) -> impl Iterator<Item = &str> {
        self.windows.iter().map(|(_, _, label)| label.as_str())
    }

    pub(crate) fn len(&self) -> usize {
        self.windows.len()
    }

    /// Records a touch at `at_ms` (already clamped to the wall clock) in a card's `words`.
    pub(crate) fn touch(&self, words: &mut [u64], at_ms: i64) {
        for level in &self.levels {
            let mine = &mut words[level.offset..level.offset + level.words()];
            touch_ring(mine, level.slots, bucket_index(at_ms, level.bucket_ms));
        }
    }

    /// Adds 1 to `out[w]` for every exported window `w` the card with `words` was touched in.
    pub(crate) fn count(&self, words: &[u64], plan: &ReadPlan, out: &mut [u64]) {
        for ((spec, level, _), sum) in self.windows.iter().zip(out.iter_mut()) {
            let Some((first, last)) = plan.range(*spec) else { continue };
            let level = &self.levels[*level];
            if touched_in(&words[level.offset..level.offset + level.words()], level.slots, first, last) {
                *sum += 1;
            }
        }
    }
}

/// `words[0]` is the newest bucket index touched (0: never), `words[1..]` the bit ring.
fn touch_ring(words: &mut [u64], slots: u32, index: u32) {
    let (head, bits) = words.split_at_mut(1);
    let newest = head[0] as u32;
    if newest == 0 || index > newest {
        if newest == 0 || index - newest >= slots {
            bits.fill(0);
        } else {
            for_positions(slots, newest + 1, index, |a, b| clear(bits, a, b));
        }
        head[0] = u64::from(index);
    } else if newest - index >= slots {
        // Older than the ring: no window of this level reaches it any more.
        return;
    }
    let position = (index % slots) as usize;
    bits[position / 64] |= 1 << (position % 64);
}

/// Whether any bucket in `first..=last` is marked.
fn touched_in(words: &[u64], slots: u32, first: u32, last: u32) -> bool {
    let newest = words[0] as u32;
    if newest == 0 || newest < first {
        return false;
    }
    let low = first.max(newest.saturating_sub(slots - 1));
    let high = last.min(newest);
    if low > high {
        return false;
    }
    let mut any = false;
    for_positions(slots, low, high, |a, b| any |= any_in(&words[1..], a, b));
    any
}

/// Calls `visit(a, b)` for the one or two contiguous bit-position ranges `[a, b]` that bucket
/// indices `low..=high` (fewer than `slots` of them) occupy in the ring.
fn for_positions(slots: u32, low: u32, high: u32, mut visit: impl FnMut(usize, usize)) {
    debug_assert!(high >= low && high - low < slots);
    let (a, b) = ((low % slots) as usize, (high % slots) as usize);
    if a <= b {
        visit(a, b);
    } else {
        visit(a, slots as usize - 1);
        visit(0, b);
    }
}

fn word_mask(word: usize, a: usize, b: usize) -> u64 {
    let low = if word == a / 64 { a % 64 } else { 0 };
    let high = if word == b / 64 { b % 64 } else { 63 };
    (u64::MAX >> (63 - high)) & (u64::MAX << low)
}

fn clear(bits: &mut [u64], a: usize, b: usize) {
    for (word, bits) in bits.iter_mut().enumerate().take(b / 64 + 1).skip(a / 64) {
        *bits &= !word_mask(word, a, b);
    }
}

fn any_in(bits: &[u64], a: usize, b: usize) -> bool {
    (a / 64..=b / 64).any(|word| bits[word] & word_mask(word, a, b) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference: the set of touched bucket indices.
    fn reference(touches: &[u32], slots: u32, first: u32, last: u32) -> bool {
        let newest = touches.iter().copied().max().unwrap_or(0);
        touches.iter().any(|&i| i >= first && i <= last && i + slots > newest)
    }

    #[test]
    fn ring_matches_a_set_of_buckets() {
        // (slots, touches in apply order, read ranges)
        type Case<'a> = (u32, &'a [u32], &'a [(u32, u32)]);
        let cases: &[Case<'_>] = &[
            (101, &[1000], &[(1000, 1000), (900, 1000), (1001, 1100), (999, 999)]),
            (101, &[1000, 1000, 1001], &[(1001, 1001), (1000, 1000), (1002, 1101)]),
            // Wrap-around of the ring and bits cleared while advancing.
            (101, &[1000, 1100, 1101], &[(1000, 1000), (1001, 1101), (1100, 1100), (1102, 1102)]),
            (101, &[1000, 1050, 1151], &[(1000, 1151), (1051, 1151), (1050, 1050)]),
            // An older touch after a newer one, inside and outside the ring.
            (30, &[500, 480, 460], &[(471, 500), (480, 480), (460, 470), (481, 499)]),
            (64, &[63, 64, 127, 128], &[(64, 127), (65, 126), (128, 128), (100, 200)]),
            (128, &[1, 129, 257], &[(1, 256), (130, 257), (257, 257)]),
        ];
        for (slots, touches, reads) in cases {
            let mut words = vec![0u64; 1 + (*slots as usize).div_ceil(64)];
            for &t in *touches {
                touch_ring(&mut words, *slots, t);
            }
            for &(first, last) in *reads {
                assert_eq!(
                    touched_in(&words, *slots, first, last),
                    reference(touches, *slots, first, last),
                    "slots {slots} touches {touches:?} read {first}..={last}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn ring_matches_reference(
            touches in proptest::collection::vec(1u32..400, 1..60),
            slots in 1u32..140,
            first in 1u32..400,
            len in 0u32..140,
        ) {
            let mut words = vec![0u64; 1 + (slots as usize).div_ceil(64)];
            for &t in &touches {
                touch_ring(&mut words, slots, t);
            }
            let last = first + len;
            proptest::prop_assert_eq!(touched_in(&words, slots, first, last), reference(&touches, slots, first, last));
        }
    }
}
