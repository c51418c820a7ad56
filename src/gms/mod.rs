//! The contact-centre extension ([`ContactCentre`]): GMS-style services
//! that run on the orchestration server, plugged in through the server's
//! one extension point. Callback service definitions and the checks a
//! create request passes ([`service`]), callback records in their own
//! store table ([`records`]), the Callback HTTP API ([`callback_api`]),
//! Chat API v1 ([`chat_api`]), the CometD (Bayeux) endpoint that pushes chat
//! updates to devices ([`cometd`]), the interactions it feeds sessions
//! ([`interactions`]), the ORS modules that act on them ([`modules`]: queue,
//! interaction, chat, and our records module), its configuration sections
//! ([`settings`]), and the documents we ship for them
//! (`scxml/callback.scxml`, `scxml/inbound_chat.scxml`, served under
//! `/genesys/1/document/service_template/callback/src/`). Routing and chat
//! go through the backends of [`crate::backends`].

pub mod access;
pub mod admin_api;
pub mod admission;
pub mod arrivals;
pub mod availability;
pub mod callback_api;
pub mod chat_api;
pub mod clock;
pub mod cometd;
pub mod continuity;
pub mod interactions;
pub mod modules;
pub mod notifications;
pub mod pause;
pub mod queue_position;
pub mod records;
pub mod recovery;
pub mod scheduler;
pub mod service;
pub mod settings;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::server::routes::{RouteDoc, Routes};
use axum::Router;
use serde_json::Value;

use crate::backends::Backends;
use crate::backends::simulator::Simulator;
use crate::interpreter::CustomActions;
use crate::server::config::{Config, ScriptObject};
use crate::server::{Extension, ExtensionError, Plugged, ServerHandles, Sessions};
pub use settings::Settings;

/// The Callback service document we ship.
pub const CALLBACK_SCXML: &str = include_str!("../../scxml/callback.scxml");
/// The inbound chat strategy we ship.
pub const INBOUND_CHAT_SCXML: &str = include_str!("../../scxml/inbound_chat.scxml");
/// Where the shipped documents are served.
pub const DOCUMENT_PATH: &str = "/genesys/1/document/service_template/callback/src";

/// Delivers server pushes to a customer's devices (CometD).
pub trait Pusher: Send + Sync {
    /// Queues `data` on `channel` for every device of `gms_user`;
    /// `receipt` is called when a device is handed it.
    fn push(
        &self,
        gms_user: &str,
        channel: &str,
        data: Value,
        receipt: Option<cometd::Receipt>,
    ) -> usize;

    /// Whether a push to `gms_user` on `channel` would reach a device now.
    fn reaches(&self, gms_user: &str, channel: &str) -> bool;
}

impl Pusher for cometd::CometHub {
    fn push(
        &self,
        gms_user: &str,
        channel: &str,
        data: Value,
        receipt: Option<cometd::Receipt>,
    ) -> usize {
        self.publish(gms_user, channel, data, receipt)
    }

    fn reaches(&self, gms_user: &str, channel: &str) -> bool {
        cometd::CometHub::reaches(self, gms_user, channel)
    }
}

/// A pusher that drops everything (no push transport configured).
pub struct NoPush;

impl Pusher for NoPush {
    fn push(
        &self,
        _gms_user: &str,
        _channel: &str,
        _data: Value,
        _receipt: Option<cometd::Receipt>,
    ) -> usize {
        0
    }

    fn reaches(&self, _gms_user: &str, _channel: &str) -> bool {
        false
    }
}

/// The contact-centre extension, configured; [`Extension::start`] makes
/// its running state ([`Gms`]).
pub struct ContactCentre {
    settings: Settings,
}

impl ContactCentre {
    /// The extension with these settings (checked again at start).
    pub fn new(settings: Settings) -> ContactCentre {
        ContactCentre { settings }
    }
}

/// The running contact-centre services: what their routes, ORS modules and
/// background tasks share.
pub struct Gms {
    /// The core's settings (limits, store intervals).
    pub config: Arc<Config>,
    /// Starting sessions and sending them events.
    pub sessions: Sessions,
    /// Requests to sessions waiting for their `<session:response>`.
    pub responses: Arc<crate::server::PendingResponses>,
    /// The extension's own sections.
    pub settings: Settings,
    /// Configured services by name.
    pub services: BTreeMap<String, service::Service>,
    /// Callback records.
    pub records: records::Records,
    /// Chats started through Chat API v1, by service id.
    pub chats: chat_api::ChatBindings,
    /// Push transport to devices.
    pub pusher: Arc<dyn Pusher>,
    /// The CometD endpoint devices receive pushes from.
    pub comet: Arc<cometd::CometHub>,
    /// The routing and chat backends.
    pub backends: Backends,
    /// The embedded simulator, when a backend is embedded (admin API).
    pub simulator: Option<Arc<Simulator>>,
    /// Interactions under the server's control.
    pub interactions: interactions::Interactions,
    /// `<queue:submit>`s still waiting (for `<queue:query>`).
    pub submits: modules::queue::Submits,
    /// The server's own base URL (`http://<listen address>`), for the
    /// documents it serves itself.
    pub base_url: String,
    /// Per-client rate limits of the customer routes.
    pub rates: access::Rates,
    /// Held while a create checks and records what its customer number
    /// and device count against their quotas.
    pub creating: access::KeyedLocks,
    /// The per-service create checks' locks and reservations.
    pub admission: admission::Admission,
    /// Told when a callback is put on the schedule (the scheduler may
    /// have to wake sooner).
    pub schedule_changed: tokio::sync::Notify,
    /// Status notifications of the services that send them.
    pub notifier: Arc<notifications::Notifier>,
    /// The paused services.
    pub paused: pause::Paused,
    /// What was read back from the store at start, until reconciled.
    pub restored: std::sync::Mutex<continuity::Restored>,
    /// Set once [`continuity::reconcile`] has checked the chats read back:
    /// the interactions it found ended while the server was down.
    pub reconciled: tokio::sync::watch::Sender<Option<Arc<std::collections::HashSet<String>>>>,
    /// The store, for the extension's own tables (`None`: memory only).
    pub store: Option<Arc<dyn crate::store::Store>>,
    /// The group committer (`None`: memory only).
    pub commits: Option<crate::store::CommitHandle>,
}

impl Gms {
    /// The country a service reads national customer numbers in: its
    /// `_default_country`, else the `[callback]` section's, else `US`
    /// (`None`: the section's, for queries across services).
    pub fn number_country(&self, service: Option<&str>) -> String {
        let option = |options: &serde_json::Map<String, Value>| {
            options
                .get("_default_country")
                .map(crate::modules::value_text)
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
        };
        service
            .and_then(|name| self.services.get(name))
            .and_then(|s| option(&s.options))
            .or_else(|| option(&self.settings.callback.options))
            .unwrap_or_else(|| "US".to_string())
    }

    /// The URL a shipped document is served at.
    pub fn document_url(&self, file: &str) -> String {
        format!("{}{DOCUMENT_PATH}/{file}", self.base_url)
    }
}

impl Extension for ContactCentre {
    fn summary(&self) -> Vec<String> {
        let s = &self.settings;
        let mut lines = Vec::new();
        for (name, options) in &s.gms.services {
            let shown: Vec<String> = options
                .iter()
                .filter(|(k, _)| !service::is_secret_option(k, &s.gms.secret_options))
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_string)
                    )
                })
                .collect();
            lines.push(format!(
                "GMS service '{name}': /genesys/1/service/callback/{name} ({})",
                shown.join(", ")
            ));
        }
        for (name, q) in &s.interaction_queues {
            lines.push(format!(
                "interaction queue '{name}': application {}",
                q.application
            ));
        }
        for (name, q) in &s.queues {
            lines.push(format!(
                "routing point '{name}': application {}",
                q.application
            ));
        }
        let b = &s.backends;
        lines.push(format!(
            "routing backend: {}; chat backend: {}",
            b.routing_url.as_deref().unwrap_or("the embedded simulator"),
            b.chat_url.as_deref().unwrap_or("the embedded simulator")
        ));
        if b.routing_url.is_none() || b.chat_url.is_none() {
            let agents: Vec<String> = b
                .simulator
                .effective_agents()
                .iter()
                .map(|a| {
                    format!(
                        "{} ({}, {}{})",
                        a.id,
                        if a.name.is_empty() { &a.id } else { &a.name },
                        a.groups.join("/"),
                        if a.ready { ", ready" } else { "" }
                    )
                })
                .collect();
            lines.push(format!(
                "simulator agents (accept after {} ms): {}",
                b.simulator.accept_delay_ms,
                agents.join("; ")
            ));
        }
        lines.push(format!(
            "GMS customer API: {}",
            if s.gms.bearer_token.is_some() || s.gms.username.is_some() {
                "credential required"
            } else {
                "open (gms_user header identifies the device)"
            }
        ));
        lines
    }

    fn name(&self) -> &'static str {
        "gms"
    }

    fn migrations(&self) -> &'static [crate::store::Migration] {
        records::MIGRATIONS
    }

    /// The inbound chat strategy's script object, as the seed configures
    /// it: `script:GMSInbound` with `app_find_agent_timeout = 30` and
    /// `app_selected_agent_group = "Chat_Overflow"`.
    fn script_objects(&self, base_url: &str) -> Vec<(String, ScriptObject)> {
        let mut params = serde_json::Map::new();
        params.insert("app_find_agent_timeout".into(), Value::from(30));
        params.insert(
            "app_selected_agent_group".into(),
            Value::from("Chat_Overflow"),
        );
        vec![(
            settings::INBOUND_SCRIPT.to_string(),
            ScriptObject {
                url: format!("{base_url}{DOCUMENT_PATH}/inbound_chat.scxml"),
                alternate_url: None,
                params,
                dialect: None,
            },
        )]
    }

    fn start(
        &self,
        server: &ServerHandles,
        actions: &mut CustomActions,
    ) -> Result<Plugged, ExtensionError> {
        let fail = |message: String| ExtensionError {
            extension: "gms",
            message,
        };
        self.settings.validate().map_err(|e| fail(e.to_string()))?;
        let (backends, simulator) = crate::backends::simulator::build(&self.settings.backends)
            .map_err(|e| fail(e.to_string()))?;
        let comet = cometd::CometHub::new(self.settings.gms.cometd.clone());
        let services = self
            .settings
            .gms
            .services
            .iter()
            .filter_map(|(name, options)| {
                service::Service::configured(name, options, &self.settings.callback.options)
                    .ok()
                    .map(|s| (name.clone(), s))
            })
            .collect();
        let gms = Arc::new(Gms {
            config: server.config.clone(),
            sessions: server.sessions.clone(),
            responses: server.responses.clone(),
            settings: self.settings.clone(),
            services,
            records: records::Records::new(
                server.store.clone(),
                server.commits.clone(),
                self.settings.clock.clone(),
            ),
            chats: chat_api::ChatBindings::new(continuity::Journal::new(
                continuity::Table::ChatBindings,
                server.commits.clone(),
            )),
            pusher: comet.clone(),
            comet: comet.clone(),
            backends,
            simulator,
            interactions: interactions::Interactions::new(continuity::Journal::new(
                continuity::Table::Interactions,
                server.commits.clone(),
            )),
            submits: modules::queue::Submits::new(continuity::Journal::new(
                continuity::Table::Submits,
                server.commits.clone(),
            )),
            base_url: server.base_url.clone(),
            rates: access::Rates::new(&self.settings.gms.limits),
            creating: access::KeyedLocks::default(),
            admission: admission::Admission::default(),
            schedule_changed: tokio::sync::Notify::new(),
            notifier: Arc::new(notifications::Notifier::new(
                self.settings.gms.event_lists.clone(),
                Some(server.sessions.clone()),
            )),
            paused: pause::Paused::default(),
            restored: std::sync::Mutex::new(continuity::Restored::default()),
            reconciled: tokio::sync::watch::Sender::new(None),
            store: server.store.clone(),
            commits: server.commits.clone(),
        });
        // Every durable change of a record may notify its service's
        // listener.
        let weak = Arc::downgrade(&gms);
        gms.records.observe(Arc::new(move |row, old, rescheduled| {
            if let Some(gms) = weak.upgrade()
                && let Some(service) = gms.services.get(&row.service)
            {
                gms.notifier.changed(service, old, row, rescheduled);
            }
        }));
        // A device that subscribes gets what was published while its user
        // had none (e.g. the server restarted meanwhile).
        let weak = Arc::downgrade(&gms);
        gms.comet.on_subscribe(Box::new(move |user, channel| {
            let pushes_here = matches!(channel, chat_api::PUSH_CHANNEL | "/*" | "/**");
            if pushes_here
                && let Some(gms) = weak.upgrade()
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                let user = user.to_string();
                runtime.spawn(async move { chat_api::push_missed_to(&gms, &user).await });
            }
        }));
        modules::register(actions, &gms);
        let (router, routes) = router(&gms);
        let restoring = gms.clone();
        Ok(Plugged {
            router,
            routes,
            session_hook: Some(Arc::new(interactions::Mirror(gms.clone()))),
            restore: Some(Box::pin(async move {
                let (bindings, interactions, submits) = continuity::load(&restoring).await?;
                if bindings + interactions + submits > 0 {
                    tracing::info!(
                        bindings,
                        interactions,
                        submits,
                        "chats in progress read back from the store"
                    );
                }
                Ok(())
            })),
            tasks: vec![
                Box::pin(continuity::reconcile(gms.clone())),
                Box::pin(purge_callbacks(gms.clone())),
                Box::pin(scheduler::run(gms.clone())),
                Box::pin(recovery::run(gms.clone())),
                Box::pin(gms.notifier.clone().run(server.http_client())),
                Box::pin(interactions::follow_chats(gms.clone())),
                Box::pin(chat_api::push_chat_updates(gms.clone())),
            ],
        })
    }
}

/// Every route of the contact-centre services: the Callback API and its
/// admin API, the Chat API, the shipped documents, CometD, and the
/// simulator's admin API.
fn router(gms: &Arc<Gms>) -> (Router, Vec<RouteDoc>) {
    use axum::http::Method;
    let (router, mut docs) = Routes::new("customer")
        .route(
            "/genesys/1/service/callback/{service}",
            &[Method::POST],
            callback_api::create,
            "creates a callback (_customer_number, _desired_time, user data; Chat Immediate \
             answers with _start_chat_url at once)",
        )
        .route(
            "/genesys/1/service/callback/{service}",
            &[Method::GET],
            callback_api::query,
            "queries the service's callbacks (any record key, e.g. _customer_number=…)",
        )
        .route(
            "/genesys/1/service/callback",
            &[Method::GET],
            callback_api::query_any,
            "queries callbacks of every service",
        )
        .route(
            "/genesys/1/service/callback/{service}/{id}",
            &[Method::GET],
            callback_api::get_one,
            "one callback record",
        )
        .route(
            "/genesys/1/service/callback/{service}/{id}",
            &[Method::DELETE],
            callback_api::cancel,
            "cancels a callback",
        )
        .route(
            "/genesys/1/service/callback/{service}/availability",
            &[Method::GET],
            availability::availability,
            "free time slots: {\"<ISO time>\": places, ...} (start, end, number-of-days, \
             max-time-slots)",
        )
        .route(
            "/genesys/1/service/{id}/check-queue-position",
            &[Method::GET, Method::POST],
            queue_position::check_queue_position,
            "where a callback stands: _position, _total_waiting, _eta / ewt (seconds), \
             _agent_ready_threshold_passed (answered by its session)",
        )
        .route(
            "/genesys/1/service/callback/{service}/{id}",
            &[Method::PUT],
            callback_api::update,
            "reschedules a scheduled callback (_new_desired_time) and updates its user data \
             (a key sent as \"\" is removed)",
        )
        .with_state(gms.clone());
    // GMS's error bodies name an exception; the callback routes' do too.
    let router = router.layer(axum::middleware::from_fn(callback_api::with_gms_exception));
    let (chat, chat_docs) = Routes::new("customer")
        .route(
            "/genesys/1/service/{id}/ixn/chat",
            &[Method::POST],
            chat_api::create,
            "starts the chat of a Chat Immediate callback (firstName, lastName, email, \
             subject, notify_by=comet)",
        )
        .route(
            "/genesys/1/service/{id}/ixn/chat/{operation}",
            &[Method::POST],
            chat_api::operation,
            "chat operations: refresh (transcriptPosition), send (message), startTyping, \
             stopTyping, disconnect",
        )
        .route(
            &format!("{DOCUMENT_PATH}/{{file}}"),
            &[Method::GET],
            callback_api::document,
            "the service documents ors ships (callback.scxml, inbound_chat.scxml)",
        )
        .with_state(gms.clone());
    docs.extend(chat_docs);
    let router = router.merge(chat);
    let (admin, admin_docs) = admin_api::router(gms);
    docs.extend(admin_docs);
    let router = router.merge(
        admin
            .route_layer(axum::middleware::from_fn_with_state(
                gms.clone(),
                access::admin_only,
            ))
            .layer(axum::middleware::from_fn(callback_api::with_gms_exception)),
    );
    let (comet, comet_docs) = gms.comet.router();
    docs.extend(comet_docs);
    let mut router = router.merge(comet.route_layer(axum::middleware::from_fn_with_state(
        gms.clone(),
        access::any_customer,
    )));
    let (arrivals, arrival_docs) = arrivals::router(gms);
    docs.extend(arrival_docs);
    router = router.merge(arrivals.route_layer(axum::middleware::from_fn_with_state(
        gms.clone(),
        access::admin_only,
    )));
    if let Some(sim) = &gms.simulator {
        let (admin, admin_docs) = crate::backends::admin::admin_router(sim.clone());
        docs.extend(admin_docs);
        router = router.merge(admin.route_layer(axum::middleware::from_fn_with_state(
            gms.clone(),
            access::admin_only,
        )));
    }
    (router, docs)
}

/// Deletes callback records past their `_ttl`, every
/// `store.purge_interval_secs`.
async fn purge_callbacks(gms: Arc<Gms>) {
    let every = std::time::Duration::from_secs(gms.config.store.purge_interval_secs.max(1));
    loop {
        tokio::time::sleep(every).await;
        gms.rates.forget_idle();
        gms.creating.forget_idle();
        gms.admission.forget_idle();
        match gms.records.purge().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "expired callback records purged"),
            Err(e) => tracing::warn!(error = %e, "purging callback records failed"),
        }
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
