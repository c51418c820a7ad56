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

pub mod chat;
pub mod routing;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
