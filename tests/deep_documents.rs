//! The nesting limit's ceiling is safe: a document nested as deep as
//! `documents.max_nesting` may be set (500 levels) is parsed, built,
//! run (entered to its deepest state, exited, re-entered, snapshotted and
//! restored) and dropped on a thread with a 2 MiB stack — the size of the
//! HTTP runtime's threads, where documents are loaded. One past the limit
//! is refused with its line and column. Its own test binary, as the limit
//! is process-wide.

use std::sync::Arc;

use ors::host::LocalHost;
use ors::interpreter::{Event, Session, SessionOptions};
use ors::parser::xml::{MAX_DEPTH_CEILING, set_depth_limit};
use ors::{LoadOptions, parse_document};

fn nested(levels: usize) -> String {
    let mut doc = String::from(
        "<scxml xmlns=\"http://www.w3.org/2005/07/scxml\" version=\"1.0\" datamodel=\"ecmascript\">\n",
    );
    // <scxml> is the first level and the <transition> the last.
    let states = levels - 2;
    for i in 1..=states {
        doc.push_str(&format!("<state id=\"s{i}\">"));
        if i == states {
            doc.push_str("<transition event=\"again\" target=\"s1\"/>");
        }
    }
    for _ in 1..=states {
        doc.push_str("</state>");
    }
    doc.push_str("\n</scxml>\n");
    doc
}

#[test]
fn a_document_nested_to_the_ceiling_runs_on_a_small_stack() {
    set_depth_limit(MAX_DEPTH_CEILING);
    let text = nested(MAX_DEPTH_CEILING);
    let outcome = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let doc =
                Arc::new(parse_document(&text, None, &LoadOptions::default()).expect("loads"));
            let deepest = format!("s{}", MAX_DEPTH_CEILING - 2);
            let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _| {}));
            let id = host.add(Session::new(doc.clone(), SessionOptions::default()));
            host.start(&id);
            let entered = host.session(&id).unwrap().configuration_names();
            assert_eq!(entered.len(), MAX_DEPTH_CEILING - 2);
            assert_eq!(entered.last(), Some(&deepest));
            host.deliver(&id, Event::external("again", None));
            host.run_until_idle(&mut |_, _, _| {});
            let session = host.session_mut(&id).unwrap();
            assert_eq!(session.configuration_names().last(), Some(&deepest));
            let snapshot = session.snapshot().expect("snapshots");
            let restored =
                Session::restore(doc, &snapshot, SessionOptions::default()).expect("restores");
            assert_eq!(restored.configuration_names().last(), Some(&deepest));
            drop(host);
            drop(restored);
        })
        .expect("a thread")
        .join();
    assert!(outcome.is_ok(), "the deep document failed on a 2 MiB stack");

    let refused = parse_document(
        &nested(MAX_DEPTH_CEILING + 1),
        None,
        &LoadOptions::default(),
    )
    .expect_err("one level past the limit");
    let said = refused.to_string();
    assert!(
        said.contains(&format!("deeper than {MAX_DEPTH_CEILING} levels")),
        "{said}"
    );
    assert!(said.contains(":2:"), "{said}");
}
