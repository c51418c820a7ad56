//! The ORS corpus (`fixtures/ors/`, written here from the ORS and Composer
//! documentation) traced through `ors run --platform sim`: each document
//! runs on the server's platform (every module, the embedded simulators)
//! and its JSON-line steps and logs are checked.

mod common;

use std::process::{Output, Stdio};

use common::cli::{json_lines, ors};
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    common::fixture("ors", name)
}

/// `ors run --platform sim [extra…] FILE`, with a timeout so a stuck
/// strategy fails the test instead of hanging it.
fn run(file: &str, extra: &[&str]) -> Output {
    ors()
        .args(["run", "--platform", "sim", "--timeout", "20"])
        .args(extra)
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .expect("ors runs")
}

/// The run's steps, its stderr, and the names of the events it processed.
fn steps(out: &Output) -> (Vec<Value>, String, Vec<String>) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (stdout, lines) = json_lines(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let events = lines
        .iter()
        .filter_map(|l| l["event"].as_str().map(str::to_string))
        .collect();
    (lines, stderr, events)
}

fn position(events: &[String], name: &str) -> usize {
    events
        .iter()
        .position(|e| e == name)
        .unwrap_or_else(|| panic!("no {name} in {events:?}"))
}

/// The interaction-process page with its included workflow and subroutine,
/// for a call and for a chat: the interaction is presented, the workflow
/// submits to the subroutine's skill target (the request id announced
/// before the answer), redirects to the agent selected, and the session
/// ends when the interaction leaves.
#[test]
fn the_routing_strategy_routes_calls_and_chats_to_an_agent() {
    for media in ["voice", "chat"] {
        let out = run(
            &fixture("routing/RoutingIPD.scxml"),
            &[
                "--interaction",
                media,
                "--udata",
                r#"{"Language":"English"}"#,
            ],
        );
        let (lines, stderr, events) = steps(&out);
        assert_eq!(lines.last().expect("a step")["final"], json!("Exit"));
        let order = [
            "interaction.added",
            "interaction.present",
            "application.start",
            "done.invoke.ChooseTarget1",
            "dialog.playsound.done",
            "queue.submit.requestid",
            "queue.submit.done",
            "interaction.redirect.done",
            "interaction.deleted",
        ];
        let at: Vec<usize> = order.iter().map(|e| position(&events, e)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{events:?}");
        let added = format!("ipd: interaction {media} added");
        for wanted in [
            added.as_str(),
            "ChooseTarget: ",
            "workflow: treatment played",
            "workflow: agent selected: agent-",
            "workflow: redirected to agent-",
            "ipd: interaction left: routed",
        ] {
            assert!(stderr.contains(wanted), "no '{wanted}' in:\n{stderr}");
        }
        assert!(!stderr.contains("error event"), "{stderr}");
    }
}

/// Every queue: and ixn: action on one interaction, each answered by its
/// done or error event in order.
#[test]
fn every_queue_and_interaction_action_answers() {
    let out = run(
        &fixture("platform/queue_and_interaction.scxml"),
        &["--interaction", "voice"],
    );
    let (lines, stderr, _) = steps(&out);
    assert_eq!(lines.last().expect("a step")["final"], json!("Done"));
    assert!(
        stderr.contains(
            "seen: requestid, query, subroutine query, cancel, submit cancelled, query after cancel: unknown, \
             accept, detach, attach, associate refused, associate, deleted, terminate"
        ),
        "{stderr}"
    );
}

/// The dialect and include fixtures behave the same on the platform as in
/// the bare engine.
#[test]
fn the_dialect_fixtures_run_on_the_platform() {
    for (name, last) in [
        ("send_expressions.scxml", "done"),
        ("script_include.scxml", "done"),
        ("include_workflow.scxml", "done"),
        ("unsupported_action.scxml", "done"),
        ("include/GreetingFlow.scxml", "_composer_no_boot"),
    ] {
        let (lines, stderr, _) = steps(&run(&fixture(name), &[]));
        assert_eq!(
            lines.last().expect("a step")["final"],
            json!(last),
            "{name}: {stderr}"
        );
    }
}

/// A strategy whose page includes a file that is not there is refused
/// with the include's file and line, and `ors run` says why.
#[test]
fn a_strategy_that_cannot_load_is_reported() {
    let broken = common::cli::write_temp(
        "corpus_broken_include.scxml",
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" xmlns:xi="http://www.w3.org/2001/XInclude" version="1.0" profile="ecmascript">
  <state id="W">
    <xi:include href="missing/Flow.scxml" parse="xml" xpointer="_composer_entry" resolveid="W"/>
  </state>
</scxml>"#,
    );
    let out = run(&broken.display().to_string(), &["--interaction", "voice"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("corpus_broken_include.scxml:3:5") && stderr.contains("Flow.scxml"),
        "{stderr}"
    );
}

/// The dialog, classification, web-service and statistic fixtures and the
/// `_genesys` object model, traced on the platform with the `[platform]`
/// simulator rules they are written against: every answer arrives as the
/// ORS event it should, and each document reaches its final state.
#[test]
fn the_module_fixtures_run_on_the_platform() {
    let config = fixture("modules/platform.toml");
    let cases: [(&str, &[&str]); 3] = [
        (
            "modules/dialog.scxml",
            &[
                "dialog.play.done",
                "dialog.playsound.done",
                "dialog.collect.done",
                "dialog.playandcollect.done",
                "dialog.start.requestid",
                "dialog.start.done",
                "dialog.runtreatments.done",
                "error.dialog.playsound",
                "dialog.stop.done",
            ],
        ),
        (
            "modules/services.scxml",
            &[
                "classification.classify.done",
                "ws.invoke.done",
                "error.ws.invoke",
                "statistic.subscribe.done",
                "error.statistic.subscribe",
            ],
        ),
        ("modules/object_model.scxml", &[]),
    ];
    for (name, wanted) in cases {
        let (lines, stderr, events) = steps(&run(&fixture(name), &["--config", &config]));
        assert_eq!(
            lines.last().expect("a step")["final"],
            json!("done"),
            "{name}: {stderr}"
        );
        for event in wanted {
            assert!(
                events.iter().any(|e| e == event),
                "{name}: no {event} in {events:?}"
            );
        }
    }
}
