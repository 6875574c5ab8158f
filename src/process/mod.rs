//! Per-process rules of the CU that sit between the scheduler's data and the engine: which
//! module options a process gets (limits, format, extensions), the messages the CU builds itself
//! (spawn, assignments, crons, dry-runs), cron generation, and the evaluation [`evaluator::Runtime`].

pub mod cron;
pub mod evaluator;
pub mod msgs;
pub mod options;
pub mod residency;
