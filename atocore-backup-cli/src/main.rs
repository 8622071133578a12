//! `atocore-backup`: parse arguments, call the core, print text or JSON.

mod args;
mod progress;
mod render;

use std::process::ExitCode;

use atocore_backup_core::{self as core, CreateOptions, Error, ErrorClass, RestoreOptions, RuntimePaths};
use camino::Utf8PathBuf;
use clap::Parser;
use serde::Serialize;

use crate::args::{Cli, Command};
use crate::progress::TerminalProgress;

/// Exit statuses of the contract.
mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INVALID_BACKUP: u8 = 3;
    pub const REFUSED: u8 = 4;
    pub const BUSY: u8 = 5;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.command.json();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let code = exit_code(error.class());
            if json {
                let body = serde_json::json!({"error": {
                    "kind": error_kind(error.class()),
                    "message": error.chain(),
                    "exit_code": code,
                }});
                eprint_line(&body.to_string());
            } else {
                eprint_line(&format!("error: {}", error.chain()));
            }
            ExitCode::from(code)
        }
    }
}

/// The `kind` of a `--json` failure, as the HTTP API names its codes.
fn error_kind(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Failed => "failed",
        ErrorClass::BadInput => "bad_input",
        ErrorClass::NotFound => "not_found",
        ErrorClass::InvalidBackup => "invalid_backup",
        ErrorClass::Refused => "refused",
        ErrorClass::Busy => "busy",
    }
}

fn exit_code(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Failed => exit::FAILED,
        ErrorClass::BadInput => exit::USAGE,
        // "No such backup" is 3 in every command, as `validate` always said.
        ErrorClass::InvalidBackup | ErrorClass::NotFound => exit::INVALID_BACKUP,
        ErrorClass::Refused => exit::REFUSED,
        ErrorClass::Busy => exit::BUSY,
    }
}

/// Writes to stdout. A reader that went away (`list | head -1`) ends the
/// command quietly, as it ends `git` or `rg`: the work is done and nobody is
/// left to read the rest.
fn print(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
    if let Err(error) = written {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprint_line(&format!("error: cannot write to stdout: {error}"));
        std::process::exit(i32::from(exit::FAILED));
    }
}

fn eprint_line(text: &str) {
    eprint(&format!("{text}\n"));
}

/// Writes to stderr; a closed stderr loses the message but never panics.
fn eprint(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn print_json(value: &impl Serialize) {
    // Plain data with string keys always serializes.
    print(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ));
}

fn run(cli: Cli) -> Result<u8, Error> {
    let paths = RuntimePaths::resolve(cli.paths.into_overrides());
    match cli.command {
        Command::Create { include_chroma, json } => {
            let options = CreateOptions {
                include_chroma,
                ..CreateOptions::default()
            };
            let manifest = core::create_backup(&paths, &options, &TerminalProgress::new("copying"))?;
            if json {
                print_json(&manifest);
            } else {
                print(&render::created(&manifest));
            }
            Ok(0)
        }
        Command::List { json } => {
            let listing = core::list_backups(&paths)?;
            if json {
                print_json(&listing);
            } else {
                eprint(&render::warnings(&listing.warnings));
                print(&render::listing(&listing, &paths.snapshots_dir()));
            }
            Ok(0)
        }
        Command::Validate { stamp, all, json } => {
            let valid = match stamp {
                Some(stamp) if !all => {
                    let report = core::validate_backup(&paths.backup_dir, &stamp)?;
                    if json {
                        print_json(&report);
                    } else {
                        print(&render::validation(&report));
                    }
                    report.valid
                }
                _ => {
                    let all = core::validate_all(&paths)?;
                    if json {
                        print_json(&all);
                    } else {
                        print(&render::all_validation(&all));
                    }
                    all.all_valid
                }
            };
            Ok(if valid { 0 } else { exit::INVALID_BACKUP })
        }
        Command::Restore {
            stamp,
            confirm_service_stopped,
            include_chroma,
            no_chroma,
            no_pre_restore_snapshot,
            chown,
            dry_run,
            json,
        } => {
            let options = RestoreOptions {
                include_chroma: match (include_chroma, no_chroma) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                pre_restore_snapshot: !no_pre_restore_snapshot,
                chown,
            };
            if dry_run {
                let plan = core::preview_restore(&paths, &stamp, &options)?;
                if json {
                    print_json(&plan);
                } else {
                    print(&render::plan(&plan));
                }
                // The preview answers as the restore would: a gate that
                // would refuse is exit 4, with the plan still printed.
                return Ok(if plan.refusing_gate().is_some() {
                    exit::REFUSED
                } else {
                    0
                });
            }
            let progress = TerminalProgress::new("restoring");
            let report = core::restore_backup(&paths, &stamp, &options, confirm_service_stopped, &progress)?;
            if json {
                print_json(&report);
            } else {
                print(&render::restore(&report, &absolute(&paths)));
            }
            Ok(match report.failure {
                Some(class) => exit_code(class),
                None if report.success => 0,
                None => exit::FAILED,
            })
        }
        Command::Prune {
            policy,
            dry_run,
            json,
        } => {
            let plan = core::preview_prune(&paths, &policy.into_policy(), jiff::Timestamp::now())?;
            if dry_run {
                if json {
                    print_json(&plan);
                } else {
                    print(&render::prune_plan(&plan, true));
                }
                return Ok(0);
            }
            let report = core::execute_prune(&paths, plan)?;
            if json {
                print_json(&report);
            } else {
                print(&render::prune_plan(&report.plan, false));
                print(&render::prune_removals(&report));
            }
            Ok(if report.success { 0 } else { exit::FAILED })
        }
        Command::Delete { stamp, json } => {
            let report = core::delete_backup(&paths, &stamp)?;
            if json {
                print_json(&report);
            } else {
                print(&format!("Deleted backup {} ({})\n", report.stamp, report.path));
            }
            Ok(0)
        }
        Command::Drill {
            scratch_dir,
            keep,
            json,
        } => {
            let (scratch, _guard) = scratch_root(scratch_dir, keep)?;
            let report = core::run_drill(&scratch, &TerminalProgress::new("drill"))?;
            if json {
                print_json(&report);
            } else {
                print(&render::drill(&report));
            }
            Ok(if report.success { 0 } else { exit::FAILED })
        }
    }
}

/// `paths` made absolute, so a command printed for later runs from any directory.
fn absolute(paths: &RuntimePaths) -> RuntimePaths {
    let absolute = |path: &camino::Utf8Path| {
        std::path::absolute(path)
            .ok()
            .and_then(|path| Utf8PathBuf::from_path_buf(path).ok())
            .unwrap_or_else(|| path.to_owned())
    };
    RuntimePaths {
        db_path: absolute(&paths.db_path),
        chroma_dir: absolute(&paths.chroma_dir),
        registry_path: absolute(&paths.registry_path),
        backup_dir: absolute(&paths.backup_dir),
        registry_required: paths.registry_required,
    }
}

/// The drill's scratch directory: the one given, or a fresh temp directory
/// removed afterwards unless `--keep`.
fn scratch_root(
    given: Option<Utf8PathBuf>,
    keep: bool,
) -> Result<(Utf8PathBuf, Option<tempfile::TempDir>), Error> {
    if let Some(dir) = given {
        return Ok((dir, None));
    }
    let temp = tempfile::Builder::new().prefix("atocore-drill-").tempdir()?;
    let path = Utf8PathBuf::from_path_buf(temp.path().to_owned()).map_err(|path| Error::NonUtf8Path {
        path: path.to_string_lossy().into_owned(),
    })?;
    if keep {
        let _ = temp.keep();
        Ok((path, None))
    } else {
        Ok((path, Some(temp)))
    }
}
