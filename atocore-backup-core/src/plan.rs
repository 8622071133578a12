//! Restore planning: facts in, plan out, no I/O.
//!
//! A restore runs these steps, in this order (see [`RestoreStep`]):
//!
//! 1. `validate_backup`: every checksum, size and `integrity_check`.
//! 2. `check_free_space`: the plan states required and available bytes.
//! 3. `write_restore_marker`: from here on a crash is visible to `list`,
//!    the next `restore` and [`ServiceLock::acquire`](crate::ServiceLock::acquire).
//! 4. `pre_restore_snapshot`: a normal backup of the live runtime, so the
//!    restore can itself be undone.
//! 5. `verify_db_unused`: the `db_not_open` gate again, under the locks and
//!    the marker, right before the first change to the live db.
//! 6. `checkpoint_wal`: `wal_checkpoint(TRUNCATE)` must report `busy = 0`.
//! 7. `remove_sidecars`: stale `-wal`/`-shm` must never meet the new db.
//! 8. `replace_db`: temp file, checksum, fsync, rename, fsync the directory
//!    (the open-file scan runs once more just before the rename).
//! 9. `restore_registry`: the same, or explicitly skipped.
//! 10. `restore_chroma`: a new tree swapped in whole, or explicitly skipped.
//! 11. `integrity_check` on the restored db.
//! 12. `remove_restore_marker`.
//!
//! Before step 1 the gates run (see [`Gate`]); the plan carries what each
//! found, so a dry run shows a refusal a real run would meet.
//!
//! [`plan_restore`] is pure: [`RestoreFacts`] carries everything observed, so
//! plans can be previewed, snapshot-tested and executed unchanged.

use camino::Utf8PathBuf;
use serde::{Deserialize, Serialize};

use crate::manifest::{BackupManifest, Ownership};
use crate::marker::RestoreMarker;

/// Version of the plan's JSON shape.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreOptions {
    /// Restore chroma; `None` means "if the backup has it".
    pub include_chroma: Option<bool>,
    /// Take a pre-restore snapshot first (on unless explicitly declined).
    pub pre_restore_snapshot: bool,
    /// Owner and group for every file and directory written, instead of
    /// those of what each replaces (`--chown UID:GID`).
    pub chown: Option<Chown>,
}

/// An explicit owner and group, parsed from `UID:GID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chown {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl std::str::FromStr for Chown {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = text
            .split_once(':')
            .and_then(|(uid, gid)| Some((uid.parse().ok()?, gid.parse().ok()?)));
        match parsed {
            Some((uid, gid)) => Ok(Chown { uid, gid }),
            None => Err(format!("`{text}` is not numeric `UID:GID` such as `1000:1000`")),
        }
    }
}

/// Owner, group and mode of the live targets and of the directories that
/// hold them, as observed (`None` where nothing exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetOwners {
    /// The live db.
    pub db: Option<Ownership>,
    /// The directory holding it.
    pub db_dir: Option<Ownership>,
    /// The live registry.
    pub registry: Option<Ownership>,
    /// The directory holding it.
    pub registry_dir: Option<Ownership>,
    /// The live chroma directory.
    pub chroma: Option<Ownership>,
    /// The directory holding it.
    pub chroma_parent: Option<Ownership>,
}

/// What a file or directory the restore writes will be owned by: the owner,
/// group and mode of what it replaces; where nothing is replaced, the
/// owner and group of its directory with the mode recorded at capture (or,
/// unrecorded, the directory's mode without execute bits for a file); an
/// explicit `chown` overrides owner and group. `None` when even the
/// directory does not exist yet.
pub fn resolve_owner(
    replaced: Option<Ownership>,
    parent: Option<Ownership>,
    recorded: Option<Ownership>,
    chown: Option<Chown>,
    is_dir: bool,
) -> Option<Ownership> {
    let base = replaced.or_else(|| {
        parent.map(|parent| Ownership {
            uid: parent.uid,
            gid: parent.gid,
            mode: match (recorded, is_dir) {
                (Some(recorded), _) => recorded.mode,
                (None, true) => parent.mode,
                (None, false) => parent.mode & 0o666,
            },
        })
    })?;
    Some(match chown {
        Some(chown) => Ownership {
            uid: chown.uid,
            gid: chown.gid,
            ..base
        },
        None => base,
    })
}

/// The live paths a restore writes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTargets {
    /// The live database.
    pub db_path: Utf8PathBuf,
    /// The live Chroma directory.
    pub chroma_dir: Utf8PathBuf,
    /// The live registry.
    pub registry_path: Utf8PathBuf,
}

/// Everything the planner needs to know about the world, observed beforehand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFacts {
    /// The snapshot directory of the backup.
    pub backup_path: Utf8PathBuf,
    /// Where to restore to.
    pub targets: RestoreTargets,
    /// `<db dir>/.atocore-restore-in-progress`.
    pub marker_path: Utf8PathBuf,
    /// A marker left by an earlier, unfinished restore.
    pub interrupted_restore: Option<RestoreMarker>,
    /// Whether a live db exists to snapshot and checkpoint.
    pub live_db_exists: bool,
    /// Bytes of the live db, registry and (when it exists) chroma tree: what a
    /// pre-restore snapshot would write.
    pub live_db_bytes: u64,
    /// Bytes of the live registry, 0 when absent.
    pub live_registry_bytes: u64,
    /// Bytes of the live chroma tree, 0 when absent.
    pub live_chroma_bytes: u64,
    /// Whether a live chroma directory exists.
    pub live_chroma_exists: bool,
    /// `-wal`/`-shm` files found beside the live db, with their sizes.
    pub sidecars_present: Vec<Sidecar>,
    /// Free bytes on the smallest of the filesystems the restore writes to.
    pub available_bytes: u64,
    /// Whether the chroma directory is a mount point (its device differs from
    /// its parent's), so it cannot be renamed.
    pub chroma_is_mount_point: bool,
    /// Debris of an interrupted restore, one sentence each.
    pub leftovers: Vec<String>,
    /// Targets (db, registry, chroma dir) that are symlinks: writing through
    /// them would change files outside the configured paths.
    pub symlinked_targets: Vec<Utf8PathBuf>,
    /// The safety gates as found: enforced by a restore, previewed by a dry run.
    pub gates: Vec<GateCheck>,
    /// Who owns the live targets and their directories.
    pub owners: TargetOwners,
}

/// A safety gate a restore must pass before it changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// No other process holds `<db dir>/.atocore-service.lock` (by `flock`
    /// or by a POSIX `fcntl` lock).
    ServiceLock,
    /// No other process has the db, its `-wal` or its `-shm` open.
    DbNotOpen,
    /// `BEGIN EXCLUSIVE` on the live db succeeds at once.
    ExclusiveAccess,
}

impl Gate {
    /// The gate's contract name, e.g. `db_not_open`.
    pub fn name(self) -> &'static str {
        match self {
            Gate::ServiceLock => "service_lock",
            Gate::DbNotOpen => "db_not_open",
            Gate::ExclusiveAccess => "exclusive_access",
        }
    }
}

/// What a gate found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    /// A restore would pass it.
    Passed,
    /// A restore would be refused here (exit 4).
    Refused,
    /// It could not be evaluated without changing something; the detail says why.
    NotEvaluated,
}

/// One gate and its finding, as observed when the plan was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCheck {
    /// Which gate.
    pub gate: Gate,
    /// What it found.
    pub status: GateStatus,
    /// What it saw, in one sentence.
    pub detail: String,
}

/// A `-wal` or `-shm` file found beside the live db.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Its path.
    pub path: Utf8PathBuf,
    /// Its size; a `-wal` longer than 0 holds frames not yet in the db file.
    pub size_bytes: u64,
}

/// Why a restore cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum RestoreRefusal {
    /// Chroma was asked for but the backup has none.
    #[error("chroma was requested but backup `{stamp}` does not include chroma")]
    ChromaNotInBackup {
        /// The backup.
        stamp: String,
    },
    /// A target is a symlink.
    #[error(
        "target `{path}` is a symlink; restore writes only to real paths, so point the configuration at the real location"
    )]
    TargetIsSymlink {
        /// The symlink.
        path: Utf8PathBuf,
    },
    /// The restore would not fit.
    #[error("it needs {required_bytes} bytes of free space but only {available_bytes} are available")]
    InsufficientSpace {
        /// Bytes the plan would write.
        required_bytes: u64,
        /// Bytes free.
        available_bytes: u64,
    },
}

/// How the chroma tree is swapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChromaSwap {
    /// Build the new tree beside the old and exchange them by rename.
    RenameDir,
    /// The directory is a mount point: stage inside it and swap its entries.
    SwapEntries,
}

/// One step of a restore. Serialized with its name in `"step"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum RestoreStep {
    /// Fully validate the backup; an invalid one stops the restore here.
    ValidateBackup,
    /// Refuse if the restore would not fit.
    CheckFreeSpace {
        /// Bytes the plan will write.
        required_bytes: u64,
        /// Bytes free when planned.
        available_bytes: u64,
    },
    /// Mark the runtime as being restored.
    WriteRestoreMarker {
        /// The marker file.
        path: Utf8PathBuf,
    },
    /// Back up the live runtime as kind `pre-restore`.
    PreRestoreSnapshot {
        /// Whether the snapshot includes chroma.
        include_chroma: bool,
        /// Why it is skipped, when it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skip_reason: Option<String>,
    },
    /// The `db_not_open` gate again, right before the first change to the
    /// live db: nobody may have opened it since the gates passed.
    VerifyDbUnused {
        /// The db and its sidecars.
        paths: Vec<Utf8PathBuf>,
    },
    /// `PRAGMA wal_checkpoint(TRUNCATE)` on the live db; requires `busy = 0`.
    CheckpointWal {
        /// The live db.
        db_path: Utf8PathBuf,
        /// Why it is skipped, when it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skip_reason: Option<String>,
    },
    /// Delete the live db's `-wal` and `-shm` wherever they exist.
    RemoveSidecars {
        /// The sidecar paths that must not survive.
        paths: Vec<Utf8PathBuf>,
    },
    /// Copy the db beside the target, verify, fsync, rename over it.
    ReplaceDb {
        /// The db in the backup.
        from: Utf8PathBuf,
        /// The live db.
        to: Utf8PathBuf,
        /// Owner, group and mode the new db gets before it is renamed into
        /// place (see [`resolve_owner`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<Ownership>,
    },
    /// Replace the registry the same way.
    RestoreRegistry {
        /// The registry in the backup, if it has one.
        from: Option<Utf8PathBuf>,
        /// The live registry.
        to: Utf8PathBuf,
        /// Owner, group and mode the new registry gets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<Ownership>,
        /// Why it is skipped, when it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skip_reason: Option<String>,
    },
    /// Replace the chroma tree whole.
    RestoreChroma {
        /// The chroma tree in the backup, if restored.
        from: Option<Utf8PathBuf>,
        /// The live chroma directory.
        to: Utf8PathBuf,
        /// How the new tree replaces the old.
        swap: ChromaSwap,
        /// Owner, group and mode of the chroma directory itself; each file
        /// and directory inside keeps those of the one it replaces, or gets
        /// its recorded mode and its directory's owner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<Ownership>,
        /// The explicit owner every file inside gets, when one was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chown: Option<Chown>,
        /// Why it is skipped, when it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skip_reason: Option<String>,
    },
    /// `PRAGMA integrity_check` on the restored db.
    IntegrityCheck {
        /// The live db.
        db_path: Utf8PathBuf,
    },
    /// The restore is complete.
    RemoveRestoreMarker {
        /// The marker file.
        path: Utf8PathBuf,
    },
}

impl RestoreStep {
    /// The step's contract name, e.g. `replace_db`.
    pub fn name(&self) -> &'static str {
        match self {
            RestoreStep::ValidateBackup => "validate_backup",
            RestoreStep::CheckFreeSpace { .. } => "check_free_space",
            RestoreStep::WriteRestoreMarker { .. } => "write_restore_marker",
            RestoreStep::PreRestoreSnapshot { .. } => "pre_restore_snapshot",
            RestoreStep::VerifyDbUnused { .. } => "verify_db_unused",
            RestoreStep::CheckpointWal { .. } => "checkpoint_wal",
            RestoreStep::RemoveSidecars { .. } => "remove_sidecars",
            RestoreStep::ReplaceDb { .. } => "replace_db",
            RestoreStep::RestoreRegistry { .. } => "restore_registry",
            RestoreStep::RestoreChroma { .. } => "restore_chroma",
            RestoreStep::IntegrityCheck { .. } => "integrity_check",
            RestoreStep::RemoveRestoreMarker { .. } => "remove_restore_marker",
        }
    }

    /// Why the plan skips this step, if it does.
    pub fn skip_reason(&self) -> Option<&str> {
        match self {
            RestoreStep::PreRestoreSnapshot { skip_reason, .. }
            | RestoreStep::CheckpointWal { skip_reason, .. }
            | RestoreStep::RestoreRegistry { skip_reason, .. }
            | RestoreStep::RestoreChroma { skip_reason, .. } => skip_reason.as_deref(),
            RestoreStep::ValidateBackup
            | RestoreStep::CheckFreeSpace { .. }
            | RestoreStep::WriteRestoreMarker { .. }
            | RestoreStep::VerifyDbUnused { .. }
            | RestoreStep::RemoveSidecars { .. }
            | RestoreStep::ReplaceDb { .. }
            | RestoreStep::IntegrityCheck { .. }
            | RestoreStep::RemoveRestoreMarker { .. } => None,
        }
    }
}

/// What a restore would do, computed without touching anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    /// Version of this JSON shape.
    pub format_version: u32,
    /// The backup to restore.
    pub stamp: crate::Stamp,
    /// Its snapshot directory.
    pub backup_path: Utf8PathBuf,
    /// Whether chroma is restored.
    pub include_chroma: bool,
    /// Whether a pre-restore snapshot is taken.
    pub pre_restore_snapshot: bool,
    /// Where the restore writes.
    pub targets: RestoreTargets,
    /// The safety gates and what each found when the plan was made; a
    /// preview exits 4 when one would refuse.
    #[serde(default)]
    pub gates: Vec<GateCheck>,
    /// The steps, in order.
    pub steps: Vec<RestoreStep>,
    /// What the operator should know before running it.
    pub warnings: Vec<String>,
}

impl RestorePlan {
    /// The first gate that would refuse this restore, if any.
    pub fn refusing_gate(&self) -> Option<&GateCheck> {
        self.gates.iter().find(|gate| gate.status == GateStatus::Refused)
    }
}

/// Plans restoring `manifest` with `options` into the world `facts` describes.
///
/// # Errors
/// [`RestoreRefusal`] when chroma is asked for but not in the backup, or the
/// restore would not fit in the free space.
pub fn plan_restore(
    manifest: &BackupManifest,
    options: &RestoreOptions,
    facts: &RestoreFacts,
) -> Result<RestorePlan, RestoreRefusal> {
    let has_chroma = manifest.chroma.is_some();
    let include_chroma = options.include_chroma.unwrap_or(has_chroma);
    if include_chroma && !has_chroma {
        return Err(RestoreRefusal::ChromaNotInBackup {
            stamp: manifest.stamp.to_string(),
        });
    }
    if let Some(path) = facts.symlinked_targets.first() {
        return Err(RestoreRefusal::TargetIsSymlink { path: path.clone() });
    }
    let targets = facts.targets.clone();
    let backup = &facts.backup_path;
    let take_snapshot = options.pre_restore_snapshot && facts.live_db_exists;

    let restored_bytes = manifest.db.size_bytes
        + manifest.registry.as_ref().map_or(0, |r| r.size_bytes)
        + if include_chroma {
            manifest.chroma.as_ref().map_or(0, |c| c.total_bytes)
        } else {
            0
        };
    let snapshot_bytes = if take_snapshot {
        facts.live_db_bytes
            + facts.live_registry_bytes
            + if include_chroma {
                facts.live_chroma_bytes
            } else {
                0
            }
    } else {
        0
    };
    let required_bytes = restored_bytes + snapshot_bytes;
    if required_bytes > facts.available_bytes {
        return Err(RestoreRefusal::InsufficientSpace {
            required_bytes,
            available_bytes: facts.available_bytes,
        });
    }

    let mut warnings = Vec::new();
    if let Some(marker) = &facts.interrupted_restore {
        warnings.push(format!(
            "an earlier restore of `{}` started at {} did not finish{}; this restore replaces everything it may have half-done",
            marker.stamp,
            marker.started_at,
            marker
                .pre_restore_stamp
                .as_ref()
                .map(|s| format!(" (its pre-restore snapshot is `{s}`)"))
                .unwrap_or_default(),
        ));
    }
    warnings.extend(facts.leftovers.iter().cloned());
    for sidecar in &facts.sidecars_present {
        if sidecar.path.as_str().ends_with("-wal") && sidecar.size_bytes > 0 {
            warnings.push(format!(
                "`{}` holds {} bytes of WAL not yet in the db file: they are checkpointed into the live db (and so into the pre-restore snapshot) before the sidecars are removed",
                sidecar.path, sidecar.size_bytes
            ));
        }
    }

    let pre_restore_skip = if !options.pre_restore_snapshot {
        Some("declined (no pre-restore snapshot): this restore cannot be undone".to_owned())
    } else if !facts.live_db_exists {
        Some("there is no live database to snapshot".to_owned())
    } else {
        None
    };
    let db_path = targets.db_path.clone();
    let owners = &facts.owners;
    let steps = vec![
        RestoreStep::ValidateBackup,
        RestoreStep::CheckFreeSpace {
            required_bytes,
            available_bytes: facts.available_bytes,
        },
        RestoreStep::WriteRestoreMarker {
            path: facts.marker_path.clone(),
        },
        RestoreStep::PreRestoreSnapshot {
            include_chroma: include_chroma && facts.live_chroma_exists,
            skip_reason: pre_restore_skip,
        },
        RestoreStep::VerifyDbUnused {
            paths: vec![
                db_path.clone(),
                sidecar(&db_path, "-wal"),
                sidecar(&db_path, "-shm"),
            ],
        },
        RestoreStep::CheckpointWal {
            db_path: db_path.clone(),
            skip_reason: (!facts.live_db_exists).then(|| "there is no live database".to_owned()),
        },
        RestoreStep::RemoveSidecars {
            paths: vec![sidecar(&db_path, "-wal"), sidecar(&db_path, "-shm")],
        },
        RestoreStep::ReplaceDb {
            from: backup.join(&manifest.db.path),
            to: db_path.clone(),
            owner: resolve_owner(owners.db, owners.db_dir, manifest.db.owner, options.chown, false),
        },
        RestoreStep::RestoreRegistry {
            from: manifest.registry.as_ref().map(|r| backup.join(&r.path)),
            to: targets.registry_path.clone(),
            owner: manifest.registry.as_ref().and_then(|record| {
                resolve_owner(
                    owners.registry,
                    owners.registry_dir,
                    record.owner,
                    options.chown,
                    false,
                )
            }),
            skip_reason: manifest
                .registry
                .is_none()
                .then(|| "the backup has no registry; the live registry is left as it is".to_owned()),
        },
        RestoreStep::RestoreChroma {
            from: manifest
                .chroma
                .as_ref()
                .filter(|_| include_chroma)
                .map(|c| backup.join(&c.path)),
            to: targets.chroma_dir.clone(),
            swap: if facts.chroma_is_mount_point {
                ChromaSwap::SwapEntries
            } else {
                ChromaSwap::RenameDir
            },
            owner: include_chroma
                .then(|| resolve_owner(owners.chroma, owners.chroma_parent, None, options.chown, true))
                .flatten(),
            chown: options.chown.filter(|_| include_chroma),
            skip_reason: match (include_chroma, has_chroma) {
                (true, _) => None,
                (false, true) => Some("chroma declined; the live chroma is left as it is".to_owned()),
                (false, false) => {
                    Some("the backup has no chroma; the live chroma is left as it is".to_owned())
                }
            },
        },
        RestoreStep::IntegrityCheck { db_path },
        RestoreStep::RemoveRestoreMarker {
            path: facts.marker_path.clone(),
        },
    ];
    Ok(RestorePlan {
        format_version: PLAN_FORMAT_VERSION,
        stamp: manifest.stamp.clone(),
        backup_path: backup.clone(),
        include_chroma,
        pre_restore_snapshot: take_snapshot,
        targets,
        gates: facts.gates.clone(),
        steps,
        warnings,
    })
}

/// `<db>-wal`, `<db>-shm`.
pub(crate) fn sidecar(db_path: &camino::Utf8Path, suffix: &str) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{db_path}{suffix}"))
}
