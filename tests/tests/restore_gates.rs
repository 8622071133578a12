//! Gates across real processes, the bind-mount fallback, and concurrency.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use std::os::unix::fs::MetadataExt;

use atocore_backup_tests::{Scratch, file_hash, tree_hashes, tree_hashes_without_sidecars};
use fs_err as fs;

#[test]
fn restore_is_refused_while_another_process_holds_the_service_lock() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(false);
    let mut holder = scratch.hold("hold-service-lock");
    let before = file_hash(&scratch.paths.db_path);
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(".atocore-service.lock") && stderr.contains("stop the atocore service"),
        "{stderr}"
    );
    assert_eq!(before, file_hash(&scratch.paths.db_path));
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn create_is_refused_while_another_process_holds_the_backup_lock() {
    let scratch = Scratch::seeded(100);
    let mut holder = scratch.hold("hold-backup-lock");
    let output = scratch.run(&["create"]);
    assert_eq!(output.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("pid {}", holder.id())) && stderr.contains("test-helper since"),
        "{stderr}"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

#[test]
fn a_chroma_dir_that_cannot_be_renamed_has_its_entries_swapped_and_keeps_its_inode() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(true);
    fs::write(scratch.paths.chroma_dir.join("segment-0001/after.bin"), b"later").unwrap();
    fs::write(scratch.paths.chroma_dir.join("loose.bin"), b"later").unwrap();
    let inode = fs::metadata(&scratch.paths.chroma_dir).unwrap().ino();
    let report = restore_json_with_fault(&scratch, &stamp, "chroma-rename-ebusy");
    let chroma_step = atocore_backup_tests::step(&report, "restore_chroma");
    assert_eq!(chroma_step["status"], "ok");
    assert!(
        chroma_step["detail"]
            .as_str()
            .unwrap()
            .contains("swapping entries"),
        "{chroma_step}"
    );
    assert_eq!(fs::metadata(&scratch.paths.chroma_dir).unwrap().ino(), inode);
    let live = tree_hashes_without_sidecars(&scratch.paths.chroma_dir);
    assert_eq!(
        live,
        tree_hashes(&scratch.root.join(format!("backups/snapshots/{stamp}/chroma")))
    );
}

#[test]
fn two_creates_at_once_never_produce_a_half_listed_backup() {
    let scratch = Scratch::seeded(40_000);
    let a = scratch
        .cli(&["create", "--include-chroma"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = scratch
        .cli(&["create", "--include-chroma"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let outcomes = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for outcome in &outcomes {
        let code = outcome.status.code();
        assert!(
            code == Some(0) || code == Some(5),
            "{code:?}: {}",
            String::from_utf8_lossy(&outcome.stderr)
        );
        if code == Some(5) {
            assert!(String::from_utf8_lossy(&outcome.stderr).contains("is held by pid"));
        }
    }
    let all = scratch.run(&["validate", "--all", "--json"]);
    assert_eq!(
        all.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&all.stdout)
    );
}

#[test]
fn drill_passes_through_the_real_binary() {
    let scratch = Scratch::empty();
    let output = scratch.run(&["drill", "--scratch-dir", scratch.root.join("drill").as_str()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Drill passed"));
}

#[test]
fn without_rename_exchange_chroma_is_swapped_by_two_renames() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(true);
    fs::write(scratch.paths.chroma_dir.join("loose.bin"), b"later").unwrap();
    let report = restore_json_with_fault(&scratch, &stamp, "chroma-exchange-unsupported");
    assert!(
        atocore_backup_tests::step(&report, "restore_chroma")["detail"]
            .as_str()
            .unwrap()
            .contains("renaming the old tree away")
    );
    let live = tree_hashes_without_sidecars(&scratch.paths.chroma_dir);
    assert_eq!(
        live,
        tree_hashes(&scratch.root.join(format!("backups/snapshots/{stamp}/chroma")))
    );
    let list = scratch.run(&["list"]);
    assert!(String::from_utf8_lossy(&list.stderr).is_empty(), "no debris left");
}

#[test]
fn progress_is_drawn_on_a_terminal_and_nowhere_else() {
    let scratch = Scratch::seeded(1_000);
    let Ok(script) = which_script() else {
        eprintln!("`script` (util-linux) is not installed: skipping the terminal half");
        return;
    };
    let bin = atocore_backup_tests::workspace_bin("atocore-backup");
    let command = format!(
        "'{}' --data-dir '{}' --backup-dir '{}' create --include-chroma",
        bin.display(),
        scratch.root.join("data"),
        scratch.root.join("backups")
    );
    // Drawn at once rather than after a second, so the test need not be slow.
    let on_terminal = std::process::Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .env("ATOCORE_BACKUP_PROGRESS_AFTER_MS", "0")
        .output()
        .unwrap();
    assert!(on_terminal.status.success());
    assert!(
        String::from_utf8_lossy(&on_terminal.stdout).contains("copying: "),
        "no bar on a terminal"
    );
    let piped = scratch
        .cli(&["create", "--include-chroma"])
        .env("ATOCORE_BACKUP_PROGRESS_AFTER_MS", "0")
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
}

fn which_script() -> Result<&'static str, ()> {
    std::process::Command::new("script")
        .arg("--version")
        .output()
        .map_err(|_| ())
        .and_then(|o| if o.status.success() { Ok("script") } else { Err(()) })
}

#[test]
fn a_restored_db_that_fails_integrity_check_fails_the_restore_with_exit_1() {
    let scratch = Scratch::seeded(2_000);
    let stamp = scratch.create(false);
    let (code, report) = restore_with_fault(&scratch, &stamp, "corrupt-restored-db");
    assert_eq!(code, Some(1));
    assert_eq!(report["success"], false);
    let integrity = report["integrity_check"].as_str().unwrap();
    assert_ne!(integrity, "ok");
    let failed = atocore_backup_tests::failed_step(&report);
    assert_eq!(failed["step"], "integrity_check");
    let pre = report["pre_restore_stamp"].as_str().unwrap();
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("restore `{pre}`")),
        "{failed}"
    );
    assert!(
        scratch.paths.restore_marker_path().exists(),
        "a damaged runtime stays blocked"
    );
    // The pre-restore snapshot gets the runtime back.
    let undo = scratch.run(&["restore", pre, "--confirm-service-stopped"]);
    assert!(undo.status.success(), "{}", String::from_utf8_lossy(&undo.stdout));
    assert!(!scratch.paths.restore_marker_path().exists());
}

#[test]
fn a_restore_stopped_after_the_pre_restore_snapshot_removes_it_with_the_runtime_unchanged() {
    let scratch = Scratch::seeded(2_000);
    let stamp = scratch.create(true);
    let live = || {
        let mut files = atocore_backup_tests::tree_hashes_without_sidecars(&scratch.root.join("data"));
        files.retain(|(path, _)| !path.ends_with(".atocore-service.lock"));
        files
    };
    let live_before = live();
    let (code, report) = restore_with_fault(&scratch, &stamp, "checkpoint-busy");
    // A db someone else holds is a safety refusal (4), as at the gates.
    assert_eq!(code, Some(4));
    assert_eq!(
        atocore_backup_tests::failed_step(&report)["step"],
        "checkpoint_wal"
    );
    let snapshot_step = atocore_backup_tests::step(&report, "pre_restore_snapshot");
    assert_eq!(snapshot_step["step"], "pre_restore_snapshot");
    assert_eq!(snapshot_step["status"], "ok");
    // The snapshot's db was the live db's own file: kept, a service started on
    // the unchanged runtime would write into it.
    assert_eq!(report["pre_restore_stamp"], serde_json::Value::Null);
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("pre-restore snapshot") && warnings.contains("was removed"),
        "{warnings}"
    );
    let listing = scratch.run(&["list", "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let stamps = atocore_backup_tests::listed_stamps(&listing);
    assert_eq!(stamps, [stamp.as_str()]);
    assert!(!scratch.paths.restore_marker_path().exists());
    assert_eq!(
        live_before,
        live(),
        "nothing live changed and no staged copy is left"
    );
}

/// `restore <stamp> --confirm-service-stopped --json` with a fault injected:
/// its exit code and its report.
fn restore_with_fault(scratch: &Scratch, stamp: &str, fault: &str) -> (Option<i32>, serde_json::Value) {
    let output = scratch
        .cli(&["restore", stamp, "--confirm-service-stopped", "--json"])
        .env("ATOCORE_BACKUP_FAULT", fault)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON report: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// [`restore_with_fault`] for a restore that must succeed. Returns the report.
fn restore_json_with_fault(scratch: &Scratch, stamp: &str, fault: &str) -> serde_json::Value {
    let (code, report) = restore_with_fault(scratch, stamp, fault);
    assert_eq!(code, Some(0), "{report}");
    report
}
