//! Stable placement of a process on a worker: the first 8 bytes of blake3(key), little-endian,
//! modulo the worker count. Stable across runs, builds and machines (unlike `std`'s randomly
//! seeded hasher), so a restarted CU puts each process back on the same worker, and evenly
//! spread whatever the ids look like (ao ids are base64url of hashes, but tests use short names).

/// The home worker of `key` among `workers` (0 when there are none).
pub fn home(key: &str, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let h = blake3::hash(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    (u64::from_le_bytes(first) % workers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spread() {
        // Pinned values: a change of hash or reduction moves every process after an upgrade.
        assert_eq!(home("a", 1), 0);
        let got: Vec<usize> = ["a", "b", "c", "d"].iter().map(|k| home(k, 4)).collect();
        let again: Vec<usize> = ["a", "b", "c", "d"].iter().map(|k| home(k, 4)).collect();
        assert_eq!(got, again);
        let h = blake3::hash(b"a");
        let expect = (u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()) % 4) as usize;
        assert_eq!(got[0], expect);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[home(&format!("process-{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
