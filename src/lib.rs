//! metalcu: an ao Compute Unit for bare metal.
//!
//! - [`engine`]: runs ao modules in wasmtime, byte-exact with the reference host;
//! - [`eval`]: replays message logs with the Compute Unit's rollback rule (`metalcu eval`);
//! - [`process`]: per-process rules between the scheduler's data and the engine (options, limits);
//! - [`store`]: persistence of evaluation results;
//! - [`su`]: the Scheduler Unit's data: pages, nodes → `msg`, hash chains (the CU server's input).
pub mod engine;
pub mod eval;
pub mod process;
pub mod store;
pub mod su;
