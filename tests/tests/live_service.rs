//! Restore against a live Python service, as atocore really runs: a
//! connection that holds no SQLite lock yet, an idle WAL connection, an open
//! read transaction, a rollback-journal connection, and the service lock
//! taken from Python with POSIX `fcntl` locks.

#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use atocore_backup_tests::{PythonService, Scratch, file_hash};

/// Opens the db with Python's sqlite3, does `mode`, prints `ready` and waits.
const CONNECTION: &str = r#"
import sqlite3, sys
db, mode = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, isolation_level=None)
if mode == "idle":
    conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
elif mode == "read-transaction":
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
elif mode == "rollback-journal":
    conn.execute("PRAGMA journal_mode=DELETE").fetchall()
    conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
# "opened": sqlite3_open has opened the file and read nothing, so it holds no lock
print("ready", flush=True)
sys.stdin.read()
"#;

fn assert_refused_naming(scratch: &Scratch, args: &[&str], pid: u32) {
    let db_before = file_hash(&scratch.paths.db_path);
    let listing_before = scratch.run(&["list", "--json"]).stdout;
    let output = scratch.run(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{args:?}: {stdout}{stderr}");
    // argv[0] as the shell gave it: `python3` or a full path to it.
    let named = format!("pid {pid} (");
    assert!(
        (stderr.contains(&named) || stdout.contains(&named)) && (stderr + stdout).contains("python3"),
        "{args:?} names the service: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        db_before,
        file_hash(&scratch.paths.db_path),
        "live bytes unchanged"
    );
    assert!(!scratch.paths.restore_marker_path().exists());
    assert_eq!(
        listing_before,
        scratch.run(&["list", "--json"]).stdout,
        "no pre-restore snapshot was left"
    );
}

fn refuses_while_python_has_the_db(mode: &str) {
    let scratch = Scratch::seeded(200);
    let stamp = scratch.create(false);
    let service = PythonService::start(CONNECTION, &[scratch.paths.db_path.as_str(), mode]);
    for args in [
        &["restore", &stamp, "--confirm-service-stopped"][..],
        &[
            "restore",
            &stamp,
            "--confirm-service-stopped",
            "--no-pre-restore-snapshot",
        ],
        &["restore", &stamp, "--dry-run"],
    ] {
        assert_refused_naming(&scratch, args, service.pid());
    }
    drop(service);
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert!(
        output.status.success(),
        "once the service is gone: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_connection_that_has_read_nothing_yet_refuses_the_restore() {
    refuses_while_python_has_the_db("opened");
}

#[test]
fn an_idle_wal_connection_refuses_the_restore() {
    refuses_while_python_has_the_db("idle");
}

#[test]
fn an_open_read_transaction_refuses_the_restore() {
    refuses_while_python_has_the_db("read-transaction");
}

#[test]
fn a_rollback_journal_connection_refuses_the_restore() {
    refuses_while_python_has_the_db("rollback-journal");
}

#[test]
fn the_dry_run_shows_the_refusing_gate_in_its_plan() {
    let scratch = Scratch::seeded(200);
    let stamp = scratch.create(false);
    let service = PythonService::start(CONNECTION, &[scratch.paths.db_path.as_str(), "idle"]);
    let output = scratch.run(&["restore", &stamp, "--dry-run", "--json"]);
    assert_eq!(output.status.code(), Some(4));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let gate = plan["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|gate| gate["gate"] == "db_not_open")
        .unwrap();
    assert_eq!(gate["status"], "refused", "{gate}");
    assert!(
        gate["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", service.pid()))
    );
    drop(service);
    let output = scratch.run(&["restore", &stamp, "--dry-run", "--json"]);
    assert_eq!(output.status.code(), Some(0));
}

/// The lock probe alone (what a non-root operator, who cannot read another
/// user's `/proc/PID/fd`, relies on) sees an idle WAL connection.
#[test]
fn a_restore_that_cannot_read_the_services_open_files_still_sees_its_locks() {
    if !nix_is_root()
        || std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("needs root and setpriv to run the CLI as another user: skipped");
        return;
    }
    let scratch = Scratch::seeded(200);
    let stamp = scratch.create(false);
    let service = PythonService::start(CONNECTION, &[scratch.paths.db_path.as_str(), "idle"]);
    // The runtime and backups belong to uid 1000, as in the container; the
    // service (root here) is a process uid 1000 cannot inspect.
    chown_tree(&scratch.root, 1000, 1000);
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"])
        .arg(atocore_backup_tests::workspace_bin("atocore-backup"))
        .args(["--data-dir", scratch.root.join("data").as_str()])
        .args(["--backup-dir", scratch.root.join("backups").as_str()])
        .args(["restore", &stamp, "--confirm-service-stopped"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {} (", service.pid())) && stderr.contains("holds SQLite locks on"),
        "{stderr}"
    );
    assert!(stderr.contains("partial check"), "{stderr}");
}

fn nix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn chown_tree(root: &camino::Utf8Path, uid: u32, gid: u32) {
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}"), root.as_str()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The service's side: `integrations/python/atocore_service_lock.py`.
const SERVICE_LOCK: &str = r#"
import sys
from atocore_service_lock import service_lock, ServiceLockError
try:
    with service_lock(sys.argv[1]):
        print("ready", flush=True)
        sys.stdin.read()
except ServiceLockError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
"#;

/// A bare POSIX record lock, as `fcntl.lockf` takes: `flock` never sees it.
const LOCKF_ONLY: &str = r#"
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o660)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("ready", flush=True)
sys.stdin.read()
"#;

#[test]
fn the_python_service_lock_refuses_the_restore() {
    let scratch = Scratch::seeded(200);
    let stamp = scratch.create(false);
    let service = PythonService::start(SERVICE_LOCK, &[scratch.paths.db_path.as_str()]);
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", service.pid())) && stderr.contains("atocore service"),
        "the holder's record names it: {stderr}"
    );
    let preview = scratch.run(&["restore", &stamp, "--dry-run"]);
    assert_eq!(preview.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&preview.stdout).contains("REFUSED  service_lock"));
}

#[test]
fn a_posix_record_lock_on_the_service_lock_refuses_the_restore() {
    let scratch = Scratch::seeded(200);
    let stamp = scratch.create(false);
    let _holder = PythonService::start(LOCKF_ONLY, &[scratch.paths.service_lock_path().as_str()]);
    let output = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(".atocore-service.lock"), "{stderr}");
}

#[test]
fn the_python_service_refuses_to_start_while_a_restore_marker_exists() {
    let scratch = Scratch::seeded(200);
    let stamp = scratch.create(false);
    let marker = scratch.paths.restore_marker_path();
    fs_err::write(
        &marker,
        format!(
            r#"{{"stamp":"{stamp}","started_at":"2026-12-06T03:00:00Z","pid":1,"pre_restore_stamp":null}}"#
        ),
    )
    .unwrap();
    let output = std::process::Command::new("python3")
        .args(["-c", SERVICE_LOCK, scratch.paths.db_path.as_str()])
        .env(
            "PYTHONPATH",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../integrations/python"),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(marker.as_str()) && stderr.contains(&stamp),
        "{stderr}"
    );
    // The restore that finishes the interrupted one clears the way.
    let restore = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stdout)
    );
    let _service = PythonService::start(SERVICE_LOCK, &[scratch.paths.db_path.as_str()]);
}
