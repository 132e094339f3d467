//! durq (crate docs written with the Log API)
pub mod error;
pub mod names;
pub mod record;
pub mod storage;
