#![deny(missing_docs)]
//! `ors`: an orchestration server built on a W3C SCXML 1.0 interpreter with
//! an ECMAScript data model. `src/README.md` draws the layers; each module
//! uses only those below it (checked by `tests/layers.rs`).
//!
//! - Engine: [`model`] (the immutable document, `Event`), [`parser`] (text →
//!   [`model::Document`]), [`datamodel`] (ECMAScript on boa, and null),
//!   [`interpreter`] (Appendix D over a [`interpreter::Session`], no I/O).
//! - Session host: [`io`] (the Basic HTTP Event I/O Processor, the HTTP
//!   client), [`host`] (many sessions on one thread, and [`host::loader`],
//!   the one loader of `src` texts with the URL allow-list).
//! - Server core: [`store`] (durable sessions on SQLite or PostgreSQL),
//!   [`server`] (workers, the ORS REST API, documents, metrics, and
//!   [`server::Extension`], the one door for services).
//! - Services: [`modules`] (the ORS platform modules), [`backends`]
//!   (routing and chat backends), [`gms`] (the contact-centre extension).
//! - Application: [`app`] (the composition root: configuration and the
//!   extensions `ors serve` runs), [`cli`] (the command line), [`bench`].

pub mod app;
pub mod backends;
pub mod bench;
pub mod cli;
pub mod datamodel;
pub mod fuzzing;
pub mod gms;
pub mod host;
pub mod ids;
pub mod interpreter;
pub mod io;
pub mod memory;
pub mod model;
pub mod modules;
pub mod parser;
pub mod server;
pub mod store;

pub use host::loader::load_file_blocking as load_file;
pub use interpreter::{Event, EventKind, Host, Session, SessionOptions, SessionSnapshot};
pub use model::Document;
pub use parser::{LoadError, LoadOptions, parse_document};
