//! The one error type of the core library.
//!
//! Every variant names the path or stamp at fault. Callers map variants to exit
//! codes or HTTP statuses at their edge; [`Error::class`] groups them the way
//! the contract does so both adapters agree.

use camino::Utf8PathBuf;

use crate::lock::LockHolder;
use crate::marker::RestoreMarker;
use crate::plan::RestoreRefusal;

/// Result alias for the core library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stamp argument did not match `^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$`.
    #[error("invalid stamp `{stamp}`: expected UTC `YYYYMMDDTHHMMSSZ` with an optional `-N` suffix")]
    InvalidStamp {
        /// The rejected text, escaped for display.
        stamp: String,
    },

    /// No snapshot directory exists for the stamp.
    #[error("no such backup: `{stamp}` does not exist in `{dir}`{}", nearest_text(.nearest))]
    BackupNotFound {
        /// The stamp asked for.
        stamp: String,
        /// The snapshots directory searched.
        dir: Utf8PathBuf,
        /// The existing stamps closest in time to it, closest first.
        nearest: Vec<String>,
    },

    /// A file-system operation failed; the `fs_err` source names the path.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// A path is not UTF-8, so it cannot be recorded in a manifest.
    #[error("path `{path}` is not valid UTF-8")]
    NonUtf8Path {
        /// The path, lossily converted for display.
        path: String,
    },

    /// The live database does not exist.
    #[error("database `{path}` does not exist")]
    DbMissing {
        /// The configured database path.
        path: Utf8PathBuf,
    },

    /// SQLite reported an error on a file.
    #[error("SQLite failed on `{path}`: {source}")]
    Sqlite {
        /// The database file.
        path: Utf8PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },

    /// The online backup failed; SQLite does not say which side, so both are named.
    #[error("online backup of `{from}` into `{to}` failed: {source}")]
    DbBackup {
        /// The database being copied.
        from: Utf8PathBuf,
        /// The copy being written.
        to: Utf8PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },

    /// SQLite could not open a WAL-mode source for reading.
    #[error(
        "cannot open database `{path}` for reading: SQLite must find or create `{path}-wal` and `{path}-shm` beside a WAL-mode database, so the backup needs write access to its directory"
    )]
    DbSourceUnopenable {
        /// The database.
        path: Utf8PathBuf,
    },

    /// The online backup could not finish because the source stayed locked.
    #[error("database `{path}` stayed locked for the whole online backup; try again when its writers pause")]
    DbBackupBusy {
        /// The database being copied.
        path: Utf8PathBuf,
    },

    /// A registry path given explicitly names nothing.
    #[error(
        "registry `{path}` does not exist; it was given explicitly (--registry-path or ATOCORE_REGISTRY_PATH), so it is not treated as \"no registry yet\""
    )]
    RegistryMissing {
        /// The registry path given.
        path: Utf8PathBuf,
    },

    /// The registry is not valid JSON.
    #[error("registry `{path}` is not valid JSON: {source}")]
    RegistryJson {
        /// The registry file.
        path: Utf8PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },

    /// A manifest could not be read as JSON of the expected shape.
    #[error("manifest `{path}` cannot be parsed: {source}")]
    ManifestParse {
        /// The manifest file.
        path: Utf8PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },

    /// A manifest was written by a newer tool.
    #[error("manifest `{path}` has format_version {found}, newer than the {supported} this tool reads")]
    ManifestFutureVersion {
        /// The manifest file.
        path: Utf8PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build understands.
        supported: u32,
    },

    /// A manifest records a path that could escape its snapshot directory.
    #[error("manifest `{path}` records unsafe path `{entry}`: paths must be relative and free of `..`")]
    UnsafeManifestPath {
        /// The manifest file.
        path: Utf8PathBuf,
        /// The offending entry.
        entry: String,
    },

    /// A checksum string names an algorithm this build does not know.
    #[error("checksum `{value}` is not `blake3:<hex>` or `sha256:<hex>`")]
    BadChecksum {
        /// The rejected text.
        value: String,
    },

    /// A copied file does not match the checksum its manifest records.
    #[error("`{path}` does not match its recorded checksum: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The file checked.
        path: Utf8PathBuf,
        /// The recorded checksum.
        expected: String,
        /// The checksum of the bytes read.
        actual: String,
    },

    /// A chroma file kept changing while it was copied.
    #[error(
        "chroma file `{path}` changed during each of {attempts} copy attempts; stop the writer and retry"
    )]
    ChromaUnstable {
        /// The source file.
        path: Utf8PathBuf,
        /// How many copies were tried.
        attempts: u32,
    },

    /// The db lives inside the chroma directory, so a chroma copy would read
    /// the live db as a plain file.
    #[error(
        "the database `{db}` is inside the chroma directory `{chroma}`; give them separate paths, or the chroma copy would read the live database as a plain file"
    )]
    DbInsideChroma {
        /// The database path.
        db: Utf8PathBuf,
        /// The chroma directory.
        chroma: Utf8PathBuf,
    },

    /// A symlink where only real files and directories are allowed.
    #[error("`{path}` is a symlink; symlinks are refused, not followed")]
    SymlinkRefused {
        /// The symlink.
        path: Utf8PathBuf,
    },

    /// Something other than a regular file or directory.
    #[error("`{path}` is not a regular file or directory")]
    UnsupportedFileType {
        /// The entry.
        path: Utf8PathBuf,
    },

    /// Another backup operation holds `<backup-dir>/.lock`.
    #[error("backup directory lock `{path}` is held by {holder}")]
    Busy {
        /// The lock file.
        path: Utf8PathBuf,
        /// Who holds it, as recorded in the lock file.
        holder: LockHolder,
    },

    /// The atocore service (or an HTTP admin server) holds the service lock.
    #[error("service lock `{path}` is held by {holder}; stop the atocore service first")]
    ServiceRunning {
        /// The service lock file.
        path: Utf8PathBuf,
        /// Who holds it, as its holder recorded, or "a running process".
        holder: String,
    },

    /// Other processes have the live db or its sidecars open.
    #[error("database `{path}` is open in another process: {}; stop every process using it{}", .users.join("; "), .partial.as_deref().map(|note| format!(" ({note})")).unwrap_or_default())]
    DbOpenElsewhere {
        /// The live database.
        path: Utf8PathBuf,
        /// Each user, as one phrase naming its pid, command line and file.
        users: Vec<String>,
        /// What the check could not see, when it was partial.
        partial: Option<String>,
    },

    /// The service lock was asked for while a restore is unfinished.
    #[error("restore marker `{path}` exists: the restore of `{}` started at {} did not finish; run `atocore-backup restore` again before starting the service", .marker.stamp, .marker.started_at)]
    RestoreInProgress {
        /// The marker file.
        path: Utf8PathBuf,
        /// What the marker records.
        marker: RestoreMarker,
    },

    /// A restore was asked for without confirming the service is stopped.
    #[error(
        "restore of `{stamp}` refused: confirm the atocore service is stopped with --confirm-service-stopped"
    )]
    NotConfirmed {
        /// The stamp to restore.
        stamp: String,
    },

    /// Another connection holds a transaction on the live database.
    #[error("database `{path}` is in use (BEGIN EXCLUSIVE failed: {reason}); stop every process using it")]
    DbInUse {
        /// The live database.
        path: Utf8PathBuf,
        /// SQLite's answer.
        reason: String,
    },

    /// The planner refused the restore.
    #[error("restore of `{stamp}` refused: {refusal}")]
    Refused {
        /// The stamp to restore.
        stamp: String,
        /// Why.
        refusal: RestoreRefusal,
    },

    /// The prune planner refused.
    #[error("prune refused: {0}")]
    PruneRefused(crate::prune::PruneRefusal),

    /// The backup failed validation, so it cannot be restored.
    #[error("backup `{stamp}` is invalid: {first_error}")]
    InvalidBackup {
        /// The stamp.
        stamp: String,
        /// The first validation error.
        first_error: String,
    },
}

fn nearest_text(nearest: &[String]) -> String {
    match nearest {
        [] => String::new(),
        stamps => format!(
            "; the nearest are {}",
            stamps
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// How the contract classifies a failure: exit codes and HTTP statuses follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The operation failed (I/O, SQLite, integrity): exit 1, HTTP 500.
    Failed,
    /// Bad input from the caller (a malformed stamp): exit 2, HTTP 400.
    BadInput,
    /// No such backup: exit 3 from the CLI (as for an invalid one), HTTP 404.
    NotFound,
    /// The backup is invalid: exit 3.
    InvalidBackup,
    /// A safety gate refused: exit 4.
    Refused,
    /// Another backup operation holds the lock: exit 5, HTTP 409.
    Busy,
}

impl Error {
    /// The contract's class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidStamp { .. } | Error::PruneRefused(_) => ErrorClass::BadInput,
            Error::BackupNotFound { .. } => ErrorClass::NotFound,
            Error::ManifestParse { .. }
            | Error::ManifestFutureVersion { .. }
            | Error::UnsafeManifestPath { .. }
            | Error::InvalidBackup { .. } => ErrorClass::InvalidBackup,
            Error::ServiceRunning { .. }
            | Error::RestoreInProgress { .. }
            | Error::NotConfirmed { .. }
            | Error::DbInUse { .. }
            | Error::DbOpenElsewhere { .. }
            | Error::Refused { .. }
            | Error::DbInsideChroma { .. } => ErrorClass::Refused,
            Error::Busy { .. } => ErrorClass::Busy,
            Error::Io(_)
            | Error::NonUtf8Path { .. }
            | Error::DbMissing { .. }
            | Error::Sqlite { .. }
            | Error::DbBackup { .. }
            | Error::DbSourceUnopenable { .. }
            | Error::DbBackupBusy { .. }
            | Error::RegistryJson { .. }
            | Error::RegistryMissing { .. }
            | Error::BadChecksum { .. }
            | Error::ChecksumMismatch { .. }
            | Error::ChromaUnstable { .. }
            | Error::SymlinkRefused { .. }
            | Error::UnsupportedFileType { .. } => ErrorClass::Failed,
        }
    }

    /// The message with every source appended: `fs_err` keeps the OS error in
    /// `source()`, and an operator needs both the path and the reason.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }
}

pub(crate) fn sqlite_error(path: &camino::Utf8Path) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sqlite {
        path: path.to_owned(),
        source,
    }
}
