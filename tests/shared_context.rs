//! Sessions of one document on one thread share an ECMAScript context and
//! swap their own variables in and out. Interleaved sessions must still be
//! fully isolated: variables, script-created globals, `In()`, `_event`,
//! `_sessionid`, snapshots.

mod common;

use std::sync::Arc;

use common::hosts::QuietHost;

use ors::interpreter::{Event, Session, SessionOptions};
use ors::{Document, LoadOptions, parse_document};
use serde_json::json;

const CHART: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="counting">
  <datamodel>
    <data id="n" expr="0"/>
    <data id="owner" expr="_sessionid"/>
    <data id="seen" expr="[]"/>
  </datamodel>
  <script>var created = 'by script'; function bump(by) { n = n + by; return n; }</script>
  <state id="counting">
    <transition event="add" cond="In('counting') &amp;&amp; owner === _sessionid">
      <script>bump(_event.data.by); seen.push(_event.data.by); extra = (typeof extra === 'undefined') ? 1 : extra + 1;</script>
    </transition>
    <transition event="stop" cond="In('counting')" target="stopped"/>
  </state>
  <state id="stopped">
    <transition event="add" target="wrong"/>
  </state>
  <state id="wrong"/>
</scxml>"#;

fn doc() -> Arc<Document> {
    Arc::new(parse_document(CHART, None, &LoadOptions::default()).expect("loads"))
}

fn send(s: &mut Session, name: &str, data: serde_json::Value) {
    s.enqueue_external(Event::external(name, Some(data)));
    s.process_next_external(&mut QuietHost).expect("processed");
}

fn value(s: &mut Session, expr: &str) -> serde_json::Value {
    s.datamodel_mut()
        .eval_text(expr)
        .expect("evaluates")
        .unwrap_or(json!("undefined"))
}

/// `n` started sessions of [`CHART`], with ids `<prefix>0`, `<prefix>1`, ….
fn started(n: usize, prefix: &str) -> Vec<Session> {
    let doc = doc();
    (0..n)
        .map(|i| {
            let mut s = Session::new(
                doc.clone(),
                SessionOptions {
                    session_id: Some(format!("{prefix}{i}")),
                    ..SessionOptions::default()
                },
            );
            s.start(&mut QuietHost);
            s
        })
        .collect()
}

#[test]
fn interleaved_sessions_of_one_document_stay_isolated() {
    let mut sessions = started(3, "s");
    for round in 1..=4 {
        for (i, s) in sessions.iter_mut().enumerate() {
            send(s, "add", json!({ "by": (i + 1) * 10 + round }));
        }
    }
    // Session 1 stops; the others keep counting.
    send(&mut sessions[1], "stop", json!({}));
    send(&mut sessions[0], "add", json!({ "by": 100 }));
    for (i, s) in sessions.iter_mut().enumerate() {
        let by = (i as i64 + 1) * 10;
        let mut expected_n = (1..=4).map(|r| by + r).sum::<i64>();
        if i == 0 {
            expected_n += 100;
        }
        assert_eq!(value(s, "n"), json!(expected_n), "n of session {i}");
        assert_eq!(value(s, "owner"), json!(format!("s{i}")));
        assert_eq!(value(s, "_sessionid"), json!(format!("s{i}")));
        assert_eq!(value(s, "created"), json!("by script"));
        assert_eq!(value(s, "extra"), json!(if i == 0 { 5 } else { 4 }));
        assert_eq!(value(s, "seen.length"), json!(if i == 0 { 5 } else { 4 }));
        assert_eq!(value(s, "In('stopped')"), json!(i == 1));
    }
    assert_eq!(sessions[1].configuration_names(), vec!["stopped"]);
    assert_eq!(sessions[0].configuration_names(), vec!["counting"]);
}

#[test]
fn snapshots_of_interleaved_sessions_hold_their_own_values() {
    let doc = doc();
    let mut a = Session::new(doc.clone(), SessionOptions::default());
    let mut b = Session::new(doc.clone(), SessionOptions::default());
    a.start(&mut QuietHost);
    b.start(&mut QuietHost);
    send(&mut a, "add", json!({ "by": 1 }));
    send(&mut b, "add", json!({ "by": 2 }));
    let snap_a = a.snapshot().expect("snapshot a");
    let snap_b = b.snapshot().expect("snapshot b");
    assert_eq!(snap_a.datamodel["n"], json!(1));
    assert_eq!(snap_b.datamodel["n"], json!(2));
    assert_eq!(snap_a.datamodel["seen"], json!([1]));
    assert_eq!(snap_b.datamodel["seen"], json!([2]));
}

#[test]
fn a_finished_sessions_variables_do_not_reach_the_next_one() {
    let doc = doc();
    {
        let mut old = Session::new(doc.clone(), SessionOptions::default());
        old.start(&mut QuietHost);
        send(&mut old, "add", json!({ "by": 7 }));
        assert_eq!(value(&mut old, "extra"), json!(1));
    }
    let mut fresh = Session::new(doc.clone(), SessionOptions::default());
    fresh.start(&mut QuietHost);
    assert_eq!(value(&mut fresh, "n"), json!(0));
    assert_eq!(value(&mut fresh, "typeof extra"), json!("undefined"));
    assert_eq!(value(&mut fresh, "seen.length"), json!(0));
}

#[test]
fn documents_with_lexical_declarations_get_their_own_context() {
    let text = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="s">
      <script>let counter = 0; const step = 2;</script>
      <state id="s"><transition event="go" cond="step === 2" target="ok"/></state>
      <state id="ok"/></scxml>"#;
    let doc = Arc::new(parse_document(text, None, &LoadOptions::default()).expect("loads"));
    let mut a = Session::new(doc.clone(), SessionOptions::default());
    let mut b = Session::new(doc.clone(), SessionOptions::default());
    a.start(&mut QuietHost);
    b.start(&mut QuietHost);
    for s in [&mut a, &mut b] {
        send(s, "go", json!({}));
        assert_eq!(
            s.configuration_names(),
            vec!["ok"],
            "a second `let` in one realm would fail"
        );
    }
}

/// Start parameters that no `<data>` declares become variables of their
/// own session only; ones that name a built-in (`JSON`, `__proto__`,
/// `Object`) or a system variable do not become variables (the server
/// keeps them in `_data`) and change nothing, for that session or any
/// later one sharing the context.
#[test]
fn start_parameters_never_replace_built_ins_or_leak_between_sessions() {
    let doc = doc();
    let start = |id: &str, data: serde_json::Value| {
        let mut s = Session::new(
            doc.clone(),
            SessionOptions {
                session_id: Some(id.to_string()),
                initial_data: data.as_object().expect("an object").clone(),
                declare_undeclared_data: true,
                ..SessionOptions::default()
            },
        );
        s.start(&mut QuietHost);
        s
    };
    let mut hostile = start(
        "h",
        json!({"JSON": 1, "__proto__": {"polluted": true}, "Object": "x", "_sessionid": "forged", "customer": "alice"}),
    );
    assert_eq!(
        value(&mut hostile, "JSON.stringify({a: 1})"),
        json!("{\"a\":1}")
    );
    assert_eq!(value(&mut hostile, "typeof Object.keys"), json!("function"));
    assert_eq!(value(&mut hostile, "_sessionid"), json!("h"));
    assert_eq!(
        value(&mut hostile, "({}).polluted === undefined"),
        json!(true)
    );
    assert_eq!(value(&mut hostile, "typeof JSON"), json!("object"));
    assert_eq!(value(&mut hostile, "customer"), json!("alice"));
    let mut next = start("n", json!({"customer": "bob"}));
    assert_eq!(value(&mut next, "customer"), json!("bob"));
    assert_eq!(value(&mut next, "JSON.stringify([1])"), json!("[1]"));
    assert_eq!(value(&mut hostile, "customer"), json!("alice"));
}

/// One customer's data written onto a built-in's prototype must not reach
/// another customer's session of the same document: a document that may
/// change a built-in gets a context of its own.
#[test]
fn a_document_that_patches_builtins_shares_nothing_through_them() {
    const PATCHING: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="s">
      <datamodel><data id="seen" expr="null"/></datamodel>
      <state id="s">
        <transition event="set"><script>Object.prototype[_event.data.k] = _event.data.v;</script></transition>
        <transition event="mathset"><assign location="Math.secret" expr="_event.data.v"/></transition>
        <transition event="peek"><assign location="seen" expr="[({}).card, Math.secret]"/></transition>
      </state>
    </scxml>"#;
    let doc = Arc::new(parse_document(PATCHING, None, &LoadOptions::default()).expect("loads"));
    assert!(!ors::datamodel::shared::shareable(&doc));
    let start = |id: &str| {
        let mut s = Session::new(
            doc.clone(),
            SessionOptions {
                session_id: Some(id.into()),
                ..SessionOptions::default()
            },
        );
        s.start(&mut QuietHost);
        s
    };
    let mut alice = start("alice");
    let mut bob = start("bob");
    send(&mut alice, "set", json!({"k": "card", "v": "4111-alice"}));
    send(&mut alice, "mathset", json!({"v": "alice's"}));
    send(&mut bob, "peek", json!({}));
    assert_eq!(value(&mut bob, "seen"), json!([null, null]));
    send(&mut alice, "peek", json!({}));
    assert_eq!(value(&mut alice, "seen"), json!(["4111-alice", "alice's"]));
    // A document that only reads built-ins keeps sharing.
    assert!(ors::datamodel::shared::shareable(&self::doc()));
}

/// Switching sessions overwrites the names both have and removes the ones
/// only the previous session had, so a global one session created is never
/// there for the other, not even as `undefined`; and a session's snapshot
/// taken while another session's variables are installed is the one it
/// would give installed.
#[test]
fn switching_keeps_names_one_session_lacks_out_and_snapshots_need_no_switch() {
    let doc = doc();
    let mut a = Session::new(doc.clone(), SessionOptions::default());
    let mut b = Session::new(doc.clone(), SessionOptions::default());
    a.start(&mut QuietHost);
    b.start(&mut QuietHost);
    send(&mut a, "add", json!({ "by": 3 }));
    value(&mut a, "onlyA = {deep: [1, 2]}");
    let probe = "(function () { try { extra; return 'there'; } catch (e) { return e.name; } })()";
    for _ in 0..3 {
        assert_eq!(value(&mut b, probe), json!("ReferenceError"));
        assert_eq!(value(&mut b, "'onlyA' in this"), json!(false));
        assert_eq!(value(&mut b, "n"), json!(0));
        assert_eq!(value(&mut a, "extra"), json!(1));
        assert_eq!(value(&mut a, "onlyA.deep[1]"), json!(2));
        assert_eq!(value(&mut a, "n"), json!(3));
    }
    // `a` is installed: b's snapshot comes from the copy b keeps.
    let b_aside = b.snapshot().expect("snapshot b while a is installed");
    value(&mut b, "n");
    let b_installed = b.snapshot().expect("snapshot b installed");
    assert_eq!(b_aside.datamodel, b_installed.datamodel);
    let a_aside = a.snapshot().expect("snapshot a while b is installed");
    assert_eq!(a_aside.datamodel["onlyA"], json!({"deep": [1, 2]}));
    assert_eq!(a_aside.datamodel["extra"], json!(1));
    assert!(b_installed.datamodel.get("onlyA").is_none());
}

/// `_ioprocessors` is built when a script first reads it; sessions that
/// share a context each read their own (the same object each time, also
/// after another session was installed in between), cannot replace it,
/// and a session that never read it is unaffected.
#[test]
fn each_session_reads_its_own_ioprocessors_across_switches() {
    let mut sessions = started(3, "io");
    for round in 0..2 {
        for (i, s) in sessions.iter_mut().enumerate().take(2) {
            assert_eq!(
                value(s, "_ioprocessors.scxml.location"),
                json!(format!("#_scxml_io{i}")),
                "round {round}"
            );
            if round == 0 {
                value(s, "_ioprocessors.scxml.mark = 'kept'");
            }
            // The same object as before the other sessions ran.
            assert_eq!(value(s, "_ioprocessors.scxml.mark"), json!("kept"));
            assert_eq!(
                value(
                    s,
                    "(function () { 'use strict'; try { _ioprocessors = 1; return 'assigned'; } \
                     catch (e) { return e.name; } })()"
                ),
                json!("TypeError"),
            );
        }
        // The third never reads it until now, and sees its own, unmarked.
        if round == 1 {
            let s = &mut sessions[2];
            assert_eq!(
                value(s, "_ioprocessors.scxml.location"),
                json!("#_scxml_io2")
            );
            assert_eq!(
                value(s, "typeof _ioprocessors.scxml.mark"),
                json!("undefined")
            );
        }
    }
}
