//! Appendix D procedures, by their names in the Recommendation:
//! `mainEventLoop`'s macrostep, `selectEventlessTransitions`,
//! `selectTransitions`, `removeConflictingTransitions`, `microstep`,
//! `exitStates`, `enterStates`, `computeExitSet`, `computeEntrySet`,
//! `addDescendantStatesToEnter`, `addAncestorStatesToEnter`,
//! `isInFinalState`, `getTransitionDomain`, `getEffectiveTargetStates`,
//! `exitInterpreter`.
//!
//! Sets of states are bit sets indexed by document-order ids, so iterating
//! one ascending is entry order and descending is exit order.

use std::collections::HashMap;

use super::{Event, EventKind, FinalInfo, Host, Session};
use crate::model::{Document, StateId, StateKind, StateSet, TransitionId};

impl Session {
    /// The inner loop of `mainEventLoop`: eventless transitions, then
    /// internal events, until the macrostep is complete (or the session halts).
    pub(super) fn run_macrostep(&mut self, doc: &Document, host: &mut dyn Host) {
        loop {
            self.run_to_completion(doc, host);
            if !self.running || self.states_to_invoke.is_empty() {
                break;
            }
            if !doc.has_invokes {
                self.states_to_invoke.clear();
                break;
            }
            self.start_invokes(doc, host);
            // Starting invokes may have raised errors; they start a new round.
            if self.internal_queue.is_empty() {
                break;
            }
        }
        if !self.running {
            self.exit_interpreter(doc, host);
        }
    }

    /// Eventless transitions and internal events until none is left.
    fn run_to_completion(&mut self, doc: &Document, host: &mut dyn Host) {
        let mut microsteps: u64 = 0;
        while self.running {
            let mut enabled = self.select_transitions(doc, None);
            if enabled.is_empty() {
                self.scratch_enabled = enabled;
                match self.internal_queue.pop_front() {
                    None => break,
                    Some(event) => {
                        if let Err(e) = self.datamodel.set_event(&event) {
                            self.raise_error("error.execution", &e.message, None);
                        }
                        enabled = self.select_transitions(doc, Some(&event));
                    }
                }
            }
            if !enabled.is_empty() {
                self.microstep(doc, &enabled, host);
                enabled.clear();
                self.scratch_enabled = enabled;
                microsteps += 1;
                let limit = self.options.max_microsteps;
                if limit > 0 && microsteps >= limit {
                    host.log(
                        &self.id,
                        Some("error"),
                        &format!("macrostep exceeded {limit} microsteps; session stopped"),
                    );
                    self.running = false;
                }
            }
        }
    }

    /// `selectEventlessTransitions` (event `None`) and `selectTransitions`.
    pub(super) fn select_transitions(
        &mut self,
        doc: &Document,
        event: Option<&Event>,
    ) -> Vec<TransitionId> {
        let mut enabled = std::mem::take(&mut self.scratch_enabled);
        enabled.clear();
        // Walk the configuration word by word (copies, so that conditions
        // may borrow `self`); ids ascend, which is document order.
        for wi in 0..self.configuration.word_count() {
            let mut word = self.configuration.word(wi);
            while word != 0 {
                let atomic = StateId((wi * 64) as u32 + word.trailing_zeros());
                word &= word - 1;
                let state = doc.state(atomic);
                if !state.is_atomic() {
                    continue;
                }
                let chain = std::iter::once(atomic).chain(state.ancestors.iter().copied());
                'chain: for s in chain {
                    for &tid in &doc.state(s).transitions {
                        let t = doc.transition(tid);
                        let event_ok = match event {
                            None => t.events.is_empty(),
                            Some(ev) => t.events.iter().any(|d| d.matches(&ev.name)),
                        };
                        if event_ok && self.condition_match(t.cond) {
                            if !enabled.contains(&tid) {
                                enabled.push(tid);
                            }
                            break 'chain;
                        }
                    }
                }
            }
        }
        if enabled.len() > 1 {
            self.remove_conflicting_transitions(doc, enabled)
        } else {
            enabled
        }
    }

    fn condition_match(&mut self, cond: Option<crate::model::ExprId>) -> bool {
        match cond {
            None => true,
            Some(c) => match self.datamodel.eval_cond(c) {
                Ok(b) => b,
                Err(e) => {
                    self.raise_error("error.execution", &e.message, None);
                    false
                }
            },
        }
    }

    /// `removeConflictingTransitions`: of two transitions whose exit sets
    /// intersect, the one whose source is a descendant of the other's wins;
    /// otherwise the earlier one in selection order wins.
    fn remove_conflicting_transitions(
        &self,
        doc: &Document,
        enabled: Vec<TransitionId>,
    ) -> Vec<TransitionId> {
        let mut filtered: Vec<(TransitionId, StateSet)> = Vec::with_capacity(enabled.len());
        for t1 in enabled {
            let exit1 = self.compute_exit_set(doc, &[t1]);
            let mut preempted = false;
            let mut to_remove: Vec<usize> = Vec::new();
            for (i, (t2, exit2)) in filtered.iter().enumerate() {
                if exit1.intersects(exit2) {
                    let s1 = doc.transition(t1).source;
                    let s2 = doc.transition(*t2).source;
                    if doc.is_descendant(s1, s2) {
                        to_remove.push(i);
                    } else {
                        preempted = true;
                        break;
                    }
                }
            }
            if !preempted {
                for i in to_remove.into_iter().rev() {
                    filtered.remove(i);
                }
                filtered.push((t1, exit1));
            }
        }
        filtered.into_iter().map(|(t, _)| t).collect()
    }

    /// `microstep`: exit, run transition content, enter.
    pub(super) fn microstep(
        &mut self,
        doc: &Document,
        enabled: &[TransitionId],
        host: &mut dyn Host,
    ) {
        self.exit_states(doc, enabled, host);
        for &tid in enabled {
            host.on_transition(&self.id, doc, tid);
            self.execute_block(doc, &doc.transition(tid).content, host);
        }
        self.enter_states(doc, enabled, host);
    }

    /// `getEffectiveTargetStates`: targets with history replaced by its
    /// recorded value (or its default transition's targets).
    fn effective_target_states(&self, doc: &Document, tid: TransitionId, out: &mut Vec<StateId>) {
        for &s in &doc.transition(tid).targets {
            if doc.state(s).is_history() {
                match self.history_values.get(&s) {
                    Some(v) => {
                        for &x in v {
                            if !out.contains(&x) {
                                out.push(x);
                            }
                        }
                    }
                    None => {
                        let default = doc.state(s).initial.expect("history has a transition");
                        self.effective_target_states(doc, default, out);
                    }
                }
            } else if !out.contains(&s) {
                out.push(s);
            }
        }
    }

    /// `getTransitionDomain`; `None` for targetless transitions.
    fn transition_domain(&self, doc: &Document, tid: TransitionId) -> Option<StateId> {
        let t = doc.transition(tid);
        if t.targets.is_empty() {
            return None;
        }
        if let Some(d) = t.static_domain {
            return Some(d);
        }
        let mut targets = Vec::new();
        self.effective_target_states(doc, tid, &mut targets);
        Some(doc.transition_domain_for(t.source, &targets, t.internal))
    }

    /// `computeExitSet`: active descendants of each transition's domain.
    pub(super) fn compute_exit_set(
        &self,
        doc: &Document,
        transitions: &[TransitionId],
    ) -> StateSet {
        let mut exit = StateSet::with_capacity(doc.states.len());
        self.compute_exit_set_into(doc, transitions, &mut exit);
        exit
    }

    /// `computeExitSet` into a set the caller reuses.
    fn compute_exit_set_into(
        &self,
        doc: &Document,
        transitions: &[TransitionId],
        exit: &mut StateSet,
    ) {
        exit.clear();
        for &tid in transitions {
            if let Some(domain) = self.transition_domain(doc, tid) {
                let last = doc.state(domain).last_descendant;
                for s in self.configuration.iter() {
                    if s > domain && s <= last {
                        exit.insert(s);
                    }
                }
            }
        }
    }

    /// `exitStates`: records history from the pre-exit configuration, then
    /// runs `<onexit>` in exit order and removes the states.
    fn exit_states(&mut self, doc: &Document, enabled: &[TransitionId], host: &mut dyn Host) {
        let mut to_exit = std::mem::take(&mut self.scratch_exit);
        self.compute_exit_set_into(doc, enabled, &mut to_exit);
        if to_exit.is_empty() {
            self.scratch_exit = to_exit;
            return;
        }
        for s in to_exit.iter() {
            self.states_to_invoke.remove(s);
        }
        for s in to_exit.iter_rev() {
            let state = doc.state(s);
            for &h in &state.history {
                let deep = matches!(doc.state(h).kind, StateKind::History { deep: true });
                let recorded: Vec<StateId> = self
                    .configuration
                    .iter()
                    .filter(|&c| {
                        if deep {
                            doc.state(c).is_atomic() && doc.is_descendant(c, s)
                        } else {
                            doc.state(c).parent == Some(s)
                        }
                    })
                    .collect();
                self.history_values.insert(h, recorded);
            }
        }
        for s in to_exit.iter_rev() {
            let state = doc.state(s);
            for block in &state.onexit {
                self.execute_block(doc, block, host);
            }
            self.cancel_invokes_of(s, host);
            self.configuration.remove(s);
            self.datamodel.state_exited(s);
            host.on_exit(&self.id, doc, s);
        }
        self.scratch_exit = to_exit;
    }

    /// `enterStates`.
    pub(super) fn enter_states(
        &mut self,
        doc: &Document,
        enabled: &[TransitionId],
        host: &mut dyn Host,
    ) {
        let mut entry = std::mem::take(&mut self.scratch_entry);
        entry.states_to_enter.clear();
        entry.states_for_default_entry.clear();
        entry.default_history_content.clear();
        self.compute_entry_set(doc, enabled, &mut entry);
        for s in entry.states_to_enter.iter() {
            let state = doc.state(s);
            self.configuration.insert(s);
            self.datamodel.state_entered(s);
            host.on_enter(&self.id, doc, s);
            self.states_to_invoke.insert(s);
            if doc.binding == crate::model::Binding::Late && !self.initialized.contains(s) {
                self.initialize_data(doc, s);
            }
            for block in &state.onentry {
                self.execute_block(doc, block, host);
            }
            if entry.states_for_default_entry.contains(s)
                && let Some(init) = state.initial
            {
                self.execute_block(doc, &doc.transition(init).content, host);
            }
            if let Some(&hist_t) = entry.default_history_content.get(&s) {
                self.execute_block(doc, &doc.transition(hist_t).content, host);
            }
            if state.kind == StateKind::Final {
                let parent = state.parent.expect("a final state has a parent");
                if parent == Document::ROOT {
                    self.running = false;
                    self.final_info = Some(FinalInfo {
                        state: s,
                        configuration: self.configuration.clone(),
                    });
                    self.done_data = self.evaluate_donedata(doc, s);
                } else {
                    let data = self.evaluate_donedata(doc, s);
                    let mut ev = Event::new(
                        format!("done.state.{}", doc.state(parent).name),
                        EventKind::Platform,
                    );
                    ev.data = data;
                    self.internal_queue.push_back(ev);
                    if let Some(grandparent) = doc.state(parent).parent
                        && doc.state(grandparent).kind == StateKind::Parallel
                        && doc
                            .state(grandparent)
                            .children
                            .iter()
                            .all(|&c| self.is_in_final_state(doc, c))
                    {
                        self.internal_queue.push_back(Event::new(
                            format!("done.state.{}", doc.state(grandparent).name),
                            EventKind::Platform,
                        ));
                    }
                }
            }
        }
        self.scratch_entry = entry;
    }

    /// `isInFinalState`.
    fn is_in_final_state(&self, doc: &Document, s: StateId) -> bool {
        let state = doc.state(s);
        match state.kind {
            StateKind::Compound | StateKind::Root => state
                .children
                .iter()
                .any(|&c| doc.state(c).kind == StateKind::Final && self.configuration.contains(c)),
            StateKind::Parallel => state
                .children
                .iter()
                .all(|&c| self.is_in_final_state(doc, c)),
            _ => false,
        }
    }

    /// `computeEntrySet`.
    fn compute_entry_set(
        &self,
        doc: &Document,
        transitions: &[TransitionId],
        entry: &mut EntrySet,
    ) {
        for &tid in transitions {
            let t = doc.transition(tid);
            for &s in &t.targets {
                self.add_descendant_states_to_enter(doc, s, entry);
            }
            // The document's initial transition has the root as its domain.
            let ancestor = if t.source == Document::ROOT {
                Document::ROOT
            } else {
                self.transition_domain(doc, tid).unwrap_or(Document::ROOT)
            };
            if t.targets_history {
                let mut targets = Vec::new();
                self.effective_target_states(doc, tid, &mut targets);
                for s in targets {
                    self.add_ancestor_states_to_enter(doc, s, ancestor, entry);
                }
            } else {
                for &s in &t.targets {
                    self.add_ancestor_states_to_enter(doc, s, ancestor, entry);
                }
            }
        }
    }

    /// `addDescendantStatesToEnter`.
    fn add_descendant_states_to_enter(&self, doc: &Document, s: StateId, entry: &mut EntrySet) {
        let state = doc.state(s);
        if state.is_history() {
            let parent = state.parent.expect("history has a parent");
            if let Some(values) = self.history_values.get(&s) {
                for &v in values {
                    self.add_descendant_states_to_enter(doc, v, entry);
                }
                for &v in values {
                    self.add_ancestor_states_to_enter(doc, v, parent, entry);
                }
            } else {
                let default = state.initial.expect("history has a transition");
                entry.default_history_content.insert(parent, default);
                for &t in &doc.transition(default).targets {
                    self.add_descendant_states_to_enter(doc, t, entry);
                }
                for &t in &doc.transition(default).targets {
                    self.add_ancestor_states_to_enter(doc, t, parent, entry);
                }
            }
            return;
        }
        entry.states_to_enter.insert(s);
        if state.is_compound() {
            entry.states_for_default_entry.insert(s);
            let init = state
                .initial
                .expect("compound state has an initial transition");
            for &t in &doc.transition(init).targets {
                self.add_descendant_states_to_enter(doc, t, entry);
            }
            for &t in &doc.transition(init).targets {
                self.add_ancestor_states_to_enter(doc, t, s, entry);
            }
        } else if state.kind == StateKind::Parallel {
            for &child in &state.children {
                if !any_descendant_in(doc, &entry.states_to_enter, child) {
                    self.add_descendant_states_to_enter(doc, child, entry);
                }
            }
        }
    }

    /// `addAncestorStatesToEnter`: proper ancestors of `s` below `ancestor`.
    fn add_ancestor_states_to_enter(
        &self,
        doc: &Document,
        s: StateId,
        ancestor: StateId,
        entry: &mut EntrySet,
    ) {
        for &anc in &doc.state(s).ancestors {
            if anc == ancestor {
                break;
            }
            entry.states_to_enter.insert(anc);
            let a = doc.state(anc);
            if a.kind == StateKind::Parallel {
                for &child in &a.children {
                    if !any_descendant_in(doc, &entry.states_to_enter, child) {
                        self.add_descendant_states_to_enter(doc, child, entry);
                    }
                }
            }
        }
    }

    /// `exitInterpreter`: exits every active state in exit order.
    pub(super) fn exit_interpreter(&mut self, doc: &Document, host: &mut dyn Host) {
        let config = self.configuration.clone();
        for s in config.iter_rev() {
            for block in &doc.state(s).onexit {
                self.execute_block(doc, block, host);
            }
            self.cancel_invokes_of(s, host);
            self.configuration.remove(s);
            self.datamodel.state_exited(s);
        }
        self.delayed.clear();
        self.internal_queue.clear();
        self.external_queue.clear();
    }
}

/// The working sets of `enterStates` (kept by the session and reused).
#[derive(Default)]
pub(super) struct EntrySet {
    states_to_enter: StateSet,
    states_for_default_entry: StateSet,
    /// Parent state → the history transition whose content runs on entry.
    default_history_content: HashMap<StateId, TransitionId>,
}

/// `statesToEnter.some(s => isDescendant(s, child))`.
fn any_descendant_in(doc: &Document, set: &StateSet, child: StateId) -> bool {
    let last = doc.state(child).last_descendant;
    set.iter().any(|s| s > child && s <= last)
}
