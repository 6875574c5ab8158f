//! Worker-pool scaling (issue 5): aggregate Eval messages per second with many resident aos1
//! processes, evaluated through [`WorkerPool`] on 1 worker and on 2 workers, in one run.
//!
//! Setup: aos1 (`aos1-emscripten2.wasm`, format 2) booted once with the golden's first 4 steps;
//! [`PROCESSES`] resident processes resumed from that memory image. Each round, every process
//! gets [`MESSAGES`] warm Eval messages (`1 + 1`), one at a time per process (the runtime's
//! order: a process's next message is submitted when the previous one finished), all processes
//! at once. The instance moves into the job and back, as in the runtime.
//!
//! The interleaved table (1 and 2 workers alternating, [`ROUNDS`] rounds, median) is the figure
//! PERF.md records: background load on this shared machine hits both alike. Criterion's group
//! follows for the record. Needs `../shared` (or `$METALCU_SHARED`).
//! Run: `cargo bench --bench pool -- --warm-up-time 1 --measurement-time 5`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "../tests/common/mod.rs"]
mod common;
use metalcu::engine::{Engine, EngineConfig, Instance, LoadedModule, ModuleFormat, ProcessOptions};
use metalcu::pool::{PoolConfig, WorkerPool};
use serde_json::{Value, json};

/// Resident processes.
const PROCESSES: usize = 32;
/// Messages per process per round.
const MESSAGES: usize = 10;
/// Interleaved rounds per worker count.
const ROUNDS: usize = 5;

struct Fleet {
    procs: Vec<Option<Instance>>,
    msg: Arc<Value>,
    env: Arc<Value>,
}

fn fleet(e: &Engine, m: &Arc<LoadedModule>, shared: &Path) -> Fleet {
    let mut boot = e.instantiate(m, ProcessOptions::default()).unwrap();
    for (msg, env) in common::golden_steps(shared, "aos1-basics", 4) {
        boot.handle(&msg, &env);
    }
    let image = boot.memory_image();
    let procs =
        (0..PROCESSES).map(|_| Some(e.instantiate_image(m, ProcessOptions::default(), &image).unwrap())).collect();
    let (mut msg, env) = common::golden_steps(shared, "aos1-basics", 2).pop().unwrap();
    msg["Data"] = json!("1 + 1");
    Fleet { procs, msg: Arc::new(msg), env: Arc::new(env) }
}

/// One round: every process evaluates `MESSAGES` messages through `pool`; returns the time.
fn round(rt: &tokio::runtime::Runtime, pool: &WorkerPool, f: &mut Fleet) -> Duration {
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(f.procs.len());
        for (i, slot) in f.procs.iter_mut().enumerate() {
            let (pool, msg, env) = (pool.clone(), f.msg.clone(), f.env.clone());
            let mut inst = slot.take().unwrap();
            tasks.push(tokio::spawn(async move {
                let key = format!("process-{i}");
                for _ in 0..MESSAGES {
                    let (m, e) = (msg.clone(), env.clone());
                    inst = pool
                        .run(&key, move || {
                            let out = inst.handle(&m, &e);
                            assert!(!out.failed(), "Eval failed");
                            inst
                        })
                        .await
                        .unwrap();
                }
                inst
            }));
        }
        for (slot, t) in f.procs.iter_mut().zip(tasks) {
            *slot = Some(t.await.unwrap());
        }
    });
    start.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn benches(c: &mut Criterion) {
    let Some(shared) = common::shared_dir() else {
        eprintln!("NOTE: ../shared not found (set METALCU_SHARED): pool benches skipped");
        return;
    };
    let e = Engine::new(EngineConfig { pool_slots: (PROCESSES + 4) as u32, ..EngineConfig::default() }).unwrap();
    let wasm = std::fs::read(shared.join("fixtures/modules/aos1-emscripten2.wasm")).unwrap();
    let m = e.load(&wasm, ModuleFormat::Emscripten2).unwrap();
    let mut f = fleet(&e, &m, &shared);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let pools: Vec<WorkerPool> =
        [1, 2].iter().map(|&w| WorkerPool::new(&PoolConfig { workers: w, ..PoolConfig::default() }).unwrap()).collect();
    let per_round = (PROCESSES * MESSAGES) as f64;

    // Warm-up, then interleaved rounds.
    for p in &pools {
        round(&rt, p, &mut f);
    }
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, p) in pools.iter().enumerate() {
            rates[i].push(per_round / round(&rt, p, &mut f).as_secs_f64());
        }
    }
    let (one, two) = (median(rates[0].clone()), median(rates[1].clone()));
    println!(
        "\npool scaling, aos1 warm Eval, {PROCESSES} processes x {MESSAGES} messages a round, median of {ROUNDS}:"
    );
    println!("| workers | msg/s | rounds (msg/s) |");
    println!("|---|---|---|");
    for (i, w) in [1, 2].iter().enumerate() {
        let all: Vec<String> = rates[i].iter().map(|r| format!("{r:.0}")).collect();
        println!("| {w} | {:.0} | {} |", median(rates[i].clone()), all.join(", "));
    }
    println!("2 workers / 1 worker: {:.2}x", two / one);
    for p in &pools {
        let s: Vec<String> = p
            .stats()
            .iter()
            .map(|s| format!("w{} cpu {:?} ran {} stolen {}", s.worker, s.cpu, s.jobs_run, s.jobs_stolen))
            .collect();
        println!("{} worker(s): {}", p.workers(), s.join("; "));
    }

    let mut g = c.benchmark_group("pool aos1 Eval round");
    g.sample_size(10).throughput(Throughput::Elements(per_round as u64));
    for (i, p) in pools.iter().enumerate() {
        g.bench_function(format!("{} worker(s), {PROCESSES} processes x {MESSAGES}", i + 1), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| round(&rt, p, &mut f)).sum())
        });
    }
    g.finish();
}

criterion_group!(pool_benches, benches);
criterion_main!(pool_benches);
