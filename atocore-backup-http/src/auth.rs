//! Bearer-token check for `/admin` routes.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use crate::AdminState;
use crate::error::ApiError;

/// Compares BLAKE3 digests: `blake3::Hash` equality is constant-time, and
/// hashing first hides the token's length too.
pub(crate) async fn require_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = state.token() {
        let presented = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|token| blake3::hash(token.trim().as_bytes()));
        match presented {
            Some(presented) if presented == *expected => {}
            Some(_) => return Err(ApiError::unauthorized("the bearer token is wrong")),
            None => {
                return Err(ApiError::unauthorized(
                    "`Authorization: Bearer <token>` is required",
                ));
            }
        }
    }
    Ok(next.run(request).await)
}
