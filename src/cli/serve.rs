//! `ors serve`: reads the configuration, sets up logging, binds the
//! listener and runs the server until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::app::Config;
use crate::server::config::LogFormat;

/// Command-line settings of `ors serve`; each overrides the configuration
/// file.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// TOML configuration (see ors.example.toml); embedded defaults without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Log line format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Session worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Directory for the server's files, the SQLite store among them
    /// (default ./ors-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Session store: sqlite:PATH, postgres://..., or none (default: SQLite
    /// under the data directory).
    #[arg(long)]
    pub store: Option<String>,
    /// Run the server in this process, without the supervisor that
    /// restarts it when it crashes (for a host that supervises it itself).
    #[arg(long)]
    pub no_supervisor: bool,
    /// Set by the supervisor on the server it starts (stops when stdin
    /// closes).
    #[arg(long, hide = true)]
    pub supervised: bool,
}

/// Runs the server; returns the process exit code.
pub fn serve(options: ServeOptions) -> i32 {
    let mut config = match &options.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ors serve: {e}");
                return 2;
            }
        },
        None => Config::default(),
    };
    if let Some(listen) = options.listen {
        config.listen = listen;
    }
    if let Some(format) = options.log_format {
        config.log.format = format;
    }
    if let Some(workers) = options.workers {
        config.workers = workers;
    }
    if let Some(dir) = options.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = options.store {
        config.store.url = url;
    }
    if let Err(e) = config.validate() {
        eprintln!("ors serve: {e}");
        return 2;
    }
    crate::server::logging::init(&config);
    let code = serve_logging(options.supervised, options.no_supervisor, config);
    crate::server::logging::flush();
    code
}

/// [`serve`] once its log is set up.
fn serve_logging(supervised: bool, no_supervisor: bool, mut config: Config) -> i32 {
    if !supervised && !no_supervisor {
        if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
            eprintln!(
                "ors serve: cannot make the data directory {}: {e}",
                config.data_dir.display()
            );
            return 1;
        }
        return super::supervise::supervise(&config.data_dir);
    }
    config.server.watchdog = true;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ors-http")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ors serve: cannot start the runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(async move {
        let listener = match crate::server::connections::bind(config.listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ors serve: cannot listen on {}: {e}", config.listen);
                return 1;
            }
        };
        let shutdown = async move {
            if supervised {
                tokio::select! {
                    _ = crate::server::shutdown_signal() => {}
                    _ = supervisor_gone() => {
                        tracing::info!("the supervisor closed the server's stdin; stopping");
                    }
                }
            } else {
                crate::server::shutdown_signal().await;
            }
        };
        match crate::app::run(listener, config, shutdown).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                1
            }
        }
    });
    // A worker stuck in a script (a backtracking regular expression, say)
    // never finishes; dropping the runtime would wait for it for ever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}

/// Resolves when stdin reaches its end: the supervisor asks the server
/// to stop, or is gone.
async fn supervisor_gone() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
