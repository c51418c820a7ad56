//! The `ors` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use ors::cli;

#[derive(Parser)]
#[command(
    name = "ors",
    version,
    about = "Orchestration server: W3C SCXML with ECMAScript"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one session; external events are JSON lines on stdin.
    Run {
        /// The SCXML document.
        file: PathBuf,
        /// Stop after this many seconds (exit code 124).
        #[arg(long)]
        timeout: Option<f64>,
        /// Most microsteps one macrostep may take before the session is stopped.
        #[arg(long, default_value_t = 1_000_000)]
        max_microsteps: u64,
        /// Address of the Basic HTTP Event I/O Processor's listener.
        #[arg(long, default_value = "127.0.0.1:0")]
        basichttp_listen: std::net::SocketAddr,
        /// Do not start the Basic HTTP listener.
        #[arg(long)]
        no_basichttp: bool,
        /// Print every state entry/exit and transition taken to stderr.
        #[arg(long)]
        trace: bool,
        /// Read the document as this SCXML dialect (ors or w3c); by
        /// default `<scxml>` decides (profile without datamodel: ors).
        #[arg(long)]
        dialect: Option<ors::model::Dialect>,
        /// Run the session on the server's platform (every ORS module and
        /// service, with the embedded simulators) instead of a bare engine.
        #[arg(long, value_enum)]
        platform: Option<cli::platform::PlatformKind>,
        /// The server configuration file the platform uses (with --platform).
        #[arg(long, requires = "platform")]
        config: Option<PathBuf>,
        /// With --platform: start the document as the strategy of an
        /// interaction of this media (voice, chat or email) arriving at a
        /// routing point of its own.
        #[arg(long, requires = "platform")]
        interaction: Option<String>,
        /// With --interaction: the interaction's attached data (a JSON object).
        #[arg(long, requires = "interaction", value_parser = parse_udata)]
        udata: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// Run the orchestration server (ORS REST API) until SIGTERM or Ctrl-C.
    Serve(cli::serve::ServeOptions),
    /// Serve the routing and chat simulators on their own, over the
    /// backend protocol (point `[backends] routing_url` / `chat_url` at
    /// `/routing` and `/chat`), until SIGTERM or Ctrl-C.
    Simulate(cli::simulate::SimulateOptions),
    /// Check documents and print diagnostics (exit 1 on any error).
    Validate {
        /// Documents to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Read the documents as this SCXML dialect (ors or w3c); by
        /// default each `<scxml>` decides.
        #[arg(long)]
        dialect: Option<ors::model::Dialect>,
        /// The server configuration whose extensions' actions count as
        /// implemented (default: the built-in configuration).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the benchmark workloads in-process and print JSON lines.
    Bench {
        /// Workloads (comma-separated): ping-pong, ping-pong-data, deep-wide, load-1000, start-sessions, load-size, event-size.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ping-pong,ping-pong-data,deep-wide,load-1000,start-sessions"
        )]
        workloads: Vec<String>,
        /// Directory of the workload documents.
        #[arg(long, default_value = "benches/workloads")]
        dir: PathBuf,
        /// External events per round.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Rounds per workload.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Sessions started per round (start-sessions).
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Documents loaded per round (load-1000).
        #[arg(long, default_value_t = 200)]
        loads: usize,
        /// Document sizes in states (load-size, event-size; comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "10,100,1000,10000,100000"
        )]
        sizes: Vec<usize>,
    },
    /// Run a W3C SCXML IRP suite laid out with a manifest.tsv.
    Conformance {
        /// The suite directory.
        dir: PathBuf,
        /// Only tests whose id contains one of these (comma-separated).
        #[arg(long, value_delimiter = ',')]
        filter: Vec<String>,
        /// Tests run at once (default: number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Per-test timeout in seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Write a JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Exit non-zero when fewer than N tests pass: CATEGORY=N, or
        /// CATEGORY-without-NEED+NEED=N to count only tests needing none of those.
        #[arg(long = "min-pass", value_parser = parse_floor)]
        min_pass: Vec<(String, usize)>,
    },
}

fn parse_floor(s: &str) -> Result<(String, usize), String> {
    let (cat, n) = s.split_once('=').ok_or("expected CATEGORY=N")?;
    let n = n.parse().map_err(|_| format!("'{n}' is not a number"))?;
    Ok((cat.to_string(), n))
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("ORS_LOG"))
            .with_ansi(ors::server::logging::colour_on_stderr())
            .with_writer(std::io::stderr)
            .init();
    }
    let code = match cli.command {
        Command::Serve(options) => cli::serve::serve(options),
        Command::Simulate(options) => cli::simulate::simulate(options),
        Command::Run {
            file,
            timeout,
            max_microsteps,
            trace,
            dialect,
            platform: Some(cli::platform::PlatformKind::Sim),
            config,
            interaction,
            udata,
            ..
        } => cli::platform::run_file(
            &file,
            &cli::platform::PlatformOptions {
                config,
                timeout: timeout.map(Duration::from_secs_f64),
                max_microsteps,
                trace,
                dialect,
                interaction,
                udata,
            },
        ),
        Command::Run {
            file,
            timeout,
            max_microsteps,
            basichttp_listen,
            no_basichttp,
            trace,
            dialect,
            ..
        } => match cli::run::load_for_cli(&file, dialect) {
            Some(doc) => {
                let options = cli::run::RunOptions {
                    timeout: timeout.map(Duration::from_secs_f64),
                    max_microsteps,
                    basichttp: (!no_basichttp).then_some(basichttp_listen),
                    trace,
                };
                cli::run::run_document(doc, &options)
            }
            None => 2,
        },
        Command::Validate {
            files,
            dialect,
            config,
        } => cli::validate(&files, dialect, config),
        Command::Bench {
            workloads,
            dir,
            events,
            rounds,
            sessions,
            loads,
            sizes,
        } => ors::bench::run(&ors::bench::BenchOptions {
            workloads,
            dir,
            events,
            rounds,
            sessions,
            loads,
            sizes,
        }),
        Command::Conformance {
            dir,
            filter,
            jobs,
            timeout,
            json,
            min_pass,
        } => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ors"));
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
            cli::conformance::run(&cli::conformance::ConformanceOptions {
                dir,
                filter,
                jobs,
                timeout: Duration::from_secs_f64(timeout),
                json,
                min_pass,
                exe,
            })
        }
    };
    std::process::exit(code);
}

/// boa allocates many small objects (a session's context is thousands of
/// them); mimalloc is markedly faster than the system allocator for that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--udata`: a JSON object.
fn parse_udata(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("attached data must be a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}
