//! Caches in front of a [`Gateway`]: the verified on-disk cache of module binaries
//! ([`DiskCache`], [`CachedGateway`]) and the two small in-memory helpers the network clients
//! share ([`TtlLru`], a bounded LRU map with optional per-entry expiry, and [`KeyedLocks`], one
//! async lock per key so concurrent misses for the same key do the work once).
//!
//! **What is cached on disk.** [`CachedGateway::raw`] stores a body when it is a module binary:
//! either its id was seen in [`Gateway::transaction`] with the tag `Type` = `Module`, or the body
//! starts with the WebAssembly magic `\0asm` — and it is at most
//! [`DiskCacheConfig::max_item_bytes`] (default [`crate::engine::MAX_MODULE_BYTES`]). Other data
//! (message data, checkpoints) is passed through uncached: it is read once per evaluation, while a
//! module is read by every process that runs it and after every restart. A cached body is served
//! for any `raw(id)` of that id (transactions are immutable).
//!
//! **File format** (`{dir}/{id}.blob`, the reference's `WASM_BINARY_FILE_DIRECTORY`): a
//! [`HEADER_BYTES`]-byte header — [`MAGIC`], the body length (u64 LE), blake3 of the body — then
//! the body. Writes go to a temporary file in the same directory, are fsync'd, renamed over the
//! final name and the directory fsync'd, so a reader sees a whole entry or none. Every read checks
//! magic, length and hash; an entry that fails (torn write from an older crash, bit rot, a foreign
//! file) is deleted with a warning and the body fetched again.
//!
//! **Bounds.** At most [`DiskCacheConfig::max_entries`] entries and
//! [`DiskCacheConfig::max_bytes`] bytes; past either, the least recently used entries (by file
//! modification time, refreshed on every hit) are deleted after a write. Only 43-character
//! base64url ids ever become file names, so a hostile id cannot escape the directory.
//!
//! Invariants: nothing read from disk or from the gateway can make this module panic; a cache
//! failure (full disk, permissions) is logged and the body is still returned.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::http::is_arweave_id;
use super::{Block, Gateway, GatewayError, SchedulerLocation, TxMeta};

/// First bytes of every cache file (format version 1).
pub const MAGIC: &[u8; 16] = b"metalcu-blob-v1\0";
/// Header size: magic, body length (u64 LE), blake3 of the body.
pub const HEADER_BYTES: usize = MAGIC.len() + 8 + 32;
/// File name suffix of cache entries.
pub const ENTRY_SUFFIX: &str = ".blob";
/// File name prefix of in-progress writes.
pub const TEMP_PREFIX: &str = ".tmp-";
/// Temporary files older than this found at open are leftovers of a crash and are deleted.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(600);
/// Default bound on the number of cached binaries.
pub const DEFAULT_MAX_ENTRIES: usize = 256;
/// Default bound on the bytes of all cached binaries (headers included).
pub const DEFAULT_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Ids remembered as modules (from `transaction()` answers) in [`CachedGateway`].
pub const KNOWN_MODULE_IDS: usize = 4096;
/// The WebAssembly binary magic.
pub const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Where and how much to cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCacheConfig {
    /// `WASM_BINARY_FILE_DIRECTORY`.
    pub dir: PathBuf,
    /// Most entries kept.
    pub max_entries: usize,
    /// Most bytes kept (headers included).
    pub max_bytes: u64,
    /// Largest body cached; larger ones are passed through.
    pub max_item_bytes: usize,
}

impl DiskCacheConfig {
    /// Defaults ([`DEFAULT_MAX_ENTRIES`], [`DEFAULT_MAX_BYTES`], `MAX_MODULE_BYTES`) in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskCacheConfig {
            dir: dir.into(),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_item_bytes: crate::engine::MAX_MODULE_BYTES,
        }
    }
}

/// Verified blobs on disk, keyed by Arweave id.
#[derive(Debug)]
pub struct DiskCache {
    cfg: DiskCacheConfig,
    /// Serialises writes and evictions (reads need no lock: renames are atomic).
    write_lock: Mutex<()>,
    counter: AtomicU64,
}

impl DiskCache {
    /// Opens (creating) the directory and deletes stale temporary files.
    pub fn open(cfg: DiskCacheConfig) -> std::io::Result<Self> {
        fs::create_dir_all(&cfg.dir)?;
        if let Ok(entries) = fs::read_dir(&cfg.dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TEMP_AGE);
                if name.to_string_lossy().starts_with(TEMP_PREFIX) && stale {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(DiskCache { cfg, write_lock: Mutex::new(()), counter: AtomicU64::new(0) })
    }

    /// The configuration in force.
    pub fn config(&self) -> &DiskCacheConfig {
        &self.cfg
    }

    /// The file of entry `id` (`None` for anything but a 43-character base64url id).
    pub fn path_of(&self, id: &str) -> Option<PathBuf> {
        is_arweave_id(id).then(|| self.cfg.dir.join(format!("{id}{ENTRY_SUFFIX}")))
    }

    /// The verified body of `id`, if cached. A corrupt entry is deleted (with a warning) and
    /// reported as a miss.
    pub fn get_blocking(&self, id: &str) -> Option<Bytes> {
        let path = self.path_of(id)?;
        let max_file = (self.cfg.max_item_bytes as u64).saturating_add(HEADER_BYTES as u64);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(_) => return None,
        };
        let verdict = if len > max_file {
            Err(format!("{len} bytes is more than the largest entry ({max_file})"))
        } else {
            match fs::read(&path) {
                Ok(file) => decode(&file),
                Err(e) => Err(format!("unreadable: {e}")),
            }
        };
        match verdict {
            Ok(body) => {
                // Refresh the LRU position; failure only ages the entry.
                if let Ok(f) = fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(body)
            }
            Err(why) => {
                tracing::warn!("module cache: {} is corrupt ({why}); deleting it and fetching again", path.display());
                let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `body` as entry `id` (whole or not at all), then enforces the bounds. Bodies over
    /// `max_item_bytes` (or `max_bytes`) and invalid ids are skipped.
    pub fn put_blocking(&self, id: &str, body: &[u8]) -> std::io::Result<()> {
        let Some(path) = self.path_of(id) else { return Ok(()) };
        let total = body.len() as u64 + HEADER_BYTES as u64;
        if body.len() > self.cfg.max_item_bytes || total > self.cfg.max_bytes || self.cfg.max_entries == 0 {
            return Ok(());
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.cfg.dir.join(format!("{TEMP_PREFIX}{id}-{}-{n}", std::process::id()));
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&encode_header(body))?;
            f.write_all(body)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.cfg.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
            return written;
        }
        self.evict(&path);
        Ok(())
    }

    /// Deletes least recently used entries (never `keep`) until both bounds hold.
    fn evict(&self, keep: &Path) {
        let Ok(dir) = fs::read_dir(&self.cfg.dir) else { return };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = dir
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(ENTRY_SUFFIX))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), e.path()))
            })
            .collect();
        let mut count = entries.len();
        let mut bytes: u64 = entries.iter().map(|e| e.1).sum();
        if count <= self.cfg.max_entries && bytes <= self.cfg.max_bytes {
            return;
        }
        entries.sort();
        for (_, len, path) in entries {
            if count <= self.cfg.max_entries && bytes <= self.cfg.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                tracing::debug!("module cache: evicted {}", path.display());
                count -= 1;
                bytes = bytes.saturating_sub(len);
            }
        }
    }

    /// [`DiskCache::get_blocking`] on the blocking pool.
    pub async fn get(self: &Arc<Self>, id: &str) -> Option<Bytes> {
        let (me, id) = (self.clone(), id.to_string());
        tokio::task::spawn_blocking(move || me.get_blocking(&id)).await.ok().flatten()
    }

    /// [`DiskCache::put_blocking`] on the blocking pool.
    pub async fn put(self: &Arc<Self>, id: &str, body: Bytes) -> std::io::Result<()> {
        let (me, id) = (self.clone(), id.to_string());
        match tokio::task::spawn_blocking(move || me.put_blocking(&id, &body)).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(format!("cache write task failed: {e}"))),
        }
    }
}

fn encode_header(body: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(body.len() as u64).to_le_bytes());
    h.extend_from_slice(blake3::hash(body).as_bytes());
    h
}

/// The body of a cache file, if its header holds.
fn decode(file: &[u8]) -> Result<Bytes, String> {
    if file.len() < HEADER_BYTES {
        return Err(format!("{} bytes is shorter than the header", file.len()));
    }
    let (header, body) = file.split_at(HEADER_BYTES);
    if &header[..MAGIC.len()] != MAGIC {
        return Err("bad magic".into());
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[MAGIC.len()..MAGIC.len() + 8]);
    let len = u64::from_le_bytes(len);
    if len != body.len() as u64 {
        return Err(format!("header says {len} bytes, the file holds {}", body.len()));
    }
    if blake3::hash(body).as_bytes()[..] != header[MAGIC.len() + 8..] {
        return Err("blake3 mismatch".into());
    }
    Ok(Bytes::copy_from_slice(body))
}

/// A gateway whose module binaries are served from a [`DiskCache`] (see the module docs for what
/// is cached). Every other call is delegated unchanged. Concurrent `raw()` calls for the same id
/// wait for one another, so a module is fetched once however many processes start at once.
pub struct CachedGateway<G: Gateway> {
    inner: G,
    cache: Arc<DiskCache>,
    modules: Mutex<TtlLru<()>>,
    locks: KeyedLocks,
}

impl<G: Gateway> CachedGateway<G> {
    /// `inner` with binaries cached per `cfg`.
    pub fn new(inner: G, cfg: DiskCacheConfig) -> std::io::Result<Self> {
        Ok(Self::with_cache(inner, Arc::new(DiskCache::open(cfg)?)))
    }

    /// `inner` over an opened cache.
    pub fn with_cache(inner: G, cache: Arc<DiskCache>) -> Self {
        CachedGateway { inner, cache, modules: Mutex::new(TtlLru::new(KNOWN_MODULE_IDS)), locks: KeyedLocks::default() }
    }

    /// The wrapped gateway.
    pub fn inner(&self) -> &G {
        &self.inner
    }

    /// The disk cache.
    pub fn cache(&self) -> &Arc<DiskCache> {
        &self.cache
    }

    fn known_module(&self, id: &str) -> bool {
        self.modules.lock().unwrap_or_else(|p| p.into_inner()).get(id).is_some()
    }
}

impl<G: Gateway> Gateway for CachedGateway<G> {
    async fn transaction(&self, id: &str) -> Result<TxMeta, GatewayError> {
        let tx = self.inner.transaction(id).await?;
        if tx.tags.iter().any(|t| t.name == "Type" && t.value == "Module") {
            self.modules.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), (), None);
        }
        Ok(tx)
    }

    async fn raw(&self, id: &str) -> Result<Bytes, GatewayError> {
        if !is_arweave_id(id) {
            return self.inner.raw(id).await;
        }
        if let Some(body) = self.cache.get(id).await {
            return Ok(body);
        }
        let _turn = self.locks.lock(id).await;
        if let Some(body) = self.cache.get(id).await {
            return Ok(body);
        }
        let body = self.inner.raw(id).await?;
        if (self.known_module(id) || body.starts_with(WASM_MAGIC))
            && let Err(e) = self.cache.put(id, body.clone()).await
        {
            tracing::warn!("module cache: could not store {id} in {}: {e}", self.cache.config().dir.display());
        }
        Ok(body)
    }

    async fn checkpoints(&self, pid: &str, owners: &[String], limit: usize) -> Result<Vec<TxMeta>, GatewayError> {
        self.inner.checkpoints(pid, owners, limit).await
    }

    async fn blocks(&self, min_height: u64, max_timestamp_s: i64) -> Result<Vec<Block>, GatewayError> {
        self.inner.blocks(min_height, max_timestamp_s).await
    }

    async fn scheduler_location(&self, owner: &str) -> Result<SchedulerLocation, GatewayError> {
        self.inner.scheduler_location(owner).await
    }
}

/// A map of at most `capacity` entries; inserting past it drops the least recently used one.
/// Entries may carry an expiry, after which they read as absent. Eviction scans the map (O(n)),
/// which is fine for the few hundred or thousand entries it is used with.
#[derive(Debug)]
pub struct TtlLru<V> {
    capacity: usize,
    tick: u64,
    map: HashMap<String, LruEntry<V>>,
}

#[derive(Debug)]
struct LruEntry<V> {
    value: V,
    expires: Option<Instant>,
    used: u64,
}

impl<V: Clone> TtlLru<V> {
    /// An empty map holding at most `capacity` (≥ 1) entries.
    pub fn new(capacity: usize) -> Self {
        TtlLru { capacity: capacity.max(1), tick: 0, map: HashMap::new() }
    }

    /// The live value of `key`, marking it used.
    pub fn get(&mut self, key: &str) -> Option<V> {
        let now = Instant::now();
        match self.map.get_mut(key) {
            Some(e) if e.expires.is_none_or(|t| t > now) => {
                self.tick += 1;
                e.used = self.tick;
                Some(e.value.clone())
            }
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Sets `key`, expiring after `ttl` (never with `None`; a TTL past the clock's range is
    /// treated as never).
    pub fn insert(&mut self, key: String, value: V, ttl: Option<Duration>) {
        self.tick += 1;
        let expires = ttl.and_then(|t| Instant::now().checked_add(t));
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            let now = Instant::now();
            self.map.retain(|_, e| e.expires.is_none_or(|t| t > now));
            if self.map.len() >= self.capacity
                && let Some(oldest) = self.map.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key, LruEntry { value, expires, used: self.tick });
    }

    /// Drops `key`.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key).map(|e| e.value)
    }

    /// Entries held (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One async lock per key, created on demand and dropped when released: concurrent misses for
/// the same key take turns, so the first does the work and the others find its result.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held turn on one key of [`KeyedLocks`].
#[derive(Debug)]
pub struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits for the turn on `key`.
    pub async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        KeyedGuard { locks: self, key: key.to_string(), lock, guard: Some(guard) }
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.key).is_some_and(|l| Arc::ptr_eq(l, &self.lock)) {
            map.remove(&self.key);
        }
        drop(map);
        self.guard.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_least_recently_used_and_expires() {
        let mut l = TtlLru::new(2);
        l.insert("a".into(), 1, None);
        l.insert("b".into(), 2, None);
        assert_eq!(l.get("a"), Some(1));
        l.insert("c".into(), 3, None);
        assert_eq!(l.get("b"), None);
        assert_eq!(l.get("a"), Some(1));
        assert_eq!(l.get("c"), Some(3));
        l.insert("d".into(), 4, Some(Duration::ZERO));
        assert_eq!(l.get("d"), None);
        l.insert("e".into(), 5, Some(Duration::MAX));
        assert_eq!(l.get("e"), Some(5));
        assert!(l.len() <= 2);
    }

    #[test]
    fn files_round_trip_and_corruption_is_detected() {
        let body = b"\0asm\x01\0\0\0 module".to_vec();
        let mut file = encode_header(&body);
        file.extend_from_slice(&body);
        assert_eq!(decode(&file).unwrap(), Bytes::from(body.clone()));
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode(&flipped).unwrap_err().contains("blake3"));
        assert!(decode(&file[..file.len() - 1]).unwrap_err().contains("header says"));
        assert!(decode(&file[..10]).is_err());
        let mut magic = file.clone();
        magic[0] = b'X';
        assert!(decode(&magic).is_err());
    }
}
