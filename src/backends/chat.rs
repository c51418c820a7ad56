//! The chat backend: chat interactions with parties (the customer,
//! agents), a transcript of numbered entries, and a stream of updates the
//! server turns into interaction events and CometD pushes. What GMS asks
//! of Genesys Chat Server, reduced to what Chat API v1 needs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use super::BoxFuture;

/// A chat a customer asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewChat {
    /// The interaction queue the chat enters (names the strategy that
    /// will handle it; see `[interaction_queues]`).
    pub queue: String,
    /// The customer's display name in the transcript.
    pub nickname: String,
    /// First name, as given to Chat API v1.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: String,
    /// E-mail address.
    #[serde(default)]
    pub email: String,
    /// Subject line.
    #[serde(default)]
    pub subject: String,
    /// Attached data (user data of the interaction): the GMS service id
    /// under `GMS_ServiceID`, the callback's user data, the request's fields.
    #[serde(default)]
    pub user_data: Map<String, Value>,
}

/// Where a chat is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatState {
    /// Created, no agent yet.
    Waiting,
    /// Delivered to an agent who has not joined yet.
    Alerting,
    /// An agent has joined.
    Connected,
    /// Ended (the customer left, or it was terminated).
    Ended,
}

/// What a transcript entry records (Chat API v1's event names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// `Message.Text`.
    #[serde(rename = "Message.Text")]
    Message,
    /// `Notice.Joined`.
    #[serde(rename = "Notice.Joined")]
    Joined,
    /// `Notice.Left`.
    #[serde(rename = "Notice.Left")]
    Left,
    /// `Notice.TypingStarted`.
    #[serde(rename = "Notice.TypingStarted")]
    TypingStarted,
    /// `Notice.TypingStopped`.
    #[serde(rename = "Notice.TypingStopped")]
    TypingStopped,
    /// `Notice.PushUrl`.
    #[serde(rename = "Notice.PushUrl")]
    PushUrl,
}

/// The kind of party (Chat API v1's party types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PartyType {
    /// The customer.
    Client,
    /// An agent.
    Agent,
    /// A system or bot party (the strategy's own messages).
    External,
    /// A supervisor.
    Supervisor,
}

/// One numbered transcript entry. Positions start at 1 and have no gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// Position in the transcript (1-based).
    pub position: u64,
    /// What happened.
    pub kind: EntryKind,
    /// The party's display name.
    pub nickname: String,
    /// Message text (empty for most notices).
    pub text: String,
    /// The party's id within the chat.
    pub party_id: String,
    /// The party's kind.
    pub party_type: PartyType,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// A chat as the backend describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatInfo {
    /// The chat's id (the interaction id).
    pub chat_id: String,
    /// The customer's party id.
    pub customer_party_id: String,
    /// Where it is in its life.
    pub state: ChatState,
    /// Creation time, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// The queue it entered.
    pub queue: String,
    /// Attached data.
    pub user_data: Map<String, Value>,
    /// The agent it was delivered to, if any.
    pub agent_id: Option<String>,
}

/// Transcript entries from a position on, with the chat's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptPage {
    /// The chat's state.
    pub state: ChatState,
    /// Entries with `position >= from`, in order.
    pub entries: Vec<TranscriptEntry>,
    /// The last position in the whole transcript (0 when empty).
    pub last_position: u64,
}

/// An agent a chat is delivered to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRef {
    /// The agent's id (the routing backend's `agent_id`).
    pub agent_id: String,
    /// The agent's display name.
    pub nickname: String,
}

/// Something that happened to a chat, as the backend announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatUpdate {
    /// A chat was created and waits in its queue for a strategy.
    Created {
        /// The chat.
        chat: ChatInfo,
    },
    /// An entry was added to a transcript.
    Entry {
        /// The chat.
        chat_id: String,
        /// The entry.
        entry: TranscriptEntry,
    },
    /// A chat ended; no more entries follow.
    Ended {
        /// The chat.
        chat_id: String,
        /// Who or what ended it (`customer`, `agent`, `terminated`).
        reason: String,
    },
}

/// Why a chat call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "message", rename_all = "snake_case")]
pub enum ChatError {
    /// No chat (or party) by that id.
    #[error("not found: {0}")]
    NotFound(String),
    /// The chat has ended.
    #[error("the chat has ended")]
    Ended,
    /// The request is invalid (empty message, unknown queue, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend could not be reached or failed.
    #[error("chat backend failed: {0}")]
    Backend(String),
}

/// Hosts chats.
pub trait ChatBackend: Send + Sync {
    /// Creates a chat with the customer joined (a `Notice.Joined` entry)
    /// and announces it with [`ChatUpdate::Created`].
    fn create(&self, chat: NewChat) -> BoxFuture<'_, Result<ChatInfo, ChatError>>;

    /// Describes a chat.
    fn info(&self, chat_id: &str) -> BoxFuture<'_, Result<ChatInfo, ChatError>>;

    /// The newest chat not ended whose user data carries
    /// `GMS_ServiceID` = `service_id`, if any: how the server finds a
    /// chat it asked for just before it stopped, whose answer it never
    /// got.
    fn find_by_service(
        &self,
        service_id: &str,
    ) -> BoxFuture<'_, Result<Option<ChatInfo>, ChatError>>;

    /// Adds a message from a party; returns its position.
    fn send(
        &self,
        chat_id: &str,
        party_id: &str,
        text: &str,
    ) -> BoxFuture<'_, Result<u64, ChatError>>;

    /// Adds a message from a system party (`nickname`, [`PartyType::External`]),
    /// for strategies (`sendchatmessage`); returns its position.
    fn send_system(
        &self,
        chat_id: &str,
        nickname: &str,
        text: &str,
    ) -> BoxFuture<'_, Result<u64, ChatError>>;

    /// Records that a party started (`true`) or stopped typing.
    fn typing(
        &self,
        chat_id: &str,
        party_id: &str,
        started: bool,
    ) -> BoxFuture<'_, Result<u64, ChatError>>;

    /// Transcript entries from position `from` on (1 for all).
    fn transcript(
        &self,
        chat_id: &str,
        from: u64,
    ) -> BoxFuture<'_, Result<TranscriptPage, ChatError>>;

    /// A party leaves. When the customer leaves, or the last agent leaves
    /// a chat that had one, the chat ends ([`ChatUpdate::Ended`]).
    fn leave(&self, chat_id: &str, party_id: &str) -> BoxFuture<'_, Result<(), ChatError>>;

    /// Delivers the chat to an agent (the redirect to the reserved agent).
    /// The agent joins when they accept; the embedded simulator's agents
    /// accept by themselves after a configurable delay and greet the
    /// customer.
    fn deliver(&self, chat_id: &str, agent: AgentRef) -> BoxFuture<'_, Result<(), ChatError>>;

    /// Ends a chat from the strategy's side (`ixn:terminate`), with a
    /// reason recorded in the `Ended` update.
    fn terminate(&self, chat_id: &str, reason: &str) -> BoxFuture<'_, Result<(), ChatError>>;

    /// Every update from now on. A receiver that falls behind misses the
    /// oldest ones ([`broadcast::error::RecvError::Lagged`]); readers that
    /// need the whole transcript read it with [`ChatBackend::transcript`].
    fn subscribe(&self) -> broadcast::Receiver<ChatUpdate>;
}
