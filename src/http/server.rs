//! The HTTP/1.1 server: accepts connections, serves each in its own task with hyper, and shuts
//! down gracefully.
//!
//! Invariants: at most `max_connections` connections at once (the rest wait in the kernel's
//! backlog); every request head, body and response is bounded in size and time ([`ServerConfig`]);
//! each request runs in its own task, so a panic in it becomes a 500 for that request only; on
//! shutdown the listener is dropped at once, idle connections close, in-flight requests get
//! `shutdown_grace` to finish, and whatever is left then is cut.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::render::{self, Body};
use super::{ApiError, CuService, routes};

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// hyper's smallest read buffer; `max_head_bytes` is raised to it.
const MIN_HEAD_BYTES: usize = 8192;

/// Server limits. Defaults are the constants of [`super`], documented there.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest `/dry-run` body in bytes; larger → 413. Default [`super::MAX_BODY_BYTES`] (1 MiB).
    pub max_body_bytes: usize,
    /// Longest request target (path + query) in bytes; longer → 414. Default 8 KiB.
    pub max_uri_bytes: usize,
    /// Largest request head in bytes (at least 8 KiB); larger → 431. Default 64 KiB.
    pub max_head_bytes: usize,
    /// Most header fields per request; more → 431. Default 100.
    pub max_headers: usize,
    /// Time from a request's head to its response; then 504. Default 300 s.
    pub request_timeout: Duration,
    /// Time for a `/dry-run` body to arrive; then 408. Default 30 s.
    pub body_read_timeout: Duration,
    /// Time to receive a request head, which is also the idle keep-alive timeout. Default 30 s.
    pub header_read_timeout: Duration,
    /// Time in-flight requests get after shutdown is signalled. Default 30 s.
    pub shutdown_grace: Duration,
    /// Most connections served at once (at least 1). Default 4096.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: super::MAX_BODY_BYTES,
            max_uri_bytes: super::MAX_URI_BYTES,
            max_head_bytes: super::MAX_HEAD_BYTES,
            max_headers: super::MAX_HEADERS,
            request_timeout: super::REQUEST_TIMEOUT,
            body_read_timeout: super::BODY_READ_TIMEOUT,
            header_read_timeout: super::HEADER_READ_TIMEOUT,
            shutdown_grace: super::SHUTDOWN_GRACE,
            max_connections: super::MAX_CONNECTIONS,
        }
    }
}

/// Serves the CU API on `listener` with the default [`ServerConfig`] until `shutdown` completes,
/// then shuts down gracefully. Errors accepting a connection are logged and retried, never fatal.
pub async fn serve<S: CuService>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, service, shutdown, ServerConfig::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with<S: CuService>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
    config: ServerConfig,
) -> io::Result<()> {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the connection semaphore is never closed"),
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        conns.spawn(connection(stream, service.clone(), config.clone(), stop_rx.clone(), slot));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = conns.len();
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_grace, drain).await.is_err() {
        tracing::warn!("shutdown: cutting {} connection(s) still open after {:?}", conns.len(), config.shutdown_grace);
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    tracing::debug!("shutdown: {open} connection(s) closed");
    Ok(())
}

/// Serves one connection until the client closes it, it errs, or shutdown.
async fn connection<S: CuService>(
    stream: TcpStream,
    svc: Arc<S>,
    cfg: Arc<ServerConfig>,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let handler = {
        let cfg = cfg.clone();
        service_fn(move |req| {
            let (svc, cfg) = (svc.clone(), cfg.clone());
            async move { Ok::<_, Infallible>(dispatch(svc, cfg, req).await) }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_head_bytes.max(MIN_HEAD_BYTES))
        .max_header_size(cfg.max_head_bytes)
        .keep_alive(true);
    // Setting it at all moves hyper's header array to the heap; its default is ours.
    if cfg.max_headers != super::MAX_HEADERS {
        builder.max_headers(cfg.max_headers);
    }
    let conn = builder.serve_connection(TokioIo::new(stream), handler);
    tokio::pin!(conn);
    // Resolves on shutdown (or if the server is gone); the watch guard is dropped inside.
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let outcome = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = outcome {
        // Garbage, timeouts and clients that hang up mid-request all end here: theirs, not ours.
        tracing::debug!("connection ended: {e}");
    }
}

/// Aborts the task when dropped: a request whose client went away stops its work.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one request in its own task, bounded by `request_timeout`; adds the common headers.
async fn dispatch<S: CuService>(svc: Arc<S>, cfg: Arc<ServerConfig>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(200).collect();
    let route = routes::Route::parse(req.uri().path()).map_or("none", |r| r.name());
    let counter = svc.clone();
    let limit = cfg.request_timeout;
    let mut task = AbortOnDrop(tokio::spawn(async move {
        match tokio::time::timeout(cfg.request_timeout, routes::handle(&*svc, req, &cfg)).await {
            Ok(r) => r,
            Err(_) => render::error(&ApiError::new(504, format!("request not answered within {limit:?}"))),
        }
    }));
    let mut resp = match (&mut task.0).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{method} {path}: request task failed: {e}");
            render::error(&ApiError::internal("Internal Server Error"))
        }
    };
    render::finish(&mut resp);
    let status = resp.status().as_u16();
    if let Some(m) = counter.metrics() {
        m.http_response(route, status);
    }
    let ms = started.elapsed().as_millis();
    if status >= 500 {
        tracing::warn!(status, ms, "{method} {path}");
    } else {
        tracing::debug!(status, ms, "{method} {path}");
    }
    resp
}
