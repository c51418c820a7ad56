//! GMS-style contact-centre services that run on the orchestration server.
//! So far: the routing targets a Callback service's `_target` option names
//! ([`target`]), parsed and checked so that a bad value is refused with a
//! clear message before any session starts.

pub mod target;
