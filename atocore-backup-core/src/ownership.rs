//! Owner, group and mode: read from live files when they are captured, and
//! given to the files a restore writes in their place, so a non-root service
//! can still write its own runtime after a root restore.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use camino::Utf8Path;
use fs_err as fs;

use crate::error::{Error, Result};
use crate::manifest::Ownership;

/// The owner, group and permission bits of `path` (not following a symlink),
/// or `None` when nothing is there.
pub(crate) fn ownership_of(path: &Utf8Path) -> Result<Option<Ownership>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(Ownership {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
        })),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Gives `path` the owner, group and mode of `owner`. The owner is changed
/// only where it differs, so a non-root restore of files it already owns
/// never needs a privilege it lacks.
pub(crate) fn apply_ownership(path: &Utf8Path, owner: &Ownership) -> Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.uid() != owner.uid || meta.gid() != owner.gid {
        std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid)).map_err(|source| {
            Error::Io(std::io::Error::new(
                source.kind(),
                format!("cannot give `{path}` owner {}:{}: {source}", owner.uid, owner.gid),
            ))
        })?;
    }
    // After the chown, which clears set-id bits.
    if meta.mode() & 0o7777 != owner.mode || meta.uid() != owner.uid {
        fs::set_permissions(path, std::fs::Permissions::from_mode(owner.mode))?;
    }
    Ok(())
}

/// Sets the permission bits of everything under `root` (itself included,
/// symlinks never followed): `dir_mode` for directories, `file_mode` for
/// files, leaving alone any file `keep` says belongs to someone else.
pub(crate) fn restrict_tree(
    root: &Utf8Path,
    dir_mode: u32,
    file_mode: u32,
    keep: &dyn Fn(&std::fs::Metadata) -> bool,
) -> Result<()> {
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        fs::set_permissions(&dir, std::fs::Permissions::from_mode(dir_mode))?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = crate::durable::utf8(entry.path())?;
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() && meta.mode() & 0o7777 != file_mode && !keep(&meta) {
                fs::set_permissions(&path, std::fs::Permissions::from_mode(file_mode))?;
            }
        }
    }
    Ok(())
}
