//! WeaveDrive: Arweave data a format 4 / wasm64 module reads by path (`/data/<tx id>`, …).
//!
//! The glue serves `__asyncjs__weavedrive_open/read/close` through Asyncify. metalcu serves them
//! through this trait; the server implements it over the gateway, tests use [`MapDrive`]. With no
//! drive configured, `open` returns 0 (file not found), as the reference does.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most bytes one `read` may return.
pub const MAX_READ_BYTES: u64 = 64 * 1024 * 1024;

/// A source of Arweave data for one process.
pub trait WeaveDrive: Send + Sync {
    /// Opens `path` if admissible at `block_height`; returns a descriptor > 0, or 0 if not found.
    fn open(&self, path: &str, block_height: Option<i64>) -> i64;
    /// Reads up to `len` bytes from `fd`; an empty vector at end of file or on a bad descriptor.
    fn read(&self, fd: i64, len: u64) -> Vec<u8>;
    /// Closes `fd`.
    fn close(&self, fd: i64);
}

/// An in-memory drive: path → bytes. Descriptors start at 1000 (clear of the glue's own).
#[derive(Default)]
pub struct MapDrive {
    files: HashMap<String, Vec<u8>>,
    open: Mutex<HashMap<i64, (String, usize)>>,
}

impl MapDrive {
    /// A drive serving `files`.
    pub fn new(files: HashMap<String, Vec<u8>>) -> Self {
        MapDrive { files, open: Mutex::new(HashMap::new()) }
    }
}

impl WeaveDrive for MapDrive {
    fn open(&self, path: &str, _block_height: Option<i64>) -> i64 {
        if !self.files.contains_key(path) {
            return 0;
        }
        let mut open = self.open.lock().expect("drive lock");
        let fd = 1000 + open.len() as i64;
        open.insert(fd, (path.to_string(), 0));
        fd
    }
    fn read(&self, fd: i64, len: u64) -> Vec<u8> {
        let mut open = self.open.lock().expect("drive lock");
        let Some((path, pos)) = open.get_mut(&fd) else { return Vec::new() };
        let data = &self.files[path.as_str()];
        let end = (*pos).saturating_add(len.min(MAX_READ_BYTES) as usize).min(data.len());
        let out = data[*pos..end].to_vec();
        *pos = end;
        out
    }
    fn close(&self, fd: i64) {
        self.open.lock().expect("drive lock").remove(&fd);
    }
}
