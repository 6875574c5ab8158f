//! The HTTP front of the embedded SU ([`LocalScheduler`]): the read routes of a real SU
//! (cu-protocol §2.2), so a CU — or a test, or `curl` — talks to `metalcu dev` over the network
//! exactly as it talks to a production SU, plus one dev-only write route.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | `{"timestamp","address","processes","variant"}` |
//! | `GET /timestamp` | `{"timestamp":"<ms>","block_height":"<12 digits>"}` (strings, as the reference) |
//! | `GET /processes/{pid}` | ProcessInner (§2.4) |
//! | `GET /{pid}/latest` | the last node |
//! | `GET /{pid}?from=&to=&limit=` | a messages page (§2.3): `from` exclusive, `to` inclusive |
//! | `GET /{msgId}?process-id={pid}` | one node (`process-id` is required, as on a real SU) |
//! | `POST /` | `{"process"?, "owner"?, "tags", "data"}` → spawn (no `process`) or post; answers `{"id","process","nonce","timestamp","block_height"}` |
//!
//! Errors are `{"error": "<text>"}`: 400 for bad requests, 404 for unknown processes and messages
//! (text `Message or Process not found`, as the reference SU, which itself answers 400), 405 for
//! other methods, 408 for a body that does not arrive in time, 413 past a bound, 500 if the
//! database fails.
//!
//! This module only parses, validates, calls the domain and renders. Domain calls (redb reads and
//! fsync'd writes) run on tokio's blocking pool, never on the reactor. Inputs are untrusted and
//! bounded: [`MAX_BODY_BYTES`], [`MAX_CONNECTIONS`], [`HEADER_READ_TIMEOUT`], [`BODY_READ_TIMEOUT`];
//! nothing in a request can make the server panic.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::local::{DEV_OWNER, LocalScheduler, LocalSuError, MAX_DATA_BYTES};
use super::scheduler::PageQuery;
use super::types::Tag;

/// Largest `POST /` body: the largest data, with room for JSON escaping and tags.
pub const MAX_BODY_BYTES: usize = 2 * MAX_DATA_BYTES + 4 * 1024 * 1024;
/// Most connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send its request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send its request body within this time.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After shutdown, open connections get this long to finish their requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

type Resp = Response<Full<Bytes>>;

/// An error answer: status and text.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl From<LocalSuError> for Failure {
    fn from(e: LocalSuError) -> Failure {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Failure(status, e.to_string())
    }
}

fn bad(text: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, text.into())
}

fn json_response(status: StatusCode, v: &Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{\"error\":\"unserialisable answer\"}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Serves the local SU on `listener` until `shutdown` completes; then stops accepting, lets open
/// connections finish for at most [`SHUTDOWN_GRACE`], and returns.
///
/// Returns `Err` only if the listener itself cannot be used; failed connections are logged.
pub async fn serve(
    listener: TcpListener,
    su: Arc<LocalScheduler>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("local SU: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let su = su.clone();
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let su = su.clone();
                async move { Ok::<_, Infallible>(handle(req, su).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("local SU: connection ended: {e}");
            }
        });
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("local SU: {} connections still open after shutdown; closing them", conns.len());
        conns.shutdown().await;
    }
    Ok(())
}

/// One request: route, run, render.
async fn handle(req: Request<Incoming>, su: Arc<LocalScheduler>) -> Resp {
    match route(req, su).await {
        Ok((status, v)) => json_response(status, &v),
        Err(Failure(status, text)) => json_response(status, &json!({ "error": text })),
    }
}

/// Runs domain call `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    su: &Arc<LocalScheduler>,
    f: impl FnOnce(&LocalScheduler) -> Result<T, LocalSuError> + Send + 'static,
) -> Result<T, Failure> {
    let su = su.clone();
    match tokio::task::spawn_blocking(move || f(&su)).await {
        Ok(r) => r.map_err(Failure::from),
        Err(e) => Err(Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("local SU task failed: {e}"))),
    }
}

async fn route(req: Request<Incoming>, su: Arc<LocalScheduler>) -> Result<(StatusCode, Value), Failure> {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query().unwrap_or(""))?;
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false).ok_or_else(|| bad("path is not valid percent-encoded UTF-8")))
        .collect::<Result<_, _>>()?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method(), segs.as_slice()) {
        (&Method::POST, []) => post(req, su).await,
        (&Method::GET, []) => Ok((StatusCode::OK, blocking(&su, |su| su.info_json()).await?)),
        (&Method::GET, ["timestamp"]) => Ok((StatusCode::OK, su.timestamp_json())),
        (&Method::GET, ["processes", pid]) => {
            let pid = pid.to_string();
            Ok((StatusCode::OK, blocking(&su, move |su| su.process_json(&pid)).await?))
        }
        (&Method::GET, [pid, "latest"]) => {
            let pid = pid.to_string();
            Ok((StatusCode::OK, blocking(&su, move |su| su.latest_json(&pid)).await?))
        }
        (&Method::GET, [id]) => get_id(id.to_string(), query, su).await,
        (&Method::GET, _) => Err(Failure(StatusCode::NOT_FOUND, format!("no route {path}"))),
        (m, _) => Err(Failure(StatusCode::METHOD_NOT_ALLOWED, format!("method {m} is not allowed"))),
    }
}

/// `GET /{id}`: a process id gives a messages page, a message id (with `process-id`) its node —
/// the reference SU's order.
async fn get_id(id: String, q: Query, su: Arc<LocalScheduler>) -> Result<(StatusCode, Value), Failure> {
    if q.from_nonce || q.to_nonce {
        return Err(bad("from-nonce/to-nonce paging is not supported by the local SU; use from/to timestamps"));
    }
    let page = PageQuery { from: q.from, to: q.to, limit: q.limit.unwrap_or(0) };
    let v = blocking(&su, move |su| {
        let (pid, is_process) = su.locate(&id)?;
        if is_process {
            return su.page_json(&pid, page);
        }
        match q.process_id {
            None => Err(LocalSuError::Invalid("process-id is required to read a message".into())),
            Some(p) => su.message_json(&p, &id),
        }
    })
    .await?;
    Ok((StatusCode::OK, v))
}

/// The body of `POST /`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    #[serde(default)]
    process: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    data: String,
}

async fn post(req: Request<Incoming>, su: Arc<LocalScheduler>) -> Result<(StatusCode, Value), Failure> {
    let too_large = || Failure(StatusCode::PAYLOAD_TOO_LARGE, format!("body is larger than {MAX_BODY_BYTES} bytes"));
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, body.collect()).await {
        Err(_) => return Err(Failure(StatusCode::REQUEST_TIMEOUT, "body did not arrive in time".into())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => return Err(bad(format!("reading the body: {e}"))),
        Ok(Ok(c)) => c.to_bytes(),
    };
    let body: PostBody = serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    let owner = body.owner.unwrap_or_else(|| DEV_OWNER.to_string());
    let posted = blocking(&su, move |su| match body.process {
        None => su.spawn(&owner, body.tags, body.data),
        Some(pid) => su.post(&pid, &owner, body.tags, body.data),
    })
    .await?;
    Ok((
        StatusCode::OK,
        json!({
            "id": posted.id,
            "process": posted.process_id,
            "nonce": posted.nonce,
            "timestamp": posted.timestamp,
            "block_height": posted.block_height,
        }),
    ))
}

/// The query parameters the routes read; unknown ones are ignored, as on the reference SU.
#[derive(Debug, Default)]
struct Query {
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<u32>,
    process_id: Option<String>,
    from_nonce: bool,
    to_nonce: bool,
}

impl Query {
    fn parse(raw: &str) -> Result<Query, Failure> {
        let mut q = Query::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k, true).ok_or_else(|| bad("query is not valid percent-encoded UTF-8"))?;
            let v = percent_decode(v, true).ok_or_else(|| bad("query is not valid percent-encoded UTF-8"))?;
            let int = |v: &str| v.trim().parse::<i64>().map_err(|_| bad(format!("{k}={v:?} is not an integer")));
            match k.as_str() {
                "from" if !v.is_empty() => q.from = Some(int(&v)?),
                "to" if !v.is_empty() => q.to = Some(int(&v)?),
                "limit" if !v.is_empty() => {
                    q.limit = Some(v.trim().parse::<u32>().map_err(|_| bad(format!("limit={v:?} is not a count")))?)
                }
                "process-id" if !v.is_empty() => q.process_id = Some(v),
                "from-nonce" => q.from_nonce = true,
                "to-nonce" => q.to_nonce = true,
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Strict percent-decoding: every `%` must start a two-digit hex escape (a malformed one is a
/// 400 here); the decoding itself is the CU API's (`http::query::percent_decode`).
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let hex_at = |k: usize| b.get(k).is_some_and(u8::is_ascii_hexdigit);
    if b.iter().enumerate().any(|(i, c)| *c == b'%' && !(hex_at(i + 1) && hex_at(i + 2))) {
        return None;
    }
    crate::http::query::percent_decode(s, plus_is_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_refuses_bad_escapes() {
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%", true), None);
        assert_eq!(percent_decode("%zz", true), None);
        assert_eq!(percent_decode("%ff", true), None);
        assert_eq!(percent_decode("%e2%82%ac", false).as_deref(), Some("€"));
    }

    #[test]
    fn query_parses_the_su_parameters() {
        let q = Query::parse("process-id=P&from=5&to=10&limit=3&x=y").unwrap();
        assert_eq!((q.from, q.to, q.limit, q.process_id.as_deref()), (Some(5), Some(10), Some(3), Some("P")));
        assert!(Query::parse("from=abc").is_err());
        assert!(Query::parse("limit=-1").is_err());
        assert!(Query::parse("from=").unwrap().from.is_none());
    }
}
