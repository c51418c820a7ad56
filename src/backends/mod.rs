//! The contact-centre backends the GMS services route through: a
//! [`routing::RoutingBackend`] that finds and reserves agents, and a
//! [`chat::ChatBackend`] that hosts chat interactions and their
//! transcripts. Each is a trait with two implementations: an embedded
//! simulator (the default, so `ors serve` works with no other service)
//! and an HTTP client for a real service speaking the JSON protocol
//! documented beside the client.
//!
//! Backends are shared by every worker thread and HTTP handler, so their
//! methods take `&self`, are `Send + Sync`, and return boxed `Send`
//! futures.
//!
//! [`build`] makes the backends from [`settings::BackendSettings`]; the
//! simulator it may return is administered over HTTP with
//! [`admin::admin_router`]. [`routing_http`] and [`chat_http`] document the
//! JSON protocol of external backends and hold both its clients and
//! routers that expose any backend over it.

pub mod admin;
mod background;
pub mod chat;
pub mod chat_http;
pub mod chat_sim;
pub mod protocol;
pub mod routing;
pub mod routing_http;
pub mod routing_sim;
pub mod settings;
pub mod simulator;
pub mod target;

pub use admin::admin_router;
pub use chat_http::{HttpChat, chat_protocol_router};
pub use chat_sim::ChatSim;
pub use routing_http::{HttpRouting, routing_protocol_router};
pub use routing_sim::RoutingSim;
pub use settings::{AgentSettings, BackendSettings, SimulatorSettings};
pub use simulator::{SimError, Simulator, build};

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why backends could not be set up: bad settings, or an HTTP client or a
/// background thread that could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A setting is invalid; the text names it (`agent id 'a' is used
    /// twice`, `routing_url '…' must be an http:// or https:// URL`).
    #[error("{0}")]
    Settings(String),
    /// A client or the thread behind it could not start.
    #[error("{0}")]
    Start(String),
}

/// A boxed future that can cross threads (backend calls).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The backends a server runs with.
#[derive(Clone)]
pub struct Backends {
    /// Agent selection and reservation.
    pub routing: Arc<dyn routing::RoutingBackend>,
    /// Chat interactions.
    pub chat: Arc<dyn chat::ChatBackend>,
}

/// A new id for a backend object ([`crate::ids::object_id`]: 16 lowercase
/// hex digits).
pub(crate) fn new_id() -> String {
    crate::ids::object_id()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Locks a mutex, carrying on with the data if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_16_hex_digits_and_unique() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
