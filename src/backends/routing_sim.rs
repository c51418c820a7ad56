//! The embedded routing simulator: agents with a place, groups, skills
//! with levels, a logged-in and a ready state, and a capacity and a load
//! per media, reserved for interactions the way URS would.
//!
//! # Targets
//!
//! `reserve` parses the request's `_target` with
//! [`crate::backends::target::parse_target_option`]. A named target selects:
//! `A` the agent with that id (or that name), `AP` the agent at that
//! place, `GA`, `GP` and `GC` the agents listing that name in their
//! `groups` (place and campaign groups are simply group names here). A
//! skill expression selects every agent whose skill levels satisfy it.
//!
//! # Availability and choice
//!
//! An agent is available for a media when logged in, ready, and their
//! load in that media (reservations, confirmed or not) is below their
//! capacity for it. Among a request's available candidates the simulator
//! picks the least loaded in the request's media; ties go to the agent
//! idle longest (the longest since their last reservation; never reserved
//! counts as longest), then to the agent listed first (configuration, then
//! admin additions).
//!
//! # Waiting
//!
//! A request no agent can take waits. Steps of a multi-step target are
//! walked in order: a step whose `stat_to_check` condition holds is
//! skipped unless it is the last (a skipped step adds no candidates); the
//! request waits on a step for its `timeout` (none: until the request's
//! own timeout), and on the last step until the request's `timeout_ms`.
//! When a step's `clear` is false the next step's candidates are added to
//! its own, when true they replace them; the target reported as
//! `target_selected` is the latest step's target that selects the agent.
//!
//! Whenever an agent gains room (made ready, logged in, added, a
//! reservation released or expired), the requests waiting for that agent
//! are served in priority order (higher first), then arrival order. Each
//! agent keeps an index of the requests that could use them, so serving
//! costs a few map operations, not a scan of every waiting request; the
//! waiting requests themselves sleep on a oneshot channel and a tokio
//! timer inside their own `reserve` future, so nothing polls.
//!
//! # Reservations
//!
//! A reservation not confirmed within the request's `reserve_ms` is
//! released by a timer task on the simulator's own background thread
//! (see `backends/background.rs`), never on the caller's runtime;
//! `reserve_ms` 0 means the reservation never expires by itself.
//! `confirm` cancels that timer; `release` frees the capacity.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::background::Background;
use super::routing::{Reservation, ReserveRequest, RoutingBackend, RoutingError};
use super::settings::{AgentSettings, SimulatorSettings};
use super::{BoxFuture, SimError, lock, new_id};
use crate::backends::target::{Selector, StatCheck, Target, TargetKind, TargetStep};
use crate::backends::target::{parse_target, parse_target_option};

/// The simulator's `ExpectedWaitTime`: seconds per request waiting on a
/// target with no free agent.
pub const EWT_SECS_PER_WAITING: usize = 60;

/// What a waiting `reserve` receives.
type Outcome = Result<Reservation, RoutingError>;

/// Orders waiting requests: higher priority first, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct WaitKey {
    priority: Reverse<i64>,
    seq: u64,
}

/// An agent as the simulator tracks them.
struct Agent {
    settings: AgentSettings,
    name: String,
    place: String,
    logged_in: bool,
    ready: bool,
    load: BTreeMap<String, u32>,
    last_reserved: Option<Instant>,
    /// Per media, the waiting requests whose candidates include this agent.
    waiting: HashMap<String, BTreeSet<WaitKey>>,
}

impl Agent {
    fn new(settings: AgentSettings) -> Agent {
        Agent {
            name: settings.display_name(),
            place: settings.effective_place(),
            logged_in: true,
            ready: settings.ready,
            load: BTreeMap::new(),
            last_reserved: None,
            waiting: HashMap::new(),
            settings,
        }
    }

    fn id(&self) -> &str {
        &self.settings.id
    }

    fn load_of(&self, media: &str) -> u32 {
        self.load.get(media).copied().unwrap_or(0)
    }

    fn capacity_of(&self, media: &str) -> u32 {
        self.settings.capacity.get(media).copied().unwrap_or(0)
    }

    /// Logged in, ready and below capacity for `media`.
    fn free_for(&self, media: &str) -> bool {
        self.logged_in && self.ready && self.load_of(media) < self.capacity_of(media)
    }

    /// Logged in, ready and below capacity for some media.
    fn free_for_any(&self) -> bool {
        self.logged_in
            && self.ready
            && self
                .settings
                .capacity
                .iter()
                .any(|(media, cap)| self.load_of(media) < *cap)
    }

    fn selected_by(&self, target: &Target) -> bool {
        match &target.selector {
            Selector::Skills(expr) => {
                expr.matches(&|skill: &str| self.settings.skills.get(skill).copied())
            }
            Selector::Named(name) => match target.kind {
                TargetKind::Agent => self.settings.id == *name || self.name == *name,
                TargetKind::AgentPlace => self.place == *name,
                TargetKind::AgentGroup | TargetKind::PlaceGroup | TargetKind::CampaignGroup => {
                    self.settings.groups.iter().any(|g| g == name)
                }
            },
        }
    }

    fn status(&self) -> AgentStatus {
        AgentStatus {
            id: self.settings.id.clone(),
            name: self.name.clone(),
            place: self.place.clone(),
            groups: self.settings.groups.clone(),
            skills: self.settings.skills.clone(),
            logged_in: self.logged_in,
            ready: self.ready,
            capacity: self.settings.capacity.clone(),
            load: self.load.clone(),
            auto_accept: self.settings.auto_accept,
        }
    }
}

/// An agent's state as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The agent's id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Place.
    pub place: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Skills and levels.
    pub skills: BTreeMap<String, f64>,
    /// Logged in (logged-out agents are never chosen).
    pub logged_in: bool,
    /// Ready.
    pub ready: bool,
    /// Capacity per media.
    pub capacity: BTreeMap<String, u32>,
    /// Current load per media (reservations, confirmed or not).
    pub load: BTreeMap<String, u32>,
    /// The agent's own auto-accept setting (`None`: the global one).
    pub auto_accept: Option<bool>,
}

/// A request waiting for an agent.
struct Waiter {
    request_id: String,
    virtual_queue: String,
    media: String,
    steps: Vec<TargetStep>,
    /// The step being waited on.
    step: usize,
    /// The steps whose targets make up the candidates (the current one
    /// last, earlier ones kept while `clear` was false).
    active: Vec<usize>,
    /// Candidate agent ids, each with the step whose target selected it.
    candidates: IndexMap<String, usize>,
    started: Instant,
    reserve_ms: u64,
    reply: Option<oneshot::Sender<Outcome>>,
}

/// A reservation.
struct Held {
    /// The request it was granted to.
    request_id: String,
    agent_id: String,
    media: String,
    confirmed: bool,
    expiry: Option<AbortHandle>,
}

/// Everything behind the simulator's one lock.
struct State {
    me: Weak<Mutex<State>>,
    timers: Handle,
    agents: IndexMap<String, Agent>,
    waiters: BTreeMap<WaitKey, Waiter>,
    by_request: HashMap<String, WaitKey>,
    held: HashMap<String, Held>,
    next_seq: u64,
}

impl State {
    /// Registers a request and enters its first step (which may reserve
    /// an agent at once); returns its key and how long to wait on the
    /// step (`None`: until the request's timeout).
    fn register(
        &mut self,
        request: &ReserveRequest,
        steps: Vec<TargetStep>,
        reply: oneshot::Sender<Outcome>,
    ) -> Result<(WaitKey, Option<Duration>), RoutingError> {
        if self.by_request.contains_key(&request.request_id) {
            return Err(RoutingError::Invalid(format!(
                "request '{}' is already waiting",
                request.request_id
            )));
        }
        self.next_seq += 1;
        let key = WaitKey {
            priority: Reverse(request.priority),
            seq: self.next_seq,
        };
        self.waiters.insert(
            key,
            Waiter {
                request_id: request.request_id.clone(),
                virtual_queue: request.virtual_queue.clone(),
                media: request.media.clone(),
                steps,
                step: 0,
                active: Vec::new(),
                candidates: IndexMap::new(),
                started: Instant::now(),
                reserve_ms: request.reserve_ms,
                reply: Some(reply),
            },
        );
        self.by_request.insert(request.request_id.clone(), key);
        let wait = self.enter_step(key, 0);
        Ok((key, wait))
    }

    /// Moves a waiting request to step `from` (or a later one, skipping
    /// steps whose stat check holds), recomputes its candidates and
    /// reserves one if available. Returns the wait for the step entered.
    fn enter_step(&mut self, key: WaitKey, from: usize) -> Option<Duration> {
        let waiter = self.waiters.get(&key)?;
        let last = waiter.steps.len().saturating_sub(1);
        let mut step = from.min(last);
        while step < last {
            match &waiter.steps[step].skip_when {
                Some(check) if self.check_holds(&waiter.steps[step].target, check) => step += 1,
                _ => break,
            }
        }
        let keep_previous = waiter
            .active
            .last()
            .is_some_and(|&previous| !waiter.steps[previous].clear);
        let mut active = if keep_previous {
            waiter.active.clone()
        } else {
            Vec::new()
        };
        active.push(step);
        let mut candidates = IndexMap::new();
        for &s in &active {
            for agent in self.agents.values() {
                if agent.selected_by(&waiter.steps[s].target) {
                    candidates.insert(agent.id().to_string(), s);
                }
            }
        }
        let wait = if step == last {
            None
        } else {
            waiter.steps[step].timeout_secs.map(Duration::from_secs)
        };
        self.unindex(key);
        if let Some(waiter) = self.waiters.get_mut(&key) {
            waiter.step = step;
            waiter.active = active;
            waiter.candidates = candidates;
        }
        self.index(key);
        if let Some(agent_id) = self.best_candidate(key) {
            self.assign(key, &agent_id);
        }
        wait
    }

    /// Whether a step's skip condition holds (an unknown statistic never
    /// does).
    fn check_holds(&self, target: &Target, check: &StatCheck) -> bool {
        self.statistic(target, &check.stat).is_ok_and(|value| {
            if check.greater {
                value > check.value
            } else {
                value < check.value
            }
        })
    }

    /// Adds a waiter to its candidates' indexes.
    fn index(&mut self, key: WaitKey) {
        let Some(waiter) = self.waiters.get(&key) else {
            return;
        };
        for id in waiter.candidates.keys() {
            if let Some(agent) = self.agents.get_mut(id) {
                agent
                    .waiting
                    .entry(waiter.media.clone())
                    .or_default()
                    .insert(key);
            }
        }
    }

    /// Removes a waiter from its candidates' indexes.
    fn unindex(&mut self, key: WaitKey) {
        let Some(waiter) = self.waiters.get(&key) else {
            return;
        };
        for id in waiter.candidates.keys() {
            if let Some(agent) = self.agents.get_mut(id)
                && let Some(set) = agent.waiting.get_mut(&waiter.media)
            {
                set.remove(&key);
                if set.is_empty() {
                    agent.waiting.remove(&waiter.media);
                }
            }
        }
    }

    /// Removes a waiting request.
    fn take_waiter(&mut self, key: WaitKey) -> Option<Waiter> {
        self.unindex(key);
        let waiter = self.waiters.remove(&key)?;
        self.by_request.remove(&waiter.request_id);
        Some(waiter)
    }

    /// The available candidate to reserve for a waiter (see the module
    /// docs for the order).
    fn best_candidate(&self, key: WaitKey) -> Option<String> {
        let waiter = self.waiters.get(&key)?;
        waiter
            .candidates
            .keys()
            .filter_map(|id| self.agents.get_full(id))
            .filter(|(_, _, agent)| agent.free_for(&waiter.media))
            .min_by_key(|(index, _, agent)| {
                (agent.load_of(&waiter.media), agent.last_reserved, *index)
            })
            .map(|(_, id, _)| id.clone())
    }

    /// Reserves `agent_id` for the waiter and hands the reservation over.
    fn assign(&mut self, key: WaitKey, agent_id: &str) {
        let Some(mut waiter) = self.take_waiter(key) else {
            return;
        };
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        *agent.load.entry(waiter.media.clone()).or_default() += 1;
        agent.last_reserved = Some(Instant::now());
        let reservation_id = format!("res-{}", new_id());
        let target_selected = waiter
            .candidates
            .get(agent_id)
            .map(|&s| waiter.steps[s].target.text.clone())
            .unwrap_or_default();
        let reservation = Reservation {
            reservation_id: reservation_id.clone(),
            agent_id: agent_id.to_string(),
            agent_name: agent.name.clone(),
            place: agent.place.clone(),
            target_selected,
            virtual_queue: waiter.virtual_queue.clone(),
            waited_ms: waiter.started.elapsed().as_millis() as u64,
        };
        let expiry = (waiter.reserve_ms > 0).then(|| {
            let state = self.me.clone();
            let id = reservation_id.clone();
            let after = Duration::from_millis(waiter.reserve_ms);
            self.timers
                .spawn(async move {
                    tokio::time::sleep(after).await;
                    if let Some(state) = state.upgrade() {
                        let mut state = lock(&state);
                        if state.held.get(&id).is_some_and(|h| !h.confirmed) {
                            state.release(&id);
                        }
                    }
                })
                .abort_handle()
        });
        self.held.insert(
            reservation_id.clone(),
            Held {
                request_id: waiter.request_id.clone(),
                agent_id: agent_id.to_string(),
                media: waiter.media.clone(),
                confirmed: false,
                expiry,
            },
        );
        let delivered = waiter
            .reply
            .take()
            .is_some_and(|reply| reply.send(Ok(reservation)).is_ok());
        if !delivered {
            // Nobody waits for it any more: undo without serving others
            // here (the caller serves the agent, or does next).
            self.drop_hold(&reservation_id);
        }
    }

    /// Removes a reservation and its load; true when it existed.
    fn drop_hold(&mut self, reservation_id: &str) -> Option<String> {
        let held = self.held.remove(reservation_id)?;
        if let Some(expiry) = held.expiry {
            expiry.abort();
        }
        if let Some(agent) = self.agents.get_mut(&held.agent_id)
            && let Some(load) = agent.load.get_mut(&held.media)
        {
            *load = load.saturating_sub(1);
            if *load == 0 {
                agent.load.remove(&held.media);
            }
        }
        Some(held.agent_id)
    }

    /// Ends a reservation and offers the agent's room to waiting requests.
    fn release(&mut self, reservation_id: &str) {
        if let Some(agent_id) = self.drop_hold(reservation_id) {
            self.serve_agent(&agent_id);
        }
    }

    /// Gives an agent's free room to the requests waiting for them, best
    /// key first, while there is room and a request.
    fn serve_agent(&mut self, agent_id: &str) {
        loop {
            let Some(agent) = self.agents.get(agent_id) else {
                return;
            };
            let next = agent
                .waiting
                .iter()
                .filter(|(media, _)| agent.free_for(media))
                .filter_map(|(_, keys)| keys.first().copied())
                .min();
            match next {
                Some(key) => self.assign(key, agent_id),
                None => return,
            }
        }
    }

    /// A statistic of a target.
    /// How many requests wait with `target` among their active steps.
    fn waiting_on(&self, target: &Target) -> usize {
        self.waiters
            .values()
            .filter(|w| {
                w.active
                    .iter()
                    .any(|&s| w.steps[s].target.text == target.text)
            })
            .count()
    }

    fn statistic(&self, target: &Target, stat: &str) -> Result<f64, RoutingError> {
        let selected = || self.agents.values().filter(|a| a.selected_by(target));
        let count = match stat {
            "RStatAgentsReady" | "StatAgentsAvailable" => {
                selected().filter(|a| a.free_for_any()).count()
            }
            "RStatAgentsTotal" => selected().filter(|a| a.logged_in).count(),
            "StatCallsWaiting" | "RStatCallsInQueue" => self.waiting_on(target),
            // The simulator's estimate, in seconds: nothing while an agent
            // of the target is free, else a minute per request waiting on
            // it (at least one).
            "ExpectedWaitTime" => {
                if selected().any(|a| a.free_for_any()) {
                    0
                } else {
                    self.waiting_on(target).max(1) * EWT_SECS_PER_WAITING
                }
            }
            _ => match stat.strip_prefix("RStatAgentsReady") {
                Some(media) if !media.is_empty() => {
                    selected().filter(|a| a.free_for(media)).count()
                }
                _ => {
                    return Err(RoutingError::Invalid(format!(
                        "unknown statistic '{stat}' (RStatAgentsReady, RStatAgentsReady<media>, \
                         RStatAgentsTotal, StatAgentsAvailable, StatCallsWaiting, \
                         RStatCallsInQueue or ExpectedWaitTime)"
                    )));
                }
            },
        };
        Ok(count as f64)
    }

    fn agent_mut(&mut self, id: &str) -> Result<&mut Agent, SimError> {
        self.agents
            .get_mut(id)
            .ok_or_else(|| SimError::NotFound(format!("no agent '{id}'")))
    }
}

/// `at + wait`, or about thirty years from `at` when that overflows (an
/// effectively endless timeout).
fn later(at: tokio::time::Instant, wait: Duration) -> tokio::time::Instant {
    at.checked_add(wait)
        .or_else(|| at.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(at)
}

/// Removes a `reserve` that ends early (dropped by its caller) from the
/// waiting requests, and gives back a reservation it was handed but never
/// returned.
struct WaitGuard<'a> {
    state: &'a Mutex<State>,
    key: WaitKey,
    reply: oneshot::Receiver<Outcome>,
    done: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = lock(self.state);
        if state.take_waiter(self.key).is_none()
            && let Ok(Ok(reservation)) = self.reply.try_recv()
        {
            state.release(&reservation.reservation_id);
        }
    }
}

/// The embedded routing simulator; see the module docs.
pub struct RoutingSim {
    state: Arc<Mutex<State>>,
    timers: Background,
}

impl RoutingSim {
    /// A simulator with the settings' agents
    /// ([`SimulatorSettings::effective_agents`]: the demo agents when none
    /// are configured), all logged in. Starts the background thread its
    /// timers run on.
    pub fn new(settings: &SimulatorSettings) -> Result<RoutingSim, super::SetupError> {
        let timers = Background::new("ors-sim-timers")?;
        let handle = timers.handle();
        let mut agents = IndexMap::new();
        for agent in settings.effective_agents() {
            agent.validate()?;
            if agents.contains_key(&agent.id) {
                return Err(super::SetupError::Settings(format!(
                    "agent id '{}' is used twice",
                    agent.id
                )));
            }
            agents.insert(agent.id.clone(), Agent::new(agent));
        }
        let state = Arc::new_cyclic(|me| {
            Mutex::new(State {
                me: me.clone(),
                timers: handle,
                agents,
                waiters: BTreeMap::new(),
                by_request: HashMap::new(),
                held: HashMap::new(),
                next_seq: 0,
            })
        });
        Ok(RoutingSim { state, timers })
    }

    /// The runtime the simulators' timers run on.
    pub(crate) fn timers(&self) -> Handle {
        self.timers.handle()
    }

    /// Every agent, in order.
    pub fn agents(&self) -> Vec<AgentStatus> {
        lock(&self.state)
            .agents
            .values()
            .map(Agent::status)
            .collect()
    }

    /// One agent.
    pub fn agent(&self, id: &str) -> Option<AgentStatus> {
        lock(&self.state).agents.get(id).map(Agent::status)
    }

    /// An agent's name and own auto-accept setting, for the chat
    /// simulator.
    pub(crate) fn agent_profile(&self, id: &str) -> Option<(String, Option<bool>)> {
        lock(&self.state)
            .agents
            .get(id)
            .map(|a| (a.name.clone(), a.settings.auto_accept))
    }

    /// Adds an agent, logged in; waiting requests it matches may take it
    /// at once. Fails when the id is empty or taken.
    pub fn add_agent(&self, settings: AgentSettings) -> Result<AgentStatus, SimError> {
        settings
            .validate()
            .map_err(|e| SimError::Invalid(e.to_string()))?;
        let mut state = lock(&self.state);
        if state.agents.contains_key(&settings.id) {
            return Err(SimError::Conflict(format!(
                "agent '{}' already exists",
                settings.id
            )));
        }
        let id = settings.id.clone();
        let mut agent = Agent::new(settings);
        let mut matched = Vec::new();
        for (key, waiter) in state.waiters.iter_mut() {
            if let Some(&step) = waiter
                .active
                .iter()
                .rev()
                .find(|&&s| agent.selected_by(&waiter.steps[s].target))
            {
                waiter.candidates.insert(id.clone(), step);
                matched.push((*key, waiter.media.clone()));
            }
        }
        for (key, media) in matched {
            agent.waiting.entry(media).or_default().insert(key);
        }
        let status = agent.status();
        state.agents.insert(id.clone(), agent);
        state.serve_agent(&id);
        Ok(state.agents.get(&id).map_or(status, Agent::status))
    }

    /// Removes an agent. Their reservations stay valid for `confirm` and
    /// `release`, which then change nothing.
    pub fn remove_agent(&self, id: &str) -> Result<(), SimError> {
        let mut state = lock(&self.state);
        let agent = state
            .agents
            .shift_remove(id)
            .ok_or_else(|| SimError::NotFound(format!("no agent '{id}'")))?;
        for key in agent.waiting.values().flatten() {
            if let Some(waiter) = state.waiters.get_mut(key) {
                waiter.candidates.shift_remove(id);
            }
        }
        Ok(())
    }

    /// Logs an agent in (waiting requests may take them at once) or out
    /// (never chosen while logged out).
    pub fn set_logged_in(&self, id: &str, logged_in: bool) -> Result<AgentStatus, SimError> {
        self.switch_agent(id, logged_in, |agent| agent.logged_in = logged_in)
    }

    /// Makes an agent ready (waiting requests may take them at once) or
    /// not ready.
    pub fn set_ready(&self, id: &str, ready: bool) -> Result<AgentStatus, SimError> {
        self.switch_agent(id, ready, |agent| agent.ready = ready)
    }

    /// Changes an agent with `change`; when the change made them available
    /// (`available`), waiting requests may take them at once.
    fn switch_agent(
        &self,
        id: &str,
        available: bool,
        change: impl FnOnce(&mut Agent),
    ) -> Result<AgentStatus, SimError> {
        let mut state = lock(&self.state);
        change(state.agent_mut(id)?);
        if available {
            state.serve_agent(id);
        }
        state
            .agents
            .get(id)
            .map(Agent::status)
            .ok_or_else(|| SimError::NotFound(format!("no agent '{id}'")))
    }

    /// Sets an agent's own auto-accept (`None`: follow the global setting).
    pub fn set_auto_accept(&self, id: &str, auto: Option<bool>) -> Result<AgentStatus, SimError> {
        let mut state = lock(&self.state);
        let agent = state.agent_mut(id)?;
        agent.settings.auto_accept = auto;
        Ok(agent.status())
    }

    /// How many requests are waiting.
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiters.len()
    }

    /// How many reservations exist (confirmed or not).
    pub fn reservations(&self) -> usize {
        lock(&self.state).held.len()
    }

    /// A statistic, as [`RoutingBackend::statistic`] computes it.
    pub fn statistic_now(&self, target: &str, stat: &str) -> Result<f64, RoutingError> {
        let target = parse_target(target).map_err(|e| RoutingError::Invalid(e.to_string()))?;
        lock(&self.state).statistic(&target, stat)
    }
}

impl RoutingBackend for RoutingSim {
    fn reserve(&self, request: ReserveRequest) -> BoxFuture<'_, Result<Reservation, RoutingError>> {
        Box::pin(async move {
            let steps = parse_target_option(&request.target)
                .map_err(|e| RoutingError::Invalid(e.to_string()))?;
            if request.media.trim().is_empty() {
                return Err(RoutingError::Invalid("the media is empty".to_string()));
            }
            let deadline = later(tokio::time::Instant::now(), request.timeout());
            let (reply, receiver) = oneshot::channel();
            let (key, wait) = lock(&self.state).register(&request, steps, reply)?;
            let mut guard = WaitGuard {
                state: &self.state,
                key,
                reply: receiver,
                done: false,
            };
            let step_deadline = |wait: Option<Duration>| {
                wait.map_or(deadline, |w| {
                    later(tokio::time::Instant::now(), w).min(deadline)
                })
            };
            let mut until = step_deadline(wait);
            loop {
                tokio::select! {
                    biased;
                    outcome = &mut guard.reply => {
                        guard.done = true;
                        return outcome.unwrap_or_else(|_| {
                            Err(RoutingError::Backend("the request was dropped".to_string()))
                        });
                    }
                    () = tokio::time::sleep_until(until) => {
                        let mut state = lock(&self.state);
                        let Some((step, steps)) =
                            state.waiters.get(&key).map(|w| (w.step, w.steps.len()))
                        else {
                            // Served or cancelled meanwhile: the outcome is
                            // in the channel.
                            continue;
                        };
                        if tokio::time::Instant::now() >= deadline {
                            state.take_waiter(key);
                            guard.done = true;
                            return Err(RoutingError::Timeout);
                        }
                        until = if step + 1 < steps {
                            step_deadline(state.enter_step(key, step + 1))
                        } else {
                            deadline
                        };
                    }
                }
            }
        })
    }

    fn cancel(&self, request_id: &str) -> BoxFuture<'_, bool> {
        let mut state = lock(&self.state);
        let mut cancelled = match state.by_request.get(request_id).copied() {
            Some(key) => state.take_waiter(key).is_some_and(|mut w| {
                if let Some(reply) = w.reply.take() {
                    let _ = reply.send(Err(RoutingError::Cancelled));
                }
                true
            }),
            None => false,
        };
        // An agent already reserved for it and not yet confirmed is let go
        // (its answer may never have reached the requester: a restart).
        let granted: Vec<String> = state
            .held
            .iter()
            .filter(|(_, h)| h.request_id == request_id && !h.confirmed)
            .map(|(id, _)| id.clone())
            .collect();
        for reservation_id in granted {
            state.release(&reservation_id);
            cancelled = true;
        }
        Box::pin(std::future::ready(cancelled))
    }

    fn confirm(&self, reservation_id: &str) -> BoxFuture<'_, Result<(), RoutingError>> {
        let mut state = lock(&self.state);
        let result = match state.held.get_mut(reservation_id) {
            Some(held) => {
                held.confirmed = true;
                if let Some(expiry) = held.expiry.take() {
                    expiry.abort();
                }
                Ok(())
            }
            None => Err(RoutingError::Unknown(reservation_id.to_string())),
        };
        Box::pin(std::future::ready(result))
    }

    fn release(&self, reservation_id: &str) -> BoxFuture<'_, ()> {
        lock(&self.state).release(reservation_id);
        Box::pin(std::future::ready(()))
    }

    fn statistic(&self, target: &str, stat: &str) -> BoxFuture<'_, Result<f64, RoutingError>> {
        Box::pin(std::future::ready(self.statistic_now(target, stat)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, groups: &[&str], chat: u32) -> AgentSettings {
        AgentSettings {
            capacity: BTreeMap::from([("chat".to_string(), chat), ("voice".to_string(), 1)]),
            ..AgentSettings::new(id, &format!("Agent {id}"), groups)
        }
    }

    fn not_ready(mut a: AgentSettings) -> AgentSettings {
        a.ready = false;
        a
    }

    fn sim(agents: Vec<AgentSettings>) -> Arc<RoutingSim> {
        Arc::new(
            RoutingSim::new(&SimulatorSettings {
                agents,
                ..SimulatorSettings::default()
            })
            .unwrap(),
        )
    }

    fn request(id: &str, target: &str, timeout_ms: u64) -> ReserveRequest {
        ReserveRequest {
            request_id: id.to_string(),
            interaction_id: format!("ixn-{id}"),
            virtual_queue: "VQ".to_string(),
            media: "chat".to_string(),
            target: target.to_string(),
            priority: 0,
            timeout_ms,
            reserve_ms: 60_000,
        }
    }

    /// Starts a reserve on its own task.
    fn spawn_reserve(
        sim: &Arc<RoutingSim>,
        request: ReserveRequest,
    ) -> tokio::task::JoinHandle<Result<Reservation, RoutingError>> {
        let sim = sim.clone();
        tokio::spawn(async move { sim.reserve(request).await })
    }

    /// Waits (briefly) until `n` requests are waiting.
    async fn until_waiting(sim: &RoutingSim, n: usize) {
        for _ in 0..2000 {
            if sim.waiting() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{} requests waiting, not {n}", sim.waiting());
    }

    #[tokio::test]
    async fn a_ready_agent_with_capacity_is_reserved() {
        let sim = sim(vec![
            not_ready(agent("a1", &["G"], 3)),
            agent("a2", &["G"], 3),
            agent("a3", &["Other"], 3),
        ]);
        let r = sim.reserve(request("r1", "G@SS.GA", 1000)).await.unwrap();
        assert_eq!(r.agent_id, "a2");
        assert_eq!(r.agent_name, "Agent a2");
        assert_eq!(r.place, "Place_a2");
        assert_eq!(r.target_selected, "G@SS.GA");
        assert_eq!(r.virtual_queue, "VQ");
        assert!(r.reservation_id.starts_with("res-"));
        assert_eq!(sim.agent("a2").unwrap().load.get("chat"), Some(&1));
        sim.confirm(&r.reservation_id).await.unwrap();
        sim.release(&r.reservation_id).await;
        assert_eq!(sim.agent("a2").unwrap().load.get("chat"), None);
        assert_eq!(sim.reservations(), 0);
        assert_eq!(
            sim.confirm(&r.reservation_id).await,
            Err(RoutingError::Unknown(r.reservation_id.clone()))
        );
    }

    #[tokio::test]
    async fn not_ready_or_logged_out_agents_are_not_picked_and_the_request_times_out() {
        let sim = sim(vec![
            not_ready(agent("a1", &["G"], 3)),
            agent("a2", &["G"], 3),
        ]);
        sim.set_logged_in("a2", false).unwrap();
        let started = Instant::now();
        let e = sim.reserve(request("r1", "G@SS.GA", 100)).await;
        assert_eq!(e, Err(RoutingError::Timeout));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(sim.waiting(), 0);
        // A zero timeout fails at once when nobody is available.
        let e = sim.reserve(request("r2", "G@SS.GA", 0)).await;
        assert_eq!(e, Err(RoutingError::Timeout));
    }

    #[tokio::test]
    async fn a_waiting_request_is_served_when_an_agent_becomes_ready() {
        let sim = sim(vec![not_ready(agent("a1", &["G"], 3))]);
        let waiting = spawn_reserve(&sim, request("r1", "G@SS.GA", 5000));
        until_waiting(&sim, 1).await;
        assert_eq!(sim.statistic_now("G@SS.GA", "StatCallsWaiting"), Ok(1.0));
        tokio::time::sleep(Duration::from_millis(20)).await;
        sim.set_ready("a1", true).unwrap();
        let r = waiting.await.unwrap().unwrap();
        assert_eq!(r.agent_id, "a1");
        assert!(r.waited_ms >= 20, "{}", r.waited_ms);
        assert_eq!(sim.waiting(), 0);
    }

    #[tokio::test]
    async fn agents_added_or_logged_in_serve_waiting_requests() {
        let sim = sim(vec![agent("a1", &["G"], 3)]);
        sim.set_logged_in("a1", false).unwrap();
        let first = spawn_reserve(&sim, request("r1", "G@SS.GA", 5000));
        let second = spawn_reserve(&sim, request("r2", "New@SS.GA", 5000));
        until_waiting(&sim, 2).await;
        sim.set_logged_in("a1", true).unwrap();
        assert_eq!(first.await.unwrap().unwrap().agent_id, "a1");
        assert_eq!(
            sim.add_agent(agent("a1", &["New"], 1)),
            Err(SimError::Conflict("agent 'a1' already exists".into()))
        );
        let added = sim.add_agent(agent("n1", &["New"], 1)).unwrap();
        assert_eq!(added.id, "n1");
        let r = second.await.unwrap().unwrap();
        assert_eq!(r.agent_id, "n1");
        assert_eq!(sim.agent("n1").unwrap().load.get("chat"), Some(&1));
        sim.remove_agent("n1").unwrap();
        assert!(sim.agent("n1").is_none());
        assert!(matches!(sim.remove_agent("n1"), Err(SimError::NotFound(_))));
        // Releasing a removed agent's reservation is harmless.
        sim.release(&r.reservation_id).await;
        assert_eq!(sim.reservations(), 1);
    }

    #[tokio::test]
    async fn cancel_ends_a_waiting_request() {
        let sim = sim(vec![not_ready(agent("a1", &["G"], 3))]);
        let waiting = spawn_reserve(&sim, request("r1", "G@SS.GA", 5000));
        until_waiting(&sim, 1).await;
        let duplicate = sim.reserve(request("r1", "G@SS.GA", 5000)).await;
        assert!(
            matches!(duplicate, Err(RoutingError::Invalid(m)) if m.contains("already waiting"))
        );
        assert!(sim.cancel("r1").await);
        assert_eq!(waiting.await.unwrap(), Err(RoutingError::Cancelled));
        assert!(!sim.cancel("r1").await);
        assert_eq!(sim.waiting(), 0);
    }

    #[tokio::test]
    async fn cancel_lets_go_of_an_agent_reserved_but_not_confirmed() {
        let sim = sim(vec![agent("a1", &["G"], 1), agent("a2", &["G"], 1)]);
        let granted = sim.reserve(request("r1", "G@SS.GA", 100)).await.unwrap();
        let kept = sim.reserve(request("r2", "G@SS.GA", 100)).await.unwrap();
        sim.confirm(&kept.reservation_id).await.unwrap();
        assert_eq!(sim.reservations(), 2);
        // Asked again after a restart: the first answer is let go first.
        assert!(sim.cancel("r1").await);
        assert_eq!(sim.reservations(), 1);
        assert_eq!(sim.agent(&granted.agent_id).unwrap().load.get("chat"), None);
        let again = sim.reserve(request("r1", "G@SS.GA", 100)).await.unwrap();
        assert_eq!(again.agent_id, granted.agent_id);
        // A confirmed reservation is not the request's to cancel.
        assert!(!sim.cancel("r2").await);
        assert_eq!(
            sim.agent(&kept.agent_id).unwrap().load.get("chat"),
            Some(&1)
        );
    }

    #[tokio::test]
    async fn a_dropped_reserve_stops_waiting() {
        let sim = sim(vec![not_ready(agent("a1", &["G"], 1))]);
        let gave_up = tokio::time::timeout(
            Duration::from_millis(30),
            sim.reserve(request("r1", "G@SS.GA", 5000)),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(sim.waiting(), 0);
        sim.set_ready("a1", true).unwrap();
        assert_eq!(sim.reservations(), 0);
    }

    #[tokio::test]
    async fn reservations_count_as_load_up_to_the_capacity() {
        let sim = sim(vec![agent("a1", &["G"], 2)]);
        let r1 = sim.reserve(request("r1", "G@SS.GA", 100)).await.unwrap();
        let _r2 = sim.reserve(request("r2", "G@SS.GA", 100)).await.unwrap();
        assert_eq!(
            sim.statistic_now("G@SS.GA", "RStatAgentsReadychat"),
            Ok(0.0)
        );
        assert_eq!(
            sim.statistic_now("G@SS.GA", "RStatAgentsReadyvoice"),
            Ok(1.0)
        );
        let third = spawn_reserve(&sim, request("r3", "G@SS.GA", 5000));
        until_waiting(&sim, 1).await;
        sim.release(&r1.reservation_id).await;
        assert_eq!(third.await.unwrap().unwrap().agent_id, "a1");
        assert_eq!(sim.agent("a1").unwrap().load.get("chat"), Some(&2));
        // Voice has a capacity of its own.
        let mut voice = request("v1", "G@SS.GA", 100);
        voice.media = "voice".into();
        assert_eq!(sim.reserve(voice).await.unwrap().agent_id, "a1");
        let mut email = request("e1", "G@SS.GA", 0);
        email.media = "email".into();
        assert_eq!(sim.reserve(email).await, Err(RoutingError::Timeout));
    }

    #[tokio::test]
    async fn the_least_loaded_then_longest_idle_agent_is_chosen() {
        let sim = sim(vec![agent("a1", &["G"], 3), agent("a2", &["G"], 3)]);
        let mut picked = Vec::new();
        for i in 0..4 {
            let r = sim.reserve(request(&format!("r{i}"), "G@SS.GA", 100)).await;
            picked.push(r.unwrap().agent_id);
        }
        assert_eq!(picked, ["a1", "a2", "a1", "a2"]);
    }

    #[tokio::test]
    async fn an_unconfirmed_reservation_expires_and_frees_the_agent() {
        let sim = sim(vec![agent("a1", &["G"], 1)]);
        let mut short = request("r1", "G@SS.GA", 100);
        short.reserve_ms = 80;
        let first = sim.reserve(short).await.unwrap();
        let started = Instant::now();
        let second = sim.reserve(request("r2", "G@SS.GA", 3000)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert_eq!(second.agent_id, "a1");
        assert_eq!(
            sim.confirm(&first.reservation_id).await,
            Err(RoutingError::Unknown(first.reservation_id.clone()))
        );
        // A confirmed reservation stays.
        sim.release(&second.reservation_id).await;
        let mut short = request("r3", "G@SS.GA", 100);
        short.reserve_ms = 30;
        let third = sim.reserve(short).await.unwrap();
        sim.confirm(&third.reservation_id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(sim.reservations(), 1);
        assert_eq!(sim.agent("a1").unwrap().load.get("chat"), Some(&1));
    }

    #[tokio::test]
    async fn a_step_is_skipped_when_its_stat_check_holds() {
        let sim = sim(vec![
            not_ready(agent("a1", &["G1"], 3)),
            agent("a2", &["G2"], 3),
        ]);
        let target = r#"[{"target":"G1@SS.GA","timeout":10,"stat_to_check":"RStatAgentsReady",
                          "stat_operator":"<","stat_value":1},
                         {"target":"G2@SS.GA"}]"#;
        let started = Instant::now();
        let r = sim.reserve(request("r1", target, 5000)).await.unwrap();
        assert_eq!(r.agent_id, "a2");
        assert_eq!(r.target_selected, "G2@SS.GA");
        assert!(started.elapsed() < Duration::from_secs(1));
        // The same check on a step that does not hold waits there.
        sim.set_ready("a1", true).unwrap();
        let r = sim.reserve(request("r2", target, 5000)).await.unwrap();
        assert_eq!(r.agent_id, "a1");
        // The last step is never skipped.
        let last = r#"[{"target":"G2@SS.GA","stat_to_check":"RStatAgentsReady",
                        "stat_operator":">","stat_value":0}]"#;
        assert_eq!(
            sim.reserve(request("r3", last, 100))
                .await
                .unwrap()
                .agent_id,
            "a2"
        );
    }

    #[tokio::test]
    async fn a_step_timeout_moves_to_the_next_step_adding_or_clearing_candidates() {
        let sim = sim(vec![
            not_ready(agent("a1", &["G1"], 3)),
            not_ready(agent("a2", &["G2"], 3)),
        ]);
        let adding = r#"[{"target":"G1@SS.GA","timeout":1},{"target":"G2@SS.GA"}]"#;
        let clearing = r#"[{"target":"G1@SS.GA","timeout":1,"clear":true},{"target":"G2@SS.GA"}]"#;
        let kept = spawn_reserve(&sim, request("kept", adding, 1600));
        let mut cleared = request("cleared", clearing, 1600);
        cleared.priority = 10;
        let cleared = spawn_reserve(&sim, cleared);
        until_waiting(&sim, 2).await;
        assert_eq!(sim.statistic_now("G1@SS.GA", "RStatCallsInQueue"), Ok(2.0));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // Both are on step 2 now; only the one that kept step 1 waits for G1.
        assert_eq!(sim.statistic_now("G1@SS.GA", "StatCallsWaiting"), Ok(1.0));
        assert_eq!(sim.statistic_now("G2@SS.GA", "StatCallsWaiting"), Ok(2.0));
        sim.set_ready("a1", true).unwrap();
        let r = kept.await.unwrap().unwrap();
        assert_eq!(r.agent_id, "a1");
        assert_eq!(r.target_selected, "G1@SS.GA");
        assert!(r.waited_ms >= 1000, "{}", r.waited_ms);
        assert_eq!(cleared.await.unwrap(), Err(RoutingError::Timeout));
    }

    #[tokio::test]
    async fn a_step_timeout_reaches_an_available_agent_on_the_next_step() {
        let sim = sim(vec![
            not_ready(agent("a1", &["G1"], 3)),
            agent("a2", &["G2"], 3),
        ]);
        let target = r#"[{"target":"G1@SS.GA","timeout":1},{"target":"G2@SS.GA"}]"#;
        let r = sim.reserve(request("r1", target, 3000)).await.unwrap();
        assert_eq!(r.agent_id, "a2");
        assert_eq!(r.target_selected, "G2@SS.GA");
        assert!((1000..2000).contains(&r.waited_ms), "{}", r.waited_ms);
    }

    #[tokio::test]
    async fn skill_expressions_agents_and_places_select_agents() {
        let mut a1 = agent("a1", &[], 3);
        a1.name = "Ann".into();
        a1.skills = BTreeMap::from([("English".to_string(), 5.0)]);
        let mut a2 = agent("a2", &[], 3);
        a2.place = "Desk 2".into();
        a2.skills = BTreeMap::from([("English".to_string(), 10.0), ("Spanish".to_string(), 3.0)]);
        let sim = sim(vec![a1, a2]);
        let pick = |target: &str| {
            let sim = sim.clone();
            let target = target.to_string();
            async move {
                let r = sim.reserve(request(&new_id(), &target, 0)).await?;
                sim.release(&r.reservation_id).await;
                Ok::<_, RoutingError>(r.agent_id)
            }
        };
        assert_eq!(pick("?:English>=8@SS.GA").await.unwrap(), "a2");
        assert_eq!(pick("?:English>=5 & !Spanish>0@SS.GA").await.unwrap(), "a1");
        assert_eq!(pick("?:English=5 | Spanish=4@SS.GA").await.unwrap(), "a1");
        assert_eq!(pick("?:French>1@SS.GA").await, Err(RoutingError::Timeout));
        assert_eq!(pick("a2@SS.A").await.unwrap(), "a2");
        assert_eq!(pick("Ann@SS.A").await.unwrap(), "a1");
        assert_eq!(pick("Desk 2@SS.AP").await.unwrap(), "a2");
        assert_eq!(pick("Place_a1@SS.AP").await.unwrap(), "a1");
        assert_eq!(
            sim.statistic_now("?:English>1@SS.GA", "RStatAgentsTotal"),
            Ok(2.0)
        );
    }

    #[tokio::test]
    async fn waiting_requests_are_served_by_priority_then_arrival() {
        let sim = sim(vec![not_ready(agent("a1", &["G"], 1))]);
        let mut tasks = Vec::new();
        for (i, (id, priority)) in [("low1", 0), ("high", 5), ("low2", 0), ("mid", 2)]
            .into_iter()
            .enumerate()
        {
            let mut r = request(id, "G@SS.GA", 5000);
            r.priority = priority;
            tasks.push((id, spawn_reserve(&sim, r)));
            until_waiting(&sim, i + 1).await;
        }
        sim.set_ready("a1", true).unwrap();
        let mut order = Vec::new();
        while !tasks.is_empty() {
            // Exactly one request holds the agent at a time.
            let done = loop {
                if let Some(i) = tasks.iter().position(|(_, t)| t.is_finished()) {
                    break i;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            let (id, task) = tasks.remove(done);
            let r = task.await.unwrap().unwrap();
            order.push(id);
            assert_eq!(sim.waiting(), tasks.len());
            sim.release(&r.reservation_id).await;
        }
        assert_eq!(order, ["high", "mid", "low1", "low2"]);
    }

    #[tokio::test]
    async fn statistics_count_agents_and_waiting_requests() {
        let mut busy = agent("a4", &["G"], 1);
        busy.capacity.remove("voice");
        let sim = sim(vec![
            agent("a1", &["G"], 3),
            not_ready(agent("a2", &["G"], 3)),
            agent("a3", &["G"], 3),
            busy,
        ]);
        sim.set_logged_in("a3", false).unwrap();
        let r = sim.reserve(request("r1", "a4@SS.A", 0)).await.unwrap();
        assert_eq!(r.target_selected, "a4@SS.A");
        let stat = |s: &str| sim.statistic_now("G@SS.GA", s);
        assert_eq!(stat("RStatAgentsReady"), Ok(1.0));
        assert_eq!(stat("StatAgentsAvailable"), Ok(1.0));
        assert_eq!(stat("RStatAgentsReadychat"), Ok(1.0));
        assert_eq!(stat("RStatAgentsReadyvoice"), Ok(1.0));
        assert_eq!(stat("RStatAgentsTotal"), Ok(3.0));
        assert_eq!(stat("StatCallsWaiting"), Ok(0.0));
        assert!(
            matches!(stat("StatNonsense"), Err(RoutingError::Invalid(m)) if m.contains("StatNonsense"))
        );
        assert!(matches!(
            sim.statistic("G", "RStatAgentsReady").await,
            Err(RoutingError::Invalid(m)) if m.contains("expected name@statserver.TYPE")
        ));
        assert_eq!(
            sim.statistic("Nobody@SS.GA", "RStatAgentsTotal").await,
            Ok(0.0)
        );
    }

    #[tokio::test]
    async fn an_endless_timeout_is_accepted() {
        let sim = sim(vec![not_ready(agent("a1", &["G"], 1))]);
        let target = r#"[{"target":"G@SS.GA","timeout":18446744073709551615},
                         {"target":"G@SS.GA"}]"#;
        let mut r = request("r1", target, u64::MAX);
        r.reserve_ms = u64::MAX;
        let waiting = spawn_reserve(&sim, r);
        until_waiting(&sim, 1).await;
        sim.set_ready("a1", true).unwrap();
        assert_eq!(waiting.await.unwrap().unwrap().agent_id, "a1");
    }

    #[tokio::test]
    async fn invalid_targets_and_media_are_refused() {
        let sim = sim(vec![agent("a1", &["G"], 1)]);
        let e = sim.reserve(request("r1", "G@SS.XX", 100)).await;
        assert!(
            matches!(e, Err(RoutingError::Invalid(m)) if m.contains("unknown target type 'XX'"))
        );
        let mut r = request("r2", "G@SS.GA", 100);
        r.media = String::new();
        assert!(matches!(
            sim.reserve(r).await,
            Err(RoutingError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn thousands_of_requests_wait_and_reservations_cycle_quickly() {
        let sim = sim(vec![
            not_ready(agent("a1", &["G"], 1)),
            agent("a2", &["H"], 1),
        ]);
        let waiters: Vec<_> = (0..3000)
            .map(|i| spawn_reserve(&sim, request(&format!("w{i}"), "G@SS.GA", 30_000)))
            .collect();
        until_waiting(&sim, 3000).await;
        let started = Instant::now();
        for i in 0..2000 {
            let r = sim
                .reserve(request(&format!("c{i}"), "H@SS.GA", 0))
                .await
                .unwrap();
            sim.confirm(&r.reservation_id).await.unwrap();
            sim.release(&r.reservation_id).await;
        }
        let cycles = started.elapsed();
        assert!(cycles < Duration::from_secs(5), "{cycles:?}");
        sim.set_ready("a1", true).unwrap();
        // Equal priorities: served in arrival order, one release at a time.
        for (i, waiter) in waiters.into_iter().enumerate() {
            let r = waiter.await.unwrap().unwrap();
            assert_eq!(sim.waiting(), 2999 - i);
            sim.release(&r.reservation_id).await;
        }
        assert_eq!(sim.waiting(), 0);
        assert_eq!(sim.reservations(), 0);
    }
}
