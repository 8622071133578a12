//! Backup stamps: the one name a backup is known by.
//!
//! A stamp becomes a directory name, so it is validated before any path is
//! built from it: `YYYYMMDDTHHMMSSZ` in UTC, optionally followed by `-N` when
//! two backups land in the same second.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The longest stamp accepted: the base plus a `-N` suffix of up to 9 digits.
const MAX_STAMP_LEN: usize = 16 + 1 + 9;

/// A validated backup stamp such as `20260408T211748Z` or `20260408T211748Z-2`.
///
/// Parsing is the only way to obtain one, so a `Stamp` is always safe to join
/// onto a directory: it holds only ASCII digits, `T`, `Z` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Stamp(String);

impl Stamp {
    /// The stamp for a backup taken at `at`, without a collision suffix.
    pub fn at(at: Timestamp) -> Self {
        Stamp(at.strftime("%Y%m%dT%H%M%SZ").to_string())
    }

    /// This stamp with the `-n` collision suffix (`n >= 2`), replacing any
    /// suffix it already had.
    pub fn with_suffix(&self, n: u32) -> Self {
        Stamp(format!("{}-{n}", self.base()))
    }

    /// The stamp as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `YYYYMMDDTHHMMSSZ` part.
    fn base(&self) -> &str {
        &self.0[..16]
    }

    /// The collision suffix: 1 for a stamp without one.
    fn suffix(&self) -> u64 {
        self.0.get(17..).and_then(|n| n.parse().ok()).unwrap_or(1)
    }
}

fn is_valid(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() < 16 || bytes.len() > MAX_STAMP_LEN {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    let base_ok = digits(0..8) && bytes[8] == b'T' && digits(9..15) && bytes[15] == b'Z';
    let suffix_ok = match &bytes[16..] {
        [] => true,
        [b'-', rest @ ..] => !rest.is_empty() && rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    base_ok && suffix_ok
}

impl FromStr for Stamp {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if is_valid(text) {
            Ok(Stamp(text.to_owned()))
        } else {
            Err(Error::InvalidStamp {
                stamp: text.escape_debug().to_string(),
            })
        }
    }
}

impl TryFrom<String> for Stamp {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        text.parse()
    }
}

impl From<Stamp> for String {
    fn from(stamp: Stamp) -> String {
        stamp.0
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Chronological: by time, then by collision suffix (`-10` after `-9`).
impl Ord for Stamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.base()
            .cmp(other.base())
            .then_with(|| self.suffix().cmp(&other.suffix()))
    }
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_contract_forms() {
        for ok in ["20260408T211748Z", "20260408T211748Z-2", "20260408T211748Z-123"] {
            assert_eq!(ok.parse::<Stamp>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_hostile_and_malformed_stamps() {
        let long = "9".repeat(300);
        for bad in [
            "",
            "../x",
            "20260101T000000Z/..",
            "20260101T000000Z\\x",
            "20260101T000000Z\0",
            "..",
            "20260101T000000Z-",
            "20260101T000000Z-a",
            "20260101t000000z",
            long.as_str(),
        ] {
            assert!(bad.parse::<Stamp>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn orders_suffixes_numerically() {
        let a: Stamp = "20260101T000000Z-9".parse().unwrap();
        let b: Stamp = "20260101T000000Z-10".parse().unwrap();
        let c: Stamp = "20260101T000000Z".parse().unwrap();
        assert!(c < a && a < b);
    }

    #[test]
    fn formats_a_timestamp_in_utc() {
        let at: Timestamp = "2026-04-08T21:17:48.512Z".parse().unwrap();
        assert_eq!(Stamp::at(at).as_str(), "20260408T211748Z");
        assert_eq!(Stamp::at(at).with_suffix(3).as_str(), "20260408T211748Z-3");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_and_accepted_stamps_are_path_safe(text in ".{0,40}") {
            if let Ok(stamp) = text.parse::<Stamp>() {
                prop_assert!(stamp.as_str().bytes().all(|b| b.is_ascii_digit() || b"TZ-".contains(&b)));
            }
        }
    }
}
