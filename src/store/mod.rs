//! Persistence of evaluation results (the CU's `evaluations` table): every evaluated message's
//! result, keyed for `/result` (by message id) and `/results`/`/cron` (by position in the
//! process's stream), with a blake3 hash of the process memory after it.
//!
//! Invariants (TIGER_STYLE): a stored evaluation is never rewritten or deleted — `put` of an
//! existing key with the same content is a no-op, with different content an error; writes are
//! durable when `put` returns (ACID backend); every query is bounded by [`MAX_PAGE`].

use serde_json::Value;

pub mod memory;
pub mod redb;

pub use self::memory::MemoryStore;
pub use self::redb::{RedbStore, has_error};

/// Most evaluations one query returns.
pub const MAX_PAGE: usize = 1000;

/// Where an evaluation sits in its process's stream: ordered by `(timestamp, nonce, cron)`,
/// scheduled messages before the cron messages that share their timestamp and nonce.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The scheduler's nonce of the message (cron messages carry the preceding message's).
    pub nonce: u64,
    /// The cron id (`"0-10-seconds"`) for cron messages, `None` for scheduled ones.
    pub cron: Option<String>,
}

/// One stored evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub process_id: String,
    /// The message id (`None` for cron messages, which have none).
    pub message_id: Option<String>,
    pub position: Position,
    pub block_height: u64,
    /// The result as `/result` serves it: `{Messages, Assignments, Spawns, Output, Error?, GasUsed?}`.
    pub result: Value,
    /// State hash of the process memory after this evaluation (after rollback if it failed): the
    /// blake3 root over its 64 KiB chunks, see `engine::dirty`.
    pub state_hash: [u8; 32],
    /// Gas the evaluation used.
    pub gas: u64,
}

/// Which evaluations a listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Exclusive lower bound.
    pub after: Option<Position>,
    /// Inclusive upper bound.
    pub until: Option<Position>,
    pub descending: bool,
    /// At most this many (capped at [`MAX_PAGE`]).
    pub limit: usize,
    /// Only cron evaluations (`/cron`).
    pub cron_only: bool,
    /// Leave out evaluations whose result has `Error` (`/results`, `/cron`).
    pub hide_errors: bool,
}

/// Store failures. Nothing is partially written when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Io(String),
    #[error("evaluation {0} is already stored with a different result; stored results are never rewritten")]
    Conflict(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

/// The evaluations store. Implementations: `redb` (production), `memory` (tests).
pub trait Store: Send + Sync + 'static {
    /// Stores `e`; a no-op if the identical evaluation is already there.
    fn put(&self, e: &Evaluation) -> Result<(), StoreError>;
    /// Stores up to [`MAX_PAGE`] evaluations, as one durable commit where the backend can (all or
    /// nothing there); each is checked as [`Store::put`] checks it.
    fn put_batch(&self, es: &[Evaluation]) -> Result<(), StoreError> {
        es.iter().try_for_each(|e| self.put(e))
    }
    /// The evaluation of message `message_id` in `process_id`.
    fn by_message(&self, process_id: &str, message_id: &str) -> Result<Option<Evaluation>, StoreError>;
    /// The evaluation at `position` exactly.
    fn at(&self, process_id: &str, position: &Position) -> Result<Option<Evaluation>, StoreError>;
    /// The last evaluation of the process (cron included).
    fn latest(&self, process_id: &str) -> Result<Option<Evaluation>, StoreError>;
    /// A page of evaluations in stream order (or reverse), and whether more follow.
    fn list(&self, process_id: &str, q: &Query) -> Result<(Vec<Evaluation>, bool), StoreError>;
}
