//! `metalcu bench`: the end-to-end load bench a provider runs to measure a CU.
//!
//! It starts `metalcu dev` as a child process (or drives a running CU + local scheduler), then
//! runs, each measured:
//! 1. setup — spawn `processes - 1` more processes through the scheduler's `POST /`;
//! 2. post — `messages` messages per process to the scheduler (the scheduler's speed);
//! 3. cold — `/result` of each process's last message: the CU evaluates every log → msg/s;
//!    with `--restart`, then the server is stopped, started again on its data, and every process
//!    answers one new message ([`restart`]);
//! 4. steady — post one message, read its result, repeat → msg/s and per-message latency;
//! 5. cached — concurrent keep-alive `/result` of evaluated messages → req/s and latency;
//! 6. dry-run — one at a time → latency of the first and of the warm ones;
//!
//! and the server's resident memory after each phase and its peak (VmHWM) at the end. The
//! report goes to stdout as a table (figures next to the reference CU's, with ratios), to
//! `--json` as JSON, with progress on stderr when it is a terminal.
//!
//! Files: [`args`] (command line, bounds), [`stack`] (the child and its lifetime), [`client`]
//! (HTTP/1.1 keep-alive connections), [`load`] (write-side phases), [`read`] (read-side phases),
//! [`stats`] (latency percentiles), [`stop`] (time bound, Ctrl-C), [`sys`] (`/proc`),
//! [`report`] (figures, references, renderings), [`progress`] (bars).
//!
//! Invariants: the child never outlives the run (see `stack`); the run ends by itself within
//! `--max-seconds` (plus the child's stop grace) and reports what it measured; every error is
//! counted and makes the run fail (exit status 1) after the report is printed.

mod args;
mod client;
mod load;
mod progress;
mod read;
mod report;
mod restart;
mod stack;
mod stats;
mod stop;
mod sys;

use std::sync::Arc;
use std::time::Duration;

pub use args::BenchArgs;
use args::Settings;
use load::Ctx;
use progress::Progress;
use report::{PhaseMemory, Report};
use stack::Stack;
use stop::{Stop, StopReason};

/// How long the runtime waits for leftover tasks (open connections) when the run is over.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// Runs the bench.
pub fn main(args: BenchArgs) -> anyhow::Result<()> {
    let settings = Settings::from_args(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(run(settings));
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    print!("{}", report.table());
    if let Some(path) = &report.settings.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if let Some(f) = &report.failure {
        anyhow::bail!("the bench failed: {f}");
    }
    if report.error_total > 0 {
        anyhow::bail!("{} errors during the run (listed above)", report.error_total);
    }
    if report.stopped == Some(StopReason::Interrupted) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}

/// Starts the stack, runs the phases, stops the stack.
async fn run(settings: Settings) -> Report {
    let mut report = Report::new(settings.clone());
    let stop = Stop::start(Duration::from_secs_f64(settings.max_seconds));
    // On the main thread (block_on polls this future there), as `stack` requires.
    let mut stack = match Stack::start(&settings.target, || stop.reason().is_some()) {
        Ok(s) => s,
        Err(e) => {
            report.failure = Some(format!("{e:#}"));
            report.stopped = stop.reason();
            report.finish();
            return report;
        }
    };
    report.stack = Some(stack.info.clone());
    let i = &stack.info;
    eprintln!(
        "metalcu bench: CU http://{}  scheduler http://{}  process {}{}",
        i.cu,
        i.su,
        i.process,
        i.server_pid.map_or(String::new(), |p| format!("  (server pid {p})"))
    );
    if let Err(e) = phases(&settings, &mut stack, &stop, &mut report).await {
        report.failure = Some(format!("{e:#}"));
    }
    report.stopped = stop.reason();
    report.memory_end = stack.info.server_pid.and_then(sys::memory);
    if let Some(child) = &mut stack.child {
        // Stopping checkpoints every live process: the time left in the run, at least the grace.
        if let Some(problem) = child.stop_within(stop.remaining().max(stack::STOP_GRACE)) {
            report.failure = Some(match report.failure.take() {
                Some(f) => format!("{f}; {problem}"),
                None => problem,
            });
        }
        if !matches!(settings.target, args::Target::Child { data_dir: None, keep_data: false, .. }) {
            eprintln!("metalcu bench: the server's data and log are kept in {}", child.root().display());
        }
    }
    report.finish();
    report
}

fn note_memory(report: &mut Report, server_pid: Option<u32>, after: &'static str) {
    if let Some(memory) = server_pid.and_then(sys::memory) {
        report.memory.push(PhaseMemory { after, memory });
    }
}

/// Fails if the child has exited (crashed) or the run must stop; `Ok(false)` = stop quietly.
fn go_on(stack: &mut Stack, stop: &Stop) -> anyhow::Result<bool> {
    if let Some(c) = &mut stack.child
        && let Some(status) = c.exited()
    {
        anyhow::bail!("the server exited during the run ({status})");
    }
    Ok(stop.reason().is_none())
}

async fn phases(settings: &Settings, stack: &mut Stack, stop: &Stop, report: &mut Report) -> anyhow::Result<()> {
    let ctx = Ctx {
        cu: Arc::from(stack.info.cu.as_str()),
        su: Arc::from(stack.info.su.as_str()),
        settings: Arc::new(settings.clone()),
        stop: stop.clone(),
        progress: Progress::new(),
    };
    let pid = stack.info.server_pid;
    note_memory(report, pid, "start");
    let (mut procs, setup) = load::setup(&ctx, &stack.info.process).await?;
    if setup.asked > 0 {
        report.setup = Some(setup);
        note_memory(report, pid, "setup");
    }
    if !go_on(stack, stop)? {
        return Ok(());
    }
    report.post = Some(load::post(&ctx, &mut procs).await);
    note_memory(report, pid, "post");
    if !go_on(stack, stop)? {
        return Ok(());
    }
    report.cold = Some(load::cold(&ctx, &procs).await);
    note_memory(report, pid, "cold");
    report.live_after_cold = restart::gauge(&ctx.cu, restart::RESIDENT_GAUGE).await;
    let mut ctx = ctx;
    let mut pid = pid;
    if settings.restart {
        if !go_on(stack, stop)? {
            return Ok(());
        }
        let (r, next) = restart::run(&ctx, stack, &mut procs).await?;
        report.restart = Some(r);
        (ctx, pid) = (next, stack.info.server_pid);
        report.stack = Some(stack.info.clone());
        note_memory(report, pid, "restart");
    }
    if settings.steady_messages > 0 {
        if !go_on(stack, stop)? {
            return Ok(());
        }
        report.steady = Some(load::steady(&ctx, &mut procs).await);
        note_memory(report, pid, "steady");
    }
    if !go_on(stack, stop)? {
        return Ok(());
    }
    report.cached = Some(read::cached(&ctx, &procs, pid).await);
    note_memory(report, pid, "cached");
    if settings.dry_runs > 0 {
        if !go_on(stack, stop)? {
            return Ok(());
        }
        report.dry_run = Some(read::dry_run(&ctx, &procs).await);
        note_memory(report, pid, "dry-run");
    }
    go_on(stack, stop)?;
    Ok(())
}
