//! The Arweave gateway as the CU consumes it (cu-protocol §3): transaction metadata (module and
//! process tags, owners) and raw data (module binaries, message data). Implementations: the HTTP
//! client for real gateways (issue 4), the in-memory [`local::LocalGateway`] of `metalcu dev`, and
//! test fakes.

pub mod local;

use std::future::Future;

use crate::su::types::{Owner, Tag};

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
}
