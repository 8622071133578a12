//! Retention: which backups to keep, as a pure plan, then removal.
//!
//! The policy has restic's semantics: `keep_last N` keeps the newest N; each
//! period bucket (`keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly`,
//! `keep_yearly`) walks the backups newest first and keeps the newest one of
//! each period until it has kept N periods (periods without a backup do not
//! count); `keep_within` keeps everything newer than `now - duration`. A backup
//! is kept if any rule keeps it, and the plan lists every reason.
//!
//! Safety rules no policy overrides:
//! - the newest valid backup is always kept;
//! - invalid or broken backups never count towards a bucket, and prune never
//!   deletes them: they are listed for an operator to inspect and `delete`;
//! - pre-restore snapshots are governed only by `keep_pre_restore_within`
//!   (default 7 days) and listed separately.
//!
//! [`plan_prune`] is pure: the clock is its `now` parameter.

use camino::Utf8PathBuf;
use fs_err as fs;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

use crate::create::{DELETING_PREFIX, now as clock_now};
use crate::durable::fsync_dir;
use crate::error::{Error, Result};
use crate::lock::BackupDirLock;
use crate::manifest::{BackupKind, BackupManifest};
use crate::paths::RuntimePaths;
use crate::stamp::Stamp;
use crate::validate::resolve_inside;

/// Version of the prune plan's JSON shape.
pub const PRUNE_PLAN_FORMAT_VERSION: u32 = 1;

/// How long pre-restore snapshots are kept unless told otherwise.
pub fn default_pre_restore_within() -> Span {
    Span::new().days(7)
}

/// Which backups to keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Keep the newest N.
    pub keep_last: Option<u32>,
    /// Keep the newest of each of the last N hours that have a backup.
    pub keep_hourly: Option<u32>,
    /// ... days ...
    pub keep_daily: Option<u32>,
    /// ... ISO weeks ...
    pub keep_weekly: Option<u32>,
    /// ... months ...
    pub keep_monthly: Option<u32>,
    /// ... years.
    pub keep_yearly: Option<u32>,
    /// Keep everything newer than `now - keep_within`.
    pub keep_within: Option<Span>,
    /// Keep pre-restore snapshots newer than `now - keep_pre_restore_within`.
    pub keep_pre_restore_within: Span,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            keep_last: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            keep_within: None,
            keep_pre_restore_within: default_pre_restore_within(),
        }
    }
}

impl RetentionPolicy {
    /// Whether any keep rule for regular backups is set; prune refuses an
    /// empty policy rather than delete everything but the newest.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
            && self.keep_within.is_none()
    }
}

/// One backup as prune sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneCandidate {
    /// The directory name (a stamp when the entry is not broken).
    pub stamp: String,
    /// From the manifest; `None` when broken.
    pub created_at: Option<Timestamp>,
    /// From the manifest; `None` when broken.
    pub kind: Option<BackupKind>,
    /// Why the backup does not count, or `None` if it passed the quick check.
    pub problem: Option<String>,
}

/// A backup the plan keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBackup {
    /// Its stamp.
    pub stamp: String,
    /// When it was taken.
    pub created_at: Timestamp,
    /// Its kind.
    pub kind: BackupKind,
    /// Every rule that keeps it, e.g. `daily 2026-11-25`.
    pub reasons: Vec<String>,
}

/// A backup the plan removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedBackup {
    /// Its stamp.
    pub stamp: String,
    /// When it was taken.
    pub created_at: Timestamp,
    /// Its kind.
    pub kind: BackupKind,
}

/// What happens to a pre-restore snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreRestoreDecision {
    /// Its stamp.
    pub stamp: String,
    /// When it was taken.
    pub created_at: Timestamp,
    /// Whether it is kept.
    pub keep: bool,
    /// Why.
    pub reason: String,
}

/// A backup that does not count and is left in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotCounted {
    /// Its directory name.
    pub stamp: String,
    /// What is wrong with it.
    pub problem: String,
}

/// What prune would do, computed without touching anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrunePlan {
    /// Version of this JSON shape.
    pub format_version: u32,
    /// The instant the policy was evaluated at.
    pub now: Timestamp,
    /// The policy.
    pub policy: RetentionPolicy,
    /// Regular backups kept, newest first, with reasons.
    pub keep: Vec<KeptBackup>,
    /// Every backup to delete (regular and expired pre-restore), newest first.
    pub remove: Vec<RemovedBackup>,
    /// Every pre-restore snapshot and its fate, newest first.
    pub pre_restore: Vec<PreRestoreDecision>,
    /// Invalid or broken backups: never counted, never deleted by prune.
    pub not_counted: Vec<NotCounted>,
}

/// Why a prune cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PruneRefusal {
    /// No keep rule was given.
    #[error("no retention policy given: pass at least one --keep-* option; nothing was deleted")]
    EmptyPolicy,
    /// A duration could not be applied to `now`.
    #[error("duration `{span}` cannot be subtracted from {now}")]
    BadDuration {
        /// The duration.
        span: String,
        /// The instant.
        now: Timestamp,
    },
}

fn cutoff(now: Timestamp, span: Span) -> std::result::Result<Timestamp, PruneRefusal> {
    now.to_zoned_datetime(TimeZone::UTC)
        .checked_sub(span)
        .map(|z| z.timestamp())
        .map_err(|_| PruneRefusal::BadDuration {
            span: span.to_string(),
            now,
        })
}

/// Plans retention for `backups` under `policy` at `now`. Pure.
///
/// # Errors
/// [`PruneRefusal::EmptyPolicy`] when no keep rule is set;
/// [`PruneRefusal::BadDuration`] when a duration overflows.
pub fn plan_prune(
    backups: &[PruneCandidate],
    policy: &RetentionPolicy,
    now: Timestamp,
) -> std::result::Result<PrunePlan, PruneRefusal> {
    if policy.is_empty() {
        return Err(PruneRefusal::EmptyPolicy);
    }
    let mut sorted: Vec<&PruneCandidate> = backups.iter().collect();
    // Newest first; ties broken by stamp so `-2` sorts after its base.
    sorted.sort_by(|a, b| {
        let key = |c: &PruneCandidate| (c.created_at, c.stamp.parse::<Stamp>().ok());
        key(b).cmp(&key(a))
    });

    let mut not_counted = Vec::new();
    let mut regular = Vec::new();
    let mut pre_restore_all = Vec::new();
    for candidate in sorted {
        match (&candidate.problem, candidate.created_at, candidate.kind) {
            (None, Some(created_at), Some(kind)) => {
                if kind == BackupKind::PreRestore {
                    pre_restore_all.push((candidate, created_at, kind));
                } else {
                    regular.push((candidate, created_at, kind));
                }
            }
            (problem, _, _) => not_counted.push(NotCounted {
                stamp: candidate.stamp.clone(),
                problem: problem
                    .clone()
                    .unwrap_or_else(|| "no readable manifest".to_owned()),
            }),
        }
    }

    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); regular.len()];
    if let Some(n) = policy.keep_last {
        for (index, reason) in reasons.iter_mut().enumerate().take(n as usize) {
            reason.push(format!("last {}", index + 1));
        }
    }
    let buckets: [(&str, Option<u32>, &str); 5] = [
        ("hourly", policy.keep_hourly, "%Y-%m-%d %H:00"),
        ("daily", policy.keep_daily, "%Y-%m-%d"),
        ("weekly", policy.keep_weekly, "%G-W%V"),
        ("monthly", policy.keep_monthly, "%Y-%m"),
        ("yearly", policy.keep_yearly, "%Y"),
    ];
    for (name, count, format) in buckets {
        let Some(count) = count else { continue };
        let mut last_period: Option<String> = None;
        let mut kept = 0;
        for (index, (_, created_at, _)) in regular.iter().enumerate() {
            if kept >= count {
                break;
            }
            let period = created_at.strftime(format).to_string();
            if last_period.as_deref() != Some(period.as_str()) {
                reasons[index].push(format!("{name} {period}"));
                last_period = Some(period);
                kept += 1;
            }
        }
    }
    if let Some(span) = policy.keep_within {
        let since = cutoff(now, span)?;
        for (index, (_, created_at, _)) in regular.iter().enumerate() {
            if *created_at >= since {
                reasons[index].push(format!("within {span:#}"));
            }
        }
    }
    // The newest valid backup of any kind survives every policy.
    let newest_valid = [regular.first(), pre_restore_all.first()]
        .into_iter()
        .flatten()
        .max_by_key(|(c, created_at, _)| (*created_at, c.stamp.parse::<Stamp>().ok()))
        .map(|(c, _, _)| c.stamp.clone());
    if let Some((candidate, _, _)) = regular.first()
        && Some(&candidate.stamp) == newest_valid.as_ref()
    {
        reasons[0].push("newest valid backup".to_owned());
    }

    let mut keep = Vec::new();
    let mut remove = Vec::new();
    for ((candidate, created_at, kind), reasons) in regular.iter().zip(reasons) {
        if reasons.is_empty() {
            remove.push(RemovedBackup {
                stamp: candidate.stamp.clone(),
                created_at: *created_at,
                kind: *kind,
            });
        } else {
            keep.push(KeptBackup {
                stamp: candidate.stamp.clone(),
                created_at: *created_at,
                kind: *kind,
                reasons,
            });
        }
    }

    let pre_since = cutoff(now, policy.keep_pre_restore_within)?;
    let mut pre_restore = Vec::new();
    for (candidate, created_at, kind) in &pre_restore_all {
        let (keep_it, reason) = if Some(&candidate.stamp) == newest_valid.as_ref() {
            (true, "newest valid backup".to_owned())
        } else if *created_at >= pre_since {
            (true, format!("within {:#}", policy.keep_pre_restore_within))
        } else {
            (false, format!("older than {:#}", policy.keep_pre_restore_within))
        };
        if !keep_it {
            remove.push(RemovedBackup {
                stamp: candidate.stamp.clone(),
                created_at: *created_at,
                kind: *kind,
            });
        }
        pre_restore.push(PreRestoreDecision {
            stamp: candidate.stamp.clone(),
            created_at: *created_at,
            keep: keep_it,
            reason,
        });
    }
    remove.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.stamp.cmp(&a.stamp))
    });

    Ok(PrunePlan {
        format_version: PRUNE_PLAN_FORMAT_VERSION,
        now,
        policy: policy.clone(),
        keep,
        remove,
        pre_restore,
        not_counted,
    })
}

/// A structural check, cheap enough to run on every backup at every prune:
/// the manifest reads, names its directory, and every recorded file exists
/// with its recorded size. `validate` is the deep check.
fn quick_check(dir: &camino::Utf8Path, name: &str) -> std::result::Result<BackupManifest, String> {
    let manifest = BackupManifest::load(dir).map_err(|e| e.chain())?;
    if manifest.stamp.as_str() != name {
        return Err(format!(
            "manifest names stamp `{}`, not its directory",
            manifest.stamp
        ));
    }
    for (path, size, _) in manifest.files() {
        let file = resolve_inside(dir, &path).map_err(|problem| format!("{path}: {problem}"))?;
        let actual = fs::symlink_metadata(&file).map_err(|e| e.to_string())?.len();
        if actual != size {
            return Err(format!("{path}: size {actual} bytes, manifest records {size}"));
        }
    }
    Ok(manifest)
}

/// Gathers what prune needs to know about every snapshot. Only reads.
///
/// # Errors
/// When the snapshots directory exists but cannot be read.
pub fn observe_prune(paths: &RuntimePaths) -> Result<Vec<PruneCandidate>> {
    let listing = crate::list_backups(paths)?;
    let snapshots = paths.snapshots_dir();
    Ok(listing
        .backups
        .into_iter()
        .map(|summary| match &summary.broken {
            Some(problem) => PruneCandidate {
                stamp: summary.stamp.clone(),
                created_at: summary.created_at,
                kind: summary.kind,
                problem: Some(problem.clone()),
            },
            None => {
                let check = quick_check(&snapshots.join(&summary.stamp), &summary.stamp);
                PruneCandidate {
                    stamp: summary.stamp.clone(),
                    created_at: summary.created_at,
                    kind: summary.kind,
                    problem: check.err(),
                }
            }
        })
        .collect())
}

/// Observes the backups and plans their retention at `now`, touching nothing:
/// `prune --dry-run` and the HTTP preview.
///
/// # Errors
/// [`Error::PruneRefused`] for an empty policy; I/O errors while observing.
pub fn preview_prune(paths: &RuntimePaths, policy: &RetentionPolicy, now: Timestamp) -> Result<PrunePlan> {
    if policy.is_empty() {
        return Err(Error::PruneRefused(PruneRefusal::EmptyPolicy));
    }
    plan_prune(&observe_prune(paths)?, policy, now).map_err(Error::PruneRefused)
}

/// What one removal did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The stamp.
    pub stamp: String,
    /// Whether it is gone.
    pub ok: bool,
    /// What happened.
    pub detail: String,
}

/// The outcome of executing a prune plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneReport {
    /// The plan executed.
    pub plan: PrunePlan,
    /// One entry per stamp the plan removes.
    pub removals: Vec<Removal>,
    /// True when every removal succeeded.
    pub success: bool,
}

/// Removes exactly the stamps in `plan.remove`, under the backup lock.
///
/// # Errors
/// [`Error::Busy`] when another operation holds the lock. Failures of single
/// removals are in the report.
pub fn execute_prune(paths: &RuntimePaths, plan: PrunePlan) -> Result<PruneReport> {
    let lock = BackupDirLock::acquire(paths, "prune", clock_now())?;
    let removals: Vec<Removal> = plan
        .remove
        .iter()
        .map(|removed| match removed.stamp.parse::<Stamp>() {
            Ok(stamp) => match remove_snapshot(&lock, paths, &stamp) {
                Ok(()) => Removal {
                    stamp: removed.stamp.clone(),
                    ok: true,
                    detail: "removed".to_owned(),
                },
                Err(error) => Removal {
                    stamp: removed.stamp.clone(),
                    ok: false,
                    detail: error.chain(),
                },
            },
            Err(error) => Removal {
                stamp: removed.stamp.clone(),
                ok: false,
                detail: error.to_string(),
            },
        })
        .collect();
    let success = removals.iter().all(|r| r.ok);
    Ok(PruneReport {
        plan,
        removals,
        success,
    })
}

/// The outcome of `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReport {
    /// The stamp deleted.
    pub stamp: Stamp,
    /// Where it was.
    pub path: Utf8PathBuf,
}

/// Deletes one backup, under the backup lock, crash-safely.
///
/// # Errors
/// [`Error::BackupNotFound`], [`Error::Busy`], I/O errors naming the path.
pub fn delete_backup(paths: &RuntimePaths, stamp: &Stamp) -> Result<DeleteReport> {
    let lock = BackupDirLock::acquire(paths, "delete", clock_now())?;
    remove_snapshot(&lock, paths, stamp)?;
    Ok(DeleteReport {
        stamp: stamp.clone(),
        path: paths.snapshots_dir().join(stamp.as_str()),
    })
}

/// Renames the snapshot to `.deleting-<STAMP>` (one atomic step that unlists
/// it), fsyncs, then removes the tree: a crash leaves a `.deleting-*` that
/// `list` reports and the next `create` removes, never a half-deleted backup
/// that still looks restorable.
pub(crate) fn remove_snapshot(_lock: &BackupDirLock, paths: &RuntimePaths, stamp: &Stamp) -> Result<()> {
    let snapshots = paths.snapshots_dir();
    let dir = snapshots.join(stamp.as_str());
    if !dir.is_dir() {
        return Err(crate::list::backup_not_found(&snapshots, stamp));
    }
    let doomed = snapshots.join(format!("{DELETING_PREFIX}{stamp}"));
    fs::rename(&dir, &doomed)?;
    fsync_dir(&snapshots)?;
    crate::faults::crash_point("delete.after_rename");
    fs::remove_dir_all(&doomed)?;
    fsync_dir(&snapshots)?;
    Ok(())
}
