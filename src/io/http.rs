//! The process's outbound HTTP client constructor: one place that installs
//! the TLS provider, shared by the Basic HTTP processor, the host's loader
//! and the service back-ends.

use std::sync::Once;
use std::time::Duration;

/// Installs the rustls crypto provider once per process (reqwest is built
/// without a default provider); call it before building a client of one's
/// own with `reqwest::Client::builder()`.
pub fn install_tls_provider() {
    static TLS: Once = Once::new();
    TLS.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client with the process's TLS provider installed; every request
/// it sends times out after `timeout`. Redirects follow reqwest's default.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// Decides whether a URL may be requested: `Ok`, or the reason not.
pub type UrlCheck = std::sync::Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Most redirects a checked client follows.
pub const MAX_REDIRECTS: usize = 5;

/// Like [`http_client`], but every redirect hop is checked with `allow`
/// (the allow-list) before it is followed, and at most [`MAX_REDIRECTS`]
/// are: a hop `allow` refuses fails the request with its reason.
pub fn http_client_checked(timeout: Duration, allow: UrlCheck) -> reqwest::Client {
    install_tls_provider();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match allow(attempt.url().as_str()) {
            Ok(()) => attempt.follow(),
            Err(reason) => attempt.error(format!("redirect refused: {reason}")),
        }
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(policy)
        .build()
        .unwrap_or_else(|_| {
            // Never fall back to a client that follows redirects unchecked.
            reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        })
}

/// Like [`http_client`], but redirects are returned to the caller instead
/// of being followed, so that each hop can be checked. Unlike
/// [`http_client`] there is no fallback to a default client (which would
/// follow redirects): the error says why the client could not be built.
pub fn http_client_no_redirects(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    install_tls_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}
