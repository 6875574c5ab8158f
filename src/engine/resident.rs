//! How much of a memory region is in RAM: `mincore(2)` over its pages. Residency accounting
//! (the CU's memory budget) charges processes by this, not by their linear memory's length: an
//! aos2 process declares 110 MB of which about 2 MB is ever touched.

/// Pages asked of the kernel per `mincore` call (bounds the status vector: 16 KiB).
const PAGES_PER_CALL: usize = 16 * 1024;

/// Bytes of `region` resident in RAM; `region.len()` when the kernel refuses (conservative).
pub fn resident_bytes(region: &[u8]) -> u64 {
    if region.is_empty() {
        return 0;
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    let start = region.as_ptr() as usize;
    let aligned = start - start % page;
    let end = start + region.len();
    let pages = (end - aligned).div_ceil(page);
    let mut status = vec![0u8; pages.min(PAGES_PER_CALL)];
    let mut resident = 0u64;
    let mut done = 0usize;
    while done < pages {
        let n = (pages - done).min(PAGES_PER_CALL);
        let addr = (aligned + done * page) as *mut libc::c_void;
        // SAFETY: `addr..addr + n * page` lies within the pages spanned by `region`, which is
        // mapped for as long as the borrow lives; `status` holds `n` bytes.
        let rc = unsafe { libc::mincore(addr, n * page, status.as_mut_ptr()) };
        if rc != 0 {
            return region.len() as u64;
        }
        resident += status[..n].iter().filter(|s| **s & 1 == 1).count() as u64;
        done += n;
    }
    (resident * page as u64).min(region.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_pages_are_not_resident_and_touched_ones_are() {
        let len = 64 << 20;
        // SAFETY: a fresh anonymous private mapping, unmapped below.
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
        // SAFETY: `p` is a live mapping of `len` bytes, used only through this slice below.
        let region = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
        assert_eq!(resident_bytes(region), 0);
        for i in (0..len).step_by(1 << 20) {
            region[i] = 1;
        }
        let got = resident_bytes(region);
        // 64 touched pages (transparent huge pages may back more per touch).
        assert!(got >= 64 * 4096 && got <= len as u64, "{got}");
        // SAFETY: unmapping the mapping made above; `region` is not used after.
        unsafe { libc::munmap(p, len) };
    }
}
