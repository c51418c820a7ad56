//! `ors serve` as a child process, for tests that kill the server with
//! SIGKILL and start it again on the same data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::client::Api;
use super::wait::eventually;

/// A loopback port that was free a moment ago (the child binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running `ors serve`; killed with SIGKILL when dropped.
pub struct ServeProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: PathBuf,
    data_dir: PathBuf,
}

impl ServeProcess {
    /// Starts `ors serve --no-supervisor --workers 2 (unless `extra` sets
    /// them) --listen
    /// 127.0.0.1:<port> --data-dir <data_dir>` plus `extra` arguments,
    /// from the crate directory, its stderr appended to
    /// `<data_dir>/server.log`, and waits (at most 60 s) until `/health`
    /// answers 200. Without the supervisor, [`ServeProcess::kill`] kills
    /// the server itself.
    pub async fn start(port: u16, data_dir: &Path, extra: &[&str]) -> ServeProcess {
        let mut args = vec!["--no-supervisor"];
        args.extend_from_slice(extra);
        ServeProcess::start_with(port, data_dir, &data_dir.join("server.log"), &args).await
    }

    /// As [`ServeProcess::start`], with the server's stderr appended to
    /// `log` (for a data directory that may fill up).
    pub async fn start_logging_to(
        port: u16,
        data_dir: &Path,
        log: &Path,
        extra: &[&str],
    ) -> ServeProcess {
        let mut args = vec!["--no-supervisor"];
        args.extend_from_slice(extra);
        ServeProcess::start_with(port, data_dir, log, &args).await
    }

    /// As [`ServeProcess::start`], but under the supervisor that restarts
    /// the server when it crashes (killing this process stops both).
    pub async fn start_supervised(port: u16, data_dir: &Path, extra: &[&str]) -> ServeProcess {
        ServeProcess::start_with(port, data_dir, &data_dir.join("server.log"), extra).await
    }

    /// `ors serve --listen 127.0.0.1:<port>` and nothing else, as the
    /// README runs it: from `dir`, under its supervisor, on its embedded
    /// defaults (its data in `dir/ors-data`, its stderr in
    /// `dir/server.log`); waits until `/health` answers 200.
    pub async fn start_supervised_in(port: u16, dir: &Path) -> ServeProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ors"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir);
        ServeProcess::spawn(
            command,
            port,
            &dir.join("ors-data"),
            &dir.join("server.log"),
        )
        .await
    }

    async fn start_with(port: u16, data_dir: &Path, log: &Path, extra: &[&str]) -> ServeProcess {
        std::fs::create_dir_all(data_dir).expect("data directory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_ors"));
        command
            .arg("serve")
            .args(if extra.contains(&"--workers") {
                &[][..]
            } else {
                &["--workers", "2"][..]
            })
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        ServeProcess::spawn(command, port, data_dir, log).await
    }

    /// Runs `command` with its stderr appended to `log` and waits until
    /// the server it starts answers `/health`.
    async fn spawn(mut command: Command, port: u16, data_dir: &Path, log: &Path) -> ServeProcess {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("ors serve starts");
        let server = ServeProcess {
            child,
            data_dir: data_dir.to_path_buf(),
            base: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
        };
        server.wait_healthy().await;
        server
    }

    /// Waits (at most 60 s) until `/health` answers 200.
    pub async fn wait_healthy(&self) {
        wait_answering(
            &format!("{}/health", self.base),
            &format!("server did not come up; see {}", self.log.display()),
        )
        .await;
    }

    /// The server's log so far (its stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An operator's client of this server: the token `ors serve` keeps
    /// in `<data_dir>/operator-token` when none is configured.
    pub fn api(&self) -> Api {
        let token = std::fs::read_to_string(self.data_dir.join("operator-token"))
            .ok()
            .map(|t| t.trim().to_string());
        Api::new(&self.base).with_token(token)
    }

    /// A plain `reqwest` client sending the operator's token with every
    /// request (for tests that build their own requests).
    pub fn operator_client(&self) -> reqwest::Client {
        let token = std::fs::read_to_string(self.data_dir.join("operator-token"))
            .expect("ors serve keeps its operator token in the data directory");
        super::client::bearer_client(token.trim())
    }

    /// A customer's client: no credential.
    pub fn customer(&self) -> Api {
        Api::new(&self.base)
    }

    /// SIGKILL (std's `kill` on Unix): no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `ors simulate` (the routing and chat simulators served on
/// their own); killed when dropped.
pub struct SimulateProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl SimulateProcess {
    /// Starts `ors simulate --listen 127.0.0.1:<port> --config <config>`,
    /// its stderr appended to `log`, and waits (at most 60 s) until its
    /// admin API answers.
    pub async fn start(port: u16, config: &Path, log: &Path) -> SimulateProcess {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ors"))
            .arg("simulate")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("ors simulate starts");
        let sim = SimulateProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        wait_answering(
            &format!("{}/sim/agents", sim.base),
            &format!("ors simulate did not come up; see {}", log.display()),
        )
        .await;
        sim
    }

    /// A client of its admin API (`/sim/...`).
    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }
}

impl Drop for SimulateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most 60 s) until a GET of `url` answers 2xx; panics with
/// `what` otherwise.
async fn wait_answering(url: &str, what: &str) {
    let probe = ors::io::http::http_client(Duration::from_secs(5));
    eventually(
        what,
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let request = probe.get(url).send();
            async move {
                match request.await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await;
}
