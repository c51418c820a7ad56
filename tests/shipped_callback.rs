//! The shipped callback documents (`scxml/callback.scxml`,
//! `scxml/inbound_chat.scxml`) run in process, with their ORS actions
//! recorded instead of carried out and their answers sent by the test in
//! the order a slow store or a restart can deliver them.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use ors::interpreter::{
    ActionError, ActionScope, CustomActionHandler, CustomActions, DispatchError, Event, EventKind,
    Host, Outbound, PendingRequest, Session, SessionOptions,
};
use ors::model::CustomAction;
use ors::{LoadOptions, parse_document};

/// One action the document asked for: its answer's event name, the request
/// id it was given and its attributes evaluated.
#[derive(Debug, Clone)]
struct Asked {
    name: String,
    requestid: String,
    attributes: Map<String, Value>,
}

/// Records every action it stands for as a request waiting for an answer
/// (as the server's asynchronous actions do), with request ids `r1`, `r2`,
/// ... stored at the action's `requestid` location when it has one.
struct Recorder {
    /// The answer's event name (`gms.update` for `<gms:update>`).
    name: &'static str,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl CustomActionHandler for Recorder {
    fn execute(
        &self,
        action: &CustomAction,
        scope: &mut ActionScope<'_>,
    ) -> Result<(), ActionError> {
        let mut asked = self.asked.lock().unwrap();
        let requestid = format!("r{}", asked.len() + 1);
        let mut attributes = Map::new();
        for (key, expr) in action.attributes.iter() {
            if &**key == "requestid" {
                let id = ors::datamodel::InitialValue::Json(Value::from(requestid.clone()));
                scope
                    .datamodel
                    .assign_text(expr, &id)
                    .map_err(|e| e.message)?;
                continue;
            }
            let value = scope
                .datamodel
                .eval_text(expr)
                .map_err(|e| e.message)?
                .unwrap_or(Value::Null);
            attributes.insert(key.to_string(), value);
        }
        scope.requests.insert(
            requestid.clone(),
            PendingRequest {
                name: self.name.to_string(),
                data: Map::new(),
            },
        );
        asked.push(Asked {
            name: self.name.to_string(),
            requestid,
            attributes,
        });
        Ok(())
    }
}

/// A host at time 0 that keeps the events the session sends to other
/// sessions (`#_scxml_<id>`), as a server would deliver them.
#[derive(Default)]
struct SendingHost {
    sent: Vec<Outbound>,
}

impl Host for SendingHost {
    fn now_ms(&mut self) -> u64 {
        0
    }
    fn log(&mut self, _: &str, _: Option<&str>, _: &str) {}
    fn dispatch(&mut self, _session: &str, outbound: Outbound) -> Result<(), DispatchError> {
        self.sent.push(outbound);
        Ok(())
    }
}

const IXN: &str = "http://www.genesyslab.com/modules/interaction";
const GMS: &str = "http://www.genesyslab.com/modules/gms";
const QUEUE: &str = "http://www.genesyslab.com/modules/queue";
const CHAT: &str = "http://www.genesyslab.com/modules/chat";

/// The shipped callback session, started with a service's `_data`, and
/// the list its actions are recorded in.
fn callback_session() -> (Session, Arc<Mutex<Vec<Asked>>>) {
    let mut data = Map::new();
    data.insert(
        "_data".into(),
        json!({"_id": "cb-1", "_target": "Chat_Agents@StatServer.GA",
            "_urs_virtual_queue": "VQ_Chat_Immediate", "_media_type": "chat"}),
    );
    shipped_session("callback.scxml", data)
}

/// A shipped document of `scxml/` started with `initial_data`, and the
/// list its actions are recorded in.
fn shipped_session(
    document: &str,
    initial_data: Map<String, Value>,
) -> (Session, Arc<Mutex<Vec<Asked>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut registry = CustomActions::default();
    for (ns, element, name) in [
        (IXN, "attach", "interaction.attach"),
        (IXN, "redirect", "interaction.redirect"),
        (IXN, "terminate", "interaction.terminate"),
        (GMS, "update", "gms.update"),
        (GMS, "lookup", "gms.lookup"),
        (QUEUE, "submit", "queue.submit"),
        (QUEUE, "cancel", "queue.cancel"),
        (CHAT, "sendchatmessage", "chat.sendchatmessage"),
    ] {
        let recorder = Recorder {
            name,
            asked: asked.clone(),
        };
        registry.register(ns, element, Arc::new(recorder));
    }
    let path = format!("{}/scxml/{document}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the shipped document");
    let options = LoadOptions {
        custom_actions: &registry,
        dialect: None,
    };
    let doc = Arc::new(parse_document(&text, None, &options).expect("loads"));
    let mut session = Session::new(
        doc,
        SessionOptions {
            custom_actions: Arc::new(registry),
            initial_data,
            declare_undeclared_data: true,
            ..SessionOptions::default()
        },
    );
    session.start(&mut SendingHost::default());
    (session, asked)
}

/// Delivers an external event and runs the session until it waits again;
/// answers the events it sent to other sessions meanwhile.
fn deliver(session: &mut Session, name: &str, data: Value) -> Vec<Outbound> {
    let mut event = Event::new(name.to_string(), EventKind::External);
    event.data = Some(data);
    session.enqueue_external(event);
    let mut host = SendingHost::default();
    while session.process_next_external(&mut host).is_some() {}
    host.sent
}

/// The last action of that name the document asked for.
fn last(asked: &Mutex<Vec<Asked>>, name: &str) -> Asked {
    asked
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|a| a.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} was asked for"))
}

fn in_state(session: &Session, state: &str) -> bool {
    session.configuration_names().iter().any(|s| s == state)
}

/// The answer to the ROUTING mark made when the chat was taken over can
/// come after the chat was routed (the record's store was slow, or a
/// restart delivered it late from the outbox). Taken for the answer to the
/// COMPLETED mark, it ended the session with the record left `ROUTING` for
/// good, once a restart had cut the COMPLETED mark off (found by the kill
/// loop). Only the COMPLETED mark's own answer ends the session.
#[test]
fn a_late_answer_to_the_routing_mark_does_not_end_the_callback() {
    let (mut session, asked) = callback_session();
    assert!(in_state(&session, "waiting_for_chat"));
    deliver(
        &mut session,
        "gms.delegate",
        json!({"interactionid": "ixn-1", "find_agent_timeout": 30}),
    );
    let attach = last(&asked, "interaction.attach");
    let routing_mark = last(&asked, "gms.update");
    assert_eq!(routing_mark.attributes["state"], "ROUTING");
    deliver(
        &mut session,
        "interaction.attach.done",
        json!({"requestid": attach.requestid, "interactionid": "ixn-1"}),
    );
    let submit = last(&asked, "queue.submit");
    deliver(
        &mut session,
        "queue.submit.done",
        json!({"requestid": submit.requestid, "resource": "agent-1",
            "targetobjectselected": "agent-1"}),
    );
    let redirect = last(&asked, "interaction.redirect");
    assert_eq!(redirect.attributes["to"], "agent-1");
    deliver(
        &mut session,
        "interaction.redirect.done",
        json!({"requestid": redirect.requestid, "interactionid": "ixn-1"}),
    );
    let completed_mark = last(&asked, "gms.update");
    assert_eq!(completed_mark.attributes["state"], "COMPLETED");
    assert_eq!(completed_mark.attributes["reason"], "routed to agent-1");
    assert!(in_state(&session, "finishing"));

    // The ROUTING mark's answer only now.
    deliver(
        &mut session,
        "gms.update.done",
        json!({"requestid": routing_mark.requestid, "serviceid": "cb-1", "state": "ROUTING"}),
    );
    assert!(
        session.is_running() && in_state(&session, "finishing"),
        "ended on another mark's answer: {:?}",
        session.configuration_names()
    );
    // Nor does an interrupted ROUTING mark make the COMPLETED one again.
    let marks = asked.lock().unwrap().len();
    deliver(
        &mut session,
        "error.gms.update",
        json!({"requestid": routing_mark.requestid, "serviceid": "cb-1",
            "error": "interrupted", "message": "the server stopped"}),
    );
    assert_eq!(asked.lock().unwrap().len(), marks);
    assert!(in_state(&session, "finishing"));

    // The COMPLETED mark cut off by a restart is made again; its answer
    // ends the session.
    deliver(
        &mut session,
        "error.gms.update",
        json!({"requestid": completed_mark.requestid, "serviceid": "cb-1",
            "error": "interrupted", "message": "the server stopped"}),
    );
    let again = last(&asked, "gms.update");
    assert_ne!(again.requestid, completed_mark.requestid);
    assert_eq!(again.attributes["state"], "COMPLETED");
    assert_eq!(again.attributes["reason"], "routed to agent-1");
    deliver(
        &mut session,
        "gms.update.done",
        json!({"requestid": again.requestid, "serviceid": "cb-1", "state": "COMPLETED"}),
    );
    assert!(!session.is_running(), "{:?}", session.configuration_names());
}

/// The shipped inbound strategy started for interaction `id`, with the
/// default ApplicationParms.
fn inbound_session(id: &str) -> (Session, Arc<Mutex<Vec<Asked>>>) {
    let mut data = Map::new();
    data.insert(
        "_data".into(),
        json!({"interactionid": id, "app_selected_agent_group": "Chat_Overflow",
            "app_find_agent_timeout": 30}),
    );
    shipped_session("inbound_chat.scxml", data)
}

/// An inbound strategy asked again after a restart finds its callback
/// already `ROUTING` (the callback session had begun taking the chat):
/// it hands the chat over again rather than routing it to the overflow
/// group; and a route refused because another session has the chat ends
/// it quietly, without the apology meant for a chat nobody can take.
#[test]
fn an_inbound_strategy_leaves_a_chat_its_callback_is_taking() {
    let (mut session, asked) = inbound_session("ixn-1");
    let chat = json!({"interactionid": "ixn-1", "udata": {"GMS_ServiceID": "cb-1"}});
    // What a server's prelude and interaction mirror give the strategy.
    let object_model = json!({"ixn": {"interactions": {"ixn-1": chat}}});
    session
        .datamodel_mut()
        .eval_text(&format!("globalThis._genesys = {object_model}"))
        .expect("the interaction's object model");
    deliver(
        &mut session,
        "interaction.present",
        json!({"interactionid": "ixn-1"}),
    );
    let lookup = last(&asked, "gms.lookup");
    let sent = deliver(
        &mut session,
        "gms.lookup.done",
        json!({"requestid": lookup.requestid,
            "record": {"_callback_state": "ROUTING", "_ors_session_id": "CB-SESSION"}}),
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].target, "#_scxml_CB-SESSION");
    assert_eq!(&*sent[0].event.name, "gms.delegate");
    assert!(
        in_state(&session, "delegating"),
        "{:?}",
        session.configuration_names()
    );
    assert!(
        asked
            .lock()
            .unwrap()
            .iter()
            .all(|a| a.name != "queue.submit")
    );

    // The same strategy that did go to the overflow group, refused there.
    let (mut session, asked) = inbound_session("ixn-2");
    // Its chat names no service.
    session
        .datamodel_mut()
        .eval_text("globalThis._genesys = {ixn: {interactions: {}}}")
        .expect("the object model");
    deliver(
        &mut session,
        "interaction.present",
        json!({"interactionid": "ixn-2"}),
    );
    let submit = last(&asked, "queue.submit");
    deliver(
        &mut session,
        "error.queue.submit",
        json!({"requestid": submit.requestid, "error": "invalidstate.notcontrolled",
            "message": "controlled by another session"}),
    );
    assert!(!session.is_running(), "{:?}", session.configuration_names());
    assert!(
        asked
            .lock()
            .unwrap()
            .iter()
            .all(|a| a.name != "chat.sendchatmessage" && a.name != "interaction.terminate"),
        "{:?}",
        asked.lock().unwrap()
    );
}
