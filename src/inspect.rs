//! Read-only inspection of a log directory (used by the `durq` tool):
//! verification of every record and cursor, and views of a log that another
//! process may be writing.
