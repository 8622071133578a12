//! Validation catches every kind of damage, naming the part at fault.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

mod common;

use atocore_backup_core::{BackupManifest, Stamp, validate_backup};
use common::Runtime;
use fs_err as fs;

struct Damaged {
    runtime: Runtime,
    manifest: BackupManifest,
}

impl Damaged {
    fn new() -> Self {
        let runtime = Runtime::seeded(300);
        let manifest = runtime.backup(true);
        Damaged { runtime, manifest }
    }

    fn path(&self, relative: &str) -> camino::Utf8PathBuf {
        self.runtime.snapshot(&self.manifest.stamp).join(relative)
    }

    fn errors(&self) -> Vec<String> {
        let report = validate_backup(&self.runtime.paths.backup_dir, &self.manifest.stamp).unwrap();
        assert_eq!(report.valid, report.errors.is_empty());
        report.errors
    }

    fn rewrite_manifest(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = self.path("backup-metadata.json");
        let mut value: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        edit(&mut value);
        fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
    }
}

fn flip_byte(path: &camino::Utf8Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    let at = usize::try_from(offset).unwrap().min(bytes.len() - 1);
    bytes[at] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

fn assert_one_error(errors: &[String], expected: &str) {
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected {expected:?} in {errors:#?}"
    );
}

#[test]
fn a_flipped_byte_in_a_db_page_is_a_checksum_mismatch() {
    let backup = Damaged::new();
    flip_byte(&backup.path("db/atocore.db"), 4096 * 3 + 100);
    assert_one_error(&backup.errors(), "db db/atocore.db: checksum mismatch");
}

#[test]
fn a_damaged_db_header_fails_checksum_and_integrity() {
    let backup = Damaged::new();
    flip_byte(&backup.path("db/atocore.db"), 16);
    let errors = backup.errors();
    assert_one_error(&errors, "db db/atocore.db: checksum mismatch");
    assert!(
        errors.len() >= 2,
        "the integrity check must fail too: {errors:#?}"
    );
}

#[test]
fn a_truncated_registry_is_reported() {
    let backup = Damaged::new();
    let path = backup.path("config/project-registry.json");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_error(&backup.errors(), "registry config/project-registry.json: size");
}

#[test]
fn a_missing_chroma_file_is_reported() {
    let backup = Damaged::new();
    fs::remove_file(backup.path("chroma/segment-0001/header.bin")).unwrap();
    assert_one_error(&backup.errors(), "chroma file segment-0001/header.bin: missing");
}

#[test]
fn an_altered_chroma_file_is_reported() {
    let backup = Damaged::new();
    flip_byte(&backup.path("chroma/segment-0001/data_level0.bin"), 10);
    assert_one_error(
        &backup.errors(),
        "chroma file segment-0001/data_level0.bin: checksum mismatch",
    );
}

#[test]
fn a_truncated_hnsw_file_is_reported_though_chroma_sqlite_is_fine() {
    let backup = Damaged::new();
    let path = backup.path("chroma/segment-0001/data_level0.bin");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1000)
        .unwrap();
    assert_one_error(
        &backup.errors(),
        "chroma file segment-0001/data_level0.bin: size 1000 bytes",
    );
}

#[test]
fn an_extra_chroma_file_is_a_warning_not_an_error() {
    let backup = Damaged::new();
    fs::write(backup.path("chroma/segment-0001/stray.bin"), b"?").unwrap();
    // Private, as snapshot files are: only the stray itself is at issue.
    fs::set_permissions(
        backup.path("chroma/segment-0001/stray.bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o400),
    )
    .unwrap();
    let report = validate_backup(&backup.runtime.paths.backup_dir, &backup.manifest.stamp).unwrap();
    assert!(report.valid);
    assert_eq!(
        report.warnings,
        ["chroma file segment-0001/stray.bin is not recorded in the manifest"]
    );
}

#[test]
fn a_manifest_path_with_dot_dot_makes_the_backup_invalid() {
    let backup = Damaged::new();
    backup.rewrite_manifest(|m| m["chroma"]["files"][0]["path"] = "../../../etc/passwd".into());
    assert_one_error(&backup.errors(), "records unsafe path `../../../etc/passwd`");
}

#[test]
fn an_absolute_manifest_path_makes_the_backup_invalid() {
    let backup = Damaged::new();
    backup.rewrite_manifest(|m| m["db"]["path"] = "/etc/passwd".into());
    assert_one_error(&backup.errors(), "records unsafe path `/etc/passwd`");
}

#[test]
fn a_future_format_version_is_named() {
    let backup = Damaged::new();
    backup.rewrite_manifest(|m| m["format_version"] = 99.into());
    assert_one_error(
        &backup.errors(),
        "has format_version 99, newer than the 1 this tool reads",
    );
}

#[test]
fn wrong_field_types_and_broken_json_are_reported() {
    let backup = Damaged::new();
    backup.rewrite_manifest(|m| m["db"]["page_size"] = "4096".into());
    assert_one_error(&backup.errors(), "cannot be parsed");
    fs::write(backup.path("backup-metadata.json"), b"{\"format_version\": 1, ").unwrap();
    assert_one_error(&backup.errors(), "cannot be parsed");
}

#[test]
fn a_directory_without_a_manifest_is_invalid() {
    let backup = Damaged::new();
    fs::remove_file(backup.path("backup-metadata.json")).unwrap();
    assert_one_error(&backup.errors(), "backup-metadata.json");
}

#[test]
fn a_symlinked_file_in_the_snapshot_is_refused_not_followed() {
    let backup = Damaged::new();
    let target = backup.path("config/project-registry.json");
    fs::remove_file(&target).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &target).unwrap();
    assert_one_error(&backup.errors(), "is a symlink");
}

#[test]
fn an_unknown_stamp_is_a_report_that_does_not_exist() {
    let backup = Damaged::new();
    let stamp: Stamp = "20000101T000000Z".parse().unwrap();
    let report = validate_backup(&backup.runtime.paths.backup_dir, &stamp).unwrap();
    assert!(!report.exists && !report.valid);
}
