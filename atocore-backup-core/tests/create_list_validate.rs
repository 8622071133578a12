//! create, list and validate on real runtimes.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use atocore_backup_core::{
    BackupDirLock, BackupKind, CreateOptions, Error, NoProgress, create_backup, list_backups, validate_backup,
};
use common::Runtime;
use fs_err as fs;

#[test]
fn round_trip_creates_lists_and_validates_with_independent_checksums() {
    let runtime = Runtime::seeded(3000);
    let manifest = runtime.backup(true);
    let dir = runtime.snapshot(&manifest.stamp);

    let listing = list_backups(&runtime.paths).unwrap();
    assert_eq!(listing.backups.len(), 1);
    assert_eq!(listing.backups[0].stamp, manifest.stamp.as_str());
    assert!(listing.backups[0].has_chroma && listing.backups[0].has_registry);
    assert!(listing.warnings.is_empty(), "{:?}", listing.warnings);

    let report = validate_backup(&runtime.paths.backup_dir, &manifest.stamp).unwrap();
    assert!(report.valid, "{:?}", report.errors);
    assert_eq!(
        (report.db_ok, report.registry_ok, report.chroma_ok),
        (true, Some(true), Some(true))
    );

    // An independent BLAKE3 of every file agrees with the manifest.
    let mut recorded = 0;
    for (path, size, checksum) in manifest.files() {
        let bytes = fs::read(dir.join(&path)).unwrap();
        assert_eq!(bytes.len() as u64, size, "{path}");
        assert_eq!(
            checksum.to_string(),
            format!("blake3:{}", blake3::hash(&bytes).to_hex()),
            "{path}"
        );
        recorded += 1;
    }
    assert_eq!(recorded, 2 + manifest.chroma.as_ref().unwrap().files.len());
    // Copied by whichever thread was free, recorded in the tree's order.
    let chroma_paths: Vec<&str> = manifest
        .chroma
        .as_ref()
        .unwrap()
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert!(
        chroma_paths.len() > 2 && chroma_paths.is_sorted(),
        "{chroma_paths:?}"
    );
    // The chroma sidecars are folded into the online backup, never copied raw.
    assert!(
        manifest
            .chroma
            .as_ref()
            .unwrap()
            .files
            .iter()
            .all(|f| !f.path.ends_with("-wal"))
    );

    let copy = open_immutable(&dir.join(&manifest.db.path));
    let rows: i64 = copy
        .query_row("SELECT count(*) FROM memories", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3000);
    assert_eq!(manifest.db.user_version, atocore_backup_core::SEED_SCHEMA_VERSION);

    if which("b3sum") {
        let status = std::process::Command::new("b3sum")
            .args(["-c", "--quiet", "B3SUMS"])
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "b3sum -c B3SUMS failed in {dir}");
    } else {
        eprintln!("b3sum not installed (scripts/install-test-deps installs it): skipping `b3sum -c`");
    }
}

fn which(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn an_absent_registry_is_recorded_as_null_and_chroma_only_when_asked() {
    let runtime = Runtime::seeded(10);
    fs::remove_file(&runtime.paths.registry_path).unwrap();
    let manifest = runtime.backup(false);
    assert!(manifest.registry.is_none());
    assert!(manifest.chroma.is_none());
    assert!(!runtime.snapshot(&manifest.stamp).join("chroma").exists());
    let report = validate_backup(&runtime.paths.backup_dir, &manifest.stamp).unwrap();
    assert!(report.valid);
    assert_eq!((report.registry_ok, report.chroma_ok), (None, None));
}

#[test]
fn stamps_that_collide_get_a_numeric_suffix() {
    let runtime = Runtime::seeded(10);
    let stamps: Vec<_> = (0..3).map(|_| runtime.backup(false).stamp).collect();
    // All three usually land in the same second; whenever two do, the
    // second gets `-2`, and every stamp is distinct.
    assert_eq!(stamps.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
    if stamps[0].as_str() == &stamps[1].as_str()[..16] {
        assert_eq!(stamps[1].as_str(), format!("{}-2", stamps[0]));
    }
    let listed: Vec<_> = list_backups(&runtime.paths)
        .unwrap()
        .backups
        .into_iter()
        .map(|b| b.stamp)
        .collect();
    let mut newest_first: Vec<_> = stamps.iter().map(|s| s.to_string()).collect();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
}

#[test]
fn a_hot_backup_holds_a_row_count_between_before_and_after() {
    let runtime = Runtime::seeded(500);
    let stop = Arc::new(AtomicBool::new(false));
    let db_path = runtime.paths.db_path.clone();
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db_path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            let mut inserted = 0;
            while !stop.load(Ordering::Relaxed) {
                conn.execute(
                    "INSERT INTO memories (project_id, content, embedding, created_at) VALUES (1, 'hot', randomblob(512), 'now')",
                    [],
                )
                .unwrap();
                inserted += 1;
            }
            inserted
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = runtime.count("SELECT count(*) FROM memories");
    let manifest = runtime.backup(true);
    let after = runtime.count("SELECT count(*) FROM memories");
    stop.store(true, Ordering::Relaxed);
    let inserted = writer.join().unwrap();
    assert!(inserted > 0);

    let report = validate_backup(&runtime.paths.backup_dir, &manifest.stamp).unwrap();
    assert!(report.valid, "{:?}", report.errors);
    let copy = open_immutable(&runtime.snapshot(&manifest.stamp).join(&manifest.db.path));
    let rows: i64 = copy
        .query_row("SELECT count(*) FROM memories", [], |r| r.get(0))
        .unwrap();
    assert!(before <= rows && rows <= after, "{before} <= {rows} <= {after}");
}

fn open_immutable(path: &camino::Utf8Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        format!("file:{path}?immutable=1"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap()
}

fn assert_no_snapshot_left(runtime: &Runtime) {
    let snapshots = runtime.paths.snapshots_dir();
    let left: Vec<_> = fs::read_dir(&snapshots)
        .map(|entries| entries.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {snapshots}: {left:?}");
}

#[test]
fn a_missing_db_fails_naming_it_and_leaves_nothing() {
    let runtime = Runtime::empty();
    let error = create_backup(&runtime.paths, &CreateOptions::default(), &NoProgress).unwrap_err();
    assert!(matches!(error, Error::DbMissing { .. }));
    assert!(error.to_string().contains(runtime.paths.db_path.as_str()));
    assert_no_snapshot_left(&runtime);
}

#[test]
fn a_db_inside_the_chroma_dir_is_refused_with_chroma_and_backed_up_without() {
    let mut runtime = Runtime::seeded(50);
    let inside = runtime.paths.chroma_dir.join("atocore.db");
    fs::rename(&runtime.paths.db_path, &inside).unwrap();
    runtime.paths.db_path = inside;
    let with_chroma = CreateOptions {
        include_chroma: true,
        ..CreateOptions::default()
    };
    let error = create_backup(&runtime.paths, &with_chroma, &NoProgress).unwrap_err();
    assert!(matches!(error, Error::DbInsideChroma { .. }), "{error}");
    assert!(error.to_string().contains(runtime.paths.db_path.as_str()));
    assert_no_snapshot_left(&runtime);
    // Without chroma nothing reads the db but SQLite.
    let manifest = runtime.backup(false);
    runtime.assert_valid(&manifest.stamp);
}

#[test]
fn an_unparseable_registry_fails_the_backup_and_leaves_nothing() {
    let runtime = Runtime::seeded(10);
    fs::write(&runtime.paths.registry_path, b"{\"projects\": [").unwrap();
    let error = create_backup(&runtime.paths, &CreateOptions::default(), &NoProgress).unwrap_err();
    assert!(matches!(error, Error::RegistryJson { .. }), "{error}");
    assert!(error.to_string().contains("project-registry.json"));
    assert_no_snapshot_left(&runtime);
}

#[test]
fn an_unreadable_registry_fails_naming_it_and_leaves_nothing() {
    let runtime = Runtime::seeded(10);
    fs::remove_file(&runtime.paths.registry_path).unwrap();
    // A directory where the file should be cannot be read, even by root.
    fs::create_dir(&runtime.paths.registry_path).unwrap();
    let error = create_backup(&runtime.paths, &CreateOptions::default(), &NoProgress).unwrap_err();
    assert!(
        error.chain().contains("project-registry.json"),
        "{}",
        error.chain()
    );
    assert_no_snapshot_left(&runtime);
}

#[test]
fn an_unwritable_backup_dir_fails_naming_it() {
    let runtime = Runtime::seeded(10);
    let blocker = runtime.root.join("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    let mut paths = runtime.paths.clone();
    paths.backup_dir = blocker.join("backups");
    let error = create_backup(&paths, &CreateOptions::default(), &NoProgress).unwrap_err();
    assert!(error.chain().contains("not-a-dir"), "{}", error.chain());
}

#[test]
fn symlinks_inside_chroma_are_refused_not_followed() {
    let runtime = Runtime::seeded(10);
    std::os::unix::fs::symlink("/etc", runtime.paths.chroma_dir.join("escape")).unwrap();
    let error = create_backup(
        &runtime.paths,
        &CreateOptions {
            include_chroma: true,
            ..CreateOptions::default()
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(error, Error::SymlinkRefused { .. }), "{error}");
    assert_no_snapshot_left(&runtime);
}

#[test]
fn a_second_operation_fails_at_once_naming_the_lock_holder() {
    let runtime = Runtime::seeded(10);
    let _held =
        BackupDirLock::acquire(&runtime.paths, "create", "2026-01-01T00:00:00Z".parse().unwrap()).unwrap();
    let error = create_backup(&runtime.paths, &CreateOptions::default(), &NoProgress).unwrap_err();
    assert!(matches!(error, Error::Busy { .. }));
    let text = error.to_string();
    assert!(text.contains(".lock") && text.contains("create since"), "{text}");
}

#[test]
fn leftover_partials_are_listed_as_leftovers_and_removed_by_the_next_create() {
    let runtime = Runtime::seeded(10);
    let partial = runtime.paths.snapshots_dir().join(".partial-20260101T000000Z");
    fs::create_dir_all(partial.join("db")).unwrap();
    let listing = list_backups(&runtime.paths).unwrap();
    assert!(listing.backups.is_empty());
    assert!(
        listing
            .warnings
            .iter()
            .any(|w| w.contains(".partial-20260101T000000Z")),
        "{:?}",
        listing.warnings
    );
    runtime.backup(false);
    assert!(!partial.exists());
}

#[test]
fn directories_without_a_readable_manifest_are_listed_as_broken() {
    let runtime = Runtime::seeded(10);
    let good = runtime.backup(false);
    fs::create_dir_all(runtime.paths.snapshots_dir().join("20200101T000000Z")).unwrap();
    fs::create_dir_all(runtime.paths.snapshots_dir().join("not-a-stamp")).unwrap();
    let listing = list_backups(&runtime.paths).unwrap();
    let names: Vec<_> = listing
        .backups
        .iter()
        .map(|b| (b.stamp.as_str(), b.broken.is_some()))
        .collect();
    assert_eq!(
        names,
        [
            (good.stamp.as_str(), false),
            ("20200101T000000Z", true),
            ("not-a-stamp", true)
        ]
    );
    assert_eq!(listing.backups[0].kind, Some(BackupKind::Manual));
}

#[test]
fn validation_never_modifies_the_backup() {
    let runtime = Runtime::seeded(100);
    let manifest = runtime.backup(true);
    let before = runtime.tree();
    validate_backup(&runtime.paths.backup_dir, &manifest.stamp).unwrap();
    assert_eq!(before, runtime.tree());
}

#[test]
fn a_chroma_file_that_keeps_changing_is_never_recorded_as_good() {
    let runtime = Runtime::seeded(10);
    let hot = runtime.paths.chroma_dir.join("segment-0001/data_level0.bin");
    fs::write(&hot, vec![7u8; 16 << 20]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let hot = hot.clone();
        std::thread::spawn(move || {
            use std::io::{Seek, SeekFrom, Write};
            let mut file = fs::OpenOptions::new().write(true).open(&hot).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Rewrite in place, as an HNSW index update does: size stays, mtime moves.
                file.seek(SeekFrom::Start(n % (16 << 20))).unwrap();
                file.write_all(&n.to_le_bytes()).unwrap();
                file.sync_data().unwrap();
                n += 4096;
            }
        })
    };
    let result = create_backup(
        &runtime.paths,
        &CreateOptions {
            include_chroma: true,
            ..CreateOptions::default()
        },
        &NoProgress,
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let error = result.unwrap_err();
    assert!(
        matches!(error, Error::ChromaUnstable { attempts: 3, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("data_level0.bin"));
    assert_no_snapshot_left(&runtime);
}

#[test]
fn a_hot_source_with_large_transactions_and_checkpoints_yields_whole_transactions() {
    let runtime = Runtime::seeded(10);
    runtime
        .db()
        .execute_batch("CREATE TABLE ledger (txn INTEGER NOT NULL, txn_rows INTEGER NOT NULL, payload BLOB)")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |work: fn(&rusqlite::Connection, i64)| {
        let stop = Arc::clone(&stop);
        let db_path = runtime.paths.db_path.clone();
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db_path).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                work(&conn, n);
                n += 1;
            }
            n
        })
    };
    // Transactions of 50..=250 rows, each row carrying its transaction's size.
    let writer = spawn(|conn, txn| {
        let rows = 50 + (txn * 37) % 201;
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for _ in 0..rows {
            conn.execute(
                "INSERT INTO ledger (txn, txn_rows, payload) VALUES (?1, ?2, randomblob(200))",
                [txn, rows],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    });
    let checkpointer = spawn(|conn, _| {
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        std::thread::sleep(std::time::Duration::from_millis(3));
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = runtime.count("SELECT count(*) FROM ledger");
    let manifests: Vec<_> = (0..3).map(|_| runtime.backup(false)).collect();
    let after = runtime.count("SELECT count(*) FROM ledger");
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 3);
    checkpointer.join().unwrap();

    for manifest in manifests {
        let report = validate_backup(&runtime.paths.backup_dir, &manifest.stamp).unwrap();
        assert!(report.valid, "{:?}", report.errors);
        let copy = open_immutable(&runtime.snapshot(&manifest.stamp).join(&manifest.db.path));
        let rows: i64 = copy
            .query_row("SELECT count(*) FROM ledger", [], |r| r.get(0))
            .unwrap();
        assert!(before <= rows && rows <= after, "{before} <= {rows} <= {after}");
        let torn: i64 = copy
            .query_row(
                "SELECT count(*) FROM (SELECT txn FROM ledger GROUP BY txn HAVING count(*) != max(txn_rows))",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(torn, 0, "a transaction is partly in backup {}", manifest.stamp);
    }
}

#[test]
fn an_unchanged_chroma_file_is_hard_linked_from_the_previous_backup_and_a_changed_one_copied() {
    use std::os::unix::fs::MetadataExt;
    let runtime = Runtime::seeded(10);
    let first = runtime.backup(true);
    // Same size and, after the rewrite, the same mtime: only the checksum tells.
    let sneaky = runtime.paths.chroma_dir.join("segment-0001/length.bin");
    let meta = fs::metadata(&sneaky).unwrap();
    let mut bytes = fs::read(&sneaky).unwrap();
    bytes[0] ^= 1;
    fs::write(&sneaky, &bytes).unwrap();
    let times = std::fs::FileTimes::new().set_modified(meta.modified().unwrap());
    fs::File::options()
        .write(true)
        .open(&sneaky)
        .unwrap()
        .file()
        .set_times(times)
        .unwrap();
    fs::write(
        runtime.paths.chroma_dir.join("segment-0001/header.bin"),
        b"changed and longer",
    )
    .unwrap();

    let second = runtime.backup(true);
    let chroma = second.chroma.as_ref().unwrap();
    assert_eq!(chroma.linked_from.as_ref(), Some(&first.stamp));
    // data_level0.bin and link_lists.bin are unchanged, and chroma.sqlite3,
    // copied through SQLite, came out byte-identical.
    assert_eq!(chroma.linked_files, 3, "{chroma:#?}");
    let inode = |stamp: &atocore_backup_core::Stamp, path: &str| {
        fs::metadata(runtime.snapshot(stamp).join("chroma").join(path))
            .unwrap()
            .ino()
    };
    assert_eq!(
        inode(&first.stamp, "segment-0001/data_level0.bin"),
        inode(&second.stamp, "segment-0001/data_level0.bin")
    );
    assert_ne!(
        inode(&first.stamp, "segment-0001/length.bin"),
        inode(&second.stamp, "segment-0001/length.bin")
    );
    assert_ne!(
        inode(&first.stamp, "segment-0001/header.bin"),
        inode(&second.stamp, "segment-0001/header.bin")
    );
    let live = fs::read(&sneaky).unwrap();
    assert_eq!(
        fs::read(
            runtime
                .snapshot(&second.stamp)
                .join("chroma/segment-0001/length.bin")
        )
        .unwrap(),
        live
    );

    // Sharing does not tie the backups together: delete the first, the second still validates.
    atocore_backup_core::delete_backup(&runtime.paths, &first.stamp).unwrap();
    let report = validate_backup(&runtime.paths.backup_dir, &second.stamp).unwrap();
    assert!(report.valid, "{:?}", report.errors);

    // A changed chroma.sqlite3, compared with the second's copy as it was
    // written, gets a whole, sound copy of its own.
    rusqlite::Connection::open(runtime.paths.chroma_dir.join("chroma.sqlite3"))
        .unwrap()
        .execute_batch("CREATE TABLE added (x); INSERT INTO added VALUES (1);")
        .unwrap();
    let third = runtime.backup(true);
    assert_ne!(
        inode(&second.stamp, "chroma.sqlite3"),
        inode(&third.stamp, "chroma.sqlite3")
    );
    runtime.assert_valid(&third.stamp);
}

/// This process's POSIX locks on the file with inode `inode`, as the
/// kernel lists them.
fn my_locks_on(inode: u64) -> usize {
    let me = std::process::id().to_string();
    fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&"POSIX")
                && fields.get(4) == Some(&me.as_str())
                && fields
                    .get(5)
                    .and_then(|id| id.rsplit(':').next())
                    .is_some_and(|ino| ino == inode.to_string())
        })
        .count()
}

#[test]
fn a_previous_copy_that_is_the_live_db_file_is_never_read_or_shared() {
    use std::os::unix::fs::MetadataExt;
    let runtime = Runtime::seeded(50);
    let first = runtime.backup(false);
    // As a pre-restore snapshot left by an interrupted restore: its db is a
    // hard link to the live db.
    let copy = runtime.snapshot(&first.stamp).join(&first.db.path);
    fs::remove_file(&copy).unwrap();
    fs::hard_link(&runtime.paths.db_path, &copy).unwrap();
    let live_inode = fs::metadata(&runtime.paths.db_path).unwrap().ino();

    // A connection of this process in a read transaction holds a lock on
    // the live db; closing any other descriptor of that file would drop it.
    let reader = runtime.db();
    reader.execute_batch("BEGIN").unwrap();
    reader
        .query_row("SELECT count(*) FROM memories", [], |row| row.get::<_, i64>(0))
        .unwrap();
    let held = my_locks_on(live_inode);
    assert!(held > 0, "the reader holds no lock to watch");
    let second = runtime.backup(false);
    assert_eq!(
        my_locks_on(live_inode),
        held,
        "the backup dropped the reader's locks"
    );
    reader.execute_batch("COMMIT").unwrap();

    assert!(second.db.linked_from.is_none());
    let second_copy = runtime.snapshot(&second.stamp).join(&second.db.path);
    assert_ne!(fs::metadata(&second_copy).unwrap().ino(), live_inode);
    runtime.assert_valid(&second.stamp);
}

#[test]
fn a_previous_copy_that_cannot_be_read_only_costs_a_plain_copy() {
    let runtime = Runtime::seeded(50);
    let first = runtime.backup(false);
    // Opens, but every read fails (`EISDIR`), half way into the lazy copy.
    let copy = runtime.snapshot(&first.stamp).join(&first.db.path);
    fs::remove_file(&copy).unwrap();
    fs::create_dir(&copy).unwrap();
    let second = runtime.backup(false);
    assert!(second.db.linked_from.is_none());
    runtime.assert_valid(&second.stamp);
}

#[test]
fn an_unchanged_db_shares_the_previous_copy_and_a_changed_one_does_not() {
    use std::os::unix::fs::MetadataExt;
    let runtime = Runtime::seeded(200);
    let first = runtime.backup(false);
    let second = runtime.backup(false);
    let db_inode = |m: &atocore_backup_core::BackupManifest| {
        fs::metadata(runtime.snapshot(&m.stamp).join(&m.db.path))
            .unwrap()
            .ino()
    };
    assert_eq!(
        second.db.checksum, first.db.checksum,
        "an idle db copies to the same bytes"
    );
    assert_eq!(second.db.linked_from.as_ref(), Some(&first.stamp));
    assert_eq!(db_inode(&first), db_inode(&second));
    runtime
        .db()
        .execute("DELETE FROM memories WHERE id < 10", [])
        .unwrap();
    let third = runtime.backup(false);
    assert!(third.db.linked_from.is_none());
    assert_ne!(db_inode(&third), db_inode(&second));
    // Compared with the second's copy as it was written: still a whole,
    // sound copy of its own.
    runtime.assert_valid(&third.stamp);
    atocore_backup_core::delete_backup(&runtime.paths, &first.stamp).unwrap();
    runtime.assert_valid(&second.stamp);
}
