//! Route handlers: parse, call the core on a blocking thread, serialize.

use atocore_backup_core::{
    self as core, BackupListing, BackupManifest, CreateOptions, Error, NoProgress, RestoreOptions,
    RestorePlan, RetentionPolicy, Stamp, ValidationReport,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::AdminState;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// Runs core work off the async executor, so a long backup never stalls
/// `/health` or a list request.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the backup task stopped unexpectedly",
        )),
    }
}

fn parse_stamp(text: &str) -> ApiResult<Stamp> {
    text.parse::<Stamp>().map_err(ApiError::from)
}

/// An optional JSON body: empty means all defaults. Parsed here rather than
/// by `Json` so that a missing content type is fine and every rejection has
/// the contract's shape.
fn parse_body<T: DeserializeOwned + Default>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is over {} bytes", crate::BODY_LIMIT_BYTES),
            )
        } else {
            ApiError::bad_body(rejection.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::bad_body(format!("the request body is not valid: {error}")))
}

pub(crate) async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    #[serde(default)]
    include_chroma: bool,
}

pub(crate) async fn create(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<BackupManifest>)> {
    let body: CreateBody = parse_body(body)?;
    let paths = state.paths().clone();
    let options = CreateOptions {
        include_chroma: body.include_chroma,
        ..CreateOptions::default()
    };
    let manifest = blocking(move || core::create_backup(&paths, &options, &NoProgress)).await?;
    Ok((StatusCode::CREATED, Json(manifest)))
}

pub(crate) async fn list(State(state): State<AdminState>) -> ApiResult<Json<BackupListing>> {
    let paths = state.paths().clone();
    Ok(Json(blocking(move || core::list_backups(&paths)).await?))
}

fn not_found(state: &AdminState, stamp: &Stamp) -> ApiError {
    ApiError::from(Error::BackupNotFound {
        stamp: stamp.to_string(),
        dir: state.paths().snapshots_dir(),
        nearest: Vec::new(),
    })
}

pub(crate) async fn manifest(
    State(state): State<AdminState>,
    Path(stamp): Path<String>,
) -> ApiResult<Json<BackupManifest>> {
    let stamp = parse_stamp(&stamp)?;
    let dir = state.paths().snapshots_dir().join(stamp.as_str());
    if !dir.is_dir() {
        return Err(not_found(&state, &stamp));
    }
    Ok(Json(blocking(move || BackupManifest::load(&dir)).await?))
}

pub(crate) async fn validate(
    State(state): State<AdminState>,
    Path(stamp): Path<String>,
) -> ApiResult<Json<ValidationReport>> {
    let stamp = parse_stamp(&stamp)?;
    let backup_dir = state.paths().backup_dir.clone();
    let checked = stamp.clone();
    let report = blocking(move || core::validate_backup(&backup_dir, &checked)).await?;
    if !report.exists {
        return Err(not_found(&state, &stamp));
    }
    Ok(Json(report))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanBody {
    include_chroma: Option<bool>,
    #[serde(default = "yes")]
    pre_restore_snapshot: bool,
}

fn yes() -> bool {
    true
}

impl Default for PlanBody {
    fn default() -> Self {
        PlanBody {
            include_chroma: None,
            pre_restore_snapshot: true,
        }
    }
}

pub(crate) async fn restore_plan(
    State(state): State<AdminState>,
    Path(stamp): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<RestorePlan>> {
    let stamp = parse_stamp(&stamp)?;
    let body: PlanBody = parse_body(body)?;
    let paths = state.paths().clone();
    let options = RestoreOptions {
        include_chroma: body.include_chroma,
        pre_restore_snapshot: body.pre_restore_snapshot,
        chown: None,
    };
    Ok(Json(
        blocking(move || core::preview_restore(&paths, &stamp, &options)).await?,
    ))
}

/// `POST /admin/backup/prune`: the policy and an explicit `dry_run`, so that
/// a client that forgets it deletes nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PruneBody {
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    keep_within: Option<jiff::Span>,
    keep_pre_restore_within: Option<jiff::Span>,
    dry_run: bool,
}

pub(crate) async fn prune(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    // An empty body is not a default here: `dry_run` must be said.
    let bytes = match &body {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
            return Err(ApiError::bad_body("the body must give a policy and `dry_run`"));
        }
        _ => body,
    };
    let raw: serde_json::Value = parse_body(bytes)?;
    let body: PruneBody = serde_json::from_value(raw)
        .map_err(|error| ApiError::bad_body(format!("the request body is not valid: {error}")))?;
    let policy = RetentionPolicy {
        keep_last: body.keep_last,
        keep_hourly: body.keep_hourly,
        keep_daily: body.keep_daily,
        keep_weekly: body.keep_weekly,
        keep_monthly: body.keep_monthly,
        keep_yearly: body.keep_yearly,
        keep_within: body.keep_within,
        keep_pre_restore_within: body
            .keep_pre_restore_within
            .unwrap_or_else(core::default_pre_restore_within),
    };
    let paths = state.paths().clone();
    let now = jiff::Timestamp::now();
    let dry_run = body.dry_run;
    let answer = blocking(move || {
        let plan = core::preview_prune(&paths, &policy, now)?;
        if dry_run {
            Ok(serde_json::to_value(plan).unwrap_or_default())
        } else {
            Ok(serde_json::to_value(core::execute_prune(&paths, plan)?).unwrap_or_default())
        }
    })
    .await?;
    Ok(Json(answer))
}
