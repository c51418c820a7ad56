//! The ORS modules the contact-centre services bring, as custom actions
//! (one action per file under its module's folder; [`register`] is the
//! one table that lists them): `queue` (submit, cancel, query),
//! `interaction` (redirect, accept, attach, detach, terminate, associate),
//! `chat`
//! (sendchatmessage), and our `gms` records module (lookup, update). Each
//! handler holds the running [`Gms`] it acts on.

pub mod chat;
pub mod ixn;
pub mod queue;
pub mod records;

use std::sync::Arc;

use super::Gms;
use crate::interpreter::{CustomActionHandler, CustomActions};
use crate::modules::register as register_action;

/// Registers every action of these modules, acting on `gms`.
pub fn register(actions: &mut CustomActions, gms: &Arc<Gms>) {
    let g = || gms.clone();
    let table: [(&str, &str, Arc<dyn CustomActionHandler>); 12] = [
        ("queue", "submit", Arc::new(queue::submit::Submit(g()))),
        ("queue", "cancel", Arc::new(queue::cancel::Cancel(g()))),
        ("queue", "query", Arc::new(queue::query::Query(g()))),
        (
            "interaction",
            "associate",
            Arc::new(ixn::associate::Associate(g())),
        ),
        (
            "interaction",
            "redirect",
            Arc::new(ixn::redirect::Redirect(g())),
        ),
        ("interaction", "accept", Arc::new(ixn::accept::Accept(g()))),
        ("interaction", "attach", Arc::new(ixn::attach::Attach(g()))),
        ("interaction", "detach", Arc::new(ixn::detach::Detach(g()))),
        (
            "interaction",
            "terminate",
            Arc::new(ixn::terminate::Terminate(g())),
        ),
        (
            "chat",
            "sendchatmessage",
            Arc::new(chat::sendchatmessage::SendChatMessage(g())),
        ),
        ("gms", "lookup", Arc::new(records::Lookup(g()))),
        ("gms", "update", Arc::new(records::Update(g()))),
    ];
    for (module, name, handler) in table {
        register_action(actions, module, name, handler);
    }
}
