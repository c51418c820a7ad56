//! GMS-style contact-centre services that run on the orchestration server.
//! So far: Callback service definitions and the checks a create request
//! passes ([`service`]), and the routing targets a service's `_target`
//! option names ([`target`]), parsed so that a bad value is refused with a
//! clear message before any session starts.

pub mod service;
pub mod target;
