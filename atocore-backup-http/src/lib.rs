//! The HTTP admin API for atocore backups.
//!
//! [`router`] returns an [`axum::Router`] that a host server mounts beside its
//! own routes; the `atocore-backup-http` binary serves it alone. Handlers only
//! parse requests, call `atocore-backup-core` off the async executor, and
//! serialize results: no backup logic lives here.
//!
//! ```no_run
//! use atocore_backup_core::RuntimePaths;
//! use atocore_backup_http::{AdminState, router};
//!
//! let paths = RuntimePaths::under("/srv/atocore".into());
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "atocore" }))
//!     .merge(router(AdminState::new(paths, std::env::var("ATOCORE_ADMIN_TOKEN").ok())));
//! # let _ = app;
//! ```
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /admin/backup` (`{"include_chroma": true}`, optional) | 201, `BackupManifest` |
//! | `GET /admin/backup` | 200, `{"backups": [...], "warnings": [...]}` |
//! | `GET /admin/backup/{stamp}` | 200, `BackupManifest` |
//! | `GET /admin/backup/{stamp}/validate` | 200, `ValidationReport` (also when invalid) |
//! | `POST /admin/backup/{stamp}/restore-plan` | 200, `RestorePlan` (a preview) |
//! | `POST /admin/backup/prune` (`{"keep_daily": 7, ..., "dry_run": true}`) | 200, `PrunePlan` or `PruneReport` |
//! | `GET /health` | 200 |

mod auth;
mod error;
mod handlers;

use std::sync::Arc;
use std::time::Instant;

use atocore_backup_core::RuntimePaths;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

pub use error::ApiError;

/// Request bodies are a few booleans; anything bigger is refused with 413.
pub const BODY_LIMIT_BYTES: usize = 4 * 1024;

/// What the handlers need: where the runtime lives and the admin token.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    paths: RuntimePaths,
    token: Option<blake3::Hash>,
}

impl AdminState {
    /// `token`: when set, every `/admin` request needs `Authorization: Bearer <token>`.
    pub fn new(paths: RuntimePaths, token: Option<String>) -> Self {
        let token = token
            .filter(|t| !t.is_empty())
            .map(|t| blake3::hash(t.as_bytes()));
        AdminState {
            inner: Arc::new(Inner { paths, token }),
        }
    }

    pub(crate) fn paths(&self) -> &RuntimePaths {
        &self.inner.paths
    }

    pub(crate) fn token(&self) -> Option<&blake3::Hash> {
        self.inner.token.as_ref()
    }
}

/// The admin routes and `/health`, with their state applied, ready to merge
/// into a host server's router.
pub fn router(state: AdminState) -> Router {
    let admin = Router::new()
        .route("/admin/backup", post(handlers::create).get(handlers::list))
        .route("/admin/backup/prune", post(handlers::prune))
        .route("/admin/backup/{stamp}", get(handlers::manifest))
        .route("/admin/backup/{stamp}/validate", get(handlers::validate))
        .route("/admin/backup/{stamp}/restore-plan", post(handlers::restore_plan))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(state);
    Router::new()
        .route("/health", get(handlers::health))
        .merge(admin)
        .layer(middleware::from_fn(log_request))
}

/// One line per request on the tracing subscriber: method, path, status, latency.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
