//! An in-memory [`Store`]: the fake the server's tests run against, and the oracle the redb store
//! is checked against (`tests/store.rs` runs one suite on both).
//!
//! It keeps the real store's semantics with the plainest structures: per process a
//! `BTreeMap<Position, Evaluation>` (so stream order is `Position`'s `Ord`, independent of redb's
//! byte keys) and a `(process, message) → Position` index. Same refusals ([`validate`]), same
//! error test ([`has_error`]), same page cap; nothing is ever overwritten or removed. Nothing is
//! durable: the data lives as long as the value.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::redb::{has_error, queryable_process, validate};
use super::{Evaluation, MAX_PAGE, Position, Query, Store, StoreError, Usage, UsageSums, UsageTotals};

#[derive(Default)]
struct State {
    processes: BTreeMap<String, BTreeMap<Position, Evaluation>>,
    by_message: HashMap<(String, String), Position>,
    usage: HashMap<String, UsageSums>,
    totals: UsageSums,
}

/// Evaluations in memory, behind one mutex.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored evaluations, all processes together.
    pub fn len(&self) -> usize {
        self.lock().processes.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied put (see `put`), so a poisoned
        // lock still guards consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn name(process_id: &str, p: &Position) -> String {
    match &p.cron {
        Some(c) => format!("{process_id},{},{},{c}", p.timestamp, p.nonce),
        None => format!("{process_id},{},{}", p.timestamp, p.nonce),
    }
}

impl Store for MemoryStore {
    fn put(&self, e: &Evaluation) -> Result<(), StoreError> {
        let result_bytes =
            serde_json::to_vec(&e.result).map_err(|err| StoreError::Io(format!("encoding result: {err}")))?.len();
        validate(e, result_bytes)?;
        let mut state = self.lock();
        let State { processes, by_message, usage, totals } = &mut *state;
        if let Some(old) = processes.get(&e.process_id).and_then(|p| p.get(&e.position)) {
            return if old == e { Ok(()) } else { Err(StoreError::Conflict(name(&e.process_id, &e.position))) };
        }
        // All checks first, then both writes: a refused put changes nothing.
        if let Some(message_id) = &e.message_id {
            let index_key = (e.process_id.clone(), message_id.clone());
            if let Some(other) = by_message.get(&index_key) {
                return Err(StoreError::Conflict(format!(
                    "{} (message {message_id} is already stored as {})",
                    name(&e.process_id, &e.position),
                    name(&e.process_id, other)
                )));
            }
            by_message.insert(index_key, e.position.clone());
        }
        // As in redb: usage is summed, not kept in the row.
        let row = Evaluation { usage: Usage::default(), ..e.clone() };
        processes.entry(e.process_id.clone()).or_default().insert(e.position.clone(), row);
        usage.entry(e.process_id.clone()).or_default().add(e.gas, &e.usage);
        totals.add(e.gas, &e.usage);
        Ok(())
    }

    fn by_message(&self, process_id: &str, message_id: &str) -> Result<Option<Evaluation>, StoreError> {
        let state = self.lock();
        let Some(position) = state.by_message.get(&(process_id.to_owned(), message_id.to_owned())) else {
            return Ok(None);
        };
        let e = state.processes.get(process_id).and_then(|p| p.get(position));
        debug_assert!(e.is_some_and(|e| e.message_id.as_deref() == Some(message_id)), "index matches rows");
        Ok(e.cloned())
    }

    fn at(&self, process_id: &str, position: &Position) -> Result<Option<Evaluation>, StoreError> {
        Ok(self.lock().processes.get(process_id).and_then(|p| p.get(position)).cloned())
    }

    fn latest(&self, process_id: &str) -> Result<Option<Evaluation>, StoreError> {
        Ok(self.lock().processes.get(process_id).and_then(|p| p.last_key_value()).map(|(_, e)| e.clone()))
    }

    fn usage(&self, process_id: &str) -> Result<Option<UsageSums>, StoreError> {
        Ok(self.lock().usage.get(process_id).copied())
    }

    fn usage_totals(&self) -> Result<UsageTotals, StoreError> {
        let state = self.lock();
        Ok(UsageTotals { processes: state.usage.len() as u64, sums: state.totals })
    }

    fn list(&self, process_id: &str, q: &Query) -> Result<(Vec<Evaluation>, bool), StoreError> {
        if !queryable_process(process_id) {
            return Ok((Vec::new(), false));
        }
        if let (Some(a), Some(u)) = (&q.after, &q.until)
            && a >= u
        {
            return Ok((Vec::new(), false));
        }
        let state = self.lock();
        let Some(rows) = state.processes.get(process_id) else { return Ok((Vec::new(), false)) };
        let range = (
            q.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded),
            q.until.as_ref().map_or(Bound::Unbounded, Bound::Included),
        );
        let matching =
            |e: &&Evaluation| (!q.cron_only || e.position.cron.is_some()) && (!q.hide_errors || !has_error(&e.result));
        let limit = q.limit.min(MAX_PAGE);
        let mut page: Vec<Evaluation> = if q.descending {
            rows.range(range).rev().map(|(_, e)| e).filter(matching).take(limit + 1).cloned().collect()
        } else {
            rows.range(range).map(|(_, e)| e).filter(matching).take(limit + 1).cloned().collect()
        };
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }
}
