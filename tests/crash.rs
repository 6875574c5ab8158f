//! Crash recovery: `metalcu dev` running aos (a stateful Lua process) is killed with SIGKILL in
//! the middle of evaluations many times; after each restart every result seen before must be
//! unchanged, and at the end every result must equal an uninterrupted evaluation of the same
//! scheduler log (the results store deleted, everything re-evaluated from the log).
//!
//! Each message increments a Lua global and returns it, so a lost, repeated or reordered
//! evaluation changes every later `Output`. Kill moments come from a fixed seed (repeatable),
//! spread over the evaluation of a batch. Needs `../shared` (the aos module; a loud failure
//! under CI). Bounded: [`CYCLES`] kills, every HTTP wait bounded.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::devchild::{DevChild, http, try_http};
use serde_json::{Value, json};

/// Kill-and-restart cycles.
const CYCLES: usize = 12;
/// Messages posted before each cycle's evaluation.
const BATCH: usize = 12;
/// Bound on one exchange (the first evaluation compiles aos).
const HTTP_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait before the kill, in ms (aos1 evaluates a message in a few ms here).
const MAX_KILL_DELAY_MS: u64 = 150;

/// Checkpoint interval given to the server: several checkpoints per batch, so kills land before,
/// during and after checkpoint writes, and restarts resume from them.
const CHECKPOINT_EVERY: &str = "5";

fn aos_args(shared: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "--checkpoint-every".into(),
        CHECKPOINT_EVERY.into(),
        "--module".into(),
        shared.join("fixtures/modules/aos1-emscripten2.wasm").into(),
        "--format".into(),
        "wasm32-unknown-emscripten2".into(),
    ]
}

fn start(dir: &Path, args: &[std::ffi::OsString]) -> DevChild {
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    DevChild::start(dir, &refs)
}

/// Posts an aos `Eval` to the scheduler; returns the message id.
fn post(dev: &DevChild, code: &str) -> String {
    let body = json!({ "process": dev.pid, "tags": [{ "name": "Action", "value": "Eval" }], "data": code });
    let (status, answer) = http(&dev.su, "POST", "/", Some(&body), HTTP_TIMEOUT);
    assert_eq!(status, 200, "posting {code:?}: {answer}");
    answer["id"].as_str().expect("id").to_string()
}

/// Every stored result of the process, by cursor (the CU evaluates up to the latest first).
fn results(dev: &DevChild) -> BTreeMap<String, Value> {
    let (status, page) = http(&dev.cu, "GET", &format!("/results/{}?limit=1000", dev.pid), None, HTTP_TIMEOUT);
    assert_eq!(status, 200, "{page}");
    let edges = page["edges"].as_array().expect("edges");
    edges.iter().map(|e| (e["cursor"].as_str().unwrap().to_string(), e["node"].clone())).collect()
}

/// A pseudo-random delay from a fixed seed (xorshift), so runs are repeatable.
fn delays(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % MAX_KILL_DELAY_MS
        })
        .collect()
}

#[test]
fn kill_9_mid_evaluation_never_changes_or_loses_a_result() {
    let Some(shared) = common::shared_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args = aos_args(&shared);
    // Warm-up: the first start compiles aos (hundreds of ms) and caches it; kills aimed at
    // evaluations must not all land in that compile.
    let dev = start(&data, &args);
    let first = post(&dev, "Count = 0\nreturn 'warm'");
    let (status, body) = http(&dev.cu, "GET", &format!("/result/{first}?process-id={}", dev.pid), None, HTTP_TIMEOUT);
    assert_eq!(status, 200, "{body}");
    dev.kill9();
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let mut last = String::new();
    let mut cut_short = 0;
    for (cycle, delay) in delays(CYCLES).into_iter().enumerate() {
        let dev = start(&data, &args);
        // Every result stored before the kill is still there, unchanged.
        let now = results(&dev);
        for (cursor, node) in &seen {
            assert_eq!(now.get(cursor), Some(node), "cycle {cycle}: result at {cursor} changed or vanished");
        }
        seen = now;
        for i in 0..BATCH {
            last = post(&dev, &format!("Count = (Count or 0) + 1\nreturn 'c{cycle} m{i} ' .. Count"));
        }
        // Ask for the last result on a thread; kill the server while it evaluates the batch.
        let (cu, pid, id) = (dev.cu.clone(), dev.pid.clone(), last.clone());
        let asker = std::thread::spawn(move || {
            try_http(&cu, "GET", &format!("/result/{id}?process-id={pid}"), None, HTTP_TIMEOUT)
        });
        std::thread::sleep(Duration::from_millis(delay));
        dev.kill9();
        if !matches!(asker.join().unwrap(), Ok((200, _))) {
            cut_short += 1;
        }
    }
    eprintln!("{cut_short} of {CYCLES} kills cut an evaluation short");
    assert!(cut_short >= 1, "no kill landed during an evaluation: the test exercised nothing");

    // Let the last batch finish, then compare with an uninterrupted evaluation of the same log.
    let dev = start(&data, &args);
    let (status, body) = http(&dev.cu, "GET", &format!("/result/{last}?process-id={}", dev.pid), None, HTTP_TIMEOUT);
    assert_eq!(status, 200, "{body}");
    let survived = results(&dev);
    for (cursor, node) in &seen {
        assert_eq!(survived.get(cursor), Some(node), "result at {cursor} changed after the last restart");
    }
    assert_eq!(survived.len(), 2 + CYCLES * BATCH, "one result per message (spawn and warm-up included)");
    let resumed = dev.stderr_all().matches("resumed from a checkpoint").count();
    let torn = dev.stderr_all().matches("left by an interrupted write").count();
    eprintln!("{resumed} restarts resumed from a checkpoint; {torn} torn checkpoint writes cleaned up");
    assert!(resumed >= 1, "no restart resumed from a checkpoint: the test exercised no resume");
    drop(dev);

    // The uninterrupted run: same scheduler log, no stored results or checkpoints.
    let fresh = tmp.path().join("fresh");
    copy_scheduler_log(&data, &fresh);
    let dev = start(&fresh, &args);
    let (status, body) = http(&dev.cu, "GET", &format!("/result/{last}?process-id={}", dev.pid), None, HTTP_TIMEOUT);
    assert_eq!(status, 200, "{body}");
    let clean = results(&dev);
    assert_eq!(clean.len(), survived.len());
    for (cursor, node) in &clean {
        assert_eq!(survived.get(cursor), Some(node), "crashed run differs from the uninterrupted run at {cursor}");
    }
    // The Lua counter reached one per message: nothing lost or repeated.
    let last_out = serde_json::to_string(&body["Output"]).unwrap();
    assert!(last_out.contains(&format!("c{} m{} {}", CYCLES - 1, BATCH - 1, CYCLES * BATCH)), "{last_out}");
}

/// SIGTERM lets the evaluation in flight finish, writes the checkpoint and exits 0; the next start
/// resumes from it with nothing to replay.
#[test]
fn sigterm_drains_checkpoints_and_exits_0() {
    let Some(shared) = common::shared_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // No checkpoint by count: the one found after the restart is the shutdown's.
    let mut args = aos_args(&shared);
    args[1] = "0".into();
    let dev = start(&data, &args);
    let mut last = String::new();
    for i in 0..10 {
        last = post(&dev, &format!("Count = (Count or 0) + 1\nreturn 'm{i} ' .. Count"));
    }
    let (status, body) = http(&dev.cu, "GET", &format!("/result/{last}?process-id={}", dev.pid), None, HTTP_TIMEOUT);
    assert_eq!(status, 200, "{body}");
    let before = results(&dev);
    let exit = dev.terminate(Duration::from_secs(60)).expect("metalcu dev exits within 60 s of SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
    let files: Vec<_> = walk(&data.join("checkpoints"));
    assert_eq!(files.len(), 1, "one checkpoint, written at shutdown: {files:?}");
    let dev = start(&data, &args);
    let more = post(&dev, "Count = (Count or 0) + 1\nreturn 'after ' .. Count");
    let (status, body) = http(&dev.cu, "GET", &format!("/result/{more}?process-id={}", dev.pid), None, HTTP_TIMEOUT);
    assert_eq!(status, 200, "{body}");
    assert!(serde_json::to_string(&body["Output"]).unwrap().contains("after 11"), "{body}");
    assert!(dev.stderr_all().contains("resumed from a checkpoint"));
    let after = results(&dev);
    for (cursor, node) in &before {
        assert_eq!(after.get(cursor), Some(node));
    }
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.file_name().is_some_and(|n| n != "LOCK") {
            out.push(p);
        }
    }
    out
}

/// Copies everything of a dev data directory except the CU's results and checkpoints: the
/// scheduler's log and the module cache.
fn copy_scheduler_log(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("cu") || name.contains("checkpoint") || entry.file_type().unwrap().is_dir() {
            continue;
        }
        std::fs::copy(entry.path(), to.join(&*name)).unwrap();
    }
}
