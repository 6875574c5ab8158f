//! The SU fetch benchmark: the `epoll` and `uring` transports side by side against a local
//! in-process hyper server (on its own runtime thread) serving a realistic SU messages page —
//! [`EDGES`] edges of about 1 KiB each (a signed message with tags and its assignment).
//!
//! - `fetch/sequential/<transport>`: one request at a time on a kept-alive connection; the time
//!   per iteration is the latency of one `GET`, the throughput line is requests/s;
//! - `fetch/concurrent16/<transport>`: [`CONCURRENCY`] requests in flight; one iteration is a
//!   batch of them, the throughput line is requests/s.
//!
//! After the criterion groups (only under `cargo bench`), fixed runs of [`TABLE_REQUESTS`]
//! requests per transport and concurrency print requests/s and per-request p50/p99 latencies
//! (medians of [`TABLE_ROUNDS`] interleaved rounds).
//!
//! Both transports run the same hyper client connection and pool (`net::conn`): only the stream
//! differs. The client side is a one-worker tokio runtime (plus, for `uring`, the transport's ring
//! thread); the server is a one-worker runtime on another thread.
//!
//! Run: `cargo bench --bench fetch -- --warm-up-time 1 --measurement-time 3`.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use metalcu::net::{AnyTransport, IoMode, Transport};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// Edges in the served page.
const EDGES: usize = 100;
/// Requests in flight in the concurrent group.
const CONCURRENCY: usize = 16;
/// Requests per run of the latency table.
const TABLE_REQUESTS: usize = 4000;
/// Rounds of the latency table (the median is printed).
const TABLE_ROUNDS: usize = 5;
/// Largest body accepted (the fetcher's default).
const MAX_BODY: usize = metalcu::net::fetch::DEFAULT_MAX_BODY_BYTES;

/// A base64url-looking string of `n` characters.
fn b64(seed: usize, n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..n).map(|i| A[(seed.wrapping_mul(31).wrapping_add(i * 7)) % 64] as char).collect()
}

/// An SU page of [`EDGES`] edges, as `GET /{pid}?process-id=…` answers.
fn page() -> Bytes {
    let edges: Vec<Value> = (0..EDGES)
        .map(|i| {
            let ts = 1_760_000_000_000u64 + i as u64 * 10;
            json!({
                "cursor": ts.to_string(),
                "node": {
                    "message": {
                        "id": b64(i, 43),
                        "owner": {"address": b64(i + 1, 43), "key": b64(i + 2, 64)},
                        "data": format!("Send({{Action = \"Transfer\", Quantity = \"{i}\"}})"),
                        "tags": [
                            {"name": "Data-Protocol", "value": "ao"},
                            {"name": "Variant", "value": "ao.TN.1"},
                            {"name": "Type", "value": "Message"},
                            {"name": "Action", "value": "Eval"},
                            {"name": "SDK", "value": "aoconnect"}
                        ],
                        "signature": b64(i + 3, 86),
                        "anchor": format!("{i:032}"),
                        "target": b64(7, 43)
                    },
                    "assignment": {
                        "id": b64(i + 4, 43),
                        "owner": {"address": b64(9, 43)},
                        "tags": [
                            {"name": "Process", "value": b64(7, 43)},
                            {"name": "Epoch", "value": "0"},
                            {"name": "Nonce", "value": i.to_string()},
                            {"name": "Hash-Chain", "value": b64(i + 5, 43)},
                            {"name": "Block-Height", "value": format!("{:012}", 1_500_000 + i)},
                            {"name": "Timestamp", "value": ts.to_string()},
                            {"name": "Message", "value": b64(i, 43)}
                        ]
                    }
                }
            })
        })
        .collect();
    let page = json!({"page_info": {"has_next_page": true}, "edges": edges});
    Bytes::from(serde_json::to_vec(&page).expect("the page serialises"))
}

/// Starts the page server on its own one-worker runtime; returns its address.
fn start_server(body: Bytes) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("report");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move {
                            let mut r = Response::new(Full::new(body));
                            r.headers_mut().insert("content-type", "application/json".parse().expect("header"));
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
    });
    rx.recv().expect("the server starts")
}

fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

async fn one(t: &AnyTransport, url: &str, len: usize) {
    let req = Request::get(url).body(Bytes::new()).expect("request");
    let resp = t.send(req, MAX_BODY).await.expect("the page");
    assert_eq!(resp.body().len(), len);
    black_box(resp);
}

/// `n` requests with `conc` in flight; each request's latency.
async fn run(t: &Arc<AnyTransport>, url: &Arc<str>, len: usize, n: usize, conc: usize) -> Vec<Duration> {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..conc {
        let (t, url) = (t.clone(), url.clone());
        let share = n / conc + usize::from(w < n % conc);
        set.spawn(async move {
            let mut lat = Vec::with_capacity(share);
            for _ in 0..share {
                let started = Instant::now();
                one(&t, &url, len).await;
                lat.push(started.elapsed());
            }
            lat
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("a worker"));
    }
    all
}

fn transports() -> Vec<(&'static str, Arc<AnyTransport>)> {
    let mut out = vec![];
    for (name, mode) in [("epoll", IoMode::Epoll), ("uring", IoMode::Uring)] {
        match AnyTransport::new(mode, Duration::from_secs(5)) {
            Ok(t) => out.push((name, Arc::new(t))),
            Err(e) => eprintln!("{name}: not measured: {e}"),
        }
    }
    out
}

fn benches(c: &mut Criterion, rt: &Runtime, url: &Arc<str>, len: usize) {
    let ts = transports();
    let mut g = c.benchmark_group("fetch/sequential");
    g.throughput(Throughput::Elements(1));
    for (name, t) in &ts {
        rt.block_on(one(t, url, len)); // connect outside the measurement
        g.bench_function(*name, |b| b.iter(|| rt.block_on(one(t, url, len))));
    }
    g.finish();

    let mut g = c.benchmark_group(format!("fetch/concurrent{CONCURRENCY}"));
    g.throughput(Throughput::Elements(CONCURRENCY as u64));
    for (name, t) in &ts {
        rt.block_on(run(t, url, len, CONCURRENCY, CONCURRENCY));
        g.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    run(t, url, len, CONCURRENCY * iters as usize, CONCURRENCY).await;
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One run of the table: requests/s, p50 µs, p99 µs.
type Sample = (f64, f64, f64);

/// Requests/s and p50/p99 per transport and concurrency: the median over [`TABLE_ROUNDS`]
/// rounds, the transports interleaved within each round (so background load hits both alike).
fn table(rt: &Runtime, url: &Arc<str>, len: usize) {
    let ts = transports();
    let mut rows: Vec<(&str, usize, Vec<Sample>)> = vec![];
    for conc in [1, CONCURRENCY] {
        for (name, _) in &ts {
            rows.push((name, conc, vec![]));
        }
    }
    for _ in 0..TABLE_ROUNDS {
        let mut row = 0;
        for conc in [1, CONCURRENCY] {
            for (_, t) in &ts {
                rt.block_on(run(t, url, len, conc, conc));
                let started = Instant::now();
                let mut lat = rt.block_on(run(t, url, len, TABLE_REQUESTS, conc));
                let secs = started.elapsed().as_secs_f64();
                lat.sort();
                let us = |d: Duration| d.as_secs_f64() * 1e6;
                rows[row].2.push((TABLE_REQUESTS as f64 / secs, us(pct(&lat, 0.5)), us(pct(&lat, 0.99))));
                row += 1;
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\n{TABLE_REQUESTS} requests per run ({len}-byte page), median of {TABLE_ROUNDS} interleaved rounds:");
    println!("{:<8} {:>5} {:>10} {:>10} {:>10}", "io", "conc", "req/s", "p50 µs", "p99 µs");
    for (name, conc, runs) in rows {
        let rps = median(runs.iter().map(|r| r.0).collect());
        let p50 = median(runs.iter().map(|r| r.1).collect());
        let p99 = median(runs.iter().map(|r| r.2).collect());
        println!("{name:<8} {conc:>5} {rps:>10.0} {p50:>10.1} {p99:>10.1}");
    }
}

fn main() {
    let body = page();
    let len = body.len();
    let addr = start_server(body);
    let url: Arc<str> = Arc::from(format!("http://{addr}/P?process-id=P&limit={EDGES}"));
    let rt = client_runtime();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &rt, &url, len);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        table(&rt, &url, len);
    }
}
