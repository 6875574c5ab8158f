//! The SU's hash chain (cu-protocol §2.6): each assignment carries
//! `Hash-Chain = b64url(sha256(b64url⁻¹(prev assignment id) ‖ b64url⁻¹(prev Hash-Chain)))`.
//! A break means the SU's log was altered: the process's stream stops with
//! `HashChain invalid on message <id>` (HTTP 422), never a silently different state.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;

/// Processes spawned below this block height predate hash chains and skip the check.
pub const HASH_CHAIN_MIN_BLOCK_HEIGHT: u64 = 1_440_000;

/// The link of a scheduled message carried forward to check the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub assignment_id: String,
    pub hash_chain: String,
}

/// A broken chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HashChain invalid on message {message_id}")]
pub struct ChainBroken {
    pub message_id: String,
}

fn decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// The `Hash-Chain` that must follow `prev`; `None` if `prev` is not valid base64url.
pub fn next_hash_chain(prev: &Link) -> Option<String> {
    let mut h = sha2::Sha256::new();
    h.update(decode(&prev.assignment_id)?);
    h.update(decode(&prev.hash_chain)?);
    Some(URL_SAFE_NO_PAD.encode(h.finalize()))
}

/// Checks `hash_chain` of message `message_id` against the previous scheduled message. Without a
/// previous link (cold start, or a checkpoint without one) it only needs to be non-empty.
pub fn verify(prev: Option<&Link>, hash_chain: &str, message_id: &str, process_height: u64) -> Result<(), ChainBroken> {
    if process_height < HASH_CHAIN_MIN_BLOCK_HEIGHT {
        return Ok(());
    }
    let ok = match prev {
        None => !hash_chain.is_empty(),
        Some(p) => next_hash_chain(p).is_some_and(|expected| expected == hash_chain),
    };
    if ok { Ok(()) } else { Err(ChainBroken { message_id: message_id.to_string() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_link() -> Link {
        Link {
            assignment_id: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".into(),
            hash_chain: "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8".into(),
        }
    }

    #[test]
    fn worked_example_of_the_spec() {
        assert_eq!(next_hash_chain(&spec_link()).unwrap(), "_eq5rPNxA2K9JljNyaKej5x1f8-YEWA6jER80dkVEQg");
        assert!(verify(Some(&spec_link()), "_eq5rPNxA2K9JljNyaKej5x1f8-YEWA6jER80dkVEQg", "m", 1_500_000).is_ok());
    }

    #[test]
    fn a_break_names_the_message() {
        let err = verify(Some(&spec_link()), "AAAA", "msg-7", 1_500_000).unwrap_err();
        assert_eq!(err.to_string(), "HashChain invalid on message msg-7");
    }

    #[test]
    fn cold_start_needs_a_non_empty_chain_and_old_processes_skip_the_check() {
        assert!(verify(None, "x", "m", 1_500_000).is_ok());
        assert!(verify(None, "", "m", 1_500_000).is_err());
        assert!(verify(Some(&spec_link()), "wrong", "m", 1_000_000).is_ok());
    }
}
