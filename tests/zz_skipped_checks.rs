//! The last test binary of a `cargo test` run (cargo runs the integration
//! test binaries in name order, hence `zz_`): prints the checks the run
//! skipped, grouped by cause with the command that enables each, from the
//! ledger `tests/common/skips.rs` keeps, then removes the ledger. A plain
//! program (`harness = false`), so its lines are the run's final output.

mod common;

use std::collections::BTreeMap;

fn main() {
    let ledger = common::skips::ledger();
    let text = std::fs::read_to_string(&ledger).unwrap_or_default();
    let _ = std::fs::remove_file(&ledger);
    let mut by_cause: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((why, what)) = line.split_once('\t') {
            by_cause.entry(why).or_default().push(what);
        }
    }
    if by_cause.is_empty() {
        println!("\nskipped checks: none");
        return;
    }
    let total: usize = by_cause.values().map(Vec::len).sum();
    println!("\nSKIPPED CHECKS: {total} passed without running what they check:");
    for (why, whats) in &by_cause {
        let mut whats = whats.clone();
        whats.sort_unstable();
        whats.dedup();
        println!("  - {}", whats.join("; "));
        println!("    because {why}");
    }
    println!("  (README.md, \"The whole suite\", says what each command installs)");
}
