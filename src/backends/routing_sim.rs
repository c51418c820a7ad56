//! The embedded routing simulator: agents with a place, groups, skills
//! with levels, a logged-in and a ready state, and a capacity and a load
//! per media, reserved for interactions the way URS would.
//!
//! # Targets
//!
//! `reserve` parses the request's `_target` with
//! [`crate::gms::target::parse_target_option`]. A named target selects:
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
//! released by a timer task on the simulator's own background thread (see
//! [`super::background`]), never on the caller's runtime; `reserve_ms` 0
//! means the reservation never expires by itself. `confirm` cancels that
//! timer; `release` frees the capacity.

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
use crate::gms::target::{Selector, StatCheck, Target, TargetKind, TargetStep};
use crate::gms::target::{parse_target, parse_target_option};

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
    fn statistic(&self, target: &Target, stat: &str) -> Result<f64, RoutingError> {
        let selected = || self.agents.values().filter(|a| a.selected_by(target));
        let count = match stat {
            "RStatAgentsReady" | "StatAgentsAvailable" => {
                selected().filter(|a| a.free_for_any()).count()
            }
            "RStatAgentsTotal" => selected().filter(|a| a.logged_in).count(),
            "StatCallsWaiting" | "RStatCallsInQueue" => self
                .waiters
                .values()
                .filter(|w| {
                    w.active
                        .iter()
                        .any(|&s| w.steps[s].target.text == target.text)
                })
                .count(),
            _ => match stat.strip_prefix("RStatAgentsReady") {
                Some(media) if !media.is_empty() => {
                    selected().filter(|a| a.free_for(media)).count()
                }
                _ => {
                    return Err(RoutingError::Invalid(format!(
                        "unknown statistic '{stat}' (RStatAgentsReady, RStatAgentsReady<media>, \
                         RStatAgentsTotal, StatAgentsAvailable, StatCallsWaiting or \
                         RStatCallsInQueue)"
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
    pub fn new(settings: &SimulatorSettings) -> Result<RoutingSim, String> {
        let timers = Background::new("ors-sim-timers")?;
        let handle = timers.handle();
        let mut agents = IndexMap::new();
        for agent in settings.effective_agents() {
            agent.validate()?;
            if agents.contains_key(&agent.id) {
                return Err(format!("agent id '{}' is used twice", agent.id));
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
        settings.validate().map_err(SimError::Invalid)?;
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
        let mut state = lock(&self.state);
        state.agent_mut(id)?.logged_in = logged_in;
        if logged_in {
            state.serve_agent(id);
        }
        state
            .agents
            .get(id)
            .map(Agent::status)
            .ok_or_else(|| SimError::NotFound(format!("no agent '{id}'")))
    }

    /// Makes an agent ready (waiting requests may take them at once) or
    /// not ready.
    pub fn set_ready(&self, id: &str, ready: bool) -> Result<AgentStatus, SimError> {
        let mut state = lock(&self.state);
        state.agent_mut(id)?.ready = ready;
        if ready {
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
            let deadline = tokio::time::Instant::now() + request.timeout();
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
                    (tokio::time::Instant::now() + w).min(deadline)
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
        let cancelled = match state.by_request.get(request_id).copied() {
            Some(key) => state.take_waiter(key).is_some_and(|mut w| {
                if let Some(reply) = w.reply.take() {
                    let _ = reply.send(Err(RoutingError::Cancelled));
                }
                true
            }),
            None => false,
        };
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
