//! systemd integration of `metalcu serve` (`sd_notify(3)`), for `Type=notify` units such as
//! `systemd/metalcu.service`.
//!
//! - [`status`] sends `STATUS=` lines while starting (shown by `systemctl status metalcu`);
//! - [`ready`] sends `READY=1` once the store is open and the port bound, so units ordered after
//!   metalcu start only when it answers;
//! - [`stopping`] sends `STOPPING=1` when shutdown begins;
//! - [`spawn_watchdog`] pings `WATCHDOG=1` at half of `WatchdogSec=` (the unit's `WATCHDOG_USEC`),
//!   and only when [`runtime_alive`] completes (a no-op task through tokio's scheduler and a no-op
//!   through its blocking pool, where modules are loaded) and the caller's check holds (serve's:
//!   no evaluation worker wedged on one job past the engine's deadline). A wedged runtime or
//!   worker stops the pings and systemd restarts the service.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing. A failed send is logged at
//! debug level and otherwise ignored: notification is advisory and never stops the CU.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;

/// Longest `STATUS=` text sent; longer texts are cut at a character boundary.
pub const MAX_STATUS_BYTES: usize = 512;
/// Pings are sent this many times per watchdog period (systemd recommends at least twice).
pub const PINGS_PER_PERIOD: u32 = 2;
/// Shortest interval between pings, whatever `WATCHDOG_USEC` says.
pub const MIN_PING_INTERVAL: Duration = Duration::from_millis(10);

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("sd_notify: {e}");
    }
}

fn cut(text: &str) -> &str {
    if text.len() <= MAX_STATUS_BYTES {
        return text;
    }
    let mut end = MAX_STATUS_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `STATUS=text` (one line: newlines become spaces).
pub fn status(text: &str) {
    let line = text.replace('\n', " ");
    send(&[NotifyState::Status(cut(&line))]);
}

/// `READY=1` with `STATUS=text`.
pub fn ready(text: &str) {
    let line = text.replace('\n', " ");
    send(&[NotifyState::Ready, NotifyState::Status(cut(&line))]);
}

/// `STOPPING=1` with a status saying in-flight requests finish first.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping: in-flight requests finish first")]);
}

/// The ping interval systemd asked for (`WATCHDOG_USEC` / [`PINGS_PER_PERIOD`]), or `None` when
/// the unit has no `WatchdogSec=` (or `WATCHDOG_PID` names another process).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|period| (period / PINGS_PER_PERIOD).max(MIN_PING_INTERVAL))
}

/// Whether the runtime's machinery still turns: a no-op task scheduled on tokio's workers and a
/// no-op on its blocking pool (where the engine evaluates) both complete within `within`.
pub async fn runtime_alive(within: Duration) -> bool {
    let probe = async { tokio::spawn(async {}).await.is_ok() && tokio::task::spawn_blocking(|| ()).await.is_ok() };
    matches!(tokio::time::timeout(within, probe).await, Ok(true))
}

/// Every `interval`, runs `probe(interval)` and calls `ping` only when it returns `true`. Runs
/// until dropped.
pub async fn watchdog_loop<P, F>(interval: Duration, mut probe: P, mut ping: impl FnMut())
where
    P: FnMut(Duration) -> F,
    F: Future<Output = bool>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if probe(interval).await {
            ping();
        } else {
            tracing::warn!("watchdog: the runtime did not complete a no-op in {interval:?}; no ping sent");
        }
    }
}

/// Starts the watchdog task on the current runtime when systemd asked for one; abort the handle
/// (or drop the runtime) to stop it. `healthy` is checked too on every ping (the worker pool:
/// no job wedged far past the engine's call deadline).
pub fn spawn_watchdog(healthy: impl Fn() -> bool + Send + Sync + 'static) -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    tracing::info!(?interval, "systemd watchdog: pinging while the runtime answers");
    let healthy = std::sync::Arc::new(healthy);
    let probe = move |within| {
        let healthy = healthy.clone();
        async move { runtime_alive(within).await && healthy() }
    };
    Some(tokio::spawn(watchdog_loop(interval, probe, || send(&[NotifyState::Watchdog]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn long_status_lines_are_cut_at_a_character_boundary() {
        let s = "é".repeat(MAX_STATUS_BYTES);
        let c = cut(&s);
        assert!(c.len() <= MAX_STATUS_BYTES && c.len() >= MAX_STATUS_BYTES - 1);
        assert_eq!(cut("short"), "short");
    }

    /// A blocking pool whose only thread is stuck (as when every evaluation thread is wedged)
    /// stops the pings; they resume once it is free.
    #[test]
    fn a_wedged_blocking_pool_stops_the_pings() {
        const INTERVAL: Duration = Duration::from_millis(40);
        const WEDGE: Duration = Duration::from_millis(600);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pings = Arc::new(AtomicUsize::new(0));
            let counter = pings.clone();
            let dog = tokio::spawn(watchdog_loop(INTERVAL, runtime_alive, move || {
                counter.fetch_add(1, Ordering::SeqCst);
            }));
            tokio::time::sleep(INTERVAL * 4).await;
            assert!(pings.load(Ordering::SeqCst) >= 2, "a healthy runtime is pinged");
            let wedge = tokio::task::spawn_blocking(|| std::thread::sleep(WEDGE));
            tokio::time::sleep(INTERVAL * 2).await;
            let during = pings.load(Ordering::SeqCst);
            tokio::time::sleep(WEDGE / 2).await;
            assert_eq!(pings.load(Ordering::SeqCst), during, "no ping while the blocking pool is wedged");
            wedge.await.unwrap();
            tokio::time::sleep(INTERVAL * 4).await;
            assert!(pings.load(Ordering::SeqCst) > during, "pings resume once it is free");
            dog.abort();
        });
    }
}
