//! The chroma tree's part of a snapshot: every file copied while the
//! service may write, or hard-linked from the previous backup once its size,
//! mtime and checksum are confirmed unchanged; its SQLite files copied
//! through SQLite.

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;
use jiff::Timestamp;

use super::db::{SqliteCopy, back_up_sqlite};
use super::{LiveAccess, newest_manifest, now};
use crate::checksum::{Algorithm, Checksum};
use crate::durable::{CopyFailure, FilesystemFlush, Progress, copy_hashed_unflushed, hash_regular_file};
use crate::error::{Error, Result};
use crate::manifest::{ChromaRecord, FileRecord};
use crate::paths::RuntimePaths;
use crate::sqlite::{backup_hashed, capture_held_db};
use crate::stamp::Stamp;
use crate::tree::{TreeEntry, walk_tree};

/// How many times a chroma file that changed while being copied is copied.
const CHROMA_COPY_ATTEMPTS: u32 = 3;

/// SQLite's sidecars are folded into the online backup of their database.
fn is_sqlite_sidecar(relative: &str, all: &[TreeEntry]) -> bool {
    ["-wal", "-shm", "-journal"].iter().any(|suffix| {
        relative
            .strip_suffix(suffix)
            .is_some_and(|db| db.ends_with(".sqlite3") && all.iter().any(|e| e.relative == db))
    })
}

/// The chroma copy of the newest readable backup, whose unchanged files a new
/// backup hard-links instead of copying again.
pub(super) struct PreviousChroma {
    stamp: Stamp,
    root: Utf8PathBuf,
    files: std::collections::HashMap<String, FileRecord>,
}

impl PreviousChroma {
    /// Best effort: any problem just means "copy everything".
    pub(super) fn newest(paths: &RuntimePaths, earlier: &[crate::BackupSummary]) -> Option<PreviousChroma> {
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
/// them from a [`WorkQueue`](crate::work_queue::WorkQueue) over `files`.
pub(super) struct ChromaCopy<'a> {
    chroma_dir: &'a Utf8Path,
    target_root: Utf8PathBuf,
    previous: Option<PreviousChroma>,
    live: LiveAccess,
    flush: FilesystemFlush,
    /// Every file to copy, relative to the chroma dir, in the tree's order.
    pub(super) files: Vec<String>,
    /// When the last file was copied: the tree's `captured_at`.
    last_copied: std::sync::Mutex<Option<Timestamp>>,
}

impl<'a> ChromaCopy<'a> {
    /// Lists `chroma_dir` and makes its directories under `dir/chroma`.
    pub(super) fn prepare(
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
    pub(super) fn copy_file(&self, relative: &str, progress: &dyn Progress) -> Result<(FileRecord, bool)> {
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
                owner: None,
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
            owner: None,
        };
        Ok((record, false))
    }

    /// Makes every copied file and new directory durable (one `syncfs`) and
    /// records the tree, given every file's outcome in `files`' order.
    pub(super) fn finish(self, copied: Vec<Option<(FileRecord, bool)>>) -> Result<ChromaRecord> {
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
            owner: None,
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
        owner: None,
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
