//! `<chat:sendchatmessage>`: the strategy writes into a chat.

use serde_json::{Map, Value};

use crate::gms::Gms;
use crate::interpreter::{ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{Failure, eval_attr, interaction_attr, request, value_text};

/// The `<chat:sendchatmessage>` handler.
pub struct SendChatMessage(pub std::sync::Arc<Gms>);

impl CustomActionHandler for SendChatMessage {
    fn execute(&self, action: &CustomAction, scope: &mut ActionScope<'_>) -> Result<(), String> {
        let ctx = self.0.clone();
        let interaction_id = interaction_attr(scope, action)?;
        let message = eval_attr(scope, action, "message")?
            .filter(|v| !v.is_null())
            .map(|v| value_text(&v))
            .ok_or("<chat:sendchatmessage> needs 'message'")?;
        let from = eval_attr(scope, action, "from")?
            .filter(|v| !v.is_null())
            .map(|v| value_text(&v))
            .unwrap_or_else(|| "System".into());
        let mut data = Map::new();
        data.insert("interactionid".into(), Value::from(interaction_id.clone()));
        let sessions = ctx.sessions.clone();
        request(
            scope,
            action,
            &sessions,
            "chat.sendchatmessage",
            data,
            |_| async move {
                let position = ctx
                    .backends
                    .chat
                    .send_system(&interaction_id, &from, &message)
                    .await
                    .map_err(|e| Failure::new("remote", e.to_string()))?;
                let mut done = Map::new();
                done.insert("position".into(), Value::from(position));
                Ok(done)
            },
        )
    }
}
