//! Back up, validate and restore the runtime state of the atocore service: a
//! hot SQLite database in WAL mode, a Chroma vector-store directory and a JSON
//! project registry.
//!
//! The main types are plain serde data, so every adapter (the CLI, the HTTP
//! admin API, the atocore server itself) serializes the same thing:
//!
//! - [`BackupManifest`]: what a snapshot holds (`backup-metadata.json`).
//! - [`ValidationReport`]: whether a snapshot holds what its manifest says.
//! - [`RestorePlan`]: what a restore would do, computed without touching
//!   anything by the pure [`plan_restore`].
//! - [`RestoreReport`]: the plan plus the outcome of every step.
//!
//! Operations:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use atocore_backup_core::{
//!     CreateOptions, NoProgress, RestoreOptions, RuntimePaths, create_backup, preview_restore,
//!     restore_backup, seed_runtime, validate_backup,
//! };
//!
//! # let scratch = tempfile::tempdir()?;
//! # let root = camino::Utf8Path::from_path(scratch.path()).ok_or("temp dir is not UTF-8")?;
//! // `root/data/...` and `root/backups`, as `--data-dir root/data --backup-dir root/backups`.
//! let paths = RuntimePaths::under(root);
//! seed_runtime(&paths, 100)?; // a small atocore-like runtime to work on
//!
//! let options = CreateOptions { include_chroma: true, ..Default::default() };
//! let manifest = create_backup(&paths, &options, &NoProgress)?;
//! assert!(validate_backup(&paths.backup_dir, &manifest.stamp)?.valid);
//!
//! let options = RestoreOptions { include_chroma: None, pre_restore_snapshot: true, chown: None };
//! let plan = preview_restore(&paths, &manifest.stamp, &options)?; // the dry run: data only
//! assert!(plan.refusing_gate().is_none()); // every safety gate would pass now
//!
//! // With the service stopped (and so its `ServiceLock` released):
//! let report = restore_backup(&paths, &manifest.stamp, &options, true, &NoProgress)?;
//! assert!(report.success);
//! assert!(report.pre_restore_stamp.is_some()); // `restore` that stamp to undo this one
//! # Ok(()) }
//! ```
//!
//! A running atocore server holds a [`ServiceLock`]; restores refuse while it
//! is held, and it cannot be taken while a restore is unfinished.

mod blake3_tree;
mod checksum;
mod chroma_swap;
mod create;
mod db_users;
mod drill;
mod durable;
mod error;
mod execute;
mod faults;
#[cfg(feature = "test-fixtures")]
pub mod fixtures;
mod gates;
mod lazy_copy;
mod leftovers;
mod list;
mod lock;
mod manifest;
mod mapped_chunks;
mod marker;
mod observe;
mod ownership;
mod paths;
mod plan;
mod prune;
mod record_lock;
mod sqlite;
mod sqlite_lazy_vfs;
mod sqlite_vfs;
mod stamp;
mod tree;
mod validate;
mod work_queue;

pub use checksum::{Algorithm, Checksum};
pub use create::{CreateOptions, create_backup};
pub use drill::{DrillReport, DrillStep, MUTATION_MARKER, SEED_SCHEMA_VERSION, run_drill, seed_runtime};
pub use durable::{NoProgress, Progress};
pub use error::{Error, ErrorClass, Result};
pub use execute::{RestoreReport, StepReport, StepStatus, preview_restore, restore_backup};
pub use list::{BackupListing, BackupSummary, list_backups};
pub use lock::{BackupDirLock, LockHolder, ServiceLock};
pub use manifest::{
    B3SUMS_NAME, BackupKind, BackupManifest, ChromaRecord, DbRecord, FORMAT_VERSION, FileRecord,
    MANIFEST_NAME, Ownership, SourcePaths,
};
pub use marker::RestoreMarker;
pub use observe::observe_restore;
pub use paths::{PathOverrides, RuntimePaths};
pub use plan::{
    Chown, ChromaSwap, Gate, GateCheck, GateStatus, PLAN_FORMAT_VERSION, RestoreFacts, RestoreOptions,
    RestorePlan, RestoreRefusal, RestoreStep, RestoreTargets, Sidecar, plan_restore,
};
pub use prune::{
    DeleteReport, KeptBackup, NotCounted, PRUNE_PLAN_FORMAT_VERSION, PreRestoreDecision, PruneCandidate,
    PrunePlan, PruneRefusal, PruneReport, Removal, RemovedBackup, RetentionPolicy,
    default_pre_restore_within, delete_backup, execute_prune, observe_prune, plan_prune, preview_prune,
};
pub use stamp::Stamp;
pub use validate::{AllValidation, Check, ValidationReport, validate_all, validate_backup};
