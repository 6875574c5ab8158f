//! Compiled-module cache on disk: `<cache_dir>/<key>.cwasm`, where the key is blake3 of the module
//! bytes, the format and the engine's compatibility fingerprint, so a restart never recompiles.
//!
//! Files are written to a temporary name, fsynced, then renamed; each ends with a blake3 trailer of
//! its contents, checked before wasmtime deserialises it (a torn or tampered file is recompiled,
//! never loaded). wasmtime itself refuses artefacts of another version or configuration.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use super::{Engine, EngineError, ModuleFormat, gasinline, metering};

const TRAILER: usize = 32;

fn key(engine: &Engine, hash: blake3::Hash, format: ModuleFormat) -> String {
    let mut h = blake3::Hasher::new();
    h.update(hash.as_bytes());
    h.update(format.name().as_bytes());
    h.update(b"metalcu artefact v3: metering + gasinline + exported globals");
    let mut fp = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&engine.engine.precompile_compatibility_hash(), &mut fp);
    h.update(&std::hash::Hasher::finish(&fp).to_le_bytes());
    h.update(format!("{:?}", engine.config.max_memory_bytes).as_bytes());
    h.finalize().to_hex().to_string()
}

/// The bytes wasmtime compiles: the metering formats instrumented like the reference, then every
/// `usegas` call turned into inline counting (`gasinline`), which changes no gas figure.
fn prepare(wasm: &[u8], format: ModuleFormat) -> Result<Option<Vec<u8>>, EngineError> {
    let metered = if format.instrumented() {
        let meter = if format.is_wasm64() { metering::MeterType::I64 } else { metering::MeterType::I32 };
        Some(metering::instrument(wasm, meter).map_err(|e| EngineError::Metering(e.to_string()))?)
    } else {
        None
    };
    let input = metered.as_deref().unwrap_or(wasm);
    let inlined = match gasinline::inline_usegas(input) {
        Ok(Some(inlined)) => Some(inlined),
        Ok(None) => metered,
        // Not a well-formed module, or one using `usegas` in a way inlining cannot preserve: leave
        // it to wasmtime (which reports invalid modules) and the host import (exact either way).
        Err(e) => {
            tracing::debug!(error = %e, "gas inlining skipped");
            metered
        }
    };
    // Export every mutable global so a process can resume from an image without its start-up.
    let input = inlined.as_deref().unwrap_or(wasm);
    Ok(match gasinline::export_mutable_globals(input) {
        Ok((out, _)) => Some(out),
        Err(e) => {
            tracing::debug!(error = %e, "global export skipped; images restore through a full start-up");
            inlined
        }
    })
}

fn compile(engine: &Engine, wasm: &[u8], format: ModuleFormat) -> Result<wasmtime::Module, EngineError> {
    let prepared = prepare(wasm, format)?;
    let input = prepared.as_deref().unwrap_or(wasm);
    wasmtime::Module::new(&engine.engine, input).map_err(|e| EngineError::InvalidModule(format!("{e:#}")))
}

/// Compiles `wasm`, or loads the artefact a previous run cached.
pub fn compile_cached(
    engine: &Engine,
    wasm: &[u8],
    hash: blake3::Hash,
    format: ModuleFormat,
) -> Result<wasmtime::Module, EngineError> {
    let Some(dir) = engine.config.cache_dir.as_ref() else {
        return compile(engine, wasm, format);
    };
    let path: PathBuf = dir.join(format!("{}.cwasm", key(engine, hash, format)));
    if let Ok(data) = fs::read(&path)
        && data.len() > TRAILER
    {
        let (body, trailer) = data.split_at(data.len() - TRAILER);
        if blake3::hash(body).as_bytes() == trailer {
            // SAFETY: the bytes are an artefact this engine serialised (checked by the blake3
            // trailer above); wasmtime verifies version and configuration compatibility itself.
            if let Ok(m) = unsafe { wasmtime::Module::deserialize(&engine.engine, body) } {
                return Ok(m);
            }
        }
        tracing::warn!(path = %path.display(), "ignoring a corrupt or stale compiled-module cache entry");
    }
    let module = compile(engine, wasm, format)?;
    if let Err(e) = store(&path, &module) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled-module cache");
    }
    Ok(module)
}

fn store(path: &PathBuf, module: &wasmtime::Module) -> Result<(), EngineError> {
    let err = |e: std::io::Error| EngineError::Cache(format!("{}: {e}", path.display()));
    let mut body = module.serialize().map_err(|e| EngineError::Cache(format!("{e:#}")))?;
    let trailer = *blake3::hash(&body).as_bytes();
    body.extend_from_slice(&trailer);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(err)?;
    f.write_all(&body).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}
