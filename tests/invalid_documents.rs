//! Broken documents are rejected with the right line, column and reason,
//! and no input makes the loader panic.

use std::path::{Path, PathBuf};

use ors::{LoadOptions, load_file, parse_document};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixtures/invalid exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "scxml"))
        .collect();
    files.sort();
    files
}

/// Each fixture's first line is `<!-- expect LINE:COL message fragment -->`.
fn expectation(path: &Path) -> (u32, u32, String) {
    let text = std::fs::read_to_string(path).expect("readable");
    let first = text.lines().next().unwrap_or_default();
    let spec = first
        .trim()
        .strip_prefix("<!-- expect ")
        .and_then(|s| s.strip_suffix(" -->"))
        .unwrap_or_else(|| {
            panic!(
                "{}: first line must be <!-- expect L:C text -->",
                path.display()
            )
        });
    let (pos, message) = spec.split_once(' ').expect("position then message");
    let (line, col) = pos.split_once(':').expect("LINE:COL");
    (
        line.parse().expect("line"),
        col.parse().expect("col"),
        message.to_string(),
    )
}

#[test]
fn every_broken_document_is_rejected_at_the_right_place() {
    let files = fixtures();
    assert!(
        files.len() >= 20,
        "expected the full fixture set, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let (line, col, fragment) = expectation(f);
        match load_file(f, &LoadOptions::default()) {
            Ok(_) => failures.push(format!("{}: loaded, expected an error", f.display())),
            Err(e) => {
                let hit = e.0.iter().any(|d| {
                    d.pos.line == line && d.pos.column == col && d.message.contains(&fragment)
                });
                let rendered = e.to_string();
                if !hit {
                    failures.push(format!(
                        "{}: expected {line}:{col} '{fragment}', got:\n{rendered}",
                        f.display()
                    ));
                }
                let file = f.display().to_string();
                assert!(
                    rendered.starts_with(&file),
                    "diagnostic names the file: {rendered}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn truncated_documents_never_panic() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/snapshot/roundtrip.scxml");
    let text = std::fs::read_to_string(path).expect("readable");
    for (i, _) in text.char_indices() {
        let prefix = &text[..i];
        let result = parse_document(prefix, None, &LoadOptions::default());
        // A prefix without the closing </scxml> is never a whole document.
        if !prefix.contains("</scxml>") {
            assert!(result.is_err(), "prefix of {i} bytes was accepted");
        }
    }
}

#[test]
fn prefixed_scxml_namespace_with_bom_loads() {
    let doc = "\u{feff}<?xml version=\"1.0\"?>\n<!-- c -->\n<ns0:scxml xmlns:ns0=\"http://www.w3.org/2005/07/scxml\" version=\"1.0\">\
               <ns0:state id=\"a\"><ns0:transition event=\"e\" target=\"b\"/></ns0:state>\
               <ns0:final id=\"b\"/></ns0:scxml>";
    let doc = parse_document(doc, None, &LoadOptions::default()).expect("loads");
    assert_eq!(doc.states.len(), 3);
    assert!(doc.state_by_name("b").is_some());
}

#[test]
fn unclaimed_custom_action_is_a_warning_not_an_error() {
    let doc = r#"<scxml xmlns="http://www.w3.org/2005/07/scxml" xmlns:x="urn:example" version="1.0">
  <state id="a"><onentry><x:thing/></onentry></state></scxml>"#;
    let doc = parse_document(doc, None, &LoadOptions::default()).expect("loads");
    assert_eq!(doc.warnings.len(), 1);
    assert!(doc.warnings[0].contains("<thing>"), "{}", doc.warnings[0]);
}
