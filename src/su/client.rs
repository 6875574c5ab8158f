//! [`HttpScheduler`]: the CU's client for a real Scheduler Unit over HTTP/1.1 (cu-protocol
//! §2.2–2.4, §2.7), on tokio's epoll reactor through hyper-util's pooled keep-alive `Client`.
//!
//! Each [`Scheduler`] call is one logical request: redirects (301/302/307/308, to `http` URLs
//! only) are followed up to [`MAX_REDIRECTS`] hops; network errors, per-attempt timeouts and 5xx
//! answers are retried with jittered exponential backoff; a definitive "not found" (404, or 400
//! whose body says `Message or Process not found`) is [`SuError::NotFound`] at once; other 4xx
//! and any body that is not the expected JSON are [`SuError::Invalid`] at once.
//!
//! Invariants: retries are bounded by [`ClientConfig::retries`] and the whole call, retries
//! included, by [`ClientConfig::max_total`]; every attempt by [`ClientConfig::request_timeout`];
//! bodies by [`ClientConfig::max_body_bytes`] (declared and actual length). SU answers are
//! untrusted: nothing in them can make this module panic — they parse, or are an error naming
//! the thing that was being loaded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{CONTENT_LENGTH, LOCATION};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::scheduler::{PageQuery, Scheduler, SuError};
use super::types::{Node, Page, Process};

/// Retries after the first attempt (the reference: 5).
pub const DEFAULT_RETRIES: u32 = 5;
/// Delay before the first retry; it doubles on each further retry (the reference: 500 ms).
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(500);
/// Deadline of one call, retries and delays included.
pub const DEFAULT_MAX_TOTAL: Duration = Duration::from_secs(20);
/// Deadline of one attempt (connect, request, whole body).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest SU answer accepted.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Most redirect hops followed within one attempt.
pub const MAX_REDIRECTS: usize = 5;
/// Most bytes of an SU body quoted in an error.
pub const ERROR_EXCERPT_BYTES: usize = 512;
/// How long an idle keep-alive connection stays in the pool.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The reference SU's text for an unknown process or message.
pub const NOT_FOUND_TEXT: &str = "Message or Process not found";

/// Tuning of [`HttpScheduler`].
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

/// A real SU reached over HTTP/1.1.
#[derive(Debug)]
pub struct HttpScheduler {
    base: String,
    cfg: ClientConfig,
    client: Client<HttpConnector, Empty<Bytes>>,
    rng: AtomicU64,
}

/// How one attempt ended.
enum Attempt {
    /// 2xx with its body.
    Ok(Bytes),
    /// Definitive; not retried.
    Fatal(SuError),
    /// Transient; retried. The text is `<status>: <body excerpt>`.
    Retry(String),
}

impl HttpScheduler {
    /// A client for the SU at `base_url` (`http://host[:port][/prefix]`; a trailing `/` is
    /// trimmed). Only `http` is supported.
    pub fn new(base_url: &str, cfg: ClientConfig) -> Result<Self, SuError> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let uri: Uri = base.parse().map_err(|e| SuError::Invalid(format!("invalid SU url {base_url:?}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(SuError::Invalid(format!("invalid SU url {base_url:?}: only http://host[:port] is supported")));
        }
        if uri.query().is_some() {
            return Err(SuError::Invalid(format!("invalid SU url {base_url:?}: it must not carry a query")));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.request_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Ok(HttpScheduler { base, cfg, client, rng: AtomicU64::new(seed | 1) })
    }

    /// The SU's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A jitter factor in [0.75, 1.25) from a xorshift64 stream.
    fn jitter(&self) -> f64 {
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

    /// GET `path_and_query` (starting with `/`), with retries; the 2xx body.
    async fn get(&self, path_and_query: &str, thing: &str) -> Result<Bytes, SuError> {
        let start = Instant::now();
        let deadline = start + self.cfg.max_total;
        let url = format!("{}{}", self.base, path_and_query);
        let unavailable = |why: &str| {
            SuError::Unavailable(format!("Error Encountered when loading {thing} from Scheduler Unit: {why}"))
        };
        let mut retry = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(unavailable("timeout: deadline reached"));
            }
            let per_attempt = self.cfg.request_timeout.min(remaining);
            let why = match tokio::time::timeout(per_attempt, self.attempt(&url, thing)).await {
                Ok(Attempt::Ok(body)) => return Ok(body),
                Ok(Attempt::Fatal(e)) => return Err(e),
                Ok(Attempt::Retry(why)) => why,
                Err(_) => format!("timeout: no complete answer within {per_attempt:?}"),
            };
            if retry >= self.cfg.retries {
                return Err(unavailable(&why));
            }
            let delay = self.backoff(retry);
            if Instant::now() + delay >= deadline {
                return Err(unavailable(&why));
            }
            tracing::debug!("SU: {thing}: {why}; retry {} in {delay:?}", retry + 1);
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// One attempt, following redirects.
    async fn attempt(&self, url: &str, thing: &str) -> Attempt {
        let err = |status: &str, body: &[u8]| {
            format!("Error Encountered when loading {thing} from Scheduler Unit: {status}: {}", excerpt(body))
        };
        let mut uri: Uri = match url.parse() {
            Ok(u) => u,
            Err(e) => {
                return Attempt::Fatal(SuError::Invalid(err("invalid url", e.to_string().as_bytes())));
            }
        };
        for _hop in 0..=MAX_REDIRECTS {
            let req = match Request::get(uri.clone()).body(Empty::new()) {
                Ok(r) => r,
                Err(e) => return Attempt::Fatal(SuError::Invalid(err("invalid request", e.to_string().as_bytes()))),
            };
            let resp = match self.client.request(req).await {
                Ok(r) => r,
                Err(e) => return Attempt::Retry(format!("network error: {e}")),
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
                        tracing::debug!("SU: {thing}: {status} to {next}");
                        uri = next;
                        continue;
                    }
                    None => {
                        return Attempt::Fatal(SuError::Invalid(err(
                            status.as_str(),
                            format!("unusable redirect Location {location:?}").as_bytes(),
                        )));
                    }
                }
            }
            let max = self.cfg.max_body_bytes;
            let declared = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let too_large = || {
                Attempt::Fatal(SuError::Invalid(format!(
                    "Error Encountered when loading {thing} from Scheduler Unit: {}: body is larger than {max} bytes",
                    status.as_u16()
                )))
            };
            if declared.is_some_and(|n| n > max as u64) {
                return too_large();
            }
            let body = match Limited::new(resp.into_body(), max).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
                Err(e) => return Attempt::Retry(format!("{}: reading the body failed: {e}", status.as_u16())),
            };
            let code = status.as_u16();
            return if status.is_success() {
                Attempt::Ok(body)
            } else if code == 404 || (code == 400 && contains(&body, NOT_FOUND_TEXT.as_bytes())) {
                Attempt::Fatal(SuError::NotFound(err(status.as_str(), &body)))
            } else if status.is_server_error() {
                Attempt::Retry(format!("{code}: {}", excerpt(&body)))
            } else {
                Attempt::Fatal(SuError::Invalid(err(status.as_str(), &body)))
            };
        }
        Attempt::Fatal(SuError::Invalid(err("redirect", format!("more than {MAX_REDIRECTS} redirects").as_bytes())))
    }

    /// GET and parse JSON of shape `T`.
    async fn get_json<T: DeserializeOwned>(&self, path_and_query: &str, thing: &str) -> Result<T, SuError> {
        let body = self.get(path_and_query, thing).await?;
        serde_json::from_slice(&body).map_err(|e| invalid_body(thing, e))
    }
}

fn invalid_body(thing: &str, e: impl std::fmt::Display) -> SuError {
    SuError::Invalid(format!("Scheduler Unit returned an invalid {thing}: {e}"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The first [`ERROR_EXCERPT_BYTES`] of a body, as text.
fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(ERROR_EXCERPT_BYTES)];
    let mut s = String::from_utf8_lossy(cut).trim().to_string();
    if body.len() > ERROR_EXCERPT_BYTES {
        s.push('…');
    }
    s
}

/// Where a redirect goes: an absolute `http` URL, or an absolute path on the same origin.
fn redirect_target(current: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    if location.starts_with("//") {
        return None;
    }
    if location.starts_with('/') {
        let authority = current.authority()?;
        return format!("http://{authority}{location}").parse().ok();
    }
    let uri: Uri = location.parse().ok()?;
    (uri.scheme_str() == Some("http") && uri.authority().is_some()).then_some(uri)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn enc(s: &str) -> String {
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

/// An integer that may be written as a JSON number or a numeric string.
fn int_field<T: std::str::FromStr>(v: &Value, name: &str) -> Result<T, SuError> {
    let text = match v.get(name) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        _ => return Err(invalid_body("timestamp", format!("field {name} is missing or not a number"))),
    };
    text.parse::<T>().map_err(|_| invalid_body("timestamp", format!("field {name} = {text:?} is not an integer")))
}

impl Scheduler for HttpScheduler {
    async fn process(&self, pid: &str) -> Result<Process, SuError> {
        let thing = format!("process {pid}");
        self.get_json(&format!("/processes/{}", enc(pid)), &thing).await
    }

    async fn page(&self, pid: &str, q: PageQuery) -> Result<Page, SuError> {
        let thing = format!("messages page of process {pid}");
        let mut path = format!("/{}?process-id={}", enc(pid), enc(pid));
        if let Some(from) = q.from {
            path.push_str(&format!("&from={from}"));
        }
        if let Some(to) = q.to {
            path.push_str(&format!("&to={to}"));
        }
        if q.limit > 0 {
            path.push_str(&format!("&limit={}", q.limit));
        }
        let body = self.get(&path, &thing).await?;
        Page::parse(&body).map_err(|e| invalid_body(&thing, e))
    }

    async fn message(&self, pid: &str, message_id: &str) -> Result<Node, SuError> {
        let thing = format!("message {message_id}");
        self.get_json(&format!("/{}?process-id={}", enc(message_id), enc(pid)), &thing).await
    }

    async fn latest(&self, pid: &str) -> Result<Option<Node>, SuError> {
        let thing = format!("latest message of process {pid}");
        match self.get_json(&format!("/{}/latest", enc(pid)), &thing).await {
            Ok(n) => Ok(Some(n)),
            Err(SuError::NotFound(_)) => Ok(None),
            Err(SuError::Invalid(t)) if t.contains("Latest message not available") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn timestamp(&self) -> Result<(i64, u64), SuError> {
        let v: Value = self.get_json("/timestamp", "timestamp").await?;
        Ok((int_field::<i64>(&v, "timestamp")?, int_field::<u64>(&v, "block_height")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_to_http_only() {
        let cur: Uri = "http://127.0.0.1:9/a?b=c".parse().unwrap();
        assert_eq!(redirect_target(&cur, "/x?y=1").unwrap().to_string(), "http://127.0.0.1:9/x?y=1");
        assert_eq!(redirect_target(&cur, "http://h:1/p").unwrap().to_string(), "http://h:1/p");
        assert!(redirect_target(&cur, "https://h/p").is_none());
        assert!(redirect_target(&cur, "//h/p").is_none());
        assert!(redirect_target(&cur, "").is_none());
    }

    #[test]
    fn ids_are_encoded_and_jitter_is_bounded() {
        assert_eq!(enc("ab-_.~Z9"), "ab-_.~Z9");
        assert_eq!(enc("a/b?c&d"), "a%2Fb%3Fc%26d");
        let s = HttpScheduler::new("http://127.0.0.1:1/", ClientConfig::default()).unwrap();
        assert_eq!(s.base_url(), "http://127.0.0.1:1");
        for _ in 0..1000 {
            let j = s.jitter();
            assert!((0.75..1.25).contains(&j));
        }
        assert!(HttpScheduler::new("https://x", ClientConfig::default()).is_err());
        assert!(HttpScheduler::new("not a url", ClientConfig::default()).is_err());
    }
}
