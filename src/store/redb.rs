//! The production evaluations store, on redb (ACID, copy-on-write B-trees, durable on commit).
//!
//! Layout (schema version [`SCHEMA_VERSION`], recorded in table `meta`):
//!
//! - `evaluations`: key → value, one row per evaluation. The key is order-preserving:
//!   `process_id ‖ 0x00 ‖ be64(timestamp ^ 2^63) ‖ be64(nonce) ‖ cron-flag ‖ cron`, with cron-flag
//!   0 (scheduled, no cron bytes) or 1 (cron, then the id's bytes). Byte order of keys is then
//!   `(process, timestamp, nonce, cron)` with `None` before any cron id, exactly `Position`'s
//!   `Ord`; a process's rows are the range `[pid ‖ 0x00, pid ‖ 0x01)`, which no other process id
//!   can fall into because process ids never contain NUL (refused on `put`).
//! - `by_message`: `process_id ‖ 0x00 ‖ message_id` → evaluation key.
//! - `cron`: evaluation key → flags byte, for cron evaluations only, so `/cron` listings scan
//!   cron rows only.
//! - `usage`: `process_id` → its [`UsageSums`] (encoded by [`UsageSums::encode`]);
//!   `usage_totals`: [`TOTALS_KEY`] → `be64(processes) ‖ UsageSums` of every process. Both change
//!   in the transaction that inserts the evaluations they count, and only for rows inserted.
//!   Schema 1 stores (before usage accounting) are upgraded on open: the sums are rebuilt from
//!   the rows' gas and count, with CPU, wall time and memory unknown (0) for those rows.
//!
//! Values (format [`VALUE_FORMAT`]): `format u8 ‖ flags u8 ‖ state_hash [32] ‖ be64(block_height)
//! ‖ be64(gas) ‖ be16(message id length) ‖ message id ‖ result JSON`. Flags: bit 0 = the result
//! has an error (see [`has_error`]), bit 1 = a message id is present. The error flag lets
//! listings that hide errors skip rows without parsing JSON; it is checked against the JSON
//! whenever a row is decoded (a disagreement is corruption).
//!
//! Invariants: a row is never overwritten or deleted (`put` is insert-if-absent, compared on
//! conflict); the tables change in one transaction; every id is at most [`MAX_ID_BYTES`],
//! every result at most [`MAX_RESULT_BYTES`]; every listing returns at most [`MAX_PAGE`] rows.
//! A listing reads at most `limit + 1` matching rows; rows it skips (failed evaluations when errors
//! are hidden) are judged by their flags byte without decoding. Anything read that does not decode
//! is [`StoreError::Corrupt`] naming its key. Commits use redb's default durability (`Immediate`:
//! the data is fsync'ed before `commit` returns).

use std::ops::Bound;
use std::path::Path;

use ::redb::{Database, ReadableTable, TableDefinition};
use serde_json::Value;

use super::usage::{SUMS_BYTES, Usage, UsageSums, UsageTotals};
use super::{Evaluation, MAX_PAGE, Position, Query, Store, StoreError};

/// Longest process id, message id or cron id accepted, in bytes (Arweave ids are 43).
pub const MAX_ID_BYTES: usize = 1024;
/// Largest result accepted, as JSON bytes (the engine's own cap on a result string).
pub const MAX_RESULT_BYTES: usize = 256 << 20;
/// Most evaluations one [`RedbStore::put_batch`] takes.
pub const MAX_BATCH: usize = MAX_PAGE;
/// Version of the row encoding written by this code (first byte of every value).
pub const VALUE_FORMAT: u8 = 1;
/// Version of the table layout (table `meta`, key `schema`). 2 added the usage tables.
pub const SCHEMA_VERSION: u64 = 2;
/// The oldest layout [`RedbStore::open`] upgrades.
pub const OLDEST_SCHEMA: u64 = 1;
/// The key of the one row of `usage_totals`.
pub const TOTALS_KEY: &str = "all";

const EVALUATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("evaluations");
const BY_MESSAGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("by_message");
const CRON: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cron");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
const USAGE_TOTALS: TableDefinition<&str, &[u8]> = TableDefinition::new("usage_totals");

const FLAG_ERROR: u8 = 1;
const FLAG_MESSAGE: u8 = 2;
/// format, flags, state hash, block height, gas, message id length.
const HEADER_BYTES: usize = 1 + 1 + 32 + 8 + 8 + 2;
/// Separates the process id from the rest of a key; never part of a process id.
const SEPARATOR: u8 = 0x00;
/// Timestamp, nonce, cron flag: the fixed part of a key after the separator.
const KEY_FIXED_BYTES: usize = 8 + 8 + 1;

/// Whether an evaluation failed: its result is an object whose `Error` is present and not null.
pub fn has_error(result: &Value) -> bool {
    result.get("Error").is_some_and(|e| !e.is_null())
}

/// Checks what both stores refuse on `put`: empty or oversized ids, NUL in a process id (it would
/// break the key order), an oversized result. `result_bytes` is the result's JSON length.
pub fn validate(e: &Evaluation, result_bytes: usize) -> Result<(), StoreError> {
    let refuse =
        |what: String| Err(StoreError::Io(format!("refused evaluation of process {:?}: {what}", e.process_id)));
    let id_ok = |s: &str| !s.is_empty() && s.len() <= MAX_ID_BYTES;
    if !id_ok(&e.process_id) || e.process_id.as_bytes().contains(&SEPARATOR) {
        return refuse(format!("process id must be 1..={MAX_ID_BYTES} bytes without NUL"));
    }
    if e.message_id.as_deref().is_some_and(|m| !id_ok(m)) {
        return refuse(format!("message id must be 1..={MAX_ID_BYTES} bytes"));
    }
    if e.position.cron.as_deref().is_some_and(|c| !id_ok(c)) {
        return refuse(format!("cron id must be 1..={MAX_ID_BYTES} bytes"));
    }
    if result_bytes > MAX_RESULT_BYTES {
        return refuse(format!("result is {result_bytes} bytes, more than {MAX_RESULT_BYTES}"));
    }
    Ok(())
}

/// Whether `process_id` can name a stored process (queries for any other id find nothing).
pub(crate) fn queryable_process(process_id: &str) -> bool {
    !process_id.is_empty() && process_id.len() <= MAX_ID_BYTES && !process_id.as_bytes().contains(&SEPARATOR)
}

/// The reference's evaluation id, `pid,timestamp,nonce[,cron]`: how errors name a row.
fn display_key(process_id: &str, p: &Position) -> String {
    match &p.cron {
        Some(c) => format!("{process_id},{},{},{c}", p.timestamp, p.nonce),
        None => format!("{process_id},{},{}", p.timestamp, p.nonce),
    }
}

/// A stored key named for humans: decoded if it decodes, hex otherwise.
fn name_key(key: &[u8]) -> String {
    match decode_key(key) {
        Some((pid, p)) => display_key(&pid, &p),
        None => format!("0x{}", hex::encode(key)),
    }
}

fn encode_key(process_id: &str, p: &Position) -> Vec<u8> {
    let cron = p.cron.as_deref().unwrap_or("");
    let mut k = Vec::with_capacity(process_id.len() + 1 + KEY_FIXED_BYTES + cron.len());
    k.extend_from_slice(process_id.as_bytes());
    k.push(SEPARATOR);
    // Flipping the sign bit maps i64 order onto unsigned big-endian byte order.
    k.extend_from_slice(&((p.timestamp as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(&p.nonce.to_be_bytes());
    k.push(u8::from(p.cron.is_some()));
    k.extend_from_slice(cron.as_bytes());
    k
}

fn decode_key(k: &[u8]) -> Option<(String, Position)> {
    let sep = k.iter().position(|&b| b == SEPARATOR)?;
    let pid = std::str::from_utf8(&k[..sep]).ok()?;
    let rest = &k[sep + 1..];
    if rest.len() < KEY_FIXED_BYTES {
        return None;
    }
    let timestamp = (u64::from_be_bytes(rest[0..8].try_into().ok()?) ^ (1 << 63)) as i64;
    let nonce = u64::from_be_bytes(rest[8..16].try_into().ok()?);
    let cron = match (rest[16], &rest[KEY_FIXED_BYTES..]) {
        (0, []) => None,
        (1, c) if !c.is_empty() => Some(std::str::from_utf8(c).ok()?.to_owned()),
        _ => return None,
    };
    Some((pid.to_owned(), Position { timestamp, nonce, cron }))
}

/// `[pid ‖ 0x00, pid ‖ 0x01)`: every key of the process and nothing else.
fn process_range(process_id: &str) -> (Vec<u8>, Vec<u8>) {
    let mut lo = Vec::with_capacity(process_id.len() + 1);
    lo.extend_from_slice(process_id.as_bytes());
    lo.push(SEPARATOR);
    let mut hi = lo.clone();
    *hi.last_mut().expect("non-empty") = SEPARATOR + 1;
    (lo, hi)
}

fn message_key(process_id: &str, message_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(process_id.len() + 1 + message_id.len());
    k.extend_from_slice(process_id.as_bytes());
    k.push(SEPARATOR);
    k.extend_from_slice(message_id.as_bytes());
    k
}

fn encode_value(e: &Evaluation, result_json: &[u8]) -> Vec<u8> {
    let message = e.message_id.as_deref().unwrap_or("");
    let mut flags = 0;
    if has_error(&e.result) {
        flags |= FLAG_ERROR;
    }
    if e.message_id.is_some() {
        flags |= FLAG_MESSAGE;
    }
    let mut v = Vec::with_capacity(HEADER_BYTES + message.len() + result_json.len());
    v.push(VALUE_FORMAT);
    v.push(flags);
    v.extend_from_slice(&e.state_hash);
    v.extend_from_slice(&e.block_height.to_be_bytes());
    v.extend_from_slice(&e.gas.to_be_bytes());
    // validate() bounds ids to MAX_ID_BYTES, far below u16::MAX.
    v.extend_from_slice(&u16::try_from(message.len()).expect("message id bounded").to_be_bytes());
    v.extend_from_slice(message.as_bytes());
    v.extend_from_slice(result_json);
    v
}

fn decode_value(key: &[u8], v: &[u8]) -> Result<Evaluation, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("evaluation {}: {what}", name_key(key)));
    let (process_id, position) = decode_key(key).ok_or_else(|| corrupt("undecodable key"))?;
    if v.len() < HEADER_BYTES {
        return Err(corrupt(&format!("value of {} bytes is shorter than its header", v.len())));
    }
    if v[0] != VALUE_FORMAT {
        return Err(corrupt(&format!("unknown value format {}", v[0])));
    }
    let flags = v[1];
    if flags & !(FLAG_ERROR | FLAG_MESSAGE) != 0 {
        return Err(corrupt(&format!("unknown flags {flags:#04x}")));
    }
    let be64 = |at: usize| u64::from_be_bytes(v[at..at + 8].try_into().expect("8 bytes"));
    let state_hash: [u8; 32] = v[2..34].try_into().expect("32 bytes");
    let block_height = be64(34);
    let gas = be64(42);
    let message_len = usize::from(u16::from_be_bytes([v[50], v[51]]));
    let message_end = HEADER_BYTES + message_len;
    if message_end > v.len() || (flags & FLAG_MESSAGE == 0 && message_len != 0) {
        return Err(corrupt("bad message id length"));
    }
    let message_id = match flags & FLAG_MESSAGE {
        0 => None,
        _ => Some(
            std::str::from_utf8(&v[HEADER_BYTES..message_end])
                .map_err(|_| corrupt("message id is not UTF-8"))?
                .to_owned(),
        ),
    };
    let result: Value =
        serde_json::from_slice(&v[message_end..]).map_err(|err| corrupt(&format!("result JSON: {err}")))?;
    if has_error(&result) != (flags & FLAG_ERROR != 0) {
        return Err(corrupt("error flag disagrees with the result"));
    }
    Ok(Evaluation { process_id, message_id, position, block_height, result, state_hash, gas, usage: Usage::default() })
}

fn encode_totals(t: &UsageTotals) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + SUMS_BYTES);
    v.extend_from_slice(&t.processes.to_be_bytes());
    v.extend_from_slice(&t.sums.encode());
    v
}

fn decode_totals(v: &[u8]) -> Result<UsageTotals, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("usage totals: undecodable value of {} bytes", v.len()));
    if v.len() != 8 + SUMS_BYTES {
        return Err(corrupt());
    }
    let processes = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
    Ok(UsageTotals { processes, sums: UsageSums::decode(&v[8..]).ok_or_else(corrupt)? })
}

fn decode_sums(process_id: &str, v: &[u8]) -> Result<UsageSums, StoreError> {
    UsageSums::decode(v).ok_or_else(|| StoreError::Corrupt(format!("usage of process {process_id}: undecodable value")))
}

/// Adds `added` (sums per process, of rows inserted in `txn`) to the usage tables, in `txn`.
fn add_usage(txn: &::redb::WriteTransaction, added: &[(String, UsageSums)]) -> Result<(), StoreError> {
    if added.is_empty() {
        return Ok(());
    }
    let mut usage = txn.open_table(USAGE).map_err(io)?;
    let mut totals_table = txn.open_table(USAGE_TOTALS).map_err(io)?;
    let mut totals = match totals_table.get(TOTALS_KEY).map_err(io)? {
        Some(v) => decode_totals(v.value())?,
        None => UsageTotals::default(),
    };
    for (pid, add) in added {
        let old = usage.get(pid.as_str()).map_err(io)?.map(|v| decode_sums(pid, v.value())).transpose()?;
        if old.is_none() {
            totals.processes += 1;
        }
        let mut sums = old.unwrap_or_default();
        sums.merge(add);
        usage.insert(pid.as_str(), sums.encode().as_slice()).map_err(io)?;
        totals.sums.merge(add);
    }
    totals_table.insert(TOTALS_KEY, encode_totals(&totals).as_slice()).map_err(io)?;
    Ok(())
}

/// Schema 1 → 2: rebuilds the usage sums from the stored rows (count and gas; CPU, wall time and
/// memory were not recorded then and count as 0).
fn upgrade_from_1(txn: &::redb::WriteTransaction) -> Result<(), StoreError> {
    let mut per: Vec<(String, UsageSums)> = Vec::new();
    {
        let evaluations = txn.open_table(EVALUATIONS).map_err(io)?;
        for row in evaluations.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let (key, value) = (k.value(), v.value());
            let (pid, _) = decode_key(key)
                .ok_or_else(|| StoreError::Corrupt(format!("evaluation {}: undecodable key", name_key(key))))?;
            if value.len() < HEADER_BYTES || value[0] != VALUE_FORMAT {
                return Err(StoreError::Corrupt(format!("evaluation {}: bad value header", name_key(key))));
            }
            let gas = u64::from_be_bytes(value[42..50].try_into().expect("8 bytes"));
            // Rows come in key order, so a process's rows are contiguous.
            match per.last_mut() {
                Some((p, sums)) if *p == pid => sums.add(gas, &Usage::default()),
                _ => {
                    let mut sums = UsageSums::default();
                    sums.add(gas, &Usage::default());
                    per.push((pid, sums));
                }
            }
        }
    }
    add_usage(txn, &per)
}

fn io(e: impl Into<::redb::Error>) -> StoreError {
    match e.into() {
        ::redb::Error::Corrupted(what) => StoreError::Corrupt(what),
        other => StoreError::Io(other.to_string()),
    }
}

/// What a `put` found.
enum Put {
    Inserted,
    AlreadyThere,
}

/// Evaluations in a redb file. Cheap to share: all methods take `&self`; writers are serialised
/// by redb, readers see the last committed state.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens the store at `path`, creating the file and its tables if absent. Fails with
    /// [`StoreError::Io`] if the file is locked by another process or is not a redb file, and
    /// [`StoreError::Corrupt`] if it holds another schema version.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = Database::create(path).map_err(|e| StoreError::Io(format!("opening {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(io)?;
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            let stored = meta.get("schema").map_err(io)?.map(|v| v.value());
            match stored {
                None => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(io)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(OLDEST_SCHEMA) => {
                    tracing::info!("{}: upgrading the results store to schema {SCHEMA_VERSION}", path.display());
                    upgrade_from_1(&txn)?;
                    meta.insert("schema", SCHEMA_VERSION).map_err(io)?;
                }
                Some(other) => {
                    return Err(StoreError::Corrupt(format!(
                        "{} has store schema {other}; this build reads {SCHEMA_VERSION}",
                        path.display()
                    )));
                }
            }
            txn.open_table(EVALUATIONS).map_err(io)?;
            txn.open_table(BY_MESSAGE).map_err(io)?;
            txn.open_table(CRON).map_err(io)?;
            txn.open_table(USAGE).map_err(io)?;
            txn.open_table(USAGE_TOTALS).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        Ok(RedbStore { db })
    }

    /// Stores up to [`MAX_BATCH`] evaluations in one transaction (one commit, one fsync): all or
    /// nothing. Each is checked as [`Store::put`] checks it, against the store and the batch before
    /// it; the first refusal or conflict aborts the whole batch. For imports and catch-up bursts.
    fn put_all(&self, es: &[Evaluation]) -> Result<(), StoreError> {
        if es.len() > MAX_BATCH {
            return Err(StoreError::Io(format!("refused batch of {} evaluations: at most {MAX_BATCH}", es.len())));
        }
        let mut rows = Vec::with_capacity(es.len());
        for e in es {
            let result_json =
                serde_json::to_vec(&e.result).map_err(|err| StoreError::Io(format!("encoding result: {err}")))?;
            validate(e, result_json.len())?;
            rows.push((encode_key(&e.process_id, &e.position), encode_value(e, &result_json)));
        }
        let txn = self.db.begin_write().map_err(io)?;
        // Usage of the rows actually inserted, per process in first-seen order.
        let mut added: Vec<(String, UsageSums)> = Vec::new();
        for (e, (key, value)) in es.iter().zip(&rows) {
            match Self::put_in(&txn, e, key, value) {
                Ok(Put::Inserted) => match added.iter_mut().find(|(p, _)| *p == e.process_id) {
                    Some((_, sums)) => sums.add(e.gas, &e.usage),
                    None => {
                        let mut sums = UsageSums::default();
                        sums.add(e.gas, &e.usage);
                        added.push((e.process_id.clone(), sums));
                    }
                },
                Ok(Put::AlreadyThere) => {}
                Err(err) => {
                    txn.abort().map_err(io)?;
                    return Err(err);
                }
            }
        }
        if added.is_empty() {
            return txn.abort().map_err(io);
        }
        if let Err(err) = add_usage(&txn, &added) {
            txn.abort().map_err(io)?;
            return Err(err);
        }
        txn.commit().map_err(io)
    }

    /// Inserts `e` in `txn` unless it is there; nothing is written when this fails.
    fn put_in(txn: &::redb::WriteTransaction, e: &Evaluation, key: &[u8], value: &[u8]) -> Result<Put, StoreError> {
        let mut evaluations = txn.open_table(EVALUATIONS).map_err(io)?;
        if let Some(old) = evaluations.get(key).map_err(io)? {
            let old = old.value();
            if old == value || decode_value(key, old)? == *e {
                return Ok(Put::AlreadyThere);
            }
            return Err(StoreError::Conflict(name_key(key)));
        }
        if let Some(message_id) = &e.message_id {
            let mut by_message = txn.open_table(BY_MESSAGE).map_err(io)?;
            let index_key = message_key(&e.process_id, message_id);
            if let Some(other) = by_message.get(index_key.as_slice()).map_err(io)? {
                // The evaluation key is absent, so the message is stored at another position.
                return Err(StoreError::Conflict(format!(
                    "{} (message {message_id} is already stored as {})",
                    name_key(key),
                    name_key(other.value())
                )));
            }
            by_message.insert(index_key.as_slice(), key).map_err(io)?;
        }
        if e.position.cron.is_some() {
            txn.open_table(CRON).map_err(io)?.insert(key, &value[1..2]).map_err(io)?;
        }
        evaluations.insert(key, value).map_err(io)?;
        if cfg!(debug_assertions) {
            // Pair the encoding with its decoding: what is committed reads back as what was given.
            let back = evaluations.get(key).map_err(io)?.map(|v| decode_value(key, v.value()));
            debug_assert_eq!(back.transpose().ok().flatten().as_ref(), Some(e), "row {} reads back", name_key(key));
        }
        Ok(Put::Inserted)
    }
}

impl Store for RedbStore {
    fn put(&self, e: &Evaluation) -> Result<(), StoreError> {
        self.put_all(std::slice::from_ref(e))
    }

    fn put_batch(&self, es: &[Evaluation]) -> Result<(), StoreError> {
        self.put_all(es)
    }

    fn by_message(&self, process_id: &str, message_id: &str) -> Result<Option<Evaluation>, StoreError> {
        if !queryable_process(process_id) || message_id.is_empty() || message_id.len() > MAX_ID_BYTES {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(io)?;
        let by_message = txn.open_table(BY_MESSAGE).map_err(io)?;
        let index_key = message_key(process_id, message_id);
        let Some(key) = by_message.get(index_key.as_slice()).map_err(io)? else {
            return Ok(None);
        };
        let key = key.value();
        let evaluations = txn.open_table(EVALUATIONS).map_err(io)?;
        let Some(value) = evaluations.get(key).map_err(io)? else {
            return Err(StoreError::Corrupt(format!(
                "message {message_id} of process {process_id} is indexed at {}, which is absent",
                name_key(key)
            )));
        };
        let e = decode_value(key, value.value())?;
        if e.process_id != process_id || e.message_id.as_deref() != Some(message_id) {
            return Err(StoreError::Corrupt(format!(
                "message {message_id} of process {process_id} is indexed at {}, which holds another message",
                name_key(key)
            )));
        }
        Ok(Some(e))
    }

    fn at(&self, process_id: &str, position: &Position) -> Result<Option<Evaluation>, StoreError> {
        if !queryable_process(process_id) {
            return Ok(None);
        }
        let key = encode_key(process_id, position);
        let txn = self.db.begin_read().map_err(io)?;
        let evaluations = txn.open_table(EVALUATIONS).map_err(io)?;
        let value = evaluations.get(key.as_slice()).map_err(io)?;
        value.map(|v| decode_value(&key, v.value())).transpose()
    }

    fn latest(&self, process_id: &str) -> Result<Option<Evaluation>, StoreError> {
        if !queryable_process(process_id) {
            return Ok(None);
        }
        let (lo, hi) = process_range(process_id);
        let txn = self.db.begin_read().map_err(io)?;
        let evaluations = txn.open_table(EVALUATIONS).map_err(io)?;
        let mut rows = evaluations.range(lo.as_slice()..hi.as_slice()).map_err(io)?;
        match rows.next_back() {
            None => Ok(None),
            Some(row) => {
                let (k, v) = row.map_err(io)?;
                decode_value(k.value(), v.value()).map(Some)
            }
        }
    }

    fn usage(&self, process_id: &str) -> Result<Option<UsageSums>, StoreError> {
        if !queryable_process(process_id) {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(io)?;
        let usage = txn.open_table(USAGE).map_err(io)?;
        let v = usage.get(process_id).map_err(io)?;
        v.map(|v| decode_sums(process_id, v.value())).transpose()
    }

    fn usage_totals(&self) -> Result<UsageTotals, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let totals = txn.open_table(USAGE_TOTALS).map_err(io)?;
        let v = totals.get(TOTALS_KEY).map_err(io)?;
        v.map(|v| decode_totals(v.value())).transpose().map(Option::unwrap_or_default)
    }

    fn list(&self, process_id: &str, q: &Query) -> Result<(Vec<Evaluation>, bool), StoreError> {
        if !queryable_process(process_id) {
            return Ok((Vec::new(), false));
        }
        let limit = q.limit.min(MAX_PAGE);
        let (lo, hi) = process_range(process_id);
        // Keys of positions always lie inside [lo, hi), so the bounds never leave the process.
        let lower = q.after.as_ref().map(|a| encode_key(process_id, a));
        let upper = q.until.as_ref().map(|u| encode_key(process_id, u));
        if let (Some(a), Some(u)) = (&lower, &upper)
            && a >= u
        {
            return Ok((Vec::new(), false));
        }
        let range: (Bound<&[u8]>, Bound<&[u8]>) = (
            lower.as_deref().map_or(Bound::Included(lo.as_slice()), Bound::Excluded),
            upper.as_deref().map_or(Bound::Excluded(hi.as_slice()), Bound::Included),
        );
        let txn = self.db.begin_read().map_err(io)?;
        let evaluations = txn.open_table(EVALUATIONS).map_err(io)?;
        // /cron listings walk the cron index (value: the row's flags) instead of every row.
        let (mut rows, flags_at) = if q.cron_only {
            (txn.open_table(CRON).map_err(io)?.range::<&[u8]>(range).map_err(io)?, 0)
        } else {
            (evaluations.range::<&[u8]>(range).map_err(io)?, 1)
        };
        let mut page = Vec::with_capacity(limit.min(64));
        loop {
            let row = if q.descending { rows.next_back() } else { rows.next() };
            let Some(row) = row else { return Ok((page, false)) };
            let (k, v) = row.map_err(io)?;
            let (key, value) = (k.value(), v.value());
            let Some(&flags) = value.get(flags_at) else {
                return Err(StoreError::Corrupt(format!("evaluation {}: empty value", name_key(key))));
            };
            if q.hide_errors && flags & FLAG_ERROR != 0 {
                continue;
            }
            if page.len() == limit {
                return Ok((page, true));
            }
            let e = if q.cron_only {
                let Some(row) = evaluations.get(key).map_err(io)? else {
                    return Err(StoreError::Corrupt(format!("cron index names {}, which is absent", name_key(key))));
                };
                let e = decode_value(key, row.value())?;
                if e.position.cron.is_none() || u8::from(has_error(&e.result)) != flags & FLAG_ERROR {
                    return Err(StoreError::Corrupt(format!("cron index disagrees with {}", name_key(key))));
                }
                e
            } else {
                decode_value(key, value)?
            };
            page.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(timestamp: i64, nonce: u64, cron: Option<&str>) -> Position {
        Position { timestamp, nonce, cron: cron.map(str::to_owned) }
    }

    #[test]
    fn key_order_is_position_order() {
        let mut positions = vec![
            pos(i64::MIN, 0, None),
            pos(-1, u64::MAX, Some("z")),
            pos(0, 0, None),
            pos(0, 0, Some("0-1-seconds")),
            pos(0, 0, Some("0-1-secondsX")),
            pos(0, 1, None),
            pos(0, 256, None),
            pos(1, 0, None),
            pos(i64::MAX, u64::MAX, Some("a")),
        ];
        let sorted = positions.clone();
        positions.reverse();
        positions.sort_by_key(|p| encode_key("p", p));
        assert_eq!(positions, sorted);
        for p in &sorted {
            assert_eq!(decode_key(&encode_key("p", p)), Some(("p".to_owned(), p.clone())));
        }
    }

    #[test]
    fn corrupt_values_name_their_key() {
        let key = encode_key("proc", &pos(5, 7, None));
        let err = decode_value(&key, &[VALUE_FORMAT + 1; HEADER_BYTES]).unwrap_err();
        assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("proc,5,7") && m.contains("format")), "{err}");
        let e = Evaluation {
            process_id: "proc".into(),
            message_id: Some("m".into()),
            position: pos(5, 7, None),
            block_height: 1,
            result: serde_json::json!({"Output": "x"}),
            state_hash: [3; 32],
            gas: 9,
            usage: Usage::default(),
        };
        let mut v = encode_value(&e, br#"{"Output":"x"}"#);
        assert_eq!(decode_value(&key, &v).unwrap(), e);
        v[1] |= FLAG_ERROR;
        assert!(matches!(decode_value(&key, &v), Err(StoreError::Corrupt(m)) if m.contains("error flag")));
        let truncated = &v[..v.len() - 1];
        assert!(matches!(decode_value(&key, truncated), Err(StoreError::Corrupt(m)) if m.contains("proc,5,7")));
    }
}
