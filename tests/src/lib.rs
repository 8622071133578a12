//! Shared fixtures for the end-to-end tests: scratch runtimes and the real
//! binaries, found beside the test executable in cargo's target directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use atocore_backup_core::{RuntimePaths, seed_runtime};
use camino::{Utf8Path, Utf8PathBuf};

/// Path of a workspace binary (`atocore-backup`, `atocore-backup-http`).
///
/// Integration tests run from `target/<profile>/deps/`; cargo builds the
/// workspace's binaries into `target/<profile>/` for `cargo test --workspace`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run the suite with `cargo test --workspace`, which builds it",
        bin.display()
    );
    bin
}

/// A runtime in a temp directory, laid out the default way under its root.
pub struct Scratch {
    _dir: tempfile::TempDir,
    /// The root: `data/` and `backups/` live here.
    pub root: Utf8PathBuf,
    /// The resolved paths.
    pub paths: RuntimePaths,
}

impl Scratch {
    /// An empty scratch root.
    pub fn empty() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = Utf8PathBuf::from_path_buf(dir.path().canonicalize().expect("canonical")).expect("utf-8");
        let paths = RuntimePaths::under(&root);
        Scratch {
            _dir: dir,
            root,
            paths,
        }
    }

    /// A seeded runtime with `rows` memories (about 400 bytes each).
    pub fn seeded(rows: u32) -> Self {
        let scratch = Scratch::empty();
        seed_runtime(&scratch.paths, rows).expect("seed");
        scratch
    }

    /// `atocore-backup` with this runtime's paths.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut command = Command::new(workspace_bin("atocore-backup"));
        command
            .env_remove("ATOCORE_BACKUP_CRASH_AT")
            .env_remove("ATOCORE_BACKUP_FAULT")
            .args(["--data-dir", self.root.join("data").as_str()])
            .args(["--backup-dir", self.root.join("backups").as_str()])
            .args(args);
        command
    }

    /// Runs the CLI to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli(args).output().expect("run atocore-backup")
    }

    /// `create --json` (with chroma when asked); returns the stamp.
    pub fn create(&self, include_chroma: bool) -> String {
        let args: &[&str] = if include_chroma {
            &["create", "--include-chroma", "--json"]
        } else {
            &["create", "--json"]
        };
        let output = self.run(args);
        assert!(
            output.status.success(),
            "create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(&output.stdout).expect("manifest JSON");
        manifest["stamp"].as_str().expect("stamp").to_owned()
    }

    /// Starts the test helper holding a lock; returns once it holds it.
    pub fn hold(&self, what: &str) -> Child {
        let mut child = Command::new(workspace_bin("atocore-test-helper"))
            .args([what, self.root.as_str()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("helper answers");
        assert_eq!(line.trim(), "locked", "the helper could not take {what}");
        child
    }
}

/// BLAKE3 of a file's bytes, in hex.
pub fn file_hash(path: &Utf8Path) -> String {
    blake3::hash(&fs_err::read(path).expect("read"))
        .to_hex()
        .to_string()
}

/// `PRAGMA integrity_check` through a fresh connection.
pub fn integrity(db: &Utf8Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check")
}

/// Every file under `dir` (relative path and BLAKE3), sorted.
pub fn tree_hashes(dir: &Utf8Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs_err::read_dir(&current).expect("read dir") {
            let path = Utf8PathBuf::from_path_buf(entry.expect("entry").path()).expect("utf-8");
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("inside").to_string();
                out.push((relative, file_hash(&path)));
            }
        }
    }
    out.sort();
    out
}

/// The first step of a `restore --json` report whose status is `failed`.
pub fn failed_step(report: &serde_json::Value) -> &serde_json::Value {
    report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|step| step["status"] == "failed"))
        .unwrap_or_else(|| panic!("no step failed in {report}"))
}

/// The step named `name` of a `restore --json` report or plan.
pub fn step<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|step| step["step"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

/// The stamps of a `list --json` listing, newest first.
pub fn listed_stamps(listing: &serde_json::Value) -> Vec<&str> {
    listing["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("no backups array in {listing}"))
        .iter()
        .map(|backup| backup["stamp"].as_str().expect("a stamp"))
        .collect()
}

/// [`tree_hashes`] without SQLite's `-wal`/`-shm`: what a backup of `dir` records.
pub fn tree_hashes_without_sidecars(dir: &Utf8Path) -> Vec<(String, String)> {
    tree_hashes(dir)
        .into_iter()
        .filter(|(path, _)| !path.ends_with("-wal") && !path.ends_with("-shm"))
        .collect()
}

/// A `python3` process standing in for the atocore service; killed on drop.
pub struct PythonService {
    child: Child,
}

impl PythonService {
    /// Runs `script` with `args` (as `sys.argv[1:]`) and the repository's
    /// `integrations/python` on `PYTHONPATH`; returns once the script has
    /// printed `ready`, so what it holds is held.
    pub fn start(script: &str, args: &[&str]) -> Self {
        let integrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../integrations/python");
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .env("PYTHONPATH", integrations)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let output = child.wait_with_output().expect("python3 exits");
            panic!(
                "the python service did not start: {}{}",
                line,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        PythonService { child }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PythonService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
