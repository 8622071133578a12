//! Human-readable text for every result. Pure: values in, text out, so the
//! wording is snapshot-tested like code.

use std::fmt::Write as _;

use atocore_backup_core::{
    AllValidation, BackupKind, BackupListing, BackupManifest, DrillReport, GateStatus, PrunePlan,
    PruneReport, RestorePlan, RestoreReport, RestoreStep, RuntimePaths, StepStatus, ValidationReport,
};
use camino::Utf8Path;
use indicatif::HumanBytes;
use jiff::Timestamp;

fn utc(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn created(manifest: &BackupManifest) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Created backup {} ({})",
        manifest.stamp,
        manifest.kind.as_str()
    );
    let _ = writeln!(
        out,
        "  db        {}  {}  ({} pages of {} bytes, user_version {})",
        manifest.db.path,
        HumanBytes(manifest.db.size_bytes),
        manifest.db.page_count,
        manifest.db.page_size,
        manifest.db.user_version
    );
    if let Some(from) = &manifest.db.linked_from {
        let _ = writeln!(
            out,
            "            unchanged since {from}: shares its copy (no extra disk)"
        );
    }
    match &manifest.registry {
        Some(registry) => {
            let _ = writeln!(
                out,
                "  registry  {}  {}",
                registry.path,
                HumanBytes(registry.size_bytes)
            );
        }
        None => out.push_str("  registry  absent at the source, recorded as null\n"),
    }
    match &manifest.chroma {
        Some(chroma) => {
            let _ = writeln!(
                out,
                "  chroma    {} files, {}",
                chroma.file_count,
                HumanBytes(chroma.total_bytes)
            );
            if let Some(from) = &chroma.linked_from {
                let _ = writeln!(
                    out,
                    "            {} unchanged files share their copies with {from}",
                    chroma.linked_files
                );
            }
        }
        None => out.push_str("  chroma    not included (use --include-chroma)\n"),
    }
    let _ = writeln!(out, "  total     {}", HumanBytes(manifest.total_bytes()));
    out
}

/// `snapshots` is where the backups were looked for: an operator who passed
/// the wrong `--backup-dir` sees it in the answer.
pub fn listing(listing: &BackupListing, snapshots: &Utf8Path) -> String {
    let mut out = String::new();
    if listing.backups.is_empty() {
        let _ = writeln!(out, "No backups in `{snapshots}`.");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<20}  {:<11}  {:<23}  {:>10}  PARTS",
        "STAMP", "KIND", "CREATED", "SIZE"
    );
    for backup in &listing.backups {
        if let Some(reason) = &backup.broken {
            let _ = writeln!(out, "{:<20}  BROKEN: {reason}", backup.stamp);
            continue;
        }
        let mut parts = vec!["db"];
        if backup.has_registry {
            parts.push("registry");
        }
        if backup.has_chroma {
            parts.push("chroma");
        }
        let kind = backup.kind.map_or("?", |kind| kind.as_str());
        let created = backup.created_at.map(utc).unwrap_or_default();
        let mut line = format!(
            "{:<20}  {:<11}  {:<23}  {:>10}  {}",
            backup.stamp,
            kind,
            created,
            HumanBytes(backup.total_bytes).to_string(),
            parts.join("+")
        );
        if let Some(from) = &backup.restored_from {
            let _ = write!(line, "  (before restoring {from})");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub fn warnings(warnings: &[String]) -> String {
    warnings.iter().map(|w| format!("warning: {w}\n")).collect()
}

pub fn validation(report: &ValidationReport) -> String {
    let mut out = String::new();
    let verdict = if report.valid { "valid" } else { "INVALID" };
    let _ = writeln!(out, "Backup {} is {verdict}", report.stamp);
    for check in &report.checks {
        let mark = if check.ok { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "  {mark}  {:<20}  {}", check.name, check.detail);
    }
    for error in &report.errors {
        let _ = writeln!(out, "  error: {error}");
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    out
}

pub fn all_validation(all: &AllValidation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<20}  {:<7}  FIRST ERROR", "STAMP", "STATUS");
    for report in &all.reports {
        let status = if report.valid { "valid" } else { "INVALID" };
        let first = report.errors.first().map_or("", String::as_str);
        let line = format!("{:<20}  {status:<7}  {first}", report.stamp.as_str());
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for name in &all.unvalidated {
        let _ = writeln!(out, "{name:<20}  INVALID  not named by a backup stamp");
    }
    let invalid = all.reports.iter().filter(|r| !r.valid).count() + all.unvalidated.len();
    let _ = writeln!(
        out,
        "{} backups, {} invalid",
        all.reports.len() + all.unvalidated.len(),
        invalid
    );
    out
}

fn step_line(step: &RestoreStep) -> String {
    match step {
        RestoreStep::ValidateBackup => "validate the backup".to_owned(),
        RestoreStep::CheckFreeSpace {
            required_bytes,
            available_bytes,
        } => format!(
            "check free space: need {}, have {}",
            HumanBytes(*required_bytes),
            HumanBytes(*available_bytes)
        ),
        RestoreStep::WriteRestoreMarker { path } => format!("write restore marker {path}"),
        RestoreStep::PreRestoreSnapshot { include_chroma, .. } => format!(
            "take a pre-restore snapshot ({})",
            if *include_chroma {
                "db, registry, chroma"
            } else {
                "db, registry"
            }
        ),
        RestoreStep::VerifyDbUnused { .. } => {
            "check again that no process has the db, its -wal or its -shm open".to_owned()
        }
        RestoreStep::CheckpointWal { db_path, .. } => {
            format!("checkpoint the WAL of {db_path} (must not be busy)")
        }
        RestoreStep::RemoveSidecars { paths } => format!(
            "remove sidecars {}",
            paths.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
        ),
        RestoreStep::ReplaceDb { from, to, owner } => {
            format!("replace {to} with {from}{}", owned_as(owner.as_ref()))
        }
        RestoreStep::RestoreRegistry { from, to, owner, .. } => match from {
            Some(from) => format!("replace {to} with {from}{}", owned_as(owner.as_ref())),
            None => format!("leave {to} as it is"),
        },
        RestoreStep::RestoreChroma {
            from,
            to,
            swap,
            owner,
            chown,
            ..
        } => match from {
            Some(from) => format!(
                "replace {to} with {from} ({}){}; files inside {}",
                match swap {
                    atocore_backup_core::ChromaSwap::RenameDir => "swap the whole tree",
                    atocore_backup_core::ChromaSwap::SwapEntries => "mount point: swap its entries",
                },
                owned_as(owner.as_ref()),
                match chown {
                    Some(chown) => format!(
                        "owned by {}:{}, modes as replaced or recorded",
                        chown.uid, chown.gid
                    ),
                    None => "keep the owner and mode of the file each replaces".to_owned(),
                }
            ),
            None => format!("leave {to} as it is"),
        },
        RestoreStep::IntegrityCheck { db_path } => format!("PRAGMA integrity_check on {db_path}"),
        RestoreStep::RemoveRestoreMarker { path } => format!("remove restore marker {path}"),
    }
}

/// `, as 1000:1000 0640`: who will own what a step writes.
fn owned_as(owner: Option<&atocore_backup_core::Ownership>) -> String {
    owner.map(|owner| format!(", as {owner}")).unwrap_or_default()
}

pub fn plan(plan: &RestorePlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Restore plan for {} (dry run: nothing was changed)",
        plan.stamp
    );
    let _ = writeln!(out, "  from {}", plan.backup_path);
    if !plan.gates.is_empty() {
        out.push_str("  gates:\n");
        for gate in &plan.gates {
            let status = match gate.status {
                GateStatus::Passed => "ok",
                GateStatus::Refused => "REFUSED",
                GateStatus::NotEvaluated => "not run",
            };
            let _ = writeln!(out, "    {status:<8} {:<17} {}", gate.gate.name(), gate.detail);
        }
        out.push_str("  steps:\n");
    }
    for (index, step) in plan.steps.iter().enumerate() {
        let _ = write!(out, "  {:>2}. {:<22} {}", index + 1, step.name(), step_line(step));
        if let Some(reason) = step.skip_reason() {
            let _ = write!(out, "  [skipped: {reason}]");
        }
        out.push('\n');
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    if let Some(gate) = plan.refusing_gate() {
        let _ = writeln!(
            out,
            "A restore now would be refused at gate {}: stop what it names first.",
            gate.gate.name()
        );
    }
    out
}

/// A command that can be pasted as it is: every path flag spelled out, each
/// argument quoted for a POSIX shell where it needs it.
pub fn restore_command(paths: &RuntimePaths, stamp: &str) -> String {
    let quote = |text: &str| {
        if !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c))
        {
            text.to_owned()
        } else {
            format!("'{}'", text.replace('\'', r"'\''"))
        }
    };
    format!(
        "atocore-backup --db-path {} --chroma-dir {} --registry-path {} --backup-dir {} restore {} --confirm-service-stopped",
        quote(paths.db_path.as_str()),
        quote(paths.chroma_dir.as_str()),
        quote(paths.registry_path.as_str()),
        quote(paths.backup_dir.as_str()),
        quote(stamp)
    )
}

pub fn restore(report: &RestoreReport, paths: &RuntimePaths) -> String {
    let mut out = String::new();
    let verdict = if report.success { "restored" } else { "FAILED" };
    let _ = writeln!(out, "Restore of {} {verdict}", report.stamp);
    for (index, step) in report.steps.iter().enumerate() {
        let status = match step.status {
            StepStatus::Ok => "ok  ",
            StepStatus::Skipped => "skip",
            StepStatus::Failed => "FAIL",
        };
        let _ = writeln!(
            out,
            "  {:>2}. {status}  {:<22} {} ({} ms)",
            index + 1,
            step.step.name(),
            step.detail,
            step.duration_ms
        );
    }
    if let Some(text) = &report.integrity_check {
        let _ = writeln!(out, "  integrity_check: {text}");
    }
    if let Some(undo) = &report.undo_stamp {
        let _ = writeln!(out, "  undo with: {}", restore_command(paths, undo.as_str()));
        if report.pre_restore_stamp.as_ref() != Some(undo) {
            let _ = writeln!(
                out,
                "  ({undo} is the runtime before the interrupted restore this one completed)"
            );
        }
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    out
}

pub fn prune_plan(plan: &PrunePlan, dry_run: bool) -> String {
    let mut out = String::new();
    let header = if dry_run {
        "Prune plan (dry run: nothing was deleted)"
    } else {
        "Prune"
    };
    let kept = plan.keep.len() + plan.pre_restore.iter().filter(|p| p.keep).count();
    let _ = writeln!(
        out,
        "{header}: keep {kept}, remove {}, {} not counted",
        plan.remove.len(),
        plan.not_counted.len()
    );
    let _ = writeln!(out, "  {:<6}  {:<20}  {:<11}  WHY", "ACTION", "STAMP", "KIND");
    let mut row = |action: &str, stamp: &str, kind: &str, why: &str| {
        let _ = writeln!(out, "  {action:<6}  {stamp:<20}  {kind:<11}  {why}");
    };
    for kept in &plan.keep {
        row("keep", &kept.stamp, kept.kind.as_str(), &kept.reasons.join(", "));
    }
    for removed in plan.remove.iter().filter(|r| r.kind != BackupKind::PreRestore) {
        row("remove", &removed.stamp, removed.kind.as_str(), "kept by no rule");
    }
    for pre in &plan.pre_restore {
        row(
            if pre.keep { "keep" } else { "remove" },
            &pre.stamp,
            "pre-restore",
            &pre.reason,
        );
    }
    for bad in &plan.not_counted {
        row(
            "leave",
            &bad.stamp,
            "?",
            &format!("not counted, left for inspection: {}", bad.problem),
        );
    }
    out
}

pub fn prune_removals(report: &PruneReport) -> String {
    let mut out = String::new();
    for removal in report.removals.iter().filter(|r| !r.ok) {
        let _ = writeln!(out, "  FAILED to remove {}: {}", removal.stamp, removal.detail);
    }
    let removed = report.removals.iter().filter(|r| r.ok).count();
    let _ = writeln!(out, "Removed {removed} of {} backups", report.removals.len());
    out
}

pub fn drill(report: &DrillReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Restore drill in {}", report.scratch_dir);
    for step in &report.steps {
        let mark = if step.ok { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "  {mark}  {:<44} {}", step.name, step.detail);
    }
    let verdict = if report.success { "passed" } else { "FAILED" };
    let _ = writeln!(out, "Drill {verdict}");
    out
}

#[cfg(test)]
mod tests {
    //! Text previews of plans from hand-built facts: the same cases as the
    //! core's JSON plan snapshots, so both renderings get reviewed.

    use atocore_backup_core::fixtures::{manifest, restore_facts as facts};
    use atocore_backup_core::{RestoreFacts, RestoreOptions, Sidecar, plan_restore};

    fn preview(
        registry: bool,
        chroma: bool,
        include_chroma: Option<bool>,
        snapshot: bool,
        facts: &RestoreFacts,
    ) -> String {
        let options = RestoreOptions {
            include_chroma,
            pre_restore_snapshot: snapshot,
            chown: None,
        };
        match plan_restore(&manifest(registry, chroma), &options, facts) {
            Ok(plan) => super::plan(&plan),
            Err(refusal) => format!("refused: {refusal}\n"),
        }
    }

    #[test]
    fn plan_previews() {
        let mut sidecars = facts();
        sidecars.sidecars_present = vec![Sidecar {
            path: "/srv/atocore/data/db/atocore.db-wal".into(),
            size_bytes: 41_232,
        }];
        sidecars.chroma_is_mount_point = true;
        let mut full = facts();
        full.available_bytes = 1000;
        let mut in_use = facts();
        in_use.gates[1].status = atocore_backup_core::GateStatus::Refused;
        in_use.gates[1].detail = "database `/srv/atocore/data/db/atocore.db` is open in another process: pid 4242 (python3 -m atocore.main) has `/srv/atocore/data/db/atocore.db` open; stop every process using it".to_owned();
        in_use.gates[2].status = atocore_backup_core::GateStatus::NotEvaluated;
        in_use.gates[2].detail =
            "not tried: opening a db another process has open is what the gates prevent".to_owned();
        let cases = [
            ("with chroma", preview(true, true, None, true, &facts())),
            (
                "without chroma (declined)",
                preview(true, true, Some(false), true, &facts()),
            ),
            (
                "no registry in the backup",
                preview(false, true, None, true, &facts()),
            ),
            (
                "no pre-restore snapshot",
                preview(true, true, None, false, &facts()),
            ),
            (
                "sidecars present, chroma is a mount point",
                preview(true, true, None, true, &sidecars),
            ),
            (
                "a gate refuses: the service has the db open",
                preview(true, true, None, true, &in_use),
            ),
            (
                "refusal: chroma not in backup",
                preview(true, false, Some(true), true, &facts()),
            ),
            (
                "refusal: not enough space",
                preview(true, true, None, true, &full),
            ),
        ];
        let text: String = cases
            .iter()
            .map(|(name, text)| format!("=== {name}\n{text}"))
            .collect();
        insta::assert_snapshot!(text);
    }
}
