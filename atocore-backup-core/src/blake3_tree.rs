//! BLAKE3 of one large file on several threads.
//!
//! A fresh db copy is hashed after SQLite has written it, and nothing else
//! is left to overlap with: on the benchmark machine that read ran at about
//! 3 GB/s on one core, bound by BLAKE3, not by the page cache (about
//! 15 GB/s). BLAKE3 is a tree hash, so aligned pieces of the file are
//! hashed as independent subtrees and their chaining values merged the way
//! [`blake3::hash`] would: the same checksum, in about half the time on two
//! cores.
//!
//! Threads are plain scoped threads that end with the file: a rayon pool
//! (`Hasher::update_rayon`) spun between buffers and took the core from
//! copies running beside it (docs/benchmarks.md).

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use fs_err as fs;

use crate::checksum::BUFFER_SIZE;
use crate::durable::Progress;

/// Bytes per piece: a power of two (so every piece is a subtree of the
/// whole), large enough that a thread's start and the merges cost nothing,
/// small enough that two threads finish together.
const PIECE_LEN: u64 = 64 << 20;

/// Most threads one file gets: hashing is a short tail, and beyond a few
/// cores the page cache, not BLAKE3, is the limit.
const MAX_THREADS: usize = 4;

/// The BLAKE3 hash of the first `len` bytes of `file`, read at their
/// offsets (the file position is not used). Files of one piece or less are
/// hashed on the calling thread.
pub(crate) fn hash_file(file: &fs::File, len: u64, progress: &dyn Progress) -> io::Result<blake3::Hash> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    hash_in_pieces(file, len, PIECE_LEN, threads, progress)
}

fn hash_in_pieces(
    file: &fs::File,
    len: u64,
    piece_len: u64,
    threads: usize,
    progress: &dyn Progress,
) -> io::Result<blake3::Hash> {
    debug_assert!(piece_len.is_power_of_two() && piece_len >= blake3::CHUNK_LEN as u64);
    if len <= piece_len || threads < 2 {
        let mut hasher = blake3::Hasher::new();
        hash_range(file, 0, len, &mut hasher, progress)?;
        return Ok(hasher.finalize());
    }
    let pieces = usize::try_from(len.div_ceil(piece_len)).map_err(io::Error::other)?;
    let chaining_values = Mutex::new(vec![None; pieces]);
    let next_piece = AtomicUsize::new(0);
    let hash_piece = |piece: usize| -> io::Result<()> {
        let start = piece as u64 * piece_len;
        let end = (start + piece_len).min(len);
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(start);
        hash_range(file, start, end, &mut hasher, progress)?;
        let value = hasher.finalize_non_root();
        chaining_values.lock().unwrap_or_else(|e| e.into_inner())[piece] = Some(value);
        Ok(())
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(pieces))
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    loop {
                        let piece = next_piece.fetch_add(1, Ordering::Relaxed);
                        if piece >= pieces {
                            return Ok(());
                        }
                        if let Err(error) = hash_piece(piece) {
                            // The others stop at their next piece: the hash is lost anyway.
                            next_piece.store(pieces, Ordering::Relaxed);
                            return Err(error);
                        }
                    }
                })
            })
            .collect();
        // Every worker is joined, so none is left to panic the scope.
        let outcomes: Vec<io::Result<()>> = workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a hashing thread panicked")))
            })
            .collect();
        outcomes.into_iter().collect::<io::Result<()>>()
    })?;
    let chaining_values: Vec<ChainingValue> = chaining_values
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| io::Error::other("a piece of the file was not hashed"))?;
    let tree = Tree {
        chaining_values: &chaining_values,
        piece_len,
    };
    let split = left_subtree_len(len);
    Ok(merge_subtrees_root(
        &tree.subtree(0, split),
        &tree.subtree(split, len),
        Mode::Hash,
    ))
}

/// Rebuilds BLAKE3's tree above the pieces: each node splits where
/// [`left_subtree_len`] says, which for anything longer than a piece is a
/// multiple of the piece length, so the leaves are exactly the pieces.
struct Tree<'a> {
    chaining_values: &'a [ChainingValue],
    piece_len: u64,
}

impl Tree<'_> {
    fn subtree(&self, start: u64, end: u64) -> ChainingValue {
        if end - start <= self.piece_len {
            return self.chaining_values[(start / self.piece_len) as usize];
        }
        let split = start + left_subtree_len(end - start);
        merge_subtrees_non_root(&self.subtree(start, split), &self.subtree(split, end), Mode::Hash)
    }
}

fn hash_range(
    file: &fs::File,
    start: u64,
    end: u64,
    hasher: &mut blake3::Hasher,
    progress: &dyn Progress,
) -> io::Result<()> {
    let mut buffer = vec![0; BUFFER_SIZE];
    let mut offset = start;
    while offset < end {
        let want = usize::try_from(end - offset).map_or(buffer.len(), |left| left.min(buffer.len()));
        file.file().read_exact_at(&mut buffer[..want], offset)?;
        hasher.update(&buffer[..want]);
        offset += want as u64;
        progress.advance(want as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;
    use crate::durable::NoProgress;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        (dir, fs::File::open(&path).unwrap())
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn matches_blake3_at_piece_boundaries() {
        let piece = 4 * blake3::CHUNK_LEN as u64;
        for len in [
            0,
            1,
            1024,
            1025,
            piece - 1,
            piece,
            piece + 1,
            2 * piece,
            3 * piece + 17,
            4 * piece,
            5 * piece + 3000,
            8 * piece + 1,
        ] {
            let data = bytes(len as usize);
            let (_dir, file) = file_with(&data);
            for threads in [1, 2, 3] {
                assert_eq!(
                    hash_in_pieces(&file, len, piece, threads, &NoProgress).unwrap(),
                    blake3::hash(&data),
                    "len {len}, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn a_file_shorter_than_asked_is_an_error_not_a_short_hash() {
        let piece = blake3::CHUNK_LEN as u64;
        let (_dir, file) = file_with(&bytes(3000));
        assert!(hash_in_pieces(&file, 5000, piece, 2, &NoProgress).is_err());
        assert!(hash_in_pieces(&file, 5000, 8192, 2, &NoProgress).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_blake3_for_any_length_and_piece(len in 0usize..200_000, piece_shift in 10u32..15, threads in 1usize..5) {
            let data = bytes(len);
            let (_dir, file) = file_with(&data);
            let hash = hash_in_pieces(&file, len as u64, 1 << piece_shift, threads, &NoProgress).unwrap();
            prop_assert_eq!(hash, blake3::hash(&data));
        }
    }
}
