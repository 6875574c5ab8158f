//! The in-memory file system the emscripten glue gives a module (MEMFS), reproduced in Rust.
//!
//! What a module can observe of it — file descriptors, errno values, `stat` fields (inode numbers,
//! sizes, timestamps from the counter clock) — follows the reference glue (`FS`/`MEMFS` of
//! emscripten as bundled in ao-loader 0.0.49). Nothing here touches the host's file system.
//!
//! Invariants: inode numbers are assigned in creation order from 1, as `FS.nextInode`; every
//! node creation or content change reads the clock exactly where the glue does (`Date.now()`), so
//! clock values seen by the module stay aligned with the reference; file sizes are bounded by
//! [`MAX_FILE_BYTES`] and descriptors by [`MAX_OPEN_FILES`].

use std::collections::BTreeMap;

use crate::engine::format::Dialect;

/// Largest file a module may create in its in-memory file system.
pub const MAX_FILE_BYTES: usize = 256 * 1024 * 1024;
/// Largest number of open descriptors (emscripten's `FS.MAX_OPEN_FDS`).
pub const MAX_OPEN_FILES: usize = 4096;
/// Longest path accepted.
pub const MAX_PATH_BYTES: usize = 4096;

/// errno values of emscripten (WASI numbering).
pub mod errno {
    pub const EACCES: i32 = 2;
    pub const EBADF: i32 = 8;
    pub const EEXIST: i32 = 20;
    pub const EFBIG: i32 = 22;
    pub const EINVAL: i32 = 28;
    pub const EISDIR: i32 = 31;
    pub const ELOOP: i32 = 32;
    pub const EMFILE: i32 = 33;
    pub const ENAMETOOLONG: i32 = 37;
    pub const ENOENT: i32 = 44;
    pub const ENOSYS: i32 = 52;
    pub const ENOTDIR: i32 = 54;
    pub const ENOTEMPTY: i32 = 55;
    pub const ENOTTY: i32 = 59;
    pub const EPERM: i32 = 63;
    pub const ESPIPE: i32 = 70;
}
use errno::*;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFLNK: u32 = 0o120000;

const O_ACCMODE: i32 = 3;
const O_CREAT: i32 = 64;
const O_EXCL: i32 = 128;
const O_TRUNC: i32 = 512;
const O_APPEND: i32 = 1024;
const O_DIRECTORY: i32 = 65536;
const O_NOFOLLOW: i32 = 131072;

/// A character device of the default tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Null,
    Tty,
    Random,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir(BTreeMap<String, usize>),
    File(Vec<u8>),
    Dev(Device, u32),
    Link(String),
}

#[derive(Debug, Clone)]
struct Node {
    ino: u64,
    parent: usize,
    mode: u32,
    kind: Kind,
    timestamp: u64,
}

/// An open file description.
#[derive(Debug, Clone)]
struct Stream {
    node: usize,
    flags: i32,
    position: u64,
}

/// Result of a read: bytes, or "fill from the random source".
pub enum ReadData {
    Bytes(Vec<u8>),
    Random(usize),
}

/// The file system of one instance.
#[derive(Debug, Clone)]
pub struct MemFs {
    nodes: Vec<Option<Node>>,
    streams: Vec<Option<Stream>>,
    next_ino: u64,
    cwd: usize,
}

/// `stat` fields as MEMFS `getattr` reports them.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub dev: u32,
    pub ino: u64,
    pub mode: u32,
    pub rdev: u32,
    pub size: u64,
    pub blocks: u64,
    pub time_ms: u64,
}

type R<T> = Result<T, i32>;

impl MemFs {
    /// The tree the glue builds at start-up. Nodes created before the glue installs its counter
    /// clock get timestamp 0 (the reference stamps them with whatever clock was in force).
    pub fn new(dialect: Dialect, clock: &mut u64) -> Self {
        let mut fs = MemFs { nodes: Vec::new(), streams: Vec::new(), next_ino: 1, cwd: 0 };
        if dialect == Dialect::E1 {
            return fs; // format 1 has no file system at all: every syscall is a stub
        }
        let root = fs.push(0, S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), 0);
        debug_assert_eq!(root, 0);
        let mut t0 = 0;
        let tmp = fs.create(root, "tmp", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), &mut t0);
        let _ = tmp;
        let home = fs.create(root, "home", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), &mut t0);
        fs.create(home, "web_user", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), &mut t0);
        let dev = fs.create(root, "dev", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), &mut t0);
        fs.create(dev, "null", S_IFCHR | 0o666, Kind::Dev(Device::Null, 259), &mut t0);
        fs.create(dev, "tty", S_IFCHR | 0o666, Kind::Dev(Device::Tty, 1280), &mut t0);
        fs.create(dev, "tty1", S_IFCHR | 0o666, Kind::Dev(Device::Tty, 1536), &mut t0);
        fs.create(dev, "random", S_IFCHR | 0o666, Kind::Dev(Device::Random, 262), &mut t0);
        fs.create(dev, "urandom", S_IFCHR | 0o666, Kind::Dev(Device::Random, 262), &mut t0);
        let shm = fs.create(dev, "shm", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), &mut t0);
        fs.create(shm, "tmp", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), &mut t0);
        let proc_ = fs.create(root, "proc", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), &mut t0);
        let self_ = fs.create(proc_, "self", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), &mut t0);
        fs.create(self_, "fd", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), &mut t0);
        // FS.init (counter clock in force): stdin/stdout/stderr links, then the three streams.
        for (name, target) in [("stdin", "/dev/tty"), ("stdout", "/dev/tty"), ("stderr", "/dev/tty1")] {
            fs.create(dev, name, S_IFLNK | 0o777, Kind::Link(target.into()), clock);
        }
        for (path, flags) in [("/dev/tty", 0), ("/dev/tty", 1), ("/dev/tty1", 1)] {
            let tty = fs.lookup(path, true).expect("default tree");
            fs.streams.push(Some(Stream { node: tty, flags, position: 0 }));
        }
        if matches!(dialect, Dialect::E4 | Dialect::W64) {
            // ao-loader's `FS_createPath("/", "data")` for WeaveDrive.
            fs.create(root, "data", S_IFDIR | 0o777, Kind::Dir(BTreeMap::new()), clock);
        }
        fs
    }

    fn push(&mut self, parent: usize, mode: u32, kind: Kind, timestamp: u64) -> usize {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.push(Some(Node { ino, parent, mode, kind, timestamp }));
        self.nodes.len() - 1
    }

    fn create(&mut self, parent: usize, name: &str, mode: u32, kind: Kind, clock: &mut u64) -> usize {
        let t = *clock;
        *clock += 1;
        let id = self.push(parent, mode, kind, t);
        if let Some(Node { kind: Kind::Dir(children), .. }) = self.nodes[parent].as_mut() {
            children.insert(name.to_string(), id);
        }
        id
    }

    fn node(&self, id: usize) -> R<&Node> {
        self.nodes.get(id).and_then(Option::as_ref).ok_or(ENOENT)
    }

    fn node_mut(&mut self, id: usize) -> R<&mut Node> {
        self.nodes.get_mut(id).and_then(Option::as_mut).ok_or(ENOENT)
    }

    fn path_of(&self, mut id: usize) -> String {
        let mut parts = Vec::new();
        while id != 0 {
            let Ok(n) = self.node(id) else { break };
            let parent = n.parent;
            if let Ok(Node { kind: Kind::Dir(children), .. }) = self.node(parent)
                && let Some((name, _)) = children.iter().find(|(_, v)| **v == id)
            {
                parts.push(name.clone());
            }
            id = parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Resolves `path` (absolute, or relative to the cwd) to a node.
    fn lookup(&self, path: &str, follow_last: bool) -> R<usize> {
        self.lookup_depth(path, follow_last, 0)
    }

    fn lookup_depth(&self, path: &str, follow_last: bool, depth: u32) -> R<usize> {
        if depth > 40 {
            return Err(ELOOP);
        }
        if path.is_empty() {
            return Err(ENOENT);
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(ENAMETOOLONG);
        }
        let mut cur = if path.starts_with('/') { 0 } else { self.cwd };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let n = self.node(cur)?;
            if *part == ".." {
                cur = n.parent;
                continue;
            }
            let Kind::Dir(children) = &n.kind else { return Err(ENOTDIR) };
            let next = *children.get(*part).ok_or(ENOENT)?;
            if let Kind::Link(target) = &self.node(next)?.kind
                && (!last || follow_last)
            {
                let base = self.path_of(cur);
                let resolved = if target.starts_with('/') { target.clone() } else { format!("{base}/{target}") };
                cur = self.lookup_depth(&resolved, true, depth + 1)?;
                continue;
            }
            cur = next;
        }
        Ok(cur)
    }

    /// Splits `path` into (parent node, last name).
    fn parent_of<'p>(&self, path: &'p str) -> R<(usize, &'p str)> {
        let trimmed = path.trim_end_matches('/');
        let (dir, name) = match trimmed.rfind('/') {
            Some(0) => ("/", &trimmed[1..]),
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => (".", trimmed),
        };
        if name.is_empty() {
            return Err(EINVAL);
        }
        let parent = if dir == "." { self.cwd } else { self.lookup(dir, true)? };
        match self.node(parent)?.kind {
            Kind::Dir(_) => Ok((parent, name)),
            _ => Err(ENOTDIR),
        }
    }

    fn child(&self, parent: usize, name: &str) -> Option<usize> {
        match &self.node(parent).ok()?.kind {
            Kind::Dir(c) => c.get(name).copied(),
            _ => None,
        }
    }

    fn stream(&self, fd: i32) -> R<&Stream> {
        usize::try_from(fd).ok().and_then(|i| self.streams.get(i)).and_then(Option::as_ref).ok_or(EBADF)
    }

    fn alloc_fd(&mut self, s: Stream, min: usize) -> R<i32> {
        for i in min..MAX_OPEN_FILES {
            if i >= self.streams.len() {
                self.streams.resize(i + 1, None);
            }
            if self.streams[i].is_none() {
                self.streams[i] = Some(s);
                return Ok(i as i32);
            }
        }
        Err(EMFILE)
    }

    /// `open(path, flags, mode)`; returns the new descriptor.
    pub fn open(&mut self, path: &str, flags: i32, mode: u32, clock: &mut u64) -> R<i32> {
        let mut node = self.lookup(path, flags & O_NOFOLLOW == 0).ok();
        if flags & O_CREAT != 0 {
            if node.is_some() && flags & O_EXCL != 0 {
                return Err(EEXIST);
            }
            if node.is_none() {
                let (parent, name) = self.parent_of(path)?;
                node = Some(self.create(parent, name, S_IFREG | (mode & 0o7777), Kind::File(Vec::new()), clock));
            }
        }
        let id = node.ok_or(ENOENT)?;
        let n = self.node(id)?;
        let is_dir = matches!(n.kind, Kind::Dir(_));
        if matches!(n.kind, Kind::Link(_)) {
            return Err(ELOOP);
        }
        if flags & O_DIRECTORY != 0 && !is_dir {
            return Err(ENOTDIR);
        }
        if is_dir && (flags & O_ACCMODE != 0 || flags & O_TRUNC != 0) {
            return Err(EISDIR);
        }
        if flags & O_TRUNC != 0
            && let Kind::File(data) = &mut self.node_mut(id)?.kind
        {
            data.clear();
            self.node_mut(id)?.timestamp = tick(clock);
        }
        let flags = flags & !(O_CREAT | O_EXCL | O_TRUNC);
        self.alloc_fd(Stream { node: id, flags, position: 0 }, 0)
    }

    /// `close(fd)`.
    pub fn close(&mut self, fd: i32) -> R<()> {
        self.stream(fd)?;
        self.streams[fd as usize] = None;
        Ok(())
    }

    /// Reads up to `len` bytes at the stream position (or `offset`).
    pub fn read(&mut self, fd: i32, len: usize) -> R<ReadData> {
        let s = self.stream(fd)?.clone();
        if s.flags & O_ACCMODE == 1 {
            return Err(EBADF);
        }
        match &self.node(s.node)?.kind {
            Kind::Dir(_) => Err(EISDIR),
            Kind::Dev(Device::Null, _) | Kind::Dev(Device::Tty, _) => Ok(ReadData::Bytes(Vec::new())),
            Kind::Dev(Device::Random, _) => Ok(ReadData::Random(len)),
            Kind::Link(_) => Err(EINVAL),
            Kind::File(data) => {
                let start = (s.position as usize).min(data.len());
                let end = start.saturating_add(len).min(data.len());
                let out = data[start..end].to_vec();
                if let Some(st) = self.streams[fd as usize].as_mut() {
                    st.position += out.len() as u64;
                }
                Ok(ReadData::Bytes(out))
            }
        }
    }

    /// Writes `bytes` at the stream position; returns the count written.
    pub fn write(&mut self, fd: i32, bytes: &[u8], clock: &mut u64) -> R<usize> {
        let s = self.stream(fd)?.clone();
        if s.flags & O_ACCMODE == 0 {
            return Err(EBADF);
        }
        let node = self.node_mut(s.node)?;
        match &mut node.kind {
            Kind::Dir(_) => Err(EISDIR),
            Kind::Dev(..) => Ok(bytes.len()), // stdout/stderr/null: output goes nowhere
            Kind::Link(_) => Err(EINVAL),
            Kind::File(data) => {
                let pos = if s.flags & O_APPEND != 0 { data.len() } else { s.position as usize };
                let end = pos.checked_add(bytes.len()).ok_or(EFBIG)?;
                if end > MAX_FILE_BYTES {
                    return Err(EFBIG);
                }
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[pos..end].copy_from_slice(bytes);
                node.timestamp = tick(clock);
                if let Some(st) = self.streams[fd as usize].as_mut() {
                    st.position = end as u64;
                }
                Ok(bytes.len())
            }
        }
    }

    /// `lseek(fd, offset, whence)`; returns the new position.
    pub fn seek(&mut self, fd: i32, offset: i64, whence: i32) -> R<u64> {
        let s = self.stream(fd)?.clone();
        let n = self.node(s.node)?;
        let size = match &n.kind {
            Kind::File(d) => d.len() as i64,
            Kind::Dev(Device::Tty, _) => return Err(ESPIPE),
            _ => 0,
        };
        let base = match whence {
            0 => 0,
            1 => s.position as i64,
            2 => size,
            _ => return Err(EINVAL),
        };
        let pos = base.checked_add(offset).filter(|p| *p >= 0).ok_or(EINVAL)?;
        if let Some(st) = self.streams[fd as usize].as_mut() {
            st.position = pos as u64;
        }
        Ok(pos as u64)
    }

    fn stat_node(&self, id: usize) -> R<Stat> {
        let n = self.node(id)?;
        let (size, rdev) = match &n.kind {
            Kind::Dir(_) => (4096, 0),
            Kind::File(d) => (d.len() as u64, 0),
            Kind::Link(t) => (t.len() as u64, 0),
            Kind::Dev(_, rdev) => (0, *rdev),
        };
        let dev = if matches!(n.kind, Kind::Dev(..)) { n.ino as u32 } else { 1 };
        Ok(Stat { dev, ino: n.ino, mode: n.mode, rdev, size, blocks: size.div_ceil(4096), time_ms: n.timestamp })
    }

    /// `stat`/`lstat` of a path.
    pub fn stat(&self, path: &str, follow: bool) -> R<Stat> {
        self.stat_node(self.lookup(path, follow)?)
    }

    /// `fstat` of a descriptor.
    pub fn fstat(&self, fd: i32) -> R<Stat> {
        self.stat_node(self.stream(fd)?.node)
    }

    /// `mkdir(path, mode)`.
    pub fn mkdir(&mut self, path: &str, mode: u32, clock: &mut u64) -> R<()> {
        let (parent, name) = self.parent_of(path)?;
        if self.child(parent, name).is_some() {
            return Err(EEXIST);
        }
        self.create(parent, name, S_IFDIR | (mode & 0o777), Kind::Dir(BTreeMap::new()), clock);
        Ok(())
    }

    /// `unlink(path)` (`dir == false`) or `rmdir(path)`.
    pub fn remove(&mut self, path: &str, dir: bool, clock: &mut u64) -> R<()> {
        let (parent, name) = self.parent_of(path)?;
        let id = self.child(parent, name).ok_or(ENOENT)?;
        match (&self.node(id)?.kind, dir) {
            (Kind::Dir(c), true) if !c.is_empty() => return Err(ENOTEMPTY),
            (Kind::Dir(_), false) => return Err(EISDIR),
            (k, true) if !matches!(k, Kind::Dir(_)) => return Err(ENOTDIR),
            _ => {}
        }
        if id == 0 || id == self.cwd {
            return Err(EPERM);
        }
        if let Kind::Dir(c) = &mut self.node_mut(parent)?.kind {
            c.remove(name);
        }
        self.node_mut(parent)?.timestamp = tick(clock);
        if !self.streams.iter().flatten().any(|s| s.node == id) {
            self.nodes[id] = None;
        }
        Ok(())
    }

    /// `rename(old, new)`.
    pub fn rename(&mut self, old: &str, new: &str, clock: &mut u64) -> R<()> {
        let (op, oname) = self.parent_of(old)?;
        let id = self.child(op, oname).ok_or(ENOENT)?;
        let (np, nname) = self.parent_of(new)?;
        if let Some(existing) = self.child(np, nname) {
            if existing == id {
                return Ok(());
            }
            match &self.node(existing)?.kind {
                Kind::Dir(c) if !c.is_empty() => return Err(ENOTEMPTY),
                Kind::Dir(_) if !matches!(self.node(id)?.kind, Kind::Dir(_)) => return Err(EISDIR),
                _ => {}
            }
        }
        if let Kind::Dir(c) = &mut self.node_mut(op)?.kind {
            c.remove(oname);
        }
        if let Kind::Dir(c) = &mut self.node_mut(np)?.kind {
            c.insert(nname.to_string(), id);
        }
        self.node_mut(id)?.parent = np;
        self.node_mut(op)?.timestamp = tick(clock);
        self.node_mut(np)?.timestamp = tick(clock);
        Ok(())
    }

    /// `readlink(path)`.
    pub fn readlink(&self, path: &str) -> R<String> {
        match &self.node(self.lookup(path, false)?)?.kind {
            Kind::Link(t) => Ok(t.clone()),
            _ => Err(EINVAL),
        }
    }

    /// Whether `path` exists (`faccessat`).
    pub fn access(&self, path: &str) -> R<()> {
        self.lookup(path, true).map(|_| ())
    }

    /// The current directory.
    pub fn cwd(&self) -> String {
        self.path_of(self.cwd)
    }

    /// The absolute path of `fd`'s node (for `*at` calls relative to a directory descriptor).
    pub fn fd_path(&self, fd: i32) -> R<String> {
        Ok(self.path_of(self.stream(fd)?.node))
    }

    /// `dup` to the lowest free descriptor at or above `min` (`F_DUPFD`), or exactly `to` (`dup3`).
    pub fn dup(&mut self, fd: i32, min: i32, exact: Option<i32>) -> R<i32> {
        let s = self.stream(fd)?.clone();
        if let Some(to) = exact {
            let to = usize::try_from(to).ok().filter(|t| *t < MAX_OPEN_FILES).ok_or(EBADF)?;
            if self.streams.len() <= to {
                self.streams.resize(to + 1, None);
            }
            self.streams[to] = Some(s);
            return Ok(to as i32);
        }
        self.alloc_fd(s, min.max(0) as usize)
    }

    /// Stream flags (`F_GETFL`).
    pub fn flags(&self, fd: i32) -> R<i32> {
        Ok(self.stream(fd)?.flags)
    }

    /// Sets stream flags (`F_SETFL`).
    pub fn set_flags(&mut self, fd: i32, flags: i32) -> R<()> {
        self.stream(fd)?;
        if let Some(s) = self.streams[fd as usize].as_mut() {
            s.flags |= flags;
        }
        Ok(())
    }

    /// Whether `fd` is a terminal.
    pub fn is_tty(&self, fd: i32) -> R<bool> {
        let s = self.stream(fd)?;
        Ok(matches!(self.node(s.node)?.kind, Kind::Dev(Device::Tty, _)))
    }

    /// `ftruncate(fd, len)`.
    pub fn truncate(&mut self, fd: i32, len: u64, clock: &mut u64) -> R<()> {
        let s = self.stream(fd)?.clone();
        if len as usize > MAX_FILE_BYTES {
            return Err(EFBIG);
        }
        let n = self.node_mut(s.node)?;
        match &mut n.kind {
            Kind::File(d) => {
                d.resize(len as usize, 0);
                n.timestamp = tick(clock);
                Ok(())
            }
            Kind::Dir(_) => Err(EISDIR),
            _ => Err(EINVAL),
        }
    }

    /// File type of `fd` as WASI `fdstat` reports it (2 char device, 3 directory, 4 regular, 7 link).
    pub fn filetype(&self, fd: i32) -> R<u8> {
        let s = self.stream(fd)?;
        Ok(match self.node(s.node)?.kind {
            Kind::Dev(..) => 2,
            Kind::Dir(_) => 3,
            Kind::File(_) => 4,
            Kind::Link(_) => 7,
        })
    }

    /// Sets a node's timestamp (`utimensat`).
    pub fn touch(&mut self, path: &str, time_ms: u64) -> R<()> {
        let id = self.lookup(path, true)?;
        self.node_mut(id)?.timestamp = time_ms;
        Ok(())
    }
}

fn tick(clock: &mut u64) -> u64 {
    let t = *clock;
    *clock += 1;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tree_has_devices_and_streams() {
        let mut clock = 10_000;
        let fs = MemFs::new(Dialect::E4, &mut clock);
        assert_eq!(clock, 10_004, "three std links and /data read the clock");
        assert!(fs.stat("/dev/urandom", true).is_ok());
        assert!(fs.is_tty(1).unwrap());
        assert_eq!(fs.stat("/nope", true).unwrap_err(), ENOENT);
    }

    #[test]
    fn files_round_trip_and_errors_are_errno() {
        let mut clock = 10_000;
        let mut fs = MemFs::new(Dialect::E2, &mut clock);
        let fd = fs.open("/tmp/a.txt", O_CREAT | 2, 0o644, &mut clock).unwrap();
        assert_eq!(fd, 3);
        assert_eq!(fs.write(fd, b"hello", &mut clock).unwrap(), 5);
        fs.seek(fd, 0, 0).unwrap();
        match fs.read(fd, 10).unwrap() {
            ReadData::Bytes(b) => assert_eq!(b, b"hello"),
            ReadData::Random(_) => panic!("file read as random"),
        }
        assert_eq!(fs.fstat(fd).unwrap().size, 5);
        fs.close(fd).unwrap();
        assert_eq!(fs.close(fd).unwrap_err(), EBADF);
        assert_eq!(fs.open("/tmp/a.txt", O_CREAT | O_EXCL, 0, &mut clock).unwrap_err(), EEXIST);
        fs.rename("/tmp/a.txt", "/tmp/b.txt", &mut clock).unwrap();
        assert_eq!(fs.remove("/tmp", true, &mut clock).unwrap_err(), ENOTEMPTY);
        fs.remove("/tmp/b.txt", false, &mut clock).unwrap();
        fs.remove("/tmp", true, &mut clock).unwrap();
    }
}
