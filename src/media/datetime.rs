//! The wall-clock date-time every layer writes: ISO 8601 without zone
//! (`2024-05-01T08:30:00`), as GB/T 28181-2016 A.2.1 `dateTime`, the
//! `?start=&end=` of playback URLs, RTSP `Range: clock=` and the telecom
//! spec's timestamps use it — to and from Unix seconds.
//!
//! It lives in the media core because egress (RTSP ranges), the stream
//! table (playback keys) and several adapters all need it, and the core
//! must not import an adapter.
//!
//! The standard means the device's local time. The process has no time
//! zone database, so camgate reads and writes these as UTC; the `Date` we
//! give in the 200 to REGISTER is UTC too, so devices that set their clock
//! from it agree with us.

/// Unix seconds of `YYYY-MM-DDTHH:MM:SS` (a space instead of `T`, and a
/// fractional second, are accepted; a trailing `Z` is ignored).
pub fn parse(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches('Z');
    if s.len() < 19 || !s.is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if seps.iter().any(|(i, c)| s.as_bytes().get(*i) != Some(c))
        || !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || se > 60
    {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + se)).ok()
}

/// `YYYY-MM-DDTHH:MM:SS` of Unix seconds.
pub fn format(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// days-from-civil).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_values() {
        assert_eq!(parse("1970-01-01T00:00:00"), Some(0));
        assert_eq!(parse("2024-02-29T12:34:56"), Some(1_709_210_096));
        assert_eq!(parse("2024-02-29 12:34:56.500"), Some(1_709_210_096));
        assert_eq!(format(1_709_210_096), "2024-02-29T12:34:56");
        for t in [0u64, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse(&format(t)), Some(t));
        }
    }

    #[test]
    fn garbage_is_none() {
        for s in [
            "",
            "2024-13-01T00:00:00",
            "2024-01-01X00:00:00",
            "2024/01/01T00:00:00",
            "1969-12-31T23:59:59",
            "２０２４-01-01T00:00:00",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
