//! A file that is written only once it differs from an earlier copy.
//!
//! A second backup of an unchanged db used to write a whole new copy, hash
//! it, find it identical to the previous backup's and free it again: a GiB
//! written and discarded to learn "no change". SQLite's online backup writes
//! its copy through a VFS, and the `atocore-lazy` VFS hands those writes to
//! a [`LazyCopy`]: while every write holds the bytes the previous copy has
//! at that offset, nothing is written and the previous copy answers reads.
//! The first time that stops being true the copy is *materialised*: what has
//! been written so far is copied from the previous copy inside the kernel
//! (`copy_file_range`), the differing writes held so far are applied, and
//! from then on it is a plain file. Finished, it either is byte for byte the
//! previous copy ([`Finished::SameAsPrevious`], the new file left empty) or
//! holds exactly what SQLite wrote, as a plain file would.
//!
//! A few differing writes are held in memory rather than materialising at
//! once: SQLite's pager may write a page and rewrite it before its commit
//! (a page spilled from a full cache and changed again, page 1 whose header
//! the commit updates), and only the last write of a page decides.
//!
//! Once writing (materialised, or from the start for a copy with no previous
//! one, [`LazyCopy::without_previous`]), contiguous writes are gathered into
//! [`GATHERED_BYTES_LIMIT`] before they reach the file. SQLite writes a page
//! at a time, and a GiB written 4 KiB at a time cost this machine's kernel
//! 1.1 s against 0.3 s in 1 MiB writes (docs/benchmarks.md).

use std::collections::BTreeMap;
use std::io;

use fs_err as fs;
use fs_err::os::unix::fs::FileExt;

use crate::mapped_chunks::MappedChunks;

/// The granularity at which writes are tracked: SQLite's smallest page.
const UNIT: u64 = 512;

/// Differing bytes held in memory before the copy is materialised. Tests
/// hold a few pages only, so that their small files cross the limit too.
const HELD_BYTES_LIMIT: usize = if cfg!(test) { 4096 } else { 1 << 20 };

/// Contiguous bytes gathered before they are written. Tests gather a few
/// pages only, so that their small files cross the limit too.
const GATHERED_BYTES_LIMIT: usize = if cfg!(test) { 8192 } else { 1 << 20 };

/// How a [`LazyCopy`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Everything written is the previous copy, byte for byte, and covers
    /// it: the new file was never written.
    SameAsPrevious,
    /// The new file holds what was written.
    Written,
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct LazyCopy {
    target: fs::File,
    /// The file's length as the writer sees it.
    len: u64,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Comparing {
        previous: Previous,
        /// One bit per [`UNIT`]: written since the start (with the previous
        /// copy's bytes, unless held in `differing`).
        written: Vec<u64>,
        /// Writes that differ from the previous copy, by offset.
        differing: BTreeMap<u64, Vec<u8>>,
        held_bytes: usize,
        /// Scratch space for the previous copy's bytes.
        scratch: Vec<u8>,
    },
    Writing(Gathered),
}

/// The earlier copy a [`LazyCopy`] is compared with.
#[derive(Debug)]
struct Previous {
    file: fs::File,
    len: u64,
    /// Writes are compared with the previous copy where it lies in the page
    /// cache: reading it would copy every page once more.
    chunks: MappedChunks,
}

/// Contiguous writes not yet made to the file: `bytes` belong at `start`.
#[derive(Debug, Default)]
struct Gathered {
    start: u64,
    bytes: Vec<u8>,
}

impl Gathered {
    /// Takes `bytes`, to be written at `offset`, if they lie within or right
    /// after what is gathered (or nothing is) and fit under the limit.
    fn take(&mut self, offset: u64, bytes: &[u8]) -> bool {
        if self.bytes.is_empty() {
            self.start = offset;
        }
        let Some(from) = offset
            .checked_sub(self.start)
            .and_then(|from| usize::try_from(from).ok())
            .filter(|from| *from <= self.bytes.len())
        else {
            return false;
        };
        let to = from + bytes.len();
        if to > self.bytes.len().max(GATHERED_BYTES_LIMIT) {
            return false;
        }
        if to > self.bytes.len() {
            self.bytes.resize(to, 0);
        }
        self.bytes[from..to].copy_from_slice(bytes);
        true
    }

    /// Writes `bytes` at `offset` of `target`, gathered with the writes
    /// before it if they follow on.
    fn write(&mut self, target: &fs::File, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if self.take(offset, bytes) {
            return Ok(());
        }
        self.flush(target)?;
        // Larger than the limit: no use holding it.
        if !self.take(offset, bytes) {
            target.write_all_at(bytes, offset)?;
        }
        Ok(())
    }

    /// Writes what is gathered to `target`.
    fn flush(&mut self, target: &fs::File) -> io::Result<()> {
        if !self.bytes.is_empty() {
            target.write_all_at(&self.bytes, self.start)?;
            self.bytes.clear();
        }
        Ok(())
    }
}

impl LazyCopy {
    /// `target` must be empty and open for reading and writing; `previous`,
    /// an earlier backup's copy, must not change while this exists (it is
    /// mapped: see [`MappedChunks`]).
    pub(crate) fn new(previous: fs::File, target: fs::File) -> io::Result<Self> {
        let len = previous.metadata()?.len();
        let previous = Previous {
            chunks: MappedChunks::new(previous.try_clone()?, len),
            file: previous,
            len,
        };
        Ok(Self {
            target,
            len: 0,
            mode: Mode::Comparing {
                previous,
                written: Vec::new(),
                differing: BTreeMap::new(),
                held_bytes: 0,
                scratch: Vec::new(),
            },
        })
    }

    /// A copy with nothing to compare with: written from the start, in
    /// gathered writes. `target` must be empty and open for reading and
    /// writing.
    pub(crate) fn without_previous(target: fs::File) -> Self {
        Self {
            target,
            len: 0,
            mode: Mode::Writing(Gathered::default()),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let end = offset + bytes.len() as u64;
        if let Mode::Comparing {
            previous,
            written,
            differing,
            held_bytes,
            scratch,
        } = &mut self.mode
            && offset.is_multiple_of(UNIT)
            && (bytes.len() as u64).is_multiple_of(UNIT)
        {
            // A held write overlapping this one other than exactly cannot be
            // kept apart from it: materialise below.
            let overlapping = differing
                .range(..end)
                .next_back()
                .filter(|(start, held)| **start + held.len() as u64 > offset);
            let exact = match overlapping {
                None => true,
                Some((start, held)) => *start == offset && held.len() == bytes.len(),
            };
            if exact {
                let same = end <= previous.len
                    && match previous
                        .chunks
                        .with_mapped(offset, bytes.len(), |previous| previous == bytes)
                    {
                        Ok(Some(same)) => same,
                        // Not mapped (the file's last page, a failed map): read.
                        Ok(None) | Err(_) => {
                            scratch.resize(bytes.len(), 0);
                            previous.file.read_exact_at(scratch, offset)?;
                            scratch.as_slice() == bytes
                        }
                    };
                if let Some(replaced) = differing.remove(&offset) {
                    *held_bytes -= replaced.len();
                }
                let keep = same || *held_bytes + bytes.len() <= HELD_BYTES_LIMIT;
                if keep {
                    if !same {
                        differing.insert(offset, bytes.to_vec());
                        *held_bytes += bytes.len();
                    }
                    mark_written(written, offset, end);
                    self.len = self.len.max(end);
                    return Ok(());
                }
            }
        }
        self.materialise()?;
        if let Mode::Writing(gathered) = &mut self.mode {
            gathered.write(&self.target, offset, bytes)?;
        }
        self.len = self.len.max(end);
        Ok(())
    }

    /// Fills `buf` with the bytes at `offset`; returns how many lay before
    /// the end of the file (the rest is zeroed), as a file's read would.
    pub(crate) fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        buf.fill(0);
        let available = usize::try_from(self.len.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let buf = &mut buf[..available];
        match &mut self.mode {
            Mode::Writing(gathered) => {
                gathered.flush(&self.target)?;
                read_fully_at(&self.target, buf, offset)?;
            }
            Mode::Comparing {
                previous,
                written,
                differing,
                ..
            } => {
                read_fully_at(&previous.file, buf, offset)?;
                let end = offset + buf.len() as u64;
                // What was never written reads as a hole would: zeros.
                let mut unit = offset - offset % UNIT;
                while unit < end {
                    if !is_written(written, unit) {
                        let (from, to) = (unit.max(offset), (unit + UNIT).min(end));
                        buf[(from - offset) as usize..(to - offset) as usize].fill(0);
                    }
                    unit += UNIT;
                }
                for (start, held) in differing.range(..end) {
                    let held_end = start + held.len() as u64;
                    if held_end <= offset {
                        continue;
                    }
                    let (from, to) = (offset.max(*start), end.min(held_end));
                    buf[(from - offset) as usize..(to - offset) as usize]
                        .copy_from_slice(&held[(from - start) as usize..(to - start) as usize]);
                }
            }
        }
        Ok(available)
    }

    pub(crate) fn truncate(&mut self, len: u64) -> io::Result<()> {
        if let Mode::Comparing {
            written,
            differing,
            held_bytes,
            ..
        } = &mut self.mode
            && len.is_multiple_of(UNIT)
            && differing
                .range(..len)
                .next_back()
                .is_none_or(|(start, held)| start + held.len() as u64 <= len)
        {
            for (_, dropped) in differing.split_off(&len) {
                *held_bytes -= dropped.len();
            }
            unmark_from(written, len);
            self.len = len;
            return Ok(());
        }
        self.write_out()?;
        self.target.set_len(len)?;
        self.len = len;
        Ok(())
    }

    /// Ends the copy: the new file is left empty if everything written is
    /// the previous copy, and holds what was written otherwise.
    pub(crate) fn finish(mut self) -> io::Result<Finished> {
        if let Mode::Comparing {
            previous,
            written,
            differing,
            ..
        } = &self.mode
            && differing.is_empty()
            && self.len == previous.len
            && holes_are_zeros_in(previous, written, self.len)?
        {
            return Ok(Finished::SameAsPrevious);
        }
        self.write_out()?;
        Ok(Finished::Written)
    }

    /// Turns the copy into a plain file and writes out what it has gathered,
    /// so the file holds everything written.
    fn write_out(&mut self) -> io::Result<()> {
        self.materialise()?;
        if let Mode::Writing(gathered) = &mut self.mode {
            gathered.flush(&self.target)?;
        }
        Ok(())
    }

    /// Turns the copy into a plain file holding what has been written.
    fn materialise(&mut self) -> io::Result<()> {
        let (previous, written, differing) =
            match std::mem::replace(&mut self.mode, Mode::Writing(Gathered::default())) {
                Mode::Comparing {
                    previous,
                    written,
                    differing,
                    ..
                } => (previous, written, differing),
                // Already writing: what it has gathered stays.
                writing @ Mode::Writing(_) => {
                    self.mode = writing;
                    return Ok(());
                }
            };
        // Written units past the previous copy's end all differ from it,
        // so they are among the held writes.
        for (start, end) in written_runs(&written) {
            copy_range(&previous.file, &self.target, start, end.min(previous.len))?;
        }
        for (offset, held) in differing {
            self.target.write_all_at(&held, offset)?;
        }
        self.target.set_len(self.len)
    }
}

/// Whether every byte of a `len`-byte copy never written (a hole, which a
/// plain file reads as zeros) is a zero in `previous` too. SQLite leaves
/// one such hole in every db over 1 GiB: the page holding its lock bytes.
fn holes_are_zeros_in(previous: &Previous, written: &[u64], len: u64) -> io::Result<bool> {
    let mut expected = 0;
    let mut holes = Vec::new();
    for (start, end) in written_runs(written).into_iter().chain([(len, len)]) {
        if start > expected {
            holes.push((expected, start.min(len)));
        }
        expected = expected.max(end);
    }
    let mut buf = Vec::new();
    for (start, end) in holes {
        let mut at = start;
        while at < end {
            buf.resize(usize::try_from(end - at).unwrap_or(usize::MAX).min(1 << 20), 0);
            previous.file.read_exact_at(&mut buf, at)?;
            if buf.iter().any(|byte| *byte != 0) {
                return Ok(false);
            }
            at += buf.len() as u64;
        }
    }
    Ok(true)
}

fn mark_written(written: &mut Vec<u64>, start: u64, end: u64) {
    for unit in start / UNIT..end / UNIT {
        let (word, bit) = ((unit / 64) as usize, unit % 64);
        if written.len() <= word {
            written.resize(word + 1, 0);
        }
        written[word] |= 1 << bit;
    }
}

fn unmark_from(written: &mut Vec<u64>, len: u64) {
    let first = len / UNIT;
    let (word, bit) = ((first / 64) as usize, first % 64);
    if word < written.len() {
        written[word] &= (1 << bit) - 1;
        written.truncate(word + 1);
    }
}

fn is_written(written: &[u64], offset: u64) -> bool {
    let unit = offset / UNIT;
    written
        .get((unit / 64) as usize)
        .is_some_and(|word| word & (1 << (unit % 64)) != 0)
}

/// The written byte ranges, as `(start, end)`, in order.
fn written_runs(written: &[u64]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for unit in 0..written.len() as u64 * 64 {
        if !is_written(written, unit * UNIT) {
            continue;
        }
        let (start, end) = (unit * UNIT, (unit + 1) * UNIT);
        match runs.last_mut() {
            Some(run) if run.1 == start => run.1 = end,
            _ => runs.push((start, end)),
        }
    }
    runs
}

/// Copies `start..end` of `from` to the same offsets of `to`, inside the
/// kernel where it can.
fn copy_range(from: &fs::File, to: &fs::File, start: u64, end: u64) -> io::Result<()> {
    let mut at = start;
    while at < end {
        let (mut from_at, mut to_at) = (at, at);
        let len = usize::try_from(end - at).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(from, Some(&mut from_at), to, Some(&mut to_at), len) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(copied) => at += copied as u64,
            // Filesystems without it: the same through user memory.
            Err(_) => {
                let mut buf = vec![0; usize::try_from(end - at).unwrap_or(usize::MAX).min(1 << 20)];
                from.read_exact_at(&mut buf, at)?;
                to.write_all_at(&buf, at)?;
                at += buf.len() as u64;
            }
        }
    }
    Ok(())
}

/// Reads as much of `buf` as `file` holds at `offset`, leaving the rest.
fn read_fully_at(file: &fs::File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(read) => done += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use proptest::prelude::*;

    use super::*;

    const PAGE: u64 = 1024;

    /// A previous copy holding `bytes`, and an empty target, in `dir`.
    fn lazy_copy_over(dir: &tempfile::TempDir, bytes: &[u8]) -> (LazyCopy, std::path::PathBuf) {
        let previous = dir.path().join("previous");
        fs::write(&previous, bytes).expect("write previous");
        let target_file = fresh_target(dir, "target");
        let previous_file = fs::File::open(&previous).expect("open previous");
        (
            LazyCopy::new(previous_file, target_file).expect("lazy copy"),
            dir.path().join("target"),
        )
    }

    /// A new, empty file `name` in `dir`, open for reading and writing.
    fn fresh_target(dir: &tempfile::TempDir, name: &str) -> fs::File {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join(name))
            .expect("create target")
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    #[test]
    fn rewriting_the_previous_copy_writes_nothing_even_after_a_differing_first_draft() {
        let dir = tempfile::tempdir().expect("temp dir");
        let previous = pattern(8 * PAGE as usize, 7);
        let (mut copy, target) = lazy_copy_over(&dir, &previous);
        // Page 1 first written with another header, as SQLite spills it.
        copy.write(0, &pattern(PAGE as usize, 99)).expect("draft");
        for page in previous.chunks(PAGE as usize).enumerate() {
            copy.write(page.0 as u64 * PAGE, page.1).expect("write");
        }
        let mut header = [0; 100];
        assert_eq!(copy.read(24, &mut header).expect("read"), 100);
        assert_eq!(header[..], previous[24..124]);
        assert_eq!(copy.finish().expect("finish"), Finished::SameAsPrevious);
        assert_eq!(fs::metadata(target).expect("target").len(), 0);
    }

    #[test]
    fn a_page_never_written_is_a_hole_not_the_previous_copy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let previous = pattern(4 * PAGE as usize, 5);
        let (mut copy, target) = lazy_copy_over(&dir, &previous);
        for page in [0, 1, 3] {
            let at = (page * PAGE) as usize;
            copy.write(page * PAGE, &previous[at..at + PAGE as usize])
                .expect("write");
        }
        let mut hole = vec![1; PAGE as usize];
        copy.read(2 * PAGE, &mut hole).expect("read");
        assert!(hole.iter().all(|byte| *byte == 0));
        assert_eq!(copy.finish().expect("finish"), Finished::Written);
        let mut expected = previous;
        expected[2 * PAGE as usize..3 * PAGE as usize].fill(0);
        assert_eq!(fs::read(target).expect("target"), expected);
    }

    #[test]
    fn a_page_never_written_matches_zeros_in_the_previous_copy() {
        let dir = tempfile::tempdir().expect("temp dir");
        // As SQLite's lock-byte page: never written, zeros in every copy.
        let mut previous = pattern(4 * PAGE as usize, 5);
        previous[2 * PAGE as usize..3 * PAGE as usize].fill(0);
        let (mut copy, target) = lazy_copy_over(&dir, &previous);
        for page in [0, 1, 3] {
            let at = (page * PAGE) as usize;
            copy.write(page * PAGE, &previous[at..at + PAGE as usize])
                .expect("write");
        }
        assert_eq!(copy.finish().expect("finish"), Finished::SameAsPrevious);
        assert_eq!(fs::metadata(target).expect("target").len(), 0);
    }

    #[test]
    fn a_copy_that_differs_in_many_pages_is_written_as_it_goes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pages = 2 * HELD_BYTES_LIMIT / PAGE as usize;
        let previous = pattern(pages * PAGE as usize, 1);
        let (mut copy, target) = lazy_copy_over(&dir, &previous);
        let new = pattern(pages * PAGE as usize, 2);
        for (page, bytes) in new.chunks(PAGE as usize).enumerate() {
            copy.write(page as u64 * PAGE, bytes).expect("write");
            if page == pages / 2 + 1 {
                // Past the held-bytes limit: written out already.
                assert!(matches!(copy.mode, Mode::Writing(_)));
            }
        }
        assert_eq!(copy.finish().expect("finish"), Finished::Written);
        assert_eq!(fs::read(target).expect("target"), new);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Whole pages, from the previous copy or not.
        WritePages {
            page: u64,
            pages: u64,
            same: bool,
            seed: u8,
        },
        WriteAnywhere {
            offset: u64,
            len: usize,
            seed: u8,
        },
        Truncate {
            len: u64,
        },
        Read {
            offset: u64,
            len: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..40u64, 1..20u64, any::<bool>(), any::<u8>())
                .prop_map(|(page, pages, same, seed)| Op::WritePages { page, pages, same, seed }),
            1 => (0..42_000u64, 1..3000usize, any::<u8>())
                .prop_map(|(offset, len, seed)| Op::WriteAnywhere { offset, len, seed }),
            1 => prop_oneof![(0..44u64).prop_map(|pages| pages * PAGE), 0..45_000u64]
                .prop_map(|len| Op::Truncate { len }),
            2 => (0..45_000u64, 0..5000usize).prop_map(|(offset, len)| Op::Read { offset, len }),
        ]
    }

    proptest! {
        /// Whatever is written, read back and finished, a lazy copy behaves
        /// as a plain file: reads as it would, and ends as its bytes (or,
        /// when they are the previous copy's, without writing them). So
        /// does a copy with no previous one, which only gathers writes.
        #[test]
        fn a_lazy_copy_behaves_as_a_plain_file(
            previous_pages in 0..40usize,
            has_previous in prop::bool::weighted(0.75),
            ops in proptest::collection::vec(op(), 0..80),
            rewrite_all in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let previous = pattern(previous_pages * PAGE as usize, 3);
            let (mut copy, target) = lazy_copy_over(&dir, &previous);
            if !has_previous {
                copy = LazyCopy::without_previous(fresh_target(&dir, "fresh"));
            }
            let target = match has_previous {
                true => target,
                false => dir.path().join("fresh"),
            };
            let mut file: Vec<u8> = Vec::new();
            let write = |copy: &mut LazyCopy, file: &mut Vec<u8>, offset: u64, bytes: &[u8]| {
                copy.write(offset, bytes).expect("write");
                let end = offset as usize + bytes.len();
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[offset as usize..end].copy_from_slice(bytes);
            };
            for op in ops {
                match op {
                    Op::WritePages { page, pages, same, seed } => {
                        let (start, end) = ((page * PAGE) as usize, ((page + pages) * PAGE) as usize);
                        let bytes = match same && end <= previous.len() {
                            true => previous[start..end].to_vec(),
                            false => pattern(end - start, seed),
                        };
                        // A page per call, as SQLite writes: runs fill whole
                        // gathered writes and cross their limit.
                        for (page, page_bytes) in bytes.chunks(PAGE as usize).enumerate() {
                            let at = start as u64 + page as u64 * PAGE;
                            write(&mut copy, &mut file, at, page_bytes);
                        }
                    }
                    Op::WriteAnywhere { offset, len, seed } => {
                        write(&mut copy, &mut file, offset, &pattern(len, seed));
                    }
                    Op::Truncate { len } => {
                        copy.truncate(len).expect("truncate");
                        file.resize(len as usize, 0);
                    }
                    Op::Read { offset, len } => {
                        let mut got = vec![0xAA; len];
                        let read = copy.read(offset, &mut got).expect("read");
                        let mut expected = vec![0; len];
                        let available = file.len().saturating_sub(offset as usize).min(len);
                        if available > 0 {
                            expected[..available]
                                .copy_from_slice(&file[offset as usize..offset as usize + available]);
                        }
                        prop_assert_eq!(read, available);
                        prop_assert_eq!(got, expected);
                    }
                }
                prop_assert_eq!(copy.len(), file.len() as u64);
            }
            // Once written out, a copy stays a plain file.
            let still_lazy = matches!(copy.mode, Mode::Comparing { .. });
            if rewrite_all {
                copy.truncate(0).expect("truncate");
                file.clear();
                for (page, bytes) in previous.chunks(PAGE as usize).enumerate() {
                    write(&mut copy, &mut file, page as u64 * PAGE, bytes);
                }
            }
            match copy.finish().expect("finish") {
                Finished::SameAsPrevious => {
                    prop_assert!(has_previous);
                    prop_assert_eq!(&file, &previous);
                    prop_assert_eq!(fs::metadata(&target).expect("target").len(), 0);
                }
                Finished::Written => {
                    prop_assert_eq!(fs::read(&target).expect("target"), file.clone());
                }
            }
            if rewrite_all && still_lazy && has_previous {
                // Rewritten from scratch with the previous bytes: recognised.
                prop_assert_eq!(fs::metadata(&target).expect("target").len(), 0);
            }
        }
    }
}
