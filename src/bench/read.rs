//! The read-side phases: cached `/result` under concurrent keep-alive load, and dry-runs.
//!
//! Cached: `concurrency` connections, opened before the clock starts, each reading the
//! already-evaluated messages round-robin (worker w starts at message w and steps by the number
//! of workers) as fast as answers come, for `read_seconds`. The load generator runs on the same
//! machine and shares its CPUs with the server; the phase reports the CPU both used, so the
//! figure can be read honestly. Only the status is checked per answer (parsing every body would
//! cost the generator more CPU than the server spends); the bodies were checked when evaluated.
//!
//! Dry-run: one at a time on one connection, round-robin over the processes, with the message
//! data and tags of the run plus aoconnect's protocol tags; the first is reported apart (it may
//! build per-process state), the rest are the warm figure.
//!
//! Invariants: every answer is counted (non-2xx → error); requests cut by the end of the phase
//! are neither counted nor timed; sample memory is bounded by `MAX_SAMPLES` per phase.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::args::DRY_RUN_MAX_TIME;
use super::client::Conn;
use super::load::{Ctx, Proc, result_error, result_path};
use super::report::{CachedReport, DryRunReport, Errors};
use super::stats::{MAX_SAMPLES, Samples};
use super::sys;

/// Steps of the cached phase's progress bar (it is time-based).
const CACHED_BAR_STEPS: u64 = 100;
/// Pause after a failed request (no connection), so a dead server is not hammered in a loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Cached `/result`: `concurrency` connections for `read_seconds`.
pub async fn cached(ctx: &Ctx, procs: &[Proc], server_pid: Option<u32>) -> CachedReport {
    let s = &ctx.settings;
    let paths: Arc<Vec<String>> =
        Arc::new(procs.iter().flat_map(|p| p.ids.iter().map(|id| result_path(&p.pid, id))).collect());
    let workers = s.concurrency;
    let cap = MAX_SAMPLES / workers;
    let mut errors = Errors::default();
    if paths.is_empty() {
        errors.add("cached: no evaluated message to read");
        return CachedReport {
            connections: workers,
            messages: 0,
            seconds: 0.0,
            requests: 0,
            req_per_s: 0.0,
            latency: None,
            errors,
            server_cpu_cores: None,
            bench_cpu_cores: None,
            complete: false,
        };
    }
    // Open every connection first.
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut c = Conn::new(&ctx.cu);
        if let Err(e) = c.ready().await {
            errors.add(format!("cached: connecting: {e:#}"));
        }
        conns.push(c);
    }
    let requested = Duration::from_secs_f64(s.read_seconds);
    let duration = requested.min(ctx.stop.remaining());
    let bar = ctx.progress.bar("cached", CACHED_BAR_STEPS);
    let (server_cpu0, bench_cpu0) = (server_pid.and_then(|p| sys::cpu_seconds(Some(p))), sys::cpu_seconds(None));
    let start = Instant::now();
    let end = start + duration;
    let mut set = JoinSet::new();
    for (w, mut conn) in conns.into_iter().enumerate() {
        let (paths, stop) = (paths.clone(), ctx.stop.clone());
        set.spawn(async move {
            let mut samples = Samples::with_cap(cap);
            let mut errors = Errors::default();
            let n = paths.len();
            {
                let work = async {
                    let mut i = w;
                    loop {
                        match conn.get(&paths[i % n]).await {
                            Ok(a) if a.ok() => samples.record(a.elapsed),
                            Ok(a) => {
                                samples.record(a.elapsed);
                                errors.add(format!("cached {}: {}", paths[i % n], a.describe()));
                            }
                            Err(e) => {
                                errors.add(format!("cached {}: {e:#}", paths[i % n]));
                                tokio::time::sleep(ERROR_PAUSE).await;
                            }
                        }
                        i += workers;
                    }
                };
                tokio::select! {
                    _ = work => {}
                    _ = tokio::time::sleep_until(end) => {}
                    _ = stop.wait() => {}
                }
            }
            (samples, errors)
        });
    }
    let ticker = async {
        loop {
            tokio::time::sleep(duration / CACHED_BAR_STEPS as u32).await;
            bar.inc(1);
        }
    };
    tokio::select! {
        _ = ticker => {}
        _ = tokio::time::sleep_until(end) => {}
        _ = ctx.stop.wait() => {}
    }
    let complete = start.elapsed() >= requested;
    let mut samples = Samples::with_cap(MAX_SAMPLES);
    while let Some(r) = set.join_next().await {
        if let Ok((s, e)) = r {
            samples.merge(s);
            errors.merge(e);
        }
    }
    let seconds = start.elapsed().as_secs_f64().min(duration.as_secs_f64()).max(f64::MIN_POSITIVE);
    let cores = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (b - a) / seconds);
    let server_cpu_cores = cores(server_cpu0, server_pid.and_then(|p| sys::cpu_seconds(Some(p))));
    let bench_cpu_cores = cores(bench_cpu0, sys::cpu_seconds(None));
    bar.finish_and_clear();
    let requests = samples.count();
    CachedReport {
        connections: workers,
        messages: paths.len(),
        seconds,
        requests,
        req_per_s: requests as f64 / seconds,
        latency: samples.summary(),
        errors,
        server_cpu_cores,
        bench_cpu_cores,
        complete,
    }
}

/// The `/dry-run` body for `pid`: aoconnect's defaults with the run's data and tags.
fn dry_run_body(ctx: &Ctx, pid: &str) -> Bytes {
    let mut tags = ctx.tags_json();
    if let Some(t) = tags.as_array_mut() {
        for (n, v) in [("Data-Protocol", "ao"), ("Type", "Message"), ("Variant", "ao.TN.1")] {
            t.push(json!({ "name": n, "value": v }));
        }
    }
    let body = json!({
        "Id": "1234",
        "Target": pid,
        "Owner": "1234",
        "Anchor": "0",
        "Data": ctx.settings.data,
        "Tags": tags,
    });
    Bytes::from(body.to_string())
}

/// `dry_runs` dry-runs, one at a time, bounded by [`DRY_RUN_MAX_TIME`].
pub async fn dry_run(ctx: &Ctx, procs: &[Proc]) -> DryRunReport {
    let asked = ctx.settings.dry_runs;
    let bar = ctx.progress.bar("dry-run", asked as u64);
    let bodies: Vec<(String, Bytes)> =
        procs.iter().map(|p| (format!("/dry-run?process-id={}", p.pid), dry_run_body(ctx, &p.pid))).collect();
    let mut conn = Conn::new(&ctx.cu);
    let _ = conn.ready().await;
    let (mut errors, mut result_errors) = (Errors::default(), Errors::default());
    let mut warm = Samples::with_cap(MAX_SAMPLES);
    let mut first_ms = None;
    let mut count = 0u64;
    let mut complete = true;
    let start = Instant::now();
    for k in 0..asked {
        if start.elapsed() >= DRY_RUN_MAX_TIME || ctx.stop.reason().is_some() {
            complete = false;
            break;
        }
        let (path, body) = &bodies[k % bodies.len()];
        let Some(r) = ctx.stop.bounded(conn.post_json(path, body.clone())).await else {
            complete = false;
            break;
        };
        match r {
            Ok(a) if a.ok() => {
                if k == 0 {
                    first_ms = Some(a.elapsed.as_secs_f64() * 1e3);
                } else {
                    warm.record(a.elapsed);
                }
                count += 1;
                if let Some(e) = result_error(&a) {
                    result_errors.add(format!("dry-run {path}: {e}"));
                }
            }
            Ok(a) => errors.add(format!("dry-run {path}: {}", a.describe())),
            Err(e) => errors.add(format!("dry-run {path}: {e:#}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    DryRunReport { asked, count, first_ms, warm: warm.summary(), errors, result_errors, complete }
}
