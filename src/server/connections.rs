//! The HTTP front door: the accept loop that serves the API's router over
//! HTTP/1.1 (hyper), and everything that keeps connections from exhausting
//! the server: the header, body and write timeouts, the cap on open
//! connections (in total and per peer address), the reserve that keeps
//! `/health` and operators reachable under a flood, the process's
//! open-file limit, and a graceful drain at shutdown.
//!
//! Admission, decided once per connection at accept time:
//!
//! - fewer than `max_connections - reserve_connections` open: served;
//! - fewer than `max_connections` open: a *reserve* connection, on which
//!   only `/health` and requests the [`OperatorCheck`] accepts are
//!   served; any other request gets a 503 `overloaded` with `Retry-After`
//!   and `Connection: close`. One peer address holds at most an eighth of
//!   the reserve ([`ConnectionLimits::reserve_per_ip`]), so that a flood
//!   from one address cannot take it all;
//! - otherwise, or when the peer address already holds
//!   `max_connections_per_ip` (or its share of the reserve): accepted and
//!   closed at once, so that the kernel's backlog never fills and the
//!   listener keeps accepting.
//!
//! Every request carries `axum::extract::ConnectInfo<SocketAddr>` with the
//! peer's address.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header, request::Parts};
use axum::response::IntoResponse;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use super::config::ConnectionSettings;
use super::error::ApiError;
use super::metrics::Metrics;

/// Decides whether a request on a reserve connection comes from an
/// operator (and is served although the server is at its connection
/// limit); it sees the request's head only.
pub type OperatorCheck = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// Open files kept back from connections, whatever the configuration: the
/// listener, logs, the SQLite files, documents read from disk, outbound
/// HTTP (fetches, back-ends), the workers' wake-up pipes.
pub const FILES_KEPT_BACK: u64 = 256;

/// The fewest connections a tiny open-file limit still leaves.
pub const MIN_CONNECTIONS: usize = 16;

/// `Retry-After` of a shed request, in seconds.
pub const SHED_RETRY_AFTER_SECS: u64 = 1;

/// How long shutdown lets in-flight requests finish before it closes the
/// connections still open.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after an error such as `EMFILE` (no
/// file left), so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Connections the kernel may keep completed but not yet accepted for
/// the API's listener (it caps the figure at `net.core.somaxconn`): a
/// burst deeper than the queue is dropped mid-handshake, leaving clients
/// that believe they are connected.
pub const LISTEN_BACKLOG: u32 = 4096;

/// The largest request head (request line and headers) and the most a
/// connection buffers, in bytes; a larger head is refused with hyper's
/// bodiless 431. (hyper's default, about 400 KiB, would let 10 000 slow
/// connections hold 4 GiB.)
pub const MAX_BUFFER_BYTES: usize = 64 * 1024;

/// How often shedding is logged at most.
const SHED_LOG_EVERY: Duration = Duration::from_secs(10);

/// The connection limits in force: the configured ones, capped by the
/// process's open-file limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, reserve included.
    pub max_connections: usize,
    /// Of those, the ones kept for `/health` and operators.
    pub reserve_connections: usize,
    /// Reserve connections one peer address may hold: an eighth of the
    /// reserve, at least 1.
    pub reserve_per_ip: usize,
    /// Connections one peer address may hold; 0 means no cap.
    pub max_connections_per_ip: usize,
    /// Time to receive a request's head (also the keep-alive idle time).
    pub header_timeout: Duration,
    /// Time to receive a request's whole body, counted from its head.
    pub body_timeout: Duration,
    /// Longest a response write may make no progress.
    pub write_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits for `settings` when the process may open `nofile` files
    /// (`None`: unknown, no cap) and `kept_back` of them are needed for
    /// other things than connections (the store's connections, workers;
    /// [`FILES_KEPT_BACK`] is added). A cap shrinks the reserve to at most
    /// a quarter of what is left.
    pub fn new(settings: &ConnectionSettings, nofile: Option<u64>, kept_back: u64) -> Self {
        let mut max = settings.max_connections.max(1);
        let mut reserve = settings.reserve_connections;
        if let Some(nofile) = nofile {
            let room = nofile.saturating_sub(FILES_KEPT_BACK + kept_back);
            let room = usize::try_from(room)
                .unwrap_or(usize::MAX)
                .max(MIN_CONNECTIONS);
            if room < max {
                max = room;
                reserve = reserve.min(max / 4);
            }
        }
        let reserve = reserve.min(max.saturating_sub(1));
        ConnectionLimits {
            max_connections: max,
            reserve_connections: reserve,
            reserve_per_ip: (reserve / 8).max(1),
            max_connections_per_ip: settings.max_connections_per_ip,
            header_timeout: Duration::from_millis(settings.header_timeout_ms.max(1)),
            body_timeout: Duration::from_millis(settings.body_timeout_ms.max(1)),
            write_timeout: Duration::from_millis(settings.write_timeout_ms.max(1)),
        }
    }
}

/// Binds the API's listener on `addr` with a [`LISTEN_BACKLOG`]-deep
/// accept queue (address reuse on, as `TcpListener::bind` sets it). Call
/// inside a tokio runtime; errors are the OS's (address in use, ...).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard limit and
/// logs the result; the soft limit now in force, or `None` when it cannot
/// be read (then connections are capped by configuration only).
pub fn raise_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let before = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
            Ok((soft, _)) => soft,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the open-file limit");
                return None;
            }
        };
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(now) if now > before => {
                tracing::info!(from = before, to = now, "open-file limit raised");
                Some(now)
            }
            Ok(now) => {
                tracing::info!(limit = now, "open-file limit (already at the hard limit)");
                Some(now)
            }
            Err(e) => {
                tracing::warn!(limit = before, error = %e, "cannot raise the open-file limit");
                Some(before)
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown`
/// completes; then stops accepting, lets open requests finish for at most
/// [`SHUTDOWN_GRACE`] and closes what is left. Errors of single
/// connections are logged (debug) and counted, never returned; the loop
/// itself does not fail.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    operator: OperatorCheck,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        limits,
        operator,
        metrics,
        router,
        open: AtomicUsize::new(0),
        by_ip: Mutex::new(HashMap::new()),
    });
    let graceful = GracefulShutdown::new();
    let (force_close, closing) = watch::channel(false);
    let mut last_shed_log: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of files or memory: wait for connections to close.
                    if every(&mut last_error_log, SHED_LOG_EVERY) {
                        tracing::warn!(error = %e, "accept failed; pausing");
                    }
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        let admission = shared.admit(peer.ip());
        let ticket = match admission {
            Err(reason) => {
                let (counter, why) = match reason {
                    Shed::Full => (&shared.metrics.connections_shed_full, "max_connections"),
                    Shed::PerIp => (
                        &shared.metrics.connections_shed_per_ip,
                        "max_connections_per_ip",
                    ),
                    Shed::ReservePerIp => (
                        &shared.metrics.connections_shed_reserve_per_ip,
                        "reserve_per_ip",
                    ),
                };
                Metrics::inc(counter);
                if every(&mut last_shed_log, SHED_LOG_EVERY) {
                    tracing::warn!(
                        open = shared.open.load(Ordering::Relaxed),
                        peer = %peer.ip(),
                        limit = why,
                        "connection limit reached: closing new connections at once"
                    );
                }
                drop(stream);
                continue;
            }
            Ok(ticket) => ticket,
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let mut closing = closing.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let state = Arc::new(ConnState::new());
            let io = TokioIo::new(Guarded {
                stream,
                write_timeout: shared.limits.write_timeout,
                stalled: None,
                state: state.clone(),
            });
            let service = ConnService {
                shared: shared.clone(),
                peer,
                reserve: ticket.reserve,
                state: state.clone(),
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(shared.limits.header_timeout)
                .max_buf_size(MAX_BUFFER_BYTES)
                .serve_connection(io, service);
            let conn = watcher.watch(conn);
            let ended = tokio::select! {
                ended = conn => Some(ended),
                _ = closing.wait_for(|closing| *closing) => None,
            };
            shared.count_end(ended, &state);
            drop(ticket);
        });
    }
    drop(listener);
    let open = shared.open.load(Ordering::Relaxed);
    tracing::info!(open, "HTTP: no longer accepting; draining open connections");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = shared.open.load(Ordering::Relaxed),
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the grace period are closed"
        );
        let _ = force_close.send(true);
    }
    Ok(())
}

/// Whether an accept error concerns one connection only (the peer gave up
/// before it was accepted), so the loop goes straight on.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
    )
}

/// True at most once per `period` (for logs that a flood would repeat).
fn every(last: &mut Option<Instant>, period: Duration) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < period) {
        return false;
    }
    *last = Some(now);
    true
}

/// Why a connection was closed at accept.
enum Shed {
    /// `max_connections` are open.
    Full,
    /// The peer address holds `max_connections_per_ip`.
    PerIp,
    /// The server is in its reserve and the peer address holds its share
    /// of it.
    ReservePerIp,
}

/// What the accept loop shares with its connections.
struct Shared {
    limits: ConnectionLimits,
    operator: OperatorCheck,
    metrics: Arc<Metrics>,
    router: axum::Router,
    /// Connections open now.
    open: AtomicUsize,
    /// Connections open now by peer address.
    by_ip: Mutex<HashMap<IpAddr, Held>>,
}

impl Shared {
    /// Admits a connection from `ip`, or says why not. Only the accept
    /// loop calls it, so counting after the checks cannot overshoot.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Shed> {
        let limits = &self.limits;
        let open = self.open.load(Ordering::Acquire);
        if open >= limits.max_connections {
            return Err(Shed::Full);
        }
        let reserve = open >= limits.max_connections - limits.reserve_connections;
        {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            let held = by_ip.entry(ip).or_default();
            if limits.max_connections_per_ip > 0 && held.open >= limits.max_connections_per_ip {
                return Err(Shed::PerIp);
            }
            if reserve && held.reserve >= limits.reserve_per_ip {
                return Err(Shed::ReservePerIp);
            }
            held.open += 1;
            if reserve {
                held.reserve += 1;
            }
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Metrics::inc(&self.metrics.connections_open);
        Metrics::inc(&self.metrics.connections_accepted);
        if reserve {
            Metrics::inc(&self.metrics.connections_reserve);
        }
        Ok(Ticket {
            shared: self.clone(),
            ip,
            reserve,
        })
    }

    /// Counts how a connection ended: `None` when shutdown closed it.
    fn count_end(&self, ended: Option<Result<(), hyper::Error>>, state: &ConnState) {
        let metrics = &self.metrics;
        match ended {
            // hyper ends a connection quietly when its header timeout
            // fires before any byte of a request (a socket that sends
            // nothing, an idle keep-alive one): the peer had not closed
            // its side, and nothing came for the whole timeout.
            Some(Ok(()))
                if !state.peer_closed.load(Ordering::Relaxed)
                    && state.waiting() >= self.limits.header_timeout =>
            {
                Metrics::inc(&metrics.connection_timeouts_header);
            }
            Some(Err(e)) => {
                if e.is_timeout() {
                    Metrics::inc(&metrics.connection_timeouts_header);
                } else if is_write_timeout(&e) {
                    Metrics::inc(&metrics.connection_timeouts_write);
                }
                tracing::debug!(error = %e, "connection ended with an error");
            }
            Some(Ok(())) | None => {}
        }
    }
}

fn is_write_timeout(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = s.source();
    }
    false
}

/// One admitted connection; dropping it gives the place back.
struct Ticket {
    shared: Arc<Shared>,
    ip: IpAddr,
    reserve: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
        Metrics::dec(&self.shared.metrics.connections_open);
        let mut by_ip = self.shared.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = by_ip.get_mut(&self.ip) {
            held.open = held.open.saturating_sub(1);
            if self.reserve {
                held.reserve = held.reserve.saturating_sub(1);
            }
            if held.open == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Connections one peer address holds.
#[derive(Default)]
struct Held {
    /// Open now.
    open: usize,
    /// Of those, reserve ones.
    reserve: usize,
}

/// What one connection's socket and service tell each other.
struct ConnState {
    /// When the connection was accepted.
    accepted: Instant,
    /// When the last response was handed over, in ms since `accepted`
    /// (0 before the first).
    answered_ms: AtomicU64,
    /// The peer closed its side (a read returned end of file).
    peer_closed: AtomicBool,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            accepted: Instant::now(),
            answered_ms: AtomicU64::new(0),
            peer_closed: AtomicBool::new(false),
        }
    }

    fn since_accepted_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes that a response was handed over now.
    fn answered(&self) {
        self.answered_ms
            .store(self.since_accepted_ms(), Ordering::Relaxed);
    }

    /// How long the connection had been waiting for a request when it
    /// ended: since the last response, or since it was accepted.
    fn waiting(&self) -> Duration {
        let now = self.since_accepted_ms();
        Duration::from_millis(now.saturating_sub(self.answered_ms.load(Ordering::Relaxed)))
    }
}

/// The socket of one connection: a write that makes no progress for
/// `write_timeout` fails with `TimedOut` (a peer that stopped reading).
struct Guarded {
    stream: TcpStream,
    write_timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    state: Arc<ConnState>,
}

impl Guarded {
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer read nothing for the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            self.state.peer_closed.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        self.on_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.on_write(cx, r)
    }
}

/// The service of one connection: reserve admission, the peer's address,
/// the body timeout, then the router.
struct ConnService {
    shared: Arc<Shared>,
    peer: SocketAddr,
    reserve: bool,
    state: Arc<ConnState>,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, request: Request<Incoming>) -> ServiceFuture {
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let metrics = self.shared.metrics.clone();
        if self.reserve && parts.uri.path() != "/health" && !(self.shared.operator)(&parts) {
            Metrics::inc(&metrics.requests_shed);
            self.state.answered();
            let response = closing(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the server is at its connection limit; retry later",
            ));
            let mut response = response;
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(SHED_RETRY_AFTER_SECS),
            );
            metrics.count_response(response.status().as_u16());
            return Box::pin(std::future::ready(Ok(response)));
        }
        let received = Arc::new(AtomicBool::new(http_body::Body::is_end_stream(&body)));
        let body = Body::new(Tracked {
            inner: body,
            received: received.clone(),
        });
        let request = Request::from_parts(parts, body);
        let router = self.shared.router.clone();
        let body_timeout = self.shared.limits.body_timeout;
        let state = self.state.clone();
        Box::pin(async move {
            let handled = router.oneshot(request);
            tokio::pin!(handled);
            let deadline = tokio::time::sleep(body_timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    biased;
                    response = &mut handled => {
                        state.answered();
                        return response;
                    }
                    () = &mut deadline, if !received.load(Ordering::Acquire) => {
                        // Re-checked: the last frame may have come in with
                        // the deadline.
                        if received.load(Ordering::Acquire) {
                            continue;
                        }
                        Metrics::inc(&metrics.connection_timeouts_body);
                        state.answered();
                        let response = closing(ApiError::new(
                            StatusCode::REQUEST_TIMEOUT,
                            "body_timeout",
                            format!(
                                "the request body did not arrive within {} ms",
                                body_timeout.as_millis()
                            ),
                        ));
                        metrics.count_response(response.status().as_u16());
                        return Ok(response);
                    }
                }
            }
        })
    }
}

/// `error` as a response that closes its connection.
fn closing(error: ApiError) -> Response<Body> {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that records when it has been received whole.
struct Tracked {
    inner: Incoming,
    received: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let whole = match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if whole {
            self.received.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: usize, reserve: usize) -> ConnectionSettings {
        ConnectionSettings {
            max_connections: max,
            reserve_connections: reserve,
            ..ConnectionSettings::default()
        }
    }

    #[test]
    fn the_file_limit_caps_connections_and_shrinks_the_reserve() {
        let limits = ConnectionLimits::new(&settings(10_000, 64), Some(1024), 16);
        assert_eq!(limits.max_connections, 1024 - FILES_KEPT_BACK as usize - 16);
        assert_eq!(limits.reserve_connections, 64);
        let limits = ConnectionLimits::new(&settings(10_000, 500), Some(1024), 16);
        assert_eq!(limits.reserve_connections, limits.max_connections / 4);
        let limits = ConnectionLimits::new(&settings(10_000, 64), Some(1_000_000), 16);
        assert_eq!(limits.max_connections, 10_000);
        let limits = ConnectionLimits::new(&settings(10_000, 64), None, 16);
        assert_eq!(limits.max_connections, 10_000);
        let limits = ConnectionLimits::new(&settings(10_000, 64), Some(100), 16);
        assert_eq!(limits.max_connections, MIN_CONNECTIONS);
        assert!(limits.reserve_connections < limits.max_connections);
    }
}
