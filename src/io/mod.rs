//! Event I/O processors beyond the SCXML one the interpreter handles
//! itself: the Basic HTTP Event I/O Processor ([`basichttp`]); and the
//! outbound HTTP client constructor ([`http`]).

pub mod basichttp;
pub mod http;
