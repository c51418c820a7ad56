//! HTTP/1.1 spoken by hand over a plain TCP socket, for tests that need
//! what a client library hides: a chosen source address (Linux routes all
//! of 127/8 over loopback, so 127.0.0.2 is another client), a head or a
//! body sent slowly or never finished, keep-alive connections held open,
//! and whether and when the server closed the socket. Also the process's
//! resident memory and open-file limit, for flood tests.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body (by `content-length`).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The server closed it (end of file or reset) after this long.
    After(Duration),
    /// Still open when the wait ran out.
    StillOpen,
}

/// One client connection to the server.
pub struct RawConn {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl RawConn {
    /// Connects to `server` from `source` (any port); panics when the
    /// connection cannot be made.
    pub async fn connect_from(source: IpAddr, server: SocketAddr) -> RawConn {
        RawConn::try_connect_from(source, server)
            .await
            .unwrap_or_else(|e| panic!("connect {source} → {server}: {e}"))
    }

    /// Connects to `server` from `source`.
    pub async fn try_connect_from(source: IpAddr, server: SocketAddr) -> std::io::Result<RawConn> {
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(server).await?;
        Ok(RawConn {
            stream,
            buffered: Vec::new(),
        })
    }

    /// Connects from 127.0.0.1.
    pub async fn connect(server: SocketAddr) -> RawConn {
        RawConn::connect_from([127, 0, 0, 1].into(), server).await
    }

    /// Writes `bytes`; an error (the server closed) is returned, not
    /// raised.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response (head, then `content-length` bytes of body);
    /// `None` when the connection closes first or `limit` runs out.
    pub async fn read_response(&mut self, limit: Duration) -> Option<RawResponse> {
        tokio::time::timeout(limit, self.read_response_unbounded())
            .await
            .ok()
            .flatten()
    }

    async fn read_response_unbounded(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(i) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buffered.len() < head_end + length {
            if !self.fill().await {
                return None;
            }
        }
        let body = self.buffered[head_end..head_end + length].to_vec();
        self.buffered.drain(..head_end + length);
        Some(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Reads more bytes into the buffer; false at end of file or error.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Sends `request` and reads its response (at most `limit`).
    pub async fn exchange(&mut self, request: &[u8], limit: Duration) -> Option<RawResponse> {
        self.send(request).await.ok()?;
        self.read_response(limit).await
    }

    /// Waits at most `limit` for the server to close the connection,
    /// discarding whatever it sends meanwhile; how long it took.
    pub async fn closed_within(&mut self, limit: Duration) -> Closed {
        let started = Instant::now();
        let mut chunk = [0u8; 8192];
        let read_to_end = async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        match tokio::time::timeout(limit, read_to_end).await {
            Ok(()) => Closed::After(started.elapsed()),
            Err(_) => Closed::StillOpen,
        }
    }
}

/// `GET path` with `extra` header lines (each ending in `\r\n`).
pub fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: ors\r\n{extra}\r\n").into_bytes()
}

/// The resident memory of this process (`VmRSS`), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Raises this process's soft open-file limit to its hard limit (the
/// server does the same at start) and returns it; panics when it stays
/// below `needed`, naming the limit to raise.
pub fn raise_file_limit(needed: u64) -> u64 {
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(
        limit >= needed,
        "this test needs {needed} open files but the hard limit is {limit} (ulimit -Hn)"
    );
    limit
}
