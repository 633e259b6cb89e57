//! Small text helpers for the CLI's own lines (a leaf: used by `output`, `codes` and `exec`).

use std::io::Write;
use std::time::Duration;

/// One status line on stderr.
pub fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// `4 min 58 s`, `12 s`, `1 h 3 min` (whole seconds).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ if s % 3600 < 60 => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Text from the host made safe for a terminal: control characters (an escape sequence could
/// rewrite the screen) are shown escaped, and it is cut at 500 characters.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(500));
    for (i, c) in text.chars().enumerate() {
        if i == 500 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `3.2 s`, for reconnect delays.
pub fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
