//! Group commit and segment rollover.
//!
//! Appenders encode their records into a shared staging area under a short
//! lock, which assigns offsets and byte positions. Whoever finds no flush in
//! progress becomes the leader: it takes everything staged, writes each run
//! of records bound for one segment with one `write` call, `fdatasync`s it,
//! publishes the new durable end and wakes the others. No background thread
//! is involved in committing; staging is bounded ([`MAX_STAGED_BYTES`]), so
//! appenders wait when the disk is behind rather than queueing without limit.
//!
//! Rollover uses a spare segment prepared ahead of time (a new file, or a
//! segment file retention released, zero-filled and synced by a background
//! thread started once the active segment is half full): the leader writes
//! the new header into it,
//! syncs it, renames it to its final name and syncs the directory before any
//! record goes into it.

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::ops::Range;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::layout::{self, Group};
use crate::log::Shared;
use crate::names;
use crate::record::{self, FLAG_END_OF_WRITE, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::segment::{self, Segment, SegmentMeta, Spare, lock};
use crate::storage::StorageFile;

/// Appenders wait while this many bytes are staged and not yet taken by a
/// leader (a single batch larger than this is still accepted on its own).
pub const MAX_STAGED_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegInfo {
    base: u64,
    seq: u64,
    salt: u64,
    size: u64,
}

/// Records bound for one contiguous range of one segment.
#[derive(Debug)]
struct Chunk {
    seg: SegInfo,
    pos: u64,
    buf: Vec<u8>,
    end_offset: u64,
    last_rec: usize,
    last_hasher: crc32fast::Hasher,
}

#[derive(Debug)]
struct WState {
    next_offset: u64,
    /// The segment the next staged record goes into, and where.
    assign: SegInfo,
    assign_pos: u64,
    chunks: Vec<Chunk>,
    staged_bytes: usize,
    leader_active: bool,
    /// Number of the batch now being staged; the leader takes it whole.
    batch: u64,
    /// Appenders waiting for staging space.
    space_waiters: usize,
    /// Threads parked until batch `b` is durable, in `parked[b % 2]`.
    parked: [Vec<thread::Thread>; 2],
    durable_end: u64,
    poisoned: Option<Arc<str>>,
    abort_epoch: u64,
    abort_reason: Option<Arc<str>>,
    /// `abort_floors[e]`: the durable end when abort number `e + 1`
    /// happened; every offset at or above it assigned before that abort
    /// was dropped (and may since have been assigned again).
    abort_floors: Vec<u64>,
}

#[derive(Debug, Default)]
enum SpareSlot {
    #[default]
    Empty,
    /// Being prepared by a thread; setting the flag makes it stop and
    /// remove its file.
    Pending(JoinHandle<std::io::Result<Spare>>, Arc<AtomicBool>),
}

/// State only the leader touches.
#[derive(Debug)]
struct LeaderState {
    file: Box<dyn StorageFile>,
    active: SegInfo,
    /// The active segment's file.
    active_path: PathBuf,
    tail_pos: u64,
    spare: SpareSlot,
}

enum Failure {
    /// The log's state on disk is uncertain: refuse writes until reopened.
    Poison(String),
    /// Nothing was made durable and nothing is uncertain: fail the staged
    /// appends, keep the log usable.
    Abort(String),
}

/// The writing half of a log.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    state: Mutex<WState>,
    /// `WState::durable_end`, readable without the lock: a parked
    /// appender woken by the leader checks it and returns without touching
    /// the state lock (no convoy of woken threads on the mutex).
    durable: crate::sync::atomic::AtomicU64,
    /// `WState::abort_epoch`, readable without the lock.
    epoch: crate::sync::atomic::AtomicU64,
    /// Appenders waiting for staging space.
    space: Condvar,
    leader: Mutex<LeaderState>,
    new_segment_size: u64,
    background_spares: bool,
}

impl Writer {
    /// A writer appending to `active` (open for writing) at `tail_pos`,
    /// whose next offset is `end`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        active: &SegmentMeta,
        file: Box<dyn StorageFile>,
        tail_pos: u64,
        end: u64,
        new_segment_size: u64,
        background_spares: bool,
    ) -> Writer {
        let info = SegInfo {
            base: active.base,
            seq: active.seq,
            salt: active.salt,
            size: active.size,
        };
        Writer {
            shared,
            state: Mutex::new(WState {
                next_offset: end,
                assign: info,
                assign_pos: tail_pos,
                chunks: Vec::new(),
                staged_bytes: 0,
                leader_active: false,
                batch: 0,
                space_waiters: 0,
                parked: [Vec::new(), Vec::new()],
                durable_end: end,
                poisoned: None,
                abort_epoch: 0,
                abort_reason: None,
                abort_floors: Vec::new(),
            }),
            durable: crate::sync::atomic::AtomicU64::new(end),
            epoch: crate::sync::atomic::AtomicU64::new(0),
            space: Condvar::new(),
            leader: Mutex::new(LeaderState {
                file,
                active: info,
                active_path: active.path.clone(),
                tail_pos,
                spare: SpareSlot::Empty,
            }),
            new_segment_size,
            background_spares,
        }
    }

    /// The largest payload an append accepts.
    pub(crate) fn max_payload(&self) -> usize {
        max_payload_for(self.new_segment_size)
    }

    /// Why the writer refuses appends, if it does.
    pub(crate) fn poisoned(&self) -> Option<Arc<str>> {
        lock(&self.state).poisoned.clone()
    }

    /// Appends `payloads` durably; returns their offsets.
    pub(crate) fn append(&self, payloads: &[&[u8]]) -> Result<Range<u64>> {
        let max = self.max_payload();
        let mut total = 0usize;
        for p in payloads {
            if p.len() > max {
                return Err(Error::RecordTooLarge { len: p.len(), max });
            }
            total += record::encoded_len(p.len());
        }
        // Checksum large payloads before taking the lock; small ones are
        // checksummed in one pass with their header while being encoded
        // (and need no hasher, so the common case allocates nothing here).
        let hashers: Vec<crc32fast::Hasher> =
            if payloads.iter().any(|p| p.len() > record::INLINE_CRC_MAX) {
                payloads.iter().map(|p| record::payload_hasher(p)).collect()
            } else {
                Vec::new()
            };

        let mut st = lock(&self.state);
        loop {
            if let Some(reason) = &st.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            if st.staged_bytes == 0 || st.staged_bytes + total <= MAX_STAGED_BYTES {
                break;
            }
            st.space_waiters += 1;
            st = self.space.wait(st).unwrap_or_else(|e| e.into_inner());
            st.space_waiters -= 1;
        }
        let first = st.next_offset;
        if first + payloads.len() as u64 >= record::MAX_COUNTER {
            return Err(Error::InvalidArgument(format!(
                "the log's offset space is exhausted (offsets stop below {})",
                record::MAX_COUNTER
            )));
        }
        // Likewise sequence numbers: a segment numbered at or above
        // MAX_COUNTER would be unreadable, so a batch that needs one is
        // refused before anything is staged (only a crafted log gets here;
        // each record starts at most one segment, so appends far from the
        // limit skip the walk).
        if st.assign.seq + payloads.len() as u64 >= record::MAX_COUNTER - 1 {
            let (mut seq, mut pos, mut size) = (st.assign.seq, st.assign_pos, st.assign.size);
            for p in payloads {
                let n = record::encoded_len(p.len()) as u64;
                (seq, pos, size) = self.placement(seq, pos, size, n);
            }
            if seq >= record::MAX_COUNTER {
                return Err(Error::InvalidArgument(format!(
                    "the log's segment sequence numbers are exhausted (they stop below {}): \
                     no new segment can be created",
                    record::MAX_COUNTER
                )));
            }
        }
        let mut hashers = hashers.into_iter();
        for p in payloads {
            let h = hashers.next().unwrap_or_default();
            self.stage(&mut st, p, h);
        }
        let my_end = st.next_offset;
        let my_epoch = st.abort_epoch;
        let my_batch = st.batch;
        if payloads.is_empty() {
            return Ok(first..first);
        }
        loop {
            if st.abort_epoch != my_epoch {
                // An abort happened after we staged: our records survived it
                // only if they were durable by then. (Checked before the
                // durable end: offsets are handed out again after an abort,
                // so a later durable end may cover someone else's records.)
                if my_end <= st.abort_floors[my_epoch as usize] {
                    return Ok(first..my_end);
                }
                let reason = st
                    .abort_reason
                    .clone()
                    .unwrap_or_else(|| "append aborted".into());
                return Err(Error::AppendFailed { reason });
            }
            if st.durable_end >= my_end {
                return Ok(first..my_end);
            }
            if let Some(reason) = &st.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            if !st.leader_active {
                self.lead(st);
                st = lock(&self.state);
                continue;
            }
            // Our records are in batch `my_batch` (being written, or staged
            // for the next flush): park until its leader wakes us, either
            // because the batch is durable or to lead the next flush.
            st.parked[(my_batch % 2) as usize].push(thread::current());
            drop(st);
            thread::park();
            // Durable end first, then the epoch: if no abort happened by the
            // time we read the epoch, none happened before the durable end
            // covered our records.
            if self.durable.load(crate::sync::atomic::Ordering::Acquire) >= my_end
                && self.epoch.load(crate::sync::atomic::Ordering::Acquire) == my_epoch
            {
                return Ok(first..my_end);
            }
            st = lock(&self.state);
        }
    }

    /// Wakes every waiter (abort, poison).
    fn wake_everyone(&self, st: &mut WState) {
        for list in &mut st.parked {
            for t in list.drain(..) {
                t.unpark();
            }
        }
        self.space.notify_all();
    }

    /// Where a record of `n` encoded bytes goes when the segment being
    /// filled has sequence number `seq`, is `size` bytes and is filled up
    /// to `pos`: the sequence number, fill position (after the record) and
    /// size of the segment it lands in. A record that does not fit starts
    /// a new segment; an active segment that holds no record (possible only
    /// when it was created smaller than this log's segments now are) is
    /// replaced in place, keeping its sequence number.
    fn placement(&self, seq: u64, pos: u64, size: u64, n: u64) -> (u64, u64, u64) {
        let header = SEGMENT_HEADER_LEN as u64;
        if pos + n <= size {
            return (seq, pos + n, size);
        }
        let seq = if pos == header { seq } else { seq + 1 };
        (seq, header + n, self.new_segment_size)
    }

    /// Encodes one record into the staging area, assigning its offset.
    fn stage(&self, st: &mut WState, payload: &[u8], hasher: crc32fast::Hasher) {
        let n = record::encoded_len(payload.len()) as u64;
        if st.assign_pos + n > st.assign.size {
            let (seq, _, size) = self.placement(st.assign.seq, st.assign_pos, st.assign.size, n);
            st.assign = SegInfo {
                base: st.next_offset,
                seq,
                salt: self.shared.storage.new_salt(),
                size,
            };
            st.assign_pos = SEGMENT_HEADER_LEN as u64;
        }
        let offset = st.next_offset;
        let (assign, assign_pos) = (st.assign, st.assign_pos);
        let reuse = matches!(st.chunks.last(), Some(c) if c.seg == assign && c.pos + c.buf.len() as u64 == assign_pos);
        if !reuse {
            st.chunks.push(Chunk {
                seg: assign,
                pos: assign_pos,
                buf: Vec::with_capacity(4096),
                end_offset: offset,
                last_rec: 0,
                last_hasher: crc32fast::Hasher::new(),
            });
        }
        let chunk = st.chunks.last_mut().expect("a chunk was just ensured");
        chunk.last_rec =
            record::encode_into(&mut chunk.buf, assign.salt, offset, 0, payload, &hasher);
        chunk.last_hasher = hasher;
        chunk.end_offset = offset + 1;
        st.assign_pos += n;
        st.next_offset += 1;
        st.staged_bytes += n as usize;
    }

    /// Takes everything staged, writes and syncs it, publishes the result.
    fn lead(&self, mut st: MutexGuard<'_, WState>) {
        let chunks = std::mem::take(&mut st.chunks);
        st.staged_bytes = 0;
        st.leader_active = true;
        let batch = st.batch;
        st.batch += 1;
        let space_waiters = st.space_waiters > 0;
        drop(st);
        if space_waiters {
            // Appenders held back by the staging bound may stage again.
            self.space.notify_all();
        }
        let mut leader = lock(&self.leader);
        let outcome = self.write_chunks(&mut leader, chunks, batch);
        let mut st = lock(&self.state);
        st.leader_active = false;
        match outcome {
            Ok(()) => {
                // Everyone in this batch is durable; one waiter of the next
                // batch (if any) takes over as leader: wake it first.
                let cohort = std::mem::take(&mut st.parked[(batch % 2) as usize]);
                let next = if st.chunks.is_empty() {
                    None
                } else {
                    st.parked[((batch + 1) % 2) as usize].pop()
                };
                drop(st);
                drop(leader);
                if let Some(t) = next {
                    t.unpark();
                }
                for t in cohort {
                    t.unpark();
                }
                return;
            }
            Err(Failure::Poison(reason)) => {
                st.poisoned = Some(reason.into());
            }
            Err(Failure::Abort(reason)) => {
                // Everything not yet durable was staged after the failure
                // point: drop it and continue from the durable tail.
                st.chunks.clear();
                st.staged_bytes = 0;
                st.next_offset = st.durable_end;
                st.assign = leader.active;
                st.assign_pos = leader.tail_pos;
                let floor = st.durable_end;
                st.abort_floors.push(floor);
                st.abort_epoch += 1;
                self.epoch
                    .store(st.abort_epoch, crate::sync::atomic::Ordering::Release);
                st.abort_reason = Some(reason.into());
            }
        }
        drop(leader);
        self.wake_everyone(&mut st);
    }

    fn write_chunks(
        &self,
        leader: &mut LeaderState,
        chunks: Vec<Chunk>,
        batch: u64,
    ) -> std::result::Result<(), Failure> {
        let n = chunks.len();
        for (i, mut chunk) in chunks.into_iter().enumerate() {
            if chunk.seg != leader.active {
                self.roll(leader, chunk.seg)?;
            }
            if chunk.pos + chunk.buf.len() as u64 > leader.active.size {
                return Err(Failure::Poison(format!(
                    "internal error: records for bytes {}..{} do not fit a segment of {} bytes",
                    chunk.pos,
                    chunk.pos + chunk.buf.len() as u64,
                    leader.active.size
                )));
            }
            if chunk.pos != leader.tail_pos {
                return Err(Failure::Poison(format!(
                    "internal error: staged records for byte {} but the segment tail is at {}",
                    chunk.pos, leader.tail_pos
                )));
            }
            record::set_flags(
                &mut chunk.buf,
                chunk.last_rec,
                chunk.seg.salt,
                FLAG_END_OF_WRITE,
                &chunk.last_hasher,
            );
            let path = &leader.active_path;
            let written = leader
                .file
                .write_at(&chunk.buf, chunk.pos)
                .map_err(|e| format!("write to {} failed: {e}", path.display()))
                .and_then(|()| {
                    leader
                        .file
                        .sync_data()
                        .map_err(|e| format!("fdatasync of {} failed: {e}", path.display()))
                });
            if let Err(reason) = written {
                // After a failed fdatasync Linux may drop the dirty pages yet
                // keep showing them (fsyncgate): overwrite them with zeros so
                // that a reopen in this boot does not read records that are
                // not on disk. Best effort; the log is poisoned either way.
                let _ = leader.file.write_at(&vec![0u8; chunk.buf.len()], chunk.pos);
                return Err(Failure::Poison(reason));
            }
            leader.tail_pos += chunk.buf.len() as u64;
            if leader.tail_pos > leader.active.size / 2 {
                // Half full: prepare the next segment in the background now,
                // so that short-lived processes never pay for one they do
                // not need, and long-running ones find it ready.
                self.start_spare(leader);
            }
            let mut st = lock(&self.state);
            st.durable_end = chunk.end_offset;
            self.durable
                .store(chunk.end_offset, crate::sync::atomic::Ordering::Release);
            let partial = if i + 1 < n {
                // Part of the batch is durable (it spans a rollover): wake
                // the batch; those not yet covered park again.
                std::mem::take(&mut st.parked[(batch % 2) as usize])
            } else {
                Vec::new()
            };
            drop(st);
            self.shared.publish(chunk.end_offset);
            for t in partial {
                t.unpark();
            }
        }
        Ok(())
    }

    /// Makes `seg` the active segment: header into a spare, sync, rename,
    /// sync the directory, then register it for readers.
    fn roll(&self, leader: &mut LeaderState, seg: SegInfo) -> std::result::Result<(), Failure> {
        let storage = &*self.shared.storage;
        let dir = &self.shared.dir;
        let spare = self.take_spare(leader).map_err(|e| {
            Failure::Abort(format!(
                "could not create the next segment file in {}: {e}",
                dir.display()
            ))
        })?;
        // The segment goes into the active one's group directory, or into a
        // new group when its number starts one. An empty active segment
        // replaced in place keeps its base and sequence number, hence its
        // name (and group): the rename replaces it atomically.
        let (group_dir, new_group) =
            if names::group_of(seg.seq) == names::group_of(leader.active.seq) {
                (layout::group_dir_of(&leader.active_path).to_owned(), false)
            } else {
                let g = Group::new(dir, seg.base, names::group_of(seg.seq));
                (g.path, true)
            };
        let path = group_dir.join(names::segment_file_name(seg.base, seg.seq));
        let meta = SegmentMeta {
            base: seg.base,
            seq: seg.seq,
            salt: seg.salt,
            size: seg.size,
            path: path.clone(),
        };
        let made_group = if new_group {
            storage.create_dir_all(&group_dir)
        } else {
            Ok(false)
        };
        let prepared = made_group.and_then(|made| {
            spare
                .file
                .write_at(&meta.header().encode(), 0)
                .and_then(|()| spare.file.sync_data())
                .and_then(|()| storage.rename(&spare.path, &path))
                .inspect_err(|_| {
                    if made {
                        let _ = storage.remove_dir(&group_dir);
                    }
                })
        });
        if let Err(e) = prepared {
            let Spare { path: tmp, file } = spare;
            drop(file);
            let _ = storage.remove_file(&tmp);
            return Err(Failure::Abort(format!(
                "could not create segment {}: {e}",
                path.display()
            )));
        }
        // The segment's entry in its group, then (for a new group) the
        // group's entry in the log directory. Until both are durable the
        // new segment may vanish on power loss, which loses nothing: no
        // record in it has been acknowledged.
        let mut to_sync = vec![group_dir.as_path()];
        if new_group {
            to_sync.push(dir);
        }
        for d in to_sync {
            storage.sync_dir(d).map_err(|e| {
                Failure::Poison(format!("fsync of directory {} failed: {e}", d.display()))
            })?;
        }
        self.shared.add_segment(Arc::new(Segment::checked(meta)));
        leader.file = spare.file;
        leader.active = seg;
        leader.active_path = path;
        leader.tail_pos = SEGMENT_HEADER_LEN as u64;
        Ok(())
    }

    /// Starts preparing the next spare segment in the background.
    fn start_spare(&self, leader: &mut LeaderState) {
        if !self.background_spares || !matches!(leader.spare, SpareSlot::Empty) {
            return;
        }
        let shared = self.shared.clone();
        let size = self.new_segment_size;
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        // The released file to reuse is taken from the pool by the thread
        // itself, so that a failed spawn leaves it in the pool.
        let spawned = thread::Builder::new()
            .name("durq-prealloc".into())
            .spawn(move || {
                let reuse = lock(&shared.spare_pool).pop();
                segment::prepare_spare(&*shared.storage, &shared.dir, size, reuse, &cancelled)
            });
        // If no thread can be spawned, the spare is made at rollover instead.
        if let Ok(handle) = spawned {
            leader.spare = SpareSlot::Pending(handle, cancel);
        }
    }

    fn take_spare(&self, leader: &mut LeaderState) -> std::io::Result<Spare> {
        let ready = match std::mem::take(&mut leader.spare) {
            SpareSlot::Pending(h, _) => h.join().ok().and_then(|r| r.ok()),
            SpareSlot::Empty => None,
        };
        match ready {
            Some(s) => Ok(s),
            // Made here if the background attempt failed (say the disk was
            // full then) or was never started.
            None => segment::prepare_spare(
                &*self.shared.storage,
                &self.shared.dir,
                self.new_segment_size,
                lock(&self.shared.spare_pool).pop(),
                &AtomicBool::new(false),
            ),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let leader = self.leader.get_mut().unwrap_or_else(|e| e.into_inner());
        // A spare still being prepared is not waited for: closing a log
        // that a short-lived process wrote a little into costs no segment's
        // worth of zeros. The thread stops at its next chunk and removes
        // its file.
        let spare = match std::mem::take(&mut leader.spare) {
            SpareSlot::Pending(h, cancel) => {
                cancel.store(true, Ordering::Relaxed);
                h.join().ok().and_then(|r| r.ok())
            }
            SpareSlot::Empty => None,
        };
        if let Some(Spare { path, file }) = spare {
            drop(file);
            let _ = self.shared.storage.remove_file(&path);
        }
        // Released segment files not reused yet (temporary files, which the
        // next open would remove anyway).
        for path in std::mem::take(&mut *lock(&self.shared.spare_pool)) {
            let _ = self.shared.storage.remove_file(&path);
        }
    }
}

/// The largest payload that fits in an empty segment of `segment_size`.
pub(crate) fn max_payload_for(segment_size: u64) -> usize {
    let room = segment_size.saturating_sub((SEGMENT_HEADER_LEN + RECORD_HEADER_LEN) as u64);
    (room as usize).min(record::MAX_RECORD_BYTES) & !(record::RECORD_ALIGN - 1)
}
