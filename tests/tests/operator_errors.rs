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
