//! Bringing processes back at start (`PREWARM_PROCESSES`): after a restart the most recently
//! checkpointed processes are loaded into live instances before any request asks for them, so
//! the first requests find them warm.
//!
//! Two stages. The bulk one runs on a rayon pool as wide as the evaluation workers: for each
//! candidate it maps and verifies its newest checkpoint that is not past the process's latest
//! stored evaluation (the state hash over every stored page: the CPU-heavy part), exactly the
//! scan a request's load does. The second stage loads each verified process the way a request
//! does (admission, the SU's process metadata, the module), with the checkpoint already verified
//! ([`Core::resume`] takes it and checks only its header and page map again), a few per worker
//! at once; it walks no message. Only paths are kept between the stages: an image is unmapped as
//! soon as it verified, so prewarming thousands of processes never holds thousands of mappings.
//!
//! Invariants: prewarming never evaluates and never writes; a process a request has loaded
//! first is left alone; a prescanned checkpoint is used only under the same agreement check as
//! any other (its state hash equals the stored one at its position), so a stale one costs a
//! longer replay, never a wrong state; at most the live cap is loaded, so prewarming evicts
//! nothing it loaded itself; every failure is counted and logged, and the process loads on its
//! first request as it would have.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use futures_util::StreamExt as _;
use rayon::prelude::*;

use super::{Core, CuError, Runtime};
use crate::gateway::Gateway;
use crate::su::scheduler::Scheduler;

/// Processes loaded at once per worker in the second stage.
pub const LOADS_PER_WORKER: usize = 4;
/// Most processes `PREWARM_PROCESSES` accepts.
pub const MAX_PREWARM: usize = 1_000_000;

/// What [`Runtime::prewarm`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrewarmReport {
    /// Processes with checkpoints considered (the most recent, up to the limit and the live cap).
    pub candidates: usize,
    /// Of those, processes whose newest usable checkpoint verified.
    pub verified: usize,
    /// Newer checkpoint files passed over as corrupt or torn (also logged).
    pub skipped_files: usize,
    /// Processes loaded live.
    pub loaded: usize,
    /// Processes a request had loaded first.
    pub already_live: usize,
    /// Processes whose load failed (they load on their first request).
    pub failed: usize,
    /// Time of the verification stage and of the whole prewarm.
    pub verify_ms: u64,
    pub total_ms: u64,
}

impl<S: Scheduler, G: Gateway> Runtime<S, G> {
    /// Loads up to `limit` of the most recently checkpointed processes (and at most the live
    /// cap) into live instances from their checkpoints; see the module doc.
    pub async fn prewarm(&self, limit: usize) -> PrewarmReport {
        let started = Instant::now();
        let mut report = PrewarmReport::default();
        let Some(ck) = self.core.checkpoints.as_ref().filter(|c| c.policy.resume) else { return report };
        let cap = self.core.residency.lock().expect("residency lock").max_count();
        let (files, store, verify) = (ck.store.clone(), self.core.store.clone(), ck.policy.verify);
        let threads = self.core.pool.workers().max(1);
        let n = limit.min(cap);
        let scanned = tokio::task::spawn_blocking(move || {
            let pids = match files.process_ids_by_recency() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("prewarm: cannot list the checkpoints: {e}");
                    return Vec::new();
                }
            };
            let pids: Vec<String> = pids.into_iter().take(n).map(|(pid, _)| pid).collect();
            let scan_one = |pid: &String| {
                let latest = store.latest(pid).ok()?.map(|e| e.position);
                // The image is unmapped at once: only the verified path is kept, so prewarming
                // thousands of processes never holds thousands of mappings.
                match files.latest_valid(pid, latest.as_ref(), verify) {
                    Ok(scan) => Some((scan.skipped.len(), scan.loaded.map(|l| l.path))),
                    Err(e) => {
                        tracing::warn!(process_id = pid, "prewarm: checkpoints not readable: {e}");
                        None
                    }
                }
            };
            match rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("prewarm-{i}")).build() {
                Ok(pool) => pool.install(|| pids.par_iter().map(|p| (p.clone(), scan_one(p))).collect::<Vec<_>>()),
                Err(e) => {
                    tracing::warn!("prewarm: no rayon pool ({e}); verifying on one thread");
                    pids.iter().map(|p| (p.clone(), scan_one(p))).collect()
                }
            }
        })
        .await
        .unwrap_or_default();
        report.candidates = scanned.len();
        let mut verified = Vec::new();
        {
            let mut pre = self.core.prescanned.lock().expect("prescanned");
            for (pid, scan) in scanned {
                let Some((skipped, scan)) = scan else { continue };
                report.skipped_files += skipped;
                if let Some(path) = scan {
                    pre.insert(pid.clone(), path);
                    verified.push(pid);
                }
            }
        }
        report.verified = verified.len();
        report.verify_ms = started.elapsed().as_millis() as u64;
        let concurrency = LOADS_PER_WORKER * threads;
        let loads = verified.into_iter().map(|pid| {
            let rt = self.clone();
            async move {
                let outcome = rt.warm(&pid).await;
                (pid, outcome)
            }
        });
        let outcomes: Vec<(String, Result<bool, CuError>)> =
            futures_util::stream::iter(loads).buffer_unordered(concurrency).collect().await;
        for (pid, o) in &outcomes {
            match o {
                Ok(true) => report.loaded += 1,
                Ok(false) => report.already_live += 1,
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(process_id = pid, "prewarm: not loaded: {}", e.message);
                }
            }
        }
        // Whatever was not taken (a load that failed early) is dropped: requests scan afresh.
        self.core.prescanned.lock().expect("prescanned").clear();
        report.total_ms = started.elapsed().as_millis() as u64;
        tracing::info!(?report, "prewarm done");
        report
    }

    /// Loads `pid` live unless it is already; `Ok(true)` when this call loaded it.
    async fn warm(&self, pid: &str) -> Result<bool, CuError> {
        let slot = self.core.slot(pid)?;
        let core = self.core.clone();
        let pid = pid.to_string();
        let task = tokio::spawn(async move {
            let mut guard = slot.lock_owned().await;
            if guard.is_some() {
                return Ok(false);
            }
            let p = core.load_live(&pid).await?;
            let resident = p.instance.as_ref().map_or(0, crate::engine::Instance::resident_bytes);
            *guard = Some(p);
            drop(guard);
            core.settle_residency(&pid, resident).await;
            Ok(true)
        });
        task.await.map_err(|e| CuError::new(500, format!("prewarm task: {e}")))?
    }
}

impl<S: Scheduler, G: Gateway> Core<S, G> {
    /// The checkpoint file prewarming verified for `pid`, if any (taken: used once).
    pub(super) fn take_prescanned(&self, pid: &str) -> Option<PathBuf> {
        self.prescanned.lock().expect("prescanned").remove(pid)
    }
}

/// Verified checkpoint files by process id.
pub(super) type Prescanned = std::sync::Mutex<HashMap<String, PathBuf>>;
