//! Where segment files live: numbered group directories.
//!
//! Segment number `seq` lives in group `seq / 64`
//! ([`names::SEGMENTS_PER_GROUP`]), a directory of the log directory named
//! `{base:020}-{group:020}.group` after the base offset of the first segment
//! placed in it ([`names::group_dir_name`]). Opening a log lists the log
//! directory (one entry per 64 segments) and only the first and last groups,
//! so its cost grows with the tail, not with the log. A group between them
//! is listed, and its names checked, when something first needs one of its
//! segments.
//!
//! The rules every group obeys, checked wherever a group is listed:
//!
//! * its segments' numbers are consecutive and all belong to the group;
//! * every group but the first of the log starts with its first possible
//!   segment (`64 × group`), whose base offset is the one in the group's
//!   name;
//! * every group but the last of the log is full (ends with segment
//!   `64 × group + 63`);
//! * groups' numbers are consecutive and their base offsets increase.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::names::{self, SEGMENTS_PER_GROUP};
use crate::storage::Storage;

/// A group directory, as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Group {
    /// Base offset of the first segment placed in the group.
    pub base: u64,
    /// The group number: its segments are numbered `64 × number ..`.
    pub number: u64,
    /// The directory.
    pub path: PathBuf,
}

impl Group {
    /// The group of the log directory `dir` named by `base` and `number`.
    pub(crate) fn new(dir: &Path, base: u64, number: u64) -> Group {
        Group {
            base,
            number,
            path: dir.join(names::group_dir_name(base, number)),
        }
    }

    /// The number of the first segment the group can hold.
    pub(crate) fn first_seq(&self) -> u64 {
        self.number.saturating_mul(SEGMENTS_PER_GROUP)
    }

    /// The number of the last segment the group can hold.
    pub(crate) fn last_seq(&self) -> u64 {
        self.first_seq().saturating_add(SEGMENTS_PER_GROUP - 1)
    }

    /// The path of segment `base`/`seq` in this group.
    pub(crate) fn segment_path(&self, base: u64, seq: u64) -> PathBuf {
        self.path.join(names::segment_file_name(base, seq))
    }
}

/// The group directory holding the segment file at `path`.
pub(crate) fn group_dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

/// A segment file found in a listing: base offset, number, path.
pub(crate) type Listed = (u64, u64, PathBuf);

/// What the log directory's own listing holds, by kind, each list sorted.
#[derive(Debug, Default)]
pub(crate) struct LogDir {
    /// Every entry's name, as listed.
    pub names: Vec<String>,
    /// Group directories.
    pub groups: Vec<Group>,
    /// Segment files lying directly in the log directory, where format
    /// version 2 kept them.
    pub flat: Vec<Listed>,
    /// Files named as format version 1 named segments (`BASE.seg`).
    pub format1: Vec<PathBuf>,
    /// Temporary files (`*.tmp`).
    pub temps: Vec<PathBuf>,
    /// Entries durq does not know (not its lock, hint, clients or salvage
    /// directory).
    pub unknown: Vec<PathBuf>,
    /// Whether the lock file exists.
    pub has_lock_file: bool,
    /// Whether the salvage directory exists.
    pub has_salvage: bool,
}

impl LogDir {
    /// The segment files of older formats (1 and 2), sorted.
    pub(crate) fn old_format(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.format1.clone();
        v.extend(self.flat.iter().map(|(_, _, p)| p.clone()));
        v.sort();
        v
    }
}

/// Lists the log directory `dir` and sorts its entries by kind.
pub(crate) fn list_log_dir(storage: &dyn Storage, dir: &Path) -> Result<LogDir> {
    let names_in_dir = storage
        .list_dir(dir)
        .map_err(|e| Error::io("list", dir, e))?;
    let mut out = LogDir::default();
    for name in &names_in_dir {
        if let Some((base, number)) = names::parse_group_dir_name(name) {
            out.groups.push(Group::new(dir, base, number));
        } else if let Some((base, seq)) = names::parse_segment_file_name(name) {
            out.flat.push((base, seq, dir.join(name)));
        } else if names::parse_format1_segment_file_name(name).is_some() {
            out.format1.push(dir.join(name));
        } else if name.ends_with(names::TEMP_SUFFIX) {
            out.temps.push(dir.join(name));
        } else if name == names::LOCK_FILE {
            out.has_lock_file = true;
        } else if name == names::SALVAGE_DIR {
            out.has_salvage = true;
        } else if name != names::CLIENTS_DIR && name != names::END_HINT_FILE {
            out.unknown.push(dir.join(name));
        }
    }
    out.names = names_in_dir;
    out.groups.sort_unstable();
    out.flat.sort_unstable();
    out.format1.sort();
    out.temps.sort();
    out.unknown.sort();
    Ok(out)
}

/// What listing one group found.
#[derive(Debug, Default)]
pub(crate) struct GroupListing {
    /// Segment files, by base offset.
    pub segments: Vec<Listed>,
    /// Every other entry.
    pub others: Vec<PathBuf>,
}

/// Lists a group directory.
pub(crate) fn list_group(storage: &dyn Storage, group: &Group) -> Result<GroupListing> {
    let names = storage
        .list_dir(&group.path)
        .map_err(|e| Error::io("list", &group.path, e))?;
    let mut out = GroupListing::default();
    for name in names {
        match names::parse_segment_file_name(&name) {
            Some((base, seq)) => out.segments.push((base, seq, group.path.join(&name))),
            None => out.others.push(group.path.join(&name)),
        }
    }
    out.segments.sort_unstable();
    out.others.sort();
    Ok(out)
}

/// Checks that segments (sorted by base offset, or by number) are
/// numbered consecutively and start at increasing offsets; a gap is an
/// [`Error::MissingSegment`] in `dir`.
pub(crate) fn check_consecutive(dir: &Path, segs: &[Listed]) -> Result<()> {
    for pair in segs.windows(2) {
        let (prev_base, prev_seq, prev_path) = &pair[0];
        let (base, seq, path) = &pair[1];
        if base == prev_base {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "two segment files have base offset {base}: this one and {}",
                    prev_path.display()
                ),
            ));
        }
        if base < prev_base {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "starts at offset {base}, not after the segment before it ({}, at \
                     {prev_base})",
                    prev_path.display()
                ),
            ));
        }
        if *seq != prev_seq.wrapping_add(1) {
            return Err(Error::MissingSegment {
                dir: dir.to_owned(),
                after: prev_path.clone(),
                after_base: *prev_base,
                expected_seq: prev_seq.wrapping_add(1),
                found: path.clone(),
                found_seq: *seq,
            });
        }
    }
    Ok(())
}

/// Checks one group's segments against the rules of the module
/// documentation. `starts` says the group must begin with its first
/// possible segment (every group but the log's first), `full` that it must
/// end with its last (every group but the log's last); `next_base`, the
/// base offset of whatever follows the group, which its segments must
/// start below.
pub(crate) fn check_group(
    group: &Group,
    segs: &[Listed],
    starts: bool,
    full: bool,
    next_base: Option<u64>,
) -> Result<()> {
    for (base, seq, path) in segs {
        if names::group_of(*seq) != group.number {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "segment number {seq} belongs in group {}, not in group {} ({})",
                    names::group_of(*seq),
                    group.number,
                    group.path.display()
                ),
            ));
        }
        if *base < group.base {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "segment starts at offset {base}, before its group's first offset {}",
                    group.base
                ),
            ));
        }
    }
    check_consecutive(&group.path, segs)?;
    if let (Some((base, _, path)), Some(next_base)) = (segs.last(), next_base)
        && *base >= next_base
    {
        return Err(Error::corrupt(
            path,
            0,
            format!("segment starts at offset {base}, not below the next group's {next_base}"),
        ));
    }
    if starts {
        match segs.first() {
            Some((_, seq, path)) if *seq != group.first_seq() => {
                return Err(Error::MissingSegment {
                    dir: group.path.clone(),
                    after: group.path.clone(),
                    after_base: group.base,
                    expected_seq: group.first_seq(),
                    found: path.clone(),
                    found_seq: *seq,
                });
            }
            Some((base, _, path)) if *base != group.base => {
                return Err(Error::corrupt(
                    path,
                    0,
                    format!(
                        "the first segment of group {} starts at offset {base}, but the group's \
                         name says {}",
                        group.number, group.base
                    ),
                ));
            }
            _ => {}
        }
    }
    if full {
        let (after, after_base, last_seq) = match segs.last() {
            Some((base, seq, path)) => (path.clone(), *base, Some(*seq)),
            None => (group.path.clone(), group.base, None),
        };
        if last_seq != Some(group.last_seq()) {
            let expected_seq = last_seq.map_or(group.first_seq(), |s| s.wrapping_add(1));
            return Err(Error::MissingSegment {
                dir: group.path.clone(),
                after,
                after_base,
                expected_seq,
                found: group.path.clone(),
                found_seq: group.last_seq().wrapping_add(1),
            });
        }
    }
    Ok(())
}

/// Lists a group between the log's first and last, which must be full,
/// and checks it; `next_base` is the base offset of whatever follows it.
pub(crate) fn list_middle_group(
    storage: &dyn Storage,
    group: &Group,
    next_base: u64,
) -> Result<Vec<Listed>> {
    let listing = list_group(storage, group)?;
    check_group(group, &listing.segments, true, true, Some(next_base))?;
    Ok(listing.segments)
}

/// Checks that the groups (sorted by base offset) are numbered
/// consecutively and have distinct base offsets.
pub(crate) fn check_group_sequence(dir: &Path, groups: &[Group]) -> Result<()> {
    for pair in groups.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        if next.base == prev.base {
            return Err(Error::corrupt(
                &next.path,
                0,
                format!(
                    "two segment groups have base offset {}: this one and {}",
                    next.base,
                    prev.path.display()
                ),
            ));
        }
        if next.number != prev.number.wrapping_add(1) {
            return Err(Error::MissingSegment {
                dir: dir.to_owned(),
                after: prev.path.clone(),
                after_base: prev.base,
                expected_seq: prev.last_seq().wrapping_add(1),
                found: next.path.clone(),
                found_seq: next.first_seq(),
            });
        }
    }
    Ok(())
}
