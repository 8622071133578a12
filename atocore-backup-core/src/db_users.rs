//! Who else has the live db open: the gate that `BEGIN EXCLUSIVE` cannot be.
//!
//! A connection that has opened the db but not yet read from it holds no
//! SQLite lock at all, and an idle WAL connection holds none that
//! `BEGIN EXCLUSIVE` conflicts with; both keep writing into the old inode
//! after a restore swaps the file. Only the kernel's list of open files sees
//! them, so this scans `/proc/*/fd` as `fuser` does, matching the db, its
//! `-wal` and its `-shm` by device and inode (never by path text).
//!
//! Processes whose descriptors cannot be read (another user's, without
//! privilege) and processes in another PID namespace (the service in its own
//! container) are invisible to that scan, so the lock bytes SQLite holds are
//! probed as well: the `-shm` dead-man-switch byte every WAL connection holds
//! a read lock on, and the db's lock-byte range.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;
use fs_err::os::unix::fs::OpenOptionsExt;
use nix::libc;

use crate::error::Result;
use crate::record_lock::conflicting_lock;

/// One process that has the db (or a sidecar) open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DbUser {
    /// Its pid; `None` when only a lock shows it and the kernel gives no pid
    /// (a process in another PID namespace).
    pub pid: Option<u32>,
    /// Its command line, escaped for display.
    pub command: String,
    /// The files it has open or locked, in the order db, `-shm`, `-wal`.
    pub paths: Vec<Utf8PathBuf>,
    /// Whether a lock rather than an open descriptor showed it.
    pub seen_by_lock: bool,
}

impl std::fmt::Display for DbUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match self.pid {
            Some(pid) if self.command.is_empty() => format!("pid {pid}"),
            Some(pid) => format!("pid {pid} ({})", self.command),
            None => "a process in another PID namespace (another container?)".to_owned(),
        };
        let how = if self.seen_by_lock {
            "holds SQLite locks on"
        } else {
            "has"
        };
        let open = if self.seen_by_lock { "" } else { " open" };
        let files: Vec<String> = self.paths.iter().map(|path| format!("`{path}`")).collect();
        write!(f, "{who} {how} {}{open}", files.join(", "))
    }
}

/// What the scan found, and how much of the system it could see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DbUsers {
    pub users: Vec<DbUser>,
    /// Processes whose descriptors could not be read.
    pub unreadable_processes: u32,
    /// Why the lock probes could not run, when they could not.
    pub probe_skipped: Option<String>,
}

impl DbUsers {
    /// One sentence on what the check could not see, if anything.
    pub fn partial_note(&self) -> Option<String> {
        let mut gaps = Vec::new();
        if self.unreadable_processes > 0 {
            gaps.push(format!(
                "the open files of {} processes could not be read (run as their user or as root to see them); their SQLite locks were probed instead",
                self.unreadable_processes
            ));
        }
        if let Some(reason) = &self.probe_skipped {
            gaps.push(format!("the lock probes did not run: {reason}"));
        }
        (!gaps.is_empty()).then(|| format!("partial check: {}", gaps.join("; ")))
    }
}

/// The db, its `-wal` and `-shm` as they exist now, by device and inode.
struct Watched {
    path: Utf8PathBuf,
    dev: u64,
    ino: u64,
}

/// Finds every process that has `db`, `db-wal` or `db-shm` open, this one
/// included (a host process holding its own connections counts).
///
/// # Errors
/// Only when `/proc` itself cannot be listed for a reason other than its
/// absence; unreadable processes are counted, not errors.
pub(crate) fn find_db_users(db: &Utf8Path) -> Result<DbUsers> {
    find_db_users_in(db, Path::new("/proc"))
}

/// [`find_db_users`] against another process table: tests build one whose
/// `fd` directories are links to real files, or not directories at all.
pub(crate) fn find_db_users_in(db: &Utf8Path, proc_root: &Path) -> Result<DbUsers> {
    let watched: Vec<Watched> = ["", "-wal", "-shm"]
        .into_iter()
        .filter_map(|suffix| {
            let path = Utf8PathBuf::from(format!("{db}{suffix}"));
            let meta = fs::metadata(&path).ok()?;
            Some(Watched {
                path,
                dev: meta.dev(),
                ino: meta.ino(),
            })
        })
        .collect();
    let mut found = DbUsers::default();
    if watched.is_empty() {
        return Ok(found);
    }
    let entries = match fs::read_dir(proc_root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            found.probe_skipped = Some(format!(
                "`{}` is not mounted, so this process cannot tell whether it has the db open itself",
                proc_root.display()
            ));
            return Ok(found);
        }
        Err(error) => return Err(error.into()),
    };
    let own_pid = std::process::id();
    let mut own_fds_read = false;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let process = entry.path();
        let fds = match fs::read_dir(process.join("fd")) {
            Ok(fds) => fds,
            // The process exited while we looked.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {
                found.unreadable_processes += 1;
                continue;
            }
        };
        if pid == own_pid {
            own_fds_read = true;
        }
        for fd in fds.flatten() {
            // `stat` through the link reaches the open file itself, also
            // when its name was deleted or replaced; it opens nothing.
            let Ok(meta) = fs::metadata(fd.path()) else {
                continue;
            };
            let Some(file) = watched
                .iter()
                .find(|w| w.dev == meta.dev() && w.ino == meta.ino())
            else {
                continue;
            };
            found.add(Some(pid), false, &file.path, || command_line(&process));
        }
    }
    if !own_fds_read {
        found.probe_skipped = Some(
            "this process's own open files could not be read, and probing a file it may hold would drop its locks"
                .to_owned(),
        );
    } else if !found.users.iter().any(|u| u.pid == Some(own_pid)) {
        // Opening and closing a descriptor drops every POSIX lock this
        // process holds on the file: safe only because it holds none.
        for file in &watched {
            if let Some(pid) = probe_sqlite_locks(file)? {
                // A process already seen through its descriptors needs no
                // second mention.
                if pid.is_none() || !found.users.iter().any(|u| u.pid == pid && !u.seen_by_lock) {
                    found.add(pid, true, &file.path, || {
                        pid.map(|pid| command_line(&proc_root.join(pid.to_string())))
                            .unwrap_or_default()
                    });
                }
            }
        }
    }
    for user in &mut found.users {
        user.paths.sort();
    }
    found.users.sort_by_key(|user| (user.pid, user.seen_by_lock));
    Ok(found)
}

impl DbUsers {
    fn add(
        &mut self,
        pid: Option<u32>,
        seen_by_lock: bool,
        path: &Utf8Path,
        command: impl FnOnce() -> String,
    ) {
        match self
            .users
            .iter_mut()
            .find(|u| u.pid == pid && u.seen_by_lock == seen_by_lock)
        {
            Some(user) if user.paths.iter().any(|p| p == path) => {}
            Some(user) => user.paths.push(path.to_owned()),
            None => self.users.push(DbUser {
                pid,
                command: command(),
                paths: vec![path.to_owned()],
                seen_by_lock,
            }),
        }
    }
}

/// SQLite's lock bytes (`os_unix.c`): in a `-shm`, the dead-man switch every
/// WAL connection holds a read lock on while it has the shm open; in the db,
/// `PENDING_BYTE` through the end of the shared range.
const SHM_DMS_BYTE: i64 = 120 + 8;
const DB_LOCK_START: i64 = 0x4000_0000;
const DB_LOCK_LEN: i64 = 2 + 510;

/// Whether someone holds one of SQLite's locks on `file`: `Some(pid)` when
/// so, the pid `None` when the kernel cannot name it in this namespace.
fn probe_sqlite_locks(file: &Watched) -> Result<Option<Option<u32>>> {
    let (start, len) = if file.path.as_str().ends_with("-shm") {
        (SHM_DMS_BYTE, 1)
    } else if file.path.as_str().ends_with("-wal") {
        return Ok(None);
    } else {
        (DB_LOCK_START, DB_LOCK_LEN)
    };
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&file.path);
    let handle = match opened {
        Ok(handle) => handle,
        // Removed since it was listed: nobody can hold it any more.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let meta = handle.metadata()?;
    if meta.dev() != file.dev || meta.ino() != file.ino {
        return Ok(None);
    }
    // An open file description's probe: it takes nothing, and a conflicting
    // POSIX lock (SQLite's kind) comes back with its owner's pid.
    conflicting_lock(&handle, &file.path, start, len)
}

/// `/proc/<pid>/cmdline` with its NULs as spaces and control characters
/// escaped, cut to a line; a kernel thread or zombie has only `comm`.
fn command_line(process: &Path) -> String {
    let raw = fs::read(process.join("cmdline")).unwrap_or_default();
    let mut text: String = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        let comm = fs::read(process.join("comm")).unwrap_or_default();
        text = format!("[{}]", String::from_utf8_lossy(&comm).trim());
    }
    let mut escaped: String = text
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if escaped.chars().count() > 160 {
        escaped = escaped.chars().take(157).collect::<String>() + "...";
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> (tempfile::TempDir, Utf8PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
        (dir, path)
    }

    #[test]
    fn a_descriptor_of_the_db_under_any_name_is_found_by_inode() {
        let (_dir, root) = temp();
        let db = root.join("atocore.db");
        fs::write(&db, b"db").unwrap();
        fs::hard_link(&db, root.join("other-name.db")).unwrap();
        let proc_root = root.join("proc");
        fs::create_dir_all(proc_root.join("4242/fd")).unwrap();
        fs::write(proc_root.join("4242/cmdline"), b"python3\0service.py\0").unwrap();
        std::os::unix::fs::symlink(root.join("other-name.db"), proc_root.join("4242/fd/7")).unwrap();
        let found = find_db_users_in(&db, proc_root.as_std_path()).unwrap();
        assert_eq!(found.users.len(), 1, "{found:?}");
        assert_eq!(
            found.users[0].to_string(),
            format!("pid 4242 (python3 service.py) has `{db}` open")
        );
    }

    #[test]
    fn an_unreadable_process_makes_the_check_partial_and_says_so() {
        let (_dir, root) = temp();
        let db = root.join("atocore.db");
        fs::write(&db, b"db").unwrap();
        let proc_root = root.join("proc");
        fs::create_dir_all(proc_root.join("17")).unwrap();
        // Not a directory: reading it fails as another user's `fd` would.
        fs::write(proc_root.join("17/fd"), b"").unwrap();
        let found = find_db_users_in(&db, proc_root.as_std_path()).unwrap();
        assert!(found.users.is_empty());
        assert_eq!(found.unreadable_processes, 1);
        let note = found.partial_note().unwrap();
        assert!(note.contains("1 processes could not be read"), "{note}");
        // This fake table does not list this process, so the probes, which
        // could drop its own locks, were not run either.
        assert!(note.contains("lock probes did not run"), "{note}");
    }

    #[test]
    fn a_control_character_in_a_command_line_is_escaped() {
        let (_dir, root) = temp();
        fs::write(root.join("cmdline"), b"evil\x1b[2Jname\0arg\0").unwrap();
        assert_eq!(command_line(root.as_std_path()), "evil\\u{1b}[2Jname arg");
    }
}
