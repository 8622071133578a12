//! Everything that touches SQLite files: the online backup, facts about a
//! copy, integrity checks and checkpoints.
//!
//! Live databases are only ever read through SQLite. A plain open/read/close
//! of a db file inside a process that also has SQLite connections to it drops
//! that process's POSIX locks, so no code here opens a live db any other way,
//! except [`capture_held_db`], which keeps its descriptor open until its own
//! connection, holding the db exclusively, has closed.

use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::checksum::{Algorithm, Checksum};
use crate::durable::{Progress, copy_open_hashed, flushing_behind, hash_and_sync};
use crate::error::{Error, Result, sqlite_error};
use crate::lazy_copy::{Finished, LazyCopy};
use crate::sqlite_lazy_vfs::RegisteredCopy;
use crate::sqlite_vfs::mapped_vfs;

/// How often a single-pass backup is retried when the source is locked.
const BUSY_RETRIES: u32 = 50;
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// What SQLite says about a database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DbFacts {
    pub page_size: u64,
    pub page_count: u64,
    pub user_version: i64,
}

/// Copies `source` into the new file `target` with [`online_backup`],
/// flushing behind it, then hashes the copy while the last of it is fsynced.
/// Returns the copy's facts, size and checksum; the copy is durable, its
/// directory entry not yet.
///
/// SQLite writes the copy a page at a time; through the `atocore-lazy` VFS
/// those writes are gathered into large ones ([`LazyCopy::without_previous`]).
/// The backup API writes the copy itself, so it is hashed from the copy
/// (fresh in the page cache), never by reading the live file. The copy is
/// created here and its descriptor kept until SQLite has closed its own:
/// the flush and the hash use it, and closing a second descriptor of a file
/// SQLite has open would drop SQLite's locks on it.
pub(crate) fn backup_hashed(
    source: &Utf8Path,
    target: &Utf8Path,
    progress: &dyn Progress,
) -> Result<(DbFacts, u64, Checksum)> {
    let copy = create_copy(target)?;
    flushing_behind(&copy, || {
        match RegisteredCopy::new(LazyCopy::without_previous(copy.try_clone()?)) {
            Some(registered) => backup_through(source, target, registered).map(drop),
            // Without the VFS, SQLite writes its own file, page by page.
            None => {
                let mut target_conn = Connection::open(target).map_err(sqlite_error(target))?;
                online_backup(source, target, &mut target_conn)?;
                target_conn
                    .close()
                    .map_err(|(_, source)| sqlite_error(target)(source))
            }
        }
    })?;
    finish_copy(target, &copy, progress)
}

/// What [`backup_lazily`] made.
#[derive(Debug)]
pub(crate) enum LazyBackup {
    /// The db is byte for byte `previous`: nothing was written (`target`
    /// is left empty).
    SameAsPrevious,
    /// A new copy, as [`backup_hashed`] makes.
    Copied(DbFacts, u64, Checksum),
}

/// [`backup_hashed`] for a db that may not have changed since `previous`, an
/// earlier backup's copy of it: the online backup's writes are compared with
/// `previous` and only written once they differ ([`LazyCopy`]), so an
/// unchanged db is read once and written never.
pub(crate) fn backup_lazily(
    source: &Utf8Path,
    target: &Utf8Path,
    previous: &Utf8Path,
    progress: &dyn Progress,
) -> Result<LazyBackup> {
    let copy = create_copy(target)?;
    let lazy = LazyCopy::new(fs::File::open(previous)?, copy.try_clone()?)?;
    // The caller falls back to a plain copy on any error of this one.
    let registered = RegisteredCopy::new(lazy).ok_or_else(|| {
        Error::Io(std::io::Error::other(format!(
            "the lazy copy to `{target}` could not be registered with SQLite"
        )))
    })?;
    match flushing_behind(&copy, || backup_through(source, target, registered))? {
        Finished::SameAsPrevious => {
            // Read and compared rather than hashed: counted all the same.
            progress.advance(fs::metadata(previous)?.len());
            Ok(LazyBackup::SameAsPrevious)
        }
        Finished::Written => {
            let (facts, size_bytes, checksum) = finish_copy(target, &copy, progress)?;
            Ok(LazyBackup::Copied(facts, size_bytes, checksum))
        }
    }
}

/// The new, empty file a db copy is written to.
fn create_copy(target: &Utf8Path) -> Result<fs::File> {
    Ok(fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(target)?)
}

/// Backs `source` up into the registered copy, which becomes `target`, and
/// finishes the copy once SQLite has closed it.
fn backup_through(source: &Utf8Path, target: &Utf8Path, registered: RegisteredCopy) -> Result<Finished> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut target_conn =
        Connection::open_with_flags_and_vfs(registered.uri(target), flags, registered.vfs())
            .map_err(sqlite_error(target))?;
    online_backup(source, target, &mut target_conn)?;
    target_conn
        .close()
        .map_err(|(_, source)| sqlite_error(target)(source))?;
    let copy = registered.into_copy().ok_or_else(|| {
        Error::Io(std::io::Error::other(format!(
            "the copy to `{target}` was still open"
        )))
    })?;
    Ok(copy.finish()?)
}

/// The facts, size and checksum of a finished copy, once it is durable.
///
/// The facts come from the finished file, not from the connection that
/// wrote it: the copy's header says WAL, like its source's, and reading it
/// again through `atocore-lazy` (no shared memory) fails to open the WAL.
fn finish_copy(
    target: &Utf8Path,
    copy: &fs::File,
    progress: &dyn Progress,
) -> Result<(DbFacts, u64, Checksum)> {
    let facts = read_facts(&open_immutable(target)?).map_err(sqlite_error(target))?;
    let (size_bytes, checksum) = hash_and_sync(copy, progress)?;
    Ok((facts, size_bytes, checksum))
}

/// Copies `source` into `target_conn`'s db (`target`, new and empty), with
/// the online backup API in one `step(-1)`. The copy is not yet fsynced.
///
/// A paged copy (100 pages a step, as `.backup` does) restarts whenever
/// another connection writes, and against a busy writer never finishes; one
/// step holds a read transaction for the whole copy, so it always captures
/// one consistent state and never restarts.
fn online_backup(source: &Utf8Path, target: &Utf8Path, target_conn: &mut Connection) -> Result<()> {
    let source_conn = open_source(source).map_err(sqlite_error(source))?;
    // The copy is fsynced once at the end; journaling a scratch file that is
    // deleted on failure only costs time.
    target_conn
        .execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        .map_err(sqlite_error(target))?;
    let backup = Backup::new(&source_conn, target_conn).map_err(sqlite_error(target))?;
    let mut attempts = 0;
    loop {
        let step = backup.step(-1).map_err(|error| {
            // The source is opened lazily, at the first step.
            if error.sqlite_error_code() == Some(rusqlite::ErrorCode::CannotOpen)
                && !source_is_openable(source)
            {
                Error::DbSourceUnopenable {
                    path: source.to_owned(),
                }
            } else {
                Error::DbBackup {
                    from: source.to_owned(),
                    to: target.to_owned(),
                    source: error,
                }
            }
        })?;
        match step {
            StepResult::Done => return Ok(()),
            // With -1 a `More` cannot happen; every other answer means the
            // source was locked, so wait and retry the whole pass.
            _ => {
                attempts += 1;
                if attempts > BUSY_RETRIES {
                    return Err(Error::DbBackupBusy {
                        path: source.to_owned(),
                    });
                }
                std::thread::sleep(BUSY_PAUSE);
            }
        }
    }
}

/// A read-only connection to a live db that reads its pages where they lie
/// in the page cache, through SQLite's own map of the file, rather than
/// copying each out with a `pread`: a fifth to a third of a backup's time
/// here (docs/benchmarks.md). The `atocore-mapped` VFS keeps the map from
/// adding up in resident memory; without it, the source is read as usual.
fn open_source(source: &Utf8Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match mapped_vfs() {
        Some(vfs) => {
            let conn = Connection::open_with_flags_and_vfs(source, flags, vfs)?;
            conn.pragma_update(None, "mmap_size", i64::MAX)?;
            conn
        }
        None => Connection::open_with_flags(source, flags)?,
    };
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Whether a read-only connection can read the source on its own: tells a
/// source that cannot be opened from a copy that cannot be written.
fn source_is_openable(source: &Utf8Path) -> bool {
    Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|conn| {
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
            row.get::<_, i64>(0)
        })
    })
    .is_ok()
}

fn read_facts(conn: &Connection) -> rusqlite::Result<DbFacts> {
    let pragma_u64 = |name: &str| conn.pragma_query_value(None, name, |row| row.get::<_, i64>(0));
    Ok(DbFacts {
        page_size: u64::try_from(pragma_u64("page_size")?).unwrap_or(0),
        page_count: u64::try_from(pragma_u64("page_count")?).unwrap_or(0),
        user_version: pragma_u64("user_version")?,
    })
}

/// Opens a backup copy so that nothing, not even a `-shm`, is written beside
/// it: validation must never modify a backup. SQLite reads its pages through
/// the `atocore-mapped` VFS, which maps a few chunks of it at a time.
pub(crate) fn open_immutable(path: &Utf8Path) -> Result<Connection> {
    let uri = format!("file:{}?immutable=1", uri_escape(path.as_str()));
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let Some(vfs) = mapped_vfs() else {
        return Connection::open_with_flags(uri, flags).map_err(sqlite_error(path));
    };
    let conn = Connection::open_with_flags_and_vfs(uri, flags, vfs).map_err(sqlite_error(path))?;
    // Any positive size lets SQLite fetch pages, which `mapped_vfs` maps a
    // few chunks at a time, never the whole file.
    conn.pragma_update(None, "mmap_size", i64::MAX)
        .map_err(sqlite_error(path))?;
    Ok(conn)
}

pub(crate) fn uri_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        match byte {
            b'%' | b'?' | b'#' => out.push_str(&format!("%{byte:02X}")),
            _ => out.push(byte as char),
        }
    }
    out
}

/// Runs `PRAGMA integrity_check` and returns SQLite's text (`ok` when sound).
pub(crate) fn integrity_check(conn: &Connection, path: &Utf8Path) -> Result<String> {
    let mut statement = conn
        .prepare("PRAGMA integrity_check")
        .map_err(sqlite_error(path))?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(sqlite_error(path))?;
    let lines = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sqlite_error(path))?;
    Ok(lines.join("\n"))
}

/// Integrity of a backup copy, opened immutable, so its pages are read in
/// place from mapped chunks (`sqlite_vfs`). SQLite's default page cache: a
/// larger one measured no faster (docs/benchmarks.md).
pub(crate) fn integrity_check_copy(path: &Utf8Path) -> Result<String> {
    let conn = open_immutable(path)?;
    integrity_check(&conn, path)
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`'s three columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// 1 when another connection kept the checkpoint from finishing: the
    /// `-wal` then still holds committed data and must not be deleted.
    pub busy: i64,
    pub log_frames: i64,
    pub checkpointed_frames: i64,
}

impl Checkpoint {
    /// Runs `PRAGMA wal_checkpoint(TRUNCATE)` on `conn`.
    fn truncate(conn: &Connection) -> rusqlite::Result<Checkpoint> {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok(Checkpoint {
                busy: row.get(0)?,
                log_frames: row.get(1)?,
                checkpointed_frames: row.get(2)?,
            })
        })
    }

    /// Fails if the checkpoint could not finish: the `-wal` of `path` then
    /// still holds committed data that someone is using.
    pub(crate) fn require_complete(self, path: &Utf8Path) -> Result<Checkpoint> {
        if self.busy == 0 {
            return Ok(self);
        }
        Err(Error::DbInUse {
            path: path.to_owned(),
            reason: "wal_checkpoint(TRUNCATE) reported busy = 1, so the -wal still holds committed data"
                .to_owned(),
        })
    }
}

/// Checks that no other connection holds a lock on the live db: `BEGIN
/// EXCLUSIVE` must succeed at once. Leaves the files as it found them.
pub(crate) fn check_exclusive(path: &Utf8Path) -> Result<()> {
    let sidecars = [format!("{path}-wal"), format!("{path}-shm")];
    let had_sidecars = sidecars.iter().any(|s| Utf8Path::new(s).exists());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error(path))?;
    conn.busy_timeout(Duration::ZERO).map_err(sqlite_error(path))?;
    // A gate must change nothing: without this, closing the last connection
    // would checkpoint the -wal into the db file of a restore later refused.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(sqlite_error(path))?;
    let outcome = conn.execute_batch("BEGIN EXCLUSIVE; ROLLBACK;");
    conn.close().map_err(|(_, source)| sqlite_error(path)(source))?;
    if !had_sidecars {
        // Sidecars that did not exist before were created by this check (no
        // WAL-mode connection was open, or they would have existed); an
        // empty -wal holds nothing, so both go, and the disk is as it was.
        let wal_empty = fs::metadata(&sidecars[0]).map_or(true, |m| m.len() == 0);
        if wal_empty {
            for sidecar in &sidecars {
                crate::durable::remove_if_exists(Utf8Path::new(sidecar))?;
            }
        }
    }
    match outcome {
        Ok(()) => Ok(()),
        Err(error) => Err(Error::DbInUse {
            path: path.to_owned(),
            reason: error.to_string(),
        }),
    }
}

/// Checkpoints the live db and truncates its `-wal`, then closes the
/// connection so no handle of ours keeps the sidecars open.
pub(crate) fn checkpoint_truncate(path: &Utf8Path) -> Result<Checkpoint> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error(path))?;
    conn.busy_timeout(Duration::ZERO).map_err(sqlite_error(path))?;
    let checkpoint = Checkpoint::truncate(&conn).map_err(sqlite_error(path))?;
    conn.close().map_err(|(_, source)| sqlite_error(path)(source))?;
    Ok(checkpoint)
}

/// Captures the live db for a restore's pre-restore snapshot, without the
/// page-by-page online backup: sound only because SQLite itself proves that
/// nothing else can change the file meanwhile.
///
/// `locking_mode=EXCLUSIVE` makes the connection take the db file's lock at
/// its first access and keep it until it closes (it fails at once if any
/// other connection has the db open); `wal_checkpoint(TRUNCATE)` then moves
/// every committed frame into the db file, so the file alone is the whole db.
/// It is then hard-linked into the snapshot: the restore is about to rename
/// a new db over the live path, after which the snapshot alone names these
/// bytes, so copying them would only cost time and disk. Where a link is not
/// possible (another filesystem), it is copied.
///
/// The file is opened before the connection and closed after it: closing any
/// descriptor of a file drops every POSIX lock this process holds on it,
/// SQLite's included, so a descriptor closed while the connection is open
/// would silently release the lock that makes this capture safe.
pub(crate) fn capture_held_db(
    source: &Utf8Path,
    target: &Utf8Path,
    progress: &dyn Progress,
) -> Result<(DbFacts, u64, Checksum)> {
    let file = fs::File::open(source)?;
    let captured = capture_under_exclusive_lock(&file, source, target, progress);
    // Only now, with the connection closed, may the descriptor go.
    drop(file);
    captured
}

fn capture_under_exclusive_lock(
    file: &fs::File,
    source: &Utf8Path,
    target: &Utf8Path,
    progress: &dyn Progress,
) -> Result<(DbFacts, u64, Checksum)> {
    let conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error(source))?;
    let in_use = |reason: String| Error::DbInUse {
        path: source.to_owned(),
        reason,
    };
    conn.busy_timeout(Duration::ZERO).map_err(sqlite_error(source))?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(sqlite_error(source))?;
    Checkpoint::truncate(&conn)
        .map_err(|error| in_use(error.to_string()))?
        .require_complete(source)?;
    // Holds the lock for the whole capture, also for a db not in WAL mode.
    conn.execute_batch("BEGIN EXCLUSIVE")
        .map_err(|error| in_use(error.to_string()))?;
    let wal = Utf8PathBuf::from(format!("{source}-wal"));
    if fs::metadata(&wal).is_ok_and(|meta| meta.len() > 0) {
        return Err(in_use(format!("`{wal}` is not empty after the checkpoint")));
    }
    let facts = read_facts(&conn).map_err(sqlite_error(source))?;
    let (size_bytes, checksum) = if fs::hard_link(source, target).is_ok() {
        // Hashed through the descriptor opened before the connection: the
        // same inode, and no second descriptor to close.
        hash_and_sync(file, progress)?
    } else {
        copy_open_hashed(file, target, Algorithm::Blake3, progress)?
    };
    conn.execute_batch("ROLLBACK").map_err(sqlite_error(source))?;
    conn.close().map_err(|(_, error)| sqlite_error(source)(error))?;
    Ok((facts, size_bytes, checksum))
}

/// Integrity of the restored live db, through a normal connection.
pub(crate) fn integrity_check_live(path: &Utf8Path) -> Result<String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error(path))?;
    integrity_check(&conn, path)
}

#[cfg(test)]
mod tests {
    use camino::{Utf8Path, Utf8PathBuf};
    use fs_err as fs;
    use rusqlite::Connection;

    use std::cell::Cell;

    use super::{LazyBackup, backup_hashed, backup_lazily, integrity_check_copy};
    use crate::durable::NoProgress as Quiet;
    use crate::sqlite_vfs::MAP_DROPPED;

    /// A live db in WAL mode of a few MiB (more than SQLite's page cache, so
    /// the backup spills pages before its commit), still open by a writer
    /// whose last commits are in the `-wal`.
    fn live_db(dir: &Utf8Path) -> (Utf8PathBuf, Connection) {
        live_db_of_rows(dir, 2000)
    }

    /// [`live_db`] with `rows` rows of 2.4 KiB.
    fn live_db_of_rows(dir: &Utf8Path, rows: u32) -> (Utf8PathBuf, Connection) {
        let path = dir.join("live.db");
        let writer = Connection::open(&path).expect("create db");
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
                 CREATE TABLE memories (id INTEGER PRIMARY KEY, project INTEGER, body BLOB);
                 CREATE INDEX memories_project ON memories(project);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
                 INSERT INTO memories (project, body) SELECT i % 7, randomblob(2400) FROM n;
                 PRAGMA wal_checkpoint(TRUNCATE);
                 UPDATE memories SET project = 9 WHERE id = 1500;"
            ))
            .expect("fill db");
        (path, writer)
    }

    /// The restore's last line of defence, behind the open-file gate: a
    /// reader that opened the db after the gates passed keeps the `-wal`'s
    /// committed frames in use, and the checkpoint must say so.
    #[test]
    fn a_checkpoint_beside_an_open_reader_reports_busy_and_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dir = Utf8Path::from_path(dir.path()).expect("utf-8");
        let (path, writer) = live_db_of_rows(dir, 50);
        let reader = Connection::open(&path).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let _: i64 = reader
            .query_row("SELECT count(*) FROM memories", [], |r| r.get(0))
            .expect("read");
        writer
            .execute_batch("UPDATE memories SET project = 8 WHERE id = 2")
            .expect("write after the reader's snapshot");
        let checkpoint = super::checkpoint_truncate(&path).expect("checkpoint runs");
        assert_eq!(checkpoint.busy, 1);
        let refused = checkpoint.require_complete(&path).expect_err("busy is refused");
        assert!(refused.to_string().contains("busy = 1"), "{refused}");
    }

    /// SQLite's own backup of `source`, through the default VFS with no map:
    /// every page read with `pread`.
    fn reference_backup(source: &Utf8Path, target: &Utf8Path) -> Vec<u8> {
        let source = Connection::open_with_flags(source, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open source");
        source
            .backup(rusqlite::MAIN_DB, target, None::<fn(rusqlite::backup::Progress)>)
            .expect("reference backup");
        fs::read(target).expect("read reference backup")
    }

    fn plain_backup(source: &Utf8Path, target: &Utf8Path) -> Vec<u8> {
        backup_hashed(source, target, &Quiet).expect("plain backup");
        fs::read(target).expect("read plain backup")
    }

    /// Backs `source` up lazily against `previous`, and plainly, with no
    /// write between: the lazy copy must be the plain one (or, unchanged,
    /// `previous` itself, with nothing written).
    fn lazy_against_plain(dir: &Utf8Path, source: &Utf8Path, previous: &Utf8Path) -> LazyBackup {
        let lazy_target = dir.join(format!("lazy-{}.db", fs::read_dir(dir).expect("dir").count()));
        let made = backup_lazily(source, &lazy_target, previous, &Quiet).expect("lazy backup");
        let plain = plain_backup(source, &dir.join(format!("{lazy_target}.plain")));
        match &made {
            LazyBackup::SameAsPrevious => {
                assert_eq!(fs::metadata(&lazy_target).expect("lazy copy").len(), 0);
                assert_eq!(fs::read(previous).expect("previous"), plain);
            }
            LazyBackup::Copied(facts, size, _) => {
                assert_eq!(fs::read(&lazy_target).expect("lazy copy"), plain);
                assert_eq!(*size, plain.len() as u64);
                assert_eq!(facts.page_count * facts.page_size, plain.len() as u64);
                assert_eq!(integrity_check_copy(&lazy_target).expect("check"), "ok");
            }
        }
        made
    }

    /// A live db and a plain backup of it as the previous copy, in a temp
    /// dir: `(temp dir, its path, live db, writer, previous copy, its bytes)`.
    fn live_db_and_previous_copy() -> (
        tempfile::TempDir,
        Utf8PathBuf,
        Utf8PathBuf,
        Connection,
        Utf8PathBuf,
        Vec<u8>,
    ) {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = Utf8Path::from_path(temp.path())
            .expect("UTF-8 temp dir")
            .to_owned();
        let (source, writer) = live_db(&dir);
        let previous = dir.join("previous.db");
        let bytes = plain_backup(&source, &previous);
        (temp, dir, source, writer, previous, bytes)
    }

    #[test]
    fn an_unchanged_db_is_recognised_without_writing_and_a_changed_one_copied_exactly() {
        let (_temp, dir, source, writer, previous, _) = live_db_and_previous_copy();
        let dir = dir.as_path();

        let unchanged = lazy_against_plain(dir, &source, &previous);
        assert!(matches!(unchanged, LazyBackup::SameAsPrevious), "{unchanged:?}");

        // Checkpointed: the same content, now in the db file, not the -wal.
        writer
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .expect("checkpoint");
        let checkpointed = lazy_against_plain(dir, &source, &previous);
        assert!(
            matches!(checkpointed, LazyBackup::SameAsPrevious),
            "{checkpointed:?}"
        );

        let edits = [
            // One row in place: one leaf page differs, page 1 does not.
            "UPDATE memories SET project = 3 WHERE id = 1000",
            // Grown: new pages at the end and a new size in page 1.
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO memories (project, body) SELECT 1, randomblob(2400) FROM n",
            // Every page rewritten: more differing pages than are held.
            "UPDATE memories SET body = randomblob(2400)",
            // Shrunk: a shorter file than the previous copy.
            "DELETE FROM memories WHERE id > 200; VACUUM;",
        ];
        for edit in edits {
            writer.execute_batch(edit).expect(edit);
            let changed = lazy_against_plain(dir, &source, &previous);
            assert!(matches!(changed, LazyBackup::Copied(..)), "{edit}: {changed:?}");
        }
    }

    #[test]
    fn a_live_db_is_read_from_its_map_dropped_behind_and_copied_as_sqlite_copies_it() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = Utf8Path::from_path(temp.path()).expect("UTF-8 temp dir");
        // About 15 MiB in the db file, and a row changed in the -wal, which
        // SQLite reads from there and not from the map.
        let (source, writer) = live_db_of_rows(dir, 6000);
        let size = fs::metadata(&source).expect("live db").len();
        // A reader of this process holds a lock on the live db all along:
        // nothing may close a descriptor of it.
        writer
            .execute_batch("BEGIN; SELECT count(*) FROM memories;")
            .expect("read transaction");

        let dropped_before = MAP_DROPPED.with(Cell::get);
        let ours = plain_backup(&source, &dir.join("ours.db"));
        let dropped = MAP_DROPPED.with(Cell::get) - dropped_before;

        assert_eq!(ours, reference_backup(&source, &dir.join("reference.db")));
        let updated: i64 = Connection::open(dir.join("ours.db"))
            .and_then(|copy| {
                copy.query_row("SELECT project FROM memories WHERE id = 1500", [], |row| {
                    row.get(0)
                })
            })
            .expect("read copy");
        assert_eq!(updated, 9, "the row in the -wal");
        assert!(
            dropped as u64 >= size - 8 * (1 << 20),
            "{dropped} bytes of the map dropped, of a {size}-byte db"
        );
        writer.execute_batch("COMMIT").expect("end read transaction");
    }

    #[test]
    fn a_db_shrunk_by_vacuum_and_truncating_checkpoints_during_backups_is_copied_whole() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        let temp = tempfile::tempdir().expect("temp dir");
        let dir = Utf8Path::from_path(temp.path()).expect("UTF-8 temp dir");
        let (source, writer) = live_db_of_rows(dir, 3000);
        drop(writer);
        /// Stops the shrinker however the backups end, a failed assertion
        /// included: the scope waits for it.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let stop = AtomicBool::new(false);
        let shrunk = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            // Grows the db, shrinks it with VACUUM and cuts the file with a
            // TRUNCATE checkpoint, over and over: were the file ever cut
            // under the backup's map, reading it would raise SIGBUS and end
            // this test process.
            let shrinker = scope.spawn(|| {
                let conn = Connection::open(&source).expect("open live db");
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .expect("busy timeout");
                while !stop.load(Ordering::Relaxed) {
                    conn.execute_batch(
                        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)
                         INSERT INTO memories (project, body) SELECT 42, randomblob(2400) FROM n;
                         DELETE FROM memories WHERE project = 42;
                         VACUUM;",
                    )
                    .expect("grow and shrink");
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                        .expect("checkpoint");
                    shrunk.fetch_add(1, Ordering::Relaxed);
                }
            });
            let stop_shrinker = StopOnDrop(&stop);
            // Back to back, so that most of the shrinks land during one.
            for backups in 0.. {
                if shrunk.load(Ordering::Relaxed) >= 8 {
                    break;
                }
                assert!(backups < 500, "the db was shrunk only {shrunk:?} times");
                let copy = dir.join(format!("copy-{backups}.db"));
                backup_hashed(&source, &copy, &Quiet).expect("backup");
                assert_eq!(integrity_check_copy(&copy).expect("check"), "ok");
                let rows: i64 = Connection::open(&copy)
                    .and_then(|copy| copy.query_row("SELECT count(*) FROM memories", [], |row| row.get(0)))
                    .expect("count rows");
                // The writer's rows come and go a transaction at a time.
                assert!(rows == 3000 || rows == 4500, "{rows} rows");
                fs::remove_file(&copy).expect("remove copy");
            }
            drop(stop_shrinker);
            shrinker.join().expect("shrinker");
        });
    }

    #[test]
    fn a_damaged_previous_copy_is_never_taken_for_the_db() {
        let (_temp, dir, source, _writer, previous, mut bytes) = live_db_and_previous_copy();
        let dir = dir.as_path();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        fs::write(&previous, &bytes).expect("damage previous");
        let made = lazy_against_plain(dir, &source, &previous);
        assert!(matches!(made, LazyBackup::Copied(..)), "{made:?}");

        bytes.truncate(middle);
        fs::write(&previous, &bytes).expect("truncate previous");
        let made = lazy_against_plain(dir, &source, &previous);
        assert!(matches!(made, LazyBackup::Copied(..)), "{made:?}");
    }
}
