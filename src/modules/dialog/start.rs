//! `<dialog:start>`: a dialog application on the caller. Attributes:
//! `requestid`, `interactionid`, `type`, `resource`, `duration` (seconds;
//! this simulator's own, since the reference gives the application's end).
//! Raises `dialog.start.requestid` at once, then `dialog.start.done` when
//! the simulated application ends, or `error.dialog.start`.

use std::sync::Arc;

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;

use super::Dialog;
use super::treatment::Kind;

/// The `<dialog:start>` handler.
pub struct Start(pub Arc<Dialog>);

impl CustomActionHandler for Start {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        super::run_single(&self.0, Kind::Start, action, scope)
    }
}
