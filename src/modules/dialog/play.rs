//! `<dialog:play>`: announcements to the caller. Children: `<dialog:prompts
//! type>` > `<dialog:prompt intid|number|userannid|text interrupt>`.
//! Attributes: `requestid`, `interactionid`, `language`. Answers
//! `dialog.play.done` after `[platform.dialog.durations] play`.

use std::sync::Arc;

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;

use super::Dialog;
use super::treatment::Kind;

/// The `<dialog:play>` handler.
pub struct Play(pub Arc<Dialog>);

impl CustomActionHandler for Play {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        super::run_single(&self.0, Kind::Play, action, scope)
    }
}
