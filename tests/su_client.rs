//! `HttpScheduler` against the embedded SU's HTTP front (real SU read routes, page boundaries,
//! not-found) and against hand-written raw-HTTP fakes on 127.0.0.1 (retries on 5xx, deadline,
//! per-attempt timeout, invalid bodies, the reference's 400 not-found, redirects).
//!
//! Every test runs on both transports (`<test>::epoll`, `<test>::uring`). Where the kernel
//! refuses io_uring, the `uring` variants say so and skip — except under `CI`, where they fail.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::uring::skipped;
use metalcu::net::fetch::Fetcher;
use metalcu::net::{AnyTransport, IoMode};
use metalcu::su::client::{ClientConfig, HttpScheduler, SU_PEER};
use metalcu::su::local::{self, LocalScheduler};
use metalcu::su::local_http;
use metalcu::su::message::map_node;
use metalcu::su::scheduler::{PageQuery, Scheduler, SuError};
use metalcu::su::types::{Page, Tag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MODULE: &str = "bkjb55i07GUCUSWROtKK4HU1mBS_X0TyH3M5jMV6aPg";
const OWNER: &str = "vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI";
const T0: i64 = 1_760_000_000_000;

fn t(name: &str, value: &str) -> Tag {
    Tag { name: name.into(), value: value.into() }
}

fn q(from: Option<i64>, to: Option<i64>, limit: u32) -> PageQuery {
    PageQuery { from, to, limit }
}

fn nonces(p: &Page) -> Vec<u64> {
    p.edges.iter().map(|e| map_node(&e.node).unwrap().nonce).collect()
}

/// An SU client for `base` on the `mode` transport.
fn su_client(base: &str, cfg: ClientConfig, mode: IoMode) -> HttpScheduler {
    let transport = AnyTransport::new(mode, cfg.request_timeout).unwrap();
    let c = HttpScheduler::with_fetcher(base, Arc::new(Fetcher::new(Arc::new(transport), cfg, SU_PEER))).unwrap();
    assert_eq!(c.transport_name(), if mode == IoMode::Uring { "uring" } else { "epoll" });
    c
}

/// Small delays so failure paths finish fast.
fn fast() -> ClientConfig {
    ClientConfig {
        retries: 3,
        base_delay: Duration::from_millis(20),
        max_total: Duration::from_secs(3),
        request_timeout: Duration::from_millis(500),
        max_body_bytes: 1024 * 1024,
    }
}

async fn the_client_reads_the_local_su_over_http_body(mode: IoMode) {
    if skipped(mode) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let c = now.clone();
    let su =
        Arc::new(LocalScheduler::open(dir.path().join("su.redb"), Box::new(move || c.load(Ordering::SeqCst))).unwrap());
    let process_tags = vec![
        t("Data-Protocol", "ao"),
        t("Variant", "ao.TN.1"),
        t("Type", "Process"),
        t("Module", MODULE),
        t("Scheduler", local::LOCAL_SU_ADDRESS),
    ];
    let spawned = su.spawn(OWNER, process_tags, "-- process data".into()).unwrap();
    let pid = spawned.id.clone();
    let mut posted = vec![spawned];
    for i in 0..5 {
        now.fetch_add(10, Ordering::SeqCst);
        let tags = vec![t("Data-Protocol", "ao"), t("Type", "Message"), t("N", &i.to_string())];
        posted.push(su.post(&pid, OWNER, tags, format!("return {i}")).unwrap());
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(local_http::serve(listener, su.clone(), async {
        let _ = stopped.await;
    }));
    let client = su_client(&format!("http://{addr}/"), fast(), mode);

    // Pages: from exclusive, to inclusive, limit, has_next_page.
    let all = client.page(&pid, q(None, None, 0)).await.unwrap();
    assert_eq!(nonces(&all), vec![0, 1, 2, 3, 4, 5]);
    assert!(!all.page_info.has_next_page);
    let mid = client.page(&pid, q(Some(T0 + 10), Some(T0 + 30), 0)).await.unwrap();
    assert_eq!(nonces(&mid), vec![2, 3]);
    let limited = client.page(&pid, q(Some(T0), None, 2)).await.unwrap();
    assert_eq!(nonces(&limited), vec![1, 2]);
    assert!(limited.page_info.has_next_page);
    let next_from: i64 = limited.edges.last().unwrap().cursor.parse().unwrap();
    let rest = client.page(&pid, q(Some(next_from), None, 2)).await.unwrap();
    assert_eq!(nonces(&rest), vec![3, 4]);
    assert!(rest.page_info.has_next_page);
    let tail = client.page(&pid, q(Some(T0 + 40), None, 2)).await.unwrap();
    assert_eq!(nonces(&tail), vec![5]);
    assert!(!tail.page_info.has_next_page);
    let empty = client.page(&pid, q(Some(T0 + 50), None, 0)).await.unwrap();
    assert!(empty.edges.is_empty());

    // Process, message, latest, timestamp.
    let process = client.process(&pid).await.unwrap();
    assert_eq!(process.process_id, pid);
    assert_eq!(process.timestamp, T0);
    assert!(process.tags.iter().any(|t| t.name == "Module" && t.value == MODULE));
    let m = client.message(&pid, &posted[3].id).await.unwrap();
    assert_eq!(m.message.as_ref().unwrap().id, posted[3].id);
    assert_eq!(map_node(&m).unwrap().nonce, 3);
    let latest = client.latest(&pid).await.unwrap().unwrap();
    assert_eq!(map_node(&latest).unwrap().nonce, 5);
    let (ts, height) = client.timestamp("p").await.unwrap();
    assert_eq!((ts, height), su.now());

    // Unknown ids: NotFound, quickly (no retries).
    let unknown = "unknown-id-000000000000000000000000000000000";
    let started = Instant::now();
    assert!(matches!(client.process(unknown).await, Err(SuError::NotFound(_))));
    assert!(matches!(client.page(unknown, q(None, None, 0)).await, Err(SuError::NotFound(_))));
    assert!(matches!(client.message(&pid, unknown).await, Err(SuError::NotFound(_))));
    assert_eq!(client.latest(unknown).await.unwrap(), None);
    assert!(started.elapsed() < Duration::from_millis(500), "not-found was retried: {:?}", started.elapsed());

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
both_transports!(the_client_reads_the_local_su_over_http, the_client_reads_the_local_su_over_http_body);

/// What the fake server does with request number `n` (0-based) for `path`.
enum Reply {
    Raw(String),
    Hang,
}

fn http(status: &str, headers: &str, body: &str) -> Reply {
    Reply::Raw(format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    ))
}

type Handler = Arc<dyn Fn(usize, &str) -> Reply + Send + Sync>;

/// A raw HTTP/1.1 server on 127.0.0.1: one request per connection. Returns the base URL and the
/// request counter.
async fn fake(handler: Handler) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let handler = handler.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let n = counter.fetch_add(1, Ordering::SeqCst);
                match handler(n, &path) {
                    Reply::Raw(r) => {
                        let _ = stream.write_all(r.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    Reply::Hang => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

const NODE: &str = r#"{"message":null,"assignment":{"id":"A1","owner":{"address":"su"},"tags":[{"name":"Process","value":"P"},{"name":"Nonce","value":"1"},{"name":"Timestamp","value":"5"},{"name":"Epoch","value":"0"},{"name":"Block-Height","value":"000000000001"},{"name":"Hash-Chain","value":"x"},{"name":"Message","value":"M"}]}}"#;

async fn server_errors_are_retried_then_succeed_body(mode: IoMode) {
    if skipped(mode) {
        return;
    }
    let (base, count) = fake(Arc::new(|n, path| {
        assert_eq!(path, "/timestamp?process-id=p");
        if n < 2 {
            http("500 Internal Server Error", "", r#"{"error":"boom"}"#)
        } else {
            http("200 OK", "", r#"{"timestamp":1712967091755,"block_height":1412345}"#)
        }
    }))
    .await;
    let client = su_client(&base, fast(), mode);
    assert_eq!(client.timestamp("p").await.unwrap(), (1_712_967_091_755, 1_412_345));
    assert_eq!(count.load(Ordering::SeqCst), 3);
}
both_transports!(server_errors_are_retried_then_succeed, server_errors_are_retried_then_succeed_body);

async fn persistent_503_is_unavailable_within_the_deadline_body(mode: IoMode) {
    if skipped(mode) {
        return;
    }
    let (base, count) = fake(Arc::new(|_, _| http("503 Service Unavailable", "", "overloaded"))).await;
    let cfg = ClientConfig { retries: 100, max_total: Duration::from_millis(800), ..fast() };
    let client = su_client(&base, cfg, mode);
    let started = Instant::now();
    let err = client.process("P").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
    let SuError::Unavailable(text) = err else { panic!("{err:?}") };
    assert!(
        text.starts_with("Error Encountered when loading process P from Scheduler Unit: 503: overloaded"),
        "{text}"
    );
    assert!(count.load(Ordering::SeqCst) >= 2);

    // And bounded by `retries`.
    let (base, count) = fake(Arc::new(|_, _| http("502 Bad Gateway", "", ""))).await;
    let client = su_client(&base, ClientConfig { retries: 2, ..fast() }, mode);
    assert!(matches!(client.latest("P").await, Err(SuError::Unavailable(_))));
    assert_eq!(count.load(Ordering::SeqCst), 3);
}
both_transports!(
    persistent_503_is_unavailable_within_the_deadline,
    persistent_503_is_unavailable_within_the_deadline_body
);

async fn a_hanging_su_times_out_per_attempt_body(mode: IoMode) {
    if skipped(mode) {
        return;
    }
    let (base, count) = fake(Arc::new(|_, _| Reply::Hang)).await;
    let cfg = ClientConfig { retries: 1, request_timeout: Duration::from_millis(200), ..fast() };
    let client = su_client(&base, cfg, mode);
    let started = Instant::now();
    let err = client.message("P", "M").await.unwrap_err();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(1500), "took {took:?}");
    assert!(matches!(err, SuError::Unavailable(ref t) if t.contains("timeout")), "{err:?}");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}
both_transports!(a_hanging_su_times_out_per_attempt, a_hanging_su_times_out_per_attempt_body);

async fn invalid_bodies_and_not_found_are_not_retried_body(mode: IoMode) {
    if skipped(mode) {
        return;
    }
    // Truncated JSON.
    let (base, count) = fake(Arc::new(|_, _| http("200 OK", "", r#"{"page_info":{"has_next_"#))).await;
    let client = su_client(&base, fast(), mode);
    let err = client.page("P", q(None, None, 0)).await.unwrap_err();
    assert!(matches!(err, SuError::Invalid(ref t) if t.contains("messages page of process P")), "{err:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // The reference SU's not-found: 400 with the text.
    let (base, count) =
        fake(Arc::new(|_, _| http("400 Bad Request", "", r#"{"error":"Message or Process not found"}"#))).await;
    let client = su_client(&base, fast(), mode);
    assert!(matches!(client.message("P", "M").await, Err(SuError::NotFound(_))));
    assert_eq!(client.latest("P").await, Ok(None));
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // 403: Forbidden (the CU answers 403, cu-protocol §2.7), once.
    let (base, count) =
        fake(Arc::new(|_, _| http("403 Forbidden", "", r#"{"error":"Process P is not allowed on this SU"}"#))).await;
    let client = su_client(&base, fast(), mode);
    let err = client.process("P").await.unwrap_err();
    assert!(matches!(err, SuError::Forbidden(ref t) if t.contains("not allowed")), "{err:?}");
    assert_eq!(err.status(), 403);
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Other 4xx: Invalid, once.
    let (base, count) = fake(Arc::new(|_, _| http("422 Unprocessable Entity", "", r#"{"error":"bad"}"#))).await;
    let client = su_client(&base, fast(), mode);
    let err = client.process("P").await.unwrap_err();
    assert!(matches!(err, SuError::Invalid(ref t) if t.contains("bad")), "{err:?}");
    assert_eq!(err.status(), 502);
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // A body past the bound: Invalid, once.
    let (base, count) = fake(Arc::new(|_, _| http("200 OK", "", &"x".repeat(2048)))).await;
    let client = su_client(&base, ClientConfig { max_body_bytes: 1024, ..fast() }, mode);
    assert!(matches!(client.timestamp("p").await, Err(SuError::Invalid(ref t)) if t.contains("larger than")));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
both_transports!(invalid_bodies_and_not_found_are_not_retried, invalid_bodies_and_not_found_are_not_retried_body);

async fn redirects_are_followed_body(mode: IoMode) {
    if skipped(mode) {
        return;
    }
    let (base, count) = fake(Arc::new(|_, path| {
        if path.starts_with("/real/") {
            assert_eq!(path, "/real/M?process-id=P");
            http("200 OK", "", NODE)
        } else {
            assert_eq!(path, "/M?process-id=P");
            http("307 Temporary Redirect", "Location: /real/M?process-id=P\r\n", "")
        }
    }))
    .await;
    let client = su_client(&base, fast(), mode);
    let node = client.message("P", "M").await.unwrap();
    assert_eq!(node.assignment.id, "A1");
    assert_eq!(count.load(Ordering::SeqCst), 2);

    // A redirect loop ends as Invalid, not forever.
    let (base, _) = fake(Arc::new(|_, _| http("302 Found", "Location: /again\r\n", ""))).await;
    let client = su_client(&base, fast(), mode);
    assert!(matches!(client.latest("P").await, Err(SuError::Invalid(_))));
}
both_transports!(redirects_are_followed, redirects_are_followed_body);
