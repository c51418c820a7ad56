//! GMS-style contact-centre services that run on the orchestration server.
//! So far: Callback service definitions and the checks a create request
//! passes ([`service`]), and the routing targets a service's `_target`
//! option names ([`target`]), parsed so that a bad value is refused with a
//! clear message before any session starts; and the CometD (Bayeux)
//! endpoint that pushes chat updates to mobile and web clients
//! ([`cometd`]).

pub mod cometd;
pub mod service;
pub mod target;
