//! The outbox: events that reach their session even when the server is
//! killed between the state that sent them and the state that received
//! them (the transactional outbox pattern, over the session store).
//!
//! Two kinds of event go through it:
//! - an event a session sends to a session of another worker (a session
//!   of the same worker gets it in the same write batch as its sender);
//! - an event a service sends together with a change it stores, such as
//!   `interaction.deleted` to the session that lost an interaction
//!   ([`crate::server::Sessions::post_durably`]).
//!
//! Each such event is a [`Letter`]: a row of `ors_outbox` written in the
//! same transaction as the state that sent it, posted to its session once
//! that transaction is durable, and deleted in the same transaction as the
//! receiving session's state with the event in its queue. So a stored
//! sender always has its letters stored or received, and a stored receiver
//! never gets the same letter twice. At start every row left is delivered
//! again, in the order the letters were made: a session the store had as
//! running gets its letters queued when it is restored, before the
//! requests it was waiting for are answered `interrupted`
//! ([`crate::interpreter::Session::interrupt_requests`]), so an answer
//! that was on its way settles its request instead.
//!
//! Without a store (`--store none`) nothing is written and letters are
//! posted at once.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::Event;
use crate::store::{SqlValue, Statement, Store, StoreError};

/// The table: `(id TEXT PRIMARY KEY, target TEXT, event TEXT, made_at
/// BIGINT)`, made by the store's own migrations.
pub const TABLE: &str = "ors_outbox";

/// Letters deleted by one statement (one parameter each).
const IDS_PER_DELETE: usize = 256;

/// An event on its way to a session, kept in the store until the session
/// has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// [`crate::ids::letter_id`]: sorts in the order letters were made.
    pub id: Arc<str>,
    /// The session it is for.
    pub target: String,
    /// The event, as the session will see it.
    pub event: Event,
}

/// When this process started (ms since the epoch), the first part of
/// every letter id it makes.
static PROCESS_START_MS: LazyLock<u64> = LazyLock::new(crate::host::wall_clock_ms);
static NEXT_LETTER: AtomicU64 = AtomicU64::new(1);

impl Letter {
    /// A letter with a new id.
    pub fn new(target: impl Into<String>, event: Event) -> Letter {
        let seq = NEXT_LETTER.fetch_add(1, Ordering::Relaxed);
        Letter {
            id: crate::ids::letter_id(*PROCESS_START_MS, seq).into(),
            target: target.into(),
            event,
        }
    }

    /// The statement that stores it; `None` (logged) when its event does
    /// not encode, which a well-formed event always does.
    pub fn insert_statement(&self) -> Option<Statement> {
        let event = match serde_json::to_string(&self.event) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(letter = %self.id, target = %self.target, error = %e,
                    "an event for another session could not be encoded; it is not kept");
                return None;
            }
        };
        Some(Statement::new(
            format!("INSERT INTO {TABLE} (id, target, event, made_at) VALUES ($1, $2, $3, $4)"),
            vec![
                SqlValue::from(&*self.id),
                SqlValue::from(self.target.as_str()),
                SqlValue::from(event),
                SqlValue::from(crate::host::wall_clock_ms() as i64),
            ],
        ))
    }
}

/// The statements that delete the letters `ids` (a few hundred per
/// statement); none when `ids` is empty.
pub fn delete_statements(ids: &[Arc<str>]) -> Vec<Statement> {
    ids.chunks(IDS_PER_DELETE)
        .map(|chunk| {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            Statement::new(
                format!("DELETE FROM {TABLE} WHERE id IN ({})", params.join(", ")),
                chunk.iter().map(|id| SqlValue::from(&**id)).collect(),
            )
        })
        .collect()
}

/// Every letter still stored, oldest first. A row whose event no longer
/// decodes is logged and deleted (nothing could deliver it).
///
/// # Errors
/// The store's, when the table cannot be read.
pub async fn read_all(store: &dyn Store) -> Result<Vec<Letter>, StoreError> {
    let rows = store
        .query(&Statement::new(
            format!("SELECT id, target, event FROM {TABLE} ORDER BY id"),
            vec![],
        ))
        .await?;
    let mut letters = Vec::with_capacity(rows.len());
    let mut unreadable: Vec<Arc<str>> = Vec::new();
    for row in rows {
        let text = |i: usize| row.get(i).and_then(SqlValue::as_text);
        let (Some(id), Some(target), Some(event)) = (text(0), text(1), text(2)) else {
            continue;
        };
        match serde_json::from_str::<Event>(event) {
            Ok(event) => letters.push(Letter {
                id: id.into(),
                target: target.to_string(),
                event,
            }),
            Err(e) => {
                tracing::error!(letter = id, target, error = %e,
                    "a stored event for a session does not decode; it is dropped");
                unreadable.push(id.into());
            }
        }
    }
    for statement in delete_statements(&unreadable) {
        store.execute(&statement).await?;
    }
    Ok(letters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventKind;

    #[test]
    fn letters_made_later_sort_later() {
        let a = Letter::new("x", Event::new("a", EventKind::External));
        let b = Letter::new("x", Event::new("b", EventKind::External));
        assert!(a.id < b.id, "{} then {}", a.id, b.id);
    }

    #[test]
    fn deletes_are_chunked_with_one_parameter_per_id() {
        let ids: Vec<Arc<str>> = (0..IDS_PER_DELETE + 3)
            .map(|i| Arc::from(format!("id{i}")))
            .collect();
        let statements = delete_statements(&ids);
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0].args.len(), IDS_PER_DELETE);
        assert_eq!(statements[1].args.len(), 3);
        assert!(statements[1].sql.ends_with("IN ($1, $2, $3)"));
        assert!(delete_statements(&[]).is_empty());
    }
}
