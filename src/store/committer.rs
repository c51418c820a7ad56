//! Group commit: workers hand their batches to one committer task, which
//! merges everything waiting into a single transaction and then answers
//! each sender. Batches are applied in arrival order, so a later snapshot
//! of a session always wins over an earlier one.

use std::sync::Arc;

use indexmap::IndexMap;
use tokio::sync::{mpsc, oneshot};

use super::{SessionRow, Store, WriteBatch};

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
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

struct Pending {
    batch: WriteBatch,
    done: oneshot::Sender<Result<(), CommitError>>,
}

impl CommitHandle {
    /// Queues a batch; the receiver answers once it is durable (or why not).
    pub fn submit(&self, batch: WriteBatch) -> oneshot::Receiver<Result<(), CommitError>> {
        let (done, rx) = oneshot::channel();
        if let Err(e) = self.tx.send(Pending { batch, done }) {
            let _ = e.0.done.send(Err(CommitError::Stopped));
        }
        rx
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
    /// [`Committer::run`] on a multi-threaded runtime.
    pub fn new(store: Arc<dyn Store>) -> (Committer, CommitHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let failure = Arc::new(std::sync::Mutex::new(None));
        (
            Committer {
                store,
                rx,
                max_rows: 20_000,
                failure: failure.clone(),
            },
            CommitHandle { tx, failure },
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
            let batch = merge(&mut group);
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
                let _ = p.done.send(result.clone());
            }
        }
    }
}

/// One batch from many, in arrival order: each session's last change,
/// each document once.
fn merge(group: &mut [Pending]) -> WriteBatch {
    let mut changes: IndexMap<String, Change> = IndexMap::new();
    let mut documents: IndexMap<String, super::DocumentRow> = IndexMap::new();
    let mut statements = Vec::new();
    for p in group.iter_mut() {
        for doc in std::mem::take(&mut p.batch.documents) {
            documents.entry(doc.hash.clone()).or_insert(doc);
        }
        for row in std::mem::take(&mut p.batch.upserts) {
            changes.insert(row.id.clone(), Change::Upsert(Box::new(row)));
        }
        for id in std::mem::take(&mut p.batch.deletes) {
            changes.insert(id, Change::Delete);
        }
        statements.append(&mut p.batch.statements);
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
