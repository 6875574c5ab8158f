//! The wasm engine: compiles each ao module once, instantiates processes from a pool, and runs
//! the `handle(msg, env)` protocol of the reference host byte for byte.
//!
//! Data flow: [`Engine::load`] (module bytes + `Module-Format` → metering instrumentation if the
//! format asks for it → wasmtime compile, or a verified on-disk artefact) → [`Engine::instantiate`]
//! (a pooled instance, start-up as the format's glue runs it) → [`Instance::handle`] per message.
//!
//! Invariants:
//! - linear memory is bounded per process ([`ProcessOptions::memory_limit`]) and by the pool slot
//!   ([`EngineConfig::max_memory_bytes`]); tables by [`EngineConfig::max_table_elements`];
//! - a call never runs past [`EngineConfig::deadline`] (epoch interruption);
//! - the instance keeps its memory between calls; a copy is made only by [`Instance::memory_image`].

pub mod cache;
pub mod dirty;
pub mod format;
pub mod gasinline;
pub mod host;
mod instance;
pub mod jsjson;
pub mod metering;
pub mod resident;
pub mod weavedrive;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use format::{Dialect, ModuleFormat, UnknownFormat};
pub use instance::{Accounting, HandleOutcome, Instance, ProcessOptions};

/// Interval of the epoch ticker that enforces deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Largest module binary accepted.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;
/// Largest wasm stack of a call (about V8's; frame sizes differ, so exact depths do not match).
pub const MAX_WASM_STACK: usize = 1024 * 1024;

/// Engine-wide settings. Every limit is explicit.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Size of one pool slot: the most linear memory any process may have (bytes).
    pub max_memory_bytes: u64,
    /// Number of instances the pool holds at once.
    pub pool_slots: u32,
    /// Largest table (elements) a module may declare or grow to.
    pub max_table_elements: u32,
    /// Wall-clock budget of one call (start-up or `handle`).
    pub deadline: Duration,
    /// Where compiled modules are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_memory_bytes: 1 << 30,
            pool_slots: 64,
            max_table_elements: 100_000,
            deadline: Duration::from_secs(120),
            cache_dir: None,
        }
    }
}

/// Errors of loading and running modules.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    UnknownFormat(#[from] UnknownFormat),
    #[error("invalid module: {0}")]
    InvalidModule(String),
    #[error("module is {0} bytes; the limit is {MAX_MODULE_BYTES}")]
    ModuleTooLarge(usize),
    #[error("cannot link module: {0}")]
    Link(String),
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    #[error("start-up failed: {0}")]
    Startup(String),
    #[error("invalid memory image: {0}")]
    BadImage(String),
    #[error("metering instrumentation failed: {0}")]
    Metering(String),
    #[error("module cache: {0}")]
    Cache(String),
}

/// A compiled module, ready to instantiate.
pub struct LoadedModule {
    pub(crate) pre: wasmtime::InstancePre<host::HostState>,
    /// Byte ranges the module's active data segments initialise (`None` if an offset is not a
    /// constant): the only non-zero memory of a fresh instance before start-up.
    pub(crate) data_ranges: Option<Vec<std::ops::Range<u64>>>,
    /// Mutable globals the compiled module defines (its own, plus the inline gas counters).
    pub(crate) mutable_globals: usize,
    /// What start-up leaves behind, captured once (see `Instance::from_image`).
    pub(crate) template: std::sync::OnceLock<Option<instance::Template>>,
    /// The format the module runs under.
    pub format: ModuleFormat,
    /// blake3 of the module bytes as given.
    pub hash: blake3::Hash,
}

/// A loaded module's identity: blake3 of its bytes, and the format it runs under.
type ModuleKey = (blake3::Hash, ModuleFormat);

/// The engine: one per server. Cheap to share (`Arc`).
pub struct Engine {
    pub(crate) engine: wasmtime::Engine,
    pub(crate) config: EngineConfig,
    modules: Mutex<HashMap<ModuleKey, Arc<LoadedModule>>>,
    /// One lock per module being loaded: concurrent loads of one module compile it once (the
    /// others wait and take the result), never once each.
    loading: Mutex<HashMap<ModuleKey, Arc<Mutex<()>>>>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Engine {
    /// Builds the wasmtime engine with a pooling allocator sized from `config`.
    pub fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_memories(config.pool_slots)
            .total_tables(config.pool_slots)
            .total_core_instances(config.pool_slots)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(config.max_memory_bytes as usize)
            .table_elements(config.max_table_elements as usize);
        let mut c = wasmtime::Config::new();
        c.wasm_memory64(true)
            .wasm_bulk_memory(true)
            .wasm_multi_value(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .memory_reservation(config.max_memory_bytes)
            .memory_guard_size(64 * 1024)
            .memory_reservation_for_growth(0)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool))
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = wasmtime::Engine::new(&c).map_err(|e| EngineError::Instantiate(format!("{e:#}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let (engine, stop) = (engine.weak(), ticker_stop.clone());
            std::thread::Builder::new()
                .name("metalcu-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(e) => e.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .map_err(|e| EngineError::Instantiate(format!("epoch thread: {e}")))?;
        }
        Ok(Engine {
            engine,
            config,
            modules: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            ticker_stop,
        })
    }

    /// The configuration the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Loads `wasm` for `format`: from the in-process cache, the disk cache, or by compiling.
    pub fn load(&self, wasm: &[u8], format: ModuleFormat) -> Result<Arc<LoadedModule>, EngineError> {
        if wasm.len() > MAX_MODULE_BYTES {
            return Err(EngineError::ModuleTooLarge(wasm.len()));
        }
        let hash = blake3::hash(wasm);
        let key = (hash, format);
        if let Some(m) = self.modules.lock().expect("module map").get(&key) {
            return Ok(m.clone());
        }
        let turn = self.loading.lock().expect("loading map").entry(key).or_default().clone();
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = self.modules.lock().expect("module map").get(&key) {
            return Ok(m.clone());
        }
        let loaded = self.load_uncached(wasm, hash, format);
        self.loading.lock().expect("loading map").remove(&key);
        loaded
    }

    fn load_uncached(
        &self,
        wasm: &[u8],
        hash: blake3::Hash,
        format: ModuleFormat,
    ) -> Result<Arc<LoadedModule>, EngineError> {
        let module = cache::compile_cached(self, wasm, hash, format)?;
        let mut linker = wasmtime::Linker::new(&self.engine);
        host::define_imports(&mut linker, &module, format.dialect())
            .map_err(|e| EngineError::Link(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| EngineError::Link(format!("{e:#}")))?;
        let inline_gas = module.exports().any(|e| e.name() == gasinline::GAS_USED_EXPORT);
        let (own_globals, data_ranges) = module_facts(wasm);
        let mutable_globals = own_globals + if inline_gas { 2 } else { 0 };
        let loaded = Arc::new(LoadedModule {
            pre,
            data_ranges,
            mutable_globals,
            template: std::sync::OnceLock::new(),
            format,
            hash,
        });
        self.modules.lock().expect("module map").insert((hash, format), loaded.clone());
        Ok(loaded)
    }

    /// A new process instance of `module`, started up as the format's glue does.
    pub fn instantiate(&self, module: &Arc<LoadedModule>, opts: ProcessOptions) -> Result<Instance, EngineError> {
        Instance::new(self, module.clone(), opts)
    }

    /// A process resumed from a memory image: the same state as [`Engine::instantiate`] followed
    /// by [`Instance::restore`], without re-running the module's start-up when the module's
    /// post-start-up state (globals, host state) has been captured.
    pub fn instantiate_image(
        &self,
        module: &Arc<LoadedModule>,
        opts: ProcessOptions,
        image: &[u8],
    ) -> Result<Instance, EngineError> {
        Instance::from_image(self, module.clone(), opts, image)
    }
}

/// What resuming from an image needs to know of `wasm`, in one pass over its sections: the
/// mutable globals it defines (not imports), and the byte ranges of linear memory its active data
/// segments initialise (`None` when a segment's offset is not a constant, or the bytes do not
/// parse; the count then covers the sections read before the error).
fn module_facts(wasm: &[u8]) -> (usize, Option<Vec<std::ops::Range<u64>>>) {
    let mut globals = 0;
    let mut ranges = Some(Vec::new());
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::GlobalSection(r)) => {
                globals += r.into_iter().filter_map(Result::ok).filter(|g| g.ty.mutable).count();
            }
            Ok(wasmparser::Payload::DataSection(r)) => {
                for d in r {
                    let Some(range) = d.ok().and_then(|d| data_range(&d)) else {
                        ranges = None;
                        break;
                    };
                    if let (Some(out), Some(range)) = (ranges.as_mut(), range) {
                        out.push(range);
                    }
                }
            }
            Ok(_) => {}
            Err(_) => return (globals, None),
        }
    }
    (globals, ranges)
}

/// The memory range an active data segment initialises (`Some(None)` for a passive one), or
/// `None` when its offset is not a constant.
fn data_range(d: &wasmparser::Data<'_>) -> Option<Option<std::ops::Range<u64>>> {
    let wasmparser::DataKind::Active { offset_expr, .. } = &d.kind else { return Some(None) };
    let start = match offset_expr.get_operators_reader().read().ok()? {
        wasmparser::Operator::I32Const { value } => value as u32 as u64,
        wasmparser::Operator::I64Const { value } => value as u64,
        _ => return None,
    };
    Some(Some(start..start + d.data.len() as u64))
}
