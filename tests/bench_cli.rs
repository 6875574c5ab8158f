//! `metalcu bench` end to end: the real binary starts `metalcu dev` (echo module) as its child,
//! runs every phase at tiny sizes and writes its JSON report; the report must hold every phase,
//! with the counts asked for, no error, positive figures, and the child must be gone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const PROCESSES: u64 = 2;
const MESSAGES: u64 = 20;
const STEADY: u64 = 10;
const DRY_RUNS: u64 = 10;
const CONCURRENCY: u64 = 4;
/// The whole run, child start and stop included, must stay well within this.
const WALL_LIMIT: Duration = Duration::from_secs(30);

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_f64().unwrap_or_else(|| panic!("{path} is not a number in the report: {cur}"))
}

fn positive(v: &Value, path: &str) {
    let n = num(v, path);
    assert!(n > 0.0 && n.is_finite(), "{path} = {n}, expected a positive figure");
}

fn no_errors(v: &Value, phase: &str) {
    for key in ["errors", "result_errors"] {
        if let Some(e) = v[phase].get(key) {
            assert_eq!(e["count"], 0, "{phase}.{key}: {e}");
        }
    }
    assert_eq!(v[phase]["complete"], true, "{phase} did not complete: {}", v[phase]);
}

#[test]
fn bench_runs_every_phase_against_a_child_dev_stack() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let data = dir.path().join("stack");
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_metalcu"))
        .args(["bench", "--processes", &PROCESSES.to_string(), "--messages", &MESSAGES.to_string()])
        .args(["--steady-messages", &STEADY.to_string(), "--dry-runs", &DRY_RUNS.to_string()])
        .args(["--concurrency", &CONCURRENCY.to_string(), "--read-seconds", "1", "--max-seconds", "60"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(elapsed < WALL_LIMIT, "bench took {elapsed:?}");
    assert!(stdout.contains("errors: none"), "{stdout}");
    assert!(stdout.contains("cold evaluation") && stdout.contains("cached /result p99"), "{stdout}");

    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["error_total"], 0);
    assert!(r["failure"].is_null() && r["stopped"].is_null(), "{r:#}");

    assert_eq!(r["setup"]["asked"], PROCESSES - 1);
    assert_eq!(r["setup"]["spawned"], PROCESSES - 1);
    no_errors(&r, "setup");

    assert_eq!(r["post"]["asked"], PROCESSES * MESSAGES);
    assert_eq!(r["post"]["posted"], PROCESSES * MESSAGES);
    assert_eq!(r["post"]["latency"]["count"], PROCESSES * MESSAGES);
    positive(&r, "post.msg_per_s");
    no_errors(&r, "post");

    assert_eq!(r["cold"]["processes"], PROCESSES);
    assert_eq!(r["cold"]["messages"], PROCESSES * MESSAGES);
    assert_eq!(r["cold"]["per_process"]["count"], PROCESSES);
    positive(&r, "cold.msg_per_s");
    positive(&r, "cold.seconds");
    no_errors(&r, "cold");

    assert_eq!(r["steady"]["messages"], STEADY);
    for part in ["round_trip", "post", "result"] {
        assert_eq!(r["steady"][part]["count"], STEADY, "steady.{part}");
        positive(&r, &format!("steady.{part}.p50_ms"));
    }
    positive(&r, "steady.msg_per_s");
    no_errors(&r, "steady");

    assert_eq!(r["cached"]["connections"], CONCURRENCY);
    assert_eq!(r["cached"]["messages"], PROCESSES * MESSAGES + STEADY);
    positive(&r, "cached.requests");
    positive(&r, "cached.req_per_s");
    assert_eq!(r["cached"]["latency"]["count"], r["cached"]["requests"]);
    for p in ["p50_ms", "p99_ms", "max_ms"] {
        positive(&r, &format!("cached.latency.{p}"));
    }
    assert!(num(&r, "cached.latency.p50_ms") <= num(&r, "cached.latency.p99_ms"));
    assert!(num(&r, "cached.latency.p99_ms") <= num(&r, "cached.latency.max_ms"));
    assert!((0.5..=1.5).contains(&num(&r, "cached.seconds")), "{}", r["cached"]);
    no_errors(&r, "cached");

    assert_eq!(r["dry_run"]["count"], DRY_RUNS);
    assert_eq!(r["dry_run"]["warm"]["count"], DRY_RUNS - 1);
    positive(&r, "dry_run.first_ms");
    positive(&r, "dry_run.warm.p99_ms");
    no_errors(&r, "dry_run");

    positive(&r, "memory_end.peak_bytes");
    positive(&r, "memory_end.rss_bytes");
    let phases: Vec<&str> = r["memory"].as_array().unwrap().iter().map(|m| m["after"].as_str().unwrap()).collect();
    assert_eq!(phases, ["start", "setup", "post", "cold", "steady", "cached", "dry-run"]);
    assert!(r["comparisons"].as_array().unwrap().len() >= 8, "{}", r["comparisons"]);

    // The child is gone: its pid is no longer a process (or, if reused, not a metalcu dev).
    let pid = r["stack"]["server_pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains("dev"), "metalcu dev (pid {pid}) is still running");
    // --data-dir is kept, with the child's data and log in it.
    assert!(Path::new(&data).join("dev").is_dir() && Path::new(&data).join("dev.log").is_file());
}

#[test]
fn bench_refuses_bad_arguments_without_starting_anything() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_metalcu")).arg("bench").args(args).output().unwrap();
    let out = run(&["--processes", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--processes 0"), "{out:?}");
    let out = run(&["--cu-url", "http://127.0.0.1:1"]);
    assert!(!out.status.success());
    let out = run(&["--module", "/nonexistent.wasm", "--format", "wasm32-unknown-emscripten4", "--max-seconds", "20"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exited before it was ready") && stderr.contains("nonexistent"), "{stderr}");
}
