//! Per-process rules of the CU that sit between the scheduler's data and the engine: which
//! module options a process gets (limits, format, extensions). The process actor, ordering and
//! cron generation join this module with issue 4.

pub mod cron;
pub mod evaluator;
pub mod options;
