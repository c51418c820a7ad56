//! The data model interface the interpreter drives, and its two
//! implementations: [`ecmascript`] (boa) and [`null`].
//!
//! Values cross the boundary as JSON (`serde_json::Value`), with `None`
//! standing for ECMAScript `undefined`; values that stay inside the data
//! model (an `<assign>` from an expression, `foreach` items) never leave it.

pub mod ecmascript;
pub mod null;
pub mod shared;

use std::sync::Arc;

use serde_json::Value;

use crate::model::Event;
use crate::model::{Document, ExprId, StateId};

/// An error from evaluating or assigning; the interpreter turns it into
/// `error.execution`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DataModelError {
    /// What went wrong, e.g. `ReferenceError: x is not defined`.
    pub message: String,
}

impl DataModelError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        DataModelError {
            message: message.into(),
        }
    }
}

/// Result type of data model operations.
pub type DmResult<T> = Result<T, DataModelError>;

/// The initial value given to a `<data>` element (or any declaration).
#[derive(Debug, Clone)]
pub enum InitialValue {
    /// No value: `undefined`.
    Undefined,
    /// Evaluate this expression.
    Expr(ExprId),
    /// A JSON value (parsed inline content or `src`).
    Json(Value),
    /// A string (inline text that is not JSON).
    Text(String),
    /// XML content (kept as its source text).
    Xml(String),
}

/// Values of the system variables that do not change during a session.
#[derive(Debug, Clone)]
pub struct SystemVariables {
    /// `_sessionid`.
    pub session_id: Arc<str>,
    /// `_name`.
    pub name: Option<String>,
    /// What `_ioprocessors` is made from when a script first reads it.
    pub ioprocessors: IoProcessors,
}

/// The session's I/O processors, from which `_ioprocessors` is built on
/// first read (W3C SCXML 5.10.1): the SCXML processor (under its type URI
/// and `scxml`) at `#_scxml_<sessionid>`, and each other type at its
/// location prefix followed by the session id. Holds no JSON until asked:
/// with hundreds of thousands of sessions held, a built copy each was
/// ~1 KiB a session.
#[derive(Debug, Clone)]
pub struct IoProcessors {
    /// The session id every location ends with.
    pub session_id: Arc<str>,
    /// Other processor types → location prefix (shared by every session
    /// a host starts with the same options).
    pub others: Arc<std::collections::BTreeMap<String, String>>,
}

impl IoProcessors {
    /// `_ioprocessors` as JSON: `{"<SCXML type URI>": {"location":
    /// "#_scxml_<id>"}, "scxml": {...}, "<type>": {"location":
    /// "<prefix><id>"}, ...}`.
    pub fn to_json(&self) -> Value {
        let mut io = serde_json::Map::new();
        let scxml = serde_json::json!({ "location": format!("#_scxml_{}", self.session_id) });
        io.insert(crate::model::SCXML_PROCESSOR.to_string(), scxml.clone());
        io.insert("scxml".to_string(), scxml);
        for (kind, prefix) in self.others.iter() {
            let location = format!("{prefix}{}", self.session_id);
            io.insert(kind.clone(), serde_json::json!({ "location": location }));
        }
        Value::Object(io)
    }
}

/// What the interpreter needs from a data model.
pub trait DataModel {
    /// Sets `_sessionid`, `_name` and `_ioprocessors` (read-only).
    fn set_system_variables(&mut self, vars: &SystemVariables) -> DmResult<()>;
    /// Declares a variable and gives it its initial value.
    fn declare(&mut self, name: &str, value: &InitialValue) -> DmResult<()>;
    /// Whether `name` may become a new global variable from outside the
    /// document (a start parameter no `<data>` declares): a plain
    /// identifier that names nothing yet, so that it can neither shadow
    /// a built-in (`JSON`, `Object`, `__proto__`, …) nor a system or
    /// platform variable. By default any name may.
    fn is_free_name(&mut self, name: &str) -> bool {
        let _ = name;
        true
    }
    /// Evaluates a condition to a boolean.
    fn eval_cond(&mut self, expr: ExprId) -> DmResult<bool>;
    /// Evaluates an expression to data (`None` for undefined).
    fn eval_value(&mut self, expr: ExprId) -> DmResult<Option<Value>>;
    /// Evaluates an expression and converts the result to a string.
    fn eval_string(&mut self, expr: ExprId) -> DmResult<String>;
    /// Evaluates a location and returns its current value as data.
    fn eval_location(&mut self, location: ExprId) -> DmResult<Option<Value>> {
        self.eval_value(location)
    }
    /// `<assign location expr>`: evaluates and stores without leaving the model.
    fn assign_expr(&mut self, location: ExprId, expr: ExprId) -> DmResult<()>;
    /// Stores a data value at a location.
    fn assign_value(&mut self, location: ExprId, value: &InitialValue) -> DmResult<()>;
    /// Evaluates expression text that is not part of the document's
    /// expression table (custom action attributes); compiled once per text.
    fn eval_text(&mut self, source: &str) -> DmResult<Option<Value>>;
    /// Runs the server's prelude (the platform's object model, before the
    /// session's data): like [`DataModel::eval_text`], and the only time
    /// shared constants (`__orsShared`) may be made.
    fn eval_prelude(&mut self, source: &str) -> DmResult<()> {
        self.eval_text(source).map(|_| ())
    }
    /// The prelude for a session about to be restored from a snapshot: a
    /// model may skip running it when it already knows what the prelude
    /// gives besides data (see the ECMAScript model's prelude record).
    fn restore_prelude(&mut self, source: &str) -> DmResult<()> {
        self.eval_prelude(source)
    }
    /// Stores a data value at a location given as text (custom actions).
    fn assign_text(&mut self, location: &str, value: &InitialValue) -> DmResult<()>;
    /// Runs a `<script>` body.
    fn run_script(&mut self, script: ExprId) -> DmResult<()>;
    /// Starts a `<foreach>`: evaluates the array, keeps a shallow copy and
    /// returns its length.
    fn foreach_begin(&mut self, array: ExprId, item: &str, index: Option<&str>) -> DmResult<usize>;
    /// Sets the item (and index) variables to iteration `i`.
    fn foreach_step(&mut self, item: &str, index: Option<&str>, i: usize) -> DmResult<()>;
    /// Drops the copy made by the matching `foreach_begin`.
    fn foreach_end(&mut self);
    /// Sets `_event` for the event about to be processed.
    fn set_event(&mut self, event: &Event) -> DmResult<()>;
    /// Forgets the event `_event` reads, once the session has nothing
    /// left to process: `_event` is undefined until the next event, as in
    /// a session woken from the store (snapshots never held it), and an
    /// idle session keeps no copy of its last event's data. Models that
    /// keep no event need do nothing.
    fn release_event(&mut self) {}
    /// Tells the model a state joined the configuration (for `In()`).
    fn state_entered(&mut self, state: StateId);
    /// Tells the model a state left the configuration (for `In()`).
    fn state_exited(&mut self, state: StateId);
    /// Captures the variables as JSON (tagged where JSON cannot hold them).
    fn snapshot(&mut self) -> DmResult<Value>;
    /// [`DataModel::snapshot`] as JSON text, what the store keeps (a model
    /// may write it without building the `Value`).
    fn snapshot_text(&mut self) -> DmResult<String> {
        let value = self.snapshot()?;
        serde_json::to_string(&value).map_err(|e| DataModelError::new(e.to_string()))
    }
    /// Overwrites the variables from a snapshot.
    fn restore(&mut self, snapshot: &Value) -> DmResult<()>;
}

/// Builds the data model a document asked for.
pub fn create(doc: &Arc<Document>, limits: &ScriptLimits) -> Box<dyn DataModel> {
    match doc.datamodel {
        crate::model::DataModelKind::Ecmascript => {
            Box::new(shared::SharedEcmaScript::new(doc.clone(), limits))
        }
        crate::model::DataModelKind::Null => Box::new(null::NullDataModel::new(doc.clone())),
    }
}

/// Limits that stop a runaway script (it then fails with `error.execution`).
#[derive(Debug, Clone)]
pub struct ScriptLimits {
    /// Iterations one loop may run.
    pub loop_iterations: u64,
    /// Nested calls.
    pub recursion: usize,
    /// VM stack size (values).
    pub stack_size: usize,
    /// How deeply arrays and objects may nest in a variable when the
    /// session is captured (levels; a deeper value fails the snapshot).
    /// Kept under serde_json's 128-level reading limit.
    pub snapshot_depth: usize,
    /// The most a session's data model may take in a snapshot (bytes,
    /// approximate: strings count two bytes a code unit).
    pub snapshot_bytes: usize,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            loop_iterations: 1_000_000,
            recursion: 400,
            stack_size: 1024 * 1024,
            snapshot_depth: 100,
            snapshot_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Collapses runs of whitespace to one space and trims the ends (how the
/// Recommendation treats non-JSON text content).
pub fn normalize_space(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Interprets inline or fetched text content: XML when it starts with `<`,
/// JSON when it parses, otherwise whitespace-normalised text.
pub fn text_value(text: &str) -> InitialValue {
    if text.trim_start().starts_with('<') {
        return InitialValue::Xml(text.trim().to_string());
    }
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v) => InitialValue::Json(v),
        Err(_) => InitialValue::Text(normalize_space(text)),
    }
}

/// Turns a data model snapshot (the map of variables) into plain JSON for
/// people to read: tagged values (`{"$undefined": true}`, `{"$number":
/// "NaN"}`, `{"$date": ...}`, `{"$xml": ...}`) become `null`, strings and
/// dates, a shared constant (`{"$shared": name}`) its members, escaped `$$` keys lose their escape, and a shared object
/// (`{"$ref": n}`) is written out again where it recurs — `"[circular]"`
/// inside itself, and `"[…]"` once a variable's view has 100 000 values, so a
/// graph with 2^40 paths cannot make a view of that size.
pub fn plain_json(value: &Value) -> Value {
    let mut table: Vec<&Value> = Vec::new();
    let vars = match value {
        Value::Object(map) if tag_of(map).is_none() => Some(map),
        _ => None,
    };
    match vars {
        Some(map) => map.values().for_each(|v| number_objects(v, &mut table)),
        None => number_objects(value, &mut table),
    }
    let mut view = PlainView {
        table,
        open: Vec::new(),
        budget: VIEW_VALUES,
    };
    match vars {
        Some(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    view.budget = VIEW_VALUES;
                    (unescape_key(k).to_string(), view.render(v))
                })
                .collect(),
        ),
        None => view.render(value),
    }
}

/// Values a plain view writes out per variable.
const VIEW_VALUES: usize = 100_000;

/// The plain JSON of each shared constant made so far, by name (the
/// prelude is the same for every context of the process).
static SHARED_VIEWS: std::sync::LazyLock<
    std::sync::RwLock<std::collections::HashMap<String, Value>>,
> = std::sync::LazyLock::new(Default::default);

/// Records what a shared constant looks like, for [`plain_json`].
pub(crate) fn remember_shared_view(name: &str, value: Value) {
    let mut views = SHARED_VIEWS.write().unwrap_or_else(|e| e.into_inner());
    views.entry(name.to_string()).or_insert(value);
}

/// The plain JSON of a shared constant (or of an object inside one,
/// `name/key/…`), when this process has made it.
fn shared_view(path: &str) -> Option<Value> {
    let views = SHARED_VIEWS.read().unwrap_or_else(|e| e.into_inner());
    let mut parts = path.split('/');
    let mut value = views.get(parts.next()?)?;
    for key in parts {
        value = value.get(key)?;
    }
    Some(value.clone())
}

/// A tag's name, when `map` is a tagged value rather than an object.
fn tag_of(map: &serde_json::Map<String, Value>) -> Option<&str> {
    if map.len() != 1 {
        return None;
    }
    let key = map.keys().next()?.as_str();
    matches!(
        key,
        "$undefined" | "$number" | "$bigint" | "$xml" | "$date" | "$ref" | "$shared"
    )
    .then_some(key)
}

fn unescape_key(k: &str) -> &str {
    if k.starts_with("$$") { &k[1..] } else { k }
}

/// Numbers arrays and objects in the order the snapshot encoder did
/// (pre-order, tags excluded). Stored snapshots nest at most 128 levels
/// (serde_json's limit when they are read), which bounds the recursion.
fn number_objects<'v>(value: &'v Value, table: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => {
            table.push(value);
            items.iter().for_each(|v| number_objects(v, table));
        }
        Value::Object(map) if tag_of(map).is_none() => {
            table.push(value);
            map.values().for_each(|v| number_objects(v, table));
        }
        _ => {}
    }
}

struct PlainView<'v> {
    table: Vec<&'v Value>,
    /// Containers being written, innermost last.
    open: Vec<*const Value>,
    budget: usize,
}

impl<'v> PlainView<'v> {
    fn render(&mut self, value: &'v Value) -> Value {
        if self.budget == 0 {
            return Value::String("[…]".into());
        }
        self.budget -= 1;
        match value {
            Value::Array(items) => {
                self.open.push(value);
                let out = Value::Array(items.iter().map(|v| self.render(v)).collect());
                self.open.pop();
                out
            }
            Value::Object(map) => match tag_of(map) {
                Some("$undefined") => Value::Null,
                Some("$number" | "$bigint" | "$xml") => {
                    map.values().next().cloned().unwrap_or(Value::Null)
                }
                Some("$shared") => map
                    .values()
                    .next()
                    .and_then(Value::as_str)
                    .and_then(shared_view)
                    .unwrap_or(Value::Null),
                Some("$date") => match map.values().next() {
                    Some(v @ (Value::Number(_) | Value::String(_))) => v.clone(),
                    Some(other) => self.render(other),
                    None => Value::Null,
                },
                Some(_) => {
                    let target = map
                        .values()
                        .next()
                        .and_then(Value::as_u64)
                        .and_then(|n| self.table.get(usize::try_from(n).ok()?).copied());
                    match target {
                        Some(t) if self.open.contains(&(t as *const Value)) => {
                            Value::String("[circular]".into())
                        }
                        Some(t) => self.render(t),
                        None => Value::Null,
                    }
                }
                None => {
                    self.open.push(value);
                    let out = Value::Object(
                        map.iter()
                            .map(|(k, v)| (unescape_key(k).to_string(), self.render(v)))
                            .collect(),
                    );
                    self.open.pop();
                    out
                }
            },
            Value::Number(n) => match n.as_f64() {
                // ECMAScript numbers are doubles; whole ones read better as integers.
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    Value::from(f as i64)
                }
                _ => value.clone(),
            },
            other => other.clone(),
        }
    }
}
