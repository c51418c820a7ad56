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
        self.macrostep_started_ms = 0;
    }

    /// Eventless transitions and internal events until none is left.
    fn run_to_completion(&mut self, doc: &Document, host: &mut dyn Host) {
        let mut microsteps: u64 = 0;
        self.foreach_iterations = 0;
        let time_limit = self.options.max_macrostep_ms;
        let started = match self.macrostep_started_ms {
            0 if time_limit > 0 => host.now_ms(),
            t => t,
        };
        self.macrostep_started_ms = started;
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
                let reason = if limit > 0 && microsteps >= limit {
                    Some(format!(
                        "macrostep exceeded {limit} microsteps; session stopped"
                    ))
                } else if time_limit > 0 && host.now_ms().saturating_sub(started) > time_limit {
                    Some(format!(
                        "macrostep ran longer than {time_limit} ms; session stopped"
                    ))
                } else {
                    self.memory_over_budget()
                };
                if let Some(reason) = reason {
                    host.log(&self.id, Some("error"), &reason);
                    self.stop_reason = Some(reason);
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
        // may borrow `self`); ids ascend, which is document order. A small
        // configuration reads every word; a large one jumps from non-zero
        // word to non-zero word (two loops: one loop with both ways cost a
        // 3-state chart 15% of its events per second).
        if self.configuration.is_dense() {
            for wi in 0..self.configuration.word_count() {
                let word = self.configuration.word(wi);
                self.select_in_word(doc, event, wi, word, &mut enabled);
            }
        } else {
            self.select_in_sparse_configuration(doc, event, &mut enabled);
        }
        if enabled.len() > 1 {
            self.remove_conflicting_transitions(doc, enabled)
        } else {
            enabled
        }
    }

    /// The walk of [`Session::select_transitions`] over a large
    /// configuration, kept out of line so that the small configurations'
    /// loop compiles as tightly as it did alone.
    #[inline(never)]
    fn select_in_sparse_configuration(
        &mut self,
        doc: &Document,
        event: Option<&Event>,
        enabled: &mut Vec<TransitionId>,
    ) {
        let mut cursor = self.configuration.first_word_from(0);
        while let Some((wi, word)) = cursor {
            cursor = self.configuration.first_word_from(wi + 1);
            self.select_in_word(doc, event, wi, word, enabled);
        }
    }

    /// `selectTransitions` for the atomic states of one word of the
    /// configuration (word `wi`, states `64*wi ..`).
    #[inline(always)]
    fn select_in_word(
        &mut self,
        doc: &Document,
        event: Option<&Event>,
        wi: usize,
        mut word: u64,
        enabled: &mut Vec<TransitionId>,
    ) {
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
    /// recorded value (or its default transition's targets, followed with
    /// a stack of transitions rather than recursion).
    fn effective_target_states(&self, doc: &Document, tid: TransitionId, out: &mut Vec<StateId>) {
        let mut pending = vec![(tid, 0usize)];
        while let Some((tid, next)) = pending.pop() {
            let Some(&s) = doc.transition(tid).targets.get(next) else {
                continue;
            };
            pending.push((tid, next + 1));
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
                        pending.push((default, 0));
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
        // Taken out of an `Option`: `mem::take` would build a fresh
        // `EntrySet` (a `HashMap` with new random keys) on every microstep;
        // boxed, so taking it moves a pointer rather than its 170 bytes.
        let mut entry = self.scratch_entry.take().unwrap_or_default();
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
        self.scratch_entry = Some(entry);
    }

    /// `isInFinalState`. The regions of nested parallel states are
    /// checked with a stack rather than recursion; the answer is the same
    /// conjunction Appendix D computes.
    fn is_in_final_state(&self, doc: &Document, s: StateId) -> bool {
        let has_final_child = |state: &crate::model::State| {
            state
                .children
                .iter()
                .any(|&c| doc.state(c).kind == StateKind::Final && self.configuration.contains(c))
        };
        let state = doc.state(s);
        match state.kind {
            StateKind::Compound | StateKind::Root => return has_final_child(state),
            StateKind::Parallel => {}
            _ => return false,
        }
        let mut regions: Vec<StateId> = state.children.iter().rev().copied().collect();
        while let Some(r) = regions.pop() {
            let region = doc.state(r);
            match region.kind {
                StateKind::Compound | StateKind::Root => {
                    if !has_final_child(region) {
                        return false;
                    }
                }
                StateKind::Parallel => regions.extend(region.children.iter().rev()),
                _ => return false,
            }
        }
        true
    }

    /// `computeEntrySet`.
    fn compute_entry_set(
        &self,
        doc: &Document,
        transitions: &[TransitionId],
        entry: &mut EntrySet,
    ) {
        let mut steps = std::mem::take(&mut entry.steps);
        for &tid in transitions {
            let t = doc.transition(tid);
            for &s in &t.targets {
                steps.push(EntryStep::Descendants(s));
                self.run_entry_steps(doc, &mut steps, entry);
            }
            // The document's initial transition has the root as its domain.
            let ancestor = if t.source == Document::ROOT {
                Document::ROOT
            } else {
                self.transition_domain(doc, tid).unwrap_or(Document::ROOT)
            };
            let mut add_ancestors = |s: StateId, steps: &mut Vec<EntryStep>| {
                steps.push(EntryStep::Ancestors {
                    state: s,
                    ancestor,
                    next: 0,
                });
                self.run_entry_steps(doc, steps, entry);
            };
            if t.targets_history {
                let mut targets = Vec::new();
                self.effective_target_states(doc, tid, &mut targets);
                for s in targets {
                    add_ancestors(s, &mut steps);
                }
            } else {
                for &s in &t.targets {
                    add_ancestors(s, &mut steps);
                }
            }
        }
        entry.steps = steps;
    }

    /// Runs `addDescendantStatesToEnter` and `addAncestorStatesToEnter`
    /// from the steps on `steps` until it is empty. The two procedures call
    /// each other as deep as the document nests; here each pending call is
    /// a step on an explicit stack, pushed in reverse so they run in
    /// Appendix D's order (that order matters: a parallel region is entered
    /// by default only if no state below it was added before).
    fn run_entry_steps(&self, doc: &Document, steps: &mut Vec<EntryStep>, entry: &mut EntrySet) {
        // `targets` entered below `ancestor`: every descendant walk first,
        // then every ancestor walk, as the procedures do.
        fn enter_all(steps: &mut Vec<EntryStep>, targets: &[StateId], ancestor: StateId) {
            steps.extend(targets.iter().rev().map(|&t| EntryStep::Ancestors {
                state: t,
                ancestor,
                next: 0,
            }));
            steps.extend(targets.iter().rev().map(|&t| EntryStep::Descendants(t)));
        }
        while let Some(step) = steps.pop() {
            match step {
                EntryStep::Descendants(s) => {
                    let state = doc.state(s);
                    if state.is_history() {
                        let parent = state.parent.expect("history has a parent");
                        match self.history_values.get(&s) {
                            Some(values) => enter_all(steps, values, parent),
                            None => {
                                let default = state.initial.expect("history has a transition");
                                entry.default_history_content.insert(parent, default);
                                enter_all(steps, &doc.transition(default).targets, parent);
                            }
                        }
                        continue;
                    }
                    entry.states_to_enter.insert(s);
                    if state.is_compound() {
                        entry.states_for_default_entry.insert(s);
                        let init = state
                            .initial
                            .expect("compound state has an initial transition");
                        enter_all(steps, &doc.transition(init).targets, s);
                    } else if state.kind == StateKind::Parallel {
                        steps.extend(state.children.iter().rev().map(|&c| EntryStep::Region(c)));
                    }
                }
                EntryStep::Ancestors {
                    state,
                    ancestor,
                    next,
                } => {
                    // Proper ancestors of `state` below `ancestor`, one per step.
                    let Some(&anc) = doc.state(state).ancestors.get(next) else {
                        continue;
                    };
                    if anc == ancestor {
                        continue;
                    }
                    entry.states_to_enter.insert(anc);
                    steps.push(EntryStep::Ancestors {
                        state,
                        ancestor,
                        next: next + 1,
                    });
                    let a = doc.state(anc);
                    if a.kind == StateKind::Parallel {
                        steps.extend(a.children.iter().rev().map(|&c| EntryStep::Region(c)));
                    }
                }
                EntryStep::Region(child) => {
                    if !any_descendant_in(doc, &entry.states_to_enter, child) {
                        steps.push(EntryStep::Descendants(child));
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
    /// The entry procedures' stack of pending steps (empty between
    /// uses; kept for its allocation).
    steps: Vec<EntryStep>,
}

/// One pending call of the entry procedures ([`Session::run_entry_steps`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum EntryStep {
    /// `addDescendantStatesToEnter(s)`.
    Descendants(StateId),
    /// `addAncestorStatesToEnter(state, ancestor)` from the `next`-th
    /// proper ancestor of `state` on.
    Ancestors {
        state: StateId,
        ancestor: StateId,
        next: usize,
    },
    /// A region of a parallel state: entered by default unless a state
    /// below it is already to be entered.
    Region(StateId),
}

/// `statesToEnter.some(s => isDescendant(s, child))`.
fn any_descendant_in(doc: &Document, set: &StateSet, child: StateId) -> bool {
    let last = doc.state(child).last_descendant;
    set.iter().any(|s| s > child && s <= last)
}

#[cfg(test)]
mod tests {
    //! The Appendix D procedures one by one, on small documents: which
    //! transitions are selected, which survive conflict removal, which
    //! states a transition exits and enters, and where `findLCCA` lands.

    use std::sync::Arc;

    use super::*;
    use crate::interpreter::SessionOptions;
    use crate::parser::{LoadOptions, parse_document};

    struct Quiet;

    impl Host for Quiet {
        fn now_ms(&mut self) -> u64 {
            0
        }
        fn log(&mut self, _: &str, _: Option<&str>, _: &str) {}
    }

    fn load(body: &str, initial: &str) -> Arc<Document> {
        let text = format!(
            r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0"
                      datamodel="ecmascript" initial="{initial}">{body}</scxml>"#
        );
        Arc::new(parse_document(&text, None, &LoadOptions::default()).expect("the document loads"))
    }

    /// A started session of `doc` (its initial configuration entered).
    fn started(doc: &Arc<Document>) -> Session {
        let mut session = Session::new(doc.clone(), SessionOptions::default());
        session.start(&mut Quiet);
        session
    }

    fn send(session: &mut Session, name: &str) {
        session.enqueue_external(Event::new(name, EventKind::External));
        session
            .process_next_external(&mut Quiet)
            .expect("the event is processed");
    }

    fn id(doc: &Document, name: &str) -> StateId {
        doc.state_by_name(name)
            .unwrap_or_else(|| panic!("no state {name}"))
    }

    fn names(doc: &Document, states: impl Iterator<Item = StateId>) -> Vec<String> {
        states
            .map(|s| {
                if s == Document::ROOT {
                    "<scxml>".to_string()
                } else {
                    doc.state(s).name.to_string()
                }
            })
            .collect()
    }

    /// The first transition of `source` whose descriptors match `event`
    /// ("" for an eventless one).
    fn transition(doc: &Document, source: &str, event: &str) -> TransitionId {
        doc.state(id(doc, source))
            .transitions
            .iter()
            .copied()
            .find(|&t| {
                let events = &doc.transition(t).events;
                if event.is_empty() {
                    events.is_empty()
                } else {
                    events.iter().any(|d| d.matches(event))
                }
            })
            .unwrap_or_else(|| panic!("{source} has no transition on '{event}'"))
    }

    /// `source -> [targets]` for each transition.
    fn described(doc: &Document, transitions: &[TransitionId]) -> Vec<String> {
        transitions
            .iter()
            .map(|&t| {
                let t = doc.transition(t);
                let targets = names(doc, t.targets.iter().copied());
                format!("{} -> [{}]", doc.state(t.source).name, targets.join(" "))
            })
            .collect()
    }

    fn selected(session: &mut Session, doc: &Document, event: Option<&str>) -> Vec<String> {
        let event = event.map(|e| Event::new(e, EventKind::External));
        let enabled = session.select_transitions(doc, event.as_ref());
        described(doc, &enabled)
    }

    const SELECTION: &str = r#"
        <state id="A" initial="A1">
          <transition event="e" target="B"/>
          <transition event="f" target="C"/>
          <state id="A1">
            <transition event="e.sub" target="C"/>
            <transition event="e" cond="false" target="C"/>
            <transition event="e" target="A2"/>
            <transition event="e" target="B"/>
          </state>
          <state id="A2"/>
        </state>
        <state id="B"><transition target="C"/></state>
        <state id="C"/>"#;

    #[test]
    fn select_transitions_takes_the_first_matching_enabled_transition_innermost_first() {
        let doc = load(SELECTION, "A");
        let mut s = started(&doc);
        assert_eq!(s.configuration_names(), ["A", "A1"]);
        // A false cond is skipped; of the two true ones the first in
        // document order wins; the ancestor's "e" is never reached.
        assert_eq!(selected(&mut s, &doc, Some("e")), ["A1 -> [A2]"]);
        // "e" matches "e.x" (token prefix), and "e.sub" only "e.sub...".
        assert_eq!(selected(&mut s, &doc, Some("e.x")), ["A1 -> [A2]"]);
        assert_eq!(selected(&mut s, &doc, Some("e.sub")), ["A1 -> [C]"]);
        // Not a token prefix.
        assert!(selected(&mut s, &doc, Some("ee")).is_empty());
        // A1 has no "f": the walk goes up to A.
        assert_eq!(selected(&mut s, &doc, Some("f")), ["A -> [C]"]);
        // No eventless transition in A1 or A.
        assert!(selected(&mut s, &doc, None).is_empty());
    }

    #[test]
    fn eventless_selection_ignores_transitions_with_events() {
        let doc = load(SELECTION, "B");
        let s = started(&doc);
        // B's eventless transition ran during start: B -> C.
        assert_eq!(s.configuration_names(), ["C"]);
        let doc = load(
            r#"<state id="B"><transition event="e" target="C"/></state><state id="C"/>"#,
            "B",
        );
        let mut s = started(&doc);
        assert_eq!(s.configuration_names(), ["B"]);
        assert!(selected(&mut s, &doc, None).is_empty());
    }

    const PARALLEL: &str = r#"
        <state id="W" initial="P">
          <transition event="i" type="internal" target="X"/>
          <transition event="o" target="X"/>
          <parallel id="P">
            <transition event="f h" target="X"/>
            <state id="R1" initial="a1">
              <state id="a1">
                <transition event="e f" target="a2"/>
                <transition event="t"/>
                <transition event="x" target="b2"/>
              </state>
              <state id="a2"/>
            </state>
            <state id="R2" initial="b1">
              <state id="b1">
                <transition event="e h" target="b2"/>
                <transition event="t"/>
              </state>
              <state id="b2"/>
            </state>
          </parallel>
          <state id="X"/>
        </state>"#;

    #[test]
    fn remove_conflicting_transitions_keeps_disjoint_ones_and_prefers_descendants() {
        let doc = load(PARALLEL, "W");
        let mut s = started(&doc);
        assert_eq!(s.configuration_names(), ["W", "P", "R1", "a1", "R2", "b1"]);
        // Exit sets {a1} and {b1} are disjoint: both run.
        assert_eq!(
            selected(&mut s, &doc, Some("e")),
            ["a1 -> [a2]", "b1 -> [b2]"]
        );
        // a1 -> a2 first, then P -> X (from b1): they conflict and P is not
        // a descendant of a1, so P -> X goes.
        assert_eq!(selected(&mut s, &doc, Some("f")), ["a1 -> [a2]"]);
        // P -> X first (from a1, which has no "h"), then b1 -> b2: b1 is a
        // descendant of P, so b1 -> b2 replaces P -> X.
        assert_eq!(selected(&mut s, &doc, Some("h")), ["b1 -> [b2]"]);
        // Targetless transitions exit nothing and never conflict.
        assert_eq!(selected(&mut s, &doc, Some("t")), ["a1 -> []", "b1 -> []"]);
        // Called directly, in either order.
        let a = transition(&doc, "a1", "f");
        let p = transition(&doc, "P", "f");
        let kept = s.remove_conflicting_transitions(&doc, vec![p, a]);
        assert_eq!(described(&doc, &kept), ["a1 -> [a2]"]);
        let kept = s.remove_conflicting_transitions(&doc, vec![a, p]);
        assert_eq!(described(&doc, &kept), ["a1 -> [a2]"]);
    }

    #[test]
    fn compute_exit_set_is_the_active_descendants_of_the_transition_domain() {
        let doc = load(PARALLEL, "W");
        let s = started(&doc);
        let exit = |source: &str, event: &str| {
            let set = s.compute_exit_set(&doc, &[transition(&doc, source, event)]);
            names(&doc, set.iter())
        };
        assert_eq!(exit("a1", "e"), ["a1"]);
        // Into the sibling region: findLCCA skips the parallel P, so the
        // domain is W and all of P goes.
        assert_eq!(exit("a1", "x"), ["P", "R1", "a1", "R2", "b1"]);
        assert_eq!(exit("P", "f"), ["P", "R1", "a1", "R2", "b1"]);
        // Internal from W to its descendant: W stays; external: W exits.
        assert_eq!(exit("W", "i"), ["P", "R1", "a1", "R2", "b1"]);
        assert_eq!(exit("W", "o"), ["W", "P", "R1", "a1", "R2", "b1"]);
        assert!(exit("a1", "t").is_empty(), "targetless exits nothing");
        // Several transitions: the union.
        let both = s.compute_exit_set(
            &doc,
            &[transition(&doc, "a1", "e"), transition(&doc, "b1", "e")],
        );
        assert_eq!(names(&doc, both.iter()), ["a1", "b1"]);
    }

    /// `computeEntrySet` of one transition in `s`: the states to enter
    /// (entry order), those entered by default, and the parents whose
    /// default history content runs.
    fn entry(s: &Session, doc: &Document, t: TransitionId) -> [Vec<String>; 3] {
        let mut entry = EntrySet::default();
        s.compute_entry_set(doc, &[t], &mut entry);
        let mut history: Vec<StateId> = entry.default_history_content.keys().copied().collect();
        history.sort();
        [
            names(doc, entry.states_to_enter.iter()),
            names(doc, entry.states_for_default_entry.iter()),
            names(doc, history.into_iter()),
        ]
    }

    #[test]
    fn compute_entry_set_enters_ancestors_and_the_other_regions_by_default() {
        let doc = load(PARALLEL, "W");
        let s = started(&doc);
        // a1 -> b2 re-enters P: R1 by default (a1), R2 as b2's ancestor.
        let [enter, default, history] = entry(&s, &doc, transition(&doc, "a1", "x"));
        assert_eq!(enter, ["P", "R1", "a1", "R2", "b2"]);
        assert_eq!(default, ["R1"]);
        assert!(history.is_empty());
        // External W -> X: W is re-entered as X's ancestor, not by default.
        let [enter, default, _] = entry(&s, &doc, transition(&doc, "W", "o"));
        assert_eq!(enter, ["W", "X"]);
        assert!(default.is_empty());
        // Internal W -> X: W stays.
        let [enter, _, _] = entry(&s, &doc, transition(&doc, "W", "i"));
        assert_eq!(enter, ["X"]);
    }

    const HISTORY: &str = r#"
        <state id="H" initial="H1">
          <history id="hs" type="shallow"><transition target="H2"/></history>
          <history id="hd" type="deep"><transition target="H1"/></history>
          <state id="H1" initial="H1a">
            <state id="H1a"><transition event="next" target="H1b"/></state>
            <state id="H1b"/>
          </state>
          <state id="H2"/>
          <transition event="out" target="Z"/>
        </state>
        <state id="Z">
          <transition event="shallow" target="hs"/>
          <transition event="deep" target="hd"/>
        </state>"#;

    #[test]
    fn add_descendant_states_to_enter_follows_history_or_its_default() {
        let doc = load(HISTORY, "Z");
        let s = started(&doc);
        // No history recorded yet: the history's own transition, whose
        // content runs for the parent H.
        let [enter, default, history] = entry(&s, &doc, transition(&doc, "Z", "shallow"));
        assert_eq!(enter, ["H", "H2"]);
        assert!(default.is_empty());
        assert_eq!(history, ["H"]);
        let [enter, default, history] = entry(&s, &doc, transition(&doc, "Z", "deep"));
        assert_eq!(enter, ["H", "H1", "H1a"]);
        assert_eq!(default, ["H1"]);
        assert_eq!(history, ["H"]);

        let doc = load(HISTORY, "H");
        let mut s = started(&doc);
        send(&mut s, "next");
        send(&mut s, "out");
        assert_eq!(s.configuration_names(), ["Z"]);
        // Shallow history recorded H1: it is entered by default (H1a).
        let [enter, default, history] = entry(&s, &doc, transition(&doc, "Z", "shallow"));
        assert_eq!(enter, ["H", "H1", "H1a"]);
        assert_eq!(default, ["H1"]);
        assert!(history.is_empty());
        // Deep history recorded H1b itself.
        let [enter, default, history] = entry(&s, &doc, transition(&doc, "Z", "deep"));
        assert_eq!(enter, ["H", "H1", "H1b"]);
        assert!(default.is_empty());
        assert!(history.is_empty());
        send(&mut s, "deep");
        assert_eq!(s.configuration_names(), ["H", "H1", "H1b"]);
    }

    #[test]
    fn find_lcca_is_the_nearest_compound_proper_ancestor_never_a_parallel() {
        let doc = load(PARALLEL, "W");
        let lcca = |states: &[&str]| {
            let ids: Vec<StateId> = states.iter().map(|n| id(&doc, n)).collect();
            names(&doc, std::iter::once(doc.find_lcca(&ids)))[0].clone()
        };
        assert_eq!(lcca(&["a1", "a2"]), "R1");
        assert_eq!(lcca(&["a1", "b2"]), "W", "P is parallel: skipped");
        assert_eq!(lcca(&["P"]), "W");
        assert_eq!(lcca(&["X"]), "W");
        assert_eq!(lcca(&["W", "X"]), "<scxml>", "a proper ancestor of W");
        assert_eq!(lcca(&["R1", "a1"]), "W");
    }

    #[test]
    fn is_in_final_state_needs_every_region_of_a_parallel_final() {
        let doc = load(
            r#"<parallel id="P">
                 <state id="R1" initial="r1"><state id="r1"><transition event="a" target="f1"/></state><final id="f1"/></state>
                 <state id="R2" initial="r2"><state id="r2"><transition event="b" target="f2"/></state><final id="f2"/></state>
               </parallel>"#,
            "P",
        );
        let mut s = started(&doc);
        let p = id(&doc, "P");
        assert!(!s.is_in_final_state(&doc, p));
        send(&mut s, "a");
        assert!(s.is_in_final_state(&doc, id(&doc, "R1")));
        assert!(!s.is_in_final_state(&doc, id(&doc, "R2")));
        assert!(!s.is_in_final_state(&doc, p), "one region is not enough");
        send(&mut s, "b");
        assert!(s.is_in_final_state(&doc, p));
    }

    /// Past the nesting ceiling (which the server enforces as the text is
    /// read), loading, entering, exiting and dropping a document still never
    /// recurse on its depth: 5 000 nested states (a `<parallel>` at every
    /// level, so every level is a region entered by default and checked for
    /// completion) run on a thread with a 256 KiB stack. A recursive walk
    /// needs far more than that at this depth.
    #[test]
    fn walks_over_a_document_do_not_recurse_on_its_depth() {
        const LEVELS: usize = 5_000;
        let outcome = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                crate::parser::xml::UNBOUNDED_FOR_TEST.set(Some(LEVELS + 10));
                let mut text = String::from(
                    r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="null">"#,
                );
                for i in 0..LEVELS {
                    let tag = if i % 2 == 0 { "parallel" } else { "state" };
                    text.push_str(&format!(r#"<{tag} id="s{i}">"#));
                }
                // The innermost region finishes at once; every enclosing
                // parallel is then complete only if the check reaches it.
                text.push_str(r#"<final id="done"/>"#);
                for i in (0..LEVELS).rev() {
                    let tag = if i % 2 == 0 { "parallel" } else { "state" };
                    text.push_str(&format!("</{tag}>"));
                }
                text.push_str(r#"<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="absent.scxml" xpointer="x"><xi:fallback/></xi:include>"#);
                text.push_str("</scxml>");
                let doc = Arc::new(
                    parse_document(&text, None, &LoadOptions::default()).expect("loads"),
                );
                assert_eq!(doc.state(id(&doc, "done")).ancestors.len(), LEVELS + 1);

                let mut session = started(&doc);
                let entered = session.configuration_names();
                assert_eq!(entered.len(), LEVELS + 1, "every level and the final");
                assert!(session.snapshot().is_ok());
                drop(session);
                drop(doc);
            })
            .expect("a thread")
            .join();
        assert!(outcome.is_ok(), "a walk recursed on the document's depth");
    }
}
