//! The `null` data model: no variables; conditions may only be `In('id')`.

use std::sync::Arc;

use serde_json::Value;

use super::{DataModel, DataModelError, DmResult, InitialValue, SystemVariables};
use crate::model::Event;
use crate::model::{Document, ExprId, StateId, StateSet};

/// The null data model.
pub struct NullDataModel {
    doc: Arc<Document>,
    active: StateSet,
}

impl NullDataModel {
    /// A null data model for `doc`.
    pub fn new(doc: Arc<Document>) -> Self {
        let active = StateSet::with_capacity(doc.states.len());
        NullDataModel { doc, active }
    }

    fn unsupported<T>(&self, what: &str) -> DmResult<T> {
        Err(DataModelError::new(format!(
            "the null data model does not support {what}"
        )))
    }
}

/// Parses `In('id')` / `In("id")`, the only expression the null model knows.
fn parse_in(src: &str) -> Option<&str> {
    let inner = src.trim().strip_prefix("In(")?.strip_suffix(')')?.trim();
    let unq = inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))?;
    Some(unq)
}

impl DataModel for NullDataModel {
    fn set_system_variables(&mut self, _vars: &SystemVariables) -> DmResult<()> {
        Ok(())
    }
    fn declare(&mut self, _name: &str, _value: &InitialValue) -> DmResult<()> {
        self.unsupported("<data>")
    }
    fn eval_cond(&mut self, expr: ExprId) -> DmResult<bool> {
        let src = &self.doc.expr(expr).source;
        match parse_in(src) {
            Some(name) => Ok(self
                .doc
                .state_by_name(name)
                .is_some_and(|s| self.active.contains(s))),
            None => Err(DataModelError::new(format!(
                "the null data model only evaluates In('state'), not '{src}'"
            ))),
        }
    }
    fn eval_value(&mut self, _expr: ExprId) -> DmResult<Option<Value>> {
        self.unsupported("value expressions")
    }
    fn eval_string(&mut self, _expr: ExprId) -> DmResult<String> {
        self.unsupported("value expressions")
    }
    fn assign_expr(&mut self, _location: ExprId, _expr: ExprId) -> DmResult<()> {
        self.unsupported("<assign>")
    }
    fn assign_value(&mut self, _location: ExprId, _value: &InitialValue) -> DmResult<()> {
        self.unsupported("locations")
    }
    fn eval_text(&mut self, _source: &str) -> DmResult<Option<Value>> {
        self.unsupported("value expressions")
    }
    fn assign_text(&mut self, _location: &str, _value: &InitialValue) -> DmResult<()> {
        self.unsupported("locations")
    }
    fn run_script(&mut self, _script: ExprId) -> DmResult<()> {
        self.unsupported("<script>")
    }
    fn foreach_begin(&mut self, _: ExprId, _: &str, _: Option<&str>) -> DmResult<usize> {
        self.unsupported("<foreach>")
    }
    fn foreach_step(&mut self, _: &str, _: Option<&str>, _: usize) -> DmResult<()> {
        self.unsupported("<foreach>")
    }
    fn foreach_end(&mut self) {}
    fn set_event(&mut self, _event: &Event) -> DmResult<()> {
        Ok(())
    }
    fn state_entered(&mut self, state: StateId) {
        self.active.insert(state);
    }
    fn state_exited(&mut self, state: StateId) {
        self.active.remove(state);
    }
    fn snapshot(&mut self) -> DmResult<Value> {
        Ok(Value::Null)
    }
    fn restore(&mut self, _snapshot: &Value) -> DmResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_in;

    #[test]
    fn parses_in_with_either_quote() {
        assert_eq!(parse_in("In('s1')"), Some("s1"));
        assert_eq!(parse_in(" In(\"s1\") "), Some("s1"));
        assert_eq!(parse_in("x == 1"), None);
    }
}
