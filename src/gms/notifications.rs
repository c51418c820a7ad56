//! Callback status notifications (GMS Callback User's Guide, *Enable
//! Status Notifications*): with `_enable_status_notification` on, every
//! change of a callback is published to `_status_notification_target`:
//! with `_status_notification_type` `httpcb` (the default) POSTed there
//! as JSON; with `orscb` the target is an ORS session id, and the session
//! gets each notification as an external event named as the notification
//! (`_cbe_on_callback_queued`, ...) whose data is the body below.
//!
//! The events, named as GMS names them:
//!
//! | change | event |
//! |---|---|
//! | created | `_cbe_on_service_create`, then `_cbe_on_callback_scheduled` or `_cbe_on_callback_queued` |
//! | a scheduled one submitted | `_cbe_on_callback_queued` |
//! | rescheduled | `_cbe_on_callback_rescheduled` |
//! | `ROUTING` (its chat arrived, an agent is reserved) | `_cbe_on_route_to_agent` |
//! | cancelled (customer or admin) | `_cbe_on_callback_cancelled` |
//! | its session could not start | `_cbe_on_callback_submit_failed` |
//! | any other change of state (`PAUSED`, `COMPLETED`, ...) | `_cbe_on_callback_status_updated` |
//! | completed, whatever the reason (after the event above) | `_cbe_on_service_exit` |
//!
//! The body is `{"event": <name>, "_id": …, …}` with the record keys of
//! the event's `notify_params`: by default `_id, _service_name,
//! _callback_state, _callback_reason, _customer_number, _desired_time`.
//! A service whose `_callback_events_list` names a list under
//! `[gms.event_lists]` reports only the events that list has, each with
//! its own `notify_params` (GMS's transaction list with one `_cbe_on_*`
//! section per event).
//!
//! Delivery never blocks the callback: notifications wait in a bounded
//! queue ([`QUEUE`]; past it they are dropped, with a warning in the log)
//! and go out in order for each callback;
//! each is tried up to `_max_notify_delivery_attempts` times (default 3),
//! [`RETRY_BASE`] doubling between tries, a try failing on a transport
//! error, a timeout ([`TIMEOUT`]) or a status other than 2xx.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{Semaphore, mpsc};

use super::records::{self, CallbackRow};
use super::service::Service;

/// Notifications waiting for delivery, at most.
pub const QUEUE: usize = 10_000;
/// Deliveries in flight at once, at most.
pub const IN_FLIGHT: usize = 32;
/// The wait before the second try; it doubles for each try after.
pub const RETRY_BASE: Duration = Duration::from_millis(500);
/// How long one try may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Tries per notification when the service does not say.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// The record keys a notification carries when its event names none.
pub const DEFAULT_PARAMS: &[&str] = &[
    "_id",
    "_service_name",
    "_callback_state",
    "_callback_reason",
    "_customer_number",
    "_desired_time",
];

/// One event of a list (`[gms.event_lists.NAME._cbe_on_…]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// The record keys the event's notification carries, comma separated
    /// (empty: [`DEFAULT_PARAMS`]).
    pub notify_params: String,
}

/// Event lists by name, each its events by name.
pub type EventLists = BTreeMap<String, BTreeMap<String, EventSettings>>;

/// One notification to deliver.
#[derive(Debug, Clone)]
struct Delivery {
    /// The callback it is about (its notifications go out in order).
    callback: String,
    to: Target,
    body: Value,
    attempts: u32,
}

/// Where a service's notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `httpcb`: POSTed to this URL.
    Http(String),
    /// `orscb`: sent to this ORS session as an event.
    Session(String),
}

/// Queues notifications for the delivery task ([`Notifier::run`]).
pub struct Notifier {
    /// For `orscb` notifications.
    sessions: Option<crate::server::Sessions>,
    tx: mpsc::Sender<Delivery>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Delivery>>>,
    lists: EventLists,
    /// Notifications queued or being delivered.
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

/// Whether a service notifies, and where (`None` also for a type other
/// than `httpcb` and `orscb`).
fn target(service: &Service) -> Option<Target> {
    let enabled = service
        .text("_enable_status_notification")
        .is_some_and(|v| !v.eq_ignore_ascii_case("false"));
    if !enabled {
        return None;
    }
    let to = service.text("_status_notification_target")?;
    match service.text("_status_notification_type") {
        None => Some(Target::Http(to)),
        Some(t) if t.eq_ignore_ascii_case("httpcb") => Some(Target::Http(to)),
        Some(t) if t.eq_ignore_ascii_case("orscb") => Some(Target::Session(to)),
        Some(_) => None,
    }
}

/// The events a change of a record means, in order. `old`: the state it
/// had (`None` for a new record); `rescheduled`: its desired time moved.
pub fn events(old: Option<&str>, row: &CallbackRow, rescheduled: bool) -> Vec<&'static str> {
    let new = row.state.as_str();
    let reason = records::record_json(row)
        .get("_callback_reason")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_default();
    let mut out = Vec::new();
    match old {
        None => {
            out.push("_cbe_on_service_create");
            out.push(match new {
                records::SCHEDULED => "_cbe_on_callback_scheduled",
                records::QUEUED => "_cbe_on_callback_queued",
                _ => "_cbe_on_callback_status_updated",
            });
        }
        Some(old) if old == new => {
            if rescheduled {
                out.push("_cbe_on_callback_rescheduled");
            }
        }
        Some(old) => {
            out.push(match new {
                records::QUEUED if old == records::SCHEDULED => "_cbe_on_callback_queued",
                records::ROUTING => "_cbe_on_route_to_agent",
                records::COMPLETED
                    if reason == records::CANCELLED || reason == records::CANCELLED_BY_ADMIN =>
                {
                    "_cbe_on_callback_cancelled"
                }
                records::COMPLETED if reason == records::SUBMIT_FAILED => {
                    "_cbe_on_callback_submit_failed"
                }
                _ => "_cbe_on_callback_status_updated",
            });
            if new == records::COMPLETED {
                out.push("_cbe_on_service_exit");
            }
        }
    }
    out
}

impl Notifier {
    /// A notifier reading events lists from `lists`, sending `orscb`
    /// notifications through `sessions` (none: they are dropped).
    pub fn new(lists: EventLists, sessions: Option<crate::server::Sessions>) -> Notifier {
        let (tx, rx) = mpsc::channel(QUEUE);
        Notifier {
            sessions,
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            lists,
            pending: Arc::default(),
        }
    }

    /// Queues the notifications a change of `row` means for its service
    /// (nothing when the service does not notify). Never waits.
    pub fn changed(
        &self,
        service: &Service,
        old: Option<&str>,
        row: &CallbackRow,
        rescheduled: bool,
    ) {
        let Some(to) = target(service) else {
            return;
        };
        let list = service
            .text("_callback_events_list")
            .and_then(|l| self.lists.get(&l));
        let attempts = service
            .text("_max_notify_delivery_attempts")
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_ATTEMPTS)
            .min(10);
        let record = records::record_json(row);
        for event in events(old, row, rescheduled) {
            let params: Vec<String> = match list {
                Some(list) => match list.get(event) {
                    Some(e) if !e.notify_params.trim().is_empty() => {
                        super::settings::key_list(&e.notify_params)
                    }
                    Some(_) => DEFAULT_PARAMS.iter().map(|k| k.to_string()).collect(),
                    None => continue,
                },
                None => DEFAULT_PARAMS.iter().map(|k| k.to_string()).collect(),
            };
            let mut body = Map::new();
            body.insert("event".into(), Value::from(event));
            body.insert("_id".into(), Value::from(row.id.clone()));
            for key in params {
                if let Some(v) = record.get(&key) {
                    body.insert(key, v.clone());
                }
            }
            let delivery = Delivery {
                callback: row.id.clone(),
                to: to.clone(),
                body: Value::Object(body),
                attempts,
            };
            use std::sync::atomic::Ordering;
            let queued = self
                .pending
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < QUEUE).then_some(n + 1)
                })
                .is_ok();
            if !queued || self.tx.try_send(delivery).is_err() {
                if queued {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
                tracing::warn!(callback = %row.id, event, "notification queue full: notification dropped");
            }
        }
    }

    /// Delivers queued notifications for as long as the server runs: a
    /// callback's in the order they were queued, at most [`IN_FLIGHT`]
    /// at once. Runs once; a second call returns at once.
    pub async fn run(self: Arc<Self>, client: reqwest::Client) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        // The notifications waiting behind one being delivered, by callback.
        let lanes: Arc<std::sync::Mutex<HashMap<String, VecDeque<Delivery>>>> = Arc::default();
        while let Some(delivery) = rx.recv().await {
            {
                let mut lanes = lanes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(lane) = lanes.get_mut(&delivery.callback) {
                    lane.push_back(delivery);
                    continue;
                }
                lanes.insert(delivery.callback.clone(), VecDeque::new());
            }
            let (client, slots, lanes, pending, sessions) = (
                client.clone(),
                slots.clone(),
                lanes.clone(),
                self.pending.clone(),
                self.sessions.clone(),
            );
            tokio::spawn(async move {
                let callback = delivery.callback.clone();
                let mut next = Some(delivery);
                while let Some(delivery) = next {
                    if let Ok(slot) = slots.acquire().await {
                        deliver(&client, sessions.as_ref(), delivery).await;
                        drop(slot);
                    }
                    pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    let mut lanes = lanes
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    next = lanes.get_mut(&callback).and_then(VecDeque::pop_front);
                    if next.is_none() {
                        lanes.remove(&callback);
                    }
                }
            });
        }
    }
}

/// Tries one notification until it is taken or its tries are spent.
async fn deliver(
    client: &reqwest::Client,
    sessions: Option<&crate::server::Sessions>,
    delivery: Delivery,
) {
    let mut wait = RETRY_BASE;
    for attempt in 1..=delivery.attempts {
        let taken = match &delivery.to {
            Target::Http(url) => {
                let sent = client
                    .post(url)
                    .timeout(TIMEOUT)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(delivery.body.to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Target::Session(id) => {
                let name = delivery.body["event"]
                    .as_str()
                    .unwrap_or("_cbe_on_callback_status_updated");
                let mut event = crate::interpreter::Event::new(
                    name.to_string(),
                    crate::interpreter::EventKind::External,
                );
                event.data = Some(delivery.body.clone());
                match sessions {
                    Some(s) => s.post_event(id, event).map_err(|e| e.message),
                    None => Err("no sessions to send to".into()),
                }
            }
        };
        match taken {
            Ok(()) => return,
            Err(error) => {
                tracing::debug!(to = ?delivery.to, %error, attempt, "notification not delivered")
            }
        }
        if attempt < delivery.attempts {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::warn!(to = ?delivery.to, event = %delivery.body["event"], attempts = delivery.attempts,
        "a callback notification was given up");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, reason: Option<&str>) -> CallbackRow {
        let mut record = serde_json::json!({"_id": "a", "_callback_state": state});
        if let Some(r) = reason {
            record["_callback_reason"] = r.into();
        }
        CallbackRow {
            id: "a".into(),
            service: "s".into(),
            customer_number: "1".into(),
            state: state.into(),
            session_id: String::new(),
            created_at: 0,
            updated_at: 0,
            expires_at: 0,
            record: record.to_string(),
            gms_user: String::new(),
        }
    }

    #[test]
    fn changes_are_named_as_gms_names_them() {
        assert_eq!(
            events(None, &row("SCHEDULED", None), false),
            ["_cbe_on_service_create", "_cbe_on_callback_scheduled"]
        );
        assert_eq!(
            events(None, &row("QUEUED", None), false),
            ["_cbe_on_service_create", "_cbe_on_callback_queued"]
        );
        assert_eq!(
            events(Some("SCHEDULED"), &row("QUEUED", None), false),
            ["_cbe_on_callback_queued"]
        );
        assert_eq!(
            events(Some("SCHEDULED"), &row("SCHEDULED", None), true),
            ["_cbe_on_callback_rescheduled"]
        );
        assert!(events(Some("QUEUED"), &row("QUEUED", None), false).is_empty());
        assert_eq!(
            events(Some("QUEUED"), &row("ROUTING", None), false),
            ["_cbe_on_route_to_agent"]
        );
        assert_eq!(
            events(
                Some("QUEUED"),
                &row("COMPLETED", Some("CANCELLED_BY_ADMIN")),
                false
            ),
            ["_cbe_on_callback_cancelled", "_cbe_on_service_exit"]
        );
        assert_eq!(
            events(
                Some("SCHEDULED"),
                &row("COMPLETED", Some("SUBMIT_FAILED")),
                false
            ),
            ["_cbe_on_callback_submit_failed", "_cbe_on_service_exit"]
        );
        assert_eq!(
            events(
                Some("ROUTING"),
                &row("COMPLETED", Some("routed to agent-1")),
                false
            ),
            ["_cbe_on_callback_status_updated", "_cbe_on_service_exit"]
        );
    }
}
