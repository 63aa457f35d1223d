//! Working hours: a weekly schedule in a time zone, and the working time between two instants.
//!
//! A schedule lists, per weekday, zero or more local intervals `HH:MM-HH:MM` (start before end,
//! `24:00` allowed as an end, so a day can run to midnight; a night shift is written as two
//! intervals, `22:00-24:00` on one day and `00:00-06:00` on the next). Intervals of one day must
//! not overlap; they may touch.
//!
//! [`WorkingHours::working_ms`] counts the real elapsed time between two instants that falls
//! inside the schedule. On daylight-saving days the intervals are turned into instants with the
//! zone's rules, so the working time is what a wall clock in an office would show as elapsed:
//! - a local time that does not exist (the hour skipped in spring) is taken as the first instant
//!   after the gap, so `01:00-04:00` on a day that skips 02:00-03:00 lasts 2 hours;
//! - a local time that exists twice (the hour repeated in autumn) is taken at its earlier instant,
//!   so `01:00-04:00` on a day that repeats 02:00-03:00 lasts 4 hours, while an interval that ends
//!   inside the repeated hour ends at its first pass. No instant is ever counted twice.

use std::fmt;

use chrono::{Datelike, LocalResult, NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;

const MINUTES_PER_DAY: u16 = 24 * 60;
const WEEKDAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

/// A working-hours schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkingHoursError {
    /// The time zone is not an IANA name.
    #[error("working hours: unknown time zone {0:?} (use an IANA name such as \"Europe/Moscow\" or \"UTC\")")]
    TimeZone(String),
    /// The weekday is not one of `mon`..`sun` or their full English names.
    #[error("working hours: unknown weekday {0:?} (use mon, tue, wed, thu, fri, sat, sun or the full English name)")]
    Weekday(String),
    /// The same weekday is given twice (`mon` and `monday`, say).
    #[error("working hours: {0} is listed twice")]
    DuplicateWeekday(&'static str),
    /// An interval is not `HH:MM-HH:MM` with a start before its end within one day.
    #[error("working hours: {day}: {text:?} is not an interval \"HH:MM-HH:MM\" from 00:00 to 24:00 with the start before the end")]
    Interval {
        /// The weekday.
        day: &'static str,
        /// What was given.
        text: String,
    },
    /// Two intervals of one day overlap.
    #[error("working hours: {day}: intervals {first} and {second} overlap")]
    Overlap {
        /// The weekday.
        day: &'static str,
        /// The earlier interval.
        first: String,
        /// The interval that starts inside it.
        second: String,
    },
    /// No weekday has any working time.
    #[error("working hours: the schedule has no working time in the week")]
    Empty,
}

/// A weekly schedule of working intervals in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingHours {
    time_zone: Tz,
    /// Per weekday, Monday first: `(start, end)` minutes of the local day, ascending, disjoint,
    /// `end <= 1440`.
    days: [Vec<(u16, u16)>; 7],
}

impl Default for WorkingHours {
    /// Monday to Friday, 09:00-18:00, UTC.
    fn default() -> Self {
        let office = vec![(9 * 60, 18 * 60)];
        WorkingHours {
            time_zone: Tz::UTC,
            days: [office.clone(), office.clone(), office.clone(), office.clone(), office, Vec::new(), Vec::new()],
        }
    }
}

impl WorkingHours {
    /// Parses a schedule: an IANA time zone and, per weekday (`mon`, `tue`, ... or `monday`, ...,
    /// case-insensitive), a list of `"HH:MM-HH:MM"` intervals. Weekdays not listed have no working
    /// time; so does a weekday listed with an empty list.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use salespulse_messages::WorkingHours;
    /// let mut week = BTreeMap::new();
    /// for day in ["mon", "tue", "wed", "thu", "fri"] {
    ///     week.insert(day.to_string(), vec!["09:00-13:00".to_string(), "14:00-18:00".to_string()]);
    /// }
    /// let hours = WorkingHours::parse("Europe/Moscow", &week).unwrap();
    /// assert_eq!(hours.time_zone().name(), "Europe/Moscow");
    /// ```
    pub fn parse<I, D, L>(time_zone: &str, schedule: I) -> Result<WorkingHours, WorkingHoursError>
    where
        I: IntoIterator<Item = (D, L)>,
        D: AsRef<str>,
        L: IntoIterator,
        L::Item: AsRef<str>,
    {
        let time_zone: Tz = time_zone.trim().parse().map_err(|_| WorkingHoursError::TimeZone(time_zone.to_owned()))?;
        let mut days: [Option<Vec<(u16, u16)>>; 7] = Default::default();
        for (day, intervals) in schedule {
            let index = weekday(day.as_ref())?;
            let name = WEEKDAYS[index];
            if days[index].is_some() {
                return Err(WorkingHoursError::DuplicateWeekday(name));
            }
            let mut parsed = Vec::new();
            for text in intervals {
                let text = text.as_ref();
                let interval =
                    interval(text).ok_or_else(|| WorkingHoursError::Interval { day: name, text: text.to_owned() })?;
                parsed.push(interval);
            }
            parsed.sort_unstable();
            if let Some(pair) = parsed.windows(2).find(|pair| pair[1].0 < pair[0].1) {
                return Err(WorkingHoursError::Overlap {
                    day: name,
                    first: Interval(pair[0]).to_string(),
                    second: Interval(pair[1]).to_string(),
                });
            }
            days[index] = Some(parsed);
        }
        let days = days.map(Option::unwrap_or_default);
        if days.iter().all(Vec::is_empty) {
            return Err(WorkingHoursError::Empty);
        }
        Ok(WorkingHours { time_zone, days })
    }

    /// The schedule's time zone.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The intervals of `weekday` (0 = Monday) as `"HH:MM-HH:MM"`.
    pub fn intervals(&self, weekday: usize) -> Vec<String> {
        self.days.get(weekday).map(|day| day.iter().map(|&i| Interval(i).to_string()).collect()).unwrap_or_default()
    }

    /// Milliseconds of `[from_ms, to_ms)` that lie inside the schedule; 0 when `to_ms <= from_ms`.
    /// Never more than `to_ms - from_ms`. Costs one pass over the local days the span touches.
    pub fn working_ms(&self, from_ms: i64, to_ms: i64) -> i64 {
        if to_ms <= from_ms {
            return 0;
        }
        let first = local_date(self.time_zone, from_ms);
        let last = local_date(self.time_zone, to_ms);
        // Start a day early: an interval ending at 24:00 belongs to the day before the one its
        // end instant falls in.
        let mut date = first.pred_opt().unwrap_or(first);
        let mut total = 0i64;
        loop {
            let day = date.weekday().num_days_from_monday() as usize;
            for &(start, end) in self.days.get(day).map(Vec::as_slice).unwrap_or_default() {
                let begin = self.instant(date, start).max(from_ms);
                let finish = self.instant(date, end).min(to_ms);
                if finish > begin {
                    total += finish - begin;
                }
            }
            if date >= last {
                break;
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        total
    }

    /// The instant of local `minute` (0..=1440) of `date`: in a daylight-saving gap the first
    /// instant after it, when repeated the earlier one.
    fn instant(&self, date: NaiveDate, minute: u16) -> i64 {
        let (date, minute) = if minute >= MINUTES_PER_DAY {
            (date.succ_opt().unwrap_or(date), minute - MINUTES_PER_DAY)
        } else {
            (date, minute)
        };
        let time = NaiveTime::from_hms_opt(u32::from(minute / 60), u32::from(minute % 60), 0).unwrap_or(NaiveTime::MIN);
        let mut local = date.and_time(time);
        // Gaps end on a whole minute in every zone since 1970; a day is the most any has skipped.
        for _ in 0..=MINUTES_PER_DAY {
            match self.time_zone.from_local_datetime(&local) {
                LocalResult::Single(t) => return t.timestamp_millis(),
                LocalResult::Ambiguous(earliest, _) => return earliest.timestamp_millis(),
                LocalResult::None => local += chrono::Duration::minutes(1),
            }
        }
        local.and_utc().timestamp_millis()
    }
}

fn local_date(tz: Tz, ms: i64) -> NaiveDate {
    let utc = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    utc.with_timezone(&tz).date_naive()
}

fn weekday(text: &str) -> Result<usize, WorkingHoursError> {
    let lower = text.trim().to_ascii_lowercase();
    WEEKDAYS
        .iter()
        .position(|full| lower == *full || (lower.len() == 3 && full.starts_with(lower.as_str())))
        .ok_or_else(|| WorkingHoursError::Weekday(text.to_owned()))
}

/// `"HH:MM-HH:MM"` (spaces around the parts allowed) as minutes of the day.
fn interval(text: &str) -> Option<(u16, u16)> {
    let (start, end) = text.split_once('-')?;
    let (start, end) = (clock(start)?, clock(end)?);
    (start < end && start < MINUTES_PER_DAY).then_some((start, end))
}

/// `H:MM` or `HH:MM`, `00:00` to `24:00`.
fn clock(text: &str) -> Option<u16> {
    let (hours, minutes) = text.trim().split_once(':')?;
    let digits =
        |s: &str, n: std::ops::RangeInclusive<usize>| n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(hours, 1..=2) || !digits(minutes, 2..=2) {
        return None;
    }
    let (hours, minutes): (u16, u16) = (hours.parse().ok()?, minutes.parse().ok()?);
    let total = hours * 60 + minutes;
    (minutes < 60 && total <= MINUTES_PER_DAY).then_some(total)
}

/// Formats minutes of the day as `HH:MM-HH:MM`.
struct Interval((u16, u16));

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, end) = self.0;
        write!(f, "{:02}:{:02}-{:02}:{:02}", start / 60, start % 60, end / 60, end % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;

    fn at(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    fn schedule(tz: &str, days: &[(&str, &[&str])]) -> Result<WorkingHours, WorkingHoursError> {
        WorkingHours::parse(tz, days.iter().map(|(d, l)| (*d, l.iter())))
    }

    #[test]
    fn parse_table() {
        let office: &[&str] = &["09:00-18:00"];
        for (tz, days, expected) in [
            ("UTC", vec![("mon", office)], Ok(vec!["09:00-18:00"])),
            ("UTC", vec![("Monday", &["9:00-13:00", " 14:00 - 24:00 "][..])], Ok(vec!["09:00-13:00", "14:00-24:00"])),
            // Touching intervals are fine and sorted.
            ("UTC", vec![("MON", &["13:00-18:00", "09:00-13:00"][..])], Ok(vec!["09:00-13:00", "13:00-18:00"])),
            ("Mars/Olympus", vec![("mon", office)], Err(WorkingHoursError::TimeZone("Mars/Olympus".into()))),
            ("UTC", vec![("funday", office)], Err(WorkingHoursError::Weekday("funday".into()))),
            ("UTC", vec![("mo", office)], Err(WorkingHoursError::Weekday("mo".into()))),
            ("UTC", vec![("mon", office), ("monday", office)], Err(WorkingHoursError::DuplicateWeekday("monday"))),
            ("UTC", vec![("tue", &["18:00-09:00"][..])], Err(interval_error("tuesday", "18:00-09:00"))),
            ("UTC", vec![("tue", &["09:00-09:00"][..])], Err(interval_error("tuesday", "09:00-09:00"))),
            ("UTC", vec![("tue", &["24:00-24:00"][..])], Err(interval_error("tuesday", "24:00-24:00"))),
            ("UTC", vec![("tue", &["09:00-24:01"][..])], Err(interval_error("tuesday", "09:00-24:01"))),
            ("UTC", vec![("tue", &["09:60-10:00"][..])], Err(interval_error("tuesday", "09:60-10:00"))),
            ("UTC", vec![("tue", &["9-18"][..])], Err(interval_error("tuesday", "9-18"))),
            ("UTC", vec![("tue", &["09:00"][..])], Err(interval_error("tuesday", "09:00"))),
            ("UTC", vec![("tue", &["+9:00-18:00"][..])], Err(interval_error("tuesday", "+9:00-18:00"))),
            (
                "UTC",
                vec![("wed", &["09:00-13:00", "12:00-18:00"][..])],
                Err(WorkingHoursError::Overlap {
                    day: "wednesday",
                    first: "09:00-13:00".into(),
                    second: "12:00-18:00".into(),
                }),
            ),
            ("UTC", vec![], Err(WorkingHoursError::Empty)),
            ("UTC", vec![("sat", &[][..])], Err(WorkingHoursError::Empty)),
        ] {
            let got = schedule(tz, &days).map(|h| h.intervals(0));
            let expected = expected.map(|monday: Vec<&str>| monday.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, expected, "{tz} {days:?}");
        }
    }

    fn interval_error(day: &'static str, text: &str) -> WorkingHoursError {
        WorkingHoursError::Interval { day, text: text.into() }
    }

    #[test]
    fn errors_read_well() {
        let error = schedule("UTC", &[("tue", &["18:00-09:00"])]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "working hours: tuesday: \"18:00-09:00\" is not an interval \"HH:MM-HH:MM\" from 00:00 to 24:00 with the start before the end"
        );
    }

    #[test]
    fn default_is_weekdays_nine_to_six_utc() {
        let hours = WorkingHours::default();
        assert_eq!(hours.time_zone(), Tz::UTC);
        for day in 0..5 {
            assert_eq!(hours.intervals(day), ["09:00-18:00"]);
        }
        assert!(hours.intervals(5).is_empty() && hours.intervals(6).is_empty() && hours.intervals(7).is_empty());
    }

    #[test]
    fn working_time_table() {
        let office = WorkingHours::default();
        // 2026-11-23 is a Monday.
        for (from, to, expected) in [
            // Inside one interval.
            ("2026-11-25T10:00:00Z", "2026-11-25T10:05:00Z", 5 * MINUTE),
            // A question at 23:00 answered at 09:05 the next working day: 5 minutes.
            ("2026-11-24T23:00:00Z", "2026-11-25T09:05:00Z", 5 * MINUTE),
            // Before opening to after closing the same day: the whole day.
            ("2026-11-25T07:00:00Z", "2026-11-25T20:00:00Z", 9 * HOUR),
            // Friday 17:00 to Monday 09:30 across the weekend: 1 h + 30 min.
            ("2026-11-27T17:00:00Z", "2026-11-30T09:30:00Z", 90 * MINUTE),
            // Saturday to Sunday: nothing.
            ("2026-11-28T10:00:00Z", "2026-11-29T18:00:00Z", 0),
            // Friday after closing to Monday before opening: nothing.
            ("2026-11-27T18:00:00Z", "2026-11-30T09:00:00Z", 0),
            // A whole week from Monday 09:00: five days.
            ("2026-11-23T09:00:00Z", "2026-11-30T09:00:00Z", 45 * HOUR),
            // Boundaries: the interval is [09:00, 18:00).
            ("2026-11-25T08:59:59Z", "2026-11-25T09:00:01Z", 1_000),
            ("2026-11-25T17:59:59Z", "2026-11-25T18:00:01Z", 1_000),
            // Empty and reversed spans.
            ("2026-11-25T10:00:00Z", "2026-11-25T10:00:00Z", 0),
            ("2026-11-25T11:00:00Z", "2026-11-25T10:00:00Z", 0),
            // Millisecond precision.
            ("2026-11-25T10:00:00.250Z", "2026-11-25T10:00:01Z", 750),
        ] {
            assert_eq!(office.working_ms(at(from), at(to)), expected, "{from} → {to}");
        }
    }

    #[test]
    fn working_time_in_a_zone_with_a_night_shift() {
        // Moscow (+03:00, no DST): Monday 22:00 to Tuesday 06:00 written as two intervals.
        let night = schedule("Europe/Moscow", &[("mon", &["22:00-24:00"]), ("tue", &["00:00-06:00"])]).unwrap();
        for (from, to, expected) in [
            ("2026-11-23T21:00:00+03:00", "2026-11-24T07:00:00+03:00", 8 * HOUR),
            ("2026-11-23T23:30:00+03:00", "2026-11-24T00:30:00+03:00", HOUR),
            // 19:00Z on Monday is 22:00 in Moscow.
            ("2026-11-23T18:00:00Z", "2026-11-23T19:30:00Z", 30 * MINUTE),
            ("2026-11-24T05:00:00+03:00", "2026-11-30T23:00:00+03:00", HOUR + HOUR),
        ] {
            assert_eq!(night.working_ms(at(from), at(to)), expected, "{from} → {to}");
        }
    }

    #[test]
    fn daylight_saving_days() {
        // Berlin: 2026-03-29 (a Sunday) skips 02:00-03:00; 2026-10-25 (a Sunday) repeats it.
        let whole = schedule("Europe/Berlin", &[("sun", &["00:00-24:00"])]).unwrap();
        let early = schedule("Europe/Berlin", &[("sun", &["01:00-04:00"])]).unwrap();
        let inside = schedule("Europe/Berlin", &[("sun", &["02:30-03:30"])]).unwrap();
        let office = schedule("Europe/Berlin", &[("mon", &["09:00-18:00"]), ("fri", &["09:00-18:00"])]).unwrap();
        for (hours, from, to, expected) in [
            // The whole short and long day.
            (&whole, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z", 23 * HOUR),
            (&whole, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z", 25 * HOUR),
            // 01:00-04:00 lasts 2 h in spring and 4 h in autumn.
            (&early, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z", 2 * HOUR),
            (&early, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z", 4 * HOUR),
            // 02:30 does not exist in spring: the interval starts at 03:00 CEST (01:00Z).
            (&inside, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z", 30 * MINUTE),
            // 02:30 exists twice in autumn: from the first (00:30Z) to 03:30 CET (02:30Z).
            (&inside, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z", 2 * HOUR),
            // Across the spring change at night, an office question keeps local office hours:
            // Friday 17:00 CET to Monday 09:30 CEST is 1 h + 30 min.
            (&office, "2026-03-27T17:00:00+01:00", "2026-03-30T09:30:00+02:00", 90 * MINUTE),
            // The working day after the change starts at 09:00 CEST (07:00Z), not 08:00Z.
            (&office, "2026-03-30T06:00:00Z", "2026-03-30T07:30:00Z", 30 * MINUTE),
            (&office, "2026-10-26T06:00:00Z", "2026-10-26T08:30:00Z", 30 * MINUTE),
        ] {
            assert_eq!(hours.working_ms(at(from), at(to)), expected, "{from} → {to}");
        }
        // Parts of the skipped and the repeated hour.
        assert_eq!(whole.working_ms(at("2026-03-29T00:30:00Z"), at("2026-03-29T01:30:00Z")), HOUR);
        assert_eq!(whole.working_ms(at("2026-10-25T00:30:00Z"), at("2026-10-25T01:30:00Z")), HOUR);
    }

    #[test]
    fn never_more_than_elapsed() {
        let whole = schedule("Europe/Berlin", &[("sun", &["00:00-24:00"]), ("sat", &["00:00-24:00"])]).unwrap();
        let from = at("2026-10-23T00:00:00Z");
        for hours in [1, 5, 24, 49, 72, 100] {
            let to = from + hours * HOUR;
            assert!(whole.working_ms(from, to) <= to - from, "{hours} h");
        }
        // Saturday and Sunday around the long day: 24 h + 25 h, exactly.
        assert_eq!(whole.working_ms(at("2026-10-23T00:00:00Z"), at("2026-10-27T00:00:00Z")), 49 * HOUR);
    }
}
