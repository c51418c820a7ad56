//! `ors simulate`: the embedded routing and chat simulators as a service
//! of their own, speaking the backend protocol `ors serve` uses for real
//! backends (`[backends] routing_url` / `chat_url`). Run this way, the
//! simulated agents and chats live in another process than the server,
//! as Genesys URS and Chat Server do: a restart of `ors serve` leaves the
//! chats in progress running, and the server picks them up again.
//!
//! Routes: the routing protocol under `/routing`
//! (`crate::backends::routing_http`), the chat protocol under `/chat`
//! (`crate::backends::chat_http`), and the simulator's admin API under
//! `/sim` (`crate::backends::admin`). No credentials: listen on a
//! loopback or private address only.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::app::Config;

/// Command-line settings of `ors simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateOptions {
    /// TOML configuration whose `[backends.simulator]` section describes
    /// the agents (see ors.example.toml); the built-in agents without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (a loopback one unless --public).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Allow a non-loopback address: the simulators take no credentials,
    /// so anyone who reaches them can act as the chat server and router.
    #[arg(long)]
    pub public: bool,
}

/// Serves the simulators until SIGTERM or Ctrl-C; returns the process
/// exit code (2: bad configuration or a non-loopback address without
/// `--public`, 1: cannot listen).
pub fn simulate(options: SimulateOptions) -> i32 {
    if !options.listen.ip().is_loopback() && !options.public {
        eprintln!(
            "ors simulate: {} is not a loopback address; the simulators take no credentials \
             (anyone who reaches them can open chats and answer as agents). Listen on \
             127.0.0.1, or pass --public on a private network.",
            options.listen
        );
        return 2;
    }
    let config = match &options.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ors simulate: {e}");
                return 2;
            }
        },
        None => Config::default(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ors-sim")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ors simulate: cannot start the runtime: {e}");
            return 1;
        }
    };
    let settings = config.contact_centre.backends.simulator.clone();
    runtime.block_on(async move {
        let sim = match crate::backends::Simulator::new(&settings) {
            Ok(sim) => sim,
            Err(e) => {
                eprintln!("ors simulate: {e}");
                return 2;
            }
        };
        let (admin, _) = crate::backends::admin::admin_router(sim.clone());
        let router = axum::Router::new()
            .nest(
                "/routing",
                crate::backends::routing_protocol_router(sim.routing_backend()),
            )
            .nest(
                "/chat",
                crate::backends::chat_protocol_router(sim.chat_backend()),
            )
            .merge(admin);
        let listener = match tokio::net::TcpListener::bind(options.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ors simulate: cannot listen on {}: {e}", options.listen);
                return 1;
            }
        };
        let addr = listener.local_addr().unwrap_or(options.listen);
        tracing::info!(%addr, "ors simulate listening");
        // The address line tells a parent process where to connect
        // (`--listen 127.0.0.1:0` picks a free port).
        super::say(format_args!("ors simulate listening on http://{addr}"));
        match axum::serve(listener, router)
            .with_graceful_shutdown(crate::server::shutdown_signal())
            .await
        {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ors simulate: {e}");
                1
            }
        }
    })
}
