//! Which processes stay in memory: a budget of resident bytes over the processes the runtime
//! holds, least recently used first out, and an idle time after which a process is let go
//! whatever the budget.
//!
//! A count cap sits beside the byte budget: each resident process holds one slot of the engine's
//! instance pool, so at most `slots − headroom` stay resident (the headroom is for dry-run forks
//! and rollbacks in flight), and a new process never finds the pool full.
//!
//! The runtime charges each process the RAM its memory actually occupies
//! ([`crate::engine::Instance::resident_bytes`]) after every use, asks [`Residency::victims`]
//! for the processes to evict, and evicts those it can (a process in use is skipped and asked
//! again later): it writes a checkpoint when the process evaluated since its last one, then drops
//! the instance. The next request brings the process back from that checkpoint.
//!
//! Invariants: the sum of charges equals the sum over tracked processes (checked in debug
//! builds); victims never include the process just used; order is by last use, ties by id.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Default budget (`PROCESS_MEMORY_CACHE_MAX_SIZE`): the reference's 1 GiB.
pub const DEFAULT_BUDGET: u64 = 1 << 30;
/// Default idle time (`PROCESS_MEMORY_CACHE_TTL`): the reference's 24 h.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default live instances per worker (`WASM_INSTANCE_CACHE_MAX_SIZE`; the reference's is 5, for
/// V8 instances that each hold a full copy of the memory): 32, so 64 on two workers.
pub const DEFAULT_LIVE_PER_WORKER: usize = 32;
/// Most live instances per worker `WASM_INSTANCE_CACHE_MAX_SIZE` accepts.
pub const MAX_LIVE_PER_WORKER: usize = 100_000;
/// Most slots of the engine's instance pool (wasmtime counts them in `u32`; the map count and
/// the address space bound them far below this on any real host: `metalcu doctor`).
pub const MAX_POOL_SLOTS: usize = 1_000_000;

/// Instances kept beside the resident processes for dry-run forks and rollbacks in flight: two
/// per worker (at most half the pool, at least one).
pub fn fork_headroom(workers: usize, slots: usize) -> usize {
    (2 * workers).min(slots / 2).max(1)
}

/// Processes that may be resident in a pool of `slots` instances on `workers` workers: the
/// slots less the fork headroom and one spare (at least 1).
pub fn live_cap(workers: usize, slots: usize) -> usize {
    slots.saturating_sub(fork_headroom(workers, slots) + 1).max(1)
}

/// The pool slots for `per_worker` resident processes on each of `workers` workers: the inverse
/// of [`live_cap`] (`live_cap(workers, pool_slots_for(p, workers)) == p * workers` for p ≥ 2).
pub fn pool_slots_for(per_worker: usize, workers: usize) -> usize {
    let workers = workers.max(1);
    (per_worker.max(1).saturating_mul(workers)).saturating_add(2 * workers + 1).min(MAX_POOL_SLOTS)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    tick: u64,
    at: Instant,
}

/// The residency ledger.
#[derive(Debug)]
pub struct Residency {
    budget: u64,
    /// Most processes resident at once.
    max_count: usize,
    ttl: Option<Duration>,
    entries: HashMap<String, Entry>,
    /// `(tick, pid)` of every entry: least recently used first.
    order: BTreeSet<(u64, String)>,
    total: u64,
    tick: u64,
}

impl Residency {
    pub fn new(budget: u64, ttl: Option<Duration>) -> Residency {
        Residency {
            budget,
            max_count: usize::MAX,
            ttl,
            entries: HashMap::new(),
            order: BTreeSet::new(),
            total: 0,
            tick: 0,
        }
    }

    /// The same ledger keeping at most `max` processes (at least 1).
    pub fn with_max_count(mut self, max: usize) -> Residency {
        self.max_count = max.max(1);
        self
    }

    pub fn max_count(&self) -> usize {
        self.max_count
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes charged in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Processes tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `pid` was just used and now occupies `bytes`.
    pub fn touch(&mut self, pid: &str, bytes: u64, now: Instant) {
        self.tick += 1;
        let e = Entry { bytes, tick: self.tick, at: now };
        if let Some(old) = self.entries.insert(pid.to_string(), e) {
            self.order.remove(&(old.tick, pid.to_string()));
            self.total -= old.bytes;
        }
        self.order.insert((self.tick, pid.to_string()));
        self.total += bytes;
        self.check();
    }

    /// `pid` is no longer held (evicted, or dropped after an error).
    pub fn remove(&mut self, pid: &str) {
        if let Some(old) = self.entries.remove(pid) {
            self.order.remove(&(old.tick, pid.to_string()));
            self.total -= old.bytes;
        }
        self.check();
    }

    /// Every tracked process, least recently used first.
    pub fn lru(&self) -> Vec<String> {
        self.order.iter().map(|(_, pid)| pid.clone()).collect()
    }

    /// Processes to evict, least recently used first: every one idle past the TTL, then more
    /// until the rest fits the budget and the count cap; never `keep`.
    pub fn victims(&self, keep: &str, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        let (mut total, mut count) = (self.total, self.entries.len());
        for (_, pid) in &self.order {
            if pid == keep {
                continue;
            }
            let e = self.entries[pid];
            let idle = self.ttl.is_some_and(|ttl| now.saturating_duration_since(e.at) >= ttl);
            if idle || total > self.budget || count > self.max_count {
                out.push(pid.clone());
                total -= e.bytes;
                count -= 1;
            }
        }
        out
    }

    fn check(&self) {
        debug_assert_eq!(self.total, self.entries.values().map(|e| e.bytes).sum::<u64>());
        debug_assert_eq!(self.order.len(), self.entries.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_slots_for_is_the_inverse_of_the_live_cap() {
        for workers in [1, 2, 3, 8, 64] {
            for per_worker in [2, 5, 32, 5_000] {
                let slots = pool_slots_for(per_worker, workers);
                assert_eq!(live_cap(workers, slots), per_worker * workers, "{per_worker} × {workers}");
                assert_eq!(slots - live_cap(workers, slots), fork_headroom(workers, slots) + 1);
            }
        }
        // One per worker still leaves each worker its forks and the pool never has 0 resident.
        assert_eq!(live_cap(1, pool_slots_for(1, 1)), 1);
        assert_eq!(pool_slots_for(MAX_LIVE_PER_WORKER, crate::pool::MAX_WORKERS), MAX_POOL_SLOTS);
    }

    #[test]
    fn least_recently_used_go_first_until_the_rest_fits() {
        let t0 = Instant::now();
        let mut r = Residency::new(100, None);
        r.touch("a", 40, t0);
        r.touch("b", 40, t0);
        r.touch("c", 40, t0);
        assert_eq!(r.total(), 120);
        assert_eq!(r.victims("c", t0), vec!["a".to_string()]);
        r.touch("a", 40, t0); // a used again: b is now the oldest
        assert_eq!(r.victims("a", t0), vec!["b".to_string()]);
        r.touch("c", 90, t0); // c grew
        assert_eq!(r.victims("c", t0), vec!["b".to_string(), "a".to_string()]);
        r.remove("b");
        assert_eq!((r.total(), r.len()), (130, 2));
        // The process just used is never a victim, even when it alone is over the budget.
        r.remove("a");
        r.touch("c", 500, t0);
        assert!(r.victims("c", t0).is_empty());
    }

    #[test]
    fn the_count_cap_evicts_past_it_whatever_the_bytes() {
        let t0 = Instant::now();
        let mut r = Residency::new(u64::MAX, None).with_max_count(2);
        for p in ["a", "b", "c", "d"] {
            r.touch(p, 1, t0);
        }
        assert_eq!(r.victims("d", t0), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(Residency::new(1, None).with_max_count(0).max_count(), 1);
    }

    #[test]
    fn idle_processes_go_after_the_ttl_whatever_the_budget() {
        let t0 = Instant::now();
        let mut r = Residency::new(u64::MAX, Some(Duration::from_secs(60)));
        r.touch("old", 1, t0);
        r.touch("new", 1, t0 + Duration::from_secs(50));
        assert!(r.victims("x", t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(r.victims("x", t0 + Duration::from_secs(60)), vec!["old".to_string()]);
        assert_eq!(r.victims("x", t0 + Duration::from_secs(200)), vec!["old".to_string(), "new".to_string()]);
    }
}
