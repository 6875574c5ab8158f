//! The Arweave gateway as the CU consumes it (cu-protocol §3): transaction metadata (module and
//! process tags, owners) and raw data (module binaries, message data). Implementations: the HTTP
//! client for real gateways (issue 4), the in-memory [`local::LocalGateway`] of `metalcu dev`, and
//! test fakes.

pub mod cache;
pub mod drive;
pub mod http;
pub mod local;

use std::future::Future;

pub use crate::process::cron::Block;
use crate::su::types::{Owner, Tag};

/// Most blocks one [`Gateway::blocks`] answer holds (the reference pages by 90; callers ask again
/// from the last height for more).
pub const MAX_BLOCKS_PER_CALL: usize = 10_000;

/// Where a scheduler (by wallet address) serves, from its `Scheduler-Location` record (§2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerLocation {
    /// The SU's URL, without a trailing `/`.
    pub url: String,
    /// How long the record may be cached (`Time-To-Live`, ms).
    pub ttl_ms: u64,
}

/// Transaction metadata (the GraphQL `transactions` node the CU reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxMeta {
    pub id: String,
    pub owner: Owner,
    pub tags: Vec<Tag>,
    pub signature: Option<String>,
    pub anchor: Option<String>,
    pub recipient: Option<String>,
}

/// Gateway failures; `status()` maps them to the CU's HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("TransactionNotFound: {0} was not found on gateway")]
    NotFound(String),
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    #[error("gateway returned invalid data: {0}")]
    Invalid(String),
}

impl GatewayError {
    /// HTTP status of the CU for this error.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::NotFound(_) => 404,
            GatewayError::Unavailable(_) => 503,
            GatewayError::Invalid(_) => 502,
        }
    }
}

/// An Arweave gateway.
pub trait Gateway: Send + Sync + 'static {
    /// Metadata of transaction `id`.
    fn transaction(&self, id: &str) -> impl Future<Output = Result<TxMeta, GatewayError>> + Send;
    /// The raw data of transaction `id` (`GET /raw/{id}`).
    fn raw(&self, id: &str) -> impl Future<Output = Result<bytes::Bytes, GatewayError>> + Send;
    /// Blocks with height ≥ `min_height` in height order, up to the first whose timestamp
    /// (seconds) exceeds `max_timestamp_s`, at most [`MAX_BLOCKS_PER_CALL`] (§3.3; cron only).
    fn blocks(
        &self,
        min_height: u64,
        max_timestamp_s: i64,
    ) -> impl Future<Output = Result<Vec<Block>, GatewayError>> + Send;
    /// Checkpoint records of process `pid` signed by one of `owners` (tags `Process`,
    /// `Type=Checkpoint`, `Data-Protocol=ao`), newest first, at most `limit` (§3.4).
    fn checkpoints(
        &self,
        pid: &str,
        owners: &[String],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TxMeta>, GatewayError>> + Send;
    /// The newest `Scheduler-Location` record of scheduler wallet `owner` (§2.1).
    fn scheduler_location(&self, owner: &str) -> impl Future<Output = Result<SchedulerLocation, GatewayError>> + Send;
}
