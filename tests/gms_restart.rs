//! A Callback survives the server being killed mid-flow: after Start
//! Callback, the `ors` binary is killed with SIGKILL and started again on
//! the same data directory; the chat then started on the URL the device
//! already holds finds the recovered callback session, which routes it to
//! an agent and completes the record.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // std's kill is SIGKILL on Unix: no shutdown code runs.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(port: u16, data_dir: &std::path::Path, client: &reqwest::Client) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("server.log"))
        .expect("log file");
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_ors"))
            .args(["serve", "--workers", "2", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ors serve starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let r = request.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_resumes_after_the_server_is_killed() {
    let data_dir = std::env::temp_dir().join(format!("ors-gms-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = ors::io::http::http_client(Duration::from_secs(30));
    let server = start(port, &data_dir, &client).await;

    let (status, created) = call(
        client
            .post(format!("{base}/genesys/1/service/callback/chat-immediate"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("gms_user", "device-1")
            .body("_customer_number=6502388511&usr_customer_name=Bob%20Markel"),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["_id"].as_str().expect("_id").to_string();
    let chat_url = created["_start_chat_url"]
        .as_str()
        .expect("url")
        .to_string();
    drop(server); // SIGKILL

    let _server = start(port, &data_dir, &client).await;
    let (status, records) =
        call(client.get(format!("{base}/genesys/1/service/callback?_id={id}"))).await;
    assert_eq!(status, 200, "{records}");
    assert_eq!(records[0]["_callback_state"], "QUEUED");
    let session = records[0]["_ors_session_id"]
        .as_str()
        .expect("session")
        .to_string();

    let (status, chat) = call(
        client
            .post(&chat_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("gms_user", "device-1")
            .body("firstName=Bob&lastName=Markel&subject=bill"),
    )
    .await;
    assert_eq!(status, 200, "{chat}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, reply) = call(
            client
                .post(format!("{chat_url}/refresh"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("transcriptPosition=1"),
        )
        .await;
        let joined = reply["transcriptToShow"]
            .as_array()
            .is_some_and(|t| t.iter().any(|e| e[0] == "Notice.Joined" && e[4] == "AGENT"));
        if joined {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no agent joined after the restart: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, records) =
            call(client.get(format!("{base}/genesys/1/service/callback?_id={id}"))).await;
        if records[0]["_callback_state"] == "COMPLETED" {
            break;
        }
        assert!(Instant::now() < deadline, "record not completed: {records}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, view) = call(client.get(format!("{base}/scxml/session/{session}/query"))).await;
    assert_eq!(view["status"], "completed", "{view}");
    let _ = std::fs::remove_dir_all(PathBuf::from(&data_dir));
}
