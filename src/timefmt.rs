//! Time and size formats: RFC 3339 timestamps, log-line stamps, durations and sizes.

use std::time::Duration;

use chrono::{DateTime, Datelike, Local, SecondsFormat, TimeZone, Timelike};

/// RFC 3339 with microseconds and the local offset, as result timestamps use.
#[must_use]
pub fn rfc3339(t: &DateTime<Local>) -> String {
    rfc3339_of(t)
}

/// [`rfc3339`] in any time zone (chrono's own writer is fast: about 850 instructions).
fn rfc3339_of<Tz: TimeZone>(t: &DateTime<Tz>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// `2014-12-21 10:39:49,231`, the stamp of the original tool's log lines.
#[must_use]
pub fn log_stamp(t: &DateTime<Local>) -> String {
    log_stamp_of(t)
}

/// [`log_stamp`] in any time zone, written out by hand (chrono's `format` parses its pattern
/// on every call: that was a thirteenth of bakapara's own instructions per job).
fn log_stamp_of<Tz: TimeZone>(t: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    if !(0..=9999).contains(&t.year()) {
        return t.format("%Y-%m-%d %H:%M:%S,%3f").to_string();
    }
    let n = t.naive_local();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}",
        n.year(),
        n.month(),
        n.day(),
        n.hour(),
        n.minute(),
        n.second(),
        n.nanosecond() % 1_000_000_000 / 1_000_000,
    )
}

/// `0:00:10.007444`, how Python prints a timedelta (the original tool's log lines).
#[must_use]
pub fn elapsed_hms(d: Duration) -> String {
    let secs = d.as_secs();
    format!(
        "{}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        d.subsec_micros()
    )
}

/// Seconds between two instants as a number, never negative.
#[must_use]
pub fn seconds_between(from: &DateTime<Local>, to: &DateTime<Local>) -> f64 {
    let micros = (*to - *from).num_microseconds().unwrap_or(0).max(0);
    micros as f64 / 1e6
}

/// The longest duration bakapara takes (100 years): longer ones cannot be added to a clock
/// reading without overflow, and no job means them; they are refused rather than cut, so a
/// typo does not pass silently.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86400);

/// Parses a duration: `10` or `1.5` (seconds), or with units `500ms`, `10s`, `5m`, `2h`, `1d`,
/// combined as `1h30m`; at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (examples: 30, 1.5, 500ms, 10s, 5m, 1h30m)");
    let secs = seconds_of(text.trim()).ok_or_else(bad)?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(too_long(text));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Parses a duration that must be more than zero (`--timeout`).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("a timeout must be more than 0".to_string()),
        d => Ok(d),
    }
}

/// Why a duration past [`MAX_DURATION`] is refused.
#[must_use]
pub fn too_long(text: &str) -> String {
    format!("`{text}` is too long (at most 100 years, 3153600000 seconds)")
}

/// The seconds a duration's text says, unchecked; `None` when it is not one.
fn seconds_of(t: &str) -> Option<f64> {
    if t.is_empty() {
        return None;
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Some(secs);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = num.parse().ok()?;
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    Some(total)
}

/// Parses a size with GNU Parallel's unit prefixes (`--block`, `--memfree`): K M G T P are
/// powers of 1024, k m g t p powers of 1000 (`1k` is 1000, `1K` 1024); the number may have a
/// fraction (`1.5M`).
pub fn parse_gnu_size(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size (examples: 65536, 512K, 1M, 2G, 1.5k)");
    let t = text.trim();
    let (num, scale) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let scale: f64 = match c {
                'K' => 1024f64,
                'M' => 1024f64.powi(2),
                'G' => 1024f64.powi(3),
                'T' => 1024f64.powi(4),
                'P' => 1024f64.powi(5),
                'k' => 1e3,
                'm' => 1e6,
                'g' => 1e9,
                't' => 1e12,
                'p' => 1e15,
                _ => return Err(bad()),
            };
            (&t[..t.len() - 1], scale)
        }
        _ => (t, 1.0),
    };
    let value: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    // In range, checked above.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes.round() as u64)
}

/// Parses a byte size: `1048576`, `512K`, `1M`, `2G` (powers of 1024; a trailing `B`/`iB` is
/// accepted).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a size (examples: 65536, 512K, 1M, 2G)");
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, scale) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let scale: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..i], scale)
        }
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    let bytes = n * scale as f64;
    if bytes > usize::MAX as f64 {
        return Err(bad());
    }
    // In range, checked above (`n` is not negative).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;

    /// The hand-written stamps are chrono's, in every kind of offset and at the edges of a
    /// second.
    #[test]
    fn stamps_are_chronos() {
        let offsets = [
            0,
            3600,
            -3600,
            5 * 3600 + 1800,
            -(9 * 3600 + 2700),
            14 * 3600,
            61,
        ];
        let instants = [
            (0, 0),
            (1_418_848_789, 231_000_000),
            (1_796_000_000, 999_999_999),
            (1_796_000_000, 1_000_500),
            (4_102_444_799, 123_456_789),
        ];
        for secs in offsets {
            let tz = FixedOffset::east_opt(secs).expect("an offset");
            for (at, nanos) in instants {
                let t = tz.timestamp_opt(at, nanos).single().expect("a time");
                assert_eq!(
                    rfc3339_of(&t),
                    t.to_rfc3339_opts(SecondsFormat::Micros, false),
                    "{t}"
                );
                assert_eq!(
                    log_stamp_of(&t),
                    t.format("%Y-%m-%d %H:%M:%S,%3f").to_string(),
                    "{t}"
                );
            }
        }
    }

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in [
            "", "x", "10x", "-1", "1h-", "ms", "1e19", "36501d", "inf", "NaN",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        assert!(parse_duration("1e19").unwrap_err().contains("too long"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_gnu_size("1k"), Ok(1000));
        assert_eq!(parse_gnu_size("1K"), Ok(1024));
        assert_eq!(parse_gnu_size("1.5M"), Ok(1536 * 1024));
        assert_eq!(parse_gnu_size("2g"), Ok(2_000_000_000));
        for bad in ["", "x", "1x", "-1", "1e400"] {
            assert!(parse_gnu_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512K").unwrap(), 512 * 1024);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        for bad in ["", "x", "1X", "-3", "M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hms() {
        assert_eq!(
            elapsed_hms(Duration::from_micros(10_007_444)),
            "0:00:10.007444"
        );
        assert_eq!(elapsed_hms(Duration::from_secs(3723)), "1:02:03.000000");
    }
}
