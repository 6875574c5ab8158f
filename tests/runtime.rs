//! The evaluation runtime against schedulers that misbehave: a broken hash chain stops the
//! process with 422 and nothing after the break is stored; an unreachable scheduler is a 503 and
//! nothing is stored; concurrent requests for one message evaluate it exactly once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use metalcu::engine::{Engine, EngineConfig};
use metalcu::gateway::local::LocalGateway;
use metalcu::process::evaluator::Runtime;
use metalcu::process::options::Policy;
use metalcu::store::{MemoryStore, Position, Store};
use metalcu::su::local::{DEV_OWNER, LocalScheduler};
use metalcu::su::scheduler::{PageQuery, Scheduler, SuError};
use metalcu::su::types::{Node, Page, Process, Tag};

/// A real local scheduler behind a switch: tamper with one nonce's hash chain, or go down.
struct Faulty {
    inner: LocalScheduler,
    tamper_nonce: AtomicU64,
    down: std::sync::atomic::AtomicBool,
    pages: AtomicUsize,
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
        self.pages.fetch_add(1, Ordering::SeqCst);
        let mut page = self.inner.page(pid, q).await?;
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
        self.inner.message(pid, id).await
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
    pid: String,
    ids: Vec<String>,
    _dir: tempfile::TempDir,
}

fn setup(messages: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let clock = AtomicU64::new(1_800_000_000_000);
    let inner = LocalScheduler::open(
        dir.path().join("su.redb"),
        Box::new(move || clock.fetch_add(1000, Ordering::SeqCst) as i64),
    )
    .unwrap();
    let gateway = Arc::new(LocalGateway::default());
    let wasm = wat::parse_str(common::echo_wat("", "", "")).unwrap();
    let module_tags = vec![
        tag("Data-Protocol", "ao"),
        tag("Type", "Module"),
        tag("Module-Format", "wasm32-unknown-emscripten4"),
        tag("Input-Encoding", "JSON-1"),
        tag("Output-Encoding", "JSON-1"),
        tag("Memory-Limit", "1-gb"),
        tag("Compute-Limit", "9000000000000"),
    ];
    let module = gateway.register(DEV_OWNER, module_tags, wasm).unwrap();
    let spawn = vec![tag("Data-Protocol", "ao"), tag("Type", "Process"), tag("Module", &module)];
    let pid = inner.spawn(DEV_OWNER, spawn, String::new()).unwrap().process_id;
    let ids = (0..messages).map(|n| inner.post(&pid, DEV_OWNER, vec![], format!("m{n}")).unwrap().id).collect();
    let su = Arc::new(Faulty {
        inner,
        tamper_nonce: AtomicU64::new(u64::MAX),
        down: false.into(),
        pages: AtomicUsize::new(0),
    });
    let store = Arc::new(MemoryStore::new());
    let engine = Arc::new(Engine::new(EngineConfig { pool_slots: 8, ..EngineConfig::default() }).unwrap());
    let rt = Arc::new(Runtime::new(engine, store.clone(), su.clone(), gateway, Policy::default()));
    Setup { rt, su, store, pid, ids, _dir: dir }
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
