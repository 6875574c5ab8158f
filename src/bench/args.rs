//! The command line of `metalcu bench` and the checked [`Settings`] the run uses.
//!
//! Invariants: every size is bounded by a named constant (a typo cannot ask for 10^12 messages);
//! `--cu-url`, `--su-url` and `--process` come together (driving a running stack) and exclude
//! the options of the child stack; every setting lands in the report as it was used.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Most processes (the CU's own bound is `process::evaluator::MAX_PROCESSES`).
pub const MAX_PROCESSES: usize = 10_000;
/// Most messages per process.
pub const MAX_MESSAGES: usize = 1_000_000;
/// Most concurrent connections of a read phase (the CU serves 4096 at once).
pub const MAX_CONCURRENCY: usize = 1024;
/// Most dry-runs.
pub const MAX_DRY_RUNS: usize = 1_000_000;
/// Longest run: one day.
pub const MAX_RUN_SECONDS: f64 = 86_400.0;
/// Shortest `--read-seconds` / `--steady-seconds` that still measures something.
pub const MIN_PHASE_SECONDS: f64 = 0.1;
/// Time the dry-run phase may take at most, whatever `--dry-runs` asks.
pub const DRY_RUN_MAX_TIME: Duration = Duration::from_secs(60);
/// Most `--dev-arg`s.
pub const MAX_DEV_ARGS: usize = 64;
/// Tag every message and dry-run carries when no `--tag` is given (aos evaluates the data).
pub const DEFAULT_TAG: (&str, &str) = ("Action", "Eval");

/// Arguments of `metalcu bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Spawn the processes from this module (default: the built-in echo module of `metalcu dev`).
    #[arg(long, requires = "format")]
    pub module: Option<PathBuf>,
    /// The Module-Format of --module, e.g. wasm32-unknown-emscripten4.
    #[arg(long, requires = "module")]
    pub format: Option<String>,
    /// Processes to drive (the stack's demo process plus N-1 spawned through the scheduler).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Messages posted per process before the cold phase.
    #[arg(long, default_value_t = 100)]
    pub messages: usize,
    /// Data of every message and dry-run.
    #[arg(long, default_value = "1 + 1")]
    pub data: String,
    /// A tag of every message and dry-run, NAME=VALUE; repeatable (default: Action=Eval).
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Messages of the steady phase (post one, read its result, repeat).
    #[arg(long, default_value_t = 100)]
    pub steady_messages: usize,
    /// Time bound of the steady phase, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub steady_seconds: f64,
    /// Concurrent keep-alive connections of the cached /result phase (and parallel processes
    /// while posting and in the cold phase).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Duration of the cached /result phase, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub read_seconds: f64,
    /// Dry-runs of the dry-run phase (the first is reported apart, the rest as warm).
    #[arg(long, default_value_t = 100)]
    pub dry_runs: usize,
    /// Hard bound on the whole run, in seconds: the bench then stops and reports what it measured.
    #[arg(long, default_value_t = 900.0)]
    pub max_seconds: f64,
    /// Evaluation workers of the child `metalcu dev` (0: one per CPU).
    #[arg(long, default_value_t = 0, conflicts_with = "cu_url")]
    pub workers: usize,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Drive an already running CU at this URL (with --su-url and --process) instead of a child.
    #[arg(long, value_name = "URL", requires_all = ["su_url", "process"], conflicts_with_all = ["module", "data_dir", "keep_data"])]
    pub cu_url: Option<String>,
    /// The local scheduler's URL of the running stack (where messages are posted).
    #[arg(long, value_name = "URL", requires = "cu_url")]
    pub su_url: Option<String>,
    /// An existing process of the running stack; further processes copy its tags.
    #[arg(long, value_name = "PID", requires = "cu_url")]
    pub process: Option<String>,
    /// OS process id of the running CU, to report its memory (--cu-url only).
    #[arg(long, value_name = "OS_PID", requires = "cu_url")]
    pub server_pid: Option<u32>,
    /// Directory for the child stack's data and log; must not exist yet; kept at the end
    /// (default: a fresh temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the temporary data directory (its path is printed).
    #[arg(long)]
    pub keep_data: bool,
    /// A further argument of the child `metalcu dev` (repeat for more), e.g.
    /// `--dev-arg=--wasm-instance-cache-max-size=5000`.
    #[arg(long = "dev-arg", value_name = "ARG", allow_hyphen_values = true, conflicts_with = "cu_url")]
    pub dev_args: Vec<String>,
    /// After the cold phase, stop the child (SIGINT: drain, checkpoints), start it again on the
    /// same data and give every process one new message: the time to bring them all back.
    #[arg(long, conflicts_with = "cu_url")]
    pub restart: bool,
    /// With --restart: first wait until the restarted server holds as many live processes as
    /// before the stop (its --prewarm), and report that time.
    #[arg(long, requires = "restart")]
    pub restart_wait_live: bool,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected NAME=VALUE")),
    }
}

/// Where the CU under test comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Target {
    /// `metalcu dev` as a child process.
    Child {
        module: Option<(PathBuf, String)>,
        data_dir: Option<PathBuf>,
        keep_data: bool,
        workers: usize,
        dev_args: Vec<String>,
    },
    /// A running CU and local scheduler.
    External { cu_url: String, su_url: String, process: String, server_pid: Option<u32> },
}

/// The checked settings of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub target: Target,
    pub restart: bool,
    pub restart_wait_live: bool,
    pub processes: usize,
    pub messages: usize,
    pub data: String,
    pub tags: Vec<(String, String)>,
    pub steady_messages: usize,
    pub steady_seconds: f64,
    pub concurrency: usize,
    pub read_seconds: f64,
    pub dry_runs: usize,
    pub max_seconds: f64,
    pub json: Option<PathBuf>,
}

fn within<T: PartialOrd + std::fmt::Display>(name: &str, v: T, lo: T, hi: T) -> anyhow::Result<T> {
    if v < lo || v > hi {
        anyhow::bail!("--{name} {v}: must be between {lo} and {hi}");
    }
    Ok(v)
}

impl Settings {
    /// Checks `a`.
    pub fn from_args(a: BenchArgs) -> anyhow::Result<Settings> {
        let target = match (a.cu_url, a.su_url, a.process) {
            (Some(cu_url), Some(su_url), Some(process)) => {
                Target::External { cu_url, su_url, process, server_pid: a.server_pid }
            }
            (None, None, None) => {
                if let Some(dir) = &a.data_dir
                    && dir.exists()
                {
                    anyhow::bail!("--data-dir {}: exists already; the bench needs a fresh directory", dir.display());
                }
                let workers = within("workers", a.workers, 0, crate::pool::MAX_WORKERS)?;
                if a.dev_args.len() > MAX_DEV_ARGS {
                    anyhow::bail!("--dev-arg: at most {MAX_DEV_ARGS}");
                }
                Target::Child {
                    module: a.module.zip(a.format),
                    data_dir: a.data_dir,
                    keep_data: a.keep_data,
                    workers,
                    dev_args: a.dev_args,
                }
            }
            _ => anyhow::bail!("--cu-url, --su-url and --process go together"),
        };
        let tags = if a.tags.is_empty() { vec![(DEFAULT_TAG.0.into(), DEFAULT_TAG.1.into())] } else { a.tags };
        Ok(Settings {
            target,
            restart: a.restart,
            restart_wait_live: a.restart_wait_live,
            processes: within("processes", a.processes, 1, MAX_PROCESSES)?,
            messages: within("messages", a.messages, 1, MAX_MESSAGES)?,
            data: a.data,
            tags,
            steady_messages: within("steady-messages", a.steady_messages, 0, MAX_MESSAGES)?,
            steady_seconds: within("steady-seconds", a.steady_seconds, MIN_PHASE_SECONDS, MAX_RUN_SECONDS)?,
            concurrency: within("concurrency", a.concurrency, 1, MAX_CONCURRENCY)?,
            read_seconds: within("read-seconds", a.read_seconds, MIN_PHASE_SECONDS, MAX_RUN_SECONDS)?,
            dry_runs: within("dry-runs", a.dry_runs, 0, MAX_DRY_RUNS)?,
            max_seconds: within("max-seconds", a.max_seconds, 1.0, MAX_RUN_SECONDS)?,
            json: a.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: BenchArgs,
    }

    fn settings(args: &[&str]) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        Settings::from_args(cli.a)
    }

    #[test]
    fn defaults_and_bounds() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.tags, vec![("Action".to_string(), "Eval".to_string())]);
        assert_eq!((s.processes, s.data.as_str()), (1, "1 + 1"));
        assert!(matches!(s.target, Target::Child { module: None, .. }));
        assert!(settings(&["--processes", "0"]).is_err());
        assert!(settings(&["--concurrency", "100000"]).is_err());
        assert!(settings(&["--read-seconds", "0"]).is_err());
        assert!(settings(&["--module", "x.wasm"]).is_err(), "--module needs --format");
        assert!(settings(&["--tag", "novalue"]).is_err());
        let s = settings(&["--dev-arg=--wasm-instance-cache-max-size=5000", "--dev-arg", "--no-checkpoints"]).unwrap();
        let Target::Child { dev_args, .. } = &s.target else { panic!("a child stack") };
        assert_eq!(dev_args, &["--wasm-instance-cache-max-size=5000", "--no-checkpoints"]);
        assert!(
            settings(&["--cu-url", "http://a:1", "--su-url", "http://b:2", "--process", "P", "--restart"]).is_err()
        );
        let s = settings(&["--tag", "Action=Balance", "--tag", "X=a=b"]).unwrap();
        assert_eq!(s.tags[1], ("X".to_string(), "a=b".to_string()));
    }

    #[test]
    fn an_external_stack_needs_all_three() {
        assert!(settings(&["--cu-url", "http://a:1"]).is_err());
        assert!(settings(&["--cu-url", "http://a:1", "--su-url", "http://b:2", "--process", "P"]).is_ok());
        assert!(
            settings(&[
                "--cu-url",
                "http://a:1",
                "--su-url",
                "http://b:2",
                "--process",
                "P",
                "--module",
                "m",
                "--format",
                "f"
            ])
            .is_err()
        );
    }
}
