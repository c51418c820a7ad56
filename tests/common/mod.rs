//! The test kit every integration test includes with `mod common;`: a
//! server on a real socket or in process ([`server`]), a typed client for
//! the ORS and GMS APIs ([`client`]), bounded polling ([`wait`]), the
//! SQLite/PostgreSQL store matrix ([`stores`]) and fixture paths and
//! scratch directories ([`files`]), and `ors serve` as a child process to
//! kill ([`process`]), `ors run` as a child process ([`cli`]) and engine
//! hosts for driving a session directly ([`hosts`]), the CometD node client
//! ([`node`]) and the one skip decision ([`skips`]).
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
pub mod server;
pub mod skips;
pub mod stores;
pub mod wait;

pub use client::{Api, Reply};
pub use files::{fixture, fixtures_dir, scratch_dir};
pub use server::{InProcess, TestServer, in_process, serve_router, spawn_server};
pub use wait::eventually;
