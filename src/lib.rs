//! metalcu: an ao Compute Unit for bare metal.
//!
//! - [`bench`]: `metalcu bench`, the end-to-end load bench;
//! - [`checkpoint`]: memory images as verified, sparse, page-aligned files, restored by mapping;
//! - [`config`]: the settings of `metalcu serve` (flags, environment, TOML file);
//! - [`dev`]: `metalcu dev`, a CU with an embedded scheduler and gateway on one machine;
//! - [`doctor`]: `metalcu doctor`, host checks for bare-metal operators;
//! - [`engine`]: runs ao modules in wasmtime, byte-exact with the reference host;
//! - [`eval`]: replays message logs with the Compute Unit's rollback rule (`metalcu eval`);
//! - [`gateway`]: the Arweave gateway the CU reads modules and data from;
//! - [`http`]: the CU's HTTP API (routes, validation, cursors) over a `CuService` domain seam;
//! - [`logging`]: tracing subscriber setup, human or JSON lines (`--log-format`);
//! - [`metrics`]: the CU's Prometheus metrics (`GET /metrics`);
//! - [`net`]: the client side of HTTP (transports: epoll, io_uring; retries and redirects);
//! - [`notify`]: systemd readiness, status and watchdog notifications of `metalcu serve`;
//! - [`process`]: per-process rules between the scheduler's data and the engine (options, limits);
//! - [`serve`]: `metalcu serve`, the CU for the real network;
//! - [`service`]: the CU core behind the HTTP layer (runtime + store);
//! - [`store`]: persistence of evaluation results;
//! - [`su`]: the Scheduler Unit's data: pages, nodes → `msg`, hash chains (the CU server's input).
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod dev;
pub mod doctor;
pub mod engine;
pub mod eval;
pub mod gateway;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod process;
pub mod serve;
pub mod service;
pub mod store;
pub mod su;
