//! The store decision benchmark: the production `RedbStore` against a minimal SQLite store written
//! here, on the CU's evaluation workload.
//!
//! - `insert`: one evaluation (≈2 KB result JSON) per transaction, as the CU commits each one;
//! - `by_message`: point lookup of a message's evaluation (`/result`);
//! - `page25`: a 25-row page after a cursor with errors hidden (`/results`).
//!
//! Durability is the same on both sides: redb commits with its default `Durability::Immediate`
//! (data fsync'ed before `commit` returns); SQLite runs WAL with `synchronous=FULL` (the WAL is
//! fsync'ed on every commit). `synchronous=NORMAL` would not be durable on power loss in WAL mode,
//! so it would not be the same guarantee. Both stores decode rows into `Evaluation`s and both
//! files live on the target's disk (`CARGO_TARGET_TMPDIR`), never tmpfs.
//!
//! Run: `cargo bench --bench store -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use metalcu::store::{Evaluation, Position, Query, RedbStore, Store, has_error};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

/// Processes and evaluations per process in the prefilled stores.
const PROCESSES: u64 = 20;
const PER_PROCESS: u64 = 1_000;
const PREFILL_BATCH: usize = 500;

/// A result of about 2 KB, shaped like aos output.
fn result(i: u64) -> Value {
    let data = format!("{i:>8}: ").repeat(190);
    json!({
        "Messages": [{
            "Target": "wH8S9l3Wv3kQ5r3f0m3p1QwzT1o0bqgXo6m0N8k5y2U",
            "Anchor": format!("{i:032}"),
            "Tags": [{"name": "Action", "value": "Credit-Notice"}, {"name": "Quantity", "value": i.to_string()}],
            "Data": "You received 100"
        }],
        "Assignments": [],
        "Spawns": [],
        "Output": {"data": data, "prompt": "aos> ", "print": true},
        "GasUsed": 1_000_000 + i
    })
}

fn pid(p: u64) -> String {
    format!("{p:0>43}")
}

fn message_id(p: u64, i: u64) -> String {
    format!("{:0>43}", p * 1_000_000 + i)
}

fn evaluation(p: u64, i: u64) -> Evaluation {
    let mut result = result(i);
    if i % 10 == 9 {
        result["Error"] = json!("boom");
    }
    Evaluation {
        process_id: pid(p),
        message_id: Some(message_id(p, i)),
        position: Position { timestamp: 1_712_967_091_755 + i as i64 * 1000, nonce: i, cron: None },
        block_height: 1_400_000 + i / 100,
        result,
        state_hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
        gas: 1_000_000 + i,
        usage: Default::default(),
    }
}

/// The SQLite variant: one `WITHOUT ROWID` table keyed by `(process, timestamp, nonce, cron)`
/// (`cron` is `''` for scheduled messages, so they sort before their crons) and a unique index on
/// `(process, message_id)`. Only what the benchmark exercises.
struct Sqlite {
    conn: Connection,
}

const COLUMNS: &str = "process_id, timestamp, nonce, cron, message_id, block_height, gas, state_hash, result";

impl Sqlite {
    fn open(path: &Path) -> Sqlite {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS evaluations (
                process_id TEXT NOT NULL, timestamp INTEGER NOT NULL, nonce INTEGER NOT NULL, cron TEXT NOT NULL,
                message_id TEXT, block_height INTEGER NOT NULL, gas INTEGER NOT NULL, state_hash BLOB NOT NULL,
                has_error INTEGER NOT NULL, result TEXT NOT NULL,
                PRIMARY KEY (process_id, timestamp, nonce, cron)) WITHOUT ROWID;
             CREATE UNIQUE INDEX IF NOT EXISTS by_message ON evaluations (process_id, message_id)
                WHERE message_id IS NOT NULL;",
        )
        .unwrap();
        Sqlite { conn }
    }

    /// Inserts in one transaction, never overwriting (a present row is left as it is).
    fn put_batch(&mut self, es: &[Evaluation]) {
        let txn = self.conn.transaction().unwrap();
        {
            let mut insert = txn
                .prepare_cached(
                    "INSERT INTO evaluations VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT DO NOTHING",
                )
                .unwrap();
            for e in es {
                insert
                    .execute(params![
                        e.process_id,
                        e.position.timestamp,
                        e.position.nonce as i64,
                        e.position.cron.as_deref().unwrap_or(""),
                        e.message_id,
                        e.block_height as i64,
                        e.gas as i64,
                        &e.state_hash[..],
                        has_error(&e.result),
                        serde_json::to_string(&e.result).unwrap(),
                    ])
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Evaluation> {
        let cron: String = r.get(3)?;
        let hash: Vec<u8> = r.get(7)?;
        let result: String = r.get(8)?;
        Ok(Evaluation {
            process_id: r.get(0)?,
            position: Position {
                timestamp: r.get(1)?,
                nonce: r.get::<_, i64>(2)? as u64,
                cron: (!cron.is_empty()).then_some(cron),
            },
            message_id: r.get(4)?,
            block_height: r.get::<_, i64>(5)? as u64,
            gas: r.get::<_, i64>(6)? as u64,
            usage: Default::default(),
            state_hash: hash.try_into().unwrap(),
            result: serde_json::from_str(&result).unwrap(),
        })
    }

    fn by_message(&self, process_id: &str, message_id: &str) -> Option<Evaluation> {
        let sql = format!("SELECT {COLUMNS} FROM evaluations WHERE process_id = ?1 AND message_id = ?2");
        self.conn
            .prepare_cached(&sql)
            .unwrap()
            .query_row(params![process_id, message_id], Self::row)
            .optional()
            .unwrap()
    }

    /// Ascending, errors hidden, strictly after `after`; `limit + 1` rows tell whether more follow.
    fn page(&self, process_id: &str, after: &Position, limit: usize) -> (Vec<Evaluation>, bool) {
        let sql = format!(
            "SELECT {COLUMNS} FROM evaluations
             WHERE process_id = ?1 AND (timestamp, nonce, cron) > (?2, ?3, ?4) AND has_error = 0
             ORDER BY timestamp, nonce, cron LIMIT ?5"
        );
        let mut stmt = self.conn.prepare_cached(&sql).unwrap();
        let cron = after.cron.as_deref().unwrap_or("");
        let rows =
            stmt.query_map(params![process_id, after.timestamp, after.nonce as i64, cron, limit as i64 + 1], Self::row);
        let mut page: Vec<Evaluation> = rows.unwrap().map(Result::unwrap).collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }
}

/// Deterministic pseudo-random (process, index) pairs over the prefilled data.
struct Picks(u64);

impl Picks {
    fn next(&mut self) -> (u64, u64) {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let x = self.0 >> 16;
        (x % PROCESSES, (x / PROCESSES) % PER_PROCESS)
    }
}

fn file_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn benches(c: &mut Criterion) {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (redb_dir, sqlite_dir) = (root.path().join("redb"), root.path().join("sqlite"));
    std::fs::create_dir_all(&redb_dir).unwrap();
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    let redb = RedbStore::open(redb_dir.join("store.redb")).unwrap();
    let mut sqlite = Sqlite::open(&sqlite_dir.join("store.sqlite"));

    let all: Vec<Evaluation> = (0..PROCESSES).flat_map(|p| (0..PER_PROCESS).map(move |i| evaluation(p, i))).collect();
    let value_bytes = serde_json::to_vec(&all[0].result).unwrap().len();
    for chunk in all.chunks(PREFILL_BATCH) {
        redb.put_batch(chunk).unwrap();
        sqlite.put_batch(chunk);
    }
    eprintln!(
        "prefilled {} evaluations of ~{value_bytes} B result JSON: redb {} MB, sqlite {} MB (with WAL)",
        all.len(),
        file_size(&redb_dir) / 1_000_000,
        file_size(&sqlite_dir) / 1_000_000
    );

    let mut g = c.benchmark_group("insert_commit_each");
    g.sample_size(10);
    let mut n = 0u64;
    g.bench_function("redb", |b| {
        b.iter(|| {
            n += 1;
            redb.put(&evaluation(PROCESSES + 1, PER_PROCESS + n)).unwrap();
        })
    });
    let mut n = 0u64;
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            n += 1;
            sqlite.put_batch(&[evaluation(PROCESSES + 1, PER_PROCESS + n)]);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("by_message");
    let mut picks = Picks(1);
    g.bench_function("redb", |b| {
        b.iter(|| {
            let (p, i) = picks.next();
            let e = redb.by_message(&pid(p), &message_id(p, i)).unwrap().unwrap();
            assert_eq!(e.position.nonce, i);
            black_box(e)
        })
    });
    let mut picks = Picks(1);
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            let (p, i) = picks.next();
            let e = sqlite.by_message(&pid(p), &message_id(p, i)).unwrap();
            assert_eq!(e.position.nonce, i);
            black_box(e)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("page25_hide_errors");
    let after = |i: u64| Position { timestamp: 1_712_967_091_755 + i as i64 * 1000, nonce: i, cron: None };
    let mut picks = Picks(2);
    g.bench_function("redb", |b| {
        b.iter(|| {
            let (p, i) = picks.next();
            let q = Query {
                after: Some(after(i % (PER_PROCESS - 100))),
                until: None,
                descending: false,
                limit: 25,
                cron_only: false,
                hide_errors: true,
            };
            let (page, more) = redb.list(&pid(p), &q).unwrap();
            assert!(page.len() == 25 && more);
            black_box(page)
        })
    });
    let mut picks = Picks(2);
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            let (p, i) = picks.next();
            let (page, more) = sqlite.page(&pid(p), &after(i % (PER_PROCESS - 100)), 25);
            assert!(page.len() == 25 && more);
            black_box(page)
        })
    });
    g.finish();

    // Same answers from both: the comparison is of equal work.
    let q = Query {
        after: Some(after(10)),
        until: None,
        descending: false,
        limit: 25,
        cron_only: false,
        hide_errors: true,
    };
    assert_eq!(redb.list(&pid(3), &q).unwrap(), sqlite.page(&pid(3), &after(10), 25));
    assert_eq!(redb.by_message(&pid(4), &message_id(4, 77)).unwrap(), sqlite.by_message(&pid(4), &message_id(4, 77)));
}

criterion_group!(store_benches, benches);
criterion_main!(store_benches);
