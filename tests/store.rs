//! The evaluations store's behaviour, one suite run against both implementations: the in-memory
//! fake (`MemoryStore`) and the production redb store (`RedbStore`, in a fresh file per test).
//! Each behaviour is a generic function over `Store`; `both!` instantiates it as a test in the
//! `memory` and `redb` modules. redb-only behaviours (durability across reopen, corruption,
//! schema versions) follow at the end.

use metalcu::store::{Evaluation, MAX_PAGE, MemoryStore, Position, Query, RedbStore, Store, StoreError};
use serde_json::{Value, json};

fn pos(timestamp: i64, nonce: u64, cron: Option<&str>) -> Position {
    Position { timestamp, nonce, cron: cron.map(str::to_owned) }
}

/// An evaluation whose every field depends on its identity, so a mixed-up row cannot pass.
fn eval(process_id: &str, message_id: Option<&str>, position: Position, result: Value) -> Evaluation {
    let seed = format!("{process_id}/{message_id:?}/{position:?}");
    Evaluation {
        process_id: process_id.to_owned(),
        message_id: message_id.map(str::to_owned),
        block_height: 1_000 + position.nonce,
        gas: position.timestamp.unsigned_abs() * 7 + position.nonce,
        usage: Default::default(),
        state_hash: *blake3::hash(seed.as_bytes()).as_bytes(),
        position,
        result,
    }
}

fn ok_result(data: &str) -> Value {
    json!({
        "Messages": [],
        "Assignments": [],
        "Spawns": [],
        "Output": {"data": data, "prompt": "aos> ", "print": true},
        "GasUsed": 42
    })
}

/// A scheduled message's evaluation, message id `m-<ts>-<nonce>`.
fn msg(process_id: &str, timestamp: i64, nonce: u64) -> Evaluation {
    let id = format!("m-{timestamp}-{nonce}");
    eval(process_id, Some(&id), pos(timestamp, nonce, None), ok_result(&id))
}

/// A cron evaluation (no message id).
fn cron(process_id: &str, timestamp: i64, nonce: u64, cron_id: &str) -> Evaluation {
    eval(process_id, None, pos(timestamp, nonce, Some(cron_id)), ok_result(cron_id))
}

fn failed(mut e: Evaluation, error: Value) -> Evaluation {
    e.result["Error"] = error;
    e
}

fn all() -> Query {
    Query { after: None, until: None, descending: false, limit: MAX_PAGE, cron_only: false, hide_errors: false }
}

fn positions(page: &[Evaluation]) -> Vec<Position> {
    page.iter().map(|e| e.position.clone()).collect()
}

fn put_all(s: &impl Store, es: &[Evaluation]) {
    for e in es {
        s.put(e).unwrap_or_else(|err| panic!("put {:?}: {err}", e.position));
    }
}

/// Lists with `q` and checks the page holds exactly `expected`, in order, with `more`.
fn assert_list(s: &impl Store, pid: &str, q: &Query, expected: &[&Evaluation], more: bool) {
    let (page, has_more) = s.list(pid, q).unwrap();
    let expected: Vec<Evaluation> = expected.iter().map(|&e| e.clone()).collect();
    assert_eq!(positions(&page), positions(&expected), "positions for {q:?}");
    assert_eq!(page, expected, "rows for {q:?}");
    assert_eq!(has_more, more, "has_more for {q:?}");
}

fn put_then_read_round_trips(s: &impl Store) {
    let mut e = msg("proc", 1_712_967_091_755, 23);
    // Key order, floats, unicode and nesting must come back as given (served byte for byte).
    e.result = json!({
        "Output": {"prompt": "aos> ", "data": "héllo \u{1F600} \"quoted\"\n", "print": true},
        "Messages": [{"Target": "t", "Tags": [{"name": "Action", "value": "Credit-Notice"}], "Data": "1"}],
        "Spawns": [],
        "Assignments": [{"Processes": ["a", "b"], "Message": "m"}],
        "GasUsed": 18446744073709551615u64,
        "Ratio": 0.1,
        "Error": null
    });
    let c = cron("proc", 1_712_967_092_755, 23, "0-10-seconds");
    put_all(s, &[e.clone(), c.clone()]);

    let got = s.at("proc", &e.position).unwrap().expect("stored at its position");
    assert_eq!(got, e);
    assert_eq!(serde_json::to_string(&got.result).unwrap(), serde_json::to_string(&e.result).unwrap());
    assert_eq!(s.by_message("proc", "m-1712967091755-23").unwrap(), Some(e.clone()));
    assert_eq!(s.at("proc", &c.position).unwrap(), Some(c.clone()));
    assert_eq!(s.at("proc", &pos(1_712_967_092_755, 23, Some("0-20-seconds"))).unwrap(), None);
    assert_eq!(s.at("proc", &pos(1_712_967_092_755, 23, None)).unwrap(), None);
    assert_eq!(s.at("other", &e.position).unwrap(), None);
}

fn identical_put_is_a_no_op(s: &impl Store) {
    let e = msg("proc", 10, 1);
    let c = cron("proc", 10, 1, "0-1-minutes");
    put_all(s, &[e.clone(), c.clone(), e.clone(), c.clone()]);
    // The same content, with the result's keys in another order, is still the same evaluation.
    let mut reordered = e.clone();
    reordered.result =
        json!({"GasUsed": 42, "Output": e.result["Output"].clone(), "Spawns": [], "Assignments": [], "Messages": []});
    s.put(&reordered).unwrap();
    assert_list(s, "proc", &all(), &[&e, &c], false);
    assert_eq!(s.by_message("proc", "m-10-1").unwrap(), Some(e));
}

fn conflicting_put_is_refused_and_original_kept(s: &impl Store) {
    let e = msg("proc", 10, 1);
    s.put(&e).unwrap();
    let mut other_result = e.clone();
    other_result.result = ok_result("different");
    let mut other_hash = e.clone();
    other_hash.state_hash[0] ^= 1;
    let mut other_gas = e.clone();
    other_gas.gas += 1;
    let mut no_message = e.clone();
    no_message.message_id = None;
    for bad in [other_result, other_hash, other_gas, no_message] {
        match s.put(&bad) {
            Err(StoreError::Conflict(what)) => assert!(what.contains("proc,10,1"), "names the evaluation: {what}"),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    // The same message id at another position is refused too, and writes nothing.
    let mut moved = e.clone();
    moved.position = pos(11, 2, None);
    assert!(matches!(s.put(&moved), Err(StoreError::Conflict(what)) if what.contains("m-10-1")));
    assert_eq!(s.at("proc", &moved.position).unwrap(), None);

    assert_eq!(s.at("proc", &e.position).unwrap(), Some(e.clone()));
    assert_eq!(s.by_message("proc", "m-10-1").unwrap(), Some(e.clone()));
    assert_list(s, "proc", &all(), &[&e], false);
}

/// Shuffled insertion of a stream that exercises every ordering rule; returns it in stream order.
fn stream(s: &impl Store, pid: &str) -> Vec<Evaluation> {
    let ordered = vec![
        msg(pid, -5, 0),                   // negative timestamps sort first
        msg(pid, 0, 1),                    // 0 after −5
        msg(pid, 100, 2),                  //
        cron(pid, 100, 2, "0-10-seconds"), // crons after the scheduled message at (100, 2)
        cron(pid, 100, 2, "1-10-seconds"), // crons among themselves by id
        msg(pid, 100, 9),                  // nonce 9 …
        msg(pid, 100, 10),                 // … before 10 (numeric, not textual)
        msg(pid, 101, 3),                  // timestamp dominates nonce
        cron(pid, 200, 11, "0-10-seconds"),
        msg(pid, 1_712_967_091_755, 12),
    ];
    let mut shuffled = ordered.clone();
    shuffled.reverse();
    shuffled.swap(1, 6);
    shuffled.swap(3, 8);
    put_all(s, &shuffled);
    ordered
}

fn lists_in_stream_order(s: &impl Store) {
    let es = stream(s, "proc");
    assert_list(s, "proc", &all(), &es.iter().collect::<Vec<_>>(), false);
}

fn after_is_exclusive_and_until_inclusive(s: &impl Store) {
    let es = stream(s, "proc");
    let q = |after: Option<usize>, until: Option<usize>| Query {
        after: after.map(|i| es[i].position.clone()),
        until: until.map(|i| es[i].position.clone()),
        ..all()
    };
    let slice = |from: usize, to: usize| es[from..to].iter().collect::<Vec<_>>();
    assert_list(s, "proc", &q(Some(2), None), &slice(3, es.len()), false);
    assert_list(s, "proc", &q(None, Some(3)), &slice(0, 4), false);
    assert_list(s, "proc", &q(Some(2), Some(6)), &slice(3, 7), false);
    assert_list(s, "proc", &q(Some(3), Some(4)), &slice(4, 5), false);
    assert_list(s, "proc", &q(Some(4), Some(4)), &[], false);
    assert_list(s, "proc", &q(Some(6), Some(2)), &[], false);
    assert_list(s, "proc", &q(Some(es.len() - 1), None), &[], false);
    // Bounds need not be stored positions.
    let between = Query { after: Some(pos(100, 2, None)), until: Some(pos(100, 9, Some("z"))), ..all() };
    assert_list(s, "proc", &between, &slice(3, 6), false);
    let before_all = Query { until: Some(pos(-6, u64::MAX, Some("z"))), ..all() };
    assert_list(s, "proc", &before_all, &[], false);
    let whole_ms = Query { after: Some(pos(99, u64::MAX, None)), until: Some(pos(100, u64::MAX, None)), ..all() };
    assert_list(s, "proc", &whole_ms, &slice(2, 7), false);
}

fn descending_reverses_the_order(s: &impl Store) {
    let es = stream(s, "proc");
    let reversed: Vec<&Evaluation> = es.iter().rev().collect();
    assert_list(s, "proc", &Query { descending: true, ..all() }, &reversed, false);
    // Bounds keep their meaning (after exclusive, until inclusive); the page starts at the top.
    let q =
        Query { after: Some(es[1].position.clone()), until: Some(es[5].position.clone()), descending: true, ..all() };
    assert_list(s, "proc", &q, &[&es[5], &es[4], &es[3], &es[2]], false);
    let q = Query { limit: 2, ..q };
    assert_list(s, "proc", &q, &[&es[5], &es[4]], true);
}

fn limit_caps_the_page_and_reports_more(s: &impl Store) {
    let es = stream(s, "proc");
    let n = es.len();
    let q = |limit| Query { limit, ..all() };
    let prefix = |k: usize| es[..k].iter().collect::<Vec<_>>();
    assert_list(s, "proc", &q(3), &prefix(3), true);
    assert_list(s, "proc", &q(n - 1), &prefix(n - 1), true);
    assert_list(s, "proc", &q(n), &prefix(n), false);
    assert_list(s, "proc", &q(n + 1), &prefix(n), false);
    assert_list(s, "proc", &q(0), &[], true);
    assert_list(s, "proc", &q(usize::MAX), &prefix(n), false);
    // Paging with the last row as the next `after` visits every row once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, more) = s.list("proc", &Query { after: after.clone(), limit: 3, ..all() }).unwrap();
        assert!(page.len() <= 3);
        after = page.last().map(|e| e.position.clone());
        seen.extend(page);
        if !more {
            break;
        }
    }
    assert_eq!(seen, es);
}

fn hide_errors_skips_failed_evaluations(s: &impl Store) {
    let ok1 = msg("proc", 1, 1);
    let boom = failed(msg("proc", 2, 2), json!("boom"));
    let null_error = failed(msg("proc", 3, 3), Value::Null);
    let object_error = failed(msg("proc", 4, 4), json!({"message": "x"}));
    let empty_string_error = failed(msg("proc", 5, 5), json!(""));
    let nested_error = eval("proc", Some("m-6"), pos(6, 6, None), json!({"Output": {"Error": "nested"}}));
    let cron_err = failed(cron("proc", 6, 6, "0-1-seconds"), json!(false));
    let ok2 = msg("proc", 7, 7);
    let trailing_err = failed(msg("proc", 8, 8), json!(1));
    let es =
        [&ok1, &boom, &null_error, &object_error, &empty_string_error, &nested_error, &cron_err, &ok2, &trailing_err];
    put_all(s, &es.map(Clone::clone));

    assert_list(s, "proc", &all(), &es, false);
    let visible = [&ok1, &null_error, &nested_error, &ok2];
    let hide = Query { hide_errors: true, ..all() };
    assert_list(s, "proc", &hide, &visible, false);
    // has_more is computed after filtering: only errors follow ok2.
    assert_list(s, "proc", &Query { limit: 4, ..hide.clone() }, &visible, false);
    assert_list(s, "proc", &Query { limit: 3, ..hide.clone() }, &visible[..3], true);
    assert_list(s, "proc", &Query { descending: true, limit: 1, ..hide.clone() }, &[&ok2], true);
    assert_list(s, "proc", &Query { after: Some(ok2.position.clone()), ..hide.clone() }, &[], false);
    assert_list(s, "proc", &Query { after: Some(ok2.position.clone()), limit: 0, ..hide }, &[], false);
    // Failed evaluations are still stored and readable directly.
    assert_eq!(s.by_message("proc", "m-2-2").unwrap(), Some(boom));
    assert_eq!(s.latest("proc").unwrap(), Some(trailing_err));
}

fn cron_only_returns_cron_evaluations(s: &impl Store) {
    let es = stream(s, "proc");
    let c_err = failed(cron("proc", 300, 12, "0-10-seconds"), json!("cron failed"));
    let tail = msg("proc", 400, 13);
    put_all(s, &[c_err.clone(), tail.clone()]);
    let crons: Vec<&Evaluation> = es.iter().filter(|e| e.position.cron.is_some()).collect();
    assert_eq!(crons.len(), 3);
    let q = Query { cron_only: true, ..all() };
    let mut with_err = crons.clone();
    with_err.push(&c_err);
    assert_list(s, "proc", &q, &with_err, false);
    assert_list(s, "proc", &Query { hide_errors: true, ..q.clone() }, &crons, false);
    assert_list(s, "proc", &Query { limit: 2, ..q.clone() }, &crons[..2], true);
    // After/until on positions that are not cron positions.
    assert_list(
        s,
        "proc",
        &Query { after: Some(es[2].position.clone()), until: Some(es[5].position.clone()), ..q.clone() },
        &crons[..2],
        false,
    );
    assert_list(
        s,
        "proc",
        &Query { after: Some(crons[0].position.clone()), limit: 1, ..q.clone() },
        &crons[1..2],
        true,
    );
    assert_list(
        s,
        "proc",
        &Query { after: Some(crons[2].position.clone()), hide_errors: true, ..q.clone() },
        &[],
        false,
    );
    assert_list(
        s,
        "proc",
        &Query { descending: true, limit: 2, hide_errors: true, ..q.clone() },
        &[crons[2], crons[1]],
        true,
    );
    assert_list(s, "other", &q, &[], false);
}

fn latest_is_last_in_stream_order(s: &impl Store) {
    assert_eq!(s.latest("proc").unwrap(), None);
    let a = msg("proc", 5, 5);
    s.put(&a).unwrap();
    assert_eq!(s.latest("proc").unwrap(), Some(a.clone()));
    let earlier = msg("proc", 4, 9);
    s.put(&earlier).unwrap();
    assert_eq!(s.latest("proc").unwrap(), Some(a.clone()), "a later insert of an earlier position");
    let c = cron("proc", 5, 5, "0-10-seconds");
    s.put(&c).unwrap();
    assert_eq!(s.latest("proc").unwrap(), Some(c.clone()), "a cron after its scheduled message");
    let failed_last = failed(msg("proc", 6, 6), json!("boom"));
    s.put(&failed_last).unwrap();
    assert_eq!(s.latest("proc").unwrap(), Some(failed_last), "errors included");
}

fn by_message_finds_the_evaluation_of_a_message(s: &impl Store) {
    let es = stream(s, "proc");
    for e in es.iter().filter(|e| e.message_id.is_some()) {
        assert_eq!(s.by_message("proc", e.message_id.as_deref().unwrap()).unwrap().as_ref(), Some(e));
    }
    assert_eq!(s.by_message("proc", "missing").unwrap(), None);
    assert_eq!(s.by_message("proc", "").unwrap(), None);
    assert_eq!(s.by_message("other", "m-0-1").unwrap(), None);
    // The spawn message's id is the process id.
    let spawn = eval("pid-spawn", Some("pid-spawn"), pos(1, 0, None), ok_result("spawned"));
    s.put(&spawn).unwrap();
    assert_eq!(s.by_message("pid-spawn", "pid-spawn").unwrap(), Some(spawn));
}

fn processes_are_isolated(s: &impl Store) {
    // Neighbours of "p" in byte order on both sides, and ids that extend it.
    let pids = ["p", "p2", "pp", "p\u{1}", "o", "q", "p\u{7f}x"];
    for pid in pids {
        put_all(s, &[msg(pid, 1, 1), msg(pid, 2, 2), cron(pid, 2, 2, "0-1-seconds")]);
    }
    // The same message id in two processes is two evaluations.
    let shared_p = eval("p", Some("shared"), pos(3, 3, None), ok_result("in p"));
    let shared_p2 = eval("p2", Some("shared"), pos(3, 3, None), ok_result("in p2"));
    put_all(s, &[shared_p.clone(), shared_p2.clone()]);
    assert_eq!(s.by_message("p", "shared").unwrap(), Some(shared_p.clone()));
    assert_eq!(s.by_message("p2", "shared").unwrap(), Some(shared_p2));

    for pid in pids {
        for q in [all(), Query { descending: true, ..all() }, Query { cron_only: true, ..all() }] {
            let (page, more) = s.list(pid, &q).unwrap();
            assert!(!more);
            assert!(page.iter().all(|e| e.process_id == pid), "{pid:?} {q:?}: {:?}", positions(&page));
            let expected = match (pid, q.cron_only) {
                (_, true) => 1,
                ("p" | "p2", false) => 4,
                _ => 3,
            };
            assert_eq!(page.len(), expected, "{pid:?} {q:?}");
        }
        let latest = s.latest(pid).unwrap().unwrap();
        assert_eq!(latest.process_id, pid);
        assert_eq!(s.at(pid, &pos(1, 1, None)).unwrap().unwrap().process_id, pid);
    }
    assert_eq!(s.latest("p").unwrap(), Some(shared_p));
    for absent in ["", "p3", "P", "p\0", "\0"] {
        assert_eq!(s.list(absent, &all()).unwrap(), (Vec::new(), false), "{absent:?}");
        assert_eq!(s.latest(absent).unwrap(), None, "{absent:?}");
        assert_eq!(s.at(absent, &pos(1, 1, None)).unwrap(), None, "{absent:?}");
    }
}

fn invalid_ids_are_refused(s: &impl Store) {
    let long = "x".repeat(metalcu::store::redb::MAX_ID_BYTES + 1);
    let bad = [
        msg("p\0q", 1, 1),
        msg("", 1, 1),
        msg(&long, 1, 1),
        eval("proc", Some(""), pos(1, 1, None), ok_result("")),
        eval("proc", Some(&long), pos(1, 1, None), ok_result("")),
        eval("proc", None, pos(1, 1, Some("")), ok_result("")),
        eval("proc", None, pos(1, 1, Some(&long)), ok_result("")),
    ];
    for e in &bad {
        assert!(matches!(s.put(e), Err(StoreError::Io(m)) if m.contains("refused")), "{:?}", e.position);
    }
    assert_eq!(s.list("proc", &all()).unwrap(), (Vec::new(), false));
    assert_eq!(s.latest("p").unwrap(), None);
}

fn many_evaluations(s: &impl Store) {
    const N: u64 = 5_000;
    let mut es = Vec::new();
    for i in 0..N {
        let ts = 1_700_000_000_000 + (i / 3) as i64; // three messages per millisecond
        let e = msg("big", ts, i);
        let e = if i % 7 == 0 { failed(e, json!(format!("error {i}"))) } else { e };
        es.push(e);
        if i % 50 == 49 {
            es.push(cron("big", ts, i, "0-10-seconds"));
        }
    }
    put_all(s, &es);
    put_all(s, &[msg("big2", 1, 1)]);

    // Capped at MAX_PAGE; paging both ways visits every row once, in order.
    let (page, more) = s.list("big", &Query { limit: usize::MAX, ..all() }).unwrap();
    assert_eq!((page.len(), more), (MAX_PAGE, true));
    assert_eq!(page[..], es[..MAX_PAGE]);
    for descending in [false, true] {
        let mut seen = Vec::new();
        let mut after = None;
        let mut until = None;
        loop {
            let q = Query { after: after.clone(), until: until.clone(), descending, ..all() };
            let (page, more) = s.list("big", &q).unwrap();
            if let Some(last) = page.last() {
                *(if descending { &mut until } else { &mut after }) = Some(last.position.clone());
            }
            // Descending pages continue *below* the last row: until is inclusive, so skip it.
            seen.extend(page.into_iter().skip(usize::from(descending && !seen.is_empty())));
            if !more {
                break;
            }
            assert!(seen.len() <= es.len());
        }
        let mut expected = es.clone();
        if descending {
            expected.reverse();
        }
        assert_eq!(seen.len(), expected.len(), "descending {descending}");
        assert!(seen == expected, "descending {descending}: order differs");
    }

    let hidden = es.iter().filter(|e| e.result.get("Error").is_some()).count();
    let mut visible = 0;
    let mut after = None;
    loop {
        let (page, more) =
            s.list("big", &Query { after: after.clone(), hide_errors: true, limit: 700, ..all() }).unwrap();
        assert!(page.iter().all(|e| e.result.get("Error").is_none()));
        visible += page.len();
        after = page.last().map(|e| e.position.clone());
        if !more {
            break;
        }
    }
    assert_eq!(visible + hidden, es.len());
    let (crons, more) = s.list("big", &Query { cron_only: true, ..all() }).unwrap();
    assert_eq!((crons.len(), more), (N as usize / 50, false));
    assert_eq!(s.latest("big").unwrap().as_ref(), es.last());
    for i in (0..N).step_by(499) {
        let ts = 1_700_000_000_000 + (i / 3) as i64;
        let id = format!("m-{ts}-{i}");
        let e = s.by_message("big", &id).unwrap().unwrap();
        assert_eq!(e.position, pos(ts, i, None));
    }
}

fn tempdir() -> tempfile::TempDir {
    // On the target's disk, so fsync is real.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $name() {
                let s = metalcu::store::MemoryStore::new();
                super::$name(&s);
            })*
        }
        mod redb {
            $(#[test]
            fn $name() {
                let dir = super::tempdir();
                let s = metalcu::store::RedbStore::open(dir.path().join("store.redb")).unwrap();
                super::$name(&s);
            })*
        }
    };
}

both!(
    put_then_read_round_trips,
    identical_put_is_a_no_op,
    conflicting_put_is_refused_and_original_kept,
    lists_in_stream_order,
    after_is_exclusive_and_until_inclusive,
    descending_reverses_the_order,
    limit_caps_the_page_and_reports_more,
    hide_errors_skips_failed_evaluations,
    cron_only_returns_cron_evaluations,
    latest_is_last_in_stream_order,
    by_message_finds_the_evaluation_of_a_message,
    processes_are_isolated,
    invalid_ids_are_refused,
    many_evaluations,
);

#[test]
fn memory_store_counts_rows() {
    let s = MemoryStore::new();
    assert!(s.is_empty());
    stream(&s, "proc");
    assert_eq!(s.len(), 10);
}

#[test]
fn redb_store_persists_across_reopen() {
    let dir = tempdir();
    let path = dir.path().join("store.redb");
    let es = {
        let s = RedbStore::open(&path).unwrap();
        let es = stream(&s, "proc");
        s.put(&msg("p2", 1, 1)).unwrap();
        es
    };
    let s = RedbStore::open(&path).unwrap();
    assert_list(&s, "proc", &all(), &es.iter().collect::<Vec<_>>(), false);
    assert_eq!(s.latest("proc").unwrap().as_ref(), es.last());
    assert_eq!(s.by_message("proc", "m-100-9").unwrap().as_ref(), Some(&es[5]));
    assert_eq!(s.list("proc", &Query { cron_only: true, ..all() }).unwrap().0.len(), 3);
    assert_eq!(s.latest("p2").unwrap(), Some(msg("p2", 1, 1)));
    // Still never rewritten after a reopen.
    s.put(&es[0]).unwrap();
    let mut changed = es[0].clone();
    changed.gas += 1;
    assert!(matches!(s.put(&changed), Err(StoreError::Conflict(_))));
    drop(s);
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.at("proc", &es[0].position).unwrap().as_ref(), Some(&es[0]));
}

#[test]
fn redb_store_is_exclusive_to_one_opener() {
    let dir = tempdir();
    let path = dir.path().join("store.redb");
    let _s = RedbStore::open(&path).unwrap();
    assert!(matches!(RedbStore::open(&path), Err(StoreError::Io(m)) if m.contains("store.redb")));
}

#[test]
fn redb_store_refuses_a_file_that_is_not_a_store() {
    let dir = tempdir();
    let path = dir.path().join("junk.redb");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    assert!(RedbStore::open(&path).is_err());
}

const RAW_EVALUATIONS: ::redb::TableDefinition<&[u8], &[u8]> = ::redb::TableDefinition::new("evaluations");

/// Rewrites every value of the raw `evaluations` table with `f`.
fn tamper(path: &std::path::Path, f: impl Fn(&mut Vec<u8>)) {
    use ::redb::ReadableTable;
    let db = ::redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(RAW_EVALUATIONS).unwrap();
        let rows: Vec<(Vec<u8>, Vec<u8>)> =
            t.iter().unwrap().map(|r| r.unwrap()).map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).collect();
        for (k, mut v) in rows {
            f(&mut v);
            t.insert(k.as_slice(), v.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[test]
fn redb_store_reports_corrupt_rows_naming_them() {
    for (what, damage) in [
        ("format", (|v: &mut Vec<u8>| v[0] = 0xee) as fn(&mut Vec<u8>)),
        ("JSON", |v: &mut Vec<u8>| v.truncate(v.len() - 1)),
        ("short", |v: &mut Vec<u8>| v.truncate(10)),
        ("error flag", |v: &mut Vec<u8>| v[1] ^= 1),
    ] {
        let dir = tempdir();
        let path = dir.path().join("store.redb");
        let e = msg("proc", 1_712_967_091_755, 23);
        RedbStore::open(&path).unwrap().put(&e).unwrap();
        tamper(&path, damage);
        let s = RedbStore::open(&path).unwrap();
        let named = |r: Result<_, StoreError>| match r {
            Err(StoreError::Corrupt(m)) => assert!(m.contains("proc,1712967091755,23"), "{what}: {m}"),
            Err(other) => panic!("{what}: expected Corrupt, got {other}"),
            Ok(_) => panic!("{what}: corrupt row read as valid"),
        };
        named(s.at("proc", &e.position).map(drop));
        named(s.by_message("proc", "m-1712967091755-23").map(drop));
        named(s.latest("proc").map(drop));
        named(s.list("proc", &all()).map(drop));
        // And it is never "repaired" by a put over it.
        assert!(s.put(&e).is_err(), "{what}");
    }
}

#[test]
fn redb_store_refuses_another_schema_version() {
    let dir = tempdir();
    let path = dir.path().join("store.redb");
    drop(RedbStore::open(&path).unwrap());
    {
        let db = ::redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(::redb::TableDefinition::<&str, u64>::new("meta")).unwrap().insert("schema", 99).unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(RedbStore::open(&path), Err(StoreError::Corrupt(m)) if m.contains("schema 99")));
}

#[test]
fn redb_put_batch_is_all_or_nothing() {
    let dir = tempdir();
    let s = RedbStore::open(dir.path().join("store.redb")).unwrap();
    let a = msg("proc", 1, 1);
    let b = msg("proc", 2, 2);
    let mut b_changed = b.clone();
    b_changed.gas += 1;
    // A conflict inside the batch (with an earlier row of the same batch) aborts all of it.
    assert!(
        matches!(s.put_batch(&[a.clone(), b.clone(), b_changed]), Err(StoreError::Conflict(m)) if m.contains("proc,2,2"))
    );
    assert_eq!(s.list("proc", &all()).unwrap(), (Vec::new(), false));
    // Identical repeats are no-ops, within the batch and against the store.
    s.put_batch(&[a.clone(), b.clone(), a.clone()]).unwrap();
    s.put_batch(std::slice::from_ref(&b)).unwrap();
    s.put_batch(&[]).unwrap();
    assert_list(&s, "proc", &all(), &[&a, &b], false);
    let too_many = vec![a.clone(); metalcu::store::redb::MAX_BATCH + 1];
    assert!(matches!(s.put_batch(&too_many), Err(StoreError::Io(m)) if m.contains("refused")));
}
