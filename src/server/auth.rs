//! Who may call what. The server knows three roles, each with its own
//! credentials and its own route groups:
//!
//! - **operator**: the ORS REST API (`/scxml/...`), `/basichttp/`,
//!   `/metrics`, `/ors/help`, and any cross-customer query an extension
//!   offers (`[security.operator]`, or the older `security.bearer_token`);
//! - **admin**: administration APIs such as the simulator's `/sim/`
//!   (`[security.admin]`; an operator credential is accepted too);
//! - **customer**: the devices' routes an extension serves (GMS service,
//!   chat and CometD endpoints); the extension checks its own customer
//!   credentials with [`Credentials`] and [`challenge`].
//!
//! A credential is an `Authorization: Bearer <token>` header or HTTP Basic
//! (RFC 7617) `Authorization: Basic base64(user:password)`. Comparisons run
//! on SHA-256 digests, so their time does not depend on how much of a
//! secret a caller guessed.
//!
//! When no operator credential is configured, `ors serve` does not leave
//! the operator API open: [`ensure_operator_token`] makes a random token
//! and keeps it in `<data_dir>/operator-token` (mode 0600), where the
//! operator (and `ors` commands) read it.

use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// One role's credentials: a bearer token, a Basic user name and password,
/// or both (either one is accepted). A role with neither is "not set".
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Credentials {
    /// `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// HTTP Basic user name (any user name when only a password is set).
    pub username: Option<String>,
    /// HTTP Basic password; setting it turns Basic authentication on.
    pub password: Option<String>,
}

/// What a request presented in its `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// Nothing (or a scheme we do not know).
    Nothing,
    /// A bearer token.
    Bearer(String),
    /// HTTP Basic user name and password.
    Basic(String, String),
}

impl Presented {
    /// Reads the `Authorization` header of `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Presented {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Presented::Nothing;
        };
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Presented::Bearer(rest.to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                return Presented::Basic(user.to_string(), password.to_string());
            }
        }
        Presented::Nothing
    }
}

/// Whether two secrets are equal, compared through their SHA-256 digests.
fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

impl Credentials {
    /// Whether any credential is configured.
    pub fn is_set(&self) -> bool {
        self.bearer_token.as_deref().is_some_and(|t| !t.is_empty())
            || self.password.as_deref().is_some_and(|p| !p.is_empty())
    }

    /// Whether what a request presented matches: the bearer token, or the
    /// Basic user name (when one is configured) and password.
    pub fn accepts(&self, presented: &Presented) -> bool {
        match presented {
            Presented::Nothing => false,
            Presented::Bearer(token) => self
                .bearer_token
                .as_deref()
                .is_some_and(|t| !t.is_empty() && same_secret(t, token)),
            Presented::Basic(user, password) => {
                let user_ok = self
                    .username
                    .as_deref()
                    .is_none_or(|u| u.is_empty() || same_secret(u, user));
                let password_ok = self
                    .password
                    .as_deref()
                    .is_some_and(|p| !p.is_empty() && same_secret(p, password));
                user_ok && password_ok
            }
        }
    }

    /// An `Authorization` header value these credentials are accepted with
    /// (the bearer token first); `None` when none is set.
    pub fn authorization_header(&self) -> Option<String> {
        if let Some(t) = self.bearer_token.as_deref().filter(|t| !t.is_empty()) {
            return Some(format!("Bearer {t}"));
        }
        let password = self.password.as_deref().filter(|p| !p.is_empty())?;
        let raw = format!("{}:{password}", self.username.as_deref().unwrap_or(""));
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }

    /// Whether the request's headers carry a matching credential.
    pub fn accepts_headers(&self, headers: &HeaderMap) -> bool {
        self.accepts(&Presented::from_headers(headers))
    }
}

/// The 401 a caller gets without a valid credential: JSON like every
/// error, with a `WWW-Authenticate: Basic realm="<realm>"` challenge so
/// that browsers and HTTP clients know to send Basic credentials.
pub fn challenge(realm: &str, message: &str) -> ApiError {
    let realm: String = realm
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")) {
        e.headers.push((header::WWW_AUTHENTICATE, v));
    }
    e
}

/// The file the generated operator token is kept in.
pub fn operator_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("operator-token")
}

/// Why the operator token could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("operator token file {path}: {source}")]
pub struct TokenFileError {
    /// The file.
    pub path: String,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Makes sure the operator role has a credential: when `operator` has none,
/// reads the token kept in `<data_dir>/operator-token`, or makes a random
/// one (128 bits, hex) and writes it there readable by the owner only.
/// Returns the file's path when the token came from it.
pub fn ensure_operator_token(
    operator: &mut Credentials,
    data_dir: &Path,
) -> Result<Option<PathBuf>, TokenFileError> {
    if operator.is_set() {
        return Ok(None);
    }
    let path = operator_token_path(data_dir);
    let fail = |source| TokenFileError {
        path: path.display().to_string(),
        source,
    };
    let token = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
        Ok(_) | Err(_) => {
            std::fs::create_dir_all(data_dir).map_err(fail)?;
            let token = crate::ids::secret_token();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path).map_err(fail)?;
            std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes()).map_err(fail)?;
            token
        }
    };
    operator.bearer_token = Some(token);
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn bearer_and_basic_are_read_and_matched() {
        let creds = Credentials {
            bearer_token: Some("tok".into()),
            username: Some("ops".into()),
            password: Some("pw:with:colons".into()),
        };
        assert!(creds.accepts_headers(&headers("Bearer tok")));
        assert!(creds.accepts_headers(&headers("bearer   tok")));
        assert!(!creds.accepts_headers(&headers("Bearer to")));
        assert!(creds.accepts_headers(&headers(&basic("ops", "pw:with:colons"))));
        assert!(!creds.accepts_headers(&headers(&basic("other", "pw:with:colons"))));
        assert!(!creds.accepts_headers(&headers(&basic("ops", "pw"))));
        assert!(!creds.accepts_headers(&headers("Basic !!notbase64")));
        assert!(!creds.accepts_headers(&HeaderMap::new()));
        let basic_only = Credentials {
            bearer_token: None,
            ..creds.clone()
        };
        let own = basic_only.authorization_header().unwrap();
        assert!(own.starts_with("Basic "));
        assert!(basic_only.accepts_headers(&headers(&own)));
        assert_eq!(creds.authorization_header().unwrap(), "Bearer tok");
    }

    #[test]
    fn a_password_without_a_user_name_accepts_any_user_and_empty_secrets_nothing() {
        let creds = Credentials {
            password: Some("pw".into()),
            ..Credentials::default()
        };
        assert!(creds.accepts_headers(&headers(&basic("anyone", "pw"))));
        let empty = Credentials {
            bearer_token: Some(String::new()),
            username: None,
            password: Some(String::new()),
        };
        assert!(!empty.is_set());
        assert!(!empty.accepts_headers(&headers("Bearer ")));
        assert!(!empty.accepts_headers(&headers(&basic("x", ""))));
    }

    #[test]
    fn the_operator_token_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("ors-auth-{}", crate::ids::secret_token()));
        let mut first = Credentials::default();
        let path = ensure_operator_token(&mut first, &dir).unwrap().unwrap();
        let token = first.bearer_token.clone().unwrap();
        assert_eq!(token.len(), 32);
        let mut second = Credentials::default();
        ensure_operator_token(&mut second, &dir).unwrap();
        assert_eq!(second.bearer_token, Some(token));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut configured = Credentials {
            password: Some("pw".into()),
            ..Credentials::default()
        };
        assert!(
            ensure_operator_token(&mut configured, &dir)
                .unwrap()
                .is_none()
        );
        assert!(configured.bearer_token.is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
