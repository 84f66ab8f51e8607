//! Log lines in logrus's text format (`time="…" level=info msg="…"`), which is what
//! k3s writes to stderr and what bootstrappers grep for.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Formats a Unix time (seconds) as RFC 3339 in UTC, e.g. `2025-01-15T10:00:00Z`.
pub fn rfc3339(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Formats one logrus line (without the trailing newline).
pub fn line(level: &str, msg: &str) -> String {
    let mut escaped = String::with_capacity(msg.len());
    for c in msg.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    format!(
        "time=\"{}\" level={level} msg=\"{escaped}\"",
        rfc3339(now_unix())
    )
}

fn emit(level: &str, msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line(level, msg));
    let _ = err.flush();
}

pub fn info(msg: &str) {
    emit("info", msg);
}

pub fn warn(msg: &str) {
    emit("warning", msg);
}

pub fn error(msg: &str) {
    emit("error", msg);
}

/// Logs at level fatal, like logrus's `Fatal`; the caller exits.
pub fn fatal(msg: &str) {
    emit("fatal", msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_736_935_200), "2025-01-15T10:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn quotes_message() {
        let l = line("info", "say \"hi\"");
        assert!(l.starts_with("time=\""));
        assert!(l.ends_with("level=info msg=\"say \\\"hi\\\"\""), "{l}");
    }
}
