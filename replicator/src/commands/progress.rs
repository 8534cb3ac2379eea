//! A one-line progress bar on stderr, for `dump` and `restore`.
//!
//! Drawn only when stderr is a terminal and `--quiet` was not given, so scripts and logs
//! never see carriage returns; redrawn at most ten times a second; erased when done, so the
//! summary line that follows stands alone. Hand-written (about 80 lines) rather than a
//! dependency: it needs no colors, spinners or multi-bar support.

use crate::commands::units::{format_bytes, format_count};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What the bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Entries,
    Bytes,
}

#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    label: &'static str,
    unit: Unit,
    total: u64,
    done: u64,
    started: Instant,
    last_draw: Option<Instant>,
}

const WIDTH: usize = 30;
const EVERY: Duration = Duration::from_millis(100);

impl Progress {
    /// A bar for `total` units of work (0 if unknown: it then shows the count only).
    pub fn new(label: &'static str, unit: Unit, total: u64, quiet: bool) -> Progress {
        Progress {
            enabled: !quiet && std::io::stderr().is_terminal(),
            label,
            unit,
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
        }
    }

    /// Moves the bar to `done` units.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        if self.enabled && self.last_draw.is_none_or(|t| t.elapsed() >= EVERY) {
            self.last_draw = Some(Instant::now());
            self.draw();
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.set(self.done + n);
    }

    fn amount(&self, n: u64) -> String {
        match self.unit {
            Unit::Entries => format_count(n),
            Unit::Bytes => format_bytes(n),
        }
    }

    fn draw(&self) {
        // A rate over less than half a second says little: leave it out until then.
        let secs = self.started.elapsed().as_secs_f64();
        let per_sec = (self.done as f64 / secs) as u64;
        let rate = match self.unit {
            _ if secs < 0.5 => String::new(),
            Unit::Entries => format!(" {}/s", format_count(per_sec)),
            Unit::Bytes => format!(" {}/s", format_bytes(per_sec)),
        };
        let line = if self.total > 0 {
            let frac = (self.done as f64 / self.total as f64).clamp(0.0, 1.0);
            let filled = (frac * WIDTH as f64) as usize;
            format!(
                "{} [{}{}] {:>3.0}% {}/{}{rate}",
                self.label,
                "#".repeat(filled),
                "-".repeat(WIDTH - filled),
                frac * 100.0,
                self.amount(self.done),
                self.amount(self.total)
            )
        } else {
            format!("{} {}{rate}", self.label, self.amount(self.done))
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }

    /// Erases the bar.
    pub fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        self.last_draw = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
