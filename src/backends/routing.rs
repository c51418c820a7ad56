//! The routing backend: given a `_target` option (one URS target string,
//! a skill expression, or a JSON list of up to 15 steps), find an agent
//! who is ready for the media and has capacity, and reserve them for a
//! while so the interaction can be routed to them. What `queue:submit`
//! asks of URS, reduced to what a Callback service needs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BoxFuture;

/// A request to find and reserve an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The caller's id for this request (`queue:submit`'s `requestid`);
    /// [`RoutingBackend::cancel`] names it.
    pub request_id: String,
    /// The interaction to be routed.
    pub interaction_id: String,
    /// The virtual queue the request waits in (`_urs_virtual_queue`).
    pub virtual_queue: String,
    /// The media the agent must be ready for (`chat`, `voice`, ...).
    pub media: String,
    /// The `_target` option text: a target string such as
    /// `Billing@StatServer.GA` or `?:English=20&Loans=2@StatServer.GA`,
    /// or a JSON list of steps (see [`crate::backends::target`]).
    pub target: String,
    /// Higher is served first among requests waiting for the same agents.
    #[serde(default)]
    pub priority: i64,
    /// How long to wait for an agent in all, in milliseconds; the request
    /// fails with [`RoutingError::Timeout`] after it.
    pub timeout_ms: u64,
    /// How long the chosen agent stays reserved, in milliseconds, unless
    /// [`RoutingBackend::confirm`] or [`RoutingBackend::release`] comes
    /// first (`_agent_reserve_timeout`).
    pub reserve_ms: u64,
}

impl ReserveRequest {
    /// [`ReserveRequest::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// An agent reserved for one interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// Names this reservation in [`RoutingBackend::confirm`] and
    /// [`RoutingBackend::release`].
    pub reservation_id: String,
    /// The agent's id (employee id).
    pub agent_id: String,
    /// The agent's display name (their chat nickname).
    pub agent_name: String,
    /// The agent's place.
    pub place: String,
    /// The target that matched, as a URS string (`Chat_Agents@StatServer.GA`,
    /// or `agent@StatServer.A` for an agent target): `targetselected`.
    pub target_selected: String,
    /// The virtual queue the request waited in: `vqselected`.
    pub virtual_queue: String,
    /// Milliseconds the request waited before the agent was found.
    pub waited_ms: u64,
}

/// Why a reservation could not be made or used.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "message", rename_all = "snake_case")]
pub enum RoutingError {
    /// No agent became available before the request's timeout.
    #[error("no agent became available in time")]
    Timeout,
    /// The request was cancelled.
    #[error("the request was cancelled")]
    Cancelled,
    /// The target text or a request field is invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The reservation or request named is not known.
    #[error("unknown reservation or request: {0}")]
    Unknown(String),
    /// The backend could not be reached or failed.
    #[error("routing backend failed: {0}")]
    Backend(String),
}

impl RoutingError {
    /// The short code ORS events carry in `error` (`timeout`, `cancelled`,
    /// `invalidattribute`, `unknown`, `remote`).
    pub fn code(&self) -> &'static str {
        match self {
            RoutingError::Timeout => "timeout",
            RoutingError::Cancelled => "cancelled",
            RoutingError::Invalid(_) => "invalidattribute",
            RoutingError::Unknown(_) => "unknown",
            RoutingError::Backend(_) => "remote",
        }
    }
}

/// Finds and reserves agents.
pub trait RoutingBackend: Send + Sync {
    /// Waits until an agent matching the request's target is ready with
    /// capacity for its media, walking multi-step targets by their
    /// timeouts, and reserves that agent. Fails with `Timeout` when the
    /// request's timeout passes first, and `Cancelled` after `cancel`.
    fn reserve(&self, request: ReserveRequest) -> BoxFuture<'_, Result<Reservation, RoutingError>>;

    /// Cancels a request: a waiting one fails `Cancelled`, and an agent
    /// already reserved for it and not yet confirmed is released (the
    /// requester may never have had the answer: a server that asks again
    /// after a restart cancels first). True when either happened.
    fn cancel(&self, request_id: &str) -> BoxFuture<'_, bool>;

    /// The interaction was delivered to the reserved agent: the agent
    /// keeps that capacity until `release`, with no reservation timeout.
    fn confirm(&self, reservation_id: &str) -> BoxFuture<'_, Result<(), RoutingError>>;

    /// The reservation is over (interaction ended, or never delivered):
    /// the agent's capacity is free again.
    fn release(&self, reservation_id: &str) -> BoxFuture<'_, ()>;

    /// A statistic of a target (`RStatAgentsReady`, `RStatAgentsReadyvoice`,
    /// `RStatAgentsTotal`, `StatAgentsAvailable`, ...), for `stat_to_check`
    /// and `_genesys.statistic.sData`.
    fn statistic(&self, target: &str, stat: &str) -> BoxFuture<'_, Result<f64, RoutingError>>;
}
