//! Event I/O processors beyond the SCXML one the interpreter handles
//! itself: the Basic HTTP Event I/O Processor ([`basichttp`]).

pub mod basichttp;
