//! Checkpoint benchmarks (criterion): writing a checkpoint file and resuming a process from one,
//! for aos1 (`aos1-emscripten2.wasm`, format 2, 7.6 MB memory) and aos2 (`aos2-emscripten4.wasm`,
//! format 4, 110 MB memory) after the goldens' first steps (spawn + 3 messages, as
//! `benches/engine.rs`).
//!
//! - `write`: `CheckpointStore::write` (page map, hashes, temporary file, fsync, rename over the
//!   previous file of the same position, fsync of the directory);
//! - `restore`: `latest_valid` (list, verify, map) + `Engine::instantiate_image`, i.e. the process
//!   is ready for its next message, for each `Verify` mode; "+ Eval" adds one warm Eval message
//!   (`1 + 1`), which is what the reference's cold-restore figure contains; "cold file" drops the
//!   file from the page cache first (`posix_fadvise(DONTNEED)`, this file only); "from a Vec" is
//!   the same resume from memory already in a `Vec` (no file), for comparison in the same run.
//!
//! Files live on the target's disk (`CARGO_TARGET_TMPDIR`). Needs `../shared` (or
//! `$METALCU_SHARED`); PERF.md records the figures.
//! Run: `cargo bench --bench checkpoint -- --warm-up-time 2 --measurement-time 5`.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

#[path = "../tests/common/mod.rs"]
mod common;
use metalcu::checkpoint::{Checkpoint, CheckpointStore, Verify};
use metalcu::engine::{Engine, EngineConfig, Instance, LoadedModule, ModuleFormat, ProcessOptions};
use metalcu::store::Position;
use serde_json::json;

const PID: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

/// A process booted with the golden's spawn message and 3 more steps.
fn booted(e: &Engine, m: &Arc<LoadedModule>, shared: &Path, golden: &str) -> Instance {
    let mut p = e.instantiate(m, ProcessOptions::default()).unwrap();
    for (msg, env) in common::golden_steps(shared, golden, 4) {
        p.handle(&msg, &env);
    }
    p
}

fn checkpoint(nonce: u64) -> Checkpoint {
    Checkpoint {
        process_id: PID.into(),
        module_id: "bench-module".into(),
        position: Position { timestamp: 1_700_000_000_000, nonce, cron: None },
        block_height: 1_500_000,
        link: None,
        hydrated: false,
    }
}

/// Drops `path` from the page cache (its pages only).
fn evict(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: fadvise on a descriptor owned here; it only drops clean cached pages of this file.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn benches(c: &mut Criterion) {
    let Some(shared) = common::shared_dir() else {
        eprintln!("NOTE: ../shared not found (set METALCU_SHARED): checkpoint benches skipped");
        return;
    };
    let e = Engine::new(EngineConfig { pool_slots: 16, ..EngineConfig::default() }).unwrap();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for (label, module, format, golden) in [
        ("aos1", "aos1-emscripten2.wasm", ModuleFormat::Emscripten2, "aos1-basics"),
        ("aos2", "aos2-emscripten4.wasm", ModuleFormat::Emscripten4, "aos2-basics"),
    ] {
        let wasm = std::fs::read(shared.join("fixtures/modules").join(module)).unwrap();
        let m = e.load(&wasm, format).unwrap();
        let p = booted(&e, &m, &shared, golden);
        let image = p.memory_image();
        let (mut msg, env) = common::golden_steps(&shared, golden, 2).pop().unwrap();
        msg["Data"] = json!("1 + 1");
        let store = CheckpointStore::open(tmp.path().join(label)).unwrap();

        let mut g = c.benchmark_group(format!("checkpoint {label}"));
        g.sample_size(20);
        g.bench_function("write", |b| b.iter(|| store.write(&checkpoint(1), &image).unwrap()));
        let path = store.write(&checkpoint(1), &image).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let loaded = store.latest_valid(PID, None, Verify::Live).unwrap().loaded.unwrap();
        eprintln!(
            "{label}: memory {} bytes, file {} bytes apparent, {} bytes allocated, {} stored pages, {:?}",
            image.len(),
            meta.len(),
            meta.blocks() * 512,
            loaded.header.live_pages,
            loaded.image.mapping()
        );
        drop(loaded);

        let restore = |verify: Verify| {
            let loaded = store.latest_valid(PID, None, verify).unwrap().loaded.expect("valid checkpoint");
            e.instantiate_image(&m, ProcessOptions::default(), loaded.memory()).unwrap()
        };
        for (name, verify) in [("Full", Verify::Full), ("Live", Verify::Live), ("HeaderOnly", Verify::HeaderOnly)] {
            g.bench_function(format!("restore, verify {name}"), |b| b.iter(|| restore(verify)));
        }
        g.bench_function("restore, verify Live, + Eval", |b| {
            b.iter(|| {
                let mut q = restore(Verify::Live);
                q.handle(&msg, &env)
            })
        });
        g.bench_function("restore, verify Live, cold file", |b| {
            b.iter_batched(|| evict(&path), |()| restore(Verify::Live), BatchSize::PerIteration)
        });
        g.bench_function("resume from a Vec (no file)", |b| {
            b.iter(|| e.instantiate_image(&m, ProcessOptions::default(), &image).unwrap())
        });
        g.bench_function("resume from a Vec (no file), + Eval", |b| {
            b.iter(|| {
                let mut q = e.instantiate_image(&m, ProcessOptions::default(), &image).unwrap();
                q.handle(&msg, &env)
            })
        });
        g.finish();
    }
}

criterion_group!(checkpoint_benches, benches);
criterion_main!(checkpoint_benches);
