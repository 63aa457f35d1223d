//! RFC 3339 parsing and formatting on epoch milliseconds, without a date library on the hot path.

use std::fmt::Write as _;

/// 2000-01-01T00:00:00Z, the earliest time the contract accepts.
pub(crate) const MIN_MS: i64 = 946_684_800_000;
/// 2100-01-01T00:00:00Z, the first time the contract no longer accepts.
pub(crate) const MAX_MS: i64 = 4_102_444_800_000;

const MS_PER_DAY: i64 = 86_400_000;

/// Whether `ms` lies in the sane range, years 2000 up to (not including) 2100.
pub(crate) fn in_range(ms: i64) -> bool {
    (MIN_MS..MAX_MS).contains(&ms)
}

/// Parses an RFC 3339 date-time (`2024-05-01T10:00:00.123+03:00`, `...Z`) into epoch
/// milliseconds UTC. Fractions beyond milliseconds are truncated; a leap second (`:60`) counts as
/// `:59.999`. `None` for anything that is not a valid RFC 3339 date-time.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let mut second = digits(b, 17, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }

    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    if second == 60 {
        second = 59;
        millis = 999;
    }

    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = digits(b, i + 1, 2)?;
            let om = digits(b, i + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let secs = hour * 3600 + minute * 60 + second - offset_s;
    Some(days * MS_PER_DAY + secs * 1000 + millis)
}

/// Appends `ms` as RFC 3339 UTC with milliseconds (`2024-05-01T07:00:00.000Z`). Times whose year
/// has no four-digit form are written as the bare integer instead, so output is always valid JSON.
pub(crate) fn write_rfc3339(out: &mut String, ms: i64) {
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        let _ = write!(out, "{ms}");
        return;
    }
    let secs = in_day / 1000;
    let _ = write!(
        out,
        "\"{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z\"",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1000
    );
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let mut v = 0;
    for &c in b.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, expected: Option<i64>) {
        assert_eq!(parse_rfc3339(input), expected, "{input}");
    }

    #[test]
    fn parses() {
        check("2024-05-01T10:00:00Z", Some(1_714_557_600_000));
        check("2024-05-01T10:00:00z", Some(1_714_557_600_000));
        check("2024-05-01t10:00:00+00:00", Some(1_714_557_600_000));
        check("2024-05-01 10:00:00-00:00", Some(1_714_557_600_000));
        check("2024-05-01T13:00:00+03:00", Some(1_714_557_600_000));
        check("2024-05-01T04:30:00-05:30", Some(1_714_557_600_000));
        check("2024-05-01T10:00:00.5Z", Some(1_714_557_600_500));
        check("2024-05-01T10:00:00.12Z", Some(1_714_557_600_120));
        check("2024-05-01T10:00:00.123Z", Some(1_714_557_600_123));
        check("2024-05-01T10:00:00.123999999Z", Some(1_714_557_600_123));
        check("2024-05-01T13:00:00.250+03:00", Some(1_714_557_600_250));
        check("2024-02-29T00:00:00Z", Some(1_709_164_800_000));
        check("2000-01-01T00:00:00Z", Some(MIN_MS));
        check("2100-01-01T00:00:00Z", Some(MAX_MS));
        check("1970-01-01T00:00:00Z", Some(0));
        check("1969-12-31T23:59:59.999Z", Some(-1));
        check("2016-12-31T23:59:60Z", Some(1_483_228_799_999));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00Z",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00+0300",
            "2024-05-01T10:00:00+03",
            "2024-05-01T10:00:00+24:00",
            "2024-05-01T10:00:00+03:60",
            "2024-05-01T10:00:00ZZ",
            "2024-05-01T10:00:00Z ",
            " 2024-05-01T10:00:00Z",
            "2024-13-01T10:00:00Z",
            "2024-00-01T10:00:00Z",
            "2024-05-00T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2024-04-31T10:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:60:00Z",
            "2024-05-01T10:00:61Z",
            "2024/05/01T10:00:00Z",
            "2024-05-01X10:00:00Z",
            "+024-05-01T10:00:00Z",
            "2024-05-01T10:00:00.12a4Z",
            "2024-05-01T10:00:00,123Z",
            "１２３４-05-01T10:00:00Z",
            "yesterday at noon, roughly",
        ] {
            check(bad, None);
        }
    }

    #[test]
    fn formats() {
        let cases = [
            (0, "\"1970-01-01T00:00:00.000Z\""),
            (1_714_557_600_123, "\"2024-05-01T10:00:00.123Z\""),
            (-1, "\"1969-12-31T23:59:59.999Z\""),
            (MAX_MS - 1, "\"2099-12-31T23:59:59.999Z\""),
            (i64::MAX, "9223372036854775807"),
            (i64::MIN, "-9223372036854775808"),
        ];
        for (ms, expected) in cases {
            let mut s = String::new();
            write_rfc3339(&mut s, ms);
            assert_eq!(s, expected);
        }
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(ms in -62_167_219_200_000i64..253_402_300_800_000) {
            let mut s = String::new();
            write_rfc3339(&mut s, ms);
            prop_assert_eq!(parse_rfc3339(s.trim_matches('"')), Some(ms));
        }

        #[test]
        fn agrees_with_chrono(
            ms in MIN_MS..MAX_MS,
            frac in 0u32..1_000_000_000,
            digits in 1usize..=9,
            offset_min in -(23 * 60 + 59)..=(23 * 60 + 59),
        ) {
            let offset = chrono::FixedOffset::east_opt(offset_min * 60).unwrap();
            let t = chrono::DateTime::from_timestamp_millis(ms).unwrap().with_timezone(&offset);
            let frac = format!("{frac:09}");
            let s = format!("{}.{}{}", t.format("%Y-%m-%dT%H:%M:%S"), &frac[..digits], t.format("%:z"));
            let reference = chrono::DateTime::parse_from_rfc3339(&s).unwrap().timestamp_millis();
            prop_assert_eq!(parse_rfc3339(&s), Some(reference), "{}", s);
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
}
