//! Every error's wording, snapshotted so that it is reviewed like code: one
//! sentence, the path or stamp at fault in backticks, no trailing period.
#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use atocore_backup_core::{Error, LockHolder, RestoreMarker, RestoreRefusal};

fn json_error() -> serde_json::Error {
    serde_json::from_str::<u32>("{").unwrap_err()
}

#[test]
fn every_error_text() {
    let marker = RestoreMarker {
        stamp: "20260408T211748Z".parse().unwrap(),
        started_at: "2026-04-09T08:00:00Z".parse().unwrap(),
        pid: 4242,
        pre_restore_stamp: Some("20260409T080000Z".parse().unwrap()),
    };
    let holder = LockHolder {
        pid: 4242,
        host: "db-1".into(),
        operation: "create".into(),
        started_at: "2026-04-09T08:00:00Z".parse().unwrap(),
    };
    let errors = vec![
        "nope/..".parse::<atocore_backup_core::Stamp>().unwrap_err(),
        Error::BackupNotFound {
            stamp: "20260408T211748Z".into(),
            dir: "/b/snapshots".into(),
            nearest: vec!["20260408T211749Z".into(), "20260407T211748Z".into()],
        },
        Error::Io(fs_err::read("/nonexistent/atocore.db").unwrap_err()),
        Error::NonUtf8Path {
            path: "/b/\u{fffd}".into(),
        },
        Error::DbMissing {
            path: "/d/db/atocore.db".into(),
        },
        Error::Sqlite {
            path: "/d/db/atocore.db".into(),
            source: rusqlite::Error::QueryReturnedNoRows,
        },
        Error::DbBackup {
            from: "/d/db/atocore.db".into(),
            to: "/b/snapshots/.partial-20260408T211748Z/db/atocore.db".into(),
            source: rusqlite::Error::QueryReturnedNoRows,
        },
        Error::DbSourceUnopenable {
            path: "/d/db/atocore.db".into(),
        },
        Error::DbBackupBusy {
            path: "/d/db/atocore.db".into(),
        },
        Error::RegistryJson {
            path: "/d/config/project-registry.json".into(),
            source: json_error(),
        },
        Error::ManifestParse {
            path: "/b/snapshots/20260408T211748Z/backup-metadata.json".into(),
            source: json_error(),
        },
        Error::ManifestFutureVersion {
            path: "/b/snapshots/20260408T211748Z/backup-metadata.json".into(),
            found: 2,
            supported: 1,
        },
        Error::UnsafeManifestPath {
            path: "/b/snapshots/20260408T211748Z/backup-metadata.json".into(),
            entry: "../etc".into(),
        },
        Error::BadChecksum {
            value: "md5:00".into(),
        },
        Error::ChecksumMismatch {
            path: "/b/snapshots/20260408T211748Z/db/atocore.db".into(),
            expected: format!("blake3:{}", "a".repeat(64)),
            actual: format!("blake3:{}", "b".repeat(64)),
        },
        Error::ChromaUnstable {
            path: "/d/chroma/seg/data_level0.bin".into(),
            attempts: 3,
        },
        Error::DbInsideChroma {
            db: "/d/chroma/atocore.db".into(),
            chroma: "/d/chroma".into(),
        },
        Error::SymlinkRefused {
            path: "/d/chroma/escape".into(),
        },
        Error::UnsupportedFileType {
            path: "/d/chroma/fifo".into(),
        },
        Error::Busy {
            path: "/b/.lock".into(),
            holder,
        },
        Error::RegistryMissing {
            path: "/d/config/project-registy.json".into(),
        },
        Error::ServiceRunning {
            path: "/d/db/.atocore-service.lock".into(),
            holder: "pid 77 on web-1 (atocore service since 2026-04-08T21:00:00Z)".into(),
        },
        Error::DbOpenElsewhere {
            path: "/d/db/atocore.db".into(),
            users: vec![
                "pid 77 (python3 -m atocore.main) has `/d/db/atocore.db` open".into(),
                "pid 78 (sqlite3 /d/db/atocore.db) holds a lock on `/d/db/atocore.db-shm`".into(),
            ],
            partial: Some("partial check: the open files of 3 processes could not be read (run as their user or as root to see them); their SQLite locks were probed instead".into()),
        },
        Error::RestoreInProgress {
            path: "/d/db/.atocore-restore-in-progress".into(),
            marker,
        },
        Error::NotConfirmed {
            stamp: "20260408T211748Z".into(),
        },
        Error::DbInUse {
            path: "/d/db/atocore.db".into(),
            reason: "database is locked".into(),
        },
        Error::Refused {
            stamp: "20260408T211748Z".into(),
            refusal: RestoreRefusal::InsufficientSpace {
                required_bytes: 2000,
                available_bytes: 1000,
            },
        },
        Error::Refused {
            stamp: "20260408T211748Z".into(),
            refusal: RestoreRefusal::TargetIsSymlink {
                path: "/d/chroma".into(),
            },
        },
        Error::PruneRefused(atocore_backup_core::PruneRefusal::EmptyPolicy),
        Error::InvalidBackup {
            stamp: "20260408T211748Z".into(),
            first_error: "db db/atocore.db: checksum mismatch".into(),
        },
    ];
    let text: String = errors
        .iter()
        .map(|error| format!("{:?}: {}\n", error.class(), error.chain()))
        .collect();
    for line in text.lines() {
        assert!(!line.ends_with('.'), "no trailing period: {line}");
    }
    insta::assert_snapshot!(text);
}
