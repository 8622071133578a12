//! Test-only fault injection, driven by environment variables so that
//! end-to-end tests can crash or fail a real process at a named point.
//!
//! - `ATOCORE_BACKUP_CRASH_AT=<point>` aborts the process (as abruptly as a
//!   SIGKILL: no destructors, no cleanup) when execution reaches `<point>`.
//! - `ATOCORE_BACKUP_FAULT=<fault>` makes the named operation fail, e.g.
//!   `chroma-rename-ebusy` behaves as if the chroma dir were a bind mount;
//!   `chroma-exchange-unsupported` as if the filesystem lacked `RENAME_EXCHANGE`;
//!   `corrupt-restored-db` damages the db right after it is swapped in, so
//!   the integrity-failure path runs on a really damaged file;
//!   `checkpoint-busy` makes the `checkpoint_wal` step see `busy = 1`, as if
//!   a connection had opened the db after the pre-restore snapshot.
//!
//! Both are read once; with neither set, each check is one atomic load.

use std::sync::OnceLock;

fn setting(name: &'static str, cell: &'static OnceLock<Option<String>>) -> Option<&'static str> {
    cell.get_or_init(|| std::env::var(name).ok()).as_deref()
}

/// Aborts the process if `ATOCORE_BACKUP_CRASH_AT` names `point`.
pub(crate) fn crash_point(point: &str) {
    static CRASH_AT: OnceLock<Option<String>> = OnceLock::new();
    if setting("ATOCORE_BACKUP_CRASH_AT", &CRASH_AT) == Some(point) {
        std::process::abort();
    }
}

/// True if `ATOCORE_BACKUP_FAULT` names `fault`.
pub(crate) fn injected(fault: &str) -> bool {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    setting("ATOCORE_BACKUP_FAULT", &FAULT) == Some(fault)
}
