//! Inline gas counting: rewrites a module that meters itself through the host import
//! `metering.usegas(amount)` so that the counting happens in wasm and the host is called only
//! when the limit is exceeded.
//!
//! Why: metered modules call `usegas` at the start of every basic block. With the reference
//! semantics (`used += amount; if used > limit { trap "out of gas!" }`) each of those calls is a
//! host call, and a hot loop spends most of its time crossing the wasm/host boundary.
//!
//! What [`inline_usegas`] does:
//! * the `metering.usegas` import stays where it is, so no function index changes anywhere;
//! * two mutable `i64` globals, `used` and `limit`, both initialised to 0, are appended after all
//!   other globals (imported globals come first in the index space, so no existing global index
//!   changes) and exported as [`GAS_USED_EXPORT`] and [`GAS_LIMIT_EXPORT`] after every existing
//!   export;
//! * every direct `call $usegas` becomes
//!   `local.tee $tmp; [i64.extend_i32_s;] global.get $used; i64.add; global.set $used;
//!   global.get $used; global.get $limit; i64.gt_s; if; local.get $tmp; call $usegas; end`
//!   where `$tmp` is one new local of the import's parameter type appended to the locals of each
//!   function that has such a call (existing local indices are unchanged). The `i32` amount is
//!   sign-extended and compared signed, as the JS reference host does with its doubles;
//! * everything else is copied byte for byte: untouched sections (custom sections included) and
//!   untouched function bodies are raw copies; only the global, export and code section headers
//!   (counts and sizes) are re-encoded.
//!
//! The contract with the host, per top-level call:
//! * before the call, set `used = 0` and `limit = <compute limit>` (`limit` at most 9e15, so
//!   `used` stays far from `i64` overflow);
//! * the rewritten module calls `usegas(amount)` only when `used > limit`, and **`used` already
//!   includes `amount`** at that point: the host must not add it again; it should just trap with
//!   "out of gas!";
//! * the gas used by the call (`GasUsed`) is the value of the `used` global afterwards, whether
//!   the call returned or trapped.
//!
//! Invariants: the import is only ever reached through the inlined sequence. A module that uses
//! `usegas` any other way (`ref.func`, `return_call`, an export, the start function or an element
//! segment), imports it twice or with a type other than `(func (param i32|i64))` is rejected
//! with an error rather than rewritten into something the host would count differently.
//!
//! The same raw-copy approach serves [`export_mutable_globals`], which exports every mutable
//! defined global (the gas globals included, when run after [`inline_usegas`]) so that a host can
//! snapshot and restore an instance's global state.

use std::ops::Range;

use wasm_encoder::{CodeSection, ConstExpr, Encode, ExportKind, GlobalType, Instruction, Module, RawSection, ValType};
use wasmparser::{
    CompositeInnerType, ElementItems, Export, ExternalKind, FunctionBody, Operator, OperatorsReader, Parser, Payload,
    TypeRef,
};

/// Export name of the appended mutable `i64` global holding the gas used by the current call.
pub const GAS_USED_EXPORT: &str = "__metalcu_gas_used";
/// Export name of the appended mutable `i64` global holding the gas limit of the current call.
pub const GAS_LIMIT_EXPORT: &str = "__metalcu_gas_limit";

/// Import module name of the metering function.
const METERING_MODULE: &str = "metering";
/// Import field name of the metering function.
const METERING_FIELD: &str = "usegas";

/// Most locals (params included) a function may have: wasmparser's and wasmtime's limit.
const MAX_FUNCTION_LOCALS: u32 = 50_000;

/// Section ids (core wasm).
const CUSTOM: u8 = 0;
const GLOBAL: u8 = 6;
const EXPORT: u8 = 7;

/// Why a module could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum GasInlineError {
    /// The input is not a well-formed WebAssembly module.
    #[error("cannot parse wasm module: {0}")]
    Parse(#[from] wasmparser::BinaryReaderError),
    /// The input is a component or another wasm version.
    #[error("not a version-1 core wasm module")]
    NotAModule,
    /// `metering.usegas` is imported with an unexpected type.
    #[error("metering.usegas has type {0}; expected (func (param i32)) or (func (param i64))")]
    BadSignature(String),
    /// `metering.usegas` is imported more than once.
    #[error("metering.usegas is imported more than once")]
    DuplicateImport,
    /// `metering.usegas` is reachable other than by a direct `call`.
    #[error("metering.usegas is used by {0}, not only by direct calls; inlining would change its accounting")]
    Escapes(String),
    /// The module already exports one of the names the rewrite adds.
    #[error("module already exports {0:?}")]
    ExportExists(String),
    /// A function has so many locals that the scratch local does not fit.
    #[error("defined function {0} has too many locals to add a scratch local (limit {MAX_FUNCTION_LOCALS})")]
    TooManyLocals(u32),
}

/// If `wasm` imports `metering.usegas`, returns the module with gas counting inlined (see the
/// module docs for the rewrite and the host contract); otherwise `Ok(None)`.
///
/// Returns `Err` if `wasm` cannot be parsed, or if it uses `metering.usegas` in a way the
/// rewrite cannot keep equivalent (see [`GasInlineError`]). The output is not validated here;
/// it is valid whenever the input is.
pub fn inline_usegas(wasm: &[u8]) -> Result<Option<Vec<u8>>, GasInlineError> {
    let mut rw = Rewriter::default();
    let mut parser = Parser::new(0);
    parser.set_features(wasmparser::WasmFeatures::all());
    for payload in parser.parse_all(wasm) {
        let payload = payload?;
        let section = payload.as_section();
        if let Some((id, _)) = &section
            && *id != CUSTOM
            && !rw.before_section(section_rank(*id))
        {
            return Ok(None);
        }
        match payload {
            Payload::Version { encoding, num, .. } => {
                if encoding != wasmparser::Encoding::Module || num != 1 {
                    return Err(GasInlineError::NotAModule);
                }
            }
            Payload::TypeSection(reader) => {
                for group in reader.clone() {
                    for sub in group?.types() {
                        rw.types.push(match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => Some((f.params().len() as u32, amount_type(f))),
                            _ => None,
                        });
                    }
                }
                rw.copy(wasm, 1, reader.range());
            }
            Payload::ImportSection(reader) => {
                rw.read_imports(reader.clone())?;
                rw.copy(wasm, 2, reader.range());
            }
            Payload::FunctionSection(reader) => {
                for ty in reader.clone() {
                    rw.func_types.push(ty?);
                }
                rw.copy(wasm, 3, reader.range());
            }
            Payload::GlobalSection(reader) => {
                for global in reader.clone() {
                    rw.check_const_expr(&global?.init_expr, "a global initialiser")?;
                }
                rw.emit_globals(reader.count(), &wasm[reader.original_position()..reader.range().end]);
            }
            Payload::ExportSection(reader) => {
                for export in reader.clone() {
                    rw.check_export(&export?)?;
                }
                rw.emit_exports(reader.count(), &wasm[reader.original_position()..reader.range().end]);
            }
            Payload::StartSection { func, range } => {
                if Some(func) == rw.usegas_index() {
                    return Err(GasInlineError::Escapes("the start section".into()));
                }
                rw.copy(wasm, 8, range);
            }
            Payload::ElementSection(reader) => {
                for elem in reader.clone() {
                    rw.check_element_items(elem?.items)?;
                }
                rw.copy(wasm, 9, reader.range());
            }
            Payload::CodeSectionStart { count, .. } => {
                rw.code = Some((CodeSection::new(), count));
                rw.flush_code_if_done();
            }
            Payload::CodeSectionEntry(body) => {
                rw.rewrite_body(wasm, &body)?;
                let (_, remaining) = rw.code.as_mut().expect("code entry outside the code section");
                *remaining -= 1;
                rw.flush_code_if_done();
            }
            Payload::End(_) => {
                if !rw.before_section(u8::MAX) {
                    return Ok(None);
                }
            }
            _ => {
                if let Some((id, range)) = section {
                    rw.copy(wasm, id, range);
                }
            }
        }
    }
    Ok(Some(rw.module.finish()))
}

/// The type of the `usegas` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Amount {
    I32,
    I64,
}

impl Amount {
    fn val_type(self) -> ValType {
        match self {
            Amount::I32 => ValType::I32,
            Amount::I64 => ValType::I64,
        }
    }
}

/// `Some` if `f` is `(func (param i32|i64))`, the only types `usegas` may have.
fn amount_type(f: &wasmparser::FuncType) -> Option<Amount> {
    match (f.params(), f.results()) {
        ([wasmparser::ValType::I32], []) => Some(Amount::I32),
        ([wasmparser::ValType::I64], []) => Some(Amount::I64),
        _ => None,
    }
}

/// Position of a section id in the required order of non-custom sections.
fn section_rank(id: u8) -> u8 {
    match id {
        1..=5 => id,     // type, import, function, table, memory
        13 => 6,         // tag
        6..=9 => id + 1, // global, export, start, element
        12 => 11,        // data count
        10 => 12,        // code
        11 => 13,        // data
        _ => u8::MAX,
    }
}

/// The imported `metering.usegas`.
#[derive(Debug, Clone, Copy)]
struct Usegas {
    func: u32,
    amount: Amount,
}

#[derive(Default)]
struct Rewriter {
    module: Module,
    /// Per type index: `(number of params, usegas amount type)` for function types.
    types: Vec<Option<(u32, Option<Amount>)>>,
    /// Type index of each defined function.
    func_types: Vec<u32>,
    imported_funcs: u32,
    imported_globals: u32,
    usegas: Option<Usegas>,
    /// Index of the appended `used` global (`limit` is the next one), once the globals are out.
    used_global: Option<u32>,
    exports_done: bool,
    /// The code section being written and how many bodies it still expects.
    code: Option<(CodeSection, u32)>,
    /// Index of the next defined function body.
    next_body: u32,
    /// Scratch space: `call $usegas` sites of one body and the rewritten body.
    sites: Vec<Range<usize>>,
    body: Vec<u8>,
}

impl Rewriter {
    fn copy(&mut self, wasm: &[u8], id: u8, range: Range<usize>) {
        self.module.section(&RawSection { id, data: &wasm[range] });
    }

    fn usegas_index(&self) -> Option<u32> {
        self.usegas.map(|u| u.func)
    }

    /// Called before each non-custom section (`rank` from [`section_rank`], `u8::MAX` at the
    /// end of the module): emits the global and export sections if the module has none and their
    /// place has passed. Returns `false` once it is clear that the module does not import
    /// `usegas`.
    fn before_section(&mut self, rank: u8) -> bool {
        if rank > section_rank(2) && self.usegas.is_none() {
            return false;
        }
        if rank > section_rank(GLOBAL) && self.used_global.is_none() {
            self.emit_globals(0, &[]);
        }
        if rank > section_rank(EXPORT) && !self.exports_done {
            self.emit_exports(0, &[]);
        }
        true
    }

    fn read_imports(&mut self, reader: wasmparser::ImportSectionReader) -> Result<(), GasInlineError> {
        for import in reader {
            let import = import?;
            match import.ty {
                TypeRef::Func(ty) => {
                    if import.module == METERING_MODULE && import.name == METERING_FIELD {
                        if self.usegas.is_some() {
                            return Err(GasInlineError::DuplicateImport);
                        }
                        let amount = self.types.get(ty as usize).copied().flatten().and_then(|(_, a)| a);
                        let Some(amount) = amount else {
                            return Err(GasInlineError::BadSignature(format!("index {ty}")));
                        };
                        self.usegas = Some(Usegas { func: self.imported_funcs, amount });
                    }
                    self.imported_funcs += 1;
                }
                TypeRef::Global(_) => self.imported_globals += 1,
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes the global section: the `count` existing globals (`items`, raw) and the two new ones.
    fn emit_globals(&mut self, count: u32, items: &[u8]) {
        let used = self.imported_globals + count;
        self.used_global = Some(used);
        let mut body = Vec::with_capacity(items.len() + 16);
        (count + 2).encode(&mut body);
        body.extend_from_slice(items);
        for _ in 0..2 {
            GlobalType { val_type: ValType::I64, mutable: true, shared: false }.encode(&mut body);
            ConstExpr::i64_const(0).encode(&mut body);
        }
        self.module.section(&RawSection { id: GLOBAL, data: &body });
    }

    /// Writes the export section: the `count` existing exports (`items`, raw) and the two new ones.
    fn emit_exports(&mut self, count: u32, items: &[u8]) {
        let used = self.used_global.expect("the global section precedes the export section");
        let mut body = Vec::with_capacity(items.len() + 64);
        (count + 2).encode(&mut body);
        body.extend_from_slice(items);
        for (name, index) in [(GAS_USED_EXPORT, used), (GAS_LIMIT_EXPORT, used + 1)] {
            name.encode(&mut body);
            ExportKind::Global.encode(&mut body);
            index.encode(&mut body);
        }
        self.exports_done = true;
        self.module.section(&RawSection { id: EXPORT, data: &body });
    }

    fn check_export(&self, export: &Export) -> Result<(), GasInlineError> {
        if export.name == GAS_USED_EXPORT || export.name == GAS_LIMIT_EXPORT {
            return Err(GasInlineError::ExportExists(export.name.to_string()));
        }
        if export.kind == ExternalKind::Func && Some(export.index) == self.usegas_index() {
            return Err(GasInlineError::Escapes(format!("the export {:?}", export.name)));
        }
        Ok(())
    }

    fn check_element_items(&self, items: ElementItems) -> Result<(), GasInlineError> {
        match items {
            ElementItems::Functions(funcs) => {
                for func in funcs {
                    if Some(func?) == self.usegas_index() {
                        return Err(GasInlineError::Escapes("an element segment".into()));
                    }
                }
            }
            ElementItems::Expressions(_, exprs) => {
                for expr in exprs {
                    self.check_const_expr(&expr?, "an element segment")?;
                }
            }
        }
        Ok(())
    }

    fn check_const_expr(&self, expr: &wasmparser::ConstExpr, what: &str) -> Result<(), GasInlineError> {
        let mut ops = expr.get_operators_reader();
        while !ops.eof() {
            if let Operator::RefFunc { function_index } = ops.read()?
                && Some(function_index) == self.usegas_index()
            {
                return Err(GasInlineError::Escapes(format!("`ref.func` in {what}")));
            }
        }
        Ok(())
    }

    fn flush_code_if_done(&mut self) {
        if let Some((_, 0)) = &self.code {
            let (sec, _) = self.code.take().expect("checked above");
            self.module.section(&sec);
        }
    }

    /// Appends `body` to the code section: a raw copy unless it calls `usegas`, in which case
    /// the calls are replaced by the inline sequence and a scratch local is appended.
    fn rewrite_body(&mut self, wasm: &[u8], body: &FunctionBody) -> Result<(), GasInlineError> {
        let usegas = self.usegas.expect("usegas is known before the code section");
        let defined = self.next_body;
        self.next_body += 1;

        let mut locals = body.get_locals_reader()?;
        let decls = locals.get_count();
        let decls_start = locals.original_position();
        let params = self.func_types.get(defined as usize).and_then(|&t| self.types.get(t as usize).copied().flatten());
        // An invalid module (no such type) is left for the validator to reject.
        let mut n_locals = u64::from(params.map_or(0, |(n, _)| n));
        for _ in 0..decls {
            n_locals += u64::from(locals.read()?.0);
        }
        let ops_start = locals.original_position();

        self.sites.clear();
        let mut ops = OperatorsReader::new(locals.get_binary_reader());
        while !ops.eof() {
            let start = ops.original_position();
            match ops.read()? {
                Operator::Call { function_index } if function_index == usegas.func => {
                    self.sites.push(start..ops.original_position());
                }
                Operator::RefFunc { function_index } if function_index == usegas.func => {
                    return Err(GasInlineError::Escapes("`ref.func`".into()));
                }
                Operator::ReturnCall { function_index } if function_index == usegas.func => {
                    return Err(GasInlineError::Escapes("`return_call`".into()));
                }
                _ => {}
            }
        }
        let (sec, _) = self.code.as_mut().expect("code entry outside the code section");
        if self.sites.is_empty() {
            sec.raw(body.as_bytes());
            return Ok(());
        }

        // Params and locals together, the scratch local included, must stay within the
        // validators' limit (wasmparser and wasmtime: 50 000).
        if n_locals >= u64::from(MAX_FUNCTION_LOCALS) {
            return Err(GasInlineError::TooManyLocals(defined));
        }
        let tmp = n_locals as u32;
        let used = self.used_global.expect("globals are emitted before the code section");
        let mut seq = Vec::with_capacity(32);
        Instruction::LocalTee(tmp).encode(&mut seq);
        if usegas.amount == Amount::I32 {
            Instruction::I64ExtendI32S.encode(&mut seq);
        }
        for insn in [
            Instruction::GlobalGet(used),
            Instruction::I64Add,
            Instruction::GlobalSet(used),
            Instruction::GlobalGet(used),
            Instruction::GlobalGet(used + 1),
            Instruction::I64GtS,
            Instruction::If(wasm_encoder::BlockType::Empty),
            Instruction::LocalGet(tmp),
            Instruction::Call(usegas.func),
            Instruction::End,
        ] {
            insn.encode(&mut seq);
        }

        let out = &mut self.body;
        out.clear();
        out.reserve(body.range().len() + self.sites.len() * seq.len());
        (decls + 1).encode(out);
        out.extend_from_slice(&wasm[decls_start..ops_start]);
        1u32.encode(out);
        usegas.amount.val_type().encode(out);
        let mut at = ops_start;
        for site in &self.sites {
            out.extend_from_slice(&wasm[at..site.start]);
            out.extend_from_slice(&seq);
            at = site.end;
        }
        out.extend_from_slice(&wasm[at..body.range().end]);
        sec.raw(out);
        Ok(())
    }
}

/// Prefix of the exports added by [`export_mutable_globals`]; the suffix is the global's index.
pub const GLOBAL_EXPORT_PREFIX: &str = "__metalcu_global_";

/// Appends an export `__metalcu_global_<index>` for every mutable global *defined* by the module
/// (not imported), in index order, so the host can read and restore the complete mutable state
/// of an instance (used to resume a process from a snapshot without re-running its start-up).
/// Returns the rewritten module and the list of exported global indices. Modules with no mutable
/// defined globals are returned unchanged (still Ok). Errors if an export name would collide.
///
/// Only the export section is re-encoded (existing exports keep their bytes and order, the new
/// ones follow); every other section, header included, is copied byte for byte. A module without
/// an export section gets one right after its global section. Composes with [`inline_usegas`] in
/// either order. The output is not validated here; it is valid whenever the input is.
pub fn export_mutable_globals(wasm: &[u8]) -> Result<(Vec<u8>, Vec<u32>), GasInlineError> {
    let mut imported_globals = 0u32;
    let mut exported = Vec::new();
    // End of the global section, where a missing export section goes.
    let mut globals_end = None;
    // The export section: its byte range (header included), count, and the range of its items.
    let mut exports: Option<(Range<usize>, u32, Range<usize>)> = None;
    // End of the previous section: sections are contiguous, so this is where the next one starts.
    let mut prev_end = 0;
    let mut parser = Parser::new(0);
    parser.set_features(wasmparser::WasmFeatures::all());
    for payload in parser.parse_all(wasm) {
        let payload = payload?;
        match &payload {
            Payload::Version { encoding, num, range } => {
                if *encoding != wasmparser::Encoding::Module || *num != 1 {
                    return Err(GasInlineError::NotAModule);
                }
                prev_end = range.end;
            }
            Payload::ImportSection(reader) => {
                for import in reader.clone() {
                    if let TypeRef::Global(_) = import?.ty {
                        imported_globals += 1;
                    }
                }
            }
            Payload::GlobalSection(reader) => {
                for (index, global) in (imported_globals..).zip(reader.clone()) {
                    if global?.ty.mutable {
                        exported.push(index);
                    }
                }
                globals_end = Some(reader.range().end);
            }
            Payload::ExportSection(reader) => {
                let items = reader.original_position()..reader.range().end;
                exports = Some((prev_end..reader.range().end, reader.count(), items));
                for export in reader.clone() {
                    let name = export?.name;
                    let collides = name
                        .strip_prefix(GLOBAL_EXPORT_PREFIX)
                        .and_then(|suffix| suffix.parse::<u32>().ok().filter(|i| i.to_string() == suffix))
                        .is_some_and(|i| exported.binary_search(&i).is_ok());
                    if collides {
                        return Err(GasInlineError::ExportExists(name.to_string()));
                    }
                }
            }
            _ => {}
        }
        if let Some((_, range)) = payload.as_section() {
            prev_end = range.end;
        }
    }
    if exported.is_empty() {
        return Ok((wasm.to_vec(), exported));
    }

    let (replaced, count, items) = match exports {
        Some((section, count, items)) => (section, count, &wasm[items]),
        None => {
            let at = globals_end.expect("a module with defined globals has a global section");
            (at..at, 0, &[][..])
        }
    };
    // Every counted export and global was read from the input, so the sum stays far below 2^32
    // for any module that fits in memory.
    let new_count = count + exported.len() as u32;
    let mut contents = Vec::with_capacity(items.len() + exported.len() * (GLOBAL_EXPORT_PREFIX.len() + 16));
    new_count.encode(&mut contents);
    contents.extend_from_slice(items);
    let mut name = String::with_capacity(GLOBAL_EXPORT_PREFIX.len() + 10);
    for &index in &exported {
        name.clear();
        name.push_str(GLOBAL_EXPORT_PREFIX);
        name.push_str(&index.to_string());
        name.as_str().encode(&mut contents);
        ExportKind::Global.encode(&mut contents);
        index.encode(&mut contents);
    }
    let mut out = Vec::with_capacity(wasm.len() + contents.len() + 8 - replaced.len());
    out.extend_from_slice(&wasm[..replaced.start]);
    out.push(EXPORT);
    contents.len().encode(&mut out);
    out.extend_from_slice(&contents);
    out.extend_from_slice(&wasm[replaced.end..]);
    Ok((out, exported))
}
