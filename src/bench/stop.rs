//! When the bench must stop: at the `--max-seconds` bound, or on Ctrl-C.
//!
//! Invariants: once stopped, a [`Stop`] stays stopped, with the first reason; every phase polls
//! [`Stop::wait`] (or runs its work through [`Stop::bounded`]) so it ends promptly and reports
//! what it measured; the second Ctrl-C exits at once (the server child still dies: it gets
//! `SIGKILL` when the bench's main thread ends, see `stack.rs`).

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

/// Exit status after a second Ctrl-C (128 + SIGINT, as a shell reports it).
const EXIT_INTERRUPTED: i32 = 130;

/// Why the bench stopped before doing everything asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// `--max-seconds` passed.
    TimeBound,
    /// Ctrl-C.
    Interrupted,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::TimeBound => "the --max-seconds time bound was reached",
            StopReason::Interrupted => "interrupted (Ctrl-C)",
        })
    }
}

/// The stop signal, shared by every task of the run.
#[derive(Clone)]
pub struct Stop {
    deadline: Instant,
    rx: watch::Receiver<Option<StopReason>>,
}

impl Stop {
    /// A stop at `max` from now or at the first Ctrl-C. Must run inside a tokio runtime.
    pub fn start(max: Duration) -> Stop {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return; // no signal handling: only the time bound applies
            }
            let _ = tx.send(Some(StopReason::Interrupted));
            eprintln!("metalcu bench: interrupted; stopping (Ctrl-C again to quit at once)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(EXIT_INTERRUPTED);
            }
        });
        Stop { deadline: Instant::now() + max, rx }
    }

    /// Why the run stopped, if it has.
    pub fn reason(&self) -> Option<StopReason> {
        if let Some(r) = *self.rx.borrow() {
            return Some(r);
        }
        (Instant::now() >= self.deadline).then_some(StopReason::TimeBound)
    }

    /// The time left before the bound.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Resolves when the run must stop.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let signalled = async move {
            if rx.wait_for(Option::is_some).await.is_err() {
                // The signal task is gone: only the deadline is left.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(self.deadline) => {}
            _ = signalled => {}
        }
    }

    /// `fut`'s output, or `None` if the run stops first.
    pub async fn bounded<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            v = fut => Some(v),
            _ = self.wait() => None,
        }
    }
}
