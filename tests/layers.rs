//! The layers of the crate, checked from its source: every top-level
//! module of `src/` has a rank, and code may name (`crate::x`, or `super`
//! paths that leave the module) only modules of a lower rank. A lower
//! layer importing a higher one, or two modules importing each other, fails
//! here with the file and line. `.ci/run` runs this first.
//!
//! The map, bottom to top (see `src/README.md`):
//! - engine: `ids`, `model` → `parser` → `datamodel` → `interpreter`
//! - session host: `io` → `host`
//! - server core: `store` → `server`
//! - services (extensions): `modules`, `backends` → `gms`
//! - application: `app` → `cli`, `bench`, `fuzzing` (and the binary, `main.rs`)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rank of each top-level module; imports must go to a strictly lower rank.
const RANKS: &[(&str, u32)] = &[
    ("ids", 0),
    ("memory", 0),
    ("model", 1),
    ("parser", 2),
    ("datamodel", 3),
    ("interpreter", 4),
    ("io", 5),
    ("host", 6),
    ("store", 7),
    ("server", 8),
    ("modules", 9),
    ("backends", 9),
    ("gms", 10),
    ("app", 11),
    ("cli", 12),
    ("bench", 12),
    ("fuzzing", 12),
];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file (`src/a/b.rs` → `[a, b]`,
/// `src/a/mod.rs` → `[a]`, `src/lib.rs` → `[]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("a file under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The text with comments and string literals blanked (line breaks kept),
/// so paths named in prose are not taken for imports.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == b'r' && matches!(b.get(i + 1), Some(b'"' | b'#')) {
            // Raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i] as char);
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                if b[j] == b'\n' {
                    out.push('\n');
                }
                j += 1;
            }
            i = j + close.len();
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A character literal such as '"'.
            i += 3;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The top-level modules a `{…}` group names at its first level, starting
/// just after the `{`.
fn group_heads(b: &[u8], mut i: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    while i < b.len() {
        match b[i] {
            b'{' => {
                depth += 1;
                expect_head = false;
            }
            b'}' if depth == 0 => break,
            b'}' => depth -= 1,
            b',' if depth == 0 => expect_head = true,
            c if depth == 0 && expect_head && is_ident(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                heads.push(String::from_utf8_lossy(&b[start..i]).into_owned());
                expect_head = false;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

/// The module names a path continues with at `j`, just after `crate::`
/// (one name, or the first level of a `{…}` group).
fn heads_at(b: &[u8], j: usize) -> Vec<String> {
    if b.get(j) == Some(&b'{') {
        return group_heads(b, j + 1);
    }
    let end = (j..b.len()).find(|&k| !is_ident(b[k])).unwrap_or(b.len());
    vec![String::from_utf8_lossy(&b[j..end]).into_owned()]
}

/// The top-level modules one file names, with the line of each mention.
fn references(module: &[String], code: &str) -> Vec<(String, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let line_of = |i: usize| code[..i].bytes().filter(|&c| c == b'\n').count() + 1;
    let mut i = 0;
    while i < b.len() {
        let at_word = i == 0 || !is_ident(b[i - 1]) && b[i - 1] != b':';
        if at_word && b[i..].starts_with(b"crate::") {
            let j = i + "crate::".len();
            out.extend(heads_at(b, j).into_iter().map(|m| (m, line_of(i))));
            i = j;
            continue;
        }
        if at_word && b[i..].starts_with(b"super::") {
            // Count the chain of `super`s; it reaches the crate root when
            // there are as many as the file's module depth.
            let mut j = i;
            let mut ups = 0;
            while b[j..].starts_with(b"super::") {
                ups += 1;
                j += "super::".len();
            }
            if ups >= module.len() {
                out.extend(heads_at(b, j).into_iter().map(|m| (m, line_of(i))));
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unranked = BTreeSet::new();
    for file in &files {
        let module = module_path(&src, file);
        let Some(top) = module.first() else {
            continue; // lib.rs and main.rs sit above every module.
        };
        let Some(own) = rank(top) else {
            unranked.insert(top.clone());
            continue;
        };
        let code = code_only(&std::fs::read_to_string(file).expect("reading a source file"));
        for (target, line) in references(&module, &code) {
            if target == *top || target == "self" || target == "super" {
                continue;
            }
            let Some(theirs) = rank(&target) else {
                // A crate-root item (a re-export in lib.rs) or a typo the
                // compiler reports itself.
                continue;
            };
            edges.entry(top.clone()).or_default().insert(target.clone());
            if theirs >= own {
                problems.push(format!(
                    "{}:{line}: `{top}` (rank {own}) uses `{target}` (rank {theirs})",
                    file.strip_prefix(&src).unwrap_or(file).display()
                ));
            }
        }
    }
    assert!(
        unranked.is_empty(),
        "top-level modules with no layer in tests/layers.rs: {unranked:?}"
    );
    assert!(
        problems.is_empty(),
        "imports against the layers:\n{}",
        problems.join("\n")
    );
    // Ranks strictly decrease along every edge, so the graph is acyclic;
    // print it for the record.
    for (from, to) in &edges {
        println!(
            "{from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
}

#[test]
fn the_scanner_sees_grouped_and_super_imports() {
    let m = vec!["server".to_string(), "worker".to_string()];
    let code = code_only(
        "use crate::{gms::records, host::{LocalHost, x}};\n\
         // crate::cli is prose\n\
         let s = \"crate::app\";\n\
         use super::super::backends::Chat;\n\
         use super::api;\n",
    );
    let refs = references(&m, &code);
    let names: Vec<&str> = refs.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["gms", "host", "backends"]);
    assert_eq!(refs[2].1, 4);
}
