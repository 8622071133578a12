//! The safety gates of a restore: enforced before anything changes, and
//! evaluated without changing anything for a preview, so a dry run refuses
//! where the real run would.

use camino::Utf8Path;

use crate::db_users::find_db_users;
use crate::error::{Error, ErrorClass, Result};
use crate::lock::{ServiceLock, probe_service_lock};
use crate::paths::RuntimePaths;
use crate::plan::{Gate, GateCheck, GateStatus};
use crate::sqlite::check_exclusive;

/// The gates a restore passed, and the lock it holds until it ends.
pub(crate) struct PassedGates {
    pub service_lock: ServiceLock,
    pub checks: Vec<GateCheck>,
}

fn passed(gate: Gate, detail: impl Into<String>) -> GateCheck {
    GateCheck {
        gate,
        status: GateStatus::Passed,
        detail: detail.into(),
    }
}

/// Takes the service lock, then requires that no other process has the db
/// open and that `BEGIN EXCLUSIVE` succeeds at once.
///
/// # Errors
/// [`Error::ServiceRunning`], [`Error::DbOpenElsewhere`], [`Error::DbInUse`],
/// each naming who or what refused; I/O errors reading the world.
pub(crate) fn enforce(paths: &RuntimePaths) -> Result<PassedGates> {
    let service_lock = ServiceLock::acquire_ignoring_marker(paths, "restore")?;
    let mut checks = vec![passed(
        Gate::ServiceLock,
        format!(
            "no other process held `{}`; this restore holds it until it ends",
            paths.service_lock_path()
        ),
    )];
    checks.push(passed(Gate::DbNotOpen, ensure_db_unused(&paths.db_path)?));
    // Only now is opening a connection safe: nobody, this process included,
    // has the file open, so closing ours drops nobody's locks.
    checks.push(exclusive_access(&paths.db_path)?);
    Ok(PassedGates { service_lock, checks })
}

/// The `db_not_open` gate: what it saw when it passed.
///
/// # Errors
/// [`Error::DbOpenElsewhere`] naming each process and file.
pub(crate) fn ensure_db_unused(db: &Utf8Path) -> Result<String> {
    let found = find_db_users(db)?;
    let partial = found.partial_note();
    if !found.users.is_empty() {
        return Err(Error::DbOpenElsewhere {
            path: db.to_owned(),
            users: found.users.iter().map(ToString::to_string).collect(),
            partial,
        });
    }
    Ok(match partial {
        Some(note) => format!("no process was seen with the db, its -wal or its -shm open ({note})"),
        None => "no process has the db, its -wal or its -shm open".to_owned(),
    })
}

fn exclusive_access(db: &Utf8Path) -> Result<GateCheck> {
    if !db.is_file() {
        return Ok(passed(Gate::ExclusiveAccess, "there is no live database"));
    }
    check_exclusive(db)?;
    Ok(passed(Gate::ExclusiveAccess, "BEGIN EXCLUSIVE succeeded at once"))
}

/// Every gate as a restore would find it now, taking nothing and leaving the
/// runtime as it was.
pub(crate) fn preview(paths: &RuntimePaths) -> Vec<GateCheck> {
    let service_lock = match probe_service_lock(paths) {
        Ok(None) => passed(
            Gate::ServiceLock,
            format!("no process holds `{}`", paths.service_lock_path()),
        ),
        Ok(Some(holder)) => GateCheck {
            gate: Gate::ServiceLock,
            status: GateStatus::Refused,
            detail: Error::ServiceRunning {
                path: paths.service_lock_path(),
                holder,
            }
            .to_string(),
        },
        Err(error) => finding(Gate::ServiceLock, &error),
    };
    let db_not_open = match ensure_db_unused(&paths.db_path) {
        Ok(detail) => passed(Gate::DbNotOpen, detail),
        Err(error) => finding(Gate::DbNotOpen, &error),
    };
    let exclusive = if db_not_open.status == GateStatus::Passed {
        exclusive_access(&paths.db_path).unwrap_or_else(|error| finding(Gate::ExclusiveAccess, &error))
    } else {
        GateCheck {
            gate: Gate::ExclusiveAccess,
            status: GateStatus::NotEvaluated,
            detail: "not tried: opening a db another process has open is what the gates prevent".to_owned(),
        }
    };
    vec![service_lock, db_not_open, exclusive]
}

/// A gate's error as a finding: a refusal, or a check that could not run.
fn finding(gate: Gate, error: &Error) -> GateCheck {
    GateCheck {
        gate,
        status: if error.class() == ErrorClass::Refused {
            GateStatus::Refused
        } else {
            GateStatus::NotEvaluated
        },
        detail: error.chain(),
    }
}
