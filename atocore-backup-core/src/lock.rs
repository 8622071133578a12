//! Advisory locks: one for backup operations, one for the running service.
//!
//! Both are taken twice on a file that is never deleted, as a `flock` and as
//! an open-file-description `fcntl` write lock on the whole file: a holder
//! of either kind is seen (Python's `fcntl.lockf` takes the second kind,
//! which `flock` alone never notices). The kernel drops both when the holder
//! exits, however it exits, so a crash never leaves a stale lock behind.
//! Closing another descriptor of the file drops neither (unlike a classic
//! POSIX lock), so a host process is safe from its own lock files. The
//! file's content only says who holds it.

use std::fmt;
use std::fs::TryLockError;
use std::io::{Read, Seek, Write};

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;
use fs_err::os::unix::fs::OpenOptionsExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::durable::{adopt_owner_of_dir, create_dir_durably};
use crate::error::{Error, Result};
use crate::marker::RestoreMarker;
use crate::paths::RuntimePaths;
use crate::record_lock::{conflicting_lock, try_lock_whole_file};

/// Who holds a lock, as written into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id of the holder.
    pub pid: u32,
    /// Host name of the holder.
    pub host: String,
    /// What it is doing: `create`, `restore`, `prune`, ...
    pub operation: String,
    /// When it took the lock.
    pub started_at: Timestamp,
}

impl LockHolder {
    fn current(operation: &str, now: Timestamp) -> Self {
        LockHolder {
            pid: std::process::id(),
            host: rustix::system::uname().nodename().to_string_lossy().into_owned(),
            operation: operation.to_owned(),
            started_at: now,
        }
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on {} ({} since {})",
            self.pid, self.host, self.operation, self.started_at
        )
    }
}

/// An exclusive `flock` held until drop.
#[derive(Debug)]
struct HeldLock {
    file: fs::File,
}

const CONTENTION_RETRIES: u32 = 5;
const CONTENTION_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

enum Attempt {
    Held(HeldLock),
    Contended(fs::File),
}

fn try_lock(path: &Utf8Path, mode: u32) -> Result<Attempt> {
    // Never truncate on open: the holder's record must survive our attempt.
    // Never follow a symlink: a link planted here would have us write the
    // holder's record wherever it points.
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(nix::libc::ELOOP) => Error::SymlinkRefused {
                path: path.to_owned(),
            },
            _ => Error::Io(error),
        })?;
    adopt_owner_of_dir(&file, crate::paths::parent_or_dot(path))?;
    // A child process forked by any thread of the holder shares its lock
    // until the child execs, so a just-released lock can look held for a
    // moment; a few short retries tell that apart from a real holder.
    for _ in 0..CONTENTION_RETRIES {
        match file.file().try_lock() {
            Ok(()) => match try_lock_whole_file(&file, path)? {
                true => return Ok(Attempt::Held(HeldLock { file })),
                false => {
                    let _ = file.file().unlock();
                    std::thread::sleep(CONTENTION_PAUSE);
                }
            },
            Err(TryLockError::WouldBlock) => std::thread::sleep(CONTENTION_PAUSE),
            Err(TryLockError::Error(source)) => {
                return Err(Error::Io(std::io::Error::new(
                    source.kind(),
                    format!("cannot lock `{path}`: {source}"),
                )));
            }
        }
    }
    Ok(Attempt::Contended(file))
}

impl HeldLock {
    fn record(&mut self, holder: &LockHolder) -> Result<()> {
        let text = serde_json::to_string(holder).unwrap_or_default();
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(text.as_bytes())?;
        self.file.sync_all()?;
        Ok(())
    }
}

fn read_holder(file: &mut fs::File) -> Option<LockHolder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Exclusive right to change `<backup-dir>`: held by create, restore and prune.
///
/// Operations that need it take `&BackupDirLock` as proof, so a restore can
/// run its pre-restore snapshot under the lock it already holds.
#[derive(Debug)]
pub struct BackupDirLock {
    _lock: HeldLock,
    path: Utf8PathBuf,
}

impl BackupDirLock {
    /// Takes the lock at once or fails naming its holder.
    ///
    /// # Errors
    /// [`Error::Busy`] when another operation holds it; I/O errors when the
    /// backup directory cannot be created or the lock file written.
    pub fn acquire(paths: &RuntimePaths, operation: &str, now: Timestamp) -> Result<Self> {
        create_dir_durably(&paths.backup_dir)?;
        let path = paths.backup_lock_path();
        match try_lock(&path, 0o600)? {
            Attempt::Held(mut lock) => {
                lock.record(&LockHolder::current(operation, now))?;
                Ok(BackupDirLock { _lock: lock, path })
            }
            Attempt::Contended(mut file) => {
                let holder = read_holder(&mut file).unwrap_or_else(|| LockHolder {
                    pid: 0,
                    host: "an unknown host".into(),
                    operation: "an unrecorded operation".into(),
                    started_at: now,
                });
                Err(Error::Busy { path, holder })
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Utf8Path {
        &self.path
    }
}

/// The lock a running atocore server holds on `<db dir>/.atocore-service.lock`.
///
/// Hold it for the whole life of the service:
///
/// ```no_run
/// # fn main() -> Result<(), atocore_backup_core::Error> {
/// use atocore_backup_core::{RuntimePaths, ServiceLock};
/// let paths = RuntimePaths::under("/srv/atocore".into());
/// let _service_lock = ServiceLock::acquire(&paths)?; // released when dropped
/// // ... serve requests ...
/// # Ok(()) }
/// ```
///
/// While it is held, `restore` refuses. It cannot be taken while a restore
/// marker exists, so a half-restored runtime never starts.
#[derive(Debug)]
pub struct ServiceLock {
    _lock: HeldLock,
}

impl ServiceLock {
    /// Takes the service lock for a running service.
    ///
    /// # Errors
    /// [`Error::RestoreInProgress`] while a restore marker exists,
    /// [`Error::ServiceRunning`] when another process holds the lock.
    pub fn acquire(paths: &RuntimePaths) -> Result<Self> {
        if let Some(marker) = RestoreMarker::read(paths)? {
            return Err(Error::RestoreInProgress {
                path: paths.restore_marker_path(),
                marker,
            });
        }
        let lock = ServiceLock::acquire_ignoring_marker(paths, "atocore service")?;
        // A restore may have started between the check and the lock; it
        // writes its marker only while holding this lock, so look again.
        if let Some(marker) = RestoreMarker::read(paths)? {
            return Err(Error::RestoreInProgress {
                path: paths.restore_marker_path(),
                marker,
            });
        }
        Ok(lock)
    }

    /// Takes the lock for a restore, which is what finishes an interrupted one.
    pub(crate) fn acquire_ignoring_marker(paths: &RuntimePaths, operation: &str) -> Result<Self> {
        create_dir_durably(paths.db_dir())?;
        let path = paths.service_lock_path();
        // Readable and writable by the service's group: a lock file created
        // by a root restore must not keep a non-root service from starting.
        match try_lock(&path, 0o660)? {
            Attempt::Held(mut lock) => {
                lock.record(&LockHolder::current(operation, jiff::Timestamp::now()))?;
                Ok(ServiceLock { _lock: lock })
            }
            Attempt::Contended(mut file) => Err(Error::ServiceRunning {
                path,
                holder: read_holder(&mut file)
                    .map_or_else(|| "a running process".to_owned(), |holder| holder.to_string()),
            }),
        }
    }
}

/// Who holds the service lock, if anyone, found without taking it, without
/// creating its file and without a lock of this process's own to drop.
pub(crate) fn probe_service_lock(paths: &RuntimePaths) -> Result<Option<String>> {
    use nix::libc;
    let path = paths.service_lock_path();
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path);
    let mut file = match opened {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::SymlinkRefused { path });
        }
        Err(error) => return Err(error.into()),
    };
    for _ in 0..CONTENTION_RETRIES {
        let flock_free = match file.file().try_lock_shared() {
            Ok(()) => {
                let _ = file.file().unlock();
                true
            }
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(source)) => return Err(source.into()),
        };
        let record_lock_free = conflicting_lock(&file, &path, 0, 0)?.is_none();
        // `try_lock_shared` is free beside another reader: only an exclusive
        // `flock` (what holders take) fails it.
        if flock_free && record_lock_free {
            return Ok(None);
        }
        std::thread::sleep(CONTENTION_PAUSE);
    }
    Ok(Some(read_holder(&mut file).map_or_else(
        || "a running process".to_owned(),
        |holder| holder.to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_backup_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap();
        let paths = RuntimePaths::under(root);
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let held = BackupDirLock::acquire(&paths, "create", now).unwrap();
        let error = BackupDirLock::acquire(&paths, "restore", now).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("create since 2026-01-01T00:00:00Z"), "{text}");
        drop(held);
        BackupDirLock::acquire(&paths, "restore", now).unwrap();
    }

    #[test]
    fn the_service_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let paths = RuntimePaths::under(Utf8Path::from_path(dir.path()).unwrap());
        let held = ServiceLock::acquire(&paths).unwrap();
        assert!(matches!(
            ServiceLock::acquire(&paths),
            Err(Error::ServiceRunning { .. })
        ));
        drop(held);
        ServiceLock::acquire(&paths).unwrap();
    }
}
