//! The single-threaded session host: children live exactly as long as their
//! invocation, cancellation removes a whole subtree, and sends to unknown
//! sessions fail at once.

use std::sync::Arc;

use ors::host::LocalHost;
use ors::interpreter::{Event, Session, SessionOptions};
use ors::{LoadOptions, parse_document};

const CHART: &str = r##"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="busy">
  <state id="busy">
    <invoke id="child">
      <content>
        <scxml version="1.0" initial="c">
          <state id="c">
            <invoke id="grandchild">
              <content><scxml version="1.0"><state id="g"/></scxml></content>
            </invoke>
          </state>
        </scxml>
      </content>
    </invoke>
    <transition event="leave" target="idle"/>
    <transition event="lost" target="lost"/>
  </state>
  <state id="idle">
    <onentry><send target="#_scxml_nobody" event="hello"/></onentry>
    <transition event="error.communication" target="reported"/>
  </state>
  <state id="reported"/>
  <state id="lost"/>
</scxml>"##;

fn host_with_top() -> (LocalHost, Arc<str>) {
    let doc = Arc::new(parse_document(CHART, None, &LoadOptions::default()).expect("loads"));
    let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _, _| {}));
    let top = host.add(Session::new(doc, SessionOptions::default()));
    host.start(&top);
    host.run_until_idle(&mut |_, _, _| {});
    (host, top)
}

#[test]
fn invoked_children_and_grandchildren_run_as_sessions() {
    let (host, top) = host_with_top();
    assert_eq!(host.len(), 3, "top, child and grandchild");
    let session = host.session(&top).expect("top");
    assert_eq!(session.active_invokes().len(), 1);
}

#[test]
fn leaving_the_invoking_state_removes_the_whole_subtree() {
    let (mut host, top) = host_with_top();
    host.deliver(&top, Event::external("leave", None));
    let mut seen = Vec::new();
    host.run_until_idle(&mut |id, s, e| {
        if id == &*top {
            seen.push((e.name.to_string(), s.configuration_names()));
        }
    });
    assert_eq!(host.len(), 1, "child and grandchild are gone");
    assert_eq!(
        seen,
        vec![("leave".to_string(), vec!["reported".to_string()])],
        "the send to an unknown session raised error.communication in the same macrostep"
    );
    assert!(host.session(&top).expect("top").active_invokes().is_empty());
}

/// A session that leaves memory with a timer pending (as a hibernated one
/// does) leaves its entry in the host's timer queue until it comes due.
/// Thousands leaving must not keep thousands of entries: the queue is swept
/// once dead entries outnumber the sessions, and the timers of the sessions
/// still held fire as before.
#[test]
fn sessions_leaving_with_timers_pending_leave_no_pile_of_dead_entries() {
    const TIMER: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="waiting">
      <state id="waiting">
        <onentry><send event="tick" delay="1000s"/></onentry>
        <transition event="tick" target="fired"/>
      </state>
      <state id="fired"/>
    </scxml>"#;
    let doc = Arc::new(parse_document(TIMER, None, &LoadOptions::default()).expect("loads"));
    let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _, _| {}));
    let mut ids = Vec::new();
    for _ in 0..6000 {
        let id = host.add(Session::new(doc.clone(), SessionOptions::default()));
        host.start(&id);
        ids.push(id);
    }
    host.run_until_idle(&mut |_, _, _| {});
    assert_eq!(host.timer_entries(), 6000, "one timer each");
    let (leaving, staying) = ids.split_at(5500);
    for id in leaving {
        assert!(host.remove(id));
    }
    assert!(
        host.timer_entries() <= 2 * staying.len() + 1024,
        "{} entries left for {} sessions",
        host.timer_entries(),
        staying.len()
    );
    assert_eq!(host.fire_due_timers(u64::MAX), staying.len());
    host.run_until_idle(&mut |_, _, _| {});
    for id in staying {
        let s = host.session(id).expect("still held");
        assert_eq!(s.configuration_names(), ["fired"]);
    }
}

/// A session waiting for its next event holds no queue storage and no
/// copy of its last event: with hundreds of thousands of sessions in a
/// worker, four events' room kept by each after its first event was ~0.75
/// KiB a session, the event's data a few hundred bytes more. `_event` is
/// then undefined until the next event, as in a session woken from the
/// store.
#[test]
fn sessions_waiting_for_events_keep_no_queue_storage() {
    const PING: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="idle">
      <datamodel><data id="count" expr="0"/></datamodel>
      <state id="idle">
        <transition event="ping"><assign location="count" expr="count + 1"/><raise event="pong"/></transition>
        <transition event="pong"><assign location="count" expr="count + 10"/></transition>
      </state>
    </scxml>"#;
    let doc = Arc::new(parse_document(PING, None, &LoadOptions::default()).expect("loads"));
    let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _, _| {}));
    let ids: Vec<Arc<str>> = (0..3)
        .map(|_| {
            let id = host.add(Session::new(doc.clone(), SessionOptions::default()));
            host.start(&id);
            id
        })
        .collect();
    host.run_until_idle(&mut |_, _, _| {});
    // Two events queued at once for the first session, one for the others.
    assert!(host.deliver(&ids[0], Event::external("ping", None)));
    for id in &ids {
        assert!(host.deliver(id, Event::external("ping", None)));
    }
    let mut seen = 0;
    host.run_until_idle(&mut |_, _, _| seen += 1);
    assert_eq!(seen, 4, "every event processed");
    for (id, pings) in ids.iter().zip([2, 1, 1]) {
        let s = host.session_mut(id).expect("held");
        assert_eq!(s.queue_capacity(), 0, "{id} keeps room for events");
        let count = s.datamodel_mut().eval_text("count").expect("count");
        assert_eq!(count, Some(serde_json::json!(11 * pings)), "{id}");
        let event = s
            .datamodel_mut()
            .eval_text("typeof _event")
            .expect("evaluates");
        assert_eq!(event, Some(serde_json::json!("undefined")), "{id}");
    }
}
