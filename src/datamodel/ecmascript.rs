//! The ECMAScript data model on boa. Every expression and script of the
//! document is compiled at most once per session context and the compiled
//! `Script` is reused; runtime limits turn runaway scripts into errors.
//!
//! Data variables live as properties of the global object (one global
//! scope, as the Recommendation requires); system variables are read-only
//! properties, so assigning to them fails.

mod codec;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use std::sync::Arc;

use boa_engine::object::builtins::JsArray;
use boa_engine::property::{PropertyDescriptor, PropertyKey};
use boa_engine::{
    Context, JsError, JsObject, JsResult, JsString, JsValue, NativeFunction, Script, Source,
    js_string,
};
use serde_json::Value;

use super::{
    DataModel, DataModelError, DmResult, InitialValue, IoProcessors, ScriptLimits, SystemVariables,
};
use crate::model::Event;
use crate::model::{Document, ExprId, ExprKind, StateId, StateSet};

/// The event being processed; `_event` is an accessor that builds its
/// object only when a script reads it (most transitions never do).
struct CurrentEvent {
    event: RefCell<Option<Event>>,
    object: RefCell<Option<JsValue>>,
}

/// The installed session's `_ioprocessors`: an accessor builds the object
/// from `json` when a script first reads it (few ever do), and keeps it
/// in `object` until the context switches to another session, which takes
/// it along. Sessions that never read it hold no object for it: with one
/// made per session up front, a live session cost ~1.8 KiB more, and the
/// collector traced five more objects per session.
struct CurrentIo {
    json: RefCell<Option<IoProcessors>>,
    object: RefCell<Option<JsValue>>,
}

/// The DOM builder function, compiled on first use of XML.
struct DomBuilder(RefCell<Option<JsObject>>);

/// The name scripts call to get a shared constant: `__orsShared(name,
/// make)` (see [`SharedConstants`]).
pub const SHARED_CONSTANT_FUNCTION: &str = "__orsShared";

/// Objects made once per context and shared by every session that runs
/// in it: the prelude's constant tables (`_genesys.queue.rType`, …), got
/// with `__orsShared(name, make)`, which calls `make()` the first time
/// only. Each is frozen, with every object it holds, when it is made, so
/// no session can change what its siblings see; a snapshot names it
/// (`{"$shared": name}`, nested objects `name/key/…`) instead of writing
/// it out, and a restore finds it by that name once the prelude has run.
/// Only the prelude makes them; a script may get one that exists.
#[derive(Default)]
pub(crate) struct SharedConstants {
    /// Whether the prelude is running: only it may make a constant (a
    /// document's script making one could pass data between sessions).
    open: std::cell::Cell<bool>,
    by_name: RefCell<HashMap<String, JsObject>>,
    names: RefCell<FxHashMap<JsObject, Rc<str>>>,
}

/// Most objects one shared constant may hold (the prelude's are tables of
/// a few dozen members).
const SHARED_CONSTANT_OBJECTS: usize = 10_000;

impl SharedConstants {
    /// The snapshot name of `object`, when it is (inside) a shared constant.
    pub(crate) fn name_of(&self, object: &JsObject) -> Option<Rc<str>> {
        self.names.borrow().get(object).cloned()
    }

    /// The shared object a snapshot names.
    pub(crate) fn by_name(&self, name: &str) -> Option<JsObject> {
        self.by_name.borrow().get(name).cloned()
    }

    /// Names `root` and every object it reaches through its own string-keyed
    /// members (functions and their `prototype`s included, though only
    /// plain objects and arrays get names), and freezes them all.
    fn adopt(&self, name: &str, root: &JsObject, ctx: &mut Context) -> JsResult<()> {
        let mut stack = vec![(root.clone(), Rc::<str>::from(name))];
        let mut seen = 0usize;
        while let Some((object, path)) = stack.pop() {
            seen += 1;
            if seen > SHARED_CONSTANT_OBJECTS {
                return Err(boa_engine::JsNativeError::range()
                    .with_message(format!("shared constant '{name}' holds too many objects"))
                    .into());
            }
            if !object.is_callable() {
                self.names.borrow_mut().insert(object.clone(), path.clone());
                self.by_name
                    .borrow_mut()
                    .insert(path.to_string(), object.clone());
            }
            for key in object.own_property_keys(ctx)? {
                let PropertyKey::String(k) = &key else {
                    continue;
                };
                let value = object.get(key.clone(), ctx)?;
                if let Some(inner) = value.as_object()
                    && !inner
                        .test_integrity_level(boa_engine::object::IntegrityLevel::Frozen, ctx)?
                {
                    let path = Rc::from(format!("{path}/{}", k.to_std_string_escaped()));
                    stack.push((inner.clone(), path));
                }
            }
            object.set_integrity_level(boa_engine::object::IntegrityLevel::Frozen, ctx)?;
        }
        Ok(())
    }
}

/// What the server's prelude gives a session besides data: for each
/// global it makes, a skeleton of plain objects holding only its functions
/// (all shared constants, the same for every session of the context).
/// A restored session gets them grafted onto its restored values instead
/// of running the prelude again (whose data the snapshot overwrites).
/// The skeletons are never reachable from scripts.
struct PreludeFunctions {
    source: Box<str>,
    globals: Vec<(JsString, JsObject)>,
}

/// A skeleton of `object`'s functions: plain objects down to where the
/// functions are (a few levels deep), `None` when it holds none.
fn function_skeleton(
    object: &JsObject,
    depth: usize,
    ctx: &mut Context,
) -> JsResult<Option<JsObject>> {
    if depth > 8 || object.is_callable() {
        return Ok(None);
    }
    let skeleton = JsObject::with_object_proto(ctx.intrinsics());
    let mut any = false;
    for key in object.own_property_keys(ctx)? {
        let value = object.get(key.clone(), ctx)?;
        let Some(inner) = value.as_object() else {
            continue;
        };
        let part = if inner.is_callable() {
            Some(inner.clone())
        } else {
            function_skeleton(&inner, depth + 1, ctx)?
        };
        if let Some(part) = part {
            skeleton.create_data_property_or_throw(key, part, ctx)?;
            any = true;
        }
    }
    Ok(any.then_some(skeleton))
}

/// `__orsShared(name, make)`: the context's shared constant `name`, made
/// by `make()` on the first call (see [`SharedConstants`]).
fn shared_constant(_this: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let name = args
        .first()
        .cloned()
        .unwrap_or_default()
        .to_string(ctx)?
        .to_std_string_escaped();
    let Some(table) = ctx.get_data::<Rc<SharedConstants>>().cloned() else {
        return Ok(JsValue::undefined());
    };
    if let Some(object) = table.by_name(&name) {
        return Ok(object.into());
    }
    if !table.open.get() {
        return Err(boa_engine::JsNativeError::typ()
            .with_message(format!(
                "{SHARED_CONSTANT_FUNCTION}: '{name}' is not a platform constant (only the server's prelude makes them)"
            ))
            .into());
    }
    let make = args.get(1).and_then(JsValue::as_callable).ok_or_else(|| {
        boa_engine::JsNativeError::typ().with_message(format!(
            "{SHARED_CONSTANT_FUNCTION}: the second argument must be a function"
        ))
    })?;
    let value = make.call(&JsValue::undefined(), &[], ctx)?;
    let Some(root) = value.as_object() else {
        return Ok(value);
    };
    if !root.is_callable() {
        table.adopt(&name, &root, ctx)?;
        // What people see where a stored snapshot names it: encoded
        // without names (functions dropped), then made plain.
        let budget = codec::SnapshotBudget {
            depth: 100,
            bytes: 1024 * 1024,
        };
        let encoder = codec::Encoder::new(budget, Rc::default(), false);
        let vars = [(js_string!("v"), value.clone())];
        if let Ok(text) = encoder.encode_variables(&vars, ctx)
            && let Ok(wrapped) = serde_json::from_str::<Value>(&text)
        {
            let plain = super::plain_json(&wrapped)["v"].take();
            super::remember_shared_view(&name, plain);
        }
    }
    Ok(value)
}

/// Host data reachable from the native `In()` function.
struct ActiveStates {
    doc: Arc<Document>,
    /// The active set of the session whose variables are installed.
    active: RefCell<Rc<RefCell<StateSet>>>,
}

/// An ECMAScript data model bound to one boa `Context` (not `Send`: a
/// session keeps it on one thread for life).
pub struct EcmaScriptDataModel {
    doc: Arc<Document>,
    ctx: Context,
    compiled: Vec<Option<Script>>,
    setters: Vec<Option<JsObject>>,
    foreach_stack: Vec<Vec<JsValue>>,
    /// Names on the global object that belong to no session: the
    /// built-ins, the prelude's and the system variables.
    baseline_globals: rustc_hash::FxHashSet<JsString>,
    /// Whether the system variables' names are in `baseline_globals`.
    system_names_known: bool,
    stringify: Option<JsObject>,
    compilations: u64,
    text_scripts: FxHashMap<String, Script>,
    text_setters: FxHashMap<String, JsObject>,
    snapshot_budget: codec::SnapshotBudget,
    /// The context's shared constants (also in the context's data, for
    /// `__orsShared`).
    constants: Rc<SharedConstants>,
    /// The functions the server's prelude puts on the globals it makes,
    /// recorded the first time it runs in this context.
    prelude_functions: Option<PreludeFunctions>,
    /// The session whose variables are installed (when the context is shared).
    pub(super) owner: Option<std::rc::Weak<RefCell<super::shared::SessionScope>>>,
}

/// Deepest nesting of brackets, parentheses and braces a script may have
/// (boa's parser recurses on it; ten million `[` overflow any stack).
pub const MAX_SOURCE_NESTING: usize = 1000;

/// The largest `ArrayBuffer` a script may make, in bytes.
pub const MAX_BUFFER_BYTES: u64 = 64 * 1024 * 1024;

/// Whether `source` nests brackets, parentheses or braces deeper than
/// `max`, outside string literals and comments (template literals and
/// regular expressions are counted as code: that can only overcount).
pub fn nests_deeper_than(source: &str, max: usize) -> bool {
    let bytes = source.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

fn nesting_error(max: usize) -> boa_engine::JsNativeError {
    boa_engine::JsNativeError::syntax().with_message(format!(
        "the script nests brackets deeper than {max} levels"
    ))
}

/// Compiles a script after checking its nesting.
fn parse_checked(source: &str, ctx: &mut Context) -> DmResult<Script> {
    if nests_deeper_than(source, MAX_SOURCE_NESTING) {
        return Err(DataModelError::new(
            nesting_error(MAX_SOURCE_NESTING).to_string(),
        ));
    }
    Script::parse(Source::from_bytes(source.as_bytes()), None, ctx).map_err(|e| js_err(e, ctx))
}

/// The host hooks of every session context: `eval` and `new Function`
/// get the same nesting check as the document's scripts, and array
/// buffers are bounded.
struct ScriptHooks;

impl boa_engine::context::HostHooks for ScriptHooks {
    fn ensure_can_compile_strings(
        &self,
        _realm: boa_engine::realm::Realm,
        parameters: &[JsString],
        body: &JsString,
        _direct: bool,
        _context: &mut Context,
    ) -> JsResult<()> {
        let deep = |s: &JsString| nests_deeper_than(&s.to_std_string_escaped(), MAX_SOURCE_NESTING);
        if deep(body) || parameters.iter().any(deep) {
            return Err(nesting_error(MAX_SOURCE_NESTING).into());
        }
        Ok(())
    }

    fn max_buffer_size(&self, _context: &mut Context) -> u64 {
        MAX_BUFFER_BYTES
    }
}

/// The DOM implementation exposed for XML values.
const DOM_PRELUDE: &str = include_str!("js/dom.js");

/// The nodes under `root` for the DOM prelude, flat in document order
/// (a parent before its children): `{"t":"e","n","ns","a":[[name,value]],"p"}`
/// for an element, `{"t":"x","v","p"}` for text, `p` the index of the
/// parent element in the list (-1: the document). Flat, so neither side
/// recurses on the fragment's depth.
fn xml_nodes(root: &crate::parser::xml::Element) -> Value {
    use crate::parser::xml::Node;
    let mut out = Vec::new();
    let mut stack: Vec<(&Node, i64)> = root.children.iter().rev().map(|n| (n, -1)).collect();
    while let Some((node, parent)) = stack.pop() {
        let index = out.len() as i64;
        match node {
            Node::Text(t) => out.push(serde_json::json!({ "t": "x", "v": t, "p": parent })),
            Node::Element(e) => {
                out.push(serde_json::json!({
                    "t": "e",
                    "n": e.name,
                    "ns": e.ns,
                    "a": e.attrs.iter().map(|a| [a.name.as_str(), a.value.as_str()]).collect::<Vec<_>>(),
                    "p": parent,
                }));
                stack.extend(e.children.iter().rev().map(|c| (c, index)));
            }
        }
    }
    Value::Array(out)
}

fn js_err(e: JsError, ctx: &mut Context) -> DataModelError {
    let msg = match e.try_native(ctx) {
        Ok(native) => native.to_string(),
        Err(_) => e.to_string(),
    };
    // Keep the first line: boa appends a JavaScript backtrace.
    let first = msg.lines().next().unwrap_or_default().trim_end();
    DataModelError::new(first)
}

fn in_predicate(_this: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
    let name = match args.first() {
        Some(v) => v.to_string(ctx)?.to_std_string_escaped(),
        None => return Ok(JsValue::from(false)),
    };
    let Some(states) = ctx.get_data::<ActiveStates>() else {
        return Ok(JsValue::from(false));
    };
    let active = states
        .doc
        .state_by_name(&name)
        .is_some_and(|s| states.active.borrow().borrow().contains(s));
    Ok(JsValue::from(active))
}

/// A global whose object an accessor builds from a source on first read
/// and keeps until the source changes (`_event`, `_ioprocessors`).
trait LazyGlobal: Sized + 'static {
    type Source: Clone;
    /// The source and the object made from it so far.
    fn cells(&self) -> (&RefCell<Option<Self::Source>>, &RefCell<Option<JsValue>>);
    /// Makes the object from the source.
    fn build(source: &Self::Source, ctx: &mut Context) -> JsResult<JsValue>;
}

impl LazyGlobal for CurrentEvent {
    type Source = Event;
    fn cells(&self) -> (&RefCell<Option<Event>>, &RefCell<Option<JsValue>>) {
        (&self.event, &self.object)
    }
    fn build(event: &Event, ctx: &mut Context) -> JsResult<JsValue> {
        build_event_object(event, ctx)
    }
}

impl LazyGlobal for CurrentIo {
    type Source = IoProcessors;
    fn cells(&self) -> (&RefCell<Option<IoProcessors>>, &RefCell<Option<JsValue>>) {
        (&self.json, &self.object)
    }
    fn build(io: &IoProcessors, ctx: &mut Context) -> JsResult<JsValue> {
        JsValue::from_json(&io.to_json(), ctx)
    }
}

/// The getter of a [`LazyGlobal`]: the kept object, or one built now and
/// kept (`undefined` without a source).
fn lazy_getter<T: LazyGlobal>(
    _this: &JsValue,
    _args: &[JsValue],
    ctx: &mut Context,
) -> JsResult<JsValue> {
    let source = {
        let Some(current) = ctx.get_data::<T>() else {
            return Ok(JsValue::undefined());
        };
        let (source, object) = current.cells();
        if let Some(v) = object.borrow().as_ref() {
            return Ok(v.clone());
        }
        source.borrow().clone()
    };
    let Some(source) = source else {
        return Ok(JsValue::undefined());
    };
    let obj = T::build(&source, ctx)?;
    if let Some(current) = ctx.get_data::<T>() {
        *current.cells().1.borrow_mut() = Some(obj.clone());
    }
    Ok(obj)
}

fn build_event_object(event: &Event, ctx: &mut Context) -> JsResult<JsValue> {
    let obj = JsObject::with_object_proto(ctx.intrinsics());
    let str_or_undef = |s: &Option<Arc<str>>| match s {
        Some(s) => JsValue::from(JsString::from(&**s)),
        None => JsValue::undefined(),
    };
    let data = match &event.data {
        None => JsValue::undefined(),
        Some(v) => data_to_js(v, ctx)?,
    };
    let fields: [(JsString, JsValue); 8] = [
        (
            js_string!("name"),
            JsValue::from(JsString::from(&*event.name)),
        ),
        (
            js_string!("type"),
            JsValue::from(JsString::from(event.kind.as_str())),
        ),
        (js_string!("sendid"), str_or_undef(&event.sendid)),
        (js_string!("origin"), str_or_undef(&event.origin)),
        (js_string!("origintype"), str_or_undef(&event.origintype)),
        (js_string!("invokeid"), str_or_undef(&event.invokeid)),
        (js_string!("data"), data),
        (js_string!("raw"), str_or_undef(&event.raw)),
    ];
    // A new ordinary object with distinct keys: CreateDataProperty cannot
    // fail, so each member is put straight into its property map.
    for (k, v) in fields {
        obj.insert_property(
            k,
            PropertyDescriptor::builder()
                .value(v)
                .writable(true)
                .enumerable(true)
                .configurable(true),
        );
    }
    Ok(obj.into())
}

/// JSON to a value, turning `{"$xml": text}` anywhere into a DOM.
fn data_to_js(v: &Value, ctx: &mut Context) -> JsResult<JsValue> {
    if !contains_xml_tag(v) {
        return JsValue::from_json(v, ctx);
    }
    match v {
        Value::Object(m) if m.len() == 1 && m.get("$xml").is_some_and(Value::is_string) => {
            xml_to_js(m["$xml"].as_str().unwrap_or_default(), ctx)
        }
        Value::Object(m) => {
            let obj = JsObject::with_object_proto(ctx.intrinsics());
            for (k, item) in m {
                let item = data_to_js(item, ctx)?;
                obj.create_data_property_or_throw(JsString::from(k.as_str()), item, ctx)?;
            }
            Ok(obj.into())
        }
        Value::Array(items) => {
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                values.push(data_to_js(item, ctx)?);
            }
            Ok(JsArray::from_iter(values, ctx).into())
        }
        other => JsValue::from_json(other, ctx),
    }
}

/// Parses XML text into a DOM `Document` (a string when it is not XML).
fn xml_to_js(text: &str, ctx: &mut Context) -> JsResult<JsValue> {
    let wrapped = format!("<ors-fragment>{text}</ors-fragment>");
    let tree = match crate::parser::xml::parse_tree(&wrapped) {
        Ok(root) => xml_nodes(&root),
        Err(_) => return Ok(JsValue::from(JsString::from(text))),
    };
    let cached = ctx
        .get_data::<DomBuilder>()
        .and_then(|b| b.0.borrow().clone());
    let builder = match cached {
        Some(b) => b,
        None => {
            let f = ctx.eval(Source::from_bytes(DOM_PRELUDE.as_bytes()))?;
            let f = f.as_object().filter(|o| o.is_callable()).ok_or_else(|| {
                JsError::from_native(
                    boa_engine::JsNativeError::typ()
                        .with_message("DOM prelude did not yield a function"),
                )
            })?;
            if let Some(b) = ctx.get_data::<DomBuilder>() {
                *b.0.borrow_mut() = Some(f.clone());
            }
            f
        }
    };
    let arg = JsValue::from_json(&tree, ctx)?;
    builder.call(&JsValue::undefined(), &[arg], ctx)
}

const RESERVED: &[&str] = &[
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "function",
    "if",
    "import",
    "in",
    "instanceof",
    "new",
    "null",
    "return",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
    "let",
    "static",
    "implements",
    "interface",
    "package",
    "private",
    "protected",
    "public",
    "await",
];

/// Whether `name` can be used as an ECMAScript variable name.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_' || first == '$')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        && !RESERVED.contains(&name)
}

/// What ORS's SpiderMonkey engine offered that strategies still use, for
/// documents in the ORS dialect: `toSource()` on every value (Composer's
/// error handlers log `_event.toSource()`), written as SpiderMonkey writes
/// it (`({name:"x", data:{a:1}})`, `[1, 2]`, `(new String("s"))`).
/// Non-enumerable, so no data, snapshot or JSON ever shows it.
const SPIDERMONKEY_EXTENSIONS: &str = r#"
Object.defineProperty(Object.prototype, 'toSource', {
  value: function toSource() {
    var seen = [];
    function src(v) {
      if (v === null) return 'null';
      switch (typeof v) {
        case 'undefined': return '(void 0)';
        case 'string': return JSON.stringify(v);
        case 'number': case 'boolean': return String(v);
        case 'function': return String(v);
      }
      if (seen.indexOf(v) >= 0) return '{}';
      seen.push(v);
      var out;
      if (Array.isArray(v)) {
        out = '[' + v.map(src).join(', ') + ']';
      } else {
        out = '{' + Object.keys(v).map(function (k) {
          var key = /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(k) ? k : JSON.stringify(k);
          return key + ':' + src(v[k]);
        }).join(', ') + '}';
      }
      seen.pop();
      return out;
    }
    var self = this;
    if (self instanceof String) return '(new String(' + JSON.stringify(String(self)) + '))';
    if (self instanceof Number) return '(new Number(' + Number(self) + '))';
    if (self instanceof Boolean) return '(new Boolean(' + (self == true) + '))';
    if (Array.isArray(self) || typeof self === 'function') return src(self);
    return '(' + src(self) + ')';
  },
  writable: true, configurable: true, enumerable: false
});
"#;

impl EcmaScriptDataModel {
    /// A fresh context for `doc` with the given limits.
    pub fn new(doc: Arc<Document>, limits: &ScriptLimits) -> Self {
        let mut ctx = Context::builder()
            .host_hooks(Rc::new(ScriptHooks))
            .build()
            .expect("a context with the default realm builds");
        ctx.runtime_limits_mut()
            .set_loop_iteration_limit(limits.loop_iterations);
        ctx.runtime_limits_mut()
            .set_recursion_limit(limits.recursion);
        ctx.runtime_limits_mut()
            .set_stack_size_limit(limits.stack_size);
        ctx.insert_data(ActiveStates {
            doc: doc.clone(),
            active: RefCell::new(Rc::new(RefCell::new(StateSet::with_capacity(
                doc.states.len(),
            )))),
        });
        ctx.insert_data(CurrentEvent {
            event: RefCell::new(None),
            object: RefCell::new(None),
        });
        ctx.insert_data(DomBuilder(RefCell::new(None)));
        let constants = Rc::new(SharedConstants::default());
        ctx.insert_data(constants.clone());
        // Read-only and not deletable: sessions sharing the context all
        // need it, so no document may replace it for its siblings.
        let shared = boa_engine::object::FunctionObjectBuilder::new(
            ctx.realm(),
            NativeFunction::from_fn_ptr(shared_constant),
        )
        .name(JsString::from(SHARED_CONSTANT_FUNCTION))
        .length(2)
        .build();
        ctx.global_object()
            .define_property_or_throw(
                JsString::from(SHARED_CONSTANT_FUNCTION),
                PropertyDescriptor::builder()
                    .value(shared)
                    .writable(false)
                    .enumerable(false)
                    .configurable(false),
                &mut ctx,
            )
            .expect("__orsShared is not yet defined");
        ctx.register_global_callable(
            js_string!("In"),
            1,
            NativeFunction::from_fn_ptr(in_predicate),
        )
        .expect("In is not yet defined");
        // `_event` is a getter without a setter, so it is read-only.
        let getter = boa_engine::object::FunctionObjectBuilder::new(
            ctx.realm(),
            NativeFunction::from_fn_ptr(lazy_getter::<CurrentEvent>),
        )
        .name(js_string!("_event"))
        .build();
        ctx.global_object()
            .define_property_or_throw(
                js_string!("_event"),
                PropertyDescriptor::builder()
                    .get(getter)
                    .enumerable(true)
                    .configurable(false),
                &mut ctx,
            )
            .expect("_event is not yet defined");
        ctx.insert_data(CurrentIo {
            json: RefCell::new(None),
            object: RefCell::new(None),
        });
        // `_ioprocessors` too: read-only, built on first read.
        let getter = boa_engine::object::FunctionObjectBuilder::new(
            ctx.realm(),
            NativeFunction::from_fn_ptr(lazy_getter::<CurrentIo>),
        )
        .name(js_string!("_ioprocessors"))
        .build();
        ctx.global_object()
            .define_property_or_throw(
                js_string!("_ioprocessors"),
                PropertyDescriptor::builder()
                    .get(getter)
                    .enumerable(true)
                    .configurable(false),
                &mut ctx,
            )
            .expect("_ioprocessors is not yet defined");
        let n = doc.exprs.len();
        let mut dm = EcmaScriptDataModel {
            doc,
            ctx,
            compiled: (0..n).map(|_| None).collect(),
            setters: (0..n).map(|_| None).collect(),
            foreach_stack: Vec::new(),
            baseline_globals: Default::default(),
            system_names_known: false,
            stringify: None,
            compilations: 0,
            text_scripts: FxHashMap::default(),
            text_setters: FxHashMap::default(),
            snapshot_budget: codec::SnapshotBudget {
                depth: limits.snapshot_depth,
                bytes: limits.snapshot_bytes,
            },
            constants,
            prelude_functions: None,
            owner: None,
        };
        if dm.doc.dialect == crate::model::Dialect::Ors {
            let source = Source::from_bytes(SPIDERMONKEY_EXTENSIONS.as_bytes());
            if let Err(e) = dm.ctx.eval(source) {
                tracing::warn!(error = %e, "the SpiderMonkey extensions failed to install");
            }
        }
        dm.baseline_globals = dm.global_names();
        dm
    }

    /// How many expressions, scripts and location setters this context has
    /// compiled so far (each at most once).
    pub fn compilations(&self) -> u64 {
        self.compilations
    }

    /// The variables the current session created (everything on the
    /// global object beyond the built-ins and system variables) with their
    /// values, sorted by name; the context keeps them.
    pub(super) fn read_globals(&mut self) -> Vec<(JsString, JsValue)> {
        let global = self.ctx.global_object();
        let names = self.user_global_names();
        let mut out = Vec::with_capacity(names.len());
        for key in names {
            let value = global.get(key.clone(), &mut self.ctx).unwrap_or_default();
            out.push((key, value));
        }
        out
    }

    /// Installs a session's variables (sorted by name) over those of the
    /// session that ran before (`previous`, sorted, as [`Self::read_globals`]
    /// gave them): a name both have is overwritten in place, one only the
    /// previous session had is removed (left `undefined` when it cannot be,
    /// as `var` in a script makes it), one only this session has is added.
    /// Sessions of one document mostly share their names, so the global
    /// object keeps its shape instead of losing and regaining every
    /// property at each switch.
    pub(super) fn switch_globals(
        &mut self,
        previous: &[(JsString, JsValue)],
        vars: Vec<(JsString, JsValue)>,
    ) {
        let global = self.ctx.global_object();
        let mut old = previous.iter().map(|(k, _)| k).peekable();
        for (name, value) in vars {
            while let Some(gone) = old.next_if(|k| **k < name) {
                self.remove_global(gone);
            }
            old.next_if(|k| **k == name);
            let written = global
                .set(name.clone(), value.clone(), false, &mut self.ctx)
                .unwrap_or(false);
            if !written {
                // A read-only leftover of the previous session: replace it.
                self.remove_global(&name);
                let _ = global.set(name, value, false, &mut self.ctx);
            }
        }
        for gone in old {
            self.remove_global(gone);
        }
    }

    fn remove_global(&mut self, name: &JsString) {
        let global = self.ctx.global_object();
        let deleted = global
            .delete_property_or_throw(name.clone(), &mut self.ctx)
            .unwrap_or(false);
        if !deleted {
            let _ = global.set(name.clone(), JsValue::undefined(), false, &mut self.ctx);
        }
    }

    /// The snapshot of a session's variables (name-sorted, as
    /// [`Self::read_globals`] gives them), whether or not they are the
    /// ones installed, as JSON text: one encoder for all, so an object two
    /// variables share is written once.
    pub(super) fn snapshot_text_of(&mut self, vars: &[(JsString, JsValue)]) -> DmResult<String> {
        let dom = self
            .ctx
            .get_data::<DomBuilder>()
            .is_some_and(|b| b.0.borrow().is_some());
        codec::Encoder::new(self.snapshot_budget, self.constants.clone(), dom)
            .encode_variables(vars, &mut self.ctx)
    }

    /// [`Self::snapshot_text_of`] read back as a JSON value.
    pub(super) fn snapshot_of(&mut self, vars: &[(JsString, JsValue)]) -> DmResult<Value> {
        let text = self.snapshot_text_of(vars)?;
        serde_json::from_str(&text)
            .map_err(|e| DataModelError::new(format!("the snapshot cannot be read back: {e}")))
    }

    /// Defines `_sessionid`, `_name` and `_ioprocessors` (read-only) for a
    /// session. `io` is the session's `_ioprocessors` object if a script
    /// has read it before: the context takes it until
    /// [`EcmaScriptDataModel::take_io`] hands it back, so a shared context
    /// switching back to the session reuses it instead of building it
    /// again.
    pub(super) fn install_system_variables(
        &mut self,
        vars: &SystemVariables,
        io: &mut Option<JsValue>,
    ) -> DmResult<()> {
        self.define_readonly(
            "_sessionid",
            JsValue::from(JsString::from(&*vars.session_id)),
        )?;
        let name = match &vars.name {
            Some(n) => JsValue::from(JsString::from(n.as_str())),
            None => JsValue::undefined(),
        };
        self.define_readonly("_name", name)?;
        if let Some(current) = self.ctx.get_data::<CurrentIo>() {
            *current.json.borrow_mut() = Some(vars.ioprocessors.clone());
            *current.object.borrow_mut() = io.take();
        }
        if !self.system_names_known {
            for name in ["_sessionid", "_name", "_ioprocessors"] {
                self.baseline_globals.insert(JsString::from(name));
            }
            self.system_names_known = true;
        }
        Ok(())
    }

    /// Records the functions of the globals the prelude (`source`) just
    /// made (those not among `before`).
    fn record_prelude_functions(&mut self, source: &str, before: &rustc_hash::FxHashSet<JsString>) {
        let global = self.ctx.global_object();
        let mut globals = Vec::new();
        for name in self.global_names() {
            if before.contains(&name) {
                continue;
            }
            let value = global.get(name.clone(), &mut self.ctx).unwrap_or_default();
            if let Some(object) = value.as_object()
                && let Ok(Some(skeleton)) = function_skeleton(&object, 0, &mut self.ctx)
            {
                globals.push((name, skeleton));
            }
        }
        self.prelude_functions = Some(PreludeFunctions {
            source: source.into(),
            globals,
        });
    }

    /// Makes `In()` read this active-state set (a session's own).
    pub(super) fn set_active(&mut self, set: Rc<RefCell<StateSet>>) {
        if let Some(s) = self.ctx.get_data::<ActiveStates>() {
            *s.active.borrow_mut() = set;
        }
    }

    /// Exchanges the current event `_event` reads with `event`.
    /// The installed session's `_ioprocessors` object, if a script has
    /// read it (for the session to keep while another is installed).
    pub(super) fn take_io(&mut self) -> Option<JsValue> {
        self.ctx
            .get_data::<CurrentIo>()
            .and_then(|current| current.object.borrow_mut().take())
    }

    pub(super) fn swap_event(&mut self, event: &mut Option<Event>) {
        if let Some(current) = self.ctx.get_data::<CurrentEvent>() {
            std::mem::swap(&mut *current.event.borrow_mut(), event);
            *current.object.borrow_mut() = None;
        }
    }

    /// Globals the session's document created (not built-ins or system
    /// variables), sorted; only these names are converted or copied.
    fn user_global_names(&mut self) -> Vec<JsString> {
        let global = self.ctx.global_object();
        let mut names: Vec<JsString> = global
            .own_property_keys(&mut self.ctx)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| match k {
                PropertyKey::String(s) if !self.baseline_globals.contains(&s) => Some(s),
                _ => None,
            })
            .collect();
        names.sort();
        names
    }

    fn global_names(&mut self) -> rustc_hash::FxHashSet<JsString> {
        let global = self.ctx.global_object();
        global
            .own_property_keys(&mut self.ctx)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|k| match k {
                PropertyKey::String(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn define_readonly(&mut self, name: &str, value: JsValue) -> DmResult<()> {
        let global = self.ctx.global_object();
        global
            .define_property_or_throw(
                JsString::from(name),
                PropertyDescriptor::builder()
                    .value(value)
                    .writable(false)
                    .enumerable(true)
                    .configurable(true),
                &mut self.ctx,
            )
            .map(|_| ())
            .map_err(|e| js_err(e, &mut self.ctx))
    }

    /// Compiles (once) and returns the script for an expression.
    fn script(&mut self, id: ExprId) -> DmResult<Script> {
        if let Some(s) = &self.compiled[id.index()] {
            return Ok(s.clone());
        }
        let expr = self.doc.expr(id);
        // Expressions are wrapped in parentheses (on their own lines, so a
        // trailing `//` comment cannot swallow the closing one) so that an
        // object literal is not read as a block. Compiled once, not per use.
        let source = match expr.kind {
            ExprKind::Script => expr.source.to_string(),
            ExprKind::Value | ExprKind::Location => {
                // A trailing `;` is common in hand-written attributes.
                let body = expr.source.trim().trim_end_matches(';');
                // An empty expression evaluates to undefined, as `eval("")` does.
                let body = if body.trim().is_empty() {
                    "undefined"
                } else {
                    body
                };
                format!("(\n{body}\n)")
            }
        };
        self.compilations += 1;
        let script = parse_checked(&source, &mut self.ctx)?;
        self.compiled[id.index()] = Some(script.clone());
        Ok(script)
    }

    fn eval(&mut self, id: ExprId) -> DmResult<JsValue> {
        let script = self.script(id)?;
        script
            .evaluate(&mut self.ctx)
            .map_err(|e| js_err(e, &mut self.ctx))
    }

    /// Compiles (once) a strict-mode setter `function (v) { (LOCATION) = v }`
    /// so that assigning to an undeclared name or a read-only system
    /// variable throws instead of silently creating or ignoring.
    fn setter(&mut self, location: ExprId) -> DmResult<JsObject> {
        if let Some(f) = &self.setters[location.index()] {
            return Ok(f.clone());
        }
        let loc = self.doc.expr(location).source.clone();
        let f = self.compile_setter(&loc)?;
        self.setters[location.index()] = Some(f.clone());
        Ok(f)
    }

    fn compile_setter(&mut self, loc: &str) -> DmResult<JsObject> {
        if loc.trim().is_empty() {
            return Err(DataModelError::new("empty location"));
        }
        let source =
            format!("(function (__ors_value) {{ 'use strict';\n({loc}\n) = __ors_value; }})");
        self.compilations += 1;
        let f = parse_checked(&source, &mut self.ctx)?
            .evaluate(&mut self.ctx)
            .map_err(|e| js_err(e, &mut self.ctx))?;
        f.as_object()
            .filter(|o| o.is_callable())
            .ok_or_else(|| DataModelError::new(format!("'{loc}' is not a valid location")))
    }

    fn set_location(&mut self, location: ExprId, value: JsValue) -> DmResult<()> {
        // Fast path for the common `location="name"` when `name` is already
        // a property of the global object: a strict [[Set]] (throws on the
        // read-only system variables, as the setter would).
        let src = self.doc.expr(location).source.trim();
        if is_identifier(src) {
            let key = JsString::from(src);
            let global = self.ctx.global_object();
            if global
                .has_own_property(key.clone(), &mut self.ctx)
                .unwrap_or(false)
            {
                return global
                    .set(key, value, true, &mut self.ctx)
                    .map(|_| ())
                    .map_err(|e| js_err(e, &mut self.ctx));
            }
        }
        let f = self.setter(location)?;
        f.call(&JsValue::undefined(), &[value], &mut self.ctx)
            .map(|_| ())
            .map_err(|e| js_err(e, &mut self.ctx))
    }

    fn initial_to_js(&mut self, value: &InitialValue) -> DmResult<JsValue> {
        match value {
            InitialValue::Undefined => Ok(JsValue::undefined()),
            InitialValue::Expr(e) => self.eval(*e),
            InitialValue::Json(v) => {
                JsValue::from_json(v, &mut self.ctx).map_err(|e| js_err(e, &mut self.ctx))
            }
            InitialValue::Text(s) => Ok(JsValue::from(JsString::from(s.as_str()))),
            InitialValue::Xml(s) => {
                xml_to_js(s, &mut self.ctx).map_err(|e| js_err(e, &mut self.ctx))
            }
        }
    }

    /// Converts a value to data with `JSON.stringify` semantics (`toJSON`,
    /// functions and undefined members dropped).
    fn export_value(&mut self, value: &JsValue) -> DmResult<Option<Value>> {
        match value.variant() {
            boa_engine::JsVariant::Undefined => return Ok(None),
            boa_engine::JsVariant::Null => return Ok(Some(Value::Null)),
            boa_engine::JsVariant::Boolean(b) => return Ok(Some(Value::Bool(b))),
            boa_engine::JsVariant::Integer32(i) => return Ok(Some(Value::from(i))),
            boa_engine::JsVariant::String(s) => {
                return Ok(Some(Value::String(s.to_std_string_escaped())));
            }
            _ => {}
        }
        if value.as_object().is_some_and(|o| o.is_callable()) {
            return Ok(None);
        }
        let stringify = match &self.stringify {
            Some(f) => f.clone(),
            None => {
                let json = self
                    .ctx
                    .global_object()
                    .get(js_string!("JSON"), &mut self.ctx)
                    .map_err(|e| js_err(e, &mut self.ctx))?;
                let f = json
                    .as_object()
                    .and_then(|o| o.get(js_string!("stringify"), &mut self.ctx).ok())
                    .and_then(|f| f.as_object())
                    .ok_or_else(|| DataModelError::new("JSON.stringify is missing"))?;
                self.stringify = Some(f.clone());
                f
            }
        };
        let text = stringify
            .call(
                &JsValue::undefined(),
                std::slice::from_ref(value),
                &mut self.ctx,
            )
            .map_err(|e| js_err(e, &mut self.ctx))?;
        if text.is_undefined() {
            return Ok(None);
        }
        let text = text
            .to_string(&mut self.ctx)
            .map_err(|e| js_err(e, &mut self.ctx))?
            .to_std_string_escaped();
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| DataModelError::new(format!("value cannot be converted to data: {e}")))
    }
}

/// Whether `{"$xml": ...}` occurs anywhere in a value.
fn contains_xml_tag(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("$xml") || m.values().any(contains_xml_tag),
        Value::Array(a) => a.iter().any(contains_xml_tag),
        _ => false,
    }
}

/// A key the snapshot escaped (a `$` key is written `$$…`, see
/// [`codec`]) as the script knows it.
fn unescape_key(k: &str) -> &str {
    if k.starts_with("$$") { &k[1..] } else { k }
}

impl DataModel for EcmaScriptDataModel {
    fn set_system_variables(&mut self, vars: &SystemVariables) -> DmResult<()> {
        self.install_system_variables(vars, &mut None)
    }

    fn is_free_name(&mut self, name: &str) -> bool {
        if !is_identifier(name) || name == "__proto__" {
            return false;
        }
        let global = self.ctx.global_object();
        !global
            .has_property(JsString::from(name), &mut self.ctx)
            .unwrap_or(true)
    }

    fn declare(&mut self, name: &str, value: &InitialValue) -> DmResult<()> {
        let v = match self.initial_to_js(value) {
            Ok(v) => v,
            Err(e) => {
                // The variable still exists (undefined) when its value fails.
                let global = self.ctx.global_object();
                let _ = global.set(
                    JsString::from(name),
                    JsValue::undefined(),
                    false,
                    &mut self.ctx,
                );
                return Err(e);
            }
        };
        let global = self.ctx.global_object();
        global
            .set(JsString::from(name), v, true, &mut self.ctx)
            .map(|_| ())
            .map_err(|e| js_err(e, &mut self.ctx))
    }

    fn eval_cond(&mut self, expr: ExprId) -> DmResult<bool> {
        Ok(self.eval(expr)?.to_boolean())
    }

    fn eval_value(&mut self, expr: ExprId) -> DmResult<Option<Value>> {
        let v = self.eval(expr)?;
        self.export_value(&v)
    }

    fn eval_string(&mut self, expr: ExprId) -> DmResult<String> {
        let v = self.eval(expr)?;
        if v.is_object()
            && !v.as_object().is_some_and(|o| o.is_callable())
            && let Ok(Some(data)) = self.export_value(&v)
        {
            return Ok(data.to_string());
        }
        v.to_string(&mut self.ctx)
            .map(|s| s.to_std_string_escaped())
            .map_err(|e| js_err(e, &mut self.ctx))
    }

    fn assign_expr(&mut self, location: ExprId, expr: ExprId) -> DmResult<()> {
        let v = self.eval(expr)?;
        self.set_location(location, v)
    }

    fn assign_value(&mut self, location: ExprId, value: &InitialValue) -> DmResult<()> {
        let v = self.initial_to_js(value)?;
        self.set_location(location, v)
    }

    fn run_script(&mut self, script: ExprId) -> DmResult<()> {
        self.eval(script).map(|_| ())
    }

    fn eval_text(&mut self, source: &str) -> DmResult<Option<Value>> {
        let script = match self.text_scripts.get(source) {
            Some(s) => s.clone(),
            None => {
                self.compilations += 1;
                let body = source.trim().trim_end_matches(';');
                let wrapped = format!("(\n{body}\n)");
                let s = parse_checked(&wrapped, &mut self.ctx)?;
                self.text_scripts.insert(source.to_string(), s.clone());
                s
            }
        };
        let v = script
            .evaluate(&mut self.ctx)
            .map_err(|e| js_err(e, &mut self.ctx))?;
        self.export_value(&v)
    }

    fn eval_prelude(&mut self, source: &str) -> DmResult<()> {
        let record = self
            .prelude_functions
            .as_ref()
            .is_none_or(|p| *p.source != *source);
        let before = if record {
            self.global_names()
        } else {
            Default::default()
        };
        self.constants.open.set(true);
        let result = self.eval_text(source).map(|_| ());
        self.constants.open.set(false);
        if record && result.is_ok() {
            self.record_prelude_functions(source, &before);
        }
        result
    }

    fn restore_prelude(&mut self, source: &str) -> DmResult<()> {
        if self
            .prelude_functions
            .as_ref()
            .is_some_and(|p| *p.source == *source)
        {
            // Its functions are grafted from the record by `restore`, and
            // everything else it makes the snapshot overwrites.
            return Ok(());
        }
        self.eval_prelude(source)
    }

    fn assign_text(&mut self, location: &str, value: &InitialValue) -> DmResult<()> {
        let f = match self.text_setters.get(location) {
            Some(f) => f.clone(),
            None => {
                let f = self.compile_setter(location)?;
                self.text_setters.insert(location.to_string(), f.clone());
                f
            }
        };
        let v = self.initial_to_js(value)?;
        f.call(&JsValue::undefined(), &[v], &mut self.ctx)
            .map(|_| ())
            .map_err(|e| js_err(e, &mut self.ctx))
    }

    fn foreach_begin(&mut self, array: ExprId, item: &str, index: Option<&str>) -> DmResult<usize> {
        let v = self.eval(array)?;
        let obj = v
            .as_object()
            .filter(|o| o.is_array())
            .ok_or_else(|| DataModelError::new("foreach 'array' is not an Array"))?;
        if !is_identifier(item) {
            return Err(DataModelError::new(format!(
                "foreach item '{item}' is not a legal variable name"
            )));
        }
        if let Some(i) = index
            && !is_identifier(i)
        {
            return Err(DataModelError::new(format!(
                "foreach index '{i}' is not a legal variable name"
            )));
        }
        let arr = JsArray::from_object(obj).map_err(|e| js_err(e, &mut self.ctx))?;
        let len = arr
            .length(&mut self.ctx)
            .map_err(|e| js_err(e, &mut self.ctx))?;
        let mut copy = Vec::with_capacity(len as usize);
        for i in 0..len {
            copy.push(
                arr.get(i, &mut self.ctx)
                    .map_err(|e| js_err(e, &mut self.ctx))?,
            );
        }
        self.foreach_stack.push(copy);
        Ok(len as usize)
    }

    fn foreach_step(&mut self, item: &str, index: Option<&str>, i: usize) -> DmResult<()> {
        let value = self
            .foreach_stack
            .last()
            .and_then(|c| c.get(i))
            .cloned()
            .unwrap_or_default();
        let global = self.ctx.global_object();
        global
            .set(JsString::from(item), value, true, &mut self.ctx)
            .map_err(|e| js_err(e, &mut self.ctx))?;
        if let Some(index) = index {
            global
                .set(
                    JsString::from(index),
                    JsValue::from(i as u32),
                    true,
                    &mut self.ctx,
                )
                .map_err(|e| js_err(e, &mut self.ctx))?;
        }
        Ok(())
    }

    fn foreach_end(&mut self) {
        self.foreach_stack.pop();
    }

    fn set_event(&mut self, event: &Event) -> DmResult<()> {
        if let Some(current) = self.ctx.get_data::<CurrentEvent>() {
            *current.event.borrow_mut() = Some(event.clone());
            *current.object.borrow_mut() = None;
        }
        Ok(())
    }

    fn release_event(&mut self) {
        self.swap_event(&mut None);
    }

    fn state_entered(&mut self, state: StateId) {
        if let Some(s) = self.ctx.get_data::<ActiveStates>() {
            s.active.borrow().borrow_mut().insert(state);
        }
    }

    fn state_exited(&mut self, state: StateId) {
        if let Some(s) = self.ctx.get_data::<ActiveStates>() {
            s.active.borrow().borrow_mut().remove(state);
        }
    }

    fn snapshot(&mut self) -> DmResult<Value> {
        let vars = self.read_globals();
        self.snapshot_of(&vars)
    }

    fn snapshot_text(&mut self) -> DmResult<String> {
        let vars = self.read_globals();
        self.snapshot_text_of(&vars)
    }

    fn restore(&mut self, snapshot: &Value) -> DmResult<()> {
        let Value::Object(map) = snapshot else {
            return Err(DataModelError::new("data model snapshot must be an object"));
        };
        let global = self.ctx.global_object();
        let mut decoder = codec::Decoder::new(self.snapshot_budget, self.constants.clone());
        for (k, v) in map {
            let v = decoder.decode(v, &mut self.ctx)?;
            let key = JsString::from(unescape_key(k));
            // Functions cannot be saved; the ones the prelude and the
            // document's scripts put on objects are carried over onto the
            // restored objects (the prelude's from its record).
            let recorded = self.prelude_functions.as_ref().and_then(|p| {
                p.globals
                    .iter()
                    .find(|(name, _)| *name == key)
                    .map(|(_, skeleton)| JsValue::from(skeleton.clone()))
            });
            let current = match recorded {
                Some(skeleton) => skeleton,
                None => global
                    .get(key.clone(), &mut self.ctx)
                    .map_err(|e| js_err(e, &mut self.ctx))?,
            };
            if let (Some(from), Some(into)) = (current.as_object(), v.as_object()) {
                graft_functions(&from, &into, 0, &mut self.ctx)
                    .map_err(|e| js_err(e, &mut self.ctx))?;
            }
            global
                .set(key, v, true, &mut self.ctx)
                .map_err(|e| js_err(e, &mut self.ctx))?;
        }
        Ok(())
    }
}

/// Copies the functions `from` has and `into` lacks onto `into`, looking
/// into nested plain objects (a few levels deep).
fn graft_functions(
    from: &boa_engine::JsObject,
    into: &boa_engine::JsObject,
    depth: usize,
    ctx: &mut Context,
) -> JsResult<()> {
    if depth > 8 || from.is_callable() || into.is_callable() || from == into {
        return Ok(());
    }
    for key in from.own_property_keys(ctx)? {
        let value = from.get(key.clone(), ctx)?;
        let Some(obj) = value.as_object() else {
            continue;
        };
        if obj.is_callable() {
            if !into.has_own_property(key.clone(), ctx)? {
                into.set(key, value.clone(), false, ctx)?;
            }
        } else if let Some(target) = into.get(key, ctx)?.as_object() {
            graft_functions(&obj, &target, depth + 1, ctx)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{LoadOptions, parse_document};

    fn model(doc: &str) -> (Arc<Document>, EcmaScriptDataModel) {
        let doc = Arc::new(parse_document(doc, None, &LoadOptions::default()).expect("loads"));
        let dm = EcmaScriptDataModel::new(doc.clone(), &ScriptLimits::default());
        (doc, dm)
    }

    const CHART: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0">
      <datamodel><data id="n" expr="0"/></datamodel>
      <state id="s"><transition event="t" cond="n &gt;= 0 &amp;&amp; In('s')">
        <assign location="n" expr="n + 1"/></transition></state></scxml>"#;

    fn truth(dm: &mut EcmaScriptDataModel, src: &str) -> bool {
        run(dm, src).as_boolean() == Some(true)
    }

    /// Runs statements in the model's context; the completion value.
    fn run(dm: &mut EcmaScriptDataModel, src: &str) -> JsValue {
        dm.ctx
            .eval(Source::from_bytes(src.as_bytes()))
            .expect("the script runs")
    }

    /// The DOM is built and walked without recursion: a fragment 190
    /// elements deep, under a script recursion limit of 50, is built,
    /// searched, read and written back.
    #[test]
    fn the_dom_never_recurses_on_the_fragments_depth() {
        let doc = Arc::new(parse_document(CHART, None, &LoadOptions::default()).expect("loads"));
        let limits = ScriptLimits {
            recursion: 50,
            ..ScriptLimits::default()
        };
        let mut dm = EcmaScriptDataModel::new(doc, &limits);
        let mut text = String::new();
        for i in 0..190 {
            text.push_str(&format!("<a i=\"{i}\">t{i}"));
        }
        text.push_str("<b/>");
        for _ in 0..190 {
            text.push_str("</a>");
        }
        text.push_str("<c k=\"&amp;\">tail</c>");
        let dom = xml_to_js(&text, &mut dm.ctx).expect("the DOM is built");
        dm.ctx
            .register_global_property(
                js_string!("dom"),
                dom,
                boa_engine::property::Attribute::all(),
            )
            .unwrap();
        assert!(truth(
            &mut dm,
            "dom.getElementsByTagName('a').length === 190"
        ));
        assert!(truth(
            &mut dm,
            "dom.getElementsByTagName('*')[189].getAttribute('i') === '189'"
        ));
        assert!(truth(
            &mut dm,
            "dom.textContent.indexOf('t0t1t2') === 0 && /t189tail$/.test(dom.textContent)"
        ));
        let written = run(&mut dm, "dom.toXML()");
        assert_eq!(
            written.as_string().map(|s| s.to_std_string_escaped()),
            Some(text)
        );
    }

    #[test]
    fn snapshots_keep_shared_objects_shared_and_cycles_whole() {
        let (_, mut dm) = model(CHART);
        run(
            &mut dm,
            "var leaf = {v: 1}; var a = leaf; \
             for (var i = 0; i < 40; i++) a = {x: a, y: a}; \
             var b = [a, a]; var c = {name: 'c'}; c.self = c; c.list = [c, leaf];",
        );
        let snap = dm.snapshot().expect("a shared graph is captured");
        let text = serde_json::to_string(&snap).unwrap();
        // Unfolded, `a` would be 2^40 leaves; shared, it is one object per level.
        assert!(text.len() < 8_000, "snapshot is {} bytes", text.len());

        let (_, mut restored) = model(CHART);
        restored.restore(&snap).expect("restores");
        assert!(truth(&mut restored, "b[0] === b[1] && b[0].x === b[0].y"));
        assert!(truth(
            &mut restored,
            "var d = 0, o = a; while (o.x) { if (o.x !== o.y) break; o = o.x; d++; } \
             d === 40 && o === leaf && o.v === 1"
        ));
        assert!(truth(
            &mut restored,
            "c.self === c && c.list[0] === c && c.list[1] === leaf && c.name === 'c'"
        ));
    }

    /// The snapshot text, written straight from the values: JSON where it
    /// fits, tags for the rest, `$` keys escaped, functions and symbols
    /// left out of objects and `null` in arrays, a shared object written
    /// once and then referred to; and it restores to the same values.
    #[test]
    fn snapshot_text_is_the_documented_encoding_and_restores() {
        let (_, mut dm) = model(CHART);
        run(
            &mut dm,
            "var n = 1; var f = 1.5; var u = undefined; var nan = NaN; var big = 12n; \
             var when = new Date(86400000); var bad = new Date(NaN); \
             var o = {$k: 'dollar', 'quo\"te': 'a\\nb', f: function () {}, s: Symbol('x'), 7: true}; \
             var a = [1, function () {}, null, 'é\\u00e9\\ud83d\\ude00']; \
             var shared = {x: 1}; var pair = [shared, shared]; var gone = function () {};",
        );
        let vars = dm.read_globals();
        let text = dm.snapshot_text_of(&vars).expect("encodes");
        assert_eq!(
            text,
            concat!(
                r#"{"a":[1,null,null,"éé😀"],"bad":{"$date":null},"big":{"$bigint":"12"},"#,
                r#""f":1.5,"n":1,"nan":{"$number":"NaN"},"#,
                r#""o":{"7":true,"$$k":"dollar","quo\"te":"a\nb"},"#,
                r#""pair":[{"x":1},{"$ref":3}],"shared":{"$ref":3},"#,
                r#""u":{"$undefined":true},"when":{"$date":86400000.0}}"#
            )
        );
        let snap: Value = serde_json::from_str(&text).expect("the text is JSON");
        let (_, mut restored) = model(CHART);
        restored.restore(&snap).expect("restores");
        assert!(truth(
            &mut restored,
            "n === 1 && f === 1.5 && u === undefined && 'u' in globalThis && isNaN(nan) \
             && big === 12n && when.getTime() === 86400000 && isNaN(bad.getTime()) \
             && o.$k === 'dollar' && o['quo\"te'] === 'a\\nb' && o[7] === true && !('f' in o) \
             && a.length === 4 && a[1] === null && a[3] === 'é\\u00e9\\ud83d\\ude00' \
             && pair[0] === pair[1] && pair[0] === shared && typeof gone === 'undefined'"
        ));
    }

    /// A session restored into a context that has run the prelude does
    /// not run it again: the prelude's functions are grafted from its
    /// record onto the restored values; a fresh context runs it.
    #[test]
    fn a_restore_grafts_the_preludes_functions_without_running_it_again() {
        const PRELUDE: &str = "(function (g) { g.runs = (g.runs || 0) + 1; \
             var f = __orsShared('fns', function () { \
               return {hello: function () { return 'hi ' + this.name; }}; }); \
             g.P = {name: 'p', inner: {}}; Object.assign(g.P, f); g.P.inner.twice = f.hello; \
             })(globalThis)";
        let (_, mut dm) = model(CHART);
        dm.eval_prelude(PRELUDE).expect("the prelude runs");
        run(&mut dm, "P.name = 'q'; P.own = function () { return 1; };");
        let snap = dm.snapshot().expect("snapshot");
        run(&mut dm, "runs = 100; delete P;");
        dm.restore_prelude(PRELUDE).expect("skipped");
        assert!(truth(&mut dm, "runs === 100 && typeof P === 'undefined'"));
        dm.restore(&snap).expect("restores");
        assert!(truth(
            &mut dm,
            "runs === 1 && P.hello() === 'hi q' && typeof P.inner.twice === 'function' \
             && P.own === undefined"
        ));

        let (_, mut fresh) = model(CHART);
        fresh.restore_prelude(PRELUDE).expect("runs");
        assert!(truth(&mut fresh, "runs === 1"));
        fresh.restore(&snap).expect("restores");
        assert!(truth(&mut fresh, "P.hello() === 'hi q'"));
    }

    /// A shared constant is made once per context and frozen; a snapshot
    /// names it (and an object inside it) instead of writing it out; a
    /// restore after the same prelude gets the very same objects back,
    /// and one without it is refused.
    #[test]
    fn shared_constants_are_made_once_frozen_and_named_in_snapshots() {
        const PRELUDE: &str = "(function (g) { g.made = (typeof made === 'number' ? made : 0); \
             g.T = __orsShared('t', function () { made++; \
               return {A: 'A', B: 'B', inner: {C: 'C'}, f: function () { return this.A; }}; }); \
             })(globalThis)";
        let (_, mut dm) = model(CHART);
        dm.eval_prelude(PRELUDE).expect("the prelude runs");
        dm.eval_prelude(PRELUDE).expect("the prelude runs again");
        assert!(truth(
            &mut dm,
            "made === 1 && T.A === 'A' && T.inner.C === 'C'"
        ));
        // No document replaces or deletes it for the sessions it shares
        // the context with.
        run(&mut dm, "__orsShared = 1; delete globalThis.__orsShared;");
        assert!(truth(&mut dm, "typeof __orsShared === 'function'"));
        // A document's script gets an existing constant but makes none
        // (it could hand data from one session to the next).
        assert!(truth(&mut dm, "__orsShared('t', null) === T"));
        assert!(truth(
            &mut dm,
            "(function () { try { __orsShared('mine', function () { return {}; }); return false; } \
               catch (e) { return e instanceof TypeError; } })()"
        ));
        // Frozen: a sloppy write is ignored, a strict one throws.
        run(
            &mut dm,
            "T.A = 'changed'; T.inner.C = 'changed'; T.extra = 1;",
        );
        assert!(truth(
            &mut dm,
            "T.A === 'A' && T.inner.C === 'C' && !('extra' in T) && Object.isFrozen(T.inner)"
        ));
        assert!(truth(
            &mut dm,
            "(function () { 'use strict'; try { T.A = 1; return false; } catch (e) { return e instanceof TypeError; } })()"
        ));
        run(
            &mut dm,
            "var holder = {t: T, c: T.inner}; var plain = {A: 'A'};",
        );
        let snap = dm.snapshot().expect("snapshot");
        assert_eq!(snap["T"], serde_json::json!({"$shared": "t"}));
        assert_eq!(
            snap["holder"]["c"],
            serde_json::json!({"$shared": "t/inner"})
        );
        assert_eq!(snap["plain"], serde_json::json!({"A": "A"}));
        // People read the constant's members.
        let view = crate::datamodel::plain_json(&snap);
        assert_eq!(view["holder"]["c"], serde_json::json!({"C": "C"}));

        let (_, mut restored) = model(CHART);
        restored.eval_prelude(PRELUDE).expect("the prelude runs");
        restored.restore(&snap).expect("restores");
        assert!(truth(
            &mut restored,
            "T === holder.t && holder.c === T.inner && T === __orsShared('t', null) && plain.A === 'A'"
        ));
        let (_, mut bare) = model(CHART);
        let err = bare.restore(&snap).expect_err("no prelude made 't'");
        assert!(
            err.message.contains("shared constant 't'"),
            "{}",
            err.message
        );
    }

    #[test]
    fn plain_views_write_shared_objects_out_and_stop_at_cycles_and_size() {
        let (_, mut dm) = model(CHART);
        run(
            &mut dm,
            "var item = {dn: '7001'}; var list = [item, item]; var c = {name: 'c'}; c.self = c; \
             var a = {leaf: 1}; for (var i = 0; i < 40; i++) a = {x: a, y: a};",
        );
        let view = crate::datamodel::plain_json(&dm.snapshot().unwrap());
        assert_eq!(
            view["list"],
            serde_json::json!([{"dn": "7001"}, {"dn": "7001"}])
        );
        assert_eq!(view["c"]["self"], "[circular]");
        assert_eq!(view["c"]["name"], "c");
        let text = view["a"].to_string();
        assert!(text.contains("[…]"), "the 2^40-path graph is cut short");
        assert!(text.len() < 4_000_000, "{} bytes", text.len());
    }

    #[test]
    fn snapshots_refuse_values_nested_past_the_limit_without_recursing() {
        let (_, mut dm) = model(CHART);
        // Deep enough to overflow a recursive encoder's stack.
        run(
            &mut dm,
            "var deep = []; for (var i = 0; i < 200000; i++) deep = [deep];",
        );
        let err = dm.snapshot().expect_err("too deep to capture");
        assert!(err.message.contains("100 levels"), "{}", err.message);

        let (_, mut dm) = model(CHART);
        run(
            &mut dm,
            "var ok = []; for (var i = 0; i < 99; i++) ok = [ok];",
        );
        let snap = dm.snapshot().expect("99 levels are within the limit");
        let text = serde_json::to_string(&snap).unwrap();
        let read: Value = serde_json::from_str(&text).expect("serde_json reads it back");
        let (_, mut restored) = model(CHART);
        restored.restore(&read).unwrap();
        assert!(truth(
            &mut restored,
            "var n = 0, o = ok; while (Array.isArray(o) && o.length) { o = o[0]; n++; } n === 99"
        ));
    }

    #[test]
    fn snapshots_refuse_data_models_larger_than_the_limit() {
        let (_, mut dm) = model(CHART);
        run(
            &mut dm,
            "var s = 'x'; for (var i = 0; i < 24; i++) s = s + s;",
        );
        let err = dm.snapshot().expect_err("16 Mi characters are over 16 MiB");
        assert!(err.message.contains("larger than"), "{}", err.message);
    }

    #[test]
    fn restore_refuses_dangling_references_and_runaway_nesting() {
        let (_, mut dm) = model(CHART);
        let dangling = serde_json::json!({"a": {"$ref": 7}});
        let err = dm.restore(&dangling).expect_err("object 7 is not defined");
        assert!(err.message.contains("object 7"), "{}", err.message);
        let mut deep = Value::Null;
        for _ in 0..300 {
            deep = Value::Array(vec![deep]);
        }
        let err = dm
            .restore(&serde_json::json!({ "deep": deep }))
            .expect_err("too deep to restore");
        assert!(err.message.contains("nests too deeply"), "{}", err.message);
    }

    #[test]
    fn ors_documents_have_spidermonkeys_to_source_and_w3c_ones_do_not() {
        let ors = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" profile="ecmascript">
          <state id="s"/></scxml>"#;
        let (_, mut dm) = model(ors);
        let text = |dm: &mut EcmaScriptDataModel, src: &str| dm.eval_text(src).unwrap().unwrap();
        assert_eq!(
            text(
                &mut dm,
                r#"({name: "error.x", data: {a: 1, "b-c": [1, "two"]}}).toSource()"#
            ),
            serde_json::json!(r#"({name:"error.x", data:{a:1, "b-c":[1, "two"]}})"#)
        );
        assert_eq!(
            text(&mut dm, "[1, 2].toSource()"),
            serde_json::json!("[1, 2]")
        );
        assert_eq!(
            text(&mut dm, "'s'.toSource()"),
            serde_json::json!(r#"(new String("s"))"#)
        );
        assert_eq!(
            text(&mut dm, "Object.keys({}).length + JSON.stringify({a: 1})"),
            serde_json::json!("0{\"a\":1}")
        );
        let (_, mut w3c) = model(CHART);
        assert!(w3c.eval_text("({}).toSource()").is_err());
    }

    #[test]
    fn each_expression_compiles_once_per_context() {
        let (doc, mut dm) = model(CHART);
        dm.declare("n", &InitialValue::Json(serde_json::json!(0)))
            .unwrap();
        dm.state_entered(doc.state_by_name("s").unwrap());
        let t = doc.transition(doc.state(doc.state_by_name("s").unwrap()).transitions[0]);
        let cond = t.cond.unwrap();
        let crate::model::Action::Assign {
            location,
            value: crate::model::AssignValue::Expr(expr),
        } = &t.content[0]
        else {
            panic!("assign expected");
        };
        for _ in 0..500 {
            assert!(dm.eval_cond(cond).unwrap());
            dm.assign_expr(*location, *expr).unwrap();
        }
        // cond and expr: two compilations for 1000 evaluations (a plain-name
        // location is set on the global object without compiling a setter).
        assert_eq!(dm.compilations(), 2);
        // A location that is not a plain name compiles its setter once.
        dm.declare("o", &InitialValue::Json(serde_json::json!({"n": 0})))
            .unwrap();
        for i in 0..10 {
            dm.assign_text("o.n", &InitialValue::Json(serde_json::json!(i)))
                .unwrap();
        }
        assert_eq!(dm.compilations(), 3);
        let v = dm.eval(*expr).unwrap();
        assert_eq!(dm.export_value(&v).unwrap(), Some(serde_json::json!(501)));
    }

    #[test]
    fn in_follows_entered_and_exited_states() {
        let (doc, mut dm) = model(CHART);
        let s = doc.state_by_name("s").unwrap();
        let t = doc.transition(doc.state(s).transitions[0]);
        dm.declare("n", &InitialValue::Json(serde_json::json!(0)))
            .unwrap();
        assert!(!dm.eval_cond(t.cond.unwrap()).unwrap());
        dm.state_entered(s);
        assert!(dm.eval_cond(t.cond.unwrap()).unwrap());
        dm.state_exited(s);
        assert!(!dm.eval_cond(t.cond.unwrap()).unwrap());
    }

    #[test]
    fn identifiers_exclude_reserved_words() {
        assert!(is_identifier("item"));
        assert!(is_identifier("$x_1"));
        assert!(!is_identifier("continue"));
        assert!(!is_identifier("'a'"));
        assert!(!is_identifier("1a"));
    }
}
