//! SIGKILL at named points and at random instants: the live db is always the
//! old bytes or the backup's, intact; the next `list` explains and the next
//! `restore` finishes the job.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use std::time::Duration;

use atocore_backup_tests::{Scratch, file_hash, integrity, tree_hashes_without_sidecars};
use fs_err as fs;

/// About 25 MB of db: big enough that copies take real time.
const ROWS: u32 = 60_000;

struct Prepared {
    scratch: Scratch,
    stamp: String,
    old_db: String,
    backup_db: String,
}

/// A runtime whose live db differs from its backup, with no WAL pending so
/// the "old" bytes are exactly the file's.
fn prepared() -> Prepared {
    let scratch = Scratch::seeded(ROWS);
    let stamp = scratch.create(true);
    let conn = rusqlite::Connection::open(&scratch.paths.db_path).unwrap();
    conn.execute("DELETE FROM memories WHERE id % 7 = 0", []).unwrap();
    conn.execute_batch("VACUUM").unwrap();
    drop(conn);
    fs::write(
        scratch.paths.chroma_dir.join("segment-0001/after.bin"),
        b"after the backup",
    )
    .unwrap();
    let old_db = file_hash(&scratch.paths.db_path);
    let backup_db = file_hash(
        &scratch
            .root
            .join(format!("backups/snapshots/{stamp}/db/atocore.db")),
    );
    assert_ne!(old_db, backup_db);
    Prepared {
        scratch,
        stamp,
        old_db,
        backup_db,
    }
}

fn assert_live_db_is_old_or_new(prepared: &Prepared, context: &str) {
    let db = &prepared.scratch.paths.db_path;
    let hash = file_hash(db);
    assert!(
        hash == prepared.old_db || hash == prepared.backup_db,
        "{context}: the live db is neither the old nor the backup's bytes"
    );
    assert_eq!(integrity(db), "ok", "{context}");
}

fn assert_chroma_is_whole(prepared: &Prepared, old_chroma: &[(String, String)], context: &str) {
    let backup = tree_hashes_without_sidecars(
        &prepared
            .scratch
            .root
            .join(format!("backups/snapshots/{}/chroma", prepared.stamp)),
    );
    let live = tree_hashes_without_sidecars(&prepared.scratch.paths.chroma_dir);
    assert!(
        live == backup || live == old_chroma,
        "{context}: chroma is a mix of old and new: {live:?}"
    );
}

fn restore_args(stamp: &str) -> Vec<&str> {
    vec!["restore", stamp, "--confirm-service-stopped", "--json"]
}

#[test]
fn sigkill_at_every_named_restore_point_leaves_old_or_new_and_the_next_restore_finishes() {
    let points = [
        "restore.after_marker",
        "restore.before_db_rename",
        "restore.after_db_swap",
        "restore.before_registry_rename",
        "restore.after_registry",
        "restore.chroma_staged",
        "restore.chroma_exchanged",
        "restore.after_chroma",
    ];
    for point in points {
        let prepared = prepared();
        let old_chroma = tree_hashes_without_sidecars(&prepared.scratch.paths.chroma_dir);
        let old_registry = file_hash(&prepared.scratch.paths.registry_path);
        let output = prepared
            .scratch
            .cli(&restore_args(&prepared.stamp))
            .env("ATOCORE_BACKUP_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{point}: the process should have died");
        assert_live_db_is_old_or_new(&prepared, point);
        assert_chroma_is_whole(&prepared, &old_chroma, point);
        let registry = file_hash(&prepared.scratch.paths.registry_path);
        let backup_registry = file_hash(&prepared.scratch.root.join(format!(
            "backups/snapshots/{}/config/project-registry.json",
            prepared.stamp
        )));
        assert!(
            registry == old_registry || registry == backup_registry,
            "{point}: torn registry"
        );

        // `list` names the unfinished restore.
        let list = prepared.scratch.run(&["list"]);
        let warnings = String::from_utf8_lossy(&list.stderr);
        assert!(
            warnings.contains("did not finish"),
            "{point}: list did not warn: {warnings}"
        );
        assert!(warnings.contains(&prepared.stamp), "{point}: {warnings}");
        if point == "restore.before_db_rename" {
            assert!(
                warnings.contains(".atocore.db.restore-tmp` is left from an interrupted restore"),
                "{warnings}"
            );
        }
        if point == "restore.chroma_staged" {
            assert!(
                warnings.contains(".chroma.restore-new` is left from an interrupted restore"),
                "{warnings}"
            );
        }

        // The next restore names the interrupted one and completes.
        let again = prepared.scratch.run(&restore_args(&prepared.stamp));
        assert!(
            again.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&again.stdout)
        );
        let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
        let warnings = report["warnings"].to_string();
        assert!(warnings.contains("did not finish"), "{point}: {warnings}");
        assert_eq!(
            file_hash(&prepared.scratch.paths.db_path),
            prepared.backup_db,
            "{point}"
        );
        assert_eq!(
            tree_hashes_without_sidecars(&prepared.scratch.paths.chroma_dir),
            tree_hashes_without_sidecars(
                &prepared
                    .scratch
                    .root
                    .join(format!("backups/snapshots/{}/chroma", prepared.stamp))
            ),
            "{point}"
        );
        assert!(!prepared.scratch.paths.restore_marker_path().exists(), "{point}");
        let list = prepared.scratch.run(&["list"]);
        assert!(
            String::from_utf8_lossy(&list.stderr).is_empty(),
            "{point}: leftovers after finishing"
        );
    }
}

#[test]
fn sigkill_at_random_instants_of_a_restore_leaves_old_or_new() {
    random_restore_kills(5, 150);
}

/// The heavy variant: `cargo test -p atocore-backup-tests -- --ignored`.
#[test]
#[ignore = "minutes of work: run with --ignored"]
fn sigkill_at_random_instants_of_a_restore_many_rounds() {
    random_restore_kills(40, 600);
}

fn random_restore_kills(rounds: u32, max_delay_ms: u64) {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    for round in 0..rounds {
        let prepared = prepared();
        let old_chroma = tree_hashes_without_sidecars(&prepared.scratch.paths.chroma_dir);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(5 + (seed >> 33) % max_delay_ms);
        let mut child = prepared
            .scratch
            .cli(&restore_args(&prepared.stamp))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let context = format!("round {round}, killed after {delay:?}");
        assert_live_db_is_old_or_new(&prepared, &context);
        assert_chroma_is_whole(&prepared, &old_chroma, &context);
        let again = prepared.scratch.run(&restore_args(&prepared.stamp));
        assert!(
            again.status.success(),
            "{context}: {}",
            String::from_utf8_lossy(&again.stdout)
        );
        assert_eq!(
            file_hash(&prepared.scratch.paths.db_path),
            prepared.backup_db,
            "{context}"
        );
    }
}

#[test]
fn sigkill_during_create_leaves_no_listed_backup_and_the_next_create_cleans_up() {
    for point in ["create.after_db", "create.after_chroma", "create.before_rename"] {
        let scratch = Scratch::seeded(2_000);
        let output = scratch
            .cli(&["create", "--include-chroma"])
            .env("ATOCORE_BACKUP_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{point}");
        let list = scratch.run(&["list", "--json"]);
        let listing: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(
            listing["backups"].as_array().unwrap().len(),
            0,
            "{point}: {listing}"
        );
        assert!(
            listing["warnings"].to_string().contains(".partial-"),
            "{point}: {listing}"
        );
        scratch.create(true);
        let snapshots: Vec<_> = fs::read_dir(scratch.root.join("backups/snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(snapshots.len(), 1, "{point}: {snapshots:?}");
        assert!(!snapshots[0].starts_with('.'), "{point}");
    }
}

#[test]
fn a_crash_during_delete_never_leaves_a_half_deleted_backup_listed() {
    let scratch = Scratch::seeded(2_000);
    let doomed = scratch.create(true);
    let kept = scratch.create(false);
    let output = scratch
        .cli(&["delete", &doomed])
        .env("ATOCORE_BACKUP_CRASH_AT", "delete.after_rename")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let list = scratch.run(&["list", "--json"]);
    let listing: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let stamps = atocore_backup_tests::listed_stamps(&listing);
    assert_eq!(stamps, [kept.as_str()]);
    assert!(
        listing["warnings"]
            .to_string()
            .contains(&format!(".deleting-{doomed}")),
        "{listing}"
    );
    scratch.create(false);
    assert!(
        !scratch
            .root
            .join(format!("backups/snapshots/.deleting-{doomed}"))
            .exists()
    );
}

#[test]
fn sigkill_at_random_instants_of_a_create_never_lists_an_incomplete_backup() {
    let scratch = Scratch::seeded(ROWS);
    for delay_ms in [5, 20, 60, 120] {
        let mut child = scratch
            .cli(&["create", "--include-chroma"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let validate = scratch.run(&["validate", "--all", "--json"]);
        let all: serde_json::Value = serde_json::from_slice(&validate.stdout).unwrap();
        assert_eq!(all["all_valid"], true, "after a kill at {delay_ms} ms: {all}");
    }
}
