//! The PostgreSQL backend: a connection pool to a server named by URL.

use sqlx::any::AnyPoolOptions;

use super::{SqlStore, StoreError};

/// Connects to the server and brings the schema up to date.
pub(super) async fn open(url: &str, max_connections: u32) -> Result<SqlStore, StoreError> {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.max(2))
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await?;
    tracing::info!(url = %redact(url), "PostgreSQL store opened");
    SqlStore::new(pool, "postgres").await
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            super::redact("postgres://ors:secret@127.0.0.1:5432/ors"),
            "postgres://ors@127.0.0.1:5432/ors"
        );
        assert_eq!(
            super::redact("postgres://localhost/ors"),
            "postgres://localhost/ors"
        );
    }
}
