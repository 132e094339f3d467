//! Recovery: what `Log::open` and `durq recover` share.
//!
//! Recovery removes leftover temporary files, checks from the segment file
//! names (`BASE-SEQ.seg`) that the segments are contiguous (no sequence
//! number missing), reads and checks the header of the last segment only,
//! scans the last segment to find the end of the log, and repairs a torn
//! tail by zeroing it in place (never truncating: the file may be
//! memory-mapped). Sealed segments' headers are not read: each is checked
//! when a reader first opens the segment (`segment::Segment::open`),
//! so opening costs the same whatever the number of segments. Everything
//! else that is wrong is an error naming the file and byte position. It
//! returns a structured [`RecoveryReport`]. Recovery is idempotent, and
//! syncs its own repairs before the log accepts writes, so a crash during
//! recovery is safe.
//!
//! # Torn tail or damage?
//!
//! Scanning the last segment stops at the first position `P` that does not
//! hold the next valid record. Then, in this order:
//!
//! 1. Everything from `P` to the end of the segment is zero: `P` is simply
//!    the end of the log.
//! 2. A record at `P` that carries the expected offset, a plausible length
//!    and a bad checksum, where no 512-byte sector's share of the record ends
//!    in a zero byte, cannot be a torn write (segments are zero-filled when
//!    created and never reused, so the unwritten part of a torn write reads
//!    as zeros, and a sector is written whole or from its start): **damage**.
//! 3. A record at `P` with a valid checksum but the wrong offset: **damage**.
//! 4. Valid records found beyond `P` that belong to more than one write call
//!    (a record flagged end-of-write followed by another valid record): only
//!    the last write can be torn, so this is **damage**.
//! 5. Otherwise the bytes from `P` on are the torn remains of the last write,
//!    which never returned: they are zeroed and synced, and reported.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::{self, Group};
use crate::names;
use crate::record::{
    self, BadSegmentHeader, Invalid, RECORD_ALIGN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
    SegmentHeader,
};
use crate::segment::{Segment, SegmentMeta};
use crate::storage::{OpenMode, Storage, StorageFile};

/// Sector size assumed by the torn-write rules: the unit a disk writes
/// atomically (or not at all) on power loss.
pub const SECTOR_BYTES: usize = 512;

/// What recovery found and did. Exposed by [`crate::Log::recovery_report`]
/// and printed by `durq recover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// Whether the log was created by this open (the directory held none).
    pub created: bool,
    /// Whether recovery only looked (dry run) and changed nothing.
    pub dry_run: bool,
    /// Number of segment files.
    pub segments: usize,
    /// The first retained offset.
    pub first_offset: u64,
    /// The next offset to be assigned: every record below it is durable.
    pub end_offset: u64,
    /// Leftovers of operations that never finished, which nothing durable
    /// refers to, that were removed (or, in a dry run, would be): temporary
    /// files (unfinished segment or cursor replacements), the journal of a
    /// client registration that never finished, empty segment groups.
    pub removed_temp_files: Vec<PathBuf>,
    /// Files in the directory that durq does not know and left alone.
    pub unknown_files: Vec<PathBuf>,
    /// The torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
    /// Problems found with client cursor files, and what was done.
    pub cursors: Vec<CursorRepair>,
}

impl RecoveryReport {
    /// Whether recovery had nothing to repair or remove.
    pub fn is_clean(&self) -> bool {
        self.removed_temp_files.is_empty() && self.torn_tail.is_none() && self.cursors.is_empty()
    }
}

/// A torn tail found at the end of the last segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte position of the first byte that was not part of a valid record.
    pub position: u64,
    /// How many bytes (from `position`) were zeroed.
    pub bytes_zeroed: u64,
    /// Complete, valid records found beyond the tear and discarded with it
    /// (they followed a gap, so their append could not have returned).
    pub records_discarded: u64,
    /// The offset the first discarded byte would have held.
    pub offset: u64,
    /// What was wrong at `position`.
    pub reason: String,
}

/// A client cursor problem found during recovery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CursorRepair {
    /// The client's name.
    pub client: String,
    /// The client's file concerned (a snapshot slot or the ack journal).
    pub file: PathBuf,
    /// What was found and done, in words.
    pub action: String,
}

/// The state recovery hands to the log.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Every segment, oldest first. Only the last one's header (and the one
    /// before it, when the last holds no record) has been read and checked;
    /// the others are checked when first read.
    pub segments: Vec<Segment>,
    /// Byte position where the next record goes in the last segment.
    pub tail_pos: u64,
    pub report: RecoveryReport,
}

/// Result of scanning one segment's bytes from its first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Offset after the last valid record.
    pub end_offset: u64,
    /// Position after the last valid record.
    pub end_pos: u64,
    /// The bad bytes after the valid records, if any.
    pub problem: Option<ScanProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanProblem {
    /// The torn remains of the last write.
    Torn {
        position: u64,
        zero_until: u64,
        records_discarded: u64,
        reason: String,
    },
    /// Damage that is not a torn tail.
    Damage { position: u64, reason: String },
}

/// Scans a whole segment (`bytes` is the file, header included) and applies
/// the torn-tail rules of this module's documentation.
pub(crate) fn scan_segment(bytes: &[u8], meta_base: u64, salt: u64) -> Scan {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut offset = meta_base;
    let size = bytes.len();
    let seed = record::salt_seed(salt);
    loop {
        if pos + RECORD_HEADER_LEN > size {
            // The segment is full (or too small for another header).
            let problem = first_nonzero(&bytes[pos.min(size)..]).map(|_| ScanProblem::Damage {
                position: pos as u64,
                reason: "unexpected bytes after the last record".into(),
            });
            return finish(offset, pos, problem);
        }
        match record::decode_seeded(bytes, pos, seed) {
            Ok(d) if d.header.offset == offset => {
                pos += d.header.encoded_len();
                offset += 1;
            }
            Ok(d) => {
                return finish(
                    offset,
                    pos,
                    Some(ScanProblem::Damage {
                        position: pos as u64,
                        reason: format!(
                            "valid record carries offset {} where offset {offset} belongs",
                            d.header.offset
                        ),
                    }),
                );
            }
            Err(why) => {
                let problem = classify_bad(bytes, pos, offset, salt, why);
                return finish(offset, pos, problem);
            }
        }
    }
}

fn finish(end_offset: u64, end_pos: usize, problem: Option<ScanProblem>) -> Scan {
    Scan {
        end_offset,
        end_pos: end_pos as u64,
        problem,
    }
}

fn first_nonzero(b: &[u8]) -> Option<usize> {
    b.iter().position(|&x| x != 0)
}

fn last_nonzero(b: &[u8]) -> Option<usize> {
    b.iter().rposition(|&x| x != 0)
}

/// Whether some sector's share of `bytes[start..end]` ends in a zero byte,
/// as a write torn at (or within, if sector writes are linear) a sector
/// boundary leaves it: the unwritten rest of a share still holds the zeros
/// the segment was created with.
fn has_unwritten_sector_part(bytes: &[u8], start: usize, end: usize) -> bool {
    let mut s = start;
    while s < end {
        let sector_end = ((s / SECTOR_BYTES) + 1) * SECTOR_BYTES;
        let e = sector_end.min(end);
        if bytes[e - 1] == 0 {
            return true;
        }
        s = e;
    }
    false
}

fn classify_bad(
    bytes: &[u8],
    p: usize,
    expected: u64,
    salt: u64,
    why: Invalid,
) -> Option<ScanProblem> {
    let size = bytes.len();
    let Some(last) = last_nonzero(&bytes[p..]) else {
        // Rule 1: nothing but zeros from here: the clean end of the log.
        return None;
    };
    let zero_until = (p + last + 1).next_multiple_of(RECORD_ALIGN).min(size);
    // Rule 2: a plausible record whose checksum fails with no unwritten
    // (all-zero) sector in it was written whole and then damaged.
    if why == Invalid::Checksum
        && let Ok(h) = record::parse_header(&bytes[p..], size - p)
    {
        let end = p + RECORD_HEADER_LEN + h.len as usize;
        if h.offset == expected && !has_unwritten_sector_part(bytes, p, end) {
            return Some(ScanProblem::Damage {
                position: p as u64,
                reason: format!(
                    "record {expected} fails its checksum although every sector of it was written \
                         (not a torn write)"
                ),
            });
        }
    }
    // Rule 4: valid records beyond the tear from more than one write.
    let mut discarded = 0u64;
    let mut end_of_write_seen: Option<usize> = None;
    let mut q = p + RECORD_ALIGN;
    while q + RECORD_HEADER_LEN <= zero_until {
        if bytes[q..q + 4] == record::RECORD_MAGIC.to_le_bytes()
            && let Ok(d) = record::decode(bytes, q, salt)
        {
            if let Some(at) = end_of_write_seen {
                return Some(ScanProblem::Damage {
                    position: p as u64,
                    reason: format!(
                        "{} at record {expected}, but valid records from more than one write follow \
                             (at bytes {at} and {q}): not a torn tail",
                        why.describe()
                    ),
                });
            }
            if d.header.offset < expected {
                return Some(ScanProblem::Damage {
                    position: q as u64,
                    reason: format!(
                        "valid record {} found after record {expected}'s position",
                        d.header.offset
                    ),
                });
            }
            discarded += 1;
            if d.header.is_end_of_write() {
                end_of_write_seen = Some(q);
            }
            q += d.header.encoded_len();
            continue;
        }
        q += RECORD_ALIGN;
    }
    Some(ScanProblem::Torn {
        position: p as u64,
        zero_until: zero_until as u64,
        records_discarded: discarded,
        reason: why.describe().to_owned(),
    })
}

/// Reads a whole file through the storage seam.
pub(crate) fn read_whole(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    let file = storage
        .open_file(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    let mut buf = vec![0u8; len as usize];
    file.read_at(&mut buf, 0)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

/// Opens the segment file at `path`, whose name says `base` and `seq`,
/// and checks its header ([`check_segment_header`]).
pub(crate) fn read_segment_meta(
    storage: &dyn Storage,
    path: &Path,
    base: u64,
    seq: u64,
) -> Result<SegmentMeta> {
    let file = storage
        .open_file(path, OpenMode::Read)
        .map_err(|e| Error::io("open segment", path, e))?;
    check_segment_header(&*file, path, base, seq)
}

/// Maps a header that does not decode to the error naming `path`.
pub(crate) fn header_error(path: &Path, bad: BadSegmentHeader) -> Error {
    match bad {
        BadSegmentHeader::NotDurq(why) => Error::NotDurq {
            path: path.to_owned(),
            reason: why.to_owned(),
        },
        BadSegmentHeader::Version(found) => Error::UnsupportedVersion {
            path: path.to_owned(),
            found,
            supported: record::FORMAT_VERSION,
        },
        BadSegmentHeader::Corrupt(why) => Error::corrupt(path, 0, why),
    }
}

/// Reads and checks the header of the open segment file `file` (at
/// `path`, whose name says `base` and `seq`): magic, format version and
/// CRC, base offset and sequence number equal to the name's, segment size
/// equal to the file's length. Every error names the file.
pub(crate) fn check_segment_header(
    file: &dyn StorageFile,
    path: &Path,
    base: u64,
    seq: u64,
) -> Result<SegmentMeta> {
    let (h, len) = read_header(file, path)?;
    check_header_fields(&h, len, path, base, seq)
}

/// Checks a decoded header against the file it came from (at `path`,
/// `len` bytes long, whose name says `base` and `seq`): base offset and
/// sequence number equal to the name's, segment size equal to the length.
pub(crate) fn check_header_fields(
    h: &SegmentHeader,
    len: u64,
    path: &Path,
    base: u64,
    seq: u64,
) -> Result<SegmentMeta> {
    if h.base_offset != base {
        return Err(Error::corrupt(
            path,
            16,
            format!(
                "header says base offset {} but the file name says {base}",
                h.base_offset
            ),
        ));
    }
    if h.seq != seq {
        return Err(Error::corrupt(
            path,
            24,
            format!(
                "header says segment number {} but the file name says {seq}",
                h.seq
            ),
        ));
    }
    if h.segment_size != len {
        return Err(Error::corrupt(
            path,
            len.min(h.segment_size),
            format!(
                "file is {len} bytes but its header says {} bytes",
                h.segment_size
            ),
        ));
    }
    Ok(SegmentMeta {
        base,
        seq,
        salt: h.salt,
        size: h.segment_size,
        path: path.to_owned(),
    })
}

/// Refuses a directory holding segment files of an older format, before
/// anything is changed: a file named as format version 1 did
/// (`{base:020}.seg`, without the sequence number), or a segment file
/// directly in the log directory, as format version 2 kept them (this
/// version keeps them in group directories). The error is
/// [`Error::UnsupportedVersion`] when the file's header says an older
/// version (as every such file durq wrote does), the header's own error if
/// it is not a segment header, and [`Error::Corrupt`] if it somehow is a
/// current header in the wrong place. A directory holding segment groups
/// beside format-2 segments, as an interrupted `durq upgrade` leaves it,
/// is refused with an [`Error::InvalidArgument`] saying so and to run the
/// upgrade again ([`crate::upgrade`]). Reads only listings and the headers
/// of such files; changes nothing.
pub(crate) fn refuse_old_formats(
    storage: &dyn Storage,
    dir: &Path,
    listing: &[String],
) -> Result<()> {
    let mut old: Vec<&String> = listing
        .iter()
        .filter(|n| {
            names::parse_format1_segment_file_name(n).is_some()
                || names::parse_segment_file_name(n).is_some()
        })
        .collect();
    old.sort();
    match old.first() {
        None => Ok(()),
        Some(name) => Err(crate::upgrade::interrupted_error(storage, dir, listing)
            .unwrap_or_else(|| old_format_error(storage, &dir.join(name)))),
    }
}

/// Reads and decodes the header of the segment file `file` (at `path`);
/// returns it with the file's length. Errors name the file.
fn read_header(file: &dyn StorageFile, path: &Path) -> Result<(SegmentHeader, u64)> {
    let len = file.len().map_err(|e| Error::io("stat segment", path, e))?;
    let mut buf = vec![0u8; SEGMENT_HEADER_LEN.min(len as usize)];
    file.read_at(&mut buf, 0)
        .map_err(|e| Error::io("read segment header", path, e))?;
    let h = SegmentHeader::decode(&buf).map_err(|bad| header_error(path, bad))?;
    Ok((h, len))
}

/// Why the segment file at `path`, named or placed as an older format
/// did, cannot be used.
pub(crate) fn old_format_error(storage: &dyn Storage, path: &Path) -> Error {
    let header = storage
        .open_file(path, OpenMode::Read)
        .map_err(|e| Error::io("open segment", path, e))
        .and_then(|file| read_header(&*file, path));
    let flat = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| names::parse_segment_file_name(n).is_some());
    match header {
        Err(e) => e,
        Ok((h, _)) if flat => Error::corrupt(
            path,
            0,
            format!(
                "segment file of the current format (base offset {}, segment number {}) lies \
                 directly in the log directory; this version keeps segments in group \
                 directories (BASE-GROUP.group/BASE-SEQ.seg)",
                h.base_offset, h.seq
            ),
        ),
        Ok((h, _)) => Error::corrupt(
            path,
            0,
            format!(
                "segment file name lacks the sequence number (format version 1 names were \
                 BASE.seg; this version names segments BASE-SEQ.seg) although its header is \
                 of the current format (base offset {}, segment number {})",
                h.base_offset, h.seq
            ),
        ),
    }
}

/// Refuses a directory that holds no durq segment but other files (durq's
/// own lock, hint, clients and salvage entries and `*.tmp` files aside):
/// a log is never created among someone else's files.
pub(crate) fn refuse_foreign(dir: &Path, listing: &[String]) -> Result<()> {
    if listing
        .iter()
        .any(|n| names::parse_group_dir_name(n).is_some())
    {
        return Ok(());
    }
    let known = [
        names::LOCK_FILE,
        names::END_HINT_FILE,
        names::CLIENTS_DIR,
        names::SALVAGE_DIR,
    ];
    let foreign = listing
        .iter()
        .filter(|n| !known.contains(&n.as_str()) && !n.ends_with(names::TEMP_SUFFIX))
        .min();
    match foreign {
        None => Ok(()),
        Some(example) => Err(Error::InvalidArgument(format!(
            "{} holds no durq log but other files (such as {}); refusing to create a log there",
            dir.display(),
            dir.join(example).display()
        ))),
    }
}

/// What recovery should do about what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Repair (zero the torn tail, remove leftovers) and sync the repairs.
    Repair,
    /// Only report.
    DryRun,
}

/// Recovers the segments of the log in `dir`.
pub(crate) fn recover(storage: &dyn Storage, dir: &Path, mode: Mode) -> Result<Recovered> {
    let mut report = RecoveryReport {
        dry_run: mode == Mode::DryRun,
        ..RecoveryReport::default()
    };
    let listing = layout::list_log_dir(storage, dir)?;
    // An old-format log is refused before anything is changed.
    refuse_old_formats(storage, dir, &listing.names)?;
    let names_in_dir = listing.names;
    let mut groups = listing.groups;
    let mut temps = listing.temps;
    report.unknown_files = listing.unknown;
    if listing.has_salvage {
        // Reported among the unknown entries (`durq recover` leaves it out).
        report.unknown_files.push(dir.join(names::SALVAGE_DIR));
    }

    // Only the first and the last group holding a segment are listed.
    // Groups holding none before the first or after the last are the
    // remains of an interrupted retention step or rollover: removed.
    let mut empty_groups = Vec::new();
    let mut first_idx = None;
    let mut first_listing = None;
    for (i, g) in groups.iter().enumerate() {
        let listing = layout::list_group(storage, g)?;
        if listing.segments.is_empty() {
            refuse_non_empty(g, &listing)?;
            empty_groups.push(g.path.clone());
            continue;
        }
        first_idx = Some(i);
        first_listing = Some(listing);
        break;
    }
    let mut listed: Vec<(usize, layout::GroupListing)> = Vec::new();
    if let (Some(first), Some(listing)) = (first_idx, first_listing) {
        let mut last = groups.len() - 1;
        let mut last_listing = None;
        while last > first {
            let listing = layout::list_group(storage, &groups[last])?;
            if !listing.segments.is_empty() {
                last_listing = Some(listing);
                break;
            }
            refuse_non_empty(&groups[last], &listing)?;
            empty_groups.push(groups[last].path.clone());
            last -= 1;
        }
        listed.push((first, listing));
        if let Some(l) = last_listing {
            listed.push((last, l));
        }
        groups.truncate(last + 1);
        groups.drain(..first);
        for (i, _) in &mut listed {
            *i -= first;
        }
    } else {
        groups.clear();
    }
    // The groups from the first holding a segment to the last must be
    // contiguous (from their names alone).
    layout::check_group_sequence(dir, &groups)?;
    for (i, l) in &listed {
        let g = &groups[*i];
        let next_base = groups.get(*i + 1).map(|n| n.base);
        layout::check_group(g, &l.segments, *i > 0, next_base.is_some(), next_base)?;
        report.unknown_files.extend(l.others.iter().cloned());
    }
    report.unknown_files.sort();

    // Leftover temp files are unfinished segment creations or released
    // segments: nothing durable refers to them. A directory without any
    // segment is not a log yet: if it holds someone else's files it is
    // refused here, before anything is changed; otherwise its temp files
    // are left for the first open of the log created in it.
    if listed.is_empty() {
        refuse_foreign(dir, &names_in_dir)?;
        temps.clear();
    }
    if mode == Mode::Repair && !(temps.is_empty() && empty_groups.is_empty()) {
        for t in &temps {
            storage
                .remove_file(t)
                .map_err(|e| Error::io("remove leftover", t, e))?;
        }
        for g in &empty_groups {
            storage
                .remove_dir(g)
                .map_err(|e| Error::io("remove empty segment group", g, e))?;
        }
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    report.removed_temp_files = temps;
    report.removed_temp_files.extend(empty_groups);

    // The table: the listed groups' segments, and one placeholder for each
    // group between them.
    let mut table: Vec<Slot> = Vec::new();
    let mut listed_iter = listed.into_iter().peekable();
    for (i, g) in groups.iter().enumerate() {
        match listed_iter.next_if(|(j, _)| *j == i) {
            Some((_, l)) => table.extend(l.segments.into_iter().map(Slot::Listed)),
            None => table.push(Slot::Unlisted(g.clone())),
        }
    }
    report.segments = table
        .iter()
        .map(|s| match s {
            Slot::Listed(_) => 1,
            Slot::Unlisted(_) => names::SEGMENTS_PER_GROUP as usize,
        })
        .sum();
    let Some(Slot::Listed((last_base, last_seq, last_path))) = table.pop() else {
        return Ok(Recovered {
            segments: Vec::new(),
            tail_pos: SEGMENT_HEADER_LEN as u64,
            report,
        });
    };
    report.first_offset = match table.first() {
        Some(Slot::Listed((b, _, _))) => *b,
        Some(Slot::Unlisted(g)) => g.base,
        None => last_base,
    };
    let mut listed: Vec<Slot> = table;
    // Only the last segment's header is read here; sealed segments' headers
    // are checked when a reader first opens them.
    let last = read_segment_meta(storage, &last_path, last_base, last_seq)?;

    let bytes = read_whole(storage, &last.path)?;
    let scan = scan_segment(&bytes, last.base, last.salt);
    drop(bytes);
    match &scan.problem {
        None => {}
        Some(ScanProblem::Damage { position, reason }) => {
            return Err(Error::corrupt(&last.path, *position, reason.clone()));
        }
        Some(ScanProblem::Torn {
            position,
            zero_until,
            records_discarded,
            reason,
        }) => {
            if mode == Mode::Repair {
                zero_range(storage, &last.path, *position, *zero_until)?;
            }
            report.torn_tail = Some(TornTail {
                segment: last.path.clone(),
                position: *position,
                bytes_zeroed: zero_until - position,
                records_discarded: *records_discarded,
                offset: scan.end_offset,
                reason: reason.clone(),
            });
        }
    }
    // An empty last segment was created at a rollover, which happens only
    // once everything before it is durable: the previous segment must end
    // exactly where the last one begins.
    let mut prev_checked = None;
    if scan.end_offset == last.base
        && let Some(Slot::Unlisted(g)) = listed.last()
    {
        // Its predecessor is in a group not listed yet: list it now.
        let g = g.clone();
        listed.pop();
        let segs = layout::list_middle_group(storage, &g, last_base)?;
        listed.extend(segs.into_iter().map(Slot::Listed));
    }
    if scan.end_offset == last.base
        && let Some(Slot::Listed((prev_base, prev_seq, prev_path))) = listed.last()
    {
        let prev = read_segment_meta(storage, prev_path, *prev_base, *prev_seq)?;
        let pbytes = read_whole(storage, &prev.path)?;
        let pscan = scan_segment(&pbytes, prev.base, prev.salt);
        if let Some(
            ScanProblem::Damage { position, reason }
            | ScanProblem::Torn {
                position, reason, ..
            },
        ) = pscan.problem
        {
            return Err(Error::corrupt(&prev.path, position, reason));
        }
        if pscan.end_offset != last.base {
            return Err(Error::corrupt(
                &prev.path,
                pscan.end_pos,
                format!(
                    "sealed segment ends at offset {} but the next segment starts at {}",
                    pscan.end_offset, last.base
                ),
            ));
        }
        prev_checked = Some(prev);
    }
    if mode == Mode::Repair {
        // A process that crashed (SIGKILL) leaves written but unsynced bytes
        // and renames in the page cache, where this scan just read them.
        // Make them durable before anything is shown to readers or appended
        // after them, so that a power loss now cannot take them away.
        sync_file(storage, &last.path)?;
        let group = layout::group_dir_of(&last.path);
        storage
            .sync_dir(group)
            .map_err(|e| Error::io("sync directory", group, e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    report.end_offset = scan.end_offset;
    let mut segments: Vec<Segment> = listed
        .into_iter()
        .map(|slot| match slot {
            Slot::Listed((base, seq, path)) => Segment::unchecked(base, seq, path),
            Slot::Unlisted(g) => Segment::unlisted_group(g),
        })
        .collect();
    if let Some(prev) = prev_checked
        && let Some(slot) = segments.last_mut()
    {
        *slot = Segment::checked(prev);
    }
    segments.push(Segment::checked(last));
    Ok(Recovered {
        segments,
        tail_pos: scan.end_pos,
        report,
    })
}

/// One entry of the segment table recovery builds.
enum Slot {
    /// A segment file found by listing its group.
    Listed(layout::Listed),
    /// A group between the first and the last, not listed.
    Unlisted(Group),
}

/// Refuses a group directory that holds no segment but other files: it
/// is not the empty remains of a rollover or retention step, and is not
/// removed.
fn refuse_non_empty(group: &Group, listing: &layout::GroupListing) -> Result<()> {
    match listing.others.first() {
        None => Ok(()),
        Some(other) => Err(Error::corrupt(
            other,
            0,
            format!(
                "segment group {} holds no segment file but this one, which durq did not make",
                group.path.display()
            ),
        )),
    }
}

/// `fdatasync`s a file.
pub(crate) fn sync_file(storage: &dyn Storage, path: &Path) -> Result<()> {
    let file = storage
        .open_file(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open for sync", path, e))?;
    file.sync_data().map_err(|e| Error::io("sync", path, e))
}

/// Zeroes `[from, to)` of the file in place and syncs it.
fn zero_range(storage: &dyn Storage, path: &Path, from: u64, to: u64) -> Result<()> {
    let file = storage
        .open_file(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open for repair", path, e))?;
    let zeros = vec![0u8; (to - from) as usize];
    file.write_at(&zeros, from)
        .map_err(|e| Error::io("zero torn tail of", path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("sync repaired", path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FLAG_END_OF_WRITE, encode_into, payload_hasher};

    const SALT: u64 = 0xABCD;

    /// A segment of `size` bytes holding `writes`, each a list of payloads
    /// written by one call (the last flagged end-of-write).
    fn segment(size: usize, writes: &[&[&[u8]]]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = vec![0u8; SEGMENT_HEADER_LEN];
        let mut starts = Vec::new();
        let mut off = 0u64;
        for w in writes {
            for (i, p) in w.iter().enumerate() {
                let flags = if i + 1 == w.len() {
                    FLAG_END_OF_WRITE
                } else {
                    0
                };
                starts.push(buf.len());
                encode_into(&mut buf, SALT, off, flags, p, &payload_hasher(p));
                off += 1;
            }
        }
        buf.resize(size, 0);
        (buf, starts)
    }

    #[test]
    fn clean_segment_scans_to_its_end() {
        let (b, _) = segment(4096, &[&[b"a", b"bb"], &[b"ccc"]]);
        let s = scan_segment(&b, 0, SALT);
        assert_eq!(s.end_offset, 3);
        assert_eq!(s.problem, None);
    }

    #[test]
    fn garbage_after_last_record_is_torn() {
        let (mut b, starts) = segment(4096, &[&[b"a"], &[b"b"]]);
        let end = starts[1] + record::encoded_len(1);
        b[end..end + 40].fill(0x5A);
        let s = scan_segment(&b, 0, SALT);
        assert_eq!(s.end_offset, 2);
        assert!(matches!(
            s.problem,
            Some(ScanProblem::Torn {
                records_discarded: 0,
                ..
            })
        ));
    }

    #[test]
    fn bit_flip_in_fully_written_record_is_damage() {
        let (mut b, starts) = segment(4096, &[&[b"hello"], &[b"world"], &[b"again"]]);
        b[starts[1] + RECORD_HEADER_LEN] ^= 4;
        let s = scan_segment(&b, 0, SALT);
        assert!(
            matches!(s.problem, Some(ScanProblem::Damage { .. })),
            "{s:?}"
        );
    }

    #[test]
    fn broken_magic_followed_by_several_writes_is_damage() {
        let (mut b, starts) = segment(4096, &[&[b"x"], &[b"y"], &[b"z"], &[b"w"]]);
        b[starts[1]] ^= 0xFF;
        let s = scan_segment(&b, 0, SALT);
        assert!(
            matches!(s.problem, Some(ScanProblem::Damage { .. })),
            "{s:?}"
        );
    }

    #[test]
    fn later_sectors_of_the_last_write_kept_is_still_torn() {
        // One write of many records spanning several sectors; its first
        // sector is lost (zero) and later ones kept.
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 60]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let (mut b, starts) = segment(8192, &[&[b"first"], &refs]);
        let tear = starts[1];
        let sector_end = (tear / SECTOR_BYTES + 1) * SECTOR_BYTES;
        b[tear..sector_end].fill(0);
        let s = scan_segment(&b, 0, SALT);
        assert_eq!(s.end_offset, 1);
        match s.problem {
            Some(ScanProblem::Torn {
                records_discarded, ..
            }) => assert!(records_discarded > 0),
            other => panic!("expected torn, got {other:?}"),
        }
    }
}
