//! The two transports (`epoll`, `uring`) against local servers on 127.0.0.1: keep-alive reuse
//! (accepted connections counted), servers that close idle connections, timeouts (a server that
//! never answers, a TLS peer that never speaks), body limits, refused connections, `https` with a
//! self-signed root generated here, many parallel requests through the uring thread's channel,
//! and peers that reset connections.
//!
//! Every scenario runs on both transports (`<scenario>::epoll`, `<scenario>::uring`). Where the
//! kernel refuses io_uring, the `uring` variants say so and skip — except under `CI`, where they
//! fail.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use metalcu::net::{AnyTransport, CertificateDer, IoMode, Transport, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BODY: usize = 1024 * 1024;

/// The transport for `mode` with `extra_roots`; `None` (after saying why) when io_uring is
/// refused here outside CI.
fn transport_with(mode: IoMode, timeout: Duration, roots: &[CertificateDer<'static>]) -> Option<AnyTransport> {
    match AnyTransport::with_roots(mode, timeout, roots) {
        Ok(t) => {
            assert_eq!(t.name(), if mode == IoMode::Uring { "uring" } else { "epoll" });
            Some(t)
        }
        Err(e) if mode == IoMode::Uring && std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: the io_uring transport cannot run here ({e}); the epoll variant still runs");
            None
        }
        Err(e) => panic!("the {mode:?} transport could not start: {e}"),
    }
}

fn transport(mode: IoMode) -> Option<AnyTransport> {
    transport_with(mode, CONNECT_TIMEOUT, &[])
}

fn get(url: &str) -> Request<Bytes> {
    Request::get(url).body(Bytes::new()).unwrap()
}

type Handler = Arc<dyn Fn(Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// A hyper HTTP/1.1 server (keep-alive on) on 127.0.0.1, optionally under TLS; returns its
/// address and the count of accepted connections.
async fn server(handler: Handler, tls: Option<TlsAcceptor>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req)) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Answers with the request's path.
fn echo() -> Handler {
    Arc::new(|req| Response::new(Full::new(Bytes::from(req.uri().path().to_string()))))
}

async fn keep_alive_body(mode: IoMode) {
    let Some(t) = transport(mode) else { return };
    let (addr, accepted) = server(echo(), None).await;
    for i in 0..20 {
        let resp = t.send(get(&format!("http://{addr}/n/{i}")), MAX_BODY).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body(), format!("/n/{i}").as_bytes());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "20 sequential requests must share one connection");

    // An answer saying `Connection: close` is not pooled: the next request connects again.
    let (addr, accepted) = server(
        Arc::new(|_| {
            let mut r = Response::new(Full::new(Bytes::from_static(b"bye")));
            r.headers_mut().insert(hyper::header::CONNECTION, "close".parse().unwrap());
            r
        }),
        None,
    )
    .await;
    for _ in 0..3 {
        assert_eq!(t.send(get(&format!("http://{addr}/")), MAX_BODY).await.unwrap().body(), "bye".as_bytes());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
both_transports!(keep_alive_reuses_one_connection, keep_alive_body);

/// A raw server that answers each connection's first request with a complete keep-alive-looking
/// answer and then closes the connection (as servers do with idle connections).
async fn closes_after_each_answer() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_some() {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                }
                // Closed by the drop, with no `Connection: close`.
            });
        }
    });
    (addr, accepted)
}

/// Reads one request head; `None` at end of stream.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn idle_close_body(mode: IoMode) {
    let Some(t) = transport(mode) else { return };
    let (addr, accepted) = closes_after_each_answer().await;
    for _ in 0..10 {
        let resp = t.send(get(&format!("http://{addr}/")), MAX_BODY).await.unwrap();
        assert_eq!(resp.body(), "ok".as_bytes());
        // Let the close reach the client half the time, race it the other half.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
}
both_transports!(connections_closed_by_the_server_are_not_reused, idle_close_body);

/// A raw server that reads requests and never answers; returns its address and a channel on
/// which it reports, per connection, how long until the client closed it.
async fn never_answers() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Duration>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut chunk = [0u8; 4096];
                loop {
                    match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                        Ok(Ok(_)) => {}
                    }
                }
                let _ = tx.send(started.elapsed());
            });
        }
    });
    (addr, rx)
}

async fn timeout_body(mode: IoMode) {
    let Some(t) = transport_with(mode, Duration::from_millis(300), &[]) else { return };
    // The caller's deadline ends a request to a server that never answers, and the abandoned
    // exchange closes its connection (the server sees end of stream soon after).
    let (addr, mut closed) = never_answers().await;
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_millis(300), t.send(get(&format!("http://{addr}/")), MAX_BODY)).await;
    assert!(r.is_err(), "a server that never answers must not produce an answer: {r:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let held = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await;
    assert!(matches!(held, Ok(Some(d)) if d < Duration::from_secs(3)), "the connection was not closed: {held:?}");

    // A TLS peer that accepts TCP and never speaks: the connect timeout ends the handshake.
    let started = Instant::now();
    let err = t.send(get(&format!("https://{addr}/")), MAX_BODY).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, TransportError::Io(ref e) if e.contains("connect timeout")), "{err:?}");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "took {took:?}");

    // The transport is still usable.
    let (ok, _) = server(echo(), None).await;
    assert_eq!(t.send(get(&format!("http://{ok}/after")), MAX_BODY).await.unwrap().body(), "/after".as_bytes());
}
both_transports!(timeouts_end_hanging_exchanges, timeout_body);

async fn limits_body(mode: IoMode) {
    let Some(t) = transport(mode) else { return };
    let (addr, _) = server(
        Arc::new(|req| {
            let n: usize = req.uri().path().trim_start_matches('/').parse().unwrap_or(0);
            Response::new(Full::new(Bytes::from(vec![b'x'; n])))
        }),
        None,
    )
    .await;
    // Declared too large; exactly the limit; one byte over.
    let err = t.send(get(&format!("http://{addr}/5000")), 4096).await.unwrap_err();
    assert_eq!(err, TransportError::TooLarge(4096));
    assert_eq!(t.send(get(&format!("http://{addr}/4096")), 4096).await.unwrap().body().len(), 4096);
    assert_eq!(t.send(get(&format!("http://{addr}/4097")), 4096).await.unwrap_err(), TransportError::TooLarge(4096));

    // Undeclared (chunked) and too large: cut off while reading.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let chunked = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc =
                    service_fn(|_req: Request<Incoming>| async { Ok::<_, Infallible>(Response::new(Chunks(64))) });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    let err = t.send(get(&format!("http://{chunked}/")), 10_000).await.unwrap_err();
    assert_eq!(err, TransportError::TooLarge(10_000));
    assert_eq!(t.send(get(&format!("http://{chunked}/")), 64 * 1024).await.unwrap().body().len(), 64 * 1024);

    // Not http(s): refused before any I/O.
    assert!(matches!(t.send(get("ftp://127.0.0.1/x"), MAX_BODY).await, Err(TransportError::Invalid(_))));
}
both_transports!(bodies_over_the_limit_are_refused, limits_body);

/// A body of `chunks` frames of 1 KiB with no declared length (sent chunked).
struct Chunks(usize);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'y'; 1024])))))
    }
}

async fn refused_body(mode: IoMode) {
    let Some(t) = transport(mode) else { return };
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let started = Instant::now();
    let err = t.send(get(&format!("http://{addr}/")), MAX_BODY).await.unwrap_err();
    assert!(matches!(err, TransportError::Io(ref e) if e.to_lowercase().contains("refused")), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}
both_transports!(refused_connections_are_io_errors, refused_body);

/// A self-signed certificate for `localhost` and 127.0.0.1, and a TLS acceptor serving it.
fn self_signed() -> (CertificateDer<'static>, TlsAcceptor) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    (cert, TlsAcceptor::from(Arc::new(cfg)))
}

async fn https_body(mode: IoMode) {
    let (cert, acceptor) = self_signed();
    let Some(t) = transport_with(mode, CONNECT_TIMEOUT, &[cert]) else { return };
    let (addr, accepted) = server(echo(), Some(acceptor)).await;
    for i in 0..5 {
        let resp = t.send(get(&format!("https://127.0.0.1:{}/tls/{i}", addr.port())), MAX_BODY).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body(), format!("/tls/{i}").as_bytes());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "https keeps its connection alive too");
    // By name (the resolver may offer ::1 first, where nothing listens: the next address works).
    let resp = t.send(get(&format!("https://localhost:{}/by-name", addr.port())), MAX_BODY).await.unwrap();
    assert_eq!(resp.body(), "/by-name".as_bytes());

    // Without the root, the certificate is refused.
    let Some(strict) = transport(mode) else { return };
    let err = strict.send(get(&format!("https://127.0.0.1:{}/", addr.port())), MAX_BODY).await.unwrap_err();
    assert!(matches!(err, TransportError::Io(ref e) if e.contains("certificate")), "{err:?}");
    // Plain http to a TLS port is an error, not a hang or a panic.
    let err = t.send(get(&format!("http://{addr}/")), MAX_BODY).await.unwrap_err();
    assert!(matches!(err, TransportError::Io(_)), "{err:?}");
}
both_transports!(https_round_trips, https_body);

/// `tasks` callers each sending `each` sequential requests; every answer is checked.
async fn parallel(t: &Arc<AnyTransport>, addr: SocketAddr, tasks: usize, each: usize) {
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let t = t.clone();
        set.spawn(async move {
            for i in 0..each {
                let path = format!("/c/{task}/{i}");
                let resp = t.send(get(&format!("http://{addr}{path}")), MAX_BODY).await.unwrap();
                assert_eq!(resp.body(), path.as_bytes());
            }
        });
    }
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, tasks);
}

async fn concurrency_body(mode: IoMode) {
    let Some(t) = transport(mode) else { return };
    let t = Arc::new(t);
    // Far more callers than idle connections kept: all answered, each to its own caller.
    let (addr, _) = server(echo(), None).await;
    parallel(&t, addr, 512, 4).await;
    // As many callers as idle connections kept: no more connections than callers.
    let (addr, accepted) = server(echo(), None).await;
    let callers = metalcu::net::conn::POOL_MAX_IDLE_PER_HOST;
    parallel(&t, addr, callers, 16).await;
    let conns = accepted.load(Ordering::SeqCst);
    assert!((1..=callers).contains(&conns), "{conns} connections for {callers} concurrent callers");
}
both_transports!(many_parallel_requests, concurrency_body);

async fn reset_body(mode: IoMode) {
    let Some(t) = transport(mode) else { return };
    let t = Arc::new(t);
    // Reads each request, then resets the connection (SO_LINGER 0).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rst = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let _ = read_head(&mut stream).await;
                let _ = stream.set_zero_linger();
            });
        }
    });
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let t = t.clone();
        set.spawn(async move { t.send(get(&format!("http://{rst}/")), MAX_BODY).await });
    }
    while let Some(r) = set.join_next().await {
        let err = r.unwrap().unwrap_err();
        assert!(matches!(err, TransportError::Io(_)), "{err:?}");
    }
    for _ in 0..10 {
        assert!(matches!(t.send(get(&format!("http://{rst}/")), MAX_BODY).await, Err(TransportError::Io(_))));
    }
    // The transport (for uring: its thread and ring) still works.
    let (ok, _) = server(echo(), None).await;
    assert_eq!(t.send(get(&format!("http://{ok}/alive")), MAX_BODY).await.unwrap().body(), "/alive".as_bytes());
}
both_transports!(peers_resetting_connections_are_survived, reset_body);

/// Client sockets to `port` still held by a file descriptor of this process (from
/// `/proc/self/net/tcp`: remote port `port`, inode not 0; closed sockets waiting out their
/// FIN handshake have inode 0).
fn open_client_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap_or_default();
    let port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9 && f[2].ends_with(&port) && f[9] != "0"
        })
        .count()
}

async fn abandoned_body(mode: IoMode) {
    let Some(t) = transport(mode) else { return };
    // Accepts and holds every connection, never reading, answering or closing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    for _ in 0..20 {
        let r =
            tokio::time::timeout(Duration::from_millis(50), t.send(get(&format!("http://{addr}/")), MAX_BODY)).await;
        assert!(r.is_err(), "{r:?}");
    }
    // Each abandoned exchange closes its socket even though its read is still pending.
    let started = Instant::now();
    while open_client_sockets(addr.port()) > 0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open_client_sockets(addr.port()), 0, "abandoned connections still hold sockets");
}
both_transports!(abandoned_exchanges_close_their_sockets, abandoned_body);
