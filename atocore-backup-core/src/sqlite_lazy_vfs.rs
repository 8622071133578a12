//! `atocore-lazy`: SQLite's default VFS, except that a main db opened with
//! the URI parameter `atocore_lazy_copy=N` is the [`LazyCopy`] registered
//! as `N`, so the online backup's writes go to it.
//!
//! The file implements the first version of SQLite's file methods (no
//! shared memory, no maps): the backup's destination connection uses
//! `journal_mode=OFF`, is the only one to open it and is closed before the
//! copy is finished, so locks have nothing to guard and syncs nothing to
//! flush (the copy is fsynced by its owner once finished). Every other file
//! the connection might open (none, with the journal off) goes to the
//! default VFS.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::ffi;

use crate::lazy_copy::LazyCopy;
use crate::sqlite_vfs::{open_with_default, register_over_default};

const NAME: &CStr = c"atocore-lazy";
const COPY_PARAMETER: &CStr = c"atocore_lazy_copy";

type SharedCopy = Arc<Mutex<LazyCopy>>;

/// Lazy copies a connection may open, by the number in their URI.
fn registered() -> &'static Mutex<HashMap<i64, SharedCopy>> {
    static REGISTERED: OnceLock<Mutex<HashMap<i64, SharedCopy>>> = OnceLock::new();
    REGISTERED.get_or_init(Default::default)
}

/// A [`LazyCopy`] that a connection can open as its main db, through
/// [`vfs`](Self::vfs) and [`uri`](Self::uri), until taken back.
pub(crate) struct RegisteredCopy {
    number: i64,
    copy: SharedCopy,
}

impl RegisteredCopy {
    /// `None` if the VFS could not be registered with SQLite.
    pub(crate) fn new(copy: LazyCopy) -> Option<Self> {
        static REGISTERED_VFS: OnceLock<bool> = OnceLock::new();
        static NEXT: AtomicI64 = AtomicI64::new(0);
        if !*REGISTERED_VFS.get_or_init(|| register_over_default(NAME, open, size_of::<LazyFile>())) {
            return None;
        }
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        let copy = Arc::new(Mutex::new(copy));
        registered().lock().ok()?.insert(number, Arc::clone(&copy));
        Some(Self { number, copy })
    }

    pub(crate) fn vfs(&self) -> &'static CStr {
        NAME
    }

    /// The URI that opens the copy; `path` is the file the copy becomes.
    pub(crate) fn uri(&self, path: &camino::Utf8Path) -> String {
        format!(
            "file:{}?{}={}",
            crate::sqlite::uri_escape(path.as_str()),
            COPY_PARAMETER.to_str().unwrap_or_default(),
            self.number
        )
    }

    /// The copy, once every connection that opened it is closed.
    pub(crate) fn into_copy(self) -> Option<LazyCopy> {
        let copy = Arc::clone(&self.copy);
        drop(self);
        Arc::into_inner(copy)?.into_inner().ok()
    }
}

impl Drop for RegisteredCopy {
    fn drop(&mut self) {
        if let Ok(mut registered) = registered().lock() {
            registered.remove(&self.number);
        }
    }
}

/// An open lazy copy: SQLite's file header, then the copy it writes to.
#[repr(C)]
struct LazyFile {
    base: ffi::sqlite3_file,
    copy: *const Mutex<LazyCopy>,
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(lock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes a main db's full path, which
    // `sqlite3_uri_int64` reads, and a file of this VFS's `szOsFile` bytes,
    // at least a `LazyFile`, for `xOpen` to fill.
    unsafe {
        let number = match flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && !name.is_null() {
            true => ffi::sqlite3_uri_int64(name, COPY_PARAMETER.as_ptr(), -1),
            false => -1,
        };
        if number < 0 {
            return open_with_default(name, file, flags, out_flags);
        }
        let copy = registered()
            .lock()
            .ok()
            .and_then(|registered| registered.get(&number).cloned());
        let Some(copy) = copy else {
            (*file).pMethods = ptr::null();
            return ffi::SQLITE_CANTOPEN;
        };
        ptr::write(
            file.cast::<LazyFile>(),
            LazyFile {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                copy: Arc::into_raw(copy),
            },
        );
        if !out_flags.is_null() {
            *out_flags = flags;
        }
        ffi::SQLITE_OK
    }
}

/// Runs `job` on the file's copy; `failed` if it cannot be had.
///
/// # Safety
///
/// `file` must have been opened by `open` as a [`LazyFile`] and not closed.
unsafe fn with_copy(
    file: *mut ffi::sqlite3_file,
    failed: c_int,
    job: impl FnOnce(&mut LazyCopy) -> c_int,
) -> c_int {
    // SAFETY: per this function's contract, `copy` came from `Arc::into_raw`
    // and the file still holds that reference.
    let copy = unsafe { &*(*file.cast::<LazyFile>()).copy };
    match copy.lock() {
        Ok(mut copy) => job(&mut copy),
        Err(_) => failed,
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened once, after every other call:
    // the reference `open` took is given back exactly once.
    unsafe {
        drop(Arc::from_raw((*file.cast::<LazyFile>()).copy));
        (*file).pMethods = ptr::null();
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let (Ok(amount), Ok(offset)) = (usize::try_from(amount), u64::try_from(offset)) else {
        return ffi::SQLITE_IOERR_READ;
    };
    // SAFETY: SQLite passes a buffer of `amount` bytes, and an open file.
    unsafe {
        let buf = std::slice::from_raw_parts_mut(buf.cast::<u8>(), amount);
        with_copy(file, ffi::SQLITE_IOERR_READ, |copy| {
            match copy.read(offset, buf) {
                Ok(read) if read == amount => ffi::SQLITE_OK,
                // The rest is zeroed, as SQLite requires of a short read.
                Ok(_) => ffi::SQLITE_IOERR_SHORT_READ,
                Err(_) => ffi::SQLITE_IOERR_READ,
            }
        })
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let (Ok(amount), Ok(offset)) = (usize::try_from(amount), u64::try_from(offset)) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: SQLite passes `amount` bytes to write, and an open file.
    unsafe {
        let bytes = std::slice::from_raw_parts(buf.cast::<u8>(), amount);
        with_copy(file, ffi::SQLITE_IOERR_WRITE, |copy| {
            match copy.write(offset, bytes) {
                Ok(()) => ffi::SQLITE_OK,
                Err(_) => ffi::SQLITE_IOERR_WRITE,
            }
        })
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    let Ok(size) = u64::try_from(size) else {
        return ffi::SQLITE_IOERR_TRUNCATE;
    };
    // SAFETY: SQLite passes an open file.
    unsafe {
        with_copy(file, ffi::SQLITE_IOERR_TRUNCATE, |copy| {
            match copy.truncate(size) {
                Ok(()) => ffi::SQLITE_OK,
                Err(_) => ffi::SQLITE_IOERR_TRUNCATE,
            }
        })
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite passes an open file and somewhere to put its size.
    unsafe {
        with_copy(file, ffi::SQLITE_IOERR_FSTAT, |copy| {
            match i64::try_from(copy.len()) {
                Ok(len) => {
                    *size = len;
                    ffi::SQLITE_OK
                }
                Err(_) => ffi::SQLITE_IOERR_FSTAT,
            }
        })
    }
}

/// The copy is fsynced by its owner once finished.
unsafe extern "C" fn sync(_file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    ffi::SQLITE_OK
}

/// One connection, in one thread, opens a lazy copy: locks guard nothing.
unsafe extern "C" fn lock(_file: *mut ffi::sqlite3_file, _level: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn check_reserved_lock(_file: *mut ffi::sqlite3_file, reserved: *mut c_int) -> c_int {
    // SAFETY: SQLite passes somewhere to put the answer.
    unsafe { *reserved = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn file_control(_file: *mut ffi::sqlite3_file, _op: c_int, _arg: *mut c_void) -> c_int {
    ffi::SQLITE_NOTFOUND
}

/// What the default unix VFS says of a file on a local filesystem.
unsafe extern "C" fn sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    4096
}

unsafe extern "C" fn device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
}
