//! The queue: named clients, durable acks, redelivery, retention, typed
//! messages — including the Python original's own scenarios.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durq::{Error, Log, Options, Retention};

#[path = "support/layout.rs"]
mod layout;

fn open(dir: &Path) -> Log {
    Options::new().segment_size(1 << 16).open(dir).unwrap()
}

fn take_all(c: &durq::Consumer) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(m) = c.next().unwrap() {
        out.push((m.offset(), m.payload().to_vec()));
        m.ack().unwrap();
    }
    out
}

#[test]
fn empty_log_gives_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let c = log.consumer("a").unwrap();
    assert!(c.next().unwrap().is_none());
    assert!(c.peek().unwrap().is_none());
    assert_eq!(c.lag(), 0);
    assert!(c.next_timeout(Duration::from_millis(20)).unwrap().is_none());
}

#[test]
fn put_then_get_and_empty_payload() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let c = log.consumer("a").unwrap();
    log.append(b"hello").unwrap();
    log.append(b"").unwrap();
    let m = c.next().unwrap().unwrap();
    assert_eq!((m.offset(), m.payload()), (0, &b"hello"[..]));
    m.ack().unwrap();
    let m = c.next().unwrap().unwrap();
    assert_eq!((m.offset(), m.payload()), (1, &b""[..]));
    m.ack().unwrap();
    assert!(c.next().unwrap().is_none());
    assert_eq!(c.acked(), 2);
}

#[test]
fn get_put_more_get_again() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let c = log.consumer("a").unwrap();
    log.append(b"1").unwrap();
    assert_eq!(take_all(&c), vec![(0, b"1".to_vec())]);
    log.append(b"2").unwrap();
    log.append(b"3").unwrap();
    assert_eq!(take_all(&c), vec![(1, b"2".to_vec()), (2, b"3".to_vec())]);
}

#[test]
fn interrupted_consumer_gets_the_message_again_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = open(tmp.path());
        log.append(b"first").unwrap();
        log.append(b"second").unwrap();
        let c = log.consumer("a").unwrap();
        c.next().unwrap().unwrap().ack().unwrap();
        let m = c.next().unwrap().unwrap();
        assert_eq!(m.payload(), b"second");
        drop(m); // un-acked: in memory only, the disk is as if the process stopped here
    }
    let log = open(tmp.path());
    let c = log.consumer("a").unwrap();
    let m = c.next().unwrap().unwrap();
    assert_eq!((m.offset(), m.payload()), (1, &b"second"[..]));
}

#[test]
fn dropped_or_nacked_message_is_delivered_again_first() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    for i in 0..5u8 {
        log.append([i]).unwrap();
    }
    let c = log.consumer("a").unwrap();
    let m0 = c.next().unwrap().unwrap();
    let m1 = c.next().unwrap().unwrap();
    let m2 = c.next().unwrap().unwrap();
    drop(m1);
    m2.nack();
    assert_eq!(c.waiting(), 4);
    let again = c.next().unwrap().unwrap();
    assert_eq!(again.offset(), 1);
    let again2 = c.next().unwrap().unwrap();
    assert_eq!(again2.offset(), 2);
    let fresh = c.next().unwrap().unwrap();
    assert_eq!(fresh.offset(), 3);
    for m in [m0, again, again2, fresh] {
        m.ack().unwrap();
    }
    assert_eq!(c.acked(), 4);
}

#[test]
fn blocked_next_timeout_wakes_promptly_on_append() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let c = log.consumer("waiter").unwrap();
    let waiter = std::thread::spawn(move || {
        let m = c.next_timeout(Duration::from_secs(30)).unwrap().unwrap();
        let got = Instant::now();
        let offset = m.offset();
        m.ack().unwrap();
        (offset, got)
    });
    std::thread::sleep(Duration::from_millis(200));
    log.append(b"wake up").unwrap();
    let returned = Instant::now();
    let (offset, got) = waiter.join().unwrap();
    assert_eq!(offset, 0);
    // The waiter was woken by the publish, not by its 30 s timeout.
    assert!(got.saturating_duration_since(returned) < Duration::from_secs(5));
}

#[test]
fn twenty_producers_twenty_clients_each_client_gets_all_400_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let consumers: Vec<_> = (0..20)
        .map(|i| log.consumer(&format!("client-{i}")).unwrap())
        .collect();
    let producers: Vec<_> = (0..20)
        .map(|p| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    log.append(format!("{p}:{i}")).unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = consumers
        .into_iter()
        .map(|c| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < 400 {
                    if let Some(m) = c.next_timeout(Duration::from_secs(10)).unwrap() {
                        got.push(String::from_utf8(m.payload().to_vec()).unwrap());
                        m.ack().unwrap();
                    } else {
                        panic!("timed out with {} messages", got.len());
                    }
                }
                assert!(c.next().unwrap().is_none());
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let expected: BTreeSet<String> = (0..20)
        .flat_map(|p| (0..20).map(move |i| format!("{p}:{i}")))
        .collect();
    for r in readers {
        let got = r.join().unwrap();
        assert_eq!(got.len(), 400);
        assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), expected);
    }
}

#[test]
fn out_of_order_acks_keep_the_contiguous_prefix_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = open(tmp.path());
        for i in 0..6u8 {
            log.append([i]).unwrap();
        }
        let c = log.consumer("a").unwrap();
        let ms: Vec<_> = (0..6).map(|_| c.next().unwrap().unwrap()).collect();
        let mut ms: BTreeMap<u64, _> = ms.into_iter().map(|m| (m.offset(), m)).collect();
        // Ack 1, 3, 4, 0: the prefix becomes 0..2; 3 and 4 are beyond a gap (2).
        for o in [1, 3, 4, 0] {
            ms.remove(&o).unwrap().ack().unwrap();
        }
        assert_eq!(c.acked(), 2);
        drop(ms); // the rest stay un-acked on disk
    }
    let log = open(tmp.path());
    let c = log.consumer("a").unwrap();
    assert_eq!(c.acked(), 2);
    // 2 comes again, and 3 and 4 (acked beyond the gap) may come again too;
    // nothing below the prefix does.
    let offs: Vec<u64> = take_all(&c).into_iter().map(|(o, _)| o).collect();
    assert_eq!(offs, vec![2, 3, 4, 5]);
    assert_eq!(c.acked(), 6);
}

#[test]
fn ack_until_acknowledges_a_batch_with_one_write() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = open(tmp.path());
        log.append_batch((0..1000u32).map(|i| i.to_le_bytes()))
            .unwrap();
        let c = log.consumer("batch").unwrap();
        let taken: Vec<_> = (0..600).map(|_| c.next().unwrap().unwrap()).collect();
        let last = taken.last().unwrap().offset();
        c.ack_until(last + 1).unwrap();
        drop(taken); // acknowledged by ack_until: dropping gives nothing back
        assert_eq!(c.next().unwrap().unwrap().offset(), 600);
        assert_eq!(c.acked(), 600);
        assert_eq!(c.lag(), 400);
    }
    let log = open(tmp.path());
    let c = log.consumer("batch").unwrap();
    assert_eq!(c.acked(), 600);
    assert_eq!(c.next().unwrap().unwrap().offset(), 600);
}

#[test]
fn competing_consumers_on_one_name_split_the_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    let n = 2000u64;
    log.append_batch((0..n).map(|i| i.to_le_bytes())).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let c = log.consumer("shared").unwrap();
            let seen = seen.clone();
            std::thread::spawn(move || {
                while let Some(m) = c.next().unwrap() {
                    seen.lock().unwrap().push(m.offset());
                    m.ack().unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..n).collect::<Vec<_>>(),
        "each message exactly once"
    );
    assert_eq!(log.consumer("shared").unwrap().acked(), n);
}

#[test]
fn competing_consumer_dropping_a_message_lets_another_take_it() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    log.append(b"job").unwrap();
    let a = log.consumer("w").unwrap();
    let b = a.clone();
    let m = a.next().unwrap().unwrap();
    assert!(b.next().unwrap().is_none(), "in flight with a");
    let waiter = std::thread::spawn(move || {
        b.next_timeout(Duration::from_secs(10))
            .unwrap()
            .map(|m| m.offset())
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(m);
    assert_eq!(waiter.join().unwrap(), Some(0));
}

#[test]
fn different_names_are_independent() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    log.append(b"x").unwrap();
    let a = log.consumer("a").unwrap();
    let b = log.consumer("b").unwrap();
    a.next().unwrap().unwrap().ack().unwrap();
    let m = b.next().unwrap().unwrap();
    assert_eq!(m.offset(), 0);
    let infos = log.consumers().unwrap();
    assert_eq!(infos.len(), 2);
    assert_eq!(
        (infos[0].name.as_str(), infos[0].acked, infos[0].lag),
        ("a", 1, 0)
    );
    assert_eq!(
        (
            infos[1].name.as_str(),
            infos[1].acked,
            infos[1].lag,
            infos[1].in_flight
        ),
        ("b", 0, 1, 1)
    );
}

/// Payload of record `i` in the lagging-client test: its length varies so
/// that record positions are irregular.
fn lag_payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 301) as usize;
    (0..len).map(|k| (i as usize * 7 + k) as u8).collect()
}

#[test]
fn a_client_behind_another_reads_every_record_in_order_and_after_seeking() {
    // Readers behind a segment's index frontier find their next record from
    // positions remembered after each read; whatever the mix of readers,
    // each must get exactly the record it asks for.
    let tmp = tempfile::tempdir().unwrap();
    let log = Options::new()
        .segment_size(16 << 10)
        .open(tmp.path())
        .unwrap();
    let n = 2_000u64;
    for i in 0..n {
        log.append(lag_payload(i)).unwrap();
    }
    assert!(log.segments().unwrap().len() > 10);
    let ahead = log.consumer("ahead").unwrap();
    let clients: Vec<_> = (0..20)
        .map(|k| log.consumer(&format!("behind-{k}")).unwrap())
        .collect();
    let check = |c: &durq::Consumer, from: u64, to: u64| {
        let mut taken = Vec::new();
        for i in from..to {
            let m = c.next().unwrap().unwrap();
            assert_eq!(m.offset(), i, "{}", c.name());
            assert_eq!(m.payload(), &lag_payload(i)[..], "offset {i}");
            taken.push(m);
        }
        c.ack_until(to).unwrap();
    };
    // One client walks every segment to its end first.
    check(&ahead, 0, n);
    // Then more clients than the segment remembers positions for go through
    // the log interleaved, in steps of different sizes.
    let mut at = vec![0u64; clients.len()];
    while at.iter().any(|&a| a < n) {
        for (k, c) in clients.iter().enumerate() {
            let to = (at[k] + 1 + k as u64 * 3).min(n);
            check(c, at[k], to);
            at[k] = to;
        }
    }
    // Seeking back to arbitrary offsets, then reading on.
    let c = &clients[0];
    for from in [1_999, 3, 1_000, 64, 63, 0, 1_234] {
        c.seek(from).unwrap();
        check(c, from, (from + 150).min(n));
    }
    // And a reopened log, whose index starts empty.
    drop((ahead, clients));
    drop(log);
    let log = Options::new()
        .segment_size(16 << 10)
        .open(tmp.path())
        .unwrap();
    let c = log.consumer("behind-3").unwrap();
    c.seek(500).unwrap();
    check(&c, 500, 700);
    for (i, r) in log.iter(0).enumerate() {
        assert_eq!(r.unwrap().1.as_bytes(), &lag_payload(i as u64)[..]);
    }
}

#[test]
fn new_client_starts_at_the_oldest_retained_message() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    log.append(b"old").unwrap();
    let c = log.consumer("late").unwrap();
    assert_eq!(c.next().unwrap().unwrap().payload(), b"old");
}

#[test]
fn management_seek_replay_skip_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    log.append_batch((0..10u8).map(|i| [i])).unwrap();
    let c = log.consumer("m").unwrap();
    c.ack_until(8).unwrap();
    c.seek(3).unwrap();
    assert_eq!(c.acked(), 3);
    assert_eq!(c.peek().unwrap().unwrap().0, 3);
    assert_eq!(c.next().unwrap().unwrap().offset(), 3);
    c.seek_to_end().unwrap();
    assert!(c.next().unwrap().is_none());
    assert_eq!(c.lag(), 0);
    assert!(log.remove_consumer("m").unwrap());
    assert!(matches!(c.next(), Err(Error::NoSuchClient { .. })));
    assert!(!log.remove_consumer("m").unwrap());
    assert!(log.consumers().unwrap().is_empty());
    assert!(
        fs::read_dir(tmp.path().join("clients"))
            .unwrap()
            .next()
            .is_none()
    );
    // Recreated, it starts from the oldest message again.
    let c = log.consumer("m").unwrap();
    assert_eq!(c.next().unwrap().unwrap().offset(), 0);
}

#[test]
fn bad_client_names_are_refused_and_touch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    for bad in [
        "", "../x", "a/b", "a\0b", ".hidden", "..", "/abs", "x y", "ü",
    ] {
        let err = log.consumer(bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidClientName { .. }),
            "{bad:?}: {err}"
        );
    }
    assert!(!tmp.path().join("clients").exists());
    assert!(!tmp.path().parent().unwrap().join("x.journal").exists());
}

fn cursor_files(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir.join("clients"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{name}.cursor."))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn corrupt_newest_cursor_falls_back_to_previous_generation_and_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = open(tmp.path());
        log.append_batch((0..10u8).map(|i| [i])).unwrap();
        let c = log.consumer("c").unwrap();
        c.seek(4).unwrap(); // generation 1 (slot 1), position 4
        c.seek(7).unwrap(); // generation 2 (slot 0), position 7
    }
    let newest = tmp.path().join("clients/c.cursor.0");
    let mut bytes = fs::read(&newest).unwrap();
    bytes[25] ^= 0x10;
    fs::write(&newest, bytes).unwrap();
    let log = open(tmp.path());
    let report = log.recovery_report();
    assert_eq!(report.cursors.len(), 1, "{report:?}");
    assert!(
        report.cursors[0].action.contains("checksum"),
        "{:?}",
        report.cursors[0]
    );
    // Never read as another offset: the previous generation's position.
    assert_eq!(log.consumer("c").unwrap().acked(), 4);
}

#[test]
fn cursor_with_no_valid_generation_makes_the_client_unusable_not_guessed() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = open(tmp.path());
        log.append(b"x").unwrap();
        log.consumer("c")
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .ack()
            .unwrap();
        log.consumer("other").unwrap();
    }
    for f in cursor_files(tmp.path(), "c") {
        fs::write(&f, b"garbage").unwrap();
    }
    let log = open(tmp.path());
    assert!(
        log.recovery_report()
            .cursors
            .iter()
            .any(|r| r.client == "c")
    );
    let err = log.consumer("c").unwrap_err();
    assert!(err.to_string().contains("c.cursor"), "{err}");
    // Other clients are unaffected; the broken one can be removed and recreated.
    log.consumer("other").unwrap();
    assert!(log.remove_consumer("c").unwrap());
    assert_eq!(log.consumer("c").unwrap().acked(), 0);
}

#[test]
fn cursor_past_the_end_is_reported_and_clamped() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = open(tmp.path());
        log.append_batch((0..10u8).map(|i| [i])).unwrap();
        log.consumer("c").unwrap().ack_until(10).unwrap();
    }
    // Damage: the log lost its last records (a torn tail cut them).
    let seg = layout::segment_path(tmp.path(), 0, 0);
    let mut data = fs::read(&seg).unwrap();
    let cut = 64 + 5 * 32;
    data[cut..].fill(0);
    fs::write(&seg, data).unwrap();
    let log = open(tmp.path());
    assert_eq!(log.end(), 5);
    let r = &log.recovery_report().cursors;
    assert!(
        r.iter().any(|c| c.action.contains("past the log's end")),
        "{r:?}"
    );
    let c = log.consumer("c").unwrap();
    assert_eq!(c.acked(), 5);
    drop(c);
    drop(log);
    // The clamp is durable: reopening reports nothing more.
    let log = open(tmp.path());
    assert!(log.recovery_report().cursors.is_empty());
    log.append(b"new").unwrap();
    assert_eq!(
        log.consumer("c")
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .payload(),
        b"new"
    );
}

#[test]
fn payload_that_fails_to_decode_is_an_error_for_that_message_only() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Order {
        id: u32,
        item: String,
    }
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    log.append([0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
    log.append_value(&Order {
        id: 7,
        item: "tea".into(),
    })
    .unwrap();
    let c = log.consumer("typed").unwrap();
    let bad = c.next().unwrap().unwrap();
    let err = bad.decode::<Order>().unwrap_err();
    assert!(matches!(err, Error::Decode { offset: 0, .. }), "{err}");
    bad.ack().unwrap();
    let good = c.next().unwrap().unwrap();
    assert_eq!(
        good.decode::<Order>().unwrap(),
        Order {
            id: 7,
            item: "tea".into()
        }
    );
    good.ack().unwrap();
    assert!(log.poisoned().is_none());
    log.append(b"still fine").unwrap();
}

#[test]
fn journal_folds_into_a_snapshot_when_full() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 5000u64; // more acks than one journal holds
    {
        let log = Options::new()
            .segment_size(1 << 20)
            .open(tmp.path())
            .unwrap();
        log.append_batch((0..n).map(|i| i.to_le_bytes())).unwrap();
        let c = log.consumer("j").unwrap();
        for _ in 0..n - 1 {
            c.next().unwrap().unwrap().ack().unwrap();
        }
    }
    let log = Options::new()
        .segment_size(1 << 20)
        .open(tmp.path())
        .unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{:?}",
        log.recovery_report()
    );
    let c = log.consumer("j").unwrap();
    assert_eq!(c.acked(), n - 1);
    assert_eq!(c.next().unwrap().unwrap().offset(), n - 1);
}

#[test]
fn retention_keeps_everything_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Options::new().segment_size(4096).open(tmp.path()).unwrap();
    let c = log.consumer("a").unwrap();
    log.append_batch((0..500u32).map(|i| vec![i as u8; 50]))
        .unwrap();
    c.ack_until(500).unwrap();
    assert!(log.apply_retention().unwrap().is_empty());
    assert_eq!(log.first_offset(), 0);
}

#[test]
fn retention_deletes_segments_acked_by_every_client() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Options::new()
        .segment_size(4096)
        .retention(Retention::acked_by_all())
        .open(tmp.path())
        .unwrap();
    let a = log.consumer("a").unwrap();
    let b = log.consumer("b").unwrap();
    log.append_batch((0..500u32).map(|i| vec![i as u8; 50]))
        .unwrap();
    let segs_before = log.segments().unwrap().len();
    assert!(segs_before > 5);
    a.ack_until(500).unwrap();
    assert_eq!(log.first_offset(), 0, "b has acked nothing");
    b.ack_until(250).unwrap();
    let first = log.first_offset();
    assert!(first > 0 && first <= 250, "first retained {first}");
    // Everything b has not acked is still there.
    assert_eq!(b.next().unwrap().unwrap().offset(), 250);
    b.ack_until(500).unwrap();
    assert_eq!(
        log.segments().unwrap().len(),
        1,
        "only the active segment remains"
    );
    drop((a, b));
    drop(log);
    let log = Options::new().segment_size(4096).open(tmp.path()).unwrap();
    assert_eq!(log.end(), 500);
    assert!(log.read(0).unwrap().is_none());
    assert_eq!(log.read(499).unwrap().unwrap().len(), 50);
}

/// A log of 4 KiB segments bound to 16 KiB, and a client "slow" that has
/// acknowledged nothing while 500 records (and one more) went in: the
/// oldest records it never saw are deleted.
fn left_behind_by_size_bound_retention(dir: &Path) -> (Log, durq::Consumer) {
    let log = Options::new()
        .segment_size(4096)
        .retention(Retention::max_bytes(4 * 4096))
        .open(dir)
        .unwrap();
    let slow = log.consumer("slow").unwrap();
    log.append_batch((0..500u32).map(|i| vec![i as u8; 50]))
        .unwrap();
    log.append(b"trigger").unwrap();
    (log, slow)
}

#[test]
fn retention_by_size_reports_clients_left_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, slow) = left_behind_by_size_bound_retention(tmp.path());
    assert!(log.segments().unwrap().len() <= 4);
    let first = log.first_offset();
    assert!(first > 0);
    match slow.next() {
        Err(Error::Truncated {
            offset: 0,
            first: f,
        }) => assert_eq!(f, first),
        other => panic!("expected Truncated, got {other:?}"),
    }
    slow.seek(0).unwrap(); // clamps to the first retained offset
    assert_eq!(slow.next().unwrap().unwrap().offset(), first);
}

#[test]
fn next_batch_takes_given_back_messages_first_then_new_ones_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Options::new().segment_size(4096).open(tmp.path()).unwrap();
    let c = log.consumer("c").unwrap();
    assert!(c.next_batch(10).unwrap().is_empty());
    log.append_batch((0..300u64).map(lag_payload)).unwrap();
    assert!(log.segments().unwrap().len() > 5);
    let first = c.next_batch(100).unwrap();
    assert_eq!(
        first.iter().map(|m| m.offset()).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    for m in &first {
        assert_eq!(m.payload(), &lag_payload(m.offset())[..]);
    }
    // Give back 7 and 42 (dropped unacknowledged), acknowledge the rest.
    let mut first = first;
    let back: Vec<_> = [42, 7].iter().map(|&i| first.remove(i)).collect();
    drop(back);
    for m in first {
        m.ack().unwrap();
    }
    let batch = c.next_batch(5).unwrap();
    assert_eq!(
        batch.iter().map(|m| m.offset()).collect::<Vec<_>>(),
        vec![7, 42, 100, 101, 102]
    );
    c.ack_until(103).unwrap();
    drop(batch);
    // The rest, in batches that cross segments; `max` bounds each.
    let mut seen = Vec::new();
    loop {
        let b = c.next_batch(64).unwrap();
        assert!(b.len() <= 64);
        if b.is_empty() {
            break;
        }
        for m in &b {
            assert_eq!(m.payload(), &lag_payload(m.offset())[..]);
            seen.push(m.offset());
        }
        c.ack_until(b.last().unwrap().offset() + 1).unwrap();
    }
    assert_eq!(seen, (103..300).collect::<Vec<_>>());
    assert_eq!(c.acked(), 300);
    // Taken but not acknowledged: back after a reopen.
    log.append_batch((300..310u64).map(lag_payload)).unwrap();
    assert_eq!(c.next_batch(100).unwrap().len(), 10);
    drop(c);
    drop(log);
    let log = Options::new().segment_size(4096).open(tmp.path()).unwrap();
    let c = log.consumer("c").unwrap();
    let again = c.next_batch(100).unwrap();
    assert_eq!(
        again.iter().map(|m| m.offset()).collect::<Vec<_>>(),
        (300..310).collect::<Vec<_>>()
    );
    // A removed client's handle is refused.
    drop(again);
    assert!(log.remove_consumer("c").unwrap());
    assert!(matches!(c.next_batch(1), Err(Error::NoSuchClient { .. })));
}

#[test]
fn next_batch_and_next_on_two_handles_of_one_client_split_the_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(tmp.path());
    log.append_batch((0..2_000u64).map(lag_payload)).unwrap();
    let a = log.consumer("shared").unwrap();
    let b = a.clone();
    let taker = std::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            let batch = b.next_batch(37).unwrap();
            if batch.is_empty() {
                break;
            }
            for m in batch {
                assert_eq!(m.payload(), &lag_payload(m.offset())[..]);
                got.push(m.offset());
                m.ack().unwrap();
            }
        }
        got
    });
    let mut mine = Vec::new();
    while let Some(m) = a.next().unwrap() {
        mine.push(m.offset());
        m.ack().unwrap();
    }
    let theirs = taker.join().unwrap();
    let all: BTreeSet<u64> = mine.iter().chain(&theirs).copied().collect();
    assert_eq!(all.len(), mine.len() + theirs.len(), "a message went twice");
    assert_eq!(all, (0..2_000).collect());
    assert_eq!(a.acked(), 2_000);
}

#[test]
fn next_batch_stops_before_a_damaged_record_and_gives_the_rest_back() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options::new().segment_size(4096);
    {
        let log = opts.clone().open(tmp.path()).unwrap();
        log.append_batch((0..300u64).map(lag_payload)).unwrap();
    }
    // Damage the first record of the third segment (sealed: open does not
    // read it, the consumer does).
    let segs = layout::segment_files(tmp.path());
    let victim = &segs[2];
    let base = layout::base_of(victim);
    let mut bytes = fs::read(victim).unwrap();
    bytes[64 + 24 + 1] ^= 0x10;
    fs::write(victim, bytes).unwrap();

    let log = opts.open(tmp.path()).unwrap();
    let c = log.consumer("c").unwrap();
    let in_flight = || log.consumers().unwrap()[0].in_flight;
    let before = c.next_batch(300).unwrap();
    assert_eq!(
        before.iter().map(|m| m.offset()).collect::<Vec<_>>(),
        (0..base).collect::<Vec<_>>()
    );
    assert_eq!(in_flight(), base as usize);
    // The next batch starts with the damaged record: its error, and every
    // message of that batch given back, none left taken.
    let err = c.next_batch(300).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, .. } if path == victim),
        "{err}"
    );
    assert_eq!(in_flight(), base as usize);
    drop(before);
    assert_eq!(in_flight(), 0);
    // Past the damage, the rest is delivered.
    c.seek(base + 1).unwrap();
    let after = c.next_batch(300).unwrap();
    assert_eq!(
        after.iter().map(|m| m.offset()).collect::<Vec<_>>(),
        (base + 1..300).collect::<Vec<_>>()
    );
}

#[test]
fn next_batch_reports_messages_lost_to_size_bound_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, slow) = left_behind_by_size_bound_retention(tmp.path());
    let first = log.first_offset();
    assert!(first > 0);
    match slow.next_batch(10) {
        Err(Error::Truncated {
            offset: 0,
            first: f,
        }) => assert_eq!(f, first),
        other => panic!("expected Truncated, got {other:?}"),
    }
    // Nothing was taken: the same error again, until the client moves.
    assert!(matches!(
        slow.next_batch(10),
        Err(Error::Truncated { offset: 0, .. })
    ));
    slow.seek(0).unwrap();
    let b = slow.next_batch(3).unwrap();
    assert_eq!(
        b.iter().map(|m| m.offset()).collect::<Vec<_>>(),
        vec![first, first + 1, first + 2]
    );
}

// ---- a model-based property test ----

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    pub enum Op {
        Append(u8),
        Next(usize),
        Ack(usize),
        Nack(usize),
        AckUntilAll,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(Op::Append),
            4 => (0..2usize).prop_map(Op::Next),
            3 => (0..8usize).prop_map(Op::Ack),
            1 => (0..8usize).prop_map(Op::Nack),
            1 => Just(Op::AckUntilAll),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn queue_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            let tmp = tempfile::tempdir().unwrap();
            let mut log = Some(Options::new().segment_size(4096).open(tmp.path()).unwrap());
            let names = ["a", "b"];
            // Model: the log's contents; per client the durable-prefix floor
            // and what is in flight.
            let mut contents: Vec<u8> = Vec::new();
            let mut in_flight: HashMap<usize, Vec<durq::Message>> = HashMap::new();
            let mut acked: [BTreeSet<u64>; 2] = [BTreeSet::new(), BTreeSet::new()];
            let mut delivered_prefix_floor = [0u64; 2];
            for op in ops {
                let l = log.as_ref().unwrap();
                match op {
                    Op::Append(b) => {
                        prop_assert_eq!(l.append([b]).unwrap(), contents.len() as u64);
                        contents.push(b);
                    }
                    Op::Next(ci) => {
                        let c = l.consumer(names[ci]).unwrap();
                        if let Some(m) = c.next().unwrap() {
                            let o = m.offset();
                            prop_assert_eq!(m.payload(), &[contents[o as usize]][..]);
                            prop_assert!(!acked[ci].contains(&o) || o >= delivered_prefix_floor[ci],
                                "acked message {} redelivered below the prefix", o);
                            prop_assert!(o >= delivered_prefix_floor[ci]);
                            in_flight.entry(ci).or_default().push(m);
                        } else {
                            // Nothing: every offset is acked or in flight.
                            let flying: BTreeSet<u64> = in_flight.get(&ci).map(|v| v.iter().map(|m| m.offset()).collect()).unwrap_or_default();
                            for o in c.acked()..contents.len() as u64 {
                                prop_assert!(acked[ci].contains(&o) || flying.contains(&o), "offset {} neither acked, in flight nor delivered", o);
                            }
                        }
                    }
                    Op::Ack(k) => {
                        for (ci, v) in in_flight.iter_mut() {
                            if !v.is_empty() {
                                let m = v.remove(k % v.len());
                                acked[*ci].insert(m.offset());
                                m.ack().unwrap();
                                break;
                            }
                        }
                    }
                    Op::Nack(k) => {
                        for v in in_flight.values_mut() {
                            if !v.is_empty() {
                                let m = v.remove(k % v.len());
                                m.nack();
                                break;
                            }
                        }
                    }
                    Op::AckUntilAll => {
                        let c = l.consumer(names[0]).unwrap();
                        c.ack_until(contents.len() as u64).unwrap();
                        in_flight.remove(&0);
                        acked[0].extend(0..contents.len() as u64);
                    }
                    Op::Reopen => {
                        in_flight.clear();
                        drop(log.take());
                        log = Some(Options::new().segment_size(4096).open(tmp.path()).unwrap());
                        let l = log.as_ref().unwrap();
                        prop_assert_eq!(l.end(), contents.len() as u64);
                        for (ci, name) in names.iter().enumerate() {
                            let c = l.consumer(name).unwrap();
                            // The durable position is exactly the contiguous acked prefix.
                            let mut p = 0u64;
                            while acked[ci].contains(&p) { p += 1; }
                            prop_assert_eq!(c.acked(), p);
                            delivered_prefix_floor[ci] = p;
                            // Acked beyond the gap may come again.
                            acked[ci].retain(|&o| o < p);
                        }
                    }
                }
            }
            // Finally everything readable matches.
            let l = log.as_ref().unwrap();
            for (i, b) in contents.iter().enumerate() {
                prop_assert_eq!(l.read(i as u64).unwrap().unwrap().to_vec(), vec![*b]);
            }
        }
    }
}

/// A cursor whose generation is the last one the format allows (only a
/// crafted or damaged file can hold it): moving the client or folding its
/// journal needs a newer generation, which is refused with an error naming
/// the file; the client keeps its durable position and stays usable.
#[test]
fn cursor_at_the_last_generation_refuses_to_advance_and_keeps_its_position() {
    use durq::cursor::Snapshot;
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = open(tmp.path());
        log.append_batch((0..10u8).map(|i| [i])).unwrap();
        log.consumer("c").unwrap().seek(3).unwrap();
    }
    for f in cursor_files(tmp.path(), "c") {
        fs::remove_file(f).unwrap();
    }
    let last = Snapshot {
        generation: durq::record::MAX_COUNTER - 1, // odd: slot 1
        acked: 3,
    };
    fs::write(tmp.path().join("clients/c.cursor.1"), last.encode()).unwrap();

    let log = open(tmp.path());
    let c = log.consumer("c").unwrap();
    assert_eq!(c.acked(), 3);
    let err = c.seek(5).unwrap_err();
    assert!(err.to_string().contains("c.cursor"), "{err}");
    assert!(err.to_string().contains("generation"), "{err}");
    assert_eq!(c.acked(), 3, "a refused seek moved the position");
    // Acks still work through the journal.
    let m = c.next().unwrap().unwrap();
    assert_eq!(m.offset(), 3);
    m.ack().unwrap();
    drop((c, log));

    let log = open(tmp.path());
    let c = log.consumer("c").expect("the client is still readable");
    assert_eq!(c.acked(), 4);

    // A full journal is folded into a new snapshot: refused, and the acks
    // already in the journal stay durable.
    let entries = (64 * 1024 / 32) as u64;
    log.append_batch((0..entries).map(|i| i.to_le_bytes()))
        .unwrap();
    for _ in 1..entries {
        c.next().unwrap().unwrap().ack().unwrap();
    }
    assert_eq!(c.acked(), 4 + entries - 1);
    let err = c.next().unwrap().unwrap().ack().unwrap_err();
    assert!(err.to_string().contains("generation"), "{err}");
    drop((c, log));
    let log = open(tmp.path());
    assert_eq!(log.consumer("c").unwrap().acked(), 4 + entries - 1);
    drop(log);

    // With its journal gone, open would recreate it under a new generation:
    // it cannot, so it changes nothing and reports the client unusable.
    fs::remove_file(tmp.path().join("clients/c.journal")).unwrap();
    let before = fs::read(tmp.path().join("clients/c.cursor.1")).unwrap();
    let log = open(tmp.path());
    let repairs: Vec<_> = log
        .recovery_report()
        .cursors
        .iter()
        .filter(|r| r.client == "c")
        .cloned()
        .collect();
    assert!(
        repairs.iter().any(|r| r.action.contains("generation")),
        "{repairs:?}"
    );
    assert!(
        repairs.iter().all(|r| !r.action.ends_with("; recreated")),
        "a repair not made is reported as made: {repairs:?}"
    );
    assert!(
        repairs
            .iter()
            .any(|r| r.action.contains("ack journal missing")),
        "what was found is still reported: {repairs:?}"
    );
    let err = log.consumer("c").unwrap_err();
    assert!(err.to_string().contains("c.cursor"), "{err}");
    assert_eq!(
        fs::read(tmp.path().join("clients/c.cursor.1")).unwrap(),
        before
    );
    assert!(!tmp.path().join("clients/c.cursor.0").exists());
    // Removed and created again, it starts over.
    assert!(log.remove_consumer("c").unwrap());
    assert_eq!(log.consumer("c").unwrap().acked(), 0);
}
