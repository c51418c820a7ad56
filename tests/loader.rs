//! `src` over HTTP: `<script src>`, `<data src>` and `<invoke src>` fetched
//! from a local HTTP server through the one loader; failures surface as the
//! Recommendation says (a script that cannot be fetched rejects the
//! document, data that cannot be fetched raises error.execution).

mod common;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use ors::host::LocalHost;
use ors::interpreter::{Session, SessionOptions};
use ors::{LoadOptions, parse_document};

async fn serve() -> String {
    let app = Router::new()
        .route(
            "/lib.js",
            get(|| async { "function double(x) { return 2 * x; }" }),
        )
        .route("/data.json", get(|| async { r#"{"n": 21}"# }))
        .route(
            "/child.scxml",
            get(|| async {
                r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0">
                     <final id="end"><donedata><param name="ok" expr="true"/></donedata></final>
                   </scxml>"#
            }),
        );
    common::serve_router(app).await
}

fn final_state(doc_text: &str) -> Result<String, String> {
    let doc = parse_document(doc_text, None, &LoadOptions::default()).map_err(|e| e.to_string())?;
    let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _| {}));
    let id = host.add(Session::new(Arc::new(doc), SessionOptions::default()));
    host.start(&id);
    host.run_until_idle(&mut |_, _, _| {});
    let session = host.session(&id).ok_or("session gone")?;
    let info = session.final_info().ok_or("did not finish")?;
    Ok(session.document().state(info.state).name.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_data_and_invoke_sources_load_over_http() {
    let base = serve().await;
    let doc = format!(
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="s">
  <datamodel><data id="d" src="{base}/data.json"/></datamodel>
  <script src="{base}/lib.js"/>
  <state id="s">
    <invoke src="{base}/child.scxml"/>
    <transition event="done.invoke" cond="_event.data.ok &amp;&amp; double(d.n) === 42" target="pass"/>
    <transition event="*" target="fail"/>
  </state>
  <final id="pass"/><final id="fail"/>
</scxml>"#
    );
    let result = tokio::task::spawn_blocking(move || final_state(&doc))
        .await
        .expect("joins");
    assert_eq!(result, Ok("pass".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfetchable_sources_fail_as_specified() {
    let base = serve().await;
    let missing_script = format!(
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0">
  <script src="{base}/missing.js"/><state id="s"/></scxml>"#
    );
    let missing_data = format!(
        r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="s">
  <datamodel><data id="d" src="{base}/missing.json"/></datamodel>
  <state id="s">
    <transition event="error.execution" cond="typeof d === 'undefined'" target="pass"/>
    <transition event="*" target="fail"/>
  </state>
  <final id="pass"/><final id="fail"/>
</scxml>"#
    );
    let (script, data) = tokio::task::spawn_blocking(move || {
        (final_state(&missing_script), final_state(&missing_data))
    })
    .await
    .expect("joins");
    let err = script.expect_err("a script that cannot be fetched rejects the document");
    assert!(err.contains("404"), "{err}");
    assert_eq!(data, Ok("pass".to_string()));
}
