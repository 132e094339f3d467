//! What the benches share: scratch directories on the real disk, the raw
//! and durq workloads (from `durq bench`, included below), SQLite baselines,
//! and a helper that spreads an iteration count over producer threads.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

/// The workloads of `durq bench` (raw `pwrite`+`fdatasync`, durq append,
/// consume, scan), shared so that both measure exactly the same thing.
#[path = "../../src/bin/durq/bench.rs"]
pub mod cli;

#[allow(unused_imports)]
pub use cli::{RawFile, Sample, median};

/// A scratch directory on the real disk: `$DURQ_BENCH_DIR` if set, else the
/// system temp dir — unless that is in memory (tmpfs), where fdatasync is
/// free and every comparison would be meaningless; then the target dir.
pub fn scratch() -> tempfile::TempDir {
    let base = match std::env::var_os("DURQ_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let tmp = std::env::temp_dir();
            match cli::mount_of(&tmp) {
                Some((_, _, fs)) if fs == "tmpfs" || fs == "ramfs" => {
                    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                }
                _ => tmp,
            }
        }
    };
    std::fs::create_dir_all(&base).expect("create the benchmark base directory");
    tempfile::Builder::new()
        .prefix("durq-bench-")
        .tempdir_in(&base)
        .expect("create a scratch directory")
}

/// Describes the file system of `dir` for the reports.
pub fn describe_fs(dir: &Path) -> String {
    match cli::mount_of(dir) {
        Some((dev, mnt, fs)) => format!("{} ({fs} on {dev}, mounted at {mnt})", dir.display()),
        None => format!("{} (file system unknown)", dir.display()),
    }
}

/// Runs `f(thread, n)` on `threads` threads, giving thread `t` its share `n`
/// of `iters` operations; returns the time from the common start (a
/// barrier, after the threads exist) to the last thread's end.
pub fn run_threads<F>(threads: usize, iters: u64, f: F) -> Duration
where
    F: Fn(usize, u64) + Sync,
{
    if threads == 1 {
        let start = Instant::now();
        f(0, iters);
        return start.elapsed();
    }
    let barrier = Barrier::new(threads + 1);
    let mut start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let n = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
            let (barrier, f) = (&barrier, &f);
            s.spawn(move || {
                barrier.wait();
                f(t, n);
            });
        }
        barrier.wait();
        start = Instant::now();
    });
    start.elapsed()
}

/// Opens a durq log with default options in `dir`.
pub fn durq_log(dir: &Path) -> durq::Log {
    durq::Log::open(dir).expect("open durq log")
}

/// A durq log in `dir` holding `n` records of `len` bytes.
pub fn durq_prefilled(dir: &Path, n: u64, len: usize) -> durq::Log {
    let log = durq_log(dir);
    let payload = vec![3u8; len];
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        log.append_batch(std::iter::repeat_n(&payload[..], k as usize))
            .expect("prefill");
        left -= k;
    }
    log
}

// ---------------------------------------------------------------- SQLite

/// SQLite in WAL mode with `synchronous=FULL` (every commit fsyncs the WAL),
/// the Python original's engine, with a message table and a cursor table.
pub fn sqlite_open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open sqlite");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("WAL");
    assert_eq!(mode.to_lowercase(), "wal");
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, payload BLOB NOT NULL);
         CREATE TABLE IF NOT EXISTS cursors (client TEXT PRIMARY KEY, pos INTEGER NOT NULL);
         INSERT OR IGNORE INTO cursors (client, pos) VALUES ('bench', 0);",
    )
    .expect("create tables");
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .expect("synchronous");
    assert_eq!(sync, 2, "synchronous=FULL");
    conn
}

/// One INSERT in its own (autocommit) transaction: durable on return.
pub fn sqlite_insert(conn: &Connection, payload: &[u8]) {
    conn.prepare_cached("INSERT INTO q (payload) VALUES (?1)")
        .expect("prepare")
        .execute(params![payload])
        .expect("insert");
}

/// `n` INSERTs in one transaction.
pub fn sqlite_insert_batch(conn: &Connection, payload: &[u8], n: usize) {
    conn.execute_batch("BEGIN").expect("begin");
    {
        let mut st = conn
            .prepare_cached("INSERT INTO q (payload) VALUES (?1)")
            .expect("prepare");
        for _ in 0..n {
            st.execute(params![payload]).expect("insert");
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
}

/// A SQLite database in `path` holding `n` rows of `len` bytes.
pub fn sqlite_prefilled(path: &Path, n: u64, len: usize) -> Connection {
    let conn = sqlite_open(path);
    let payload = vec![3u8; len];
    let mut left = n;
    while left > 0 {
        let k = left.min(100_000);
        sqlite_insert_batch(&conn, &payload, k as usize);
        left -= k;
    }
    conn
}

/// Rows not yet consumed by client `bench`.
pub fn sqlite_waiting(conn: &Connection) -> u64 {
    conn.query_row(
        "SELECT (SELECT COALESCE(MAX(id), 0) FROM q) - (SELECT pos FROM cursors WHERE client = 'bench')",
        [],
        |r| r.get::<_, i64>(0),
    )
    .expect("count") as u64
}

/// The consumer pattern as the Python original ran it: one transaction per
/// message that reads the client's cursor, reads the next row after it, and
/// moves the cursor past it; durable on return. Returns whether a row was
/// there.
pub fn sqlite_consume_one(conn: &Connection) -> bool {
    conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
    let pos: i64 = conn
        .prepare_cached("SELECT pos FROM cursors WHERE client = 'bench'")
        .expect("prepare")
        .query_row([], |r| r.get(0))
        .expect("cursor");
    let next = conn
        .prepare_cached("SELECT id, payload FROM q WHERE id > ?1 ORDER BY id LIMIT 1")
        .expect("prepare")
        .query_row(params![pos], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        });
    let found = match next {
        Ok((id, payload)) => {
            std::hint::black_box(payload.len());
            conn.prepare_cached("UPDATE cursors SET pos = ?1 WHERE client = 'bench'")
                .expect("prepare")
                .execute(params![id])
                .expect("update");
            true
        }
        Err(rusqlite::Error::QueryReturnedNoRows) => false,
        Err(e) => panic!("sqlite consume: {e}"),
    };
    conn.execute_batch("COMMIT").expect("commit");
    found
}

/// Reads every row in id order (`SELECT id, payload FROM q ORDER BY id`);
/// returns the number of rows.
pub fn sqlite_scan(conn: &Connection) -> u64 {
    let mut st = conn
        .prepare_cached("SELECT id, payload FROM q ORDER BY id")
        .expect("prepare");
    let mut rows = st.query([]).expect("query");
    let mut n = 0u64;
    while let Some(row) = rows.next().expect("row") {
        let payload = row.get_ref(1).expect("payload").as_blob().expect("blob");
        std::hint::black_box(payload.len());
        n += 1;
    }
    n
}

/// `threads` threads sharing one connection behind a mutex, each doing one
/// INSERT per transaction, for `slot`.
pub fn sqlite_insert_threads_for(
    conn: &Mutex<Connection>,
    threads: usize,
    payload_len: usize,
    slot: Duration,
) -> Sample {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let mut total = 0u64;
    let mut start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    let payload = vec![t as u8; payload_len];
                    let mut n = 0u64;
                    barrier.wait();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        sqlite_insert(&conn.lock().unwrap(), &payload);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        barrier.wait();
        start = Instant::now();
        std::thread::sleep(slot);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        total = handles.into_iter().map(|h| h.join().unwrap()).sum();
    });
    Sample {
        ops: total,
        elapsed: start.elapsed(),
        latencies_ns: Vec::new(),
    }
}

/// Repeats `op` (which does `per_op` operations) for `slot`.
pub fn repeat_for(slot: Duration, per_op: u64, mut op: impl FnMut()) -> Sample {
    let start = Instant::now();
    let mut ops = 0;
    loop {
        op();
        ops += per_op;
        let elapsed = start.elapsed();
        if elapsed >= slot {
            return Sample {
                ops,
                elapsed,
                latencies_ns: Vec::new(),
            };
        }
    }
}

/// SQLite consumer pattern for `slot`, refilling (untimed) when caught up.
pub fn sqlite_consume_for(conn: &Connection, payload_len: usize, slot: Duration) -> Sample {
    let payload = vec![7u8; payload_len];
    let mut timed = Duration::ZERO;
    let mut ops = 0;
    while timed < slot {
        let t0 = Instant::now();
        let found = sqlite_consume_one(conn);
        timed += t0.elapsed();
        if found {
            ops += 1;
        } else {
            sqlite_insert_batch(conn, &payload, 1000);
        }
    }
    Sample {
        ops,
        elapsed: timed,
        latencies_ns: Vec::new(),
    }
}

/// Resident memory of this process from `/proc/self/status`, in KiB:
/// (VmRSS, RssAnon, RssFile).
pub fn rss_kib() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// A log in `dir` with `segments` full segments of `segment_size` bytes
/// (plus a partly filled active one) of 100-byte records.
pub fn durq_with_segments(dir: &Path, segments: usize, segment_size: u64) -> durq::Log {
    let log = durq::Options::new()
        .segment_size(segment_size)
        .open(dir)
        .expect("open");
    let per_segment = ((segment_size as usize - 64) / durq::record::encoded_len(100)) as usize;
    let payload = [9u8; 100];
    while log.segments().expect("segments").len() <= segments {
        log.append_batch(std::iter::repeat_n(&payload[..], per_segment / 2))
            .expect("fill");
    }
    log
}

/// Like [`durq_with_segments`], then a last, active segment of the default
/// size (64 MiB) holding `tail_records` 100-byte records: recovery scans
/// this tail at open, so its cost dominates when the tail is realistic.
pub fn durq_with_segments_and_tail(
    dir: &Path,
    segments: usize,
    segment_size: u64,
    tail_records: usize,
) -> durq::Log {
    drop(durq_with_segments(dir, segments, segment_size));
    let log = durq::Options::new()
        .background_preallocation(false)
        .open(dir)
        .expect("reopen");
    let payload = [9u8; 100];
    let before = log.segments().expect("segments").len();
    // Fill the small active segment until the log rolls into a big one.
    while log.segments().expect("segments").len() == before {
        log.append(payload).expect("fill");
    }
    let mut left = tail_records;
    while left > 0 {
        let k = left.min(10_000);
        log.append_batch(std::iter::repeat_n(&payload[..], k))
            .expect("fill tail");
        left -= k;
    }
    log
}
