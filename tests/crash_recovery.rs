//! Crash recovery of the `ors` binary: 1 000 sessions take events from 64
//! concurrent clients, the server is killed with SIGKILL mid-load and
//! started again on the same store. Every event that was acknowledged must
//! have been applied exactly once, nothing unacknowledged may show up out
//! of order, delayed sends that fell due while the server was down fire in
//! order, and an invoked child is back with its parent. Runs on SQLite and
//! on PostgreSQL (`ORS_TEST_POSTGRES_URL`; required when `CI=true`).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::{ServeProcess, free_port};
use serde_json::Value;

const LEDGERS: usize = 1000;
const CLIENTS: usize = 64;
const ALARMS: usize = 20;
const FAMILIES: usize = 10;

/// Two tests of `scenario(store: Option<String>)` on `threads` runtime
/// threads: one on SQLite, one on a new PostgreSQL database (skipped
/// with a note naming `what` when `ORS_TEST_POSTGRES_URL` is not set;
/// required under CI).
macro_rules! on_both_stores {
    ($sqlite:ident, $postgres:ident, $scenario:ident, $what:literal, $threads:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
        async fn $sqlite() {
            $scenario(None).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
        async fn $postgres() {
            let Some(admin) = common::stores::postgres_admin_url($what) else {
                return;
            };
            let db = common::stores::TestDb::postgres(&admin).await;
            $scenario(Some(db.url())).await;
        }
    };
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Setup {
    port: u16,
    data_dir: PathBuf,
    store: Option<String>,
}

impl Setup {
    /// A free port and a new data directory named after `prefix`.
    fn new(prefix: &str, store: Option<String>) -> Setup {
        let data_dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        Setup {
            port: free_port(),
            data_dir,
            store,
        }
    }

    async fn start(&self) -> ServeProcess {
        let mut extra = Vec::new();
        if let Some(url) = &self.store {
            extra.extend(["--store", url.as_str()]);
        }
        ServeProcess::start(self.port, &self.data_dir, &extra).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

async fn post(client: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> Result<Value, String> {
    common::client::post_form_ok(client, url, form, Duration::from_secs(30)).await
}

async fn query(client: &reqwest::Client, setup: &Setup, id: &str) -> Value {
    let url = setup.url(&format!("/scxml/session/{id}/query"));
    let r = client.get(&url).send().await.expect("query sent");
    assert!(r.status().is_success(), "query {id}: {}", r.status());
    serde_json::from_str(&r.text().await.expect("body")).expect("json")
}

async fn start(
    client: &reqwest::Client,
    setup: &Setup,
    src: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut form = vec![("src", src)];
    form.extend_from_slice(extra);
    let v = post(client, &setup.url("/scxml/session/start"), &form)
        .await
        .expect("session starts");
    v["sessionid"].as_str().expect("sessionid").to_string()
}

/// Per ledger session: the highest seq acknowledged and the seq that was
/// in flight when the server died (it may or may not have been applied).
#[derive(Default, Clone, Copy)]
struct Progress {
    acked: u64,
    in_flight: Option<u64>,
}

async fn crash_and_recover(store: Option<String>) {
    let setup = Setup::new("ors-crash", store);
    let mut server = setup.start().await;
    let client = server.operator_client();

    // 1 000 ledgers, plus children-carrying families.
    let mut ledgers = Vec::with_capacity(LEDGERS);
    for _ in 0..LEDGERS {
        ledgers.push(start(&client, &setup, "fixtures/durable/ledger.scxml", &[]).await);
    }
    let mut families = Vec::new();
    for _ in 0..FAMILIES {
        let id = start(&client, &setup, "fixtures/durable/family.scxml", &[]).await;
        for _ in 0..2 {
            post(
                &client,
                &setup.url(&format!("/scxml/session/{id}/event/ask")),
                &[],
            )
            .await
            .expect("ask acknowledged");
        }
        families.push(id);
    }

    // Load: each client owns every 64th ledger and sends seq 1, 2, 3, ...
    // to each in turn, one request at a time per session.
    let ledgers = Arc::new(ledgers);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (ledgers, stop, client) = (ledgers.clone(), stop.clone(), client.clone());
        let base = setup.url("");
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (c..LEDGERS).step_by(CLIENTS).collect();
            let mut progress = vec![Progress::default(); mine.len()];
            'outer: loop {
                for (k, &i) in mine.iter().enumerate() {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    let seq = progress[k].acked + 1;
                    progress[k].in_flight = Some(seq);
                    let url = format!("{base}/scxml/session/{}/event/apply", ledgers[i]);
                    match post(&client, &url, &[("seq", &seq.to_string())]).await {
                        Ok(_) => {
                            progress[k] = Progress {
                                acked: seq,
                                in_flight: None,
                            }
                        }
                        Err(_) => break 'outer,
                    }
                }
            }
            mine.into_iter().zip(progress).collect::<Vec<_>>()
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Alarms whose delayed sends fall due while the server is down.
    let mut alarms = Vec::new();
    for _ in 0..ALARMS {
        alarms.push(
            start(
                &client,
                &setup,
                "fixtures/durable/alarm.scxml",
                &[("delay", "700")],
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    let killed_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut progress = vec![Progress::default(); LEDGERS];
    for t in tasks {
        for (i, p) in t.await.expect("client task") {
            progress[i] = p;
        }
    }
    let acked: u64 = progress.iter().map(|p| p.acked).sum();
    assert!(
        acked > 1000,
        "the load acknowledged only {acked} events before the kill"
    );

    // Down long enough for every alarm to fall due.
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(killed_at.elapsed())).await;
    let _server = setup.start().await;

    let mut applied_total = 0u64;
    let mut unacked_applied = 0u64;
    for (i, id) in ledgers.iter().enumerate() {
        let v = query(&client, &setup, id).await;
        assert_eq!(v["status"], "running", "ledger {id} after restart: {v}");
        let applied: Vec<u64> = v["data"]["applied"]
            .as_array()
            .unwrap_or_else(|| panic!("ledger {id} has no 'applied': {v}"))
            .iter()
            .map(|n| n.as_u64().expect("seq"))
            .collect();
        let expected_prefix: Vec<u64> = (1..=applied.len() as u64).collect();
        assert_eq!(
            applied, expected_prefix,
            "ledger {id}: each event once, in order"
        );
        let p = progress[i];
        let n = applied.len() as u64;
        let ok = n == p.acked || (p.in_flight == Some(p.acked + 1) && n == p.acked + 1);
        assert!(
            ok,
            "ledger {id}: {n} applied but {} acknowledged (in flight {:?})",
            p.acked, p.in_flight
        );
        applied_total += n;
        unacked_applied += n - p.acked;
    }
    eprintln!(
        "crash test ({}): {acked} events acknowledged before SIGKILL, {applied_total} applied \
         after restart ({unacked_applied} applied whose reply was lost), 0 lost",
        if setup.store.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    );

    // Recovered sessions go on taking events.
    for id in ledgers.iter().take(50) {
        let before = query(&client, &setup, id).await["data"]["applied"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0) as u64;
        let url = setup.url(&format!("/scxml/session/{id}/event/apply"));
        post(&client, &url, &[("seq", &(before + 1).to_string())])
            .await
            .expect("event after restart");
        let after = query(&client, &setup, id).await;
        assert_eq!(
            after["data"]["applied"].as_array().map(Vec::len),
            Some(before as usize + 1)
        );
    }

    // Delayed sends that fell due while the server was down fire, in order.
    for id in &alarms {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = query(&client, &setup, id).await;
            if v["status"] == "completed" {
                assert_eq!(
                    v["data"]["rang"],
                    serde_json::json!(["first", "second"]),
                    "alarm {id}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "alarm {id} never rang: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Parents and their invoked children are back, still linked.
    for id in &families {
        post(
            &client,
            &setup.url(&format!("/scxml/session/{id}/event/ask")),
            &[],
        )
        .await
        .expect("ask after restart");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = query(&client, &setup, id).await;
            if v["data"]["answers"].as_array().map(Vec::len) == Some(3) {
                assert_eq!(
                    v["data"]["answers"],
                    serde_json::json!([1, 2, 3]),
                    "family {id}"
                );
                assert_eq!(v["invokes"], serde_json::json!(["kid"]));
                break;
            }
            assert!(Instant::now() < deadline, "family {id} got no answer: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _ = std::fs::remove_dir_all(&setup.data_dir);
}

on_both_stores!(
    sqlite_store_loses_no_acknowledged_event_across_kill_9,
    postgres_store_loses_no_acknowledged_event_across_kill_9,
    crash_and_recover,
    "the PostgreSQL crash test",
    4
);

/// Starts the server and a `fetcher.scxml` session (with `extra`
/// parameters) whose `<session:fetch>` goes to a host that takes the
/// connection and never answers; kills the server with SIGKILL while the
/// session waits. Answers the host (still listening: a second fetch
/// would show there) and the session's id and fetch request id.
async fn kill_during_a_fetch(
    setup: &Setup,
    extra: &[(&str, &str)],
) -> (tokio::net::TcpListener, String, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listens");
    let url = format!("http://{}/slow.json", listener.local_addr().unwrap());
    let mut server = setup.start().await;
    let client = server.operator_client();
    let mut params = vec![("url", url.as_str())];
    params.extend_from_slice(extra);
    let id = start(&client, setup, "fixtures/server/fetcher.scxml", &params).await;
    // The fetch leaves once the state that asked for it is stored.
    let (socket, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("the fetch arrives")
        .expect("accepted");
    let q = query(&client, setup, &id).await;
    assert_eq!(q["configuration"], serde_json::json!(["fetching"]), "{q}");
    let requestid = q["data"]["fetch_req"]
        .as_str()
        .expect("requestid")
        .to_string();
    server.kill();
    drop(socket);
    (listener, id, requestid)
}

/// Queries the session until `done` holds (30 s at most); answers the
/// last query.
async fn query_until(
    client: &reqwest::Client,
    setup: &Setup,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = query(client, setup, id).await;
        if done(&q) {
            return q;
        }
        assert!(Instant::now() < deadline, "{what}: {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request in flight when the server dies is answered once it is back:
/// a `<session:fetch>` whose host took the connection but never answered
/// becomes `error.session.fetch` with `error: "interrupted"` (without it
/// the session would wait for ever; the fetch is not made twice).
async fn cut_off_request_is_answered_interrupted(store: Option<String>) {
    let setup = Setup::new("ors-interrupted", store);
    let (listener, id, _) = kill_during_a_fetch(&setup, &[]).await;

    let server = setup.start().await;
    let client = server.operator_client();
    let q = query_until(&client, &setup, &id, "the session still waits", |q| {
        q["configuration"] != serde_json::json!(["fetching"])
    })
    .await;
    assert_eq!(q["configuration"], serde_json::json!(["failed"]), "{q}");
    let error = &q["data"]["error"];
    assert_eq!(error["error"], "interrupted", "{q}");
    assert_eq!(error["requestid"], q["data"]["fetch_req"], "{q}");
    // Nobody asked the host again.
    let again = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(again.is_err(), "the fetch was made again after the restart");
    drop(server);
    let _ = std::fs::remove_dir_all(&setup.data_dir);
}

on_both_stores!(
    sqlite_store_answers_a_cut_off_request_interrupted,
    postgres_store_answers_a_cut_off_request_interrupted,
    cut_off_request_is_answered_interrupted,
    "the PostgreSQL interrupted-request test",
    2
);

/// The worker a server session id names (its last two hex digits).
fn worker_of(id: &str) -> u8 {
    u8::from_str_radix(&id[id.len() - 2..], 16).expect("a server session id")
}

/// An event between sessions of two workers is not lost with the server:
/// the sender's state that sent it is stored (its `go` was answered) while
/// the receiver's worker is still busy with a long script, so the event
/// has not reached the receiver's state when the server is killed. After
/// the restart the receiver gets it once.
async fn event_between_sessions_survives_kill_9(store: Option<String>) {
    let setup = Setup::new("ors-letter", store);
    let mut extra = vec!["--workers", "2"];
    if let Some(url) = &setup.store {
        extra.extend(["--store", url.as_str()]);
    }
    let mut server = ServeProcess::start(setup.port, &setup.data_dir, &extra).await;
    let client = server.operator_client();
    let receiver = start(
        &client,
        &setup,
        "fixtures/server/parcel_receiver.scxml",
        &[],
    )
    .await;
    let mut sender = start(&client, &setup, "fixtures/server/parcel_sender.scxml", &[]).await;
    while worker_of(&sender) == worker_of(&receiver) {
        sender = start(&client, &setup, "fixtures/server/parcel_sender.scxml", &[]).await;
    }
    // Keep the receiver's worker busy; its answer never comes (the server
    // dies first).
    let spin_url = setup.url(&format!("/scxml/session/{receiver}/event/spin"));
    let spin_client = client.clone();
    let spinning = tokio::spawn(async move {
        let _ = spin_client
            .post(&spin_url)
            .form(&[("ms", "6000")])
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let go = post(
        &client,
        &setup.url(&format!("/scxml/session/{sender}/event/go")),
        &[("to", receiver.as_str()), ("label", "sent before the kill")],
    )
    .await
    .expect("the sender takes 'go'");
    assert_eq!(go["configuration"], serde_json::json!(["sent"]), "{go}");
    server.kill();
    spinning.abort();

    // After the restart, and again after the receiver's state with the
    // event was stored and the server stopped once more: delivered, once.
    for _ in 0..2 {
        let server = ServeProcess::start(setup.port, &setup.data_dir, &extra).await;
        let client = server.operator_client();
        let q = query_until(
            &client,
            &setup,
            &receiver,
            "the event sent before the kill never arrived",
            |q| q["configuration"] == serde_json::json!(["got"]),
        )
        .await;
        assert_eq!(q["data"]["label"], "sent before the kill", "{q}");
        assert_eq!(q["data"]["parcels"], 1, "{q}");
        drop(server);
    }
    let _ = std::fs::remove_dir_all(&setup.data_dir);
}

on_both_stores!(
    sqlite_store_keeps_an_event_between_sessions_across_kill_9,
    postgres_store_keeps_an_event_between_sessions_across_kill_9,
    event_between_sessions_survives_kill_9,
    "the PostgreSQL letter test",
    2
);

/// An answer stored on its way (a letter left in the outbox when the
/// server died) settles its request when the session is restored: the
/// session gets `session.fetch.done`, not `interrupted`. The letter is
/// written here, as the server writes one, while the server is down.
async fn answer_on_its_way_settles_its_request(store: Option<String>) {
    let setup = Setup::new("ors-answer-letter", store);
    let (_listener, id, requestid) =
        kill_during_a_fetch(&setup, &[("child_src", "fixtures/server/counter.scxml")]).await;

    let location = match &setup.store {
        Some(url) => ors::store::StoreLocation::parse(url, &setup.data_dir, false),
        None => ors::store::StoreLocation::parse("", &setup.data_dir, false),
    }
    .expect("store location");
    let store = ors::store::open(&location, 2, &[])
        .await
        .expect("store opens")
        .expect("a store");
    let mut event = ors::model::Event::new("session.fetch.done", ors::model::EventKind::External);
    event.data = Some(serde_json::json!({
        "requestid": requestid,
        "content": {"answered": "before the kill"},
    }));
    let letter = ors::server::outbox::Letter::new(id.clone(), event);
    store
        .execute(&letter.insert_statement().expect("encodes"))
        .await
        .expect("letter written");
    drop(store);

    let server = setup.start().await;
    let client = server.operator_client();
    let q = query_until(&client, &setup, &id, "the session still waits", |q| {
        q["configuration"] == serde_json::json!(["done"])
            || q["configuration"] == serde_json::json!(["failed"])
    })
    .await;
    assert_eq!(q["configuration"], serde_json::json!(["done"]), "{q}");
    assert_eq!(q["data"]["fetched"]["answered"], "before the kill", "{q}");
    assert_eq!(q["data"]["error"], Value::Null, "{q}");
    drop(server);
    let _ = std::fs::remove_dir_all(&setup.data_dir);
}

on_both_stores!(
    sqlite_store_settles_a_request_with_the_answer_on_its_way,
    postgres_store_settles_a_request_with_the_answer_on_its_way,
    answer_on_its_way_settles_its_request,
    "the PostgreSQL answer-letter test",
    2
);
