//! Connection-level protection on a real loopback socket: the reserve
//! that keeps `/health` and operators reachable when the connection cap
//! is reached (others get 503 with `Retry-After`, connections beyond the
//! cap are closed at once), the per-address cap, the header timeout
//! (slow heads and idle keep-alive connections are closed), the body
//! timeout (408), the write timeout (a client that stops reading), and
//! the peer's address handed to every request.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::raw::{Closed, RawConn, get};
use common::{TestServer, eventually, spawn_server};
use ors::app::Config;
use ors::server::config::ConnectionSettings;

const TOKEN: &str = "operator-secret";

fn config(connections: ConnectionSettings) -> Config {
    let mut config = Config {
        server: ors::server::Config {
            workers: 2,
            data_dir: common::scratch_dir("connections"),
            connections,
            ..Default::default()
        },
        ..Config::default()
    };
    config.server.store.url = "none".into();
    config
}

/// A metric's value read on `conn` (an operator's keep-alive connection).
async fn metric(conn: &mut RawConn, line_start: &str) -> u64 {
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let r = conn
        .exchange(&get("/metrics", &auth), Duration::from_secs(5))
        .await
        .expect("/metrics answers");
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

/// Waits until the server counts `n` open connections.
async fn open_connections(probe: &mut RawConn, n: u64) {
    let mut seen = 0;
    for _ in 0..250 {
        seen = metric(probe, "ors_connections_open ").await;
        if seen == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server never counted {n} open connections (last seen {seen})");
}

async fn start(connections: ConnectionSettings, token: bool) -> (TestServer, SocketAddr) {
    let mut config = config(connections);
    if token {
        config.server.security.bearer_token = Some(TOKEN.into());
    }
    let server = spawn_server(config).await;
    let addr = server.addr;
    (server, addr)
}

/// 127.0.0.`n`: another client.
fn client(n: u8) -> std::net::IpAddr {
    [127, 0, 0, n].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_health_and_operators_still_get_in_and_others_are_shed() {
    // 20 places, the last 8 in reserve; one address holds 1 of those.
    let (server, addr) = start(
        ConnectionSettings {
            header_timeout_ms: 60_000,
            max_connections: 20,
            reserve_connections: 8,
            max_connections_per_ip: 0,
            ..ConnectionSettings::default()
        },
        true,
    )
    .await;
    // The probe is an operator on a connection of its own; once the
    // kit's start-up probe has gone, it is the only one open.
    let mut probe = RawConn::connect(addr).await;
    open_connections(&mut probe, 1).await;
    // 11 idle sockets fill the ordinary places.
    let mut held = Vec::new();
    for _ in 0..11 {
        held.push(RawConn::connect(addr).await);
    }
    open_connections(&mut probe, 12).await;

    // Reserve connections: /health and the operator are served, on
    // connections that stay open.
    let mut health = RawConn::connect_from(client(2), addr).await;
    let r = health
        .exchange(&get("/health", ""), Duration::from_secs(5))
        .await
        .expect("/health answers on a reserve connection");
    assert_eq!(r.status, 200, "{:?}", r);
    assert_eq!(r.json()["status"], "ok");
    let mut operator = RawConn::connect_from(client(3), addr).await;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let r = operator
        .exchange(&get("/scxml/sessions", &auth), Duration::from_secs(5))
        .await
        .expect("the operator is answered on a reserve connection");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["total"], 0);

    // Anyone else: 503 overloaded, Retry-After, and the connection closes.
    let mut plain = RawConn::connect_from(client(4), addr).await;
    let r = plain
        .exchange(&get("/scxml/sessions", ""), Duration::from_secs(5))
        .await
        .expect("a shed request is answered");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("connection"), Some("close"));
    let body = r.json();
    assert_eq!(body["error"], "overloaded", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(matches!(
        plain.closed_within(Duration::from_secs(5)).await,
        Closed::After(_)
    ));
    // A wrong token is not an operator.
    let mut wrong = RawConn::connect_from(client(5), addr).await;
    let r = wrong
        .exchange(
            &get("/scxml/sessions", "Authorization: Bearer guess\r\n"),
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
    assert_eq!(r.status, 503);
    // An address holding its share of the reserve gets no more of it,
    // even for /health.
    let mut greedy = RawConn::connect_from(client(2), addr).await;
    let _ = greedy.send(&get("/health", "")).await;
    assert!(greedy.read_response(Duration::from_secs(5)).await.is_none());
    assert_eq!(
        metric(
            &mut probe,
            "ors_connections_shed_total{limit=\"reserve_per_ip\"} "
        )
        .await,
        1
    );

    // Fill the reserve (14 open: probe, 11, health, operator): beyond 20
    // a connection is accepted and closed without a word.
    open_connections(&mut probe, 14).await;
    for n in 6..12 {
        held.push(RawConn::connect_from(client(n), addr).await);
    }
    open_connections(&mut probe, 20).await;
    let mut over = RawConn::connect_from(client(12), addr).await;
    let _ = over.send(&get("/health", "")).await;
    assert!(over.read_response(Duration::from_secs(5)).await.is_none());
    assert_eq!(
        metric(
            &mut probe,
            "ors_connections_shed_total{limit=\"max_connections\"} "
        )
        .await,
        1
    );
    assert_eq!(metric(&mut probe, "ors_requests_shed_total ").await, 2);
    assert_eq!(
        metric(&mut probe, "ors_connections_total{mode=\"reserve\"} ").await,
        10
    );
    // The held reserve connections still answer their own requests.
    let r = health
        .exchange(&get("/health", ""), Duration::from_secs(5))
        .await
        .expect("the held /health connection answers again");
    assert_eq!(r.status, 200);

    // Places come back when connections close.
    held.clear();
    open_connections(&mut probe, 3).await;
    let mut again = RawConn::connect(addr).await;
    let r = again
        .exchange(&get("/scxml/sessions", &auth), Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(r.status, 200);
    drop((probe, health, operator, again));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_more_than_its_share() {
    let (server, addr) = start(
        ConnectionSettings {
            header_timeout_ms: 60_000,
            max_connections: 100,
            reserve_connections: 4,
            max_connections_per_ip: 5,
            ..ConnectionSettings::default()
        },
        false,
    )
    .await;
    let greedy = client(2);
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut c = RawConn::connect_from(greedy, addr).await;
        let r = c
            .exchange(&get("/health", ""), Duration::from_secs(5))
            .await
            .expect("within its share");
        assert_eq!(r.status, 200);
        held.push(c);
    }
    let mut sixth = RawConn::connect_from(greedy, addr).await;
    let _ = sixth.send(&get("/health", "")).await;
    assert!(sixth.read_response(Duration::from_secs(5)).await.is_none());
    // Another address is unaffected.
    let mut other = RawConn::connect(addr).await;
    let r = other
        .exchange(&get("/health", ""), Duration::from_secs(5))
        .await
        .expect("another client gets in");
    assert_eq!(r.status, 200);
    let shed = server
        .api()
        .metric("ors_connections_shed_total{limit=\"max_connections_per_ip\"} ")
        .await;
    assert_eq!(shed, 1);
    // Once one of its connections closes, the address gets a place back.
    held.pop();
    eventually(
        "the address never got its place back",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async move {
            let mut c = RawConn::connect_from(greedy, addr).await;
            match c
                .exchange(&get("/health", ""), Duration::from_secs(5))
                .await
            {
                Some(r) if r.status == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let (server, addr) = start(
        ConnectionSettings {
            header_timeout_ms: 1_000,
            ..ConnectionSettings::default()
        },
        false,
    )
    .await;
    // Idle after one request: closed about a header timeout later.
    let mut idle = RawConn::connect(addr).await;
    let r = idle
        .exchange(&get("/health", ""), Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), None, "kept alive");
    let Closed::After(waited) = idle.closed_within(Duration::from_secs(10)).await else {
        panic!("an idle keep-alive connection stayed open");
    };
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
    // A head dripped one byte at a time never finishes: the timeout is
    // for the whole head, not between bytes.
    let mut slow = RawConn::connect(addr).await;
    let started = std::time::Instant::now();
    slow.send(b"GET /health HTTP/1.1\r\nHost: ors\r\n")
        .await
        .expect("first bytes");
    let closed = loop {
        if slow.send(b"X").await.is_err() {
            break started.elapsed();
        }
        if let Closed::After(_) = slow.closed_within(Duration::from_millis(200)).await {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a dripped head kept its connection open"
        );
    };
    assert!(
        closed >= Duration::from_millis(900),
        "closed too early: {closed:?}"
    );
    // A socket that sends nothing.
    let mut silent = RawConn::connect(addr).await;
    assert!(matches!(
        silent.closed_within(Duration::from_secs(10)).await,
        Closed::After(_)
    ));
    let timeouts = server
        .api()
        .metric("ors_connection_timeouts_total{phase=\"header\"} ")
        .await;
    assert!(timeouts >= 3, "{timeouts} header timeouts counted");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_a_408_and_its_connection_closes() {
    let (server, addr) = start(
        ConnectionSettings {
            body_timeout_ms: 1_000,
            ..ConnectionSettings::default()
        },
        false,
    )
    .await;
    let head = format!(
        "POST /scxml/session/start HTTP/1.1\r\nHost: ors\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n",
        common::server::OPERATOR_TOKEN
    );
    let mut slow = RawConn::connect(addr).await;
    let started = std::time::Instant::now();
    slow.send(head.as_bytes()).await.expect("head");
    slow.send(b"label=demo&").await.expect("part of the body");
    let r = slow
        .read_response(Duration::from_secs(10))
        .await
        .expect("a 408 before the connection closes");
    let waited = started.elapsed();
    assert_eq!(r.status, 408, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.json()["error"], "body_timeout");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(matches!(
        slow.closed_within(Duration::from_secs(5)).await,
        Closed::After(_)
    ));
    // A body that is slow but complete in time is handled as usual (here
    // a 400: it names no src).
    let body = "label=demo";
    let mut steady = RawConn::connect(addr).await;
    steady
        .send(
            format!(
                "POST /scxml/session/start HTTP/1.1\r\nHost: ors\r\n\
                 Authorization: Bearer {}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                common::server::OPERATOR_TOKEN,
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("head");
    for b in body.as_bytes() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        steady.send(&[*b]).await.expect("a byte");
    }
    let r = steady
        .read_response(Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "missing_parameter");
    let counted = server
        .api()
        .metric("ors_connection_timeouts_total{phase=\"body\"} ")
        .await;
    assert_eq!(counted, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let (server, addr) = start(
        ConnectionSettings {
            write_timeout_ms: 1_000,
            header_timeout_ms: 60_000,
            ..ConnectionSettings::default()
        },
        false,
    )
    .await;
    let api = server.api();
    // Thousands of pipelined requests whose answers are never read: the
    // socket buffers fill and the server's writes stall.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let stream = socket.connect(addr).await.expect("connect");
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut stream = stream;
        let auth = format!(
            "Authorization: Bearer {}\r\n",
            common::server::OPERATOR_TOKEN
        );
        let _ = stream.write_all(&get("/metrics", &auth).repeat(4000)).await;
        // Hold the socket open, reading nothing.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let counted = eventually(
        "the stalled connection was never dropped",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let api = api.clone();
            async move {
                let n = api
                    .metric("ors_connection_timeouts_total{phase=\"write\"} ")
                    .await;
                if n >= 1 {
                    Ok(n)
                } else {
                    Err("no write timeout yet")
                }
            }
        },
    )
    .await;
    assert_eq!(counted, 1);
    writer.abort();
    server.stop().await;
}

/// The front door on its own, serving a router whose handler answers
/// with the peer address it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_the_peer_address_and_shutdown_lets_requests_finish() {
    use axum::extract::ConnectInfo;
    use ors::server::connections::{self, ConnectionLimits};
    let router = axum::Router::new()
        .route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            }),
        )
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "done"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let limits = ConnectionLimits::new(&ConnectionSettings::default(), None, 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(connections::serve(
        listener,
        router,
        limits,
        std::sync::Arc::new(|_: &axum::http::request::Parts| false),
        std::sync::Arc::new(ors::server::metrics::Metrics::default()),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut c = RawConn::connect_from([127, 0, 0, 2].into(), addr).await;
    let r = c
        .exchange(&get("/peer", ""), Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), "127.0.0.2");
    // A request in flight when shutdown starts is answered; then the
    // connection closes and no new one is accepted.
    let mut slow = RawConn::connect(addr).await;
    slow.send(&get("/slow", "")).await.expect("sent");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    let r = slow
        .read_response(Duration::from_secs(5))
        .await
        .expect("the in-flight request is answered");
    assert_eq!(String::from_utf8_lossy(&r.body), "done");
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve returns after the drain")
        .expect("no panic")
        .expect("no error");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn bad_settings_are_refused() {
    for (text, needle) in [
        (
            "[connections]\nheader_timeout_ms = 0\n",
            "header_timeout_ms",
        ),
        (
            "[connections]\nmax_connections = 10\nreserve_connections = 10\n",
            "reserve_connections",
        ),
        ("[connections]\nmax_conections = 10\n", "max_conections"),
    ] {
        let err = Config::parse(text, "test.toml").expect_err(text);
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
    let parsed = Config::parse(
        "[connections]\nheader_timeout_ms = 2500\nmax_connections_per_ip = 0\n",
        "test.toml",
    )
    .expect("valid");
    assert_eq!(parsed.connections.header_timeout_ms, 2500);
    assert_eq!(parsed.connections.max_connections_per_ip, 0);
    assert_eq!(
        parsed.connections.body_timeout_ms,
        ConnectionSettings::default().body_timeout_ms
    );
}
