//! Times for people: Unix seconds shown as local time plus how long ago (or how soon), for the
//! CLI's tables. Machine output (`--json`) keeps Unix seconds.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// `14:03:12 (2 min ago)` for a time today, `2026-11-27 09:12 (1 d 5 h ago)` otherwise, in the
/// system's time zone (`TZ`, else `/etc/localtime`, else UTC). `-` for None.
pub fn when(t: Option<i64>, now: i64) -> String {
    match t {
        None => "-".into(),
        Some(secs) => format!("{} ({})", local(secs, now), relative(secs - now)),
    }
}

/// The local wall-clock time of `secs`: time only when it falls on `now`'s date.
pub fn local(secs: i64, now: i64) -> String {
    local_in(secs, now, &TimeZone::system())
}

fn local_in(secs: i64, now: i64, tz: &TimeZone) -> String {
    let (Ok(t), Ok(n)) = (Timestamp::from_second(secs), Timestamp::from_second(now)) else {
        return format!("@{secs}");
    };
    let (t, n) = (tz.to_datetime(t), tz.to_datetime(n));
    if t.date() == n.date() {
        t.strftime("%H:%M:%S").to_string()
    } else {
        t.strftime("%Y-%m-%d %H:%M").to_string()
    }
}

/// `delta` seconds from now in words: `in 4 min 52 s`, `3 h 5 min ago`, `now`.
pub fn relative(delta: i64) -> String {
    if delta == 0 {
        return "now".into();
    }
    let span = span(delta.unsigned_abs());
    if delta > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A duration in the two largest units: `52 s`, `4 min 52 s`, `3 h 5 min`, `2 d 4 h`.
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) if s == 0 => format!("{m} min"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, 0) => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        (_, 0, _) => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_relative() {
        assert_eq!(span(52), "52 s");
        assert_eq!(span(292), "4 min 52 s");
        assert_eq!(span(300), "5 min");
        assert_eq!(span(3 * 3600 + 5 * 60 + 9), "3 h 5 min");
        assert_eq!(span(7200), "2 h");
        assert_eq!(span(2 * 86_400 + 4 * 3600), "2 d 4 h");
        assert_eq!(span(86_400 + 59), "1 d");
        assert_eq!(relative(292), "in 4 min 52 s");
        assert_eq!(relative(-120), "2 min ago");
        assert_eq!(relative(0), "now");
    }

    #[test]
    fn local_times_in_a_fixed_zone() {
        let utc = TimeZone::UTC;
        // 2026-11-28 14:03:12 UTC
        let t = 1_795_874_592;
        assert_eq!(local_in(t, t + 60, &utc), "14:03:12");
        assert_eq!(local_in(t, t + 86_400, &utc), "2026-11-28 14:03");
        let plus2 = TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(local_in(t, t, &plus2), "16:03:12");
        assert_eq!(local_in(i64::MAX, 0, &utc), format!("@{}", i64::MAX));
    }

    #[test]
    fn when_combines_both() {
        let t = 1_795_874_592;
        let s = when(Some(t), t + 120);
        assert!(s.ends_with(" (2 min ago)"), "{s}");
        assert_eq!(when(None, t), "-");
    }
}
