//! Resource exhaustion, permissions and hostile paths against the real binary.
#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use std::process::Command;

use atocore_backup_tests::{
    Scratch, failed_step, file_hash, tree_hashes, tree_hashes_without_sidecars, workspace_bin,
};
use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;

/// Runs the CLI under `ulimit -f` (in 512-byte blocks), with SIGXFSZ ignored
/// so that an oversized write fails with EFBIG, as a full disk fails with ENOSPC.
fn run_limited(scratch: &Scratch, blocks: u64, args: &[&str]) -> std::process::Output {
    let bin = workspace_bin("atocore-backup");
    let mut script = format!(
        "trap '' XFSZ; ulimit -f {blocks}; exec '{}' --data-dir '{}' --backup-dir '{}'",
        bin.display(),
        scratch.root.join("data"),
        scratch.root.join("backups")
    );
    for arg in args {
        script.push_str(&format!(" '{arg}'"));
    }
    Command::new("sh").args(["-c", &script]).output().unwrap()
}

fn snapshot_names(scratch: &Scratch) -> Vec<String> {
    fs::read_dir(scratch.root.join("backups/snapshots"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_file_size_limit_during_create_fails_clearly_and_leaves_nothing() {
    let scratch = Scratch::seeded(60_000);
    let live_before = file_hash(&scratch.paths.db_path);
    let output = run_limited(&scratch, 10_000, &["create", "--include-chroma"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains(".partial-"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one clear sentence: {stderr}");
    assert!(
        snapshot_names(&scratch).is_empty(),
        "{:?}",
        snapshot_names(&scratch)
    );
    assert_eq!(live_before, file_hash(&scratch.paths.db_path));
}

#[test]
fn a_file_size_limit_during_restore_leaves_the_live_runtime_untouched() {
    let scratch = Scratch::seeded(60_000);
    let stamp = scratch.create(true);
    rusqlite::Connection::open(&scratch.paths.db_path)
        .unwrap()
        .execute("DELETE FROM memories WHERE id % 2 = 0", [])
        .unwrap();
    let live_before = file_hash(&scratch.paths.db_path);
    // Sidecars aside: capturing chroma.sqlite3 checkpoints it, which removes an empty -wal.
    let chroma_before = tree_hashes_without_sidecars(&scratch.paths.chroma_dir);

    // The new db, staged beside the live one while the backup is validated,
    // hits the limit: an I/O failure (exit 1), not an invalid backup (3), and
    // nothing live was touched, so no marker and no snapshot are left.
    for no_snapshot in [None, Some("--no-pre-restore-snapshot")] {
        let mut args = vec!["restore", &stamp, "--confirm-service-stopped", "--json"];
        args.extend(no_snapshot);
        let output = run_limited(&scratch, 10_000, &args);
        assert_eq!(output.status.code(), Some(1));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let failed = failed_step(&report);
        assert_eq!(failed["step"], "validate_backup", "{report}");
        let detail = failed["detail"].as_str().unwrap();
        assert!(
            detail.contains("File too large") && detail.contains(".atocore.db.restore-tmp"),
            "{failed}"
        );
        assert_eq!(live_before, file_hash(&scratch.paths.db_path));
        assert_eq!(
            chroma_before,
            tree_hashes_without_sidecars(&scratch.paths.chroma_dir)
        );
        assert!(!scratch.paths.restore_marker_path().exists());
        assert!(!scratch.paths.db_dir().join(".atocore.db.restore-tmp").exists());
        assert!(
            !scratch
                .paths
                .chroma_dir
                .with_file_name(".chroma.restore-new")
                .exists()
        );
        assert_eq!(snapshot_names(&scratch), std::slice::from_ref(&stamp));
    }

    // Space back: the next restore finishes the job.
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// `chattr +i` makes a file or directory immutable even for root; removed on drop.
struct Immutable(Utf8PathBuf);

impl Immutable {
    #[allow(clippy::print_stderr)] // says why a check was skipped
    fn set(path: &Utf8Path) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .args(["+i", path.as_str()])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("chattr +i is not available here: skipping this permission check");
        }
        ok.then(|| Immutable(path.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").args(["-i", self.0.as_str()]).status();
    }
}

#[test]
fn an_unwritable_backup_dir_fails_clearly() {
    let scratch = Scratch::seeded(100);
    fs::create_dir_all(scratch.root.join("backups/snapshots")).unwrap();
    let Some(_guard) = Immutable::set(&scratch.root.join("backups/snapshots")) else {
        return;
    };
    let output = scratch.run(&["create"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("backups/snapshots") && stderr.contains("Operation not permitted"),
        "{stderr}"
    );
}

#[test]
fn a_read_only_live_db_directory_fails_the_restore_with_the_old_db_intact() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(false);
    rusqlite::Connection::open(&scratch.paths.db_path)
        .unwrap()
        .execute("DELETE FROM memories", [])
        .unwrap();
    let live_before = file_hash(&scratch.paths.db_path);
    let registry_dir = scratch.paths.registry_path.parent().unwrap().to_owned();
    let Some(_guard) = Immutable::set(&registry_dir) else {
        return;
    };
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let failed = failed_step(&report);
    assert_eq!(failed["step"], "restore_registry", "{report}");
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.contains("project-registry.json") && detail.contains("restore `"),
        "{detail}"
    );
    // The db was already replaced; the report says how to get back.
    assert_ne!(live_before, file_hash(&scratch.paths.db_path));
}

#[test]
fn a_chroma_target_that_is_a_symlink_is_refused() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(true);
    let elsewhere = scratch.root.join("elsewhere");
    fs::rename(&scratch.paths.chroma_dir, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &scratch.paths.chroma_dir).unwrap();
    let before = tree_hashes(&elsewhere);
    let live_db = file_hash(&scratch.paths.db_path);
    for extra in [None, Some("--no-pre-restore-snapshot")] {
        let mut args = vec!["restore", stamp.as_str(), "--confirm-service-stopped"];
        args.extend(extra);
        let output = scratch.run(&args);
        assert_eq!(output.status.code(), Some(4));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("is a symlink") && stderr.contains("data/chroma"),
            "{stderr}"
        );
    }
    assert_eq!(live_db, file_hash(&scratch.paths.db_path));
    assert!(!scratch.paths.restore_marker_path().exists());
    assert_eq!(
        before,
        tree_hashes(&elsewhere),
        "nothing outside the configured paths was written"
    );

    let create = scratch.run(&["create", "--include-chroma"]);
    assert_eq!(create.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&create.stderr).contains("is a symlink"));
}

#[test]
fn a_snapshot_holding_a_symlink_out_of_the_backup_dir_is_refused() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(true);
    let segment = scratch
        .root
        .join(format!("backups/snapshots/{stamp}/chroma/segment-0001"));
    fs::rename(&segment, scratch.root.join("moved-segment")).unwrap();
    std::os::unix::fs::symlink("/etc", &segment).unwrap();
    let output = scratch.run(&["validate", &stamp]);
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stdout).contains("is a symlink"));
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(output.status.code(), Some(3));
}

#[test]
fn a_restore_while_a_create_runs_is_refused_as_busy() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(false);
    let mut holder = scratch.hold("hold-backup-lock");
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(output.status.code(), Some(5));
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

#[test]
fn a_wal_db_in_a_read_only_directory_gets_an_error_that_says_what_sqlite_needs() {
    let scratch = Scratch::seeded(100);
    let db_dir = scratch.paths.db_dir().to_owned();
    for sidecar in ["-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{sidecar}", scratch.paths.db_path));
    }
    let Some(_guard) = Immutable::set(&db_dir) else {
        return;
    };
    let output = scratch.run(&["create"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs write access to its directory"), "{stderr}");
    assert!(snapshot_names(&scratch).is_empty());
}
