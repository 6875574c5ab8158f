//! The restart phase (`--restart`): after the cold phase, the child is stopped the way an
//! operator stops it (SIGINT: evaluations drained, a checkpoint of every process that evaluated
//! since its last one), started again on the same data, and every process is asked one new
//! message. That measures what a restart costs a provider: the stop, the start until the CU
//! listens, and the time until every process is back (its memory restored from its checkpoint,
//! or replayed from the scheduler when it has none) and has evaluated one more message.
//!
//! The processes the server holds live (`metalcu_resident_processes` of `/metrics`) are read
//! before the stop and after the last answer.
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
        progress: ctx.progress.clone(),
    };
    let mut report =
        RestartReport { live_before, stop_seconds, start_seconds, post: None, back: None, live_after: None };
    let post = load::post(&next, procs).await;
    let posted = post.complete;
    report.post = Some(post);
    if posted {
        report.back = Some(load::cold(&next, procs).await);
        report.live_after = gauge(&next.cu, RESIDENT_GAUGE).await;
    }
    Ok((report, next))
}
