//! The synchronization primitives the engine uses, in one place.
//!
//! Normal builds use `std`. With the test-only feature `test-shuttle`, the
//! same names come from the [`shuttle`](https://docs.rs/shuttle) crate, whose
//! scheduler then controls every lock, condition variable, atomic, park and
//! thread spawn of the engine: `tests/shuttle_*.rs` run thousands of
//! seeded thread interleavings of the public API and replay any failing one
//! exactly. Never enable the feature for a real log.

#[cfg(not(feature = "test-shuttle"))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak, atomic};
#[cfg(not(feature = "test-shuttle"))]
pub(crate) use std::thread;

#[cfg(feature = "test-shuttle")]
pub(crate) use shuttle::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak, atomic};
#[cfg(feature = "test-shuttle")]
pub(crate) use shuttle::thread;
