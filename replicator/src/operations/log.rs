//! The daemons' log: one line per event on stderr, `2026-11-24T12:00:00.123Z LEVEL message`,
//! or with `--log-format json` one JSON object per line, `{"ts":"…","level":"info","msg":"…"}`,
//! for a log shipper.
//!
//! `--log-level` (`log_level`: error, warn, info (the default) or debug) drops the lines
//! below it; a SIGHUP can change it and the format at run time (`node::watch_reloads`).
//!
//! No logging framework: the daemons log a handful of events (connections, auth results,
//! resyncs, errors), and a line is written with a single `write_all` on a locked stderr, so
//! lines from different threads never interleave.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static JSON: AtomicBool = AtomicBool::new(false);
/// The most detailed level written (a `Level as u8`).
static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Switches every later line to JSON (`true`) or text.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Writes only lines of `level` and more serious ones from now on.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// How serious an event is, most serious first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    /// The names `--log-level` takes.
    pub const NAMES: [&str; 4] = ["error", "warn", "info", "debug"];

    pub fn name(self) -> &'static str {
        Level::NAMES[self as usize]
    }

    pub fn parse(name: &str) -> Option<Level> {
        [Level::Error, Level::Warn, Level::Info, Level::Debug].into_iter().find(|l| l.name() == name)
    }
}

/// Writes one log line (the `info!`-style helpers below call this), unless `level` is less
/// serious than the one set.
pub fn log(level: Level, message: &str) {
    if level as u8 > LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let line = format_line(level, message, SystemTime::now(), JSON.load(Ordering::Relaxed));
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn format_line(level: Level, message: &str, t: SystemTime, json: bool) -> String {
    if json {
        serde_json::json!({ "ts": timestamp(t), "level": level.name(), "msg": message }).to_string() + "\n"
    } else {
        let tag = match level {
            Level::Info => "INFO ",
            Level::Warn => "WARN ",
            Level::Error => "ERROR",
            Level::Debug => "DEBUG",
        };
        format!("{} {tag} {message}\n", timestamp(t))
    }
}

pub fn debug(message: &str) {
    log(Level::Debug, message)
}

pub fn info(message: &str) {
    log(Level::Info, message)
}

pub fn warn(message: &str) {
    log(Level::Warn, message)
}

pub fn error(message: &str) {
    log(Level::Error, message)
}

/// RFC 3339 UTC with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_is_text_or_one_json_object() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_955_696_789);
        let msg = "standby \"x\" closed:\nbye";
        assert_eq!(format_line(Level::Warn, "lag 3", t, false), "2026-11-29T12:34:56.789Z WARN  lag 3\n");
        let line = format_line(Level::Error, msg, t, true);
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2026-11-29T12:34:56.789Z");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], msg);
    }

    #[test]
    fn levels_parse_by_name_and_order_by_seriousness() {
        for name in Level::NAMES {
            assert_eq!(Level::parse(name).map(Level::name), Some(name));
        }
        assert_eq!(Level::parse("verbose"), None);
        assert!(Level::Error < Level::Warn && Level::Info < Level::Debug);
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_955_696_789);
        assert_eq!(timestamp(t), "2026-11-29T12:34:56.789Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
