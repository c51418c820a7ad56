//! Group commit: workers hand their batches to one committer task, which
//! merges everything waiting into a single transaction and then answers
//! each sender. Batches are applied in arrival order, so a later snapshot
//! of a session always wins over an earlier one.
//!
//! A sender is answered by a function of its own, called on the
//! committer's thread as soon as the transaction ends
//! ([`CommitHandle::submit_then`]): a worker's HTTP replies leave from
//! there, without first waking the worker's thread to send them.

use std::sync::Arc;

use indexmap::IndexMap;
use tokio::sync::{mpsc, oneshot};

use super::{GroupCommit, SessionRow, Store, WriteBatch};

/// Why a submitted batch is not durable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The committer task has ended (the server is shutting down).
    #[error("the store committer has stopped")]
    Stopped,
    /// The transaction carrying the batch failed; the store's error, as
    /// text, shared by every batch of the group.
    #[error("{0}")]
    Write(String),
}

/// Where workers send batches; cheap to clone.
#[derive(Clone)]
pub struct CommitHandle {
    tx: mpsc::UnboundedSender<Pending>,
    /// The store's own group commit, when it has one: batches go there
    /// instead of to the committer task.
    direct: Option<Arc<dyn GroupCommit>>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

/// What a sender runs once its batch is durable, or with why not; it runs
/// on the committer's thread, so it must be short (send replies, set
/// flags).
pub type OnCommit = Box<dyn FnOnce(Result<(), CommitError>) + Send>;

struct Pending {
    batch: WriteBatch,
    done: Answer,
}

/// An [`OnCommit`] that runs exactly once: with the write's result, or
/// with [`CommitError::Stopped`] when it is dropped without having run (a
/// writer that went away with the batch), so no sender waits for ever
/// and its bookkeeping is done.
struct Answer(Option<OnCommit>);

impl Answer {
    fn run(mut self, result: Result<(), CommitError>) {
        if let Some(then) = self.0.take() {
            then(result);
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(then) = self.0.take() {
            then(Err(CommitError::Stopped));
        }
    }
}

impl CommitHandle {
    /// Queues a batch; the receiver answers once it is durable (or why not).
    pub fn submit(&self, batch: WriteBatch) -> oneshot::Receiver<Result<(), CommitError>> {
        let (done, rx) = oneshot::channel();
        self.submit_then(
            batch,
            Box::new(move |result| {
                let _ = done.send(result);
            }),
        );
        rx
    }

    /// Queues a batch; `then` runs once it is durable, or with why not:
    /// the store's error, or [`CommitError::Stopped`] when the committer
    /// (or the store's writer) has ended or dropped the batch. It runs
    /// exactly once, on the committer's thread (or at once, here).
    pub fn submit_then(&self, batch: WriteBatch, then: OnCommit) {
        let answer = Answer(Some(then));
        let Some(direct) = &self.direct else {
            if let Err(e) = self.tx.send(Pending {
                batch,
                done: answer,
            }) {
                e.0.done.run(Err(CommitError::Stopped));
            }
            return;
        };
        let failure = self.failure.clone();
        direct.submit(
            batch,
            Box::new(move |result| {
                let result = result.map_err(|e| CommitError::Write(e.to_string()));
                *failure.lock().unwrap_or_else(|e| e.into_inner()) =
                    result.as_ref().err().map(ToString::to_string);
                answer.run(result);
            }),
        );
    }

    /// Why the last write failed, while no write has succeeded since
    /// (`/health` reports the server unhealthy then).
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The committer task's state.
pub struct Committer {
    store: Arc<dyn Store>,
    rx: mpsc::UnboundedReceiver<Pending>,
    /// Most session changes merged into one transaction.
    max_rows: usize,
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

enum Change {
    Upsert(Box<SessionRow>),
    Delete,
}

impl Committer {
    /// A committer for `store` and the handle that feeds it; run it with
    /// [`Committer::run`] on a multi-threaded runtime. When the store has
    /// a group commit of its own ([`Store::group_commit`]: SQLite's writer
    /// thread), the handle sends batches there and `run` only waits for
    /// the handles to be dropped.
    pub fn new(store: Arc<dyn Store>) -> (Committer, CommitHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let failure = Arc::new(std::sync::Mutex::new(None));
        let direct = store.group_commit();
        (
            Committer {
                store,
                rx,
                max_rows: 20_000,
                failure: failure.clone(),
            },
            CommitHandle {
                tx,
                direct,
                failure,
            },
        )
    }

    /// Commits until every handle is dropped.
    pub async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut group = vec![first];
            let mut rows = group[0].batch.upserts.len() + group[0].batch.deletes.len();
            while rows < self.max_rows {
                match self.rx.try_recv() {
                    Ok(p) => {
                        rows += p.batch.upserts.len() + p.batch.deletes.len();
                        group.push(p);
                    }
                    Err(_) => break,
                }
            }
            let batch = merge(group.iter_mut().map(|p| std::mem::take(&mut p.batch)));
            let result = self
                .store
                .write(batch)
                .await
                .map_err(|e| CommitError::Write(e.to_string()));
            if let Err(e) = &result {
                tracing::error!(error = %e, "store write failed; its events are refused");
            }
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) =
                result.as_ref().err().map(ToString::to_string);
            for p in group {
                p.done.run(result.clone());
            }
        }
    }
}

/// One batch from many, in arrival order: each session's last change,
/// each document once.
pub(super) fn merge(batches: impl IntoIterator<Item = WriteBatch>) -> WriteBatch {
    let mut changes: IndexMap<String, Change> = IndexMap::new();
    let mut documents: IndexMap<String, super::DocumentRow> = IndexMap::new();
    let mut statements = Vec::new();
    for mut b in batches {
        for doc in b.documents {
            documents.entry(doc.hash.clone()).or_insert(doc);
        }
        for row in b.upserts {
            changes.insert(row.id.clone(), Change::Upsert(Box::new(row)));
        }
        for id in b.deletes {
            changes.insert(id, Change::Delete);
        }
        statements.append(&mut b.statements);
    }
    let mut batch = WriteBatch {
        documents: documents.into_values().collect(),
        statements,
        ..WriteBatch::default()
    };
    for (id, change) in changes {
        match change {
            Change::Upsert(row) => batch.upserts.push(*row),
            Change::Delete => batch.deletes.push(id),
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group commit that loses every batch (a writer gone mid-group).
    struct Loses;

    impl GroupCommit for Loses {
        fn submit(
            &self,
            _batch: WriteBatch,
            done: Box<dyn FnOnce(Result<(), super::super::StoreError>) + Send>,
        ) {
            drop(done);
        }
    }

    /// A batch the store's writer drops without answering is answered
    /// anyway, once, with `Stopped`: no reply waits for ever and the
    /// worker's count of writes in flight comes back down.
    #[test]
    fn a_batch_dropped_unanswered_is_answered_stopped() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let handle = CommitHandle {
            tx,
            direct: Some(Arc::new(Loses)),
            failure: Arc::new(std::sync::Mutex::new(None)),
        };
        let (answers, answered) = std::sync::mpsc::channel();
        handle.submit_then(
            WriteBatch::default(),
            Box::new(move |result| answers.send(result).unwrap()),
        );
        let got: Vec<_> = answered.try_iter().collect();
        assert_eq!(got, vec![Err(CommitError::Stopped)]);
    }
}
