//! `src` over HTTP: `<script src>`, `<data src>` and `<invoke src>` fetched
//! from a local HTTP server through the one loader; failures surface as the
//! Recommendation says (a script that cannot be fetched rejects the
//! document, data that cannot be fetched raises error.execution); and the
//! loader's own rules: the allow-list on every redirect hop, the body cap,
//! relative references against an HTTP base.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use ors::host::loader::Loader;
use ors::host::{Fetches, LocalHost};
use ors::interpreter::{Session, SessionOptions};
use ors::LoadOptions;

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
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(socket, app).await;
    });
    format!("http://{addr}")
}

/// Builds the document through the host's loader, runs it on a host whose
/// child fetches are driven as local tasks, and names its final state.
async fn final_state(doc_text: &str) -> Result<String, String> {
    let doc = Loader::default()
        .build_document(doc_text, None, &LoadOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _| {}));
            let id = host.add(Session::new(Arc::new(doc), SessionOptions::default()));
            let mut fetches = Fetches::new();
            host.start(&id);
            loop {
                host.run_until_idle(&mut |_, _, _| {});
                fetches.start(&mut host);
                if fetches.is_empty() {
                    break;
                }
                let (fetch, result) = fetches.next().await;
                host.fetched(fetch, result);
            }
            let session = host.session(&id).ok_or("session gone")?;
            let info = session.final_info().ok_or("did not finish")?;
            Ok(session.document().state(info.state).name.to_string())
        })
        .await
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
    let result = final_state(&doc).await;
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
    let (script, data) = (
        final_state(&missing_script).await,
        final_state(&missing_data).await,
    );
    let err = script.expect_err("a script that cannot be fetched rejects the document");
    assert!(err.contains("404"), "{err}");
    assert_eq!(data, Ok("pass".to_string()));
}
