//! Replacing the chroma tree whole: never a mix of old and new files.
//!
//! The new tree is built and verified beside the old one, then exchanged with
//! it in one `renameat2(RENAME_EXCHANGE)`. A directory that cannot be renamed
//! (a Docker bind mount answers `EBUSY`) gets the new tree staged inside it
//! and its entries swapped, so its own inode never changes.

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;

use crate::durable::{
    CopyFailure, FilesystemFlush, Progress, copy_hashed_unflushed, fsync_dir, rename_durably,
};
use crate::error::{Error, Result};
use crate::execute::refuse_symlink;
use crate::faults::{crash_point, injected};
use crate::leftovers::{INNER_OLD, INNER_STAGING, chroma_old_beside, chroma_staging_beside};
use crate::manifest::Ownership;
use crate::manifest::{ChromaRecord, FileRecord};
use crate::ownership::{apply_ownership, ownership_of};
use crate::paths::parent_or_dot;
use crate::plan::{Chown, ChromaSwap, resolve_owner};
use crate::tree::walk_tree;
use crate::validate::resolve_inside;

/// Builds a verified copy of the backup's chroma tree at `staging`.
fn build_chroma_tree(
    from: &Utf8Path,
    staging: &Utf8Path,
    record: &ChromaRecord,
    progress: &dyn Progress,
) -> Result<()> {
    let tree = StagingTree::create(staging, record)?;
    for file in &record.files {
        let source = resolve_inside(from, &file.path).map_err(|problem| {
            Error::Io(std::io::Error::other(format!(
                "chroma file `{from}/{}`: {problem}",
                file.path
            )))
        })?;
        let target = tree.path_of(file);
        let (_, actual) = copy_hashed_unflushed(
            &source,
            &target,
            file.checksum.algorithm(),
            progress,
            tree.flush(),
        )
        .map_err(CopyFailure::into_error)?;
        if actual != file.checksum {
            return Err(Error::ChecksumMismatch {
                path: source,
                expected: file.checksum.to_string(),
                actual: actual.to_string(),
            });
        }
        tree.finish_file(file)?;
    }
    tree.sync()
}

/// A chroma tree being built at a staging path: every directory its files
/// need, created up front, and one flush that makes all of it durable.
pub(crate) struct StagingTree {
    root: Utf8PathBuf,
    flush: FilesystemFlush,
}

impl StagingTree {
    /// Creates `root` afresh (removing any leftover) with every directory
    /// the record's files need.
    pub(crate) fn create(root: &Utf8Path, record: &ChromaRecord) -> Result<StagingTree> {
        if root.symlink_metadata().is_ok() {
            fs::remove_dir_all(root)?;
        }
        fs::create_dir(root)?;
        let mut made = std::collections::HashSet::new();
        for file in &record.files {
            let parent = parent_or_dot(&root.join(&file.path)).to_owned();
            if made.insert(parent.clone()) {
                fs::create_dir_all(&parent)?;
            }
        }
        Ok(StagingTree {
            flush: FilesystemFlush::begin(root)?,
            root: root.to_owned(),
        })
    }

    /// The flush that makes the copied files durable.
    pub(crate) fn flush(&self) -> &FilesystemFlush {
        &self.flush
    }

    /// Where `file` goes.
    pub(crate) fn path_of(&self, file: &FileRecord) -> Utf8PathBuf {
        self.root.join(&file.path)
    }

    /// After `file` is copied and verified: gives it its recorded mtime.
    pub(crate) fn finish_file(&self, file: &FileRecord) -> Result<()> {
        match file.source_mtime_ns {
            Some(mtime_ns) => restore_mtime(&self.path_of(file), mtime_ns),
            None => Ok(()),
        }
    }

    /// Makes every file and directory of the tree durable, the staging
    /// directory's own entry in its parent included: one `syncfs`.
    pub(crate) fn sync(self) -> Result<()> {
        self.flush.finish()
    }
}

/// Gives a restored file the mtime its source had when backed up, as `cp -p`
/// and `tar` do: the next backup then finds it unchanged (same size, mtime
/// and checksum as recorded) and shares it instead of copying it again.
fn restore_mtime(path: &Utf8Path, mtime_ns: i64) -> Result<()> {
    // Before 1970: leave the copy's own mtime; nothing depends on it.
    let Ok(since_epoch) = u64::try_from(mtime_ns) else {
        return Ok(());
    };
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(since_epoch);
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_modified(mtime)?;
    Ok(())
}

fn is_mount_like(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == rustix::io::Errno::BUSY.raw_os_error() || code == rustix::io::Errno::XDEV.raw_os_error()
    )
}

/// Builds the verified new tree beside `to`, where [`restore_chroma`] swaps
/// it in; nothing live changes.
fn stage_chroma(
    from: &Utf8Path,
    to: &Utf8Path,
    record: &ChromaRecord,
    progress: &dyn Progress,
) -> Result<Utf8PathBuf> {
    refuse_symlink(to)?;
    let staging = chroma_staging_beside(to);
    match build_chroma_tree(from, &staging, record, progress) {
        Ok(()) => Ok(staging),
        Err(error) => {
            let _ = fs::remove_dir_all(&staging);
            Err(error)
        }
    }
}

/// Who owns the restored tree: its root as planned, and an explicit owner
/// for everything inside when one was given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnersOfTree {
    pub root: Option<Ownership>,
    pub chown: Option<Chown>,
}

/// Gives every entry of the new tree at `staging` the owner, group and mode
/// of the entry it replaces in `live`, or, new, its recorded mode and the
/// owner of the tree's root (see `resolve_owner`); the root itself gets
/// `owners.root` unless `skip_root` (a mount point keeps its own).
fn adopt_owners(
    staging: &Utf8Path,
    live: &Utf8Path,
    record: &ChromaRecord,
    owners: OwnersOfTree,
    skip_root: bool,
) -> Result<()> {
    let Some(root) = owners.root else {
        return Ok(());
    };
    // One lookup per entry: a tree holds thousands of files.
    let recorded_owners: std::collections::HashMap<&str, Ownership> = record
        .files
        .iter()
        .filter_map(|file| Some((file.path.as_str(), file.owner?)))
        .collect();
    for entry in walk_tree(staging)? {
        if entry.relative == INNER_STAGING || entry.relative == INNER_OLD {
            continue;
        }
        let recorded = recorded_owners.get(entry.relative.as_str()).copied();
        let replaced = ownership_of(&live.join(&entry.relative))?;
        let owner = resolve_owner(replaced, Some(root), recorded, owners.chown, entry.is_dir);
        if let Some(owner) = owner {
            apply_ownership(&staging.join(&entry.relative), &owner)?;
        }
    }
    if !skip_root {
        apply_ownership(staging, &root)?;
    }
    Ok(())
}

/// Replaces the chroma tree with the one `stage_chroma` built (`staged`), or
/// builds it now; returns how it was done.
pub(crate) fn restore_chroma(
    from: &Utf8Path,
    to: &Utf8Path,
    record: &ChromaRecord,
    swap: ChromaSwap,
    owners: OwnersOfTree,
    staged: Option<Utf8PathBuf>,
    progress: &dyn Progress,
) -> Result<&'static str> {
    refuse_symlink(to)?;
    if swap == ChromaSwap::SwapEntries {
        if let Some(staged) = staged {
            fs::remove_dir_all(staged)?;
        }
        swap_entries(from, to, record, owners, progress)?;
        return Ok("swapping entries inside the mount point");
    }
    let old = chroma_old_beside(to);
    if old.symlink_metadata().is_ok() {
        fs::remove_dir_all(&old)?;
    }
    let staging = match staged {
        Some(staged) => staged,
        None => stage_chroma(from, to, record, progress)?,
    };
    adopt_owners(&staging, to, record, owners, false)?;
    fsync_dir(&staging)?;
    crash_point("restore.chroma_staged");
    if !to.exists() {
        rename_durably(&staging, to)?;
        return Ok("renaming the new tree into place");
    }
    match exchange(&staging, to) {
        Ok(()) => {
            fsync_dir(parent_or_dot(to))?;
            crash_point("restore.chroma_exchanged");
            // After the exchange `staging` holds the old tree.
            fs::remove_dir_all(&staging)?;
            fsync_dir(parent_or_dot(to))?;
            Ok("exchanging the new tree with the old one")
        }
        Err(error) if is_mount_like(&error) => {
            fs::remove_dir_all(&staging)?;
            swap_entries(from, to, record, owners, progress)?;
            Ok("swapping entries (the directory could not be renamed)")
        }
        // A filesystem without RENAME_EXCHANGE: two renames, with an instant
        // between them when `to` is absent; the restore marker covers it and
        // `list` names the old tree if a crash lands there.
        Err(error) if error.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
            fs::rename(to, &old)?;
            rename_durably(&staging, to)?;
            fs::remove_dir_all(&old)?;
            fsync_dir(parent_or_dot(to))?;
            Ok("renaming the old tree away and the new one in")
        }
        Err(error) => Err(Error::Io(std::io::Error::new(
            error.kind(),
            format!("cannot swap `{staging}` into `{to}`: {error}"),
        ))),
    }
}

/// Atomically exchanges two directories (`renameat2(RENAME_EXCHANGE)`), so
/// `to` is at every instant either the complete old tree or the complete new one.
fn exchange(staging: &Utf8Path, to: &Utf8Path) -> std::io::Result<()> {
    if injected("chroma-rename-ebusy") {
        return Err(std::io::Error::from_raw_os_error(
            rustix::io::Errno::BUSY.raw_os_error(),
        ));
    }
    if injected("chroma-exchange-unsupported") {
        return Err(std::io::Error::from_raw_os_error(
            rustix::io::Errno::INVAL.raw_os_error(),
        ));
    }
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        staging.as_std_path(),
        rustix::fs::CWD,
        to.as_std_path(),
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(std::io::Error::from)
}

/// For a directory that cannot itself be renamed (a bind mount): stage the
/// new tree inside it, move the old entries into an inner `old` directory,
/// move the new ones up, then delete the old. The directory's inode never
/// changes, and the restore marker covers the instants in between.
fn swap_entries(
    from: &Utf8Path,
    to: &Utf8Path,
    record: &ChromaRecord,
    owners: OwnersOfTree,
    progress: &dyn Progress,
) -> Result<()> {
    let staging = to.join(INNER_STAGING);
    let old = to.join(INNER_OLD);
    if old.symlink_metadata().is_ok() {
        fs::remove_dir_all(&old)?;
    }
    build_chroma_tree(from, &staging, record, progress)?;
    adopt_owners(&staging, to, record, owners, true)?;
    fs::create_dir(&old)?;
    for entry in walk_top_level(to)? {
        if entry == INNER_STAGING || entry == INNER_OLD {
            continue;
        }
        fs::rename(to.join(&entry), old.join(&entry))?;
    }
    fsync_dir(&old)?;
    fsync_dir(to)?;
    crash_point("restore.chroma_entries_moved_aside");
    for entry in walk_top_level(&staging)? {
        fs::rename(staging.join(&entry), to.join(&entry))?;
    }
    fsync_dir(to)?;
    fs::remove_dir(&staging)?;
    fs::remove_dir_all(&old)?;
    fsync_dir(to)?;
    Ok(())
}

fn walk_top_level(dir: &Utf8Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
