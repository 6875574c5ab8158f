//! The on-disk format of a checkpoint file (version [`FORMAT_VERSION`]): a process's memory image
//! with where it stands in its stream, laid out so the memory can be mapped straight from the file.
//!
//! ```text
//! offset              length               content
//! 0                   4096                 header (layout below)
//! 4096                memory_len           the memory at its own offsets; PAGE-byte pages that
//!                                          are zero are not written (holes: sparse on disk)
//! 4096 + memory_len   memory_len/PAGE/8    page map: bit i (LSB first) set = page i stored
//! (end of file: exactly 4096 + memory_len + memory_len/PAGE/8 bytes)
//! ```
//!
//! Header (all integers little-endian):
//!
//! ```text
//! off   len  field
//! 0     8    magic  b"MCUCKPT\n"
//! 8     4    format version (u32) = FORMAT_VERSION
//! 12    4    header length (u32) = HEADER_LEN
//! 16    4    page size of the page map (u32) = PAGE
//! 20    4    flags (u32): bit 0 cron present, bit 1 hash-chain link present, bit 2 hydrated
//!            (the memory came from an Arweave checkpoint record); other bits zero
//! 24    8    memory length (u64): whole 64 KiB wasm pages, 64 KiB ..= MAX_MEMORY_BYTES
//! 32    8    live pages (u64): bits set in the page map
//! 40    8    timestamp (i64, ms since the epoch, >= 0)
//! 48    8    nonce (u64)
//! 56    8    block height (u64)
//! 64    8    written at (u64, ms since the epoch; informational)
//! 72    32   state hash of the memory (see below)
//! 104   32   map hash: blake3(page map)
//! 136   650  five string slots of (u16 length, 128 bytes zero-padded): process id, module id,
//!            cron id, assignment id, hash chain
//! 786   3278 reserved, zero
//! 4064  32   header hash: blake3(bytes 0..4064)
//! ```
//!
//! The state hash is the engine's ([`crate::engine::dirty::StateHasher::full`], pinned here for
//! version 1 and tested equal): `blake3(len_le64 ‖ blake3(chunk_0) ‖ … ‖ blake3(chunk_n))` over
//! 64 KiB chunks. A chunk with no stored page hashes to a constant, so the hash of a checkpoint can
//! be computed (and verified) from its stored pages alone: [`state_hash_sparse`].
//!
//! Invariants: parsing is strict and total — every field is bounded, padding and reserved bytes
//! must be zero (one file, one encoding), and any deviation is a [`FormatError`] naming the field,
//! never a panic. Pages whose map bit is clear are zero, whatever the file holds there: a reader
//! restores them as zero and never reads them, so the map hash and the state hash together cover
//! every byte restored.

use std::fmt;
use std::ops::Range;

use std::sync::OnceLock;

use crate::store::Position;
use crate::su::hashchain::Link;

/// First bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"MCUCKPT\n";
/// The version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the memory: the header, padded to a page so the memory can be mapped in place.
pub const HEADER_LEN: usize = 4096;
/// Granularity of the page map and of holes (the common OS page size).
pub const PAGE: usize = 4096;
/// A wasm page: memory lengths are whole wasm pages.
pub const WASM_PAGE: u64 = 65536;
/// Largest memory a checkpoint may hold (16 GiB: above any pool slot the CU configures).
pub const MAX_MEMORY_BYTES: u64 = 16 << 30;
/// Largest page map (that of a [`MAX_MEMORY_BYTES`] memory).
pub const MAX_MAP_BYTES: usize = (MAX_MEMORY_BYTES as usize) / PAGE / 8;
/// Longest id (process, module, assignment, hash chain) a header holds.
pub const MAX_ID_BYTES: usize = 128;
/// Longest cron id: it is hex-encoded into the file name, which must stay under 255 bytes.
pub const MAX_CRON_BYTES: usize = 100;
/// Bytes per chunk of the state hash (one wasm page).
pub const STATE_CHUNK: usize = 65536;
/// Memories at least this large are hashed on several threads by [`state_hash_full`].
pub const PARALLEL_HASH_MIN_BYTES: usize = 8 << 20;
/// Most threads one full hash uses.
pub const MAX_HASH_THREADS: usize = 8;

const FLAG_CRON: u32 = 1;
const FLAG_LINK: u32 = 2;
const FLAG_HYDRATED: u32 = 4;
const SLOT_LEN: usize = 2 + MAX_ID_BYTES;
const SLOTS_AT: usize = 136;
const SLOT_NAMES: [&str; 5] = ["process id", "module id", "cron id", "assignment id", "hash chain"];
const RESERVED_AT: usize = SLOTS_AT + SLOT_NAMES.len() * SLOT_LEN;
const HEADER_HASH_AT: usize = HEADER_LEN - 32;

/// Where a process stands when its memory was saved, and how to carry on from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The process (43-character Arweave id, or a `0x` address).
    pub process_id: String,
    /// The module the memory belongs to (its Arweave id as the process names it).
    pub module_id: String,
    /// The last evaluation the memory includes.
    pub position: Position,
    /// Block height in force at that evaluation.
    pub block_height: u64,
    /// The hash-chain link of the last scheduled message, so a resumed evaluator keeps verifying.
    pub link: Option<Link>,
    /// The memory was hydrated from an Arweave checkpoint record rather than reached by
    /// evaluations this CU stored: no stored evaluation sits at its position.
    pub hydrated: bool,
}

/// A parsed header: the checkpoint plus what describes the memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub checkpoint: Checkpoint,
    /// Bytes of memory (whole wasm pages).
    pub memory_len: u64,
    /// Pages stored (non-zero) in the file.
    pub live_pages: u64,
    /// The state hash of the memory ([`state_hash_full`]).
    pub state_hash: [u8; 32],
    /// blake3 of the page map.
    pub map_hash: [u8; 32],
    /// When the file was written (ms since the epoch; informational, not ordered on).
    pub written_ms: u64,
}

impl Header {
    /// Byte offset of the page map in the file.
    pub fn map_offset(&self) -> u64 {
        HEADER_LEN as u64 + self.memory_len
    }

    /// Length of the page map.
    pub fn map_len(&self) -> usize {
        map_len(self.memory_len)
    }

    /// The exact length of a complete file with this header.
    pub fn file_len(&self) -> u64 {
        self.map_offset() + self.map_len() as u64
    }
}

/// Length of the page map of a memory of `memory_len` bytes (a whole number of wasm pages, so
/// of bytes: 16 map bits per wasm page).
pub fn map_len(memory_len: u64) -> usize {
    (memory_len as usize).div_ceil(PAGE).div_ceil(8)
}

/// What is wrong with a checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("file is {len} bytes, shorter than the {HEADER_LEN}-byte header (torn or truncated)")]
    TooShort { len: u64 },
    #[error("wrong magic (not a metalcu checkpoint)")]
    BadMagic,
    #[error("format version {found}; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("header hash does not match (corrupt header)")]
    HeaderHash,
    #[error("header field {field}: {problem}")]
    Field { field: &'static str, problem: String },
    #[error("file is {actual} bytes; its header needs exactly {expected} (torn or truncated)")]
    FileLength { expected: u64, actual: u64 },
    #[error("page map hash does not match (corrupt page map)")]
    MapHash,
    #[error("page map has {found} pages set; the header says {expected}")]
    MapCount { expected: u64, found: u64 },
    #[error("state hash of the memory does not match the header (corrupt memory)")]
    StateHash,
    #[error("file belongs to process {found:?}, not {expected:?}")]
    WrongProcess { expected: String, found: String },
    #[error("file name says {name}, the header says {header}")]
    NameMismatch { name: String, header: String },
}

fn field(field: &'static str, problem: impl Into<String>) -> FormatError {
    FormatError::Field { field, problem: problem.into() }
}

/// Whether `s` can name a process (and so a directory): a 43-character base64url Arweave id, or
/// `0x` and 40 or 64 hex digits. Nothing else — no separators, dots or empty names.
pub fn is_valid_process_id(s: &str) -> bool {
    let arweave = s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let hex = s
        .strip_prefix("0x")
        .is_some_and(|h| (h.len() == 40 || h.len() == 64) && h.bytes().all(|b| b.is_ascii_hexdigit()));
    arweave || hex
}

/// An id (module, assignment, hash chain): 1..=MAX_ID_BYTES printable ASCII characters.
fn check_id(name: &'static str, s: &str) -> Result<(), FormatError> {
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return Err(field(name, format!("{} bytes; must be 1..={MAX_ID_BYTES}", s.len())));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(field(name, "must be printable ASCII without spaces"));
    }
    Ok(())
}

fn check_cron(s: &str) -> Result<(), FormatError> {
    if s.is_empty() || s.len() > MAX_CRON_BYTES {
        return Err(field("cron id", format!("{} bytes; must be 1..={MAX_CRON_BYTES}", s.len())));
    }
    if s.chars().any(char::is_control) {
        return Err(field("cron id", "contains control characters"));
    }
    Ok(())
}

/// Checks a memory length: whole wasm pages, at least one, at most [`MAX_MEMORY_BYTES`].
pub fn check_memory_len(len: u64) -> Result<(), FormatError> {
    if len == 0 || !len.is_multiple_of(WASM_PAGE) || len > MAX_MEMORY_BYTES {
        return Err(field(
            "memory length",
            format!("{len} bytes; must be a positive multiple of {WASM_PAGE} up to {MAX_MEMORY_BYTES}"),
        ));
    }
    Ok(())
}

/// Checks every field of `c` that the format bounds.
pub fn check_checkpoint(c: &Checkpoint) -> Result<(), FormatError> {
    if !is_valid_process_id(&c.process_id) {
        return Err(field("process id", format!("{:?} is not a process id", truncate(&c.process_id))));
    }
    check_id("module id", &c.module_id)?;
    if c.position.timestamp < 0 {
        return Err(field("timestamp", format!("{} is negative", c.position.timestamp)));
    }
    if let Some(cron) = &c.position.cron {
        check_cron(cron)?;
    }
    if let Some(l) = &c.link {
        check_id("assignment id", &l.assignment_id)?;
        check_id("hash chain", &l.hash_chain)?;
    }
    Ok(())
}

/// At most 64 characters of a hostile string, for messages.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Encodes a header. Fails (never panics) if a field is out of bounds.
pub fn encode_header(h: &Header) -> Result<Box<[u8; HEADER_LEN]>, FormatError> {
    let c = &h.checkpoint;
    check_checkpoint(c)?;
    check_memory_len(h.memory_len)?;
    if h.live_pages > h.memory_len / PAGE as u64 {
        return Err(field("live pages", format!("{} exceeds the memory's pages", h.live_pages)));
    }
    let mut b = Box::new([0u8; HEADER_LEN]);
    let mut flags = 0;
    if c.position.cron.is_some() {
        flags |= FLAG_CRON;
    }
    if c.link.is_some() {
        flags |= FLAG_LINK;
    }
    if c.hydrated {
        flags |= FLAG_HYDRATED;
    }
    b[0..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    b[16..20].copy_from_slice(&(PAGE as u32).to_le_bytes());
    b[20..24].copy_from_slice(&flags.to_le_bytes());
    b[24..32].copy_from_slice(&h.memory_len.to_le_bytes());
    b[32..40].copy_from_slice(&h.live_pages.to_le_bytes());
    b[40..48].copy_from_slice(&c.position.timestamp.to_le_bytes());
    b[48..56].copy_from_slice(&c.position.nonce.to_le_bytes());
    b[56..64].copy_from_slice(&c.block_height.to_le_bytes());
    b[64..72].copy_from_slice(&h.written_ms.to_le_bytes());
    b[72..104].copy_from_slice(&h.state_hash);
    b[104..136].copy_from_slice(&h.map_hash);
    let (assignment, chain) =
        c.link.as_ref().map(|l| (l.assignment_id.as_str(), l.hash_chain.as_str())).unwrap_or(("", ""));
    let strings =
        [c.process_id.as_str(), c.module_id.as_str(), c.position.cron.as_deref().unwrap_or(""), assignment, chain];
    for (i, s) in strings.iter().enumerate() {
        let at = SLOTS_AT + i * SLOT_LEN;
        b[at..at + 2].copy_from_slice(&(s.len() as u16).to_le_bytes());
        b[at + 2..at + 2 + s.len()].copy_from_slice(s.as_bytes());
    }
    let hash = blake3::hash(&b[..HEADER_HASH_AT]);
    b[HEADER_HASH_AT..].copy_from_slice(hash.as_bytes());
    Ok(b)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn hash_at(b: &[u8], at: usize) -> [u8; 32] {
    b[at..at + 32].try_into().expect("32 bytes")
}

/// Parses and checks a header: magic, version, lengths, its own hash, every field's bounds.
pub fn parse_header(b: &[u8; HEADER_LEN]) -> Result<Header, FormatError> {
    if b[0..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u32_at(b, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion { found: version });
    }
    if blake3::hash(&b[..HEADER_HASH_AT]).as_bytes() != &b[HEADER_HASH_AT..] {
        return Err(FormatError::HeaderHash);
    }
    let header_len = u32_at(b, 12);
    if header_len as usize != HEADER_LEN {
        return Err(field("header length", format!("{header_len}; version {FORMAT_VERSION} has {HEADER_LEN}")));
    }
    let page = u32_at(b, 16);
    if page as usize != PAGE {
        return Err(field("page size", format!("{page}; version {FORMAT_VERSION} has {PAGE}")));
    }
    let flags = u32_at(b, 20);
    if flags & !(FLAG_CRON | FLAG_LINK | FLAG_HYDRATED) != 0 {
        return Err(field("flags", format!("unknown bits in {flags:#x}")));
    }
    let memory_len = u64_at(b, 24);
    check_memory_len(memory_len)?;
    let live_pages = u64_at(b, 32);
    if live_pages > memory_len / PAGE as u64 {
        return Err(field(
            "live pages",
            format!("{live_pages} exceeds the memory's {} pages", memory_len / PAGE as u64),
        ));
    }
    let timestamp = u64_at(b, 40) as i64;
    if timestamp < 0 {
        return Err(field("timestamp", format!("{timestamp} is negative")));
    }
    let mut strings: Vec<String> = Vec::with_capacity(SLOT_NAMES.len());
    for (i, name) in SLOT_NAMES.iter().enumerate() {
        let at = SLOTS_AT + i * SLOT_LEN;
        let len = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
        if len > MAX_ID_BYTES {
            return Err(field(name, format!("length {len} exceeds {MAX_ID_BYTES}")));
        }
        let (text, pad) = b[at + 2..at + SLOT_LEN].split_at(len);
        if pad.iter().any(|x| *x != 0) {
            return Err(field(name, "non-zero padding"));
        }
        let s = std::str::from_utf8(text).map_err(|_| field(name, "not UTF-8"))?;
        strings.push(s.to_string());
    }
    if b[RESERVED_AT..HEADER_HASH_AT].iter().any(|x| *x != 0) {
        return Err(field("reserved", "non-zero reserved bytes"));
    }
    let mut strings = strings.into_iter();
    let mut next = || strings.next().expect("five slots");
    let (process_id, module_id, cron, assignment_id, hash_chain) = (next(), next(), next(), next(), next());
    let optional = |present: bool, name: &'static str, s: String| -> Result<Option<String>, FormatError> {
        match (present, s.is_empty()) {
            (true, false) => Ok(Some(s)),
            (false, true) => Ok(None),
            (true, true) => Err(field(name, "flagged present but empty")),
            (false, false) => Err(field(name, "set but not flagged present")),
        }
    };
    let cron = optional(flags & FLAG_CRON != 0, "cron id", cron)?;
    let link = match (
        optional(flags & FLAG_LINK != 0, "assignment id", assignment_id)?,
        optional(flags & FLAG_LINK != 0, "hash chain", hash_chain)?,
    ) {
        (Some(assignment_id), Some(hash_chain)) => Some(Link { assignment_id, hash_chain }),
        _ => None,
    };
    let checkpoint = Checkpoint {
        process_id,
        module_id,
        position: Position { timestamp, nonce: u64_at(b, 48), cron },
        block_height: u64_at(b, 56),
        link,
        hydrated: flags & FLAG_HYDRATED != 0,
    };
    check_checkpoint(&checkpoint)?;
    Ok(Header {
        checkpoint,
        memory_len,
        live_pages,
        state_hash: hash_at(b, 72),
        map_hash: hash_at(b, 104),
        written_ms: u64_at(b, 64),
    })
}

/// Which [`PAGE`]-sized pages of a memory are stored (non-zero).
#[derive(Clone, PartialEq, Eq)]
pub struct PageMap {
    bits: Vec<u8>,
    pages: usize,
}

impl fmt::Debug for PageMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageMap({} of {} pages live)", self.live(), self.pages)
    }
}

fn is_zero(b: &[u8]) -> bool {
    let (words, tail) = b.split_at(b.len() / 16 * 16);
    words.chunks_exact(16).all(|w| u128::from_ne_bytes(w.try_into().expect("16 bytes")) == 0)
        && tail.iter().all(|x| *x == 0)
}

impl PageMap {
    /// The map of `memory` (every page read once).
    pub fn of_memory(memory: &[u8]) -> PageMap {
        let pages = memory.len().div_ceil(PAGE);
        let mut bits = vec![0u8; pages.div_ceil(8)];
        for (i, page) in memory.chunks(PAGE).enumerate() {
            if !is_zero(page) {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        PageMap { bits, pages }
    }

    /// Parses a stored map of a `memory_len`-byte memory, checking its hash and bit count against
    /// the header.
    pub fn parse(bits: Vec<u8>, header: &Header) -> Result<PageMap, FormatError> {
        if bits.len() != header.map_len() {
            return Err(field("page map", format!("{} bytes, expected {}", bits.len(), header.map_len())));
        }
        if blake3::hash(&bits).as_bytes() != &header.map_hash {
            return Err(FormatError::MapHash);
        }
        let map = PageMap { bits, pages: (header.memory_len as usize).div_ceil(PAGE) };
        // Memory lengths are whole wasm pages, so there are no spare bits past the last page.
        let found = map.live() as u64;
        if found != header.live_pages {
            return Err(FormatError::MapCount { expected: header.live_pages, found });
        }
        Ok(map)
    }

    /// The map's bytes, as stored.
    pub fn bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Pages of the memory.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Pages stored.
    pub fn live(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// Whether page `i` is stored.
    pub fn is_live(&self, i: usize) -> bool {
        i < self.pages && self.bits[i / 8] & (1 << (i % 8)) != 0
    }

    /// Byte ranges (in the memory) of the maximal runs of stored pages, in order.
    pub fn runs(&self) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        for i in 0..self.pages {
            if !self.is_live(i) {
                continue;
            }
            let at = i * PAGE;
            match out.last_mut() {
                Some(r) if r.end == at => r.end = at + PAGE,
                _ => out.push(at..at + PAGE),
            }
        }
        out
    }

    /// Whether any page of 64 KiB chunk `c` is stored.
    pub fn chunk_is_live(&self, c: usize) -> bool {
        const BYTES: usize = STATE_CHUNK / PAGE / 8;
        self.bits.get(c * BYTES..(c + 1) * BYTES).is_some_and(|b| b.iter().any(|x| *x != 0))
    }
}

fn root(len: usize, chunks: impl Iterator<Item = [u8; 32]>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&(len as u64).to_le_bytes());
    for c in chunks {
        h.update(&c);
    }
    *h.finalize().as_bytes()
}

/// blake3 of a chunk of zeros.
fn zero_chunk_hash() -> [u8; 32] {
    static ZERO: OnceLock<[u8; 32]> = OnceLock::new();
    *ZERO.get_or_init(|| *blake3::hash(&[0u8; STATE_CHUNK]).as_bytes())
}

/// The state hash of `memory`, reading every byte (on up to [`MAX_HASH_THREADS`] threads for
/// large memories; chunks hash independently).
pub fn state_hash_full(memory: &[u8]) -> [u8; 32] {
    let hash = |m: &[u8]| m.chunks(STATE_CHUNK).map(|c| *blake3::hash(c).as_bytes()).collect::<Vec<_>>();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_HASH_THREADS);
    if threads < 2 || memory.len() < PARALLEL_HASH_MIN_BYTES {
        return root(memory.len(), hash(memory).into_iter());
    }
    let per = memory.len().div_ceil(STATE_CHUNK).div_ceil(threads) * STATE_CHUNK;
    let parts: Vec<Vec<[u8; 32]>> = std::thread::scope(|s| {
        let handles: Vec<_> = memory.chunks(per).map(|part| s.spawn(move || hash(part))).collect();
        handles.into_iter().map(|h| h.join().expect("hash thread")).collect()
    });
    root(memory.len(), parts.into_iter().flatten())
}

/// The state hash of `memory` given that every chunk without a stored page in `map` is zero:
/// reads only the chunks holding stored pages. Equal to [`state_hash_full`] when that holds (as
/// for a memory and its own [`PageMap::of_memory`], or an image restored from a map).
pub fn state_hash_sparse(memory: &[u8], map: &PageMap) -> [u8; 32] {
    let zero = zero_chunk_hash();
    root(
        memory.len(),
        memory
            .chunks(STATE_CHUNK)
            .enumerate()
            .map(|(i, c)| if map.chunk_is_live(i) { *blake3::hash(c).as_bytes() } else { zero }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    fn header() -> Header {
        Header {
            checkpoint: Checkpoint {
                process_id: PID.into(),
                module_id: "module-id_123".into(),
                position: Position { timestamp: 1_700_000_000_000, nonce: 42, cron: Some("0-10-seconds".into()) },
                block_height: 1_500_000,
                link: Some(Link { assignment_id: "a".repeat(43), hash_chain: "h".repeat(43) }),
                hydrated: false,
            },
            memory_len: 2 * WASM_PAGE,
            live_pages: 3,
            state_hash: [1; 32],
            map_hash: [3; 32],
            written_ms: 99,
        }
    }

    /// Re-seals a header whose bytes a test changed after the hash.
    fn reseal(b: &mut [u8; HEADER_LEN]) {
        let h = blake3::hash(&b[..HEADER_HASH_AT]);
        b[HEADER_HASH_AT..].copy_from_slice(h.as_bytes());
    }

    #[test]
    fn header_round_trips_with_and_without_optionals() {
        let h = header();
        assert_eq!(parse_header(&encode_header(&h).unwrap()).unwrap(), h);
        let mut bare = header();
        bare.checkpoint.position.cron = None;
        bare.checkpoint.link = None;
        assert_eq!(parse_header(&encode_header(&bare).unwrap()).unwrap(), bare);
        let mut evm = header();
        evm.checkpoint.process_id = format!("0x{}", "ab".repeat(20));
        assert_eq!(parse_header(&encode_header(&evm).unwrap()).unwrap(), evm);
        let mut hydrated = header();
        hydrated.checkpoint.hydrated = true;
        let b = encode_header(&hydrated).unwrap();
        assert_eq!(u32_at(&b[..], 20), FLAG_CRON | FLAG_LINK | FLAG_HYDRATED);
        assert_eq!(parse_header(&b).unwrap(), hydrated);
    }

    #[test]
    fn layout_is_as_documented() {
        let b = encode_header(&header()).unwrap();
        assert_eq!(&b[0..8], b"MCUCKPT\n");
        assert_eq!(u32_at(&b[..], 8), 1);
        assert_eq!(u32_at(&b[..], 12), 4096);
        assert_eq!(u64_at(&b[..], 24), 2 * WASM_PAGE);
        assert_eq!(u64_at(&b[..], 48), 42);
        assert_eq!(&b[SLOTS_AT + 2..SLOTS_AT + 45], PID.as_bytes());
        assert_eq!(&b[72..104], &[1; 32]);
        assert_eq!(&b[104..136], &[3; 32]);
        assert_eq!(RESERVED_AT, 786);
    }

    #[test]
    fn every_single_byte_flip_is_refused_without_panic() {
        let good = encode_header(&header()).unwrap();
        for i in 0..HEADER_LEN {
            let mut b = good.clone();
            b[i] ^= 0x40;
            assert!(parse_header(&b).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn resealed_hostile_fields_get_named_errors() {
        let good = encode_header(&header()).unwrap();
        let case = |edit: &dyn Fn(&mut [u8; HEADER_LEN]), want: &str| {
            let mut b = good.clone();
            edit(&mut b);
            reseal(&mut b);
            let e = parse_header(&b).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} does not mention {want:?}");
        };
        case(&|b| b[24..32].copy_from_slice(&12345u64.to_le_bytes()), "memory length");
        case(&|b| b[24..32].copy_from_slice(&(MAX_MEMORY_BYTES + WASM_PAGE).to_le_bytes()), "memory length");
        case(&|b| b[24..32].copy_from_slice(&0u64.to_le_bytes()), "memory length");
        case(&|b| b[32..40].copy_from_slice(&u64::MAX.to_le_bytes()), "live pages");
        case(&|b| b[40..48].copy_from_slice(&(-5i64).to_le_bytes()), "timestamp");
        case(&|b| b[20..24].copy_from_slice(&0x80u32.to_le_bytes()), "flags");
        case(&|b| b[12..16].copy_from_slice(&8192u32.to_le_bytes()), "header length");
        case(&|b| b[16..20].copy_from_slice(&65536u32.to_le_bytes()), "page size");
        case(&|b| b[SLOTS_AT..SLOTS_AT + 2].copy_from_slice(&600u16.to_le_bytes()), "process id");
        case(&|b| b[SLOTS_AT + 2] = b'/', "process id");
        case(&|b| b[SLOTS_AT + 100] = 1, "padding");
        case(&|b| b[2000] = 1, "reserved");
        case(&|b| b[20..24].copy_from_slice(&FLAG_LINK.to_le_bytes()), "cron id");
        let module = SLOTS_AT + SLOT_LEN;
        case(&|b| b[module + 2] = 0xff, "module id");
        case(&|b| b[module + 2] = b' ', "module id");
    }

    #[test]
    fn magic_and_version_are_checked_first() {
        let mut b = encode_header(&header()).unwrap();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(parse_header(&b), Err(FormatError::UnsupportedVersion { found: 2 }));
        b[0] = b'X';
        assert_eq!(parse_header(&b), Err(FormatError::BadMagic));
    }

    #[test]
    fn encode_refuses_out_of_bounds_fields() {
        let mut h = header();
        h.checkpoint.process_id = "../etc".into();
        assert!(encode_header(&h).is_err());
        let mut h = header();
        h.checkpoint.module_id = "m".repeat(MAX_ID_BYTES + 1);
        assert!(encode_header(&h).is_err());
        let mut h = header();
        h.checkpoint.position.cron = Some("c".repeat(MAX_CRON_BYTES + 1));
        assert!(encode_header(&h).is_err());
        let mut h = header();
        h.memory_len = 1000;
        assert!(encode_header(&h).is_err());
    }

    #[test]
    fn process_ids() {
        assert!(is_valid_process_id(PID));
        assert!(is_valid_process_id(&format!("0x{}", "A".repeat(40))));
        assert!(is_valid_process_id(&format!("0x{}", "0".repeat(64))));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            &"a".repeat(42),
            &format!("{}/", &PID[..42]),
            "0x12",
            &format!("0x{}", "g".repeat(40)),
        ] {
            assert!(!is_valid_process_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn page_map_runs_and_parse() {
        let mut mem = vec![0u8; 2 * WASM_PAGE as usize];
        mem[5] = 1;
        mem[PAGE + 7] = 2;
        mem[20 * PAGE] = 3;
        let map = PageMap::of_memory(&mem);
        assert_eq!(map.live(), 3);
        assert_eq!(map.runs(), vec![0..2 * PAGE, 20 * PAGE..21 * PAGE]);
        assert!(map.chunk_is_live(0) && map.chunk_is_live(1) && !map.chunk_is_live(2));
        let mut h = header();
        h.live_pages = 3;
        h.map_hash = *blake3::hash(map.bytes()).as_bytes();
        assert_eq!(PageMap::parse(map.bytes().to_vec(), &h).unwrap(), map);
        h.live_pages = 4;
        assert!(matches!(PageMap::parse(map.bytes().to_vec(), &h), Err(FormatError::MapCount { .. })));
        assert!(PageMap::parse(vec![0; 3], &h).is_err());
    }

    /// A memory of `wasm_pages` with bytes set at a few spread-out offsets.
    fn sparse(wasm_pages: usize) -> Vec<u8> {
        let mut mem = vec![0u8; wasm_pages * WASM_PAGE as usize];
        let len = mem.len();
        for (k, at) in [0, 4097, 70_000, len / 3, len / 2 + 12_345, len - 1].into_iter().enumerate() {
            if at < len {
                mem[at] = k as u8 + 1;
            }
        }
        mem
    }

    /// The format pins the engine's state hash: if the engine's definition changes, this fails
    /// and the format version must change with it.
    #[test]
    fn state_hash_is_the_engines() {
        for pages in [1, 3, 200, 300] {
            let mem = sparse(pages);
            let engine = crate::engine::dirty::StateHasher::full(&mem);
            assert_eq!(state_hash_full(&mem), engine, "{pages} pages, full");
            assert_eq!(state_hash_sparse(&mem, &PageMap::of_memory(&mem)), engine, "{pages} pages, sparse");
        }
    }

    #[test]
    fn sparse_hash_trusts_the_map_full_hash_reads_everything() {
        let mem = sparse(8);
        let map = PageMap::of_memory(&mem);
        assert!(!map.chunk_is_live(3));
        let mut stray = mem.clone();
        stray[3 * WASM_PAGE as usize + 9] = 0xAA; // a chunk the map says is empty
        assert_eq!(state_hash_sparse(&stray, &map), state_hash_full(&mem));
        assert_ne!(state_hash_full(&stray), state_hash_full(&mem));
    }
}
