//! Evaluation of processes: pull a process's messages from its scheduler in order, evaluate each
//! exactly once on the engine, persist every result with a blake3 hash of the memory after it.
//!
//! One [`Runtime`] per CU; one async lock per process, so evaluations of a process are strictly
//! serial and a message is never evaluated twice, however many requests ask for it at once.
//! Wasm runs on tokio's blocking threads (the pinned worker pool of issue 5 replaces them).
//!
//! Rollback without a per-call copy: the CU's rule (a call that throws or returns `Error` leaves
//! the memory as it was) needs the pre-call memory only when a call fails. The runtime keeps a
//! memory image every [`CHECKPOINT_EVERY`] successful messages plus the messages evaluated since;
//! on a failure it resumes the image and replays them, and checks that the replay reproduces the
//! recorded state hash (a failed check is a determinism bug: the process stops with an error).
//!
//! Not yet here (issue 4): cron messages, assignments hydrated from the gateway, legacy processes
//! whose first edge is not the process itself, resuming from stored checkpoints after a restart.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::options::{Policy, module_options};
use crate::engine::{Engine, Instance, LoadedModule, ProcessOptions};
use crate::gateway::Gateway;
use crate::store::{Evaluation, Position, Store};
use crate::su::hashchain::{self, Link};
use crate::su::message::{map_node, owner_address, tag};
use crate::su::scheduler::{PageQuery, Scheduler};

/// Successful messages between two in-memory images kept for rollback.
pub const CHECKPOINT_EVERY: usize = 64;
/// Edges asked per scheduler page (`LOAD_MESSAGES_PAGE_SIZE`).
pub const PAGE_SIZE: u32 = 1000;
/// The keys of a `msg` object in the order the reference writes them (cu-protocol §4.3).
const MSG_KEYS: [&str; 16] = [
    "Id",
    "Signature",
    "Data",
    "Owner",
    "Target",
    "Anchor",
    "From",
    "Forwarded-By",
    "Tags",
    "Epoch",
    "Nonce",
    "Timestamp",
    "Block-Height",
    "Hash-Chain",
    "Cron",
    "Read-Only",
];

/// Processes the runtime keeps state for at once.
pub const MAX_PROCESSES: usize = 10_000;

/// A failure the HTTP layer turns into `{"error": message}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CuError {
    pub status: u16,
    pub message: String,
}

impl CuError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        CuError { status, message: message.into() }
    }
}

/// The live state of one process.
struct Loaded {
    module: Arc<LoadedModule>,
    opts: ProcessOptions,
    env: Value,
    /// Process block height (hash chains are checked from 1,440,000 on).
    height: u64,
    /// `Some` once the process has evaluated a message.
    instance: Option<Instance>,
    last: Option<Position>,
    link: Option<Link>,
    last_hash: Option<[u8; 32]>,
    /// Memory image after the message at `checkpoint.1` (None: start from a cold instance).
    checkpoint: Option<(Vec<u8>, Position)>,
    /// Messages evaluated successfully since the checkpoint, to replay on rollback.
    since: Vec<Value>,
    metering: bool,
}

/// The evaluation core of a CU.
pub struct Runtime<S: Scheduler, G: Gateway> {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    su: Arc<S>,
    gateway: Arc<G>,
    policy: Policy,
    processes: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Loaded>>>>>,
}

fn blake3_of(m: &[u8]) -> [u8; 32] {
    *blake3::hash(m).as_bytes()
}

/// The result object `/result` serves (cu-protocol §1.4, §4.3 normalisation).
fn normalise(outcome: &Result<Map<String, Value>, String>, gas: u64, metering: bool) -> Value {
    let mut r = Map::new();
    match outcome {
        Ok(m) => {
            for k in ["Messages", "Assignments", "Spawns"] {
                r.insert(k.into(), m.get(k).filter(|v| v.is_array()).cloned().unwrap_or(Value::Array(vec![])));
            }
            let output = match m.get("Output") {
                None | Some(Value::Null) => Value::String(String::new()),
                Some(Value::Number(n)) => Value::String(crate::engine::jsjson::stringify(&Value::Number(n.clone()))),
                Some(v) => v.clone(),
            };
            r.insert("Output".into(), output);
            if let Some(e) = m.get("Error").filter(|e| !e.is_null()) {
                r.insert("Error".into(), e.clone());
            }
        }
        Err(thrown) => {
            for k in ["Messages", "Assignments", "Spawns"] {
                r.insert(k.into(), Value::Array(vec![]));
            }
            r.insert("Output".into(), Value::String(String::new()));
            r.insert("Error".into(), Value::String(thrown.clone()));
        }
    }
    if metering {
        r.insert("GasUsed".into(), Value::from(gas));
    }
    Value::Object(r)
}

impl<S: Scheduler, G: Gateway> Runtime<S, G> {
    /// A runtime over `engine`, persisting into `store`, reading from `su` and `gateway`.
    pub fn new(engine: Arc<Engine>, store: Arc<dyn Store>, su: Arc<S>, gateway: Arc<G>, policy: Policy) -> Self {
        Runtime { engine, store, su, gateway, policy, processes: std::sync::Mutex::new(HashMap::new()) }
    }

    /// The store results are written to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn slot(&self, pid: &str) -> Result<Arc<tokio::sync::Mutex<Option<Loaded>>>, CuError> {
        let mut map = self.processes.lock().expect("process map");
        if !map.contains_key(pid) && map.len() >= MAX_PROCESSES {
            return Err(CuError::new(503, format!("this CU holds {MAX_PROCESSES} processes; try again later")));
        }
        Ok(map.entry(pid.to_string()).or_default().clone())
    }

    async fn load(&self, pid: &str) -> Result<Loaded, CuError> {
        let process = self.su.process(pid).await.map_err(|e| CuError::new(e.status(), e.to_string()))?;
        for (name, want) in [("Data-Protocol", "ao"), ("Type", "Process")] {
            if !process.tags.iter().any(|t| t.name == name && t.value == want) {
                return Err(CuError::new(400, format!("Tag '{name}': value '{want}' was not found on process")));
            }
        }
        let module_id = tag(&process.tags, "Module")
            .ok_or_else(|| CuError::new(400, "Tag 'Module': value was not found on process"))?
            .to_string();
        let gw = |e: crate::gateway::GatewayError| CuError::new(e.status(), e.to_string());
        let module = self.gateway.transaction(&module_id).await.map_err(gw)?;
        let opts = module_options(pid, &module_id, &process.tags, &module.tags, &self.policy)
            .map_err(|e| CuError::new(e.status(), e.to_string()))?;
        let wasm = self.gateway.raw(&module_id).await.map_err(gw)?;
        let engine = self.engine.clone();
        let format = opts.format;
        let loaded = tokio::task::spawn_blocking(move || engine.load(&wasm, format))
            .await
            .map_err(|e| CuError::new(500, format!("module load task: {e}")))?
            .map_err(|e| CuError::new(422, format!("module {module_id}: {e}")))?;
        let tags_json = |tags: &[crate::su::types::Tag]| serde_json::to_value(tags).unwrap_or(Value::Array(vec![]));
        let env = serde_json::json!({
            "Process": { "Id": pid, "Owner": owner_address(&process.owner), "Tags": tags_json(&process.tags) },
            "Module": { "Id": module_id, "Owner": owner_address(&module.owner), "Tags": tags_json(&module.tags) },
        });
        let height = process.block.trim().parse::<u64>().unwrap_or(0);
        Ok(Loaded {
            metering: format.instrumented(),
            module: loaded,
            opts: ProcessOptions {
                memory_limit: self.policy.memory_max,
                compute_limit: opts.compute_limit,
                weavedrive: None,
            },
            env,
            height,
            instance: None,
            last: None,
            link: None,
            last_hash: None,
            checkpoint: None,
            since: Vec::new(),
        })
    }

    /// Evaluates process `pid` forward through every scheduled message with a timestamp up to
    /// `to` (all of them if `None`); returns the last evaluation, if any.
    pub async fn evaluate_to(&self, pid: &str, to: Option<i64>) -> Result<Option<Evaluation>, CuError> {
        let slot = self.slot(pid)?;
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(self.load(pid).await?);
        }
        let p = guard.as_mut().expect("loaded above");
        loop {
            let from = p.last.as_ref().map(|l| l.timestamp - 1);
            let q = PageQuery { from, to, limit: PAGE_SIZE };
            let page = self.su.page(pid, q).await.map_err(|e| CuError::new(e.status(), e.to_string()))?;
            let mut progressed = false;
            for edge in &page.edges {
                let s = map_node(&edge.node).map_err(|e| CuError::new(502, e.to_string()))?;
                if p.last.as_ref().is_some_and(|l| s.nonce <= l.nonce) {
                    continue; // already evaluated (pages overlap on the boundary timestamp)
                }
                if s.is_assignment {
                    return Err(CuError::new(
                        501,
                        format!("message {}: assignments of existing transactions are not supported yet", s.msg["Id"]),
                    ));
                }
                let id = s.msg.get("Id").and_then(Value::as_str).unwrap_or_default().to_string();
                hashchain::verify(p.link.as_ref(), &s.hash_chain, &id, p.height)
                    .map_err(|e| CuError::new(422, e.to_string()))?;
                debug_assert!(p.last.as_ref().is_none_or(|l| s.nonce > l.nonce), "nonces strictly increase");
                let position = Position { timestamp: s.timestamp, nonce: s.nonce, cron: None };
                let height = s.msg.get("Block-Height").and_then(Value::as_u64).unwrap_or(0);
                self.evaluate_one(pid, p, Value::Object(s.msg), Some(id), position, height).await?;
                p.link = Some(Link { assignment_id: s.assignment_id.clone(), hash_chain: s.hash_chain.clone() });
                progressed = true;
            }
            if !page.page_info.has_next_page {
                break;
            }
            if !progressed {
                // A full page with nothing new: the scheduler is not advancing; asking again
                // with the same bounds would loop forever.
                return Err(CuError::new(
                    502,
                    format!(
                        "scheduler page for process {pid} did not advance past nonce {:?}",
                        p.last.as_ref().map(|l| l.nonce)
                    ),
                ));
            }
        }
        match &p.last {
            Some(pos) => self.store.at(pid, pos).map_err(|e| CuError::new(500, e.to_string())),
            None => Ok(None),
        }
    }

    async fn evaluate_one(
        &self,
        pid: &str,
        p: &mut Loaded,
        msg: Value,
        message_id: Option<String>,
        position: Position,
        block_height: u64,
    ) -> Result<(), CuError> {
        let instance = match p.instance.take() {
            Some(i) => i,
            None => self.fresh(p, None)?,
        };
        let env = p.env.clone();
        let msg_for_call = msg.clone();
        let (instance, out, hash) = tokio::task::spawn_blocking(move || {
            let mut instance = instance;
            let out = instance.handle(&msg_for_call, &env);
            let hash = blake3_of(instance.memory());
            (instance, out, hash)
        })
        .await
        .map_err(|e| CuError::new(500, format!("evaluation task: {e}")))?;
        let result = normalise(&out.result, out.accounting.gas, p.metering);
        let state_hash = if out.failed() {
            drop(instance);
            let (restored, h) = self.rollback(p).await?;
            p.instance = Some(restored);
            h
        } else {
            p.instance = Some(instance);
            p.since.push(msg);
            p.last_hash = Some(hash);
            if p.since.len() >= CHECKPOINT_EVERY {
                let image = p.instance.as_ref().expect("just set").memory_image();
                p.checkpoint = Some((image, position.clone()));
                p.since.clear();
            }
            hash
        };
        let e = Evaluation {
            process_id: pid.to_string(),
            message_id,
            position: position.clone(),
            block_height,
            result,
            state_hash,
            gas: out.accounting.gas,
        };
        self.store.put(&e).map_err(|e| CuError::new(500, e.to_string()))?;
        p.last = Some(position);
        Ok(())
    }

    fn fresh(&self, p: &Loaded, image: Option<&[u8]>) -> Result<Instance, CuError> {
        let r = match image {
            Some(img) => self.engine.instantiate_image(&p.module, p.opts.clone(), img),
            None => self.engine.instantiate(&p.module, p.opts.clone()),
        };
        r.map_err(|e| CuError::new(500, format!("process instance: {e}")))
    }

    /// The memory as it was before the failed call: the last image plus a replay of the messages
    /// since; checked against the recorded state hash.
    async fn rollback(&self, p: &Loaded) -> Result<(Instance, [u8; 32]), CuError> {
        let mut instance = self.fresh(p, p.checkpoint.as_ref().map(|(img, _)| img.as_slice()))?;
        let (env, replay, want) = (p.env.clone(), p.since.clone(), p.last_hash);
        let (instance, got) = tokio::task::spawn_blocking(move || {
            for m in &replay {
                instance.handle(m, &env);
            }
            let h = blake3_of(instance.memory());
            (instance, h)
        })
        .await
        .map_err(|e| CuError::new(500, format!("rollback task: {e}")))?;
        if let Some(want) = want
            && want != got
        {
            return Err(CuError::new(
                500,
                "rollback replay did not reproduce the recorded state: evaluation is not deterministic",
            ));
        }
        Ok((instance, got))
    }

    /// `/result`: the stored evaluation of `message_id`, evaluating the process up to it first.
    pub async fn result(&self, pid: &str, message_id: &str) -> Result<Value, CuError> {
        let stored = |rt: &Self| rt.store.by_message(pid, message_id).map_err(|e| CuError::new(500, e.to_string()));
        if let Some(e) = stored(self)? {
            return Ok(e.result);
        }
        let node = self.su.message(pid, message_id).await.map_err(|e| CuError::new(e.status(), e.to_string()))?;
        let s = map_node(&node).map_err(|e| CuError::new(502, e.to_string()))?;
        self.evaluate_to(pid, Some(s.timestamp)).await?;
        match stored(self)? {
            Some(e) => Ok(e.result),
            None => Err(CuError::new(
                425,
                format!("message at nonce {} not found cached, and earlier than latest known nonce", s.nonce),
            )),
        }
    }

    /// `/state`: the memory after evaluating up to `to` (all scheduled messages if `None`), and the
    /// position it is at.
    pub async fn state(&self, pid: &str, to: Option<i64>) -> Result<(Vec<u8>, Option<Evaluation>), CuError> {
        let last = self.evaluate_to(pid, to).await?;
        let slot = self.slot(pid)?;
        let guard = slot.lock().await;
        let memory = guard.as_ref().and_then(|p| p.instance.as_ref()).map(Instance::memory_image);
        memory.map(|m| (m, last)).ok_or_else(|| CuError::new(404, format!("process {pid} has no state yet")))
    }

    /// `/dry-run`: evaluates `msg` on a copy of the latest state; nothing is stored.
    pub async fn dry_run(&self, pid: &str, mut msg: Map<String, Value>) -> Result<Value, CuError> {
        let last = self.evaluate_to(pid, None).await?;
        let slot = self.slot(pid)?;
        let guard = slot.lock().await;
        let p = guard.as_ref().ok_or_else(|| CuError::new(404, format!("process {pid} has no state")))?;
        let image = p.instance.as_ref().map(Instance::memory_image);
        let mut fork = self.fresh(p, image.as_deref())?;
        let env = p.env.clone();
        let metering = p.metering;
        drop(guard);
        if let Some(l) = &last {
            msg.entry("Timestamp").or_insert(Value::from(l.position.timestamp));
            msg.entry("Block-Height").or_insert(Value::from(l.block_height));
        }
        msg.entry("Target").or_insert(Value::String(pid.to_string()));
        let from = msg
            .get("Tags")
            .and_then(Value::as_array)
            .and_then(|tags| {
                tags.iter()
                    .find(|t| t["name"] == "From-Process")
                    .and_then(|t| t["value"].as_str())
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            })
            .or_else(|| msg.get("Owner").and_then(Value::as_str).map(str::to_string));
        if let Some(f) = from {
            msg.insert("From".into(), Value::String(f));
        }
        msg.insert("Cron".into(), Value::Bool(false));
        msg.insert("Read-Only".into(), Value::Bool(true));
        // The reference's key order (§4.3), so `JSON.stringify(msg)` is the same bytes.
        let mut ordered = Map::new();
        for k in MSG_KEYS {
            if let Some(v) = msg.remove(k) {
                ordered.insert(k.to_string(), v);
            }
        }
        ordered.extend(msg);
        let msg = Value::Object(ordered);
        let out = tokio::task::spawn_blocking(move || fork.handle(&msg, &env))
            .await
            .map_err(|e| CuError::new(500, format!("dry-run task: {e}")))?;
        Ok(normalise(&out.result, out.accounting.gas, metering))
    }
}
