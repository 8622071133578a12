//! Command-line syntax. clap types stay in this module and `main`.

use atocore_backup_core::{PathOverrides, Stamp};
use camino::Utf8PathBuf;
use clap::{Args, Parser, Subcommand};

/// Back up, validate and restore the atocore runtime (db, chroma, registry).
#[derive(Debug, Parser)]
#[command(name = "atocore-backup", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the runtime and the backups live; flag, then environment, then default.
#[derive(Debug, Args)]
pub struct PathArgs {
    /// Runtime data directory [default: ./data]
    #[arg(long, env = "ATOCORE_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<Utf8PathBuf>,
    /// SQLite database [default: <data-dir>/db/atocore.db]
    #[arg(long, env = "ATOCORE_DB_PATH", global = true, value_name = "PATH")]
    pub db_path: Option<Utf8PathBuf>,
    /// Chroma directory [default: <data-dir>/chroma]
    #[arg(long, env = "ATOCORE_CHROMA_DIR", global = true, value_name = "DIR")]
    pub chroma_dir: Option<Utf8PathBuf>,
    /// Project registry JSON [default: <data-dir>/config/project-registry.json]
    #[arg(long, env = "ATOCORE_REGISTRY_PATH", global = true, value_name = "PATH")]
    pub registry_path: Option<Utf8PathBuf>,
    /// Backup directory [default: ./backups]
    #[arg(long, env = "ATOCORE_BACKUP_DIR", global = true, value_name = "DIR")]
    pub backup_dir: Option<Utf8PathBuf>,
}

impl PathArgs {
    pub fn into_overrides(self) -> PathOverrides {
        PathOverrides {
            data_dir: self.data_dir,
            db_path: self.db_path,
            chroma_dir: self.chroma_dir,
            registry_path: self.registry_path,
            backup_dir: self.backup_dir,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a backup of the runtime.
    Create {
        /// Also copy the Chroma directory.
        #[arg(long)]
        include_chroma: bool,
        /// Print the BackupManifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List backups, newest first.
    List {
        /// Print `{"backups": [...]}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a backup's checksums, sizes, registry JSON and db integrity.
    Validate {
        /// The backup to validate.
        #[arg(value_parser = parse_stamp, required_unless_present = "all", conflicts_with = "all")]
        stamp: Option<Stamp>,
        /// Validate every backup.
        #[arg(long)]
        all: bool,
        /// Print the ValidationReport as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup over the runtime (the service must be stopped).
    Restore {
        /// The backup to restore.
        #[arg(value_parser = parse_stamp)]
        stamp: Stamp,
        /// Confirm the atocore service is stopped.
        #[arg(long)]
        confirm_service_stopped: bool,
        /// Restore chroma (the default when the backup has it).
        #[arg(long, conflicts_with = "no_chroma")]
        include_chroma: bool,
        /// Leave the live chroma directory as it is.
        #[arg(long)]
        no_chroma: bool,
        /// Skip the pre-restore snapshot (the restore cannot then be undone).
        #[arg(long)]
        no_pre_restore_snapshot: bool,
        /// Own every restored file and directory by UID:GID instead of the
        /// owner of what it replaces.
        #[arg(long, value_name = "UID:GID")]
        chown: Option<atocore_backup_core::Chown>,
        /// Print the plan and change nothing; needs no confirmation.
        #[arg(long)]
        dry_run: bool,
        /// Print the RestoreReport (or, with --dry-run, the RestorePlan) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove backups that a retention policy does not keep.
    Prune {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print the plan and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the PrunePlan (or, when executed, the PruneReport) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete one backup.
    Delete {
        /// The backup to delete.
        #[arg(value_parser = parse_stamp)]
        stamp: Stamp,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the whole restore drill on a scratch runtime it seeds itself.
    Drill {
        /// Where to build the scratch runtime [default: a new temp directory].
        #[arg(long, value_name = "DIR")]
        scratch_dir: Option<Utf8PathBuf>,
        /// Keep the scratch directory afterwards.
        #[arg(long)]
        keep: bool,
        /// Print the drill report as JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// Whether `--json` was asked for: failures then print JSON too.
    pub fn json(&self) -> bool {
        match self {
            Command::Create { json, .. }
            | Command::List { json }
            | Command::Validate { json, .. }
            | Command::Restore { json, .. }
            | Command::Prune { json, .. }
            | Command::Delete { json, .. }
            | Command::Drill { json, .. } => *json,
        }
    }
}

/// restic-style keep rules; at least one is required.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Keep the newest N backups.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every backup newer than this (e.g. `36h`, `14d`, `2w`).
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub keep_within: Option<jiff::Span>,
    /// Keep pre-restore snapshots newer than this.
    #[arg(long, value_name = "DURATION", value_parser = parse_span, default_value = "7d")]
    pub keep_pre_restore_within: jiff::Span,
}

impl PolicyArgs {
    pub fn into_policy(self) -> atocore_backup_core::RetentionPolicy {
        atocore_backup_core::RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            keep_pre_restore_within: self.keep_pre_restore_within,
        }
    }
}

fn parse_span(text: &str) -> Result<jiff::Span, String> {
    text.parse::<jiff::Span>()
        .map_err(|error| format!("`{text}` is not a duration such as `36h`, `14d` or `2w`: {error}"))
}

fn parse_stamp(text: &str) -> Result<Stamp, String> {
    text.parse::<Stamp>().map_err(|error| error.to_string())
}
