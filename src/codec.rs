//! Typed messages: a small codec trait, with postcard as the default.
//!
//! ```
//! # fn main() -> Result<(), durq::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Order { id: u32, item: String }
//!
//! let log = durq::Log::open(tmp.path())?;
//! log.append_value(&Order { id: 1, item: "tea".into() })?;
//! let billing = log.consumer("billing")?;
//! let msg = billing.next()?.expect("one message");
//! let order: Order = msg.decode()?;
//! assert_eq!(order.item, "tea");
//! msg.ack()?;
//! # Ok(())
//! # }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Turns values into payload bytes and back. Implement it to plug in
/// another format (JSON, bincode, protobuf through serde, ...).
pub trait Codec {
    /// Encodes a value; the error is a human-readable reason.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, String>;
    /// Decodes a value; the error is a human-readable reason.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String>;
}

/// The default codec: [postcard](https://docs.rs/postcard), compact and
/// stable.
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl Codec for Postcard {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(value).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}
