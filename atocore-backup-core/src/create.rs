//! `create`: a complete, checksummed snapshot, or nothing at all.
//!
//! The snapshot is built in `snapshots/.partial-<STAMP>/`, every file and
//! directory fsynced, the manifest written last, then renamed to `<STAMP>/`
//! and `snapshots/` fsynced: a crash at any instant leaves either no backup or
//! a complete one, and `list` never shows a `.partial-*` directory.

use std::fmt::Write as _;

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;
use jiff::Timestamp;

use crate::checksum::{Algorithm, Checksum};
use crate::durable::{
    CopyFailure, FilesystemFlush, Progress, copy_hashed, copy_hashed_unflushed, create_dir_durably,
    fsync_dir, hash_regular_file, rename_durably,
};
use crate::error::{Error, Result};
use crate::faults::crash_point;
use crate::lock::BackupDirLock;
use crate::manifest::{
    B3SUMS_NAME, BackupKind, BackupManifest, ChromaRecord, DbRecord, FORMAT_VERSION, FileRecord,
    MANIFEST_NAME, SourcePaths,
};
use crate::paths::RuntimePaths;
use crate::sqlite::{DbFacts, LazyBackup, backup_hashed, backup_lazily, capture_held_db};
use crate::stamp::Stamp;
use crate::tree::{TreeEntry, walk_tree};
use crate::work_queue::WorkQueue;

/// How many times a chroma file that changed while being copied is copied.
const CHROMA_COPY_ATTEMPTS: u32 = 3;
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
    remove_leftovers(&snapshots)?;

    let created_at = now();
    let stamp = free_stamp(&snapshots, Stamp::at(created_at));
    let partial = snapshots.join(format!("{PARTIAL_PREFIX}{stamp}"));
    fs::create_dir(&partial)?;
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
    crash_point("create.before_rename");
    let done = snapshots.join(stamp.as_str());
    if let Err(error) = rename_durably(&partial, &done) {
        let _ = fs::remove_dir_all(&partial);
        return Err(error);
    }
    Ok(manifest)
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
    let db = db?;
    crash_point("create.after_db");
    let registry = copy_registry(dir, &paths.registry_path, progress)?;
    copied?;
    let copied_files = work.map(|(_, queue)| queue.into_results()).unwrap_or_default();
    let chroma = chroma.map(|chroma| chroma.finish(copied_files)).transpose()?;
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

fn copy_db(
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
    })
}

fn copy_registry(
    dir: &Utf8Path,
    registry_path: &Utf8Path,
    progress: &dyn Progress,
) -> Result<Option<FileRecord>> {
    match fs::symlink_metadata(registry_path) {
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
    }))
}

/// SQLite's sidecars are folded into the online backup of their database.
fn is_sqlite_sidecar(relative: &str, all: &[TreeEntry]) -> bool {
    ["-wal", "-shm", "-journal"].iter().any(|suffix| {
        relative
            .strip_suffix(suffix)
            .is_some_and(|db| db.ends_with(".sqlite3") && all.iter().any(|e| e.relative == db))
    })
}

/// The db copy of the newest readable backup, which a new backup shares
/// (hard-links) when the db still holds the same bytes, so an unchanged db
/// costs no disk.
struct PreviousDb {
    stamp: Stamp,
    snapshot: Utf8PathBuf,
    record: DbRecord,
}

impl PreviousDb {
    /// Best effort: any problem just means "copy it".
    fn newest(paths: &RuntimePaths, earlier: &[crate::BackupSummary]) -> Option<PreviousDb> {
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

/// What [`back_up_sqlite`] made.
enum SqliteCopy {
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
fn back_up_sqlite(
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

/// The chroma copy of the newest readable backup, whose unchanged files a new
/// backup hard-links instead of copying again.
struct PreviousChroma {
    stamp: Stamp,
    root: Utf8PathBuf,
    files: std::collections::HashMap<String, FileRecord>,
}

impl PreviousChroma {
    /// Best effort: any problem just means "copy everything".
    fn newest(paths: &RuntimePaths, earlier: &[crate::BackupSummary]) -> Option<PreviousChroma> {
        let (stamp, dir, manifest) = newest_manifest(paths, earlier, |b| b.has_chroma)?;
        let chroma = manifest.chroma?;
        let root = dir.join(&chroma.path);
        let files = chroma.files.into_iter().map(|f| (f.path.clone(), f)).collect();
        Some(PreviousChroma { stamp, root, files })
    }

    /// Hard-links the previous copy of `relative` to `target` if the source
    /// is unchanged: same size and mtime as recorded, and (read once, no
    /// write) the same checksum. Returns the record, or `None` to copy.
    fn link_if_unchanged(
        &self,
        relative: &str,
        source: &Utf8Path,
        target: &Utf8Path,
        progress: &dyn Progress,
    ) -> Result<Option<FileRecord>> {
        let Some(recorded) = self.files.get(relative) else {
            return Ok(None);
        };
        let before = size_and_mtime_ns(source)?;
        if Some(before) != recorded.source_mtime_ns.map(|mtime| (recorded.size_bytes, mtime)) {
            return Ok(None);
        }
        let Ok(previous) = crate::validate::resolve_inside(&self.root, relative) else {
            return Ok(None);
        };
        let (_, checksum) = hash_regular_file(source, recorded.checksum.algorithm(), progress)?;
        if checksum != recorded.checksum || size_and_mtime_ns(source)? != before {
            return Ok(None);
        }
        match fs::hard_link(&previous, target) {
            Ok(()) => Ok(Some(recorded.clone())),
            // Another filesystem, a link limit: copying is always correct.
            Err(_) => Ok(None),
        }
    }
}

fn size_and_mtime_ns(path: &Utf8Path) -> Result<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path)?;
    Ok((
        meta.len(),
        meta.mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
    ))
}

/// A chroma tree being copied into a snapshot: its directories made up
/// front, its files copied (or linked) one by one by whichever thread takes
/// them from a [`WorkQueue`] over `files`.
struct ChromaCopy<'a> {
    chroma_dir: &'a Utf8Path,
    target_root: Utf8PathBuf,
    previous: Option<PreviousChroma>,
    live: LiveAccess,
    flush: FilesystemFlush,
    /// Every file to copy, relative to the chroma dir, in the tree's order.
    files: Vec<String>,
    /// When the last file was copied: the tree's `captured_at`.
    last_copied: std::sync::Mutex<Option<Timestamp>>,
}

impl<'a> ChromaCopy<'a> {
    /// Lists `chroma_dir` and makes its directories under `dir/chroma`.
    fn prepare(
        dir: &Utf8Path,
        chroma_dir: &'a Utf8Path,
        previous: Option<PreviousChroma>,
        live: LiveAccess,
    ) -> Result<Self> {
        let meta = fs::symlink_metadata(chroma_dir)?;
        if meta.file_type().is_symlink() {
            return Err(Error::SymlinkRefused {
                path: chroma_dir.to_owned(),
            });
        }
        let target_root = dir.join("chroma");
        fs::create_dir(&target_root)?;
        let flush = FilesystemFlush::begin(&target_root)?;
        let entries = walk_tree(chroma_dir)?;
        let mut files = Vec::new();
        for entry in &entries {
            if entry.is_dir {
                fs::create_dir(target_root.join(&entry.relative))?;
            } else if !is_sqlite_sidecar(&entry.relative, &entries) {
                files.push(entry.relative.clone());
            }
        }
        Ok(ChromaCopy {
            chroma_dir,
            target_root,
            previous,
            live,
            flush,
            files,
            last_copied: std::sync::Mutex::new(None),
        })
    }

    /// Copies one file, or links the previous backup's copy of it. Returns
    /// its record and whether it was linked.
    fn copy_file(&self, relative: &str, progress: &dyn Progress) -> Result<(FileRecord, bool)> {
        let copied = self.copy_or_link(relative, progress)?;
        let done = now();
        let mut last = self.last_copied.lock().unwrap_or_else(|e| e.into_inner());
        *last = (*last).max(Some(done));
        Ok(copied)
    }

    fn copy_or_link(&self, relative: &str, progress: &dyn Progress) -> Result<(FileRecord, bool)> {
        let source = self.chroma_dir.join(relative);
        let target = self.target_root.join(relative);
        if self.live == LiveAccess::HeldByRestore {
            let record = capture_held_file(relative, &source, &target, &self.flush, progress)?;
            return Ok((record, false));
        }
        if relative.ends_with(".sqlite3") {
            // As the main db: compared with the previous copy, shared if the same.
            let previous = self.previous.as_ref().and_then(|previous| {
                let recorded = previous.files.get(relative)?;
                Some((previous.root.as_path(), recorded))
            });
            let (size_bytes, checksum) = match previous {
                Some((root, recorded)) => match back_up_sqlite(&source, &target, (root, relative), progress)?
                {
                    SqliteCopy::Shared => return Ok((recorded.clone(), true)),
                    SqliteCopy::Copied(_, size_bytes, checksum) => (size_bytes, checksum),
                },
                None => {
                    backup_hashed(&source, &target, progress).map(|(_, size, checksum)| (size, checksum))?
                }
            };
            let record = FileRecord {
                path: relative.to_owned(),
                size_bytes,
                checksum,
                source_mtime_ns: None,
            };
            return Ok((record, false));
        }
        if let Some(previous) = &self.previous
            && let Some(record) = previous.link_if_unchanged(relative, &source, &target, progress)?
        {
            return Ok((record, true));
        }
        let (size_bytes, checksum, mtime_ns) = copy_unchanging(&source, &target, &self.flush, progress)?;
        let record = FileRecord {
            path: relative.to_owned(),
            size_bytes,
            checksum,
            source_mtime_ns: Some(mtime_ns),
        };
        Ok((record, false))
    }

    /// Makes every copied file and new directory durable (one `syncfs`) and
    /// records the tree, given every file's outcome in `files`' order.
    fn finish(self, copied: Vec<Option<(FileRecord, bool)>>) -> Result<ChromaRecord> {
        self.flush.finish()?;
        let copied: Vec<(FileRecord, bool)> = copied
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| Error::Io(std::io::Error::other("a chroma file was not copied")))?;
        let linked_files = copied.iter().filter(|(_, linked)| *linked).count() as u64;
        let files: Vec<FileRecord> = copied.into_iter().map(|(record, _)| record).collect();
        Ok(ChromaRecord {
            path: "chroma".to_owned(),
            file_count: files.len() as u64,
            total_bytes: files.iter().map(|f| f.size_bytes).sum(),
            captured_at: self
                .last_copied
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(now),
            files,
            linked_from: (linked_files > 0)
                .then(|| self.previous.map(|p| p.stamp))
                .flatten(),
            linked_files,
        })
    }
}

/// One chroma file of a runtime a restore holds (see
/// [`LiveAccess::HeldByRestore`]): SQLite files through `capture_held_db`,
/// others hard-linked (copied where a link is impossible) and hashed.
fn capture_held_file(
    relative: &str,
    source: &Utf8Path,
    target: &Utf8Path,
    flush: &FilesystemFlush,
    progress: &dyn Progress,
) -> Result<FileRecord> {
    if relative.ends_with(".sqlite3") {
        let (_, size_bytes, checksum) = capture_held_db(source, target, progress)?;
        return Ok(FileRecord {
            path: relative.to_owned(),
            size_bytes,
            checksum,
            source_mtime_ns: None,
        });
    }
    let before = size_and_mtime_ns(source)?;
    let (size_bytes, checksum, mtime_ns) = if fs::hard_link(source, target).is_ok() {
        // Made durable with the rest of the tree, by `flush` (same filesystem).
        let (size, checksum) = hash_regular_file(target, Algorithm::Blake3, progress)?;
        // The service is stopped, so nothing should write; if something
        // does, this snapshot is not what it claims to be.
        if size_and_mtime_ns(source)? != before || size != before.0 {
            return Err(Error::ChromaUnstable {
                path: source.to_owned(),
                attempts: 1,
            });
        }
        (size, checksum, before.1)
    } else {
        copy_unchanging(source, target, flush, progress)?
    };
    Ok(FileRecord {
        path: relative.to_owned(),
        size_bytes,
        checksum,
        source_mtime_ns: Some(mtime_ns),
    })
}

/// Copies a file that a live writer may be changing: the copy only counts if
/// the source's size and mtime were the same before and after it. Returns
/// size, checksum and the source mtime the copy corresponds to.
fn copy_unchanging(
    source: &Utf8Path,
    target: &Utf8Path,
    flush: &FilesystemFlush,
    progress: &dyn Progress,
) -> Result<(u64, Checksum, i64)> {
    for attempt in 1..=CHROMA_COPY_ATTEMPTS {
        if attempt > 1 {
            fs::remove_file(target)?;
        }
        let before = size_and_mtime_ns(source)?;
        let (size, checksum) = copy_hashed_unflushed(source, target, Algorithm::Blake3, progress, flush)
            .map_err(CopyFailure::into_error)?;
        let after = size_and_mtime_ns(source)?;
        if before == after && size == after.0 {
            return Ok((size, checksum, after.1));
        }
    }
    Err(Error::ChromaUnstable {
        path: source.to_owned(),
        attempts: CHROMA_COPY_ATTEMPTS,
    })
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
