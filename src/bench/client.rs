//! The bench's HTTP/1.1 client: one keep-alive TCP connection per [`Conn`] (hyper's
//! `client::conn::http1`), so a phase with C workers holds exactly C connections and every
//! request's latency is the server's answer time plus loopback, nothing pooled or queued.
//!
//! Invariants: the clock of a request starts once the connection is ready (connecting is not
//! part of a latency) and stops when the whole body has arrived; every request is bounded by
//! [`REQUEST_TIMEOUT`] and every body by [`MAX_RESPONSE_BYTES`]; a failed or timed-out request
//! drops its connection, and the next request opens a new one. Failures are returned, never
//! retried here: the phases count them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Longest wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one answer (a cold `/result` may evaluate a whole log).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest answer body read.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The `host:port` of an `http://host:port[/]` base URL.
pub fn authority(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{url}: only http:// URLs are supported"))?;
    let auth = rest.trim_end_matches('/');
    if auth.is_empty() || auth.contains('/') || auth.contains('@') {
        anyhow::bail!("{url}: expected http://host:port with no path");
    }
    Ok(auth.to_string())
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// From sending the request to the last byte of the body.
    pub elapsed: Duration,
}

impl Answer {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// `"<status>: <first 200 bytes of the body>"`, for error reports.
    pub fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
        format!("{}: {text}", self.status)
    }
}

/// A keep-alive connection to one server.
pub struct Conn {
    authority: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `authority` (`host:port`), opened on first use.
    pub fn new(authority: &str) -> Conn {
        Conn { authority: authority.to_string(), sender: None }
    }

    /// Opens the connection if it is not open, and waits until it can take a request.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        if let Some(s) = &mut self.sender
            && !s.is_closed()
            && s.ready().await.is_ok()
        {
            return Ok(());
        }
        self.sender = None;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to {}: no answer within {CONNECT_TIMEOUT:?}", self.authority))?
            .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&mut self, path: &str, body: Bytes) -> anyhow::Result<Answer> {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn send(&mut self, method: Method, path: &str, body: Option<Bytes>) -> anyhow::Result<Answer> {
        self.ready().await?;
        let mut req = Request::builder().method(method).uri(path).header(HOST, self.authority.as_str());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let sender = self.sender.as_mut().expect("ready() opened it");
        let start = Instant::now();
        let exchange = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        let r = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        let elapsed = start.elapsed();
        match r {
            Ok(Ok((status, body))) => Ok(Answer { status, body, elapsed }),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                anyhow::bail!("no answer within {REQUEST_TIMEOUT:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn base_urls() {
        assert_eq!(authority("http://127.0.0.1:6363").unwrap(), "127.0.0.1:6363");
        assert_eq!(authority("http://localhost:1/").unwrap(), "localhost:1");
        assert!(authority("https://x:1").is_err());
        assert!(authority("http://x:1/path").is_err());
        assert!(authority("127.0.0.1:1").is_err());
    }
}
