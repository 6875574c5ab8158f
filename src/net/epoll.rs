//! [`EpollTransport`]: HTTP/1.1 on tokio's epoll reactor through hyper-util's pooled keep-alive
//! client. Plain `http` only for now.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{Transport, TransportError};

/// How long an idle keep-alive connection stays in the pool.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per host.
pub const POOL_MAX_IDLE_PER_HOST: usize = 32;

/// The epoll transport.
#[derive(Debug, Clone)]
pub struct EpollTransport {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl EpollTransport {
    /// A transport whose connection attempts give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        EpollTransport { client }
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
        Err(e) => return Err(TransportError::Io(format!("{}: reading the body failed: {e}", parts.status.as_u16()))),
    };
    Ok(Response::from_parts(parts, body))
}

impl Transport for EpollTransport {
    async fn send(&self, req: Request<Bytes>, max_body: usize) -> Result<Response<Bytes>, TransportError> {
        if req.uri().scheme_str() != Some("http") {
            return Err(TransportError::Invalid(format!("{}: only http:// is supported", req.uri())));
        }
        let resp = self.client.request(req.map(Full::new)).await.map_err(|e| {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                text.push_str(": ");
                text.push_str(&s.to_string());
                src = s.source();
            }
            TransportError::Io(text)
        })?;
        read_limited(resp, max_body).await
    }

    fn name(&self) -> &'static str {
        "epoll"
    }
}
