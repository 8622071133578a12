//! Hand-built values for testing plans and their renderings without a disk
//! (cargo feature `test-fixtures`). One fixture for every crate's tests, so
//! the JSON and text snapshots describe the same plans.

use camino::{Utf8Path, Utf8PathBuf};

use crate::manifest::BackupManifest;
use crate::manifest::Ownership;
use crate::plan::{Gate, GateCheck, GateStatus, RestoreFacts, RestoreTargets, TargetOwners};

/// A manifest of stamp `20260408T211748Z` with a 40 KiB db and, as asked, a
/// 154-byte registry and an 8 KiB chroma tree.
pub fn manifest(registry: bool, chroma: bool) -> BackupManifest {
    let checksum = format!("blake3:{}", "ab".repeat(32));
    let mut value = serde_json::json!({
        "format_version": 1,
        "stamp": "20260408T211748Z",
        "created_at": "2026-04-08T21:17:48.512Z",
        "kind": "manual",
        "restored_from": null,
        "tool_version": "0.1.0",
        "source": {"db_path": "/srv/atocore/data/db/atocore.db", "chroma_dir": "/srv/atocore/data/chroma",
                   "registry_path": "/srv/atocore/data/config/project-registry.json"},
        "db": {"path": "db/atocore.db", "size_bytes": 40960, "checksum": checksum,
               "page_size": 4096, "page_count": 10, "user_version": 3,
               "captured_at": "2026-04-08T21:17:48.530Z"},
        "registry": null,
        "chroma": null,
    });
    if registry {
        value["registry"] = serde_json::json!({"path": "config/project-registry.json", "size_bytes": 154, "checksum": checksum});
    }
    if chroma {
        value["chroma"] = serde_json::json!({"path": "chroma", "file_count": 1, "total_bytes": 8192,
            "captured_at": "2026-04-08T21:17:49.002Z",
            "files": [{"path": "chroma.sqlite3", "size_bytes": 8192, "checksum": checksum}]});
    }
    match BackupManifest::from_json(
        value.to_string().as_bytes(),
        Utf8Path::new("backup-metadata.json"),
    ) {
        Ok(manifest) => manifest,
        Err(error) => panic!("the fixture manifest is valid: {error}"),
    }
}

/// A live runtime under `/srv/atocore/data` with 1 GiB free, a db, a
/// registry and a chroma tree, no sidecars, no marker, no debris.
pub fn restore_facts() -> RestoreFacts {
    let data = Utf8PathBuf::from("/srv/atocore/data");
    RestoreFacts {
        backup_path: "/srv/atocore/backups/snapshots/20260408T211748Z".into(),
        targets: RestoreTargets {
            db_path: data.join("db/atocore.db"),
            chroma_dir: data.join("chroma"),
            registry_path: data.join("config/project-registry.json"),
        },
        marker_path: data.join("db/.atocore-restore-in-progress"),
        interrupted_restore: None,
        live_db_exists: true,
        live_db_bytes: 50_000,
        live_registry_bytes: 200,
        live_chroma_bytes: 10_000,
        live_chroma_exists: true,
        sidecars_present: Vec::new(),
        available_bytes: 1 << 30,
        chroma_is_mount_point: false,
        leftovers: Vec::new(),
        symlinked_targets: Vec::new(),
        gates: vec![
            GateCheck {
                gate: Gate::ServiceLock,
                status: GateStatus::Passed,
                detail: "no process holds `/srv/atocore/data/db/.atocore-service.lock`".to_owned(),
            },
            GateCheck {
                gate: Gate::DbNotOpen,
                status: GateStatus::Passed,
                detail: "no process has the db, its -wal or its -shm open".to_owned(),
            },
            GateCheck {
                gate: Gate::ExclusiveAccess,
                status: GateStatus::Passed,
                detail: "BEGIN EXCLUSIVE succeeded at once".to_owned(),
            },
        ],
        owners: TargetOwners {
            db: Some(Ownership {
                uid: 1000,
                gid: 1000,
                mode: 0o640,
            }),
            db_dir: Some(Ownership {
                uid: 1000,
                gid: 1000,
                mode: 0o750,
            }),
            registry: Some(Ownership {
                uid: 1000,
                gid: 1000,
                mode: 0o640,
            }),
            registry_dir: Some(Ownership {
                uid: 1000,
                gid: 1000,
                mode: 0o750,
            }),
            chroma: Some(Ownership {
                uid: 1000,
                gid: 1000,
                mode: 0o750,
            }),
            chroma_parent: Some(Ownership {
                uid: 1000,
                gid: 1000,
                mode: 0o750,
            }),
        },
    }
}
