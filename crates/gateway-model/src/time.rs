//! Timestamps: nanoseconds since the Unix epoch (`u64`, good until 2554), and
//! their RFC 3339 text form for the API. Hand-written because the gateway needs
//! exactly two conversions and a date library would cost more build time than
//! these forty lines.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Longest text [`write_rfc3339_ns`] writes: `2554-07-21T23:34:33.709551615Z`.
pub const RFC3339_MAX_LEN: usize = 30;

/// `2026-11-30T04:44:08.123Z`: UTC, with 0, 3, 6 or 9 fractional digits as needed.
pub fn format_rfc3339_ns(ns: u64) -> String {
    let mut buf = [0u8; RFC3339_MAX_LEN];
    write_rfc3339_ns(ns, &mut buf).to_owned()
}

/// As [`format_rfc3339_ns`], into `buf`, returning the text: no allocation
/// and no `core::fmt`, for the paths that format a timestamp per value (JSON
/// payloads at hundreds of thousands of values per second).
pub fn write_rfc3339_ns(ns: u64, buf: &mut [u8; RFC3339_MAX_LEN]) -> &str {
    fn digits(out: &mut [u8], mut v: u64) {
        for b in out.iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = (ns % 1_000_000_000) as u32;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u64;
    digits(&mut buf[0..4], y as u64);
    buf[4] = b'-';
    digits(&mut buf[5..7], u64::from(mo));
    buf[7] = b'-';
    digits(&mut buf[8..10], u64::from(d));
    buf[10] = b'T';
    digits(&mut buf[11..13], sod / 3600);
    buf[13] = b':';
    digits(&mut buf[14..16], sod / 60 % 60);
    buf[16] = b':';
    digits(&mut buf[17..19], sod % 60);
    let mut len = 19;
    let (frac, width) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if width > 0 {
        buf[len] = b'.';
        digits(&mut buf[len + 1..len + 1 + width], u64::from(frac));
        len += 1 + width;
    }
    buf[len] = b'Z';
    len += 1;
    // Only ASCII digits and separators were written.
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// Parses an RFC 3339 timestamp (`Z` or a `+hh:mm` offset) into nanoseconds since
/// the epoch; `None` if it is malformed or before 1970.
pub fn parse_rfc3339_ns(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d == 0 || d > 31 || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = i64::from(num(i + 1..i + 3)?);
            let om = i64::from(num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s) - offset_s;
    if secs < 0 {
        return None;
    }
    (secs as u64).checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_ns(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339_ns(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339_ns(1_700_000_000_123_000_000), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_rfc3339_ns(1_700_000_000_000_000_001), "2023-11-14T22:13:20.000000001Z");
        assert_eq!(format_rfc3339_ns(1_700_000_000_000_042_000), "2023-11-14T22:13:20.000042Z");
        assert_eq!(format_rfc3339_ns(u64::MAX), "2554-07-21T23:34:33.709551615Z");
        assert_eq!(format_rfc3339_ns(u64::MAX).len(), RFC3339_MAX_LEN);
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for ns in [0, 1, 951_782_400_000_000_000, 1_700_000_000_123_456_789, 4_102_444_800_000_000_000] {
            assert_eq!(parse_rfc3339_ns(&format_rfc3339_ns(ns)), Some(ns));
        }
        assert_eq!(parse_rfc3339_ns("2023-11-15T00:13:20.123+02:00"), Some(1_700_000_000_123_000_000));
        for bad in [
            "",
            "2023-11-15",
            "2023-13-01T00:00:00Z",
            "2023-11-15T00:00:00",
            "1969-12-31T23:59:59Z",
            "2023-11-15T00:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad}");
        }
    }
}
