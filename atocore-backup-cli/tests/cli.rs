//! The real `atocore-backup` binary: one snapshot per case holding exit code,
//! stdout and stderr, with temp paths, stamps, times and hashes redacted.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use std::process::Command;

use atocore_backup_core::{BackupDirLock, RuntimePaths, seed_runtime};
use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;

struct Env {
    _dir: tempfile::TempDir,
    root: Utf8PathBuf,
    paths: RuntimePaths,
}

impl Env {
    fn seeded() -> Self {
        let env = Env::empty();
        seed_runtime(&env.paths, 100).unwrap();
        env
    }

    fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(dir.path().canonicalize().unwrap()).unwrap();
        let paths = RuntimePaths::under(&root);
        Env {
            _dir: dir,
            root,
            paths,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_atocore-backup"));
        command
            .current_dir(&self.root)
            .env_remove("ATOCORE_DATA_DIR")
            .env_remove("ATOCORE_DB_PATH")
            .env_remove("ATOCORE_CHROMA_DIR")
            .env_remove("ATOCORE_REGISTRY_PATH")
            .env("ATOCORE_BACKUP_DIR", self.root.join("backups"))
            .args(["--data-dir", "data"])
            .args(args);
        command
    }

    /// Runs the binary; returns (exit code, stdout, the snapshot text).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = self.command(args).output().unwrap();
        let code = output.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let text = format!("exit: {code}\n--- stdout\n{stdout}--- stderr\n{stderr}");
        (code, stdout, text)
    }

    fn create(&self, chroma: bool) -> String {
        let args: &[&str] = if chroma {
            &["create", "--include-chroma", "--json"]
        } else {
            &["create", "--json"]
        };
        let (code, stdout, text) = self.run(args);
        assert_eq!(code, 0, "{text}");
        let manifest: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        manifest["stamp"].as_str().unwrap().to_owned()
    }

    fn settings(&self) -> insta::Settings {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(&regex_escape(self.root.as_str()), "[TEMP_DIR]");
        // In tables, a stamp with a collision suffix is wider: normalise the
        // padding after it too, or snapshots depend on timing.
        settings.add_filter(r"\b\d{8}T\d{6}Z(-\d+)? {2,}", "[STAMP]  ");
        settings.add_filter(r"\b\d{8}T\d{6}Z(-\d+)?\b", "[STAMP]");
        settings.add_filter(
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?( UTC|Z)",
            "[TIME]",
        );
        settings.add_filter(r"blake3:[0-9a-f]{64}", "blake3:[HASH]");
        settings.add_filter(r"\(\d+ ms\)", "([N] ms)");
        settings.add_filter(r"have \d+(\.\d+)? [KMGT]?i?B", "have [FREE]");
        settings.add_filter(r"\d+ bytes available", "[FREE] bytes available");
        settings.add_filter(r"pid \d+ on \S+", "pid [PID] on [HOST]");
        // Whoever runs the tests, under whatever umask.
        settings.add_filter(r", as \d+:\d+ [0-7]{4}", ", as [UID]:[GID] [MODE]");
        settings.add_filter(r#""gid": \d+"#, r#""gid": "[GID]""#);
        settings.add_filter(r#""uid": \d+"#, r#""uid": "[UID]""#);
        settings.add_filter(r#""mode": "0[0-7]{3}""#, r#""mode": "[MODE]""#);
        settings
    }

    fn tree(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Utf8Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = Utf8PathBuf::from_path_buf(entry.unwrap().path()).unwrap();
        if path.is_dir() {
            walk(&path, out);
        } else if path.as_str().ends_with(".lock") {
            // Lock files record their last holder; they are not data.
        } else {
            out.push(format!(
                "{path} {}",
                blake3::hash(&fs::read(&path).unwrap()).to_hex()
            ));
        }
    }
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[test]
fn create_prints_a_short_summary() {
    let env = Env::seeded();
    let (_, _, text) = env.run(&["create", "--include-chroma"]);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn create_json_is_the_manifest() {
    let env = Env::seeded();
    let stamp = env.create(true);
    let on_disk: serde_json::Value = serde_json::from_slice(
        &fs::read(
            env.root
                .join(format!("backups/snapshots/{stamp}/backup-metadata.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let (_, stdout, _) = env.run(&["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["backups"][0]["stamp"], on_disk["stamp"]);
    assert_eq!(on_disk["format_version"], 1);
}

#[test]
fn list_shows_backups_newest_first_broken_entries_and_warnings() {
    let env = Env::seeded();
    env.create(true);
    env.create(false);
    fs::create_dir_all(env.root.join("backups/snapshots/20200101T000000Z")).unwrap();
    fs::create_dir_all(env.root.join("backups/snapshots/.partial-20200101T000001Z")).unwrap();
    fs::write(
        env.paths.restore_marker_path(),
        r#"{"stamp":"20260101T000000Z","started_at":"2026-01-01T00:00:00Z","pid":7,"pre_restore_stamp":"20260101T000001Z"}"#,
    )
    .unwrap();
    let (code, _, text) = env.run(&["list"]);
    assert_eq!(code, 0);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn list_of_an_empty_backup_dir() {
    let env = Env::seeded();
    let (_, _, text) = env.run(&["list"]);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn list_of_a_backup_dir_that_is_a_file_is_an_error_naming_it() {
    let env = Env::seeded();
    fs::write(env.root.join("backups"), "not a directory").unwrap();
    let (code, stdout, text) = env.run(&["list"]);
    assert_eq!(code, 1);
    assert!(
        stdout.is_empty(),
        "nothing may pass for an empty listing: {stdout}"
    );
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn validate_a_valid_backup() {
    let env = Env::seeded();
    let stamp = env.create(true);
    let (code, _, text) = env.run(&["validate", &stamp]);
    assert_eq!(code, 0);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn validate_an_invalid_backup_exits_3() {
    let env = Env::seeded();
    let stamp = env.create(true);
    let damaged = env.root.join(format!(
        "backups/snapshots/{stamp}/chroma/segment-0001/data_level0.bin"
    ));
    fs::write(&damaged, b"truncated").unwrap();
    fs::write(
        env.root
            .join(format!("backups/snapshots/{stamp}/chroma/stray.bin")),
        b"?",
    )
    .unwrap();
    let (code, _, text) = env.run(&["validate", &stamp]);
    assert_eq!(code, 3);
    env.settings().bind(|| insta::assert_snapshot!(text));
    let (code, stdout, _) = env.run(&["validate", &stamp, "--json"]);
    assert_eq!(code, 3);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["chroma_ok"], false);
    assert_eq!(report["db_ok"], true);
}

#[test]
fn validate_all_summarizes_and_exits_3_if_any_is_invalid() {
    let env = Env::seeded();
    env.create(false);
    let bad = env.create(false);
    fs::write(
        env.root
            .join(format!("backups/snapshots/{bad}/backup-metadata.json")),
        b"{",
    )
    .unwrap();
    let (code, _, text) = env.run(&["validate", "--all"]);
    assert_eq!(code, 3);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn validate_an_unknown_stamp_exits_3() {
    let env = Env::seeded();
    let (code, _, text) = env.run(&["validate", "20000101T000000Z"]);
    assert_eq!(code, 3);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn bad_stamps_are_rejected_before_any_path_is_built() {
    let env = Env::seeded();
    let long = "2".repeat(300);
    for bad in ["../x", "", long.as_str(), "20260101T000000Z/..", "..%2F..%2Fetc"] {
        let (code, stdout, text) = env.run(&["validate", bad]);
        assert_eq!(code, 2, "{text}");
        assert!(stdout.is_empty());
    }
    let (_, _, text) = env.run(&["restore", "20260101T000000Z/..", "--dry-run"]);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn create_without_a_db_exits_1_and_names_it() {
    let env = Env::empty();
    let (code, _, text) = env.run(&["create"]);
    assert_eq!(code, 1);
    env.settings().bind(|| insta::assert_snapshot!(text));
    assert!(
        !env.root.join("backups/snapshots").exists()
            || fs::read_dir(env.root.join("backups/snapshots")).unwrap().count() == 0
    );
}

#[test]
fn create_with_a_broken_registry_exits_1_and_names_it() {
    let env = Env::seeded();
    fs::write(&env.paths.registry_path, b"{oops").unwrap();
    let (code, _, text) = env.run(&["create"]);
    assert_eq!(code, 1);
    env.settings().bind(|| insta::assert_snapshot!(text));
    assert_eq!(
        fs::read_dir(env.root.join("backups/snapshots")).unwrap().count(),
        0
    );
}

#[test]
fn a_held_lock_exits_5_naming_the_holder() {
    let env = Env::seeded();
    let _lock =
        BackupDirLock::acquire(&env.paths, "restore", "2026-01-01T00:00:00Z".parse().unwrap()).unwrap();
    let (code, _, text) = env.run(&["create"]);
    assert_eq!(code, 5);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn restore_without_confirmation_exits_4_and_changes_nothing() {
    let env = Env::seeded();
    let stamp = env.create(true);
    let before = env.tree();
    let (code, _, text) = env.run(&["restore", &stamp]);
    assert_eq!(code, 4);
    env.settings().bind(|| insta::assert_snapshot!(text));
    assert_eq!(before, env.tree());
}

#[test]
fn restore_dry_run_prints_the_plan_and_changes_nothing() {
    let env = Env::seeded();
    let stamp = env.create(true);
    let before = env.tree();
    let (code, _, text) = env.run(&["restore", &stamp, "--dry-run"]);
    assert_eq!(code, 0);
    env.settings()
        .bind(|| insta::assert_snapshot!("dry_run_text", text));
    let (code, stdout, _) = env.run(&[
        "restore",
        &stamp,
        "--dry-run",
        "--json",
        "--no-chroma",
        "--no-pre-restore-snapshot",
    ]);
    assert_eq!(code, 0);
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    env.settings().bind(|| {
        insta::assert_json_snapshot!("dry_run_json", plan, {".steps[1].available_bytes" => "[FREE]"});
    });
    assert_eq!(before, env.tree());
}

#[test]
fn restore_prints_every_step_and_the_undo_command() {
    let env = Env::seeded();
    let stamp = env.create(true);
    let (code, _, text) = env.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(code, 0, "{text}");
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn restore_of_an_invalid_backup_exits_3() {
    let env = Env::seeded();
    let stamp = env.create(false);
    fs::write(
        env.root.join(format!("backups/snapshots/{stamp}/db/atocore.db")),
        b"not a db",
    )
    .unwrap();
    let before = env.tree();
    let (code, _, text) = env.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(code, 3);
    env.settings().bind(|| insta::assert_snapshot!(text));
    assert_eq!(before, env.tree());
}

#[test]
fn restore_of_chroma_from_a_backup_without_it_exits_4() {
    let env = Env::seeded();
    let stamp = env.create(false);
    let (code, _, text) = env.run(&["restore", &stamp, "--confirm-service-stopped", "--include-chroma"]);
    assert_eq!(code, 4);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn restore_of_an_unknown_stamp_exits_3_naming_it() {
    let env = Env::seeded();
    let (code, _, text) = env.run(&["restore", "20000101T000000Z", "--confirm-service-stopped"]);
    assert_eq!(code, 3);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn drill_passes_and_reports_json() {
    let env = Env::empty();
    let scratch = env.root.join("scratch");
    let (code, stdout, text) = env.run(&["drill", "--json", "--scratch-dir", scratch.as_str()]);
    assert_eq!(code, 0, "{text}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["success"], true);
    assert_eq!(report["steps"].as_array().unwrap().len(), 12);
    let (code, _, text) = env.run(&["drill", "--scratch-dir", env.root.join("scratch2").as_str()]);
    assert_eq!(code, 0);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn prune_without_a_policy_exits_2_and_deletes_nothing() {
    let env = Env::seeded();
    env.create(false);
    let before = env.tree();
    let (code, _, text) = env.run(&["prune"]);
    assert_eq!(code, 2);
    env.settings().bind(|| insta::assert_snapshot!(text));
    assert_eq!(before, env.tree());
}

#[test]
fn prune_dry_run_shows_the_plan_and_deletes_nothing() {
    let env = Env::seeded();
    for _ in 0..3 {
        env.create(false);
    }
    fs::create_dir_all(env.root.join("backups/snapshots/20200101T000000Z")).unwrap();
    let before = env.tree();
    let (code, _, text) = env.run(&["prune", "--keep-last", "2", "--dry-run"]);
    assert_eq!(code, 0);
    env.settings().bind(|| insta::assert_snapshot!(text));
    assert_eq!(before, env.tree());
}

#[test]
fn prune_removes_only_what_the_plan_says() {
    let env = Env::seeded();
    let stamps: Vec<String> = (0..3).map(|_| env.create(false)).collect();
    fs::create_dir_all(env.root.join("backups/snapshots/20200101T000000Z")).unwrap();
    let (code, stdout, _) = env.run(&["prune", "--keep-last", "1", "--json"]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["success"], true);
    let (_, stdout, _) = env.run(&["list", "--json"]);
    let listing: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let left: Vec<&str> = listing["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["stamp"].as_str().unwrap())
        .collect();
    // The newest is kept; the broken one is left for inspection, never pruned.
    assert_eq!(left, [stamps[2].as_str(), "20200101T000000Z"]);
    let (_, _, text) = env.run(&["prune", "--keep-last", "1"]);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn delete_removes_one_backup_and_names_an_unknown_one() {
    let env = Env::seeded();
    let stamp = env.create(false);
    let (code, _, text) = env.run(&["delete", &stamp]);
    assert_eq!(code, 0);
    env.settings().bind(|| insta::assert_snapshot!("delete_ok", text));
    assert!(!env.root.join(format!("backups/snapshots/{stamp}")).exists());
    let (code, _, text) = env.run(&["delete", &stamp]);
    assert_eq!(code, 3);
    env.settings()
        .bind(|| insta::assert_snapshot!("delete_unknown", text));
}

#[test]
fn a_bad_duration_is_bad_usage() {
    let env = Env::seeded();
    let (code, _, text) = env.run(&["prune", "--keep-within", "forever"]);
    assert_eq!(code, 2);
    env.settings().bind(|| insta::assert_snapshot!(text));
}

#[test]
fn a_second_create_says_what_it_shares_with_the_first() {
    let env = Env::seeded();
    env.create(true);
    let (code, _, text) = env.run(&["create", "--include-chroma"]);
    assert_eq!(code, 0);
    env.settings().bind(|| insta::assert_snapshot!(text));
}
