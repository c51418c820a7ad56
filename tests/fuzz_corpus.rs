//! The fuzz corpus, replayed on stable Rust: every input `cargo fuzz`
//! kept (`fuzz/corpus/<target>/`) and every input that once crashed a
//! target (`fuzz/regressions/<target>/`) goes through the same function
//! the target calls (`ors::fuzzing`). An input that panics fails the test
//! with its file name; one that overflows the stack aborts the test
//! binary, which fails too. Run on a thread with a worker's stack, as the
//! server runs sessions.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("document", ors::fuzzing::document),
    ("grammars", ors::fuzzing::grammars),
    ("request_params", ors::fuzzing::request_params),
    ("snapshot_restore", ors::fuzzing::snapshot_restore),
];

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str, minimum: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    for (name, target) in TARGETS {
        let files = inputs(&root.join(name));
        assert!(
            files.len() >= minimum,
            "fuzz/{kind}/{name} has {} inputs; expected at least {minimum}",
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).expect("a corpus file");
            let target = *target;
            let run = std::thread::Builder::new()
                .stack_size(256 * 1024 * 1024)
                .spawn(move || target(&data))
                .expect("a thread")
                .join();
            assert!(run.is_ok(), "{} panicked", file.display());
        }
    }
}

#[test]
fn every_corpus_input_runs_through_its_target() {
    replay("corpus", 3);
}

#[test]
fn every_input_that_once_crashed_a_target_runs_through_it() {
    replay("regressions", 0);
}
