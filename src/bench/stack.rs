//! The stack under test: `metalcu dev` started as a child process (so its memory is measured apart
//! from the load generator's), or a CU + local scheduler already running.
//!
//! The child is this same executable: `metalcu dev --port 0 --su-port 0 --data-dir <fresh>
//! [--module M --format F]`. Its first two stdout lines say where it listens and which process
//! and module it runs (`metalcu dev: CU http://A  scheduler http://B  data D`, then
//! `process <pid> (<name>, <format>, module <module id>)`); stderr goes to a log file beside its
//! data.
//!
//! Invariants: the child never outlives the bench — [`DevChild::stop`] asks it to stop (SIGINT,
//! which `metalcu dev` handles gracefully) and kills it after [`STOP_GRACE`]; `Drop` kills it on
//! every other path (errors, panics, Ctrl-C: the child has its own process group, so a terminal's
//! Ctrl-C reaches only the bench, which stops it); and on Linux it gets `SIGKILL` if the bench's
//! main thread dies first (`PR_SET_PDEATHSIG`), so [`DevChild::spawn`] must run on the main
//! thread. A temporary data directory is removed after the child is gone.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::args::Target;
use super::client;

/// Longest wait for the child to print where it listens (it compiles nothing before that).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Time the child gets to stop gracefully before it is killed, at least.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// Poll interval while waiting for the child.
const POLL: Duration = Duration::from_millis(20);
/// Lines of the child's log quoted in an error.
const LOG_TAIL_LINES: usize = 20;

/// What the bench knows about the stack.
#[derive(Debug, Clone, Serialize)]
pub struct StackInfo {
    /// `host:port` of the CU's API.
    pub cu: String,
    /// `host:port` of the local scheduler.
    pub su: String,
    /// The stack's own process.
    pub process: String,
    pub module_id: Option<String>,
    pub module_name: Option<String>,
    pub format: Option<String>,
    /// OS process id of the CU, if known (its memory is then reported).
    pub server_pid: Option<u32>,
    /// The child's data directory and log (child mode).
    pub data_dir: Option<PathBuf>,
    pub log: Option<PathBuf>,
}

/// The stack: a child or a running one.
pub struct Stack {
    pub info: StackInfo,
    pub child: Option<DevChild>,
}

impl Stack {
    /// Starts (or attaches to) the stack of `target`; `stopped` is polled while waiting.
    pub fn start(target: &Target, stopped: impl Fn() -> bool) -> anyhow::Result<Stack> {
        match target {
            Target::External { cu_url, su_url, process, server_pid } => Ok(Stack {
                info: StackInfo {
                    cu: client::authority(cu_url)?,
                    su: client::authority(su_url)?,
                    process: process.clone(),
                    module_id: None,
                    module_name: None,
                    format: None,
                    server_pid: *server_pid,
                    data_dir: None,
                    log: None,
                },
                child: None,
            }),
            Target::Child { module, data_dir, keep_data, workers, dev_args } => {
                let (root, temporary) = match data_dir {
                    Some(d) => (d.clone(), false),
                    None => (temp_root(), !keep_data),
                };
                let launch = Launch { module: module.clone(), workers: *workers, dev_args: dev_args.clone() };
                let (child, info) = DevChild::spawn(launch, root, temporary, stopped)?;
                Ok(Stack { info, child: Some(child) })
            }
        }
    }

    /// Starts the child again on the same data, after [`DevChild::stop_within`]: the new child
    /// takes over the data directory (and its removal, if temporary); the old log is kept as
    /// `dev.log.1`.
    pub fn restart(&mut self, stopped: impl Fn() -> bool) -> anyhow::Result<()> {
        let old = self.child.as_mut().ok_or_else(|| anyhow::anyhow!("no child to restart"))?;
        let (launch, root, temporary) = (old.launch.clone(), old.root.clone(), old.temporary);
        old.temporary = false;
        let _ = std::fs::rename(&old.log, old.log.with_extension("log.1"));
        let (child, info) = DevChild::spawn(launch, root, temporary, stopped)?;
        self.child = Some(child);
        self.info = info;
        Ok(())
    }
}

/// How the child is started (kept for a restart).
#[derive(Debug, Clone)]
pub struct Launch {
    pub module: Option<(PathBuf, String)>,
    pub workers: usize,
    /// Further arguments of `metalcu dev`.
    pub dev_args: Vec<String>,
}

fn temp_root() -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("metalcu-bench-{}-{nanos:09}", std::process::id()))
}

/// `metalcu dev` running as a child.
pub struct DevChild {
    child: Child,
    launch: Launch,
    root: PathBuf,
    log: PathBuf,
    /// Remove `root` once the child is gone.
    temporary: bool,
    exited: Option<ExitStatus>,
}

impl DevChild {
    /// Starts the child with its data in `root/dev` and its log in `root/dev.log`, and waits
    /// until it says where it listens. Call on the main thread (see the module doc).
    pub fn spawn(
        launch: Launch,
        root: PathBuf,
        temporary: bool,
        stopped: impl Fn() -> bool,
    ) -> anyhow::Result<(DevChild, StackInfo)> {
        std::fs::create_dir_all(&root).map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
        let data = root.join("dev");
        let log = root.join("dev.log");
        let log_file = std::fs::File::create(&log).map_err(|e| anyhow::anyhow!("{}: {e}", log.display()))?;
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(&exe);
        cmd.args(["dev", "--port", "0", "--su-port", "0", "--workers", &launch.workers.to_string(), "--data-dir"])
            .arg(&data);
        if let Some((m, f)) = &launch.module {
            cmd.arg("--module").arg(m).arg("--format").arg(f);
        }
        cmd.args(&launch.dev_args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log_file);
        detach(&mut cmd);
        let child = cmd.spawn().map_err(|e| anyhow::anyhow!("starting {} dev: {e}", exe.display()))?;
        let mut dev = DevChild { child, launch, root, log, temporary, exited: None };
        let stdout = dev.child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        // Reads every line (the pipe never fills); the first two are sent back.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let started = Instant::now();
        let mut lines = Vec::new();
        while lines.len() < 2 {
            if stopped() {
                anyhow::bail!("stopped while the server was starting");
            }
            match rx.recv_timeout(POLL) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < STARTUP_TIMEOUT => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    anyhow::bail!("metalcu dev did not start within {STARTUP_TIMEOUT:?}{}", dev.log_tail())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = dev.child.wait().ok();
                    dev.exited = status;
                    anyhow::bail!(
                        "metalcu dev exited before it was ready ({}){}",
                        status.map_or("status unknown".into(), |s| s.to_string()),
                        dev.log_tail()
                    )
                }
            }
        }
        let (cu, su) = parse_listen_line(&lines[0])
            .ok_or_else(|| anyhow::anyhow!("metalcu dev: unexpected first line {:?}", lines[0]))?;
        let (process, name, format, module_id) = parse_process_line(&lines[1])
            .ok_or_else(|| anyhow::anyhow!("metalcu dev: unexpected second line {:?}", lines[1]))?;
        let info = StackInfo {
            cu,
            su,
            process,
            module_id: Some(module_id),
            module_name: Some(name),
            format: Some(format),
            server_pid: Some(dev.child.id()),
            data_dir: Some(data),
            log: Some(dev.log.clone()),
        };
        Ok((dev, info))
    }

    /// The child's exit status if it has exited (a crash during the run).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Asks the child to stop (SIGINT), waits up to `grace` (stopping checkpoints every live
    /// process), then kills it. Returns how it ended: `None` = stopped cleanly.
    pub fn stop_within(&mut self, grace: Duration) -> Option<String> {
        if let Some(s) = self.exited() {
            return Some(format!("the server had exited during the run ({s}){}", self.log_tail()));
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: a signal to our own child, which has not been reaped (try_wait said so).
        unsafe { libc::kill(pid, libc::SIGINT) };
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Some(s) = self.exited() {
                return (!s.success()).then(|| format!("the server exited with {s} when stopped{}", self.log_tail()));
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        Some(format!("the server did not stop within {grace:?} of SIGINT and was killed"))
    }

    /// The last lines of the child's log, as an error suffix.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return String::new();
        }
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n  ");
        format!("; its log ({}) ends with:\n  {tail}", self.log.display())
    }

    /// The directory holding the child's data and log.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for DevChild {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Own process group (a terminal's Ctrl-C reaches only the bench) and, on Linux, death with the
/// bench.
fn detach(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// `metalcu dev: CU http://A  scheduler http://B  data D` → (A, B).
fn parse_listen_line(line: &str) -> Option<(String, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| {
        let i = words.iter().position(|w| *w == key)?;
        client::authority(words.get(i + 1)?).ok()
    };
    line.starts_with("metalcu dev:").then_some(())?;
    Some((after("CU")?, after("scheduler")?))
}

/// `process <pid> (<name>, <format>, module <id>)` → (pid, name, format, id).
fn parse_process_line(line: &str) -> Option<(String, String, String, String)> {
    let rest = line.strip_prefix("process ")?;
    let (pid, rest) = rest.split_once(" (")?;
    let inner = rest.strip_suffix(')')?;
    let (head, module) = inner.rsplit_once(", module ")?;
    let (name, format) = head.rsplit_once(", ")?;
    Some((pid.into(), name.into(), format.into(), module.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_dev_prints() {
        let l1 = "metalcu dev: CU http://127.0.0.1:39119  scheduler http://127.0.0.1:37145  data /tmp/x y";
        assert_eq!(parse_listen_line(l1), Some(("127.0.0.1:39119".into(), "127.0.0.1:37145".into())));
        assert_eq!(parse_listen_line("something else"), None);
        let l2 = "process 8BzJ-9P_a (echo, wasm32-unknown-emscripten4, module KIS50xy5-IKjRL)";
        assert_eq!(
            parse_process_line(l2),
            Some(("8BzJ-9P_a".into(), "echo".into(), "wasm32-unknown-emscripten4".into(), "KIS50xy5-IKjRL".into()))
        );
        let l3 = "process P (a, b (c), wasm32-unknown-emscripten2, module M)";
        assert_eq!(parse_process_line(l3).unwrap().1, "a, b (c)");
    }
}
