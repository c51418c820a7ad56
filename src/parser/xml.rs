//! Reads XML text into a small element tree with source positions, resolving
//! namespaces, entity and character references and CDATA. The SCXML builder
//! works on this tree; `<content>` keeps the raw XML of its children.

use quick_xml::Reader;
use quick_xml::events::Event;
use quick_xml::name::{NamespaceResolver, ResolveResult};

use std::sync::Arc;

use compact_str::CompactString;

use crate::model::Position;

/// An XML element with its resolved namespace and source position.
/// Cloning and dropping walk the subtree with a stack, never recursion.
#[derive(Debug)]
pub struct Element {
    /// Namespace URI (`None` when unqualified and no default namespace);
    /// one shared string per namespace of a document.
    pub ns: Option<Arc<str>>,
    /// Local name (held inline up to 24 bytes, as every SCXML and ORS
    /// element name is).
    pub name: CompactString,
    /// Attributes in document order (a boxed slice: sized exactly, and
    /// 8 bytes smaller than a vector in every element).
    pub attrs: Box<[Attr]>,
    /// Child nodes (a boxed slice, as `attrs`).
    pub children: Box<[Node]>,
    /// Position of the `<`.
    pub pos: Position,
    /// Byte range of the whole element in the source (a document is
    /// under 4 GiB: [`parse_tree`] refuses a longer text).
    pub outer: (u32, u32),
    /// Byte range between the start and end tags (empty for `<a/>`).
    pub inner: (u32, u32),
    /// For an element an `<xi:include>` brought in: the document it came
    /// from, whose text `outer` and `inner` index (`None`: the document
    /// being read).
    pub origin: Option<std::sync::Arc<super::include::Origin>>,
}

impl Clone for Element {
    fn clone(&self) -> Element {
        /// An element being copied: its source, the child nodes still to
        /// copy and the copies made so far.
        struct Frame<'e> {
            src: &'e Element,
            rest: std::slice::Iter<'e, Node>,
            copied: Vec<Node>,
        }
        fn open(src: &Element) -> Frame<'_> {
            Frame {
                src,
                rest: src.children.iter(),
                copied: Vec::with_capacity(src.children.len()),
            }
        }
        let mut stack = vec![open(self)];
        loop {
            let top = stack.last_mut().expect("the element being copied");
            match top.rest.next() {
                Some(Node::Text(t)) => top.copied.push(Node::Text(t.clone())),
                Some(Node::Element(e)) => stack.push(open(e)),
                None => {
                    let done = stack.pop().expect("the element being copied");
                    let e = done.src;
                    let copy = Element {
                        ns: e.ns.clone(),
                        name: e.name.clone(),
                        attrs: e.attrs.clone(),
                        children: done.copied.into_boxed_slice(),
                        pos: e.pos,
                        outer: e.outer,
                        inner: e.inner,
                        origin: e.origin.clone(),
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.copied.push(Node::Element(copy)),
                        None => return copy,
                    }
                }
            }
        }
    }
}

impl Drop for Element {
    /// Drops the subtree with a stack instead of the compiler's recursive
    /// drop glue, so freeing a deep tree never deepens Rust's stack. The
    /// stack holds whole child lists, so nodes are dropped where they lie
    /// rather than moved one by one.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending: Vec<Box<[Node]>> = vec![std::mem::take(&mut self.children)];
        while let Some(mut nodes) = pending.pop() {
            for node in nodes.iter_mut() {
                if let Node::Element(e) = node
                    && !e.children.is_empty()
                {
                    pending.push(std::mem::take(&mut e.children));
                }
            }
            // Every element in `nodes` is now childless: dropping the list
            // runs this `drop` once per element with nothing to walk.
        }
    }
}

/// An attribute with its resolved namespace.
#[derive(Debug, Clone)]
pub struct Attr {
    /// Namespace URI for prefixed attributes.
    pub ns: Option<Arc<str>>,
    /// Local name (inline up to 24 bytes).
    pub name: CompactString,
    /// Normalised, unescaped value (inline up to 24 bytes: most ids,
    /// targets, events and short expressions need no allocation).
    pub value: CompactString,
}

/// A child node.
#[derive(Debug, Clone)]
pub enum Node {
    /// An element.
    Element(Element),
    /// Character data (text, references and CDATA merged); the
    /// whitespace between elements is held inline.
    Text(CompactString),
}

impl Element {
    /// The value of an unqualified attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_none() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// [`Element::outer`] as a range to slice the source with.
    pub fn outer_range(&self) -> std::ops::Range<usize> {
        self.outer.0 as usize..self.outer.1 as usize
    }

    /// [`Element::inner`] as a range to slice the source with.
    pub fn inner_range(&self) -> std::ops::Range<usize> {
        self.inner.0 as usize..self.inner.1 as usize
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// All character data directly inside this element, concatenated.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Whether the element has element children.
    pub fn has_element_children(&self) -> bool {
        self.elements().next().is_some()
    }
}

/// A well-formedness error with its position.
#[derive(Debug, Clone)]
pub struct XmlError {
    /// Where it was found.
    pub pos: Position,
    /// What is wrong.
    pub message: String,
}

/// Maps byte offsets to line and column. Columns count characters, so
/// reaching one means counting from somewhere on its line: the index
/// remembers the last offset it answered and counts on from there when
/// the next one is further along the same line, as a parse asks them.
/// A document written on one line is then read in linear time, where
/// counting from the line's start each time made it quadratic (issue 19:
/// 20 000 states on one line took a second to validate).
pub struct LineIndex {
    starts: Vec<usize>,
    /// Whether the text is all ASCII: then a column is its byte offset
    /// from the line's start, with nothing to count.
    ascii: bool,
    /// The last answer: byte offset, 0-based line, 0-based column.
    last: std::cell::Cell<(usize, usize, usize)>,
}

impl LineIndex {
    /// Indexes the line starts of `text`.
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(memchr_newlines(text.as_bytes()));
        LineIndex {
            starts,
            ascii: text.is_ascii(),
            last: std::cell::Cell::new((0, 0, 0)),
        }
    }

    /// The 1-based line and column of a byte offset.
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let offset = offset.min(text.len());
        let (last_offset, last_line, last_column) = self.last.get();
        let line_end = self
            .starts
            .get(last_line + 1)
            .copied()
            .unwrap_or(usize::MAX);
        let (line, from, counted) = if offset >= last_offset && offset < line_end {
            (last_line, last_offset, last_column)
        } else {
            let line = self.starts.partition_point(|&s| s <= offset) - 1;
            (line, self.starts[line], 0)
        };
        let column = if self.ascii {
            counted + (offset - from)
        } else {
            counted
                + text
                    .get(from..offset)
                    .map(|s| s.chars().count())
                    .unwrap_or(offset - from)
        };
        self.last.set((offset, line, column));
        Position {
            line: line as u32 + 1,
            column: column as u32 + 1,
        }
    }
}

/// The offsets just after each `\n`.
fn memchr_newlines(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr_iter(b'\n', bytes).map(|i| i + 1)
}

fn predefined_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "quot" => "\"",
        "apos" => "'",
        _ => return None,
    })
}

/// How deep elements may nest in a document by default. The walks over
/// the tree and the model keep explicit stacks, but boa's parser and the
/// compiled executable content still nest with the document, so the
/// depth is bounded here, where the text is read, and again as includes
/// are inlined: thousands of nested `<state>`s once overflowed a thread's
/// stack and aborted the process.
pub const MAX_DEPTH: usize = 200;

/// The highest nesting limit a server may configure: a document nested
/// this deep still builds on a 2 MiB thread (`tests` below).
pub const MAX_DEPTH_CEILING: usize = 500;

static DEPTH_LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(MAX_DEPTH);

/// The nesting limit in force (elements; [`MAX_DEPTH`] unless a server
/// set another with [`set_depth_limit`]).
pub fn depth_limit() -> usize {
    #[cfg(test)]
    if let Some(levels) = UNBOUNDED_FOR_TEST.get() {
        return levels;
    }
    DEPTH_LIMIT.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
thread_local! {
    /// A nesting limit past the ceiling, for the tests that show the walks
    /// over a document use no recursion (one thread only).
    pub(crate) static UNBOUNDED_FOR_TEST: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
}

/// Sets the nesting limit for every document this process reads from now
/// on (`documents.max_nesting`), clamped to 2..=[`MAX_DEPTH_CEILING`].
pub fn set_depth_limit(levels: usize) {
    DEPTH_LIMIT.store(
        levels.clamp(2, MAX_DEPTH_CEILING),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// How deep `root`'s elements nest (1: no child elements), and the
/// position of the first element at that depth; counted without
/// recursion.
pub fn nesting(root: &Element) -> (usize, Position) {
    let mut deepest = (1, root.pos);
    let mut stack: Vec<(&Element, usize)> = vec![(root, 1)];
    while let Some((el, depth)) = stack.pop() {
        if depth > deepest.0 {
            deepest = (depth, el.pos);
        }
        stack.extend(el.elements().map(|c| (c, depth + 1)));
    }
    deepest
}

/// Parses a whole document into its root element. `text` must already have
/// had any byte-order mark removed. Elements nested deeper than
/// [`depth_limit`] are an error at the first one too deep.
pub fn parse_tree(text: &str) -> Result<Element, XmlError> {
    if u32::try_from(text.len()).is_err() {
        return Err(XmlError {
            pos: Position { line: 1, column: 1 },
            message: "a document must be under 4 GiB".into(),
        });
    }
    let lines = LineIndex::new(text);
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    // Namespaces are resolved here rather than by quick-xml's `NsReader`,
    // which reads every start tag's attributes once more looking for
    // declarations: a tag is handed to the resolver only when it has
    // `xmlns` in it (a third of the reader's time on a large document).
    let mut resolver = NamespaceResolver::default();
    // Elements and text gather in `pending` in document order; the open
    // elements are indexes into it (with whether each declared
    // namespaces). When an element closes, the nodes after it are its
    // children and move into its own list, sized exactly: each element
    // moves once and no vector grows per element.
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let mut pending: Vec<Node> = Vec::new();
    let mut attr_buf: Vec<Attr> = Vec::new();
    let mut has_root = false;
    let mut namespaces: Vec<Arc<str>> = Vec::new();
    let err = |offset: usize, message: String| XmlError {
        pos: lines.position(text, offset),
        message,
    };
    loop {
        let before = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                let at = reader.error_position() as usize;
                return Err(err(at, format!("malformed XML: {e}")));
            }
        };
        let after = reader.buffer_position() as usize;
        // quick-xml's positions need not fall on a character boundary
        // (it skips a byte-order mark the caller left in: fuzzing found
        // one slice that panicked here), so the slice is checked.
        let tag_start = text
            .get(before..after.min(text.len()))
            .and_then(|s| s.find('<'))
            .map(|i| before + i)
            .unwrap_or(before);
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                let declares =
                    memchr::memmem::find(start.attributes_raw().as_bytes(), b"xmlns").is_some();
                if declares {
                    resolver.push(start).map_err(|e| {
                        err(
                            tag_start,
                            format!("malformed XML: {}", quick_xml::Error::from(e)),
                        )
                    })?;
                }
                let (ns, local) = resolver.resolve_element(start.name());
                let name = CompactString::from(local.as_ref());
                let ns = match resolved(ns, &mut namespaces) {
                    Ok(ns) => ns,
                    Err(prefix) => {
                        return Err(err(
                            tag_start,
                            format!("unknown namespace prefix '{prefix}' on <{name}>"),
                        ));
                    }
                };
                attr_buf.clear();
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| err(tag_start, format!("bad attribute: {e}")))?;
                    let key = attr.key;
                    if key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (ans, local) = resolver.resolve_attribute(key);
                    let ans = match resolved(ans, &mut namespaces) {
                        Ok(a) => a,
                        Err(prefix) => {
                            return Err(err(
                                tag_start,
                                format!("unknown namespace prefix '{prefix}' on an attribute"),
                            ));
                        }
                    };
                    let value = attr
                        .normalized_value_with(quick_xml::XmlVersion::Implicit1_0, 1, |e| {
                            predefined_entity(e)
                        })
                        .map_err(|e| err(tag_start, format!("bad attribute value: {e}")))?;
                    attr_buf.push(Attr {
                        ns: ans,
                        name: CompactString::from(local.as_ref()),
                        value: CompactString::from(value),
                    });
                }
                // Sized exactly; the buffer keeps its room for the next tag.
                let attrs: Box<[Attr]> = attr_buf.drain(..).collect();
                // `text` is under 4 GiB (checked above).
                let (tag_start32, after32) = (tag_start as u32, after as u32);
                let element = Element {
                    ns,
                    name,
                    attrs,
                    children: Box::default(),
                    pos: lines.position(text, tag_start),
                    outer: (tag_start32, after32),
                    inner: (after32, after32),
                    origin: None,
                };
                let limit = depth_limit();
                if stack.len() >= limit {
                    return Err(err(
                        tag_start,
                        format!("elements nest deeper than {limit} levels (documents.max_nesting)"),
                    ));
                }
                if stack.is_empty() {
                    if has_root {
                        return Err(err(tag_start, "more than one root element".into()));
                    }
                    has_root = true;
                }
                if is_empty {
                    if declares {
                        resolver.pop();
                    }
                } else {
                    stack.push((pending.len(), declares));
                }
                pending.push(Node::Element(element));
            }
            Event::End(_) => {
                let (at, declared) = stack
                    .pop()
                    .ok_or_else(|| err(tag_start, "unexpected end tag".into()))?;
                if declared {
                    resolver.pop();
                }
                let children: Box<[Node]> = pending.drain(at + 1..).collect();
                if let Some(Node::Element(element)) = pending.get_mut(at) {
                    element.inner.1 = tag_start as u32;
                    element.outer.1 = after as u32;
                    element.children = children;
                }
            }
            Event::Text(t) => push_text(&stack, &mut pending, &t.xml10_content()),
            Event::CData(c) => {
                let raw = c.into_inner();
                push_text(&stack, &mut pending, &raw);
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => {
                            return Err(err(
                                tag_start,
                                format!("bad character reference &{};", &*r),
                            ));
                        }
                    }
                } else if let Some(s) = predefined_entity(&r) {
                    s.to_string()
                } else {
                    return Err(err(tag_start, format!("unknown entity &{};", &*r)));
                };
                push_text(&stack, &mut pending, &resolved);
            }
            Event::Eof => break,
            // Entity declarations can expand without bound or read local
            // files; SCXML needs none, so a DTD is refused outright.
            Event::DocType(_) => {
                return Err(err(
                    tag_start,
                    "DTDs (<!DOCTYPE ...>) are not accepted: entity declarations are not allowed"
                        .to_string(),
                ));
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if let Some(&(at, _)) = stack.last()
        && let Some(Node::Element(open)) = pending.get(at)
    {
        return Err(XmlError {
            pos: open.pos,
            message: format!("<{}> is never closed", open.name),
        });
    }
    // What is left is the root (text outside it is never kept).
    let root = match pending.pop() {
        Some(Node::Element(root)) => Some(root),
        _ => None,
    };
    root.ok_or_else(|| XmlError {
        pos: Position { line: 1, column: 1 },
        message: "no root element".into(),
    })
}

/// A resolved namespace as a shared string: a document uses a handful, so
/// each element refers to one of those instead of a copy of its own.
fn resolved(ns: ResolveResult<'_>, seen: &mut Vec<Arc<str>>) -> Result<Option<Arc<str>>, String> {
    match ns {
        ResolveResult::Bound(ns) => {
            let uri: &str = ns.as_ref();
            if let Some(known) = seen.iter().find(|k| ***k == *uri) {
                return Ok(Some(known.clone()));
            }
            let new: Arc<str> = Arc::from(uri);
            seen.push(new.clone());
            Ok(Some(new))
        }
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(prefix) => Err(prefix),
    }
}

/// Adds character data to the open element's children (the nodes after
/// it in `pending`), merged with text just before it.
fn push_text(stack: &[(usize, bool)], pending: &mut Vec<Node>, text: &str) {
    if let Some(&(at, _)) = stack.last() {
        let has_children = pending.len() > at + 1;
        match pending.last_mut() {
            Some(Node::Text(t)) if has_children => t.push_str(text),
            _ => pending.push(Node::Text(CompactString::from(text))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remembered position is only a head start: answers in any order,
    /// across lines and after multi-byte characters, equal counting from
    /// the line's start.
    #[test]
    fn line_index_answers_as_counting_from_the_line_start() {
        // Multi-byte characters, and an all-ASCII text (columns taken from
        // byte offsets without counting).
        for text in [
            "<a>é<b/>ü<c/>\n<d>€€<e/></d>\n\n<f/>",
            "<a>e<b/>u<c/>\n<d>EE<e/></d>\n\n<f/>",
        ] {
            let index = LineIndex::new(text);
            let naive = |offset: usize| {
                let before = &text[..offset];
                let line = before.matches('\n').count() + 1;
                let start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
                (line as u32, text[start..offset].chars().count() as u32 + 1)
            };
            let offsets: Vec<usize> = text.match_indices('<').map(|(i, _)| i).collect();
            let mut order = offsets.clone();
            order.extend(offsets.iter().rev());
            order.extend([offsets[3], offsets[1], offsets[4], offsets[0]]);
            for offset in order {
                let p = index.position(text, offset);
                assert_eq!(
                    (p.line, p.column),
                    naive(offset),
                    "offset {offset} in {text}"
                );
            }
        }
    }

    #[test]
    fn resolves_prefixes_refs_and_cdata() {
        let doc = "<ns0:scxml xmlns:ns0='urn:x'>\n  <ns0:a v='1&lt;2'>x&amp;y<![CDATA[<z>]]>&#65;</ns0:a></ns0:scxml>";
        let root = parse_tree(doc).unwrap();
        assert_eq!(root.ns.as_deref(), Some("urn:x"));
        let a = root.elements().next().unwrap();
        assert_eq!(a.name, "a");
        assert_eq!(a.attr("v"), Some("1<2"));
        assert_eq!(a.text(), "x&y<z>A");
        assert_eq!(a.pos, Position { line: 2, column: 3 });
    }

    /// Namespaces are resolved by this reader, not quick-xml's: a
    /// declaration holds for its element (its own name and attributes
    /// included) and what is inside it, and ends with it, also on an
    /// empty element; text that merely says `xmlns` declares nothing.
    #[test]
    fn namespace_declarations_are_scoped_to_their_element() {
        let doc = "<r xmlns='urn:d' note=\"xmlns:p='urn:no'\">\
                   <p:a xmlns:p='urn:p' p:k='1' k='2'><p:b/></p:a>\
                   <q:e xmlns:q='urn:q'/>\
                   <c xmlns=''><d/></c><f/></r>";
        let root = parse_tree(doc).unwrap();
        assert_eq!(root.ns.as_deref(), Some("urn:d"));
        assert_eq!(root.attr("note"), Some("xmlns:p='urn:no'"));
        let kids: Vec<&Element> = root.elements().collect();
        let a = kids[0];
        assert_eq!((a.ns.as_deref(), a.name.as_str()), (Some("urn:p"), "a"));
        let k: Vec<(Option<&str>, &str)> = a
            .attrs
            .iter()
            .map(|x| (x.ns.as_deref(), x.value.as_str()))
            .collect();
        assert_eq!(k, [(Some("urn:p"), "1"), (None, "2")]);
        assert_eq!(a.elements().next().unwrap().ns.as_deref(), Some("urn:p"));
        assert_eq!(kids[1].ns.as_deref(), Some("urn:q"));
        assert_eq!(kids[2].ns, None);
        assert_eq!(kids[2].elements().next().unwrap().ns, None);
        assert_eq!(kids[3].ns.as_deref(), Some("urn:d"));

        // Out of scope after the element that declared it closed.
        for (doc, line) in [
            ("<r><a xmlns:p='urn:p'/>\n<p:b/></r>", 2),
            ("<r><a xmlns:p='urn:p'></a>\n<b p:k='1'/></r>", 2),
            ("<r note='xmlns:p=1'>\n<p:b/></r>", 2),
        ] {
            let e = parse_tree(doc).unwrap_err();
            assert!(
                e.message.contains("unknown namespace prefix 'p'"),
                "{doc}: {}",
                e.message
            );
            assert_eq!(e.pos.line, line, "{doc}");
        }
        // The reserved prefixes cannot be rebound.
        for doc in [
            "<r xmlns:xml='urn:x'/>",
            "<r xmlns:xmlns='urn:x'/>",
            "<r><a xmlns:p='http://www.w3.org/2000/xmlns/'/></r>",
        ] {
            let e = parse_tree(doc).unwrap_err();
            assert!(
                e.message.starts_with("malformed XML"),
                "{doc}: {}",
                e.message
            );
        }
    }

    #[test]
    fn reports_position_of_mismatched_end() {
        let e = parse_tree("<a>\n<b></c></a>").unwrap_err();
        assert_eq!(e.pos.line, 2);
    }
}
