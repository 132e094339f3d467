//! The one error type of the crate.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A specialized `Result` for durq operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in durq. Each variant says what happened and,
/// where there is one, the file and byte position.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error while doing `op` on `path`.
    #[error("I/O error while trying to {op} {path}: {source}")]
    Io {
        /// What durq was doing ("open", "sync", "rename", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another `Log` (in this process or another) holds the directory.
    #[error(
        "log directory {dir} is locked by another durq handle (in this or another process); \
         only one writer may open it at a time"
    )]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },

    /// Data that is not a torn tail failed its checks: a bad checksum in the
    /// middle of the log, a record out of sequence, a malformed header.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage within the file.
        position: u64,
        /// What check failed.
        reason: String,
    },

    /// A segment written by another format version of durq.
    #[error(
        "{path}: segment format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version found in its header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// A file named like a durq file whose contents are not a durq file.
    #[error("{path} is not a durq file: {reason}")]
    NotDurq {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },

    /// The segments on disk are not contiguous: one in the middle is missing.
    #[error(
        "segment missing in {dir}: after {after} (holding offsets {after_base}..) the next segment \
         should be number {expected_seq}, found {found} (number {found_seq})"
    )]
    MissingSegment {
        /// The log directory.
        dir: PathBuf,
        /// The segment before the gap.
        after: PathBuf,
        /// Base offset of the segment before the gap.
        after_base: u64,
        /// Sequence number the next segment should carry.
        expected_seq: u64,
        /// The segment found after the gap.
        found: PathBuf,
        /// Its sequence number.
        found_seq: u64,
    },

    /// A record too large for this log's segments.
    #[error("record of {len} bytes exceeds the maximum record size of {max} bytes for this log")]
    RecordTooLarge {
        /// Payload length of the rejected record.
        len: usize,
        /// The largest payload this log accepts.
        max: usize,
    },

    /// An earlier write or sync failed; the log refuses appends until it is
    /// reopened (the failed sync is never retried and reported as success).
    #[error("log is poisoned and refuses writes until reopened: {reason}")]
    Poisoned {
        /// The failure that poisoned the log.
        reason: Arc<str>,
    },

    /// An append failed cleanly (for example the disk was full when a new
    /// segment had to be created); nothing was made durable by it and the log
    /// stays usable.
    #[error("append failed, nothing was written: {reason}")]
    AppendFailed {
        /// Why.
        reason: Arc<str>,
    },

    /// An earlier retention step failed part-way (a segment file could not
    /// be removed, or a directory not synced): which deletions are durable
    /// is unknown, and deleting more could leave a gap in the log after a
    /// power loss. Retention deletes nothing more until the log is reopened
    /// (recovery settles the directory); appends and reads go on.
    #[error("retention is stopped until the log is reopened: {reason}")]
    RetentionStopped {
        /// The failure that stopped it.
        reason: Arc<str>,
    },

    /// An invalid option or argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A client name that is not a plain name.
    #[error(
        "invalid client name {name:?}: {reason} (names are 1 to {max} characters of \
         letters, digits, '.', '_' and '-', not starting with '.')",
        max = crate::names::MAX_CLIENT_NAME_LEN
    )]
    InvalidClientName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A client that does not exist.
    #[error("no client named {name:?} in this log")]
    NoSuchClient {
        /// The name asked for.
        name: String,
    },

    /// A message payload that the codec could not decode.
    #[error("message at offset {offset} could not be decoded: {reason}")]
    Decode {
        /// Offset of the message.
        offset: u64,
        /// The codec's explanation.
        reason: String,
    },

    /// A value that the codec could not encode.
    #[error("value could not be encoded: {0}")]
    Encode(String),

    /// A requested offset is no longer retained (removed by retention).
    #[error("offset {offset} is no longer retained (the oldest retained offset is {first})")]
    Truncated {
        /// The requested offset.
        offset: u64,
        /// The oldest offset still in the log.
        first: u64,
    },

    /// The record at this offset was lost to damage and set aside by an
    /// explicit salvage; only a placeholder remains. Consumers skip such
    /// offsets (the salvage reported them).
    #[error("record {offset} was lost to damage and set aside by salvage (placeholder in {path})")]
    Lost {
        /// The offset.
        offset: u64,
        /// The segment holding the placeholder.
        path: PathBuf,
    },

    /// The log handle was closed.
    #[error("the log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }

    /// Whether this error reports damaged or foreign data on disk (as opposed
    /// to an I/O failure, a lock, a bad argument or a poisoned writer).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. }
                | Error::UnsupportedVersion { .. }
                | Error::NotDurq { .. }
                | Error::MissingSegment { .. }
        )
    }
}
