//! Command-line hosts: `ors run`, `ors validate`, `ors conformance`,
//! `ors simulate`.

pub mod conformance;
pub mod manual;
pub mod platform;
pub mod run;
pub mod serve;
pub mod simulate;
pub mod supervise;

use std::path::PathBuf;

/// `ors validate FILE...`: prints diagnostics; returns 1 when any file has
/// errors. `dialect` overrides what each `<scxml>` calls for. Custom
/// actions are checked against the platform's registered actions (every
/// extension's, started with `config` or the defaults), so only actions
/// nothing implements are warned about.
pub fn validate(
    files: &[PathBuf],
    dialect: Option<crate::model::Dialect>,
    config: Option<PathBuf>,
) -> i32 {
    let mut failed = false;
    let actions = platform::registered_actions(&platform::PlatformOptions {
        config,
        ..Default::default()
    })
    .unwrap_or_default();
    let options = crate::parser::LoadOptions {
        dialect,
        custom_actions: &actions,
    };
    for f in files {
        match crate::host::loader::load_file_blocking(f, &options) {
            Ok(doc) => {
                for w in &doc.warnings {
                    eprintln!("{w}");
                }
                say(format_args!(
                    "{}: ok ({} states, {} transitions, dialect {})",
                    f.display(),
                    doc.states.len() - 1,
                    doc.transitions.len(),
                    match doc.dialect {
                        crate::model::Dialect::Ors => "ors",
                        crate::model::Dialect::W3c => "w3c",
                    }
                ));
            }
            Err(e) => {
                failed = true;
                say(format_args!("{e}"));
            }
        }
    }
    i32::from(failed)
}

/// Writes one line to stdout. When the reader has gone (`ors validate … |
/// head -1`), the command ends quietly with status 0, as `grep` or `ls`
/// would, instead of panicking as `println!` does on a broken pipe.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}
