//! The shape the atocore server copies: hold the service lock for the life of
//! the process, mount the admin router beside the server's own routes.
//!
//! ```sh
//! cargo run -p atocore-backup-http --example host_server -- /srv/atocore
//! ```
#![allow(clippy::print_stderr)]

use atocore_backup_core::{RuntimePaths, ServiceLock};
use atocore_backup_http::{AdminState, router};
use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args().nth(1).unwrap_or_else(|| ".".to_owned());
    let paths = RuntimePaths::under(root.as_str().into());

    // Held until the process exits: restores refuse while the service runs,
    // and the service refuses to start on a half-restored runtime.
    let _service_lock = ServiceLock::acquire(&paths).map_err(|e| e.chain())?;

    let app = Router::new()
        .route("/api/ping", get(|| async { "pong" }))
        .merge(router(AdminState::new(
            paths,
            std::env::var("ATOCORE_ADMIN_TOKEN").ok(),
        )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8200").await?;
    eprintln!("host server on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
