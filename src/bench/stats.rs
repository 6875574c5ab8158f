//! Latency samples and their percentiles.
//!
//! Every sample is recorded, up to a fixed cap per [`Samples`] (the bench gives each concurrent
//! worker `MAX_SAMPLES / workers`, so the whole phase keeps at most [`MAX_SAMPLES`]); past the cap
//! a uniform reservoir (algorithm R) keeps an unbiased subset. Count, sum, minimum and maximum are
//! always exact, over every sample. Percentiles use the nearest-rank definition over the kept
//! samples: the p-th percentile is the smallest sample with at least p % of the samples at or
//! below it — never an interpolated value that was not measured.

use std::time::Duration;

use serde::Serialize;

/// Most latency samples one phase keeps (8 bytes each: 16 MiB at most).
pub const MAX_SAMPLES: usize = 2 << 20;

/// Latency samples of one worker or one phase, in nanoseconds.
#[derive(Debug, Clone)]
pub struct Samples {
    kept: Vec<u64>,
    cap: usize,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
    rng: u64,
}

impl Samples {
    /// An empty set that keeps at most `cap` samples (at least 1).
    pub fn with_cap(cap: usize) -> Samples {
        Samples {
            kept: Vec::new(),
            cap: cap.max(1),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.count += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        if self.kept.len() < self.cap {
            self.kept.push(ns);
        } else {
            // Algorithm R: sample k (1-based) replaces a random kept one with probability cap/k.
            let j = self.next_random() % self.count;
            if let Ok(j) = usize::try_from(j)
                && j < self.cap
            {
                self.kept[j] = ns;
            }
        }
    }

    /// xorshift64*: enough for reservoir positions; no dependency, deterministic.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Adds the samples of `other` (the caps were split between workers, so the union fits).
    pub fn merge(&mut self, other: Samples) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.kept.extend(other.kept);
        self.cap = self.cap.max(self.kept.len());
    }

    /// Samples recorded (kept or not).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The summary; `None` without samples.
    pub fn summary(&self) -> Option<Summary> {
        if self.count == 0 {
            return None;
        }
        let mut sorted = self.kept.clone();
        sorted.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let pct = |p: f64| ms(percentile(&sorted, p));
        Some(Summary {
            count: self.count,
            kept: sorted.len() as u64,
            min_ms: ms(self.min),
            mean_ms: self.sum as f64 / self.count as f64 / 1e6,
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            p999_ms: pct(99.9),
            max_ms: ms(self.max),
        })
    }
}

/// Nearest-rank percentile of ascending `sorted` (not empty).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Samples recorded.
    pub count: u64,
    /// Samples the percentiles were computed over (= `count` unless past the cap).
    pub kept: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 99.9), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn summary_is_exact_below_the_cap() {
        let mut s = Samples::with_cap(1000);
        for ms in 1..=200u64 {
            s.record(Duration::from_millis(ms));
        }
        let sum = s.summary().unwrap();
        assert_eq!((sum.count, sum.kept), (200, 200));
        assert_eq!((sum.min_ms, sum.p50_ms, sum.p99_ms, sum.max_ms), (1.0, 100.0, 198.0, 200.0));
        assert!((sum.mean_ms - 100.5).abs() < 1e-9);
        assert!(Samples::with_cap(5).summary().is_none());
    }

    #[test]
    fn the_reservoir_stays_bounded_and_exact_where_it_must() {
        let mut a = Samples::with_cap(100);
        for ns in 0..10_000u64 {
            a.record(Duration::from_nanos(ns));
        }
        let mut b = Samples::with_cap(100);
        b.record(Duration::from_nanos(50_000));
        a.merge(b);
        let s = a.summary().unwrap();
        assert_eq!((s.count, s.kept), (10_001, 101));
        assert_eq!(s.max_ms, 0.05);
        assert_eq!(s.min_ms, 0.0);
        // A uniform subset of 0..10000: its median is near 5000 ns.
        assert!((0.002..0.008).contains(&s.p50_ms), "{}", s.p50_ms);
    }
}
