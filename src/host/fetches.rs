//! Drives a [`LocalHost`]'s child fetches as tasks on the current
//! `LocalSet`, so the thread that runs the sessions never waits on the
//! network.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::{AbortHandle, JoinSet};

use super::{FetchId, LocalHost};
use crate::model::Document;

/// The child fetches in flight for one host; see the module docs.
#[derive(Default)]
pub struct Fetches {
    tasks: JoinSet<(FetchId, Result<Arc<Document>, String>)>,
    by_task: HashMap<tokio::task::Id, FetchId>,
    handles: HashMap<FetchId, AbortHandle>,
}

impl Fetches {
    /// No fetches yet.
    pub fn new() -> Fetches {
        Fetches::default()
    }

    /// Spawns the fetches `host` started (with `spawn_local`: call it inside
    /// a `LocalSet`) and aborts the ones it no longer wants.
    pub fn start(&mut self, host: &mut LocalHost) {
        for id in host.take_dropped_fetches() {
            if let Some(handle) = self.handles.remove(&id) {
                handle.abort();
            }
        }
        for (id, fetch) in host.take_fetches() {
            let handle = self.tasks.spawn_local(async move { (id, fetch.await) });
            self.by_task.insert(handle.id(), id);
            self.handles.insert(id, handle);
        }
    }

    /// How many fetches are in flight.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether no fetch is in flight.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The next finished fetch, for [`LocalHost::fetched`]; pending for
    /// ever while none is in flight (so it can sit in a `select!`). A fetch
    /// that panicked is reported as failed; an aborted one is skipped.
    pub async fn next(&mut self) -> (FetchId, Result<Arc<Document>, String>) {
        loop {
            match self.tasks.join_next_with_id().await {
                Some(Ok((task, (id, result)))) => {
                    self.by_task.remove(&task);
                    self.handles.remove(&id);
                    return (id, result);
                }
                Some(Err(e)) => {
                    let id = self.by_task.remove(&e.id());
                    if e.is_panic()
                        && let Some(id) = id
                    {
                        self.handles.remove(&id);
                        return (id, Err("the fetch failed".into()));
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
    }
}
