//! `metalcu dev`: a complete CU on one machine — the CU's HTTP API, an embedded local scheduler
//! (with its own HTTP front, where messages are posted) and an in-memory gateway serving the
//! module — all on 127.0.0.1, with a demo process spawned from a module this project writes
//! itself (or from any module given with `--module`/`--format`).
//!
//! State lives in `--data-dir`: the scheduler's log (`su.redb`), the results (`cu.redb`) and the
//! compiled-module cache, so a restart keeps every process, message and result.

use std::path::PathBuf;
use std::sync::Arc;

use crate::checkpoint::{CheckpointPolicy, CheckpointStore};
use crate::engine::{Engine, EngineConfig, ModuleFormat};
use crate::gateway::local::LocalGateway;
use crate::pool::{PoolConfig, WorkerPool};
use crate::process::evaluator::Runtime;
use crate::process::options::Policy;
use crate::service::Service;
use crate::store::RedbStore;
use crate::su::local::{DEV_OWNER, LOCAL_SU_ADDRESS, LocalScheduler, system_clock};
use crate::su::types::Tag;

/// Settings of `metalcu dev`.
#[derive(Debug, Clone)]
pub struct DevConfig {
    pub port: u16,
    pub su_port: u16,
    pub data_dir: PathBuf,
    /// A module to spawn the process from, with its format; `None` = the built-in echo module.
    pub module: Option<(PathBuf, ModuleFormat)>,
    /// Evaluation workers (0: one per CPU), pinned.
    pub workers: usize,
    /// File checkpoints in `data_dir/checkpoints`: written on shutdown and eviction, and read
    /// back when a process is loaded.
    pub checkpoints: bool,
    /// Also a checkpoint after this many evaluations of a process (`None`: not by count).
    pub checkpoint_every: Option<u64>,
    /// Processes kept live per worker (serve's `WASM_INSTANCE_CACHE_MAX_SIZE`).
    pub live_per_worker: usize,
    /// Resident bytes of process memory kept before least recently used processes are evicted
    /// (serve's `PROCESS_MEMORY_CACHE_MAX_SIZE`; `None`: the count cap alone).
    pub memory_budget: Option<u64>,
    /// Time evaluations in flight and checkpoints get when the stack stops.
    pub shutdown_deadline: std::time::Duration,
    /// Processes loaded from their checkpoints at start (serve's `PREWARM_PROCESSES`).
    pub prewarm: usize,
}

impl DevConfig {
    /// Defaults for `data_dir`: ports 0, the echo module, one worker per CPU, checkpoints every
    /// 1000 evaluations.
    pub fn new(data_dir: impl Into<PathBuf>) -> DevConfig {
        DevConfig {
            port: 0,
            su_port: 0,
            data_dir: data_dir.into(),
            module: None,
            workers: 0,
            checkpoints: true,
            checkpoint_every: Some(crate::checkpoint::policy::DEFAULT_EVERY_MESSAGES),
            live_per_worker: crate::process::residency::DEFAULT_LIVE_PER_WORKER,
            memory_budget: None,
            shutdown_deadline: SHUTDOWN_DEADLINE,
            prewarm: 0,
        }
    }
}

/// Time `metalcu dev` gives evaluations in flight and checkpoints when it stops, by default.
pub const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

fn tag(name: &str, value: &str) -> Tag {
    Tag { name: name.into(), value: value.into() }
}

/// A running dev stack.
pub struct Dev {
    /// Where the CU's HTTP API listens.
    pub cu_addr: std::net::SocketAddr,
    /// Where the local scheduler's HTTP API listens.
    pub su_addr: std::net::SocketAddr,
    /// The demo process.
    pub pid: String,
    pub module_id: String,
    pub module_name: String,
    pub format: ModuleFormat,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: Runtime<LocalScheduler, LocalGateway>,
    shutdown_deadline: std::time::Duration,
}

impl Dev {
    /// Stops both servers (in-flight requests finish first), waits for them, then lets the
    /// evaluations in flight finish and checkpoints every process that evaluated since its last
    /// checkpoint (within [`DevConfig::shutdown_deadline`]).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await??;
        }
        let report = self.runtime.shutdown(self.shutdown_deadline).await;
        tracing::info!(?report, "metalcu dev stopped");
        Ok(())
    }

    /// The runtime (its pool, residency, shutdown).
    pub fn runtime(&self) -> &Runtime<LocalScheduler, LocalGateway> {
        &self.runtime
    }
}

/// Starts the CU, the local scheduler and the gateway, spawning the demo process on first start.
pub async fn start(cfg: DevConfig) -> anyhow::Result<Dev> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| anyhow::anyhow!("{}: {e}", cfg.data_dir.display()))?;
    let su = Arc::new(LocalScheduler::open(cfg.data_dir.join("su.redb"), system_clock())?);
    let store = Arc::new(RedbStore::open(cfg.data_dir.join("cu.redb"))?);
    let gateway = Arc::new(LocalGateway::default());
    let (wasm, format, name) = match &cfg.module {
        Some((path, format)) => {
            let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
            (bytes, *format, path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
        }
        None => (wat::parse_str(echo_module_wat("", "", ""))?, ModuleFormat::Emscripten4, "echo".to_string()),
    };
    let module_tags = vec![
        tag("Data-Protocol", "ao"),
        tag("Variant", "ao.TN.1"),
        tag("Type", "Module"),
        tag("Module-Format", format.name()),
        tag("Input-Encoding", "JSON-1"),
        tag("Output-Encoding", "JSON-1"),
        tag("Memory-Limit", "1-gb"),
        tag("Compute-Limit", "9000000000000"),
    ];
    let module_id = gateway.register(DEV_OWNER, module_tags, wasm)?;
    // One demo process per module, remembered across restarts.
    let pid_file = cfg.data_dir.join(format!("process-{module_id}"));
    let pid = match std::fs::read_to_string(&pid_file) {
        Ok(pid) if su.has_process(pid.trim())? => pid.trim().to_string(),
        _ => {
            let tags = vec![
                tag("Data-Protocol", "ao"),
                tag("Variant", "ao.TN.1"),
                tag("Type", "Process"),
                tag("Module", &module_id),
                tag("Scheduler", LOCAL_SU_ADDRESS),
                tag("Name", &name),
            ];
            let posted = su.spawn(DEV_OWNER, tags, String::new())?;
            std::fs::write(&pid_file, &posted.process_id)?;
            posted.process_id
        }
    };
    let pool = WorkerPool::new(&PoolConfig { workers: cfg.workers, ..PoolConfig::default() })?;
    let engine_cfg = EngineConfig {
        cache_dir: Some(cfg.data_dir.join("cache")),
        pool_slots: crate::serve::instance_slots(cfg.live_per_worker, pool.workers())?,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(engine_cfg)?);
    // The local scheduler is called in-process: no SU fetch is recorded.
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let mut runtime = Runtime::new(engine, store, su.clone(), gateway, Policy::default())
        .with_metrics(metrics)
        .with_residency(cfg.memory_budget.unwrap_or(u64::MAX), None)
        .with_pool(pool);
    if cfg.checkpoints {
        let dir = cfg.data_dir.join("checkpoints");
        let files = CheckpointStore::open(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        let policy = CheckpointPolicy { every_messages: cfg.checkpoint_every, ..CheckpointPolicy::default() };
        runtime = runtime.with_checkpoints(Arc::new(files), policy);
    }
    if cfg.prewarm > 0 {
        let (runtime, n) = (runtime.clone(), cfg.prewarm);
        tokio::spawn(async move { runtime.prewarm(n).await });
    }
    let service = Arc::new(Service { runtime: runtime.clone(), address: "metalcu-dev".into() });
    let cu_listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port)).await?;
    let su_listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.su_port)).await?;
    let (cu_addr, su_addr) = (cu_listener.local_addr()?, su_listener.local_addr()?);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let tasks = vec![
        tokio::spawn(crate::http::serve(cu_listener, service, wait(rx.clone()))),
        tokio::spawn(crate::su::local_http::serve(su_listener, su, wait(rx))),
    ];
    let shutdown_deadline = cfg.shutdown_deadline;
    Ok(Dev { cu_addr, su_addr, pid, module_id, module_name: name, format, stop: tx, tasks, runtime, shutdown_deadline })
}

/// Runs until `shutdown` resolves, printing where everything is and how to use it.
pub async fn run(
    cfg: DevConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data = cfg.data_dir.display().to_string();
    let d = start(cfg).await?;
    let (cu, su, pid) = (d.cu_addr, d.su_addr, d.pid.clone());
    println!("metalcu dev: CU http://{cu}  scheduler http://{su}  data {data}");
    println!("process {pid} ({}, {}, module {})", d.module_name, d.format, d.module_id);
    println!("post a message:  curl -s -X POST http://{su}/ -H 'content-type: application/json' \\");
    println!(
        "                   -d '{{\"process\":\"{pid}\",\"tags\":[{{\"name\":\"Action\",\"value\":\"Eval\"}}],\"data\":\"1 + 1\"}}'"
    );
    println!("read its result: curl -s 'http://{cu}/result/<id>?process-id={pid}'");
    println!("all results:     curl -s http://{cu}/results/{pid}");
    shutdown.await;
    d.stop().await
}

/// A tiny module with the format-4 calling convention: `handle(msg, env)` answers
/// `{"ok":true,"response":{"Output":<msg>}}`, then runs `extra` (WAT instructions) first.
/// `imports` and `items` are spliced into the module as given.
pub fn echo_module_wat(imports: &str, items: &str, extra: &str) -> String {
    let prefix = r#"{"ok":true,"response":{"Output":"#;
    let escaped = prefix.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 2 16384)
  (global $sp (mut i32) (i32.const 65536))
  (func (export "emscripten_stack_get_current") (result i32) global.get $sp)
  (func (export "_emscripten_stack_restore") (param i32) local.get 0 global.set $sp)
  (func (export "_emscripten_stack_alloc") (param i32) (result i32)
    global.get $sp local.get 0 i32.sub i32.const -16 i32.and global.set $sp global.get $sp)
  (data (i32.const 70000) "{escaped}")
  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $done (loop $l
      (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $l)))
    local.get $n)
  (func $copy (param $dst i32) (param $src i32) (param $n i32) (local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i)) (i32.load8_u (i32.add (local.get $src) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))))
  {items}
  (func (export "handle") (param $msg i32) (param $env i32) (result i32) (local $len i32)
    {extra}
    (call $copy (i32.const 80000) (i32.const 70000) (i32.const {plen}))
    (local.set $len (call $strlen (local.get $msg)))
    (call $copy (i32.const {body}) (local.get $msg) (local.get $len))
    (i32.store8 (i32.add (i32.const {body}) (local.get $len)) (i32.const 125))
    (i32.store8 (i32.add (i32.const {body1}) (local.get $len)) (i32.const 125))
    (i32.store8 (i32.add (i32.const {body2}) (local.get $len)) (i32.const 0))
    i32.const 80000))
"#,
        plen = prefix.len(),
        body = 80000 + prefix.len(),
        body1 = 80000 + prefix.len() + 1,
        body2 = 80000 + prefix.len() + 2,
    )
}
