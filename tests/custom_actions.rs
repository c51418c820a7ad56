//! Foreign-namespace elements run through the custom action registry; an
//! unclaimed one raises error.execution and stops its block.

mod common;

use std::sync::Arc;

use common::hosts::QuietHost;

use ors::interpreter::{
    ActionError, ActionScope, CustomActionHandler, CustomActions, Event, EventKind, Session,
    SessionOptions,
};
use ors::model::CustomAction;
use ors::{LoadOptions, parse_document};

/// The value of attribute `name` of `<t:{element}>`, which it must have.
fn required(action: &CustomAction, element: &str, name: &str) -> Result<String, String> {
    action
        .attributes
        .iter()
        .find(|(k, _)| &**k == name)
        .map(|(_, v)| v.to_string())
        .ok_or(format!("<{element}> needs '{name}'"))
}

/// `<t:set location="..." expr="..."/>`: evaluates and stores, then raises `t.done`.
struct SetAction;

impl CustomActionHandler for SetAction {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let attr = |n: &str| required(action, "set", n);
        let value = scope
            .datamodel
            .eval_text(&attr("expr")?)
            .map_err(|e| e.message)?;
        let value = ors::datamodel::InitialValue::Json(value.unwrap_or_default());
        scope
            .datamodel
            .assign_text(&attr("location")?, &value)
            .map_err(|e| e.message)?;
        scope.raised.push(Event::new("t.done", EventKind::Internal));
        Ok(())
    }
}

const CHART: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" xmlns:t="urn:test" version="1.0">
  <datamodel><data id="x" expr="0"/></datamodel>
  <state id="s0">
    <onentry><t:set location="x" expr="20 + 22"/></onentry>
    <transition event="t.done" cond="x === 42" target="s1"/>
  </state>
  <state id="s1">
    <onentry><t:unknown/><raise event="skipped"/></onentry>
    <transition event="error.execution" target="pass"/>
    <transition event="skipped" target="fail"/>
  </state>
  <final id="pass"/>
  <final id="fail"/>
</scxml>"#;

#[test]
fn registered_handler_runs_and_unclaimed_action_raises_error_execution() {
    let mut registry = CustomActions::default();
    registry.register("urn:test", "set", Arc::new(SetAction));
    let options = LoadOptions {
        custom_actions: &registry,
        dialect: None,
    };
    let doc = Arc::new(parse_document(CHART, None, &options).expect("loads"));
    assert_eq!(
        doc.warnings.len(),
        1,
        "only <t:unknown> is unclaimed: {:?}",
        doc.warnings
    );
    let mut session = Session::new(
        doc,
        SessionOptions {
            custom_actions: Arc::new(registry),
            ..SessionOptions::default()
        },
    );
    session.start(&mut QuietHost);
    let final_state = session
        .final_info()
        .map(|f| session.document().state(f.state).name.to_string());
    assert_eq!(final_state.as_deref(), Some("pass"));
}

/// `<t:ask name="..." id="..."/>`: records a request awaiting an answer,
/// as ORS's asynchronous actions do; the answer comes later as an event.
struct AskAction;

impl CustomActionHandler for AskAction {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let attr = |n: &str| required(action, "ask", n);
        let mut data = serde_json::Map::new();
        data.insert("interactionid".into(), serde_json::json!("ixn-1"));
        scope.requests.insert(
            attr("id")?,
            ors::interpreter::PendingRequest {
                name: attr("name")?,
                data,
            },
        );
        Ok(())
    }
}

const ASKING: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" xmlns:t="urn:test" version="1.0">
  <datamodel><data id="answer" expr="null"/></datamodel>
  <state id="waiting">
    <onentry>
      <t:ask name="t.lookup" id="r1"/>
      <t:ask name="t.submit" id="r2"/>
      <t:ask name="t.update" id="r3"/>
    </onentry>
    <transition event="error.t.lookup" target="cut">
      <assign location="answer" expr="_event.data"/>
    </transition>
  </state>
  <final id="cut"/>
</scxml>"#;

fn data(pairs: &[(&str, &str)]) -> Option<serde_json::Value> {
    Some(serde_json::Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect(),
    ))
}

#[test]
fn pending_requests_are_kept_in_snapshots_settled_by_answers_and_interrupted_on_restore() {
    let mut registry = CustomActions::default();
    registry.register("urn:test", "ask", Arc::new(AskAction));
    let registry = Arc::new(registry);
    let options = LoadOptions {
        custom_actions: &*registry,
        dialect: None,
    };
    let doc = Arc::new(parse_document(ASKING, None, &options).expect("loads"));
    let session_options = || SessionOptions {
        custom_actions: registry.clone(),
        ..SessionOptions::default()
    };
    let mut session = Session::new(doc.clone(), session_options());
    session.start(&mut QuietHost);
    let ids = |s: &Session| s.pending_requests().keys().cloned().collect::<Vec<_>>();
    assert_eq!(ids(&session), ["r1", "r2", "r3"]);

    // Only the answer naming the request's own action and id settles it.
    let mut wrong_name = Event::new("t.lookup.done", EventKind::External);
    wrong_name.data = data(&[("requestid", "r3")]);
    session.enqueue_external(wrong_name);
    let mut other_id = Event::new("t.update.done", EventKind::External);
    other_id.data = data(&[("requestid", "r9")]);
    session.enqueue_external(other_id);
    assert_eq!(ids(&session), ["r1", "r2", "r3"]);
    let mut answer = Event::new("error.t.update", EventKind::External);
    answer.data = data(&[("requestid", "r3"), ("error", "timeout")]);
    session.enqueue_external(answer);
    assert_eq!(ids(&session), ["r1", "r2"]);
    while session.process_next_external(&mut QuietHost).is_some() {}
    assert!(session.is_running());

    // The snapshot keeps them; a restored session answers every one its
    // host does not resume with error.<name> "interrupted".
    let snapshot = session.snapshot().expect("snapshot");
    let text = serde_json::to_string(&snapshot).unwrap();
    let snapshot: ors::interpreter::SessionSnapshot = serde_json::from_str(&text).unwrap();
    let mut restored = Session::restore(doc, &snapshot, session_options()).expect("restores");
    assert_eq!(ids(&restored), ["r1", "r2"]);
    let mut asked = Vec::new();
    let n = restored.interrupt_requests(|id| {
        asked.push(id.to_string());
        id == "r2"
    });
    assert_eq!((n, asked), (1, vec!["r1".to_string(), "r2".to_string()]));
    assert_eq!(ids(&restored), ["r2"], "the resumed request still waits");
    while restored.process_next_external(&mut QuietHost).is_some() {}
    let final_state = restored
        .final_info()
        .map(|f| restored.document().state(f.state).name.to_string());
    assert_eq!(final_state.as_deref(), Some("cut"));
    let answer = restored
        .datamodel_mut()
        .eval_text("answer")
        .expect("evaluates")
        .expect("a value");
    assert_eq!(answer["requestid"], "r1", "{answer}");
    assert_eq!(answer["interactionid"], "ixn-1", "{answer}");
    assert_eq!(answer["error"], "interrupted", "{answer}");
    assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
}
