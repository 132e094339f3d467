//! Injected faults on the simulated disk: a full disk while creating a
//! segment or a client, EIO on fsync, bit rot on read.

#[path = "support/simdisk.rs"]
mod simdisk;

#[path = "support/layout.rs"]
mod layout;

use std::path::Path;
use std::sync::Arc;

use durq::{Error, Log, Options};
use simdisk::SimDisk;

const DIR: &str = "/log";

fn opts(disk: &SimDisk) -> Options {
    Options::new()
        .segment_size(4096)
        .background_preallocation(false)
        .storage(Arc::new(disk.clone()))
}

fn open(disk: &SimDisk) -> Log {
    opts(disk).open(DIR).unwrap()
}

#[test]
fn disk_full_at_rollover_fails_cleanly_and_the_log_recovers_when_space_returns() {
    let disk = SimDisk::new(1);
    let log = open(&disk);
    // Fill the first segment (no new file needed yet).
    let mut n = 0u64;
    while log.segments().unwrap().len() == 1 && n < 10 {
        log.append(vec![1u8; 900]).unwrap();
        n += 1;
    }
    let end = log.end();
    disk.set_disk_full(true);
    // Appends that need a new segment fail without poisoning the log.
    let mut failures = 0;
    for _ in 0..5 {
        match log.append(vec![2u8; 900]) {
            Err(Error::AppendFailed { reason }) => {
                assert!(
                    reason.contains("next segment") || reason.contains("segment"),
                    "{reason}"
                );
                failures += 1;
            }
            Ok(_) => {} // fitted in the current segment
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(failures > 0, "no append needed a new segment");
    assert!(log.poisoned().is_none());
    assert!(
        !disk.list(DIR).iter().any(|f| f.ends_with(".tmp")),
        "temp files left behind: {:?}",
        disk.list(DIR)
    );
    disk.set_disk_full(false);
    let next = log.append(b"after space returned").unwrap();
    let after = log.end();
    assert_eq!(after, next + 1);
    // Offsets stay dense: everything below the end reads back.
    for o in 0..after {
        assert!(log.read(o).unwrap().is_some(), "hole at {o}");
    }
    assert!(after > end);
    drop(log);
    disk.power_loss();
    let log = open(&disk);
    assert_eq!(log.end(), after);
    assert_eq!(
        log.read(next).unwrap().unwrap().to_vec(),
        b"after space returned"
    );
}

#[test]
fn disk_full_when_registering_a_client_fails_cleanly() {
    let disk = SimDisk::new(2);
    let log = open(&disk);
    log.append(b"x").unwrap();
    disk.set_disk_full(true);
    let err = log.consumer("late").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(log.consumers().unwrap().is_empty());
    disk.set_disk_full(false);
    assert!(
        disk.list(Path::new(DIR).join("clients")).is_empty(),
        "{:?}",
        disk.list(Path::new(DIR).join("clients"))
    );
    let c = log.consumer("late").unwrap();
    c.next().unwrap().unwrap().ack().unwrap();
    drop((c, log));
    disk.power_loss();
    let log = open(&disk);
    assert_eq!(log.consumer("late").unwrap().acked(), 1);
}

#[test]
fn eio_on_fsync_poisons_appends_and_nothing_unsynced_is_reported_durable() {
    let disk = SimDisk::new(3);
    let log = open(&disk);
    log.append(b"durable").unwrap();
    disk.fail_sync_at(1);
    let err = log.append(b"lost").unwrap_err();
    assert!(
        matches!(&err, Error::Poisoned { reason } if reason.contains("fdatasync")),
        "{err}"
    );
    assert!(matches!(
        log.append(b"refused"),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(log.end(), 1);
    drop(log);
    disk.power_loss();
    let log = open(&disk);
    // The failed sync dropped the write for good (Linux semantics): gone.
    assert_eq!(log.end(), 1);
    assert_eq!(log.read(0).unwrap().unwrap().to_vec(), b"durable");
    log.append(b"works again").unwrap();
}

#[test]
fn eio_on_journal_fsync_fails_the_ack_and_the_message_comes_again() {
    let disk = SimDisk::new(4);
    let log = open(&disk);
    log.append(b"m0").unwrap();
    log.append(b"m1").unwrap();
    let c = log.consumer("c").unwrap();
    c.next().unwrap().unwrap().ack().unwrap();
    let m = c.next().unwrap().unwrap();
    disk.fail_sync_at(1);
    assert!(m.ack().is_err());
    drop((c, log));
    disk.power_loss();
    let log = open(&disk);
    let c = log.consumer("c").unwrap();
    assert_eq!(c.acked(), 1);
    assert_eq!(c.next().unwrap().unwrap().payload(), b"m1");
}

#[test]
fn bit_flip_on_read_is_reported_with_file_and_position() {
    let disk = SimDisk::new(5);
    let log = open(&disk);
    for i in 0..3u8 {
        log.append([i; 40]).unwrap();
    }
    // The first segment, in the first group (both named after offset 0).
    let seg = layout::expected_path(Path::new(DIR), 0, 0, 0);
    assert_eq!(log.segments().unwrap()[0].path, seg);
    // Record 1 starts at 64 + 24 + 40 = 128; flip a payload byte.
    disk.flip_bit_on_read(&seg, 128 + 24 + 5, 3).unwrap();
    match log.read(1) {
        Err(Error::Corrupt { path, position, .. }) => {
            assert_eq!(path, seg);
            assert_eq!(position, 128);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(log.read(2).unwrap().unwrap().to_vec(), vec![2u8; 40]);
    // In the active segment the damage is not a torn tail: open refuses,
    // naming the file and position, rather than cutting records 1 and 2.
    drop(log);
    match opts(&disk).open(DIR) {
        Err(Error::Corrupt { path, position, .. }) => assert_eq!((path, position), (seg, 128)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn disk_full_during_a_journal_fold_fails_that_ack_cleanly() {
    let disk = SimDisk::new(6);
    let log = Options::new()
        .segment_size(1 << 20)
        .background_preallocation(false)
        .storage(Arc::new(disk.clone()))
        .open(DIR)
        .unwrap();
    let entries = durq::cursor::JOURNAL_LEN / durq::cursor::JOURNAL_ENTRY_LEN as u64;
    log.append_batch((0..entries + 10).map(|i| i.to_le_bytes()))
        .unwrap();
    let c = log.consumer("c").unwrap();
    for _ in 0..entries {
        c.next().unwrap().unwrap().ack().unwrap();
    }
    // The journal is full: the next ack folds into a new snapshot file,
    // which cannot be created while the disk is full.
    disk.set_disk_full(true);
    let m = c.next().unwrap().unwrap();
    assert_eq!(m.offset(), entries);
    assert!(m.ack().is_err());
    disk.set_disk_full(false);
    // Not poisoned: the next ack folds and succeeds, covering the failed one.
    let m = c.next().unwrap().unwrap();
    assert_eq!(m.offset(), entries + 1);
    m.ack().unwrap();
    drop((c, log));
    disk.power_loss();
    let log = opts(&disk).open(DIR).unwrap();
    assert_eq!(log.consumer("c").unwrap().acked(), entries + 2);
}

#[test]
fn concurrent_appends_while_the_disk_fills_and_empties_never_report_a_lost_record() {
    // Rollovers fail while the disk is full (their appends are aborted and
    // their offsets handed out again); every append that returned Ok must
    // read back, at its offset, as its own payload.
    let disk = SimDisk::new(7);
    let log = open(&disk);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toggler = {
        let (disk, stop) = (disk.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut full = false;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                full = !full;
                disk.set_disk_full(full);
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
            disk.set_disk_full(false);
        })
    };
    let workers: Vec<_> = (0..8u8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                let mut aborted = 0usize;
                for i in 0..300u32 {
                    let mut payload = vec![t; 300 + (i as usize % 200)];
                    payload[..4].copy_from_slice(&i.to_le_bytes());
                    match log.append(&payload) {
                        Ok(off) => ok.push((off, payload)),
                        Err(Error::AppendFailed { .. }) => aborted += 1,
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                (ok, aborted)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut aborted = 0;
    for w in workers {
        let (ok, a) = w.join().unwrap();
        all.extend(ok);
        aborted += a;
    }
    assert!(
        aborted > 0,
        "the disk never filled at a rollover: the test proved nothing"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    toggler.join().unwrap();
    assert!(!all.is_empty());
    let mut offsets: Vec<u64> = all.iter().map(|(o, _)| *o).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), all.len(), "an offset was reported twice");
    for (off, payload) in &all {
        assert_eq!(
            &log.read(*off).unwrap().unwrap().to_vec(),
            payload,
            "offset {off}"
        );
    }
}
