//! Named clients: delivery, acknowledgement, redelivery.
//!
//! Every [`Consumer`] handle for one client name (in one `Log`) shares one
//! in-memory client state, so threads sharing a name split the messages:
//! each message is handed to one of them. A delivered message is *in flight*
//! until it is acknowledged ([`Message::ack`]) or given back ([`Message::nack`]
//! or drop), in which case it is delivered again, before newer ones.
//!
//! The durable position of a client is the end of its contiguous acknowledged
//! prefix. Acks of one client are group-committed: concurrent acks share one
//! journal write and one `fdatasync` (see `cursor.rs`).

use crate::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use crate::codec::{Codec, Postcard};
use crate::cursor::{self, ClientFiles, JOURNAL_ENTRY_LEN, JOURNAL_LEN, Snapshot};
use crate::error::{Error, Result};
use crate::log::{Inner, Log};
use crate::segment::{Record, lock};
use crate::storage::StorageFile;

pub use crate::names::MAX_CLIENT_NAME_LEN;

/// Mutable state of one client.
#[derive(Debug)]
struct State {
    /// Every offset below it is acknowledged (in memory).
    acked: u64,
    /// Acknowledged offsets above `acked` (out of order).
    acked_ahead: BTreeSet<u64>,
    /// Delivered and not yet acknowledged or given back.
    in_flight: BTreeSet<u64>,
    /// Given back; delivered again before `next_new`.
    redeliver: BTreeSet<u64>,
    /// The next offset never delivered since the position was last set.
    next_new: u64,
    /// Incremented when the position is moved: older messages' acks are void.
    epoch: u64,
    /// What is durable on disk.
    durable_acked: u64,
    generation: u64,
    journal: Option<Box<dyn StorageFile>>,
    journal_pos: u64,
    leader_active: bool,
    poisoned: Option<Arc<str>>,
    removed: bool,
}

/// One named client's shared state.
pub(crate) struct Client {
    pub name: String,
    files: ClientFiles,
    state: Mutex<State>,
    cond: Condvar,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client whose durable state was loaded (or just created).
    pub(crate) fn new(
        files: ClientFiles,
        generation: u64,
        acked: u64,
        journal: Option<Box<dyn StorageFile>>,
        journal_pos: u64,
    ) -> Client {
        Client {
            name: files.name.clone(),
            files,
            state: Mutex::new(State {
                acked,
                acked_ahead: BTreeSet::new(),
                in_flight: BTreeSet::new(),
                redeliver: BTreeSet::new(),
                next_new: acked,
                epoch: 0,
                durable_acked: acked,
                generation,
                journal,
                journal_pos,
                leader_active: false,
                poisoned: None,
                removed: false,
            }),
            cond: Condvar::new(),
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The durable acknowledged position.
    pub(crate) fn durable_acked(&self) -> u64 {
        self.st().durable_acked
    }

    /// The in-memory acknowledged position and the number in flight.
    pub(crate) fn position(&self) -> (u64, usize) {
        let s = self.st();
        (s.acked, s.in_flight.len())
    }

    pub(crate) fn mark_removed(&self) {
        let mut s = self.st();
        s.removed = true;
        s.journal = None;
    }

    /// Waits until `target` is durable, leading the journal write if no one
    /// else is. Called with the state lock held.
    fn persist<'a>(
        &'a self,
        log: &Inner,
        mut s: MutexGuard<'a, State>,
        target: u64,
    ) -> Result<MutexGuard<'a, State>> {
        loop {
            if s.durable_acked >= target {
                return Ok(s);
            }
            if let Some(r) = &s.poisoned {
                return Err(Error::Poisoned { reason: r.clone() });
            }
            if s.removed {
                return Err(Error::NoSuchClient {
                    name: self.name.clone(),
                });
            }
            if !s.leader_active {
                s.leader_active = true;
                let want = s.acked;
                let generation = s.generation;
                let pos = s.journal_pos;
                let journal = s.journal.take();
                drop(s);
                let (journal, result) = self.write_position(log, journal, generation, pos, want);
                s = self.st();
                s.leader_active = false;
                s.journal = if s.removed { None } else { journal };
                match result {
                    Ok((generation, pos)) => {
                        if !s.removed {
                            s.generation = generation;
                            s.journal_pos = pos;
                            s.durable_acked = s.durable_acked.max(want);
                        }
                    }
                    Err((e, true)) => {
                        s.poisoned = Some(e.to_string().into());
                    }
                    Err((e, false)) => {
                        // Nothing changed on disk: report it to this caller;
                        // waiting acks try again themselves.
                        self.cond.notify_all();
                        return Err(e);
                    }
                }
                self.cond.notify_all();
                continue;
            }
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Makes `acked` durable: one journal entry and `fdatasync`, or, when the
    /// journal is full (or missing), a new snapshot generation. Returns the
    /// journal handle (if any is left) and the new generation and journal
    /// position, or the error and whether it leaves the durable state
    /// uncertain (then the client must be poisoned).
    #[allow(clippy::type_complexity)]
    fn write_position(
        &self,
        log: &Inner,
        journal: Option<Box<dyn StorageFile>>,
        generation: u64,
        pos: u64,
        acked: u64,
    ) -> (
        Option<Box<dyn StorageFile>>,
        std::result::Result<(u64, u64), (Error, bool)>,
    ) {
        let storage = &*log.shared.storage;
        if let Some(j) = &journal
            && pos + JOURNAL_ENTRY_LEN as u64 <= JOURNAL_LEN
        {
            let path = self.files.journal();
            let written = j
                .write_at(&cursor::encode_entry(generation, acked), pos)
                .map_err(|e| Error::io("write ack journal", &path, e))
                .and_then(|()| {
                    j.sync_data()
                        .map_err(|e| Error::io("fdatasync ack journal", &path, e))
                });
            if let Err(e) = written {
                // After a failed sync the kernel may drop the entry yet
                // keep showing it: overwrite it so that a reopen in this
                // boot does not read an ack that is not on disk.
                let _ = j.write_at(&[0u8; JOURNAL_ENTRY_LEN], pos);
                return (journal, Err((e, true)));
            }
            return (journal, Ok((generation, pos + JOURNAL_ENTRY_LEN as u64)));
        }
        // A new snapshot generation: the journal is full (fold it and reuse
        // it from its start) or missing (recreate it after the snapshot).
        // A failure before the rename (the generation space is exhausted,
        // the disk is full) changes nothing and can be retried by a later ack.
        let next = match self.files.next_generation(generation) {
            Ok(n) => n,
            Err(e) => return (journal, Err((e, false))),
        };
        let snapshot = Snapshot {
            generation: next,
            acked,
        };
        if let Err(e) = cursor::write_snapshot(storage, &self.files, snapshot) {
            return (journal, Err((e.error, e.renamed)));
        }
        if journal.is_some() {
            return (journal, Ok((next, 0)));
        }
        let created = cursor::create_journal(storage, &self.files).and_then(|j| {
            storage
                .sync_dir(&self.files.dir)
                .map_err(|e| Error::io("sync directory", &self.files.dir, e))?;
            Ok(j)
        });
        match created {
            Ok(j) => (Some(j), Ok((next, 0))),
            // The snapshot is durable but the journal is not there: the
            // in-memory state no longer matches the disk's.
            Err(e) => (None, Err((e, true))),
        }
    }

    /// Moves the position to `offset` durably (a new snapshot generation);
    /// messages in flight are forgotten.
    pub(crate) fn set_position(&self, log: &Inner, offset: u64) -> Result<()> {
        let mut s = self.st();
        while s.leader_active {
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.removed {
            return Err(Error::NoSuchClient {
                name: self.name.clone(),
            });
        }
        if let Some(r) = &s.poisoned {
            return Err(Error::Poisoned { reason: r.clone() });
        }
        let next = self.files.next_generation(s.generation)?;
        if let Err(e) = cursor::write_snapshot(
            &*log.shared.storage,
            &self.files,
            Snapshot {
                generation: next,
                acked: offset,
            },
        ) {
            if e.renamed {
                // The new generation may or may not reach the disk: acks
                // written under the old one could be hidden by it. Refuse
                // further acks until the log is reopened and re-read.
                s.poisoned = Some(e.error.to_string().into());
            }
            return Err(e.error);
        }
        s.generation = next;
        s.journal_pos = 0;
        s.acked = offset;
        s.durable_acked = offset;
        s.next_new = offset;
        s.acked_ahead.clear();
        s.in_flight.clear();
        s.redeliver.clear();
        s.epoch += 1;
        drop(s);
        log.shared.wake_all();
        Ok(())
    }
}

/// A handle on a named client of a [`Log`]: takes messages in offset order,
/// acknowledges them durably.
///
/// `Clone + Send + Sync + 'static`: it owns what it needs (the log stays
/// open while a consumer lives). Clones, and every other handle for the same
/// name from the same log, share the client: each message goes to one of
/// them.
#[derive(Clone)]
pub struct Consumer {
    log: Log,
    client: Arc<Client>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.client.name)
            .finish()
    }
}

/// A message delivered to a client. Acknowledge it with [`Message::ack`];
/// dropping it (or [`Message::nack`]) gives it back for redelivery.
pub struct Message {
    offset: u64,
    payload: Record,
    epoch: u64,
    consumer: Option<Consumer>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("offset", &self.offset)
            .field("len", &self.payload.len())
            .finish()
    }
}

impl Consumer {
    pub(crate) fn new(log: Log, client: Arc<Client>) -> Consumer {
        Consumer { log, client }
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.client.name
    }

    /// Takes the next message, if one is durable and not taken by another
    /// handle of this client; does not block. Messages given back come
    /// first, smallest offset first.
    ///
    /// If the client's position is older than the oldest retained offset
    /// (size-bound retention deleted messages it never acknowledged), this
    /// returns [`Error::Truncated`] until the position is moved with
    /// [`Consumer::seek`]: messages are never skipped silently.
    pub fn next(&self) -> Result<Option<Message>> {
        loop {
            let end = self.log.end();
            let (offset, epoch) = {
                let mut s = self.client.st();
                if s.removed {
                    return Err(Error::NoSuchClient {
                        name: self.client.name.clone(),
                    });
                }
                let offset = if let Some(o) = s.redeliver.pop_first() {
                    o
                } else if s.next_new < end {
                    let o = s.next_new;
                    s.next_new += 1;
                    o
                } else {
                    return Ok(None);
                };
                s.in_flight.insert(offset);
                (offset, s.epoch)
            };
            if let Some(m) = self.deliver(offset, epoch, self.log.read(offset))? {
                return Ok(Some(m));
            }
        }
    }

    /// Turns the read of `offset`, taken under `epoch`, into a message:
    /// `None` for a salvage placeholder (acknowledged as gone, explicitly,
    /// and skipped); an error, with the offset given back, when the record
    /// cannot be read.
    fn deliver(
        &self,
        offset: u64,
        epoch: u64,
        read: Result<Option<Record>>,
    ) -> Result<Option<Message>> {
        match read {
            Ok(Some(payload)) => Ok(Some(Message {
                offset,
                payload,
                epoch,
                consumer: Some(self.clone()),
            })),
            Ok(None) => {
                self.give_back(offset, epoch);
                let first = self.log.first_offset();
                Err(Error::Truncated { offset, first })
            }
            Err(Error::Lost { .. }) => {
                self.ack_offset(offset, epoch)?;
                Ok(None)
            }
            Err(e) => {
                self.give_back(offset, epoch);
                Err(e)
            }
        }
    }

    /// Takes up to `max` messages at once, as `max` calls of
    /// [`Consumer::next`] would (messages given back first, smallest offset
    /// first, then new ones in order), but under one lock and with one
    /// positioned pass through the new ones, so a batch consumer pays for
    /// each message little more than its checksum. Returns fewer, or none,
    /// when fewer are durable and free; does not block. Acknowledge them
    /// one by one or all at once with [`Consumer::ack_until`].
    ///
    /// If a message cannot be read, the messages before it are returned and
    /// it is given back with those after it, so that the next call reports
    /// its error (as [`Consumer::next`] would have); a batch whose first
    /// message cannot be read is that error.
    pub fn next_batch(&self, max: usize) -> Result<Vec<Message>> {
        let end = self.log.end();
        let (given_back, new, epoch) = {
            let mut s = self.client.st();
            if s.removed {
                return Err(Error::NoSuchClient {
                    name: self.client.name.clone(),
                });
            }
            let mut given_back = Vec::new();
            while given_back.len() < max {
                let Some(o) = s.redeliver.pop_first() else {
                    break;
                };
                given_back.push(o);
            }
            let room = (max - given_back.len()) as u64;
            let new = s.next_new..s.next_new + room.min(end.saturating_sub(s.next_new));
            s.next_new = new.end;
            s.in_flight
                .extend(given_back.iter().copied().chain(new.clone()));
            (given_back, new, s.epoch)
        };
        let mut out = Vec::with_capacity(given_back.len() + (new.end - new.start) as usize);
        let mut records = self.log.iter(new.start);
        let mut offsets = given_back.iter().copied().chain(new.clone());
        while let Some(offset) = offsets.next() {
            let read = if offset < new.start {
                self.log.read(offset)
            } else {
                // The new ones in order through one iterator; anything it
                // does not yield as expected (it starts at the first
                // retained offset, and ends after most errors) is read
                // directly, which reports what is wrong.
                match records.next() {
                    Some(Ok((o, r))) if o == offset => Ok(Some(r)),
                    Some(Err(e @ Error::Lost { offset: o, .. })) if o == offset => Err(e),
                    _ => self.log.read(offset),
                }
            };
            match self.deliver(offset, epoch, read) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {}
                Err(e) => {
                    for rest in offsets {
                        self.give_back(rest, epoch);
                    }
                    if out.is_empty() {
                        return Err(e);
                    }
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Like [`Consumer::next`], but waits up to `timeout` for a message to
    /// become durable (or be given back by another handle). Wakes as soon as
    /// one is appended: there is no window in which a wake-up is lost.
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.next()? {
                return Ok(Some(m));
            }
            let client = &self.client;
            let ready = self.log.inner.shared.wait_until(Some(deadline), |end| {
                let s = client.st();
                s.removed || !s.redeliver.is_empty() || s.next_new < end
            });
            if !ready {
                return self.next();
            }
        }
    }

    /// Returns the next message without taking it.
    pub fn peek(&self) -> Result<Option<(u64, Record)>> {
        let offset = {
            let s = self.client.st();
            match s.redeliver.first() {
                Some(&o) => o,
                None if s.next_new < self.log.end() => s.next_new,
                None => return Ok(None),
            }
        };
        match self.log.read(offset)? {
            Some(r) => Ok(Some((offset, r))),
            None => Err(Error::Truncated {
                offset,
                first: self.log.first_offset(),
            }),
        }
    }

    /// Acknowledges every message below `end` (delivered or not) durably:
    /// one write for a whole batch. Offsets already acknowledged are
    /// ignored; `end` beyond the log's end is clamped to it.
    pub fn ack_until(&self, end: u64) -> Result<()> {
        let end = end.min(self.log.end());
        let mut s = self.client.st();
        if end <= s.acked {
            // Already acknowledged in memory; make sure it is durable too
            // (an earlier ack covering it may have failed).
            drop(self.client.persist(&self.log.inner, s, end)?);
            return Ok(());
        }
        s.acked = end;
        let rest = s.acked_ahead.split_off(&end);
        s.acked_ahead = rest;
        let in_flight = s.in_flight.split_off(&end);
        s.in_flight = in_flight;
        let redeliver = s.redeliver.split_off(&end);
        s.redeliver = redeliver;
        absorb(&mut s);
        if s.next_new < s.acked {
            s.next_new = s.acked;
        }
        let target = s.acked;
        let s = self.client.persist(&self.log.inner, s, target)?;
        drop(s);
        self.log.inner.after_ack();
        Ok(())
    }

    fn ack_offset(&self, offset: u64, epoch: u64) -> Result<()> {
        let mut s = self.client.st();
        if epoch != s.epoch {
            // The position was moved since delivery; nothing to record.
            return Ok(());
        }
        s.in_flight.remove(&offset);
        if offset < s.acked {
            let target = s.acked;
            drop(self.client.persist(&self.log.inner, s, target)?);
            return Ok(());
        }
        if offset > s.acked {
            // Beyond a gap: recorded in memory; durable once the gap closes
            // (after a crash it may be delivered again, as documented).
            s.acked_ahead.insert(offset);
            return Ok(());
        }
        s.acked += 1;
        absorb(&mut s);
        let target = s.acked;
        drop(self.client.persist(&self.log.inner, s, target)?);
        self.log.inner.after_ack();
        Ok(())
    }

    fn give_back(&self, offset: u64, epoch: u64) {
        let mut s = self.client.st();
        if epoch != s.epoch || !s.in_flight.remove(&offset) {
            return;
        }
        s.redeliver.insert(offset);
        drop(s);
        self.log.inner.shared.wake_all();
    }

    /// Moves the client's position to `offset` (replay from an older offset,
    /// or skip ahead), durably. Messages in flight are forgotten: their acks
    /// become no-ops. `offset` is clamped to the log's retained range.
    pub fn seek(&self, offset: u64) -> Result<()> {
        let offset = offset.clamp(self.log.first_offset(), self.log.end());
        self.client.set_position(&self.log.inner, offset)
    }

    /// Skips every message present now: the position moves to the log's end.
    pub fn seek_to_end(&self) -> Result<()> {
        self.seek(self.log.end())
    }

    /// The acknowledged position: every offset below it is acknowledged.
    pub fn acked(&self) -> u64 {
        self.client.position().0
    }

    /// Messages not yet acknowledged: the log's end minus the acknowledged
    /// position (including messages in flight).
    pub fn lag(&self) -> u64 {
        self.log.end().saturating_sub(self.acked())
    }

    /// Messages waiting to be delivered: neither in flight nor acknowledged.
    pub fn waiting(&self) -> u64 {
        let end = self.log.end();
        let s = self.client.st();
        end.saturating_sub(s.next_new) + s.redeliver.len() as u64
    }

    /// The log this consumer reads.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

fn absorb(s: &mut State) {
    while s.acked_ahead.first() == Some(&s.acked) {
        s.acked_ahead.pop_first();
        s.acked += 1;
    }
}

impl Message {
    /// The message's offset in the log.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload as a [`Record`] (cheap to clone, may borrow a map).
    pub fn record(&self) -> &Record {
        &self.payload
    }

    /// Decodes the payload with postcard (the format of
    /// [`Log::append_value`]). A payload that does not decode is an
    /// [`Error::Decode`] for this message only; the message stays in flight
    /// (ack or nack it).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        self.decode_with(&Postcard)
    }

    /// Decodes the payload with another codec.
    pub fn decode_with<T: serde::de::DeserializeOwned, C: Codec>(&self, codec: &C) -> Result<T> {
        codec.decode(&self.payload).map_err(|reason| Error::Decode {
            offset: self.offset,
            reason,
        })
    }

    /// Acknowledges the message; durable when this returns (if it extends
    /// the contiguous acknowledged prefix; an ack beyond an unacknowledged
    /// message becomes durable when the gap closes).
    pub fn ack(mut self) -> Result<()> {
        let consumer = self.consumer.take().ok_or(Error::Closed)?;
        consumer.ack_offset(self.offset, self.epoch)
    }

    /// Gives the message back: it is delivered again (to this or another
    /// handle of the client), before newer messages.
    pub fn nack(mut self) {
        if let Some(c) = self.consumer.take() {
            c.give_back(self.offset, self.epoch);
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if let Some(c) = self.consumer.take() {
            c.give_back(self.offset, self.epoch);
        }
    }
}

/// A client as listed by [`Log::consumers`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientInfo {
    /// The client's name.
    pub name: String,
    /// Every offset below this is acknowledged (durably).
    pub acked: u64,
    /// Messages not yet acknowledged: log end minus `acked`.
    pub lag: u64,
    /// Messages delivered and not yet acknowledged, in this process.
    pub in_flight: usize,
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync + 'static>() {}
    is::<Consumer>();
    is::<Message>();
}

/// A client as loaded at open: usable, or with an unreadable cursor.
#[derive(Debug, Clone)]
pub(crate) enum ClientEntry {
    Ready(Arc<Client>),
    Broken {
        path: std::path::PathBuf,
        error: String,
    },
}

/// What loading the clients directory found.
#[derive(Debug, Default)]
pub(crate) struct LoadedClients {
    pub clients: std::collections::BTreeMap<String, ClientEntry>,
    pub repairs: Vec<crate::recovery::CursorRepair>,
    pub removed_temp_files: Vec<std::path::PathBuf>,
    pub unknown_files: Vec<std::path::PathBuf>,
}

impl LoadedClients {
    /// Records client `name` as unusable because of `e`, which concerns
    /// the file `path`: reported, and kept so that it can be removed.
    fn broken(&mut self, name: String, path: std::path::PathBuf, e: &Error) {
        self.repairs.push(crate::recovery::CursorRepair {
            client: name.clone(),
            file: path.clone(),
            action: format!("{e}; the client is unusable until removed and recreated"),
        });
        self.clients.insert(
            name,
            ClientEntry::Broken {
                path,
                error: e.to_string(),
            },
        );
    }
}

/// Loads every client of the log in `log_dir`, whose retained offsets are
/// `first..end`. In repair mode, leftovers are removed and cursors past the
/// end are clamped durably; otherwise nothing is written.
pub(crate) fn load_clients(
    storage: &dyn crate::storage::Storage,
    log_dir: &std::path::Path,
    first: u64,
    end: u64,
    repair: bool,
) -> Result<LoadedClients> {
    use crate::recovery::CursorRepair;
    let mut out = LoadedClients::default();
    let dir = log_dir.join(crate::names::CLIENTS_DIR);
    if !storage.is_dir(&dir) {
        return Ok(out);
    }
    let listing = storage
        .list_dir(&dir)
        .map_err(|e| Error::io("list", &dir, e))?;
    let mut by_client: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for file in listing {
        if file.ends_with(crate::names::TEMP_SUFFIX) {
            out.removed_temp_files.push(dir.join(&file));
            continue;
        }
        match cursor::client_of_file(&file) {
            Some(name) if crate::names::validate_client_name(name).is_ok() => {
                by_client.entry(name.to_owned()).or_default().push(file);
            }
            _ => out.unknown_files.push(dir.join(&file)),
        }
    }
    out.removed_temp_files.sort();
    out.unknown_files.sort();
    if repair {
        for t in &out.removed_temp_files {
            storage
                .remove_file(t)
                .map_err(|e| Error::io("remove leftover", t, e))?;
        }
    }
    for (name, files_of) in by_client {
        let files = ClientFiles::new(&dir, &name);
        let has_slot = files_of.iter().any(|f| f.contains(cursor::CURSOR_SUFFIX));
        if !has_slot {
            // A journal without a snapshot: a client creation that never
            // finished (the snapshot's rename is what registers a client).
            // Nothing durable refers to it: a leftover like a temp file.
            let journal = files.journal();
            if repair {
                storage
                    .remove_file(&journal)
                    .map_err(|e| Error::io("remove unfinished client", &journal, e))?;
            }
            out.removed_temp_files.push(journal);
            continue;
        }
        let loaded = match cursor::load(storage, &files, repair) {
            Ok(l) => l,
            Err(e) => {
                let path = match &e {
                    Error::Corrupt { path, .. } | Error::Io { path, .. } => path.clone(),
                    _ => files.slot(0),
                };
                out.broken(name, path, &e);
                continue;
            }
        };
        for p in &loaded.problems {
            out.repairs.push(CursorRepair {
                client: name.clone(),
                file: files.slot(loaded.snapshot.generation),
                action: p.clone(),
            });
        }
        let (mut generation, mut acked, mut journal_pos) =
            (loaded.snapshot.generation, loaded.acked, loaded.journal_pos);
        let mut journal = loaded.journal;
        let past_end = acked > end;
        // A new snapshot generation, above every generation seen in the
        // journal (so stale entries can never count again), makes a clamp
        // durable and lets a missing or damaged journal be recreated now.
        let stale_entries = loaded.newest_entry_generation > generation;
        let new_generation = (repair && (past_end || stale_entries || journal.is_none()))
            .then(|| files.next_generation(generation.max(loaded.newest_entry_generation)));
        let verb = |done: &str| {
            if repair {
                done.to_owned()
            } else {
                format!("would be {done}")
            }
        };
        if let Some(p) = loaded.journal_problem {
            let action = match &new_generation {
                // No generation can be written (a crafted cursor at the
                // last one): the journal is not recreated.
                Some(Err(_)) => p,
                _ => format!("{p}; {}", verb("recreated")),
            };
            out.repairs.push(CursorRepair {
                client: name.clone(),
                file: files.journal(),
                action,
            });
        }
        let new_generation = match new_generation {
            Some(Err(e)) => {
                // Nothing is repaired or changed, and the client is not used.
                out.broken(name, files.slot(generation), &e);
                continue;
            }
            Some(Ok(g)) => Some(g),
            None => None,
        };
        if past_end {
            out.repairs.push(CursorRepair {
                client: name.clone(),
                file: files.slot(generation),
                action: format!(
                    "acknowledged position {acked} is past the log's end {end}: {} to {end}",
                    verb("clamped")
                ),
            });
            acked = end;
        }
        if let Some(g) = new_generation {
            generation = g;
            cursor::write_snapshot(storage, &files, Snapshot { generation, acked })?;
            journal_pos = 0;
            if journal.is_none() {
                journal = Some(cursor::create_journal(storage, &files)?);
            }
        }
        if !past_end && acked < first {
            out.repairs.push(CursorRepair {
                client: name.clone(),
                file: files.slot(generation),
                action: format!(
                    "acknowledged position {acked} is older than the first retained offset {first}: \
                     its next() reports the gap until it seeks"
                ),
            });
        }
        if repair {
            // Entries a crashed process left unsynced in the page cache were
            // just read: make them durable before the position is used.
            if let Some(j) = &journal {
                j.sync_data()
                    .map_err(|e| Error::io("sync ack journal", files.journal(), e))?;
            }
        }
        let client = Client::new(files, generation, acked, journal, journal_pos);
        out.clients
            .insert(name, ClientEntry::Ready(Arc::new(client)));
    }
    if repair {
        // Makes the removals above durable, and the snapshot renames a
        // crashed process did not sync.
        storage
            .sync_dir(&dir)
            .map_err(|e| Error::io("sync directory", &dir, e))?;
    }
    Ok(out)
}

/// Registers a new client durably at position `start`: journal first, then
/// the snapshot whose rename (and the directory sync) registers it.
pub(crate) fn create_client(
    storage: &dyn crate::storage::Storage,
    log_dir: &std::path::Path,
    name: &str,
    start: u64,
) -> Result<Client> {
    let dir = log_dir.join(crate::names::CLIENTS_DIR);
    storage
        .create_dir_all(&dir)
        .map_err(|e| Error::io("create directory", &dir, e))?;
    // The directory's entry is synced whether or not this call made it: an
    // earlier registration may have made it and then failed (or crashed)
    // before its sync, and a directory that exists is not yet a durable one.
    storage
        .sync_dir(log_dir)
        .map_err(|e| Error::io("sync directory", log_dir, e))?;
    let files = ClientFiles::new(&dir, name);
    let journal = cursor::create_journal(storage, &files)?;
    if let Err(e) = cursor::write_snapshot(
        storage,
        &files,
        Snapshot {
            generation: 0,
            acked: start,
        },
    ) {
        drop(journal);
        let _ = storage.remove_file(&files.journal());
        return Err(e.error);
    }
    Ok(Client::new(files, 0, start, Some(journal), 0))
}

/// Removes a usable client's files ([`remove_files`]).
pub(crate) fn remove_client_files(
    storage: &dyn crate::storage::Storage,
    client: &Client,
) -> Result<()> {
    let newest = client.st().generation;
    remove_files(storage, &client.files, Some(newest))
}

/// Removes a client's files: the older snapshot slot, then the newer, then
/// the journal, syncing the directory after each, so that a crash midway
/// never brings back an older position. `newest` is the generation of the
/// newest valid snapshot (none for a client left unusable by damage: then
/// the order does not matter).
pub(crate) fn remove_files(
    storage: &dyn crate::storage::Storage,
    files: &ClientFiles,
    newest: Option<u64>,
) -> Result<()> {
    let (older, newer) = match newest {
        Some(generation) => (files.slot(generation + 1), files.slot(generation)),
        None => (files.slot(0), files.slot(1)),
    };
    for path in [older, newer, files.journal()] {
        match storage.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
        storage
            .sync_dir(&files.dir)
            .map_err(|e| Error::io("sync directory", &files.dir, e))?;
    }
    Ok(())
}
