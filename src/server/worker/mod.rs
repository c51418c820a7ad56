//! The session host of `ors serve`: a fixed pool of worker threads, each a
//! single-threaded tokio runtime with a [`LocalHost`] holding the sessions
//! pinned to it for life (boa contexts are not `Send`). Everything that
//! crosses threads is a [`Command`] of plain owned data.
//!
//! A session id names its worker: 24 random hex digits, then two digits
//! for the worker. Invoked children live on their parent's worker; a
//! `<send>` to `#_scxml_<id>` on another worker goes through that worker's
//! channel. A worker drains its channel in batches, runs every session
//! that has events until all are idle, then answers the requests of the
//! batch, so acknowledgements come after the event was processed and,
//! with a store, after its new state was committed ([`durable`]).

mod durable;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::error::ApiError;
use super::metrics::Metrics;
use super::outbox::Letter;
use crate::host::{LocalHost, wall_clock_ms};
use crate::interpreter::{Event, Session, SessionOptions};
use crate::model::Document;

/// A reply channel for one API call.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// What the workers share: the narrow set of server parts a worker uses.
pub struct WorkerContext {
    /// Settings.
    pub config: Arc<super::Config>,
    /// The pool and session starts (events between workers).
    pub sessions: super::Sessions,
    /// Document cache and allow-list (invoked children's documents).
    pub documents: Arc<super::documents::Documents>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Where sessions are persisted (`None`: memory only).
    pub store: Option<Arc<dyn crate::store::Store>>,
    /// The group committer in front of the store.
    pub commits: Option<crate::store::CommitHandle>,
    /// The custom actions sessions can use.
    pub custom_actions: Arc<crate::interpreter::CustomActions>,
    /// The script that defines `_genesys` in each session.
    pub prelude: Arc<str>,
    /// Location prefix of sessions for the Basic HTTP Event I/O Processor
    /// (`http://<listen address>/basichttp/`).
    pub basichttp_base: String,
    /// The multi-threaded runtime the server was built in (store I/O).
    pub runtime: tokio::runtime::Handle,
    /// Documents read back from the store, by hash.
    pub stored_documents: std::sync::Mutex<HashMap<String, Arc<Document>>>,
    /// Extensions' hooks, run before a session processes an external event.
    pub hooks: Vec<Arc<dyn super::SessionHook>>,
    /// The watchdog, told which session each worker runs (`ors serve`).
    pub watch: Option<Arc<super::watchdog::Watch>>,
}

/// A request to a worker.
pub enum Command {
    /// Create and start a session.
    Start {
        /// The new session's id (it names this worker).
        id: String,
        /// The document to run.
        doc: Arc<Document>,
        /// Values for the data model (script parameters, start parameters).
        data: Map<String, Value>,
        /// Where the document came from, for queries.
        src: String,
        /// The `idealtime` start parameter, if given.
        idealtime: Option<u64>,
        /// Answered with the session's view after its first macrostep.
        reply: Option<Reply<SessionView>>,
    },
    /// Queue an external event.
    Event {
        /// Target session.
        id: String,
        /// The event.
        event: Event,
        /// Answered after the event was processed.
        reply: Option<Reply<SessionView>>,
        /// The outbox row that carries it ([`crate::server::outbox`]),
        /// deleted with the state of the session that got it.
        letter: Option<Arc<str>>,
    },
    /// Describe a session, with its data model.
    Query {
        /// The session.
        id: String,
        /// The answer.
        reply: Reply<SessionView>,
    },
    /// Stop a session.
    Terminate {
        /// The session.
        id: String,
        /// Answered once it stopped.
        reply: Option<Reply<SessionView>>,
    },
    /// Take over sessions the store holds as running (at server start).
    Recover {
        /// The sessions whose ids name this worker.
        roots: Vec<crate::store::RootSummary>,
        /// The letters still stored for sessions of this worker, oldest
        /// first ([`crate::server::outbox`]).
        letters: Vec<Letter>,
    },
    /// List the top-level sessions of this worker.
    List {
        /// The answer.
        reply: oneshot::Sender<Vec<SessionView>>,
    },
    /// Finish the current batch and stop the worker.
    Stop,
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// The session id.
    pub sessionid: String,
    /// `running`, `completed`, `terminated` or `failed`.
    pub status: &'static str,
    /// The URL or path of the document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// The document's `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Start time, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When the session ended, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    /// The `idealtime` start parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idealtime: Option<u64>,
    /// External events processed.
    pub events: u64,
    /// Start order across all workers (sorts the session list).
    #[serde(skip)]
    pub start_seq: u64,
    /// Active states in document order.
    pub configuration: Vec<String>,
    /// The data model's variables (queries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Delayed sends waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_timers: Option<usize>,
    /// Invoked children by invoke id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invokes: Option<Vec<String>>,
    /// Whether the session is asleep in the store (idle; woken by its next
    /// event, timer or query).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hibernated: bool,
    /// Why a `failed` session was stopped (a limit it ran into, a state
    /// that could not be kept, a quarantine after crashing the server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Handles to the workers; cheap to share.
pub struct Pool {
    senders: Vec<mpsc::UnboundedSender<Command>>,
    next: AtomicUsize,
}

pub use crate::ids::worker_of;

impl Pool {
    /// Channels for `workers` workers; the receivers go to [`spawn_workers`].
    pub fn new(workers: usize) -> (Pool, Vec<mpsc::UnboundedReceiver<Command>>) {
        let (senders, receivers) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        (
            Pool {
                senders,
                next: AtomicUsize::new(0),
            },
            receivers,
        )
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether the pool has no workers.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// An id for a new session, on the next worker in turn.
    pub fn new_session_id(&self) -> String {
        let w = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len().max(1);
        crate::ids::session_id(w)
    }

    /// Sends a command to the worker that owns `id`.
    pub fn send(&self, id: &str, command: Command) -> Result<(), ApiError> {
        let w = worker_of(id, self.senders.len()).ok_or_else(|| ApiError::session_not_found(id))?;
        self.senders[w]
            .send(command)
            .map_err(|_| ApiError::unavailable("the session's worker has stopped"))
    }

    /// Sends a command to worker `w` (recovery at start).
    pub fn send_to_worker(&self, w: usize, command: Command) -> bool {
        self.senders.get(w).is_some_and(|s| s.send(command).is_ok())
    }

    /// Sends a command to every worker (for listing).
    pub fn broadcast(&self, mut make: impl FnMut() -> Command) -> usize {
        self.senders
            .iter()
            .filter(|s| s.send(make()).is_ok())
            .count()
    }

    /// Queues an event for a session without waiting (jobs, routing).
    pub fn post_event(&self, id: &str, event: Event) -> Result<(), ApiError> {
        self.send(
            id,
            Command::Event {
                id: id.to_string(),
                event,
                reply: None,
                letter: None,
            },
        )
    }

    /// Queues a letter's event for its session without waiting; the
    /// worker deletes the letter with the state of the session that got
    /// it (or at once when there is no such session).
    pub fn post_letter(&self, letter: Letter) -> Result<(), ApiError> {
        self.send(
            &letter.target.clone(),
            Command::Event {
                id: letter.target,
                event: letter.event,
                reply: None,
                letter: Some(letter.id),
            },
        )
    }
}

/// The stack of a worker thread, in bytes.
const WORKER_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Starts one thread per receiver; they stop when every sender is gone.
pub fn spawn_workers(
    ctx: Arc<WorkerContext>,
    receivers: Vec<mpsc::UnboundedReceiver<Command>>,
) -> Vec<std::thread::JoinHandle<()>> {
    receivers
        .into_iter()
        .enumerate()
        .map(|(index, rx)| {
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name(format!("ors-worker-{index}"))
                // boa's parser and some built-ins recurse on what a script
                // nests; a roomy stack (address space, touched only as
                // used) keeps that an error rather than an overflow.
                .stack_size(WORKER_STACK_BYTES)
                .spawn(move || run_worker(index, ctx, rx))
                .expect("spawning a worker thread")
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    Completed,
    Terminated,
    Failed,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Terminated => "terminated",
            Status::Failed => "failed",
        }
    }
}

/// The `src` values of a worker's sessions, each held once: a million
/// sessions of one strategy share one string. Values no session holds any
/// more are dropped whenever the set has doubled since the last sweep.
#[derive(Default)]
struct SrcNames {
    names: HashSet<Arc<str>>,
    /// How many names the last sweep kept.
    kept: usize,
}

impl SrcNames {
    /// The shared string equal to `src`.
    fn intern(&mut self, src: &str) -> Arc<str> {
        if let Some(name) = self.names.get(src) {
            return name.clone();
        }
        if self.names.len() >= 2 * self.kept + 64 {
            self.names.retain(|n| Arc::strong_count(n) > 1);
            self.kept = self.names.len();
        }
        let name: Arc<str> = src.into();
        self.names.insert(name.clone());
        name
    }
}

/// What the worker knows about a top-level session beyond the engine.
struct Meta {
    seq: u64,
    /// The `src` it was started with (shared: [`SrcNames`]).
    src: Arc<str>,
    started_at: u64,
    idealtime: Option<u64>,
    status: Status,
    /// When it halted: the instant (for retention) and the wall clock (ms
    /// since the epoch, for views); boxed, as most sessions known are
    /// running or asleep.
    ended: Option<Box<(Instant, u64)>>,
    events: u64,
    /// When its tree last ran.
    last_active: Instant,
    /// The last write batch that carried its tree.
    last_batch: u64,
    /// Whether its document may be persisted (`_persist`, and a store).
    persist: bool,
    /// Set while it sleeps in the store.
    sleeping: Option<durable::Sleeping>,
    /// Why it failed, once it has.
    reason: Option<Box<str>>,
    /// What queries show of it once it has halted and left the engine.
    retired: Option<Box<Retired>>,
}

impl Meta {
    /// What a query shows of a session the engine does not hold (asleep,
    /// failed, retired) from this record alone; callers add what they know.
    fn view(&self, id: &str) -> SessionView {
        SessionView {
            sessionid: id.to_string(),
            status: self.status.label(),
            src: Some(self.src.to_string()),
            name: None,
            started_at: Some(self.started_at),
            ended_at: self.ended.as_deref().map(|&(_, t)| t),
            idealtime: self.idealtime,
            events: self.events,
            start_seq: self.seq,
            configuration: Vec::new(),
            data: None,
            pending_timers: None,
            invokes: None,
            hibernated: false,
            reason: self.reason.as_deref().map(str::to_string),
        }
    }
}

/// A halted top-level session as queries show it, kept as plain data once
/// its last state is committed: the engine's `Session` (and every
/// ECMAScript object of its data model) is dropped, so the sessions a
/// worker retains for `limits.halted_retention_secs` cost the collector
/// nothing (issue 19: the collector's work follows the running sessions).
struct Retired {
    name: Option<String>,
    configuration: Vec<String>,
    data: Value,
}

struct Worker {
    /// Sessions were still ready when the last batch's step budget ran
    /// out: the worker comes back for them without waiting.
    more_ready: bool,
    index: usize,
    ctx: Arc<WorkerContext>,
    host: LocalHost,
    /// Boxed: the table holds every session the worker knows, asleep
    /// ones included, and hashbrown keeps up to twice as many slots as
    /// entries, so each slot is a key and a pointer (a million sessions
    /// asleep once took half a gigabyte of slots).
    meta: HashMap<Arc<str>, Box<Meta>>,
    options: SessionOptions,
    acks: Vec<(String, Reply<SessionView>)>,
    /// Answers computed during the batch, sent once it is durable.
    ready_replies: Vec<(Reply<SessionView>, Result<SessionView, ApiError>)>,
    last_sweep: Instant,
    store: Option<Arc<dyn crate::store::Store>>,
    commits: Option<crate::store::CommitHandle>,
    /// Write batches submitted.
    batch_no: u64,
    /// What the committer has answered about them.
    writes: Arc<durable::Writes>,
    /// Roots whose last write failed (written again with the next batch).
    resync: Rc<RefCell<Vec<Arc<str>>>>,
    /// Events this worker's sessions sent to sessions of other workers,
    /// held until the batch that sent them is queued for writing (they
    /// are written with it as letters, [`crate::server::outbox`]).
    held_sends: Rc<RefCell<Vec<(String, Event)>>>,
    /// Letters this worker's sessions got (or that found no session), to
    /// be deleted by the next batch.
    letters_done: Rc<RefCell<Vec<Arc<str>>>>,
    /// Letters read back at start for roots taken over from the store, by
    /// target: queued when the root is first restored.
    restored_letters: HashMap<Arc<str>, Vec<Letter>>,
    /// Roots taken over from the store at start and not restored since:
    /// their first restore answers the requests that died with the last
    /// process ([`Session::interrupt_requests`]).
    interrupt_on_restore: HashSet<Arc<str>>,
    document_hashes: HashMap<usize, (Arc<Document>, String)>,
    /// The `src` of every session this worker knows, one string per
    /// distinct value ([`SrcNames::intern`]).
    srcs: SrcNames,
    /// Timers of sleeping sessions (lazy: checked against `Meta` when due).
    sleepers: BinaryHeap<Reverse<(u64, Arc<str>)>>,
    /// Top-level sessions in memory that may go to sleep (persisted and
    /// running), so finding idle ones never walks the sleeping majority.
    awake: HashSet<Arc<str>>,
    /// Halted sessions in the order they ended, for the retention sweep.
    ended_order: VecDeque<(Instant, Arc<str>)>,
    /// Halted sessions still in the engine, in the order they ended, to be
    /// retired once their last write is committed.
    to_retire: VecDeque<Arc<str>>,
    /// When the ECMAScript garbage was last collected, how long that took,
    /// and whether sessions have run since.
    last_gc: Instant,
    gc_took: Duration,
    ran_since_gc: bool,
    /// Idle sessions about to be put to sleep, a few per batch.
    hibernate_queue: VecDeque<Arc<str>>,
    /// Commands waiting for a session to be read from the store.
    waking: HashMap<Arc<str>, Vec<Command>>,
    /// Sessions that entered the warm tier, oldest first, with the
    /// number of their entry (stale once woken), and the bytes it holds.
    warm_order: VecDeque<(Arc<str>, u64)>,
    warm_bytes: usize,
    warm_entries: u64,
    wake_tx: mpsc::UnboundedSender<durable::Woken>,
}

/// Most sessions put to sleep after one batch (each takes a few µs).
const HIBERNATE_PER_BATCH: usize = 64;

/// Counts session starts across workers, so lists keep start order even
/// within one millisecond.
static START_SEQ: AtomicU64 = AtomicU64::new(0);

/// Most macrosteps one batch runs before the worker answers what it has
/// and looks at its channel again: a session that sends itself events
/// forever slows its worker down but cannot freeze it.
const STEPS_PER_BATCH: usize = 10_000;

fn run_worker(index: usize, ctx: Arc<WorkerContext>, mut rx: mpsc::UnboundedReceiver<Command>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot start a worker runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
        let mut worker = Worker::new(index, ctx, wake_tx);
        let mut fetches = crate::host::Fetches::new();
        loop {
            let due = match (worker.host.next_timer_due(), worker.next_sleeper_due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let mut wait = due.map(|d| Duration::from_millis(d.saturating_sub(wall_clock_ms())));
            if !worker.hibernate_queue.is_empty() || worker.more_ready {
                // Idle sessions are waiting to be put to sleep: come back
                // at once for the next few, unless a command arrives.
                wait = Some(Duration::ZERO);
            }
            let command = tokio::select! {
                c = rx.recv() => match c { Some(c) => Some(c), None => break },
                Some(woken) = wake_rx.recv() => {
                    worker.guarded(|w| w.finish_wake(woken));
                    while let Ok(woken) = wake_rx.try_recv() {
                        worker.guarded(|w| w.finish_wake(woken));
                    }
                    None
                }
                (fetch, result) = fetches.next() => {
                    worker.guarded(|w| w.host.fetched(fetch, result));
                    None
                }
                // At least once a second, so idle sessions get put to sleep
                // and halted ones forgotten.
                _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX).min(Duration::from_secs(1))) => None,
            };
            let mut stop = false;
            if let Some(c) = command {
                stop |= matches!(c, Command::Stop);
                worker.guarded(|w| w.handle(c));
                // Take what else is queued, so one settle serves a batch.
                for _ in 0..512 {
                    match rx.try_recv() {
                        Ok(c) => {
                            stop |= matches!(c, Command::Stop);
                            worker.guarded(|w| w.handle(c));
                        }
                        Err(_) => break,
                    }
                }
            }
            worker.guarded(Worker::settle);
            fetches.start(&mut worker.host);
            worker.collect_garbage_when_due();
            if stop {
                worker.drain_commits().await;
                break;
            }
            // Let spawned jobs (fetches, starts) make progress.
            tokio::task::yield_now().await;
        }
        tracing::debug!(worker = index, "worker stopped");
    });
    // Jobs still pending (a store query of a deferred action, say) are
    // dropped with the task set; some release resources by spawning a
    // task (sqlx returns a connection to its pool), which needs a runtime.
    let _context = runtime.enter();
    drop(local);
}

impl Worker {
    fn new(
        index: usize,
        ctx: Arc<WorkerContext>,
        wake_tx: mpsc::UnboundedSender<durable::Woken>,
    ) -> Worker {
        let log_hooks = ctx.hooks.clone();
        let log: crate::host::SessionLogSink =
            Box::new(move |session, document, label, message| {
                match label {
                    Some(label) => tracing::info!(session, document, label, "{message}"),
                    None => tracing::info!(session, document, "{message}"),
                }
                for hook in &log_hooks {
                    hook.on_log(session, label, message);
                }
            });
        let config = &ctx.config;
        let options = SessionOptions {
            session_id: None,
            limits: crate::datamodel::ScriptLimits {
                loop_iterations: config.limits.script_loop_iterations,
                recursion: config.limits.script_recursion,
                snapshot_depth: config.limits.max_data_depth.min(120),
                snapshot_bytes: config.limits.max_data_bytes,
                ..Default::default()
            },
            custom_actions: ctx.custom_actions.clone(),
            ioprocessors: Arc::new(
                ["basichttp", crate::io::basichttp::BASICHTTP_TYPE]
                    .into_iter()
                    .map(|k| (k.to_string(), ctx.basichttp_base.clone()))
                    .collect(),
            ),
            max_microsteps: config.limits.max_microsteps,
            max_macrostep_ms: config.limits.max_macrostep_ms,
            max_self_events: config.limits.max_self_events,
            max_macrostep_memory_bytes: config
                .limits
                .max_macrostep_memory_mb
                .saturating_mul(1 << 20),
            initial_data: Map::new(),
            declare_undeclared_data: true,
            prelude: Some(ctx.prelude.clone()),
        };
        let mut host = LocalHost::new(options.clone(), log);
        if let Some(watch) = &ctx.watch {
            host.set_run_observer(watch.observer(index));
        }
        let tracers: Vec<_> = ctx
            .hooks
            .iter()
            .filter(|h| h.wants_trace())
            .cloned()
            .collect();
        if !tracers.is_empty() {
            host.set_trace(Box::new(move |session, _, line| {
                for hook in &tracers {
                    hook.on_trace(session, line);
                }
            }));
        }
        host.set_id_generator(Box::new(move || crate::ids::session_id(index)));
        // An event for another worker's session leaves with the write of
        // the sender's new state, as a letter in it (`persist_and_reply`):
        // after a crash, no session holds an event from a state its
        // sender never kept, and no kept sender's event is lost.
        let held_sends: Rc<RefCell<Vec<(String, Event)>>> = Rc::default();
        let held = held_sends.clone();
        let workers = ctx.sessions.pool().len();
        host.set_remote_router(Box::new(move |id, event| {
            if worker_of(id, workers).is_none() {
                return Err(crate::interpreter::DispatchError(format!(
                    "no session '{id}'"
                )));
            }
            held.borrow_mut().push((id.to_string(), event));
            Ok(())
        }));
        // Basic HTTP sends go out from this worker; a failed POST comes back
        // as error.communication through the pool like any other event.
        let (failures, mut failed) = mpsc::channel::<(String, Event)>(256);
        let policy = ctx.documents.policy().clone();
        let mut client =
            crate::io::basichttp::Client::new(Some(ctx.basichttp_base.clone()), failures)
                .with_target_filter(Arc::new(move |url| {
                    policy.check(url).map_err(|e| e.to_string())
                }));
        if let Some(auth) = ctx.config.security.operator.authorization_header() {
            client = client.with_own_authorization(auth);
        }
        host.set_basichttp(client);
        let failure_ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            while let Some((session, event)) = failed.recv().await {
                let _ = failure_ctx.sessions.post_event(&session, event);
            }
        });
        // Children's documents: from the cache at once, else fetched as a
        // task on this worker's LocalSet (run_worker drives `fetches`).
        let load_ctx = ctx.clone();
        host.set_document_loader(Box::new(move |url| {
            match load_ctx.documents.child_now(url) {
                Some(ready) => crate::host::ChildLoad::Ready(ready),
                None => {
                    let (ctx, url) = (load_ctx.clone(), url.to_string());
                    crate::host::ChildLoad::Pending(Box::pin(async move {
                        ctx.documents.load_child(&url).await
                    }))
                }
            }
        }));
        host.accept_deferred();
        Worker {
            index,
            store: ctx.store.clone(),
            commits: ctx.commits.clone(),
            ctx,
            host,
            meta: HashMap::new(),
            options,
            acks: Vec::new(),
            ready_replies: Vec::new(),
            last_sweep: Instant::now(),
            batch_no: 0,
            writes: Arc::default(),
            resync: Rc::new(RefCell::new(Vec::new())),
            held_sends,
            letters_done: Rc::default(),
            restored_letters: HashMap::new(),
            interrupt_on_restore: HashSet::new(),
            document_hashes: HashMap::new(),
            srcs: SrcNames::default(),
            sleepers: BinaryHeap::new(),
            hibernate_queue: VecDeque::new(),
            warm_order: VecDeque::new(),
            warm_bytes: 0,
            warm_entries: 0,
            last_gc: Instant::now(),
            gc_took: Duration::ZERO,
            ran_since_gc: false,
            more_ready: false,
            awake: HashSet::new(),
            ended_order: VecDeque::new(),
            to_retire: VecDeque::new(),
            waking: HashMap::new(),
            wake_tx,
        }
    }

    /// Runs `f`; a panic (a bug, never bad input) is logged and the worker
    /// goes on with its other sessions.
    fn guarded(&mut self, f: impl FnOnce(&mut Worker)) {
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| f(self))) {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            tracing::error!(worker = self.index, panic = %what, "a session failed inside the engine");
            self.host.reset_running();
            Metrics::inc(&self.ctx.metrics.sessions_failed);
            // Sessions that lost their state are marked failed.
            let lost: Vec<Arc<str>> = self
                .meta
                .iter()
                .filter(|(id, m)| m.status == Status::Running && self.host.session(id).is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in lost {
                self.mark_ended(&id, Status::Failed);
            }
            self.acks.clear();
            self.ready_replies.clear();
        }
    }

    fn handle(&mut self, command: Command) {
        if let Some(command) = self.park_for_wake(command) {
            self.dispatch(command);
        }
    }

    /// Carries out a command for a session in memory (or answers that it
    /// is not there).
    fn dispatch(&mut self, command: Command) {
        match command {
            Command::Start {
                id,
                doc,
                data,
                src,
                idealtime,
                reply,
            } => {
                let options = SessionOptions {
                    session_id: Some(id.clone()),
                    initial_data: data,
                    ..self.options.clone()
                };
                let persist = doc.persist && self.store.is_some();
                let document = doc.name.clone().unwrap_or_default();
                let session = Session::new(doc, options);
                let key = self.host.add(session);
                if persist {
                    self.awake.insert(key.clone());
                }
                let src = self.srcs.intern(&src);
                self.meta.insert(
                    key.clone(),
                    Box::new(Meta {
                        seq: START_SEQ.fetch_add(1, Ordering::Relaxed),
                        src,
                        started_at: wall_clock_ms(),
                        idealtime,
                        status: Status::Running,
                        ended: None,
                        events: 0,
                        last_active: Instant::now(),
                        last_batch: 0,
                        persist,
                        sleeping: None,
                        reason: None,
                        retired: None,
                    }),
                );
                // `sessions_running` was raised when the start was admitted.
                Metrics::inc(&self.ctx.metrics.sessions_started);
                tracing::info!(session = %key, document, src = %self.meta[&key].src, "session started");
                self.host.start(&key);
                if !self.ctx.hooks.is_empty()
                    && let Some(session) = self.host.session(&key)
                {
                    for hook in &self.ctx.hooks {
                        hook.after_macrostep(&key, session, None);
                    }
                }
                if let Some(reply) = reply {
                    self.acks.push((id, reply));
                }
            }
            Command::Event {
                id,
                event,
                reply,
                letter,
            } => {
                if !self.ctx.hooks.is_empty()
                    && let Some(session) = self.host.session_mut(&id)
                {
                    for hook in &self.ctx.hooks {
                        hook.before_event(session.datamodel_mut(), &event);
                    }
                }
                let accepted = self.host.deliver(&id, event);
                // Delivered: deleted with the session's state that has it
                // queued; not delivered: nothing will ever take it.
                if let Some(letter) = letter {
                    self.letters_done.borrow_mut().push(letter);
                }
                match reply {
                    Some(reply) if !accepted => {
                        let _ = reply.send(Err(self.missing(&id)));
                    }
                    Some(reply) => self.acks.push((id, reply)),
                    None => {
                        if !accepted {
                            tracing::debug!(session = %id, "event for a session that is gone dropped");
                        }
                    }
                }
            }
            Command::Query { id, reply } => {
                let _ = reply.send(self.view(&id, true));
            }
            Command::Terminate { id, reply } => {
                let known = self.host.session(&id).is_some()
                    || self
                        .meta
                        .get(id.as_str())
                        .is_some_and(|m| m.ended.is_some());
                let result = if self.host.terminate(&id) {
                    if let Some(key) = self.meta.get_key_value(id.as_str()).map(|(k, _)| k.clone())
                    {
                        self.mark_ended(&key, Status::Terminated);
                    }
                    tracing::info!(session = %id, "session terminated");
                    self.view(&id, false)
                } else if known {
                    Err(ApiError::session_ended(&id))
                } else {
                    Err(ApiError::session_not_found(&id))
                };
                if let Some(reply) = reply {
                    self.ready_replies.push((reply, result));
                }
            }
            Command::Recover { roots, letters } => {
                if let Some(max) = roots.iter().map(|r| r.seq.max(0) as u64).max() {
                    START_SEQ.fetch_max(max + 1, Ordering::Relaxed);
                }
                self.recover(roots, letters);
            }
            Command::List { reply } => {
                let ids: Vec<Arc<str>> = self.meta.keys().cloned().collect();
                let mut list: Vec<SessionView> = ids
                    .iter()
                    .filter_map(|id| self.view(id, false).ok())
                    .collect();
                list.sort_by_key(|v| v.start_seq);
                let _ = reply.send(list);
            }
            Command::Stop => {}
        }
    }

    fn missing(&self, id: &str) -> ApiError {
        if self.host.session(id).is_some() || self.meta.get(id).is_some_and(|m| m.ended.is_some()) {
            ApiError::session_ended(id)
        } else {
            ApiError::session_not_found(id)
        }
    }

    /// Retires the halted sessions whose last state is committed (or that
    /// are not persisted): each becomes a [`Retired`] record and leaves the
    /// engine. Sessions end, and their writes commit, in order, so the
    /// walk stops at the first one still waiting for its commit.
    fn retire_halted(&mut self) {
        let committed = self.durable_through();
        while let Some(id) = self.to_retire.front().cloned() {
            let Some(meta) = self.meta.get(&id) else {
                self.to_retire.pop_front();
                continue;
            };
            let resyncing = self.resync.borrow().contains(&id);
            if meta.persist && (meta.last_batch > committed || resyncing) {
                break;
            }
            self.to_retire.pop_front();
            if meta.ended.is_none() || self.host.session(&id).is_none() {
                continue;
            }
            let Ok(view) = self.view(&id, true) else {
                continue;
            };
            if let Some(m) = self.meta.get_mut(&id) {
                m.retired = Some(Box::new(Retired {
                    name: view.name,
                    configuration: view.configuration,
                    data: view.data.unwrap_or(Value::Null),
                }));
            }
            self.host.remove(&id);
            Metrics::inc(&self.ctx.metrics.sessions_retired);
        }
    }

    /// Collects this thread's ECMAScript garbage between batches, often
    /// and so in small pieces. Left to itself, boa collects once its heap
    /// passes a threshold that only ever grows, so after a burst of
    /// sessions every later collection sweeps a large heap at once (pauses
    /// of 40-70 ms were seen while waking sessions). The interval adapts:
    /// at least 100 ms, and 20 times the last collection's duration, so
    /// collecting costs at most about 5% of the worker's time.
    fn collect_garbage_when_due(&mut self) {
        if !self.ran_since_gc {
            return;
        }
        let interval = (self.gc_took * 20).max(Duration::from_millis(100));
        if self.last_gc.elapsed() < interval {
            return;
        }
        let started = Instant::now();
        boa_engine::gc::force_collect();
        self.gc_took = started.elapsed();
        self.last_gc = Instant::now();
        self.ran_since_gc = false;
    }

    /// Runs every session with work until idle, fires due timers, then
    /// answers the batch's requests and spawns the jobs actions queued.
    fn settle(&mut self) {
        let now = wall_clock_ms();
        self.wake_due_sleepers(now);
        self.host.fire_due_timers(now);
        let metrics = self.ctx.metrics.clone();
        let hooks = &self.ctx.hooks;
        let meta = &mut self.meta;
        let mut last = Instant::now();
        let mut ran = false;
        self.more_ready = self
            .host
            .run_for(STEPS_PER_BATCH, &mut |id, session, event| {
                for hook in hooks {
                    hook.after_macrostep(id, session, Some(event));
                }
                ran = true;
                let now = Instant::now();
                metrics.observe_macrostep(now.duration_since(last).as_micros() as u64);
                last = now;
                Metrics::inc(&metrics.events_processed);
                if let Some(m) = meta.get_mut(id) {
                    m.events += 1;
                }
            });
        for id in self.host.take_halted() {
            if self
                .meta
                .get(&id)
                .is_some_and(|m| m.status == Status::Running)
            {
                match self.host.session(&id).and_then(Session::stop_reason) {
                    Some(reason) => {
                        let reason = reason.to_string();
                        tracing::warn!(session = %id, %reason, "session failed");
                        self.mark_failed(&id, reason);
                    }
                    None => {
                        tracing::info!(session = %id, "session completed");
                        self.mark_ended(&id, Status::Completed);
                    }
                }
            }
        }
        let mut replies = std::mem::take(&mut self.ready_replies);
        self.ran_since_gc |= ran || !replies.is_empty() || !self.acks.is_empty();
        for (id, reply) in std::mem::take(&mut self.acks) {
            let view = self.view(&id, false);
            replies.push((reply, view));
        }
        self.persist_and_reply(replies);
        if self.last_sweep.elapsed() > Duration::from_secs(1) {
            self.sweep();
        }
        self.hibernate_some(HIBERNATE_PER_BATCH);
        if self.warm_bytes
            > usize::try_from(self.ctx.config.store.warm_max_bytes).unwrap_or(usize::MAX)
        {
            self.cool_warm();
        }
        self.retire_halted();
    }

    /// Marks a session failed and keeps why.
    fn mark_failed(&mut self, id: &Arc<str>, reason: String) {
        if let Some(m) = self.meta.get_mut(id)
            && m.status == Status::Running
        {
            m.reason = Some(reason.into());
        }
        self.mark_ended(id, Status::Failed);
    }

    fn mark_ended(&mut self, id: &Arc<str>, status: Status) {
        if let Some(m) = self.meta.get_mut(id)
            && m.status == Status::Running
        {
            m.status = status;
            for hook in &self.ctx.hooks {
                hook.session_ended(id);
            }
            let now = Instant::now();
            m.ended = Some(Box::new((now, wall_clock_ms())));
            self.awake.remove(id);
            self.ended_order.push_back((now, id.clone()));
            self.to_retire.push_back(id.clone());
            let metrics = &self.ctx.metrics;
            Metrics::dec(&metrics.sessions_running);
            Metrics::inc(&metrics.sessions_retained);
            match status {
                Status::Completed => Metrics::inc(&metrics.sessions_completed),
                Status::Terminated => Metrics::inc(&metrics.sessions_terminated),
                Status::Failed | Status::Running => {}
            }
        }
    }

    /// Forgets halted sessions kept longer than the retention time (the
    /// store keeps them until its own purge) and puts idle ones to sleep.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        self.find_idle();
        self.cool_warm();
        let keep = Duration::from_secs(self.ctx.config.limits.halted_retention_secs);
        while let Some((at, _)) = self.ended_order.front() {
            if at.elapsed() < keep {
                break;
            }
            let Some((_, id)) = self.ended_order.pop_front() else {
                break;
            };
            if self.meta.get(&id).is_some_and(|m| m.ended.is_some()) {
                if self.meta.get(&id).is_some_and(|m| m.retired.is_some()) {
                    Metrics::dec(&self.ctx.metrics.sessions_retired);
                }
                self.meta.remove(&id);
                self.host.remove(&id);
                Metrics::dec(&self.ctx.metrics.sessions_retained);
            }
        }
    }

    fn view(&mut self, id: &str, with_data: bool) -> Result<SessionView, ApiError> {
        let meta = self.meta.get(id);
        let Some(session) = self.host.session(id) else {
            return match meta {
                Some(m) if m.retired.is_some() => {
                    let retired = m.retired.as_deref().expect("retired");
                    Ok(SessionView {
                        name: retired.name.clone(),
                        configuration: retired.configuration.clone(),
                        data: with_data.then(|| retired.data.clone()),
                        pending_timers: with_data.then_some(0),
                        invokes: with_data.then(Vec::new),
                        ..m.view(id)
                    })
                }
                Some(m) if m.sleeping.is_some() => Ok(SessionView {
                    configuration: m
                        .sleeping
                        .as_ref()
                        .map(|s| s.configuration.iter().map(|n| n.to_string()).collect())
                        .unwrap_or_default(),
                    hibernated: true,
                    ..m.view(id)
                }),
                Some(m) if m.status == Status::Failed => Ok(m.view(id)),
                _ => Err(ApiError::session_not_found(id)),
            };
        };
        let status = match meta {
            Some(m) => m.status,
            None if session.is_running() => Status::Running,
            None => Status::Completed,
        };
        let mut view = SessionView {
            sessionid: id.to_string(),
            status: status.label(),
            src: meta.map(|m| m.src.to_string()),
            name: session.document().name.clone(),
            started_at: meta.map(|m| m.started_at),
            ended_at: meta.and_then(|m| m.ended.as_deref().map(|&(_, t)| t)),
            idealtime: meta.and_then(|m| m.idealtime),
            events: meta.map(|m| m.events).unwrap_or(0),
            start_seq: meta.map(|m| m.seq).unwrap_or(u64::MAX),
            configuration: session.configuration_names(),
            data: None,
            pending_timers: None,
            invokes: None,
            hibernated: false,
            reason: meta
                .and_then(|m| m.reason.as_deref().map(str::to_string))
                .or_else(|| session.stop_reason().map(str::to_string)),
        };
        if with_data {
            view.pending_timers = Some(session.pending_timers());
            view.invokes = Some(
                session
                    .active_invokes()
                    .keys()
                    .map(|k| k.to_string())
                    .collect(),
            );
            view.data = Some(self.data_of(id));
        }
        Ok(view)
    }

    /// The session's variables as plain JSON (system variables and the
    /// `_genesys` object left out).
    fn data_of(&mut self, id: &str) -> Value {
        let Some(session) = self.host.session_mut(id) else {
            return Value::Null;
        };
        match session.datamodel_mut().snapshot() {
            Ok(vars) => match crate::datamodel::plain_json(&vars) {
                Value::Object(vars) => {
                    Value::Object(vars.into_iter().filter(|(k, _)| k != "_genesys").collect())
                }
                other => other,
            },
            Err(e) => {
                tracing::warn!(session = id, error = %e, "cannot read the data model");
                Value::Null
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SrcNames;
    use std::sync::Arc;

    /// One string per distinct `src`, and the ones no session holds any
    /// more are dropped once the set has grown past its last sweep.
    #[test]
    fn src_names_are_shared_and_forgotten_once_unused() {
        let mut names = SrcNames::default();
        let a = names.intern("a.scxml");
        let again = names.intern("a.scxml");
        assert!(Arc::ptr_eq(&a, &again), "one string for one src");
        drop(again);
        for i in 0..200 {
            // Each dropped at once: only `a` is still held.
            names.intern(&format!("once-{i}.scxml"));
        }
        assert!(
            names.names.len() <= 2 * names.kept + 64 && names.names.len() < 100,
            "{} names kept",
            names.names.len()
        );
        assert!(
            Arc::ptr_eq(&a, &names.intern("a.scxml")),
            "a held name survives sweeps"
        );
    }
}
