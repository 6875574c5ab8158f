//! TLS for both transports: the rustls client configuration (the `ring` provider, TLS 1.2 and 1.3,
//! webpki's Mozilla roots plus any extra roots the caller trusts, ALPN `http/1.1`) and
//! [`MaybeTls`], one stream type that is either the plain byte stream or rustls over it, so the
//! HTTP code above does not care which.
//!
//! Invariants: certificates are always verified (there is no "insecure" switch); the server name
//! sent and checked is the URL's host (a DNS name or an IP literal); the handshake happens inside
//! the caller's connect timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::TransportError;

/// The ALPN protocol offered: the transports speak HTTP/1.1 only.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A client configuration trusting webpki's roots and `extra_roots` (DER certificates).
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, TransportError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for cert in extra_roots {
        roots.add(cert.clone()).map_err(|e| TransportError::Invalid(format!("unusable trust root: {e}")))?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Invalid(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(cfg))
}

/// A byte stream, plain or under TLS.
#[derive(Debug)]
pub enum MaybeTls<IO> {
    /// `http://`.
    Plain(IO),
    /// `https://`.
    Tls(Box<TlsStream<IO>>),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> MaybeTls<IO> {
    /// `io` as is, or after a TLS handshake with `host` when `tls` is set.
    pub async fn wrap(io: IO, tls: Option<&Arc<ClientConfig>>, host: &str) -> Result<MaybeTls<IO>, TransportError> {
        let Some(cfg) = tls else { return Ok(MaybeTls::Plain(io)) };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| TransportError::Invalid(format!("{host:?} is not a TLS server name: {e}")))?;
        let stream = TlsConnector::from(cfg.clone())
            .connect(name, io)
            .await
            .map_err(|e| TransportError::Io(format!("TLS handshake with {host}: {e}")))?;
        Ok(MaybeTls::Tls(Box::new(stream)))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(io) => io.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}
