//! The bodies of the fuzz targets in `fuzz/` (run with `cargo fuzz`),
//! kept in the library so that `tests/fuzz_corpus.rs` replays the
//! committed corpus through exactly this code on stable Rust. Each takes
//! arbitrary bytes; none may panic, hang or overflow the stack, and what
//! it computes is thrown away.

use std::sync::{Arc, OnceLock};

use crate::interpreter::{Session, SessionOptions, SessionSnapshot};
use crate::model::{Dialect, Document};
use crate::parser::{LoadOptions, parse_document};

/// Parses and validates `data` as an SCXML document, read as the W3C
/// dialect and as the ORS dialect (the parser, XInclude-free model
/// building, validation, diagnostics).
pub fn document(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for dialect in [Some(Dialect::W3c), Some(Dialect::Ors), None] {
        let options = LoadOptions {
            dialect,
            ..LoadOptions::default()
        };
        if let Ok(doc) = parse_document(&text, Some(std::path::Path::new("fuzz.scxml")), &options) {
            let _ = doc.states.len();
        }
    }
}

/// The small grammars: `<send delay>` (CSS2 times), URS routing targets
/// (`name@statserver.TYPE`, skill expressions) and the target option
/// lists that carry them.
pub fn grammars(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::model::parse_delay(&text);
    let _ = crate::backends::target::parse_target(&text);
    let _ = crate::backends::target::parse_target_option(&text);
}

/// The REST API's parameter reading: the first byte picks the body's
/// content type (form, multipart with boundary `B`, JSON, or a content
/// type taken from the input), the rest is the body; bodies are capped at
/// 64 KiB as a server would.
pub fn request_params(data: &[u8]) {
    use axum::http::{HeaderMap, HeaderValue, header};
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = match kind % 4 {
        0 => ("application/x-www-form-urlencoded".to_string(), rest),
        1 => ("multipart/form-data; boundary=B".to_string(), rest),
        2 => ("application/json".to_string(), rest),
        _ => {
            let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            (
                String::from_utf8_lossy(&rest[..cut]).into_owned(),
                rest.get(cut + 1..).unwrap_or_default(),
            )
        }
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let query = std::str::from_utf8(body)
        .ok()
        .and_then(|b| b.split_once('?'))
        .map(|(_, q)| q);
    let body = axum::body::Body::from(body.to_vec());
    runtime().block_on(async {
        let _ = crate::server::params::read_params(query, &headers, body, 64 * 1024).await;
    });
}

/// Restores a session from `data` read as a whole session snapshot, and
/// from `data` read as the data model part of one, onto a fixed
/// ECMAScript document; a restored session is snapshotted again (the
/// encoder run on whatever the decoder built, shared objects and cycles
/// included).
pub fn snapshot_restore(data: &[u8]) {
    let doc = fixture();
    if let Ok(snapshot) = serde_json::from_slice::<SessionSnapshot>(data) {
        roundtrip(doc, &snapshot);
    }
    if let Ok(datamodel) = serde_json::from_slice::<serde_json::Value>(data) {
        let snapshot = SessionSnapshot {
            session_id: "fuzz".into(),
            document_name: None,
            running: true,
            configuration: vec!["a".into()],
            history: Default::default(),
            initialized: vec!["a".into()],
            states_to_invoke: Vec::new(),
            internal_queue: Vec::new(),
            external_queue: Vec::new(),
            delayed: Vec::new(),
            next_send: 0,
            invokes: Default::default(),
            datamodel,
            stop_reason: None,
            requests: Default::default(),
        };
        roundtrip(doc, &snapshot);
    }
}

fn roundtrip(doc: &Arc<Document>, snapshot: &SessionSnapshot) {
    if let Ok(mut session) = Session::restore(doc.clone(), snapshot, SessionOptions::default())
        && let Ok(again) = session.snapshot()
    {
        let _ = serde_json::to_string(&again);
    }
}

fn fixture() -> &'static Arc<Document> {
    static DOC: OnceLock<Arc<Document>> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0"
            datamodel="ecmascript" initial="a">
          <datamodel><data id="x" expr="1"/></datamodel>
          <state id="a"><transition event="go" target="b"/></state>
          <state id="b"><history id="h"><transition target="b1"/></history><state id="b1"/></state>
          <final id="done"/>
        </scxml>"#;
        Arc::new(parse_document(text, None, &LoadOptions::default()).expect("the fixture loads"))
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}
