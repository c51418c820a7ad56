//! The contact-centre extension's configuration sections: `[gms]` (the
//! services and the CometD endpoint), `[interaction_queues.NAME]` (which
//! strategy handles a chat entering each queue), and `[backends]` (the
//! routing and chat backends, the embedded simulator by default).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::backends::settings::BackendSettings;
use crate::server::config::ConfigError;

/// The sections the contact-centre extension reads from the server's
/// configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// GMS services.
    pub gms: GmsSettings,
    /// Interaction queues by name: which strategy handles a chat that
    /// enters each one.
    pub interaction_queues: BTreeMap<String, InteractionQueue>,
    /// The routing and chat backends (the embedded simulator by default).
    pub backends: BackendSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            gms: GmsSettings::default(),
            interaction_queues: default_interaction_queues(),
            backends: BackendSettings::default(),
        }
    }
}

impl Settings {
    /// Checks what serde cannot: every service's options, the backends.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, options) in &self.gms.services {
            super::service::Service::new(name, options)
                .map_err(|e| ConfigError::Invalid(format!("gms.services: {e}")))?;
        }
        self.backends
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("backends: {e}")))
    }
}

/// An interaction queue (`Orchestration/application` on its Annex).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionQueue {
    /// The strategy: `script:<name>`, or one or two document URLs.
    pub application: String,
}

/// The interaction queue the demo chat service's chats enter.
pub const DEFAULT_CHAT_QUEUE: &str = "chat_inbound";

/// The script object of the inbound chat strategy.
pub const INBOUND_SCRIPT: &str = "GMSInbound";

/// The default interaction queues: chats entering `chat_inbound` are
/// handled by `script:GMSInbound`.
pub fn default_interaction_queues() -> BTreeMap<String, InteractionQueue> {
    let mut queues = BTreeMap::new();
    queues.insert(
        DEFAULT_CHAT_QUEUE.to_string(),
        InteractionQueue {
            application: format!("script:{INBOUND_SCRIPT}"),
        },
    );
    queues
}

/// GMS services by name (`[gms.services.NAME]`): each a table of options
/// laid over the Chat-Immediate default configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GmsSettings {
    /// Options of each service, by service name. With no `[gms]` section
    /// the demo `chat-immediate` service is defined.
    pub services: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// The chat endpoint (`Tenant:queue`) a service's chats enter when it
    /// has no `_chat_endpoint` option.
    pub chat_endpoint: String,
    /// The CometD endpoint (`/genesys/cometd`).
    pub cometd: super::cometd::CometSettings,
    /// More option names to treat as secret, beside those
    /// [`super::service::is_secret_option`] knows (matched ignoring case
    /// and a leading `_`).
    pub secret_options: Vec<String>,
}

impl Default for GmsSettings {
    fn default() -> Self {
        let mut services = BTreeMap::new();
        services.insert(
            super::service::DEMO_SERVICE.to_string(),
            super::service::demo_service_options(),
        );
        GmsSettings {
            services,
            chat_endpoint: format!("Environment:{DEFAULT_CHAT_QUEUE}"),
            cometd: super::cometd::CometSettings::default(),
            secret_options: Vec::new(),
        }
    }
}
