//! `<chat:sendchatmessage>`: the strategy writes into a chat.

use serde_json::{Map, Value};

use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{
    assign_request_id, eval_attr, failure_event, interaction_attr, result_event, services,
    spawn_job, value_text,
};

/// The `<chat:sendchatmessage>` handler.
pub struct SendChatMessage;

impl CustomActionHandler for SendChatMessage {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let ctx = services(scope, action)?.ctx.clone();
        let interaction_id = interaction_attr(scope, action)?;
        let message = eval_attr(scope, action, "message")?
            .filter(|v| !v.is_null())
            .map(|v| value_text(&v))
            .ok_or("<chat:sendchatmessage> needs 'message'")?;
        let from = eval_attr(scope, action, "from")?
            .filter(|v| !v.is_null())
            .map(|v| value_text(&v))
            .unwrap_or_else(|| "System".into());
        let requestid = assign_request_id(scope, action, &ctx)?;
        let session = scope.session_id.to_string();
        let job = async move {
            let mut data = Map::new();
            data.insert("requestid".into(), Value::from(requestid));
            data.insert("interactionid".into(), Value::from(interaction_id.clone()));
            let event = match ctx
                .backends
                .chat
                .send_system(&interaction_id, &from, &message)
                .await
            {
                Ok(position) => {
                    data.insert("position".into(), Value::from(position));
                    result_event("chat.sendchatmessage.done", data)
                }
                Err(e) => {
                    failure_event("error.chat.sendchatmessage", data, "remote", e.to_string())
                }
            };
            let _ = ctx.pool.post_event(&session, event);
        };
        spawn_job(scope, action, Box::pin(job))
    }
}
