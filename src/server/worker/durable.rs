//! A worker's durability: after each batch it writes the snapshot of every
//! session that ran to the store (through the group committer) and only
//! then answers the batch's requests; it puts idle sessions to sleep
//! (their ECMAScript state dropped, their next timer kept on a heap) and
//! wakes them from the store when an event, timer or query arrives;
//! at start it takes over the running sessions the store holds.

use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::WorkerContext;
use super::{Command, Meta, Reply, SessionView, Status, Worker};
use crate::host::wall_clock_ms;
use crate::interpreter::{Session, SessionOptions, SessionSnapshot};
use crate::model::Document;
use crate::server::error::ApiError;
use crate::server::metrics::Metrics;
use crate::server::outbox::{self, Letter};
use crate::store::{DocumentRow, RootSummary, SessionRow, WriteBatch};

/// A top-level session asleep in the store.
pub(super) struct Sleeping {
    /// When its tree next has a timer due (ms since the epoch).
    pub wake_at: Option<u64>,
    /// Its active states when it went to sleep (for lists and queries),
    /// sharing the document's names.
    pub configuration: Box<[Arc<str>]>,
    /// Its tree's rows kept in memory (the warm tier), if they are (boxed:
    /// a million sessions asleep in the store pay one pointer each).
    pub warm: Option<Box<Warm>>,
}

/// A sleeping tree's state in memory: the rows the store also has (taken
/// once they were committed), restored without reading the store.
pub(super) struct Warm {
    /// The tree, parents first, with each row's document (`None` for a
    /// child whose document is inline in its parent), as a store read
    /// gives it.
    rows: TreeRows,
    /// The rows' snapshot bytes.
    bytes: usize,
    /// Its number in `Worker::warm_order`.
    entry: u64,
}

/// A tree of stored rows, parents first, with each row's document
/// (`None` for a child whose document is inline in its parent).
pub(super) type TreeRows = Vec<(SessionRow, Option<Arc<Document>>)>;

/// What a wake job found in the store.
pub(super) enum WakeData {
    /// No such session.
    Missing,
    /// The session has halted; its last row.
    Halted(Box<SessionRow>),
    /// The running tree, parents first, with each row's document (`None`
    /// for a child whose document is inline in its parent).
    Tree(Vec<(SessionRow, Option<Arc<Document>>)>),
}

/// A finished wake job, sent back to the worker.
pub(super) struct Woken {
    /// The id the job was started for.
    pub id: Arc<str>,
    /// What it found.
    pub result: Result<WakeData, String>,
    /// Whether it came from the warm tier rather than the store.
    pub warm: bool,
}

impl Worker {
    /// Takes over sessions found running in the store at start: they sleep
    /// until an event, a query or their next timer wakes them. `letters`
    /// (oldest first) were on their way to this worker's sessions: a root
    /// with letters is woken at once and queues them when restored; a
    /// letter for any other session is posted to it like a new event.
    pub(super) fn recover(&mut self, roots: Vec<RootSummary>, letters: Vec<Letter>) {
        let n = roots.len();
        let known: std::collections::HashSet<&str> = roots.iter().map(|r| r.id.as_str()).collect();
        let mut others = Vec::new();
        for letter in letters {
            if known.contains(letter.target.as_str()) {
                self.restored_letters
                    .entry(letter.target.as_str().into())
                    .or_default()
                    .push(letter);
            } else {
                others.push(letter);
            }
        }
        drop(known);
        for root in roots {
            let id: Arc<str> = root.id.as_str().into();
            let wake_at = if self.restored_letters.contains_key(&id) {
                Some(0)
            } else {
                root.wake_at.map(|w| w.max(0) as u64)
            };
            let sleeping = Sleeping {
                wake_at,
                configuration: Box::default(),
                warm: None,
            };
            let src = self.srcs.intern(&root.src);
            self.interrupt_on_restore.insert(id.clone());
            self.meta
                .insert(id.clone(), stored_meta(root, src, Some(sleeping)));
            if let Some(due) = wake_at {
                self.sleepers.push(Reverse((due, id)));
            }
            // (The server counted them as running and hibernated already.)
        }
        for letter in others {
            let (id, target) = (letter.id.clone(), letter.target.clone());
            if self.ctx.sessions.pool().post_letter(letter).is_err() {
                tracing::debug!(session = %target, "a stored event for no session dropped");
                self.letters_done.borrow_mut().push(id);
            }
        }
        if n > 0 {
            tracing::info!(
                worker = self.index,
                sessions = n,
                "sessions recovered from the store"
            );
        }
    }

    /// If `command` is for a session that is asleep or may be in the
    /// store, parks it until the session is woken and returns `None`.
    pub(super) fn park_for_wake(&mut self, command: Command) -> Option<Command> {
        let id = match &command {
            Command::Event { id, .. }
            | Command::Query { id, .. }
            | Command::Terminate { id, .. } => id.as_str(),
            _ => return Some(command),
        };
        if self.host.session(id).is_some() {
            return Some(command);
        }
        let asleep = self.meta.get(id).is_some_and(|m| m.sleeping.is_some());
        let unknown = !self.meta.contains_key(id) && self.store.is_some();
        if !(asleep || unknown) {
            return Some(command);
        }
        let key: Arc<str> = id.into();
        if !self.waking.contains_key(&key)
            && let Some(rows) = self.take_warm(&key)
        {
            self.waking.insert(key.clone(), vec![command]);
            self.finish_wake(Woken {
                id: key,
                result: Ok(WakeData::Tree(rows)),
                warm: true,
            });
            return None;
        }
        self.begin_wake(key.clone());
        self.waking.entry(key).or_default().push(command);
        None
    }

    /// Takes a sleeping session's rows out of the warm tier.
    fn take_warm(&mut self, id: &str) -> Option<TreeRows> {
        let warm = self.meta.get_mut(id)?.sleeping.as_mut()?.warm.take()?;
        self.warm_bytes = self.warm_bytes.saturating_sub(warm.bytes);
        Metrics::dec(&self.ctx.metrics.sessions_warm);
        Some(warm.rows)
    }

    /// Drops the rows of the sessions longest in the warm tier while they
    /// are idle past `store.hibernate_after_secs` or the tier holds more
    /// than `store.warm_max_bytes` (they wake from the store from then on).
    pub(super) fn cool_warm(&mut self) {
        let settings = &self.ctx.config.store;
        let cold_after = settings.hibernate_after_secs;
        let max_bytes = usize::try_from(settings.warm_max_bytes).unwrap_or(usize::MAX);
        while let Some((id, entry)) = self.warm_order.front() {
            let Some(m) = self.meta.get_mut(id) else {
                self.warm_order.pop_front();
                continue;
            };
            let current = m
                .sleeping
                .as_ref()
                .and_then(|s| s.warm.as_ref())
                .is_some_and(|w| w.entry == *entry);
            if !current {
                self.warm_order.pop_front();
                continue;
            }
            let too_old =
                cold_after > 0 && m.last_active.elapsed() >= Duration::from_secs(cold_after);
            if !too_old && self.warm_bytes <= max_bytes {
                break;
            }
            if let Some(warm) = m.sleeping.as_mut().and_then(|s| s.warm.take()) {
                self.warm_bytes = self.warm_bytes.saturating_sub(warm.bytes);
                Metrics::dec(&self.ctx.metrics.sessions_warm);
            }
            self.warm_order.pop_front();
        }
    }

    /// Starts reading a session's tree from the store (once per id).
    pub(super) fn begin_wake(&mut self, id: Arc<str>) {
        if self.waking.contains_key(&id) {
            return;
        }
        if let Some(rows) = self.take_warm(&id) {
            self.waking.insert(id.clone(), Vec::new());
            self.finish_wake(Woken {
                id,
                result: Ok(WakeData::Tree(rows)),
                warm: true,
            });
            return;
        }
        self.waking.insert(id.clone(), Vec::new());
        let (Some(store), ctx, tx) = (self.store.clone(), self.ctx.clone(), self.wake_tx.clone())
        else {
            return;
        };
        // The store is driven from the server's multi-threaded runtime; the
        // worker only waits for the answer.
        let runtime = ctx.runtime.clone();
        let lookup = id.clone();
        tokio::task::spawn_local(async move {
            let result = runtime
                .spawn(async move { read_tree(&ctx, store.as_ref(), &lookup).await })
                .await
                .unwrap_or_else(|e| Err(format!("store read failed: {e}")));
            let _ = tx.send(Woken {
                id,
                result,
                warm: false,
            });
        });
    }

    /// Restores what a wake job found and runs the commands parked for it.
    pub(super) fn finish_wake(&mut self, woken: Woken) {
        self.ran_since_gc = true;
        let parked = self.waking.remove(&woken.id).unwrap_or_default();
        match woken.result {
            Ok(WakeData::Tree(rows)) => {
                let root: Arc<str> = rows
                    .first()
                    .map(|(r, _)| r.root.as_str().into())
                    .unwrap_or_else(|| woken.id.clone());
                if let Err(e) = self.restore_tree(&root, rows, woken.warm) {
                    tracing::error!(session = %root, error = %e, "cannot restore a session from the store");
                    if self.meta.contains_key(&root) {
                        self.wake_failed(&root);
                    }
                }
            }
            Ok(WakeData::Halted(row)) => {
                for command in parked {
                    self.answer_from_row(command, &row);
                }
                return;
            }
            Ok(WakeData::Missing) => {
                if let Some(m) = self.meta.get_mut(&woken.id)
                    && m.sleeping.is_some()
                {
                    tracing::error!(session = %woken.id, "a sleeping session is missing from the store");
                    self.wake_failed(&woken.id);
                }
            }
            Err(e) => {
                tracing::error!(session = %woken.id, error = %e, "cannot read a session from the store");
                for command in parked {
                    refuse(
                        command,
                        ApiError::unavailable("the session store cannot be read"),
                    );
                }
                // A sleeping session stays asleep; its timer is retried.
                if let Some(m) = self.meta.get(&woken.id)
                    && let Some(s) = &m.sleeping
                {
                    let due = s
                        .wake_at
                        .unwrap_or(wall_clock_ms())
                        .max(wall_clock_ms() + 1000);
                    self.sleepers.push(Reverse((due, woken.id.clone())));
                }
                return;
            }
        }
        for command in parked {
            self.dispatch(command);
        }
    }

    fn wake_failed(&mut self, id: &Arc<str>) {
        if let Some(m) = self.meta.get_mut(id) {
            m.sleeping = None;
            Metrics::dec(&self.ctx.metrics.sessions_hibernated);
        }
        self.mark_ended(id, Status::Failed);
    }

    /// Rebuilds a tree of sessions (parents first) in the host.
    fn restore_tree(
        &mut self,
        root: &Arc<str>,
        rows: Vec<(SessionRow, Option<Arc<Document>>)>,
        warm: bool,
    ) -> Result<(), String> {
        if self.host.session(root).is_some() {
            return Ok(());
        }
        let mut restored = Vec::new();
        for (row, doc) in &rows {
            let mut had_letters = false;
            let snapshot: SessionSnapshot = serde_json::from_str(&row.snapshot)
                .map_err(|e| format!("session {}: snapshot: {e}", row.id))?;
            let parent = match (&row.parent, &row.invokeid) {
                (Some(p), Some(i)) => {
                    Some((Arc::<str>::from(p.as_str()), Arc::<str>::from(i.as_str())))
                }
                _ => None,
            };
            let doc = match doc {
                Some(d) => d.clone(),
                None => self.inline_document(parent.as_ref(), &row.id)?,
            };
            let options = SessionOptions {
                session_id: Some(row.id.clone()),
                ..self.options.clone()
            };
            let mut session = Session::restore(doc, &snapshot, options)
                .map_err(|e| format!("session {}: {e}", row.id))?;
            if self.interrupt_on_restore.contains(root) {
                // Letters first: an answer on its way when the server
                // stopped settles its request rather than `interrupted`.
                for letter in self
                    .restored_letters
                    .remove(row.id.as_str())
                    .unwrap_or_default()
                {
                    for hook in &self.ctx.hooks {
                        hook.before_event(session.datamodel_mut(), &letter.event);
                    }
                    session.enqueue_external(letter.event);
                    self.letters_done.borrow_mut().push(letter.id);
                    had_letters = true;
                }
                let pending: Vec<(&str, &str)> = session
                    .pending_requests()
                    .iter()
                    .map(|(id, r)| (id.as_str(), r.name.as_str()))
                    .collect();
                let resumed: std::collections::HashSet<String> = self
                    .ctx
                    .hooks
                    .iter()
                    .flat_map(|h| h.resume_requests(&row.id, &pending))
                    .collect();
                let interrupted =
                    session.interrupt_requests(|requestid| resumed.contains(requestid));
                if interrupted > 0 {
                    tracing::warn!(session = %row.id, requests = interrupted,
                        "requests cut off when the server stopped are answered with error 'interrupted'");
                }
            }
            self.host.add_restored(session, parent);
            if had_letters {
                // The letters' deletion goes with this state.
                self.host.mark_touched(&row.id);
            }
            restored.push(row.id.clone());
        }
        self.interrupt_on_restore.remove(root);
        let first = rows.first().map(|(r, _)| r);
        let srcs = &mut self.srcs;
        let meta = self.meta.entry(root.clone()).or_insert_with(|| {
            // A running session the store has but this worker did not list
            // (written after the recovery scan, or by another node).
            Metrics::inc(&self.ctx.metrics.sessions_running);
            let summary = RootSummary {
                id: root.to_string(),
                src: first.map(|r| r.src.clone()).unwrap_or_default(),
                seq: first.map_or(0, |r| r.seq),
                started_at: first.map_or(0, |r| r.started_at),
                idealtime: first.and_then(|r| r.idealtime),
                events: first.map_or(0, |r| r.events),
                wake_at: None,
            };
            let src = srcs.intern(&summary.src);
            stored_meta(summary, src, None)
        });
        if meta.sleeping.take().is_some() {
            Metrics::dec(&self.ctx.metrics.sessions_hibernated);
        }
        if meta.persist && meta.status == Status::Running {
            self.awake.insert(root.clone());
        }
        meta.last_active = Instant::now();
        if warm {
            Metrics::inc(&self.ctx.metrics.sessions_woken_warm);
        } else {
            Metrics::inc(&self.ctx.metrics.sessions_woken);
        }
        tracing::debug!(session = %root, sessions = restored.len(), warm, "session woken");
        Ok(())
    }

    /// The document of a child whose `<invoke>` held it inline: found
    /// through its parent's active invokes.
    fn inline_document(
        &self,
        parent: Option<&(Arc<str>, Arc<str>)>,
        child: &str,
    ) -> Result<Arc<Document>, String> {
        let (parent, invokeid) =
            parent.ok_or_else(|| format!("session {child} has no document and no parent"))?;
        let session = self
            .host
            .session(parent)
            .ok_or_else(|| format!("session {child}: parent {parent} not restored"))?;
        let active = session
            .active_invokes()
            .get(invokeid)
            .ok_or_else(|| format!("session {child}: parent has no invoke '{invokeid}'"))?;
        let doc = session.document();
        doc.state(active.state)
            .invokes
            .get(active.index)
            .and_then(|i| i.inline_document.clone())
            .and_then(Result::ok)
            .ok_or_else(|| format!("session {child}: the parent's invoke has no inline document"))
    }

    /// Answers a command for a session that halted and left memory, from
    /// its last stored row.
    fn answer_from_row(&mut self, command: Command, row: &SessionRow) {
        let view = || view_from_row(row);
        match command {
            Command::Query { reply, .. } => {
                let _ = reply.send(Ok(view()));
            }
            Command::Event {
                reply, id, letter, ..
            } => {
                if let Some(letter) = letter {
                    self.letters_done.borrow_mut().push(letter);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(Err(ApiError::session_ended(&id)));
                }
            }
            Command::Terminate { reply, id, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(ApiError::session_ended(&id)));
                }
            }
            other => refuse(other, ApiError::internal("unexpected command")),
        }
    }

    /// Finds the sessions idle longer than the configured time (once a
    /// second); [`Worker::hibernate_some`] puts them to sleep a few at a
    /// time, so that thousands falling idle together never stall the
    /// worker's other sessions.
    pub(super) fn find_idle(&mut self) {
        if !self.hibernate_queue.is_empty() {
            return;
        }
        let committed = self.durable_through();
        let ready: Vec<Arc<str>> = self
            .awake
            .iter()
            .filter(|id| {
                self.meta
                    .get(*id)
                    .is_some_and(|m| self.may_hibernate(id, m, committed))
            })
            .cloned()
            .collect();
        self.hibernate_queue.extend(ready);
    }

    /// Whether a session may leave the engine now: its last batch is
    /// among those durable through `committed` ([`Worker::durable_through`])
    /// and not one whose write failed.
    fn may_hibernate(&self, id: &str, m: &Meta, committed: u64) -> bool {
        let after = self.leave_engine_after_secs();
        after > 0
            && self.store.is_some()
            && m.status == Status::Running
            && m.persist
            && m.sleeping.is_none()
            && m.last_batch <= committed
            && !self.resync.borrow().iter().any(|r| **r == *id)
            && m.last_active.elapsed() >= Duration::from_secs(after)
            && !self.waking.contains_key(id)
    }

    /// Idle seconds after which a session leaves the engine: into the
    /// warm tier when there is one, else to the store only.
    fn leave_engine_after_secs(&self) -> u64 {
        let s = &self.ctx.config.store;
        if self.warm_tier() {
            s.warm_after_secs
        } else {
            s.hibernate_after_secs
        }
    }

    /// Whether idle sessions pass through the warm tier.
    fn warm_tier(&self) -> bool {
        let s = &self.ctx.config.store;
        s.warm_after_secs > 0
            && (s.hibernate_after_secs == 0 || s.warm_after_secs < s.hibernate_after_secs)
    }

    /// Hibernates up to `limit` of the sessions found idle (each checked
    /// again: it may have run since).
    pub(super) fn hibernate_some(&mut self, limit: usize) {
        if self.hibernate_queue.is_empty() {
            return;
        }
        let committed = self.durable_through();
        let mut done = 0;
        while done < limit {
            let Some(root) = self.hibernate_queue.pop_front() else {
                break;
            };
            if self
                .meta
                .get(&root)
                .is_some_and(|m| self.may_hibernate(&root, m, committed))
            {
                self.hibernate(&root);
                done += 1;
            }
        }
    }

    /// Drops a tree of sessions from memory; the store has their state.
    pub(super) fn hibernate(&mut self, root: &Arc<str>) -> bool {
        let tree = self.host.tree_of(root);
        let mut wake_at: Option<u64> = None;
        for id in &tree {
            let Some(s) = self.host.session(id) else {
                continue;
            };
            if s.has_external() || self.host.is_loading_in(id) {
                return false;
            }
            if let Some(due) = s.next_timer_due() {
                wake_at = Some(wake_at.map_or(due, |w: u64| w.min(due)));
            }
        }
        let Some(session) = self.host.session(root) else {
            return false;
        };
        let configuration = session.configuration_shared_names();
        let warm = if self.warm_tier() {
            self.warm_rows(root, &tree)
        } else {
            None
        };
        self.host.remove(root);
        self.awake.remove(root);
        if let Some(m) = self.meta.get_mut(root) {
            let warm = warm.map(|(rows, bytes)| {
                self.warm_entries += 1;
                self.warm_bytes += bytes;
                self.warm_order.push_back((root.clone(), self.warm_entries));
                Metrics::inc(&self.ctx.metrics.sessions_warm);
                Box::new(Warm {
                    rows,
                    bytes,
                    entry: self.warm_entries,
                })
            });
            m.sleeping = Some(Sleeping {
                wake_at,
                configuration,
                warm,
            });
        }
        if let Some(due) = wake_at {
            self.sleepers.push(Reverse((due, root.clone())));
        }
        Metrics::inc(&self.ctx.metrics.sessions_hibernated);
        true
    }

    /// A tree's rows as the store has them (it is committed), for the warm
    /// tier, with their snapshot bytes; `None` when one cannot be made.
    fn warm_rows(&mut self, root: &Arc<str>, tree: &[Arc<str>]) -> Option<(TreeRows, usize)> {
        let mut rows = Vec::with_capacity(tree.len());
        let mut bytes = 0;
        let mut documents = Vec::new();
        for id in tree {
            let row = self.session_row(id, root, &mut documents).ok()??;
            let doc = row
                .doc_hash
                .as_ref()
                .and_then(|_| self.host.session(id))
                .map(|s| s.document().clone());
            bytes += row.snapshot.len();
            rows.push((row, doc));
        }
        Some((rows, bytes))
    }

    /// The earliest timer of a sleeping session (stale heap entries are
    /// dropped on the way).
    pub(super) fn next_sleeper_due(&mut self) -> Option<u64> {
        while let Some(Reverse((due, id))) = self.sleepers.peek() {
            let current = self
                .meta
                .get(id)
                .and_then(|m| m.sleeping.as_ref())
                .and_then(|s| s.wake_at);
            if current == Some(*due) && !self.waking.contains_key(id) {
                return Some(*due);
            }
            self.sleepers.pop();
        }
        None
    }

    /// Wakes every sleeping session whose timer is due.
    pub(super) fn wake_due_sleepers(&mut self, now: u64) {
        while let Some(due) = self.next_sleeper_due() {
            if due > now {
                break;
            }
            if let Some(Reverse((_, id))) = self.sleepers.pop() {
                self.begin_wake(id);
            }
        }
    }

    /// Writes what this batch changed and, once it is durable (at once
    /// when nothing needs writing), answers `replies` and lets the custom
    /// actions' deferred work run: an effect outside the server never
    /// comes from a state the store does not have, and what a crash cuts
    /// off after the write is answered at restart
    /// ([`Session::interrupt_requests`]). Events sent to other workers'
    /// sessions are written as letters in the same batch
    /// ([`crate::server::outbox`]) and posted as soon as it is queued:
    /// batches are applied in order, so a receiver's state with such an
    /// event is never stored before its sender's.
    pub(super) fn persist_and_reply(
        &mut self,
        replies: Vec<(Reply<SessionView>, Result<SessionView, ApiError>)>,
    ) {
        let touched = self.host.take_touched();
        let removed = self.host.take_removed();
        let jobs = self.host.take_deferred();
        let sends: Vec<Letter> = std::mem::take(&mut *self.held_sends.borrow_mut())
            .into_iter()
            .map(|(target, event)| Letter::new(target, event))
            .collect();
        let Some(commits) = self.commits.clone() else {
            self.letters_done.borrow_mut().clear();
            send_all(replies, Ok(()));
            self.post_letters(sends);
            release(jobs);
            return;
        };
        self.take_failed_writes();
        let batch_no = self.batch_no + 1;
        let mut batch = WriteBatch::default();
        // Letters sent go with their senders' states, letters received
        // with their receivers' (`crate::server::outbox`).
        batch
            .statements
            .extend(sends.iter().filter_map(Letter::insert_statement));
        let letters_done = std::mem::take(&mut *self.letters_done.borrow_mut());
        batch
            .statements
            .extend(outbox::delete_statements(&letters_done));
        let mut roots: Vec<Arc<str>> = std::mem::take(&mut *self.resync.borrow_mut());
        let mut ids: Vec<Arc<str>> = Vec::with_capacity(touched.len());
        for root in &roots {
            ids.extend(self.host.tree_of(root));
        }
        ids.extend(touched);
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let mut failed: Vec<Arc<str>> = Vec::new();
        for id in ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(root) = self.host.root_of(&id) else {
                continue;
            };
            let Some(meta) = self.meta.get_mut(&root) else {
                continue;
            };
            meta.last_active = now;
            if !meta.persist {
                continue;
            }
            meta.last_batch = batch_no;
            if failed.contains(&root) {
                continue;
            }
            match self.session_row(&id, &root, &mut batch.documents) {
                Ok(Some(row)) => {
                    batch.upserts.push(row);
                    roots.push(root);
                }
                Ok(None) => {}
                Err(()) => failed.push(root),
            }
        }
        let mut removed = removed;
        for root in failed {
            // Its state cannot be kept: the tree stops here, and what is
            // written (and acknowledged) is that it failed and why.
            let reason = self
                .host
                .session(&root)
                .and_then(|s| s.stop_reason().map(str::to_string))
                .unwrap_or_default();
            self.host.fail(&root, &reason);
            tracing::error!(session = %root, %reason, "session failed: its state cannot be kept");
            self.mark_failed(&root, reason);
            removed.extend(self.host.take_removed());
            batch.upserts.retain(|r| *r.root != *root);
            if let Ok(Some(row)) = self.session_row(&root, &root, &mut batch.documents) {
                batch.upserts.push(row);
                roots.push(root);
            }
        }
        batch.deletes = removed.iter().map(|id| id.to_string()).collect();
        if batch.is_empty() {
            send_all(replies, Ok(()));
            release(jobs);
            return;
        }
        self.batch_no = batch_no;
        let writes = self.writes.clone();
        writes.in_flight.fetch_add(1, Ordering::AcqRel);
        // Replies leave from the committer's thread once the batch is
        // durable, unless this batch sends letters to other workers'
        // sessions: those are posted below, after the submit (their rows
        // are in the batch), and a client answered before they are posted
        // could reach a receiving session ahead of them. Then the replies
        // wait on this thread, as deferred work (ORS actions' requests)
        // always does.
        let (replies_now, replies_later) = if sends.is_empty() {
            (replies, Vec::new())
        } else {
            (Vec::new(), replies)
        };
        let later = (!jobs.is_empty() || !replies_later.is_empty()).then(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::task::spawn_local(async move {
                let result = rx.await.unwrap_or(Err(crate::store::CommitError::Stopped));
                send_all(replies_later, result);
                release(jobs);
            });
            tx
        });
        commits.submit_then(
            batch,
            Box::new(move |result| {
                match &result {
                    Ok(()) => {
                        writes.committed.fetch_max(batch_no, Ordering::AcqRel);
                    }
                    Err(_) => {
                        // The states stay in memory and are written again
                        // with the next batch: the process goes on from them.
                        writes
                            .failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((roots, letters_done));
                    }
                }
                if let Some(tx) = later {
                    let _ = tx.send(result.clone());
                }
                send_all(replies_now, result);
                writes.in_flight.fetch_sub(1, Ordering::AcqRel);
            }),
        );
        self.post_letters(sends);
    }

    /// The highest batch durable, with every write that failed before it
    /// taken back into `resync` (read in that order: the committer answers
    /// batches in order, so a failure of an earlier batch is never missed
    /// by a check against the number returned).
    pub(super) fn durable_through(&mut self) -> u64 {
        let committed = self.writes.committed();
        self.take_failed_writes();
        committed
    }

    /// Takes back the roots and letters of writes that failed, to be
    /// written with the next batch.
    pub(super) fn take_failed_writes(&mut self) {
        let failed =
            std::mem::take(&mut *self.writes.failed.lock().unwrap_or_else(|e| e.into_inner()));
        for (roots, letters) in failed {
            self.resync.borrow_mut().extend(roots);
            self.letters_done.borrow_mut().extend(letters);
        }
    }

    /// Posts letters to their sessions (other workers').
    fn post_letters(&self, letters: Vec<Letter>) {
        for letter in letters {
            let _ = self.ctx.sessions.pool().post_letter(letter);
        }
    }

    /// A session's row, with its document queued if not yet stored.
    fn session_row(
        &mut self,
        id: &Arc<str>,
        root: &Arc<str>,
        documents: &mut Vec<DocumentRow>,
    ) -> Result<Option<SessionRow>, ()> {
        let Some(meta) = self.meta.get(root) else {
            return Ok(None);
        };
        let is_root = id == root;
        let (src, status, events) = if is_root {
            (
                meta.src.to_string(),
                meta.status.label(),
                meta.events as i64,
            )
        } else {
            (String::new(), Status::Running.label(), 0)
        };
        let (seq, started_at, ended_at, idealtime) = (
            meta.seq as i64,
            meta.started_at as i64,
            meta.ended
                .as_deref()
                .map(|&(_, t)| t as i64)
                .filter(|_| is_root),
            meta.idealtime.map(|t| t as i64),
        );
        let parent = self.host.parent_of(id);
        let Some(session) = self.host.session_mut(id) else {
            return Ok(None);
        };
        let snapshot = if session.is_running() {
            match session.snapshot_text() {
                Ok(s) => s,
                Err(e) => {
                    // The tree's root is stopped with this reason by the caller.
                    let reason = format!("the session's state cannot be kept: {e}");
                    if let Some(root) = self.host.session_mut(root) {
                        root.stop_with_reason(reason);
                    }
                    return Err(());
                }
            }
        } else {
            match session.snapshot_text() {
                Ok(text) => text,
                Err(_) => match serde_json::to_string(&session.stopped_snapshot()) {
                    Ok(text) => text,
                    Err(_) => return Ok(None),
                },
            }
        };
        let wake_at = if !session.is_running() {
            None
        } else if session.has_external() || !session.pending_requests().is_empty() {
            // (Requests pending: a process that starts on this row wakes
            // the session at once, to answer the ones that died with us.)
            Some(wall_clock_ms() as i64)
        } else {
            session.next_timer_due().map(|t| t as i64)
        };
        let doc = session.document().clone();
        let src = if is_root {
            src
        } else {
            doc.location.clone().unwrap_or_else(|| "inline".into())
        };
        let doc_hash = self.document_hash(&doc, documents);
        Ok(Some(SessionRow {
            id: id.to_string(),
            root: root.to_string(),
            parent: parent.as_ref().map(|(p, _)| p.to_string()),
            invokeid: parent.as_ref().map(|(_, i)| i.to_string()),
            src,
            doc_hash,
            status: status.to_string(),
            seq,
            started_at,
            ended_at,
            idealtime,
            events,
            wake_at,
            snapshot,
        }))
    }

    /// The stored hash of a document with text; its text goes with the
    /// batch (once per batch).
    fn document_hash(
        &mut self,
        doc: &Arc<Document>,
        documents: &mut Vec<DocumentRow>,
    ) -> Option<String> {
        let text = doc.source.as_ref()?;
        let key = Arc::as_ptr(doc) as usize;
        let hash = match self.document_hashes.get(&key) {
            Some((_, h)) => h.clone(),
            None => {
                let h = crate::store::document_hash(text);
                self.document_hashes.insert(key, (doc.clone(), h.clone()));
                h
            }
        };
        if !documents.iter().any(|d| d.hash == hash) {
            documents.push(DocumentRow {
                hash: hash.clone(),
                location: doc.location.clone(),
                text: text.clone(),
            });
        }
        Some(hash)
    }

    /// Waits until every write this worker submitted has been answered.
    pub(super) async fn drain_commits(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.writes.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Reads a session's tree (or learns it halted or does not exist).
async fn read_tree(
    ctx: &Arc<WorkerContext>,
    store: &dyn crate::store::Store,
    id: &str,
) -> Result<WakeData, String> {
    let rows = store.load_tree_of(id).await.map_err(|e| e.to_string())?;
    let Some(row) = rows.iter().find(|r| r.id == id) else {
        return Ok(WakeData::Missing);
    };
    if row.status != Status::Running.label() {
        return Ok(WakeData::Halted(Box::new(row.clone())));
    }
    let mut tree = Vec::with_capacity(rows.len());
    for row in rows {
        let doc = match &row.doc_hash {
            Some(hash) => Some(stored_document(ctx, hash).await?),
            None => None,
        };
        tree.push((row, doc));
    }
    Ok(WakeData::Tree(tree))
}

/// A document stored under `hash`, parsed once per server.
async fn stored_document(ctx: &Arc<WorkerContext>, hash: &str) -> Result<Arc<Document>, String> {
    if let Some(doc) = ctx
        .stored_documents
        .lock()
        .ok()
        .and_then(|m| m.get(hash).cloned())
    {
        return Ok(doc);
    }
    let store = ctx.store.clone().ok_or("no store")?;
    let row = store.load_document(hash).await.map_err(|e| e.to_string())?;
    let location = row
        .location
        .clone()
        .unwrap_or_else(|| format!("stored:{hash}"));
    let doc = ctx
        .documents
        .build(&row.text, &location)
        .await
        .map_err(|e| format!("stored document {hash}: {e}"))?;
    let doc = Arc::new(doc);
    if let Ok(mut m) = ctx.stored_documents.lock() {
        m.insert(hash.to_string(), doc.clone());
    }
    Ok(doc)
}

/// What the committer's thread tells a worker about the batches it
/// submitted.
#[derive(Default)]
pub(super) struct Writes {
    /// The highest batch committed.
    committed: AtomicU64,
    /// Batches submitted and not yet answered.
    in_flight: AtomicUsize,
    /// The roots and letters of batches whose write failed.
    #[allow(clippy::type_complexity)]
    failed: std::sync::Mutex<Vec<(Vec<Arc<str>>, Vec<Arc<str>>)>>,
}

impl Writes {
    /// The highest batch committed.
    pub(super) fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }
}

/// Lets custom actions' deferred work run on this worker.
fn release(jobs: Vec<crate::interpreter::Deferred>) {
    for job in jobs {
        tokio::task::spawn_local(job);
    }
}

fn send_all(
    replies: Vec<(Reply<SessionView>, Result<SessionView, ApiError>)>,
    stored: Result<(), crate::store::CommitError>,
) {
    for (reply, view) in replies {
        let answer = match &stored {
            Ok(()) => view,
            Err(_) => Err(ApiError::unavailable(
                "the session's new state could not be stored; it was applied but is not durable",
            )),
        };
        let _ = reply.send(answer);
    }
}

fn refuse(command: Command, error: ApiError) {
    match command {
        Command::Event { reply: Some(r), .. }
        | Command::Terminate { reply: Some(r), .. }
        | Command::Start { reply: Some(r), .. }
        | Command::Query { reply: r, .. } => {
            let _ = r.send(Err(error));
        }
        _ => {}
    }
}

/// What the worker keeps about a running top-level session read from the
/// store.
fn stored_meta(root: RootSummary, src: Arc<str>, sleeping: Option<Sleeping>) -> Box<Meta> {
    let ms = |t: i64| t.max(0) as u64;
    Box::new(Meta {
        seq: ms(root.seq),
        src,
        started_at: ms(root.started_at),
        idealtime: root.idealtime.map(ms),
        status: Status::Running,
        ended: None,
        events: ms(root.events),
        last_active: Instant::now(),
        last_batch: 0,
        persist: true,
        sleeping,
        reason: None,
        retired: None,
    })
}

/// A halted session's view from its stored row (configuration and data
/// from its last snapshot).
fn view_from_row(row: &SessionRow) -> SessionView {
    let snapshot: Option<SessionSnapshot> = serde_json::from_str(&row.snapshot).ok();
    let reason = snapshot.as_ref().and_then(|s| s.stop_reason.clone());
    let status = match row.status.as_str() {
        "completed" => Status::Completed,
        "terminated" => Status::Terminated,
        "running" => Status::Running,
        _ => Status::Failed,
    };
    SessionView {
        sessionid: row.id.clone(),
        status: status.label(),
        src: Some(row.src.clone()),
        name: snapshot.as_ref().and_then(|s| s.document_name.clone()),
        started_at: Some(row.started_at.max(0) as u64),
        ended_at: row.ended_at.map(|t| t.max(0) as u64),
        idealtime: row.idealtime.map(|t| t.max(0) as u64),
        events: row.events.max(0) as u64,
        start_seq: row.seq.max(0) as u64,
        configuration: snapshot
            .as_ref()
            .map(|s| s.configuration.clone())
            .unwrap_or_default(),
        data: snapshot.map(|s| match crate::datamodel::plain_json(&s.datamodel) {
            Value::Object(vars) => {
                Value::Object(vars.into_iter().filter(|(k, _)| k != "_genesys").collect())
            }
            other => other,
        }),
        pending_timers: None,
        invokes: None,
        hibernated: false,
        reason,
    }
}
