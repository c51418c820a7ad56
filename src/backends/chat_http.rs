//! The chat half of the JSON-over-HTTP backend protocol (conventions in
//! [`super::protocol`]): [`HttpChat`], the client the server uses when
//! `chat_url` is set, and [`chat_protocol_router`], which exposes any
//! [`ChatBackend`] over the protocol.
//!
//! # Routes
//!
//! | Request | Body | Success |
//! |---|---|---|
//! | `POST {base}/chats` | a [`NewChat`] | 200, a [`ChatInfo`] |
//! | `GET {base}/chats/{id}` | | 200, a [`ChatInfo`] |
//! | `GET {base}/chats?gms_service_id=ID` | | 200, a [`ChatInfo`] or `null` |
//! | `POST {base}/chats/{id}/send` | `{"party_id", "text"}` | 200, `{"position": n}` |
//! | `POST {base}/chats/{id}/system` | `{"nickname", "text"}` | 200, `{"position": n}` |
//! | `POST {base}/chats/{id}/typing` | `{"party_id", "started": bool}` | 200, `{"position": n}` |
//! | `GET {base}/chats/{id}/transcript?from=N` | | 200, a [`TranscriptPage`] |
//! | `POST {base}/chats/{id}/leave` | `{"party_id"}` | 200, `{}` |
//! | `POST {base}/chats/{id}/deliver` | an [`AgentRef`] `{"agent_id", "nickname"}` | 200, `{}` |
//! | `POST {base}/chats/{id}/terminate` | `{"reason"}` | 200, `{}` |
//! | `GET {base}/updates?after=S&wait_ms=W&stream=X` | | 200, an [`UpdatesPage`] |
//!
//! A `NewChat` is `{"queue", "nickname", "first_name", "last_name",
//! "email", "subject", "user_data": {...}}`; a `ChatInfo` is `{"chat_id",
//! "customer_party_id", "state", "started_at_ms", "queue", "user_data",
//! "agent_id"}` with `state` one of `waiting`, `alerting`, `connected`,
//! `ended`. A `TranscriptPage` is `{"state", "entries": [...],
//! "last_position"}`, each entry `{"position", "kind", "nickname", "text",
//! "party_id", "party_type", "at_ms"}` with `kind` one of `Message.Text`,
//! `Notice.Joined`, `Notice.Left`, `Notice.TypingStarted`,
//! `Notice.TypingStopped`, `Notice.PushUrl` and `party_type` one of
//! `CLIENT`, `AGENT`, `EXTERNAL`, `SUPERVISOR`. `transcript` without
//! `from` means from 1.
//!
//! # Updates
//!
//! Updates ([`ChatUpdate`]: `{"type": "created", "chat"}`, `{"type":
//! "entry", "chat_id", "entry"}`, `{"type": "ended", "chat_id",
//! "reason"}`) are read by long polling. The backend numbers them 1, 2, ...
//! in a stream (named by `stream`, which changes when the backend
//! restarts) and keeps the latest ones; `GET {base}/updates` answers
//! `{"updates": [{"seq", "update"}, ...], "next": S, "stream": X}` with
//! the updates numbered after `after`, oldest first, as soon as there is
//! one, or with none after `wait_ms` milliseconds (default 0, at most
//! 60000). Without `after` it answers from the current end of the stream
//! (so a first call with `wait_ms=0` just learns where the stream is);
//! with a `stream` that is not the backend's current one, from the start
//! of what it keeps. The client asks again with `after=next` and the
//! `stream` it was given. A gap in `seq` means updates were lost (the
//! poller fell too far behind).
//!
//! [`chat_protocol_router`] keeps the last 10000 updates. [`HttpChat`]
//! runs its poll loop on a background thread of its own (see
//! `backends/background.rs`) and re-broadcasts what it reads to its
//! [`ChatBackend::subscribe`] receivers; [`HttpChat::wait_synced`] waits
//! until it knows where the stream is, so that updates from then on reach
//! subscribers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

use super::chat::{
    AgentRef, ChatBackend, ChatError, ChatInfo, ChatUpdate, NewChat, TranscriptPage,
};
use super::chat_sim::UPDATE_CHANNEL_CAPACITY;
use super::protocol::{
    CALL_TIMEOUT, Empty, LeaveBody, PositionBody, ProtocolClient, SendBody, SequencedUpdate,
    SystemBody, TerminateBody, TypingBody, UpdatesPage, chat_status, encode, json_response,
    query_pairs, query_value,
};
use super::{BoxFuture, lock, new_id};

/// How long one update poll waits on the backend.
const POLL_WAIT_MS: u64 = 20_000;
/// The longest `wait_ms` the router honours.
const MAX_WAIT_MS: u64 = 60_000;
/// How many updates the router keeps.
const RING_CAPACITY: usize = 10_000;
/// Most updates in one page.
const PAGE_LIMIT: usize = 1_000;

/// A chat backend reached over HTTP; see the module docs.
pub struct HttpChat {
    client: ProtocolClient,
    updates: broadcast::Sender<ChatUpdate>,
    synced: watch::Receiver<bool>,
}

impl HttpChat {
    /// A client for the chat service at `base_url`. It starts polling the
    /// service's updates at once, on a background thread of its own that
    /// stops when the client is dropped.
    pub fn new(base_url: &str) -> Result<HttpChat, super::SetupError> {
        let client = ProtocolClient::new(base_url, "ors-chat-http")?;
        let (updates, _) = broadcast::channel(UPDATE_CHANNEL_CAPACITY);
        let (synced_tx, synced) = watch::channel(false);
        client.runtime().spawn(poll_updates(
            client.client().clone(),
            client.base().to_string(),
            updates.clone(),
            synced_tx,
        ));
        Ok(HttpChat {
            client,
            updates,
            synced,
        })
    }

    /// Waits until the poll loop knows where the backend's update stream
    /// is (its first answer), at most `timeout`; true when it does.
    /// Updates the backend makes after that reach [`ChatBackend::subscribe`]
    /// receivers.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut synced = self.synced.clone();
        matches!(
            tokio::time::timeout(timeout, synced.wait_for(|s| *s)).await,
            Ok(Ok(_))
        )
    }

    fn chat_path(chat_id: &str, tail: &str) -> String {
        format!("/chats/{}{tail}", encode(chat_id))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ChatError> {
        self.client
            .call(reqwest::Method::GET, path, None, None)
            .await
    }
}

/// The client's poll loop (runs on its background runtime, which drops it
/// with the client).
async fn poll_updates(
    client: reqwest::Client,
    base: String,
    updates: broadcast::Sender<ChatUpdate>,
    synced: watch::Sender<bool>,
) {
    let mut after: Option<u64> = None;
    let mut stream: Option<String> = None;
    let mut failing = false;
    loop {
        let wait = if after.is_some() { POLL_WAIT_MS } else { 0 };
        let mut url = format!("{base}/updates?wait_ms={wait}");
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        if let Some(stream) = &stream {
            url.push_str(&format!("&stream={}", encode(stream)));
        }
        let answer = async {
            let response = client
                .get(&url)
                .timeout(Duration::from_millis(wait) + CALL_TIMEOUT)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            serde_json::from_slice::<UpdatesPage>(&bytes).map_err(|e| e.to_string())
        }
        .await;
        match answer {
            Ok(page) => {
                if failing {
                    tracing::info!(url = %base, "chat backend: update polling works again");
                    failing = false;
                }
                for item in page.updates {
                    let _ = updates.send(item.update);
                }
                after = Some(page.next);
                stream = Some(page.stream);
                synced.send_replace(true);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(url = %url, error = %e, "chat backend: update polling failed");
                    failing = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl ChatBackend for HttpChat {
    fn create(&self, chat: NewChat) -> BoxFuture<'_, Result<ChatInfo, ChatError>> {
        Box::pin(async move { self.client.post("/chats", &chat, None).await })
    }

    fn info(&self, chat_id: &str) -> BoxFuture<'_, Result<ChatInfo, ChatError>> {
        let path = Self::chat_path(chat_id, "");
        Box::pin(async move { self.get(&path).await })
    }

    fn find_by_service(
        &self,
        service_id: &str,
    ) -> BoxFuture<'_, Result<Option<ChatInfo>, ChatError>> {
        let path = format!("/chats?gms_service_id={}", encode(service_id));
        Box::pin(async move { self.get(&path).await })
    }

    fn send(
        &self,
        chat_id: &str,
        party_id: &str,
        text: &str,
    ) -> BoxFuture<'_, Result<u64, ChatError>> {
        let path = Self::chat_path(chat_id, "/send");
        let body = SendBody {
            party_id: party_id.to_string(),
            text: text.to_string(),
        };
        Box::pin(async move {
            let answer: PositionBody = self.client.post(&path, &body, None).await?;
            Ok(answer.position)
        })
    }

    fn send_system(
        &self,
        chat_id: &str,
        nickname: &str,
        text: &str,
    ) -> BoxFuture<'_, Result<u64, ChatError>> {
        let path = Self::chat_path(chat_id, "/system");
        let body = SystemBody {
            nickname: nickname.to_string(),
            text: text.to_string(),
        };
        Box::pin(async move {
            let answer: PositionBody = self.client.post(&path, &body, None).await?;
            Ok(answer.position)
        })
    }

    fn typing(
        &self,
        chat_id: &str,
        party_id: &str,
        started: bool,
    ) -> BoxFuture<'_, Result<u64, ChatError>> {
        let path = Self::chat_path(chat_id, "/typing");
        let body = TypingBody {
            party_id: party_id.to_string(),
            started,
        };
        Box::pin(async move {
            let answer: PositionBody = self.client.post(&path, &body, None).await?;
            Ok(answer.position)
        })
    }

    fn transcript(
        &self,
        chat_id: &str,
        from: u64,
    ) -> BoxFuture<'_, Result<TranscriptPage, ChatError>> {
        let path = Self::chat_path(chat_id, &format!("/transcript?from={from}"));
        Box::pin(async move { self.get(&path).await })
    }

    fn leave(&self, chat_id: &str, party_id: &str) -> BoxFuture<'_, Result<(), ChatError>> {
        let path = Self::chat_path(chat_id, "/leave");
        let body = LeaveBody {
            party_id: party_id.to_string(),
        };
        Box::pin(async move {
            self.client
                .post::<_, Empty, ChatError>(&path, &body, None)
                .await
                .map(|_| ())
        })
    }

    fn deliver(&self, chat_id: &str, agent: AgentRef) -> BoxFuture<'_, Result<(), ChatError>> {
        let path = Self::chat_path(chat_id, "/deliver");
        Box::pin(async move {
            self.client
                .post::<_, Empty, ChatError>(&path, &agent, None)
                .await
                .map(|_| ())
        })
    }

    fn terminate(&self, chat_id: &str, reason: &str) -> BoxFuture<'_, Result<(), ChatError>> {
        let path = Self::chat_path(chat_id, "/terminate");
        let body = TerminateBody {
            reason: reason.to_string(),
        };
        Box::pin(async move {
            self.client
                .post::<_, Empty, ChatError>(&path, &body, None)
                .await
                .map(|_| ())
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<ChatUpdate> {
        self.updates.subscribe()
    }
}

/// The updates a router has seen, numbered.
struct Feed {
    receiver: broadcast::Receiver<ChatUpdate>,
    ring: VecDeque<SequencedUpdate>,
    /// The last sequence number given (lost updates count too).
    last: u64,
}

impl Feed {
    /// Numbers whatever the backend announced since the last call.
    fn drain(&mut self) {
        loop {
            match self.receiver.try_recv() {
                Ok(update) => {
                    self.last += 1;
                    self.ring.push_back(SequencedUpdate {
                        seq: self.last,
                        update,
                    });
                    if self.ring.len() > RING_CAPACITY {
                        self.ring.pop_front();
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(lost)) => self.last += lost,
                Err(_) => return,
            }
        }
    }

    /// Up to a page of the updates numbered after `after`.
    fn after(&self, after: u64) -> Vec<SequencedUpdate> {
        let start = self.ring.partition_point(|u| u.seq <= after);
        self.ring
            .iter()
            .skip(start)
            .take(PAGE_LIMIT)
            .cloned()
            .collect()
    }
}

/// A router's state.
struct Served {
    backend: Arc<dyn ChatBackend>,
    feed: Mutex<Feed>,
    stream: String,
}

/// Exposes a chat backend over the protocol (routes relative to where the
/// router is mounted; see the module docs). The router subscribes to the
/// backend's updates when made, and numbers them as pollers ask; it starts
/// no task of its own.
pub fn chat_protocol_router(backend: Arc<dyn ChatBackend>) -> Router {
    let served = Arc::new(Served {
        feed: Mutex::new(Feed {
            receiver: backend.subscribe(),
            ring: VecDeque::new(),
            last: 0,
        }),
        backend,
        stream: new_id(),
    });
    Router::new()
        .route("/chats", post(create).get(find_by_service))
        .route("/chats/{id}", get(info))
        .route("/chats/{id}/send", post(send))
        .route("/chats/{id}/system", post(system))
        .route("/chats/{id}/typing", post(typing))
        .route("/chats/{id}/transcript", get(transcript))
        .route("/chats/{id}/leave", post(leave))
        .route("/chats/{id}/deliver", post(deliver))
        .route("/chats/{id}/terminate", post(terminate))
        .route("/updates", get(updates))
        .with_state(served)
}

type Shared = State<Arc<Served>>;

/// The failure response of an error.
fn failure(error: &ChatError) -> Response {
    json_response(chat_status(error), error)
}

/// The response of a backend call.
fn answer<T: serde::Serialize>(result: Result<T, ChatError>) -> Response {
    match result {
        Ok(body) => json_response(200, &body),
        Err(e) => failure(&e),
    }
}

/// Decodes a request body, or the `invalid` failure.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ChatError> {
    serde_json::from_slice(body).map_err(|e| ChatError::Invalid(format!("bad request body: {e}")))
}

async fn create(State(s): Shared, body: Bytes) -> Response {
    match decode::<NewChat>(&body) {
        Ok(chat) => answer(s.backend.create(chat).await),
        Err(e) => failure(&e),
    }
}

async fn info(State(s): Shared, Path(id): Path<String>) -> Response {
    answer(s.backend.info(&id).await)
}

async fn find_by_service(State(s): Shared, RawQuery(query): RawQuery) -> Response {
    let pairs = query_pairs(query.as_deref());
    match query_value(&pairs, "gms_service_id") {
        Some(id) if !id.is_empty() => answer(s.backend.find_by_service(id).await),
        _ => failure(&ChatError::Invalid(
            "'gms_service_id' is required".to_string(),
        )),
    }
}

async fn send(State(s): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    match decode::<SendBody>(&body) {
        Ok(b) => answer(
            s.backend
                .send(&id, &b.party_id, &b.text)
                .await
                .map(|position| PositionBody { position }),
        ),
        Err(e) => failure(&e),
    }
}

async fn system(State(s): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    match decode::<SystemBody>(&body) {
        Ok(b) => answer(
            s.backend
                .send_system(&id, &b.nickname, &b.text)
                .await
                .map(|position| PositionBody { position }),
        ),
        Err(e) => failure(&e),
    }
}

async fn typing(State(s): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    match decode::<TypingBody>(&body) {
        Ok(b) => answer(
            s.backend
                .typing(&id, &b.party_id, b.started)
                .await
                .map(|position| PositionBody { position }),
        ),
        Err(e) => failure(&e),
    }
}

async fn transcript(
    State(s): Shared,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = query_pairs(query.as_deref());
    let from = match query_value(&pairs, "from").map(str::parse::<u64>) {
        None => 1,
        Some(Ok(from)) => from,
        Some(Err(_)) => {
            return failure(&ChatError::Invalid(
                "'from' must be a whole number".to_string(),
            ));
        }
    };
    answer(s.backend.transcript(&id, from).await)
}

async fn leave(State(s): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    match decode::<LeaveBody>(&body) {
        Ok(b) => answer(s.backend.leave(&id, &b.party_id).await.map(|()| Empty {})),
        Err(e) => failure(&e),
    }
}

async fn deliver(State(s): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    match decode::<AgentRef>(&body) {
        Ok(agent) => answer(s.backend.deliver(&id, agent).await.map(|()| Empty {})),
        Err(e) => failure(&e),
    }
}

async fn terminate(State(s): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    match decode::<TerminateBody>(&body) {
        Ok(b) => answer(s.backend.terminate(&id, &b.reason).await.map(|()| Empty {})),
        Err(e) => failure(&e),
    }
}

async fn updates(State(s): Shared, RawQuery(query): RawQuery) -> Response {
    let pairs = query_pairs(query.as_deref());
    let number = |name: &str| -> Result<Option<u64>, ChatError> {
        query_value(&pairs, name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ChatError::Invalid(format!("'{name}' must be a whole number")))
            })
            .transpose()
    };
    let (after, wait_ms) = match (number("after"), number("wait_ms")) {
        (Ok(after), Ok(wait)) => (after, wait.unwrap_or(0).min(MAX_WAIT_MS)),
        (Err(e), _) | (_, Err(e)) => return failure(&e),
    };
    let same_stream = query_value(&pairs, "stream").is_none_or(|x| x == s.stream);
    // Subscribe before looking, so that nothing announced after the look
    // is missed by the wait.
    let mut wake = s.backend.subscribe();
    let (after, mut found) = {
        let mut feed = lock(&s.feed);
        feed.drain();
        let after = match after {
            Some(a) if same_stream && a <= feed.last => a,
            Some(_) => 0,
            None => feed.last,
        };
        (after, feed.after(after))
    };
    if found.is_empty() && wait_ms > 0 {
        let _ = tokio::time::timeout(Duration::from_millis(wait_ms), wake.recv()).await;
        let mut feed = lock(&s.feed);
        feed.drain();
        found = feed.after(after);
    }
    let next = found.last().map_or(after, |u| u.seq);
    json_response(
        200,
        &UpdatesPage {
            updates: found,
            next,
            stream: s.stream.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::chat::{ChatState, EntryKind};
    use crate::backends::chat_sim::ChatSim;
    use crate::backends::protocol::serve_for_test;
    use crate::backends::routing_sim::RoutingSim;
    use crate::backends::settings::SimulatorSettings;

    async fn setup() -> (Arc<ChatSim>, HttpChat, String) {
        let settings = SimulatorSettings {
            accept_delay_ms: 0,
            ..SimulatorSettings::default()
        };
        let routing = Arc::new(RoutingSim::new(&settings).unwrap());
        let sim = Arc::new(ChatSim::new(&settings, routing));
        let base = serve_for_test(chat_protocol_router(sim.clone())).await;
        let client = HttpChat::new(&base).unwrap();
        assert!(client.wait_synced(Duration::from_secs(5)).await);
        (sim, client, base)
    }

    async fn page(base: &str, query: &str) -> UpdatesPage {
        let response = crate::io::http::http_client(Duration::from_secs(5))
            .get(format!("{base}/updates?{query}"))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn every_call_goes_through_the_protocol_and_updates_follow() {
        let (_sim, client, _) = setup().await;
        let mut updates = client.subscribe();
        let info = client
            .create(NewChat {
                queue: "IQ".into(),
                nickname: "Jane".into(),
                ..NewChat::default()
            })
            .await
            .unwrap();
        let (id, me) = (info.chat_id.clone(), info.customer_party_id.clone());
        assert_eq!(client.info(&id).await.unwrap(), info);
        assert_eq!(client.send(&id, &me, "Hi").await, Ok(2));
        assert_eq!(client.typing(&id, &me, true).await, Ok(3));
        assert_eq!(client.send_system(&id, "Bot", "Hello").await, Ok(4));
        let agent = AgentRef {
            agent_id: "agent-1".into(),
            nickname: "Ann".into(),
        };
        client.deliver(&id, agent).await.unwrap();
        let page = client.transcript(&id, 5).await.unwrap();
        assert_eq!(page.state, ChatState::Connected);
        assert_eq!(page.entries[0].kind, EntryKind::Joined);
        assert_eq!(page.last_position, 6);
        client.leave(&id, &me).await.unwrap();
        assert_eq!(client.send(&id, &me, "x").await, Err(ChatError::Ended));
        assert!(matches!(
            client.info("nope").await,
            Err(ChatError::NotFound(_))
        ));
        assert!(matches!(
            client.terminate("nope", "x").await,
            Err(ChatError::NotFound(_))
        ));
        let mut seen = Vec::new();
        loop {
            let update = tokio::time::timeout(Duration::from_secs(5), updates.recv())
                .await
                .expect("updates in time")
                .unwrap();
            let ended = matches!(update, ChatUpdate::Ended { .. });
            seen.push(update);
            if ended {
                break;
            }
        }
        assert_eq!(seen[0], ChatUpdate::Created { chat: info.clone() });
        assert_eq!(seen.len(), 1 + 7 + 1);
        let positions: Vec<u64> = seen
            .iter()
            .filter_map(|u| match u {
                ChatUpdate::Entry { entry, .. } => Some(entry.position),
                _ => None,
            })
            .collect();
        assert_eq!(positions, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[tokio::test]
    async fn the_updates_route_numbers_waits_and_restarts() {
        let (sim, _client, base) = setup().await;
        let head = page(&base, "wait_ms=0").await;
        assert!(head.updates.is_empty());
        let waiting = tokio::spawn({
            let base = base.clone();
            let query = format!("after={}&wait_ms=5000&stream={}", head.next, head.stream);
            async move { page(&base, &query).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let info = sim
            .create(NewChat {
                queue: "IQ".into(),
                ..NewChat::default()
            })
            .await
            .unwrap();
        let woken = waiting.await.unwrap();
        assert!(!woken.updates.is_empty());
        assert_eq!(woken.updates[0].seq, head.next + 1);
        assert_eq!(woken.updates[0].update, ChatUpdate::Created { chat: info });
        // Nothing new: an empty page after the wait, `next` unchanged.
        let all = page(&base, &format!("after={}&wait_ms=0", head.next)).await;
        let last = all.updates.last().unwrap().seq;
        let quiet = page(&base, &format!("after={last}&wait_ms=30")).await;
        assert!(quiet.updates.is_empty());
        assert_eq!(quiet.next, last);
        // Another stream's numbers start over from what is kept.
        let other = page(&base, &format!("after={last}&stream=old")).await;
        assert_eq!(other.updates.first().map(|u| u.seq), Some(1));
        let response = crate::io::http::http_client(Duration::from_secs(5))
            .get(format!("{base}/updates?after=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
    }
}
