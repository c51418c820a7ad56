//! GMS-style contact-centre services that run on the orchestration server:
//! Callback service definitions and the checks a create request passes
//! ([`service`]), the routing targets a `_target` option names
//! ([`target`]), callback records ([`records`]), the Callback HTTP API
//! ([`callback_api`]), Chat API v1 ([`chat_api`]), the CometD (Bayeux)
//! endpoint that pushes chat updates to devices ([`cometd`]), and the
//! documents we ship for them (`scxml/callback.scxml`,
//! `scxml/inbound_chat.scxml`, served under
//! `/genesys/1/document/service_template/callback/src/`).

pub mod callback_api;
pub mod chat_api;
pub mod cometd;
pub mod records;
pub mod service;
pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// The Callback service document we ship.
pub const CALLBACK_SCXML: &str = include_str!("../../scxml/callback.scxml");
/// The inbound chat strategy we ship.
pub const INBOUND_CHAT_SCXML: &str = include_str!("../../scxml/inbound_chat.scxml");
/// Where the shipped documents are served.
pub const DOCUMENT_PATH: &str = "/genesys/1/document/service_template/callback/src";

/// Delivers server pushes to a customer's devices (CometD).
pub trait Pusher: Send + Sync {
    /// Queues `data` on `channel` for every device of `gms_user`.
    fn push(&self, gms_user: &str, channel: &str, data: Value) -> usize;
}

impl Pusher for cometd::CometHub {
    fn push(&self, gms_user: &str, channel: &str, data: Value) -> usize {
        self.publish(gms_user, channel, data)
    }
}

/// A pusher that drops everything (no push transport configured).
pub struct NoPush;

impl Pusher for NoPush {
    fn push(&self, _gms_user: &str, _channel: &str, _data: Value) -> usize {
        0
    }
}

/// The GMS side of the server.
pub struct Gms {
    /// Configured services by name.
    pub services: BTreeMap<String, service::Service>,
    /// Callback records.
    pub records: records::Records,
    /// Chats started through Chat API v1, by service id.
    pub chats: chat_api::ChatBindings,
    /// Push transport to devices.
    pub pusher: Arc<dyn Pusher>,
    /// The server's own base URL (`http://<listen address>`), for the
    /// documents it serves itself.
    pub base_url: String,
}

impl Gms {
    /// The URL a shipped document is served at.
    pub fn document_url(&self, file: &str) -> String {
        format!("{}{DOCUMENT_PATH}/{file}", self.base_url)
    }
}

/// The text of a shipped document by file name.
pub fn shipped_document(file: &str) -> Option<&'static str> {
    match file {
        "callback.scxml" => Some(CALLBACK_SCXML),
        "inbound_chat.scxml" => Some(INBOUND_CHAT_SCXML),
        _ => None,
    }
}
