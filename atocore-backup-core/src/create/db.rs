//! The db's part of a snapshot: copied through SQLite, or shared with the
//! previous backup's copy when it still holds the same bytes.

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;

use super::{LiveAccess, file_name, newest_manifest, now};
use crate::checksum::Checksum;
use crate::durable::{Progress, fsync_dir};
use crate::error::{Error, Result};
use crate::manifest::DbRecord;
use crate::paths::RuntimePaths;
use crate::sqlite::{DbFacts, LazyBackup, backup_hashed, backup_lazily, capture_held_db};
use crate::stamp::Stamp;

pub(super) fn copy_db(
    dir: &Utf8Path,
    db_path: &Utf8Path,
    live: LiveAccess,
    previous: Option<PreviousDb>,
    progress: &dyn Progress,
) -> Result<DbRecord> {
    let relative = format!("db/{}", file_name(db_path)?);
    fs::create_dir(dir.join("db"))?;
    let target = dir.join(&relative);
    let (facts, size_bytes, checksum) = match (live, previous) {
        (LiveAccess::Shared, Some(previous)) => {
            let earlier_copy = (previous.snapshot.as_path(), previous.record.path.as_str());
            match back_up_sqlite(db_path, &target, earlier_copy, progress)? {
                SqliteCopy::Shared => return Ok(previous.shared_record()),
                SqliteCopy::Copied(facts, size_bytes, checksum) => (facts, size_bytes, checksum),
            }
        }
        (LiveAccess::Shared, None) => backup_hashed(db_path, &target, progress)?,
        // Captured by a hard link of the live file, which the restore then
        // replaces: the snapshot's copy costs no time, and is shared with
        // the previous backup below if it holds the same bytes.
        (LiveAccess::HeldByRestore, previous) => {
            let (facts, size_bytes, checksum) = capture_held_db(db_path, &target, progress)?;
            if let Some(previous) = previous
                && previous.record.checksum == checksum
                && previous.record.size_bytes == size_bytes
                && replace_with_link(&previous.snapshot, &previous.record.path, &target)
            {
                return Ok(previous.shared_record());
            }
            (facts, size_bytes, checksum)
        }
    };
    let captured_at = now();
    fsync_dir(&dir.join("db"))?;
    Ok(DbRecord {
        path: relative,
        size_bytes,
        checksum,
        page_size: facts.page_size,
        page_count: facts.page_count,
        user_version: facts.user_version,
        captured_at,
        linked_from: None,
        owner: None,
    })
}

/// The db copy of the newest readable backup, which a new backup shares
/// (hard-links) when the db still holds the same bytes, so an unchanged db
/// costs no disk.
pub(super) struct PreviousDb {
    stamp: Stamp,
    snapshot: Utf8PathBuf,
    record: DbRecord,
}

impl PreviousDb {
    /// Best effort: any problem just means "copy it".
    pub(super) fn newest(paths: &RuntimePaths, earlier: &[crate::BackupSummary]) -> Option<PreviousDb> {
        let (stamp, snapshot, manifest) = newest_manifest(paths, earlier, |_| true)?;
        Some(PreviousDb {
            stamp,
            snapshot,
            record: manifest.db,
        })
    }

    fn shared_record(&self) -> DbRecord {
        DbRecord {
            captured_at: now(),
            linked_from: Some(self.stamp.clone()),
            ..self.record.clone()
        }
    }
}

/// What [`back_up_sqlite`] made.
pub(super) enum SqliteCopy {
    /// The target is a hard link to the earlier copy, which holds the same
    /// bytes.
    Shared,
    Copied(DbFacts, u64, Checksum),
}

/// Backs the live SQLite db `source` up to `target` through SQLite, against
/// `previous` (an earlier snapshot, and the path of its copy of this db
/// inside it): the backup is compared with that copy as it goes
/// ([`backup_lazily`]), and if the db holds the same bytes, nothing is
/// written and `target` becomes a hard link to the copy.
///
/// Never against a copy that is the live file itself: a pre-restore snapshot
/// shares it until the restore puts the new file in place, and one left by
/// an interrupted restore still does. Sharing it would tie the new backup to
/// the live db, and reading it would close a descriptor of a file this
/// process's SQLite connection has locks on, which drops them.
pub(super) fn back_up_sqlite(
    source: &Utf8Path,
    target: &Utf8Path,
    (snapshot, relative): (&Utf8Path, &str),
    progress: &dyn Progress,
) -> Result<SqliteCopy> {
    let copied = |(facts, size_bytes, checksum)| SqliteCopy::Copied(facts, size_bytes, checksum);
    let copy = match crate::validate::resolve_inside(snapshot, relative) {
        Ok(copy) if !same_file(&copy, source) => copy,
        _ => return backup_hashed(source, target, progress).map(copied),
    };
    match backup_lazily(source, target, &copy, progress) {
        Ok(LazyBackup::Copied(facts, size_bytes, checksum)) => {
            Ok(SqliteCopy::Copied(facts, size_bytes, checksum))
        }
        Ok(LazyBackup::SameAsPrevious) if replace_with_link(snapshot, relative, target) => {
            Ok(SqliteCopy::Shared)
        }
        // The source is the trouble: a plain copy would meet it again.
        Err(error @ (Error::DbSourceUnopenable { .. } | Error::DbBackupBusy { .. })) => Err(error),
        // No link (another filesystem, a link limit), or the earlier copy
        // could not be read, or the lazy copy failed: it only ever saves
        // work, so a plain copy of its own decides.
        Ok(LazyBackup::SameAsPrevious) | Err(_) => {
            crate::durable::remove_if_exists(target)?;
            backup_hashed(source, target, progress).map(copied)
        }
    }
}

/// Whether two paths name one file; `true` if either cannot be looked at,
/// so that the caller leaves it alone.
fn same_file(a: &Utf8Path, b: &Utf8Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => true,
    }
}

/// Replaces the fresh copy `target` by a hard link to `relative` inside an
/// earlier snapshot, atomically (link beside, rename over). Any failure keeps
/// the copy, which is always correct; returns whether the link is in place.
fn replace_with_link(snapshot: &Utf8Path, relative: &str, target: &Utf8Path) -> bool {
    let Ok(existing) = crate::validate::resolve_inside(snapshot, relative) else {
        return false;
    };
    let link = crate::durable::temp_path_for(target, "link");
    let shared = fs::hard_link(&existing, &link).and_then(|()| fs::rename(&link, target));
    if shared.is_ok() && fsync_dir(crate::paths::parent_or_dot(target)).is_ok() {
        return true;
    }
    let _ = fs::remove_file(&link);
    false
}
