//! Converting a log of format version 2 into version 3, in place
//! (`durq upgrade DIR`).
//!
//! Version 2 kept segment files (`BASE-SEQ.seg`) directly in the log
//! directory; version 3 keeps them in group directories
//! (`GBASE-GROUP.group/BASE-SEQ.seg`, see the `layout` module). A segment's
//! bytes are the same in both versions except its header's version field
//! (bytes 8..12) and header CRC (bytes 60..64). Records, client cursor
//! files, `durq.end` and `durq.lock` are the same.
//!
//! # What is checked first
//!
//! Before changing anything, under the log's lock: the directory holds
//! segment files of format 2 (no file named as format 1 named them); their
//! sequence numbers, from the names, are consecutive and their base offsets
//! increase; every header is readable, says version 2, passes its CRC and
//! names the base offset, sequence number and length of its file. Records
//! are *not* checked: they are copied byte for byte, and damage in them is
//! found afterwards by `durq verify` and handled by `durq recover` on the
//! converted log, exactly as before the conversion.
//!
//! # Crash safety
//!
//! The only copy of a segment is never rewritten. For each segment, oldest
//! first:
//!
//! 1. its group directory is made if missing, and the log directory synced
//!    (once per group and run, also for a group an earlier run made);
//! 2. a temporary file (`upgrade-PID-N.tmp`) in the log directory receives a
//!    copy of the segment, in chunks of [`COPY_CHUNK`] bytes, with the
//!    header's version set to 3 and its CRC recomputed, and is synced;
//! 3. it is renamed into the group as `BASE-SEQ.seg`, and the group synced;
//! 4. only then is the original in the log directory removed, and the log
//!    directory synced.
//!
//! So at every moment each segment is durably in its old place, or durably
//! (data, name and group name each confirmed by a sync that returned) in its
//! new one, or both. Power loss at any point leaves one of the states an
//! interrupted run can leave: the segments before some point in their
//! groups, those after it in the log directory, at most the one at that
//! point in both (its group copy complete or not), and temporary files.
//! Opening the log refuses that state with an [`Error::InvalidArgument`]
//! saying that an upgrade was interrupted and to run it again (`durq
//! recover` refuses it too); running the upgrade again finishes the job: a
//! group copy identical to its original (apart from the header's version and
//! CRC) is synced and the original removed, any other group copy is replaced
//! from the original, temporary files are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::{self, Group};
use crate::names;
use crate::record::{self, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::recovery;
use crate::segment;
use crate::storage::{OpenMode, Storage, StorageFile};

/// The format version this module converts from.
pub const FROM_VERSION: u32 = 2;

/// The format version this module converts to (the current one).
pub const TO_VERSION: u32 = record::FORMAT_VERSION;

/// How many bytes of a segment are read, and written, at a time: a
/// conversion never holds a whole segment (up to 1 GiB) in memory.
pub const COPY_CHUNK: usize = 1 << 20;

/// What an upgrade did (or, for [`check`], would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpgradeReport {
    /// The log directory.
    pub dir: PathBuf,
    /// Whether this only looked ([`check`]) and changed nothing.
    pub dry_run: bool,
    /// The directory already held a log of the current format (segment
    /// groups, no segment file directly in it): there was nothing to do.
    pub already_current: bool,
    /// An earlier upgrade of this log was interrupted (the directory held
    /// both segment groups and format-2 segment files); this run finishes it.
    pub resumed: bool,
    /// Segments in the log.
    pub segments: usize,
    /// Group directories the converted log has.
    pub groups: usize,
    /// The base offset of the log's first segment (its first retained
    /// offset); 0 when [`UpgradeReport::already_current`].
    pub first_offset: u64,
    /// Segments copied into their group by this run (or that would be),
    /// counting [`UpgradeReport::replaced_copies`].
    pub converted: usize,
    /// Bytes of those segments.
    pub bytes_copied: u64,
    /// Segments an interrupted earlier run had already moved into their
    /// group (their original was already removed).
    pub already_converted: usize,
    /// Group copies an interrupted earlier run left complete beside their
    /// original: the original was removed (after syncing the copy).
    pub completed_copies: Vec<PathBuf>,
    /// Group copies an interrupted earlier run left that did not match
    /// their original: replaced by a new copy of the original.
    pub replaced_copies: Vec<PathBuf>,
    /// Group directories made.
    pub groups_created: Vec<PathBuf>,
    /// Leftover temporary files (`*.tmp`) in the log directory that were
    /// removed: an interrupted run's unfinished copies, or the spare
    /// segments of the format-2 writer. Nothing refers to them.
    pub removed_temp_files: Vec<PathBuf>,
}

/// What to do with one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Only in its group: an earlier run converted it.
    Done,
    /// Only in the log directory: copy it into its group.
    Copy,
    /// In both places, the group copy complete: remove the original.
    RemoveOriginal,
    /// In both places, the group copy not matching (or not compared, in a
    /// quick look): replace it from the original.
    Replace,
}

/// One segment of the log being converted.
#[derive(Debug, Clone)]
struct Seg {
    base: u64,
    seq: u64,
    /// The format-2 file in the log directory, if it is still there.
    flat: Option<PathBuf>,
    /// Its file size (from the format-2 original; 0 if there is none).
    len: u64,
    /// Where it goes (and may already be).
    dest: PathBuf,
    /// Its group number.
    group: u64,
    action: Action,
}

/// What a look at the directory found, and what converting it takes.
#[derive(Debug)]
struct Plan {
    already_current: bool,
    resumed: bool,
    temps: Vec<PathBuf>,
    segs: Vec<Seg>,
    /// The groups of the converted log, by number, and whether each exists.
    groups: BTreeMap<u64, (Group, bool)>,
}

/// Converts the format-2 log in `dir` into the current format, in place,
/// under its lock. See the module documentation for what is checked and
/// why a crash at any point loses nothing; running it again after an
/// interruption finishes the job. A log already of the current format is
/// reported as such ([`UpgradeReport::already_current`]) and left alone.
///
/// Errors: [`Error::Locked`] if another handle holds the log;
/// [`Error::InvalidArgument`] for a directory that is not a durq log or
/// holds segments of format 1; [`Error::MissingSegment`],
/// [`Error::Corrupt`], [`Error::NotDurq`] or [`Error::UnsupportedVersion`]
/// naming the file when the format-2 log is not sound enough to convert.
/// Those are found before anything is changed. An I/O error during the
/// conversion stops it where it is: what was done is safe, and running the
/// upgrade again finishes it.
pub fn upgrade(storage: &dyn Storage, dir: &Path) -> Result<UpgradeReport> {
    upgrade_with_progress(storage, dir, &mut |_| {})
}

/// [`upgrade`], calling `progress` with the number of bytes of each chunk
/// copied (for a progress bar; [`check`] says how many there will be).
pub fn upgrade_with_progress(
    storage: &dyn Storage,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<UpgradeReport> {
    let lock_path = dir.join(names::LOCK_FILE);
    if !storage.exists(&lock_path) {
        // Locking creates the lock file: refuse what is not a format-2 log
        // before creating anything. (An upgrade always leaves the lock
        // file: a directory without one was never touched by an upgrade.)
        let first = plan(storage, dir, true)?;
        if first.already_current {
            return Ok(report(dir, &first, false));
        }
    }
    let _lock = match storage.try_lock(&lock_path) {
        Ok(guard) => guard,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            // A log of the current format open by a writer is reported as
            // such: its open made its directory durable.
            return match plan(storage, dir, false) {
                Ok(p) if p.already_current => Ok(report(dir, &p, false)),
                _ => Err(Error::Locked {
                    dir: dir.to_owned(),
                }),
            };
        }
        Err(e) => return Err(Error::io("lock", &lock_path, e)),
    };
    let plan = plan(storage, dir, true)?;
    let mut out = report(dir, &plan, false);
    out.groups_created.clear();
    if plan.already_current {
        // An earlier run may have removed the last format-2 original and
        // been killed before syncing the directory: the removal would then
        // be only in the page cache. Success means it is on disk.
        sync_dir(storage, dir)?;
        return Ok(out);
    }
    if !plan.temps.is_empty() {
        for t in &plan.temps {
            storage
                .remove_file(t)
                .map_err(|e| Error::io("remove leftover", t, e))?;
        }
        sync_dir(storage, dir)?;
    }
    // Groups whose entry in the log directory this run has made durable.
    let mut ready: BTreeSet<u64> = BTreeSet::new();
    for seg in &plan.segs {
        let Some(flat) = &seg.flat else {
            continue;
        };
        let (group, _) = &plan.groups[&seg.group];
        if ready.insert(group.number) {
            let created = storage
                .create_dir_all(&group.path)
                .map_err(|e| Error::io("create segment group", &group.path, e))?;
            if created {
                out.groups_created.push(group.path.clone());
            }
            // Also for a group an earlier run made: its entry may not have
            // reached the disk if that run was killed before syncing it.
            sync_dir(storage, dir)?;
        }
        match seg.action {
            Action::Done => {}
            Action::Copy | Action::Replace => {
                let tmp = segment::temp_path(dir, "upgrade");
                if let Err(e) = copy_converted(storage, flat, seg, &tmp, progress) {
                    let _ = storage.remove_file(&tmp);
                    return Err(e);
                }
                storage
                    .rename(&tmp, &seg.dest)
                    .map_err(|e| Error::io("rename into its group", &tmp, e))?;
                sync_dir(storage, &group.path)?;
            }
            Action::RemoveOriginal => {
                // The copy an earlier run made may be only in the page
                // cache (that run was killed): make it durable first.
                let file = storage
                    .open_file(&seg.dest, OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open for sync", &seg.dest, e))?;
                file.sync_all()
                    .map_err(|e| Error::io("sync", &seg.dest, e))?;
                drop(file);
                sync_dir(storage, &group.path)?;
            }
        }
        storage
            .remove_file(flat)
            .map_err(|e| Error::io("remove the format-2 original", flat, e))?;
        sync_dir(storage, dir)?;
    }
    Ok(out)
}

/// What [`upgrade`] would do, changing nothing (no lock is taken, no file
/// created). Refuses what `upgrade` refuses, with the same errors, except
/// that the log being locked is not checked.
pub fn check(storage: &dyn Storage, dir: &Path) -> Result<UpgradeReport> {
    let plan = plan(storage, dir, true)?;
    Ok(report(dir, &plan, true))
}

/// If `dir` holds what an interrupted upgrade leaves (segment groups and
/// format-2 segment files directly in the log directory, in the shape
/// [`upgrade`] finishes), the error opening it gives: it says so and how
/// to finish. `None` otherwise (also when `listing`, the directory's
/// entries, holds no group or no format-2 segment name). Reads only
/// directory listings and format-2 headers; changes nothing.
pub(crate) fn interrupted_error(
    storage: &dyn Storage,
    dir: &Path,
    listing: &[String],
) -> Option<Error> {
    let has = |f: fn(&str) -> bool| listing.iter().any(|n| f(n));
    if !has(|n| names::parse_group_dir_name(n).is_some())
        || !has(|n| names::parse_segment_file_name(n).is_some())
    {
        return None;
    }
    let plan = plan(storage, dir, false).ok()?;
    if !plan.resumed {
        return None;
    }
    let flat: Vec<&Seg> = plan.segs.iter().filter(|s| s.flat.is_some()).collect();
    let (first, last) = (flat.first()?, flat.last()?);
    Some(Error::InvalidArgument(format!(
        "an upgrade of the log in {dir} from format version {FROM_VERSION} to {TO_VERSION} was \
         interrupted: segments {first_seq}..={last_seq} (such as {example}) still lie directly \
         in the log directory as format {FROM_VERSION}, the others are in their group \
         directories. Nothing is lost, but the log cannot be opened until the upgrade is \
         finished: run `durq upgrade {dir}` again",
        dir = dir.display(),
        first_seq = first.seq,
        last_seq = last.seq,
        example = first.flat.as_deref().unwrap_or(dir).display(),
    )))
}

fn report(dir: &Path, plan: &Plan, dry_run: bool) -> UpgradeReport {
    let mut r = UpgradeReport {
        dir: dir.to_owned(),
        dry_run,
        already_current: plan.already_current,
        resumed: plan.resumed,
        segments: plan.segs.len(),
        groups: plan.groups.len(),
        first_offset: plan.segs.first().map_or(0, |s| s.base),
        removed_temp_files: plan.temps.clone(),
        ..UpgradeReport::default()
    };
    for s in &plan.segs {
        match s.action {
            Action::Done => r.already_converted += 1,
            Action::Copy => {}
            Action::RemoveOriginal => r.completed_copies.push(s.dest.clone()),
            Action::Replace => r.replaced_copies.push(s.dest.clone()),
        }
        if matches!(s.action, Action::Copy | Action::Replace) {
            r.converted += 1;
            r.bytes_copied += s.len;
        }
    }
    r.groups_created = plan
        .groups
        .values()
        .filter(|(_, exists)| !exists)
        .map(|(g, _)| g.path.clone())
        .collect();
    r
}

fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// Looks at the directory: what it holds, whether it can be converted, and
/// what converting it takes. With `compare`, a segment found in both places
/// has its group copy compared with its original; otherwise it is planned
/// for replacement. Changes nothing.
fn plan(storage: &dyn Storage, dir: &Path, compare: bool) -> Result<Plan> {
    if !storage.is_dir(dir) {
        return Err(Error::InvalidArgument(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let listing = layout::list_log_dir(storage, dir)?;
    let (mut flat, format1, group_dirs, temps) =
        (listing.flat, listing.format1, listing.groups, listing.temps);
    if let Some(old) = format1.first() {
        let why = recovery::old_format_error(storage, old);
        return Err(Error::InvalidArgument(format!(
            "{} holds segment files named as format version 1 named them, such as {} ({why}); \
             `durq upgrade` converts logs of format version {FROM_VERSION} only: read this log \
             with the durq release that wrote it",
            dir.display(),
            old.display()
        )));
    }
    if flat.is_empty() {
        if group_dirs.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a durq log: it holds no segment file (a log of format version \
                 {FROM_VERSION} keeps its segments, BASE-SEQ.seg, directly in its directory)",
                dir.display()
            )));
        }
        return Ok(Plan {
            already_current: true,
            resumed: false,
            temps: Vec::new(),
            segs: Vec::new(),
            groups: BTreeMap::new(),
        });
    }

    // The format-2 segments: consecutive numbers, increasing bases, sound
    // headers.
    flat.sort_unstable_by_key(|(base, seq, _)| (*seq, *base));
    layout::check_consecutive(dir, &flat)?;
    let mut lens = Vec::with_capacity(flat.len());
    for (base, seq, path) in &flat {
        let file = storage
            .open_file(path, OpenMode::Read)
            .map_err(|e| Error::io("open segment", path, e))?;
        let (_, len) = read_v2_header(storage, &*file, path, *base, *seq)?;
        lens.push(len);
    }

    // What groups already hold: only an interrupted upgrade makes groups
    // beside format-2 segments.
    let mut grouped: Vec<(u64, u64, PathBuf)> = Vec::new();
    for g in &group_dirs {
        let listing = layout::list_group(storage, g)?;
        if let Some(other) = listing.others.first() {
            return Err(Error::corrupt(
                other,
                0,
                format!(
                    "segment group {} of a log being upgraded holds a file that is not a \
                     segment; durq did not put it there: move it out, then run the upgrade again",
                    g.path.display()
                ),
            ));
        }
        for (base, seq, path) in listing.segments {
            if names::group_of(seq) != g.number {
                return Err(not_upgrade_shape(
                    dir,
                    &path,
                    "a segment lies in a group it does not belong to",
                ));
            }
            grouped.push((base, seq, path));
        }
    }
    grouped.sort_unstable_by_key(|(base, seq, _)| (*seq, *base));
    let (f0, f_base) = (flat[0].1, flat[0].0);
    if let (Some(first), Some(last)) = (grouped.first(), grouped.last()) {
        layout::check_consecutive(dir, &grouped)
            .map_err(|e| not_upgrade_shape(dir, &first.2, &e.to_string()))?;
        // An interrupted upgrade converted a prefix of the segments; the
        // segment it was working on may be in both places.
        if !(f0 == last.1 || f0 == last.1.wrapping_add(1)) {
            return Err(not_upgrade_shape(
                dir,
                &first.2,
                &format!(
                    "its groups hold segments {}..={}, its log directory segments {}..={}; an \
                     upgrade converts them oldest first",
                    first.1,
                    last.1,
                    f0,
                    flat[flat.len() - 1].1
                ),
            ));
        }
        if f0 == last.1 && f_base != last.0 {
            return Err(not_upgrade_shape(
                dir,
                &last.2,
                &format!(
                    "segment number {f0} starts at offset {} in its group and at offset \
                     {f_base} in the log directory",
                    last.0
                ),
            ));
        }
        if f0 == last.1.wrapping_add(1) && f_base <= last.0 {
            return Err(Error::corrupt(
                &flat[0].2,
                0,
                format!(
                    "starts at offset {f_base}, not after the segment before it ({})",
                    last.0
                ),
            ));
        }
    }

    // The segments in order, each with where it goes.
    let mut segs: Vec<Seg> = Vec::with_capacity(grouped.len() + flat.len());
    for (base, seq, _) in grouped.iter().filter(|(_, seq, _)| *seq < f0) {
        segs.push(Seg {
            base: *base,
            seq: *seq,
            flat: None,
            len: 0,
            dest: PathBuf::new(),
            group: names::group_of(*seq),
            action: Action::Done,
        });
    }
    for ((base, seq, path), len) in flat.iter().zip(lens) {
        segs.push(Seg {
            base: *base,
            seq: *seq,
            flat: Some(path.clone()),
            len,
            dest: PathBuf::new(),
            group: names::group_of(*seq),
            action: Action::Copy,
        });
    }
    // Group names: the base offset of the first segment placed in each.
    let mut groups: BTreeMap<u64, (Group, bool)> = BTreeMap::new();
    for s in &mut segs {
        let (g, _) = groups
            .entry(s.group)
            .or_insert_with(|| (Group::new(dir, s.base, s.group), false));
        s.dest = g.segment_path(s.base, s.seq);
    }
    for g in &group_dirs {
        match groups.get_mut(&g.number) {
            Some((expected, exists)) if expected.base == g.base && !*exists => *exists = true,
            _ => {
                return Err(not_upgrade_shape(
                    dir,
                    &g.path,
                    &format!(
                        "this group directory is not one the upgrade makes (the converted log's \
                         groups are {})",
                        describe_groups(&groups)
                    ),
                ));
            }
        }
    }
    // The segments are consecutive from the first: index by number.
    let first_seq = segs[0].seq;
    for (base, seq, path) in &grouped {
        let s = &mut segs[(seq - first_seq) as usize];
        debug_assert_eq!(s.seq, *seq);
        if s.base != *base || s.dest != *path {
            return Err(not_upgrade_shape(
                dir,
                path,
                &format!("it should be {}", s.dest.display()),
            ));
        }
        if let Some(flat_path) = &s.flat {
            s.action = if compare && copy_is_complete(storage, flat_path, path, s.len)? {
                Action::RemoveOriginal
            } else {
                Action::Replace
            };
        }
    }
    Ok(Plan {
        already_current: false,
        resumed: !group_dirs.is_empty(),
        temps,
        segs,
        groups,
    })
}

fn describe_groups(groups: &BTreeMap<u64, (Group, bool)>) -> String {
    let names: Vec<String> = groups
        .values()
        .map(|(g, _)| names::group_dir_name(g.base, g.number))
        .collect();
    match names.len() {
        0..=3 => names.join(", "),
        n => format!("{}, ... ({n} in all), {}", names[0], names[n - 1]),
    }
}

/// The error for a directory holding both groups and format-2 segments in
/// a shape an interrupted upgrade does not leave.
fn not_upgrade_shape(dir: &Path, path: &Path, why: &str) -> Error {
    Error::corrupt(
        path,
        0,
        format!(
            "{} holds both segment groups and format-{FROM_VERSION} segment files, but not as \
             an interrupted upgrade leaves them ({why}); refusing to guess: nothing was changed",
            dir.display()
        ),
    )
}

/// Reads and checks the header of the format-2 segment `file` (at `path`,
/// whose name says `base` and `seq`); returns it converted to the current
/// format, and the file's length.
fn read_v2_header(
    storage: &dyn Storage,
    file: &dyn StorageFile,
    path: &Path,
    base: u64,
    seq: u64,
) -> Result<([u8; SEGMENT_HEADER_LEN], u64)> {
    let len = file.len().map_err(|e| Error::io("stat segment", path, e))?;
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    if len < SEGMENT_HEADER_LEN as u64 {
        return Err(Error::NotDurq {
            path: path.to_owned(),
            reason: "file is shorter than a segment header".into(),
        });
    }
    file.read_at(&mut h, 0)
        .map_err(|e| Error::io("read segment header", path, e))?;
    let converted = convert_header(storage, path, &h)?;
    let decoded =
        SegmentHeader::decode(&converted).map_err(|bad| recovery::header_error(path, bad))?;
    recovery::check_header_fields(&decoded, len, path, base, seq)?;
    Ok((converted, len))
}

/// The current-format header for the format-2 header `h` of the file at
/// `path`: the version set to 3 and the CRC recomputed, after checking the
/// magic, the version (2) and the old CRC.
fn convert_header(
    storage: &dyn Storage,
    path: &Path,
    h: &[u8; SEGMENT_HEADER_LEN],
) -> Result<[u8; SEGMENT_HEADER_LEN]> {
    if h[0..8] != record::SEGMENT_MAGIC {
        return Err(Error::NotDurq {
            path: path.to_owned(),
            reason: "bad segment magic".into(),
        });
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != FROM_VERSION {
        // Version 1, a future version, or a current header lying where
        // format 2 kept segments: the open-time error says which.
        return Err(recovery::old_format_error(storage, path));
    }
    let stored = u32::from_le_bytes([h[60], h[61], h[62], h[63]]);
    if crc32fast::hash(&h[0..60]) != stored {
        return Err(Error::corrupt(
            path,
            60,
            "segment header checksum mismatch (format version 2 header)",
        ));
    }
    let mut out = *h;
    out[8..12].copy_from_slice(&TO_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&out[0..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Copies the format-2 segment at `flat` into a new file at `tmp`, with its
/// header converted, chunk by chunk, and syncs the copy.
fn copy_converted(
    storage: &dyn Storage,
    flat: &Path,
    seg: &Seg,
    tmp: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let src = storage
        .open_file(flat, OpenMode::Read)
        .map_err(|e| Error::io("open segment", flat, e))?;
    // Checked again: the header is what the copy's header is made from.
    let (header, len) = read_v2_header(storage, &*src, flat, seg.base, seg.seq)?;
    let dst = storage
        .open_file(tmp, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", tmp, e))?;
    let mut buf = vec![0u8; COPY_CHUNK.min(len as usize)];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..n];
        src.read_at(chunk, pos)
            .map_err(|e| Error::io("read segment", flat, e))?;
        if pos == 0 {
            chunk[..SEGMENT_HEADER_LEN].copy_from_slice(&header);
        }
        dst.write_at(chunk, pos)
            .map_err(|e| Error::io("write", tmp, e))?;
        pos += n as u64;
        progress(n as u64);
    }
    dst.sync_all().map_err(|e| Error::io("sync", tmp, e))
}

/// Whether the group copy at `copy` holds exactly the format-2 segment at
/// `flat` (`len` bytes) with its header converted. Compared chunk by chunk.
fn copy_is_complete(storage: &dyn Storage, flat: &Path, copy: &Path, len: u64) -> Result<bool> {
    let src = storage
        .open_file(flat, OpenMode::Read)
        .map_err(|e| Error::io("open segment", flat, e))?;
    let dst = storage
        .open_file(copy, OpenMode::Read)
        .map_err(|e| Error::io("open segment", copy, e))?;
    let dst_len = dst.len().map_err(|e| Error::io("stat segment", copy, e))?;
    if dst_len != len {
        return Ok(false);
    }
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    src.read_at(&mut header, 0)
        .map_err(|e| Error::io("read segment header", flat, e))?;
    let header = convert_header(storage, flat, &header)?;
    let chunk = COPY_CHUNK.min(len as usize);
    let (mut a, mut b) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(chunk as u64) as usize;
        src.read_at(&mut a[..n], pos)
            .map_err(|e| Error::io("read segment", flat, e))?;
        dst.read_at(&mut b[..n], pos)
            .map_err(|e| Error::io("read segment", copy, e))?;
        if pos == 0 {
            a[..SEGMENT_HEADER_LEN].copy_from_slice(&header);
        }
        if a[..n] != b[..n] {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;

    fn header_of_version(version: u32) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = SegmentHeader {
            base_offset: 1922,
            seq: 62,
            salt: 0x5EED,
            segment_size: 4096,
        }
        .encode();
        h[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32fast::hash(&h[0..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    #[test]
    fn a_format2_header_converts_to_the_current_one_changing_only_version_and_crc() {
        let v2 = header_of_version(FROM_VERSION);
        let v3 = convert_header(&FsStorage, Path::new("x.seg"), &v2).expect("converts");
        assert_eq!(v3, header_of_version(TO_VERSION));
        assert_eq!(v3[0..8], v2[0..8]);
        assert_eq!(v3[12..60], v2[12..60]);
        assert_ne!(v3[60..64], v2[60..64]);
        let h = SegmentHeader::decode(&v3).expect("decodes");
        assert_eq!((h.base_offset, h.seq, h.segment_size), (1922, 62, 4096));
    }

    #[test]
    fn a_bad_format2_header_is_refused() {
        let path = Path::new("/nonexistent/x.seg");
        let mut bad_crc = header_of_version(FROM_VERSION);
        bad_crc[33] ^= 1;
        assert!(matches!(
            convert_header(&FsStorage, path, &bad_crc),
            Err(Error::Corrupt { position: 60, .. })
        ));
        let mut bad_magic = header_of_version(FROM_VERSION);
        bad_magic[0] = b'X';
        assert!(matches!(
            convert_header(&FsStorage, path, &bad_magic),
            Err(Error::NotDurq { .. })
        ));
        // Another version: the file's own open-time error (here, that it
        // cannot be opened).
        assert!(convert_header(&FsStorage, path, &header_of_version(TO_VERSION)).is_err());
    }
}
