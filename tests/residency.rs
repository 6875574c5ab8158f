//! Checkpoints and residency in the runtime: processes evicted under a tiny memory budget come
//! back from their checkpoints with every result and state hash identical to a runtime that never
//! evicts; a restarted runtime resumes from checkpoints; a corrupt newest checkpoint is skipped;
//! an unwritable checkpoint directory never stops evaluation.
//!
//! The counter module returns how many times it ran, so a process resumed from the wrong memory
//! (or replayed from an empty one) shows in every later result.

mod common;

use std::sync::Arc;

use metalcu::checkpoint::{CheckpointPolicy, CheckpointStore};
use metalcu::engine::{Engine, EngineConfig};
use metalcu::gateway::local::LocalGateway;
use metalcu::pool::{PoolConfig, WorkerPool};
use metalcu::process::evaluator::Runtime;
use metalcu::process::options::Policy;
use metalcu::store::{Evaluation, MemoryStore, Query, Store};
use metalcu::su::local::{DEV_OWNER, LocalScheduler};
use metalcu::su::types::Tag;

const T0: u64 = 1_800_000_000_000;
const PROCESSES: usize = 8;

fn tag(n: &str, v: &str) -> Tag {
    Tag { name: n.into(), value: v.into() }
}

struct World {
    su: Arc<LocalScheduler>,
    gateway: Arc<LocalGateway>,
    engine: Arc<Engine>,
    pids: Vec<String>,
    dir: tempfile::TempDir,
}

fn world() -> World {
    world_of(&common::counter_wat(0, 0))
}

fn world_of(wat: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let su = common::stepping_scheduler(dir.path(), T0 as i64);
    let gateway = Arc::new(LocalGateway::default());
    let wasm = wat::parse_str(wat).unwrap();
    let module_tags = common::module_tags("wasm32-unknown-emscripten4");
    let module = gateway.register(DEV_OWNER, module_tags, wasm).unwrap();
    let pids = (0..PROCESSES)
        .map(|i| {
            let tags = vec![
                tag("Data-Protocol", "ao"),
                tag("Type", "Process"),
                tag("Module", &module),
                tag("Name", &format!("p{i}")),
            ];
            su.spawn(DEV_OWNER, tags, String::new()).unwrap().process_id
        })
        .collect();
    let engine = Arc::new(Engine::new(EngineConfig { pool_slots: 32, ..EngineConfig::default() }).unwrap());
    World { su: Arc::new(su), gateway, engine, pids, dir }
}

impl World {
    fn runtime(&self, store: Arc<MemoryStore>) -> Runtime<LocalScheduler, LocalGateway> {
        Runtime::new(self.engine.clone(), store, self.su.clone(), self.gateway.clone(), Policy::default())
    }
    fn post(&self, pid: &str, n: usize) {
        for i in 0..n {
            self.su.post(pid, DEV_OWNER, vec![], format!("m{i}")).unwrap();
        }
    }
    fn checkpoints(&self, every: u64) -> (Arc<CheckpointStore>, CheckpointPolicy) {
        let files = CheckpointStore::open(self.dir.path().join("checkpoints")).unwrap();
        (Arc::new(files), CheckpointPolicy { every_messages: Some(every), every: None, ..CheckpointPolicy::default() })
    }
}

fn stored(store: &MemoryStore, pid: &str) -> Vec<Evaluation> {
    let q = Query { after: None, until: None, descending: false, limit: 1000, cron_only: false, hide_errors: false };
    store.list(pid, &q).unwrap().0
}

/// Position, result and state hash of every evaluation of `pid`.
fn trace(store: &MemoryStore, pid: &str) -> Vec<(u64, serde_json::Value, [u8; 32])> {
    stored(store, pid).into_iter().map(|e| (e.position.nonce, e.result, e.state_hash)).collect()
}

/// The counter's outputs are 1, 2, … n: every message evaluated once, in order, on its memory.
fn assert_counted(store: &MemoryStore, pid: &str, n: usize) {
    let got: Vec<String> =
        stored(store, pid).iter().map(|e| e.result["Output"].as_str().unwrap_or("?").to_string()).collect();
    let want: Vec<String> = (1..=n).map(|k| k.to_string()).collect();
    assert_eq!(got, want, "process {pid}");
}

fn metric(rt: &Runtime<LocalScheduler, LocalGateway>, name: &str) -> u64 {
    let text = rt.metrics().encode();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_processes_come_back_from_checkpoints_with_identical_results() {
    let w = world();
    let (files, policy) = w.checkpoints(3);
    let tight_store = Arc::new(MemoryStore::new());
    // A budget of one byte: every use of a process evicts every other one.
    let tight = w.runtime(tight_store.clone()).with_checkpoints(files.clone(), policy).with_residency(1, None);
    let free_store = Arc::new(MemoryStore::new());
    let free = w.runtime(free_store.clone());
    for round in 0..4 {
        for pid in &w.pids {
            w.post(pid, 2 + round);
            tight.evaluate_to(pid, None).await.unwrap();
            free.evaluate_to(pid, None).await.unwrap();
            assert_eq!(tight.residency().0, 1, "only the process just used stays resident");
        }
    }
    let per_process = 1 + (2 + 3 + 4 + 5);
    for pid in &w.pids {
        assert_counted(&tight_store, pid, per_process);
        assert_eq!(trace(&tight_store, pid), trace(&free_store, pid), "evictions changed nothing");
        assert!(!files.list(pid).unwrap().is_empty(), "checkpoints written for {pid}");
    }
    assert!(metric(&tight, "metalcu_evictions_total") >= (PROCESSES * 4 - 1) as u64);
    assert!(metric(&tight, "metalcu_checkpoint_restore_duration_seconds_count") >= PROCESSES as u64 * 3);
    assert_eq!(free.residency().0, PROCESSES);
}

/// More processes than the engine's instance pool holds: the runtime keeps at most the pool's
/// slots less a headroom resident and evicts the rest, so no process ever finds the pool full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residency_never_exceeds_the_instance_pool() {
    let w = world();
    let engine = Arc::new(Engine::new(EngineConfig { pool_slots: 8, ..EngineConfig::default() }).unwrap());
    let store = Arc::new(MemoryStore::new());
    let one_worker = WorkerPool::new(&PoolConfig { workers: 1, ..PoolConfig::default() }).unwrap();
    let rt =
        Runtime::new(engine, store.clone(), w.su.clone(), w.gateway.clone(), Policy::default()).with_pool(one_worker);
    for round in 0..2 {
        for pid in &w.pids {
            w.post(pid, 1);
            rt.evaluate_to(pid, None).await.unwrap();
            assert!(rt.residency().0 <= 8 - 3, "round {round}: {} resident", rt.residency().0);
        }
    }
    for pid in &w.pids {
        assert_counted(&store, pid, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runtime_resumes_from_checkpoints_skipping_a_corrupt_one() {
    let w = world();
    let store = Arc::new(MemoryStore::new());
    let pid = w.pids[0].clone();
    {
        let (files, policy) = w.checkpoints(4);
        let rt = w.runtime(store.clone()).with_checkpoints(files, policy);
        w.post(&pid, 10);
        rt.evaluate_to(&pid, None).await.unwrap();
        // 3 and 7 were written by count (the spawn is nonce 0), shutdown writes 10; keep = 2.
        let report = rt.shutdown(std::time::Duration::from_secs(10)).await;
        assert_eq!((report.checkpointed, report.failed, report.abandoned), (1, 0, 0));
    }
    // Corrupt the newest checkpoint's memory (a byte in the last stored page).
    let ckdir = w.dir.path().join("checkpoints");
    let (files, policy) = w.checkpoints(4);
    let entries = files.list(&pid).unwrap();
    assert_eq!(entries.iter().map(|e| e.position.nonce).collect::<Vec<_>>(), vec![7, 10]);
    let newest = &entries.last().unwrap().path;
    let mut bytes = std::fs::read(newest).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0xff;
    std::fs::write(newest, bytes).unwrap();
    drop(files);
    // Restart: resumes from the older checkpoint (7), re-evaluates 8 to 10 (identical to what is
    // stored), then goes on.
    let files = Arc::new(CheckpointStore::open(&ckdir).unwrap());
    let rt = w.runtime(store.clone()).with_checkpoints(files, policy);
    w.post(&pid, 3);
    rt.evaluate_to(&pid, None).await.unwrap();
    assert_counted(&store, &pid, 14);
    assert_eq!(metric(&rt, "metalcu_checkpoint_restore_duration_seconds_count"), 1);
    let fresh = Arc::new(MemoryStore::new());
    w.runtime(fresh.clone()).evaluate_to(&pid, None).await.unwrap();
    assert_eq!(trace(&store, &pid), trace(&fresh, &pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_checkpoint_directory_never_stops_evaluation() {
    let w = world();
    let store = Arc::new(MemoryStore::new());
    let pid = w.pids[1].clone();
    let (files, policy) = w.checkpoints(2);
    // The process's checkpoint directory cannot be created: a file stands where it would go.
    std::fs::write(files.dir().join(&pid), b"not a directory").unwrap();
    let rt = w.runtime(store.clone()).with_checkpoints(files.clone(), policy).with_residency(1, None);
    w.post(&pid, 6);
    rt.evaluate_to(&pid, None).await.unwrap();
    // Another process evicts it (its checkpoint fails too); it comes back by replay.
    w.post(&w.pids[2], 1);
    rt.evaluate_to(&w.pids[2], None).await.unwrap();
    w.post(&pid, 2);
    rt.evaluate_to(&pid, None).await.unwrap();
    assert_counted(&store, &pid, 9);
    assert_eq!(metric(&rt, "metalcu_checkpoint_write_duration_seconds_count"), 1, "only the other process's write");
    assert!(std::fs::read(files.dir().join(&pid)).unwrap() == b"not a directory", "nothing written over it");
}

/// A restart with prewarming: the processes come back live from their checkpoints before any
/// request (the newest checkpoint of one is corrupt: skipped, the older one used), capped at
/// the limit, and every later result equals a runtime that never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewarm_brings_checkpointed_processes_back_live_before_any_request() {
    let w = world();
    let store = Arc::new(MemoryStore::new());
    {
        let (files, policy) = w.checkpoints(3);
        let rt = w.runtime(store.clone()).with_checkpoints(files, policy);
        for pid in &w.pids {
            w.post(pid, 7);
            rt.evaluate_to(pid, None).await.unwrap();
        }
        let report = rt.shutdown(std::time::Duration::from_secs(10)).await;
        assert_eq!((report.checkpointed, report.failed, report.abandoned), (PROCESSES, 0, 0));
    }
    let ckdir = w.dir.path().join("checkpoints");
    let corrupt = w.pids[0].clone();
    {
        let (files, _) = w.checkpoints(3);
        let newest = files.list(&corrupt).unwrap().last().unwrap().path.clone();
        let mut bytes = std::fs::read(&newest).unwrap();
        bytes[800] ^= 0xff; // a reserved header byte: the header hash no longer matches
        std::fs::write(&newest, bytes).unwrap();
    }
    // A limit below the processes checkpointed: the most recent ones only.
    {
        let (_, policy) = w.checkpoints(3);
        let files = Arc::new(CheckpointStore::open(&ckdir).unwrap());
        let rt = w.runtime(store.clone()).with_checkpoints(files, policy);
        let report = rt.prewarm(3).await;
        assert_eq!((report.candidates, report.loaded, report.failed), (3, 3, 0), "{report:?}");
        assert_eq!(rt.residency().0, 3);
    }
    let (_, policy) = w.checkpoints(3);
    let files = Arc::new(CheckpointStore::open(&ckdir).unwrap());
    let rt = w.runtime(store.clone()).with_checkpoints(files, policy);
    let report = rt.prewarm(1000).await;
    assert_eq!(
        (report.candidates, report.verified, report.skipped_files, report.loaded, report.already_live, report.failed),
        (PROCESSES, PROCESSES, 1, PROCESSES, 0, 0),
        "{report:?}"
    );
    assert_eq!(rt.residency().0, PROCESSES, "every process live before any request");
    assert_eq!(metric(&rt, "metalcu_checkpoint_restore_duration_seconds_count"), PROCESSES as u64);
    assert_eq!(metric(&rt, "metalcu_evaluations_total{outcome=\"ok\"}"), 0, "prewarming evaluates nothing");
    // A second prewarm finds them all live.
    assert_eq!(rt.prewarm(1000).await.already_live, PROCESSES);
    for pid in &w.pids {
        w.post(pid, 2);
        rt.evaluate_to(pid, None).await.unwrap();
        assert_counted(&store, pid, 1 + 7 + 2);
    }
    assert_eq!(metric(&rt, "metalcu_checkpoint_restore_duration_seconds_count"), PROCESSES as u64, "no reload");
    let fresh = Arc::new(MemoryStore::new());
    let uninterrupted = w.runtime(fresh.clone());
    for pid in &w.pids {
        uninterrupted.evaluate_to(pid, None).await.unwrap();
        assert_eq!(trace(&store, pid), trace(&fresh, pid), "{pid}");
    }
}

/// A failed message rolls the memory back to the checkpoint file the process resumed from (or
/// last wrote), read again from disk: results and state hashes equal a runtime that keeps
/// everything in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_messages_roll_back_from_the_checkpoint_file() {
    // The counter (1 after the spawn, k + 1 after message k) traps from 9 on: messages 8.. fail.
    let w = world_of(&common::counter_trap_wat(9));
    let pid = w.pids[0].clone();
    let store = Arc::new(MemoryStore::new());
    {
        let (files, policy) = w.checkpoints(3);
        let rt = w.runtime(store.clone()).with_checkpoints(files, policy);
        w.post(&pid, 5);
        rt.evaluate_to(&pid, None).await.unwrap();
        rt.shutdown(std::time::Duration::from_secs(10)).await;
    }
    let (files, policy) = w.checkpoints(3);
    let rt = w.runtime(store.clone()).with_checkpoints(files, policy);
    // Resumed from the file at nonce 5 (written at shutdown); 6 and 7 evaluate; 8 fails and rolls
    // back to that file plus a replay of 6 and 7; the checkpoint due by count is then written
    // (the rollback image is now that file, nothing to replay); 9 to 11 fail and roll back to it.
    w.post(&pid, 6);
    rt.evaluate_to(&pid, None).await.unwrap();
    assert_eq!(metric(&rt, "metalcu_checkpoint_restore_duration_seconds_count"), 1);
    let fresh = Arc::new(MemoryStore::new());
    w.runtime(fresh.clone()).evaluate_to(&pid, None).await.unwrap();
    let got = trace(&store, &pid);
    assert_eq!(got, trace(&fresh, &pid), "rollbacks from the file equal rollbacks from memory");
    let errors = stored(&store, &pid).iter().filter(|e| e.result.get("Error").is_some_and(|v| !v.is_null())).count();
    assert_eq!((got.len(), errors), (12, 4), "spawn + 11 messages, 9 to 12 failed");
    // Every failure left the memory at 8: one more message fails the same way.
    w.post(&pid, 1);
    rt.evaluate_to(&pid, None).await.unwrap();
    let last = stored(&store, &pid).pop().unwrap();
    assert_eq!(last.state_hash, got[8].2, "the memory is the one after the counter reached 8");
}

/// More messages than the in-memory rollback image interval, then failures: each rolls back to
/// the sparse image taken after 64 messages plus a replay of the ones since, reproducing the
/// recorded state hash (a mismatch would be a 500), with no checkpoint files at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_the_in_memory_image_interval_roll_back_exactly() {
    const TRAP_AT: usize = metalcu::process::evaluator::CHECKPOINT_EVERY + 6;
    let w = world_of(&common::counter_trap_wat(TRAP_AT as u32));
    let pid = w.pids[0].clone();
    let store = Arc::new(MemoryStore::new());
    let rt = w.runtime(store.clone());
    w.post(&pid, TRAP_AT + 3);
    rt.evaluate_to(&pid, None).await.unwrap();
    let all = stored(&store, &pid);
    let outputs: Vec<&str> = all.iter().map(|e| e.result["Output"].as_str().unwrap_or("")).collect();
    let want: Vec<String> = (1..TRAP_AT).map(|k| k.to_string()).collect();
    assert_eq!(outputs[..TRAP_AT - 1], want.iter().map(String::as_str).collect::<Vec<_>>()[..]);
    let failed = all[TRAP_AT - 1..].iter().filter(|e| e.result.get("Error").is_some_and(|v| !v.is_null())).count();
    assert_eq!((all.len(), failed), (TRAP_AT + 4, 5), "the spawn and {} messages: the last 5 failed", TRAP_AT + 3);
    for e in &all[TRAP_AT - 1..] {
        assert_eq!(e.state_hash, all[TRAP_AT - 2].state_hash, "every failure leaves the memory as it was");
    }
}
