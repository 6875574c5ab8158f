//! Replays every public goldens file of `../shared/goldens/out/` through the engine with the
//! Compute Unit's rollback rule and compares every step: `result` (every field, `GasUsed`
//! included), `thrown`, `memory_len` and `memory_sha256`, as whole lines.
//!
//! - Formats `wasm32-unknown-emscripten4`, `-metering` and the two wasm64 formats: compared with
//!   the public goldens themselves.
//! - Formats `wasm32-unknown-emscripten` and `-emscripten2`: their reference glue leaks the host
//!   into the module (the generator script's path via `process.argv[1]`, and for format 2 the real
//!   `/dev/urandom`), so the public goldens encode one particular machine (ARCHITECTURE.md,
//!   "Where the reference is not reproducible"). These are compared exactly with
//!   `tests/goldens-pinned/`, produced by the same reference host with those two inputs pinned to
//!   metalcu's values (`tests/reference/gen-pinned.cjs`); against the public file the test checks
//!   the inputs and each step's outcome (result or thrown, and the `Error` text).

mod common;

use std::path::Path;

use metalcu::engine::{Engine, EngineConfig, ModuleFormat, ProcessOptions};
use metalcu::eval::{Replay, read_steps};
use serde_json::Value;

/// (golden name, module file, Module-Format, process memory cap in bytes).
const GOLDENS: [(&str, &str, &str, u64); 11] = [
    ("aos1-basics", "aos1-emscripten2.wasm", "wasm32-unknown-emscripten2", 1 << 30),
    // The reference host ignores the process's Memory-Limit (64 MiB here) for format 2; the cap
    // metalcu enforces is PROCESS_WASM_MEMORY_MAX_LIMIT (1 GiB), as the reference CU's.
    ("aos1-memory-limit", "aos1-emscripten2.wasm", "wasm32-unknown-emscripten2", 1 << 30),
    ("aos2-basics", "aos2-emscripten4.wasm", "wasm32-unknown-emscripten4", 1 << 30),
    ("aos2-metering-basics", "aos2-emscripten4.wasm", "wasm32-unknown-emscripten-metering", 1 << 30),
    ("wasm64-basics", "lua-wasm64.wasm", "wasm64-unknown-emscripten-draft_2024_02_15", 4 << 30),
    ("wasm64-metering-basics", "lua-wasm64.wasm", "wasm64-unknown-emscripten-draft_2024_10_16-metering", 4 << 30),
    ("lua1-plain", "lua-emscripten1.wasm", "wasm32-unknown-emscripten", 1 << 30),
    ("lua2-plain", "lua-emscripten2.wasm", "wasm32-unknown-emscripten2", 1 << 30),
    ("happy", "happy-emscripten1.wasm", "wasm32-unknown-emscripten", 1 << 30),
    ("sad", "sad-emscripten1.wasm", "wasm32-unknown-emscripten", 1 << 30),
    ("sqlite", "sqlite-emscripten2.wasm", "wasm32-unknown-emscripten2", 1 << 30),
];

const COMPUTE_LIMIT: u64 = 9_000_000_000_000;

fn replay(shared: &Path, name: &str) -> Vec<String> {
    let (_, module, format, cap) = GOLDENS.iter().find(|g| g.0 == name).copied().expect("listed");
    let format: ModuleFormat = format.parse().unwrap();
    let wasm = std::fs::read(shared.join("fixtures/modules").join(module)).expect("fixture module");
    let steps = read_steps(&shared.join("goldens/out").join(format!("{name}.jsonl"))).expect("goldens parse");
    let engine = Engine::new(EngineConfig { max_memory_bytes: cap, pool_slots: 2, ..EngineConfig::default() }).unwrap();
    let module = engine.load(&wasm, format).unwrap();
    let opts = ProcessOptions { memory_limit: cap, compute_limit: COMPUTE_LIMIT, weavedrive: None };
    let mut lines = Vec::new();
    Replay { engine: &engine, module, opts }
        .run(&steps, None, |_, line| {
            lines.push(line);
            Ok(())
        })
        .unwrap();
    lines
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).lines().map(str::to_string).collect()
}

fn assert_same_lines(name: &str, got: &[String], want: &[String], source: &str) {
    assert_eq!(got.len(), want.len(), "{name}: step count differs from {source}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let (gv, wv): (Value, Value) = (serde_json::from_str(g).unwrap(), serde_json::from_str(w).unwrap());
            for k in ["result", "thrown", "memory_len", "memory_sha256"] {
                assert_eq!(gv.get(k), wv.get(k), "{name} step {i}: `{k}` differs from {source}");
            }
            panic!("{name} step {i}: line differs from {source} (key order or number format)\n got: {g}\nwant: {w}");
        }
    }
}

fn outcome(v: &Value) -> (bool, Option<Value>) {
    (v.get("thrown").is_some(), v.get("result").and_then(|r| r.get("Error")).cloned())
}

fn check(name: &str) {
    let Some(shared) = common::shared_dir() else { return };
    let got = replay(&shared, name);
    let public = read_lines(&shared.join(format!("goldens/out/{name}.jsonl")));
    let format: ModuleFormat = GOLDENS.iter().find(|g| g.0 == name).unwrap().2.parse().unwrap();
    match format {
        ModuleFormat::Emscripten1 | ModuleFormat::Emscripten2 => {
            let pinned =
                read_lines(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/goldens-pinned/{name}.jsonl")));
            assert_same_lines(name, &got, &pinned, "the pinned reference goldens");
            assert_eq!(got.len(), public.len(), "{name}: step count differs from the public goldens");
            for (i, (g, p)) in got.iter().zip(&public).enumerate() {
                let (gv, pv): (Value, Value) = (serde_json::from_str(g).unwrap(), serde_json::from_str(p).unwrap());
                assert_eq!(gv["msg"], pv["msg"], "{name} step {i}: input differs");
                assert_eq!(gv["env"], pv["env"], "{name} step {i}: input differs");
                assert_eq!(outcome(&gv), outcome(&pv), "{name} step {i}: outcome differs from the public goldens");
            }
        }
        _ => assert_same_lines(name, &got, &public, "the public goldens"),
    }
}

macro_rules! golden_tests {
    ($($f:ident => $name:literal),* $(,)?) => { $( #[test] fn $f() { check($name); } )* };
}

golden_tests! {
    golden_aos1_basics => "aos1-basics",
    golden_aos1_memory_limit => "aos1-memory-limit",
    golden_aos2_basics => "aos2-basics",
    golden_aos2_metering_basics => "aos2-metering-basics",
    golden_wasm64_basics => "wasm64-basics",
    golden_wasm64_metering_basics => "wasm64-metering-basics",
    golden_lua1_plain => "lua1-plain",
    golden_lua2_plain => "lua2-plain",
    golden_happy => "happy",
    golden_sad => "sad",
    golden_sqlite => "sqlite",
}

#[test]
fn every_public_golden_is_replayed() {
    let Some(shared) = common::shared_dir() else { return };
    let mut names: Vec<String> = std::fs::read_dir(shared.join("goldens/out"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".jsonl").map(str::to_string))
        .collect();
    names.sort();
    for n in &names {
        assert!(GOLDENS.iter().any(|g| g.0 == n), "goldens/out/{n}.jsonl has no test: add it to GOLDENS");
    }
    assert_eq!(names.len(), GOLDENS.len());
}

/// Resuming from an image without start-up (the module's captured template) gives exactly what a
/// full start-up followed by a restore gives, for every fixture module and format.
#[test]
fn template_restore_equals_start_up_and_restore() {
    let Some(shared) = common::shared_dir() else { return };
    let mut seen = std::collections::HashSet::new();
    for (name, module, format, cap) in GOLDENS {
        if !seen.insert((module, format)) {
            continue;
        }
        let format: ModuleFormat = format.parse().unwrap();
        let wasm = std::fs::read(shared.join("fixtures/modules").join(module)).unwrap();
        let steps = read_steps(&shared.join("goldens/out").join(format!("{name}.jsonl"))).unwrap();
        let engine =
            Engine::new(EngineConfig { max_memory_bytes: cap, pool_slots: 4, ..EngineConfig::default() }).unwrap();
        let m = engine.load(&wasm, format).unwrap();
        let opts = ProcessOptions { memory_limit: cap, compute_limit: COMPUTE_LIMIT, weavedrive: None };
        let mut first = engine.instantiate(&m, opts.clone()).unwrap();
        first.handle(&steps[0].msg, &steps[0].env);
        let image = first.memory_image();
        let mut slow = engine.instantiate(&m, opts.clone()).unwrap();
        slow.restore(&image).unwrap();
        let mut fast = engine.instantiate_image(&m, opts, &image).unwrap();
        assert!(fast.from_template(), "{module} ({format}): no template captured");
        assert!(!slow.from_template());
        assert_eq!(slow.memory(), fast.memory(), "{module} ({format}): memory after restore");
        let (a, b) = (slow.handle(&steps[1].msg, &steps[1].env), fast.handle(&steps[1].msg, &steps[1].env));
        assert_eq!(a.result, b.result, "{module} ({format}): next result");
        assert_eq!(a.accounting.gas, b.accounting.gas, "{module} ({format}): gas");
        assert_eq!(slow.memory(), fast.memory(), "{module} ({format}): memory after the next message");
    }
}

/// WeaveDrive through asyncify on the real aos2 module: `io.open` of a `/data/<id>` path is served
/// by the configured drive (open, reads, close each unwind and rewind the stack), and without a
/// drive the file is not found, as in the reference.
#[test]
fn weavedrive_serves_data_to_aos2() {
    use metalcu::engine::weavedrive::MapDrive;
    let Some(shared) = common::shared_dir() else { return };
    let wasm = std::fs::read(shared.join("fixtures/modules/aos2-emscripten4.wasm")).unwrap();
    let steps = read_steps(&shared.join("goldens/out/aos2-basics.jsonl")).unwrap();
    let engine = Engine::new(EngineConfig { pool_slots: 2, ..EngineConfig::default() }).unwrap();
    let m = engine.load(&wasm, ModuleFormat::Emscripten4).unwrap();
    let data = "hello from arweave ".repeat(1000);
    let drive = MapDrive::new([("/data/abc".to_string(), data.clone().into_bytes())].into());
    // aos2's `fread` returns the requested count whatever WeaveDrive read (the module's own
    // contract), so a reader asks for a known size rather than reading to the end.
    let code = format!(
        "local f = io.open('/data/abc', 'r'); if not f then return 'missing' end; local s = f:read({}); f:close(); return #s .. ':' .. s:sub(1, 18)",
        data.len()
    );
    let run = |drive: Option<std::sync::Arc<dyn metalcu::engine::weavedrive::WeaveDrive>>| {
        let opts = ProcessOptions { weavedrive: drive, ..ProcessOptions::default() };
        let mut p = engine.instantiate(&m, opts).unwrap();
        p.handle(&steps[0].msg, &steps[0].env);
        let mut msg = steps[1].msg.clone();
        msg["Data"] = Value::String(code.clone());
        let r = p.handle(&msg, &steps[1].env).result.expect("eval runs");
        r["Output"]["data"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(run(Some(std::sync::Arc::new(drive))), format!("{}:hello from arweave", data.len()));
    assert_eq!(run(None), "missing");
}

/// The state hash kept from the kernel's record of written pages equals a hash of all of memory
/// after every step of real modules (aos1, aos2, wasm64), including steps that fail.
#[test]
fn tracked_state_hashes_equal_full_hashes_on_real_modules() {
    use metalcu::engine::dirty::StateHasher;
    let Some(shared) = common::shared_dir() else { return };
    let engine = Engine::new(EngineConfig { pool_slots: 4, ..EngineConfig::default() }).unwrap();
    for (file, format, golden) in [
        ("aos1-emscripten2.wasm", ModuleFormat::Emscripten2, "aos1-basics.jsonl"),
        ("aos2-emscripten4.wasm", ModuleFormat::Emscripten4, "aos2-basics.jsonl"),
        ("lua-wasm64.wasm", ModuleFormat::Wasm64, "wasm64-basics.jsonl"),
    ] {
        let golden_path = shared.join("goldens/out").join(golden);
        if !golden_path.exists() {
            panic!("{} is missing", golden_path.display());
        }
        let wasm = std::fs::read(shared.join("fixtures/modules").join(file)).unwrap();
        let steps = read_steps(&golden_path).unwrap();
        let m = engine.load(&wasm, format).unwrap();
        let mut p = engine.instantiate(&m, ProcessOptions::default()).unwrap();
        for (i, step) in steps.iter().enumerate() {
            p.handle(&step.msg, &step.env);
            let tracked = p.state_hash();
            assert_eq!(tracked, StateHasher::full(p.memory()), "{file} step {i}");
        }
        eprintln!("{file}: kernel write tracking {}", p.state_hash_tracked());
    }
}
