//! The `metalcu` command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use metalcu::engine::{Engine, EngineConfig, ModuleFormat, ProcessOptions};
use metalcu::eval::{Replay, open_out, read_steps};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "metalcu", version, about = "An ao Compute Unit for bare metal")]
struct Cli {
    /// Log lines for people (human) or one JSON object per line (json); levels from RUST_LOG
    /// [env: LOG_FORMAT] [default: human]
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<metalcu::logging::LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay a message log through the engine; one output line per step in the goldens' schema.
    Eval(EvalArgs),
    /// A CU with an embedded local scheduler and gateway on 127.0.0.1, running a demo process.
    Dev(DevArgs),
    /// The CU for the real network: settings from flags, the environment (the reference CU's
    /// names) and an optional TOML file, in that order of precedence.
    Serve(Box<metalcu::config::ServeArgs>),
    /// End-to-end load bench: a local scheduler + gateway with N processes x M messages, driving a CU.
    Bench(metalcu::bench::BenchArgs),
    /// Inspect this host (io_uring, map count, memlock, THP, cores, disk) and say what to change.
    Doctor(metalcu::doctor::DoctorArgs),
}

#[derive(clap::Args)]
struct DevArgs {
    /// Port of the CU's HTTP API.
    #[arg(long, default_value_t = 6363)]
    port: u16,
    /// Port of the local scheduler's HTTP API (where messages are posted).
    #[arg(long, default_value_t = 6364)]
    su_port: u16,
    /// Where the scheduler log, the results and the module cache are kept.
    #[arg(long, default_value = ".metalcu-dev")]
    data_dir: PathBuf,
    /// Spawn the demo process from this module instead of the built-in echo module.
    #[arg(long, requires = "format")]
    module: Option<PathBuf>,
    /// The Module-Format of --module.
    #[arg(long, requires = "module")]
    format: Option<String>,
    /// Evaluation worker threads, each pinned to a CPU (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// A memory checkpoint after this many evaluations of a process, in DATA_DIR/checkpoints
    /// (0: only on shutdown and eviction). Restarts resume from the newest one.
    #[arg(long, default_value_t = metalcu::checkpoint::policy::DEFAULT_EVERY_MESSAGES)]
    checkpoint_every: u64,
    /// No file checkpoints at all: every restart replays each process from the scheduler.
    #[arg(long)]
    no_checkpoints: bool,
    /// Processes kept live (a pooled instance each) per worker, as serve's
    /// WASM_INSTANCE_CACHE_MAX_SIZE.
    #[arg(long, value_name = "N", default_value_t = metalcu::process::residency::DEFAULT_LIVE_PER_WORKER as u64,
          value_parser = clap::value_parser!(u64).range(1..=metalcu::process::residency::MAX_LIVE_PER_WORKER as u64))]
    wasm_instance_cache_max_size: u64,
    /// Resident bytes of process memory kept before least recently used processes are evicted to
    /// a checkpoint, as serve's PROCESS_MEMORY_CACHE_MAX_SIZE (default: no byte limit).
    #[arg(long, value_name = "BYTES")]
    process_memory_cache_max_size: Option<u64>,
    /// On stop: ms for evaluations in flight and checkpoints, as serve's SHUTDOWN_DEADLINE_MS.
    #[arg(long, value_name = "MS", default_value_t = metalcu::dev::SHUTDOWN_DEADLINE.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    shutdown_deadline_ms: u64,
    /// At start, load this many of the most recently checkpointed processes live, as serve's
    /// PREWARM_PROCESSES.
    #[arg(long, value_name = "N", default_value_t = 0)]
    prewarm: usize,
}

fn dev(a: DevArgs) -> anyhow::Result<()> {
    let module = match (a.module, a.format) {
        (Some(m), Some(f)) => Some((m, f.parse::<ModuleFormat>().map_err(|e| anyhow::anyhow!("--format: {e}"))?)),
        _ => None,
    };
    let cfg = metalcu::dev::DevConfig {
        port: a.port,
        su_port: a.su_port,
        module,
        workers: a.workers,
        checkpoints: !a.no_checkpoints,
        checkpoint_every: (a.checkpoint_every > 0).then_some(a.checkpoint_every),
        live_per_worker: a.wasm_instance_cache_max_size as usize,
        memory_budget: a.process_memory_cache_max_size,
        shutdown_deadline: std::time::Duration::from_millis(a.shutdown_deadline_ms),
        prewarm: a.prewarm.min(metalcu::process::evaluator::MAX_PREWARM),
        ..metalcu::dev::DevConfig::new(a.data_dir)
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(metalcu::dev::run(cfg, metalcu::serve::signalled()))
}

fn serve(a: metalcu::config::ServeArgs) -> anyhow::Result<()> {
    let (cfg, inert) = metalcu::config::ServeConfig::resolve(&a)?;
    if !inert.is_empty() {
        tracing::warn!("settings accepted for compatibility that have no effect in metalcu: {}", inert.join("; "));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(metalcu::serve::run(cfg, metalcu::serve::signalled()))
}

#[derive(clap::Args)]
struct EvalArgs {
    /// The module binary (.wasm).
    #[arg(long)]
    module: PathBuf,
    /// Its Module-Format, e.g. wasm32-unknown-emscripten2.
    #[arg(long)]
    format: String,
    /// Memory-Limit in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    memory_limit: u64,
    /// Compute-Limit (gas per message).
    #[arg(long, default_value_t = 9_000_000_000_000)]
    compute_limit: u64,
    /// Input: one JSON object per line with `msg` and `env` (a goldens file is valid input).
    #[arg(long)]
    messages: PathBuf,
    /// A memory image to start from.
    #[arg(long)]
    memory: Option<PathBuf>,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory for compiled modules (default: none).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let format: ModuleFormat = a.format.parse().map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    let wasm = std::fs::read(&a.module).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", a.module.display()))?;
    let steps = read_steps(&a.messages)?;
    let initial = match &a.memory {
        Some(p) => {
            let image = std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", p.display()))?;
            if image.is_empty() || image.len() % 65536 != 0 {
                anyhow::bail!(
                    "{}: a memory image is a whole number of 64 KiB pages; this is {} bytes",
                    p.display(),
                    image.len()
                );
            }
            Some(image)
        }
        None => None,
    };
    let config = EngineConfig {
        max_memory_bytes: a.memory_limit.clamp(1 << 24, 16 << 30),
        pool_slots: 4,
        cache_dir: a.cache_dir.clone(),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config)?;
    let module = engine.load(&wasm, format).map_err(|e| anyhow::anyhow!("{}: {e}", a.module.display()))?;
    let opts = ProcessOptions { memory_limit: a.memory_limit, compute_limit: a.compute_limit, weavedrive: None };
    let replay = Replay { engine: &engine, module, opts };
    let mut out = open_out(a.out.as_ref())?;
    let bar =
        (steps.len() > 20 && std::io::stderr().is_terminal()).then(|| indicatif::ProgressBar::new(steps.len() as u64));
    replay.run(&steps, initial, |_, line| {
        writeln!(out, "{line}")?;
        if let Some(b) = &bar {
            b.inc(1);
        }
        Ok(())
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out.flush()?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match metalcu::logging::resolve(cli.log_format, |k| std::env::var(k).ok()) {
        Ok(format) => metalcu::logging::init(format),
        Err(e) => {
            eprintln!("metalcu: {e}");
            return ExitCode::FAILURE;
        }
    }
    let r = match cli.cmd {
        Cmd::Eval(a) => eval(a),
        Cmd::Dev(a) => dev(a),
        Cmd::Serve(a) => serve(*a),
        Cmd::Bench(a) => metalcu::bench::main(a),
        Cmd::Doctor(a) => match metalcu::doctor::main(a) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metalcu: {e:#}");
            ExitCode::FAILURE
        }
    }
}
