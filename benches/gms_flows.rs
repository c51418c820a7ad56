//! Complete GMS Chat Immediate flows per second against a server in this
//! process with the embedded routing and chat backends: each flow creates
//! a callback, starts its chat, waits for the agent's greeting (refreshing
//! the transcript), sends a message and disconnects. Reports flows per
//! second and p50/p99 per stage.
//!
//! `cargo bench --bench gms_flows -- [--flows N] [--concurrency C]
//! [--store sqlite|none] [--agents A]`; `--smoke` runs a few flows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ors::app::{Config, spawn};
use ors::backends::settings::AgentSettings;
use serde_json::Value;
use tokio::sync::Mutex;

/// The allocator `ors serve` uses (`src/main.rs`), so the server in this
/// process allocates as the shipped binary does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STAGES: [&str; 6] = ["create", "chat", "agent", "send", "disconnect", "flow"];

struct Options {
    flows: usize,
    concurrency: usize,
    store: String,
    agents: usize,
}

fn options() -> Options {
    let mut o = Options {
        flows: 6000,
        concurrency: 64,
        store: "sqlite".into(),
        agents: 200,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--flows" => o.flows = value.parse().expect("--flows N"),
            "--concurrency" => o.concurrency = value.parse().expect("--concurrency C"),
            "--store" => o.store = value,
            "--agents" => o.agents = value.parse().expect("--agents A"),
            "--smoke" => {
                o.flows = 20;
                o.concurrency = 4;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

async fn post(client: &reqwest::Client, url: &str, body: &str, gms_user: &str) -> Value {
    let r = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("gms_user", gms_user)
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = r.status();
    let text = r.text().await.expect("body");
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).expect("JSON")
}

fn agent_greeted(reply: &Value) -> bool {
    reply["transcriptToShow"]
        .as_array()
        .is_some_and(|t| t.iter().any(|e| e[0] == "Message.Text" && e[4] == "AGENT"))
}

/// One flow; returns the time of each stage.
async fn flow(client: &reqwest::Client, base: &str, n: usize) -> [Duration; 6] {
    let start = Instant::now();
    let mut times = [Duration::ZERO; 6];
    // Each flow is another customer's device.
    let device = format!("bench-device-{n}");
    let post = |url: String, body: String| {
        let device = device.clone();
        async move { post(client, &url, &body, &device).await }
    };
    let created = post(
        format!("{base}/genesys/1/service/callback/chat-immediate"),
        format!("_customer_number=555{n:07}&usr_reason=bench"),
    )
    .await;
    times[0] = start.elapsed();
    let id = created["_id"].as_str().expect("_id").to_string();
    let chat_url = format!("{base}/genesys/1/service/{id}/ixn/chat");
    let t = Instant::now();
    post(chat_url.clone(), "firstName=Bench&lastName=Customer".into()).await;
    times[1] = t.elapsed();
    let t = Instant::now();
    let mut position = 1u64;
    loop {
        let reply = post(
            format!("{chat_url}/refresh"),
            format!("transcriptPosition={position}"),
        )
        .await;
        if agent_greeted(&reply) {
            break;
        }
        position = reply["transcriptPosition"].as_u64().unwrap_or(position);
        assert!(t.elapsed() < Duration::from_secs(60), "no agent for {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times[2] = t.elapsed();
    let t = Instant::now();
    post(format!("{chat_url}/send"), "message=hello".into()).await;
    times[3] = t.elapsed();
    let t = Instant::now();
    post(format!("{chat_url}/disconnect"), String::new()).await;
    times[4] = t.elapsed();
    times[5] = start.elapsed();
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let data_dir = std::env::temp_dir().join(format!("ors-gms-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut config = Config {
            server: ors::server::Config {
                data_dir: data_dir.clone(),
                workers: 2,
                ..Default::default()
            },
            ..Config::default()
        };
        config.log.level = "warn".into();
        if o.store == "none" {
            config.store.url = "none".into();
        }
        config.limits.max_sessions = 1_000_000;
        // Every simulated customer connects from 127.0.0.1: the
        // per-address rates would measure the limiter, not the server.
        config.contact_centre.gms.limits.creates_per_minute = 100_000_000;
        config.contact_centre.gms.limits.chat_sends_per_minute = 100_000_000;
        config.contact_centre.gms.limits.burst = 1_000_000;
        // GMS's throttles (500 creates per 5 minutes per service by
        // default) would refuse most of a benchmark's flows.
        for (option, value) in [
            ("_throttle_callbacks_per_service_1", "100000000"),
            ("_throttle_callbacks_per_service_2", "100000000"),
        ] {
            config
                .contact_centre
                .callback
                .options
                .insert(option.into(), value.into());
        }
        config.contact_centre.backends.simulator.accept_delay_ms = 0;
        config.contact_centre.backends.simulator.agents = (0..o.agents)
            .map(|i| {
                let mut a = AgentSettings::new(&format!("agent-{i}"), &format!("Agent {i}"), &["Chat_Agents"]);
                a.capacity.insert("chat".into(), 10);
                a
            })
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = spawn(listener, config).expect("server");
        let base = format!("http://{}", server.addr);
        let client = ors::io::http::http_client(Duration::from_secs(60));
        // Warm up: the first flow fetches and compiles both documents.
        flow(&client, &base, 0).await;
        let results = Arc::new(Mutex::new(Vec::with_capacity(o.flows)));
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..o.concurrency {
            let (client, base, results, next) =
                (client.clone(), base.clone(), results.clone(), next.clone());
            let total = o.flows;
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n > total {
                        break;
                    }
                    let times = flow(&client, &base, n).await;
                    results.lock().await.push(times);
                }
            }));
        }
        for t in tasks {
            t.await.expect("flow task");
        }
        let elapsed = started.elapsed();
        let results = results.lock().await;
        println!(
            "gms chat-immediate flows: {} in {:.2} s = {:.0} flows/s (concurrency {}, store {}, {} agents)",
            results.len(),
            elapsed.as_secs_f64(),
            results.len() as f64 / elapsed.as_secs_f64(),
            o.concurrency,
            o.store,
            o.agents
        );
        for (i, stage) in STAGES.iter().enumerate() {
            let mut v: Vec<Duration> = results.iter().map(|r| r[i]).collect();
            v.sort();
            println!(
                "  {stage:<10} p50 {:>8.2} ms   p99 {:>8.2} ms",
                percentile(&v, 0.5).as_secs_f64() * 1e3,
                percentile(&v, 0.99).as_secs_f64() * 1e3
            );
        }
        drop(results);
        server.shutdown().await.expect("shutdown");
        let _ = std::fs::remove_dir_all(&data_dir);
    });
}
