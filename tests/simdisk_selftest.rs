//! Tests of the simulated disk itself (`tests/support/simdisk.rs`): if the
//! disk does not lose, keep and tear data the way it claims, the crash tests
//! built on it prove nothing.

#[path = "support/simdisk.rs"]
mod simdisk;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use durq::storage::{OpenMode, Storage, StorageFile};
use simdisk::{LossMode, SimDisk};

const DIR: &str = "/db";

fn p(name: &str) -> String {
    format!("{DIR}/{name}")
}

/// A disk with the directory `/db`, durably (its entry in `/` is synced).
fn disk(seed: u64) -> SimDisk {
    let d = SimDisk::new(seed);
    d.mkdir_durable(DIR).unwrap();
    d
}

fn open(d: &SimDisk, name: &str, mode: OpenMode) -> Box<dyn StorageFile> {
    d.open_file(Path::new(&p(name)), mode).unwrap()
}

/// Creates `name` with `bytes`, syncs the file and the directory.
fn create_durable(d: &SimDisk, name: &str, bytes: &[u8]) -> Box<dyn StorageFile> {
    let f = open(d, name, OpenMode::CreateNew);
    f.write_at(bytes, 0).unwrap();
    f.sync_data().unwrap();
    d.sync_dir(Path::new(DIR)).unwrap();
    f
}

fn sync_dir(d: &SimDisk) {
    d.sync_dir(Path::new(DIR)).unwrap();
}

fn bytes(d: &SimDisk, name: &str) -> Option<Vec<u8>> {
    d.file_bytes(p(name))
}

fn is_dead_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.to_string() == "simulated power loss"
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Outcome {
    Kept,
    Dropped,
    Torn,
}

/// Classifies `got` against the old and new contents of a fully overwritten
/// region, checking that every 512-byte sector is entirely old, new or zero.
fn classify(got: &[u8], old: u8, new: u8) -> Outcome {
    let mut kinds = Vec::new();
    for sector in got.chunks(512) {
        let b = sector[0];
        assert!(
            sector.iter().all(|&x| x == b) && (b == old || b == new || b == 0),
            "a sector is not whole old, new or zero data: {sector:?}"
        );
        kinds.push(b);
    }
    if kinds.iter().all(|&b| b == new) {
        Outcome::Kept
    } else if kinds.iter().all(|&b| b == old) {
        Outcome::Dropped
    } else {
        Outcome::Torn
    }
}

#[test]
fn unsynced_write_is_kept_dropped_or_torn_and_synced_write_survives() {
    let mut seen: BTreeMap<Outcome, u32> = BTreeMap::new();
    let mut append_lens: BTreeMap<usize, u32> = BTreeMap::new();
    let mut zeroed_sectors = 0;
    for seed in 0..300 {
        let d = disk(seed);
        // f: 8 synced sectors of 0xAA, then an unsynced overwrite with 0xBB.
        let f = create_durable(&d, "f", &[0xAA; 4096]);
        // g: synced, then an unsynced append past its end.
        let g = create_durable(&d, "g", &[0x11; 1000]);
        // h: overwritten and synced: must always survive.
        let h = create_durable(&d, "h", &[0x33; 2048]);
        f.write_at(&[0xBB; 4096], 0).unwrap();
        g.write_at(&[0x22; 100], 1000).unwrap();
        h.write_at(&[0x44; 2048], 0).unwrap();
        h.sync_all().unwrap();
        assert_eq!(
            bytes(&d, "f").unwrap(),
            vec![0xBB; 4096],
            "reads see the cache"
        );

        d.power_loss();

        let fb = bytes(&d, "f").unwrap();
        assert_eq!(fb.len(), 4096);
        *seen.entry(classify(&fb, 0xAA, 0xBB)).or_default() += 1;
        zeroed_sectors += fb.chunks(512).filter(|s| s[0] == 0).count();

        let gb = bytes(&d, "g").unwrap();
        assert_eq!(
            &gb[..1000],
            &[0x11; 1000][..],
            "seed {seed}: synced data damaged"
        );
        assert!(
            [1000, 1024, 1100].contains(&gb.len()),
            "seed {seed}: impossible length {}",
            gb.len()
        );
        assert!(gb[1000..].iter().all(|&b| b == 0x22 || b == 0));
        *append_lens.entry(gb.len()).or_default() += 1;

        assert_eq!(
            bytes(&d, "h").unwrap(),
            vec![0x44; 2048],
            "seed {seed}: synced write lost"
        );
        assert_eq!(d.durable_bytes(p("f")), Some(fb), "the result is durable");
    }
    for outcome in [Outcome::Kept, Outcome::Dropped, Outcome::Torn] {
        assert!(
            seen.get(&outcome).copied().unwrap_or(0) > 0,
            "never {outcome:?}: {seen:?}"
        );
    }
    assert!(
        zeroed_sectors > 0,
        "a torn write never left a zeroed sector"
    );
    assert!(
        append_lens.contains_key(&1000),
        "the append was never lost: {append_lens:?}"
    );
    assert!(
        append_lens.contains_key(&1024),
        "a torn append never stopped at a sector boundary: {append_lens:?}"
    );
    assert!(
        append_lens.contains_key(&1100),
        "the append was never kept: {append_lens:?}"
    );
}

#[test]
fn loss_modes_keep_all_and_drop_all() {
    for (mode, want) in [(LossMode::KeepAll, 0xBB), (LossMode::DropAll, 0xAA)] {
        for seed in 0..20 {
            let d = disk(seed);
            let f = create_durable(&d, "f", &[0xAA; 2048]);
            f.write_at(&[0xBB; 2048], 0).unwrap();
            f.set_len(4096).unwrap();
            d.power_loss_with(mode);
            let got = bytes(&d, "f").unwrap();
            let len = if mode == LossMode::KeepAll {
                4096
            } else {
                2048
            };
            assert_eq!(got.len(), len, "{mode:?}");
            assert!(got[..2048].iter().all(|&b| b == want), "{mode:?}");
        }
    }
}

#[test]
fn set_len_is_kept_or_dropped_and_orders_writes() {
    let mut lens: BTreeMap<usize, u32> = BTreeMap::new();
    for seed in 0..200 {
        let d = disk(seed);
        let f = create_durable(&d, "f", &[1; 100]);
        f.write_at(&[2; 100], 1000).unwrap(); // extends to 1100
        f.set_len(50).unwrap(); // truncation: the write above never outlives it
        d.power_loss();
        let got = bytes(&d, "f").unwrap();
        // Without the truncation: 100 (write lost), 512/1024 (torn length),
        // 1100; with it: 50.
        assert!(
            [50, 100, 512, 1024, 1100].contains(&got.len()),
            "{}",
            got.len()
        );
        assert!(got.iter().take(50).all(|&b| b == 1));
        if got.len() > 50 {
            // The truncation was lost, so it cannot have happened before the
            // write either: a write is never applied after a later set_len.
            assert!(got[50..100].iter().all(|&b| b == 1), "seed {seed}");
        }
        *lens.entry(got.len()).or_default() += 1;
    }
    assert!(
        lens.contains_key(&50) && lens.contains_key(&100) && lens.contains_key(&1100),
        "{lens:?}"
    );
}

#[test]
fn create_without_sync_dir_is_lost_and_with_it_survives() {
    let mut lost = 0;
    let mut kept = 0;
    for seed in 0..100 {
        let d = disk(seed);
        let f = open(&d, "new", OpenMode::CreateNew);
        f.write_at(b"payload", 0).unwrap();
        f.sync_data().unwrap();
        assert_eq!(d.list(DIR), vec!["new"]);
        assert!(d.list_durable(DIR).is_empty());
        d.power_loss();
        match bytes(&d, "new") {
            None => lost += 1,
            Some(b) => {
                assert_eq!(b, b"payload");
                kept += 1;
            }
        }
    }
    assert!(lost > 0, "an unsynced create always survived");
    // Random loss may let a journal commit it; the model allows both, but the
    // unlucky case must be reachable deterministically too.
    assert!(kept > 0, "an unsynced create never survived");

    let d = disk(1);
    let f = open(&d, "new", OpenMode::CreateNew);
    f.write_at(b"payload", 0).unwrap();
    f.sync_data().unwrap();
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(bytes(&d, "new"), None);
    assert!(d.list_dir(Path::new(DIR)).unwrap().is_empty());

    for seed in 0..50 {
        let d = disk(seed);
        create_durable(&d, "new", b"payload");
        d.power_loss();
        assert_eq!(
            bytes(&d, "new").as_deref(),
            Some(&b"payload"[..]),
            "seed {seed}"
        );
    }
}

#[test]
fn unsynced_entry_changes_survive_only_in_order() {
    for seed in 0..200 {
        let d = disk(seed);
        open(&d, "x", OpenMode::CreateNew);
        open(&d, "y", OpenMode::CreateNew);
        d.power_loss();
        let names = d.list(DIR);
        assert!(
            names.is_empty() || names == ["x"] || names == ["x", "y"],
            "seed {seed}: {names:?}"
        );
    }
}

#[test]
fn rename_reverts_without_sync_dir_and_sticks_with_it() {
    let mut reverted = 0;
    for seed in 0..100 {
        let d = disk(seed);
        create_durable(&d, "a", b"A");
        create_durable(&d, "b", b"old b");
        d.rename(Path::new(&p("a")), Path::new(&p("b"))).unwrap();
        assert_eq!(d.list(DIR), vec!["b"]);
        assert_eq!(bytes(&d, "b").unwrap(), b"A");
        d.power_loss();
        // Atomic: either the old state or the new one, never a mix.
        match d.list(DIR).as_slice() {
            [a, b] if a == "a" && b == "b" => {
                assert_eq!(bytes(&d, "a").unwrap(), b"A");
                assert_eq!(bytes(&d, "b").unwrap(), b"old b");
                reverted += 1;
            }
            [b] if b == "b" => assert_eq!(bytes(&d, "b").unwrap(), b"A"),
            other => panic!("seed {seed}: {other:?}"),
        }
    }
    assert!(reverted > 0, "an unsynced rename never reverted");

    let d = disk(3);
    create_durable(&d, "a", b"A");
    d.rename(Path::new(&p("a")), Path::new(&p("b"))).unwrap();
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(d.list(DIR), vec!["a"]);

    for seed in 0..50 {
        let d = disk(seed);
        create_durable(&d, "a", b"A");
        d.rename(Path::new(&p("a")), Path::new(&p("b"))).unwrap();
        sync_dir(&d);
        d.power_loss();
        assert_eq!(d.list(DIR), vec!["b"], "seed {seed}");
        assert_eq!(bytes(&d, "b").unwrap(), b"A");
    }

    let d = disk(0);
    create_durable(&d, "a", b"A");
    let err = d
        .rename(Path::new(&p("a")), Path::new("/other/a"))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "no such directory");
    assert_eq!(d.list(DIR), vec!["a"]);
    let err = d
        .rename(Path::new(&p("missing")), Path::new(&p("z")))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn remove_reverts_without_sync_dir_and_sticks_with_it() {
    let d = disk(0);
    create_durable(&d, "a", b"A");
    d.remove_file(Path::new(&p("a"))).unwrap();
    assert_eq!(bytes(&d, "a"), None);
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(bytes(&d, "a").unwrap(), b"A", "an unsynced remove stuck");

    let mut came_back = 0;
    for seed in 0..100 {
        let d = disk(seed);
        create_durable(&d, "a", b"A");
        d.remove_file(Path::new(&p("a"))).unwrap();
        d.power_loss();
        if bytes(&d, "a").is_some() {
            came_back += 1;
        }
    }
    assert!(came_back > 0);

    for seed in 0..50 {
        let d = disk(seed);
        create_durable(&d, "a", b"A");
        d.remove_file(Path::new(&p("a"))).unwrap();
        sync_dir(&d);
        d.power_loss();
        assert_eq!(bytes(&d, "a"), None, "seed {seed}");
        let err = d.remove_file(Path::new(&p("a"))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
    let err = disk(0).remove_file(Path::new(&p("a"))).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn failed_sync_drops_the_pending_writes_forever() {
    for mode in [LossMode::KeepAll, LossMode::Random] {
        for seed in 0..30 {
            let d = disk(seed);
            let f = create_durable(&d, "f", &[0xAA; 512]);
            f.write_at(&[0xBB; 512], 0).unwrap();
            d.fail_sync_at(1);
            let err = f.sync_data().unwrap_err();
            assert_eq!(err.raw_os_error(), Some(5));
            // Still visible in the page cache.
            assert_eq!(bytes(&d, "f").unwrap(), vec![0xBB; 512]);
            // A later write and a successful sync do not resurrect it.
            f.write_at(&[0xCC; 512], 512).unwrap();
            f.sync_all().unwrap();
            d.power_loss_with(mode);
            let got = bytes(&d, "f").unwrap();
            assert_eq!(&got[..512], &[0xAA; 512][..], "{mode:?} seed {seed}");
            assert_eq!(&got[512..], &[0xCC; 512][..], "{mode:?} seed {seed}");
        }
    }

    // Counting from 1; a sync_dir can fail too and then persists nothing.
    let d = disk(0);
    let f = create_durable(&d, "f", b"x");
    d.fail_sync_at(2);
    f.sync_data().unwrap();
    open(&d, "g", OpenMode::CreateNew);
    assert_eq!(
        d.sync_dir(Path::new(DIR)).unwrap_err().raw_os_error(),
        Some(5)
    );
    assert_eq!(d.list_durable(DIR), vec!["f"]);
    sync_dir(&d);
    assert_eq!(d.list_durable(DIR), vec!["f", "g"]);
}

#[test]
fn disk_full_fails_growth_and_creates_until_cleared() {
    let d = disk(0);
    let f = create_durable(&d, "f", &[1; 1024]);
    d.set_disk_full(true);
    let enospc = |r: io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(28));
    f.write_at(&[2; 24], 1000).unwrap(); // inside the length
    enospc(f.write_at(&[2; 25], 1000));
    enospc(f.set_len(2048));
    f.set_len(512).unwrap(); // shrinking is fine
    enospc(
        d.open_file(Path::new(&p("g")), OpenMode::CreateNew)
            .map(drop),
    );
    enospc(
        d.open_file(Path::new(&p("g")), OpenMode::CreateOrOpen)
            .map(drop),
    );
    enospc(d.try_lock(Path::new(&p("lock"))).map(drop));
    let ops = d.ops_count();
    enospc(d.create_dir_all(Path::new(&p("sub/deeper"))).map(drop));
    assert_eq!(d.ops_count(), ops + 1, "the refused mkdir counts");
    assert!(!d.is_dir(Path::new(&p("sub"))));
    assert!(
        !d.create_dir_all(Path::new(DIR)).unwrap(),
        "nothing to make"
    );
    d.open_file(Path::new(&p("f")), OpenMode::CreateOrOpen)
        .unwrap();
    f.sync_data().unwrap();
    assert_eq!(d.list(DIR), vec!["f"]);

    d.set_disk_full(false);
    f.write_at(&[3; 1000], 512).unwrap();
    f.set_len(4096).unwrap();
    open(&d, "g", OpenMode::CreateNew)
        .write_at(b"ok", 0)
        .unwrap();
    assert_eq!(d.list(DIR), vec!["f", "g"]);
}

#[test]
fn crash_point_kills_the_disk_until_a_crash_and_old_handles_die() {
    let d = disk(0);
    let f = create_durable(&d, "f", b"synced");
    let base = d.ops_count();
    d.crash_after_ops(2);
    f.write_at(b"1", 6).unwrap();
    f.write_at(b"2", 7).unwrap();
    let err = f.write_at(b"3", 8).unwrap_err();
    assert!(is_dead_error(&err), "{err}");
    assert!(d.is_dead());
    assert_eq!(d.ops_count(), base + 2, "the failed op did not happen");
    let mut buf = [0; 1];
    assert!(is_dead_error(&f.read_at(&mut buf, 0).unwrap_err()));
    assert!(is_dead_error(&f.len().unwrap_err()));
    assert!(is_dead_error(&f.sync_data().unwrap_err()));
    assert!(is_dead_error(
        &d.open_file(Path::new(&p("f")), OpenMode::Read).unwrap_err()
    ));
    assert!(is_dead_error(&d.list_dir(Path::new(DIR)).unwrap_err()));
    assert!(is_dead_error(&d.sync_dir(Path::new(DIR)).unwrap_err()));
    assert!(is_dead_error(
        &d.try_lock(Path::new(&p("lock"))).unwrap_err()
    ));
    assert!(!d.is_dir(Path::new(DIR)));
    assert_eq!(
        bytes(&d, "f").unwrap(),
        b"synced12",
        "the third write had no effect"
    );

    d.power_loss();
    assert!(!d.is_dead());
    let err = f.read_at(&mut buf, 0).unwrap_err();
    assert!(!is_dead_error(&err), "old handle fails as stale, not dead");
    assert!(f.write_at(b"x", 0).is_err());
    assert!(f.sync_data().is_err());
    assert!(f.len().is_err());
    assert_eq!(
        &bytes(&d, "f").unwrap()[..6],
        b"synced",
        "the old handle changed nothing"
    );
    let g = open(&d, "f", OpenMode::ReadWrite);
    g.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"s");
    g.write_at(b"S", 0).unwrap();

    // A process crash also kills handles and revives the disk.
    d.kill();
    assert!(d.is_dead());
    d.process_crash();
    assert!(!d.is_dead());
    assert!(g.len().is_err());
    assert_eq!(&bytes(&d, "f").unwrap()[..6], b"Synced");
}

#[test]
fn crash_after_syncs_stops_at_a_sync() {
    let d = disk(0);
    let f = create_durable(&d, "f", b"a");
    let syncs = d.sync_count();
    d.crash_after_syncs(1);
    f.write_at(b"b", 1).unwrap();
    f.sync_data().unwrap();
    f.write_at(b"c", 2).unwrap();
    assert!(is_dead_error(&f.sync_data().unwrap_err()));
    assert_eq!(d.sync_count(), syncs + 1);
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(bytes(&d, "f").unwrap(), b"ab");
}

/// A small workload: returns normally if every op succeeded.
fn workload(d: &SimDisk) -> io::Result<()> {
    let f = d.open_file(Path::new(&p("seg")), OpenMode::CreateNew)?;
    d.sync_dir(Path::new(DIR))?;
    for i in 0..5u8 {
        f.write_at(&[i; 700], u64::from(i) * 700)?;
        f.sync_data()?;
    }
    let t = d.open_file(Path::new(&p("cursor.tmp")), OpenMode::CreateNew)?;
    t.write_at(b"cursor=5", 0)?;
    t.sync_all()?;
    d.rename(Path::new(&p("cursor.tmp")), Path::new(&p("cursor")))?;
    d.sync_dir(Path::new(DIR))?;
    Ok(())
}

#[test]
fn every_crash_point_is_reachable_and_synced_data_survives() {
    let d = disk(0);
    let base = d.ops_count();
    workload(&d).unwrap();
    let total = d.ops_count() - base;
    assert_eq!(total, 17);
    for k in 0..total {
        let d = disk(k);
        d.crash_after_ops(k);
        assert!(is_dead_error(&workload(&d).unwrap_err()), "crash point {k}");
        assert_eq!(d.ops_count() - base, k);
        d.power_loss();
        // Writes before the last completed sync of "seg" survive.
        let seg = bytes(&d, "seg");
        // ops: create(1), sync_dir(2), then write/sync pairs at 3..=12, so
        // the i-th sync of "seg" is op 4 + 2i.
        if k >= 2 {
            let synced = (k.saturating_sub(2) / 2).min(5) as usize;
            let seg = seg.expect("seg was created and its directory synced");
            for i in 0..synced {
                assert!(
                    seg[i * 700..(i + 1) * 700].iter().all(|&b| b == i as u8),
                    "k {k}"
                );
            }
        }
        if let Some(c) = bytes(&d, "cursor") {
            assert_eq!(c, b"cursor=5", "k {k}: a renamed cursor is whole");
        }
    }
    let d = disk(0);
    workload(&d).unwrap();
    d.power_loss();
    assert_eq!(bytes(&d, "cursor").unwrap(), b"cursor=5");
}

/// Everything on the disk after a seeded scenario with power loss.
fn snapshot_after_scenario(seed: u64) -> Vec<(String, Option<Vec<u8>>)> {
    let d = disk(seed);
    let a = create_durable(&d, "a", &[1; 3000]);
    for i in 0..10u64 {
        a.write_at(&[i as u8 + 2; 600], i * 300).unwrap();
    }
    a.set_len(5000).unwrap();
    open(&d, "b", OpenMode::CreateNew)
        .write_at(&[9; 1500], 0)
        .unwrap();
    open(&d, "c", OpenMode::CreateNew)
        .write_at(&[7; 800], 100)
        .unwrap();
    d.rename(Path::new(&p("b")), Path::new(&p("d"))).unwrap();
    d.list_dir(Path::new(DIR)).unwrap();
    d.power_loss();
    d.list(DIR)
        .into_iter()
        .map(|n| {
            let b = bytes(&d, &n);
            (n, b)
        })
        .collect()
}

#[test]
fn same_seed_same_result() {
    let mut distinct = Vec::new();
    for seed in 0..20 {
        let first = snapshot_after_scenario(seed);
        assert_eq!(first, snapshot_after_scenario(seed), "seed {seed}");
        if !distinct.contains(&first) {
            distinct.push(first);
        }
    }
    assert!(
        distinct.len() > 5,
        "the seed hardly matters: {} outcomes",
        distinct.len()
    );

    // list_dir order is seeded too (and not always sorted).
    let orders = |seed| {
        let d = disk(seed);
        for n in ["a", "b", "c", "d", "e"] {
            open(&d, n, OpenMode::CreateNew);
        }
        (0..5)
            .map(|_| d.list_dir(Path::new(DIR)).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(orders(4), orders(4));
    assert!(orders(4).iter().any(|o| o != &["a", "b", "c", "d", "e"]));
}

#[test]
fn lock_is_exclusive_and_released_on_drop_and_crash() {
    let d = disk(0);
    let path = Path::new("/db/LOCK");
    let first = d.try_lock(path).unwrap();
    assert_eq!(d.list(DIR), vec!["LOCK"], "try_lock creates the file");
    assert_eq!(
        d.try_lock(path).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    drop(first);
    let second = d.try_lock(path).unwrap();
    assert_eq!(
        d.try_lock(path).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );

    sync_dir(&d);
    d.power_loss();
    let third = d.try_lock(path).unwrap();
    // The stale guard's drop must not release the new holder's lock.
    drop(second);
    assert_eq!(
        d.try_lock(path).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    d.process_crash();
    let fourth = d.try_lock(path).unwrap();
    drop(third);
    assert_eq!(
        d.try_lock(path).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    drop(fourth);
    d.try_lock(path).unwrap();
}

#[test]
fn process_crash_keeps_the_page_cache_but_not_durability() {
    let d = disk(0);
    let f = create_durable(&d, "f", &[1; 512]);
    f.write_at(&[2; 512], 0).unwrap();
    open(&d, "g", OpenMode::CreateNew);
    d.process_crash();
    assert_eq!(bytes(&d, "f").unwrap(), vec![2; 512]);
    assert_eq!(d.list(DIR), vec!["f", "g"]);
    // Nothing became durable: a power loss afterwards can still lose it.
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(bytes(&d, "f").unwrap(), vec![1; 512]);
    assert_eq!(d.list(DIR), vec!["f"]);
}

#[test]
fn process_crash_then_power_loss_with_pending_entry_changes() {
    let mut kept = 0;
    for seed in 0..50 {
        let d = disk(seed);
        open(&d, "x", OpenMode::CreateNew)
            .write_at(b"data", 0)
            .unwrap();
        d.remove_file(Path::new(&p("x"))).unwrap();
        d.process_crash();
        assert_eq!(bytes(&d, "x"), None);
        // The create may still reach the medium without the remove.
        d.power_loss();
        if let Some(b) = bytes(&d, "x") {
            assert!(b.is_empty() || b.len() == 4, "{b:?}");
            kept += 1;
        }
    }
    assert!(kept > 0);
}

#[test]
fn bit_flips_and_corruption() {
    let d = disk(0);
    let f = create_durable(&d, "f", &[0; 64]);
    d.flip_bit_on_read(p("f"), 10, 3).unwrap();
    let mut buf = [0; 64];
    f.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf[10], 8);
    assert_eq!(buf.iter().filter(|&&b| b != 0).count(), 1);
    let mut small = [0; 4];
    f.read_at(&mut small, 8).unwrap();
    assert_eq!(small, [0, 0, 8, 0]);
    f.read_at(&mut small, 11).unwrap();
    assert_eq!(small, [0; 4], "a read not covering the byte is clean");
    assert_eq!(
        bytes(&d, "f").unwrap(),
        vec![0; 64],
        "stored bytes unchanged"
    );

    d.corrupt_durable(p("f"), 20, 0xFF).unwrap();
    assert_eq!(bytes(&d, "f").unwrap()[20], 0xFF);
    d.power_loss();
    assert_eq!(d.durable_bytes(p("f")).unwrap()[20], 0xFF);
    assert!(d.corrupt_durable(p("f"), 64, 1).is_err());
    assert!(d.corrupt_durable(p("nope"), 0, 1).is_err());
}

#[test]
fn file_basics() {
    let d = disk(0);
    assert!(!d.create_dir_all(Path::new(DIR)).unwrap(), "already there");
    assert!(d.is_dir(Path::new(DIR)) && d.is_dir(Path::new("/")));
    assert!(!d.is_dir(Path::new("/nope")));
    assert_eq!(
        d.open_file(Path::new("/nope/f"), OpenMode::CreateNew)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        d.open_file(Path::new(&p("f")), OpenMode::Read)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
    let f = open(&d, "f", OpenMode::CreateNew);
    assert_eq!(
        d.open_file(Path::new(&p("f")), OpenMode::CreateNew)
            .unwrap_err()
            .kind(),
        io::ErrorKind::AlreadyExists
    );
    assert!(f.is_empty().unwrap());
    f.write_at(b"hello", 3).unwrap();
    assert_eq!(f.len().unwrap(), 8);
    assert!(f.map().unwrap().is_none());
    let mut buf = [0; 8];
    f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"\0\0\0hello");
    let mut buf = [0; 2];
    assert_eq!(
        f.read_at(&mut buf, 7).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );

    let r = open(&d, "f", OpenMode::Read);
    assert_eq!(r.write_at(b"x", 0).unwrap_err().raw_os_error(), Some(9));
    assert_eq!(r.set_len(0).unwrap_err().raw_os_error(), Some(9));
    assert_eq!(r.len().unwrap(), 8);

    d.create_dir_all(Path::new("/db/sub/deeper")).unwrap();
    let mut names = d.list_dir(Path::new(DIR)).unwrap();
    names.sort();
    assert_eq!(names, vec!["f", "sub"]);
    assert_eq!(
        d.open_file(Path::new("/db/sub"), OpenMode::Read)
            .unwrap_err()
            .kind(),
        io::ErrorKind::IsADirectory
    );
    // Relative paths and `.` components work.
    assert!(d.create_dir_all(Path::new("rel/./dir")).unwrap());
    assert!(d.is_dir(Path::new("rel/dir")));
}

// ---------------------------------------------------------------------------
// Directories: made, removed and moved between, with power loss.

/// `/db/g` as a path.
const G: &str = "/db/g";

fn g(name: &str) -> String {
    format!("{G}/{name}")
}

fn path(s: &str) -> &Path {
    Path::new(s)
}

/// Creates the file at `at` with `bytes` and syncs its data (not its
/// directory).
fn create_synced_file(d: &SimDisk, at: &str, bytes: &[u8]) -> Box<dyn StorageFile> {
    let f = d.open_file(path(at), OpenMode::CreateNew).unwrap();
    f.write_at(bytes, 0).unwrap();
    f.sync_data().unwrap();
    f
}

/// A disk with `/db` and `/db/g`, both durable (the mkdir synced in `/db`).
fn disk_with_group(seed: u64) -> SimDisk {
    let d = disk(seed);
    assert!(d.create_dir_all(path(G)).unwrap());
    sync_dir(&d);
    d
}

#[test]
fn unsynced_mkdir_is_lost_with_everything_in_it() {
    // The directory's own contents are durable, but not its entry in /db.
    let d = disk(0);
    assert!(d.create_dir_all(path("/db/g/h")).unwrap());
    create_synced_file(&d, &g("f"), b"in g");
    create_synced_file(&d, "/db/g/h/x", b"in h");
    d.sync_dir(path(G)).unwrap();
    d.sync_dir(path("/db/g/h")).unwrap();
    assert_eq!(d.list(DIR), vec!["g"]);
    assert_eq!(d.list(G), vec!["f", "h"]);
    assert!(d.list_durable(DIR).is_empty());
    assert!(
        d.list_durable(G).is_empty(),
        "g itself is not durably reachable"
    );
    d.power_loss_with(LossMode::DropAll);
    assert!(!d.is_dir(path(G)));
    assert!(!d.is_dir(path("/db/g/h")));
    assert!(d.list_dir(path(DIR)).unwrap().is_empty());
    assert_eq!(d.file_bytes(g("f")), None);
    assert_eq!(d.file_bytes("/db/g/h/x"), None);
    assert_eq!(
        d.open_file(path(&g("f")), OpenMode::Read)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        d.list_dir(path(G)).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    // The name is free again: a new directory there is empty.
    assert!(d.create_dir_all(path(G)).unwrap());
    assert!(d.list(G).is_empty());

    // KeepAll keeps the unsynced mkdir (and what was synced inside it).
    let d = disk(0);
    d.create_dir_all(path(G)).unwrap();
    create_synced_file(&d, &g("f"), b"in g");
    d.sync_dir(path(G)).unwrap();
    d.power_loss_with(LossMode::KeepAll);
    assert!(d.is_dir(path(G)));
    assert_eq!(d.file_bytes(g("f")).unwrap(), b"in g");

    // A process crash keeps it in the page cache, not on the medium.
    let d = disk(0);
    d.create_dir_all(path(G)).unwrap();
    create_synced_file(&d, &g("f"), b"in g");
    d.sync_dir(path(G)).unwrap();
    d.process_crash();
    assert_eq!(d.file_bytes(g("f")).unwrap(), b"in g");
    assert!(!d.create_dir_all(path(G)).unwrap(), "still there");
    d.power_loss_with(LossMode::DropAll);
    assert!(!d.is_dir(path(G)), "the process crash made nothing durable");

    // Random loss: both outcomes reachable; when kept, it is whole.
    let (mut lost, mut kept) = (0, 0);
    for seed in 0..100 {
        let d = disk(seed);
        d.create_dir_all(path(G)).unwrap();
        create_synced_file(&d, &g("f"), b"in g");
        d.sync_dir(path(G)).unwrap();
        d.power_loss();
        if d.is_dir(path(G)) {
            assert_eq!(d.file_bytes(g("f")).unwrap(), b"in g", "seed {seed}");
            kept += 1;
        } else {
            assert_eq!(d.list(DIR), Vec::<String>::new(), "seed {seed}");
            lost += 1;
        }
    }
    assert!(lost > 0 && kept > 0, "lost {lost}, kept {kept}");
}

#[test]
fn synced_mkdir_is_kept() {
    for seed in 0..100 {
        let d = disk(seed);
        assert!(d.create_dir_all(path("/db/g/h")).unwrap());
        sync_dir(&d);
        d.sync_dir(path(G)).unwrap();
        create_synced_file(&d, "/db/g/h/x", b"x");
        d.sync_dir(path("/db/g/h")).unwrap();
        d.power_loss();
        assert!(d.is_dir(path("/db/g/h")), "seed {seed}");
        assert_eq!(d.file_bytes("/db/g/h/x").unwrap(), b"x", "seed {seed}");
    }
    // Synced at the top only: the inner mkdir is still pending in g.
    let d = disk(0);
    d.create_dir_all(path("/db/g/h")).unwrap();
    sync_dir(&d);
    d.power_loss_with(LossMode::DropAll);
    assert!(d.is_dir(path(G)));
    assert!(!d.is_dir(path("/db/g/h")));
}

#[test]
fn a_file_in_a_lost_directory_survives_by_another_durable_name() {
    // /db/a moved into an unsynced group: only g is synced, so the removal
    // of /db/a is not durable and the file is still reachable there.
    let d = disk(0);
    create_durable(&d, "a", b"A");
    d.create_dir_all(path(G)).unwrap();
    d.rename(path(&p("a")), path(&g("a"))).unwrap();
    d.sync_dir(path(G)).unwrap();
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(d.list(DIR), vec!["a"]);
    assert_eq!(bytes(&d, "a").unwrap(), b"A");

    // Changes of one directory reach the medium in order: /db cannot lose
    // the mkdir of g and keep the removal of a that came after it.
    for seed in 0..100 {
        let d = disk(seed);
        create_durable(&d, "a", b"A");
        d.create_dir_all(path(G)).unwrap();
        d.rename(path(&p("a")), path(&g("a"))).unwrap();
        d.sync_dir(path(G)).unwrap();
        d.power_loss();
        let names = d.list(DIR);
        assert!(
            names == ["a"] || names == ["a", "g"] || names == ["g"],
            "seed {seed}: {names:?}"
        );
        assert!(bytes(&d, "a").is_some() || d.file_bytes(g("a")).is_some());
    }

    // The classic mistake: a file moved from group g into a new group h
    // whose mkdir was never made durable (its parent /db not synced after
    // it); both groups synced. The file is gone under every name.
    let lose = |sync_parent: bool| {
        let d = disk_with_group(0);
        create_synced_file(&d, &g("a"), b"A");
        d.sync_dir(path(G)).unwrap();
        assert!(d.create_dir_all(path("/db/h")).unwrap());
        if sync_parent {
            sync_dir(&d);
        }
        d.rename(path(&g("a")), path("/db/h/a")).unwrap();
        d.sync_dir(path("/db/h")).unwrap();
        d.sync_dir(path(G)).unwrap();
        d.power_loss_with(LossMode::DropAll);
        d
    };
    let d = lose(false);
    assert!(!d.is_dir(path("/db/h")));
    assert!(d.list(G).is_empty());
    assert_eq!(d.file_bytes("/db/h/a"), None);
    let d = lose(true);
    assert_eq!(d.file_bytes("/db/h/a").unwrap(), b"A");
    assert!(d.list(G).is_empty());
}

/// Which names of a file moved from `/db/a` to `/db/g/a` a power loss kept.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Move {
    Old,
    New,
    Both,
    Neither,
}

/// Moves the durable `/db/a` into the durable group `/db/g` and cuts the
/// power with `mode`; returns which names survived (checking their bytes).
fn move_then_lose(seed: u64, mode: LossMode) -> (Move, SimDisk) {
    let d = disk_with_group(seed);
    create_durable(&d, "a", b"A");
    d.rename(path(&p("a")), path(&g("a"))).unwrap();
    assert_eq!(d.list(DIR), vec!["g"]);
    assert_eq!(d.list(G), vec!["a"]);
    assert_eq!(d.file_bytes(g("a")).unwrap(), b"A");
    d.power_loss_with(mode);
    let old = bytes(&d, "a");
    let new = d.file_bytes(g("a"));
    for b in [&old, &new].into_iter().flatten() {
        assert_eq!(b, b"A", "seed {seed}");
    }
    let outcome = match (old.is_some(), new.is_some()) {
        (true, false) => Move::Old,
        (false, true) => Move::New,
        (true, true) => Move::Both,
        (false, false) => Move::Neither,
    };
    (outcome, d)
}

#[test]
fn rename_across_directories_may_keep_old_new_both_or_neither() {
    let mut seen: BTreeMap<Move, u32> = BTreeMap::new();
    for seed in 0..200 {
        let (outcome, d) = move_then_lose(seed, LossMode::Random);
        *seen.entry(outcome).or_default() += 1;
        if outcome == Move::Both {
            // The two names are one file, as hard links.
            let a = open(&d, "a", OpenMode::ReadWrite);
            a.write_at(b"B", 0).unwrap();
            assert_eq!(d.file_bytes(g("a")).unwrap(), b"B");
            // POSIX: renaming a name onto another name of the same file
            // does nothing.
            d.rename(path(&p("a")), path(&g("a"))).unwrap();
            assert_eq!(d.list(DIR), vec!["a", "g"]);
            assert_eq!(d.list(G), vec!["a"]);
            // Removing one name leaves the other.
            d.remove_file(path(&p("a"))).unwrap();
            assert_eq!(d.file_bytes(g("a")).unwrap(), b"B");
        }
    }
    for outcome in [Move::Old, Move::New, Move::Both, Move::Neither] {
        assert!(seen.contains_key(&outcome), "never {outcome:?}: {seen:?}");
    }

    for seed in 0..20 {
        assert_eq!(move_then_lose(seed, LossMode::KeepAll).0, Move::New);
        assert_eq!(move_then_lose(seed, LossMode::DropAll).0, Move::Old);
    }

    // With both directories synced, only the new name.
    for seed in 0..50 {
        let d = disk_with_group(seed);
        create_durable(&d, "a", b"A");
        d.rename(path(&p("a")), path(&g("a"))).unwrap();
        d.sync_dir(path(G)).unwrap();
        sync_dir(&d);
        d.power_loss();
        assert_eq!(d.list(DIR), vec!["g"], "seed {seed}");
        assert_eq!(d.file_bytes(g("a")).unwrap(), b"A", "seed {seed}");
    }
    // Only the destination synced: new, or both.
    let d = disk_with_group(0);
    create_durable(&d, "a", b"A");
    d.rename(path(&p("a")), path(&g("a"))).unwrap();
    d.sync_dir(path(G)).unwrap();
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(d.list(DIR), vec!["a", "g"]);
    assert_eq!(d.list(G), vec!["a"]);
}

#[test]
fn rename_across_directories_replaces_the_target_and_refuses_directories() {
    for (mode, want_old, want_new) in [
        (LossMode::KeepAll, None, &b"A"[..]),
        (LossMode::DropAll, Some(&b"A"[..]), &b"old"[..]),
    ] {
        let d = disk_with_group(0);
        create_durable(&d, "a", b"A");
        create_synced_file(&d, &g("a"), b"old");
        d.sync_dir(path(G)).unwrap();
        d.rename(path(&p("a")), path(&g("a"))).unwrap();
        assert_eq!(d.file_bytes(g("a")).unwrap(), b"A");
        d.power_loss_with(mode);
        assert_eq!(bytes(&d, "a").as_deref(), want_old, "{mode:?}");
        assert_eq!(d.file_bytes(g("a")).unwrap(), want_new, "{mode:?}");
    }

    let d = disk_with_group(0);
    create_durable(&d, "a", b"A");
    d.create_dir_all(path("/db/h")).unwrap();
    let kind = |r: io::Result<()>| r.unwrap_err().kind();
    assert_eq!(
        kind(d.rename(path(&p("a")), path("/db/nowhere/a"))),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        kind(d.rename(path(G), path("/db/h/g"))),
        io::ErrorKind::IsADirectory,
        "directories cannot be renamed"
    );
    assert_eq!(
        kind(d.rename(path(&p("a")), path("/db/h"))),
        io::ErrorKind::IsADirectory
    );
    assert_eq!(
        kind(d.rename(path(&g("missing")), path(&p("b")))),
        io::ErrorKind::NotFound
    );
    assert_eq!(d.list(DIR), vec!["a", "g", "h"]);
    assert!(d.list(G).is_empty() && d.list("/db/h").is_empty());
}

#[test]
fn remove_dir_refuses_what_is_not_an_empty_directory() {
    let d = disk_with_group(0);
    create_synced_file(&d, &g("f"), b"f");
    let kind = |r: io::Result<()>| r.unwrap_err().kind();
    assert_eq!(
        kind(d.remove_dir(path(G))),
        io::ErrorKind::DirectoryNotEmpty
    );
    assert_eq!(
        kind(d.remove_dir(path("/db/nope"))),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        kind(d.remove_dir(path("/db/nope/deeper"))),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        kind(d.remove_dir(path(&g("f")))),
        io::ErrorKind::NotADirectory
    );
    assert_eq!(kind(d.remove_file(path(G))), io::ErrorKind::IsADirectory);
    // A subdirectory is an entry too.
    d.remove_file(path(&g("f"))).unwrap();
    d.create_dir_all(path("/db/g/h")).unwrap();
    assert_eq!(
        kind(d.remove_dir(path(G))),
        io::ErrorKind::DirectoryNotEmpty
    );
    // Empty in the volatile state is enough, synced or not.
    d.remove_dir(path("/db/g/h")).unwrap();
    d.remove_dir(path(G)).unwrap();
    assert!(!d.is_dir(path(G)));
    assert!(d.list_dir(path(DIR)).unwrap().is_empty());
    assert_eq!(kind(d.remove_dir(path(G))), io::ErrorKind::NotFound);
    assert_eq!(
        kind(d.sync_dir(path(G))),
        io::ErrorKind::NotFound,
        "a removed directory cannot be synced"
    );
    assert_eq!(
        d.open_file(path(&g("f")), OpenMode::CreateNew)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
}

/// `/db/g` holding `f` (durable) and `h` (created, not synced in g); both
/// then removed, and g too, nothing synced after.
fn remove_group(seed: u64) -> SimDisk {
    let d = disk_with_group(seed);
    create_synced_file(&d, &g("f"), b"durable f");
    d.sync_dir(path(G)).unwrap();
    create_synced_file(&d, &g("h"), b"h");
    d.remove_file(path(&g("f"))).unwrap();
    d.remove_file(path(&g("h"))).unwrap();
    d.remove_dir(path(G)).unwrap();
    assert!(!d.is_dir(path(G)));
    assert_eq!(d.list(DIR), Vec::<String>::new());
    assert_eq!(
        d.list_dir(path(G)).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        d.open_file(path(&g("f")), OpenMode::Read)
            .unwrap_err()
            .kind(),
        io::ErrorKind::NotFound
    );
    d
}

#[test]
fn unsynced_rmdir_comes_back_with_its_durable_entries() {
    let d = remove_group(0);
    d.power_loss_with(LossMode::DropAll);
    assert!(d.is_dir(path(G)));
    assert_eq!(d.list(G), vec!["f"], "h was never durable in g");
    assert_eq!(d.file_bytes(g("f")).unwrap(), b"durable f");

    let d = remove_group(0);
    d.process_crash();
    assert!(!d.is_dir(path(G)), "a process crash keeps the removal");
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(d.list(G), vec!["f"], "but it was never durable");

    let d = remove_group(0);
    d.power_loss_with(LossMode::KeepAll);
    assert!(!d.is_dir(path(G)));
    assert!(d.list(DIR).is_empty());

    // Random: gone, or back with a state g's own changes allow: its
    // durable f, then an in-order prefix of (create h, remove f, remove h).
    let mut seen: BTreeMap<Vec<String>, u32> = BTreeMap::new();
    let mut gone = 0;
    for seed in 0..300 {
        let d = remove_group(seed);
        d.power_loss();
        if !d.is_dir(path(G)) {
            gone += 1;
            continue;
        }
        let names = d.list(G);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert!(
            [&["f"][..], &["f", "h"], &["h"], &[]].contains(&refs.as_slice()),
            "seed {seed}: {names:?}"
        );
        if let Some(f) = d.file_bytes(g("f")) {
            assert_eq!(f, b"durable f");
        }
        *seen.entry(names).or_default() += 1;
    }
    assert!(gone > 0, "the removal never stuck");
    assert!(
        seen.len() == 4,
        "not every state of g came back: {seen:?}, gone {gone}"
    );
}

#[test]
fn synced_rmdir_stays_gone() {
    for seed in 0..100 {
        let d = remove_group(seed);
        sync_dir(&d);
        d.power_loss();
        assert!(!d.is_dir(path(G)), "seed {seed}");
        assert!(d.list(DIR).is_empty(), "seed {seed}");
        assert_eq!(d.durable_bytes(g("f")), None);
    }
    // The removal durable, the removals inside it not: gone all the same.
    let d = disk_with_group(0);
    create_synced_file(&d, &g("f"), b"f");
    d.sync_dir(path(G)).unwrap();
    d.remove_file(path(&g("f"))).unwrap();
    d.remove_dir(path(G)).unwrap();
    sync_dir(&d);
    d.power_loss_with(LossMode::DropAll);
    assert!(!d.is_dir(path(G)));
    assert!(d.list(DIR).is_empty());
}

#[test]
fn mkdir_at_the_name_of_a_pending_rmdir_makes_a_new_directory() {
    let setup = |seed| {
        let d = remove_group(seed);
        assert!(d.create_dir_all(path(G)).unwrap(), "made anew");
        assert!(d.list(G).is_empty(), "the new directory is empty");
        create_synced_file(&d, &g("x"), b"x");
        d.sync_dir(path(G)).unwrap();
        assert_eq!(d.list(G), vec!["x"]);
        d
    };
    let d = setup(0);
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(d.list(G), vec!["f"], "the old directory came back");
    let d = setup(0);
    d.power_loss_with(LossMode::KeepAll);
    assert_eq!(d.list(G), vec!["x"], "the new directory");
    assert_eq!(d.file_bytes(g("x")).unwrap(), b"x");
    let d = setup(0);
    d.process_crash();
    assert_eq!(d.list(G), vec!["x"]);
    d.power_loss_with(LossMode::DropAll);
    assert_eq!(d.list(G), vec!["f"], "the old one was kept for this");

    // Random: the old g (in one of its states), none, or the new one; never
    // a mix of the two.
    let (mut old, mut none, mut new) = (0, 0, 0);
    for seed in 0..200 {
        let d = setup(seed);
        d.power_loss();
        if !d.is_dir(path(G)) {
            none += 1;
        } else if d.list(G) == ["x"] {
            new += 1;
        } else {
            assert!(d.file_bytes(g("x")).is_none(), "seed {seed}: a mix");
            old += 1;
        }
    }
    assert!(old > 0 && none > 0 && new > 0, "{old} {none} {new}");
}

#[test]
fn crash_points_count_mkdir_and_rmdir() {
    let d = disk(0);
    let ops = d.ops_count();
    assert!(d.create_dir_all(path("/db/a/b/c")).unwrap());
    assert_eq!(d.ops_count(), ops + 3, "one mkdir per directory made");
    assert!(!d.create_dir_all(path("/db/a/b")).unwrap());
    assert_eq!(d.ops_count(), ops + 3, "nothing made, nothing counted");
    d.remove_dir(path("/db/a/b/c")).unwrap();
    assert_eq!(d.ops_count(), ops + 4);
    d.remove_dir(path("/db/a")).unwrap_err();
    assert_eq!(d.ops_count(), ops + 5, "a refused rmdir counts too");
    assert_eq!(d.sync_count(), 0, "neither is a sync");

    // A crash point inside create_dir_all: the outer mkdir happened, the
    // inner one did not.
    let d = disk(0);
    d.crash_after_ops(1);
    let err = d.create_dir_all(path("/db/x/y")).unwrap_err();
    assert!(is_dead_error(&err), "{err}");
    assert!(d.is_dead());
    assert!(is_dead_error(&d.create_dir_all(path(DIR)).unwrap_err()));
    assert!(is_dead_error(&d.remove_dir(path("/db/x")).unwrap_err()));
    d.process_crash();
    assert!(d.is_dir(path("/db/x")));
    assert!(!d.is_dir(path("/db/x/y")));

    // A crash point at rmdir: no effect.
    let d = disk_with_group(0);
    d.crash_after_ops(0);
    assert!(is_dead_error(&d.remove_dir(path(G)).unwrap_err()));
    d.process_crash();
    assert!(d.is_dir(path(G)));
    assert_eq!(d.list(DIR), vec!["g"]);
}

/// A segment moved into a new group and back out, the group then removed:
/// mkdir, sync the parent; each rename followed by a sync of its
/// destination, then of its source; rmdir, sync the parent.
fn group_move(d: &SimDisk) -> io::Result<()> {
    let made = d.create_dir_all(path(G))?;
    assert!(made);
    d.sync_dir(path(DIR))?;
    d.rename(path(&p("seg")), path(&g("seg")))?; // op 2
    d.sync_dir(path(G))?;
    d.sync_dir(path(DIR))?;
    d.rename(path(&g("seg")), path(&p("seg2")))?; // op 5
    d.sync_dir(path(DIR))?;
    d.sync_dir(path(G))?;
    d.remove_dir(path(G))?;
    d.sync_dir(path(DIR))?;
    Ok(())
}

#[test]
fn every_crash_point_of_a_group_move() {
    let setup = |seed| {
        let d = disk(seed);
        create_durable(&d, "seg", b"segment");
        d
    };
    let d = setup(0);
    let base = d.ops_count();
    group_move(&d).unwrap();
    let total = d.ops_count() - base;
    assert_eq!(total, 10);
    // Between a rename across directories and the sync of its destination,
    // power loss may keep neither name (ops 2 and 5 done, 3 and 6 not).
    let window = [3, 6];
    let mut states: BTreeMap<Vec<String>, u32> = BTreeMap::new();
    let mut lost_in_window = 0;
    for k in 0..=total {
        for (seed, mode) in (0..40)
            .map(|s| (s, LossMode::Random))
            .chain([(0, LossMode::KeepAll), (0, LossMode::DropAll)])
        {
            let d = setup(seed);
            d.crash_after_ops(k);
            let r = group_move(&d);
            assert_eq!(r.is_err(), k < total, "k {k}");
            d.power_loss_with(mode);
            let names: Vec<String> = ["/db/seg", "/db/g/seg", "/db/seg2"]
                .into_iter()
                .filter(|n| d.file_bytes(n).is_some())
                .map(str::to_owned)
                .collect();
            for n in &names {
                assert_eq!(d.file_bytes(n).unwrap(), b"segment");
            }
            if names.is_empty() {
                assert!(
                    window.contains(&k) && mode == LossMode::Random,
                    "k {k} seed {seed} {mode:?}: the file was lost"
                );
                lost_in_window += 1;
            }
            if k == total {
                assert!(!d.is_dir(path(G)), "the removal was synced");
            }
            *states.entry(names).or_default() += 1;
        }
    }
    assert!(lost_in_window > 0, "neither name was never the outcome");
    assert!(
        states.keys().any(|n| n.len() == 2),
        "both names never survived: {states:?}"
    );
}

#[test]
fn syncing_the_source_of_a_move_before_its_destination_can_lose_the_file() {
    for (careful, kept) in [(true, true), (false, false)] {
        let d = disk(0);
        create_durable(&d, "seg", b"segment");
        d.create_dir_all(path(G)).unwrap();
        d.sync_dir(path(DIR)).unwrap();
        d.rename(path(&p("seg")), path(&g("seg"))).unwrap();
        let first = if careful { G } else { DIR };
        d.sync_dir(path(first)).unwrap();
        d.power_loss_with(LossMode::DropAll);
        let found = bytes(&d, "seg").or_else(|| d.file_bytes(g("seg")));
        assert_eq!(found.is_some(), kept, "careful: {careful}");
    }
}
