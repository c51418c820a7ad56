//! A Bayeux 1.0 (CometD) server for GMS push notifications, long-polling
//! transport only, served by axum at `/genesys/cometd`.
//!
//! A mobile or web client sends every request with the HTTP header
//! `gms_user: <token>`; it handshakes, subscribes to `/_genesys`, and holds
//! a `/meta/connect` open on which the chat updates the server publishes
//! for its `gms_user` come back. [`CometHub::publish`] is how the rest of
//! the server hands such an update over: it is queued for every live
//! client of that user subscribed to the channel, and wakes the held
//! connect of each.
//!
//! Decisions worth knowing:
//! - A handshake without the `gms_user` header is accepted; that client
//!   belongs to the empty user and receives only what is published with
//!   `gms_user` `""`.
//! - A later request whose `gms_user` header differs from the handshake's
//!   is answered as for an unknown client (`402::Unknown client`, advice
//!   `handshake`), so a client whose token changed handshakes anew; a
//!   later request without the header is accepted.
//! - Queued messages travel only in `/meta/connect` replies (before the
//!   connect reply in the same array), which keeps them in order.
//! - A client holds at most one `/meta/connect`: a new one releases the
//!   held one with a plain successful connect reply carrying no messages
//!   (an empty JSON array would count as a transport failure to the
//!   CometD JavaScript client). `/meta/disconnect` releases it too, with
//!   advice `reconnect: none`.
//! - Messages a client publishes to non-meta channels are acknowledged and
//!   otherwise ignored.
//! - Clients whose last connect ended more than `client_timeout_ms` ago
//!   are dropped by [`CometHub::prune`], which request handling and
//!   [`CometHub::publish`] call lazily (at most about once a second), so no
//!   timer task is needed. The hub spawns no tasks and blocks on no
//!   runtime: `publish` may be called from any thread or runtime.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

/// The path the CometD endpoint is served at.
pub const COMETD_PATH: &str = "/genesys/cometd";

/// The HTTP header naming the GMS user a client acts for.
pub const GMS_USER_HEADER: &str = "gms_user";

/// The only connection type this server offers.
const LONG_POLLING: &str = "long-polling";

/// The most subscriptions one client may hold.
const MAX_SUBSCRIPTIONS: usize = 256;

/// The content type of every reply.
const JSON_UTF8: &str = "application/json;charset=UTF-8";

/// Tunables of the CometD endpoint (`[gms.cometd]`-style configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CometSettings {
    /// How long a `/meta/connect` is held when nothing is queued, in ms
    /// (default 25 000); also the `timeout` advice.
    pub connect_timeout_ms: u64,
    /// A client that has not been connecting for this long is dropped, in
    /// ms (default 60 000).
    pub client_timeout_ms: u64,
    /// Messages kept per client waiting for a connect; past it the oldest
    /// are dropped (default 1000).
    pub max_queue: usize,
    /// The `interval` advice, in ms: how long a client waits between a
    /// connect reply and its next connect (default 0).
    pub interval_ms: u64,
    /// Most clients at once (default 20 000); a handshake beyond is
    /// refused (`503::Too many clients`).
    pub max_clients: usize,
    /// Most clients one `gms_user` may hold (default 8); a new handshake
    /// beyond drops that user's oldest client.
    pub max_clients_per_user: usize,
    /// Most messages in one request (default 16); a larger batch is a 400.
    pub max_batch: usize,
}

impl Default for CometSettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 25_000,
            client_timeout_ms: 60_000,
            max_queue: 1000,
            interval_ms: 0,
            max_clients: 20_000,
            max_clients_per_user: 8,
            max_batch: 16,
        }
    }
}

/// The CometD server state: the clients, their subscriptions and queues.
/// Shared behind an [`Arc`]; every method is safe to call from any thread.
pub struct CometHub {
    settings: CometSettings,
    state: Mutex<HubState>,
    counter: AtomicU64,
    /// Told `(gms_user, channel)` after each successful subscription
    /// ([`CometHub::on_subscribe`]).
    subscribed: std::sync::OnceLock<SubscribeHook>,
}

/// What [`CometHub::on_subscribe`] calls.
pub type SubscribeHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Everything behind the hub's lock.
struct HubState {
    clients: HashMap<String, Client>,
    /// Client ids by the `gms_user` they handshook with.
    by_user: HashMap<String, HashSet<String>>,
    last_prune: Instant,
}

/// One handshaken client.
struct Client {
    gms_user: String,
    subscriptions: Subscriptions,
    /// Serialized messages waiting for a connect, each with its receipt.
    queue: VecDeque<(Arc<str>, Option<Receipt>)>,
    /// Messages dropped because the queue was full.
    dropped: u64,
    /// Whether the client has sent its first `/meta/connect`.
    connected: bool,
    /// When the client last started or ended a request.
    last_seen: Instant,
    /// The connect being held, if any.
    held: Option<Held>,
}

/// A held `/meta/connect`: its generation and the way to wake it.
struct Held {
    generation: u64,
    wake: Option<oneshot::Sender<Wake>>,
}

/// Why a held connect was woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Messages were queued, or a newer connect replaced this one.
    Poke,
    /// The client disconnected.
    Disconnected,
}

/// A client's subscriptions: exact channels, `/prefix/*` (one more
/// segment) and `/prefix/**` (any deeper channel), stored by prefix.
#[derive(Default)]
struct Subscriptions {
    exact: HashSet<String>,
    children: HashSet<String>,
    descendants: HashSet<String>,
}

/// A parsed channel name or subscription pattern.
#[derive(Debug, PartialEq, Eq)]
enum Pattern<'a> {
    Exact(&'a str),
    Children(&'a str),
    Descendants(&'a str),
}

impl Subscriptions {
    fn len(&self) -> usize {
        self.exact.len() + self.children.len() + self.descendants.len()
    }

    fn add(&mut self, pattern: &Pattern<'_>) {
        match *pattern {
            Pattern::Exact(c) => self.exact.insert(c.to_owned()),
            Pattern::Children(p) => self.children.insert(p.to_owned()),
            Pattern::Descendants(p) => self.descendants.insert(p.to_owned()),
        };
    }

    fn remove(&mut self, pattern: &Pattern<'_>) {
        match *pattern {
            Pattern::Exact(c) => self.exact.remove(c),
            Pattern::Children(p) => self.children.remove(p),
            Pattern::Descendants(p) => self.descendants.remove(p),
        };
    }

    /// Whether a message on this concrete channel reaches the client.
    fn matches(&self, channel: &str) -> bool {
        if self.exact.contains(channel) {
            return true;
        }
        let parent = channel.rfind('/').map_or("", |i| &channel[..i]);
        if self.children.contains(parent) {
            return true;
        }
        !self.descendants.is_empty()
            && channel
                .match_indices('/')
                .any(|(i, _)| self.descendants.contains(&channel[..i]))
    }
}

/// Parses a channel name or pattern: `/seg/seg`, with `*` or `**` allowed
/// only as the whole last segment.
fn parse_channel(name: &str) -> Option<Pattern<'_>> {
    let rest = name.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (last, init) = segments.split_last()?;
    let segment_ok = |s: &&str| {
        !s.is_empty()
            && !s.contains('*')
            && s.chars().all(|c| !c.is_whitespace() && !c.is_control())
    };
    if !init.iter().all(segment_ok) {
        return None;
    }
    let prefix_len = name.len() - last.len() - 1;
    match *last {
        "*" => Some(Pattern::Children(&name[..prefix_len])),
        "**" => Some(Pattern::Descendants(&name[..prefix_len])),
        _ if segment_ok(last) => Some(Pattern::Exact(name)),
        _ => None,
    }
}

/// What a publisher is told once a message it queued was written into a
/// `/meta/connect` reply (for every client it was queued for). A message
/// dropped from a full queue, or still queued when the server stops, is
/// never receipted.
pub type Receipt = Arc<dyn Fn() + Send + Sync>;

/// One element of a reply array: a reply built here, or a queued message
/// already serialized (with its receipt).
enum Part {
    Reply(Value),
    Event(Arc<str>, Option<Receipt>),
}

/// Renders reply parts as one JSON array; the receipts of the messages in
/// it are called (the reply is written next).
fn render(parts: &[Part]) -> String {
    let mut out = String::from("[");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match part {
            Part::Reply(v) => out.push_str(&v.to_string()),
            Part::Event(s, receipt) => {
                out.push_str(s);
                if let Some(receipt) = receipt {
                    receipt();
                }
            }
        }
    }
    out.push(']');
    out
}

/// A reply to `request` on its channel, echoing its `id`.
fn reply_to(channel: &str, request: &Map<String, Value>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("channel".into(), Value::from(channel));
    if let Some(id) = request.get("id") {
        m.insert("id".into(), id.clone());
    }
    m
}

/// An unsuccessful reply with a Bayeux `error` string.
fn failure(channel: &str, request: &Map<String, Value>, error: &str) -> Value {
    let mut m = reply_to(channel, request);
    m.insert("successful".into(), Value::from(false));
    m.insert("error".into(), Value::from(error));
    Value::Object(m)
}

/// The reply for a request naming a client this hub does not know.
fn unknown_client(channel: &str, request: &Map<String, Value>) -> Value {
    let mut m = reply_to(channel, request);
    m.insert("successful".into(), Value::from(false));
    m.insert("error".into(), Value::from("402::Unknown client"));
    m.insert(
        "advice".into(),
        json!({"reconnect": "handshake", "interval": 0}),
    );
    Value::Object(m)
}

/// Clears a held connect's registration if its request goes away before
/// it is answered (the HTTP client gave up), so the client can age out.
struct HeldGuard<'a> {
    hub: &'a CometHub,
    client_id: &'a str,
    generation: u64,
    armed: bool,
}

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.hub.lock();
        if let Some(c) = st.clients.get_mut(self.client_id)
            && c.held
                .as_ref()
                .is_some_and(|h| h.generation == self.generation)
        {
            c.held = None;
            c.last_seen = Instant::now();
        }
    }
}

impl CometHub {
    /// A hub with no clients.
    pub fn new(settings: CometSettings) -> Arc<CometHub> {
        Arc::new(CometHub {
            settings,
            state: Mutex::new(HubState {
                clients: HashMap::new(),
                by_user: HashMap::new(),
                last_prune: Instant::now(),
            }),
            counter: AtomicU64::new(0),
            subscribed: std::sync::OnceLock::new(),
        })
    }

    /// Sets what is told, outside the hub's lock, `(gms_user, channel)`
    /// for every channel a client subscribes to (so that what was
    /// published while the user had no client can be published again).
    /// Set once; a second call is ignored.
    pub fn on_subscribe(&self, hook: SubscribeHook) {
        let _ = self.subscribed.set(hook);
    }

    /// Whether a live client of `gms_user` is subscribed to `channel`
    /// (a [`CometHub::publish`] there would reach someone).
    pub fn reaches(&self, gms_user: &str, channel: &str) -> bool {
        let now = Instant::now();
        let timeout = self.client_timeout();
        let st = self.lock();
        st.by_user.get(gms_user).is_some_and(|ids| {
            ids.iter()
                .filter_map(|id| st.clients.get(id))
                .any(|c| !c.expired(now, timeout) && c.subscriptions.matches(channel))
        })
    }

    /// The settings the hub runs with.
    pub fn settings(&self) -> &CometSettings {
        &self.settings
    }

    /// Queues `data` on `channel` for every live client that handshook
    /// with this `gms_user` and is subscribed to `channel` (exactly or by
    /// a `/*` or `/**` pattern), waking their held connects; returns how
    /// many clients it was queued for. A pattern or malformed channel
    /// reaches nobody. `receipt` is called when a client is handed it.
    pub fn publish(
        &self,
        gms_user: &str,
        channel: &str,
        data: Value,
        receipt: Option<Receipt>,
    ) -> usize {
        if !matches!(parse_channel(channel), Some(Pattern::Exact(_))) {
            tracing::debug!(channel, "cometd: not publishing to a non-concrete channel");
            return 0;
        }
        let text: Arc<str> = json!({"channel": channel, "data": data}).to_string().into();
        let now = Instant::now();
        let max_queue = self.settings.max_queue.max(1);
        let timeout = self.client_timeout();
        let mut st = self.lock();
        self.maybe_prune(&mut st, now);
        let HubState {
            clients, by_user, ..
        } = &mut *st;
        let Some(ids) = by_user.get(gms_user) else {
            return 0;
        };
        let mut queued = 0;
        for id in ids {
            let Some(c) = clients.get_mut(id) else {
                continue;
            };
            if c.expired(now, timeout) || !c.subscriptions.matches(channel) {
                continue;
            }
            if c.queue.len() >= max_queue {
                c.queue.pop_front();
                c.dropped += 1;
                if c.dropped == 1 || c.dropped.is_power_of_two() {
                    tracing::warn!(
                        client = %id,
                        dropped = c.dropped,
                        "cometd: client queue full, dropping its oldest messages"
                    );
                }
            }
            c.queue.push_back((text.clone(), receipt.clone()));
            if let Some(tx) = c.held.as_mut().and_then(|h| h.wake.take()) {
                let _ = tx.send(Wake::Poke);
            }
            queued += 1;
        }
        queued
    }

    /// How many clients are handshaken and not yet dropped.
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }

    /// Drops every client that holds no connect and whose last request
    /// ended more than `client_timeout_ms` ago. It scans all clients, so
    /// the hub itself calls it at most about once a second, lazily from
    /// request handling and [`CometHub::publish`]; calling it from a timer
    /// as well is harmless.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut st = self.lock();
        self.prune_locked(&mut st, now);
    }

    /// The axum router serving `POST /genesys/cometd`,
    /// `POST /genesys/cometd/` and `POST /genesys/cometd/{*rest}` (the
    /// CometD JavaScript client appends the message type, as in
    /// `/genesys/cometd/connect`, and a bare `/` for other messages), with
    /// this hub as its state.
    pub fn router(self: &Arc<Self>) -> (Router, Vec<crate::server::routes::RouteDoc>) {
        let post = &[axum::http::Method::POST];
        crate::server::routes::Routes::new("customer")
            .route(
                COMETD_PATH,
                post,
                handle,
                "CometD (Bayeux): /meta/handshake, /meta/subscribe, /meta/connect, \
                 /meta/disconnect; messages as a JSON array",
            )
            .route(&format!("{COMETD_PATH}/"), post, handle, "CometD, as above")
            .route(
                &format!("{COMETD_PATH}/{{*rest}}"),
                post,
                handle,
                "CometD with the message type in the path (/connect, /handshake, …)",
            )
            .with_state(Arc::clone(self))
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.client_timeout_ms)
    }

    /// Prunes if the last prune was long enough ago.
    fn maybe_prune(&self, st: &mut HubState, now: Instant) {
        let every = Duration::from_millis((self.settings.client_timeout_ms / 4).clamp(10, 1000));
        if now.saturating_duration_since(st.last_prune) >= every {
            self.prune_locked(st, now);
        }
    }

    fn prune_locked(&self, st: &mut HubState, now: Instant) {
        st.last_prune = now;
        let timeout = self.client_timeout();
        let stale: Vec<String> = st
            .clients
            .iter()
            .filter(|(_, c)| c.expired(now, timeout))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            tracing::debug!(client = %id, "cometd: dropping a client that stopped connecting");
            st.remove(&id);
        }
    }

    /// A fresh, unguessable client id ([`crate::ids::client_id`]).
    fn new_client_id(&self) -> String {
        crate::ids::client_id()
    }

    /// Handles one request's messages, in order, except that the last
    /// `/meta/connect` is handled after all the others, since it may be
    /// held.
    async fn process(&self, user: Option<&str>, messages: Vec<Value>) -> Vec<Part> {
        {
            let mut st = self.lock();
            self.maybe_prune(&mut st, Instant::now());
        }
        let is_connect =
            |m: &Value| m.get("channel").and_then(Value::as_str) == Some("/meta/connect");
        let last_connect = messages.iter().rposition(is_connect);
        let mut out = Vec::with_capacity(messages.len());
        let mut held = None;
        for (i, message) in messages.into_iter().enumerate() {
            let Value::Object(m) = message else {
                out.push(Part::Reply(json!({
                    "successful": false,
                    "error": "400::Invalid message",
                })));
                continue;
            };
            let Some(channel) = m.get("channel").and_then(Value::as_str) else {
                let mut r = Map::new();
                if let Some(id) = m.get("id") {
                    r.insert("id".into(), id.clone());
                }
                r.insert("successful".into(), Value::from(false));
                r.insert("error".into(), Value::from("400::Missing channel"));
                out.push(Part::Reply(Value::Object(r)));
                continue;
            };
            match channel {
                "/meta/handshake" => out.push(Part::Reply(self.handshake(user, &m))),
                "/meta/connect" if Some(i) == last_connect => held = Some(m),
                "/meta/connect" => out.extend(self.connect(user, &m, false).await),
                "/meta/subscribe" => out.push(Part::Reply(self.subscribe(user, &m, true))),
                "/meta/unsubscribe" => out.push(Part::Reply(self.subscribe(user, &m, false))),
                "/meta/disconnect" => out.push(Part::Reply(self.disconnect(user, &m))),
                _ if channel.starts_with("/meta/") => out.push(Part::Reply(failure(
                    channel,
                    &m,
                    &format!("400:{channel}:Unknown meta channel"),
                ))),
                _ => out.push(Part::Reply(self.client_publish(user, channel, &m))),
            }
        }
        if let Some(m) = held {
            out.extend(self.connect(user, &m, true).await);
        }
        out
    }

    fn advice(&self) -> Value {
        json!({
            "reconnect": "retry",
            "interval": self.settings.interval_ms,
            "timeout": self.settings.connect_timeout_ms,
        })
    }

    fn handshake(&self, user: Option<&str>, m: &Map<String, Value>) -> Value {
        const CHANNEL: &str = "/meta/handshake";
        let offered = match m.get("supportedConnectionTypes") {
            Some(Value::Array(types)) => types.iter().any(|t| t == LONG_POLLING),
            _ => true,
        };
        let mut r = reply_to(CHANNEL, m);
        r.insert("version".into(), Value::from("1.0"));
        r.insert("supportedConnectionTypes".into(), json!([LONG_POLLING]));
        if !offered {
            r.insert("successful".into(), Value::from(false));
            r.insert(
                "error".into(),
                Value::from("403::Unsupported connection types"),
            );
            r.insert("advice".into(), json!({"reconnect": "none"}));
            return Value::Object(r);
        }
        let gms_user = user.unwrap_or_default().to_owned();
        let now = Instant::now();
        let id = {
            let mut st = self.lock();
            // A user's oldest clients make room for the new one; the hub
            // as a whole refuses past its cap.
            let mine: Vec<(Instant, String)> = st
                .by_user
                .get(&gms_user)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| st.clients.get(id).map(|c| (c.last_seen, id.clone())))
                        .collect()
                })
                .unwrap_or_default();
            if mine.len() >= self.settings.max_clients_per_user.max(1) {
                let mut mine = mine;
                mine.sort();
                let excess = mine.len() + 1 - self.settings.max_clients_per_user.max(1);
                for (_, old) in mine.into_iter().take(excess) {
                    st.remove(&old);
                }
            }
            if st.clients.len() >= self.settings.max_clients {
                drop(st);
                r.insert("successful".into(), Value::from(false));
                r.insert("error".into(), Value::from("503::Too many clients"));
                r.insert(
                    "advice".into(),
                    json!({"reconnect": "handshake", "interval": 5000}),
                );
                return Value::Object(r);
            }
            let mut id = self.new_client_id();
            while st.clients.contains_key(&id) {
                id = self.new_client_id();
            }
            st.by_user
                .entry(gms_user.clone())
                .or_default()
                .insert(id.clone());
            st.clients.insert(
                id.clone(),
                Client {
                    gms_user,
                    subscriptions: Subscriptions::default(),
                    queue: VecDeque::new(),
                    dropped: 0,
                    connected: false,
                    last_seen: now,
                    held: None,
                },
            );
            id
        };
        tracing::debug!(client = %id, gms_user = user.unwrap_or_default(), "cometd: handshake");
        r.insert("successful".into(), Value::from(true));
        r.insert("clientId".into(), Value::from(id));
        r.insert("advice".into(), self.advice());
        Value::Object(r)
    }

    /// Answers a `/meta/connect`: at once if it is the client's first, if
    /// messages are waiting, if the client asked for a zero timeout or if
    /// `may_hold` is false; otherwise once messages are queued, a newer
    /// connect or a disconnect releases it, or the timeout passes.
    async fn connect(
        &self,
        user: Option<&str>,
        m: &Map<String, Value>,
        may_hold: bool,
    ) -> Vec<Part> {
        const CHANNEL: &str = "/meta/connect";
        let Some(client_id) = m.get("clientId").and_then(Value::as_str) else {
            return vec![Part::Reply(unknown_client(CHANNEL, m))];
        };
        let (generation, rx, wait) = {
            let mut st = self.lock();
            let Some(c) = st.client_mut(client_id, user) else {
                return vec![Part::Reply(unknown_client(CHANNEL, m))];
            };
            c.last_seen = Instant::now();
            if let Some(old) = c.held.take()
                && let Some(tx) = old.wake
            {
                let _ = tx.send(Wake::Poke);
            }
            let first = !c.connected;
            c.connected = true;
            let requested = m
                .get("advice")
                .and_then(|a| a.get("timeout"))
                .and_then(Value::as_u64);
            let wait = requested.map_or(self.settings.connect_timeout_ms, |t| {
                t.min(self.settings.connect_timeout_ms)
            });
            if first || !may_hold || wait == 0 || !c.queue.is_empty() {
                let advice = first.then(|| self.advice());
                return self.connect_reply(c, client_id, m, advice);
            }
            let generation = self.counter.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            c.held = Some(Held {
                generation,
                wake: Some(tx),
            });
            (generation, rx, wait)
        };
        let mut guard = HeldGuard {
            hub: self,
            client_id,
            generation,
            armed: true,
        };
        let woken = tokio::time::timeout(Duration::from_millis(wait), rx).await;
        let mut st = self.lock();
        guard.armed = false;
        if let Ok(Ok(Wake::Disconnected)) = woken {
            let mut r = reply_to(CHANNEL, m);
            r.insert("successful".into(), Value::from(true));
            r.insert("clientId".into(), Value::from(client_id));
            r.insert("advice".into(), json!({"reconnect": "none"}));
            return vec![Part::Reply(Value::Object(r))];
        }
        let Some(c) = st.clients.get_mut(client_id) else {
            return vec![Part::Reply(unknown_client(CHANNEL, m))];
        };
        if c.held.as_ref().is_some_and(|h| h.generation == generation) {
            c.held = None;
            c.last_seen = Instant::now();
            self.connect_reply(c, client_id, m, None)
        } else {
            // A newer connect took over: this one ends with no messages.
            let mut r = reply_to(CHANNEL, m);
            r.insert("successful".into(), Value::from(true));
            r.insert("clientId".into(), Value::from(client_id));
            vec![Part::Reply(Value::Object(r))]
        }
    }

    /// The queued messages followed by a successful connect reply.
    fn connect_reply(
        &self,
        c: &mut Client,
        client_id: &str,
        m: &Map<String, Value>,
        advice: Option<Value>,
    ) -> Vec<Part> {
        let mut out: Vec<Part> = c
            .queue
            .drain(..)
            .map(|(text, receipt)| Part::Event(text, receipt))
            .collect();
        let mut r = reply_to("/meta/connect", m);
        r.insert("successful".into(), Value::from(true));
        r.insert("clientId".into(), Value::from(client_id));
        if let Some(advice) = advice {
            r.insert("advice".into(), advice);
        }
        out.push(Part::Reply(Value::Object(r)));
        out
    }

    /// Handles `/meta/subscribe` (`subscribe` true) or `/meta/unsubscribe`;
    /// `subscription` is one channel or an array of them, applied all or
    /// none.
    fn subscribe(&self, user: Option<&str>, m: &Map<String, Value>, subscribe: bool) -> Value {
        let channel = if subscribe {
            "/meta/subscribe"
        } else {
            "/meta/unsubscribe"
        };
        let Some(client_id) = m.get("clientId").and_then(Value::as_str) else {
            return unknown_client(channel, m);
        };
        let requested = m.get("subscription");
        let names: Vec<&str> = match requested {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
                a.iter().filter_map(Value::as_str).collect()
            }
            _ => return failure(channel, m, "400::Missing or malformed subscription"),
        };
        let mut patterns = Vec::with_capacity(names.len());
        for name in &names {
            if name.starts_with("/meta/") || *name == "/meta" {
                return with_subscription(
                    failure(channel, m, &format!("403:{name}:Forbidden channel")),
                    requested,
                );
            }
            match parse_channel(name) {
                Some(p) => patterns.push(p),
                None => {
                    return with_subscription(
                        failure(channel, m, &format!("400:{name}:Invalid channel")),
                        requested,
                    );
                }
            }
        }
        let mut st = self.lock();
        let Some(c) = st.client_mut(client_id, user) else {
            return unknown_client(channel, m);
        };
        c.last_seen = Instant::now();
        if subscribe {
            if c.subscriptions.len() + patterns.len() > MAX_SUBSCRIPTIONS {
                return with_subscription(
                    failure(channel, m, "403::Too many subscriptions"),
                    requested,
                );
            }
            patterns.iter().for_each(|p| c.subscriptions.add(p));
        } else {
            patterns.iter().for_each(|p| c.subscriptions.remove(p));
        }
        let gms_user = c.gms_user.clone();
        drop(st);
        if subscribe && let Some(hook) = self.subscribed.get() {
            for name in &names {
                hook(&gms_user, name);
            }
        }
        let mut r = reply_to(channel, m);
        r.insert("successful".into(), Value::from(true));
        r.insert("clientId".into(), Value::from(client_id));
        with_subscription(Value::Object(r), requested)
    }

    fn disconnect(&self, user: Option<&str>, m: &Map<String, Value>) -> Value {
        const CHANNEL: &str = "/meta/disconnect";
        let Some(client_id) = m.get("clientId").and_then(Value::as_str) else {
            return unknown_client(CHANNEL, m);
        };
        let mut st = self.lock();
        if st.client_mut(client_id, user).is_none() {
            return unknown_client(CHANNEL, m);
        }
        if let Some(mut c) = st.remove(client_id)
            && let Some(tx) = c.held.take().and_then(|h| h.wake)
        {
            let _ = tx.send(Wake::Disconnected);
        }
        tracing::debug!(client = %client_id, "cometd: disconnect");
        let mut r = reply_to(CHANNEL, m);
        r.insert("successful".into(), Value::from(true));
        r.insert("clientId".into(), Value::from(client_id));
        Value::Object(r)
    }

    /// A message a client publishes: acknowledged, not delivered.
    fn client_publish(&self, user: Option<&str>, channel: &str, m: &Map<String, Value>) -> Value {
        let Some(client_id) = m.get("clientId").and_then(Value::as_str) else {
            return unknown_client(channel, m);
        };
        if parse_channel(channel).is_none() {
            return failure(channel, m, &format!("400:{channel}:Invalid channel"));
        }
        let mut st = self.lock();
        let Some(c) = st.client_mut(client_id, user) else {
            return unknown_client(channel, m);
        };
        c.last_seen = Instant::now();
        let mut r = reply_to(channel, m);
        r.insert("successful".into(), Value::from(true));
        Value::Object(r)
    }
}

/// Adds the request's `subscription` to a subscribe reply.
fn with_subscription(mut reply: Value, requested: Option<&Value>) -> Value {
    if let (Value::Object(r), Some(s)) = (&mut reply, requested) {
        r.insert("subscription".into(), s.clone());
    }
    reply
}

impl Client {
    /// Whether the client holds no connect and was last seen too long ago.
    fn expired(&self, now: Instant, timeout: Duration) -> bool {
        self.held.is_none() && now.saturating_duration_since(self.last_seen) > timeout
    }
}

impl HubState {
    /// The client with this id, unless the request's `gms_user` header
    /// names another user than its handshake did.
    fn client_mut(&mut self, client_id: &str, user: Option<&str>) -> Option<&mut Client> {
        self.clients
            .get_mut(client_id)
            .filter(|c| user.is_none_or(|u| u == c.gms_user))
    }

    fn remove(&mut self, client_id: &str) -> Option<Client> {
        let c = self.clients.remove(client_id)?;
        if let Some(ids) = self.by_user.get_mut(&c.gms_user) {
            ids.remove(client_id);
            if ids.is_empty() {
                self.by_user.remove(&c.gms_user);
            }
        }
        Some(c)
    }
}

/// Reads a request body: a JSON array of messages or one message, as the
/// body itself or in the form field `message`.
fn parse_body(headers: &HeaderMap, body: &[u8], max_batch: usize) -> Result<Vec<Value>, String> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let parsed: Value = if form || body.starts_with(b"message=") {
        let Some((_, text)) = form_urlencoded::parse(body).find(|(k, _)| k == "message") else {
            return Err("the form has no message field".into());
        };
        serde_json::from_str(&text).map_err(|e| format!("malformed JSON in message: {e}"))?
    } else {
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?
    };
    if crate::server::params::json_depth(&parsed) > crate::server::params::MAX_JSON_DEPTH {
        return Err(format!(
            "the JSON nests deeper than {} levels",
            crate::server::params::MAX_JSON_DEPTH
        ));
    }
    match parsed {
        Value::Array(a) if a.is_empty() => Err("no messages".into()),
        Value::Array(a) if a.len() > max_batch => Err(format!(
            "{} messages in one request; at most {max_batch} are accepted",
            a.len()
        )),
        Value::Array(a) => Ok(a),
        m @ Value::Object(_) => Ok(vec![m]),
        _ => Err("expected a message object or an array of them".into()),
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, JSON_UTF8),
            (header::CACHE_CONTROL, "no-cache, no-store"),
        ],
        body,
    )
        .into_response()
}

async fn handle(State(hub): State<Arc<CometHub>>, headers: HeaderMap, body: Bytes) -> Response {
    let messages = match parse_body(&headers, &body, hub.settings.max_batch.max(1)) {
        Ok(m) => m,
        Err(e) => {
            return json_response(StatusCode::BAD_REQUEST, json!({"error": e}).to_string());
        }
    };
    let user = super::callback_api::gms_user(&headers);
    let parts = hub.process(user.as_deref(), messages).await;
    json_response(StatusCode::OK, render(&parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_with(
        connect_timeout_ms: u64,
        client_timeout_ms: u64,
        max_queue: usize,
    ) -> Arc<CometHub> {
        CometHub::new(CometSettings {
            connect_timeout_ms,
            client_timeout_ms,
            max_queue,
            interval_ms: 0,
            ..CometSettings::default()
        })
    }

    fn hub(connect_timeout_ms: u64) -> Arc<CometHub> {
        hub_with(connect_timeout_ms, 60_000, 1000)
    }

    async fn send(hub: &CometHub, user: Option<&str>, messages: Value) -> Vec<Value> {
        let Value::Array(messages) = messages else {
            panic!("send an array")
        };
        let parts = hub.process(user, messages).await;
        serde_json::from_str(&render(&parts)).expect("replies are JSON")
    }

    async fn handshake(hub: &CometHub, user: Option<&str>) -> String {
        let r = send(
            hub,
            user,
            json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"], "id": "1"}]),
        )
        .await;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["successful"], true, "{r:?}");
        r[0]["clientId"].as_str().expect("clientId").to_owned()
    }

    async fn connect(hub: &CometHub, user: Option<&str>, id: &str) -> Vec<Value> {
        send(
            hub,
            user,
            json!([{"channel": "/meta/connect", "clientId": id,
                    "connectionType": "long-polling", "id": "c"}]),
        )
        .await
    }

    async fn subscribe(hub: &CometHub, user: Option<&str>, id: &str, sub: Value) -> Value {
        let mut r = send(
            hub,
            user,
            json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": sub, "id": "s"}]),
        )
        .await;
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    /// Handshake, subscribe and the first (immediate) connect.
    async fn ready(hub: &CometHub, user: &str, sub: Value) -> String {
        let id = handshake(hub, Some(user)).await;
        assert_eq!(
            subscribe(hub, Some(user), &id, sub).await["successful"],
            true
        );
        let first = connect(hub, Some(user), &id).await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["successful"], true);
        assert_eq!(first[0]["advice"]["reconnect"], "retry");
        id
    }

    /// The data of the event messages in a connect reply, and checks the
    /// connect reply comes last.
    fn events(reply: &[Value]) -> Vec<Value> {
        let (last, init) = reply.split_last().expect("a reply");
        assert_eq!(last["channel"], "/meta/connect");
        assert_eq!(last["successful"], true, "{reply:?}");
        init.iter().map(|m| m["data"].clone()).collect()
    }

    #[tokio::test]
    async fn handshake_reply_carries_id_version_types_and_advice() {
        let hub = hub(25_000);
        let r = send(
            &hub,
            Some("u"),
            json!([{"channel": "/meta/handshake", "version": "1.0", "id": "7",
                    "supportedConnectionTypes": ["websocket", "long-polling"]}]),
        )
        .await;
        let r = &r[0];
        assert_eq!(r["channel"], "/meta/handshake");
        assert_eq!(r["id"], "7");
        assert_eq!(r["version"], "1.0");
        assert_eq!(r["supportedConnectionTypes"], json!(["long-polling"]));
        assert_eq!(
            r["advice"],
            json!({"reconnect": "retry", "interval": 0, "timeout": 25_000})
        );
        let id = r["clientId"].as_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(handshake(&hub, Some("u")).await, id);
        assert_eq!(hub.clients(), 2);

        let refused = send(
            &hub,
            Some("u"),
            json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["websocket"]}]),
        )
        .await;
        assert_eq!(refused[0]["successful"], false);
        assert!(refused[0]["error"].as_str().unwrap().starts_with("403"));
        assert_eq!(hub.clients(), 2);
    }

    #[tokio::test]
    async fn a_publish_wakes_the_held_connect() {
        let hub = hub(5_000);
        let id = ready(&hub, "alice", json!("/_genesys")).await;
        let held = {
            let (hub, id) = (hub.clone(), id.clone());
            tokio::spawn(async move { connect(&hub, Some("alice"), &id).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        assert_eq!(hub.publish("alice", "/_genesys", json!({"n": 1}), None), 1);
        let reply = held.await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(events(&reply), vec![json!({"n": 1})]);
        assert_eq!(reply[0]["channel"], "/_genesys");
        assert_eq!(reply[1]["id"], "c");
        assert!(reply[1].get("advice").is_none());
    }

    #[tokio::test]
    async fn a_receipt_comes_when_a_connect_hands_the_message_over() {
        let hub = hub(5_000);
        let id = ready(&hub, "alice", json!("/_genesys")).await;
        let handed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = handed.clone();
        let receipt: Receipt = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(
            hub.publish("alice", "/_genesys", json!(1), Some(receipt.clone())),
            1
        );
        assert_eq!(handed.load(Ordering::SeqCst), 0, "queued is not handed");
        let reply = connect(&hub, Some("alice"), &id).await;
        assert_eq!(events(&reply), vec![json!(1)]);
        assert_eq!(handed.load(Ordering::SeqCst), 1);
        // Nobody subscribed to it: queued nowhere, never receipted.
        assert_eq!(hub.publish("bob", "/_genesys", json!(2), Some(receipt)), 0);
        assert_eq!(handed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn queued_messages_come_in_order_on_the_next_connect() {
        let hub = hub(5_000);
        let id = ready(&hub, "alice", json!("/_genesys")).await;
        for n in 0..3 {
            assert_eq!(hub.publish("alice", "/_genesys", json!(n), None), 1);
        }
        let start = Instant::now();
        let reply = connect(&hub, Some("alice"), &id).await;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(events(&reply), vec![json!(0), json!(1), json!(2)]);
        // Nothing left: the next connect waits for the (short) timeout.
        let hub = self::hub(100);
        let id = ready(&hub, "bob", json!("/_genesys")).await;
        let start = Instant::now();
        let reply = connect(&hub, Some("bob"), &id).await;
        assert!(start.elapsed() >= Duration::from_millis(90));
        assert!(events(&reply).is_empty());
    }

    #[tokio::test]
    async fn a_zero_timeout_advice_answers_at_once() {
        let hub = hub(5_000);
        let id = ready(&hub, "u", json!("/_genesys")).await;
        let start = Instant::now();
        let reply = send(
            &hub,
            Some("u"),
            json!([{"channel": "/meta/connect", "clientId": id, "advice": {"timeout": 0}}]),
        )
        .await;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(events(&reply).is_empty());
    }

    #[test]
    fn channel_names_and_patterns_parse() {
        assert_eq!(parse_channel("/a/b"), Some(Pattern::Exact("/a/b")));
        assert_eq!(parse_channel("/a/*"), Some(Pattern::Children("/a")));
        assert_eq!(parse_channel("/a/**"), Some(Pattern::Descendants("/a")));
        assert_eq!(parse_channel("/*"), Some(Pattern::Children("")));
        assert_eq!(parse_channel("/**"), Some(Pattern::Descendants("")));
        for bad in [
            "", "/", "a/b", "/a//b", "/a/", "/*/b", "/a/b*", "/a/***", "/a b",
        ] {
            assert_eq!(parse_channel(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn wildcard_subscriptions_match_one_or_any_level() {
        let hub = hub(5_000);
        let one = ready(&hub, "u", json!("/a/*")).await;
        let any = ready(&hub, "u", json!(["/x/**", "/exact/ch"])).await;
        let all = ready(&hub, "u", json!("/**")).await;
        assert_eq!(hub.publish("u", "/a/b", json!(1), None), 2); // one, all
        assert_eq!(hub.publish("u", "/a/b/c", json!(2), None), 1); // all
        assert_eq!(hub.publish("u", "/x/y", json!(3), None), 2); // any, all
        assert_eq!(hub.publish("u", "/x/y/z", json!(4), None), 2); // any, all
        assert_eq!(hub.publish("u", "/x", json!(5), None), 1); // all
        assert_eq!(hub.publish("u", "/exact/ch", json!(6), None), 2); // any, all
        assert_eq!(hub.publish("u", "/a/*", json!(7), None), 0);
        assert_eq!(hub.publish("u", "bogus", json!(8), None), 0);
        assert_eq!(
            events(&connect(&hub, Some("u"), &one).await),
            vec![json!(1)]
        );
        assert_eq!(
            events(&connect(&hub, Some("u"), &any).await),
            vec![json!(3), json!(4), json!(6)]
        );
        assert_eq!(
            events(&connect(&hub, Some("u"), &all).await),
            (1..=6).map(Value::from).collect::<Vec<_>>()
        );

        let r = send(
            &hub,
            Some("u"),
            json!([{"channel": "/meta/unsubscribe", "clientId": any, "subscription": "/x/**"}]),
        )
        .await;
        assert_eq!(r[0]["successful"], true);
        assert_eq!(r[0]["subscription"], "/x/**");
        assert_eq!(hub.publish("u", "/x/y", json!(9), None), 1); // all only
    }

    #[tokio::test]
    async fn publishing_reaches_only_the_named_user() {
        let hub = hub(5_000);
        let alice = ready(&hub, "alice", json!("/_genesys")).await;
        let _bob = ready(&hub, "bob", json!("/_genesys")).await;
        let nobody = handshake(&hub, None).await;
        subscribe(&hub, None, &nobody, json!("/_genesys")).await;
        assert_eq!(hub.publish("alice", "/_genesys", json!("a"), None), 1);
        assert_eq!(hub.publish("carol", "/_genesys", json!("c"), None), 0);
        assert_eq!(hub.publish("", "/_genesys", json!("e"), None), 1);
        assert_eq!(
            events(&connect(&hub, Some("alice"), &alice).await),
            vec![json!("a")]
        );
        let r = connect(&hub, None, &nobody).await;
        assert_eq!(events(&r), vec![json!("e")]);
    }

    #[tokio::test]
    async fn unknown_clients_and_other_users_get_402() {
        let hub = hub(5_000);
        for channel in [
            "/meta/connect",
            "/meta/subscribe",
            "/meta/disconnect",
            "/chat",
        ] {
            let r = send(
                &hub,
                Some("u"),
                json!([{"channel": channel, "clientId": "nope", "subscription": "/a", "id": 3}]),
            )
            .await;
            assert_eq!(r[0]["successful"], false, "{channel}");
            assert_eq!(r[0]["error"], "402::Unknown client");
            assert_eq!(r[0]["advice"]["reconnect"], "handshake");
            assert_eq!(r[0]["id"], 3);
        }
        let id = ready(&hub, "alice", json!("/_genesys")).await;
        let r = connect(&hub, Some("mallory"), &id).await;
        assert_eq!(r[0]["error"], "402::Unknown client");
        // Without the header the handshake's user still applies.
        let r = send(
            &hub,
            None,
            json!([{"channel": "/meta/connect", "clientId": id, "advice": {"timeout": 0}}]),
        )
        .await;
        assert_eq!(r[0]["successful"], true);
    }

    #[tokio::test]
    async fn a_second_connect_releases_the_first() {
        let hub = hub(5_000);
        let id = ready(&hub, "u", json!("/_genesys")).await;
        let spawn_connect = || {
            let (hub, id) = (hub.clone(), id.clone());
            tokio::spawn(async move { connect(&hub, Some("u"), &id).await })
        };
        let first = spawn_connect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        let second = spawn_connect();
        let released = first.await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(events(&released).is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(hub.publish("u", "/_genesys", json!("x"), None), 1);
        assert_eq!(events(&second.await.unwrap()), vec![json!("x")]);
    }

    #[tokio::test]
    async fn disconnect_releases_the_held_connect_and_forgets_the_client() {
        let hub = hub(5_000);
        let id = ready(&hub, "u", json!("/_genesys")).await;
        let held = {
            let (hub, id) = (hub.clone(), id.clone());
            tokio::spawn(async move { connect(&hub, Some("u"), &id).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = send(
            &hub,
            Some("u"),
            json!([{"channel": "/meta/disconnect", "clientId": id, "id": "d"}]),
        )
        .await;
        assert_eq!(r[0]["successful"], true);
        assert_eq!(r[0]["id"], "d");
        let released = held.await.unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0]["successful"], true);
        assert_eq!(released[0]["advice"]["reconnect"], "none");
        assert_eq!(hub.clients(), 0);
        assert_eq!(hub.publish("u", "/_genesys", json!(1), None), 0);
        assert_eq!(
            connect(&hub, Some("u"), &id).await[0]["error"],
            "402::Unknown client"
        );
    }

    #[tokio::test]
    async fn the_queue_keeps_only_the_newest_messages() {
        let hub = hub_with(5_000, 60_000, 3);
        let id = ready(&hub, "u", json!("/_genesys")).await;
        for n in 1..=5 {
            assert_eq!(hub.publish("u", "/_genesys", json!(n), None), 1);
        }
        assert_eq!(
            events(&connect(&hub, Some("u"), &id).await),
            vec![json!(3), json!(4), json!(5)]
        );
    }

    #[tokio::test]
    async fn prune_drops_idle_clients_but_not_connected_ones() {
        let hub = hub_with(2_000, 50, 10);
        let idle = handshake(&hub, Some("u")).await;
        let busy = ready(&hub, "u", json!("/_genesys")).await;
        let held = {
            let (hub, busy) = (hub.clone(), busy.clone());
            tokio::spawn(async move { connect(&hub, Some("u"), &busy).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        hub.prune();
        assert_eq!(hub.clients(), 1);
        assert_eq!(
            connect(&hub, Some("u"), &idle).await[0]["error"],
            "402::Unknown client"
        );
        assert_eq!(hub.publish("u", "/_genesys", json!(1), None), 1);
        assert_eq!(events(&held.await.unwrap()), vec![json!(1)]);
        // An abandoned held connect no longer keeps its client alive.
        let abandoned = {
            let (hub, busy) = (hub.clone(), busy.clone());
            tokio::spawn(async move { connect(&hub, Some("u"), &busy).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        abandoned.abort();
        let _ = abandoned.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        hub.prune();
        assert_eq!(hub.clients(), 0);
    }

    #[tokio::test]
    async fn subscriptions_are_checked() {
        let hub = hub(5_000);
        let id = handshake(&hub, Some("u")).await;
        let r = subscribe(&hub, Some("u"), &id, json!("/meta/connect")).await;
        assert_eq!(r["successful"], false);
        assert!(r["error"].as_str().unwrap().starts_with("403:"));
        assert_eq!(r["subscription"], "/meta/connect");
        let r = subscribe(&hub, Some("u"), &id, json!(["/ok", "bad"])).await;
        assert_eq!(r["successful"], false);
        assert_eq!(r["error"], "400:bad:Invalid channel");
        assert_eq!(hub.publish("u", "/ok", json!(1), None), 0, "all or none");
        let r = subscribe(&hub, Some("u"), &id, json!(42)).await;
        assert_eq!(r["successful"], false);
        let many: Vec<String> = (0..=MAX_SUBSCRIPTIONS).map(|i| format!("/c/{i}")).collect();
        let r = subscribe(&hub, Some("u"), &id, json!(many)).await;
        assert_eq!(r["error"], "403::Too many subscriptions");
    }

    #[tokio::test]
    async fn client_publishes_are_acknowledged_and_odd_messages_refused() {
        let hub = hub(100);
        let id = ready(&hub, "u", json!("/**")).await;
        let r = send(
            &hub,
            Some("u"),
            json!([
                {"channel": "/service/x", "clientId": id, "data": {}, "id": "p"},
                {"channel": "/meta/bogus", "clientId": id},
                {"id": "nochannel"},
                17
            ]),
        )
        .await;
        assert_eq!(
            r[0],
            json!({"channel": "/service/x", "id": "p", "successful": true})
        );
        assert_eq!(r[1]["successful"], false);
        assert_eq!(r[2]["error"], "400::Missing channel");
        assert_eq!(r[2]["id"], "nochannel");
        assert_eq!(r[3]["successful"], false);
        assert!(events(&connect(&hub, Some("u"), &id).await).is_empty());
    }

    #[tokio::test]
    async fn one_request_may_carry_several_messages() {
        let hub = hub(5_000);
        let id = handshake(&hub, Some("u")).await;
        hub.publish("u", "/_genesys", json!(0), None);
        // The connect is handled after the subscribe that follows it.
        let r = send(
            &hub,
            Some("u"),
            json!([
                {"channel": "/meta/connect", "clientId": id},
                {"channel": "/meta/subscribe", "clientId": id, "subscription": "/_genesys"}
            ]),
        )
        .await;
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["channel"], "/meta/subscribe");
        assert_eq!(r[1]["channel"], "/meta/connect");
    }

    #[test]
    fn bodies_parse_as_arrays_objects_or_form_fields() {
        let json_headers = HeaderMap::new();
        let mut form_headers = HeaderMap::new();
        form_headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let one = br#"{"channel":"/meta/handshake"}"#;
        assert_eq!(parse_body(&json_headers, one, 16).unwrap().len(), 1);
        let two = br#"[{"channel":"/a"},{"channel":"/b"}]"#;
        assert_eq!(parse_body(&json_headers, two, 16).unwrap().len(), 2);
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("message", r#"[{"channel":"/meta/connect"}]"#)
            .finish();
        assert_eq!(
            parse_body(&form_headers, form.as_bytes(), 16)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse_body(&json_headers, form.as_bytes(), 16)
                .unwrap()
                .len(),
            1
        );
        assert!(parse_body(&form_headers, b"other=1", 16).is_err());
        assert!(parse_body(&json_headers, b"[", 16).is_err());
        assert!(parse_body(&json_headers, b"[]", 16).is_err());
        assert!(parse_body(&json_headers, b"3", 16).is_err());
        assert!(parse_body(&json_headers, b"", 16).is_err());
        let many = format!(
            "[{}]",
            vec![r#"{"channel":"/meta/handshake"}"#; 17].join(",")
        );
        let e = parse_body(&json_headers, many.as_bytes(), 16).unwrap_err();
        assert!(e.contains("17 messages"), "{e}");
        let mut deep = String::from("1");
        for _ in 0..40 {
            deep = format!("[{deep}]");
        }
        let deep = format!(r#"[{{"channel":"/a","id":{deep}}}]"#);
        assert!(
            parse_body(&json_headers, deep.as_bytes(), 16)
                .unwrap_err()
                .contains("deeper")
        );
    }

    #[tokio::test]
    async fn clients_are_capped_per_user_and_in_all() {
        let hub = CometHub::new(CometSettings {
            max_clients: 3,
            max_clients_per_user: 2,
            ..CometSettings::default()
        });
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(handshake(&hub, Some("a")).await);
        }
        // The user keeps its two newest clients.
        assert_eq!(hub.clients(), 2);
        let gone = connect(&hub, Some("a"), &ids[0]).await;
        assert_eq!(gone[0]["successful"], false, "{gone:?}");
        handshake(&hub, Some("b")).await;
        let r = send(
            &hub,
            Some("c"),
            json!([{"channel": "/meta/handshake", "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"], "id": "1"}]),
        )
        .await;
        assert_eq!(r[0]["successful"], false, "{r:?}");
        assert_eq!(r[0]["error"], "503::Too many clients");
        assert_eq!(hub.clients(), 3);
    }
}
