#![deny(missing_docs)]
//! `ors`: an orchestration server built on a W3C SCXML 1.0 interpreter with
//! an ECMAScript data model.
//!
//! The engine is split into [`parser`] (text → [`model::Document`]),
//! [`interpreter`] (Appendix D over a [`interpreter::Session`]) and
//! [`datamodel`] (ECMAScript on boa, and null). [`cli`] holds the command
//! line hosts (`ors run`, `ors validate`, `ors conformance`); [`server`] is
//! `ors serve`, with the ORS modules in [`modules`].

pub mod backends;
pub mod bench;
pub mod cli;
pub mod datamodel;
pub mod gms;
pub mod host;
pub mod interpreter;
pub mod io;
pub mod model;
pub mod modules;
pub mod parser;
pub mod server;
pub mod store;

/// The host's loader, also at its old path for callers outside the host.
pub use host::loader;
pub use host::loader::load_file_blocking as load_file;
pub use interpreter::{Event, EventKind, Host, Session, SessionOptions, SessionSnapshot};
pub use model::Document;
pub use parser::{LoadError, LoadOptions, parse_document};
