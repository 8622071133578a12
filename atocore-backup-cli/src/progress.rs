//! A byte counter on stderr for long copies, drawn only on a terminal and
//! only once an operation has run for a second: short runs and pipes get
//! nothing extra.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use atocore_backup_core::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Overrides [`SHOW_AFTER`] in milliseconds (0 draws at once): tests see the
/// bar without making an operation slow on purpose.
const SHOW_AFTER_ENV: &str = "ATOCORE_BACKUP_PROGRESS_AFTER_MS";

pub struct TerminalProgress {
    bar: ProgressBar,
    started: Instant,
    show_after: Duration,
    enabled: bool,
    shown: AtomicBool,
}

impl TerminalProgress {
    pub fn new(label: &'static str) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}: {bytes} in {elapsed}") {
            bar.set_style(style);
        }
        bar.set_message(label);
        TerminalProgress {
            bar,
            started: Instant::now(),
            show_after: std::env::var(SHOW_AFTER_ENV)
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map_or(SHOW_AFTER, Duration::from_millis),
            enabled: std::io::stderr().is_terminal(),
            shown: AtomicBool::new(false),
        }
    }
}

impl Progress for TerminalProgress {
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.enabled && !self.shown.load(Ordering::Relaxed) && self.started.elapsed() >= self.show_after {
            self.shown.store(true, Ordering::Relaxed);
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
