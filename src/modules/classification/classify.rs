//! `<classification:classify>`: classifies an interaction's text.
//! Attributes (expressions): `requestid` (a location), `root` (the overall
//! category, required), `interactionid`, `server` (accepted, ignored: there
//! is one simulated server), and `text` (this simulator's own: the text to
//! classify; without it, the text of `_genesys.ixn.interactions[id]`:
//! every string under its `text`, `subject`, `body`, `message` and
//! `transcript` members). Answers `classification.classify.done` with
//! `requestid`, `interactionid`, `root` and `categories`, or
//! `error.classification.classify` (`invalidattribute` for a missing or
//! malformed attribute, `notfound` when there is no text to classify).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::settings::ClassificationSettings;
use crate::modules::{Failure, attr, checked_request, eval_checked, value_text};
use crate::server::ServerHandles;

/// The `<classification:classify>` handler.
pub struct Classify(pub Arc<ServerHandles>, pub Arc<ClassificationSettings>);

const TAG: &str = "classification:classify";

impl CustomActionHandler for Classify {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let settings = self.1.clone();
        checked_request(
            scope,
            action,
            &self.0.sessions,
            "classification.classify",
            |scope| {
                let mut data = Map::new();
                let root = match eval_checked(scope, TAG, "root", attr(action, "root"))? {
                    Some(Value::String(s)) if !s.trim().is_empty() => s,
                    Some(v) if !v.is_null() && !v.is_object() && !v.is_array() => value_text(&v),
                    _ => {
                        return Err(Failure::new(
                            "invalidattribute",
                            "the attribute classification:classify:root is required",
                        ));
                    }
                };
                data.insert("root".into(), Value::String(root.clone()));
                eval_checked(scope, TAG, "server", attr(action, "server"))?;
                let interaction =
                    eval_checked(scope, TAG, "interactionid", attr(action, "interactionid"))?
                        .filter(|v| !v.is_null())
                        .map(|v| value_text(&v));
                if let Some(id) = &interaction {
                    data.insert("interactionid".into(), Value::String(id.clone()));
                }
                let text = match eval_checked(scope, TAG, "text", attr(action, "text"))? {
                    Some(v) if !v.is_null() => Some(value_text(&v)),
                    _ => interaction
                        .as_deref()
                        .and_then(|id| interaction_text(scope, id)),
                };
                let text = text.ok_or_else(|| {
                    Failure::new(
                        "notfound",
                        "there is no text to classify (no 'text' and no such interaction)",
                    )
                })?;
                Ok((data, (root, text)))
            },
            move |_requestid, (root, text)| async move {
                let categories: Vec<Value> = super::categorize(&settings, &text, Some(&root))
                    .into_iter()
                    .map(|r| {
                        json!({
                            "name": r.category,
                            "id": r.id.clone().unwrap_or_else(|| r.category.clone()),
                            "relevancy": r.relevancy,
                        })
                    })
                    .collect();
                let mut out = Map::new();
                out.insert("categories".into(), Value::Array(categories));
                Ok(out)
            },
        )
    }
}

/// The text of the interaction `id` as the object model shows it.
fn interaction_text(scope: &mut ActionScope<'_>, id: &str) -> Option<String> {
    let all = scope
        .datamodel
        .eval_text(
            "typeof _genesys === 'object' && _genesys.ixn ? _genesys.ixn.interactions : null",
        )
        .ok()??;
    let ixn = all.get(id)?;
    let mut parts = Vec::new();
    gather(ixn, false, 0, &mut parts);
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// Collects the strings under the text-bearing members of `v`.
fn gather(v: &Value, wanted: bool, depth: usize, out: &mut Vec<String>) {
    if depth > 6 {
        return;
    }
    match v {
        Value::String(s) if wanted => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| gather(i, wanted, depth + 1, out)),
        Value::Object(map) => {
            for (k, child) in map {
                let key = k.to_ascii_lowercase();
                let hit = wanted
                    || matches!(
                        key.as_str(),
                        "text" | "subject" | "body" | "message" | "transcript"
                    );
                gather(child, hit, depth + 1, out);
            }
        }
        _ => {}
    }
}
