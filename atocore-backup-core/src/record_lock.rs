//! Open-file-description `fcntl` record locks: the kind that conflicts with
//! the POSIX locks SQLite and Python's `fcntl.lockf` take, yet belongs to
//! one descriptor, so closing another descriptor of the file never drops it.

use camino::Utf8Path;
use fs_err as fs;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use crate::error::{Error, Result};

fn write_lock(start: i64, len: i64) -> libc::flock {
    libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: len,
        l_pid: 0,
    }
}

fn lock_error(path: &Utf8Path, what: &str, errno: nix::errno::Errno) -> Error {
    Error::Io(std::io::Error::new(
        std::io::Error::from(errno).kind(),
        format!("cannot {what} the locks on `{path}`: {errno}"),
    ))
}

/// Takes a write lock on the whole file at once; `false` when another
/// holder's lock conflicts.
pub(crate) fn try_lock_whole_file(file: &fs::File, path: &Utf8Path) -> Result<bool> {
    match fcntl(file.file(), FcntlArg::F_OFD_SETLK(&write_lock(0, 0))) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(false),
        Err(errno) => Err(lock_error(path, "take", errno)),
    }
}

/// Whether someone holds a lock on bytes `start..start + len` (`len` 0: to
/// the end) that a write lock would conflict with, taking nothing:
/// `Some(pid)` when so, the pid `None` when the kernel cannot name it here
/// (an OFD lock, or a process in another PID namespace).
pub(crate) fn conflicting_lock(
    file: &fs::File,
    path: &Utf8Path,
    start: i64,
    len: i64,
) -> Result<Option<Option<u32>>> {
    let mut probe = write_lock(start, len);
    fcntl(file.file(), FcntlArg::F_OFD_GETLK(&mut probe))
        .map_err(|errno| lock_error(path, "probe", errno))?;
    if probe.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    Ok(Some(u32::try_from(probe.l_pid).ok().filter(|pid| *pid > 0)))
}
