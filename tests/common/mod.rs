//! Helpers shared by the integration tests: where `../shared` is, and small WAT modules; an
//! async HTTP client (`http`), the io_uring skip rule and `both_transports!` (`uring`), and
//! `metalcu dev` as a child (`devchild`). The GraphQL gateway fake (`fake_gateway.rs`) is not
//! in here: the tests that serve one include it with `#[path]`.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod devchild;
pub mod http;
pub mod uring;

/// The shared test data (fixtures, goldens): `$METALCU_SHARED`, else `../shared` beside the repo.
/// Returns `None` (after saying so on stderr) when it is missing locally; panics under CI, where
/// a missing `../shared` must fail the run rather than skip it.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("METALCU_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    if dir.join("goldens/out").is_dir() && dir.join("fixtures/modules").is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("shared test data not found at {} (set METALCU_SHARED); CI requires it", dir.display());
    }
    eprintln!("NOTE: shared test data not found at {}; this test did not run", dir.display());
    None
}

/// A local scheduler in `dir/su.redb` whose clock reads `t0` for the first message and one second
/// later for each next one, so every message has its own timestamp, the same on every run.
pub fn stepping_scheduler(dir: &std::path::Path, t0: i64) -> metalcu::su::local::LocalScheduler {
    let clock = std::sync::atomic::AtomicI64::new(t0);
    metalcu::su::local::LocalScheduler::open(
        dir.join("su.redb"),
        Box::new(move || clock.fetch_add(1000, std::sync::atomic::Ordering::SeqCst)),
    )
    .unwrap()
}

/// The first `n` steps (msg, env) of the goldens file `name` in `shared`.
pub fn golden_steps(shared: &std::path::Path, name: &str, n: usize) -> Vec<(serde_json::Value, serde_json::Value)> {
    let text = std::fs::read_to_string(shared.join(format!("goldens/out/{name}.jsonl"))).expect("goldens");
    text.lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["msg"].clone(), v["env"].clone())
        })
        .collect()
}

/// The tags of a module of `format` as the tests register it: JSON in and out, 1 GiB of memory
/// and the reference's compute limit.
pub fn module_tags(format: &str) -> Vec<metalcu::su::types::Tag> {
    [
        ("Data-Protocol", "ao"),
        ("Type", "Module"),
        ("Module-Format", format),
        ("Input-Encoding", "JSON-1"),
        ("Output-Encoding", "JSON-1"),
        ("Memory-Limit", "1-gb"),
        ("Compute-Limit", "9000000000000"),
    ]
    .iter()
    .map(|(n, v)| metalcu::su::types::Tag { name: n.to_string(), value: v.to_string() })
    .collect()
}

/// The project's echo module (format-4 calling convention); see `metalcu::dev::echo_module_wat`.
pub fn echo_wat(imports: &str, items: &str, extra: &str) -> String {
    metalcu::dev::echo_module_wat(imports, items, extra)
}

/// A stateful module (format-4 calling convention): every call adds one to a counter in its
/// memory and answers `{"Output": "<counter>"}`, so a message evaluated twice, skipped, or
/// evaluated on the wrong memory shows in every later result and state hash. The call that
/// brings the counter to `slow_at` first spins `spin` iterations (a long evaluation).
/// [`counter_wat`] whose call that brings the counter to `trap_at` or past it traps after
/// writing the counter: from then on every message fails and its memory must roll back.
#[allow(dead_code)]
pub fn counter_trap_wat(trap_at: u32) -> String {
    let store = "(i32.store (i32.const 1024) (local.get $n))";
    let wat = counter_wat(0, 0);
    assert!(wat.contains(store));
    wat.replace(store, &format!("{store} (if (i32.ge_u (local.get $n) (i32.const {trap_at})) (then unreachable))"))
}

pub fn counter_wat(slow_at: u32, spin: u64) -> String {
    let prefix = r#"{"ok":true,"response":{"Output":""#;
    let escaped = prefix.replace('"', "\\\"");
    format!(
        r#"(module
  (memory (export "memory") 2 16384)
  (global $sp (mut i32) (i32.const 65536))
  (func (export "emscripten_stack_get_current") (result i32) global.get $sp)
  (func (export "_emscripten_stack_restore") (param i32) local.get 0 global.set $sp)
  (func (export "_emscripten_stack_alloc") (param i32) (result i32)
    global.get $sp local.get 0 i32.sub i32.const -16 i32.and global.set $sp global.get $sp)
  (data (i32.const 70000) "{escaped}")
  (func $copy (param $dst i32) (param $src i32) (param $n i32) (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i)) (i32.load8_u (i32.add (local.get $src) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))))
  (func (export "handle") (param $msg i32) (param $env i32) (result i32)
    (local $n i32) (local $p i32) (local $i i64) (local $len i32) (local $d i32)
    (local.set $n (i32.add (i32.load (i32.const 1024)) (i32.const 1)))
    (i32.store (i32.const 1024) (local.get $n))
    (if (i32.eq (local.get $n) (i32.const {slow_at}))
      (then (loop $spin
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br_if $spin (i64.lt_u (local.get $i) (i64.const {spin}))))))
    (local.set $p (i32.const 90020))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (call $copy (i32.const 80000) (i32.const 70000) (i32.const {plen}))
    (local.set $len (i32.sub (i32.const 90020) (local.get $p)))
    (call $copy (i32.const {body}) (local.get $p) (local.get $len))
    (local.set $d (i32.add (i32.const {body}) (local.get $len)))
    (i32.store8 (local.get $d) (i32.const 34))
    (i32.store8 offset=1 (local.get $d) (i32.const 125))
    (i32.store8 offset=2 (local.get $d) (i32.const 125))
    (i32.store8 offset=3 (local.get $d) (i32.const 0))
    i32.const 80000))
"#,
        plen = prefix.len(),
        body = 80000 + prefix.len(),
    )
}
