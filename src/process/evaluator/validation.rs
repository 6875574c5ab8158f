//! The validation replay of Arweave checkpoint records (cu-protocol §3.4): when a process new to
//! this CU has more records than can be trusted as they are (`STEPS + RETRIES`), the runtime
//! replays the messages between consecutive records and keeps a record only if
//! [`arweave::validate`]'s window check passes on those replays.
//!
//! One replay (`earlier` → `later`): the earlier record's memory is downloaded and checked
//! ([`arweave::download`], bounded by the process's memory limit), instantiated on the worker pool,
//! walked with the ordinary evaluation walk up to the later record's timestamp (scheduler pages,
//! crons, assignments, hash chain — the same code as a real evaluation) on a *scratch* state, and
//! the SHA-256 of the memory reached is compared with the later record's `SHA-256` tag.
//!
//! Invariants:
//! - a replay never stores a result and never writes a checkpoint: the scratch state
//!   (`Loaded::scratch`) drops its evaluations and is dropped after the comparison;
//! - a replay matches only if it ends exactly at the later record's position (a walk that stops
//!   short or goes past it is a mismatch) with the later record's memory;
//! - a gap of more than [`MAX_VALIDATION_GAP`] scheduled messages is a mismatch, never fetched;
//! - the replay instance is extra to the process's own: it is held only under a permit of the
//!   instance pool's fork headroom (`Core::forks`, as dry-run forks), taken once for the whole
//!   validation and waited for at most [`VALIDATION_PERMIT_WAIT`]; without one, nothing is
//!   validated and the process replays from the scheduler. One replay instance is alive at a time;
//!   a pair of records shared by the windows of several attempts is replayed once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::Digest as _;

use super::persist::set_position;
use super::{Core, Loaded, pool_error};
use crate::checkpoint::arweave::{self, ArweaveCheckpoint, ArweaveSettings};
use crate::gateway::Gateway;
use crate::su::scheduler::Scheduler;

/// Most scheduled messages (nonces) one validation replay evaluates; a wider gap between two
/// records counts as a mismatch.
pub const MAX_VALIDATION_GAP: u64 = 10_000;
/// Longest wait for a fork permit before validation is given up (the process then replays from
/// the scheduler).
pub const VALIDATION_PERMIT_WAIT: Duration = Duration::from_secs(10);

/// A state of `p`'s process with nothing evaluated, whose evaluations are never stored or
/// checkpointed.
fn scratch(p: &Loaded) -> Loaded {
    Loaded {
        admitted: None,
        module: p.module.clone(),
        module_id: p.module_id.clone(),
        ckpt_since: 0,
        ckpt_at: Instant::now(),
        opts: p.opts.clone(),
        env: p.env.clone(),
        height: p.height,
        instance: None,
        blank: true,
        checked_out: false,
        store_behind: false,
        last: None,
        link: None,
        last_hash: None,
        checkpoint: None,
        handled: None,
        pending: Vec::new(),
        since: Vec::new(),
        metering: p.metering,
        process: p.process.clone(),
        owner: p.owner.clone(),
        crons: p.crons.clone(),
        block_height: p.height,
        spawned: false,
        scratch: true,
    }
}

impl<S: Scheduler, G: Gateway> Core<S, G> {
    /// The record [`arweave::validate`] accepts among `sorted` (oldest first), replaying between
    /// records as the module doc says; `None` when none is accepted or no fork permit came.
    pub(super) async fn validated(
        &self,
        pid: &str,
        p: &Loaded,
        sorted: &[ArweaveCheckpoint],
        settings: &ArweaveSettings,
    ) -> Option<ArweaveCheckpoint> {
        let permit = match tokio::time::timeout(VALIDATION_PERMIT_WAIT, self.forks.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                tracing::warn!(
                    process_id = pid,
                    "no instance free for checkpoint validation replays within {VALIDATION_PERMIT_WAIT:?}"
                );
                return None;
            }
        };
        // Windows of successive attempts overlap: each pair is replayed once.
        let replayed: Mutex<HashMap<(String, String), bool>> = Mutex::new(HashMap::new());
        let accepted = arweave::validate(sorted, settings, |earlier, later| {
            let replayed = &replayed;
            async move {
                let key = (earlier.id.clone(), later.id.clone());
                if let Some(ok) = replayed.lock().expect("replayed pairs").get(&key) {
                    return Ok(*ok);
                }
                let ok = match self.replay_between(pid, p, &earlier, &later).await {
                    Ok(ok) => ok,
                    Err(e) => {
                        tracing::warn!(process_id = pid, "validation replay {} → {}: {e}", earlier.id, later.id);
                        false
                    }
                };
                tracing::debug!(process_id = pid, earlier = %earlier.id, later = %later.id, ok, "validation replay");
                replayed.lock().expect("replayed pairs").insert(key, ok);
                Ok(ok)
            }
        })
        .await;
        drop(permit);
        accepted
    }

    /// Whether replaying from `earlier`'s memory through the messages up to `later` gives
    /// `later`'s memory. `Err` (a mismatch to [`arweave::validate`]) when a record or the walk
    /// fails.
    async fn replay_between(
        &self,
        pid: &str,
        p: &Loaded,
        earlier: &ArweaveCheckpoint,
        later: &ArweaveCheckpoint,
    ) -> Result<bool, String> {
        let gap = later.position.nonce.saturating_sub(earlier.position.nonce);
        if gap > MAX_VALIDATION_GAP {
            return Err(format!("{gap} messages between the records, over the limit of {MAX_VALIDATION_GAP}"));
        }
        let memory =
            arweave::download(&*self.gateway, earlier, p.opts.memory_limit).await.map_err(|e| e.to_string())?;
        let (instance, hash, memory) = self.instantiate_checkpoint(pid, p, memory).await.map_err(|e| e.message)?;
        let mut s = scratch(p);
        set_position(&mut s, earlier, instance, hash, memory);
        // A walk to `t` evaluates the crons before `t`, not at it: one ending on a cron goes a
        // millisecond further (anything evaluated past the record is then a mismatch).
        let to = later.position.timestamp + i64::from(later.position.cron.is_some());
        self.walk(pid, &mut s, Some(to)).await.map_err(|e| e.message)?;
        if s.last.as_ref() != Some(&later.position) {
            tracing::debug!(process_id = pid, reached = ?s.last, want = ?later.position, "replay did not end at the record");
            return Ok(false);
        }
        let instance = s.instance.take().ok_or("no memory after the replay")?;
        let got: [u8; 32] = self
            .pool
            .run(pid, move || sha2::Sha256::digest(instance.memory()).into())
            .await
            .map_err(|e| pool_error(e).message)?;
        Ok(got == later.sha256)
    }
}
