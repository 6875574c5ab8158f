//! The Scheduler Unit (SU) side of the CU: the JSON the SU serves, turning SU nodes into the
//! `msg` objects `handle` receives, and hash-chain verification.
//!
//! Everything here is pure (no I/O): the HTTP client that fetches pages lives beside it (issue 4)
//! and feeds these functions. Shapes and rules follow `../shared/spec/cu-protocol.md` §2.
//!
//! Invariants: SU data is untrusted — every field is validated and bounded ([`types::MAX_TAGS`],
//! [`types::MAX_TAG_BYTES`]); a malformed node is an error naming the message, never a guess.

pub mod client;
pub mod hashchain;
pub mod local;
pub mod local_http;
pub mod message;
pub mod router;
pub mod scheduler;
pub mod types;
