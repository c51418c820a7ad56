//! Turns SCXML text into a validated [`Document`]: XML reading
//! ([`xml`]), building the state/transition arena, and the static checks of
//! the Recommendation (ids, targets, `initial`, history), each failure
//! reported with `file:line:column` and a one-line reason.

pub mod include;
pub mod uri;
pub mod xml;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::model::*;
use xml::{Element, Node};

/// The SCXML namespace URI.
pub const SCXML_NS: &str = "http://www.w3.org/2005/07/scxml";

/// The XInclude 1.0 namespace URI.
pub const XINCLUDE_NS: &str = "http://www.w3.org/2001/XInclude";

/// The `<xi:include parse="text">` children of a `<script>`: their `href`s
/// and positions (`parse` defaults to `xml`, which a script cannot hold).
fn script_includes(script: &Element) -> Vec<(&str, Position, Option<&str>)> {
    script
        .elements()
        .filter(|e| e.ns.as_deref() == Some(XINCLUDE_NS) && e.name == "include")
        .map(|e| (e.attr("href").unwrap_or_default(), e.pos, e.attr("parse")))
        .collect()
}

/// One problem found while loading a document.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{pos}: {message}")]
pub struct Diagnostic {
    /// The file (or `<input>`).
    pub file: String,
    /// Where in it.
    pub pos: Position,
    /// A one-line reason.
    pub message: String,
}

/// Why a document was rejected: one or more diagnostics.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct LoadError(pub Vec<Diagnostic>);

pub use crate::model::{CustomActionClaims, NoCustomActions};

/// Options for building a document.
pub struct LoadOptions<'a> {
    /// Which custom actions have handlers (others produce warnings).
    pub custom_actions: &'a (dyn CustomActionClaims + Sync),
    /// The dialect to read the document as; `None` detects it from
    /// `<scxml>` ([`Dialect::detect`]).
    pub dialect: Option<Dialect>,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            custom_actions: &NoCustomActions,
            dialect: None,
        }
    }
}

/// What an external reference in a document names. New kinds (XInclude)
/// join as the parser learns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReferenceKind {
    /// `<data src>`: a value; a failed fetch becomes `error.execution` when
    /// the data is bound (SCXML 1.0 §5.3.2).
    Data,
    /// `<script src>`: a script; a failed fetch rejects the document
    /// (SCXML 1.0 §5.8).
    Script,
    /// A static `<invoke src>`: a child document, fetched when the invoke
    /// runs; building the document does not need its text.
    Invoke,
    /// `<xi:include parse="xml">`: a document whose element is inlined
    /// ([`include`]); a failed fetch rejects the including document.
    Include,
}

/// One external reference found while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// What kind of text it names.
    pub kind: ReferenceKind,
    /// The `src` value as written.
    pub src: String,
    /// The value resolved against the document's location (a path or URL).
    pub uri: String,
    /// Where the referring element starts.
    pub pos: Position,
}

impl Reference {
    /// Whether [`Parsed::build`] needs this reference's text.
    pub fn needed_for_build(&self) -> bool {
        matches!(
            self.kind,
            ReferenceKind::Data | ReferenceKind::Script | ReferenceKind::Include
        )
    }
}

/// Texts fetched for a document's references, keyed by resolved URI: the
/// text, or a one-line reason it could not be fetched.
pub type Sources = HashMap<String, Result<Arc<str>, String>>;

/// A document read as XML but not yet built: its tree and the external
/// references the build will need. Parsing does no I/O; a host fetches
/// [`Parsed::references`] and passes the texts to [`Parsed::build`].
pub struct Parsed {
    file: String,
    location: Option<String>,
    text: Arc<str>,
    root: Element,
    references: Vec<Reference>,
}

impl Parsed {
    /// Reads `text` as XML; `file` names it in diagnostics and `location`
    /// (a path or URL) anchors relative `src` values.
    pub fn new(text: &str, file: String, location: Option<String>) -> Result<Parsed, LoadError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let parse = |text: &str| {
            xml::parse_tree(text).map_err(|e| {
                LoadError(vec![Diagnostic {
                    file: file.clone(),
                    pos: e.pos,
                    message: e.message,
                }])
            })
        };
        let mut root = parse(text)?;
        // Read on its own, a document is its own top level for Composer's
        // prefix macro (`include`); a document that names its `datamodel`
        // is W3C SCXML and keeps its text as written.
        let substituted = include::substitute_prefix(text, None);
        if matches!(substituted, std::borrow::Cow::Owned(_)) && root.attr("datamodel").is_none() {
            root = parse(&substituted)?;
        }
        let text = match &substituted {
            std::borrow::Cow::Owned(t) if root.attr("datamodel").is_none() => t.as_str(),
            _ => text,
        };
        let mut references = Vec::new();
        collect_references(&root, location.as_deref(), &mut references);
        Ok(Parsed {
            file,
            location,
            text: Arc::from(text),
            root,
            references,
        })
    }

    /// Reads a document fetched from `location` (a URL or path), which
    /// names it in diagnostics and anchors relative `src` values.
    pub fn from_location(text: &str, location: &str) -> Result<Parsed, LoadError> {
        Parsed::new(text, location.to_string(), Some(location.to_string()))
    }

    /// The external references, in document order.
    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    /// Where the document came from, when known.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// Builds and validates the document; `sources` holds the texts of the
    /// references it needs ([`Reference::needed_for_build`]). A needed
    /// reference missing from `sources` is a diagnostic at its element.
    pub fn build(&self, sources: &Sources, options: &LoadOptions) -> Result<Document, LoadError> {
        let expanded;
        let root = if include::has_xml_includes(&self.root) {
            expanded = include::expand(&self.root, &self.file, self.location.as_deref(), sources)
                .map_err(LoadError)?;
            // Each included text was bounded as it was read; together
            // they may nest deeper than one document may.
            let (depth, pos) = xml::nesting(&expanded);
            let limit = xml::depth_limit();
            if depth > limit {
                return Err(LoadError(vec![Diagnostic {
                    file: self.file.clone(),
                    pos,
                    message: format!(
                        "with its includes, elements nest deeper than {limit} levels \
                         (documents.max_nesting)"
                    ),
                }]));
            }
            &expanded
        } else {
            &self.root
        };
        let mut doc = Builder::new(
            Arc::from(self.file.as_str()),
            &self.text,
            self.location.clone(),
            options,
            sources,
        )
        .build(root)?;
        doc.source = Some(self.text.clone());
        Ok(doc)
    }
}

/// Collects the `src` references under `el`, skipping `<content>` payloads
/// other than an inline child `<scxml>`.
fn collect_references(el: &Element, location: Option<&str>, out: &mut Vec<Reference>) {
    // The children still to read, one list per open element, so the
    // references come out in document order without recursion. Lists
    // read in place of one element (a fallback's, an inline document's)
    // are pushed last first.
    let mut open: Vec<std::slice::Iter<'_, Node>> = vec![el.children.iter()];
    fn push_in_order<'e>(
        open: &mut Vec<std::slice::Iter<'e, Node>>,
        lists: impl Iterator<Item = &'e Element>,
    ) {
        let from = open.len();
        open.extend(lists.map(|e| e.children.iter()));
        open[from..].reverse();
    }
    while let Some(children) = open.last_mut() {
        let Some(node) = children.next() else {
            open.pop();
            continue;
        };
        let Node::Element(child) = node else {
            continue;
        };
        if include::is_include(child) && include::parses_xml(child) {
            if let Some(href) = child.attr("href").map(str::trim).filter(|h| !h.is_empty()) {
                out.push(Reference {
                    kind: ReferenceKind::Include,
                    src: href.to_string(),
                    uri: uri::resolve(href, location),
                    pos: child.pos,
                });
            }
            // A fallback's own references are needed when the include
            // fails: its children are read as if they stood here.
            push_in_order(&mut open, child.elements().filter(|e| e.name == "fallback"));
            continue;
        }
        if !is_scxml(child) {
            continue;
        }
        let kind = match child.name.as_str() {
            "data" => Some(ReferenceKind::Data),
            "script" => Some(ReferenceKind::Script),
            "invoke" => Some(ReferenceKind::Invoke),
            _ => None,
        };
        if child.name == "script" {
            for (href, pos, parse) in script_includes(child) {
                if parse.is_some_and(|p| p.trim() == "text") && !href.is_empty() {
                    out.push(Reference {
                        kind: ReferenceKind::Script,
                        src: href.to_string(),
                        uri: uri::resolve(href, location),
                        pos,
                    });
                }
            }
        }
        if let Some(kind) = kind
            && let Some(src) = child.attr("src")
        {
            out.push(Reference {
                kind,
                src: src.to_string(),
                uri: uri::resolve(src, location),
                pos: child.pos,
            });
        }
        if child.name == "content" {
            // Only an inline <scxml> under <content> is a document whose
            // references count; its own children are read next.
            push_in_order(
                &mut open,
                child
                    .elements()
                    .filter(|e| is_scxml(e) && e.name == "scxml"),
            );
        } else if !child.children.is_empty() {
            open.push(child.children.iter());
        }
    }
}

/// Reads a document from a file that has no `<data src>` or `<script src>`
/// (a host's loader fetches those: `crate::host::loader`).
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Document, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        LoadError(vec![Diagnostic {
            file: path.display().to_string(),
            pos: Position { line: 1, column: 1 },
            message: format!("cannot read file: {e}"),
        }])
    })?;
    parse_document(&text, Some(path), options)
}

/// Builds a document from text that has no `<data src>` or `<script src>`
/// (those are diagnostics here: a host's loader fetches them); `path` names
/// it in diagnostics and anchors relative `<invoke src>`.
pub fn parse_document(
    text: &str,
    path: Option<&Path>,
    options: &LoadOptions,
) -> Result<Document, LoadError> {
    let file = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<input>".into());
    let location = path.map(|p| p.display().to_string());
    Parsed::new(text, file, location)?.build(&Sources::new(), options)
}

/// Builds a document fetched from `location` (a URL or path) that has no
/// `<data src>` or `<script src>`.
pub fn parse_document_from(
    text: &str,
    location: &str,
    options: &LoadOptions,
) -> Result<Document, LoadError> {
    Parsed::from_location(text, location)?.build(&Sources::new(), options)
}

/// How many state elements and `<transition>`s the tree holds (an upper
/// bound on what the builder makes of them, without `<xi:include>`d ones).
fn count_states_and_transitions(root: &Element) -> (usize, usize) {
    let (mut states, mut transitions) = (0, 0);
    let mut stack = vec![root];
    while let Some(el) = stack.pop() {
        match el.name.as_str() {
            "state" | "parallel" | "final" | "history" => states += 1,
            "transition" => transitions += 1,
            _ => {}
        }
        stack.extend(el.elements());
    }
    (states, transitions)
}

fn is_scxml(el: &Element) -> bool {
    match el.ns.as_deref() {
        None => true,
        Some(ns) => ns == SCXML_NS,
    }
}

/// The parts `<send>` and `<invoke>` share, built.
struct MessageParts {
    idlocation: Option<ExprId>,
    namelist: Vec<(Arc<str>, ExprId)>,
    params: Vec<Param>,
    content: Option<Content>,
}

struct PendingTargets {
    transition: TransitionId,
    names: Vec<compact_str::CompactString>,
    pos: Position,
}

struct Builder<'a> {
    /// The file diagnostics name (shared: every transition keeps it).
    file: Arc<str>,
    text: &'a str,
    /// Where the document came from (a path or URL); relative `src` URIs
    /// resolve against it.
    location: Option<String>,
    options: &'a LoadOptions<'a>,
    sources: &'a Sources,
    states: Vec<State>,
    transitions: Vec<Transition>,
    pending_targets: Vec<PendingTargets>,
    exprs: Vec<Expr>,
    errors: Vec<Diagnostic>,
    warnings: Vec<String>,
    /// State ids seen, sharing the string the state keeps as its name.
    /// The states named by an `id`, for duplicates and targets.
    ids: foldhash::HashMap<Arc<str>, StateId>,
    /// The dialect the document is read as (decided at `<scxml>`).
    dialect: Dialect,
    /// Where the included element being built was included from
    /// (`file:line:column`), while building one.
    included_at: Option<Arc<str>>,
    /// For each transition, the file its errors name and where it was
    /// included from (targets are resolved after the whole tree is built).
    transition_files: Vec<(Arc<str>, Option<Arc<str>>)>,
}

/// What an `initial` on a state was given as, resolved after all states exist.
/// A state being built whose children are still to be read.
struct StateFrame<'a> {
    el: &'a Element,
    id: StateId,
    kind: StateKind,
    initial: InitialSpec,
    /// The child elements this kind of state may have.
    allowed: &'static [&'static str],
    /// The child nodes not read yet.
    children: std::slice::Iter<'a, Node>,
    /// The document being read before this included state was opened.
    saved: Option<SavedOrigin<'a>>,
}

/// What `open_state` left: a state still open, or one already finished.
enum Opened<'a> {
    Open(StateFrame<'a>),
    Closed(StateId),
}

/// The document the builder was reading before it entered a state an
/// `<xi:include>` brought in.
struct SavedOrigin<'a> {
    file: Arc<str>,
    text: &'a str,
    location: Option<String>,
    included_at: Option<Arc<str>>,
}

enum InitialSpec {
    None,
    Attr(Vec<compact_str::CompactString>, Position),
    Element(TransitionId),
}

impl<'a> Builder<'a> {
    fn new(
        file: Arc<str>,
        text: &'a str,
        location: Option<String>,
        options: &'a LoadOptions<'a>,
        sources: &'a Sources,
    ) -> Builder<'a> {
        Builder {
            file,
            text,
            location,
            options,
            sources,
            states: Vec::new(),
            transitions: Vec::new(),
            pending_targets: Vec::new(),
            exprs: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            ids: foldhash::HashMap::default(),
            dialect: Dialect::W3c,
            included_at: None,
            transition_files: Vec::new(),
        }
    }

    fn error(&mut self, pos: Position, message: impl Into<String>) {
        let message = match &self.included_at {
            Some(at) => format!("{} (included from {at})", message.into()),
            None => message.into(),
        };
        self.errors.push(Diagnostic {
            file: self.file.to_string(),
            pos,
            message,
        });
    }

    /// An error about a transition, named in the file it was written in.
    fn transition_error(&mut self, t: TransitionId, pos: Position, message: String) {
        let (file, at) = self.transition_files[t.index()].clone();
        let saved = (
            std::mem::replace(&mut self.file, file),
            std::mem::replace(&mut self.included_at, at),
        );
        self.error(pos, message);
        (self.file, self.included_at) = saved;
    }

    fn warn(&mut self, pos: Position, message: impl Into<String>) {
        let m = match &self.included_at {
            Some(at) => format!(
                "{}:{}: warning: {} (included from {at})",
                self.file,
                pos,
                message.into()
            ),
            None => format!("{}:{}: warning: {}", self.file, pos, message.into()),
        };
        self.warnings.push(m);
    }

    fn expr(&mut self, source: &str, kind: ExprKind, pos: Position) -> ExprId {
        let id = ExprId(self.exprs.len() as u32);
        self.exprs.push(Expr {
            source: source.into(),
            kind,
            position: pos,
        });
        id
    }

    fn build(mut self, root: &'a Element) -> Result<Document, LoadError> {
        // Room for every state and transition at once: growing these
        // arenas by doubling copied them again and again and touched fresh
        // pages each time (a tenth of loading a 5 000-state document).
        let (states, transitions) = count_states_and_transitions(root);
        self.states.reserve(states + 1);
        self.ids.reserve(states);
        self.transitions.reserve(transitions + states);
        self.transition_files.reserve(transitions + states);
        self.pending_targets.reserve(transitions + states);
        if root.name != "scxml" || !is_scxml(root) {
            self.error(
                root.pos,
                format!("root element must be <scxml>, found <{}>", root.name),
            );
            return Err(LoadError(self.errors));
        }
        self.dialect = self.options.dialect.unwrap_or_else(|| {
            Dialect::detect(
                root.attr("profile").is_some(),
                root.attr("datamodel").is_some(),
            )
        });
        if self.dialect == Dialect::Ors
            && let Some(profile) = root.attr("profile")
            && !profile.trim().eq_ignore_ascii_case("ecmascript")
        {
            self.error(
                root.pos,
                format!(
                    "unsupported profile '{profile}' (ORS supports the ecmascript profile only)"
                ),
            );
        }
        let datamodel = match root.attr("datamodel") {
            None | Some("ecmascript") => DataModelKind::Ecmascript,
            Some("null") => DataModelKind::Null,
            Some(other) => {
                self.error(
                    root.pos,
                    format!("unsupported datamodel '{other}' (ecmascript and null are supported)"),
                );
                DataModelKind::Ecmascript
            }
        };
        let binding = match root.attr("binding") {
            None | Some("early") => Binding::Early,
            Some("late") => Binding::Late,
            Some(other) => {
                self.error(
                    root.pos,
                    format!("binding must be 'early' or 'late', not '{other}'"),
                );
                Binding::Early
            }
        };
        let name = root.attr("name").map(str::to_string);
        let persist = match root.attr("_persist").map(str::trim) {
            None => true,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(other) => {
                self.error(
                    root.pos,
                    format!("_persist must be 'true' or 'false', not '{other}'"),
                );
                true
            }
        };
        let application_type = root.attr("_type").map(str::to_string);

        // The root occupies id 0.
        self.push_state(StateKind::Root, None, Arc::from("__scxml"), root.pos);
        let mut scripts = Vec::new();
        let mut initial_children = Vec::new();
        for child in root.elements() {
            if !is_scxml(child) {
                continue;
            }
            match child.name.as_str() {
                "state" | "parallel" | "final" => {
                    let id = self.build_state(child, Document::ROOT);
                    initial_children.push(id);
                }
                "datamodel" => self.build_datamodel(child, Document::ROOT),
                "script" => {
                    if let Some(e) = self.build_script(child) {
                        scripts.push(e);
                    }
                }
                other => self.error(child.pos, format!("<{other}> is not allowed in <scxml>")),
            }
        }
        if initial_children.is_empty() {
            self.error(
                root.pos,
                "<scxml> must contain at least one <state>, <parallel> or <final>",
            );
            return Err(LoadError(self.errors));
        }
        self.states[0].last_descendant = StateId(self.states.len() as u32 - 1);
        let spec = match root.attr("initial") {
            Some(v) => InitialSpec::Attr(split_ids(v), root.pos),
            None => InitialSpec::None,
        };
        self.finish_initial(Document::ROOT, spec, root.pos);
        self.states[0].kind = StateKind::Root;
        self.resolve_targets();
        self.validate();
        if !self.errors.is_empty() {
            return Err(LoadError(self.errors));
        }
        let mut doc = Document::assemble(
            name,
            self.location,
            datamodel,
            binding,
            self.states,
            self.transitions,
            self.exprs,
            scripts,
            self.warnings,
        );
        doc.persist = persist;
        doc.dialect = self.dialect;
        doc.application_type = application_type;
        Ok(doc)
    }

    fn push_state(
        &mut self,
        kind: StateKind,
        parent: Option<StateId>,
        name: Arc<str>,
        pos: Position,
    ) -> StateId {
        let id = StateId(self.states.len() as u32);
        let ancestors = match parent {
            Some(p) => {
                let mut a = vec![p];
                a.extend_from_slice(&self.states[p.index()].ancestors);
                a
            }
            None => Vec::new(),
        };
        self.states.push(State {
            id,
            name,
            kind,
            parent,
            children: Vec::new(),
            history: Vec::new(),
            ancestors,
            last_descendant: id,
            initial: None,
            transitions: Vec::new(),
            onentry: Vec::new(),
            onexit: Vec::new(),
            data: Vec::new(),
            invokes: Vec::new(),
            donedata: None,
            position: pos,
        });
        id
    }

    fn state_name(&mut self, el: &Element) -> Arc<str> {
        match el.attr("id") {
            Some(id) => {
                if id.is_empty() || id.chars().any(char::is_whitespace) {
                    self.error(el.pos, format!("state id '{id}' is not a valid XML id"));
                }
                let name: Arc<str> = Arc::from(id);
                if let Some(prev) = self.ids.get(id) {
                    let prev = self.states[prev.index()].position;
                    self.error(
                        el.pos,
                        format!("duplicate state id '{id}' (first defined at {prev})"),
                    );
                } else {
                    // `push_state` gives the state this id next.
                    let next = StateId(self.states.len() as u32);
                    self.ids.insert(name.clone(), next);
                }
                name
            }
            None => {
                let mut n = self.states.len();
                loop {
                    let candidate = format!("__state{n}");
                    if !self.ids.contains_key(candidate.as_str()) {
                        return Arc::from(candidate.as_str());
                    }
                    n += 1;
                }
            }
        }
    }

    /// Builds the state `el` and every state below it as children of
    /// `parent`, and returns `el`'s id. Ids follow document order (a state
    /// before its children). The walk keeps an explicit stack of open
    /// states, so a deeply nested document never deepens Rust's stack. A
    /// state an `<xi:include>` brought in is read as part of its own
    /// document (its text, location and file name) until it is closed.
    fn build_state(&mut self, el: &'a Element, parent: StateId) -> StateId {
        let mut stack: Vec<StateFrame<'a>> = Vec::new();
        let top = match self.open_state(el, parent) {
            Opened::Closed(id) => return id,
            Opened::Open(frame) => {
                let id = frame.id;
                stack.push(frame);
                id
            }
        };
        while let Some(frame) = stack.last_mut() {
            let (id, kind, owner, allowed) = (frame.id, frame.kind, frame.el, frame.allowed);
            let Some(child) = frame.children.by_ref().find_map(|n| match n {
                Node::Element(c) if is_scxml(c) => Some(c),
                _ => None,
            }) else {
                let frame = stack.pop().expect("the frame just read");
                self.close_state(frame);
                continue;
            };
            let cname = child.name.as_str();
            if !allowed.contains(&cname) {
                self.error(
                    child.pos,
                    format!("<{cname}> is not allowed in <{}>", owner.name),
                );
                continue;
            }
            match cname {
                "onentry" => {
                    let b = self.build_block(child);
                    self.states[id.index()].onentry.push(b);
                }
                "onexit" => {
                    let b = self.build_block(child);
                    self.states[id.index()].onexit.push(b);
                }
                "transition" => {
                    let t = self.build_transition(child, id);
                    self.states[id.index()].transitions.push(t);
                }
                "initial" => {
                    if matches!(frame.initial, InitialSpec::Attr(..)) {
                        self.error(child.pos, "a state must not have both an 'initial' attribute and an <initial> element");
                    }
                    if kind != StateKind::Compound {
                        self.error(
                            child.pos,
                            "<initial> is only allowed in a <state> with child states",
                        );
                    }
                    if let Some(tid) = self.default_transition(child, "<initial>", id) {
                        frame.initial = InitialSpec::Element(tid);
                    }
                }
                "state" | "parallel" | "final" | "history" => {
                    if let Opened::Open(inner) = self.open_state(child, id) {
                        stack.push(inner);
                    }
                }
                "datamodel" => self.build_datamodel(child, id),
                "invoke" => {
                    let inv = self.build_invoke(child);
                    self.states[id.index()].invokes.push(inv);
                }
                "donedata" => {
                    let dd = self.build_donedata(child);
                    self.states[id.index()].donedata = Some(dd);
                }
                _ => unreachable!("filtered by the allowed list"),
            }
        }
        top
    }

    /// Starts the state `el` under `parent`: its id, kind and `initial`
    /// attribute. A `<history>` is finished at once (`Closed`); any other
    /// state stays open until its children are built.
    fn open_state(&mut self, el: &'a Element, parent: StateId) -> Opened<'a> {
        let saved = el.origin.as_deref().map(|origin| SavedOrigin {
            file: std::mem::replace(&mut self.file, Arc::from(origin.file.as_str())),
            text: std::mem::replace(&mut self.text, &origin.text),
            location: self.location.replace(origin.location.clone()),
            included_at: self
                .included_at
                .replace(Arc::from(origin.included_at.as_str())),
        });
        let name = self.state_name(el);
        let has_child_states = el
            .elements()
            .any(|c| is_scxml(c) && matches!(c.name.as_str(), "state" | "parallel" | "final"));
        let kind = match el.name.as_str() {
            "parallel" => StateKind::Parallel,
            "final" => StateKind::Final,
            "history" => StateKind::History {
                deep: el.attr("type") == Some("deep"),
            },
            _ if has_child_states => StateKind::Compound,
            _ => StateKind::Atomic,
        };
        let id = self.push_state(kind, Some(parent), name, el.pos);
        if let StateKind::History { .. } = kind {
            if let Some(t) = el.attr("type")
                && t != "deep"
                && t != "shallow"
            {
                self.error(
                    el.pos,
                    format!("history type must be 'shallow' or 'deep', not '{t}'"),
                );
            }
            self.states[parent.index()].history.push(id);
            if let Some(tid) = self.default_transition(el, "<history>", id) {
                self.states[id.index()].initial = Some(tid);
            }
            self.states[id.index()].last_descendant = StateId(self.states.len() as u32 - 1);
            self.restore_origin(saved);
            return Opened::Closed(id);
        }
        self.states[parent.index()].children.push(id);

        let mut initial = InitialSpec::None;
        if let Some(v) = el.attr("initial") {
            if kind != StateKind::Compound {
                self.error(
                    el.pos,
                    format!(
                        "'initial' is only allowed on a <state> with child states (on <{}>)",
                        el.name
                    ),
                );
            }
            initial = InitialSpec::Attr(split_ids(v), el.pos);
        }
        let allowed: &'static [&'static str] = match kind {
            StateKind::Final => &["onentry", "onexit", "donedata"],
            StateKind::Parallel => &[
                "onentry",
                "onexit",
                "transition",
                "state",
                "parallel",
                "history",
                "datamodel",
                "invoke",
            ],
            _ => &[
                "onentry",
                "onexit",
                "transition",
                "initial",
                "state",
                "parallel",
                "final",
                "history",
                "datamodel",
                "invoke",
            ],
        };
        Opened::Open(StateFrame {
            el,
            id,
            kind,
            initial,
            allowed,
            children: el.children.iter(),
            saved,
        })
    }

    /// Finishes an open state once its children are built: its last
    /// descendant and its initial transition.
    fn close_state(&mut self, frame: StateFrame<'a>) {
        let id = frame.id;
        self.states[id.index()].last_descendant = StateId(self.states.len() as u32 - 1);
        if frame.kind == StateKind::Compound {
            self.finish_initial(id, frame.initial, frame.el.pos);
        }
        self.restore_origin(frame.saved);
    }

    fn restore_origin(&mut self, saved: Option<SavedOrigin<'a>>) {
        if let Some(s) = saved {
            self.file = s.file;
            self.text = s.text;
            self.location = s.location;
            self.included_at = s.included_at;
        }
    }

    /// Gives a compound state (or the root) its initial transition: from the
    /// attribute, the `<initial>` element, or the first child in document order.
    fn finish_initial(&mut self, state: StateId, spec: InitialSpec, pos: Position) {
        let tid = match spec {
            InitialSpec::Element(t) => t,
            InitialSpec::Attr(names, pos) => {
                let tid = self.new_transition(state, pos);
                self.pending_targets.push(PendingTargets {
                    transition: tid,
                    names,
                    pos,
                });
                tid
            }
            InitialSpec::None => {
                let first = self.states[state.index()].children[0];
                let tid = self.new_transition(state, pos);
                self.transitions[tid.index()].targets.push(first);
                tid
            }
        };
        self.states[state.index()].initial = Some(tid);
    }

    fn new_transition(&mut self, source: StateId, pos: Position) -> TransitionId {
        let id = TransitionId(self.transitions.len() as u32);
        self.transition_files
            .push((self.file.clone(), self.included_at.clone()));
        self.transitions.push(Transition {
            id,
            source,
            events: Vec::new(),
            cond: None,
            targets: Vec::new(),
            internal: false,
            content: Vec::new(),
            static_domain: None,
            targets_history: false,
            position: pos,
        });
        id
    }

    fn build_transition(&mut self, el: &Element, source: StateId) -> TransitionId {
        let id = self.new_transition(source, el.pos);
        let events = el
            .attr("event")
            .map(|e| e.split_whitespace().map(EventDescriptor::parse).collect())
            .unwrap_or_default();
        if el.attr("event").is_some_and(|e| e.trim().is_empty()) {
            self.error(el.pos, "'event' must not be empty");
        }
        let cond = el
            .attr("cond")
            .map(|c| self.expr(c, ExprKind::Value, el.pos));
        let internal = match el.attr("type") {
            None | Some("external") => false,
            Some("internal") => true,
            Some(other) => {
                self.error(
                    el.pos,
                    format!("transition type must be 'internal' or 'external', not '{other}'"),
                );
                false
            }
        };
        if let Some(targets) = el.attr("target") {
            let names = split_ids(targets);
            if names.is_empty() {
                self.error(el.pos, "'target' must name at least one state");
            }
            self.pending_targets.push(PendingTargets {
                transition: id,
                names,
                pos: el.pos,
            });
        }
        let content = self.build_block(el);
        let t = &mut self.transitions[id.index()];
        t.events = events;
        t.cond = cond;
        t.internal = internal;
        t.content = content;
        id
    }

    fn resolve_targets(&mut self) {
        // Only states named by an `id` can be targets (a generated
        // `__stateN` name is not the author's).
        let pending = std::mem::take(&mut self.pending_targets);
        for p in pending {
            let mut targets = Vec::new();
            for n in &p.names {
                match self.ids.get(n.as_str()) {
                    Some(&s) if s != Document::ROOT => targets.push(s),
                    _ => self.transition_error(
                        p.transition,
                        p.pos,
                        format!("unknown target state '{n}'"),
                    ),
                }
            }
            self.transitions[p.transition.index()].targets = targets;
        }
    }

    /// The Recommendation's static rules on initial and history transitions.
    fn validate(&mut self) {
        let mut problems = Vec::new();
        for s in &self.states {
            let Some(tid) = s.initial else { continue };
            let t = &self.transitions[tid.index()];
            match s.kind {
                StateKind::History { deep } => {
                    let parent = s.parent.expect("history has a parent");
                    for &target in &t.targets {
                        let tgt = &self.states[target.index()];
                        let ok = if deep {
                            tgt.id > parent
                                && tgt.id <= self.states[parent.index()].last_descendant
                                && tgt.id != s.id
                        } else {
                            tgt.parent == Some(parent) && !tgt.is_history()
                        };
                        if !ok {
                            problems.push((t.id, t.position, format!(
                                "history '{}' default transition target '{}' must be a {} of '{}'",
                                s.name, tgt.name, if deep { "descendant" } else { "child" },
                                self.states[parent.index()].name
                            )));
                        }
                    }
                }
                _ => {
                    for &target in &t.targets {
                        let tgt = &self.states[target.index()];
                        if !(tgt.id > s.id && tgt.id <= s.last_descendant) {
                            problems.push((
                                t.id,
                                t.position,
                                format!(
                                    "initial target '{}' is not a descendant of '{}'",
                                    tgt.name, s.name
                                ),
                            ));
                        }
                    }
                    if !targets_are_consistent(&self.states, &t.targets) {
                        problems.push((
                            t.id,
                            t.position,
                            format!(
                                "initial targets of '{}' do not form a legal configuration",
                                s.name
                            ),
                        ));
                    }
                }
            }
        }
        for (t, pos, msg) in problems {
            self.transition_error(t, pos, msg);
        }
    }

    /// The fetched text of a `src` value, resolved against the document's
    /// location; `None` when it was not supplied.
    fn fetched(&self, src: &str) -> Option<Result<Arc<str>, String>> {
        self.sources
            .get(&uri::resolve(src, self.location.as_deref()))
            .cloned()
    }

    fn build_datamodel(&mut self, el: &Element, state: StateId) {
        for d in el.elements() {
            if !is_scxml(d) {
                continue;
            }
            if d.name != "data" {
                self.error(d.pos, format!("<{}> is not allowed in <datamodel>", d.name));
                continue;
            }
            let Some(id) = d.attr("id") else {
                self.error(d.pos, "<data> requires an 'id'");
                continue;
            };
            let inline = inline_content(self.text, d);
            let count = d.attr("src").is_some() as u8
                + d.attr("expr").is_some() as u8
                + inline.is_some() as u8;
            if count > 1 {
                self.error(
                    d.pos,
                    "<data> may have only one of 'src', 'expr' or inline content",
                );
            }
            let source = if let Some(src) = d.attr("src") {
                let loaded = match self.fetched(src) {
                    Some(Ok(text)) => Ok(text),
                    Some(Err(e)) => Err(Arc::from(e.as_str())),
                    None => {
                        self.error(d.pos, format!("<data src>: '{src}' was not fetched"));
                        Err(Arc::from("not fetched"))
                    }
                };
                DataSource::Src {
                    uri: src.into(),
                    loaded,
                }
            } else if let Some(expr) = d.attr("expr") {
                DataSource::Expr(self.expr(expr, ExprKind::Value, d.pos))
            } else if let Some(inline) = inline {
                DataSource::Inline(inline)
            } else {
                DataSource::None
            };
            self.states[state.index()].data.push(DataDecl {
                id: id.into(),
                source,
                position: d.pos,
            });
        }
    }

    fn build_script(&mut self, el: &Element) -> Option<ExprId> {
        if let Some(src) = el.attr("src") {
            if !el.text().trim().is_empty() {
                self.error(el.pos, "<script> must not have both 'src' and content");
            }
            match self.fetched(src) {
                Some(Ok(text)) => Some(self.expr(&text, ExprKind::Script, el.pos)),
                Some(Err(e)) => {
                    self.error(el.pos, format!("<script src>: {e}"));
                    None
                }
                None => {
                    self.error(el.pos, format!("<script src>: '{src}' was not fetched"));
                    None
                }
            }
        } else {
            // Text, and the texts of `<xi:include parse="text">` children,
            // in document order (XInclude 1.0 §4.3: a text include
            // becomes character content where it stands).
            let mut body = String::new();
            for node in &el.children {
                match node {
                    xml::Node::Text(t) => body.push_str(t),
                    xml::Node::Element(e)
                        if e.ns.as_deref() == Some(XINCLUDE_NS) && e.name == "include" =>
                    {
                        let href = e.attr("href").unwrap_or_default();
                        if e.attr("parse").map(str::trim) != Some("text") {
                            self.error(e.pos, "<xi:include> in <script> must have parse=\"text\"");
                            continue;
                        }
                        if href.is_empty() {
                            self.error(e.pos, "<xi:include> requires an 'href'");
                            continue;
                        }
                        match self.fetched(href) {
                            Some(Ok(text)) => body.push_str(&text),
                            Some(Err(err)) => {
                                self.error(e.pos, format!("<xi:include href=\"{href}\">: {err}"))
                            }
                            None => self.error(
                                e.pos,
                                format!("<xi:include href=\"{href}\">: it was not fetched"),
                            ),
                        }
                    }
                    xml::Node::Element(e) => {
                        self.error(e.pos, format!("<{}> is not allowed in <script>", e.name))
                    }
                }
            }
            Some(self.expr(&body, ExprKind::Script, el.pos))
        }
    }

    fn build_block(&mut self, parent: &Element) -> Block {
        let mut block = Vec::new();
        for el in parent.elements() {
            if let Some(a) = self.build_action(el) {
                block.push(a);
            }
        }
        block
    }

    fn value_source(&mut self, el: &Element, literal: &str, expr: &str) -> Option<ValueSource> {
        match (el.attr(literal), el.attr(expr)) {
            (Some(_), Some(_)) => {
                self.error(
                    el.pos,
                    format!("<{}> must not have both '{literal}' and '{expr}'", el.name),
                );
                None
            }
            (Some(v), None) => Some(ValueSource::Literal(v.into())),
            (None, Some(e)) => Some(ValueSource::Expr(self.expr(e, ExprKind::Value, el.pos))),
            (None, None) => None,
        }
    }

    fn build_action(&mut self, el: &Element) -> Option<Action> {
        if !is_scxml(el) {
            let ns = el.ns.clone().unwrap_or_default();
            if !self.options.custom_actions.claims(&ns, &el.name) {
                let message = match ors_module(&ns) {
                    Some(module) => format!(
                        "<{}> of the ORS {module} module is not supported; it raises \
                         error.{module}.{} (error \"unsupported\") when run",
                        el.name, el.name
                    ),
                    None => format!(
                        "no handler for custom action <{}> in namespace '{ns}'; it raises \
                         error.execution when run",
                        el.name
                    ),
                };
                self.warn(el.pos, message);
            }
            return Some(Action::Custom(Box::new(CustomAction {
                namespace: ns,
                name: el.name.as_str().into(),
                attributes: el
                    .attrs
                    .iter()
                    .map(|a| (Arc::from(a.name.as_str()), Arc::from(a.value.as_str())))
                    .collect(),
                xml: self.text[el.outer_range()].into(),
                position: el.pos,
            })));
        }
        let pos = el.pos;
        match el.name.as_str() {
            "raise" => match el.attr("event") {
                Some(e) if !e.trim().is_empty() => Some(Action::Raise { event: e.into() }),
                _ => {
                    self.error(pos, "<raise> requires an 'event'");
                    None
                }
            },
            "log" => Some(Action::Log {
                label: el.attr("label").map(Arc::from),
                expr: el.attr("expr").map(|e| self.expr(e, ExprKind::Value, pos)),
            }),
            "script" => self.build_script(el).map(Action::Script),
            "assign" => {
                let Some(loc) = el.attr("location") else {
                    self.error(pos, "<assign> requires a 'location'");
                    return None;
                };
                let location = self.expr(loc, ExprKind::Location, pos);
                let inline = inline_content(self.text, el);
                let value = match (el.attr("expr"), inline) {
                    (Some(_), Some(_)) => {
                        self.error(pos, "<assign> must not have both 'expr' and content");
                        return None;
                    }
                    (Some(e), None) => AssignValue::Expr(self.expr(e, ExprKind::Value, pos)),
                    (None, Some(c)) => AssignValue::Inline(c),
                    (None, None) => AssignValue::None,
                };
                Some(Action::Assign { location, value })
            }
            "cancel" => match self.value_source(el, "sendid", "sendidexpr") {
                Some(sendid) => Some(Action::Cancel { sendid }),
                None => {
                    self.error(pos, "<cancel> requires 'sendid' or 'sendidexpr'");
                    None
                }
            },
            "if" => {
                let mut branches = vec![IfBranch {
                    cond: Some(self.expr(el.attr("cond").unwrap_or("false"), ExprKind::Value, pos)),
                    body: Vec::new(),
                }];
                if el.attr("cond").is_none() {
                    self.error(pos, "<if> requires a 'cond'");
                }
                let mut seen_else = false;
                for child in el.elements() {
                    if is_scxml(child) && child.name == "elseif" {
                        if seen_else {
                            self.error(child.pos, "<elseif> after <else>");
                        }
                        let c = child.attr("cond").unwrap_or("false");
                        let cond = self.expr(c, ExprKind::Value, child.pos);
                        branches.push(IfBranch {
                            cond: Some(cond),
                            body: Vec::new(),
                        });
                    } else if is_scxml(child) && child.name == "else" {
                        if seen_else {
                            self.error(child.pos, "more than one <else>");
                        }
                        seen_else = true;
                        branches.push(IfBranch {
                            cond: None,
                            body: Vec::new(),
                        });
                    } else if let Some(a) = self.build_action(child) {
                        branches
                            .last_mut()
                            .expect("at least the if branch")
                            .body
                            .push(a);
                    }
                }
                Some(Action::If { branches })
            }
            "foreach" => {
                let (Some(array), Some(item)) = (el.attr("array"), el.attr("item")) else {
                    self.error(pos, "<foreach> requires 'array' and 'item'");
                    return None;
                };
                let array = self.expr(array, ExprKind::Value, pos);
                let body = self.build_block(el);
                Some(Action::Foreach(Box::new(Foreach {
                    array,
                    item: item.into(),
                    index: el.attr("index").map(Arc::from),
                    body,
                    position: pos,
                })))
            }
            "send" => self.build_send(el).map(|s| Action::Send(Box::new(s))),
            other => {
                self.error(pos, format!("<{other}> is not executable content"));
                None
            }
        }
    }

    fn namelist(&mut self, el: &Element) -> Vec<(Arc<str>, ExprId)> {
        el.attr("namelist")
            .map(|n| {
                n.split_whitespace()
                    .map(|name| (Arc::from(name), self.expr(name, ExprKind::Location, el.pos)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn params(&mut self, el: &Element) -> Vec<Param> {
        let mut params = Vec::new();
        for p in el.elements().filter(|c| is_scxml(c) && c.name == "param") {
            let Some(name) = p.attr("name") else {
                self.error(p.pos, "<param> requires a 'name'");
                continue;
            };
            let expr = match (p.attr("expr"), p.attr("location")) {
                (Some(_), Some(_)) => {
                    self.error(p.pos, "<param> must not have both 'expr' and 'location'");
                    None
                }
                (Some(e), None) => Some(self.expr(e, ExprKind::Value, p.pos)),
                (None, Some(l)) => Some(self.expr(l, ExprKind::Location, p.pos)),
                (None, None) => None,
            };
            params.push(Param {
                name: name.into(),
                expr,
            });
        }
        params
    }

    fn content(&mut self, el: &Element) -> Option<Content> {
        let mut contents = el.elements().filter(|c| is_scxml(c) && c.name == "content");
        let c = contents.next()?;
        if contents.next().is_some() {
            self.error(
                c.pos,
                format!("<{}> may contain only one <content>", el.name),
            );
        }
        let inline = inline_content(self.text, c);
        match (c.attr("expr"), inline) {
            (Some(_), Some(_)) => {
                self.error(c.pos, "<content> must not have both 'expr' and children");
                None
            }
            (Some(e), None) => Some(Content::Expr(self.expr(e, ExprKind::Value, c.pos))),
            (None, Some(i)) => Some(Content::Inline(i)),
            (None, None) => Some(Content::Inline(InlineContent {
                text: "".into(),
                is_xml: false,
            })),
        }
    }

    /// What `<send>` and `<invoke>` share: `idlocation` (refused beside an
    /// `id`), `namelist`, the `<param>`s and the `<content>`.
    fn message_parts(&mut self, el: &Element) -> MessageParts {
        let pos = el.pos;
        if el.attr("id").is_some() && el.attr("idlocation").is_some() {
            self.error(
                pos,
                format!("<{}> must not have both 'id' and 'idlocation'", el.name),
            );
        }
        let idlocation = el
            .attr("idlocation")
            .map(|l| self.expr(l, ExprKind::Location, pos));
        MessageParts {
            idlocation,
            namelist: self.namelist(el),
            params: self.params(el),
            content: self.content(el),
        }
    }

    /// A value the ORS dialect writes as an expression in `attr` (or, as
    /// in the Rec, in `expr_attr`).
    fn ors_value(&mut self, el: &Element, attrs: &[&str], expr_attr: &str) -> Option<ValueSource> {
        let given: Vec<(&str, &str)> = attrs
            .iter()
            .filter_map(|a| el.attr(a).map(|v| (*a, v)))
            .chain(el.attr(expr_attr).map(|v| (expr_attr, v)))
            .collect();
        match given.as_slice() {
            [] => None,
            [(_, source)] => Some(ValueSource::Expr(self.expr(
                source,
                ExprKind::Value,
                el.pos,
            ))),
            [(a, _), (b, _), ..] => {
                self.error(
                    el.pos,
                    format!("<{}> must not have both '{a}' and '{b}'", el.name),
                );
                None
            }
        }
    }

    fn build_send(&mut self, el: &Element) -> Option<SendAction> {
        let pos = el.pos;
        let ors = self.dialect == Dialect::Ors;
        let (event, target, type_, delay) = if ors {
            (
                self.ors_value(el, &["event"], "eventexpr"),
                self.ors_value(el, &["target"], "targetexpr"),
                self.ors_value(el, &["type", "targettype"], "typeexpr"),
                self.ors_value(el, &["delay"], "delayexpr"),
            )
        } else {
            (
                self.value_source(el, "event", "eventexpr"),
                self.value_source(el, "target", "targetexpr"),
                self.value_source(el, "type", "typeexpr"),
                self.value_source(el, "delay", "delayexpr"),
            )
        };
        let MessageParts {
            idlocation,
            namelist,
            params,
            content,
        } = self.message_parts(el);
        if content.is_some() && (!namelist.is_empty() || !params.is_empty()) {
            self.error(
                pos,
                "<send> with <content> must not have 'namelist' or <param>",
            );
        }
        if let Some(ValueSource::Literal(d)) = &delay
            && crate::model::parse_delay(d).is_none()
        {
            self.error(
                pos,
                format!("'{d}' is not a valid delay (CSS2 time, e.g. 1s or 500ms)"),
            );
        }
        if let (Some(ValueSource::Literal(t)), Some(_)) = (&target, &delay)
            && &**t == "#_internal"
        {
            self.error(pos, "<send> to '#_internal' must not have a delay");
        }
        Some(SendAction {
            event,
            target,
            type_,
            id: el
                .attr("id")
                .or_else(|| if ors { el.attr("sendid") } else { None })
                .map(Arc::from),
            idlocation,
            delay,
            namelist,
            params,
            content,
            position: pos,
        })
    }

    fn build_donedata(&mut self, el: &Element) -> DoneData {
        let content = self.content(el);
        let params = self.params(el);
        if content.is_some() && !params.is_empty() {
            self.error(
                el.pos,
                "<donedata> must not have both <content> and <param>",
            );
        }
        DoneData { content, params }
    }

    /// The one `<transition>` of an `<initial>` or `<history>`: it must be
    /// there exactly once, have a target, and carry no `event` or `cond`.
    fn default_transition(
        &mut self,
        el: &Element,
        what: &str,
        source: StateId,
    ) -> Option<TransitionId> {
        let transitions: Vec<&Element> = el
            .elements()
            .filter(|c| is_scxml(c) && c.name == "transition")
            .collect();
        if transitions.len() != 1 {
            self.error(
                el.pos,
                format!("{what} must contain exactly one <transition>"),
            );
        }
        let t = transitions.first()?;
        if t.attr("event").is_some() || t.attr("cond").is_some() {
            self.error(
                t.pos,
                format!("the {what} transition must not have 'event' or 'cond'"),
            );
        }
        if t.attr("target").is_none() {
            self.error(t.pos, format!("the {what} transition must have a 'target'"));
        }
        Some(self.build_transition(t, source))
    }

    fn build_nested(&self, root: &Element) -> Result<Document, LoadError> {
        let nested = Builder::new(
            self.file.clone(),
            self.text,
            self.location.clone(),
            self.options,
            self.sources,
        );
        nested.build(root)
    }

    fn build_invoke(&mut self, el: &Element) -> Invoke {
        let pos = el.pos;
        let type_ = self.value_source(el, "type", "typeexpr");
        let mut src = self.value_source(el, "src", "srcexpr");
        // In included content a literal `src` is relative to the included
        // document, not the including one (XInclude 1.0 §4.5, base URI
        // fixup).
        if self.included_at.is_some()
            && let Some(ValueSource::Literal(s)) = &src
        {
            src = Some(ValueSource::Literal(
                uri::resolve(s, self.location.as_deref()).into(),
            ));
        }
        let MessageParts {
            idlocation,
            namelist,
            params,
            content,
        } = self.message_parts(el);
        if src.is_some() && content.is_some() {
            self.error(pos, "<invoke> must not have both 'src' and <content>");
        }
        let finalize = el
            .elements()
            .find(|c| is_scxml(c) && c.name == "finalize")
            .map(|f| self.build_block(f));
        // An inline child <scxml> is built once here, with the namespaces it
        // inherits, and shared by every invocation.
        let inline_document = el
            .elements()
            .find(|c| is_scxml(c) && c.name == "content")
            .and_then(|c| c.elements().find(|e| is_scxml(e) && e.name == "scxml"))
            .map(|child| {
                self.build_nested(child)
                    .map(Arc::new)
                    .map_err(|e| Arc::from(e.to_string().as_str()))
            });
        Invoke {
            inline_document,
            type_,
            src,
            id: el.attr("id").map(Arc::from),
            idlocation,
            autoforward: el.attr("autoforward") == Some("true"),
            namelist,
            params,
            content,
            finalize,
            position: pos,
        }
    }
}

/// Checks that a set of targets could be active together: no two of them
/// are different children of one compound ancestor path.
fn targets_are_consistent(states: &[State], targets: &[StateId]) -> bool {
    for (i, &a) in targets.iter().enumerate() {
        for &b in &targets[i + 1..] {
            if a == b {
                return false;
            }
            let sa = &states[a.index()];
            let sb = &states[b.index()];
            if sa.is_descendant_of(sb) || sb.is_descendant_of(sa) {
                return false;
            }
            // Their nearest common ancestor must be a parallel state.
            let common = sa
                .ancestors
                .iter()
                .find(|&&anc| sb.is_descendant_of(&states[anc.index()]))
                .copied();
            match common {
                Some(c) if states[c.index()].kind == StateKind::Parallel => {}
                _ => return false,
            }
        }
    }
    true
}

/// The ids of a `target` or `initial` (held inline: ids are short).
fn split_ids(v: &str) -> Vec<compact_str::CompactString> {
    v.split_whitespace().map(Into::into).collect()
}

/// The inline content of an element: its raw inner XML when it has element
/// children, otherwise its text; `None` when it is empty or blank.
fn inline_content(text: &str, el: &Element) -> Option<InlineContent> {
    let is_xml = el.children.iter().any(|n| matches!(n, Node::Element(_)));
    if is_xml {
        let raw = &text[el.inner_range()];
        return Some(InlineContent {
            text: raw.trim().into(),
            is_xml: true,
        });
    }
    let t = el.text();
    if t.trim().is_empty() {
        None
    } else {
        Some(InlineContent {
            text: t.into(),
            is_xml: false,
        })
    }
}
