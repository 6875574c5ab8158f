//! The CU's operational metrics, served at `GET /metrics` in the OpenMetrics text format
//! (which Prometheus scrapes), on `prometheus-client`: no global registry, typed metrics.
//!
//! One [`Metrics`] per CU, created by `serve`/`dev` and shared through an `Arc` with the parts
//! that record: the runtime (evaluations, gas, resident processes), the SU fetcher (fetch
//! latency and errors per transport), the HTTP server (responses per route and status). Tests
//! create their own. Every name starts with `metalcu_`; durations are in seconds, counters end in
//! `_total` (added by the encoder).
//!
//! Invariants: recording never blocks on I/O and never fails; label values come from closed sets
//! (outcomes, transports, error kinds, the route table, status codes), so no input can grow the
//! number of series without bound; a status code outside 100..=599 is recorded as 0.
//!
//! Who records what:
//! - `metalcu_evaluations_total{outcome}`, `metalcu_evaluation_duration_seconds`,
//!   `metalcu_gas_used_total`: [`Metrics::evaluated`], by the runtime after each stored
//!   evaluation (it also logs the evaluation with `process_id` and `message_id` fields);
//! - `metalcu_dry_runs_total{outcome}`, `metalcu_dry_run_gas_used_total`: [`Metrics::dry_run`];
//! - `metalcu_resident_processes`, `metalcu_evictions_total`: [`Metrics::process_loaded`] /
//!   [`Metrics::process_evicted`], by the runtime when it loads / drops a process's live state;
//! - `metalcu_resident_memory_bytes`: [`Metrics::resident_memory`], the residency ledger's total
//!   (RAM the live memories occupy, by `mincore`), set after every use of a process; divided by
//!   `metalcu_resident_processes` it is the memory per live process;
//! - `metalcu_checkpoint_write_duration_seconds`, `metalcu_checkpoint_restore_duration_seconds`:
//!   [`Metrics::checkpoint_written`] / [`Metrics::checkpoint_restored`], by whoever writes and
//!   restores checkpoint files for the runtime (issue 5's residency; `checkpoint::CheckpointStore`
//!   itself does not know the CU's metrics);
//! - `metalcu_su_fetch_duration_seconds{transport}`, `metalcu_su_fetch_errors_total{transport,kind}`:
//!   [`Metrics::su_fetch`], by `net::fetch::Fetcher` for SU calls (one logical call, retries
//!   included);
//! - `metalcu_http_responses_total{route,status}`: [`Metrics::http_response`], by the HTTP server.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::engine::Accounting;
use crate::store::Position;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prefix of every metric name.
pub const PREFIX: &str = "metalcu";

/// Bucket bounds (seconds) of evaluation latency: 100 µs to 2 min (the engine's deadline).
const EVALUATION_BUCKETS: [f64; 16] =
    [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];
/// Bucket bounds (seconds) of checkpoint writes and restores.
const CHECKPOINT_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Bucket bounds (seconds) of SU calls: 1 ms to the 20 s call deadline.
const FETCH_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 20.0];

/// `outcome` label: `ok`, or `error` (thrown, or a result with `Error`: memory rolled back).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

fn outcome(failed: bool) -> OutcomeLabels {
    OutcomeLabels { outcome: if failed { "error" } else { "ok" } }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchErrorLabels {
    transport: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    status: u16,
}

fn histogram_of(buckets: &'static [f64]) -> Histogram {
    Histogram::new(buckets.iter().copied())
}

fn fetch_histogram() -> Histogram {
    histogram_of(&FETCH_BUCKETS)
}

/// Every metric of the CU and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    evaluations: Family<OutcomeLabels, Counter>,
    evaluation_seconds: Histogram,
    gas: Counter,
    dry_runs: Family<OutcomeLabels, Counter>,
    dry_run_gas: Counter,
    resident: Gauge,
    resident_bytes: Gauge,
    evictions: Counter,
    checkpoint_write_seconds: Histogram,
    checkpoint_restore_seconds: Histogram,
    su_fetch_seconds: Family<TransportLabels, Histogram, fn() -> Histogram>,
    su_fetch_errors: Family<FetchErrorLabels, Counter>,
    http_responses: Family<HttpLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all zero, in its own registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = Metrics {
            evaluations: Family::default(),
            evaluation_seconds: histogram_of(&EVALUATION_BUCKETS),
            gas: Counter::default(),
            dry_runs: Family::default(),
            dry_run_gas: Counter::default(),
            resident: Gauge::default(),
            resident_bytes: Gauge::default(),
            evictions: Counter::default(),
            checkpoint_write_seconds: histogram_of(&CHECKPOINT_BUCKETS),
            checkpoint_restore_seconds: histogram_of(&CHECKPOINT_BUCKETS),
            su_fetch_seconds: Family::new_with_constructor(fetch_histogram as fn() -> Histogram),
            su_fetch_errors: Family::default(),
            http_responses: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("evaluations", "Evaluations stored, by outcome", m.evaluations.clone());
        r.register_with_unit(
            "evaluation_duration",
            "Wall time of each stored evaluation's call into the module",
            Unit::Seconds,
            m.evaluation_seconds.clone(),
        );
        r.register("gas_used", "Gas used by stored evaluations (GasUsed)", m.gas.clone());
        r.register("dry_runs", "Dry-runs evaluated, by outcome (never stored, not in /usage)", m.dry_runs.clone());
        r.register("dry_run_gas_used", "Gas used by dry-runs", m.dry_run_gas.clone());
        r.register("resident_processes", "Processes whose live state the runtime holds", m.resident.clone());
        r.register_with_unit(
            "resident_memory",
            "RAM the memories of the live processes occupy (mincore of each, as residency charges it)",
            Unit::Bytes,
            m.resident_bytes.clone(),
        );
        r.register("evictions", "Processes whose live state the runtime dropped to make room", m.evictions.clone());
        r.register_with_unit(
            "checkpoint_write_duration",
            "Time to write one checkpoint file",
            Unit::Seconds,
            m.checkpoint_write_seconds.clone(),
        );
        r.register_with_unit(
            "checkpoint_restore_duration",
            "Time to restore a process from one checkpoint file",
            Unit::Seconds,
            m.checkpoint_restore_seconds.clone(),
        );
        r.register_with_unit(
            "su_fetch_duration",
            "Time of one logical call to a scheduler (retries included), by transport",
            Unit::Seconds,
            m.su_fetch_seconds.clone(),
        );
        r.register("su_fetch_errors", "Failed calls to a scheduler, by transport and kind", m.su_fetch_errors.clone());
        r.register("http_responses", "HTTP responses of the CU's API, by route and status", m.http_responses.clone());
        Metrics { registry, ..m }
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]), ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding into a String");
        out
    }

    /// Records one stored evaluation and logs it (debug level) with its `process_id`,
    /// `message_id` (absent for cron messages), position, outcome, gas and timings.
    pub fn evaluated(
        &self,
        process_id: &str,
        message_id: Option<&str>,
        position: &Position,
        a: &Accounting,
        failed: bool,
    ) {
        self.evaluations.get_or_create(&outcome(failed)).inc();
        self.evaluation_seconds.observe(a.wall.as_secs_f64());
        self.gas.inc_by(a.gas);
        tracing::debug!(
            process_id,
            message_id,
            message_timestamp = position.timestamp,
            nonce = position.nonce,
            cron = position.cron.as_deref(),
            outcome = outcome(failed).outcome,
            gas = a.gas,
            wall_us = u64::try_from(a.wall.as_micros()).unwrap_or(u64::MAX),
            cpu_us = u64::try_from(a.cpu.as_micros()).unwrap_or(u64::MAX),
            memory_bytes = a.memory_bytes,
            "evaluated"
        );
    }

    /// Records one dry-run.
    pub fn dry_run(&self, process_id: &str, a: &Accounting, failed: bool) {
        self.dry_runs.get_or_create(&outcome(failed)).inc();
        self.dry_run_gas.inc_by(a.gas);
        tracing::debug!(process_id, gas = a.gas, outcome = outcome(failed).outcome, "dry-run");
    }

    /// A process's live state was loaded.
    pub fn process_loaded(&self) {
        self.resident.inc();
    }

    /// A process's live state was dropped to make room (an eviction).
    pub fn process_evicted(&self) {
        self.resident.dec();
        self.evictions.inc();
    }

    /// A process's live state was dropped for another reason (a failure, shutdown).
    pub fn process_unloaded(&self) {
        self.resident.dec();
    }

    /// The RAM the live processes' memories occupy now (the residency ledger's total).
    pub fn resident_memory(&self, bytes: u64) {
        self.resident_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Processes whose live state is held now.
    pub fn resident_processes(&self) -> i64 {
        self.resident.get()
    }

    /// One checkpoint file was written in `d`.
    pub fn checkpoint_written(&self, d: Duration) {
        self.checkpoint_write_seconds.observe(d.as_secs_f64());
    }

    /// One process was restored from a checkpoint file in `d`.
    pub fn checkpoint_restored(&self, d: Duration) {
        self.checkpoint_restore_seconds.observe(d.as_secs_f64());
    }

    /// One logical SU call over `transport` (`epoll`, `uring`) took `d`; `error` names how it
    /// failed (`not_found`, `forbidden`, `unavailable`, `invalid`), `None` if it succeeded. A "not found" is
    /// an answer, not a fault, but is counted so that a flood of them is visible.
    pub fn su_fetch(&self, transport: &'static str, d: Duration, error: Option<&'static str>) {
        self.su_fetch_seconds.get_or_create(&TransportLabels { transport }).observe(d.as_secs_f64());
        if let Some(kind) = error {
            self.su_fetch_errors.get_or_create(&FetchErrorLabels { transport, kind }).inc();
        }
    }

    /// One HTTP response with `status` on `route` (a name from the route table, or `none`).
    pub fn http_response(&self, route: &'static str, status: u16) {
        let status = if (100..=599).contains(&status) { status } else { 0 };
        self.http_responses.get_or_create(&HttpLabels { route, status }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(gas: u64, wall_ms: u64) -> Accounting {
        Accounting {
            gas,
            wall: Duration::from_millis(wall_ms),
            cpu: Duration::from_millis(wall_ms),
            memory_bytes: 1 << 16,
        }
    }

    #[test]
    fn encodes_every_family_with_the_prefix() {
        let m = Metrics::new();
        let p = Position { timestamp: 1, nonce: 1, cron: None };
        m.evaluated("p", Some("m"), &p, &acc(5, 2), false);
        m.evaluated("p", None, &p, &acc(7, 3), true);
        m.dry_run("p", &acc(11, 1), false);
        m.process_loaded();
        m.process_loaded();
        m.process_evicted();
        m.resident_memory(3 << 20);
        m.checkpoint_written(Duration::from_millis(4));
        m.checkpoint_restored(Duration::from_millis(2));
        m.su_fetch("epoll", Duration::from_millis(3), None);
        m.su_fetch("uring", Duration::from_millis(3), Some("unavailable"));
        m.http_response("result", 200);
        m.http_response("none", 404);
        m.http_response("none", 1000);
        let text = m.encode();
        for line in [
            "metalcu_evaluations_total{outcome=\"ok\"} 1",
            "metalcu_evaluations_total{outcome=\"error\"} 1",
            "metalcu_evaluation_duration_seconds_count 2",
            "metalcu_gas_used_total 12",
            "metalcu_dry_runs_total{outcome=\"ok\"} 1",
            "metalcu_dry_run_gas_used_total 11",
            "metalcu_resident_processes 1",
            "metalcu_resident_memory_bytes 3145728",
            "metalcu_evictions_total 1",
            "metalcu_checkpoint_write_duration_seconds_count 1",
            "metalcu_checkpoint_restore_duration_seconds_count 1",
            "metalcu_su_fetch_duration_seconds_count{transport=\"epoll\"} 1",
            "metalcu_su_fetch_duration_seconds_count{transport=\"uring\"} 1",
            "metalcu_su_fetch_errors_total{transport=\"uring\",kind=\"unavailable\"} 1",
            "metalcu_http_responses_total{route=\"result\",status=\"200\"} 1",
            "metalcu_http_responses_total{route=\"none\",status=\"404\"} 1",
            "metalcu_http_responses_total{route=\"none\",status=\"0\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
