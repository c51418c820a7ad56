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

/// `<t:set location="..." expr="..."/>`: evaluates and stores, then raises `t.done`.
struct SetAction;

impl CustomActionHandler for SetAction {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let attr = |n: &str| {
            action
                .attributes
                .iter()
                .find(|(k, _)| &**k == n)
                .map(|(_, v)| v.to_string())
                .ok_or(format!("<set> needs '{n}'"))
        };
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
