//! When the CU writes a checkpoint: a small policy the server consults after each evaluation.
//! The store does not act on it; wiring it (and eviction and shutdown hooks) is the server's job.

use std::time::Duration;

use super::store::Verify;

/// Default: a checkpoint after this many evaluations since the last one.
pub const DEFAULT_EVERY_MESSAGES: u64 = 1000;
/// Default: a checkpoint once this much time has passed since the last one (with at least one
/// evaluation since).
pub const DEFAULT_EVERY: Duration = Duration::from_secs(5 * 60);
/// Default: checkpoints kept per process after a prune (the newest valid ones).
pub const DEFAULT_KEEP: usize = 2;

/// When to write checkpoints and how to read them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many evaluations since the last checkpoint (`None`: not by count).
    pub every_messages: Option<u64>,
    /// After this long since the last checkpoint (`None`: not by time).
    pub every: Option<Duration>,
    /// Before a process's memory is dropped from the CU.
    pub on_eviction: bool,
    /// On SIGTERM, for every process with evaluations since its last checkpoint.
    pub on_shutdown: bool,
    /// Checkpoints kept per process (see [`super::CheckpointStore::prune`]).
    pub keep: usize,
    /// How much of a checkpoint is verified when it is restored.
    pub verify: Verify,
    /// Whether a freshly loaded process resumes from its checkpoints (`IGNORE_LOCAL_CHECKPOINTS=true`
    /// turns this off: checkpoints are still written, never read back).
    pub resume: bool,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_messages: Some(DEFAULT_EVERY_MESSAGES),
            every: Some(DEFAULT_EVERY),
            on_eviction: true,
            on_shutdown: true,
            keep: DEFAULT_KEEP,
            verify: Verify::default(),
            resume: true,
        }
    }
}

impl CheckpointPolicy {
    /// Whether to write a checkpoint now, `messages_since` evaluations and `elapsed` after the
    /// last one. Never when nothing was evaluated since (the checkpoint would be the same).
    pub fn should_checkpoint(&self, messages_since: u64, elapsed: Duration) -> bool {
        messages_since > 0
            && (self.every_messages.is_some_and(|n| messages_since >= n) || self.every.is_some_and(|t| elapsed >= t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_count_or_time_never_when_idle() {
        let p = CheckpointPolicy::default();
        assert!(!p.should_checkpoint(0, Duration::from_secs(3600)), "nothing new: no checkpoint");
        assert!(!p.should_checkpoint(DEFAULT_EVERY_MESSAGES - 1, Duration::from_secs(1)));
        assert!(p.should_checkpoint(DEFAULT_EVERY_MESSAGES, Duration::ZERO));
        assert!(p.should_checkpoint(1, DEFAULT_EVERY));
        let off = CheckpointPolicy { every_messages: None, every: None, ..CheckpointPolicy::default() };
        assert!(!off.should_checkpoint(u64::MAX, Duration::MAX));
    }
}
