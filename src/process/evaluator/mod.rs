//! Evaluation of processes: pull a process's messages from its scheduler in order, evaluate each
//! exactly once on the engine, persist every result with a blake3 hash of the memory after it.
//!
//! One [`Runtime`] per CU; one actor per process. A process's state ([`Loaded`]) sits in a slot
//! behind an async lock (FIFO: the actor's mailbox); every evaluation runs in its own spawned task
//! that owns that lock for the whole walk, so evaluations of a process are strictly serial, a
//! message is never evaluated twice however many requests ask for it at once, and a caller that
//! goes away (client hang-up, request timeout) only stops waiting — it never interrupts a walk.
//!
//! The state is taken out of its slot while the task works and put back only after a consistent
//! exit: the live instance is checked out for each call and must be checked back in. A task that
//! panics, is aborted, or loses the instance (a failed evaluation thread, a failed rollback, a
//! failed commit) leaves the slot empty, and the next request loads the process afresh as a
//! restart does (from its newest checkpoint that agrees with the store, else from the start) — a
//! message is never evaluated on a fresh instance once an earlier one has changed the memory.
//! Wasm runs on the pinned worker pool ([`crate::pool`]), keyed by process id.
//!
//! File checkpoints, residency (eviction under a memory budget) and shutdown are in
//! [`persist`]: checkpoints by count (mid-walk, after a commit), by time (after a walk), on
//! eviction and on shutdown; resume on load.
//!
//! Rollback without a per-call copy: the CU's rule (a call that throws or returns `Error` leaves
//! the memory as it was) needs the pre-call memory only when a call fails. The runtime keeps a
//! memory image every [`CHECKPOINT_EVERY`] successful messages (sparse: only its non-zero pages
//! cost RAM), or the checkpoint file last written or resumed from, plus the messages evaluated
//! since;
//! on a failure it resumes the image and replays them, and checks that the replay reproduces the
//! recorded state hash (a failed check is a determinism bug: the process stops with an error).
//!
//! Between two scheduled messages (and after the last, up to the target or the SU's "now") the
//! process's crons fire (§4.5, [`crons`]); assignments of existing transactions are completed from the
//! gateway (§2.5); a legacy process whose stream does not start with itself is started with a
//! synthesized spawn message (§4.4), evaluated but not stored.
//!
//! Scheduler pages overlap on the last handled millisecond and grow when more messages share it
//! than a page holds; long cron gaps are evaluated in bounded chunks.

mod crons;
mod persist;
mod prewarm;
mod validation;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::cron::{self, Cron};
use super::msgs::{dry_run_message, dry_run_refusal, hydrate_assignment, spawn_message};
use super::options::{Policy, module_options};
use super::residency::Residency;
use crate::engine::ModuleFormat;
use crate::engine::{Engine, Instance, LoadedModule, ProcessOptions};
use crate::gateway::Gateway;
use crate::gateway::drive::GatewayDrive;
use crate::metrics::Metrics;
use crate::pool::{PoolConfig, PoolError, WorkerPool};
use crate::store::{Evaluation, Position, Store, Usage};
use crate::su::hashchain::{self, Link};
use crate::su::message::{Scheduled, map_node, owner_address, tag};
use crate::su::scheduler::{PageQuery, Scheduler};
use crate::su::types::Process;

pub use persist::{Checkpointing, ShutdownReport};
pub use prewarm::{MAX_PREWARM, PrewarmReport};

/// Successful messages between two in-memory images kept for rollback.
pub const CHECKPOINT_EVERY: usize = 64;
/// Edges asked per scheduler page (`LOAD_MESSAGES_PAGE_SIZE`).
pub const PAGE_SIZE: u32 = 1000;
/// Smallest page asked for, whatever the setting: pages overlap on the last handled timestamp, so
/// a page of one edge could never reach past it.
pub const MIN_PAGE_SIZE: u32 = 2;
/// Largest page asked for when pages stop advancing because more messages than the page size share
/// one millisecond (the page size doubles up to this, then the scheduler is reported as stuck).
pub const MAX_PAGE_SIZE: u32 = crate::su::types::MAX_PAGE_EDGES as u32;
/// Most gateway blocks fetched for the block heights of one gap's crons.
pub const MAX_BLOCKS_PER_GAP: usize = 1_000_000;
/// Processes the runtime keeps state for at once (live, or with requests waiting), at least;
/// twice the live cap when that is more ([`Core::max_processes`]).
pub const MAX_PROCESSES: usize = 10_000;

/// A failure the HTTP layer turns into `{"error": message}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CuError {
    pub status: u16,
    pub message: String,
}

impl CuError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        CuError { status, message: message.into() }
    }
}

/// The live state of one process.
struct Loaded {
    /// This process's place among the processes holding an instance (released on drop).
    admitted: Option<tokio::sync::OwnedSemaphorePermit>,
    module: Arc<LoadedModule>,
    /// The module's id (checkpoints name it).
    module_id: String,
    /// Evaluations since the last checkpoint file, and when that was written (or the process
    /// loaded).
    ckpt_since: u64,
    ckpt_at: Instant,
    opts: ProcessOptions,
    env: Value,
    /// Process block height (hash chains are checked from 1,440,000 on).
    height: u64,
    /// The live memory; `None` while checked out for a call, or while `blank`.
    instance: Option<Instance>,
    /// Nothing has changed the memory yet: a fresh instance is the process's state.
    blank: bool,
    /// The instance is out for a call and not yet back: if the task stops here, this state is
    /// not put back in its slot.
    checked_out: bool,
    /// A commit failed: evaluations this state counts as done are not in the store, so this state
    /// is not put back in its slot.
    store_behind: bool,
    last: Option<Position>,
    link: Option<Link>,
    last_hash: Option<[u8; 32]>,
    /// Memory image after the message at `checkpoint.1` (None: start from a cold instance).
    checkpoint: Option<(persist::RollbackImage, Position)>,
    /// `(timestamp, nonce)` of the last scheduled message handled (evaluated, or skipped as a
    /// duplicate assignment).
    handled: Option<(i64, u64)>,
    /// Evaluations not yet committed to the store (one commit per batch: a page of catch-up
    /// costs one fsync, not one per message). Flushed before `evaluate_to` returns.
    pending: Vec<Evaluation>,
    /// Messages evaluated successfully since the checkpoint, to replay on rollback.
    since: Vec<Value>,
    metering: bool,
    /// The process as its SU describes it (spawn synthesis, cron origin, owner).
    process: Process,
    /// Address of the process owner (cron messages come from it).
    owner: String,
    crons: Vec<Cron>,
    /// Block height in force at `last` (the block of the last evaluated message).
    block_height: u64,
    /// The synthesized spawn message of a legacy process has been evaluated.
    spawned: bool,
    /// A validation replay's state ([`validation`]): its evaluations are dropped, never stored
    /// or checkpointed.
    scratch: bool,
}

/// A process's slot: empty until loaded, and again after a walk that did not end consistently.
type Slot = Arc<tokio::sync::Mutex<Option<Loaded>>>;

/// The evaluation core of a CU (cheap handle over the shared [`Core`]).
pub struct Runtime<S: Scheduler, G: Gateway> {
    core: Arc<Core<S, G>>,
}

impl<S: Scheduler, G: Gateway> Clone for Runtime<S, G> {
    fn clone(&self) -> Self {
        Runtime { core: self.core.clone() }
    }
}

/// What the evaluation tasks share.
struct Core<S: Scheduler, G: Gateway> {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    su: Arc<S>,
    gateway: Arc<G>,
    policy: Policy,
    /// Most cron ticks evaluated per chunk of a long gap ([`cron::MAX_TICKS_PER_CHUNK`]).
    cron_chunk: usize,
    processes: std::sync::Mutex<HashMap<String, Slot>>,
    /// Evaluations, gas, resident processes (see `crate::metrics`).
    metrics: Arc<Metrics>,
    /// Where wasm runs: the pinned worker threads.
    pool: WorkerPool,
    /// File checkpoints (restart, eviction, shutdown), if on.
    checkpoints: Option<persist::Checkpointing>,
    /// Which processes stay in memory.
    residency: std::sync::Mutex<Residency>,
    /// One permit per process holding an instance: the engine's pool slots less the headroom.
    admission: Arc<tokio::sync::Semaphore>,
    /// One permit per dry-run fork alive (the headroom's share for forks).
    forks: Arc<tokio::sync::Semaphore>,
    /// Most processes in `processes`: [`MAX_PROCESSES`], or twice the live cap if more.
    max_processes: usize,
    /// Hydration of processes new to this CU from Arweave checkpoints, if on.
    arweave: Option<persist::ArweaveHydration>,
    /// Checkpoints verified in bulk by [`Runtime::prewarm`], taken by [`Core::resume`].
    prescanned: prewarm::Prescanned,
}

fn pool_error(e: PoolError) -> CuError {
    match e {
        PoolError::Closed => CuError::new(503, "the CU is shutting down"),
        other => CuError::new(500, format!("evaluation task: {other}")),
    }
}

fn su_error(e: crate::su::scheduler::SuError) -> CuError {
    CuError::new(e.status(), e.to_string())
}

/// Data as text, as `Response.text()` decodes it: UTF-8 with replacement characters, a leading
/// byte-order mark dropped.
fn text_of(data: &[u8]) -> String {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    String::from_utf8_lossy(data).into_owned()
}

/// Whether `s` is the process's own spawn message (the first edge of a post-aop6 process).
fn is_spawn(s: &Scheduled) -> bool {
    !s.is_assignment
        && s.msg
            .get("Tags")
            .and_then(Value::as_array)
            .is_some_and(|tags| tags.iter().any(|t| t["name"] == "Type" && t["value"] == "Process"))
}

/// The result object `/result` serves (cu-protocol §1.4, §4.3 normalisation).
fn normalise(outcome: &Result<Map<String, Value>, String>, gas: u64, metering: bool) -> Value {
    let mut r = Map::new();
    match outcome {
        Ok(m) => {
            for k in ["Messages", "Assignments", "Spawns"] {
                r.insert(k.into(), m.get(k).filter(|v| v.is_array()).cloned().unwrap_or(Value::Array(vec![])));
            }
            let output = match m.get("Output") {
                None | Some(Value::Null) => Value::String(String::new()),
                Some(Value::Number(n)) => Value::String(crate::engine::jsjson::stringify(&Value::Number(n.clone()))),
                Some(v) => v.clone(),
            };
            r.insert("Output".into(), output);
            if let Some(e) = m.get("Error").filter(|e| !e.is_null()) {
                r.insert("Error".into(), e.clone());
            }
        }
        Err(thrown) => {
            for k in ["Messages", "Assignments", "Spawns"] {
                r.insert(k.into(), Value::Array(vec![]));
            }
            r.insert("Output".into(), Value::String(String::new()));
            r.insert("Error".into(), Value::String(thrown.clone()));
        }
    }
    if metering {
        r.insert("GasUsed".into(), Value::from(gas));
    }
    Value::Object(r)
}

impl<S: Scheduler, G: Gateway> Core<S, G> {
    fn slot(&self, pid: &str) -> Result<Slot, CuError> {
        self.policy.check_process(pid).map_err(|e| CuError::new(403, e))?;
        let mut map = self.processes.lock().expect("process map");
        if !map.contains_key(pid) && map.len() >= self.max_processes {
            return Err(CuError::new(503, format!("this CU holds {} processes; try again later", self.max_processes)));
        }
        Ok(map.entry(pid.to_string()).or_default().clone())
    }

    async fn load(&self, pid: &str) -> Result<Loaded, CuError> {
        let process = self.su.process(pid).await.map_err(|e| CuError::new(e.status(), e.to_string()))?;
        for (name, want) in [("Data-Protocol", "ao"), ("Type", "Process")] {
            if !process.tags.iter().any(|t| t.name == name && t.value == want) {
                return Err(CuError::new(400, format!("Tag '{name}': value '{want}' was not found on process")));
            }
        }
        self.policy.check_owner(&owner_address(&process.owner)).map_err(|e| CuError::new(403, e))?;
        let module_id = tag(&process.tags, "Module")
            .ok_or_else(|| CuError::new(400, "Tag 'Module': value was not found on process"))?
            .to_string();
        let gw = |e: crate::gateway::GatewayError| CuError::new(e.status(), e.to_string());
        let module = self.gateway.transaction(&module_id).await.map_err(gw)?;
        let opts = module_options(pid, &module_id, &process.tags, &module.tags, &self.policy)
            .map_err(|e| CuError::new(e.status(), e.to_string()))?;
        let wasm = self.gateway.raw(&module_id).await.map_err(gw)?;
        let engine = self.engine.clone();
        let format = opts.format;
        let loaded = tokio::task::spawn_blocking(move || engine.load(&wasm, format))
            .await
            .map_err(|e| CuError::new(500, format!("module load task: {e}")))?
            .map_err(|e| CuError::new(422, format!("module {module_id}: {e}")))?;
        let tags_json = |tags: &[crate::su::types::Tag]| serde_json::to_value(tags).unwrap_or(Value::Array(vec![]));
        let env = serde_json::json!({
            "Process": { "Id": pid, "Owner": owner_address(&process.owner), "Tags": tags_json(&process.tags) },
            "Module": { "Id": module_id, "Owner": owner_address(&module.owner), "Tags": tags_json(&module.tags) },
        });
        let height = process.block.trim().parse::<u64>().unwrap_or(0);
        let wants_drive = opts.extensions.iter().any(|e| e == "WeaveDrive") || format == ModuleFormat::Wasm64;
        let drive: Option<Arc<dyn crate::engine::weavedrive::WeaveDrive>> = wants_drive
            .then(|| Arc::new(GatewayDrive::new(self.gateway.clone(), tokio::runtime::Handle::current())) as Arc<_>);
        let crons = cron::parse_crons(&process.tags).map_err(|e| CuError::new(422, format!("process {pid}: {e}")))?;
        let owner = owner_address(&process.owner);
        Ok(Loaded {
            admitted: None,
            module_id: module_id.clone(),
            ckpt_since: 0,
            ckpt_at: Instant::now(),
            owner,
            crons,
            block_height: height,
            spawned: false,
            blank: true,
            checked_out: false,
            store_behind: false,
            handled: None,
            pending: Vec::new(),
            process,
            metering: format.instrumented(),
            module: loaded,
            opts: ProcessOptions {
                memory_limit: self.policy.memory_max,
                compute_limit: opts.compute_limit,
                weavedrive: drive,
            },
            env,
            height,
            instance: None,
            last: None,
            link: None,
            last_hash: None,
            checkpoint: None,
            since: Vec::new(),
            scratch: false,
        })
    }

    /// One evaluation task: owns the process's slot (`guard`) for the whole walk. Loads the
    /// process if its slot is empty, walks it to `to`, commits, and answers `then` on the state
    /// reached; puts the state back only if it is consistent (see the module doc).
    async fn session<T, F>(
        self: Arc<Self>,
        mut guard: tokio::sync::OwnedMutexGuard<Option<Loaded>>,
        pid: String,
        to: Option<i64>,
        then: F,
    ) -> Result<T, CuError>
    where
        F: FnOnce(&Self, &Loaded, Option<Evaluation>) -> Result<T, CuError>,
    {
        let mut p = match guard.take() {
            Some(p) => p,
            None => self.load_live(&pid).await?,
        };
        let walked = self.walk(&pid, &mut p, to).await;
        // What was evaluated before an error is stored too (e.g. up to a broken hash chain).
        let flushed = self.flush(&mut p);
        let keep = !p.checked_out && !p.store_behind;
        let out = walked.and(flushed).and_then(|()| {
            let last = match &p.last {
                Some(pos) => self.store.at(&pid, pos).map_err(|e| CuError::new(500, e.to_string()))?,
                None => None,
            };
            then(&self, &p, last)
        });
        if keep {
            // Committed: a checkpoint now can never be ahead of the store.
            self.checkpoint_if_due(&pid, &mut p, false).await;
        }
        if keep && !p.checked_out {
            let resident = p.instance.as_ref().map_or(0, Instance::resident_bytes);
            *guard = Some(p);
            drop(guard);
            self.settle_residency(&pid, resident).await;
        } else {
            self.metrics.process_unloaded();
            tracing::warn!(
                process_id = pid,
                "process state not consistent after an error; it reloads on the next request"
            );
        }
        out
    }

    /// Loads `pid` into a live instance: its place among the live processes ([`Core::admit`]),
    /// its process and module, then its newest usable checkpoint ([`Core::resume`]).
    async fn load_live(&self, pid: &str) -> Result<Loaded, CuError> {
        let admitted = self.admit(pid).await?;
        let mut p = self.load(pid).await?;
        p.admitted = Some(admitted);
        self.resume(pid, &mut p).await?;
        self.metrics.process_loaded();
        Ok(p)
    }

    /// Commits the pending evaluations; on an error none of them count as stored and the
    /// process must reload.
    fn flush(&self, p: &mut Loaded) -> Result<(), CuError> {
        if p.scratch {
            // A validation replay: nothing is stored (deduplication then sees the last page).
            if p.pending.len() >= crate::store::MAX_PAGE {
                p.pending.clear();
            }
            return Ok(());
        }
        if p.pending.is_empty() {
            return Ok(());
        }
        let r = self.store.put_batch(&p.pending).map_err(|e| CuError::new(500, e.to_string()));
        p.pending.clear();
        p.store_behind |= r.is_err();
        r
    }

    /// Evaluates forward to `to` (see [`Runtime::evaluate_to`]), leaving evaluations pending.
    async fn walk(&self, pid: &str, p: &mut Loaded, to: Option<i64>) -> Result<(), CuError> {
        // Crons fire up to the target, or up to the SU's clock. The clock is read before the page
        // and bounds it, so no message can later be scheduled before a cron already evaluated.
        let horizon = match to {
            Some(t) => Some(t),
            None if !p.crons.is_empty() => Some(self.su.timestamp(pid).await.map_err(su_error)?.0),
            None => None,
        };
        // Pages overlap on the last handled millisecond (`from` is exclusive), so messages sharing
        // it are never skipped; when more of them than a page holds were handled already, the
        // page grows until it reaches past them.
        let base = self.policy.page_size.max(MIN_PAGE_SIZE);
        let mut limit = base;
        loop {
            let from = p.handled.map(|(ts, _)| ts).max(p.last.as_ref().map(|l| l.timestamp)).map(|ts| ts - 1);
            let q = PageQuery { from, to: horizon, limit };
            let page = self.su.page(pid, q).await.map_err(su_error)?;
            let mut progressed = false;
            for edge in &page.edges {
                let s = map_node(&edge.node).map_err(|e| CuError::new(502, e.to_string()))?;
                if p.handled.is_some_and(|(_, nonce)| s.nonce <= nonce) {
                    continue; // already handled (pages overlap on the boundary timestamp)
                }
                if p.handled.is_none() && !p.spawned && !is_spawn(&s) {
                    self.spawn_legacy(pid, p).await?;
                }
                self.crons_until(pid, p, s.timestamp).await?;
                self.scheduled(pid, p, s).await?;
                progressed = true;
            }
            if !page.page_info.has_next_page {
                break;
            }
            if progressed {
                limit = base;
            } else if limit < MAX_PAGE_SIZE.max(base) {
                limit = limit.saturating_mul(2).min(MAX_PAGE_SIZE.max(base));
            } else {
                // The largest page brings nothing new: the scheduler is not advancing; asking
                // again with the same bounds would loop forever.
                return Err(CuError::new(
                    502,
                    format!(
                        "scheduler page for process {pid} did not advance past nonce {:?} ({limit} edges asked)",
                        p.handled.map(|h| h.1)
                    ),
                ));
            }
        }
        if p.handled.is_none() && !p.spawned {
            self.spawn_legacy(pid, p).await?;
        }
        if let Some(h) = horizon {
            self.crons_until(pid, p, h).await?;
        }
        Ok(())
    }

    /// Evaluates one scheduled message or assignment `s` (hydrated from the gateway if needed),
    /// after checking its place in the hash chain.
    async fn scheduled(&self, pid: &str, p: &mut Loaded, s: Scheduled) -> Result<(), CuError> {
        let id = s.msg.get("Id").and_then(Value::as_str).unwrap_or_default().to_string();
        hashchain::verify(p.link.as_ref(), &s.hash_chain, &id, p.height)
            .map_err(|e| CuError::new(422, e.to_string()))?;
        debug_assert!(p.handled.is_none_or(|(_, n)| s.nonce > n), "nonces strictly increase");
        let link = Link { assignment_id: s.assignment_id.clone(), hash_chain: s.hash_chain.clone() };
        let height = s.msg.get("Block-Height").and_then(Value::as_u64).unwrap_or(0);
        let msg = if s.is_assignment {
            // Deduplication (§4.7): a transaction assigned again is not evaluated again.
            let pending = p.pending.iter().find(|e| e.message_id.as_deref() == Some(id.as_str())).cloned();
            let earlier = match pending {
                Some(e) => Some(e),
                None => self.store.by_message(pid, &id).map_err(|e| CuError::new(500, e.to_string()))?,
            };
            if earlier.is_some_and(|e| e.position.nonce < s.nonce) {
                tracing::debug!(process_id = pid, message_id = id, nonce = s.nonce, "assignment seen before; skipped");
                p.link = Some(link);
                p.handled = Some((s.timestamp, s.nonce));
                return Ok(());
            }
            self.hydrate(&id, s.msg, &s.exclude).await?
        } else {
            s.msg
        };
        let position = Position { timestamp: s.timestamp, nonce: s.nonce, cron: None };
        self.evaluate_one(pid, p, Value::Object(msg), Some(id), position, height).await?;
        p.link = Some(link);
        p.handled = Some((s.timestamp, s.nonce));
        p.block_height = height;
        if self.checkpoint_due_by_count(p) {
            // Mid-walk, so a long catch-up is checkpointed as it goes.
            self.checkpoint_if_due(pid, p, false).await;
        }
        Ok(())
    }

    /// The assignment of existing transaction `id`, completed from the gateway (§2.5).
    async fn hydrate(
        &self,
        id: &str,
        msg: Map<String, Value>,
        exclude: &[String],
    ) -> Result<Map<String, Value>, CuError> {
        let gw = |e: crate::gateway::GatewayError| CuError::new(e.status(), e.to_string());
        let tx = self.gateway.transaction(id).await.map_err(gw)?;
        let data = if exclude.iter().any(|e| e == "Data") {
            None
        } else {
            Some(text_of(&self.gateway.raw(id).await.map_err(gw)?))
        };
        Ok(hydrate_assignment(msg, &tx, data, exclude))
    }

    /// Starts a legacy process, whose stream does not begin with itself, with a synthesized
    /// spawn message (§4.4): evaluated, not stored.
    async fn spawn_legacy(&self, pid: &str, p: &mut Loaded) -> Result<(), CuError> {
        let gw = |e: crate::gateway::GatewayError| CuError::new(e.status(), e.to_string());
        let data = text_of(&self.gateway.raw(pid).await.map_err(gw)?);
        let msg = Value::Object(spawn_message(&p.process, p.height, data));
        let instance = self.checkout(p)?;
        let env = p.env.clone();
        let call = msg.clone();
        let (instance, out) = self
            .pool
            .run(pid, move || {
                let mut instance = instance;
                let out = instance.handle(&call, &env);
                (instance, out)
            })
            .await
            .map_err(pool_error)?;
        if out.failed() {
            // The reference keeps the pre-call (empty) memory: start again from a fresh instance.
            tracing::warn!(
                process_id = pid,
                "the synthesized spawn message failed; the process starts from empty memory"
            );
            drop(instance);
            debug_assert!(p.blank);
            p.checked_out = false;
        } else {
            self.checkin(p, instance);
            p.since.push(msg);
        }
        p.spawned = true;
        Ok(())
    }

    /// The live instance, out for one call: a fresh one while nothing has changed the memory.
    /// The caller checks it (or the rolled-back memory) back in; if it never does, the process
    /// reloads rather than carry on without its memory.
    fn checkout(&self, p: &mut Loaded) -> Result<Instance, CuError> {
        debug_assert!(!p.checked_out, "one call at a time");
        let instance = match p.instance.take() {
            Some(i) => i,
            None if p.blank => self.fresh(p, None)?,
            None => {
                p.checked_out = true;
                return Err(CuError::new(
                    500,
                    format!("process memory after {:?} is missing; the process reloads", p.last),
                ));
            }
        };
        p.checked_out = true;
        Ok(instance)
    }

    fn checkin(&self, p: &mut Loaded, instance: Instance) {
        p.instance = Some(instance);
        p.blank = false;
        p.checked_out = false;
    }

    async fn evaluate_one(
        &self,
        pid: &str,
        p: &mut Loaded,
        msg: Value,
        message_id: Option<String>,
        position: Position,
        block_height: u64,
    ) -> Result<(), CuError> {
        debug_assert!(p.last.as_ref().is_none_or(|l| *l < position), "positions strictly increase");
        let instance = self.checkout(p)?;
        let env = p.env.clone();
        let msg_for_call = msg.clone();
        let (instance, out, hash) = self
            .pool
            .run(pid, move || {
                let mut instance = instance;
                let out = instance.handle(&msg_for_call, &env);
                let hash = instance.state_hash();
                (instance, out, hash)
            })
            .await
            .map_err(pool_error)?;
        let result = normalise(&out.result, out.accounting.gas, p.metering);
        self.metrics.evaluated(pid, message_id.as_deref(), &position, &out.accounting, out.failed());
        let state_hash = if out.failed() {
            drop(instance);
            let (restored, h) = self.rollback(p).await?;
            if p.blank {
                // Nothing before this call changed the memory: the rolled-back state is a fresh
                // instance, and stays `blank`.
                p.instance = Some(restored);
                p.checked_out = false;
            } else {
                self.checkin(p, restored);
            }
            h
        } else {
            self.checkin(p, instance);
            p.since.push(msg);
            p.last_hash = Some(hash);
            if p.since.len() >= CHECKPOINT_EVERY {
                let live = p.instance.as_ref().expect("just checked in");
                let image = match live.sparse_image() {
                    Ok(m) => persist::RollbackImage::Sparse(m),
                    Err(e) => {
                        tracing::debug!(process_id = pid, "no sparse rollback image ({e}); a full copy instead");
                        persist::RollbackImage::Owned(live.memory_image())
                    }
                };
                p.checkpoint = Some((image, position.clone()));
                p.since.clear();
            }
            hash
        };
        let e = Evaluation {
            process_id: pid.to_string(),
            message_id,
            position: position.clone(),
            block_height,
            result,
            state_hash,
            gas: out.accounting.gas,
            usage: Usage::of(&out.accounting),
        };
        p.pending.push(e);
        p.last = Some(position);
        p.ckpt_since += 1;
        // A checkpoint due by count is written by the caller once the link and block height of
        // this evaluation are recorded; its evaluations are committed first.
        if p.pending.len() >= crate::store::MAX_PAGE || self.checkpoint_due_by_count(p) {
            self.flush(p)?;
        }
        Ok(())
    }

    fn fresh(&self, p: &Loaded, image: Option<&[u8]>) -> Result<Instance, CuError> {
        let r = match image {
            Some(img) => self.engine.instantiate_image(&p.module, p.opts.clone(), img),
            None => self.engine.instantiate(&p.module, p.opts.clone()),
        };
        r.map_err(|e| CuError::new(500, format!("process instance: {e}")))
    }

    /// The memory as it was before the failed call: the last image plus a replay of the messages
    /// since; checked against the recorded state hash.
    async fn rollback(&self, p: &Loaded) -> Result<(Instance, [u8; 32]), CuError> {
        let image = match &p.checkpoint {
            Some((img, _)) => Some(img.memory().await?),
            None => None,
        };
        let mut instance = self.fresh(p, image.as_ref().map(persist::ImageBytes::bytes))?;
        drop(image);
        let (env, replay, want) = (p.env.clone(), p.since.clone(), p.last_hash);
        let key = p.process.process_id.clone();
        let (instance, got) = self
            .pool
            .run(&key, move || {
                for m in &replay {
                    instance.handle(m, &env);
                }
                let h = instance.state_hash();
                (instance, h)
            })
            .await
            .map_err(pool_error)?;
        if let Some(want) = want
            && want != got
        {
            return Err(CuError::new(
                500,
                "rollback replay did not reproduce the recorded state: evaluation is not deterministic",
            ));
        }
        Ok((instance, got))
    }
}

impl<S: Scheduler, G: Gateway> Runtime<S, G> {
    /// A runtime over `engine`, persisting into `store`, reading from `su` and `gateway`.
    pub fn new(engine: Arc<Engine>, store: Arc<dyn Store>, su: Arc<S>, gateway: Arc<G>, policy: Policy) -> Self {
        let core = Core {
            engine,
            store,
            su,
            gateway,
            policy,
            cron_chunk: cron::MAX_TICKS_PER_CHUNK,
            processes: std::sync::Mutex::new(HashMap::new()),
            metrics: Arc::new(Metrics::new()),
            pool: WorkerPool::new(&PoolConfig::default()).expect("the default worker pool starts"),
            checkpoints: None,
            residency: std::sync::Mutex::new(Residency::new(u64::MAX, None)),
            admission: Arc::new(tokio::sync::Semaphore::new(1)),
            forks: Arc::new(tokio::sync::Semaphore::new(1)),
            max_processes: MAX_PROCESSES,
            prescanned: Default::default(),
            arweave: None,
        };
        let core = Core::with_instance_cap(core);
        Runtime { core: Arc::new(core) }
    }

    /// The runtime with `change` applied to its core, and the instance cap recomputed from the
    /// engine and the pool. Builders only: `what` names the builder called after sharing.
    fn reconfigure(self, what: &str, change: impl FnOnce(&mut Core<S, G>)) -> Self {
        let mut core = Arc::into_inner(self.core).unwrap_or_else(|| panic!("{what} before the runtime is shared"));
        change(&mut core);
        Runtime { core: Arc::new(Core::with_instance_cap(core)) }
    }

    /// The same runtime evaluating long cron gaps in chunks of at most `ticks` ticks (default
    /// [`cron::MAX_TICKS_PER_CHUNK`]; at least 1). For tests of the chunking.
    pub fn with_cron_chunk(self, ticks: usize) -> Self {
        self.reconfigure("with_cron_chunk", |core| core.cron_chunk = ticks.max(1))
    }

    /// This runtime, evaluating on `pool` instead of a default one (one pinned worker per CPU).
    pub fn with_pool(self, pool: WorkerPool) -> Self {
        self.reconfigure("with_pool", |core| core.pool = pool)
    }

    /// This runtime, writing file checkpoints into `store` by `policy` and resuming processes
    /// from them (off by default).
    pub fn with_checkpoints(
        self,
        store: Arc<crate::checkpoint::CheckpointStore>,
        policy: crate::checkpoint::CheckpointPolicy,
    ) -> Self {
        self.reconfigure("with_checkpoints", |core| core.checkpoints = Some(Checkpointing { store, policy }))
    }

    /// This runtime, keeping at most `budget` resident bytes of process memory and letting
    /// processes idle for `ttl` go (default: no limit).
    pub fn with_residency(self, budget: u64, ttl: Option<Duration>) -> Self {
        self.reconfigure("with_residency", |core| core.residency = std::sync::Mutex::new(Residency::new(budget, ttl)))
    }

    /// The worker pool evaluations run on.
    pub fn pool(&self) -> &WorkerPool {
        &self.core.pool
    }

    /// Processes held in memory now, and the resident bytes charged to them.
    pub fn residency(&self) -> (usize, u64) {
        let r = self.core.residency.lock().expect("residency lock");
        (r.len(), r.total())
    }

    /// SIGTERM: lets evaluations in flight finish and checkpoints every process that evaluated
    /// since its last checkpoint, within `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.core.shutdown(deadline).await
    }

    /// This runtime, recording into `metrics` (shared with the HTTP server and the SU client)
    /// instead of its own.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        self.reconfigure("with_metrics", |core| core.metrics = metrics)
    }

    /// The metrics this runtime records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.core.metrics
    }

    /// The store results are written to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.core.store
    }

    /// 403 when process `pid` may not be served here (`ALLOW_PROCESSES`, `RESTRICT_PROCESSES`).
    pub fn check_access(&self, pid: &str) -> Result<(), CuError> {
        self.core.policy.check_process(pid).map_err(|e| CuError::new(403, e))
    }

    /// Runs one evaluation of process `pid` up to `to` in its own task (see the module doc) and
    /// answers `then` on the state reached. Waiting for the process's lock and for the task may be
    /// abandoned at any point; the walk itself is never interrupted by it.
    async fn run<T, F>(&self, pid: &str, to: Option<i64>, then: F) -> Result<T, CuError>
    where
        T: Send + 'static,
        F: FnOnce(&Core<S, G>, &Loaded, Option<Evaluation>) -> Result<T, CuError> + Send + 'static,
    {
        let slot = self.core.slot(pid)?;
        let guard = slot.lock_owned().await;
        let task = tokio::spawn(self.core.clone().session(guard, pid.to_string(), to, then));
        task.await.map_err(|e| {
            tracing::error!(process_id = pid, "evaluation task failed: {e}");
            CuError::new(500, format!("evaluation of process {pid} failed; it reloads on the next request"))
        })?
    }

    /// Evaluates process `pid` forward through every scheduled message with a timestamp up to
    /// `to` (all of them if `None`), with the crons that fire on the way; returns the last
    /// evaluation, if any.
    pub async fn evaluate_to(&self, pid: &str, to: Option<i64>) -> Result<Option<Evaluation>, CuError> {
        self.run(pid, to, |_, _, last| Ok(last)).await
    }

    /// `/result`: the stored evaluation of `message_id`, evaluating the process up to it first.
    /// `message_id == pid` is the process's own spawn message (§1.4), placed by the process's
    /// metadata (its timestamp, nonce 0).
    pub async fn result(&self, pid: &str, message_id: &str) -> Result<Value, CuError> {
        self.check_access(pid)?;
        let store = &self.core.store;
        let stored = || store.by_message(pid, message_id).map_err(|e| CuError::new(500, e.to_string()));
        if let Some(e) = stored()? {
            return Ok(e.result);
        }
        let (timestamp, nonce) = if message_id == pid {
            (self.core.su.process(pid).await.map_err(su_error)?.timestamp, 0)
        } else {
            let node = self.core.su.message(pid, message_id).await.map_err(su_error)?;
            let s = map_node(&node).map_err(|e| CuError::new(502, e.to_string()))?;
            (s.timestamp, s.nonce)
        };
        let last = self.evaluate_to(pid, Some(timestamp)).await?;
        match stored()? {
            Some(e) => Ok(e.result),
            None => Err(too_early(&format!("nonce {nonce}"), last.as_ref())),
        }
    }

    /// `/state`: the memory after evaluating up to `to` (all scheduled messages if `None`), and the
    /// position it is at. 425 when the process's memory is already past `to` (no rewind).
    pub async fn state(&self, pid: &str, to: Option<i64>) -> Result<(Vec<u8>, Option<Evaluation>), CuError> {
        let pid_owned = pid.to_string();
        self.run(pid, to, move |_, p, last| {
            if let (Some(t), Some(at)) = (to, &p.last)
                && at.timestamp > t
            {
                return Err(too_early(&format!("timestamp {t}"), last.as_ref()));
            }
            let memory = p.instance.as_ref().map(Instance::memory_image);
            memory.map(|m| (m, last)).ok_or_else(|| CuError::new(404, format!("process {pid_owned} has no state yet")))
        })
        .await
    }

    /// `/dry-run`: evaluates `msg` on a copy of the state after message `to` (the latest state if
    /// `None`); nothing is stored. The CU never rewinds: 425 if the process is already past `to`.
    /// A message without `Owner` or `Tags` is refused (400) before any work, as the reference's
    /// message schema refuses it.
    pub async fn dry_run(&self, pid: &str, msg: Map<String, Value>, to: Option<&str>) -> Result<Value, CuError> {
        self.check_access(pid)?;
        if let Some(refusal) = dry_run_refusal(&msg) {
            return Err(CuError::new(400, refusal));
        }
        let target = match to {
            Some(message_id) => {
                let node = self.core.su.message(pid, message_id).await.map_err(su_error)?;
                let s = map_node(&node).map_err(|e| CuError::new(502, e.to_string()))?;
                Some((s.timestamp, s.nonce))
            }
            None => None,
        };
        // A fork holds an instance of the engine's pool: at most the headroom's share at once.
        let _fork_slot =
            self.core.forks.clone().acquire_owned().await.map_err(|_| CuError::new(503, "shutting down"))?;
        let (mut fork, env, metering, last) = self
            .run(pid, target.map(|t| t.0), move |core, p, last| {
                if let (Some((ts, nonce)), Some(at)) = (target, &p.last)
                    && (at.timestamp, at.nonce) > (ts, nonce)
                {
                    return Err(too_early(&format!("nonce {nonce}"), last.as_ref()));
                }
                // The fork is restored straight from the live memory (one copy, zero pages skipped).
                let fork = core.fresh(p, p.instance.as_ref().map(Instance::memory))?;
                Ok((fork, p.env.clone(), p.metering, last))
            })
            .await?;
        let msg = Value::Object(dry_run_message(msg, pid, last.map(|l| (l.position.timestamp, l.block_height))));
        let out = self.core.pool.run(pid, move || fork.handle(&msg, &env)).await.map_err(pool_error)?;
        self.core.metrics.dry_run(pid, &out.accounting, out.failed());
        Ok(normalise(&out.result, out.accounting.gas, metering))
    }
}

/// The 425 of a request for a point the process's memory is already past (§4.10; no rewind).
fn too_early(what: &str, latest: Option<&Evaluation>) -> CuError {
    let latest = latest.map(|e| e.position.nonce).unwrap_or(0);
    CuError::new(425, format!("message at {what} not found cached, and earlier than latest known nonce {latest}"))
}
