//! One segment file: creation (through a preallocated spare), the read-side
//! handle with its sparse offset index, and reading records out of it.

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Arc, Mutex, MutexGuard, Weak};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::layout::Group;
use crate::names;
use crate::record::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader};
use crate::storage::{Mapping, OpenMode, Storage, StorageFile};

/// One index entry is kept for every this many records of a segment.
const INDEX_STRIDE: u64 = 64;

/// Zero-fill writes are made in chunks of this size.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// What the directory listing and a segment's header say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub base: u64,
    pub seq: u64,
    pub salt: u64,
    pub size: u64,
    pub path: PathBuf,
}

impl SegmentMeta {
    pub(crate) fn header(&self) -> SegmentHeader {
        SegmentHeader {
            base_offset: self.base,
            seq: self.seq,
            salt: self.salt,
            segment_size: self.size,
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it:
/// every critical section in durq leaves its state consistent before any
/// call that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random, non-zero 64-bit salt. Uses the standard library's randomly
/// keyed hasher, mixed with the clock and a counter, so no extra dependency
/// is needed; the salt need not be secret, only different per segment.
pub(crate) fn random_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish() | 1
}

/// A preallocated, zero-filled, synced temporary file waiting to become the
/// next segment.
#[derive(Debug)]
pub(crate) struct Spare {
    pub path: PathBuf,
    pub file: Box<dyn StorageFile>,
}

/// Creates a spare: a temp file of `size` zero bytes, written and synced
/// (data and length) so that appends into it later only need `fdatasync`.
/// `reuse` is a recycled segment file of that size to fill instead of a new
/// file. Once `cancel` is set (checked before each chunk of zeros), it stops,
/// removes the file and fails with [`io::ErrorKind::Interrupted`].
pub(crate) fn prepare_spare(
    storage: &dyn Storage,
    dir: &Path,
    size: u64,
    reuse: Option<PathBuf>,
    cancel: &AtomicBool,
) -> io::Result<Spare> {
    // A recycled file (a segment retention released, already renamed to a
    // temporary name) is zero-filled in place: the same bytes are written,
    // but into blocks the file system has already allocated, which on some
    // disks is several times faster than filling new ones.
    let (path, file) = match reuse {
        Some(path) => match storage.open_file(&path, OpenMode::ReadWrite) {
            Ok(file) if file.len().is_ok_and(|n| n == size) => (path, file),
            _ => {
                let _ = storage.remove_file(&path);
                fresh_spare(storage, dir)?
            }
        },
        None => fresh_spare(storage, dir)?,
    };
    let fill = || -> io::Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK_BYTES.min(size as usize)];
        let mut pos = 0u64;
        while pos < size {
            if cancel.load(Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "spare segment preparation cancelled",
                ));
            }
            let n = zeros.len().min((size - pos) as usize);
            file.write_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        file.sync_all()
    };
    match fill() {
        Ok(()) => Ok(Spare { path, file }),
        Err(e) => {
            drop(file);
            let _ = storage.remove_file(&path);
            Err(e)
        }
    }
}

/// A new temporary file name in `dir` (`PREFIX-PID-N.tmp`): every temporary
/// file is removed by the next open.
pub(crate) fn temp_path(dir: &Path, prefix: &str) -> PathBuf {
    static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "{prefix}-{}-{n}{}",
        std::process::id(),
        names::TEMP_SUFFIX
    ))
}

fn fresh_spare(storage: &dyn Storage, dir: &Path) -> io::Result<(PathBuf, Box<dyn StorageFile>)> {
    let path = temp_path(dir, "spare");
    let file = storage.open_file(&path, OpenMode::CreateNew)?;
    Ok((path, file))
}

/// A record's bytes, borrowed from a memory map or owned.
#[derive(Clone)]
pub struct Record {
    bytes: RecordBytes,
}

#[derive(Clone)]
enum RecordBytes {
    Mapped {
        map: Mapping,
        start: usize,
        end: usize,
    },
    Owned(Vec<u8>),
}

impl Record {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.bytes {
            RecordBytes::Mapped { map, start, end } => &(**map).as_ref()[*start..*end],
            RecordBytes::Owned(v) => v,
        }
    }

    /// Copies the payload into a `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    /// Takes the payload as a `Vec`, copying only if it is borrowed from a map.
    pub fn into_vec(self) -> Vec<u8> {
        match self.bytes {
            RecordBytes::Owned(v) => v,
            RecordBytes::Mapped { .. } => self.as_bytes().to_vec(),
        }
    }
}

impl Default for Record {
    /// An empty record.
    fn default() -> Self {
        Record {
            bytes: RecordBytes::Owned(Vec::new()),
        }
    }
}

impl Deref for Record {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Record {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq<[u8]> for Record {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_bytes() == other
    }
}

impl PartialEq<&[u8]> for Record {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_bytes() == *other
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("len", &self.as_bytes().len())
            .finish()
    }
}

/// How many readers behind its index frontier a segment keeps the place of
/// (one per client reading it, typically).
const RECENT: usize = 16;

/// Sparse positions of records in one segment, built lazily by walking
/// record headers, and only ever through durable records.
#[derive(Debug, Default)]
struct SparseIndex {
    /// `positions[i]` is the byte position of record `base + i * STRIDE`.
    positions: Vec<u64>,
    /// Offset and position of the first record not yet walked.
    frontier: Option<(u64, u64)>,
    /// Offsets and positions of the records last located behind the
    /// frontier, one entry per reader going through the segment in order
    /// (a client that lags another): each locate moves the reader's entry
    /// one record on instead of walking up to `STRIDE - 1` headers from an
    /// index slot. Records never move once durable, so an entry never goes
    /// stale. A reader without an entry takes a slot of the ring, the
    /// oldest first.
    recent: [Option<(u64, u64)>; RECENT],
    /// The ring slot the next new entry takes.
    recent_next: usize,
}

/// Bytes of a segment read with `pread`, for reading records without a
/// memory map: one read of `read_ahead` bytes covers many small records
/// instead of two reads (header, then body) per record. Its bytes are only
/// trusted for records below the durable end as it was when they were read:
/// whoever keeps a window while the durable end moves must [`Window::clear`]
/// it.
#[derive(Debug)]
pub(crate) struct Window {
    start: u64,
    bytes: Vec<u8>,
    read_ahead: usize,
}

/// Read-ahead of a sequential walk without maps (`Log::scan`, `Log::iter`).
pub(crate) const WALK_READ_AHEAD: usize = 256 << 10;
/// Read-ahead of a single record read without maps: one `pread` for
/// records up to this size.
const SINGLE_READ_AHEAD: usize = 1024;

impl Window {
    /// An empty window that reads `read_ahead` bytes at a time (more when a
    /// record is larger).
    pub(crate) fn new(read_ahead: usize) -> Window {
        Window {
            start: 0,
            bytes: Vec::new(),
            read_ahead,
        }
    }

    /// Forgets the bytes read (they may predate records now durable).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Whether `len` bytes at `pos` are in the window.
    fn covers(&self, pos: u64, len: usize) -> bool {
        pos >= self.start && pos + len as u64 <= self.start + self.bytes.len() as u64
    }
}

/// An open segment: its checked header, file, optional memory map and
/// sparse index.
pub(crate) struct OpenSegment {
    meta: SegmentMeta,
    file: Box<dyn StorageFile>,
    /// The checksum seed of the segment's salt ([`record::salt_seed`]).
    seed: u32,
    map: Option<Mapping>,
    index: Mutex<SparseIndex>,
}

/// A segment as readers see it. Its base offset, sequence number and path
/// come from its file name. Its header (salt and size) is read and checked
/// the first time it is needed ([`Segment::meta`], [`Segment::open`]) and
/// then kept: opening a log reads no sealed segment's header. The file is
/// opened lazily and the handle may be dropped by the open-segment cache;
/// the checked header stays.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub seq: u64,
    pub path: PathBuf,
    /// Set for a placeholder that stands for a whole group directory not
    /// listed yet (its `base` and `seq` are the group's first segment's);
    /// the segment table lists the group and replaces the placeholder by
    /// its segments before anything reads from it.
    pub unlisted: Option<Group>,
    meta: OnceLock<SegmentMeta>,
    handle: Mutex<Option<Arc<OpenSegment>>>,
    /// Every memory map made of the file, weakly: a map outlives its handle
    /// while a [`Record`] borrows from it, and then the file must not be
    /// reused for another segment.
    maps: Mutex<Vec<Weak<dyn AsRef<[u8]> + Send + Sync>>>,
}

impl Segment {
    /// A segment known only by its file name; its header is checked on
    /// first use.
    pub(crate) fn unchecked(base: u64, seq: u64, path: PathBuf) -> Segment {
        Segment {
            base,
            seq,
            path,
            unlisted: None,
            meta: OnceLock::new(),
            handle: Mutex::new(None),
            maps: Mutex::new(Vec::new()),
        }
    }

    /// A placeholder for the group directory `group`, not listed yet.
    pub(crate) fn unlisted_group(group: Group) -> Segment {
        let seq = group.first_seq();
        let mut s = Segment::unchecked(group.base, seq, group.segment_path(group.base, seq));
        s.unlisted = Some(group);
        s
    }

    /// A segment whose header is already known good (the writer created it,
    /// or recovery checked it).
    pub(crate) fn checked(meta: SegmentMeta) -> Segment {
        Segment {
            base: meta.base,
            seq: meta.seq,
            path: meta.path.clone(),
            unlisted: None,
            meta: OnceLock::from(meta),
            handle: Mutex::new(None),
            maps: Mutex::new(Vec::new()),
        }
    }

    /// The checked header, if it has been read already.
    pub(crate) fn checked_meta(&self) -> Option<&SegmentMeta> {
        self.meta.get()
    }

    /// The checked header, reading and checking it if not done yet (see
    /// [`crate::recovery::check_segment_header`]). A failed check is not
    /// remembered: it is made again next time.
    pub(crate) fn meta(&self, storage: &dyn Storage) -> Result<&SegmentMeta> {
        if let Some(m) = self.meta.get() {
            return Ok(m);
        }
        let m = crate::recovery::read_segment_meta(storage, &self.path, self.base, self.seq)?;
        Ok(self.meta.get_or_init(|| m))
    }

    /// Whether nothing but the caller's handle refers to this segment: no
    /// reader holds it and no record borrows from a map of its file. Only
    /// then may its file be reused (it must be out of the segment table
    /// already, so that no new reference can appear).
    pub(crate) fn unused(self: &Arc<Segment>) -> bool {
        Arc::strong_count(self) == 1 && lock(&self.maps).iter().all(|w| w.strong_count() == 0)
    }

    /// Drops the cached handle (the open-segment cache evicted it).
    pub(crate) fn evict(&self) {
        *lock(&self.handle) = None;
    }

    /// Returns the open handle, opening the file (and checking its header,
    /// the first time) if needed. The boolean says whether this call opened
    /// it (so the caller can account for it).
    pub(crate) fn open(
        &self,
        storage: &dyn Storage,
        map: bool,
    ) -> Result<(Arc<OpenSegment>, bool)> {
        let mut h = lock(&self.handle);
        if let Some(open) = h.as_ref() {
            return Ok((open.clone(), false));
        }
        let path = &self.path;
        let file = storage
            .open_file(path, OpenMode::Read)
            .map_err(|e| Error::io("open segment", path, e))?;
        let meta = match self.meta.get() {
            Some(m) => m,
            None => {
                let m = crate::recovery::check_segment_header(&*file, path, self.base, self.seq)?;
                self.meta.get_or_init(|| m)
            }
        };
        let map = if map {
            file.map()
                .map_err(|e| Error::io("memory-map segment", path, e))?
        } else {
            None
        };
        if let Some(m) = &map {
            let mut maps = lock(&self.maps);
            maps.retain(|w| w.strong_count() > 0);
            maps.push(Arc::downgrade(m));
        }
        if let Some(m) = &map
            && ((**m).as_ref().len() as u64) < meta.size
        {
            return Err(Error::corrupt(
                path,
                (**m).as_ref().len() as u64,
                format!(
                    "segment file is shorter than its header's size of {} bytes",
                    meta.size
                ),
            ));
        }
        let open = Arc::new(OpenSegment {
            meta: meta.clone(),
            file,
            seed: record::salt_seed(meta.salt),
            map,
            index: Mutex::new(SparseIndex::default()),
        });
        *h = Some(open.clone());
        Ok((open, true))
    }
}

impl fmt::Debug for OpenSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenSegment")
            .field("file", &self.file)
            .field("mapped", &self.map.is_some())
            .finish_non_exhaustive()
    }
}

impl OpenSegment {
    fn read_bytes(&self, pos: u64, len: usize) -> Result<std::borrow::Cow<'_, [u8]>> {
        let meta = &self.meta;
        if pos + len as u64 > meta.size {
            return Err(Error::corrupt(
                &meta.path,
                pos,
                "record runs past the end of the segment",
            ));
        }
        match &self.map {
            Some(m) => Ok(std::borrow::Cow::Borrowed(
                &(**m).as_ref()[pos as usize..pos as usize + len],
            )),
            None => {
                let mut buf = vec![0u8; len];
                self.file
                    .read_at(&mut buf, pos)
                    .map_err(|e| Error::io("read segment", &meta.path, e))?;
                Ok(std::borrow::Cow::Owned(buf))
            }
        }
    }

    /// Reads and checks the header of the record at `pos`, which must hold
    /// `offset`. Returns it with its 24 bytes.
    pub(crate) fn header_at(
        &self,
        pos: u64,
        offset: u64,
    ) -> Result<(record::RecordHeader, std::borrow::Cow<'_, [u8]>)> {
        let room = self.meta.size.saturating_sub(pos) as usize;
        let bytes = self.read_bytes(pos, RECORD_HEADER_LEN.min(room))?;
        let header = expect_header(&self.meta, pos, offset, &bytes, room)?;
        Ok((header, bytes))
    }

    /// The fully checked record at `pos` (which must hold `offset`) of the
    /// mapped segment `bytes`: its header and encoded bytes, straight from
    /// the map (at least `meta.size` long, checked at open), no copies.
    #[inline]
    fn mapped_record<'a>(
        &self,
        bytes: &'a [u8],
        pos: u64,
        offset: u64,
    ) -> Result<(record::RecordHeader, &'a [u8])> {
        let meta = &self.meta;
        let p = (pos as usize).min(bytes.len());
        let room = (meta.size as usize).min(bytes.len()).saturating_sub(p);
        let header = expect_header(meta, pos, offset, &bytes[p..p + room], room)?;
        let whole = &bytes[p..p + header.encoded_len()];
        record::check(&header, self.seed, whole)
            .map_err(|why| bad_record(meta, pos, offset, why))?;
        Ok((header, whole))
    }

    /// The fully checked record at `pos` (which must hold `offset`) of an
    /// unmapped segment, read through `window`, which is refilled from the
    /// file when it does not hold the whole record.
    fn windowed_record<'w>(
        &self,
        window: &'w mut Window,
        pos: u64,
        offset: u64,
    ) -> Result<(record::RecordHeader, &'w [u8])> {
        let meta = &self.meta;
        let room = meta.size.saturating_sub(pos) as usize;
        let head = RECORD_HEADER_LEN.min(room);
        if !window.covers(pos, head) {
            self.fill(window, pos, window.read_ahead.max(head).min(room))?;
        }
        let at = (pos - window.start) as usize;
        let header = expect_header(meta, pos, offset, &window.bytes[at..], room)?;
        let len = header.encoded_len();
        if !window.covers(pos, len) {
            self.fill(window, pos, window.read_ahead.max(len).min(room))?;
        }
        let at = (pos - window.start) as usize;
        let whole = &window.bytes[at..at + len];
        record::check(&header, self.seed, whole)
            .map_err(|why| bad_record(meta, pos, offset, why))?;
        Ok((header, whole))
    }

    /// Reads `len` bytes at `pos` into `window`.
    fn fill(&self, window: &mut Window, pos: u64, len: usize) -> Result<()> {
        window.bytes.clear();
        window.bytes.resize(len, 0);
        window.start = pos;
        if let Err(e) = self.file.read_at(&mut window.bytes, pos) {
            window.bytes.clear();
            return Err(Error::io("read segment", &self.meta.path, e));
        }
        Ok(())
    }

    /// Reads and fully checks the record at `pos`, which must hold `offset`.
    /// Returns the record and the position of the next one.
    pub(crate) fn record_at(&self, pos: u64, offset: u64) -> Result<(Record, u64)> {
        self.record_in(&mut Window::new(SINGLE_READ_AHEAD), pos, offset)
    }

    /// [`OpenSegment::record_at`], reading through `window` when the segment
    /// is not mapped (a reader going in order keeps one window).
    pub(crate) fn record_in(
        &self,
        window: &mut Window,
        pos: u64,
        offset: u64,
    ) -> Result<(Record, u64)> {
        let meta = &self.meta;
        let (header, record) = match &self.map {
            Some(m) => {
                let header = self.mapped_record((**m).as_ref(), pos, offset)?.0;
                let start = pos as usize + RECORD_HEADER_LEN;
                let record = Record {
                    bytes: RecordBytes::Mapped {
                        map: m.clone(),
                        start,
                        end: start + header.len as usize,
                    },
                };
                (header, record)
            }
            None => {
                let (header, whole) = self.windowed_record(window, pos, offset)?;
                let payload = &whole[RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.len as usize];
                let record = Record {
                    bytes: RecordBytes::Owned(payload.to_vec()),
                };
                (header, record)
            }
        };
        if header.is_lost() {
            return Err(Error::Lost {
                offset,
                path: meta.path.clone(),
            });
        }
        Ok((record, pos + header.encoded_len() as u64))
    }

    /// Finds the byte position of record `offset`, walking headers from the
    /// nearest indexed record. `limit` is the end (exclusive) of the records
    /// known durable in this segment; nothing at or past it is walked.
    pub(crate) fn locate(&self, offset: u64, limit: u64) -> Result<u64> {
        let meta = &self.meta;
        debug_assert!(offset >= meta.base && offset < limit);
        let mut idx = lock(&self.index);
        let (f_off, f_pos) = idx
            .frontier
            .unwrap_or((meta.base, SEGMENT_HEADER_LEN as u64));
        if idx.frontier.is_none() {
            idx.positions.push(f_pos);
            idx.frontier = Some((f_off, f_pos));
        }
        if offset < f_off {
            // A reader going in order below the frontier: its entry is this
            // record (read again) or the one before it (one step on, and
            // the entry moves with it).
            let mine = idx.recent.iter().position(|e| {
                e.is_some_and(|(o, _)| o == offset || o.checked_add(1) == Some(offset))
            });
            if let Some(i) = mine
                && let Some((o, pos)) = idx.recent[i]
            {
                let pos = if o == offset {
                    pos
                } else {
                    pos + self.header_at(pos, o)?.0.encoded_len() as u64
                };
                idx.recent[i] = Some((offset, pos));
                return Ok(pos);
            }
            let slot = ((offset - meta.base) / INDEX_STRIDE) as usize;
            let mut off = meta.base + slot as u64 * INDEX_STRIDE;
            let mut pos = idx.positions[slot];
            drop(idx);
            while off < offset {
                pos += self.header_at(pos, off)?.0.encoded_len() as u64;
                off += 1;
            }
            let mut idx = lock(&self.index);
            let next = idx.recent_next;
            idx.recent[next] = Some((offset, pos));
            idx.recent_next = (next + 1) % RECENT;
            return Ok(pos);
        }
        // Extend the frontier up to `offset`, indexing as we go.
        let (mut off, mut pos) = (f_off, f_pos);
        while off < offset {
            debug_assert!(off < limit);
            pos += self.header_at(pos, off)?.0.encoded_len() as u64;
            off += 1;
            if (off - meta.base).is_multiple_of(INDEX_STRIDE) {
                idx.positions.push(pos);
            }
            idx.frontier = Some((off, pos));
        }
        Ok(pos)
    }

    /// Walks the checked records of this segment from `pos` (which holds
    /// `offset`) up to offset `limit`, calling `f` with each offset and
    /// payload borrowed from the memory map (or read into a buffer per
    /// record when the segment is not mapped). Stops early when `f`
    /// breaks. Returns the offset after the last record given
    /// to `f` and whether `f` broke.
    pub(crate) fn scan<F>(
        &self,
        mut pos: u64,
        mut offset: u64,
        limit: u64,
        f: &mut F,
    ) -> Result<ScanStep>
    where
        F: FnMut(u64, &[u8]) -> std::ops::ControlFlow<()>,
    {
        let meta = &self.meta;
        // Mapped: one slice for the whole walk.
        let mapped: Option<&[u8]> = self.map.as_ref().map(|m| (**m).as_ref());
        // Unmapped: read ahead in large pieces. `limit` is fixed for this
        // walk, so every record below it was whole before the first read.
        let mut window = Window::new(WALK_READ_AHEAD);
        while offset < limit {
            let (header, whole): (record::RecordHeader, &[u8]) = match mapped {
                Some(bytes) => self.mapped_record(bytes, pos, offset)?,
                None => self.windowed_record(&mut window, pos, offset)?,
            };
            if header.is_lost() {
                return Err(Error::Lost {
                    offset,
                    path: meta.path.clone(),
                });
            }
            let payload = &whole[RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.len as usize];
            let flow = f(offset, payload);
            offset += 1;
            pos += header.encoded_len() as u64;
            if flow.is_break() {
                return Ok(ScanStep {
                    offset,
                    broke: true,
                });
            }
        }
        Ok(ScanStep {
            offset,
            broke: false,
        })
    }
}

/// The error for record `offset` at `pos` that fails its check.
fn bad_record(meta: &SegmentMeta, pos: u64, offset: u64, why: record::Invalid) -> Error {
    Error::corrupt(
        &meta.path,
        pos,
        format!("record {offset}: {}", why.describe()),
    )
}

/// Parses the record header at the start of `bytes` (`room` bytes remain
/// in the segment from `pos`), which must hold `offset`.
#[inline]
fn expect_header(
    meta: &SegmentMeta,
    pos: u64,
    offset: u64,
    bytes: &[u8],
    room: usize,
) -> Result<record::RecordHeader> {
    let header = record::parse_header(bytes, room).map_err(|why| {
        Error::corrupt(
            &meta.path,
            pos,
            format!("expected record {offset} here: {}", why.describe()),
        )
    })?;
    if header.offset != offset {
        return Err(Error::corrupt(
            &meta.path,
            pos,
            format!(
                "expected record {offset} here, found record {}",
                header.offset
            ),
        ));
    }
    Ok(header)
}

/// Where [`OpenSegment::scan`] stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanStep {
    /// The offset after the last record handed out.
    pub offset: u64,
    /// Whether the callback asked to stop.
    pub broke: bool,
}

/// A bounded set of open segment handles, least recently opened evicted
/// first, so that memory and file descriptors stay flat as the log grows.
#[derive(Debug)]
pub(crate) struct OpenCache {
    capacity: usize,
    order: Mutex<VecDeque<Arc<Segment>>>,
}

impl OpenCache {
    pub(crate) fn new(capacity: usize) -> OpenCache {
        OpenCache {
            capacity: capacity.max(1),
            order: Mutex::new(VecDeque::new()),
        }
    }

    /// Opens `seg` through the cache.
    pub(crate) fn open(
        &self,
        storage: &dyn Storage,
        seg: &Arc<Segment>,
        map: bool,
    ) -> Result<Arc<OpenSegment>> {
        let (open, fresh) = seg.open(storage, map)?;
        if fresh {
            let mut order = lock(&self.order);
            order.push_back(seg.clone());
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    old.evict();
                }
            }
        }
        Ok(open)
    }

    /// Forgets a segment (it was deleted).
    pub(crate) fn forget(&self, base: u64) {
        let mut order = lock(&self.order);
        order.retain(|s| {
            if s.base == base {
                s.evict();
                false
            } else {
                true
            }
        });
    }
}
