//! How far an import got: a progress bar (`indicatif`) when standard error
//! is a terminal, else plain lines -- at every 5% of a known total, and at
//! least every 5 seconds -- that a log file or CI output keeps readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::Summary;

/// Plain lines at least this often, whatever the percentage.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    /// The input's size (bytes of a file, rows of a table), when known.
    total: Option<u64>,
    /// What `total` and the positions count ("bytes", "rows").
    unit: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    /// The last 5% step a plain line was printed for.
    last_step: u64,
    records: u64,
}

impl Progress {
    /// A bar on a terminal, plain lines otherwise.
    pub fn new(total: Option<u64>, unit: &'static str) -> Self {
        Self::with_terminal(total, unit, std::io::stderr().is_terminal())
    }

    pub fn with_terminal(total: Option<u64>, unit: &'static str, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let template = if unit == "bytes" {
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        });
        let now = Instant::now();
        Progress {
            total,
            unit,
            bar,
            started: now,
            last_line: now,
            last_step: 0,
            records: 0,
        }
    }

    /// `records` written so far, `done` of the input read.
    pub fn update(&mut self, records: u64, done: u64) {
        self.records = records;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(format!("{records} records"));
            return;
        }
        let step = match self.total {
            Some(t) if t > 0 => done.saturating_mul(20) / t,
            _ => 0,
        };
        if step > self.last_step || self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_step = step;
            self.last_line = Instant::now();
            eprintln!("{}", self.line(done));
        }
    }

    fn line(&self, done: u64) -> String {
        let of = match self.total {
            Some(t) if t > 0 => format!(" of {t} ({}%)", (done.saturating_mul(100) / t).min(100)),
            _ => String::new(),
        };
        format!(
            "progressdb import: {} records, {done} {}{of}, {:.1}s",
            self.records,
            self.unit,
            self.started.elapsed().as_secs_f64()
        )
    }

    /// The end: the bar is cleared; the summary is the caller's to print.
    pub fn finish(&mut self, summary: &Summary) {
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None => {
                eprintln!(
                    "progressdb import: done, {} records in {:.1}s ({summary})",
                    self.records,
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
        let _ = std::io::stderr().flush();
    }

    /// Stopped by an error: the bar stays where it got.
    pub fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}
