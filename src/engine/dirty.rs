//! The state hash of a process: a blake3 root over the blake3 of each 64 KiB chunk of linear
//! memory, kept up to date from the pages each call actually wrote.
//!
//! Hashing all of memory after every message is what dominated evaluation time (aos2: 110 MB,
//! ~16 ms per message, against 0.9 ms for the call itself; PERF.md). [`StateHasher`] keeps the
//! chunk hashes and, after a call, rehashes only the chunks holding pages written since the last
//! hash. Written pages come from the kernel: the memory is registered with a userfaultfd in
//! asynchronous write-protect mode (Linux ≥ 6.7, `UFFD_FEATURE_WP_ASYNC`: writes are never
//! delivered as faults, the kernel resolves them and marks the page written) and read back, and
//! write-protected again in the same step, with the `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap`.
//!
//! Invariants:
//! - the value is defined by memory alone: `blake3(len_le64 ‖ blake3(chunk_0) ‖ … ‖ blake3(chunk_n))`
//!   with chunks of [`CHUNK`] bytes; tracked and untracked ([`StateHasher::full`]) hashing give
//!   the same value for the same memory (tested on real modules);
//! - where the kernel or a sandbox refuses userfaultfd or `PAGEMAP_SCAN` (older kernels, seccomp
//!   in containers), every chunk is rehashed each time: slower, same value;
//! - any doubt (memory moved or shrank, a scan error, a grown region that could not be
//!   registered) falls back to rehashing everything; tracking only ever saves work.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// Bytes per hashed chunk (one wasm page).
pub const CHUNK: usize = 65536;
/// OS page size the kernel reports writes in.
const OS_PAGE: usize = 4096;
/// Written ranges asked per `PAGEMAP_SCAN` call (more are fetched in further calls).
const SCAN_REGIONS: usize = 512;

// Linux ABI (include/uapi/linux/userfaultfd.h, fs.h), spelled out: the C headers of older
// distributions lack them.
const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}
#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}
const IOC_READ: u64 = 2;
const IOC_WRITE: u64 = 1;
const UFFDIO_API_IOCTL: u64 = ioc(IOC_READ | IOC_WRITE, 0xAA, 0x3F, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER_IOCTL: u64 = ioc(IOC_READ | IOC_WRITE, 0xAA, 0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_WRITEPROTECT_IOCTL: u64 = ioc(IOC_READ | IOC_WRITE, 0xAA, 0x06, std::mem::size_of::<UffdioWriteprotect>());
const PAGEMAP_SCAN_IOCTL: u64 = ioc(IOC_READ | IOC_WRITE, b'f' as u64, 16, std::mem::size_of::<PmScanArg>());

/// `/proc/self/pagemap`, opened once per process (`None` where it cannot be).
fn pagemap() -> Option<&'static File> {
    static PAGEMAP: OnceLock<Option<File>> = OnceLock::new();
    PAGEMAP.get_or_init(|| File::open("/proc/self/pagemap").ok()).as_ref()
}

/// Write tracking of one memory region through an async write-protect userfaultfd.
struct Tracker {
    uffd: OwnedFd,
}

impl Tracker {
    fn new() -> Option<Tracker> {
        pagemap()?;
        // SAFETY: userfaultfd(2) takes flags and returns a new descriptor or -1.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd is a new descriptor this function owns.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one UffdioApi, which lives across the call.
        let r = unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API_IOCTL as _, &mut api) };
        (r == 0).then_some(Tracker { uffd })
    }

    /// Registers `[start, start+len)` for write tracking and write-protects it.
    fn add(&self, start: usize, len: usize) -> bool {
        if len == 0 {
            return true;
        }
        let range = UffdioRange { start: start as u64, len: len as u64 };
        let mut reg = UffdioRegister { range, mode: UFFDIO_REGISTER_MODE_WP, ioctls: 0 };
        // SAFETY: UFFDIO_REGISTER reads/writes one UffdioRegister; the range is memory of this
        // process that stays mapped while the tracker lives (the instance owning both).
        if unsafe { libc::ioctl(self.uffd.as_raw_fd(), UFFDIO_REGISTER_IOCTL as _, &mut reg) } != 0 {
            return false;
        }
        let mut wp = UffdioWriteprotect { range, mode: UFFDIO_WRITEPROTECT_MODE_WP };
        // SAFETY: as above, for one UffdioWriteprotect.
        unsafe { libc::ioctl(self.uffd.as_raw_fd(), UFFDIO_WRITEPROTECT_IOCTL as _, &mut wp) == 0 }
    }

    /// Calls `mark(offset_range)` for every page of `[start, start+len)` written since the last
    /// scan, and write-protects them again. `false` on any error.
    fn take_written(&self, start: usize, len: usize, mut mark: impl FnMut(usize, usize)) -> bool {
        let Some(pm) = pagemap() else { return false };
        let end = (start + len) as u64;
        let mut from = start as u64;
        let mut regions = [PageRegion::default(); SCAN_REGIONS];
        while from < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                start: from,
                end,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: SCAN_REGIONS as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: PAGE_IS_WRITTEN,
                category_anyof_mask: 0,
                return_mask: PAGE_IS_WRITTEN,
            };
            // SAFETY: PAGEMAP_SCAN reads one PmScanArg and writes at most vec_len regions into
            // `regions`, both alive across the call; it only inspects this process's mappings.
            let n = unsafe { libc::ioctl(pm.as_raw_fd(), PAGEMAP_SCAN_IOCTL as _, &mut arg) };
            if n < 0 {
                return false;
            }
            for r in &regions[..n as usize] {
                let (s, e) = (r.start.max(start as u64), r.end.min(end));
                if s < e {
                    mark(s as usize - start, e as usize - start);
                }
            }
            if arg.walk_end <= from || arg.walk_end >= end {
                break;
            }
            from = arg.walk_end;
        }
        true
    }
}

/// Keeps the state hash of one instance's memory.
#[derive(Default)]
pub struct StateHasher {
    tracker: Option<Tracker>,
    /// Try the kernel's write tracking (off: rehash every chunk every time).
    tracking: bool,
    base: usize,
    len: usize,
    chunks: Vec<[u8; 32]>,
    primed: bool,
}

impl StateHasher {
    /// A hasher; `tracking` asks for kernel write tracking where available.
    pub fn new(tracking: bool) -> Self {
        StateHasher { tracking, ..Self::default() }
    }

    /// Whether writes are tracked by the kernel (false until the first hash, or where refused).
    pub fn is_tracking(&self) -> bool {
        self.tracker.is_some()
    }

    /// The state hash of `mem` computed from scratch (no tracking involved).
    pub fn full(mem: &[u8]) -> [u8; 32] {
        let chunks: Vec<[u8; 32]> = mem.chunks(CHUNK).map(|c| *blake3::hash(c).as_bytes()).collect();
        root(mem.len(), &chunks)
    }

    /// The state hash of `mem`, which must be the memory this hasher followed (its writes since
    /// the last call are in the kernel's record).
    pub fn hash(&mut self, mem: &[u8]) -> [u8; 32] {
        let (base, len) = (mem.as_ptr() as usize, mem.len());
        let incremental = self.primed && self.tracker.is_some() && base == self.base && len >= self.len;
        if !incremental {
            return self.prime(mem);
        }
        let tracker = self.tracker.as_ref().expect("checked above");
        let mut dirty = vec![false; len.div_ceil(CHUNK)];
        let ok = tracker.take_written(base, self.len, |s, e| {
            dirty[s / CHUNK..=(e - 1) / CHUNK].fill(true);
        });
        if !ok || (len > self.len && !tracker.add(base + self.len, len - self.len)) {
            self.tracker = None;
            return self.prime(mem);
        }
        // Grown pages were not tracked before this point: all of them are rehashed.
        for d in dirty.iter_mut().skip(self.len / CHUNK) {
            *d = true;
        }
        self.chunks.resize(dirty.len(), [0; 32]);
        for (i, _) in dirty.iter().enumerate().filter(|(_, d)| **d) {
            let end = ((i + 1) * CHUNK).min(len);
            self.chunks[i] = *blake3::hash(&mem[i * CHUNK..end]).as_bytes();
        }
        self.len = len;
        root(len, &self.chunks)
    }

    /// Hashes every chunk and (re)starts tracking from here.
    fn prime(&mut self, mem: &[u8]) -> [u8; 32] {
        let (base, len) = (mem.as_ptr() as usize, mem.len());
        if self.tracking {
            // Protect first, then hash: a write between the two is then seen by the next scan.
            self.tracker = Tracker::new().filter(|t| base % OS_PAGE == 0 && t.add(base, len));
        }
        self.chunks = mem.chunks(CHUNK).map(|c| *blake3::hash(c).as_bytes()).collect();
        (self.base, self.len, self.primed) = (base, len, true);
        root(len, &self.chunks)
    }
}

fn root(len: usize, chunks: &[[u8; 32]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&(len as u64).to_le_bytes());
    for c in chunks {
        h.update(c);
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An anonymous mapping, like a wasm memory.
    struct Map(*mut u8, usize);
    impl Map {
        fn new(len: usize) -> Map {
            // SAFETY: a fresh private anonymous mapping, unmapped in Drop.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Map(p.cast(), len)
        }
        fn slice(&mut self, len: usize) -> &mut [u8] {
            // SAFETY: len ≤ the mapping's length; the mapping lives as long as self.
            unsafe { std::slice::from_raw_parts_mut(self.0, len.min(self.1)) }
        }
    }
    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: unmaps the mapping made in new.
            unsafe { libc::munmap(self.0.cast(), self.1) };
        }
    }

    #[test]
    fn tracked_hashes_equal_full_hashes_through_writes_and_growth() {
        let mut m = Map::new(64 * CHUNK);
        let mut h = StateHasher::new(true);
        let mut len = 16 * CHUNK;
        assert_eq!(h.hash(m.slice(len)), StateHasher::full(m.slice(len)));
        let tracking = h.is_tracking();
        eprintln!("kernel write tracking: {tracking}");
        for round in 0..20usize {
            let mem = m.slice(len);
            mem[(round * 7919 * 13) % len] ^= 0x5a;
            mem[len - 1] = round as u8;
            if round % 5 == 4 {
                len += 3 * CHUNK;
                m.slice(len)[len - 2 * CHUNK + 5] = 9;
            }
            let mem = m.slice(len);
            assert_eq!(h.hash(mem), StateHasher::full(mem), "round {round}");
        }
        assert_eq!(h.is_tracking(), tracking, "tracking never dropped out on a healthy kernel");
        let mut off = StateHasher::new(false);
        assert_eq!(off.hash(m.slice(len)), StateHasher::full(m.slice(len)));
        assert!(!off.is_tracking());
    }
}
