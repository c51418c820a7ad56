//! `<dialog:collect>`: digits from the caller (IRD's Collect Digits).
//! Children: `<dialog:input max_digits term_digits total_timeout
//! digit_timeout abort_digits>`, optional prompts. Attributes: `requestid`,
//! `interactionid`, `language`. Answers `dialog.collect.done` with `digits`
//! after `[platform.dialog.durations] collect`, or `error.dialog.collect`
//! with `timeout` when `total_timeout` (seconds) is shorter.

use std::sync::Arc;

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;

use super::Dialog;
use super::treatment::Kind;

/// The `<dialog:collect>` handler.
pub struct Collect(pub Arc<Dialog>);

impl CustomActionHandler for Collect {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        super::run_single(&self.0, Kind::Collect, action, scope)
    }
}
