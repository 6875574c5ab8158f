//! The restart phase (`--restart`): after the cold phase, the child is stopped the way an
//! operator stops it (SIGINT: evaluations drained, a checkpoint of every process that evaluated
//! since its last one), started again on the same data, and every process is asked one new
//! message. That measures what a restart costs a provider: the stop, the start until the CU
//! listens, and the time until every process is back (its memory restored from its checkpoint,
//! or replayed from the scheduler when it has none) and has evaluated one more message.
//!
//! The processes the server holds live (`metalcu_resident_processes` of `/metrics`) are read
//! before the stop and after the last answer; with `--restart-wait-live` the bench also waits,
//! before sending anything, until the restarted server holds as many live as before (what
//! `--prewarm` brings back by itself), and reports that time.
//!
//! Invariants: the data directory is handed from the first child to the second (only the last
//! one removes a temporary directory); the old log is kept beside the new one as `dev.log.1`.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::Conn;
use super::load::{self, Ctx, Proc};
use super::report::{ColdReport, PostReport};
use super::stack::Stack;

/// Longest a `/metrics` read may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the live count is read while waiting for it.
const POLL: Duration = Duration::from_millis(100);
/// No change of the live count for this long ends the wait.
const STALL: Duration = Duration::from_secs(30);
/// The gauge of the processes a CU holds live.
pub const RESIDENT_GAUGE: &str = "metalcu_resident_processes";

/// What the restart phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct RestartReport {
    /// Processes the server held live just before the stop.
    pub live_before: Option<u64>,
    /// From SIGINT until the server exited (drain and checkpoints).
    pub stop_seconds: f64,
    /// From starting the server again until it listened.
    pub start_seconds: f64,
    /// With `--restart-wait-live`: from listening until the server held as many live processes
    /// as before the stop (its prewarming), and how many it held then.
    pub live_again_seconds: Option<f64>,
    pub live_again: Option<u64>,
    /// One new message per process, posted to the scheduler.
    pub post: Option<PostReport>,
    /// Its `/result`, per process: the process is loaded back and evaluates the message.
    pub back: Option<ColdReport>,
    /// Processes the server held live after the last answer.
    pub live_after: Option<u64>,
}

/// The value of the gauge `name` on the CU's `/metrics`, if it answers.
pub async fn gauge(cu: &str, name: &str) -> Option<u64> {
    let mut conn = Conn::new(cu);
    let answer = tokio::time::timeout(METRICS_TIMEOUT, conn.get("/metrics")).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&answer.body);
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
}

/// Polls the live count until it reaches `target`, stops growing for [`STALL`], or the run
/// must stop; returns the last count read.
async fn wait_live(ctx: &Ctx, target: u64) -> Option<u64> {
    let mut last: Option<u64> = None;
    let mut since = Instant::now();
    while ctx.stop.reason().is_none() {
        let now = gauge(&ctx.cu, RESIDENT_GAUGE).await;
        if now.is_some_and(|n| n >= target) {
            return now;
        }
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= STALL {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    last
}

/// Stops and restarts the child of `stack`, then brings `procs` back with one message each.
/// `ctx` is of the first child; the returned one is of the second.
pub async fn run(ctx: &Ctx, stack: &mut Stack, procs: &mut [Proc]) -> anyhow::Result<(RestartReport, Ctx)> {
    let live_before = gauge(&ctx.cu, RESIDENT_GAUGE).await;
    let old = stack.child.as_mut().ok_or_else(|| anyhow::anyhow!("--restart needs a child stack"))?;
    let grace = ctx.stop.remaining();
    let stopped_at = Instant::now();
    if let Some(problem) = old.stop_within(grace) {
        anyhow::bail!("restart: {problem}");
    }
    let stop_seconds = stopped_at.elapsed().as_secs_f64();
    let started = Instant::now();
    let stop = ctx.stop.clone();
    stack.restart(|| stop.reason().is_some())?;
    let start_seconds = started.elapsed().as_secs_f64();
    let next = Ctx {
        cu: stack.info.cu.as_str().into(),
        su: stack.info.su.as_str().into(),
        settings: std::sync::Arc::new(super::args::Settings { messages: 1, ..(*ctx.settings).clone() }),
        stop: ctx.stop.clone(),
        progress: ctx.progress,
    };
    let mut report = RestartReport {
        live_before,
        stop_seconds,
        start_seconds,
        live_again_seconds: None,
        live_again: None,
        post: None,
        back: None,
        live_after: None,
    };
    if ctx.settings.restart_wait_live {
        let waited = Instant::now();
        let live = wait_live(&next, live_before.unwrap_or(0)).await;
        report.live_again_seconds = Some(waited.elapsed().as_secs_f64());
        report.live_again = live;
    }
    let post = load::post(&next, procs).await;
    let posted = post.complete;
    report.post = Some(post);
    if posted {
        report.back = Some(load::cold(&next, procs).await);
        report.live_after = gauge(&next.cu, RESIDENT_GAUGE).await;
    }
    Ok((report, next))
}
