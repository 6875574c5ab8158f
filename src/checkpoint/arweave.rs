//! Checkpoints the reference CU publishes on Arweave (cu-protocol §3.4): finding a process's
//! records through the gateway, choosing one, downloading and checking its memory.
//!
//! - [`find`]: the `GetAoProcessCheckpoints` query ([`crate::gateway::Gateway::checkpoints`]) for the
//!   trusted owners (the CU's own address when none are set), replaced by the preferred owners'
//!   records when those exist; records in `IGNORE_ARWEAVE_CHECKPOINTS` dropped, processes in
//!   `PROCESS_IGNORE_ARWEAVE_CHECKPOINTS` never looked up; malformed records skipped with a
//!   warning (a record is someone else's data: it never fails the process).
//! - [`choose`]: the newest by `Nonce` when there are at most `STEPS + RETRIES` candidates;
//!   otherwise [`Choice::Validate`], and [`validate`] runs the reference's window check with a
//!   replay the caller provides (the runtime replays messages between two checkpoints).
//! - [`download`]: `/raw/{id}`, gunzip when `Content-Encoding: gzip` (the only encoding), bounded
//!   by the process's memory limit, and the `SHA-256` tag checked against the uncompressed memory.
//!   A record whose data does not match is refused, never used.
//!
//! Invariant: memory from Arweave reaches an instance only after its SHA-256 matched the record
//! and the record's module and process are the process's own.

use std::io::Read as _;

use sha2::Digest as _;

use crate::gateway::{Gateway, GatewayError, TxMeta};
use crate::store::Position;

/// Bytes of a wasm page: a memory image is a whole number of them.
const WASM_PAGE: usize = 65536;
/// Records asked per query (the reference's `limit`).
pub const QUERY_LIMIT: usize = 50;
/// Reference defaults of `CHECKPONT_VALIDATION_STEPS`, `_RETRIES`, `_THRESH`.
pub const DEFAULT_STEPS: usize = 10;
pub const DEFAULT_RETRIES: usize = 5;
pub const DEFAULT_THRESH: f64 = 0.75;

/// Which records are trusted and how they are validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ArweaveSettings {
    /// `PROCESS_CHECKPOINT_TRUSTED_OWNERS` (empty: the CU's own address).
    pub trusted_owners: Vec<String>,
    /// `PROCESS_CHECKPOINT_PREFERRED_OWNERS`.
    pub preferred_owners: Vec<String>,
    /// `IGNORE_ARWEAVE_CHECKPOINTS`: record ids never used.
    pub ignore_ids: Vec<String>,
    /// `PROCESS_IGNORE_ARWEAVE_CHECKPOINTS`: processes that never use Arweave checkpoints.
    pub ignore_processes: Vec<String>,
    pub steps: usize,
    pub retries: usize,
    pub thresh: f64,
}

impl Default for ArweaveSettings {
    fn default() -> Self {
        ArweaveSettings {
            trusted_owners: Vec::new(),
            preferred_owners: Vec::new(),
            ignore_ids: Vec::new(),
            ignore_processes: Vec::new(),
            steps: DEFAULT_STEPS,
            retries: DEFAULT_RETRIES,
            thresh: DEFAULT_THRESH,
        }
    }
}

/// How the memory is encoded in the record's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Identity,
}

/// One checkpoint record, parsed from its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArweaveCheckpoint {
    pub id: String,
    pub owner: String,
    pub module_id: String,
    pub process_id: String,
    /// (Timestamp, Ordinate ← `Nonce`, Cron-Interval).
    pub position: Position,
    pub block_height: u64,
    /// SHA-256 of the uncompressed memory.
    pub sha256: [u8; 32],
    pub encoding: Encoding,
    pub assignment: Option<String>,
    pub hash_chain: Option<String>,
}

/// Why a record or its data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArweaveError {
    #[error("checkpoint {id}: {why}")]
    Record { id: String, why: String },
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

fn tag<'a>(tx: &'a TxMeta, name: &str) -> Option<&'a str> {
    tx.tags.iter().find(|t| t.name == name).map(|t| t.value.as_str())
}

/// Parses a record's tags (§3.4's table); `Err` names the tag at fault.
pub fn parse_record(tx: &TxMeta) -> Result<ArweaveCheckpoint, ArweaveError> {
    let bad = |why: String| ArweaveError::Record { id: tx.id.clone(), why };
    let need = |name: &str| tag(tx, name).filter(|v| !v.is_empty()).ok_or_else(|| bad(format!("no {name} tag")));
    for (name, want) in [("Data-Protocol", "ao"), ("Type", "Checkpoint")] {
        if need(name)? != want {
            return Err(bad(format!("{name} is not {want}")));
        }
    }
    let int = |name: &str| -> Result<u64, ArweaveError> {
        need(name)?.parse::<u64>().map_err(|_| bad(format!("{name} is not a non-negative integer")))
    };
    let timestamp = i64::try_from(int("Timestamp")?).map_err(|_| bad("Timestamp out of range".into()))?;
    // `Ordinate` and `Nonce` carry the same value; the reference hydrates the ordinate from `Nonce`.
    let nonce = int("Nonce")?;
    let sha = hex::decode(need("SHA-256")?).map_err(|_| bad("SHA-256 is not hex".into()))?;
    let sha256: [u8; 32] = sha.try_into().map_err(|_| bad("SHA-256 is not 32 bytes".into()))?;
    let encoding = match tag(tx, "Content-Encoding") {
        Some("gzip") => Encoding::Gzip,
        None | Some("") => Encoding::Identity,
        Some(other) => return Err(bad(format!("Content-Encoding {other:?} (only gzip)"))),
    };
    let opt = |name: &str| tag(tx, name).filter(|v| !v.is_empty()).map(str::to_string);
    Ok(ArweaveCheckpoint {
        id: tx.id.clone(),
        owner: tx.owner.address.clone(),
        module_id: need("Module")?.to_string(),
        process_id: need("Process")?.to_string(),
        position: Position { timestamp, nonce, cron: opt("Cron-Interval") },
        block_height: int("Block-Height")?,
        sha256,
        encoding,
        assignment: opt("Assignment"),
        hash_chain: opt("Hash-Chain"),
    })
}

/// The usable checkpoint records of `pid` (module `module_id`), newest first by nonce.
pub async fn find<G: Gateway>(
    gateway: &G,
    pid: &str,
    module_id: &str,
    own_address: &str,
    settings: &ArweaveSettings,
) -> Result<Vec<ArweaveCheckpoint>, GatewayError> {
    if settings.ignore_processes.iter().any(|p| p == pid) {
        return Ok(Vec::new());
    }
    let trusted = if settings.trusted_owners.is_empty() {
        vec![own_address.to_string()]
    } else {
        settings.trusted_owners.clone()
    };
    let mut txs = gateway.checkpoints(pid, &trusted, QUERY_LIMIT).await?;
    if !settings.preferred_owners.is_empty() {
        let preferred = gateway.checkpoints(pid, &settings.preferred_owners, QUERY_LIMIT).await?;
        if !preferred.is_empty() {
            txs = preferred;
        }
    }
    let mut out: Vec<ArweaveCheckpoint> = txs
        .iter()
        .filter(|tx| !settings.ignore_ids.contains(&tx.id))
        .filter_map(|tx| match parse_record(tx) {
            Ok(c) if c.process_id == pid && c.module_id == module_id => Some(c),
            Ok(c) => {
                tracing::warn!(process_id = pid, record = %c.id, "checkpoint record of another process or module skipped");
                None
            }
            Err(e) => {
                tracing::warn!(process_id = pid, "{e}; skipped");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| b.position.cmp(&a.position));
    Ok(out)
}

/// What [`choose`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    None,
    /// Few enough candidates: the newest is used as it is.
    Use(Box<ArweaveCheckpoint>),
    /// More than `STEPS + RETRIES`: run [`validate`] over these, oldest first.
    Validate(Vec<ArweaveCheckpoint>),
}

/// The reference's selection rule over candidates (any order).
pub fn choose(mut candidates: Vec<ArweaveCheckpoint>, settings: &ArweaveSettings) -> Choice {
    candidates.sort_by(|a, b| a.position.cmp(&b.position));
    if candidates.is_empty() {
        Choice::None
    } else if candidates.len() <= settings.steps + settings.retries {
        Choice::Use(Box::new(candidates.pop().expect("not empty")))
    } else {
        Choice::Validate(candidates)
    }
}

/// The reference's window check over `sorted` (oldest first): for attempt `i` in `0..RETRIES`,
/// the window of `STEPS` checkpoints ending `i` from the newest; each consecutive pair is checked
/// with `replay(earlier, later)` (true when replaying the messages between them from the
/// earlier's memory gives the later's memory); the window's last checkpoint is accepted when
/// matches / STEPS ≥ THRESH **and** (stricter than the reference, which can accept a checkpoint
/// that itself failed its replay) the pair ending at that checkpoint matched. `replay` errors
/// count as mismatches.
pub async fn validate<F, Fut>(
    sorted: &[ArweaveCheckpoint],
    settings: &ArweaveSettings,
    mut replay: F,
) -> Option<ArweaveCheckpoint>
where
    F: FnMut(ArweaveCheckpoint, ArweaveCheckpoint) -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let steps = settings.steps.max(1);
    for attempt in 0..settings.retries {
        let Some(end) = sorted.len().checked_sub(attempt) else { break };
        let Some(start) = end.checked_sub(steps) else { break };
        let window = &sorted[start..end];
        let mut matches = 0usize;
        let mut last_ok = false;
        for pair in window.windows(2) {
            last_ok = match replay(pair[0].clone(), pair[1].clone()).await {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!("checkpoint validation replay {} → {}: {e}", pair[0].id, pair[1].id);
                    false
                }
            };
            matches += usize::from(last_ok);
        }
        if last_ok && matches as f64 / steps as f64 >= settings.thresh {
            return window.last().cloned();
        }
    }
    None
}

/// Downloads and checks the memory of `cp`: at most `max_bytes` once uncompressed, and its
/// SHA-256 must be the record's.
pub async fn download<G: Gateway>(
    gateway: &G,
    cp: &ArweaveCheckpoint,
    max_bytes: u64,
) -> Result<Vec<u8>, ArweaveError> {
    let data = gateway.raw(&cp.id).await?;
    decode(cp, &data, max_bytes)
}

/// The memory in `data`, checked as [`download`] says.
pub fn decode(cp: &ArweaveCheckpoint, data: &[u8], max_bytes: u64) -> Result<Vec<u8>, ArweaveError> {
    let bad = |why: String| ArweaveError::Record { id: cp.id.clone(), why };
    let memory = match cp.encoding {
        Encoding::Identity => {
            if data.len() as u64 > max_bytes {
                return Err(bad(format!("{} bytes of memory, over the limit of {max_bytes}", data.len())));
            }
            data.to_vec()
        }
        Encoding::Gzip => {
            let mut out = Vec::new();
            let mut gz = flate2::read::GzDecoder::new(data).take(max_bytes.saturating_add(1));
            gz.read_to_end(&mut out).map_err(|e| bad(format!("gunzip: {e}")))?;
            if out.len() as u64 > max_bytes {
                return Err(bad(format!("memory over the limit of {max_bytes} bytes once uncompressed")));
            }
            out
        }
    };
    if !memory.len().is_multiple_of(WASM_PAGE) {
        return Err(bad(format!("{} bytes is not a whole number of wasm pages", memory.len())));
    }
    let got: [u8; 32] = sha2::Sha256::digest(&memory).into();
    if got != cp.sha256 {
        return Err(bad(format!(
            "SHA-256 of the memory is {}, the record says {}",
            hex::encode(got),
            hex::encode(cp.sha256)
        )));
    }
    Ok(memory)
}

#[cfg(test)]
mod tests;
