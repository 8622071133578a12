//! Walking a directory tree without ever following a symlink.

use camino::Utf8Path;
use fs_err as fs;

use crate::durable::utf8;
use crate::error::{Error, Result};

/// A file or directory found under a tree root, relative and `/`-separated.
pub(crate) struct TreeEntry {
    pub relative: String,
    pub is_dir: bool,
}

/// Lists a tree, parents before children, sorted; refuses symlinks and
/// anything that is not a file or directory.
pub(crate) fn walk_tree(root: &Utf8Path) -> Result<Vec<TreeEntry>> {
    let mut entries = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(relative_dir) = pending.pop() {
        let dir = if relative_dir.is_empty() {
            root.to_owned()
        } else {
            root.join(&relative_dir)
        };
        let mut children = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = utf8(entry.path())?;
            let file_type = entry.file_type()?;
            let name = path.file_name().unwrap_or_default().to_owned();
            let relative = if relative_dir.is_empty() {
                name
            } else {
                format!("{relative_dir}/{name}")
            };
            if file_type.is_symlink() {
                return Err(Error::SymlinkRefused { path });
            }
            if !file_type.is_dir() && !file_type.is_file() {
                return Err(Error::UnsupportedFileType { path });
            }
            children.push(TreeEntry {
                relative,
                is_dir: file_type.is_dir(),
            });
        }
        children.sort_by(|a, b| a.relative.cmp(&b.relative));
        for child in children.iter().rev().filter(|c| c.is_dir) {
            pending.push(child.relative.clone());
        }
        entries.extend(children);
    }
    entries.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(entries)
}
