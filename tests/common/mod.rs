//! The test kit every integration test includes with `mod common;`:
//! - [`server`]: the server on a real loopback socket, or its router in
//!   process for `oneshot`; fake peers served with `serve_router`;
//! - [`client`]: a typed client of the ORS, GMS and CometD APIs (status
//!   and parsed JSON), over HTTP or straight into a router;
//! - [`wait`]: `eventually`, bounded polling with a clear message;
//! - [`stores`]: the SQLite/PostgreSQL store matrix;
//! - [`process`] and [`cli`]: `ors serve` and `ors run` as child processes;
//! - [`hosts`]: engine hosts for driving a `Session` directly;
//! - [`node`]: the CometD JavaScript client under node;
//! - [`proxy`]: a backend proxy that holds chosen requests until opened;
//! - [`raw`]: HTTP/1.1 by hand on a socket (chosen source address, slow
//!   or unfinished requests, when the server closed), the process's RSS
//!   and open-file limit;
//! - [`skips`]: the one place a test decides to skip (PostgreSQL, node);
//! - [`files`]: fixture paths and scratch directories.
//!
//! Time: waits that run on the test's own tokio runtime in process (the
//! CometD hub's held connect) use paused tokio time. The others stay on
//! the wall clock, bounded by `eventually`: the server's session workers
//! are OS threads with runtimes of their own (timers, hibernation, the
//! purge of halted sessions, a strategy's find-agent timeout), callback
//! `_ttl` expiry compares the wall clock, and child processes (`ors`,
//! node) keep their own time; a socket under paused time would also see
//! its client's timeouts fire early.
//!
//! Each test binary uses only part of the kit, hence the `dead_code`
//! allowance.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod client;
pub mod files;
pub mod hosts;
pub mod node;
pub mod process;
pub mod proxy;
pub mod raw;
pub mod server;
pub mod skips;
pub mod stores;
pub mod wait;

pub use client::{Api, Reply};
pub use files::{fixture, fixtures_dir, scratch_dir};
pub use server::{InProcess, TestServer, in_process, serve_router, spawn_server};
pub use stores::legacy_document_hash;
pub use wait::eventually;
