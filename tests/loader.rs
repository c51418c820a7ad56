//! `src` over HTTP: `<script src>`, `<data src>` and `<invoke src>` fetched
//! from a local HTTP server through the one loader; failures surface as the
//! Recommendation says (a script that cannot be fetched rejects the
//! document, data that cannot be fetched raises error.execution); and the
//! loader's own rules: the allow-list on every redirect hop, the body cap,
//! relative references against an HTTP base.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use ors::LoadOptions;
use ors::host::loader::{FetchError, Freshness, Loader, LoaderConfig, UrlPolicy};
use ors::host::{Fetches, LocalHost};
use ors::interpreter::{Session, SessionOptions};
use ors::parser::ReferenceKind;

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

/// Builds the document through the host's loader, runs it on a host whose
/// child fetches are driven as local tasks, and names its final state.
async fn final_state(doc_text: &str) -> Result<String, String> {
    let doc = Loader::default()
        .build_document(doc_text, None, &LoadOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    run_to_end(doc).await
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

/// Runs `doc` on a host that drives its child fetches, until nothing is
/// left to do, and names its final state.
async fn run_to_end(doc: ors::Document) -> Result<String, String> {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _, _| {}));
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

/// Serves `router` on an ephemeral loopback port; returns its origin.
async fn serve_router(router: Router) -> String {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(socket, router).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn relative_sources_resolve_against_an_http_base() {
    let app = Router::new()
        .route(
            "/flows/main.scxml",
            get(|| async {
                r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="s">
  <datamodel><data id="d" src="data.json"/></datamodel>
  <script src="../lib/lib.js"/>
  <state id="s">
    <invoke src="child.scxml"/>
    <transition event="done.invoke" cond="double(d.n) === 42" target="pass"/>
    <transition event="*" target="fail"/>
  </state>
  <final id="pass"/><final id="fail"/>
</scxml>"#
            }),
        )
        .route("/flows/data.json", get(|| async { r#"{"n": 21}"# }))
        .route(
            "/lib/lib.js",
            get(|| async { "function double(x) { return 2 * x; }" }),
        )
        .route(
            "/flows/child.scxml",
            get(|| async {
                r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0"><final id="end"/></scxml>"#
            }),
        );
    let base = serve_router(app).await;
    let url = format!("{base}/flows/main.scxml");
    let loader = Loader::default();
    let text = loader.fetch(&url).await.expect("fetched").text;
    let parsed = ors::parser::Parsed::from_location(&text, &url).expect("parses");
    let uris: Vec<(ReferenceKind, &str)> = parsed
        .references()
        .iter()
        .map(|r| (r.kind, r.uri.as_str()))
        .collect();
    assert_eq!(
        uris,
        vec![
            (
                ReferenceKind::Data,
                format!("{base}/flows/data.json").as_str()
            ),
            (ReferenceKind::Script, format!("{base}/lib/lib.js").as_str()),
            (
                ReferenceKind::Invoke,
                format!("{base}/flows/child.scxml").as_str()
            ),
        ]
    );
    let doc = loader
        .load_document(&url, &LoadOptions::default())
        .await
        .expect("builds");
    assert_eq!(run_to_end(doc).await, Ok("pass".to_string()));
}

#[test]
fn a_reference_whose_text_was_not_supplied_is_a_diagnostic_at_its_element() {
    let text = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0">
  <datamodel><data id="d" src="d.json"/></datamodel>
  <script src="lib.js"/>
  <state id="s"><invoke src="child.scxml"/></state>
</scxml>"#;
    let parsed =
        ors::parser::Parsed::new(text, "flow.scxml".into(), Some("/srv/flow.scxml".into()))
            .expect("parses");
    let err = parsed
        .build(&Default::default(), &LoadOptions::default())
        .expect_err("needs its references");
    let at: Vec<String> = err.0.iter().map(|d| d.to_string()).collect();
    assert_eq!(at.len(), 2, "{at:?}");
    assert!(at[0].starts_with("flow.scxml:2:14: <data src>"), "{at:?}");
    assert!(at[1].starts_with("flow.scxml:3:3: <script src>"), "{at:?}");
    // With both texts supplied it builds; the invoke needs nothing yet.
    let mut sources = ors::parser::Sources::new();
    sources.insert("/srv/d.json".into(), Ok("1".into()));
    sources.insert("/srv/lib.js".into(), Ok("var x = 1;".into()));
    assert!(parsed.build(&sources, &LoadOptions::default()).is_ok());
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused() {
    let big = "x".repeat(1000);
    let app = Router::new()
        .route("/sized", get(move || async move { big }))
        .route(
            "/streamed",
            get(|| async {
                // Chunked, without a Content-Length: refused while reading.
                let chunks = (0..100).map(|_| Ok::<_, std::io::Error>("0123456789"));
                axum::body::Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route("/small", get(|| async { "fits" }));
    let base = serve_router(app).await;
    let loader = Loader::new(LoaderConfig {
        max_body_bytes: 64,
        ..LoaderConfig::default()
    });
    for path in ["sized", "streamed"] {
        let err = loader
            .fetch(&format!("{base}/{path}"))
            .await
            .expect_err("over the cap");
        assert!(
            matches!(err, FetchError::TooLarge { limit: 64, .. }),
            "{path}: {err}"
        );
    }
    let ok = loader.fetch(&format!("{base}/small")).await.expect("fits");
    assert_eq!(&*ok.text, "fits");

    let dir = std::env::temp_dir().join(format!("ors-loader-cap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("big.scxml");
    std::fs::write(&file, "y".repeat(65)).expect("write");
    let err = loader
        .fetch(&file.display().to_string())
        .await
        .expect_err("over the cap");
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn redirects_are_followed_only_to_allowed_hosts() {
    let app = Router::new()
        .route(
            "/away",
            get(
                |axum::extract::State(port): axum::extract::State<u16>| async move {
                    axum::response::Redirect::temporary(&format!("http://localhost:{port}/doc"))
                },
            ),
        )
        .route(
            "/hop",
            get(
                |axum::extract::State(port): axum::extract::State<u16>| async move {
                    axum::response::Redirect::temporary(&format!("http://127.0.0.1:{port}/doc"))
                },
            ),
        )
        .route(
            "/loop",
            get(|| async { axum::response::Redirect::temporary("/loop") }),
        )
        .route("/doc", get(|| async { "the document" }));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(socket, app.with_state(port)).await;
    });
    let base = format!("http://127.0.0.1:{port}");
    let loader = Loader::new(LoaderConfig {
        policy: Some(UrlPolicy::new(&["http".into()], &["127.0.0.1".into()], &[])),
        ..LoaderConfig::default()
    });
    let hop = loader
        .fetch(&format!("{base}/hop"))
        .await
        .expect("allowed hop");
    assert_eq!(&*hop.text, "the document");
    let err = loader
        .fetch(&format!("{base}/away"))
        .await
        .expect_err("refused hop");
    assert!(
        matches!(&err, FetchError::NotAllowed { reason, .. } if reason.contains("localhost")),
        "{err}"
    );
    let err = loader
        .fetch(&format!("{base}/loop"))
        .await
        .expect_err("endless redirects");
    assert!(err.to_string().contains("redirects"), "{err}");
}

#[tokio::test]
async fn texts_are_revalidated_with_etag_and_last_modified() {
    #[derive(Default)]
    struct Counts {
        full: AtomicUsize,
        not_modified: AtomicUsize,
    }
    let counts = Arc::new(Counts::default());
    let app = Router::new()
        .route(
            "/etag",
            get(
                |State(c): State<Arc<Counts>>, headers: HeaderMap| async move {
                    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"v1\"")
                    {
                        c.not_modified.fetch_add(1, Ordering::SeqCst);
                        return (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")], "")
                            .into_response();
                    }
                    c.full.fetch_add(1, Ordering::SeqCst);
                    (
                        [("etag", "\"v1\""), ("cache-control", "max-age=0")],
                        "by etag",
                    )
                        .into_response()
                },
            ),
        )
        .route(
            "/dated",
            get(
                |State(c): State<Arc<Counts>>, headers: HeaderMap| async move {
                    let stamp = "Wed, 21 Oct 2015 07:28:00 GMT";
                    if headers
                        .get("if-modified-since")
                        .and_then(|v| v.to_str().ok())
                        == Some(stamp)
                    {
                        c.not_modified.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                    c.full.fetch_add(1, Ordering::SeqCst);
                    (
                        [("last-modified", stamp), ("cache-control", "no-cache")],
                        "by date",
                    )
                        .into_response()
                },
            ),
        )
        .with_state(counts.clone());
    let base = serve_router(app).await;
    let loader = Loader::default();
    for path in ["etag", "dated"] {
        let url = format!("{base}/{path}");
        let first = loader.fetch(&url).await.expect("first");
        assert_eq!(first.freshness, Freshness::Fetched);
        let second = loader.fetch(&url).await.expect("second");
        assert_eq!(second.freshness, Freshness::Revalidated, "{path}");
        assert!(Arc::ptr_eq(&first.text, &second.text), "{path}");
    }
    assert_eq!(counts.full.load(Ordering::SeqCst), 2);
    assert_eq!(counts.not_modified.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn cancelling_an_invoke_while_its_document_loads_drops_the_fetch() {
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
    let seen = Arc::new(std::sync::Mutex::new(Some(seen_tx)));
    let app = Router::new().route(
        "/held.scxml",
        get(move || {
            let seen = seen.clone();
            async move {
                if let Some(tx) = seen.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                // Never answers: only a cancel ends this fetch.
                std::future::pending::<&'static str>().await
            }
        }),
    );
    let base = serve_router(app).await;
    let doc = ors::parse_document(
        &format!(
            r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" version="1.0" initial="invoking">
  <state id="invoking">
    <invoke id="c" src="{base}/held.scxml"/>
    <transition event="leave" target="left"/>
  </state>
  <state id="left"><transition event="error.execution" target="failed"/></state>
  <final id="failed"/>
</scxml>"#
        ),
        None,
        &LoadOptions::default(),
    )
    .expect("builds");
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let mut host = LocalHost::new(SessionOptions::default(), Box::new(|_, _, _, _| {}));
            let id = host.add(Session::new(Arc::new(doc), SessionOptions::default()));
            let mut fetches = Fetches::new();
            host.start(&id);
            fetches.start(&mut host);
            assert_eq!(fetches.len(), 1);
            assert!(host.has_loading());
            seen_rx.await.expect("the fetch reached the server");
            host.deliver(&id, ors::Event::external("leave", None));
            host.run_until_idle(&mut |_, _, _| {});
            fetches.start(&mut host);
            assert_eq!(fetches.len(), 0, "the fetch was aborted");
            assert!(!host.has_loading());
            let session = host.session(&id).expect("parent");
            let names: Vec<&str> = session
                .configuration()
                .iter()
                .map(|s| &*session.document().state(s).name)
                .collect();
            assert_eq!(names, vec!["left"]);
        })
        .await;
}
