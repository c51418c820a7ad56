//! `<dialog:playandcollect>`: announcements, then digits. Children:
//! `<dialog:prompts>` and `<dialog:input>` as for play and collect.
//! Attributes: `requestid`, `interactionid`, `language`. Answers
//! `dialog.playandcollect.done` with `digits`, or
//! `error.dialog.playandcollect` (`timeout`, `invalidattribute`,
//! `cancelled`).

use std::sync::Arc;

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;

use super::Dialog;
use super::treatment::Kind;

/// The `<dialog:playandcollect>` handler.
pub struct PlayAndCollect(pub Arc<Dialog>);

impl CustomActionHandler for PlayAndCollect {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        super::run_single(&self.0, Kind::PlayAndCollect, action, scope)
    }
}
