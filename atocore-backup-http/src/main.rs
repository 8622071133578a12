//! `atocore-backup-http`: the admin API served alone.
//!
//! It is a running service, so it holds the service lock: a restore refuses
//! while it is up.

use std::net::SocketAddr;
use std::process::ExitCode;

use atocore_backup_core::{PathOverrides, RuntimePaths, ServiceLock};
use atocore_backup_http::{AdminState, router};
use camino::Utf8PathBuf;
use clap::Parser;

/// Serve the atocore backup admin API.
#[derive(Debug, Parser)]
#[command(name = "atocore-backup-http", version, about)]
struct Args {
    /// Runtime data directory [default: ./data]
    #[arg(long, env = "ATOCORE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<Utf8PathBuf>,
    /// SQLite database [default: <data-dir>/db/atocore.db]
    #[arg(long, env = "ATOCORE_DB_PATH", value_name = "PATH")]
    db_path: Option<Utf8PathBuf>,
    /// Chroma directory [default: <data-dir>/chroma]
    #[arg(long, env = "ATOCORE_CHROMA_DIR", value_name = "DIR")]
    chroma_dir: Option<Utf8PathBuf>,
    /// Project registry JSON [default: <data-dir>/config/project-registry.json]
    #[arg(long, env = "ATOCORE_REGISTRY_PATH", value_name = "PATH")]
    registry_path: Option<Utf8PathBuf>,
    /// Backup directory [default: ./backups]
    #[arg(long, env = "ATOCORE_BACKUP_DIR", value_name = "DIR")]
    backup_dir: Option<Utf8PathBuf>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8100")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> Result<(), String> {
    let token = std::env::var("ATOCORE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if !args.listen.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "refusing to listen on non-loopback address {} without ATOCORE_ADMIN_TOKEN",
            args.listen
        ));
    }
    let paths = RuntimePaths::resolve(PathOverrides {
        data_dir: args.data_dir,
        db_path: args.db_path,
        chroma_dir: args.chroma_dir,
        registry_path: args.registry_path,
        backup_dir: args.backup_dir,
    });
    let _service_lock = ServiceLock::acquire(&paths).map_err(|e| e.chain())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        tracing::info!(address = %local, "listening on {local}");
        axum::serve(listener, router(AdminState::new(paths, token)))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| format!("server error: {e}"))
    })
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
