//! An immutable file mapped into memory a few chunks at a time, so SQLite
//! can read its pages where they lie in the page cache.
//!
//! `PRAGMA integrity_check` reads every page of a db, most of them twice:
//! once walking each b-tree and once scanning its rows for the index checks,
//! as SQLite's page cache is far smaller than a GiB-sized db. Read with
//! `pread`, each read copies a page out of the kernel's page cache, and
//! those copies were 70 % of checking a 1 GiB backup here; reading in 1 MiB
//! windows cut the syscalls 70-fold and saved nothing, as the copying is the
//! cost (docs/benchmarks.md). A memory map reads the page cache in place,
//! but SQLite's own maps the whole file, and every page touched stays in the
//! process's resident memory until it closes: the whole db, against a
//! 64 MiB target. So the file is mapped in [`CHUNK`]-sized pieces on demand,
//! and a piece is unmapped once SQLite has released its pages and more than
//! [`IDLE_CHUNKS`] are idle.
//!
//! A mapped file that shrinks raises `SIGBUS` on the next read of a lost
//! page. Only files opened `immutable=1` are mapped: backup copies, which
//! this tool never rewrites in place.

#![allow(unsafe_code)]

use std::ptr::NonNull;

use fs_err::File;
use memmap2::{Mmap, MmapOptions};

/// The span one map covers (plus [`PAST_CHUNK`]): 512 pages of 4 KiB.
pub(crate) const CHUNK: u64 = 2 << 20;

/// Chunks kept mapped after SQLite released all their pages, so that walks
/// that cross back and forth (a b-tree and its index) do not remap each time.
pub(crate) const IDLE_CHUNKS: usize = 8;

/// Pages asked for in a row from one unmapped chunk before it is mapped.
/// A walk asks for hundreds, and maps pay off only for those: a scattered
/// page (an index lookup's interior pages, typically) is better read once
/// into SQLite's own page cache, which keeps it between lookups, than
/// mapped into a chunk that is unmapped before its next use.
pub(crate) const RUN_BEFORE_MAPPING: usize = 4;

/// SQLite may read up to 256 bytes past a page of a corrupt db, and its unix
/// VFS never maps a page without them; a chunk's map runs this far into the
/// next chunk so that its last page has them too.
const PAST_CHUNK: u64 = 4096;
const OVERREAD: u64 = 256;

/// Maps made by every [`MappedChunks`] in this process, for tests to see
/// that pages were served from maps.
#[cfg(test)]
pub(crate) static MAPS_MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The chunks of one file mapped at the moment.
#[derive(Debug)]
pub(crate) struct MappedChunks {
    file: File,
    file_len: u64,
    chunks: Vec<Chunk>,
    /// Bumped on every fetch; a chunk's `last_used` orders unmapping.
    clock: u64,
    /// The unmapped chunk asked for last, and how many times in a row.
    run: (u64, usize),
}

#[derive(Debug)]
struct Chunk {
    index: u64,
    map: Mmap,
    /// Pages fetched from this chunk and not yet released.
    pages_out: usize,
    last_used: u64,
}

impl MappedChunks {
    /// `file` must be open read-only on an immutable file of `file_len` bytes.
    pub(crate) fn new(file: File, file_len: u64) -> Self {
        MappedChunks {
            file,
            file_len,
            chunks: Vec::with_capacity(IDLE_CHUNKS + 4),
            clock: 0,
            run: (u64::MAX, 0),
        }
    }

    /// The address of the `len` bytes at `offset`, followed by at least 256
    /// readable bytes, valid until the matching [`release`](Self::release);
    /// `None` when they do not lie within one chunk and those 256 bytes (the
    /// end of the file, or a read straddling chunks), so the caller reads
    /// them instead.
    ///
    /// # Errors
    ///
    /// The chunk could not be mapped.
    pub(crate) fn fetch(&mut self, offset: u64, len: usize) -> std::io::Result<Option<NonNull<u8>>> {
        let index = offset / CHUNK;
        let end = offset.saturating_add(len as u64);
        let chunk_start = index * CHUNK;
        let map_end = (chunk_start + CHUNK + PAST_CHUNK).min(self.file_len);
        if end > chunk_start + CHUNK || end.saturating_add(OVERREAD) > map_end {
            return Ok(None);
        }
        self.clock += 1;
        let slot = match self.chunks.iter().position(|chunk| chunk.index == index) {
            Some(mapped) => mapped,
            None => {
                self.run = match self.run {
                    (chunk, times) if chunk == index => (chunk, times + 1),
                    _ => (index, 1),
                };
                if self.run.1 < RUN_BEFORE_MAPPING {
                    return Ok(None);
                }
                self.unmap_idle_beyond(IDLE_CHUNKS.saturating_sub(1));
                // SAFETY: a map is undefined behaviour only if the file changes
                // under it; callers map immutable files only (module docs).
                let map = unsafe {
                    MmapOptions::new()
                        .offset(chunk_start)
                        .len((map_end - chunk_start) as usize)
                        .map(self.file.file())
                }?;
                #[cfg(test)]
                MAPS_MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.chunks.push(Chunk {
                    index,
                    map,
                    pages_out: 0,
                    last_used: 0,
                });
                self.chunks.len() - 1
            }
        };
        let chunk = &mut self.chunks[slot];
        chunk.pages_out += 1;
        chunk.last_used = self.clock;
        let within = (offset - chunk_start) as usize;
        Ok(NonNull::new(chunk.map[within..].as_ptr().cast_mut()))
    }

    /// Hands back a page [`fetch`](Self::fetch) returned for `offset`.
    pub(crate) fn release(&mut self, offset: u64) {
        let index = offset / CHUNK;
        if let Some(chunk) = self.chunks.iter_mut().find(|chunk| chunk.index == index) {
            chunk.pages_out = chunk.pages_out.saturating_sub(1);
        }
        self.unmap_idle_beyond(IDLE_CHUNKS);
    }

    /// Runs `job` on the `len` bytes at `offset` where they lie mapped;
    /// `None` where [`fetch`](Self::fetch) would not map them, so the caller
    /// reads them instead.
    ///
    /// # Errors
    ///
    /// The chunk could not be mapped.
    pub(crate) fn with_mapped<R>(
        &mut self,
        offset: u64,
        len: usize,
        job: impl FnOnce(&[u8]) -> R,
    ) -> std::io::Result<Option<R>> {
        let Some(bytes) = self.fetch(offset, len)? else {
            return Ok(None);
        };
        // SAFETY: `fetch` returned the address of `len` mapped bytes of an
        // immutable file, which stay mapped until the release below.
        let done = job(unsafe { std::slice::from_raw_parts(bytes.as_ptr(), len) });
        self.release(offset);
        Ok(Some(done))
    }

    /// Unmaps every chunk with no page out (SQLite asks when it suspects the
    /// file changed).
    pub(crate) fn release_idle(&mut self) {
        self.unmap_idle_beyond(0);
    }

    fn unmap_idle_beyond(&mut self, keep: usize) {
        loop {
            let idle = self.chunks.iter().filter(|chunk| chunk.pages_out == 0);
            if idle.clone().count() <= keep {
                return;
            }
            let Some(oldest) = idle.min_by_key(|chunk| chunk.last_used).map(|chunk| chunk.index) else {
                return;
            };
            self.chunks.retain(|chunk| chunk.index != oldest);
        }
    }

    /// How many chunks are mapped now.
    #[cfg(test)]
    fn mapped(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const PAGE: usize = 4096;

    /// A temp file of `len` bytes, the bytes, and chunks over it.
    fn mapped_file(len: usize) -> (tempfile::NamedTempFile, Vec<u8>, MappedChunks) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect();
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&bytes).expect("write temp file");
        let opened = File::open(file.path()).expect("open temp file");
        let chunks = MappedChunks::new(opened, len as u64);
        (file, bytes, chunks)
    }

    /// The page at `offset`, asked for as a walk would ask: enough times in a
    /// row for its chunk to be mapped.
    fn fetch_in_a_run(chunks: &mut MappedChunks, offset: u64) -> Option<NonNull<u8>> {
        (0..RUN_BEFORE_MAPPING).find_map(|_| chunks.fetch(offset, PAGE).expect("map"))
    }

    /// The page at `offset` as the map shows it, with the 256 bytes after it.
    fn fetched(chunks: &mut MappedChunks, offset: usize) -> Vec<u8> {
        let page = fetch_in_a_run(chunks, offset as u64).expect("page within a chunk");
        // SAFETY: `fetch` promises PAGE + 256 readable bytes until `release`.
        let bytes = unsafe { std::slice::from_raw_parts(page.as_ptr(), PAGE + OVERREAD as usize) }.to_vec();
        chunks.release(offset as u64);
        bytes
    }

    #[test]
    fn every_page_reads_as_the_file_with_room_after_it() {
        let len = 3 * CHUNK as usize + 5 * PAGE;
        let (_file, bytes, mut chunks) = mapped_file(len);
        let pages = len / PAGE;
        for page in (0..pages - 1).rev().chain(0..pages - 1) {
            let offset = page * PAGE;
            assert_eq!(
                fetched(&mut chunks, offset),
                bytes[offset..offset + PAGE + 256],
                "page {page}"
            );
        }
    }

    #[test]
    fn the_last_page_and_reads_past_the_end_are_left_to_the_caller() {
        let len = CHUNK as usize + 3 * PAGE;
        let (_file, _, mut chunks) = mapped_file(len);
        let last = (len - PAGE) as u64;
        assert!(chunks.fetch(last, PAGE).expect("no map needed").is_none());
        assert!(chunks.fetch(len as u64, PAGE).expect("no map needed").is_none());
        assert!(
            chunks.fetch(CHUNK - 100, PAGE).expect("no map needed").is_none(),
            "straddles two chunks"
        );
        // The chunk's last page has the next chunk's first bytes after it.
        let last_of_chunk = CHUNK - PAGE as u64;
        assert!(fetch_in_a_run(&mut chunks, last_of_chunk).is_some());
    }

    #[test]
    fn scattered_pages_are_left_to_the_caller_and_runs_are_mapped() {
        let len = 8 * CHUNK as usize + PAGE;
        let (_file, _, mut chunks) = mapped_file(len);
        let scattered: Vec<usize> = (0..200).map(|i| (i * 1031) % (len / PAGE - 1)).collect();
        for &page in &scattered {
            let fetched = chunks.fetch((page * PAGE) as u64, PAGE).expect("no map needed");
            assert!(
                fetched.is_none(),
                "page {page} mapped though no page near it was asked for"
            );
        }
        assert_eq!(chunks.mapped(), 0);
        let last_chunk = (scattered[scattered.len() - 1] * PAGE) as u64 / CHUNK;
        let run_start = ((last_chunk + 1) % 8) * CHUNK;
        for page in 0..RUN_BEFORE_MAPPING {
            let fetched = chunks.fetch(run_start + (page * PAGE) as u64, PAGE).expect("map");
            assert_eq!(fetched.is_some(), page + 1 == RUN_BEFORE_MAPPING, "page {page}");
        }
        assert_eq!(chunks.mapped(), 1);
    }

    #[test]
    fn idle_chunks_are_unmapped_beyond_the_few_kept() {
        let len = 20 * CHUNK as usize + PAGE;
        let (_file, _, mut chunks) = mapped_file(len);
        for chunk in 0..20 {
            fetched(&mut chunks, chunk * CHUNK as usize);
            assert!(
                chunks.mapped() <= IDLE_CHUNKS,
                "{} chunks mapped",
                chunks.mapped()
            );
        }
        chunks.release_idle();
        assert_eq!(chunks.mapped(), 0);
    }

    #[test]
    fn a_chunk_with_a_page_out_stays_mapped() {
        let len = 20 * CHUNK as usize + PAGE;
        let (_file, bytes, mut chunks) = mapped_file(len);
        let held = fetch_in_a_run(&mut chunks, PAGE as u64).expect("page");
        for chunk in 1..20 {
            fetched(&mut chunks, chunk * CHUNK as usize);
        }
        chunks.release_idle();
        assert_eq!(chunks.mapped(), 1);
        // SAFETY: the page at PAGE has not been released.
        let still = unsafe { std::slice::from_raw_parts(held.as_ptr(), PAGE) };
        assert_eq!(still, &bytes[PAGE..2 * PAGE]);
        chunks.release(PAGE as u64);
        chunks.release_idle();
        assert_eq!(chunks.mapped(), 0);
    }
}
