//! The composition root of `ors serve`: which extensions the server runs
//! (the ORS platform modules and the contact-centre services) and the
//! configuration file that holds the core's sections and theirs. The core
//! ([`crate::server`]) names no service; this is the one place that names
//! them all.

use std::path::Path;
use std::sync::Arc;

use crate::gms::ContactCentre;
use crate::modules::Platform;
use crate::server::config::{ConfigError, check_top_level, fields, parse_sections, read_file};
use crate::server::{Extension, RunningServer, Server};

/// Everything `ors serve` can be told: the core's settings, the platform
/// modules' `[platform]` and the contact-centre extension's sections
/// (`[gms]`, `[interaction_queues]`, `[backends]`). Derefs to the core's settings, so `config.limits` and
/// `config.store` read as before.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The server core's settings.
    pub server: crate::server::Config,
    /// The contact-centre extension's sections.
    pub contact_centre: crate::gms::Settings,
    /// The platform modules' section (`[platform]`).
    pub platform: crate::modules::settings::Settings,
}

impl std::ops::Deref for Config {
    type Target = crate::server::Config;
    fn deref(&self) -> &crate::server::Config {
        &self.server
    }
}

impl std::ops::DerefMut for Config {
    fn deref_mut(&mut self) -> &mut crate::server::Config {
        &mut self.server
    }
}

impl Config {
    /// Reads a TOML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read_file(path)?, &path.display().to_string())
    }

    /// Parses TOML text (`name` labels errors): a key no section declares
    /// is refused, each part reads its own sections, then both validate.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        check_top_level(
            text,
            name,
            &[
                fields::<crate::server::Config>(),
                fields::<crate::gms::Settings>(),
                fields::<crate::modules::settings::Settings>(),
            ],
        )?;
        let config = Config {
            server: parse_sections(text, name)?,
            contact_centre: parse_sections(text, name)?,
            platform: parse_sections(text, name)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot, for the core and the extensions; a script
    /// object without a `url` must be one a service defines.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.platform.validate()?;
        self.contact_centre.validate()?;
        let defined: Vec<String> = self
            .extensions()
            .iter()
            .flat_map(|e| e.script_objects("http://127.0.0.1"))
            .map(|(name, _)| name)
            .collect();
        for (name, script) in &self.server.scripts {
            if script.url.trim().is_empty() && !defined.iter().any(|d| d.eq_ignore_ascii_case(name))
            {
                return Err(ConfigError::Invalid(format!(
                    "scripts.{name}: 'url' is empty (only a script object a service defines, \
                     such as {}, may leave it out)",
                    defined.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The extensions this configuration runs.
    pub fn extensions(&self) -> Vec<Arc<dyn Extension>> {
        vec![
            Arc::new(Platform::new(self.platform.platform.clone())),
            Arc::new(ContactCentre::new(self.contact_centre.clone())),
        ]
    }
}

/// Builds the server with every extension (see [`crate::server::build`]).
pub async fn build(config: Config, addr: std::net::SocketAddr) -> std::io::Result<Server> {
    let extensions = config.extensions();
    crate::server::build(config.server, &extensions, addr).await
}

/// Serves until `shutdown` completes (see [`crate::server::run`]).
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let extensions = config.extensions();
    crate::server::run(listener, config.server, extensions, shutdown).await
}

/// Starts a server with every extension on `listener` in the current
/// runtime (for tests and embedding).
pub fn spawn(listener: tokio::net::TcpListener, config: Config) -> std::io::Result<RunningServer> {
    let extensions = config.extensions();
    crate::server::spawn(listener, config.server, extensions)
}
