//! Windowed latency histograms: per manager, log-scaled bucket counts in every configured window,
//! plus all-time totals for a Prometheus histogram.
//!
//! # Buckets
//! [`LogBuckets::latency`] spaces bucket bounds by a factor of √2 from 1 s to just past 24 h (33
//! finite bounds and `+Inf`, 34 buckets), so a quantile estimated by interpolating inside a bucket
//! is off by at most the ratio of that bucket's bounds (see [`LogBuckets::latency`] for the exact
//! figures) — whatever the scale of the latencies, which range from seconds to a night.
//!
//! # Windowed state
//! A [`WindowedHistogram`] keeps its windowed part in [`Counters`], one counter per bucket plus one
//! for the sum of the values, so the windows are exactly those of every other stream: a sliding
//! window may miss its oldest bucket's worth of observations (`window` module docs), calendar
//! windows are exact. The count is not stored: it is the sum of the bucket counts, which also keeps
//! `_count` equal to the `+Inf` bucket in the exposition even while a write is under way.
//!
//! The windowed sum is kept in tenths of a second, rounded, per bucket slot as a `u32`: off by at
//! most 50 ms per observation, and a slot saturates only after 13 years of summed latency (whole
//! seconds would add up to half a second of error per observation; milliseconds would saturate a
//! 15-minute slot after 50 days of summed latency, which a morning of answering weekend chats
//! reaches). All-time bucket counts are `AtomicU32`s, saturating (4.3 billion values in one bucket of
//! one manager), and the all-time sum an `AtomicU64` of exact milliseconds.
//!
//! # Memory
//! A window bucket slot holds a stamp, the histogram bucket counts two to a `u32` (16 bits each,
//! saturating at 65 535 per bucket and slot: a manager answering more than 546 times a second in
//! one latency bucket), and the sum: with the 34 latency buckets 19 `u32`s, 76 bytes. The all-time
//! bucket counts add 34 × 4 bytes. Per manager, on the heap:
//! - the default windows (`5m`, `1h`, `8h`, `today`, `shift`: rings of 30 + 30 + 32 slots and one
//!   slot each for the calendar windows): 7 280 bytes;
//! - only `1h` and `today` (30 + 1 slots): 2 492 bytes;
//! - `1h` alone: 2 416 bytes;
//! - no window (all-time only, as the per-channel histograms): 136 bytes.
//!
//! A calendar window costs one slot: it only ever reads its current period (see
//! [`crate::window`]).
//!
//! ```
//! use salespulse_core::histogram::{LogBuckets, WindowedHistogram};
//! use salespulse_core::window::Windows;
//! let windows = Windows::parse(&["1h"]).unwrap();
//! let buckets = LogBuckets::latency();
//! let layout = WindowedHistogram::layout(&windows, &buckets, &[0]);
//! let replies = WindowedHistogram::new(&layout, &buckets);
//! let now = 1_700_000_000_000;
//! replies.observe(&layout, &windows, &buckets, 30_000, now - 60_000, now);
//! let hour = &replies.read_windows(&layout, &windows, &buckets, &windows.plan(now))[0];
//! assert_eq!((hour.count, hour.sum_seconds), (1, 30.0));
//! // 30 s lies in (23 s, 32 s]: the median of one value interpolates to the bucket's middle.
//! assert_eq!(hour.quantile(&buckets, 0.5), Some(27.5));
//! ```
//!
//! # Concurrency
//! As for [`Counters`]: one writer per histogram (plain loads and stores, no read-modify-write),
//! any number of concurrent readers, which may see one observation half applied (its bucket counted
//! but not yet its value in the sum), never a torn counter.

use std::f64::consts::SQRT_2;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::window::{Counters, Layout, ReadPlan, Windows, MAX_DIMS};

const SECOND_MS: i64 = 1_000;
/// The latency buckets reach at least this far.
const DAY_MS: i64 = 86_400_000;
/// Milliseconds per unit of the windowed sum: tenths of a second.
const SUM_UNIT_MS: i64 = 100;
/// Finite bounds a [`LogBuckets`] may have: a window bucket must hold one counter per bucket, the
/// `+Inf` one included, and the sum.
pub const MAX_BOUNDS: usize = MAX_DIMS - 2;

/// Bucket bounds were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistogramError {
    /// No finite bound: a histogram of only `+Inf` estimates nothing.
    #[error("a histogram needs at least one finite bucket bound")]
    Empty,
    /// More bounds than fit in one window bucket.
    #[error("{0} bucket bounds given; at most {MAX_BOUNDS} fit in a window bucket")]
    TooMany(usize),
    /// A bound of zero or less: latencies are positive, and the first bucket starts at 0.
    #[error("bucket bound {0} ms is not positive")]
    NotPositive(i64),
    /// Bounds not strictly ascending.
    #[error("bucket bounds must be strictly ascending: {previous} ms then {next} ms")]
    NotAscending {
        /// The earlier bound.
        previous: i64,
        /// The bound after it.
        next: i64,
    },
}

/// Log-scaled bucket upper bounds for latencies.
///
/// Bucket `i` holds values `v` with `bound[i - 1] < v <= bound[i]` (the first from 0, negative
/// values included); the last bucket, after every finite bound, is `+Inf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBuckets {
    /// Finite upper bounds in milliseconds, strictly ascending, all positive, at most
    /// [`MAX_BOUNDS`].
    bounds_ms: Vec<i64>,
}

impl LogBuckets {
    /// 1 s to just past 24 h by factors of √2 in whole seconds: `round(√2^k)` s for k = 0, 1, 2, ...,
    /// duplicates dropped (√2 rounds to 1), up to the first bound of at least 86 400 s, then `+Inf`.
    ///
    /// That is 1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, ..., 65 536 and 92 682 s: 33
    /// finite bounds, 34 buckets.
    ///
    /// Error: the true quantile and the estimate lie in the same bucket (the `+Inf` one reads as its
    /// lower bound), so they differ by at most the ratio of its bounds: 2 for (1 s, 2 s], 1.5 up to
    /// 8 s, 1.455 beyond (11 s → 16 s, from rounding to whole seconds), and √2 within 0.02 % from
    /// 91 s on. In the first bucket the error is at most 1 s.
    pub fn latency() -> LogBuckets {
        let mut bounds_ms: Vec<i64> = Vec::new();
        for k in 0u32.. {
            // √2^k as a power of two, times √2 when k is odd: one rounding, no accumulated error.
            let power = f64::from(1u32 << (k / 2));
            let seconds = if k % 2 == 0 { power } else { (power * SQRT_2).round() } as i64;
            let bound = seconds * SECOND_MS;
            if bounds_ms.last() != Some(&bound) {
                bounds_ms.push(bound);
            }
            if bound >= DAY_MS {
                break;
            }
        }
        LogBuckets { bounds_ms }
    }

    /// Custom bounds in milliseconds: strictly ascending, positive, 1 to [`MAX_BOUNDS`] of them.
    /// `+Inf` is implied.
    pub fn new(bounds_ms: Vec<i64>) -> Result<LogBuckets, HistogramError> {
        if bounds_ms.is_empty() {
            return Err(HistogramError::Empty);
        }
        if bounds_ms.len() > MAX_BOUNDS {
            return Err(HistogramError::TooMany(bounds_ms.len()));
        }
        if let Some(&bound) = bounds_ms.iter().find(|&&b| b <= 0) {
            return Err(HistogramError::NotPositive(bound));
        }
        if let Some(pair) = bounds_ms.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err(HistogramError::NotAscending { previous: pair[0], next: pair[1] });
        }
        Ok(LogBuckets { bounds_ms })
    }

    /// Number of buckets, `+Inf` included.
    pub fn len(&self) -> usize {
        self.bounds_ms.len() + 1
    }

    /// Never: the `+Inf` bucket always exists.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bucket of `value_ms`: the first whose bound is at least the value (a value equal to a
    /// bound belongs to that bucket, as with Prometheus `le`); negative values go to the first,
    /// values past every bound to `+Inf`.
    pub fn index(&self, value_ms: i64) -> usize {
        self.bounds_ms.partition_point(|&bound| bound < value_ms)
    }

    /// The finite upper bounds in milliseconds.
    pub fn upper_bounds_ms(&self) -> &[i64] {
        &self.bounds_ms
    }

    /// The finite upper bounds in seconds, for the Prometheus `le` label; `+Inf` is not included.
    pub fn upper_bounds_seconds(&self) -> impl Iterator<Item = f64> + '_ {
        self.bounds_ms.iter().map(|&bound| ms_to_seconds(bound))
    }

    /// Lower edge of bucket `index` in milliseconds: 0 for the first bucket.
    fn lower_ms(&self, index: usize) -> i64 {
        index.checked_sub(1).and_then(|i| self.bounds_ms.get(i)).copied().unwrap_or(0)
    }
}

fn ms_to_seconds(ms: i64) -> f64 {
    ms as f64 / SECOND_MS as f64
}

/// Estimates the `q`-quantile (`0 <= q <= 1`), in seconds, from per-bucket counts (not cumulative,
/// one per bucket of `buckets`), the way PromQL's `histogram_quantile` does: the bucket where the
/// rank `q × total` falls is found, and the value interpolated linearly between its bounds, the
/// first bucket starting at 0. A rank in the `+Inf` bucket gives the highest finite bound.
///
/// Empty buckets are skipped, so `q = 0` gives the lower bound of the lowest non-empty bucket and
/// `q = 1` the upper bound of the highest (PromQL would divide 0 by 0 for an empty first bucket).
///
/// `None` when the total is 0, `q` is outside `[0, 1]` or NaN, or `counts` does not have one entry
/// per bucket.
pub fn quantile(buckets: &LogBuckets, counts: &[u64], q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || counts.len() != buckets.len() {
        return None;
    }
    let total = counts.iter().fold(0u64, |sum, &c| sum.saturating_add(c));
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (index, &count) in counts.iter().enumerate() {
        let through = below.saturating_add(count);
        if count > 0 && through as f64 >= rank {
            let Some(&upper) = buckets.bounds_ms.get(index) else {
                return buckets.bounds_ms.last().map(|&bound| ms_to_seconds(bound));
            };
            let lower = buckets.lower_ms(index);
            let fraction = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(ms_to_seconds(lower) + (ms_to_seconds(upper) - ms_to_seconds(lower)) * fraction);
        }
        below = through;
    }
    // Unreachable: with q <= 1 the rank never exceeds the total, which the last non-empty bucket
    // reaches.
    None
}

/// One manager's latency histogram: bucket counts and sums per window, and all-time totals.
///
/// The [`Layout`] and [`LogBuckets`] are shared by all managers of the stream and passed in on
/// every call; see the module documentation for memory and concurrency.
#[derive(Debug)]
pub struct WindowedHistogram {
    /// Per window bucket: the counts of two histogram buckets per cell (16 bits each, the even
    /// bucket in the low half), then the sum in tenths of a second.
    windowed: Counters,
    /// All-time count per histogram bucket, saturating.
    counts: Box<[AtomicU32]>,
    /// All-time sum of the values in milliseconds, negative values counted as 0.
    sum_ms: AtomicU64,
}

impl WindowedHistogram {
    /// The layout for windows `specs` (indices into [`Windows::specs`]), shared by every manager.
    pub fn layout(windows: &Windows, buckets: &LogBuckets, specs: &[usize]) -> Layout {
        Layout::new(windows, packed_cells(buckets) + 1, specs)
    }

    /// An empty histogram; `layout` must come from [`WindowedHistogram::layout`] with `buckets`.
    pub fn new(layout: &Layout, buckets: &LogBuckets) -> Self {
        debug_assert_eq!(layout.dims(), packed_cells(buckets) + 1, "layout built for other buckets");
        WindowedHistogram {
            windowed: Counters::new(layout),
            counts: (0..buckets.len()).map(|_| AtomicU32::new(0)).collect(),
            sum_ms: AtomicU64::new(0),
        }
    }

    /// Records one value observed at event time `event_ms`, seen at wall-clock `now_ms`: in every
    /// window that still covers the event time (see [`Counters::add`]), and always in the totals.
    /// A negative value (clock skew between the systems that stamped the two ends) counts in the
    /// first bucket and as 0 in the sums, which keeps the sums monotonic as Prometheus expects.
    ///
    /// Only one thread may call this on a given histogram at a time.
    pub fn observe(
        &self,
        layout: &Layout,
        windows: &Windows,
        buckets: &LogBuckets,
        value_ms: i64,
        event_ms: i64,
        now_ms: i64,
    ) {
        debug_assert_eq!(layout.dims(), packed_cells(buckets) + 1, "layout built for other buckets");
        let bucket = buckets.index(value_ms);
        let value_ms = value_ms.max(0);
        let tenths = u32::try_from(value_ms.saturating_add(SUM_UNIT_MS / 2) / SUM_UNIT_MS).unwrap_or(u32::MAX);
        let (cell, shift) = (bucket / 2, 16 * (bucket % 2));
        let sum = packed_cells(buckets);
        self.windowed.add_with(layout, windows, event_ms, now_ms, |cells| {
            if let (Some(counts), Some(sum)) = (cells.get(cell), cells.get(sum)) {
                let packed = counts.load(Ordering::Relaxed);
                // Each half saturates on its own: a count never carries into its neighbour.
                if (packed >> shift) & u32::from(u16::MAX) != u32::from(u16::MAX) {
                    counts.store(packed + (1 << shift), Ordering::Relaxed);
                }
                sum.store(sum.load(Ordering::Relaxed).saturating_add(tenths), Ordering::Relaxed);
            }
        });
        if let Some(cell) = self.counts.get(bucket) {
            cell.store(cell.load(Ordering::Relaxed).saturating_add(1), Ordering::Relaxed);
        }
        crate::single_writer::add(&self.sum_ms, value_ms.unsigned_abs());
    }

    /// The histogram of every window served by `layout`, in the order of [`Layout::specs`], at the
    /// instant of `plan`.
    pub fn read_windows(
        &self,
        layout: &Layout,
        windows: &Windows,
        buckets: &LogBuckets,
        plan: &ReadPlan,
    ) -> Vec<WindowHistogram> {
        let sum = packed_cells(buckets);
        if layout.dims() != sum + 1 {
            return Vec::new();
        }
        let mut out: Vec<WindowHistogram> = (0..layout.specs().len())
            .map(|_| WindowHistogram { counts: vec![0; buckets.len()], ..WindowHistogram::default() })
            .collect();
        let mut tenths = vec![0u64; out.len()];
        self.windowed.read_with(layout, windows, plan, |position, cells| {
            let window = &mut out[position];
            for (bucket, count) in window.counts.iter_mut().enumerate() {
                *count += u64::from((cells[bucket / 2] >> (16 * (bucket % 2))) & u32::from(u16::MAX));
            }
            tenths[position] += u64::from(cells[sum]);
        });
        for (window, tenths) in out.iter_mut().zip(tenths) {
            window.count = window.counts.iter().fold(0u64, |total, &c| total.saturating_add(c));
            window.sum_seconds = tenths as f64 / (SECOND_MS / SUM_UNIT_MS) as f64;
        }
        out
    }

    /// Everything observed since the histogram was created.
    pub fn totals(&self) -> HistogramTotals {
        let counts: Vec<u64> = self.counts.iter().map(|c| u64::from(c.load(Ordering::Relaxed))).collect();
        HistogramTotals {
            count: counts.iter().fold(0u64, |sum, &c| sum.saturating_add(c)),
            sum_seconds: self.sum_ms.load(Ordering::Relaxed) as f64 / SECOND_MS as f64,
            counts,
        }
    }

    /// Bytes a histogram of `layout` and `buckets` holds on the heap: [`WindowedHistogram::heap_bytes`]
    /// of one not yet created.
    pub fn bytes_for(layout: &Layout, buckets: &LogBuckets) -> usize {
        layout.bytes() + buckets.len() * std::mem::size_of::<AtomicU32>()
    }

    /// Bytes held on the heap (the struct itself adds 40).
    pub fn heap_bytes(&self) -> usize {
        self.windowed.heap_bytes() + self.counts.len() * std::mem::size_of::<AtomicU32>()
    }
}

/// One window's histogram at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowHistogram {
    /// Count per bucket, not cumulative; the last is `+Inf`.
    pub counts: Vec<u64>,
    /// Sum of the values in seconds, to a tenth of a second per observation.
    pub sum_seconds: f64,
    /// Number of observations: the sum of `counts`.
    pub count: u64,
}

impl WindowHistogram {
    /// The `q`-quantile in seconds; see [`quantile`].
    pub fn quantile(&self, buckets: &LogBuckets, q: f64) -> Option<f64> {
        quantile(buckets, &self.counts, q)
    }

    /// Adds `other` (for a team: its managers' histograms of the same window). An empty
    /// [`Default`] histogram takes the other's buckets.
    pub fn merge(&mut self, other: &WindowHistogram) {
        add_counts(&mut self.counts, &other.counts);
        self.sum_seconds += other.sum_seconds;
        self.count = self.count.saturating_add(other.count);
    }
}

/// Everything a histogram observed since it was created, for a Prometheus histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramTotals {
    /// Count per bucket, not cumulative; the last is `+Inf`.
    pub counts: Vec<u64>,
    /// Sum of the values in seconds.
    pub sum_seconds: f64,
    /// Number of observations: the sum of `counts`.
    pub count: u64,
}

impl HistogramTotals {
    /// Adds `other`. An empty [`Default`] value takes the other's buckets.
    pub fn merge(&mut self, other: &HistogramTotals) {
        add_counts(&mut self.counts, &other.counts);
        self.sum_seconds += other.sum_seconds;
        self.count = self.count.saturating_add(other.count);
    }

    /// Cumulative counts as Prometheus `_bucket{le=...}` samples want them; the last (`+Inf`)
    /// equals `count`.
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0u64, |running, &c| {
                *running = running.saturating_add(c);
                Some(*running)
            })
            .collect()
    }
}

/// Cells of a window bucket that hold the histogram bucket counts, two per cell.
fn packed_cells(buckets: &LogBuckets) -> usize {
    buckets.len().div_ceil(2)
}

fn add_counts(into: &mut Vec<u64>, other: &[u64]) {
    if into.len() < other.len() {
        into.resize(other.len(), 0);
    }
    for (sum, &c) in into.iter_mut().zip(other) {
        *sum = sum.saturating_add(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{local_day_start, shift_bounds, WindowKind, WindowsConfig};
    use proptest::prelude::*;

    /// 2026-11-23T12:00:00Z
    const T0: i64 = 1_795_435_200_000;

    /// Buckets (0, 1 s], (1 s, 2 s], (2 s, 4 s], +Inf.
    fn small() -> LogBuckets {
        LogBuckets::new(vec![1_000, 2_000, 4_000]).unwrap()
    }

    #[test]
    fn latency_bounds() {
        let buckets = LogBuckets::latency();
        let seconds: Vec<f64> = buckets.upper_bounds_seconds().collect();
        let expected = [
            1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024, 1448, 2048, 2896, 4096,
            5793, 8192, 11585, 16384, 23170, 32768, 46341, 65536, 92682,
        ];
        assert_eq!(seconds, expected.map(f64::from));
        assert_eq!(buckets.len(), 34);
        let bounds = buckets.upper_bounds_ms();
        assert_eq!(bounds[0], 1_000);
        assert!(bounds[bounds.len() - 2] < DAY_MS && bounds[bounds.len() - 1] >= DAY_MS);
        assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
        // The ratios the documentation promises, by the lower bound they start from.
        for pair in bounds.windows(2) {
            let ratio = pair[1] as f64 / pair[0] as f64;
            let limit = match pair[0] {
                ..2_000 => 2.0,
                2_000..11_000 => 1.5,
                11_000..91_000 => 1.455,
                _ => SQRT_2 * 1.0002,
            };
            assert!(ratio <= limit, "{pair:?}: {ratio}");
        }
    }

    #[test]
    fn index_at_bounds() {
        let buckets = LogBuckets::latency();
        for (value_ms, index) in [
            (i64::MIN, 0),
            (-1, 0),
            (0, 0),
            (1, 0),
            (1_000, 0),
            (1_001, 1),
            (2_000, 1),
            (2_001, 2),
            (100_000, 13),
            (128_000, 13),
            (92_682_000, 32),
            (92_682_001, 33),
            (i64::MAX, 33),
        ] {
            assert_eq!(buckets.index(value_ms), index, "{value_ms} ms");
        }
    }

    #[test]
    fn custom_bounds_are_checked() {
        for (bounds, expected) in [
            (vec![1_000, 2_000], Ok(3)),
            (vec![1], Ok(2)),
            (vec![], Err(HistogramError::Empty)),
            (vec![0, 1_000], Err(HistogramError::NotPositive(0))),
            (vec![-5], Err(HistogramError::NotPositive(-5))),
            (vec![1_000, 1_000], Err(HistogramError::NotAscending { previous: 1_000, next: 1_000 })),
            (vec![2_000, 1_000], Err(HistogramError::NotAscending { previous: 2_000, next: 1_000 })),
            ((1..=62).collect(), Ok(63)),
            ((1..=63).collect(), Err(HistogramError::TooMany(63))),
        ] {
            let got = LogBuckets::new(bounds.clone()).map(|b| b.len());
            assert_eq!(got, expected, "{bounds:?}");
        }
    }

    #[test]
    fn quantile_table() {
        let buckets = small();
        for (counts, q, expected) in [
            // All in (1 s, 2 s]: the median is the middle of the bucket.
            (vec![0, 4, 0, 0], 0.5, Some(1.5)),
            // One value in the first bucket, which starts at 0.
            (vec![1, 0, 0, 0], 0.5, Some(0.5)),
            // Rank 6 of 8: 2 into the 4 values of (2 s, 4 s].
            (vec![2, 2, 4, 0], 0.75, Some(3.0)),
            // Rank 2 of 8 ends exactly at the top of the first bucket.
            (vec![2, 2, 4, 0], 0.25, Some(1.0)),
            // Rank 5 of 8: 1 into the 4 values of (2 s, 4 s].
            (vec![2, 2, 4, 0], 0.625, Some(2.5)),
            // In +Inf: the highest finite bound.
            (vec![0, 0, 0, 5], 0.5, Some(4.0)),
            (vec![1, 0, 0, 3], 1.0, Some(4.0)),
            (vec![1, 0, 0, 3], 0.25, Some(1.0)),
            // q = 0: the lower bound of the lowest non-empty bucket; q = 1: the top of the highest.
            (vec![0, 2, 2, 0], 0.0, Some(1.0)),
            (vec![3, 0, 0, 0], 0.0, Some(0.0)),
            (vec![0, 2, 2, 0], 1.0, Some(4.0)),
            (vec![3, 0, 0, 0], 1.0, Some(1.0)),
            // Nothing to estimate from.
            (vec![0, 0, 0, 0], 0.5, None),
            (vec![1, 1, 1, 1], -0.01, None),
            (vec![1, 1, 1, 1], 1.01, None),
            (vec![1, 1, 1, 1], f64::NAN, None),
            (vec![1, 1, 1], 0.5, None),
        ] {
            assert_eq!(quantile(&buckets, &counts, q), expected, "{counts:?} q={q}");
        }
    }

    #[test]
    fn observe_fills_windows_and_totals() {
        let buckets = small();
        let windows = Windows::parse(&["5m", "1h"]).unwrap();
        let layout = WindowedHistogram::layout(&windows, &buckets, &[0, 1]);
        let h = WindowedHistogram::new(&layout, &buckets);
        for (value_ms, event_ms) in [
            (1_500, T0 - 10_000),      // both windows
            (250, T0 - 1_200_000),     // 1h only; 2.5 tenths round to 3
            (100_000, T0 - 7_200_000), // no window, still in the totals
            (-40, T0),                 // clock skew: first bucket, 0 in the sum
            (4_000, T0),               // exactly the last finite bound
        ] {
            h.observe(&layout, &windows, &buckets, value_ms, event_ms, T0);
        }
        let read = h.read_windows(&layout, &windows, &buckets, &windows.plan(T0));
        assert_eq!(
            read,
            [
                WindowHistogram { counts: vec![1, 1, 1, 0], sum_seconds: 5.5, count: 3 },
                WindowHistogram { counts: vec![2, 1, 1, 0], sum_seconds: 5.8, count: 4 },
            ]
        );
        assert_eq!(read[1].quantile(&buckets, 0.5), Some(1.0));
        let totals = h.totals();
        assert_eq!(totals, HistogramTotals { counts: vec![2, 1, 1, 1], sum_seconds: 105.75, count: 5 });
        assert_eq!(totals.cumulative(), [2, 3, 4, 5]);
        // An hour later the windows are empty and the totals unchanged.
        let later = T0 + 3_600_000;
        let read = h.read_windows(&layout, &windows, &buckets, &windows.plan(later));
        assert!(read.iter().all(|w| w.count == 0 && w.sum_seconds == 0.0 && w.quantile(&buckets, 0.5).is_none()));
        assert_eq!(h.totals(), totals);
    }

    #[test]
    fn windowed_sum_is_rounded_to_tenths_and_saturates() {
        let buckets = small();
        let windows = Windows::parse(&["5m"]).unwrap();
        let layout = WindowedHistogram::layout(&windows, &buckets, &[0]);
        for (values_ms, sum_seconds) in [
            (vec![49], 0.0),
            (vec![50], 0.1),
            (vec![149, 150], 0.3),
            (vec![1_234_567], 1_234.6),
            // u32::MAX tenths per slot at most, however large the values.
            (vec![i64::MAX, 1_000], u32::MAX as f64 / 10.0),
        ] {
            let h = WindowedHistogram::new(&layout, &buckets);
            for &v in &values_ms {
                h.observe(&layout, &windows, &buckets, v, T0, T0);
            }
            assert_eq!(
                h.read_windows(&layout, &windows, &buckets, &windows.plan(T0))[0].sum_seconds,
                sum_seconds,
                "{values_ms:?}"
            );
        }
    }

    #[test]
    fn windowed_counts_saturate_per_bucket_without_touching_the_neighbour() {
        // Buckets 0 and 1 share a cell: 70,000 values in bucket 1 of one slot stop at 65,535
        // there and leave bucket 0 alone; the totals keep counting.
        let buckets = small();
        let windows = Windows::parse(&["5m"]).unwrap();
        let layout = WindowedHistogram::layout(&windows, &buckets, &[0]);
        assert_eq!(layout.dims(), 2 + 1);
        let h = WindowedHistogram::new(&layout, &buckets);
        h.observe(&layout, &windows, &buckets, 500, T0, T0);
        for _ in 0..70_000 {
            h.observe(&layout, &windows, &buckets, 1_500, T0, T0);
        }
        h.observe(&layout, &windows, &buckets, 500, T0, T0);
        let read = &h.read_windows(&layout, &windows, &buckets, &windows.plan(T0))[0];
        assert_eq!(read.counts, [2, 65_535, 0, 0]);
        assert_eq!(read.count, 65_537);
        assert_eq!(h.totals().counts, [2, 70_000, 0, 0]);
        // The next slot starts from zero.
        let next = T0 + 10_000;
        h.observe(&layout, &windows, &buckets, 1_500, next, next);
        let read = &h.read_windows(&layout, &windows, &buckets, &windows.plan(next))[0];
        assert_eq!(read.counts, [2, 65_536, 0, 0]);
    }

    #[test]
    fn all_time_counts_saturate() {
        let buckets = small();
        let windows = Windows::parse(&["5m"]).unwrap();
        let layout = WindowedHistogram::layout(&windows, &buckets, &[]);
        let h = WindowedHistogram::new(&layout, &buckets);
        h.counts[1].store(u32::MAX - 1, Ordering::Relaxed);
        for _ in 0..3 {
            h.observe(&layout, &windows, &buckets, 1_500, T0, T0);
        }
        h.observe(&layout, &windows, &buckets, 500, T0, T0);
        let totals = h.totals();
        assert_eq!(totals.counts, [1, u64::from(u32::MAX), 0, 0]);
        assert_eq!(totals.count, u64::from(u32::MAX) + 1);
    }

    #[test]
    fn merge_adds_and_default_is_the_identity() {
        let a = WindowHistogram { counts: vec![1, 0, 2, 0], sum_seconds: 3.5, count: 3 };
        let b = WindowHistogram { counts: vec![0, 4, 1, 1], sum_seconds: 100.0, count: 6 };
        let mut team = WindowHistogram::default();
        team.merge(&a);
        assert_eq!(team, a);
        team.merge(&b);
        assert_eq!(team, WindowHistogram { counts: vec![1, 4, 3, 1], sum_seconds: 103.5, count: 9 });
        let mut totals = HistogramTotals::default();
        totals.merge(&HistogramTotals { counts: vec![1, 0, 2, 0], sum_seconds: 3.5, count: 3 });
        totals.merge(&HistogramTotals { counts: vec![0, 4, 1, 1], sum_seconds: 100.0, count: 6 });
        assert_eq!(totals, HistogramTotals { counts: vec![1, 4, 3, 1], sum_seconds: 103.5, count: 9 });
        assert_eq!(totals.cumulative(), [1, 5, 8, 9]);
        assert_eq!(HistogramTotals::default().cumulative(), Vec::<u64>::new());
    }

    #[test]
    fn heap_bytes_per_manager() {
        let buckets = LogBuckets::latency();
        let windows = Windows::new(&WindowsConfig::default()).unwrap();
        // Stamp, 17 cells of two 16-bit bucket counts, sum.
        let slot = (1 + 17 + 1) * 4;
        let totals = 34 * 4;
        let hour = windows.index_of("1h").unwrap();
        let today = windows.index_of("today").unwrap();
        // Rings as long as their sliding windows (5m 30, 1h 30, 8h 32), one slot per calendar window.
        for (specs, slots, bytes) in [
            ((0..windows.specs().len()).collect::<Vec<_>>(), 30 + 30 + 32 + 2, 7_280),
            (vec![hour, today], 30 + 1, 2_492),
            (vec![hour], 30, 2_416),
            (vec![], 0, 136),
        ] {
            let layout = WindowedHistogram::layout(&windows, &buckets, &specs);
            let h = WindowedHistogram::new(&layout, &buckets);
            assert_eq!(h.heap_bytes(), WindowedHistogram::bytes_for(&layout, &buckets), "{specs:?}");
            assert_eq!(h.heap_bytes(), slots * slot + totals, "{specs:?}");
            assert_eq!(h.heap_bytes(), bytes, "{specs:?}");
        }
        assert_eq!(std::mem::size_of::<WindowedHistogram>(), 40);
    }

    /// The value at nearest rank `ceil(q × n)` (at least 1) of `sorted`, ascending.
    fn nearest_rank(sorted: &[i64], q: f64) -> i64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    proptest! {
        /// Against a reference model of every window.
        ///
        /// For a window, `certain` are the events it must count and `possible` those it may
        /// count: for a sliding window of length `L` on buckets of `b`, `(now - L + b, now]` and
        /// `(now - L, now]`; for calendar windows both are the exact range. The read count `n`
        /// must lie between the two, so the window holds `certain` plus `n - |certain|` of the
        /// edge events, unknown which. The true nearest-rank quantile of what the window holds
        /// then lies between the same rank of `certain` plus the smallest such edge values and of
        /// `certain` plus the largest. The estimate lies in the bucket of the true quantile (the
        /// `+Inf` bucket reading as its lower bound), so it must lie between the lower bound of
        /// the first candidate's bucket and the upper bound of the second's. Calendar windows
        /// have no edge events: there this is exactly "the true value's bucket".
        #[test]
        fn windows_match_reference(
            events in proptest::collection::vec((0i64..100_000_000, 0i64..7_200_000), 1..300),
            q_random in 0.0f64..=1.0,
        ) {
            let buckets = LogBuckets::latency();
            let windows = Windows::new(&WindowsConfig::default()).unwrap();
            let specs: Vec<usize> = (0..windows.specs().len()).collect();
            let layout = WindowedHistogram::layout(&windows, &buckets, &specs);
            let h = WindowedHistogram::new(&layout, &buckets);
            let now = T0;
            for &(value, age) in &events {
                h.observe(&layout, &windows, &buckets, value, now - age, now);
            }
            let read = h.read_windows(&layout, &windows, &buckets, &windows.plan(now));
            prop_assert_eq!(read.len(), windows.specs().len());
            let tz = windows.time_zone();
            for (spec, got) in windows.specs().iter().zip(&read) {
                let bucket_ms = windows.levels()[spec.level].bucket_ms;
                let (possible_from, certain_from, until) = match spec.kind {
                    WindowKind::Sliding { length_ms, .. } => {
                        (now - length_ms + 1, now - length_ms + bucket_ms + 1, now)
                    }
                    WindowKind::Today => {
                        let start = local_day_start(tz, now);
                        (start, start, now)
                    }
                    WindowKind::Shift(shift) => {
                        let (start, end) = shift_bounds(tz, shift, now);
                        (start, start, now.min(end - 1))
                    }
                };
                let mut certain: Vec<i64> = Vec::new();
                let mut edge: Vec<i64> = Vec::new();
                for &(value, age) in &events {
                    let at = now - age;
                    if (certain_from..=until).contains(&at) {
                        certain.push(value);
                    } else if (possible_from..=until).contains(&at) {
                        edge.push(value);
                    }
                }
                let n = got.count as usize;
                prop_assert!(
                    certain.len() <= n && n <= certain.len() + edge.len(),
                    "{}: count {} outside [{}, {}]", spec.label, n, certain.len(), certain.len() + edge.len()
                );
                prop_assert_eq!(got.counts.iter().sum::<u64>(), got.count);
                edge.sort_unstable();
                let extra = n - certain.len();
                let mut low: Vec<i64> = certain.iter().chain(&edge[..extra]).copied().collect();
                let mut high: Vec<i64> = certain.iter().chain(&edge[edge.len() - extra..]).copied().collect();
                low.sort_unstable();
                high.sort_unstable();
                // The sum lies between those of the fewest and most values the window may hold.
                let tenths = |values: &[i64]| values.iter().map(|v| ((v + 50) / 100) as u64).sum::<u64>();
                let got_tenths = (got.sum_seconds * 10.0).round() as u64;
                prop_assert!(
                    tenths(&low) <= got_tenths && got_tenths <= tenths(&high),
                    "{}: sum {} tenths outside [{}, {}]", spec.label, got_tenths, tenths(&low), tenths(&high)
                );
                for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0, q_random] {
                    let estimate = got.quantile(&buckets, q);
                    if n == 0 {
                        prop_assert_eq!(estimate, None);
                        continue;
                    }
                    let Some(estimate) = estimate else {
                        return Err(TestCaseError::fail(format!("{}: no estimate from {} events", spec.label, n)));
                    };
                    let lowest = buckets.index(nearest_rank(&low, q));
                    let highest = buckets.index(nearest_rank(&high, q));
                    let last = buckets.upper_bounds_ms().len() - 1;
                    let from = ms_to_seconds(buckets.lower_ms(lowest));
                    let to = ms_to_seconds(buckets.upper_bounds_ms()[highest.min(last)]);
                    prop_assert!(
                        from <= estimate && estimate <= to,
                        "{} q={}: estimate {} s outside [{}, {}] s", spec.label, q, estimate, from, to
                    );
                }
            }
            // The totals are exact.
            let totals = h.totals();
            let mut counts = vec![0u64; buckets.len()];
            for &(value, _) in &events {
                counts[buckets.index(value)] += 1;
            }
            let sum_ms: i64 = events.iter().map(|&(value, _)| value).sum();
            prop_assert_eq!(&totals.counts, &counts);
            prop_assert_eq!(totals.count, events.len() as u64);
            prop_assert_eq!(totals.sum_seconds, sum_ms as f64 / 1000.0);
            prop_assert_eq!(totals.cumulative().last().copied(), Some(events.len() as u64));
        }
    }
}
