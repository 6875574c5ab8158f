//! [`HttpScheduler`]: the CU's client for one real Scheduler Unit (cu-protocol §2.2–2.4, §2.7):
//! it builds the SU's URLs and parses its JSON; redirects, retries, deadlines and body limits are
//! the shared [`Fetcher`]'s (see `net::fetch`), over whichever transport (`epoll`, `uring`) the
//! CU was configured with.
//!
//! Invariants: SU answers are untrusted; nothing in them can make this module panic — they parse,
//! or are an error naming the thing that was being loaded. A definitive "not found" (404, or 400
//! whose body says [`NOT_FOUND_TEXT`]) is [`SuError::NotFound`] and never retried.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::scheduler::{PageQuery, Scheduler, SuError};
use super::types::{Node, Page, Process};
pub use crate::net::fetch::{
    ClientConfig, DEFAULT_BASE_DELAY, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_TOTAL, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRIES, MAX_REDIRECTS,
};
use crate::net::fetch::{FetchError, Fetcher, Peer, base_url, enc};
use crate::net::{AnyTransport, IoMode};

/// The reference SU's text for an unknown process or message.
pub const NOT_FOUND_TEXT: &str = "Message or Process not found";
/// How SU fetchers name their peer.
pub const SU_PEER: Peer = Peer { name: "Scheduler Unit", not_found_text: Some(NOT_FOUND_TEXT) };

impl From<FetchError> for SuError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::NotFound(t) => SuError::NotFound(t),
            FetchError::Forbidden(t) => SuError::Forbidden(t),
            FetchError::Unavailable(t) => SuError::Unavailable(t),
            FetchError::Invalid(t) => SuError::Invalid(t),
        }
    }
}

/// A real SU reached over HTTP/1.1.
#[derive(Debug, Clone)]
pub struct HttpScheduler {
    base: String,
    fetcher: Arc<Fetcher>,
}

impl HttpScheduler {
    /// A client for the SU at `base_url` (`http://host[:port][/prefix]`; a trailing `/` is
    /// trimmed) on its own epoll transport.
    pub fn new(base_url: &str, cfg: ClientConfig) -> Result<Self, SuError> {
        let transport =
            AnyTransport::new(IoMode::Epoll, cfg.request_timeout).map_err(|e| SuError::Invalid(e.to_string()))?;
        Self::with_fetcher(base_url, Arc::new(Fetcher::new(Arc::new(transport), cfg, SU_PEER)))
    }

    /// A client for the SU at `base_url` sharing `fetcher` (and its transport) with others.
    pub fn with_fetcher(base_url: &str, fetcher: Arc<Fetcher>) -> Result<Self, SuError> {
        let base = base(base_url)?;
        Ok(HttpScheduler { base, fetcher })
    }

    /// The SU's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The transport's name (`epoll`, `uring`).
    pub fn transport_name(&self) -> &'static str {
        self.fetcher.transport_name()
    }

    /// The per-attempt timeout in force.
    pub fn request_timeout(&self) -> Duration {
        self.fetcher.config().request_timeout
    }

    async fn get(&self, path_and_query: &str, thing: &str) -> Result<bytes::Bytes, SuError> {
        Ok(self.fetcher.get(&format!("{}{}", self.base, path_and_query), thing).await?)
    }

    /// GET and parse JSON of shape `T`.
    async fn get_json<T: DeserializeOwned>(&self, path_and_query: &str, thing: &str) -> Result<T, SuError> {
        let body = self.get(path_and_query, thing).await?;
        serde_json::from_slice(&body).map_err(|e| invalid_body(thing, e))
    }
}

fn base(url: &str) -> Result<String, SuError> {
    base_url(url, "SU").map_err(SuError::Invalid)
}

fn invalid_body(thing: &str, e: impl std::fmt::Display) -> SuError {
    SuError::Invalid(format!("Scheduler Unit returned an invalid {thing}: {e}"))
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
        let body = self.get(&format!("/{}?process-id={}", enc(message_id), enc(pid)), &thing).await?;
        Node::parse_single(&body).map_err(|e| invalid_body(&thing, e))
    }

    async fn latest(&self, pid: &str) -> Result<Option<Node>, SuError> {
        let thing = format!("latest message of process {pid}");
        match self.get(&format!("/{}/latest", enc(pid)), &thing).await {
            Ok(body) => Node::parse_single(&body).map(Some).map_err(|e| invalid_body(&thing, e)),
            Err(SuError::NotFound(_)) => Ok(None),
            Err(SuError::Invalid(t)) if t.contains("Latest message not available") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn timestamp(&self, pid: &str) -> Result<(i64, u64), SuError> {
        let v: Value = self.get_json(&format!("/timestamp?process-id={}", enc(pid)), "timestamp").await?;
        Ok((int_field::<i64>(&v, "timestamp")?, int_field::<u64>(&v, "block_height")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_flat_message_shape_places_the_message() {
        let node = Node::parse_single(br#"{"process_id":"P","timestamp":1712967091755,"nonce":"7"}"#).unwrap();
        let s = crate::su::message::map_node(&node).unwrap();
        assert_eq!((s.timestamp, s.nonce), (1_712_967_091_755, 7));
        assert!(Node::parse_single(br#"{"process_id":"P","nonce":1}"#).is_err());
        assert!(Node::parse_single(b"[]").is_err());
    }

    #[test]
    fn base_urls_are_checked() {
        let s = HttpScheduler::new("http://127.0.0.1:1/", ClientConfig::default()).unwrap();
        assert_eq!(s.base_url(), "http://127.0.0.1:1");
        assert_eq!(s.transport_name(), "epoll");
        assert!(HttpScheduler::new("ftp://x", ClientConfig::default()).is_err());
        assert!(HttpScheduler::new("not a url", ClientConfig::default()).is_err());
    }
}
