//! `metalcu doctor` as an operator runs it: the real binary against this host. Every check is
//! reported (text and JSON), the JSON parses and agrees with the exit code, impossible pools
//! (more address space than a process has; more mappings than `vm.max_map_count` allows) exit
//! with 2 naming the blocking check, the `--env-file` of the systemd unit is read, and running
//! doctor changes nothing on the host.
//!
//! The estimates doctor makes are checked against the engine itself: the mappings each used
//! pool slot costs (against `MAP_ENTRIES_PER_SLOT`) and the address space the pool reserves
//! (against the growth of `VmSize`). An ignored test measures transparent huge pages
//! (tuning/README.md).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metalcu::doctor::checks::{
    self, ASSUMED_RESIDENT_MODULES, BASE_MAP_ENTRIES, CHECK_IDS, MAP_ENTRIES_PER_MODULE, MAP_ENTRIES_PER_SLOT, Sizing,
};
use metalcu::doctor::{EXIT_BLOCKED, parse_env_file};
use metalcu::engine::{Engine, EngineConfig, ModuleFormat, ProcessOptions};
use serde_json::{Value, json};

/// Tests that measure this process's own mappings run one at a time.
static MEASURING: Mutex<()> = Mutex::new(());

/// Slot counts above this are not tried (a host whose `vm.max_map_count` needs more is fine).
const MAX_SLOTS_TRIED: u64 = 1_000_000;

/// Runs `metalcu doctor` with `args`, a clean environment, and its directories in `dir`.
fn doctor(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metalcu"))
        .arg("doctor")
        .args(args)
        .env_clear()
        .env("DATA_DIR", dir.join("data"))
        .env("WASM_BINARY_FILE_DIRECTORY", dir.join("wasm"))
        .output()
        .expect("metalcu runs")
}

fn json_report(dir: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = doctor(dir, &all);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON: {e}\n{text}"));
    (out.status.code().expect("exit code"), v)
}

fn failures(v: &Value) -> Vec<String> {
    v["failures"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect()
}

fn check<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no {id} in {v}"))
}

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn the_text_report_has_every_check_and_a_verdict_matching_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = doctor(dir.path(), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == EXIT_BLOCKED as i32, "exit {code}: {}", String::from_utf8_lossy(&out.stderr));
    let slots = metalcu::process::residency::pool_slots_for(
        metalcu::process::residency::DEFAULT_LIVE_PER_WORKER,
        metalcu::pool::available_cpus().len(),
    );
    assert!(text.starts_with(&format!("metalcu doctor: pool {slots} slots × 1.0 GiB")), "{text}");
    for id in CHECK_IDS {
        let line = text.lines().find(|l| l.split_whitespace().nth(1) == Some(id)).unwrap_or_else(|| panic!("{id}"));
        assert!(["OK", "WARN", "FAIL"].contains(&line.split_whitespace().next().unwrap()), "{line}");
    }
    let last = text.lines().last().unwrap();
    if code == 0 {
        assert!(last.ends_with("nothing blocks the configured size"), "{last}");
        assert!(!text.lines().any(|l| l.starts_with("FAIL")));
    } else {
        assert!(last.contains("blocked by: "), "{last}");
    }
}

#[test]
fn the_json_report_parses_and_agrees_with_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (code, v) = json_report(dir.path(), &["--pool-slots", "8", "--memory-max", "268435456", "--io", "epoll"]);
    assert_eq!(
        v["sizing"],
        json!({
            "pool_slots": 8, "memory_max_bytes": 268435456, "table_elements": 100000, "io": "epoll",
            "db_path": dir.path().join("data/ao-cache.redb"), "wasm_dir": dir.path().join("wasm"),
        })
    );
    let checks = v["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, CHECK_IDS);
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail"].contains(&status), "{c}");
        assert!(!c["summary"].as_str().unwrap().is_empty());
        if status == "ok" {
            assert!(c.get("fix").is_none(), "an OK check has nothing to fix: {c}");
        }
    }
    let failing: Vec<String> =
        checks.iter().filter(|c| c["status"] == "fail").map(|c| c["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(failures(&v), failing);
    assert_eq!(v["exit_code"], json!(code));
    assert_eq!(code, if failing.is_empty() { 0 } else { EXIT_BLOCKED as i32 });
    let reserve = check(&v, "address_space");
    assert_eq!(reserve["detail"]["reserved"], json!(true), "a small pool is actually reserved: {reserve}");
}

#[test]
fn a_pool_larger_than_the_address_space_exits_2_naming_address_space() {
    let dir = tempfile::tempdir().unwrap();
    // 1,000,000 slots × 16 GiB: 16 PiB, beyond any process's address space.
    let args = ["--pool-slots", "1000000", "--memory-max", "17179869184"];
    let (code, v) = json_report(dir.path(), &args);
    assert_eq!(code, EXIT_BLOCKED as i32);
    assert!(failures(&v).contains(&"address_space".to_string()), "{v}");
    let out = doctor(dir.path(), &args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("FAIL  address_space")), "{text}");
    assert!(text.lines().last().unwrap().contains("blocked by: ") && text.contains("address_space"), "{text}");
}

#[test]
fn more_slots_than_vm_max_map_count_allows_exit_2_naming_max_map_count() {
    let max: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap().trim().parse().unwrap();
    let fixed = BASE_MAP_ENTRIES + ASSUMED_RESIDENT_MODULES * MAP_ENTRIES_PER_MODULE;
    let slots = max.saturating_sub(fixed) / MAP_ENTRIES_PER_SLOT + 100;
    if slots > MAX_SLOTS_TRIED {
        eprintln!("NOTE: vm.max_map_count = {max} would need {slots} slots to exceed; not tried");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slots = slots.to_string();
    // 64 KiB memories: the address space fits, only the map count blocks.
    let (code, v) = json_report(dir.path(), &["--pool-slots", &slots, "--memory-max", "65536", "--io", "epoll"]);
    assert_eq!(code, EXIT_BLOCKED as i32, "{v}");
    assert_eq!(failures(&v), vec!["max_map_count".to_string()], "{v}");
    let check = check(&v, "max_map_count");
    assert!(check["fix"].as_str().unwrap().contains("vm.max_map_count="), "{check}");
    assert_eq!(check["detail"]["vm.max_map_count"], json!(max));
}

#[test]
fn the_systemd_env_file_sizes_the_checks() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/metalcu.env.example");
    let data = dir.path().join("state").display().to_string();
    let (_, v) = json_report(dir.path(), &["--env-file", env_file.to_str().unwrap(), "--data-dir", &data]);
    assert_eq!(v["sizing"]["memory_max_bytes"], json!(1u64 << 30));
    assert_eq!(v["sizing"]["io"], "auto");
    assert_eq!(v["sizing"]["db_path"], json!(dir.path().join("state/ao-cache.redb")), "a flag beats the env file");
    let out = doctor(dir.path(), &["--io", "kqueue"]);
    assert_eq!(out.status.code(), Some(1), "an invalid setting is an error, not a verdict");
    assert!(String::from_utf8_lossy(&out.stderr).contains("IO = \"kqueue\" (--io)"));
}

#[test]
fn doctor_changes_nothing_on_the_host() {
    let watched = [
        "/proc/sys/vm/max_map_count",
        "/proc/sys/vm/overcommit_memory",
        "/proc/sys/kernel/io_uring_disabled",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/transparent_hugepage/defrag",
    ];
    let snapshot = || watched.map(|p| std::fs::read_to_string(p).ok());
    let before = snapshot();
    let dir = tempfile::tempdir().unwrap();
    doctor(dir.path(), &[]);
    assert_eq!(snapshot(), before);
    assert!(!dir.path().join("data").exists() && !dir.path().join("wasm").exists(), "no directory is created");
}

/// The per-slot mapping count doctor assumes covers what wasmtime's pool really uses once
/// every slot has run an instance (also for real aos modules, with ../shared).
#[test]
fn map_entries_per_slot_cover_what_the_pool_uses() {
    const SLOTS: u32 = 64;
    let _one = MEASURING.lock().unwrap();
    let e = Engine::new(EngineConfig { pool_slots: SLOTS, max_memory_bytes: 256 << 20, ..EngineConfig::default() })
        .unwrap();
    let mut modules =
        vec![e.load(&wat::parse_str(common::echo_wat("", "", "")).unwrap(), ModuleFormat::Emscripten4).unwrap()];
    if let Some(shared) = common::shared_dir() {
        for (file, format) in
            [("aos1-emscripten2.wasm", ModuleFormat::Emscripten2), ("aos2-emscripten4.wasm", ModuleFormat::Emscripten4)]
        {
            let wasm = std::fs::read(shared.join("fixtures/modules").join(file)).unwrap();
            modules.push(e.load(&wasm, format).unwrap());
        }
    }
    let base = maps();
    let mut worst = 0.0f64;
    for m in modules.iter().chain(modules.iter()) {
        let held: Vec<_> = (0..SLOTS)
            .map(|i| {
                let mut p = e.instantiate(m, ProcessOptions::default()).unwrap();
                if std::sync::Arc::ptr_eq(m, &modules[0]) {
                    p.handle(&json!({ "Id": i.to_string() }), &json!({}));
                }
                p
            })
            .collect();
        let per_slot = (maps() - base) as f64 / SLOTS as f64;
        println!("{SLOTS} slots in use: {per_slot:.2} mappings per slot");
        worst = worst.max(per_slot);
        drop(held);
    }
    assert!(worst <= MAP_ENTRIES_PER_SLOT as f64, "measured {worst:.2} per slot > MAP_ENTRIES_PER_SLOT");
}

/// The address space doctor estimates for a pool is what building the engine adds to VmSize.
#[test]
fn the_pool_address_space_estimate_matches_the_reservation() {
    const TOLERANCE_PERCENT: u64 = 2;
    let _one = MEASURING.lock().unwrap();
    let s = Sizing {
        pool_slots: 32,
        memory_max: 1 << 30,
        table_elements: EngineConfig::default().max_table_elements,
        io: metalcu::net::IoMode::Epoll,
        db_path: "x".into(),
        wasm_dir: "y".into(),
    };
    let before = vm_size();
    let e = Engine::new(EngineConfig {
        pool_slots: s.pool_slots,
        max_memory_bytes: s.memory_max,
        ..EngineConfig::default()
    })
    .unwrap();
    let grown = vm_size() - before;
    drop(e);
    let estimate = checks::pool_address_space(&s);
    println!("VmSize grew by {grown} bytes; estimate {estimate}");
    assert!(grown.abs_diff(estimate) * 100 <= estimate * TOLERANCE_PERCENT, "grew {grown}, estimated {estimate}");
}

#[test]
fn the_sysctl_file_leaves_room_for_the_default_pool() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/sysctl.d/90-metalcu.conf")).unwrap();
    let vars = parse_env_file(&text.replace(" = ", "="));
    let max: u64 = vars["vm.max_map_count"].parse().unwrap();
    assert_eq!(max, checks::RECOMMENDED_MAX_MAP_COUNT);
    let default = Sizing {
        pool_slots: EngineConfig::default().pool_slots,
        memory_max: 1 << 30,
        table_elements: EngineConfig::default().max_table_elements,
        io: metalcu::net::IoMode::Auto,
        db_path: "x".into(),
        wasm_dir: "y".into(),
    };
    assert!(checks::map_entries_needed(&default) * 100 < max * checks::MAP_COUNT_WARN_PERCENT);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let key = line.split('=').next().unwrap().trim();
        let proc_path = format!("/proc/sys/{}", key.replace('.', "/"));
        assert!(Path::new(&proc_path).exists(), "{key} is not a sysctl of this kernel");
    }
}

/// Measurement, not a check (run by hand: `cargo test --release --test doctor -- --ignored
/// --nocapture thp_engine`; needs `../shared`): aos1/aos2 resume from an image and a warm aos2
/// Eval, with the engine's memory pool advised `MADV_NOHUGEPAGE` (what metalcu gets under
/// `enabled=madvise` or `never`) and `MADV_HUGEPAGE` (what it would get under `always`). The
/// advice is re-applied before every timed call because wasmtime remaps parts of a slot when it
/// is reused. Only this process's memory is advised; the host is not changed. tuning/README.md
/// records the figures.
#[test]
#[ignore]
fn thp_engine() {
    const ROUNDS: usize = 40;
    /// Instances held at once to measure the resident memory each adds.
    const HELD: i64 = 8;
    const MADV_HUGEPAGE: i32 = 14;
    const MADV_NOHUGEPAGE: i32 = 15;
    let Some(shared) = common::shared_dir() else { return };
    let cfg = EngineConfig { pool_slots: 16, ..EngineConfig::default() };
    let pool_bytes = cfg.pool_slots as u64 * cfg.max_memory_bytes;
    let e = Engine::new(cfg).unwrap();
    // The pool is one reservation (the largest mapping right after the engine is built); slots
    // split it into several mappings as they are used, so the whole range is advised each time.
    let pool = {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .map(|l| {
                let (a, b) = l.split_whitespace().next().unwrap().split_once('-').unwrap();
                (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap())
            })
            .max_by_key(|(a, b)| b - a)
            .unwrap()
    };
    assert!(pool.1 - pool.0 >= pool_bytes, "the pool reservation");
    let advise = |advice: i32| {
        // SAFETY: advice only, over a range of this process's own pool reservation.
        let r = unsafe { libc::madvise(pool.0 as *mut libc::c_void, (pool.1 - pool.0) as usize, advice) };
        assert_eq!(r, 0, "madvise: {}", std::io::Error::last_os_error());
    };
    let steps = |name: &str, n: usize| -> Vec<(Value, Value)> {
        std::fs::read_to_string(shared.join(format!("goldens/out/{name}.jsonl")))
            .unwrap()
            .lines()
            .take(n)
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (v["msg"].clone(), v["env"].clone())
            })
            .collect()
    };
    let huge_kib = || -> u64 {
        std::fs::read_to_string("/proc/self/smaps_rollup")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("AnonHugePages:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let rss_kib = || -> i64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let load = |file: &str, f: ModuleFormat| {
        e.load(&std::fs::read(shared.join("fixtures/modules").join(file)).unwrap(), f).unwrap()
    };
    let m1 = load("aos1-emscripten2.wasm", ModuleFormat::Emscripten2);
    let m2 = load("aos2-emscripten4.wasm", ModuleFormat::Emscripten4);
    let boot = |m: &std::sync::Arc<metalcu::engine::LoadedModule>, golden: &str| {
        let mut p = e.instantiate(m, ProcessOptions::default()).unwrap();
        for (msg, env) in steps(golden, 4) {
            p.handle(&msg, &env);
        }
        p
    };
    let img1 = boot(&m1, "aos1-basics").memory_image();
    let img2 = boot(&m2, "aos2-basics").memory_image();
    let (msg2, env2) = steps("aos2-basics", 2).pop().unwrap();
    let mut eval2 = msg2.clone();
    eval2["Data"] = json!("1 + 1");
    println!(
        "{:>12} {:>14} {:>14} {:>14} {:>14} {:>16} {:>13} {:>13}",
        "advice",
        "aos1 resume",
        "aos2 resume",
        "aos1 start-up",
        "aos2 warm Eval",
        "AnonHugePages",
        "RSS/aos1",
        "RSS/aos2"
    );
    for (name, advice) in [
        ("NOHUGEPAGE", MADV_NOHUGEPAGE),
        ("HUGEPAGE", MADV_HUGEPAGE),
        ("NOHUGEPAGE", MADV_NOHUGEPAGE),
        ("HUGEPAGE", MADV_HUGEPAGE),
    ] {
        let time = |f: &mut dyn FnMut()| {
            median(
                (0..ROUNDS)
                    .map(|_| {
                        advise(advice);
                        let t = Instant::now();
                        f();
                        t.elapsed()
                    })
                    .collect(),
            )
        };
        let r1 = time(&mut || drop(e.instantiate_image(&m1, ProcessOptions::default(), &img1).unwrap()));
        let r2 = time(&mut || drop(e.instantiate_image(&m2, ProcessOptions::default(), &img2).unwrap()));
        let s1 = time(&mut || drop(e.instantiate(&m1, ProcessOptions::default()).unwrap()));
        advise(advice);
        let mut p = e.instantiate_image(&m2, ProcessOptions::default(), &img2).unwrap();
        let w2 = time(&mut || {
            p.handle(&eval2, &env2);
        });
        let huge = huge_kib();
        drop(p);
        let rss = |m: &std::sync::Arc<metalcu::engine::LoadedModule>, img: &[u8]| {
            advise(advice);
            let before = rss_kib();
            let held: Vec<_> =
                (0..HELD).map(|_| e.instantiate_image(m, ProcessOptions::default(), img).unwrap()).collect();
            let per = (rss_kib() - before) / HELD;
            drop(held);
            per
        };
        let (k1, k2) = (rss(&m1, &img1), rss(&m2, &img2));
        println!("{name:>12} {r1:>14?} {r2:>14?} {s1:>14?} {w2:>14?} {huge:>13} kB {k1:>10} kB {k2:>10} kB");
    }
}
