//! The CU core behind the HTTP layer: implements [`crate::http::CuService`] over the evaluation
//! [`Runtime`] and the results [`Store`](crate::store::Store). Only translation lives here —
//! cursors to store positions, results to the API's node shapes, errors to statuses.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::gateway::Gateway;
use crate::http::{ApiError, Connection, CuService, Cursor, CursorBound, ResultsQuery, Sort, StateBody};
use crate::process::evaluator::{CuError, Runtime};
use crate::store::{Evaluation, Position, Query, UsageSums, UsageTotals};
use crate::su::scheduler::Scheduler;

/// The CU service.
pub struct Service<S: Scheduler, G: Gateway> {
    pub runtime: Runtime<S, G>,
    /// The CU's wallet address, shown on `GET /`.
    pub address: String,
}

fn api(e: CuError) -> ApiError {
    ApiError::new(e.status, e.message)
}

/// The largest position at timestamp `t` (a bound that includes everything at `t`).
fn end_of(t: i64) -> Position {
    Position { timestamp: t, nonce: u64::MAX, cron: Some("\u{10FFFF}".into()) }
}

fn bound(b: &CursorBound) -> Result<Position, ApiError> {
    match &b.ordinate {
        Some(o) => Ok(Position {
            timestamp: b.timestamp,
            nonce: o.parse().map_err(|_| ApiError::invalid("cursor", format!("ordinate {o:?} is not a nonce")))?,
            cron: b.cron.clone(),
        }),
        None => Ok(end_of(b.timestamp)),
    }
}

/// `from`: exclusive of a cursor's exact evaluation; a bare timestamp includes its millisecond.
fn lower(b: &CursorBound) -> Result<Position, ApiError> {
    if b.ordinate.is_some() { bound(b) } else { Ok(end_of(b.timestamp - 1)) }
}

/// The `/results` node: `{Messages, Assignments, Spawns, Output?, Error?}` — no `GasUsed`.
fn node(e: &Evaluation) -> Value {
    let mut out = Map::new();
    if let Value::Object(r) = &e.result {
        for k in ["Messages", "Assignments", "Spawns", "Output", "Error"] {
            if let Some(v) = r.get(k) {
                out.insert(k.into(), v.clone());
            }
        }
    }
    Value::Object(out)
}

impl<S: Scheduler, G: Gateway> Service<S, G> {
    fn page(&self, pid: &str, q: &ResultsQuery, cron_only: bool) -> Result<Connection, ApiError> {
        let query = Query {
            after: q.from.as_ref().map(lower).transpose()?,
            until: q.to.as_ref().map(bound).transpose()?,
            descending: q.sort == Sort::Desc,
            limit: q.limit,
            cron_only,
            hide_errors: true,
        };
        let (rows, has_next_page) =
            self.runtime.store().list(pid, &query).map_err(|e| ApiError::internal(e.to_string()))?;
        let edges = rows
            .iter()
            .map(|e| {
                let c = Cursor {
                    timestamp: e.position.timestamp,
                    ordinate: e.position.nonce.to_string(),
                    cron: e.position.cron.clone(),
                    sort: q.sort,
                };
                (c, node(e))
            })
            .collect();
        Ok(Connection { edges, has_next_page })
    }
}

impl<S: Scheduler, G: Gateway> CuService for Service<S, G> {
    fn info(&self) -> Value {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "timestamp": now, "address": self.address })
    }

    async fn result(&self, pid: &str, message_id: &str) -> Result<Value, ApiError> {
        self.runtime.result(pid, message_id).await.map_err(api)
    }

    async fn results(&self, pid: &str, q: ResultsQuery) -> Result<Connection, ApiError> {
        self.runtime.check_access(pid).map_err(api)?;
        self.page(pid, &q, false)
    }

    async fn cron(&self, pid: &str, q: ResultsQuery) -> Result<Connection, ApiError> {
        // Evaluates up to `to` (or the SU's clock) first, crons included.
        self.runtime.evaluate_to(pid, q.to.as_ref().map(|t| t.timestamp)).await.map_err(api)?;
        self.page(pid, &q, true)
    }

    async fn dry_run(&self, pid: &str, to: Option<String>, message: Map<String, Value>) -> Result<Value, ApiError> {
        self.runtime.dry_run(pid, message, to.as_deref()).await.map_err(api)
    }

    fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        Some(self.runtime.metrics())
    }

    fn usage(&self, pid: &str) -> Result<UsageSums, ApiError> {
        match self.runtime.store().usage(pid) {
            Ok(Some(u)) => Ok(u),
            Ok(None) => Err(ApiError::not_found(format!("no usage is recorded for process {pid}"))),
            Err(e) => Err(ApiError::internal(e.to_string())),
        }
    }

    fn usage_totals(&self) -> Result<UsageTotals, ApiError> {
        self.runtime.store().usage_totals().map_err(|e| ApiError::internal(e.to_string()))
    }

    async fn state(&self, pid: &str, to: Option<i64>) -> Result<StateBody, ApiError> {
        let (memory, last) = self.runtime.state(pid, to).await.map_err(api)?;
        Ok(StateBody {
            memory: memory.into(),
            last_timestamp: last.as_ref().map(|e| e.position.timestamp),
            last_ordinate: last.as_ref().map(|e| e.position.nonce.to_string()),
            last_block_height: last.as_ref().map(|e| e.block_height),
        })
    }
}
