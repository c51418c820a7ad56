//! Unit tests of `parse_document` on small inline documents (no `src`
//! references): the state tree in document order, default initial states,
//! transitions and their descriptors, document attributes, and errors with
//! their positions.

use super::{LoadError, LoadOptions, parse_document};
use crate::model::{
    Binding, DataModelKind, Document, EventDescriptor, Position, StateId, StateKind,
};

fn parse(text: &str) -> Result<Document, LoadError> {
    parse_document(text, None, &LoadOptions::default())
}

fn doc(body: &str, attrs: &str) -> Document {
    let text = format!(
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" {attrs}>{body}</scxml>"#
    );
    parse(&text).unwrap_or_else(|e| panic!("the document loads: {e}"))
}

fn id(doc: &Document, name: &str) -> StateId {
    doc.state_by_name(name)
        .unwrap_or_else(|| panic!("no state {name}"))
}

fn names(doc: &Document, ids: &[StateId]) -> Vec<String> {
    ids.iter().map(|&s| doc.state(s).name.to_string()).collect()
}

/// The first diagnostic's position and message.
fn first_error(text: &str) -> (Position, String) {
    let e = parse(text).expect_err("the document is rejected");
    let d = e.0.first().expect("at least one diagnostic");
    (d.pos, d.message.clone())
}

const TREE: &str = r#"
  <state id="A" initial="A2">
    <history id="AH" type="deep"><transition target="A1"/></history>
    <state id="A1"/>
    <state id="A2"/>
  </state>
  <parallel id="P">
    <state id="R1"><state id="r1"/></state>
    <state id="R2"/>
  </parallel>
  <final id="F"/>"#;

#[test]
fn states_get_ids_in_document_order_with_kinds_parents_and_ancestors() {
    let d = doc(TREE, r#"initial="A""#);
    let order: Vec<&str> = d.states.iter().skip(1).map(|s| &*s.name).collect();
    assert_eq!(order, ["A", "AH", "A1", "A2", "P", "R1", "r1", "R2", "F"]);
    for (i, s) in d.states.iter().enumerate() {
        assert_eq!(s.id.index(), i, "{}: ids are indexes", s.name);
    }
    assert_eq!(d.state(Document::ROOT).kind, StateKind::Root);
    let kind = |n: &str| d.state(id(&d, n)).kind;
    assert_eq!(kind("A"), StateKind::Compound);
    assert_eq!(kind("AH"), StateKind::History { deep: true });
    assert_eq!(kind("A1"), StateKind::Atomic);
    assert_eq!(kind("P"), StateKind::Parallel);
    assert_eq!(kind("R1"), StateKind::Compound);
    assert_eq!(kind("R2"), StateKind::Atomic);
    assert_eq!(kind("F"), StateKind::Final);

    let a = d.state(id(&d, "A"));
    assert_eq!(names(&d, &a.children), ["A1", "A2"], "history apart");
    assert_eq!(names(&d, &a.history), ["AH"]);
    assert_eq!(a.last_descendant, id(&d, "A2"));
    let r1 = d.state(id(&d, "r1"));
    assert_eq!(names(&d, &r1.ancestors[..2]), ["R1", "P"]);
    assert_eq!(r1.ancestors.last(), Some(&Document::ROOT));
    assert_eq!(r1.parent, Some(id(&d, "R1")));
    assert!(d.is_descendant(id(&d, "r1"), id(&d, "P")));
    assert!(!d.is_descendant(id(&d, "P"), id(&d, "r1")));
    assert!(!d.is_descendant(id(&d, "F"), id(&d, "P")));
}

#[test]
fn initial_transitions_come_from_the_attribute_or_the_first_child() {
    let d = doc(TREE, "");
    let target = |s: StateId| {
        let t = d.state(s).initial.expect("an initial transition");
        names(&d, &d.transition(t).targets)
    };
    // No `initial` on <scxml>: its first child state.
    assert_eq!(target(Document::ROOT), ["A"]);
    assert_eq!(target(id(&d, "A")), ["A2"], "the attribute");
    assert_eq!(target(id(&d, "R1")), ["r1"], "the first child");
    assert_eq!(target(id(&d, "AH")), ["A1"], "history default");
    assert!(d.state(id(&d, "A1")).initial.is_none());

    let d = doc(
        r#"<state id="S"><initial><transition target="S2"/></initial>
             <state id="S1"/><state id="S2"/></state>"#,
        "",
    );
    let t = d.state(id(&d, "S")).initial.expect("<initial> element");
    assert_eq!(names(&d, &d.transition(t).targets), ["S2"]);
}

#[test]
fn transitions_keep_descriptors_targets_type_and_order() {
    let d = doc(
        r#"<state id="S">
             <transition event="a.b.* c. *" cond="true" target="T U" type="internal"/>
             <transition target="T"/>
             <transition event="x"/>
             <state id="T"/><state id="U"/>
           </state>"#,
        "",
    );
    let s = d.state(id(&d, "S"));
    assert_eq!(s.transitions.len(), 3);
    let t0 = d.transition(s.transitions[0]);
    assert_eq!(
        t0.events,
        [
            EventDescriptor::Prefix("a.b".into()),
            EventDescriptor::Prefix("c".into()),
            EventDescriptor::Any,
        ]
    );
    assert!(t0.cond.is_some());
    assert!(t0.internal);
    assert_eq!(names(&d, &t0.targets), ["T", "U"]);
    assert_eq!(t0.source, id(&d, "S"));
    // Internal with descendant targets: the source is the domain.
    assert_eq!(t0.static_domain, Some(id(&d, "S")));
    let t1 = d.transition(s.transitions[1]);
    assert!(t1.events.is_empty(), "eventless");
    assert!(!t1.internal);
    // External: the LCCA of S and T, which is the root.
    assert_eq!(t1.static_domain, Some(Document::ROOT));
    let t2 = d.transition(s.transitions[2]);
    assert!(t2.targets.is_empty());
    assert_eq!(t2.static_domain, None, "targetless");
    assert_eq!(
        t0.position,
        Position {
            line: 2,
            column: 14
        }
    );
}

#[test]
fn document_attributes_are_read() {
    let d = doc(
        r#"<state id="S"/>"#,
        r#"name="demo" datamodel="null" binding="late""#,
    );
    assert_eq!(d.name.as_deref(), Some("demo"));
    assert_eq!(d.datamodel, DataModelKind::Null);
    assert_eq!(d.binding, Binding::Late);
    let d = doc(r#"<state id="S"/>"#, "");
    assert_eq!(d.name, None);
    assert_eq!(d.binding, Binding::Early);
    assert!(!d.has_invokes);
}

#[test]
fn states_without_an_id_get_unique_generated_names() {
    let d = doc(r#"<state><state/></state><state/>"#, "");
    let mut seen: Vec<&str> = d.states.iter().skip(1).map(|s| &*s.name).collect();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|n| !n.is_empty()));
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "names are unique: {seen:?}");
}

#[test]
fn errors_name_the_place() {
    let ns = r#"xmlns="http://www.w3.org/2005/07/scxml" version="1.0""#;
    let (pos, message) = first_error(&format!(
        "<scxml {ns}>\n  <state id=\"a\">\n    <transition target=\"nowhere\"/>\n  </state>\n</scxml>"
    ));
    assert_eq!(pos, Position { line: 3, column: 5 });
    assert!(message.contains("nowhere"), "{message}");

    let (pos, message) = first_error(&format!(
        "<scxml {ns}>\n  <state id=\"a\"/>\n  <state id=\"a\"/>\n</scxml>"
    ));
    assert_eq!(pos.line, 3, "{message}");
    assert!(message.contains('a'), "{message}");

    let (pos, _) = first_error(&format!("<scxml {ns}>\n  <state id=\"a\">\n</scxml>"));
    assert!(
        pos.line >= 2,
        "an unclosed element is reported where it breaks"
    );

    let (_, message) = first_error(r#"<machine version="1.0"><state id="a"/></machine>"#);
    assert!(!message.is_empty());
}

#[test]
fn truncated_input_is_an_error_not_a_panic() {
    let text = format!(
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="A">{TREE}</scxml>"#
    );
    for end in 0..text.len() {
        if text.is_char_boundary(end) {
            let _ = parse(&text[..end]);
        }
    }
    assert!(parse(&text).is_ok());
}

mod dialect {
    use super::*;
    use crate::model::{Action, Dialect, ValueSource};

    fn send_of(doc: &Document) -> &crate::model::SendAction {
        let s = doc.state(id(doc, "s"));
        match &s.onentry[0][0] {
            Action::Send(send) => send,
            other => panic!("not a send: {other:?}"),
        }
    }

    const SEND: &str = r#"<state id="s"><onentry>
        <send event="'app.start'" delay="'200ms'" target="'#_internal'" targettype="'scxml'" sendid="t1"/>
      </onentry></state>"#;

    #[test]
    fn profile_without_datamodel_is_the_ors_dialect() {
        let plain = r#"<state id="s"/>"#;
        assert_eq!(doc(SEND, r#"profile="ecmascript""#).dialect, Dialect::Ors);
        assert_eq!(
            doc(plain, r#"profile="ecmascript" datamodel="ecmascript""#).dialect,
            Dialect::W3c
        );
        assert_eq!(doc(plain, "").dialect, Dialect::W3c);
    }

    #[test]
    fn ors_send_attributes_are_expressions() {
        let d = doc(SEND, r#"profile="ecmascript""#);
        let send = send_of(&d);
        let expr = |v: &Option<ValueSource>| match v {
            Some(ValueSource::Expr(e)) => d.exprs[e.0 as usize].source.to_string(),
            other => panic!("not an expression: {other:?}"),
        };
        assert_eq!(expr(&send.event), "'app.start'");
        assert_eq!(expr(&send.delay), "'200ms'");
        assert_eq!(expr(&send.target), "'#_internal'");
        assert_eq!(expr(&send.type_), "'scxml'");
        assert_eq!(send.id.as_deref(), Some("t1"));
    }

    #[test]
    fn the_w3c_dialect_keeps_literals_and_can_be_forced() {
        let text = format!(
            r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" profile="ecmascript">{SEND}</scxml>"#
        );
        let w3c = parse_document(
            &text,
            None,
            &LoadOptions {
                dialect: Some(Dialect::W3c),
                ..LoadOptions::default()
            },
        );
        // Read as the Rec, the literal '200ms' (with quotes) is no delay.
        let e = w3c.expect_err("a quoted delay is not a W3C delay");
        assert!(e.to_string().contains("not a valid delay"), "{e}");
        let plain = doc(
            r#"<state id="s"><onentry><send event="'x'"/></onentry></state>"#,
            "",
        );
        match &send_of(&plain).event {
            Some(ValueSource::Literal(l)) => assert_eq!(&**l, "'x'"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ors_documents_name_each_attribute_once_and_use_the_ecmascript_profile() {
        let (_, m) = first_error(
            r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" profile="ecmascript"><state id="s"><onentry>
               <send event="'a'" eventexpr="'b'"/></onentry></state></scxml>"#,
        );
        assert!(m.contains("'event'") && m.contains("'eventexpr'"), "{m}");
        let (_, m) = first_error(
            r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" profile="ecmascript"><state id="s"><onentry>
               <send event="'a'" type="'scxml'" targettype="'scxml'"/></onentry></state></scxml>"#,
        );
        assert!(m.contains("'type'") && m.contains("'targettype'"), "{m}");
        let (_, m) = first_error(
            r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" profile="xpath"><state id="s"/></scxml>"#,
        );
        assert!(m.contains("unsupported profile 'xpath'"), "{m}");
    }
}
