//! Criterion micro-benchmarks of the engine's pieces: parsing, transition
//! selection, exit/entry sets, and expression evaluation. The side-by-side
//! comparison with other engines is `benches/compare.sh`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ors::datamodel::DataModel;
use ors::datamodel::ecmascript::EcmaScriptDataModel;
use ors::interpreter::{Event, Host, Session, SessionOptions};
use ors::{Document, LoadOptions, parse_document};

struct QuietHost;

impl Host for QuietHost {
    fn now_ms(&mut self) -> u64 {
        0
    }
    fn log(&mut self, _: &str, _: Option<&str>, _: &str) {}
}

fn workload(name: &str) -> String {
    let path = format!("{}/benches/workloads/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).expect("workload exists")
}

fn load(text: &str) -> Arc<Document> {
    Arc::new(parse_document(text, None, &LoadOptions::default()).expect("loads"))
}

fn parse(c: &mut Criterion) {
    let deep = workload("deep_wide.scxml");
    let large = workload("load_1000.scxml");
    c.bench_function("parse/deep_wide (45 states)", |b| {
        b.iter(|| parse_document(black_box(&deep), None, &LoadOptions::default()).expect("loads"))
    });
    c.bench_function("parse/load_1000 (991 states)", |b| {
        b.iter(|| parse_document(black_box(&large), None, &LoadOptions::default()).expect("loads"))
    });
}

/// One state with 50 event transitions; only the last matches and it is
/// targetless, so the time is selection (descriptor matching), not entry/exit.
fn selection(c: &mut Criterion) {
    let mut text = String::from(
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" datamodel="null"><state id="s">"#,
    );
    for i in 0..49 {
        text.push_str(&format!(
            r#"<transition event="other.{i}.event" target="s"/>"#
        ));
    }
    text.push_str(r#"<transition event="hit.it"/></state></scxml>"#);
    let doc = load(&text);
    let mut session = Session::new(doc, SessionOptions::default());
    session.start(&mut QuietHost);
    let event = Event::external("hit.it.now", None);
    c.bench_function("select_transitions/50 descriptors, targetless hit", |b| {
        b.iter(|| {
            session.enqueue_external(event.clone());
            session.process_next_external(&mut QuietHost)
        })
    });
}

/// deep_wide: every event exits and enters 9-level branches in 4 regions.
fn exit_entry(c: &mut Criterion) {
    let doc = load(&workload("deep_wide.scxml"));
    let mut session = Session::new(doc, SessionOptions::default());
    session.start(&mut QuietHost);
    let events: Vec<Event> = ["e0", "e1", "e2", "e3"]
        .iter()
        .map(|n| Event::external(*n, None))
        .collect();
    let mut i = 0;
    c.bench_function("microstep/deep_wide exit+entry", |b| {
        b.iter(|| {
            session.enqueue_external(events[i % 4].clone());
            i += 1;
            session.process_next_external(&mut QuietHost)
        })
    });
    let doc = load(&workload("ping_pong.scxml"));
    let mut session = Session::new(doc, SessionOptions::default());
    session.start(&mut QuietHost);
    let t = Event::external("t", None);
    c.bench_function("macrostep/ping_pong", |b| {
        b.iter(|| {
            session.enqueue_external(t.clone());
            session.process_next_external(&mut QuietHost)
        })
    });
}

/// A compiled guard and assignment evaluated in a session's context.
fn expressions(c: &mut Criterion) {
    let doc = load(&workload("ping_pong_data.scxml"));
    let a = doc.state_by_name("a").expect("state a");
    let t = doc.transition(doc.state(a).transitions[0]);
    let cond = t.cond.expect("guard");
    let ors::model::Action::Assign {
        location,
        value: ors::model::AssignValue::Expr(expr),
    } = &t.content[0]
    else {
        panic!("the workload assigns n");
    };
    let mut dm = EcmaScriptDataModel::new(doc.clone(), &Default::default());
    dm.declare("n", &ors::datamodel::InitialValue::Json(0.into()))
        .expect("declares");
    dm.state_entered(a);
    c.bench_function("expression/cond n >= 0", |b| {
        b.iter(|| dm.eval_cond(black_box(cond)).expect("evaluates"))
    });
    c.bench_function("expression/assign n = n + 1", |b| {
        b.iter(|| {
            dm.assign_expr(black_box(*location), black_box(*expr))
                .expect("assigns")
        })
    });
}

criterion_group!(benches, parse, selection, exit_entry, expressions);
criterion_main!(benches);
