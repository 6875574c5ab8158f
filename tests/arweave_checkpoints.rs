//! Hydration from the reference CU's Arweave checkpoints (cu-protocol §3.4, §4.10 (e)): a runtime
//! with an empty store finds a published gzip checkpoint record of a process (produced here by
//! evaluating the process on another runtime and taking its memory after message k), starts from
//! it, and every later result and state hash equals those of a runtime that evaluated from the
//! start; records that must not be trusted (wrong SHA-256, untrusted owner, ignored process) are
//! not used and the process is replayed from the scheduler, with the same results. More than
//! `STEPS + RETRIES` records are validated by replaying the messages between them: records of a
//! real evaluation pass and the newest is used; forged ones (memory altered, SHA-256 consistent)
//! fail and are not. A hydrated process gets a local file checkpoint at once and resumes from it
//! after a restart.
//!
//! The counter module returns how many times it ran, so a process started from the wrong memory
//! (or replayed from an empty one when it should not be) shows in every later result.

mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use metalcu::checkpoint::arweave::ArweaveSettings;
use metalcu::checkpoint::{CheckpointPolicy, CheckpointStore};
use metalcu::engine::{Engine, EngineConfig};
use metalcu::gateway::local::LocalGateway;
use metalcu::gateway::{Block, Gateway, GatewayError, SchedulerLocation, TxMeta};
use metalcu::process::evaluator::Runtime;
use metalcu::process::options::Policy;
use metalcu::store::{Evaluation, MemoryStore, Query, Store};
use metalcu::su::local::{DEV_OWNER, LocalScheduler, Posted};
use metalcu::su::message::map_node;
use metalcu::su::scheduler::Scheduler as _;
use metalcu::su::types::Tag;
use sha2::Digest as _;

const T0: u64 = 1_800_000_000_000;
/// The checkpoint is taken after this message (nonce).
const K: usize = 6;
/// Messages posted in all.
const N: usize = 10;
const TRUSTED: &str = "trusted-checkpoint-owner-address-000000000000";
const OWN: &str = "this-cu-wallet-address-000000000000000000000";

fn tag(n: &str, v: &str) -> Tag {
    Tag { name: n.into(), value: v.into() }
}

/// A gateway that counts checkpoint queries (and fails them when `refuse` is set) and serves the
/// rest from a [`LocalGateway`].
#[derive(Default)]
struct CountingGateway {
    inner: LocalGateway,
    queries: AtomicUsize,
    refuse: AtomicBool,
    /// Ids of every `/raw` download, in order.
    raws: std::sync::Mutex<Vec<String>>,
}

impl Gateway for CountingGateway {
    async fn transaction(&self, id: &str) -> Result<TxMeta, GatewayError> {
        self.inner.transaction(id).await
    }
    async fn raw(&self, id: &str) -> Result<bytes::Bytes, GatewayError> {
        self.raws.lock().unwrap().push(id.to_string());
        self.inner.raw(id).await
    }
    async fn blocks(&self, min_height: u64, max_timestamp_s: i64) -> Result<Vec<Block>, GatewayError> {
        self.inner.blocks(min_height, max_timestamp_s).await
    }
    async fn checkpoints(&self, pid: &str, owners: &[String], limit: usize) -> Result<Vec<TxMeta>, GatewayError> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        if self.refuse.load(Ordering::SeqCst) {
            return Err(GatewayError::Unavailable("checkpoint queries refused by the test".into()));
        }
        self.inner.checkpoints(pid, owners, limit).await
    }
    async fn scheduler_location(&self, owner: &str) -> Result<SchedulerLocation, GatewayError> {
        self.inner.scheduler_location(owner).await
    }
}

type Rt = Runtime<LocalScheduler, CountingGateway>;

struct World {
    su: Arc<LocalScheduler>,
    gateway: Arc<CountingGateway>,
    engine: Arc<Engine>,
    module: String,
    pid: String,
    posted: Vec<Posted>,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    world_of(N)
}

/// A process with `n` messages after its spawn.
fn world_of(n: usize) -> World {
    world_with(n, vec![])
}

/// A process with `n` messages after its spawn and `extra` process tags (crons).
fn world_with(n: usize, extra: Vec<Tag>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let su = common::stepping_scheduler(dir.path(), T0 as i64);
    let gateway = Arc::new(CountingGateway::default());
    let wasm = wat::parse_str(common::counter_wat(0, 0)).unwrap();
    let module_tags = common::module_tags("wasm32-unknown-emscripten4");
    let module = gateway.inner.register(DEV_OWNER, module_tags, wasm).unwrap();
    let mut tags = vec![tag("Data-Protocol", "ao"), tag("Type", "Process"), tag("Module", &module)];
    tags.extend(extra);
    let pid = su.spawn(DEV_OWNER, tags, String::new()).unwrap().process_id;
    let posted = (0..n).map(|i| su.post(&pid, DEV_OWNER, vec![], format!("m{i}")).unwrap()).collect();
    let engine = Arc::new(Engine::new(EngineConfig { pool_slots: 8, ..EngineConfig::default() }).unwrap());
    World { su: Arc::new(su), gateway, engine, module, pid, posted, _dir: dir }
}

impl World {
    fn runtime(&self, store: Arc<MemoryStore>) -> Rt {
        Runtime::new(self.engine.clone(), store, self.su.clone(), self.gateway.clone(), Policy::default())
    }

    fn hydrating(&self, store: Arc<MemoryStore>, settings: ArweaveSettings) -> Rt {
        self.runtime(store).with_arweave_checkpoints(settings, OWN)
    }

    /// Message `k` (nonce k; the spawn is nonce 0).
    fn message(&self, k: usize) -> &Posted {
        &self.posted[k - 1]
    }

    /// Evaluates the process on its own runtime up to message `K` and returns the memory there
    /// with the record tags §3.4 gives it (`SHA-256` from `sha`, when not `None`, else the real
    /// one).
    async fn checkpoint_at_k(&self, sha: Option<String>) -> (Vec<u8>, Vec<Tag>) {
        let rt = self.runtime(Arc::new(MemoryStore::new()));
        let (memory, mut tags) = self.record_at(&rt, K).await;
        if let Some(sha) = sha {
            tags.iter_mut().filter(|t| t.name == "SHA-256").for_each(|t| t.value = sha.clone());
        }
        (memory, tags)
    }

    /// Walks `rt` (evaluating from the start, not yet past message `k`) to message `k` and
    /// returns the memory there with the record tags §3.4 gives it.
    async fn record_at(&self, rt: &Rt, k: usize) -> (Vec<u8>, Vec<Tag>) {
        let (memory, tags) = self.record_until(rt, self.message(k).timestamp).await;
        assert!(tags.iter().any(|t| t.name == "Nonce" && t.value == k.to_string()));
        (memory, tags)
    }

    /// Walks `rt` to timestamp `to` and returns the memory there with the record tags §3.4 gives
    /// it (`Cron-Interval` when the last evaluation is a cron).
    async fn record_until(&self, rt: &Rt, to: i64) -> (Vec<u8>, Vec<Tag>) {
        let (memory, last) = rt.state(&self.pid, Some(to)).await.unwrap();
        let last = last.unwrap();
        let k = last.position.nonce as usize;
        let node = self.su.message(&self.pid, &self.message(k).id).await.unwrap();
        let s = map_node(&node).unwrap();
        let sha = hex::encode(sha2::Sha256::digest(&memory));
        let tags = vec![
            tag("Data-Protocol", "ao"),
            tag("Variant", "ao.TN.1"),
            tag("Type", "Checkpoint"),
            tag("Module", &self.module),
            tag("Process", &self.pid),
            tag("Nonce", &k.to_string()),
            tag("Timestamp", &last.position.timestamp.to_string()),
            tag("Block-Height", &last.block_height.to_string()),
            tag("Content-Type", "application/octet-stream"),
            tag("SHA-256", &sha),
            tag("Content-Encoding", "gzip"),
            tag("Unit-Identifier", "00000000-0000-4000-8000-000000000000"),
            tag("Ordinate", &k.to_string()),
            tag("Assignment", &s.assignment_id),
            tag("Hash-Chain", &s.hash_chain),
        ];
        let cron = last.position.cron.iter().map(|c| tag("Cron-Interval", c));
        (memory, tags.into_iter().chain(cron).collect())
    }

    async fn publish(&self, owner: &str, sha: Option<String>) -> Vec<u8> {
        self.publish_as(owner, sha, "00000000-0000-4000-8000-000000000000").await
    }

    /// [`Self::publish`] with another `Unit-Identifier` (so another record id).
    async fn publish_as(&self, owner: &str, sha: Option<String>, unit: &str) -> Vec<u8> {
        let (memory, mut tags) = self.checkpoint_at_k(sha).await;
        tags.iter_mut().filter(|t| t.name == "Unit-Identifier").for_each(|t| t.value = unit.to_string());
        self.register_record(owner, tags, &memory);
        memory
    }

    /// Publishes `memory` gzipped under record `tags` as `owner`.
    fn register_record(&self, owner: &str, tags: Vec<Tag>, memory: &[u8]) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(memory).unwrap();
        self.gateway.inner.register(owner, tags, gz.finish().unwrap()).unwrap();
    }

    /// Publishes as `owner` one record after each message of `nonces` (ascending) of a real
    /// evaluation, the memory of the one at nonce k first passed through `forge(k, memory)` (its
    /// `SHA-256` tag is that of the memory published, forged or not).
    async fn publish_series(
        &self,
        owner: &str,
        nonces: std::ops::RangeInclusive<usize>,
        forge: impl Fn(usize, &mut [u8]),
    ) {
        let rt = self.runtime(Arc::new(MemoryStore::new()));
        for k in nonces {
            let (mut memory, mut tags) = self.record_at(&rt, k).await;
            forge(k, &mut memory);
            let sha = hex::encode(sha2::Sha256::digest(&memory));
            tags.iter_mut().filter(|t| t.name == "SHA-256").for_each(|t| t.value = sha.clone());
            self.register_record(owner, tags, &memory);
        }
    }
}

fn stored(store: &MemoryStore, pid: &str) -> Vec<Evaluation> {
    let q = Query { after: None, until: None, descending: false, limit: 1000, cron_only: false, hide_errors: false };
    store.list(pid, &q).unwrap().0
}

/// Nonce, result and state hash of every evaluation of `pid`.
fn trace(store: &MemoryStore, pid: &str) -> Vec<(u64, serde_json::Value, [u8; 32])> {
    stored(store, pid).into_iter().map(|e| (e.position.nonce, e.result, e.state_hash)).collect()
}

/// The results of a runtime that evaluated every message from the spawn.
async fn from_the_start(w: &World) -> Vec<(u64, serde_json::Value, [u8; 32])> {
    let store = Arc::new(MemoryStore::new());
    w.runtime(store.clone()).evaluate_to(&w.pid, None).await.unwrap();
    let t = trace(&store, &w.pid);
    assert_eq!(t.len(), w.posted.len() + 1);
    t
}

fn restores(rt: &Rt) -> u64 {
    let text = rt.metrics().encode();
    let name = "metalcu_checkpoint_restore_duration_seconds_count";
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).map_or(0, |v| v as u64)
}

fn trusting(owner: &str) -> ArweaveSettings {
    ArweaveSettings { trusted_owners: vec![owner.to_string()], ..ArweaveSettings::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_hydrates_from_a_trusted_checkpoint_and_goes_on_identically() {
    let w = world();
    let memory = w.publish(TRUSTED, None).await;
    let want = from_the_start(&w).await;
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), trusting(TRUSTED));
    let (state, _) = rt.state(&w.pid, None).await.unwrap();
    assert_eq!(restores(&rt), 1, "started from the checkpoint");
    // Only the messages after the checkpoint were evaluated, with the results and state hashes of
    // an evaluation from the start (the counter goes on from K + 1, not from 1).
    let got = trace(&store, &w.pid);
    assert_eq!(got, want[K + 1..].to_vec());
    assert_eq!(got[0].1["Output"], serde_json::json!((K + 2).to_string()));
    // The memory at the end is the one the full evaluation reaches.
    let full = w.runtime(Arc::new(MemoryStore::new()));
    let (full_state, _) = full.state(&w.pid, None).await.unwrap();
    assert_eq!(sha2::Sha256::digest(&state), sha2::Sha256::digest(&full_state));
    assert_ne!(sha2::Sha256::digest(&state), sha2::Sha256::digest(&memory));
    // Messages before the checkpoint are never evaluated here: 425, as the reference answers.
    let early = rt.result(&w.pid, &w.message(3).id).await.unwrap_err();
    assert_eq!(early.status, 425, "{}", early.message);
    let after = rt.result(&w.pid, &w.message(K + 1).id).await.unwrap();
    assert_eq!(after, want[K + 1].1);
    // A new message goes on from there too.
    let m = w.su.post(&w.pid, DEV_OWNER, vec![], "more".into()).unwrap();
    let r = rt.result(&w.pid, &m.id).await.unwrap();
    assert_eq!(r["Output"], serde_json::json!((N + 2).to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hydrated_memory_hash_is_the_one_evaluation_reaches() {
    let w = world();
    w.publish(TRUSTED, None).await;
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), trusting(TRUSTED));
    // To exactly the checkpoint's message: nothing to evaluate, the memory is the record's.
    let (state, last) = rt.state(&w.pid, Some(w.message(K).timestamp)).await.unwrap();
    assert!(last.is_none(), "nothing evaluated here");
    assert!(stored(&store, &w.pid).is_empty());
    let full = w.runtime(Arc::new(MemoryStore::new()));
    let (want, _) = full.state(&w.pid, Some(w.message(K).timestamp)).await.unwrap();
    assert_eq!(state, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_a_wrong_sha256_is_not_used() {
    let w = world();
    w.publish(TRUSTED, Some(hex::encode([7u8; 32]))).await;
    let want = from_the_start(&w).await;
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), trusting(TRUSTED));
    rt.evaluate_to(&w.pid, None).await.unwrap();
    assert_eq!(restores(&rt), 0);
    assert!(w.gateway.queries.load(Ordering::SeqCst) >= 1, "the record was looked up");
    assert_eq!(trace(&store, &w.pid), want, "replayed from the start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_an_untrusted_owner_is_not_used() {
    let w = world();
    w.publish("someone-else-000000000000000000000000000000", None).await;
    let want = from_the_start(&w).await;
    for settings in [trusting(TRUSTED), ArweaveSettings::default()] {
        let store = Arc::new(MemoryStore::new());
        let rt = w.hydrating(store.clone(), settings);
        rt.evaluate_to(&w.pid, None).await.unwrap();
        assert_eq!(restores(&rt), 0);
        assert_eq!(trace(&store, &w.pid), want, "replayed from the start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cus_own_address_is_trusted_by_default() {
    let w = world();
    w.publish(OWN, None).await;
    let want = from_the_start(&w).await;
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), ArweaveSettings::default());
    rt.evaluate_to(&w.pid, None).await.unwrap();
    assert_eq!(restores(&rt), 1);
    assert_eq!(trace(&store, &w.pid), want[K + 1..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_process_or_record_is_never_used() {
    let w = world();
    w.publish(TRUSTED, None).await;
    let want = from_the_start(&w).await;
    let ignored = ArweaveSettings { ignore_processes: vec![w.pid.clone()], ..trusting(TRUSTED) };
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), ignored);
    rt.evaluate_to(&w.pid, None).await.unwrap();
    assert_eq!(w.gateway.queries.load(Ordering::SeqCst), 0, "never queried");
    assert_eq!(trace(&store, &w.pid), want);
    // The record itself ignored by id.
    let id = w.gateway.inner.checkpoints(&w.pid, &[TRUSTED.to_string()], 10).await.unwrap()[0].id.clone();
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), ArweaveSettings { ignore_ids: vec![id], ..trusting(TRUSTED) });
    rt.evaluate_to(&w.pid, None).await.unwrap();
    assert_eq!(restores(&rt), 0);
    assert_eq!(trace(&store, &w.pid), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_stored_results_is_not_hydrated() {
    let w = world();
    w.publish(TRUSTED, None).await;
    let want = from_the_start(&w).await;
    let store = Arc::new(MemoryStore::new());
    w.runtime(store.clone()).evaluate_to(&w.pid, Some(w.message(2).timestamp)).await.unwrap();
    let rt = w.hydrating(store.clone(), trusting(TRUSTED));
    rt.evaluate_to(&w.pid, None).await.unwrap();
    assert_eq!(w.gateway.queries.load(Ordering::SeqCst), 0, "known to this CU: never queried");
    assert_eq!(trace(&store, &w.pid), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_owners_records_are_used_when_they_exist() {
    let w = world();
    let preferred = "preferred-checkpoint-owner-0000000000000000";
    w.publish(preferred, None).await;
    let want = from_the_start(&w).await;
    let settings = ArweaveSettings { preferred_owners: vec![preferred.to_string()], ..trusting(TRUSTED) };
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), settings);
    rt.evaluate_to(&w.pid, None).await.unwrap();
    assert_eq!(w.gateway.queries.load(Ordering::SeqCst), 2, "trusted, then preferred owners");
    assert_eq!(restores(&rt), 1);
    assert_eq!(trace(&store, &w.pid), want[K + 1..].to_vec());
}

/// Messages of the validation worlds, and the nonces their records are published at: 16
/// records, one more than `STEPS + RETRIES` (10 + 5), so they are validated by replays.
const MANY_N: usize = 20;
const SERIES: std::ops::RangeInclusive<usize> = 1..=16;
/// A byte of the counter module's memory that evaluation never touches (a forgery shows only in
/// the memory, not in any result).
const UNTOUCHED: usize = 120_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_records_of_a_real_evaluation_validate_and_the_newest_is_used() {
    let w = world_of(MANY_N);
    let settings = trusting(TRUSTED);
    assert!(SERIES.count() > settings.steps + settings.retries);
    w.publish_series(TRUSTED, SERIES, |_, _| {}).await;
    let want = from_the_start(&w).await;
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), settings);
    rt.evaluate_to(&w.pid, None).await.unwrap();
    assert_eq!(w.gateway.queries.load(Ordering::SeqCst), 1);
    assert_eq!(restores(&rt), 1, "hydrated from a validated record");
    // From the newest record (nonce 16): nothing the replays evaluated was stored, and the rest
    // is what an evaluation from the start gives.
    assert_eq!(trace(&store, &w.pid), want[*SERIES.end() + 1..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_newest_record_fails_its_replay_and_the_one_before_is_used() {
    let w = world_of(MANY_N);
    let newest = *SERIES.end();
    w.publish_series(TRUSTED, SERIES, |k, m| {
        if k == newest {
            m[UNTOUCHED] = 0xAB;
        }
    })
    .await;
    let want = from_the_start(&w).await;
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), trusting(TRUSTED));
    w.gateway.raws.lock().unwrap().clear();
    let (state, _) = rt.state(&w.pid, None).await.unwrap();
    assert_eq!(restores(&rt), 1);
    assert_eq!(trace(&store, &w.pid), want[newest..].to_vec(), "hydrated from nonce {}", newest - 1);
    // Attempt 0 (records 7..=16) replays 9 pairs, attempt 1 (6..=15) only the new pair 6 → 7:
    // ten earlier records downloaded, then the accepted one (15) to hydrate from.
    let records = w.gateway.raws.lock().unwrap().iter().filter(|id| **id != w.module).count();
    assert_eq!(records, 11);
    assert_eq!(state[UNTOUCHED], 0, "not the forged memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_fail_validation_and_the_process_replays_from_the_scheduler() {
    let w = world_of(MANY_N);
    // Every record's memory altered (each differently), its SHA-256 tag consistent with it: no
    // replay from one record reaches the next one's memory.
    w.publish_series(TRUSTED, SERIES, |k, m| m[UNTOUCHED] = k as u8).await;
    let want = from_the_start(&w).await;
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), trusting(TRUSTED));
    let (state, _) = rt.state(&w.pid, None).await.unwrap();
    assert_eq!(w.gateway.queries.load(Ordering::SeqCst), 1);
    assert_eq!(restores(&rt), 0, "no record passed validation");
    assert_eq!(trace(&store, &w.pid), want, "replayed from the start");
    assert_eq!(state[UNTOUCHED], 0);
}

/// File checkpoints written only when asked to (no count, time, eviction or shutdown rule), so
/// the one a test finds is the one written right after hydration.
fn only_explicit_checkpoints() -> CheckpointPolicy {
    CheckpointPolicy { every_messages: None, every: None, on_eviction: false, on_shutdown: false, ..Default::default() }
}

/// A temporary directory of file checkpoints with one open store for it (the store locks it
/// while open), shared by every restart of a test, written [`only_explicit_checkpoints`].
struct LocalCheckpoints {
    files: Arc<CheckpointStore>,
    _dir: tempfile::TempDir,
}

impl LocalCheckpoints {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self { files: Arc::new(CheckpointStore::open(dir.path()).unwrap()), _dir: dir }
    }

    /// `rt`, writing into and resuming from these checkpoints.
    fn on(&self, rt: Rt) -> Rt {
        rt.with_checkpoints(self.files.clone(), only_explicit_checkpoints())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hydrated_process_resumes_from_its_local_checkpoint_after_a_restart() {
    let w = world();
    w.publish(TRUSTED, None).await;
    let want = from_the_start(&w).await;
    let files = LocalCheckpoints::new();
    let store = Arc::new(MemoryStore::new());
    let restarted = |store: &Arc<MemoryStore>| files.on(w.hydrating(store.clone(), trusting(TRUSTED)));
    // Hydrated to exactly the record's message: nothing evaluated or stored, one local checkpoint.
    let rt = restarted(&store);
    rt.state(&w.pid, Some(w.message(K).timestamp)).await.unwrap();
    assert_eq!(restores(&rt), 1);
    assert!(stored(&store, &w.pid).is_empty());
    let written = files.files.list(&w.pid).unwrap();
    assert_eq!(written.len(), 1, "a checkpoint of the hydrated memory");
    assert_eq!(written[0].position.nonce, K as u64);
    drop(rt);
    // Restart with the gateway refusing checkpoint queries: the process resumes from the local
    // checkpoint (a replay from the spawn would store messages 0..=K), not from the gateway.
    w.gateway.refuse.store(true, Ordering::SeqCst);
    let queries = w.gateway.queries.load(Ordering::SeqCst);
    let rt = restarted(&store);
    rt.evaluate_to(&w.pid, Some(w.message(K + 2).timestamp)).await.unwrap();
    assert_eq!(restores(&rt), 1, "resumed from the local checkpoint");
    assert_eq!(w.gateway.queries.load(Ordering::SeqCst), queries, "the gateway is not asked again");
    assert_eq!(trace(&store, &w.pid), want[K + 1..=K + 2].to_vec());
    drop(rt);
    // Restart again, now with stored results after the hydrated position: still resumed from it,
    // the stored results re-evaluated identically, and the rest evaluated as from the start.
    let rt = restarted(&store);
    rt.evaluate_to(&w.pid, None).await.unwrap();
    assert_eq!(restores(&rt), 1);
    assert_eq!(w.gateway.queries.load(Ordering::SeqCst), queries);
    assert_eq!(trace(&store, &w.pid), want[K + 1..].to_vec());
    let early = rt.result(&w.pid, &w.message(3).id).await.unwrap_err();
    assert_eq!(early.status, 425, "{}", early.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hydrated_checkpoint_is_not_used_once_the_store_holds_results_before_it() {
    let w = world();
    w.publish(TRUSTED, None).await;
    let want = from_the_start(&w).await;
    let files = LocalCheckpoints::new();
    let hydrating = files.on(w.hydrating(Arc::new(MemoryStore::new()), trusting(TRUSTED)));
    hydrating.state(&w.pid, Some(w.message(K).timestamp)).await.unwrap();
    assert_eq!(files.files.list(&w.pid).unwrap().len(), 1);
    // Another store that evaluated from the spawn past the checkpoint holds results at and
    // before it: they were not produced from it, so it is not used; the process replays from
    // the start.
    let store = Arc::new(MemoryStore::new());
    w.runtime(store.clone()).evaluate_to(&w.pid, Some(w.message(K + 1).timestamp)).await.unwrap();
    let rt = files.on(w.runtime(store.clone()));
    rt.evaluate_to(&w.pid, None).await.unwrap();
    assert_eq!(restores(&rt), 0);
    assert_eq!(trace(&store, &w.pid), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_crons_between_and_at_them_validate() {
    // A cron every 2 s and a message every second: between two records the replay evaluates
    // crons as well as messages, and every other record ends on a cron (its position carries
    // the cron id), the newest among them.
    let w = world_with(MANY_N, vec![tag("Cron-Interval", "2-seconds")]);
    let horizon = w.message(MANY_N).timestamp + 500;
    let rt = w.runtime(Arc::new(MemoryStore::new()));
    let mut crons = 0;
    for k in SERIES {
        let (memory, tags) = w.record_until(&rt, w.message(k).timestamp + 500).await;
        crons += usize::from(tags.iter().any(|t| t.name == "Cron-Interval"));
        w.register_record(TRUSTED, tags, &memory);
    }
    assert_eq!(crons, SERIES.count() / 2, "every other record ends on a cron");
    let full = Arc::new(MemoryStore::new());
    w.runtime(full.clone()).evaluate_to(&w.pid, Some(horizon)).await.unwrap();
    let want = stored(&full, &w.pid);
    let store = Arc::new(MemoryStore::new());
    let rt = w.hydrating(store.clone(), trusting(TRUSTED));
    rt.evaluate_to(&w.pid, Some(horizon)).await.unwrap();
    assert_eq!(restores(&rt), 1, "hydrated from a validated record");
    let got = stored(&store, &w.pid);
    // Hydrated from the newest record, a cron after message 16: everything after it as in an
    // evaluation from the start.
    let newest = want.iter().position(|e| e.position.nonce == *SERIES.end() as u64 && e.position.cron.is_some());
    let newest = newest.expect("a cron after the newest record's message");
    assert_eq!(got, want[newest + 1..].to_vec());
    assert!(got.iter().any(|e| e.position.cron.is_some()), "crons evaluated after the record");
}
