//! Tests for `metalcu::engine::metering`, checked against the reference JS.
//!
//! Every expected byte string, usegas amount and gas total below was produced by running the
//! reference `@permaweb/wasm-metering` 0.2.2 `meterWASM(bytes, { meterType })` (Node 20) on the
//! exact bytes `wat::parse_str` produces for the WAT in this file, and on the fixture modules;
//! amounts were decoded from the JS output with `@permaweb/wasm-json-toolkit`'s `wasm2json`,
//! and gas totals come from instantiating the JS output in Node with a counting `usegas`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use metalcu::engine::metering::{MeterType, MeteringError, instrument};
use sha2::{Digest, Sha256};
use wasmparser::{ExternalKind, Operator, Parser, Payload, TypeRef, Validator, WasmFeatures};

const KITCHEN_SINK: &str = r#"
(module
  (type $v_i (func (param i32)))
  (import "env" "log" (func $log (param i32)))
  (import "env" "mem" (memory 1 2))
  (import "env" "g" (global $gimp i32))
  (import "env" "tick" (func $tick))
  (table 4 funcref)
  (global $g (mut i32) (i32.const 7))
  (global $f (mut f64) (f64.const 1.5))
  (elem (i32.const 0) $fac $helper $log $fac)
  (export "fac" (func $fac))
  (export "log" (func $log))
  (export "loops" (func $loops))
  (export "mem" (memory 0))
  (export "g" (global $g))
  (start $init)
  (func $init (call $tick))
  (func $helper (param i32) (result i32) (local i64 f32 f32)
    (i32.rem_u (i32.div_s (local.get 0) (i32.const 3)) (i32.const -5)))
  (func $fac (param i64) (result i64)
    (if (result i64) (i64.eqz (local.get 0))
      (then (i64.const 1))
      (else (i64.mul (local.get 0) (call $fac (i64.sub (local.get 0) (i64.const 1)))))))
  (func $loops (param i32) (result i32) (local $i i32) (local $x f32)
    (block $out
      (loop $l
        (br_if $out (i32.ge_u (local.get $i) (local.get 0)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (call $log (local.get $i))
        (br $l)))
    (block $a (block $b (br_table $a $b $a (local.get 0))) (nop))
    (block $c (if (local.get 0) (then (br $c)) (else (nop))))
    (drop (memory.grow (i32.const 1)))
    (drop (memory.size))
    (i32.store offset=4 (i32.const 0) (i32.load8_u offset=8 (i32.const 8)))
    (local.set $x (f32.div (f32.sqrt (f32.const 2)) (f32.add (f32.const 1) (local.get $x))))
    (drop (f64.lt (global.get $f) (f64.const -0.25)))
    (call_indirect (type $v_i) (i32.const 1) (i32.const 2))
    (drop (select (i32.const 1) (i32.shl (i32.const 2) (i32.const 3)) (i32.rotl (local.get 0) (i32.const 1))))
    (global.set $g (global.get $gimp))
    (drop (i64.extend_i32_u (i32.wrap_i64 (i64.const 0x7fffffffffff))))
    (return (local.tee $i (i32.const 99))))
  (data (i32.const 16) "hello")
  (@custom "producers-ish" "abc")
)
"#;

const NO_TYPES_NO_IMPORTS: &str = r#"(module (memory 1) (data (i32.const 0) "x"))"#;
const NO_IMPORTS: &str = r#"(module (func (export "f") (result i32) (i32.add (i32.const 1) (i32.const 2))))"#;
const EMPTY: &str = r#"(module)"#;
const NON_ASCII_CUSTOM: &str = r#"(module (@custom "é" "z") (func (export "f") nop))"#;
const ALREADY_METERED: &str = r#"(module (import "metering" "usegas" (func (param i32))))"#;
const BULK_MEMORY: &str = r#"(module (memory 1) (func (memory.fill (i32.const 0) (i32.const 0) (i32.const 0))))"#;

// Reference JS output (hex) for the modules above, one per meter type.
const JS_KITCHEN_SINK_I32: &[&str] = &[
    "0061736d0100000001160560017f0060000060017f017f60017e017e60017f00023d0503656e76036c6f67000003656e",
    "76036d656d0201010203656e760167037f0003656e76047469636b0001086d65746572696e6706757365676173000403",
    "0504010203020404017000040612027f0141070b7c0144000000000000f83f0b071f05036661630005036c6f67000005",
    "6c6f6f70730006036d656d020001670301080103090a010041000b04050400050a940204090041b501100210010b1402",
    "017e027d4195b4041002200041036d417b700b24004181021002200050047e41b6011002420105418004100220002000",
    "42017d10057e0b0bcd0102017f017d41dd0010020240034041d2031002200120004f0d0141a5051002200141016a2101",
    "200110000c000b0b41cd0210020240024020000e020100010b41dc001002010b41d501100202402000044041b5011002",
    "0c0141b50110020541dc001002010b0b41ecce001002410140004188e00010021a3f001a410041082d00083602044300",
    "00004091430000803f200292952102230244000000000000d0bf631a410141021100004101410241037420004101771b",
    "1a2300240142ffffffffffff1fa7ad1a41e30022010f0b0b0b010041100b0568656c6c6f00110d70726f647563657273",
    "2d6973686162630065046e616d6501260600036c6f6701047469636b0204696e6974030668656c706572040366616305",
    "056c6f6f70730209010502010169020178031401050500036f757401016c0201610301620401630406010003765f6907",
    "0d03000467696d70010167020166",
];
const JS_KITCHEN_SINK_I64: &[&str] = &[
    "0061736d0100000001160560017f0060000060017f017f60017e017e60017e00023d0503656e76036c6f67000003656e",
    "76036d656d0201010203656e760167037f0003656e76047469636b0001086d65746572696e6706757365676173000403",
    "0504010203020404017000040612027f0141070b7c0144000000000000f83f0b071f05036661630005036c6f67000005",
    "6c6f6f70730006036d656d020001670301080103090a010041000b04050400050a940204090042b501100210010b1402",
    "017e027d4295b4041002200041036d417b700b24004281021002200050047e42b6011002420105428004100220002000",
    "42017d10057e0b0bcd0102017f017d42dd0010020240034042d2031002200120004f0d0142a5051002200141016a2101",
    "200110000c000b0b42cd0210020240024020000e020100010b42dc001002010b42d501100202402000044042b5011002",
    "0c0142b50110020542dc001002010b0b42ecce001002410140004288e00010021a3f001a410041082d00083602044300",
    "00004091430000803f200292952102230244000000000000d0bf631a410141021100004101410241037420004101771b",
    "1a2300240142ffffffffffff1fa7ad1a41e30022010f0b0b0b010041100b0568656c6c6f00110d70726f647563657273",
    "2d6973686162630065046e616d6501260600036c6f6701047469636b0204696e6974030668656c706572040366616305",
    "056c6f6f70730209010502010169020178031401050500036f757401016c0201610301620401630406010003765f6907",
    "0d03000467696d70010167020166",
];
const JS_NO_TYPES_NO_IMPORTS_I32: &[&str] =
    &["0061736d0100000001050160017f00021301086d65746572696e6706757365676173000005030100010b07010041000b", "0178"];
const JS_NO_TYPES_NO_IMPORTS_I64: &[&str] =
    &["0061736d0100000001050160017e00021301086d65746572696e6706757365676173000005030100010b07010041000b", "0178"];
const JS_NO_IMPORTS_I32: &[&str] = &[
    "0061736d010000000109026000017f60017f00021301086d65746572696e670675736567617300010302010007050101",
    "6600010a0e010c00418a011000410141026a0b",
];
const JS_NO_IMPORTS_I64: &[&str] = &[
    "0061736d010000000109026000017f60017e00021301086d65746572696e670675736567617300010302010007050101",
    "6600010a0e010c00428a011000410141026a0b",
];
const JS_EMPTY_I32: &[&str] = &["0061736d01000000"];
const JS_EMPTY_I64: &[&str] = &["0061736d01000000"];
const JS_NON_ASCII_CUSTOM_I32: &[&str] = &[
    "0061736d0100000001080260000060017f00021301086d65746572696e67067573656761730001030201000705010166",
    "00010a0a01080041dc001000010b000401c3a97a",
];
const JS_NON_ASCII_CUSTOM_I64: &[&str] = &[
    "0061736d0100000001080260000060017e00021301086d65746572696e67067573656761730001030201000705010166",
    "00010a0a01080042dc001000010b000401c3a97a",
];

// usegas amounts per defined function in the reference JS output for KITCHEN_SINK.
// (Identical for i32 and i64; only the const opcode differs.)
const JS_KITCHEN_SINK_AMOUNTS: &[&[i64]] =
    &[&[181], &[72213], &[257, 182, 512], &[93, 466, 677, 333, 92, 213, 181, 181, 92, 10092, 12296]];

// Reference JS results for the fixtures (`/tmp`-side Node script over the JS output):
// function bodies, usegas calls in total, sum of all usegas amounts, the largest number of
// usegas calls in one function, FNV-1a-64 over each function's usegas-call count (u32 LE, in
// code-section order), and the SHA-256 of the whole JS output.
struct FixtureRef {
    file: &'static str,
    meter: MeterType,
    input_sha256: &'static str,
    functions: usize,
    usegas_calls: u64,
    usegas_sum: i64,
    max_calls_in_one_function: u64,
    per_function_calls_fnv: u64,
    output_sha256: &'static str,
}

const FIXTURES: &[FixtureRef] = &[
    FixtureRef {
        file: "aos2-emscripten4.wasm",
        meter: MeterType::I32,
        input_sha256: "a745c4bfd3d175081c5b2bae7bea0445ae120bde5338b461d83ebef94a9c3514",
        functions: 605,
        usegas_calls: 25841,
        usegas_sum: 19501994,
        max_calls_in_one_function: 1212,
        per_function_calls_fnv: 0xc6a68438de9871e3,
        output_sha256: "bdd47ee053e18bb9949cdd42be470009fe100e799d7c0d90561784d8a323c855",
    },
    FixtureRef {
        file: "lua-wasm64.wasm",
        meter: MeterType::I64,
        input_sha256: "e384efd41bdcc4e58eafc31c334c71470a6a40b363a972c90fe72600c0af8682",
        functions: 607,
        usegas_calls: 25892,
        usegas_sum: 19749910,
        max_calls_in_one_function: 1214,
        per_function_calls_fnv: 0x90d044d5bd169556,
        output_sha256: "884a7e0eb25cbc8beb28452aa8039856208edb1ef7da748eeb34a1a9c13eab19",
    },
];

fn wat(src: &str) -> Vec<u8> {
    wat::parse_str(src).expect("test WAT must parse")
}

fn unhex(chunks: &[&str]) -> Vec<u8> {
    hex::decode(chunks.concat()).expect("valid hex")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn validate(wasm: &[u8], features: WasmFeatures) {
    Validator::new_with_features(features).validate_all(wasm).expect("metered module must validate");
}

/// What the metering left in a module: the index of the `metering.usegas` import and, per
/// defined function, the amounts passed to it (each `call usegas` must follow a const).
struct Metered {
    usegas_index: u32,
    amounts: Vec<Vec<i64>>,
}

fn decode_metered(wasm: &[u8]) -> Metered {
    let mut usegas_index = None;
    let mut amounts = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("parse") {
            Payload::ImportSection(reader) => {
                let mut funcs = 0;
                for import in reader {
                    let import = import.expect("import");
                    if let TypeRef::Func(_) = import.ty {
                        if (import.module, import.name) == ("metering", "usegas") {
                            usegas_index = Some(funcs);
                        }
                        funcs += 1;
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let usegas = usegas_index.expect("usegas import precedes code");
                let mut fn_amounts = Vec::new();
                let mut prev = None;
                for op in body.get_operators_reader().expect("ops").into_iter() {
                    let op = op.expect("op");
                    if let Operator::Call { function_index } = op
                        && function_index == usegas
                    {
                        fn_amounts.push(match prev {
                            Some(Operator::I32Const { value }) => i64::from(value),
                            Some(Operator::I64Const { value }) => value,
                            other => panic!("usegas call after {other:?}"),
                        });
                    }
                    prev = Some(op);
                }
                amounts.push(fn_amounts);
            }
            _ => {}
        }
    }
    Metered { usegas_index: usegas_index.expect("module imports metering.usegas"), amounts }
}

#[test]
fn kitchen_sink_is_byte_identical_to_reference() {
    let input = wat(KITCHEN_SINK);
    for (meter, expected) in [(MeterType::I32, JS_KITCHEN_SINK_I32), (MeterType::I64, JS_KITCHEN_SINK_I64)] {
        let out = instrument(&input, meter).expect("instrument");
        assert_eq!(hex::encode(&out), expected.concat(), "{meter:?}");
        validate(&out, WasmFeatures::default());
        let metered = decode_metered(&out);
        // Two imported functions (log, tick) come first, so usegas is function 2.
        assert_eq!(metered.usegas_index, 2);
        assert_eq!(metered.amounts, JS_KITCHEN_SINK_AMOUNTS, "{meter:?}");
    }
}

#[test]
fn kitchen_sink_index_space_is_shifted_like_reference() {
    let out = instrument(&wat(KITCHEN_SINK), MeterType::I32).expect("instrument");
    let mut exports = Vec::new();
    let mut start = None;
    let mut elements = Vec::new();
    let mut types = 0;
    let mut last_import = None;
    let mut calls = Vec::new();
    for payload in Parser::new(0).parse_all(&out) {
        match payload.expect("parse") {
            Payload::TypeSection(r) => types = r.count(),
            Payload::ImportSection(r) => {
                last_import = r.into_iter().last().map(|i| {
                    let i = i.expect("import");
                    (i.module.to_string(), i.name.to_string(), i.ty)
                })
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.expect("export");
                    if e.kind == ExternalKind::Func {
                        exports.push((e.name.to_string(), e.index));
                    }
                }
            }
            Payload::StartSection { func, .. } => start = Some(func),
            Payload::ElementSection(r) => {
                for e in r {
                    if let wasmparser::ElementItems::Functions(f) = e.expect("elem").items {
                        elements.extend(f.into_iter().map(|f| f.expect("func")));
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                for op in body.get_operators_reader().expect("ops").into_iter() {
                    if let Operator::Call { function_index } = op.expect("op") {
                        calls.push(function_index);
                    }
                }
            }
            _ => {}
        }
    }
    // The usegas type is appended after the 4 declared types; the import after the others.
    assert_eq!(types, 5);
    assert_eq!(last_import, Some(("metering".into(), "usegas".into(), TypeRef::Func(4))));
    // Before: log=0 tick=1 init=2 helper=3 fac=4 loops=5; after: usegas=2, defined +1.
    assert_eq!(exports, [("fac".into(), 5), ("log".into(), 0), ("loops".into(), 6)]);
    assert_eq!(start, Some(3));
    assert_eq!(elements, [5, 4, 0, 5]);
    // init: usegas, tick; fac: usegas x3 + recursive call; loops: usegas x11 + log.
    let non_meter: Vec<u32> = calls.into_iter().filter(|&c| c != 2).collect();
    assert_eq!(non_meter, [1, 5, 0]);
}

#[test]
fn kitchen_sink_gas_matches_reference_execution() {
    use wasmtime::{
        Caller, Engine, Global, GlobalType, Linker, Memory, MemoryType, Module, Mutability, Store, Val, ValType,
    };
    #[derive(Default)]
    struct Host {
        gas: i64,
        logs: Vec<i32>,
        ticks: u32,
    }
    let engine = Engine::default();
    for meter in [MeterType::I32, MeterType::I64] {
        let out = instrument(&wat(KITCHEN_SINK), meter).expect("instrument");
        let module = Module::new(&engine, &out).expect("compile");
        let mut store = Store::new(&engine, Host::default());
        let mut linker = Linker::new(&engine);
        linker.func_wrap("env", "log", |mut c: Caller<'_, Host>, x: i32| c.data_mut().logs.push(x)).unwrap();
        linker.func_wrap("env", "tick", |mut c: Caller<'_, Host>| c.data_mut().ticks += 1).unwrap();
        let mem = Memory::new(&mut store, MemoryType::new(1, Some(2))).unwrap();
        linker.define(&store, "env", "mem", mem).unwrap();
        let g = Global::new(&mut store, GlobalType::new(ValType::I32, Mutability::Const), Val::I32(42)).unwrap();
        linker.define(&store, "env", "g", g).unwrap();
        match meter {
            MeterType::I32 => linker
                .func_wrap("metering", "usegas", |mut c: Caller<'_, Host>, x: i32| c.data_mut().gas += i64::from(x)),
            MeterType::I64 => {
                linker.func_wrap("metering", "usegas", |mut c: Caller<'_, Host>, x: i64| c.data_mut().gas += x)
            }
        }
        .unwrap();
        let instance = linker.instantiate(&mut store, &module).expect("instantiate");
        // Reference (Node): start function uses 181, fac(5) = 120 uses 4284,
        // loops(3) = 99 uses 27103 and logs 1, 2, 3 then 1 (via call_indirect).
        assert_eq!(store.data().gas, 181, "{meter:?} start");
        assert_eq!(store.data().ticks, 1);
        let fac = instance.get_typed_func::<i64, i64>(&mut store, "fac").unwrap();
        assert_eq!(fac.call(&mut store, 5).unwrap(), 120);
        assert_eq!(store.data().gas, 181 + 4284, "{meter:?} fac");
        let loops = instance.get_typed_func::<i32, i32>(&mut store, "loops").unwrap();
        assert_eq!(loops.call(&mut store, 3).unwrap(), 99);
        assert_eq!(store.data().gas, 181 + 4284 + 27103, "{meter:?} loops");
        assert_eq!(store.data().logs, [1, 2, 3, 1]);
    }
}

#[test]
fn missing_type_and_import_sections_are_created_like_reference() {
    for (src, i32_ref, i64_ref) in [
        (NO_TYPES_NO_IMPORTS, JS_NO_TYPES_NO_IMPORTS_I32, JS_NO_TYPES_NO_IMPORTS_I64),
        (NO_IMPORTS, JS_NO_IMPORTS_I32, JS_NO_IMPORTS_I64),
        // Nothing after where the sections would go: the reference adds nothing.
        (EMPTY, JS_EMPTY_I32, JS_EMPTY_I64),
    ] {
        let input = wat(src);
        for (meter, expected) in [(MeterType::I32, i32_ref), (MeterType::I64, i64_ref)] {
            let out = instrument(&input, meter).expect("instrument");
            assert_eq!(out, unhex(expected), "{src} {meter:?}");
            validate(&out, WasmFeatures::default());
        }
    }
    // (func (result i32) i32.const 1 i32.const 2 i32.add): 1 + 1 + 45 + end 0, + 91 overhead.
    let out = instrument(&wat(NO_IMPORTS), MeterType::I32).unwrap();
    let metered = decode_metered(&out);
    assert_eq!(metered.usegas_index, 0);
    assert_eq!(metered.amounts, [[138]]);
}

#[test]
fn custom_section_names_keep_the_reference_utf16_length_quirk() {
    // The toolkit writes a name's JS string length (1 for "é") before its UTF-8 bytes (2).
    let input = wat(NON_ASCII_CUSTOM);
    for (meter, expected) in [(MeterType::I32, JS_NON_ASCII_CUSTOM_I32), (MeterType::I64, JS_NON_ASCII_CUSTOM_I64)] {
        let out = instrument(&input, meter).expect("instrument");
        assert_eq!(out, unhex(expected), "{meter:?}");
        assert!(out.ends_with(&[0x00, 0x04, 0x01, 0xc3, 0xa9, b'z']));
    }
}

#[test]
fn rejects_what_the_reference_rejects() {
    // Reference: throws "importing metering function is not allowed".
    let err = instrument(&wat(ALREADY_METERED), MeterType::I32).unwrap_err();
    assert!(matches!(err, MeteringError::AlreadyMetered), "{err}");
    // Reference: 0xfc opcodes are not in its table; it throws a TypeError.
    for meter in [MeterType::I32, MeterType::I64] {
        let err = instrument(&wat(BULK_MEMORY), meter).unwrap_err();
        assert!(matches!(&err, MeteringError::Unsupported(m) if m.contains("MemoryFill")), "{err}");
    }
    let err = instrument(b"\0asm\x01\0\0\0\x01", MeterType::I32).unwrap_err();
    assert!(matches!(err, MeteringError::Parse(_)), "{err}");
}

fn fixtures_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("METALCU_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/modules"));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("fixture modules not found at {} (set METALCU_FIXTURES)", dir.display());
    }
    eprintln!("note: fixture modules not found at {}; skipping", dir.display());
    None
}

#[test]
fn fixtures_are_metered_exactly_like_reference() {
    let Some(dir) = fixtures_dir() else { return };
    for f in FIXTURES {
        let input = std::fs::read(dir.join(f.file)).unwrap_or_else(|e| panic!("reading fixture {}: {e}", f.file));
        assert_eq!(sha256_hex(&input), f.input_sha256, "{} changed; re-measure the reference numbers", f.file);
        let t = Instant::now();
        let out = instrument(&input, f.meter).expect("instrument fixture");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "{} took {took:?}", f.file);

        let features = match f.meter {
            MeterType::I32 => WasmFeatures::default(),
            MeterType::I64 => WasmFeatures::default() | WasmFeatures::MEMORY64,
        };
        validate(&out, features);

        let metered = decode_metered(&out);
        // Both fixtures import 32 functions before usegas.
        assert_eq!(metered.usegas_index, 32, "{}", f.file);
        assert_eq!(metered.amounts.len(), f.functions, "{}", f.file);
        let counts: Vec<u64> = metered.amounts.iter().map(|a| a.len() as u64).collect();
        // Measured: every function in the JS output has at least one usegas call.
        assert!(counts.iter().all(|&c| c > 0), "{}: a function got no usegas call", f.file);
        assert_eq!(counts.iter().sum::<u64>(), f.usegas_calls, "{}", f.file);
        assert_eq!(counts.iter().max().copied(), Some(f.max_calls_in_one_function));
        let sum: i64 = metered.amounts.iter().flatten().sum();
        assert_eq!(sum, f.usegas_sum, "{}", f.file);
        let mut fnv: u64 = 0xcbf2_9ce4_8422_2325;
        for &c in &counts {
            for b in (c as u32).to_le_bytes() {
                fnv = (fnv ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        assert_eq!(fnv, f.per_function_calls_fnv, "{}: per-function counts differ", f.file);
        assert_eq!(sha256_hex(&out), f.output_sha256, "{}: not byte-identical", f.file);
    }
}
