//! The fuzz corpus, replayed on stable Rust: every input `cargo fuzz`
//! kept (`fuzz/corpus/<target>/`) and every input that once crashed a
//! target (`fuzz/regressions/<target>/`) goes through the same function
//! the target calls (`ors::fuzzing`). An input that panics fails the test
//! with its file name; one that overflows the stack aborts the test
//! binary, which fails too. Run on a thread with a worker's stack, as the
//! server runs sessions. The third test is CI's fuzz smoke: seeded
//! mutations of the corpus, on stable Rust (the libFuzzer runs need
//! nightly and `cargo fuzz`; see `fuzz/README.md`).

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
        let target = *target;
        let failed = std::thread::Builder::new()
            .stack_size(256 * 1024 * 1024)
            .spawn(move || {
                files.into_iter().find(|file| {
                    let data = std::fs::read(file).expect("a corpus file");
                    std::panic::catch_unwind(|| target(&data)).is_err()
                })
            })
            .expect("a thread")
            .join()
            .expect("the replay thread");
        if let Some(file) = failed {
            panic!("{} panicked", file.display());
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

/// Mutated inputs each target gets in the smoke.
const CASES_PER_TARGET: usize = 3000;

/// The CI smoke of the fuzz targets: corpus inputs picked at random and
/// mutated (bytes flipped, inserted, deleted, ranges repeated, inputs
/// spliced) by a seeded generator, [`CASES_PER_TARGET`] per target, run
/// through it. The seed is printed; `ORS_FUZZ_SEED=<n>` replays a run.
#[test]
fn mutated_corpus_inputs_run_through_their_targets() {
    let seed = std::env::var("ORS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("fuzz smoke seed: {seed} (ORS_FUZZ_SEED={seed} replays it)");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut rng = fastrand::Rng::with_seed(seed);
    for (name, target) in TARGETS {
        let corpus: Vec<Vec<u8>> = inputs(&root.join(name))
            .iter()
            .map(|f| std::fs::read(f).expect("a corpus file"))
            .collect();
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        let mut cases = Vec::new();
        for _ in 0..CASES_PER_TARGET {
            let mut data = corpus[rng.usize(0..corpus.len())].clone();
            for _ in 0..rng.usize(1..8) {
                mutate(&mut data, &corpus, &mut rng);
            }
            cases.push(data);
        }
        let target = *target;
        let run = std::thread::Builder::new()
            .stack_size(256 * 1024 * 1024)
            .spawn(move || {
                for data in cases {
                    target(&data);
                }
            })
            .expect("a thread")
            .join();
        assert!(
            run.is_ok(),
            "{name}: a mutated input panicked (seed {seed})"
        );
    }
}

fn mutate(data: &mut Vec<u8>, corpus: &[Vec<u8>], rng: &mut fastrand::Rng) {
    const INTERESTING: &[&[u8]] = &[
        b"<",
        b">",
        b"</state>",
        b"<state id=\"x\">",
        b"&amp;",
        b"\"",
        b"'",
        b"{",
        b"}",
        b"[",
        b"]",
        b"$ref",
        b"\"$ref\":",
        b"\xff",
        b"\0",
        b"--B",
        b"\r\n",
        b"=",
        b"&",
        b"%",
        b"99999999999999999999",
        b"-1",
        b"NaN",
        b"@",
        b"?:",
        b"ms",
    ];
    let len = data.len();
    match rng.u8(0..6) {
        0 if len > 0 => {
            let i = rng.usize(0..len);
            data[i] ^= 1 << rng.u8(0..8);
        }
        1 => {
            let at = rng.usize(0..=len);
            let piece = INTERESTING[rng.usize(0..INTERESTING.len())];
            data.splice(at..at, piece.iter().copied());
        }
        2 if len > 0 => {
            let at = rng.usize(0..len);
            let n = rng.usize(1..=(len - at).min(64));
            data.drain(at..at + n);
        }
        3 if len > 0 => {
            let at = rng.usize(0..len);
            let n = rng.usize(1..=(len - at).min(32));
            let piece: Vec<u8> = data[at..at + n].to_vec();
            for _ in 0..rng.usize(1..50) {
                data.splice(at..at, piece.iter().copied());
            }
        }
        4 if !corpus.is_empty() => {
            let other = &corpus[rng.usize(0..corpus.len())];
            let cut = rng.usize(0..=len);
            let from = rng.usize(0..=other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        _ => {
            let at = rng.usize(0..=len);
            data.insert(at, rng.u8(..));
        }
    }
}
