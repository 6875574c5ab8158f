//! [`CheckpointStore`]: checkpoint files in a directory, one subdirectory per process.
//!
//! ```text
//! <dir>/LOCK                                          flock: one CU per directory
//! <dir>/<pid>/<timestamp:020>-<nonce:020>[-<hex(cron)>].ckpt
//! <dir>/<pid>/.<name>.<n>.tmp                         a write in progress (or left by a crash)
//! ```
//!
//! Invariants:
//! - a file under its final name is complete and was fsynced before it got that name: writes go
//!   to a temporary file in the same directory, then fsync, rename, fsync of the directory. On any
//!   error the temporary file is removed and the error names the directory; nothing partial
//!   remains under a checkpoint name;
//! - files are never changed in place (a rewrite of the same position renames a new inode over
//!   the old one), so a mapped image stays valid while mapped, even if the file is pruned;
//! - reading trusts nothing: the header, the page map and (by [`Verify`]) the memory are checked,
//!   and the header must agree with the file's name and directory. A file that fails is skipped
//!   with a warning naming it and the reason, and reported to the caller ([`Scan::skipped`]);
//! - process ids are untrusted: only [`is_valid_process_id`] names become directories;
//! - temporary files not being written by this store are stale (the directory lock rules out
//!   another writer) and are removed on open, before scans and on prune.
//!
//! Restoring maps the file: an anonymous mapping of the memory's size (zero, and backed by the
//! huge zero page where the kernel allows, so reading the empty parts costs almost nothing) with
//! each run of stored pages mapped copy-on-write from the file over it (`MAP_PRIVATE|MAP_FIXED`).
//! Restore cost therefore grows with the stored pages, not the memory size. When the file has
//! more runs than [`MAX_MAPPED_RUNS`] (each is a kernel mapping) or the OS page is not
//! [`PAGE`] bytes, the stored pages are read into the anonymous mapping instead.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};

use super::format::{
    Checkpoint, FormatError, HEADER_LEN, Header, MAX_CRON_BYTES, PAGE, PageMap, check_checkpoint, check_memory_len,
    encode_header, is_valid_process_id, parse_header, state_hash_full, state_hash_sparse,
};
use crate::store::Position;

/// Suffix of checkpoint files.
pub const SUFFIX: &str = ".ckpt";
/// Suffix of temporary files.
pub const TEMP_SUFFIX: &str = ".tmp";
/// Name of the lock file at the top of the directory.
pub const LOCK_FILE: &str = "LOCK";
/// Most runs of stored pages mapped one by one; past this the pages are read instead.
pub const MAX_MAPPED_RUNS: usize = 1024;
/// Most checkpoint files one process directory may list (a scan reads at most this many names).
pub const MAX_FILES_PER_PROCESS: usize = 10_000;

/// How much of a checkpoint is verified when it is loaded.
///
/// The header and the page map are always verified (their own hashes, every field, the file's
/// exact length). The trade-off is in the memory. `Full` recomputes the state hash from every
/// byte of the restored image, which reads every page (aos2: 110 MB, mostly the zero page).
/// `Live` recomputes the same hash reading only the 64 KiB chunks that hold stored pages, and
/// takes the constant hash of a zero chunk for the others: exact, because the image is built
/// from the map (pages the map marks empty are fresh anonymous memory, never read from the file),
/// so it verifies every byte restored at a cost that grows with the stored pages. `HeaderOnly`
/// trusts the stored pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// Header, map, and the state hash over every byte of the image.
    Full,
    /// Header, map, and the state hash over the chunks that hold stored pages.
    #[default]
    Live,
    /// Header and map only.
    HeaderOnly,
}

/// Why a checkpoint could not be written, listed or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A filesystem operation on the checkpoint directory failed (disk full, not writable, …).
    #[error("checkpoint dir {}: cannot {op}: {source}{}", dir.display(), hint(source))]
    Io { dir: PathBuf, op: String, source: io::Error },
    /// The directory is locked by another CU.
    #[error("checkpoint dir {} is in use by another process (lock {})", dir.display(), LOCK_FILE)]
    Locked { dir: PathBuf },
    /// A checkpoint file is corrupt, torn, of another version, or not what its name says.
    #[error("checkpoint {}: {problem}", path.display())]
    Corrupt { path: PathBuf, problem: FormatError },
    /// A checkpoint file could not be read or mapped.
    #[error("checkpoint {}: cannot {op}: {source}", path.display())]
    Unreadable { path: PathBuf, op: &'static str, source: io::Error },
    /// What the caller asked to write is out of the format's bounds.
    #[error("checkpoint refused: {0}")]
    Invalid(FormatError),
    /// A process id that cannot name a directory.
    #[error("invalid process id {0:?}")]
    InvalidProcessId(String),
}

fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => " (disk full)",
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => " (not writable)",
        _ => "",
    }
}

/// A checkpoint file found by name (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub position: Position,
}

/// How an image came into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Each run of stored pages mapped copy-on-write from the file.
    Mapped { runs: usize },
    /// Stored pages read into anonymous memory (too many runs, or an OS page size other than
    /// [`PAGE`]).
    Read { runs: usize },
}

/// A restored memory image: read-only, exactly the memory's length, zero where the map says so.
#[derive(Debug)]
pub struct Image {
    map: Mmap,
    mapping: Mapping,
}

impl Image {
    /// The memory, ready for [`crate::engine::Engine::instantiate_image`].
    pub fn memory(&self) -> &[u8] {
        &self.map
    }

    /// How the image was brought in.
    pub fn mapping(&self) -> Mapping {
        self.mapping
    }

    /// The mapping itself.
    pub fn mmap(&self) -> &Mmap {
        &self.map
    }
}

/// A checkpoint read back and verified.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub header: Header,
    pub image: Image,
}

impl Loaded {
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.header.checkpoint
    }

    pub fn memory(&self) -> &[u8] {
        self.image.memory()
    }
}

/// A checkpoint passed over by a scan, and why.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub error: CheckpointError,
}

/// The result of [`CheckpointStore::latest_valid`].
#[derive(Debug)]
pub struct Scan {
    /// The newest checkpoint that verified, if any.
    pub loaded: Option<Loaded>,
    /// Newer checkpoints that did not verify, newest first.
    pub skipped: Vec<Skipped>,
}

/// The result of [`CheckpointStore::prune`].
#[derive(Debug, Default)]
pub struct Pruned {
    pub kept: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

/// Checkpoint files under one directory.
pub struct CheckpointStore {
    dir: PathBuf,
    /// Held for the store's life: `flock(LOCK_EX)` on `<dir>/LOCK`.
    _lock: File,
    /// Temporary files being written now (never removed as stale).
    writing: Mutex<HashSet<PathBuf>>,
    counter: AtomicU64,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The file name of a checkpoint at `p`; sorts like `Position` for equal-width fields.
pub fn file_name(p: &Position) -> String {
    let cron = p.cron.as_ref().map(|c| format!("-{}", hex::encode(c.as_bytes()))).unwrap_or_default();
    format!("{:020}-{:020}{cron}{SUFFIX}", p.timestamp, p.nonce)
}

/// The position a checkpoint file name encodes (`None` if the name is not exactly one
/// [`file_name`] writes).
pub fn parse_file_name(name: &str) -> Option<Position> {
    let stem = name.strip_suffix(SUFFIX)?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    let (ts, rest) = stem.split_at_checked(20)?;
    let rest = rest.strip_prefix('-')?;
    let (nonce, cron) = rest.split_at_checked(20)?;
    if !digits(ts) || !digits(nonce) {
        return None;
    }
    let cron = match cron {
        "" => None,
        c => {
            let h = c.strip_prefix('-')?;
            if h.is_empty() || h.len() > 2 * MAX_CRON_BYTES || h.bytes().any(|b| b.is_ascii_uppercase()) {
                return None;
            }
            Some(String::from_utf8(hex::decode(h).ok()?).ok()?)
        }
    };
    let p = Position { timestamp: ts.parse().ok()?, nonce: nonce.parse().ok()?, cron };
    (p.timestamp >= 0 && file_name(&p) == name).then_some(p)
}

fn sys_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(0)
}

impl CheckpointStore {
    /// Opens (creating if needed) the checkpoint directory `dir`, takes its lock, and removes
    /// temporary files a crash left behind.
    pub fn open(dir: impl Into<PathBuf>) -> Result<CheckpointStore, CheckpointError> {
        let dir = dir.into();
        let io_err = |op: &str| {
            let dir = dir.clone();
            let op = op.to_string();
            move |source| CheckpointError::Io { dir, op, source }
        };
        std::fs::create_dir_all(&dir).map_err(io_err("create the directory"))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io_err("create the lock file"))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(CheckpointError::Locked { dir });
            }
            return Err(io_err("lock the directory")(e));
        }
        let store =
            CheckpointStore { dir, _lock: lock, writing: Mutex::new(HashSet::new()), counter: AtomicU64::new(0) };
        for pid in store.process_ids()? {
            if let Err(e) = store.remove_stale_temps(&pid) {
                tracing::warn!(error = %e, "checkpoint: stale temporary files not removed");
            }
        }
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn process_dir(&self, pid: &str) -> Result<PathBuf, CheckpointError> {
        if !is_valid_process_id(pid) {
            return Err(CheckpointError::InvalidProcessId(pid.chars().take(64).collect()));
        }
        Ok(self.dir.join(pid))
    }

    /// Processes with a directory here.
    pub fn process_ids(&self) -> Result<Vec<String>, CheckpointError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|source| CheckpointError::Io {
            dir: self.dir.clone(),
            op: "list the directory".into(),
            source,
        })?;
        let mut out: Vec<String> = rd
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                (is_valid_process_id(&name) && e.file_type().ok()?.is_dir()).then_some(name)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Processes with a directory here, the most recently written first (a directory's
    /// modification time changes when a checkpoint is renamed into it or pruned from it).
    pub fn process_ids_by_recency(&self) -> Result<Vec<(String, std::time::SystemTime)>, CheckpointError> {
        let mut out: Vec<(String, std::time::SystemTime)> = self
            .process_ids()?
            .into_iter()
            .filter_map(|pid| {
                let at = std::fs::metadata(self.dir.join(&pid)).and_then(|m| m.modified()).ok()?;
                Some((pid, at))
            })
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Writes `memory` as the checkpoint `c`; returns the file's path. Reads every page of
    /// `memory` once (to find the empty ones) and hashes only the chunks that are not empty.
    pub fn write(&self, c: &Checkpoint, memory: &[u8]) -> Result<PathBuf, CheckpointError> {
        check_checkpoint(c).map_err(CheckpointError::Invalid)?;
        check_memory_len(memory.len() as u64).map_err(CheckpointError::Invalid)?;
        let pdir = self.process_dir(&c.process_id)?;
        let map = PageMap::of_memory(memory);
        let header = Header {
            checkpoint: c.clone(),
            memory_len: memory.len() as u64,
            live_pages: map.live() as u64,
            state_hash: state_hash_sparse(memory, &map),
            map_hash: *blake3::hash(map.bytes()).as_bytes(),
            written_ms: now_ms(),
        };
        let header_bytes = encode_header(&header).map_err(CheckpointError::Invalid)?;
        let io_err = |op: &str, source: io::Error| CheckpointError::Io { dir: pdir.clone(), op: op.into(), source };
        std::fs::create_dir_all(&pdir).map_err(|e| io_err("create the process directory", e))?;
        let name = file_name(&c.position);
        let path = pdir.join(&name);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = pdir.join(format!(".{name}.{n}{TEMP_SUFFIX}"));
        self.writing.lock().expect("writing set").insert(tmp.clone());
        let result = (|| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io_err("create a temporary file", e))?;
            let written = (|| {
                file.set_len(header.file_len())?;
                for r in map.runs() {
                    file.write_all_at(&memory[r.clone()], (HEADER_LEN + r.start) as u64)?;
                }
                file.write_all_at(map.bytes(), header.map_offset())?;
                file.write_all_at(&header_bytes[..], 0)?;
                file.sync_all()
            })();
            drop(file);
            written.map_err(|e| io_err("write a checkpoint", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io_err("rename the checkpoint into place", e))
        })();
        if result.is_err() {
            match std::fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %tmp.display(), error = %e, "checkpoint: temporary file not removed"),
            }
        }
        self.writing.lock().expect("writing set").remove(&tmp);
        result?;
        // The file is complete and durable; only its name might not survive a crash yet.
        File::open(&pdir).and_then(|d| d.sync_all()).map_err(|e| io_err("sync the directory", e))?;
        Ok(path)
    }

    /// Checkpoint files of `pid` by name, oldest first (not verified). A missing directory is an
    /// empty list; other names in it are ignored.
    pub fn list(&self, pid: &str) -> Result<Vec<Entry>, CheckpointError> {
        let pdir = self.process_dir(pid)?;
        let rd = match std::fs::read_dir(&pdir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CheckpointError::Io { dir: pdir, op: "list the directory".into(), source }),
        };
        let mut out = Vec::new();
        for e in rd {
            let e =
                e.map_err(|source| CheckpointError::Io { dir: pdir.clone(), op: "list the directory".into(), source })?;
            let Some(position) = e.file_name().to_str().and_then(parse_file_name) else { continue };
            if out.len() >= MAX_FILES_PER_PROCESS {
                tracing::warn!(dir = %pdir.display(), "checkpoint: more than {MAX_FILES_PER_PROCESS} files; the rest are not listed");
                break;
            }
            out.push(Entry { path: e.path(), position });
        }
        out.sort_by(|a, b| a.position.cmp(&b.position));
        Ok(out)
    }

    /// The newest checkpoint of `pid` at or before `not_after` that verifies, trying older ones
    /// when a newer one fails (each failure logged with `tracing::warn!` and returned in
    /// [`Scan::skipped`]). `Ok` with `loaded: None` when none verifies: replay from the scheduler.
    pub fn latest_valid(
        &self,
        pid: &str,
        not_after: Option<&Position>,
        verify: Verify,
    ) -> Result<Scan, CheckpointError> {
        let entries = self.list(pid)?;
        if let Err(e) = self.remove_stale_temps(pid) {
            tracing::warn!(error = %e, "checkpoint: stale temporary files not removed");
        }
        let mut skipped = Vec::new();
        for e in entries.into_iter().rev() {
            if not_after.is_some_and(|max| &e.position > max) {
                continue;
            }
            match load(&e.path, verify) {
                Ok(loaded) => return Ok(Scan { loaded: Some(loaded), skipped }),
                Err(error) => {
                    tracing::warn!(path = %e.path.display(), %error, "checkpoint skipped");
                    skipped.push(Skipped { path: e.path, error });
                }
            }
        }
        Ok(Scan { loaded: None, skipped })
    }

    /// Keeps the `keep` newest checkpoints of `pid` whose header and map verify, and removes every
    /// older file, every newer file that is corrupt, and stale temporary files. A newer file of
    /// another format version (a newer build may read it) or one that cannot be read now is left
    /// alone. The memory of the kept files is not re-hashed.
    pub fn prune(&self, pid: &str, keep: usize) -> Result<Pruned, CheckpointError> {
        let entries = self.list(pid)?;
        self.remove_stale_temps(pid)?;
        let mut out = Pruned::default();
        for e in entries.into_iter().rev() {
            let remove = if out.kept.len() >= keep {
                true
            } else {
                match open_checked(&e.path) {
                    Ok(_) => false,
                    Err(CheckpointError::Corrupt { problem: FormatError::UnsupportedVersion { .. }, .. }) => {
                        continue;
                    }
                    Err(error @ CheckpointError::Corrupt { .. }) => {
                        tracing::warn!(path = %e.path.display(), %error, "checkpoint: corrupt file removed by prune");
                        true
                    }
                    // Not readable now (permissions, I/O error): neither kept nor deleted.
                    Err(error) => {
                        tracing::warn!(path = %e.path.display(), %error, "checkpoint: prune left an unreadable file");
                        continue;
                    }
                }
            };
            if !remove {
                out.kept.push(e.path);
                continue;
            }
            match std::fs::remove_file(&e.path) {
                Ok(()) => out.removed.push(e.path),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CheckpointError::Io {
                        dir: self.dir.join(pid),
                        op: "remove an old checkpoint".into(),
                        source,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes temporary files of `pid` that no write of this store is using; returns how many.
    pub fn remove_stale_temps(&self, pid: &str) -> Result<usize, CheckpointError> {
        let pdir = self.process_dir(pid)?;
        let rd = match std::fs::read_dir(&pdir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(CheckpointError::Io { dir: pdir, op: "list the directory".into(), source }),
        };
        let mut removed = 0;
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX)) {
                continue;
            }
            let path = e.path();
            if self.writing.lock().expect("writing set").contains(&path) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), "checkpoint: removed a temporary file left by an interrupted write");
                    removed += 1;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CheckpointError::Io { dir: pdir, op: "remove a stale temporary file".into(), source });
                }
            }
        }
        Ok(removed)
    }
}

/// Opens `path` and checks its header, its length and its page map; the header must agree with
/// the file's name and its directory's (the process id).
fn open_checked(path: &Path) -> Result<(File, Header, PageMap), CheckpointError> {
    let corrupt = |problem| CheckpointError::Corrupt { path: path.to_path_buf(), problem };
    let unreadable = |op, source| CheckpointError::Unreadable { path: path.to_path_buf(), op, source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| unreadable("open", e))?;
    let meta = file.metadata().map_err(|e| unreadable("stat", e))?;
    if !meta.is_file() {
        return Err(unreadable("read", io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
    }
    let len = meta.len();
    if len < HEADER_LEN as u64 {
        return Err(corrupt(FormatError::TooShort { len }));
    }
    let mut bytes = Box::new([0u8; HEADER_LEN]);
    file.read_exact_at(&mut bytes[..], 0).map_err(|e| unreadable("read the header", e))?;
    let header = parse_header(&bytes).map_err(corrupt)?;
    let c = &header.checkpoint;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if parse_file_name(name).as_ref() != Some(&c.position) {
        return Err(corrupt(FormatError::NameMismatch { name: name.to_string(), header: file_name(&c.position) }));
    }
    let dir_pid = path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or_default();
    if dir_pid != c.process_id {
        return Err(corrupt(FormatError::WrongProcess { expected: dir_pid.to_string(), found: c.process_id.clone() }));
    }
    if len != header.file_len() {
        return Err(corrupt(FormatError::FileLength { expected: header.file_len(), actual: len }));
    }
    let mut bits = vec![0u8; header.map_len()];
    file.read_exact_at(&mut bits, header.map_offset()).map_err(|e| unreadable("read the page map", e))?;
    let map = PageMap::parse(bits, &header).map_err(corrupt)?;
    Ok((file, header, map))
}

/// Reads the checkpoint at `path`: checks it (see [`Verify`]) and maps its memory.
pub fn load(path: &Path, verify: Verify) -> Result<Loaded, CheckpointError> {
    let (file, header, map) = open_checked(path)?;
    let image = map_image(&file, &map, header.memory_len as usize).map_err(|source| CheckpointError::Unreadable {
        path: path.to_path_buf(),
        op: "map the memory",
        source,
    })?;
    let ok = match verify {
        Verify::Full => state_hash_full(image.memory()) == header.state_hash,
        Verify::Live => state_hash_sparse(image.memory(), &map) == header.state_hash,
        Verify::HeaderOnly => true,
    };
    if !ok {
        return Err(CheckpointError::Corrupt { path: path.to_path_buf(), problem: FormatError::StateHash });
    }
    Ok(Loaded { path: path.to_path_buf(), header, image })
}

/// The memory of a checked file, as described in the module documentation.
fn map_image(file: &File, map: &PageMap, memory_len: usize) -> io::Result<Image> {
    let mut anon = MmapOptions::new().len(memory_len).map_anon()?;
    let runs = map.runs();
    if sys_page_size() == PAGE && runs.len() <= MAX_MAPPED_RUNS {
        // Read faults on the empty parts then map the huge zero page (THP "madvise" mode).
        #[cfg(target_os = "linux")]
        let _ = anon.advise(memmap2::Advice::HugePage);
        let base = anon.as_mut_ptr();
        for r in &runs {
            // SAFETY: `r` lies within the anonymous mapping (runs come from a map of
            // `memory_len` bytes), which this function owns and nothing borrows yet; MAP_FIXED
            // replaces exactly those pages. The file's length was checked to cover the run, and
            // checkpoint files are never truncated or rewritten in place (module invariant).
            let p = unsafe {
                libc::mmap(
                    base.add(r.start).cast(),
                    r.len(),
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    file.as_raw_fd(),
                    (HEADER_LEN + r.start) as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                // SAFETY: as above; puts anonymous memory back in case the failed call unmapped
                // the range, so that dropping `anon` unmaps only what it owns.
                unsafe {
                    libc::mmap(
                        base.add(r.start).cast(),
                        r.len(),
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    );
                }
                return Err(e);
            }
        }
        return Ok(Image { map: anon.make_read_only()?, mapping: Mapping::Mapped { runs: runs.len() } });
    }
    for r in &runs {
        file.read_exact_at(&mut anon[r.clone()], (HEADER_LEN + r.start) as u64)?;
    }
    #[cfg(target_os = "linux")]
    let _ = anon.advise(memmap2::Advice::HugePage);
    Ok(Image { map: anon.make_read_only()?, mapping: Mapping::Read { runs: runs.len() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_refuse_everything_else() {
        for p in [
            Position { timestamp: 0, nonce: 0, cron: None },
            Position { timestamp: 1_700_000_000_123, nonce: u64::MAX, cron: Some("0-10-seconds".into()) },
            Position { timestamp: i64::MAX, nonce: 7, cron: Some("1 minute / ü".into()) },
        ] {
            assert_eq!(parse_file_name(&file_name(&p)), Some(p));
        }
        for bad in [
            "",
            ".ckpt",
            "00000000000000000001-00000000000000000002.tmp",
            "0000000000000000001-00000000000000000002.ckpt",
            "00000000000000000001_00000000000000000002.ckpt",
            "00000000000000000001-00000000000000000002-.ckpt",
            "00000000000000000001-00000000000000000002-4G.ckpt",
            "00000000000000000001-00000000000000000002-4A.ckpt",
            "00000000000000000001-00000000000000000002-ff.ckpt",
            "99999999999999999999-00000000000000000002.ckpt",
            ".00000000000000000001-00000000000000000002.ckpt.0.tmp",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_sort_like_positions_without_cron() {
        let a = file_name(&Position { timestamp: 9, nonce: 100, cron: None });
        let b = file_name(&Position { timestamp: 10, nonce: 1, cron: None });
        assert!(a < b);
    }
}
