//! `metalcu eval`: replays a message log through the engine with the Compute Unit's rules and
//! writes one line per step in the goldens' schema, so `diff` against a goldens file is a test.
//!
//! CU rule between calls: the memory of a successful call is the next call's memory; when a call
//! throws or returns a result with `Error`, memory rolls back to before the call and the next
//! message runs on a fresh instance restored from it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::Digest;

use crate::engine::{Engine, Instance, LoadedModule, ProcessOptions, jsjson};

/// Most bytes of one input line.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// An input error that names the file, line and field.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {what}")]
pub struct InputError {
    pub file: String,
    pub line: usize,
    pub what: String,
}

/// One step of the log.
pub struct Step {
    pub msg: Value,
    pub env: Value,
}

/// Reads `path` (one JSON object with `msg` and `env` per line; other fields ignored).
pub fn read_steps(path: &Path) -> Result<Vec<Step>, InputError> {
    let file = path.display().to_string();
    let err = |line: usize, what: String| InputError { file: file.clone(), line, what };
    let f = std::fs::File::open(path).map_err(|e| err(0, format!("cannot open: {e}")))?;
    let mut steps = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| err(n, format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(err(n, format!("line is {} bytes; the limit is {MAX_LINE_BYTES}", line.len())));
        }
        let mut v: Value = serde_json::from_str(&line).map_err(|e| err(n, format!("invalid JSON: {e}")))?;
        let obj = v.as_object_mut().ok_or_else(|| err(n, "expected a JSON object".into()))?;
        let msg = obj.remove("msg").ok_or_else(|| err(n, "missing field `msg`".into()))?;
        let env = obj.remove("env").ok_or_else(|| err(n, "missing field `env`".into()))?;
        if !msg.is_object() {
            return Err(err(n, "field `msg` must be an object".into()));
        }
        if !env.is_object() {
            return Err(err(n, "field `env` must be an object".into()));
        }
        steps.push(Step { msg, env });
    }
    Ok(steps)
}

/// Replays `steps` and calls `emit` with each output line (already serialised).
pub struct Replay<'a> {
    pub engine: &'a Engine,
    pub module: std::sync::Arc<LoadedModule>,
    pub opts: ProcessOptions,
}

impl Replay<'_> {
    fn fresh(&self, memory: Option<&[u8]>) -> anyhow::Result<Instance> {
        Ok(match memory {
            Some(m) => self.engine.instantiate_image(&self.module, self.opts.clone(), m)?,
            None => self.engine.instantiate(&self.module, self.opts.clone())?,
        })
    }

    /// Runs every step; `initial` is a memory image to start from.
    pub fn run(
        &self,
        steps: &[Step],
        initial: Option<Vec<u8>>,
        mut emit: impl FnMut(usize, String) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut inst = self.fresh(initial.as_deref())?;
        // Whether the CU holds a memory yet: not until the first successful call (or an image).
        let mut has_memory = initial.is_some();
        for (i, step) in steps.iter().enumerate() {
            // The rollback rule needs the memory from before the call when it fails; the instance
            // itself keeps memory between successful calls.
            let before = has_memory.then(|| inst.memory_image());
            let out = inst.handle(&step.msg, &step.env);
            let mut line = Map::new();
            line.insert("step".into(), Value::from(i));
            line.insert("msg".into(), step.msg.clone());
            line.insert("env".into(), step.env.clone());
            match &out.result {
                Ok(r) => {
                    let mut r = r.clone();
                    r.insert("GasUsed".into(), Value::from(out.accounting.gas));
                    line.insert("result".into(), Value::Object(r));
                }
                Err(t) => {
                    line.insert("thrown".into(), Value::String(t.clone()));
                }
            }
            let digest = |m: &[u8]| (Value::from(m.len()), Value::String(hex::encode(sha2::Sha256::digest(m))));
            let (len, hash) = if out.failed() {
                inst = self.fresh(before.as_deref())?;
                before.as_deref().map(digest).unwrap_or((Value::from(0), Value::Null))
            } else {
                has_memory = true;
                digest(inst.memory())
            };
            line.insert("memory_len".into(), len);
            line.insert("memory_sha256".into(), hash);
            emit(i, jsjson::stringify(&Value::Object(line)))?;
        }
        Ok(())
    }
}

/// Where `metalcu eval` writes: a file, or standard output.
pub fn open_out(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}
