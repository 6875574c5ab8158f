//! The embedded Scheduler Unit of `metalcu dev`: an ordered, persistent message log per process
//! that answers the CU exactly as a real SU does (cu-protocol §2.2–2.6), so the CU's code path is
//! the same in development and in production.
//!
//! Storage is one redb file with five tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `processes` | pid | the `GET /processes/{pid}` JSON (ProcessInner) |
//! | `state` | pid | next nonce, last timestamp, last assignment id and `Hash-Chain` |
//! | `nodes` | pid ‖ be64(nonce) | the node JSON (`{message, assignment}`) as a real SU sends it |
//! | `times` | pid ‖ be64(ordered timestamp) | nonce (the page index: timestamps are unique per process) |
//! | `messages` | message id | pid ‖ be64(nonce) |
//!
//! plus `meta` (format version, id counter, process count). Every write (spawn, post) is one
//! redb write transaction, and redb runs one write transaction at a time, so nonces, timestamps
//! and hash chains are assigned in commit order without any lock of ours.
//!
//! Invariants, per process:
//! - the process itself is nonce 0 (post-aop6: the process is the first edge of its stream);
//! - nonces are 0, 1, 2, … without gaps; timestamps are strictly increasing (a clock that did not
//!   move, or went back, is bumped to the last timestamp + 1 ms), so timestamp order = nonce order;
//! - `Block-Height` is [`block_height_at`] of the timestamp (deterministic, never below
//!   [`GENESIS_HEIGHT`], so hash chains are always checked by the CU);
//! - `Hash-Chain` of nonce 0 is `b64url(sha256(b64url⁻¹(pid)))`; of nonce n > 0,
//!   [`hashchain::next_hash_chain`] of nonce n − 1's assignment id and `Hash-Chain`;
//! - ids (process, message, assignment) are 43-character base64url sha256 digests of a canonical,
//!   length-prefixed encoding of their inputs and a persistent counter: deterministic, unique;
//! - a reopened file answers byte for byte what it answered before.
//!
//! Everything written is bounded ([`MAX_TAGS`], [`MAX_TAG_BYTES`], [`MAX_DATA_BYTES`],
//! [`MAX_OWNER_BYTES`], [`MAX_PROCESSES`]); every page is bounded ([`MAX_PAGE_LIMIT`],
//! [`MAX_PAGE_BYTES`]). Answers are built as JSON and parsed back through [`crate::su::types`]
//! (with its bounds), so what the CU receives from the trait is what it would parse off the wire.
//!
//! The [`Scheduler`] methods read redb inline (reads never fsync; a page is bounded), so they
//! need no particular runtime; writes fsync and are meant for the blocking pool (the HTTP front
//! runs them there).
//!
//! The local SU signs nothing: `signature` fields carry a deterministic placeholder
//! ([`placeholder_signature`]), and `owner.key` is empty (the CU then uses `owner.address`).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redb::{Database, ReadableTable, TableDefinition};
use serde_json::{Value, json};
use sha2::Digest;

use super::hashchain::{self, Link};
use super::scheduler::{PageQuery, Scheduler, SuError};
use super::types::{self, Node, Page, Process, Tag};

/// Most tags on one process or message (ANS-104's limit, and what the CU accepts).
pub const MAX_TAGS: usize = types::MAX_TAGS;
/// Most bytes of one tag name or value (what the CU accepts).
pub const MAX_TAG_BYTES: usize = types::MAX_TAG_BYTES;
/// Most bytes of one message's data.
pub const MAX_DATA_BYTES: usize = 10 * 1024 * 1024;
/// Most bytes of an owner address (Arweave addresses have 43, Ethereum ones 42).
pub const MAX_OWNER_BYTES: usize = 128;
/// Most processes one local SU holds.
pub const MAX_PROCESSES: u64 = 100_000;
/// Edges of a page when the request gives no limit (the reference SU's default).
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
/// Most edges of one page; larger limits are clamped (the CU asks for 1000).
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// A page stops growing once its stored nodes reach this many bytes (it always holds at least
/// one edge); `has_next_page` then tells the CU to ask for the rest.
pub const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;

/// Block height at [`GENESIS_TIMESTAMP_MS`] (≥ [`hashchain::HASH_CHAIN_MIN_BLOCK_HEIGHT`]).
pub const GENESIS_HEIGHT: u64 = 1_500_000;
/// The instant of [`GENESIS_HEIGHT`]: 2024-09-01T00:00:00Z, in ms.
pub const GENESIS_TIMESTAMP_MS: i64 = 1_725_148_800_000;
/// One block every 120 s (Arweave's target).
pub const BLOCK_INTERVAL_MS: i64 = 120_000;

/// The address the local SU signs assignments as (43 characters, like an Arweave address).
pub const LOCAL_SU_ADDRESS: &str = "metalcu-local-scheduler-0000000000000000000";
/// The owner of messages posted without one (HTTP front), 43 characters.
pub const DEV_OWNER: &str = "metalcu-local-dev-owner-0000000000000000000";
/// The error text of the reference SU for an unknown process or message.
pub const NOT_FOUND: &str = "Message or Process not found";

/// Version of the on-disk layout; a file of another version is refused.
const FORMAT_VERSION: u64 = 1;
/// Length of every id this SU creates (base64url of 32 bytes, no padding).
const ID_LEN: usize = 43;

const PROCESSES: TableDefinition<&str, &[u8]> = TableDefinition::new("processes");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("nodes");
const TIMES: TableDefinition<&[u8], u64> = TableDefinition::new("times");
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

// Every process of the local SU is new enough for the CU to check its hash chain.
const _: () = assert!(GENESIS_HEIGHT >= hashchain::HASH_CHAIN_MIN_BLOCK_HEIGHT);

/// Block height of timestamp `ts_ms`: `GENESIS_HEIGHT + max(0, ts − GENESIS_TIMESTAMP_MS) / 120 s`.
pub fn block_height_at(ts_ms: i64) -> u64 {
    let elapsed = ts_ms.saturating_sub(GENESIS_TIMESTAMP_MS).max(0);
    GENESIS_HEIGHT + (elapsed / BLOCK_INTERVAL_MS) as u64
}

/// A block height as the SU writes it: zero-padded to 12 digits.
pub fn padded_height(height: u64) -> String {
    format!("{height:012}")
}

/// The clock of a real SU: ms since the Unix epoch.
pub fn system_clock() -> Box<dyn Fn() -> i64 + Send + Sync> {
    Box::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

/// The `signature` the local SU writes for item `id`: not a signature (nothing is signed), a
/// deterministic base64url string so the field has the type a real SU gives it.
pub fn placeholder_signature(id: &str) -> String {
    digest_id("metalcu/local-su/unsigned", &[id.as_bytes()])
}

/// Why the local SU refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalSuError {
    /// Unknown process or message (text of the reference SU).
    #[error("{NOT_FOUND}")]
    NotFound,
    /// A request the SU does not accept (missing process tags, empty owner, …).
    #[error("{0}")]
    Invalid(String),
    /// A bound was exceeded (tags, data, processes).
    #[error("{0}")]
    TooLarge(String),
    /// The database failed.
    #[error("local SU database: {0}")]
    Db(String),
    /// Stored data does not decode: the file was altered or is not a local SU file.
    #[error("local SU data is corrupt: {0}")]
    Corrupt(String),
}

impl LocalSuError {
    /// HTTP status of the local SU's front for this error.
    pub fn status(&self) -> u16 {
        match self {
            LocalSuError::NotFound => 404,
            LocalSuError::Invalid(_) => 400,
            LocalSuError::TooLarge(_) => 413,
            LocalSuError::Db(_) | LocalSuError::Corrupt(_) => 500,
        }
    }
}

impl From<LocalSuError> for SuError {
    fn from(e: LocalSuError) -> SuError {
        match e {
            LocalSuError::NotFound => SuError::NotFound(NOT_FOUND.to_string()),
            LocalSuError::Invalid(s) | LocalSuError::TooLarge(s) => SuError::Invalid(s),
            e @ LocalSuError::Db(_) => SuError::Unavailable(e.to_string()),
            e @ LocalSuError::Corrupt(_) => SuError::Invalid(e.to_string()),
        }
    }
}

fn db_err(e: impl Into<redb::Error>) -> LocalSuError {
    LocalSuError::Db(e.into().to_string())
}

fn corrupt(what: impl std::fmt::Display) -> LocalSuError {
    LocalSuError::Corrupt(what.to_string())
}

/// What a spawn or post scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The message id (for a spawn, the process id).
    pub id: String,
    pub process_id: String,
    pub nonce: u64,
    /// ms since the Unix epoch.
    pub timestamp: i64,
    pub block_height: u64,
}

/// Per-process write state: what the next post needs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ProcState {
    next_nonce: u64,
    last_timestamp: i64,
    last_assignment: String,
    last_hash_chain: String,
}

/// The embedded SU (see the module doc). `Send + Sync`; share it behind an `Arc`.
pub struct LocalScheduler {
    db: Database,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for LocalScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalScheduler").finish_non_exhaustive()
    }
}

/// sha256 over `domain ‖ 0 ‖ (be64(len) ‖ bytes)*`, base64url without padding (43 characters).
fn digest_id(domain: &str, fields: &[&[u8]]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f);
    }
    URL_SAFE_NO_PAD.encode(h.finalize())
}

fn encode_tags(tags: &[Tag]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(tags.len() as u64).to_be_bytes());
    for t in tags {
        for s in [&t.name, &t.value] {
            out.extend_from_slice(&(s.len() as u64).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

fn node_key(pid: &str, nonce: u64) -> Vec<u8> {
    debug_assert_eq!(pid.len(), ID_LEN, "pids of the local SU are {ID_LEN} bytes");
    let mut k = Vec::with_capacity(pid.len() + 8);
    k.extend_from_slice(pid.as_bytes());
    k.extend_from_slice(&nonce.to_be_bytes());
    k
}

/// Timestamps as big-endian keys that sort like the signed numbers.
fn time_key(pid: &str, ts: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(pid.len() + 8);
    k.extend_from_slice(pid.as_bytes());
    k.extend_from_slice(&((ts as u64) ^ (1 << 63)).to_be_bytes());
    k
}

fn tags_json(tags: &[Tag]) -> Value {
    Value::Array(tags.iter().map(|t| json!({ "name": t.name, "value": t.value })).collect())
}

fn check_owner(owner: &str) -> Result<(), LocalSuError> {
    if owner.is_empty() {
        return Err(LocalSuError::Invalid("owner is empty".into()));
    }
    if owner.len() > MAX_OWNER_BYTES {
        return Err(LocalSuError::TooLarge(format!("owner is longer than {MAX_OWNER_BYTES} bytes")));
    }
    Ok(())
}

fn check_item(tags: &[Tag], data: &str) -> Result<(), LocalSuError> {
    if tags.len() > MAX_TAGS {
        return Err(LocalSuError::TooLarge(format!("{} tags; the limit is {MAX_TAGS}", tags.len())));
    }
    if let Some(t) = tags.iter().find(|t| t.name.len() > MAX_TAG_BYTES || t.value.len() > MAX_TAG_BYTES) {
        let name: String = t.name.chars().take(64).collect();
        return Err(LocalSuError::TooLarge(format!("tag {name:?} is longer than {MAX_TAG_BYTES} bytes")));
    }
    if tags.iter().any(|t| t.name.is_empty()) {
        return Err(LocalSuError::Invalid("a tag has an empty name".into()));
    }
    if data.len() > MAX_DATA_BYTES {
        return Err(LocalSuError::TooLarge(format!("data has {} bytes; the limit is {MAX_DATA_BYTES}", data.len())));
    }
    Ok(())
}

/// The tags the CU requires of a process (cu-protocol §2.4); any matching value counts.
fn check_process_tags(tags: &[Tag]) -> Result<(), LocalSuError> {
    let has = |name: &str, value: &str| tags.iter().any(|t| t.name == name && t.value == value);
    if !has("Data-Protocol", "ao") {
        return Err(LocalSuError::Invalid("a process needs the tag Data-Protocol=ao".into()));
    }
    if !has("Type", "Process") {
        return Err(LocalSuError::Invalid("a process needs the tag Type=Process".into()));
    }
    if !tags.iter().any(|t| t.name == "Module" && !t.value.trim().is_empty()) {
        return Err(LocalSuError::Invalid("a process needs a Module tag naming its module".into()));
    }
    Ok(())
}

/// One node as a real SU serialises it (key order of the reference's `json.rs`).
struct NodeParts<'a> {
    pid: &'a str,
    id: &'a str,
    owner: &'a str,
    tags: &'a [Tag],
    data: &'a str,
    is_process: bool,
    assignment_id: &'a str,
    nonce: u64,
    timestamp: i64,
    height: u64,
    hash_chain: &'a str,
}

impl NodeParts<'_> {
    fn json(&self) -> Value {
        let assignment_tags = [
            ("Process", self.pid.to_string()),
            ("Epoch", "0".to_string()),
            ("Nonce", self.nonce.to_string()),
            ("Hash-Chain", self.hash_chain.to_string()),
            ("Block-Height", padded_height(self.height)),
            ("Timestamp", self.timestamp.to_string()),
            ("Data-Protocol", "ao".to_string()),
            ("Type", "Assignment".to_string()),
            ("Variant", "ao.TN.1".to_string()),
        ];
        json!({
            "message": {
                "id": self.id,
                "owner": { "address": self.owner, "key": "" },
                "data": self.data,
                "tags": tags_json(self.tags),
                "signature": placeholder_signature(self.id),
                "anchor": null,
                "target": if self.is_process { Value::Null } else { Value::String(self.pid.to_string()) },
            },
            "assignment": {
                "id": self.assignment_id,
                "owner": { "address": LOCAL_SU_ADDRESS, "key": "" },
                "tags": Value::Array(
                    assignment_tags.iter().map(|(n, v)| json!({ "name": n, "value": v })).collect()
                ),
                "signature": placeholder_signature(self.assignment_id),
                "anchor": null,
                "target": "",
            },
        })
    }
}

fn to_vec(v: &Value) -> Result<Vec<u8>, LocalSuError> {
    serde_json::to_vec(v).map_err(|e| LocalSuError::Db(format!("serialising JSON: {e}")))
}

fn parse_value(bytes: &[u8]) -> Result<Value, LocalSuError> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

impl LocalScheduler {
    /// Opens (or creates) the log at `path`. `clock` gives ms since the Unix epoch
    /// ([`system_clock`] in production; tests pass a fixed or stepped clock).
    ///
    /// Returns `Err` if the file cannot be opened (already open elsewhere, not a redb file) or
    /// holds another layout version.
    pub fn open(path: impl AsRef<Path>, clock: Box<dyn Fn() -> i64 + Send + Sync>) -> Result<Self, LocalSuError> {
        let db = Database::create(path.as_ref()).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            tx.open_table(PROCESSES).map_err(db_err)?;
            tx.open_table(STATE).map_err(db_err)?;
            tx.open_table(NODES).map_err(db_err)?;
            tx.open_table(TIMES).map_err(db_err)?;
            tx.open_table(MESSAGES).map_err(db_err)?;
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let version = meta.get("version").map_err(db_err)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert("version", FORMAT_VERSION).map_err(db_err)?;
                }
                Some(FORMAT_VERSION) => {}
                Some(v) => {
                    return Err(corrupt(format!("layout version {v}; this metalcu reads version {FORMAT_VERSION}")));
                }
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(LocalScheduler { db, clock })
    }

    /// The SU's clock (ms) and the block height at that instant.
    pub fn now(&self) -> (i64, u64) {
        let ts = (self.clock)();
        (ts, block_height_at(ts))
    }

    /// Number of processes held.
    pub fn process_count(&self) -> Result<u64, LocalSuError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let meta = tx.open_table(META).map_err(db_err)?;
        Ok(meta.get("processes").map_err(db_err)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Creates a process owned by `owner` and schedules it as nonce 0.
    ///
    /// Returns `Invalid` without the tags `Data-Protocol=ao`, `Type=Process` and a `Module`,
    /// `TooLarge` past a bound ([`MAX_TAGS`], [`MAX_TAG_BYTES`], [`MAX_DATA_BYTES`],
    /// [`MAX_PROCESSES`]).
    pub fn spawn(&self, owner: &str, tags: Vec<Tag>, data: String) -> Result<Posted, LocalSuError> {
        check_owner(owner)?;
        check_item(&tags, &data)?;
        check_process_tags(&tags)?;
        let tx = self.db.begin_write().map_err(db_err)?;
        let posted = {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let count = meta.get("processes").map_err(db_err)?.map(|v| v.value()).unwrap_or(0);
            if count >= MAX_PROCESSES {
                return Err(LocalSuError::TooLarge(format!("the local SU holds {MAX_PROCESSES} processes already")));
            }
            let counter = meta.get("counter").map_err(db_err)?.map(|v| v.value()).unwrap_or(0);
            meta.insert("counter", counter + 1).map_err(db_err)?;
            meta.insert("processes", count + 1).map_err(db_err)?;

            let timestamp = (self.clock)();
            let height = block_height_at(timestamp);
            let pid = digest_id(
                "metalcu/local-su/process",
                &[
                    owner.as_bytes(),
                    &encode_tags(&tags),
                    data.as_bytes(),
                    &timestamp.to_be_bytes(),
                    &counter.to_be_bytes(),
                ],
            );
            let mut messages = tx.open_table(MESSAGES).map_err(db_err)?;
            if messages.get(pid.as_str()).map_err(db_err)?.is_some() {
                return Err(corrupt(format!("id {pid} exists already")));
            }
            let assignment_id = digest_id(
                "metalcu/local-su/assignment",
                &[pid.as_bytes(), &0u64.to_be_bytes(), &timestamp.to_be_bytes()],
            );
            let seed = URL_SAFE_NO_PAD.decode(&pid).map_err(corrupt)?;
            let hash_chain = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(seed));
            let parts = NodeParts {
                pid: &pid,
                id: &pid,
                owner,
                tags: &tags,
                data: &data,
                is_process: true,
                assignment_id: &assignment_id,
                nonce: 0,
                timestamp,
                height,
                hash_chain: &hash_chain,
            };
            let process = json!({
                "process_id": pid,
                "block": padded_height(height),
                "owner": { "address": owner, "key": "" },
                "tags": tags_json(&tags),
                "timestamp": timestamp,
                "data": data,
                "anchor": null,
                "signature": placeholder_signature(&pid),
                "target": null,
            });
            tx.open_table(PROCESSES)
                .map_err(db_err)?
                .insert(pid.as_str(), to_vec(&process)?.as_slice())
                .map_err(db_err)?;
            self.append(&tx, &mut messages, &parts)?;
            Posted { id: pid.clone(), process_id: pid, nonce: 0, timestamp, block_height: height }
        };
        tx.commit().map_err(db_err)?;
        Ok(posted)
    }

    /// Appends a message from `owner` to process `pid` with the next nonce.
    ///
    /// Returns `NotFound` for an unknown process, `TooLarge` past a bound.
    pub fn post(&self, pid: &str, owner: &str, tags: Vec<Tag>, data: String) -> Result<Posted, LocalSuError> {
        check_owner(owner)?;
        check_item(&tags, &data)?;
        let tx = self.db.begin_write().map_err(db_err)?;
        let posted = {
            let state = {
                let table = tx.open_table(STATE).map_err(db_err)?;
                let guard = table.get(pid).map_err(db_err)?.ok_or(LocalSuError::NotFound)?;
                serde_json::from_slice::<ProcState>(guard.value()).map_err(corrupt)?
            };
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let counter = meta.get("counter").map_err(db_err)?.map(|v| v.value()).unwrap_or(0);
            meta.insert("counter", counter + 1).map_err(db_err)?;

            let clock = (self.clock)();
            let timestamp = if clock > state.last_timestamp {
                clock
            } else {
                state
                    .last_timestamp
                    .checked_add(1)
                    .ok_or_else(|| LocalSuError::Invalid("the process's timestamps are exhausted".into()))?
            };
            let height = block_height_at(timestamp);
            let nonce = state.next_nonce;
            let id = digest_id(
                "metalcu/local-su/message",
                &[
                    pid.as_bytes(),
                    owner.as_bytes(),
                    &encode_tags(&tags),
                    data.as_bytes(),
                    &timestamp.to_be_bytes(),
                    &nonce.to_be_bytes(),
                    &counter.to_be_bytes(),
                ],
            );
            let mut messages = tx.open_table(MESSAGES).map_err(db_err)?;
            if messages.get(id.as_str()).map_err(db_err)?.is_some() {
                return Err(corrupt(format!("id {id} exists already")));
            }
            let assignment_id = digest_id(
                "metalcu/local-su/assignment",
                &[pid.as_bytes(), &nonce.to_be_bytes(), &timestamp.to_be_bytes(), id.as_bytes()],
            );
            let hash_chain = hashchain::next_hash_chain(&Link {
                assignment_id: state.last_assignment.clone(),
                hash_chain: state.last_hash_chain.clone(),
            })
            .ok_or_else(|| corrupt(format!("process {pid}: stored hash-chain link is not base64url")))?;
            let parts = NodeParts {
                pid,
                id: &id,
                owner,
                tags: &tags,
                data: &data,
                is_process: false,
                assignment_id: &assignment_id,
                nonce,
                timestamp,
                height,
                hash_chain: &hash_chain,
            };
            self.append(&tx, &mut messages, &parts)?;
            Posted { id, process_id: pid.to_string(), nonce, timestamp, block_height: height }
        };
        tx.commit().map_err(db_err)?;
        Ok(posted)
    }

    /// Writes node `p` and its indexes, and advances the process's state.
    fn append(
        &self,
        tx: &redb::WriteTransaction,
        messages: &mut redb::Table<&str, &[u8]>,
        p: &NodeParts<'_>,
    ) -> Result<(), LocalSuError> {
        let node = to_vec(&p.json())?;
        let key = node_key(p.pid, p.nonce);
        let mut times = tx.open_table(TIMES).map_err(db_err)?;
        let tkey = time_key(p.pid, p.timestamp);
        // Timestamps are strictly increasing per process, so the time index never collides.
        if times.get(tkey.as_slice()).map_err(db_err)?.is_some() {
            return Err(corrupt(format!("process {}: timestamp {} is taken", p.pid, p.timestamp)));
        }
        times.insert(tkey.as_slice(), p.nonce).map_err(db_err)?;
        tx.open_table(NODES).map_err(db_err)?.insert(key.as_slice(), node.as_slice()).map_err(db_err)?;
        messages.insert(p.id, key.as_slice()).map_err(db_err)?;
        let state = ProcState {
            next_nonce: p.nonce + 1,
            last_timestamp: p.timestamp,
            last_assignment: p.assignment_id.to_string(),
            last_hash_chain: p.hash_chain.to_string(),
        };
        let state = serde_json::to_vec(&state).map_err(|e| LocalSuError::Db(e.to_string()))?;
        tx.open_table(STATE).map_err(db_err)?.insert(p.pid, state.as_slice()).map_err(db_err)?;
        Ok(())
    }

    /// `GET /processes/{pid}` as JSON.
    pub fn process_json(&self, pid: &str) -> Result<Value, LocalSuError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(PROCESSES).map_err(db_err)?;
        let guard = table.get(pid).map_err(db_err)?.ok_or(LocalSuError::NotFound)?;
        parse_value(guard.value())
    }

    /// True if `pid` is a process of this SU.
    pub fn has_process(&self, pid: &str) -> Result<bool, LocalSuError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        Ok(tx.open_table(STATE).map_err(db_err)?.get(pid).map_err(db_err)?.is_some())
    }

    /// `GET /{pid}?from=&to=&limit=` as JSON: edges with `from < timestamp <= to` in order, at
    /// most `limit` (0 → [`DEFAULT_PAGE_LIMIT`], clamped to [`MAX_PAGE_LIMIT`]) and about
    /// [`MAX_PAGE_BYTES`]; cursors are timestamps.
    pub fn page_json(&self, pid: &str, q: PageQuery) -> Result<Value, LocalSuError> {
        let limit = match q.limit {
            0 => DEFAULT_PAGE_LIMIT,
            n => n.min(MAX_PAGE_LIMIT),
        } as usize;
        let tx = self.db.begin_read().map_err(db_err)?;
        if tx.open_table(STATE).map_err(db_err)?.get(pid).map_err(db_err)?.is_none() {
            return Err(LocalSuError::NotFound);
        }
        let lo = match q.from {
            None => i64::MIN,
            Some(f) => match f.checked_add(1) {
                Some(v) => v,
                None => return Ok(json!({ "page_info": { "has_next_page": false }, "edges": [] })),
            },
        };
        let hi = q.to.unwrap_or(i64::MAX);
        let mut edges = Vec::new();
        let mut has_next_page = false;
        if lo <= hi {
            let times = tx.open_table(TIMES).map_err(db_err)?;
            let nodes = tx.open_table(NODES).map_err(db_err)?;
            let (lo_key, hi_key) = (time_key(pid, lo), time_key(pid, hi));
            let mut bytes = 0usize;
            let mut last: Option<(i64, u64)> = None;
            for entry in times.range(lo_key.as_slice()..=hi_key.as_slice()).map_err(db_err)? {
                let (_, nonce) = entry.map_err(db_err)?;
                let nonce = nonce.value();
                if edges.len() >= limit || (bytes >= MAX_PAGE_BYTES && !edges.is_empty()) {
                    has_next_page = true;
                    break;
                }
                let guard = nodes
                    .get(node_key(pid, nonce).as_slice())
                    .map_err(db_err)?
                    .ok_or_else(|| corrupt(format!("process {pid}: nonce {nonce} is indexed but missing")))?;
                bytes += guard.value().len();
                let node = parse_value(guard.value())?;
                let ts = node_timestamp(&node)?;
                // Paired with the write side: timestamps and nonces both strictly increase.
                if let Some((lts, ln)) = last
                    && (ts <= lts || nonce <= ln)
                {
                    return Err(corrupt(format!("process {pid}: nonce {nonce} is out of order")));
                }
                last = Some((ts, nonce));
                edges.push(json!({ "cursor": ts.to_string(), "node": node }));
            }
        }
        Ok(json!({ "page_info": { "has_next_page": has_next_page }, "edges": edges }))
    }

    /// `GET /{msg_id}?process-id={pid}` as JSON: the node of message `msg_id` of process `pid`
    /// (`msg_id == pid` gives the process's own node, nonce 0).
    pub fn message_json(&self, pid: &str, msg_id: &str) -> Result<Value, LocalSuError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let key = {
            let messages = tx.open_table(MESSAGES).map_err(db_err)?;
            let guard = messages.get(msg_id).map_err(db_err)?.ok_or(LocalSuError::NotFound)?;
            guard.value().to_vec()
        };
        if key.len() != pid.len() + 8 || &key[..pid.len()] != pid.as_bytes() {
            return Err(LocalSuError::NotFound);
        }
        let nodes = tx.open_table(NODES).map_err(db_err)?;
        let guard =
            nodes.get(key.as_slice()).map_err(db_err)?.ok_or_else(|| corrupt(format!("message {msg_id} lost")))?;
        parse_value(guard.value())
    }

    /// The process a message id belongs to, and whether the id is the process itself.
    pub fn locate(&self, id: &str) -> Result<(String, bool), LocalSuError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let messages = tx.open_table(MESSAGES).map_err(db_err)?;
        let guard = messages.get(id).map_err(db_err)?.ok_or(LocalSuError::NotFound)?;
        let key = guard.value();
        if key.len() < 8 {
            return Err(corrupt(format!("message {id}: bad index entry")));
        }
        let pid = std::str::from_utf8(&key[..key.len() - 8]).map_err(corrupt)?.to_string();
        let is_process = pid == id;
        Ok((pid, is_process))
    }

    /// `GET /{pid}/latest` as JSON: the last node of the process.
    pub fn latest_json(&self, pid: &str) -> Result<Value, LocalSuError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let nonce = {
            let table = tx.open_table(STATE).map_err(db_err)?;
            let guard = table.get(pid).map_err(db_err)?.ok_or(LocalSuError::NotFound)?;
            let state: ProcState = serde_json::from_slice(guard.value()).map_err(corrupt)?;
            state.next_nonce.checked_sub(1).ok_or_else(|| corrupt(format!("process {pid} has no node")))?
        };
        let nodes = tx.open_table(NODES).map_err(db_err)?;
        let guard = nodes
            .get(node_key(pid, nonce).as_slice())
            .map_err(db_err)?
            .ok_or_else(|| corrupt(format!("process {pid}: nonce {nonce} missing")))?;
        parse_value(guard.value())
    }

    /// `GET /timestamp` as JSON (both fields strings, as the reference SU writes them).
    pub fn timestamp_json(&self) -> Value {
        let (ts, height) = self.now();
        json!({ "timestamp": ts.to_string(), "block_height": padded_height(height) })
    }

    /// `GET /` as JSON: the SU's clock and address, and its process count.
    pub fn info_json(&self) -> Result<Value, LocalSuError> {
        let (ts, _) = self.now();
        Ok(json!({
            "timestamp": ts.to_string(),
            "address": LOCAL_SU_ADDRESS,
            "processes": self.process_count()?,
            "variant": "metalcu-local-su",
        }))
    }
}

fn node_timestamp(node: &Value) -> Result<i64, LocalSuError> {
    node["assignment"]["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["name"] == "Timestamp"))
        .and_then(|t| t["value"].as_str())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt("a stored node has no Timestamp"))
}

/// Parses JSON built above into the CU's types, as the CU's HTTP client would parse it.
fn reparse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, LocalSuError> {
    serde_json::from_value(v).map_err(corrupt)
}

impl Scheduler for LocalScheduler {
    async fn process(&self, pid: &str) -> Result<Process, SuError> {
        let p: Process = reparse(self.process_json(pid)?)?;
        // Paired with `spawn`: a stored process still carries the tags the CU requires.
        check_process_tags(&p.tags).map_err(|e| corrupt(format!("process {pid}: {e}")))?;
        Ok(p)
    }

    async fn page(&self, pid: &str, q: PageQuery) -> Result<Page, SuError> {
        let bytes = serde_json::to_vec(&self.page_json(pid, q)?).map_err(|e| SuError::Invalid(e.to_string()))?;
        Page::parse(&bytes).map_err(|e| SuError::Invalid(e.to_string()))
    }

    async fn message(&self, pid: &str, message_id: &str) -> Result<Node, SuError> {
        Ok(reparse(self.message_json(pid, message_id)?)?)
    }

    async fn latest(&self, pid: &str) -> Result<Option<Node>, SuError> {
        Ok(Some(reparse(self.latest_json(pid)?)?))
    }

    async fn timestamp(&self, _pid: &str) -> Result<(i64, u64), SuError> {
        Ok(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_heights_follow_the_documented_function() {
        assert_eq!(block_height_at(0), GENESIS_HEIGHT);
        assert_eq!(block_height_at(GENESIS_TIMESTAMP_MS + 119_999), GENESIS_HEIGHT);
        assert_eq!(block_height_at(GENESIS_TIMESTAMP_MS + 240_000), GENESIS_HEIGHT + 2);
        assert_eq!(padded_height(1_500_002), "000001500002");
    }

    #[test]
    fn ids_are_43_base64url_characters() {
        let id = digest_id("d", &[b"a", b"b"]);
        assert_eq!(id.len(), ID_LEN);
        assert_ne!(id, digest_id("d", &[b"ab", b""]), "fields are length-prefixed");
        assert_eq!(LOCAL_SU_ADDRESS.len(), ID_LEN);
        assert_eq!(DEV_OWNER.len(), ID_LEN);
    }

    #[test]
    fn time_keys_sort_like_signed_timestamps() {
        let p = "p".repeat(ID_LEN);
        assert!(time_key(&p, -1) < time_key(&p, 0));
        assert!(time_key(&p, i64::MIN) < time_key(&p, -1));
        assert!(time_key(&p, 5) < time_key(&p, i64::MAX));
    }
}
