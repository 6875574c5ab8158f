//! Tests for `metalcu::engine::gasinline`: the rewritten module must count gas exactly as the
//! original does with the reference host's `usegas`, and must stay otherwise unchanged.

mod common;

use std::time::Instant;

use metalcu::engine::gasinline::{
    GAS_LIMIT_EXPORT, GAS_USED_EXPORT, GLOBAL_EXPORT_PREFIX, GasInlineError, export_mutable_globals, inline_usegas,
};
use metalcu::engine::metering::{MeterType, instrument};
use wasmparser::{ExternalKind, Operator, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures};
use wasmtime::{Caller, Engine, Extern, Instance, Linker, Module, Store, Val};

/// A module that meters itself with `usegas({T})`: calls in a function with params and locals,
/// in a loop, inside a block, behind `call_indirect`, with a computed amount and an amount taken
/// from a parameter (`{B}`).
const METERED: &str = r#"
(module
  (type $ii_i (func (param i32 i32) (result i32)))
  (import "env" "g" (global $gimp i32))
  (import "env" "log" (func $log (param i32)))
  (import "metering" "usegas" (func $usegas (param {T})))
  (import "env" "tick" (func $tick))
  (memory 1)
  (table 2 funcref)
  (global $progress (mut i32) (i32.const 0))
  (global $k i32 (i32.const 3))
  (elem (i32.const 0) $add $leaf)
  (export "run" (func $run))
  (export "progress" (global $progress))
  (export "memory" (memory 0))
  (func $add (param $a i32) (param $b i32) (result i32) (local $x i64) (local $y f32)
    (call $usegas ({T}.const 7))
    (local.set $x (i64.extend_i32_s (local.get $a)))
    (local.set $y (f32.const 1.5))
    (global.set $progress (i32.add (global.get $progress) (i32.const 1)))
    (call $usegas {B})
    (i32.add (i32.wrap_i64 (local.get $x)) (local.get $b)))
  (func $leaf (param i32 i32) (result i32)
    (call $usegas ({T}.add ({T}.const 1) ({T}.const 2)))
    (i32.mul (local.get 0) (global.get $k)))
  (func $run (param $n i32) (result i32) (local $i i32) (local $acc i32)
    (call $usegas ({T}.const 5))
    (block $out
      (loop $l
        (call $usegas ({T}.const 3))
        (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
        (block $inner
          (call $usegas ({T}.const 2))
          (local.set $acc (call $add (local.get $acc) (local.get $i)))
          (br_if $inner (i32.and (local.get $i) (i32.const 1)))
          (call $usegas ({T}.const 11))
          (local.set $acc
            (call_indirect (type $ii_i) (local.get $acc) (i32.const 2)
              (i32.and (i32.shr_u (local.get $i) (i32.const 1)) (i32.const 1)))))
        (call $log (local.get $i))
        (i32.store (i32.const 0) (local.get $acc))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $usegas ({T}.const 0))
    (local.get $acc))
  (@custom "trailer" "kept")
)
"#;

fn metered_wat(ty: &str) -> Vec<u8> {
    let b = if ty == "i32" { "(local.get $b)" } else { "(i64.extend_i32_u (local.get $b))" };
    wat::parse_str(METERED.replace("{T}", ty).replace("{B}", b)).expect("wat")
}

/// What the host observed during a run.
#[derive(Default)]
struct Host {
    /// Reference counter (original module).
    used: i64,
    limit: i64,
    logs: Vec<i32>,
    usegas_calls: u32,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Returned(i32),
    OutOfGas,
}

/// The result of one `run(n)` call under one limit.
#[derive(Debug, PartialEq)]
struct Run {
    outcome: Outcome,
    gas: i64,
    progress: i32,
    mem0: i32,
    logs: Vec<i32>,
}

fn engine() -> Engine {
    let mut c = wasmtime::Config::new();
    c.wasm_memory64(true);
    Engine::new(&c).expect("engine")
}

fn out_of_gas() -> wasmtime::Error {
    wasmtime::Error::msg("out of gas!")
}

/// Links `env.*` and a `metering.usegas` of param type `i64` or `i32`: the reference behaviour
/// when `inlined` is false, the "just trap" behaviour of the rewritten contract otherwise.
fn linker(engine: &Engine, amount_i64: bool, inlined: bool) -> Linker<Host> {
    let mut l = Linker::new(engine);
    l.func_wrap("env", "log", |mut c: Caller<'_, Host>, v: i32| c.data_mut().logs.push(v)).unwrap();
    l.func_wrap("env", "tick", || {}).unwrap();
    fn charge(c: &mut Caller<'_, Host>, amount: i64, inlined: bool) -> wasmtime::Result<()> {
        c.data_mut().usegas_calls += 1;
        if inlined {
            // Only called on overrun, with `used` already including `amount`.
            let g = |c: &mut Caller<'_, Host>, name| match c.get_export(name) {
                Some(Extern::Global(g)) => g.get(&mut *c).unwrap_i64(),
                _ => panic!("missing {name}"),
            };
            let (used, limit) = (g(c, GAS_USED_EXPORT), g(c, GAS_LIMIT_EXPORT));
            assert!(used > limit, "usegas({amount}) called with used {used} <= limit {limit}");
            return Err(out_of_gas());
        }
        let h = c.data_mut();
        h.used += amount;
        if h.used > h.limit { Err(out_of_gas()) } else { Ok(()) }
    }
    if amount_i64 {
        l.func_wrap("metering", "usegas", move |mut c: Caller<'_, Host>, a: i64| charge(&mut c, a, inlined))
    } else {
        l.func_wrap("metering", "usegas", move |mut c: Caller<'_, Host>, a: i32| charge(&mut c, a.into(), inlined))
    }
    .unwrap();
    l
}

fn run(engine: &Engine, module: &Module, amount_i64: bool, inlined: bool, limit: i64, n: i32) -> Run {
    let mut store = Store::new(engine, Host { limit, ..Host::default() });
    let mut l = linker(engine, amount_i64, inlined);
    let g = wasmtime::Global::new(
        &mut store,
        wasmtime::GlobalType::new(wasmtime::ValType::I32, wasmtime::Mutability::Const),
        Val::I32(0),
    )
    .unwrap();
    l.define(&mut store, "env", "g", g).unwrap();
    let inst: Instance = l.instantiate(&mut store, module).expect("instantiate");
    if inlined {
        inst.get_global(&mut store, GAS_USED_EXPORT).unwrap().set(&mut store, Val::I64(0)).unwrap();
        inst.get_global(&mut store, GAS_LIMIT_EXPORT).unwrap().set(&mut store, Val::I64(limit)).unwrap();
    }
    let f = inst.get_typed_func::<i32, i32>(&mut store, "run").unwrap();
    let outcome = match f.call(&mut store, n) {
        Ok(v) => Outcome::Returned(v),
        Err(e) => {
            assert!(format!("{e:?}").contains("out of gas!"), "unexpected error: {e:?}");
            Outcome::OutOfGas
        }
    };
    let gas = if inlined {
        inst.get_global(&mut store, GAS_USED_EXPORT).unwrap().get(&mut store).unwrap_i64()
    } else {
        store.data().used
    };
    let progress = inst.get_global(&mut store, "progress").unwrap().get(&mut store).unwrap_i32();
    let mut mem0 = [0u8; 4];
    inst.get_memory(&mut store, "memory").unwrap().read(&store, 0, &mut mem0).unwrap();
    let calls = store.data().usegas_calls;
    if inlined {
        // The host is reached exactly once, on the overrun, and never otherwise.
        assert_eq!(calls, u32::from(outcome == Outcome::OutOfGas));
    }
    Run { outcome, gas, progress, mem0: i32::from_le_bytes(mem0), logs: std::mem::take(&mut store.into_data().logs) }
}

fn assert_same_behaviour(ty: &str) {
    let amount_i64 = ty == "i64";
    let original = metered_wat(ty);
    let rewritten = inline_usegas(&original).unwrap().expect("module imports usegas");
    validate(&rewritten);
    let engine = engine();
    let m_orig = Module::new(&engine, &original).unwrap();
    let m_new = Module::new(&engine, &rewritten).unwrap();
    for n in [0, 1, 2, 5] {
        let full = run(&engine, &m_orig, amount_i64, false, i64::MAX, n);
        assert!(matches!(full.outcome, Outcome::Returned(_)));
        let total = full.gas;
        assert!(total > 0);
        assert_eq!(run(&engine, &m_new, amount_i64, true, i64::MAX, n), full, "{ty} n={n} unlimited");
        let mut traps = 0;
        for limit in 0..=total + 1 {
            let a = run(&engine, &m_orig, amount_i64, false, limit, n);
            let b = run(&engine, &m_new, amount_i64, true, limit, n);
            assert_eq!(a, b, "{ty} n={n} limit={limit}");
            assert_eq!(a.outcome == Outcome::OutOfGas, limit < total, "{ty} n={n} limit={limit}: {a:?}");
            traps += u32::from(a.outcome == Outcome::OutOfGas);
        }
        assert_eq!(traps as i64, total, "{ty} n={n}");
    }
}

#[test]
fn i32_meter_counts_and_traps_like_the_reference_host() {
    assert_same_behaviour("i32");
}

#[test]
fn i64_meter_counts_and_traps_like_the_reference_host() {
    assert_same_behaviour("i64");
}

#[test]
fn modules_without_usegas_are_left_alone() {
    for wat in [
        "(module)",
        r#"(module (func (export "f") (result i32) i32.const 1))"#,
        r#"(module (import "metering" "other" (func (param i32))) (func (call 0 (i32.const 1))))"#,
        r#"(module (import "a" "usegas" (func (param i32))) (memory 1) (data (i32.const 0) "x"))"#,
        r#"(module (import "metering" "usegas" (global i32)))"#,
    ] {
        assert!(inline_usegas(&wat::parse_str(wat).unwrap()).unwrap().is_none(), "{wat}");
    }
}

#[test]
fn missing_global_and_export_sections_are_created() {
    for wat in [
        r#"(module (import "metering" "usegas" (func $u (param i32))) (func (call $u (i32.const 4))))"#,
        r#"(module (import "metering" "usegas" (func (param i64))))"#,
        r#"(module (import "metering" "usegas" (func $u (param i64))) (memory 1)
             (func $s (call $u (i64.const 4))) (start $s) (data (i32.const 0) "x") (@custom "c" "d"))"#,
    ] {
        let original = wat::parse_str(wat).unwrap();
        let out = inline_usegas(&original).unwrap().expect("imports usegas");
        validate(&out);
        let info = inspect(&out);
        assert_eq!(info.globals, vec![(ValType::I64, true); 2], "{wat}");
        assert_eq!(info.exports, vec![gas_export(GAS_USED_EXPORT, 0), gas_export(GAS_LIMIT_EXPORT, 1)], "{wat}");
        assert_eq!(inspect(&original).customs, info.customs);
    }
}

#[test]
fn usegas_reachable_other_than_by_call_is_rejected() {
    let cases = [
        r#"(module (import "metering" "usegas" (func $u (param i32))) (export "u" (func $u)))"#,
        r#"(module (import "metering" "usegas" (func $u (param i32))) (table 1 funcref) (elem (i32.const 0) $u))"#,
        r#"(module (import "metering" "usegas" (func $u (param i32))) (elem declare func $u)
             (func (drop (ref.func $u))))"#,
        r#"(module (import "metering" "usegas" (func $u (param i64)))
             (func (param i64) (return_call $u (local.get 0))))"#,
    ];
    for wat in cases {
        let err = inline_usegas(&wat::parse_str(wat).unwrap()).unwrap_err();
        assert!(matches!(err, GasInlineError::Escapes(_)), "{wat}: {err}");
    }
    let bad = r#"(module (import "metering" "usegas" (func (param i32) (result i32))))"#;
    assert!(matches!(inline_usegas(&wat::parse_str(bad).unwrap()), Err(GasInlineError::BadSignature(_))));
    let twice =
        r#"(module (import "metering" "usegas" (func (param i32))) (import "metering" "usegas" (func (param i32))))"#;
    assert!(matches!(inline_usegas(&wat::parse_str(twice).unwrap()), Err(GasInlineError::DuplicateImport)));
    let taken = format!(
        r#"(module (import "metering" "usegas" (func (param i32)))
             (global (export "{GAS_USED_EXPORT}") i32 (i32.const 0)))"#
    );
    assert!(matches!(inline_usegas(&wat::parse_str(&taken).unwrap()), Err(GasInlineError::ExportExists(_))));
    assert!(inline_usegas(b"not wasm").is_err());

    // 1 param + `n` locals + the scratch local must stay within the 50 000 locals limit.
    let many = |n: usize| {
        let locals = " i32".repeat(n);
        let wat = format!(
            r#"(module (import "metering" "usegas" (func $u (param i32)))
                 (func (param i32) (local{locals}) (call $u (local.get 0))))"#
        );
        inline_usegas(&wat::parse_str(wat).unwrap())
    };
    validate(&many(49_998).unwrap().unwrap());
    assert!(matches!(many(49_999), Err(GasInlineError::TooManyLocals(0))));
}

#[test]
fn wat_modules_keep_their_structure() {
    for ty in ["i32", "i64"] {
        let original = metered_wat(ty);
        check_rewrite(ty, &original, &inline_usegas(&original).unwrap().unwrap());
    }
}

fn fixture_dir() -> Option<std::path::PathBuf> {
    common::shared_dir().map(|d| d.join("fixtures/modules"))
}

#[test]
fn fixture_modules_are_rewritten() {
    let Some(dir) = fixture_dir() else { return };
    for name in ["lua-emscripten1", "happy-emscripten1", "sad-emscripten1", "lua-emscripten2", "aos1-emscripten2"] {
        let original = std::fs::read(dir.join(format!("{name}.wasm"))).unwrap();
        let t = Instant::now();
        let out = inline_usegas(&original).unwrap().expect("fixture imports usegas");
        let took = t.elapsed();
        let calls = check_rewrite(name, &original, &out);
        eprintln!("{name}: {} bytes, {calls} usegas calls inlined in {took:?}", original.len());
        assert!(took.as_secs_f64() < 2.0, "{name}: rewriting took {took:?}");
    }
}

#[test]
fn metering_instrument_output_is_rewritten() {
    let Some(dir) = fixture_dir() else { return };
    for (name, meter) in [("aos2-emscripten4", MeterType::I32), ("lua-wasm64", MeterType::I64)] {
        let original = instrument(&std::fs::read(dir.join(format!("{name}.wasm"))).unwrap(), meter).unwrap();
        let t = Instant::now();
        let out = inline_usegas(&original).unwrap().expect("instrumented module imports usegas");
        let took = t.elapsed();
        let calls = check_rewrite(name, &original, &out);
        eprintln!("{name} ({meter:?}): {} bytes, {calls} usegas calls inlined in {took:?}", original.len());
        assert!(took.as_secs_f64() < 2.0, "{name}: rewriting took {took:?}");
    }
}

// ---- structural checks -------------------------------------------------------------------------

fn validate(wasm: &[u8]) {
    let features = WasmFeatures::default() | WasmFeatures::MEMORY64;
    if let Err(e) = Validator::new_with_features(features).validate_all(wasm) {
        panic!("rewritten module does not validate: {e}");
    }
}

fn gas_export(name: &str, index: u32) -> (String, ExternalKind, u32) {
    (name.to_string(), ExternalKind::Global, index)
}

/// What the checks need to know about a module.
#[derive(Default)]
struct Info {
    /// `(id, bytes)` of every section other than global, export and code, in order.
    other_sections: Vec<(u8, Vec<u8>)>,
    customs: Vec<(String, Vec<u8>)>,
    imports: Vec<(String, String, String)>,
    usegas: Option<(u32, ValType)>,
    imported_globals: u32,
    /// Defined globals: `(type, mutable)`.
    globals: Vec<(ValType, bool)>,
    exports: Vec<(String, ExternalKind, u32)>,
    /// Per body: number of locals declared, and its operators.
    bodies: Vec<(u32, Vec<Operator<'static>>)>,
    raw_bodies: Vec<Vec<u8>>,
    /// Params of each defined function.
    params: Vec<u32>,
}

fn inspect(wasm: &[u8]) -> Info {
    let mut info = Info::default();
    let mut type_params = Vec::new();
    let mut funcs = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.unwrap();
        match &payload {
            Payload::TypeSection(r) => {
                for ty in r.clone().into_iter_err_on_gc_types() {
                    type_params.push(ty.unwrap().params().len() as u32);
                }
            }
            Payload::ImportSection(r) => {
                for imp in r.clone() {
                    let imp = imp.unwrap();
                    info.imports.push((imp.module.into(), imp.name.into(), format!("{:?}", imp.ty)));
                    match imp.ty {
                        TypeRef::Func(ty) => {
                            if (imp.module, imp.name) == ("metering", "usegas") {
                                info.usegas = Some((funcs, param_type(wasm, ty)));
                            }
                            funcs += 1;
                        }
                        TypeRef::Global(_) => info.imported_globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for ty in r.clone() {
                    info.params.push(type_params[ty.unwrap() as usize]);
                }
            }
            Payload::GlobalSection(r) => {
                for g in r.clone() {
                    let g = g.unwrap();
                    info.globals.push((g.ty.content_type, g.ty.mutable));
                }
            }
            Payload::ExportSection(r) => {
                for e in r.clone() {
                    let e = e.unwrap();
                    info.exports.push((e.name.into(), e.kind, e.index));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut n = 0;
                for l in body.get_locals_reader().unwrap() {
                    n += l.unwrap().0;
                }
                let mut ops = Vec::new();
                let mut r = body.get_operators_reader().unwrap();
                while !r.eof() {
                    ops.push(static_op(r.read().unwrap()));
                }
                info.bodies.push((n, ops));
                info.raw_bodies.push(body.as_bytes().to_vec());
            }
            Payload::CustomSection(c) => info.customs.push((c.name().into(), c.data().to_vec())),
            _ => {}
        }
        if let Some((id, range)) = payload.as_section()
            && ![6, 7, 10].contains(&id)
        {
            info.other_sections.push((id, wasm[range].to_vec()));
        }
    }
    info
}

fn param_type(wasm: &[u8], ty: u32) -> ValType {
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::TypeSection(r) = payload.unwrap() {
            let f = r.into_iter_err_on_gc_types().nth(ty as usize).unwrap().unwrap();
            return f.params()[0];
        }
    }
    unreachable!()
}

/// Keeps only the operators the checks compare (others become `Nop`) so that they can outlive
/// the module bytes.
fn static_op(op: Operator<'_>) -> Operator<'static> {
    use Operator::*;
    match op {
        Call { function_index } => Call { function_index },
        LocalGet { local_index } => LocalGet { local_index },
        LocalTee { local_index } => LocalTee { local_index },
        GlobalGet { global_index } => GlobalGet { global_index },
        GlobalSet { global_index } => GlobalSet { global_index },
        If { blockty } => If { blockty },
        I64Add => I64Add,
        I64GtS => I64GtS,
        I64ExtendI32S => I64ExtendI32S,
        End => End,
        _ => Nop,
    }
}

/// Checks `out` against `original`; returns the number of inlined `usegas` calls.
fn check_rewrite(what: &str, original: &[u8], out: &[u8]) -> usize {
    validate(out);
    let (a, b) = (inspect(original), inspect(out));
    let (usegas, amount) = a.usegas.expect("original imports usegas");
    assert_eq!(b.usegas, a.usegas, "{what}: usegas import moved");
    assert_eq!(a.imports, b.imports, "{what}: imports changed");
    assert_eq!(a.other_sections, b.other_sections, "{what}: a section other than global/export/code changed");
    assert_eq!(a.customs, b.customs, "{what}: custom sections changed");

    // Globals: the originals, then `used` and `limit`.
    assert_eq!(b.globals.len(), a.globals.len() + 2, "{what}");
    assert_eq!(b.globals[..a.globals.len()], a.globals[..], "{what}");
    assert_eq!(b.globals[a.globals.len()..], [(ValType::I64, true); 2], "{what}");
    let used = a.imported_globals + a.globals.len() as u32;
    // Exports: the originals, then the two globals.
    let mut want = a.exports.clone();
    want.push(gas_export(GAS_USED_EXPORT, used));
    want.push(gas_export(GAS_LIMIT_EXPORT, used + 1));
    assert_eq!(b.exports, want, "{what}: exports");

    // Code: every `call usegas` is now guarded, with a scratch local appended.
    let call = Operator::Call { function_index: usegas };
    let mut head = vec![Operator::LocalTee { local_index: 0 }];
    if amount == ValType::I32 {
        head.push(Operator::I64ExtendI32S);
    }
    assert_eq!(a.bodies.len(), b.bodies.len(), "{what}");
    let mut total = 0;
    for (i, ((na, ops_a), (nb, ops_b))) in a.bodies.iter().zip(&b.bodies).enumerate() {
        let calls = ops_a.iter().filter(|op| **op == call).count();
        assert_eq!(ops_b.iter().filter(|op| **op == call).count(), calls, "{what}: body {i}");
        total += calls;
        if calls == 0 {
            assert!(a.raw_bodies[i] == b.raw_bodies[i], "{what}: body {i} without usegas changed");
            continue;
        }
        assert_eq!(*nb, na + 1, "{what}: body {i} scratch local");
        let tmp = a.params[i] + na;
        let mut guard = head.clone();
        guard[0] = Operator::LocalTee { local_index: tmp };
        guard.extend([
            Operator::GlobalGet { global_index: used },
            Operator::I64Add,
            Operator::GlobalSet { global_index: used },
            Operator::GlobalGet { global_index: used },
            Operator::GlobalGet { global_index: used + 1 },
            Operator::I64GtS,
            Operator::If { blockty: wasmparser::BlockType::Empty },
            Operator::LocalGet { local_index: tmp },
            call.clone(),
            Operator::End,
        ]);
        // Replace each guard in the output by the bare call; the result must be the original.
        let mut folded = Vec::with_capacity(ops_a.len());
        let mut k = 0;
        while k < ops_b.len() {
            if ops_b[k..].starts_with(&guard) {
                folded.push(call.clone());
                k += guard.len();
            } else {
                assert_ne!(ops_b[k], call, "{what}: body {i}: unguarded usegas call at op {k}");
                folded.push(ops_b[k].clone());
                k += 1;
            }
        }
        assert_eq!(&folded, ops_a, "{what}: body {i}");
    }
    assert!(total > 0, "{what}: no usegas calls found");
    total
}

// ---- export_mutable_globals --------------------------------------------------------------------

/// Imported globals (mutable and not), defined mutable and immutable globals of every kind, and
/// exports including an already-exported mutable global. `step(n)` mutates the globals and
/// returns a digest of all of them.
const GLOBALS: &str = r#"
(module
  (import "env" "gim" (global $gim (mut i32)))
  (import "env" "gi" (global $gi i64))
  (import "env" "f" (func $f (param i64)))
  (memory (export "memory") 1)
  (global $a (mut i32) (i32.const 5))
  (global $c i32 (i32.const 7))
  (global $b (mut i64) (i64.const -1))
  (global $d f64 (f64.const 1.5))
  (global $e (mut f32) (f32.const 2.5))
  (global $h (mut i64) (global.get $gi))
  (global $v (mut v128) (v128.const i64x2 1 2))
  (global $r (mut funcref) (ref.null func))
  (export "a" (global $a))
  (export "step" (func $step))
  (export "c" (global $c))
  (elem declare func $step)
  (func $step (param $n i32) (result i64)
    (global.set $a (i32.add (global.get $a) (local.get $n)))
    (global.set $b (i64.add (i64.mul (global.get $b) (i64.const 3)) (i64.extend_i32_s (local.get $n))))
    (global.set $gim (i32.add (global.get $gim) (i32.const 1)))
    (global.set $e (f32.add (global.get $e) (f32.const 1)))
    (global.set $h (i64.add (global.get $h) (i64.extend_i32_s (global.get $a))))
    (global.set $v (i64x2.add (global.get $v) (i64x2.splat (global.get $b))))
    (global.set $r (ref.func $step))
    (call $f (global.get $b))
    (i64.add (i64.add (i64.add (global.get $b) (global.get $h)) (i64.trunc_f32_s (global.get $e)))
      (i64.add (i64.add (i64x2.extract_lane 0 (global.get $v)) (i64x2.extract_lane 1 (global.get $v)))
        (i64.extend_i32_s (i32.add (global.get $a) (i32.add (global.get $c) (global.get $gim)))))))
  (@custom "trailer" "kept")
)
"#;

/// Indices of the defined mutable globals of [`GLOBALS`]: `$a $b $e $h $v $r`.
const GLOBALS_MUTABLE: [u32; 6] = [2, 4, 6, 7, 8, 9];

fn global_export_name(index: u32) -> String {
    format!("{GLOBAL_EXPORT_PREFIX}{index}")
}

/// Every section as `(id, bytes)`, section header included.
fn raw_sections(wasm: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut prev_end = 8;
    for payload in Parser::new(0).parse_all(wasm) {
        if let Some((id, range)) = payload.unwrap().as_section() {
            out.push((id, wasm[prev_end..range.end].to_vec()));
            prev_end = range.end;
        }
    }
    assert_eq!(prev_end, wasm.len());
    out
}

/// Checks `out` (with `exported` returned) against `original`: every section but the export
/// section byte for byte identical, the export section in its place, exports appended for
/// exactly the defined mutable globals, in order. Returns the number of new exports.
fn check_exported(what: &str, original: &[u8], out: &[u8], exported: &[u32]) -> usize {
    validate(out);
    let (a, b) = (inspect(original), inspect(out));
    let want: Vec<u32> =
        (a.imported_globals..).zip(&a.globals).filter(|(_, (_, mutable))| *mutable).map(|(i, _)| i).collect();
    assert_eq!(exported, want, "{what}: exported globals");
    if exported.is_empty() {
        assert!(out == original, "{what}: changed without mutable globals");
        return 0;
    }
    let mut exports = a.exports.clone();
    exports.extend(want.iter().map(|&i| gas_export(&global_export_name(i), i)));
    assert_eq!(b.exports, exports, "{what}: exports");

    let (sa, sb) = (raw_sections(original), raw_sections(out));
    let pos = |s: &[(u8, Vec<u8>)], id| s.iter().position(|(i, _)| *i == id);
    let export_at = pos(&sb, 7).expect("export section");
    assert_eq!(sb.iter().filter(|(id, _)| *id == 7).count(), 1, "{what}");
    match pos(&sa, 7) {
        Some(at) => assert_eq!(at, export_at, "{what}: export section moved"),
        None => assert_eq!(pos(&sa, 6).unwrap() + 1, export_at, "{what}: export section not after globals"),
    }
    let strip = |s: &[(u8, Vec<u8>)]| s.iter().filter(|(id, _)| *id != 7).cloned().collect::<Vec<_>>();
    assert!(strip(&sa) == strip(&sb), "{what}: a section other than the export section changed");
    exported.len()
}

#[derive(Debug, PartialEq)]
struct GlobalsRun {
    results: Vec<i64>,
    logs: Vec<i64>,
    gim: i32,
    a: i32,
}

/// A fresh instance of `module` with its imports; `env.f` logs into the store.
fn globals_instance(engine: &Engine, module: &Module, gim: i32) -> (Store<Vec<i64>>, Instance, wasmtime::Global) {
    let mut store = Store::new(engine, Vec::new());
    let mut l = Linker::new(engine);
    let ty = |m| wasmtime::GlobalType::new(wasmtime::ValType::I32, m);
    let gim = wasmtime::Global::new(&mut store, ty(wasmtime::Mutability::Var), Val::I32(gim)).unwrap();
    let i64_const = wasmtime::GlobalType::new(wasmtime::ValType::I64, wasmtime::Mutability::Const);
    let gi = wasmtime::Global::new(&mut store, i64_const, Val::I64(1000)).unwrap();
    l.define(&mut store, "env", "gim", gim).unwrap();
    l.define(&mut store, "env", "gi", gi).unwrap();
    l.func_wrap("env", "f", |mut c: Caller<'_, Vec<i64>>, v: i64| c.data_mut().push(v)).unwrap();
    let inst = l.instantiate(&mut store, module).expect("instantiate");
    (store, inst, gim)
}

fn run_steps(store: &mut Store<Vec<i64>>, inst: &Instance, gim: wasmtime::Global, steps: &[i32]) -> GlobalsRun {
    let step = inst.get_typed_func::<i32, i64>(&mut *store, "step").unwrap();
    let results = steps.iter().map(|&n| step.call(&mut *store, n).unwrap()).collect();
    let a = inst.get_global(&mut *store, "a").unwrap().get(&mut *store).unwrap_i32();
    GlobalsRun { results, logs: std::mem::take(store.data_mut()), gim: gim.get(&mut *store).unwrap_i32(), a }
}

/// The values of the globals exported by `export_mutable_globals`, as comparable numbers
/// (funcref: whether it is non-null).
fn exported_values(store: &mut Store<Vec<i64>>, inst: &Instance, indices: &[u32]) -> Vec<u128> {
    indices
        .iter()
        .map(|&i| match inst.get_global(&mut *store, &global_export_name(i)).unwrap().get(&mut *store) {
            Val::I32(v) => v as u32 as u128,
            Val::I64(v) => v as u64 as u128,
            Val::F32(v) => v as u128,
            Val::F64(v) => v as u128,
            Val::V128(v) => v.as_u128(),
            Val::FuncRef(f) => u128::from(f.is_some()),
            v => panic!("unexpected global value {v:?}"),
        })
        .collect()
}

#[test]
fn mutable_globals_are_exported() {
    let original = wat::parse_str(GLOBALS).unwrap();
    let (out, exported) = export_mutable_globals(&original).unwrap();
    assert_eq!(exported, GLOBALS_MUTABLE);
    assert_eq!(check_exported("globals", &original, &out, &exported), 6);
    let names: Vec<String> = inspect(&out).exports.into_iter().map(|e| e.0).collect();
    let want =
        ["memory", "a", "step", "c"].into_iter().map(String::from).chain(GLOBALS_MUTABLE.map(global_export_name));
    assert_eq!(names, want.collect::<Vec<_>>());
    assert_eq!(names[4], "__metalcu_global_2");

    let engine = engine();
    let (m_orig, m_new) = (Module::new(&engine, &original).unwrap(), Module::new(&engine, &out).unwrap());
    let steps = [3, -2, 10, 0, 7];
    let (mut s1, i1, g1) = globals_instance(&engine, &m_orig, 40);
    let (mut s2, i2, g2) = globals_instance(&engine, &m_new, 40);
    let initial = vec![5, u128::from(u64::MAX), u128::from(2.5f32.to_bits()), 1000, 1 | (2 << 64), 0];
    assert_eq!(exported_values(&mut s2, &i2, &exported), initial);

    let r1 = run_steps(&mut s1, &i1, g1, &steps);
    let r2 = run_steps(&mut s2, &i2, g2, &steps);
    assert_eq!(r1, r2);
    assert_eq!(r1.a, 5 + steps.iter().sum::<i32>());

    // The new exports read the state: model it in Rust.
    let (mut a, mut b, mut e, mut h, mut v) = (5i32, -1i64, 2.5f32, 1000i64, [1i64, 2]);
    for &n in &steps {
        a += n;
        b = b * 3 + i64::from(n);
        e += 1.0;
        h += i64::from(a);
        v = [v[0].wrapping_add(b), v[1].wrapping_add(b)];
    }
    let v128 = u128::from(v[0] as u64) | (u128::from(v[1] as u64) << 64);
    let want = vec![u128::from(a as u32), u128::from(b as u64), u128::from(e.to_bits()), u128::from(h as u64), v128, 1];
    assert_eq!(exported_values(&mut s2, &i2, &exported), want);
    let digest = b + h + e as i64 + v[0].wrapping_add(v[1]) + i64::from(a + 7 + 40 + steps.len() as i32);
    assert_eq!(r2.results.last().copied(), Some(digest));

    // Restoring the exported globals (and the host's imported one) into a fresh instance resumes
    // it: both then behave like the original instance.
    let (mut s3, i3, g3) = globals_instance(&engine, &m_new, r2.gim);
    for &i in &exported {
        let name = global_export_name(i);
        let value = match i2.get_global(&mut s2, &name).unwrap().get(&mut s2) {
            Val::FuncRef(Some(_)) => Val::FuncRef(Some(i3.get_func(&mut s3, "step").unwrap())),
            v => v,
        };
        i3.get_global(&mut s3, &name).unwrap().set(&mut s3, value).unwrap();
    }
    assert_eq!(exported_values(&mut s3, &i3, &exported), want);
    let more = [4, -9, 1];
    let r1 = run_steps(&mut s1, &i1, g1, &more);
    assert_eq!(run_steps(&mut s2, &i2, g2, &more), r1);
    assert_eq!(run_steps(&mut s3, &i3, g3, &more), r1);
}

#[test]
fn missing_export_section_is_created_after_the_globals() {
    for wat in [
        r#"(module (global (mut i32) (i32.const 1)) (global i64 (i64.const 2)) (func) (start 0) (@custom "c" "d"))"#,
        r#"(module (import "e" "g" (global (mut i64))) (global i32 (i32.const 1)) (global (mut i64) (i64.const 2))
             (@custom "after-globals" (after global) "x") (memory 1) (data (i32.const 0) "z"))"#,
        r#"(module (memory i64 1) (global (mut i64) (i64.const 0))
             (func (i64.store (global.get 0) (i64.const 5))) (data (i64.const 8) "y"))"#,
    ] {
        let original = wat::parse_str(wat).unwrap();
        assert!(inspect(&original).exports.is_empty());
        let (out, exported) = export_mutable_globals(&original).unwrap();
        assert_eq!(check_exported(wat, &original, &out, &exported), 1, "{wat}");
    }
}

#[test]
fn modules_without_mutable_defined_globals_are_unchanged() {
    for wat in [
        "(module)",
        r#"(module (global i32 (i32.const 1)) (export "g" (global 0)))"#,
        r#"(module (import "e" "g" (global (mut i32))) (func (global.set 0 (i32.const 1))))"#,
    ] {
        let original = wat::parse_str(wat).unwrap();
        let (out, exported) = export_mutable_globals(&original).unwrap();
        assert!(exported.is_empty(), "{wat}");
        assert!(out == original, "{wat}");
    }
}

#[test]
fn colliding_export_names_are_rejected() {
    let taken = |name: &str| {
        let wat = format!(
            r#"(module (import "e" "g" (global i32)) (global (mut i32) (i32.const 0)) (func (export "{name}")))"#
        );
        export_mutable_globals(&wat::parse_str(wat).unwrap())
    };
    assert!(matches!(taken("__metalcu_global_1"), Err(GasInlineError::ExportExists(n)) if n == "__metalcu_global_1"));
    for name in ["__metalcu_global_0", "__metalcu_global_01", "__metalcu_global_2", "__metalcu_global_", "x"] {
        let (out, exported) = taken(name).unwrap();
        assert_eq!(exported, [1], "{name}");
        validate(&out);
    }
    assert!(export_mutable_globals(b"not wasm").is_err());
    assert!(matches!(export_mutable_globals(&wat::parse_str("(component)").unwrap()), Err(GasInlineError::NotAModule)));
}

#[test]
fn export_mutable_globals_composes_with_inline_usegas() {
    let engine = engine();
    for ty in ["i32", "i64"] {
        let amount_i64 = ty == "i64";
        let original = metered_wat(ty);
        // The engine's order: inline first, then export (the gas globals get exported too).
        let inlined = inline_usegas(&original).unwrap().unwrap();
        let (a, exported_a) = export_mutable_globals(&inlined).unwrap();
        check_exported(ty, &inlined, &a, &exported_a);
        // 1 imported global, `$progress` (mutable) and `$k`, then `used` and `limit`.
        assert_eq!(exported_a, [1, 3, 4]);
        // The other order.
        let (exported_first, exported_b) = export_mutable_globals(&original).unwrap();
        assert_eq!(exported_b, [1]);
        let b = inline_usegas(&exported_first).unwrap().unwrap();
        check_rewrite(ty, &exported_first, &b);

        let m_orig = Module::new(&engine, &original).unwrap();
        for module in [&a, &b] {
            let m = Module::new(&engine, module).unwrap();
            for n in [0, 3] {
                let full = run(&engine, &m_orig, amount_i64, false, i64::MAX, n);
                for limit in [0, full.gas / 2, full.gas - 1, full.gas, i64::MAX] {
                    let want = run(&engine, &m_orig, amount_i64, false, limit, n);
                    assert_eq!(run(&engine, &m, amount_i64, true, limit, n), want, "{ty} n={n} limit={limit}");
                }
            }
        }
    }
}

#[test]
fn fixture_modules_export_their_mutable_globals() {
    let Some(dir) = fixture_dir() else { return };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures in {}", dir.display());
    for path in names {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let original = std::fs::read(&path).unwrap();
        let input = inline_usegas(&original).unwrap().unwrap_or(original);
        let t = Instant::now();
        let (out, exported) = export_mutable_globals(&input).unwrap();
        let took = t.elapsed();
        let info = inspect(&input);
        let mutable = info.globals.iter().filter(|(_, m)| *m).count();
        assert_eq!(exported.len(), mutable, "{name}");
        assert_eq!(inspect(&out).exports.len(), info.exports.len() + mutable, "{name}");
        check_exported(&name, &input, &out, &exported);
        eprintln!("{name}: {} bytes, {mutable} mutable globals exported in {took:?}", input.len());
        assert!(took.as_secs_f64() < 0.2, "{name}: export_mutable_globals took {took:?}");
    }
}
