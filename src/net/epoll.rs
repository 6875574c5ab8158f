//! [`EpollTransport`]: the HTTP/1.1 client of [`super::conn`] on tokio's epoll reactor — tokio
//! `TcpStream`s (optionally under rustls), hyper's client connection per stream with its
//! `Connection` task on the caller's tokio runtime, and a keep-alive [`Pool`].
//!
//! Invariants: connecting (resolution, TCP, TLS handshake, HTTP handshake) is bounded by the
//! connect timeout; a dropped `send` future abandons its exchange and the connection with it;
//! bodies are bounded by [`read_limited`]'s rules.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;

use super::conn::{self, Origin, Pool, Sender};
pub use super::conn::{POOL_IDLE_TIMEOUT, POOL_MAX_IDLE_PER_HOST, read_limited};
use super::tls::{self, MaybeTls};
use super::{Transport, TransportError};

/// The epoll transport.
#[derive(Debug, Clone)]
pub struct EpollTransport {
    pool: Arc<Pool>,
    connect_timeout: Duration,
    tls: Arc<ClientConfig>,
}

impl EpollTransport {
    /// A transport whose connection attempts give up after `connect_timeout`, trusting webpki's
    /// roots for `https`.
    pub fn new(connect_timeout: Duration) -> Result<Self, TransportError> {
        Ok(Self::with_tls(connect_timeout, tls::client_config(&[])?))
    }

    /// A transport using `tls` for `https`.
    pub fn with_tls(connect_timeout: Duration, tls: Arc<ClientConfig>) -> Self {
        EpollTransport { pool: Arc::new(Pool::new()), connect_timeout, tls }
    }

    /// Idle pooled connections.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }
}

/// A new connection to `origin`: TCP (each resolved address in turn), TLS, HTTP/1.1 handshake;
/// the hyper connection is driven by a task on the current tokio runtime.
async fn connect(origin: Origin, timeout: Duration, tls: Arc<ClientConfig>) -> Result<Sender, TransportError> {
    let attempt = async {
        let mut last = None;
        for addr in origin.resolve().await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let io = MaybeTls::wrap(stream, origin.tls.then_some(&tls), &origin.host).await?;
                    let (sender, connection) = conn::builder()
                        .handshake(TokioIo::new(io))
                        .await
                        .map_err(|e| TransportError::Io(format!("{origin}: {}", conn::error_text(&e))))?;
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!("connection closed: {}", conn::error_text(&e));
                        }
                    });
                    return Ok(sender);
                }
                Err(e) => last = Some(format!("connecting to {addr}: {e}")),
            }
        }
        Err(TransportError::Io(format!("{origin}: {}", last.unwrap_or_else(|| "no address".into()))))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::Io(format!("{origin}: connect timeout after {timeout:?}"))),
    }
}

impl Transport for EpollTransport {
    async fn send(&self, req: Request<Bytes>, max_body: usize) -> Result<Response<Bytes>, TransportError> {
        let timeout = self.connect_timeout;
        conn::exchange(&self.pool, req, max_body, timeout, |origin| connect(origin, timeout, self.tls.clone())).await
    }

    fn name(&self) -> &'static str {
        "epoll"
    }
}
