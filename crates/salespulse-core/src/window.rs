//! Event-time sliding windows over rings of time buckets.
//!
//! Each configured window of length `L` is served by a ring of [`Windows::SLOTS`] buckets of
//! width `b = ceil(L / SLOTS)`. An event lands in the bucket of its event time. A read at wall-clock
//! time `now` sums the buckets whose index lies in `(idx(now) - slots, idx(now)]`, which covers the
//! interval `[start(idx(now)) - (slots - 1) * b, now]`: never more than the window, and less by at
//! most one bucket's worth at the trailing edge (see `docs/windows.md`). Buckets are reused lazily:
//! a slot is cleared when an event for a newer bucket index maps onto it, and a read ignores slots
//! whose stamp is outside the window, so a quiet manager's numbers decay to zero without any
//! background sweep.
//!
//! Events from the future are clamped to `now` (the engine rejects those beyond its tolerance
//! before they get here), so they can never push a window forward.

use std::time::Duration;

/// A window could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WindowError {
    /// The text is not a duration such as `5m` or `1h`.
    #[error("window {text:?} is not a duration like \"5m\" or \"1h\": {source}")]
    Parse {
        /// What was given.
        text: String,
        /// Why it did not parse.
        source: humantime::DurationError,
    },
    /// The window is shorter than one second or longer than 31 days.
    #[error("window {0:?} must be between 1s and 31d")]
    OutOfRange(String),
    /// Two windows have the same length.
    #[error("window {0:?} is configured twice")]
    Duplicate(String),
    /// No window at all.
    #[error("at least one window must be configured")]
    Empty,
}

/// One configured window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// The value of the `window` label, as configured (`5m`, `1h`).
    pub label: String,
    /// The window's length.
    pub length_ms: i64,
    /// The width of one bucket of its ring.
    pub bucket_ms: i64,
    /// How many buckets the ring holds.
    pub slots: usize,
}

/// The configured set of sliding windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    specs: Vec<WindowSpec>,
}

impl Windows {
    /// Buckets per window: the trailing-edge error is at most `1 / SLOTS` of the window.
    pub const SLOTS: usize = 60;

    /// Parses window lengths such as `["5m", "1h"]`.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<Windows, WindowError> {
        let mut lengths = Vec::with_capacity(texts.len());
        for text in texts {
            let text = text.as_ref().trim();
            let length = humantime::parse_duration(text)
                .map_err(|source| WindowError::Parse { text: text.to_owned(), source })?;
            lengths.push((text.to_owned(), length));
        }
        Windows::new(lengths)
    }

    /// Builds windows from `(label, length)` pairs.
    pub fn new(lengths: Vec<(String, Duration)>) -> Result<Windows, WindowError> {
        if lengths.is_empty() {
            return Err(WindowError::Empty);
        }
        let mut specs: Vec<WindowSpec> = Vec::with_capacity(lengths.len());
        for (label, length) in lengths {
            let length_ms = length.as_millis();
            if !(1_000..=31 * 86_400_000).contains(&length_ms) {
                return Err(WindowError::OutOfRange(label));
            }
            let length_ms = length_ms as i64;
            if specs.iter().any(|s| s.length_ms == length_ms) {
                return Err(WindowError::Duplicate(label));
            }
            let slots = Self::SLOTS as i64;
            let bucket_ms = (length_ms + slots - 1) / slots;
            let slots = ((length_ms + bucket_ms - 1) / bucket_ms) as usize;
            specs.push(WindowSpec { label, length_ms, bucket_ms, slots });
        }
        Ok(Windows { specs })
    }

    /// The windows in configured order.
    pub fn specs(&self) -> &[WindowSpec] {
        &self.specs
    }

    /// The longest window's length: events older than this are late for every window.
    pub fn largest_ms(&self) -> i64 {
        self.specs.iter().map(|s| s.length_ms).max().unwrap_or(0)
    }
}

/// One manager's buckets of type `B` for every configured window.
///
/// `B` is a plain accumulator (counters of one stream); [`Windowed::update`] hands out the bucket an
/// event belongs to in every window, [`Windowed::fold`] visits the live buckets of one window.
#[derive(Debug, Clone)]
pub struct Windowed<B> {
    rings: Box<[Ring<B>]>,
}

#[derive(Debug, Clone)]
struct Ring<B> {
    /// Bucket index held by each slot; `i64::MIN` when the slot was never used.
    stamps: Box<[i64]>,
    buckets: Box<[B]>,
}

impl<B: Default> Windowed<B> {
    /// Empty rings for `windows`.
    pub fn new(windows: &Windows) -> Self {
        let rings = windows
            .specs
            .iter()
            .map(|spec| Ring {
                stamps: vec![i64::MIN; spec.slots].into_boxed_slice(),
                buckets: (0..spec.slots).map(|_| B::default()).collect(),
            })
            .collect();
        Windowed { rings }
    }

    /// Applies `apply` to the bucket of `event_ms` in every window that still covers it at
    /// `now_ms`, and returns in how many windows it landed (0: the event is late for all of them).
    /// An event time after `now_ms` counts as `now_ms`.
    pub fn update(&mut self, windows: &Windows, event_ms: i64, now_ms: i64, mut apply: impl FnMut(&mut B)) -> usize {
        let event_ms = event_ms.min(now_ms);
        let mut landed = 0;
        for (ring, spec) in self.rings.iter_mut().zip(&windows.specs) {
            let index = event_ms.div_euclid(spec.bucket_ms);
            let now_index = now_ms.div_euclid(spec.bucket_ms);
            if index <= now_index - spec.slots as i64 {
                continue;
            }
            let slot = index.rem_euclid(spec.slots as i64) as usize;
            let stamp = &mut ring.stamps[slot];
            if *stamp > index {
                // The slot already holds a newer bucket: only possible when the wall clock moved
                // backwards, and then the event is outside what this ring can still represent.
                continue;
            }
            if *stamp < index {
                *stamp = index;
                ring.buckets[slot] = B::default();
            }
            apply(&mut ring.buckets[slot]);
            landed += 1;
        }
        landed
    }

    /// Visits every bucket of window `window_index` that is inside the window at `now_ms`.
    pub fn fold(&self, windows: &Windows, window_index: usize, now_ms: i64, mut visit: impl FnMut(&B)) {
        let (Some(ring), Some(spec)) = (self.rings.get(window_index), windows.specs.get(window_index)) else {
            return;
        };
        let now_index = now_ms.div_euclid(spec.bucket_ms);
        let oldest = now_index - spec.slots as i64;
        for (stamp, bucket) in ring.stamps.iter().zip(ring.buckets.iter()) {
            if *stamp > oldest && *stamp <= now_index {
                visit(bucket);
            }
        }
    }

    /// Bytes held by the rings (not counting heap data inside `B`).
    pub fn heap_bytes(&self) -> usize {
        self.rings
            .iter()
            .map(|r| r.stamps.len() * std::mem::size_of::<i64>() + r.buckets.len() * std::mem::size_of::<B>())
            .sum::<usize>()
            + self.rings.len() * std::mem::size_of::<Ring<B>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000_000;

    fn windows() -> Windows {
        Windows::parse(&["5m", "1h"]).unwrap()
    }

    fn count(w: &Windowed<u64>, windows: &Windows, index: usize, now: i64) -> u64 {
        let mut n = 0;
        w.fold(windows, index, now, |b| n += *b);
        n
    }

    #[test]
    fn specs_are_derived_from_lengths() {
        let windows = windows();
        let specs = windows.specs();
        assert_eq!(specs[0], WindowSpec { label: "5m".into(), length_ms: 300_000, bucket_ms: 5_000, slots: 60 });
        assert_eq!(specs[1].bucket_ms, 60_000);
        assert_eq!(windows.largest_ms(), 3_600_000);
        let odd = Windows::parse(&["7s"]).unwrap();
        assert_eq!((odd.specs()[0].bucket_ms, odd.specs()[0].slots), (117, 60));
    }

    #[test]
    fn bad_windows_are_refused() {
        assert!(matches!(Windows::parse(&["soon"]), Err(WindowError::Parse { .. })));
        assert!(matches!(Windows::parse(&["10ms"]), Err(WindowError::OutOfRange(_))));
        assert!(matches!(Windows::parse(&["5m", "300s"]), Err(WindowError::Duplicate(_))));
        assert!(matches!(Windows::parse::<&str>(&[]), Err(WindowError::Empty)));
    }

    #[test]
    fn events_decay_out_of_the_window() {
        let windows = windows();
        let mut w = Windowed::<u64>::new(&windows);
        let now = T0;
        assert_eq!(w.update(&windows, now - 10_000, now, |b| *b += 1), 2);
        assert_eq!(count(&w, &windows, 0, now), 1);
        // Still inside 5m just before the trailing edge passes its bucket.
        assert_eq!(count(&w, &windows, 0, now + 280_000), 1);
        assert_eq!(count(&w, &windows, 0, now + 300_000), 0);
        assert_eq!(count(&w, &windows, 1, now + 300_000), 1);
        assert_eq!(count(&w, &windows, 1, now + 3_600_000), 0);
    }

    #[test]
    fn late_events_land_only_where_covered() {
        let windows = windows();
        let mut w = Windowed::<u64>::new(&windows);
        let now = T0;
        assert_eq!(w.update(&windows, now - 600_000, now, |b| *b += 1), 1);
        assert_eq!(w.update(&windows, now - 7_200_000, now, |b| *b += 1), 0);
        assert_eq!((count(&w, &windows, 0, now), count(&w, &windows, 1, now)), (0, 1));
    }

    #[test]
    fn future_events_count_as_now() {
        let windows = windows();
        let mut w = Windowed::<u64>::new(&windows);
        w.update(&windows, T0 + 120_000, T0, |b| *b += 1);
        assert_eq!(count(&w, &windows, 0, T0), 1);
        assert_eq!(count(&w, &windows, 0, T0 + 299_000), 1);
    }

    #[test]
    fn reused_slot_is_cleared() {
        let windows = windows();
        let mut w = Windowed::<u64>::new(&windows);
        w.update(&windows, T0, T0, |b| *b += 5);
        // Exactly one ring length later the same slot is reused for the new bucket.
        let later = T0 + 300_000;
        w.update(&windows, later, later, |b| *b += 1);
        assert_eq!(count(&w, &windows, 0, later), 1);
        assert_eq!(count(&w, &windows, 1, later), 6);
    }

    #[test]
    fn bucket_boundary_belongs_to_the_newer_bucket() {
        let windows = Windows::parse(&["1m"]).unwrap();
        let mut w = Windowed::<u64>::new(&windows);
        let boundary = (T0 / 1_000) * 1_000;
        w.update(&windows, boundary, boundary, |b| *b += 1);
        // The bucket starting at `boundary` leaves the window exactly one window later.
        assert_eq!(count(&w, &windows, 0, boundary + 59_999), 1);
        assert_eq!(count(&w, &windows, 0, boundary + 60_000), 0);
    }

    proptest! {
        /// Against a brute-force count: a window never reports more than the events in
        /// `[now - L, now]` and never less than those in `[now - L + bucket, now]`.
        #[test]
        fn matches_reference_within_one_bucket(
            offsets in proptest::collection::vec(0i64..4_000_000, 0..200),
            read_after in 0i64..4_000_000,
        ) {
            let windows = windows();
            let mut w = Windowed::<u64>::new(&windows);
            let mut now = T0;
            let mut applied = Vec::new();
            for off in &offsets {
                // Arrival order is the generated order; event times wander back up to 4000 s.
                now += 1_000;
                let event = now - off;
                w.update(&windows, event, now, |b| *b += 1);
                applied.push(event);
            }
            let read = now + read_after;
            for (i, spec) in windows.specs().iter().enumerate() {
                let got = count(&w, &windows, i, read);
                // Only events the ring could still hold at arrival time are candidates.
                let upper = applied.iter().filter(|&&e| e > read - spec.length_ms && e <= read).count() as u64;
                let lower = applied.iter().filter(|&&e| e > read - spec.length_ms + spec.bucket_ms && e <= read).count() as u64;
                prop_assert!(got <= upper, "window {} got {} > {}", spec.label, got, upper);
                prop_assert!(got >= lower, "window {} got {} < {}", spec.label, got, lower);
            }
        }
    }
}
