//! The bench's report: what each phase measured, the reference CU's figures next to them, and
//! the human table (stdout) and JSON (`--json`) renderings.
//!
//! Invariants: only measured figures appear (a phase that did not run is `null` / "not run");
//! every error is counted in its phase and in [`Report::ok`]; a comparison's `better_x` is always
//! "times better than the reference" (metalcu ÷ reference for rates, reference ÷ metalcu for
//! times and memory), so > 1 means metalcu is ahead; the reference figures are those of the
//! issue (aos, one process), so ratios for another module are indicative only.

use std::fmt::Write as _;

use serde::Serialize;

use super::args::Settings;
use super::stack::StackInfo;
use super::stats::Summary;
use super::stop::StopReason;
use super::sys::{Machine, Memory};

/// Reference CU, cold: 1000 aos messages evaluated in 20.8 s.
pub const REF_COLD_MSG_PER_S: f64 = 1000.0 / 20.8;
/// Reference CU, steady (post one message, read its result): 48.8 msg/s.
pub const REF_STEADY_MSG_PER_S: f64 = 48.8;
/// Reference CU, an already evaluated `/result`: 0.65 ms.
pub const REF_CACHED_RESULT_MS: f64 = 0.65;
/// Reference CU, an uncached dry-run: 235 ms.
pub const REF_DRY_RUN_MS: f64 = 235.0;
/// Reference CU, peak RSS with one aos process: 456–507 MiB (the low end is compared).
pub const REF_PEAK_RSS_MIB: f64 = 456.0;
/// Target: cached `/result` p99 below this…
pub const TARGET_CACHED_P99_MS: f64 = 1.0;
/// …at this rate or more (on 2 cores).
pub const TARGET_CACHED_REQ_PER_S: f64 = 20_000.0;
/// Target: a warm dry-run (p50) within this.
pub const TARGET_DRY_RUN_MS: f64 = 5.0;
/// Target: peak RSS with one aos process.
pub const TARGET_PEAK_RSS_MIB: f64 = 60.0;
/// Error texts kept per phase (all are counted).
pub const MAX_ERROR_EXAMPLES: usize = 5;

const MIB: f64 = 1024.0 * 1024.0;

/// Errors of one phase: non-2xx answers and failed requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors {
    pub count: u64,
    /// The first few, as `"<what>: <status>: <body>"`.
    pub examples: Vec<String>,
}

impl Errors {
    pub fn add(&mut self, text: impl Into<String>) {
        self.count += 1;
        if self.examples.len() < MAX_ERROR_EXAMPLES {
            self.examples.push(text.into());
        }
    }

    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for e in other.examples {
            if self.examples.len() < MAX_ERROR_EXAMPLES {
                self.examples.push(e);
            }
        }
    }
}

/// Spawning the extra processes through the scheduler.
#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    pub asked: usize,
    pub spawned: usize,
    pub seconds: f64,
    pub errors: Errors,
    pub complete: bool,
}

/// Posting the messages to the scheduler (the scheduler's speed, not the CU's).
#[derive(Debug, Clone, Serialize)]
pub struct PostReport {
    pub asked: u64,
    pub posted: u64,
    pub seconds: f64,
    pub msg_per_s: f64,
    pub latency: Option<Summary>,
    pub errors: Errors,
    pub complete: bool,
}

/// Cold: the CU evaluates every posted message (`/result` of each process's last one).
#[derive(Debug, Clone, Serialize)]
pub struct ColdReport {
    pub processes: usize,
    /// Messages evaluated: of the logs whose last result came back or, when the phase was cut
    /// short, what the CU's `/results` said it had evaluated by then.
    pub messages: u64,
    pub seconds: f64,
    pub msg_per_s: f64,
    /// Time to the last result, per process.
    pub per_process: Option<Summary>,
    pub errors: Errors,
    /// Results (200) that carry an `Error`.
    pub result_errors: Errors,
    pub complete: bool,
}

/// Steady: post one message, read its result, repeat.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyReport {
    pub asked: usize,
    pub messages: u64,
    pub seconds: f64,
    pub msg_per_s: f64,
    /// Post + result, per message.
    pub round_trip: Option<Summary>,
    /// The scheduler's part.
    pub post: Option<Summary>,
    /// The CU's part: `/result` of a message just posted.
    pub result: Option<Summary>,
    pub errors: Errors,
    pub result_errors: Errors,
    pub complete: bool,
}

/// Cached `/result`: concurrent keep-alive connections reading evaluated messages.
#[derive(Debug, Clone, Serialize)]
pub struct CachedReport {
    pub connections: usize,
    /// Distinct messages read (round-robin).
    pub messages: usize,
    pub seconds: f64,
    pub requests: u64,
    pub req_per_s: f64,
    pub latency: Option<Summary>,
    pub errors: Errors,
    /// CPU cores the server used on average (CPU seconds ÷ wall seconds), if known.
    pub server_cpu_cores: Option<f64>,
    /// CPU cores the bench itself (the load generator) used on average.
    pub bench_cpu_cores: Option<f64>,
    pub complete: bool,
}

/// Dry-runs, one at a time.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunReport {
    pub asked: usize,
    pub count: u64,
    /// The first dry-run (reported apart: it may build per-process state).
    pub first_ms: Option<f64>,
    /// Every dry-run after the first.
    pub warm: Option<Summary>,
    pub errors: Errors,
    pub result_errors: Errors,
    pub complete: bool,
}

/// The server's resident memory after a phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseMemory {
    pub after: &'static str,
    #[serde(flatten)]
    pub memory: Memory,
}

/// One figure against the reference and the target.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub what: &'static str,
    pub unit: &'static str,
    pub metalcu: f64,
    pub reference: Option<f64>,
    /// Times better than the reference (> 1: metalcu is ahead).
    pub better_x: Option<f64>,
    pub target: Option<String>,
    pub target_met: Option<bool>,
}

impl Comparison {
    fn new(what: &'static str, unit: &'static str, metalcu: f64) -> Comparison {
        Comparison { what, unit, metalcu, reference: None, better_x: None, target: None, target_met: None }
    }

    /// Against a reference rate (higher is better).
    fn rate_vs(mut self, reference: f64) -> Comparison {
        self.reference = Some(reference);
        self.better_x = (reference > 0.0).then(|| self.metalcu / reference);
        self
    }

    /// Against a reference time or size (lower is better).
    fn time_vs(mut self, reference: f64) -> Comparison {
        self.reference = Some(reference);
        self.better_x = (self.metalcu > 0.0).then(|| reference / self.metalcu);
        self
    }

    fn target(mut self, text: String, met: bool) -> Comparison {
        self.target = Some(text);
        self.target_met = Some(met);
        self
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub date: String,
    pub unix_time: u64,
    pub command: Vec<String>,
    pub machine: Machine,
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
    pub settings: Settings,
    pub stack: Option<StackInfo>,
    pub setup: Option<SetupReport>,
    pub post: Option<PostReport>,
    pub cold: Option<ColdReport>,
    /// Processes the server held live after the cold phase (`/metrics`).
    pub live_after_cold: Option<u64>,
    pub restart: Option<super::restart::RestartReport>,
    pub steady: Option<SteadyReport>,
    pub cached: Option<CachedReport>,
    pub dry_run: Option<DryRunReport>,
    /// After each phase, then at the end.
    pub memory: Vec<PhaseMemory>,
    /// The server's memory at the end: `peak_bytes` is its VmHWM over the whole run.
    pub memory_end: Option<Memory>,
    pub comparisons: Vec<Comparison>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// A failure that ended the run, or a server that crashed or did not stop cleanly.
    pub failure: Option<String>,
    /// Every error counted in every phase, answers and results.
    pub error_total: u64,
    /// No error, no failure.
    pub ok: bool,
}

impl Report {
    /// An empty report for `settings`, dated now.
    pub fn new(settings: Settings) -> Report {
        let (unix_time, date) = super::sys::now_utc();
        Report {
            tool: format!("metalcu {} bench", env!("CARGO_PKG_VERSION")),
            date,
            unix_time,
            command: std::env::args().collect(),
            machine: Machine::read(),
            load_average_start: super::sys::load_average(),
            load_average_end: None,
            settings,
            stack: None,
            setup: None,
            post: None,
            cold: None,
            live_after_cold: None,
            restart: None,
            steady: None,
            cached: None,
            dry_run: None,
            memory: Vec::new(),
            memory_end: None,
            comparisons: Vec::new(),
            stopped: None,
            failure: None,
            error_total: 0,
            ok: false,
        }
    }

    /// Totals, comparisons and the verdict, once every phase is in.
    pub fn finish(&mut self) {
        self.load_average_end = super::sys::load_average();
        let mut total = 0;
        if let Some(p) = &self.setup {
            total += p.errors.count;
        }
        if let Some(p) = &self.post {
            total += p.errors.count;
        }
        if let Some(p) = &self.cold {
            total += p.errors.count + p.result_errors.count;
        }
        if let Some(r) = &self.restart {
            total += r.post.as_ref().map_or(0, |p| p.errors.count);
            total += r.back.as_ref().map_or(0, |b| b.errors.count + b.result_errors.count);
        }
        if let Some(p) = &self.steady {
            total += p.errors.count + p.result_errors.count;
        }
        if let Some(p) = &self.cached {
            total += p.errors.count;
        }
        if let Some(p) = &self.dry_run {
            total += p.errors.count + p.result_errors.count;
        }
        self.error_total = total;
        self.comparisons = self.compare();
        self.ok = total == 0 && self.failure.is_none();
    }

    fn compare(&self) -> Vec<Comparison> {
        let mut out = Vec::new();
        if let Some(c) = self.cold.as_ref().filter(|c| c.messages > 0) {
            out.push(Comparison::new("cold evaluation", "msg/s", c.msg_per_s).rate_vs(REF_COLD_MSG_PER_S));
        }
        if let Some(s) = self.steady.as_ref().filter(|s| s.messages > 0) {
            out.push(Comparison::new("steady (post + result)", "msg/s", s.msg_per_s).rate_vs(REF_STEADY_MSG_PER_S));
            if let Some(r) = &s.result {
                out.push(Comparison::new("steady: /result of a new message, p50", "ms", r.p50_ms));
                out.push(Comparison::new("steady: /result of a new message, p99", "ms", r.p99_ms));
            }
        }
        if let Some(c) = &self.cached {
            out.push(
                Comparison::new("cached /result", "req/s", c.req_per_s)
                    .target(format!("≥ {TARGET_CACHED_REQ_PER_S:.0}"), c.req_per_s >= TARGET_CACHED_REQ_PER_S),
            );
            if let Some(l) = &c.latency {
                out.push(Comparison::new("cached /result p50", "ms", l.p50_ms).time_vs(REF_CACHED_RESULT_MS));
                out.push(
                    Comparison::new("cached /result p99", "ms", l.p99_ms)
                        .target(format!("< {TARGET_CACHED_P99_MS} ms"), l.p99_ms < TARGET_CACHED_P99_MS),
                );
                out.push(Comparison::new("cached /result max", "ms", l.max_ms));
            }
        }
        if let Some(d) = &self.dry_run {
            if let Some(f) = d.first_ms {
                out.push(Comparison::new("first dry-run", "ms", f).time_vs(REF_DRY_RUN_MS));
            }
            if let Some(w) = &d.warm {
                out.push(
                    Comparison::new("warm dry-run p50", "ms", w.p50_ms)
                        .time_vs(REF_DRY_RUN_MS)
                        .target(format!("≤ {TARGET_DRY_RUN_MS} ms"), w.p50_ms <= TARGET_DRY_RUN_MS),
                );
                out.push(Comparison::new("warm dry-run p99", "ms", w.p99_ms).time_vs(REF_DRY_RUN_MS));
            }
        }
        if let Some(m) = &self.memory_end {
            let peak = m.peak_bytes as f64 / MIB;
            out.push(
                Comparison::new("server peak RSS (VmHWM)", "MiB", peak)
                    .time_vs(REF_PEAK_RSS_MIB)
                    .target(format!("≤ {TARGET_PEAK_RSS_MIB} MiB"), peak <= TARGET_PEAK_RSS_MIB),
            );
            out.push(Comparison::new("server RSS at the end (VmRSS)", "MiB", m.rss_bytes as f64 / MIB));
        }
        out
    }

    /// The report as a human table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let s = &self.settings;
        let (name, format) = match &self.stack {
            Some(st) => (
                st.module_name.clone().unwrap_or_else(|| "?".into()),
                st.format.clone().unwrap_or_else(|| "format not known".into()),
            ),
            None => ("?".into(), "?".into()),
        };
        let _ = writeln!(o, "{} — {}", self.tool, self.date);
        let _ = writeln!(
            o,
            "module {name} ({format}); {} process(es) × {} messages; data {:?}; tags {}",
            s.processes,
            s.messages,
            s.data,
            s.tags.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",")
        );
        let load = |l: Option<[f64; 3]>| l.map_or("?".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]));
        let _ = writeln!(
            o,
            "machine: {} CPUs ({}), {:.1} GiB RAM; load average {} at start, {} at end",
            self.machine.cpus,
            self.machine.cpu_model.as_deref().unwrap_or("?"),
            self.machine.mem_total_bytes.unwrap_or(0) as f64 / (1024.0 * MIB),
            load(self.load_average_start),
            load(self.load_average_end),
        );
        let _ = writeln!(o);
        let _ = writeln!(o, "phase details");
        if let Some(p) = &self.setup {
            let _ =
                writeln!(o, "  setup    {} of {} extra processes spawned in {:.2} s", p.spawned, p.asked, p.seconds);
        }
        if let Some(p) = &self.post {
            let _ = writeln!(
                o,
                "  post     {} of {} messages to the scheduler in {:.2} s = {:.0} msg/s",
                p.posted, p.asked, p.seconds, p.msg_per_s
            );
            detail(&mut o, "latency", &p.latency);
        }
        if let Some(p) = &self.cold {
            let _ = writeln!(
                o,
                "  cold     {} messages of {} process(es) evaluated in {:.3} s = {:.1} msg/s{}",
                p.messages,
                p.processes,
                p.seconds,
                p.msg_per_s,
                if p.complete { "" } else { " (incomplete)" }
            );
            detail(&mut o, "per process", &p.per_process);
            if let Some(n) = self.live_after_cold {
                let _ = writeln!(o, "             processes live in the server after it: {n}");
            }
        }
        if let Some(r) = &self.restart {
            let live = |n: Option<u64>| n.map_or("?".into(), |n| n.to_string());
            let _ = writeln!(
                o,
                "  restart  stop (drain, checkpoints) {:.2} s with {} live; start until listening {:.2} s",
                r.stop_seconds,
                live(r.live_before),
                r.start_seconds
            );
            if let Some(t) = r.live_again_seconds {
                let _ = writeln!(o, "           live again before any request: {} after {t:.2} s", live(r.live_again));
            }
            if let Some(b) = &r.back {
                let _ = writeln!(
                    o,
                    "           back: {} process(es) loaded again and answered one new message each in {:.3} s = {:.1} processes/s{}; {} live after",
                    b.processes,
                    b.seconds,
                    b.processes as f64 / b.seconds.max(f64::MIN_POSITIVE),
                    if b.complete { "" } else { " (incomplete)" },
                    live(r.live_after)
                );
                detail(&mut o, "per process", &b.per_process);
            }
        }
        if let Some(p) = &self.steady {
            let _ = writeln!(
                o,
                "  steady   {} of {} messages (post, then /result) in {:.2} s = {:.1} msg/s",
                p.messages, p.asked, p.seconds, p.msg_per_s
            );
            detail(&mut o, "round trip", &p.round_trip);
            detail(&mut o, "post", &p.post);
            detail(&mut o, "/result", &p.result);
        }
        if let Some(p) = &self.cached {
            let cores = |c: Option<f64>| c.map_or("?".into(), |c| format!("{c:.2}"));
            let _ = writeln!(
                o,
                "  cached   {} connections × {:.2} s over {} messages: {} requests = {:.0} req/s",
                p.connections, p.seconds, p.messages, p.requests, p.req_per_s
            );
            detail(&mut o, "latency", &p.latency);
            let _ = writeln!(
                o,
                "             CPU cores used: server {}, load generator (this bench) {}, of {}",
                cores(p.server_cpu_cores),
                cores(p.bench_cpu_cores),
                self.machine.cpus
            );
        }
        if let Some(p) = &self.dry_run {
            let _ = writeln!(
                o,
                "  dry-run  {} of {}, one at a time; first {}",
                p.count,
                p.asked,
                p.first_ms.map_or("—".into(), |f| format!("{f:.3} ms"))
            );
            detail(&mut o, "warm", &p.warm);
        }
        if !self.memory.is_empty() {
            let list: Vec<String> =
                self.memory.iter().map(|m| format!("{} {:.1}", m.after, m.memory.rss_bytes as f64 / MIB)).collect();
            let _ = writeln!(o, "  memory   server RSS (MiB) after: {}", list.join(", "));
        }
        let _ = writeln!(o);
        self.comparison_table(&mut o);
        let _ = writeln!(o);
        if let Some(r) = self.stopped {
            let _ = writeln!(o, "STOPPED EARLY: {r}; figures are of what was done until then.");
        }
        if let Some(f) = &self.failure {
            let _ = writeln!(o, "FAILURE: {f}");
        }
        if self.error_total == 0 {
            let _ = writeln!(o, "errors: none");
        } else {
            let _ = writeln!(o, "ERRORS: {} (the figures above include failed requests)", self.error_total);
            for (phase, e) in self.error_lists() {
                if e.count > 0 {
                    let _ = writeln!(o, "  {phase}: {}; first: {}", e.count, e.examples.join(" | "));
                }
            }
        }
        if !self.stack.as_ref().and_then(|s| s.module_name.as_deref()).is_some_and(|n| n.starts_with("aos")) {
            let _ = writeln!(o, "note: the reference figures are for aos; ratios for this module are indicative only.");
        }
        o
    }

    fn error_lists(&self) -> Vec<(&'static str, &Errors)> {
        let mut v = Vec::new();
        if let Some(p) = &self.setup {
            v.push(("setup", &p.errors));
        }
        if let Some(p) = &self.post {
            v.push(("post", &p.errors));
        }
        if let Some(p) = &self.cold {
            v.push(("cold", &p.errors));
            v.push(("cold results with Error", &p.result_errors));
        }
        if let Some(r) = &self.restart {
            if let Some(p) = &r.post {
                v.push(("restart post", &p.errors));
            }
            if let Some(b) = &r.back {
                v.push(("restart back", &b.errors));
                v.push(("restart back results with Error", &b.result_errors));
            }
        }
        if let Some(p) = &self.steady {
            v.push(("steady", &p.errors));
            v.push(("steady results with Error", &p.result_errors));
        }
        if let Some(p) = &self.cached {
            v.push(("cached", &p.errors));
        }
        if let Some(p) = &self.dry_run {
            v.push(("dry-run", &p.errors));
            v.push(("dry-run results with Error", &p.result_errors));
        }
        v
    }

    fn comparison_table(&self, o: &mut String) {
        let header = ["figure", "metalcu", "reference", "vs reference", "target"];
        let rows: Vec<[String; 5]> = self
            .comparisons
            .iter()
            .map(|c| {
                [
                    c.what.to_string(),
                    format!("{} {}", num(c.metalcu), c.unit),
                    c.reference.map_or("—".into(), |r| format!("{} {}", num(r), c.unit)),
                    c.better_x.map_or("—".into(), |x| {
                        format!("{}× {}", ratio(x), if x >= 1.0 { "better" } else { "WORSE" })
                    }),
                    match (&c.target, c.target_met) {
                        (Some(t), Some(true)) => format!("{t} met"),
                        (Some(t), _) => format!("{t} MISSED"),
                        (None, _) => "—".into(),
                    },
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> =
                cells.iter().zip(widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count()))).collect();
            padded.join("  ").trim_end().to_string()
        };
        let _ = writeln!(o, "{}", line(&header.map(String::from)));
        let _ = writeln!(o, "{}", line(&widths.map(|w| "-".repeat(w))));
        for r in &rows {
            let _ = writeln!(o, "{}", line(r));
        }
        let _ = writeln!(
            o,
            "(reference: the Node.js CU's figures from the issue, aos, one process; \"× better\" is how many times \
             metalcu is ahead)"
        );
    }
}

/// A `label: p50 …, p99 …, max … ms (n samples)` line of the phase details.
fn detail(o: &mut String, label: &str, s: &Option<Summary>) {
    let text = match s {
        Some(s) => format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} samples)",
            s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.count
        ),
        None => "no sample".into(),
    };
    let _ = writeln!(o, "             {:<14}{text}", format!("{label}:"));
}

/// A ratio: two decimals below 10 (so 0.98 does not read as 1.0), one above.
fn ratio(x: f64) -> String {
    if x >= 10.0 { format!("{x:.1}") } else { format!("{x:.2}") }
}

/// A figure with a sensible number of digits.
fn num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_a_few_examples_and_count_all() {
        let mut e = Errors::default();
        for i in 0..10 {
            e.add(format!("e{i}"));
        }
        let mut f = Errors::default();
        f.add("x");
        e.merge(f);
        assert_eq!((e.count, e.examples.len()), (11, MAX_ERROR_EXAMPLES));
    }

    #[test]
    fn numbers() {
        assert_eq!(num(48.076), "48.1");
        assert_eq!(num(21234.6), "21235");
        assert_eq!(num(0.6512), "0.651");
        assert_eq!(num(2.5), "2.50");
    }
}
