//! Restore on real runtimes: the cases of the original tool, ported, and the gates.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

mod common;

use std::os::unix::fs::MetadataExt;

use atocore_backup_core::{
    Error, NoProgress, RestoreOptions, ServiceLock, StepStatus, list_backups, restore_backup, validate_backup,
};
use common::{Runtime, restore_options};
use fs_err as fs;
use rusqlite::Connection;

const MARKER_SQL: &str = "INSERT INTO memories (project_id, content, embedding, created_at) VALUES (1, 'post-backup', x'00', 'later')";
const COUNT_MARKER: &str = "SELECT count(*) FROM memories WHERE content = 'post-backup'";

fn try_restore(
    runtime: &Runtime,
    stamp: &atocore_backup_core::Stamp,
) -> Result<atocore_backup_core::RestoreReport, Error> {
    restore_backup(&runtime.paths, stamp, &restore_options(), true, &NoProgress)
}

fn restore(
    runtime: &Runtime,
    stamp: &atocore_backup_core::Stamp,
    options: RestoreOptions,
) -> atocore_backup_core::RestoreReport {
    restore_backup(&runtime.paths, stamp, &options, true, &NoProgress).unwrap()
}

#[test]
fn refuses_without_confirmation_and_changes_nothing() {
    let runtime = Runtime::seeded(50);
    let manifest = runtime.backup(true);
    let before = runtime.tree();
    let error = restore_backup(
        &runtime.paths,
        &manifest.stamp,
        &restore_options(),
        false,
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(error, Error::NotConfirmed { .. }));
    assert!(error.to_string().contains("--confirm-service-stopped"));
    assert_eq!(before, runtime.tree());
}

#[test]
fn refuses_an_invalid_backup_before_touching_anything() {
    let runtime = Runtime::seeded(50);
    let manifest = runtime.backup(true);
    let chroma_file = runtime
        .snapshot(&manifest.stamp)
        .join("chroma/segment-0001/header.bin");
    fs::write(&chroma_file, b"tampered").unwrap();
    runtime.db().execute(MARKER_SQL, []).unwrap();
    let before = runtime.tree();
    let report = restore(&runtime, &manifest.stamp, restore_options());
    assert!(!report.success);
    let failed = report.failed_step().unwrap();
    assert_eq!(failed.step.name(), "validate_backup");
    assert!(
        failed.detail.contains("segment-0001/header.bin"),
        "{}",
        failed.detail
    );
    assert!(report.steps[1..].iter().all(|s| s.status == StepStatus::Skipped));
    assert_eq!(before, runtime.tree());
}

#[test]
fn round_trip_reverses_post_backup_mutations() {
    let runtime = Runtime::seeded(200);
    let manifest = runtime.backup(false);
    runtime.db().execute(MARKER_SQL, []).unwrap();
    fs::write(&runtime.paths.registry_path, br#"{"projects": ["mutated"]}"#).unwrap();

    let report = restore(&runtime, &manifest.stamp, restore_options());
    assert!(report.success, "{report:#?}");
    assert_eq!(report.integrity_check.as_deref(), Some("ok"));
    let integrity = report
        .steps
        .iter()
        .find(|s| s.step.name() == "integrity_check")
        .unwrap();
    assert!(
        integrity.detail.contains("its verified copy"),
        "{}",
        integrity.detail
    );
    assert_eq!(runtime.count(COUNT_MARKER), 0);
    assert_eq!(runtime.count("SELECT count(*) FROM memories"), 200);
    assert!(
        !fs::read_to_string(&runtime.paths.registry_path)
            .unwrap()
            .contains("mutated")
    );
    assert!(!runtime.paths.restore_marker_path().exists());

    // The pre-restore snapshot holds the mutation, so the restore can be undone.
    let pre = report.pre_restore_stamp.clone().unwrap();
    let listing = list_backups(&runtime.paths).unwrap();
    assert_eq!(listing.backups[0].stamp, pre.as_str());
    assert_eq!(listing.backups[0].restored_from.as_ref(), Some(&manifest.stamp));
    // Captured by hard link (`capture_held_db`), it no longer shares a file
    // with the live db once the restore renamed the new db into place.
    let pre_db = runtime.snapshot(&pre).join("db/atocore.db");
    assert_eq!(fs::metadata(&pre_db).unwrap().nlink(), 1);
    assert!(validate_backup(&runtime.paths.backup_dir, &pre).unwrap().valid);
    runtime.db().execute(MARKER_SQL, []).unwrap();
    assert!(
        validate_backup(&runtime.paths.backup_dir, &pre).unwrap().valid,
        "writes to the live db never reach the snapshot"
    );
    runtime
        .db()
        .execute("DELETE FROM memories WHERE content = 'post-backup'", [])
        .unwrap();

    let undo = restore(&runtime, &pre, restore_options());
    assert!(undo.success);
    assert_eq!(runtime.count(COUNT_MARKER), 1);
    assert!(
        fs::read_to_string(&runtime.paths.registry_path)
            .unwrap()
            .contains("mutated")
    );
}

#[test]
fn round_trip_with_chroma_replaces_the_whole_tree() {
    let runtime = Runtime::seeded(20);
    let manifest = runtime.backup(true);
    let extra = runtime.paths.chroma_dir.join("segment-0001/added.bin");
    fs::write(&extra, b"new").unwrap();
    fs::write(
        runtime.paths.chroma_dir.join("segment-0001/header.bin"),
        b"changed",
    )
    .unwrap();
    fs::create_dir(runtime.paths.chroma_dir.join("segment-0002")).unwrap();

    let report = restore(&runtime, &manifest.stamp, restore_options());
    assert!(report.success, "{report:#?}");
    assert!(report.include_chroma);
    assert!(!extra.exists());
    assert!(!runtime.paths.chroma_dir.join("segment-0002").exists());
    for file in &manifest.chroma.as_ref().unwrap().files {
        let live = fs::read(runtime.paths.chroma_dir.join(&file.path)).unwrap();
        assert_eq!(
            file.checksum.to_string(),
            format!("blake3:{}", blake3::hash(&live).to_hex()),
            "{}",
            file.path
        );
    }
    // No staging or old tree is left beside it.
    let beside: Vec<_> = fs::read_dir(runtime.paths.chroma_dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        beside.iter().filter(|n| n.contains("chroma")).count(),
        1,
        "{beside:?}"
    );
    let pre = report.pre_restore_stamp.unwrap();
    let pre_report = validate_backup(&runtime.paths.backup_dir, &pre).unwrap();
    let pre_files = &pre_report.manifest.unwrap().chroma.unwrap().files;
    assert!(pre_files.iter().any(|f| f.path == "segment-0001/added.bin"));
}

#[test]
fn skips_the_pre_restore_snapshot_when_asked() {
    let runtime = Runtime::seeded(20);
    let manifest = runtime.backup(false);
    let options = RestoreOptions {
        include_chroma: None,
        pre_restore_snapshot: false,
        chown: None,
    };
    let report = restore(&runtime, &manifest.stamp, options);
    assert!(report.success);
    assert!(report.pre_restore_stamp.is_none());
    let step = report
        .steps
        .iter()
        .find(|s| s.step.name() == "pre_restore_snapshot")
        .unwrap();
    assert_eq!(step.status, StepStatus::Skipped);
    assert_eq!(list_backups(&runtime.paths).unwrap().backups.len(), 1);
}

/// Commits a row that lives only in the -wal: closing without a checkpoint
/// leaves a hot -wal beside the db, as a crashed service would.
fn leave_hot_wal(runtime: &Runtime) -> Vec<u8> {
    let conn = runtime.db();
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .unwrap();
    conn.execute(MARKER_SQL, []).unwrap();
    drop(conn);
    let wal = fs::read(format!("{}-wal", runtime.paths.db_path)).unwrap();
    assert!(wal.len() > 32, "the -wal must hold frames");
    wal
}

#[test]
fn a_hot_wal_is_checkpointed_into_the_snapshot_and_stale_sidecars_do_not_survive() {
    let runtime = Runtime::seeded(100);
    let manifest = runtime.backup(false);
    let hot_wal = leave_hot_wal(&runtime);
    fs::write(format!("{}-shm", runtime.paths.db_path), vec![0xa5; 32 * 1024]).unwrap();

    let report = restore(&runtime, &manifest.stamp, restore_options());
    assert!(report.success, "{report:#?}");
    let wal_path = format!("{}-wal", runtime.paths.db_path);
    // Checked by content: whatever -wal exists now holds none of the old frames.
    let wal_now = fs::read(&wal_path).unwrap_or_default();
    assert!(wal_now.is_empty() || wal_now[32..] != hot_wal[32..wal_now.len().min(hot_wal.len())]);
    assert_eq!(runtime.count(COUNT_MARKER), 0);
    assert_eq!(runtime.count("SELECT count(*) FROM memories"), 100);

    // The committed row that was only in the -wal is in the pre-restore snapshot.
    let pre = report.pre_restore_stamp.unwrap();
    let copy = Connection::open_with_flags(
        format!(
            "file:{}?immutable=1",
            runtime.snapshot(&pre).join("db/atocore.db")
        ),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let marker: i64 = copy.query_row(COUNT_MARKER, [], |r| r.get(0)).unwrap();
    assert_eq!(marker, 1);
}

#[test]
fn a_stale_wal_from_another_life_never_meets_the_restored_db() {
    let runtime = Runtime::seeded(100);
    let manifest = runtime.backup(false);
    let hot_wal = leave_hot_wal(&runtime);
    // Checkpoint it away, then put the old frames back: a -wal that belongs
    // to a state of the db that no longer exists.
    runtime
        .db()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    runtime
        .db()
        .execute("DELETE FROM memories WHERE content = 'post-backup'", [])
        .unwrap();
    runtime
        .db()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    fs::write(format!("{}-wal", runtime.paths.db_path), &hot_wal).unwrap();

    let report = restore(
        &runtime,
        &manifest.stamp,
        RestoreOptions {
            include_chroma: None,
            pre_restore_snapshot: false,
            chown: None,
        },
    );
    assert!(report.success, "{report:#?}");
    assert_eq!(runtime.count(COUNT_MARKER), 0);
    assert_eq!(runtime.count("SELECT count(*) FROM memories"), 100);
    let integrity: String = runtime
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn refuses_while_the_service_lock_is_held() {
    let runtime = Runtime::seeded(20);
    let manifest = runtime.backup(false);
    let _service = ServiceLock::acquire(&runtime.paths).unwrap();
    let before = runtime.tree();
    let error = try_restore(&runtime, &manifest.stamp).unwrap_err();
    assert!(matches!(error, Error::ServiceRunning { .. }), "{error}");
    assert_eq!(before, runtime.tree());
}

#[test]
fn refuses_while_another_connection_holds_a_write_transaction() {
    let runtime = Runtime::seeded(20);
    let manifest = runtime.backup(false);
    let writer = runtime.db();
    writer.execute_batch("BEGIN IMMEDIATE;").unwrap();
    writer.execute(MARKER_SQL, []).unwrap();
    let error = try_restore(&runtime, &manifest.stamp).unwrap_err();
    // The open-file gate sees the writer before `BEGIN EXCLUSIVE` would.
    assert!(matches!(error, Error::DbOpenElsewhere { .. }), "{error}");
    assert!(error.to_string().contains("atocore.db"));
    writer.execute_batch("ROLLBACK;").unwrap();
}

#[test]
fn asking_for_chroma_from_a_backup_without_it_is_refused() {
    let runtime = Runtime::seeded(20);
    let manifest = runtime.backup(false);
    let options = RestoreOptions {
        include_chroma: Some(true),
        pre_restore_snapshot: true,
        chown: None,
    };
    let error = restore_backup(&runtime.paths, &manifest.stamp, &options, true, &NoProgress).unwrap_err();
    assert!(error.to_string().contains("does not include chroma"), "{error}");
    assert!(!runtime.paths.restore_marker_path().exists());
}

#[test]
fn the_service_lock_cannot_be_taken_while_a_restore_marker_exists() {
    let runtime = Runtime::seeded(20);
    fs::write(runtime.paths.restore_marker_path(), br#"{"stamp":"20260101T000000Z","started_at":"2026-01-01T00:00:00Z","pid":1,"pre_restore_stamp":null}"#).unwrap();
    let error = ServiceLock::acquire(&runtime.paths).unwrap_err();
    assert!(matches!(error, Error::RestoreInProgress { .. }));
    assert!(error.to_string().contains("20260101T000000Z"), "{error}");
    let listing = list_backups(&runtime.paths).unwrap();
    assert!(
        listing.warnings[0].contains("did not finish"),
        "{:?}",
        listing.warnings
    );
}

#[test]
fn restoring_into_other_paths_is_a_rehearsal() {
    let runtime = Runtime::seeded(30);
    let manifest = runtime.backup(true);
    let mut rehearsal = atocore_backup_core::RuntimePaths::under(&runtime.root.join("rehearsal"));
    rehearsal.backup_dir = runtime.paths.backup_dir.clone();
    let report = restore_backup(&rehearsal, &manifest.stamp, &restore_options(), true, &NoProgress).unwrap();
    assert!(report.success, "{report:#?}");
    assert!(
        report.pre_restore_stamp.is_none(),
        "there was no live db to snapshot"
    );
    let conn = Connection::open(&rehearsal.db_path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM memories", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 30);
    assert!(rehearsal.chroma_dir.join("chroma.sqlite3").is_file());
}

#[test]
fn a_reader_stops_the_restore_at_the_gate_with_or_without_a_snapshot() {
    for pre_restore_snapshot in [true, false] {
        let options = RestoreOptions {
            include_chroma: None,
            pre_restore_snapshot,
            chown: None,
        };
        refused_while_a_reader_is_open(options);
    }
}

/// Restores while a connection of this very process holds a read
/// transaction over a hot `-wal` (`BEGIN EXCLUSIVE` succeeds in WAL mode, so
/// only the open-file gate sees it) and checks that nothing live changed.
fn refused_while_a_reader_is_open(options: RestoreOptions) {
    let runtime = Runtime::seeded(100);
    let manifest = runtime.backup(false);
    leave_hot_wal(&runtime);
    let reader = runtime.db();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM memories", [], |r| r.get(0))
        .unwrap();
    let before = runtime.tree();
    let error = restore_backup(&runtime.paths, &manifest.stamp, &options, true, &NoProgress).unwrap_err();
    assert!(matches!(error, Error::DbOpenElsewhere { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("pid {} (", std::process::id())),
        "a host's own connection counts: {error}"
    );
    assert_eq!(before, runtime.tree(), "nothing changed, no snapshot taken");
    assert_eq!(list_backups(&runtime.paths).unwrap().backups.len(), 1);
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    assert_eq!(runtime.count(COUNT_MARKER), 1, "the committed row is still there");
}

#[test]
fn a_failed_restore_never_removes_the_marker_of_an_earlier_interrupted_one() {
    let runtime = Runtime::seeded(20);
    let manifest = runtime.backup(false);
    let marker = br#"{"stamp":"20260101T000000Z","started_at":"2026-01-01T00:00:00Z","pid":1,"pre_restore_stamp":null}"#;
    fs::write(runtime.paths.restore_marker_path(), marker).unwrap();
    fs::write(
        runtime.snapshot(&manifest.stamp).join("db/atocore.db"),
        b"damaged",
    )
    .unwrap();
    let report = restore(&runtime, &manifest.stamp, restore_options());
    assert_eq!(report.failed_step().unwrap().step.name(), "validate_backup");
    assert_eq!(
        fs::read(runtime.paths.restore_marker_path()).unwrap(),
        marker,
        "the half-restored runtime stays blocked"
    );
}

#[test]
#[allow(clippy::print_stderr)] // says why it was skipped
fn backups_on_another_filesystem_are_copied_where_a_link_is_impossible() {
    // tmpfs: hard links to the runtime and in-kernel copies from it fail
    // with EXDEV, so the capture copies and the copies fall back to reading.
    let Ok(elsewhere) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm here: skipping");
        return;
    };
    let mut runtime = Runtime::seeded(300);
    runtime.paths.backup_dir = camino::Utf8PathBuf::from_path_buf(elsewhere.path().to_owned()).unwrap();
    let manifest = runtime.backup(true);
    runtime.db().execute(MARKER_SQL, []).unwrap();
    fs::write(runtime.paths.chroma_dir.join("segment-0001/added.bin"), b"after").unwrap();

    let report = restore(&runtime, &manifest.stamp, restore_options());
    assert!(report.success, "{report:#?}");
    assert_eq!(runtime.count(COUNT_MARKER), 0);
    assert!(!runtime.paths.chroma_dir.join("segment-0001/added.bin").exists());
    let pre = report.pre_restore_stamp.unwrap();
    assert!(validate_backup(&runtime.paths.backup_dir, &pre).unwrap().valid);
    let undo = restore(&runtime, &pre, restore_options());
    assert!(undo.success, "{undo:#?}");
    assert_eq!(runtime.count(COUNT_MARKER), 1);
    assert!(runtime.paths.chroma_dir.join("segment-0001/added.bin").exists());
}
