//! `atocore-mapped`: SQLite's default VFS, except that a main db opened
//! read-only and `immutable=1` hands SQLite its pages through
//! [`MappedChunks`] rather than the default VFS's map of the whole file.
//!
//! SQLite lets only a VFS change how it reads a file, and no maintained crate
//! wraps the default VFS without generating bindings at build time, so this
//! and `mapped_chunks` (and `sqlite_lazy_vfs`, for the writing side) are the
//! workspace's only `unsafe` code.
//!
//! The VFS is a copy of the default one with its own `xOpen`. That lets the
//! default VFS open the file, then points the file at a copy of the file's
//! own method table in which `xFetch` and `xUnfetch` go to the chunks and
//! `xClose` frees them. Every other method is the default VFS's, called with
//! the very file it opened, so reads, locking and file controls are
//! untouched. SQLite fetches pages only on connections with a positive
//! `mmap_size`; the default VFS never maps these files, as its own `xFetch`
//! is never called.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CStr, OsStr, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

use crate::mapped_chunks::MappedChunks;

const NAME: &CStr = c"atocore-mapped";

type CloseFn = unsafe extern "C" fn(*mut ffi::sqlite3_file) -> c_int;

/// The default VFS this one opens files with.
struct DefaultVfs(*mut ffi::sqlite3_vfs);

// SAFETY: a registered VFS is immutable and callable from any thread (SQLite
// requires this of every VFS), and the default one is never unregistered here.
unsafe impl Send for DefaultVfs {}
// SAFETY: as above.
unsafe impl Sync for DefaultVfs {}

/// SQLite's default VFS; `None` if SQLite has none.
fn default_vfs() -> Option<&'static DefaultVfs> {
    static DEFAULT_VFS: OnceLock<Option<DefaultVfs>> = OnceLock::new();
    DEFAULT_VFS
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` initialises SQLite if needed and is
            // thread safe; a null name asks for the default VFS.
            let default = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
            (!default.is_null()).then_some(DefaultVfs(default))
        })
        .as_ref()
}

/// The name to open immutable copies with, registering the VFS on first use;
/// `None` if it could not be registered.
pub(crate) fn mapped_vfs() -> Option<&'static CStr> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    REGISTERED
        .get_or_init(|| register_over_default(NAME, open, 0))
        .then_some(NAME)
}

/// Registers `name`: a copy of the default VFS with `open` as its `xOpen`
/// and files of at least `file_size` bytes. Returns whether it is registered.
pub(crate) fn register_over_default(name: &'static CStr, open: OpenFn, file_size: usize) -> bool {
    let Some(DefaultVfs(default)) = default_vfs() else {
        return false;
    };
    // SAFETY: `default` points to a registered VFS, which is plain data. The
    // copy keeps at least its `szOsFile`, so SQLite allocates files the
    // default `xOpen` can fill, and its `pAppData`, so the methods copied with
    // it find their data. It is leaked: SQLite requires a VFS to outlive its
    // registration.
    unsafe {
        let file_size = c_int::try_from(file_size).unwrap_or(c_int::MAX);
        let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
            pNext: ptr::null_mut(),
            zName: name.as_ptr(),
            xOpen: Some(open),
            szOsFile: (**default).szOsFile.max(file_size),
            ..**default
        }));
        ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
    }
}

/// Opens `file` with the default VFS's `xOpen`.
///
/// # Safety
///
/// As for any `xOpen`: the arguments SQLite gave a VFS registered by
/// [`register_over_default`], whose files are at least the default's size.
pub(crate) unsafe fn open_with_default(
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(DefaultVfs(default)) = default_vfs() else {
        return ffi::SQLITE_CANTOPEN;
    };
    // SAFETY: `default` is registered, and the arguments are valid for an
    // `xOpen` (this function's contract).
    unsafe {
        match (**default).xOpen {
            Some(default_open) => default_open(*default, name, file, flags, out_flags),
            None => ffi::SQLITE_CANTOPEN,
        }
    }
}

/// A VFS's `xOpen`.
pub(crate) type OpenFn = unsafe extern "C" fn(
    *mut ffi::sqlite3_vfs,
    ffi::sqlite3_filename,
    *mut ffi::sqlite3_file,
    c_int,
    *mut c_int,
) -> c_int;

/// A mapped file's method table and chunks. `methods` comes first, so the
/// file's `pMethods` is also the address of this.
#[repr(C)]
struct Wrapped {
    methods: ffi::sqlite3_io_methods,
    default_methods: *const ffi::sqlite3_io_methods,
    default_close: CloseFn,
    chunks: RefCell<MappedChunks>,
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes this `xOpen` a file of at least the default
    // VFS's size and arguments it accepts.
    let opened = unsafe { open_with_default(name, file, flags, out_flags) };
    let read_only_db = flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && flags & ffi::SQLITE_OPEN_READONLY != 0;
    // SAFETY: for a main db, `name` is a full path `sqlite3_uri_boolean`
    // reads; the default VFS opened `file`, so its method table is valid.
    unsafe {
        if opened != ffi::SQLITE_OK
            || !read_only_db
            || ffi::sqlite3_uri_boolean(name, c"immutable".as_ptr(), 0) == 0
        {
            return opened;
        }
        match wrap(file, CStr::from_ptr(name)) {
            Some(()) => ffi::SQLITE_OK,
            // Unwrapped, a positive `mmap_size` would let the default VFS map
            // the whole file: fail the open rather than that.
            None => {
                let default_methods = (*file).pMethods;
                if let Some(default_close) = default_methods.as_ref().and_then(|methods| methods.xClose) {
                    default_close(file);
                }
                (*file).pMethods = ptr::null();
                ffi::SQLITE_CANTOPEN
            }
        }
    }
}

/// Points an open file at a [`Wrapped`] copy of its method table; `None` if
/// the file cannot be opened again for mapping.
///
/// # Safety
///
/// `file` must have just been opened successfully by the default VFS, from
/// the path `name`.
unsafe fn wrap(file: *mut ffi::sqlite3_file, name: &CStr) -> Option<()> {
    // SAFETY: per this function's contract, `file` and its methods are valid.
    unsafe {
        let default_methods = (*file).pMethods;
        if default_methods.is_null() || (*default_methods).iVersion < 3 {
            return None;
        }
        let default_close = (*default_methods).xClose?;
        let file_size = (*default_methods).xFileSize?;
        let mut size: ffi::sqlite3_int64 = 0;
        if file_size(file, &mut size) != ffi::SQLITE_OK {
            return None;
        }
        let size = u64::try_from(size).ok()?;
        // Its own descriptor: the default VFS's is private. Closing it cannot
        // drop SQLite's locks, as an immutable file is never locked.
        let mappable = fs_err::File::open(OsStr::from_bytes(name.to_bytes())).ok()?;
        let wrapped = Box::into_raw(Box::new(Wrapped {
            methods: ffi::sqlite3_io_methods {
                xFetch: Some(fetch),
                xUnfetch: Some(unfetch),
                xClose: Some(close),
                ..*default_methods
            },
            default_methods,
            default_close,
            chunks: RefCell::new(MappedChunks::new(mappable, size)),
        }));
        (*file).pMethods = &raw const (*wrapped).methods;
        Some(())
    }
}

/// The [`Wrapped`] of a file this VFS mapped.
///
/// # Safety
///
/// `file` must be open and wrapped: SQLite calls `xFetch`, `xUnfetch` and
/// `xClose` only through the table `wrap` installed, and only `close` frees
/// it.
unsafe fn wrapped<'a>(file: *mut ffi::sqlite3_file) -> &'a Wrapped {
    // SAFETY: per this function's contract.
    unsafe { &*(*file).pMethods.cast::<Wrapped>() }
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amount: c_int,
    page: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this through the wrapped table, with a valid out
    // pointer for the page.
    let (wrapped, page) = unsafe { (wrapped(file), &mut *page) };
    *page = ptr::null_mut();
    let (Ok(offset), Ok(amount), Ok(mut chunks)) = (
        u64::try_from(offset),
        usize::try_from(amount),
        wrapped.chunks.try_borrow_mut(),
    ) else {
        // SQLite reads the page instead.
        return ffi::SQLITE_OK;
    };
    // A map that fails (address space, the process's map count) leaves the
    // page to SQLite's read, as a page outside every chunk is.
    if let Ok(Some(mapped)) = chunks.fetch(offset, amount) {
        *page = mapped.as_ptr().cast();
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    page: *mut c_void,
) -> c_int {
    // SAFETY: as in `fetch`.
    let wrapped = unsafe { wrapped(file) };
    if let Ok(mut chunks) = wrapped.chunks.try_borrow_mut() {
        match u64::try_from(offset) {
            Ok(offset) if !page.is_null() => chunks.release(offset),
            _ => chunks.release_idle(),
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as in `fetch`; SQLite calls `xClose` once, after every other
    // method and with every page released, so the `Wrapped` and its maps are
    // freed exactly once. The default method table goes back before the
    // default `xClose` sees the file.
    unsafe {
        let wrapped = Box::from_raw((*file).pMethods.cast::<Wrapped>().cast_mut());
        (*file).pMethods = wrapped.default_methods;
        (wrapped.default_close)(file)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use camino::{Utf8Path, Utf8PathBuf};
    use fs_err as fs;
    use rusqlite::{Connection, OpenFlags};

    use crate::mapped_chunks::{CHUNK, MAPS_MADE};
    use crate::sqlite::{integrity_check, integrity_check_copy};

    /// A db of about 12 MiB, six chunks, with an index to check against its
    /// table, as a backup copy: one file, no `-wal`.
    fn db_of_several_chunks(dir: &Utf8Path) -> Utf8PathBuf {
        let path = dir.join("copy.db");
        let conn = Connection::open(&path).expect("create db");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE memories (id INTEGER PRIMARY KEY, project INTEGER, body BLOB);
             CREATE INDEX memories_project ON memories(project);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO memories (project, body) SELECT i % 7, randomblob(2400) FROM n;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .expect("fill db");
        drop(conn);
        let _ = fs::remove_file(format!("{path}-wal"));
        let _ = fs::remove_file(format!("{path}-shm"));
        assert!(fs::metadata(&path).expect("db").len() > 5 * CHUNK);
        path
    }

    /// What `integrity_check` says of `path` through this VFS and through
    /// SQLite's default one, reading every page: errors as their messages.
    fn checked_both_ways(path: &Utf8Path) -> (Result<String, String>, Result<String, String>) {
        let mapped = integrity_check_copy(path).map_err(|e| e.to_string());
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(format!("file:{path}?immutable=1"), flags).expect("open");
        let default = integrity_check(&conn, path).map_err(|e| e.to_string());
        (mapped, default)
    }

    fn damage(path: &Utf8Path, edit: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = fs::read(path).expect("read db");
        edit(&mut bytes);
        fs::write(path, bytes).expect("write db");
    }

    #[test]
    fn a_sound_db_is_checked_from_mapped_chunks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db_of_several_chunks(Utf8Path::from_path(dir.path()).expect("UTF-8 temp dir"));
        let maps_before = MAPS_MADE.load(Ordering::Relaxed);
        assert_eq!(integrity_check_copy(&db).expect("integrity check runs"), "ok");
        let maps = MAPS_MADE.load(Ordering::Relaxed) - maps_before;
        assert!(maps >= 5, "pages were read, not mapped: {maps} maps");
    }

    #[test]
    fn damaged_pages_read_from_maps_are_reported_as_sqlite_reports_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db_of_several_chunks(Utf8Path::from_path(dir.path()).expect("UTF-8 temp dir"));
        // Two leaf pages in the third chunk swapped, as a misdirected write
        // could leave them: rows out of order in their b-tree.
        damage(&db, |bytes| {
            let first = (2 * CHUNK) as usize + 100 * 4096;
            let (head, tail) = bytes.split_at_mut(first + 4096);
            head[first..].swap_with_slice(&mut tail[8 * 4096..9 * 4096]);
        });
        let (mapped, default) = checked_both_ways(&db);
        assert_ne!(mapped, Ok("ok".to_owned()));
        assert_eq!(mapped, default);
    }

    #[test]
    fn a_truncated_copy_is_reported_as_sqlite_reports_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db_of_several_chunks(Utf8Path::from_path(dir.path()).expect("UTF-8 temp dir"));
        // Cut mid-page, half way: pages past the end are referenced by the
        // b-trees above them, and the last page left is partial.
        damage(&db, |bytes| bytes.truncate(bytes.len() / 2 + 1000));
        let (mapped, default) = checked_both_ways(&db);
        assert_ne!(mapped, Ok("ok".to_owned()));
        assert_eq!(mapped, default);
    }
}
