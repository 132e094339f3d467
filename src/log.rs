//! The [`Log`] handle, its [`Options`], and the read path.

use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{Arc, Condvar, Mutex, RwLock};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::codec::{Codec, Postcard};
use crate::consumer::{self, ClientEntry, ClientInfo, Consumer};
use crate::error::{Error, Result};
use crate::layout::{self, Group};
use crate::names;
use crate::record::SEGMENT_HEADER_LEN;
use crate::recovery::{self, Mode, RecoveryReport};
use crate::retention::Retention;
use crate::segment::{
    self, OpenCache, OpenSegment, Record, Segment, SegmentMeta, WALK_READ_AHEAD, Window, lock,
};
use crate::storage::{FsStorage, LockGuard, OpenMode, Storage};
use crate::writer::Writer;

/// The default size of a segment file: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// The smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// The largest segment size accepted: 1 GiB.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;
/// How many segment files readers keep open (and mapped) at once by default.
pub const DEFAULT_OPEN_SEGMENTS: usize = 16;

/// What readers share: the segment table, the durable end, the storage.
pub(crate) struct Shared {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    cache: OpenCache,
    use_mmap: bool,
    durable_end: AtomicU64,
    durable_lock: Mutex<u64>,
    durable_cv: Condvar,
    /// `durq.end`, rewritten (never synced) after each publish so that
    /// processes reading the directory without the lock know the durable end.
    end_hint: Option<Box<dyn crate::storage::StorageFile>>,
    /// Segment files retention released, renamed to temporary names, for the
    /// writer to zero-fill and reuse as spares (at most
    /// [`SPARE_POOL_MAX`]).
    pub spare_pool: Mutex<Vec<PathBuf>>,
}

/// At most this many released segment files wait to be reused as spares;
/// retention deletes the others.
pub(crate) const SPARE_POOL_MAX: usize = 2;

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("dir", &self.dir)
            .field("durable_end", &self.durable_end)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Makes offsets below `end` visible to readers and wakes waiters.
    pub(crate) fn publish(&self, end: u64) {
        let mut d = lock(&self.durable_lock);
        if end > *d {
            *d = end;
            self.durable_end.store(end, Ordering::Release);
            if let Some(f) = &self.end_hint {
                // A hint only: a failed write leaves it lower, never higher.
                let _ = f.write_at(&names::encode_end_hint(end), 0);
            }
        }
        drop(d);
        self.durable_cv.notify_all();
    }

    /// The durable end: every offset below it is on stable storage.
    pub(crate) fn end(&self) -> u64 {
        self.durable_end.load(Ordering::Acquire)
    }

    /// Waits until `ready(durable_end)` holds or `deadline` passes; returns
    /// whether it held. `ready` is evaluated under the lock that publishing
    /// and [`Shared::wake_all`] take, so no wake-up is lost between the check
    /// and the wait. `None` waits without limit.
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(u64) -> bool,
    ) -> bool {
        let mut d = lock(&self.durable_lock);
        loop {
            if ready(*d) {
                return true;
            }
            match deadline {
                None => d = self.durable_cv.wait(d).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        return false;
                    }
                    d = self
                        .durable_cv
                        .wait_timeout(d, t - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Wakes every waiter (a message was given back, a position moved).
    pub(crate) fn wake_all(&self) {
        let _d = lock(&self.durable_lock);
        self.durable_cv.notify_all();
    }

    /// Registers a new segment (replacing an empty one with the same base,
    /// see `Writer::stage`).
    pub(crate) fn add_segment(&self, seg: Arc<Segment>) {
        let base = seg.base;
        let old = self
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base, seg);
        if old.is_some() {
            self.cache.forget(base);
        }
    }

    /// Forgets the segment starting at `base` (retention deletes its file).
    pub(crate) fn remove_segment(&self, base: u64) -> Option<Arc<Segment>> {
        let removed = self
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&base)?;
        self.cache.forget(base);
        Some(removed)
    }

    /// Total size of the segment files, from their headers. Reads (and
    /// checks) the header of every segment not read yet, so it is used only
    /// by size-bound retention, whose logs hold few segments; after the
    /// first call every header is cached and this only adds numbers (it runs
    /// after every append of such a log, so it walks the table in place
    /// rather than copying it).
    pub(crate) fn segment_bytes(&self) -> Result<u64> {
        self.list_every_group()?;
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let mut total = 0u64;
        for seg in segs.values() {
            total += seg.meta(&*self.storage)?.size;
        }
        Ok(total)
    }

    /// Every segment, oldest first (listing every group not listed yet).
    pub(crate) fn segment_list(&self) -> Result<Vec<Arc<Segment>>> {
        self.list_every_group()?;
        Ok(self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect())
    }

    /// Replaces the placeholder at `base`, if it still is one, by the
    /// segments of the group it stands for (listing the group and checking
    /// its names: see [`layout::list_middle_group`]).
    fn list_group_at(&self, base: u64) -> Result<()> {
        let mut segs = self.segments.write().unwrap_or_else(|e| e.into_inner());
        let Some(group) = segs.get(&base).and_then(|s| s.unlisted.clone()) else {
            return Ok(());
        };
        let next_base = segs.range(base + 1..).next().map_or(u64::MAX, |(&b, _)| b);
        let listed = layout::list_middle_group(&*self.storage, &group, next_base)?;
        segs.remove(&base);
        for (b, seq, path) in listed {
            segs.insert(b, Arc::new(Segment::unchecked(b, seq, path)));
        }
        Ok(())
    }

    /// Lists every group not listed yet.
    fn list_every_group(&self) -> Result<()> {
        let unlisted: Vec<u64> = self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.unlisted.is_some())
            .map(|s| s.base)
            .collect();
        for base in unlisted {
            self.list_group_at(base)?;
        }
        Ok(())
    }

    /// Lists the oldest group if it is not listed yet (retention removed
    /// every segment before it), so that the first entry of the table is
    /// always a segment.
    fn list_first_group(&self) -> Result<()> {
        let first = self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .next()
            .filter(|s| s.unlisted.is_some())
            .map(|s| s.base);
        match first {
            Some(base) => self.list_group_at(base),
            None => Ok(()),
        }
    }

    /// The oldest retained offset.
    pub(crate) fn first(&self) -> u64 {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .next()
            .copied()
            .unwrap_or(0)
    }

    /// The segment holding `offset` and the end (exclusive) of the durable
    /// records in it, if `offset` is retained and durable.
    /// A segment in a group not listed yet is found by listing the group
    /// first, which can fail like a read.
    fn locate(&self, offset: u64) -> Result<Option<(Arc<Segment>, u64)>> {
        loop {
            let end = self.end();
            if offset >= end {
                return Ok(None);
            }
            let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
            let Some((_, seg)) = segs.range(..=offset).next_back() else {
                return Ok(None);
            };
            if seg.unlisted.is_some() {
                let base = seg.base;
                drop(segs);
                self.list_group_at(base)?;
                continue;
            }
            let limit = segs
                .range(offset + 1..)
                .next()
                .map_or(end, |(&next_base, _)| next_base.min(end));
            if offset >= limit {
                // Past the records of a sealed segment and before the next
                // one: only possible if the segment table is inconsistent.
                return Ok(None);
            }
            return Ok(Some((seg.clone(), limit)));
        }
    }

    fn open(&self, seg: &Arc<Segment>) -> Result<Arc<OpenSegment>> {
        self.cache.open(&*self.storage, seg, self.use_mmap)
    }

    pub(crate) fn read(&self, offset: u64) -> Result<Option<Record>> {
        let Some((seg, limit)) = self.locate(offset)? else {
            return Ok(None);
        };
        let open = self.open(&seg)?;
        let pos = open.locate(offset, limit)?;
        Ok(Some(open.record_at(pos, offset)?.0))
    }
}

/// Options for opening a log: segment size, and knobs for tests and tools.
///
/// ```no_run
/// let log = durq::Options::new().segment_size(16 << 20).open("data")?;
/// # Ok::<(), durq::Error>(())
/// ```
#[derive(Clone)]
pub struct Options {
    segment_size: u64,
    background_preallocation: bool,
    open_segments: usize,
    use_mmap: bool,
    retention: Retention,
    storage: Arc<dyn Storage>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("segment_size", &self.segment_size)
            .field("background_preallocation", &self.background_preallocation)
            .field("open_segments", &self.open_segments)
            .field("use_mmap", &self.use_mmap)
            .field("retention", &self.retention)
            .field("storage", &self.storage)
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Default options: 64 MiB segments, next segment prepared in the
    /// background, reads through memory maps, the real file system.
    pub fn new() -> Options {
        Options {
            segment_size: DEFAULT_SEGMENT_SIZE,
            background_preallocation: true,
            open_segments: DEFAULT_OPEN_SEGMENTS,
            use_mmap: true,
            retention: Retention::keep_all(),
            storage: Arc::new(FsStorage),
        }
    }

    /// Size in bytes of each new segment file, from [`MIN_SEGMENT_SIZE`] to
    /// [`MAX_SEGMENT_SIZE`], a multiple of 8. A record must fit in one
    /// segment, so this also bounds the record size. Existing segments keep
    /// the size they were created with.
    pub fn segment_size(mut self, bytes: u64) -> Options {
        self.segment_size = bytes;
        self
    }

    /// Whether the next segment file is created and zero-filled by a
    /// background thread ahead of need (default `true`): the thread starts
    /// once the active segment is half full, and closing the log stops it
    /// and removes its file. With `false` the file is created when the
    /// active segment fills, inside an append; the deterministic crash tests
    /// use this.
    pub fn background_preallocation(mut self, yes: bool) -> Options {
        self.background_preallocation = yes;
        self
    }

    /// How many segment files readers keep open at once (default
    /// [`DEFAULT_OPEN_SEGMENTS`]); older ones are closed and reopened on
    /// demand, so memory and file descriptors stay flat as the log grows.
    pub fn open_segments(mut self, n: usize) -> Options {
        self.open_segments = n.max(1);
        self
    }

    /// Whether reads go through memory maps (default `true`) or `pread`.
    ///
    /// Without maps, `Log::scan` and `Log::iter` read each segment ahead in
    /// pieces of 256 KiB and a single read takes one `pread` for records up
    /// to 1 KiB; payloads are copied out. On the machine of
    /// `docs/benchmarks.md` that scans about half as fast as with maps
    /// (27 M against 55 M records of 100 bytes per second).
    pub fn use_mmap(mut self, yes: bool) -> Options {
        self.use_mmap = yes;
        self
    }

    /// Which old segments may be deleted (default: none, keep everything).
    /// See [`Retention`].
    pub fn retention(mut self, policy: Retention) -> Options {
        self.retention = policy;
        self
    }

    /// Replaces the file system with another implementation of the storage
    /// seam. Only tests need this (a simulated power-loss disk).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Options {
        self.storage = storage;
        self
    }

    /// Opens (creating or recovering) the log in `dir`. See [`Log::open`].
    pub fn open(&self, dir: impl AsRef<Path>) -> Result<Log> {
        Log::open_with(self, dir.as_ref())
    }

    fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size)
            || !self.segment_size.is_multiple_of(8)
        {
            return Err(Error::InvalidArgument(format!(
                "segment size {} is not a multiple of 8 between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes",
                self.segment_size
            )));
        }
        Ok(())
    }
}

pub(crate) struct Inner {
    pub shared: Arc<Shared>,
    pub writer: Writer,
    pub report: RecoveryReport,
    pub options: Options,
    clients: Mutex<BTreeMap<String, ClientEntry>>,
    /// Serializes retention with client registration.
    retention_lock: Mutex<()>,
    /// Why retention stopped, once a step of it failed part-way.
    retention_stopped: Mutex<Option<Arc<str>>>,
    _lock: LockGuard,
}

impl Inner {
    /// Called after an acknowledgement became durable.
    pub(crate) fn after_ack(&self) {
        if !self.options.retention.deletes_acked() {
            return;
        }
        let second = {
            let segs = self
                .shared
                .segments
                .read()
                .unwrap_or_else(|e| e.into_inner());
            segs.keys().nth(1).copied()
        };
        let Some(second) = second else { return };
        let min_acked = self.min_durable_acked();
        if min_acked.is_some_and(|m| m >= second) {
            // Retention is best-effort on this path: the ack itself is durable
            // and has returned its result; a failed deletion is retried at
            // the next ack or by `Log::apply_retention`.
            let _ = self.apply_retention();
        }
    }

    /// The smallest durable position over all clients; `None` if there are
    /// none or one is unreadable (then nothing counts as acknowledged).
    fn min_durable_acked(&self) -> Option<u64> {
        let clients = lock(&self.clients);
        let mut min: Option<u64> = None;
        for entry in clients.values() {
            match entry {
                ClientEntry::Ready(c) => {
                    let a = c.durable_acked();
                    min = Some(min.map_or(a, |m| m.min(a)));
                }
                ClientEntry::Broken { .. } => return None,
            }
        }
        min
    }

    /// Takes a segment retention removed from the table off the disk: its
    /// file is renamed to a temporary name and kept for the writer to reuse
    /// as a spare if it has the size new segments have, nothing refers to
    /// it any more (no reader, no record borrowed from a map of it) and the
    /// pool has room; otherwise it is deleted. Either way the directory is
    /// synced, and the segment is gone from the log (a temporary file is
    /// never part of a log: the next open removes it).
    fn release_segment(&self, seg: Arc<Segment>) -> Result<()> {
        let storage = &*self.shared.storage;
        let dir = &self.shared.dir;
        let path = seg.path.clone();
        let group = layout::group_dir_of(&path).to_owned();
        let reusable = seg.unused()
            && seg
                .meta(storage)
                .is_ok_and(|m| m.size == self.options.segment_size)
            && lock(&self.shared.spare_pool).len() < SPARE_POOL_MAX;
        drop(seg);
        let mut kept = None;
        if reusable {
            let tmp = segment::temp_path(dir, "recycled");
            if storage.rename(&path, &tmp).is_ok() {
                kept = Some(tmp);
            }
        }
        if kept.is_none() {
            storage
                .remove_file(&path)
                .map_err(|e| Error::io("delete segment", &path, e))?;
        }
        // The segment's name must be durably gone before its file is reused.
        storage
            .sync_dir(&group)
            .map_err(|e| Error::io("sync directory", &group, e))?;
        // A group retention emptied is removed (the next open removes it if
        // this does not happen or is lost).
        let emptied = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .next()
            .is_none_or(|first| layout::group_dir_of(&first.path) != group);
        if emptied {
            storage
                .remove_dir(&group)
                .map_err(|e| Error::io("remove empty segment group", &group, e))?;
            storage
                .sync_dir(dir)
                .map_err(|e| Error::io("sync directory", dir, e))?;
        }
        if let Some(tmp) = kept {
            lock(&self.shared.spare_pool).push(tmp);
        }
        Ok(())
    }

    fn apply_retention(&self) -> Result<Vec<PathBuf>> {
        let policy = self.options.retention;
        let mut deleted = Vec::new();
        if policy.is_keep_all() {
            return Ok(deleted);
        }
        let _guard = lock(&self.retention_lock);
        if let Some(reason) = lock(&self.retention_stopped).clone() {
            return Err(Error::RetentionStopped { reason });
        }
        loop {
            self.shared.list_first_group()?;
            let (oldest, second) = {
                let segs = self
                    .shared
                    .segments
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                let mut it = segs.values();
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => (a.clone(), b.base),
                    _ => break,
                }
            };
            let by_ack =
                policy.deletes_acked() && self.min_durable_acked().is_some_and(|m| m >= second);
            let by_size = match policy.size_bound() {
                Some(max) if !by_ack => self.shared.segment_bytes()? > max,
                _ => false,
            };
            if !(by_ack || by_size) {
                break;
            }
            self.shared.remove_segment(oldest.base);
            let path = oldest.path.clone();
            if let Err(e) = self.release_segment(oldest) {
                // Deleting the next segment now could make it durably gone
                // while this one comes back after a power loss: a gap.
                *lock(&self.retention_stopped) = Some(e.to_string().into());
                return Err(e);
            }
            deleted.push(path);
        }
        Ok(deleted)
    }
}

/// A durable, segmented, append-only log.
///
/// `Log` is `Send + Sync` and cheap to clone (clones share one log); the
/// directory stays locked until the last clone, consumer and iterator is
/// dropped. See the [crate documentation](crate) for an example.
#[derive(Clone)]
pub struct Log {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.shared.dir)
            .field("first", &self.first_offset())
            .field("end", &self.end())
            .finish()
    }
}

impl Log {
    /// Opens the log in `dir` with default [`Options`], creating the
    /// directory and an empty log if needed, or recovering an existing one.
    ///
    /// Recovery repairs only a torn tail (the unfinished last write, which
    /// never returned) and removes leftover temporary files; anything else
    /// wrong is an error naming the file and byte position. The directory is
    /// locked: a second open, in this process or another, fails with
    /// [`Error::Locked`] until this handle (and its clones) is dropped.
    pub fn open(dir: impl AsRef<Path>) -> Result<Log> {
        Options::new().open(dir)
    }

    fn open_with(options: &Options, dir: &Path) -> Result<Log> {
        options.validate()?;
        let storage = options.storage.clone();
        // The directories this open creates (the log directory and any
        // missing ancestors, outermost first): their entries are made
        // durable when the log is created, below.
        let mut created_dirs = Vec::new();
        let mut d = dir;
        while !d.as_os_str().is_empty() && !storage.is_dir(d) && !storage.exists(d) {
            created_dirs.push(d.to_owned());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        created_dirs.reverse();
        storage
            .create_dir_all(dir)
            .map_err(|e| Error::io("create directory", dir, e))?;
        if !storage.is_dir(dir) {
            return Err(Error::InvalidArgument(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let lock_path = dir.join(names::LOCK_FILE);
        // A directory holding the lock file has held a durq log: nothing is
        // created by locking it, and recovery (which lists it under the
        // lock) refuses an old-format log before changing anything. Only
        // another directory is listed here, before the lock file is made:
        // listing a directory of many segments costs more than anything
        // else opening does.
        if !storage.exists(&lock_path) {
            refuse_foreign_directory(&*storage, dir)?;
        }
        let lock_guard = storage.try_lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked {
                    dir: dir.to_owned(),
                }
            } else {
                Error::io("lock", &lock_path, e)
            }
        })?;
        // Recovery refuses a directory of someone else's files (from its
        // own listing, before changing anything) when it holds no segment.
        let mut recovered = recovery::recover(&*storage, dir, Mode::Repair)?;
        if recovered.segments.is_empty() {
            // A new log: make its directory's entry durable (and those of
            // the directories created for it), whoever created the
            // directory, before its first segment exists, so that an open
            // that fails here leaves no segment and the next one syncs again.
            if !created_dirs.iter().any(|c| c == dir) {
                created_dirs.push(dir.to_owned());
            }
            // Directories an earlier open made and then failed to sync look
            // like those made now: each holds nothing but the way to the
            // log. Their entries are synced too (a directory that cannot be
            // listed, or holds anything else, was not made for this log).
            while let Some(outer) = created_dirs
                .first()
                .and_then(|c| c.parent())
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
            {
                match storage.list_dir(&outer) {
                    Ok(names) if names.len() == 1 => created_dirs.insert(0, outer),
                    _ => break,
                }
            }
            for created in &created_dirs {
                let parent = match created.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                storage
                    .sync_dir(parent)
                    .map_err(|e| Error::io("sync directory", parent, e))?;
            }
            let meta = create_first_segment(&*storage, dir, options.segment_size)?;
            recovered.tail_pos = SEGMENT_HEADER_LEN as u64;
            recovered.report.created = true;
            recovered.report.segments = 1;
            recovered.report.first_offset = meta.base;
            recovered.report.end_offset = meta.base;
            recovered.segments.push(Segment::checked(meta));
        }
        let end = recovered.report.end_offset;
        let first = recovered.report.first_offset;
        let loaded = consumer::load_clients(&*storage, dir, first, end, true)?;
        recovered.report.cursors = loaded.repairs;
        recovered
            .report
            .removed_temp_files
            .extend(loaded.removed_temp_files);
        recovered.report.unknown_files.extend(loaded.unknown_files);
        let active = recovered
            .segments
            .last()
            .and_then(|s| s.checked_meta())
            .cloned()
            .ok_or_else(|| {
                Error::InvalidArgument("internal error: no active segment after recovery".into())
            })?;
        // Recovery returns the segments in order, so the table is built in
        // bulk rather than by one insertion per segment.
        let table: BTreeMap<u64, Arc<Segment>> = recovered
            .segments
            .into_iter()
            .map(|seg| (seg.base, Arc::new(seg)))
            .collect();
        let shared = Arc::new(Shared {
            storage: storage.clone(),
            dir: dir.to_owned(),
            segments: RwLock::new(table),
            cache: OpenCache::new(options.open_segments),
            use_mmap: options.use_mmap,
            durable_end: AtomicU64::new(end),
            durable_lock: Mutex::new(end),
            durable_cv: Condvar::new(),
            end_hint: open_end_hint(&*storage, dir, end),
            spare_pool: Mutex::new(Vec::new()),
        });
        let file = storage
            .open_file(&active.path, OpenMode::ReadWrite)
            .map_err(|e| Error::io("open segment for writing", &active.path, e))?;
        let writer = Writer::new(
            shared.clone(),
            &active,
            file,
            recovered.tail_pos,
            end,
            options.segment_size,
            options.background_preallocation,
        );
        Ok(Log {
            inner: Arc::new(Inner {
                shared,
                writer,
                report: recovered.report,
                options: options.clone(),
                clients: Mutex::new(loaded.clients),
                retention_lock: Mutex::new(()),
                retention_stopped: Mutex::new(None),
                _lock: lock_guard,
            }),
        })
    }

    /// Appends one record; returns its offset once it is durable (written
    /// and `fdatasync`ed, together with whatever other threads appended at
    /// the same moment).
    ///
    /// Empty payloads are allowed. A payload larger than
    /// [`Log::max_record_size`] is refused with [`Error::RecordTooLarge`]
    /// and nothing is written.
    pub fn append(&self, payload: impl AsRef<[u8]>) -> Result<u64> {
        let offset = self.inner.writer.append(&[payload.as_ref()])?.start;
        self.after_append();
        Ok(offset)
    }

    /// Appends several records with one write and one `fdatasync` (more if
    /// they span a segment boundary); returns their offsets, which are
    /// consecutive. Durable on return.
    ///
    /// The batch is not atomic across a crash: if the call does not return,
    /// a prefix of the batch may survive.
    pub fn append_batch<I>(&self, payloads: I) -> Result<Range<u64>>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let owned: Vec<I::Item> = payloads.into_iter().collect();
        let slices: Vec<&[u8]> = owned.iter().map(|p| p.as_ref()).collect();
        let range = self.inner.writer.append(&slices)?;
        self.after_append();
        Ok(range)
    }

    /// Reads the record at `offset`: `None` if the offset is not (yet)
    /// durable or no longer retained. Checksums are verified on every read;
    /// damage is an [`Error::Corrupt`] naming the file and position.
    pub fn read(&self, offset: u64) -> Result<Option<Record>> {
        self.inner.shared.read(offset)
    }

    /// Iterates over durable records from `from` (or from the first retained
    /// offset, if `from` is older), yielding `(offset, record)`. The iterator
    /// ends at the durable end as it is when reached.
    pub fn iter(&self, from: u64) -> Iter {
        Iter {
            shared: self.inner.shared.clone(),
            next: from.max(self.first_offset()),
            cur: None,
            failed: false,
        }
    }

    /// Visits durable records from `from` (or from the first retained
    /// offset, if `from` is older) in order, handing each offset and payload
    /// to `f`. Payloads are borrowed straight from the memory-mapped
    /// segments: no copy, no allocation, and one checksum pass over each
    /// record as it lies on disk, so this is the fastest way to read a log
    /// through. `f` returns [`ControlFlow::Break`] to stop early. The scan
    /// ends at the durable end as it is when reached.
    ///
    /// Returns the offset after the last record handed to `f`. Damage is
    /// an [`Error::Corrupt`]; a salvage placeholder is [`Error::Lost`], after
    /// which a new scan can start at the placeholder's offset plus one.
    ///
    /// ```no_run
    /// use std::ops::ControlFlow;
    /// let log = durq::Log::open("data")?;
    /// let mut bytes = 0;
    /// let end = log.scan(0, |_offset, payload| {
    ///     bytes += payload.len();
    ///     ControlFlow::Continue(())
    /// })?;
    /// println!("{end} records, {bytes} bytes");
    /// # Ok::<(), durq::Error>(())
    /// ```
    pub fn scan<F>(&self, from: u64, mut f: F) -> Result<u64>
    where
        F: FnMut(u64, &[u8]) -> ControlFlow<()>,
    {
        let shared = &self.inner.shared;
        let mut offset = from.max(self.first_offset());
        loop {
            let Some((seg, limit)) = shared.locate(offset)? else {
                return Ok(offset);
            };
            let open = shared.open(&seg)?;
            let pos = open.locate(offset, limit)?;
            let step = open.scan(pos, offset, limit, &mut f)?;
            offset = step.offset;
            if step.broke {
                return Ok(offset);
            }
        }
    }

    /// The next offset to be assigned. Every offset below it is durable.
    pub fn end(&self) -> u64 {
        self.inner.shared.end()
    }

    /// The oldest retained offset (0 unless retention removed segments).
    pub fn first_offset(&self) -> u64 {
        self.inner.shared.first()
    }

    /// The largest payload this log accepts, in bytes.
    pub fn max_record_size(&self) -> usize {
        self.inner.writer.max_payload()
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Why the log refuses appends, if an earlier write or sync failed.
    pub fn poisoned(&self) -> Option<String> {
        self.inner.writer.poisoned().map(|r| r.to_string())
    }

    /// Blocks until a record at `offset` is durable or `timeout` passes;
    /// returns whether it is.
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        self.inner
            .shared
            .wait_until(Some(Instant::now() + timeout), |end| end > offset)
    }

    /// Encodes `value` with postcard and appends it (see [`Log::append`]).
    pub fn append_value<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<u64> {
        self.append_value_with(&Postcard, value)
    }

    /// Encodes `value` with `codec` and appends it.
    pub fn append_value_with<C: Codec, T: serde::Serialize + ?Sized>(
        &self,
        codec: &C,
        value: &T,
    ) -> Result<u64> {
        let bytes = codec.encode(value).map_err(Error::Encode)?;
        self.append(bytes)
    }

    /// A handle on the client `name`, registering it (durably, at the oldest
    /// retained offset) if it is new. Names are 1 to 64 ASCII letters,
    /// digits, `.`, `_` and `-`, not starting with `.`; anything else is
    /// refused with [`Error::InvalidClientName`].
    pub fn consumer(&self, name: &str) -> Result<Consumer> {
        names::validate_client_name(name)?;
        let inner = &self.inner;
        let _guard = lock(&inner.retention_lock);
        let mut clients = lock(&inner.clients);
        match clients.get(name) {
            Some(ClientEntry::Ready(c)) => return Ok(Consumer::new(self.clone(), c.clone())),
            Some(ClientEntry::Broken { path, error }) => {
                return Err(Error::corrupt(
                    path,
                    0,
                    format!("client {name:?} is unusable: {error}"),
                ));
            }
            None => {}
        }
        let client = Arc::new(consumer::create_client(
            &*inner.shared.storage,
            &inner.shared.dir,
            name,
            self.first_offset(),
        )?);
        clients.insert(name.to_owned(), ClientEntry::Ready(client.clone()));
        Ok(Consumer::new(self.clone(), client))
    }

    /// Every registered client with its durable acknowledged position and
    /// lag, sorted by name. Clients whose cursor is unreadable are listed
    /// by [`Log::recovery_report`] instead.
    pub fn consumers(&self) -> Result<Vec<ClientInfo>> {
        let end = self.end();
        let clients = lock(&self.inner.clients);
        Ok(clients
            .iter()
            .filter_map(|(name, entry)| match entry {
                ClientEntry::Ready(c) => {
                    let acked = c.durable_acked();
                    Some(ClientInfo {
                        name: name.clone(),
                        acked,
                        lag: end.saturating_sub(acked),
                        in_flight: c.position().1,
                    })
                }
                ClientEntry::Broken { .. } => None,
            })
            .collect())
    }

    /// Removes the client `name` and its files (also one whose cursor is
    /// unreadable). Existing handles for it fail from then on. Returns
    /// whether it existed.
    pub fn remove_consumer(&self, name: &str) -> Result<bool> {
        names::validate_client_name(name)?;
        let inner = &self.inner;
        let _guard = lock(&inner.retention_lock);
        let mut clients = lock(&inner.clients);
        let Some(entry) = clients.get(name).cloned() else {
            return Ok(false);
        };
        let storage = &*inner.shared.storage;
        match &entry {
            ClientEntry::Ready(c) => {
                consumer::remove_client_files(storage, c)?;
                c.mark_removed();
            }
            ClientEntry::Broken { .. } => {
                let dir = inner.shared.dir.join(names::CLIENTS_DIR);
                let files = crate::cursor::ClientFiles::new(&dir, name);
                consumer::remove_files(storage, &files, None)?;
            }
        }
        clients.remove(name);
        drop(clients);
        inner.shared.wake_all();
        Ok(true)
    }

    /// Applies the retention policy now; returns the segment files deleted.
    /// (It also runs by itself after acknowledgements and appends.)
    ///
    /// Segments are deleted oldest first, each made durably gone before the
    /// next is considered. If a step fails part-way (a file cannot be
    /// removed, a directory sync fails), that error is returned, and every
    /// later call returns [`Error::RetentionStopped`] until the log is
    /// reopened: deleting more could leave a gap after a power loss.
    pub fn apply_retention(&self) -> Result<Vec<PathBuf>> {
        self.inner.apply_retention()
    }

    fn after_append(&self) {
        if let Some(max) = self.inner.options.retention.size_bound()
            && self.inner.shared.segment_bytes().is_ok_and(|b| b > max)
        {
            // Best-effort here, as after acks: the append has succeeded. (A
            // header that cannot be read makes the size unknown: then
            // nothing is deleted here; `Log::apply_retention` reports why.)
            let _ = self.inner.apply_retention();
        }
    }

    /// The segment files, oldest first, with their first offsets and sizes.
    ///
    /// Reads (and checks) the header of every segment whose header has not
    /// been read yet (opening a log reads only the last one's), so it can
    /// fail like a read: an error names the segment whose header is bad.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>> {
        let shared = &self.inner.shared;
        let list = shared.segment_list()?;
        let end = self.end();
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let next = list.get(i + 1).map_or(end, |n| n.base);
            out.push(SegmentInfo {
                path: s.path.clone(),
                first_offset: s.base,
                end_offset: next,
                size_bytes: s.meta(&*shared.storage)?.size,
            });
        }
        Ok(out)
    }
}

/// Describes one segment file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// Offset of its first record.
    pub first_offset: u64,
    /// Offset after its last durable record.
    pub end_offset: u64,
    /// Its size on disk in bytes (preallocated).
    pub size_bytes: u64,
}

/// Refuses, before creating any file, a directory that holds other files
/// but no durq segment (see [`recovery::refuse_foreign`]). Used before the
/// lock file is created in a directory that does not have one; recovery
/// makes the same check from its own listing otherwise.
fn refuse_foreign_directory(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let listing = storage
        .list_dir(dir)
        .map_err(|e| Error::io("list", dir, e))?;
    // A log of an older format is reported as such (before the lock file
    // is created: nothing is changed), never taken for foreign files.
    recovery::refuse_old_formats(storage, dir, &listing)?;
    recovery::refuse_foreign(dir, &listing)
}

/// Opens `durq.end` and writes the recovered end into it before any append.
fn open_end_hint(
    storage: &dyn Storage,
    dir: &Path,
    end: u64,
) -> Option<Box<dyn crate::storage::StorageFile>> {
    let f = storage
        .open_file(&dir.join(names::END_HINT_FILE), OpenMode::CreateOrOpen)
        .ok()?;
    f.write_at(&names::encode_end_hint(end), 0).ok()?;
    Some(f)
}

/// Creates the first group directory and the first segment in it.
fn create_first_segment(storage: &dyn Storage, dir: &Path, size: u64) -> Result<SegmentMeta> {
    let group = Group::new(dir, 0, 0);
    storage
        .create_dir_all(&group.path)
        .map_err(|e| Error::io("create directory", &group.path, e))?;
    let spare = segment::prepare_spare(storage, dir, size, None, &AtomicBool::new(false))
        .map_err(|e| Error::io("create segment in", dir, e))?;
    let path = group.segment_path(0, 0);
    let meta = SegmentMeta {
        base: 0,
        seq: 0,
        salt: storage.new_salt(),
        size,
        path: path.clone(),
    };
    let done = spare
        .file
        .write_at(&meta.header().encode(), 0)
        .and_then(|()| spare.file.sync_data())
        .and_then(|()| storage.rename(&spare.path, &path));
    if let Err(e) = done {
        let _ = storage.remove_file(&spare.path);
        return Err(Error::io("create first segment", &path, e));
    }
    for d in [&group.path, dir] {
        storage
            .sync_dir(d)
            .map_err(|e| Error::io("sync directory", d, e))?;
    }
    Ok(meta)
}

/// An iterator over durable records, from [`Log::iter`].
pub struct Iter {
    shared: Arc<Shared>,
    next: u64,
    cur: Option<Cursor>,
    failed: bool,
}

struct Cursor {
    seg: Arc<Segment>,
    open: Arc<OpenSegment>,
    pos: u64,
    limit: u64,
    /// Read-ahead for an unmapped segment, valid below `limit`.
    window: Window,
}

impl fmt::Debug for Iter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("next", &self.next).finish()
    }
}

impl Iter {
    /// The offset the next item will have.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    fn step(&mut self) -> Result<Option<(u64, Record)>> {
        let offset = self.next;
        let reusable = matches!(&self.cur, Some(c) if offset < c.limit);
        if !reusable {
            // Entering a segment (or the durable end moved): position anew.
            let Some((seg, limit)) = self.shared.locate(offset)? else {
                return Ok(None);
            };
            let same = matches!(&self.cur, Some(c) if Arc::ptr_eq(&c.seg, &seg));
            if same {
                if let Some(c) = &mut self.cur {
                    // Bytes read ahead before the durable end moved may
                    // predate the records now below it.
                    c.window.clear();
                    c.limit = limit;
                }
            } else {
                let open = self.shared.open(&seg)?;
                let pos = open.locate(offset, limit)?;
                self.cur = Some(Cursor {
                    seg,
                    open,
                    pos,
                    limit,
                    window: Window::new(WALK_READ_AHEAD),
                });
            }
        }
        let Some(c) = &mut self.cur else {
            return Ok(None);
        };
        match c.open.record_in(&mut c.window, c.pos, offset) {
            Ok((record, next_pos)) => {
                c.pos = next_pos;
                self.next += 1;
                Ok(Some((offset, record)))
            }
            Err(lost @ Error::Lost { .. }) => {
                // A salvage placeholder: report it and move on past it.
                c.pos += c.open.header_at(c.pos, offset)?.0.encoded_len() as u64;
                self.next += 1;
                Err(lost)
            }
            Err(e) => Err(e),
        }
    }
}

impl Iterator for Iter {
    type Item = Result<(u64, Record)>;

    /// Yields the next record; after an error the iterator ends, except
    /// after [`Error::Lost`] (a salvage placeholder), where it goes on.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => None,
            Err(e @ Error::Lost { .. }) => Some(Err(e)),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync + 'static>() {}
    is::<Log>();
    is::<Iter>();
    is::<Record>();
}
