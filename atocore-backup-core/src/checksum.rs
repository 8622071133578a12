//! Checksums that name their algorithm (`blake3:<hex>`, `sha256:<hex>`).
//!
//! Backups are written with BLAKE3; reading also accepts SHA-256 so the
//! algorithm can change without a format bump.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::Error;

/// Few syscalls per GiB, and small enough that memory stays flat whatever
/// the file size (never mmap: mapped pages of a GiB-sized file would count
/// as resident memory). 1 MiB, not more: on the benchmark machine a 1 GiB
/// copy through 8 MiB writes took 2.8-4.1 s of kernel time against
/// 0.9-1.9 s through 1 MiB ones (docs/benchmarks.md).
pub(crate) const BUFFER_SIZE: usize = 1 << 20;

/// A hash algorithm a manifest may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// BLAKE3, the algorithm new backups use.
    Blake3,
    /// SHA-256, accepted when reading.
    Sha256,
}

impl Algorithm {
    fn prefix(self) -> &'static str {
        match self {
            Algorithm::Blake3 => "blake3",
            Algorithm::Sha256 => "sha256",
        }
    }
}

/// A checksum with its algorithm, serialized as `<algorithm>:<lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Checksum {
    algorithm: Algorithm,
    hex: String,
}

impl Checksum {
    /// The algorithm it was computed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The digest in lowercase hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    pub(crate) fn from_blake3(hash: &blake3::Hash) -> Checksum {
        Checksum {
            algorithm: Algorithm::Blake3,
            hex: hash.to_hex().to_string(),
        }
    }
}

impl FromStr for Checksum {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = || Error::BadChecksum {
            value: text
                .chars()
                .take(80)
                .collect::<String>()
                .escape_debug()
                .to_string(),
        };
        let (prefix, hex) = text.split_once(':').ok_or_else(bad)?;
        let algorithm = match prefix {
            "blake3" => Algorithm::Blake3,
            "sha256" => Algorithm::Sha256,
            _ => return Err(bad()),
        };
        let hex_ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(bad());
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl TryFrom<String> for Checksum {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        text.parse()
    }
}

impl From<Checksum> for String {
    fn from(checksum: Checksum) -> String {
        checksum.to_string()
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.prefix(), self.hex)
    }
}

/// An incremental hasher for either algorithm.
pub(crate) enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            // One thread: SIMD BLAKE3 hashes about 5 GB/s here, faster than
            // the bytes arrive. A rayon pool woken for every buffer spun in
            // `sched_yield` between them, taking the second core from the
            // copies and the integrity check beside it (docs/benchmarks.md).
            Hasher::Blake3(hasher) => {
                hasher.update(bytes);
            }
            Hasher::Sha256(hasher) => hasher.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Checksum {
        match self {
            Hasher::Blake3(hasher) => Checksum::from_blake3(&hasher.finalize()),
            Hasher::Sha256(hasher) => Checksum {
                algorithm: Algorithm::Sha256,
                hex: hasher
                    .finalize()
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect(),
            },
        }
    }
}

/// Hashes everything `reader` yields; returns the byte count and checksum.
pub(crate) fn hash_reader(mut reader: impl Read, algorithm: Algorithm) -> std::io::Result<(u64, Checksum)> {
    let mut hasher = Hasher::new(algorithm);
    let mut buffer = vec![0; BUFFER_SIZE];
    let mut total = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    Ok((total, hasher.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_reference_digests() {
        let (size, blake) = hash_reader(&b"abc"[..], Algorithm::Blake3).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            blake.to_string(),
            "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        let (_, sha) = hash_reader(&b"abc"[..], Algorithm::Sha256).unwrap();
        assert_eq!(
            sha.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha.to_string().parse::<Checksum>().unwrap(), sha);
    }

    #[test]
    fn rejects_unknown_algorithms_and_bad_hex() {
        for bad in ["md5:00", "blake3:xyz", "blake3", "", "sha256:ABC"] {
            assert!(bad.parse::<Checksum>().is_err(), "{bad}");
        }
    }
}
