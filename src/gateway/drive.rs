//! [`GatewayDrive`]: WeaveDrive (`__asyncjs__weavedrive_*`) served from the CU's gateway, for
//! processes whose module declares the `WeaveDrive` extension (and wasm64 `draft_2024_02_15`
//! modules, which always get it).
//!
//! Served paths: `/data/<tx id>` — the transaction's data from `GET /raw/<id>`. Other paths
//! (`/headers/…`, `/block/…`) and ids that are not Arweave ids open as "not found" (descriptor 0),
//! as the reference does for what it cannot serve.
//!
//! Not reproduced from the reference (yet): its admissibility rule, which in `Assignments` mode
//! refuses data not assigned to the process or attested by a trusted attestor. metalcu serves
//! any transaction the gateway has.
//!
//! Invariants: wasm calls the drive synchronously from an evaluation thread (tokio's blocking
//! pool), which waits here for the gateway, at most [`READ_DEADLINE`] per file; at most
//! [`MAX_FILE_BYTES`] per file and [`MAX_OPEN_FILES`] open at once per process.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::Gateway;
use super::http::is_arweave_id;
use crate::engine::weavedrive::{MAX_READ_BYTES, WeaveDrive};

/// Longest wait for one file's data.
pub const READ_DEADLINE: Duration = Duration::from_secs(60);
/// Largest file served.
pub const MAX_FILE_BYTES: usize = 256 * 1024 * 1024;
/// Files open at once per process.
pub const MAX_OPEN_FILES: usize = 64;
/// The first descriptor handed out (clear of the glue's own).
pub const FIRST_FD: i64 = 1000;

/// Open files: the next descriptor, and descriptor → (data, read position).
type OpenFiles = (i64, HashMap<i64, (Bytes, usize)>);

/// WeaveDrive over a gateway, for one process.
pub struct GatewayDrive<G: Gateway> {
    gateway: Arc<G>,
    runtime: tokio::runtime::Handle,
    open: Mutex<OpenFiles>,
}

impl<G: Gateway> GatewayDrive<G> {
    /// A drive reading through `gateway` on `runtime`.
    pub fn new(gateway: Arc<G>, runtime: tokio::runtime::Handle) -> Self {
        GatewayDrive { gateway, runtime, open: Mutex::new((FIRST_FD, HashMap::new())) }
    }

    fn fetch(&self, id: &str) -> Option<Bytes> {
        let gateway = self.gateway.clone();
        let id = id.to_string();
        let got = self.runtime.block_on(async move { tokio::time::timeout(READ_DEADLINE, gateway.raw(&id)).await });
        match got {
            Ok(Ok(b)) if b.len() <= MAX_FILE_BYTES => Some(b),
            Ok(Ok(b)) => {
                tracing::warn!(bytes = b.len(), "WeaveDrive: file larger than {MAX_FILE_BYTES} bytes refused");
                None
            }
            Ok(Err(e)) => {
                tracing::info!("WeaveDrive: {e}");
                None
            }
            Err(_) => {
                tracing::warn!("WeaveDrive: no data within {READ_DEADLINE:?}");
                None
            }
        }
    }
}

impl<G: Gateway> WeaveDrive for GatewayDrive<G> {
    fn open(&self, path: &str, _block_height: Option<i64>) -> i64 {
        let Some(id) = path.strip_prefix("/data/").filter(|id| is_arweave_id(id)) else { return 0 };
        if self.open.lock().expect("drive lock").1.len() >= MAX_OPEN_FILES {
            return 0;
        }
        let Some(data) = self.fetch(id) else { return 0 };
        let mut open = self.open.lock().expect("drive lock");
        let fd = open.0;
        open.0 += 1;
        open.1.insert(fd, (data, 0));
        fd
    }

    fn read(&self, fd: i64, len: u64) -> Vec<u8> {
        let mut open = self.open.lock().expect("drive lock");
        let Some((data, pos)) = open.1.get_mut(&fd) else { return Vec::new() };
        let end = (*pos).saturating_add(len.min(MAX_READ_BYTES) as usize).min(data.len());
        let out = data[*pos..end].to_vec();
        *pos = end;
        out
    }

    fn close(&self, fd: i64) {
        self.open.lock().expect("drive lock").1.remove(&fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::local::LocalGateway;

    #[test]
    fn data_paths_read_through_the_gateway_and_others_are_not_found() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let gw = Arc::new(LocalGateway::default());
        let id = gw.register("owner", vec![], b"hello weave".to_vec()).unwrap();
        let drive = GatewayDrive::new(gw, rt.handle().clone());
        let fd = drive.open(&format!("/data/{id}"), Some(1));
        assert!(fd >= FIRST_FD);
        assert_eq!(drive.read(fd, 5), b"hello");
        assert_eq!(drive.read(fd, 100), b" weave");
        assert!(drive.read(fd, 100).is_empty());
        drive.close(fd);
        assert!(drive.read(fd, 1).is_empty());
        assert_eq!(drive.open("/data/not-an-id", None), 0);
        assert_eq!(drive.open(&format!("/headers/{id}"), None), 0);
        assert_eq!(drive.open(&format!("/data/{}", "A".repeat(43)), None), 0, "unknown id");
    }
}
