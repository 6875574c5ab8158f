//! An in-memory gateway: transactions registered by id with their tags, owner and data. Serves
//! modules to `metalcu dev` and fakes in tests. Ids of registered data are content-derived
//! (base64url of sha256, 43 characters, like Arweave ids), so the same module file always gets
//! the same module id.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;

use super::{Gateway, GatewayError, TxMeta};
use crate::su::types::{Owner, Tag};

/// Most bytes one registered transaction may carry.
pub const MAX_DATA_BYTES: usize = 256 * 1024 * 1024;

/// The gateway.
#[derive(Default)]
pub struct LocalGateway {
    txs: RwLock<HashMap<String, (TxMeta, bytes::Bytes)>>,
}

impl LocalGateway {
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
}
