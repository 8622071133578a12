//! Observing the world for the restore planner. Only reads.

use std::os::unix::fs::MetadataExt;

use camino::Utf8Path;
use fs_err as fs;

use crate::error::Result;
use crate::marker::RestoreMarker;
use crate::ownership::ownership_of;
use crate::paths::{RuntimePaths, parent_or_dot};
use crate::plan::{GateCheck, RestoreFacts, RestoreTargets, Sidecar, TargetOwners, sidecar};
use crate::tree::walk_tree;

/// Gathers [`RestoreFacts`] for restoring the snapshot at `backup_path` into
/// `paths`; `gates` are what the gates found (enforced or previewed).
///
/// # Errors
/// I/O errors naming the path that could not be read.
pub fn observe_restore(
    paths: &RuntimePaths,
    backup_path: &Utf8Path,
    gates: Vec<GateCheck>,
) -> Result<RestoreFacts> {
    let live_db_exists = paths.db_path.is_file();
    let live_chroma_exists = paths.chroma_dir.is_dir();
    let mut sidecars_present = Vec::new();
    for suffix in ["-wal", "-shm"] {
        let path = sidecar(&paths.db_path, suffix);
        if let Ok(meta) = fs::symlink_metadata(&path) {
            sidecars_present.push(Sidecar {
                path,
                size_bytes: meta.len(),
            });
        }
    }
    Ok(RestoreFacts {
        backup_path: backup_path.to_owned(),
        targets: RestoreTargets {
            db_path: paths.db_path.clone(),
            chroma_dir: paths.chroma_dir.clone(),
            registry_path: paths.registry_path.clone(),
        },
        marker_path: paths.restore_marker_path(),
        interrupted_restore: RestoreMarker::read(paths)?,
        live_db_exists,
        live_db_bytes: file_size(&paths.db_path)? + file_size(&sidecar(&paths.db_path, "-wal"))?,
        live_registry_bytes: file_size(&paths.registry_path)?,
        live_chroma_bytes: if live_chroma_exists {
            tree_size(&paths.chroma_dir)?
        } else {
            0
        },
        live_chroma_exists,
        sidecars_present,
        available_bytes: available_bytes(paths)?,
        chroma_is_mount_point: live_chroma_exists && is_mount_point(&paths.chroma_dir)?,
        leftovers: crate::leftovers::describe(paths)?,
        symlinked_targets: [&paths.db_path, &paths.registry_path, &paths.chroma_dir]
            .into_iter()
            .filter(|path| fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink()))
            .cloned()
            .collect(),
        gates,
        owners: TargetOwners {
            db: ownership_of(&paths.db_path)?,
            db_dir: ownership_of(paths.db_dir())?,
            registry: ownership_of(&paths.registry_path)?,
            registry_dir: ownership_of(parent_or_dot(&paths.registry_path))?,
            chroma: ownership_of(&paths.chroma_dir)?,
            chroma_parent: ownership_of(parent_or_dot(&paths.chroma_dir))?,
        },
    })
}

fn file_size(path: &Utf8Path) -> Result<u64> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(error.into()),
    }
}

fn tree_size(root: &Utf8Path) -> Result<u64> {
    let mut total = 0;
    for entry in walk_tree(root)? {
        if !entry.is_dir {
            total += fs::symlink_metadata(root.join(&entry.relative))?.len();
        }
    }
    Ok(total)
}

/// The closest existing ancestor, for statvfs on a path not yet created.
fn existing_ancestor(path: &Utf8Path) -> &Utf8Path {
    let mut current = path;
    while !current.exists() {
        match current.parent() {
            Some(parent) if !parent.as_str().is_empty() => current = parent,
            _ => return Utf8Path::new("."),
        }
    }
    current
}

/// Free bytes on the tightest filesystem among those the restore writes to.
pub(crate) fn available_bytes(paths: &RuntimePaths) -> Result<u64> {
    let places = [
        paths.db_dir(),
        parent_or_dot(&paths.registry_path),
        parent_or_dot(&paths.chroma_dir),
        paths.backup_dir.as_path(),
    ];
    let mut smallest = u64::MAX;
    for place in places {
        let dir = existing_ancestor(place);
        let stat = rustix::fs::statvfs(dir.as_std_path()).map_err(|errno| {
            std::io::Error::new(
                std::io::Error::from(errno).kind(),
                format!("cannot read free space of `{dir}`: {errno}"),
            )
        })?;
        smallest = smallest.min(stat.f_bavail.saturating_mul(stat.f_frsize));
    }
    Ok(smallest)
}

/// A directory on another device than its parent is a mount point (for
/// chroma, typically a Docker bind mount) and cannot be renamed.
pub(crate) fn is_mount_point(dir: &Utf8Path) -> Result<bool> {
    let own = fs::symlink_metadata(dir)?;
    let parent_path = match dir.canonicalize_utf8() {
        Ok(canonical) => canonical.parent().map(Utf8Path::to_owned),
        Err(_) => None,
    };
    let Some(parent_path) = parent_path else {
        return Ok(false);
    };
    let parent = fs::metadata(&parent_path)?;
    Ok(own.dev() != parent.dev())
}
