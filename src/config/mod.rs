//! Configuration of `metalcu serve`: the reference CU's environment variable names (cu-protocol
//! §5) where they apply, each also a command-line flag and a key of an optional TOML file.
//!
//! Precedence, per setting: flag > environment > file > default. Every value is parsed and
//! checked before anything starts; a bad one is refused with a message naming the setting, where
//! it came from and what was expected. Reference settings metalcu does not act on are accepted
//! and named in one warning, so an operator's existing env file keeps working and nothing is
//! silently ignored.
//!
//! Layout: [`args`] (the flags, one per setting), [`file`] (the TOML file), [`values`] (parsers),
//! [`wallet`] (JWK → address); [`ServeConfig`] is the checked result.

pub mod args;
pub mod file;
pub mod values;
pub mod wallet;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::checkpoint::CheckpointPolicy;
use crate::checkpoint::arweave::{ArweaveSettings, QUERY_LIMIT};
use crate::engine::ModuleFormat;
use crate::net::IoMode;
use crate::pool::{MAX_QUEUE_DEPTH, MAX_WORKERS, PoolConfig};
use crate::process::options::{DEFAULT_COMPUTE_MAX, DEFAULT_MEMORY_MAX, Policy};
use crate::process::residency::{DEFAULT_LIVE_PER_WORKER, MAX_LIVE_PER_WORKER};

pub use args::ServeArgs;

/// The reference's default gateway.
pub const DEFAULT_GATEWAY_URL: &str = "https://arweave.net";
/// The reference's default port.
pub const DEFAULT_PORT: u16 = 6363;
/// Largest memory cap a process may ask for (16 GiB; wasm64 modules may go past 4 GiB).
pub const MAX_MEMORY_LIMIT: u64 = 16 << 30;
/// Most entries in any list setting.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Edges asked per scheduler page (`LOAD_MESSAGES_PAGE_SIZE`), at most.
pub const MAX_PAGE_SIZE: u32 = 10_000;

/// A setting refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} = {value:?} ({origin}): {why}")]
pub struct ConfigError {
    /// The setting's name (its environment variable name).
    pub name: String,
    pub value: String,
    /// `--flag`, `environment`, or the file's path.
    pub origin: String,
    pub why: String,
}

/// The checked configuration of `metalcu serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: IpAddr,
    pub port: u16,
    /// The CU's wallet address (shown on `GET /`).
    pub address: String,
    pub gateway_url: String,
    pub arweave_url: String,
    pub graphql_url: String,
    pub graphql_urls: Vec<String>,
    pub checkpoint_graphql_url: String,
    pub uploader_url: String,
    pub su_router_url: Option<String>,
    pub su_url: Option<String>,
    pub io: IoMode,
    /// The results database file.
    pub db_path: PathBuf,
    /// Module binaries and compiled modules.
    pub wasm_dir: PathBuf,
    /// Module limits, access lists, page size.
    pub policy: Policy,
    /// Time a call to an SU or gateway may take, retries included.
    pub fetch_deadline: Duration,
    /// The evaluation worker pool.
    pub pool: PoolConfig,
    /// File checkpoints: where, and when (`None`: turned off).
    pub checkpoints: Option<CheckpointSettings>,
    /// Time SIGTERM gives in-flight evaluations and checkpoints.
    pub shutdown_deadline: Duration,
    /// Processes kept live per worker (`WASM_INSTANCE_CACHE_MAX_SIZE`): the instance pool holds
    /// this many per worker plus the fork headroom.
    pub live_per_worker: usize,
    /// Processes loaded from their checkpoints at start (`PREWARM_PROCESSES`; 0: none).
    pub prewarm: usize,
    /// Resident bytes of process memory kept, and the idle time after which a process leaves.
    pub residency_budget: u64,
    pub residency_ttl: Option<Duration>,
    /// Hydration of processes new to this CU from Arweave checkpoints (`None`: turned off). An
    /// empty trusted owner list means the CU's own address.
    pub arweave: Option<ArweaveSettings>,
}

/// Where and when memory checkpoints are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    pub dir: PathBuf,
    pub policy: CheckpointPolicy,
}

/// Default of `SHUTDOWN_DEADLINE_MS`.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Reference settings metalcu accepts but does not act on (yet), with the reason.
pub const INERT: &[(&str, &str)] = &[
    ("NODE_CONFIG_ENV", "no meaning outside Node.js"),
    ("WASM_EVALUATION_PRIMARY_WORKERS_PERCENTAGE", "no separate dry-run pool yet"),
    ("WASM_EVALUATION_WORKERS_DRY_RUN_MAX_QUEUE", "no separate dry-run pool yet"),
    ("WASM_MODULE_CACHE_MAX_SIZE", "compiled modules are cached on disk, without a count limit"),
    ("PROCESS_MEMORY_CACHE_FILE_DIR", "checkpoints come with the worker pool"),
    ("PROCESS_CHECKPOINT_CREATION_THROTTLE", "Arweave checkpoints are not created"),
    ("DISABLE_PROCESS_CHECKPOINT_CREATION", "Arweave checkpoints are not created"),
    ("EAGER_CHECKPOINT_ACCUMULATED_GAS_THRESHOLD", "checkpoints come with the worker pool"),
    ("EAGER_CHECKPOINT_EVAL_TIME_THRESHOLD", "checkpoints come with the worker pool"),
    ("BUSY_THRESHOLD", "requests wait for their evaluation"),
    ("HYDRATION_MODE_NONCE_LIMIT", "requests wait for their evaluation"),
    ("ENABLE_METRICS_ENDPOINT", "no /metrics yet"),
    ("MEM_MONITOR_INTERVAL", "use RUST_LOG for logging"),
    ("DEFAULT_LOG_LEVEL", "use RUST_LOG for logging"),
    ("DISABLE_PROCESS_EVALUATION_CACHE", "evaluations are always stored: results are never recomputed"),
    ("DRY_RUN_DEFAULT_MAX_PROCESS_AGE", "dry-runs fork the live memory, never a stale copy"),
    ("DRY_RUN_PROCESS_CACHE_TTL", "dry-runs fork the live memory, never a stale copy"),
    ("DRY_RUN_RESULT_MAX_AGE", "dry-run results are not cached"),
    ("RATE_LIMIT_WINDOW", "no per-IP rate limit (metalcu default: off)"),
    ("RATE_LIMIT_MAX_REQUESTS", "no per-IP rate limit (metalcu default: off)"),
    ("RATE_LIMIT_CLEANUP_INTERVAL", "no per-IP rate limit (metalcu default: off)"),
    ("ENABLE_MEMORY_RESET", "Action=Reset-Memory is not honoured"),
    ("LOG_CONFIG_PATH", "use RUST_LOG for logging"),
    ("MODULE_MODE", "test modes are not supported"),
];

impl ServeConfig {
    /// Resolves `args` (flags), the process environment and the optional file into a checked
    /// configuration; also returns the inert reference settings that were given.
    pub fn resolve(args: &ServeArgs) -> Result<(ServeConfig, Vec<String>), ConfigError> {
        Self::resolve_with(args, &|name| std::env::var(name).ok())
    }

    /// [`ServeConfig::resolve`] with the environment given as a function (tests).
    pub fn resolve_with(
        args: &ServeArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(ServeConfig, Vec<String>), ConfigError> {
        let config_path = args.config.clone().or_else(|| env("METALCU_CONFIG").map(PathBuf::from));
        let file = match &config_path {
            Some(p) => file::ConfigFile::load(p)?,
            None => file::ConfigFile::default(),
        };
        let src = values::Sources { flags: args.flags(), env, file: &file };
        let inert: Vec<String> =
            INERT.iter().filter(|(n, _)| src.get(n).is_some()).map(|(n, why)| format!("{n} ({why})")).collect();

        let port = src.parse("PORT", values::int::<u16>)?.unwrap_or(DEFAULT_PORT);
        let host = src.parse("HOST", values::ip)?.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Some((v, from)) = src.get("UNIT_MODE")
            && v.trim() != "cu"
        {
            return Err(values::err("UNIT_MODE", &v, &from, "metalcu runs as a compute unit only: cu"));
        }
        let address = wallet::from_sources(&src)?;
        let gateway_url = src.parse("GATEWAY_URL", values::url)?.unwrap_or_else(|| DEFAULT_GATEWAY_URL.to_string());
        let arweave_url = src.parse("ARWEAVE_URL", values::url)?.unwrap_or_else(|| gateway_url.clone());
        let graphql_url = src.parse("GRAPHQL_URL", values::url)?.unwrap_or_else(|| format!("{gateway_url}/graphql"));
        let graphql_urls = src.parse("GRAPHQL_URLS", values::url_list)?.unwrap_or_default();
        let checkpoint_graphql_url =
            src.parse("CHECKPOINT_GRAPHQL_URL", values::url)?.unwrap_or_else(|| graphql_url.clone());
        let uploader_url =
            src.parse("UPLOADER_URL", values::url)?.unwrap_or_else(|| "https://up.arweave.net".to_string());
        let su_router_url = src.parse("SU_ROUTER_URL", values::url)?;
        let su_url = src.parse("SU_URL", values::url)?;
        let io = src.parse("IO", |v| v.trim().parse::<IoMode>())?.unwrap_or_default();
        let data_dir = src.parse("DATA_DIR", values::path)?.unwrap_or_else(|| PathBuf::from("."));
        let db_path = match src.get("DB_URL") {
            Some((v, from)) => values::db_path(&v, &data_dir).map_err(|why| values::err("DB_URL", &v, &from, &why))?,
            None => data_dir.join("ao-cache.redb"),
        };
        let wasm_dir = src
            .parse("WASM_BINARY_FILE_DIRECTORY", values::path)?
            .unwrap_or_else(|| std::env::temp_dir().join("metalcu-wasm"));
        let memory_max = src
            .parse("PROCESS_WASM_MEMORY_MAX_LIMIT", |v| values::bounded(v, 1 << 16, MAX_MEMORY_LIMIT))?
            .unwrap_or(DEFAULT_MEMORY_MAX);
        let compute_max = src
            .parse("PROCESS_WASM_COMPUTE_MAX_LIMIT", |v| values::bounded(v, 1, u64::MAX))?
            .unwrap_or(DEFAULT_COMPUTE_MAX);
        let formats = src
            .parse("PROCESS_WASM_SUPPORTED_FORMATS", |v| {
                values::list(v)?.iter().map(|f| f.parse::<ModuleFormat>().map_err(|e| e.to_string())).collect()
            })?
            .unwrap_or_else(|| ModuleFormat::ALL.to_vec());
        let extensions = src.parse("PROCESS_WASM_SUPPORTED_EXTENSIONS", values::list)?.unwrap_or_default();
        let page_size = src
            .parse("LOAD_MESSAGES_PAGE_SIZE", |v| values::bounded(v, 1, MAX_PAGE_SIZE.into()))?
            .map(|n| n as u32)
            .unwrap_or(crate::process::evaluator::PAGE_SIZE);
        let allow_processes = src.parse("ALLOW_PROCESSES", values::list)?.unwrap_or_default();
        let restrict_processes = src.parse("RESTRICT_PROCESSES", values::list)?.unwrap_or_default();
        let allow_owners = src.parse("ALLOW_OWNERS", values::list)?.unwrap_or_default();
        let fetch_deadline = src
            .parse("FETCH_DEADLINE_MS", |v| values::bounded(v, 100, 3_600_000))?
            .map(Duration::from_millis)
            .unwrap_or(crate::net::fetch::DEFAULT_MAX_TOTAL);
        let pool = PoolConfig {
            workers: src
                .parse("WASM_EVALUATION_MAX_WORKERS", |v| values::bounded(v, 0, MAX_WORKERS as u64))?
                .unwrap_or(0) as usize,
            cpus: src.parse("WORKER_CPUS", values::cpu_list)?,
            pin: src.parse("WORKER_PIN", values::boolean)?.unwrap_or(true),
            queue_depth: src
                .parse("WORKER_QUEUE_DEPTH", |v| values::bounded(v, 1, MAX_QUEUE_DEPTH as u64))?
                .map_or(crate::pool::DEFAULT_QUEUE_DEPTH, |n| n as usize),
        };
        let disabled = src.parse("DISABLE_PROCESS_FILE_CHECKPOINT_CREATION", values::boolean)?.unwrap_or(false);
        let defaults = CheckpointPolicy::default();
        let every_messages = src
            .parse("CHECKPOINT_EVERY_MESSAGES", |v| values::bounded(v, 0, u64::MAX))?
            .map_or(defaults.every_messages, |n| (n > 0).then_some(n));
        let every = src
            .parse("PROCESS_MEMORY_CACHE_CHECKPOINT_INTERVAL", |v| values::bounded(v, 0, 365 * 86_400_000))?
            .map_or(defaults.every, |ms| (ms > 0).then(|| Duration::from_millis(ms)));
        let keep = src.parse("CHECKPOINT_KEEP", |v| values::bounded(v, 1, 1000))?.map_or(defaults.keep, |n| n as usize);
        let checkpoint_dir = src
            .parse("PROCESS_MEMORY_FILE_CHECKPOINTS_DIR", values::path)?
            .unwrap_or_else(|| data_dir.join("checkpoints"));
        let ignore_local = src.parse("IGNORE_LOCAL_CHECKPOINTS", values::boolean)?.unwrap_or(false);
        let checkpoints = (!disabled).then_some(CheckpointSettings {
            dir: checkpoint_dir,
            policy: CheckpointPolicy { every_messages, every, keep, resume: !ignore_local, ..defaults },
        });
        let arweave = arweave_settings(&src)?;
        let shutdown_deadline = src
            .parse("SHUTDOWN_DEADLINE_MS", |v| values::bounded(v, 0, 3_600_000))?
            .map_or(DEFAULT_SHUTDOWN_DEADLINE, Duration::from_millis);
        let residency_budget = src
            .parse("PROCESS_MEMORY_CACHE_MAX_SIZE", |v| values::bounded(v, 0, u64::MAX))?
            .unwrap_or(crate::process::residency::DEFAULT_BUDGET);
        let live_per_worker = src
            .parse("WASM_INSTANCE_CACHE_MAX_SIZE", |v| values::bounded(v, 1, MAX_LIVE_PER_WORKER as u64))?
            .map_or(DEFAULT_LIVE_PER_WORKER, |n| n as usize);
        let prewarm = src
            .parse("PREWARM_PROCESSES", |v| values::bounded(v, 0, crate::process::evaluator::MAX_PREWARM as u64))?
            .unwrap_or(0) as usize;
        let residency_ttl = src
            .parse("PROCESS_MEMORY_CACHE_TTL", |v| values::bounded(v, 0, 365 * 86_400_000))?
            .map_or(Some(crate::process::residency::DEFAULT_TTL), |ms| (ms > 0).then(|| Duration::from_millis(ms)));
        let policy = Policy {
            memory_max,
            compute_max,
            formats,
            extensions,
            allow_processes,
            restrict_processes,
            allow_owners,
            page_size,
        };
        let cfg = ServeConfig {
            host,
            port,
            address,
            gateway_url,
            arweave_url,
            graphql_url,
            graphql_urls,
            checkpoint_graphql_url,
            uploader_url,
            su_router_url,
            su_url,
            io,
            db_path,
            wasm_dir,
            policy,
            fetch_deadline,
            pool,
            checkpoints,
            shutdown_deadline,
            residency_budget,
            residency_ttl,
            live_per_worker,
            prewarm,
            arweave,
        };
        Ok((cfg, inert))
    }
}

/// `ARWEAVE_CHECKPOINT_HYDRATION` and the reference's Arweave checkpoint settings.
fn arweave_settings(src: &values::Sources<'_>) -> Result<Option<ArweaveSettings>, ConfigError> {
    if !src.parse("ARWEAVE_CHECKPOINT_HYDRATION", values::boolean)?.unwrap_or(true) {
        return Ok(None);
    }
    let d = ArweaveSettings::default();
    let window = QUERY_LIMIT as u64;
    Ok(Some(ArweaveSettings {
        trusted_owners: src.parse("PROCESS_CHECKPOINT_TRUSTED_OWNERS", values::list)?.unwrap_or_default(),
        preferred_owners: src.parse("PROCESS_CHECKPOINT_PREFERRED_OWNERS", values::list)?.unwrap_or_default(),
        ignore_ids: src.parse("IGNORE_ARWEAVE_CHECKPOINTS", values::list)?.unwrap_or_default(),
        ignore_processes: src.parse("PROCESS_IGNORE_ARWEAVE_CHECKPOINTS", values::list)?.unwrap_or_default(),
        steps: src
            .parse("CHECKPONT_VALIDATION_STEPS", |v| values::bounded(v, 1, window))?
            .map_or(d.steps, |n| n as usize),
        retries: src
            .parse("CHECKPONT_VALIDATION_RETRIES", |v| values::bounded(v, 0, window))?
            .map_or(d.retries, |n| n as usize),
        thresh: src.parse("CHECKPONT_VALIDATION_THRESH", values::fraction)?.unwrap_or(d.thresh),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn wallet_json() -> String {
        use base64::Engine as _;
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 512]);
        format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB"}}"#)
    }

    fn resolve(args: &ServeArgs, env: &[(&str, &str)]) -> Result<(ServeConfig, Vec<String>), ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ServeConfig::resolve_with(args, &move |n| env.get(n).cloned())
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cu.toml");
        std::fs::write(&file, "port = 7000\nGATEWAY_URL = \"http://gw.local:1984\"\nPROCESS_WASM_SUPPORTED_EXTENSIONS = [\"WeaveDrive\"]\n").unwrap();
        let w = wallet_json();
        let mut args = ServeArgs { config: Some(file), ..ServeArgs::default() };
        let env = [("WALLET", w.as_str()), ("PORT", "7100")];
        assert_eq!(resolve(&args, &[("WALLET", &w)]).unwrap().0.port, 7000, "file");
        assert_eq!(resolve(&args, &env).unwrap().0.port, 7100, "environment over file");
        args.port = Some("7200".into());
        let (cfg, inert) = resolve(&args, &env).unwrap();
        assert_eq!(cfg.port, 7200, "flag over environment");
        assert_eq!(cfg.graphql_url, "http://gw.local:1984/graphql", "GRAPHQL_URL defaults from GATEWAY_URL");
        assert_eq!(cfg.arweave_url, "http://gw.local:1984");
        assert_eq!(cfg.policy.extensions, vec!["WeaveDrive".to_string()]);
        assert!(inert.is_empty());
        let bare = resolve(&ServeArgs::default(), &[("WALLET", &w)]).unwrap().0;
        assert_eq!((bare.port, bare.gateway_url.as_str()), (DEFAULT_PORT, DEFAULT_GATEWAY_URL));
    }

    #[test]
    fn bad_values_are_refused_naming_the_setting_and_where_it_came_from() {
        let w = wallet_json();
        let e = resolve(&ServeArgs::default(), &[("WALLET", &w), ("PORT", "http")]).unwrap_err();
        assert_eq!((e.name.as_str(), e.origin.as_str()), ("PORT", "environment"));
        assert!(e.to_string().starts_with("PORT = \"http\" (environment): expected an integer"), "{e}");
        let args = ServeArgs { process_wasm_supported_formats: Some("wasm128".into()), ..ServeArgs::default() };
        let e = resolve(&args, &[("WALLET", &w)]).unwrap_err();
        assert_eq!(
            (e.name.as_str(), e.origin.as_str()),
            ("PROCESS_WASM_SUPPORTED_FORMATS", "--process-wasm-supported-formats")
        );
        let e = resolve(&ServeArgs::default(), &[]).unwrap_err();
        assert_eq!(e.name, "WALLET", "a wallet is required");
        let e = resolve(&ServeArgs::default(), &[("WALLET", &w), ("UNIT_MODE", "ru")]).unwrap_err();
        assert_eq!(e.name, "UNIT_MODE");
        let e = resolve(&ServeArgs::default(), &[("WALLET", &w), ("DB_URL", "postgres://x/y")]).unwrap_err();
        assert_eq!(e.name, "DB_URL");
        let e = resolve(&ServeArgs::default(), &[("WALLET", &w), ("IO", "kqueue")]).unwrap_err();
        assert_eq!(e.name, "IO");
        for (name, bad) in [
            ("WASM_EVALUATION_MAX_WORKERS", "many"),
            ("WASM_EVALUATION_MAX_WORKERS", "5000"),
            ("WORKER_CPUS", "0,0"),
            ("WORKER_CPUS", "3-1"),
            ("WORKER_CPUS", ""),
            ("WORKER_PIN", "maybe"),
            ("WORKER_QUEUE_DEPTH", "0"),
            ("DISABLE_PROCESS_FILE_CHECKPOINT_CREATION", "perhaps"),
            ("CHECKPOINT_KEEP", "0"),
            ("SHUTDOWN_DEADLINE_MS", "-1"),
        ] {
            let e = resolve(&ServeArgs::default(), &[("WALLET", &w), (name, bad)]).unwrap_err();
            assert_eq!(e.name, name, "{name}={bad:?}: {e}");
        }
    }

    #[test]
    fn pool_and_checkpoint_settings_default_and_parse() {
        let w = wallet_json();
        let (c, _) = resolve(&ServeArgs::default(), &[("WALLET", &w), ("DATA_DIR", "/var/lib/cu")]).unwrap();
        assert_eq!(c.pool, PoolConfig::default());
        let ck = c.checkpoints.expect("file checkpoints are on by default");
        assert_eq!(ck.dir, PathBuf::from("/var/lib/cu/checkpoints"));
        assert_eq!(ck.policy, CheckpointPolicy::default());
        assert_eq!(c.shutdown_deadline, DEFAULT_SHUTDOWN_DEADLINE);
        let (c, _) = resolve(
            &ServeArgs::default(),
            &[
                ("WALLET", &w),
                ("WASM_EVALUATION_MAX_WORKERS", "3"),
                ("WORKER_CPUS", "2-3,0"),
                ("WORKER_PIN", "false"),
                ("CHECKPOINT_EVERY_MESSAGES", "0"),
                ("PROCESS_MEMORY_CACHE_CHECKPOINT_INTERVAL", "60_000"),
                ("PROCESS_MEMORY_FILE_CHECKPOINTS_DIR", "/ck"),
                ("SHUTDOWN_DEADLINE_MS", "5000"),
            ],
        )
        .unwrap();
        assert_eq!(c.pool, PoolConfig { workers: 3, cpus: Some(vec![2, 3, 0]), pin: false, ..PoolConfig::default() });
        let ck = c.checkpoints.unwrap();
        assert_eq!((ck.dir.as_path(), ck.policy.every_messages), (std::path::Path::new("/ck"), None));
        assert_eq!(ck.policy.every, Some(Duration::from_secs(60)));
        assert_eq!(c.shutdown_deadline, Duration::from_secs(5));
        let (c, _) =
            resolve(&ServeArgs::default(), &[("WALLET", &w), ("DISABLE_PROCESS_FILE_CHECKPOINT_CREATION", "true")])
                .unwrap();
        assert!(c.checkpoints.is_none());
    }

    #[test]
    fn arweave_checkpoint_settings_default_and_parse() {
        let w = wallet_json();
        let (c, inert) = resolve(&ServeArgs::default(), &[("WALLET", &w)]).unwrap();
        assert_eq!(c.arweave, Some(ArweaveSettings::default()), "on, trusting the CU's own address");
        assert!(inert.is_empty());
        assert!(c.checkpoints.unwrap().policy.resume);
        let (c, inert) = resolve(
            &ServeArgs::default(),
            &[
                ("WALLET", &w),
                ("PROCESS_CHECKPOINT_TRUSTED_OWNERS", "a, b"),
                ("PROCESS_CHECKPOINT_PREFERRED_OWNERS", "b"),
                ("IGNORE_ARWEAVE_CHECKPOINTS", "x"),
                ("PROCESS_IGNORE_ARWEAVE_CHECKPOINTS", "p1,p2"),
                ("CHECKPONT_VALIDATION_STEPS", "4"),
                ("CHECKPONT_VALIDATION_THRESH", "0.5"),
                ("CHECKPONT_VALIDATION_RETRIES", "0"),
                ("IGNORE_LOCAL_CHECKPOINTS", "true"),
            ],
        )
        .unwrap();
        assert!(inert.is_empty(), "{inert:?}");
        let want = ArweaveSettings {
            trusted_owners: vec!["a".into(), "b".into()],
            preferred_owners: vec!["b".into()],
            ignore_ids: vec!["x".into()],
            ignore_processes: vec!["p1".into(), "p2".into()],
            steps: 4,
            retries: 0,
            thresh: 0.5,
        };
        assert_eq!(c.arweave, Some(want));
        assert!(!c.checkpoints.unwrap().policy.resume, "IGNORE_LOCAL_CHECKPOINTS");
        let (c, _) =
            resolve(&ServeArgs::default(), &[("WALLET", &w), ("ARWEAVE_CHECKPOINT_HYDRATION", "false")]).unwrap();
        assert_eq!(c.arweave, None);
        for (name, bad) in [
            ("ARWEAVE_CHECKPOINT_HYDRATION", "sometimes"),
            ("CHECKPONT_VALIDATION_STEPS", "0"),
            ("CHECKPONT_VALIDATION_STEPS", "51"),
            ("CHECKPONT_VALIDATION_THRESH", "1.5"),
            ("CHECKPONT_VALIDATION_THRESH", "most"),
            ("CHECKPONT_VALIDATION_RETRIES", "-1"),
            ("IGNORE_LOCAL_CHECKPOINTS", "perhaps"),
        ] {
            let e = resolve(&ServeArgs::default(), &[("WALLET", &w), (name, bad)]).unwrap_err();
            assert_eq!(e.name, name, "{name}={bad:?}: {e}");
        }
    }

    #[test]
    fn the_file_refuses_unknown_keys_and_inert_settings_are_reported() {
        let p = std::path::Path::new("cu.toml");
        let e = file::ConfigFile::parse(p, "prot = 1").unwrap_err();
        assert_eq!((e.name.as_str(), e.origin.as_str()), ("prot", "cu.toml"));
        assert!(file::ConfigFile::parse(p, "port = [").is_err());
        assert!(file::ConfigFile::parse(p, "port = 1.5").is_err());
        let w = wallet_json();
        let (_, inert) = resolve(&ServeArgs::default(), &[("WALLET", &w), ("BUSY_THRESHOLD", "10")]).unwrap();
        assert_eq!(inert.len(), 1);
        assert!(inert[0].starts_with("BUSY_THRESHOLD"));
    }
}
