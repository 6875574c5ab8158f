//! One process instance: start-up as the format's glue runs it, then `handle(msg, env)` calls.
//!
//! The call protocol (ao-loader `index.cjs` + the glue's `ccall`): refill the gas tank, save the
//! stack, allocate each argument string on the wasm stack (formats 1/2: `4 × UTF-16 length + 1`
//! bytes; formats 4/wasm64: `UTF-8 length + 1`), call `handle`, serve any asyncify suspension,
//! decode the returned C string, restore the stack, parse `{ok, response}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use wasmtime::{Func, Store, Val};

use super::format::Dialect;
use super::host::{AsyncState, DEFAULT_GAS_LIMIT, GlueExports, HostState, HostTrap, Limits, PendingAsync};
use super::jsjson;
use super::weavedrive::WeaveDrive;
use super::{Engine, EngineError, LoadedModule};

/// Stack cookie words the glue writes at the stack end (`writeStackCookie`).
const COOKIE1: u32 = 0x0213_5467;
const COOKIE2: u32 = 0x89BA_CDFE;
const COOKIE0: u32 = 0x6373_6d65;
/// Longest result string accepted from `handle`.
pub const MAX_RESULT_BYTES: usize = 256 * 1024 * 1024;
/// Most asyncify suspensions one call may make.
pub const MAX_ASYNC_SUSPENSIONS: u32 = 100_000;

/// Per-process settings.
#[derive(Clone)]
pub struct ProcessOptions {
    /// Linear memory may not grow past this (bytes); capped by the engine's slot size.
    pub memory_limit: u64,
    /// Gas limit of one call (`Compute-Limit`).
    pub compute_limit: u64,
    /// Arweave data for WeaveDrive formats.
    pub weavedrive: Option<Arc<dyn WeaveDrive>>,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions { memory_limit: 1 << 30, compute_limit: DEFAULT_GAS_LIMIT, weavedrive: None }
    }
}

/// What one call cost; the server bills on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounting {
    pub gas: u64,
    pub wall: Duration,
    pub cpu: Duration,
    pub memory_bytes: u64,
}

/// The outcome of `handle`.
#[derive(Debug, Clone)]
pub struct HandleOutcome {
    /// The result fields (without `Memory`), in the reference's order, or the text it threw.
    pub result: Result<Map<String, Value>, String>,
    pub accounting: Accounting,
}

impl HandleOutcome {
    /// True when the CU must roll the memory back (thrown, or a result with `Error` set).
    pub fn failed(&self) -> bool {
        match &self.result {
            Err(_) => true,
            Ok(m) => matches!(m.get("Error"), Some(v) if !v.is_null() && v != &Value::String(String::new())),
        }
    }
}

/// The state a module's start-up leaves behind, captured once per module so that a process can
/// be resumed from an image without re-running start-up: every mutable global (exported by the
/// `export_mutable_globals` rewrite), the memory size, the host state, and the gas start-up used.
pub(crate) struct Template {
    globals: Vec<(String, Val)>,
    memory_len: u64,
    host: super::host::HostSnapshot,
    startup_gas: u64,
}

/// Granularity of the sparse copy in [`Instance::restore`].
const PAGE: usize = 4096;

fn is_zero(b: &[u8]) -> bool {
    let (words, tail) = b.split_at(b.len() / 16 * 16);
    words.chunks_exact(16).all(|w| u128::from_ne_bytes(w.try_into().expect("16 bytes")) == 0)
        && tail.iter().all(|x| *x == 0)
}

/// A live process.
pub struct Instance {
    /// Declared before `store` so that it is dropped first: its kernel write tracking of the
    /// memory ends before the memory goes back to the pool.
    hasher: super::dirty::StateHasher,
    store: Store<HostState>,
    instance: wasmtime::Instance,
    /// True when this instance skipped start-up and took the module's template state.
    from_template: bool,
    handle: Func,
    dialect: Dialect,
    deadline_ticks: u64,
    module: Arc<LoadedModule>,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to the valid pointer given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Text of an error that stopped a call, as the reference's `e.message` would read.
pub fn error_text(e: &wasmtime::Error) -> String {
    if let Some(t) = e.downcast_ref::<HostTrap>() {
        return t.to_string();
    }
    if let Some(code) = e.downcast_ref::<wasmtime::Trap>() {
        use wasmtime::Trap::*;
        return match code {
            Interrupt => "evaluation deadline exceeded".into(),
            StackOverflow => "Maximum call stack size exceeded".into(),
            MemoryOutOfBounds | HeapMisaligned => "memory access out of bounds".into(),
            TableOutOfBounds => "table index is out of bounds".into(),
            IndirectCallToNull => "null function or function signature mismatch".into(),
            BadSignature => "null function or function signature mismatch".into(),
            IntegerOverflow => "divide result unrepresentable".into(),
            IntegerDivisionByZero => "divide by zero".into(),
            BadConversionToInteger => "float unrepresentable in integer range".into(),
            UnreachableCodeReached => "unreachable".into(),
            other => other.to_string(),
        };
    }
    format!("{e:#}")
}

impl Instance {
    pub(crate) fn new(engine: &Engine, module: Arc<LoadedModule>, opts: ProcessOptions) -> Result<Self, EngineError> {
        Self::create(engine, module, opts, true)
    }

    /// See [`Engine::instantiate_image`].
    pub(crate) fn from_image(
        engine: &Engine,
        module: Arc<LoadedModule>,
        opts: ProcessOptions,
        image: &[u8],
    ) -> Result<Self, EngineError> {
        let template = match module.template.get() {
            Some(t) => t.as_ref(),
            None => {
                // A failed start-up (e.g. the pool is full right now) is not cached; a module
                // whose state cannot be captured is (`Some(None)`), and always restores slowly.
                match Self::capture_template(engine, &module) {
                    Ok(t) => module.template.get_or_init(|| t).as_ref(),
                    Err(()) => None,
                }
            }
        };
        let usable = template.filter(|t| {
            opts.compute_limit >= t.startup_gas
                && (image.len() as u64) >= t.memory_len
                && t.memory_len <= opts.memory_limit.min(engine.config.max_memory_bytes)
        });
        let Some(t) = usable else {
            let mut inst = Self::new(engine, module, opts)?;
            inst.restore(image)?;
            return Ok(inst);
        };
        let mut inst = Self::create(engine, module.clone(), opts, false)?;
        inst.apply_template(t).map_err(|e| EngineError::Instantiate(error_text(&e)))?;
        // Start-up did not run: only the module's data segments can be non-zero.
        inst.restore_known(image, module.data_ranges.as_deref())?;
        Ok(inst)
    }

    /// Starts one instance normally and records what start-up left behind: `Ok(None)` when the
    /// module's state cannot be captured completely (globals not all exported, or a mutable
    /// reference-typed global), `Err` when no instance could be started now.
    fn capture_template(engine: &Engine, module: &Arc<LoadedModule>) -> Result<Option<Template>, ()> {
        let mut inst = Self::new(engine, module.clone(), ProcessOptions::default()).map_err(|_| ())?;
        Ok(Self::template_of(&mut inst, module))
    }

    fn template_of(inst: &mut Instance, module: &Arc<LoadedModule>) -> Option<Template> {
        let startup_gas = inst.gas_used();
        let names: Vec<String> = module
            .pre
            .module()
            .exports()
            .filter(|e| e.name().starts_with(super::gasinline::GLOBAL_EXPORT_PREFIX))
            .map(|e| e.name().to_string())
            .collect();
        if names.len() != module.mutable_globals {
            return None; // the rewrite did not apply: some global state would stay behind
        }
        let mut globals = Vec::with_capacity(names.len());
        for n in names {
            let g = inst.instance.get_global(&mut inst.store, &n)?;
            let v = g.get(&mut inst.store);
            if !matches!(v, Val::I32(_) | Val::I64(_) | Val::F32(_) | Val::F64(_) | Val::V128(_)) {
                return None;
            }
            globals.push((n, v));
        }
        Some(Template { globals, memory_len: inst.memory_len(), host: inst.store.data().snapshot(), startup_gas })
    }

    fn apply_template(&mut self, t: &Template) -> wasmtime::Result<()> {
        for (name, v) in &t.globals {
            let g = self
                .instance
                .get_global(&mut self.store, name)
                .ok_or_else(|| wasmtime::format_err!("no global {name}"))?;
            g.set(&mut self.store, *v)?;
        }
        self.store.data_mut().restore_snapshot(&t.host);
        let mem = self.mem();
        let cur = self.memory_len();
        if cur < t.memory_len {
            mem.grow(&mut self.store, (t.memory_len - cur).div_ceil(65536))?;
        }
        Ok(())
    }

    fn create(
        engine: &Engine,
        module: Arc<LoadedModule>,
        opts: ProcessOptions,
        start_up: bool,
    ) -> Result<Self, EngineError> {
        let format = module.format;
        let limits = Limits {
            memory_bytes: opts.memory_limit.min(engine.config.max_memory_bytes),
            table_elements: engine.config.max_table_elements as usize,
        };
        let state = HostState::new(format, opts.compute_limit, limits, opts.weavedrive.clone());
        let mut store = Store::new(&engine.engine, state);
        store.limiter(|s| &mut s.limits);
        let deadline_ticks = (engine.config.deadline.as_millis() / super::EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(deadline_ticks);
        store.epoch_deadline_trap();
        let inst = module.pre.instantiate(&mut store).map_err(|e| EngineError::Instantiate(error_text(&e)))?;
        let dialect = format.dialect();
        let get =
            |store: &mut Store<HostState>, names: &[&str]| names.iter().find_map(|n| inst.get_func(&mut *store, n));
        let e1 = dialect == Dialect::E1;
        let exports = GlueExports {
            memory: inst.get_memory(&mut store, if e1 { "E" } else { "memory" }),
            table: inst.get_table(&mut store, if e1 { "I" } else { "__indirect_function_table" }),
            malloc: get(&mut store, if e1 { &["J"] } else { &["malloc"] }),
            free: get(&mut store, &["free"]),
            stack_save: get(&mut store, if e1 { &["M"] } else { &["stackSave", "emscripten_stack_get_current"] }),
            stack_restore: get(&mut store, if e1 { &["N"] } else { &["stackRestore", "_emscripten_stack_restore"] }),
            stack_alloc: get(&mut store, if e1 { &["O"] } else { &["stackAlloc", "_emscripten_stack_alloc"] }),
            set_threw: get(&mut store, if e1 { &["L"] } else { &["setThrew"] }),
            errno_location: get(&mut store, if e1 { &["K"] } else { &["__errno_location"] }),
            asyncify_start_unwind: get(&mut store, &["asyncify_start_unwind"]),
            asyncify_stop_unwind: get(&mut store, &["asyncify_stop_unwind"]),
            asyncify_start_rewind: get(&mut store, &["asyncify_start_rewind"]),
            asyncify_stop_rewind: get(&mut store, &["asyncify_stop_rewind"]),
            gas_used: inst.get_global(&mut store, super::gasinline::GAS_USED_EXPORT),
            gas_limit: inst.get_global(&mut store, super::gasinline::GAS_LIMIT_EXPORT),
        };
        let missing = |what: &str| EngineError::Link(format!("module does not export {what}"));
        if exports.memory.is_none() {
            return Err(missing("its memory"));
        }
        for (f, n) in [
            (&exports.stack_save, "stackSave"),
            (&exports.stack_restore, "stackRestore"),
            (&exports.stack_alloc, "stackAlloc"),
        ] {
            if f.is_none() {
                return Err(missing(n));
            }
        }
        let handle = get(&mut store, if e1 { &["G"] } else { &["handle"] }).ok_or_else(|| missing("handle"))?;
        store.data_mut().exports = exports;
        let mut me = Instance {
            hasher: super::dirty::StateHasher::new(true),
            store,
            instance: inst,
            from_template: !start_up,
            handle,
            dialect,
            deadline_ticks,
            module,
        };
        // The gas tank of the glue exists from instantiation on: start-up runs metered too.
        me.refill_gas().map_err(|e| EngineError::Instantiate(error_text(&e)))?;
        if start_up {
            me.start_up().map_err(|e| EngineError::Startup(error_text(&e)))?;
        }
        Ok(me)
    }

    fn func(&mut self, name: &str) -> Option<Func> {
        self.instance.get_func(&mut self.store, name)
    }

    fn call(&mut self, f: Func, args: &[Val]) -> wasmtime::Result<i64> {
        let ty = f.ty(&self.store);
        let args = super::host::coerce_args(&ty, args);
        let mut res = vec![Val::I32(0); ty.results().len()];
        f.call(&mut self.store, &args, &mut res)?;
        Ok(res
            .first()
            .map(|v| match v {
                Val::I32(x) => *x as u32 as i64,
                Val::I64(x) => *x,
                _ => 0,
            })
            .unwrap_or(0))
    }

    fn ptr(&self, v: u64) -> Val {
        if self.dialect == Dialect::W64 { Val::I64(v as i64) } else { Val::I32(v as i32) }
    }

    fn mem(&self) -> wasmtime::Memory {
        self.store.data().exports.memory.expect("checked at instantiation")
    }

    /// `writeStackCookie` / `checkStackCookie` of the glue.
    fn stack_cookie(&mut self, write: bool) -> wasmtime::Result<()> {
        let Some(get_end) = self.func("emscripten_stack_get_end") else { return Ok(()) };
        let mut max = self.call(get_end, &[])? as u64;
        if max == 0 && self.dialect != Dialect::E2 {
            max += 4;
        }
        let mem = self.mem();
        let data = mem.data_mut(&mut self.store);
        let at = |d: &[u8], p: u64| -> Option<u32> {
            d.get(p as usize..p as usize + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        };
        if write {
            let (a, b) = (max as usize, max as usize + 4);
            if b + 4 > data.len() {
                return Err(wasmtime::Error::new(HostTrap::OutOfBounds));
            }
            data[a..a + 4].copy_from_slice(&COOKIE1.to_le_bytes());
            data[b..b + 4].copy_from_slice(&COOKIE2.to_le_bytes());
            data[0..4].copy_from_slice(&COOKIE0.to_le_bytes());
            return Ok(());
        }
        let (c1, c2) = (at(data, max).unwrap_or(0), at(data, max + 4).unwrap_or(0));
        if c1 != COOKIE1 || c2 != COOKIE2 {
            return Err(wasmtime::Error::new(HostTrap::Abort(format!(
                "Aborted(Stack overflow! Stack cookie has been overwritten at 0x{max:x}, expected hex dwords 0x89BACDFE and 0x2135467, but received 0x{c2:x} 0x{c1:x})"
            ))));
        }
        if at(data, 0) != Some(COOKIE0) {
            return Err(wasmtime::Error::new(HostTrap::Abort(
                "Aborted(Runtime error: The application has corrupted its heap memory area (address zero)!)".into(),
            )));
        }
        Ok(())
    }

    fn start_up(&mut self) -> wasmtime::Result<()> {
        let d = self.dialect;
        if d == Dialect::E1 {
            let ctors =
                self.func("F").ok_or_else(|| wasmtime::format_err!("module does not export F (constructors)"))?;
            self.call(ctors, &[])?;
            if let Some(main) = self.func("H") {
                self.call(main, &[Val::I32(0), Val::I32(0)])?;
            }
            return Ok(());
        }
        if let Some(init) = self.func("emscripten_stack_init") {
            self.call(init, &[])?;
        }
        self.stack_cookie(true)?;
        self.stack_cookie(false)?;
        if let Some(ctors) = self.func("__wasm_call_ctors") {
            self.call(ctors, &[])?;
        }
        if d == Dialect::E3 {
            // callMain(): main(0, 0), then exitJS → checkUnflushedContent → fflush(0).
            self.stack_cookie(false)?;
            if let Some(main) = self.func("main") {
                self.call(main, &[Val::I32(0), Val::I32(0)])?;
                if let Some(fflush) = self.func("fflush") {
                    self.call(fflush, &[Val::I32(0)])?;
                }
            }
        }
        if d == Dialect::E2 {
            self.stack_cookie(false)?;
            if let Some(main) = self.func("main") {
                // callMain(["thisProgram"]): argv array, then the string, on the wasm stack.
                const PROGRAM: &str = "thisProgram";
                let alloc = self.store.data().exports.stack_alloc.expect("checked");
                let argv = self.call(alloc, &[self.ptr(8)])? as u64;
                let s = self.call(alloc, &[self.ptr(PROGRAM.len() as u64 + 1)])? as u64;
                let mem = self.mem();
                let data = mem.data_mut(&mut self.store);
                let w = |data: &mut [u8], p: u64, b: &[u8]| -> wasmtime::Result<()> {
                    data.get_mut(p as usize..p as usize + b.len())
                        .ok_or_else(|| wasmtime::Error::new(HostTrap::OutOfBounds))?
                        .copy_from_slice(b);
                    Ok(())
                };
                w(data, s, PROGRAM.as_bytes())?;
                w(data, s + PROGRAM.len() as u64, &[0])?;
                w(data, argv, &(s as u32).to_le_bytes())?;
                w(data, argv + 4, &0u32.to_le_bytes())?;
                let argv_v = self.ptr(argv);
                self.call(main, &[Val::I32(1), argv_v])?;
                if let Some(fflush) = self.func("fflush") {
                    let z = self.ptr(0);
                    self.call(fflush, &[z])?;
                }
            }
        }
        self.stack_cookie(false)?;
        self.stack_cookie(false)?;
        Ok(())
    }

    /// Empties the gas counter (`gas.refill()`), inline or host-side, and sets the limit.
    fn refill_gas(&mut self) -> wasmtime::Result<()> {
        let limit = self.store.data().gas_limit;
        self.store.data_mut().gas_used = 0;
        let ex = &self.store.data().exports;
        if let (Some(used), Some(lim)) = (ex.gas_used, ex.gas_limit) {
            used.set(&mut self.store, Val::I64(0))?;
            lim.set(&mut self.store, Val::I64(i64::try_from(limit).unwrap_or(i64::MAX)))?;
        }
        Ok(())
    }

    /// Gas used since the last refill.
    fn gas_used(&mut self) -> u64 {
        match self.store.data().exports.gas_used {
            Some(g) => g.get(&mut self.store).i64().unwrap_or(0).max(0) as u64,
            None => self.store.data().gas_used,
        }
    }

    /// True when the instance was resumed from an image without re-running start-up.
    pub fn from_template(&self) -> bool {
        self.from_template
    }

    /// The size of linear memory in bytes.
    pub fn memory_len(&self) -> u64 {
        self.mem().data_size(&self.store) as u64
    }

    /// Linear memory, borrowed (no copy).
    pub fn memory(&self) -> &[u8] {
        self.mem().data(&self.store)
    }

    /// Bytes of linear memory actually backed by RAM now (`mincore(2)`): what this process adds
    /// to the CU's resident set, as opposed to [`Instance::memory_len`] (pages never touched cost
    /// nothing). Falls back to `memory_len` where the kernel refuses.
    pub fn resident_bytes(&self) -> u64 {
        super::resident::resident_bytes(self.memory())
    }

    /// The state hash of linear memory ([`super::dirty::StateHasher`]): after the first call,
    /// only the chunks holding pages written since the previous hash are hashed again.
    pub fn state_hash(&mut self) -> [u8; 32] {
        let mem = self.mem().data(&self.store);
        self.hasher.hash(mem)
    }

    /// Whether [`Instance::state_hash`] follows the kernel's record of written pages (false
    /// before the first hash, and where the kernel or a sandbox refuses it).
    pub fn state_hash_tracked(&self) -> bool {
        self.hasher.is_tracking()
    }

    /// A copy of linear memory (checkpoints, dry-run forks).
    pub fn memory_image(&self) -> Vec<u8> {
        self.memory().to_vec()
    }

    /// A copy of linear memory that costs RAM only for its non-zero pages: an anonymous mapping
    /// into which only the 4 KiB pages holding a non-zero byte are copied; the others stay
    /// unbacked and read as zeros. For rollback images kept while a process lives: aos2's 110 MB
    /// memory, mostly zeros, costs its few MB of written pages instead of 110 MB. Reading the
    /// memory's zero pages maps the kernel's zero page (no RAM either).
    pub fn sparse_image(&self) -> std::io::Result<memmap2::Mmap> {
        let mem = self.memory();
        let mut out = memmap2::MmapOptions::new().len(mem.len().max(1)).map_anon()?;
        let mut at = 0;
        while at < mem.len() {
            let end = (at + PAGE).min(mem.len());
            if !is_zero(&mem[at..end]) {
                out[at..end].copy_from_slice(&mem[at..end]);
            }
            at = end;
        }
        out.make_read_only()
    }

    /// The module this instance runs.
    pub fn module(&self) -> &Arc<LoadedModule> {
        &self.module
    }

    /// Loads a saved memory image: grows memory by the glue's heap-resize rule when the image is
    /// larger, then copies the image over the start of memory (the reference's behaviour).
    pub fn restore(&mut self, image: &[u8]) -> Result<(), EngineError> {
        self.restore_known(image, None)
    }

    /// [`Instance::restore`], told which bytes of the current memory may be non-zero
    /// (`Some(ranges)`; `None` = any). Zero pages of the image are then skipped where the memory is
    /// known to be zero already, so restoring a mostly-empty image (aos2: 98 % zero pages) writes
    /// only its live pages instead of copying every byte.
    fn restore_known(&mut self, image: &[u8], nonzero: Option<&[std::ops::Range<u64>]>) -> Result<(), EngineError> {
        let max = self.store.data().limits.memory_bytes.min(self.store.data().heap_max());
        if image.len() as u64 > max {
            return Err(EngineError::BadImage(format!(
                "image is {} bytes; this process may have at most {max}",
                image.len()
            )));
        }
        if (image.len() as u64) < 65536 || !image.len().is_multiple_of(65536) {
            return Err(EngineError::BadImage(format!(
                "image is {} bytes, not a whole number of 64 KiB pages",
                image.len()
            )));
        }
        let old = self.memory_len();
        let requested = image.len() as u64;
        if old < requested {
            let heap_max = self.store.data().heap_max();
            let mem = self.mem();
            let grown = super::host::resize_candidates(old, requested, heap_max)
                .into_iter()
                .any(|size| mem.grow(&mut self.store, size.saturating_sub(old).div_ceil(65536)).is_ok());
            if !grown {
                return Err(EngineError::BadImage(format!("cannot grow memory to {requested} bytes")));
            }
        }
        let mem = self.mem();
        let dst = &mut mem.data_mut(&mut self.store)[..image.len()];
        let maybe_dirty = |at: u64| match nonzero {
            // Bytes past the pre-growth length are fresh zero pages.
            None => at < old,
            Some(ranges) => ranges.iter().any(|r| r.start < at + PAGE as u64 && at < r.end),
        };
        for (i, (src, dst)) in image.chunks(PAGE).zip(dst.chunks_mut(PAGE)).enumerate() {
            if !is_zero(src) {
                dst.copy_from_slice(src);
            } else if maybe_dirty((i * PAGE) as u64) && !is_zero(dst) {
                dst.fill(0);
            }
        }
        debug_assert!(mem.data(&self.store)[..image.len()] == *image, "restore reproduces the image");
        Ok(())
    }

    /// Runs `handle(msg, env)` once.
    pub fn handle(&mut self, msg: &Value, env: &Value) -> HandleOutcome {
        let wall0 = Instant::now();
        let cpu0 = thread_cpu();
        let refilled = self.refill_gas();
        {
            let st = self.store.data_mut();
            st.block_height = msg.get("Block-Height").and_then(Value::as_i64);
            st.random_seed = msg.get("Id").and_then(Value::as_str).unwrap_or_default().to_string();
            st.random_pos = 0;
        }
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = refilled.and_then(|()| self.handle_inner(msg, env)).map_err(|e| error_text(&e)).and_then(|r| r);
        let gas = self.gas_used();
        self.store.data_mut().gas_used = gas;
        HandleOutcome {
            result,
            accounting: Accounting {
                gas,
                wall: wall0.elapsed(),
                cpu: thread_cpu().saturating_sub(cpu0),
                memory_bytes: self.memory_len(),
            },
        }
    }

    fn handle_inner(&mut self, msg: &Value, env: &Value) -> wasmtime::Result<Result<Map<String, Value>, String>> {
        let ex = self.store.data().exports.clone();
        let (save, restore, alloc) =
            (ex.stack_save.expect("checked"), ex.stack_restore.expect("checked"), ex.stack_alloc.expect("checked"));
        let sp = self.call(save, &[])?;
        let mut ptrs = [0u64; 2];
        for (i, v) in [msg, env].into_iter().enumerate() {
            let text = jsjson::stringify(v);
            let size = match self.dialect {
                Dialect::E1 | Dialect::E2 => 4 * jsjson::utf16_len(&text) as u64 + 1,
                _ => text.len() as u64 + 1,
            };
            let p = self.call(alloc, &[self.ptr(size)])? as u64;
            let mem = self.mem();
            let data = mem.data_mut(&mut self.store);
            let dst = data
                .get_mut(p as usize..p as usize + text.len() + 1)
                .ok_or_else(|| wasmtime::Error::new(HostTrap::OutOfBounds))?;
            dst[..text.len()].copy_from_slice(text.as_bytes());
            dst[text.len()] = 0;
            ptrs[i] = p;
        }
        let args = [self.ptr(ptrs[0]), self.ptr(ptrs[1])];
        let mut ret = self.call(self.handle, &args)?;
        let mut suspensions = 0;
        while self.store.data().asyncify.state == AsyncState::Unwinding {
            suspensions += 1;
            if suspensions > MAX_ASYNC_SUSPENSIONS {
                wasmtime::bail!("more than {MAX_ASYNC_SUSPENSIONS} asynchronous reads in one message");
            }
            // The format 4 glue rewinds with `handle()` (arguments undefined → 0); the wasm64
            // glue replays the original arguments.
            let rewind_args = if self.dialect == Dialect::W64 { args } else { [self.ptr(0), self.ptr(0)] };
            ret = self.resume(&ex, &rewind_args)?;
        }
        let text = {
            let data = self.memory();
            let start = usize::try_from(ret)
                .ok()
                .filter(|s| *s < data.len())
                .ok_or_else(|| wasmtime::Error::new(HostTrap::OutOfBounds))?;
            let tail = &data[start..data.len().min(start + MAX_RESULT_BYTES)];
            let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
            String::from_utf8_lossy(&tail[..end]).into_owned()
        };
        let spv = if self.dialect == Dialect::W64 { Val::I64(sp) } else { Val::I32(sp as i32) };
        self.call(restore, &[spv])?;
        Ok(parse_response(&text))
    }

    /// Serves the suspended asyncify import and rewinds into `handle`.
    fn resume(&mut self, ex: &GlueExports, args: &[Val]) -> wasmtime::Result<i64> {
        let stop = ex
            .asyncify_stop_unwind
            .ok_or_else(|| wasmtime::format_err!("module does not export asyncify_stop_unwind"))?;
        self.call(stop, &[])?;
        let pending = self.store.data_mut().asyncify.pending.take();
        let drive = self.store.data().weavedrive.clone();
        let height = self.store.data().block_height;
        let value = match (pending, drive) {
            (Some(PendingAsync::Open { path, .. }), Some(d)) => d.open(&path, height),
            (Some(PendingAsync::Read { fd, dst, len }), Some(d)) => {
                let bytes = d.read(fd, len.min(super::weavedrive::MAX_READ_BYTES));
                let mem = self.mem();
                let data = mem.data_mut(&mut self.store);
                let n = bytes.len();
                data.get_mut(dst as usize..dst as usize + n)
                    .ok_or_else(|| wasmtime::Error::new(HostTrap::OutOfBounds))?
                    .copy_from_slice(&bytes);
                n as i64
            }
            (Some(PendingAsync::Close { fd }), Some(d)) => {
                d.close(fd);
                0
            }
            _ => 0, // no drive: `open` resolves to null
        };
        let data = self.store.data().asyncify.data.ok_or_else(|| wasmtime::format_err!("asyncify: no data buffer"))?;
        {
            let st = self.store.data_mut();
            st.asyncify.return_value = value;
            st.asyncify.state = AsyncState::Rewinding;
        }
        let start = ex
            .asyncify_start_rewind
            .ok_or_else(|| wasmtime::format_err!("module does not export asyncify_start_rewind"))?;
        self.call(start, &[self.ptr(data)])?;
        self.call(self.handle, args)
    }
}

/// Parses the module's `{"ok": …, "response": …}` into the reference's result object.
fn parse_response(text: &str) -> Result<Map<String, Value>, String> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err(format!("Unexpected token in JSON from handle: {e}")),
    };
    let ok = matches!(v.get("ok"), Some(Value::Bool(true)));
    let response = v.get("response").cloned().unwrap_or(Value::Null);
    if !ok {
        return Err(thrown_text(&response));
    }
    let mut out = Map::new();
    for key in ["Error", "Output", "Messages", "Spawns", "Assignments"] {
        if let Some(val) = response.get(key) {
            out.insert(key.to_string(), val.clone());
        }
    }
    let patches = match response.get("Patches") {
        Some(p) if truthy(p) => p.clone(),
        _ => Value::Array(Vec::new()),
    };
    out.insert("Patches".into(), patches);
    Ok(out)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// `String((e && e.message) || e)` for a thrown response.
fn thrown_text(v: &Value) -> String {
    if let Some(m) = v.get("message").filter(|m| truthy(m)) {
        return js_string(m);
    }
    js_string(v)
}

fn js_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Object(_) => "[object Object]".into(),
        Value::Array(a) => {
            a.iter().map(|x| if x.is_null() { String::new() } else { js_string(x) }).collect::<Vec<_>>().join(",")
        }
        other => jsjson::stringify(other),
    }
}
