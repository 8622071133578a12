//! `backup-metadata.json`: what a snapshot holds and how to check it.

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::checksum::Checksum;
use crate::error::{Error, Result};
use crate::stamp::Stamp;

/// The manifest format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside a snapshot directory.
pub const MANIFEST_NAME: &str = "backup-metadata.json";
/// File name of the `b3sum -c` compatible checksum list.
pub const B3SUMS_NAME: &str = "B3SUMS";

/// Everything a snapshot holds, written last so its presence means "complete".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Version of this layout; readers reject versions newer than they know.
    pub format_version: u32,
    /// The snapshot's name, equal to its directory name.
    pub stamp: Stamp,
    /// When the backup started (UTC).
    pub created_at: Timestamp,
    /// Why the backup was taken.
    pub kind: BackupKind,
    /// For a pre-restore snapshot: the stamp whose restore it protects against.
    pub restored_from: Option<Stamp>,
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// Where the parts were copied from.
    pub source: SourcePaths,
    /// The database copy.
    pub db: DbRecord,
    /// The registry copy; `null` when the registry did not exist.
    pub registry: Option<FileRecord>,
    /// The Chroma copy; `null` when chroma was not included.
    pub chroma: Option<ChromaRecord>,
}

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// Asked for by an operator or a scheduler.
    Manual,
    /// Taken by `restore` just before it replaced the runtime.
    PreRestore,
    /// Taken by `drill` on its scratch runtime.
    Drill,
}

impl BackupKind {
    /// The contract's name for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Manual => "manual",
            BackupKind::PreRestore => "pre-restore",
            BackupKind::Drill => "drill",
        }
    }
}

/// The live paths a backup was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePaths {
    /// The live database.
    pub db_path: Utf8PathBuf,
    /// The Chroma directory.
    pub chroma_dir: Utf8PathBuf,
    /// The registry file.
    pub registry_path: Utf8PathBuf,
}

/// The database copy and the facts SQLite reported about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbRecord {
    /// Relative to the snapshot directory, e.g. `db/atocore.db`.
    pub path: String,
    /// Size of the copy.
    pub size_bytes: u64,
    /// Checksum of the copy.
    pub checksum: Checksum,
    /// SQLite page size.
    pub page_size: u64,
    /// SQLite page count.
    pub page_count: u64,
    /// `PRAGMA user_version`, the application's schema version.
    pub user_version: i64,
    /// When the online backup's single pass finished: the state it holds.
    pub captured_at: Timestamp,
    /// The earlier backup whose identical db copy this one hard-links
    /// instead of keeping a second copy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_from: Option<Stamp>,
    /// The live db's owner, group and mode when captured (absent in older
    /// manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Ownership>,
}

/// Owner, group and permission bits of a live file or directory: what a
/// restore gives the file it writes in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// Owning user id.
    pub uid: u32,
    /// Owning group id.
    pub gid: u32,
    /// Permission bits (`0o7777` at most), written in JSON as octal text
    /// such as `"0640"`.
    #[serde(with = "octal_mode")]
    pub mode: u32,
}

impl std::fmt::Display for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} {:04o}", self.uid, self.gid, self.mode)
    }
}

mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        let text = String::deserialize(deserializer)?;
        u32::from_str_radix(&text, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "mode `{text}` is not octal permission bits such as `0640`"
                ))
            })
    }
}

/// A single copied file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Relative to the snapshot directory (or, inside chroma, to `chroma/`).
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Checksum of the bytes.
    pub checksum: Checksum,
    /// For chroma files: the source's mtime (ns since the epoch) when copied,
    /// so the next backup can recognise an unchanged file. Optional: older
    /// manifests lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mtime_ns: Option<i64>,
    /// The source's owner, group and mode when captured (absent in older
    /// manifests): a restore that creates this file where none exists gives
    /// it this mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Ownership>,
}

/// The Chroma directory copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChromaRecord {
    /// Relative to the snapshot directory: `chroma`.
    pub path: String,
    /// Number of files recorded.
    pub file_count: u64,
    /// Sum of their sizes.
    pub total_bytes: u64,
    /// When the copy finished.
    pub captured_at: Timestamp,
    /// Every file, relative to the chroma directory, sorted by path.
    pub files: Vec<FileRecord>,
    /// The earlier backup whose unchanged files were hard-linked into this
    /// one instead of copied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_from: Option<Stamp>,
    /// How many files were hard-linked from `linked_from`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub linked_files: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl BackupManifest {
    /// Bytes of every recorded file: what a restore of all parts writes.
    pub fn total_bytes(&self) -> u64 {
        self.db.size_bytes
            + self.registry.as_ref().map_or(0, |r| r.size_bytes)
            + self.chroma.as_ref().map_or(0, |c| c.total_bytes)
    }

    /// Every recorded path, relative to the snapshot directory, with its record.
    pub fn files(&self) -> impl Iterator<Item = (String, u64, &Checksum)> {
        let db = std::iter::once((self.db.path.clone(), self.db.size_bytes, &self.db.checksum));
        let registry = self
            .registry
            .iter()
            .map(|r| (r.path.clone(), r.size_bytes, &r.checksum));
        let chroma = self.chroma.iter().flat_map(|c| {
            c.files
                .iter()
                .map(move |f| (format!("{}/{}", c.path, f.path), f.size_bytes, &f.checksum))
        });
        db.chain(registry).chain(chroma)
    }

    /// Parses a manifest and checks what JSON alone cannot: the format version
    /// and that no recorded path can escape the snapshot directory.
    ///
    /// # Errors
    /// [`Error::ManifestParse`], [`Error::ManifestFutureVersion`] or
    /// [`Error::UnsafeManifestPath`], each naming `path`.
    pub fn from_json(bytes: &[u8], path: &Utf8Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        // The version is checked first so a future layout is reported as
        // such rather than as whatever field it renamed.
        let version: VersionOnly = serde_json::from_slice(bytes).map_err(|source| Error::ManifestParse {
            path: path.to_owned(),
            source,
        })?;
        if version.format_version > FORMAT_VERSION || version.format_version == 0 {
            return Err(Error::ManifestFutureVersion {
                path: path.to_owned(),
                found: version.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: BackupManifest =
            serde_json::from_slice(bytes).map_err(|source| Error::ManifestParse {
                path: path.to_owned(),
                source,
            })?;
        manifest.check_paths(path)?;
        Ok(manifest)
    }

    /// Reads `<snapshot dir>/backup-metadata.json`.
    ///
    /// # Errors
    /// I/O errors naming the file, or those of [`BackupManifest::from_json`].
    pub fn load(snapshot_dir: &Utf8Path) -> Result<Self> {
        let path = snapshot_dir.join(MANIFEST_NAME);
        let bytes = fs::read(&path)?;
        BackupManifest::from_json(&bytes, &path)
    }

    fn check_paths(&self, manifest_path: &Utf8Path) -> Result<()> {
        let unsafe_entry = std::iter::once(self.db.path.as_str())
            .chain(self.registry.iter().map(|r| r.path.as_str()))
            .chain(self.chroma.iter().map(|c| c.path.as_str()))
            .chain(
                self.chroma
                    .iter()
                    .flat_map(|c| c.files.iter().map(|f| f.path.as_str())),
            )
            .find(|entry| !is_safe_relative(entry));
        match unsafe_entry {
            Some(entry) => Err(Error::UnsafeManifestPath {
                path: manifest_path.to_owned(),
                entry: entry.escape_debug().to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The manifest as pretty JSON, as written to disk.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Relative, `/`-separated, non-empty, with no `.`/`..` component, no
/// backslash and no NUL: safe to join onto a snapshot directory.
pub(crate) fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "format_version": 1,
            "stamp": "20260408T211748Z",
            "created_at": "2026-04-08T21:17:48.512Z",
            "kind": "manual",
            "restored_from": null,
            "tool_version": "0.1.0",
            "source": {"db_path": "/d/atocore.db", "chroma_dir": "/d/chroma", "registry_path": "/d/r.json"},
            "db": {"path": "db/atocore.db", "size_bytes": 123,
                   "checksum": format!("blake3:{}", "0".repeat(64)),
                   "page_size": 4096, "page_count": 30, "user_version": 0,
                   "captured_at": "2026-04-08T21:17:48.530Z"},
            "registry": null,
            "chroma": {"path": "chroma", "file_count": 1, "total_bytes": 4096,
                       "captured_at": "2026-04-08T21:17:49.002Z",
                       "files": [{"path": "chroma.sqlite3", "size_bytes": 4096,
                                  "checksum": format!("sha256:{}", "a".repeat(64))}]}
        })
    }

    fn parse(value: &serde_json::Value) -> Result<BackupManifest> {
        BackupManifest::from_json(value.to_string().as_bytes(), Utf8Path::new("m.json"))
    }

    #[test]
    fn parses_the_contract_example_and_round_trips() {
        let manifest = parse(&sample()).unwrap();
        let again =
            BackupManifest::from_json(manifest.to_json().as_bytes(), Utf8Path::new("m.json")).unwrap();
        assert_eq!(manifest, again);
    }

    #[test]
    fn rejects_a_future_format_version() {
        let mut value = sample();
        value["format_version"] = 2.into();
        let error = parse(&value).unwrap_err();
        assert!(
            matches!(error, Error::ManifestFutureVersion { found: 2, .. }),
            "{error}"
        );
    }

    #[test]
    fn rejects_unsafe_paths() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "db/../../x",
            "a//b",
            "./a",
            "a\\b",
        ] {
            let mut value = sample();
            value["chroma"]["files"][0]["path"] = bad.into();
            assert!(
                matches!(parse(&value), Err(Error::UnsafeManifestPath { .. })),
                "{bad}"
            );
            let mut value = sample();
            value["db"]["path"] = bad.into();
            assert!(
                matches!(parse(&value), Err(Error::UnsafeManifestPath { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_wrong_field_types() {
        let mut value = sample();
        value["db"]["size_bytes"] = "big".into();
        assert!(matches!(parse(&value), Err(Error::ManifestParse { .. })));
        let mut value = sample();
        value["stamp"] = "../x".into();
        assert!(matches!(parse(&value), Err(Error::ManifestParse { .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = BackupManifest::from_json(&bytes, Utf8Path::new("m.json"));
        }

        #[test]
        fn mutated_manifests_are_an_error_never_a_panic(index in 0usize..2000, byte in any::<u8>()) {
            let mut bytes = sample().to_string().into_bytes();
            let at = index % bytes.len();
            bytes[at] = byte;
            let _ = BackupManifest::from_json(&bytes, Utf8Path::new("m.json"));
        }
    }
}
