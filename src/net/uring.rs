//! [`UringTransport`]: the HTTP/1.1 client of [`super::conn`] on io_uring.
//!
//! Threads and channels: one dedicated OS thread ([`THREAD_NAME`]) runs a `tokio_uring` runtime
//! (a current-thread tokio runtime whose I/O goes through one ring of [`RING_ENTRIES`]). Callers on
//! the CU's ordinary tokio runtime push each request, with a oneshot reply sender, into a bounded
//! channel of [`QUEUE_DEPTH`] jobs (a full channel makes `send` wait: backpressure); the uring
//! thread spawns one local task per job, which runs the whole exchange — pooled or new
//! connection, request, bounded body — and answers on the oneshot. The keep-alive [`Pool`] and
//! every connection live on the uring thread only.
//!
//! The stream: [`UringIo`] adapts `tokio_uring::net::TcpStream` (owned-buffer, completion-based
//! I/O) to tokio's `AsyncRead`/`AsyncWrite` by keeping at most one read and one write operation in
//! flight, each owning its buffer: reads land in a [`READ_CHUNK`] buffer and are copied out as the
//! caller asks; writes copy up to [`WRITE_CHUNK`] bytes into an owned buffer, are acknowledged at
//! once and completed (short writes resubmitted) before the next write, a flush or a shutdown
//! returns. rustls (for `https`) and hyper (through `TokioIo`) sit on top of it unchanged.
//!
//! Invariants: `send` never panics and never waits on a dead thread: if the thread, its runtime
//! or the ring is gone, `send` is [`TransportError::Io`]; a caller that stops waiting (timeout,
//! drop) makes the uring side abandon the exchange and close its connection; dropping a
//! [`UringIo`] shuts its socket down, so an operation still in flight completes and the socket is
//! closed rather than leaked (tokio-uring does not cancel the operations of dropped futures).
//! One exception: a TCP connect abandoned at the connect timeout keeps its socket until the kernel
//! gives up on the handshake (tokio-uring gives no handle on the socket before it connects).

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::rustls::ClientConfig;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use super::conn::{self, Origin, Pool, Sender};
use super::tls::MaybeTls;
use super::{Transport, TransportError};

/// Requests queued towards the uring thread before `send` waits.
pub const QUEUE_DEPTH: usize = 1024;
/// Submission-queue entries of the ring.
pub const RING_ENTRIES: u32 = 256;
/// How long creating the ring and completing its first NOP may take.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of a connection's read buffer (one read operation at a time; kept with the connection).
/// Each read is a full ring round trip, so it is large enough to take an SU page in one or two
/// reads: `benches/fetch.rs` measured 64 KiB at about twice the sequential latency.
pub const READ_CHUNK: usize = 256 * 1024;
/// Most bytes accepted by one write (one write operation at a time).
pub const WRITE_CHUNK: usize = 64 * 1024;
/// The name of the uring thread.
pub const THREAD_NAME: &str = "metalcu-uring";

type Reply = Result<Response<Bytes>, TransportError>;

/// One request for the uring thread.
struct Job {
    req: Request<Bytes>,
    max_body: usize,
    reply: oneshot::Sender<Reply>,
}

/// The io_uring transport: a handle on the uring thread's job queue. Dropping the last handle
/// ends the thread (its connections are closed).
#[derive(Debug, Clone)]
pub struct UringTransport {
    jobs: mpsc::Sender<Job>,
}

impl UringTransport {
    /// Starts the uring thread; fails, naming the reason, when the kernel refuses io_uring
    /// (`ENOSYS`, `EPERM` under seccomp, ...) or its first NOP does not complete.
    pub fn new(connect_timeout: Duration, tls: Arc<ClientConfig>) -> Result<Self, String> {
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let ready = start(RING_ENTRIES, move |ready| run(rx, ready, connect_timeout, tls))?;
        ready?;
        Ok(UringTransport { jobs })
    }
}

/// Whether io_uring works here: a small ring on a throwaway thread completes a NOP.
pub fn probe() -> Result<(), String> {
    start(8, |ready| async move {
        let _ = ready.send(Ok(()));
    })?
}

/// Spawns the uring thread: it builds a runtime with `entries` and, inside it, completes a NOP,
/// then runs `body` with the channel on which `body` confirms readiness; the thread ends when
/// `body` does. Returns the readiness.
fn start<F, Fut>(entries: u32, body: F) -> Result<Result<(), String>, String>
where
    F: FnOnce(std::sync::mpsc::SyncSender<Result<(), String>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            let mut builder = tokio_uring::builder();
            builder.entries(entries);
            let rt =
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tokio_uring::Runtime::new(&builder))) {
                    Ok(Ok(rt)) => rt,
                    Ok(Err(e)) => {
                        let _ = ready_tx.send(Err(format!("io_uring_setup failed: {e}")));
                        return;
                    }
                    Err(_) => {
                        let _ = ready_tx.send(Err("creating the io_uring runtime panicked".into()));
                        return;
                    }
                };
            rt.block_on(async move {
                match tokio::time::timeout(STARTUP_TIMEOUT, tokio_uring::no_op()).await {
                    Ok(Ok(())) => body(ready_tx).await,
                    Ok(Err(e)) => {
                        let _ = ready_tx.send(Err(format!("an io_uring NOP failed: {e}")));
                    }
                    Err(_) => {
                        let _ = ready_tx.send(Err(format!("an io_uring NOP did not complete in {STARTUP_TIMEOUT:?}")));
                    }
                }
            });
        })
        .map_err(|e| format!("spawning the io_uring thread: {e}"))?;
    match ready_rx.recv_timeout(STARTUP_TIMEOUT * 2) {
        Ok(r) => Ok(r),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err("the io_uring thread did not start in time".into()),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err("the io_uring thread died while starting".into()),
    }
}

/// The uring thread's body after start-up: reports readiness, then serves jobs until every
/// [`UringTransport`] handle is dropped. Runs inside the tokio_uring runtime.
async fn run(
    mut rx: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::SyncSender<Result<(), String>>,
    connect_timeout: Duration,
    tls: Arc<ClientConfig>,
) {
    if ready.send(Ok(())).is_err() {
        return;
    }
    let pool = Rc::new(Pool::new());
    while let Some(job) = rx.recv().await {
        tokio_uring::spawn(serve(job, pool.clone(), connect_timeout, tls.clone()));
    }
}

/// One job on the uring thread: the exchange, abandoned when the caller stops waiting.
async fn serve(job: Job, pool: Rc<Pool>, timeout: Duration, tls: Arc<ClientConfig>) {
    let Job { req, max_body, mut reply } = job;
    let work = conn::exchange(&pool, req, max_body, timeout, |origin| connect(origin, timeout, tls.clone()));
    let result = tokio::select! {
        r = work => Some(r),
        _ = reply.closed() => None,
    };
    if let Some(r) = result {
        let _ = reply.send(r);
    }
}

/// A new connection to `origin` on the ring: TCP (each resolved address in turn), TLS, HTTP/1.1
/// handshake; the hyper connection is driven by a local task on the uring thread.
async fn connect(origin: Origin, timeout: Duration, tls: Arc<ClientConfig>) -> Result<Sender, TransportError> {
    let attempt = async {
        let mut last = None;
        for addr in origin.resolve().await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let io = MaybeTls::wrap(UringIo::new(stream), origin.tls.then_some(&tls), &origin.host).await?;
                    let (sender, connection) = conn::builder()
                        .handshake(TokioIo::new(io))
                        .await
                        .map_err(|e| TransportError::Io(format!("{origin}: {}", conn::error_text(&e))))?;
                    tokio_uring::spawn(async move {
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

impl Transport for UringTransport {
    async fn send(&self, req: Request<Bytes>, max_body: usize) -> Result<Response<Bytes>, TransportError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { req, max_body, reply })
            .await
            .map_err(|_| TransportError::Io("the io_uring thread is gone".into()))?;
        answer.await.map_err(|_| TransportError::Io("the io_uring thread dropped the request".into()))?
    }

    fn name(&self) -> &'static str {
        "uring"
    }
}

/// An operation in flight: its result and the buffer it owned.
type Op = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;

/// tokio's `AsyncRead`/`AsyncWrite` over a tokio-uring TCP stream (see the module doc). Lives on
/// the uring thread only (`!Send`).
pub struct UringIo {
    stream: Rc<TcpStream>,
    /// The read in flight, owning the read buffer.
    read_op: Option<Op>,
    /// Bytes read and not yet handed out are `read_buf[read_pos..]`.
    read_buf: Vec<u8>,
    read_pos: usize,
    /// The write in flight, owning the bytes accepted by the last `poll_write`.
    write_op: Option<Op>,
    /// The spare write buffer while no write is in flight.
    write_buf: Vec<u8>,
    /// Bytes of the in-flight buffer already written.
    write_pos: usize,
    /// A failure of an acknowledged write, reported by the next write, flush or shutdown.
    write_err: Option<io::Error>,
}

impl UringIo {
    /// Adapts `stream`.
    pub fn new(stream: TcpStream) -> Self {
        UringIo {
            stream: Rc::new(stream),
            read_op: None,
            read_buf: Vec::new(),
            read_pos: 0,
            write_op: None,
            write_buf: Vec::new(),
            write_pos: 0,
            write_err: None,
        }
    }

    /// Submits the write of `buf[self.write_pos..]`.
    fn start_write(&mut self, buf: Vec<u8>) {
        let stream = self.stream.clone();
        let (from, to) = (self.write_pos, buf.len());
        self.write_op = Some(Box::pin(async move {
            let (res, slice) = stream.write(buf.slice(from..to)).submit().await;
            (res, slice.into_inner())
        }));
    }

    /// Completes the write in flight, resubmitting after short writes.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.write_err.take() {
            return Poll::Ready(Err(e));
        }
        loop {
            let Some(op) = self.write_op.as_mut() else { return Poll::Ready(Ok(())) };
            let (res, buf) = ready!(op.as_mut().poll(cx));
            self.write_op = None;
            match res {
                Ok(0) => {
                    self.write_buf = buf;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    self.write_pos += n;
                    if self.write_pos < buf.len() {
                        self.start_write(buf);
                    } else {
                        self.write_buf = buf;
                    }
                }
                Err(e) => {
                    self.write_buf = buf;
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl AsyncRead for UringIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.read_pos < this.read_buf.len() {
                let n = (this.read_buf.len() - this.read_pos).min(out.remaining());
                out.put_slice(&this.read_buf[this.read_pos..this.read_pos + n]);
                this.read_pos += n;
                return Poll::Ready(Ok(()));
            }
            let op = match this.read_op.as_mut() {
                Some(op) => op,
                None => {
                    let mut buf = std::mem::take(&mut this.read_buf);
                    buf.clear();
                    buf.reserve(READ_CHUNK);
                    let stream = this.stream.clone();
                    this.read_op.insert(Box::pin(async move { stream.read(buf).await }))
                }
            };
            let (res, mut buf) = ready!(op.as_mut().poll(cx));
            this.read_op = None;
            this.read_pos = 0;
            match res {
                Ok(n) => {
                    buf.truncate(n);
                    this.read_buf = buf;
                    if n == 0 {
                        return Poll::Ready(Ok(())); // end of stream
                    }
                }
                Err(e) => {
                    buf.clear();
                    this.read_buf = buf;
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl AsyncWrite for UringIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(WRITE_CHUNK);
        let mut buf = std::mem::take(&mut this.write_buf);
        buf.clear();
        buf.extend_from_slice(&data[..n]);
        this.write_pos = 0;
        this.start_write(buf);
        // Submit it now; its outcome is reported by the next write, flush or shutdown.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            this.write_err = Some(e);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Poll::Ready(this.stream.shutdown(Shutdown::Write))
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        // Ends any read still in flight (it completes with end of stream), so the operation
        // releases its handle on the socket and the socket is closed.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get() -> Request<Bytes> {
        Request::get("http://127.0.0.1:9/").body(Bytes::new()).unwrap()
    }

    #[tokio::test]
    async fn a_dead_uring_thread_is_an_io_error_not_a_hang() {
        // The thread is gone before the request: the queue is closed.
        let (jobs, rx) = mpsc::channel(1);
        drop(rx);
        let t = UringTransport { jobs };
        let err = t.send(get(), 1024).await.unwrap_err();
        assert!(matches!(err, TransportError::Io(ref e) if e.contains("gone")), "{err:?}");

        // The thread dies holding the request: its reply is dropped.
        let (jobs, mut rx) = mpsc::channel::<Job>(1);
        let dying = std::thread::spawn(move || {
            let job = rx.blocking_recv();
            drop(job);
        });
        let t = UringTransport { jobs };
        let err = t.send(get(), 1024).await.unwrap_err();
        assert!(matches!(err, TransportError::Io(ref e) if e.contains("dropped")), "{err:?}");
        dying.join().unwrap();
    }

    #[test]
    fn the_probe_answers_either_way() {
        // io_uring works on the development machines; where it does not, the reason is named.
        if let Err(why) = probe() {
            assert!(!why.is_empty());
        }
    }
}
