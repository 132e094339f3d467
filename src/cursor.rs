//! One client's durable position: two snapshot slots and an ack journal.
//!
//! A client's acknowledged position (the end of its contiguous acknowledged
//! prefix: every offset below it is acknowledged) is kept in
//! `clients/NAME.cursor.0` and `clients/NAME.cursor.1`, two generations of a
//! 64-byte snapshot, each replaced by write-temp, fsync, rename, fsync-dir.
//! Generation `g` lives in slot `g % 2`, so the previous generation is always
//! there to fall back to if the newest is damaged.
//!
//! Between snapshots, acknowledgements go to `clients/NAME.journal`, a
//! preallocated, zero-filled file of fixed size, as 32-byte entries written
//! with one `pwrite` and one `fdatasync` each — the cost of one data append,
//! instead of two syncs, a rename and a directory sync. An entry counts only
//! if it carries the generation of the newest valid snapshot; when the journal
//! is full, its position is folded into a new snapshot (generation + 1) and the
//! journal is reused from its start. The layouts are in `docs/format.md`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::names;
use crate::storage::{OpenMode, Storage, StorageFile};

/// Size of a snapshot file.
pub const SNAPSHOT_LEN: usize = 64;
/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"\x89DQCUR\r\n";
/// Snapshot format version.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Size of one journal entry; entries never straddle a 512-byte sector.
pub const JOURNAL_ENTRY_LEN: usize = 32;
/// Magic of a journal entry.
pub const JOURNAL_MAGIC: u32 = 0xAC4E_D0C1;
/// Size of a journal file: 2,048 entries.
pub const JOURNAL_LEN: u64 = 64 * 1024;

/// A decoded snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Generation: one more than the snapshot it replaced.
    pub generation: u64,
    /// Every offset below this one is acknowledged.
    pub acked: u64,
}

impl Snapshot {
    /// Encodes the snapshot into its 64 bytes.
    pub fn encode(&self) -> [u8; SNAPSHOT_LEN] {
        let mut b = [0u8; SNAPSHOT_LEN];
        b[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        b[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        b[24..32].copy_from_slice(&self.acked.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a snapshot; the error says what is wrong.
    pub fn decode(b: &[u8]) -> std::result::Result<Snapshot, String> {
        if b.len() != SNAPSHOT_LEN {
            return Err(format!(
                "cursor file is {} bytes, expected {SNAPSHOT_LEN}",
                b.len()
            ));
        }
        if b[0..8] != SNAPSHOT_MAGIC {
            return Err("bad cursor magic".into());
        }
        let version = u32::from_le_bytes(b[8..12].try_into().map_err(|_| "short")?);
        if version != SNAPSHOT_VERSION {
            return Err(format!(
                "cursor format version {version} is not supported (expected {SNAPSHOT_VERSION})"
            ));
        }
        let crc = u32::from_le_bytes(b[60..64].try_into().map_err(|_| "short")?);
        if crc32fast::hash(&b[0..60]) != crc {
            return Err("cursor checksum mismatch".into());
        }
        if b[12..16].iter().chain(&b[32..60]).any(|&x| x != 0) {
            return Err("reserved cursor bytes are not zero".into());
        }
        let snap = Snapshot {
            generation: u64::from_le_bytes(b[16..24].try_into().map_err(|_| "short")?),
            acked: u64::from_le_bytes(b[24..32].try_into().map_err(|_| "short")?),
        };
        if snap.generation >= crate::record::MAX_COUNTER
            || snap.acked >= crate::record::MAX_POSITION
        {
            return Err("cursor generation or position out of range".into());
        }
        Ok(snap)
    }
}

/// Encodes a journal entry.
pub fn encode_entry(generation: u64, acked: u64) -> [u8; JOURNAL_ENTRY_LEN] {
    let mut b = [0u8; JOURNAL_ENTRY_LEN];
    b[0..4].copy_from_slice(&JOURNAL_MAGIC.to_le_bytes());
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    b[16..24].copy_from_slice(&acked.to_le_bytes());
    let crc = entry_crc(&b);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

fn entry_crc(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[0..4]);
    h.update(&b[8..32]);
    h.finalize()
}

/// Decodes a journal entry: `(generation, acked)`, or `None` if it is not a
/// valid entry (zeros, torn, damaged).
pub fn decode_entry(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != JOURNAL_ENTRY_LEN || b[0..4] != JOURNAL_MAGIC.to_le_bytes() {
        return None;
    }
    if u32::from_le_bytes(b[4..8].try_into().ok()?) != entry_crc(b)
        || b[24..32].iter().any(|&x| x != 0)
    {
        return None;
    }
    let generation = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let acked = u64::from_le_bytes(b[16..24].try_into().ok()?);
    (generation < crate::record::MAX_COUNTER && acked < crate::record::MAX_POSITION)
        .then_some((generation, acked))
}

/// The files of client `name` in the clients directory.
#[derive(Debug, Clone)]
pub(crate) struct ClientFiles {
    pub dir: PathBuf,
    pub name: String,
}

impl ClientFiles {
    pub(crate) fn new(clients_dir: &Path, name: &str) -> ClientFiles {
        ClientFiles {
            dir: clients_dir.to_owned(),
            name: name.to_owned(),
        }
    }

    pub(crate) fn slot(&self, generation: u64) -> PathBuf {
        self.dir
            .join(format!("{}{}{}", self.name, CURSOR_SUFFIX, generation % 2))
    }

    pub(crate) fn journal(&self) -> PathBuf {
        self.dir.join(format!("{}{JOURNAL_SUFFIX}", self.name))
    }

    /// The generation after `generation`, if the format allows it: a
    /// snapshot of generation [`crate::record::MAX_COUNTER`] or more is
    /// unreadable, so writing one would make the client unusable. Only a
    /// crafted or damaged cursor file can come this close.
    pub(crate) fn next_generation(&self, generation: u64) -> Result<u64> {
        let next = generation.saturating_add(1);
        if next >= crate::record::MAX_COUNTER {
            return Err(Error::corrupt(
                self.slot(generation),
                0,
                format!(
                    "cursor of client {:?} is at generation {generation}, the last one the \
                     format allows: its position cannot be moved or its journal folded; \
                     remove and recreate the client",
                    self.name
                ),
            ));
        }
        Ok(next)
    }
}

/// `NAME.cursor.0` / `NAME.cursor.1`.
pub const CURSOR_SUFFIX: &str = ".cursor.";
/// `NAME.journal`.
pub const JOURNAL_SUFFIX: &str = ".journal";

/// The client name a file in the clients directory belongs to, if any.
pub(crate) fn client_of_file(file: &str) -> Option<&str> {
    if let Some(stem) = file.strip_suffix(JOURNAL_SUFFIX) {
        return Some(stem);
    }
    for slot in ["0", "1"] {
        if let Some(rest) = file.strip_suffix(slot)
            && let Some(stem) = rest.strip_suffix(CURSOR_SUFFIX)
        {
            return Some(stem);
        }
    }
    None
}

/// A failed snapshot replacement.
#[derive(Debug)]
pub(crate) struct SnapshotError {
    pub error: Error,
    /// Whether the rename had happened: the new snapshot may then be on disk
    /// (or become so), so the client's durable state is uncertain.
    pub renamed: bool,
}

impl From<SnapshotError> for Error {
    fn from(e: SnapshotError) -> Error {
        e.error
    }
}

/// Writes snapshot `snap` durably: temp file, fsync, rename over its slot,
/// fsync the directory.
pub(crate) fn write_snapshot(
    storage: &dyn Storage,
    files: &ClientFiles,
    snap: Snapshot,
) -> std::result::Result<(), SnapshotError> {
    let slot = files.slot(snap.generation);
    let tmp = PathBuf::from(format!("{}{}", slot.display(), names::TEMP_SUFFIX));
    let attempt = || -> std::io::Result<()> {
        let _ = storage.remove_file(&tmp);
        let f = storage.open_file(&tmp, OpenMode::CreateNew)?;
        f.write_at(&snap.encode(), 0)?;
        f.sync_all()?;
        drop(f);
        storage.rename(&tmp, &slot)
    };
    if let Err(e) = attempt() {
        let _ = storage.remove_file(&tmp);
        return Err(SnapshotError {
            error: Error::io("write cursor", &slot, e),
            renamed: false,
        });
    }
    storage.sync_dir(&files.dir).map_err(|e| SnapshotError {
        error: Error::io("sync directory", &files.dir, e),
        renamed: true,
    })
}

/// Creates the client's journal: a temp file zero-filled to its full size,
/// synced, renamed into place; the caller syncs the directory.
pub(crate) fn create_journal(
    storage: &dyn Storage,
    files: &ClientFiles,
) -> Result<Box<dyn StorageFile>> {
    let path = files.journal();
    let tmp = PathBuf::from(format!("{}{}", path.display(), names::TEMP_SUFFIX));
    let attempt = || -> std::io::Result<Box<dyn StorageFile>> {
        let _ = storage.remove_file(&tmp);
        let f = storage.open_file(&tmp, OpenMode::CreateNew)?;
        f.write_at(&vec![0u8; JOURNAL_LEN as usize], 0)?;
        f.sync_all()?;
        storage.rename(&tmp, &path)?;
        Ok(f)
    };
    attempt().map_err(|e| {
        let _ = storage.remove_file(&tmp);
        Error::io("create ack journal", &path, e)
    })
}

/// What loading a client's files found.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The newest valid snapshot.
    pub snapshot: Snapshot,
    /// The acknowledged position: the snapshot and its generation's journal
    /// entries combined.
    pub acked: u64,
    /// Where the next journal entry goes.
    pub journal_pos: u64,
    /// The journal, open for writing (None in read-only loads or if absent).
    pub journal: Option<Box<dyn StorageFile>>,
    /// The highest generation of any valid journal entry.
    pub newest_entry_generation: u64,
    /// Problems found (a damaged slot fallen back from, stale journal
    /// entries).
    pub problems: Vec<String>,
    /// What is wrong with the journal if it must be recreated (missing, or
    /// of the wrong size): whoever recreates it says so.
    pub journal_problem: Option<String>,
}

/// Loads a client's position from its snapshot slots and journal. Fails if
/// neither slot holds a valid snapshot (the position is then unknown: it is
/// never guessed).
pub(crate) fn load(storage: &dyn Storage, files: &ClientFiles, writable: bool) -> Result<Loaded> {
    let mut problems = Vec::new();
    let mut best: Option<Snapshot> = None;
    let mut bad_slots = Vec::new();
    for slot in 0..2u64 {
        let path = files.slot(slot);
        let bytes = match crate::recovery::read_whole(storage, &path) {
            Ok(b) => b,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        };
        match Snapshot::decode(&bytes) {
            Ok(s) if s.generation % 2 == slot => {
                if best.is_none_or(|b| s.generation > b.generation) {
                    best = Some(s);
                }
            }
            Ok(s) => bad_slots.push((
                path,
                format!("holds generation {} in the wrong slot", s.generation),
            )),
            Err(why) => bad_slots.push((path, why)),
        }
    }
    let Some(snapshot) = best else {
        let (path, why) = bad_slots
            .into_iter()
            .next()
            .unwrap_or_else(|| (files.slot(0), "no cursor file".into()));
        return Err(Error::corrupt(
            path,
            0,
            format!(
                "cursor of client {:?} is unreadable and no previous generation is valid: {why}",
                files.name
            ),
        ));
    };
    for (path, why) in bad_slots {
        // A damaged slot older than the valid one is harmless; a damaged one
        // that may have been newer means the position went back a generation.
        problems.push(format!(
            "{}: {why}; using generation {} from the other slot",
            path.display(),
            snapshot.generation
        ));
    }
    let jpath = files.journal();
    let mode = if writable {
        OpenMode::ReadWrite
    } else {
        OpenMode::Read
    };
    let mut journal_problem = None;
    let (journal, jbytes) = match storage.open_file(&jpath, mode) {
        Ok(f) => {
            let len = f.len().map_err(|e| Error::io("stat", &jpath, e))?;
            let mut buf = vec![0u8; len as usize];
            f.read_at(&mut buf, 0)
                .map_err(|e| Error::io("read", &jpath, e))?;
            (Some(f), buf)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            journal_problem = Some(format!("{}: ack journal missing", jpath.display()));
            (None, Vec::new())
        }
        Err(e) => return Err(Error::io("open", &jpath, e)),
    };
    let mut acked = snapshot.acked;
    let mut journal_pos = 0u64;
    if jbytes.len() as u64 != JOURNAL_LEN && journal.is_some() {
        journal_problem = Some(format!(
            "{}: ack journal is {} bytes, expected {JOURNAL_LEN}",
            jpath.display(),
            jbytes.len()
        ));
    }
    let mut newest_entry_generation = 0u64;
    for (i, entry) in jbytes.chunks_exact(JOURNAL_ENTRY_LEN).enumerate() {
        let Some((generation, pos)) = decode_entry(entry) else {
            continue;
        };
        newest_entry_generation = newest_entry_generation.max(generation);
        if generation == snapshot.generation {
            acked = acked.max(pos);
            journal_pos = (i as u64 + 1) * JOURNAL_ENTRY_LEN as u64;
        }
    }
    if newest_entry_generation > snapshot.generation {
        problems.push(format!(
            "{}: holds entries of generation {newest_entry_generation}, newer than the newest valid \
             snapshot (generation {}); they are ignored",
            jpath.display(),
            snapshot.generation
        ));
    }
    let journal = if jbytes.len() as u64 == JOURNAL_LEN {
        journal
    } else {
        None
    };
    Ok(Loaded {
        snapshot,
        acked,
        journal_pos,
        journal,
        newest_entry_generation,
        problems,
        journal_problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let s = Snapshot {
            generation: 7,
            acked: 12345,
        };
        let b = s.encode();
        assert_eq!(Snapshot::decode(&b), Ok(s));
        for bit in 0..(SNAPSHOT_LEN * 8) {
            let mut d = b;
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(Snapshot::decode(&d).is_err(), "bit {bit}");
        }
        assert!(Snapshot::decode(&[0u8; 64]).is_err());
        assert!(Snapshot::decode(&b[..63]).is_err());
    }

    #[test]
    fn journal_entries_round_trip_and_zeros_are_not_entries() {
        let e = encode_entry(3, 99);
        assert_eq!(decode_entry(&e), Some((3, 99)));
        assert_eq!(decode_entry(&[0u8; 32]), None);
        let mut d = e;
        d[17] ^= 1;
        assert_eq!(decode_entry(&d), None);
    }

    #[test]
    fn file_names_map_back_to_clients() {
        assert_eq!(client_of_file("billing.cursor.0"), Some("billing"));
        assert_eq!(client_of_file("a.cursor.cursor.1"), Some("a.cursor"));
        assert_eq!(client_of_file("x.journal"), Some("x"));
        assert_eq!(client_of_file("x.cursor.2"), None);
        assert_eq!(client_of_file("x.cursor.0.tmp"), None);
    }
}
