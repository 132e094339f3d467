//! File names inside a log directory, and validation of client names.
//!
//! Every name durq creates is built here, from validated parts, so that no
//! input can make durq touch a file outside the log directory.

use crate::error::{Error, Result};

/// The longest client name accepted, in bytes.
pub const MAX_CLIENT_NAME_LEN: usize = 64;

/// Suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix of every temporary file; leftovers are removed on open.
pub const TEMP_SUFFIX: &str = ".tmp";
/// The writer's lock file.
pub const LOCK_FILE: &str = "durq.lock";
/// The durable-end hint: 16 bytes (`u64` end, `u32` CRC-32 of those 8
/// bytes, 4 zero bytes) rewritten by the writer after every group commit and
/// never synced. Processes that read a log another process is writing
/// (`durq stat`, `dump`, `verify`) show records only below it. It is only a
/// hint: it is rewritten at open before any append, and a reader takes the
/// smaller of it and what it finds on disk.
pub const END_HINT_FILE: &str = "durq.end";

/// Encodes the durable-end hint.
pub fn encode_end_hint(end: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&end.to_le_bytes());
    let crc = crc32fast::hash(&b[0..8]);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the durable-end hint; `None` if it is not valid.
pub fn decode_end_hint(b: &[u8]) -> Option<u64> {
    if b.len() < 16 {
        return None;
    }
    let end = u64::from_le_bytes(b[0..8].try_into().ok()?);
    let crc = u32::from_le_bytes(b[8..12].try_into().ok()?);
    (crc32fast::hash(&b[0..8]) == crc).then_some(end)
}

/// The directory where `durq recover --salvage` keeps damaged originals.
pub const SALVAGE_DIR: &str = "salvage";

/// The directory (inside the log directory) holding client cursor files.
pub const CLIENTS_DIR: &str = "clients";
/// Digits in each number of a segment file name (enough for any `u64`, so
/// `ls` sorts the files by base offset).
pub const SEGMENT_NAME_DIGITS: usize = 20;

/// The file name of the segment whose first offset is `base` and whose
/// sequence number is `seq`: `{base:020}-{seq:020}.seg`. Both numbers are in
/// the name so that opening a log can check that no segment is missing from
/// the directory listing alone, without reading any sealed segment's header.
pub fn segment_file_name(base: u64, seq: u64) -> String {
    format!(
        "{base:0width$}-{seq:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// Parses 20 ASCII digits into a `u64` (`None` if it does not fit).
fn parse_digits(digits: &str) -> Option<u64> {
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parses a segment file name back into its base offset and sequence
/// number. Only the exact form [`segment_file_name`] makes is accepted.
pub fn parse_segment_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (base, seq) = stem.split_once('-')?;
    Some((parse_digits(base)?, parse_digits(seq)?))
}

/// How many consecutive segments share one group directory: segment
/// number `seq` lives in group `seq / SEGMENTS_PER_GROUP`.
#[cfg(not(feature = "test-small-groups"))]
pub const SEGMENTS_PER_GROUP: u64 = 64;
/// How many consecutive segments share one group directory (4 in builds
/// with the test-only `test-small-groups` feature, which must never write a
/// real log).
#[cfg(feature = "test-small-groups")]
pub const SEGMENTS_PER_GROUP: u64 = 4;

/// Suffix of segment group directories.
pub const GROUP_SUFFIX: &str = ".group";

/// The group (directory) number of segment number `seq`.
pub fn group_of(seq: u64) -> u64 {
    seq / SEGMENTS_PER_GROUP
}

/// The name of the directory holding the segments of group `group`, whose
/// first segment placed in it had base offset `base`:
/// `{base:020}-{group:020}.group`. The base is in the name so that opening
/// a log knows where every group starts without listing it; the group
/// number, so that a missing group is found from the names alone.
pub fn group_dir_name(base: u64, group: u64) -> String {
    format!(
        "{base:0width$}-{group:0width$}{GROUP_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// Parses a group directory name back into its base offset and group
/// number. Only the exact form [`group_dir_name`] makes is accepted.
pub fn parse_group_dir_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(GROUP_SUFFIX)?;
    let (base, group) = stem.split_once('-')?;
    Some((parse_digits(base)?, parse_digits(group)?))
}

/// Parses a segment file name of format version 1, `{base:020}.seg`, which
/// lacked the sequence number. Such files are never used: they are only
/// recognised so that opening an old log reports the format version
/// clearly instead of taking the file for someone else's.
pub fn parse_format1_segment_file_name(name: &str) -> Option<u64> {
    parse_digits(name.strip_suffix(SEGMENT_SUFFIX)?)
}

/// Checks that `name` is a plain client name: 1 to [`MAX_CLIENT_NAME_LEN`]
/// bytes of ASCII letters, digits, `.`, `_` and `-`, not starting with `.`.
pub fn validate_client_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidClientName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_CLIENT_NAME_LEN {
        return bad("too long");
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("contains a character other than letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_round_trip_and_refuse_other_forms() {
        let a = group_dir_name(640, 1);
        assert_eq!(a, "00000000000000000640-00000000000000000001.group");
        assert_eq!(parse_group_dir_name(&a), Some((640, 1)));
        assert!(group_dir_name(9, 0) < group_dir_name(10, 1));
        assert_eq!(parse_group_dir_name(&segment_file_name(640, 1)), None);
        assert_eq!(parse_segment_file_name(&a), None);
        for bad in [
            "640-1.group",
            "00000000000000000640-00000000000000000001.grp",
            "00000000000000000640_00000000000000000001.group",
            "99999999999999999999-00000000000000000001.group",
        ] {
            assert_eq!(parse_group_dir_name(bad), None, "{bad}");
        }
        assert_eq!(group_of(SEGMENTS_PER_GROUP - 1), 0);
        assert_eq!(group_of(SEGMENTS_PER_GROUP), 1);
    }

    #[test]
    fn segment_names_sort_and_round_trip() {
        let a = segment_file_name(9, 3);
        let b = segment_file_name(10, 2);
        assert!(a < b);
        assert_eq!(a, "00000000000000000009-00000000000000000003.seg");
        assert_eq!(parse_segment_file_name(&a), Some((9, 3)));
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX, u64::MAX)),
            Some((u64::MAX, u64::MAX))
        );
        for bad in [
            "9.seg",
            "9-3.seg",
            "00000000000000000009.seg",
            "00000000000000000009-0000000000000000003.seg",
            "00000000000000000009-000000000000000000003.seg",
            "0000000000000000000x-00000000000000000003.seg",
            "00000000000000000009-00000000000000000003",
            "00000000000000000009_00000000000000000003.seg",
            "00000000000000000009-00000000000000000003-00000000000000000003.seg",
            "99999999999999999999-00000000000000000003.seg",
            "00000000000000000009-99999999999999999999.seg",
            "+0000000000000000009-00000000000000000003.seg",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn format1_names_are_recognised_apart() {
        assert_eq!(
            parse_format1_segment_file_name("00000000000000000120.seg"),
            Some(120)
        );
        assert_eq!(
            parse_format1_segment_file_name(&segment_file_name(120, 1)),
            None
        );
        assert_eq!(parse_segment_file_name("00000000000000000120.seg"), None);
        assert_eq!(parse_format1_segment_file_name("120.seg"), None);
        assert_eq!(
            parse_format1_segment_file_name("99999999999999999999.seg"),
            None
        );
    }

    #[test]
    fn client_names_are_plain_names_only() {
        for ok in [
            "a",
            "billing",
            "billing-v2",
            "a.b_c",
            &"x".repeat(MAX_CLIENT_NAME_LEN),
        ] {
            assert!(validate_client_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "a\0b",
            ".hidden",
            "..",
            "é",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(validate_client_name(bad).is_err(), "{bad:?}");
        }
    }
}
