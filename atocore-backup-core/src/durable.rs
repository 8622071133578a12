//! Crash-safe file writing: temp file, fsync, rename, fsync the directory.
//!
//! Nothing here is durable until both the file and the directory entry that
//! names it have reached the disk, so every helper ends with both fsyncs.

use std::io::{Read, Write};

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;

use crate::checksum::{Algorithm, BUFFER_SIZE, Checksum, Hasher};
use crate::error::{Error, Result};
use crate::paths::parent_or_dot;

/// Reports bytes as they are copied or hashed; the CLI draws a bar from it.
pub trait Progress: Sync {
    /// `bytes` more have been processed.
    fn advance(&self, bytes: u64);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _bytes: u64) {}
}

/// Flushes a directory's entries (creations, renames, removals) to disk.
pub fn fsync_dir(dir: &Utf8Path) -> Result<()> {
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Copies `from` to a new file `to`, hashing the bytes as they pass (one read
/// of each byte), and fsyncs `to`. Fails if `to` exists.
pub(crate) fn copy_hashed(
    from: &Utf8Path,
    to: &Utf8Path,
    algorithm: Algorithm,
    progress: &dyn Progress,
) -> Result<(u64, Checksum)> {
    copy_open_hashed(&fs::File::open(from)?, to, algorithm, progress)
}

/// [`copy_hashed`] from a file the caller opened and keeps open: see
/// `sqlite::capture_held_db` for why the caller decides when it is closed.
pub(crate) fn copy_open_hashed(
    source: &fs::File,
    to: &Utf8Path,
    algorithm: Algorithm,
    progress: &dyn Progress,
) -> Result<(u64, Checksum)> {
    let (size, checksum, target) =
        copy_unflushed(source, to, algorithm, progress).map_err(CopyFailure::into_error)?;
    target.sync_all()?;
    Ok((size, checksum))
}

/// Which side of a copy failed: a restore that stages while it validates
/// tells a backup it cannot read from a destination it cannot write.
pub(crate) enum CopyFailure {
    /// Opening or reading the source.
    Read(Error),
    /// Creating, writing or fsyncing the target.
    Write(Error),
}

impl CopyFailure {
    pub(crate) fn into_error(self) -> Error {
        match self {
            CopyFailure::Read(error) | CopyFailure::Write(error) => error,
        }
    }
}

/// [`copy_hashed`], saying which side failed, and leaving the flush to a
/// [`FilesystemFlush`] the caller began before the first of many copies.
pub(crate) fn copy_hashed_unflushed(
    from: &Utf8Path,
    to: &Utf8Path,
    algorithm: Algorithm,
    progress: &dyn Progress,
    _flushed_by: &FilesystemFlush,
) -> std::result::Result<(u64, Checksum), CopyFailure> {
    let source = fs::File::open(from).map_err(|error| CopyFailure::Read(error.into()))?;
    copy_unflushed(&source, to, algorithm, progress).map(|(size, checksum, _)| (size, checksum))
}

/// One `syncfs` for many new files on one filesystem, instead of an fsync
/// each: a restore stages hundreds of chroma files, and on ext4 every fsync
/// is a journal commit. Begun before the files are written: `syncfs`
/// reports writeback errors since its descriptor was opened (Linux 5.8+).
pub(crate) struct FilesystemFlush {
    dir: fs::File,
}

impl FilesystemFlush {
    /// Starts watching the filesystem that holds `dir`.
    pub(crate) fn begin(dir: &Utf8Path) -> Result<FilesystemFlush> {
        Ok(FilesystemFlush {
            dir: fs::File::open(dir)?,
        })
    }

    /// Writes every file's data and every directory entry on the filesystem
    /// to disk, and fails if any writeback failed since [`begin`](Self::begin).
    pub(crate) fn finish(self) -> Result<()> {
        rustix::fs::syncfs(&self.dir).map_err(|errno| {
            Error::Io(std::io::Error::new(
                std::io::Error::from(errno).kind(),
                format!(
                    "syncfs of the filesystem holding `{}` failed: {errno}",
                    self.dir.path().display()
                ),
            ))
        })
    }
}

/// Bytes handed to one `copy_file_range` call, then read back and hashed.
const COPY_CHUNK: usize = 8 << 20;

/// Copies and hashes; the copy, returned open, is not yet flushed to disk.
fn copy_unflushed(
    mut source: &fs::File,
    to: &Utf8Path,
    algorithm: Algorithm,
    progress: &dyn Progress,
) -> std::result::Result<(u64, Checksum, fs::File), CopyFailure> {
    use std::os::unix::fs::FileExt;
    let write = |error: std::io::Error| CopyFailure::Write(error.into());
    let mut target = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(write)?;
    let mut hasher = Hasher::new(algorithm);
    let mut buffer = vec![0; BUFFER_SIZE];
    let mut total = 0u64;
    // The kernel copies (a reflink where the filesystem has them), several
    // times cheaper here than through a buffer (docs/benchmarks.md); each
    // chunk is read back from the page cache and hashed, so the checksum is
    // of the bytes the copy holds. Any refusal (another filesystem, an old
    // kernel) hands over to the plain loop below, from the same offsets.
    while let Ok(copied) = rustix::fs::copy_file_range(source, None, &target, None, COPY_CHUNK) {
        if copied == 0 {
            break;
        }
        let end = total + copied as u64;
        while total < end {
            let want = usize::try_from(end - total).map_or(buffer.len(), |left| left.min(buffer.len()));
            target
                .file()
                .read_exact_at(&mut buffer[..want], total)
                .map_err(write)?;
            hasher.update(&buffer[..want]);
            total += want as u64;
        }
        progress.advance(copied as u64);
    }
    // What `copy_file_range` did not copy (nothing, normally; everything
    // where it is refused): read, hash, write.
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(CopyFailure::Read(error.into())),
        };
        hasher.update(&buffer[..read]);
        target.write_all(&buffer[..read]).map_err(write)?;
        total += read as u64;
        progress.advance(read as u64);
    }
    Ok((total, hasher.finish(), target))
}

/// Hashes a file that must be a regular file (a symlink is refused, not followed).
pub(crate) fn hash_regular_file(
    path: &Utf8Path,
    algorithm: Algorithm,
    progress: &dyn Progress,
) -> Result<(u64, Checksum)> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Err(Error::SymlinkRefused {
            path: path.to_owned(),
        });
    }
    if !meta.is_file() {
        return Err(Error::UnsupportedFileType {
            path: path.to_owned(),
        });
    }
    hash_open(&fs::File::open(path)?, algorithm, progress)
}

/// Hashes an open file from its current position to its end.
pub(crate) fn hash_open(
    file: &fs::File,
    algorithm: Algorithm,
    progress: &dyn Progress,
) -> Result<(u64, Checksum)> {
    let reader = ProgressReader {
        inner: file,
        progress,
    };
    Ok(crate::checksum::hash_reader(reader, algorithm)?)
}

/// Hashes a file just written by someone else (SQLite) while a second thread
/// fsyncs it: the hash reads from the page cache while the disk catches up,
/// so the two cost about as much as the slower one.
pub(crate) fn hash_and_sync(
    path: &Utf8Path,
    algorithm: Algorithm,
    progress: &dyn Progress,
) -> Result<(u64, Checksum)> {
    std::thread::scope(|scope| {
        let sync = scope.spawn(|| -> Result<()> {
            fs::File::open(path)?.sync_all()?;
            Ok(())
        });
        let hashed = hash_regular_file(path, algorithm, progress);
        let synced = sync.join().unwrap_or_else(|_| {
            Err(Error::Io(std::io::Error::other(format!(
                "fsync of `{path}` panicked"
            ))))
        });
        synced.and(hashed)
    })
}

struct ProgressReader<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.progress.advance(read as u64);
        Ok(read)
    }
}

/// The temp name used beside `target` while it is being replaced.
pub(crate) fn temp_path_for(target: &Utf8Path, purpose: &str) -> Utf8PathBuf {
    let name = target.file_name().unwrap_or("file");
    parent_or_dot(target).join(format!(".{name}.{purpose}-tmp"))
}

/// Writes `bytes` to `target` atomically: a reader sees the old content or
/// the new, never a mix, also across a crash.
pub fn write_atomic(target: &Utf8Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_path_for(target, "write");
    remove_if_exists(&temp)?;
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        rename_durably(&temp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Renames and fsyncs the directory (or directories) involved.
pub(crate) fn rename_durably(from: &Utf8Path, to: &Utf8Path) -> Result<()> {
    fs::rename(from, to)?;
    let to_dir = parent_or_dot(to);
    fsync_dir(to_dir)?;
    let from_dir = parent_or_dot(from);
    if from_dir != to_dir {
        fsync_dir(from_dir)?;
    }
    Ok(())
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Utf8Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Creates a directory and every missing parent, then fsyncs the parent so
/// the new entry survives a crash.
pub(crate) fn create_dir_durably(dir: &Utf8Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    fsync_dir(parent_or_dot(dir))
}

/// Converts an OS path to UTF-8 or names it in the error.
pub(crate) fn utf8(path: std::path::PathBuf) -> Result<Utf8PathBuf> {
    Utf8PathBuf::from_path_buf(path).map_err(|path| Error::NonUtf8Path {
        path: path.to_string_lossy().into_owned(),
    })
}
