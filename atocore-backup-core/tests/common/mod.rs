//! Fixtures shared by the core's integration tests: real runtimes in temp dirs.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use atocore_backup_core::{
    BackupManifest, CreateOptions, NoProgress, RestoreOptions, RuntimePaths, Stamp, create_backup,
    seed_runtime,
};
use camino::{Utf8Path, Utf8PathBuf};
use rusqlite::Connection;

pub struct Runtime {
    pub _dir: tempfile::TempDir,
    pub root: Utf8PathBuf,
    pub paths: RuntimePaths,
}

impl Runtime {
    /// A seeded runtime: WAL db with `rows` memories, a registry, a chroma tree.
    pub fn seeded(rows: u32) -> Self {
        let runtime = Runtime::empty();
        seed_runtime(&runtime.paths, rows).unwrap();
        runtime
    }

    pub fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
        let paths = RuntimePaths::under(&root);
        Runtime {
            _dir: dir,
            root,
            paths,
        }
    }

    pub fn backup(&self, include_chroma: bool) -> BackupManifest {
        create_backup(
            &self.paths,
            &CreateOptions {
                include_chroma,
                ..CreateOptions::default()
            },
            &NoProgress,
        )
        .unwrap()
    }

    /// Validates the backup `stamp`, failing the test with its errors.
    pub fn assert_valid(&self, stamp: &Stamp) {
        let report = atocore_backup_core::validate_backup(&self.paths.backup_dir, stamp).unwrap();
        assert!(report.valid, "{stamp}: {:?}", report.errors);
    }

    pub fn snapshot(&self, stamp: &Stamp) -> Utf8PathBuf {
        self.paths.snapshots_dir().join(stamp.as_str())
    }

    pub fn db(&self) -> Connection {
        Connection::open(&self.paths.db_path).unwrap()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |row| row.get(0)).unwrap()
    }

    /// Names of every entry under the backup dir and data dir, for "nothing changed" checks.
    pub fn tree(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Utf8Path, dir: &Utf8Path, out: &mut Vec<(String, u64)>) {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let path = Utf8PathBuf::from_path_buf(entry.path()).unwrap();
        let meta = fs_err::symlink_metadata(&path).unwrap();
        let relative = path.strip_prefix(root).unwrap().to_string();
        // The lock file's content names the last holder; it is not data.
        if relative.ends_with(".lock") {
            continue;
        }
        if meta.is_dir() {
            out.push((format!("{relative}/"), 0));
            walk(root, &path, out);
        } else {
            let digest = blake3::hash(&fs_err::read(&path).unwrap());
            out.push((format!("{relative} {}", digest.to_hex()), meta.len()));
        }
    }
}

pub fn restore_options() -> RestoreOptions {
    RestoreOptions {
        include_chroma: None,
        pre_restore_snapshot: true,
        chown: None,
    }
}
