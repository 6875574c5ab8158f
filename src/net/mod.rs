//! The CU's client side of HTTP/1.1: how it reaches Scheduler Units and gateways.
//!
//! Two layers:
//! - [`Transport`]: one HTTP exchange (request out, whole bounded body in) over a kept-alive
//!   connection. [`epoll`] runs it on tokio's reactor; the io_uring transport runs it on a
//!   tokio-uring runtime on its own thread. Which one is chosen by [`IoMode`].
//! - [`fetch::Fetcher`]: one *logical* call over a transport — redirects, retries with jittered
//!   exponential backoff under a deadline, body limits, and the classification of answers into
//!   ok / not found / unavailable / invalid. The SU client and the gateway client are thin layers
//!   over it that build URLs and parse JSON.
//!
//! Invariants: every exchange is bounded in time (the fetcher's per-attempt timeout) and in size
//! (`max_body`, checked against the declared length and the bytes actually read); nothing a peer
//! sends can make this module panic.

pub mod epoll;
pub mod fetch;

use std::future::Future;

use bytes::Bytes;
use hyper::{Request, Response};

pub use fetch::{ClientConfig, FetchError, Fetcher};

/// Why one exchange failed before a complete answer arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Connecting, writing or reading failed (retryable).
    #[error("network error: {0}")]
    Io(String),
    /// The answer's body is larger than allowed (declared or actual).
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    /// The request could not be sent as given (bad URL, unsupported scheme).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// One HTTP/1.1 exchange at a time per call; implementations pool keep-alive connections.
pub trait Transport: Send + Sync + 'static {
    /// Sends `req` and reads the whole answer, refusing bodies over `max_body` bytes.
    fn send(
        &self,
        req: Request<Bytes>,
        max_body: usize,
    ) -> impl Future<Output = Result<Response<Bytes>, TransportError>> + Send;
    /// `epoll` or `uring`, for logs and metrics.
    fn name(&self) -> &'static str;
}

/// Which I/O engine the network clients use (`--io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring through tokio-uring on its own thread.
    Uring,
    /// tokio's epoll reactor.
    Epoll,
    /// io_uring when the kernel allows it, else epoll (one log line says which).
    #[default]
    Auto,
}

impl std::str::FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uring" | "io_uring" => Ok(IoMode::Uring),
            "epoll" => Ok(IoMode::Epoll),
            "auto" => Ok(IoMode::Auto),
            _ => Err(format!("{s:?} is not an I/O mode; expected uring, epoll or auto")),
        }
    }
}

/// The transport the CU was configured with.
#[derive(Debug)]
pub enum AnyTransport {
    Epoll(epoll::EpollTransport),
}

impl AnyTransport {
    /// The transport for `mode`.
    pub fn new(mode: IoMode, connect_timeout: std::time::Duration) -> Result<Self, TransportError> {
        match mode {
            IoMode::Epoll | IoMode::Auto => Ok(AnyTransport::Epoll(epoll::EpollTransport::new(connect_timeout))),
            IoMode::Uring => Err(TransportError::Invalid("the io_uring transport is not built yet".into())),
        }
    }
}

impl Transport for AnyTransport {
    async fn send(&self, req: Request<Bytes>, max_body: usize) -> Result<Response<Bytes>, TransportError> {
        match self {
            AnyTransport::Epoll(t) => t.send(req, max_body).await,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            AnyTransport::Epoll(t) => t.name(),
        }
    }
}
