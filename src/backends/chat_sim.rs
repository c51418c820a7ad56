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
//! `backends/background.rs`), never on the caller's runtime; with a
//! delay of 0 the agent joins inside `deliver`. Updates are sent while the chat
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

    fn find_by_service(
        &self,
        service_id: &str,
    ) -> BoxFuture<'_, Result<Option<ChatInfo>, ChatError>> {
        let state = self.inner.state();
        let found = state
            .chats
            .values()
            .filter(|c| {
                c.info.state != ChatState::Ended
                    && c.info
                        .user_data
                        .get("GMS_ServiceID")
                        .and_then(serde_json::Value::as_str)
                        == Some(service_id)
            })
            .max_by_key(|c| (c.info.started_at_ms, c.info.chat_id.clone()))
            .map(|c| c.info.clone());
        Self::ready(Ok(found))
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
        let result = state.live_chat(chat_id).map(|chat| {
            // The customer is told why, as a message from the system.
            chat.append(&self.inner.updates, EntryKind::Message, "system", reason);
        });
        if result.is_ok() {
            state.end(&self.inner.updates, chat_id, reason);
        }
        Self::ready(result)
    }

    fn subscribe(&self) -> broadcast::Receiver<ChatUpdate> {
        self.inner.updates.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::settings::AgentSettings;

    fn sim_with(auto_accept: bool, delay_ms: u64) -> ChatSim {
        let settings = SimulatorSettings {
            auto_accept,
            accept_delay_ms: delay_ms,
            ..SimulatorSettings::default()
        };
        ChatSim::new(&settings, Arc::new(RoutingSim::new(&settings).unwrap()))
    }

    fn customer(nickname: &str) -> NewChat {
        NewChat {
            queue: "Chat_IQ".to_string(),
            nickname: nickname.to_string(),
            ..NewChat::default()
        }
    }

    fn ann() -> AgentRef {
        AgentRef {
            agent_id: "agent-1".to_string(),
            nickname: "Ann Lee".to_string(),
        }
    }

    /// The next update, within a second.
    async fn next(rx: &mut broadcast::Receiver<ChatUpdate>) -> ChatUpdate {
        tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .expect("an update in time")
            .expect("an update")
    }

    fn entry(update: ChatUpdate) -> TranscriptEntry {
        match update {
            ChatUpdate::Entry { entry, .. } => entry,
            other => panic!("an entry expected, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_chat_numbers_its_entries_from_one_without_gaps() {
        let sim = sim_with(true, 300);
        let info = sim.create(customer("Jane")).await.unwrap();
        assert_eq!(info.state, ChatState::Waiting);
        assert_eq!(info.chat_id.len(), 16);
        assert_eq!(info.queue, "Chat_IQ");
        let me = info.customer_party_id.clone();
        let id = info.chat_id.clone();
        assert_eq!(sim.send(&id, &me, "Hi").await, Ok(2));
        assert_eq!(sim.typing(&id, &me, true).await, Ok(3));
        assert_eq!(sim.typing(&id, &me, false).await, Ok(4));
        assert_eq!(sim.send_system(&id, "Bot", "Please wait").await, Ok(5));
        assert_eq!(sim.send_system(&id, "Bot", "Still waiting").await, Ok(6));
        let all = sim.transcript(&id, 0).await.unwrap();
        assert_eq!(all.last_position, 6);
        let kinds: Vec<EntryKind> = all.entries.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EntryKind::Joined,
                EntryKind::Message,
                EntryKind::TypingStarted,
                EntryKind::TypingStopped,
                EntryKind::Message,
                EntryKind::Message
            ]
        );
        let positions: Vec<u64> = all.entries.iter().map(|e| e.position).collect();
        assert_eq!(positions, [1, 2, 3, 4, 5, 6]);
        assert_eq!(all.entries[0].nickname, "Jane");
        assert_eq!(all.entries[0].party_type, PartyType::Client);
        assert_eq!(all.entries[1].text, "Hi");
        assert_eq!(all.entries[4].party_type, PartyType::External);
        assert_eq!(all.entries[4].nickname, "Bot");
        assert_eq!(all.entries[4].party_id, all.entries[5].party_id);
        let tail = sim.transcript(&id, 5).await.unwrap();
        assert_eq!(tail.entries.len(), 2);
        assert_eq!(tail.entries[0].position, 5);
        assert!(sim.transcript(&id, 99).await.unwrap().entries.is_empty());
    }

    #[tokio::test]
    async fn bad_ids_and_empty_messages_are_refused() {
        let sim = sim_with(true, 300);
        let info = sim.create(customer("")).await.unwrap();
        let id = info.chat_id.clone();
        assert!(matches!(
            sim.info("nope").await,
            Err(ChatError::NotFound(_))
        ));
        assert!(matches!(
            sim.send("nope", &info.customer_party_id, "x").await,
            Err(ChatError::NotFound(_))
        ));
        assert!(matches!(
            sim.send(&id, "nobody", "x").await,
            Err(ChatError::NotFound(_))
        ));
        assert!(matches!(
            sim.send(&id, &info.customer_party_id, "  ").await,
            Err(ChatError::Invalid(_))
        ));
        assert!(matches!(
            sim.transcript("nope", 1).await,
            Err(ChatError::NotFound(_))
        ));
        let page = sim.transcript(&id, 1).await.unwrap();
        assert_eq!(page.entries[0].nickname, "Customer");
        let named = sim
            .create(NewChat {
                first_name: "Jane".into(),
                last_name: "Doe".into(),
                ..customer(" ")
            })
            .await
            .unwrap();
        let page = sim.transcript(&named.chat_id, 1).await.unwrap();
        assert_eq!(page.entries[0].nickname, "Jane Doe");
    }

    #[tokio::test]
    async fn the_customer_leaving_ends_the_chat_and_changes_then_fail() {
        let sim = sim_with(true, 300);
        let mut updates = sim.subscribe();
        let info = sim.create(customer("Jane")).await.unwrap();
        let (id, me) = (info.chat_id.clone(), info.customer_party_id.clone());
        sim.leave(&id, &me).await.unwrap();
        assert!(matches!(
            next(&mut updates).await,
            ChatUpdate::Created { .. }
        ));
        assert_eq!(entry(next(&mut updates).await).kind, EntryKind::Joined);
        let left = entry(next(&mut updates).await);
        assert_eq!((left.kind, left.position), (EntryKind::Left, 2));
        assert_eq!(
            next(&mut updates).await,
            ChatUpdate::Ended {
                chat_id: id.clone(),
                reason: "customer".into()
            }
        );
        assert_eq!(sim.info(&id).await.unwrap().state, ChatState::Ended);
        assert_eq!(sim.send(&id, &me, "x").await, Err(ChatError::Ended));
        assert_eq!(sim.typing(&id, &me, true).await, Err(ChatError::Ended));
        assert_eq!(
            sim.send_system(&id, "Bot", "x").await,
            Err(ChatError::Ended)
        );
        assert_eq!(sim.leave(&id, &me).await, Err(ChatError::Ended));
        assert_eq!(sim.deliver(&id, ann()).await, Err(ChatError::Ended));
        assert_eq!(sim.terminate(&id, "x").await, Err(ChatError::Ended));
        let page = sim.transcript(&id, 1).await.unwrap();
        assert_eq!((page.state, page.last_position), (ChatState::Ended, 2));
    }

    #[tokio::test]
    async fn terminate_ends_the_chat_with_its_reason() {
        let sim = sim_with(true, 300);
        let mut updates = sim.subscribe();
        let a = sim.create(customer("A")).await.unwrap();
        let b = sim.create(customer("B")).await.unwrap();
        sim.terminate(&a.chat_id, "no agents").await.unwrap();
        sim.terminate(&b.chat_id, "").await.unwrap();
        let reasons: Vec<String> = std::iter::from_fn(|| updates.try_recv().ok())
            .filter_map(|u| match u {
                ChatUpdate::Ended { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, ["no agents", "terminated"]);
        assert_eq!(
            sim.terminate("nope", "x").await,
            Err(ChatError::NotFound("no chat 'nope'".into()))
        );
    }

    #[tokio::test]
    async fn a_delivered_chat_is_accepted_after_the_delay_with_a_greeting() {
        let sim = sim_with(true, 60);
        let info = sim
            .create(NewChat {
                first_name: "Jane".into(),
                last_name: "Doe".into(),
                ..customer("")
            })
            .await
            .unwrap();
        let id = info.chat_id.clone();
        let mut updates = sim.subscribe();
        let delivered = Instant::now();
        sim.deliver(&id, ann()).await.unwrap();
        let info = sim.info(&id).await.unwrap();
        assert_eq!(info.state, ChatState::Alerting);
        assert_eq!(info.agent_id.as_deref(), Some("agent-1"));
        let listed = sim.agent_chats("agent-1").unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].invited && listed[0].party_id.is_none());
        let joined = entry(next(&mut updates).await);
        assert!(delivered.elapsed() >= Duration::from_millis(50));
        assert_eq!(joined.kind, EntryKind::Joined);
        assert_eq!(joined.party_type, PartyType::Agent);
        assert_eq!(joined.nickname, "Ann Lee");
        assert_eq!(joined.position, 2);
        let greeting = entry(next(&mut updates).await);
        assert_eq!(greeting.kind, EntryKind::Message);
        assert_eq!(
            greeting.text,
            "Hello Jane Doe, my name is Ann Lee. How can I help you?"
        );
        assert_eq!(greeting.party_id, joined.party_id);
        assert_eq!(sim.info(&id).await.unwrap().state, ChatState::Connected);
        let listed = sim.agent_chats("agent-1").unwrap();
        assert!(!listed[0].invited);
        assert_eq!(
            listed[0].party_id.as_deref(),
            Some(joined.party_id.as_str())
        );
        assert_eq!(listed[0].transcript.len(), 3);
        // The customer can talk with the agent; the agent answers.
        assert_eq!(sim.send(&id, &info.customer_party_id, "Hi").await, Ok(4));
        assert_eq!(sim.agent_send("agent-1", &id, "Sure"), Ok(5));
        // A second deliver to the same agent changes nothing.
        sim.deliver(&id, ann()).await.unwrap();
        assert_eq!(sim.transcript(&id, 1).await.unwrap().last_position, 5);
    }

    #[tokio::test]
    async fn without_auto_accept_the_agent_accepts_by_hand() {
        let sim = sim_with(false, 10);
        let info = sim.create(customer("Jane")).await.unwrap();
        let id = info.chat_id.clone();
        assert!(matches!(
            sim.accept("agent-1", &id),
            Err(SimError::Conflict(m)) if m.contains("not waiting for agent")
        ));
        sim.deliver(&id, ann()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(sim.info(&id).await.unwrap().state, ChatState::Alerting);
        assert!(matches!(
            sim.agent_send("agent-1", &id, "x"),
            Err(SimError::Conflict(m)) if m.contains("is not in chat")
        ));
        assert!(matches!(
            sim.agent_send("agent-2", &id, "x"),
            Err(SimError::NotFound(_))
        ));
        let accepted = sim.accept("agent-1", &id).unwrap();
        assert_eq!(accepted.chat.state, ChatState::Connected);
        assert_eq!(accepted.transcript.len(), 3);
        assert!(matches!(
            sim.accept("agent-1", &id),
            Err(SimError::Conflict(_))
        ));
        assert_eq!(sim.agent_typing("agent-1", &id, true), Ok(4));
        assert_eq!(sim.agent_send("agent-1", &id, "Hello"), Ok(5));
        let mut updates = sim.subscribe();
        let left = sim.agent_leave("agent-1", &id).unwrap();
        assert_eq!(left.chat.state, ChatState::Ended);
        assert!(left.party_id.is_none());
        assert_eq!(entry(next(&mut updates).await).kind, EntryKind::Left);
        assert_eq!(
            next(&mut updates).await,
            ChatUpdate::Ended {
                chat_id: id.clone(),
                reason: "agent".into()
            }
        );
        assert!(matches!(
            sim.agent_send("agent-1", &id, "x"),
            Err(SimError::Conflict(_))
        ));
        assert!(matches!(
            sim.agent_chats("nobody"),
            Err(SimError::NotFound(_))
        ));
        assert_eq!(sim.agent_chats("agent-2"), Ok(Vec::new()));
    }

    #[tokio::test]
    async fn an_agents_own_auto_accept_overrides_the_global_one() {
        let settings = SimulatorSettings {
            agents: vec![
                AgentSettings {
                    auto_accept: Some(false),
                    ..AgentSettings::new("shy", "Shy", &["G"])
                },
                AgentSettings::new("eager", "Eager", &["G"]),
            ],
            accept_delay_ms: 0,
            greeting: String::new(),
            ..SimulatorSettings::default()
        };
        let routing = Arc::new(RoutingSim::new(&settings).unwrap());
        let sim = ChatSim::new(&settings, routing.clone());
        let a = sim.create(customer("A")).await.unwrap();
        let b = sim.create(customer("B")).await.unwrap();
        let to = |id: &str| AgentRef {
            agent_id: id.to_string(),
            nickname: String::new(),
        };
        sim.deliver(&a.chat_id, to("shy")).await.unwrap();
        sim.deliver(&b.chat_id, to("eager")).await.unwrap();
        assert_eq!(
            sim.info(&a.chat_id).await.unwrap().state,
            ChatState::Alerting
        );
        // Delay 0: joined inside deliver; no greeting; the name comes from
        // the routing simulator.
        let page = sim.transcript(&b.chat_id, 1).await.unwrap();
        assert_eq!(page.state, ChatState::Connected);
        assert_eq!(page.last_position, 2);
        assert_eq!(page.entries[1].nickname, "Eager");
        routing.set_auto_accept("shy", None).unwrap();
        let c = sim.create(customer("C")).await.unwrap();
        sim.deliver(&c.chat_id, to("shy")).await.unwrap();
        assert_eq!(
            sim.info(&c.chat_id).await.unwrap().state,
            ChatState::Connected
        );
    }

    #[tokio::test]
    async fn the_chat_ends_when_its_last_agent_leaves() {
        let sim = sim_with(true, 0);
        let info = sim.create(customer("Jane")).await.unwrap();
        let id = info.chat_id.clone();
        sim.deliver(&id, ann()).await.unwrap();
        let bob = AgentRef {
            agent_id: "agent-2".into(),
            nickname: "Bob".into(),
        };
        sim.deliver(&id, bob).await.unwrap();
        sim.agent_leave("agent-1", &id).unwrap();
        assert_eq!(sim.info(&id).await.unwrap().state, ChatState::Connected);
        let left = sim.agent_leave("agent-2", &id).unwrap();
        assert_eq!(left.chat.state, ChatState::Ended);
    }

    #[tokio::test]
    async fn updates_arrive_in_transcript_order() {
        let sim = sim_with(true, 0);
        let mut updates = sim.subscribe();
        let info = sim.create(customer("Jane")).await.unwrap();
        for i in 0..50 {
            sim.send(&info.chat_id, &info.customer_party_id, &format!("m{i}"))
                .await
                .unwrap();
        }
        assert_eq!(
            next(&mut updates).await,
            ChatUpdate::Created { chat: info.clone() }
        );
        for position in 1..=51 {
            let e = entry(next(&mut updates).await);
            assert_eq!(e.position, position);
            if position > 1 {
                assert_eq!(e.text, format!("m{}", position - 2));
            }
        }
        assert!(updates.try_recv().is_err());
    }

    #[tokio::test]
    async fn ended_chats_are_dropped_after_the_retention_period() {
        let sim = sim_with(true, 0);
        let info = sim.create(customer("Jane")).await.unwrap();
        sim.deliver(&info.chat_id, ann()).await.unwrap();
        let live = sim.create(customer("Joe")).await.unwrap();
        sim.set_retention(Duration::from_millis(20));
        sim.terminate(&info.chat_id, "done").await.unwrap();
        assert_eq!(sim.chat_count(), 2);
        assert!(sim.info(&info.chat_id).await.is_ok());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(matches!(
            sim.info(&info.chat_id).await,
            Err(ChatError::NotFound(_))
        ));
        assert_eq!(sim.chat_count(), 1);
        assert_eq!(sim.agent_chats("agent-1"), Ok(Vec::new()));
        assert!(sim.info(&live.chat_id).await.is_ok());
    }
}
