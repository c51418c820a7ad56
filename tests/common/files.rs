//! Fixture paths under `fixtures/` and scratch directories under the
//! system temporary directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `fixtures/<group>` in the crate.
pub fn fixtures_dir(group: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(group)
}

/// `fixtures/<group>/<name>` as a string, the way the API's `src` takes it.
pub fn fixture(group: &str, name: &str) -> String {
    fixtures_dir(group).join(name).display().to_string()
}

/// A new empty directory no other test (of this or another process) uses;
/// `tag` names the test area in the directory name.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ors-{tag}-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
