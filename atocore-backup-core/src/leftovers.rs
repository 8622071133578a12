//! Debris an interrupted restore can leave, and how to name it.
//!
//! Each restore step writes beside its target under a fixed name, so after a
//! crash every half-done piece is at a known path that `list` and the next
//! `restore` can point at.

use camino::{Utf8Path, Utf8PathBuf};

use crate::durable::temp_path_for;
use crate::error::Result;
use crate::paths::{RuntimePaths, parent_or_dot};

/// Purpose tag of the temp file a db or registry is copied to before rename.
pub(crate) const RESTORE_TMP: &str = "restore";

/// `<parent>/.<chroma name>.restore-new`: the new tree built beside the old.
pub(crate) fn chroma_staging_beside(chroma_dir: &Utf8Path) -> Utf8PathBuf {
    beside(chroma_dir, "restore-new")
}

/// `<parent>/.<chroma name>.restore-old`: the old tree after the exchange.
pub(crate) fn chroma_old_beside(chroma_dir: &Utf8Path) -> Utf8PathBuf {
    beside(chroma_dir, "restore-old")
}

/// Inside a chroma mount point: the staged new entries.
pub(crate) const INNER_STAGING: &str = ".atocore-restore-new";
/// Inside a chroma mount point: the old entries moved aside.
pub(crate) const INNER_OLD: &str = ".atocore-restore-old";

fn beside(dir: &Utf8Path, purpose: &str) -> Utf8PathBuf {
    let name = dir.file_name().unwrap_or("chroma");
    parent_or_dot(dir).join(format!(".{name}.{purpose}"))
}

/// Every leftover that exists now, as sentences naming the path and the fix.
pub(crate) fn describe(paths: &RuntimePaths) -> Result<Vec<String>> {
    let candidates = [
        temp_path_for(&paths.db_path, RESTORE_TMP),
        temp_path_for(&paths.registry_path, RESTORE_TMP),
        chroma_staging_beside(&paths.chroma_dir),
        chroma_old_beside(&paths.chroma_dir),
        paths.chroma_dir.join(INNER_STAGING),
        paths.chroma_dir.join(INNER_OLD),
    ];
    Ok(candidates
        .into_iter()
        .filter(|path| path.symlink_metadata().is_ok())
        .map(|path| {
            format!(
                "`{path}` is left from an interrupted restore; run the restore again to finish it (it removes this), or restore the pre-restore snapshot to roll back"
            )
        })
        .collect())
}
