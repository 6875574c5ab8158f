//! `HttpGateway` and `CachedGateway` against small hyper servers on 127.0.0.1 that record every
//! request: the GraphQL bodies the gateway receives (query text and variables), the mapping of
//! answers, not-found, GraphQL errors, retries, `/raw` limits, block paging and endpoint rotation,
//! Scheduler-Location records, the configuration defaults, and the verified disk cache of module
//! binaries (hits without network, corruption detected and repaired, one fetch for concurrent
//! misses, bounded entries).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use metalcu::gateway::cache::{CachedGateway, DiskCacheConfig, ENTRY_SUFFIX, HEADER_BYTES};
use metalcu::gateway::http::{
    DEFAULT_GATEWAY_URL, GET_BLOCKS_QUERY, GET_PROCESSES_QUERY, GET_SCHEDULER_LOCATION_QUERY, HttpGateway,
    HttpGatewayConfig, MISSING_NODE_RETRIES,
};
use metalcu::gateway::{Block, Gateway, GatewayError, SchedulerLocation};
use metalcu::net::ClientConfig;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: String,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the fake answers.
struct Reply {
    status: u16,
    body: Vec<u8>,
    delay: Duration,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply { status, body: body.into(), delay: Duration::ZERO }
}

fn ok_json(v: Value) -> Reply {
    reply(200, v.to_string())
}

type Handler = Arc<dyn Fn(usize, &Seen) -> Reply + Send + Sync>;

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A hyper HTTP/1.1 server on 127.0.0.1; `handler(n, request)` answers request number `n`.
async fn fake(handler: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Fake {
    let handler: Handler = Arc::new(handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (handler, log) = (handler.clone(), log.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (handler, log) = (handler.clone(), log.clone());
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                        let content_type =
                            req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                        let body = req.into_body().collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
                        let seen = Seen { method, path, content_type, body };
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push(seen.clone());
                            log.len() - 1
                        };
                        let r = handler(n, &seen);
                        if !r.delay.is_zero() {
                            tokio::time::sleep(r.delay).await;
                        }
                        let resp = Response::builder()
                            .status(r.status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(r.body)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Fake { url: format!("http://{addr}"), seen }
}

/// Small delays so failure paths finish fast.
fn fast() -> ClientConfig {
    ClientConfig {
        retries: 2,
        base_delay: Duration::from_millis(20),
        max_total: Duration::from_secs(3),
        request_timeout: Duration::from_secs(1),
        max_body_bytes: 1024 * 1024,
    }
}

/// A 43-character id starting with `tag`.
fn id(tag: &str) -> String {
    format!("{tag:-<43}")
}

fn gateway_at(url: &str) -> HttpGateway {
    let mut cfg = HttpGatewayConfig::from_urls(Some(url), None, None, None).unwrap();
    cfg.client = fast();
    HttpGateway::new(cfg).unwrap()
}

fn tx_answer(id: &str) -> Value {
    json!({"data": {"transactions": {"edges": [{"node": {
        "id": id,
        "signature": "c2lnbmF0dXJl",
        "anchor": "YW5jaG9y",
        "owner": {"address": "vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI", "key": "a2V5"},
        "tags": [
            {"name": "Data-Protocol", "value": "ao"},
            {"name": "Type", "value": "Module"},
            {"name": "Module-Format", "value": "wasm32-unknown-emscripten4"}
        ],
        "recipient": ""
    }}]}}})
}

fn no_edges() -> Value {
    json!({"data": {"transactions": {"edges": []}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_request_shape_and_mapping() {
    let module = id("module");
    let m = module.clone();
    let gw = fake(move |_, _| ok_json(tx_answer(&m))).await;
    let client = gateway_at(&gw.url);

    let tx = client.transaction(&module).await.unwrap();
    assert_eq!(tx.id, module);
    assert_eq!(tx.owner.address, "vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI");
    assert_eq!(tx.owner.key, "a2V5");
    assert_eq!(tx.tags.len(), 3);
    assert_eq!((tx.tags[2].name.as_str(), tx.tags[2].value.as_str()), ("Module-Format", "wasm32-unknown-emscripten4"));
    assert_eq!(tx.signature.as_deref(), Some("c2lnbmF0dXJl"));
    assert_eq!(tx.anchor.as_deref(), Some("YW5jaG9y"));
    assert_eq!(tx.recipient.as_deref(), Some(""));

    // What the gateway received: POST {query, variables} to GRAPHQL_URL (= GATEWAY_URL/graphql).
    let seen = gw.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/graphql"));
    assert_eq!(seen[0].content_type, "application/json");
    let body = seen[0].json();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    assert_eq!(body["query"], GET_PROCESSES_QUERY);
    assert!(GET_PROCESSES_QUERY.starts_with(
        "query GetProcesses($processIds: [ID!]!, $skipTags: Boolean!, $skipSignature: Boolean!, $skipAnchor: Boolean!) {\n  transactions(ids: $processIds) {"
    ));
    assert!(GET_PROCESSES_QUERY.contains("signature @skip(if: $skipSignature)"));
    assert!(GET_PROCESSES_QUERY.contains("tags @skip(if: $skipTags) { name value }"));
    assert_eq!(
        body["variables"],
        json!({"processIds": [module], "skipTags": false, "skipSignature": false, "skipAnchor": false})
    );

    // Transactions are immutable: the second lookup is served from memory.
    assert_eq!(client.transaction(&module).await.unwrap(), tx);
    assert_eq!(gw.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_transactions_are_asked_again_then_not_found() {
    let gw = fake(|_, _| ok_json(no_edges())).await;
    let client = gateway_at(&gw.url);
    let missing = id("missing");
    let err = client.transaction(&missing).await.unwrap_err();
    assert_eq!(err, GatewayError::NotFound(missing.clone()));
    assert_eq!(err.status(), 404);
    assert!(err.to_string().starts_with("TransactionNotFound: "), "{err}");
    assert_eq!(gw.count(), 1 + MISSING_NODE_RETRIES as usize);

    // A node for another id is refused.
    let other = id("other");
    let gw = fake(move |_, _| ok_json(tx_answer(&other))).await;
    let err = gateway_at(&gw.url).transaction(&id("asked")).await.unwrap_err();
    assert!(matches!(err, GatewayError::Invalid(ref t) if t.contains("answered for")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_errors_are_retried_then_reported() {
    let gw = fake(|_, _| ok_json(json!({"errors": [{"message": "query timed out"}], "data": null}))).await;
    let err = gateway_at(&gw.url).transaction(&id("p")).await.unwrap_err();
    let GatewayError::Unavailable(ref text) = err else { panic!("{err:?}") };
    assert!(text.contains("GraphQL error: query timed out"), "{text}");
    assert_eq!(err.status(), 503);
    assert_eq!(gw.count(), 1 + fast().retries as usize);

    // A body that is not JSON is invalid, and not retried against the single endpoint.
    let gw = fake(|_, _| reply(200, "<html>busy</html>")).await;
    let err = gateway_at(&gw.url).transaction(&id("p")).await.unwrap_err();
    assert!(matches!(err, GatewayError::Invalid(ref t) if t.contains("not JSON")), "{err:?}");
    assert_eq!(gw.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_then_succeed() {
    let p = id("p");
    let answer = tx_answer(&p);
    let gw = fake(move |n, _| if n < 2 { reply(502, "bad gateway") } else { ok_json(answer.clone()) }).await;
    assert_eq!(gateway_at(&gw.url).transaction(&p).await.unwrap().id, p);
    assert_eq!(gw.count(), 3);

    // Persistent 5xx: Unavailable after the retries, quoting the peer.
    let gw = fake(|_, _| reply(503, "overloaded")).await;
    let err = gateway_at(&gw.url).transaction(&p).await.unwrap_err();
    assert!(matches!(err, GatewayError::Unavailable(ref t) if t.contains("503: overloaded")), "{err:?}");
    assert_eq!(gw.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_never_reach_the_network() {
    let gw = fake(|_, _| reply(500, "")).await;
    let client = gateway_at(&gw.url);
    for bad in ["short", "../../etc/passwd", &"x".repeat(44), &format!("{}/", "a".repeat(42)), ""] {
        assert!(matches!(client.transaction(bad).await, Err(GatewayError::Invalid(_))), "{bad}");
        assert!(matches!(client.raw(bad).await, Err(GatewayError::Invalid(_))), "{bad}");
        assert!(matches!(client.scheduler_location(bad).await, Err(GatewayError::Invalid(_))), "{bad}");
    }
    assert_eq!(gw.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_reads_arweave_url_with_a_limit() {
    let (small, big, gone) = (id("small"), id("big"), id("gone"));
    let (s, b) = (small.clone(), big.clone());
    let arweave = fake(move |_, seen| {
        if seen.path == format!("/raw/{s}") {
            reply(200, b"\0asm\x01\0\0\0".to_vec())
        } else if seen.path == format!("/raw/{b}") {
            reply(200, vec![7u8; 2048])
        } else {
            reply(404, "Not Found")
        }
    })
    .await;
    let graphql = fake(|_, _| reply(500, "")).await;
    let mut cfg = HttpGatewayConfig::from_urls(Some(&graphql.url), Some(&arweave.url), None, None).unwrap();
    cfg.client = fast();
    cfg.max_raw_bytes = 1024;
    let client = HttpGateway::new(cfg).unwrap();

    assert_eq!(&client.raw(&small).await.unwrap()[..], b"\0asm\x01\0\0\0");
    let err = client.raw(&big).await.unwrap_err();
    assert!(matches!(err, GatewayError::Invalid(ref t) if t.contains("larger than 1024")), "{err:?}");
    assert_eq!(client.raw(&gone).await.unwrap_err(), GatewayError::NotFound(gone.clone()));
    let paths: Vec<String> = arweave.seen().into_iter().map(|s| format!("{} {}", s.method, s.path)).collect();
    assert_eq!(paths, vec![format!("GET /raw/{small}"), format!("GET /raw/{big}"), format!("GET /raw/{gone}")]);
    assert_eq!(graphql.count(), 0);
}

/// A chain of blocks `FIRST..=LAST`, one every 120 s, served by `GetBlocks` pages.
const FIRST: u64 = 1000;
const LAST: u64 = 1300;
const T0: i64 = 1_700_000_000;

fn ts(height: u64) -> i64 {
    T0 + (height - FIRST) as i64 * 120
}

fn blocks_page(seen: &Seen) -> Reply {
    let body = seen.json();
    assert_eq!(body["query"], GET_BLOCKS_QUERY);
    let min = body["variables"]["min"].as_u64().unwrap().max(FIRST);
    let limit = body["variables"]["limit"].as_u64().unwrap();
    let heights: Vec<u64> = (min..=LAST).take(limit as usize).collect();
    let edges: Vec<Value> = heights.iter().map(|h| json!({"node": {"timestamp": ts(*h), "height": h}})).collect();
    let has_next = heights.last().is_some_and(|h| *h < LAST);
    ok_json(json!({"data": {"blocks": {"pageInfo": {"hasNextPage": has_next}, "edges": edges}}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_paged_until_past_the_bound() {
    let gw = fake(|_, seen| blocks_page(seen)).await;
    let client = gateway_at(&gw.url);

    // Up to (and including) the first block past the bound: 1000..=1201, three pages of 90.
    let blocks = client.blocks(FIRST, ts(1200) + 1).await.unwrap();
    let heights: Vec<u64> = blocks.iter().map(|b| b.height).collect();
    assert_eq!(heights, (FIRST..=1201).collect::<Vec<_>>());
    assert_eq!(blocks[0], Block { height: FIRST, timestamp_s: T0 });
    let vars: Vec<Value> = gw.seen().iter().map(|s| s.json()["variables"].clone()).collect();
    assert_eq!(
        vars,
        vec![json!({"min": 1000, "limit": 90}), json!({"min": 1090, "limit": 90}), json!({"min": 1180, "limit": 90})]
    );
    assert!(GET_BLOCKS_QUERY.contains("blocks(height: { min: $min }, first: $limit, sort: HEIGHT_ASC)"));

    // The end of the chain: no next page, every block returned.
    let tail = client.blocks(1250, i64::MAX).await.unwrap();
    assert_eq!(tail.len(), 51);
    assert_eq!(tail.last().unwrap().height, LAST);

    // Heights that go backwards are refused.
    let bad = fake(|_, _| {
        ok_json(json!({"data": {"blocks": {"pageInfo": {"hasNextPage": false}, "edges": [
            {"node": {"timestamp": 10, "height": 5}}, {"node": {"timestamp": 11, "height": 4}}
        ]}}}))
    })
    .await;
    let err = gateway_at(&bad.url).blocks(5, 100).await.unwrap_err();
    assert!(matches!(err, GatewayError::Invalid(ref t) if t.contains("out of order")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_queries_rotate_over_graphql_urls() {
    let broken = fake(|_, _| reply(500, "down")).await;
    let good = fake(|_, seen| blocks_page(seen)).await;
    let main = fake(|_, _| reply(500, "not for blocks")).await;
    let urls = format!("{}/graphql, ,{}/graphql", broken.url, good.url);
    let mut cfg = HttpGatewayConfig::from_urls(Some(&main.url), None, None, Some(&urls)).unwrap();
    cfg.client = fast();
    let client = HttpGateway::new(cfg).unwrap();

    let blocks = client.blocks(FIRST, ts(1100)).await.unwrap();
    assert_eq!(blocks.last().unwrap().height, 1101);
    // Each page: the first endpoint fails, the retry goes to the second.
    assert_eq!(broken.count(), 2);
    assert_eq!(good.count(), 2);
    assert_eq!(main.count(), 0);
    assert!(good.seen().iter().all(|s| s.path == "/graphql" && s.method == "POST"));
}

fn location_answer(tags: Value) -> Value {
    json!({"data": {"transactions": {"edges": [{"node": {"tags": tags}}]}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_locations() {
    let wallet = id("wallet");
    let gw = fake(|_, _| {
        ok_json(location_answer(json!([
            {"name": "Data-Protocol", "value": "ao"},
            {"name": "Type", "value": "Scheduler-Location"},
            {"name": "url", "value": "https://su1.example/"},
            {"name": "TIME-TO-LIVE", "value": "3600000"}
        ])))
    })
    .await;
    let loc = gateway_at(&gw.url).scheduler_location(&wallet).await.unwrap();
    assert_eq!(loc, SchedulerLocation { url: "https://su1.example".into(), ttl_ms: 3_600_000 });
    let body = gw.seen()[0].json();
    assert_eq!(body["query"], GET_SCHEDULER_LOCATION_QUERY);
    assert_eq!(body["variables"], json!({ "owner": wallet }));
    assert!(GET_SCHEDULER_LOCATION_QUERY.contains("sort: HEIGHT_DESC, first: 1"));
    assert!(GET_SCHEDULER_LOCATION_QUERY.contains(r#"{ name: "Type", values: ["Scheduler-Location"] }"#));

    // Missing Time-To-Live, missing Url, unusable values: InvalidSchedulerLocation (502).
    for tags in [
        json!([{"name": "Url", "value": "https://su1.example"}]),
        json!([{"name": "Time-To-Live", "value": "1000"}]),
        json!([{"name": "Url", "value": "ftp://su1.example"}, {"name": "Time-To-Live", "value": "1000"}]),
        json!([{"name": "Url", "value": "https://su1.example"}, {"name": "Time-To-Live", "value": "soon"}]),
    ] {
        let gw = fake(move |_, _| ok_json(location_answer(tags.clone()))).await;
        let err = gateway_at(&gw.url).scheduler_location(&wallet).await.unwrap_err();
        assert!(matches!(err, GatewayError::Invalid(ref t) if t.contains("InvalidSchedulerLocation")), "{err:?}");
        assert_eq!(err.status(), 502);
    }

    // No record at all: not found.
    let gw = fake(|_, _| ok_json(no_edges())).await;
    let err = gateway_at(&gw.url).scheduler_location(&wallet).await.unwrap_err();
    assert!(matches!(err, GatewayError::NotFound(ref t) if t.contains(&wallet)), "{err:?}");
}

#[test]
fn configuration_defaults_follow_the_spec() {
    let d = HttpGatewayConfig::from_urls(None, None, None, None).unwrap();
    assert_eq!(d.arweave_url, DEFAULT_GATEWAY_URL);
    assert_eq!(d.graphql_url, format!("{DEFAULT_GATEWAY_URL}/graphql"));
    assert!(d.graphql_urls.is_empty());
    assert_eq!(d.block_urls(), vec![d.graphql_url.clone()]);

    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    let c = HttpGatewayConfig::from_lookup(env(&[("GATEWAY_URL", "http://gw.local:3000/")])).unwrap();
    assert_eq!(
        (c.arweave_url.as_str(), c.graphql_url.as_str()),
        ("http://gw.local:3000", "http://gw.local:3000/graphql")
    );
    let c = HttpGatewayConfig::from_lookup(env(&[
        ("GATEWAY_URL", "http://gw.local"),
        ("ARWEAVE_URL", "http://data.local/"),
        ("GRAPHQL_URL", "http://gql.local/graphql"),
        ("GRAPHQL_URLS", " http://a.local/graphql, ,http://b.local/graphql "),
    ]))
    .unwrap();
    assert_eq!(c.arweave_url, "http://data.local");
    assert_eq!(c.graphql_url, "http://gql.local/graphql");
    assert_eq!(c.block_urls(), vec!["http://a.local/graphql".to_string(), "http://b.local/graphql".to_string()]);
    let c = HttpGatewayConfig::from_lookup(env(&[("GATEWAY_URL", "  "), ("ARWEAVE_URL", "")])).unwrap();
    assert_eq!(c.arweave_url, DEFAULT_GATEWAY_URL);
    assert!(HttpGatewayConfig::from_lookup(env(&[("GATEWAY_URL", "ftp://x")])).is_err());
    assert!(HttpGatewayConfig::from_lookup(env(&[("GRAPHQL_URLS", "http://a, nope")])).is_err());
}

// ---------------------------------------------------------------------------------------------
// The disk cache of module binaries.

const WASM: &[u8] = b"\0asm\x01\0\0\0 pretend module body";

/// An Arweave fake serving `WASM` for ids starting with `mod`, text for others; module metadata
/// (Type=Module) for ids starting with `tagged`, whose data is not wasm.
async fn module_server(delay: Duration) -> Fake {
    fake(move |_, seen| {
        if seen.method == "POST" {
            let wanted = seen.json()["variables"]["processIds"][0].as_str().unwrap().to_string();
            return ok_json(tx_answer(&wanted));
        }
        let id = seen.path.trim_start_matches("/raw/");
        let mut r = if id.starts_with("mod") {
            reply(200, WASM.to_vec())
        } else if id.starts_with("tagged") {
            reply(200, b"gzip-or-anything".to_vec())
        } else {
            reply(200, format!("data of {id}"))
        };
        r.delay = delay;
        r
    })
    .await
}

fn raw_requests(f: &Fake) -> usize {
    f.seen().iter().filter(|s| s.method == "GET").count()
}

fn cached(url: &str, dir: &std::path::Path) -> CachedGateway<HttpGateway> {
    CachedGateway::new(gateway_at(url), DiskCacheConfig::new(dir)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_binaries_are_served_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let server = module_server(Duration::ZERO).await;
    let (module, data, tagged) = (id("mod1"), id("data1"), id("tagged1"));

    let gw = cached(&server.url, dir.path());
    assert_eq!(&gw.raw(&module).await.unwrap()[..], WASM);
    assert_eq!(&gw.raw(&module).await.unwrap()[..], WASM);
    assert_eq!(raw_requests(&server), 1);
    let file = dir.path().join(format!("{module}{ENTRY_SUFFIX}"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), (HEADER_BYTES + WASM.len()) as u64);

    // A fresh CU over the same directory: no network at all.
    let again = cached(&server.url, dir.path());
    assert_eq!(&again.raw(&module).await.unwrap()[..], WASM);
    assert_eq!(raw_requests(&server), 1);

    // Plain data is not cached.
    assert_eq!(&again.raw(&data).await.unwrap()[..], format!("data of {data}").as_bytes());
    assert_eq!(&again.raw(&data).await.unwrap()[..], format!("data of {data}").as_bytes());
    assert_eq!(raw_requests(&server), 3);

    // An id seen as Type=Module in its metadata is cached whatever its bytes.
    assert_eq!(again.transaction(&tagged).await.unwrap().id, tagged);
    assert_eq!(&again.raw(&tagged).await.unwrap()[..], b"gzip-or-anything");
    assert_eq!(&again.raw(&tagged).await.unwrap()[..], b"gzip-or-anything");
    assert_eq!(raw_requests(&server), 4);
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 2, "only the two modules are on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_entries_are_detected_and_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = module_server(Duration::ZERO).await;
    let module = id("mod2");
    let gw = cached(&server.url, dir.path());
    gw.raw(&module).await.unwrap();
    let file = dir.path().join(format!("{module}{ENTRY_SUFFIX}"));
    let good = std::fs::read(&file).unwrap();

    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    let truncated = good[..good.len() - 3].to_vec();
    let foreign = b"not a cache file at all".to_vec();
    for (n, bad) in [flipped, truncated, foreign, Vec::new()].into_iter().enumerate() {
        std::fs::write(&file, &bad).unwrap();
        assert_eq!(&gw.raw(&module).await.unwrap()[..], WASM, "case {n}");
        assert_eq!(raw_requests(&server), 2 + n, "case {n} was fetched again");
        assert_eq!(std::fs::read(&file).unwrap(), good, "case {n} was repaired");
        assert_eq!(&gw.raw(&module).await.unwrap()[..], WASM);
        assert_eq!(raw_requests(&server), 2 + n, "the repaired entry serves");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_fetch_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = module_server(Duration::from_millis(200)).await;
    let module = id("mod3");
    let gw = Arc::new(cached(&server.url, dir.path()));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (gw, module, done) = (gw.clone(), module.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let body = gw.raw(&module).await.unwrap();
            done.fetch_add(1, Ordering::SeqCst);
            body
        }));
    }
    for t in tasks {
        assert_eq!(&t.await.unwrap()[..], WASM);
    }
    assert_eq!(done.load(Ordering::SeqCst), 8);
    assert_eq!(raw_requests(&server), 1);
    // No temporary file is left behind.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names, vec![format!("{module}{ENTRY_SUFFIX}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_cache_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = module_server(Duration::ZERO).await;
    let cfg = DiskCacheConfig { max_entries: 2, ..DiskCacheConfig::new(dir.path()) };
    let gw = CachedGateway::new(gateway_at(&server.url), cfg).unwrap();
    let ids: Vec<String> = (0..3).map(|i| id(&format!("mod{i}x"))).collect();
    for i in &ids {
        gw.raw(i).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on_disk = |i: &str| dir.path().join(format!("{i}{ENTRY_SUFFIX}")).exists();
    assert!(!on_disk(&ids[0]), "the least recently used entry is evicted");
    assert!(on_disk(&ids[1]) && on_disk(&ids[2]));

    // Bodies over the item bound pass through uncached.
    let small = DiskCacheConfig { max_item_bytes: 4, ..DiskCacheConfig::new(dir.path().join("small")) };
    let gw = CachedGateway::new(gateway_at(&server.url), small).unwrap();
    let big = id("mod-big");
    assert_eq!(&gw.raw(&big).await.unwrap()[..], WASM);
    assert!(!dir.path().join("small").join(format!("{big}{ENTRY_SUFFIX}")).exists());
}
