//! The embedded simulator, the routing and chat simulators together, and
//! [`build`], which turns [`BackendSettings`] into the [`Backends`] the
//! server runs with.
//!
//! A [`Simulator`] owns one background thread (see
//! `backends/background.rs`) on which every simulator timer runs:
//! reservation expiry in [`RoutingSim`] and agents' delayed accept in
//! [`ChatSim`]. Nothing is spawned on a caller's runtime. The chat
//! simulator asks the routing simulator's agents whether they accept
//! chats by themselves, so per-agent `auto_accept` works even when only
//! the chat backend is embedded (the simulated agents then exist only for
//! that and for the admin API).

use std::sync::Arc;

use super::Backends;
use super::chat::ChatBackend;
use super::chat_http::HttpChat;
use super::chat_sim::ChatSim;
use super::routing::RoutingBackend;
use super::routing_http::HttpRouting;
use super::routing_sim::RoutingSim;
use super::settings::{BackendSettings, SimulatorSettings};

/// Why a simulator admin operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No agent or chat by that id (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The operation conflicts with the current state (HTTP 409): the
    /// agent exists, the chat has ended, the agent has not joined, ...
    #[error("{0}")]
    Conflict(String),
    /// The input is invalid (HTTP 400).
    #[error("{0}")]
    Invalid(String),
}

impl SimError {
    /// The short code of the admin API's error body (`not_found`,
    /// `conflict`, `bad_request`).
    pub fn code(&self) -> &'static str {
        match self {
            SimError::NotFound(_) => "not_found",
            SimError::Conflict(_) => "conflict",
            SimError::Invalid(_) => "bad_request",
        }
    }

    /// The HTTP status the admin API answers with.
    pub fn status(&self) -> u16 {
        match self {
            SimError::NotFound(_) => 404,
            SimError::Conflict(_) => 409,
            SimError::Invalid(_) => 400,
        }
    }
}

/// The embedded routing and chat simulators.
pub struct Simulator {
    routing: Arc<RoutingSim>,
    chat: Arc<ChatSim>,
}

impl Simulator {
    /// Validates the settings and starts both simulators (one background
    /// thread for their timers).
    pub fn new(settings: &SimulatorSettings) -> Result<Arc<Simulator>, super::SetupError> {
        settings.validate()?;
        let routing = Arc::new(RoutingSim::new(settings)?);
        let chat = Arc::new(ChatSim::new(settings, routing.clone()));
        Ok(Arc::new(Simulator { routing, chat }))
    }

    /// The routing simulator (agents, reservations, statistics).
    pub fn routing(&self) -> &Arc<RoutingSim> {
        &self.routing
    }

    /// The chat simulator (chats, transcripts, agents' chat actions).
    pub fn chat(&self) -> &Arc<ChatSim> {
        &self.chat
    }

    /// The routing simulator as a backend.
    pub fn routing_backend(&self) -> Arc<dyn RoutingBackend> {
        self.routing.clone()
    }

    /// The chat simulator as a backend.
    pub fn chat_backend(&self) -> Arc<dyn ChatBackend> {
        self.chat.clone()
    }
}

/// Makes the backends the settings ask for: an HTTP client for each
/// backend with a URL, the embedded simulator for the others. The
/// simulator is returned (for the admin API, [`super::admin::admin_router`])
/// when either backend is embedded.
pub fn build(
    settings: &BackendSettings,
) -> Result<(Backends, Option<Arc<Simulator>>), super::SetupError> {
    settings.validate()?;
    let simulator = if settings.routing_url.is_none() || settings.chat_url.is_none() {
        Some(Simulator::new(&settings.simulator)?)
    } else {
        None
    };
    let routing: Arc<dyn RoutingBackend> = match (&settings.routing_url, &simulator) {
        (Some(url), _) => Arc::new(HttpRouting::new(url)?),
        (None, Some(sim)) => sim.routing_backend(),
        (None, None) => return Err(super::SetupError::Settings("no routing backend".into())),
    };
    let chat: Arc<dyn ChatBackend> = match (&settings.chat_url, &simulator) {
        (Some(url), _) => Arc::new(HttpChat::new(url)?),
        (None, Some(sim)) => sim.chat_backend(),
        (None, None) => return Err(super::SetupError::Settings("no chat backend".into())),
    };
    Ok((Backends { routing, chat }, simulator))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn build_makes_the_simulator_unless_both_urls_are_given() {
        let (backends, sim) = build(&BackendSettings::default()).unwrap();
        let sim = sim.expect("embedded");
        assert_eq!(sim.routing().agents().len(), 3);
        assert_eq!(
            backends
                .routing
                .statistic("Chat_Agents@SS.GA", "RStatAgentsReady")
                .await,
            Ok(2.0)
        );
        let both = BackendSettings {
            routing_url: Some("http://127.0.0.1:9/routing".into()),
            chat_url: Some("http://127.0.0.1:9/chat".into()),
            ..BackendSettings::default()
        };
        assert!(build(&both).unwrap().1.is_none());
        let one = BackendSettings {
            chat_url: Some("http://127.0.0.1:9/chat".into()),
            ..BackendSettings::default()
        };
        assert!(build(&one).unwrap().1.is_some());
        let bad = BackendSettings {
            chat_url: Some("chat".into()),
            ..BackendSettings::default()
        };
        assert!(build(&bad).is_err());
    }
}
