//! The flags of `metalcu serve`: one per setting, named after its environment variable
//! (`PORT` → `--port`, `GATEWAY_URL` → `--gateway-url`). Values are taken as text here and
//! checked in [`super::ServeConfig::resolve`], so a flag, the environment and the file are
//! checked by the same parser and named the same way in errors.

use std::path::PathBuf;

macro_rules! settings {
    ($( $help:literal $field:ident = $name:literal ),* $(,)?) => {
        /// Arguments of `metalcu serve`. Every setting is also read from the environment
        /// variable in brackets and from the `--config` file; a flag wins over the environment,
        /// which wins over the file.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct ServeArgs {
            /// A TOML file of settings (keys are the environment names) [env: METALCU_CONFIG].
            #[arg(long, value_name = "FILE")]
            pub config: Option<PathBuf>,
            $(
                #[doc = $help]
                #[arg(long, value_name = $name, help = concat!($help, " [env: ", $name, "]"))]
                pub $field: Option<String>,
            )*
        }

        /// Every setting's name.
        pub const NAMES: &[&str] = &[$($name),*];

        impl ServeArgs {
            /// `(name, value)` of the settings given as flags.
            pub fn flags(&self) -> Vec<(&'static str, String)> {
                let mut out = Vec::new();
                $(
                    if let Some(v) = &self.$field {
                        out.push(($name, v.clone()));
                    }
                )*
                out
            }
        }
    };
}

settings! {
    "Port of the CU's HTTP API (default 6363)."
    port = "PORT",
    "Address to listen on (default 0.0.0.0)."
    host = "HOST",
    "`cu` (the only mode metalcu runs in; `ru` is refused)."
    unit_mode = "UNIT_MODE",
    "The CU's Arweave wallet as JWK JSON (its address is shown on `GET /`)."
    wallet = "WALLET",
    "Path of the CU's wallet JWK file (instead of WALLET)."
    wallet_file = "WALLET_FILE",
    "Gateway for data and GraphQL unless the next two say otherwise (default https://arweave.net)."
    gateway_url = "GATEWAY_URL",
    "Where `/raw/{id}` data is read (default GATEWAY_URL)."
    arweave_url = "ARWEAVE_URL",
    "GraphQL endpoint for metadata and scheduler locations (default GATEWAY_URL/graphql)."
    graphql_url = "GRAPHQL_URL",
    "Comma-separated GraphQL endpoints rotated on retries of block queries (cron)."
    graphql_urls = "GRAPHQL_URLS",
    "GraphQL endpoint for checkpoint queries (default GRAPHQL_URL)."
    checkpoint_graphql_url = "CHECKPOINT_GRAPHQL_URL",
    "Checkpoint uploads (default https://up.arweave.net; checked, not used yet)."
    uploader_url = "UPLOADER_URL",
    "A router answering `?process-id=` with the process's scheduler address (optional)."
    su_router_url = "SU_ROUTER_URL",
    "Send every process to this one SU instead of locating its scheduler (private networks)."
    su_url = "SU_URL",
    "I/O engine for SU and gateway fetches: uring, epoll or auto (default auto)."
    io = "IO",
    "Directory for the results database when DB_URL is relative (default: current directory)."
    data_dir = "DATA_DIR",
    "Results database: a name (`ao-cache` → `ao-cache.redb`) or a path (default ao-cache)."
    db_url = "DB_URL",
    "Directory of module binaries and compiled modules (default: the OS temp dir)."
    wasm_binary_file_directory = "WASM_BINARY_FILE_DIRECTORY",
    "Largest Memory-Limit a process may declare, in bytes (default 1073741824)."
    process_wasm_memory_max_limit = "PROCESS_WASM_MEMORY_MAX_LIMIT",
    "Largest Compute-Limit a process may declare (default 9_000_000_000_000)."
    process_wasm_compute_max_limit = "PROCESS_WASM_COMPUTE_MAX_LIMIT",
    "Comma-separated Module-Format values accepted (default: all seven)."
    process_wasm_supported_formats = "PROCESS_WASM_SUPPORTED_FORMATS",
    "Comma-separated module Extensions accepted (default none)."
    process_wasm_supported_extensions = "PROCESS_WASM_SUPPORTED_EXTENSIONS",
    "Edges asked per scheduler page (default 1000)."
    load_messages_page_size = "LOAD_MESSAGES_PAGE_SIZE",
    "Comma-separated process ids this CU serves exclusively (default: all)."
    allow_processes = "ALLOW_PROCESSES",
    "Comma-separated process ids this CU refuses."
    restrict_processes = "RESTRICT_PROCESSES",
    "Comma-separated owner addresses whose processes this CU serves exclusively (default: all)."
    allow_owners = "ALLOW_OWNERS",
    "Deadline of one SU or gateway call, retries included, in ms (default 20000)."
    fetch_deadline_ms = "FETCH_DEADLINE_MS",
    "Evaluation worker threads (default 0: one per CPU this process may use)."
    wasm_evaluation_max_workers = "WASM_EVALUATION_MAX_WORKERS",
    "Comma-separated CPUs the workers are pinned to, in order (default: the CPUs this process may use)."
    worker_cpus = "WORKER_CPUS",
    "Pin each worker to its CPU: true or false (default true)."
    worker_pin = "WORKER_PIN",
    "Evaluation jobs queued per worker before requests wait (default 256)."
    worker_queue_depth = "WORKER_QUEUE_DEPTH",
    "Processes kept live (a pooled instance each) per worker; the pool is sized from it (default 32)."
    wasm_instance_cache_max_size = "WASM_INSTANCE_CACHE_MAX_SIZE",
    "At start, load this many of the most recently checkpointed processes live before requests ask (default 0)."
    prewarm_processes = "PREWARM_PROCESSES",
    "Directory of memory checkpoint files (default DATA_DIR/checkpoints)."
    process_memory_file_checkpoints_dir = "PROCESS_MEMORY_FILE_CHECKPOINTS_DIR",
    "`true` turns file checkpoints off (metalcu default: on; the reference's default is off)."
    disable_process_file_checkpoint_creation = "DISABLE_PROCESS_FILE_CHECKPOINT_CREATION",
    "A checkpoint after this many evaluations of a process since its last one (default 1000; 0: not by count)."
    checkpoint_every_messages = "CHECKPOINT_EVERY_MESSAGES",
    "A checkpoint once this many ms passed since a process's last one, if it evaluated since (default 300000; 0: not by time)."
    process_memory_cache_checkpoint_interval = "PROCESS_MEMORY_CACHE_CHECKPOINT_INTERVAL",
    "Checkpoints kept per process (default 2)."
    checkpoint_keep = "CHECKPOINT_KEEP",
    "Resident bytes of process memory kept before least recently used processes are evicted to a checkpoint (default 1073741824)."
    process_memory_cache_max_size = "PROCESS_MEMORY_CACHE_MAX_SIZE",
    "Ms a process may stay idle in memory before it is evicted (default 86400000; 0: no limit)."
    process_memory_cache_ttl = "PROCESS_MEMORY_CACHE_TTL",
    "On SIGTERM: ms for in-flight evaluations and checkpoints before the server exits (default 30000)."
    shutdown_deadline_ms = "SHUTDOWN_DEADLINE_MS",
    "`true` (default): a process new to this CU starts from an Arweave checkpoint of a trusted owner when one is found."
    arweave_checkpoint_hydration = "ARWEAVE_CHECKPOINT_HYDRATION",
    "Comma-separated wallet addresses whose Arweave checkpoints are used (default: this CU's own address)."
    process_checkpoint_trusted_owners = "PROCESS_CHECKPOINT_TRUSTED_OWNERS",
    "Comma-separated owners whose Arweave checkpoints are used instead, when they have any."
    process_checkpoint_preferred_owners = "PROCESS_CHECKPOINT_PREFERRED_OWNERS",
    "Comma-separated Arweave checkpoint ids never used."
    ignore_arweave_checkpoints = "IGNORE_ARWEAVE_CHECKPOINTS",
    "Comma-separated process ids that never start from an Arweave checkpoint."
    process_ignore_arweave_checkpoints = "PROCESS_IGNORE_ARWEAVE_CHECKPOINTS",
    "`true`: processes never resume from their file checkpoints (still written) (default false)."
    ignore_local_checkpoints = "IGNORE_LOCAL_CHECKPOINTS",
    "Arweave checkpoints in a validation window (default 10; with more than STEPS + RETRIES records none is used)."
    checkpont_validation_steps = "CHECKPONT_VALIDATION_STEPS",
    "Share of a validation window's replays that must match, 0 to 1 (default 0.75)."
    checkpont_validation_thresh = "CHECKPONT_VALIDATION_THRESH",
    "Validation windows tried (default 5)."
    checkpont_validation_retries = "CHECKPONT_VALIDATION_RETRIES",
}
