//! The embedded chat server: chats with parties (the customer, agents,
//! system parties), numbered transcripts, and a broadcast stream of
//! [`ChatUpdate`]s.
//!
//! # Life of a chat
//!
//! `create` makes a chat (`Waiting`) with the customer joined (a
//! `Notice.Joined` entry; the nickname is `NewChat::nickname`, or the
//! first and last names, or `Customer`). `deliver` makes it `Alerting`
//! and puts it in the agent's list. The agent joins when they accept
//! (`Notice.Joined` from a [`PartyType::Agent`] party, state `Connected`)
//! and then sends the greeting, if one is set. Agents accept by
//! themselves when auto-accept is on (the global setting, or the agent's
//! own in the routing simulator), after the accept delay; otherwise
//! through [`ChatSim::accept`] (the admin API).
//!
//! When the customer leaves, the chat ends with reason `customer`. When an
//! agent leaves and no other agent remains, the chat ends with reason
//! `agent` (the simulator's agents do not hand chats back to a queue).
//! `terminate` ends it with the reason given (`terminated` when empty).
//! Any change to an ended chat fails with [`ChatError::Ended`];
//! `transcript` and `info` still answer.
//!
//! Ended chats stay readable for the retention period
//! (`ended_chat_retention_secs`), then are dropped the next time the
//! simulator is used, so memory does not grow without bound.
//!
//! # Timers and updates
//!
//! The delayed accept runs on the simulator's background thread (see
//! [`super::background`]), never on the caller's runtime; with a delay of
//! 0 the agent joins inside `deliver`. Updates are sent while the chat
//! state is locked, so every subscriber sees them in transcript order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::broadcast;

use super::chat::{
    AgentRef, ChatBackend, ChatError, ChatInfo, ChatState, ChatUpdate, EntryKind, NewChat,
    PartyType, TranscriptEntry, TranscriptPage,
};
use super::routing_sim::RoutingSim;
use super::settings::SimulatorSettings;
use super::{BoxFuture, SimError, lock, new_id, now_ms};

/// How many updates a slow subscriber may fall behind before missing some.
pub const UPDATE_CHANNEL_CAPACITY: usize = 65536;

/// A party in a chat.
struct Party {
    nickname: String,
    kind: PartyType,
    agent_id: Option<String>,
    present: bool,
}

/// One chat.
struct Chat {
    info: ChatInfo,
    parties: IndexMap<String, Party>,
    transcript: Vec<TranscriptEntry>,
    /// Agents it was delivered to who have not joined yet.
    invited: Vec<AgentRef>,
}

impl Chat {
    /// Appends an entry from a party and announces it; returns its
    /// position.
    fn append(
        &mut self,
        updates: &broadcast::Sender<ChatUpdate>,
        kind: EntryKind,
        party_id: &str,
        text: &str,
    ) -> u64 {
        let (nickname, party_type) = self
            .parties
            .get(party_id)
            .map_or((String::new(), PartyType::External), |p| {
                (p.nickname.clone(), p.kind)
            });
        let entry = TranscriptEntry {
            position: self.transcript.len() as u64 + 1,
            kind,
            nickname,
            text: text.to_string(),
            party_id: party_id.to_string(),
            party_type,
            at_ms: now_ms(),
        };
        let position = entry.position;
        self.transcript.push(entry.clone());
        let _ = updates.send(ChatUpdate::Entry {
            chat_id: self.info.chat_id.clone(),
            entry,
        });
        position
    }

    /// A party that is present, for an action.
    fn present_party(&self, party_id: &str) -> Result<&Party, ChatError> {
        let party = self.parties.get(party_id).ok_or_else(|| {
            ChatError::NotFound(format!(
                "no party '{party_id}' in chat '{}'",
                self.info.chat_id
            ))
        })?;
        if !party.present {
            return Err(ChatError::Invalid(format!(
                "party '{party_id}' has left the chat"
            )));
        }
        Ok(party)
    }

    /// The present party of an agent.
    fn agent_party(&self, agent_id: &str) -> Option<&str> {
        self.parties
            .iter()
            .find(|(_, p)| p.present && p.agent_id.as_deref() == Some(agent_id))
            .map(|(id, _)| id.as_str())
    }

    fn ended(&self) -> bool {
        self.info.state == ChatState::Ended
    }
}

/// Everything behind the chat simulator's lock.
struct State {
    chats: HashMap<String, Chat>,
    /// Chats delivered to each agent, in delivery order.
    by_agent: HashMap<String, Vec<String>>,
    /// Ended chats, oldest first, with when they ended.
    ended: VecDeque<(Instant, String)>,
    retention: Duration,
    auto_accept: bool,
    accept_delay: Duration,
    greeting: String,
}

impl State {
    /// Drops chats that ended longer ago than the retention period.
    fn purge(&mut self) {
        let now = Instant::now();
        while let Some((at, _)) = self.ended.front() {
            if now.duration_since(*at) < self.retention {
                break;
            }
            let Some((_, id)) = self.ended.pop_front() else {
                break;
            };
            if let Some(chat) = self.chats.remove(&id) {
                let agents = chat
                    .parties
                    .values()
                    .filter_map(|p| p.agent_id.clone())
                    .chain(chat.info.agent_id.clone());
                for agent in agents {
                    if let Some(list) = self.by_agent.get_mut(&agent) {
                        list.retain(|c| *c != id);
                        if list.is_empty() {
                            self.by_agent.remove(&agent);
                        }
                    }
                }
            }
        }
    }

    fn chat(&self, id: &str) -> Result<&Chat, ChatError> {
        self.chats
            .get(id)
            .ok_or_else(|| ChatError::NotFound(format!("no chat '{id}'")))
    }

    /// A chat that has not ended, for a change.
    fn live_chat(&mut self, id: &str) -> Result<&mut Chat, ChatError> {
        let chat = self
            .chats
            .get_mut(id)
            .ok_or_else(|| ChatError::NotFound(format!("no chat '{id}'")))?;
        if chat.ended() {
            return Err(ChatError::Ended);
        }
        Ok(chat)
    }

    /// Ends a chat and announces it.
    fn end(&mut self, updates: &broadcast::Sender<ChatUpdate>, id: &str, reason: &str) {
        if let Some(chat) = self.chats.get_mut(id)
            && !chat.ended()
        {
            chat.info.state = ChatState::Ended;
            chat.invited.clear();
            self.ended.push_back((Instant::now(), id.to_string()));
            let _ = updates.send(ChatUpdate::Ended {
                chat_id: id.to_string(),
                reason: reason.to_string(),
            });
        }
    }

    /// A party leaves; the chat ends when it was the customer or the last
    /// agent.
    fn leave(
        &mut self,
        updates: &broadcast::Sender<ChatUpdate>,
        chat_id: &str,
        party_id: &str,
    ) -> Result<(), ChatError> {
        let chat = self.live_chat(chat_id)?;
        let kind = chat.present_party(party_id)?.kind;
        chat.append(updates, EntryKind::Left, party_id, "");
        if let Some(party) = chat.parties.get_mut(party_id) {
            party.present = false;
        }
        let no_agent_left = !chat
            .parties
            .values()
            .any(|p| p.present && p.kind == PartyType::Agent);
        match kind {
            PartyType::Client => self.end(updates, chat_id, "customer"),
            PartyType::Agent if no_agent_left => self.end(updates, chat_id, "agent"),
            _ => {}
        }
        Ok(())
    }

    /// An agent the chat was delivered to joins it and greets the
    /// customer; returns the agent's party id.
    fn accept(
        &mut self,
        updates: &broadcast::Sender<ChatUpdate>,
        chat_id: &str,
        agent_id: &str,
    ) -> Result<String, SimError> {
        let greeting = self.greeting.clone();
        let chat = self.live_chat(chat_id).map_err(sim_error)?;
        if chat.agent_party(agent_id).is_some() {
            return Err(SimError::Conflict(format!(
                "agent '{agent_id}' has already joined chat '{chat_id}'"
            )));
        }
        let Some(index) = chat.invited.iter().position(|a| a.agent_id == agent_id) else {
            return Err(SimError::Conflict(format!(
                "chat '{chat_id}' is not waiting for agent '{agent_id}'"
            )));
        };
        let agent = chat.invited.remove(index);
        let nickname = if agent.nickname.trim().is_empty() {
            agent.agent_id.clone()
        } else {
            agent.nickname.clone()
        };
        let party_id = new_id();
        chat.parties.insert(
            party_id.clone(),
            Party {
                nickname: nickname.clone(),
                kind: PartyType::Agent,
                agent_id: Some(agent.agent_id.clone()),
                present: true,
            },
        );
        chat.info.state = ChatState::Connected;
        chat.info.agent_id = Some(agent.agent_id);
        chat.append(updates, EntryKind::Joined, &party_id, "");
        if !greeting.is_empty() {
            let customer = chat
                .parties
                .get(&chat.info.customer_party_id)
                .map(|p| p.nickname.clone())
                .unwrap_or_default();
            let text = greeting
                .replace("{customer}", &customer)
                .replace("{agent}", &nickname);
            chat.append(updates, EntryKind::Message, &party_id, &text);
        }
        Ok(party_id)
    }

    /// The present party of an agent in a chat delivered to them.
    fn agent_party(&self, agent_id: &str, chat_id: &str) -> Result<String, SimError> {
        let chat = self.chat(chat_id).map_err(sim_error)?;
        if let Some(party) = chat.agent_party(agent_id) {
            return Ok(party.to_string());
        }
        let delivered = self
            .by_agent
            .get(agent_id)
            .is_some_and(|chats| chats.iter().any(|c| c == chat_id));
        if !delivered {
            return Err(SimError::NotFound(format!(
                "chat '{chat_id}' was not delivered to agent '{agent_id}'"
            )));
        }
        if chat.ended() {
            return Err(SimError::Conflict(format!("chat '{chat_id}' has ended")));
        }
        Err(SimError::Conflict(format!(
            "agent '{agent_id}' is not in chat '{chat_id}'"
        )))
    }

    fn agent_chat(&self, agent_id: &str, chat_id: &str) -> Option<AgentChat> {
        let chat = self.chats.get(chat_id)?;
        Some(AgentChat {
            chat: chat.info.clone(),
            invited: chat.invited.iter().any(|a| a.agent_id == agent_id),
            party_id: chat.agent_party(agent_id).map(str::to_string),
            transcript: chat.transcript.clone(),
        })
    }
}

/// Maps a chat error to the admin API's.
fn sim_error(e: ChatError) -> SimError {
    match e {
        ChatError::NotFound(m) => SimError::NotFound(m),
        ChatError::Ended => SimError::Conflict("the chat has ended".to_string()),
        ChatError::Invalid(m) => SimError::Invalid(m),
        ChatError::Backend(m) => SimError::Conflict(m),
    }
}

/// A chat delivered to an agent, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentChat {
    /// The chat.
    pub chat: ChatInfo,
    /// Delivered and not accepted yet.
    pub invited: bool,
    /// The agent's party id while they are in the chat.
    pub party_id: Option<String>,
    /// The whole transcript.
    pub transcript: Vec<TranscriptEntry>,
}

/// The shared part the timer tasks hold weakly.
struct Inner {
    state: Mutex<State>,
    updates: broadcast::Sender<ChatUpdate>,
}

impl Inner {
    /// Locks the state, dropping expired ended chats first.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = lock(&self.state);
        state.purge();
        state
    }
}

/// The embedded chat server; see the module docs.
pub struct ChatSim {
    inner: Arc<Inner>,
    routing: Arc<RoutingSim>,
    timers: Handle,
}

impl ChatSim {
    /// A chat simulator with the settings' accept behaviour and greeting.
    /// It asks `routing`'s agents for their name and own auto-accept
    /// setting, and runs its timers on `routing`'s background thread.
    pub fn new(settings: &SimulatorSettings, routing: Arc<RoutingSim>) -> ChatSim {
        let (updates, _) = broadcast::channel(UPDATE_CHANNEL_CAPACITY);
        ChatSim {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    chats: HashMap::new(),
                    by_agent: HashMap::new(),
                    ended: VecDeque::new(),
                    retention: Duration::from_secs(settings.ended_chat_retention_secs),
                    auto_accept: settings.auto_accept,
                    accept_delay: Duration::from_millis(settings.accept_delay_ms),
                    greeting: settings.greeting.clone(),
                }),
                updates,
            }),
            timers: routing.timers(),
            routing,
        }
    }

    /// Sets how long ended chats stay readable.
    pub fn set_retention(&self, retention: Duration) {
        self.inner.state().retention = retention;
    }

    /// Sets whether agents without their own setting accept by themselves.
    pub fn set_auto_accept(&self, auto: bool) {
        self.inner.state().auto_accept = auto;
    }

    /// How many chats are kept (live and recently ended).
    pub fn chat_count(&self) -> usize {
        self.inner.state().chats.len()
    }

    /// The chats delivered to an agent (recently ended ones included), in
    /// delivery order, with their transcripts. Fails for an agent the
    /// routing simulator does not know and no chat was delivered to.
    pub fn agent_chats(&self, agent_id: &str) -> Result<Vec<AgentChat>, SimError> {
        let known = self.routing.agent_profile(agent_id).is_some();
        let state = self.inner.state();
        let Some(ids) = state.by_agent.get(agent_id) else {
            return if known {
                Ok(Vec::new())
            } else {
                Err(SimError::NotFound(format!("no agent '{agent_id}'")))
            };
        };
        Ok(ids
            .iter()
            .filter_map(|id| state.agent_chat(agent_id, id))
            .collect())
    }

    /// The agent joins a chat delivered to them (when auto-accept is off,
    /// or before it happens) and greets the customer.
    pub fn accept(&self, agent_id: &str, chat_id: &str) -> Result<AgentChat, SimError> {
        let mut state = self.inner.state();
        state.accept(&self.inner.updates, chat_id, agent_id)?;
        state
            .agent_chat(agent_id, chat_id)
            .ok_or_else(|| SimError::NotFound(format!("no chat '{chat_id}'")))
    }

    /// The agent sends a message; returns its position.
    pub fn agent_send(&self, agent_id: &str, chat_id: &str, text: &str) -> Result<u64, SimError> {
        let mut state = self.inner.state();
        let party = state.agent_party(agent_id, chat_id)?;
        send_in(&mut state, &self.inner.updates, chat_id, &party, text).map_err(sim_error)
    }

    /// The agent starts or stops typing; returns the notice's position.
    pub fn agent_typing(
        &self,
        agent_id: &str,
        chat_id: &str,
        started: bool,
    ) -> Result<u64, SimError> {
        let mut state = self.inner.state();
        let party = state.agent_party(agent_id, chat_id)?;
        typing_in(&mut state, &self.inner.updates, chat_id, &party, started).map_err(sim_error)
    }

    /// The agent leaves the chat (which ends it when no agent remains).
    pub fn agent_leave(&self, agent_id: &str, chat_id: &str) -> Result<AgentChat, SimError> {
        let mut state = self.inner.state();
        let party = state.agent_party(agent_id, chat_id)?;
        state
            .leave(&self.inner.updates, chat_id, &party)
            .map_err(sim_error)?;
        state
            .agent_chat(agent_id, chat_id)
            .ok_or_else(|| SimError::NotFound(format!("no chat '{chat_id}'")))
    }

    fn ready<T: Send + 'static>(value: T) -> BoxFuture<'static, T> {
        Box::pin(std::future::ready(value))
    }
}

/// A message from a present party.
fn send_in(
    state: &mut State,
    updates: &broadcast::Sender<ChatUpdate>,
    chat_id: &str,
    party_id: &str,
    text: &str,
) -> Result<u64, ChatError> {
    let chat = state.live_chat(chat_id)?;
    chat.present_party(party_id)?;
    if text.trim().is_empty() {
        return Err(ChatError::Invalid("the message is empty".to_string()));
    }
    Ok(chat.append(updates, EntryKind::Message, party_id, text))
}

/// A typing notice from a present party.
fn typing_in(
    state: &mut State,
    updates: &broadcast::Sender<ChatUpdate>,
    chat_id: &str,
    party_id: &str,
    started: bool,
) -> Result<u64, ChatError> {
    let chat = state.live_chat(chat_id)?;
    chat.present_party(party_id)?;
    let kind = if started {
        EntryKind::TypingStarted
    } else {
        EntryKind::TypingStopped
    };
    Ok(chat.append(updates, kind, party_id, ""))
}

impl ChatBackend for ChatSim {
    fn create(&self, new: NewChat) -> BoxFuture<'_, Result<ChatInfo, ChatError>> {
        let nickname = [new.nickname.trim().to_string(), {
            let full = format!("{} {}", new.first_name.trim(), new.last_name.trim());
            full.trim().to_string()
        }]
        .into_iter()
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| "Customer".to_string());
        let chat_id = new_id();
        let customer = new_id();
        let info = ChatInfo {
            chat_id: chat_id.clone(),
            customer_party_id: customer.clone(),
            state: ChatState::Waiting,
            started_at_ms: now_ms(),
            queue: new.queue,
            user_data: new.user_data,
            agent_id: None,
        };
        let mut chat = Chat {
            info: info.clone(),
            parties: IndexMap::from([(
                customer.clone(),
                Party {
                    nickname,
                    kind: PartyType::Client,
                    agent_id: None,
                    present: true,
                },
            )]),
            transcript: Vec::new(),
            invited: Vec::new(),
        };
        let mut state = self.inner.state();
        let _ = self
            .inner
            .updates
            .send(ChatUpdate::Created { chat: info.clone() });
        chat.append(&self.inner.updates, EntryKind::Joined, &customer, "");
        state.chats.insert(chat_id, chat);
        Self::ready(Ok(info))
    }

    fn info(&self, chat_id: &str) -> BoxFuture<'_, Result<ChatInfo, ChatError>> {
        let state = self.inner.state();
        Self::ready(state.chat(chat_id).map(|c| c.info.clone()))
    }

    fn send(
        &self,
        chat_id: &str,
        party_id: &str,
        text: &str,
    ) -> BoxFuture<'_, Result<u64, ChatError>> {
        let mut state = self.inner.state();
        Self::ready(send_in(
            &mut state,
            &self.inner.updates,
            chat_id,
            party_id,
            text,
        ))
    }

    fn send_system(
        &self,
        chat_id: &str,
        nickname: &str,
        text: &str,
    ) -> BoxFuture<'_, Result<u64, ChatError>> {
        let nickname = match nickname.trim() {
            "" => "System",
            n => n,
        };
        let mut state = self.inner.state();
        let result = state.live_chat(chat_id).and_then(|chat| {
            if text.trim().is_empty() {
                return Err(ChatError::Invalid("the message is empty".to_string()));
            }
            let existing = chat
                .parties
                .iter()
                .find(|(_, p)| p.kind == PartyType::External && p.nickname == nickname)
                .map(|(id, _)| id.clone());
            let party_id = existing.unwrap_or_else(|| {
                let id = new_id();
                chat.parties.insert(
                    id.clone(),
                    Party {
                        nickname: nickname.to_string(),
                        kind: PartyType::External,
                        agent_id: None,
                        present: true,
                    },
                );
                id
            });
            Ok(chat.append(&self.inner.updates, EntryKind::Message, &party_id, text))
        });
        Self::ready(result)
    }

    fn typing(
        &self,
        chat_id: &str,
        party_id: &str,
        started: bool,
    ) -> BoxFuture<'_, Result<u64, ChatError>> {
        let mut state = self.inner.state();
        Self::ready(typing_in(
            &mut state,
            &self.inner.updates,
            chat_id,
            party_id,
            started,
        ))
    }

    fn transcript(
        &self,
        chat_id: &str,
        from: u64,
    ) -> BoxFuture<'_, Result<TranscriptPage, ChatError>> {
        let state = self.inner.state();
        Self::ready(state.chat(chat_id).map(|chat| {
            let skip = (from.max(1) - 1).min(chat.transcript.len() as u64) as usize;
            TranscriptPage {
                state: chat.info.state,
                entries: chat.transcript[skip..].to_vec(),
                last_position: chat.transcript.len() as u64,
            }
        }))
    }

    fn leave(&self, chat_id: &str, party_id: &str) -> BoxFuture<'_, Result<(), ChatError>> {
        let mut state = self.inner.state();
        Self::ready(state.leave(&self.inner.updates, chat_id, party_id))
    }

    fn deliver(&self, chat_id: &str, agent: AgentRef) -> BoxFuture<'_, Result<(), ChatError>> {
        let profile = self.routing.agent_profile(&agent.agent_id);
        let mut agent = agent;
        if agent.nickname.trim().is_empty()
            && let Some((name, _)) = &profile
        {
            agent.nickname = name.clone();
        }
        let mut state = self.inner.state();
        let auto = profile
            .and_then(|(_, own)| own)
            .unwrap_or(state.auto_accept);
        let delay = state.accept_delay;
        let chat = match state.live_chat(chat_id) {
            Ok(chat) => chat,
            Err(e) => return Self::ready(Err(e)),
        };
        let agent_id = agent.agent_id.clone();
        if chat.agent_party(&agent_id).is_some()
            || chat.invited.iter().any(|a| a.agent_id == agent_id)
        {
            return Self::ready(Ok(()));
        }
        chat.invited.push(agent);
        chat.info.agent_id = Some(agent_id.clone());
        if chat.info.state == ChatState::Waiting {
            chat.info.state = ChatState::Alerting;
        }
        let list = state.by_agent.entry(agent_id.clone()).or_default();
        if !list.iter().any(|c| c == chat_id) {
            list.push(chat_id.to_string());
        }
        if auto {
            if delay.is_zero() {
                let _ = state.accept(&self.inner.updates, chat_id, &agent_id);
            } else {
                let inner = Arc::downgrade(&self.inner);
                let chat_id = chat_id.to_string();
                self.timers.spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(inner) = inner.upgrade() {
                        let mut state = inner.state();
                        // The chat may have ended or been accepted meanwhile.
                        let _ = state.accept(&inner.updates, &chat_id, &agent_id);
                    }
                });
            }
        }
        Self::ready(Ok(()))
    }

    fn terminate(&self, chat_id: &str, reason: &str) -> BoxFuture<'_, Result<(), ChatError>> {
        let reason = match reason.trim() {
            "" => "terminated",
            r => r,
        };
        let mut state = self.inner.state();
        let result = state.live_chat(chat_id).map(|_| ());
        if result.is_ok() {
            state.end(&self.inner.updates, chat_id, reason);
        }
        Self::ready(result)
    }

    fn subscribe(&self) -> broadcast::Receiver<ChatUpdate> {
        self.inner.updates.subscribe()
    }
}
