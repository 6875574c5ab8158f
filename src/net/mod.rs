//! The CU's client side of HTTP/1.1: how it reaches Scheduler Units and gateways.
//!
//! Two layers:
//! - [`Transport`]: one HTTP/1.1 exchange (request out, whole bounded body in) over a kept-alive
//!   connection, `http` or `https` (rustls, [`tls`]). Both transports are the same hyper client
//!   connection and keep-alive pool ([`conn`]) on a different stream: [`epoll`] on tokio's
//!   reactor, [`uring`] on a tokio-uring runtime on its own thread fed through a bounded channel.
//!   Which one is chosen by [`IoMode`]; `auto` probes io_uring once and falls back to epoll with
//!   one log line.
//! - [`fetch::Fetcher`]: one *logical* call over a transport — redirects, retries with jittered
//!   exponential backoff under a deadline, body limits, and the classification of answers into
//!   ok / not found / unavailable / invalid. The SU client and the gateway client are thin layers
//!   over it that build URLs and parse JSON.
//!
//! Invariants: every exchange is bounded in time (the fetcher's per-attempt timeout) and in size
//! (`max_body`, checked against the declared length and the bytes actually read); nothing a peer
//! sends can make this module panic.

pub mod conn;
pub mod epoll;
pub mod fetch;
pub mod tls;
pub mod uring;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Request, Response};

pub use fetch::{ClientConfig, FetchError, Fetcher};
/// A DER certificate, as given to [`AnyTransport::with_roots`].
pub use tokio_rustls::rustls::pki_types::CertificateDer;

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
    /// tokio's epoll reactor.
    Epoll(epoll::EpollTransport),
    /// io_uring on its own thread.
    Uring(uring::UringTransport),
}

/// Whether io_uring works on this machine, probed once per process (a ring on a throwaway thread
/// completing a NOP); `Err` names the reason (e.g. `ENOSYS`, or `EPERM` under a seccomp profile).
pub fn uring_available() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(uring::probe).clone()
}

/// The engine `mode` stands for, given the io_uring probe: `auto` is `uring` when the probe
/// passes, else `epoll` (`fell_back` says why); `uring` with a failing probe is an error.
fn resolve_mode(
    mode: IoMode,
    probe: impl FnOnce() -> Result<(), String>,
) -> Result<(IoMode, Option<String>), TransportError> {
    match mode {
        IoMode::Epoll => Ok((IoMode::Epoll, None)),
        IoMode::Uring => match probe() {
            Ok(()) => Ok((IoMode::Uring, None)),
            Err(why) => Err(TransportError::Io(format!("--io uring: io_uring is not available here: {why}"))),
        },
        IoMode::Auto => match probe() {
            Ok(()) => Ok((IoMode::Uring, None)),
            Err(why) => Ok((IoMode::Epoll, Some(why))),
        },
    }
}

impl AnyTransport {
    /// The transport for `mode`, trusting webpki's roots for `https`. `auto` logs one line when
    /// it falls back to epoll; `uring` fails, naming the reason, when the kernel refuses io_uring.
    pub fn new(mode: IoMode, connect_timeout: Duration) -> Result<Self, TransportError> {
        Self::with_roots(mode, connect_timeout, &[])
    }

    /// Like [`AnyTransport::new`], also trusting `extra_roots` (e.g. a private SU's CA).
    pub fn with_roots(
        mode: IoMode,
        connect_timeout: Duration,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, TransportError> {
        let tls = tls::client_config(extra_roots)?;
        let (engine, fell_back) = resolve_mode(mode, uring_available)?;
        if let Some(why) = fell_back {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| tracing::warn!("io_uring is not available ({why}); using epoll"));
        }
        if engine == IoMode::Epoll {
            return Ok(AnyTransport::Epoll(epoll::EpollTransport::with_tls(connect_timeout, tls)));
        }
        match uring::UringTransport::new(connect_timeout, tls.clone()) {
            Ok(t) => Ok(AnyTransport::Uring(t)),
            Err(why) if mode == IoMode::Auto => {
                tracing::warn!("io_uring could not start ({why}); using epoll");
                Ok(AnyTransport::Epoll(epoll::EpollTransport::with_tls(connect_timeout, tls)))
            }
            Err(why) => Err(TransportError::Io(format!("--io uring: io_uring could not start: {why}"))),
        }
    }
}

impl Transport for AnyTransport {
    async fn send(&self, req: Request<Bytes>, max_body: usize) -> Result<Response<Bytes>, TransportError> {
        match self {
            AnyTransport::Epoll(t) => t.send(req, max_body).await,
            AnyTransport::Uring(t) => t.send(req, max_body).await,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            AnyTransport::Epoll(t) => t.name(),
            AnyTransport::Uring(t) => t.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_resolve() {
        assert_eq!("uring".parse::<IoMode>(), Ok(IoMode::Uring));
        assert_eq!("io_uring".parse::<IoMode>(), Ok(IoMode::Uring));
        assert_eq!("epoll".parse::<IoMode>(), Ok(IoMode::Epoll));
        assert_eq!("auto".parse::<IoMode>(), Ok(IoMode::Auto));
        assert!("kqueue".parse::<IoMode>().is_err());

        let refused = || Err::<(), _>("io_uring_setup failed: Operation not permitted (os error 1)".to_string());
        let works = || Ok::<(), String>(());
        let never = || -> Result<(), String> { panic!("epoll must not probe") };
        assert_eq!(resolve_mode(IoMode::Epoll, never), Ok((IoMode::Epoll, None)));
        assert_eq!(resolve_mode(IoMode::Auto, works), Ok((IoMode::Uring, None)));
        assert_eq!(resolve_mode(IoMode::Uring, works), Ok((IoMode::Uring, None)));
        let (m, why) = resolve_mode(IoMode::Auto, refused).unwrap();
        assert_eq!(m, IoMode::Epoll);
        assert!(why.unwrap().contains("Operation not permitted"));
        let Err(TransportError::Io(e)) = resolve_mode(IoMode::Uring, refused) else { panic!("uring must fail") };
        assert!(e.contains("not available") && e.contains("Operation not permitted"), "{e}");
    }

    #[test]
    fn both_engines_start_here_or_say_why() {
        let epoll = AnyTransport::new(IoMode::Epoll, Duration::from_secs(1)).unwrap();
        assert_eq!(epoll.name(), "epoll");
        let auto = AnyTransport::new(IoMode::Auto, Duration::from_secs(1)).unwrap();
        match uring_available() {
            Ok(()) => {
                assert_eq!(auto.name(), "uring");
                assert_eq!(AnyTransport::new(IoMode::Uring, Duration::from_secs(1)).unwrap().name(), "uring");
            }
            Err(why) => {
                assert!(!why.is_empty());
                assert_eq!(auto.name(), "epoll");
                assert!(AnyTransport::new(IoMode::Uring, Duration::from_secs(1)).is_err());
            }
        }
    }
}
