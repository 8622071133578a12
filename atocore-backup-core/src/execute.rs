//! Restore execution: gates, then one exhaustive `match` over the plan.

use std::time::Instant;

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::chroma_swap::{OwnersOfTree, restore_chroma};
use crate::create::{
    CreateOptions, LiveAccess, create_backup_locked, live_inodes, now, seal_snapshot, snapshot_dir,
};
use crate::durable::{
    FilesystemFlush, Progress, copy_hashed, create_dir_durably, fsync_dir, remove_if_exists, rename_durably,
    temp_path_for,
};
use crate::error::{Error, ErrorClass, Result};
use crate::faults::{crash_point, injected};
use crate::gates::{self, ensure_db_unused};
use crate::leftovers::{RESTORE_TMP, chroma_staging_beside};
use crate::lock::BackupDirLock;
use crate::manifest::Ownership;
use crate::manifest::{BackupKind, BackupManifest};
use crate::marker::RestoreMarker;
use crate::observe::{available_bytes, observe_restore};
use crate::ownership::apply_ownership;
use crate::paths::{RuntimePaths, parent_or_dot};
use crate::plan::{
    ChromaSwap, GateCheck, RestoreOptions, RestorePlan, RestoreStep, RestoreTargets, plan_restore,
};
use crate::prune::remove_snapshot;
use crate::sqlite::{checkpoint_truncate, integrity_check_live};
use crate::stamp::Stamp;
use crate::validate::{StageTo, validate_and_stage};

/// What happened to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It ran and succeeded.
    Ok,
    /// It did not run: the plan skipped it, or an earlier step failed.
    Skipped,
    /// It ran and failed; later steps are skipped.
    Failed,
}

/// A planned step and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step as planned.
    #[serde(flatten)]
    pub step: RestoreStep,
    /// Its outcome.
    pub status: StepStatus,
    /// What it did, or why it failed or was skipped.
    pub detail: String,
    /// Wall time spent in it.
    pub duration_ms: u64,
}

/// The plan plus one outcome per step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Version of the plan's JSON shape.
    pub format_version: u32,
    /// The backup restored.
    pub stamp: Stamp,
    /// Its snapshot directory.
    pub backup_path: Utf8PathBuf,
    /// Whether chroma was restored.
    pub include_chroma: bool,
    /// Whether a pre-restore snapshot was planned.
    pub pre_restore_snapshot: bool,
    /// Where the restore wrote.
    pub targets: RestoreTargets,
    /// The gates it passed, and what each saw.
    pub gates: Vec<GateCheck>,
    /// Every planned step with its outcome, in order.
    pub steps: Vec<StepReport>,
    /// The plan's warnings.
    pub warnings: Vec<String>,
    /// The pre-restore snapshot taken by this run.
    pub pre_restore_stamp: Option<Stamp>,
    /// What `restore <it>` undoes this restore to: this run's pre-restore
    /// snapshot, or, when this run completed an interrupted restore, the one
    /// that restore took first (the runtime before the incident).
    pub undo_stamp: Option<Stamp>,
    /// What `PRAGMA integrity_check` returned on the restored db.
    pub integrity_check: Option<String>,
    /// True only if every step that ran succeeded and integrity is `ok`.
    pub success: bool,
    /// How the failed step failed (an invalid backup, a refusal, an I/O
    /// error), for exit codes; the step's `detail` says it in words.
    #[serde(skip)]
    pub failure: Option<ErrorClass>,
}

impl RestoreReport {
    /// The first failed step, if any.
    pub fn failed_step(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.status == StepStatus::Failed)
    }
}

/// Loads the backup and plans its restore into `paths`, touching nothing:
/// this is `restore --dry-run` and the HTTP preview.
///
/// # Errors
/// [`Error::BackupNotFound`], manifest errors, I/O errors while observing,
/// and [`Error::Refused`] when the planner refuses.
pub fn preview_restore(paths: &RuntimePaths, stamp: &Stamp, options: &RestoreOptions) -> Result<RestorePlan> {
    let (manifest, backup_path) = load_backup(paths, stamp)?;
    prepare(
        paths,
        stamp,
        options,
        manifest,
        backup_path,
        gates::preview(paths),
    )
    .map(|(_, plan)| plan)
}

/// Loads, observes and plans: the manifest is read once and kept for execution.
fn prepare(
    paths: &RuntimePaths,
    stamp: &Stamp,
    options: &RestoreOptions,
    manifest: BackupManifest,
    backup_path: Utf8PathBuf,
    gates: Vec<crate::plan::GateCheck>,
) -> Result<(BackupManifest, RestorePlan)> {
    let facts = observe_restore(paths, &backup_path, gates)?;
    let plan = plan_restore(&manifest, options, &facts).map_err(|refusal| Error::Refused {
        stamp: stamp.to_string(),
        refusal,
    })?;
    Ok((manifest, plan))
}

fn load_backup(paths: &RuntimePaths, stamp: &Stamp) -> Result<(BackupManifest, Utf8PathBuf)> {
    let dir = snapshot_dir(paths, stamp);
    if !dir.is_dir() {
        return Err(crate::list::backup_not_found(&paths.snapshots_dir(), stamp));
    }
    // A snapshot whose manifest cannot be read is an invalid backup, as
    // `validate` says of it, whatever the reason.
    let manifest = BackupManifest::load(&dir).map_err(|error| match error.class() {
        ErrorClass::InvalidBackup => error,
        _ => Error::InvalidBackup {
            stamp: stamp.to_string(),
            first_error: error.chain(),
        },
    })?;
    Ok((manifest, dir))
}

/// Restores backup `stamp` into `paths`.
///
/// Nothing changes on disk unless every gate passes: the caller confirmed the
/// service is stopped, the backup lock and the service lock are free, and
/// `BEGIN EXCLUSIVE` on the live db succeeds at once. Both locks are held
/// until the report is returned.
///
/// # Errors
/// [`Error::NotConfirmed`], [`Error::Busy`], [`Error::ServiceRunning`],
/// [`Error::DbInUse`], [`Error::Refused`], [`Error::BackupNotFound`] and
/// manifest errors, all before anything changes. Failures of the steps
/// themselves are in the report, not errors.
pub fn restore_backup(
    paths: &RuntimePaths,
    stamp: &Stamp,
    options: &RestoreOptions,
    confirm_service_stopped: bool,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    if !confirm_service_stopped {
        return Err(Error::NotConfirmed {
            stamp: stamp.to_string(),
        });
    }
    let (manifest, backup_path) = load_backup(paths, stamp)?;
    let lock = BackupDirLock::acquire(paths, "restore", now())?;
    let gates = gates::enforce(paths)?;
    let (manifest, plan) = prepare(paths, stamp, options, manifest, backup_path, gates.checks)?;
    let service_lock = gates.service_lock;
    // An earlier restore's marker means the runtime may already be
    // half-restored: only a completed restore may remove it.
    let interrupted = RestoreMarker::read(paths)?;
    let live_changed = interrupted.is_some();
    // The state before the incident is what the first attempt saved, not
    // the half-restored runtime this attempt's snapshot holds.
    let undo_stamp_before = interrupted.and_then(|marker| marker.pre_restore_stamp);
    let report = std::thread::scope(|scope| {
        Executor {
            scope,
            paths,
            lock: &lock,
            progress,
            manifest: &manifest,
            pre_restore_stamp: None,
            integrity_check: None,
            integrity_in_progress: None,
            staged_db: None,
            staged_chroma: None,
            staged_bytes: 0,
            checked_db: None,
            live_changed,
            undo_stamp_before,
        }
        .run(plan)
    });
    drop(service_lock);
    Ok(report)
}

/// Runs a plan's steps inside a thread scope, so that a background check of
/// the restored db never outlives the restore.
struct Executor<'scope, 'env> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    paths: &'env RuntimePaths,
    lock: &'env BackupDirLock,
    progress: &'env dyn Progress,
    manifest: &'env BackupManifest,
    pre_restore_stamp: Option<Stamp>,
    integrity_check: Option<String>,
    /// The restored db's `integrity_check`, when validation's cannot stand
    /// for it: started as soon as the db is in place, so that it runs while
    /// registry and chroma are restored.
    integrity_in_progress: Option<std::thread::ScopedJoinHandle<'scope, Result<String>>>,
    /// The new db and chroma tree, copied beside the live ones while the
    /// backup is validated (see `validate_and_stage`); `replace_db` and
    /// `restore_chroma` then only rename them into place.
    staged_db: Option<Utf8PathBuf>,
    staged_chroma: Option<Utf8PathBuf>,
    /// Bytes staged, which `check_free_space` counts as already found.
    staged_bytes: u64,
    /// The staged db as validation left it: a copy of the db it checked, with
    /// the same checksum.
    checked_db: Option<FileIdentity>,
    /// The pre-restore snapshot of an interrupted restore this one completes.
    undo_stamp_before: Option<Stamp>,
    /// Whether any live file has been touched, by this restore or by an
    /// interrupted one; until then a failure can remove the marker, because
    /// the runtime is still exactly as it was.
    live_changed: bool,
}

/// What a step ended as, before timing is attached.
enum Outcome {
    Done(String),
    Skipped(String),
}

impl<'scope, 'env> Executor<'scope, 'env> {
    fn run(mut self, plan: RestorePlan) -> RestoreReport {
        let RestorePlan {
            format_version,
            stamp,
            backup_path,
            include_chroma,
            pre_restore_snapshot,
            targets,
            gates,
            steps,
            mut warnings,
        } = plan;
        let staging_targets = StagingTargets::of(&steps);
        let mut reports = Vec::with_capacity(steps.len());
        let mut failed = false;
        let mut failure = None;
        for step in steps {
            let started = Instant::now();
            let outcome = if failed {
                Ok(Outcome::Skipped("not run: an earlier step failed".to_owned()))
            } else if let Some(reason) = step.skip_reason() {
                Ok(Outcome::Skipped(reason.to_owned()))
            } else {
                self.execute(&step, &stamp, &staging_targets)
            };
            let (status, detail) = match outcome {
                Ok(Outcome::Done(detail)) => (StepStatus::Ok, detail),
                Ok(Outcome::Skipped(detail)) => (StepStatus::Skipped, detail),
                Err(error) => {
                    failed = true;
                    failure = Some(error.class());
                    (StepStatus::Failed, self.failure_detail(&error))
                }
            };
            reports.push(StepReport {
                step,
                status,
                detail,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
        // A check started for a restore that failed later: let it finish, so
        // no connection to the live db outlives the restore.
        if let Some(running) = self.integrity_in_progress.take() {
            let _ = running.join();
        }
        self.discard_unused_staging();
        if failed && !self.live_changed {
            // The snapshot's db is the live db's own file, hard-linked (see
            // `capture_held_db`): a service started on the unchanged runtime
            // would write into it. With nothing to undo, it goes.
            if let Some(pre) = self.pre_restore_stamp.take() {
                match remove_snapshot(self.lock, self.paths, &pre) {
                    Ok(()) => warnings.push(format!(
                        "the pre-restore snapshot `{pre}` was removed: nothing it would undo happened"
                    )),
                    Err(error) => {
                        warnings.push(format!(
                            "delete the pre-restore snapshot `{pre}` before starting the service: it shares the live db's file, and removing it failed: {}",
                            error.chain()
                        ));
                        self.pre_restore_stamp = Some(pre);
                    }
                }
            }
            // Nothing live was touched: leave no marker that would keep the
            // service from starting on a runtime that is fine as it is.
            if RestoreMarker::remove(self.paths).is_ok() {
                warnings
                    .push("the restore stopped before changing the live runtime; it is unchanged".to_owned());
            }
        }
        // The pre-restore snapshot's hard links to files that are no longer
        // live become read-only like every other snapshot file.
        if let Some(pre) = &self.pre_restore_stamp {
            let sealed = live_inodes(self.paths, LiveAccess::HeldByRestore)
                .and_then(|live| seal_snapshot(&snapshot_dir(self.paths, pre), &live));
            if let Err(error) = sealed {
                warnings.push(format!(
                    "the pre-restore snapshot `{pre}` could not be made read-only: {}",
                    error.chain()
                ));
            }
        }
        let integrity_ok = self.integrity_check.as_deref() == Some("ok");
        RestoreReport {
            format_version,
            stamp,
            backup_path,
            include_chroma,
            pre_restore_snapshot,
            targets,
            gates,
            success: !failed && integrity_ok,
            steps: reports,
            warnings,
            undo_stamp: self.undo_stamp_before.or_else(|| self.pre_restore_stamp.clone()),
            pre_restore_stamp: self.pre_restore_stamp,
            integrity_check: self.integrity_check,
            failure,
        }
    }

    fn failure_detail(&self, error: &Error) -> String {
        match (&self.pre_restore_stamp, self.live_changed) {
            (Some(pre), true) => format!(
                "{}; the runtime is half-restored: restore `{pre}` to get back to where it was",
                error.chain()
            ),
            _ => error.chain(),
        }
    }

    /// Removes staged copies that were never swapped in (a step failed).
    fn discard_unused_staging(&mut self) {
        if let Some(temp) = self.staged_db.take() {
            let _ = remove_if_exists(&temp);
        }
        if let Some(dir) = self.staged_chroma.take()
            && dir.symlink_metadata().is_ok()
        {
            let _ = fs_err::remove_dir_all(dir);
        }
    }

    /// Validates the backup and copies the new db and chroma tree beside the
    /// live ones as it goes. Nothing live changes: on any failure the copies
    /// go and the runtime is as it was.
    fn validate_while_staging(&mut self, stamp: &Stamp, targets: &StagingTargets) -> Result<String> {
        let db_temp = match &targets.db {
            Some(to) => {
                create_dir_durably(parent_or_dot(to))?;
                refuse_symlink(to)?;
                let temp = temp_path_for(to, RESTORE_TMP);
                remove_if_exists(&temp)?;
                Some(temp)
            }
            None => None,
        };
        let chroma_root = match &targets.chroma {
            Some(to) => {
                refuse_symlink(to)?;
                Some(chroma_staging_beside(to))
            }
            None => None,
        };
        // Recorded first, so that whatever part is written is removed on failure.
        self.staged_db = db_temp.clone();
        self.staged_chroma = chroma_root.clone();
        let db_flush = match &db_temp {
            Some(temp) => Some(FilesystemFlush::begin(parent_or_dot(temp))?),
            None => None,
        };
        let stage = StageTo {
            db: db_temp.as_deref().zip(db_flush.as_ref()),
            chroma: chroma_root.as_deref(),
        };
        let report = validate_and_stage(&self.paths.backup_dir, stamp, &stage, self.progress)?;
        if !report.valid {
            return Err(Error::InvalidBackup {
                stamp: stamp.to_string(),
                first_error: report.first_error().to_owned(),
            });
        }
        if let Some(flush) = db_flush {
            flush.finish()?;
        }
        if let Some(temp) = &db_temp {
            self.checked_db = Some(FileIdentity::of(temp)?);
        }
        let manifest = self.manifest;
        self.staged_bytes = db_temp.map_or(0, |_| manifest.db.size_bytes)
            + chroma_root.map_or(0, |_| manifest.chroma.as_ref().map_or(0, |c| c.total_bytes));
        Ok(format!(
            "{} checks passed; the new files are staged beside the live ones",
            report.checks.len()
        ))
    }

    fn execute(&mut self, step: &RestoreStep, stamp: &Stamp, staging: &StagingTargets) -> Result<Outcome> {
        let manifest = self.manifest;
        match step {
            RestoreStep::ValidateBackup => self.validate_while_staging(stamp, staging).map(Outcome::Done),
            RestoreStep::CheckFreeSpace { required_bytes, .. } => {
                let available_bytes = available_bytes(self.paths)?;
                // What is staged was part of what the plan required.
                if available_bytes.saturating_add(self.staged_bytes) < *required_bytes {
                    return Err(Error::Refused {
                        stamp: stamp.to_string(),
                        refusal: crate::RestoreRefusal::InsufficientSpace {
                            required_bytes: *required_bytes,
                            available_bytes,
                        },
                    });
                }
                Ok(Outcome::Done(format!(
                    "{required_bytes} bytes needed ({} already staged), {available_bytes} bytes available",
                    self.staged_bytes
                )))
            }
            RestoreStep::WriteRestoreMarker { path } => {
                RestoreMarker {
                    stamp: stamp.clone(),
                    started_at: now(),
                    pid: std::process::id(),
                    pre_restore_stamp: None,
                }
                .write(self.paths)?;
                crash_point("restore.after_marker");
                Ok(Outcome::Done(format!("wrote `{path}`")))
            }
            RestoreStep::PreRestoreSnapshot { include_chroma, .. } => {
                let options = CreateOptions {
                    include_chroma: *include_chroma,
                    kind: BackupKind::PreRestore,
                    restored_from: Some(stamp.clone()),
                };
                let snapshot = create_backup_locked(
                    self.lock,
                    self.paths,
                    &options,
                    LiveAccess::HeldByRestore,
                    self.progress,
                )?;
                self.pre_restore_stamp = Some(snapshot.stamp.clone());
                let mut marker = RestoreMarker::read(self.paths)?.unwrap_or(RestoreMarker {
                    stamp: stamp.clone(),
                    started_at: now(),
                    pid: std::process::id(),
                    pre_restore_stamp: None,
                });
                // An interrupted restore's snapshot holds the runtime from
                // before the incident: the marker keeps naming it.
                if marker.pre_restore_stamp.is_none() {
                    marker.pre_restore_stamp = Some(snapshot.stamp.clone());
                }
                marker.write(self.paths)?;
                Ok(Outcome::Done(format!(
                    "snapshot `{}` holds the runtime as it was; restore it to undo this restore",
                    snapshot.stamp
                )))
            }
            RestoreStep::VerifyDbUnused { .. } => ensure_db_unused(&self.paths.db_path).map(Outcome::Done),
            RestoreStep::CheckpointWal { db_path, .. } => {
                // A checkpoint moves committed frames into the db file: the
                // data is unchanged, so a failure here still leaves the
                // runtime as it was.
                let mut checkpoint = checkpoint_truncate(db_path)?;
                if injected("checkpoint-busy") {
                    checkpoint.busy = 1;
                }
                let checkpoint = checkpoint.require_complete(db_path)?;
                Ok(Outcome::Done(format!(
                    "busy 0, {} of {} frames checkpointed",
                    checkpoint.checkpointed_frames, checkpoint.log_frames
                )))
            }
            RestoreStep::RemoveSidecars { paths } => {
                self.live_changed = true;
                let mut removed = Vec::new();
                for path in paths {
                    if remove_if_exists(path)? {
                        removed.push(path.as_str());
                    }
                }
                fsync_dir(self.paths.db_dir())?;
                if let Some(survivor) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
                    return Err(Error::Io(std::io::Error::other(format!(
                        "sidecar `{survivor}` still exists after removal"
                    ))));
                }
                Ok(Outcome::Done(if removed.is_empty() {
                    "no sidecars present".to_owned()
                } else {
                    format!("removed {}", removed.join(", "))
                }))
            }
            RestoreStep::ReplaceDb { from, to, owner } => {
                self.live_changed = true;
                // The last look before the swap: the marker and the service
                // lock keep a cooperating service out, this anyone else.
                ensure_db_unused(to)?;
                match self.staged_db.take() {
                    Some(temp) => swap_in(&temp, to, owner.as_ref(), "restore.before_db_rename")?,
                    None => replace_file(
                        from,
                        to,
                        &manifest.db.checksum,
                        owner.as_ref(),
                        "restore.before_db_rename",
                        self.progress,
                    )?,
                }
                crash_point("restore.after_db_swap");
                if injected("corrupt-restored-db") {
                    corrupt_for_tests(to)?;
                }
                // Unless the file now in place is the very one checked when it
                // was staged, check it again while registry and chroma go in.
                if self.checked_db.as_ref() != FileIdentity::of(to).ok().as_ref() {
                    self.checked_db = None;
                    let db_path = to.clone();
                    self.integrity_in_progress =
                        Some(self.scope.spawn(move || integrity_check_live(&db_path)));
                }
                Ok(Outcome::Done(format!(
                    "`{to}` replaced ({} bytes)",
                    manifest.db.size_bytes
                )))
            }
            RestoreStep::RestoreRegistry { from, to, owner, .. } => {
                let (Some(from), Some(record)) = (from, &manifest.registry) else {
                    return Ok(Outcome::Skipped("the backup has no registry".to_owned()));
                };
                replace_file(
                    from,
                    to,
                    &record.checksum,
                    owner.as_ref(),
                    "restore.before_registry_rename",
                    self.progress,
                )?;
                crash_point("restore.after_registry");
                Ok(Outcome::Done(format!(
                    "`{to}` replaced ({} bytes)",
                    record.size_bytes
                )))
            }
            RestoreStep::RestoreChroma {
                from,
                to,
                swap,
                owner,
                chown,
                ..
            } => {
                let (Some(from), Some(record)) = (from, &manifest.chroma) else {
                    return Ok(Outcome::Skipped("the backup has no chroma".to_owned()));
                };
                let staged = self.staged_chroma.take();
                let method = restore_chroma(
                    from,
                    to,
                    record,
                    *swap,
                    OwnersOfTree {
                        root: *owner,
                        chown: *chown,
                    },
                    staged,
                    self.progress,
                )?;
                crash_point("restore.after_chroma");
                Ok(Outcome::Done(format!(
                    "{} files restored by {method}",
                    record.file_count
                )))
            }
            RestoreStep::IntegrityCheck { db_path } => {
                let unchanged_since_staged = self.integrity_in_progress.is_none()
                    && self.checked_db.is_some()
                    && FileIdentity::of(db_path).ok() == self.checked_db;
                let checked = match self.integrity_in_progress.take() {
                    Some(running) => running.join().unwrap_or_else(|_| {
                        Err(Error::Io(std::io::Error::other(format!(
                            "the integrity check of `{db_path}` panicked"
                        ))))
                    }),
                    // Validation checked these bytes, and staged this file from them.
                    None if unchanged_since_staged => Ok("ok".to_owned()),
                    None => integrity_check_live(db_path),
                };
                // A db too damaged to check at all is reported the same way:
                // SQLite's answer is the result.
                let text = checked.unwrap_or_else(|error| error.chain());
                self.integrity_check = Some(text.clone());
                if text != "ok" {
                    return Err(Error::Io(std::io::Error::other(format!(
                        "integrity_check on `{db_path}` returned: {text}"
                    ))));
                }
                Ok(Outcome::Done(if unchanged_since_staged {
                    "ok, when validation checked the backup's db: this file is its verified copy, unmodified since"
                        .to_owned()
                } else {
                    text
                }))
            }
            RestoreStep::RemoveRestoreMarker { path } => {
                RestoreMarker::remove(self.paths)?;
                Ok(Outcome::Done(format!("removed `{path}`")))
            }
        }
    }
}

/// Copies `from` to a temp file beside `to`, verifies it against `expected`,
/// fsyncs it and renames it over `to`: a crash leaves the old file or the new.
fn replace_file(
    from: &Utf8Path,
    to: &Utf8Path,
    expected: &crate::Checksum,
    owner: Option<&Ownership>,
    crash_before_rename: &str,
    progress: &dyn Progress,
) -> Result<()> {
    let temp = stage_file(from, to, expected, progress)?;
    swap_in(&temp, to, owner, crash_before_rename)
}

/// Copies `from` to the temp file beside `to`, verifies it against
/// `expected` and fsyncs it. Nothing live changes; on failure the temp goes.
fn stage_file(
    from: &Utf8Path,
    to: &Utf8Path,
    expected: &crate::Checksum,
    progress: &dyn Progress,
) -> Result<Utf8PathBuf> {
    create_dir_durably(parent_or_dot(to))?;
    refuse_symlink(to)?;
    let temp = temp_path_for(to, RESTORE_TMP);
    remove_if_exists(&temp)?;
    let copied = copy_hashed(from, &temp, expected.algorithm(), progress).and_then(|(_, actual)| {
        if actual == *expected {
            Ok(())
        } else {
            Err(Error::ChecksumMismatch {
                path: from.to_owned(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            })
        }
    });
    match copied {
        Ok(()) => Ok(temp),
        Err(error) => {
            let _ = remove_if_exists(&temp);
            Err(error)
        }
    }
}

/// Renames a staged, verified, fsynced temp file over `to`, durably: a crash
/// leaves the old file or the new one.
fn swap_in(
    temp: &Utf8Path,
    to: &Utf8Path,
    owner: Option<&Ownership>,
    crash_before_rename: &str,
) -> Result<()> {
    // The new file carries its owner and mode into place with the rename: a
    // service never meets it with root's.
    let owned = owner.map_or(Ok(()), |owner| {
        apply_ownership(temp, owner).and_then(|()| Ok(fs_err::File::open(temp)?.sync_all()?))
    });
    if let Err(error) = owned {
        let _ = remove_if_exists(temp);
        return Err(error);
    }
    crash_point(crash_before_rename);
    let swapped = rename_durably(temp, to);
    if swapped.is_err() {
        let _ = remove_if_exists(temp);
    }
    swapped
}

pub(crate) fn refuse_symlink(path: &Utf8Path) -> Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.file_type().is_symlink() => Err(Error::SymlinkRefused {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Test-only damage after the swap, so the integrity-failure path is
/// exercised on a really damaged file: scribbles over the second page.
fn corrupt_for_tests(db: &Utf8Path) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = fs_err::OpenOptions::new().write(true).open(db)?;
    file.seek(SeekFrom::Start(4096))?;
    file.write_all(&[0x5a; 512])?;
    file.sync_all()?;
    Ok(())
}

/// What tells a file's bytes unchanged without reading them, in a runtime
/// only this restore writes to: the same inode, size and mtime. (A rename
/// changes the ctime, not these.)
#[derive(Debug, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileIdentity {
    fn of(path: &Utf8Path) -> Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs_err::metadata(path)?;
        Ok(FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }
}

/// The live paths whose new versions are staged during validation, taken
/// from the plan.
struct StagingTargets {
    db: Option<Utf8PathBuf>,
    /// Only for a chroma directory that is renamed whole: a mount point gets
    /// its tree staged inside it, which is a change to the live directory.
    chroma: Option<Utf8PathBuf>,
}

impl StagingTargets {
    fn of(steps: &[RestoreStep]) -> StagingTargets {
        let mut targets = StagingTargets {
            db: None,
            chroma: None,
        };
        for step in steps {
            match step {
                RestoreStep::ReplaceDb { to, .. } => targets.db = Some(to.clone()),
                RestoreStep::RestoreChroma {
                    from: Some(_),
                    to,
                    swap: ChromaSwap::RenameDir,
                    skip_reason: None,
                    ..
                } => targets.chroma = Some(to.clone()),
                _ => {}
            }
        }
        targets
    }
}
