//! The ORS platform modules as a server extension ([`Platform`]): each
//! action is one file under its module's folder, and [`Platform`]'s
//! `start` is the one table that lists them. Actions run inside a
//! macrostep; anything slow (HTTP, starting other sessions) is deferred to
//! the session's worker ([`defer`], [`request`]) and reports back with
//! `<module>.<action>.done` or `error.<module>.<action>` events carrying
//! the `requestid`. The helpers here (attribute evaluation, request
//! scaffolding) serve every extension's actions.
//!
//! Namespaces are accepted as the vendor documents print them
//! (`www.genesyslab.com/modules/session`) and as Composer writes them
//! (`http://www.genesyslab.com/modules/session`).

pub mod classification;
pub mod dialog;
pub mod enums;
pub mod session;
pub mod settings;
pub mod statistic;
pub mod ws;
pub mod zones;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::datamodel::InitialValue;
use crate::interpreter::{
    ActionError, ActionScope, CustomActionHandler, CustomActions, Event, EventKind,
};
use crate::model::CustomAction;
use crate::server::{Extension, ExtensionError, Plugged, ServerHandles, Sessions};

/// The ORS platform modules as an extension: `session`, `dialog`,
/// `classification`, `ws` and `statistic` actions, and the prelude pieces
/// that define their `_genesys` members, over the simulators
/// `[platform]` configures.
#[derive(Default)]
pub struct Platform {
    settings: settings::PlatformSettings,
}

impl Platform {
    /// The platform modules with these `[platform]` settings.
    pub fn new(settings: settings::PlatformSettings) -> Platform {
        Platform { settings }
    }

    /// The prelude pieces, in order: the routing enumerations, the
    /// `_genesys.session` helpers (zone table made from `now` on), the
    /// statistic functions, and the modules' (so far empty) roots.
    pub fn prelude_at(&self, now: jiff::Timestamp) -> Vec<String> {
        vec![
            enums::prelude(),
            session::helpers::prelude(&self.settings, now),
            statistic::prelude(&self.settings.statistics),
            "(function (G) { G.dialog = G.dialog || {}; G.ws = G.ws || {}; \
             G.classification = G.classification || {}; })(globalThis._genesys)"
                .to_string(),
        ]
    }
}

impl Extension for Platform {
    fn name(&self) -> &'static str {
        "ors-modules"
    }

    fn prelude(&self) -> Vec<String> {
        self.prelude_at(jiff::Timestamp::now())
    }

    fn start(
        &self,
        server: &ServerHandles,
        actions: &mut CustomActions,
    ) -> Result<Plugged, ExtensionError> {
        let s = Arc::new(server.clone());
        register(
            actions,
            "session",
            "fetch",
            Arc::new(session::fetch::Fetch(s.clone())),
        );
        register(
            actions,
            "session",
            "start",
            Arc::new(session::start::Start(s.clone())),
        );
        register(
            actions,
            "session",
            "terminate",
            Arc::new(session::terminate::Terminate(s.clone())),
        );
        register(
            actions,
            "session",
            "response",
            Arc::new(session::response::Response(s.clone())),
        );
        let d = Arc::new(dialog::Dialog::new(s.clone(), self.settings.dialog.clone()));
        register(
            actions,
            "dialog",
            "play",
            Arc::new(dialog::play::Play(d.clone())),
        );
        register(
            actions,
            "dialog",
            "collect",
            Arc::new(dialog::collect::Collect(d.clone())),
        );
        register(
            actions,
            "dialog",
            "playandcollect",
            Arc::new(dialog::playandcollect::PlayAndCollect(d.clone())),
        );
        register(
            actions,
            "dialog",
            "playsound",
            Arc::new(dialog::playsound::PlaySound(d.clone())),
        );
        register(
            actions,
            "dialog",
            "start",
            Arc::new(dialog::start::Start(d.clone())),
        );
        register(
            actions,
            "dialog",
            "runtreatments",
            Arc::new(dialog::runtreatments::RunTreatments(d.clone())),
        );
        register(actions, "dialog", "stop", Arc::new(dialog::stop::Stop(d)));
        register(
            actions,
            "classification",
            "classify",
            Arc::new(classification::classify::Classify(
                s.clone(),
                Arc::new(self.settings.classification.clone()),
            )),
        );
        register(
            actions,
            "ws",
            "invoke",
            Arc::new(ws::invoke::Invoke(
                s.clone(),
                Arc::new(self.settings.ws.clone()),
            )),
        );
        register(
            actions,
            "statistic",
            "subscribe",
            Arc::new(statistic::subscribe::Subscribe(
                s,
                Arc::new(self.settings.statistics.clone()),
            )),
        );
        Ok(Plugged::default())
    }
}

/// The namespace of an ORS module, without a scheme.
pub fn module_namespace(module: &str) -> String {
    format!("www.genesyslab.com/modules/{module}")
}

/// Registers a handler under both spellings of a module's namespace.
pub fn register(
    actions: &mut CustomActions,
    module: &str,
    name: &str,
    handler: Arc<dyn CustomActionHandler>,
) {
    let ns = module_namespace(module);
    actions.register(&ns, name, handler.clone());
    actions.register(&format!("http://{ns}"), name, handler);
}

/// An attribute's raw text.
pub fn attr<'a>(action: &'a CustomAction, name: &str) -> Option<&'a str> {
    action
        .attributes
        .iter()
        .find(|(k, _)| &**k == name)
        .map(|(_, v)| &**v)
}

/// Evaluates an attribute as an ECMAScript expression.
pub fn eval_attr(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    name: &str,
) -> Result<Option<Value>, ActionError> {
    match attr(action, name) {
        None => Ok(None),
        Some(src) => scope
            .datamodel
            .eval_text(src)
            .map_err(|e| ActionError::Attribute {
                attribute: format!("{name}=\"{src}\""),
                message: e.message,
            }),
    }
}

/// An attribute that is usually a bare word (`get`, `json`): taken
/// literally when it is one of `words`, evaluated otherwise.
pub fn word_attr(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    name: &str,
    words: &[&str],
) -> Result<Option<String>, ActionError> {
    match attr(action, name) {
        None => Ok(None),
        Some(raw) if words.iter().any(|w| w.eq_ignore_ascii_case(raw.trim())) => {
            Ok(Some(raw.trim().to_ascii_lowercase()))
        }
        Some(_) => Ok(eval_attr(scope, action, name)?.map(|v| value_text(&v).to_ascii_lowercase())),
    }
}

/// A value as text (strings without quotes).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `<param name expr|location>` children, evaluated.
pub fn eval_params(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
) -> Result<Map<String, Value>, ActionError> {
    let mut out = Map::new();
    for child in child_elements(&action.xml) {
        if child.name != "param" {
            continue;
        }
        let Some(name) = child.attr("name") else {
            return Err("<param> needs a 'name'".into());
        };
        let source = child.attr("expr").or_else(|| child.attr("location"));
        let value = match source {
            Some(src) => scope
                .datamodel
                .eval_text(src)
                .map_err(|e| format!("<param name=\"{name}\">: {}", e.message))?
                .unwrap_or(Value::Null),
            None => Value::Null,
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

/// A direct child element of a custom action, by local name.
pub struct ChildElement {
    /// Local name.
    pub name: String,
    /// Attributes by local name.
    pub attributes: Vec<(String, String)>,
}

impl ChildElement {
    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The direct children of the element serialized in `xml`.
pub fn child_elements(xml: &str) -> Vec<ChildElement> {
    elements_below(xml, false)
}

/// Makes a request id and stores it at the `requestid` location, if given.
pub fn assign_request_id(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    sessions: &Sessions,
) -> Result<String, ActionError> {
    let id = sessions.new_request_id();
    if let Some(location) = attr(action, "requestid") {
        scope
            .datamodel
            .assign_text(location, &InitialValue::Json(Value::String(id.clone())))
            .map_err(|e| format!("requestid=\"{location}\": {}", e.message))?;
    }
    Ok(id)
}

/// Hands `job` to the session's host to run after the macrostep; an error
/// when the host runs no deferred work (`ors run`).
pub fn defer(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    job: impl Future<Output = ()> + 'static,
) -> Result<(), ActionError> {
    scope
        .host
        .defer(Box::pin(job))
        .map_err(|_| ActionError::NeedsServer(action.name.to_string()))
}

/// Why an asynchronous action failed: the `error` and `message` of its
/// `error.<module>.<action>` event.
#[derive(Debug, Clone)]
pub struct Failure {
    /// A short code (`notfound`, `remote`, `timeout`, …).
    pub code: String,
    /// What happened.
    pub message: String,
}

impl Failure {
    /// A failure with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Runs an asynchronous action `name` (`session.start`, `gms.lookup`, …):
/// assigns a request id (stored at the `requestid` location), then
/// [`answer`]s with the future `work` makes from it.
pub fn request<Fut>(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    sessions: &Sessions,
    name: &'static str,
    data: Map<String, Value>,
    work: impl FnOnce(String) -> Fut,
) -> Result<(), ActionError>
where
    Fut: Future<Output = Result<Map<String, Value>, Failure>> + 'static,
{
    let requestid = assign_request_id(scope, action, sessions)?;
    let work = work(requestid.clone());
    answer(scope, action, sessions, name, requestid, data, work)
}

/// Defers `work` and answers the session with `<name>.done`
/// (`requestid`, `data`, and what `work` returns) or `error.<name>`
/// (`requestid`, `data`, `error`, `message`).
pub fn answer(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    sessions: &Sessions,
    name: &'static str,
    requestid: String,
    data: Map<String, Value>,
    work: impl Future<Output = Result<Map<String, Value>, Failure>> + 'static,
) -> Result<(), ActionError> {
    answer_then(
        scope,
        action,
        sessions,
        (name, requestid, data),
        work,
        |_| {},
    )
}

/// [`answer`], then `after(succeeded)` once the answer is posted (for
/// events that must follow it, such as `interaction.deleted` after a
/// redirect). `request` is the action's name, request id and data.
pub fn answer_then(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    sessions: &Sessions,
    request: (&'static str, String, Map<String, Value>),
    work: impl Future<Output = Result<Map<String, Value>, Failure>> + 'static,
    after: impl FnOnce(bool) + 'static,
) -> Result<(), ActionError> {
    let (name, requestid, data) = request;
    scope.requests.insert(
        requestid.clone(),
        crate::interpreter::PendingRequest {
            name: name.to_string(),
            data: data.clone(),
        },
    );
    let session = scope.session_id.to_string();
    let sessions = sessions.clone();
    let mut reply = Map::new();
    reply.insert("requestid".into(), Value::String(requestid));
    reply.extend(data);
    defer(scope, action, async move {
        let (event, succeeded) = match work.await {
            Ok(extra) => {
                reply.extend(extra);
                (result_event(&format!("{name}.done"), reply), true)
            }
            Err(f) => {
                tracing::info!(session = %session, action = name, error = %f.code,
                    message = %f.message, "an action failed");
                (
                    failure_event(&format!("error.{name}"), reply, &f.code, f.message),
                    false,
                )
            }
        };
        // A letter: an answer the server had when it stopped settles the
        // request after a restart instead of `interrupted`.
        sessions.post_durably(vec![(session, event)], Vec::new());
        after(succeeded);
    })
}

/// An external event with this name and data.
pub fn result_event(name: &str, data: Map<String, Value>) -> Event {
    let mut event = Event::new(name.to_string(), EventKind::External);
    event.data = Some(Value::Object(data));
    event
}

/// The document a `src`/`srcexpr` pair names (`srcexpr` evaluated).
pub fn src_attr(scope: &mut ActionScope<'_>, action: &CustomAction) -> Result<String, ActionError> {
    match eval_attr(scope, action, "srcexpr")? {
        Some(v) => Ok(value_text(&v)),
        None => attr(action, "src")
            .map(str::to_string)
            .ok_or_else(|| ActionError::Missing {
                element: action.name.to_string(),
                what: "'srcexpr' or 'src'".into(),
            }),
    }
}

/// An `error.<module>.<action>` event: `data` plus `error` and `message`.
pub fn failure_event(
    name: &str,
    mut data: Map<String, Value>,
    code: &str,
    message: String,
) -> Event {
    data.insert("error".into(), Value::String(code.to_string()));
    data.insert("message".into(), Value::String(message));
    result_event(name, data)
}

/// Every element below the root of `xml` (children, grandchildren, ...),
/// in document order.
pub fn descendant_elements(xml: &str) -> Vec<ChildElement> {
    elements_below(xml, true)
}

/// The elements below the root of `xml`: its children, or with `all` every
/// descendant, in document order.
fn elements_below(xml: &str, all: bool) -> Vec<ChildElement> {
    use quick_xml::events::Event as X;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    let mut out = Vec::new();
    let wanted = |depth: usize| depth == 1 || (all && depth > 1);
    loop {
        match reader.read_event() {
            Ok(X::Start(e)) => {
                if wanted(depth) {
                    out.push(child_element(&e));
                }
                depth += 1;
            }
            Ok(X::Empty(e)) => {
                if wanted(depth) {
                    out.push(child_element(&e));
                }
            }
            Ok(X::End(_)) => depth = depth.saturating_sub(1),
            Ok(X::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// An element's local name and unescaped attributes.
fn child_element(e: &quick_xml::events::BytesStart<'_>) -> ChildElement {
    ChildElement {
        name: e.local_name().as_ref().to_string(),
        attributes: e
            .attributes()
            .flatten()
            .map(|a| {
                let raw = a.value.to_string();
                let value = quick_xml::escape::unescape(&raw)
                    .map(|v| v.into_owned())
                    .unwrap_or(raw);
                (a.key.local_name().as_ref().to_string(), value)
            })
            .collect(),
    }
}

/// An element of a custom action's XML with its subtree (local names,
/// unescaped attributes), for actions whose children carry their own
/// children (`<dialog:play>` > `<dialog:prompts>` > `<dialog:prompt>`).
#[derive(Debug, Clone, Default)]
pub struct XmlElement {
    /// Local name.
    pub name: String,
    /// Attributes by local name, in document order.
    pub attributes: Vec<(String, String)>,
    /// Child elements in document order.
    pub children: Vec<XmlElement>,
}

impl XmlElement {
    /// An attribute's raw text.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every element below this one, in document order.
    pub fn descendants(&self) -> Vec<&XmlElement> {
        let mut out = Vec::new();
        let mut stack: Vec<&XmlElement> = self.children.iter().rev().collect();
        while let Some(e) = stack.pop() {
            out.push(e);
            stack.extend(e.children.iter().rev());
        }
        out
    }
}

/// The root element of `xml` with its subtree; `None` when `xml` holds no
/// element.
pub fn element_tree(xml: &str) -> Option<XmlElement> {
    use quick_xml::events::Event as X;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<XmlElement> = Vec::new();
    let mut root = None;
    let element = |e: &quick_xml::events::BytesStart<'_>| {
        let c = child_element(e);
        XmlElement {
            name: c.name,
            attributes: c.attributes,
            children: Vec::new(),
        }
    };
    loop {
        let done = match reader.read_event() {
            Ok(X::Start(e)) => {
                stack.push(element(&e));
                None
            }
            Ok(X::Empty(e)) => Some(element(&e)),
            Ok(X::End(_)) => stack.pop(),
            Ok(X::Eof) | Err(_) => break,
            Ok(_) => None,
        };
        if let Some(e) = done {
            match stack.last_mut() {
                Some(parent) => parent.children.push(e),
                None => {
                    root = Some(e);
                    break;
                }
            }
        }
    }
    root
}

/// Evaluates an attribute's text as an ECMAScript expression; a failure is
/// the ORS `invalidattribute` error naming `element:attribute` and the text.
pub fn eval_checked(
    scope: &mut ActionScope<'_>,
    element: &str,
    attribute: &str,
    source: Option<&str>,
) -> Result<Option<Value>, Failure> {
    let Some(src) = source else { return Ok(None) };
    scope.datamodel.eval_text(src).map_err(|e| {
        Failure::new(
            "invalidattribute",
            format!(
                "the attribute {element}:{attribute} has an invalid value ({src}): {}",
                e.message
            ),
        )
    })
}

/// The `invalidattribute` failure for a value of the wrong kind.
pub fn invalid_attribute(element: &str, attribute: &str, value: &Value, wanted: &str) -> Failure {
    Failure::new(
        "invalidattribute",
        format!("the attribute {element}:{attribute} has an invalid value ({value}): {wanted}"),
    )
}

/// Runs an asynchronous action `name` whose attributes are checked first:
/// assigns the request id (stored at the `requestid` location), then runs
/// `parse`. When it succeeds, answers (see [`answer`]) with the future
/// `work` makes from the request id and what `parse` gave, with the data
/// map `parse` returned in both outcomes; when it fails, answers
/// `error.<name>` with that failure (typically `invalidattribute`). Only a
/// `requestid` location that cannot be assigned is an `error.execution`.
pub fn checked_request<T, Fut>(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    sessions: &Sessions,
    name: &'static str,
    parse: impl FnOnce(&mut ActionScope<'_>) -> Result<(Map<String, Value>, T), Failure>,
    work: impl FnOnce(String, T) -> Fut,
) -> Result<(), ActionError>
where
    Fut: Future<Output = Result<Map<String, Value>, Failure>> + 'static,
{
    let requestid = assign_request_id(scope, action, sessions)?;
    match parse(scope) {
        Ok((data, parsed)) => {
            let work = work(requestid.clone(), parsed);
            answer(scope, action, sessions, name, requestid, data, work)
        }
        Err(failure) => answer(
            scope,
            action,
            sessions,
            name,
            requestid,
            Map::new(),
            async move { Err(failure) },
        ),
    }
}

/// An attribute evaluated as a number of seconds, as milliseconds.
pub fn seconds_attr(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    name: &str,
) -> Result<Option<u64>, ActionError> {
    match eval_attr(scope, action, name)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => seconds_value(&v).map(Some).ok_or_else(|| {
            ActionError::Invalid(format!("{name} must be a number of seconds, not {v}"))
        }),
    }
}

/// A number of seconds (a number or numeric text) as milliseconds.
pub fn seconds_value(v: &Value) -> Option<u64> {
    let secs = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs.min(31_536_000.0) * 1000.0) as u64)
}

/// A required attribute, evaluated, as text (`Missing` when absent or
/// null).
pub fn required_text(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
    name: &str,
) -> Result<String, ActionError> {
    match eval_attr(scope, action, name)? {
        Some(Value::Null) | None => Err(ActionError::Missing {
            element: action.name.to_string(),
            what: format!("'{name}'"),
        }),
        Some(v) => Ok(value_text(&v)),
    }
}

/// The `interactionid` attribute, evaluated; it must name an interaction.
pub fn interaction_attr(
    scope: &mut ActionScope<'_>,
    action: &CustomAction,
) -> Result<String, ActionError> {
    match eval_attr(scope, action, "interactionid")? {
        Some(Value::Null) | None => Err(ActionError::Missing {
            element: action.name.to_string(),
            what: "'interactionid'".into(),
        }),
        Some(v) => Ok(value_text(&v)),
    }
}
