//! XML inclusion as ORS and Composer use it (XInclude 1.0, W3C
//! Recommendation 15 November 2006, with the Composer prefix convention;
//! `docs/ors-dialect.md` has the rules and their sources).
//!
//! `<xi:include href="Flow.scxml" parse="xml" xpointer="ID" resolveid="P"/>`
//! in `<scxml>`, `<state>` or `<parallel>` stands for the element whose
//! `id` is `ID` in the document at `href` (resolved against the including
//! document's location and fetched by the host's loader like any other
//! reference). In the included text `$$_MY_PREFIX_$$` stands for `P`; the
//! included states' ids that do not already start with `P.` take it as a
//! prefix, and bare references among them (`target`, `initial`) follow.
//! A document read on its own resolves the macro as its own top level:
//! `$$_MY_PREFIX_$$.x` is `x`.
//!
//! Includes nest (each resolved against its own document), are checked
//! for cycles, and are bounded in depth and in total size, so a document
//! cannot make the server build an exponential tree. The included element
//! carries its [`Origin`] so the builder reports problems in it with the
//! included file's line and column and the place it was included from.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::xml::{self, Element, Node};
use super::{Diagnostic, Sources, XINCLUDE_NS, is_scxml, uri};
use crate::model::Position;

/// Composer's macro for the including state's `resolveid`.
pub const PREFIX_MACRO: &str = "$$_MY_PREFIX_$$";

/// How deep includes may nest.
pub const MAX_DEPTH: usize = 16;

/// How many elements all the includes of one document may bring in
/// together (a document including a page twice that includes another
/// twice, … would otherwise grow exponentially).
pub const MAX_INCLUDED_ELEMENTS: usize = 200_000;

/// How many bytes of included text one document's includes may parse in
/// all. Each distinct (document, `resolveid`) is parsed once and reused;
/// this bounds the work of many distinct prefixes of a large page.
pub const MAX_INCLUDED_BYTES: usize = 32 * 1024 * 1024;

/// Where an included element came from.
#[derive(Debug)]
pub struct Origin {
    /// The included document as diagnostics name it (its resolved URI).
    pub file: String,
    /// Its location, against which its own relative references resolve.
    pub location: String,
    /// Its text after prefix substitution; the element's byte ranges index
    /// into it.
    pub text: Arc<str>,
    /// `file:line:column` of the `<xi:include>` that brought it in.
    pub included_at: String,
}

/// `text` with Composer's prefix macro resolved: `$$_MY_PREFIX_$$` becomes
/// `prefix`; with no prefix (a document read on its own) `$$_MY_PREFIX_$$.`
/// and `$$_MY_PREFIX_$$` disappear.
pub fn substitute_prefix<'t>(text: &'t str, prefix: Option<&str>) -> std::borrow::Cow<'t, str> {
    if !text.contains(PREFIX_MACRO) {
        return std::borrow::Cow::Borrowed(text);
    }
    match prefix {
        Some(p) if !p.is_empty() => std::borrow::Cow::Owned(text.replace(PREFIX_MACRO, p)),
        _ => std::borrow::Cow::Owned(
            text.replace(&format!("{PREFIX_MACRO}."), "")
                .replace(PREFIX_MACRO, ""),
        ),
    }
}

/// Whether `el` is an `<xi:include>`.
pub fn is_include(el: &Element) -> bool {
    el.ns.as_deref() == Some(XINCLUDE_NS) && el.name == "include"
}

/// Whether an `<xi:include>` includes XML (its `parse`, default `xml`).
pub fn parses_xml(el: &Element) -> bool {
    el.attr("parse").map(str::trim).unwrap_or("xml") == "xml"
}

/// The element id an `xpointer` names: a shorthand pointer (`ID`), or the
/// `element(ID)` and `xpointer(id('ID'))` schemes.
fn pointer_id(xpointer: &str) -> Option<&str> {
    let x = xpointer.trim();
    let id = if let Some(rest) = x.strip_prefix("element(") {
        rest.strip_suffix(')')?
    } else if let Some(rest) = x.strip_prefix("xpointer(id(") {
        rest.strip_suffix("))")?
            .trim_matches(|c| c == '\'' || c == '"')
    } else {
        x
    };
    let valid = !id.is_empty()
        && !id.contains('/')
        && !id
            .chars()
            .any(|c| c.is_whitespace() || c == '(' || c == ')');
    valid.then_some(id)
}

/// Whether a `resolveid` can prefix state ids: letters, digits, `_`, `-`
/// and `.` (an XML name's characters: no markup, quotes or spaces).
fn valid_prefix(p: &str) -> bool {
    p.chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !p.starts_with('.')
        && !p.ends_with('.')
}

/// The first element below (or at) `el` whose `id` is `id`, in document
/// order (walked with a stack, not recursion).
fn find_by_id<'e>(el: &'e Element, id: &str) -> Option<&'e Element> {
    let mut stack = vec![el];
    while let Some(e) = stack.pop() {
        if e.attr("id") == Some(id) {
            return Some(e);
        }
        let at = stack.len();
        stack.extend(e.elements());
        stack[at..].reverse();
    }
    None
}

fn count_elements(el: &Element) -> usize {
    let mut stack = vec![el];
    let mut n = 0;
    while let Some(e) = stack.pop() {
        n += 1;
        stack.extend(e.elements());
    }
    n
}

fn is_state_like(el: &Element) -> bool {
    is_scxml(el) && matches!(el.name.as_str(), "state" | "parallel" | "final" | "history")
}

/// Gives the states of `el` the prefix `P.` and makes bare references to
/// them (`target`, `initial`) follow. Nested includes are left to their
/// own expansion.
fn prefix_ids(el: &mut Element, prefix: &str) {
    let dotted = format!("{prefix}.");
    let mut renamed = HashMap::new();
    collect_renames(el, &dotted, &mut renamed);
    apply_renames(el, &renamed);
}

fn collect_renames(el: &Element, dotted: &str, out: &mut HashMap<String, String>) {
    let mut stack = vec![el];
    while let Some(e) = stack.pop() {
        if is_include(e) {
            continue;
        }
        if is_state_like(e)
            && let Some(id) = e.attr("id")
            && !id.starts_with(dotted)
        {
            out.insert(id.to_string(), format!("{dotted}{id}"));
        }
        stack.extend(e.elements());
    }
}

fn apply_renames(el: &mut Element, renamed: &HashMap<String, String>) {
    let rename_all = |v: &str| {
        v.split_whitespace()
            .map(|t| renamed.get(t).map(String::as_str).unwrap_or(t))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut stack = vec![el];
    while let Some(e) = stack.pop() {
        if is_include(e) {
            continue;
        }
        let state_like = is_state_like(e);
        let scxml = is_scxml(e);
        for a in e.attrs.iter_mut().filter(|a| a.ns.is_none()) {
            match a.name.as_str() {
                "id" if state_like => {
                    if let Some(new) = renamed.get(a.value.as_str()) {
                        a.value = new.into();
                    }
                }
                "target" | "initial" if scxml => a.value = rename_all(&a.value).into(),
                _ => {}
            }
        }
        stack.extend(e.children.iter_mut().filter_map(|c| match c {
            Node::Element(child) => Some(child),
            Node::Text(_) => None,
        }));
    }
}

/// What an expansion is working from.
struct Context<'s> {
    sources: &'s Sources,
    /// (uri, id) of the includes being expanded, outermost first.
    stack: Vec<(String, String)>,
    /// Elements the includes may still bring in.
    budget: usize,
    /// Bytes of included text that may still be parsed.
    bytes: usize,
    /// Included documents already parsed, by (uri, `resolveid`): the
    /// substituted text and its tree.
    parsed: ParsedIncludes,
    errors: Vec<Diagnostic>,
}

type ParsedIncludes = HashMap<(String, Option<String>), (Arc<str>, Arc<Element>)>;

/// Where the element being expanded lives: its file, location and origin.
struct Place<'p> {
    file: &'p str,
    location: Option<&'p str>,
    origin: Option<&'p Arc<Origin>>,
}

impl Place<'_> {
    fn diagnostic(&self, pos: Position, message: String) -> Diagnostic {
        let message = match self.origin {
            Some(o) => format!("{message} (included from {})", o.included_at),
            None => message,
        };
        Diagnostic {
            file: self.file.to_string(),
            pos,
            message,
        }
    }
}

/// Whether the tree below `el` holds an XML `<xi:include>` (outside
/// `<script>`, whose text includes the builder reads itself).
pub fn has_xml_includes(el: &Element) -> bool {
    let mut stack = vec![el];
    while let Some(e) = stack.pop() {
        for c in e.elements() {
            if is_include(c) && parses_xml(c) {
                return true;
            }
            if !(is_scxml(c) && c.name == "script") {
                stack.push(c);
            }
        }
    }
    false
}

/// `root` with every XML include replaced by the element it names, or the
/// diagnostics of the includes that could not be resolved. `sources` holds
/// the fetched documents by resolved URI.
pub fn expand(
    root: &Element,
    file: &str,
    location: Option<&str>,
    sources: &Sources,
) -> Result<Element, Vec<Diagnostic>> {
    let mut cx = Context {
        sources,
        stack: Vec::new(),
        budget: MAX_INCLUDED_ELEMENTS,
        bytes: MAX_INCLUDED_BYTES,
        parsed: HashMap::new(),
        errors: Vec::new(),
    };
    let mut out = root.clone();
    let place = Place {
        file,
        location,
        origin: None,
    };
    expand_children(&mut out, &place, &mut cx, 1);
    if cx.errors.is_empty() {
        Ok(out)
    } else {
        Err(cx.errors)
    }
}

/// Expands the includes below `el`, which stands `depth` levels deep in
/// the expanded tree (the root is 1). An included element that would nest
/// the tree deeper than [`xml::depth_limit`] is refused before it is
/// walked, so the walk's own depth stays within the limit.
fn expand_children(el: &mut Element, place: &Place<'_>, cx: &mut Context<'_>, depth: usize) {
    /// An element whose children are being expanded: the element (its
    /// children taken out), the nodes still to look at, those kept, and
    /// its depth.
    struct Frame {
        el: Element,
        rest: std::vec::IntoIter<Node>,
        kept: Vec<Node>,
        depth: usize,
    }
    fn open(mut el: Element, depth: usize) -> Frame {
        let children = std::mem::take(&mut el.children);
        Frame {
            el,
            kept: Vec::with_capacity(children.len()),
            rest: children.into_iter(),
            depth,
        }
    }
    let is_script = |e: &Element| is_scxml(e) && e.name == "script";
    if is_script(el) {
        return;
    }
    let root = std::mem::replace(
        el,
        Element {
            ns: None,
            name: Default::default(),
            attrs: Box::default(),
            children: Box::default(),
            pos: el.pos,
            outer: el.outer,
            inner: el.inner,
            origin: None,
        },
    );
    let mut stack = vec![open(root, depth)];
    loop {
        let top = stack.last_mut().expect("the element being expanded");
        match top.rest.next() {
            Some(Node::Element(inc)) if is_include(&inc) && parses_xml(&inc) => {
                let parent = &top.el;
                let may_include = is_scxml(parent)
                    && matches!(parent.name.as_str(), "scxml" | "state" | "parallel");
                if !may_include {
                    cx.errors.push(place.diagnostic(
                        inc.pos,
                        format!(
                            "<xi:include parse=\"xml\"> may stand only in <scxml>, <state> or \
                             <parallel>, not in <{}>",
                            parent.name
                        ),
                    ));
                    continue;
                }
                let at = top.depth + 1;
                if let Some(included) = include(&inc, place, cx, at) {
                    let top = stack.last_mut().expect("the element being expanded");
                    top.kept.extend(included.into_iter().map(Node::Element));
                }
            }
            Some(Node::Element(child)) if is_script(&child) => {
                top.kept.push(Node::Element(child));
            }
            Some(Node::Element(child)) => {
                let at = top.depth + 1;
                stack.push(open(child, at));
            }
            Some(text) => top.kept.push(text),
            None => {
                let mut done = stack.pop().expect("the element being expanded");
                done.el.children = done.kept.into_boxed_slice();
                match stack.last_mut() {
                    Some(parent) => parent.kept.push(Node::Element(done.el)),
                    None => {
                        *el = done.el;
                        return;
                    }
                }
            }
        }
    }
}

/// The elements one `<xi:include>` stands for (its target, or its
/// `<xi:fallback>`'s children when the target cannot be fetched), or `None`
/// after recording why not.
/// `depth` is the level the included elements take in the expanded tree.
fn include(
    inc: &Element,
    place: &Place<'_>,
    cx: &mut Context<'_>,
    depth: usize,
) -> Option<Vec<Element>> {
    let fail = |cx: &mut Context<'_>, message: String| {
        cx.errors.push(place.diagnostic(inc.pos, message));
        None
    };
    let href = inc.attr("href").unwrap_or_default().trim();
    if href.is_empty() {
        return fail(cx, "<xi:include> requires an 'href'".into());
    }
    let Some(xpointer) = inc.attr("xpointer") else {
        return fail(
            cx,
            format!("<xi:include href=\"{href}\"> needs an 'xpointer' naming the state to include"),
        );
    };
    let Some(id) = pointer_id(xpointer) else {
        return fail(
            cx,
            format!(
                "<xi:include href=\"{href}\">: unsupported xpointer '{xpointer}' (an id, \
                 element(id) or xpointer(id('id')))"
            ),
        );
    };
    let uri = uri::resolve(href, place.location);
    let at = format!("{}:{}", place.file, inc.pos);
    if cx.stack.iter().any(|(u, i)| *u == uri && i == id) {
        let chain: Vec<String> = cx
            .stack
            .iter()
            .map(|(u, i)| format!("{u}#{i}"))
            .chain(std::iter::once(format!("{uri}#{id}")))
            .collect();
        return fail(cx, format!("include cycle: {}", chain.join(" -> ")));
    }
    if cx.stack.len() >= MAX_DEPTH {
        return fail(
            cx,
            format!("includes nest deeper than {MAX_DEPTH} levels at '{href}'"),
        );
    }
    let text = match cx.sources.get(&uri) {
        Some(Ok(text)) => text.clone(),
        other => {
            if let Some(fallback) = inc
                .elements()
                .find(|e| e.ns.as_deref() == Some(XINCLUDE_NS) && e.name == "fallback")
            {
                let mut f = fallback.clone();
                expand_children(&mut f, place, cx, depth - 1);
                return Some(f.elements().cloned().collect());
            }
            let why = match other {
                Some(Err(e)) => e.clone(),
                _ => "it was not fetched".to_string(),
            };
            return fail(cx, format!("<xi:include href=\"{href}\">: {why}"));
        }
    };
    let resolveid = inc
        .attr("resolveid")
        .map(str::trim)
        .filter(|p| !p.is_empty());
    if let Some(p) = resolveid
        && !valid_prefix(p)
    {
        return fail(
            cx,
            format!("resolveid '{p}' is not a state id prefix (letters, digits, '_', '-' and '.')"),
        );
    }
    let key = (uri.clone(), resolveid.map(str::to_string));
    let (substituted, tree) = match cx.parsed.get(&key) {
        Some((text, tree)) => (text.clone(), tree.clone()),
        None => {
            let substituted: Arc<str> = Arc::from(substitute_prefix(&text, resolveid).as_ref());
            if substituted.len() > cx.bytes {
                return fail(
                    cx,
                    format!(
                        "includes would parse more than {MAX_INCLUDED_BYTES} bytes; refusing '{href}'"
                    ),
                );
            }
            cx.bytes -= substituted.len();
            let tree = match xml::parse_tree(&substituted) {
                Ok(t) => Arc::new(t),
                Err(e) => {
                    cx.errors.push(Diagnostic {
                        file: uri.clone(),
                        pos: e.pos,
                        message: format!("{} (included from {at})", e.message),
                    });
                    return None;
                }
            };
            cx.parsed.insert(key, (substituted.clone(), tree.clone()));
            (substituted, tree)
        }
    };
    let Some(found) = find_by_id(&tree, id) else {
        return fail(
            cx,
            format!("<xi:include href=\"{href}\">: no element with id '{id}' in it"),
        );
    };
    if !is_state_like(found) || found.name == "history" {
        return fail(
            cx,
            format!(
                "<xi:include href=\"{href}\" xpointer=\"{id}\"> names a <{}>; only a <state>, \
                 <parallel> or <final> may be included",
                found.name
            ),
        );
    }
    let size = count_elements(found);
    if size > cx.budget {
        return fail(
            cx,
            format!(
                "includes bring in more than {MAX_INCLUDED_ELEMENTS} elements; refusing '{href}'"
            ),
        );
    }
    cx.budget -= size;
    let limit = xml::depth_limit();
    if depth - 1 + xml::nesting(found).0 > limit {
        return fail(
            cx,
            format!(
                "with its includes, elements nest deeper than {limit} levels \
                 (documents.max_nesting) at '{href}'"
            ),
        );
    }
    let mut element = found.clone();
    if let Some(p) = resolveid {
        prefix_ids(&mut element, p);
    }
    let origin = Arc::new(Origin {
        file: uri.clone(),
        location: uri.clone(),
        text: substituted,
        included_at: at,
    });
    cx.stack.push((uri.clone(), id.to_string()));
    let inner = Place {
        file: &origin.file,
        location: Some(&origin.location),
        origin: Some(&origin),
    };
    expand_children(&mut element, &inner, cx, depth);
    cx.stack.pop();
    element.origin = Some(origin.clone());
    Some(vec![element])
}

/// The references of a document brought in by an include (`uri` is where
/// it was fetched), for the loader's next round of fetches. A document
/// that does not parse has none; its build reports why.
pub fn references_of(text: &str, uri: &str) -> Vec<super::Reference> {
    let mut out = Vec::new();
    if let Ok(tree) = xml::parse_tree(text) {
        super::collect_references(&tree, Some(uri), &mut out);
    }
    let mut seen = HashSet::new();
    out.retain(|r| seen.insert((r.kind, r.uri.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_macro_takes_the_prefix_or_disappears() {
        let text = "a=\"$$_MY_PREFIX_$$.x\" b=\"'$$_MY_PREFIX_$$'\"";
        assert_eq!(substitute_prefix(text, Some("W")), "a=\"W.x\" b=\"'W'\"");
        assert_eq!(substitute_prefix(text, None), "a=\"x\" b=\"''\"");
        assert_eq!(substitute_prefix(text, Some("")), "a=\"x\" b=\"''\"");
        assert!(matches!(
            substitute_prefix("plain", Some("W")),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn pointers_name_one_element() {
        assert_eq!(pointer_id("entry"), Some("entry"));
        assert_eq!(pointer_id(" element(entry) "), Some("entry"));
        assert_eq!(pointer_id("xpointer(id('entry'))"), Some("entry"));
        for refused in ["", "/1/2", "element(/1/2)", "xpointer(//state)", "a b"] {
            assert_eq!(pointer_id(refused), None, "{refused}");
        }
    }
}
