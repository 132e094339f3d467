//! durq: a durable, segmented, append-only log that is also a FIFO queue
//! with named clients.
//!
//! * [`Log::append`] returns only once the record is on stable storage
//!   (written and `fdatasync`ed); concurrent appenders share one `fdatasync`
//!   (group commit).
//! * Records are length-prefixed and CRC-checked, in fixed-size,
//!   preallocated segment files; every read verifies the checksum.
//! * Readers never see a record before it is durable.
//! * [`Log::open`] repairs only a torn tail (the unfinished last write);
//!   any other damage is an error naming the file and byte position.
//!
//! ```
//! # fn main() -> Result<(), durq::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("data");
//! let log = durq::Options::new().segment_size(1 << 20).open(&dir)?;
//! let first = log.append(b"hello")?;              // durable on return
//! let range = log.append_batch([b"a", b"b"])?;    // one fsync for both
//! assert_eq!(range, first + 1..first + 3);
//! assert_eq!(log.read(first)?.as_deref(), Some(&b"hello"[..]));
//! for item in log.iter(0) {
//!     let (offset, bytes) = item?;
//!     println!("{offset}: {} bytes", bytes.len());
//! }
//! assert_eq!(log.end(), 3);                       // next offset to be assigned
//! drop(log);
//!
//! let log = durq::Log::open(&dir)?;               // recovers; locks the directory
//! assert_eq!(log.end(), 3);
//! # Ok(())
//! # }
//! ```
//!
//! # A queue with named clients
//!
//! Each client name has its own durable position. A message counts as
//! consumed only when it is acknowledged; one taken and not acknowledged
//! (dropped, nacked, or lost in a crash) is delivered again. Threads sharing
//! a name split the messages; different names are independent.
//!
//! ```
//! # fn main() -> Result<(), durq::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! let log = durq::Log::open(tmp.path())?;
//! log.append(b"job 1")?;
//! let billing = log.consumer("billing")?;         // Clone + Send + Sync + 'static
//! if let Some(msg) = billing.next()? {            // non-blocking; next_timeout(d) blocks
//!     assert_eq!(msg.payload(), b"job 1");
//!     msg.ack()?;                                 // durable on return
//! }
//! let clients = log.consumers()?;                 // names, acked offsets, lag
//! assert_eq!((clients[0].acked, clients[0].lag), (1, 0));
//! # Ok(())
//! # }
//! ```
//!
//! The on-disk format is specified in `docs/format.md`, the durability
//! protocol and crash model in `docs/durability.md`.

#![deny(missing_docs)]

pub mod codec;
mod consumer;
mod crc;
pub mod cursor;
pub mod error;
pub mod inspect;
mod layout;
mod log;
pub mod names;
pub mod record;
pub mod recovery;
mod retention;
mod segment;
pub mod storage;
mod sync;
pub mod upgrade;
mod writer;

pub use codec::{Codec, Postcard};
pub use consumer::{ClientInfo, Consumer, MAX_CLIENT_NAME_LEN, Message};
pub use error::{Error, Result};
pub use log::{
    DEFAULT_OPEN_SEGMENTS, DEFAULT_SEGMENT_SIZE, Iter, Log, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
    Options, SegmentInfo,
};
pub use recovery::{CursorRepair, RecoveryReport, TornTail};
pub use retention::Retention;
pub use segment::Record;
pub use writer::MAX_STAGED_BYTES;

/// The README's examples, compiled and run as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
