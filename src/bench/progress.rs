//! Progress on stderr: one indicatif bar per phase when stderr is a terminal, nothing otherwise
//! (stdout carries only the report, so it can be piped).
//!
//! Invariant: a hidden bar accepts the same calls, so the phases never test for a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Redraws per second of a visible bar.
const TICK: Duration = Duration::from_millis(100);

/// Makes the bars of a run.
#[derive(Clone, Copy)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress { visible: std::io::stderr().is_terminal() }
    }

    /// A bar for a phase of `len` steps.
    pub fn bar(&self, phase: &str, len: u64) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        let style = ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(phase.to_string());
        bar.enable_steady_tick(TICK);
        bar
    }
}
