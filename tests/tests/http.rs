//! The real `atocore-backup-http` on a free loopback port, driven by a real
//! HTTP client.
#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use atocore_backup_tests::{Scratch, tree_hashes, workspace_bin};
use fs_err as fs;

const TOKEN: &str = "drill-token";

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(scratch: &Scratch, token: Option<&str>) -> Server {
        let mut command = server_command(scratch, "127.0.0.1:0");
        match token {
            Some(token) => command.env("ATOCORE_ADMIN_TOKEN", token),
            None => command.env_remove("ATOCORE_ADMIN_TOKEN"),
        };
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = loop {
            let line = lines.next().expect("the server exited before listening").unwrap();
            if let Some((_, rest)) = line.split_once("listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining the request log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            base: format!("http://{address}"),
        }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_command(scratch: &Scratch, listen: &str) -> Command {
    let mut command = Command::new(workspace_bin("atocore-backup-http"));
    command
        .args(["--data-dir", scratch.root.join("data").as_str()])
        .args(["--backup-dir", scratch.root.join("backups").as_str()])
        .args(["--listen", listen]);
    command
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn call(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, serde_json::Value) {
    let agent = agent();
    let mut response = match method {
        "GET" => {
            let mut request = agent.get(url);
            if let Some(token) = token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            request.call().unwrap()
        }
        _ => {
            let mut request = agent.post(url);
            if let Some(token) = token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            request.send(body.unwrap_or("")).unwrap()
        }
    };
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn the_drill_through_http_then_the_cli_restore() {
    let scratch = Scratch::seeded(500);
    let server = Server::start(&scratch, Some(TOKEN));
    let base = server.base.clone();

    let (status, manifest) = call(
        "POST",
        &format!("{base}/admin/backup"),
        Some(r#"{"include_chroma": true}"#),
        Some(TOKEN),
    );
    assert_eq!(status, 201, "{manifest}");
    let stamp = manifest["stamp"].as_str().unwrap().to_owned();
    let (status, listing) = call("GET", &format!("{base}/admin/backup"), None, Some(TOKEN));
    assert_eq!(
        (status, listing["backups"][0]["stamp"].as_str()),
        (200, Some(stamp.as_str()))
    );
    let (status, report) = call(
        "GET",
        &format!("{base}/admin/backup/{stamp}/validate"),
        None,
        Some(TOKEN),
    );
    assert_eq!((status, report["valid"].as_bool()), (200, Some(true)));
    let (status, plan) = call(
        "POST",
        &format!("{base}/admin/backup/{stamp}/restore-plan"),
        Some("{}"),
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["include_chroma"], true);

    // Mutate, then: the running server holds the service lock, so restore refuses.
    let conn = rusqlite::Connection::open(&scratch.paths.db_path).unwrap();
    conn.execute("DELETE FROM memories WHERE id < 100", []).unwrap();
    drop(conn);
    let refused = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let status = server.stop();
    assert!(status.success(), "graceful shutdown on SIGTERM: {status:?}");
    let restored = scratch.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stdout)
    );
    assert!(!scratch.paths.restore_marker_path().exists());
    let conn = rusqlite::Connection::open(&scratch.paths.db_path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM memories", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 500);
}

#[test]
fn admin_routes_need_the_token() {
    let scratch = Scratch::seeded(10);
    let server = Server::start(&scratch, Some(TOKEN));
    let (status, body) = call("GET", &format!("{}/admin/backup", server.base), None, None);
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = call(
        "POST",
        &format!("{}/admin/backup", server.base),
        None,
        Some("wrong"),
    );
    assert_eq!(status, 401);
    let (status, _) = call("GET", &format!("{}/health", server.base), None, None);
    assert_eq!(status, 200);
}

#[test]
fn a_backup_while_another_operation_holds_the_lock_is_409() {
    let scratch = Scratch::seeded(10);
    let server = Server::start(&scratch, None);
    let mut holder = scratch.hold("hold-backup-lock");
    let (status, body) = call("POST", &format!("{}/admin/backup", server.base), None, None);
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("test-helper"));
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

#[test]
fn two_simultaneous_backups_one_wins_the_other_is_409() {
    let scratch = Scratch::seeded(60_000);
    let server = Server::start(&scratch, None);
    let url = format!("{}/admin/backup", server.base);
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || call("POST", &url, Some(r#"{"include_chroma": true}"#), None).0)
        })
        .collect();
    let mut statuses: Vec<u16> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    statuses.sort_unstable();
    assert!(statuses == [201, 409] || statuses == [201, 201], "{statuses:?}");
    let all = scratch.run(&["validate", "--all"]);
    assert!(all.status.success());
}

#[test]
fn a_traversal_stamp_is_400_and_touches_nothing() {
    let scratch = Scratch::seeded(10);
    scratch.create(false);
    let server = Server::start(&scratch, None);
    let before = tree_hashes(&scratch.root.join("backups/snapshots"));
    for path in [
        "/admin/backup/..%2F..%2Fetc",
        "/admin/backup/..%2F..%2Fetc/validate",
        "/admin/backup/20260101T000000Z%2F..",
    ] {
        let (status, body) = call("GET", &format!("{}{path}", server.base), None, None);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_stamp");
    }
    let (status, _) = call(
        "POST",
        &format!("{}/admin/backup/..%2F..%2Fetc/restore-plan", server.base),
        None,
        None,
    );
    assert_eq!(status, 400);
    assert_eq!(before, tree_hashes(&scratch.root.join("backups/snapshots")));
}

#[test]
fn the_server_refuses_a_public_address_without_a_token() {
    let scratch = Scratch::seeded(10);
    let output = server_command(&scratch, "0.0.0.0:0")
        .env_remove("ATOCORE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on non-loopback address 0.0.0.0:0 without ATOCORE_ADMIN_TOKEN"),
        "{stderr}"
    );
}

#[test]
fn health_answers_while_a_large_backup_runs() {
    let scratch = Scratch::seeded(80_000);
    // A chroma tree large enough that the copy takes a while.
    fs::write(
        scratch.paths.chroma_dir.join("segment-0001/data_level0.bin"),
        vec![3u8; 192 << 20],
    )
    .unwrap();
    let server = Server::start(&scratch, None);
    let done = Arc::new(AtomicBool::new(false));
    let backup = {
        let url = format!("{}/admin/backup", server.base);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let status = call("POST", &url, Some(r#"{"include_chroma": true}"#), None).0;
            done.store(true, Ordering::SeqCst);
            status
        })
    };
    // Wait until the backup is really under way.
    let snapshots = scratch.root.join("backups/snapshots");
    let started = std::time::Instant::now();
    while !fs::read_dir(&snapshots)
        .map(|mut entries| entries.any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".partial-")))
        .unwrap_or(false)
    {
        assert!(started.elapsed().as_secs() < 30, "the backup never started");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let (status, _) = call("GET", &format!("{}/health", server.base), None, None);
    let backup_finished_first = done.load(Ordering::SeqCst);
    assert_eq!(status, 200);
    assert!(!backup_finished_first, "/health waited for the backup");
    assert_eq!(backup.join().unwrap(), 201);
}

#[test]
fn a_cli_create_and_an_http_create_at_once_never_produce_a_half_listed_backup() {
    let scratch = Scratch::seeded(60_000);
    let server = Server::start(&scratch, None);
    let url = format!("{}/admin/backup", server.base);
    let http = std::thread::spawn(move || call("POST", &url, Some(r#"{"include_chroma": true}"#), None).0);
    let cli = scratch.run(&["create", "--include-chroma"]);
    let http_status = http.join().unwrap();
    let cli_code = cli.status.code();
    assert!(matches!(http_status, 201 | 409), "{http_status}");
    assert!(
        matches!(cli_code, Some(0) | Some(5)),
        "{cli_code:?}: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(http_status == 201 || cli_code == Some(0), "one of them wins");
    let all = scratch.run(&["validate", "--all"]);
    assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stdout));
}
