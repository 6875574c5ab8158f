//! [`Fetcher`]: one logical HTTP call to a peer (an SU, a gateway) over a [`Transport`].
//!
//! Redirects (301/302/307/308, to `http(s)` URLs or same-origin paths) are followed up to
//! [`MAX_REDIRECTS`] hops; network errors, per-attempt timeouts and 5xx answers are retried with
//! jittered exponential backoff; a definitive "not found" (404, or 400 whose body contains the
//! peer's not-found text) is [`FetchError::NotFound`] at once, 403 is [`FetchError::Forbidden`] at
//! once; other 4xx answers and bodies over the limit are [`FetchError::Invalid`] at once.
//!
//! Invariants: retries are bounded by [`ClientConfig::retries`] and the whole call, retries
//! included, by [`ClientConfig::max_total`]; every attempt by [`ClientConfig::request_timeout`];
//! bodies by [`ClientConfig::max_body_bytes`]. Error texts name the peer and the thing that was
//! being loaded, in the reference CU's words: `Error Encountered when loading <thing> from <peer>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, StatusCode, Uri};

use super::{AnyTransport, Transport, TransportError};
use crate::metrics::Metrics;

/// Retries after the first attempt (the reference: 5).
pub const DEFAULT_RETRIES: u32 = 5;
/// Delay before the first retry; it doubles on each further retry (the reference: 500 ms).
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(500);
/// Deadline of one call, retries and delays included.
pub const DEFAULT_MAX_TOTAL: Duration = Duration::from_secs(20);
/// Deadline of one attempt (connect, request, whole body).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer accepted.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Most redirect hops followed within one attempt.
pub const MAX_REDIRECTS: usize = 5;
/// Most bytes of a peer's body quoted in an error.
pub const ERROR_EXCERPT_BYTES: usize = 512;

/// Tuning of a [`Fetcher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff delay (doubling, ±25 % jitter).
    pub base_delay: Duration,
    /// Deadline for one call including retries.
    pub max_total: Duration,
    /// Deadline for one attempt.
    pub request_timeout: Duration,
    /// Largest body accepted.
    pub max_body_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            retries: DEFAULT_RETRIES,
            base_delay: DEFAULT_BASE_DELAY,
            max_total: DEFAULT_MAX_TOTAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// How a logical call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The peer says the thing does not exist (definitive; not retried).
    #[error("{0}")]
    NotFound(String),
    /// The peer refuses the caller (403; definitive, not retried).
    #[error("{0}")]
    Forbidden(String),
    /// The peer could not be reached or kept failing after retries.
    #[error("{0}")]
    Unavailable(String),
    /// The peer answered something unusable (4xx, oversized, bad redirect).
    #[error("{0}")]
    Invalid(String),
}

/// What a fetcher talks to: its name in errors and its "not found" text on 400 answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// E.g. `Scheduler Unit`, `gateway`.
    pub name: &'static str,
    /// A 400 answer whose body contains this is a "not found" (the reference SU's habit).
    pub not_found_text: Option<&'static str>,
}

/// How one attempt ended.
enum Attempt {
    Ok(Bytes),
    Fatal(FetchError),
    Retry(String),
}

/// Logical calls to one kind of peer over a shared transport.
#[derive(Debug)]
pub struct Fetcher {
    transport: Arc<AnyTransport>,
    cfg: ClientConfig,
    peer: Peer,
    rng: AtomicU64,
    /// Where each call's duration and failure are recorded as SU fetches (SU fetchers only).
    metrics: Option<Arc<Metrics>>,
}

impl Fetcher {
    /// A fetcher for `peer` over `transport`.
    pub fn new(transport: Arc<AnyTransport>, cfg: ClientConfig, peer: Peer) -> Self {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Fetcher { transport, cfg, peer, rng: AtomicU64::new(seed | 1), metrics: None }
    }

    /// This fetcher, recording every logical call (retries included) as an SU fetch in
    /// `metrics`, labelled with its transport.
    pub fn with_su_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The tuning in force.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The transport's name (`epoll`, `uring`).
    pub fn transport_name(&self) -> &'static str {
        self.transport.name()
    }

    /// A jitter factor in [0.75, 1.25) from a xorshift64 stream.
    pub fn jitter(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        0.75 + (x >> 11) as f64 / (1u64 << 53) as f64 * 0.5
    }

    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(20));
        self.cfg.base_delay.saturating_mul(factor).mul_f64(self.jitter())
    }

    /// `GET url`, with retries; the 2xx body.
    pub async fn get(&self, url: &str, thing: &str) -> Result<Bytes, FetchError> {
        self.call(Method::GET, url, None, thing).await
    }

    /// `POST url` with a JSON body, with retries; the 2xx body.
    pub async fn post_json(&self, url: &str, body: Bytes, thing: &str) -> Result<Bytes, FetchError> {
        self.call(Method::POST, url, Some(body), thing).await
    }

    fn text(&self, thing: &str, why: &str) -> String {
        format!("Error Encountered when loading {thing} from {}: {why}", self.peer.name)
    }

    async fn call(&self, method: Method, url: &str, body: Option<Bytes>, thing: &str) -> Result<Bytes, FetchError> {
        let Some(metrics) = &self.metrics else { return self.call_retrying(method, url, body, thing).await };
        let started = Instant::now();
        let r = self.call_retrying(method, url, body, thing).await;
        let kind = match &r {
            Ok(_) => None,
            Err(FetchError::NotFound(_)) => Some("not_found"),
            Err(FetchError::Forbidden(_)) => Some("forbidden"),
            Err(FetchError::Unavailable(_)) => Some("unavailable"),
            Err(FetchError::Invalid(_)) => Some("invalid"),
        };
        metrics.su_fetch(self.transport.name(), started.elapsed(), kind);
        r
    }

    async fn call_retrying(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
        thing: &str,
    ) -> Result<Bytes, FetchError> {
        let deadline = Instant::now() + self.cfg.max_total;
        let mut retry = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(FetchError::Unavailable(self.text(thing, "timeout: deadline reached")));
            }
            let per_attempt = self.cfg.request_timeout.min(remaining);
            let attempt = self.attempt(method.clone(), url, body.clone(), thing);
            let why = match tokio::time::timeout(per_attempt, attempt).await {
                Ok(Attempt::Ok(body)) => return Ok(body),
                Ok(Attempt::Fatal(e)) => return Err(e),
                Ok(Attempt::Retry(why)) => why,
                Err(_) => format!("timeout: no complete answer within {per_attempt:?}"),
            };
            if retry >= self.cfg.retries {
                return Err(FetchError::Unavailable(self.text(thing, &why)));
            }
            let delay = self.backoff(retry);
            if Instant::now() + delay >= deadline {
                return Err(FetchError::Unavailable(self.text(thing, &why)));
            }
            tracing::debug!(peer = self.peer.name, "{thing}: {why}; retry {} in {delay:?}", retry + 1);
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// One attempt, following redirects.
    async fn attempt(&self, method: Method, url: &str, body: Option<Bytes>, thing: &str) -> Attempt {
        let err = |status: &str, body: &[u8]| self.text(thing, &format!("{status}: {}", excerpt(body)));
        let mut uri: Uri = match url.parse() {
            Ok(u) => u,
            Err(e) => return Attempt::Fatal(FetchError::Invalid(err("invalid url", e.to_string().as_bytes()))),
        };
        for _hop in 0..=MAX_REDIRECTS {
            let mut builder = Request::builder().method(method.clone()).uri(uri.clone());
            if body.is_some() {
                builder = builder.header(CONTENT_TYPE, "application/json");
            }
            let req = match builder.body(body.clone().unwrap_or_default()) {
                Ok(r) => r,
                Err(e) => return Attempt::Fatal(FetchError::Invalid(err("invalid request", e.to_string().as_bytes()))),
            };
            let resp = match self.transport.send(req, self.cfg.max_body_bytes).await {
                Ok(r) => r,
                Err(TransportError::Io(e)) => return Attempt::Retry(format!("network error: {e}")),
                Err(e @ TransportError::TooLarge(_)) => {
                    return Attempt::Fatal(FetchError::Invalid(self.text(thing, &e.to_string())));
                }
                Err(e @ TransportError::Invalid(_)) => {
                    return Attempt::Fatal(FetchError::Invalid(self.text(thing, &e.to_string())));
                }
            };
            let status = resp.status();
            if matches!(
                status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            ) {
                let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                match redirect_target(&uri, &location) {
                    Some(next) => {
                        tracing::debug!(peer = self.peer.name, "{thing}: {status} to {next}");
                        uri = next;
                        continue;
                    }
                    None => {
                        let why = format!("unusable redirect Location {location:?}");
                        return Attempt::Fatal(FetchError::Invalid(err(status.as_str(), why.as_bytes())));
                    }
                }
            }
            let code = status.as_u16();
            let body = resp.into_body();
            let not_found_400 = code == 400 && self.peer.not_found_text.is_some_and(|t| contains(&body, t.as_bytes()));
            return if status.is_success() {
                Attempt::Ok(body)
            } else if code == 404 || not_found_400 {
                Attempt::Fatal(FetchError::NotFound(err(status.as_str(), &body)))
            } else if code == 403 {
                Attempt::Fatal(FetchError::Forbidden(err(status.as_str(), &body)))
            } else if status.is_server_error() || code == 408 || code == 429 {
                Attempt::Retry(format!("{code}: {}", excerpt(&body)))
            } else {
                Attempt::Fatal(FetchError::Invalid(err(status.as_str(), &body)))
            };
        }
        Attempt::Fatal(FetchError::Invalid(err("redirect", format!("more than {MAX_REDIRECTS} redirects").as_bytes())))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The first [`ERROR_EXCERPT_BYTES`] of a body, as text.
pub fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(ERROR_EXCERPT_BYTES)];
    let mut s = String::from_utf8_lossy(cut).trim().to_string();
    if body.len() > ERROR_EXCERPT_BYTES {
        s.push('…');
    }
    s
}

/// Where a redirect goes: an absolute `http(s)` URL, or an absolute path on the same origin.
pub fn redirect_target(current: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    if location.starts_with("//") {
        return None;
    }
    if location.starts_with('/') {
        let authority = current.authority()?;
        let scheme = current.scheme_str().unwrap_or("http");
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    let uri: Uri = location.parse().ok()?;
    (matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()).then_some(uri)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks that `base_url` is `http(s)://host[:port][/prefix]` without a query; returns it
/// without a trailing `/`.
pub fn base_url(base_url: &str, what: &str) -> Result<String, String> {
    let base = base_url.trim().trim_end_matches('/').to_string();
    let uri: Uri = base.parse().map_err(|e| format!("invalid {what} url {base_url:?}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(format!("invalid {what} url {base_url:?}: expected http(s)://host[:port]"));
    }
    if uri.query().is_some() {
        return Err(format!("invalid {what} url {base_url:?}: it must not carry a query"));
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_to_http_origins_only() {
        let cur: Uri = "http://127.0.0.1:9/a?b=c".parse().unwrap();
        assert_eq!(redirect_target(&cur, "/x?y=1").unwrap().to_string(), "http://127.0.0.1:9/x?y=1");
        assert_eq!(redirect_target(&cur, "http://h:1/p").unwrap().to_string(), "http://h:1/p");
        assert_eq!(redirect_target(&cur, "https://h/p").unwrap().to_string(), "https://h/p");
        assert!(redirect_target(&cur, "ftp://h/p").is_none());
        assert!(redirect_target(&cur, "//h/p").is_none());
        assert!(redirect_target(&cur, "").is_none());
    }

    #[test]
    fn ids_are_encoded_urls_checked_and_jitter_bounded() {
        assert_eq!(enc("ab-_.~Z9"), "ab-_.~Z9");
        assert_eq!(enc("a/b?c&d"), "a%2Fb%3Fc%26d");
        assert_eq!(base_url("http://127.0.0.1:1/", "SU").unwrap(), "http://127.0.0.1:1");
        assert!(base_url("ftp://x", "SU").is_err());
        assert!(base_url("http://x/?a=b", "SU").is_err());
        assert!(base_url("not a url", "SU").is_err());
        let t = Arc::new(AnyTransport::new(super::super::IoMode::Epoll, Duration::from_secs(1)).unwrap());
        let f = Fetcher::new(t, ClientConfig::default(), Peer { name: "x", not_found_text: None });
        for _ in 0..1000 {
            let j = f.jitter();
            assert!((0.75..1.25).contains(&j));
        }
    }
}
