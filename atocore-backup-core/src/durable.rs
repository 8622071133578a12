//! Crash-safe file writing: temp file, fsync, rename, fsync the directory.
//!
//! Nothing here is durable until both the file and the directory entry that
//! names it have reached the disk, so every helper ends with both fsyncs.

use std::io::{Read, Write};

use camino::{Utf8Path, Utf8PathBuf};
use fs_err as fs;

use crate::blake3_tree;
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
        start_writeback(&target, end - copied as u64, end);
        progress.advance(copied as u64);
    }
    // What `copy_file_range` did not copy (nothing, normally; everything
    // where it is refused): read, hash, write.
    let mut written_back = total;
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
        if total - written_back >= COPY_CHUNK as u64 {
            start_writeback(&target, written_back, total);
            written_back = total;
        }
        progress.advance(read as u64);
    }
    Ok((total, hasher.finish(), target))
}

/// Asks the kernel to start writing `start..end` of a file just written,
/// without waiting for it. Dirty pages otherwise sit in memory until the
/// final fsync or `syncfs` (the background flusher starts at 10 % of RAM),
/// which then waits for all of them at once: writing back while the copy
/// goes on took a 1 GiB copy and its flush from 0.8 s to 0.55 s here
/// (docs/benchmarks.md).
///
/// `POSIX_FADV_DONTNEED` is how: on Linux it starts writeback of the dirty
/// pages in the range and drops only pages that are already clean (these
/// were written an instant ago, so they stay cached for whoever reads them
/// next). rustix has no `sync_file_range`. A hint: whether it is taken
/// changes when bytes reach the disk, never whether the final flush waits
/// for them, so its error is ignored.
fn start_writeback(file: &fs::File, start: u64, end: u64) {
    if let Some(len) = std::num::NonZeroU64::new(end.saturating_sub(start)) {
        let _ = rustix::fs::fadvise(file, start, Some(len), rustix::fs::Advice::DontNeed);
    }
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
fn hash_open(file: &fs::File, algorithm: Algorithm, progress: &dyn Progress) -> Result<(u64, Checksum)> {
    let reader = ProgressReader {
        inner: file,
        progress,
    };
    Ok(crate::checksum::hash_reader(reader, algorithm)?)
}

/// Runs `write`, which fills `file` through a descriptor of its own
/// (SQLite's), while a second thread flushes what has been written so far
/// every [`FLUSH_BEHIND_INTERVAL`]: the disk then works while the copy goes
/// on, and the fsync after it finds little left to wait for.
///
/// `fdatasync`, not the `POSIX_FADV_DONTNEED` of [`start_writeback`]:
/// pages already written back are clean, and dropping them would send the
/// hash that follows to the disk. A failed flush is returned even when
/// `write` succeeds: the kernel reports a writeback error to each open file
/// only once, so the final fsync would not see it again.
pub(crate) fn flushing_behind<T>(file: &fs::File, write: impl FnOnce() -> Result<T>) -> Result<T> {
    let (written, stop) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let flusher = scope.spawn(move || -> Result<()> {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stop.recv_timeout(FLUSH_BEHIND_INTERVAL)
            {
                file.sync_data()?;
            }
            Ok(())
        });
        let value = write();
        drop(written);
        let flushed = flusher.join().unwrap_or_else(|_| {
            Err(Error::Io(std::io::Error::other(format!(
                "the flush of `{}` panicked",
                file.path().display()
            ))))
        });
        let value = value?;
        flushed?;
        Ok(value)
    })
}

/// Between two flushes of [`flushing_behind`]: tens of MiB at this
/// machine's copy speed, few enough journal commits not to matter.
const FLUSH_BEHIND_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Hashes (BLAKE3) a file just written while a second thread fsyncs it: the
/// hash reads from the page cache while the disk catches up, so the two
/// cost about as much as the slower one. The hash is spread over the cores
/// ([`blake3_tree`]): when SQLite has written a copy, nothing else is left
/// to overlap with it.
pub(crate) fn hash_and_sync(file: &fs::File, progress: &dyn Progress) -> Result<(u64, Checksum)> {
    std::thread::scope(|scope| {
        let sync = scope.spawn(|| file.sync_all());
        let hashed = file.metadata().and_then(|meta| {
            let hash = blake3_tree::hash_file(file, meta.len(), progress)?;
            Ok((meta.len(), Checksum::from_blake3(&hash)))
        });
        let synced = sync.join().unwrap_or_else(|_| {
            Err(std::io::Error::other(format!(
                "fsync of `{}` panicked",
                file.path().display()
            )))
        });
        synced?;
        Ok(hashed?)
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

/// Gives a file this process just created the owner and group of the
/// directory it lives in, when running as root and they differ: a lock file
/// or marker that a root restore creates in a non-root service's runtime
/// must not keep that service from opening it.
pub(crate) fn adopt_owner_of_dir(file: &fs::File, dir: &Utf8Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let own = file.metadata()?;
    let parent = fs::metadata(dir)?;
    if own.uid() == parent.uid() && own.gid() == parent.gid() {
        return Ok(());
    }
    rustix::fs::fchown(
        file.file(),
        Some(rustix::fs::Uid::from_raw(parent.uid())),
        Some(rustix::fs::Gid::from_raw(parent.gid())),
    )
    .map_err(|errno| {
        Error::Io(std::io::Error::new(
            std::io::Error::from(errno).kind(),
            format!(
                "cannot give `{}` the owner of `{dir}`: {errno}",
                file.path().display()
            ),
        ))
    })
}

/// Converts an OS path to UTF-8 or names it in the error.
pub(crate) fn utf8(path: std::path::PathBuf) -> Result<Utf8PathBuf> {
    Utf8PathBuf::from_path_buf(path).map_err(|path| Error::NonUtf8Path {
        path: path.to_string_lossy().into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn temp_dir() -> (tempfile::TempDir, Utf8PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
        (dir, path)
    }

    #[test]
    fn a_copy_over_several_chunks_holds_the_same_bytes_and_their_checksum() {
        let (_dir, dir) = temp_dir();
        let source = dir.join("source");
        let bytes: Vec<u8> = (0..2 * COPY_CHUNK + 12_345)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        fs::write(&source, &bytes).unwrap();
        let (size, checksum) =
            copy_hashed(&source, &dir.join("copy"), Algorithm::Blake3, &NoProgress).unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(
            checksum,
            crate::checksum::hash_reader(&bytes[..], Algorithm::Blake3)
                .unwrap()
                .1
        );
        assert_eq!(fs::read(dir.join("copy")).unwrap(), bytes);
    }

    #[test]
    fn flushing_behind_a_write_returns_what_the_write_returned() {
        let (_dir, dir) = temp_dir();
        let path = dir.join("copy");
        let file = fs::File::create_new(&path).unwrap();
        // Written through a descriptor of its own, as SQLite writes, for
        // long enough that the flusher runs during the write.
        let written = flushing_behind(&file, || {
            let mut writer = fs::OpenOptions::new().write(true).open(&path)?;
            for _ in 0..3 {
                writer.write_all(&[7; 64 << 10])?;
                std::thread::sleep(FLUSH_BEHIND_INTERVAL);
            }
            Ok(42)
        });
        assert_eq!(written.unwrap(), 42);
        assert_eq!(fs::read(&path).unwrap(), vec![7; 3 * (64 << 10)]);

        let failed: Result<()> =
            flushing_behind(&file, || Err(Error::Io(std::io::Error::other("the copy failed"))));
        assert!(failed.unwrap_err().to_string().contains("the copy failed"));
    }
}
