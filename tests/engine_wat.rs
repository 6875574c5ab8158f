//! Engine behaviour on small modules this project writes itself (runs on a fresh clone): the call
//! protocol, determinism, accounting, and containment of hostile modules — each hostile case must
//! give a clear error while the same engine keeps serving a well-behaved process.

mod common;

use std::sync::Arc;
use std::time::Duration;

use metalcu::engine::{Engine, EngineConfig, EngineError, LoadedModule, ModuleFormat, ProcessOptions};
use serde_json::{Value, json};

const F4: ModuleFormat = ModuleFormat::Emscripten4;

fn engine() -> Engine {
    Engine::new(EngineConfig {
        max_memory_bytes: 256 << 20,
        pool_slots: 8,
        deadline: Duration::from_secs(2),
        ..EngineConfig::default()
    })
    .expect("engine")
}

fn wat(src: &str) -> Vec<u8> {
    wat::parse_str(src).expect("valid WAT")
}

fn load(e: &Engine, src: &str, format: ModuleFormat) -> Arc<LoadedModule> {
    e.load(&wat(src), format).expect("module loads")
}

fn msg(n: u32) -> Value {
    json!({ "Id": format!("msg-{n}"), "Tags": [{ "name": "Action", "value": "Echo" }], "Data": "ünïcödé ✓", "Block-Height": 1 })
}

/// A well-behaved process on `e` still answers: the engine survived whatever ran before.
fn assert_engine_still_serves(e: &Engine) {
    let m = load(e, &common::echo_wat("", "", ""), F4);
    let mut p = e.instantiate(&m, ProcessOptions::default()).expect("instantiate");
    let out = p.handle(&msg(7), &json!({}));
    assert_eq!(out.result.expect("echo succeeds")["Output"], msg(7));
}

#[test]
fn echo_round_trips_the_message_exactly() {
    let e = engine();
    let m = load(&e, &common::echo_wat("", "", ""), F4);
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    let out = p.handle(&msg(1), &json!({ "Process": { "Id": "p" } }));
    let r = out.result.expect("ok response");
    assert_eq!(r["Output"], msg(1));
    assert_eq!(r["Patches"], json!([]), "Patches defaults to []");
    assert!(!r.contains_key("Error"), "absent fields stay absent");
    assert_eq!(out.accounting.gas, 0, "format 4 has no metering");
    assert_eq!(out.accounting.memory_bytes, 2 * 65536);
    assert!(out.accounting.wall > Duration::ZERO);
}

#[test]
fn same_log_gives_same_memory() {
    let e = engine();
    let m = load(&e, &common::echo_wat("", "", ""), F4);
    let run = || {
        let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
        for n in 0..5 {
            assert!(p.handle(&msg(n), &json!({})).result.is_ok());
        }
        blake3::hash(p.memory())
    };
    assert_eq!(run(), run());
}

#[test]
fn metering_format_counts_gas_and_stops_at_the_limit() {
    let e = engine();
    let m = load(&e, &common::echo_wat("", "", ""), ModuleFormat::Emscripten4Metering);
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    let a = p.handle(&msg(1), &json!({}));
    let b = p.handle(&msg(1), &json!({}));
    assert!(a.accounting.gas > 0, "instrumented module reports gas");
    assert_eq!(a.accounting.gas, b.accounting.gas, "gas is deterministic and per call");
    let looping = common::echo_wat("", "", "(loop $spin (br $spin))");
    let m = load(&e, &looping, ModuleFormat::Emscripten4Metering);
    let mut p = e.instantiate(&m, ProcessOptions { compute_limit: 1_000_000, ..ProcessOptions::default() }).unwrap();
    assert_eq!(p.handle(&msg(1), &json!({})).result.unwrap_err(), "out of gas!");
    assert_engine_still_serves(&e);
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline() {
    let e = engine();
    let m = load(&e, &common::echo_wat("", "", "(loop $spin (br $spin))"), F4);
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    let t = std::time::Instant::now();
    let out = p.handle(&msg(1), &json!({}));
    assert_eq!(out.result.unwrap_err(), "evaluation deadline exceeded");
    assert!(t.elapsed() < Duration::from_secs(30), "the watchdog fired");
    assert_engine_still_serves(&e);
}

#[test]
fn memory_bomb_stays_within_the_process_limit() {
    let e = engine();
    let bomb =
        "(block $full (loop $grow (br_if $full (i32.eq (memory.grow (i32.const 16)) (i32.const -1))) (br $grow)))";
    let m = load(&e, &common::echo_wat("", "", bomb), F4);
    let limit = 8 << 20;
    let mut p = e.instantiate(&m, ProcessOptions { memory_limit: limit, ..ProcessOptions::default() }).unwrap();
    let out = p.handle(&msg(1), &json!({}));
    assert!(out.result.is_ok(), "growth is refused, the module goes on");
    assert!(p.memory_len() <= limit, "memory {} exceeds the limit {limit}", p.memory_len());
    assert_engine_still_serves(&e);
}

#[test]
fn resize_heap_import_respects_the_limit() {
    let imports = r#"(import "env" "emscripten_resize_heap" (func $resize (param i32) (result i32)))"#;
    let extra = "(drop (call $resize (i32.const 200000000)))";
    let e = engine();
    let m = load(&e, &common::echo_wat(imports, "", extra), F4);
    let mut p = e.instantiate(&m, ProcessOptions { memory_limit: 16 << 20, ..ProcessOptions::default() }).unwrap();
    assert!(p.handle(&msg(1), &json!({})).result.is_ok());
    assert!(p.memory_len() <= 16 << 20);
}

#[test]
fn stack_overflow_is_a_clear_error() {
    let items = "(func $down (param i32) (result i32) (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))";
    let e = engine();
    let m = load(&e, &common::echo_wat("", items, "(drop (call $down (i32.const 0)))"), F4);
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    assert_eq!(p.handle(&msg(1), &json!({})).result.unwrap_err(), "Maximum call stack size exceeded");
    assert_engine_still_serves(&e);
}

#[test]
fn trap_surfaces_with_the_javascript_text() {
    let e = engine();
    let m = load(&e, &common::echo_wat("", "", "unreachable"), F4);
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    assert_eq!(p.handle(&msg(1), &json!({})).result.unwrap_err(), "unreachable");
    let m = load(&e, &common::echo_wat("", "", "(drop (i32.load (i32.const -4)))"), F4);
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    assert_eq!(p.handle(&msg(1), &json!({})).result.unwrap_err(), "memory access out of bounds");
    assert_engine_still_serves(&e);
}

#[test]
fn exit_and_system_never_reach_the_host() {
    let imports = r#"(import "env" "exit" (func $exit (param i32)))
        (import "env" "_emscripten_system" (func $system (param i32) (result i32)))"#;
    let e = engine();
    let sys = common::echo_wat(
        imports,
        "",
        "(if (i32.ne (call $system (i32.const 70000)) (i32.const -1)) (then unreachable))",
    );
    let m = load(&e, &sys, F4);
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    assert!(p.handle(&msg(1), &json!({})).result.is_ok(), "system() answers -1: no shell");
    let m = load(&e, &common::echo_wat(imports, "", "(call $exit (i32.const 3))"), F4);
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    assert_eq!(p.handle(&msg(1), &json!({})).result.unwrap_err(), "Program terminated with exit(3)");
    assert_engine_still_serves(&e);
}

#[test]
fn huge_table_is_refused_before_it_runs() {
    let e = engine();
    let err = e.load(&wat(&common::echo_wat("", "(table 50000000 funcref)", "")), F4).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("table") && text.contains("50000000"), "{text}");
    assert_engine_still_serves(&e);
}

#[test]
fn unknown_import_is_named() {
    let e = engine();
    let src = common::echo_wat(r#"(import "env" "launch_missiles" (func))"#, "", "");
    let err = e.load(&wat(&src), F4).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("env.launch_missiles"), "{text}");
    assert_engine_still_serves(&e);
}

#[test]
fn invalid_wasm_is_refused() {
    let e = engine();
    for bytes in [&b"\0asm\x01\0\0\0garbage"[..], b"not wasm at all", b""] {
        let err = e.load(bytes, F4).err().expect("refused");
        assert!(matches!(err, EngineError::InvalidModule(_)), "{err}");
    }
    assert_engine_still_serves(&e);
}

#[test]
fn truncated_or_oversized_image_is_refused() {
    let e = engine();
    let m = load(&e, &common::echo_wat("", "", ""), F4);
    let mut p = e.instantiate(&m, ProcessOptions { memory_limit: 1 << 20, ..ProcessOptions::default() }).unwrap();
    let image = p.memory_image();
    assert!(matches!(p.restore(&image[..1000]), Err(EngineError::BadImage(_))));
    assert!(matches!(p.restore(&vec![0u8; 2 << 20]), Err(EngineError::BadImage(_))));
    p.restore(&image).expect("a whole image restores");
    assert!(p.handle(&msg(1), &json!({})).result.is_ok());
}

#[test]
fn restore_grows_memory_and_reproduces_state() {
    let e = engine();
    let grow = "(drop (memory.grow (i32.const 3)))";
    let m = load(&e, &common::echo_wat("", "", grow), F4);
    let mut a = e.instantiate(&m, ProcessOptions::default()).unwrap();
    a.handle(&msg(1), &json!({}));
    let image = a.memory_image();
    let mut b = e.instantiate(&m, ProcessOptions::default()).unwrap();
    b.restore(&image).unwrap();
    assert_eq!(b.memory(), &image[..]);
    let (ra, rb) = (a.handle(&msg(2), &json!({})), b.handle(&msg(2), &json!({})));
    assert_eq!(ra.result.unwrap(), rb.result.unwrap());
    assert_eq!(a.memory(), b.memory(), "next message gives identical memory after restore");
}

#[test]
fn unknown_format_lists_the_supported_ones() {
    let err = "wasm32-unknown-foo".parse::<ModuleFormat>().unwrap_err().to_string();
    assert!(err.contains("wasm64-unknown-emscripten-draft_2024_10_16-metering"), "{err}");
}

#[test]
fn every_wasm32_named_export_format_runs_the_project_module() {
    let e = engine();
    let src = common::echo_wat("", "", "");
    for f in [
        ModuleFormat::Emscripten2,
        ModuleFormat::Emscripten3,
        ModuleFormat::Emscripten4,
        ModuleFormat::Emscripten4Metering,
    ] {
        let m = load(&e, &src, f);
        let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
        let out = p.handle(&msg(3), &json!({}));
        assert_eq!(out.result.unwrap_or_else(|t| panic!("{f}: {t}"))["Output"], msg(3), "{f}");
    }
}

#[test]
fn compiled_modules_are_cached_on_disk_and_bad_entries_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig { cache_dir: Some(dir.path().into()), pool_slots: 2, ..EngineConfig::default() };
    let bytes = wat(&common::echo_wat("", "", ""));
    Engine::new(cfg.clone()).unwrap().load(&bytes, F4).unwrap();
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "one artefact written: {entries:?}");
    let modified = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    // A second engine (a restart) loads the artefact instead of compiling.
    let e2 = Engine::new(cfg.clone()).unwrap();
    let m = e2.load(&bytes, F4).unwrap();
    assert!(e2.instantiate(&m, ProcessOptions::default()).unwrap().handle(&msg(1), &json!({})).result.is_ok());
    assert_eq!(std::fs::metadata(&entries[0]).unwrap().modified().unwrap(), modified, "not rewritten");
    // A corrupt artefact is detected by its hash, recompiled and replaced.
    let mut data = std::fs::read(&entries[0]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&entries[0], &data).unwrap();
    let e3 = Engine::new(cfg).unwrap();
    let m = e3.load(&bytes, F4).unwrap();
    assert!(e3.instantiate(&m, ProcessOptions::default()).unwrap().handle(&msg(1), &json!({})).result.is_ok());
    assert_ne!(std::fs::read(&entries[0]).unwrap(), data, "the corrupt entry was replaced");
}

/// The rollback image a live process keeps costs RAM for its non-zero pages only, and reads back
/// as the whole memory.
#[test]
fn a_sparse_image_is_the_memory_and_costs_only_its_written_pages() {
    let e = engine();
    // The counter with 16 MiB of memory, of which a handful of 4 KiB pages are ever written.
    let src = common::counter_wat(0, 0)
        .replace(r#"(memory (export "memory") 2 16384)"#, r#"(memory (export "memory") 256 16384)"#);
    let m = load(&e, &src, F4);
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    for n in 0..3 {
        p.handle(&msg(n), &json!({})).result.expect("counted");
    }
    let image = p.sparse_image().expect("anonymous mapping");
    let written = p.memory().chunks(4096).filter(|c| c.iter().any(|b| *b != 0)).count() as u64;
    assert!((1..=8).contains(&written), "{written} pages written");
    // Measured before anything reads the image (a read of a zero page maps the kernel's zero
    // page, which mincore reports as resident although it costs no RAM).
    let resident = metalcu::engine::resident::resident_bytes(&image);
    assert!(resident <= written * 4096, "{resident} bytes resident for {written} written pages");
    assert_eq!(image.len(), 16 << 20);
    assert!(image[..] == *p.memory(), "the image reads as the memory, zeros included");
    let mut q = e.instantiate_image(&m, ProcessOptions::default(), &image).unwrap();
    assert_eq!(q.state_hash(), p.state_hash(), "an instance restored from it has the same state");
}
