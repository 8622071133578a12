"""Hold atocore's service lock for as long as the service runs (stdlib only).

A restore refuses while this lock is held, and the service refuses to start
while a restore marker says a restore has not finished, so a half-restored
runtime never serves. Enter it once at start-up and keep it until exit:

    with service_lock(settings.db_path):
        uvicorn.run(app)

The lock is taken twice on ``<db dir>/.atocore-service.lock``, as a ``flock``
and as a POSIX ``fcntl`` record lock, exactly as the Rust ``ServiceLock`` does,
so either side sees the other whichever kind it checks. The kernel drops both
when the process exits, however it exits.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket

SERVICE_LOCK_NAME = ".atocore-service.lock"
RESTORE_MARKER_NAME = ".atocore-restore-in-progress"


class ServiceLockError(RuntimeError):
    """The service must not start: the message says why, naming the file."""


def _refuse_if_restoring(marker):
    try:
        with open(marker, "rb") as f:
            detail = f.read(4096).decode("utf-8", "replace")
    except FileNotFoundError:
        return
    raise ServiceLockError(
        f"restore marker `{marker}` exists: a restore did not finish "
        f"({detail.strip() or 'unreadable marker'}); run `atocore-backup restore` again before starting the service"
    )


@contextlib.contextmanager
def service_lock(db_path, operation="atocore service"):
    db_dir = os.path.dirname(os.path.abspath(db_path))
    marker = os.path.join(db_dir, RESTORE_MARKER_NAME)
    path = os.path.join(db_dir, SERVICE_LOCK_NAME)
    _refuse_if_restoring(marker)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o660)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ServiceLockError(f"service lock `{path}` is held by another process") from None
        # A restore writes its marker only while holding this lock: look again.
        _refuse_if_restoring(marker)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "operation": operation,
            "started_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
        yield path
    finally:
        os.close(fd)
