//! What lets chats in progress outlive a restart of the server. Three
//! tables of the store keep, as JSON by key, what the contact-centre
//! extension otherwise holds only in memory:
//!
//! - `ors_chat_bindings` ([`Table::ChatBindings`]): the Chat API binding
//!   of each service id: its chat, the customer's party, the owner, the
//!   `secureKey`, the transcript positions shown and pushed, the counters;
//! - `ors_interactions` ([`Table::Interactions`]): each interaction under
//!   control: the session that owns it, the agent reserved for it, its
//!   attached data and state;
//! - `ors_submits` ([`Table::Submits`]): each `<queue:submit>` still
//!   waiting for an agent: its request and its session.
//!
//! Every change is queued on the group committer ([`Journal`]) while the
//! map it changes is locked, so writes reach the store in the order the
//! changes happened and a newer state is never overwritten by an older
//! one. The first write of a chat binding is awaited before the device
//! is given the chat's `secureKey`; later changes (positions, counters,
//! owners) are not awaited: losing the last of them to a crash makes a
//! device see an entry twice, never loses one.
//!
//! At start, [`load`] reads the three tables before the server answers
//! its first request. Then [`reconcile`] asks the chat backend about each
//! chat it found: a chat that ended while the server was down, or that
//! the backend no longer knows (the embedded simulator restarts with the
//! server), is ended here as if the backend had said so (its owner gets
//! `interaction.deleted`, its agent is released). A submit still waiting
//! is asked again, for what remains of its timeout, when its session is
//! restored and still waits for it; one its session no longer waits for
//! (answered just before the server stopped) is dropped.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Gms;
#[cfg(doc)]
use crate::server::Sessions;
use crate::store::{CommitHandle, Migration, SqlValue, Statement, Store, WriteBatch};

/// The tables, as migration `gms:9`.
pub const MIGRATION: Migration = Migration {
    component: "gms",
    version: 9,
    statements: &[
        "CREATE TABLE IF NOT EXISTS ors_chat_bindings (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS ors_interactions (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS ors_submits (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    ],
};

/// One of the tables, each `(id TEXT PRIMARY KEY, body TEXT)` with the
/// JSON of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Chat API bindings by service id.
    ChatBindings,
    /// Interactions by interaction id.
    Interactions,
    /// Waiting submits by request id.
    Submits,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::ChatBindings => "ors_chat_bindings",
            Table::Interactions => "ors_interactions",
            Table::Submits => "ors_submits",
        }
    }
}

/// Writes one table's entries through the group committer, in the order
/// they are queued; a journal without a committer (`--store none`) writes
/// nothing.
#[derive(Clone)]
pub struct Journal {
    table: Table,
    commits: Option<CommitHandle>,
}

impl Journal {
    /// A journal of `table`.
    pub fn new(table: Table, commits: Option<CommitHandle>) -> Journal {
        Journal { table, commits }
    }

    /// A journal that keeps nothing.
    pub fn none(table: Table) -> Journal {
        Journal::new(table, None)
    }

    fn upsert_statement(&self, id: &str, entry: &impl Serialize) -> Option<Statement> {
        let body = match serde_json::to_string(entry) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(table = self.table.name(), id, error = %e,
                    "an entry could not be encoded; it is not kept");
                return None;
            }
        };
        Some(Statement::new(
            format!(
                "INSERT INTO {} (id, body) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                self.table.name()
            ),
            vec![SqlValue::from(id), SqlValue::from(body)],
        ))
    }

    fn queue(
        &self,
        statement: Statement,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<(), crate::store::CommitError>>> {
        self.commits.as_ref().map(|c| {
            c.submit(WriteBatch {
                statements: vec![statement],
                ..WriteBatch::default()
            })
        })
    }

    /// Queues the entry's new state behind every earlier write; call it
    /// while holding the lock of the map the entry lives in.
    pub fn put(&self, id: &str, entry: &impl Serialize) {
        if let Some(statement) = self.upsert_statement(id, entry) {
            self.queue(statement);
        }
    }

    /// Like [`Journal::put`], and returns a receiver that answers once the
    /// write is durable (`None`: nothing to wait for).
    pub fn put_durably(
        &self,
        id: &str,
        entry: &impl Serialize,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<(), crate::store::CommitError>>> {
        self.upsert_statement(id, entry)
            .and_then(|statement| self.queue(statement))
    }

    /// Queues the entry's removal behind every earlier write.
    pub fn remove(&self, id: &str) {
        self.queue(self.delete_statement(id));
    }

    fn delete_statement(&self, id: &str) -> Statement {
        Statement::new(
            format!("DELETE FROM {} WHERE id = $1", self.table.name()),
            vec![SqlValue::from(id)],
        )
    }

    /// The statement that writes the entry's new state, for a caller that
    /// writes it together with letters ([`Sessions::post_durably`]); empty
    /// when this journal keeps nothing. Call it while holding the lock of
    /// the map the entry lives in, and queue it before releasing it.
    pub fn put_statements(&self, id: &str, entry: &impl Serialize) -> Vec<Statement> {
        match &self.commits {
            Some(_) => self.upsert_statement(id, entry).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Like [`Journal::put_statements`] for the entry's removal.
    pub fn remove_statements(&self, id: &str) -> Vec<Statement> {
        match &self.commits {
            Some(_) => vec![self.delete_statement(id)],
            None => Vec::new(),
        }
    }
}

/// Waits for a write queued with [`Journal::put_durably`]; the error says
/// why it is not durable.
pub async fn durable(
    receiver: Option<tokio::sync::oneshot::Receiver<Result<(), crate::store::CommitError>>>,
) -> Result<(), String> {
    match receiver {
        None => Ok(()),
        Some(rx) => match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the store committer stopped".into()),
        },
    }
}

/// Every entry of `table`, decoded; entries that no longer decode are
/// logged and skipped (they stay in the store for inspection).
pub async fn read_all<T: DeserializeOwned>(
    store: &dyn Store,
    table: Table,
) -> Result<Vec<T>, String> {
    let rows = store
        .query(&Statement::new(
            format!("SELECT id, body FROM {} ORDER BY id", table.name()),
            vec![],
        ))
        .await
        .map_err(|e| e.to_string())?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let (Some(id), Some(body)) = (
            row.first().and_then(SqlValue::as_text),
            row.get(1).and_then(SqlValue::as_text),
        ) else {
            continue;
        };
        match serde_json::from_str::<T>(body) {
            Ok(entry) => entries.push(entry),
            Err(e) => tracing::error!(table = table.name(), id, error = %e,
                "a stored entry does not decode; it is skipped"),
        }
    }
    Ok(entries)
}

/// The ids [`load`] read back, for [`reconcile`] (interaction ids and
/// the service ids of chat bindings).
#[derive(Debug, Default)]
pub struct Restored {
    interactions: Vec<String>,
    bindings: Vec<String>,
}

/// Reads the three tables into the extension's maps (before the server
/// answers a request); returns how many bindings, interactions and
/// submits it found.
pub async fn load(ctx: &Gms) -> Result<(usize, usize, usize), String> {
    let Some(store) = &ctx.store else {
        return Ok((0, 0, 0));
    };
    let bindings: Vec<super::chat_api::Binding> = read_all(&**store, Table::ChatBindings).await?;
    let interactions: Vec<super::interactions::Interaction> =
        read_all(&**store, Table::Interactions).await?;
    let submits: Vec<super::modules::queue::Outstanding> =
        read_all(&**store, Table::Submits).await?;
    let counts = (bindings.len(), interactions.len(), submits.len());
    if let Ok(mut restored) = ctx.restored.lock() {
        restored.interactions = interactions.iter().map(|i| i.id.clone()).collect();
        restored.bindings = bindings.iter().map(|b| b.service_id.clone()).collect();
    }
    ctx.chats.restore(bindings);
    ctx.interactions.restore(interactions);
    ctx.submits.restore(submits);
    Ok(counts)
}

/// A claim read back from the store: the chat being created when the
/// server stopped. The backend may have made it (found by its recorded
/// arrival, which carries the service id, or else by asking the backend
/// for the chat of the service id): the binding is completed with it.
/// Otherwise the claim is dropped (the device may create the chat again).
async fn complete_claim(ctx: &Gms, service_id: &str) {
    let recorded = ctx.interactions.list().into_iter().find(|i| {
        i.hosted && i.user_data.get("GMS_ServiceID").and_then(Value::as_str) == Some(service_id)
    });
    // A chat whose arrival was not recorded either is found by asking the
    // backend for the chat of the service id.
    let made = match recorded {
        Some(ixn) => ctx.backends.chat.info(&ixn.id).await.ok(),
        None => ctx
            .backends
            .chat
            .find_by_service(service_id)
            .await
            .ok()
            .flatten(),
    };
    match made {
        Some(info) => {
            tracing::warn!(service = %service_id, chat = %info.chat_id,
                "a chat made just before the server stopped is bound to its callback again");
            ctx.chats.complete_claim(service_id, &info);
        }
        None => ctx.chats.drop_claim(service_id),
    }
}

/// Whether `session` is a running session (asleep or awake).
async fn owner_is_running(ctx: &Gms, session: &str) -> bool {
    ctx.sessions
        .query(session)
        .await
        .is_ok_and(|view| view.status == "running")
}

/// Brings what [`load`] read in line with the chat backend. Runs once,
/// after the stored sessions are back with their workers. (The submits
/// that were waiting are asked again as their sessions are restored:
/// `Mirror::resume_requests`.)
pub async fn reconcile(ctx: Arc<Gms>) {
    use crate::backends::chat::{ChatError, ChatState};
    // Only what was read back: chats that began since are the live
    // server's own.
    let restored = ctx
        .restored
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    let mut ended = std::collections::HashSet::new();
    for id in &restored.interactions {
        let Some(ixn) = ctx.interactions.get(id).filter(|i| i.hosted) else {
            continue;
        };
        let gone = match ctx.backends.chat.info(&ixn.id).await {
            Ok(info) if info.state == ChatState::Ended => true,
            Ok(info) => {
                if ixn.owner.is_none() && ixn.state == "queued" {
                    // It arrived, but no strategy had it when the server
                    // stopped: its queue's strategy starts again.
                    tracing::warn!(chat = %ixn.id,
                        "a chat no strategy had taken when the server stopped is handed to one");
                    super::interactions::hand_to_strategy(&ctx, &info, &ixn).await;
                } else if let Some(owner) = ixn.owner.as_deref()
                    && ixn.state == "queued"
                {
                    if owner_is_running(&ctx, owner).await {
                        // Its owner may not have kept the presentation (the
                        // server stopped before its state with the event
                        // was stored): presented again. A strategy that had
                        // it ignores the repeat.
                        // Only if it still has it: while this looked, a
                        // restored session may have taken it over.
                        match super::interactions::present_again(&ctx, &ixn.id, owner) {
                            Ok(again) => tracing::debug!(chat = %ixn.id, strategy = %owner,
                                again, "a chat kept over a restart presented to its strategy again"),
                            Err(e) => tracing::warn!(chat = %ixn.id, error = %e.message,
                                "a chat could not be presented to its strategy again"),
                        }
                    } else {
                        // Its strategy was named but never stored (the
                        // server stopped before it started), or has ended.
                        // (Unless a restored session took it over since.)
                        if matches!(ctx.interactions.let_go(&ixn.id, owner), Ok(true)) {
                            tracing::warn!(chat = %ixn.id, strategy = %owner,
                                "a chat whose strategy is gone is handed to a new one");
                            super::interactions::hand_to_strategy(&ctx, &info, &ixn).await;
                        }
                    }
                }
                false
            }
            Err(ChatError::NotFound(_)) => true,
            Err(e) => {
                // The backend may be down for a moment: the chat is kept,
                // and its end, when the backend announces it, ends it here.
                tracing::warn!(chat = %ixn.id, error = %e,
                    "a chat kept over a restart could not be checked");
                false
            }
        };
        if gone {
            super::interactions::chat_ended(&ctx, &ixn.id, "ended_while_down").await;
            ended.insert(ixn.id);
        }
    }
    for service_id in &restored.bindings {
        if ctx
            .chats
            .get(service_id)
            .is_some_and(|b| b.chat_id.is_empty())
        {
            complete_claim(&ctx, service_id).await;
        }
        // (A claim completed goes on as a binding read back.)
        let Some(binding) = ctx.chats.get(service_id).filter(|b| !b.chat_id.is_empty()) else {
            continue;
        };
        match ctx.backends.chat.info(&binding.chat_id).await {
            Err(ChatError::NotFound(_)) => ctx.chats.forget_chat(&binding.chat_id),
            Ok(info) => {
                if info.state == ChatState::Waiting && ctx.interactions.get(&info.chat_id).is_none()
                {
                    // Made before the crash; its arrival never recorded.
                    tracing::warn!(chat = %info.chat_id,
                        "a chat whose arrival was lost when the server stopped is handed to its strategy");
                    let ixn = ctx.interactions.register(&info);
                    super::interactions::hand_to_strategy(&ctx, &info, &ixn).await;
                }
                if let Some(b) = ctx.chats.get(&binding.service_id) {
                    super::chat_api::push_missed(&ctx, &b).await;
                }
            }
            Err(e) => tracing::warn!(chat = %binding.chat_id, error = %e,
                "a chat kept over a restart could not be checked"),
        }
    }
    if !restored.interactions.is_empty() || !restored.bindings.is_empty() {
        tracing::info!(
            interactions = restored.interactions.len(),
            bindings = restored.bindings.len(),
            ended = ended.len(),
            "chats kept over a restart checked with the chat backend"
        );
    }
    ctx.reconciled.send_replace(Some(Arc::new(ended)));
}
