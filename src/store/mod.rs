//! Persistence of evaluation results (the CU's `evaluations` table): every evaluated message's
//! result, keyed for `/result` (by message id) and `/results`/`/cron` (by position in the
//! process's stream), with a blake3 hash of the process memory after it.
//!
//! Invariants (TIGER_STYLE): a stored evaluation is never rewritten or deleted — `put` of an
//! existing key with the same content is a no-op, with different content an error; writes are
//! durable when `put` returns (ACID backend); every query is bounded by [`MAX_PAGE`].
//!
//! Usage accounting ([`usage`]) lives here too: each inserted evaluation's [`Usage`] is added to
//! its process's sums and the CU's totals in the same write, so a provider's bill always matches
//! the stored results.

use serde_json::Value;

pub mod memory;
pub mod redb;
pub mod usage;

pub use self::memory::MemoryStore;
pub use self::redb::{RedbStore, has_error};
pub use self::usage::{Usage, UsageSums, UsageTotals};

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
///
/// Equality is of content: [`Evaluation::usage`] (what producing it cost, which differs between
/// two runs of the same message) is not compared, so re-storing an identical evaluation measured
/// differently is still the no-op it must be.
#[derive(Debug, Clone)]
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
    /// CPU, wall time and memory of the evaluation, added to the usage sums when the evaluation
    /// is first stored. Not kept in the row: reads return [`Usage::default`].
    pub usage: Usage,
}

impl PartialEq for Evaluation {
    fn eq(&self, o: &Self) -> bool {
        let Evaluation { process_id, message_id, position, block_height, result, state_hash, gas, usage: _ } = self;
        *process_id == o.process_id
            && *message_id == o.message_id
            && *position == o.position
            && *block_height == o.block_height
            && *result == o.result
            && *state_hash == o.state_hash
            && *gas == o.gas
    }
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
    /// The usage sums of the process's stored evaluations; `None` if it has none.
    fn usage(&self, process_id: &str) -> Result<Option<UsageSums>, StoreError>;
    /// The usage sums of every process together.
    fn usage_totals(&self) -> Result<UsageTotals, StoreError>;
}
