//! The nesting limit's ceiling is safe: a document nested as deep as
//! `documents.max_nesting` may be set (500 levels) is parsed, built,
//! run (entered to its deepest state, exited, re-entered, snapshotted and
//! restored) and dropped on a thread with a 2 MiB stack — the size of the
//! HTTP runtime's threads, where documents are loaded. One past the limit
//! is refused with its line and column. Includes that each stay within
//! the limit but together nest past it are refused before the expansion
//! walks them. Its own test binary, as the limit is process-wide (both
//! tests set it to the ceiling).

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

/// `<if>`s nested to the ceiling inside one `<onentry>`, the innermost
/// assigning `reached`.
fn nested_ifs(levels: usize) -> String {
    let mut doc = String::from(
        "<scxml xmlns=\"http://www.w3.org/2005/07/scxml\" version=\"1.0\" datamodel=\"ecmascript\">\n\
         <datamodel><data id=\"reached\" expr=\"false\"/></datamodel><state id=\"s\"><onentry>",
    );
    // <scxml>, <state> and <onentry> are three levels, <assign> the last.
    let ifs = levels - 4;
    for _ in 0..ifs {
        doc.push_str("<if cond=\"true\">");
    }
    doc.push_str("<assign location=\"reached\" expr=\"true\"/>");
    for _ in 0..ifs {
        doc.push_str("</if>");
    }
    doc.push_str("</onentry></state>\n</scxml>\n");
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
            let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _, _| {}));
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

            // Executable content nested as deep: built, run and dropped.
            let doc = Arc::new(
                parse_document(
                    &nested_ifs(MAX_DEPTH_CEILING),
                    None,
                    &LoadOptions::default(),
                )
                .expect("loads"),
            );
            let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _, _| {}));
            let id = host.add(Session::new(doc, SessionOptions::default()));
            host.start(&id);
            let reached = host
                .session_mut(&id)
                .unwrap()
                .snapshot()
                .expect("snapshots");
            let data = serde_json::to_string(&reached).expect("json");
            assert!(data.contains("\"reached\":true"), "{data}");
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

/// A chain of four included documents, each 300 levels deep (within the
/// limit on its own), would nest 1 200 levels once expanded: the build
/// refuses it at the include that crosses the limit, on a 2 MiB stack.
#[test]
fn includes_that_together_nest_past_the_limit_are_refused_before_they_are_walked() {
    use ors::parser::{Parsed, Sources};
    set_depth_limit(MAX_DEPTH_CEILING);
    const DEPTH: usize = 300;
    // Document k: a state chain DEPTH - 1 deep whose innermost state
    // includes document k + 1 (the last one includes nothing).
    let chained = |k: usize, last: bool| {
        let mut doc = String::from(
            "<scxml xmlns=\"http://www.w3.org/2005/07/scxml\" \
             xmlns:xi=\"http://www.w3.org/2001/XInclude\" version=\"1.0\">",
        );
        for i in 0..DEPTH - 2 {
            doc.push_str(&format!("<state id=\"d{k}s{i}\">"));
        }
        if !last {
            doc.push_str(&format!(
                "<xi:include href=\"doc{}.scxml\" xpointer=\"d{}s0\"/>",
                k + 1,
                k + 1
            ));
        }
        for _ in 0..DEPTH - 2 {
            doc.push_str("</state>");
        }
        doc.push_str("</scxml>");
        doc
    };
    let outcome = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let mut sources = Sources::new();
            let parsed = Parsed::new(
                &chained(0, false),
                "doc0.scxml".into(),
                Some("/charts/doc0.scxml".into()),
            )
            .expect("each text is within the limit");
            for k in 1..4 {
                let text = chained(k, k == 3);
                sources.insert(
                    format!("/charts/doc{k}.scxml"),
                    Ok(std::sync::Arc::from(text.as_str())),
                );
            }
            assert_eq!(parsed.references()[0].uri, "/charts/doc1.scxml");
            let refused = parsed
                .build(&sources, &LoadOptions::default())
                .expect_err("together they nest too deep");
            refused.to_string()
        })
        .expect("a thread")
        .join()
        .expect("the build ran on a 2 MiB stack");
    assert!(
        outcome.contains(&format!(
            "with its includes, elements nest deeper than {MAX_DEPTH_CEILING} levels"
        )),
        "{outcome}"
    );
    // doc0 and doc1 together already nest ~600 levels.
    assert!(
        outcome.contains("at 'doc1.scxml'"),
        "refused at the include that crosses it: {outcome}"
    );
}
