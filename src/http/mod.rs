//! The CU's HTTP API (cu-protocol.md §1): a thin adapter that parses and validates requests,
//! calls the domain through [`CuService`], and renders the reference's wire shapes.
//!
//! - [`server`]: hyper 1 HTTP/1.1 server: connections, limits, timeouts, graceful shutdown;
//! - [`routes`]: the route table and one handler per route (parse → domain → render);
//! - [`query`], [`cursor`], [`dryrun`]: input parsing (query strings and ids, §1.6 cursors, the
//!   dry-run body schema); [`render`]: JSON, the error envelope, CORS, usage bodies.
//!
//! Beyond the reference's routes: `GET /metrics` (OpenMetrics text, see [`crate::metrics`]),
//! `GET /usage/:pid` and `GET /usage` (usage accounting for billing, see
//! [`crate::store::usage`]); the server counts every response by route and status.
//!
//! Invariants: no business rule lives here; HTTP clients are untrusted — every input is bounded
//! (URI, headers, body, query pairs, cursors) and a malformed one is a 400 naming the field, never
//! a panic; every error body is `{"error": "<message>"}`; every response allows any origin.

pub mod cursor;
pub mod dryrun;
pub mod query;
pub mod render;
pub mod routes;
pub mod server;

use std::future::Future;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::store::{UsageSums, UsageTotals};

pub use cursor::{Cursor, CursorBound, Sort};
pub use server::{ServerConfig, serve, serve_with};

/// Default `limit` of `/results` (reference: 25).
pub const RESULTS_DEFAULT_LIMIT: usize = 25;
/// Largest page `/results` serves; larger `limit`s are clamped (the reference has no cap).
pub const RESULTS_MAX_LIMIT: usize = 1000;
/// Default `limit` of `/cron` (reference: 500).
pub const CRON_DEFAULT_LIMIT: usize = 500;
/// Largest page `/cron` serves; larger `limit`s are clamped (reference: 1000).
pub const CRON_MAX_LIMIT: usize = 1000;
/// Largest `/dry-run` body, in bytes (Fastify's default, which the reference keeps): 1 MiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most bytes of an oversized body read and discarded before the 413, so that the client sees
/// the answer (closing a socket with unread data resets it); beyond that, the connection is cut.
pub const MAX_DRAIN_BYTES: usize = 8 << 20;
/// Longest request target (path + query), in bytes; longer → 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most bytes of a request head (request line + headers); larger → 431 (hyper).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a request; more → 431 (hyper).
pub const MAX_HEADERS: usize = 100;
/// Time a request may take from its head to its response; then 504.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Time a `/dry-run` body may take to arrive; then 408.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client may take to send a request head, and the idle keep-alive timeout.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time in-flight requests get to finish after shutdown is signalled; then they are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Most connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;

/// The domain, as the HTTP layer sees it. The CU core implements it; tests use fakes.
///
/// Futures may be dropped at any await point (client gone, [`REQUEST_TIMEOUT`]); work that must
/// finish regardless (an evaluation that others will read) belongs in the domain's own tasks.
/// A panic inside a call is contained: that request gets a 500, the server goes on.
pub trait CuService: Send + Sync + 'static {
    /// Body of `GET /`: `{"version", "timestamp", "address"}` (§1.3).
    fn info(&self) -> Value;
    /// `GET /result/:message_id?process-id=` (§1.4): the result object, without `Memory`.
    fn result(&self, pid: &str, message_id: &str) -> impl Future<Output = Result<Value, ApiError>> + Send;
    /// `GET /results/:pid` (§1.5): a page of cached evaluations, Error results left out.
    fn results(&self, pid: &str, q: ResultsQuery) -> impl Future<Output = Result<Connection, ApiError>> + Send;
    /// `GET /cron/:pid` (§1.7): evaluate up to `q.to`, then a page of cron evaluations (always ASC).
    fn cron(&self, pid: &str, q: ResultsQuery) -> impl Future<Output = Result<Connection, ApiError>> + Send;
    /// `POST /dry-run?process-id=&to=` (§1.8): evaluate `message` on a copy of the memory at `to`
    /// (a message id) or latest. `message` has passed the route schema ([`dryrun::validate`]).
    fn dry_run(
        &self,
        pid: &str,
        to: Option<String>,
        message: Map<String, Value>,
    ) -> impl Future<Output = Result<Value, ApiError>> + Send;
    /// `GET /state/:pid?to=` (§1.9): the memory after the last message at or before timestamp `to`.
    fn state(&self, pid: &str, to: Option<i64>) -> impl Future<Output = Result<StateBody, ApiError>> + Send;
    /// The CU's metrics: served at `GET /metrics`, and where the server counts its responses.
    /// `None` (the default): `/metrics` is 404 and nothing is counted.
    fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        None
    }
    /// `GET /usage/:pid`: the process's usage sums; 404 when it has no stored evaluation.
    fn usage(&self, pid: &str) -> Result<UsageSums, ApiError> {
        Err(ApiError::not_found(format!("no usage is recorded for process {pid}")))
    }
    /// `GET /usage`: the usage of every process together.
    fn usage_totals(&self) -> Result<UsageTotals, ApiError> {
        Err(ApiError::not_found("usage accounting is not kept by this server"))
    }
}

/// An error response: `status` with the body `{"error": message}` (§1.2). A status outside
/// 400..=599 is rendered as 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// 400 for input `field`, in the reference's (zod) form: `'<field>': <reason>.`
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::bad_request(format!("'{field}': {reason}."))
    }

    /// 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    /// 500 with `message`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message)
    }
}

/// A validated `/results` or `/cron` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsQuery {
    /// Exclusive lower bound (a bare timestamp includes evaluations at that millisecond, §1.6).
    pub from: Option<CursorBound>,
    /// Inclusive upper bound.
    pub to: Option<CursorBound>,
    /// The order to list in: the `from` cursor's, else the `to` cursor's, else the `sort`
    /// parameter, else ASC; always ASC for `/cron`. Cursors of the page should carry it.
    pub sort: Sort,
    /// Page size, ≥ 1 and at most [`RESULTS_MAX_LIMIT`] / [`CRON_MAX_LIMIT`].
    pub limit: usize,
}

/// A page of evaluations, rendered `{"pageInfo":{"hasNextPage"},"edges":[{"cursor","node"}]}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Connection {
    /// Each evaluation's cursor and node (`{Messages, Assignments, Spawns, Output?, Error?}`).
    pub edges: Vec<(Cursor, Value)>,
    /// More evaluations follow the last edge.
    pub has_next_page: bool,
}

/// The body of `/state`: the process memory and the position it is at (headers
/// `Last-Timestamp`, `Last-Ordinate`, `Last-Block-Height`, each omitted when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateBody {
    pub memory: bytes::Bytes,
    pub last_timestamp: Option<i64>,
    pub last_ordinate: Option<String>,
    pub last_block_height: Option<u64>,
}
