//! Event-time windows, sliding and calendar, over multi-resolution rings of atomic buckets.
//!
//! # Windows and levels
//! The configured windows ([`Windows`]) are sliding windows (`5m`, `1h`, `8h`, ...) and the calendar
//! windows `today` and `shift`, aligned to a time zone. They are served by a few *levels*: rings of
//! equal-width time buckets. A sliding window of length `L` uses buckets of the largest "nice" width
//! `b` that divides `L` into at least 30 (`5m` → 10 s, `1h` → 2 min, `8h` → 15 min); calendar windows
//! use 15-minute buckets, the grid every time-zone offset and shift start is aligned to. Windows of
//! equal bucket width share one level, so one manager's state serves every window once per
//! resolution, never once per window.
//!
//! A [`Counters`] keeps a ring per level only for the sliding windows it serves, sized for the
//! longest of them. A calendar window needs no ring: it only ever reads its current period (the
//! local day, the current or last shift), so it keeps one cell per counter stamped with the
//! period it holds, and an event of an older period, which no read can reach any more, is
//! dropped. The calendar buckets are still what [`Windows::levels`] and the read plan describe
//! (15 minutes, enough for the longest day), for state that keeps its own per-bucket marks.
//!
//! # Reading
//! [`Windows::plan`] turns the wall clock into, per window, an inclusive range of bucket indices;
//! a read sums the slots whose stamp lies in the range. A sliding window reads its last `L / b`
//! buckets, the current partial one included: it never counts an event older than `L` and misses
//! at most one bucket's worth at the trailing edge (`docs/windows.md`). Calendar windows start on
//! a bucket boundary and are exact: their cell counts when its stamp is the first bucket of the
//! window's range.
//!
//! # Concurrency
//! [`Counters`] keeps, per slot, a stamp (the bucket index held) and `dims` counters, all `AtomicU32`
//! in one allocation. There is exactly one writer per `Counters` (the engine applies a partition's
//! records under that partition's ledger lock, and a manager's state belongs to one partition), so
//! writes are plain loads and stores, no read-modify-write instructions. Readers run concurrently:
//! a slot being recycled for a newer bucket is marked with a reserved stamp while its counters
//! are rewritten, and a reader that sees the stamp change under it skips the slot (it has left the
//! window anyway). A reader may see one event's counters half applied, never a torn counter.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;

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
    /// The window is shorter than one second, longer than 7 days, or not whole seconds.
    #[error("window {0:?} must be whole seconds between 1s and 7d")]
    OutOfRange(String),
    /// Two windows have the same length or label.
    #[error("window {0:?} is configured twice")]
    Duplicate(String),
    /// No window at all.
    #[error("at least one window must be configured")]
    Empty,
    /// The shift is not on the 15-minute grid or is not between 15 minutes and 24 hours long.
    #[error("shift must start on a quarter hour and last from 15m to 24h in whole quarter hours: {0}")]
    Shift(String),
}

/// An exported window label names no configured window.
#[derive(Debug, thiserror::Error)]
#[error("{family}: window {label:?} is not configured (configured: {configured})")]
pub struct ExportError {
    /// The family being configured.
    pub family: &'static str,
    /// The unknown label.
    pub label: String,
    /// The configured labels, for the message.
    pub configured: String,
}

/// What windows to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowsConfig {
    /// Sliding window lengths as written in the configuration (`"5m"`, `"1h"`, `"8h"`).
    pub sliding: Vec<String>,
    /// Keep `window="today"`: since local midnight.
    pub today: bool,
    /// Keep `window="shift"`: the current working shift, or the last one between shifts.
    pub shift: Option<ShiftConfig>,
    /// The time zone of `today` and `shift`.
    pub time_zone: Tz,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            sliding: vec!["5m".into(), "1h".into(), "8h".into()],
            today: true,
            shift: Some(ShiftConfig {
                start: NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default(),
                length_minutes: 540,
            }),
            time_zone: Tz::UTC,
        }
    }
}

/// A daily working shift in the configured time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShiftConfig {
    /// Local start time, on a quarter hour.
    pub start: NaiveTime,
    /// Length in minutes, a multiple of 15 up to 24 h. A shift may run past midnight.
    pub length_minutes: u32,
}

/// What a window covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `length_ms` of event time, read as `buckets` buckets of its level.
    Sliding {
        /// The window's length.
        length_ms: i64,
        /// How many buckets of its level a read covers.
        buckets: u32,
    },
    /// Since local midnight.
    Today,
    /// The current shift, or the last one between shifts.
    Shift(ShiftConfig),
}

/// One configured window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// The value of the `window` label.
    pub label: String,
    /// What it covers.
    pub kind: WindowKind,
    /// Index into [`Windows::levels`].
    pub level: usize,
}

/// One resolution: a ring of `slots` buckets of `bucket_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Width of one bucket.
    pub bucket_ms: i64,
    /// Buckets in the ring.
    pub slots: u32,
}

/// The configured windows and the levels that serve them.
#[derive(Debug, Clone, PartialEq)]
pub struct Windows {
    specs: Vec<WindowSpec>,
    levels: Vec<Level>,
    time_zone: Tz,
    largest_ms: i64,
    /// The local day and the shift period most recently looked up (see [`Windows::period`]).
    today_cache: PeriodCache,
    shift_cache: PeriodCache,
}

/// The quarter-hour indices `[start, next)` of one calendar period, packed in one word so that
/// apply threads share it without a lock. Zero: nothing cached. Not part of a [`Windows`]' value.
#[derive(Debug, Default)]
struct PeriodCache(AtomicU64);

impl PeriodCache {
    fn get(&self, quarter: i64) -> Option<i64> {
        let packed = self.0.load(Ordering::Relaxed);
        let (start, next) = ((packed >> 32) as i64, (packed & u64::from(u32::MAX)) as i64);
        (start <= quarter && quarter < next).then_some(start)
    }

    fn put(&self, start_ms: i64, next_ms: i64) {
        let (start, next) = (start_ms.div_euclid(QUARTER_HOUR), next_ms.div_euclid(QUARTER_HOUR));
        let on_grid = start_ms % QUARTER_HOUR == 0 && next_ms % QUARTER_HOUR == 0;
        if on_grid && 0 < start && start < next && next <= i64::from(u32::MAX) {
            self.0.store(((start as u64) << 32) | next as u64, Ordering::Relaxed);
        }
    }
}

impl Clone for PeriodCache {
    fn clone(&self) -> Self {
        PeriodCache(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl PartialEq for PeriodCache {
    fn eq(&self, _: &PeriodCache) -> bool {
        true
    }
}

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
/// Calendar windows use this grid: every time-zone offset in use is a multiple of it.
const QUARTER_HOUR: i64 = 15 * MINUTE;
/// Bucket widths a sliding window may get; each divides the next level's width where it can.
const NICE_BUCKETS: [i64; 12] = [
    SECOND,
    2 * SECOND,
    5 * SECOND,
    10 * SECOND,
    15 * SECOND,
    30 * SECOND,
    MINUTE,
    2 * MINUTE,
    3 * MINUTE,
    5 * MINUTE,
    QUARTER_HOUR,
    HOUR,
];
/// A sliding window gets at least this many buckets where a nice width allows.
const MIN_BUCKETS: i64 = 30;
/// The longest calendar day (a daylight-saving fall-back day), plus the current bucket.
const CALENDAR_SLOTS: u32 = (25 * HOUR / QUARTER_HOUR) as u32 + 1;
/// Counters one bucket may hold.
pub const MAX_DIMS: usize = 64;
/// Stamp of a slot never written.
const EMPTY: u32 = 0;
/// Stamp of a slot whose counters are being rewritten.
const RESETTING: u32 = u32::MAX;

impl Windows {
    /// Builds the windows and their levels.
    pub fn new(config: &WindowsConfig) -> Result<Windows, WindowError> {
        let mut specs: Vec<WindowSpec> = Vec::new();
        let mut levels: Vec<Level> = Vec::new();
        let mut level_for = |bucket_ms: i64, slots: u32| -> usize {
            if let Some(i) = levels.iter().position(|l| l.bucket_ms == bucket_ms) {
                levels[i].slots = levels[i].slots.max(slots);
                return i;
            }
            levels.push(Level { bucket_ms, slots });
            levels.len() - 1
        };
        let mut largest_ms = 0;
        for text in &config.sliding {
            let text = text.trim();
            let length = humantime::parse_duration(text)
                .map_err(|source| WindowError::Parse { text: text.to_owned(), source })?;
            let length_ms = length.as_millis();
            if !(1_000..=7 * 86_400_000).contains(&length_ms) || !length_ms.is_multiple_of(1_000) {
                return Err(WindowError::OutOfRange(text.to_owned()));
            }
            let length_ms = length_ms as i64;
            if specs.iter().any(|s| {
                s.label == text || matches!(s.kind, WindowKind::Sliding { length_ms: l, .. } if l == length_ms)
            }) {
                return Err(WindowError::Duplicate(text.to_owned()));
            }
            let bucket_ms = NICE_BUCKETS
                .iter()
                .rev()
                .copied()
                .find(|b| length_ms % b == 0 && length_ms / b >= MIN_BUCKETS)
                .unwrap_or(SECOND);
            let buckets = (length_ms / bucket_ms) as u32;
            let level = level_for(bucket_ms, buckets);
            largest_ms = largest_ms.max(length_ms);
            specs.push(WindowSpec { label: text.to_owned(), kind: WindowKind::Sliding { length_ms, buckets }, level });
        }
        if config.today {
            let level = level_for(QUARTER_HOUR, CALENDAR_SLOTS);
            largest_ms = largest_ms.max(25 * HOUR);
            specs.push(WindowSpec { label: "today".into(), kind: WindowKind::Today, level });
        }
        if let Some(shift) = config.shift {
            let on_grid =
                shift.start.second() == 0 && shift.start.nanosecond() == 0 && shift.start.minute().is_multiple_of(15);
            if !on_grid
                || shift.length_minutes == 0
                || shift.length_minutes > 24 * 60
                || !shift.length_minutes.is_multiple_of(15)
            {
                return Err(WindowError::Shift(format!("start {} length {} min", shift.start, shift.length_minutes)));
            }
            let level = level_for(QUARTER_HOUR, CALENDAR_SLOTS);
            largest_ms = largest_ms.max(25 * HOUR);
            specs.push(WindowSpec { label: "shift".into(), kind: WindowKind::Shift(shift), level });
        }
        if specs.is_empty() {
            return Err(WindowError::Empty);
        }
        Ok(Windows {
            specs,
            levels,
            time_zone: config.time_zone,
            largest_ms,
            today_cache: PeriodCache::default(),
            shift_cache: PeriodCache::default(),
        })
    }

    /// Sliding windows only, in UTC: `Windows::parse(&["5m", "1h"])`.
    pub fn parse<S: AsRef<str>>(sliding: &[S]) -> Result<Windows, WindowError> {
        Windows::new(&WindowsConfig {
            sliding: sliding.iter().map(|s| s.as_ref().to_owned()).collect(),
            today: false,
            shift: None,
            time_zone: Tz::UTC,
        })
    }

    /// The windows in configured order (sliding ones, then `today`, then `shift`).
    pub fn specs(&self) -> &[WindowSpec] {
        &self.specs
    }

    /// The resolutions serving them.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// The index of the window labelled `label`.
    pub fn index_of(&self, label: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.label == label)
    }

    /// How far back any window reaches: an event older than this (against the newest event time
    /// seen) can no longer count in any window.
    pub fn largest_ms(&self) -> i64 {
        self.largest_ms
    }

    /// Resolves a family's export list (window labels) to `(window index, label)` pairs. An
    /// unknown label is an error when `strict` (an explicit list), and skipped otherwise (a
    /// default list, which exports what exists of it).
    pub fn resolve_export(
        &self,
        family: &'static str,
        labels: &[String],
        strict: bool,
    ) -> Result<Vec<(usize, String)>, ExportError> {
        let mut resolved = Vec::with_capacity(labels.len());
        for label in labels {
            match self.index_of(label) {
                Some(spec) => resolved.push((spec, label.clone())),
                None if strict => {
                    let configured: Vec<&str> = self.specs.iter().map(|s| s.label.as_str()).collect();
                    return Err(ExportError { family, label: label.clone(), configured: configured.join(", ") });
                }
                None => {}
            }
        }
        Ok(resolved)
    }

    /// The time zone of the calendar windows.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// Which buckets each window covers at wall-clock time `now_ms`. Computed once per scrape and
    /// shared by every manager.
    pub fn plan(&self, now_ms: i64) -> ReadPlan {
        let ranges = self
            .specs
            .iter()
            .map(|spec| {
                let bucket_ms = self.levels[spec.level].bucket_ms;
                let now_index = bucket_index(now_ms, bucket_ms);
                match spec.kind {
                    WindowKind::Sliding { buckets, .. } => (now_index.saturating_sub(buckets - 1).max(1), now_index),
                    WindowKind::Today => {
                        let start = local_day_start(self.time_zone, now_ms);
                        (ceil_index(start, bucket_ms), now_index)
                    }
                    WindowKind::Shift(shift) => {
                        let (start, end) = shift_bounds(self.time_zone, shift, now_ms);
                        let last = if now_ms < end { now_index } else { bucket_index(end - 1, bucket_ms) };
                        (ceil_index(start, bucket_ms), last)
                    }
                }
            })
            .collect();
        ReadPlan { ranges }
    }

    /// For a calendar window: the stamp of the period whose read covers `ms` (the first bucket
    /// index of the window's range, as [`Windows::plan`] gives it), and whether `ms` lies inside
    /// it (always for `today`; not between shifts). `None` for a sliding window.
    fn period(&self, kind: WindowKind, ms: i64) -> Option<(u32, bool)> {
        let quarter = ms.div_euclid(QUARTER_HOUR);
        match kind {
            WindowKind::Sliding { .. } => None,
            WindowKind::Today => {
                let start = match self.today_cache.get(quarter) {
                    Some(start) => start * QUARTER_HOUR,
                    None => {
                        let date = local_date(self.time_zone, ms);
                        let start = local_instant(self.time_zone, date, NaiveTime::MIN);
                        let next = local_instant(self.time_zone, date.succ_opt().unwrap_or(date), NaiveTime::MIN);
                        self.today_cache.put(start, next);
                        start
                    }
                };
                Some((ceil_index(start, QUARTER_HOUR), true))
            }
            WindowKind::Shift(shift) => {
                let start = match self.shift_cache.get(quarter) {
                    Some(start) => start * QUARTER_HOUR,
                    None => {
                        let (start, _) = shift_bounds(self.time_zone, shift, ms);
                        let date = local_date(self.time_zone, start);
                        let next = local_instant(self.time_zone, date.succ_opt().unwrap_or(date), shift.start);
                        if ms < next {
                            self.shift_cache.put(start, next);
                        }
                        start
                    }
                };
                let inside = ms < start + i64::from(shift.length_minutes) * MINUTE;
                Some((ceil_index(start, QUARTER_HOUR), inside))
            }
        }
    }
}

/// For each window, the inclusive range of bucket indices a read covers at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    ranges: Vec<(u32, u32)>,
}

impl ReadPlan {
    /// The range of window `spec`.
    pub fn range(&self, spec: usize) -> Option<(u32, u32)> {
        self.ranges.get(spec).copied()
    }
}

fn bucket_index(ms: i64, bucket_ms: i64) -> u32 {
    // Bucket 0 is reserved as the empty stamp; times before 1970 and after 2106 clamp.
    ms.div_euclid(bucket_ms).clamp(1, i64::from(RESETTING - 1)) as u32
}

fn ceil_index(ms: i64, bucket_ms: i64) -> u32 {
    bucket_index(ms + bucket_ms - 1, bucket_ms)
}

/// The UTC instant of local `time` on `date`; in a daylight-saving gap, the first valid quarter
/// hour after it; when ambiguous, the earlier instant.
fn local_instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> i64 {
    let mut local = date.and_time(time);
    for _ in 0..16 {
        match tz.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) => return t.timestamp_millis(),
            chrono::LocalResult::Ambiguous(earliest, _) => return earliest.timestamp_millis(),
            chrono::LocalResult::None => local += chrono::Duration::minutes(15),
        }
    }
    // No zone has a gap of four hours; fall back to reading the local time as UTC.
    local.and_utc().timestamp_millis()
}

fn local_date(tz: Tz, ms: i64) -> NaiveDate {
    let utc = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    utc.with_timezone(&tz).date_naive()
}

/// Local midnight of the day containing `now_ms`.
pub fn local_day_start(tz: Tz, now_ms: i64) -> i64 {
    local_instant(tz, local_date(tz, now_ms), NaiveTime::MIN)
}

/// Start and end (exclusive) of the latest shift that started at or before `now_ms`.
pub fn shift_bounds(tz: Tz, shift: ShiftConfig, now_ms: i64) -> (i64, i64) {
    let date = local_date(tz, now_ms);
    let mut start = local_instant(tz, date, shift.start);
    if start > now_ms {
        start = local_instant(tz, date.pred_opt().unwrap_or(date), shift.start);
    }
    (start, start + i64::from(shift.length_minutes) * MINUTE)
}

/// Where one stream's counters live: a ring per level of the sliding windows it exports, a cell
/// per calendar window it exports, and how many counters a bucket has. Shared by every manager of
/// the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dims: usize,
    /// Per level of [`Windows::levels`]: the ring kept for the sliding windows on it, if any.
    rings: Vec<Option<Ring>>,
    /// The calendar windows served: `(index in Windows::specs, offset of its cell)`.
    periods: Vec<(usize, usize)>,
    /// The windows this layout serves.
    specs: Vec<usize>,
    cells: usize,
}

/// One level's ring in a [`Counters`]: `slots` buckets of `1 + dims` cells from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ring {
    offset: usize,
    slots: u32,
}

impl Layout {
    /// Keeps what windows `specs` (indices into [`Windows::specs`]) need, with `dims` counters per
    /// bucket.
    pub fn new(windows: &Windows, dims: usize, specs: &[usize]) -> Layout {
        assert!(dims <= MAX_DIMS, "a bucket holds at most {MAX_DIMS} counters");
        let kept: Vec<usize> = specs.iter().copied().filter(|&spec| spec < windows.specs.len()).collect();
        // A ring as long as the longest sliding window on its level.
        let mut slots = vec![0u32; windows.levels.len()];
        for &spec in &kept {
            let window = &windows.specs[spec];
            if let WindowKind::Sliding { buckets, .. } = window.kind {
                slots[window.level] = slots[window.level].max(buckets);
            }
        }
        let mut rings = vec![None; windows.levels.len()];
        let mut periods = Vec::new();
        let mut cells = 0;
        for &spec in &kept {
            let window = &windows.specs[spec];
            if matches!(window.kind, WindowKind::Sliding { .. }) {
                if rings[window.level].is_none() {
                    rings[window.level] = Some(Ring { offset: cells, slots: slots[window.level] });
                    cells += slots[window.level] as usize * (1 + dims);
                }
            } else if !periods.iter().any(|&(s, _)| s == spec) {
                periods.push((spec, cells));
                cells += 1 + dims;
            }
        }
        Layout { dims, rings, periods, specs: kept, cells }
    }

    /// Every window of `windows`.
    pub fn all(windows: &Windows, dims: usize) -> Layout {
        let specs: Vec<usize> = (0..windows.specs.len()).collect();
        Layout::new(windows, dims, &specs)
    }

    /// Counters per bucket.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The windows served, as indices into [`Windows::specs`].
    pub fn specs(&self) -> &[usize] {
        &self.specs
    }

    /// Bytes of one manager's [`Counters`] in this layout.
    pub fn bytes(&self) -> usize {
        self.cells * std::mem::size_of::<AtomicU32>()
    }
}

/// One manager's windowed counters for one stream. See the module documentation for the
/// single-writer rule.
#[derive(Debug)]
pub struct Counters {
    cells: Box<[AtomicU32]>,
}

impl Counters {
    /// Empty counters for `layout`.
    pub fn new(layout: &Layout) -> Counters {
        Counters { cells: (0..layout.cells).map(|_| AtomicU32::new(EMPTY)).collect() }
    }

    /// Adds `deltas` (one per dimension) at event time `event_ms`, seen at wall-clock `now_ms`, in
    /// every kept ring that still covers it and in the cell of every calendar window whose
    /// current period (at `now_ms`) holds it. An event time after `now_ms` counts as `now_ms`.
    /// Returns whether any of them took it.
    ///
    /// Only one thread may call this on a given `Counters` at a time.
    pub fn add(&self, layout: &Layout, windows: &Windows, event_ms: i64, now_ms: i64, deltas: &[u32]) -> bool {
        debug_assert_eq!(deltas.len(), layout.dims);
        self.add_with(layout, windows, event_ms, now_ms, |cells| {
            for (cell, delta) in cells.iter().zip(deltas) {
                cell.store(cell.load(Ordering::Relaxed).saturating_add(*delta), Ordering::Relaxed);
            }
        })
    }

    /// As [`Counters::add`], for counters of the caller's own encoding: `write` gets the `dims`
    /// cells of each bucket the event lands in (zeroed first when the bucket is new) and updates
    /// them with plain loads and stores. A reader may see its stores in any order.
    ///
    /// Only one thread may call this on a given `Counters` at a time.
    pub fn add_with(
        &self,
        layout: &Layout,
        windows: &Windows,
        event_ms: i64,
        now_ms: i64,
        mut write: impl FnMut(&[AtomicU32]),
    ) -> bool {
        let event_ms = event_ms.min(now_ms);
        let dims = layout.dims;
        let mut landed = false;
        for (level, ring) in windows.levels.iter().zip(&layout.rings) {
            let Some(ring) = *ring else { continue };
            let index = bucket_index(event_ms, level.bucket_ms);
            let now_index = bucket_index(now_ms, level.bucket_ms);
            if i64::from(index) <= i64::from(now_index) - i64::from(ring.slots) {
                continue;
            }
            let base = ring.offset + (index % ring.slots) as usize * (1 + dims);
            landed |= self.put(base, dims, index, &mut write);
        }
        for &(spec, offset) in &layout.periods {
            let kind = windows.specs[spec].kind;
            let Some((current, _)) = windows.period(kind, now_ms) else { continue };
            // Before the current period began: no read reaches it any more.
            if bucket_index(event_ms, QUARTER_HOUR) < current {
                continue;
            }
            match windows.period(kind, event_ms) {
                Some((stamp, true)) if stamp >= current => landed |= self.put(offset, dims, stamp, &mut write),
                _ => {}
            }
        }
        landed
    }

    /// Lets `write` update the bucket at `base` if it holds `index`, or recycles it for `index`
    /// (zeroed, then written) if it holds an older one. Returns whether it did either.
    fn put(&self, base: usize, dims: usize, index: u32, write: &mut impl FnMut(&[AtomicU32])) -> bool {
        let stamp = &self.cells[base];
        let values = &self.cells[base + 1..base + 1 + dims];
        let held = stamp.load(Ordering::Relaxed);
        if held == index {
            write(values);
        } else if held == EMPTY || held < index {
            stamp.store(RESETTING, Ordering::Relaxed);
            fence(Ordering::Release);
            for cell in values {
                cell.store(0, Ordering::Relaxed);
            }
            write(values);
            stamp.store(index, Ordering::Release);
        } else {
            // The bucket holds a newer one: the wall clock went backwards; it can no longer
            // represent the event.
            return false;
        }
        true
    }

    /// Copies the counters of the bucket at `base` into `copy` and returns its stamp, or `None`
    /// when it is being recycled (or was, while we read).
    fn load(&self, base: usize, copy: &mut [u32]) -> Option<u32> {
        let stamp = &self.cells[base];
        let before = stamp.load(Ordering::Acquire);
        if before == RESETTING {
            return None;
        }
        let values = &self.cells[base + 1..base + 1 + copy.len()];
        for (dst, cell) in copy.iter_mut().zip(values) {
            *dst = cell.load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        // Recycled for a newer bucket while we read: the old one has left the window.
        (stamp.load(Ordering::Relaxed) == before).then_some(before)
    }

    /// Adds into `out` (`layout.specs().len() * dims` values, window-major in the order of
    /// `layout.specs()`) the counters of every served window at the instant of `plan`.
    pub fn read(&self, layout: &Layout, windows: &Windows, plan: &ReadPlan, out: &mut [u64]) {
        let dims = layout.dims;
        debug_assert_eq!(out.len(), layout.specs.len() * dims);
        self.read_with(layout, windows, plan, |position, values| {
            for (sum, value) in out[position * dims..(position + 1) * dims].iter_mut().zip(values) {
                *sum += u64::from(*value);
            }
        });
    }

    /// Calls `visit(position, cells)` with a consistent copy of every bucket each served window
    /// covers at the instant of `plan`, `position` being the window's index in `layout.specs()`
    /// (a bucket serving two windows is visited once for each): for counters of the caller's own
    /// encoding (see [`Counters::add_with`]).
    pub fn read_with(&self, layout: &Layout, windows: &Windows, plan: &ReadPlan, mut visit: impl FnMut(usize, &[u32])) {
        let dims = layout.dims;
        let mut scratch = [0u32; MAX_DIMS];
        let copy = &mut scratch[..dims];
        for (level_index, ring) in layout.rings.iter().enumerate() {
            let Some(ring) = *ring else { continue };
            // The sliding windows on this level and their ranges; a level serves only a few.
            let mut on_level = [(0usize, 0u32, 0u32); 8];
            let mut count = 0;
            for (position, &spec) in layout.specs.iter().enumerate() {
                let window = &windows.specs[spec];
                let sliding = matches!(window.kind, WindowKind::Sliding { .. });
                if sliding && window.level == level_index && count < on_level.len() {
                    let (first, last) = plan.ranges[spec];
                    on_level[count] = (position, first, last);
                    count += 1;
                }
            }
            let on_level = &on_level[..count];
            let (lowest, highest) =
                on_level.iter().fold((u32::MAX, 0), |(lo, hi), &(_, first, last)| (lo.min(first), hi.max(last)));
            for slot in 0..ring.slots as usize {
                let base = ring.offset + slot * (1 + dims);
                let held = self.cells[base].load(Ordering::Relaxed);
                if held < lowest || held > highest {
                    continue;
                }
                let Some(held) = self.load(base, copy) else { continue };
                for &(position, first, last) in on_level {
                    if (first..=last).contains(&held) {
                        visit(position, copy);
                    }
                }
            }
        }
        for (position, &spec) in layout.specs.iter().enumerate() {
            let Some(&(_, offset)) = layout.periods.iter().find(|&&(s, _)| s == spec) else { continue };
            let (first, _) = plan.ranges[spec];
            if self.load(offset, copy) == Some(first) {
                visit(position, copy);
            }
        }
    }

    /// Adds into `out` the per-bucket values of counter `dim` over the buckets sliding window
    /// `spec` (an index into [`Windows::specs`]) covers at the instant of `plan`, oldest first:
    /// `out[i]` is bucket `first + i` of the window's range, the last one the current partial
    /// bucket. `out` is grown to the range's length. The values sum to what [`Counters::read`]
    /// gives for the window. Nothing is added for a calendar window (it keeps no buckets) or
    /// when the layout does not keep the window's level.
    pub fn series(
        &self,
        layout: &Layout,
        windows: &Windows,
        plan: &ReadPlan,
        spec: usize,
        dim: usize,
        out: &mut Vec<u64>,
    ) {
        let (Some(window), Some((first, last))) = (windows.specs.get(spec), plan.range(spec)) else { return };
        if !matches!(window.kind, WindowKind::Sliding { .. }) {
            return;
        }
        let Some(ring) = layout.rings.get(window.level).copied().flatten() else { return };
        if dim >= layout.dims || last < first {
            return;
        }
        let length = (last - first + 1) as usize;
        if out.len() < length {
            out.resize(length, 0);
        }
        for (position, index) in (first..=last).enumerate() {
            let base = ring.offset + (index % ring.slots) as usize * (1 + layout.dims);
            let stamp = &self.cells[base];
            if stamp.load(Ordering::Acquire) != index {
                continue;
            }
            let value = self.cells[base + 1 + dim].load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            // Recycled for a newer bucket while we read: the old one has left the window.
            if stamp.load(Ordering::Relaxed) == index {
                out[position] += u64::from(value);
            }
        }
    }

    /// Bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.cells.len() * std::mem::size_of::<AtomicU32>()
    }
}

/// Parses a whole-minute duration for shift lengths (`"9h"`, `"8h30m"`).
pub fn parse_minutes(text: &str) -> Option<u32> {
    let duration: Duration = humantime::parse_duration(text.trim()).ok()?;
    duration.as_secs().is_multiple_of(60).then_some((duration.as_secs() / 60) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-11-23T12:00:00Z
    const T0: i64 = 1_795_435_200_000;

    fn config(sliding: &[&str], today: bool, shift: Option<(u32, u32, u32)>, tz: Tz) -> WindowsConfig {
        WindowsConfig {
            sliding: sliding.iter().map(|s| s.to_string()).collect(),
            today,
            shift: shift.map(|(h, m, length_minutes)| ShiftConfig {
                start: NaiveTime::from_hms_opt(h, m, 0).unwrap(),
                length_minutes,
            }),
            time_zone: tz,
        }
    }

    fn read_one(windows: &Windows, layout: &Layout, counters: &Counters, label: &str, now: i64) -> u64 {
        let mut out = vec![0; layout.specs().len() * layout.dims()];
        counters.read(layout, windows, &windows.plan(now), &mut out);
        let position = layout.specs().iter().position(|&s| windows.specs()[s].label == label).unwrap();
        out[position * layout.dims()]
    }

    #[test]
    fn default_levels() {
        let windows = Windows::new(&WindowsConfig::default()).unwrap();
        let levels: Vec<(i64, u32)> = windows.levels().iter().map(|l| (l.bucket_ms, l.slots)).collect();
        assert_eq!(levels, vec![(10_000, 30), (120_000, 30), (900_000, 101)]);
        let labels: Vec<&str> = windows.specs().iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["5m", "1h", "8h", "today", "shift"]);
        assert_eq!(windows.largest_ms(), 25 * HOUR);
        // Calls keep 7 counters per bucket: rings of 30 (5m), 30 (1h) and 32 (8h) buckets and a
        // cell each for today and shift, 8 cells of 4 bytes per bucket.
        assert_eq!(Layout::all(&windows, 7).bytes(), (30 + 30 + 32 + 2) * 8 * 4);
        // The calendar windows alone keep no ring, only their cells.
        let calendar = [windows.index_of("today").unwrap(), windows.index_of("shift").unwrap()];
        assert_eq!(Layout::new(&windows, 7, &calendar).bytes(), 2 * 8 * 4);
    }

    #[test]
    fn bucket_widths() {
        for (text, bucket_ms, buckets) in [
            ("5m", 10_000, 30),
            ("1h", 120_000, 30),
            ("8h", 900_000, 32),
            ("7s", 1_000, 7),
            ("61s", 1_000, 61),
            ("90s", 2_000, 45),
            ("24h", 900_000, 96),
            ("7d", 3_600_000, 168),
        ] {
            let windows = Windows::parse(&[text]).unwrap();
            let WindowKind::Sliding { buckets: got, .. } = windows.specs()[0].kind else { panic!() };
            let level = windows.levels()[windows.specs()[0].level];
            assert_eq!((level.bucket_ms, got), (bucket_ms, buckets), "{text}");
        }
    }

    #[test]
    fn bad_windows_are_refused() {
        assert!(matches!(Windows::parse(&["soon"]), Err(WindowError::Parse { .. })));
        assert!(matches!(Windows::parse(&["10ms"]), Err(WindowError::OutOfRange(_))));
        assert!(matches!(Windows::parse(&["1500ms"]), Err(WindowError::OutOfRange(_))));
        assert!(matches!(Windows::parse(&["8d"]), Err(WindowError::OutOfRange(_))));
        assert!(matches!(Windows::parse(&["5m", "300s"]), Err(WindowError::Duplicate(_))));
        assert!(matches!(Windows::parse::<&str>(&[]), Err(WindowError::Empty)));
        for shift in [(9, 10, 540), (9, 0, 0), (9, 0, 1445), (9, 0, 500)] {
            assert!(matches!(Windows::new(&config(&[], false, Some(shift), Tz::UTC)), Err(WindowError::Shift(_))));
        }
    }

    #[test]
    fn series_lists_the_buckets_a_window_sums() {
        let windows = Windows::parse(&["5m", "1h"]).unwrap();
        let layout = Layout::all(&windows, 2);
        let c = Counters::new(&layout);
        // 1h is kept in 2-minute buckets: 30 of them, the last the current partial one.
        for (ago_ms, deltas) in [(0, [1, 10]), (1_000, [2, 20]), (3 * 60_000, [4, 40])] {
            assert!(c.add(&layout, &windows, T0 - ago_ms, T0, &deltas));
        }
        // Older than the ring of 30 two-minute buckets: no level keeps it.
        assert!(!c.add(&layout, &windows, T0 - 59 * 60_000, T0, &[8, 80]));
        let spec = windows.index_of("1h").unwrap();
        let plan = windows.plan(T0 + 30_000);
        let mut series = Vec::new();
        c.series(&layout, &windows, &plan, spec, 0, &mut series);
        assert_eq!(series.len(), 30);
        // T0 is on a 2-minute boundary: T0 and T0 + 30 s are in the last bucket, T0 - 1 s in the
        // one before, T0 - 3 min two before that.
        let mut expected = vec![0; 30];
        expected[29] = 1;
        expected[28] = 2;
        expected[27] = 4;
        assert_eq!(series, expected);
        assert_eq!(series.iter().sum::<u64>(), read_one(&windows, &layout, &c, "1h", T0 + 30_000));
        let mut talk = Vec::new();
        c.series(&layout, &windows, &plan, spec, 1, &mut talk);
        assert_eq!(talk.iter().sum::<u64>(), 70);
        // Adding into an existing series (a manager seen through two partition groups) sums.
        c.series(&layout, &windows, &plan, spec, 0, &mut series);
        assert_eq!(series[29], 2);
        // A level the layout does not keep adds nothing.
        let only_5m = Layout::new(&windows, 2, &[windows.index_of("5m").unwrap()]);
        let mut none = Vec::new();
        Counters::new(&only_5m).series(&only_5m, &windows, &plan, spec, 0, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn events_decay_out_of_sliding_windows() {
        let windows = Windows::parse(&["5m", "1h"]).unwrap();
        let layout = Layout::all(&windows, 1);
        let c = Counters::new(&layout);
        assert!(c.add(&layout, &windows, T0 - 10_000, T0, &[1]));
        assert_eq!(read_one(&windows, &layout, &c, "5m", T0), 1);
        // T0 - 10 s lies in the bucket [T0 - 10 s, T0): it leaves the 5m window 5 minutes later.
        assert_eq!(read_one(&windows, &layout, &c, "5m", T0 + 289_999), 1);
        assert_eq!(read_one(&windows, &layout, &c, "5m", T0 + 290_000), 0);
        assert_eq!(read_one(&windows, &layout, &c, "1h", T0 + 290_000), 1);
        assert_eq!(read_one(&windows, &layout, &c, "1h", T0 + 3_600_000), 0);
    }

    #[test]
    fn late_events_land_only_where_covered() {
        let windows = Windows::parse(&["5m", "1h"]).unwrap();
        let layout = Layout::all(&windows, 1);
        let c = Counters::new(&layout);
        assert!(c.add(&layout, &windows, T0 - 600_000, T0, &[1]));
        assert!(!c.add(&layout, &windows, T0 - 7_200_000, T0, &[1]));
        assert_eq!((read_one(&windows, &layout, &c, "5m", T0), read_one(&windows, &layout, &c, "1h", T0)), (0, 1));
    }

    #[test]
    fn future_events_count_as_now_and_never_move_the_window() {
        let windows = Windows::parse(&["5m"]).unwrap();
        let layout = Layout::all(&windows, 1);
        let c = Counters::new(&layout);
        c.add(&layout, &windows, T0 - 290_000, T0, &[1]);
        // Far ahead: counted at T0, and the old event is still there.
        c.add(&layout, &windows, T0 + 86_400_000, T0, &[1]);
        assert_eq!(read_one(&windows, &layout, &c, "5m", T0), 2);
    }

    #[test]
    fn reused_slot_is_cleared() {
        let windows = Windows::parse(&["5m", "1h"]).unwrap();
        let layout = Layout::all(&windows, 2);
        let c = Counters::new(&layout);
        c.add(&layout, &windows, T0, T0, &[5, 1]);
        let later = T0 + 300_000;
        c.add(&layout, &windows, later, later, &[1, 0]);
        assert_eq!(read_one(&windows, &layout, &c, "5m", later), 1);
        assert_eq!(read_one(&windows, &layout, &c, "1h", later), 6);
    }

    #[test]
    fn bucket_boundary_belongs_to_the_newer_bucket() {
        let windows = Windows::parse(&["1m"]).unwrap();
        let layout = Layout::all(&windows, 1);
        let c = Counters::new(&layout);
        let boundary = (T0 / 2_000) * 2_000;
        c.add(&layout, &windows, boundary, boundary, &[1]);
        assert_eq!(read_one(&windows, &layout, &c, "1m", boundary + 59_999), 1);
        assert_eq!(read_one(&windows, &layout, &c, "1m", boundary + 60_000), 0);
        c.add(&layout, &windows, boundary - 1, boundary, &[1]);
        assert_eq!(read_one(&windows, &layout, &c, "1m", boundary + 57_999), 2);
        assert_eq!(read_one(&windows, &layout, &c, "1m", boundary + 58_000), 1);
    }

    #[test]
    fn layout_keeps_only_the_levels_of_its_windows() {
        let windows = Windows::new(&WindowsConfig::default()).unwrap();
        let hour_only = Layout::new(&windows, 3, &[windows.index_of("1h").unwrap()]);
        assert_eq!(hour_only.bytes(), 30 * 4 * 4);
        let c = Counters::new(&hour_only);
        c.add(&hour_only, &windows, T0, T0, &[1, 2, 3]);
        let mut out = [0u64; 3];
        c.read(&hour_only, &windows, &windows.plan(T0), &mut out);
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn today_follows_local_midnight_across_dst() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let windows = Windows::new(&config(&[], true, None, berlin)).unwrap();
        let layout = Layout::all(&windows, 1);
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        // 2026-10-25 is 25 hours long in Berlin: midnight is 22:00Z the day before.
        let c = Counters::new(&layout);
        let now = at("2026-10-25T23:30:00+01:00");
        c.add(&layout, &windows, at("2026-10-24T23:59:59+02:00"), now, &[1]); // yesterday
        c.add(&layout, &windows, at("2026-10-25T00:00:00+02:00"), now, &[1]); // first instant of the day
        c.add(&layout, &windows, at("2026-10-25T02:30:00+02:00"), now, &[1]); // first 02:30
        c.add(&layout, &windows, at("2026-10-25T02:30:00+01:00"), now, &[1]); // second 02:30
        c.add(&layout, &windows, at("2026-10-25T23:29:00+01:00"), now, &[1]);
        assert_eq!(read_one(&windows, &layout, &c, "today", now), 4);
        // Past midnight the day starts over.
        assert_eq!(read_one(&windows, &layout, &c, "today", at("2026-10-26T00:00:00+01:00")), 0);
        // 2026-03-29 is 23 hours long.
        let c = Counters::new(&layout);
        let now = at("2026-03-29T23:59:00+02:00");
        c.add(&layout, &windows, at("2026-03-28T23:59:00+01:00"), now, &[1]);
        c.add(&layout, &windows, at("2026-03-29T00:00:00+01:00"), now, &[1]);
        c.add(&layout, &windows, at("2026-03-29T03:00:00+02:00"), now, &[1]);
        assert_eq!(read_one(&windows, &layout, &c, "today", now), 2);
    }

    #[test]
    fn shift_windows_cover_the_current_or_last_shift() {
        let moscow: Tz = "Europe/Moscow".parse().unwrap();
        // A night shift from 22:00 for 10 hours, crossing midnight.
        let windows = Windows::new(&config(&[], false, Some((22, 0, 600)), moscow)).unwrap();
        let layout = Layout::all(&windows, 1);
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        let c = Counters::new(&layout);
        let now = at("2026-11-24T03:00:00+03:00");
        for t in ["2026-11-23T21:59:00+03:00", "2026-11-23T22:00:00+03:00", "2026-11-24T02:59:00+03:00"] {
            c.add(&layout, &windows, at(t), now, &[1]);
        }
        assert_eq!(read_one(&windows, &layout, &c, "shift", now), 2);
        // After the shift ended (08:00), until the next starts, the last shift's total stays.
        let c2 = Counters::new(&layout);
        let later = at("2026-11-24T12:00:00+03:00");
        c2.add(&layout, &windows, at("2026-11-24T07:59:00+03:00"), later, &[1]);
        c2.add(&layout, &windows, at("2026-11-24T08:00:00+03:00"), later, &[1]);
        assert_eq!(read_one(&windows, &layout, &c2, "shift", later), 1);
        assert_eq!(read_one(&windows, &layout, &c2, "shift", at("2026-11-24T22:00:00+03:00")), 0);
    }

    #[test]
    fn shift_start_in_a_dst_gap_moves_to_the_first_valid_quarter_hour() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let shift = ShiftConfig { start: NaiveTime::from_hms_opt(2, 30, 0).unwrap(), length_minutes: 60 };
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        let (start, end) = shift_bounds(berlin, shift, at("2026-03-29T05:00:00+02:00"));
        assert_eq!(start, at("2026-03-29T03:00:00+02:00"));
        assert_eq!(end - start, HOUR);
    }

    #[test]
    fn concurrent_reads_never_see_torn_or_foreign_buckets() {
        use std::sync::atomic::{AtomicBool, AtomicI64};
        use std::sync::Arc;
        let windows = Windows::parse(&["10s"]).unwrap();
        let layout = Layout::all(&windows, 2);
        let c = Arc::new(Counters::new(&layout));
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicI64::new(T0));
        let reader = {
            let (c, windows, layout) = (c.clone(), windows.clone(), layout.clone());
            let (stop, progress) = (stop.clone(), progress.clone());
            std::thread::spawn(move || {
                let mut nonzero = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut out = [0u64; 2];
                    c.read(&layout, &windows, &windows.plan(progress.load(Ordering::Relaxed)), &mut out);
                    // A 10 s window at one event per 10 ms never holds more than 1000 events (and
                    // the writer may be a few ahead of the published progress): a recycled slot
                    // read as if it still held its old bucket would break this.
                    assert!(out[0] <= 1_010 && out[1] <= 2_020, "{out:?}");
                    // Each event adds (1, 2). Counters are read one after the other while the
                    // writer goes on, so the second may be a few events ahead, never behind.
                    assert!(out[1] + 2 >= 2 * out[0] && out[1] <= 2 * out[0] + 200, "{out:?}");
                    nonzero += u64::from(out[0] > 0);
                }
                nonzero
            })
        };
        for i in 0..300_000i64 {
            let t = T0 + i * 10;
            c.add(&layout, &windows, t, t, &[1, 2]);
            progress.store(t, Ordering::Relaxed);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "the reader never saw the writer's buckets");
        let mut out = [0u64; 2];
        c.read(&layout, &windows, &windows.plan(progress.load(Ordering::Relaxed)), &mut out);
        assert_eq!(out, [1_000, 2_000]);
    }

    proptest! {
        /// Each sparkline point is exactly the events of its bucket (a brute-force count by
        /// bucket index), and the points sum to the window's read, at any later instant.
        #[test]
        fn series_matches_reference_per_bucket(
            events in proptest::collection::vec((0i64..8_000_000, 1u32..5), 0..200),
            read_after in 0i64..4_000_000,
        ) {
            let windows = Windows::parse(&["5m", "1h"]).unwrap();
            let layout = Layout::all(&windows, 1);
            let c = Counters::new(&layout);
            let mut now = T0;
            let mut applied = Vec::new();
            for (off, delta) in &events {
                now += 1_000;
                let event = (now - off).min(now);
                c.add(&layout, &windows, event, now, &[*delta]);
                applied.push((event, *delta));
            }
            let read = now + read_after;
            let plan = windows.plan(read);
            for label in ["5m", "1h"] {
                let spec = windows.index_of(label).unwrap();
                let bucket_ms = windows.levels()[windows.specs()[spec].level].bucket_ms;
                let (first, last) = plan.range(spec).unwrap();
                let mut series = Vec::new();
                c.series(&layout, &windows, &plan, spec, 0, &mut series);
                prop_assert_eq!(series.len(), (last - first + 1) as usize);
                for (i, point) in series.iter().enumerate() {
                    let index = i64::from(first) + i as i64;
                    let expected: u64 = applied
                        .iter()
                        .filter(|(at, _)| at.div_euclid(bucket_ms) == index)
                        .map(|(_, delta)| u64::from(*delta))
                        .sum();
                    prop_assert_eq!(*point, expected, "{} bucket {}", label, index);
                }
                prop_assert_eq!(series.iter().sum::<u64>(), read_one(&windows, &layout, &c, label, read));
            }
        }

        /// Against a brute-force count: a sliding window never reports more than the events in
        /// `(now - L, now]` and never less than those in `(now - L + bucket, now]`.
        #[test]
        fn sliding_matches_reference_within_one_bucket(
            offsets in proptest::collection::vec(0i64..4_000_000, 0..200),
            read_after in 0i64..4_000_000,
        ) {
            let windows = Windows::parse(&["5m", "1h"]).unwrap();
            let layout = Layout::all(&windows, 1);
            let c = Counters::new(&layout);
            let mut now = T0;
            let mut applied = Vec::new();
            for off in &offsets {
                now += 1_000;
                let event = now - off;
                c.add(&layout, &windows, event, now, &[1]);
                applied.push(event);
            }
            let read = now + read_after;
            let mut out = vec![0; 2];
            c.read(&layout, &windows, &windows.plan(read), &mut out);
            for (i, spec) in windows.specs().iter().enumerate() {
                let WindowKind::Sliding { length_ms, .. } = spec.kind else { unreachable!() };
                let bucket_ms = windows.levels()[spec.level].bucket_ms;
                let upper = applied.iter().filter(|&&e| e > read - length_ms && e <= read).count() as u64;
                let lower = applied.iter().filter(|&&e| e > read - length_ms + bucket_ms && e <= read).count() as u64;
                prop_assert!(out[i] <= upper, "window {} got {} > {}", spec.label, out[i], upper);
                prop_assert!(out[i] >= lower, "window {} got {} < {}", spec.label, out[i], lower);
            }
        }

        /// Calendar windows against a reference model, with the wall clock moving on between
        /// events (across a daylight-saving change), late and future events, and a night shift
        /// crossing midnight: at any read after the adds, `today` counts the events (at their
        /// time clamped to the wall clock of their add) since local midnight and `shift` those
        /// inside the current or last shift.
        #[test]
        fn calendar_windows_match_reference_as_the_clock_moves(
            steps in proptest::collection::vec((0i64..(2 * HOUR), -HOUR..(30 * HOUR)), 1..150),
            reads in proptest::collection::vec(0i64..(30 * HOUR), 1..4),
            sliding_8h in any::<bool>(),
        ) {
            let berlin: Tz = "Europe/Berlin".parse().unwrap();
            let sliding: &[&str] = if sliding_8h { &["8h"] } else { &[] };
            let windows = Windows::new(&config(sliding, true, Some((22, 0, 600)), berlin)).unwrap();
            let layout = Layout::all(&windows, 2);
            let c = Counters::new(&layout);
            // 2026-10-24 12:00Z: the steps cross the fall-back night of 2026-10-25.
            let mut now = 1_792_843_200_000;
            let mut applied = Vec::new();
            for (advance, late) in &steps {
                now += advance;
                let event = now - late;
                c.add(&layout, &windows, event, now, &[1, 3]);
                applied.push(event.min(now));
            }
            for read in reads.iter().map(|r| now + r).chain([now]) {
                let midnight = local_day_start(berlin, read);
                let today = applied.iter().filter(|&&e| e >= midnight && e <= read).count() as u64;
                let shift = ShiftConfig { start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(), length_minutes: 600 };
                let (start, end) = shift_bounds(berlin, shift, read);
                let in_shift = applied.iter().filter(|&&e| e >= start && e < end && e <= read).count() as u64;
                let mut out = vec![0; layout.specs().len() * 2];
                c.read(&layout, &windows, &windows.plan(read), &mut out);
                let at = |label: &str| layout.specs().iter().position(|&s| windows.specs()[s].label == label).unwrap() * 2;
                prop_assert_eq!((out[at("today")], out[at("today") + 1]), (today, 3 * today), "today at {}", read);
                prop_assert_eq!((out[at("shift")], out[at("shift") + 1]), (in_shift, 3 * in_shift), "shift at {}", read);
            }
        }

        /// Calendar windows are exact: `today` equals the count of events since local midnight.
        #[test]
        fn today_is_exact(
            offsets in proptest::collection::vec(0i64..(30 * HOUR), 0..100),
            now_offset in 0i64..(48 * HOUR),
        ) {
            let tz: Tz = "Asia/Kathmandu".parse().unwrap(); // +05:45: a quarter-hour offset
            let windows = Windows::new(&config(&[], true, None, tz)).unwrap();
            let layout = Layout::all(&windows, 1);
            let c = Counters::new(&layout);
            let now = T0 + now_offset;
            let mut events: Vec<i64> = offsets.iter().map(|o| now - o).collect();
            events.sort_unstable();
            for &e in &events {
                c.add(&layout, &windows, e, now, &[1]);
            }
            let midnight = local_day_start(tz, now);
            let expected = events.iter().filter(|&&e| e >= midnight && e <= now).count() as u64;
            prop_assert_eq!(read_one(&windows, &layout, &c, "today", now), expected);
        }
    }
}
