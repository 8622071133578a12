//! `list`: every snapshot, newest first, read from its manifest.

use camino::Utf8Path;
use fs_err as fs;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::create::{DELETING_PREFIX, PARTIAL_PREFIX};
use crate::error::{Error, Result};
use crate::manifest::{BackupKind, BackupManifest};
use crate::marker::RestoreMarker;
use crate::paths::RuntimePaths;
use crate::stamp::Stamp;

/// What `list` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupListing {
    /// Every snapshot directory, newest first; broken ones last.
    pub backups: Vec<BackupSummary>,
    /// Things an operator must know: an unfinished restore, leftovers of a crash.
    pub warnings: Vec<String>,
}

/// One line of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The directory name (a valid stamp unless `broken` says otherwise).
    pub stamp: String,
    /// From the manifest; `null` when broken.
    pub kind: Option<BackupKind>,
    /// From the manifest; `null` when broken.
    pub created_at: Option<Timestamp>,
    /// For a pre-restore snapshot: the stamp that was restored over it.
    pub restored_from: Option<Stamp>,
    /// Bytes of every recorded file.
    pub total_bytes: u64,
    /// Bytes of the database copy.
    pub db_bytes: u64,
    /// Whether the registry was captured.
    pub has_registry: bool,
    /// Whether chroma was captured.
    pub has_chroma: bool,
    /// Why this directory is not a usable backup, or `null` if its manifest reads.
    pub broken: Option<String>,
}

impl BackupSummary {
    fn from_manifest(manifest: &BackupManifest) -> Self {
        BackupSummary {
            stamp: manifest.stamp.to_string(),
            kind: Some(manifest.kind),
            created_at: Some(manifest.created_at),
            restored_from: manifest.restored_from.clone(),
            total_bytes: manifest.total_bytes(),
            db_bytes: manifest.db.size_bytes,
            has_registry: manifest.registry.is_some(),
            has_chroma: manifest.chroma.is_some(),
            broken: None,
        }
    }

    fn broken(name: String, reason: String) -> Self {
        BackupSummary {
            stamp: name,
            kind: None,
            created_at: None,
            restored_from: None,
            total_bytes: 0,
            db_bytes: 0,
            has_registry: false,
            has_chroma: false,
            broken: Some(reason),
        }
    }
}

/// Lists the snapshots under `paths.backup_dir` and warns about anything an
/// operator must act on. Never fails on a bad snapshot: it is listed as broken.
///
/// # Errors
/// When the snapshots directory cannot be read for any reason but not
/// existing yet (a backup dir that is a file, no permission).
pub fn list_backups(paths: &RuntimePaths) -> Result<BackupListing> {
    let mut warnings = Vec::new();
    if let Some(marker) = RestoreMarker::read(paths)? {
        warnings.push(format!(
            "restore marker `{}` exists: the restore of `{}` started at {} did not finish{}; run `atocore-backup restore <STAMP> --confirm-service-stopped` to finish it",
            paths.restore_marker_path(),
            marker.stamp,
            marker.started_at,
            marker
                .pre_restore_stamp
                .as_ref()
                .map(|stamp| format!(" (its pre-restore snapshot is `{stamp}`)"))
                .unwrap_or_default(),
        ));
    }
    warnings.extend(crate::leftovers::describe(paths)?);
    let snapshots = paths.snapshots_dir();
    let mut backups = Vec::new();
    let entries = match fs::read_dir(&snapshots) {
        Ok(entries) => Some(entries),
        // No backup has been made here yet.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        // A backup dir that is a file, or cannot be read, must not pass for
        // an empty one: in an incident "no backups" sends an operator the
        // wrong way.
        Err(error) => return Err(error.into()),
    };
    if let Some(entries) = entries {
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PARTIAL_PREFIX) || name.starts_with(DELETING_PREFIX) {
                warnings.push(format!(
                    "leftover `{}` from an interrupted operation; the next `create` removes it",
                    snapshots.join(&name)
                ));
                continue;
            }
            if name.starts_with('.') {
                continue;
            }
            backups.push(summarize(&snapshots.join(&name), name));
        }
    }
    backups.sort_by(|a, b| {
        let key = |s: &BackupSummary| s.stamp.parse::<Stamp>().ok();
        // Newest first; entries whose name is not a stamp sink to the end.
        match (key(a), key(b)) {
            (Some(x), Some(y)) => y.cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.stamp.cmp(&b.stamp),
        }
    });
    Ok(BackupListing { backups, warnings })
}

fn summarize(dir: &Utf8Path, name: String) -> BackupSummary {
    if name.parse::<Stamp>().is_err() {
        return BackupSummary::broken(name, "directory name is not a backup stamp".to_owned());
    }
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return BackupSummary::broken(name, "not a directory".to_owned()),
        Err(error) => return BackupSummary::broken(name, error.to_string()),
    }
    match BackupManifest::load(dir) {
        Ok(manifest) if manifest.stamp.as_str() == name => BackupSummary::from_manifest(&manifest),
        Ok(manifest) => BackupSummary::broken(
            name,
            format!("manifest names stamp `{}`, not its directory", manifest.stamp),
        ),
        Err(error) => BackupSummary::broken(name, error.chain()),
    }
}

/// [`Error::BackupNotFound`] for `stamp`, naming the (up to three) existing
/// stamps closest in time, so a mistyped digit finds its backup.
pub(crate) fn backup_not_found(snapshots: &Utf8Path, stamp: &Stamp) -> Error {
    // `YYYYMMDDHHMMSS` as a number orders and spaces stamps closely enough
    // to find neighbours without parsing calendars.
    let key = |text: &str| -> Option<u64> {
        let digits: String = text.chars().take(16).filter(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let wanted = key(stamp.as_str()).unwrap_or(0);
    let mut existing: Vec<(u64, String)> = fs::read_dir(snapshots)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let parsed: Stamp = name.parse().ok()?;
            Some((key(parsed.as_str())?.abs_diff(wanted), name))
        })
        .collect();
    existing.sort();
    Error::BackupNotFound {
        stamp: stamp.to_string(),
        dir: snapshots.to_owned(),
        nearest: existing.into_iter().take(3).map(|(_, name)| name).collect(),
    }
}
