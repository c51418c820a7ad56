//! A session snapshotted after every macrostep (serialized to JSON text and
//! restored into a fresh session) must produce exactly the trace of a run
//! that was never interrupted.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::hosts::ManualClockHost;
use ors::interpreter::{Event, Session, SessionOptions, SessionSnapshot};
use ors::{Document, LoadOptions, load_file};

/// One step of the script: an external event, or time passing.
enum Step {
    Send(&'static str),
    Advance(u64),
}

fn load() -> Arc<Document> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/snapshot/roundtrip.scxml");
    Arc::new(load_file(&path, &LoadOptions::default()).expect("fixture loads"))
}

fn script() -> Vec<Step> {
    use Step::*;
    vec![
        Send("next"),
        Send("next"),
        Advance(100),
        Send("pause"),
        Advance(100),
        Advance(150),
        Advance(300),
        Send("next"),
        Send("finish"),
    ]
}

/// Applies one step and drains the external queue; records what happened.
fn apply(session: &mut Session, host: &mut ManualClockHost, step: &Step, trace: &mut Vec<String>) {
    match step {
        Step::Send(name) => session.enqueue_external(Event::external(*name, None)),
        Step::Advance(ms) => {
            host.now += ms;
            let now = host.now;
            session.fire_due_timers(now, host);
        }
    }
    while let Some((ev, _)) = session.process_next_external(host) {
        trace.push(format!(
            "{} -> {:?}",
            ev.name,
            session.configuration_names()
        ));
    }
}

fn run(snapshot_every_step: bool) -> (Vec<String>, Vec<String>, Option<serde_json::Value>) {
    let doc = load();
    let mut host = ManualClockHost {
        now: 1_000_000,
        ..ManualClockHost::default()
    };
    let options = SessionOptions {
        session_id: Some("fixed-session".into()),
        ..SessionOptions::default()
    };
    let mut session = Session::new(doc.clone(), options.clone());
    session.start(&mut host);
    let mut trace = vec![format!("start -> {:?}", session.configuration_names())];
    for step in script() {
        if snapshot_every_step {
            let snap = session.snapshot().expect("snapshot");
            let text = serde_json::to_string(&snap).expect("serializes");
            let back: SessionSnapshot = serde_json::from_str(&text).expect("deserializes");
            assert_eq!(back, snap, "snapshot survives JSON unchanged");
            // The text the store keeps (the data model written as text by
            // the model) is the same snapshot.
            let stored = session.snapshot_text().expect("the stored text");
            let stored: SessionSnapshot = serde_json::from_str(&stored).expect("deserializes");
            assert_eq!(stored, snap, "the stored text reads back as the snapshot");
            session = Session::restore(doc.clone(), &back, options.clone()).expect("restores");
        }
        apply(&mut session, &mut host, &step, &mut trace);
    }
    assert!(
        !session.is_running(),
        "the script ends the session: {trace:?}"
    );
    (trace, host.logs, session.done_data().cloned())
}

#[test]
fn restored_after_every_macrostep_matches_uninterrupted_run() {
    let (plain_trace, plain_logs, plain_done) = run(false);
    let (restored_trace, restored_logs, restored_done) = run(true);
    assert_eq!(plain_trace, restored_trace);
    assert_eq!(plain_logs, restored_logs);
    assert_eq!(plain_done, restored_done);
}

#[test]
fn uninterrupted_run_follows_history_timers_and_data() {
    let (trace, _, done) = run(false);
    assert_eq!(
        trace,
        vec![
            r#"start -> ["main", "work", "phase", "a"]"#,
            r#"next -> ["main", "work", "phase", "b", "b1"]"#,
            r#"next -> ["main", "work", "phase", "b", "b2"]"#,
            r#"pause -> ["main", "paused"]"#,
            // The first tick was not cancelled by leaving b2; it arrives
            // while paused and is ignored there.
            r#"tick -> ["main", "paused"]"#,
            r#"resume -> ["main", "work", "phase", "b", "b2"]"#,
            r#"tick -> ["main", "work", "phase", "a"]"#,
            r#"next -> ["main", "work", "phase", "b", "b1"]"#,
            // Halted: every state has been exited.
            r#"finish -> []"#,
        ]
    );
    // seen: 'a' left with count 1 and depth 1, then the resume note, then 'a'
    // left again with count 2 after the tick raised depth to 2. The "never"
    // send was cancelled; late_a was bound on the first entry of 'a' (count 0).
    let expected = "a:1:1|resumed:undefined:true:86400000:kept|a:2:2#2#0";
    assert_eq!(done, Some(serde_json::json!({ "result": expected })));
}

#[test]
fn snapshot_keeps_pending_delayed_sends_with_due_times() {
    let doc = load();
    let mut host = ManualClockHost {
        now: 5_000,
        ..ManualClockHost::default()
    };
    let mut session = Session::new(doc.clone(), SessionOptions::default());
    session.start(&mut host);
    for name in ["next", "next"] {
        session.enqueue_external(Event::external(name, None));
        while session.process_next_external(&mut host).is_some() {}
    }
    let snap = session.snapshot().expect("snapshot");
    assert_eq!(snap.configuration, vec!["main", "work", "phase", "b", "b2"]);
    assert_eq!(
        snap.delayed.len(),
        1,
        "the cancelled send is gone: {:?}",
        snap.delayed
    );
    assert_eq!(snap.delayed[0].sendid, "tick");
    assert_eq!(snap.delayed[0].due_ms, 5_200);
    let mut restored = Session::restore(doc, &snap, SessionOptions::default()).expect("restores");
    assert_eq!(restored.fire_due_timers(5_199, &mut host), 0);
    assert_eq!(restored.fire_due_timers(5_200, &mut host), 1);
    let (ev, _) = restored
        .process_next_external(&mut host)
        .expect("tick queued");
    assert_eq!(&*ev.name, "tick");
    assert_eq!(
        restored.configuration_names(),
        vec!["main", "work", "phase", "a"]
    );
}
