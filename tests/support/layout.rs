//! Where a log's files lie on disk (format version 3), for tests that look
//! at, damage or move segment files by hand.
//!
//! Segment files `BASE-SEQ.seg` live in group directories
//! `GBASE-GROUP.group` of the log directory (segment `seq` in group
//! `seq / 64`, `GBASE` the base offset of the first segment placed in the
//! group). Spare and recycled segment files (`*.tmp`) lie in the log
//! directory itself.
//!
//! Include it with
//!
//! ```ignore
//! #[path = "support/layout.rs"]
//! mod layout;
//! ```
//!
//! Only `std` and durq's public name functions: the helpers read the real
//! file system, never through durq's storage seam, so what they report is
//! what is on disk whatever the engine believes.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use durq::names;

/// A group directory of a log, as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Group {
    /// The group number (its segments are numbered `64 × number ..`).
    pub number: u64,
    /// The base offset in its name.
    pub base: u64,
    /// The directory.
    pub path: PathBuf,
}

/// Every group directory of the log in `dir`, by group number.
pub fn groups(dir: &Path) -> Vec<Group> {
    let mut v: Vec<Group> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let (base, number) = names::parse_group_dir_name(p.file_name()?.to_str()?)?;
            Some(Group {
                number,
                base,
                path: p,
            })
        })
        .collect();
    v.sort();
    v
}

/// The group numbers present in `dir`, ascending.
pub fn group_numbers(dir: &Path) -> Vec<u64> {
    groups(dir).into_iter().map(|g| g.number).collect()
}

/// The group directory of `dir` with number `number`; panics if there is
/// none (or more than one).
pub fn group(dir: &Path, number: u64) -> Group {
    let found: Vec<Group> = groups(dir)
        .into_iter()
        .filter(|g| g.number == number)
        .collect();
    match &found[..] {
        [one] => one.clone(),
        _ => panic!(
            "{} groups numbered {number} in {}",
            found.len(),
            dir.display()
        ),
    }
}

/// The segment files directly in the directory `group`, by base offset.
pub fn segments_in(group: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, u64, PathBuf)> = fs::read_dir(group)
        .unwrap_or_else(|e| panic!("list {}: {e}", group.display()))
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let (base, seq) = names::parse_segment_file_name(p.file_name()?.to_str()?)?;
            Some((base, seq, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, p)| p).collect()
}

/// Every segment file of the log in `dir`, in every group, by base offset
/// (then sequence number). Segment-named files lying directly in `dir`
/// (the format-2 layout) are not included.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, u64, PathBuf)> = groups(dir)
        .iter()
        .flat_map(|g| segments_in(&g.path))
        .map(|p| {
            let (base, seq) = parse(&p);
            (base, seq, p)
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, p)| p).collect()
}

/// The base offset and sequence number in a segment file's name.
pub fn parse(seg: &Path) -> (u64, u64) {
    let name = seg.file_name().and_then(|n| n.to_str()).unwrap_or("");
    names::parse_segment_file_name(name)
        .unwrap_or_else(|| panic!("not a segment file name: {}", seg.display()))
}

/// The base offset in a segment file's name (`BASE-SEQ.seg`).
pub fn base_of(seg: &Path) -> u64 {
    parse(seg).0
}

/// The sequence number in a segment file's name (`BASE-SEQ.seg`).
pub fn seq_of(seg: &Path) -> u64 {
    parse(seg).1
}

/// The existing file of segment `base`/`seq` of the log in `dir`, in
/// whichever group holds it; panics if there is none.
pub fn segment_path(dir: &Path, base: u64, seq: u64) -> PathBuf {
    let name = names::segment_file_name(base, seq);
    let found: Vec<PathBuf> = groups(dir)
        .into_iter()
        .map(|g| g.path.join(&name))
        .filter(|p| p.is_file())
        .collect();
    match &found[..] {
        [one] => one.clone(),
        _ => panic!("{} files named {name} in {}", found.len(), dir.display()),
    }
}

/// Where segment `base`/`seq` lies (or would lie) when its group's name
/// carries `group_base`: a pure path computation, for storages other than
/// the real file system (the first segment of a log is
/// `expected_path(dir, 0, 0, 0)`).
pub fn expected_path(dir: &Path, group_base: u64, base: u64, seq: u64) -> PathBuf {
    dir.join(names::group_dir_name(group_base, names::group_of(seq)))
        .join(names::segment_file_name(base, seq))
}

/// The group directory holding segment file `seg`.
pub fn group_of_file(seg: &Path) -> &Path {
    seg.parent().expect("a segment file lies in a group")
}

/// The names of the entries of `dir` (not recursive), sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
