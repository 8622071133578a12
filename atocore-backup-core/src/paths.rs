//! Where the runtime and its backups live.

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

/// Name of the advisory lock a running atocore server holds, beside the db.
pub const SERVICE_LOCK_NAME: &str = ".atocore-service.lock";
/// Name of the marker a restore keeps beside the db while it runs.
pub const RESTORE_MARKER_NAME: &str = ".atocore-restore-in-progress";

/// The runtime's parts and the backup directory, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimePaths {
    /// The live SQLite database.
    pub db_path: Utf8PathBuf,
    /// The Chroma vector-store directory.
    pub chroma_dir: Utf8PathBuf,
    /// The project-registry JSON file (may be absent).
    pub registry_path: Utf8PathBuf,
    /// Where snapshots and the backup lock live.
    pub backup_dir: Utf8PathBuf,
    /// Whether the registry path was given explicitly: then its absence is a
    /// mistake to report, not "no registry yet".
    #[serde(default)]
    pub registry_required: bool,
}

/// Explicit values, each already resolved from flag-then-environment by the
/// adapter; `None` means "use the contract's default".
#[derive(Debug, Clone, Default)]
pub struct PathOverrides {
    /// `--data-dir` / `ATOCORE_DATA_DIR`.
    pub data_dir: Option<Utf8PathBuf>,
    /// `--db-path` / `ATOCORE_DB_PATH`.
    pub db_path: Option<Utf8PathBuf>,
    /// `--chroma-dir` / `ATOCORE_CHROMA_DIR`.
    pub chroma_dir: Option<Utf8PathBuf>,
    /// `--registry-path` / `ATOCORE_REGISTRY_PATH`.
    pub registry_path: Option<Utf8PathBuf>,
    /// `--backup-dir` / `ATOCORE_BACKUP_DIR`.
    pub backup_dir: Option<Utf8PathBuf>,
}

impl RuntimePaths {
    /// Applies the contract's defaults to whatever was not given.
    pub fn resolve(overrides: PathOverrides) -> Self {
        let data_dir = overrides.data_dir.unwrap_or_else(|| "./data".into());
        RuntimePaths {
            registry_required: overrides.registry_path.is_some(),
            db_path: overrides
                .db_path
                .unwrap_or_else(|| data_dir.join("db/atocore.db")),
            chroma_dir: overrides.chroma_dir.unwrap_or_else(|| data_dir.join("chroma")),
            registry_path: overrides
                .registry_path
                .unwrap_or_else(|| data_dir.join("config/project-registry.json")),
            backup_dir: overrides.backup_dir.unwrap_or_else(|| "./backups".into()),
        }
    }

    /// The paths of a runtime laid out under `root` the default way, with its
    /// backups in `root/backups`: what the drill and tests use.
    pub fn under(root: &Utf8Path) -> Self {
        RuntimePaths::resolve(PathOverrides {
            data_dir: Some(root.join("data")),
            backup_dir: Some(root.join("backups")),
            ..PathOverrides::default()
        })
    }

    /// The directory holding the db, its sidecars, the service lock and the marker.
    pub fn db_dir(&self) -> &Utf8Path {
        parent_or_dot(&self.db_path)
    }

    /// `<db dir>/.atocore-service.lock`.
    pub fn service_lock_path(&self) -> Utf8PathBuf {
        self.db_dir().join(SERVICE_LOCK_NAME)
    }

    /// `<db dir>/.atocore-restore-in-progress`.
    pub fn restore_marker_path(&self) -> Utf8PathBuf {
        self.db_dir().join(RESTORE_MARKER_NAME)
    }

    /// `<backup-dir>/snapshots`.
    pub fn snapshots_dir(&self) -> Utf8PathBuf {
        self.backup_dir.join("snapshots")
    }

    /// `<backup-dir>/.lock`.
    pub fn backup_lock_path(&self) -> Utf8PathBuf {
        self.backup_dir.join(".lock")
    }
}

/// The parent directory, with `.` for a bare file name so joins stay relative.
pub(crate) fn parent_or_dot(path: &Utf8Path) -> &Utf8Path {
    match path.parent() {
        Some(parent) if !parent.as_str().is_empty() => parent,
        _ => Utf8Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let paths = RuntimePaths::resolve(PathOverrides::default());
        assert_eq!(paths.db_path, "./data/db/atocore.db");
        assert_eq!(paths.chroma_dir, "./data/chroma");
        assert_eq!(paths.registry_path, "./data/config/project-registry.json");
        assert_eq!(paths.backup_dir, "./backups");
        assert_eq!(paths.service_lock_path(), "./data/db/.atocore-service.lock");
    }

    #[test]
    fn explicit_paths_win_over_the_data_dir() {
        let paths = RuntimePaths::resolve(PathOverrides {
            data_dir: Some("/srv".into()),
            db_path: Some("live.db".into()),
            ..PathOverrides::default()
        });
        assert_eq!(paths.db_path, "live.db");
        assert_eq!(paths.db_dir(), ".");
        assert_eq!(paths.chroma_dir, "/srv/chroma");
    }
}
