//! Usage accounting for billing: what evaluating each process has cost, summed per process and
//! over the whole CU, persisted with the results.
//!
//! Per evaluation the engine measures ([`crate::engine::Accounting`]) gas, wall time, thread CPU
//! time and the memory size after the call; [`Usage`] carries the last three (gas is the
//! evaluation's own `gas` field) to the store, which adds them to [`UsageSums`] in the same
//! transaction that inserts the evaluation.
//!
//! Invariants:
//! - the sums change only when an evaluation row is inserted: re-storing an identical evaluation
//!   (a no-op) adds nothing, a refused one (conflict, invalid) adds nothing, so sums cannot drift
//!   from the stored rows after a crash or a replay;
//! - every stored evaluation is counted, failed ones included (their compute was spent); what is
//!   never stored is never counted: dry-runs, the synthesized spawn of a legacy process, rollback
//!   replays (the CU's own work);
//! - sums saturate instead of wrapping; memory-time is kept exactly, in byte-microseconds (u128).

use std::time::Duration;

use crate::engine::Accounting;

/// Bytes of an encoded [`UsageSums`].
pub const SUMS_BYTES: usize = 1 + 8 * 4 + 16;
/// Version of the encoding written by [`UsageSums::encode`] (its first byte).
pub const SUMS_FORMAT: u8 = 1;

/// What one evaluation cost, besides its gas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Thread CPU time of the call, in microseconds.
    pub cpu_us: u64,
    /// Wall-clock time of the call, in microseconds.
    pub wall_us: u64,
    /// Linear memory size after the call, in bytes.
    pub memory_bytes: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Usage {
    /// The usage the engine measured for one call.
    pub fn of(a: &Accounting) -> Usage {
        Usage { cpu_us: micros(a.cpu), wall_us: micros(a.wall), memory_bytes: a.memory_bytes }
    }

    /// Memory size × wall time of the call, in byte-microseconds.
    pub fn memory_byte_us(&self) -> u128 {
        u128::from(self.memory_bytes) * u128::from(self.wall_us)
    }
}

/// Usage summed over evaluations (of one process, or of every process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageSums {
    /// Evaluations stored (scheduled and cron messages, failed ones included).
    pub messages: u64,
    /// Gas used, as each evaluation's `GasUsed` (0 for formats without metering).
    pub gas: u64,
    /// Thread CPU time, microseconds.
    pub cpu_us: u64,
    /// Wall-clock time, microseconds.
    pub wall_us: u64,
    /// Memory size × wall time, byte-microseconds.
    pub memory_byte_us: u128,
}

impl UsageSums {
    /// Adds one evaluation of `gas` and `usage`.
    pub fn add(&mut self, gas: u64, usage: &Usage) {
        self.messages = self.messages.saturating_add(1);
        self.gas = self.gas.saturating_add(gas);
        self.cpu_us = self.cpu_us.saturating_add(usage.cpu_us);
        self.wall_us = self.wall_us.saturating_add(usage.wall_us);
        self.memory_byte_us = self.memory_byte_us.saturating_add(usage.memory_byte_us());
    }

    /// Adds other sums.
    pub fn merge(&mut self, o: &UsageSums) {
        self.messages = self.messages.saturating_add(o.messages);
        self.gas = self.gas.saturating_add(o.gas);
        self.cpu_us = self.cpu_us.saturating_add(o.cpu_us);
        self.wall_us = self.wall_us.saturating_add(o.wall_us);
        self.memory_byte_us = self.memory_byte_us.saturating_add(o.memory_byte_us);
    }

    /// Memory-time in whole byte-seconds (rounded down).
    pub fn memory_byte_seconds(&self) -> u64 {
        u64::try_from(self.memory_byte_us / 1_000_000).unwrap_or(u64::MAX)
    }

    /// `format u8 ‖ be64 messages ‖ be64 gas ‖ be64 cpu_us ‖ be64 wall_us ‖ be128 memory_byte_us`.
    pub fn encode(&self) -> [u8; SUMS_BYTES] {
        let mut b = [0u8; SUMS_BYTES];
        b[0] = SUMS_FORMAT;
        b[1..9].copy_from_slice(&self.messages.to_be_bytes());
        b[9..17].copy_from_slice(&self.gas.to_be_bytes());
        b[17..25].copy_from_slice(&self.cpu_us.to_be_bytes());
        b[25..33].copy_from_slice(&self.wall_us.to_be_bytes());
        b[33..49].copy_from_slice(&self.memory_byte_us.to_be_bytes());
        b
    }

    /// The inverse of [`UsageSums::encode`]; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<UsageSums> {
        if b.len() != SUMS_BYTES || b[0] != SUMS_FORMAT {
            return None;
        }
        let be64 = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        Some(UsageSums {
            messages: be64(1),
            gas: be64(9),
            cpu_us: be64(17),
            wall_us: be64(25),
            memory_byte_us: u128::from_be_bytes(b[33..49].try_into().expect("16 bytes")),
        })
    }
}

/// Usage of every process together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// Processes with at least one stored evaluation.
    pub processes: u64,
    pub sums: UsageSums,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_round_trip_and_refuse_other_bytes() {
        let mut s = UsageSums::default();
        s.add(7, &Usage { cpu_us: 3, wall_us: 5, memory_bytes: 1 << 40 });
        s.add(u64::MAX, &Usage { cpu_us: 1, wall_us: u64::MAX, memory_bytes: u64::MAX });
        assert_eq!(s.messages, 2);
        assert_eq!(s.gas, u64::MAX, "saturates");
        assert_eq!(s.memory_byte_us, (5u128 << 40) + u128::from(u64::MAX) * u128::from(u64::MAX));
        assert_eq!(UsageSums::decode(&s.encode()), Some(s));
        let mut bad = s.encode();
        bad[0] = 2;
        assert_eq!(UsageSums::decode(&bad), None);
        assert_eq!(UsageSums::decode(&s.encode()[..SUMS_BYTES - 1]), None);
    }

    #[test]
    fn byte_seconds_round_down() {
        let mut s = UsageSums::default();
        s.add(0, &Usage { cpu_us: 0, wall_us: 1_500_000, memory_bytes: 3 });
        assert_eq!(s.memory_byte_us, 4_500_000);
        assert_eq!(s.memory_byte_seconds(), 4);
    }
}
