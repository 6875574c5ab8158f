//! The write-side phases: spawn the extra processes, post the messages, the cold evaluation, and
//! the steady post-then-read loop. Plus what every phase shares: the [`Ctx`], message bodies,
//! and a parallel work queue.
//!
//! Invariants: every request's outcome is counted — a non-2xx answer or a failed request is an
//! error with its text, a 200 result carrying `Error` is a result error; a phase stops as soon
//! as the run must stop and says it is incomplete; message ids are kept in nonce order per
//! process, so the last id of a process is its newest message.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::args::Settings;
use super::client::{Answer, Conn};
use super::progress::Progress;
use super::report::{ColdReport, Errors, PostReport, SetupReport, SteadyReport};
use super::stats::{MAX_SAMPLES, Samples};
use super::stop::Stop;

/// Most processes asked for their progress when the cold phase is cut short.
const PROBE_MAX_PROCESSES: usize = 64;
/// Longest wait for one such answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every phase needs.
#[derive(Clone)]
pub struct Ctx {
    /// `host:port` of the CU and of the local scheduler.
    pub cu: Arc<str>,
    pub su: Arc<str>,
    pub settings: Arc<Settings>,
    pub stop: Stop,
    pub progress: Progress,
}

/// A process under load and the ids of its messages, oldest first.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: String,
    pub ids: Vec<String>,
}

impl Ctx {
    /// `[{name, value}]` of the configured tags.
    pub fn tags_json(&self) -> Value {
        Value::Array(self.settings.tags.iter().map(|(n, v)| json!({ "name": n, "value": v })).collect())
    }

    /// The scheduler's `POST /` body of one message to `pid`.
    fn message_body(&self, pid: &str) -> Bytes {
        let body = json!({ "process": pid, "tags": self.tags_json(), "data": self.settings.data });
        Bytes::from(body.to_string())
    }
}

/// `/result/{id}?process-id={pid}`.
pub fn result_path(pid: &str, id: &str) -> String {
    format!("/result/{id}?process-id={pid}")
}

/// The `Error` of a 200 result, if it has one.
pub fn result_error(a: &Answer) -> Option<String> {
    match a.json() {
        Some(Value::Object(m)) => m.get("Error").filter(|e| !e.is_null()).map(|e| {
            let text = e.to_string();
            text.chars().take(200).collect()
        }),
        _ => Some(format!("not a JSON object: {}", a.describe())),
    }
}

/// Runs `work(i, conn, out)` for every `i < n` on `workers` tasks, each with its own
/// connection to `authority` and its own output `T`, which `work` hands back with `false` to
/// stop the task early; returns each task's output.
async fn parallel<T, F, Fut>(authority: &str, workers: usize, n: usize, work: F) -> Vec<T>
where
    T: Default + Send + 'static,
    F: Fn(usize, Conn, T) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = (Conn, T, bool)> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..workers.clamp(1, n.max(1)) {
        let (next, work, authority) = (next.clone(), work.clone(), authority.to_string());
        set.spawn(async move {
            let mut conn = Conn::new(&authority);
            let mut out = T::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let go_on;
                (conn, out, go_on) = work(i, conn, out).await;
                if !go_on {
                    break;
                }
            }
            out
        });
    }
    let mut outs = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(o) => outs.push(o),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    outs
}

/// The tags of `pid` from the scheduler (`GET /processes/{pid}`), to spawn look-alikes.
async fn process_tags(ctx: &Ctx, pid: &str) -> anyhow::Result<Vec<Value>> {
    let mut conn = Conn::new(&ctx.su);
    let a = conn.get(&format!("/processes/{pid}")).await?;
    if !a.ok() {
        anyhow::bail!("the scheduler does not know process {pid}: {}", a.describe());
    }
    match a.json().and_then(|v| v.get("tags").cloned()) {
        Some(Value::Array(tags)) => Ok(tags),
        _ => anyhow::bail!("the scheduler's process {pid} has no tags: {}", a.describe()),
    }
}

/// Spawns `processes - 1` processes like `first` through the scheduler's `POST /`.
pub async fn setup(ctx: &Ctx, first: &str) -> anyhow::Result<(Vec<Proc>, SetupReport)> {
    let asked = ctx.settings.processes - 1;
    let mut procs = vec![Proc { pid: first.to_string(), ids: Vec::new() }];
    let start = Instant::now();
    if asked == 0 {
        let r = SetupReport { asked, spawned: 0, seconds: 0.0, errors: Errors::default(), complete: true };
        return Ok((procs, r));
    }
    let tags = process_tags(ctx, first).await?;
    let bar = ctx.progress.bar("spawn", asked as u64);
    #[derive(Default)]
    struct Out {
        pids: Vec<(usize, String)>,
        errors: Errors,
    }
    let (c, b) = (ctx.clone(), bar.clone());
    let outs = parallel(&ctx.su, ctx.settings.concurrency, asked, move |i, mut conn: Conn, mut out: Out| {
        let (ctx, bar) = (c.clone(), b.clone());
        let mut tags = tags.clone();
        for t in tags.iter_mut().filter(|t| t["name"] == "Name") {
            t["value"] = Value::String(format!("bench-{}", i + 1));
        }
        let body = Bytes::from(json!({ "tags": tags, "data": "" }).to_string());
        async move {
            let Some(r) = ctx.stop.bounded(conn.post_json("/", body)).await else { return (conn, out, false) };
            match r {
                Ok(a) if a.ok() => match a.json().and_then(|v| v["process"].as_str().map(str::to_string)) {
                    Some(pid) => out.pids.push((i, pid)),
                    None => out.errors.add(format!("spawn: no process id in {}", a.describe())),
                },
                Ok(a) => out.errors.add(format!("spawn: {}", a.describe())),
                Err(e) => out.errors.add(format!("spawn: {e:#}")),
            }
            bar.inc(1);
            (conn, out, true)
        }
    })
    .await;
    bar.finish_and_clear();
    let mut errors = Errors::default();
    let mut pids = Vec::new();
    for o in outs {
        pids.extend(o.pids);
        errors.merge(o.errors);
    }
    pids.sort();
    procs.extend(pids.into_iter().map(|(_, pid)| Proc { pid, ids: Vec::new() }));
    let spawned = procs.len() - 1;
    let complete = ctx.stop.reason().is_none();
    Ok((procs, SetupReport { asked, spawned, seconds: start.elapsed().as_secs_f64(), errors, complete }))
}

/// Posts `messages` messages to every process, the processes in parallel.
pub async fn post(ctx: &Ctx, procs: &mut [Proc]) -> PostReport {
    let m = ctx.settings.messages;
    let asked = (m * procs.len()) as u64;
    let bar = ctx.progress.bar("post", asked);
    let workers = ctx.settings.concurrency.min(procs.len());
    #[derive(Default)]
    struct Out {
        ids: Vec<(usize, Vec<String>)>,
        samples: Option<Samples>,
        errors: Errors,
        stopped: bool,
    }
    let pids: Arc<Vec<String>> = Arc::new(procs.iter().map(|p| p.pid.clone()).collect());
    let (c, b) = (ctx.clone(), bar.clone());
    let start = Instant::now();
    let outs = parallel(&ctx.su, workers, procs.len(), move |i, mut conn: Conn, mut out: Out| {
        let (ctx, bar, pids) = (c.clone(), b.clone(), pids.clone());
        let cap = MAX_SAMPLES / workers.max(1);
        async move {
            let samples = out.samples.get_or_insert_with(|| Samples::with_cap(cap));
            let body = ctx.message_body(&pids[i]);
            let mut ids = Vec::with_capacity(m);
            for _ in 0..m {
                let Some(r) = ctx.stop.bounded(conn.post_json("/", body.clone())).await else {
                    out.stopped = true;
                    break;
                };
                match r {
                    Ok(a) if a.ok() => {
                        samples.record(a.elapsed);
                        match a.json().and_then(|v| v["id"].as_str().map(str::to_string)) {
                            Some(id) => ids.push(id),
                            None => out.errors.add(format!("post: no message id in {}", a.describe())),
                        }
                    }
                    Ok(a) => out.errors.add(format!("post: {}", a.describe())),
                    Err(e) => out.errors.add(format!("post: {e:#}")),
                }
                bar.inc(1);
            }
            out.ids.push((i, ids));
            let go_on = !out.stopped;
            (conn, out, go_on)
        }
    })
    .await;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut samples = Samples::with_cap(MAX_SAMPLES);
    let mut errors = Errors::default();
    let mut stopped = false;
    for o in outs {
        for (i, ids) in o.ids {
            procs[i].ids = ids;
        }
        if let Some(s) = o.samples {
            samples.merge(s);
        }
        errors.merge(o.errors);
        stopped |= o.stopped;
    }
    let posted = procs.iter().map(|p| p.ids.len() as u64).sum::<u64>();
    PostReport {
        asked,
        posted,
        seconds,
        msg_per_s: posted as f64 / seconds.max(f64::MIN_POSITIVE),
        latency: samples.summary(),
        errors,
        complete: !stopped && posted == asked,
    }
}

/// Cold: `/result` of every process's last message, which makes the CU evaluate its whole log.
pub async fn cold(ctx: &Ctx, procs: &[Proc]) -> ColdReport {
    let work: Arc<Vec<(String, String, u64)>> = Arc::new(
        procs
            .iter()
            .filter_map(|p| p.ids.last().map(|last| (p.pid.clone(), result_path(&p.pid, last), p.ids.len() as u64)))
            .collect(),
    );
    let workers = ctx.settings.concurrency.min(work.len().max(1));
    let bar = ctx.progress.bar("cold", work.len() as u64);
    #[derive(Default)]
    struct Out {
        messages: u64,
        per_process: Vec<Duration>,
        errors: Errors,
        result_errors: Errors,
        stopped: bool,
    }
    let (c, b, w) = (ctx.clone(), bar.clone(), work.clone());
    let start = Instant::now();
    let outs = parallel(&ctx.cu, workers, work.len(), move |i, mut conn: Conn, mut out: Out| {
        let (ctx, bar, work) = (c.clone(), b.clone(), w.clone());
        async move {
            let (pid, path, n) = &work[i];
            let Some(r) = ctx.stop.bounded(conn.get(path)).await else {
                out.stopped = true;
                return (conn, out, false);
            };
            match r {
                Ok(a) if a.ok() => {
                    out.per_process.push(a.elapsed);
                    out.messages += n;
                    if let Some(e) = result_error(&a) {
                        out.result_errors.add(format!("cold {pid}: {e}"));
                    }
                }
                Ok(a) => out.errors.add(format!("cold {pid}: {}", a.describe())),
                Err(e) => out.errors.add(format!("cold {pid}: {e:#}")),
            }
            bar.inc(1);
            (conn, out, true)
        }
    })
    .await;
    let mut seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut samples = Samples::with_cap(MAX_SAMPLES);
    let (mut errors, mut result_errors) = (Errors::default(), Errors::default());
    let (mut messages, mut stopped) = (0, false);
    for o in outs {
        o.per_process.into_iter().for_each(|d| samples.record(d));
        errors.merge(o.errors);
        result_errors.merge(o.result_errors);
        messages += o.messages;
        stopped |= o.stopped;
    }
    if stopped && let Some(n) = evaluated_so_far(ctx, procs).await {
        // Cut short: what the CU had evaluated by now, over the time until now.
        messages = n;
        seconds = start.elapsed().as_secs_f64();
    }
    ColdReport {
        processes: work.len(),
        messages,
        seconds,
        msg_per_s: messages as f64 / seconds.max(f64::MIN_POSITIVE),
        per_process: samples.summary(),
        errors,
        result_errors,
        complete: !stopped,
    }
}

/// Messages the CU has evaluated, summed over `procs`, from the newest `/results` entry of each
/// (its cursor's ordinate is the nonce, and message nonces are 1, 2, …); `None` if not known.
async fn evaluated_so_far(ctx: &Ctx, procs: &[Proc]) -> Option<u64> {
    if procs.len() > PROBE_MAX_PROCESSES {
        return None;
    }
    let mut conn = Conn::new(&ctx.cu);
    let mut total = 0;
    for p in procs {
        let path = format!("/results/{}?sort=DESC&limit=1", p.pid);
        let a = tokio::time::timeout(PROBE_TIMEOUT, conn.get(&path)).await.ok()?.ok()?;
        let v = a.json().filter(|_| a.ok())?;
        let nonce = match v["edges"].as_array()?.first() {
            None => 0,
            Some(e) => crate::http::cursor::decode(e["cursor"].as_str()?)?.bound.ordinate?.parse::<u64>().ok()?,
        };
        total += nonce.min(p.ids.len() as u64);
    }
    Some(total)
}

/// Steady: post one message, then read its result; repeated round-robin over the processes
/// for `steady_messages` messages or `steady_seconds`, whichever comes first.
pub async fn steady(ctx: &Ctx, procs: &mut [Proc]) -> SteadyReport {
    let s = &ctx.settings;
    let asked = s.steady_messages;
    let budget = Duration::from_secs_f64(s.steady_seconds);
    let bar = ctx.progress.bar("steady", asked as u64);
    let (mut su, mut cu) = (Conn::new(&ctx.su), Conn::new(&ctx.cu));
    let (mut round, mut posts, mut results) =
        (Samples::with_cap(MAX_SAMPLES), Samples::with_cap(MAX_SAMPLES), Samples::with_cap(MAX_SAMPLES));
    let (mut errors, mut result_errors) = (Errors::default(), Errors::default());
    // Connections are opened before the clock starts.
    let _ = su.ready().await;
    let _ = cu.ready().await;
    let start = Instant::now();
    let mut done = 0u64;
    let mut complete = true;
    for k in 0..asked {
        if start.elapsed() >= budget || ctx.stop.reason().is_some() {
            complete = false;
            break;
        }
        let p = &mut procs[k % procs.len()];
        let body = ctx.message_body(&p.pid);
        let t0 = Instant::now();
        let Some(r) = ctx.stop.bounded(su.post_json("/", body)).await else {
            complete = false;
            break;
        };
        let id = match r {
            Ok(a) if a.ok() => match a.json().and_then(|v| v["id"].as_str().map(str::to_string)) {
                Some(id) => {
                    posts.record(a.elapsed);
                    id
                }
                None => {
                    errors.add(format!("steady post: no message id in {}", a.describe()));
                    continue;
                }
            },
            Ok(a) => {
                errors.add(format!("steady post: {}", a.describe()));
                continue;
            }
            Err(e) => {
                errors.add(format!("steady post: {e:#}"));
                continue;
            }
        };
        let Some(r) = ctx.stop.bounded(cu.get(&result_path(&p.pid, &id))).await else {
            complete = false;
            break;
        };
        match r {
            Ok(a) if a.ok() => {
                results.record(a.elapsed);
                round.record(t0.elapsed());
                if let Some(e) = result_error(&a) {
                    result_errors.add(format!("steady {id}: {e}"));
                }
                done += 1;
            }
            Ok(a) => errors.add(format!("steady result {id}: {}", a.describe())),
            Err(e) => errors.add(format!("steady result {id}: {e:#}")),
        }
        p.ids.push(id);
        bar.inc(1);
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    SteadyReport {
        asked,
        messages: done,
        seconds,
        msg_per_s: done as f64 / seconds.max(f64::MIN_POSITIVE),
        round_trip: round.summary(),
        post: posts.summary(),
        result: results.summary(),
        errors,
        result_errors,
        complete,
    }
}
