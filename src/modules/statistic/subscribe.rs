//! `<statistic:subscribe>`: subscribes to a statistic of an object for
//! this session. Attributes (expressions): `object` (a target such as
//! `Billing@StatServer.GA`, required), `statistic` (required), `interval`
//! (seconds, above 5, default 30), `requestid` (a location). The simulator
//! answers at once with `statistic.subscribe.done`: `requestid`, `object`,
//! `statistic`, `interval` and `value` (from `[platform.statistics]`);
//! the reference's event table was not readable in what was found, so the
//! event's fields are our choice. A missing or malformed attribute is
//! `error.statistic.subscribe` with `invalidattribute`.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::settings::StatisticSettings;
use crate::modules::{Failure, attr, checked_request, eval_checked, invalid_attribute, value_text};
use crate::server::ServerHandles;

/// The `<statistic:subscribe>` handler.
pub struct Subscribe(pub Arc<ServerHandles>, pub Arc<StatisticSettings>);

const TAG: &str = "statistic:subscribe";

impl CustomActionHandler for Subscribe {
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
            "statistic.subscribe",
            |scope| {
                let required =
                    |scope: &mut ActionScope<'_>, name: &str| -> Result<String, Failure> {
                        match eval_checked(scope, TAG, name, attr(action, name))? {
                            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
                            Some(v @ Value::Number(_)) => Ok(value_text(&v)),
                            Some(v) => Err(invalid_attribute(TAG, name, &v, "a non-empty string")),
                            None => Err(Failure::new(
                                "invalidattribute",
                                format!("the attribute {TAG}:{name} is required"),
                            )),
                        }
                    };
                let object = required(scope, "object")?;
                let statistic = required(scope, "statistic")?;
                let interval = match eval_checked(scope, TAG, "interval", attr(action, "interval"))?
                {
                    None | Some(Value::Null) => 30,
                    Some(v) => match &v {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.trim().parse::<u64>().ok(),
                        _ => None,
                    }
                    .filter(|n| *n > 5)
                    .ok_or_else(|| {
                        invalid_attribute(TAG, "interval", &v, "a whole number of seconds above 5")
                    })?,
                };
                let mut data = Map::new();
                data.insert("object".into(), Value::String(object.clone()));
                data.insert("statistic".into(), Value::String(statistic.clone()));
                data.insert("interval".into(), Value::from(interval));
                Ok((data, (object, statistic)))
            },
            move |_requestid, (object, statistic)| async move {
                let mut out = Map::new();
                out.insert(
                    "value".into(),
                    Value::from(settings.value(&object, &statistic)),
                );
                Ok(out)
            },
        )
    }
}
