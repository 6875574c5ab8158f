//! An in-memory gateway: transactions registered by id with their tags, owner and data. Serves
//! modules to `metalcu dev` and fakes in tests. Ids of registered data are content-derived
//! (base64url of sha256, 43 characters, like Arweave ids), so the same module file always gets
//! the same module id. Its chain of blocks is the local SU's: block `GENESIS_HEIGHT + k` at
//! `GENESIS_TIMESTAMP_MS + k·BLOCK_INTERVAL_MS`, so block crons fire in `metalcu dev` as they
//! would on Arweave.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;

use super::{Block, Gateway, GatewayError, MAX_BLOCKS_PER_CALL, SchedulerLocation, TxMeta};
use crate::su::local::{BLOCK_INTERVAL_MS, GENESIS_HEIGHT, GENESIS_TIMESTAMP_MS};
use crate::su::types::{Owner, Tag};

/// Most bytes one registered transaction may carry.
pub const MAX_DATA_BYTES: usize = 256 * 1024 * 1024;

/// The gateway.
#[derive(Default)]
pub struct LocalGateway {
    txs: RwLock<HashMap<String, (TxMeta, bytes::Bytes)>>,
    schedulers: RwLock<HashMap<String, SchedulerLocation>>,
}

impl LocalGateway {
    /// Records that scheduler wallet `owner` serves at `url`.
    pub fn register_scheduler(&self, owner: &str, url: &str, ttl_ms: u64) {
        let loc = SchedulerLocation { url: url.trim_end_matches('/').to_string(), ttl_ms };
        self.schedulers.write().expect("gateway lock").insert(owner.to_string(), loc);
    }

    /// Registers data with `tags` signed by `owner`; returns its id.
    pub fn register(&self, owner: &str, tags: Vec<Tag>, data: Vec<u8>) -> Result<String, GatewayError> {
        if data.len() > MAX_DATA_BYTES {
            return Err(GatewayError::Invalid(format!("{} bytes; the limit is {MAX_DATA_BYTES}", data.len())));
        }
        let mut h = sha2::Sha256::new();
        h.update(owner.as_bytes());
        for t in &tags {
            h.update(t.name.as_bytes());
            h.update([0]);
            h.update(t.value.as_bytes());
            h.update([0]);
        }
        h.update(&data);
        let id = URL_SAFE_NO_PAD.encode(h.finalize());
        let meta = TxMeta {
            id: id.clone(),
            owner: Owner { address: owner.to_string(), key: String::new() },
            tags,
            signature: None,
            anchor: None,
            recipient: None,
        };
        self.txs.write().expect("gateway lock").insert(id.clone(), (meta, data.into()));
        Ok(id)
    }
}

impl Gateway for LocalGateway {
    async fn transaction(&self, id: &str) -> Result<TxMeta, GatewayError> {
        let txs = self.txs.read().expect("gateway lock");
        txs.get(id).map(|(m, _)| m.clone()).ok_or_else(|| GatewayError::NotFound(id.to_string()))
    }

    async fn raw(&self, id: &str) -> Result<bytes::Bytes, GatewayError> {
        let txs = self.txs.read().expect("gateway lock");
        txs.get(id).map(|(_, d)| d.clone()).ok_or_else(|| GatewayError::NotFound(id.to_string()))
    }

    async fn blocks(&self, min_height: u64, max_timestamp_s: i64) -> Result<Vec<Block>, GatewayError> {
        let mut out = Vec::new();
        let mut height = min_height.max(GENESIS_HEIGHT);
        while out.len() < MAX_BLOCKS_PER_CALL {
            let k = i64::try_from(height - GENESIS_HEIGHT).unwrap_or(i64::MAX / BLOCK_INTERVAL_MS);
            let timestamp_s = (GENESIS_TIMESTAMP_MS + k.saturating_mul(BLOCK_INTERVAL_MS)) / 1000;
            out.push(Block { height, timestamp_s });
            if timestamp_s > max_timestamp_s {
                break;
            }
            height += 1;
        }
        Ok(out)
    }

    /// Newest first by the records' `Timestamp` tag (the local gateway has no blocks).
    async fn checkpoints(&self, pid: &str, owners: &[String], limit: usize) -> Result<Vec<TxMeta>, GatewayError> {
        let has = |m: &TxMeta, name: &str, value: &str| m.tags.iter().any(|t| t.name == name && t.value == value);
        let ts = |m: &TxMeta| {
            m.tags.iter().find(|t| t.name == "Timestamp").and_then(|t| t.value.parse::<i64>().ok()).unwrap_or(0)
        };
        let txs = self.txs.read().expect("gateway lock");
        let mut out: Vec<TxMeta> = txs
            .values()
            .map(|(m, _)| m)
            .filter(|m| has(m, "Process", pid) && has(m, "Type", "Checkpoint") && has(m, "Data-Protocol", "ao"))
            .filter(|m| owners.contains(&m.owner.address))
            .cloned()
            .collect();
        out.sort_by(|a, b| ts(b).cmp(&ts(a)).then_with(|| a.id.cmp(&b.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn scheduler_location(&self, owner: &str) -> Result<SchedulerLocation, GatewayError> {
        let s = self.schedulers.read().expect("gateway lock");
        s.get(owner).cloned().ok_or_else(|| GatewayError::NotFound(format!("Scheduler-Location of {owner}")))
    }
}
