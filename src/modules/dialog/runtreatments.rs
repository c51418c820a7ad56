//! `<dialog:runtreatments>`: runs its treatment children (`play`,
//! `collect`, `playandcollect`, `playsound`, `pause`, `remote`, `start`)
//! one after the other. As the reference says, the children raise no
//! events of their own; this simulator answers the whole run with
//! `dialog.runtreatments.done` (`requestid`, `interactionid`, and the
//! `digits` of the last collect) once every child has taken its time, or
//! `error.dialog.runtreatments` (`invalidattribute` for a bad child or an
//! unknown child element, `timeout` when a collect's `total_timeout` runs
//! out, `cancelled` by `<dialog:stop>`). The reference does not say what a
//! standalone run answers at its end; this event is our choice.

use std::sync::Arc;

use crate::interpreter::{ActionError, ActionScope, CustomActionHandler};
use crate::model::CustomAction;
use crate::modules::{Failure, checked_request, element_tree};

use super::treatment::{Kind, Treatment};
use super::{Dialog, interaction_data};

/// The `<dialog:runtreatments>` handler.
pub struct RunTreatments(pub Arc<Dialog>);

impl CustomActionHandler for RunTreatments {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let dialog = &self.0;
        let settings = dialog.settings.clone();
        let treatments = dialog.treatments.clone();
        let session = scope.session_id.to_string();
        checked_request(
            scope,
            action,
            &dialog.server.sessions,
            "dialog.runtreatments",
            |scope| {
                let (data, interaction) = interaction_data(scope, "dialog:runtreatments", action)?;
                let root = element_tree(&action.xml).unwrap_or_default();
                let mut outcomes = Vec::new();
                for child in &root.children {
                    let kind = Kind::from_name(&child.name).ok_or_else(|| {
                        Failure::new(
                            "invalidattribute",
                            format!(
                                "<dialog:{}> is not a treatment <dialog:runtreatments> can run",
                                child.name
                            ),
                        )
                    })?;
                    let t = Treatment::parse(scope, kind, child, &settings)?;
                    outcomes.push(t.outcome(&settings, interaction.as_deref()));
                }
                Ok((data, (interaction, outcomes)))
            },
            move |requestid, (interaction, outcomes)| {
                treatments.start(session, requestid, interaction, outcomes)
            },
        )
    }
}
