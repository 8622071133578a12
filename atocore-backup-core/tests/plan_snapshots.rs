//! Plan previews from hand-built facts: pure, so every case is a snapshot.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use atocore_backup_core::{
    BackupManifest, RestoreFacts, RestoreMarker, RestoreOptions, RestoreTargets, Sidecar, plan_restore,
};
use camino::{Utf8Path, Utf8PathBuf};

fn manifest(registry: bool, chroma: bool) -> BackupManifest {
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
    BackupManifest::from_json(
        value.to_string().as_bytes(),
        Utf8Path::new("backup-metadata.json"),
    )
    .unwrap()
}

fn facts() -> RestoreFacts {
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
    }
}

fn options(include_chroma: Option<bool>, pre_restore_snapshot: bool) -> RestoreOptions {
    RestoreOptions {
        include_chroma,
        pre_restore_snapshot,
    }
}

#[test]
fn with_chroma() {
    let plan = plan_restore(&manifest(true, true), &options(None, true), &facts()).unwrap();
    insta::assert_json_snapshot!(plan);
}

#[test]
fn without_chroma_declined() {
    let plan = plan_restore(&manifest(true, true), &options(Some(false), true), &facts()).unwrap();
    insta::assert_json_snapshot!(plan);
}

#[test]
fn backup_without_chroma_defaults_to_none() {
    let plan = plan_restore(&manifest(true, false), &options(None, true), &facts()).unwrap();
    insta::assert_json_snapshot!(plan);
}

#[test]
fn no_registry_in_the_backup() {
    let plan = plan_restore(&manifest(false, true), &options(None, true), &facts()).unwrap();
    insta::assert_json_snapshot!(plan);
}

#[test]
fn no_pre_restore_snapshot() {
    let plan = plan_restore(&manifest(true, true), &options(None, false), &facts()).unwrap();
    insta::assert_json_snapshot!(plan);
}

#[test]
fn sidecars_present_a_mount_point_and_an_interrupted_restore() {
    let mut facts = facts();
    facts.sidecars_present = vec![
        Sidecar {
            path: "/srv/atocore/data/db/atocore.db-wal".into(),
            size_bytes: 41_232,
        },
        Sidecar {
            path: "/srv/atocore/data/db/atocore.db-shm".into(),
            size_bytes: 32_768,
        },
    ];
    facts.chroma_is_mount_point = true;
    facts.interrupted_restore = Some(RestoreMarker {
        stamp: "20260401T000000Z".parse().unwrap(),
        started_at: "2026-04-09T08:00:00Z".parse().unwrap(),
        pid: 4242,
        pre_restore_stamp: Some("20260409T080000Z".parse().unwrap()),
    });
    facts.leftovers =
        vec!["`/srv/atocore/data/db/.atocore.db.restore-tmp` is left from an interrupted restore".into()];
    let plan = plan_restore(&manifest(true, true), &options(None, true), &facts).unwrap();
    insta::assert_json_snapshot!(plan);
}

#[test]
fn refusal_chroma_not_in_backup() {
    let refusal = plan_restore(&manifest(true, false), &options(Some(true), true), &facts()).unwrap_err();
    insta::assert_snapshot!(refusal.to_string(), @"chroma was requested but backup `20260408T211748Z` does not include chroma");
    insta::assert_json_snapshot!(refusal);
}

#[test]
fn refusal_insufficient_space() {
    let mut facts = facts();
    facts.available_bytes = 1000;
    let refusal = plan_restore(&manifest(true, true), &options(None, true), &facts).unwrap_err();
    insta::assert_snapshot!(refusal.to_string(), @"it needs 109506 bytes of free space but only 1000 are available");
    insta::assert_json_snapshot!(refusal);
}

#[test]
fn space_counts_the_snapshot_only_when_taken() {
    let taken = plan_restore(&manifest(true, true), &options(None, true), &facts()).unwrap();
    let declined = plan_restore(&manifest(true, true), &options(None, false), &facts()).unwrap();
    let required = |plan: &atocore_backup_core::RestorePlan| match &plan.steps[1] {
        atocore_backup_core::RestoreStep::CheckFreeSpace { required_bytes, .. } => *required_bytes,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(required(&declined), 40960 + 154 + 8192);
    assert_eq!(required(&taken), required(&declined) + 50_000 + 200 + 10_000);
}

#[test]
fn refusal_symlinked_target() {
    let mut facts = facts();
    facts.symlinked_targets = vec!["/srv/atocore/data/chroma".into()];
    let refusal = plan_restore(&manifest(true, true), &options(None, true), &facts).unwrap_err();
    insta::assert_snapshot!(refusal.to_string(), @"target `/srv/atocore/data/chroma` is a symlink; restore writes only to real paths, so point the configuration at the real location");
}
