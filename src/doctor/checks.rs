//! The checks of `metalcu doctor`: each is a pure function of the sizing ([`Sizing`]) and the
//! host's values ([`Facts`]) and returns OK, WARN or FAIL with what it found, what the
//! configuration needs, and — when not OK — what to change and why.
//!
//! FAIL means a setting blocks the configured size (serve would refuse to start, or instances
//! would fail before the pool is full); WARN means it runs but not as well as it could. The
//! estimates are sums of named constants measured on wasmtime 48 (`tests/doctor.rs` re-measures
//! the map entries per slot and fails if they outgrow [`MAP_ENTRIES_PER_SLOT`]).

use std::path::PathBuf;

use serde_json::{Value, json};

use super::host::{DiskFacts, Facts, Limit, cpu_list_text, kernel_version};
use crate::net::IoMode;

/// Memory mappings (`vm.max_map_count` entries) one pool slot may use once an instance has run
/// in it: the accessible part of its memory, the rest of its reservation, a copy-on-write memory
/// image, its table. Measured: 3.03 (aos1, aos2) to 4.03 (echo module) per slot with all 64 slots
/// in use; 6 leaves room for a slot whose memory grew twice.
pub const MAP_ENTRIES_PER_SLOT: u64 = 6;
/// Mappings one loaded module adds (its code and data, its memory image). Measured 3 to 19.
pub const MAP_ENTRIES_PER_MODULE: u64 = 24;
/// Modules assumed loaded at once when estimating (distinct modules, not processes).
pub const ASSUMED_RESIDENT_MODULES: u64 = 64;
/// Mappings of everything else: libraries, heap, and two per thread (stack and guard) for up to
/// 512 blocking threads (tokio's default), where evaluations run.
pub const BASE_MAP_ENTRIES: u64 = 1_500;
/// Below this share of `vm.max_map_count` the estimate is OK; above it, WARN (in percent).
pub const MAP_COUNT_WARN_PERCENT: u64 = 75;
/// `vm.max_map_count` recommended by `tuning/sysctl.d/90-metalcu.conf` (also systemd ≥ 256's
/// default); mappings cost kernel memory only when they exist.
pub const RECOMMENDED_MAX_MAP_COUNT: u64 = 1_048_576;

/// Guard after each memory slot (`memory_guard_size` in `Engine::new`).
pub const MEMORY_GUARD_BYTES: u64 = 64 * 1024;
/// Bytes of address space per table element in the pool (a pointer).
pub const TABLE_ELEMENT_BYTES: u64 = 8;
/// Address space of everything but the pool: code, heap, 512 blocking-thread stacks of 2 MiB.
pub const BASE_ADDRESS_SPACE: u64 = 2 << 30;
/// The user address space assumed when `/proc/self/maps` cannot tell (x86-64, 4-level paging).
pub const DEFAULT_USER_ADDRESS_SPACE: u64 = 1 << 47;
/// A wasm page.
pub const WASM_PAGE: u64 = 64 * 1024;

/// From this kernel version on, io_uring rings are charged to the memory cgroup, not to
/// `RLIMIT_MEMLOCK` (and metalcu registers no fixed buffers).
pub const URING_MEMCG_KERNEL: (u32, u32) = (5, 12);
/// Bytes an io_uring ring of `entries` pins on older kernels: 64-byte submission entries, twice
/// as many 16-byte completion entries, the 4-byte index array, and a page of ring headers each.
pub const fn ring_bytes(entries: u64) -> u64 {
    entries * 64 + entries * 2 * 16 + entries * 4 + 2 * 4096
}
/// First kernel with asynchronous userfaultfd write-protect and `PAGEMAP_SCAN`.
pub const WRITE_TRACKING_KERNEL: (u32, u32) = (6, 7);
/// Entries of the io_uring probe's ring (`net::uring::probe`).
pub const PROBE_RING_ENTRIES: u64 = 8;

/// File descriptors of everything but connections: stdio, the database, epoll/eventfds, rings,
/// log and cache files being read.
pub const BASE_FDS: u64 = 128;
/// Outbound connections to SUs and gateways assumed open at once (idle pools + in flight).
pub const OUTBOUND_CONNECTIONS: u64 = 1_024;
/// `LimitNOFILE=` of `systemd/metalcu.service`.
pub const RECOMMENDED_NOFILE: u64 = 65_536;

/// Free space below which the CU cannot be expected to keep writing results: FAIL.
pub const MIN_FREE_DISK: u64 = 256 << 20;
/// Free space below which a WARN is given.
pub const WARN_FREE_DISK: u64 = 10 << 30;

/// The configuration the checks measure the host against (as `metalcu serve` would size it).
#[derive(Debug, Clone)]
pub struct Sizing {
    /// Instances the pool holds at once (`EngineConfig::pool_slots`).
    pub pool_slots: u32,
    /// One slot's memory: `PROCESS_WASM_MEMORY_MAX_LIMIT`.
    pub memory_max: u64,
    /// Largest table (`EngineConfig::max_table_elements`).
    pub table_elements: u32,
    /// `IO`.
    pub io: IoMode,
    /// The results database file (`DATA_DIR` + `DB_URL`).
    pub db_path: PathBuf,
    /// `WASM_BINARY_FILE_DIRECTORY`.
    pub wasm_dir: PathBuf,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    /// `OK`, `WARN` or `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Stable name (`max_map_count`, ...), used in JSON and in the exit message.
    pub id: &'static str,
    pub status: Status,
    /// What was found, in one line.
    pub summary: String,
    /// What to change and why (absent when OK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The values behind the verdict.
    pub detail: Value,
}

/// The ids of every check, in report order.
pub const CHECK_IDS: [&str; 10] = [
    "io_uring",
    "write_tracking",
    "max_map_count",
    "address_space",
    "memlock",
    "nofile",
    "thp",
    "cores",
    "disk",
    "overcommit",
];

fn check(id: &'static str, status: Status, summary: String, fix: Option<String>, detail: Value) -> Check {
    Check { id, status, summary, fix, detail }
}

/// `n` bytes for people (`64.0 GiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn limit_text(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

fn limit_json(l: &Option<Limit>) -> Value {
    match l {
        Some(l) => json!({ "soft": l.soft, "hard": l.hard }),
        None => Value::Null,
    }
}

/// Map entries the configured pool may need at full use.
pub fn map_entries_needed(s: &Sizing) -> u64 {
    map_entries_for_slots(s.pool_slots.into())
}

/// Map entries a pool of `slots` may need at full use.
pub fn map_entries_for_slots(slots: u64) -> u64 {
    BASE_MAP_ENTRIES + slots * MAP_ENTRIES_PER_SLOT + ASSUMED_RESIDENT_MODULES * MAP_ENTRIES_PER_MODULE
}

/// The most pool slots whose mappings fit in `max_map_count` (0 when not even the base fits).
pub fn slots_within_map_count(max_map_count: u64) -> u64 {
    max_map_count.saturating_sub(map_entries_for_slots(0)) / MAP_ENTRIES_PER_SLOT
}

/// Address space the pool reserves at start: every memory slot with its guard, and the tables.
pub fn pool_address_space(s: &Sizing) -> u64 {
    let memory = s.memory_max.div_ceil(WASM_PAGE) * WASM_PAGE + MEMORY_GUARD_BYTES;
    let slots = s.pool_slots as u64;
    slots.saturating_mul(memory).saturating_add(slots.saturating_mul(s.table_elements as u64 * TABLE_ELEMENT_BYTES))
}

/// File descriptors the CU may hold at full load.
pub fn fds_needed() -> u64 {
    BASE_FDS + crate::http::MAX_CONNECTIONS as u64 + OUTBOUND_CONNECTIONS + ASSUMED_RESIDENT_MODULES
}

/// io_uring: probed like `IO=auto` does (a NOP through a small ring).
pub fn io_uring(s: &Sizing, f: &Facts) -> Check {
    let mode = match s.io {
        IoMode::Uring => "uring",
        IoMode::Epoll => "epoll",
        IoMode::Auto => "auto",
    };
    let detail = json!({
        "io": mode,
        "usable": matches!(f.uring, Some(Ok(()))),
        "error": f.uring.as_ref().and_then(|r| r.as_ref().err()),
        "kernel.io_uring_disabled": f.io_uring_disabled,
        "ring_entries": crate::net::uring::RING_ENTRIES,
    });
    let why = match &f.uring {
        Some(Ok(())) => None,
        Some(Err(e)) => Some(e.clone()),
        None => Some("not probed".to_string()),
    };
    let fix_text = "allow io_uring: sysctl kernel.io_uring_disabled=0, and io_uring_setup/io_uring_enter/\
                    io_uring_register in any seccomp profile (systemd/metalcu.service allows them); \
                    a container runtime's default profile usually refuses them";
    match (s.io, why) {
        (IoMode::Epoll, None) => {
            check("io_uring", Status::Ok, "usable, but IO=epoll does not use it".into(), None, detail)
        }
        (IoMode::Epoll, Some(w)) => {
            check("io_uring", Status::Ok, format!("not usable ({w}); IO=epoll does not need it"), None, detail)
        }
        (_, None) => check(
            "io_uring",
            Status::Ok,
            format!("usable: a NOP completed through a ring; IO={mode} uses it"),
            None,
            detail,
        ),
        (IoMode::Auto, Some(w)) => check(
            "io_uring",
            Status::Warn,
            format!("not usable ({w}); IO=auto falls back to epoll"),
            Some(format!("{fix_text}; or set IO=epoll to say so")),
            detail,
        ),
        (IoMode::Uring, Some(w)) => check(
            "io_uring",
            Status::Fail,
            format!("not usable ({w}); IO=uring makes serve refuse to start"),
            Some(format!("{fix_text}; or set IO=auto (falls back to epoll) or IO=epoll")),
            detail,
        ),
    }
}

/// Kernel write tracking for state hashes (`engine::dirty`): without it every state hash reads
/// all of a process's memory after each message.
pub fn write_tracking(f: &Facts) -> Check {
    let detail = json!({ "tracking": f.write_tracking, "kernel": f.kernel_release });
    match f.write_tracking {
        Some(true) => check(
            "write_tracking",
            Status::Ok,
            "the kernel reports written pages (userfaultfd write-protect + PAGEMAP_SCAN): state hashes \
             rehash only what a message wrote"
                .into(),
            None,
            detail,
        ),
        Some(false) => check(
            "write_tracking",
            Status::Warn,
            format!(
                "kernel {} refuses write tracking: every state hash rehashes all of a process's memory (PERF.md)",
                f.kernel_release
            ),
            Some(format!(
                "Linux ≥ {}.{} with userfaultfd allowed (the unit's @system-service filter allows it; container \
                 seccomp profiles often refuse it); results are the same, only slower",
                WRITE_TRACKING_KERNEL.0, WRITE_TRACKING_KERNEL.1
            )),
            detail,
        ),
        None => check("write_tracking", Status::Warn, "not probed".into(), None, detail),
    }
}

/// `vm.max_map_count` against the mappings the pool needs once every slot has been used.
pub fn max_map_count(s: &Sizing, f: &Facts) -> Check {
    let need = map_entries_needed(s);
    let detail = json!({
        "vm.max_map_count": f.max_map_count,
        "needed": need,
        "per_slot": MAP_ENTRIES_PER_SLOT,
        "per_module": MAP_ENTRIES_PER_MODULE,
        "modules_assumed": ASSUMED_RESIDENT_MODULES,
        "base": BASE_MAP_ENTRIES,
    });
    let formula = format!(
        "{BASE_MAP_ENTRIES} + {} slots × {MAP_ENTRIES_PER_SLOT} + {ASSUMED_RESIDENT_MODULES} modules × \
         {MAP_ENTRIES_PER_MODULE}",
        s.pool_slots
    );
    let Some(max) = f.max_map_count else {
        return check("max_map_count", Status::Warn, "cannot read /proc/sys/vm/max_map_count".into(), None, detail);
    };
    let target = (need * 2).max(RECOMMENDED_MAX_MAP_COUNT);
    let fix = format!(
        "sysctl -w vm.max_map_count={target} (persist with tuning/sysctl.d/90-metalcu.conf); each used slot \
         splits the pool's reservation into several mappings, and a mapping refused means an instance that \
         cannot start"
    );
    if need > max {
        check(
            "max_map_count",
            Status::Fail,
            format!("vm.max_map_count = {max}, but the pool needs about {need} mappings ({formula})"),
            Some(fix),
            detail,
        )
    } else if need * 100 > max * MAP_COUNT_WARN_PERCENT {
        check(
            "max_map_count",
            Status::Warn,
            format!("vm.max_map_count = {max} leaves little room: the pool needs about {need} ({formula})"),
            Some(fix),
            detail,
        )
    } else {
        check(
            "max_map_count",
            Status::Ok,
            format!("vm.max_map_count = {max}; the pool needs about {need} ({formula})"),
            None,
            detail,
        )
    }
}

/// The pool's address-space reservation against the user address space and `RLIMIT_AS`, then
/// an actual reservation (`reserve`, the engine built and dropped) when the estimate fits.
pub fn address_space(s: &Sizing, f: &Facts, reserve: impl FnOnce() -> Result<(), String>) -> Check {
    let pool = pool_address_space(s);
    let need = pool.saturating_add(BASE_ADDRESS_SPACE);
    let va = f.user_address_space.unwrap_or(DEFAULT_USER_ADDRESS_SPACE);
    let rlimit = f.rlimit_as.and_then(|l| l.soft);
    let mut detail = json!({
        "pool_bytes": pool,
        "needed_bytes": need,
        "user_address_space_bytes": va,
        "rlimit_as": limit_json(&f.rlimit_as),
        "slots": s.pool_slots,
        "slot_bytes": s.memory_max,
    });
    let shape =
        format!("{} slots × ({} + {} guard) + tables", s.pool_slots, bytes(s.memory_max), bytes(MEMORY_GUARD_BYTES));
    if need > va {
        return check(
            "address_space",
            Status::Fail,
            format!("the pool reserves {} ({shape}), more than the {} a process can address", bytes(pool), bytes(va)),
            Some(
                "lower the pool: fewer slots (--pool-slots) or a smaller PROCESS_WASM_MEMORY_MAX_LIMIT; every \
                 slot reserves the full memory cap up front"
                    .into(),
            ),
            detail,
        );
    }
    if let Some(limit) = rlimit
        && need > limit
    {
        return check(
            "address_space",
            Status::Fail,
            format!("the pool reserves {} ({shape}), more than RLIMIT_AS = {}", bytes(pool), bytes(limit)),
            Some(
                "remove the address-space limit (ulimit -v unlimited; LimitAS=infinity in the unit): the \
                 reservation is address space only, not memory"
                    .into(),
            ),
            detail,
        );
    }
    match reserve() {
        Ok(()) => {
            detail["reserved"] = json!(true);
            check(
                "address_space",
                Status::Ok,
                format!("the pool's {} ({shape}) was reserved and released", bytes(pool)),
                None,
                detail,
            )
        }
        Err(e) => {
            detail["reserved"] = json!(false);
            detail["error"] = json!(e);
            check(
                "address_space",
                Status::Fail,
                format!("reserving the pool's {} ({shape}) failed: {e}", bytes(pool)),
                Some("check RLIMIT_AS, vm.overcommit_memory and the memory cgroup's limits; or lower the pool".into()),
                detail,
            )
        }
    }
}

/// `RLIMIT_MEMLOCK`: matters for io_uring rings on kernels before 5.12 only.
pub fn memlock(s: &Sizing, f: &Facts) -> Check {
    let version = kernel_version(&f.kernel_release);
    let rings = ring_bytes(crate::net::uring::RING_ENTRIES as u64) + ring_bytes(PROBE_RING_ENTRIES);
    let soft = f.rlimit_memlock.and_then(|l| l.soft);
    let detail = json!({
        "rlimit_memlock": limit_json(&f.rlimit_memlock),
        "kernel": f.kernel_release,
        "rings_bytes": rings,
    });
    let shown = soft.map_or_else(|| "unlimited".to_string(), bytes);
    let charged = version.is_some_and(|v| v < URING_MEMCG_KERNEL);
    if s.io == IoMode::Epoll || !charged {
        let why = if s.io == IoMode::Epoll {
            "IO=epoll uses no ring".to_string()
        } else {
            format!("kernel {} charges io_uring rings to the memory cgroup, not to it", f.kernel_release)
        };
        return check("memlock", Status::Ok, format!("RLIMIT_MEMLOCK = {shown}; {why}"), None, detail);
    }
    if soft.is_none_or(|l| l >= rings) {
        return check(
            "memlock",
            Status::Ok,
            format!("RLIMIT_MEMLOCK = {shown} covers the io_uring rings ({})", bytes(rings)),
            None,
            detail,
        );
    }
    let status = if s.io == IoMode::Uring { Status::Fail } else { Status::Warn };
    check(
        "memlock",
        status,
        format!(
            "RLIMIT_MEMLOCK = {shown}, but kernel {} pins {} for the io_uring rings",
            f.kernel_release,
            bytes(rings)
        ),
        Some("raise it (LimitMEMLOCK= in the unit, memlock in limits.conf), or set IO=epoll".into()),
        detail,
    )
}

/// `RLIMIT_NOFILE` against connections in and out, modules and files.
pub fn nofile(f: &Facts) -> Check {
    let need = fds_needed();
    let soft = f.rlimit_nofile.and_then(|l| l.soft);
    let hard = f.rlimit_nofile.and_then(|l| l.hard);
    let detail = json!({ "rlimit_nofile": limit_json(&f.rlimit_nofile), "needed": need });
    let formula = format!(
        "{BASE_FDS} + {} inbound + {OUTBOUND_CONNECTIONS} outbound + {ASSUMED_RESIDENT_MODULES} modules",
        crate::http::MAX_CONNECTIONS
    );
    if soft.is_none_or(|l| l >= need) {
        return check(
            "nofile",
            Status::Ok,
            format!("RLIMIT_NOFILE = {}; the CU may use about {need} ({formula})", limit_text(soft)),
            None,
            detail,
        );
    }
    check(
        "nofile",
        Status::Warn,
        format!(
            "RLIMIT_NOFILE = {} (hard {}), but the CU may use about {need} ({formula})",
            limit_text(soft),
            limit_text(hard)
        ),
        Some(format!(
            "the unit sets LimitNOFILE={RECOMMENDED_NOFILE}; in a shell, ulimit -n {RECOMMENDED_NOFILE}: past the \
             limit, new connections are refused (this reports the limits of the shell doctor runs in)"
        )),
        detail,
    )
}

/// Transparent huge pages: what the kernel does with wasm memories.
pub fn thp(f: &Facts) -> Check {
    let detail = json!({ "enabled": f.thp_enabled, "defrag": f.thp_defrag });
    let Some(mode) = f.thp_enabled.as_deref() else {
        return check(
            "thp",
            Status::Ok,
            "transparent huge pages are not available on this kernel".into(),
            None,
            detail,
        );
    };
    let defrag = f.thp_defrag.as_deref().unwrap_or("?");
    match mode {
        "always" if defrag == "always" => check(
            "thp",
            Status::Warn,
            "enabled = always with defrag = always: page faults in wasm memories may stall in direct compaction".into(),
            Some(
                "echo madvise > /sys/kernel/mm/transparent_hugepage/defrag (or defer+madvise): keeps huge pages \
                 without compaction stalls at instantiation; see tuning/README.md"
                    .into(),
            ),
            detail,
        ),
        "always" => check(
            "thp",
            Status::Ok,
            format!(
                "enabled = always (defrag = {defrag}): wasm memories get huge pages — faster resumes, somewhat \
                 more memory per instance (tuning/README.md)"
            ),
            None,
            detail,
        ),
        _ => check(
            "thp",
            Status::Ok,
            format!(
                "enabled = {mode} (defrag = {defrag}): wasm memories use 4 KiB pages (neither wasmtime nor \
                 metalcu's allocator asks for huge pages)"
            ),
            None,
            detail,
        ),
    }
}

/// CPUs: online, allowed to this process, isolated; NUMA nodes.
pub fn cores(f: &Facts) -> Check {
    let allowed = &f.cpus_allowed;
    let isolated_allowed: Vec<u32> = f.cpus_isolated.iter().copied().filter(|c| allowed.contains(c)).collect();
    let detail = json!({
        "online": cpu_list_text(&f.cpus_online),
        "allowed": cpu_list_text(allowed),
        "isolated": cpu_list_text(&f.cpus_isolated),
        "nohz_full": cpu_list_text(&f.cpus_nohz_full),
        "numa_nodes": f.numa_nodes,
    });
    let summary = format!(
        "{} online ({}), {} allowed here ({}), isolated: {}, nohz_full: {}, NUMA nodes with memory: {}",
        f.cpus_online.len(),
        cpu_list_text(&f.cpus_online),
        allowed.len(),
        cpu_list_text(allowed),
        cpu_list_text(&f.cpus_isolated),
        cpu_list_text(&f.cpus_nohz_full),
        f.numa_nodes.len().max(1),
    );
    if allowed.len() == 1 {
        return check(
            "cores",
            Status::Warn,
            summary,
            Some(
                "one CPU: evaluations and the HTTP side share it; give the CU at least 2 (CPUAffinity=/\
                 AllowedCPUs= in the unit)"
                    .into(),
            ),
            detail,
        );
    }
    if !isolated_allowed.is_empty() {
        return check(
            "cores",
            Status::Warn,
            summary,
            Some(format!(
                "isolated CPUs {} are in this process's affinity, but the scheduler does not balance tasks onto \
                 isolated CPUs: pin the CU to them explicitly (CPUAffinity= in the unit) or leave them out",
                cpu_list_text(&isolated_allowed)
            )),
            detail,
        );
    }
    check("cores", Status::Ok, summary, None, detail)
}

fn disk_one(d: &DiskFacts, what: &str) -> (Status, String, Option<String>) {
    let at = if d.existing == d.dir {
        d.dir.display().to_string()
    } else {
        format!("{} (created under {})", d.dir.display(), d.existing.display())
    };
    if !d.writable {
        return (
            Status::Fail,
            format!("{what} {at}: not writable by this user"),
            Some("give the service user the directory (StateDirectory=/CacheDirectory= do it under systemd)".into()),
        );
    }
    match d.free_bytes {
        None => (Status::Warn, format!("{what} {at}: free space unknown"), None),
        Some(free) if free < MIN_FREE_DISK => (
            Status::Fail,
            format!("{what} {at}: {} free", bytes(free)),
            Some(format!("free space: below {} results and modules cannot be written", bytes(MIN_FREE_DISK))),
        ),
        Some(free) if free < WARN_FREE_DISK => (
            Status::Warn,
            format!("{what} {at}: {} free", bytes(free)),
            Some(format!("keep at least {} free: results are never deleted", bytes(WARN_FREE_DISK))),
        ),
        Some(free) => (Status::Ok, format!("{what} {at}: {} free", bytes(free)), None),
    }
}

/// Free space and write access where the results and the modules are kept.
pub fn disk(s: &Sizing, f: &Facts) -> Check {
    let names = ["results", "modules"];
    let mut parts = Vec::new();
    let mut fixes = Vec::new();
    let mut worst = Status::Ok;
    let mut rows = Vec::new();
    for (i, d) in f.disks.iter().enumerate() {
        let what = names.get(i).copied().unwrap_or("directory");
        let (st, text, fix) = disk_one(d, what);
        worst = worst.max(st);
        parts.push(text);
        fixes.extend(fix);
        rows.push(json!({
            "what": what, "dir": d.dir, "inspected": d.existing, "free_bytes": d.free_bytes, "writable": d.writable,
        }));
    }
    if f.disks.is_empty() {
        parts.push(format!("no directory inspected (database {})", s.db_path.display()));
        worst = Status::Warn;
    }
    fixes.dedup();
    check("disk", worst, parts.join("; "), (!fixes.is_empty()).then(|| fixes.join("; ")), json!(rows))
}

/// Overcommit policy against the memory the pool could commit at full use.
pub fn overcommit(s: &Sizing, f: &Facts) -> Check {
    let full = (s.pool_slots as u64).saturating_mul(s.memory_max);
    let detail = json!({
        "vm.overcommit_memory": f.overcommit_memory,
        "vm.overcommit_ratio": f.overcommit_ratio,
        "mem_total_bytes": f.mem_total,
        "swap_total_bytes": f.swap_total,
        "commit_limit_bytes": f.commit_limit,
        "committed_bytes": f.committed_as,
        "pool_at_cap_bytes": full,
    });
    let ram = f.mem_total.unwrap_or(0) + f.swap_total.unwrap_or(0);
    let beyond_ram = if ram > 0 && full > ram {
        format!(
            "; every slot at its cap ({}) exceeds RAM + swap ({}): fine while processes stay smaller, the OOM \
             killer acts otherwise",
            bytes(full),
            bytes(ram)
        )
    } else {
        String::new()
    };
    match f.overcommit_memory {
        Some(2) => {
            let room = f.commit_limit.unwrap_or(0).saturating_sub(f.committed_as.unwrap_or(0));
            if full > room {
                check(
                    "overcommit",
                    Status::Warn,
                    format!(
                        "vm.overcommit_memory = 2 (strict): {} left to commit, the pool at cap needs {}",
                        bytes(room),
                        bytes(full)
                    ),
                    Some(
                        "under strict accounting every page a wasm memory grows into is committed: memory.grow \
                         fails (the process sees out-of-memory) before the pool is full; use \
                         vm.overcommit_memory=0, or raise vm.overcommit_ratio / swap"
                            .into(),
                    ),
                    detail,
                )
            } else {
                check(
                    "overcommit",
                    Status::Ok,
                    format!("vm.overcommit_memory = 2 (strict), with room for the pool at cap ({})", bytes(full)),
                    None,
                    detail,
                )
            }
        }
        Some(m) => check(
            "overcommit",
            Status::Ok,
            format!(
                "vm.overcommit_memory = {m} ({}): the pool's reservation is not charged, memory is as it is \
                 touched{beyond_ram}",
                if m == 1 { "always" } else { "heuristic" }
            ),
            None,
            detail,
        ),
        None => check("overcommit", Status::Warn, "cannot read vm.overcommit_memory".into(), None, detail),
    }
}

/// Every check, in [`CHECK_IDS`] order.
pub fn all(s: &Sizing, f: &Facts, reserve: impl FnOnce() -> Result<(), String>) -> Vec<Check> {
    vec![
        io_uring(s, f),
        write_tracking(f),
        max_map_count(s, f),
        address_space(s, f, reserve),
        memlock(s, f),
        nofile(f),
        thp(f),
        cores(f),
        disk(s, f),
        overcommit(s, f),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizing(slots: u32, memory: u64) -> Sizing {
        Sizing {
            pool_slots: slots,
            memory_max: memory,
            table_elements: 100_000,
            io: IoMode::Auto,
            db_path: "/var/lib/metalcu/ao-cache.redb".into(),
            wasm_dir: "/var/cache/metalcu".into(),
        }
    }

    fn facts() -> Facts {
        Facts {
            kernel_release: "6.18.0".into(),
            uring: Some(Ok(())),
            write_tracking: Some(true),
            max_map_count: Some(65_530),
            user_address_space: Some(1 << 47),
            rlimit_nofile: Some(Limit { soft: Some(65_536), hard: Some(65_536) }),
            rlimit_memlock: Some(Limit { soft: Some(8 << 20), hard: Some(8 << 20) }),
            thp_enabled: Some("madvise".into()),
            thp_defrag: Some("madvise".into()),
            cpus_online: vec![0, 1, 2, 3],
            cpus_allowed: vec![0, 1, 2, 3],
            overcommit_memory: Some(0),
            ..Facts::default()
        }
    }

    #[test]
    fn the_default_pool_fits_a_default_host() {
        let s = sizing(64, 1 << 30);
        let checks = all(&s, &facts(), || Ok(()));
        let ids: Vec<_> = checks.iter().map(|c| c.id).collect();
        assert_eq!(ids, CHECK_IDS);
        for c in &checks {
            if c.id != "disk" {
                assert_eq!(c.status, Status::Ok, "{c:?}");
            }
        }
        // 64 × (1 GiB + 64 KiB) + 64 × 100 000 × 8 B: what VmSize grew by when the engine was built.
        assert_eq!(pool_address_space(&s), 64 * ((1 << 30) + 65536) + 51_200_000);
    }

    #[test]
    fn too_many_slots_for_the_map_count_fail_and_name_the_sysctl() {
        let c = max_map_count(&sizing(20_000, 1 << 16), &facts());
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("vm.max_map_count="));
        let c = max_map_count(&sizing(10_000, 1 << 16), &facts());
        assert_eq!(c.status, Status::Warn, "{}", c.summary);
    }

    #[test]
    fn a_pool_beyond_the_address_space_fails_without_trying_to_reserve_it() {
        let c = address_space(&sizing(200_000, 1 << 30), &facts(), || panic!("must not reserve"));
        assert_eq!(c.status, Status::Fail);
        let f = Facts { rlimit_as: Some(Limit { soft: Some(8 << 30), hard: None }), ..facts() };
        let c = address_space(&sizing(64, 1 << 30), &f, || panic!("must not reserve"));
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("RLIMIT_AS"));
        let c = address_space(&sizing(64, 1 << 30), &facts(), || Err("ENOMEM".into()));
        assert_eq!(c.status, Status::Fail);
    }

    #[test]
    fn io_uring_verdicts_follow_the_io_mode() {
        let broken = Facts { uring: Some(Err("EPERM".into())), ..facts() };
        let mut s = sizing(64, 1 << 30);
        assert_eq!(io_uring(&s, &broken).status, Status::Warn);
        s.io = IoMode::Uring;
        assert_eq!(io_uring(&s, &broken).status, Status::Fail);
        s.io = IoMode::Epoll;
        assert_eq!(io_uring(&s, &broken).status, Status::Ok);
    }

    #[test]
    fn memlock_matters_only_before_5_12() {
        let mut s = sizing(64, 1 << 30);
        s.io = IoMode::Uring;
        let old = Facts {
            kernel_release: "5.4.0".into(),
            rlimit_memlock: Some(Limit { soft: Some(16384), hard: None }),
            ..facts()
        };
        assert_eq!(memlock(&s, &old).status, Status::Fail);
        let new = Facts { kernel_release: "6.1.0".into(), ..old };
        assert_eq!(memlock(&s, &new).status, Status::Ok);
    }

    #[test]
    fn thp_strict_overcommit_and_low_limits_warn() {
        let f = Facts { thp_enabled: Some("always".into()), thp_defrag: Some("always".into()), ..facts() };
        assert_eq!(thp(&f).status, Status::Warn);
        let f = Facts { thp_enabled: Some("always".into()), ..facts() };
        assert_eq!(thp(&f).status, Status::Ok);
        let f =
            Facts { overcommit_memory: Some(2), commit_limit: Some(16 << 30), committed_as: Some(2 << 30), ..facts() };
        assert_eq!(overcommit(&sizing(64, 1 << 30), &f).status, Status::Warn);
        let f = Facts { rlimit_nofile: Some(Limit { soft: Some(1024), hard: Some(4096) }), ..facts() };
        assert_eq!(nofile(&f).status, Status::Warn);
        let f = Facts { cpus_allowed: vec![0], ..facts() };
        assert_eq!(cores(&f).status, Status::Warn);
        let f = Facts { write_tracking: Some(false), ..facts() };
        assert_eq!(write_tracking(&f).status, Status::Warn);
    }

    #[test]
    fn a_full_or_read_only_disk_fails() {
        let d =
            |free, writable| DiskFacts { dir: "/d".into(), existing: "/d".into(), free_bytes: Some(free), writable };
        let s = sizing(64, 1 << 30);
        let f = Facts { disks: vec![d(100 << 30, true), d(1 << 20, true)], ..facts() };
        assert_eq!(disk(&s, &f).status, Status::Fail);
        let f = Facts { disks: vec![d(100 << 30, false)], ..facts() };
        assert_eq!(disk(&s, &f).status, Status::Fail);
        let f = Facts { disks: vec![d(5 << 30, true)], ..facts() };
        assert_eq!(disk(&s, &f).status, Status::Warn);
    }
}
