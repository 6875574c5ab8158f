//! `metalcu serve`: the CU for the real network. Wires the checked [`ServeConfig`] into the
//! parts: one network transport (io_uring or epoll, `IO`) shared by the gateway client (module
//! binaries cached on disk and verified) and the scheduler router (each process's SU located
//! through the gateway, §2.1), the redb results store, the engine, and the HTTP API.
//!
//! Start-up order: every setting is checked first; then the transport, the store (opened before
//! the port is bound, so a locked or corrupt database fails the start), the engine, the port. The
//! server stops on SIGINT or SIGTERM, letting in-flight requests finish.
//!
//! Under systemd (`Type=notify`, see `systemd/`), [`crate::notify`] reports each start-up step as
//! `STATUS=`, `READY=1` once the store is open and the port bound, watchdog pings while the
//! runtime answers, and `STOPPING=1` on shutdown; the calls are the `notify::` lines below.

use std::sync::Arc;

use crate::checkpoint::CheckpointStore;
use crate::config::ServeConfig;
use crate::engine::{Engine, EngineConfig};
use crate::gateway::cache::{CachedGateway, DiskCacheConfig};
use crate::gateway::http::{HttpGateway, HttpGatewayConfig};
use crate::http::ServerConfig;
use crate::net::fetch::ClientConfig;
use crate::net::{AnyTransport, Transport};
use crate::notify;
use crate::pool::WorkerPool;
use crate::process::evaluator::Runtime;
use crate::service::Service;
use crate::store::RedbStore;
use crate::su::router::{RoutedScheduler, RouterConfig};

/// Connection attempts to SUs and gateways give up after this long.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A worker job running this long past the engine's call deadline is taken as wedged.
pub const WEDGED_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the CU until `shutdown` resolves.
pub async fn run(
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    notify::status("starting: network transport");
    let transport = Arc::new(AnyTransport::new(cfg.io, CONNECT_TIMEOUT).map_err(|e| anyhow::anyhow!("IO: {e}"))?);
    tracing::info!(transport = transport.name(), "network transport");
    let client = ClientConfig { max_total: cfg.fetch_deadline, ..ClientConfig::default() };
    let gw_cfg = HttpGatewayConfig {
        arweave_url: cfg.arweave_url.clone(),
        graphql_url: cfg.graphql_url.clone(),
        graphql_urls: cfg.graphql_urls.clone(),
        checkpoint_graphql_url: cfg.checkpoint_graphql_url.clone(),
        ..HttpGatewayConfig::from_urls(Some(&cfg.gateway_url), None, None, None).map_err(anyhow::Error::msg)?
    };
    let gw_cfg =
        HttpGatewayConfig { client: ClientConfig { max_total: cfg.fetch_deadline, ..gw_cfg.client }, ..gw_cfg };
    let http_gateway = HttpGateway::with_transport(gw_cfg, transport.clone())?;
    std::fs::create_dir_all(&cfg.wasm_dir)
        .map_err(|e| anyhow::anyhow!("WASM_BINARY_FILE_DIRECTORY {}: {e}", cfg.wasm_dir.display()))?;
    let gateway = Arc::new(
        CachedGateway::new(http_gateway, DiskCacheConfig::new(cfg.wasm_dir.join("modules")))
            .map_err(|e| anyhow::anyhow!("WASM_BINARY_FILE_DIRECTORY {}: {e}", cfg.wasm_dir.display()))?,
    );
    let router_cfg = RouterConfig {
        su_url: cfg.su_url.clone(),
        router_url: cfg.su_router_url.clone(),
        client,
        ..RouterConfig::default()
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let su = Arc::new(RoutedScheduler::with_metrics(gateway.clone(), transport.clone(), router_cfg, metrics.clone())?);
    if let Some(dir) = cfg.db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("DB_URL {}: {e}", dir.display()))?;
    }
    notify::status(&format!("starting: opening the results store {}", cfg.db_path.display()));
    let store =
        Arc::new(RedbStore::open(&cfg.db_path).map_err(|e| anyhow::anyhow!("DB_URL {}: {e}", cfg.db_path.display()))?);
    notify::status("starting: worker pool");
    let pool =
        WorkerPool::new(&cfg.pool).map_err(|e| anyhow::anyhow!("WASM_EVALUATION_MAX_WORKERS / WORKER_CPUS: {e}"))?;
    let engine_cfg = EngineConfig {
        max_memory_bytes: cfg.policy.memory_max,
        pool_slots: instance_slots(cfg.live_per_worker, pool.workers())?,
        cache_dir: Some(cfg.wasm_dir.join("compiled")),
        ..EngineConfig::default()
    };
    tracing::info!(workers = pool.workers(), instance_slots = engine_cfg.pool_slots, "evaluation worker pool");
    notify::status("starting: engine");
    let engine = Arc::new(Engine::new(engine_cfg).map_err(|e| {
        anyhow::anyhow!("instance pool (WASM_INSTANCE_CACHE_MAX_SIZE × PROCESS_WASM_MEMORY_MAX_LIMIT): {e}")
    })?);
    let engine_deadline = engine.config().deadline;
    let mut runtime = Runtime::new(engine, store, su, gateway, cfg.policy.clone())
        .with_metrics(metrics)
        .with_pool(pool)
        .with_residency(cfg.residency_budget, cfg.residency_ttl);
    if let Some(ck) = &cfg.checkpoints {
        let files = CheckpointStore::open(&ck.dir)
            .map_err(|e| anyhow::anyhow!("PROCESS_MEMORY_FILE_CHECKPOINTS_DIR {}: {e}", ck.dir.display()))?;
        runtime = runtime.with_checkpoints(Arc::new(files), ck.policy.clone());
    }
    if let Some(arweave) = &cfg.arweave {
        runtime = runtime.with_arweave_checkpoints(arweave.clone(), &cfg.address);
    }
    let service = Arc::new(Service { runtime: runtime.clone(), address: cfg.address.clone() });
    let listener = tokio::net::TcpListener::bind((cfg.host, cfg.port))
        .await
        .map_err(|e| anyhow::anyhow!("PORT {}: cannot listen on {}: {e}", cfg.port, cfg.host))?;
    let addr = listener.local_addr()?;
    println!(
        "metalcu serve: CU http://{addr}  wallet {}  gateway {}  results {}",
        cfg.address,
        cfg.gateway_url,
        cfg.db_path.display()
    );
    notify::ready(&format!("serving http://{addr} (transport {})", transport.name()));
    if cfg.prewarm > 0 {
        let (runtime, n) = (runtime.clone(), cfg.prewarm);
        tokio::spawn(async move { runtime.prewarm(n).await });
    }
    // A worker still on one job well past the engine's call deadline is wedged (the epoch
    // interruption did not stop it): stop pinging so systemd restarts the CU.
    let (pool, wedged_after) = (runtime.pool().clone(), engine_deadline + WEDGED_MARGIN);
    let watchdog = notify::spawn_watchdog(move || pool.longest_job().is_none_or(|d| d <= wedged_after));
    let shutdown = async move {
        shutdown.await;
        notify::stopping();
    };
    let served = crate::http::serve_with(listener, service, shutdown, ServerConfig::default()).await;
    notify::status("stopping: evaluations in flight finish, then checkpoints");
    let report = runtime.shutdown(cfg.shutdown_deadline).await;
    tracing::info!(?report, "evaluations drained and checkpoints written");
    if let Some(w) = watchdog {
        w.abort();
    }
    served?;
    Ok(())
}

/// The engine's instance slots for `per_worker` live processes on each of `workers` workers,
/// refused when this host's `vm.max_map_count` cannot hold them.
pub fn instance_slots(per_worker: usize, workers: usize) -> anyhow::Result<u32> {
    let slots = crate::process::residency::pool_slots_for(per_worker, workers);
    crate::doctor::check_pool_fits(slots as u64, workers).map_err(|e| anyhow::anyhow!(e))?;
    Ok(slots as u32)
}

/// Resolves once SIGINT or SIGTERM arrives.
pub async fn signalled() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down: in-flight requests finish first");
}
