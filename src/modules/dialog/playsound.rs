//! `<dialog:playsound>`: a sound (music, ringback, silence, busy).
//! Attributes: `requestid`, `interactionid`, `type`, `resource` (a music DN
//! or file), `duration` (seconds; without it `[platform.dialog.durations]
//! playsound`). Answers `dialog.playsound.done`.

use std::sync::Arc;

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;

use super::Dialog;
use super::treatment::Kind;

/// The `<dialog:playsound>` handler.
pub struct PlaySound(pub Arc<Dialog>);

impl CustomActionHandler for PlaySound {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        super::run_single(&self.0, Kind::PlaySound, action, scope)
    }
}
