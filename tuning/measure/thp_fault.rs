//! Transparent huge pages and wasm linear memory: what `enabled=always` would change for
//! metalcu, measured without changing the host.
//!
//! wasmtime's pooling allocator reserves each slot `PROT_NONE` and makes the accessible part
//! read-write; neither wasmtime nor mimalloc (by default) call `madvise(MADV_HUGEPAGE)`, so under
//! the usual `enabled=madvise` metalcu's memories use 4 KiB pages, exactly as under `never`.
//! This program maps memory the same way and compares, per round, a region advised
//! `MADV_NOHUGEPAGE` (what metalcu gets under `madvise` or `never`) with one advised
//! `MADV_HUGEPAGE` (what an unadvised region gets under `always`):
//!
//! - `restore`: copy a memory image into a fresh region (page faults + copy), as resuming a
//!   process from a checkpoint does;
//! - `random`: random 8-byte read-modify-writes over the region (TLB-bound, like a Lua heap);
//! - `reset`: `madvise(MADV_DONTNEED)` of the region, as wasmtime does when a slot is reused.
//!
//! Build and run (no dependencies; any user; only this process's memory is touched):
//!
//! ```sh
//! rustc -O --edition 2021 tuning/measure/thp_fault.rs -o /tmp/thp_fault && /tmp/thp_fault
//! ```
//!
//! With `enabled=never` both rows match (the advice is ignored); the `AnonHugePages` column
//! shows whether huge pages were actually used.

use std::time::{Duration, Instant};

const PROT_NONE: i32 = 0;
const PROT_READ: i32 = 1;
const PROT_WRITE: i32 = 2;
const MAP_PRIVATE: i32 = 0x02;
const MAP_ANONYMOUS: i32 = 0x20;
const MAP_NORESERVE: i32 = 0x4000;
const MADV_DONTNEED: i32 = 4;
const MADV_HUGEPAGE: i32 = 14;
const MADV_NOHUGEPAGE: i32 = 15;

/// Size of one reserved slot, as metalcu's default `PROCESS_WASM_MEMORY_MAX_LIMIT`.
const SLOT_BYTES: usize = 1 << 30;
/// Huge page size (x86-64 PMD).
const HUGE: usize = 2 << 20;
/// Small page size.
const PAGE: usize = 4096;
/// Memory sizes measured: an aos1-sized memory and an aos2-sized one (110 MB image).
const SIZES_MIB: [usize; 2] = [16, 112];
/// Rounds per configuration; the median is reported.
const ROUNDS: usize = 15;
/// Random read-modify-writes per round.
const RANDOM_OPS: usize = 4_000_000;

unsafe extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
    fn mprotect(addr: *mut u8, len: usize, prot: i32) -> i32;
    fn madvise(addr: *mut u8, len: usize, advice: i32) -> i32;
}

fn anon_huge_kib() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    restore: Duration,
    random: Duration,
    reset: Duration,
    huge_kib: u64,
}

fn round(slot: *mut u8, len: usize, advice: i32, image: &[u8]) -> Row {
    unsafe {
        assert_eq!(mprotect(slot, len, PROT_READ | PROT_WRITE), 0, "mprotect");
        assert_eq!(madvise(slot, len, advice), 0, "madvise");
        let mem = std::slice::from_raw_parts_mut(slot, len);
        let t = Instant::now();
        mem.copy_from_slice(image);
        let restore = t.elapsed();
        let huge_kib = anon_huge_kib();
        let words = std::slice::from_raw_parts_mut(slot as *mut u64, len / 8);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let t = Instant::now();
        for _ in 0..RANDOM_OPS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % words.len();
            words[i] = words[i].wrapping_add(x);
        }
        let random = t.elapsed();
        std::hint::black_box(&words[0]);
        let t = Instant::now();
        assert_eq!(madvise(slot, len, MADV_DONTNEED), 0, "madvise(DONTNEED)");
        let reset = t.elapsed();
        assert_eq!(mprotect(slot, len, PROT_NONE), 0, "mprotect");
        Row { restore, random, reset, huge_kib }
    }
}

fn main() {
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let defrag = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/defrag").unwrap_or_default();
    println!("transparent_hugepage/enabled: {}   defrag: {}", thp.trim(), defrag.trim());
    let raw = unsafe {
        mmap(std::ptr::null_mut(), SLOT_BYTES + HUGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    };
    assert!(!raw.is_null() && raw as isize != -1, "mmap");
    let slot = unsafe { raw.add((HUGE - raw as usize % HUGE) % HUGE) };
    println!(
        "{:>8} {:>14} {:>12} {:>12} {:>12} {:>15}",
        "memory", "advice", "restore", "random", "reset", "AnonHugePages"
    );
    for mib in SIZES_MIB {
        let len = mib << 20;
        let image: Vec<u8> = (0..len).map(|i| (i / PAGE) as u8 ^ (i as u8)).collect();
        for (name, advice) in [("NOHUGEPAGE", MADV_NOHUGEPAGE), ("HUGEPAGE", MADV_HUGEPAGE)] {
            let rows: Vec<Row> = (0..ROUNDS).map(|_| round(slot, len, advice, &image)).collect();
            let huge = rows.iter().map(|r| r.huge_kib).max().unwrap_or(0);
            println!(
                "{:>5} MiB {:>14} {:>12?} {:>12?} {:>12?} {:>12} kB",
                mib,
                name,
                median(rows.iter().map(|r| r.restore).collect()),
                median(rows.iter().map(|r| r.random).collect()),
                median(rows.iter().map(|r| r.reset).collect()),
                huge
            );
        }
    }
}
