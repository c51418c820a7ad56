//! The one place a test decides to skip for a missing optional harness.
//! Today a skip is a note on stderr (seen with `--nocapture`) and a pass,
//! except under CI (`CI=true`), where the missing harness fails the test.

use std::path::PathBuf;

/// Whether this run is CI (`CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips `what` because `why`: panics under CI, otherwise prints a note.
/// Returns nothing to use; the caller returns right after.
pub fn skip(what: &str, why: &str) {
    if under_ci() {
        panic!("{what} cannot be skipped under CI: {why}");
    }
    eprintln!("note: {what} is skipped: {why}");
}

/// `tests/cometd`, the CometD JavaScript client's harness, when its
/// `node_modules` are installed (`npm ci` there; `.ci/run` does it);
/// otherwise `None` after [`skip`].
pub fn cometd_node_harness(what: &str) -> Option<PathBuf> {
    let harness = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cometd");
    if harness.join("node_modules").is_dir() {
        Some(harness)
    } else {
        skip(
            what,
            "tests/cometd/node_modules is missing (run `npm ci` in tests/cometd)",
        );
        None
    }
}
