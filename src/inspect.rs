//! Read-only inspection of a log directory (used by the `durq` tool):
//! verification of every record and cursor, views of a log that another
//! process may be writing, and the explicit salvage of damaged segments.
//!
//! # Views
//!
//! [`LogView::open`] looks at a log directory without opening it for
//! writing. It never creates anything: a missing directory, or one without
//! segment files, is an error. Segment files live in group directories of
//! the log directory (`BASE-GROUP.group/BASE-SEQ.seg`, 64 segments to a
//! group, see [`crate::names::group_dir_name`]); unlike `Log::open`, which
//! lists only the first and last groups, a view lists every group and reads
//! every segment's header.
//!
//! * If no process holds the writer's lock (`durq.lock`), the view takes it
//!   and **holds it until the view is dropped**, so that no writer can open,
//!   repair or append while the view reads; it then runs recovery as a dry
//!   run to find the end of the log (what `Log::open` would find) and the
//!   report of what open would repair. A writer that opens meanwhile fails
//!   with [`Error::Locked`] and can retry; the read-only `durq` commands are
//!   short, except `verify` and `dump` of a large log.
//! * If another handle holds the lock, a writer is active: the view shows
//!   records only below the durable end that writer publishes in `durq.end`
//!   (see [`crate::names::END_HINT_FILE`]), and below the end of the valid
//!   records it finds on disk, whichever is smaller. Nothing at or past that
//!   end is ever read as a record, so a write in progress is never shown.
//! * If the lock file does not exist, no writer is active (a writer creates
//!   it before anything else) and the view does not create it.
//!
//! Segment files are read with positional reads (no memory maps), so that a
//! writer's activity past the durable end cannot affect what the view shows.
//!
//! # Analysis and salvage
//!
//! [`LogView::analyze`] reads every record of every segment and checks every
//! checksum, every cursor file and every journal entry, and reports every
//! breach of the rules of the group layout (a group or segment missing, a
//! segment in the wrong group, an empty group between others, a foreign
//! file in a group, a segment file of an older format lying directly in the
//! log directory), naming the files. Damage that is not a
//! torn tail is located exactly: which byte ranges are bad and which offsets
//! cannot be read any more. [`LogView::salvage`] (the explicit
//! `durq recover --salvage`) acts on that analysis: it keeps every record
//! that is still readable, never renumbers an offset, copies the damaged file
//! into `DIR/salvage/` and writes in its place (in the same group directory)
//! a rebuilt segment in which every lost offset holds a placeholder record
//! ([`crate::record::FLAG_LOST`]); readers report such an offset as
//! [`Error::Lost`] and consumers skip it. Salvage never moves files between
//! directories: breaches of the layout rules are reported as unsalvageable.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::consumer::{self, ClientEntry};
use crate::cursor::{self, ClientFiles, JOURNAL_ENTRY_LEN, JOURNAL_LEN, Snapshot};
use crate::error::{Error, Result};
use crate::layout::{self, Group};
use crate::names;
use crate::record::{
    self, FLAG_END_OF_WRITE, FLAG_LOST, Invalid, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::recovery::{self, Mode, RecoveryReport, SECTOR_BYTES, ScanProblem};
use crate::segment::SegmentMeta;
use crate::storage::{FsStorage, LockGuard, OpenMode, Storage};

/// The directory (inside the log directory) where salvage sets damaged
/// files aside. Recovery does not know it and lists it among unknown files;
/// the `durq` tool leaves it out of that list.
pub const SALVAGE_DIR: &str = crate::names::SALVAGE_DIR;

/// How [`LogView::open`] treats the writer's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Look only: work whether or not a writer is active, create nothing.
    ReadOnly,
    /// Take the writer's lock (creating the lock file if needed) and fail
    /// with [`Error::Locked`] if another handle holds it. Required by
    /// [`LogView::salvage`].
    Exclusive,
}

/// A half-open range of offsets or byte positions, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    /// First element.
    pub start: u64,
    /// One past the last element.
    pub end: u64,
}

impl Span {
    fn new(r: Range<u64>) -> Span {
        Span {
            start: r.start,
            end: r.end,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Span {
    /// `7` for a single element, `7..10` otherwise (half-open).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.len() == 1 {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}..{}", self.start, self.end)
        }
    }
}

/// One finding of an analysis: a problem (damage) or a note (something
/// `Log::open` repairs by itself, or worth knowing).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// A stable, machine-readable kind, such as `record_damage`.
    pub kind: &'static str,
    /// The file concerned.
    pub file: PathBuf,
    /// Byte position in the file, where there is one.
    pub position: Option<u64>,
    /// Offsets that cannot be read because of it, if any.
    pub lost: Option<Span>,
    /// What is wrong, in words.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} at byte {p}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

fn finding(
    kind: &'static str,
    file: &Path,
    position: Option<u64>,
    lost: Option<Span>,
    message: impl Into<String>,
) -> Finding {
    Finding {
        kind,
        file: file.to_owned(),
        position,
        lost,
        message: message.into(),
    }
}

/// One segment file as a view shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentView {
    /// The file.
    pub path: PathBuf,
    /// Its sequence number.
    pub seq: u64,
    /// Offset of its first record.
    pub first_offset: u64,
    /// Offset after its last record below the view's end.
    pub end_offset: u64,
    /// Its size on disk (preallocated).
    pub size_bytes: u64,
}

/// One client as a view shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientView {
    /// The client's name.
    pub name: String,
    /// Every offset below this one is acknowledged (durably); `None` if the
    /// cursor is unreadable.
    pub acked: Option<u64>,
    /// Messages not yet acknowledged: the view's end minus `acked`.
    pub lag: Option<u64>,
    /// Why the cursor is unusable, if it is.
    pub error: Option<String>,
}

/// A record (or a salvage placeholder) read by [`LogView::records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The record's offset.
    pub offset: u64,
    /// The payload; `None` for a placeholder left by salvage (the record
    /// at this offset was lost to damage).
    pub payload: Option<Vec<u8>>,
    /// The segment file holding it.
    pub segment: PathBuf,
    /// Byte position of its header in that file.
    pub position: u64,
}

/// A read-only view of a log directory. See the [module docs](self).
pub struct LogView {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    writer_active: bool,
    end_hint: Option<u64>,
    /// Every group directory found (sorted as the engine sorts them).
    groups: Vec<Group>,
    /// Every segment file found in a group, by base offset (then number),
    /// whether or not its header could be read.
    files: Vec<layout::Listed>,
    /// The indexes `i` in `files` after which a segment is missing (the
    /// next file's number is not `files[i]`'s plus one).
    gaps: Vec<usize>,
    /// The segments whose header could be read, oldest first.
    segments: Vec<SegmentMeta>,
    header_problems: Vec<Finding>,
    /// Breaches of the layout rules (see [`crate::layout`]), foreign files
    /// in group directories, and segment files of older formats.
    layout_problems: Vec<Finding>,
    /// Empty groups before the first or after the last segment (the
    /// remains of an interrupted rollover or retention step).
    layout_notes: Vec<Finding>,
    temps: Vec<PathBuf>,
    unknown: Vec<PathBuf>,
    salvage_files: usize,
    first: u64,
    end: u64,
    report: Option<RecoveryReport>,
    recovery_error: Option<String>,
    notes: Vec<String>,
    lock: Option<LockGuard>,
}

impl std::fmt::Debug for LogView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogView")
            .field("dir", &self.dir)
            .field("writer_active", &self.writer_active)
            .field("first", &self.first)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// Where segment files live, in words for messages.
const LAYOUT_PHRASE: &str =
    "segment files live in group directories of the log directory (BASE-GROUP.group/BASE-SEQ.seg)";

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// What listing every group found, and what the layout rules say of it.
#[derive(Debug, Default)]
struct GroupsListing {
    /// The groups that exist (one removed meanwhile by an active writer's
    /// retention is left out).
    groups: Vec<Group>,
    /// Every segment file, by base offset.
    files: Vec<layout::Listed>,
    /// The layout rules' verdicts, as [`crate::layout`] gives them.
    errors: Vec<Error>,
    problems: Vec<Finding>,
    notes: Vec<Finding>,
}

/// Lists every group of the log and applies the layout rules of
/// [`crate::layout`] to all of them: groups numbered consecutively, each
/// group's segments consecutive and its own, every group but the first
/// starting with its first possible segment, every group but the last full.
/// Empty groups before the first segment or after the last are what an
/// interrupted rollover or retention step leaves (notes: open removes them,
/// unless they hold other files, which open refuses); an empty group
/// between two others and any file in a group that is not a segment are
/// problems.
fn list_groups(
    storage: &dyn Storage,
    dir: &Path,
    all: &[Group],
    writer_active: bool,
) -> GroupsListing {
    let mut out = GroupsListing::default();
    // `None`: the group could not be listed (a problem, reported).
    let mut listings: Vec<Option<layout::GroupListing>> = Vec::with_capacity(all.len());
    for g in all {
        match layout::list_group(storage, g) {
            Ok(l) => {
                out.groups.push(g.clone());
                listings.push(Some(l));
            }
            // An active writer's retention removed it since the log
            // directory was listed: it is no longer part of the log.
            Err(e) if writer_active && is_not_found(&e) => {}
            Err(e) => {
                out.problems.push(error_finding("unreadable", &g.path, &e));
                out.groups.push(g.clone());
                listings.push(None);
            }
        }
    }
    // A group that could not be listed may hold segments: it counts as
    // holding some.
    let holds =
        |l: &Option<layout::GroupListing>| l.as_ref().is_none_or(|l| !l.segments.is_empty());
    let first = listings.iter().position(holds);
    let last = listings.iter().rposition(holds);
    // As at open: the groups from the first holding a segment to the last
    // must be numbered consecutively (empty ones around them are leftovers).
    if let (Some(f), Some(l)) = (first, last)
        && let Err(e) = layout::check_group_sequence(dir, &out.groups[f..=l])
    {
        out.errors.push(e);
    }
    for (i, (g, listing)) in out.groups.iter().zip(listings).enumerate() {
        let Some(listing) = listing else { continue };
        let inside = first.is_some_and(|f| i >= f) && last.is_some_and(|l| i <= l);
        for other in &listing.others {
            let why = if inside {
                "not a durq file, in a segment group directory (which holds only segment files, \
                 BASE-SEQ.seg): move it out of the group directory"
                    .to_owned()
            } else {
                format!(
                    "not a durq file, in segment group {} which holds no segment file: opening \
                     the log refuses such a group",
                    g.path.display()
                )
            };
            out.problems.push(finding("layout", other, None, None, why));
        }
        if !inside {
            // Empty, before the first segment or after the last.
            if listing.others.is_empty() && !writer_active {
                out.notes.push(finding(
                    "leftover",
                    &g.path,
                    None,
                    None,
                    "empty segment group (the remains of an interrupted rollover or retention \
                     step); open removes it",
                ));
            }
            continue;
        }
        let starts = first.is_some_and(|f| i > f);
        let full = last.is_some_and(|l| i < l);
        let next_base = full.then(|| out.groups[i + 1].base);
        if let Err(e) = layout::check_group(g, &listing.segments, starts, full, next_base) {
            out.errors.push(e);
        }
        if listing.segments.is_empty() {
            out.problems.push(finding(
                "layout",
                &g.path,
                None,
                None,
                format!(
                    "segment group {} holds no segment file although groups before and after it \
                     do: its segments (numbers {} to {}) are missing",
                    g.number,
                    g.first_seq(),
                    g.last_seq()
                ),
            ));
        }
        out.files.extend(listing.segments);
    }
    out.files.sort_unstable();
    out
}

/// The finding for a breach of the layout rules found by [`crate::layout`].
fn layout_finding(e: &Error) -> Finding {
    match e {
        Error::Corrupt { path, reason, .. } => finding("layout", path, None, None, reason.clone()),
        Error::MissingSegment { dir, .. } => finding("layout", dir, None, None, e.to_string()),
        other => error_finding("layout", Path::new(""), other),
    }
}

/// The segment file size of the newest segment of the log in `dir`, or
/// `None` if `dir` does not exist, holds no segment, or its newest header
/// cannot be read (opening the log then reports why). Reads only the log
/// directory and its last groups.
pub fn existing_segment_size(dir: &Path) -> Option<u64> {
    let storage = FsStorage;
    let listing = layout::list_log_dir(&storage, dir).ok()?;
    // The newest segment is in the last group holding one (empty groups
    // after it are crash leftovers).
    let (base, seq, path) = listing
        .groups
        .iter()
        .rev()
        .find_map(|g| layout::list_group(&storage, g).ok()?.segments.pop())?;
    recovery::read_segment_meta(&storage, &path, base, seq)
        .ok()
        .map(|m| m.size)
}

/// Whether `dir` holds a durq log: a segment group directory, or a segment
/// file lying directly in it as older formats placed them (opening such a
/// log then reports its version). Reads only the log directory.
pub fn is_log_dir(dir: &Path) -> bool {
    FsStorage.list_dir(dir).is_ok_and(|names| {
        names.iter().any(|n| {
            names::parse_group_dir_name(n).is_some()
                || names::parse_segment_file_name(n).is_some()
                || names::parse_format1_segment_file_name(n).is_some()
        })
    })
}

fn read_optional(storage: &dyn Storage, path: &Path) -> Result<Option<Vec<u8>>> {
    match recovery::read_whole(storage, path) {
        Ok(b) => Ok(Some(b)),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The finding for a segment file lying directly in the log directory.
fn old_format_finding(storage: &dyn Storage, path: &Path) -> Finding {
    let e = recovery::old_format_error(storage, path);
    let mut f = error_finding("old_format", path, &e);
    if let Error::UnsupportedVersion { .. } = e {
        f.message = format!(
            "{}; it lies directly in the log directory, as older formats placed segments \
             (this version's {LAYOUT_PHRASE}), and this version does not read it; \
             `durq upgrade DIR` converts a format-2 log in place",
            f.message
        );
    }
    f
}

impl LogView {
    /// Opens a view of the log in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, access: Access) -> Result<LogView> {
        LogView::open_with(Arc::new(FsStorage), dir.as_ref(), access)
    }

    /// Opens a view through another implementation of the storage seam.
    pub fn open_with(storage: Arc<dyn Storage>, dir: &Path, access: Access) -> Result<LogView> {
        // The hint first: a segment created after it was read lies past it.
        let hint_bytes = read_optional(&*storage, &dir.join(names::END_HINT_FILE)).ok();
        let end_hint = hint_bytes
            .flatten()
            .and_then(|b| names::decode_end_hint(&b));
        let listing = layout::list_log_dir(&*storage, dir)?;
        if listing.groups.is_empty() {
            if let Some(old) = listing.old_format().first() {
                // A log of an older format: say so.
                return Err(recovery::old_format_error(&*storage, old));
            }
            return Err(Error::InvalidArgument(format!(
                "{} is not a durq log: it holds no segment group directory ({LAYOUT_PHRASE})",
                dir.display()
            )));
        }
        let salvage_files = if listing.has_salvage {
            storage
                .list_dir(&dir.join(SALVAGE_DIR))
                .map_or(0, |v| v.len())
        } else {
            0
        };

        let lock_path = dir.join(names::LOCK_FILE);
        let mut notes = Vec::new();
        let (lock, writer_active) = match access {
            Access::Exclusive => match storage.try_lock(&lock_path) {
                Ok(g) => (Some(g), false),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(Error::Locked {
                        dir: dir.to_owned(),
                    });
                }
                Err(e) => return Err(Error::io("lock", &lock_path, e)),
            },
            Access::ReadOnly if !listing.has_lock_file => (None, false),
            Access::ReadOnly => match storage.try_lock_existing(&lock_path) {
                Ok(g) => (Some(g), false),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => (None, true),
                Err(e) => {
                    notes.push(format!(
                        "could not probe the writer's lock {} ({e}); showing the log as if a \
                         writer were active",
                        lock_path.display()
                    ));
                    (None, true)
                }
            },
        };

        // Every group is listed (views read everything), after the lock is
        // taken or the active writer found.
        let groups = list_groups(&*storage, dir, &listing.groups, writer_active);
        let mut layout_problems = groups.problems;
        // Segment files where older formats placed them cannot be read by
        // this version: each is a problem naming the file.
        for path in &listing.old_format() {
            layout_problems.push(old_format_finding(&*storage, path));
        }
        let mut files = Vec::with_capacity(groups.files.len());
        let mut segments = Vec::with_capacity(groups.files.len());
        let mut header_problems = Vec::new();
        for (base, seq, path) in groups.files {
            // Every header is read here (views read everything): one that
            // disagrees with its file name is a problem naming the file.
            match recovery::read_segment_meta(&*storage, &path, base, seq) {
                Ok(m) => segments.push(m),
                // Removed by an active writer's retention meanwhile.
                Err(e) if writer_active && is_not_found(&e) => continue,
                Err(e) => header_problems.push(error_finding("segment_header", &path, &e)),
            }
            files.push((base, seq, path));
        }
        if files.is_empty() {
            if let Some(old) = listing.old_format().first() {
                return Err(recovery::old_format_error(&*storage, old));
            }
            return Err(Error::InvalidArgument(format!(
                "{} holds no durq segment: its segment group directories hold no segment file \
                 ({LAYOUT_PHRASE})",
                dir.display()
            )));
        }
        let gaps: Vec<usize> = files
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[1].1 != w[0].1.wrapping_add(1))
            .map(|(i, _)| i)
            .collect();
        // A segment the layout rules find missing is reported once, by the
        // analysis of the gap it leaves (with the offsets it makes
        // unreadable); other breaches as the rules word them.
        let in_gap = |seq: u64| {
            gaps.iter()
                .any(|&i| files[i].1 < seq && seq < files[i + 1].1)
        };
        for e in &groups.errors {
            match e {
                Error::MissingSegment { expected_seq, .. } if in_gap(*expected_seq) => {}
                e => layout_problems.push(layout_finding(e)),
            }
        }
        let first = segments.first().map_or(0, |m| m.base);
        let mut view = LogView {
            storage,
            dir: dir.to_owned(),
            writer_active,
            end_hint,
            groups: groups.groups,
            files,
            gaps,
            segments,
            header_problems,
            layout_problems,
            layout_notes: groups.notes,
            temps: listing.temps,
            unknown: listing.unknown,
            salvage_files,
            first,
            end: first,
            report: None,
            recovery_error: None,
            notes,
            lock,
        };
        view.find_end()?;
        Ok(view)
    }

    fn find_end(&mut self) -> Result<()> {
        let Some(last) = self.segments.last().cloned() else {
            self.recovery_error = Some("no segment header could be read".into());
            return Ok(());
        };
        if self.writer_active {
            let Some(hint) = self.end_hint else {
                // Sealed segments are durable (a segment is created only
                // after everything before it is synced); the active one is
                // unknown without the hint.
                self.end = last.base;
                self.notes.push(format!(
                    "a writer is active but {} is missing or unreadable: showing sealed segments only",
                    names::END_HINT_FILE
                ));
                return Ok(());
            };
            let bytes = recovery::read_whole(&*self.storage, &last.path)?;
            let bound = hint.max(last.base);
            let chain = walk_chain(&bytes, last.base, last.salt, Some(bound));
            self.end = chain.end_offset.min(hint);
            if chain.end_offset < hint && hint > last.base {
                self.notes.push(format!(
                    "the valid records of {} end at offset {}, below the durable end {} the writer published",
                    last.path.display(),
                    chain.end_offset,
                    hint
                ));
            }
            return Ok(());
        }
        match recovery::recover(&*self.storage, &self.dir, Mode::DryRun) {
            Ok(rec) => {
                let mut report = rec.report;
                self.end = report.end_offset;
                match consumer::load_clients(
                    &*self.storage,
                    &self.dir,
                    report.first_offset,
                    report.end_offset,
                    false,
                ) {
                    Ok(loaded) => {
                        report.cursors = loaded.repairs;
                        report.removed_temp_files.extend(loaded.removed_temp_files);
                        report.unknown_files.extend(loaded.unknown_files);
                    }
                    Err(e) => self.notes.push(format!("clients could not be loaded: {e}")),
                }
                report
                    .unknown_files
                    .retain(|p| p.file_name().is_none_or(|n| n != SALVAGE_DIR));
                self.report = Some(report);
            }
            Err(e) => {
                self.recovery_error = Some(e.to_string());
                // Show what can be read: the valid records of the last segment.
                let bytes = recovery::read_whole(&*self.storage, &last.path)?;
                self.end = walk_chain(&bytes, last.base, last.salt, None).end_offset;
            }
        }
        Ok(())
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether another handle (in this or another process) has the log open
    /// for writing.
    pub fn writer_active(&self) -> bool {
        self.writer_active
    }

    /// The durable end published by the writer in `durq.end`, if readable.
    pub fn end_hint(&self) -> Option<u64> {
        self.end_hint
    }

    /// The oldest retained offset.
    pub fn first_offset(&self) -> u64 {
        self.first
    }

    /// The view's end: every offset below it is durable and shown.
    pub fn end_offset(&self) -> u64 {
        self.end
    }

    /// The size of the newest segment file (the size new segments get).
    pub fn segment_size(&self) -> Option<u64> {
        self.segments.last().map(|m| m.size)
    }

    /// What `Log::open` would repair (a dry run), when no writer is active
    /// and recovery does not fail.
    pub fn report(&self) -> Option<&RecoveryReport> {
        self.report.as_ref()
    }

    /// Why recovery would fail (damage that needs `durq recover --salvage`),
    /// if it would.
    pub fn recovery_error(&self) -> Option<&str> {
        self.recovery_error.as_deref()
    }

    /// Things worth knowing about how the view was made.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// How many files salvage has set aside in `DIR/salvage/`.
    pub fn salvage_files(&self) -> usize {
        self.salvage_files
    }

    /// Total size of the segment files whose header could be read.
    pub fn segment_bytes(&self) -> u64 {
        self.segments.iter().map(|m| m.size).sum()
    }

    /// The segment files, oldest first.
    pub fn segments(&self) -> Vec<SegmentView> {
        let mut out = Vec::with_capacity(self.segments.len());
        for (i, m) in self.segments.iter().enumerate() {
            let next = self.segments.get(i + 1).map_or(u64::MAX, |n| n.base);
            out.push(SegmentView {
                path: m.path.clone(),
                seq: m.seq,
                first_offset: m.base,
                end_offset: next.min(self.end).max(m.base),
                size_bytes: m.size,
            });
        }
        out
    }

    /// Every client, sorted by name, with its acknowledged position and lag
    /// against the view's end. Writes nothing.
    pub fn clients(&self) -> Result<Vec<ClientView>> {
        // With a writer active, positions may be ahead of the (older) end
        // this view read: show them as they are.
        let end = if self.writer_active {
            u64::MAX
        } else {
            self.end
        };
        let loaded = consumer::load_clients(&*self.storage, &self.dir, self.first, end, false)?;
        Ok(loaded
            .clients
            .into_iter()
            .map(|(name, entry)| match entry {
                ClientEntry::Ready(c) => {
                    let acked = c.durable_acked();
                    ClientView {
                        name,
                        acked: Some(acked),
                        lag: Some(self.end.saturating_sub(acked)),
                        error: None,
                    }
                }
                ClientEntry::Broken { error, .. } => ClientView {
                    name,
                    acked: None,
                    lag: None,
                    error: Some(error),
                },
            })
            .collect())
    }

    /// Iterates over the records from `from` (or the first retained offset,
    /// if older) to the view's end, checking every checksum. Stops after the
    /// first error (damage names the file and byte position).
    pub fn records(&self, from: u64) -> Records<'_> {
        Records {
            view: self,
            next: from.max(self.first),
            cur: None,
            failed: false,
        }
    }

    /// Reads every record of every segment and every cursor file, checking
    /// every checksum. `progress` is called with the number of bytes read
    /// after each segment. Errors reading files are findings, not failures.
    pub fn analyze(&self, progress: &mut dyn FnMut(u64)) -> Analysis {
        let mut a = Analysis {
            dir: self.dir.clone(),
            writer_active: self.writer_active,
            first_offset: self.first,
            end_offset: self.end,
            ..Analysis::default()
        };
        a.problems.extend(self.header_problems.iter().cloned());
        a.problems.extend(self.layout_problems.iter().cloned());
        a.notes.extend(self.layout_notes.iter().cloned());
        let metas: std::collections::HashMap<&Path, &SegmentMeta> = self
            .segments
            .iter()
            .map(|m| (m.path.as_path(), m))
            .collect();
        let n = self.files.len();
        for (i, (_, _, path)) in self.files.iter().enumerate() {
            let gap = self.gaps.contains(&i);
            if gap {
                a.problems.push(finding(
                    "missing_segment",
                    path,
                    None,
                    None,
                    self.gap_message(i),
                ));
                a.missing.push(i);
            }
            // A segment whose header could not be read is a problem
            // already reported.
            let Some(&meta) = metas.get(path.as_path()) else {
                continue;
            };
            let role = if i + 1 == n {
                if self.writer_active {
                    Role::Bounded { bound: self.end }
                } else {
                    Role::Last
                }
            } else if gap {
                Role::Sealed { next_base: None }
            } else {
                Role::Sealed {
                    next_base: Some(self.files[i + 1].0),
                }
            };
            let bytes = match recovery::read_whole(&*self.storage, &meta.path) {
                Ok(b) => b,
                Err(e) => {
                    a.problems.push(error_finding("unreadable", &meta.path, &e));
                    progress(meta.size);
                    continue;
                }
            };
            let seg = analyze_segment(&bytes, meta, role);
            drop(bytes);
            a.records += seg.records;
            a.bytes += meta.size;
            a.problems.extend(seg.problems.iter().cloned());
            a.notes.extend(seg.notes.iter().cloned());
            a.segments.push(seg);
            progress(meta.size);
        }
        let placeholders: u64 = a.segments.iter().map(|s| s.placeholders).sum();
        if placeholders > 0 {
            a.notes.push(finding(
                "placeholders",
                &self.dir,
                None,
                None,
                format!(
                    "{placeholders} offset(s) hold placeholders for records lost to damage and set \
                     aside by an earlier salvage (see {SALVAGE_DIR}/); consumers skip them"
                ),
            ));
        }
        if !self.writer_active {
            for t in &self.temps {
                a.notes.push(finding(
                    "leftover",
                    t,
                    None,
                    None,
                    "leftover temporary file (an unfinished segment creation); open removes it",
                ));
            }
        }
        for u in &self.unknown {
            a.notes.push(finding(
                "unknown_file",
                u,
                None,
                None,
                "not a durq file; left alone",
            ));
        }
        for note in &self.notes {
            a.notes
                .push(finding("view", &self.dir, None, None, note.clone()));
        }
        self.check_clients(&mut a);
        a
    }

    /// What is wrong at gap `i` (after `files[i]`), in words: the missing
    /// numbers, the offsets made unreadable, and the group directories
    /// that should hold the missing segments but do not exist.
    fn gap_message(&self, i: usize) -> String {
        let (_, seq, _) = &self.files[i];
        let (next_base, next_seq, next_path) = &self.files[i + 1];
        let expected = seq.wrapping_add(1);
        let mut msg = format!(
            "segment missing after this one: the next segment should be number {expected}, \
             found {} (number {next_seq}); offsets from this segment's end to {next_base} are \
             unreadable",
            next_path.display()
        );
        if *next_seq > expected {
            // Groups that would hold the missing segments and have no
            // directory at all.
            let (lo, hi) = (names::group_of(expected), names::group_of(next_seq - 1));
            let present: std::collections::BTreeSet<u64> =
                self.groups.iter().map(|g| g.number).collect();
            let absent = (hi - lo + 1) - present.range(lo..=hi).count() as u64;
            if let Some(g) = (lo..=hi).find(|g| !present.contains(g)) {
                let name = format!(
                    "BASE-{g:0width$}{}",
                    names::GROUP_SUFFIX,
                    width = names::SEGMENT_NAME_DIGITS
                );
                if absent == 1 {
                    msg.push_str(&format!(
                        "; segment group {g} has no directory ({name}) in {}",
                        self.dir.display()
                    ));
                } else {
                    msg.push_str(&format!(
                        "; {absent} segment groups have no directory in {}, the first being \
                         group {g} ({name})",
                        self.dir.display()
                    ));
                }
            }
        }
        msg
    }

    fn check_clients(&self, a: &mut Analysis) {
        let dir = self.dir.join(names::CLIENTS_DIR);
        if !self.storage.is_dir(&dir) {
            return;
        }
        let listing = match self.storage.list_dir(&dir) {
            Ok(l) => l,
            Err(e) => {
                a.problems.push(error_finding(
                    "unreadable",
                    &dir,
                    &Error::io("list", &dir, e),
                ));
                return;
            }
        };
        let mut names_seen = std::collections::BTreeSet::new();
        for file in listing {
            let path = dir.join(&file);
            if file.ends_with(names::TEMP_SUFFIX) {
                if !self.writer_active {
                    a.notes.push(finding(
                        "leftover",
                        &path,
                        None,
                        None,
                        "leftover temporary cursor file; open removes it",
                    ));
                }
                continue;
            }
            match cursor::client_of_file(&file) {
                Some(name) if names::validate_client_name(name).is_ok() => {
                    names_seen.insert(name.to_owned());
                }
                _ => a.notes.push(finding(
                    "unknown_file",
                    &path,
                    None,
                    None,
                    "not a durq file; left alone",
                )),
            }
        }
        for name in names_seen {
            a.clients_checked += 1;
            self.check_client(a, &ClientFiles::new(&dir, &name));
        }
    }

    fn check_client(&self, a: &mut Analysis, files: &ClientFiles) {
        let storage = &*self.storage;
        let name = &files.name;
        let mut best: Option<Snapshot> = None;
        let mut any_slot = false;
        let mut slot_problems = Vec::new();
        for slot in 0..2u64 {
            let path = files.slot(slot);
            match read_optional(storage, &path) {
                Ok(None) => {}
                Ok(Some(bytes)) => {
                    any_slot = true;
                    match Snapshot::decode(&bytes) {
                        Ok(s) if s.generation % 2 == slot => {
                            if best.is_none_or(|b| s.generation > b.generation) {
                                best = Some(s);
                            }
                        }
                        Ok(s) => slot_problems.push((
                            path,
                            format!("holds generation {} in the wrong slot", s.generation),
                        )),
                        Err(why) => slot_problems.push((path, why)),
                    }
                }
                Err(e) => a.problems.push(error_finding("unreadable", &path, &e)),
            }
        }
        if !any_slot {
            a.notes.push(finding(
                "cursor",
                &files.journal(),
                None,
                None,
                format!(
                    "client {name:?}: journal without cursor (an unfinished client creation); open removes it"
                ),
            ));
            return;
        }
        for (path, why) in slot_problems {
            let consequence = match best {
                Some(s) => format!("the other slot (generation {}) is used", s.generation),
                None => "no valid generation remains: the client is unusable".into(),
            };
            a.problems.push(finding(
                "cursor",
                &path,
                Some(0),
                None,
                format!("client {name:?}: {why}; {consequence}"),
            ));
        }
        let Some(snap) = best else { return };
        let jpath = files.journal();
        let jbytes = match read_optional(storage, &jpath) {
            Ok(Some(b)) => b,
            Ok(None) => {
                a.notes.push(finding(
                    "journal",
                    &jpath,
                    None,
                    None,
                    format!(
                        "client {name:?}: ack journal missing; it is recreated at the next ack"
                    ),
                ));
                return;
            }
            Err(e) => {
                a.problems.push(error_finding("unreadable", &jpath, &e));
                return;
            }
        };
        if jbytes.len() as u64 != JOURNAL_LEN {
            a.problems.push(finding(
                "journal",
                &jpath,
                None,
                None,
                format!(
                    "client {name:?}: ack journal is {} bytes, expected {JOURNAL_LEN}",
                    jbytes.len()
                ),
            ));
        }
        let mut acked = snap.acked;
        let mut bad: Vec<usize> = Vec::new();
        let mut last_current: Option<usize> = None;
        for (i, entry) in jbytes.chunks_exact(JOURNAL_ENTRY_LEN).enumerate() {
            match cursor::decode_entry(entry) {
                Some((generation, pos)) if generation == snap.generation => {
                    acked = acked.max(pos);
                    last_current = Some(i);
                }
                Some(_) => {}
                None if entry.iter().any(|&b| b != 0) => bad.push(i),
                None => {}
            }
        }
        for i in bad {
            let position = Some((i * JOURNAL_ENTRY_LEN) as u64);
            if last_current.is_some_and(|l| l > i) {
                a.problems.push(finding(
                    "journal",
                    &jpath,
                    position,
                    None,
                    format!(
                        "client {name:?}: journal entry {i} fails its checksum but later entries are valid"
                    ),
                ));
            } else {
                a.notes.push(finding(
                    "journal",
                    &jpath,
                    position,
                    None,
                    format!(
                        "client {name:?}: journal entry {i} is not valid (the torn remains of an \
                         acknowledgement that never returned, or an old generation's leftover): ignored"
                    ),
                ));
            }
        }
        if !self.writer_active && acked > self.end {
            a.notes.push(finding(
                "cursor",
                &files.slot(snap.generation),
                None,
                None,
                format!(
                    "client {name:?}: acknowledged position {acked} is past the log's end {}; open clamps it",
                    self.end
                ),
            ));
        } else if acked < self.first {
            a.notes.push(finding(
                "cursor",
                &files.slot(snap.generation),
                None,
                None,
                format!(
                    "client {name:?}: acknowledged position {acked} is older than the first retained \
                     offset {}; its consumer reports the gap until its position is set",
                    self.first
                ),
            ));
        }
    }

    /// Plans (with `execute == false`) or carries out the salvage of every
    /// damaged segment found by `analysis` (which must come from this view).
    ///
    /// For each damaged segment: the file is copied into `DIR/salvage/`
    /// (written, synced, directory synced); a rebuilt segment with the same
    /// header, every readable record copied verbatim and a placeholder
    /// ([`FLAG_LOST`]) at every lost offset is written to a temporary file
    /// in the log directory and synced, renamed over the segment in its
    /// group directory, and the group directory and the log directory are
    /// synced. A single missing segment between two others is recreated
    /// holding only placeholders, in the group directory its number belongs
    /// to (created, as the engine creates one, if it is the group's first
    /// segment and the group has no directory). Anything else (a header
    /// that cannot be read, a breach of the layout rules, a segment file of
    /// an older format) is reported as not salvageable.
    ///
    /// Executing requires a view opened with [`Access::Exclusive`].
    pub fn salvage(&self, analysis: &Analysis, execute: bool) -> Result<SalvageReport> {
        if execute && (self.lock.is_none() || self.writer_active) {
            return Err(Error::InvalidArgument(
                "salvage needs the log opened exclusively (Access::Exclusive)".into(),
            ));
        }
        let mut out = SalvageReport {
            executed: execute,
            ..SalvageReport::default()
        };
        for p in &self.header_problems {
            out.unsalvageable.push(finding(
                p.kind,
                &p.file,
                p.position,
                None,
                format!(
                    "{}; a segment whose header is unreadable cannot be salvaged automatically \
                     (its salt is needed to recognise its records): move it aside by hand",
                    p.message
                ),
            ));
        }
        for p in &self.layout_problems {
            let remedy = if p.kind == "old_format" {
                "salvage does not convert segments of older formats: `durq upgrade DIR` converts \
                 a format-2 log (or finishes an interrupted upgrade) in place"
            } else {
                "salvage does not move, rename or remove files and directories: put them where \
                 the layout rules want them by hand (see docs/recovery.md)"
            };
            out.unsalvageable.push(finding(
                p.kind,
                &p.file,
                p.position,
                None,
                format!("{}; {remedy}", p.message),
            ));
        }
        for p in &analysis.problems {
            let segment_or_group = p.file.extension().is_some_and(|e| e == "seg")
                || self.groups.iter().any(|g| g.path == p.file);
            if p.kind == "unreadable" && segment_or_group {
                out.unsalvageable.push(p.clone());
            }
        }
        for seg in &analysis.segments {
            if seg.status != SegmentStatus::Damaged {
                continue;
            }
            let meta = match self.segments.iter().find(|m| m.path == seg.path) {
                Some(m) => m.clone(),
                None => continue,
            };
            let action = self.salvage_segment(&meta, seg, execute)?;
            match action {
                Ok(a) => out.actions.push(a),
                Err(f) => out.unsalvageable.push(f),
            }
        }
        for &i in &analysis.missing {
            match self.recreate_missing(analysis, i, execute)? {
                Ok(a) => out.actions.push(a),
                Err(f) => out.unsalvageable.push(f),
            }
        }
        Ok(out)
    }

    fn salvage_segment(
        &self,
        meta: &SegmentMeta,
        seg: &SegmentReport,
        execute: bool,
    ) -> Result<std::result::Result<SalvageAction, Finding>> {
        let bytes = recovery::read_whole(&*self.storage, &meta.path)?;
        // The analysis was made from these same bytes (the lock is held).
        let mut buf = Vec::with_capacity(meta.size as usize);
        buf.extend_from_slice(&meta.header().encode());
        let mut lost_iter = seg.lost.iter().flat_map(|s| s.start..s.end).peekable();
        let total = seg.kept.len() as u64 + seg.lost.iter().map(Span::len).sum::<u64>();
        let mut written = 0u64;
        let place = |buf: &mut Vec<u8>, off: u64, written: &mut u64| {
            *written += 1;
            let flags = if *written == total {
                FLAG_LOST | FLAG_END_OF_WRITE
            } else {
                FLAG_LOST
            };
            record::encode_into(
                buf,
                meta.salt,
                off,
                flags,
                &[],
                &record::payload_hasher(&[]),
            );
        };
        for f in &seg.kept {
            while let Some(&off) = lost_iter.peek() {
                if off >= f.offset {
                    break;
                }
                place(&mut buf, off, &mut written);
                lost_iter.next();
            }
            buf.extend_from_slice(&bytes[f.pos..f.pos + f.len]);
            written += 1;
        }
        for off in lost_iter {
            place(&mut buf, off, &mut written);
        }
        if buf.len() as u64 > meta.size {
            return Ok(Err(finding(
                "unsalvageable",
                &meta.path,
                None,
                None,
                format!(
                    "the rebuilt segment ({} bytes) would not fit in {} bytes; salvage it by hand",
                    buf.len(),
                    meta.size
                ),
            )));
        }
        buf.resize(meta.size as usize, 0);
        let mut action = SalvageAction {
            kind: "rebuilt",
            segment: meta.path.clone(),
            set_aside: None,
            kept_records: seg.kept.len() as u64,
            lost: seg.lost.clone(),
            lost_records: seg.lost.iter().map(Span::len).sum(),
            torn_records_dropped: seg.torn.as_ref().map_or(0, |t| t.records_discarded),
            damaged_bytes: seg.damaged_bytes.clone(),
        };
        if execute {
            let aside = self.set_aside(&meta.path, &bytes, &action)?;
            action.set_aside = Some(aside);
            self.place_segment(layout::group_dir_of(&meta.path), &meta.path, &buf)?;
        }
        Ok(Ok(action))
    }

    fn recreate_missing(
        &self,
        analysis: &Analysis,
        i: usize,
        execute: bool,
    ) -> Result<std::result::Result<SalvageAction, Finding>> {
        let (_, prev_seq, prev_path) = &self.files[i];
        let (next_base, next_seq, next_path) = &self.files[i + 1];
        let (prev_seq, next_seq, next_base) = (*prev_seq, *next_seq, *next_base);
        let fail = |why: String| {
            Ok(Err(finding(
                "missing_segment",
                prev_path,
                None,
                None,
                format!("segment missing after this one cannot be recreated automatically: {why}"),
            )))
        };
        if next_seq <= prev_seq {
            return fail(format!(
                "the segment after it, {}, carries number {next_seq}, not a number above this \
                 one's ({prev_seq})",
                next_path.display()
            ));
        }
        if next_seq != prev_seq + 2 {
            return fail(format!(
                "{} segments are missing (numbers {} to {}) and their first offsets are unknown",
                next_seq - prev_seq - 1,
                prev_seq + 1,
                next_seq - 1
            ));
        }
        let meta_of = |path: &Path| self.segments.iter().find(|m| m.path == path);
        let (Some(prev), Some(prev_report)) = (
            meta_of(prev_path),
            analysis.segments.iter().find(|s| &s.path == prev_path),
        ) else {
            return fail("the segment before it could not be read".into());
        };
        if prev_report.status != SegmentStatus::Clean {
            return fail(
                "the segment before it is damaged, so where the missing one began is unknown"
                    .into(),
            );
        }
        let base = prev_report.end_offset;
        if base >= next_base {
            return fail(format!(
                "the segment before it ends at offset {base}, not below the next segment's first \
                 offset {next_base}"
            ));
        }
        // The group directory it belongs in; a group it would be the first
        // segment of is named after its base offset.
        let seq = prev_seq + 1;
        let number = names::group_of(seq);
        let mut named = self.groups.iter().filter(|g| g.number == number);
        let group = match (named.next(), named.next()) {
            (Some(_), Some(_)) => {
                return fail(format!(
                    "more than one directory is named as segment group {number}"
                ));
            }
            (Some(g), None) if seq == g.first_seq() && g.base != base => {
                return fail(format!(
                    "it would be the first segment of group {}, whose name says that segment \
                     starts at offset {}, but the segment before it ends at offset {base}",
                    g.path.display(),
                    g.base
                ));
            }
            (Some(g), None) => g.clone(),
            (None, _) if seq == names::group_of(seq) * names::SEGMENTS_PER_GROUP => {
                Group::new(&self.dir, base, number)
            }
            (None, _) => {
                return fail(format!(
                    "segment group {number}, where it belongs, has no directory, and the \
                     segment is not the group's first (whose base offset names the group)"
                ));
            }
        };
        let path = group.segment_path(base, seq);
        if self.storage.exists(&path) {
            return fail(format!(
                "{} exists but was not listed (its group could not be listed)",
                path.display()
            ));
        }
        let next_size = meta_of(next_path).map_or(prev.size, |m| m.size);
        let size = prev.size.max(next_size);
        let lost = Span::new(base..next_base);
        let need = SEGMENT_HEADER_LEN as u64 + lost.len().saturating_mul(RECORD_HEADER_LEN as u64);
        if need > size {
            return fail(format!(
                "{} placeholders would not fit in a {size}-byte segment",
                lost.len()
            ));
        }
        let action = SalvageAction {
            kind: "recreated",
            segment: path.clone(),
            set_aside: None,
            kept_records: 0,
            lost: vec![lost],
            lost_records: lost.len(),
            torn_records_dropped: 0,
            damaged_bytes: Vec::new(),
        };
        if execute {
            let meta = SegmentMeta {
                base,
                seq,
                salt: crate::segment::random_salt(),
                size,
                path: path.clone(),
            };
            let mut buf = Vec::with_capacity(size as usize);
            buf.extend_from_slice(&meta.header().encode());
            for off in lost.start..lost.end {
                let flags = if off + 1 == lost.end {
                    FLAG_LOST | FLAG_END_OF_WRITE
                } else {
                    FLAG_LOST
                };
                record::encode_into(
                    &mut buf,
                    meta.salt,
                    off,
                    flags,
                    &[],
                    &record::payload_hasher(&[]),
                );
            }
            buf.resize(size as usize, 0);
            self.place_segment(&group.path, &path, &buf)?;
        }
        Ok(Ok(action))
    }

    /// Copies `bytes` (a damaged segment) into `DIR/salvage/`, with a text
    /// note of what was lost; both synced, and the directory.
    fn set_aside(&self, path: &Path, bytes: &[u8], action: &SalvageAction) -> Result<PathBuf> {
        let storage = &*self.storage;
        let sdir = self.dir.join(SALVAGE_DIR);
        storage
            .create_dir_all(&sdir)
            .map_err(|e| Error::io("create directory", &sdir, e))?;
        // Synced whether or not this call made it: an earlier salvage may
        // have made it and failed before its sync.
        storage
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync directory", &self.dir, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let existing = storage
            .list_dir(&sdir)
            .map_err(|e| Error::io("list", &sdir, e))?;
        let mut n = 0u32;
        let target = loop {
            let candidate = if n == 0 {
                format!("{name}.{secs}.damaged")
            } else {
                format!("{name}.{secs}-{n}.damaged")
            };
            if !existing.contains(&candidate) {
                break sdir.join(candidate);
            }
            n += 1;
        };
        let write = |p: &Path, data: &[u8]| -> Result<()> {
            let f = storage
                .open_file(p, OpenMode::CreateNew)
                .map_err(|e| Error::io("create", p, e))?;
            f.write_at(data, 0).map_err(|e| Error::io("write", p, e))?;
            f.sync_all().map_err(|e| Error::io("sync", p, e))
        };
        write(&target, bytes)?;
        let mut note = format!(
            "durq salvage of {}\nkept records: {}\nlost records: {}\nlost offsets:{}\ndamaged byte ranges:{}\n",
            path.display(),
            action.kept_records,
            action.lost_records,
            action
                .lost
                .iter()
                .map(|s| format!(" {s}"))
                .collect::<String>(),
            action
                .damaged_bytes
                .iter()
                .map(|s| format!(" {}..{}", s.start, s.end))
                .collect::<String>(),
        );
        if action.torn_records_dropped > 0 {
            note.push_str(&format!(
                "torn tail: {} records of the unfinished last write dropped\n",
                action.torn_records_dropped
            ));
        }
        let mut note_path = target.clone().into_os_string();
        note_path.push(".txt");
        write(Path::new(&note_path), note.as_bytes())?;
        storage
            .sync_dir(&sdir)
            .map_err(|e| Error::io("sync directory", &sdir, e))?;
        Ok(target)
    }

    /// Writes `buf` as the segment file `path` in the group directory
    /// `group` crash-safely, in the order the engine creates a segment: the
    /// group directory is created if it does not exist, the bytes are
    /// written to a temporary file in the log directory (which open removes
    /// if this is interrupted) and synced, the file is renamed into the
    /// group (replacing the segment there, if any, atomically), and the
    /// group directory and then the log directory are synced, so that the
    /// segment's entry and its group's are both durable.
    fn place_segment(&self, group: &Path, path: &Path, buf: &[u8]) -> Result<()> {
        let storage = &*self.storage;
        let made_group = storage
            .create_dir_all(group)
            .map_err(|e| Error::io("create directory", group, e))?;
        let tmp = crate::segment::temp_path(&self.dir, "salvage");
        let written = storage
            .open_file(&tmp, OpenMode::CreateNew)
            .and_then(|f| f.write_at(buf, 0).and_then(|()| f.sync_all()))
            .map_err(|e| Error::io("write rebuilt segment", &tmp, e))
            .and_then(|()| {
                storage
                    .rename(&tmp, path)
                    .map_err(|e| Error::io("rename rebuilt segment to", path, e))
            });
        if let Err(e) = written {
            let _ = storage.remove_file(&tmp);
            if made_group {
                let _ = storage.remove_dir(group);
            }
            return Err(e);
        }
        for d in [group, self.dir.as_path()] {
            storage
                .sync_dir(d)
                .map_err(|e| Error::io("sync directory", d, e))?;
        }
        Ok(())
    }
}

fn error_finding(kind: &'static str, fallback: &Path, e: &Error) -> Finding {
    match e {
        Error::Corrupt {
            path,
            position,
            reason,
        } => finding(kind, path, Some(*position), None, reason.clone()),
        Error::Io { path, .. } | Error::NotDurq { path, .. } => {
            finding(kind, path, None, None, e.to_string())
        }
        Error::UnsupportedVersion { path, .. } => finding(kind, path, Some(8), None, e.to_string()),
        _ => finding(kind, fallback, None, None, e.to_string()),
    }
}

/// An iterator over the records of a [`LogView`], from [`LogView::records`].
pub struct Records<'a> {
    view: &'a LogView,
    next: u64,
    cur: Option<Loaded>,
    failed: bool,
}

struct Loaded {
    idx: usize,
    bytes: Vec<u8>,
    pos: usize,
    limit: u64,
}

impl std::fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Records<'_> {
    /// The offset the next item will have.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    fn load(&mut self) -> Result<()> {
        let segs = &self.view.segments;
        let idx = match segs.iter().rposition(|m| m.base <= self.next) {
            Some(i) => i,
            None => {
                return Err(Error::Truncated {
                    offset: self.next,
                    first: self.view.first,
                });
            }
        };
        let meta = &segs[idx];
        let limit = segs
            .get(idx + 1)
            .map_or(self.view.end, |n| n.base.min(self.view.end));
        if self.next >= limit {
            return Err(Error::corrupt(
                &meta.path,
                0,
                format!(
                    "offset {} should be in this segment or the next, which starts at {limit}: a segment is missing",
                    self.next
                ),
            ));
        }
        let bytes = recovery::read_whole(&*self.view.storage, &meta.path)?;
        let mut pos = SEGMENT_HEADER_LEN;
        let mut off = meta.base;
        while off < self.next {
            let d = expect_record(&bytes, pos, off, meta)?;
            pos += d.header.encoded_len();
            off += 1;
        }
        self.cur = Some(Loaded {
            idx,
            bytes,
            pos,
            limit,
        });
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Entry>> {
        if self.next >= self.view.end {
            return Ok(None);
        }
        if self.cur.as_ref().is_none_or(|c| self.next >= c.limit) {
            self.cur = None;
            self.load()?;
        }
        let Some(c) = self.cur.as_mut() else {
            return Ok(None);
        };
        let meta = &self.view.segments[c.idx];
        let d = expect_record(&c.bytes, c.pos, self.next, meta)?;
        let entry = Entry {
            offset: self.next,
            payload: if d.header.is_lost() {
                None
            } else {
                Some(c.bytes[d.payload_start..d.payload_end()].to_vec())
            },
            segment: meta.path.clone(),
            position: c.pos as u64,
        };
        c.pos += d.header.encoded_len();
        self.next += 1;
        Ok(Some(entry))
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn expect_record(
    bytes: &[u8],
    pos: usize,
    offset: u64,
    meta: &SegmentMeta,
) -> Result<record::Decoded> {
    match record::decode(bytes, pos, meta.salt) {
        Ok(d) if d.header.offset == offset => Ok(d),
        Ok(d) => Err(Error::corrupt(
            &meta.path,
            pos as u64,
            format!(
                "expected record {offset} here, found record {}",
                d.header.offset
            ),
        )),
        Err(why) => Err(Error::corrupt(
            &meta.path,
            pos as u64,
            format!("expected record {offset} here: {}", why.describe()),
        )),
    }
}

/// What [`LogView::analyze`] found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Analysis {
    /// The log directory.
    pub dir: PathBuf,
    /// Whether a writer was active (then only records below its published
    /// durable end were checked in the active segment).
    pub writer_active: bool,
    /// The first retained offset.
    pub first_offset: u64,
    /// The view's end.
    pub end_offset: u64,
    /// Records checked (placeholders included).
    pub records: u64,
    /// Segment bytes read.
    pub bytes: u64,
    /// Clients whose files were checked.
    pub clients_checked: usize,
    /// Every segment, oldest first.
    pub segments: Vec<SegmentReport>,
    /// Damage: anything that is not sound.
    pub problems: Vec<Finding>,
    /// Things open repairs by itself, and other remarks.
    pub notes: Vec<Finding>,
    #[serde(skip)]
    missing: Vec<usize>,
}

impl Analysis {
    /// Whether no problem was found.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether some damage calls for [`LogView::salvage`], which acts on it
    /// or reports it as not salvageable.
    pub fn needs_salvage(&self) -> bool {
        !self.missing.is_empty()
            || self
                .segments
                .iter()
                .any(|s| s.status == SegmentStatus::Damaged)
            || self.problems.iter().any(|p| {
                matches!(
                    p.kind,
                    "segment_header" | "unreadable" | "layout" | "old_format"
                )
            })
    }
}

/// The state of one segment after analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentStatus {
    /// Every record is valid, in sequence, up to where it should end.
    Clean,
    /// The last segment ends in the torn remains of an unfinished write,
    /// which open cuts (not damage).
    TornTail,
    /// Damage: see the segment's problems.
    Damaged,
}

/// The torn remains of the last write found at the end of the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TornPart {
    /// Byte position where the valid records end.
    pub position: u64,
    /// Complete records of the unfinished write found beyond it.
    pub records_discarded: u64,
}

/// One segment after [`LogView::analyze`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentReport {
    /// The file.
    pub path: PathBuf,
    /// Its sequence number.
    pub seq: u64,
    /// Offset of its first record.
    pub first_offset: u64,
    /// Offset after its last record (lost ones included).
    pub end_offset: u64,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Valid records (placeholders included).
    pub records: u64,
    /// Placeholders left by an earlier salvage.
    pub placeholders: u64,
    /// The verdict.
    pub status: SegmentStatus,
    /// Offsets whose records cannot be read.
    pub lost: Vec<Span>,
    /// Byte ranges that hold no valid record and are not zero.
    pub damaged_bytes: Vec<Span>,
    /// The torn tail, in the last segment.
    pub torn: Option<TornPart>,
    #[serde(skip)]
    problems: Vec<Finding>,
    #[serde(skip)]
    notes: Vec<Finding>,
    #[serde(skip)]
    kept: Vec<Found>,
}

/// What [`LogView::salvage`] did (or would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SalvageReport {
    /// Whether it was carried out (`false`: a plan only).
    pub executed: bool,
    /// Segments rebuilt or recreated.
    pub actions: Vec<SalvageAction>,
    /// Damage that cannot be salvaged automatically.
    pub unsalvageable: Vec<Finding>,
}

/// One segment rebuilt (or recreated) by salvage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SalvageAction {
    /// `rebuilt` (a damaged segment) or `recreated` (a missing one).
    pub kind: &'static str,
    /// The segment file.
    pub segment: PathBuf,
    /// Where the damaged file was copied.
    pub set_aside: Option<PathBuf>,
    /// Records kept, copied verbatim.
    pub kept_records: u64,
    /// Offsets lost (each now holds a placeholder).
    pub lost: Vec<Span>,
    /// How many offsets were lost.
    pub lost_records: u64,
    /// Records of an unfinished last write dropped with a torn tail (as
    /// open drops them; they were never acknowledged).
    pub torn_records_dropped: u64,
    /// The damaged byte ranges (in the set-aside copy).
    pub damaged_bytes: Vec<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    offset: u64,
    pos: usize,
    len: usize,
    flags: u32,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    /// Not the last segment; `next_base` is where its records must end
    /// (`None` if the next segment is missing).
    Sealed { next_base: Option<u64> },
    /// The last segment, no writer active: the torn-tail rules apply.
    Last,
    /// The last segment of a log being written: check only below `bound`.
    Bounded { bound: u64 },
}

struct Chain {
    end_offset: u64,
    end_pos: usize,
    placeholders: u64,
    found: Vec<Found>,
}

/// Walks consecutive valid records from the segment's first record, up to
/// offset `limit` if given.
fn walk_chain(bytes: &[u8], base: u64, salt: u64, limit: Option<u64>) -> Chain {
    let mut c = Chain {
        end_offset: base,
        end_pos: SEGMENT_HEADER_LEN,
        placeholders: 0,
        found: Vec::new(),
    };
    while limit.is_none_or(|l| c.end_offset < l) {
        match record::decode(bytes, c.end_pos, salt) {
            Ok(d) if d.header.offset == c.end_offset => {
                if d.header.is_lost() {
                    c.placeholders += 1;
                }
                c.found.push(Found {
                    offset: c.end_offset,
                    pos: c.end_pos,
                    len: d.header.encoded_len(),
                    flags: d.header.flags,
                });
                c.end_pos += d.header.encoded_len();
                c.end_offset += 1;
            }
            _ => break,
        }
    }
    c
}

fn last_nonzero_from(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .iter()
        .rposition(|&b| b != 0)
        .map(|i| from + i)
}

/// Every valid record of the segment, wherever it is (8-byte aligned), with
/// offsets increasing within `base..upper`.
fn find_records(bytes: &[u8], base: u64, salt: u64, upper: u64) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let magic = record::RECORD_MAGIC.to_le_bytes();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos + RECORD_HEADER_LEN <= bytes.len() {
        if bytes[pos..pos + 4] == magic
            && let Ok(d) = record::decode(bytes, pos, salt)
        {
            let off = d.header.offset;
            if off >= base && off < upper && out.last().is_none_or(|l| off > l.offset) {
                let len = d.header.encoded_len();
                out.push(Found {
                    offset: off,
                    pos,
                    len,
                    flags: d.header.flags,
                });
                pos += len;
                continue;
            }
        }
        pos += record::RECORD_ALIGN;
    }
    out
}

/// `offset 7` or `offsets 7..10 (3 records)`.
fn offsets_phrase(s: &Span) -> String {
    if s.len() == 1 {
        format!("offset {}", s.start)
    } else {
        format!("offsets {}..{} ({} records)", s.start, s.end, s.len())
    }
}

/// Why the bytes at `pos` are not record `expected`, in words.
fn why_not(bytes: &[u8], pos: usize, expected: u64, salt: u64) -> String {
    match record::decode(bytes, pos, salt) {
        Ok(d) => format!(
            "valid record carries offset {} where offset {expected} belongs",
            d.header.offset
        ),
        Err(Invalid::Checksum) => match record::parse_header(&bytes[pos..], bytes.len() - pos) {
            Ok(h) if h.offset == expected => format!("record {expected} fails its checksum"),
            _ => format!("expected record {expected}: record checksum mismatch"),
        },
        Err(why) => format!("expected record {expected}: {}", why.describe()),
    }
}

/// Recovery's rule 2: a plausible record `expected` at `pos` whose checksum
/// fails although no sector's share of it ends in an unwritten (zero) byte
/// was written whole and then damaged; it is not a torn write.
fn written_whole_but_damaged(bytes: &[u8], pos: usize, expected: u64, salt: u64) -> bool {
    if record::decode(bytes, pos, salt) != Err(Invalid::Checksum) {
        return false;
    }
    let Ok(h) = record::parse_header(&bytes[pos..], bytes.len() - pos) else {
        return false;
    };
    if h.offset != expected {
        return false;
    }
    let end = pos + RECORD_HEADER_LEN + h.len as usize;
    let mut s = pos;
    while s < end {
        let e = (((s / SECTOR_BYTES) + 1) * SECTOR_BYTES).min(end);
        if bytes[e - 1] == 0 {
            return false;
        }
        s = e;
    }
    true
}

fn analyze_segment(bytes: &[u8], meta: &SegmentMeta, role: Role) -> SegmentReport {
    let mut rep = SegmentReport {
        path: meta.path.clone(),
        seq: meta.seq,
        first_offset: meta.base,
        end_offset: meta.base,
        size_bytes: meta.size,
        records: 0,
        placeholders: 0,
        status: SegmentStatus::Clean,
        lost: Vec::new(),
        damaged_bytes: Vec::new(),
        torn: None,
        problems: Vec::new(),
        notes: Vec::new(),
        kept: Vec::new(),
    };
    let (base, salt) = (meta.base, meta.salt);
    if let Role::Bounded { bound } = role {
        let bound = bound.max(base);
        let chain = walk_chain(bytes, base, salt, Some(bound));
        rep.records = chain.end_offset - base;
        rep.placeholders = chain.placeholders;
        rep.end_offset = chain.end_offset;
        if chain.end_offset < bound {
            rep.status = SegmentStatus::Damaged;
            rep.problems.push(finding(
                "record_damage",
                &meta.path,
                Some(chain.end_pos as u64),
                Some(Span::new(chain.end_offset..bound)),
                format!(
                    "{} (below the durable end {bound} published by the active writer)",
                    why_not(bytes, chain.end_pos, chain.end_offset, salt)
                ),
            ));
        }
        return rep;
    }
    let limit = match role {
        Role::Sealed { next_base } => next_base,
        _ => None,
    };
    let chain = walk_chain(bytes, base, salt, limit);
    let rest_zero = last_nonzero_from(bytes, chain.end_pos).is_none();
    let complete = match role {
        Role::Sealed {
            next_base: Some(nb),
        } => chain.end_offset == nb,
        _ => true,
    };
    if rest_zero && complete {
        rep.records = chain.end_offset - base;
        rep.placeholders = chain.placeholders;
        rep.end_offset = chain.end_offset;
        return rep;
    }
    if let Role::Last = role {
        let scan = recovery::scan_segment(bytes, base, salt);
        match scan.problem {
            None => {
                rep.records = chain.end_offset - base;
                rep.placeholders = chain.placeholders;
                rep.end_offset = chain.end_offset;
                return rep;
            }
            Some(ScanProblem::Torn {
                position,
                zero_until,
                records_discarded,
                reason,
            }) => {
                rep.records = scan.end_offset - base;
                rep.placeholders = chain.placeholders;
                rep.end_offset = scan.end_offset;
                rep.status = SegmentStatus::TornTail;
                rep.torn = Some(TornPart {
                    position,
                    records_discarded,
                });
                rep.kept = chain.found;
                rep.notes.push(finding(
                    "torn_tail",
                    &meta.path,
                    Some(position),
                    None,
                    format!(
                        "torn tail: {reason}; {} bytes and {records_discarded} complete record(s) of \
                         the unfinished last write (never acknowledged) follow; open cuts them and \
                         the log ends at offset {}",
                        zero_until - position,
                        scan.end_offset
                    ),
                ));
                return rep;
            }
            Some(ScanProblem::Damage { .. }) => {}
        }
    }
    // Damage: find every valid record and account for every gap.
    rep.status = SegmentStatus::Damaged;
    let upper = match role {
        Role::Sealed {
            next_base: Some(nb),
        } => nb,
        _ => u64::MAX,
    };
    let found = find_records(bytes, base, salt, upper);
    let contiguous = |found: &[Found], j: usize| -> bool {
        if j == 0 {
            found[0].pos == SEGMENT_HEADER_LEN && found[0].offset == base
        } else {
            let p = &found[j - 1];
            found[j].pos == p.pos + p.len && found[j].offset == p.offset + 1
        }
    };
    let after = |found: &[Found], j: usize| -> (u64, usize) {
        if j == 0 {
            (base, SEGMENT_HEADER_LEN)
        } else {
            let p = &found[j - 1];
            (p.offset + 1, p.pos + p.len)
        }
    };
    let mut cut = found.len();
    if let Role::Last = role {
        // The torn-tail rules, applied to the last gap: a final run of
        // records from one unfinished write after a tear is dropped, as
        // open would drop it.
        if let Some(j) = (0..found.len()).rev().find(|&j| !contiguous(&found, j)) {
            let (exp_off, exp_pos) = after(&found, j);
            let run = &found[j..];
            let one_write = run
                .iter()
                .take(run.len().saturating_sub(1))
                .all(|f| f.flags & FLAG_END_OF_WRITE == 0);
            if found[j].pos > exp_pos
                && one_write
                && !written_whole_but_damaged(bytes, exp_pos, exp_off, salt)
            {
                cut = j;
            }
        }
    }
    let mut exp_off = base;
    let mut exp_pos = SEGMENT_HEADER_LEN;
    for f in &found[..cut] {
        if f.pos != exp_pos || f.offset != exp_off {
            let lost = (f.offset > exp_off).then(|| Span::new(exp_off..f.offset));
            let bytes_span = (f.pos > exp_pos).then(|| Span::new(exp_pos as u64..f.pos as u64));
            let reason = why_not(bytes, exp_pos, exp_off, salt);
            let msg = match (&lost, &bytes_span) {
                (Some(l), Some(b)) => format!(
                    "{reason}; {} unreadable, bytes {}..{} damaged",
                    offsets_phrase(l),
                    b.start,
                    b.end
                ),
                (Some(l), None) => format!("{reason}; {} missing", offsets_phrase(l)),
                (None, Some(b)) => format!(
                    "{reason}; bytes {}..{} hold no valid record (no offset lost)",
                    b.start, b.end
                ),
                (None, None) => reason,
            };
            rep.problems.push(finding(
                "record_damage",
                &meta.path,
                Some(exp_pos as u64),
                lost,
                msg,
            ));
            rep.lost.extend(lost);
            rep.damaged_bytes.extend(bytes_span);
        }
        exp_off = f.offset + 1;
        exp_pos = f.pos + f.len;
    }
    let kept = found[..cut].to_vec();
    let trailing_end = last_nonzero_from(bytes, exp_pos).map(|i| (i + 1) as u64);
    match role {
        Role::Sealed { next_base } => {
            let lost = next_base
                .filter(|&nb| nb > exp_off)
                .map(|nb| Span::new(exp_off..nb));
            if lost.is_some() || trailing_end.is_some() {
                let reason = if trailing_end.is_some() {
                    why_not(bytes, exp_pos, exp_off, salt)
                } else {
                    format!("the records end at offset {exp_off}")
                };
                let msg = match (lost, next_base) {
                    (Some(l), _) => format!(
                        "{reason}; {} unreadable: the next segment starts at {}",
                        offsets_phrase(&l),
                        l.end
                    ),
                    (None, Some(_)) => {
                        format!(
                            "{reason}; bytes after the last record are not zero (no offset lost)"
                        )
                    }
                    (None, None) => format!(
                        "{reason}; the next segment is missing, so how many records followed is unknown"
                    ),
                };
                rep.problems.push(finding(
                    "record_damage",
                    &meta.path,
                    Some(exp_pos as u64),
                    lost,
                    msg,
                ));
                rep.lost.extend(lost);
                if let Some(t) = trailing_end {
                    rep.damaged_bytes.push(Span::new(exp_pos as u64..t));
                }
            }
            rep.end_offset = next_base.unwrap_or(exp_off).max(exp_off);
        }
        Role::Last => {
            rep.end_offset = exp_off;
            if cut < found.len() {
                let dropped = (found.len() - cut) as u64;
                rep.torn = Some(TornPart {
                    position: exp_pos as u64,
                    records_discarded: dropped,
                });
                rep.notes.push(finding(
                    "torn_tail",
                    &meta.path,
                    Some(exp_pos as u64),
                    None,
                    format!(
                        "torn tail after the damage: {dropped} record(s) of the unfinished last write \
                         (never acknowledged) follow a tear; salvage drops them as open would"
                    ),
                ));
            } else if let Some(t) = trailing_end {
                if written_whole_but_damaged(bytes, exp_pos, exp_off, salt) {
                    let l = Span::new(exp_off..exp_off + 1);
                    rep.problems.push(finding(
                        "record_damage",
                        &meta.path,
                        Some(exp_pos as u64),
                        Some(l),
                        format!(
                            "record {exp_off} fails its checksum although every sector of it was \
                             written (not a torn write); offset {exp_off} unreadable"
                        ),
                    ));
                    rep.lost.push(l);
                    rep.damaged_bytes.push(Span::new(exp_pos as u64..t));
                    rep.end_offset = exp_off + 1;
                } else {
                    rep.torn = Some(TornPart {
                        position: exp_pos as u64,
                        records_discarded: 0,
                    });
                    rep.notes.push(finding(
                        "torn_tail",
                        &meta.path,
                        Some(exp_pos as u64),
                        None,
                        format!(
                            "torn tail after the last record: {}; cut as open would",
                            why_not(bytes, exp_pos, exp_off, salt)
                        ),
                    ));
                }
            }
        }
        Role::Bounded { .. } => unreachable!("handled above"),
    }
    rep.records = kept.len() as u64;
    rep.placeholders = kept.iter().filter(|f| f.flags & FLAG_LOST != 0).count() as u64;
    rep.kept = kept;
    rep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{SegmentHeader, encode_into, payload_hasher};

    const SALT: u64 = 0x5EED;

    fn meta() -> SegmentMeta {
        SegmentMeta {
            base: 10,
            seq: 0,
            salt: SALT,
            size: 4096,
            path: PathBuf::from("seg"),
        }
    }

    /// A segment with one record per write, offsets from 10.
    fn segment(payloads: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let h = SegmentHeader {
            base_offset: 10,
            seq: 0,
            salt: SALT,
            segment_size: 4096,
        };
        let mut buf = h.encode().to_vec();
        let mut starts = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            starts.push(buf.len());
            encode_into(
                &mut buf,
                SALT,
                10 + i as u64,
                FLAG_END_OF_WRITE,
                p,
                &payload_hasher(p),
            );
        }
        buf.resize(4096, 0);
        (buf, starts)
    }

    #[test]
    fn clean_segments_have_no_findings() {
        let (b, _) = segment(&[b"a", b"bb", b"ccc"]);
        let r = analyze_segment(&b, &meta(), Role::Last);
        assert_eq!(r.status, SegmentStatus::Clean);
        assert_eq!(r.end_offset, 13);
        let r = analyze_segment(
            &b,
            &meta(),
            Role::Sealed {
                next_base: Some(13),
            },
        );
        assert_eq!(r.status, SegmentStatus::Clean);
    }

    #[test]
    fn sealed_segment_ending_early_loses_the_rest() {
        let (b, _) = segment(&[b"a", b"bb", b"ccc"]);
        let r = analyze_segment(
            &b,
            &meta(),
            Role::Sealed {
                next_base: Some(15),
            },
        );
        assert_eq!(r.status, SegmentStatus::Damaged);
        assert_eq!(r.lost, vec![Span::new(13..15)]);
    }

    #[test]
    fn a_flipped_bit_loses_exactly_one_offset() {
        let (mut b, starts) = segment(&[b"hello", b"world", b"again", b"more"]);
        b[starts[1] + RECORD_HEADER_LEN] ^= 1;
        for role in [
            Role::Last,
            Role::Sealed {
                next_base: Some(14),
            },
        ] {
            let r = analyze_segment(&b, &meta(), role);
            assert_eq!(r.status, SegmentStatus::Damaged, "{role:?}");
            assert_eq!(r.lost, vec![Span::new(11..12)]);
            assert_eq!(r.kept.len(), 3);
            assert_eq!(r.end_offset, 14);
            assert_eq!(r.problems[0].position, Some(starts[1] as u64));
        }
    }

    #[test]
    fn damaged_last_record_fully_written_is_lost_not_torn() {
        let (mut b, starts) = segment(&[b"hello", b"world"]);
        b[starts[1] + RECORD_HEADER_LEN] ^= 1;
        let r = analyze_segment(&b, &meta(), Role::Last);
        assert_eq!(r.status, SegmentStatus::Damaged);
        assert_eq!(r.lost, vec![Span::new(11..12)]);
        assert_eq!(r.end_offset, 12);
    }

    #[test]
    fn garbage_after_the_last_record_is_a_torn_tail() {
        let (mut b, starts) = segment(&[b"hello", b"world"]);
        let end = starts[1] + record::encoded_len(5);
        b[end..end + 30].fill(0x77);
        let r = analyze_segment(&b, &meta(), Role::Last);
        assert_eq!(r.status, SegmentStatus::TornTail);
        assert_eq!(r.end_offset, 12);
    }

    #[test]
    fn bounded_view_stops_at_the_bound() {
        let (mut b, starts) = segment(&[b"a", b"b", b"c"]);
        // Garbage past the bound is a write in progress: not judged.
        b[starts[2]] ^= 0xFF;
        let r = analyze_segment(&b, &meta(), Role::Bounded { bound: 12 });
        assert_eq!(r.status, SegmentStatus::Clean);
        let r = analyze_segment(&b, &meta(), Role::Bounded { bound: 13 });
        assert_eq!(r.status, SegmentStatus::Damaged);
    }

    /// The real file system, noting every change and sync made through it.
    #[derive(Debug, Default)]
    struct Recording {
        ops: Arc<std::sync::Mutex<Vec<(&'static str, PathBuf)>>>,
    }

    #[derive(Debug)]
    struct RecordingFile {
        inner: Box<dyn crate::storage::StorageFile>,
        path: PathBuf,
        ops: Arc<std::sync::Mutex<Vec<(&'static str, PathBuf)>>>,
    }

    impl Recording {
        fn note(&self, op: &'static str, path: &Path) {
            self.ops.lock().unwrap().push((op, path.to_owned()));
        }
    }

    impl Storage for Recording {
        fn create_dir_all(&self, dir: &Path) -> std::io::Result<bool> {
            let made = FsStorage.create_dir_all(dir)?;
            if made {
                self.note("mkdir", dir);
            }
            Ok(made)
        }
        fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
            FsStorage.list_dir(dir)
        }
        fn open_file(
            &self,
            path: &Path,
            mode: OpenMode,
        ) -> std::io::Result<Box<dyn crate::storage::StorageFile>> {
            let inner = FsStorage.open_file(path, mode)?;
            if mode == OpenMode::CreateNew {
                self.note("create", path);
            }
            Ok(Box::new(RecordingFile {
                inner,
                path: path.to_owned(),
                ops: self.ops.clone(),
            }))
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            FsStorage.rename(from, to)?;
            self.note("rename from", from);
            self.note("rename to", to);
            Ok(())
        }
        fn remove_file(&self, path: &Path) -> std::io::Result<()> {
            self.note("remove", path);
            FsStorage.remove_file(path)
        }
        fn remove_dir(&self, dir: &Path) -> std::io::Result<()> {
            self.note("rmdir", dir);
            FsStorage.remove_dir(dir)
        }
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            self.note("sync dir", dir);
            FsStorage.sync_dir(dir)
        }
        fn try_lock(&self, path: &Path) -> std::io::Result<LockGuard> {
            FsStorage.try_lock(path)
        }
        fn is_dir(&self, path: &Path) -> bool {
            FsStorage.is_dir(path)
        }
        fn exists(&self, path: &Path) -> bool {
            FsStorage.exists(path)
        }
    }

    impl crate::storage::StorageFile for RecordingFile {
        fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
            self.inner.read_at(buf, pos)
        }
        fn write_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()> {
            self.ops.lock().unwrap().push(("write", self.path.clone()));
            self.inner.write_at(buf, pos)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.ops.lock().unwrap().push(("sync", self.path.clone()));
            self.inner.sync_data()
        }
        fn sync_all(&self) -> std::io::Result<()> {
            self.ops.lock().unwrap().push(("sync", self.path.clone()));
            self.inner.sync_all()
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.inner.set_len(len)
        }
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn map(&self) -> std::io::Result<Option<crate::storage::Mapping>> {
            Ok(None)
        }
    }

    #[test]
    fn salvage_places_a_segment_in_a_new_group_the_way_the_engine_creates_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        {
            let log = crate::Options::new()
                .segment_size(4096)
                .background_preallocation(false)
                .open(&dir)
                .unwrap();
            log.append("x").unwrap();
        }
        let storage = Arc::new(Recording::default());
        let view = LogView::open_with(storage.clone(), &dir, Access::Exclusive).unwrap();
        assert!(
            storage.ops.lock().unwrap().is_empty(),
            "a view changed something"
        );
        let group = Group::new(&dir, 500, 1);
        let path = group.segment_path(500, 64);
        view.place_segment(&group.path, &path, &[7u8; 4096])
            .unwrap();
        let ops = storage.ops.lock().unwrap().clone();
        let tmp_file = ops
            .iter()
            .find(|(op, _)| *op == "create")
            .map(|(_, p)| p.clone())
            .expect("a temporary file");
        assert_eq!(tmp_file.parent(), Some(dir.as_path()));
        assert!(tmp_file.to_string_lossy().ends_with(names::TEMP_SUFFIX));
        assert_eq!(
            ops,
            vec![
                ("mkdir", group.path.clone()),
                ("create", tmp_file.clone()),
                ("write", tmp_file.clone()),
                ("sync", tmp_file.clone()),
                ("rename from", tmp_file.clone()),
                ("rename to", path.clone()),
                ("sync dir", group.path.clone()),
                ("sync dir", dir.clone()),
            ]
        );
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 4096]);
        assert!(!tmp_file.exists());

        // Into an existing group: no directory made, same order.
        storage.ops.lock().unwrap().clear();
        let path2 = group.segment_path(600, 65);
        view.place_segment(&group.path, &path2, &[8u8; 4096])
            .unwrap();
        let ops = storage.ops.lock().unwrap().clone();
        let kinds: Vec<&str> = ops.iter().map(|(op, _)| *op).collect();
        assert_eq!(
            kinds,
            [
                "create",
                "write",
                "sync",
                "rename from",
                "rename to",
                "sync dir",
                "sync dir"
            ]
        );
        assert_eq!(ops[5].1, group.path);
        assert_eq!(ops[6].1, dir);
    }
}
