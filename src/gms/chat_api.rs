//! GMS Chat API version 1 over the chat backend, for chats started from a
//! Callback service (`_start_chat_url`):
//!
//! - `POST /genesys/1/service/{id}/ixn/chat`: create (`firstName`,
//!   `lastName`, `email`, `subject`, `userDisplayName`, `notify_by`,
//!   `_verbose`; other fields are attached as user data). The chat enters
//!   the service's interaction queue (`_chat_endpoint`) tagged with the
//!   service id (`GMS_ServiceID`), where the inbound strategy finds it.
//! - `POST …/ixn/chat/send` (`message`), `/refresh` (`transcriptPosition`,
//!   optional `message`), `/startTyping`, `/stopTyping`, `/disconnect`.
//!
//! Every reply carries `chatIxnState` (`CONNECTED` or `DISCONNECTED`),
//! `chatSessionId`, `transcriptPosition` (the position to refresh from
//! next) and `transcriptToShow`, a list of
//! `[event, nickname, text, partyId, partyType]` tuples: from the given
//! position for `/refresh`, everything for create, and what this client
//! has not been shown yet for the others. With `notify_by=comet` and a
//! `gms_user` header, every new transcript entry is also pushed over
//! CometD on `/_genesys` as `{id, tag: "service.chat.refresh.<id>",
//! message: <reply>}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Gms;
use super::callback_api::{gms_user, public_base};
use super::continuity::Journal;
use super::records::iso_utc;
use crate::backends::chat::{
    ChatError, ChatInfo, ChatState, ChatUpdate, EntryKind, NewChat, TranscriptEntry,
};
use crate::server::error::ApiError;
use crate::server::params::read_request;

type Ctx = State<Arc<Gms>>;

/// The channel pushes go to.
pub const PUSH_CHANNEL: &str = "/_genesys";

/// A chat started through Chat API v1 (stored as JSON with these field
/// names, `crate::gms::continuity`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Binding {
    /// The service id.
    pub service_id: String,
    /// The chat.
    pub chat_id: String,
    /// The customer's party in it.
    pub party_id: String,
    /// The device owner, for pushes.
    pub gms_user: Option<String>,
    /// The callback's owner (its record's `gms_user`; empty: a device
    /// that sent none).
    pub owner: String,
    /// The service the callback was created on.
    pub service_name: String,
    /// The chat's secret, handed to the device in the create reply
    /// (`secureKey`); a request that names one must name this one.
    pub secure_key: String,
    /// Messages the customer has sent.
    pub messages_sent: usize,
    /// Typing notices the customer has sent.
    pub typing_sent: usize,
    /// Whether to push (`notify_by=comet`).
    pub push: bool,
    /// The last position shown over HTTP.
    pub shown: u64,
    /// The last position pushed to the device (queued for its CometD
    /// connect).
    pub pushed: u64,
    /// The last position a device was handed (written into a connect
    /// reply); `None` in bindings stored before it was kept. A restart
    /// goes on pushing from here, so an entry queued but not yet handed
    /// over when the server stopped is pushed again.
    #[serde(default)]
    pub delivered: Option<u64>,
    /// Creation time, ms since the Unix epoch.
    pub started_at: u64,
}

/// Chats by service id, and service ids by chat; every binding of a
/// created chat is also written to the store (`crate::gms::continuity`).
pub struct ChatBindings {
    by_service: Arc<Mutex<HashMap<String, Binding>>>,
    by_chat: Mutex<HashMap<String, String>>,
    journal: Journal,
}

impl ChatBindings {
    /// None yet; changes are written to `journal`.
    pub fn new(journal: Journal) -> ChatBindings {
        ChatBindings {
            by_service: Arc::new(Mutex::new(HashMap::new())),
            by_chat: Mutex::new(HashMap::new()),
            journal,
        }
    }

    /// Binds a created chat; the receiver answers once the binding is
    /// durable.
    fn insert(
        &self,
        binding: Binding,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<(), crate::store::CommitError>>> {
        if let Ok(mut m) = self.by_chat.lock() {
            m.insert(binding.chat_id.clone(), binding.service_id.clone());
        }
        let mut m = self.by_service.lock().ok()?;
        let durable = self.journal.put_durably(&binding.service_id, &binding);
        let chat_id = binding.chat_id.clone();
        if let Some(old) = m.insert(binding.service_id.clone(), binding)
            && old.chat_id != chat_id
            && let Ok(mut c) = self.by_chat.lock()
        {
            c.remove(&old.chat_id);
        }
        durable
    }

    /// Puts back the bindings read from the store at start (claims whose
    /// chat was being created too: [`super::continuity::reconcile`]
    /// completes or drops them).
    pub fn restore(&self, bindings: Vec<Binding>) {
        for mut b in bindings {
            if let Some(delivered) = b.delivered {
                b.pushed = delivered;
            }
            if !b.chat_id.is_empty()
                && let Ok(mut m) = self.by_chat.lock()
            {
                m.insert(b.chat_id.clone(), b.service_id.clone());
            }
            if let Ok(mut m) = self.by_service.lock() {
                m.insert(b.service_id.clone(), b);
            }
        }
    }

    /// Copies of every binding.
    pub fn all(&self) -> Vec<Binding> {
        self.by_service
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Changes a created chat's binding (a claim still being created is
    /// left alone) and writes it; false when there is none or `f` says
    /// nothing changed.
    fn change(&self, service_id: &str, f: impl FnOnce(&mut Binding) -> bool) -> bool {
        let Ok(mut m) = self.by_service.lock() else {
            return false;
        };
        let Some(b) = m.get_mut(service_id) else {
            return false;
        };
        let changed = f(b);
        if changed && !b.chat_id.is_empty() {
            self.journal.put(service_id, b);
        }
        changed
    }

    /// Reserves a service id for a chat being created (`None` when one
    /// is already bound or being created); the claim is written to the
    /// store too (the receiver answers once it is durable), so that a
    /// chat the backend makes before a crash is found again.
    #[allow(clippy::type_complexity)]
    fn claim(
        &self,
        binding: Binding,
    ) -> Option<Option<tokio::sync::oneshot::Receiver<Result<(), crate::store::CommitError>>>> {
        let mut m = self.by_service.lock().ok()?;
        if m.contains_key(&binding.service_id) {
            return None;
        }
        let durable = self.journal.put_durably(&binding.service_id, &binding);
        m.insert(binding.service_id.clone(), binding);
        Some(durable)
    }

    /// Drops a claim whose chat could not be created.
    fn release(&self, service_id: &str) {
        if let Ok(mut m) = self.by_service.lock()
            && m.remove(service_id).is_some()
        {
            self.journal.remove(service_id);
        }
    }

    /// Completes a claim read back from the store with the chat the
    /// backend made for it (found after a restart); the binding is
    /// written again.
    pub fn complete_claim(&self, service_id: &str, chat: &ChatInfo) {
        if let Ok(mut c) = self.by_chat.lock() {
            c.insert(chat.chat_id.clone(), service_id.to_string());
        }
        if let Ok(mut m) = self.by_service.lock()
            && let Some(b) = m.get_mut(service_id)
            && b.chat_id.is_empty()
        {
            b.chat_id = chat.chat_id.clone();
            b.party_id = chat.customer_party_id.clone();
            b.started_at = chat.started_at_ms;
            self.journal.put(service_id, b);
        }
    }

    /// Drops a claim read back from the store whose chat was never made.
    pub fn drop_claim(&self, service_id: &str) {
        let claimed = self.get(service_id).is_some_and(|b| b.chat_id.is_empty());
        if claimed {
            self.release(service_id);
        }
    }

    /// The chat of a service.
    pub fn get(&self, service_id: &str) -> Option<Binding> {
        self.by_service
            .lock()
            .ok()
            .and_then(|m| m.get(service_id).cloned())
    }

    /// The bindings whose device owner is `gms_user` and that push.
    pub fn pushing_to(&self, gms_user: &str) -> Vec<Binding> {
        self.by_service
            .lock()
            .map(|m| {
                m.values()
                    .filter(|b| b.push && b.gms_user.as_deref() == Some(gms_user))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The binding of a chat.
    pub fn of_chat(&self, chat_id: &str) -> Option<Binding> {
        let service = self.by_chat.lock().ok()?.get(chat_id).cloned()?;
        self.get(&service)
    }

    /// Counts one customer message against `max`; false when the chat
    /// already has `max`.
    fn count_message(&self, service_id: &str, max: usize) -> bool {
        self.change(service_id, |b| {
            let room = b.messages_sent < max;
            b.messages_sent += usize::from(room);
            room
        })
    }

    /// Counts one typing notice against `max`; false when the chat
    /// already has `max`.
    fn count_typing(&self, service_id: &str, max: usize) -> bool {
        self.change(service_id, |b| {
            let room = b.typing_sent < max;
            b.typing_sent += usize::from(room);
            room
        })
    }

    fn mark_shown(&self, service_id: &str, position: u64) {
        self.change(service_id, |b| {
            let later = position > b.shown;
            b.shown = b.shown.max(position);
            later
        });
    }

    /// Claims `position` for pushing: true when it is past the last
    /// position pushed (which it becomes).
    fn claim_push(&self, service_id: &str, position: u64) -> bool {
        self.change(service_id, |b| {
            let later = position > b.pushed;
            b.pushed = b.pushed.max(position);
            later
        })
    }

    /// What the CometD hub calls once it handed `position` to a device:
    /// the binding's `delivered` becomes it (written, not awaited).
    fn receipt(&self, service_id: &str, position: u64) -> crate::gms::cometd::Receipt {
        let (by_service, journal) = (self.by_service.clone(), self.journal.clone());
        let service_id = service_id.to_string();
        Arc::new(move || {
            if let Ok(mut m) = by_service.lock()
                && let Some(b) = m.get_mut(&service_id)
                && b.delivered.is_none_or(|d| d < position)
            {
                b.delivered = Some(position);
                journal.put(&service_id, b);
            }
        })
    }

    /// Forgets the chat of a service that ended.
    pub fn forget_chat(&self, chat_id: &str) {
        if let Some(service) = self.by_chat.lock().ok().and_then(|mut m| m.remove(chat_id))
            && let Ok(mut m) = self.by_service.lock()
            && m.remove(&service).is_some()
        {
            self.journal.remove(&service);
        }
    }

    /// How many chats are bound.
    pub fn len(&self) -> usize {
        self.by_service.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A transcript entry as Chat API v1 shows it.
pub fn entry_tuple(entry: &TranscriptEntry) -> Value {
    let event = serde_json::to_value(entry.kind).unwrap_or(Value::Null);
    let text = if entry.text.is_empty() {
        match entry.kind {
            EntryKind::Joined => "has joined the session",
            EntryKind::Left => "has left the session",
            EntryKind::TypingStarted => "is typing",
            EntryKind::TypingStopped => "stopped typing",
            EntryKind::Message | EntryKind::PushUrl => "",
        }
        .to_string()
    } else {
        entry.text.clone()
    };
    Value::Array(vec![
        event,
        Value::from(entry.nickname.clone()),
        Value::from(text),
        Value::from(entry.party_id.clone()),
        serde_json::to_value(entry.party_type).unwrap_or(Value::Null),
    ])
}

/// A Chat API v1 reply.
fn chat_reply(
    binding: &Binding,
    state: ChatState,
    entries: &[TranscriptEntry],
    last_position: u64,
    verbose: Option<&str>,
) -> Value {
    let mut m = Map::new();
    let connected = state != ChatState::Ended;
    m.insert(
        "chatIxnState".into(),
        Value::from(if connected {
            "CONNECTED"
        } else {
            "DISCONNECTED"
        }),
    );
    m.insert("chatSessionId".into(), Value::from(binding.chat_id.clone()));
    m.insert(
        "chatServiceMessage".into(),
        Value::from(if connected {
            "Chat service is available"
        } else {
            "Chat session has ended"
        }),
    );
    m.insert(
        "startedAt".into(),
        Value::from(iso_utc(binding.started_at as i64)),
    );
    m.insert("transcriptPosition".into(), Value::from(last_position + 1));
    m.insert(
        "transcriptToShow".into(),
        Value::Array(entries.iter().map(entry_tuple).collect()),
    );
    if let Some(base) = verbose {
        m.insert("userId".into(), Value::from(binding.party_id.clone()));
        m.insert("secureKey".into(), Value::from(binding.secure_key.clone()));
        let url = format!("{base}/genesys/1/service/{}/ixn/chat", binding.service_id);
        for (key, suffix) in [
            ("_chatIxnAPI-SEND-URL", "/send"),
            ("_chatIxnAPI-REFRESH-URL", "/refresh"),
            ("_chatIxnAPI-STARTTYPING-URL", "/startTyping"),
            ("_chatIxnAPI-STOPTYPING-URL", "/stopTyping"),
            ("_chatIxnAPI-DISCONNECT-URL", "/disconnect"),
        ] {
            m.insert(key.into(), Value::from(format!("{url}{suffix}")));
        }
    }
    Value::Object(m)
}

fn chat_error(e: ChatError) -> ApiError {
    match e {
        ChatError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "chat_not_found", m),
        ChatError::Ended => ApiError::new(StatusCode::CONFLICT, "chat_ended", "the chat has ended"),
        ChatError::Invalid(m) => ApiError::bad_parameter(m),
        ChatError::Backend(m) => {
            tracing::error!(error = %m, "chat backend failed");
            ApiError::unavailable("the chat service is unavailable (see the server log)")
        }
    }
}

fn text_param(params: &Map<String, Value>, name: &str) -> Option<String> {
    params
        .get(name)
        .map(crate::modules::value_text)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The 404 for a chat that does not exist or is not the caller's.
fn no_chat(service_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "chat_not_found",
        format!("no chat was started for service '{service_id}'"),
    )
}

/// Refuses a text parameter longer than `max` characters.
fn check_chars(name: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_large",
            format!("'{name}' is longer than {max} characters"),
        ));
    }
    Ok(())
}

/// Refuses a chat message over the byte cap.
fn check_message(ctx: &Gms, message: &str) -> Result<(), ApiError> {
    let max = ctx.settings.gms.limits.max_message_bytes;
    if message.len() > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_large",
            format!(
                "the message is {} bytes; at most {max} are accepted",
                message.len()
            ),
        ));
    }
    Ok(())
}

/// `POST /genesys/1/service/{id}/ixn/chat`: the callback's owner starts
/// its one chat.
pub async fn create(
    State(ctx): Ctx,
    Path(service_id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let client = super::access::client_ip(&request);
    let record = ctx.records.get(&service_id).await.map_err(ApiError::from)?;
    let service = record.as_ref().and_then(|r| ctx.services.get(&r.service));
    let caller = ctx.customer(request.headers(), service)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "service_not_found",
            format!("no service instance '{service_id}'"),
        )
    };
    let record = record
        .filter(|r| caller.owns(&r.gms_user))
        .ok_or_else(not_found)?;
    if ctx.chats.get(&service_id).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "chat_exists",
            format!("a chat was already started for service '{service_id}'"),
        ));
    }
    if super::records::is_final(&record.state) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "callback_finished",
            format!("callback '{service_id}' is already {}", record.state),
        ));
    }
    if !caller.operator {
        ctx.rates.check(super::access::Rated::ChatSend, client)?;
    }
    let (parts, mut params) = read_request(request, ctx.config.limits.max_body_bytes).await?;
    let limits = &ctx.settings.gms.limits;
    let first_name = text_param(&params, "firstName").unwrap_or_default();
    let last_name = text_param(&params, "lastName").unwrap_or_default();
    let display_name = text_param(&params, "userDisplayName");
    for (name, value) in [
        ("firstName", Some(&first_name)),
        ("lastName", Some(&last_name)),
        ("userDisplayName", display_name.as_ref()),
    ] {
        check_chars(
            name,
            value.map_or("", |v| v.as_str()),
            limits.max_nickname_chars,
        )?;
    }
    let nickname = display_name
        .or_else(|| {
            let full = format!("{first_name} {last_name}").trim().to_string();
            (!full.is_empty()).then_some(full)
        })
        .unwrap_or_else(|| "Customer".into());
    check_chars("nickname", &nickname, limits.max_nickname_chars)?;
    let push = text_param(&params, "notify_by").is_some_and(|n| n.eq_ignore_ascii_case("comet"));
    let verbose = text_param(&params, "_verbose").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let email = text_param(&params, "email").unwrap_or_default();
    let subject = text_param(&params, "subject").unwrap_or_default();
    check_chars("email", &email, limits.max_field_chars)?;
    check_chars("subject", &subject, limits.max_field_chars)?;
    for known in [
        "firstName",
        "lastName",
        "userDisplayName",
        "notify_by",
        "_verbose",
        "email",
        "subject",
    ] {
        params.remove(known);
    }
    let extra_bytes = Value::Object(params.clone()).to_string().len();
    if extra_bytes > limits.max_user_data_bytes {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_large",
            format!(
                "the chat's user data is {extra_bytes} bytes; at most {} are accepted",
                limits.max_user_data_bytes
            ),
        ));
    }
    // The chat carries the callback's user data, then this request's.
    let mut user_data = Map::new();
    if let Ok(Value::Object(r)) = serde_json::from_str::<Value>(&record.record) {
        for (k, v) in r {
            if !k.starts_with('_') || k == "_customer_number" {
                user_data.insert(k, v);
            }
        }
    }
    user_data.extend(params);
    user_data.insert("GMS_ServiceID".into(), Value::from(service_id.clone()));
    user_data.insert(
        "GMS_ServiceName".into(),
        Value::from(record.service.clone()),
    );
    user_data.insert("FirstName".into(), Value::from(first_name.clone()));
    user_data.insert("LastName".into(), Value::from(last_name.clone()));
    user_data.insert("EmailAddress".into(), Value::from(email.clone()));
    user_data.insert("Subject".into(), Value::from(subject.clone()));
    let queue = ctx
        .services
        .get(&record.service)
        .and_then(|s| s.options.get("_chat_endpoint"))
        .map(crate::modules::value_text)
        .unwrap_or_else(|| ctx.settings.gms.chat_endpoint.clone());
    let queue = queue.rsplit(':').next().unwrap_or_default().to_string();
    let binding = Binding {
        service_id: service_id.clone(),
        chat_id: String::new(),
        party_id: String::new(),
        gms_user: gms_user(&parts.headers),
        owner: record.gms_user.clone(),
        service_name: record.service.clone(),
        secure_key: crate::ids::secret_token(),
        messages_sent: 0,
        typing_sent: 0,
        push,
        shown: 0,
        pushed: 0,
        delivered: Some(0),
        started_at: 0,
    };
    // Claimed (durably) before the backend is asked, so two creates racing
    // for the same service id cannot both start a chat, and a chat made
    // just before a crash is found again after it.
    let Some(claimed) = ctx.chats.claim(binding.clone()) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "chat_exists",
            format!("a chat was already started for service '{service_id}'"),
        ));
    };
    if let Err(e) = super::continuity::durable(claimed).await {
        tracing::error!(service = %service_id, error = %e, "a chat claim could not be stored");
        ctx.chats.release(&service_id);
        return Err(ApiError::unavailable(
            "the chat could not be stored (see the server log)",
        ));
    }
    let chat = match ctx
        .backends
        .chat
        .create(NewChat {
            queue,
            nickname,
            first_name,
            last_name,
            email,
            subject,
            user_data,
        })
        .await
    {
        Ok(chat) => chat,
        Err(e) => {
            ctx.chats.release(&service_id);
            return Err(chat_error(e));
        }
    };
    let binding = Binding {
        chat_id: chat.chat_id.clone(),
        party_id: chat.customer_party_id.clone(),
        started_at: chat.started_at_ms,
        ..binding
    };
    if let Err(e) = super::continuity::durable(ctx.chats.insert(binding.clone())).await {
        // Not durable: the device is not given a chat the server could
        // lose track of.
        tracing::error!(service = %service_id, error = %e, "a chat binding could not be stored");
        ctx.chats.forget_chat(&binding.chat_id);
        let _ = ctx
            .backends
            .chat
            .terminate(&binding.chat_id, "the chat could not be stored")
            .await;
        return Err(ApiError::unavailable(
            "the chat could not be stored (see the server log)",
        ));
    }
    // Entries made before the binding existed (the customer's join) are
    // pushed here; later ones by `push_chat_updates`.
    if let Ok(page) = ctx.backends.chat.transcript(&binding.chat_id, 1).await {
        for entry in &page.entries {
            push_entry(&ctx, &binding, page.state, entry);
        }
    }
    let base = public_base(&parts.headers, &ctx.base_url);
    // The chat's secret goes to its creator with the first reply.
    reply_from(&ctx, &binding, 1, verbose.then_some(base.as_str()), true).await
}

/// The reply with entries from `from` on, one page at most
/// (`transcript_page_entries`, `transcript_page_bytes`); marks them shown.
/// The reply's `transcriptPosition` is where the next page starts.
async fn reply_from(
    ctx: &Gms,
    binding: &Binding,
    from: u64,
    verbose: Option<&str>,
    with_secure_key: bool,
) -> Result<Response, ApiError> {
    let page = ctx
        .backends
        .chat
        .transcript(&binding.chat_id, from.max(1))
        .await
        .map_err(chat_error)?;
    let limits = &ctx.settings.gms.limits;
    let mut bytes = 0usize;
    let mut entries = Vec::new();
    for entry in page.entries {
        bytes += entry.text.len() + entry.nickname.len();
        if !entries.is_empty()
            && (entries.len() >= limits.transcript_page_entries.max(1)
                || bytes > limits.transcript_page_bytes)
        {
            break;
        }
        entries.push(entry);
    }
    let last = entries
        .last()
        .map(|e| e.position)
        .unwrap_or_else(|| page.last_position.min(from.max(1) - 1));
    ctx.chats.mark_shown(&binding.service_id, last);
    let mut body = chat_reply(binding, page.state, &entries, last, verbose);
    if with_secure_key && let Value::Object(m) = &mut body {
        m.insert("secureKey".into(), Value::from(binding.secure_key.clone()));
    }
    Ok(axum::Json(body).into_response())
}

/// `POST /genesys/1/service/{id}/ixn/chat/{operation}`: only the chat's
/// owner (its `gms_user`, and its `secureKey` when the request names one)
/// reaches it; anyone else gets the 404 of a chat that does not exist.
pub async fn operation(
    State(ctx): Ctx,
    Path((service_id, op)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let client = super::access::client_ip(&request);
    let binding = ctx.chats.get(&service_id).filter(|b| !b.chat_id.is_empty());
    let service = binding
        .as_ref()
        .and_then(|b| ctx.services.get(&b.service_name));
    let caller = ctx.customer(request.headers(), service)?;
    let binding = binding
        .filter(|b| caller.owns(&b.owner))
        .ok_or_else(|| no_chat(&service_id))?;
    let (parts, params) = read_request(request, ctx.config.limits.max_body_bytes).await?;
    if let Some(key) = text_param(&params, "secureKey")
        && key != binding.secure_key
    {
        return Err(no_chat(&service_id));
    }
    let base = public_base(&parts.headers, &ctx.base_url);
    let verbose = text_param(&params, "_verbose")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        .then_some(base.as_str());
    let chat = &ctx.backends.chat;
    let (chat_id, party) = (&binding.chat_id, &binding.party_id);
    let mut from = binding.shown + 1;
    let is_operator = caller.operator;
    let send = |message: String| {
        let ctx = ctx.clone();
        let binding = binding.clone();
        async move {
            check_message(&ctx, &message)?;
            if !is_operator {
                ctx.rates.check(super::access::Rated::ChatSend, client)?;
            }
            let max = ctx.settings.gms.limits.max_messages_per_chat;
            if !ctx.chats.count_message(&binding.service_id, max) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "too_many_messages",
                    format!("this chat already has {max} messages from the customer"),
                ));
            }
            ctx.backends
                .chat
                .send(&binding.chat_id, &binding.party_id, &message)
                .await
                .map_err(chat_error)
        }
    };
    match op.as_str() {
        "send" => {
            let message = text_param(&params, "message")
                .ok_or_else(|| ApiError::bad_parameter("'message' is mandatory"))?;
            send(message).await?;
        }
        "refresh" => {
            if let Some(message) = text_param(&params, "message") {
                send(message).await?;
            }
            if let Some(p) = text_param(&params, "transcriptPosition") {
                from = p.parse::<u64>().map_err(|_| {
                    ApiError::bad_parameter(format!(
                        "transcriptPosition must be a whole number, not '{p}'"
                    ))
                })?;
            }
        }
        "startTyping" | "stopTyping" => {
            if !is_operator {
                ctx.rates.check(super::access::Rated::ChatSend, client)?;
            }
            // Typing notices are transcript entries too.
            let max = ctx
                .settings
                .gms
                .limits
                .max_messages_per_chat
                .saturating_mul(2);
            if !ctx.chats.count_typing(&binding.service_id, max) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "too_many_messages",
                    format!("this chat already has {max} typing notices from the customer"),
                ));
            }
            chat.typing(chat_id, party, op == "startTyping")
                .await
                .map_err(chat_error)?;
        }
        "disconnect" => match chat.leave(chat_id, party).await {
            Ok(()) | Err(ChatError::Ended) => {}
            Err(e) => return Err(chat_error(e)),
        },
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no chat operation '{other}' (send, refresh, startTyping, stopTyping, disconnect)"
                ),
            ));
        }
    }
    reply_from(&ctx, &binding, from, verbose, false).await
}

/// Pushes every new transcript entry of a Chat API chat to its device
/// over CometD, for the life of the server.
pub async fn push_chat_updates(ctx: Arc<Gms>) {
    let mut updates = ctx.backends.chat.subscribe();
    loop {
        let update = match updates.recv().await {
            Ok(u) => u,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "chat pushes were missed (the server fell behind)"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        let (chat_id, entries, state) = match &update {
            ChatUpdate::Entry { chat_id, entry } => {
                (chat_id, std::slice::from_ref(entry), ChatState::Connected)
            }
            ChatUpdate::Ended { chat_id, .. } => (chat_id, &[][..], ChatState::Ended),
            ChatUpdate::Created { .. } => continue,
        };
        let Some(binding) = ctx.chats.of_chat(chat_id) else {
            continue;
        };
        match entries.first() {
            // Entries before it were never pushed (no device was
            // subscribed then): they go first, in order.
            Some(entry) if entry.position > binding.pushed + 1 => {
                let ctx = ctx.clone();
                tokio::spawn(async move { push_missed(&ctx, &binding).await });
            }
            Some(entry) => push_entry(&ctx, &binding, state, entry),
            None => push(&ctx, &binding, state, &[], binding.pushed),
        }
        if state == ChatState::Ended {
            // Keep the binding a while so late refreshes still answer.
            let ctx = ctx.clone();
            let chat_id = chat_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(300)).await;
                ctx.chats.forget_chat(&chat_id);
            });
        }
    }
}

/// Pushes what a device with `notify_by=comet` has not been pushed yet:
/// the entries after the last one pushed (after a restart, when a device
/// subscribes, or when an entry comes after some that were not pushed).
pub async fn push_missed(ctx: &Gms, binding: &Binding) {
    if !binding.push || binding.gms_user.is_none() || binding.chat_id.is_empty() {
        return;
    }
    if let Ok(page) = ctx
        .backends
        .chat
        .transcript(&binding.chat_id, binding.pushed + 1)
        .await
    {
        for entry in &page.entries {
            push_entry(ctx, binding, page.state, entry);
        }
    }
}

/// A device of `gms_user` subscribed to CometD: the entries of its chats
/// that were not pushed yet (published while it had no subscribed
/// device) are pushed now, in order.
pub async fn push_missed_to(ctx: &Gms, gms_user: &str) {
    for binding in ctx.chats.pushing_to(gms_user) {
        push_missed(ctx, &binding).await;
    }
}

/// Pushes one entry unless it was pushed already. While no device of the
/// binding's owner is subscribed (a device between two CometD sessions,
/// or one not reconnected yet after a restart of the server) nothing is
/// pushed nor counted as pushed: [`push_missed_to`] pushes it once a
/// device subscribes.
fn push_entry(ctx: &Gms, binding: &Binding, state: ChatState, entry: &TranscriptEntry) {
    let Some(user) = binding.gms_user.as_deref() else {
        return;
    };
    if !ctx.pusher.reaches(user, PUSH_CHANNEL) {
        return;
    }
    if ctx.chats.claim_push(&binding.service_id, entry.position) {
        push(
            ctx,
            binding,
            state,
            std::slice::from_ref(entry),
            entry.position,
        );
    }
}

/// Pushes a Chat API reply to the binding's device (with `notify_by=comet`).
fn push(ctx: &Gms, binding: &Binding, state: ChatState, entries: &[TranscriptEntry], last: u64) {
    let (true, Some(user)) = (binding.push, &binding.gms_user) else {
        return;
    };
    let mut data = Map::new();
    data.insert("id".into(), Value::from(binding.service_id.clone()));
    data.insert(
        "tag".into(),
        Value::from(format!("service.chat.refresh.{}", binding.service_id)),
    );
    data.insert(
        "message".into(),
        chat_reply(binding, state, entries, last, None),
    );
    let receipt = (!entries.is_empty()).then(|| ctx.chats.receipt(&binding.service_id, last));
    ctx.pusher
        .push(user, PUSH_CHANNEL, Value::Object(data), receipt);
}
