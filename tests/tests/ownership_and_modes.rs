//! Who owns what a restore writes, and who may read a backup: the runtime of
//! a non-root service (uid 1000) survives a root restore, and snapshots are
//! private whatever the umask.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use atocore_backup_tests::Scratch;
use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Every file and directory under `dir` (itself included) as
/// `(relative path, uid, gid, mode)`, sidecars and lock files left out.
fn owners(dir: &Utf8Path) -> Vec<(String, u32, u32, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let meta = fs::symlink_metadata(&current).unwrap();
        let relative = current.strip_prefix(dir).unwrap().to_string();
        out.push((relative, meta.uid(), meta.gid(), meta.mode() & 0o7777));
        if meta.is_dir() {
            for entry in fs::read_dir(&current).unwrap() {
                let path = Utf8PathBuf::from_path_buf(entry.unwrap().path()).unwrap();
                let name = path.file_name().unwrap();
                if !name.ends_with("-wal") && !name.ends_with("-shm") && name != ".atocore-service.lock" {
                    pending.push(path);
                }
            }
        }
    }
    out.sort();
    out
}

/// The runtime as the container leaves it: 1000:1000, files 0640, dirs 0750.
fn hand_to_service_user(data: &Utf8Path) {
    for (relative, ..) in owners(data) {
        let path = if relative.is_empty() {
            data.to_owned()
        } else {
            data.join(&relative)
        };
        std::os::unix::fs::lchown(&path, Some(1000), Some(1000)).unwrap();
        let mode = if path.is_dir() { 0o750 } else { 0o640 };
        fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn a_root_restore_keeps_the_owner_and_mode_of_everything_it_replaces() {
    if !is_root() {
        eprintln!("needs root to chown the runtime to 1000:1000: skipped");
        return;
    }
    let scratch = Scratch::seeded(300);
    let data = scratch.root.join("data");
    hand_to_service_user(&data);
    let stamp = scratch.create(true);
    let before = owners(&data);
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(before, owners(&data), "owner, group and mode as they were");
    let lock = fs::metadata(scratch.paths.service_lock_path()).unwrap();
    assert_eq!(
        (lock.uid(), lock.gid()),
        (1000, 1000),
        "the service can still take its lock"
    );
    assert_eq!(lock.mode() & 0o600, 0o600, "and write it");

    // Where nothing is replaced, the directory's owner and the recorded mode.
    fs::remove_file(&scratch.paths.registry_path).unwrap();
    fs::remove_file(scratch.paths.chroma_dir.join("segment-0001/header.bin")).unwrap();
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(before, owners(&data));
}

#[test]
fn chown_overrides_the_owner_and_the_plan_shows_it() {
    if !is_root() {
        eprintln!("needs root to chown: skipped");
        return;
    }
    let scratch = Scratch::seeded(300);
    let stamp = scratch.create(true);
    let preview = scratch.run(&["restore", &stamp, "--dry-run", "--chown", "1000:1001"]);
    let text = String::from_utf8_lossy(&preview.stdout);
    assert!(text.contains("atocore.db, as 1000:1001 0644"), "{text}");
    assert!(text.contains("files inside owned by 1000:1001"), "{text}");
    let output = scratch.run(&[
        "restore",
        &stamp,
        "--confirm-service-stopped",
        "--chown",
        "1000:1001",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    for file in [
        scratch.paths.db_path.clone(),
        scratch.paths.registry_path.clone(),
        scratch.paths.chroma_dir.clone(),
        scratch.paths.chroma_dir.join("segment-0001"),
        scratch.paths.chroma_dir.join("segment-0001/header.bin"),
    ] {
        let meta = fs::metadata(&file).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1001), "{file}");
    }
    let bad = scratch.run(&["restore", &stamp, "--dry-run", "--chown", "atocore"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`atocore` is not numeric `UID:GID`"));
}

/// Every directory of every snapshot is 0700 and every file 0400, and
/// `snapshots/` itself is 0700.
fn assert_private(scratch: &Scratch) {
    let snapshots = scratch.paths.snapshots_dir();
    for (relative, _, _, mode) in owners(&snapshots) {
        let path = snapshots.join(&relative);
        let expected = if path.is_dir() { 0o700 } else { 0o400 };
        assert_eq!(mode, expected, "{path}: {mode:04o}");
    }
    let lock = fs::metadata(scratch.paths.backup_lock_path()).unwrap();
    assert_eq!(lock.mode() & 0o077, 0, "the backup-dir lock is private");
}

#[test]
fn snapshots_are_private_and_read_only_whatever_the_umask() {
    for umask in ["022", "000"] {
        let scratch = Scratch::seeded(300);
        let bin = atocore_backup_tests::workspace_bin("atocore-backup");
        let run = |args: &str| {
            let command = format!(
                "umask {umask}; exec '{}' --data-dir '{}' --backup-dir '{}' {args}",
                bin.display(),
                scratch.root.join("data"),
                scratch.root.join("backups")
            );
            let output = std::process::Command::new("sh")
                .args(["-c", &command])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{args}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            output
        };
        run("create --include-chroma");
        // The second shares unchanged files with the first.
        let created = run("create --include-chroma --json");
        let manifest: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
        let stamp = manifest["stamp"].as_str().unwrap().to_owned();
        run(&format!("restore {stamp} --confirm-service-stopped"));
        assert_private(&scratch);
        let live = fs::metadata(&scratch.paths.db_path).unwrap();
        assert_ne!(live.mode() & 0o200, 0, "the live db stays writable");
    }
}

#[test]
fn validate_warns_about_a_snapshot_others_can_read() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(false);
    let dir = scratch.paths.snapshots_dir().join(&stamp);
    fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.join("db/atocore.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = scratch.run(&["validate", &stamp]);
    assert_eq!(output.status.code(), Some(0), "still valid");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("warning: ")
            && text.contains("readable by other users")
            && text.contains("db/atocore.db"),
        "{text}"
    );
}
