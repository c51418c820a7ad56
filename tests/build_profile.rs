//! The README's two commands share one build of the dependencies: every
//! crate the server's build compiles must have the same feature set when
//! the tests are built, or cargo compiles it (and everything above it) a
//! second time. This asks `cargo tree` for both feature resolutions and
//! fails on any shared crate whose features differ (a new dev-dependency
//! that unifies extra features in needs a pin in `Cargo.toml`).

use std::collections::BTreeMap;
use std::process::Command;

/// `name version` → features, for the given dependency kinds.
fn features(edges: &str) -> BTreeMap<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--prefix",
            "none",
            "-f",
            "{p}|{f}",
            "-e",
            edges,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -e {edges} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let Some((package, feats)) = line.split_once('|') else {
            continue;
        };
        // "name v1.2.3 (path or proc-macro)" → "name v1.2.3"
        let package: Vec<&str> = package.split_whitespace().take(2).collect();
        let feats = feats.trim_end_matches(" (*)").trim().to_string();
        map.insert(package.join(" "), feats);
    }
    map
}

#[test]
fn tests_build_no_dependency_with_other_features_than_the_server() {
    let server = features("normal,build");
    let tests = features("normal,build,dev");
    assert!(
        server.len() > 100 && server.contains_key(&format!("ors v{}", env!("CARGO_PKG_VERSION"))),
        "cargo tree listed {} packages, without ors",
        server.len()
    );
    let differing: Vec<String> = server
        .iter()
        .filter_map(|(package, feats)| {
            let in_tests = tests.get(package)?;
            (in_tests != feats).then(|| format!("{package}: server [{feats}], tests [{in_tests}]"))
        })
        .collect();
    assert!(
        differing.is_empty(),
        "these dependencies would be compiled twice (pin the tests' features in Cargo.toml):\n{}",
        differing.join("\n")
    );
}
