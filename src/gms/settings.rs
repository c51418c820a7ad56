//! The contact-centre extension's configuration sections: `[gms]` (the
//! services and the CometD endpoint), `[queues.NAME]` (routing points and
//! interaction queues: which strategy handles an interaction arriving at
//! each, and its media), `[interaction_queues.NAME]` (the older spelling
//! for chat queues), and `[backends]` (the
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
    /// Routing points and interaction queues by name: the strategy that
    /// handles an interaction arriving there, and the media it takes
    /// (ORS's DN-level `Orchestration/application` option).
    pub queues: BTreeMap<String, RoutingPoint>,
    /// The routing and chat backends (the embedded simulator by default).
    pub backends: BackendSettings,
    /// GMS's server-level `[callback]` section.
    pub callback: CallbackSection,
    /// The time the Callback service goes by (not read from the file:
    /// the system clock, or a manual one a test sets).
    #[serde(skip)]
    pub clock: super::clock::Clock,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            gms: GmsSettings::default(),
            interaction_queues: default_interaction_queues(),
            queues: BTreeMap::new(),
            backends: BackendSettings::default(),
            callback: CallbackSection::default(),
            clock: super::clock::Clock::system(),
        }
    }
}

impl Settings {
    /// The application of the routing point or interaction queue `name`:
    /// `[queues.NAME]` first, then `[interaction_queues.NAME]`.
    pub fn application_for(&self, name: &str) -> Option<String> {
        self.queues
            .get(name)
            .map(|q| q.application.clone())
            .or_else(|| {
                self.interaction_queues
                    .get(name)
                    .map(|q| q.application.clone())
            })
    }

    /// The media an interaction arriving at `name` has: the queue's
    /// `media`, `chat` for an `[interaction_queues]` entry.
    pub fn media_of(&self, name: &str) -> Option<&'static str> {
        match self.queues.get(name) {
            Some(q) => super::interactions::media_named(&q.media),
            None => self.interaction_queues.get(name).map(|_| "chat"),
        }
    }

    /// Checks what serde cannot: every service's options, the backends.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, q) in &self.queues {
            if super::interactions::media_named(&q.media).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "queues.{name}.media must be voice, chat or email, not '{}'",
                    q.media
                )));
            }
            if q.application.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "queues.{name}.application must name a strategy"
                )));
            }
        }
        for (name, options) in &self.gms.services {
            let service =
                super::service::Service::configured(name, options, &self.callback.options)
                    .map_err(|e| ConfigError::Invalid(format!("gms.services: {e}")))?;
            super::availability::check_options(&service)
                .map_err(|e| ConfigError::Invalid(format!("gms.services.{name}.{e}")))?;
            if let Some(list) = options
                .get("_callback_events_list")
                .map(crate::modules::value_text)
                && !list.trim().is_empty()
                && !self.gms.event_lists.contains_key(list.trim())
            {
                return Err(ConfigError::Invalid(format!(
                    "gms.services.{name}._callback_events_list: no [gms.event_lists.{}]",
                    list.trim()
                )));
            }
            if let Some(target) = options.get("_redirect").map(crate::modules::value_text)
                && !target.trim().is_empty()
                && !self.gms.services.contains_key(target.trim())
            {
                return Err(ConfigError::Invalid(format!(
                    "gms.services.{name}._redirect: no service '{}' is configured",
                    target.trim()
                )));
            }
        }
        let l = &self.gms.limits;
        for (name, value) in [
            ("max_user_data_bytes", l.max_user_data_bytes),
            ("max_message_bytes", l.max_message_bytes),
            ("max_nickname_chars", l.max_nickname_chars),
            ("max_field_chars", l.max_field_chars),
            ("max_messages_per_chat", l.max_messages_per_chat),
            ("transcript_page_entries", l.transcript_page_entries),
            ("transcript_page_bytes", l.transcript_page_bytes),
            ("max_listed_records", l.max_listed_records),
            ("max_listed_bytes", l.max_listed_bytes),
            ("max_active_per_number", l.max_active_per_number),
            ("max_active_per_device", l.max_active_per_device),
            ("creates_per_minute", l.creates_per_minute as usize),
            ("chat_sends_per_minute", l.chat_sends_per_minute as usize),
            ("burst", l.burst as usize),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "gms.limits.{name} must be at least 1"
                )));
            }
        }
        self.callback.validate()?;
        if self.callback.queue_polling_rate == 0 {
            return Err(ConfigError::Invalid(
                "callback.queue-polling-rate must be at least 1 (seconds)".into(),
            ));
        }
        self.backends
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("backends: {e}")))
    }
}

/// GMS's `[callback]` section (GMS 8.5 Callback Services API,
/// `filter-keys` and `returned-keys`; option reference, *callback*
/// section): which keys the admin queue query filters on and which keys
/// queries return. Options given here with a leading `_` are the
/// server-wide defaults of the service options of the same name (a
/// service's own value wins; see [`super::service`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CallbackSection {
    /// Keys `GET /genesys/1/admin/callback/queues` may filter on, comma
    /// separated.
    #[serde(rename = "filter-keys")]
    pub filter_keys: String,
    /// Keys the queue and property queries return beside the ones they
    /// always do, comma separated.
    #[serde(rename = "returned-keys")]
    pub returned_keys: String,
    /// How often the queued callbacks' sessions are checked (seconds; see
    /// [`super::recovery`]).
    #[serde(rename = "queue-polling-rate")]
    pub queue_polling_rate: u64,
    /// Server-wide defaults of service options (`_`-names), and
    /// `max_queued_callbacks_per_service` (GMS's server-wide queued limit,
    /// enforced beside each service's `_max_queued_callbacks_per_service`).
    #[serde(flatten)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

impl Default for CallbackSection {
    fn default() -> Self {
        CallbackSection {
            filter_keys: "_callback_state,_callback_reason,_request_queue_time_stat,\
                          _request_ewt_service,_vq"
                .into(),
            returned_keys: "_desired_time,_callback_state,_callback_reason,_ors_session_id".into(),
            queue_polling_rate: 60,
            options: serde_json::Map::new(),
        }
    }
}

/// The names of a comma-separated list, trimmed, without empty ones.
pub fn key_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

impl CallbackSection {
    /// [`Self::filter_keys`] as a list.
    pub fn filter_keys(&self) -> Vec<String> {
        key_list(&self.filter_keys)
    }

    /// [`Self::returned_keys`] as a list.
    pub fn returned_keys(&self) -> Vec<String> {
        key_list(&self.returned_keys)
    }

    /// Every key must be a service option (`_name`) or
    /// `max_queued_callbacks_per_service`: anything else is a typo of a key
    /// this section knows.
    fn validate(&self) -> Result<(), ConfigError> {
        match self
            .options
            .keys()
            .find(|k| !k.starts_with('_') && *k != "max_queued_callbacks_per_service")
        {
            Some(key) => Err(ConfigError::Invalid(format!(
                "callback.{key}: unknown key (the section takes filter-keys, returned-keys \
                 and service options, whose names start with '_')"
            ))),
            None => Ok(()),
        }
    }
}

/// An interaction queue (`Orchestration/application` on its Annex).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionQueue {
    /// The strategy: `script:<name>`, or one or two document URLs.
    pub application: String,
}

/// A routing point or interaction queue (`[queues.NAME]`): what ORS reads
/// from the DN's `Orchestration/application` option (ORS Deployment Guide,
/// *DN-Level Options*), and the media of what arrives there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingPoint {
    /// The strategy: `script:<name>`, or one or two document URLs.
    pub application: String,
    /// `voice` (a routing point; the default), `chat` or `email` (an
    /// interaction queue).
    #[serde(default = "voice")]
    pub media: String,
}

fn voice() -> String {
    "voice".to_string()
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
    /// The realm of the HTTP Basic challenge devices get (GMS's
    /// `[server] realm`).
    pub realm: String,
    /// Server-level HTTP Basic user name for every service (GMS's
    /// `[server] username`); a service's own `username` option wins.
    pub username: Option<String>,
    /// Server-level HTTP Basic password: setting it turns Basic
    /// authentication on for every service (GMS's `[server] password`); a
    /// service's own `password` option wins.
    pub password: Option<String>,
    /// A bearer token devices may present instead of Basic credentials,
    /// for every service.
    pub bearer_token: Option<String>,
    /// What one customer may make the server hold, and how fast.
    pub limits: CustomerLimits,
    /// Callback event lists by name (`[gms.event_lists.NAME._cbe_on_…]`,
    /// each with `notify_params`): a service's `_callback_events_list`
    /// names one (see [`super::notifications`]).
    pub event_lists: super::notifications::EventLists,
}

/// Bounds on what a customer controls through the GMS routes. Each
/// refusal is a 4xx JSON error naming the limit (429 with `Retry-After`
/// for the rates).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomerLimits {
    /// Largest user data of a callback or a chat create (the JSON of its
    /// non-`_` fields), in bytes.
    pub max_user_data_bytes: usize,
    /// Longest chat message, in bytes.
    pub max_message_bytes: usize,
    /// Longest nickname, first or last name, in characters.
    pub max_nickname_chars: usize,
    /// Longest e-mail address or subject, in characters.
    pub max_field_chars: usize,
    /// Most messages a customer may send in one chat.
    pub max_messages_per_chat: usize,
    /// Most transcript entries in one chat reply; the reply's
    /// `transcriptPosition` says where the next page starts.
    pub transcript_page_entries: usize,
    /// Most transcript text in one chat reply, in bytes (at least one
    /// entry is always returned).
    pub transcript_page_bytes: usize,
    /// Most records one callback query returns (`_max` may ask for fewer).
    pub max_listed_records: usize,
    /// Most record JSON one callback query returns, in bytes.
    pub max_listed_bytes: usize,
    /// Most callbacks not yet finished for one customer number and
    /// service when the service's `_enable_in_queue_checking` is `true`
    /// (GMS refuses the third); `strict` allows one, `false` this cap
    /// only.
    pub max_active_per_number: usize,
    /// Most callbacks not yet finished for one device (`gms_user`).
    pub max_active_per_device: usize,
    /// Callback creates one client address may make per minute.
    pub creates_per_minute: u32,
    /// Chat creates, sends and refreshes carrying a message one client
    /// address may make per minute.
    pub chat_sends_per_minute: u32,
    /// Requests beyond the per-minute rate a client may make in a burst.
    pub burst: u32,
}

impl Default for CustomerLimits {
    fn default() -> Self {
        CustomerLimits {
            max_user_data_bytes: 16 * 1024,
            max_message_bytes: 8 * 1024,
            max_nickname_chars: 64,
            max_field_chars: 256,
            max_messages_per_chat: 500,
            transcript_page_entries: 100,
            transcript_page_bytes: 256 * 1024,
            max_listed_records: 100,
            max_listed_bytes: 1024 * 1024,
            max_active_per_number: 2,
            max_active_per_device: 5,
            creates_per_minute: 30,
            chat_sends_per_minute: 300,
            burst: 20,
        }
    }
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
            realm: "GMS".into(),
            username: None,
            password: None,
            bearer_token: None,
            limits: CustomerLimits::default(),
            event_lists: Default::default(),
        }
    }
}
