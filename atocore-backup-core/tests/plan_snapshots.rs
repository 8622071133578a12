//! Plan previews from hand-built facts: pure, so every case is a snapshot.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use atocore_backup_core::{RestoreMarker, RestoreOptions, Sidecar, plan_restore};

use atocore_backup_core::fixtures::{manifest, restore_facts as facts};

fn options(include_chroma: Option<bool>, pre_restore_snapshot: bool) -> RestoreOptions {
    RestoreOptions {
        include_chroma,
        pre_restore_snapshot,
        chown: None,
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
