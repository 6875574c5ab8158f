//! The seam between the CU and a Scheduler Unit: the HTTP client for real SUs, the embedded
//! local scheduler of `metalcu dev`, and test fakes all implement [`Scheduler`].

use std::future::Future;

use super::types::{Node, Page, Process};

/// A page request: `from` exclusive, `to` inclusive (timestamps, ms), at most `limit` edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageQuery {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: u32,
}

/// What went wrong talking to an SU. `status()` maps it to the CU's HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuError {
    /// The SU says the process or message does not exist (definitive; not retried).
    #[error("{0}")]
    NotFound(String),
    /// The SU refuses the CU (403, cu-protocol §2.7: surfaced as 403, not retried).
    #[error("{0}")]
    Forbidden(String),
    /// The SU could not be reached or kept failing after retries.
    #[error("{0}")]
    Unavailable(String),
    /// The SU answered something that is not valid SU data.
    #[error("{0}")]
    Invalid(String),
}

impl SuError {
    /// HTTP status of the CU for this error.
    pub fn status(&self) -> u16 {
        match self {
            SuError::NotFound(_) => 404,
            SuError::Forbidden(_) => 403,
            SuError::Unavailable(_) => 503,
            SuError::Invalid(_) => 502,
        }
    }
}

/// A Scheduler Unit, as the CU consumes it (cu-protocol §2.2).
pub trait Scheduler: Send + Sync + 'static {
    /// `GET /processes/{pid}`.
    fn process(&self, pid: &str) -> impl Future<Output = Result<Process, SuError>> + Send;
    /// `GET /{pid}?from=&to=&limit=`: one page of the process's messages in order.
    fn page(&self, pid: &str, q: PageQuery) -> impl Future<Output = Result<Page, SuError>> + Send;
    /// `GET /{message_id}?process-id={pid}`: one node.
    fn message(&self, pid: &str, message_id: &str) -> impl Future<Output = Result<Node, SuError>> + Send;
    /// `GET /{pid}/latest`: the last node, if any.
    fn latest(&self, pid: &str) -> impl Future<Output = Result<Option<Node>, SuError>> + Send;
    /// `GET /timestamp?process-id={pid}`: the SU's clock (ms) and block height.
    fn timestamp(&self, pid: &str) -> impl Future<Output = Result<(i64, u64), SuError>> + Send;
}
