//! The restore marker: proof, on disk, that a restore has not finished.

use camino::Utf8Path;
use fs_err as fs;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::durable::{fsync_dir, remove_if_exists, write_atomic};
use crate::error::{Error, Result};
use crate::paths::RuntimePaths;
use crate::stamp::Stamp;

/// What `<db dir>/.atocore-restore-in-progress` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMarker {
    /// The stamp being restored.
    pub stamp: Stamp,
    /// When the restore started.
    pub started_at: Timestamp,
    /// The restoring process.
    pub pid: u32,
    /// The pre-restore snapshot, once taken: restoring it undoes the restore.
    pub pre_restore_stamp: Option<Stamp>,
}

impl RestoreMarker {
    /// Reads the marker if one exists.
    ///
    /// # Errors
    /// I/O errors other than "not found". A marker that cannot be parsed is
    /// still a marker: it is reported with what can be said about it.
    pub fn read(paths: &RuntimePaths) -> Result<Option<Self>> {
        let path = paths.restore_marker_path();
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(parse_or_placeholder(&bytes, &path))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Error::Io(error)),
        }
    }

    /// Writes (or rewrites) the marker durably.
    pub(crate) fn write(&self, paths: &RuntimePaths) -> Result<()> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        write_atomic(&paths.restore_marker_path(), text.as_bytes())
    }

    /// Removes the marker durably.
    pub(crate) fn remove(paths: &RuntimePaths) -> Result<()> {
        if remove_if_exists(&paths.restore_marker_path())? {
            fsync_dir(paths.db_dir())?;
        }
        Ok(())
    }
}

fn parse_or_placeholder(bytes: &[u8], path: &Utf8Path) -> RestoreMarker {
    serde_json::from_slice(bytes).unwrap_or_else(|_| {
        let modified = fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|time| Timestamp::try_from(time).ok())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        RestoreMarker {
            // An unreadable marker still blocks the service; name it as
            // unknown rather than hide it.
            stamp: Stamp::at(Timestamp::UNIX_EPOCH),
            started_at: modified,
            pid: 0,
            pre_restore_stamp: None,
        }
    })
}
