//! What `metalcu doctor` reads from the host: sysctls, `/sys` and `/proc` files, resource limits,
//! CPU affinity, file-system space and the io_uring probe. Everything here only reads; nothing
//! is written, raised or allocated beyond this process.
//!
//! [`Facts::gather`] collects every value once, so the checks in [`super::checks`] are pure
//! functions of `(settings, facts)` and are tested with made-up facts.

use std::path::{Path, PathBuf};

/// A resource limit (`getrlimit`): soft and hard values, `None` for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// Space and permissions of the file system holding one of the CU's directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFacts {
    /// The configured directory, made absolute.
    pub dir: PathBuf,
    /// The directory inspected: `dir` itself, or its nearest existing ancestor (serve creates it).
    pub existing: PathBuf,
    /// Bytes an unprivileged writer may still use (`f_bavail × f_frsize`).
    pub free_bytes: Option<u64>,
    /// Whether this user may write (or create) there.
    pub writable: bool,
}

/// Every host value the checks use. A value that cannot be read is `None` (or empty).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `uname -r`.
    pub kernel_release: String,
    /// The io_uring probe (`metalcu::net::uring_available`): `Err` names the reason; `None` when
    /// not probed.
    pub uring: Option<Result<(), String>>,
    /// Whether the kernel tracks written pages for state hashes (userfaultfd async
    /// write-protect + `PAGEMAP_SCAN`, `engine::dirty`); `None` when not probed.
    pub write_tracking: Option<bool>,
    /// `kernel.io_uring_disabled` (0 allowed, 1 restricted to a group, 2 disabled).
    pub io_uring_disabled: Option<u64>,
    /// `vm.max_map_count`.
    pub max_map_count: Option<u64>,
    /// Size of a user address space: the top of the highest user mapping rounded up to a power
    /// of two (2^47 on x86-64 with 4-level paging).
    pub user_address_space: Option<u64>,
    /// This process's address-space size (`VmSize`), bytes.
    pub own_vm_bytes: Option<u64>,
    pub rlimit_as: Option<Limit>,
    pub rlimit_memlock: Option<Limit>,
    pub rlimit_nofile: Option<Limit>,
    /// `/sys/kernel/mm/transparent_hugepage/enabled` and `defrag` (the bracketed choice).
    pub thp_enabled: Option<String>,
    pub thp_defrag: Option<String>,
    /// Online CPUs (`/sys/devices/system/cpu/online`).
    pub cpus_online: Vec<u32>,
    /// CPUs this process may run on (`sched_getaffinity`).
    pub cpus_allowed: Vec<u32>,
    /// `isolcpus=` (`/sys/devices/system/cpu/isolated`) and `nohz_full=` CPUs.
    pub cpus_isolated: Vec<u32>,
    pub cpus_nohz_full: Vec<u32>,
    /// NUMA nodes with memory (`/sys/devices/system/node/has_memory`).
    pub numa_nodes: Vec<u32>,
    /// `vm.overcommit_memory` (0 heuristic, 1 always, 2 strict) and `vm.overcommit_ratio`.
    pub overcommit_memory: Option<u64>,
    pub overcommit_ratio: Option<u64>,
    /// From `/proc/meminfo`, bytes.
    pub mem_total: Option<u64>,
    pub swap_total: Option<u64>,
    pub commit_limit: Option<u64>,
    pub committed_as: Option<u64>,
    /// One entry per configured directory (results database, module directory).
    pub disks: Vec<DiskFacts>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

pub fn read_u64(path: &str) -> Option<u64> {
    read(path)?.parse().ok()
}

/// The bracketed choice of a `/sys` mode file: `always [madvise] never` → `madvise`.
pub fn bracketed(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_string())
}

/// A kernel CPU list (`0-3,8,10-11`); empty for an empty or unreadable list.
pub fn cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>())
            && a <= b
        {
            out.extend(a..=b);
        }
    }
    out
}

/// A CPU list written compactly (`[0,1,2,5]` → `0-2,5`).
pub fn cpu_list_text(cpus: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { cpus[i].to_string() } else { format!("{}-{}", cpus[i], cpus[j]) });
        i = j + 1;
    }
    if parts.is_empty() { "none".into() } else { parts.join(",") }
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// A `/proc/meminfo` field in bytes.
pub fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The size of the user address space seen from `/proc/self/maps`: the end of the highest user
/// mapping (the stack, normally) rounded up to a power of two.
pub fn address_space_from_maps(maps: &str) -> Option<u64> {
    let top = maps
        .lines()
        .filter(|l| !l.ends_with("[vsyscall]"))
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().next()?.split('-').nth(1)?, 16).ok())
        .max()?;
    top.checked_next_power_of_two()
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<Limit> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 {
        return None;
    }
    let v = |x: libc::rlim_t| (x != libc::RLIM_INFINITY).then_some(x);
    Some(Limit { soft: v(r.rlim_cur), hard: v(r.rlim_max) })
}

fn allowed_cpus() -> Vec<u32> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as u32).filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) }).collect()
}

fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn c_path(p: &Path) -> Option<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).ok()
}

/// Space and writability of `dir`'s file system (read-only: `statvfs` and `access`).
pub fn disk(dir: &Path) -> DiskFacts {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let existing =
        absolute.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let c = c_path(&existing);
    let free_bytes = c.as_ref().and_then(|c| {
        // SAFETY: statvfs fills the zeroed struct for a NUL-terminated path.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
    });
    // SAFETY: access only reads the NUL-terminated path.
    let writable = c.is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0);
    DiskFacts { dir: absolute, existing, free_bytes, writable }
}

/// Bytes of the scratch mapping the write-tracking probe hashes (four pages).
const TRACKING_PROBE_BYTES: usize = 4 * 4096;

/// Whether the state hasher gets the kernel's record of written pages here: a scratch anonymous
/// mapping of this process is hashed, written, and hashed again; tracking must survive both.
pub fn write_tracking() -> bool {
    let Ok(mut map) = memmap2::MmapMut::map_anon(TRACKING_PROBE_BYTES) else { return false };
    let mut hasher = crate::engine::dirty::StateHasher::new(true);
    hasher.hash(&map);
    if !hasher.is_tracking() {
        return false;
    }
    map[TRACKING_PROBE_BYTES / 2] = 1;
    let tracked = hasher.hash(&map);
    hasher.is_tracking() && tracked == crate::engine::dirty::StateHasher::full(&map)
}

impl Facts {
    /// Reads everything from this host; `dirs` are the CU's directories (database, modules).
    /// `probe_uring` runs the io_uring probe (a throwaway ring completing a NOP).
    pub fn gather(dirs: &[PathBuf], probe_uring: bool) -> Facts {
        let meminfo = read("/proc/meminfo").unwrap_or_default();
        let status = read("/proc/self/status").unwrap_or_default();
        let thp = "/sys/kernel/mm/transparent_hugepage";
        Facts {
            kernel_release: kernel_release(),
            uring: probe_uring.then(crate::net::uring_available),
            write_tracking: Some(write_tracking()),
            io_uring_disabled: read_u64("/proc/sys/kernel/io_uring_disabled"),
            max_map_count: read_u64("/proc/sys/vm/max_map_count"),
            user_address_space: read("/proc/self/maps").as_deref().and_then(address_space_from_maps),
            own_vm_bytes: meminfo_field(&status, "VmSize"),
            rlimit_as: rlimit(libc::RLIMIT_AS),
            rlimit_memlock: rlimit(libc::RLIMIT_MEMLOCK),
            rlimit_nofile: rlimit(libc::RLIMIT_NOFILE),
            thp_enabled: read(&format!("{thp}/enabled")).as_deref().and_then(bracketed),
            thp_defrag: read(&format!("{thp}/defrag")).as_deref().and_then(bracketed),
            cpus_online: cpu_list(&read("/sys/devices/system/cpu/online").unwrap_or_default()),
            cpus_allowed: allowed_cpus(),
            cpus_isolated: cpu_list(&read("/sys/devices/system/cpu/isolated").unwrap_or_default()),
            cpus_nohz_full: cpu_list(&read("/sys/devices/system/cpu/nohz_full").unwrap_or_default()),
            numa_nodes: cpu_list(&read("/sys/devices/system/node/has_memory").unwrap_or_default()),
            overcommit_memory: read_u64("/proc/sys/vm/overcommit_memory"),
            overcommit_ratio: read_u64("/proc/sys/vm/overcommit_ratio"),
            mem_total: meminfo_field(&meminfo, "MemTotal"),
            swap_total: meminfo_field(&meminfo, "SwapTotal"),
            commit_limit: meminfo_field(&meminfo, "CommitLimit"),
            committed_as: meminfo_field(&meminfo, "Committed_AS"),
            disks: dirs.iter().map(|d| disk(d)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_and_proc_formats_parse() {
        assert_eq!(bracketed("always [madvise] never").as_deref(), Some("madvise"));
        assert_eq!(bracketed("always defer defer+madvise [madvise] never").as_deref(), Some("madvise"));
        assert_eq!(bracketed("never"), None);
        assert_eq!(cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(cpu_list(""), Vec::<u32>::new());
        assert_eq!(cpu_list_text(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(cpu_list_text(&[]), "none");
        assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        let mi = "MemTotal:       24567316 kB\nCommitLimit:    12283656 kB\n";
        assert_eq!(meminfo_field(mi, "MemTotal"), Some(24567316 * 1024));
        assert_eq!(meminfo_field(mi, "Mem"), None);
        let maps = "55d0c0000000-55d0c0001000 r--p 00000000 00:00 0 /bin/x\n\
                    7ffc8d2a0000-7ffc8d2c1000 rw-p 00000000 00:00 0 [stack]\n\
                    ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]";
        assert_eq!(address_space_from_maps(maps), Some(1 << 47));
    }

    #[test]
    fn a_missing_directory_is_judged_by_its_nearest_existing_ancestor() {
        let tmp = tempfile::tempdir().unwrap();
        let d = disk(&tmp.path().join("a/b/c"));
        assert_eq!(d.existing, tmp.path());
        assert!(d.free_bytes.is_some());
    }
}
