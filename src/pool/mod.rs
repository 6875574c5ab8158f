//! The evaluation worker pool: one OS thread per core (by default), each pinned to its core with
//! `core_affinity`, fed by a bounded crossbeam channel. The async side (HTTP, SU and gateway
//! fetches) hands wasm work to a worker with [`WorkerPool::run`] and awaits the answer; nothing
//! wasm runs on tokio's threads.
//!
//! Placement: a job carries a key (the process id). Its *home* worker is a stable hash of the key
//! ([`shard::home`]), the same on every run and every machine with the same worker count, so a
//! process keeps its cache-warm core. When the home worker is busy and another worker is idle
//! (running nothing, nothing queued), the job goes to the idle one instead; and a worker that
//! runs out of work takes the oldest queued job of a busy worker ([`worker`]). Either way a job
//! never waits behind another while a core is idle.
//!
//! Invariants:
//! - **Per-process order is the caller's**: the pool runs jobs of one key in the order submitted
//!   only if the caller submits a key's next job after the previous one finished. The runtime does
//!   (one evaluation of a process at a time, under the process's lock), so moving a queued job to
//!   another worker can never reorder a process's messages, and a process is only ever evaluated
//!   on one worker at a time.
//! - **Bounded**: each worker queues at most [`PoolConfig::queue_depth`] jobs; [`WorkerPool::run`]
//!   waits (asynchronously) for room, so a flood of requests backs up into the network side
//!   instead of growing memory. A job's queue slot is freed when a worker takes it.
//! - **Contained**: a job that panics answers [`PoolError::Panicked`]; its worker carries on.
//! - A job already queued runs even if its caller stops waiting (its result is dropped): state the
//!   job moved in is never lost half-way.

pub mod shard;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::Semaphore;

/// Jobs queued per worker by default.
pub const DEFAULT_QUEUE_DEPTH: usize = 256;
/// Most workers a pool may have.
pub const MAX_WORKERS: usize = 1024;
/// Most jobs one worker may queue.
pub const MAX_QUEUE_DEPTH: usize = 1 << 16;

/// How the pool is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Worker threads; `0` = one per CPU this process may run on.
    pub workers: usize,
    /// CPUs to pin the workers to, in order (worker `i` on `cpus[i % len]`); `None` = the CPUs
    /// this process may run on, in order.
    pub cpus: Option<Vec<usize>>,
    /// Pin each worker to its CPU (off: the scheduler places them).
    pub pin: bool,
    /// Jobs queued per worker before [`WorkerPool::run`] waits.
    pub queue_depth: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { workers: 0, cpus: None, pin: true, queue_depth: DEFAULT_QUEUE_DEPTH }
    }
}

impl PoolConfig {
    /// The CPUs the workers are pinned to, in order: the list given, else those this process may
    /// run on.
    pub fn cpu_list(&self) -> Vec<usize> {
        self.cpus.clone().unwrap_or_else(available_cpus)
    }

    /// The workers [`WorkerPool::new`] starts: the number given, else one per CPU of
    /// [`PoolConfig::cpu_list`] (at least one).
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => self.cpu_list().len().max(1),
            n => n,
        }
    }
}

/// Why a job did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("invalid worker pool setting: {0}")]
    Config(String),
    #[error("the evaluation job panicked: {0}")]
    Panicked(String),
    #[error("the worker pool is shut down")]
    Closed,
}

/// What a job leaves to do once its worker is marked free again: send the answer (so a caller
/// that submits its next job right away finds the worker idle).
type Deliver = Box<dyn FnOnce() + Send>;

/// A unit of work with its queue slot (released when a worker takes the job).
struct Job {
    run: Box<dyn FnOnce() -> Deliver + Send>,
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// One worker as the others and the submitters see it.
struct Slot {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    room: Arc<Semaphore>,
    /// Told once, when the pool is dropped: drain the queue and stop.
    stop_tx: Sender<()>,
    stop_rx: Receiver<()>,
    /// Running a job right now.
    busy: AtomicBool,
    /// When the job running now started, in µs since [`Shared::epoch`] plus one (0: none).
    started_us: AtomicU64,
    cpu: Option<usize>,
    ran: AtomicU64,
    /// Jobs this worker took from another worker's queue.
    stolen: AtomicU64,
    /// Jobs placed here although their home was another (busy) worker.
    placed_away: AtomicU64,
}

impl Slot {
    fn idle(&self) -> bool {
        !self.busy.load(Ordering::Acquire) && self.rx.is_empty()
    }
}

/// Counters of one worker (see [`WorkerPool::stats`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStats {
    pub worker: usize,
    /// The CPU the worker is pinned to (`None`: not pinned).
    pub cpu: Option<usize>,
    pub jobs_run: u64,
    pub jobs_stolen: u64,
    pub jobs_placed_away: u64,
    pub queued: usize,
    pub busy: bool,
}

struct Shared {
    slots: Vec<Slot>,
    epoch: std::time::Instant,
}

/// The pool. Cheap to clone; the threads stop when the last clone is dropped (after finishing
/// the jobs already queued).
#[derive(Clone)]
pub struct WorkerPool {
    shared: Arc<Shared>,
    _threads: Arc<worker::Threads>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool").field("workers", &self.workers()).finish()
    }
}

/// The CPUs this process may run on, in order (empty when the OS will not say).
pub fn available_cpus() -> Vec<usize> {
    core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect()
}

impl WorkerPool {
    /// Starts the workers. Pinning that the OS refuses (e.g. a CPU outside the cgroup's set) is
    /// logged and the worker runs unpinned.
    pub fn new(cfg: &PoolConfig) -> Result<WorkerPool, PoolError> {
        if cfg.cpus.as_ref().is_some_and(Vec::is_empty) {
            return Err(PoolError::Config("the CPU list is empty".into()));
        }
        let (cpus, workers) = (cfg.cpu_list(), cfg.worker_count());
        if workers > MAX_WORKERS {
            return Err(PoolError::Config(format!("{workers} workers: at most {MAX_WORKERS}")));
        }
        if cfg.queue_depth == 0 || cfg.queue_depth > MAX_QUEUE_DEPTH {
            return Err(PoolError::Config(format!("queue depth {}: 1 to {MAX_QUEUE_DEPTH}", cfg.queue_depth)));
        }
        let slots = (0..workers)
            .map(|i| {
                let (tx, rx) = crossbeam_channel::bounded(cfg.queue_depth);
                let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
                Slot {
                    tx,
                    rx,
                    stop_tx,
                    stop_rx,
                    room: Arc::new(Semaphore::new(cfg.queue_depth)),
                    busy: AtomicBool::new(false),
                    started_us: AtomicU64::new(0),
                    cpu: (cfg.pin && !cpus.is_empty()).then(|| cpus[i % cpus.len()]),
                    ran: AtomicU64::new(0),
                    stolen: AtomicU64::new(0),
                    placed_away: AtomicU64::new(0),
                }
            })
            .collect();
        let shared = Arc::new(Shared { slots, epoch: std::time::Instant::now() });
        let threads = worker::Threads::start(shared.clone())?;
        Ok(WorkerPool { shared, _threads: Arc::new(threads) })
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.shared.slots.len()
    }

    /// The worker `key`'s jobs go to when it is free.
    pub fn home(&self, key: &str) -> usize {
        shard::home(key, self.workers())
    }

    /// Where a job of `key` goes now: its home, unless the home is busy and another worker idle.
    fn place(&self, key: &str) -> usize {
        let home = self.home(key);
        let slots = &self.shared.slots;
        if slots[home].idle() {
            return home;
        }
        match (1..slots.len()).map(|d| (home + d) % slots.len()).find(|&i| slots[i].idle()) {
            Some(i) => {
                slots[i].placed_away.fetch_add(1, Ordering::Relaxed);
                i
            }
            None => home,
        }
    }

    /// Runs `f` on a worker and returns its value. Waits for queue room first (backpressure). If
    /// the caller stops waiting after the job was queued, the job still runs.
    pub async fn run<R, F>(&self, key: &str, f: F) -> Result<R, PoolError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let target = self.place(key);
        let slot = &self.shared.slots[target];
        let room = slot.room.clone().acquire_owned().await.map_err(|_| PoolError::Closed)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let run = Box::new(move || -> Deliver {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_text(&p));
            Box::new(move || {
                let _ = tx.send(out);
            })
        });
        // Room was reserved above, so the bounded channel has space: `try_send` cannot be Full.
        slot.tx.try_send(Job { run, slot: room }).map_err(|_| PoolError::Closed)?;
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(why)) => Err(PoolError::Panicked(why)),
            Err(_) => Err(PoolError::Closed),
        }
    }

    /// How long the longest-running job has run so far (`None`: every worker is idle). A worker
    /// whose job runs far past the engine's call deadline is wedged: the systemd watchdog stops
    /// pinging on it.
    pub fn longest_job(&self) -> Option<std::time::Duration> {
        let now = self.shared.epoch.elapsed().as_micros() as u64;
        self.shared
            .slots
            .iter()
            .map(|s| s.started_us.load(Ordering::Acquire))
            .filter(|&t| t > 0)
            .map(|t| std::time::Duration::from_micros(now.saturating_sub(t - 1)))
            .max()
    }

    /// Counters per worker.
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.shared
            .slots
            .iter()
            .enumerate()
            .map(|(worker, s)| WorkerStats {
                worker,
                cpu: s.cpu,
                jobs_run: s.ran.load(Ordering::Relaxed),
                jobs_stolen: s.stolen.load(Ordering::Relaxed),
                jobs_placed_away: s.placed_away.load(Ordering::Relaxed),
                queued: s.rx.len(),
                busy: s.busy.load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".into())
}

#[cfg(test)]
mod tests;
