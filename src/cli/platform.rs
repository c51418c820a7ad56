//! `ors run --platform sim` and the action table `ors validate` checks
//! against: the command line on the server's own platform. The session
//! runs inside an in-process server with every extension `ors serve` has
//! (the ORS platform modules, the contact-centre services and their
//! embedded simulators), configured from `--config` or the defaults, with
//! no store and a listener on a free loopback port (sessions reach their
//! own server's Basic HTTP and documents through it). A watching
//! extension reports the session's macrosteps as JSON lines on stdout,
//! its `<log>`s (and with `--trace` its state entries, exits and
//! transitions) on stderr; stdin lines are events for it, as in `ors run`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};

use super::run::{EXIT_TIMEOUT, log_to_stderr, parse_input_event, step_line};
use crate::interpreter::{CustomActions, Event, Session};
use crate::server::{Extension, ExtensionError, Plugged, ServerHandles, SessionHook};

/// The platforms `--platform` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlatformKind {
    /// Every extension, with the embedded simulators as backends (unless
    /// the configuration points them at real services).
    Sim,
}

/// Options of `ors run --platform`.
#[derive(Debug, Clone, Default)]
pub struct PlatformOptions {
    /// The server configuration file (`ors serve`'s format).
    pub config: Option<PathBuf>,
    /// Stop with exit code 124 after this long.
    pub timeout: Option<Duration>,
    /// Microsteps one macrostep may take (0: the configuration's limit).
    pub max_microsteps: u64,
    /// Print state entries, exits and transitions to stderr.
    pub trace: bool,
    /// Read documents as this dialect instead of letting `<scxml>` decide.
    pub dialect: Option<crate::model::Dialect>,
    /// Start the document as the strategy of an interaction of this media
    /// (`voice`, `chat`, `email`) arriving at a routing point of its own,
    /// instead of as a bare session: it is presented the interaction
    /// (`interaction.added`, `interaction.present`) as under `ors serve`.
    pub interaction: Option<String>,
    /// The arriving interaction's attached data (a JSON object).
    pub udata: Option<serde_json::Map<String, Value>>,
}

/// The routing point `--interaction` makes for the document.
const CLI_QUEUE: &str = "ors-run";

/// One macrostep of a watched session.
struct Step {
    session: String,
    line: Value,
}

/// What the watching extension learns when it starts.
struct Started {
    handles: ServerHandles,
    actions: CustomActions,
}

/// The extension that watches sessions for the command line. It starts
/// last, so the action table it copies holds every other extension's.
struct Watch {
    steps: mpsc::UnboundedSender<Step>,
    started: Mutex<Option<oneshot::Sender<Started>>>,
    trace: bool,
}

struct WatchHook {
    steps: mpsc::UnboundedSender<Step>,
    trace: bool,
}

impl Extension for Watch {
    fn name(&self) -> &'static str {
        "cli-watch"
    }

    fn start(
        &self,
        server: &ServerHandles,
        actions: &mut CustomActions,
    ) -> Result<Plugged, ExtensionError> {
        if let Some(tx) = self.started.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send(Started {
                handles: server.clone(),
                actions: actions.clone(),
            });
        }
        Ok(Plugged {
            session_hook: Some(Arc::new(WatchHook {
                steps: self.steps.clone(),
                trace: self.trace,
            })),
            ..Plugged::default()
        })
    }
}

impl SessionHook for WatchHook {
    fn after_macrostep(&self, session_id: &str, session: &Session, event: Option<&Event>) {
        let cause = match event {
            None => "start",
            Some(e) if e.origin.is_some() || e.invokeid.is_some() => "delayed",
            Some(_) => "event",
        };
        let _ = self.steps.send(Step {
            session: session_id.to_string(),
            line: step_line(session, cause, event),
        });
    }

    fn on_log(&self, _session_id: &str, label: Option<&str>, message: &str) {
        log_to_stderr(label, message);
    }

    fn wants_trace(&self) -> bool {
        self.trace
    }

    fn on_trace(&self, session_id: &str, line: &str) {
        eprintln!("[trace {session_id}] {line}");
    }
}

/// The configuration a command-line platform runs with: the file's (or
/// the defaults), with no store, one worker, files readable anywhere (the
/// user runs their own documents), and an operator token of its own so
/// nothing is written to the data directory.
fn platform_config(
    options: &PlatformOptions,
    src: Option<&str>,
) -> Result<crate::app::Config, String> {
    let mut config = match &options.config {
        Some(path) => crate::app::Config::load(path).map_err(|e| e.to_string())?,
        None => crate::app::Config::default(),
    };
    config.store.url = "none".into();
    config.workers = 1;
    config.security.allowed_dirs.push(PathBuf::from("/"));
    if config
        .security
        .operator_credentials()
        .bearer_token
        .is_none()
    {
        config.security.operator.bearer_token = Some(crate::ids::secret_token());
    }
    if options.max_microsteps > 0 {
        config.limits.max_microsteps = options.max_microsteps;
    }
    if options.dialect.is_some() {
        config.documents.dialect = options.dialect;
    }
    if let (Some(media), Some(src)) = (&options.interaction, src) {
        if crate::gms::interactions::media_named(media).is_none() {
            return Err(format!(
                "--interaction must be voice, chat or email, not '{media}'"
            ));
        }
        config.contact_centre.queues.insert(
            CLI_QUEUE.to_string(),
            crate::gms::settings::RoutingPoint {
                application: src.to_string(),
                media: media.clone(),
            },
        );
    }
    Ok(config)
}

/// A platform running in this process.
struct Running {
    started: Started,
    steps: mpsc::UnboundedReceiver<Step>,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The operator's bearer token (also an admin credential).
    token: Option<String>,
}

impl Running {
    async fn start(options: &PlatformOptions, src: Option<&str>) -> Result<Running, String> {
        let config = platform_config(options, src)?;
        let token = config.security.operator_credentials().bearer_token;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("cannot bind a loopback port: {e}"))?;
        let (steps_tx, steps) = mpsc::unbounded_channel();
        let (started_tx, started_rx) = oneshot::channel();
        let mut extensions = config.extensions();
        extensions.push(Arc::new(Watch {
            steps: steps_tx,
            started: Mutex::new(Some(started_tx)),
            trace: options.trace,
        }));
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(crate::server::run(
            listener,
            config.server,
            extensions,
            async move {
                let _ = stopped.await;
            },
        ));
        let started = match started_rx.await {
            Ok(s) => s,
            Err(_) => {
                let why = match done.await {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the server did not start".to_string(),
                };
                return Err(why);
            }
        };
        Ok(Running {
            started,
            steps,
            stop,
            done,
            token,
        })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("ors: cannot start the runtime: {e}");
            None
        }
    }
}

/// Runs `file` as one session on the platform until it ends or the
/// timeout passes; returns the exit code (0 ended, 1 did not start, 2
/// bad configuration, 124 timed out).
pub fn run_file(file: &Path, options: &PlatformOptions) -> i32 {
    let Some(runtime) = runtime() else { return 1 };
    let code = runtime.block_on(run_async(file, options));
    if code == EXIT_TIMEOUT {
        runtime.shutdown_background();
    } else {
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
    code
}

async fn run_async(file: &Path, options: &PlatformOptions) -> i32 {
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let src = std::path::absolute(file)
        .unwrap_or_else(|_| file.to_path_buf())
        .display()
        .to_string();
    let mut running = match Running::start(options, Some(&src)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ors: {e}");
            return 2;
        }
    };
    let sessions = running.started.handles.sessions.clone();
    let starting = async {
        match &options.interaction {
            Some(_) => arrive(&running, options).await,
            None => {
                let root = sessions.new_session_id();
                sessions
                    .start_with_id(root.clone(), &src, serde_json::Map::new(), None)
                    .await
                    .map(|_| root)
                    .map_err(|e| e.message)
            }
        }
    };
    // The timeout covers the start too (its first macrostep may be long).
    let started = match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), starting)
            .await
            .unwrap_or_else(|_| Err(String::new())),
        None => starting.await,
    };
    let root = match started {
        Ok(root) => root,
        Err(e) if e.is_empty() => {
            eprintln!("ors: timed out");
            let _ = tokio::time::timeout(Duration::from_millis(500), running.stop()).await;
            return EXIT_TIMEOUT;
        }
        Err(e) => {
            eprintln!("{e}");
            running.stop().await;
            return 1;
        }
    };
    let (input_tx, mut input) = mpsc::channel::<String>(1024);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if input_tx.send(line).await.is_err() {
                break;
            }
        }
    });
    let mut input_open = true;
    let code = loop {
        let stop = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            // A deadline that has passed wins over steps still queued.
            biased;
            _ = stop => {
                eprintln!("ors: timed out");
                break EXIT_TIMEOUT;
            }
            step = running.steps.recv() => match step {
                Some(step) if step.session == root => {
                    super::say(format_args!("{}", step.line));
                    if step.line["done"] == Value::Bool(true) {
                        break if step.line.get("stopped").is_some() {
                            super::run::EXIT_STOPPED
                        } else {
                            0
                        };
                    }
                }
                Some(_) => {}
                None => break 1,
            },
            line = input.recv(), if input_open => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => match parse_input_event(&line) {
                    Ok(event) => {
                        if let Err(e) = sessions.post_event(&root, event) {
                            eprintln!("ors: event not delivered: {}", e.message);
                        }
                    }
                    Err(e) => eprintln!("ors: ignoring input line: {e}"),
                },
                None => input_open = false,
            },
        }
    };
    if code == EXIT_TIMEOUT {
        // A session still busy (a runaway cascade) would hold the workers'
        // stop for seconds; a timed-out run does not wait for it.
        let _ = tokio::time::timeout(Duration::from_millis(500), running.stop()).await;
    } else {
        running.stop().await;
    }
    code
}

/// Makes an interaction arrive at the document's routing point through
/// the server's own admin API; returns the session it started.
async fn arrive(running: &Running, options: &PlatformOptions) -> Result<String, String> {
    let url = format!("{}/sim/interactions", running.started.handles.base_url);
    let mut body = serde_json::Map::new();
    body.insert("queue".into(), Value::from(CLI_QUEUE));
    if let Some(udata) = &options.udata {
        body.insert("udata".into(), Value::Object(udata.clone()));
    }
    let mut request = reqwest::Client::new()
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(Value::Object(body).to_string());
    if let Some(token) = &running.token {
        request = request.bearer_auth(token);
    }
    let reply = request
        .send()
        .await
        .map_err(|e| format!("ors: the interaction could not arrive: {e}"))?;
    let status = reply.status();
    let text = reply
        .text()
        .await
        .map_err(|e| format!("ors: the interaction could not arrive: {e}"))?;
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    match answer.get("sessionid").and_then(Value::as_str) {
        Some(id) if status.is_success() => {
            if let Some(ixn) = answer.get("interactionid").and_then(Value::as_str) {
                eprintln!("ors: interaction {ixn} arrived; session {id}");
            }
            Ok(id.to_string())
        }
        _ => Err(format!(
            "ors: the interaction could not arrive: {}",
            answer.get("message").and_then(Value::as_str).unwrap_or("")
        )),
    }
}

/// Every custom action the platform's extensions register, for `ors
/// validate` (so it warns only about actions nothing implements); `None`
/// with a message on stderr when the platform cannot start.
pub fn registered_actions(options: &PlatformOptions) -> Option<CustomActions> {
    let runtime = runtime()?;
    let actions = runtime.block_on(async {
        match Running::start(options, None).await {
            Ok(running) => {
                let actions = running.started.actions.clone();
                running.stop().await;
                Some(actions)
            }
            Err(e) => {
                eprintln!("ors: {e}");
                None
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    actions
}
