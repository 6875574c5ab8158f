//! The embedded SU of `metalcu dev` seen from the CU: pages with the real SU's boundaries
//! (`from` exclusive, `to` inclusive, `limit`, `has_next_page`), nodes that map with
//! `map_node`, hash chains that verify message after message, strictly increasing timestamps
//! under a frozen clock, a log that survives a restart unchanged, bounds refused, unknown ids
//! not found — and the same through the HTTP front on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metalcu::su::hashchain::{self, HASH_CHAIN_MIN_BLOCK_HEIGHT, Link};
use metalcu::su::local::{self, LocalScheduler, LocalSuError, Posted};
use metalcu::su::local_http;
use metalcu::su::message::{map_node, tag};
use metalcu::su::scheduler::{PageQuery, Scheduler, SuError};
use metalcu::su::types::{Node, Page, Process, Tag};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MODULE: &str = "bkjb55i07GUCUSWROtKK4HU1mBS_X0TyH3M5jMV6aPg";
const OWNER: &str = "vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI";
const T0: i64 = 1_760_000_000_000;

/// A clock the test moves by hand.
fn manual_clock(start: i64) -> (Arc<AtomicI64>, Box<dyn Fn() -> i64 + Send + Sync>) {
    let now = Arc::new(AtomicI64::new(start));
    let c = now.clone();
    (now, Box::new(move || c.load(Ordering::SeqCst)))
}

fn t(name: &str, value: &str) -> Tag {
    Tag { name: name.into(), value: value.into() }
}

fn process_tags() -> Vec<Tag> {
    vec![
        t("Data-Protocol", "ao"),
        t("Variant", "ao.TN.1"),
        t("Type", "Process"),
        t("Module", MODULE),
        t("Scheduler", local::LOCAL_SU_ADDRESS),
    ]
}

fn msg_tags(i: usize) -> Vec<Tag> {
    vec![t("Data-Protocol", "ao"), t("Type", "Message"), t("Action", "Eval"), t("N", &i.to_string())]
}

fn open(dir: &tempfile::TempDir, start: i64) -> (Arc<AtomicI64>, LocalScheduler) {
    let (now, clock) = manual_clock(start);
    (now, LocalScheduler::open(dir.path().join("su.redb"), clock).unwrap())
}

/// A process and `n` messages, the clock moving 10 ms between them.
fn populate(su: &LocalScheduler, now: &AtomicI64, n: usize) -> (String, Vec<Posted>) {
    let spawned = su.spawn(OWNER, process_tags(), "-- process data".into()).unwrap();
    let pid = spawned.id.clone();
    let mut posted = vec![spawned];
    for i in 0..n {
        now.fetch_add(10, Ordering::SeqCst);
        posted.push(su.post(&pid, OWNER, msg_tags(i), format!("return {i}")).unwrap());
    }
    (pid, posted)
}

fn q(from: Option<i64>, to: Option<i64>, limit: u32) -> PageQuery {
    PageQuery { from, to, limit }
}

fn nonces(p: &Page) -> Vec<u64> {
    p.edges.iter().map(|e| map_node(&e.node).unwrap().nonce).collect()
}

/// Checks nodes the way the CU does: each maps, nonces run on, and each `Hash-Chain` follows
/// the previous scheduled message's link.
fn check_stream(nodes: &[Node], process_height: u64) {
    assert!(process_height >= HASH_CHAIN_MIN_BLOCK_HEIGHT, "the CU would skip the hash-chain check");
    let mut prev: Option<Link> = None;
    for (i, node) in nodes.iter().enumerate() {
        let s = map_node(node).unwrap();
        assert_eq!(s.nonce, i as u64);
        assert!(!s.is_assignment);
        assert_eq!(s.assignment_id.len(), 43);
        hashchain::verify(prev.as_ref(), &s.hash_chain, s.msg["Id"].as_str().unwrap(), process_height).unwrap();
        prev = Some(Link { assignment_id: s.assignment_id, hash_chain: s.hash_chain });
    }
}

fn height_of(p: &Process) -> u64 {
    p.block.parse().unwrap()
}

#[tokio::test]
async fn spawn_and_posts_page_in_order_map_cleanly_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (now, su) = open(&dir, T0);
    let (pid, posted) = populate(&su, &now, 5);
    assert_eq!(pid.len(), 43);
    assert!(URL_SAFE_NO_PAD.decode(&pid).is_ok());

    let process = su.process(&pid).await.unwrap();
    assert_eq!((process.process_id.as_str(), process.timestamp), (pid.as_str(), T0));
    assert_eq!(process.block, "000001".to_string() + &process.block[6..]);
    assert_eq!(height_of(&process), local::block_height_at(T0));
    assert_eq!(process.tags, process_tags());

    let page = su.page(&pid, q(None, None, 1000)).await.unwrap();
    assert!(!page.page_info.has_next_page);
    assert_eq!(nonces(&page), vec![0, 1, 2, 3, 4, 5]);
    for (e, p) in page.edges.iter().zip(&posted) {
        assert_eq!(e.cursor, p.timestamp.to_string());
        let s = map_node(&e.node).unwrap();
        assert_eq!((s.msg["Id"].as_str().unwrap(), s.timestamp, s.nonce), (p.id.as_str(), p.timestamp, p.nonce));
        assert_eq!(s.msg["Target"], pid.as_str());
        assert_eq!(s.msg["Owner"], OWNER);
        assert_eq!(s.msg["Block-Height"], p.block_height);
        let names: Vec<&str> = e.node.assignment.tags.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Process",
                "Epoch",
                "Nonce",
                "Hash-Chain",
                "Block-Height",
                "Timestamp",
                "Data-Protocol",
                "Type",
                "Variant"
            ]
        );
        assert_eq!(tag(&e.node.assignment.tags, "Block-Height").unwrap(), format!("{:012}", p.block_height));
        assert_eq!(tag(&e.node.assignment.tags, "Type"), Some("Assignment"));
    }
    // The first edge is the process itself (post-aop6), with the seed hash chain.
    let first = map_node(&page.edges[0].node).unwrap();
    assert_eq!(first.msg["Id"], pid.as_str());
    assert_eq!(tag(&page.edges[0].node.message.as_ref().unwrap().tags, "Type"), Some("Process"));
    let seed = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(URL_SAFE_NO_PAD.decode(&pid).unwrap()));
    assert_eq!(first.hash_chain, seed);
    assert_eq!(page.edges[1].node.message.as_ref().unwrap().data, json!("return 0"));

    let nodes: Vec<Node> = page.edges.into_iter().map(|e| e.node).collect();
    check_stream(&nodes, height_of(&process));

    // A tampered link is caught by the CU's check.
    let s1 = map_node(&nodes[1]).unwrap();
    let s2 = map_node(&nodes[2]).unwrap();
    let wrong = Link { assignment_id: s1.assignment_id.clone(), hash_chain: first.hash_chain.clone() };
    assert!(hashchain::verify(Some(&wrong), &s2.hash_chain, "m", height_of(&process)).is_err());
}

#[tokio::test]
async fn pages_have_the_real_sus_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let (now, su) = open(&dir, T0);
    let (pid, posted) = populate(&su, &now, 5);
    let ts: Vec<i64> = posted.iter().map(|p| p.timestamp).collect();
    let page = |from, to, limit| {
        let su = &su;
        let pid = pid.clone();
        async move { su.page(&pid, q(from, to, limit)).await.unwrap() }
    };

    // `from` is exclusive, `to` inclusive, on timestamps equal to an edge's.
    assert_eq!(nonces(&page(Some(ts[2]), None, 100).await), vec![3, 4, 5]);
    assert_eq!(nonces(&page(None, Some(ts[4]), 100).await), vec![0, 1, 2, 3, 4]);
    assert_eq!(nonces(&page(Some(ts[1]), Some(ts[3]), 100).await), vec![2, 3]);
    assert_eq!(nonces(&page(Some(ts[1] - 1), Some(ts[1]), 100).await), vec![1]);
    assert!(page(Some(ts[1]), Some(ts[1]), 100).await.edges.is_empty());
    assert!(page(Some(ts[3]), Some(ts[2]), 100).await.edges.is_empty());
    assert!(page(Some(ts[5]), None, 100).await.edges.is_empty());
    assert!(page(Some(i64::MAX), None, 100).await.edges.is_empty());
    // Between two edges' timestamps.
    assert_eq!(nonces(&page(Some(ts[1] + 1), Some(ts[3] - 1), 100).await), vec![2]);

    // `limit` and `has_next_page`, counting only edges within `to`.
    let p = page(None, None, 2).await;
    assert_eq!((nonces(&p), p.page_info.has_next_page), (vec![0, 1], true));
    let p = page(Some(ts[3]), None, 2).await;
    assert_eq!((nonces(&p), p.page_info.has_next_page), (vec![4, 5], false));
    let p = page(None, Some(ts[3]), 4).await;
    assert_eq!((nonces(&p), p.page_info.has_next_page), (vec![0, 1, 2, 3], false));
    let p = page(None, Some(ts[3]), 3).await;
    assert_eq!((nonces(&p), p.page_info.has_next_page), (vec![0, 1, 2], true));
    let p = page(None, None, 0).await;
    assert_eq!((p.edges.len(), p.page_info.has_next_page), (6, false), "limit 0 means the default");
    let p = page(None, None, u32::MAX).await;
    assert_eq!(p.edges.len(), 6, "a huge limit is clamped, not refused");

    // The CU's paging loop: next `from` = last cursor, until `has_next_page` is false.
    let mut from = None;
    let mut all = Vec::new();
    loop {
        let p = page(from, Some(ts[4]), 2).await;
        all.extend(nonces(&p));
        from = p.edges.last().map(|e| e.cursor.parse().unwrap());
        if !p.page_info.has_next_page {
            break;
        }
    }
    assert_eq!(all, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn a_frozen_or_backward_clock_still_gives_strictly_increasing_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let (now, su) = open(&dir, T0);
    let spawned = su.spawn(OWNER, process_tags(), String::new()).unwrap();
    let mut last = spawned.timestamp;
    for i in 0..20 {
        if i == 10 {
            now.store(T0 - 60_000, Ordering::SeqCst); // the clock goes back a minute
        }
        let p = su.post(&spawned.id, OWNER, msg_tags(i), String::new()).unwrap();
        assert_eq!(p.timestamp, last + 1);
        assert_eq!(p.nonce, i as u64 + 1);
        assert_eq!(p.block_height, local::block_height_at(p.timestamp));
        last = p.timestamp;
    }
    // Two processes spawned at the same frozen instant get different ids and their own clocks.
    let other = su.spawn(OWNER, process_tags(), String::new()).unwrap();
    assert_ne!(other.id, spawned.id);
    assert_eq!(other.timestamp, T0 - 60_000);
    let page = su.page(&spawned.id, q(None, None, 1000)).await.unwrap();
    assert_eq!(page.edges.len(), 21);
    let process = su.process(&spawned.id).await.unwrap();
    check_stream(&page.edges.into_iter().map(|e| e.node).collect::<Vec<_>>(), height_of(&process));
}

#[tokio::test]
async fn a_restart_keeps_the_log_identical_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (pid, before_page, before_process, before_latest, last) = {
        let (now, su) = open(&dir, T0);
        let (pid, posted) = populate(&su, &now, 4);
        (
            pid.clone(),
            su.page_json(&pid, q(None, None, 1000)).unwrap(),
            su.process_json(&pid).unwrap(),
            su.latest_json(&pid).unwrap(),
            posted.last().unwrap().clone(),
        )
    };
    // Reopened with a clock behind the log.
    let (_now, su) = open(&dir, T0 - 1);
    assert_eq!(su.page_json(&pid, q(None, None, 1000)).unwrap(), before_page);
    assert_eq!(su.process_json(&pid).unwrap(), before_process);
    assert_eq!(su.latest_json(&pid).unwrap(), before_latest);
    assert_eq!(su.process_count().unwrap(), 1);

    let next = su.post(&pid, OWNER, msg_tags(99), "after restart".into()).unwrap();
    assert_eq!((next.nonce, next.timestamp), (last.nonce + 1, last.timestamp + 1));
    let page = su.page(&pid, q(None, None, 1000)).await.unwrap();
    let process = su.process(&pid).await.unwrap();
    check_stream(&page.edges.into_iter().map(|e| e.node).collect::<Vec<_>>(), height_of(&process));
    // The new process of a restarted SU does not reuse an id.
    let again = su.spawn(OWNER, process_tags(), "-- process data".into()).unwrap();
    assert_ne!(again.id, pid);
}

#[tokio::test]
async fn bounds_and_missing_process_tags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (now, su) = open(&dir, T0);
    let (pid, _) = populate(&su, &now, 0);
    let too_large = |r: Result<Posted, LocalSuError>| matches!(r, Err(LocalSuError::TooLarge(_)));
    let invalid = |r: Result<Posted, LocalSuError>| matches!(r, Err(LocalSuError::Invalid(_)));

    let many: Vec<Tag> = (0..=local::MAX_TAGS).map(|i| t(&format!("T{i}"), "v")).collect();
    assert!(too_large(su.post(&pid, OWNER, many.clone(), String::new())));
    let mut many_process = process_tags();
    many_process.extend(many);
    assert!(too_large(su.spawn(OWNER, many_process, String::new())));
    let long = "x".repeat(local::MAX_TAG_BYTES + 1);
    assert!(too_large(su.post(&pid, OWNER, vec![t("Name", &long)], String::new())));
    assert!(too_large(su.post(&pid, OWNER, vec![t(&long, "v")], String::new())));
    assert!(too_large(su.post(&pid, OWNER, vec![], "d".repeat(local::MAX_DATA_BYTES + 1))));
    assert!(too_large(su.post(&pid, &"o".repeat(local::MAX_OWNER_BYTES + 1), vec![], String::new())));
    assert!(invalid(su.post(&pid, "", vec![], String::new())));
    assert!(invalid(su.post(&pid, OWNER, vec![t("", "v")], String::new())));
    for missing in ["Data-Protocol", "Type", "Module"] {
        let tags: Vec<Tag> = process_tags().into_iter().filter(|t| t.name != missing).collect();
        let err = su.spawn(OWNER, tags, String::new()).unwrap_err();
        assert!(matches!(&err, LocalSuError::Invalid(s) if s.contains(missing)), "{err}");
        assert_eq!(err.status(), 400);
    }
    let mut wrong_type = process_tags();
    wrong_type[2].value = "Message".into();
    assert!(invalid(su.spawn(OWNER, wrong_type, String::new())));
    assert_eq!(LocalSuError::TooLarge(String::new()).status(), 413);

    // At the bounds, accepted; nothing refused was written.
    let max_tags: Vec<Tag> = (0..local::MAX_TAGS).map(|i| t(&format!("T{i}"), "v")).collect();
    let p = su.post(&pid, OWNER, max_tags, "d".repeat(local::MAX_DATA_BYTES)).unwrap();
    assert_eq!(p.nonce, 1);
    assert_eq!(su.process_count().unwrap(), 1);
    let page = su.page(&pid, q(None, None, 1000)).await.unwrap();
    assert_eq!(page.edges.len(), 2);
}

#[tokio::test]
async fn unknown_processes_and_messages_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (now, su) = open(&dir, T0);
    let (pid, posted) = populate(&su, &now, 2);
    let (other, _) = populate(&su, &now, 1);
    let unknown = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let nf = SuError::NotFound("Message or Process not found".into());
    assert_eq!(su.process(unknown).await.unwrap_err(), nf);
    assert_eq!(su.page(unknown, q(None, None, 10)).await.unwrap_err(), nf);
    assert_eq!(su.latest(unknown).await.unwrap_err(), nf);
    assert_eq!(su.message(&pid, unknown).await.unwrap_err(), nf);
    assert_eq!(su.message(&other, &posted[1].id).await.unwrap_err(), nf, "a message of another process");
    assert_eq!(su.message("", "").await.unwrap_err(), nf);
    assert!(matches!(su.post(unknown, OWNER, vec![], String::new()), Err(LocalSuError::NotFound)));
    assert_eq!(nf.status(), 404);

    // Known ids: the node a page holds, and the last node.
    let page = su.page(&pid, q(None, None, 10)).await.unwrap();
    assert_eq!(su.message(&pid, &posted[1].id).await.unwrap(), page.edges[1].node);
    assert_eq!(su.message(&pid, &pid).await.unwrap(), page.edges[0].node);
    assert_eq!(su.latest(&pid).await.unwrap(), Some(page.edges[2].node.clone()));
    let (ts, height) = su.timestamp("any").await.unwrap();
    assert_eq!((ts, height), (now.load(Ordering::SeqCst), local::block_height_at(ts)));
}

#[test]
fn concurrent_posts_get_contiguous_nonces_and_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (_now, su) = open(&dir, T0);
    let su = Arc::new(su);
    let pid = su.spawn(OWNER, process_tags(), String::new()).unwrap().id;
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let (su, pid) = (su.clone(), pid.clone());
            std::thread::spawn(move || {
                (0..5).map(|i| su.post(&pid, OWNER, msg_tags(k * 10 + i), String::new()).unwrap().nonce).collect()
            })
        })
        .collect();
    let mut all: Vec<u64> = Vec::new();
    for h in threads {
        let mine: Vec<u64> = h.join().unwrap();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "each poster sees its nonces increase: {mine:?}");
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=20).collect::<Vec<u64>>());
    let page = Page::parse(&serde_json::to_vec(&su.page_json(&pid, q(None, None, 1000)).unwrap()).unwrap()).unwrap();
    let process: Process = serde_json::from_value(su.process_json(&pid).unwrap()).unwrap();
    check_stream(&page.edges.into_iter().map(|e| e.node).collect::<Vec<_>>(), height_of(&process));
}

// ---- HTTP front ----

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn call(client: &HttpClient, method: Method, url: &str, body: Option<Value>) -> (StatusCode, Value) {
    let body = body.map(|b| Bytes::from(serde_json::to_vec(&b).unwrap())).unwrap_or_default();
    call_raw(client, method, url, body).await
}

async fn call_raw(client: &HttpClient, method: Method, url: &str, body: Bytes) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(url).body(Full::new(body)).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await.unwrap().unwrap();
    let status = resp.status();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_front_serves_the_su_routes_and_the_dev_write_route() {
    let dir = tempfile::tempdir().unwrap();
    let (now, su) = open(&dir, T0);
    let su = Arc::new(su);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(local_http::serve(listener, su.clone(), async {
        let _ = stopped.await;
    }));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{addr}");
    let tags_json =
        |tags: Vec<Tag>| -> Value { tags.iter().map(|t| json!({"name": t.name, "value": t.value})).collect() };

    // Spawn, then posts.
    let (status, spawned) = call(
        &client,
        Method::POST,
        &format!("{base}/"),
        Some(json!({"tags": tags_json(process_tags()), "data": "-- p"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{spawned}");
    let pid = spawned["id"].as_str().unwrap().to_string();
    assert_eq!((spawned["process"].as_str(), spawned["nonce"].as_u64()), (Some(pid.as_str()), Some(0)));
    assert_eq!(spawned["timestamp"], T0);
    assert_eq!(spawned["block_height"], local::block_height_at(T0));
    let mut ids = vec![pid.clone()];
    for i in 0..3 {
        now.fetch_add(5, Ordering::SeqCst);
        let body = json!({"process": pid, "owner": OWNER, "tags": tags_json(msg_tags(i)), "data": format!("m{i}")});
        let (status, posted) = call(&client, Method::POST, &format!("{base}/"), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{posted}");
        assert_eq!(posted["nonce"], i as u64 + 1);
        ids.push(posted["id"].as_str().unwrap().to_string());
    }

    // Pages as JSON, exactly what the trait gives, read with the CU's paging loop.
    let (status, page) = call(&client, Method::GET, &format!("{base}/{pid}?process-id={pid}&limit=1000"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, su.page_json(&pid, q(None, None, 1000)).unwrap());
    let mut from = String::new();
    let mut nodes = Vec::new();
    loop {
        let (status, v) = call(&client, Method::GET, &format!("{base}/{pid}?from={from}&limit=3"), None).await;
        assert_eq!(status, StatusCode::OK);
        let p = Page::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        from = p.edges.last().map(|e| e.cursor.clone()).unwrap_or_default();
        nodes.extend(p.edges.into_iter().map(|e| e.node));
        if !p.page_info.has_next_page {
            break;
        }
    }
    assert_eq!(nodes.len(), 4);
    let (status, process) = call(&client, Method::GET, &format!("{base}/processes/{pid}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let process: Process = serde_json::from_value(process).unwrap();
    check_stream(&nodes, height_of(&process));
    let ts2 = map_node(&nodes[2]).unwrap().timestamp;
    let (_, v) = call(&client, Method::GET, &format!("{base}/{pid}?from={ts2}&to={}", ts2 + 5), None).await;
    assert_eq!(v["edges"].as_array().unwrap().len(), 1);
    assert_eq!(v["edges"][0]["cursor"], (ts2 + 5).to_string());

    // One message, the latest, the clock, the info.
    let (status, node) = call(&client, Method::GET, &format!("{base}/{}?process-id={pid}", ids[2]), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_value::<Node>(node).unwrap(), nodes[2]);
    let (status, latest) = call(&client, Method::GET, &format!("{base}/{pid}/latest"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_value::<Node>(latest).unwrap(), nodes[3]);
    let (status, clock) = call(&client, Method::GET, &format!("{base}/timestamp?process-id={pid}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let now_ms = now.load(Ordering::SeqCst);
    assert_eq!(
        clock,
        json!({"timestamp": now_ms.to_string(), "block_height": local::padded_height(local::block_height_at(now_ms))})
    );
    let (status, info) = call(&client, Method::GET, &format!("{base}/"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((info["address"].as_str(), info["processes"].as_u64()), (Some(local::LOCAL_SU_ADDRESS), Some(1)));

    // Errors: JSON bodies with the reference's texts and statuses.
    let unknown = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let url = format!("{base}/");
    let (status, e) = call_raw(&client, Method::POST, &url, Bytes::from_static(b"{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().starts_with("invalid JSON body"), "{e}");
    let (status, e) = call(&client, Method::POST, &url, Some(json!({"tag": []}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown fields are refused: {e}");
    let (status, e) = call(&client, Method::POST, &url, Some(json!({"process": unknown, "data": "x"}))).await;
    assert_eq!((status, e), (StatusCode::NOT_FOUND, json!({"error": "Message or Process not found"})));
    let (status, e) =
        call(&client, Method::POST, &url, Some(json!({"tags": [{"name": "Type", "value": "Process"}]}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let many: Vec<Value> = (0..200).map(|i| json!({"name": format!("T{i}"), "value": "v"})).collect();
    let (status, _) = call(&client, Method::POST, &url, Some(json!({"process": pid, "tags": many}))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let big = json!({"process": pid, "data": "d".repeat(local::MAX_DATA_BYTES + 1)});
    let (status, _) = call(&client, Method::POST, &url, Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    for path in [
        format!("/{unknown}"),
        format!("/{unknown}?process-id={pid}"),
        format!("/processes/{unknown}"),
        format!("/{unknown}/latest"),
        format!("/{}?process-id={unknown}", ids[1]),
        "/a/b/c".to_string(),
    ] {
        let (status, e) = call(&client, Method::GET, &format!("{base}{path}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {e}");
        assert!(e["error"].is_string());
    }
    for path in [
        format!("/{}", ids[1]),
        format!("/{pid}?from=abc"),
        format!("/{pid}?limit=-3"),
        format!("/{pid}?from-nonce=1"),
        format!("/{pid}%ff"),
    ] {
        let (status, e) = call(&client, Method::GET, &format!("{base}{path}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {e}");
    }
    let (status, _) = call(&client, Method::DELETE, &format!("{base}/{pid}"), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // A declared body over the bound is refused before it is read.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999999\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Nothing refused was written; shutdown ends the server.
    assert_eq!(su.page(&pid, q(None, None, 1000)).await.unwrap().edges.len(), 4);
    stop.send(()).unwrap();
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}
