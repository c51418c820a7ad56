//! Command-line hosts: `ors run`, `ors validate`, `ors conformance`.

pub mod conformance;
pub mod manual;
pub mod run;
pub mod serve;

use std::path::PathBuf;

/// `ors validate FILE...`: prints diagnostics; returns 1 when any file has errors.
pub fn validate(files: &[PathBuf]) -> i32 {
    let mut failed = false;
    for f in files {
        match crate::host::loader::load_file_blocking(f, &crate::parser::LoadOptions::default()) {
            Ok(doc) => {
                for w in &doc.warnings {
                    eprintln!("{w}");
                }
                println!(
                    "{}: ok ({} states, {} transitions)",
                    f.display(),
                    doc.states.len() - 1,
                    doc.transitions.len()
                );
            }
            Err(e) => {
                failed = true;
                println!("{e}");
            }
        }
    }
    i32::from(failed)
}
