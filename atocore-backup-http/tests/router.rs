//! Every route and every error status, through the router without a socket.
#![allow(clippy::unwrap_used)] // a failed step in a test should panic with its error

use atocore_backup_core::{
    BackupDirLock, CreateOptions, NoProgress, RuntimePaths, create_backup, seed_runtime,
};
use atocore_backup_http::{AdminState, router};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use camino::Utf8PathBuf;
use http_body_util::BodyExt;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token";

struct Fixture {
    _dir: tempfile::TempDir,
    root: Utf8PathBuf,
    paths: RuntimePaths,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(dir.path().canonicalize().unwrap()).unwrap();
        let paths = RuntimePaths::under(&root);
        seed_runtime(&paths, 50).unwrap();
        Fixture {
            _dir: dir,
            root,
            paths,
        }
    }

    fn backup(&self, include_chroma: bool) -> String {
        let options = CreateOptions {
            include_chroma,
            ..CreateOptions::default()
        };
        create_backup(&self.paths, &options, &NoProgress)
            .unwrap()
            .stamp
            .to_string()
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: &str,
        token: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        let response = router(AdminState::new(self.paths.clone(), Some(TOKEN.to_owned())))
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    async fn get(&self, uri: &str) -> (StatusCode, serde_json::Value) {
        self.call(Method::GET, uri, "", Some(TOKEN)).await
    }

    async fn post(&self, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
        self.call(Method::POST, uri, body, Some(TOKEN)).await
    }

    fn settings(&self) -> insta::Settings {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(&self.root.as_str().replace('.', "\\."), "[TEMP_DIR]");
        settings.add_filter(r"\b\d{8}T\d{6}Z(-\d+)?\b", "[STAMP]");
        settings.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "[TIME]");
        settings.add_filter(r"blake3:[0-9a-f]{64}", "blake3:[HASH]");
        settings.add_filter(r"pid \d+ on \S+", "pid [PID] on [HOST]");
        settings.add_filter(r#""available_bytes": \d+"#, r#""available_bytes": "[FREE]""#);
        settings.add_filter(r#""source_mtime_ns": \d+"#, r#""source_mtime_ns": "[MTIME]""#);
        // Whoever runs the tests, under whatever umask.
        settings.add_filter(r#""gid": \d+"#, r#""gid": "[GID]""#);
        settings.add_filter(r#""uid": \d+"#, r#""uid": "[UID]""#);
        settings.add_filter(r#""mode": "0[0-7]{3}""#, r#""mode": "[MODE]""#);
        settings
    }
}

fn snapshot(fixture: &Fixture, name: &str, status: StatusCode, body: &serde_json::Value) {
    let text = format!("{status}\n{}", serde_json::to_string_pretty(body).unwrap());
    fixture.settings().bind(|| insta::assert_snapshot!(name, text));
}

#[tokio::test]
async fn health_needs_no_token() {
    let fixture = Fixture::new();
    let (status, body) = fixture.call(Method::GET, "/health", "", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn post_backup_creates_with_and_without_a_body() {
    let fixture = Fixture::new();
    let (status, body) = fixture.post("/admin/backup", r#"{"include_chroma": true}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["chroma"]["file_count"], 5);
    snapshot(&fixture, "post_backup_with_chroma", status, &body);
    let (status, body) = fixture.post("/admin/backup", "").await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body["chroma"].is_null());
}

#[tokio::test]
async fn list_and_get_a_manifest() {
    let fixture = Fixture::new();
    let stamp = fixture.backup(false);
    let (status, body) = fixture.get("/admin/backup").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["backups"][0]["stamp"], stamp.as_str());
    snapshot(&fixture, "list", status, &body);
    let (status, body) = fixture.get(&format!("/admin/backup/{stamp}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["stamp"], stamp.as_str());
}

#[tokio::test]
async fn validate_answers_200_also_when_invalid() {
    let fixture = Fixture::new();
    let stamp = fixture.backup(true);
    let (status, body) = fixture.get(&format!("/admin/backup/{stamp}/validate")).await;
    assert_eq!((status, body["valid"].as_bool()), (StatusCode::OK, Some(true)));
    fs_err::write(
        fixture
            .paths
            .snapshots_dir()
            .join(&stamp)
            .join("chroma/segment-0001/length.bin"),
        b"x",
    )
    .unwrap();
    let (status, body) = fixture.get(&format!("/admin/backup/{stamp}/validate")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["valid"], false);
    snapshot(&fixture, "validate_invalid", status, &body["errors"]);
}

#[tokio::test]
async fn restore_plan_is_a_preview_that_changes_nothing() {
    let fixture = Fixture::new();
    let stamp = fixture.backup(true);
    let marker = fixture.paths.restore_marker_path();
    let (status, body) = fixture
        .post(
            &format!("/admin/backup/{stamp}/restore-plan"),
            r#"{"pre_restore_snapshot": false}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["steps"].as_array().unwrap().len(), 12);
    assert!(!marker.exists());
    snapshot(&fixture, "restore_plan", status, &body);
}

#[tokio::test]
async fn errors_have_the_contract_shape_and_status() {
    let fixture = Fixture::new();
    let stamp = fixture.backup(false);
    let cases = [
        (
            "bad_stamp",
            Method::GET,
            "/admin/backup/..%2F..%2Fetc/validate".to_owned(),
            "",
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown_stamp",
            Method::GET,
            "/admin/backup/20000101T000000Z".to_owned(),
            "",
            Some(TOKEN),
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown_stamp_validate",
            Method::GET,
            "/admin/backup/20000101T000000Z/validate".to_owned(),
            "",
            Some(TOKEN),
            StatusCode::NOT_FOUND,
        ),
        (
            "missing_token",
            Method::GET,
            "/admin/backup".to_owned(),
            "",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong_token",
            Method::GET,
            "/admin/backup".to_owned(),
            "",
            Some("nope"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "malformed_body",
            Method::POST,
            "/admin/backup".to_owned(),
            "{not json",
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown_field",
            Method::POST,
            "/admin/backup".to_owned(),
            r#"{"include_everything": true}"#,
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        (
            "chroma_not_in_backup",
            Method::POST,
            format!("/admin/backup/{stamp}/restore-plan"),
            r#"{"include_chroma": true}"#,
            Some(TOKEN),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (name, method, uri, body, token, expected) in cases {
        let (status, json) = fixture.call(method, &uri, body, token).await;
        assert_eq!(status, expected, "{name}: {json}");
        assert!(
            json["error"]["code"].is_string() && json["error"]["message"].is_string(),
            "{name}: {json}"
        );
        snapshot(&fixture, &format!("error_{name}"), status, &json);
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let fixture = Fixture::new();
    let huge = format!(
        r#"{{"include_chroma": true, "pad": "{}"}}"#,
        "x".repeat(64 * 1024)
    );
    let (status, json) = fixture.post("/admin/backup", &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    snapshot(&fixture, "error_body_too_large", status, &json);
}

#[tokio::test]
async fn a_held_backup_lock_is_409() {
    let fixture = Fixture::new();
    let _lock =
        BackupDirLock::acquire(&fixture.paths, "create", "2026-01-01T00:00:00Z".parse().unwrap()).unwrap();
    let (status, json) = fixture.post("/admin/backup", "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    snapshot(&fixture, "error_busy", status, &json);
}

#[tokio::test]
async fn a_real_io_failure_is_500_naming_the_path() {
    let fixture = Fixture::new();
    fs_err::remove_file(&fixture.paths.db_path).unwrap();
    let (status, json) = fixture.post("/admin/backup", "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    snapshot(&fixture, "error_missing_db", status, &json);
}

#[tokio::test]
async fn a_backup_dir_that_is_a_file_is_500_naming_it_not_an_empty_list() {
    let fixture = Fixture::new();
    fs_err::write(&fixture.paths.backup_dir, "not a directory").unwrap();
    let (status, json) = fixture.get("/admin/backup").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    snapshot(&fixture, "error_backup_dir_is_a_file", status, &json);
}

#[tokio::test]
async fn no_token_configured_means_open_admin_routes() {
    let fixture = Fixture::new();
    let response = router(AdminState::new(fixture.paths.clone(), None))
        .oneshot(
            Request::builder()
                .uri("/admin/backup")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn prune_previews_then_executes_and_needs_an_explicit_dry_run() {
    let fixture = Fixture::new();
    let stamps: Vec<String> = (0..3).map(|_| fixture.backup(false)).collect();
    let (status, json) = fixture.post("/admin/backup/prune", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    snapshot(&fixture, "error_prune_without_body", status, &json);
    let (status, json) = fixture.post("/admin/backup/prune", r#"{"keep_last": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let (status, json) = fixture.post("/admin/backup/prune", r#"{"dry_run": true}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty policy: {json}");
    assert_eq!(json["error"]["code"], "bad_policy");

    let (status, plan) = fixture
        .post(
            "/admin/backup/prune",
            r#"{"keep_last": 1, "keep_within": "1h", "dry_run": true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // All three are within the hour; nothing is removed and nothing changed.
    assert_eq!(plan["remove"].as_array().unwrap().len(), 0, "{plan}");
    let (status, plan) = fixture
        .post("/admin/backup/prune", r#"{"keep_last": 1, "dry_run": true}"#)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(plan["remove"].as_array().unwrap().len(), 2);
    for stamp in &stamps {
        assert!(fixture.paths.snapshots_dir().join(stamp).is_dir());
    }
    let (status, report) = fixture
        .post("/admin/backup/prune", r#"{"keep_last": 1, "dry_run": false}"#)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["success"], true);
    assert!(fixture.paths.snapshots_dir().join(&stamps[2]).is_dir());
    assert!(!fixture.paths.snapshots_dir().join(&stamps[0]).exists());
}

#[tokio::test]
async fn prune_under_a_held_lock_is_409() {
    let fixture = Fixture::new();
    fixture.backup(false);
    let _lock =
        BackupDirLock::acquire(&fixture.paths, "create", "2026-01-01T00:00:00Z".parse().unwrap()).unwrap();
    let (status, _) = fixture
        .post("/admin/backup/prune", r#"{"keep_last": 1, "dry_run": false}"#)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}
