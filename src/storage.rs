//! The seam between the engine and the file system.
//!
//! Every file-system effect durq has (create, open, positional read and write,
//! data and metadata syncs, set length, rename, remove, list a directory, sync
//! a directory, lock) goes through the [`Storage`] and [`StorageFile`] traits.
//! Release builds only ever use [`FsStorage`], the real file system. The test
//! suite plugs in a simulated disk behind the same traits to model power loss
//! exactly: unsynced writes lost or torn, renames lost unless the directory was
//! synced, `fsync` failing with `EIO`, `write` failing with `ENOSPC`.
//!
//! The traits are public so that such a test double can live outside the
//! crate; ordinary users never need them (see [`Options::storage`]).
//!
//! Contract an implementation must honour (the engine relies on it):
//!
//! * [`StorageFile::write_at`] either writes the whole buffer or returns an
//!   error; the written bytes may be lost on power loss until a later
//!   [`StorageFile::sync_data`] or [`StorageFile::sync_all`] of the same file
//!   returns `Ok`.
//! * A created, renamed or removed name is durable only once
//!   [`Storage::sync_dir`] of its directory returns `Ok`. This holds for
//!   directories too: a directory made by [`Storage::create_dir_all`] (and
//!   everything in it) may vanish on power loss until its parent is synced,
//!   and one removed by [`Storage::remove_dir`] may come back.
//! * [`Storage::rename`] may move a file between two directories of one
//!   log. Until both directories are synced, power loss may keep the old
//!   name, the new one, both or neither; the engine only moves files whose
//!   every such outcome it can recover from.
//! * A failed sync is final: the engine never retries it and reports success.
//!
//! [`Options::storage`]: crate::Options::storage

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A read-only view of a whole file's bytes, shared between readers.
///
/// The real file system hands out memory maps; the length is fixed when the
/// view is made.
pub type Mapping = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A held lock on a file; dropping it releases the lock.
pub type LockGuard = Box<dyn fmt::Debug + Send + Sync>;

/// How [`Storage::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading only.
    Read,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Create a new file for reading and writing; fail if it exists.
    CreateNew,
    /// Open for reading and writing, creating the file if it does not exist.
    CreateOrOpen,
}

/// The directory-level operations of a file system.
pub trait Storage: fmt::Debug + Send + Sync + 'static {
    /// Creates `dir` and its missing parents. Returns whether `dir` was
    /// created by this call (so the caller knows to sync its parent).
    fn create_dir_all(&self, dir: &Path) -> io::Result<bool>;

    /// Lists the names of the entries of `dir` (not recursive, no `.`/`..`).
    /// Names that are not valid UTF-8 are returned lossily converted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Opens or creates the file at `path`.
    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;

    /// Atomically replaces `to` with `from` (POSIX `rename`), possibly
    /// moving the file to another directory of the same file system.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes the empty directory `dir` (POSIX `rmdir`); fails if it holds
    /// anything.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Takes an exclusive advisory lock on the file at `path`, creating it if
    /// needed, without waiting. Fails with [`io::ErrorKind::WouldBlock`] when
    /// another holder (in this process or another) has it.
    fn try_lock(&self, path: &Path) -> io::Result<LockGuard>;

    /// Like [`Storage::try_lock`] for a lock file that already exists, which
    /// it never creates nor opens for writing: a process that may only read
    /// the directory (`durq stat`, `verify`, `dump` run by another user) can
    /// still tell whether a writer holds the lock. The default calls
    /// `try_lock`.
    fn try_lock_existing(&self, path: &Path) -> io::Result<LockGuard> {
        self.try_lock(path)
    }

    /// Whether `path` names an existing directory.
    fn is_dir(&self, path: &Path) -> bool;

    /// Whether `path` names an existing file or directory. The default
    /// looks for its name in its directory's listing.
    fn exists(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        self.list_dir(dir)
            .is_ok_and(|names| names.iter().any(|n| std::ffi::OsStr::new(n) == name))
    }

    /// A random, non-zero salt for a new segment. The default draws fresh
    /// randomness; a simulated disk can return seeded values so that a
    /// failing scenario replays exactly.
    fn new_salt(&self) -> u64 {
        crate::segment::random_salt()
    }
}

/// One open file.
pub trait StorageFile: fmt::Debug + Send + Sync {
    /// Reads exactly `buf.len()` bytes at byte position `pos`.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;

    /// Writes all of `buf` at byte position `pos`.
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;

    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;

    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;

    /// Sets the file's length, extending with zeros or truncating.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A live read-only view of the whole file, if the implementation offers
    /// one (the real file system memory-maps the file). Writes made through
    /// [`StorageFile::write_at`] afterwards must be visible through it. `None`
    /// makes the engine read through [`StorageFile::read_at`] instead.
    fn map(&self) -> io::Result<Option<Mapping>>;
}

/// The real file system: `std::fs` plus memory maps.
///
/// Locks use [`File::try_lock`] (an `flock(2)` lock on Linux), which is held
/// per open file description: a second `Log` on the same directory fails even
/// inside one process.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<bool> {
        if dir.is_dir() {
            return Ok(false);
        }
        fs::create_dir_all(dir)?;
        Ok(true)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            names.push(
                name.into_string()
                    .unwrap_or_else(|n| n.to_string_lossy().into_owned()),
            );
        }
        Ok(names)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut opts = OpenOptions::new();
        match mode {
            OpenMode::Read => opts.read(true),
            OpenMode::ReadWrite => opts.read(true).write(true),
            OpenMode::CreateNew => opts.read(true).write(true).create_new(true),
            OpenMode::CreateOrOpen => opts.read(true).write(true).create(true).truncate(false),
        };
        let file = opts.open(path)?;
        Ok(Box::new(FsFile { file }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<LockGuard> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        lock_file(file)
    }

    fn try_lock_existing(&self, path: &Path) -> io::Result<LockGuard> {
        // `flock` does not depend on the access mode: a read-only
        // descriptor takes the same exclusive lock.
        lock_file(File::open(path)?)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn exists(&self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok()
    }
}

/// Takes `file`'s exclusive `flock` lock without waiting; the guard keeps
/// the file open. A lock held elsewhere is [`io::ErrorKind::WouldBlock`].
fn lock_file(file: File) -> io::Result<LockGuard> {
    match file.try_lock() {
        Ok(()) => Ok(Box::new(file)),
        Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "lock is held by another handle",
        )),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

#[derive(Debug)]
struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.file.write_all_at(buf, pos)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn map(&self) -> io::Result<Option<Mapping>> {
        if self.len()? == 0 {
            // A zero-length mapping is not allowed; there is nothing to see.
            return Ok(None);
        }
        // SAFETY: durq never truncates a file it has mapped (repair zeroes
        // bytes in place), and the directory is locked against other durq
        // writers. A foreign process truncating the file would make reads
        // fault; that is documented in docs/durability.md as outside the
        // contract, as for every memory-mapping storage engine.
        let map = unsafe { memmap2::Mmap::map(&self.file)? };
        Ok(Some(Arc::new(map)))
    }
}
