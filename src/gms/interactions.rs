//! Interactions the server controls (chats so far), as ORS's interaction
//! module sees them: which session owns each one, the agent reserved for
//! it, and its attached data. Interactions come from the chat backend: a
//! new chat in an interaction queue starts a session of that queue's
//! `application` (`[interaction_queues.NAME]`, e.g. `script:GMSInbound`)
//! and presents the interaction to it (`interaction.added`, then
//! `interaction.present`). Moving an interaction to another session
//! (`<ixn:attach>`) gives the new owner `interaction.added` and
//! `interaction.present` and the old one `interaction.deleted` and
//! `interaction.notcontrolled`. When the chat ends, its owner gets
//! `interaction.deleted` and any agent reservation is released.
//!
//! [`Mirror`], the extension's session hook, copies these events into each
//! session's `_genesys.ixn.interactions` object model before the session
//! sees them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Gms;
use super::continuity::Journal;
use crate::backends::chat::{ChatInfo, ChatState, ChatUpdate};
use crate::backends::routing::Reservation;
use crate::datamodel::{DataModel, InitialValue};
use crate::interpreter::{Event, EventKind};
use crate::server::{SessionHook, Sessions};

/// One interaction under the server's control (stored as JSON with
/// these field names, `crate::gms::continuity`).
#[derive(Debug, Clone, Serialize)]
pub struct Interaction {
    /// Interaction id (for a chat, the chat id).
    pub id: String,
    /// `voice`, `chat` or `email`.
    pub media: &'static str,
    /// The routing point or interaction queue it arrived at.
    pub queue: String,
    /// The session that controls it.
    pub owner: Option<String>,
    /// The agent reserved for it, once one was.
    pub reservation: Option<Reservation>,
    /// Attached data.
    pub user_data: Map<String, Value>,
    /// `queued`, `processing`, `routed`, `complete`.
    pub state: &'static str,
    /// Arrival time, ms since the Unix epoch.
    pub created_at: u64,
    /// Who it is from (a voice call's ANI, an e-mail's sender).
    pub from: String,
    /// Where it was addressed (a voice call's DNIS, an e-mail's recipient).
    pub to: String,
    /// Whether the chat backend hosts it (a chat that came through the
    /// backend); others (voice, e-mail, injected through `/sim`) exist only
    /// here.
    pub hosted: bool,
}

/// The media an interaction may have.
pub const MEDIA: [&str; 3] = ["voice", "chat", "email"];

/// The states an interaction goes through.
pub const STATES: [&str; 4] = ["queued", "processing", "routed", "complete"];

/// The state of an interaction while one session's route to an agent is
/// under way ([`route_to_agent`]); read back from the store as `queued`.
pub const ROUTING: &str = "routing";

/// An [`Interaction`] as read back from the store, before its media and
/// state are checked.
#[derive(Deserialize)]
struct Stored {
    id: String,
    media: String,
    queue: String,
    owner: Option<String>,
    reservation: Option<Reservation>,
    user_data: Map<String, Value>,
    state: String,
    created_at: u64,
    from: String,
    to: String,
    hosted: bool,
}

impl<'de> Deserialize<'de> for Interaction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Interaction, D::Error> {
        Interaction::try_from(Stored::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<Stored> for Interaction {
    type Error = String;

    fn try_from(s: Stored) -> Result<Interaction, String> {
        let media = media_named(&s.media).ok_or_else(|| format!("no media '{}'", s.media))?;
        // A route claimed when the server stopped died with it: the
        // interaction is queued again (the same reservation asked again
        // claims it again; `route_to_agent`).
        let state = if s.state == ROUTING {
            "queued"
        } else {
            STATES
                .into_iter()
                .find(|known| *known == s.state)
                .ok_or_else(|| format!("no interaction state '{}'", s.state))?
        };
        Ok(Interaction {
            id: s.id,
            media,
            queue: s.queue,
            owner: s.owner,
            reservation: s.reservation,
            user_data: s.user_data,
            state,
            created_at: s.created_at,
            from: s.from,
            to: s.to,
            hosted: s.hosted,
        })
    }
}

/// The media named `name` (any case), as the static name.
pub fn media_named(name: &str) -> Option<&'static str> {
    MEDIA
        .into_iter()
        .find(|m| m.eq_ignore_ascii_case(name.trim()))
}

impl Interaction {
    /// The interaction as `_genesys.ixn.interactions[id]` shows it
    /// (ORS *Interaction Interface* object model: `voice` for calls,
    /// `msgbased` for chats and e-mails, `chat` for chats).
    pub fn object_model(&self) -> Value {
        let mut m = Map::new();
        m.insert("interactionid".into(), Value::from(self.id.clone()));
        m.insert("g_uid".into(), Value::from(self.id.clone()));
        m.insert("media".into(), Value::from(self.media));
        m.insert("udata".into(), Value::Object(self.user_data.clone()));
        m.insert("tenantid".into(), Value::from(1));
        m.insert("created".into(), Value::from(self.created_at));
        m.insert("queue".into(), Value::from(self.queue.clone()));
        if self.media == "voice" {
            let mut voice = Map::new();
            voice.insert("callid".into(), Value::from(self.id.clone()));
            voice.insert("connid".into(), Value::from(self.id.clone()));
            voice.insert("ani".into(), Value::from(self.from.clone()));
            voice.insert("dnis".into(), Value::from(self.to.clone()));
            voice.insert("type".into(), Value::from("inbound"));
            voice.insert("media".into(), Value::from("voice"));
            voice.insert("state".into(), Value::from(self.state));
            m.insert("voice".into(), Value::Object(voice));
            return Value::Object(m);
        }
        let mut msgbased = Map::new();
        msgbased.insert("type".into(), Value::from(self.media));
        msgbased.insert("state".into(), Value::from(self.state));
        msgbased.insert("media".into(), Value::from(self.media));
        msgbased.insert("queue".into(), Value::from(self.queue.clone()));
        msgbased.insert("from".into(), Value::from(self.from.clone()));
        msgbased.insert("to".into(), Value::from(self.to.clone()));
        m.insert("msgbased".into(), Value::Object(msgbased));
        if self.media == "chat" {
            let mut chat = Map::new();
            chat.insert("type".into(), Value::from("chat"));
            chat.insert("state".into(), Value::from(self.state));
            chat.insert("media".into(), Value::from("chat"));
            m.insert("chat".into(), Value::Object(chat));
        }
        Value::Object(m)
    }
}

/// Why an interaction operation failed: an ORS error code and a message.
#[derive(Debug, Clone)]
pub struct IxnError {
    /// `unknown`, `invalidstate.<state>`, `invaliddestination`, `remote`.
    pub code: String,
    /// What happened.
    pub message: String,
}

impl IxnError {
    fn unknown(id: &str) -> IxnError {
        IxnError {
            code: "unknown".into(),
            message: format!("no interaction '{id}'"),
        }
    }
}

/// The interactions the server controls, by id; every change is also
/// written to the store (`crate::gms::continuity`).
pub struct Interactions {
    map: Mutex<HashMap<String, Interaction>>,
    journal: Journal,
}

impl Interactions {
    /// None yet; changes are written to `journal`.
    pub fn new(journal: Journal) -> Interactions {
        Interactions {
            map: Mutex::new(HashMap::new()),
            journal,
        }
    }

    /// Puts back the interactions read from the store at start.
    pub fn restore(&self, interactions: Vec<Interaction>) {
        if let Ok(mut m) = self.map.lock() {
            for i in interactions {
                m.insert(i.id.clone(), i);
            }
        }
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Interaction) -> T) -> Result<T, IxnError> {
        let mut map = self.map.lock().map_err(|_| IxnError::unknown(id))?;
        let ixn = map.get_mut(id).ok_or_else(|| IxnError::unknown(id))?;
        let answer = f(ixn);
        self.journal.put(id, ixn);
        Ok(answer)
    }

    /// A copy of one interaction.
    pub fn get(&self, id: &str) -> Option<Interaction> {
        self.map.lock().ok().and_then(|m| m.get(id).cloned())
    }

    /// How many interactions are under control.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a new chat the chat backend hosts (also one found again
    /// after a restart: the server had not recorded it yet).
    pub fn register(&self, chat: &ChatInfo) -> Interaction {
        self.insert(Interaction {
            id: chat.chat_id.clone(),
            media: "chat",
            queue: chat.queue.clone(),
            owner: None,
            reservation: None,
            user_data: chat.user_data.clone(),
            state: "queued",
            created_at: chat.started_at_ms,
            from: String::new(),
            to: String::new(),
            hosted: true,
        })
    }

    /// Records an interaction that arrived from outside the chat backend
    /// (`POST /sim/interactions`): a new id, state `queued`.
    pub fn inject(&self, arrival: Arrival) -> Interaction {
        self.insert(Interaction {
            id: crate::ids::object_id(),
            media: arrival.media,
            queue: arrival.queue,
            owner: None,
            reservation: None,
            user_data: arrival.user_data,
            state: "queued",
            created_at: crate::host::wall_clock_ms(),
            from: arrival.from,
            to: arrival.to,
            hosted: false,
        })
    }

    fn insert(&self, ixn: Interaction) -> Interaction {
        if let Ok(mut m) = self.map.lock() {
            self.journal.put(&ixn.id, &ixn);
            m.insert(ixn.id.clone(), ixn.clone());
        }
        ixn
    }

    /// Copies of the interactions `session` controls.
    pub fn owned_by(&self, session: &str) -> Vec<Interaction> {
        self.map
            .lock()
            .map(|m| {
                m.values()
                    .filter(|i| i.owner.as_deref() == Some(session))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `session` controls any interaction.
    pub fn any_owned_by(&self, session: &str) -> bool {
        self.map
            .lock()
            .map(|m| m.values().any(|i| i.owner.as_deref() == Some(session)))
            .unwrap_or(false)
    }

    /// Copies of every interaction, oldest first.
    pub fn list(&self) -> Vec<Interaction> {
        let mut all: Vec<Interaction> = self
            .map
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    /// Makes `session` the owner; returns the previous owner.
    pub fn set_owner(&self, id: &str, session: Option<&str>) -> Result<Option<String>, IxnError> {
        self.with(id, |i| {
            std::mem::replace(&mut i.owner, session.map(str::to_string))
        })
    }

    /// Clears the owner if it is still `session`; answers whether it was.
    pub fn let_go(&self, id: &str, session: &str) -> Result<bool, IxnError> {
        self.with(id, |i| {
            let owned = i.owner.as_deref() == Some(session);
            if owned {
                i.owner = None;
            }
            owned
        })
    }

    /// Sets the interaction's state.
    pub fn set_state(&self, id: &str, state: &'static str) -> Result<(), IxnError> {
        self.with(id, |i| i.state = state)
    }

    /// Remembers the agent reserved for it; returns the one it replaces.
    /// An interaction being routed keeps its agent (`invalidstate.routed`):
    /// the reservation is the route's claim ([`route_to_agent`]).
    pub fn set_reservation(
        &self,
        id: &str,
        reservation: Reservation,
    ) -> Result<Option<Reservation>, IxnError> {
        self.with(id, |i| {
            if i.state == ROUTING {
                return Err(IxnError {
                    code: "invalidstate.routed".into(),
                    message: format!("interaction '{id}' is already routed"),
                });
            }
            Ok(i.reservation.replace(reservation))
        })?
    }

    /// Adds attached data.
    pub fn attach_data(&self, id: &str, data: Map<String, Value>) -> Result<(), IxnError> {
        self.with(id, |i| i.user_data.extend(data))
    }

    /// Changes an interaction and tells sessions of it in one write
    /// ([`Sessions::post_durably`]): `f` changes it and returns an answer
    /// and the events (target session, event) to send. So a crash never
    /// keeps the change without the events, or the events without it.
    pub fn change_telling<T>(
        &self,
        id: &str,
        sessions: &Sessions,
        f: impl FnOnce(&mut Interaction) -> (T, Vec<(String, Event)>),
    ) -> Result<T, IxnError> {
        let mut map = self.map.lock().map_err(|_| IxnError::unknown(id))?;
        let ixn = map.get_mut(id).ok_or_else(|| IxnError::unknown(id))?;
        let (answer, events) = f(ixn);
        sessions.post_durably(events, self.journal.put_statements(id, ixn));
        Ok(answer)
    }

    /// Forgets an interaction and sends the events `tell` gives for it,
    /// in one write (as [`Interactions::change_telling`]).
    pub fn remove_telling(
        &self,
        id: &str,
        sessions: &Sessions,
        tell: impl FnOnce(&Interaction) -> Vec<(String, Event)>,
    ) -> Option<Interaction> {
        let mut m = self.map.lock().ok()?;
        let gone = m.remove(id)?;
        sessions.post_durably(tell(&gone), self.journal.remove_statements(id));
        Some(gone)
    }

    /// Forgets an interaction.
    pub fn remove(&self, id: &str) -> Option<Interaction> {
        let mut m = self.map.lock().ok()?;
        let gone = m.remove(id)?;
        self.journal.remove(id);
        Some(gone)
    }

    /// Checks that `session` controls the interaction.
    pub fn check_owner(&self, id: &str, session: &str) -> Result<Interaction, IxnError> {
        let ixn = self.get(id).ok_or_else(|| IxnError::unknown(id))?;
        if ixn.owner.as_deref() != Some(session) {
            return Err(IxnError {
                code: "invalidstate.notcontrolled".into(),
                message: format!("interaction '{id}' is not controlled by this session"),
            });
        }
        Ok(ixn)
    }
}

/// An interaction arriving from outside (the simulator's admin API).
#[derive(Debug, Clone)]
pub struct Arrival {
    /// `voice`, `chat` or `email`.
    pub media: &'static str,
    /// The routing point or interaction queue (a `[queues.NAME]`).
    pub queue: String,
    /// Attached data.
    pub user_data: Map<String, Value>,
    /// ANI or sender.
    pub from: String,
    /// DNIS or recipient.
    pub to: String,
}

/// An interaction event for a session: `name` with `interactionid`, the
/// interaction's object model under `interaction`, and `extra` fields.
pub fn interaction_event(name: &str, ixn: &Interaction, extra: Map<String, Value>) -> Event {
    let mut data = Map::new();
    data.insert("interactionid".into(), Value::from(ixn.id.clone()));
    data.insert("interaction".into(), ixn.object_model());
    data.extend(extra);
    let mut event = Event::new(name.to_string(), EventKind::External);
    event.data = Some(Value::Object(data));
    event
}

/// Gives the interaction to `session`: it becomes the owner and gets
/// `interaction.added` then `interaction.present`; a previous owner gets
/// `interaction.deleted` (`resultof` = `reason`) and
/// `interaction.notcontrolled`.
pub fn present(ctx: &Gms, id: &str, session: &str, reason: &str) -> Result<(), IxnError> {
    ctx.interactions.change_telling(id, &ctx.sessions, |ixn| {
        let previous = ixn.owner.replace(session.to_string());
        let mut events = Vec::new();
        if let Some(old) = previous.filter(|old| old != session) {
            events.extend(withdrawal(ixn, &old, reason));
        }
        for name in ["interaction.added", "interaction.present"] {
            events.push((
                session.to_string(),
                interaction_event(name, ixn, Map::new()),
            ));
        }
        ((), events)
    })
}

/// Presents the interaction again to `owner` (`interaction.added` then
/// `interaction.present`) if `owner` still controls it; answers whether
/// it did. A restart uses it for an owner that may not have kept the
/// first presentation: the owner it read may have been replaced since
/// (a callback session's `ixn:attach`), and the session that took over
/// must not lose the interaction to a repeat meant for the old one.
pub fn present_again(ctx: &Gms, id: &str, owner: &str) -> Result<bool, IxnError> {
    ctx.interactions.change_telling(id, &ctx.sessions, |ixn| {
        if ixn.owner.as_deref() != Some(owner) {
            return (false, Vec::new());
        }
        let events = ["interaction.added", "interaction.present"]
            .into_iter()
            .map(|name| (owner.to_string(), interaction_event(name, ixn, Map::new())))
            .collect();
        (true, events)
    })
}

/// `<ixn:attach>`: as [`present`] (reason `attach`), but an interaction
/// another session is routing right now stays where it is
/// (`invalidstate.routed`): taken over then, it would be served twice.
pub fn attach(ctx: &Gms, id: &str, session: &str) -> Result<(), IxnError> {
    ctx.interactions.change_telling(id, &ctx.sessions, |ixn| {
        if ixn.state == ROUTING && ixn.owner.as_deref() != Some(session) {
            let refused = IxnError {
                code: "invalidstate.routed".into(),
                message: format!("interaction '{id}' is being routed by another session"),
            };
            return (Err(refused), Vec::new());
        }
        let previous = ixn.owner.replace(session.to_string());
        let mut events = Vec::new();
        if let Some(old) = previous.filter(|old| old != session) {
            events.extend(withdrawal(ixn, &old, "attach"));
        }
        for name in ["interaction.added", "interaction.present"] {
            events.push((
                session.to_string(),
                interaction_event(name, ixn, Map::new()),
            ));
        }
        (Ok(()), events)
    })?
}

/// The events that tell `session` it no longer controls the interaction
/// (`interaction.deleted` and `interaction.notcontrolled`, `resultof` =
/// `reason`).
fn withdrawal(ixn: &Interaction, session: &str, reason: &str) -> Vec<(String, Event)> {
    let mut extra = Map::new();
    extra.insert("resultof".into(), Value::from(reason));
    ["interaction.deleted", "interaction.notcontrolled"]
        .into_iter()
        .map(|name| {
            (
                session.to_string(),
                interaction_event(name, ixn, extra.clone()),
            )
        })
        .collect()
}

/// Follows the chat backend's updates for the life of the server: new
/// chats start their queue's strategy; ended chats are withdrawn from
/// their owner and their agent released.
pub async fn follow_chats(ctx: Arc<Gms>) {
    let mut updates = ctx.backends.chat.subscribe();
    loop {
        match updates.recv().await {
            Ok(ChatUpdate::Created { chat }) => {
                if chat.state != ChatState::Ended {
                    let ctx = ctx.clone();
                    tokio::spawn(async move { arrive(ctx, chat).await });
                }
            }
            Ok(ChatUpdate::Ended { chat_id, reason }) => chat_ended(&ctx, &chat_id, &reason).await,
            Ok(ChatUpdate::Entry { .. }) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "chat updates were missed (the server fell behind)"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// A chat entered an interaction queue: start the queue's strategy with
/// the interaction presented to it.
async fn arrive(ctx: Arc<Gms>, chat: ChatInfo) {
    let ixn = ctx.interactions.register(&chat);
    hand_to_strategy(&ctx, &chat, &ixn).await;
}

/// Starts the strategy of the chat's interaction queue and presents the
/// registered interaction to it; a chat no strategy can take ends
/// (see `unroutable`).
pub async fn hand_to_strategy(ctx: &Gms, chat: &ChatInfo, ixn: &Interaction) {
    let Some(application) = ctx.settings.application_for(&chat.queue) else {
        ctx.interactions.remove(&ixn.id);
        let why = format!("interaction queue '{}' has no application", chat.queue);
        unroutable(ctx, chat, &why).await;
        return;
    };
    if let Err(e) = start_strategy(ctx, ixn, &application).await {
        let why = format!(
            "the strategy of interaction queue '{}' ({application}) could not start: {e}",
            chat.queue
        );
        unroutable(ctx, chat, &why).await;
    }
}

/// A chat no strategy can route: the error is logged, the callback
/// record the chat was opened for (if any) becomes `COMPLETED` with
/// `_callback_reason` `ROUTING_FAILED` and the reason in
/// `_failure_reason`, its session is ended, and the chat is ended with a
/// message to the customer.
async fn unroutable(ctx: &Gms, chat: &ChatInfo, why: &str) {
    tracing::error!(chat = %chat.chat_id, queue = %chat.queue, reason = %why,
        "a chat could not be routed; ending it");
    // The chat carries its callback's id (the chat may arrive before
    // the chat API has recorded its binding).
    let service_id = chat
        .user_data
        .get("GMS_ServiceID")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| ctx.chats.of_chat(&chat.chat_id).map(|b| b.service_id));
    if let Some(service_id) = service_id {
        let mut extra = Map::new();
        extra.insert("_failure_reason".into(), Value::from(why));
        match ctx
            .records
            .update(
                &service_id,
                super::records::COMPLETED,
                Some("ROUTING_FAILED"),
                extra,
            )
            .await
        {
            Ok(Some((row, true))) if !row.session_id.is_empty() => {
                let _ = ctx.sessions.send(
                    &row.session_id,
                    crate::server::worker::Command::Terminate {
                        id: row.session_id.clone(),
                        reply: None,
                    },
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(record = %service_id, error = %e,
                "the callback record of an unroutable chat could not be marked COMPLETED"),
        }
    }
    let _ = ctx
        .backends
        .chat
        .terminate(
            &chat.chat_id,
            "Sorry, this chat cannot be connected to an agent now. Please try again later.",
        )
        .await;
}

/// Starts `application` (a `script:` object or document URLs) for an
/// interaction that arrived, with `interactionid`, `queue` and `media` in
/// its data, and presents the interaction to it. Returns the session id;
/// on failure the interaction is forgotten and the reason returned.
pub async fn start_strategy(
    ctx: &Gms,
    ixn: &Interaction,
    application: &str,
) -> Result<String, String> {
    let mut data = Map::new();
    data.insert("interactionid".into(), Value::from(ixn.id.clone()));
    data.insert("queue".into(), Value::from(ixn.queue.clone()));
    data.insert("media".into(), Value::from(ixn.media));
    // The strategy owns the interaction before it starts (the owner's
    // write is queued before the session's): a restart that finds the
    // session stored also finds it the owner, and presents the
    // interaction to it rather than starting a second strategy.
    let id = ctx.sessions.new_session_id();
    ctx.interactions
        .set_owner(&ixn.id, Some(&id))
        .map_err(|e| e.message)?;
    match ctx
        .sessions
        .start_with_id(id, application, data, None)
        .await
    {
        Ok(view) if view.status != "running" => {
            // The strategy ended in its first macrostep, before the
            // interaction reached it: nothing controls it any more (a
            // hosted chat stays in its chat, any other ends).
            if ixn.hosted {
                let _ = ctx.interactions.set_owner(&ixn.id, None);
            } else {
                chat_ended(ctx, &ixn.id, "strategy_ended").await;
            }
            Ok(view.sessionid)
        }
        Ok(view) => {
            present(ctx, &ixn.id, &view.sessionid, "arrival").map_err(|e| e.message)?;
            Ok(view.sessionid)
        }
        Err(e) => {
            ctx.interactions.remove(&ixn.id);
            Err(e.message)
        }
    }
}

/// Ends an interaction: a hosted chat through the chat backend (whose
/// `Ended` update withdraws it), any other at once: its owner gets
/// `interaction.deleted` (`resultof` = `reason`) and its agent is released.
pub async fn end(ctx: &Gms, id: &str, reason: &str) -> Result<(), IxnError> {
    let ixn = ctx
        .interactions
        .get(id)
        .ok_or_else(|| IxnError::unknown(id))?;
    if ixn.hosted {
        return ctx
            .backends
            .chat
            .terminate(id, reason)
            .await
            .map_err(|e| IxnError {
                code: "remote".into(),
                message: e.to_string(),
            });
    }
    chat_ended(ctx, id, reason).await;
    Ok(())
}

/// An interaction ended (for a chat, the chat backend said so): it is
/// withdrawn from its owner (`interaction.deleted`, `resultof` =
/// `reason`) and its agent released.
pub async fn chat_ended(ctx: &Gms, chat_id: &str, reason: &str) {
    let Some(ixn) = ctx
        .interactions
        .remove_telling(chat_id, &ctx.sessions, |ixn| match &ixn.owner {
            Some(owner) => withdrawal(ixn, owner, reason),
            None => Vec::new(),
        })
    else {
        return;
    };
    if let Some(reservation) = &ixn.reservation {
        ctx.backends
            .routing
            .release(&reservation.reservation_id)
            .await;
    }
}

/// Routes an interaction to a reserved agent for `session`, which must
/// control it (or nothing does): the reservation is confirmed (the agent keeps the capacity
/// until the chat ends) and the chat delivered to them. On failure the
/// caller releases the reservation.
///
/// The route is claimed first, atomically with the owner check: the
/// interaction becomes `routing` with this reservation, and another
/// session's route (or take-over) is refused `invalidstate.routed` until
/// this one fails. Without the claim, an inbound strategy routing to its
/// overflow group and a callback session taking the chat over could both
/// deliver it, to two agents (found by the kill loop after a restart).
/// The same reservation asked again (an answer lost to a restart) goes on.
pub async fn route_to_agent(
    ctx: &Gms,
    id: &str,
    reservation: &Reservation,
    session: &str,
) -> Result<(), IxnError> {
    let claimed = ctx.interactions.change_telling(id, &ctx.sessions, |ixn| {
        let ours = ixn
            .reservation
            .as_ref()
            .is_some_and(|r| r.reservation_id == reservation.reservation_id);
        let answer = if ixn.owner.as_deref().is_some_and(|owner| owner != session) {
            Err(IxnError {
                code: "invalidstate.notcontrolled".into(),
                message: format!("interaction '{id}' is not controlled by this session"),
            })
        } else if ixn.state == "routed" && ours {
            Ok(None)
        } else if matches!(ixn.state, ROUTING | "routed") && !ours {
            Err(IxnError {
                code: "invalidstate.routed".into(),
                message: format!("interaction '{id}' is already routed"),
            })
        } else {
            let previous = ixn.reservation.replace(reservation.clone());
            let before = std::mem::replace(&mut ixn.state, ROUTING);
            Ok(Some((before, previous)))
        };
        (answer, Vec::new())
    })??;
    // Asked again for the same agent after it was routed: done already.
    let Some((before, previous)) = claimed else {
        return Ok(());
    };
    let routed = deliver_to_agent(ctx, id, reservation).await;
    let _ = ctx.interactions.change_telling(id, &ctx.sessions, |ixn| {
        let still_ours = ixn.state == ROUTING
            && ixn
                .reservation
                .as_ref()
                .is_some_and(|r| r.reservation_id == reservation.reservation_id);
        if still_ours {
            if routed.is_ok() {
                ixn.state = "routed";
            } else {
                ixn.state = if before == ROUTING { "queued" } else { before };
                ixn.reservation = previous;
            }
        }
        ((), Vec::new())
    });
    routed
}

/// Confirms the reservation and, for a hosted chat, delivers it to the
/// reserved agent ([`route_to_agent`] holds the claim meanwhile).
async fn deliver_to_agent(ctx: &Gms, id: &str, reservation: &Reservation) -> Result<(), IxnError> {
    let hosted = ctx
        .interactions
        .get(id)
        .ok_or_else(|| IxnError::unknown(id))?
        .hosted;
    ctx.backends
        .routing
        .confirm(&reservation.reservation_id)
        .await
        .map_err(|e| IxnError {
            code: "invaliddestination".into(),
            message: e.to_string(),
        })?;
    if hosted {
        let agent = crate::backends::chat::AgentRef {
            agent_id: reservation.agent_id.clone(),
            nickname: reservation.agent_name.clone(),
        };
        ctx.backends
            .chat
            .deliver(id, agent)
            .await
            .map_err(|e| IxnError {
                code: match e {
                    crate::backends::chat::ChatError::NotFound(_) => "unknown".into(),
                    crate::backends::chat::ChatError::Ended => "invalidstate.ended".into(),
                    _ => "remote".into(),
                },
                message: e.to_string(),
            })?;
    }
    Ok(())
}

/// After an interaction the chat backend does not host was routed to an
/// agent it has left the routing point: its owner gets
/// `interaction.deleted` (`resultof` `routed`) and no longer controls it.
/// The interaction stays known, with its agent busy, until it ends
/// (`DELETE /sim/interactions/{id}`). A hosted chat stays with its session
/// until the chat ends.
pub fn leave_after_routing(ctx: &Gms, id: &str) {
    let Some(ixn) = ctx.interactions.get(id) else {
        return;
    };
    if ixn.hosted {
        return;
    }
    let _ = ctx.interactions.change_telling(id, &ctx.sessions, |ixn| {
        let Some(owner) = ixn.owner.take() else {
            return ((), Vec::new());
        };
        let mut extra = Map::new();
        extra.insert("resultof".into(), Value::from("routed"));
        (
            (),
            vec![(owner, interaction_event("interaction.deleted", ixn, extra))],
        )
    });
}

/// A session ended: its waiting `queue:submit`s are cancelled (so they
/// cannot take an agent for a strategy that is gone), and the interactions
/// it still controlled are let go: a hosted chat stays in its chat with no
/// controlling session, any other interaction ends (`resultof`
/// `strategy_ended`) and its agent, if one was reserved, is released.
pub async fn session_ended(ctx: Arc<Gms>, session: String) {
    for requestid in ctx.submits.of_session(&session) {
        ctx.backends.routing.cancel(&requestid).await;
        ctx.submits.finish(&requestid);
    }
    for ixn in ctx.interactions.owned_by(&session) {
        // Only if it still does: another session may have taken it over
        // since the list was made (an attach racing the end).
        if ixn.hosted {
            let _ = ctx.interactions.let_go(&ixn.id, &session);
        } else if matches!(ctx.interactions.let_go(&ixn.id, &session), Ok(true)) {
            chat_ended(&ctx, &ixn.id, "strategy_ended").await;
        }
    }
}

/// Moves a pending interaction change into `_genesys.ixn.interactions`
/// (fixed text, so it is compiled once per context).
const MIRROR_SCRIPT: &str = "(function (ixn) { var d = ixn.incoming; delete ixn.incoming; \
     if (d.deleted) { delete ixn.interactions[d.id]; } \
     else { ixn.interactions[d.id] = d.interaction; \
     if (ixn.firstixnid === undefined) { ixn.firstixnid = d.id; } } })(_genesys.ixn)";

/// Mirrors `interaction.added`/`present`/`deleted` events into the
/// session's `_genesys.ixn` object model before the session sees them, and
/// lets go of what a session that ended held ([`session_ended`]).
pub struct Mirror(pub Arc<Gms>);

impl SessionHook for Mirror {
    /// The `<queue:submit>`s a session restored after a restart still
    /// waits for are asked again ([`submit::resume`]); those read back
    /// that it no longer waits for (answered before the server stopped)
    /// are dropped. A submit it waits for that was never recorded (the
    /// server stopped first) is answered `interrupted` by the server; the
    /// routing backend is told to cancel it, so that an agent it may have
    /// reserved for it is not held until the reservation times out.
    ///
    /// [`submit::resume`]: crate::gms::modules::queue::submit::resume
    fn resume_requests(&self, session_id: &str, pending: &[(&str, &str)]) -> Vec<String> {
        let mut resumed = Vec::new();
        let waits_for = |id: &str| pending.iter().any(|(p, _)| *p == id);
        for submit in self.0.submits.take_restored_of(session_id) {
            let requestid = submit.request.request_id.clone();
            if !waits_for(&requestid) {
                self.0.submits.finish(&requestid);
                continue;
            }
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(crate::gms::modules::queue::submit::resume(
                    self.0.clone(),
                    submit,
                ));
                resumed.push(requestid);
            }
        }
        let unrecorded: Vec<String> = pending
            .iter()
            .filter(|(id, name)| *name == "queue.submit" && !resumed.iter().any(|r| r == id))
            .map(|(id, _)| id.to_string())
            .collect();
        if !unrecorded.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let ctx = self.0.clone();
            runtime.spawn(async move {
                for requestid in unrecorded {
                    ctx.backends.routing.cancel(&requestid).await;
                }
            });
        }
        resumed
    }

    fn session_ended(&self, session_id: &str) {
        let owns_something = self.0.interactions.any_owned_by(session_id)
            || !self.0.submits.of_session(session_id).is_empty();
        if owns_something && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(session_ended(self.0.clone(), session_id.to_string()));
        }
    }

    fn before_event(&self, dm: &mut dyn DataModel, event: &Event) {
        let deleted = &*event.name == "interaction.deleted";
        if !deleted && !matches!(&*event.name, "interaction.added" | "interaction.present") {
            return;
        }
        let Some(Value::Object(data)) = &event.data else {
            return;
        };
        let (Some(id), Some(interaction)) = (data.get("interactionid"), data.get("interaction"))
        else {
            return;
        };
        let mut change = Map::new();
        change.insert("id".into(), id.clone());
        change.insert("deleted".into(), Value::Bool(deleted));
        change.insert("interaction".into(), interaction.clone());
        let pending = InitialValue::Json(Value::Object(change));
        if dm.assign_text("_genesys.ixn.incoming", &pending).is_ok()
            && let Err(e) = dm.eval_text(MIRROR_SCRIPT)
        {
            tracing::debug!(error = %e.message, "interaction object model not updated");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gms::continuity::{Journal, Table};

    #[test]
    fn an_ended_owner_lets_go_only_of_what_it_still_owns() {
        let interactions = Interactions::new(Journal::none(Table::Interactions));
        let ixn = interactions.inject(Arrival {
            media: "chat",
            queue: "chat_inbound".into(),
            user_data: Map::new(),
            from: String::new(),
            to: String::new(),
        });
        interactions.set_owner(&ixn.id, Some("strategy")).unwrap();
        // The strategy ends; before its clean-up runs, another session
        // takes the interaction over.
        let listed = interactions.owned_by("strategy");
        assert_eq!(listed.len(), 1);
        interactions.set_owner(&ixn.id, Some("callback")).unwrap();
        assert_eq!(interactions.let_go(&ixn.id, "strategy").ok(), Some(false));
        assert_eq!(
            interactions.get(&ixn.id).and_then(|i| i.owner),
            Some("callback".to_string())
        );
        assert_eq!(interactions.let_go(&ixn.id, "callback").ok(), Some(true));
        assert_eq!(interactions.get(&ixn.id).and_then(|i| i.owner), None);
    }

    /// A route claimed when the server stopped is not claimed after the
    /// restart: the interaction reads back queued, and can be routed (by
    /// the same reservation asked again, or another).
    #[test]
    fn a_route_under_way_at_a_crash_reads_back_queued() {
        let stored = serde_json::json!({"id": "c1", "media": "chat", "queue": "chat_inbound",
            "owner": "s1", "reservation": null, "user_data": {}, "state": "routing",
            "created_at": 1, "from": "", "to": "", "hosted": true});
        let ixn: Interaction = serde_json::from_value(stored).expect("decodes");
        assert_eq!(ixn.state, "queued");
        let unknown = serde_json::json!({"id": "c1", "media": "chat", "queue": "q",
            "owner": null, "reservation": null, "user_data": {}, "state": "lost",
            "created_at": 1, "from": "", "to": "", "hosted": true});
        assert!(serde_json::from_value::<Interaction>(unknown).is_err());
    }
}
