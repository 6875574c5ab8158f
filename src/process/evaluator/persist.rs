//! The runtime's memory beyond one walk: file checkpoints (written by policy, on eviction and on
//! shutdown; read back when a process is loaded), hydration of processes new to this CU from the
//! reference CU's Arweave checkpoints (§4.10 (e)), residency (least recently used processes leave
//! memory past the budget) and shutdown.
//!
//! Invariants:
//! - a checkpoint is written only after the evaluations it includes are committed to the store,
//!   so a checkpoint is never ahead of the results;
//! - a checkpoint is used only if the store holds an evaluation at its position with the same
//!   state hash, and it is not past the store's latest evaluation: memory and results agree, and
//!   everything after it is evaluated again and must match what is stored (the store refuses a
//!   different result at a position it holds). The one exception is a checkpoint flagged
//!   `hydrated` (written at once after an Arweave hydration, whose position has no stored
//!   evaluation by design): it is used only while the store holds no evaluation at or before
//!   its position, so no stored result can disagree with it;
//! - a failed write (disk full, unwritable directory) is logged and counted; evaluation and
//!   serving go on, and no partial file is left (the checkpoint store writes a temporary file and
//!   renames it);
//! - Arweave checkpoints are looked up only for a process with no stored evaluation and no
//!   usable file checkpoint; one is used only if [`arweave::download`] checked its memory
//!   against its record's SHA-256, and only as [`arweave::choose`] picks it (more than
//!   `STEPS + RETRIES` records: only the one the validation replays accept, see
//!   [`super::validation`]); every failure falls back to replaying from the scheduler. Messages up to the record are never
//!   evaluated here: `/result` of one answers 425, as the reference does. When file checkpoints
//!   are on, the hydrated memory is written as a local checkpoint at once (a failure is a
//!   warning), so a restart resumes from it without asking the gateway again;
//! - evicting a process drops its memory only after its checkpoint, if due, was attempted; a
//!   process whose checkpoint failed comes back from an older one or from the scheduler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Core, CuError, Loaded, Runtime, pool_error};
use crate::checkpoint::arweave::{self, ArweaveCheckpoint, ArweaveSettings, Choice};
use crate::checkpoint::store::Verify;
use crate::checkpoint::{Checkpoint, CheckpointPolicy, CheckpointStore};
use crate::gateway::Gateway;
use crate::process::residency::{self, Residency};
use crate::su::hashchain::Link;
use crate::su::scheduler::Scheduler;

/// Longest wait for a process slot when every resident process is busy.
pub const ADMIT_WAIT: Duration = Duration::from_secs(30);

/// File checkpoints as the runtime uses them.
pub struct Checkpointing {
    pub store: Arc<CheckpointStore>,
    pub policy: CheckpointPolicy,
}

/// Hydration from the reference CU's Arweave checkpoints (cu-protocol §3.4, §4.10 (e)).
pub struct ArweaveHydration {
    pub settings: ArweaveSettings,
    /// The CU's own wallet address: the trusted owner when none is set.
    pub own_address: String,
}

/// The memory a rollback starts from: a copy taken in memory (sparse: its zero pages cost no RAM),
/// or the checkpoint file the process resumed from (or last wrote), read again (and verified again) only when a rollback needs it. A live process
/// holds no mapping of its checkpoint: thousands of mapped images would cost memory mappings
/// (`vm.max_map_count`) and page cache for a path that runs only after a failed message.
pub(super) enum RollbackImage {
    Owned(Vec<u8>),
    /// A copy whose zero pages cost no RAM ([`crate::engine::Instance::sparse_image`]).
    Sparse(memmap2::Mmap),
    File(std::path::PathBuf),
}

impl RollbackImage {
    /// The image's memory: the copy, or the file mapped again (verified as [`Verify::Live`]). A
    /// file that is gone or no longer verifies is an error: the process reloads.
    pub(super) async fn memory(&self) -> Result<ImageBytes<'_>, CuError> {
        match self {
            RollbackImage::Owned(v) => Ok(ImageBytes::Owned(v)),
            RollbackImage::Sparse(m) => Ok(ImageBytes::Owned(m)),
            RollbackImage::File(path) => {
                let path = path.clone();
                let loaded = tokio::task::spawn_blocking(move || crate::checkpoint::store::load(&path, Verify::Live))
                    .await
                    .map_err(|e| CuError::new(500, format!("rollback image task: {e}")))?
                    .map_err(|e| CuError::new(500, format!("rollback image: {e}")))?;
                Ok(ImageBytes::Mapped(Box::new(loaded)))
            }
        }
    }
}

/// The bytes of a [`RollbackImage`].
pub(super) enum ImageBytes<'a> {
    Owned(&'a [u8]),
    Mapped(Box<crate::checkpoint::Loaded>),
}

impl ImageBytes<'_> {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            ImageBytes::Owned(v) => v,
            ImageBytes::Mapped(l) => l.memory(),
        }
    }
}

/// Checkpoints written at once per worker on shutdown.
pub const SHUTDOWN_CONCURRENCY_PER_WORKER: usize = 4;

/// What [`Core::shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Processes whose checkpoint was written.
    pub checkpointed: usize,
    /// Processes whose checkpoint failed.
    pub failed: usize,
    /// Processes not reached before the deadline.
    pub abandoned: usize,
}

/// Puts `p` at `position` (with its block height and chain link), with `instance` (state hash
/// `hash`) holding its memory and `image` as its rollback image: messages up to it count as
/// handled and are never evaluated here.
fn place(
    p: &mut Loaded,
    instance: crate::engine::Instance,
    hash: [u8; 32],
    image: RollbackImage,
    position: crate::store::Position,
    block_height: u64,
    link: Option<Link>,
) {
    p.instance = Some(instance);
    p.blank = false;
    p.spawned = true;
    p.handled = Some((position.timestamp, position.nonce));
    p.block_height = block_height;
    p.link = link;
    p.last_hash = Some(hash);
    p.checkpoint = Some((image, position.clone()));
    p.last = Some(position);
    p.since.clear();
    p.ckpt_since = 0;
    p.ckpt_at = Instant::now();
}

/// [`place`]s `p` at the position of Arweave record `cp`, its downloaded `memory` the rollback
/// image.
pub(super) fn set_position(
    p: &mut Loaded,
    cp: &ArweaveCheckpoint,
    instance: crate::engine::Instance,
    hash: [u8; 32],
    memory: Vec<u8>,
) {
    let link = match (&cp.assignment, &cp.hash_chain) {
        (Some(a), Some(h)) => Some(Link { assignment_id: a.clone(), hash_chain: h.clone() }),
        _ => None,
    };
    place(p, instance, hash, RollbackImage::Owned(memory), cp.position.clone(), cp.block_height, link);
}

impl<S: Scheduler, G: Gateway> Runtime<S, G> {
    /// This runtime, hydrating processes new to it (no stored evaluation, so no usable file
    /// checkpoint) from the Arweave checkpoints `settings` trust (off by default). `own_address`
    /// is the CU's wallet address, the trusted owner when `settings` names none.
    pub fn with_arweave_checkpoints(self, settings: ArweaveSettings, own_address: &str) -> Self {
        let own_address = own_address.to_string();
        self.reconfigure("with_arweave_checkpoints", |core| {
            core.arweave = Some(ArweaveHydration { settings, own_address })
        })
    }
}

impl<S: Scheduler, G: Gateway> Core<S, G> {
    /// Resumes freshly loaded `p` from its newest checkpoint that agrees with the store (see the
    /// module doc); a process with no stored evaluation and no such checkpoint is hydrated from
    /// Arweave if it can be. Leaves `p` untouched (replay from the start) otherwise.
    pub(super) async fn resume(&self, pid: &str, p: &mut Loaded) -> Result<(), CuError> {
        let store_err = |e: crate::store::StoreError| CuError::new(500, e.to_string());
        let latest = self.store.latest(pid).map_err(store_err)?.map(|e| e.position);
        let new_here = latest.is_none();
        if !self.resume_from_file(pid, p, latest).await? && new_here {
            // No stored evaluation, no checkpoint of hydrated memory: new to this CU.
            self.hydrate_from_arweave(pid, p).await;
        }
        Ok(())
    }

    /// Resumes `p` from its newest file checkpoint not past `latest` (the store's latest
    /// evaluation) if it agrees with the store: the store holds an evaluation at its position
    /// with the same state hash, or — a checkpoint of hydrated memory — the store holds no
    /// evaluation at or before its position. Returns whether it did.
    async fn resume_from_file(
        &self,
        pid: &str,
        p: &mut Loaded,
        latest: Option<crate::store::Position>,
    ) -> Result<bool, CuError> {
        let store_err = |e: crate::store::StoreError| CuError::new(500, e.to_string());
        let Some(ck) = self.checkpoints.as_ref().filter(|c| c.policy.resume) else { return Ok(false) };
        let started = Instant::now();
        let prescanned = match self.take_prescanned(pid) {
            // Verified in bulk by prewarming moments ago: the header and map are checked again.
            Some(path) => {
                tokio::task::spawn_blocking(move || crate::checkpoint::store::load(&path, Verify::HeaderOnly))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .filter(|l| latest.as_ref().is_none_or(|at| l.checkpoint().position <= *at))
            }
            None => None,
        };
        let loaded = match prescanned {
            Some(l) => Arc::new(l),
            None => {
                let (files, id, verify) = (ck.store.clone(), pid.to_string(), ck.policy.verify);
                let not_after = latest.clone();
                let scan = tokio::task::spawn_blocking(move || files.latest_valid(&id, not_after.as_ref(), verify))
                    .await
                    .map_err(|e| CuError::new(500, format!("checkpoint read task: {e}")))?;
                match scan {
                    Ok(scan) => match scan.loaded {
                        Some(l) => Arc::new(l),
                        None => return Ok(false),
                    },
                    Err(e) => {
                        tracing::warn!(
                            process_id = pid,
                            "checkpoints not readable ({e}); replaying from the scheduler"
                        );
                        return Ok(false);
                    }
                }
            }
        };
        let c = loaded.checkpoint().clone();
        let hash = loaded.header.state_hash;
        let agrees = c.module_id == p.module_id
            && if c.hydrated {
                let q = crate::store::Query {
                    after: None,
                    until: Some(c.position.clone()),
                    descending: false,
                    limit: 1,
                    cron_only: false,
                    hide_errors: false,
                };
                self.store.list(pid, &q).map_err(store_err)?.0.is_empty()
            } else {
                self.store.at(pid, &c.position).map_err(store_err)?.is_some_and(|e| e.state_hash == hash)
            };
        if !agrees {
            tracing::warn!(
                process_id = pid,
                path = %loaded.path.display(),
                "checkpoint does not match the stored evaluation at its position; replaying from the scheduler"
            );
            return Ok(false);
        }
        let (engine, module, opts, image) = (self.engine.clone(), p.module.clone(), p.opts.clone(), loaded.clone());
        let instance = self
            .pool
            .run(pid, move || engine.instantiate_image(&module, opts, image.memory()))
            .await
            .map_err(pool_error)?
            .map_err(|e| CuError::new(500, format!("process instance from checkpoint: {e}")))?;
        place(p, instance, hash, RollbackImage::File(loaded.path.clone()), c.position, c.block_height, c.link);
        drop(loaded);
        self.metrics.checkpoint_restored(started.elapsed());
        tracing::info!(process_id = pid, position = ?p.last, hydrated = c.hydrated, "resumed from a checkpoint");
        Ok(true)
    }

    /// Hydrates freshly loaded `p`, new to this CU, from an Arweave checkpoint of its own process
    /// and module when one is found, chosen and its memory matches its record (see the module
    /// doc); leaves `p` untouched (cold start, replay from the scheduler) otherwise. Never fails
    /// the request: the records are someone else's data, and replaying is always correct.
    async fn hydrate_from_arweave(&self, pid: &str, p: &mut Loaded) {
        let Some(aw) = &self.arweave else { return };
        if aw.settings.ignore_processes.iter().any(|x| x == pid) {
            return;
        }
        let found = arweave::find(&*self.gateway, pid, &p.module_id, &aw.own_address, &aw.settings).await;
        let candidates = match found {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(process_id = pid, "Arweave checkpoints not found ({e}); replaying from the scheduler");
                return;
            }
        };
        let cp = match arweave::choose(candidates, &aw.settings) {
            Choice::None => return,
            Choice::Use(cp) => *cp,
            Choice::Validate(all) => match self.validated(pid, p, &all, &aw.settings).await {
                Some(cp) => {
                    tracing::info!(process_id = pid, record = %cp.id, records = all.len(), "Arweave checkpoint validated");
                    cp
                }
                None => {
                    tracing::warn!(
                        process_id = pid,
                        records = all.len(),
                        "no Arweave checkpoint passed the validation replays; replaying from the scheduler"
                    );
                    return;
                }
            },
        };
        let started = Instant::now();
        let memory = match arweave::download(&*self.gateway, &cp, p.opts.memory_limit).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(process_id = pid, "Arweave checkpoint refused: {e}; replaying from the scheduler");
                return;
            }
        };
        match self.instantiate_checkpoint(pid, p, memory).await {
            Ok((instance, hash, memory)) => {
                set_position(p, &cp, instance, hash, memory);
                self.metrics.checkpoint_restored(started.elapsed());
                tracing::info!(process_id = pid, record = %cp.id, owner = %cp.owner, position = ?p.last,
                    "hydrated from an Arweave checkpoint");
                // A local copy at once, so a restart before the first policy checkpoint resumes
                // here rather than hydrating again (or replaying from the spawn).
                if self.write_checkpoint(pid, p, true).await == Some(false) {
                    tracing::warn!(process_id = pid, "no local checkpoint of the hydrated memory");
                }
            }
            Err(e) => {
                tracing::warn!(process_id = pid, record = %cp.id, "Arweave checkpoint not usable: {}; replaying from the scheduler", e.message);
            }
        }
    }

    /// An instance of `p`'s module holding `memory`, its state hash, and `memory` back (the
    /// rollback image).
    pub(super) async fn instantiate_checkpoint(
        &self,
        pid: &str,
        p: &Loaded,
        memory: Vec<u8>,
    ) -> Result<(crate::engine::Instance, [u8; 32], Vec<u8>), CuError> {
        let (engine, module, opts) = (self.engine.clone(), p.module.clone(), p.opts.clone());
        self.pool
            .run(pid, move || {
                engine.instantiate_image(&module, opts, &memory).map(|mut i| {
                    let h = i.state_hash();
                    (i, h, memory)
                })
            })
            .await
            .map_err(pool_error)?
            .map_err(|e| CuError::new(500, format!("process instance from an Arweave checkpoint: {e}")))
    }

    /// Whether the count rule (every N evaluations) asks for a checkpoint now.
    pub(super) fn checkpoint_due_by_count(&self, p: &Loaded) -> bool {
        !p.scratch
            && self.checkpoints.as_ref().is_some_and(|c| c.policy.every_messages.is_some_and(|n| p.ckpt_since >= n))
    }

    /// Writes a checkpoint of `p` when the policy says one is due (or `force`, for eviction and
    /// shutdown) and it evaluated since its last one. `p` must be committed (nothing pending).
    /// Returns whether a checkpoint was written; a failure is logged, never returned.
    pub(super) async fn checkpoint_if_due(&self, pid: &str, p: &mut Loaded, force: bool) -> Option<bool> {
        let ck = self.checkpoints.as_ref()?;
        let due = p.ckpt_since > 0
            && (force || ck.policy.should_checkpoint(p.ckpt_since, p.ckpt_at.elapsed()))
            && p.pending.is_empty()
            && !p.store_behind;
        if !due {
            return None;
        }
        self.write_checkpoint(pid, p, false).await
    }

    /// Writes a checkpoint of `p`'s memory at its position now (`hydrated`: the memory is an
    /// Arweave record's, with no stored evaluation at that position). `None` when file
    /// checkpoints are off or `p` has no position; else whether it was written (a failure is
    /// logged, never returned).
    async fn write_checkpoint(&self, pid: &str, p: &mut Loaded, hydrated: bool) -> Option<bool> {
        let ck = self.checkpoints.as_ref().filter(|_| !p.scratch)?;
        let position = p.last.clone()?;
        let c = Checkpoint {
            process_id: pid.to_string(),
            module_id: p.module_id.clone(),
            position,
            block_height: p.block_height,
            link: p.link.clone(),
            hydrated,
        };
        let instance = self.checkout(p).ok()?;
        let (files, keep, id, at) = (ck.store.clone(), ck.policy.keep, pid.to_string(), c.position.clone());
        let started = Instant::now();
        let ran = self
            .pool
            .run(pid, move || {
                let r = files.write(&c, instance.memory()).and_then(|path| files.prune(&id, keep).map(|_| path));
                (instance, r)
            })
            .await;
        match ran {
            Ok((instance, r)) => {
                self.checkin(p, instance);
                match r {
                    Ok(path) => {
                        // The file is the memory now: the rollback image, with nothing to replay
                        // (and no copy held in RAM).
                        p.checkpoint = Some((RollbackImage::File(path), at));
                        p.since.clear();
                        p.ckpt_since = 0;
                        p.ckpt_at = Instant::now();
                        self.metrics.checkpoint_written(started.elapsed());
                        Some(true)
                    }
                    Err(e) => {
                        tracing::warn!(process_id = pid, "checkpoint not written: {e}; evaluation goes on");
                        Some(false)
                    }
                }
            }
            Err(e) => {
                // The instance went with the job: the process reloads (checked_out stays set).
                tracing::error!(process_id = pid, "checkpoint task: {e}");
                Some(false)
            }
        }
    }

    /// `core` with its residency capped at the processes the engine's instance pool holds, less
    /// a headroom of two instances per worker (dry-run forks, rollbacks) and one spare.
    pub(super) fn with_instance_cap(mut core: Self) -> Self {
        let (slots, workers) = (core.engine.config().pool_slots as usize, core.pool.workers());
        let (forks, cap) = (residency::fork_headroom(workers, slots), residency::live_cap(workers, slots));
        let r = core.residency.get_mut().expect("residency lock");
        *r = std::mem::replace(r, Residency::new(0, None)).with_max_count(cap);
        core.admission = Arc::new(tokio::sync::Semaphore::new(cap));
        core.forks = Arc::new(tokio::sync::Semaphore::new(forks));
        core.max_processes = super::MAX_PROCESSES.max(2 * cap);
        core
    }

    /// A place for `pid` among the processes holding an instance: at once if one is free, else
    /// by evicting the least recently used idle process, else by waiting (at most
    /// [`ADMIT_WAIT`]) for one to leave; then 503.
    pub(super) async fn admit(&self, pid: &str) -> Result<tokio::sync::OwnedSemaphorePermit, CuError> {
        loop {
            if let Ok(permit) = self.admission.clone().try_acquire_owned() {
                return Ok(permit);
            }
            if self.evict_lru(pid).await {
                continue;
            }
            return match tokio::time::timeout(ADMIT_WAIT, self.admission.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Ok(permit),
                _ => Err(CuError::new(
                    503,
                    format!("every process slot of this CU is busy ({ADMIT_WAIT:?}); try again later"),
                )),
            };
        }
    }

    /// Evicts the least recently used idle process other than `except`; false when none could be.
    async fn evict_lru(&self, except: &str) -> bool {
        let order = self.residency.lock().expect("residency lock").lru();
        for v in order.iter().filter(|v| v.as_str() != except) {
            if self.evict(v).await {
                return true;
            }
        }
        false
    }

    /// Evicts `v` if it is idle: its checkpoint (if due and the policy says so), then its memory
    /// and its place. Returns whether an instance was let go.
    async fn evict(&self, v: &str) -> bool {
        let slot = self.processes.lock().expect("process map").get(v).cloned();
        let Some(slot) = slot else {
            self.residency.lock().expect("residency lock").remove(v);
            return false;
        };
        let Ok(mut guard) = slot.try_lock_owned() else { return false };
        let mut evicted = false;
        if let Some(mut p) = guard.take() {
            if self.checkpoints.as_ref().is_some_and(|c| c.policy.on_eviction) {
                self.checkpoint_if_due(v, &mut p, true).await;
            }
            drop(p);
            self.metrics.process_evicted();
            tracing::debug!(process_id = v, "evicted");
            evicted = true;
        }
        self.residency.lock().expect("residency lock").remove(v);
        drop(guard);
        let mut map = self.processes.lock().expect("process map");
        // Drop the map entry too unless a request is waiting on the slot.
        if map.get(v).is_some_and(|s| Arc::strong_count(s) <= 2) {
            map.remove(v);
        }
        evicted
    }

    /// Charges `pid` its resident memory and evicts the least recently used processes past the
    /// budget or idle time (those in use are skipped this time).
    pub(super) async fn settle_residency(&self, pid: &str, bytes: u64) {
        let now = Instant::now();
        let victims = {
            let mut r = self.residency.lock().expect("residency lock");
            r.touch(pid, bytes, now);
            r.victims(pid, now)
        };
        for v in victims {
            self.evict(&v).await;
        }
        let total = self.residency.lock().expect("residency lock").total();
        self.metrics.resident_memory(total);
    }

    /// SIGTERM: waits for each process's evaluation in flight (its lock), then checkpoints every
    /// process that evaluated since its last checkpoint, all within `deadline`; up to
    /// [`SHUTDOWN_CONCURRENCY_PER_WORKER`] per worker at once, so the workers and the disk stay
    /// busy together (one process's write overlaps another's fsync).
    pub(super) async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        use futures_util::StreamExt as _;
        let slots: Vec<(String, super::Slot)> =
            self.processes.lock().expect("process map").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let report = std::sync::Mutex::new(ShutdownReport { abandoned: slots.len(), ..ShutdownReport::default() });
        let on_shutdown = self.checkpoints.as_ref().is_some_and(|c| c.policy.on_shutdown);
        let concurrency = SHUTDOWN_CONCURRENCY_PER_WORKER * self.pool.workers().max(1);
        let work = futures_util::stream::iter(slots).for_each_concurrent(concurrency, |(pid, slot)| {
            let report = &report;
            async move {
                let mut guard = slot.lock_owned().await;
                let mut outcome = None;
                if let (Some(p), true) = (guard.as_mut(), on_shutdown) {
                    outcome = self.checkpoint_if_due(&pid, p, true).await;
                    if p.checked_out {
                        guard.take();
                    }
                }
                let mut r = report.lock().expect("shutdown report");
                match outcome {
                    Some(true) => r.checkpointed += 1,
                    Some(false) => r.failed += 1,
                    None => {}
                }
                r.abandoned -= 1;
            }
        });
        if tokio::time::timeout(deadline, work).await.is_err() {
            tracing::warn!(?deadline, "shutdown deadline reached before every process was checkpointed");
        }
        report.lock().expect("shutdown report").clone()
    }
}
