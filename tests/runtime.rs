//! The evaluation runtime against schedulers that misbehave and callers that go away: a broken
//! hash chain stops the process with 422 and nothing after the break is stored; an unreachable
//! scheduler is a 503 and nothing is stored; concurrent requests evaluate each message exactly
//! once; a request dropped mid-evaluation or a task that panics mid-stream leaves results and
//! state hashes identical to an uninterrupted run; pages of one edge and more messages in one
//! millisecond than a page holds still advance.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use metalcu::engine::{Engine, EngineConfig};
use metalcu::gateway::local::LocalGateway;
use metalcu::process::evaluator::Runtime;
use metalcu::process::options::Policy;
use metalcu::store::{Evaluation, MemoryStore, Position, Query, Store};
use metalcu::su::local::{DEV_OWNER, LocalScheduler};
use metalcu::su::scheduler::{PageQuery, Scheduler, SuError};
use metalcu::su::types::{Node, Page, Process, Tag};

/// Clock start of the local scheduler; message `n` (nonce `n`) is scheduled at `T0 + n * 1000`.
const T0: i64 = 1_800_000_000_000;
/// With `share` on, nonces in groups of this many share one millisecond.
const SHARED: u64 = 3;

/// A real local scheduler behind switches: tamper with one nonce's hash chain, go down, panic
/// on the n-th page asked, or give messages in groups of [`SHARED`] one shared timestamp (then
/// paging by `from`/`to`/`limit` is done here, as an SU does it).
struct Faulty {
    inner: LocalScheduler,
    tamper_nonce: AtomicU64,
    down: AtomicBool,
    pages: AtomicUsize,
    panic_on_page: AtomicUsize,
    share: AtomicBool,
}

/// The timestamp a node gets when timestamps are shared.
fn shared_ts(nonce: u64) -> i64 {
    T0 + (nonce / SHARED) as i64 * 1000
}

fn nonce_of(node: &Node) -> u64 {
    let t = node.assignment.tags.iter().find(|t| t.name == "Nonce").expect("nonce tag");
    t.value.parse().unwrap()
}

fn share_timestamp(node: &mut Node) -> i64 {
    let ts = shared_ts(nonce_of(node));
    for t in &mut node.assignment.tags {
        if t.name == "Timestamp" {
            t.value = ts.to_string();
        }
    }
    ts
}

impl Faulty {
    fn check(&self) -> Result<(), SuError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SuError::Unavailable(
                "Error Encountered when loading messages from Scheduler Unit: connection refused".into(),
            ));
        }
        Ok(())
    }
}

impl Scheduler for Faulty {
    async fn process(&self, pid: &str) -> Result<Process, SuError> {
        self.check()?;
        self.inner.process(pid).await
    }
    async fn page(&self, pid: &str, q: PageQuery) -> Result<Page, SuError> {
        self.check()?;
        let n = self.pages.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.panic_on_page.load(Ordering::SeqCst) {
            panic!("the fake scheduler panics on page {n}");
        }
        let mut page = if self.share.load(Ordering::SeqCst) {
            let mut all = self.inner.page(pid, PageQuery { from: None, to: None, limit: 10_000 }).await?;
            assert!(!all.page_info.has_next_page);
            for e in &mut all.edges {
                e.cursor = share_timestamp(&mut e.node).to_string();
            }
            let ts = |e: &metalcu::su::types::Edge| e.cursor.parse::<i64>().unwrap();
            all.edges.retain(|e| q.from.is_none_or(|f| ts(e) > f) && q.to.is_none_or(|t| ts(e) <= t));
            all.page_info.has_next_page = all.edges.len() > q.limit as usize;
            all.edges.truncate(q.limit as usize);
            all
        } else {
            self.inner.page(pid, q).await?
        };
        let bad = self.tamper_nonce.load(Ordering::SeqCst);
        for e in &mut page.edges {
            let nonce = e.node.assignment.tags.iter().find(|t| t.name == "Nonce").map(|t| t.value.clone());
            if nonce.as_deref() == Some(&bad.to_string()) {
                for t in &mut e.node.assignment.tags {
                    if t.name == "Hash-Chain" {
                        t.value = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
                    }
                }
            }
        }
        Ok(page)
    }
    async fn message(&self, pid: &str, id: &str) -> Result<Node, SuError> {
        self.check()?;
        let mut node = self.inner.message(pid, id).await?;
        if self.share.load(Ordering::SeqCst) {
            share_timestamp(&mut node);
        }
        Ok(node)
    }
    async fn latest(&self, pid: &str) -> Result<Option<Node>, SuError> {
        self.check()?;
        self.inner.latest(pid).await
    }
    async fn timestamp(&self, pid: &str) -> Result<(i64, u64), SuError> {
        self.check()?;
        self.inner.timestamp(pid).await
    }
}

fn tag(n: &str, v: &str) -> Tag {
    Tag { name: n.into(), value: v.into() }
}

struct Setup {
    rt: Arc<Runtime<Faulty, LocalGateway>>,
    su: Arc<Faulty>,
    store: Arc<MemoryStore>,
    gateway: Arc<LocalGateway>,
    engine: Arc<Engine>,
    policy: Policy,
    pid: String,
    ids: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// Another runtime (its own store, its own process state) over the same scheduler.
    fn second(&self) -> (Runtime<Faulty, LocalGateway>, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let rt = Runtime::new(
            self.engine.clone(),
            store.clone(),
            self.su.clone(),
            self.gateway.clone(),
            self.policy.clone(),
        );
        (rt, store)
    }
}

/// Everything stored for `pid`, in stream order.
fn stored(store: &MemoryStore, pid: &str) -> Vec<Evaluation> {
    let q = Query { after: None, until: None, descending: false, limit: 1000, cron_only: false, hide_errors: false };
    let (rows, more) = store.list(pid, &q).unwrap();
    assert!(!more);
    rows
}

fn setup(messages: usize) -> Setup {
    setup_with(messages, &common::echo_wat("", "", ""), Policy::default())
}

/// A process of module `wat` with `messages` messages after its spawn.
fn setup_with(messages: usize, wat: &str, policy: Policy) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let inner = common::stepping_scheduler(dir.path(), T0);
    let gateway = Arc::new(LocalGateway::default());
    let wasm = wat::parse_str(wat).unwrap();
    let module_tags = common::module_tags("wasm32-unknown-emscripten4");
    let module = gateway.register(DEV_OWNER, module_tags, wasm).unwrap();
    let spawn = vec![tag("Data-Protocol", "ao"), tag("Type", "Process"), tag("Module", &module)];
    let pid = inner.spawn(DEV_OWNER, spawn, String::new()).unwrap().process_id;
    let ids = (0..messages).map(|n| inner.post(&pid, DEV_OWNER, vec![], format!("m{n}")).unwrap().id).collect();
    let su = Arc::new(Faulty {
        inner,
        tamper_nonce: AtomicU64::new(u64::MAX),
        down: false.into(),
        pages: AtomicUsize::new(0),
        panic_on_page: AtomicUsize::new(0),
        share: false.into(),
    });
    let store = Arc::new(MemoryStore::new());
    let engine = Arc::new(Engine::new(EngineConfig { pool_slots: 8, ..EngineConfig::default() }).unwrap());
    let rt = Arc::new(Runtime::new(engine.clone(), store.clone(), su.clone(), gateway.clone(), policy.clone()));
    Setup { rt, su, store, gateway, engine, policy, pid, ids, _dir: dir }
}

/// What a run leaves: each evaluation's position, result and state hash.
fn trace(rows: &[Evaluation]) -> Vec<(Position, serde_json::Value, [u8; 32])> {
    rows.iter().map(|e| (e.position.clone(), e.result.clone(), e.state_hash)).collect()
}

/// The counter module's outputs: spawn and messages counted once each, in order.
fn assert_counted_once(rows: &[Evaluation], messages: usize) {
    let got: Vec<(u64, String)> =
        rows.iter().map(|e| (e.position.nonce, e.result["Output"].as_str().unwrap_or("?").to_string())).collect();
    let want: Vec<(u64, String)> = (0..=messages as u64).map(|n| (n, (n + 1).to_string())).collect();
    assert_eq!(got, want, "every message evaluated exactly once, in order, on the memory before it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_hash_chain_stops_the_process_with_422() {
    let s = setup(5);
    s.su.tamper_nonce.store(3, Ordering::SeqCst);
    let err = s.rt.evaluate_to(&s.pid, None).await.unwrap_err();
    assert_eq!(err.status, 422);
    assert_eq!(err.message, format!("HashChain invalid on message {}", s.ids[2]));
    let latest = s.store.latest(&s.pid).unwrap().expect("messages before the break were evaluated");
    assert_eq!(latest.position.nonce, 2, "nothing at or after the break is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_scheduler_is_503_and_stores_nothing() {
    let s = setup(2);
    s.su.down.store(true, Ordering::SeqCst);
    let err = s.rt.result(&s.pid, &s.ids[0]).await.unwrap_err();
    assert_eq!(err.status, 503, "{err}");
    assert!(s.store.latest(&s.pid).unwrap().is_none());
    s.su.down.store(false, Ordering::SeqCst);
    let r = s.rt.result(&s.pid, &s.ids[0]).await.expect("recovers once the scheduler is back");
    assert_eq!(r["Output"]["Data"], "m0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_evaluate_each_message_once() {
    let s = setup(20);
    let target = s.ids[19].clone();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (rt, pid, id) = (s.rt.clone(), s.pid.clone(), target.clone());
        handles.push(tokio::spawn(async move { rt.result(&pid, &id).await }));
    }
    let mut outputs = Vec::new();
    for h in handles {
        outputs.push(h.await.unwrap().unwrap());
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]), "every request sees the same result");
    let (rows, more) = s
        .store
        .list(
            &s.pid,
            &metalcu::store::Query {
                after: None,
                until: None,
                descending: false,
                limit: 100,
                cron_only: false,
                hide_errors: false,
            },
        )
        .unwrap();
    assert!(!more);
    let nonces: Vec<u64> = rows.iter().map(|e| e.position.nonce).collect();
    assert_eq!(nonces, (0..=20).collect::<Vec<u64>>(), "spawn + 20 messages, each exactly once, in order");
    let at = Position { timestamp: rows[20].position.timestamp, nonce: 20, cron: None };
    assert!(s.store.at(&s.pid, &at).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_a_stateful_module_evaluate_each_message_exactly_once() {
    let s = setup_with(24, &common::counter_wat(0, 0), Policy::default());
    let mut handles = Vec::new();
    for i in 0..12 {
        let (rt, pid) = (s.rt.clone(), s.pid.clone());
        // Targets spread over the stream, asked in no particular order, some twice at once.
        let id = s.ids[(i * 7) % 24].clone();
        handles.push(tokio::spawn(async move { (id.clone(), rt.result(&pid, &id).await) }));
    }
    for h in handles {
        let (id, r) = h.await.unwrap();
        let n = s.ids.iter().position(|x| *x == id).unwrap() + 1;
        assert_eq!(r.unwrap()["Output"], (n + 1).to_string(), "message {n} saw the memory of the {n} before it");
    }
    s.rt.evaluate_to(&s.pid, None).await.unwrap();
    let rows = stored(&s.store, &s.pid);
    assert_counted_once(&rows, 24);
    let (sequential, store) = s.second();
    sequential.evaluate_to(&s.pid, None).await.unwrap();
    assert_eq!(trace(&rows), trace(&stored(&store, &s.pid)), "same results and state hashes as one sequential run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_mid_evaluation_changes_nothing() {
    // The call that brings the counter to 4 (the message at nonce 3) runs for a long while.
    let s = setup_with(6, &common::counter_wat(4, 400_000_000), Policy::default());
    s.rt.result(&s.pid, &s.ids[1]).await.unwrap();
    // This request's walk is inside the long evaluation when the caller gives up.
    // (Nothing below depends on when the caller gives up: any moment must leave the same results.)
    let dropped = tokio::time::timeout(Duration::from_millis(100), s.rt.result(&s.pid, &s.ids[5])).await;
    if dropped.is_ok() {
        eprintln!("NOTE: the long evaluation finished before the caller gave up; nothing was dropped");
    }
    let last = s.rt.result(&s.pid, &s.ids[5]).await.unwrap();
    assert_eq!(last["Output"], "7");
    let rows = stored(&s.store, &s.pid);
    assert_counted_once(&rows, 6);
    let (uninterrupted, store) = s.second();
    uninterrupted.evaluate_to(&s.pid, None).await.unwrap();
    assert_eq!(trace(&rows), trace(&stored(&store, &s.pid)), "identical to an uninterrupted run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_panics_mid_stream_is_a_500_and_the_process_reloads_cleanly() {
    let policy = Policy { page_size: 2, ..Policy::default() };
    let s = setup_with(9, &common::counter_wat(0, 0), policy);
    s.su.panic_on_page.store(3, Ordering::SeqCst);
    let err = s.rt.evaluate_to(&s.pid, None).await.unwrap_err();
    assert_eq!(err.status, 500, "{err}");
    assert!(stored(&s.store, &s.pid).is_empty(), "nothing was committed before the panic");
    s.rt.result(&s.pid, &s.ids[3]).await.unwrap();
    s.rt.evaluate_to(&s.pid, None).await.unwrap();
    let rows = stored(&s.store, &s.pid);
    assert_counted_once(&rows, 9);
    let (uninterrupted, store) = s.second();
    uninterrupted.evaluate_to(&s.pid, None).await.unwrap();
    assert_eq!(trace(&rows), trace(&stored(&store, &s.pid)), "identical to an uninterrupted run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_one_edge_and_messages_sharing_a_millisecond_still_advance() {
    for page_size in [1, 2, 3] {
        let policy = Policy { page_size, ..Policy::default() };
        let s = setup_with(10, &common::counter_wat(0, 0), policy);
        s.su.share.store(true, Ordering::SeqCst);
        // A target inside a group of messages sharing its millisecond: the whole group is evaluated.
        let r = s.rt.result(&s.pid, &s.ids[3]).await.unwrap();
        assert_eq!(r["Output"], "5", "page size {page_size}");
        let rows = stored(&s.store, &s.pid);
        assert_eq!(rows.len(), 6, "spawn and messages up to the end of the target's millisecond");
        s.rt.evaluate_to(&s.pid, None).await.unwrap();
        let rows = stored(&s.store, &s.pid);
        assert_counted_once(&rows, 10);
        let stamps: Vec<i64> = rows.iter().map(|e| e.position.timestamp).collect();
        assert_eq!(stamps, (0..=10).map(shared_ts).collect::<Vec<_>>());
        assert!(s.su.pages.load(Ordering::SeqCst) < 40, "paging is bounded");
    }
}
