//! Gas metering instrumentation, a byte-exact port of `meterWASM(wasm, { meterType })` from
//! the npm package `@permaweb/wasm-metering` 0.2.2 with its default cost table, as bundled by
//! the ao reference host `@permaweb/ao-loader` 0.0.49 (which meters `wasm32-…-metering`
//! modules with `i32` and `wasm64-…-metering` modules with `i64`). The reference decodes the
//! module to JSON with `@permaweb/wasm-json-toolkit` 0.2.9, rewrites it and re-encodes it; this
//! module reads with `wasmparser` and writes with `wasm-encoder` so that the output is the same
//! bytes the reference produces.
//!
//! What the rewrite does, exactly as the reference does it:
//! * a type `(func (param i32|i64))` is appended to the end of the type section, and an import
//!   `metering.usegas` of that type is appended to the end of the import section (either section
//!   is created first if missing, placed before the first non-custom section with a larger
//!   reference section id, and only if such a section exists);
//! * the import becomes function index `F` = number of imported functions, so every function
//!   index `>= F` is shifted by one in `call`, exports, the start section and element segments
//!   (custom sections such as `name` are copied untouched, i.e. not remapped);
//! * each function body is cut into segments that end with (and include) one of `end`, `br`,
//!   `br_if`, `br_table`, `if`, `else`, `return`, `loop` or `memory.grow`; a segment whose
//!   summed operator cost is non-zero is preceded by `i32.const|i64.const (cost + 91)` and
//!   `call F` (91 = cost of that const + call). Operator costs are looked up by the reference
//!   name without its type prefix, so e.g. `f32.div` and `f64.lt` cost 0 while `f32.add` costs
//!   45. With the default table, function type and local costs are always 0.
//! * everything else (including LEB128s, which become minimal) is re-encoded the same way the
//!   toolkit re-encodes it, including its quirk of prefixing import and custom section names
//!   with their UTF-16 length.
//!
//! Invariants: the output is byte-identical to the reference for every module the reference
//! can handle. Inputs the reference toolkit cannot represent faithfully (any operator outside
//! MVP + sign-extension, multi-value, non-MVP element/data segment encodings, reference types
//! beyond `funcref`, multi-memory immediates, tags, …) are rejected with
//! [`MeteringError::Unsupported`] rather than silently diverging; a module that already imports
//! `metering.usegas` is rejected like the reference does.

use std::borrow::Cow;

use wasm_encoder::{
    CodeSection, ConstExpr, DataCountSection, DataSection, ElementSection, Elements, Encode, EntityType, ExportKind,
    ExportSection, Function, FunctionSection, GlobalSection, GlobalType, Ieee32, Ieee64, Instruction, MemorySection,
    MemoryType, Module, RawSection, RefType, StartSection, TableSection, TableType, TypeSection, ValType,
};
use wasmparser::{
    BinaryReader, BlockType, CompositeInnerType, DataKind, ElementItems, ElementKind, ExternalKind, MemArg, Operator,
    Parser, Payload, TableInit, TypeRef,
};

/// The register type of the gas amount passed to `metering.usegas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterType {
    /// `usegas(i32)`, used for `wasm32-unknown-emscripten-metering`.
    I32,
    /// `usegas(i64)`, used for `wasm64-unknown-emscripten-draft_2024_10_16-metering`.
    I64,
}

impl MeterType {
    fn val_type(self) -> ValType {
        match self {
            MeterType::I32 => ValType::I32,
            MeterType::I64 => ValType::I64,
        }
    }
}

/// Why a module could not be metered.
#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    /// The input is not a well-formed WebAssembly module.
    #[error("cannot parse wasm module: {0}")]
    Parse(#[from] wasmparser::BinaryReaderError),
    /// The input uses something the reference metering toolkit cannot handle.
    #[error("unsupported by the reference metering (@permaweb/wasm-json-toolkit): {0}")]
    Unsupported(String),
    /// The input already imports the metering function.
    #[error("importing metering function is not allowed (module already imports metering.usegas)")]
    AlreadyMetered,
    /// A segment's gas cost does not fit the meter's integer type.
    #[error("gas cost {0} of a code segment does not fit an i32 meter")]
    CostOverflow(u64),
    /// Re-encoding an operator failed.
    #[error("cannot re-encode wasm: {0}")]
    Encode(String),
}

/// Import module name of the metering function.
pub const METERING_MODULE: &str = "metering";
/// Import field name of the metering function.
pub const METERING_FIELD: &str = "usegas";

/// Cost of the inserted `<meterType>.const` (1) plus `call` (90).
const METERING_OVERHEAD: u64 = 91;

/// Largest integer that bn.js `toNumber()` accepts (2^53 - 1).
const JS_MAX_SAFE: u64 = (1 << 53) - 1;

fn unsupported(what: impl Into<String>) -> MeteringError {
    MeteringError::Unsupported(what.into())
}

/// Rewrites `wasm` like @permaweb/wasm-metering's meterWASM with the default cost table.
pub fn instrument(wasm: &[u8], meter: MeterType) -> Result<Vec<u8>, MeteringError> {
    let mut st = State {
        meter,
        module: Module::new(),
        type_seen: false,
        import_seen: false,
        meter_type: None,
        meter_func: 0,
        code: None,
        scratch: Vec::new(),
    };
    let mut parser = Parser::new(0);
    parser.set_features(wasmparser::WasmFeatures::all());
    for payload in parser.parse_all(wasm) {
        match payload? {
            Payload::Version { encoding, num, .. } => {
                if encoding != wasmparser::Encoding::Module || num != 1 {
                    return Err(unsupported("not a version-1 core wasm module"));
                }
            }
            Payload::TypeSection(reader) => {
                st.before_section(1)?;
                let mut sec = TypeSection::new();
                for group in reader {
                    let group = group?;
                    if group.is_explicit_rec_group() {
                        return Err(unsupported("explicit recursion group in type section"));
                    }
                    for sub in group.types() {
                        let CompositeInnerType::Func(f) = &sub.composite_type.inner else {
                            return Err(unsupported("non-function type"));
                        };
                        if !sub.is_final || sub.supertype_idx.is_some() || sub.composite_type.shared {
                            return Err(unsupported("GC subtyping / shared function type"));
                        }
                        if f.results().len() > 1 {
                            return Err(unsupported("function type with multiple results"));
                        }
                        let params = f.params().iter().map(|t| val_type(*t));
                        let params = params.collect::<Result<Vec<_>, _>>()?;
                        let results = f.results().iter().map(|t| val_type(*t));
                        let results = results.collect::<Result<Vec<_>, _>>()?;
                        sec.ty().function(params, results);
                    }
                }
                st.meter_type = Some(sec.len());
                sec.ty().function([meter.val_type()], []);
                st.type_seen = true;
                st.module.section(&sec);
            }
            Payload::ImportSection(reader) => {
                st.before_section(2)?;
                let count = reader.count();
                let mut body = Vec::new();
                (count + 1).encode(&mut body);
                let mut func_imports = 0u32;
                for import in reader {
                    let import = import?;
                    if import.module == METERING_MODULE && import.name == METERING_FIELD {
                        return Err(MeteringError::AlreadyMetered);
                    }
                    let ty = match import.ty {
                        TypeRef::Func(idx) => {
                            func_imports += 1;
                            EntityType::Function(idx)
                        }
                        TypeRef::Table(t) => EntityType::Table(table_type(t)?),
                        TypeRef::Memory(m) => EntityType::Memory(memory_type(m)?),
                        TypeRef::Global(g) => EntityType::Global(global_type(g)?),
                        TypeRef::Tag(_) => return Err(unsupported("tag import")),
                    };
                    js_name(import.module, &mut body);
                    js_name(import.name, &mut body);
                    ty.encode(&mut body);
                }
                st.meter_func = func_imports;
                st.push_meter_import(&mut body)?;
                st.import_seen = true;
                st.module.section(&RawSection { id: 2, data: &body });
            }
            Payload::FunctionSection(reader) => {
                st.before_section(3)?;
                let mut sec = FunctionSection::new();
                for ty in reader {
                    sec.function(ty?);
                }
                st.module.section(&sec);
            }
            Payload::TableSection(reader) => {
                st.before_section(4)?;
                let mut sec = TableSection::new();
                for table in reader {
                    let table = table?;
                    if !matches!(table.init, TableInit::RefNull) {
                        return Err(unsupported("table with an initializer expression"));
                    }
                    sec.table(table_type(table.ty)?);
                }
                st.module.section(&sec);
            }
            Payload::MemorySection(reader) => {
                st.before_section(5)?;
                let mut sec = MemorySection::new();
                for mem in reader {
                    sec.memory(memory_type(mem?)?);
                }
                st.module.section(&sec);
            }
            Payload::GlobalSection(reader) => {
                st.before_section(6)?;
                let mut sec = GlobalSection::new();
                for global in reader {
                    let global = global?;
                    sec.global(global_type(global.ty)?, &const_expr(&global.init_expr)?);
                }
                st.module.section(&sec);
            }
            Payload::ExportSection(reader) => {
                st.before_section(7)?;
                let mut sec = ExportSection::new();
                for export in reader {
                    let export = export?;
                    let (kind, index) = match export.kind {
                        ExternalKind::Func => (ExportKind::Func, st.remap(export.index)),
                        ExternalKind::Table => (ExportKind::Table, export.index),
                        ExternalKind::Memory => (ExportKind::Memory, export.index),
                        ExternalKind::Global => (ExportKind::Global, export.index),
                        _ => return Err(unsupported(format!("export kind {:?}", export.kind))),
                    };
                    sec.export(export.name, kind, index);
                }
                st.module.section(&sec);
            }
            Payload::StartSection { func, .. } => {
                st.before_section(8)?;
                st.module.section(&StartSection { function_index: st.remap(func) });
            }
            Payload::ElementSection(reader) => {
                st.before_section(9)?;
                let mut sec = ElementSection::new();
                for elem in reader {
                    let elem = elem?;
                    let (ElementKind::Active { table_index: None, offset_expr }, ElementItems::Functions(funcs)) =
                        (&elem.kind, &elem.items)
                    else {
                        return Err(unsupported("element segment other than MVP active funcref"));
                    };
                    let funcs = funcs.clone().into_iter().map(|f| f.map(|f| st.remap(f)));
                    let funcs = funcs.collect::<Result<Vec<u32>, _>>()?;
                    sec.active(None, &const_expr(offset_expr)?, Elements::Functions(Cow::Owned(funcs)));
                }
                st.module.section(&sec);
            }
            Payload::DataCountSection { count, .. } => {
                st.before_section(12)?;
                st.module.section(&DataCountSection { count });
            }
            Payload::CodeSectionStart { count, .. } => {
                st.before_section(10)?;
                st.code = Some((CodeSection::new(), count));
                st.flush_code_if_done();
            }
            Payload::CodeSectionEntry(body) => {
                let func = st.meter_body(wasm, &body)?;
                let (sec, remaining) = st.code.as_mut().expect("code entry outside code section");
                sec.function(&func);
                *remaining -= 1;
                st.flush_code_if_done();
            }
            Payload::DataSection(reader) => {
                st.before_section(11)?;
                let mut sec = DataSection::new();
                for data in reader {
                    let data = data?;
                    let flags = BinaryReader::new(&wasm[data.range.start..], 0).read_var_u32()?;
                    match (&data.kind, flags) {
                        (DataKind::Active { memory_index: 0, offset_expr }, 0) => {
                            sec.active(0, &const_expr(offset_expr)?, data.data.iter().copied());
                        }
                        _ => return Err(unsupported("data segment other than MVP active")),
                    }
                }
                st.module.section(&sec);
            }
            Payload::CustomSection(reader) => {
                let mut body = Vec::new();
                js_name(reader.name(), &mut body);
                body.extend_from_slice(reader.data());
                st.module.section(&RawSection { id: 0, data: &body });
            }
            Payload::End(_) => {}
            other => {
                return Err(unsupported(format!("section {:?}", other.as_section().map(|(id, _)| id))));
            }
        }
    }
    Ok(st.module.finish())
}

struct State {
    meter: MeterType,
    module: Module,
    type_seen: bool,
    import_seen: bool,
    /// Index of the appended `(func (param meter))` type, once the type section is done.
    meter_type: Option<u32>,
    /// Function index of `metering.usegas` = number of imported functions.
    meter_func: u32,
    code: Option<(CodeSection, u32)>,
    scratch: Vec<u8>,
}

impl State {
    /// Mirrors the reference's `createSection` for the type and import sections: a missing
    /// section is inserted before the first non-custom section with a larger section id.
    fn before_section(&mut self, js_id: u8) -> Result<(), MeteringError> {
        if !self.type_seen && js_id > 1 {
            let mut sec = TypeSection::new();
            sec.ty().function([self.meter.val_type()], []);
            self.meter_type = Some(0);
            self.type_seen = true;
            self.module.section(&sec);
        }
        if !self.import_seen && js_id > 2 {
            let mut body = Vec::new();
            1u32.encode(&mut body);
            self.meter_func = 0;
            self.push_meter_import(&mut body)?;
            self.import_seen = true;
            self.module.section(&RawSection { id: 2, data: &body });
        }
        Ok(())
    }

    fn push_meter_import(&self, body: &mut Vec<u8>) -> Result<(), MeteringError> {
        let ty = self.meter_type.ok_or_else(|| unsupported("import section without a type section"))?;
        js_name(METERING_MODULE, body);
        js_name(METERING_FIELD, body);
        EntityType::Function(ty).encode(body);
        Ok(())
    }

    fn remap(&self, func: u32) -> u32 {
        if func >= self.meter_func { func + 1 } else { func }
    }

    fn flush_code_if_done(&mut self) {
        if let Some((_, 0)) = &self.code {
            let (sec, _) = self.code.take().expect("checked above");
            self.module.section(&sec);
        }
    }

    /// `meterCodeEntry`: splits the body into segments ending at a branching operator and
    /// prefixes each segment of non-zero cost with a `usegas(cost + 91)` call.
    fn meter_body(&mut self, wasm: &[u8], body: &wasmparser::FunctionBody) -> Result<Function, MeteringError> {
        let mut locals = Vec::new();
        for local in body.get_locals_reader()? {
            let (count, ty) = local?;
            locals.push((count, val_type(ty)?));
        }
        let mut func = Function::new(locals);
        let seg = &mut self.scratch;
        seg.clear();
        let mut cost: u64 = 0;
        let mut ops = body.get_operators_reader()?;
        while !ops.eof() {
            let pos = ops.original_position();
            let op = ops.read()?;
            let Some((op_cost, branching)) = op_cost(&op) else {
                return Err(unsupported(format!("operator {op:?}")));
            };
            // Every operator the toolkit knows has a one-byte opcode.
            seg.push(wasm[pos]);
            encode_immediates(&op, self.meter_func, seg)?;
            cost += op_cost;
            if branching {
                if cost != 0 {
                    cost += METERING_OVERHEAD;
                    match self.meter {
                        MeterType::I32 => {
                            let c = i32::try_from(cost).map_err(|_| MeteringError::CostOverflow(cost))?;
                            func.instruction(&Instruction::I32Const(c));
                        }
                        MeterType::I64 => {
                            let c = i64::try_from(cost).map_err(|_| MeteringError::CostOverflow(cost))?;
                            func.instruction(&Instruction::I64Const(c));
                        }
                    }
                    func.instruction(&Instruction::Call(self.meter_func));
                }
                func.raw(seg.drain(..));
                cost = 0;
            }
        }
        if !seg.is_empty() {
            // The reference reads past the end of the body here and throws.
            return Err(unsupported("function body does not end with a branching operator"));
        }
        Ok(func)
    }
}

/// Writes a name the way wasm-json-toolkit does: its JS (UTF-16) length, then its UTF-8 bytes.
/// Identical to the standard encoding for ASCII names.
fn js_name(name: &str, sink: &mut Vec<u8>) {
    (name.encode_utf16().count() as u32).encode(sink);
    sink.extend_from_slice(name.as_bytes());
}

/// The toolkit's `LANGUAGE_TYPES`: i32, i64, f32, f64 and `anyFunc` (0x70).
fn val_type(ty: wasmparser::ValType) -> Result<ValType, MeteringError> {
    Ok(match ty {
        wasmparser::ValType::I32 => ValType::I32,
        wasmparser::ValType::I64 => ValType::I64,
        wasmparser::ValType::F32 => ValType::F32,
        wasmparser::ValType::F64 => ValType::F64,
        wasmparser::ValType::Ref(r) if r == wasmparser::RefType::FUNCREF => ValType::FUNCREF,
        other => return Err(unsupported(format!("value type {other:?}"))),
    })
}

fn table_type(t: wasmparser::TableType) -> Result<TableType, MeteringError> {
    if t.element_type != wasmparser::RefType::FUNCREF {
        return Err(unsupported(format!("table element type {:?}", t.element_type)));
    }
    Ok(TableType {
        element_type: RefType::FUNCREF,
        table64: t.table64,
        minimum: t.initial,
        maximum: t.maximum,
        shared: t.shared,
    })
}

fn memory_type(m: wasmparser::MemoryType) -> Result<MemoryType, MeteringError> {
    if m.page_size_log2.is_some() {
        return Err(unsupported("custom page size"));
    }
    if m.initial > JS_MAX_SAFE || m.maximum.is_some_and(|max| max > JS_MAX_SAFE) {
        return Err(unsupported("memory limits beyond 2^53"));
    }
    Ok(MemoryType {
        minimum: m.initial,
        maximum: m.maximum,
        memory64: m.memory64,
        shared: m.shared,
        page_size_log2: None,
    })
}

fn global_type(g: wasmparser::GlobalType) -> Result<GlobalType, MeteringError> {
    Ok(GlobalType { val_type: val_type(g.content_type)?, mutable: g.mutable, shared: g.shared })
}

/// The toolkit's `initExpr`: exactly one operator followed by `end`.
fn const_expr(expr: &wasmparser::ConstExpr) -> Result<ConstExpr, MeteringError> {
    let mut reader = expr.get_operators_reader();
    let first = reader.read()?;
    let second = reader.read()?;
    if !matches!(second, Operator::End) || !reader.eof() {
        return Err(unsupported("extended constant expression"));
    }
    Ok(match first {
        Operator::I32Const { value } => ConstExpr::i32_const(value),
        Operator::I64Const { value } => ConstExpr::i64_const(value),
        Operator::F32Const { value } => ConstExpr::f32_const(Ieee32::new(value.bits())),
        Operator::F64Const { value } => ConstExpr::f64_const(Ieee64::new(value.bits())),
        Operator::GlobalGet { global_index } => ConstExpr::global_get(global_index),
        other => return Err(unsupported(format!("constant expression {other:?}"))),
    })
}

/// Writes an operator's immediates the way the toolkit's `immediataryGenerators` do (minimal
/// LEB128s; single bytes for the `call_indirect` table and `memory.size/grow` memory), with
/// `call` targets at or past the metering import shifted by one. Rejects immediates the
/// toolkit would misread.
fn encode_immediates(op: &Operator, meter_func: u32, sink: &mut Vec<u8>) -> Result<(), MeteringError> {
    use Operator::*;
    let memarg = |m: &MemArg, sink: &mut Vec<u8>| {
        if m.memory != 0 {
            return Err(unsupported("multi-memory memory immediate"));
        }
        if m.offset > JS_MAX_SAFE {
            return Err(unsupported("memory offset beyond 2^53"));
        }
        u32::from(m.align).encode(sink);
        m.offset.encode(sink);
        Ok(())
    };
    match op {
        Block { blockty } | Loop { blockty } | If { blockty } => match blockty {
            BlockType::Empty => wasm_encoder::BlockType::Empty.encode(sink),
            BlockType::Type(t) => val_type(*t)?.encode(sink),
            BlockType::FuncType(_) => return Err(unsupported("multi-value block type")),
        },
        Br { relative_depth } | BrIf { relative_depth } => relative_depth.encode(sink),
        BrTable { targets } => {
            targets.len().encode(sink);
            for target in targets.targets() {
                target?.encode(sink);
            }
            targets.default().encode(sink);
        }
        Call { function_index } => {
            let f = *function_index;
            if f >= meter_func { f + 1 } else { f }.encode(sink);
        }
        CallIndirect { type_index, table_index } => {
            let table = u8::try_from(*table_index)
                .ok()
                .filter(|t| *t <= 0x7f)
                .ok_or_else(|| unsupported("call_indirect table index > 127"))?;
            type_index.encode(sink);
            sink.push(table);
        }
        MemorySize { mem } | MemoryGrow { mem } => {
            let mem =
                u8::try_from(*mem).ok().filter(|m| *m <= 0x7f).ok_or_else(|| unsupported("memory index > 127"))?;
            sink.push(mem);
        }
        LocalGet { local_index } | LocalSet { local_index } | LocalTee { local_index } => local_index.encode(sink),
        GlobalGet { global_index } | GlobalSet { global_index } => global_index.encode(sink),
        I32Load { memarg: m }
        | I64Load { memarg: m }
        | F32Load { memarg: m }
        | F64Load { memarg: m }
        | I32Load8S { memarg: m }
        | I32Load8U { memarg: m }
        | I32Load16S { memarg: m }
        | I32Load16U { memarg: m }
        | I64Load8S { memarg: m }
        | I64Load8U { memarg: m }
        | I64Load16S { memarg: m }
        | I64Load16U { memarg: m }
        | I64Load32S { memarg: m }
        | I64Load32U { memarg: m }
        | I32Store { memarg: m }
        | I64Store { memarg: m }
        | F32Store { memarg: m }
        | F64Store { memarg: m }
        | I32Store8 { memarg: m }
        | I32Store16 { memarg: m }
        | I64Store8 { memarg: m }
        | I64Store16 { memarg: m }
        | I64Store32 { memarg: m } => memarg(m, sink)?,
        I32Const { value } => value.encode(sink),
        I64Const { value } => value.encode(sink),
        F32Const { value } => sink.extend_from_slice(&value.bits().to_le_bytes()),
        F64Const { value } => sink.extend_from_slice(&value.bits().to_le_bytes()),
        _ => {}
    }
    Ok(())
}

/// `(cost, branching)` of an operator under the default cost table, or `None` for operators
/// the toolkit's opcode table does not know (it throws on them). Costs are keyed by the
/// reference's operator name without the type prefix (`i32.add` -> `add`).
fn op_cost(op: &Operator) -> Option<(u64, bool)> {
    use Operator::*;
    Some(match op {
        // "unreachable", "nop", "block": 1; "loop", "if": 1 and branching.
        Unreachable | Nop | Block { .. } => (1, false),
        Loop { .. } | If { .. } => (1, true),
        // "else", "br", "br_if", "return": 90, branching; "end": 0 (not in table), branching.
        Else | Br { .. } | BrIf { .. } | Return => (90, true),
        End => (0, true),
        BrTable { .. } => (120, true),
        Call { .. } => (90, false),
        CallIndirect { .. } => (10000, false),
        Drop | Select => (120, false),
        LocalGet { .. } | LocalSet { .. } | LocalTee { .. } => (120, false),
        GlobalGet { .. } | GlobalSet { .. } => (120, false),
        I32Load { .. }
        | I64Load { .. }
        | F32Load { .. }
        | F64Load { .. }
        | I32Load8S { .. }
        | I32Load8U { .. }
        | I32Load16S { .. }
        | I32Load16U { .. }
        | I64Load8S { .. }
        | I64Load8U { .. }
        | I64Load16S { .. }
        | I64Load16U { .. }
        | I64Load32S { .. }
        | I64Load32U { .. } => (120, false),
        I32Store { .. }
        | I64Store { .. }
        | F32Store { .. }
        | F64Store { .. }
        | I32Store8 { .. }
        | I32Store16 { .. }
        | I64Store8 { .. }
        | I64Store16 { .. }
        | I64Store32 { .. } => (120, false),
        // "current_memory": 100; "grow_memory": 10000 and branching.
        MemorySize { .. } => (100, false),
        MemoryGrow { .. } => (10000, true),
        I32Const { .. } | I64Const { .. } | F32Const { .. } | F64Const { .. } => (1, false),
        // "eqz", "eq", "ne", integer comparisons: 45. Float "lt"/"gt"/"le"/"ge": not in table.
        I32Eqz | I32Eq | I32Ne | I32LtS | I32LtU | I32GtS | I32GtU | I32LeS | I32LeU | I32GeS | I32GeU | I64Eqz
        | I64Eq | I64Ne | I64LtS | I64LtU | I64GtS | I64GtU | I64LeS | I64LeU | I64GeS | I64GeU | F32Eq | F32Ne
        | F64Eq | F64Ne => (45, false),
        F32Lt | F32Gt | F32Le | F32Ge | F64Lt | F64Gt | F64Le | F64Ge => (0, false),
        // "clz", "ctz", "popcnt", "add", "sub", "mul", "and", "or", "xor": 45.
        I32Clz | I32Ctz | I32Popcnt | I32Add | I32Sub | I32Mul | I32And | I32Or | I32Xor | I64Clz | I64Ctz
        | I64Popcnt | I64Add | I64Sub | I64Mul | I64And | I64Or | I64Xor | F32Add | F32Sub | F32Mul | F64Add
        | F64Sub | F64Mul => (45, false),
        I32DivS | I32DivU | I32RemS | I32RemU | I64DivS | I64DivU | I64RemS | I64RemU => (36000, false),
        I32Shl | I32ShrS | I32ShrU | I64Shl | I64ShrS | I64ShrU => (67, false),
        I32Rotl | I32Rotr | I64Rotl | I64Rotr => (90, false),
        // Float unary / "div" / "min" / "max" / "copysign", conversions, reinterpretations and
        // sign extensions are not in the table.
        F32Abs | F32Neg | F32Ceil | F32Floor | F32Trunc | F32Nearest | F32Sqrt | F32Div | F32Min | F32Max
        | F32Copysign | F64Abs | F64Neg | F64Ceil | F64Floor | F64Trunc | F64Nearest | F64Sqrt | F64Div | F64Min
        | F64Max | F64Copysign => (0, false),
        I32WrapI64 | I32TruncF32S | I32TruncF32U | I32TruncF64S | I32TruncF64U | I64ExtendI32S | I64ExtendI32U
        | I64TruncF32S | I64TruncF32U | I64TruncF64S | I64TruncF64U | F32ConvertI32S | F32ConvertI32U
        | F32ConvertI64S | F32ConvertI64U | F32DemoteF64 | F64ConvertI32S | F64ConvertI32U | F64ConvertI64S
        | F64ConvertI64U | F64PromoteF32 | I32ReinterpretF32 | I64ReinterpretF64 | F32ReinterpretI32
        | F64ReinterpretI64 => (0, false),
        I32Extend8S | I32Extend16S | I64Extend8S | I64Extend16S | I64Extend32S => (0, false),
        _ => return None,
    })
}
