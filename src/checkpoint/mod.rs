//! Checkpoints: a process's memory image saved as a file, so a CU can resume the process after an
//! eviction or a restart without replaying its stream from the scheduler.
//!
//! - [`format`]: the versioned, page-aligned file format (header with position, ids, hash-chain
//!   link and hashes; the memory at offset 4096, sparse; a page map), parsed strictly;
//! - [`store`]: [`CheckpointStore`], the files of one directory: atomic durable writes
//!   (temporary file, fsync, rename, fsync of the directory), verified reads that skip and report
//!   corrupt files in favour of older ones, restore by copy-on-write mapping, pruning;
//! - [`policy`]: [`CheckpointPolicy`], when the server writes one;
//! - [`arweave`]: the reference CU's checkpoint records on Arweave (§3.4): find, choose, download
//!   and check, for hydrating a process no local file covers.
//!
//! Resuming: [`CheckpointStore::latest_valid`] → [`Loaded::memory`] →
//! [`crate::engine::Engine::instantiate_image`] (template path: no start-up, only the stored
//! pages copied), then evaluation carries on after [`Checkpoint::position`] with
//! [`Checkpoint::link`] as the previous hash-chain link. The header's state hash is the engine's
//! (`Instance::state_hash`, the value the evaluator stores with each evaluation), so a checkpoint
//! can be checked against the results store at its position.

pub mod arweave;
pub mod format;
pub mod policy;
pub mod store;

pub use format::{Checkpoint, FORMAT_VERSION, FormatError, Header};
pub use policy::CheckpointPolicy;
pub use store::{CheckpointError, CheckpointStore, Entry, Image, Loaded, Mapping, Pruned, Scan, Skipped, Verify};
