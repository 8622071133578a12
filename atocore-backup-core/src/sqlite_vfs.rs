//! `atocore-mapped`: SQLite's default VFS, except that a main db opened
//! read-only never keeps more than a few MiB of its map resident:
//!
//! - opened `immutable=1` (a backup copy), SQLite gets its pages through
//!   [`MappedChunks`] rather than the default VFS's map of the whole file;
//! - otherwise (a live db being backed up), SQLite maps it as usual and the
//!   map is dropped behind the reads ([`DropBehind`]).
//!
//! SQLite lets only a VFS change how it reads a file, and no maintained crate
//! wraps the default VFS without generating bindings at build time, so this
//! and `mapped_chunks` (and `sqlite_lazy_vfs`, for the writing side) are the
//! workspace's only `unsafe` code.
//!
//! The VFS is a copy of the default one with its own `xOpen`. That lets the
//! default VFS open the file, then points the file at a copy of the file's
//! own method table in which `xFetch` (and, for chunks, `xUnfetch`) are this
//! module's and `xClose` frees what they kept. Every other method is the
//! default VFS's, called with the very file it opened, so reads, locking and
//! file controls are untouched. SQLite fetches pages only on connections
//! with a positive `mmap_size`.

#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
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

/// A wrapped file's method table, the default one it was copied from, and
/// what this VFS's own methods keep for the file. `methods` comes first, so
/// the file's `pMethods` is also the address of this.
#[repr(C)]
struct Wrapped<S> {
    methods: ffi::sqlite3_io_methods,
    default_methods: *const ffi::sqlite3_io_methods,
    default_close: CloseFn,
    state: S,
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
    if opened != ffi::SQLITE_OK || !read_only_db {
        return opened;
    }
    // SAFETY: for a main db, `name` is a full path `sqlite3_uri_boolean`
    // reads; the default VFS opened `file`, so its method table is valid.
    unsafe {
        let wrapped = if ffi::sqlite3_uri_boolean(name, c"immutable".as_ptr(), 0) != 0 {
            // A backup copy: its pages come from a few mapped chunks.
            wrap_in_chunks(file, CStr::from_ptr(name))
        } else {
            // A live db: the default VFS's map, dropped behind the reads.
            wrap(file, DropBehind::default(), |methods| {
                methods.xFetch = Some(fetch_dropping_behind);
            })
        };
        match wrapped {
            Some(()) => ffi::SQLITE_OK,
            // Unwrapped, a positive `mmap_size` would let the default VFS map
            // the whole file and keep all of it resident: fail the open
            // rather than that.
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

/// Points an open file at a [`Wrapped`] copy of its method table, changed
/// by `customise`, with `xClose` freeing it; `None` if the default methods
/// are too old to map pages.
///
/// # Safety
///
/// `file` must have just been opened successfully by the default VFS, and
/// the methods `customise` installs must treat the file as a `Wrapped<S>`.
unsafe fn wrap<S>(
    file: *mut ffi::sqlite3_file,
    state: S,
    customise: impl FnOnce(&mut ffi::sqlite3_io_methods),
) -> Option<()> {
    // SAFETY: per this function's contract, `file` and its methods are valid.
    unsafe {
        let default_methods = (*file).pMethods;
        if default_methods.is_null() || (*default_methods).iVersion < 3 {
            return None;
        }
        let default_close = (*default_methods).xClose?;
        let mut methods = ffi::sqlite3_io_methods {
            xClose: Some(close::<S>),
            ..*default_methods
        };
        customise(&mut methods);
        let wrapped = Box::into_raw(Box::new(Wrapped {
            methods,
            default_methods,
            default_close,
            state,
        }));
        (*file).pMethods = &raw const (*wrapped).methods;
        Some(())
    }
}

/// Wraps an immutable copy so that its pages come from [`MappedChunks`];
/// `None` if the file cannot be opened again for mapping.
///
/// # Safety
///
/// As for [`wrap`], and `name` must be the path `file` was opened from.
unsafe fn wrap_in_chunks(file: *mut ffi::sqlite3_file, name: &CStr) -> Option<()> {
    // SAFETY: per this function's contract, `file` and its methods are valid.
    unsafe {
        let file_size = (*file).pMethods.as_ref()?.xFileSize?;
        let mut size: ffi::sqlite3_int64 = 0;
        if file_size(file, &mut size) != ffi::SQLITE_OK {
            return None;
        }
        let size = u64::try_from(size).ok()?;
        // Its own descriptor: the default VFS's is private. Closing it cannot
        // drop SQLite's locks, as an immutable file is never locked.
        let mappable = fs_err::File::open(OsStr::from_bytes(name.to_bytes())).ok()?;
        let chunks = RefCell::new(MappedChunks::new(mappable, size));
        wrap(file, chunks, |methods| {
            methods.xFetch = Some(fetch);
            methods.xUnfetch = Some(unfetch);
        })
    }
}

/// The [`Wrapped`] of a file this VFS wrapped with state `S`.
///
/// # Safety
///
/// `file` must be open and wrapped with an `S`: SQLite calls the methods
/// `wrap` installed only through its table, and only `close` frees it.
unsafe fn wrapped<'a, S>(file: *mut ffi::sqlite3_file) -> &'a Wrapped<S> {
    // SAFETY: per this function's contract.
    unsafe { &*(*file).pMethods.cast::<Wrapped<S>>() }
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amount: c_int,
    page: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this through the table `wrap_in_chunks`
    // installed, with a valid out pointer for the page.
    let (wrapped, page) = unsafe { (wrapped::<RefCell<MappedChunks>>(file), &mut *page) };
    *page = ptr::null_mut();
    let (Ok(offset), Ok(amount), Ok(mut chunks)) = (
        u64::try_from(offset),
        usize::try_from(amount),
        wrapped.state.try_borrow_mut(),
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
    let wrapped = unsafe { wrapped::<RefCell<MappedChunks>>(file) };
    if let Ok(mut chunks) = wrapped.state.try_borrow_mut() {
        match u64::try_from(offset) {
            Ok(offset) if !page.is_null() => chunks.release(offset),
            _ => chunks.release_idle(),
        }
    }
    ffi::SQLITE_OK
}

/// The span of a live db's map kept resident behind the furthest page
/// fetched, and the steps in which the rest is dropped.
const DROP_STEP: usize = 2 << 20;

#[cfg(test)]
thread_local! {
    /// Bytes of live dbs' maps dropped on this thread, for a test to see
    /// that its own backup's pages were served from the map and dropped.
    pub(crate) static MAP_DROPPED: Cell<usize> = const { Cell::new(0) };
}

/// Where the default VFS's map of a live db starts, and how much of it has
/// been dropped from this process's resident memory.
///
/// A live db cannot be mapped in chunks: that needs a descriptor of its
/// own, and closing any descriptor of a file drops every POSIX lock this
/// process holds on it, the server's included. So SQLite maps it, with its
/// own descriptor, as it does for any connection with a positive
/// `mmap_size`. A backup reads every page once, in order, so pages far
/// behind the furthest one fetched are unmapped (`MADV_DONTNEED`) as it
/// goes: they stay in the page cache and are faulted in again if SQLite
/// ever asks for one, but never count against the process's memory.
struct DropBehind {
    map: Cell<*mut u8>,
    dropped_to: Cell<usize>,
}

impl Default for DropBehind {
    fn default() -> Self {
        DropBehind {
            map: Cell::new(ptr::null_mut()),
            dropped_to: Cell::new(0),
        }
    }
}

impl DropBehind {
    /// Drops the part of the map at `map` that lies over [`DROP_STEP`]
    /// behind `offset`, a page just fetched from it.
    ///
    /// # Safety
    ///
    /// `map` must be the start of the default VFS's current map of the file,
    /// which covers at least up to `offset`: true right after the default
    /// `xFetch` returned the page at `offset` as `map + offset`.
    unsafe fn after_fetch(&self, map: *mut u8, offset: usize) {
        if map != self.map.get() {
            // SQLite mapped the file anew (it grew, or another connection
            // changed it): nothing of this map has been dropped yet.
            self.map.set(map);
            self.dropped_to.set(0);
        }
        let keep_from = offset.saturating_sub(DROP_STEP) / DROP_STEP * DROP_STEP;
        let from = self.dropped_to.get();
        if keep_from <= from {
            return;
        }
        // SAFETY: `[map + from, map + keep_from)` lies below `offset`, so
        // inside the current map (this function's contract), and `map + from`
        // is page aligned, as the map and `DROP_STEP` are. Dropping pages of
        // a shared, read-only file map loses nothing: a page touched again
        // is faulted in from the page cache, with the same bytes. A failure
        // only leaves the pages resident.
        unsafe {
            let _ = rustix::mm::madvise(
                map.wrapping_add(from).cast(),
                keep_from - from,
                rustix::mm::Advice::LinuxDontNeed,
            );
        }
        self.dropped_to.set(keep_from);
        #[cfg(test)]
        MAP_DROPPED.with(|dropped| dropped.set(dropped.get() + keep_from - from));
    }
}

unsafe extern "C" fn fetch_dropping_behind(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amount: c_int,
    page: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this through the table `open` installed for a
    // live db, with a valid out pointer for the page; the default `xFetch`
    // takes the same arguments.
    unsafe {
        let wrapped = wrapped::<DropBehind>(file);
        let Some(default_fetch) = (*wrapped.default_methods).xFetch else {
            *page = ptr::null_mut();
            return ffi::SQLITE_OK;
        };
        let fetched = default_fetch(file, offset, amount, page);
        if let (ffi::SQLITE_OK, Ok(offset)) = (fetched, usize::try_from(offset))
            && !(*page).is_null()
        {
            let map = (*page).cast::<u8>().wrapping_sub(offset);
            wrapped.state.after_fetch(map, offset);
        }
        fetched
    }
}

unsafe extern "C" fn close<S>(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls `xClose` once, through the table `wrap`
    // installed, after every other method and with every page released, so
    // the `Wrapped` (and any maps it holds) is freed exactly once. The
    // default method table goes back before the default `xClose` sees the
    // file.
    unsafe {
        let wrapped = Box::from_raw((*file).pMethods.cast::<Wrapped<S>>().cast_mut());
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
