//! The parsed, validated statechart: an immutable arena of states and
//! transitions addressed by small integer ids, with everything the
//! interpreter needs precomputed (document order, ancestors, descendant
//! ranges, transition domains). A [`Document`] is shared by every session
//! that runs it through an `Arc`.

mod content;
mod event;
mod stateset;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use content::*;
pub use event::{Event, EventKind, parse_delay};
pub use stateset::StateSet;

/// The SCXML Event I/O Processor's type URI (W3C SCXML C.1).
pub const SCXML_PROCESSOR: &str = "http://www.w3.org/TR/scxml/#SCXMLEventProcessor";

/// Index of a state in [`Document::states`]; ids follow document order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StateId(pub u32);

impl StateId {
    /// The id as a vector index.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of a transition in [`Document::transitions`]; ids follow document order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransitionId(pub u32);

impl TransitionId {
    /// The id as a vector index.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of an expression or script body in [`Document::exprs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExprId(pub u32);

impl ExprId {
    /// The id as a vector index.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A place in a source document (1-based line and column).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What kind of node a state is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// The `<scxml>` root.
    Root,
    /// A `<state>` with child states.
    Compound,
    /// A `<state>` without child states.
    Atomic,
    /// A `<parallel>`.
    Parallel,
    /// A `<final>`.
    Final,
    /// A `<history>` pseudo-state.
    History {
        /// `type="deep"`.
        deep: bool,
    },
}

/// One state (or pseudo-state) of the chart.
#[derive(Debug)]
pub struct State {
    /// This state's id.
    pub id: StateId,
    /// The `id` attribute, or a generated unique name when it has none.
    pub name: Arc<str>,
    /// What the state is.
    pub kind: StateKind,
    /// The enclosing state (`None` only for the root).
    pub parent: Option<StateId>,
    /// Child `<state>`, `<parallel>` and `<final>` elements in document order
    /// (history pseudo-states are in [`State::history`]).
    pub children: Vec<StateId>,
    /// Child `<history>` pseudo-states.
    pub history: Vec<StateId>,
    /// Proper ancestors, nearest first, ending with the root.
    pub ancestors: Vec<StateId>,
    /// The last id in this state's subtree: descendants are exactly the ids
    /// in `id+1 ..= last_descendant`.
    pub last_descendant: StateId,
    /// The default initial transition (compound states and the root), or the
    /// default transition of a history pseudo-state.
    pub initial: Option<TransitionId>,
    /// Outgoing transitions in document order.
    pub transitions: Vec<TransitionId>,
    /// `<onentry>` handlers in document order.
    pub onentry: Vec<Block>,
    /// `<onexit>` handlers in document order.
    pub onexit: Vec<Block>,
    /// `<data>` elements declared in this state's `<datamodel>`.
    pub data: Vec<DataDecl>,
    /// `<invoke>` elements in document order.
    pub invokes: Vec<Invoke>,
    /// `<donedata>` of a `<final>`.
    pub donedata: Option<DoneData>,
    /// Where the element starts.
    pub position: Position,
}

impl State {
    /// Whether `self` is a proper descendant of `ancestor`.
    #[inline]
    pub fn is_descendant_of(&self, ancestor: &State) -> bool {
        self.id > ancestor.id && self.id <= ancestor.last_descendant
    }

    /// Atomic in the Appendix D sense: no child states (finals count).
    #[inline]
    pub fn is_atomic(&self) -> bool {
        matches!(self.kind, StateKind::Atomic | StateKind::Final)
    }

    /// A `<state>` with children, or the root.
    #[inline]
    pub fn is_compound(&self) -> bool {
        matches!(self.kind, StateKind::Compound | StateKind::Root)
    }

    /// A history pseudo-state.
    #[inline]
    pub fn is_history(&self) -> bool {
        matches!(self.kind, StateKind::History { .. })
    }
}

/// One `<transition>` (or an initial / history default transition).
#[derive(Debug)]
pub struct Transition {
    /// This transition's id.
    pub id: TransitionId,
    /// The state the transition leaves.
    pub source: StateId,
    /// Event descriptors; empty for an eventless transition.
    pub events: Vec<EventDescriptor>,
    /// Guard condition.
    pub cond: Option<ExprId>,
    /// Target states, in the order written.
    pub targets: Vec<StateId>,
    /// `type="internal"`.
    pub internal: bool,
    /// Executable content.
    pub content: Block,
    /// The transition domain when it does not depend on history values
    /// (`None` for targetless transitions and ones that target history).
    pub static_domain: Option<StateId>,
    /// Whether any target is a history pseudo-state.
    pub targets_history: bool,
    /// Where the element starts.
    pub position: Position,
}

/// An event descriptor from a transition's `event` attribute, normalised:
/// `foo.*` and `foo.` become `foo`; `*` matches every event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventDescriptor {
    /// `*`.
    Any,
    /// A dotted prefix of tokens.
    Prefix(Box<str>),
}

impl EventDescriptor {
    /// Parses one whitespace-free descriptor token.
    pub fn parse(token: &str) -> EventDescriptor {
        if token == "*" {
            return EventDescriptor::Any;
        }
        let trimmed = token.strip_suffix(".*").unwrap_or(token);
        let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
        EventDescriptor::Prefix(trimmed.into())
    }

    /// Token-prefix match: `a.b` matches `a.b` and `a.b.c` but not `a.bc`.
    #[inline]
    pub fn matches(&self, event: &str) -> bool {
        match self {
            EventDescriptor::Any => true,
            EventDescriptor::Prefix(p) => {
                event.len() >= p.len()
                    && event.as_bytes()[..p.len()] == *p.as_bytes()
                    && (event.len() == p.len() || event.as_bytes()[p.len()] == b'.')
            }
        }
    }
}

/// Which data model a document asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataModelKind {
    /// `ecmascript` (also the default, as in ORS).
    Ecmascript,
    /// `null`.
    Null,
}

/// `binding` on `<scxml>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// All `<data>` initialised at start.
    Early,
    /// `<data>` initialised when its state is first entered.
    Late,
}

/// What an expression is used as; the data model may compile them differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExprKind {
    /// A value expression (`expr`, `cond`, `...expr`).
    Value,
    /// A location (`location`, `idlocation`, `namelist` entries).
    Location,
    /// A `<script>` body.
    Script,
}

/// The source of an expression or script, compiled lazily by each session.
#[derive(Debug)]
pub struct Expr {
    /// The text as written.
    pub source: Box<str>,
    /// How it is used.
    pub kind: ExprKind,
    /// Where it stands in the document.
    pub position: Position,
}

/// Which SCXML a document is written in.
///
/// - `W3c`: the W3C Recommendation of 1 September 2015, exactly.
/// - `Ors`: the dialect of Genesys Orchestration Server: the W3C working
///   draft of 7 May 2009 (ECMAScript profile) with Genesys extensions, as
///   Composer generates it. `<send>`'s `event`, `target`,
///   `type`/`targettype` and `delay` are value expressions
///   (`event="'app.start'"`, `delay="waitTime"`), and `sendid` names the
///   send like `id`.
///
/// A document is in the ORS dialect when its `<scxml>` has a `profile`
/// attribute and no `datamodel` attribute, unless its loader says
/// otherwise (`docs/ors-dialect.md`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// The W3C Recommendation.
    #[default]
    W3c,
    /// Orchestration Server's dialect.
    Ors,
}

impl Dialect {
    /// The dialect `<scxml>`'s attributes call for: ORS when it has
    /// `profile` and no `datamodel`.
    pub fn detect(has_profile: bool, has_datamodel: bool) -> Dialect {
        if has_profile && !has_datamodel {
            Dialect::Ors
        } else {
            Dialect::W3c
        }
    }
}

/// The ORS functional module a custom action's namespace names
/// (`www.genesyslab.com/modules/<module>`, as the vendor documents print
/// it, or with `http://`/`https://` as Composer writes it), if it names one
/// (ORS Developer's Guide, *Orchestration Extensions*).
pub fn ors_module(namespace: &str) -> Option<&str> {
    let rest = namespace
        .strip_prefix("http://")
        .or_else(|| namespace.strip_prefix("https://"))
        .unwrap_or(namespace);
    let module = rest
        .strip_prefix("www.genesyslab.com/modules/")?
        .trim_end_matches('/');
    (!module.is_empty() && !module.contains('/')).then_some(module)
}

impl std::str::FromStr for Dialect {
    type Err = String;
    /// `ors` or `w3c` (any case).
    fn from_str(s: &str) -> Result<Dialect, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ors" => Ok(Dialect::Ors),
            "w3c" => Ok(Dialect::W3c),
            other => Err(format!("unknown dialect '{other}' (ors or w3c)")),
        }
    }
}

/// A parsed, validated SCXML document.
#[derive(Debug)]
pub struct Document {
    /// The `name` attribute of `<scxml>`.
    pub name: Option<String>,
    /// Where the document was read from, a path or a URL (for diagnostics
    /// and for resolving relative `src`).
    pub location: Option<String>,
    /// The data model kind.
    pub datamodel: DataModelKind,
    /// The SCXML it was read as.
    pub dialect: Dialect,
    /// Early or late data binding.
    pub binding: Binding,
    /// All states in document order; `states[0]` is the `<scxml>` root.
    pub states: Vec<State>,
    /// All transitions in document order.
    pub transitions: Vec<Transition>,
    /// All expressions and script bodies.
    pub exprs: Vec<Expr>,
    /// Top-level `<script>` bodies, run once at start.
    pub scripts: Vec<ExprId>,
    /// Non-fatal findings from loading (e.g. unclaimed custom actions).
    pub warnings: Vec<String>,
    /// Whether any state has an `<invoke>`.
    pub has_invokes: bool,
    /// Genesys `<scxml _persist>`: whether a server keeps this document's
    /// sessions in its store (default true).
    pub persist: bool,
    /// Genesys `<scxml _type>` (routingstrategy, interactionprocess, ...),
    /// kept for reporting.
    pub application_type: Option<String>,
    /// The text the document was parsed from (top-level documents; inline
    /// `<invoke>` children have none), so a store can keep the exact
    /// document a session runs.
    pub source: Option<Arc<str>>,
    by_name: foldhash::HashMap<Arc<str>, StateId>,
}

impl Document {
    /// The root (`<scxml>`) state id.
    pub const ROOT: StateId = StateId(0);

    /// Assembles a document from its arena and computes the derived tables.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        name: Option<String>,
        location: Option<String>,
        datamodel: DataModelKind,
        binding: Binding,
        states: Vec<State>,
        mut transitions: Vec<Transition>,
        exprs: Vec<Expr>,
        scripts: Vec<ExprId>,
        warnings: Vec<String>,
    ) -> Document {
        let by_name = states.iter().map(|s| (s.name.clone(), s.id)).collect();
        let has_invokes = states.iter().any(|s| !s.invokes.is_empty());
        let mut doc = Document {
            name,
            location,
            datamodel,
            binding,
            states,
            transitions: Vec::new(),
            exprs,
            scripts,
            warnings,
            has_invokes,
            persist: true,
            source: None,
            application_type: None,
            dialect: Dialect::W3c,
            by_name,
        };
        for t in transitions.iter_mut() {
            t.targets_history = t.targets.iter().any(|&s| doc.state(s).is_history());
            t.static_domain = if t.targets.is_empty() || t.targets_history {
                None
            } else {
                Some(doc.transition_domain_for(t.source, &t.targets, t.internal))
            };
        }
        doc.transitions = transitions;
        doc
    }

    /// The state with this id.
    #[inline]
    pub fn state(&self, id: StateId) -> &State {
        &self.states[id.index()]
    }

    /// The transition with this id.
    #[inline]
    pub fn transition(&self, id: TransitionId) -> &Transition {
        &self.transitions[id.index()]
    }

    /// The expression with this id.
    #[inline]
    pub fn expr(&self, id: ExprId) -> &Expr {
        &self.exprs[id.index()]
    }

    /// Looks a state up by its `id` attribute.
    pub fn state_by_name(&self, name: &str) -> Option<StateId> {
        self.by_name.get(name).copied()
    }

    /// Whether `a` is a proper descendant of `b`.
    #[inline]
    pub fn is_descendant(&self, a: StateId, b: StateId) -> bool {
        a > b && a <= self.states[b.index()].last_descendant
    }

    /// Appendix D `findLCCA`: the nearest proper ancestor of `states[0]`
    /// that is compound (or the root) and contains every other state.
    /// Parallel states are never candidates.
    pub fn find_lcca(&self, states: &[StateId]) -> StateId {
        let first = self.state(states[0]);
        for &anc in &first.ancestors {
            if !self.state(anc).is_compound() {
                continue;
            }
            if states[1..].iter().all(|&s| self.is_descendant(s, anc)) {
                return anc;
            }
        }
        Document::ROOT
    }

    /// Appendix D `getTransitionDomain` for given (effective) targets.
    pub fn transition_domain_for(
        &self,
        source: StateId,
        targets: &[StateId],
        internal: bool,
    ) -> StateId {
        if internal
            && self.state(source).is_compound()
            && targets.iter().all(|&t| self.is_descendant(t, source))
        {
            return source;
        }
        let mut list = Vec::with_capacity(targets.len() + 1);
        list.push(source);
        list.extend_from_slice(targets);
        self.find_lcca(&list)
    }
}

/// Tells the parser which foreign-namespace elements have handlers (the
/// interpreter's custom action table implements it).
pub trait CustomActionClaims {
    /// Whether a handler exists for the element `name` in `namespace`.
    fn claims(&self, namespace: &str, name: &str) -> bool;
}

/// A claims table that claims nothing.
pub struct NoCustomActions;

impl CustomActionClaims for NoCustomActions {
    fn claims(&self, _: &str, _: &str) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::ors_module;

    #[test]
    fn ors_module_namespaces_are_recognised_in_both_spellings() {
        for ns in [
            "www.genesyslab.com/modules/dialog",
            "http://www.genesyslab.com/modules/dialog",
            "https://www.genesyslab.com/modules/dialog/",
        ] {
            assert_eq!(ors_module(ns), Some("dialog"), "{ns}");
        }
        for ns in [
            "http://www.w3.org/2005/07/scxml",
            "http://www.genesyslab.com/modules/",
            "http://www.genesyslab.com/modules/a/b",
            "http://example.com/modules/dialog",
        ] {
            assert_eq!(ors_module(ns), None, "{ns}");
        }
    }
}
