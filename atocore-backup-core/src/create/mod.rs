//! `create`: a complete, checksummed snapshot, or nothing at all.
//!
//! The snapshot is built in `snapshots/.partial-<STAMP>/`, every file and
//! directory fsynced, the manifest written last, then renamed to `<STAMP>/`
//! and `snapshots/` fsynced: a crash at any instant leaves either no backup or
//! a complete one, and `list` never shows a `.partial-*` directory.
//!
//! This module builds the snapshot around its parts and publishes it; the db
//! is copied by [`db`] and the chroma tree by [`chroma`], each sharing what
//! the previous backup already holds.

mod chroma;
mod db;

use std::fmt::Write as _;
use std::os::unix::fs::DirBuilderExt;

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;
use jiff::Timestamp;

use self::chroma::{ChromaCopy, PreviousChroma};
use self::db::{PreviousDb, copy_db};
use crate::checksum::Algorithm;
use crate::durable::{Progress, copy_hashed, create_dir_durably, fsync_dir, rename_durably};
use crate::error::{Error, Result};
use crate::faults::crash_point;
use crate::lock::BackupDirLock;
use crate::manifest::{
    B3SUMS_NAME, BackupKind, BackupManifest, FORMAT_VERSION, FileRecord, MANIFEST_NAME, SourcePaths,
};
use crate::ownership::ownership_of;
use crate::paths::RuntimePaths;
use crate::stamp::Stamp;
use crate::work_queue::WorkQueue;

/// Prefix of a snapshot under construction.
pub(crate) const PARTIAL_PREFIX: &str = ".partial-";
/// Prefix of a snapshot being deleted.
pub(crate) const DELETING_PREFIX: &str = ".deleting-";

/// What to capture and how to label it.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Copy the Chroma directory too.
    pub include_chroma: bool,
    /// The label recorded in the manifest.
    pub kind: BackupKind,
    /// For a pre-restore snapshot: the stamp about to be restored.
    pub restored_from: Option<Stamp>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            include_chroma: false,
            kind: BackupKind::Manual,
            restored_from: None,
        }
    }
}

/// The wall clock at the millisecond precision manifests record.
pub(crate) fn now() -> Timestamp {
    let now = Timestamp::now();
    now.round(jiff::Unit::Millisecond).unwrap_or(now)
}

/// Takes a backup of the runtime at `paths` into `paths.backup_dir`.
///
/// # Errors
/// [`Error::Busy`] if another operation holds the backup lock,
/// [`Error::DbMissing`] if there is no database, [`Error::RegistryJson`] if
/// the registry is not JSON, [`Error::ChromaUnstable`] /
/// [`Error::SymlinkRefused`] for chroma, and I/O or SQLite errors naming the
/// path. On any error no snapshot is left behind.
pub fn create_backup(
    paths: &RuntimePaths,
    options: &CreateOptions,
    progress: &dyn Progress,
) -> Result<BackupManifest> {
    let lock = BackupDirLock::acquire(paths, "create", now())?;
    create_backup_locked(&lock, paths, options, LiveAccess::Shared, progress)
}

/// Who else may be using the live runtime while it is backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LiveAccess {
    /// The service may be running: SQLite files are copied through the
    /// online backup, other files copied and checked for change.
    Shared,
    /// A restore has stopped the service, passed its gates and is about to
    /// replace every file it snapshots: SQLite files are captured under
    /// SQLite's exclusive lock (`capture_held_db`), and files are hard-linked
    /// rather than copied, since after the restore only the snapshot names them.
    HeldByRestore,
}

/// [`create_backup`] for a caller that already holds the backup lock.
pub(crate) fn create_backup_locked(
    _lock: &BackupDirLock,
    paths: &RuntimePaths,
    options: &CreateOptions,
    live: LiveAccess,
    progress: &dyn Progress,
) -> Result<BackupManifest> {
    if !paths.db_path.is_file() {
        return Err(Error::DbMissing {
            path: paths.db_path.clone(),
        });
    }
    if options.include_chroma && paths.db_path.starts_with(&paths.chroma_dir) {
        return Err(Error::DbInsideChroma {
            db: paths.db_path.clone(),
            chroma: paths.chroma_dir.clone(),
        });
    }
    let snapshots = paths.snapshots_dir();
    create_dir_durably(&snapshots)?;
    set_mode(&snapshots, SNAPSHOT_DIR_MODE)?;
    remove_leftovers(&snapshots)?;

    let created_at = now();
    let stamp = free_stamp(&snapshots, Stamp::at(created_at));
    let partial = snapshots.join(format!("{PARTIAL_PREFIX}{stamp}"));
    // 0700 from its creation, whatever the umask: nothing inside is ever
    // reachable by another user, even before the files are made read-only
    // (and even if a crash loses that later chmod).
    std::fs::DirBuilder::new()
        .mode(SNAPSHOT_DIR_MODE)
        .create(&partial)
        .map_err(|source| {
            Error::Io(std::io::Error::new(
                source.kind(),
                format!("cannot create `{partial}`: {source}"),
            ))
        })?;
    set_mode(&partial, SNAPSHOT_DIR_MODE)?;
    fsync_dir(&snapshots)?;

    let built = build_snapshot(&partial, paths, options, live, &stamp, created_at, progress);
    let manifest = match built {
        Ok(manifest) => manifest,
        Err(error) => {
            // Best effort: the next create removes whatever is left.
            let _ = fs::remove_dir_all(&partial);
            return Err(error);
        }
    };
    // Files 0400, directories 0700: the snapshot is never modified once
    // published. A restore's snapshot hard-links live files it is about to
    // replace; those keep the live mode until the swap (see `seal_snapshot`).
    let sealed = seal_snapshot(&partial, &live_inodes(paths, live)?);
    if let Err(error) = sealed {
        let _ = fs::remove_dir_all(&partial);
        return Err(error);
    }
    crash_point("create.before_rename");
    let done = snapshots.join(stamp.as_str());
    if let Err(error) = rename_durably(&partial, &done) {
        let _ = fs::remove_dir_all(&partial);
        return Err(error);
    }
    Ok(manifest)
}

/// Mode of every directory of a snapshot and of `snapshots/` itself.
pub(crate) const SNAPSHOT_DIR_MODE: u32 = 0o700;
/// Mode of every file of a snapshot: read-only, private.
pub(crate) const SNAPSHOT_FILE_MODE: u32 = 0o400;

fn set_mode(path: &Utf8Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Makes a snapshot's directories 0700 and its files 0400, except files that
/// are still live (a pre-restore snapshot's hard links to the live db and
/// chroma files, which must keep the live mode until the restore swaps them
/// out).
pub(crate) fn seal_snapshot(dir: &Utf8Path, live: &std::collections::HashSet<(u64, u64)>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    crate::ownership::restrict_tree(dir, SNAPSHOT_DIR_MODE, SNAPSHOT_FILE_MODE, &|meta| {
        meta.nlink() > 1 && live.contains(&(meta.dev(), meta.ino()))
    })
}

/// Device and inode of every live file a snapshot may hard-link: only a
/// restore's snapshot does (`LiveAccess::HeldByRestore`).
pub(crate) fn live_inodes(
    paths: &RuntimePaths,
    live: LiveAccess,
) -> Result<std::collections::HashSet<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let mut inodes = std::collections::HashSet::new();
    if live == LiveAccess::Shared {
        return Ok(inodes);
    }
    let mut files = vec![paths.db_path.clone()];
    if paths.chroma_dir.is_dir() {
        for entry in crate::tree::walk_tree(&paths.chroma_dir)? {
            if !entry.is_dir {
                files.push(paths.chroma_dir.join(&entry.relative));
            }
        }
    }
    for file in files {
        if let Ok(meta) = fs::symlink_metadata(&file) {
            inodes.insert((meta.dev(), meta.ino()));
        }
    }
    Ok(inodes)
}

/// Removes `.partial-*` and `.deleting-*` directories. Only called under the
/// backup lock, so whoever left them is gone.
fn remove_leftovers(snapshots: &Utf8Path) -> Result<()> {
    let mut removed = false;
    for entry in fs::read_dir(snapshots)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PARTIAL_PREFIX) || name.starts_with(DELETING_PREFIX) {
            fs::remove_dir_all(entry.path())?;
            removed = true;
        }
    }
    if removed {
        fsync_dir(snapshots)?;
    }
    Ok(())
}

/// The first of `base`, `base-2`, `base-3`, ... not yet used.
fn free_stamp(snapshots: &Utf8Path, base: Stamp) -> Stamp {
    let taken = |stamp: &Stamp| {
        [
            stamp.to_string(),
            format!("{PARTIAL_PREFIX}{stamp}"),
            format!("{DELETING_PREFIX}{stamp}"),
        ]
        .iter()
        .any(|name| snapshots.join(name).exists())
    };
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| base.with_suffix(n))
        .find(|stamp| !taken(stamp))
        .unwrap_or(base)
}

fn build_snapshot(
    dir: &Utf8Path,
    paths: &RuntimePaths,
    options: &CreateOptions,
    live: LiveAccess,
    stamp: &Stamp,
    created_at: Timestamp,
    progress: &dyn Progress,
) -> Result<BackupManifest> {
    // Read once for both kinds of sharing; under the lock nothing adds to it.
    let earlier = crate::list_backups(paths)
        .map(|listing| listing.backups)
        .unwrap_or_default();
    // The db is copied page by page through SQLite on one core; chroma is
    // copied meanwhile on the other, and the db's thread joins in once its
    // copy is done (a small db beside a large tree). Each records when it
    // was captured, as it did when they ran one after the other. (A db inside
    // the chroma dir, whose file the chroma copy would read, was refused
    // above.)
    let chroma = match options.include_chroma {
        true => Some(ChromaCopy::prepare(
            dir,
            &paths.chroma_dir,
            PreviousChroma::newest(paths, &earlier),
            live,
        )?),
        false => None,
    };
    let work = chroma
        .as_ref()
        .map(|chroma| (chroma, WorkQueue::new(&chroma.files)));
    let copy_files = || match &work {
        Some((chroma, queue)) => queue.work_until_done(|relative| chroma.copy_file(relative, progress)),
        None => Ok(()),
    };
    let (db, copied) = std::thread::scope(|scope| {
        let alongside = work.is_some().then(|| scope.spawn(copy_files));
        let db = copy_db(
            dir,
            &paths.db_path,
            live,
            PreviousDb::newest(paths, &earlier),
            progress,
        );
        let mine = if db.is_ok() {
            copy_files()
        } else {
            // The backup has failed: the chroma thread stops at its next file.
            if let Some((_, queue)) = &work {
                queue.stop();
            }
            Ok(())
        };
        let alongside = alongside.map_or(Ok(()), |running| {
            running.join().unwrap_or_else(|_| {
                Err(Error::Io(std::io::Error::other(format!(
                    "copying `{}` panicked",
                    paths.chroma_dir
                ))))
            })
        });
        (db, mine.and(alongside))
    });
    let mut db = db?;
    db.owner = ownership_of(&paths.db_path)?;
    crash_point("create.after_db");
    // A restore's own snapshot takes the runtime as it is: a registry the
    // restore is about to create is legitimately absent.
    let registry_required = paths.registry_required && live == LiveAccess::Shared;
    let registry = copy_registry(dir, &paths.registry_path, registry_required, progress)?;
    copied?;
    let copied_files = work.map(|(_, queue)| queue.into_results()).unwrap_or_default();
    let mut chroma = chroma.map(|chroma| chroma.finish(copied_files)).transpose()?;
    // What a restore gives a file it creates where none exists.
    for file in chroma.iter_mut().flat_map(|chroma| chroma.files.iter_mut()) {
        file.owner = ownership_of(&paths.chroma_dir.join(&file.path))?;
    }
    crash_point("create.after_chroma");
    let manifest = BackupManifest {
        format_version: FORMAT_VERSION,
        stamp: stamp.clone(),
        created_at,
        kind: options.kind,
        restored_from: options.restored_from.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        source: SourcePaths {
            db_path: paths.db_path.clone(),
            chroma_dir: paths.chroma_dir.clone(),
            registry_path: paths.registry_path.clone(),
        },
        db,
        registry,
        chroma,
    };
    write_synced(&dir.join(B3SUMS_NAME), b3sums(&manifest).as_bytes())?;
    // Written last: a manifest only exists beside files that are all on disk.
    write_synced(&dir.join(MANIFEST_NAME), manifest.to_json().as_bytes())?;
    fsync_dir(dir)?;
    Ok(manifest)
}

fn write_synced(path: &Utf8Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn file_name(path: &Utf8Path) -> Result<&str> {
    path.file_name().ok_or_else(|| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{path}` has no file name"),
        ))
    })
}

fn copy_registry(
    dir: &Utf8Path,
    registry_path: &Utf8Path,
    required: bool,
    progress: &dyn Progress,
) -> Result<Option<FileRecord>> {
    match fs::symlink_metadata(registry_path) {
        // Only the default path may be absent (no registry yet); a path
        // given explicitly that names nothing is a typo to report.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && required => {
            return Err(Error::RegistryMissing {
                path: registry_path.to_owned(),
            });
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
        Ok(_) => {}
    }
    let relative = format!("config/{}", file_name(registry_path)?);
    fs::create_dir(dir.join("config"))?;
    let target = dir.join(&relative);
    let (size_bytes, checksum) = copy_hashed(registry_path, &target, Algorithm::Blake3, progress)?;
    // Parsed from the copy: what is proven valid is exactly what was saved.
    let reader = std::io::BufReader::new(fs::File::open(&target)?);
    serde_json::from_reader::<_, serde::de::IgnoredAny>(reader).map_err(|source| Error::RegistryJson {
        path: registry_path.to_owned(),
        source,
    })?;
    fsync_dir(&dir.join("config"))?;
    Ok(Some(FileRecord {
        path: relative,
        size_bytes,
        checksum,
        source_mtime_ns: None,
        owner: ownership_of(registry_path)?,
    }))
}

/// The newest readable backup that `wanted`: its stamp, directory and
/// manifest. Best effort: any problem just means "none".
fn newest_manifest(
    paths: &RuntimePaths,
    earlier: &[crate::BackupSummary],
    wanted: impl Fn(&crate::BackupSummary) -> bool,
) -> Option<(Stamp, Utf8PathBuf, BackupManifest)> {
    let summary = earlier.iter().find(|b| b.broken.is_none() && wanted(b))?;
    let stamp: Stamp = summary.stamp.parse().ok()?;
    let dir = snapshot_dir(paths, &stamp);
    let manifest = BackupManifest::load(&dir).ok()?;
    Some((stamp, dir, manifest))
}

/// `B3SUMS` in `b3sum`'s format, so `b3sum -c B3SUMS` checks a snapshot by hand.
fn b3sums(manifest: &BackupManifest) -> String {
    let mut out = String::new();
    for (path, _, checksum) in manifest.files() {
        if checksum.algorithm() != Algorithm::Blake3 {
            continue;
        }
        // b3sum escapes names holding `\` or a newline and marks the line with
        // a leading backslash.
        if path.contains('\\') || path.contains('\n') {
            let escaped = path.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "\\{}  {escaped}", checksum.hex());
        } else {
            let _ = writeln!(out, "{}  {path}", checksum.hex());
        }
    }
    out
}

/// Where a stamp's snapshot lives; the stamp is already validated.
pub(crate) fn snapshot_dir(paths: &RuntimePaths, stamp: &Stamp) -> Utf8PathBuf {
    paths.snapshots_dir().join(stamp.as_str())
}
