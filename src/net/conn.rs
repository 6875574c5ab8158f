//! The HTTP/1.1 client core shared by both transports: origins, the keep-alive [`Pool`] of hyper
//! `SendRequest`s, the request preparation (origin-form URI, `Host`), one exchange with a single
//! replay on a stale pooled connection, and the bounded body read ([`read_limited`]).
//!
//! The transports differ only in how a connection is made (tokio's epoll `TcpStream`, or the
//! io_uring stream of [`super::uring`]) and where its hyper `Connection` task runs; they pass a
//! `connect` function to [`exchange`].
//!
//! Invariants: a pooled connection is reused only when hyper says it is still open and ready;
//! at most [`POOL_MAX_IDLE_PER_HOST`] idle connections per origin, none older than
//! [`POOL_IDLE_TIMEOUT`]; a connection whose answer said `Connection: close`, or whose body was
//! not read to the end, is never pooled; a request is replayed at most once, only when it went
//! out on a reused connection and hyper reports it unsent (or, for GET/HEAD, unanswered).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderValue};
use hyper::{Method, Request, Response, Uri};

use super::TransportError;

/// How long an idle keep-alive connection stays in the pool.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per origin (scheme, host, port).
pub const POOL_MAX_IDLE_PER_HOST: usize = 32;

/// The sender half of one HTTP/1.1 connection.
pub type Sender = SendRequest<Full<Bytes>>;

/// Where a connection goes: scheme, host (without IPv6 brackets), port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `true` for `https`.
    pub tls: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port, explicit or the scheme's default.
    pub port: u16,
}

impl Origin {
    /// The origin of an absolute `http(s)` URI.
    pub fn of(uri: &Uri) -> Result<Origin, TransportError> {
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(TransportError::Invalid(format!("{uri}: only http:// and https:// are supported"))),
        };
        let host =
            uri.host().filter(|h| !h.is_empty()).ok_or_else(|| TransportError::Invalid(format!("{uri}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Origin { tls, host, port })
    }

    /// The socket addresses of the origin: the literal IP, or the resolver's answers.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, TransportError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| TransportError::Io(format!("resolving {}: {e}", self.host)))?
            .collect();
        if addrs.is_empty() {
            return Err(TransportError::Io(format!("resolving {}: no address", self.host)));
        }
        Ok(addrs)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Idle keep-alive connections by origin.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self.idle.lock().map(|m| m.values().map(Vec::len).sum()).unwrap_or(0);
        f.debug_struct("Pool").field("idle", &n).finish()
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Vec<Idle>>> {
        // A panic while holding the lock cannot leave the map inconsistent (plain pushes/pops).
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used open idle connection to `origin`, if any.
    fn take(&self, origin: &Origin) -> Option<Sender> {
        let mut map = self.lock();
        let list = map.get_mut(origin)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(idle) = list.pop() {
            if now.duration_since(idle.since) < POOL_IDLE_TIMEOUT && !idle.sender.is_closed() {
                found = Some(idle.sender);
                break;
            }
        }
        if list.is_empty() {
            map.remove(origin);
        }
        found
    }

    /// Returns a connection whose last exchange is complete; drops expired or closed ones.
    fn put(&self, origin: &Origin, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, list| {
            list.retain(|i| now.duration_since(i.since) < POOL_IDLE_TIMEOUT && !i.sender.is_closed());
            !list.is_empty()
        });
        let list = map.entry(origin.clone()).or_default();
        list.push(Idle { sender, since: now });
        if list.len() > POOL_MAX_IDLE_PER_HOST {
            list.remove(0);
        }
    }

    /// Idle connections held (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

/// A request reduced to what is needed to send it again.
struct Prepared {
    method: Method,
    uri: Uri,
    version: hyper::Version,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Prepared {
    /// Origin-form URI and a `Host` header, as an HTTP/1.1 origin server expects.
    fn new(req: Request<Bytes>) -> Result<(Origin, Prepared), TransportError> {
        let origin = Origin::of(req.uri())?;
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        if !headers.contains_key(HOST) {
            let host = parts.uri.host().unwrap_or_default();
            let value = match parts.uri.port_u16() {
                Some(p) if p != if origin.tls { 443 } else { 80 } => format!("{host}:{p}"),
                _ => host.to_string(),
            };
            let value = HeaderValue::from_str(&value)
                .map_err(|e| TransportError::Invalid(format!("{}: bad host: {e}", parts.uri)))?;
            headers.insert(HOST, value);
        }
        let path = parts.uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/");
        let uri: Uri = path.parse().map_err(|e| TransportError::Invalid(format!("{}: {e}", parts.uri)))?;
        Ok((origin, Prepared { method: parts.method, uri, version: parts.version, headers, body }))
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// One hyper error with its chain of causes, as text.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

/// A pooled connection made ready, or `None` when none is usable.
async fn checkout(pool: &Pool, origin: &Origin, wait: Duration) -> Option<Sender> {
    while let Some(mut sender) = pool.take(origin) {
        if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await {
            return Some(sender);
        }
    }
    None
}

/// One exchange: a pooled connection to the request's origin (or a new one from `connect`), the
/// request, the whole answer under `max_body`; the connection goes back to `pool` when reusable.
pub async fn exchange<C, F>(
    pool: &Pool,
    req: Request<Bytes>,
    max_body: usize,
    connect_timeout: Duration,
    connect: C,
) -> Result<Response<Bytes>, TransportError>
where
    C: Fn(Origin) -> F,
    F: Future<Output = Result<Sender, TransportError>>,
{
    let (origin, prepared) = Prepared::new(req)?;
    let idempotent = matches!(prepared.method, Method::GET | Method::HEAD);
    let mut pooled = checkout(pool, &origin, connect_timeout).await;
    let mut replayed = false;
    loop {
        let reused = pooled.is_some();
        let mut sender = match pooled.take() {
            Some(s) => s,
            None => connect(origin.clone()).await?,
        };
        let resp = match sender.try_send_request(prepared.build()).await {
            Ok(resp) => resp,
            Err(mut e) => {
                let unsent = e.take_message().is_some();
                let stale = unsent || (idempotent && e.error().is_incomplete_message());
                if reused && stale && !replayed {
                    // The server closed an idle connection as we reused it: once more, fresh.
                    replayed = true;
                    continue;
                }
                return Err(TransportError::Io(format!("{origin}: {}", error_text(e.error()))));
            }
        };
        let close = resp
            .headers()
            .get(CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        let resp = read_limited(resp, max_body).await?;
        if !close {
            pool.put(&origin, sender);
        }
        return Ok(resp);
    }
}

/// Reads `resp`'s body, refusing more than `max_body` bytes (declared or actual).
pub async fn read_limited<B>(resp: Response<B>, max_body: usize) -> Result<Response<Bytes>, TransportError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared =
        resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(TransportError::TooLarge(max_body));
    }
    let (parts, body) = resp.into_parts();
    let body = match Limited::new(body, max_body).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(TransportError::TooLarge(max_body)),
        Err(e) => {
            return Err(TransportError::Io(format!(
                "{}: reading the body failed: {}",
                parts.status.as_u16(),
                error_text(e.as_ref())
            )));
        }
    };
    Ok(Response::from_parts(parts, body))
}

/// The hyper HTTP/1.1 client settings both transports use.
pub fn builder() -> hyper::client::conn::http1::Builder {
    hyper::client::conn::http1::Builder::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_prepared_requests() {
        let o = Origin::of(&"https://[::1]/x".parse().unwrap()).unwrap();
        assert_eq!((o.tls, o.host.as_str(), o.port), (true, "::1", 443));
        assert_eq!(o.to_string(), "https://[::1]:443");
        let o = Origin::of(&"http://h:8080".parse().unwrap()).unwrap();
        assert_eq!((o.tls, o.host.as_str(), o.port), (false, "h", 8080));
        assert!(matches!(Origin::of(&"ftp://h/".parse().unwrap()), Err(TransportError::Invalid(_))));
        assert!(matches!(Origin::of(&"/relative".parse().unwrap()), Err(TransportError::Invalid(_))));

        let req = Request::get("http://h:8080/a/b?c=d").body(Bytes::new()).unwrap();
        let (_, p) = Prepared::new(req).unwrap();
        let built = p.build();
        assert_eq!(built.uri().to_string(), "/a/b?c=d");
        assert_eq!(built.headers()[HOST], "h:8080");
        let req = Request::get("https://h:443").body(Bytes::new()).unwrap();
        let (_, p) = Prepared::new(req).unwrap();
        assert_eq!(p.build().uri().to_string(), "/");
        assert_eq!(p.build().headers()[HOST], "h");
    }
}
