//! `metalcu doctor`: inspects this host for what a CU of the configured size needs and says, for
//! each check, OK / WARN / FAIL, what it found, and what to change and why.
//!
//! Checks ([`checks::CHECK_IDS`]): io_uring usable (the same probe as `IO=auto`), the kernel's
//! write tracking for state hashes (userfaultfd + `PAGEMAP_SCAN`), `vm.max_map_count` against the mappings the pool needs, the pool's address-space reservation
//! (estimated, then actually reserved and released in this process), `RLIMIT_MEMLOCK`,
//! `RLIMIT_NOFILE`, transparent huge pages, cores (isolated, `nohz_full`, NUMA), free space where
//! results and modules are kept, and the overcommit policy.
//!
//! Sizing comes from the same settings as `metalcu serve` (`PROCESS_WASM_MEMORY_MAX_LIMIT`, `IO`,
//! `DATA_DIR`, `DB_URL`, `WASM_BINARY_FILE_DIRECTORY`), parsed by the same parsers, with flag >
//! `--env-file` > environment > `--config` file > default. The pool has serve's size
//! (`WASM_INSTANCE_CACHE_MAX_SIZE` per worker on `WASM_EVALUATION_MAX_WORKERS` workers, plus the
//! fork headroom: [`residency::pool_slots_for`]) unless `--pool-slots` gives the slots outright.
//!
//! doctor never changes the host: it reads `/proc`, `/sys`, resource limits and `statvfs`, runs
//! the io_uring probe on a throwaway ring, hashes a scratch mapping of its own with write
//! tracking, and reserves (then releases) the pool's address space in its own process. Exit code: 0 when nothing blocks the configured size (warnings allowed),
//! [`EXIT_BLOCKED`] when a check FAILs, 1 when the settings themselves are invalid.

pub mod checks;
pub mod host;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::file::ConfigFile;
use crate::config::values::{self, Sources};
use crate::engine::{Engine, EngineConfig};
use crate::net::IoMode;
use crate::pool::MAX_WORKERS;
use crate::process::residency;
use checks::{Check, Sizing, Status};

/// The start-up check of `serve` and `dev`: a pool of `slots` instances must fit this host's
/// `vm.max_map_count` by the estimate `doctor` uses ([`checks::map_entries_for_slots`]), or the
/// server would fail instances once the pool fills. An unreadable count passes (doctor warns).
pub fn check_pool_fits(slots: u64, workers: usize) -> Result<(), String> {
    let Some(max) = host::read_u64("/proc/sys/vm/max_map_count") else { return Ok(()) };
    let need = checks::map_entries_for_slots(slots);
    if need <= max {
        return Ok(());
    }
    let fit = checks::slots_within_map_count(max);
    let per_worker = fit.saturating_sub(2 * workers as u64 + 1) / workers.max(1) as u64;
    Err(format!(
        "WASM_INSTANCE_CACHE_MAX_SIZE: a pool of {slots} instance slots may need {need} memory mappings, but \
         vm.max_map_count is {max}: at most {per_worker} live processes per worker fit ({workers} workers); \
         lower WASM_INSTANCE_CACHE_MAX_SIZE or raise vm.max_map_count (tuning/sysctl.d/90-metalcu.conf)"
    ))
}

/// Exit code when a check FAILs: a setting blocks the configured size.
pub const EXIT_BLOCKED: u8 = 2;
/// Largest `--env-file` read.
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;

/// Arguments of `metalcu doctor`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DoctorArgs {
    /// Instances the engine's pool holds, outright (default: serve's, from the next two);
    /// each reserves the memory cap.
    #[arg(long, value_name = "N")]
    pub pool_slots: Option<u32>,
    /// Processes kept live per worker [env: WASM_INSTANCE_CACHE_MAX_SIZE].
    #[arg(long, value_name = "N")]
    pub wasm_instance_cache_max_size: Option<String>,
    /// Evaluation workers (0: one per CPU) [env: WASM_EVALUATION_MAX_WORKERS].
    #[arg(long, value_name = "N")]
    pub wasm_evaluation_max_workers: Option<String>,
    /// Memory cap of one process = one pool slot, bytes [env: PROCESS_WASM_MEMORY_MAX_LIMIT].
    #[arg(long, visible_alias = "memory-max", value_name = "BYTES")]
    pub process_wasm_memory_max_limit: Option<String>,
    /// I/O engine serve will use: uring, epoll or auto [env: IO].
    #[arg(long, value_name = "IO")]
    pub io: Option<String>,
    /// Directory of the results database [env: DATA_DIR].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Results database name or path [env: DB_URL].
    #[arg(long, value_name = "DB_URL")]
    pub db_url: Option<String>,
    /// Directory of module binaries and compiled modules [env: WASM_BINARY_FILE_DIRECTORY].
    #[arg(long, value_name = "DIR")]
    pub wasm_binary_file_directory: Option<String>,
    /// serve's TOML settings file [env: METALCU_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A systemd EnvironmentFile (KEY=VALUE lines), e.g. /etc/metalcu/metalcu.env; its values
    /// win over the environment.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The settings of an EnvironmentFile: `KEY=VALUE` lines; blank lines and lines starting with
/// `#` or `;` are skipped; a value wrapped in matching single or double quotes is unwrapped.
pub fn parse_env_file(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim();
        let unquoted =
            ['"', '\''].iter().find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q))).unwrap_or(v);
        out.insert(k.trim().to_string(), unquoted.to_string());
    }
    out
}

fn load_env_file(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("--env-file {}: {e}", path.display()))?;
    if meta.len() > MAX_ENV_FILE_BYTES {
        anyhow::bail!("--env-file {}: larger than {MAX_ENV_FILE_BYTES} bytes", path.display());
    }
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--env-file {}: {e}", path.display()))?;
    Ok(parse_env_file(&text))
}

/// The sizing `args` (with the environment `env`) stand for, checked like serve checks it.
pub fn sizing(args: &DoctorArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Sizing> {
    let file_vars = match &args.env_file {
        Some(p) => load_env_file(p)?,
        None => HashMap::new(),
    };
    let env = |name: &str| file_vars.get(name).cloned().or_else(|| env(name));
    let config_path = args.config.clone().or_else(|| env("METALCU_CONFIG").map(PathBuf::from));
    let file = match &config_path {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    let mut flags = Vec::new();
    for (name, v) in [
        ("PROCESS_WASM_MEMORY_MAX_LIMIT", &args.process_wasm_memory_max_limit),
        ("WASM_INSTANCE_CACHE_MAX_SIZE", &args.wasm_instance_cache_max_size),
        ("WASM_EVALUATION_MAX_WORKERS", &args.wasm_evaluation_max_workers),
        ("IO", &args.io),
        ("DATA_DIR", &args.data_dir),
        ("DB_URL", &args.db_url),
        ("WASM_BINARY_FILE_DIRECTORY", &args.wasm_binary_file_directory),
    ] {
        if let Some(v) = v {
            flags.push((name, v.clone()));
        }
    }
    let src = Sources { flags, env: &env, file: &file };
    let memory_max = src
        .parse("PROCESS_WASM_MEMORY_MAX_LIMIT", |v| values::bounded(v, 1 << 16, crate::config::MAX_MEMORY_LIMIT))?
        .unwrap_or(crate::process::options::DEFAULT_MEMORY_MAX);
    let io = src.parse("IO", |v| v.trim().parse::<IoMode>())?.unwrap_or_default();
    let data_dir = src.parse("DATA_DIR", values::path)?.unwrap_or_else(|| PathBuf::from("."));
    let db_path = match src.get("DB_URL") {
        Some((v, from)) => values::db_path(&v, &data_dir).map_err(|why| values::err("DB_URL", &v, &from, &why))?,
        None => data_dir.join("ao-cache.redb"),
    };
    let wasm_dir = src
        .parse("WASM_BINARY_FILE_DIRECTORY", values::path)?
        .unwrap_or_else(|| std::env::temp_dir().join("metalcu-wasm"));
    let defaults = EngineConfig::default();
    let per_worker = src
        .parse("WASM_INSTANCE_CACHE_MAX_SIZE", |v| values::bounded(v, 1, residency::MAX_LIVE_PER_WORKER as u64))?
        .map_or(residency::DEFAULT_LIVE_PER_WORKER, |n| n as usize);
    let workers = crate::pool::PoolConfig {
        workers: src.parse("WASM_EVALUATION_MAX_WORKERS", |v| values::bounded(v, 0, MAX_WORKERS as u64))?.unwrap_or(0)
            as usize,
        cpus: src.parse("WORKER_CPUS", values::cpu_list)?,
        ..crate::pool::PoolConfig::default()
    }
    .worker_count();
    let serve_slots = residency::pool_slots_for(per_worker, workers) as u32;
    let pool_slots = args.pool_slots.unwrap_or(serve_slots);
    if pool_slots == 0 {
        anyhow::bail!("--pool-slots: expected at least 1");
    }
    Ok(Sizing { pool_slots, memory_max, table_elements: defaults.max_table_elements, io, db_path, wasm_dir })
}

/// Builds the engine with the pool `s` describes and drops it: the address space is reserved
/// and released in this process only.
fn reserve_pool(s: &Sizing) -> Result<(), String> {
    let cfg = EngineConfig {
        pool_slots: s.pool_slots,
        max_memory_bytes: s.memory_max,
        max_table_elements: s.table_elements,
        ..EngineConfig::default()
    };
    Engine::new(cfg).map(drop).map_err(|e| e.to_string())
}

/// The report: the sizing and every check.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub metalcu: &'static str,
    pub sizing: serde_json::Value,
    pub checks: Vec<Check>,
    /// Ids of the checks that FAIL (they block the configured size).
    pub failures: Vec<&'static str>,
    pub warnings: Vec<&'static str>,
    pub exit_code: u8,
}

/// Runs every check against this host.
pub fn run(s: &Sizing) -> Report {
    let db_dir = s.db_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let facts = host::Facts::gather(&[db_dir, s.wasm_dir.clone()], true);
    let checks = checks::all(s, &facts, || reserve_pool(s));
    let ids = |st: Status| checks.iter().filter(|c| c.status == st).map(|c| c.id).collect::<Vec<_>>();
    let (failures, warnings) = (ids(Status::Fail), ids(Status::Warn));
    let exit_code = if failures.is_empty() { 0 } else { EXIT_BLOCKED };
    let io = match s.io {
        IoMode::Uring => "uring",
        IoMode::Epoll => "epoll",
        IoMode::Auto => "auto",
    };
    let sizing = serde_json::json!({
        "pool_slots": s.pool_slots,
        "memory_max_bytes": s.memory_max,
        "table_elements": s.table_elements,
        "io": io,
        "db_path": s.db_path,
        "wasm_dir": s.wasm_dir,
    });
    Report { metalcu: env!("CARGO_PKG_VERSION"), sizing, checks, failures, warnings, exit_code }
}

/// The report as text: one line per check, its fix indented below.
pub fn render(r: &Report, s: &Sizing) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "metalcu doctor: pool {} slots × {}, IO {}, results {}, modules {}",
        s.pool_slots,
        checks::bytes(s.memory_max),
        r.sizing["io"].as_str().unwrap_or("?"),
        s.db_path.display(),
        s.wasm_dir.display()
    );
    for c in &r.checks {
        let _ = writeln!(out, "{:<5} {:<14} {}", c.status.label(), c.id, c.summary);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "{:20} fix: {fix}", "");
        }
    }
    let verdict = if r.failures.is_empty() {
        "nothing blocks the configured size".to_string()
    } else {
        format!("blocked by: {}", r.failures.join(", "))
    };
    let _ = writeln!(out, "{} failed, {} warned: {verdict}", r.failures.len(), r.warnings.len());
    out
}

/// Runs the checks; the exit code is [`EXIT_BLOCKED`] when a setting blocks the configured size.
pub fn main(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let s = sizing(&args, &|n| std::env::var(n).ok())?;
    let report = run(&s);
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { render(&report, &s) };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        // A reader that stopped early (`| head`) does not change the verdict.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::from(report.exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_parse_like_systemd_reads_them() {
        let vars =
            parse_env_file("# comment\n; also\n\nPORT=6363\nDATA_DIR=\"/var/lib/metalcu\"\n IO = 'epoll' \nbad\n");
        assert_eq!(vars.get("PORT").map(String::as_str), Some("6363"));
        assert_eq!(vars.get("DATA_DIR").map(String::as_str), Some("/var/lib/metalcu"));
        assert_eq!(vars.get("IO").map(String::as_str), Some("epoll"));
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn the_start_check_names_the_setting_and_what_fits() {
        let Some(max) = host::read_u64("/proc/sys/vm/max_map_count") else { return };
        let fit = checks::slots_within_map_count(max);
        assert!(checks::map_entries_for_slots(fit) <= max && checks::map_entries_for_slots(fit + 1) > max);
        assert_eq!(check_pool_fits(fit, 2), Ok(()));
        let e = check_pool_fits(fit + 1, 2).unwrap_err();
        let per_worker = (fit - 5) / 2;
        assert!(e.starts_with("WASM_INSTANCE_CACHE_MAX_SIZE: a pool of"), "{e}");
        assert!(e.contains(&format!("at most {per_worker} live processes per worker fit (2 workers)")), "{e}");
        assert!(checks::map_entries_for_slots(residency::pool_slots_for(per_worker as usize, 2) as u64) <= max);
    }

    #[test]
    fn sizing_takes_flag_then_env_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let envf = dir.path().join("metalcu.env");
        std::fs::write(&envf, "PROCESS_WASM_MEMORY_MAX_LIMIT=2147483648\nDATA_DIR=/srv/cu\n").unwrap();
        let env = |n: &str| match n {
            "PROCESS_WASM_MEMORY_MAX_LIMIT" => Some("65536".to_string()),
            "IO" => Some("epoll".to_string()),
            _ => None,
        };
        let args = DoctorArgs { env_file: Some(envf), ..DoctorArgs::default() };
        let s = sizing(&args, &env).unwrap();
        assert_eq!((s.memory_max, s.io), (2 << 30, IoMode::Epoll));
        assert_eq!(s.db_path, PathBuf::from("/srv/cu/ao-cache.redb"));
        let cpus = crate::pool::available_cpus().len();
        assert_eq!(s.pool_slots as usize, residency::pool_slots_for(residency::DEFAULT_LIVE_PER_WORKER, cpus));
        let sized = DoctorArgs {
            wasm_instance_cache_max_size: Some("5000".into()),
            wasm_evaluation_max_workers: Some("2".into()),
            ..args.clone()
        };
        assert_eq!(sizing(&sized, &env).unwrap().pool_slots, 10_005, "5000 × 2 + 2 × 2 forks + 1 spare");
        let args = DoctorArgs { process_wasm_memory_max_limit: Some("1048576".into()), pool_slots: Some(3), ..args };
        let s = sizing(&args, &env).unwrap();
        assert_eq!((s.memory_max, s.pool_slots), (1 << 20, 3));
        let bad = DoctorArgs { wasm_instance_cache_max_size: Some("0".into()), ..DoctorArgs::default() };
        let e = sizing(&bad, &env).unwrap_err().to_string();
        assert!(e.starts_with("WASM_INSTANCE_CACHE_MAX_SIZE = \"0\""), "{e}");
        let bad = DoctorArgs { io: Some("kqueue".into()), ..DoctorArgs::default() };
        let e = sizing(&bad, &env).unwrap_err().to_string();
        assert!(e.starts_with("IO = \"kqueue\" (--io)"), "{e}");
    }
}
