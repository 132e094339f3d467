//! Retention: which old segments may be deleted. Default: none.
//!
//! Deletion removes whole sealed segments, oldest first, never the active
//! one. Each file is unlinked (or, when nothing refers to it any more,
//! renamed to a temporary name and kept to be zero-filled and reused as the
//! next spare segment) and the directory `fsync`ed before the next is
//! touched, so after a crash the remaining segments are always a contiguous
//! run (a deleted segment may reappear, never one in the middle). The first
//! retained offset is derived from the oldest remaining segment's name, so
//! there is no separate metadata to keep in step.

/// A retention policy, set with [`crate::Options::retention`].
///
/// ```
/// use durq::Retention;
/// let keep = Retention::keep_all();                     // the default
/// let acked = Retention::acked_by_all();                // delete what every client acknowledged
/// let bounded = Retention::max_bytes(10 << 30);         // keep at most ~10 GiB of segments
/// let both = Retention::acked_by_all().with_max_bytes(10 << 30);
/// # let _ = (keep, acked, bounded, both);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    acked_by_all: bool,
    max_bytes: Option<u64>,
}

impl Retention {
    /// Keep every segment forever (the default).
    pub fn keep_all() -> Retention {
        Retention::default()
    }

    /// Delete a sealed segment once every registered client has
    /// acknowledged all of its messages. With no registered client, nothing
    /// is deleted (there is nobody whose acknowledgement would count).
    pub fn acked_by_all() -> Retention {
        Retention {
            acked_by_all: true,
            max_bytes: None,
        }
    }

    /// Delete the oldest sealed segments while the segment files take more
    /// than `bytes` in all, whether or not clients have read them. A client
    /// whose position falls behind the oldest retained offset gets
    /// [`crate::Error::Truncated`] from `next` until it is moved with
    /// [`crate::Consumer::seek`]: it is never moved silently.
    ///
    /// The total is summed from the segments' headers, so the first check
    /// (after an append, or in [`crate::Log::apply_retention`]) reads the
    /// header of every segment whose header opening the log did not read
    /// (it reads only the last one's); a log bounded this way holds few
    /// segments. If a header cannot be read, nothing is deleted by size and
    /// `apply_retention` returns the error naming the file.
    pub fn max_bytes(bytes: u64) -> Retention {
        Retention {
            acked_by_all: false,
            max_bytes: Some(bytes),
        }
    }

    /// Adds a size bound to this policy.
    pub fn with_max_bytes(mut self, bytes: u64) -> Retention {
        self.max_bytes = Some(bytes);
        self
    }

    /// Whether segments acknowledged by every client are deleted.
    pub fn deletes_acked(&self) -> bool {
        self.acked_by_all
    }

    /// The size bound, if any.
    pub fn size_bound(&self) -> Option<u64> {
        self.max_bytes
    }

    /// Whether this policy never deletes anything.
    pub fn is_keep_all(&self) -> bool {
        !self.acked_by_all && self.max_bytes.is_none()
    }
}
