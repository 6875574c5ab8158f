//! The evaluation pipeline beyond plain scheduled messages (cu-protocol §4.4, §4.5, §2.5, §1.8):
//! crons fire between messages and up to the scheduler's clock, time and block crons alike, each
//! once; assignments of existing transactions are completed from the gateway and a transaction
//! assigned twice is evaluated once; a legacy process starts with a synthesized spawn message;
//! a dry-run at a past message sees the state after it and refuses to rewind.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use metalcu::engine::{Engine, EngineConfig};
use metalcu::gateway::local::LocalGateway;
use metalcu::process::evaluator::Runtime;
use metalcu::process::options::Policy;
use metalcu::store::{Evaluation, MemoryStore, Query, Store};
use metalcu::su::local::{BLOCK_INTERVAL_MS, DEV_OWNER, GENESIS_HEIGHT, GENESIS_TIMESTAMP_MS, LocalScheduler};
use metalcu::su::scheduler::{PageQuery, Scheduler, SuError};
use metalcu::su::types::{Node, Page, Process, Tag};
use serde_json::{Value, json};

fn tag(n: &str, v: &str) -> Tag {
    Tag { name: n.into(), value: v.into() }
}

fn engine() -> Arc<Engine> {
    Arc::new(Engine::new(EngineConfig { pool_slots: 8, ..EngineConfig::default() }).unwrap())
}

/// Registers the echo module (format 4): every result's `Output` is the `msg` it was given.
fn echo_module(gateway: &LocalGateway) -> String {
    let wasm = wat::parse_str(common::echo_wat("", "", "")).unwrap();
    let tags = common::module_tags("wasm32-unknown-emscripten4");
    gateway.register(DEV_OWNER, tags, wasm).unwrap()
}

fn all(store: &MemoryStore, pid: &str, cron_only: bool) -> Vec<Evaluation> {
    let q = Query { after: None, until: None, descending: false, limit: 1000, cron_only, hide_errors: false };
    let (rows, more) = store.list(pid, &q).unwrap();
    assert!(!more);
    rows
}

struct Clocked {
    rt: Runtime<LocalScheduler, LocalGateway>,
    gateway: Arc<LocalGateway>,
    su: Arc<LocalScheduler>,
    store: Arc<MemoryStore>,
    now: Arc<AtomicI64>,
    pid: String,
    _dir: tempfile::TempDir,
}

/// A local scheduler whose clock the test sets; a process spawned at `t0` with `process_tags`.
fn clocked(t0: i64, process_tags: Vec<Tag>) -> Clocked {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(t0));
    let clock = now.clone();
    let su = Arc::new(
        LocalScheduler::open(dir.path().join("su.redb"), Box::new(move || clock.load(Ordering::SeqCst))).unwrap(),
    );
    let gateway = Arc::new(LocalGateway::default());
    let module = echo_module(&gateway);
    let mut tags = vec![tag("Data-Protocol", "ao"), tag("Type", "Process"), tag("Module", &module)];
    tags.extend(process_tags);
    let pid = su.spawn(DEV_OWNER, tags, String::new()).unwrap().process_id;
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(engine(), store.clone(), su.clone(), gateway.clone(), Policy::default());
    Clocked { rt, gateway, su, store, now, pid, _dir: dir }
}

fn summary(rows: &[Evaluation]) -> Vec<(i64, u64, Option<String>)> {
    rows.iter().map(|e| (e.position.timestamp, e.position.nonce, e.position.cron.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_crons_fire_between_messages_and_up_to_the_scheduler_clock_once_each() {
    let t0 = 1_800_000_000_000;
    let c = clocked(t0, vec![tag("Cron-Interval", "10-seconds"), tag("Cron-Tag-Action", "Tick")]);
    c.now.store(t0 + 25_000, Ordering::SeqCst);
    let m = c.su.post(&c.pid, DEV_OWNER, vec![tag("Action", "Eval")], "x".into()).unwrap();
    c.now.store(t0 + 45_000, Ordering::SeqCst);
    let cron = |s: i64, nonce: u64| (t0 + s * 1000, nonce, Some("0-10-seconds".to_string()));
    // A /result evaluation only generates crons up to its message.
    c.rt.result(&c.pid, &m.id).await.unwrap();
    assert_eq!(
        summary(&all(&c.store, &c.pid, false)),
        vec![(t0, 0, None), cron(10, 0), cron(20, 0), (m.timestamp, 1, None)]
    );
    c.rt.evaluate_to(&c.pid, None).await.unwrap();
    let want = vec![(t0, 0, None), cron(10, 0), cron(20, 0), (m.timestamp, 1, None), cron(30, 1), cron(40, 1)];
    assert_eq!(summary(&all(&c.store, &c.pid, false)), want);
    // A cron message is what the spec says, from the process owner, with the cron's tags.
    let e = &all(&c.store, &c.pid, true)[0];
    assert_eq!(
        e.result["Output"],
        json!({"Owner": DEV_OWNER, "Target": c.pid, "From": DEV_OWNER, "Tags": [{"name": "Action", "value": "Tick"}],
               "Timestamp": t0 + 10_000, "Block-Height": e.block_height, "Cron": true, "Read-Only": false})
    );
    // Asking again later adds only the new ticks; nothing is evaluated twice.
    c.now.store(t0 + 55_000, Ordering::SeqCst);
    c.rt.evaluate_to(&c.pid, None).await.unwrap();
    c.rt.evaluate_to(&c.pid, None).await.unwrap();
    let crons = summary(&all(&c.store, &c.pid, true));
    assert_eq!(crons, vec![cron(10, 0), cron(20, 0), cron(30, 1), cron(40, 1), cron(50, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_with_more_ticks_than_a_chunk_is_evaluated_chunk_by_chunk() {
    let t0 = 1_800_000_000_000;
    let c = clocked(
        t0,
        vec![
            tag("Cron-Interval", "1-second"),
            tag("Cron-Tag-Action", "Fast"),
            tag("Cron-Interval", "3-seconds"),
            tag("Cron-Tag-Action", "Slow"),
        ],
    );
    c.now.store(t0 + 60_500, Ordering::SeqCst);
    let m = c.su.post(&c.pid, DEV_OWNER, vec![tag("Action", "Eval")], "x".into()).unwrap();
    c.now.store(t0 + 90_000, Ordering::SeqCst);
    // Chunks of 7 ticks: 80 ticks before the message, 40 after it.
    let chunked_store = Arc::new(MemoryStore::new());
    let chunked = Runtime::new(engine(), chunked_store.clone(), c.su.clone(), c.gateway.clone(), Policy::default())
        .with_cron_chunk(7);
    chunked.result(&c.pid, &m.id).await.unwrap();
    chunked.evaluate_to(&c.pid, None).await.unwrap();
    c.rt.evaluate_to(&c.pid, None).await.unwrap();
    let (whole, in_chunks) = (all(&c.store, &c.pid, false), all(&chunked_store, &c.pid, false));
    assert_eq!(whole.len(), 1 + (60 + 20) + 1 + (30 + 10), "spawn, the crons of 1..=60 s, the message, 60..90 s");
    let trace = |rows: &[Evaluation]| -> Vec<_> {
        rows.iter().map(|e| (e.position.clone(), e.result.clone(), e.state_hash)).collect()
    };
    assert_eq!(trace(&in_chunks), trace(&whole), "chunks give exactly the evaluations of one walk");
    assert_eq!(in_chunks[1].position.cron.as_deref(), Some("0-1-second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_crons_fire_on_the_gateways_blocks_and_time_crons_carry_the_current_block() {
    let t0 = GENESIS_TIMESTAMP_MS;
    let c = clocked(
        t0,
        vec![
            tag("Cron-Interval", "2-minutes"),
            tag("Cron-Tag-Action", "Minutes"),
            tag("Cron-Interval", "2-blocks"),
            tag("Cron-Tag-Action", "Blocks"),
        ],
    );
    c.now.store(t0 + 5 * BLOCK_INTERVAL_MS + 1, Ordering::SeqCst);
    c.rt.evaluate_to(&c.pid, None).await.unwrap();
    let rows = all(&c.store, &c.pid, true);
    let got: Vec<(i64, u64, String)> =
        rows.iter().map(|e| (e.position.timestamp - t0, e.block_height, e.position.cron.clone().unwrap())).collect();
    let h = GENESIS_HEIGHT;
    // Blocks every 120 s: heights h+2 and h+4 fire the block cron; the time cron fires every
    // 120 s too, after the block cron of the same tick, with the block then in force.
    assert_eq!(
        got,
        vec![
            (120_000, h + 1, "0-2-minutes".to_string()),
            (240_000, h + 2, "0-2-blocks".to_string()),
            (240_000, h + 2, "0-2-minutes".to_string()),
            (360_000, h + 3, "0-2-minutes".to_string()),
            (480_000, h + 4, "0-2-blocks".to_string()),
            (480_000, h + 4, "0-2-minutes".to_string()),
            (600_000, h + 5, "0-2-minutes".to_string()),
        ]
    );
    assert_eq!(rows[1].result["Output"]["Tags"], json!([{"name": "Action", "value": "Blocks"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_at_a_past_message_sees_the_state_after_it_and_never_rewinds() {
    let t0 = 1_800_000_000_000;
    let c = clocked(t0, vec![]);
    let mut ids = Vec::new();
    for n in 1..=3 {
        c.now.store(t0 + n * 1000, Ordering::SeqCst);
        ids.push(c.su.post(&c.pid, DEV_OWNER, vec![], format!("m{n}")).unwrap());
    }
    let body = json!({"Owner": "someone", "Tags": [{"name": "Action", "value": "Peek"}], "Data": "?"});
    let body = body.as_object().unwrap().clone();
    let out = c.rt.dry_run(&c.pid, body.clone(), Some(&ids[0].id)).await.unwrap();
    assert_eq!(out["Output"]["Timestamp"], ids[0].timestamp, "defaults to the message it runs after");
    assert_eq!(out["Output"]["Read-Only"], true);
    assert_eq!(all(&c.store, &c.pid, false).len(), 2, "only the spawn and the first message were evaluated");
    c.rt.evaluate_to(&c.pid, None).await.unwrap();
    let err = c.rt.dry_run(&c.pid, body.clone(), Some(&ids[0].id)).await.unwrap_err();
    assert_eq!(err.status, 425, "{err}");
    let latest = c.rt.dry_run(&c.pid, body, None).await.unwrap();
    assert_eq!(latest["Output"]["Timestamp"], ids[2].timestamp);
    assert_eq!(all(&c.store, &c.pid, false).len(), 4, "dry-runs store nothing");
}

/// A scheduler that serves a fixed, legacy-shaped stream: no process edge first, block height
/// under the hash-chain threshold, assignments of existing transactions.
struct Scripted {
    process: Process,
    nodes: Vec<(i64, Value)>,
}

impl Scheduler for Scripted {
    async fn process(&self, _pid: &str) -> Result<Process, SuError> {
        Ok(self.process.clone())
    }
    async fn page(&self, _pid: &str, q: PageQuery) -> Result<Page, SuError> {
        let edges: Vec<Value> = self
            .nodes
            .iter()
            .filter(|(ts, _)| q.from.is_none_or(|f| *ts > f) && q.to.is_none_or(|t| *ts <= t))
            .map(|(ts, n)| json!({"cursor": ts.to_string(), "node": n}))
            .collect();
        let page = json!({"page_info": {"has_next_page": false}, "edges": edges});
        Ok(Page::parse(page.to_string().as_bytes()).unwrap())
    }
    async fn message(&self, _pid: &str, id: &str) -> Result<Node, SuError> {
        self.nodes
            .iter()
            .find(|(_, n)| n["message"]["id"] == id)
            .map(|(_, n)| serde_json::from_value(n.clone()).unwrap())
            .ok_or_else(|| SuError::NotFound(id.into()))
    }
    async fn latest(&self, _pid: &str) -> Result<Option<Node>, SuError> {
        Ok(self.nodes.last().map(|(_, n)| serde_json::from_value(n.clone()).unwrap()))
    }
    async fn timestamp(&self, _pid: &str) -> Result<(i64, u64), SuError> {
        Ok((2_000_000_000_000, 1_000_100))
    }
}

fn assignment(nonce: u64, ts: i64, extra: &[(&str, &str)], message: Option<Value>) -> (i64, Value) {
    let mut tags = vec![
        json!({"name": "Process", "value": "PID"}),
        json!({"name": "Epoch", "value": "0"}),
        json!({"name": "Nonce", "value": nonce.to_string()}),
        json!({"name": "Timestamp", "value": ts.to_string()}),
        json!({"name": "Block-Height", "value": "000001000001"}),
        json!({"name": "Hash-Chain", "value": format!("chain{nonce}")}),
    ];
    tags.extend(extra.iter().map(|(n, v)| json!({"name": n, "value": v})));
    let node = json!({"message": message, "assignment": {"id": format!("assign{nonce}"), "owner": {"address": "SU", "key": ""}, "tags": tags}});
    (ts, node)
}

fn legacy(
    nodes: impl FnOnce(&str, &LocalGateway) -> Vec<(i64, Value)>,
) -> (Runtime<Scripted, LocalGateway>, Arc<MemoryStore>, String) {
    let gateway = LocalGateway::default();
    let module = echo_module(&gateway);
    let process_tags = vec![tag("Data-Protocol", "ao"), tag("Type", "Process"), tag("Module", &module)];
    // The process's own transaction: its data is what the synthesized spawn message carries.
    let pid = gateway.register("PROCESS-OWNER", process_tags.clone(), b"\xEF\xBB\xBFinitial data".to_vec()).unwrap();
    let nodes = nodes(&pid, &gateway)
        .into_iter()
        .map(|(ts, n)| {
            let v = n.to_string().replace("\"PID\"", &format!("\"{pid}\""));
            (ts, serde_json::from_str(&v).unwrap())
        })
        .collect();
    let process: Process = serde_json::from_value(json!({
        "process_id": pid, "block": "000001000000", "owner": {"address": "PROCESS-OWNER", "key": ""},
        "tags": process_tags, "timestamp": 1_700_000_000_000i64, "data": null, "anchor": null, "signature": "PSIG"
    }))
    .unwrap();
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(
        engine(),
        store.clone(),
        Arc::new(Scripted { process, nodes }),
        Arc::new(gateway),
        Policy::default(),
    );
    (rt, store, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_process_starts_with_a_synthesized_spawn_message_that_is_not_stored() {
    let (rt, store, pid) = legacy(|_, _| vec![]);
    rt.evaluate_to(&pid, None).await.unwrap();
    assert!(all(&store, &pid, false).is_empty(), "the synthesized spawn is evaluated, not stored");
    let (memory, _) = rt.state(&pid, None).await.unwrap();
    let want = format!(
        concat!(
            r#"{{"Id":"{pid}","Signature":"PSIG","Data":"initial data","Owner":"PROCESS-OWNER","Target":"{pid}","#,
            r#""Anchor":null,"From":"PROCESS-OWNER","Tags":[{{"name":"Data-Protocol","value":"ao"}},"#
        ),
        pid = pid
    );
    let text = String::from_utf8_lossy(&memory);
    assert!(text.contains(&want), "the module saw the spawn message built as the reference builds it");
    assert!(text.contains(r#""Timestamp":1700000000000,"Block-Height":1000000,"Cron":false}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_are_hydrated_from_the_gateway_and_a_repeated_one_is_skipped() {
    let (rt, store, pid) = legacy(|_, gw| {
        let tx = gw
            .register("SIGNER", vec![tag("Action", "Transfer"), tag("From-Process", "OTHER")], b"payload".to_vec())
            .unwrap();
        let message = json!({"id": "M1", "owner": {"address": "ALICE", "key": ""}, "data": "hi",
                             "tags": [{"name": "Action", "value": "Eval"}], "signature": "SIG1", "anchor": null});
        vec![
            assignment(1, 1_700_000_001_000, &[], Some(message)),
            assignment(2, 1_700_000_002_000, &[("Message", &tx)], None),
            assignment(3, 1_700_000_003_000, &[("Message", &tx)], None),
            assignment(4, 1_700_000_004_000, &[("Message", &tx), ("Exclude", "Data")], None),
        ]
    });
    rt.evaluate_to(&pid, None).await.unwrap();
    let rows = all(&store, &pid, false);
    let nonces: Vec<u64> = rows.iter().map(|e| e.position.nonce).collect();
    assert_eq!(nonces, [1, 2], "no stored spawn (legacy); nonce 3 and 4 assign the same transaction again: skipped");
    let out = &rows[1].result["Output"];
    let tx = out["Id"].as_str().unwrap();
    assert_eq!(
        out,
        &json!({"Id": tx, "Signature": null, "Data": "payload", "Owner": "SIGNER", "Target": "", "Anchor": null,
                "From": "OTHER", "Tags": [{"name": "Action", "value": "Transfer"}, {"name": "From-Process", "value": "OTHER"}],
                "Epoch": 0, "Nonce": 2, "Timestamp": 1_700_000_002_000i64, "Block-Height": 1_000_001,
                "Hash-Chain": "chain2", "Cron": false, "Read-Only": false})
    );
    assert_eq!(
        rt.result(&pid, tx).await.unwrap(),
        rows[1].result,
        "/result of the transaction is its first evaluation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lists_refuse_processes_and_owners_with_403_before_any_work() {
    let t0 = 1_800_000_000_000;
    let c = clocked(t0, vec![]);
    let su = c.su.clone();
    let runtime = |policy: Policy| {
        Runtime::new(engine(), Arc::new(MemoryStore::new()), su.clone(), Arc::new(LocalGateway::default()), policy)
    };
    let restricted = runtime(Policy { restrict_processes: vec![c.pid.clone()], ..Policy::default() });
    let e = restricted.evaluate_to(&c.pid, None).await.unwrap_err();
    assert_eq!((e.status, e.message.clone()), (403, format!("Access denied for process {}", c.pid)));
    let others_only = runtime(Policy { allow_processes: vec!["someone-else".into()], ..Policy::default() });
    assert_eq!(others_only.result(&c.pid, "x").await.unwrap_err().status, 403);
    let owners = runtime(Policy { allow_owners: vec!["not-the-owner".into()], ..Policy::default() });
    let e = owners.evaluate_to(&c.pid, None).await.unwrap_err();
    assert_eq!((e.status, e.message.clone()), (403, format!("Access denied for process owner {DEV_OWNER}")));
    // The unrestricted runtime of the same scheduler serves it.
    c.rt.evaluate_to(&c.pid, None).await.unwrap();
}

/// WeaveDrive through the whole pipeline: an aos2 process whose module declares the extension
/// reads `/data/<tx id>` from the CU's gateway; a module without it gets "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weavedrive_reads_transactions_through_the_gateway_for_processes_that_declare_it() {
    let Some(shared) = common::shared_dir() else { return };
    let wasm = std::fs::read(shared.join("fixtures/modules/aos2-emscripten4.wasm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let su = Arc::new(LocalScheduler::open(dir.path().join("su.redb"), metalcu::su::local::system_clock()).unwrap());
    let gateway = Arc::new(LocalGateway::default());
    let data = "bytes on the weave ".repeat(50);
    let tx = gateway.register("someone", vec![tag("Content-Type", "text/plain")], data.clone().into_bytes()).unwrap();
    let code = format!(
        "local f = io.open('/data/{tx}', 'r'); if not f then return 'missing' end; local s = f:read({}); f:close(); return #s .. ':' .. s:sub(1, 19)",
        data.len()
    );
    let policy = Policy { extensions: vec!["WeaveDrive".into()], ..Policy::default() };
    let rt = Runtime::new(engine(), Arc::new(MemoryStore::new()), su.clone(), gateway.clone(), policy);
    let mut outputs = Vec::new();
    for extension in [true, false] {
        let mut tags = common::module_tags("wasm32-unknown-emscripten4");
        if extension {
            tags.push(tag("Extension", "WeaveDrive"));
        }
        let module = gateway.register(DEV_OWNER, tags, wasm.clone()).unwrap();
        let spawn = vec![tag("Data-Protocol", "ao"), tag("Type", "Process"), tag("Module", &module)];
        let pid = su.spawn(DEV_OWNER, spawn, String::new()).unwrap().process_id;
        let m = su.post(&pid, DEV_OWNER, vec![tag("Action", "Eval")], code.clone()).unwrap();
        let r = rt.result(&pid, &m.id).await.unwrap();
        outputs.push(r["Output"]["data"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(outputs, [format!("{}:bytes on the weave ", data.len()), "missing".to_string()]);
}

/// The local scheduler, except that it answers `GET /{pid}?process-id={pid}` the way real SUs
/// do — with a page, which is not a single message.
struct RealShaped(Arc<LocalScheduler>);

impl Scheduler for RealShaped {
    async fn process(&self, pid: &str) -> Result<Process, SuError> {
        self.0.process(pid).await
    }
    async fn page(&self, pid: &str, q: PageQuery) -> Result<Page, SuError> {
        self.0.page(pid, q).await
    }
    async fn message(&self, pid: &str, id: &str) -> Result<Node, SuError> {
        if id == pid {
            return Err(SuError::Invalid("SU answered a page where one message was expected".into()));
        }
        self.0.message(pid, id).await
    }
    async fn latest(&self, pid: &str) -> Result<Option<Node>, SuError> {
        self.0.latest(pid).await
    }
    async fn timestamp(&self, pid: &str) -> Result<(i64, u64), SuError> {
        self.0.timestamp(pid).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawn_result_state_bounds_and_dry_run_refusals_follow_the_spec() {
    let t0 = 1_800_000_000_000;
    let c = clocked(t0, vec![]);
    let mut posted = Vec::new();
    for n in 1..=3 {
        c.now.store(t0 + n * 1000, Ordering::SeqCst);
        posted.push(c.su.post(&c.pid, DEV_OWNER, vec![], format!("m{n}")).unwrap());
    }
    // `/result/<pid>?process-id=<pid>` is the spawn, placed by the process's metadata (§1.4).
    let store = Arc::new(MemoryStore::new());
    let real =
        Runtime::new(engine(), store.clone(), Arc::new(RealShaped(c.su.clone())), c.gateway.clone(), Policy::default());
    let spawn = real.result(&c.pid, &c.pid).await.unwrap();
    assert_eq!(spawn["Output"]["Id"], c.pid);
    assert_eq!(summary(&all(&store, &c.pid, false)), vec![(t0, 0, None)], "only the spawn was evaluated");
    // `/state?to=` earlier than the memory is 425, with the latest nonce (§1.9, §4.10).
    let (_, last) = c.rt.state(&c.pid, Some(posted[0].timestamp)).await.unwrap();
    assert_eq!(last.unwrap().position.nonce, 1);
    c.rt.evaluate_to(&c.pid, None).await.unwrap();
    let err = c.rt.state(&c.pid, Some(posted[0].timestamp)).await.unwrap_err();
    let want =
        format!("message at timestamp {} not found cached, and earlier than latest known nonce 3", posted[0].timestamp);
    assert_eq!((err.status, err.message), (425, want));
    let (_, last) = c.rt.state(&c.pid, Some(posted[2].timestamp)).await.unwrap();
    assert_eq!(last.unwrap().position.nonce, 3, "the state at its own message is served");
    let peek = json!({"Owner": "someone", "Tags": []}).as_object().unwrap().clone();
    let err = c.rt.dry_run(&c.pid, peek.clone(), Some(&posted[0].id)).await.unwrap_err();
    assert_eq!(
        (err.status, err.message.as_str()),
        (425, "message at nonce 1 not found cached, and earlier than latest known nonce 3")
    );
    // A dry-run message without `Owner` is refused as the reference's message schema refuses it.
    let anonymous = json!({"Tags": [{"name": "Action", "value": "Peek"}]}).as_object().unwrap().clone();
    let err = c.rt.dry_run(&c.pid, anonymous, None).await.unwrap_err();
    assert_eq!((err.status, err.message.as_str()), (400, "'Owner': Required. | 'From': Required."));
    assert!(c.rt.dry_run(&c.pid, peek, None).await.is_ok());
}
