//! The data model's snapshot encoding: ECMAScript values to JSON and back,
//! without recursion (an explicit stack of frames), within a depth and a
//! size budget, and with shared references kept shared.
//!
//! Encoding: JSON where a value fits; `{"$undefined": true}`,
//! `{"$number": "NaN"|"inf"|"-inf"}`, `{"$bigint": "123"}`,
//! `{"$date": ms}` and `{"$xml": text}` for the rest; functions and symbols
//! are dropped. Every array and plain object is numbered in the order the
//! encoder first meets it (pre-order, across all variables of one
//! snapshot); meeting it again writes `{"$ref": n}`, so an object graph
//! with shared parts stays the size of the graph, not of its unfolding,
//! and cycles are captured rather than refused. The decoder numbers the
//! objects it creates in the same order. Keys starting with `$` are
//! escaped with a second `$`.

use std::io::Write as _;
use std::rc::Rc;

use boa_engine::object::builtins::{JsArray, JsDate};
use boa_engine::property::PropertyKey;
use boa_engine::{Context, JsObject, JsString, JsValue, js_string};
use serde_json::{Map, Value};

use rustc_hash::FxHashMap;

use super::{SharedConstants, js_err, unescape_key, xml_to_js};
use crate::datamodel::{DataModelError, DmResult};

/// The bounds one snapshot must keep (from [`crate::datamodel::ScriptLimits`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SnapshotBudget {
    /// Nesting of arrays and objects inside one variable.
    pub depth: usize,
    /// Approximate encoded size of the whole data model, in bytes.
    pub bytes: usize,
}

/// One snapshot's encoding state: the JSON text written so far, the
/// objects met so far and the bytes spent.
pub(super) struct Encoder {
    budget: SnapshotBudget,
    refs: FxHashMap<JsObject, usize>,
    spent: usize,
    constants: Rc<SharedConstants>,
    /// Whether the context has made a DOM, so that an object may be one.
    dom: bool,
    /// The text, written straight as JSON (no `Value` tree in between).
    out: Vec<u8>,
}

/// A container being encoded; its opening bracket is written.
enum Frame {
    Array {
        array: JsArray,
        len: u64,
        next: u64,
    },
    Object {
        object: JsObject,
        keys: std::vec::IntoIter<PropertyKey>,
        /// Whether no member has been written yet.
        first: bool,
    },
}

/// Whether a value is left out of a snapshot (functions and symbols).
fn is_dropped(value: &JsValue) -> bool {
    value.is_symbol() || value.as_object().is_some_and(|o| o.is_callable())
}

impl Encoder {
    /// An encoder for one snapshot of a context with these shared
    /// constants; `dom` says whether the context has made any DOM.
    pub(super) fn new(
        budget: SnapshotBudget,
        constants: Rc<SharedConstants>,
        dom: bool,
    ) -> Encoder {
        Encoder {
            budget,
            refs: FxHashMap::default(),
            spent: 0,
            constants,
            dom,
            out: Vec::with_capacity(512),
        }
    }

    fn spend(&mut self, bytes: usize) -> DmResult<()> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > self.budget.bytes {
            return Err(DataModelError::new(format!(
                "the data model is larger than the snapshot limit of {} bytes",
                self.budget.bytes
            )));
        }
        Ok(())
    }

    /// Encodes a map of variables (sorted by name, as the context gives
    /// them) as one JSON object; functions and symbols are left out.
    pub(super) fn encode_variables(
        mut self,
        vars: &[(JsString, JsValue)],
        ctx: &mut Context,
    ) -> DmResult<String> {
        self.out.push(b'{');
        let mut first = true;
        for (name, value) in vars {
            if is_dropped(value) {
                if value.is_symbol() {
                    tracing::warn!(variable = %name.to_std_string_escaped(),
                        "value cannot be captured in a snapshot; dropped");
                }
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.write_name(name);
            self.encode(value, ctx)?;
        }
        self.out.push(b'}');
        String::from_utf8(self.out)
            .map_err(|_| DataModelError::new("the snapshot encoder wrote text that is not UTF-8"))
    }

    /// Encodes one value (not a dropped one) at the end of the text.
    pub(super) fn encode(&mut self, value: &JsValue, ctx: &mut Context) -> DmResult<()> {
        let mut stack: Vec<Frame> = Vec::new();
        if let Some(frame) = self.step(value, ctx)? {
            stack.push(frame);
        }
        while let Some(top) = stack.last_mut() {
            let member = match top {
                Frame::Array { array, len, next } => {
                    if *next < *len {
                        let v = array.get(*next, ctx).map_err(|e| js_err(e, ctx))?;
                        if *next > 0 {
                            self.out.push(b',');
                        }
                        *next += 1;
                        if is_dropped(&v) {
                            self.out.extend_from_slice(b"null");
                            continue;
                        }
                        Some(v)
                    } else {
                        self.out.push(b']');
                        None
                    }
                }
                Frame::Object {
                    object,
                    keys,
                    first,
                } => match next_member(object, keys, ctx)? {
                    Some((key, v)) => {
                        if !std::mem::take(first) {
                            self.out.push(b',');
                        }
                        self.write_key(&key);
                        Some(v)
                    }
                    None => {
                        self.out.push(b'}');
                        None
                    }
                },
            };
            match member {
                Some(v) => {
                    if let Some(frame) = self.step(&v, ctx)? {
                        if stack.len() >= self.budget.depth {
                            return Err(DataModelError::new(format!(
                                "a value nests deeper than the snapshot limit of {} levels",
                                self.budget.depth
                            )));
                        }
                        stack.push(frame);
                    }
                }
                None => {
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// Writes a member name (`$`-escaped) and its colon.
    fn write_name(&mut self, name: &JsString) {
        let text = str_of(name);
        let _ = if text.starts_with('$') {
            serde_json::to_writer(&mut self.out, &format!("${text}"))
        } else {
            serde_json::to_writer(&mut self.out, &*text)
        };
        self.out.push(b':');
    }

    /// Writes a member's key and its colon.
    fn write_key(&mut self, key: &PropertyKey) {
        match key {
            PropertyKey::String(s) => self.write_name(s),
            PropertyKey::Index(i) => {
                let _ = write!(self.out, "\"{}\":", i.get());
            }
            PropertyKey::Symbol(_) => {}
        }
    }

    /// Writes a tagged value, `{"tag":…}`, its member written by `body`.
    fn tag(&mut self, tag: &str, body: impl FnOnce(&mut Vec<u8>)) {
        self.out.extend_from_slice(b"{\"");
        self.out.extend_from_slice(tag.as_bytes());
        self.out.extend_from_slice(b"\":");
        body(&mut self.out);
        self.out.push(b'}');
    }

    /// Writes a value that is not a container, or opens a container
    /// (writing its bracket) and returns its frame.
    fn step(&mut self, value: &JsValue, ctx: &mut Context) -> DmResult<Option<Frame>> {
        use boa_engine::JsVariant as V;
        match value.variant() {
            V::Undefined => {
                self.spend(16)?;
                self.tag("$undefined", |o| o.extend_from_slice(b"true"));
            }
            V::Null => {
                self.spend(4)?;
                self.out.extend_from_slice(b"null");
            }
            V::Boolean(b) => {
                self.spend(5)?;
                self.out
                    .extend_from_slice(if b { b"true" } else { b"false" });
            }
            V::Integer32(i) => {
                self.spend(8)?;
                let _ = write!(self.out, "{i}");
            }
            V::Float64(f) if f.is_finite() => {
                self.spend(8)?;
                let _ = serde_json::to_writer(&mut self.out, &f);
            }
            V::Float64(f) => {
                self.spend(16)?;
                self.tag("$number", |o| {
                    let _ = serde_json::to_writer(o, &f.to_string());
                });
            }
            V::String(s) => {
                self.spend(s.len().saturating_mul(2).saturating_add(2))?;
                let _ = serde_json::to_writer(&mut self.out, &*str_of(&s));
            }
            V::BigInt(b) => {
                let text = b.to_string();
                self.spend(text.len() + 12)?;
                self.tag("$bigint", |o| {
                    let _ = serde_json::to_writer(o, &text);
                });
            }
            // Dropped before they get here; `null` keeps the text whole.
            V::Symbol(_) => self.out.extend_from_slice(b"null"),
            V::Object(obj) => return self.step_object(value, obj, ctx),
        }
        Ok(None)
    }

    fn step_object(
        &mut self,
        value: &JsValue,
        obj: JsObject,
        ctx: &mut Context,
    ) -> DmResult<Option<Frame>> {
        if obj.is_callable() {
            self.out.extend_from_slice(b"null");
            return Ok(None);
        }
        if let Some(&n) = self.refs.get(&obj) {
            self.spend(12)?;
            self.tag("$ref", |o| {
                let _ = write!(o, "{n}");
            });
            return Ok(None);
        }
        if let Some(name) = self.constants.name_of(&obj) {
            self.spend(name.len() + 12)?;
            self.tag("$shared", |o| {
                let _ = serde_json::to_writer(o, &*name);
            });
            return Ok(None);
        }
        if self.dom
            && obj
                .has_property(js_string!("__orsDom"), ctx)
                .unwrap_or(false)
        {
            let to_xml = obj
                .get(js_string!("toXML"), ctx)
                .map_err(|e| js_err(e, ctx))?;
            if let Some(f) = to_xml.as_object().filter(|f| f.is_callable()) {
                let xml = f
                    .call(value, &[], ctx)
                    .and_then(|v| v.to_string(ctx))
                    .map_err(|e| js_err(e, ctx))?
                    .to_std_string_escaped();
                self.spend(xml.len() + 10)?;
                self.tag("$xml", |o| {
                    let _ = serde_json::to_writer(o, &xml);
                });
                return Ok(None);
            }
        }
        // (Asked first: `JsDate::from_object` makes an error object for
        // every object that is not a date.)
        if obj.is::<boa_engine::builtins::date::Date>()
            && let Ok(date) = JsDate::from_object(obj.clone())
        {
            let t = date.get_time(ctx).map_err(|e| js_err(e, ctx))?;
            self.spend(16)?;
            let t = t.as_number().filter(|t| t.is_finite());
            self.tag("$date", |o| match t {
                Some(t) => {
                    let _ = serde_json::to_writer(o, &t);
                }
                None => o.extend_from_slice(b"null"),
            });
            return Ok(None);
        }
        self.spend(2)?;
        let n = self.refs.len();
        self.refs.insert(obj.clone(), n);
        if obj.is_array() {
            let array = JsArray::from_object(obj).map_err(|e| js_err(e, ctx))?;
            let len = array.length(ctx).map_err(|e| js_err(e, ctx))?;
            self.out.push(b'[');
            Ok(Some(Frame::Array {
                array,
                len,
                next: 0,
            }))
        } else {
            let keys = obj.own_property_keys(ctx).map_err(|e| js_err(e, ctx))?;
            self.out.push(b'{');
            Ok(Some(Frame::Object {
                object: obj,
                keys: keys.into_iter(),
                first: true,
            }))
        }
    }
}

/// The next enumerable string-keyed member of an object whose value a
/// snapshot keeps, with its key; `None` when there is none left.
fn next_member(
    object: &JsObject,
    keys: &mut std::vec::IntoIter<PropertyKey>,
    ctx: &mut Context,
) -> DmResult<Option<(PropertyKey, JsValue)>> {
    // An ordinary object's own data property is its value: one lookup
    // instead of two. Accessors, and objects whose [[Get]] is their own
    // (proxies, arguments, ...), go through [[Get]].
    let ordinary = object.is_ordinary();
    for k in keys.by_ref() {
        if matches!(k, PropertyKey::Symbol(_)) {
            continue;
        }
        let own = object.borrow().properties().get(&k);
        if own.as_ref().and_then(|d| d.enumerable()) == Some(false) {
            continue;
        }
        let data = own
            .filter(|_| ordinary)
            .and_then(|d| d.value().cloned().filter(|_| d.is_data_descriptor()));
        let v = match data {
            Some(v) => v,
            None => object.get(k.clone(), ctx).map_err(|e| js_err(e, ctx))?,
        };
        if is_dropped(&v) {
            continue;
        }
        return Ok(Some((k, v)));
    }
    Ok(None)
}

/// A string's text, borrowed when it is ASCII (most are).
fn str_of(s: &JsString) -> std::borrow::Cow<'_, str> {
    use boa_engine::string::JsStrVariant;
    match s.as_str().variant() {
        JsStrVariant::Latin1(bytes) if bytes.is_ascii() => match std::str::from_utf8(bytes) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => std::borrow::Cow::Owned(std_string(s)),
        },
        _ => std::borrow::Cow::Owned(std_string(s)),
    }
}

/// A string's text; lone surrogates written as `\\uXXXX` (as
/// `to_std_string_escaped` does), without its character-by-character
/// formatting for the common case of ASCII or valid UTF-16.
pub(super) fn std_string(s: &JsString) -> String {
    use boa_engine::string::JsStrVariant;
    match s.as_str().variant() {
        JsStrVariant::Latin1(bytes) if bytes.is_ascii() => {
            String::from_utf8(bytes.to_vec()).unwrap_or_default()
        }
        JsStrVariant::Latin1(bytes) => bytes.iter().map(|&b| char::from(b)).collect(),
        JsStrVariant::Utf16(units) => {
            String::from_utf16(units).unwrap_or_else(|_| s.to_std_string_escaped())
        }
    }
}

/// One snapshot's decoding state: the objects created so far, numbered as
/// the encoder numbered them.
pub(super) struct Decoder {
    budget: SnapshotBudget,
    objects: Vec<JsObject>,
    constants: Rc<SharedConstants>,
}

/// A container being decoded.
enum DecodeFrame<'a> {
    Array {
        items: std::slice::Iter<'a, Value>,
        array: JsArray,
    },
    Object {
        entries: serde_json::map::Iter<'a>,
        object: JsObject,
        key: &'a str,
    },
}

enum DecodeStep<'a> {
    Done(JsValue),
    Open(DecodeFrame<'a>),
}

impl<'a> DecodeFrame<'a> {
    fn next(&mut self) -> Option<&'a Value> {
        match self {
            DecodeFrame::Array { items, .. } => items.next(),
            DecodeFrame::Object { entries, key, .. } => {
                let (k, v) = entries.next()?;
                *key = unescape_key(k);
                Some(v)
            }
        }
    }

    fn accept(&mut self, value: JsValue, ctx: &mut Context) -> DmResult<()> {
        match self {
            DecodeFrame::Array { array, .. } => {
                array.push(value, ctx).map_err(|e| js_err(e, ctx))?;
            }
            DecodeFrame::Object { object, key, .. } => {
                object
                    .create_data_property_or_throw(JsString::from(*key), value, ctx)
                    .map_err(|e| js_err(e, ctx))?;
            }
        }
        Ok(())
    }

    fn value(&self) -> JsValue {
        match self {
            DecodeFrame::Array { array, .. } => array.clone().into(),
            DecodeFrame::Object { object, .. } => object.clone().into(),
        }
    }
}

impl Decoder {
    /// A decoder for one snapshot into a context with these shared
    /// constants.
    pub(super) fn new(budget: SnapshotBudget, constants: Rc<SharedConstants>) -> Decoder {
        Decoder {
            budget,
            objects: Vec::new(),
            constants,
        }
    }

    /// Decodes one variable's value.
    pub(super) fn decode(&mut self, value: &Value, ctx: &mut Context) -> DmResult<JsValue> {
        let mut stack: Vec<DecodeFrame<'_>> = Vec::new();
        match self.step(value, ctx)? {
            DecodeStep::Done(v) => return Ok(v),
            DecodeStep::Open(frame) => stack.push(frame),
        }
        loop {
            let top = stack.last_mut().expect("a frame is open");
            match top.next() {
                Some(member) => match self.step(member, ctx)? {
                    DecodeStep::Done(v) => top.accept(v, ctx)?,
                    DecodeStep::Open(frame) => {
                        // The decoder takes a little more than the encoder
                        // gives, for snapshots written with other limits.
                        if stack.len() >= self.budget.depth.saturating_mul(2).max(256) {
                            return Err(DataModelError::new(
                                "a snapshot value nests too deeply to restore",
                            ));
                        }
                        stack.push(frame);
                    }
                },
                None => {
                    let done = stack.pop().expect("a frame is open").value();
                    match stack.last_mut() {
                        Some(parent) => parent.accept(done, ctx)?,
                        None => return Ok(done),
                    }
                }
            }
        }
    }

    fn register(&mut self, object: JsObject) {
        self.objects.push(object);
    }

    fn step<'a>(&mut self, value: &'a Value, ctx: &mut Context) -> DmResult<DecodeStep<'a>> {
        let done = |v: JsValue| Ok(DecodeStep::Done(v));
        match value {
            Value::Object(map) if map.len() == 1 => {
                let (k, v) = map.iter().next().expect("one entry");
                match (k.as_str(), v) {
                    ("$undefined", _) => return done(JsValue::undefined()),
                    ("$shared", Value::String(name)) => {
                        return match self.constants.by_name(name) {
                            Some(object) => done(object.into()),
                            None => Err(DataModelError::new(format!(
                                "the snapshot names the shared constant '{name}', which this server's prelude does not make"
                            ))),
                        };
                    }
                    ("$number", Value::String(s)) => {
                        let f = match s.as_str() {
                            "inf" => f64::INFINITY,
                            "-inf" => f64::NEG_INFINITY,
                            _ => f64::NAN,
                        };
                        return done(JsValue::from(f));
                    }
                    ("$bigint", Value::String(s)) => {
                        if let Some(b) = boa_engine::JsBigInt::from_string(s) {
                            return done(JsValue::from(b));
                        }
                    }
                    ("$xml", Value::String(xml)) => {
                        return xml_to_js(xml, ctx)
                            .map(DecodeStep::Done)
                            .map_err(|e| js_err(e, ctx));
                    }
                    ("$date", t) => {
                        let t = t.as_f64().unwrap_or(f64::NAN);
                        let ctor = ctx.intrinsics().constructors().date().constructor();
                        return ctor
                            .construct(&[JsValue::from(t)], None, ctx)
                            .map(|d| DecodeStep::Done(d.into()))
                            .map_err(|e| js_err(e, ctx));
                    }
                    ("$ref", n) => {
                        let object = n
                            .as_u64()
                            .and_then(|n| self.objects.get(usize::try_from(n).ok()?))
                            .ok_or_else(|| {
                                DataModelError::new(format!(
                                    "a snapshot refers to object {n}, which it does not define"
                                ))
                            })?;
                        return done(object.clone().into());
                    }
                    _ => {}
                }
                Ok(self.open_object(map, ctx))
            }
            Value::Object(map) => Ok(self.open_object(map, ctx)),
            Value::Array(items) => {
                let array = JsArray::new(ctx).map_err(|e| js_err(e, ctx))?;
                self.register(array.clone().into());
                Ok(DecodeStep::Open(DecodeFrame::Array {
                    items: items.iter(),
                    array,
                }))
            }
            Value::Null => done(JsValue::null()),
            Value::Bool(b) => done(JsValue::from(*b)),
            Value::Number(n) => done(match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
                Some(i) => JsValue::from(i),
                None => JsValue::from(n.as_f64().unwrap_or(f64::NAN)),
            }),
            Value::String(s) => done(JsValue::from(JsString::from(s.as_str()))),
        }
    }

    fn open_object<'a>(
        &mut self,
        map: &'a Map<String, Value>,
        ctx: &mut Context,
    ) -> DecodeStep<'a> {
        let object = JsObject::with_object_proto(ctx.intrinsics());
        self.register(object.clone());
        DecodeStep::Open(DecodeFrame::Object {
            entries: map.iter(),
            object,
            key: "",
        })
    }
}
