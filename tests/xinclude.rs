//! State-level XInclude (`<xi:include parse="xml" xpointer resolveid>`) as
//! Composer writes it: the included element's states take the including
//! state's prefix, `$$_MY_PREFIX_$$` resolves to it, includes nest and
//! resolve against their own documents (files and HTTP), and every way an
//! include can go wrong is a diagnostic naming the file and line that
//! caused it — never a hang, a panic, or an exponential tree.

mod common;

use std::path::Path;

use axum::Router;
use axum::routing::get;
use common::files::scratch_dir;
use ors::LoadOptions;
use ors::host::loader::Loader;

const HEAD: &str = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" xmlns:xi="http://www.w3.org/2001/XInclude" version="1.0" profile="ecmascript""#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

async fn load(uri: &str) -> Result<ors::Document, String> {
    Loader::default()
        .load_document(uri, &LoadOptions::default())
        .await
        .map_err(|e| e.to_string())
}

fn names(doc: &ors::Document) -> Vec<String> {
    doc.states.iter().map(|s| s.name.to_string()).collect()
}

#[tokio::test]
async fn included_states_take_the_prefix_and_the_macro_resolves() {
    let dir = scratch_dir("xinclude-prefix");
    write(
        &dir,
        "Flow.scxml",
        &format!(
            r#"{HEAD} initial="$$_MY_PREFIX_$$.boot">
  <state id="entry" initial="$$_MY_PREFIX_$$.a">
    <state id="a"><transition event="$$_MY_PREFIX_$$.go" target="b"/></state>
    <final id="b"/>
  </state>
  <final id="boot"/>
</scxml>"#
        ),
    );
    let main = write(
        &dir,
        "Main.scxml",
        &format!(
            r#"{HEAD} initial="W">
  <state id="W" initial="W.entry">
    <xi:include href="Flow.scxml" parse="xml" xpointer="entry" resolveid="W"/>
  </state>
</scxml>"#
        ),
    );
    let doc = load(&main).await.expect("loads");
    let names = names(&doc);
    for expected in ["W", "W.entry", "W.a", "W.b"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    assert!(
        !names.iter().any(|n| n == "boot" || n == "W.boot"),
        "{names:?}"
    );
    let t = doc
        .transitions
        .iter()
        .find(|t| !t.events.is_empty())
        .expect("the event transition");
    assert_eq!(
        doc.state(t.targets[0]).name.as_ref(),
        "W.b",
        "a bare target follows the prefix"
    );
    assert!(format!("{:?}", t.events[0]).contains("W.go"));
}

#[tokio::test]
async fn includes_resolve_against_their_own_document_over_http() {
    let flow = format!(
        r#"{HEAD}>
  <state id="entry" initial="$$_MY_PREFIX_$$.inner">
    <state id="inner">
      <xi:include href="../pages/Leaf.scxml" parse="xml" xpointer="leaf" resolveid="$$_MY_PREFIX_$$.L"/>
    </state>
  </state>
</scxml>"#
    );
    let leaf = format!(
        r#"{HEAD}><state id="leaf"><onentry><script src="leaf.js"/></onentry></state></scxml>"#
    );
    let app = Router::new()
        .route("/flows/Flow.scxml", get(move || async move { flow }))
        .route("/pages/Leaf.scxml", get(move || async move { leaf }))
        .route("/pages/leaf.js", get(|| async { "var leafLoaded = true;" }));
    let base = common::server::serve_router(app).await;
    let main = format!(
        r#"{HEAD} initial="P">
  <state id="P" initial="P.entry">
    <xi:include href="flows/Flow.scxml" parse="xml" xpointer="entry" resolveid="P"/>
  </state>
</scxml>"#
    );
    let doc = Loader::default()
        .build_document(
            &main,
            Some(&format!("{base}/Main.scxml")),
            &LoadOptions::default(),
        )
        .await
        .expect("loads");
    let names = names(&doc);
    assert!(names.iter().any(|n| n == "P.L.leaf"), "{names:?}");
}

#[tokio::test]
async fn a_cycle_is_a_diagnostic_at_the_include() {
    let dir = scratch_dir("xinclude-cycle");
    write(
        &dir,
        "A.scxml",
        &format!(
            r#"{HEAD}>
  <state id="a">
    <xi:include href="B.scxml" parse="xml" xpointer="b" resolveid="B"/>
  </state>
</scxml>"#
        ),
    );
    write(
        &dir,
        "B.scxml",
        &format!(
            r#"{HEAD}>
  <state id="b">
    <xi:include href="A.scxml" parse="xml" xpointer="a" resolveid="A"/>
  </state>
</scxml>"#
        ),
    );
    let main = write(
        &dir,
        "Main.scxml",
        &format!(
            r#"{HEAD}>
  <state id="m">
    <xi:include href="A.scxml" parse="xml" xpointer="a"/>
  </state>
</scxml>"#
        ),
    );
    let err = load(&main).await.expect_err("a cycle is refused");
    assert!(err.contains("include cycle"), "{err}");
    assert!(err.contains("A.scxml#a"), "{err}");
}

#[tokio::test]
async fn every_failure_names_the_file_and_line_that_caused_it() {
    let dir = scratch_dir("xinclude-errors");
    write(
        &dir,
        "Flow.scxml",
        &format!(
            r#"{HEAD}>
  <state id="entry">
    <transition event="go" target="$$_MY_PREFIX_$$.nowhere"/>
  </state>
  <onentry/>
</scxml>"#
        ),
    );
    let cases = [
        (
            r#"<xi:include href="Missing.scxml" parse="xml" xpointer="entry"/>"#,
            vec!["Main.scxml:3:5", "Missing.scxml"],
        ),
        (
            r#"<xi:include href="Flow.scxml" parse="xml" xpointer="absent"/>"#,
            vec!["Main.scxml:3:5", "no element with id 'absent'"],
        ),
        (
            r#"<xi:include href="Flow.scxml" parse="xml"/>"#,
            vec!["Main.scxml:3:5", "xpointer"],
        ),
        (
            r#"<xi:include href="Flow.scxml" parse="xml" xpointer="/1/2"/>"#,
            vec!["Main.scxml:3:5", "unsupported xpointer"],
        ),
        (
            r#"<xi:include href="Flow.scxml" parse="xml" xpointer="entry" resolveid="W"/>"#,
            vec![
                "Flow.scxml:3:5",
                "unknown target state 'W.nowhere'",
                "included from",
                "Main.scxml:3:5",
            ],
        ),
    ];
    for (include, wanted) in cases {
        let main = write(
            &dir,
            "Main.scxml",
            &format!("{HEAD}>\n  <state id=\"W\">\n    {include}\n  </state>\n</scxml>"),
        );
        let err = load(&main).await.expect_err(include);
        for w in wanted {
            assert!(err.contains(w), "{include}: wanted '{w}' in:\n{err}");
        }
    }
    let misplaced = write(
        &dir,
        "Misplaced.scxml",
        &format!(
            r#"{HEAD}>
  <state id="s">
    <onentry><xi:include href="Flow.scxml" parse="xml" xpointer="entry"/></onentry>
  </state>
</scxml>"#
        ),
    );
    let err = load(&misplaced).await.expect_err("misplaced");
    assert!(
        err.contains("Misplaced.scxml:3:14") && err.contains("not in <onentry>"),
        "{err}"
    );
}

#[tokio::test]
async fn a_fallback_stands_in_for_a_document_that_cannot_be_fetched() {
    let dir = scratch_dir("xinclude-fallback");
    let main = write(
        &dir,
        "Main.scxml",
        &format!(
            r#"{HEAD}>
  <state id="W">
    <xi:include href="Gone.scxml" parse="xml" xpointer="entry">
      <xi:fallback><state id="instead"/></xi:fallback>
    </xi:include>
  </state>
</scxml>"#
        ),
    );
    let doc = load(&main).await.expect("loads with the fallback");
    assert!(names(&doc).iter().any(|n| n == "instead"));
}

#[tokio::test]
async fn an_include_bomb_is_refused_not_built() {
    // Each level includes the next one twice: 2^30 states if expanded.
    let dir = scratch_dir("xinclude-bomb");
    for level in 0..30 {
        let next = level + 1;
        write(
            &dir,
            &format!("L{level}.scxml"),
            &format!(
                r#"{HEAD}>
  <state id="s">
    <state id="x"><xi:include href="L{next}.scxml" parse="xml" xpointer="s" resolveid="x"/></state>
    <state id="y"><xi:include href="L{next}.scxml" parse="xml" xpointer="s" resolveid="y"/></state>
  </state>
</scxml>"#
            ),
        );
    }
    write(
        &dir,
        "L30.scxml",
        &format!(r#"{HEAD}><state id="s"/></scxml>"#),
    );
    let main = write(
        &dir,
        "Main.scxml",
        &format!(
            r#"{HEAD}>
  <state id="m"><xi:include href="L0.scxml" parse="xml" xpointer="s" resolveid="m"/></state>
</scxml>"#
        ),
    );
    let err = load(&main).await.expect_err("refused");
    assert!(
        err.contains("nest deeper than") || err.contains("more than"),
        "{err}"
    );
}

#[test]
fn a_page_read_on_its_own_is_its_own_top_level() {
    let doc = ors::parser::parse_document(
        &format!(
            r#"{HEAD} initial="$$_MY_PREFIX_$$.boot">
  <state id="entry"><transition event="done.state.$$_MY_PREFIX_$$.entry" target="$$_MY_PREFIX_$$.boot"/></state>
  <final id="boot"/>
</scxml>"#
        ),
        None,
        &LoadOptions::default(),
    )
    .expect("loads");
    let t = &doc.transitions[doc.state(doc.states[1].id).transitions[0].index()];
    assert!(format!("{:?}", t.events[0]).contains("done.state.entry"));
    assert_eq!(doc.state(t.targets[0]).name.as_ref(), "boot");
}

#[tokio::test]
async fn a_fan_of_self_includes_is_refused_without_reparsing_the_page() {
    // One page whose states each include the next state of the same page
    // twice under new prefixes, padded with a large comment: without a
    // parse cache and a byte budget this took tens of seconds and gigabytes.
    let dir = scratch_dir("xinclude-fan");
    let mut text = format!("{HEAD} initial=\"s0\">\n<!-- {} -->\n", "y".repeat(20_000));
    for i in 0..16 {
        text.push_str(&format!("<state id=\"s{i}\">\n"));
        if i < 15 {
            for k in 0..2 {
                text.push_str(&format!(
                    "<xi:include href=\"fan.scxml\" parse=\"xml\" xpointer=\"s{}\" resolveid=\"$$_MY_PREFIX_$$.k{k}\"/>\n",
                    i + 1
                ));
            }
        }
        text.push_str("</state>\n");
    }
    text.push_str("</scxml>\n");
    let fan = write(&dir, "fan.scxml", &text);
    let err = load(&fan).await.expect_err("refused");
    assert!(err.contains("more than"), "{err}");
}

#[tokio::test]
async fn a_resolveid_must_be_an_id_prefix() {
    let dir = scratch_dir("xinclude-resolveid");
    write(
        &dir,
        "Flow.scxml",
        &format!(r#"{HEAD}><state id="entry"/></scxml>"#),
    );
    let main = write(
        &dir,
        "Main.scxml",
        &format!(
            "{HEAD}>\n  <state id=\"W\">\n    <xi:include href=\"Flow.scxml\" parse=\"xml\" xpointer=\"entry\" resolveid=\"a&quot;/&gt;&lt;b\"/>\n  </state>\n</scxml>"
        ),
    );
    let err = load(&main).await.expect_err("refused");
    assert!(
        err.contains("Main.scxml:3:5") && err.contains("is not a state id prefix"),
        "{err}"
    );
}

#[test]
fn a_w3c_document_keeps_the_macro_as_written() {
    let doc = ors::parser::parse_document(
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="ecmascript">
  <state id="s"><onentry><log expr="'cost: $$_MY_PREFIX_$$.5'"/></onentry></state>
</scxml>"#,
        None,
        &LoadOptions::default(),
    )
    .expect("loads");
    assert!(
        doc.exprs
            .iter()
            .any(|e| e.source.contains("$$_MY_PREFIX_$$.5")),
        "the literal survives"
    );
}
