//! The embedded SQLite backend: one database file in WAL mode, so readers
//! (sessions waking from hibernation) never wait for the group committer.

use std::path::Path;

use sqlx::Executor;
use sqlx::any::AnyPoolOptions;

use super::{SqlStore, StoreError};

/// Opens (creating if needed) the database file and its directory.
pub(super) async fn open(
    path: &Path,
    full_sync: bool,
    max_connections: u32,
) -> Result<SqlStore, StoreError> {
    sqlx::any::install_default_drivers();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Config(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        // The database holds customers' data: only the server's own user
        // may enter the directory (its files keep the process's umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "cannot make the data directory private to this user");
            }
        }
    }
    let Some(file) = path.to_str() else {
        return Err(StoreError::Config(format!(
            "the database path {} is not UTF-8",
            path.display()
        )));
    };
    // The path is percent-encoded: sqlx decodes it, and `?`, `#` or `%`
    // in a directory name would otherwise be read as URL syntax.
    const SPECIAL: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b'?')
        .add(b'#')
        .add(b'%')
        .add(b' ');
    let url = format!(
        "sqlite://{}?mode=rwc",
        percent_encoding::utf8_percent_encode(file, SPECIAL)
    );
    let sync = if full_sync { "FULL" } else { "NORMAL" };
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.max(2))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute(format!("PRAGMA synchronous = {sync}").as_str())
                    .await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                // Checkpoints are the writer thread's (`sqlite_writer`),
                // between batches, not inside the commit that happens to
                // cross the WAL size limit, which would hold up that
                // commit's acknowledgements.
                conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                // Once checkpointed, a WAL that grew in a burst is cut
                // back to 64 MiB rather than keeping its peak size.
                conn.execute("PRAGMA journal_size_limit = 67108864").await?;
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    tracing::info!(path = %path.display(), synchronous = sync, "SQLite store opened");
    let mut store = SqlStore::new(pool, "sqlite").await?;
    store.watch_files(path).await?;
    // Batches go through a connection of their own on a thread of its
    // own (`sqlite_writer`); the pool answers reads and the rest.
    store.write_through(path, sync)?;
    Ok(store)
}
