//! The one place a test decides to skip for a missing optional harness
//! (PostgreSQL, the CometD JavaScript client under node, a tmpfs mount).
//! Under CI (`CI=true`) a missing harness fails the test instead.
//!
//! A skip must be seen: it is written straight to the terminal (past the
//! test harness's capture) and recorded in a ledger for this `cargo test`
//! run (`$CARGO_TARGET_TMPDIR/skipped-checks-<cargo's pid>`), which the
//! last test binary, `tests/zz_skipped_checks.rs`, prints as the run's
//! final lines, grouped by cause with the command that enables them.

use std::io::Write as _;
use std::path::PathBuf;

/// Whether this run is CI (`CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The ledger of the checks skipped in this `cargo test` run: one line a
/// skip, `why<TAB>what`. Test binaries are children of the same `cargo`
/// process, so its pid names the run.
pub fn ledger() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "skipped-checks-{}",
        std::os::unix::process::parent_id()
    ))
}

/// Skips `what` because `why` (which says how to enable it): panics under
/// CI; otherwise says so on the terminal and records it in [`ledger`].
/// The caller returns right after.
pub fn skip(what: &str, why: &str) {
    if under_ci() {
        panic!("{what} cannot be skipped under CI: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}: {why}");
    let line = format!(
        "{}\t{}\n",
        why.replace(['\t', '\n'], " "),
        what.replace(['\t', '\n'], " ")
    );
    let _ = std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger())
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// `tests/cometd`, the CometD JavaScript client's harness, when its
/// `node_modules` are installed; otherwise `None` after [`skip`].
pub fn cometd_node_harness(what: &str) -> Option<PathBuf> {
    let harness = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cometd");
    if harness.join("node_modules").is_dir() {
        Some(harness)
    } else {
        skip(
            what,
            "tests/cometd/node_modules is missing; to enable: (cd tests/cometd && npm ci)",
        );
        None
    }
}
