//! Engine benchmarks (criterion): compile (cold and from the disk cache), instantiate from the
//! pool, restore aos1/aos2 images, and warm `handle` calls for aos1/aos2 Eval, sqlite, wasm64 and
//! the happy process. Needs `../shared` (or `$METALCU_SHARED`); PERF.md records the figures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../tests/common/mod.rs"]
mod common;
use metalcu::engine::{Engine, EngineConfig, Instance, ModuleFormat, ProcessOptions};
use serde_json::{Value, json};

fn engine(max_memory: u64, cache: Option<PathBuf>) -> Engine {
    Engine::new(EngineConfig {
        max_memory_bytes: max_memory,
        pool_slots: 16,
        cache_dir: cache,
        ..EngineConfig::default()
    })
    .unwrap()
}

/// A process booted with the golden's spawn message (and `extra` more steps).
fn booted(e: &Engine, shared: &Path, module: &str, format: ModuleFormat, golden: &str, extra: usize) -> Instance {
    let wasm = std::fs::read(shared.join("fixtures/modules").join(module)).unwrap();
    let m = e.load(&wasm, format).unwrap();
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    for (msg, env) in common::golden_steps(shared, golden, 1 + extra) {
        p.handle(&msg, &env);
    }
    p
}

fn eval_msg(template: &Value, code: &str) -> Value {
    let mut m = template.clone();
    m["Data"] = json!(code);
    m
}

fn benches(c: &mut Criterion) {
    let Some(shared) = common::shared_dir() else {
        eprintln!("NOTE: ../shared not found (set METALCU_SHARED): engine benches skipped");
        return;
    };
    let modules = shared.join("fixtures/modules");
    let aos1 = std::fs::read(modules.join("aos1-emscripten2.wasm")).unwrap();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("aos1 cold", |b| {
        b.iter(|| {
            let e = engine(1 << 30, None);
            e.load(&aos1, ModuleFormat::Emscripten2).unwrap();
        })
    });
    let dir = tempfile::tempdir().unwrap();
    engine(1 << 30, Some(dir.path().into())).load(&aos1, ModuleFormat::Emscripten2).unwrap();
    g.bench_function("aos1 from disk cache", |b| {
        b.iter(|| {
            let e = engine(1 << 30, Some(dir.path().into()));
            e.load(&aos1, ModuleFormat::Emscripten2).unwrap();
        })
    });
    g.finish();

    let e = engine(1 << 30, None);
    let mut g = c.benchmark_group("instantiate");
    g.sample_size(20);
    let m1 = e.load(&aos1, ModuleFormat::Emscripten2).unwrap();
    g.bench_function("aos1 instantiate + start-up", |b| {
        b.iter(|| e.instantiate(&m1, ProcessOptions::default()).unwrap())
    });
    let img1 = booted(&e, &shared, "aos1-emscripten2.wasm", ModuleFormat::Emscripten2, "aos1-basics", 3).memory_image();
    g.bench_function("aos1 instantiate + start-up + restore", |b| {
        b.iter(|| {
            let mut p = e.instantiate(&m1, ProcessOptions::default()).unwrap();
            p.restore(&img1).unwrap();
            p
        })
    });
    g.bench_function("aos1 resume from image (template, no start-up)", |b| {
        b.iter(|| e.instantiate_image(&m1, ProcessOptions::default(), &img1).unwrap())
    });
    let aos2 = std::fs::read(modules.join("aos2-emscripten4.wasm")).unwrap();
    let m2 = e.load(&aos2, ModuleFormat::Emscripten4).unwrap();
    let img2 = booted(&e, &shared, "aos2-emscripten4.wasm", ModuleFormat::Emscripten4, "aos2-basics", 3).memory_image();
    g.bench_function("aos2 instantiate + start-up + restore", |b| {
        b.iter(|| {
            let mut p = e.instantiate(&m2, ProcessOptions::default()).unwrap();
            p.restore(&img2).unwrap();
            p
        })
    });
    g.bench_function("aos2 resume from image (template, no start-up)", |b| {
        b.iter(|| e.instantiate_image(&m2, ProcessOptions::default(), &img2).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("handle");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    let warm = |module: &str, format: ModuleFormat, golden: &str, code: Option<&str>| {
        let mut p = booted(&e, &shared, module, format, golden, 0);
        let (msg, env) = common::golden_steps(&shared, golden, 2).pop().unwrap();
        let msg = code.map(|c| eval_msg(&msg, c)).unwrap_or(msg);
        (p.handle(&msg, &env), p, msg, env)
    };
    for (label, module, format, golden, code) in [
        ("aos1 Eval", "aos1-emscripten2.wasm", ModuleFormat::Emscripten2, "aos1-basics", Some("1 + 1")),
        ("aos2 Eval", "aos2-emscripten4.wasm", ModuleFormat::Emscripten4, "aos2-basics", Some("1 + 1")),
        ("sqlite Eval", "sqlite-emscripten2.wasm", ModuleFormat::Emscripten2, "sqlite", Some("return 1")),
        ("wasm64 Eval", "lua-wasm64.wasm", ModuleFormat::Wasm64, "wasm64-basics", Some("1 + 1")),
    ] {
        let (_, mut p, msg, env) = warm(module, format, golden, code);
        g.bench_function(label, |b| b.iter(|| p.handle(&msg, &env)));
    }
    let happy = std::fs::read(modules.join("happy-emscripten1.wasm")).unwrap();
    let mh = e.load(&happy, ModuleFormat::Emscripten1).unwrap();
    let mut p = e.instantiate(&mh, ProcessOptions::default()).unwrap();
    let (msg, env) = common::golden_steps(&shared, "happy", 1).pop().unwrap();
    g.bench_function("happy (format 1) call", |b| b.iter(|| p.handle(&msg, &env)));

    // Per-call overhead outside the module: a module whose `handle` only echoes the message
    // (strlen + copy), called with an aos-sized msg/env. Everything measured here is marshalling,
    // the call protocol and result parsing, plus the echo's byte loop.
    let echo = wat::parse_str(common::echo_wat("", "", "")).unwrap();
    let me = e.load(&echo, ModuleFormat::Emscripten4).unwrap();
    let mut p = e.instantiate(&me, ProcessOptions::default()).unwrap();
    let (msg, env) = common::golden_steps(&shared, "aos1-basics", 2).pop().unwrap();
    let msg = eval_msg(&msg, "1 + 1");
    g.bench_function("echo module, aos-sized message (per-call overhead)", |b| b.iter(|| p.handle(&msg, &env)));
    g.finish();
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
