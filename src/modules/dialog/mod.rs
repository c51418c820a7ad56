//! The ORS `dialog` module (treatments) against a simulated media backend:
//! `<dialog:play>`, `<dialog:collect>`, `<dialog:playandcollect>`,
//! `<dialog:playsound>`, `<dialog:start>`, `<dialog:runtreatments>` (which
//! runs `play`, `collect`, `playandcollect`, `playsound`, `pause`, `remote`
//! and `start` children in turn) and `<dialog:stop>`. Attributes and events
//! follow the Genesys 8.1 SCXML Technical Reference, Dialog (Treatment)
//! Interface: each action answers `dialog.<action>.done` (`requestid`,
//! `interactionid` when named, `digits` for a collect) or
//! `error.dialog.<action>` (`requestid`, `error`: `invalidattribute`,
//! `timeout`, `cancelled`; `message`). A treatment takes the time
//! `[platform.dialog]` gives its kind; see [`treatment`].

pub mod collect;
pub mod play;
pub mod playandcollect;
pub mod playsound;
pub mod runtreatments;
pub mod start;
pub mod stop;
pub mod treatment;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::interpreter::{ActionError, ActionScope};
use crate::model::CustomAction;
use crate::modules::settings::DialogSettings;
use crate::modules::{Failure, checked_request, element_tree, eval_checked, value_text};
use crate::server::ServerHandles;

use treatment::{Kind, Treatment, Treatments};

/// What the dialog actions share: the server, the simulator's settings and
/// the treatments under way.
pub struct Dialog {
    /// The server's handles (sessions, request ids).
    pub server: Arc<ServerHandles>,
    /// `[platform.dialog]`.
    pub settings: DialogSettings,
    /// Treatments under way, for `<dialog:stop>`.
    pub treatments: Arc<Treatments>,
}

impl Dialog {
    /// The dialog module over `server` with `settings`.
    pub fn new(server: Arc<ServerHandles>, settings: DialogSettings) -> Dialog {
        Dialog {
            server,
            settings,
            treatments: Arc::new(Treatments::default()),
        }
    }
}

/// The `interactionid` attribute, evaluated, as the data every answer
/// carries.
fn interaction_data(
    scope: &mut ActionScope<'_>,
    tag: &str,
    action: &CustomAction,
) -> Result<(Map<String, Value>, Option<String>), Failure> {
    let mut data = Map::new();
    let id = match eval_checked(
        scope,
        tag,
        "interactionid",
        crate::modules::attr(action, "interactionid"),
    )? {
        None | Some(Value::Null) => None,
        Some(v) => Some(value_text(&v)),
    };
    if let Some(id) = &id {
        data.insert("interactionid".into(), Value::String(id.clone()));
    }
    Ok((data, id))
}

/// Runs one treatment action of `kind` (`<dialog:play>`, `collect`,
/// `playandcollect`, `playsound`, `start`): `dialog.<kind>.done` after
/// its length, or `error.dialog.<kind>`.
fn run_single(
    dialog: &Dialog,
    kind: Kind,
    action: &CustomAction,
    scope: &mut ActionScope<'_>,
) -> Result<(), ActionError> {
    let name: &'static str = match kind {
        Kind::Play => "dialog.play",
        Kind::Collect => "dialog.collect",
        Kind::PlayAndCollect => "dialog.playandcollect",
        Kind::PlaySound => "dialog.playsound",
        Kind::Start => "dialog.start",
        Kind::Pause => "dialog.pause",
        Kind::Remote => "dialog.remote",
    };
    let tag = format!("dialog:{}", kind.name());
    let settings = dialog.settings.clone();
    let treatments = dialog.treatments.clone();
    let sessions = dialog.server.sessions.clone();
    let session = scope.session_id.to_string();
    checked_request(
        scope,
        action,
        &dialog.server.sessions,
        name,
        |scope| {
            let (data, interaction) = interaction_data(scope, &tag, action)?;
            let element = element_tree(&action.xml).unwrap_or_default();
            let t = Treatment::parse(scope, kind, &element, &settings)?;
            let outcome = t.outcome(&settings, interaction.as_deref());
            Ok((data, (interaction, outcome)))
        },
        move |requestid, (interaction, outcome)| {
            let first = (kind == Kind::Start).then(|| {
                // ORS tells the application the request id first.
                let mut data = Map::new();
                data.insert("requestid".into(), Value::String(requestid.clone()));
                crate::modules::result_event("dialog.start.requestid", data)
            });
            let target = session.clone();
            let run = treatments.start(session, requestid, interaction, vec![outcome]);
            async move {
                if let Some(event) = first {
                    let _ = sessions.post_event(&target, event);
                }
                run.await
            }
        },
    )
}
