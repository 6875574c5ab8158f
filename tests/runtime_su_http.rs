//! The runtime over the real SU client (HTTP, epoll transport) against a scheduler that breaks
//! mid-stream: a page of truncated JSON is a 502 and a scheduler answering 5xx is a 503 (after the
//! client's retries), with everything before the bad page stored and nothing after it; once the
//! scheduler recovers, the process continues as if nothing happened. An unknown process through
//! `/result` is the scheduler's "not found", as a 404 with its text.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metalcu::engine::{Engine, EngineConfig};
use metalcu::gateway::local::LocalGateway;
use metalcu::net::fetch::Fetcher;
use metalcu::net::{AnyTransport, IoMode};
use metalcu::process::evaluator::Runtime;
use metalcu::process::options::Policy;
use metalcu::store::{Evaluation, MemoryStore, Query, Store};
use metalcu::su::client::{ClientConfig, HttpScheduler, SU_PEER};
use metalcu::su::local::{DEV_OWNER, LocalScheduler};
use metalcu::su::scheduler::PageQuery;
use metalcu::su::types::Tag;

/// How the fake SU answers pages after the first.
const HEALTHY: u8 = 0;
const TRUNCATED: u8 = 1;
const FAILING: u8 = 2;

const NOT_FOUND: &str = r#"{"error":"Message or Process not found"}"#;

fn tag(n: &str, v: &str) -> Tag {
    Tag { name: n.into(), value: v.into() }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

/// The SU's read routes over the local scheduler; pages asked with `from` (every page after the
/// first) answer as `fault` says.
fn answer(su: &LocalScheduler, fault: u8, path: &str, query: &str) -> (StatusCode, String) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let found = |r: Result<serde_json::Value, _>| match r {
        Ok(v) => (StatusCode::OK, v.to_string()),
        Err(_) => (StatusCode::BAD_REQUEST, NOT_FOUND.to_string()),
    };
    match segs.as_slice() {
        ["timestamp"] => (StatusCode::OK, su.timestamp_json().to_string()),
        ["processes", pid] => found(su.process_json(pid)),
        [pid, "latest"] => found(su.latest_json(pid)),
        [id] => match su.locate(id) {
            Err(_) => (StatusCode::BAD_REQUEST, NOT_FOUND.to_string()),
            Ok((pid, true)) => {
                let int = |k| query_param(query, k).and_then(|v| v.parse::<i64>().ok());
                let q = PageQuery { from: int("from"), to: int("to"), limit: int("limit").unwrap_or(0) as u32 };
                let (status, body) = found(su.page_json(&pid, q));
                match fault {
                    TRUNCATED if q.from.is_some() => (status, body[..body.len() / 2].to_string()),
                    FAILING if q.from.is_some() => {
                        (StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"database unavailable"}"#.into())
                    }
                    _ => (status, body),
                }
            }
            Ok((_, false)) => match query_param(query, "process-id") {
                Some(pid) => found(su.message_json(&pid, id)),
                None => (StatusCode::BAD_REQUEST, NOT_FOUND.to_string()),
            },
        },
        _ => (StatusCode::NOT_FOUND, NOT_FOUND.to_string()),
    }
}

async fn fake_su(su: Arc<LocalScheduler>, fault: Arc<AtomicU8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (su, fault) = (su.clone(), fault.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (su, fault) = (su.clone(), fault.clone());
                    async move {
                        let (path, query) = (req.uri().path().to_string(), req.uri().query().unwrap_or("").to_string());
                        let (status, body) = answer(&su, fault.load(Ordering::SeqCst), &path, &query);
                        let resp = Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    format!("http://{addr}")
}

struct Setup {
    rt: Runtime<HttpScheduler, LocalGateway>,
    store: Arc<MemoryStore>,
    fault: Arc<AtomicU8>,
    pid: String,
    ids: Vec<String>,
    _dir: tempfile::TempDir,
}

async fn setup(messages: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let su = Arc::new(common::stepping_scheduler(dir.path(), 1_800_000_000_000));
    let gateway = Arc::new(LocalGateway::default());
    let module_tags = common::module_tags("wasm32-unknown-emscripten4");
    let wasm = wat::parse_str(common::counter_wat(0, 0)).unwrap();
    let module = gateway.register(DEV_OWNER, module_tags, wasm).unwrap();
    let spawn = vec![tag("Data-Protocol", "ao"), tag("Type", "Process"), tag("Module", &module)];
    let pid = su.spawn(DEV_OWNER, spawn, String::new()).unwrap().process_id;
    let ids = (0..messages).map(|n| su.post(&pid, DEV_OWNER, vec![], format!("m{n}")).unwrap().id).collect();
    let fault = Arc::new(AtomicU8::new(HEALTHY));
    let base = fake_su(su, fault.clone()).await;
    let cfg = ClientConfig {
        retries: 2,
        base_delay: Duration::from_millis(10),
        max_total: Duration::from_secs(5),
        request_timeout: Duration::from_secs(2),
        max_body_bytes: 1024 * 1024,
    };
    let transport = AnyTransport::new(IoMode::Epoll, cfg.request_timeout).unwrap();
    let client = HttpScheduler::with_fetcher(&base, Arc::new(Fetcher::new(Arc::new(transport), cfg, SU_PEER))).unwrap();
    let store = Arc::new(MemoryStore::new());
    let engine = Arc::new(Engine::new(EngineConfig { pool_slots: 4, ..EngineConfig::default() }).unwrap());
    // Pages of two edges: the stream spans several pages.
    let policy = Policy { page_size: 2, ..Policy::default() };
    let rt = Runtime::new(engine, store.clone(), Arc::new(client), gateway, policy);
    Setup { rt, store, fault, pid, ids, _dir: dir }
}

fn stored(store: &MemoryStore, pid: &str) -> Vec<Evaluation> {
    let q = Query { after: None, until: None, descending: false, limit: 1000, cron_only: false, hide_errors: false };
    store.list(pid, &q).unwrap().0
}

fn outputs(rows: &[Evaluation]) -> Vec<(u64, String)> {
    rows.iter().map(|e| (e.position.nonce, e.result["Output"].as_str().unwrap_or("?").to_string())).collect()
}

fn counted(n: u64) -> Vec<(u64, String)> {
    (0..=n).map(|i| (i, (i + 1).to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_breaking_mid_stream_is_502_or_503_and_nothing_after_the_break_is_stored() {
    let s = setup(7).await;
    s.fault.store(TRUNCATED, Ordering::SeqCst);
    let err = s.rt.result(&s.pid, &s.ids[6]).await.unwrap_err();
    assert_eq!(err.status, 502, "{err}");
    // The first page (spawn and first message) was evaluated and stored; nothing after it.
    assert_eq!(outputs(&stored(&s.store, &s.pid)), counted(1));
    s.fault.store(FAILING, Ordering::SeqCst);
    let err = s.rt.evaluate_to(&s.pid, None).await.unwrap_err();
    assert_eq!(err.status, 503, "{err}");
    assert_eq!(outputs(&stored(&s.store, &s.pid)), counted(1), "nothing stored while the scheduler fails");
    s.fault.store(HEALTHY, Ordering::SeqCst);
    let last = s.rt.result(&s.pid, &s.ids[6]).await.unwrap();
    assert_eq!(last["Output"], "8");
    assert_eq!(outputs(&stored(&s.store, &s.pid)), counted(7), "the stream continues exactly where it broke");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_processes_and_messages_are_the_schedulers_not_found() {
    let s = setup(1).await;
    let unknown = "U".repeat(43);
    let err = s.rt.result(&unknown, &s.ids[0]).await.unwrap_err();
    assert_eq!(err.status, 404, "{err}");
    assert!(err.message.contains("Message or Process not found"), "{}", err.message);
    let err = s.rt.result(&s.pid, &unknown).await.unwrap_err();
    assert_eq!(err.status, 404, "{err}");
    let err = s.rt.evaluate_to(&unknown, None).await.unwrap_err();
    assert_eq!(err.status, 404, "{err}");
    assert!(stored(&s.store, &unknown).is_empty() && stored(&s.store, &s.pid).is_empty());
}
