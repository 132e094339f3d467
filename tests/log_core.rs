//! The core log: round trips, concurrency, torn tails, damage, locking,
//! bad input and poisoning.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use durq::record::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use durq::storage::{FsStorage, LockGuard, Mapping, OpenMode, Storage, StorageFile};
use durq::{Error, Log, Options};

#[path = "support/layout.rs"]
mod layout;
use layout::{base_of, segment_files};

fn small(seg: u64) -> Options {
    Options::new().segment_size(seg)
}

fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 300) as usize;
    (0..len).map(|j| (i as usize * 7 + j) as u8).collect()
}

/// Byte position of record `k` (0-based within the segment) given the
/// payload lengths of the records before it.
fn position_of(lens: &[usize], k: usize) -> usize {
    SEGMENT_HEADER_LEN
        + lens[..k]
            .iter()
            .map(|&l| record::encoded_len(l))
            .sum::<usize>()
}

fn patch(path: &Path, pos: usize, bytes: &[u8]) {
    let mut data = fs::read(path).unwrap();
    data[pos..pos + bytes.len()].copy_from_slice(bytes);
    fs::write(path, data).unwrap();
}

#[test]
fn round_trip_across_many_rollovers_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let n = 2000u64;
    {
        let log = small(4096).open(&dir).unwrap();
        for i in 0..n {
            assert_eq!(log.append(payload(i)).unwrap(), i);
        }
        assert_eq!(log.end(), n);
        assert!(
            log.segments().unwrap().len() > 50,
            "expected many rollovers, got {}",
            log.segments().unwrap().len()
        );
        for i in 0..n {
            assert_eq!(log.read(i).unwrap().unwrap().to_vec(), payload(i));
        }
        assert!(log.read(n).unwrap().is_none());
    }
    let log = small(4096).open(&dir).unwrap();
    assert_eq!(log.end(), n);
    assert!(
        log.recovery_report().is_clean(),
        "{:?}",
        log.recovery_report()
    );
    let mut count = 0;
    for (k, item) in log.iter(0).enumerate() {
        let (off, rec) = item.unwrap();
        assert_eq!(off, k as u64);
        assert_eq!(rec.to_vec(), payload(off));
        count += 1;
    }
    assert_eq!(count, n);
    // Random access out of order, across segments.
    for i in (0..n).rev().step_by(7) {
        assert_eq!(log.read(i).unwrap().unwrap().to_vec(), payload(i));
    }
    // Appending continues with dense offsets.
    assert_eq!(log.append(b"more").unwrap(), n);
    assert_eq!(log.iter(n - 1).count(), 2);
}

#[test]
fn eight_threads_ten_thousand_appends_each_get_unique_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let threads = 8u64;
    let per = 10_000u64;
    let log = small(1 << 20).open(&dir).unwrap();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut got = Vec::with_capacity(per as usize);
                for i in 0..per {
                    let body = format!("t{t}-i{i}");
                    got.push((log.append(body.as_bytes()).unwrap(), body));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    drop(log);
    let offsets: HashSet<u64> = all.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets.len() as u64,
        threads * per,
        "an offset was assigned twice"
    );
    assert_eq!(*offsets.iter().max().unwrap(), threads * per - 1);
    let log = small(1 << 20).open(&dir).unwrap();
    assert_eq!(log.end(), threads * per);
    for (off, body) in &all {
        assert_eq!(log.read(*off).unwrap().unwrap().to_vec(), body.as_bytes());
    }
}

#[test]
fn append_batch_assigns_consecutive_offsets_and_spans_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let log = small(4096).open(tmp.path()).unwrap();
    let batch: Vec<Vec<u8>> = (0..200).map(payload).collect();
    let r = log.append_batch(&batch).unwrap();
    assert_eq!(r, 0..200);
    assert!(log.segments().unwrap().len() > 3);
    for (i, p) in batch.iter().enumerate() {
        assert_eq!(&log.read(i as u64).unwrap().unwrap().to_vec(), p);
    }
    assert_eq!(log.append_batch(Vec::<Vec<u8>>::new()).unwrap(), 200..200);
}

/// Appends `lens.len()` records of the given lengths, filled with 0xA5, and
/// returns the (single) segment path.
fn log_with(dir: &Path, lens: &[usize]) -> PathBuf {
    let log = small(1 << 16).open(dir).unwrap();
    for &l in lens {
        log.append(vec![0xA5u8; l]).unwrap();
    }
    drop(log);
    let segs = segment_files(dir);
    assert_eq!(segs.len(), 1);
    segs[0].clone()
}

#[test]
fn torn_tail_record_cut_short_is_cut_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = [100, 100, 700];
    let seg = log_with(tmp.path(), &lens);
    let p = position_of(&lens, 2);
    // The last record's write reached the disk only up to the middle.
    let cut = p + RECORD_HEADER_LEN + 300;
    patch(&seg, cut, &vec![0u8; 400]);
    let log = small(1 << 16).open(tmp.path()).unwrap();
    assert_eq!(log.end(), 2);
    let torn = log
        .recovery_report()
        .torn_tail
        .clone()
        .expect("torn tail reported");
    assert_eq!(torn.position, p as u64);
    assert_eq!(torn.offset, 2);
    assert!(torn.bytes_zeroed >= (RECORD_HEADER_LEN + 300) as u64);
    assert_eq!(torn.segment, seg);
    // The repair is in place: the file keeps its size and the bytes are zero.
    let data = fs::read(&seg).unwrap();
    assert_eq!(data.len(), 1 << 16);
    assert!(data[p..].iter().all(|&b| b == 0));
    // Appends continue at the cut offset.
    assert_eq!(log.append(b"next").unwrap(), 2);
    drop(log);
    let log = small(1 << 16).open(tmp.path()).unwrap();
    assert!(log.recovery_report().is_clean(), "recovery is idempotent");
    assert_eq!(log.read(2).unwrap().unwrap().to_vec(), b"next");
}

#[test]
fn torn_tail_zeroed_last_records_end_the_log_there() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = [10, 20, 30, 40];
    let seg = log_with(tmp.path(), &lens);
    let p = position_of(&lens, 2);
    patch(&seg, p, &vec![0u8; position_of(&lens, 4) - p]);
    let log = small(1 << 16).open(tmp.path()).unwrap();
    assert_eq!(log.end(), 2);
    // Nothing but zeros past the end: nothing to cut.
    assert_eq!(log.recovery_report().torn_tail, None);
    assert_eq!(log.recovery_report().end_offset, 2);
}

#[test]
fn torn_tail_garbage_length_field_is_cut_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = [50, 50, 50];
    let seg = log_with(tmp.path(), &lens);
    let p = position_of(&lens, 2);
    patch(&seg, p + 8, &0xFFFF_FFF0u32.to_le_bytes());
    let log = small(1 << 16).open(tmp.path()).unwrap();
    assert_eq!(log.end(), 2);
    let torn = log.recovery_report().torn_tail.clone().unwrap();
    assert_eq!(torn.position, p as u64);
    assert!(torn.reason.contains("length"), "{}", torn.reason);
}

#[test]
fn torn_tail_random_bytes_after_last_record_are_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = [64, 64];
    let seg = log_with(tmp.path(), &lens);
    let p = position_of(&lens, 2);
    let junk: Vec<u8> = (0..333u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    patch(&seg, p, &junk);
    let log = small(1 << 16).open(tmp.path()).unwrap();
    assert_eq!(log.end(), 2);
    let torn = log.recovery_report().torn_tail.clone().unwrap();
    assert_eq!(torn.position, p as u64);
    assert!(torn.bytes_zeroed >= 333);
    assert_eq!(log.read(1).unwrap().unwrap().len(), 64);
}

#[test]
fn torn_tail_header_only_record_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = [30, 30, 200];
    let seg = log_with(tmp.path(), &lens);
    let p = position_of(&lens, 2);
    // The header reached the disk, the payload did not.
    patch(&seg, p + RECORD_HEADER_LEN, &[0u8; 200]);
    let log = small(1 << 16).open(tmp.path()).unwrap();
    assert_eq!(log.end(), 2);
    let torn = log.recovery_report().torn_tail.clone().unwrap();
    assert_eq!(torn.position, p as u64);
    assert!(torn.reason.contains("checksum"), "{}", torn.reason);
}

#[test]
fn flipped_bit_in_sealed_segment_is_reported_with_file_and_position() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n = 300u64;
    {
        let log = small(4096).open(dir).unwrap();
        for i in 0..n {
            log.append(vec![i as u8 | 1; 100]).unwrap();
        }
    }
    let segs = segment_files(dir);
    assert!(segs.len() > 3);
    // Second segment: sealed. Its first record's base offset is in its name
    // (BASE-SEQ.seg).
    let victim = &segs[1];
    let base: u64 = base_of(victim);
    let lens = [100usize; 5];
    let p = position_of(&lens, 3); // record base+3
    patch(victim, p + RECORD_HEADER_LEN + 10, &[0x00]);
    let log = small(4096).open(dir).unwrap();
    // Sealed segments are not rescanned on open.
    assert_eq!(log.end(), n);
    let err = log.read(base + 3).unwrap_err();
    match &err {
        Error::Corrupt { path, position, .. } => {
            assert_eq!(path, victim);
            assert_eq!(*position, p as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(victim.to_str().unwrap()) && msg.contains(&p.to_string()),
        "{msg}"
    );
    // Neighbours are intact and still readable: nothing later is dropped.
    assert_eq!(
        log.read(base + 2).unwrap().unwrap()[0],
        (base + 2) as u8 | 1
    );
    assert_eq!(
        log.read(base + 4).unwrap().unwrap()[0],
        (base + 4) as u8 | 1
    );
    assert_eq!(log.read(n - 1).unwrap().unwrap().len(), 100);
    // A scan stops with the error at that offset.
    let results: Vec<_> = log.iter(0).collect();
    assert_eq!(results.len() as u64, base + 4);
    assert!(results.last().unwrap().is_err());
    // So does the borrowing scan, after handing out every record before it,
    // with and without memory maps.
    drop(log);
    for mmap in [true, false] {
        let log = small(4096).use_mmap(mmap).open(dir).unwrap();
        let mut seen = 0u64;
        let err = log
            .scan(0, |off, _| {
                assert_eq!(off, seen);
                seen += 1;
                ControlFlow::Continue(())
            })
            .unwrap_err();
        assert_eq!(seen, base + 3);
        assert!(
            matches!(&err, Error::Corrupt { path, position, .. } if path == victim && *position == p as u64),
            "{err}"
        );
        // Starting past the damage reads on to the end.
        let mut after = 0u64;
        let end = log
            .scan(base + 4, |_, _| {
                after += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!((end, after), (n, n - base - 4));
    }
}

#[test]
fn scan_borrows_every_record_in_order_and_stops_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 3000u64;
    {
        let log = small(8192).open(tmp.path()).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            log.append_batch(chunk.iter().map(|&i| payload(i))).unwrap();
        }
    }
    for mmap in [true, false] {
        let log = small(8192).use_mmap(mmap).open(tmp.path()).unwrap();
        assert!(log.segments().unwrap().len() > 20);
        for from in [0, 1, 63, 64, 65, 1234, n - 1, n, n + 5] {
            let mut next = from;
            let end = log
                .scan(from, |off, bytes| {
                    assert_eq!(off, next);
                    assert_eq!(bytes, &payload(off)[..], "record {off}");
                    next += 1;
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(end, n.max(from));
            assert_eq!(next, n.max(from));
        }
        // Break after the record at 1500: the return value is the offset
        // after the last record visited.
        let mut visited = Vec::new();
        let end = log
            .scan(1490, |off, _| {
                visited.push(off);
                if off == 1500 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(end, 1501);
        assert_eq!(visited, (1490..=1500).collect::<Vec<_>>());
    }
}

#[test]
fn readers_see_records_appended_after_they_read_ahead_with_and_without_maps() {
    // Without maps, readers read a segment ahead in large pieces; an
    // iterator that waited at the end must not take the zeros it read
    // ahead then for the records appended since.
    let big = |i: u64| vec![i as u8 | 1; 400 << 10];
    let want = |i: u64| {
        if [20, 22, 23].contains(&i) {
            big(i)
        } else {
            payload(i)
        }
    };
    for mmap in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let log = small(1 << 20).use_mmap(mmap).open(tmp.path()).unwrap();
        let append = |i: u64| assert_eq!(log.append(want(i)).unwrap(), i);
        let mut it = log.iter(0);
        let mut take = |from: u64, to: u64| {
            for i in from..to {
                let (o, r) = it.next().unwrap().unwrap();
                assert_eq!(o, i, "mmap {mmap}");
                assert_eq!(r.as_bytes(), &want(i)[..], "record {i}, mmap {mmap}");
            }
            assert!(it.next().is_none(), "mmap {mmap}");
        };
        (0..10).for_each(append);
        take(0, 10);
        (10..20).for_each(append);
        take(10, 20);
        // Records larger than the read-ahead, between small ones, across
        // segment boundaries.
        (20..25).for_each(append);
        take(20, 25);
        assert!(log.segments().unwrap().len() > 1);
        for i in 0..25 {
            assert_eq!(log.read(i).unwrap().unwrap().as_bytes(), &want(i)[..]);
        }
        let mut next = 0;
        log.scan(0, |o, bytes| {
            assert_eq!((o, bytes), (next, &want(next)[..]));
            next += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(next, 25);
    }
}

#[test]
fn flipped_bit_in_middle_of_active_segment_fails_open() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = [80usize; 20];
    let seg = log_with(tmp.path(), &lens);
    let p = position_of(&lens, 5);
    patch(&seg, p + RECORD_HEADER_LEN + 1, &[0x24]);
    let err = small(1 << 16).open(tmp.path()).unwrap_err();
    match err {
        Error::Corrupt { path, position, .. } => {
            assert_eq!(path, seg);
            assert_eq!(position, p as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was changed by the failed open.
    let data = fs::read(&seg).unwrap();
    assert_eq!(data[p + RECORD_HEADER_LEN + 1], 0x24);
}

#[test]
fn damaged_magic_followed_by_later_writes_is_not_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = [40usize; 10];
    let seg = log_with(tmp.path(), &lens);
    let p = position_of(&lens, 3);
    patch(&seg, p, &[0, 0, 0, 0]);
    let err = small(1 << 16).open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { position, .. } if position == p as u64),
        "{err}"
    );
}

#[test]
fn second_open_fails_with_lock_error_until_first_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path()).unwrap();
    let err = Log::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Locked { dir } if dir == tmp.path()),
        "{err}"
    );
    assert!(err.to_string().contains(tmp.path().to_str().unwrap()));
    drop(log);
    let log = Log::open(tmp.path()).unwrap();
    assert_eq!(log.end(), 0);
}

#[test]
fn oversized_record_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let log = small(8192).open(tmp.path()).unwrap();
    let max = log.max_record_size();
    assert!(max < 8192 && max > 8000, "{max}");
    let err = log.append(vec![1u8; max + 1]).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { len, .. } if len == max + 1));
    let err = log
        .append_batch([vec![1u8; 10], vec![2u8; max + 1]])
        .unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }));
    assert_eq!(log.end(), 0);
    // The largest record fits, alone in its segment.
    assert_eq!(log.append(vec![7u8; max]).unwrap(), 0);
    assert_eq!(log.append(b"x").unwrap(), 1);
    assert_eq!(log.read(0).unwrap().unwrap().len(), max);
}

#[test]
fn empty_payload_is_a_record() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path()).unwrap();
    assert_eq!(log.append(b"").unwrap(), 0);
    assert_eq!(log.append(b"x").unwrap(), 1);
    drop(log);
    let log = Log::open(tmp.path()).unwrap();
    assert_eq!(log.end(), 2);
    assert_eq!(log.read(0).unwrap().unwrap().len(), 0);
}

#[test]
fn unknown_files_are_left_alone_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Log::open(tmp.path()).unwrap());
    fs::write(tmp.path().join("notes.txt"), b"hi").unwrap();
    let log = Log::open(tmp.path()).unwrap();
    assert_eq!(
        log.recovery_report().unknown_files,
        vec![tmp.path().join("notes.txt")]
    );
    drop(log);
    assert_eq!(fs::read(tmp.path().join("notes.txt")).unwrap(), b"hi");
}

#[test]
fn refuses_to_create_a_log_in_a_directory_of_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("important.doc"), b"x").unwrap();
    let err = Log::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("holds no durq log"), "{err}");
    assert!(segment_files(tmp.path()).is_empty());
    // Nothing at all was created there, not even the lock file.
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("important.doc")]);
}

#[test]
fn a_stray_lock_file_among_other_files_changes_nothing() {
    // A directory holding `durq.lock` (a log whose segments were removed by
    // hand, say) is checked for foreign files only after the lock is taken.
    // Nothing in it may be removed on the way, not even `.tmp` files.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join(durq::names::LOCK_FILE), b"").unwrap();
    fs::write(dir.join("important.doc"), b"x").unwrap();
    fs::write(dir.join("draft.tmp"), b"unsaved work").unwrap();
    let err = Log::open(dir).unwrap_err();
    assert!(err.to_string().contains("holds no durq log"), "{err}");
    assert!(segment_files(dir).is_empty());
    assert_eq!(fs::read(dir.join("draft.tmp")).unwrap(), b"unsaved work");
    assert_eq!(fs::read(dir.join("important.doc")).unwrap(), b"x");

    // With only durq's own leftovers, the log is created; its leftover
    // temporary file goes on the next open, once the directory is a log.
    fs::remove_file(dir.join("important.doc")).unwrap();
    drop(Log::open(dir).unwrap());
    assert_eq!(segment_files(dir).len(), 1);
    let log = Log::open(dir).unwrap();
    assert!(!dir.join("draft.tmp").exists());
    assert_eq!(
        log.recovery_report().removed_temp_files,
        vec![dir.join("draft.tmp")]
    );
}

#[test]
fn segment_named_file_that_is_not_durq_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Log::open(tmp.path()).unwrap());
    let fake = tmp.path().join("00000000000000000100.seg");
    fs::write(&fake, b"this is not a segment").unwrap();
    let err = Log::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Error::NotDurq { path, .. } if path == &fake),
        "{err}"
    );
}

#[test]
fn segment_of_future_format_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Log::open(tmp.path()).unwrap());
    let seg = segment_files(tmp.path())[0].clone();
    let current = durq::record::FORMAT_VERSION;
    // A future version, and version 1 (the record layout before the
    // checksum covered one contiguous span): both refused, nothing changed.
    for found in [current + 1, 1] {
        patch(&seg, 8, &found.to_le_bytes());
        let before = fs::read(&seg).unwrap();
        let err = Log::open(tmp.path()).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedVersion { found: f, supported, path }
                if *f == found && *supported == current && path == &seg),
            "{err}"
        );
        assert_eq!(fs::read(&seg).unwrap(), before);
    }
}

#[test]
fn missing_middle_segment_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = small(4096).open(tmp.path()).unwrap();
        for i in 0..200 {
            log.append(payload(i)).unwrap();
        }
    }
    let segs = segment_files(tmp.path());
    fs::remove_file(&segs[2]).unwrap();
    let err = small(4096).open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingSegment { after, .. } if after == &segs[1]),
        "{err}"
    );
}

#[test]
fn leftover_temp_files_are_removed_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Log::open(tmp.path()).unwrap());
    let leftover = tmp.path().join("spare-1-1.tmp");
    fs::write(&leftover, vec![0u8; 100]).unwrap();
    let log = Log::open(tmp.path()).unwrap();
    assert_eq!(
        log.recovery_report().removed_temp_files,
        vec![leftover.clone()]
    );
    assert!(!leftover.exists());
}

#[test]
fn bad_segment_size_option_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in [0u64, 100, 4097, 2 << 30] {
        let err = Options::new()
            .segment_size(bad)
            .open(tmp.path())
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
    }
}

#[test]
fn readers_see_records_only_once_durable() {
    // The end moves only after the fdatasync; a reader on another thread
    // never observes an offset >= end as present.
    let tmp = tempfile::tempdir().unwrap();
    let log = small(1 << 16).open(tmp.path()).unwrap();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut seen = 0u64;
            while seen < 500 {
                let end = log.end();
                for o in seen..end {
                    assert!(
                        log.read(o).unwrap().is_some(),
                        "offset {o} below end {end} unreadable"
                    );
                }
                // Whatever a read returns must be below the end as seen after it.
                let probe = end + 1;
                if log.read(probe).unwrap().is_some() {
                    assert!(
                        probe < log.end(),
                        "offset {probe} readable before it was durable"
                    );
                }
                seen = end;
            }
        })
    };
    for i in 0..500u64 {
        log.append(payload(i)).unwrap();
    }
    reader.join().unwrap();
}

// ---- a storage double with hooks; poisoning when a sync fails ----

/// The real file system with hooks the tests switch on: failing file syncs
/// (`fail_sync`), recording directory syncs and failing those of one
/// directory (`synced`, `fail_dir`), slowing and counting writes to spare
/// segment files (`spare-*.tmp`) once `slow_spares` is set, and recording
/// every directory listed and file opened (`listed`, `opened`).
#[derive(Debug, Clone, Default)]
struct Hooked {
    fail_sync: Arc<AtomicBool>,
    synced: Arc<std::sync::Mutex<Vec<PathBuf>>>,
    fail_dir: Arc<std::sync::Mutex<Option<PathBuf>>>,
    slow_spares: Arc<AtomicBool>,
    spare_opens: Arc<std::sync::atomic::AtomicUsize>,
    spare_writes: Arc<std::sync::atomic::AtomicUsize>,
    /// Every directory listed and every file opened.
    listed: Arc<std::sync::Mutex<Vec<PathBuf>>>,
    opened: Arc<std::sync::Mutex<Vec<PathBuf>>>,
}

impl Hooked {
    /// How many times `dir` was listed.
    fn lists_of(&self, dir: &Path) -> usize {
        self.listed
            .lock()
            .unwrap()
            .iter()
            .filter(|d| *d == dir)
            .count()
    }

    /// Which files under `within` were opened.
    fn opened_under(&self, within: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .opened
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(within))
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[derive(Debug)]
struct HookedFile {
    inner: Box<dyn StorageFile>,
    spare: bool,
    hooks: Hooked,
}

impl Storage for Hooked {
    fn create_dir_all(&self, dir: &Path) -> io::Result<bool> {
        FsStorage.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.listed.lock().unwrap().push(dir.to_owned());
        FsStorage.list_dir(dir)
    }
    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        self.opened.lock().unwrap().push(path.to_owned());
        let spare = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("spare-"));
        if spare && self.slow_spares.load(Ordering::SeqCst) {
            self.spare_opens.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Box::new(HookedFile {
            inner: FsStorage.open_file(path, mode)?,
            spare,
            hooks: self.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove_file(path)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        FsStorage.remove_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fail_dir.lock().unwrap().as_deref() == Some(dir) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.synced.lock().unwrap().push(dir.to_owned());
        FsStorage.sync_dir(dir)
    }
    fn try_lock(&self, path: &Path) -> io::Result<LockGuard> {
        FsStorage.try_lock(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        FsStorage.is_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        FsStorage.exists(path)
    }
}

impl StorageFile for HookedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.inner.read_at(buf, pos)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        if self.spare && self.hooks.slow_spares.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            self.hooks.spare_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.write_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.hooks.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        if self.hooks.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.inner.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn map(&self) -> io::Result<Option<Mapping>> {
        self.inner.map()
    }
}

#[test]
fn failed_fsync_poisons_the_log_until_reopened() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = Hooked::default();
    let opts = small(1 << 16).storage(Arc::new(storage.clone()));
    let log = opts.open(tmp.path()).unwrap();
    assert_eq!(log.append(b"safe").unwrap(), 0);
    storage.fail_sync.store(true, Ordering::SeqCst);
    let err = log.append(b"doomed").unwrap_err();
    assert!(
        matches!(&err, Error::Poisoned { reason } if reason.contains("fdatasync")),
        "{err}"
    );
    assert!(log.poisoned().is_some());
    // The sync works again, but the log does not retry and pretend.
    storage.fail_sync.store(false, Ordering::SeqCst);
    let err = log.append(b"later").unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }));
    assert_eq!(log.end(), 1, "the failed record never became visible");
    assert!(log.read(1).unwrap().is_none());
    drop(log);
    let log = opts.open(tmp.path()).unwrap();
    assert!(log.poisoned().is_none());
    // The failed append's outcome is unknown (its bytes may have reached the
    // disk); what was acknowledged is there, and appends work again.
    assert_eq!(log.read(0).unwrap().unwrap().to_vec(), b"safe");
    let next = log.append(b"after reopen").unwrap();
    assert!(next == 1 || next == 2);
    assert_eq!(log.read(next).unwrap().unwrap().to_vec(), b"after reopen");
}

#[test]
fn concurrent_appenders_all_fail_when_the_shared_fsync_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = Hooked::default();
    let log = small(1 << 16)
        .storage(Arc::new(storage.clone()))
        .open(tmp.path())
        .unwrap();
    log.append(b"ok").unwrap();
    storage.fail_sync.store(true, Ordering::SeqCst);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || log.append(b"x"))
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().is_err());
    }
    assert_eq!(log.end(), 1);
}

/// Every file in `dir` (recursively) with its bytes, to show nothing changed.
fn dir_snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.push((p.clone(), Vec::new()));
            out.extend(dir_snapshot(&p));
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// Rewrites the header of segment file `seg` through `f`, with a valid CRC.
fn rewrite_header(seg: &Path, f: impl FnOnce(&mut record::SegmentHeader)) {
    let bytes = fs::read(seg).unwrap();
    let mut h = record::SegmentHeader::decode(&bytes[..SEGMENT_HEADER_LEN]).unwrap();
    f(&mut h);
    patch(seg, 0, &h.encode());
}

/// A log in `dir` of many small sealed segments; returns its segment files.
fn many_segments(dir: &Path, records: u64) -> Vec<PathBuf> {
    let log = small(4096).open(dir).unwrap();
    for i in 0..records {
        log.append(vec![i as u8 | 1; 100]).unwrap();
    }
    drop(log);
    segment_files(dir)
}

#[test]
fn open_reads_no_sealed_segment_header() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 600u64;
    let segs = many_segments(tmp.path(), n);
    assert!(segs.len() > 10, "{}", segs.len());
    // A sealed segment with a broken header checksum: open does not look.
    let victim = &segs[3];
    let victim_base = base_of(victim);
    patch(victim, 33, &[0x5A]); // inside the salt: header CRC mismatch
    let log = small(4096).open(tmp.path()).unwrap();
    assert_eq!(log.end(), n);
    assert_eq!(log.recovery_report().segments, segs.len());
    // Other segments read fine, before and after the victim.
    assert_eq!(log.read(0).unwrap().unwrap()[0], 1);
    assert_eq!(log.read(n - 1).unwrap().unwrap()[0], (n - 1) as u8 | 1);
    let next_base = base_of(&segs[4]);
    assert!(log.read(next_base).unwrap().is_some());
    // Reading a record in it: the header is checked then, and the error
    // names the file.
    for _ in 0..2 {
        match log.read(victim_base + 1) {
            Err(Error::Corrupt {
                path,
                position,
                reason,
            }) => {
                assert_eq!(&path, victim);
                assert_eq!(position, 0);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("expected Corrupt naming {victim:?}, got {other:?}"),
        }
    }
    // Iteration stops there with the same error.
    let err = log
        .iter(0)
        .find_map(|r| r.err())
        .expect("iteration reaches the damaged header");
    assert!(
        matches!(&err, Error::Corrupt { path, .. } if path == victim),
        "{err}"
    );
    // Listing segment sizes reads every header: it fails naming the file.
    let err = log.segments().unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, .. } if path == victim),
        "{err}"
    );
}

#[test]
fn sealed_segment_whose_header_seq_disagrees_with_its_name_is_corrupt_on_first_read() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = many_segments(tmp.path(), 300);
    assert!(segs.len() > 4);
    let victim = &segs[2];
    let name = victim.file_name().unwrap().to_str().unwrap();
    let (base, seq) = durq::names::parse_segment_file_name(name).unwrap();
    rewrite_header(victim, |h| h.seq = seq + 7);
    let log = small(4096).open(tmp.path()).unwrap();
    assert_eq!(log.end(), 300);
    match log.read(base) {
        Err(Error::Corrupt {
            path,
            position,
            reason,
        }) => {
            assert_eq!(&path, victim);
            assert_eq!(position, 24);
            assert!(
                reason.contains(&format!("segment number {}", seq + 7))
                    && reason.contains(&format!("file name says {seq}")),
                "{reason}"
            );
        }
        other => panic!("expected Corrupt naming {victim:?}, got {other:?}"),
    }
    // Its neighbours are unaffected.
    assert!(log.read(base_of(&segs[1])).unwrap().is_some());
    assert!(log.read(base_of(&segs[3])).unwrap().is_some());
}

#[test]
fn missing_middle_segment_is_detected_from_the_names_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = many_segments(tmp.path(), 300);
    assert!(segs.len() > 5);
    fs::remove_file(&segs[2]).unwrap();
    // Every other sealed segment's header is garbage: had open read any of
    // them, it would fail with NotDurq instead.
    for s in &segs[..segs.len() - 1] {
        if s != &segs[2] {
            patch(s, 0, b"garbage!");
        }
    }
    let err = small(4096).open(tmp.path()).unwrap_err();
    match &err {
        Error::MissingSegment {
            after,
            after_base,
            expected_seq,
            found,
            found_seq,
            ..
        } => {
            assert_eq!(after, &segs[1]);
            assert_eq!(*after_base, base_of(&segs[1]));
            assert_eq!(*expected_seq, 2);
            assert_eq!(found, &segs[3]);
            assert_eq!(*found_seq, 3);
        }
        other => panic!("expected MissingSegment, got {other:?}"),
    }
}

#[test]
fn format1_segment_names_are_refused_with_their_version_and_nothing_changes() {
    let current = durq::record::FORMAT_VERSION;
    for keep_lock_file in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let segs = many_segments(tmp.path(), 100);
        // Make it look like a format-1 log: BASE.seg names, version 1.
        let mut old_names = Vec::new();
        for s in &segs {
            let old = tmp.path().join(format!("{:020}.seg", base_of(s)));
            patch(s, 8, &1u32.to_le_bytes());
            fs::rename(s, &old).unwrap();
            old_names.push(old);
        }
        if !keep_lock_file {
            fs::remove_file(tmp.path().join(durq::names::LOCK_FILE)).unwrap();
            fs::remove_file(tmp.path().join(durq::names::END_HINT_FILE)).unwrap();
        }
        let before = dir_snapshot(tmp.path());
        let err = small(4096).open(tmp.path()).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedVersion { found: 1, supported, path }
                if *supported == current && path == &old_names[0]),
            "{err}"
        );
        assert_eq!(dir_snapshot(tmp.path()), before, "open changed something");
    }
}

#[test]
fn format1_name_with_a_current_header_is_corrupt_not_foreign() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = many_segments(tmp.path(), 10);
    assert_eq!(segs.len(), 1);
    let old = tmp.path().join(format!("{:020}.seg", 0));
    fs::rename(&segs[0], &old).unwrap();
    let before = dir_snapshot(tmp.path());
    let err = small(4096).open(tmp.path()).unwrap_err();
    match &err {
        Error::Corrupt { path, reason, .. } => {
            assert_eq!(path, &old);
            assert!(reason.contains("sequence number"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(dir_snapshot(tmp.path()), before);
    // Also beside a current segment (say, copied in): still refused.
    fs::copy(&old, &segs[0]).unwrap();
    let err = small(4096).open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, .. } if path == &old),
        "{err}"
    );
}

#[test]
fn two_segment_files_with_one_base_are_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let segs = many_segments(tmp.path(), 100);
    assert!(segs.len() >= 2);
    let last = segs.last().unwrap();
    let (base, seq) =
        durq::names::parse_segment_file_name(last.file_name().unwrap().to_str().unwrap()).unwrap();
    // In the same group, as the next segment of the group would be named.
    let twin = layout::group_of_file(last).join(durq::names::segment_file_name(base, seq + 1));
    fs::copy(last, &twin).unwrap();
    let err = small(4096).open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, reason, .. }
            if path == &twin && reason.contains("base offset")),
        "{err}"
    );
}

#[test]
fn last_segment_named_file_that_is_not_durq_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Log::open(tmp.path()).unwrap());
    // Named as the next segment would be, in its group: the last one, whose
    // header open reads.
    let fake = layout::group(tmp.path(), 0)
        .path
        .join(durq::names::segment_file_name(100, 1));
    fs::write(&fake, b"this is not a segment").unwrap();
    let err = Log::open(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Error::NotDurq { path, .. } if path == &fake),
        "{err}"
    );
}

fn temp_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(prefix) && name.ends_with(".tmp")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn retention_recycles_released_segment_files_as_spares() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seg = 8192u64;
    let options = small(seg)
        .background_preallocation(false)
        .retention(durq::Retention::max_bytes(3 * seg));
    let log = options.open(dir).unwrap();
    let mut next = 0u64;
    // Grow to three segments (at the bound): nothing released yet.
    while log.segments().unwrap().len() < 3 {
        assert_eq!(log.append(payload(next)).unwrap(), next);
        next += 1;
        assert!(next < 10_000);
    }
    assert!(temp_files(dir, "recycled-").is_empty());
    // The rollover to a fourth segment goes over the bound: the oldest is
    // released after the append, and kept under a temporary name.
    let oldest = segment_files(dir)[0].clone();
    let oldest_ino = fs::metadata(&oldest).unwrap().ino();
    while log.segments().unwrap().len() < 4 && log.first_offset() == 0 {
        log.append(payload(next)).unwrap();
        next += 1;
        assert!(next < 10_000);
    }
    assert!(log.first_offset() > 0, "retention released nothing");
    assert!(!oldest.exists());
    let kept = temp_files(dir, "recycled-");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(fs::metadata(&kept[0]).unwrap().ino(), oldest_ino);
    // The next rollover reuses that very file (same inode), zero-filled:
    // the new segment reads back exactly what was appended to it.
    let before = segment_files(dir);
    while segment_files(dir).iter().all(|p| before.contains(p)) {
        log.append(payload(next)).unwrap();
        next += 1;
        assert!(next < 10_000);
    }
    let newest = segment_files(dir).last().unwrap().clone();
    assert_eq!(fs::metadata(&newest).unwrap().ino(), oldest_ino);
    let first = log.first_offset();
    for off in first..next {
        assert_eq!(log.read(off).unwrap().unwrap().to_vec(), payload(off));
    }
    drop(log);
    // Nothing of it is left behind, and the log reopens clean.
    assert!(temp_files(dir, "recycled-").is_empty());
    let log = options.open(dir).unwrap();
    assert_eq!(log.end(), next);
    assert!(
        log.recovery_report().is_clean(),
        "{:?}",
        log.recovery_report()
    );
    for off in log.first_offset()..next {
        assert_eq!(log.read(off).unwrap().unwrap().to_vec(), payload(off));
    }
}

#[test]
fn a_segment_a_record_or_reader_still_uses_is_never_recycled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seg = 8192u64;
    for holder in ["record", "iter"] {
        let dir = dir.join(holder);
        let log = small(seg)
            .background_preallocation(false)
            .retention(durq::Retention::max_bytes(2 * seg))
            .open(&dir)
            .unwrap();
        log.append(b"first record, held while its segment is released")
            .unwrap();
        // A mapped record of segment 0, or an iterator positioned in it.
        let record = log.read(0).unwrap().unwrap();
        let mut iter = log.iter(0);
        assert_eq!(iter.next().unwrap().unwrap().0, 0);
        if holder == "record" {
            drop(iter);
            iter = log.iter(u64::MAX);
        }
        let mut next = 1u64;
        // Many rollovers: segment 0 is released, and many spares made.
        while log.first_offset() == 0 {
            log.append(payload(next)).unwrap();
            next += 1;
            assert!(next < 10_000, "retention never released segment 0");
        }
        for _ in 0..200 {
            log.append(payload(next)).unwrap();
            next += 1;
        }
        // Its file was deleted, not reused: what is held still reads right.
        assert_eq!(
            record.as_bytes(),
            b"first record, held while its segment is released"
        );
        if holder == "iter" {
            match iter.next() {
                Some(Ok((off, rec))) => assert_eq!(rec.to_vec(), payload(off)),
                Some(Err(e)) => panic!("held iterator broke: {e}"),
                None => {}
            }
        }
        drop((record, iter));
    }
}

// ---- the log directory's own entry is made durable when a log is created ----

#[test]
fn creating_a_log_syncs_every_directory_it_created_into_its_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.join("a").join("b").join("log");
    let storage = Hooked::default();
    let log = small(1 << 16)
        .storage(Arc::new(storage.clone()))
        .open(&dir)
        .unwrap();
    let synced = storage.synced.lock().unwrap().clone();
    // Each created directory's entry: `a` in root, `b` in a, `log` in b.
    for parent in [root.to_owned(), root.join("a"), root.join("a").join("b")] {
        assert!(
            synced.contains(&parent),
            "{parent:?} not synced: {synced:?}"
        );
    }
    log.append(b"x").unwrap();
}

/// Opens a log at `dir` with the sync of directory `failing` failing (the
/// open must fail), then again on a healthy disk; returns the log and the
/// directories the second open synced.
fn open_after_a_failed_sync_of(failing: &Path, dir: &Path) -> (Log, Vec<PathBuf>) {
    let storage = Hooked::default();
    *storage.fail_dir.lock().unwrap() = Some(failing.to_owned());
    let opts = small(1 << 16).storage(Arc::new(storage.clone()));
    let err = opts.open(dir).unwrap_err();
    assert!(err.to_string().contains("sync directory"), "{err}");
    *storage.fail_dir.lock().unwrap() = None;
    storage.synced.lock().unwrap().clear();
    let log = opts.open(dir).unwrap();
    let synced = storage.synced.lock().unwrap().clone();
    (log, synced)
}

#[test]
fn a_failed_sync_of_the_parent_is_made_again_by_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("p");
    fs::create_dir(&parent).unwrap();
    let dir = parent.join("log");
    // The first open fails at that sync, leaving the directory behind; the
    // next (the disk healthy again) must still make its entry durable
    // before the log is used.
    let (log, synced) = open_after_a_failed_sync_of(&parent, &dir);
    assert!(synced.contains(&parent), "{synced:?}");
    assert_eq!(log.append(b"x").unwrap(), 0);
}

#[test]
fn ancestors_made_by_an_open_that_failed_are_synced_by_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("other"), b"not made for the log").unwrap();
    let dir = root.join("a").join("b").join("log");
    // The sync that makes `b`'s entry in `a` durable fails: `a`, `b` and
    // the log directory exist, not durably.
    let (log, synced) = open_after_a_failed_sync_of(&root.join("a"), &dir);
    // `a` in root, `b` in a, `log` in b.
    for parent in [root.clone(), root.join("a"), root.join("a").join("b")] {
        assert!(
            synced.contains(&parent),
            "{parent:?} not synced: {synced:?}"
        );
    }
    // `root` holds something else: it was not made for the log, and the
    // walk stopped there.
    assert!(!synced.contains(&tmp.path().to_owned()), "{synced:?}");
    assert_eq!(log.append(b"x").unwrap(), 0);
}

#[test]
fn a_log_in_a_directory_someone_else_made_gets_its_entry_synced_too() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("made-by-mkdir");
    fs::create_dir(&dir).unwrap();
    let storage = Hooked::default();
    let opts = small(1 << 16).storage(Arc::new(storage.clone()));
    drop(opts.open(&dir).unwrap());
    assert!(
        storage
            .synced
            .lock()
            .unwrap()
            .contains(&tmp.path().to_owned())
    );
    // Reopening an existing log does not: its entry was synced when it was
    // created.
    storage.synced.lock().unwrap().clear();
    drop(opts.open(&dir).unwrap());
    assert!(
        !storage
            .synced
            .lock()
            .unwrap()
            .contains(&tmp.path().to_owned())
    );
}

// ---- closing while a spare segment is being prepared ----

#[test]
fn closing_stops_a_spare_being_prepared_instead_of_finishing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = Hooked::default();
    // 8 MiB segments: a spare is 8 chunks of zeros (1 MiB each), 1.6 s here.
    let opts = small(8 << 20).storage(Arc::new(storage.clone()));
    let log = opts.open(tmp.path()).unwrap();
    storage.slow_spares.store(true, Ordering::SeqCst);
    // Past half full: the writer starts preparing the next segment.
    let big = vec![7u8; 1 << 20];
    for _ in 0..5 {
        log.append(&big).unwrap();
    }
    drop(log);
    assert_eq!(
        storage.spare_opens.load(Ordering::SeqCst),
        1,
        "one spare was being prepared"
    );
    let written = storage.spare_writes.load(Ordering::SeqCst);
    assert!(
        written < 8,
        "closing waited for the whole spare to be zero-filled ({written} chunks)"
    );
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    let log = small(8 << 20).open(tmp.path()).unwrap();
    assert_eq!(log.end(), 5);
    assert_eq!(log.read(4).unwrap().unwrap().as_ref(), &big[..]);
}

// ---- the last sequence number ----

/// A segment carrying the last sequence number the format allows (only a
/// crafted or damaged log can): filling it cannot create a next segment,
/// so appends fail with a clear error and the log still opens with every
/// record that was acknowledged.
#[test]
fn a_segment_with_the_last_sequence_number_refuses_to_roll_over() {
    let tmp = tempfile::tempdir().unwrap();
    let seg_size = 1u64 << 12;
    drop(small(seg_size).open(tmp.path()).unwrap());
    let files = segment_files(tmp.path());
    let [only] = &files[..] else {
        panic!("one segment expected: {files:?}");
    };
    let last_seq = durq::record::MAX_COUNTER - 1;
    let mut bytes = fs::read(only).unwrap();
    let mut header = durq::record::SegmentHeader::decode(&bytes).unwrap();
    header.seq = last_seq;
    bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
    // It lives in its own group (number `last_seq / 64`), the log's only
    // one, named after base offset 0.
    fs::remove_file(only).unwrap();
    fs::remove_dir(layout::group_of_file(only)).unwrap();
    let group = tmp.path().join(durq::names::group_dir_name(
        0,
        durq::names::group_of(last_seq),
    ));
    fs::create_dir(&group).unwrap();
    fs::write(
        group.join(durq::names::segment_file_name(0, last_seq)),
        &bytes,
    )
    .unwrap();

    let log = small(seg_size).open(tmp.path()).unwrap();
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200u64 {
        match log.append(payload(i)) {
            Ok(off) => acked.push((off, payload(i))),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("a 4 KiB segment cannot take 200 records");
    assert!(err.to_string().contains("sequence"), "{err}");
    drop(log);

    let log = small(seg_size)
        .open(tmp.path())
        .expect("the log still opens");
    assert_eq!(log.end(), acked.len() as u64);
    for (off, p) in &acked {
        assert_eq!(log.read(*off).unwrap().as_deref(), Some(&p[..]));
    }
}

// ---- the grouped layout (format 3): segments in group directories of 64 ----

/// A payload this large leaves no room for a second record in a
/// [`durq::MIN_SEGMENT_SIZE`] segment: record `i` is alone in segment `i`,
/// whose base offset is `i`.
fn one_per_segment(i: u64) -> Vec<u8> {
    let mut v = vec![i as u8 | 1; 2000];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn grouped_opts() -> Options {
    small(durq::MIN_SEGMENT_SIZE)
}

/// A log in `dir` of exactly `n` segments, segment `i` holding record `i`
/// alone; returns its segment files, oldest first.
fn grouped_log(dir: &Path, n: u64) -> Vec<PathBuf> {
    let log = grouped_opts().open(dir).unwrap();
    assert_eq!(log.append_batch((0..n).map(one_per_segment)).unwrap(), 0..n);
    drop(log);
    let segs = segment_files(dir);
    assert_eq!(segs.len() as u64, n, "one record per segment");
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(layout::parse(s), (i as u64, i as u64));
    }
    segs
}

/// Every record of `grouped_log` in `[from, to)` reads back.
fn assert_readable(log: &Log, from: u64, to: u64) {
    for i in from..to {
        assert_eq!(
            log.read(i).unwrap().as_deref(),
            Some(&one_per_segment(i)[..]),
            "record {i}"
        );
    }
}

/// Copies the directory tree `from` to `to` (which must not exist).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn two_hundred_segments_fill_groups_of_64_and_reopen_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let segs = grouped_log(dir, 200);
    let groups = layout::groups(dir);
    assert_eq!(
        groups.iter().map(|g| g.number).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    for g in &groups {
        // Named after its first segment's base offset (here = its number).
        let first_seq = g.number * 64;
        assert_eq!(
            g.path.file_name().unwrap().to_str().unwrap(),
            durq::names::group_dir_name(first_seq, g.number)
        );
        let inside = layout::segments_in(&g.path);
        let want = if g.number < 3 { 64 } else { 200 - 192 };
        assert_eq!(inside.len(), want, "group {}", g.number);
        for (k, s) in inside.iter().enumerate() {
            let seq = first_seq + k as u64;
            assert_eq!(layout::parse(s), (seq, seq));
            assert_eq!(durq::names::group_of(seq), g.number);
        }
        // Nothing else in a group.
        assert_eq!(layout::entries(&g.path).len(), want, "group {}", g.number);
    }
    // No segment lies directly in the log directory.
    assert!(
        layout::entries(dir)
            .iter()
            .all(|n| durq::names::parse_segment_file_name(n).is_none()),
        "{:?}",
        layout::entries(dir)
    );

    let log = grouped_opts().open(dir).unwrap();
    let report = log.recovery_report();
    assert_eq!(report.segments, 200);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.first_offset, report.end_offset), (0, 200));
    assert_eq!((log.first_offset(), log.end()), (0, 200));
    assert_readable(&log, 0, 200);
    let listed: Vec<PathBuf> = log
        .segments()
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(listed, segs);
    // Appending goes on in the last group.
    assert_eq!(log.append(one_per_segment(200)).unwrap(), 200);
    assert_eq!(layout::segments_in(&layout::group(dir, 3).path).len(), 9);
}

#[test]
fn the_first_segment_of_a_group_starts_a_new_group_directory_at_rollover() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    grouped_log(dir, 64);
    assert_eq!(layout::group_numbers(dir), vec![0]);
    let log = grouped_opts().open(dir).unwrap();
    assert_eq!(log.append(one_per_segment(64)).unwrap(), 64);
    // Segment 64 went into group 1, named after its base offset.
    assert_eq!(layout::group_numbers(dir), vec![0, 1]);
    assert_eq!(
        layout::segment_path(dir, 64, 64),
        dir.join(durq::names::group_dir_name(64, 1))
            .join(durq::names::segment_file_name(64, 64))
    );
    drop(log);
    let log = grouped_opts().open(dir).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{:?}",
        log.recovery_report()
    );
    assert_eq!(log.recovery_report().segments, 65);
    assert_readable(&log, 0, 65);
}

#[test]
fn open_lists_only_the_log_directory_and_the_first_and_last_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    grouped_log(dir, 200);
    let g: Vec<PathBuf> = layout::groups(dir).into_iter().map(|g| g.path).collect();
    assert_eq!(g.len(), 4);
    let storage = Hooked::default();
    let log = grouped_opts()
        .storage(Arc::new(storage.clone()))
        .open(dir)
        .unwrap();
    assert_eq!(log.end(), 200);
    assert_eq!(log.recovery_report().segments, 200);
    assert_eq!(storage.lists_of(dir), 1, "{:?}", storage.listed);
    assert_eq!(storage.lists_of(&g[0]), 1, "{:?}", storage.listed);
    assert_eq!(storage.lists_of(&g[3]), 1, "{:?}", storage.listed);
    for middle in &g[1..3] {
        assert_eq!(storage.lists_of(middle), 0, "{:?}", storage.listed);
        assert!(storage.opened_under(middle).is_empty());
    }
    // No group directory but those was listed (nor anything in them).
    let all = storage.listed.lock().unwrap().clone();
    for d in &all {
        assert!(
            d == dir || d == &g[0] || d == &g[3] || !d.starts_with(dir) || {
                d.parent() == Some(dir)
                    && durq::names::parse_group_dir_name(d.file_name().unwrap().to_str().unwrap())
                        .is_none()
            },
            "open listed {d:?}"
        );
    }
    // Of the segment files, open opened the last one only.
    assert_eq!(
        storage
            .opened_under(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect::<Vec<_>>(),
        vec![layout::segment_path(dir, 199, 199)]
    );

    // Reading an offset of group 1 lists it, once.
    assert_readable(&log, 70, 71);
    assert_eq!(storage.lists_of(&g[1]), 1);
    assert_readable(&log, 64, 128);
    assert_eq!(storage.lists_of(&g[1]), 1);
    assert_eq!(storage.lists_of(&g[2]), 0, "group 2 listed by reads in 1");
    // Reads in the first and last groups list nothing again.
    assert_readable(&log, 0, 64);
    assert_readable(&log, 192, 200);
    assert_eq!(storage.lists_of(&g[0]), 1);
    assert_eq!(storage.lists_of(&g[3]), 1);
    assert_eq!(storage.lists_of(dir), 1);
    // The whole segment table lists what is left, once.
    assert_eq!(log.segments().unwrap().len(), 200);
    assert_eq!(storage.lists_of(&g[2]), 1);
    assert_eq!(log.segments().unwrap().len(), 200);
    for d in &g {
        assert_eq!(storage.lists_of(d), 1, "{d:?}");
    }
}

#[test]
fn an_empty_trailing_group_left_by_a_rollover_is_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    grouped_log(dir, 64);
    // The rollover to segment 64 made its group and crashed before the
    // segment was renamed into it.
    let empty = dir.join(durq::names::group_dir_name(64, 1));
    fs::create_dir(&empty).unwrap();
    let log = grouped_opts().open(dir).unwrap();
    assert_eq!(
        log.recovery_report().removed_temp_files,
        vec![empty.clone()]
    );
    assert!(!empty.exists());
    assert_eq!(layout::group_numbers(dir), vec![0]);
    assert_eq!(log.recovery_report().segments, 64);
    assert_eq!((log.first_offset(), log.end()), (0, 64));
    assert_readable(&log, 0, 64);
    // The next rollover makes it again.
    assert_eq!(log.append(one_per_segment(64)).unwrap(), 64);
    assert_eq!(layout::segment_path(dir, 64, 64).parent(), Some(&*empty));
    drop(log);
    let log = grouped_opts().open(dir).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{:?}",
        log.recovery_report()
    );
    assert_readable(&log, 0, 65);
}

#[test]
fn an_empty_leading_group_left_by_retention_is_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let segs = grouped_log(dir, 70);
    // Retention deleted every segment of group 0 and crashed before it
    // removed the group.
    for s in &segs[..64] {
        fs::remove_file(s).unwrap();
    }
    let empty = layout::group(dir, 0).path;
    assert!(layout::entries(&empty).is_empty());
    let log = grouped_opts().open(dir).unwrap();
    assert_eq!(
        log.recovery_report().removed_temp_files,
        vec![empty.clone()]
    );
    assert!(!empty.exists());
    assert_eq!(layout::group_numbers(dir), vec![1]);
    assert_eq!(log.recovery_report().segments, 6);
    assert_eq!(log.recovery_report().first_offset, 64);
    assert_eq!((log.first_offset(), log.end()), (64, 70));
    assert!(log.read(63).unwrap().is_none());
    assert_readable(&log, 64, 70);
    drop(log);
    let log = grouped_opts().open(dir).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{:?}",
        log.recovery_report()
    );
    assert_eq!(log.first_offset(), 64);
}

#[test]
fn an_empty_leading_or_trailing_group_holding_a_foreign_file_fails_open() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let segs = grouped_log(&template, 70);
    for leading in [true, false] {
        let dir = tmp
            .path()
            .join(if leading { "leading" } else { "trailing" });
        copy_tree(&template, &dir);
        let group = if leading {
            // Group 0 emptied of its segments, but someone's file in it.
            for s in &segs[..64] {
                fs::remove_file(dir.join(s.strip_prefix(&template).unwrap())).unwrap();
            }
            layout::group(&dir, 0).path
        } else {
            let g = dir.join(durq::names::group_dir_name(128, 2));
            fs::create_dir(&g).unwrap();
            g
        };
        let foreign = group.join("notes.txt");
        fs::write(&foreign, b"mine").unwrap();
        let before = dir_snapshot(&dir);
        let err = grouped_opts().open(&dir).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { path, .. } if path == &foreign),
            "leading {leading}: {err}"
        );
        assert!(err.to_string().contains(foreign.to_str().unwrap()), "{err}");
        assert_eq!(dir_snapshot(&dir), before, "open changed something");
    }
}

/// Makes every sealed segment's header garbage: an open that read any of
/// them would fail with `NotDurq`.
fn garble_sealed_headers(segs: &[PathBuf]) {
    for s in &segs[..segs.len() - 1] {
        if s.exists() {
            patch(s, 0, b"garbage!");
        }
    }
}

/// Checks that `err` reports segment `gone` (of a log where segment `i` is
/// `segs[i]` and has base offset `i`) missing from `group`, after segment
/// `after` (or the group's start) and before `found` (or the group's end).
fn assert_missing_segment(
    err: &Error,
    group: &Path,
    segs: &[PathBuf],
    (gone, after, found): (u64, Option<u64>, Option<u64>),
) {
    let Error::MissingSegment {
        dir: in_dir,
        after: after_path,
        after_base,
        expected_seq,
        found: found_path,
        found_seq,
    } = err
    else {
        panic!("segment {gone} removed: expected MissingSegment, got {err:?}");
    };
    assert_eq!(in_dir, group, "{err}");
    assert_eq!(*expected_seq, gone, "{err}");
    match after {
        Some(a) => {
            assert_eq!(after_path, &segs[a as usize], "{err}");
            assert_eq!(*after_base, a, "{err}");
        }
        None => assert_eq!(after_path, group, "{err}"),
    }
    match found {
        Some(f) => {
            assert_eq!(found_path, &segs[f as usize], "{err}");
            assert_eq!(*found_seq, f, "{err}");
        }
        None => assert_eq!(*found_seq, gone + 1, "{err}"),
    }
}

/// A copy of the `grouped_log` at `template` (whose segment files are
/// `segs`) beside it, without segment `gone`: its directory, its segment
/// paths (the removed one included) and the removed segment's group.
fn copy_without(template: &Path, segs: &[PathBuf], gone: u64) -> (PathBuf, Vec<PathBuf>, PathBuf) {
    let dir = template.with_file_name(format!("gone-{gone}"));
    copy_tree(template, &dir);
    let segs: Vec<PathBuf> = segs
        .iter()
        .map(|s| dir.join(s.strip_prefix(template).unwrap()))
        .collect();
    let group = layout::group_of_file(&segs[gone as usize]).to_owned();
    fs::remove_file(&segs[gone as usize]).unwrap();
    (dir, segs, group)
}

#[test]
fn a_missing_segment_in_the_first_or_last_group_is_detected_from_the_names_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let segs = grouped_log(&template, 200);
    // (segment removed, the segment before the gap, what comes after it)
    let cases: [(u64, Option<u64>, Option<u64>); 4] = [
        // Inside the first group.
        (2, Some(1), Some(3)),
        // The first group's last: the group is not full.
        (63, Some(62), None),
        // The last group's first: the group does not start at 64 × 3.
        (192, None, Some(193)),
        // Inside the last group.
        (195, Some(194), Some(196)),
    ];
    for (gone, after, found) in cases {
        let (dir, segs, group) = copy_without(&template, &segs, gone);
        garble_sealed_headers(&segs);
        let before = dir_snapshot(&dir);
        let err = grouped_opts().open(&dir).unwrap_err();
        assert_missing_segment(&err, &group, &segs, (gone, after, found));
        assert_eq!(dir_snapshot(&dir), before, "open changed something");
    }
}

#[test]
fn a_missing_group_number_fails_open_naming_the_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let segs = grouped_log(&dir, 200);
    let g = layout::groups(&dir);
    fs::rename(&g[1].path, tmp.path().join("elsewhere")).unwrap();
    let segs: Vec<PathBuf> = segs.into_iter().filter(|s| s.exists()).collect();
    garble_sealed_headers(&segs);
    let before = dir_snapshot(&dir);
    let err = grouped_opts().open(&dir).unwrap_err();
    match &err {
        Error::MissingSegment {
            dir: in_dir,
            after,
            after_base,
            expected_seq,
            found,
            found_seq,
        } => {
            assert_eq!(in_dir, &dir);
            assert_eq!(after, &g[0].path);
            assert_eq!(*after_base, 0);
            assert_eq!(*expected_seq, 64);
            assert_eq!(found, &g[2].path);
            assert_eq!(*found_seq, 128);
        }
        other => panic!("expected MissingSegment, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(g[0].path.to_str().unwrap()) && msg.contains(g[2].path.to_str().unwrap()),
        "{msg}"
    );
    assert_eq!(dir_snapshot(&dir), before, "open changed something");
}

#[test]
fn a_segment_missing_inside_a_middle_group_is_found_on_first_read_there() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let segs = grouped_log(&template, 200);
    // (segment removed, the segment before the gap, what comes after it)
    let cases: [(u64, Option<u64>, Option<u64>); 3] = [
        (70, Some(69), Some(71)),
        // The group's first: it does not start at 64 × 1.
        (64, None, Some(65)),
        // The group's last: it is not full.
        (127, Some(126), None),
    ];
    for (gone, after, found) in cases {
        let (dir, segs, group) = copy_without(&template, &segs, gone);
        let log = grouped_opts().open(&dir).unwrap();
        assert_eq!(log.end(), 200);
        assert_eq!(log.recovery_report().segments, 200);
        let check = |err: Error| assert_missing_segment(&err, &group, &segs, (gone, after, found));
        // The other groups read fine, before and after.
        assert_readable(&log, 0, 64);
        assert_readable(&log, 128, 200);
        // Reading anywhere in the group fails, every time.
        for off in [100, 65, 64, 126, 100] {
            check(log.read(off).unwrap_err());
        }
        check(log.segments().unwrap_err());
        let err = log.iter(0).find_map(|r| r.err()).expect("iteration fails");
        check(err);
        check(log.scan(0, |_, _| ControlFlow::Continue(())).unwrap_err());
        assert_readable(&log, 192, 200);
        // Appends go on regardless.
        assert_eq!(log.append(b"x").unwrap(), 200);
    }
}

#[test]
fn retention_by_acknowledgement_removes_emptied_group_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = grouped_opts().retention(durq::Retention::acked_by_all());
    {
        let log = opts.open(dir).unwrap();
        log.consumer("c").unwrap();
    }
    // 200 segments, written without retention; reopened with it (the
    // middle groups unlisted).
    {
        let log = grouped_opts().open(dir).unwrap();
        assert_eq!(
            log.append_batch((0..200).map(one_per_segment)).unwrap(),
            0..200
        );
    }
    let g = layout::groups(dir);
    assert_eq!(g.len(), 4);
    let log = opts.open(dir).unwrap();
    let c = log.consumer("c").unwrap();
    // Everything below 150 acknowledged: segments 0..150 go, and with them
    // groups 0 and 1.
    c.ack_until(150).unwrap();
    assert_eq!(log.first_offset(), 150);
    assert_eq!(layout::group_numbers(dir), vec![2, 3]);
    for gone in &g[..2] {
        assert!(!gone.path.exists(), "{:?} left behind", gone.path);
    }
    // No group directory, empty or not, is left but those two.
    assert_eq!(
        layout::entries(dir)
            .iter()
            .filter(|n| n.ends_with(".group"))
            .count(),
        2
    );
    assert_eq!(
        layout::segment_files(dir),
        (150..200)
            .map(|i| layout::segment_path(dir, i, i))
            .collect::<Vec<_>>()
    );
    assert_readable(&log, 150, 200);
    assert!(log.read(149).unwrap().is_none());
    drop((c, log));
    let log = opts.open(dir).unwrap();
    assert_eq!((log.first_offset(), log.end()), (150, 200));
    assert_eq!(log.recovery_report().first_offset, 150);
    assert_eq!(log.recovery_report().segments, 50);
    assert!(
        log.recovery_report().removed_temp_files.is_empty(),
        "{:?}",
        log.recovery_report()
    );
    assert_readable(&log, 150, 200);
    // Acknowledging up to the last segment empties group 2 too.
    log.consumer("c").unwrap().ack_until(199).unwrap();
    assert_eq!(log.first_offset(), 199);
    assert_eq!(layout::group_numbers(dir), vec![3]);
    assert_eq!(
        layout::segment_files(dir),
        vec![layout::segment_path(dir, 199, 199)]
    );
    drop(log);
    let log = opts.open(dir).unwrap();
    assert_eq!((log.first_offset(), log.end()), (199, 200));
    assert_readable(&log, 199, 200);
}

#[test]
fn size_bound_retention_works_across_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seg = durq::MIN_SEGMENT_SIZE;
    grouped_log(dir, 200);
    // Reopened with a bound of 20 segments: the middle groups are listed
    // to count them, and everything but the newest 20 goes.
    let opts = grouped_opts()
        .background_preallocation(false)
        .retention(durq::Retention::max_bytes(20 * seg));
    let log = opts.open(dir).unwrap();
    let deleted = log.apply_retention().unwrap();
    assert_eq!(deleted.len(), 180, "{deleted:?}");
    assert_eq!(log.first_offset(), 180);
    assert_eq!(layout::group_numbers(dir), vec![2, 3]);
    assert_eq!(
        layout::segment_files(dir),
        (180..200)
            .map(|i| layout::segment_path(dir, i, i))
            .collect::<Vec<_>>()
    );
    assert_readable(&log, 180, 200);
    // Appending on: the bound holds through the next group boundary, and
    // group 2 goes once emptied.
    let mut next = 200;
    while next < 300 {
        assert_eq!(log.append(one_per_segment(next)).unwrap(), next);
        next += 1;
        let files = layout::segment_files(dir);
        assert!(files.len() <= 20, "{} segments at {next}", files.len());
        // Every group holds a segment: none is left empty.
        for g in layout::groups(dir) {
            assert!(
                !layout::segments_in(&g.path).is_empty(),
                "empty group {:?} at {next}",
                g.path
            );
        }
    }
    assert_eq!(log.first_offset(), 280);
    assert_eq!(layout::group_numbers(dir), vec![4]);
    assert_readable(&log, 280, 300);
    drop(log);
    let log = opts.open(dir).unwrap();
    assert_eq!((log.first_offset(), log.end()), (280, 300));
    assert_eq!(log.recovery_report().segments, 20);
    assert!(
        log.recovery_report().is_clean(),
        "{:?}",
        log.recovery_report()
    );
    assert_readable(&log, 280, 300);
}

/// Rewrites the header of `seg` to say format version `version`, with a
/// header CRC that matches (bytes 8..12 and 60..64, see
/// `SegmentHeader::encode`).
fn set_header_version(seg: &Path, version: u32) {
    let mut bytes = fs::read(seg).unwrap();
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    fs::write(seg, bytes).unwrap();
}

#[test]
fn a_format2_log_with_segments_directly_in_its_directory_is_refused_and_unchanged() {
    let current = durq::record::FORMAT_VERSION;
    assert_eq!(current, 3);
    for keep_lock_file in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let segs = many_segments(dir, 100);
        assert!(segs.len() > 2);
        // As format 2 kept them: BASE-SEQ.seg directly in the directory,
        // headers saying version 2, no group directory.
        let mut flat = Vec::new();
        for s in &segs {
            let to = dir.join(s.file_name().unwrap());
            fs::rename(s, &to).unwrap();
            set_header_version(&to, 2);
            flat.push(to);
        }
        for g in layout::groups(dir) {
            fs::remove_dir(&g.path).unwrap();
        }
        if !keep_lock_file {
            fs::remove_file(dir.join(durq::names::LOCK_FILE)).unwrap();
            fs::remove_file(dir.join(durq::names::END_HINT_FILE)).unwrap();
        }
        let before = dir_snapshot(dir);
        let err = small(4096).open(dir).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedVersion { found: 2, supported, path }
                if *supported == current && path == &flat[0]),
            "{err}"
        );
        assert_eq!(dir_snapshot(dir), before, "open changed something");
    }
    // One segment moved out of its group, beside a current log: refused
    // the same way, nothing changed.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let segs = many_segments(dir, 100);
    let to = dir.join(segs[1].file_name().unwrap());
    fs::rename(&segs[1], &to).unwrap();
    set_header_version(&to, 2);
    let before = dir_snapshot(dir);
    let err = small(4096).open(dir).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedVersion { found: 2, path, .. } if path == &to),
        "{err}"
    );
    assert_eq!(dir_snapshot(dir), before, "open changed something");
}

#[test]
fn a_current_segment_lying_directly_in_the_log_directory_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let segs = many_segments(dir, 100);
    let last = segs.last().unwrap();
    let flat = dir.join(last.file_name().unwrap());
    fs::rename(last, &flat).unwrap();
    let before = dir_snapshot(dir);
    let err = small(4096).open(dir).unwrap_err();
    match &err {
        Error::Corrupt { path, reason, .. } => {
            assert_eq!(path, &flat);
            assert!(reason.contains("group"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(dir_snapshot(dir), before, "open changed something");
}

#[test]
fn files_durq_did_not_make_inside_a_group_are_reported_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    grouped_log(dir, 70);
    let notes: Vec<PathBuf> = [0, 1]
        .iter()
        .map(|&n| layout::group(dir, n).path.join("notes.txt"))
        .collect();
    for n in &notes {
        fs::write(n, b"mine").unwrap();
    }
    let log = grouped_opts().open(dir).unwrap();
    assert_eq!(log.recovery_report().unknown_files, notes);
    assert_readable(&log, 0, 70);
    drop(log);
    for n in &notes {
        assert_eq!(fs::read(n).unwrap(), b"mine");
    }
}

#[test]
fn readers_writer_and_retention_race_across_unlisted_groups() {
    // A reopened 200-segment log (groups 1 and 2 unlisted) where, at once,
    // readers read at random offsets (listing middle groups lazily), a
    // consumer acknowledges forward so that retention deletes from the front
    // (listing each group as it becomes the first) and removes emptied
    // groups, and the writer appends segments into new groups. Every read
    // returns the record written at its offset; a read may fail or find
    // nothing only for an offset retention has deleted by then.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let log = grouped_opts().open(dir).unwrap();
        log.consumer("c").unwrap();
    }
    grouped_log_append(dir, 200);
    let log = grouped_opts()
        .retention(durq::Retention::acked_by_all())
        .open(dir)
        .unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let log = &log;
            let done = &done;
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t;
                let mut reads = 0u64;
                while !done.load(Ordering::Relaxed) || reads < 1000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (first, end) = (log.first_offset(), log.end());
                    let off = first + x % (end - first).max(1);
                    match log.read(off) {
                        Ok(Some(rec)) => assert_eq!(&rec[..], &one_per_segment(off)[..], "{off}"),
                        Ok(None) => assert!(off < log.first_offset(), "{off} not found"),
                        Err(e) => assert!(
                            off < log.first_offset(),
                            "read of {off} failed although it is retained: {e}"
                        ),
                    }
                    reads += 1;
                }
            });
        }
        let log2 = &log;
        let done2 = &done;
        s.spawn(move || {
            let c = log2.consumer("c").unwrap();
            let mut acked = 0;
            while !done2.load(Ordering::Relaxed) {
                let end = log2.end();
                if acked + 3 < end {
                    acked += 3;
                    c.ack_until(acked).unwrap();
                }
                std::thread::yield_now();
            }
        });
        for i in 200..500 {
            assert_eq!(log.append(one_per_segment(i)).unwrap(), i);
        }
        done.store(true, Ordering::Relaxed);
    });
    log.apply_retention().unwrap();
    let first = log.first_offset();
    assert!(first > 200, "retention kept up: first offset {first}");
    assert_readable(&log, first, 500);
    drop(log);
    // Every group before the first retained segment's is gone.
    let segs = segment_files(dir);
    assert_eq!(layout::parse(&segs[0]).0, first);
    let first_group = layout::group_of_file(&segs[0]).to_owned();
    assert_eq!(layout::groups(dir)[0].path, first_group);
    let log = grouped_opts().open(dir).unwrap();
    assert_eq!(log.first_offset(), first);
    assert_readable(&log, first, 500);
}

/// Appends records `n` more one-per-segment records to the log in `dir`.
fn grouped_log_append(dir: &Path, n: u64) {
    let log = grouped_opts().open(dir).unwrap();
    let end = log.end();
    assert_eq!(
        log.append_batch((end..end + n).map(one_per_segment))
            .unwrap(),
        end..end + n
    );
}

#[test]
fn retention_stops_after_a_failed_group_sync_until_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let storage = Hooked::default();
    let opts = grouped_opts()
        .retention(durq::Retention::acked_by_all())
        .storage(Arc::new(storage.clone()));
    let log = opts.open(dir).unwrap();
    let c = log.consumer("c").unwrap();
    assert_eq!(
        log.append_batch((0..10).map(one_per_segment)).unwrap(),
        0..10
    );
    let group0 = layout::groups(dir)[0].path.clone();
    *storage.fail_dir.lock().unwrap() = Some(group0.clone());
    // The acknowledgement is durable; the retention it triggers fails at
    // the group's sync after the first deletion (best effort on this path).
    c.ack_until(5).unwrap();
    let err = log.apply_retention().unwrap_err();
    assert!(matches!(err, Error::RetentionStopped { .. }), "{err}");
    assert!(err.to_string().contains("sync directory"), "{err}");
    // Stopped for good in this log, even with the disk healthy again: the
    // first deletion may not be durable, so no later one is made.
    *storage.fail_dir.lock().unwrap() = None;
    c.ack_until(8).unwrap();
    assert!(matches!(
        log.apply_retention(),
        Err(Error::RetentionStopped { .. })
    ));
    assert_eq!(log.first_offset(), 1, "only the first deletion was made");
    assert_eq!(segment_files(dir).len(), 9);
    // Appends and reads go on.
    assert_eq!(log.append(one_per_segment(10)).unwrap(), 10);
    assert_readable(&log, 1, 11);
    drop((c, log));
    // A reopened log retains again.
    let log = opts.open(dir).unwrap();
    assert_eq!(log.apply_retention().unwrap().len(), 7);
    assert_eq!(log.first_offset(), 8);
    assert_readable(&log, 8, 11);
}
