//! `validate`: does a snapshot hold exactly what its manifest says?
//!
//! Validation never writes into a backup. The db copy is opened `immutable`,
//! so not even a `-shm` appears beside it; hashing and `PRAGMA
//! integrity_check` run on two threads at once, each reading its bytes once,
//! and whichever finishes first hashes the chroma files left.
//! A restore validates and stages in one pass (`validate_and_stage`): each
//! file is copied to its staging path as it is hashed.

use std::collections::BTreeSet;

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::chroma_swap::StagingTree;
use crate::durable::{
    CopyFailure, FilesystemFlush, NoProgress, Progress, copy_hashed_unflushed, hash_regular_file,
};
use crate::error::{Error, Result};
use crate::manifest::{B3SUMS_NAME, BackupManifest};
use crate::sqlite::integrity_check_copy;
use crate::stamp::Stamp;
use crate::tree::walk_tree;
use crate::work_queue::WorkQueue;

/// The outcome of validating one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The stamp validated.
    pub stamp: Stamp,
    /// The snapshot directory.
    pub path: Utf8PathBuf,
    /// Whether the snapshot directory exists.
    pub exists: bool,
    /// True only when `errors` is empty.
    pub valid: bool,
    /// Whether the db copy matches its checksum and passes `integrity_check`.
    pub db_ok: bool,
    /// Whether the registry copy is intact; `null` when none was captured.
    pub registry_ok: Option<bool>,
    /// Whether every chroma file is intact; `null` when chroma was not captured.
    pub chroma_ok: Option<bool>,
    /// Every check run, in order.
    pub checks: Vec<Check>,
    /// What makes the backup invalid, one sentence each, naming the part.
    pub errors: Vec<String>,
    /// What is odd but harmless (an unrecorded extra chroma file).
    pub warnings: Vec<String>,
    /// The manifest, when it could be read.
    pub manifest: Option<BackupManifest>,
}

/// One named check and what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// E.g. `db.integrity_check`, `chroma.files`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it found.
    pub detail: String,
}

impl ValidationReport {
    fn new(stamp: &Stamp, path: Utf8PathBuf) -> Self {
        ValidationReport {
            stamp: stamp.clone(),
            path,
            exists: false,
            valid: false,
            db_ok: false,
            registry_ok: None,
            chroma_ok: None,
            checks: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            manifest: None,
        }
    }

    fn check(
        &mut self,
        name: &str,
        outcome: std::result::Result<String, String>,
        error_prefix: &str,
    ) -> bool {
        let ok = outcome.is_ok();
        let detail = match outcome {
            Ok(detail) => detail,
            Err(detail) => {
                // Messages that already name their file need no prefix.
                self.errors.push(if error_prefix.is_empty() {
                    detail.clone()
                } else {
                    format!("{error_prefix}: {detail}")
                });
                detail
            }
        };
        self.checks.push(Check {
            name: name.to_owned(),
            ok,
            detail,
        });
        ok
    }

    /// The first error, for one-line messages.
    pub fn first_error(&self) -> &str {
        self.errors.first().map_or("no errors", String::as_str)
    }
}

/// Validates the snapshot `stamp` under `backup_dir`.
///
/// An invalid or missing backup is a report with `valid: false`, not an
/// error: the report says what is wrong.
///
/// # Errors
/// None today; the `Result` leaves room for failures that prevent validating
/// at all.
pub fn validate_backup(backup_dir: &Utf8Path, stamp: &Stamp) -> Result<ValidationReport> {
    validate_and_stage(backup_dir, stamp, &StageTo::default(), &NoProgress)
}

/// Where a restore wants the files it validates copied: it stages the new
/// runtime beside the live one while validating the backup, so each byte of
/// the backup is read and hashed once, and the copy is verified by the same
/// checksum that validates the backup.
#[derive(Default)]
pub(crate) struct StageTo<'a> {
    /// The temp file beside the live db, and the flush the caller finishes
    /// once validation has passed.
    pub db: Option<(&'a Utf8Path, &'a FilesystemFlush)>,
    /// The staging directory beside the live chroma directory (flushed here).
    pub chroma: Option<&'a Utf8Path>,
}

/// [`validate_backup`], copying files to `stage` as they are hashed.
///
/// # Errors
/// Failing to write a copy is an error (the backup may be fine; the
/// destination is not); failing to read the backup is in the report. Either
/// way the caller removes whatever was staged.
pub(crate) fn validate_and_stage(
    backup_dir: &Utf8Path,
    stamp: &Stamp,
    stage: &StageTo<'_>,
    progress: &dyn Progress,
) -> Result<ValidationReport> {
    let dir = backup_dir.join("snapshots").join(stamp.as_str());
    let mut report = ValidationReport::new(stamp, dir.clone());
    match fs::symlink_metadata(&dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            report.exists = true;
            report.check("snapshot.dir", Err(format!("snapshot `{dir}` is a symlink")), "");
            return Ok(report);
        }
        Ok(meta) if meta.is_dir() => report.exists = true,
        Ok(_) => {
            report.exists = true;
            report.check(
                "snapshot.dir",
                Err(format!("snapshot `{dir}` is not a directory")),
                "",
            );
            return Ok(report);
        }
        Err(_) => {
            report.check(
                "snapshot.dir",
                Err(format!("snapshot `{dir}` does not exist")),
                "",
            );
            return Ok(report);
        }
    }
    let manifest = match BackupManifest::load(&dir) {
        Ok(manifest) => manifest,
        Err(error) => {
            report.check("manifest", Err(error.chain()), "");
            return Ok(report);
        }
    };
    report.check(
        "manifest",
        Ok(format!("format_version {}", manifest.format_version)),
        "manifest",
    );
    let stamp_matches = if manifest.stamp == *stamp {
        Ok(format!("stamp {stamp}"))
    } else {
        Err(format!(
            "manifest records stamp `{}`, not `{stamp}`",
            manifest.stamp
        ))
    };
    report.check("manifest.stamp", stamp_matches, "");

    // `integrity_check` gets a thread of its own; the db file is hashed on
    // this one, then the registry. Chroma files are a queue that every thread
    // with nothing else left to do takes from: with a large db the check is
    // the long pole and the queue is empty before it ends; with a small db
    // and a large chroma tree, both cores hash chroma. A restore's staging
    // copies are mostly kernel work, so one thread copies chroma from the
    // start, beside the db's copy. When staged, the db copy's checksum is the
    // backup's, so it holds the very bytes checked, and a restore's final
    // check of the db it renames into place can rely on this one (see
    // `execute`).
    let chroma = ChromaQueue::new(&dir, &manifest, stage, progress)?;
    let (integrity, checked) = std::thread::scope(|scope| {
        let integrity = scope.spawn(|| {
            let integrity = check_db_integrity(&dir, &manifest.db.path);
            (integrity, chroma.check_until_done())
        });
        let alongside = stage
            .chroma
            .is_some()
            .then(|| scope.spawn(|| chroma.check_until_done()));
        let record = &manifest.db;
        let db = check_file(
            &dir,
            &record.path,
            record.size_bytes,
            &record.checksum,
            stage.db,
            progress,
        );
        let registry = match (&db, &manifest.registry) {
            (Ok(_), Some(registry)) => check_file(
                &dir,
                &registry.path,
                registry.size_bytes,
                &registry.checksum,
                None,
                progress,
            )
            .map(Some),
            _ => Ok(None),
        };
        let mine = if db.is_ok() && registry.is_ok() {
            chroma.check_until_done()
        } else {
            // A copy that cannot be written ends the staging: the others stop too.
            chroma.stop();
            Ok(())
        };
        let alongside = alongside.map_or(Ok(()), |running| {
            running
                .join()
                .unwrap_or_else(|_| Err(Error::Io(std::io::Error::other("checking chroma files panicked"))))
        });
        let (integrity, behind_integrity) = integrity
            .join()
            .unwrap_or_else(|_| (Err("integrity check panicked".to_owned()), Ok(())));
        let checked = db.and_then(|db| {
            let registry = registry?;
            mine?;
            alongside?;
            behind_integrity?;
            Ok((db, registry))
        });
        (integrity, checked)
    });
    let (db, registry) = checked?;
    let chroma_outcomes = chroma.finish()?;

    let db_label = format!("db {}", manifest.db.path);
    let db_checksum_ok = report.check("db.checksum", db, &db_label);
    let db_integrity_ok = report.check("db.integrity_check", integrity, &db_label);
    report.db_ok = db_checksum_ok && db_integrity_ok;

    if let (Some(record), Some(checksum)) = (&manifest.registry, registry) {
        let label = format!("registry {}", record.path);
        let checksum_ok = report.check("registry.checksum", checksum, &label);
        let json_ok =
            checksum_ok && report.check("registry.json", parse_json(&dir.join(&record.path)), &label);
        report.registry_ok = Some(checksum_ok && json_ok);
    }

    if let Some(chroma) = &manifest.chroma {
        let mut failed = 0;
        for (path, outcome) in chroma_outcomes {
            if let Err(problem) = outcome {
                failed += 1;
                report.errors.push(format!("chroma file {path}: {problem}"));
            }
        }
        let summary = if failed == 0 {
            Ok(format!("{} files verified", chroma.files.len()))
        } else {
            Err(format!("{failed} of {} files failed", chroma.files.len()))
        };
        let ok = summary.is_ok();
        report.checks.push(Check {
            name: "chroma.files".to_owned(),
            ok,
            detail: summary.unwrap_or_else(|e| e),
        });
        let extras = unrecorded_chroma_files(&dir, &chroma.path, &chroma.files);
        let extras_ok = match extras {
            Ok(extras) => {
                for extra in extras {
                    report
                        .warnings
                        .push(format!("chroma file {extra} is not recorded in the manifest"));
                }
                true
            }
            Err(problem) => report.check("chroma.tree", Err(problem), "chroma"),
        };
        report.chroma_ok = Some(ok && extras_ok);
    }

    if !dir.join(B3SUMS_NAME).is_file() {
        report.warnings.push(format!(
            "`{}` is missing; `b3sum -c` cannot be used",
            dir.join(B3SUMS_NAME)
        ));
    }
    if let Some(warning) = readable_by_others(&dir) {
        report.warnings.push(warning);
    }
    report.valid = report.errors.is_empty();
    report.manifest = Some(manifest);
    Ok(report)
}

/// A warning naming what in the snapshot other users can read or enter (the
/// db holds private memories), if anything; snapshots are written 0700/0400.
fn readable_by_others(dir: &Utf8Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut exposed = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&current) else {
            continue;
        };
        if meta.mode() & 0o007 != 0 {
            let relative = current.strip_prefix(dir).map_or("", |r| r.as_str());
            let name = if relative.is_empty() { "." } else { relative };
            exposed.push(format!("`{name}` ({:04o})", meta.mode() & 0o7777));
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&current).into_iter().flatten().flatten() {
                if let Ok(path) = crate::durable::utf8(entry.path()) {
                    pending.push(path);
                }
            }
        }
    }
    if exposed.is_empty() {
        return None;
    }
    exposed.sort();
    let shown = exposed.len().min(5);
    let more = exposed.len() - shown;
    Some(format!(
        "snapshot `{dir}` is readable by other users: {}{}; `chmod -R go= {dir}` makes it private",
        exposed[..shown].join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

type Outcome = std::result::Result<String, String>;

/// A snapshot's chroma files, checked (and staged, for a restore) by every
/// thread that calls [`check_until_done`](Self::check_until_done).
struct ChromaQueue<'a> {
    dir: &'a Utf8Path,
    files: &'a [crate::FileRecord],
    /// The chroma directory inside the snapshot, as the manifest names it.
    path: &'a str,
    staging: Option<StagingTree>,
    queue: WorkQueue<'a, crate::FileRecord, Outcome>,
    progress: &'a dyn Progress,
}

impl<'a> ChromaQueue<'a> {
    /// The queue of `manifest`'s chroma files (empty without chroma),
    /// creating the staging tree when `stage` asks for one.
    fn new(
        dir: &'a Utf8Path,
        manifest: &'a BackupManifest,
        stage: &StageTo<'_>,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        let (files, path, staging) = match &manifest.chroma {
            Some(record) => {
                let staging = match stage.chroma {
                    Some(root) => Some(StagingTree::create(root, record)?),
                    None => None,
                };
                (record.files.as_slice(), record.path.as_str(), staging)
            }
            None => (&[][..], "", None),
        };
        Ok(ChromaQueue {
            dir,
            files,
            path,
            staging,
            queue: WorkQueue::new(files),
            progress,
        })
    }

    /// Checks files until none is left. A staging copy that cannot be
    /// written is an error, and stops every thread at its next file.
    fn check_until_done(&self) -> Result<()> {
        self.queue.work_until_done(|file| self.check(file))
    }

    fn check(&self, file: &crate::FileRecord) -> Result<Outcome> {
        let relative = format!("{}/{}", self.path, file.path);
        let copy_to = self
            .staging
            .as_ref()
            .map(|tree| (tree.path_of(file), tree.flush()));
        let outcome = check_file(
            self.dir,
            &relative,
            file.size_bytes,
            &file.checksum,
            copy_to.as_ref().map(|(path, flush)| (path.as_path(), *flush)),
            self.progress,
        )?;
        if let (Some(tree), Ok(_)) = (&self.staging, &outcome) {
            tree.finish_file(file)?;
        }
        Ok(outcome)
    }

    /// Leaves the files not yet taken unchecked.
    fn stop(&self) {
        self.queue.stop();
    }

    /// Every file's outcome in the manifest's order, once the staged files
    /// are durable. Only called after every thread has checked its last.
    fn finish(self) -> Result<Vec<(String, Outcome)>> {
        if let Some(tree) = self.staging {
            tree.sync()?;
        }
        Ok(self
            .files
            .iter()
            .zip(self.queue.into_results())
            .map(|(file, outcome)| {
                let outcome = outcome.unwrap_or_else(|| Err("not checked".to_owned()));
                (file.path.clone(), outcome)
            })
            .collect())
    }
}

/// Refuses a path whose any component inside the snapshot is a symlink, so a
/// planted link cannot make validation (or restore) read outside the backup.
pub(crate) fn resolve_inside(dir: &Utf8Path, relative: &str) -> std::result::Result<Utf8PathBuf, String> {
    let mut path = dir.to_owned();
    for part in relative.split('/') {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(format!("`{path}` is a symlink")),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err("missing".to_owned()),
            Err(error) => return Err(crate::Error::Io(error).chain()),
        }
    }
    Ok(path)
}

/// Checks one file's size and checksum, copying it to `copy_to` as it is
/// hashed when given. The outer `Result` is a copy that could not be
/// written; the inner one is the check.
fn check_file(
    dir: &Utf8Path,
    relative: &str,
    size: u64,
    expected: &crate::Checksum,
    copy_to: Option<(&Utf8Path, &FilesystemFlush)>,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let path = match resolve_inside(dir, relative) {
        Ok(path) => path,
        Err(problem) => return Ok(Err(problem)),
    };
    let hashed = match copy_to {
        None => hash_regular_file(&path, expected.algorithm(), progress).map_err(|error| error.chain()),
        Some((target, flush)) => match regular_file(&path) {
            Err(problem) => Err(problem),
            Ok(()) => match copy_hashed_unflushed(&path, target, expected.algorithm(), progress, flush) {
                Ok(hashed) => Ok(hashed),
                Err(CopyFailure::Read(error)) => Err(error.chain()),
                Err(CopyFailure::Write(error)) => return Err(error),
            },
        },
    };
    let (actual_size, actual) = match hashed {
        Ok(hashed) => hashed,
        Err(problem) => return Ok(Err(problem)),
    };
    Ok(if actual_size != size {
        Err(format!("size {actual_size} bytes, manifest records {size}"))
    } else if actual != *expected {
        Err("checksum mismatch".to_owned())
    } else {
        Ok(format!("{size} bytes, {expected}"))
    })
}

/// A FIFO or device planted in a backup would block or never end a copy.
fn regular_file(path: &Utf8Path) -> std::result::Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("`{path}` is not a regular file")),
        Err(error) => Err(Error::Io(error).chain()),
    }
}

fn check_db_integrity(dir: &Utf8Path, relative: &str) -> Outcome {
    let path = resolve_inside(dir, relative)?;
    match integrity_check_copy(&path) {
        Ok(text) if text == "ok" => Ok(text),
        Ok(text) => Err(format!("integrity_check: {text}")),
        Err(error) => Err(error.chain()),
    }
}

fn parse_json(path: &Utf8Path) -> std::result::Result<String, String> {
    let file = fs::File::open(path).map_err(|error| Error::Io(error).chain())?;
    serde_json::from_reader::<_, serde::de::IgnoredAny>(std::io::BufReader::new(file))
        .map(|_| "valid JSON".to_owned())
        .map_err(|error| format!("not valid JSON ({error})"))
}

fn unrecorded_chroma_files(
    dir: &Utf8Path,
    chroma_path: &str,
    recorded: &[crate::FileRecord],
) -> std::result::Result<Vec<String>, String> {
    let root = resolve_inside(dir, chroma_path)?;
    let recorded: BTreeSet<&str> = recorded.iter().map(|f| f.path.as_str()).collect();
    let entries = walk_tree(&root).map_err(|error| error.chain())?;
    Ok(entries
        .into_iter()
        .filter(|entry| !entry.is_dir && !recorded.contains(entry.relative.as_str()))
        .map(|entry| entry.relative)
        .collect())
}

/// `validate --all`: every snapshot's report, for cron and monitoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllValidation {
    /// True when every snapshot is valid (and there is no broken entry).
    pub all_valid: bool,
    /// One report per snapshot directory named by a stamp, newest first.
    pub reports: Vec<ValidationReport>,
    /// Entries in `snapshots/` that are not named by a stamp, so cannot be validated.
    pub unvalidated: Vec<String>,
}

/// Validates every snapshot under `paths.backup_dir`.
///
/// # Errors
/// Only when the snapshots directory cannot be listed.
pub fn validate_all(paths: &crate::RuntimePaths) -> Result<AllValidation> {
    let listing = crate::list_backups(paths)?;
    let mut reports = Vec::new();
    let mut unvalidated = Vec::new();
    for summary in listing.backups {
        match summary.stamp.parse::<Stamp>() {
            Ok(stamp) => reports.push(validate_backup(&paths.backup_dir, &stamp)?),
            Err(_) => unvalidated.push(summary.stamp),
        }
    }
    Ok(AllValidation {
        all_valid: unvalidated.is_empty() && reports.iter().all(|r| r.valid),
        reports,
        unvalidated,
    })
}
