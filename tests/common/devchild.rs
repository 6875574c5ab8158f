//! `metalcu dev` as a child process, and a tiny blocking HTTP/1.1 client, for tests that must
//! kill the server (kill -9) or see it from outside. Every wait is bounded; the child is killed
//! and reaped when dropped, and its stderr tail printed when a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on `metalcu dev` printing where it listens.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One request with `Connection: close`; returns (status, JSON body — or the text as a string).
/// `Err` when the connection fails or is cut (e.g. the server was killed).
pub fn try_http(
    addr: &str,
    method: &str,
    target: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, Value)> {
    let sock = addr.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(10))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\naccept: application/json\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).map_err(std::io::Error::other)?;
    let (head, payload) = text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("no head"))?;
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other("status"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let payload = if chunked { dechunk(payload) } else { payload.to_string() };
    Ok((status, serde_json::from_str(&payload).unwrap_or(Value::String(payload))))
}

/// [`try_http`] that panics on a failed exchange.
pub fn http(addr: &str, method: &str, target: &str, body: Option<&Value>, timeout: Duration) -> (u16, Value) {
    try_http(addr, method, target, body, timeout).unwrap_or_else(|e| panic!("{method} http://{addr}{target}: {e}"))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// A running `metalcu dev` child.
pub struct DevChild {
    child: Child,
    stderr_log: PathBuf,
    /// `127.0.0.1:P` of the CU.
    pub cu: String,
    /// `127.0.0.1:P` of the local scheduler.
    pub su: String,
    /// The demo process.
    pub pid: String,
}

impl DevChild {
    /// Starts `metalcu dev` on ports 0 with `data_dir` and `extra` arguments (e.g. `--module`),
    /// appending its stderr to `data_dir/../dev.stderr`; waits until it prints its addresses.
    pub fn start(data_dir: &Path, extra: &[&std::ffi::OsStr]) -> DevChild {
        let stderr_log = data_dir.with_extension("stderr");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&stderr_log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_metalcu"))
            .args(["dev", "--port", "0", "--su-port", "0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "warn,metalcu=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start metalcu dev");
        let stdout = child.stdout.take().unwrap();
        let mut me = DevChild { child, stderr_log, cu: String::new(), su: String::new(), pid: String::new() };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Keep draining even when nobody listens, so the child never blocks on stdout.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        while me.pid.is_empty() || me.cu.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!("metalcu dev did not print its addresses within {START_TIMEOUT:?}: {e}\n{}", me.stderr_tail())
            });
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |w: &str| words.iter().position(|x| *x == w).and_then(|i| words.get(i + 1));
            let addr = |u: Option<&&str>| u.and_then(|u| u.strip_prefix("http://")).map(str::to_string);
            if line.starts_with("metalcu dev: CU ") {
                me.cu = addr(after("CU")).unwrap_or_else(|| panic!("cannot parse {line:?}"));
                me.su = addr(after("scheduler")).unwrap_or_else(|| panic!("cannot parse {line:?}"));
            } else if line.starts_with("process ") {
                me.pid = words.get(1).map(|s| s.to_string()).unwrap_or_default();
            }
        }
        me
    }

    /// SIGKILL, then reap: no shutdown code runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `limit` for the exit status.
    pub fn terminate(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything the child (and earlier children on the same data directory) wrote to stderr.
    pub fn stderr_all(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The last 8000 characters of the child's stderr.
    pub fn stderr_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        log.chars().rev().take(8000).collect::<Vec<_>>().into_iter().rev().collect()
    }
}

impl Drop for DevChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- metalcu dev stderr (tail) ---\n{}\n---", self.stderr_tail());
        }
    }
}
