//! What an operator at 3 a.m. meets when something is off: one clear
//! sentence, the contract's exit code, nothing changed, never a panic.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use atocore_backup_tests::{Scratch, file_hash};
use fs_err as fs;

#[test]
fn a_snapshot_without_its_manifest_is_an_invalid_backup_to_restore() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(false);
    let manifest = scratch
        .paths
        .snapshots_dir()
        .join(&stamp)
        .join("backup-metadata.json");
    fs::remove_file(&manifest).unwrap();
    let before = file_hash(&scratch.paths.db_path);
    for args in [
        &["restore", &stamp, "--confirm-service-stopped"][..],
        &["restore", &stamp, "--dry-run"],
        &["validate", &stamp],
    ] {
        let output = scratch.run(args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(3), "{args:?}: {all}");
        assert!(all.contains("backup-metadata.json"), "{args:?}: {all}");
    }
    assert_eq!(before, file_hash(&scratch.paths.db_path));
}

#[test]
fn an_unknown_stamp_is_exit_3_in_every_command_and_names_the_nearest() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(false);
    // One digit off in the seconds.
    let last = stamp.chars().nth(14).unwrap().to_digit(10).unwrap();
    let typo = format!("{}{}Z", &stamp[..14], (last + 1) % 10);
    for args in [
        &["restore", &typo, "--confirm-service-stopped"][..],
        &["restore", &typo, "--dry-run"],
        &["delete", &typo],
        &["validate", &typo],
    ] {
        let output = scratch.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {stdout}{stderr}");
        if args[0] != "validate" {
            assert!(
                stderr.contains("no such backup") && stderr.contains(&format!("the nearest are `{stamp}`")),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let scratch = Scratch::seeded(100);
    let stamp = scratch.create(false);
    for args in [&["list"][..], &["list", "--json"], &["validate", &stamp]] {
        // A reader that is gone before the first byte (`list | head -0`),
        // with no race about when it goes.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = scratch.cli(args).stdout(writer).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn an_explicit_registry_path_that_names_nothing_fails_the_create() {
    let scratch = Scratch::seeded(100);
    let typo = scratch.root.join("data/config/project-registy.json");
    let output = scratch.run(&["--registry-path", typo.as_str(), "create"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("registry `{typo}` does not exist")),
        "{stderr}"
    );
    let listing = scratch.run(&["list", "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert!(
        atocore_backup_tests::listed_stamps(&listing).is_empty(),
        "no backup was made"
    );
    // The default path may be absent: no registry yet.
    fs::remove_file(&scratch.paths.registry_path).unwrap();
    let output = scratch.run(&["create"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("registry  absent at the source"));
}

/// The undo line is one command that works pasted into a shell anywhere,
/// and after an interrupted restore it goes back to before the incident.
#[test]
fn the_undo_line_can_be_pasted_and_names_the_state_before_the_incident() {
    let scratch = Scratch::seeded(200);
    let stamp = scratch.create(true);
    // Written after the backup: only the state before the incident has it.
    let marker_rows = |scratch: &Scratch| -> i64 {
        rusqlite::Connection::open(&scratch.paths.db_path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM memories WHERE content = 'after the backup'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    rusqlite::Connection::open(&scratch.paths.db_path)
        .unwrap()
        .execute(
            "INSERT INTO memories (project_id, content, embedding, created_at) VALUES (1, 'after the backup', x'00', 'later')",
            [],
        )
        .unwrap();
    assert_eq!(marker_rows(&scratch), 1);
    let crashed = scratch
        .cli(&["restore", &stamp, "--confirm-service-stopped"])
        .env("ATOCORE_BACKUP_CRASH_AT", "restore.after_db_swap")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let first_snapshot = {
        let marker: serde_json::Value =
            serde_json::from_slice(&fs::read(scratch.paths.restore_marker_path()).unwrap()).unwrap();
        marker["pre_restore_stamp"].as_str().unwrap().to_owned()
    };
    let finished = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stdout)
    );
    let text = String::from_utf8_lossy(&finished.stdout);
    let undo = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("undo with: "))
        .unwrap_or_else(|| panic!("no undo line: {text}"));
    assert!(undo.contains(&format!("restore {first_snapshot} ")), "{text}");
    // Pasted from another directory, with the bare binary name on PATH.
    let bin_dir = atocore_backup_tests::workspace_bin("atocore-backup")
        .parent()
        .unwrap()
        .to_owned();
    let pasted = std::process::Command::new("sh")
        .args(["-c", undo])
        .current_dir("/")
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .output()
        .unwrap();
    assert!(
        pasted.status.success(),
        "{}",
        String::from_utf8_lossy(&pasted.stderr)
    );
    assert_eq!(marker_rows(&scratch), 1, "back to before the incident");
}

#[test]
fn a_json_failure_is_json_on_stderr_with_the_exit_code() {
    let scratch = Scratch::seeded(100);
    let output = scratch.run(&["restore", "20000101T000000Z", "--dry-run", "--json"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(output.stdout.is_empty());
    let error: serde_json::Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(error["error"]["kind"], "not_found");
    assert_eq!(error["error"]["exit_code"], 3);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no such backup")
    );
}
