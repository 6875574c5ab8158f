//! Every import an ao module may ask for, implemented as the reference glue of its format does.
//!
//! Imports are linked by name from the module's own import section, with the module's own
//! signature (wasm32 and wasm64 builds of one import differ only in pointer width). Format 1 uses
//! minified names (`a.a` … `a.D`); they are mapped to the emscripten names first. An import the
//! glue does not provide is refused at link time with the import's name.

use wasmtime::{Caller, ExternType, FuncType, Linker, Module, Ref, Val, ValType};

use super::fs::{ReadData, errno};
use super::time::{self, Tm};
use super::{AsyncState, HostState, HostTrap, PendingAsync};
use crate::engine::format::Dialect;
use crate::engine::gasinline;

type Res = wasmtime::Result<()>;

/// Minified import names of `wasm32-unknown-emscripten` (the glue's `asmLibraryArg`).
const E1_NAMES: [(&str, &str); 30] = [
    ("w", "__syscall_dup3"),
    ("d", "__syscall_fcntl64"),
    ("z", "__syscall_ioctl"),
    ("r", "__syscall_lstat64"),
    ("g", "__syscall_openat"),
    ("s", "__syscall_renameat"),
    ("t", "__syscall_rmdir"),
    ("e", "__syscall_unlinkat"),
    ("a", "_emscripten_date_now"),
    ("A", "_emscripten_get_now_is_monotonic"),
    ("p", "_emscripten_throw_longjmp"),
    ("B", "_gmtime_js"),
    ("C", "_localtime_js"),
    ("i", "_mktime_js"),
    ("j", "_tzset_js"),
    ("D", "abort"),
    ("k", "emscripten_memcpy_big"),
    ("q", "emscripten_resize_heap"),
    ("u", "environ_get"),
    ("v", "environ_sizes_get"),
    ("l", "exit"),
    ("c", "fd_close"),
    ("y", "fd_read"),
    ("o", "fd_seek"),
    ("f", "fd_write"),
    ("h", "getTempRet0"),
    ("x", "invoke_vii"),
    ("b", "setTempRet0"),
    ("n", "strftime"),
    ("m", "system"),
];

/// Defines every function import of `module` in `linker`. Errors name the first import metalcu
/// cannot provide, or a non-function import.
pub fn define_imports(linker: &mut Linker<HostState>, module: &Module, dialect: Dialect) -> wasmtime::Result<()> {
    let inlined_gas = module.exports().any(|e| e.name() == gasinline::GAS_USED_EXPORT);
    for imp in module.imports() {
        let (ns, name) = (imp.module().to_string(), imp.name().to_string());
        let ExternType::Func(ty) = imp.ty() else {
            wasmtime::bail!("module imports {ns}.{name}, which is not a function; the ao host provides only functions");
        };
        let canonical = if dialect == Dialect::E1 && ns == "a" {
            E1_NAMES.iter().find(|(m, _)| *m == name).map(|(_, c)| c.to_string()).ok_or_else(|| {
                wasmtime::format_err!(
                    "module imports a.{name}, which the wasm32-unknown-emscripten glue does not provide"
                )
            })?
        } else {
            name.clone()
        };
        define_one(linker, &ns, &name, &canonical, ty, dialect, inlined_gas)?;
    }
    Ok(())
}

fn define_one(
    linker: &mut Linker<HostState>,
    ns: &str,
    name: &str,
    canonical: &str,
    ty: FuncType,
    d: Dialect,
    inlined_gas: bool,
) -> wasmtime::Result<()> {
    // With inline gas counting (`gasinline`) the module calls `usegas` only on overrun, with the
    // amount already counted: the host just stops the call.
    if ns == "metering" && canonical == "usegas" && inlined_gas {
        let overrun = |_: Caller<'_, HostState>| -> Res { Err(wasmtime::Error::new(HostTrap::OutOfGas)) };
        match ty.params().next() {
            Some(ValType::I64) => linker.func_wrap(ns, name, move |c: Caller<'_, HostState>, _: i64| overrun(c))?,
            _ => linker.func_wrap(ns, name, move |c: Caller<'_, HostState>, _: i32| overrun(c))?,
        };
        return Ok(());
    }
    // Otherwise the hottest import gets a typed trampoline.
    if ns == "metering" && canonical == "usegas" {
        let p = ty.params().next();
        match p {
            Some(ValType::I64) => {
                linker.func_wrap(ns, name, |mut c: Caller<'_, HostState>, amount: i64| -> Res {
                    c.data_mut().use_gas(amount as u64).map_err(wasmtime::Error::new)
                })?;
            }
            _ => {
                linker.func_wrap(ns, name, |mut c: Caller<'_, HostState>, amount: i32| -> Res {
                    c.data_mut().use_gas(amount as u32 as u64).map_err(wasmtime::Error::new)
                })?;
            }
        }
        return Ok(());
    }
    if !known(canonical) {
        wasmtime::bail!("module imports {ns}.{name}, which the {} glue does not provide", dialect_name(d));
    }
    let canonical = canonical.to_string();
    let rty = ty.results().next();
    let trace = trace_enabled();
    linker.func_new(ns, name, ty.clone(), move |mut c, args, results| {
        let ret = call(&mut c, &canonical, d, args);
        if trace {
            eprintln!(
                "imp {canonical}({}) -> {ret:?}",
                args.iter().map(|a| s(a).to_string()).collect::<Vec<_>>().join(",")
            );
        }
        let ret = ret?;
        if let (Some(slot), Some(rt)) = (results.first_mut(), rty.as_ref()) {
            *slot = to_val(rt, ret);
        }
        Ok(())
    })?;
    Ok(())
}

/// `METALCU_TRACE_IMPORTS=1` logs every import call to stderr (a debugging aid for comparing a
/// module's host interaction with the reference glue's).
fn trace_enabled() -> bool {
    std::env::var_os("METALCU_TRACE_IMPORTS").is_some_and(|v| v == "1")
}

fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::E1 => "wasm32-unknown-emscripten",
        Dialect::E2 => "wasm32-unknown-emscripten2",
        Dialect::E3 => "wasm32-unknown-emscripten3",
        Dialect::E4 => "wasm32-unknown-emscripten4",
        Dialect::W64 => "wasm64-unknown-emscripten",
    }
}

fn known(name: &str) -> bool {
    name.starts_with("invoke_")
        || name.starts_with("__syscall_")
        || matches!(
            name,
            "abort"
                | "_abort_js"
                | "__assert_fail"
                | "getTempRet0"
                | "setTempRet0"
                | "_emscripten_throw_longjmp"
                | "emscripten_memcpy_big"
                | "_emscripten_memcpy_js"
                | "emscripten_resize_heap"
                | "emscripten_get_heap_max"
                | "environ_get"
                | "environ_sizes_get"
                | "_emscripten_date_now"
                | "emscripten_date_now"
                | "_emscripten_get_now_is_monotonic"
                | "emscripten_get_now"
                | "_tzset_js"
                | "_gmtime_js"
                | "_localtime_js"
                | "_mktime_js"
                | "strftime"
                | "system"
                | "_emscripten_system"
                | "exit"
                | "proc_exit"
                | "fd_write"
                | "fd_read"
                | "fd_close"
                | "fd_seek"
                | "fd_sync"
                | "fd_fdstat_get"
                | "_dlopen_js"
                | "_dlsym_js"
                | "_dlinit"
                | "_mmap_js"
                | "_munmap_js"
                | "metering_gasUsed"
                | "__asyncjs__weavedrive_open"
                | "__asyncjs__weavedrive_read"
                | "__asyncjs__weavedrive_close"
        )
}

/// Converts a JavaScript-style return value to the import's result type.
fn to_val(ty: &ValType, v: Ret) -> Val {
    match (ty, v) {
        (ValType::F64, Ret::F(f)) => Val::F64(f.to_bits()),
        (ValType::F64, Ret::I(i)) => Val::F64((i as f64).to_bits()),
        (ValType::F32, Ret::F(f)) => Val::F32((f as f32).to_bits()),
        (ValType::F32, Ret::I(i)) => Val::F32((i as f32).to_bits()),
        (ValType::I64, Ret::I(i)) => Val::I64(i),
        (ValType::I64, Ret::F(f)) => Val::I64(if f.is_finite() { f as i64 } else { 0 }),
        (_, Ret::I(i)) => Val::I32(i as i32),
        (_, Ret::F(f)) => Val::I32(if f.is_finite() { f as i64 as i32 } else { 0 }),
    }
}

/// A return value as JavaScript would have produced it.
#[derive(Debug, Clone, Copy)]
enum Ret {
    I(i64),
    F(f64),
}

fn u(v: &Val) -> u64 {
    match v {
        Val::I32(x) => *x as u32 as u64,
        Val::I64(x) => *x as u64,
        Val::F64(b) => f64::from_bits(*b) as u64,
        _ => 0,
    }
}

fn s(v: &Val) -> i64 {
    match v {
        Val::I32(x) => *x as i64,
        Val::I64(x) => *x,
        Val::F64(b) => f64::from_bits(*b) as i64,
        _ => 0,
    }
}

fn trap(t: HostTrap) -> wasmtime::Error {
    wasmtime::Error::new(t)
}

// ---- memory helpers -------------------------------------------------------------------------

fn memory_of(c: &mut Caller<'_, HostState>) -> wasmtime::Result<wasmtime::Memory> {
    c.data().exports.memory.ok_or_else(|| wasmtime::format_err!("module exports no memory"))
}

fn range(mem: &[u8], ptr: u64, len: u64) -> Result<std::ops::Range<usize>, HostTrap> {
    let end = ptr.checked_add(len).ok_or(HostTrap::OutOfBounds)?;
    if end > mem.len() as u64 {
        return Err(HostTrap::OutOfBounds);
    }
    Ok(ptr as usize..end as usize)
}

fn wr(mem: &mut [u8], ptr: u64, bytes: &[u8]) -> Result<(), HostTrap> {
    let r = range(mem, ptr, bytes.len() as u64)?;
    mem[r].copy_from_slice(bytes);
    Ok(())
}

fn rd_u32(mem: &[u8], ptr: u64) -> Result<u32, HostTrap> {
    let r = range(mem, ptr, 4)?;
    Ok(u32::from_le_bytes(mem[r].try_into().expect("4 bytes")))
}

fn rd_u64(mem: &[u8], ptr: u64) -> Result<u64, HostTrap> {
    let r = range(mem, ptr, 8)?;
    Ok(u64::from_le_bytes(mem[r].try_into().expect("8 bytes")))
}

fn rd_i32(mem: &[u8], ptr: u64) -> Result<i32, HostTrap> {
    rd_u32(mem, ptr).map(|v| v as i32)
}

/// Reads a pointer-sized value (`size_t`) of the dialect.
fn rd_ptr(mem: &[u8], ptr: u64, d: Dialect) -> Result<u64, HostTrap> {
    if d == Dialect::W64 { rd_u64(mem, ptr) } else { rd_u32(mem, ptr).map(u64::from) }
}

/// Writes a pointer-sized value (`size_t`) of the dialect.
fn wr_ptr(mem: &mut [u8], ptr: u64, v: u64, d: Dialect) -> Result<(), HostTrap> {
    if d == Dialect::W64 { wr(mem, ptr, &v.to_le_bytes()) } else { wr(mem, ptr, &(v as u32).to_le_bytes()) }
}

/// `UTF8ToString(ptr)`: bytes up to the first NUL, decoded with replacement.
pub fn rd_cstr(mem: &[u8], ptr: u64) -> Result<String, HostTrap> {
    if ptr == 0 {
        return Ok(String::new());
    }
    let start = usize::try_from(ptr).map_err(|_| HostTrap::OutOfBounds)?;
    let tail = mem.get(start..).ok_or(HostTrap::OutOfBounds)?;
    let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

/// `stringToUTF8(str, ptr, max)`: at most `max - 1` bytes (whole characters) plus NUL.
fn wr_cstr(mem: &mut [u8], ptr: u64, s: &str, max: usize) -> Result<usize, HostTrap> {
    if max == 0 {
        return Ok(0);
    }
    let mut n = 0;
    for ch in s.chars() {
        if n + ch.len_utf8() > max - 1 {
            break;
        }
        n += ch.len_utf8();
    }
    wr(mem, ptr, &s.as_bytes()[..n])?;
    wr(mem, ptr + n as u64, &[0])?;
    Ok(n)
}

// ---- calling back into the module ------------------------------------------------------------

/// Converts `args` to the parameter types of `ty` (the glue passes JavaScript numbers, which
/// wasm32 and wasm64 builds of one export take as `i32` or `i64`).
pub fn coerce_args(ty: &FuncType, args: &[Val]) -> Vec<Val> {
    ty.params()
        .zip(args.iter().chain(std::iter::repeat(&Val::I32(0))))
        .map(|(p, a)| match p {
            ValType::I64 => Val::I64(s(a)),
            ValType::F64 => Val::F64((s(a) as f64).to_bits()),
            ValType::F32 => Val::F32((s(a) as f32).to_bits()),
            _ => Val::I32(s(a) as i32),
        })
        .collect()
}

fn call_export(
    c: &mut Caller<'_, HostState>,
    f: Option<wasmtime::Func>,
    what: &str,
    args: &[Val],
) -> wasmtime::Result<i64> {
    let f = f.ok_or_else(|| wasmtime::format_err!("module does not export {what}"))?;
    let ty = f.ty(&*c);
    let args = coerce_args(&ty, args);
    let mut res = vec![Val::I32(0); ty.results().len()];
    f.call(&mut *c, &args, &mut res)?;
    Ok(res.first().map(s).unwrap_or(0))
}

fn ptr_val(d: Dialect, v: u64) -> Val {
    if d == Dialect::W64 { Val::I64(v as i64) } else { Val::I32(v as i32) }
}

/// `_malloc(size)` of the module.
pub fn malloc(c: &mut Caller<'_, HostState>, size: u64) -> wasmtime::Result<u64> {
    let d = c.data().dialect;
    let f = c.data().exports.malloc;
    let p = call_export(c, f, "malloc", &[ptr_val(d, size)])?;
    Ok(if d == Dialect::W64 { p as u64 } else { p as u32 as u64 })
}

fn set_errno(c: &mut Caller<'_, HostState>, value: i32) -> wasmtime::Result<()> {
    let f = c.data().exports.errno_location;
    if f.is_none() {
        return Ok(());
    }
    let loc = call_export(c, f, "__errno_location", &[])? as u64;
    let mem = memory_of(c)?;
    wr(mem.data_mut(&mut *c), loc, &value.to_le_bytes()).map_err(trap)
}

// ---- the imports ---------------------------------------------------------------------------

fn call(c: &mut Caller<'_, HostState>, name: &str, d: Dialect, a: &[Val]) -> wasmtime::Result<Ret> {
    if let Some(sig) = name.strip_prefix("invoke_") {
        return invoke(c, sig, d, a);
    }
    if name.starts_with("__syscall_") {
        return syscall(c, name, d, a);
    }
    let zero = Ret::I(0);
    match name {
        "abort" | "_abort_js" => {
            let msg = if d == Dialect::E1 {
                "Aborted(). Build with -sASSERTIONS for more info.".to_string()
            } else {
                "Aborted(native code called abort())".to_string()
            };
            Err(trap(HostTrap::Abort(msg)))
        }
        "__assert_fail" => {
            let mem = memory_of(c)?;
            let m = mem.data(&*c);
            let cond = rd_cstr(m, u(&a[0])).map_err(trap)?;
            let file = if u(&a[1]) == 0 { "unknown filename".into() } else { rd_cstr(m, u(&a[1])).map_err(trap)? };
            let func = if u(&a[3]) == 0 { "unknown function".into() } else { rd_cstr(m, u(&a[3])).map_err(trap)? };
            Err(trap(HostTrap::Abort(format!("Aborted(Assertion failed: {cond}, at: {file},{},{func})", s(&a[2])))))
        }
        "getTempRet0" => Ok(Ret::I(c.data().temp_ret0 as i64)),
        "setTempRet0" => {
            c.data_mut().temp_ret0 = s(&a[0]) as i32;
            Ok(zero)
        }
        "_emscripten_throw_longjmp" => Err(trap(HostTrap::LongJmp)),
        "emscripten_memcpy_big" | "_emscripten_memcpy_js" => {
            let (dest, src, num) = (u(&a[0]), u(&a[1]), u(&a[2]));
            let mem = memory_of(c)?;
            let m = mem.data_mut(&mut *c);
            // `copyWithin` clamps to the buffer instead of trapping.
            let len = m.len() as u64;
            let (src_c, dest_c) = (src.min(len), dest.min(len));
            let n = num.min(len - src_c).min(len - dest_c);
            m.copy_within(src_c as usize..(src_c + n) as usize, dest_c as usize);
            Ok(zero)
        }
        "emscripten_resize_heap" => resize_heap(c, u(&a[0])).map(|ok| Ret::I(ok as i64)),
        "emscripten_get_heap_max" => Ok(Ret::I(c.data().heap_max() as i64)),
        "environ_sizes_get" | "environ_get" => environ(c, name, d, u(&a[0]), u(&a[1])).map(|()| zero),
        "_emscripten_date_now" | "emscripten_date_now" => match d {
            Dialect::E1 | Dialect::E2 => Ok(Ret::F(0.0)),
            _ => Ok(Ret::F(c.data_mut().now() as f64)),
        },
        "_emscripten_get_now_is_monotonic" => Ok(Ret::I(1)),
        "emscripten_get_now" => match d {
            Dialect::E1 => Ok(Ret::F(0.0)),
            // `process.hrtime` is replaced by the counter, so `t[0] * 1e3 + t[1] / 1e6` is NaN.
            Dialect::E2 => Ok(Ret::F(f64::NAN)),
            _ => Ok(Ret::F(c.data_mut().now() as f64)),
        },
        "_tzset_js" => tzset(c, d, a).map(|()| zero),
        "_gmtime_js" | "_localtime_js" => broken_down_time(c, name, d, a).map(|()| zero),
        "_mktime_js" => mktime(c, d, a),
        "strftime" => strftime(c, d, a),
        "system" | "_emscripten_system" => {
            // No shell, ever (the format 4 / wasm64 glue would spawn one on the host).
            if u(&a[0]) == 0 {
                return Ok(zero);
            }
            set_errno(c, errno::ENOSYS)?;
            Ok(Ret::I(-1))
        }
        "exit" | "proc_exit" => Err(trap(HostTrap::Exit(s(&a[0]) as i32))),
        "fd_write" => fd_write(c, d, a),
        "fd_read" => fd_read(c, d, a),
        "fd_close" => {
            if d == Dialect::E1 {
                return Ok(Ret::I(errno::ENOSYS as i64));
            }
            Ok(Ret::I(c.data_mut().fs.close(s(&a[0]) as i32).err().unwrap_or(0) as i64))
        }
        "fd_seek" => fd_seek(c, d, a),
        "fd_sync" => Ok(Ret::I(c.data().fs.flags(s(&a[0]) as i32).err().unwrap_or(0) as i64)),
        "fd_fdstat_get" => {
            let fd = s(&a[0]) as i32;
            let ft = match c.data().fs.filetype(fd) {
                Ok(t) => t,
                Err(e) => return Ok(Ret::I(e as i64)),
            };
            let mem = memory_of(c)?;
            let m = mem.data_mut(&mut *c);
            let p = u(&a[1]);
            // The glue reports no rights bits (`rights_base`/`rights_inheriting` = 0).
            wr(m, p, &[ft, 0]).map_err(trap)?;
            wr(m, p + 2, &0u16.to_le_bytes()).map_err(trap)?;
            wr(m, p + 8, &0u64.to_le_bytes()).map_err(trap)?;
            wr(m, p + 16, &0u64.to_le_bytes()).map_err(trap)?;
            Ok(zero)
        }
        "_dlopen_js" | "_dlsym_js" => Err(trap(HostTrap::Abort(
            "Aborted(To use dlopen, you need enable dynamic linking, see https://emscripten.org/docs/compiling/Dynamic-Linking.html)".into(),
        ))),
        "_dlinit" => Ok(zero),
        "_mmap_js" | "_munmap_js" => Ok(Ret::I(-(errno::ENOSYS as i64))),
        "metering_gasUsed" => {
            let inline = c.get_export(gasinline::GAS_USED_EXPORT).and_then(|e| e.into_global());
            Ok(Ret::I(match inline {
                Some(g) => g.get(&mut *c).i64().unwrap_or(0),
                None => c.data().gas_used as i64,
            }))
        }
        "__asyncjs__weavedrive_open" | "__asyncjs__weavedrive_read" | "__asyncjs__weavedrive_close" => {
            async_import(c, name, a)
        }
        other => Err(wasmtime::format_err!("import {other} is not implemented")),
    }
}

/// `invoke_<sig>(index, ...args)`: calls a table entry; a longjmp unwinding through it restores
/// the stack and sets the module's `__THREW__` flag, anything else propagates.
fn invoke(c: &mut Caller<'_, HostState>, sig: &str, d: Dialect, a: &[Val]) -> wasmtime::Result<Ret> {
    let ex = c.data().exports.clone();
    let sp = call_export(c, ex.stack_save, "stackSave", &[])?;
    let index = u(&a[0]);
    // The format 4 / wasm64 glue calls the module's `dynCall_<sig>` export; the others the table.
    let dyn_call = if matches!(d, Dialect::E4 | Dialect::W64) {
        c.get_export(&format!("dynCall_{sig}")).and_then(|e| e.into_func())
    } else {
        None
    };
    let (f, args): (wasmtime::Func, Vec<Val>) = match dyn_call {
        Some(f) => (f, a.to_vec()),
        None => {
            let table = ex.table.ok_or_else(|| wasmtime::format_err!("module exports no function table"))?;
            let entry = table.get(&mut *c, index).ok_or_else(|| trap(HostTrap::OutOfBounds))?;
            let f = match entry {
                Ref::Func(Some(f)) => f,
                _ => return Err(wasmtime::format_err!("invoke_{sig}: table entry {index} is not a function")),
            };
            (f, a[1..].to_vec())
        }
    };
    let fty = f.ty(&*c);
    let args = coerce_args(&fty, &args);
    let mut res = vec![Val::I32(0); fty.results().len()];
    match f.call(&mut *c, &args, &mut res) {
        Ok(()) => Ok(res
            .first()
            .map(|v| match v {
                Val::F64(b) => Ret::F(f64::from_bits(*b)),
                Val::F32(b) => Ret::F(f32::from_bits(*b) as f64),
                v => Ret::I(s(v)),
            })
            .unwrap_or(Ret::I(0))),
        Err(e) if matches!(e.downcast_ref::<HostTrap>(), Some(HostTrap::LongJmp)) => {
            let restore = ex.stack_restore;
            let spv = if d == Dialect::W64 { Val::I64(sp) } else { Val::I32(sp as i32) };
            call_export(c, restore, "stackRestore", &[spv])?;
            call_export(c, ex.set_threw, "setThrew", &[ptr_val(d, 1), Val::I32(0)])?;
            Ok(Ret::I(0))
        }
        Err(e) => Err(e),
    }
}

/// `emscripten_resize_heap`: the glue's over-allocation rule, bounded by the format's heap max
/// and by the process's memory limit (a refused growth is a failed attempt, like a JS `RangeError`).
fn resize_heap(c: &mut Caller<'_, HostState>, requested: u64) -> wasmtime::Result<bool> {
    let mem = memory_of(c)?;
    let old = mem.data_size(&*c) as u64;
    let max = c.data().heap_max();
    if requested > max {
        return Ok(false);
    }
    for new_size in super::resize_candidates(old, requested, max) {
        if mem.grow(&mut *c, new_size.saturating_sub(old).div_ceil(65536)).is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn env_strings(d: Dialect) -> Vec<String> {
    // Formats 1–3 name the program after `process.argv[1]` of the host (the script path — a
    // leak of the host that metalcu pins to "thisProgram"). The format 4 and wasm64 glue were
    // patched by ao to give an empty environment.
    match d {
        Dialect::E1 | Dialect::E2 | Dialect::E3 => [
            "USER=web_user",
            "LOGNAME=web_user",
            "PATH=/",
            "PWD=/",
            "HOME=/home/web_user",
            "LANG=C.UTF-8",
            "_=thisProgram",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        Dialect::E4 | Dialect::W64 => Vec::new(),
    }
}

fn environ(c: &mut Caller<'_, HostState>, name: &str, d: Dialect, p0: u64, p1: u64) -> wasmtime::Result<()> {
    let strings = env_strings(d);
    let mem = memory_of(c)?;
    let m = mem.data_mut(&mut *c);
    let width = if d == Dialect::W64 { 8 } else { 4 };
    if name == "environ_sizes_get" {
        let total: usize = strings.iter().map(|s| s.len() + 1).sum();
        wr_ptr(m, p0, strings.len() as u64, d).map_err(trap)?;
        wr_ptr(m, p1, total as u64, d).map_err(trap)?;
    } else {
        let mut off = 0u64;
        for (i, s) in strings.iter().enumerate() {
            let ptr = p1 + off;
            wr_ptr(m, p0 + i as u64 * width, ptr, d).map_err(trap)?;
            wr(m, ptr, s.as_bytes()).map_err(trap)?;
            wr(m, ptr + s.len() as u64, &[0]).map_err(trap)?;
            off += s.len() as u64 + 1;
        }
    }
    Ok(())
}

fn tzset(c: &mut Caller<'_, HostState>, d: Dialect, a: &[Val]) -> wasmtime::Result<()> {
    let mem = memory_of(c)?;
    match d {
        Dialect::E1 | Dialect::E2 => {
            // Runs once per instance; allocates the zone names with malloc (`allocateUTF8`).
            if c.data().tzset_called {
                return Ok(());
            }
            c.data_mut().tzset_called = true;
            let (timezone, daylight, tzname) = (u(&a[0]), u(&a[1]), u(&a[2]));
            let m = mem.data_mut(&mut *c);
            wr(m, timezone, &0i32.to_le_bytes()).map_err(trap)?;
            wr(m, daylight, &0i32.to_le_bytes()).map_err(trap)?;
            const ZONE: &str = "Coordinated Universal Time";
            let winter = malloc(c, ZONE.len() as u64 + 1)?;
            let summer = malloc(c, ZONE.len() as u64 + 1)?;
            let m = mem.data_mut(&mut *c);
            for p in [winter, summer] {
                if p != 0 {
                    wr_cstr(m, p, ZONE, ZONE.len() + 1).map_err(trap)?;
                }
            }
            wr(m, tzname, &(summer as u32).to_le_bytes()).map_err(trap)?;
            wr(m, tzname + 4, &(winter as u32).to_le_bytes()).map_err(trap)?;
        }
        Dialect::E3 | Dialect::E4 | Dialect::W64 => {
            let (timezone, daylight, std_name, dst_name) = (u(&a[0]), u(&a[1]), u(&a[2]), u(&a[3]));
            let m = mem.data_mut(&mut *c);
            if d == Dialect::W64 {
                wr(m, timezone, &0u64.to_le_bytes()).map_err(trap)?;
            } else {
                wr(m, timezone, &0u32.to_le_bytes()).map_err(trap)?;
            }
            wr(m, daylight, &0i32.to_le_bytes()).map_err(trap)?;
            wr_cstr(m, dst_name, "UTC", 17).map_err(trap)?;
            wr_cstr(m, std_name, "UTC", 17).map_err(trap)?;
        }
    }
    Ok(())
}

fn write_tm(m: &mut [u8], p: u64, tm: Option<Tm>, local: bool) -> Result<(), HostTrap> {
    let t = tm.unwrap_or_default();
    for (i, v) in [t.sec, t.min, t.hour, t.mday, t.mon, t.year, t.wday, t.yday].iter().enumerate() {
        wr(m, p + 4 * i as u64, &v.to_le_bytes())?;
    }
    if local {
        wr(m, p + 36, &0i32.to_le_bytes())?; // tm_gmtoff
        wr(m, p + 32, &0i32.to_le_bytes())?; // tm_isdst
    }
    Ok(())
}

fn broken_down_time(c: &mut Caller<'_, HostState>, name: &str, d: Dialect, a: &[Val]) -> wasmtime::Result<()> {
    let mem = memory_of(c)?;
    let m = mem.data_mut(&mut *c);
    // Formats 1/2 pass a pointer to a 32-bit time_t; format 4 a (low, high) pair; wasm64 an i64.
    let (secs, tm_ptr) = match (d, a.len()) {
        (Dialect::E1 | Dialect::E2, _) => (rd_i32(m, u(&a[0])).map_err(trap)? as i64, u(&a[1])),
        (_, 3) => ((u(&a[0]) as u32 as i64) | (s(&a[1]) << 32), u(&a[2])),
        _ => (s(&a[0]), u(&a[1])),
    };
    write_tm(m, tm_ptr, time::gmtime(secs), name == "_localtime_js").map_err(trap)
}

fn mktime(c: &mut Caller<'_, HostState>, d: Dialect, a: &[Val]) -> wasmtime::Result<Ret> {
    let mem = memory_of(c)?;
    let m = mem.data_mut(&mut *c);
    let p = u(&a[0]);
    let f = |i: u64| rd_i32(m, p + 4 * i);
    let tm = Tm {
        sec: f(0).map_err(trap)?,
        min: f(1).map_err(trap)?,
        hour: f(2).map_err(trap)?,
        mday: f(3).map_err(trap)?,
        mon: f(4).map_err(trap)?,
        year: f(5).map_err(trap)?,
        ..Tm::default()
    };
    let Some((secs, norm)) = time::mktime(&tm) else {
        return Ok(Ret::I(-1));
    };
    if rd_i32(m, p + 32).map_err(trap)? < 0 {
        wr(m, p + 32, &0i32.to_le_bytes()).map_err(trap)?;
    }
    for (i, v) in [norm.sec, norm.min, norm.hour, norm.mday, norm.mon].iter().enumerate() {
        wr(m, p + 4 * i as u64, &v.to_le_bytes()).map_err(trap)?;
    }
    wr(m, p + 24, &norm.wday.to_le_bytes()).map_err(trap)?;
    wr(m, p + 28, &norm.yday.to_le_bytes()).map_err(trap)?;
    if matches!(d, Dialect::E3 | Dialect::E4) {
        wr(m, p + 20, &norm.year.to_le_bytes()).map_err(trap)?;
        c.data_mut().temp_ret0 = (secs >> 32) as i32;
        return Ok(Ret::I(secs as u32 as i32 as i64));
    }
    Ok(Ret::I(secs))
}

fn strftime(c: &mut Caller<'_, HostState>, _d: Dialect, a: &[Val]) -> wasmtime::Result<Ret> {
    let mem = memory_of(c)?;
    let m = mem.data_mut(&mut *c);
    let (dst, maxsize, fmt, tmp) = (u(&a[0]), u(&a[1]), u(&a[2]), u(&a[3]));
    let f = |i: u64| rd_i32(m, tmp + 4 * i);
    let tm = Tm {
        sec: f(0).map_err(trap)?,
        min: f(1).map_err(trap)?,
        hour: f(2).map_err(trap)?,
        mday: f(3).map_err(trap)?,
        mon: f(4).map_err(trap)?,
        year: f(5).map_err(trap)?,
        wday: f(6).map_err(trap)?,
        yday: f(7).map_err(trap)?,
    };
    let pattern = rd_cstr(m, fmt).map_err(trap)?;
    let out = time::strftime(&pattern, &tm);
    if out.len() + 1 > maxsize as usize {
        return Ok(Ret::I(0));
    }
    wr(m, dst, out.as_bytes()).map_err(trap)?;
    wr(m, dst + out.len() as u64, &[0]).map_err(trap)?;
    Ok(Ret::I(out.len() as i64))
}

fn iovecs(m: &[u8], d: Dialect, iov: u64, cnt: u64) -> Result<Vec<(u64, u64)>, HostTrap> {
    let (w, stride) = if d == Dialect::W64 { (8, 16) } else { (4, 8) };
    (0..cnt.min(1024)).map(|i| Ok((rd_ptr(m, iov + i * stride, d)?, rd_ptr(m, iov + i * stride + w, d)?))).collect()
}

fn fd_write(c: &mut Caller<'_, HostState>, d: Dialect, a: &[Val]) -> wasmtime::Result<Ret> {
    let (fd, iov, cnt, pnum) = (s(&a[0]) as i32, u(&a[1]), u(&a[2]), u(&a[3]));
    let mem = memory_of(c)?;
    let (m, st) = mem.data_and_store_mut(&mut *c);
    let vecs = iovecs(m, d, iov, cnt).map_err(trap)?;
    let mut num = 0u64;
    for (ptr, len) in vecs {
        let r = range(m, ptr, len).map_err(trap)?;
        if d == Dialect::E1 {
            num += len; // console output, discarded
            continue;
        }
        let mut clock = st.clock;
        let res = st.fs.write(fd, &m[r], &mut clock);
        st.clock = clock;
        match res {
            Ok(n) => num += n as u64,
            Err(e) => return Ok(Ret::I(e as i64)),
        }
    }
    wr_ptr(m, pnum, num, d).map_err(trap)?;
    Ok(Ret::I(0))
}

fn fd_read(c: &mut Caller<'_, HostState>, d: Dialect, a: &[Val]) -> wasmtime::Result<Ret> {
    if d == Dialect::E1 {
        return Ok(Ret::I(errno::ENOSYS as i64));
    }
    let (fd, iov, cnt, pnum) = (s(&a[0]) as i32, u(&a[1]), u(&a[2]), u(&a[3]));
    let mem = memory_of(c)?;
    let (m, st) = mem.data_and_store_mut(&mut *c);
    let vecs = iovecs(m, d, iov, cnt).map_err(trap)?;
    let mut num = 0u64;
    for (ptr, len) in vecs {
        let r = range(m, ptr, len).map_err(trap)?;
        let got = match st.fs.read(fd, len as usize) {
            Ok(ReadData::Bytes(b)) => {
                m[r.start..r.start + b.len()].copy_from_slice(&b);
                b.len() as u64
            }
            Ok(ReadData::Random(n)) => {
                st.fill_random(&mut m[r.start..r.start + n]);
                n as u64
            }
            Err(e) => return Ok(Ret::I(e as i64)),
        };
        num += got;
        if got < len {
            break;
        }
    }
    wr_ptr(m, pnum, num, d).map_err(trap)?;
    Ok(Ret::I(0))
}

fn fd_seek(c: &mut Caller<'_, HostState>, d: Dialect, a: &[Val]) -> wasmtime::Result<Ret> {
    if d == Dialect::E1 {
        return Ok(Ret::I(errno::ESPIPE as i64));
    }
    // (fd, offset_low, offset_high, whence, newOffset) or (fd, offset: i64, whence, newOffset).
    let (fd, offset, whence, out) = if a.len() == 5 {
        (s(&a[0]) as i32, (u(&a[1]) as u32 as i64) | (s(&a[2]) << 32), s(&a[3]) as i32, u(&a[4]))
    } else {
        (s(&a[0]) as i32, s(&a[1]), s(&a[2]) as i32, u(&a[3]))
    };
    let pos = match c.data_mut().fs.seek(fd, offset, whence) {
        Ok(p) => p,
        Err(e) => return Ok(Ret::I(e as i64)),
    };
    let mem = memory_of(c)?;
    wr(mem.data_mut(&mut *c), out, &pos.to_le_bytes()).map_err(trap)?;
    Ok(Ret::I(0))
}

/// Resolves a `*at` path against `dirfd` (`SYSCALLS.calculateAt`).
fn at_path(st: &HostState, dirfd: i64, path: String) -> Result<String, i32> {
    if path.starts_with('/') || dirfd == -100 {
        return Ok(path);
    }
    let base = st.fs.fd_path(dirfd as i32)?;
    if path.is_empty() {
        return Ok(base);
    }
    Ok(format!("{}/{}", base.trim_end_matches('/'), path))
}

/// A `struct stat` field as the glue's `doStat` writes it.
#[derive(Clone, Copy)]
enum StatField {
    Dev,
    Mode,
    Nlink,
    Zero,
    Rdev,
    Size,
    Blksize,
    Blocks,
    Secs,
    /// `time % 1000 * 1000`, as the glue computes the sub-second part.
    SubSec,
    Ino,
}

/// `doStat` layouts: (byte offset, field, width in bytes) per glue generation.
const STAT_E2: &[(u64, StatField, u8)] = {
    use StatField::*;
    &[
        (0, Dev, 4),
        (4, Zero, 4),
        (8, Ino, 4),
        (12, Mode, 4),
        (16, Nlink, 4),
        (20, Zero, 4),
        (24, Zero, 4),
        (28, Rdev, 4),
        (32, Zero, 4),
        (40, Size, 8),
        (48, Blksize, 4),
        (52, Blocks, 4),
        (56, Secs, 4),
        (60, Zero, 4),
        (64, Secs, 4),
        (68, Zero, 4),
        (72, Secs, 4),
        (76, Zero, 4),
        (80, Ino, 8),
    ]
};
const STAT_E4: &[(u64, StatField, u8)] = {
    use StatField::*;
    &[
        (0, Dev, 4),
        (4, Mode, 4),
        (8, Nlink, 4),
        (12, Zero, 4),
        (16, Zero, 4),
        (20, Rdev, 4),
        (24, Size, 8),
        (32, Blksize, 4),
        (36, Blocks, 4),
        (40, Secs, 8),
        (48, SubSec, 4),
        (56, Secs, 8),
        (64, SubSec, 4),
        (72, Secs, 8),
        (80, SubSec, 4),
        (88, Ino, 8),
    ]
};
const STAT_W64: &[(u64, StatField, u8)] = {
    use StatField::*;
    &[
        (0, Dev, 4),
        (4, Mode, 4),
        (8, Nlink, 8),
        (16, Zero, 4),
        (20, Zero, 4),
        (24, Rdev, 4),
        (32, Size, 8),
        (40, Blksize, 4),
        (44, Blocks, 4),
        (48, Secs, 8),
        (56, SubSec, 8),
        (64, Secs, 8),
        (72, SubSec, 8),
        (80, Secs, 8),
        (88, SubSec, 8),
        (96, Ino, 8),
    ]
};

fn write_stat(m: &mut [u8], d: Dialect, buf: u64, st: &super::fs::Stat) -> Result<(), HostTrap> {
    let layout = match d {
        Dialect::E2 => STAT_E2,
        Dialect::W64 => STAT_W64,
        _ => STAT_E4,
    };
    for &(off, field, width) in layout {
        let v: u64 = match field {
            StatField::Dev => st.dev as u64,
            StatField::Mode => st.mode as u64,
            StatField::Nlink => 1,
            StatField::Zero => 0,
            StatField::Rdev => st.rdev as u64,
            StatField::Size => st.size,
            StatField::Blksize => 4096,
            StatField::Blocks => st.blocks,
            StatField::Secs => st.time_ms / 1000,
            StatField::SubSec => st.time_ms % 1000 * 1000,
            StatField::Ino => st.ino,
        };
        match width {
            4 => wr(m, buf + off, &(v as u32).to_le_bytes())?,
            _ => wr(m, buf + off, &v.to_le_bytes())?,
        }
    }
    Ok(())
}

fn syscall(c: &mut Caller<'_, HostState>, name: &str, d: Dialect, a: &[Val]) -> wasmtime::Result<Ret> {
    if d == Dialect::E1 {
        // Format 1's glue stubs every syscall: `undefined` (0), or 0 for fcntl/ioctl.
        return Ok(Ret::I(0));
    }
    let mem = memory_of(c)?;
    let (m, st) = mem.data_and_store_mut(&mut *c);
    let path_arg = |m: &[u8], st: &HostState, dirfd: &Val, p: &Val| -> Result<String, i32> {
        let raw = rd_cstr(m, u(p)).map_err(|_| errno::EINVAL)?;
        at_path(st, s(dirfd), raw)
    };
    let mut clock = st.clock;
    let r: Result<i64, i32> = (|| match name {
        "__syscall_openat" => {
            let path = path_arg(m, st, &a[0], &a[1])?;
            let flags = s(&a[2]) as i32;
            let mode = if u(&a[3]) != 0 { rd_u32(m, u(&a[3])).unwrap_or(0) } else { 0 };
            st.fs.open(&path, flags, mode, &mut clock).map(i64::from)
        }
        "__syscall_fcntl64" => {
            let fd = s(&a[0]) as i32;
            let cmd = s(&a[1]) as i32;
            let arg = if u(&a[2]) != 0 { rd_i32(m, u(&a[2])).unwrap_or(0) } else { 0 };
            match cmd {
                0 => st.fs.dup(fd, arg, None).map(i64::from),
                1 | 2 => st.fs.flags(fd).map(|_| 0),
                3 => st.fs.flags(fd).map(i64::from),
                4 => st.fs.set_flags(fd, arg).map(|_| 0),
                5 | 12 => {
                    // F_GETLK: `struct flock *` from the varargs; report l_type = F_UNLCK.
                    let flock = rd_ptr(m, u(&a[2]), d).map_err(|_| errno::EINVAL)?;
                    wr(m, flock, &2i16.to_le_bytes()).map_err(|_| errno::EINVAL)?;
                    Ok(0)
                }
                6 | 7 | 13 | 14 => Ok(0),
                _ => Err(errno::EINVAL),
            }
        }
        "__syscall_ioctl" => {
            let fd = s(&a[0]) as i32;
            if !st.fs.is_tty(fd)? {
                return Err(errno::ENOTTY);
            }
            Ok(0)
        }
        "__syscall_dup3" => {
            let (fd, to) = (s(&a[0]) as i32, s(&a[1]) as i32);
            if fd == to {
                return Err(errno::EINVAL);
            }
            st.fs.dup(fd, 0, Some(to)).map(i64::from)
        }
        "__syscall_stat64" | "__syscall_lstat64" => {
            let raw = rd_cstr(m, u(&a[0])).map_err(|_| errno::EINVAL)?;
            let stat = st.fs.stat(&raw, name == "__syscall_stat64")?;
            write_stat(m, d, u(&a[1]), &stat).map_err(|_| errno::EINVAL)?;
            Ok(0)
        }
        "__syscall_fstat64" => {
            let stat = st.fs.fstat(s(&a[0]) as i32)?;
            write_stat(m, d, u(&a[1]), &stat).map_err(|_| errno::EINVAL)?;
            Ok(0)
        }
        "__syscall_newfstatat" => {
            let path = path_arg(m, st, &a[0], &a[1])?;
            let flags = s(&a[3]) as i32;
            let stat = st.fs.stat(&path, flags & 256 == 0)?;
            write_stat(m, d, u(&a[2]), &stat).map_err(|_| errno::EINVAL)?;
            Ok(0)
        }
        "__syscall_mkdirat" => {
            let path = path_arg(m, st, &a[0], &a[1])?;
            st.fs.mkdir(&path, s(&a[2]) as u32, &mut clock).map(|_| 0)
        }
        "__syscall_unlinkat" => {
            let path = path_arg(m, st, &a[0], &a[1])?;
            st.fs.remove(&path, s(&a[2]) & 512 != 0, &mut clock).map(|_| 0)
        }
        "__syscall_rmdir" => {
            let raw = rd_cstr(m, u(&a[0])).map_err(|_| errno::EINVAL)?;
            st.fs.remove(&raw, true, &mut clock).map(|_| 0)
        }
        "__syscall_renameat" => {
            let old = path_arg(m, st, &a[0], &a[1])?;
            let new = path_arg(m, st, &a[2], &a[3])?;
            st.fs.rename(&old, &new, &mut clock).map(|_| 0)
        }
        "__syscall_readlinkat" => {
            let path = path_arg(m, st, &a[0], &a[1])?;
            let (buf, size) = (u(&a[2]), s(&a[3]));
            if size <= 0 {
                return Err(errno::EINVAL);
            }
            let target = st.fs.readlink(&path)?;
            let n = target.len().min(size as usize);
            wr(m, buf, &target.as_bytes()[..n]).map_err(|_| errno::EINVAL)?;
            Ok(n as i64)
        }
        "__syscall_faccessat" => {
            let path = path_arg(m, st, &a[0], &a[1])?;
            st.fs.access(&path).map(|_| 0)
        }
        "__syscall_getcwd" => {
            let (buf, size) = (u(&a[0]), u(&a[1]));
            let cwd = st.fs.cwd();
            if size == 0 {
                return Err(errno::EINVAL);
            }
            if (size as usize) < cwd.len() + 1 {
                return Err(68); // ERANGE
            }
            wr_cstr(m, buf, &cwd, size as usize).map_err(|_| errno::EINVAL)?;
            Ok(cwd.len() as i64 + 1)
        }
        "__syscall_ftruncate64" => {
            let len = if a.len() == 3 { (u(&a[1]) as u32 as u64) | (u(&a[2]) << 32) } else { u(&a[1]) };
            st.fs.truncate(s(&a[0]) as i32, len, &mut clock).map(|_| 0)
        }
        "__syscall_utimensat" => {
            let path = path_arg(m, st, &a[0], &a[1])?;
            let now = clock;
            clock += 1;
            st.fs.touch(&path, now).map(|_| 0)
        }
        "__syscall_chmod" | "__syscall_fchmod" | "__syscall_fchown32" => Ok(0),
        _ => Err(errno::ENOSYS),
    })();
    st.clock = clock;
    Ok(Ret::I(match r {
        Ok(v) => v,
        Err(e) => -(e as i64),
    }))
}

/// An asyncify import (`__asyncjs__weavedrive_*`): in the normal state, allocate the asyncify data
/// buffer and start unwinding (the driver serves the request and rewinds); when rewinding, stop,
/// free the buffer and return the served value — exactly the glue's `Asyncify.handleSleep`.
fn async_import(c: &mut Caller<'_, HostState>, name: &str, a: &[Val]) -> wasmtime::Result<Ret> {
    match c.data().asyncify.state {
        AsyncState::Normal => {
            let pending = match name {
                "__asyncjs__weavedrive_open" => {
                    let mem = memory_of(c)?;
                    let path = rd_cstr(mem.data(&*c), u(&a[0])).map_err(trap)?;
                    PendingAsync::Open { path, mode: s(&a[1]) }
                }
                "__asyncjs__weavedrive_read" => PendingAsync::Read { fd: s(&a[0]), dst: u(&a[1]), len: u(&a[2]) },
                _ => PendingAsync::Close { fd: s(&a[0]) },
            };
            // `Asyncify.allocateData`: a header (stack start, stack end, rewind id of `handle`),
            // then the unwind stack; pointer-sized fields are 64-bit on wasm64.
            let wide = c.data().dialect == Dialect::W64;
            let header = if wide { 24 } else { 12 };
            let data = malloc(c, header + super::ASYNCIFY_STACK_SIZE)?;
            if data == 0 {
                return Err(trap(HostTrap::Abort("Aborted(asyncify: out of memory for the unwind buffer)".into())));
            }
            let (start, end) = (data + header, data + header + super::ASYNCIFY_STACK_SIZE);
            let mem = memory_of(c)?;
            let m = mem.data_mut(&mut *c);
            if wide {
                wr(m, data, &start.to_le_bytes()).map_err(trap)?;
                wr(m, data + 8, &end.to_le_bytes()).map_err(trap)?;
                wr(m, data + 16, &0i32.to_le_bytes()).map_err(trap)?;
            } else {
                wr(m, data, &(start as u32).to_le_bytes()).map_err(trap)?;
                wr(m, data + 4, &(end as u32).to_le_bytes()).map_err(trap)?;
                wr(m, data + 8, &0i32.to_le_bytes()).map_err(trap)?;
            }
            let st = c.data_mut();
            st.asyncify.state = AsyncState::Unwinding;
            st.asyncify.data = Some(data);
            st.asyncify.pending = Some(pending);
            let d = st.dialect;
            let f = st.exports.asyncify_start_unwind;
            call_export(c, f, "asyncify_start_unwind", &[ptr_val(d, data)])?;
            Ok(Ret::I(0))
        }
        AsyncState::Rewinding => {
            let st = c.data_mut();
            st.asyncify.state = AsyncState::Normal;
            let (stop, free) = (st.exports.asyncify_stop_rewind, st.exports.free);
            let data = st.asyncify.data.take();
            let ret = st.asyncify.return_value;
            call_export(c, stop, "asyncify_stop_rewind", &[])?;
            if let Some(p) = data {
                let d = c.data().dialect;
                call_export(c, free, "free", &[ptr_val(d, p)])?;
            }
            Ok(Ret::I(ret))
        }
        AsyncState::Unwinding => Err(wasmtime::format_err!("asyncify import called while unwinding")),
    }
}
