//! Checkpoint files end to end (`metalcu::checkpoint`).
//!
//! - Round trips: for every fixture module and format (goldens of `../shared`), run the first
//!   steps with the CU's rollback rule, write a checkpoint, restore it from the file (mapped) into
//!   a fresh instance, and check that the memory is identical and that the next message gives the
//!   same result, gas and memory as the uninterrupted process. The project's own echo module does
//!   the same on a fresh clone.
//! - Faults: truncated, zero-length, flipped bytes (memory, header, a hole), wrong version and
//!   magic, a file of another process, temporary files left by a crash, an unwritable directory,
//!   a full disk, a locked directory, hostile process ids; the newest checkpoint corrupt → the
//!   older valid one is returned and the corrupt one reported.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metalcu::checkpoint::format::{FORMAT_VERSION, HEADER_LEN, PAGE};
use metalcu::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, FormatError, Mapping, Verify, store::file_name, store::load,
};
use metalcu::engine::dirty::StateHasher;
use metalcu::engine::{Engine, EngineConfig, LoadedModule, ModuleFormat, ProcessOptions};
use metalcu::eval::read_steps;
use metalcu::store::Position;
use metalcu::su::hashchain::Link;
use serde_json::{Value, json};

const PID: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const OTHER_PID: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8";
const COMPUTE_LIMIT: u64 = 9_000_000_000_000;

fn blake3_of(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

fn ckpt(pid: &str, timestamp: i64, nonce: u64) -> Checkpoint {
    Checkpoint {
        process_id: pid.into(),
        module_id: "Pq2Zftrqut0hdisH_MC2pDOT6S4eQFoxGsFUzR6r350".into(),
        position: Position { timestamp, nonce, cron: None },
        block_height: 1_500_000 + nonce,
        link: Some(Link {
            assignment_id: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".into(),
            hash_chain: "_eq5rPNxA2K9JljNyaKej5x1f8-YEWA6jER80dkVEQg".into(),
        }),
        hydrated: false,
    }
}

/// A sparse memory of `wasm_pages` 64 KiB pages with a few non-zero 4 KiB pages (seeded).
fn sparse_memory(wasm_pages: usize, seed: u8) -> Vec<u8> {
    let mut m = vec![0u8; wasm_pages * 65536];
    for (k, page) in [0usize, 1, 2, 17, 40].into_iter().enumerate() {
        let at = page * PAGE;
        if at + PAGE <= m.len() {
            for (i, b) in m[at..at + PAGE].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add(k as u8) | 1;
            }
        }
    }
    m
}

fn open_store(root: &Path) -> CheckpointStore {
    CheckpointStore::open(root.join("ckpt")).expect("store opens")
}

/// Files (any name) in the process directory.
fn names_in(store: &CheckpointStore, pid: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store.dir().join(pid))
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn corrupt_problem(e: &CheckpointError) -> &FormatError {
    match e {
        CheckpointError::Corrupt { problem, .. } => problem,
        other => panic!("expected a corrupt-file error, got {other}"),
    }
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn read_at(path: &Path, at: u64, n: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0; n];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, at).unwrap();
    b
}

/// Re-seals a header the test edited, so that only the edited field is wrong.
fn reseal_header(path: &Path) {
    let mut h = read_at(path, 0, HEADER_LEN);
    let sum = blake3_of(&h[..HEADER_LEN - 32]);
    h[HEADER_LEN - 32..].copy_from_slice(&sum);
    patch(path, 0, &h);
}

// ---------------------------------------------------------------------------------------------
// Round trips on real modules

/// Runs `n` steps of `golden` with the CU's rule, checkpoints, restores from the file into a
/// fresh instance, and compares the next step with the uninterrupted process.
fn round_trip(golden: &str, module: &str, format: &str, cap: u64, n: usize) {
    let Some(shared) = common::shared_dir() else { return };
    let format: ModuleFormat = format.parse().unwrap();
    let wasm = std::fs::read(shared.join("fixtures/modules").join(module)).unwrap();
    let steps = read_steps(&shared.join("goldens/out").join(format!("{golden}.jsonl"))).unwrap();
    assert!(steps.len() > n, "{golden} has {} steps", steps.len());
    let engine = Engine::new(EngineConfig { max_memory_bytes: cap, pool_slots: 4, ..EngineConfig::default() }).unwrap();
    let m = engine.load(&wasm, format).unwrap();
    let opts = ProcessOptions { memory_limit: cap, compute_limit: COMPUTE_LIMIT, weavedrive: None };
    let mut p = engine.instantiate(&m, opts.clone()).unwrap();
    let mut has_memory = false;
    for s in &steps[..n] {
        let before = has_memory.then(|| p.memory_image());
        if p.handle(&s.msg, &s.env).failed() {
            p = match &before {
                Some(image) => engine.instantiate_image(&m, opts.clone(), image).unwrap(),
                None => engine.instantiate(&m, opts.clone()).unwrap(),
            };
        } else {
            has_memory = true;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let msg = &steps[n - 1].msg;
    let c = Checkpoint {
        process_id: PID.into(),
        module_id: module.into(),
        position: Position {
            timestamp: msg["Timestamp"].as_str().and_then(|t| t.parse().ok()).unwrap_or(n as i64),
            nonce: n as u64,
            cron: None,
        },
        block_height: msg["Block-Height"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0),
        link: None,
        hydrated: false,
    };
    let want_hash = p.state_hash();
    assert_eq!(want_hash, StateHasher::full(p.memory()));
    let path = store.write(&c, p.memory()).unwrap();
    let on_disk = std::fs::metadata(&path).unwrap().blocks() * 512;
    eprintln!(
        "{golden}: memory {} bytes, {} bytes on disk ({} apparent)",
        p.memory_len(),
        on_disk,
        std::fs::metadata(&path).unwrap().len()
    );

    let scan = store.latest_valid(PID, None, Verify::Full).unwrap();
    assert!(scan.skipped.is_empty(), "{golden}: {:?}", scan.skipped);
    let loaded = scan.loaded.expect("the checkpoint loads");
    assert_eq!(loaded.path, path);
    assert_eq!(loaded.header.checkpoint, c);
    assert_eq!(loaded.header.state_hash, want_hash, "{golden}: header hash is the engine's state hash");
    assert_eq!(loaded.memory().len() as u64, p.memory_len());
    assert_eq!(StateHasher::full(loaded.memory()), want_hash, "{golden}: mapped image differs");
    assert!(matches!(loaded.image.mapping(), Mapping::Mapped { .. }), "{golden}: {:?}", loaded.image.mapping());

    let mut q = engine.instantiate_image(&m, opts.clone(), loaded.memory()).unwrap();
    drop(loaded); // the instance owns its memory: the mapping may go
    assert_eq!(q.state_hash(), want_hash, "{golden}: restored instance memory differs");
    let next = &steps[n];
    let (a, b) = (p.handle(&next.msg, &next.env), q.handle(&next.msg, &next.env));
    assert_eq!(a.result, b.result, "{golden}: next result after restore");
    assert_eq!(a.accounting.gas, b.accounting.gas, "{golden}: next gas after restore");
    assert_eq!(p.state_hash(), q.state_hash(), "{golden}: memory after the next message");
    assert_eq!(blake3_of(p.memory()), blake3_of(q.memory()), "{golden}: memory after the next message");
}

macro_rules! round_trips {
    ($($f:ident => ($golden:literal, $module:literal, $format:literal, $cap:expr, $n:literal)),* $(,)?) => {
        $( #[test] fn $f() { round_trip($golden, $module, $format, $cap, $n); } )*
    };
}

round_trips! {
    round_trip_aos1 => ("aos1-basics", "aos1-emscripten2.wasm", "wasm32-unknown-emscripten2", 1 << 30, 3),
    // Memory grows to 172 MB at step 2: the restore grows the fresh instance to the image's size.
    round_trip_aos1_grown => ("aos1-memory-limit", "aos1-emscripten2.wasm", "wasm32-unknown-emscripten2", 1 << 30, 3),
    round_trip_aos2 => ("aos2-basics", "aos2-emscripten4.wasm", "wasm32-unknown-emscripten4", 1 << 30, 3),
    round_trip_aos2_metering => ("aos2-metering-basics", "aos2-emscripten4.wasm", "wasm32-unknown-emscripten-metering", 1 << 30, 3),
    round_trip_wasm64 => ("wasm64-basics", "lua-wasm64.wasm", "wasm64-unknown-emscripten-draft_2024_02_15", 4 << 30, 3),
    round_trip_wasm64_metering => ("wasm64-metering-basics", "lua-wasm64.wasm", "wasm64-unknown-emscripten-draft_2024_10_16-metering", 4 << 30, 3),
    round_trip_lua1 => ("lua1-plain", "lua-emscripten1.wasm", "wasm32-unknown-emscripten", 1 << 30, 3),
    round_trip_lua2 => ("lua2-plain", "lua-emscripten2.wasm", "wasm32-unknown-emscripten2", 1 << 30, 3),
    round_trip_happy => ("happy", "happy-emscripten1.wasm", "wasm32-unknown-emscripten", 1 << 30, 2),
    // Step 2 returns an Error: the checkpoint is of the rolled-back memory.
    round_trip_sad => ("sad", "sad-emscripten1.wasm", "wasm32-unknown-emscripten", 1 << 30, 3),
    round_trip_sqlite => ("sqlite", "sqlite-emscripten2.wasm", "wasm32-unknown-emscripten2", 1 << 30, 3),
}

// ---------------------------------------------------------------------------------------------
// The project's own module (runs anywhere)

fn echo_engine() -> (Engine, Arc<LoadedModule>) {
    let e =
        Engine::new(EngineConfig { max_memory_bytes: 256 << 20, pool_slots: 4, ..EngineConfig::default() }).unwrap();
    let wasm = wat::parse_str(common::echo_wat("", "", "")).unwrap();
    let m = e.load(&wasm, ModuleFormat::Emscripten4).unwrap();
    (e, m)
}

fn echo_msg(n: u32) -> Value {
    json!({ "Id": format!("msg-{n}"), "Tags": [{ "name": "Action", "value": "Echo" }], "Data": format!("payload {n} ✓"), "Block-Height": 1 })
}

#[test]
fn echo_module_round_trip_every_verify_mode() {
    let (e, m) = echo_engine();
    let mut p = e.instantiate(&m, ProcessOptions::default()).unwrap();
    for n in 0..3 {
        assert!(!p.handle(&echo_msg(n), &json!({})).failed());
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut c = ckpt(PID, 1_700_000_000_000, 3);
    c.position.cron = Some("0-10-seconds".into());
    let path = store.write(&c, p.memory()).unwrap();
    assert_eq!(path, store.dir().join(PID).join(file_name(&c.position)));
    for verify in [Verify::Full, Verify::Live, Verify::HeaderOnly] {
        let loaded = load(&path, verify).unwrap();
        assert_eq!(loaded.header.checkpoint, c, "every header field round-trips");
        assert_eq!(loaded.memory(), p.memory(), "{verify:?}");
        let mut q = e.instantiate_image(&m, ProcessOptions::default(), loaded.memory()).unwrap();
        assert!(q.from_template());
        let mut p2 = e.instantiate_image(&m, ProcessOptions::default(), p.memory()).unwrap();
        let (a, b) = (p2.handle(&echo_msg(9), &json!({})), q.handle(&echo_msg(9), &json!({})));
        assert_eq!(a.result, b.result);
        assert_eq!(p2.memory(), q.memory());
    }
}

#[test]
fn files_are_sparse_and_exact_in_length() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(256, 1); // 16 MiB, 5 live 4 KiB pages
    let path = store.write(&ckpt(PID, 1, 1), &mem).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), (HEADER_LEN + mem.len() + mem.len() / PAGE / 8) as u64);
    let allocated = meta.blocks() * 512;
    assert!(allocated < 1 << 20, "{allocated} bytes allocated for 5 live pages: holes were not left");
    let loaded = load(&path, Verify::Full).unwrap();
    assert_eq!(loaded.memory(), &mem[..]);
    assert_eq!(loaded.header.live_pages, 5);
    assert_eq!(loaded.image.mapping(), Mapping::Mapped { runs: 3 });
}

// ---------------------------------------------------------------------------------------------
// Faults

#[test]
fn truncated_and_zero_length_files_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(4, 2);
    let old = store.write(&ckpt(PID, 10, 1), &mem).unwrap();
    let torn = store.write(&ckpt(PID, 20, 2), &mem).unwrap();
    let empty = store.write(&ckpt(PID, 30, 3), &mem).unwrap();
    let full_len = std::fs::metadata(&torn).unwrap().len();
    for len in [full_len - 1, HEADER_LEN as u64 + 100, 100] {
        std::fs::OpenOptions::new().write(true).open(&torn).unwrap().set_len(len).unwrap();
        let e = load(&torn, Verify::Live).expect_err("a torn file is refused");
        match corrupt_problem(&e) {
            FormatError::FileLength { actual, .. } => assert_eq!(*actual, len),
            FormatError::TooShort { len: l } => assert_eq!(*l, len),
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains(&torn.display().to_string()), "error names the file: {e}");
    }
    std::fs::OpenOptions::new().write(true).open(&empty).unwrap().set_len(0).unwrap();
    assert!(matches!(corrupt_problem(&load(&empty, Verify::Live).unwrap_err()), FormatError::TooShort { len: 0 }));
    let scan = store.latest_valid(PID, None, Verify::Live).unwrap();
    assert_eq!(scan.loaded.expect("the older one").path, old);
    let skipped: Vec<&PathBuf> = scan.skipped.iter().map(|s| &s.path).collect();
    assert_eq!(skipped, vec![&empty, &torn], "both reported, newest first");
}

#[test]
fn flipped_memory_byte_is_caught_by_live_and_full_not_header_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(4, 3);
    let path = store.write(&ckpt(PID, 1, 1), &mem).unwrap();
    let at = (HEADER_LEN + 17 * PAGE + 100) as u64; // inside a stored page
    let b = read_at(&path, at, 1)[0];
    patch(&path, at, &[b ^ 0x01]);
    assert_eq!(corrupt_problem(&load(&path, Verify::Live).unwrap_err()), &FormatError::StateHash);
    assert_eq!(corrupt_problem(&load(&path, Verify::Full).unwrap_err()), &FormatError::StateHash);
    // The documented trade-off: HeaderOnly trusts the stored pages.
    let trusted = load(&path, Verify::HeaderOnly).unwrap();
    assert_ne!(trusted.memory(), &mem[..]);
}

#[test]
fn bytes_written_into_a_hole_are_never_restored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(4, 4);
    let path = store.write(&ckpt(PID, 1, 1), &mem).unwrap();
    patch(&path, (HEADER_LEN + 30 * PAGE + 5) as u64, b"garbage"); // page 30 is empty in the map
    for verify in [Verify::Full, Verify::Live, Verify::HeaderOnly] {
        assert_eq!(load(&path, verify).unwrap().memory(), &mem[..], "{verify:?}: the map decides what is zero");
    }
}

#[test]
fn flipped_header_byte_wrong_version_and_wrong_magic_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(2, 5);
    let good = store.write(&ckpt(PID, 1, 1), &mem).unwrap();

    let flipped = store.write(&ckpt(PID, 2, 2), &mem).unwrap();
    let b = read_at(&flipped, 48, 1)[0];
    patch(&flipped, 48, &[b ^ 0x10]); // the nonce
    assert_eq!(corrupt_problem(&load(&flipped, Verify::Live).unwrap_err()), &FormatError::HeaderHash);

    let version = store.write(&ckpt(PID, 3, 3), &mem).unwrap();
    patch(&version, 8, &(FORMAT_VERSION + 1).to_le_bytes());
    reseal_header(&version);
    let e = load(&version, Verify::Live).unwrap_err();
    assert_eq!(corrupt_problem(&e), &FormatError::UnsupportedVersion { found: FORMAT_VERSION + 1 });
    assert!(e.to_string().contains("format version 2"), "{e}");

    let magic = store.write(&ckpt(PID, 4, 4), &mem).unwrap();
    patch(&magic, 0, b"NOTCKPT\n");
    assert_eq!(corrupt_problem(&load(&magic, Verify::Live).unwrap_err()), &FormatError::BadMagic);

    let map = store.write(&ckpt(PID, 5, 5), &mem).unwrap();
    let map_at = (HEADER_LEN + mem.len()) as u64;
    let b = read_at(&map, map_at, 1)[0];
    patch(&map, map_at, &[b ^ 0x80]);
    assert_eq!(corrupt_problem(&load(&map, Verify::HeaderOnly).unwrap_err()), &FormatError::MapHash);

    let scan = store.latest_valid(PID, None, Verify::Full).unwrap();
    assert_eq!(scan.loaded.unwrap().path, good);
    assert_eq!(scan.skipped.len(), 4);
}

#[test]
fn newest_corrupt_gives_the_older_valid_one_and_reports_the_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let (old_mem, new_mem) = (sparse_memory(4, 6), sparse_memory(4, 7));
    let old = store.write(&ckpt(PID, 100, 1), &old_mem).unwrap();
    let new = store.write(&ckpt(PID, 200, 2), &new_mem).unwrap();
    let at = (HEADER_LEN + 2 * PAGE) as u64;
    patch(&new, at, &[0xEE; 16]);
    let scan = store.latest_valid(PID, None, Verify::Live).unwrap();
    let loaded = scan.loaded.expect("older valid checkpoint");
    assert_eq!(loaded.path, old);
    assert_eq!(loaded.memory(), &old_mem[..]);
    assert_eq!(loaded.checkpoint().position.nonce, 1);
    assert_eq!(scan.skipped.len(), 1);
    assert_eq!(scan.skipped[0].path, new);
    let text = scan.skipped[0].error.to_string();
    assert!(text.contains(&new.display().to_string()) && text.contains("corrupt memory"), "{text}");
    // A bound: nothing after timestamp 150 is considered.
    let scan = store.latest_valid(PID, Some(&Position { timestamp: 150, nonce: 0, cron: None }), Verify::Live).unwrap();
    assert_eq!(scan.loaded.unwrap().path, old);
    assert!(scan.skipped.is_empty());
    // Nothing at or before the bound: replay from the scheduler.
    let scan = store.latest_valid(PID, Some(&Position { timestamp: 50, nonce: 0, cron: None }), Verify::Live).unwrap();
    assert!(scan.loaded.is_none());
}

#[test]
fn a_file_of_another_process_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(2, 8);
    let mine = store.write(&ckpt(PID, 1, 1), &mem).unwrap();
    let theirs = store.write(&ckpt(OTHER_PID, 5, 5), &mem).unwrap();
    let planted = store.dir().join(PID).join(theirs.file_name().unwrap());
    std::fs::copy(&theirs, &planted).unwrap();
    let scan = store.latest_valid(PID, None, Verify::Full).unwrap();
    assert_eq!(scan.loaded.unwrap().path, mine);
    assert_eq!(scan.skipped.len(), 1);
    assert!(matches!(corrupt_problem(&scan.skipped[0].error), FormatError::WrongProcess { .. }));
    // A file renamed to another position is refused too.
    let renamed = store.dir().join(PID).join(file_name(&Position { timestamp: 9, nonce: 9, cron: None }));
    std::fs::copy(&mine, &renamed).unwrap();
    assert!(matches!(corrupt_problem(&load(&renamed, Verify::Live).unwrap_err()), FormatError::NameMismatch { .. }));
    // The other process's own directory is untouched.
    assert_eq!(store.latest_valid(OTHER_PID, None, Verify::Full).unwrap().loaded.unwrap().path, theirs);
}

#[test]
fn temporary_files_left_by_a_crash_are_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ckpt");
    let name = file_name(&Position { timestamp: 50, nonce: 5, cron: None });
    {
        let store = CheckpointStore::open(&root).unwrap();
        store.write(&ckpt(PID, 10, 1), &sparse_memory(2, 9)).unwrap();
        // What a crash mid-write leaves: a partial file under a temporary name.
        std::fs::write(root.join(PID).join(format!(".{name}.0.tmp")), b"partial").unwrap();
        let entries = store.list(PID).unwrap();
        assert_eq!(entries.len(), 1, "temporary files are not checkpoints");
        let scan = store.latest_valid(PID, None, Verify::Live).unwrap();
        assert_eq!(scan.loaded.unwrap().checkpoint().position.nonce, 1);
        assert!(scan.skipped.is_empty());
        assert_eq!(names_in(&store, PID), vec![file_name(&Position { timestamp: 10, nonce: 1, cron: None })]);
        std::fs::write(root.join(PID).join(format!(".{name}.1.tmp")), b"partial").unwrap();
    }
    // Opening the directory (as after a restart) removes them as well.
    let store = CheckpointStore::open(&root).unwrap();
    assert_eq!(names_in(&store, PID).len(), 1);
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _a = open_store(dir.path());
    let e = CheckpointStore::open(dir.path().join("ckpt")).expect_err("locked");
    assert!(matches!(e, CheckpointError::Locked { .. }), "{e}");
}

#[test]
fn hostile_process_ids_never_become_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(1, 1);
    for pid in ["../../etc", "a/b", "", ".", &"x".repeat(43 * 3)] {
        let mut c = ckpt(PID, 1, 1);
        c.process_id = pid.to_string();
        assert!(matches!(store.write(&c, &mem), Err(CheckpointError::Invalid(_))), "{pid:?}");
        assert!(matches!(store.list(pid), Err(CheckpointError::InvalidProcessId(_))), "{pid:?}");
        assert!(store.latest_valid(pid, None, Verify::Live).is_err());
    }
    let made: Vec<_> = std::fs::read_dir(store.dir()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(made, vec![std::ffi::OsString::from("LOCK")]);
    assert!(matches!(store.write(&ckpt(PID, 1, 1), &mem[..1000]), Err(CheckpointError::Invalid(_))));
}

#[test]
fn prune_keeps_the_newest_valid_and_removes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(2, 10);
    let paths: Vec<PathBuf> = (1..=5).map(|n| store.write(&ckpt(PID, n * 10, n as u64), &mem).unwrap()).collect();
    std::fs::OpenOptions::new().write(true).open(&paths[4]).unwrap().set_len(10).unwrap(); // newest torn
    let pruned = store.prune(PID, 2).unwrap();
    assert_eq!(pruned.kept, vec![paths[3].clone(), paths[2].clone()]);
    assert_eq!(pruned.removed, vec![paths[4].clone(), paths[1].clone(), paths[0].clone()]);
    assert_eq!(store.list(PID).unwrap().len(), 2);
}

/// Every write failure leaves the directory as it was: no checkpoint, no temporary file.
fn assert_nothing_left(store: &CheckpointStore, pid: &str, before: &[String]) {
    assert_eq!(names_in(store, pid), before, "a failed write left files behind");
}

#[test]
fn an_unwritable_directory_gives_a_clear_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(2, 11);
    let first = store.write(&ckpt(PID, 1, 1), &mem).unwrap();
    let pdir = store.dir().join(PID);
    let before = names_in(&store, PID);

    std::fs::set_permissions(&pdir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let result = store.write(&ckpt(PID, 2, 2), &mem);
    std::fs::set_permissions(&pdir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match result {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(&pdir.display().to_string()) && text.contains("not writable"), "{text}");
            assert_nothing_left(&store, PID, &before);
        }
        Ok(p) if root => {
            // root ignores directory permissions: chmod cannot make the directory unwritable.
            eprintln!("NOTE: running as root, chmod 0o500 does not stop writes; checked below with a non-directory");
            std::fs::remove_file(p).unwrap();
        }
        Ok(_) => panic!("write into a 0o500 directory succeeded as a non-root user"),
    }
    // Unwritable whatever the user: the process's directory is a file.
    std::fs::write(store.dir().join(OTHER_PID), b"not a directory").unwrap();
    let e = store.write(&ckpt(OTHER_PID, 1, 1), &mem).expect_err("cannot write under a file");
    assert!(matches!(e, CheckpointError::Io { .. }));
    assert!(e.to_string().contains(&store.dir().join(OTHER_PID).display().to_string()), "{e}");
    // Reading goes on.
    assert_eq!(store.latest_valid(PID, None, Verify::Full).unwrap().loaded.unwrap().path, first);
}

/// A small tmpfs mounted for the test (root only), unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(at: &Path, bytes: usize) -> Option<SmallFs> {
        use std::ffi::CString;
        std::fs::create_dir_all(at).ok()?;
        let target = CString::new(at.as_os_str().as_encoded_bytes()).ok()?;
        let opts = CString::new(format!("size={bytes}")).ok()?;
        // SAFETY: valid NUL-terminated strings; mounting fails harmlessly without privileges.
        let rc = unsafe { libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, opts.as_ptr().cast()) };
        (rc == 0).then(|| SmallFs(at.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        if let Ok(t) = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated path; lazy unmount of the tmpfs this test mounted.
            unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn a_full_disk_gives_a_clear_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("small");
    let Some(_fs) = SmallFs::mount(&at, 1 << 20) else {
        eprintln!("NOTE: cannot mount a small tmpfs here (needs root); the disk-full test did not run");
        return;
    };
    let store = CheckpointStore::open(&at).unwrap();
    let small = store.write(&ckpt(PID, 1, 1), &sparse_memory(2, 12)).unwrap();
    let before = names_in(&store, PID);
    // 2 MiB of live pages on a 1 MiB file system.
    let big: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 251) as u8 | 1).collect();
    let e = store.write(&ckpt(PID, 2, 2), &big).expect_err("disk full");
    let text = e.to_string();
    assert!(text.contains("disk full") && text.contains(&store.dir().join(PID).display().to_string()), "{text}");
    assert_nothing_left(&store, PID, &before);
    // The space is back: the next (small) checkpoint is written, the old one still loads.
    store.write(&ckpt(PID, 3, 3), &sparse_memory(2, 13)).unwrap();
    let scan = store.latest_valid(PID, Some(&Position { timestamp: 1, nonce: 1, cron: None }), Verify::Full).unwrap();
    assert_eq!(scan.loaded.unwrap().path, small);
}

#[test]
fn the_header_carries_the_engines_state_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mem = sparse_memory(300, 14);
    let path = store.write(&ckpt(PID, 1, 1), &mem).unwrap();
    assert_eq!(load(&path, Verify::Full).unwrap().header.state_hash, StateHasher::full(&mem));
}

#[test]
fn fragmented_memories_are_read_instead_of_mapped_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    // Every other 4 KiB page live: 2048 runs, more than MAX_MAPPED_RUNS kernel mappings.
    let mut mem = vec![0u8; 256 * 65536];
    for (i, page) in mem.chunks_mut(PAGE).enumerate().filter(|(i, _)| i % 2 == 0) {
        page.fill((i % 251) as u8 | 1);
    }
    let path = store.write(&ckpt(PID, 1, 1), &mem).unwrap();
    for verify in [Verify::Full, Verify::Live] {
        let loaded = load(&path, verify).unwrap();
        assert_eq!(loaded.image.mapping(), Mapping::Read { runs: 2048 });
        assert_eq!(loaded.memory(), &mem[..]);
    }
}

#[test]
fn garbage_files_are_refused_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let good = store.write(&ckpt(PID, 1, 1), &sparse_memory(2, 15)).unwrap();
    let pdir = store.dir().join(PID);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (k, len) in [1usize, 4095, 4096, 4097, 4096 + 65536 + 16, 200_000].into_iter().enumerate() {
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if k % 2 == 1 {
            bytes[..8].copy_from_slice(b"MCUCKPT\n"); // past the magic, into the version and hash checks
        }
        let path = pdir.join(file_name(&Position { timestamp: 100 + k as i64, nonce: 0, cron: None }));
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(load(&path, Verify::Live), Err(CheckpointError::Corrupt { .. })), "len {len}");
    }
    let scan = store.latest_valid(PID, None, Verify::Live).unwrap();
    assert_eq!(scan.loaded.unwrap().path, good);
    assert_eq!(scan.skipped.len(), 6);
}

#[test]
fn concurrent_writes_of_one_process_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    std::thread::scope(|s| {
        for n in 0..8u8 {
            let store = &store;
            s.spawn(move || store.write(&ckpt(PID, 10 + n as i64, n as u64), &sparse_memory(4, n)).unwrap());
        }
    });
    assert_eq!(store.list(PID).unwrap().len(), 8);
    assert_eq!(names_in(&store, PID).len(), 8, "no temporary file left");
    for e in store.list(PID).unwrap() {
        let n = e.position.nonce as u8;
        assert_eq!(load(&e.path, Verify::Full).unwrap().memory(), &sparse_memory(4, n)[..]);
    }
}
