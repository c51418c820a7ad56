//! ECMAScript contexts shared by the sessions of one document on one
//! thread. Creating a boa context costs about half a millisecond and a few
//! hundred KiB (all the built-in objects of a realm); a session instead
//! keeps only its own variables, and they are swapped into the shared
//! context's global object when it runs. The swap is free while the same
//! session keeps running, and compiled expressions are shared too.
//!
//! Sessions of one document on one thread share the built-in objects: a
//! script that changes `Array.prototype` changes it for its siblings.
//! Documents whose scripts declare `let`, `const` or `class` at any level
//! get a context of their own, since global lexical declarations cannot be
//! repeated in one realm.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use boa_engine::{JsString, JsValue};
use serde_json::Value;

use super::ecmascript::EcmaScriptDataModel;
use super::{DataModel, DataModelError, DmResult, InitialValue, ScriptLimits, SystemVariables};
use crate::model::Event;
use crate::model::{Document, ExprId, ExprKind, StateId, StateSet};

/// What a session owns while its variables are not installed.
#[derive(Default)]
pub struct SessionScope {
    /// The session's variables while another session's are installed,
    /// sorted by name.
    vars: Vec<(JsString, JsValue)>,
    system: Option<SystemVariables>,
    /// The session's `_ioprocessors` object while another session is
    /// installed, if a script has read it.
    io: Option<JsValue>,
    event: Option<Event>,
}

thread_local! {
    static ENGINES: RefCell<HashMap<usize, Weak<RefCell<EcmaScriptDataModel>>>> =
        RefCell::new(HashMap::new());
    /// [`shareable`]'s answer per document (it reads the whole text).
    static SHAREABLE: RefCell<HashMap<usize, (std::sync::Weak<Document>, bool)>> =
        RefCell::new(HashMap::new());
}

/// [`shareable`], asked once per document and thread.
fn shareable_cached(doc: &Arc<Document>) -> bool {
    let key = Arc::as_ptr(doc) as usize;
    SHAREABLE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((weak, answer)) = cache.get(&key)
            && weak.upgrade().is_some_and(|d| Arc::ptr_eq(&d, doc))
        {
            return *answer;
        }
        cache.retain(|_, (weak, _)| weak.strong_count() > 0);
        let answer = shareable(doc);
        cache.insert(key, (Arc::downgrade(doc), answer));
        answer
    })
}

/// Whether a document's scripts can run in a shared context: none
/// declares with `let`, `const` or `class` (bindings the context would
/// keep), and nothing in it may change a built-in (see
/// [`may_patch_builtins`]) — a change one session made would be seen by
/// every other session of the document on that worker.
pub fn shareable(doc: &Document) -> bool {
    let declares = doc
        .exprs
        .iter()
        .filter(|e| e.kind == ExprKind::Script)
        .any(|e| {
            e.source
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .any(|w| matches!(w, "let" | "const" | "class"))
        });
    // A location is assigned to by the data model itself (`<assign
    // location="Math.random">`).
    let names_builtin = |e: &crate::model::Expr| {
        let first = e
            .source
            .trim_start()
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .next()
            .unwrap_or("");
        e.kind == ExprKind::Location && is_builtin(first)
    };
    let patches = doc
        .exprs
        .iter()
        .any(|e| names_builtin(e) || may_patch_builtins(&e.source))
        || doc.source.as_deref().is_some_and(may_patch_builtins);
    !declares && !patches
}

/// Whether `word` names a built-in global a script could replace or
/// change (a `match`: the scan below asks it of every word of every
/// script, and of the document's whole text).
fn is_builtin(word: &str) -> bool {
    matches!(
        word,
        "Object"
            | "Array"
            | "String"
            | "Number"
            | "Boolean"
            | "Math"
            | "JSON"
            | "Date"
            | "RegExp"
            | "Error"
            | "TypeError"
            | "RangeError"
            | "SyntaxError"
            | "Symbol"
            | "Promise"
            | "Map"
            | "Set"
            | "WeakMap"
            | "WeakSet"
            | "Intl"
            | "BigInt"
            | "ArrayBuffer"
            | "DataView"
            | "parseInt"
            | "parseFloat"
            | "isNaN"
            | "isFinite"
            | "encodeURI"
            | "encodeURIComponent"
            | "decodeURI"
            | "decodeURIComponent"
            | "escape"
            | "unescape"
            | "In"
            | "undefined"
            | "NaN"
            | "Infinity"
    )
}

/// Whether `source` may change a built-in: it names a prototype or a
/// reflective door (`prototype`, `__proto__`, `defineProperty`,
/// `setPrototypeOf`, `globalThis`, `eval`, `Function`, `Reflect`,
/// `Proxy`, `constructor`), or assigns to a built-in global or a member
/// of one (`JSON = …`, `Math.random = …`, `Array.isArray += …`). Errs
/// on the side of yes: the price of a false yes is a context of the
/// document's own.
pub fn may_patch_builtins(source: &str) -> bool {
    let bytes = source.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut i = 0;
    while i < bytes.len() {
        if !is_word(bytes[i]) || (i > 0 && is_word(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word(bytes[i]) {
            i += 1;
        }
        let word = &source[start..i];
        if matches!(
            word,
            "prototype"
                | "__proto__"
                | "defineProperty"
                | "defineProperties"
                | "setPrototypeOf"
                | "globalThis"
                | "eval"
                | "Function"
                | "Reflect"
                | "Proxy"
                | "constructor"
        ) {
            return true;
        }
        if !is_builtin(word) || source[..start].trim_end().ends_with('.') {
            continue;
        }
        // A built-in global, perhaps followed by `.name` or `[…]`, then
        // an assignment operator?
        let mut j = i;
        loop {
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            match bytes.get(j) {
                Some(b'.') => {
                    j += 1;
                    while j < bytes.len() && (bytes[j].is_ascii_whitespace() || is_word(bytes[j])) {
                        j += 1;
                    }
                }
                Some(b'[') => {
                    while j < bytes.len() && bytes[j] != b']' {
                        j += 1;
                    }
                    j += 1;
                }
                _ => break,
            }
        }
        let rest = &bytes[j.min(bytes.len())..];
        let assigns = match rest {
            [b'=', b'=' | b'>', ..] => false,
            [b'=', ..] => true,
            [
                b'+' | b'-' | b'*' | b'/' | b'%' | b'&' | b'|' | b'^',
                b'=',
                ..,
            ] => true,
            [b'+', b'+', ..] | [b'-', b'-', ..] => true,
            _ => false,
        };
        if assigns {
            return true;
        }
    }
    false
}

/// A session's ECMAScript data model over a (possibly shared) context.
pub struct SharedEcmaScript {
    engine: Rc<RefCell<EcmaScriptDataModel>>,
    scope: Rc<RefCell<SessionScope>>,
    /// The session's configuration as `In()` sees it; kept here so that
    /// entering and exiting states never has to install the session.
    active: Rc<RefCell<StateSet>>,
}

impl SharedEcmaScript {
    /// The data model for a new session of `doc`: the thread's shared
    /// context for that document when it can be shared, else a new one.
    pub fn new(doc: Arc<Document>, limits: &ScriptLimits) -> SharedEcmaScript {
        let engine = if shareable_cached(&doc) {
            let key = Arc::as_ptr(&doc) as usize;
            ENGINES.with(|engines| {
                let mut engines = engines.borrow_mut();
                engines.retain(|_, w| w.strong_count() > 0);
                match engines.get(&key).and_then(Weak::upgrade) {
                    Some(e) => e,
                    None => {
                        let e =
                            Rc::new(RefCell::new(EcmaScriptDataModel::new(doc.clone(), limits)));
                        engines.insert(key, Rc::downgrade(&e));
                        e
                    }
                }
            })
        } else {
            Rc::new(RefCell::new(EcmaScriptDataModel::new(doc.clone(), limits)))
        };
        SharedEcmaScript {
            engine,
            scope: Rc::new(RefCell::new(SessionScope::default())),
            active: Rc::new(RefCell::new(StateSet::with_capacity(doc.states.len()))),
        }
    }

    /// Borrows the context with this session's variables installed.
    /// Whether `engine` (this session's context) has this session's
    /// variables installed now.
    fn owns(&self, engine: &EcmaScriptDataModel) -> bool {
        let mine = Rc::downgrade(&self.scope);
        engine.owner.as_ref().is_some_and(|o| o.ptr_eq(&mine))
    }

    fn installed(&self) -> std::cell::RefMut<'_, EcmaScriptDataModel> {
        let mut engine = self.engine.borrow_mut();
        if self.owns(&engine) {
            return engine;
        }
        // Save the previous owner's variables (or drop a finished one's).
        let previous = engine.owner.take().and_then(|w| w.upgrade());
        let theirs = engine.read_globals();
        let mut me = self.scope.borrow_mut();
        let my_vars = std::mem::take(&mut me.vars);
        engine.switch_globals(&theirs, my_vars);
        match previous {
            Some(prev) => {
                let mut prev = prev.borrow_mut();
                prev.vars = theirs;
                prev.io = engine.take_io();
                engine.swap_event(&mut prev.event);
            }
            None => {
                engine.take_io();
                engine.swap_event(&mut None);
            }
        }
        let me = &mut *me;
        if let Some(system) = &me.system {
            let _ = engine.install_system_variables(system, &mut me.io);
        }
        engine.set_active(self.active.clone());
        engine.swap_event(&mut me.event);
        engine.owner = Some(Rc::downgrade(&self.scope));
        engine
    }

    /// Whether this session's context is shared with other sessions.
    pub fn is_shared(&self) -> bool {
        Rc::strong_count(&self.engine) > 1 || Rc::weak_count(&self.engine) > 0
    }

    /// Compilations done by the underlying context.
    pub fn compilations(&self) -> u64 {
        self.engine.borrow().compilations()
    }
}

impl DataModel for SharedEcmaScript {
    fn set_system_variables(&mut self, vars: &SystemVariables) -> DmResult<()> {
        {
            let mut scope = self.scope.borrow_mut();
            scope.system = Some(vars.clone());
            scope.io = None;
        }
        let mut engine = self.installed();
        let mut scope = self.scope.borrow_mut();
        engine.install_system_variables(vars, &mut scope.io)
    }
    fn declare(&mut self, name: &str, value: &InitialValue) -> DmResult<()> {
        self.installed().declare(name, value)
    }
    fn is_free_name(&mut self, name: &str) -> bool {
        self.installed().is_free_name(name)
    }
    fn eval_cond(&mut self, expr: ExprId) -> DmResult<bool> {
        self.installed().eval_cond(expr)
    }
    fn eval_value(&mut self, expr: ExprId) -> DmResult<Option<Value>> {
        self.installed().eval_value(expr)
    }
    fn eval_string(&mut self, expr: ExprId) -> DmResult<String> {
        self.installed().eval_string(expr)
    }
    fn eval_location(&mut self, location: ExprId) -> DmResult<Option<Value>> {
        self.installed().eval_location(location)
    }
    fn assign_expr(&mut self, location: ExprId, expr: ExprId) -> DmResult<()> {
        self.installed().assign_expr(location, expr)
    }
    fn assign_value(&mut self, location: ExprId, value: &InitialValue) -> DmResult<()> {
        self.installed().assign_value(location, value)
    }
    fn eval_text(&mut self, source: &str) -> DmResult<Option<Value>> {
        self.installed().eval_text(source)
    }
    fn eval_prelude(&mut self, source: &str) -> DmResult<()> {
        self.installed().eval_prelude(source)
    }
    fn restore_prelude(&mut self, source: &str) -> DmResult<()> {
        self.installed().restore_prelude(source)
    }
    fn assign_text(&mut self, location: &str, value: &InitialValue) -> DmResult<()> {
        self.installed().assign_text(location, value)
    }
    fn run_script(&mut self, script: ExprId) -> DmResult<()> {
        self.installed().run_script(script)
    }
    fn foreach_begin(&mut self, array: ExprId, item: &str, index: Option<&str>) -> DmResult<usize> {
        self.installed().foreach_begin(array, item, index)
    }
    fn foreach_step(&mut self, item: &str, index: Option<&str>, i: usize) -> DmResult<()> {
        self.installed().foreach_step(item, index, i)
    }
    fn foreach_end(&mut self) {
        self.installed().foreach_end()
    }
    fn set_event(&mut self, event: &Event) -> DmResult<()> {
        self.installed().set_event(event)
    }
    /// Clears the context's current event while this session is
    /// installed, else the copy its scope keeps; never switches sessions.
    fn release_event(&mut self) {
        let mut engine = self.engine.borrow_mut();
        if self.owns(&engine) {
            engine.swap_event(&mut None);
        } else {
            self.scope.borrow_mut().event = None;
        }
    }
    fn state_entered(&mut self, state: StateId) {
        self.active.borrow_mut().insert(state);
    }
    fn state_exited(&mut self, state: StateId) {
        self.active.borrow_mut().remove(state);
    }
    /// [`DataModel::snapshot_text`] read back.
    fn snapshot(&mut self) -> DmResult<Value> {
        let text = self.snapshot_text()?;
        serde_json::from_str(&text)
            .map_err(|e| DataModelError::new(format!("the snapshot cannot be read back: {e}")))
    }
    /// A session whose variables are not installed is encoded from the
    /// copy it keeps, without switching the context to it.
    fn snapshot_text(&mut self) -> DmResult<String> {
        let mut engine = self.engine.borrow_mut();
        if self.owns(&engine) {
            return engine.snapshot_text();
        }
        let scope = self.scope.borrow();
        engine.snapshot_text_of(&scope.vars)
    }
    fn restore(&mut self, snapshot: &Value) -> DmResult<()> {
        self.installed().restore(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::may_patch_builtins;

    #[test]
    fn changes_to_builtins_are_seen_and_plain_use_is_not() {
        for patch in [
            "Object.prototype.polluted = 1",
            "x.__proto__.y = 2",
            "JSON = null",
            "Math.random = function () { return 4; }",
            "Array .isArray= 1",
            "Math['ra' + 'ndom'] = 1",
            "String.x += 'y'",
            "Object.defineProperty(Object, 'k', {})",
            "globalThis.JSON = 1",
            "eval(text)",
            "new Function('return this')().JSON = 1",
            "({}).constructor.assign = 1",
            "Number.EPSILON++",
        ] {
            assert!(may_patch_builtins(patch), "{patch}");
        }
        for plain in [
            "JSON.stringify(x) == '{}'",
            "var total = Math.max(a, b); x.JSON = 1",
            "if (Array.isArray(list) && list.length === 0) { n = Number(s); }",
            "Math.PI >= 3 ? 'pi' : 'no'",
            "var f = (Date) => Date; var t = Date.now();",
            "parseInt(x, 10) === 3",
            "mathematics = 1; Objective = 2",
        ] {
            assert!(!may_patch_builtins(plain), "{plain}");
        }
    }
}
