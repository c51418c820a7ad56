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
