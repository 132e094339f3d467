//! `SimDisk`: an in-memory file system behind durq's storage seam
//! ([`durq::storage::Storage`] / [`durq::storage::StorageFile`]) that models
//! process crashes and power loss exactly, plus injected faults.
//!
//! Include it from an integration test with
//! `#[path = "support/simdisk.rs"] mod simdisk;`. It uses only std and
//! `durq::storage`.
//!
//! # What is modeled
//!
//! * **Files (inodes)** have two layers: the *durable* bytes (what the medium
//!   holds) and the *volatile* bytes (the page cache, what reads see). Every
//!   `write_at` and `set_len` changes the volatile bytes and is remembered as
//!   *pending* for that inode. `sync_data` and `sync_all` (the two are the same
//!   here; both make the length durable) apply the inode's pending list to its
//!   durable bytes and clear the list. The sync applies to the inode, whichever
//!   handle made the writes (as `fsync` does).
//! * **Directory entries** also have two layers per directory: the *volatile*
//!   map name -> file or subdirectory and the *durable* map. Creating a file,
//!   creating a directory, `rename`, `remove_file` and `remove_dir` change
//!   volatile maps only and are logged as pending entry changes of the
//!   directory holding the name, subdirectory changes in order with file
//!   changes. `sync_dir` makes the directory's volatile map its durable map
//!   (only its own entries: not its subdirectories' nor its files' data).
//! * **Directories are entries of their parent**, with the same rules as
//!   files. [`Storage::create_dir_all`] makes each missing directory, outermost
//!   first, as one `mkdir`: a new empty directory whose entry in its parent
//!   is pending until `sync_dir` of the parent. A directory is reached only
//!   through its parent's entries, so once a power loss has not kept its
//!   entry it is gone with everything under it (a file in it survives only
//!   if another durable name reaches it). [`Storage::remove_dir`] fails with
//!   [`io::ErrorKind::DirectoryNotEmpty`] while the directory has any volatile
//!   entry, [`io::ErrorKind::NotADirectory`] on a file; otherwise it removes
//!   the entry from the parent as a pending change. The removed directory
//!   keeps its durable entries and pending changes: a power loss that drops
//!   the removal brings it back with what they say after that loss (entries
//!   whose removal inside it was not durable come back too); one that keeps
//!   the removal loses it with everything in it. Directories have an identity
//!   apart from their path: `create_dir_all` at the name of a directory whose
//!   removal is still pending makes a new, empty directory (power loss then
//!   leaves the old one, none, or the new one). A path is resolved through
//!   the volatile entries: anything under a removed directory is not found
//!   (`open_file`, `list_dir`, `sync_dir`, `remove_*` fail with
//!   [`io::ErrorKind::NotFound`], `is_dir` is `false`). The roots `""` and
//!   `"/"` always exist. [`SimDisk::mkdir_durable`] and [`SimDisk::put_file`]
//!   make directories durable at once, for setting up.
//! * **Rename**: within one directory, one atomic change of two names. Across
//!   directories (the destination directory must exist, else
//!   [`io::ErrorKind::NotFound`]), two independent pending changes: the new
//!   name (replacing any file there) in the destination's list and the removal
//!   of the old name in the source's, so a power loss may keep the old name,
//!   the new one, both or neither. When both survive, the two names share one
//!   file as hard links would; a rename of one onto the other then does
//!   nothing, as POSIX says. Only files can be renamed: renaming a directory,
//!   or onto one, fails with [`io::ErrorKind::IsADirectory`].
//! * **Process crash** ([`SimDisk::process_crash`], SIGKILL): the page cache
//!   survives. Nothing new becomes durable (pending writes and entry changes
//!   stay pending, so a later power loss can still lose them); every open
//!   handle dies and every lock is released.
//! * **Power loss** ([`SimDisk::power_loss`]): per directory (also a removed
//!   one, whose removal may be lost), a random prefix (possibly empty,
//!   possibly all) of its pending entry changes reaches the medium, in order,
//!   as a journaling file system would commit them. The directories and files
//!   reachable from the roots through the resulting durable entries survive;
//!   the rest is freed. Then for every surviving inode: start from its
//!   durable bytes; the pending writes are each, independently, kept whole,
//!   dropped, or torn at 512-byte sector granularity (each absolute sector the
//!   write covers gets the new data, keeps the old data, or is zeroed; a torn
//!   write that extends the file may also leave the length at a sector boundary
//!   short of its end). A pending `set_len` is kept or dropped at random. Fates
//!   are independent, so any subset survives (a later write without an earlier
//!   one: any writeback order); survivors are replayed in issue order, so a
//!   write made before a truncation is never applied after it, and two
//!   overlapping writes never mix inside one sector in a way page-granular
//!   writeback could not produce. A kept write extending the file extends it.
//!   The result becomes both durable and volatile state. Handles die, locks
//!   are released, the disk revives. [`SimDisk::power_loss_with`] offers
//!   [`LossMode::KeepAll`] (the lucky case: everything pending reached the
//!   medium) and [`LossMode::DropAll`] (the unlucky case: only what was synced
//!   survives; no unsynced file or directory creation, rename or removal
//!   survives).
//! * **Crash points**: [`SimDisk::crash_after_ops`] / [`SimDisk::crash_after_syncs`]
//!   kill the disk at a chosen mutating operation; [`SimDisk::kill`] kills it
//!   now. A dead disk fails every operation (reads too) with an
//!   [`io::ErrorKind::Other`] error "simulated power loss", and
//!   [`Storage::is_dir`] answers `false`, until `power_loss*` or
//!   `process_crash` revives it. The operation that meets the crash point has
//!   no effect.
//!   Mutating operations are `write_at`, `set_len`, `sync_data`, `sync_all`,
//!   creating a file (by `open_file` or `try_lock`), creating a directory
//!   (`create_dir_all` counts once per directory it makes, nothing for those
//!   that exist), `rename`, `remove_file`, `remove_dir` and `sync_dir`; each
//!   call counts once it gets past the dead and stale-handle checks, whatever
//!   its outcome (`ENOSPC`, `NotFound`, ...); a creation counts once it knows
//!   the name is missing. `sync_data`, `sync_all` and `sync_dir` are the
//!   syncs.
//! * **Faults**: [`SimDisk::fail_sync_at`] (`EIO`, with Linux's semantics: the
//!   file's pending writes are dropped from what can ever become durable, though
//!   they stay readable until the next crash), [`SimDisk::set_disk_full`]
//!   (`ENOSPC`), [`SimDisk::flip_bit_on_read`] and
//!   [`SimDisk::corrupt_durable`] (bit rot).
//! * Locks ([`Storage::try_lock`]) are exclusive per inode and held in memory;
//!   a second attempt fails with [`io::ErrorKind::WouldBlock`].
//! * Writes through a [`OpenMode::Read`] handle fail with `EBADF`. Reads past
//!   the end fail with [`io::ErrorKind::UnexpectedEof`].
//! * All randomness (loss decisions, `list_dir` order) comes from a PRNG seeded
//!   by [`SimDisk::new`]: the same seed and the same sequence of calls give the
//!   same result. (Threads racing on one disk make the sequence itself
//!   nondeterministic; that is the test's business.)
//!
//! # What is not modeled
//!
//! * Directories cannot be renamed. A directory has no state besides its
//!   entries (no `.`/`..`, link counts, metadata): making one durable takes
//!   only the sync of its parent.
//! * No journaling side effects: an `fsync` of a file does not make directory
//!   entries durable, and entry changes of different directories are
//!   independent (real file systems are often kinder): a rename across
//!   directories is not atomic, and a directory's removal may reach the
//!   medium while removals inside it did not (the directory is then gone with
//!   them, which is what keeping them would have given).
//! * A sync of a directory that fails with `EIO` leaves its durable entries as
//!   they were; the pending changes may still reach the medium later.
//! * No hard links (beyond two names kept by a power loss during a rename
//!   across directories), symlinks, permissions, timestamps, sparse files
//!   (holes are stored zeros) or memory maps (`map()` returns `Ok(None)`).
//! * `write_at` is all-or-nothing in the volatile state (no short writes); each
//!   call is atomic with respect to other threads (one mutex).
//! * Files are capped at 4 GiB (`EFBIG` beyond), to catch runaway sizes.
//! * Paths are normalised lexically (`.` dropped, `..` pops); `""` and `"/"`
//!   are root directories that always exist and cannot be removed.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use durq::storage::{LockGuard, Mapping, OpenMode, Storage, StorageFile};

/// The sector size at which power loss tears writes.
pub const SECTOR: u64 = 512;

/// The largest file the simulated disk holds (writes beyond fail with `EFBIG`).
pub const MAX_FILE_LEN: u64 = 4 << 30;

/// How much of the pending (unsynced) state a power loss keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMode {
    /// Each pending write is kept, dropped or torn at random, each pending
    /// `set_len` kept or dropped, and a random prefix of each directory's
    /// pending entry changes survives.
    Random,
    /// Everything pending reaches the medium: the volatile state becomes the
    /// durable state (except writes already dropped by a failed sync).
    KeepAll,
    /// Nothing pending survives: only what was synced remains.
    DropAll,
}

/// An in-memory file system that models crashes, power loss and faults.
///
/// Cheap to clone; clones share the same disk. See the module docs for the
/// model.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Mutex<Inner>>,
}

/// A tiny deterministic PRNG (splitmix64).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..n`; `n` must be positive.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fisher-Yates shuffle.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// What a directory entry names: a file (inode number) or a subdirectory
/// (directory number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir(u64),
}

/// One change of one directory entry: `name` now names the entry, or is
/// gone (`None`).
type EntryChange = (OsString, Option<Entry>);

/// The directory number of the relative root `""`.
const ROOT_REL: u64 = 0;
/// The directory number of the absolute root `"/"`.
const ROOT_ABS: u64 = 1;

/// One directory, known by its number rather than its path: a directory
/// made again at the name of one whose removal is still pending is another
/// directory, and the removed one keeps its state for a power loss that
/// brings it back.
#[derive(Default)]
struct Dir {
    volatile: BTreeMap<OsString, Entry>,
    durable: BTreeMap<OsString, Entry>,
    /// Entry changes since the last successful `sync_dir`, in order; each
    /// inner list is one atomic operation.
    pending: Vec<Vec<EntryChange>>,
}

#[derive(Default)]
struct Inode {
    durable: Vec<u8>,
    volatile: Vec<u8>,
    pending: Vec<Pending>,
}

enum Pending {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

struct BitFlip {
    ino: u64,
    pos: u64,
    bit: u8,
}

struct Inner {
    seed: u64,
    /// Drives power-loss decisions.
    rng: SplitMix64,
    /// Drives `list_dir` order (kept apart so listing does not perturb loss).
    list_rng: SplitMix64,
    /// Segment salts (a stream of their own, like listing order).
    salt_rng: SplitMix64,
    /// Every directory a crash could still bring back, by number; the roots
    /// are [`ROOT_REL`] and [`ROOT_ABS`].
    dirs: BTreeMap<u64, Dir>,
    next_dir: u64,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    /// Bumped by every crash; handles from an older epoch are dead.
    epoch: u64,
    /// Held locks: inode -> token of the guard holding it.
    locks: BTreeMap<u64, u64>,
    next_token: u64,
    dead: bool,
    crash_after_ops: Option<u64>,
    crash_after_syncs: Option<u64>,
    fail_sync_at: Option<u64>,
    disk_full: bool,
    flips: Vec<BitFlip>,
    ops: u64,
    syncs: u64,
    crashes: u64,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

fn dead_err() -> io::Error {
    io::Error::other("simulated power loss")
}

fn stale_err() -> io::Error {
    io::Error::other("simulated disk: file handle from before a crash")
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(9)
}

fn efbig() -> io::Error {
    io::Error::from_raw_os_error(27)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "simulated disk: {}: no such file or directory",
            path.display()
        ),
    )
}

fn is_a_dir(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::IsADirectory,
        format!("simulated disk: {}: is a directory", path.display()),
    )
}

fn not_a_dir(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("simulated disk: {}: not a directory", path.display()),
    )
}

fn not_empty(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::DirectoryNotEmpty,
        format!("simulated disk: {}: directory not empty", path.display()),
    )
}

/// Lexical normalisation: drops `.`, resolves `..` by popping.
fn norm(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Splits a path into its (normalised) parent directory and file name.
fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let p = norm(path);
    let name = p.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("simulated disk: {}: no file name", path.display()),
        )
    })?;
    let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((parent, name.to_owned()))
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("file position fits in usize")
}

/// Applies one pending operation exactly.
fn apply(content: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { pos, data } => {
            let pos = to_usize(*pos);
            let end = pos + data.len();
            if end > content.len() {
                content.resize(end, 0);
            }
            content[pos..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => content.resize(to_usize(*len), 0),
    }
}

/// Applies a write torn at sector granularity.
fn apply_torn(content: &mut Vec<u8>, pos: u64, data: &[u8], rng: &mut SplitMix64) {
    let end = pos + data.len() as u64;
    let old_len = content.len() as u64;
    let mut target = end;
    if end > old_len && rng.below(4) == 0 {
        // The size update reached the medium for a prefix of the extension
        // only: the length stops at a sector boundary in [old_len, end).
        let lo = old_len.div_ceil(SECTOR) * SECTOR;
        if lo < end {
            let boundaries = (end - 1 - lo) / SECTOR + 1;
            let k = rng.below(boundaries + 1);
            if k < boundaries {
                target = lo + k * SECTOR;
            }
        }
    }
    if target > old_len {
        content.resize(to_usize(target), 0);
    }
    let stop = end.min(target);
    let mut s = pos;
    while s < stop {
        let sector_end = ((s / SECTOR + 1) * SECTOR).min(stop);
        let range = to_usize(s)..to_usize(sector_end);
        match rng.below(3) {
            0 => {
                content[range].copy_from_slice(&data[to_usize(s - pos)..to_usize(sector_end - pos)])
            }
            1 => {} // the old data stays
            _ => content[range].fill(0),
        }
        s = sector_end;
    }
}

/// The bytes an inode holds after a power loss.
///
/// In [`LossMode::Random`], pending operations are replayed in issue order,
/// each with its own fate: a write is kept whole, dropped or torn (a third
/// each), a `set_len` kept or dropped (a half each). Because fates are
/// independent, a later write can survive while an earlier one is lost, which
/// covers any writeback order; replaying in issue order (rather than shuffling)
/// avoids mixing two overlapping writes inside one sector in a way that
/// page-granular writeback cannot produce, and keeps a write made before a
/// truncation from being applied after it.
fn after_power_loss(inode: &Inode, mode: LossMode, rng: &mut SplitMix64) -> Vec<u8> {
    let mut content = inode.durable.clone();
    match mode {
        LossMode::DropAll => {}
        LossMode::KeepAll => {
            for op in &inode.pending {
                apply(&mut content, op);
            }
        }
        LossMode::Random => {
            for op in &inode.pending {
                match op {
                    Pending::Write { pos, data } => match rng.below(3) {
                        0 => apply(&mut content, op),
                        1 => {} // dropped
                        _ => apply_torn(&mut content, *pos, data, rng),
                    },
                    Pending::SetLen(_) => {
                        if rng.below(2) == 0 {
                            apply(&mut content, op);
                        }
                    }
                }
            }
        }
    }
    content
}

impl Inner {
    fn alive(&self) -> io::Result<()> {
        if self.dead { Err(dead_err()) } else { Ok(()) }
    }

    fn die(&mut self) -> io::Error {
        self.dead = true;
        self.crash_after_ops = None;
        self.crash_after_syncs = None;
        dead_err()
    }

    /// Counts one mutating operation (a sync if `sync`). Fails if the disk is
    /// dead or dies now. Returns whether this sync must fail with `EIO`.
    fn mutation(&mut self, sync: bool) -> io::Result<bool> {
        self.alive()?;
        if self.crash_after_ops == Some(0) || (sync && self.crash_after_syncs == Some(0)) {
            return Err(self.die());
        }
        if let Some(n) = &mut self.crash_after_ops {
            *n -= 1;
        }
        self.ops += 1;
        if !sync {
            return Ok(false);
        }
        if let Some(n) = &mut self.crash_after_syncs {
            *n -= 1;
        }
        self.syncs += 1;
        match self.fail_sync_at {
            Some(n) if n <= 1 => {
                self.fail_sync_at = None;
                Ok(true)
            }
            Some(n) => {
                self.fail_sync_at = Some(n - 1);
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// What `path` names in the volatile (or durable) entries: walks from its
    /// root through each directory's map of that layer.
    fn resolve(&self, path: &Path, durable: bool) -> Option<Entry> {
        let path = norm(path);
        let root = if path.has_root() { ROOT_ABS } else { ROOT_REL };
        let mut at = Entry::Dir(root);
        for c in path.components() {
            let name = match c {
                Component::Normal(name) => name,
                Component::RootDir => continue,
                _ => return None,
            };
            let Entry::Dir(id) = at else {
                return None; // a file on the way
            };
            let dir = self.dirs.get(&id)?;
            let map = if durable { &dir.durable } else { &dir.volatile };
            at = *map.get(name)?;
        }
        Some(at)
    }

    /// The directory `path` names in the volatile entries.
    fn dir_id(&self, path: &Path) -> Option<u64> {
        match self.resolve(path, false)? {
            Entry::Dir(id) => Some(id),
            Entry::File(_) => None,
        }
    }

    /// The inode a path names in the volatile (or durable) entries.
    fn lookup(&self, path: &Path, durable: bool) -> Option<u64> {
        match self.resolve(path, durable)? {
            Entry::File(ino) => Some(ino),
            Entry::Dir(_) => None,
        }
    }

    /// Applies entry changes to a directory's volatile map and logs them.
    fn change_entries(&mut self, dir: u64, changes: Vec<EntryChange>) {
        let d = self.dirs.get_mut(&dir).expect("directory exists");
        for (name, entry) in &changes {
            match entry {
                Some(entry) => d.volatile.insert(name.clone(), *entry),
                None => d.volatile.remove(name),
            };
        }
        d.pending.push(changes);
    }

    /// Opens `path`, creating it if `create`; returns the inode. Fails if it
    /// exists and `exclusive`.
    fn open_or_create(&mut self, path: &Path, create: bool, exclusive: bool) -> io::Result<u64> {
        self.alive()?;
        let (parent, name) = split(path)?;
        let dir = self.dir_id(&parent).ok_or_else(|| not_found(path))?;
        match self.dirs[&dir].volatile.get(&name) {
            Some(Entry::Dir(_)) => return Err(is_a_dir(path)),
            Some(&Entry::File(ino)) => {
                if exclusive {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("simulated disk: {}: file exists", path.display()),
                    ));
                }
                return Ok(ino);
            }
            None => {}
        }
        if !create {
            return Err(not_found(path));
        }
        self.mutation(false)?;
        if self.disk_full {
            return Err(enospc());
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Inode::default());
        self.change_entries(dir, vec![(name, Some(Entry::File(ino)))]);
        Ok(ino)
    }

    /// Creates `dir` and its missing ancestors, outermost first, one
    /// directory at a time; returns whether `dir` was created.
    fn make_dirs(&mut self, dir: &Path, how: Mkdir) -> io::Result<bool> {
        let dir = norm(dir);
        let mut chain: Vec<&Path> = dir.ancestors().collect();
        chain.reverse();
        let mut created = false;
        for at in chain {
            let Some(name) = at.file_name() else {
                continue; // a root
            };
            let parent = at.parent().unwrap_or(Path::new(""));
            let pid = self.dir_id(parent).ok_or_else(|| not_found(at))?;
            match self.dirs[&pid].volatile.get(name) {
                Some(Entry::File(_)) => return Err(not_a_dir(at)),
                Some(&Entry::Dir(id)) => {
                    created = false;
                    if how == Mkdir::Durable {
                        let d = self.dirs.get_mut(&pid).expect("directory exists");
                        d.durable.insert(name.to_owned(), Entry::Dir(id));
                    }
                    continue;
                }
                None => {}
            }
            if how == Mkdir::Pending {
                self.mutation(false)?;
                if self.disk_full {
                    return Err(enospc());
                }
            }
            let id = self.next_dir;
            self.next_dir += 1;
            self.dirs.insert(id, Dir::default());
            let entry = (name.to_owned(), Some(Entry::Dir(id)));
            match how {
                Mkdir::Pending => self.change_entries(pid, vec![entry]),
                Mkdir::Durable => {
                    let d = self.dirs.get_mut(&pid).expect("directory exists");
                    d.volatile.insert(name.to_owned(), Entry::Dir(id));
                    d.durable.insert(name.to_owned(), Entry::Dir(id));
                }
            }
            created = true;
        }
        Ok(created)
    }

    /// The directories and inodes reachable from the roots through the
    /// durable entries, or, if `all`, through every entry a later power loss
    /// could still make durable (volatile entries and pending changes too).
    fn reachable(&self, all: bool) -> (BTreeSet<u64>, BTreeSet<u64>) {
        let mut dirs = BTreeSet::new();
        let mut inodes = BTreeSet::new();
        let mut todo = vec![ROOT_REL, ROOT_ABS];
        while let Some(id) = todo.pop() {
            if !dirs.insert(id) {
                continue;
            }
            let Some(d) = self.dirs.get(&id) else {
                continue;
            };
            let mut entries: Vec<Entry> = d.durable.values().copied().collect();
            if all {
                entries.extend(d.volatile.values().copied());
                entries.extend(d.pending.iter().flatten().filter_map(|(_, e)| *e));
            }
            for entry in entries {
                match entry {
                    Entry::Dir(sub) => todo.push(sub),
                    Entry::File(ino) => {
                        inodes.insert(ino);
                    }
                }
            }
        }
        (dirs, inodes)
    }

    /// The crash itself: `mode` is `None` for a process crash.
    fn crash(&mut self, mode: Option<LossMode>) {
        if let Some(mode) = mode {
            // Every directory, also a removed one whose removal may be lost.
            for dir in self.dirs.values_mut() {
                let n = dir.pending.len() as u64;
                let keep = match mode {
                    LossMode::Random => self.rng.below(n + 1),
                    LossMode::KeepAll => n,
                    LossMode::DropAll => 0,
                };
                for changes in &dir.pending[..to_usize(keep)] {
                    for (name, entry) in changes {
                        match entry {
                            Some(entry) => dir.durable.insert(name.clone(), *entry),
                            None => dir.durable.remove(name),
                        };
                    }
                }
                dir.pending.clear();
                dir.volatile = dir.durable.clone();
            }
            // A directory whose entry did not survive is lost with all it
            // holds; a file survives if any durable name reaches it.
            let (dirs, inodes) = self.reachable(false);
            self.dirs.retain(|id, _| dirs.contains(id));
            self.inodes.retain(|ino, _| inodes.contains(ino));
            for inode in self.inodes.values_mut() {
                let content = after_power_loss(inode, mode, &mut self.rng);
                inode.durable = content.clone();
                inode.volatile = content;
                inode.pending.clear();
            }
        } else {
            // Keep every directory and inode a later power loss could still
            // make reachable.
            let (dirs, inodes) = self.reachable(true);
            self.dirs.retain(|id, _| dirs.contains(id));
            self.inodes.retain(|ino, _| inodes.contains(ino));
        }
        let inodes = &self.inodes;
        self.flips.retain(|f| inodes.contains_key(&f.ino));
        self.locks.clear();
        self.epoch += 1;
        self.crashes += 1;
        self.dead = false;
        self.crash_after_ops = None;
        self.crash_after_syncs = None;
        self.fail_sync_at = None;
    }
}

/// How [`Inner::make_dirs`] makes a missing directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mkdir {
    /// As `mkdir(2)`: each directory made is a counted mutating operation,
    /// fails with `ENOSPC` on a full disk, and its entry is a pending change
    /// of its parent.
    Pending,
    /// Setup: entries are durable at once (also those of existing
    /// directories on the way); nothing is counted or refused.
    Durable,
}

impl SimDisk {
    /// A new, empty disk whose randomness all derives from `seed`. The root
    /// directories `""` and `"/"` exist.
    pub fn new(seed: u64) -> SimDisk {
        let mut dirs = BTreeMap::new();
        dirs.insert(ROOT_REL, Dir::default());
        dirs.insert(ROOT_ABS, Dir::default());
        let inner = Inner {
            seed,
            rng: SplitMix64(seed),
            list_rng: SplitMix64(seed ^ 0xA076_1D64_78BD_642F),
            salt_rng: SplitMix64(seed ^ 0xE703_7ED1_A0B4_28DB),
            dirs,
            next_dir: 2,
            inodes: BTreeMap::new(),
            next_ino: 1,
            epoch: 0,
            locks: BTreeMap::new(),
            next_token: 1,
            dead: false,
            crash_after_ops: None,
            crash_after_syncs: None,
            fail_sync_at: None,
            disk_full: false,
            flips: Vec::new(),
            ops: 0,
            syncs: 0,
            crashes: 0,
        };
        SimDisk {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The seed this disk was made with.
    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// Simulates a power cut with random loss ([`LossMode::Random`]): see the
    /// module docs. Revives a dead disk, kills every open handle, releases
    /// every lock and clears the pending crash point and sync failure.
    pub fn power_loss(&self) {
        self.power_loss_with(LossMode::Random);
    }

    /// Simulates a power cut keeping as much pending state as `mode` says.
    pub fn power_loss_with(&self, mode: LossMode) {
        self.lock().crash(Some(mode));
    }

    /// Simulates a process crash (SIGKILL): the page cache survives, so reads
    /// see every completed write, but nothing new becomes durable (a later
    /// power loss may still lose it). Revives a dead disk, kills every open
    /// handle, releases every lock and clears the pending crash point and sync
    /// failure.
    pub fn process_crash(&self) {
        self.lock().crash(None);
    }

    /// Kills the disk now: every operation fails until a crash revives it.
    pub fn kill(&self) {
        self.lock().die();
    }

    /// Whether the disk is dead (a crash point was reached or [`kill`] was
    /// called) and waits for `power_loss*` or `process_crash`.
    ///
    /// [`kill`]: SimDisk::kill
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Lets `n` more mutating operations happen; the next one kills the disk
    /// (it fails, has no effect, and so does everything after it). `n = 0`
    /// kills it at the next mutating operation. Replaces an earlier setting.
    pub fn crash_after_ops(&self, n: u64) {
        self.lock().crash_after_ops = Some(n);
    }

    /// Lets `n` more syncs (`sync_data`, `sync_all`, `sync_dir`) happen; the
    /// next sync kills the disk before it takes effect. Enumerating `n` over
    /// `0..sync_count()` of a full run crashes at every sync.
    pub fn crash_after_syncs(&self, n: u64) {
        self.lock().crash_after_syncs = Some(n);
    }

    /// Mutating operations counted so far (see the module docs for which).
    pub fn ops_count(&self) -> u64 {
        self.lock().ops
    }

    /// Syncs (`sync_data`, `sync_all`, `sync_dir`) counted so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Crashes (power losses and process crashes) so far.
    pub fn crash_count(&self) -> u64 {
        self.lock().crashes
    }

    /// Makes the `n`-th sync from now (counting from 1) fail with `EIO`. A
    /// failed file sync drops the file's pending writes from what can ever
    /// become durable: they stay readable until the next crash, and no later
    /// sync persists them. A failed `sync_dir` leaves the durable entries as
    /// they were. Replaces an earlier setting; cleared by crashes.
    pub fn fail_sync_at(&self, n: u64) {
        assert!(n >= 1, "fail_sync_at counts from 1");
        self.lock().fail_sync_at = Some(n);
    }

    /// While `full`, writes extending a file, `set_len` growing a file,
    /// creating files and creating directories fail with `ENOSPC`; writes
    /// inside a file's length still succeed. Survives crashes.
    pub fn set_disk_full(&self, full: bool) {
        self.lock().disk_full = full;
    }

    /// From now on, every `read_at` covering byte `byte_pos` of the file at
    /// `path` returns it with bit `bit` (0..8) flipped; the stored bytes are
    /// unchanged. Follows the inode (survives renames and crashes that keep
    /// it). Fails if `path` does not name a file.
    pub fn flip_bit_on_read(
        &self,
        path: impl AsRef<Path>,
        byte_pos: u64,
        bit: u8,
    ) -> io::Result<()> {
        assert!(bit < 8, "bit must be in 0..8");
        let path = path.as_ref();
        let mut g = self.lock();
        let ino = g.lookup(path, false).ok_or_else(|| not_found(path))?;
        g.flips.push(BitFlip {
            ino,
            pos: byte_pos,
            bit,
        });
        Ok(())
    }

    /// XORs byte `byte_pos` of the file at `path` with `xor_mask` on the
    /// medium (the durable bytes) and in the page cache (the volatile bytes),
    /// wherever the file is that long: bit rot that every later read and
    /// crash sees. Fails if `path` does not name a file (volatile entries
    /// first, then durable ones) or the byte is beyond both lengths.
    pub fn corrupt_durable(
        &self,
        path: impl AsRef<Path>,
        byte_pos: u64,
        xor_mask: u8,
    ) -> io::Result<()> {
        let path = path.as_ref();
        let mut g = self.lock();
        let ino = g
            .lookup(path, false)
            .or_else(|| g.lookup(path, true))
            .ok_or_else(|| not_found(path))?;
        let inode = g.inodes.get_mut(&ino).expect("inode exists");
        let pos = to_usize(byte_pos);
        let mut hit = false;
        for layer in [&mut inode.durable, &mut inode.volatile] {
            if let Some(b) = layer.get_mut(pos) {
                *b ^= xor_mask;
                hit = true;
            }
        }
        if hit {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "simulated disk: {}: byte {byte_pos} is past the end",
                    path.display()
                ),
            ))
        }
    }

    /// Removes every injected fault: the crash points, the pending sync
    /// failure, disk full and bit flips. Does not revive a dead disk.
    pub fn clear_faults(&self) {
        let mut g = self.lock();
        g.crash_after_ops = None;
        g.crash_after_syncs = None;
        g.fail_sync_at = None;
        g.disk_full = false;
        g.flips.clear();
    }

    /// The volatile bytes (what reads see) of the file at `path`, if the
    /// volatile entries name one. Works on a dead disk; counts nothing.
    pub fn file_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let g = self.lock();
        let ino = g.lookup(path.as_ref(), false)?;
        Some(g.inodes[&ino].volatile.clone())
    }

    /// The durable bytes (what the medium holds) of the file the durable
    /// entries name at `path`. Works on a dead disk; counts nothing.
    pub fn durable_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let g = self.lock();
        let ino = g.lookup(path.as_ref(), true)?;
        Some(g.inodes[&ino].durable.clone())
    }

    /// The names in directory `path` (files and subdirectories) in the
    /// volatile entries, sorted; empty if there is no such directory. Works
    /// on a dead disk; counts nothing.
    pub fn list(&self, path: impl AsRef<Path>) -> Vec<String> {
        self.list_layer(path.as_ref(), false)
    }

    /// Like [`SimDisk::list`] but for the durable entries: the names that
    /// [`LossMode::DropAll`] would leave in the directory the durable
    /// entries name at `path` (empty if the directory itself would be lost).
    pub fn list_durable(&self, path: impl AsRef<Path>) -> Vec<String> {
        self.list_layer(path.as_ref(), true)
    }

    fn list_layer(&self, path: &Path, durable: bool) -> Vec<String> {
        let g = self.lock();
        let Some(Entry::Dir(id)) = g.resolve(path, durable) else {
            return Vec::new();
        };
        let d = &g.dirs[&id];
        let map = if durable { &d.durable } else { &d.volatile };
        // BTreeMap keys: already sorted.
        map.keys()
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }

    /// Puts a file with `bytes` at `path`, durably (content and entry), making
    /// missing parent directories as [`SimDisk::mkdir_durable`] does: a way to
    /// lay out a crafted directory. Replaces an existing file. Works on a dead
    /// disk; counts nothing.
    pub fn put_file(&self, path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
        let path = path.as_ref();
        let (parent, name) = split(path)?;
        let mut g = self.lock();
        if let Some(Entry::Dir(_)) = g.resolve(path, false) {
            return Err(is_a_dir(path));
        }
        g.make_dirs(&parent, Mkdir::Durable)?;
        let dir = g.dir_id(&parent).expect("directory exists");
        let ino = g.next_ino;
        g.next_ino += 1;
        g.inodes.insert(
            ino,
            Inode {
                durable: bytes.to_vec(),
                volatile: bytes.to_vec(),
                pending: Vec::new(),
            },
        );
        let d = g.dirs.get_mut(&dir).expect("directory exists");
        d.volatile.insert(name.clone(), Entry::File(ino));
        d.durable.insert(name, Entry::File(ino));
        Ok(())
    }

    /// Makes the directory `path` and its missing ancestors with durable
    /// entries, as if each parent had been synced right after (nothing else
    /// becomes durable); an existing directory on the way whose entry is still
    /// pending gets a durable entry too. A setup helper for a test that makes
    /// a directory itself before handing it to the engine: a directory made
    /// by [`Storage::create_dir_all`] is lost on power loss until its parent
    /// is synced. Meant for setting up, not in the middle of pending changes
    /// to the same names. Works on a dead disk; counts nothing; fails with
    /// [`io::ErrorKind::NotADirectory`] if a file is in the way.
    pub fn mkdir_durable(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.lock().make_dirs(path.as_ref(), Mkdir::Durable)?;
        Ok(())
    }
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.lock();
        f.debug_struct("SimDisk")
            .field("seed", &g.seed)
            .field("ops", &g.ops)
            .field("syncs", &g.syncs)
            .field("dead", &g.dead)
            .field("files", &g.inodes.len())
            .finish()
    }
}

impl Storage for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<bool> {
        let mut g = self.lock();
        g.alive()?;
        g.make_dirs(dir, Mkdir::Pending)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut g = self.lock();
        g.alive()?;
        let id = match g.resolve(dir, false) {
            Some(Entry::Dir(id)) => id,
            Some(Entry::File(_)) => return Err(not_a_dir(dir)),
            None => return Err(not_found(dir)),
        };
        let mut names: Vec<String> = g.dirs[&id]
            .volatile
            .keys()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        // readdir order is unspecified; callers must not rely on it.
        g.list_rng.shuffle(&mut names);
        Ok(names)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut g = self.lock();
        let (create, exclusive) = match mode {
            OpenMode::Read | OpenMode::ReadWrite => (false, false),
            OpenMode::CreateNew => (true, true),
            OpenMode::CreateOrOpen => (true, false),
        };
        let ino = g.open_or_create(path, create, exclusive)?;
        Ok(Box::new(SimFile {
            inner: Arc::clone(&self.inner),
            ino,
            epoch: g.epoch,
            writable: mode != OpenMode::Read,
            path: norm(path),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut g = self.lock();
        g.alive()?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        g.mutation(false)?;
        let source = g.resolve(from, false);
        let target = g.resolve(to, false);
        if let Some(Entry::Dir(_)) = source {
            // Renaming directories is not modeled.
            return Err(is_a_dir(from));
        }
        if let Some(Entry::Dir(_)) = target {
            return Err(is_a_dir(to));
        }
        let Some(Entry::File(ino)) = source else {
            return Err(not_found(from));
        };
        let src = g.dir_id(&from_dir).expect("the source's directory exists");
        let dst = g.dir_id(&to_dir).ok_or_else(|| not_found(to))?;
        if target == source {
            // Two names of one file (a power loss kept both names of a
            // rename across directories): POSIX rename does nothing.
            return Ok(());
        }
        if src == dst {
            g.change_entries(
                src,
                vec![(to_name, Some(Entry::File(ino))), (from_name, None)],
            );
        } else {
            // Two directories, two independent pending changes: power loss
            // may keep either, both or neither.
            g.change_entries(dst, vec![(to_name, Some(Entry::File(ino)))]);
            g.change_entries(src, vec![(from_name, None)]);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut g = self.lock();
        g.alive()?;
        let (dir, name) = split(path)?;
        g.mutation(false)?;
        match g.resolve(path, false) {
            Some(Entry::File(_)) => {}
            Some(Entry::Dir(_)) => return Err(is_a_dir(path)),
            None => return Err(not_found(path)),
        }
        let id = g.dir_id(&dir).expect("the file's directory exists");
        g.change_entries(id, vec![(name, None)]);
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut g = self.lock();
        g.alive()?;
        let (parent, name) = split(dir)?;
        g.mutation(false)?;
        let id = match g.resolve(dir, false) {
            Some(Entry::Dir(id)) => id,
            Some(Entry::File(_)) => return Err(not_a_dir(dir)),
            None => return Err(not_found(dir)),
        };
        if !g.dirs[&id].volatile.is_empty() {
            return Err(not_empty(dir));
        }
        // The directory keeps its durable entries and pending changes: a
        // power loss that drops this removal brings it back as they say.
        let pid = g.dir_id(&parent).expect("the directory's parent exists");
        g.change_entries(pid, vec![(name, None)]);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut g = self.lock();
        let fail = g.mutation(true)?;
        let id = g.dir_id(dir).ok_or_else(|| not_found(dir))?;
        if fail {
            return Err(eio());
        }
        let d = g.dirs.get_mut(&id).expect("directory exists");
        d.durable = d.volatile.clone();
        d.pending.clear();
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<LockGuard> {
        let mut g = self.lock();
        let ino = g.open_or_create(path, true, false)?;
        if g.locks.contains_key(&ino) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "simulated disk: lock is held by another handle",
            ));
        }
        let token = g.next_token;
        g.next_token += 1;
        g.locks.insert(ino, token);
        Ok(Box::new(SimLock {
            inner: Arc::clone(&self.inner),
            ino,
            token,
            path: norm(path),
        }))
    }

    fn is_dir(&self, path: &Path) -> bool {
        let g = self.lock();
        !g.dead && matches!(g.resolve(path, false), Some(Entry::Dir(_)))
    }

    /// Seeded salts, so that a scenario replays exactly from its seed.
    fn new_salt(&self) -> u64 {
        self.lock().salt_rng.next_u64() | 1
    }
}

/// A lock held on a [`SimDisk`] file; released on drop (unless a crash
/// released it already).
struct SimLock {
    inner: Arc<Mutex<Inner>>,
    ino: u64,
    token: u64,
    path: PathBuf,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimLock({})", self.path.display())
    }
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut g = lock(&self.inner);
        if g.locks.get(&self.ino) == Some(&self.token) {
            g.locks.remove(&self.ino);
        }
    }
}

/// An open file on a [`SimDisk`].
struct SimFile {
    inner: Arc<Mutex<Inner>>,
    ino: u64,
    epoch: u64,
    writable: bool,
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile({})", self.path.display())
    }
}

impl SimFile {
    /// Locks the disk, checking that it is alive and this handle is current.
    fn enter(&self) -> io::Result<MutexGuard<'_, Inner>> {
        let g = lock(&self.inner);
        g.alive()?;
        if g.epoch != self.epoch {
            return Err(stale_err());
        }
        Ok(g)
    }

    fn enter_writable(&self) -> io::Result<MutexGuard<'_, Inner>> {
        let g = self.enter()?;
        if !self.writable {
            return Err(ebadf());
        }
        Ok(g)
    }

    fn sync(&self) -> io::Result<()> {
        let mut g = self.enter()?;
        let fail = g.mutation(true)?;
        let inode = g.inodes.get_mut(&self.ino).expect("inode exists");
        if fail {
            // Linux marks the failed pages clean: the data stays in the cache
            // but will never reach the medium.
            inode.pending.clear();
            return Err(eio());
        }
        for op in std::mem::take(&mut inode.pending) {
            apply(&mut inode.durable, &op);
        }
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let g = self.enter()?;
        if buf.is_empty() {
            return Ok(()); // like `read_exact_at`, even past the end
        }
        let content = &g.inodes[&self.ino].volatile;
        let end = pos.checked_add(buf.len() as u64);
        match end {
            Some(end) if end <= content.len() as u64 => {
                buf.copy_from_slice(&content[to_usize(pos)..to_usize(end)]);
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "failed to fill whole buffer",
                ));
            }
        }
        for flip in g.flips.iter().filter(|f| f.ino == self.ino) {
            if flip.pos >= pos && flip.pos - pos < buf.len() as u64 {
                buf[to_usize(flip.pos - pos)] ^= 1 << flip.bit;
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut g = self.enter_writable()?;
        g.mutation(false)?;
        let end = pos.checked_add(buf.len() as u64).ok_or_else(efbig)?;
        if end > MAX_FILE_LEN {
            return Err(efbig());
        }
        if buf.is_empty() {
            return Ok(()); // a zero-length write changes nothing
        }
        let full = g.disk_full;
        let inode = g.inodes.get_mut(&self.ino).expect("inode exists");
        if full && end > inode.volatile.len() as u64 {
            return Err(enospc());
        }
        let op = Pending::Write {
            pos,
            data: buf.to_vec(),
        };
        apply(&mut inode.volatile, &op);
        inode.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut g = self.enter_writable()?;
        g.mutation(false)?;
        if len > MAX_FILE_LEN {
            return Err(efbig());
        }
        let full = g.disk_full;
        let inode = g.inodes.get_mut(&self.ino).expect("inode exists");
        if full && len > inode.volatile.len() as u64 {
            return Err(enospc());
        }
        let op = Pending::SetLen(len);
        apply(&mut inode.volatile, &op);
        inode.pending.push(op);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let g = self.enter()?;
        Ok(g.inodes[&self.ino].volatile.len() as u64)
    }

    fn map(&self) -> io::Result<Option<Mapping>> {
        drop(self.enter()?);
        Ok(None)
    }
}
