//! [`Sessions`]: the handle through which the API, module actions and
//! extensions start sessions and reach them. It resolves a `src` through
//! the document cache, admits the start under `limits.max_sessions`, and
//! sends commands to the worker that owns a session id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::documents::Documents;
use super::error::ApiError;
use super::metrics::Metrics;
use super::outbox::Letter;
use super::worker::{Command, Pool, SessionView};
use crate::model::Event;
use crate::store::{CommitHandle, Statement, WriteBatch};

/// Starts sessions and reaches them; cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    commits: Option<CommitHandle>,
    documents: Arc<Documents>,
    metrics: Arc<Metrics>,
    max_sessions: u64,
    request_counter: AtomicU64,
}

impl Sessions {
    /// A handle over the worker `pool`, loading documents through
    /// `documents`, admitting at most `max_sessions` running sessions;
    /// letters ([`Sessions::post_durably`]) are written through `commits`.
    pub fn new(
        pool: Pool,
        commits: Option<CommitHandle>,
        documents: Arc<Documents>,
        metrics: Arc<Metrics>,
        max_sessions: usize,
    ) -> Sessions {
        Sessions {
            inner: Arc::new(Inner {
                pool,
                commits,
                documents,
                metrics,
                max_sessions: max_sessions as u64,
                request_counter: AtomicU64::new(1),
            }),
        }
    }

    /// The worker pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The document cache and allow-list.
    pub fn documents(&self) -> &Documents {
        &self.inner.documents
    }

    /// An id for a new session, on the next worker in turn.
    pub fn new_session_id(&self) -> String {
        self.inner.pool.new_session_id()
    }

    /// A fresh request id (module actions, `/request` calls).
    pub fn new_request_id(&self) -> String {
        let n = self.inner.request_counter.fetch_add(1, Ordering::Relaxed);
        crate::ids::request_id(n)
    }

    /// Queues an event for a session without waiting for it.
    pub fn post_event(&self, id: &str, event: Event) -> Result<(), ApiError> {
        self.inner.pool.post_event(id, event)
    }

    /// Sends `events` (target session id, event) as letters
    /// ([`crate::server::outbox`]), written in one transaction with
    /// `statements` (a service's change that the events report, such as
    /// an interaction's new owner), so that a crash keeps both or
    /// neither. The events are posted at once: the write is queued first
    /// and writes are applied in order, so no session's state that has
    /// an event can be stored before the letter. Call it while holding
    /// the lock that orders the service's changes. Without a store the
    /// events are only posted.
    pub fn post_durably(&self, events: Vec<(String, Event)>, statements: Vec<Statement>) {
        let letters: Vec<Letter> = events
            .into_iter()
            .map(|(target, event)| Letter::new(target, event))
            .collect();
        if let Some(commits) = &self.inner.commits {
            let mut batch = WriteBatch {
                statements,
                ..WriteBatch::default()
            };
            batch
                .statements
                .extend(letters.iter().filter_map(Letter::insert_statement));
            if !batch.is_empty() {
                // Nothing waits for it: a failed write is logged by the
                // committer and the events go on as if delivered.
                drop(commits.submit(batch));
            }
        }
        for letter in letters {
            let _ = self.inner.pool.post_letter(letter);
        }
    }

    /// The session's view with its data (404 `session_not_found` when
    /// there is none).
    pub async fn query(&self, id: &str) -> Result<SessionView, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.send(
            id,
            Command::Query {
                id: id.to_string(),
                reply,
            },
        )?;
        answer
            .await
            .unwrap_or_else(|_| Err(ApiError::session_not_found(id)))
    }

    /// Sends a command to the worker that owns `id`.
    pub fn send(&self, id: &str, command: Command) -> Result<(), ApiError> {
        self.inner.pool.send(id, command)
    }

    /// Resolves `src` and starts a session of it with `params` as data.
    pub async fn start(
        &self,
        src: &str,
        params: Map<String, Value>,
        idealtime: Option<u64>,
    ) -> Result<SessionView, ApiError> {
        let id = self.new_session_id();
        self.start_with_id(id, src, params, idealtime).await
    }

    /// Like [`Sessions::start`] with an id made beforehand
    /// ([`Sessions::new_session_id`]).
    pub async fn start_with_id(
        &self,
        id: String,
        src: &str,
        params: Map<String, Value>,
        idealtime: Option<u64>,
    ) -> Result<SessionView, ApiError> {
        let resolved = self.inner.documents.resolve(src).await?;
        // Script object parameters first; start parameters override them.
        let mut data = resolved.params;
        data.extend(params);
        let mut session_data = data.clone();
        if !session_data.contains_key("_data") {
            session_data.insert("_data".into(), Value::Object(data));
        }
        // Reserve a place under the cap before the worker counts the session.
        let max = self.inner.max_sessions;
        let reserved = self.inner.metrics.sessions_running.fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |n| (n < max).then_some(n + 1),
        );
        if let Err(running) = reserved {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                format!(
                    "{running} sessions are running, the configured maximum (limits.max_sessions)"
                ),
            ));
        }
        let (tx, rx) = oneshot::channel();
        let sent = self.inner.pool.send(
            &id,
            Command::Start {
                id: id.clone(),
                doc: resolved.doc,
                data: session_data,
                src: resolved.url,
                idealtime,
                reply: Some(tx),
            },
        );
        if let Err(e) = sent {
            Metrics::dec(&self.inner.metrics.sessions_running);
            return Err(e);
        }
        rx.await
            .unwrap_or_else(|_| Err(ApiError::internal("the worker dropped a start request")))
    }
}
