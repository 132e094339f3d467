//! `durq upgrade` / `durq::upgrade`: converting a log of format version 2
//! (segment files directly in the log directory) into format version 3
//! (segment files in group directories), in place.
//!
//! The format-2 logs are made from real logs of this build: every segment
//! moved out of its group into the log directory, its header's version set
//! to 2 and its header CRC recomputed, the group directories removed. That
//! is byte for byte what format 2 wrote (the formats differ in nothing
//! else).

#[path = "support/layout.rs"]
mod layout;
#[path = "support/simdisk.rs"]
mod simdisk;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use durq::storage::{FsStorage, Storage};
use durq::upgrade::{self, UpgradeReport};
use durq::{Error, Log, MIN_SEGMENT_SIZE, Options, Retention, names};
use simdisk::{LossMode, SimDisk};

const DURQ: &str = env!("CARGO_BIN_EXE_durq");

/// The client registered in every test log, and its acknowledged position.
const CLIENT: &str = "billing";

fn durq(args: &[&str]) -> Output {
    Command::new(DURQ).args(args).output().expect("run durq")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// What a test log holds.
#[derive(Debug, Clone)]
struct Expected {
    /// The first retained offset (retention released the segments before).
    first: u64,
    /// Every retained record's payload, from `first`.
    payloads: Vec<Vec<u8>>,
    /// The client's acknowledged position.
    acked: u64,
}

impl Expected {
    fn end(&self) -> u64 {
        self.first + self.payloads.len() as u64
    }
}

fn payload(i: u64) -> Vec<u8> {
    // 24 + 104 bytes a record: 31 records in a 4 KiB segment.
    let mut v = format!("record {i:06} ").into_bytes();
    v.resize(100 + (i % 5) as usize, b'a' + (i % 26) as u8);
    v
}

/// Makes a real log (this build's format) in `dir`: `records` records in
/// segments of `segment_size` bytes, a client that acknowledged `acked`
/// of them, and retention (acknowledged by all) having released the
/// segments before the one holding offset `acked`.
fn make_current_log(dir: &Path, segment_size: u64, records: u64, acked: u64) -> Expected {
    let log = Options::new()
        .segment_size(segment_size)
        .background_preallocation(false)
        .retention(Retention::acked_by_all())
        .open(dir)
        .expect("open");
    let c = log.consumer(CLIENT).expect("client");
    let mut batch = Vec::new();
    for i in 0..records {
        batch.push(payload(i));
        if batch.len() == 50 || i + 1 == records {
            log.append_batch(batch.drain(..)).expect("append");
        }
    }
    for _ in 0..acked {
        c.next()
            .expect("next")
            .expect("a message")
            .ack()
            .expect("ack");
    }
    log.apply_retention().expect("retention");
    let first = log.first_offset();
    assert!(first > 0, "retention released nothing");
    assert_eq!(log.end(), records);
    drop(c);
    drop(log);
    Expected {
        first,
        payloads: (first..records).map(payload).collect(),
        acked,
    }
}

/// Sets the format version in the header of the segment file `seg`, with
/// a valid header CRC.
fn set_header_version(seg: &Path, version: u32) {
    let mut b = fs::read(seg).expect("read segment");
    b[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    fs::write(seg, b).expect("write segment");
}

/// Turns the current-format log in `dir` into the format-2 log it would
/// have been: segments directly in `dir`, headers of version 2, no group.
/// Returns the segment files, oldest first.
fn to_format2(dir: &Path) -> Vec<PathBuf> {
    let mut flat = Vec::new();
    for g in layout::groups(dir) {
        for seg in layout::segments_in(&g.path) {
            let to = dir.join(seg.file_name().expect("name"));
            fs::rename(&seg, &to).expect("move segment");
            set_header_version(&to, 2);
            flat.push(to);
        }
        fs::remove_dir(&g.path).expect("remove group");
    }
    assert!(layout::groups(dir).is_empty());
    flat.sort();
    flat
}

/// A format-2 log in `dir` of `records` records in 4 KiB segments.
fn make_format2_log(dir: &Path, records: u64, acked: u64) -> (Expected, Vec<PathBuf>) {
    let e = make_current_log(dir, MIN_SEGMENT_SIZE, records, acked);
    (e, to_format2(dir))
}

/// A directory's files: (path relative to it, bytes).
type Files = Vec<(PathBuf, Vec<u8>)>;

/// The format-2 log every simulated-disk test starts from (made once, on
/// the real file system): more than one group's worth of segments, the
/// first few released by retention so that the first group starts at a
/// segment other than its first possible one. Files as (path relative to
/// the log directory, bytes).
fn format2_fixture() -> &'static (Expected, Files) {
    static FIXTURE: OnceLock<(Expected, Files)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let per_group = names::SEGMENTS_PER_GROUP;
        // 31 records a segment: enough for `per_group + 6` segments, the
        // first 4 released by retention.
        let records = 31 * (per_group + 6) - 10;
        let (e, flat) = make_format2_log(&dir, records, 31 * 4 + 3);
        assert!(flat.len() as u64 > per_group, "{} segments", flat.len());
        assert_eq!(layout::seq_of(&flat[0]), 4);
        let mut files = Vec::new();
        collect_files(&dir, Path::new(""), &mut files);
        (e, files)
    })
}

fn collect_files(root: &Path, rel: &Path, out: &mut Files) {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    entries.sort();
    for name in entries {
        let r = rel.join(&name);
        let full = root.join(&r);
        if full.is_dir() {
            collect_files(root, &r, out);
        } else {
            out.push((r, fs::read(&full).expect("read")));
        }
    }
}

/// Every file and directory under `dir` with its bytes, sorted: to compare
/// a directory before and after a command that must change nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("list") {
        let path = e.expect("entry").path();
        if path.is_dir() {
            out.push((path.clone(), None));
            out.extend(snapshot(&path));
        } else {
            let bytes = fs::read(&path).expect("read");
            out.push((path, Some(bytes)));
        }
    }
    out.sort();
    out
}

/// Segment-named files lying directly in `dir` (the format-2 layout).
fn flat_segments(dir: &Path) -> Vec<String> {
    layout::entries(dir)
        .into_iter()
        .filter(|n| names::parse_segment_file_name(n).is_some())
        .collect()
}

/// Opens the log and checks that it holds exactly what `e` says: the same
/// retained offsets, every record's payload, the client's position.
fn check_log(log: &Log, e: &Expected) {
    assert_eq!(log.first_offset(), e.first, "first offset");
    assert_eq!(log.end(), e.end(), "end");
    let mut n = 0u64;
    for item in log.iter(e.first) {
        let (offset, rec) = item.expect("read record");
        let i = (offset - e.first) as usize;
        assert_eq!(offset, e.first + n, "offsets in order");
        assert_eq!(&*rec, &e.payloads[i][..], "payload of record {offset}");
        n += 1;
    }
    assert_eq!(n, e.payloads.len() as u64, "records read");
    let clients = log.consumers().expect("clients");
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(clients[0].name, CLIENT);
    assert_eq!(clients[0].acked, e.acked, "the client's position");
}

fn open_sim(disk: &SimDisk, dir: &Path) -> durq::Result<Log> {
    Options::new()
        .segment_size(MIN_SEGMENT_SIZE)
        .background_preallocation(false)
        .storage(Arc::new(disk.clone()))
        .open(dir)
}

/// Checks the groups of a converted log in `dir` on the real file system:
/// every segment in the group its number says, each group's name carrying
/// the base offset of its first segment.
fn check_groups(dir: &Path, expect_segments: usize) {
    let groups = layout::groups(dir);
    assert!(groups.len() >= 2, "{groups:?}");
    let mut n = 0;
    for g in &groups {
        let segs = layout::segments_in(&g.path);
        assert!(!segs.is_empty(), "{}", g.path.display());
        assert_eq!(layout::base_of(&segs[0]), g.base, "{}", g.path.display());
        for s in &segs {
            assert_eq!(names::group_of(layout::seq_of(s)), g.number);
            let b = fs::read(s).expect("read");
            assert_eq!(b[8..12], 3u32.to_le_bytes(), "{}", s.display());
        }
        n += segs.len();
    }
    assert_eq!(n, expect_segments);
    assert!(flat_segments(dir).is_empty());
}

// ---------------------------------------------------------------------------
// The whole path on the real file system, through the command line.
// ---------------------------------------------------------------------------

#[test]
fn a_format2_log_is_upgraded_in_place_and_reads_back_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let per_group = names::SEGMENTS_PER_GROUP;
    let (e, flat) = make_format2_log(&dir, 31 * (per_group + 10), 31 * 3 + 5);
    assert!(flat.len() as u64 > per_group + 3, "{}", flat.len());
    // A spare segment the format-2 writer left.
    fs::write(dir.join("spare-77-0.tmp"), vec![0u8; 4096]).expect("spare");

    // This build refuses the format-2 log, pointing to the upgrade.
    let err = Log::open(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedVersion { found: 2, .. }),
        "{err}"
    );
    let o = durq(&["stat", p(&dir)]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(&format!("`durq upgrade {}`", dir.display())),
        "{}",
        stderr(&o)
    );

    let o = durq(&["recover", p(&dir)]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(&format!("run `durq upgrade {}` first", dir.display())),
        "{}",
        stderr(&o)
    );

    // A dry run reports and changes nothing.
    let before = snapshot(&dir);
    let o = durq(&["upgrade", p(&dir), "--dry-run", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(snapshot(&dir), before, "the dry run changed something");
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["converted"], flat.len());
    assert_eq!(plan["segments"], flat.len());

    let o = durq(&["upgrade", p(&dir)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!(
            "converted: copied {} segment(s) ({} bytes)",
            flat.len(),
            flat.len() as u64 * MIN_SEGMENT_SIZE
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "leftover: removed {}",
            dir.join("spare-77-0.tmp").display()
        )),
        "{text}"
    );
    assert_eq!(
        text.matches("group: made ").count(),
        layout::groups(&dir).len(),
        "{text}"
    );
    assert!(text.contains("result: upgraded"), "{text}");
    check_groups(&dir, flat.len());
    // The first group is named after the first retained segment.
    assert_eq!(layout::groups(&dir)[0].base, e.first);
    assert!(!dir.join("spare-77-0.tmp").exists());

    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(": sound"), "{}", stdout(&o));
    let log = Log::open(&dir).expect("open the upgraded log");
    check_log(&log, &e);
    drop(log);

    // Again: nothing to do.
    let before = snapshot(&dir);
    let o = durq(&["upgrade", p(&dir), "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(r["already_current"], true);
    let o = durq(&["upgrade", p(&dir)]);
    assert_eq!(code(&o), 0);
    assert!(
        stdout(&o).contains("already of format version 3"),
        "{}",
        stdout(&o)
    );
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn segments_larger_than_a_copy_chunk_are_copied_and_compared_in_chunks() {
    // 3 MiB segments, records spread over all of each: the copy and the
    // comparison of an interrupted run's copy go chunk by chunk.
    let seg = 3 << 20;
    assert!(seg as usize > 2 * upgrade::COPY_CHUNK);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let log = Options::new()
        .segment_size(seg)
        .background_preallocation(false)
        .open(&dir)
        .expect("open");
    let c = log.consumer(CLIENT).expect("client");
    let big = |i: u64| vec![(i % 251) as u8; 700_000 + i as usize];
    let n = 14u64;
    for i in 0..n {
        log.append(big(i)).expect("append");
    }
    for _ in 0..3 {
        c.next()
            .expect("next")
            .expect("message")
            .ack()
            .expect("ack");
    }
    drop(c);
    drop(log);
    let e = Expected {
        first: 0,
        payloads: (0..n).map(big).collect(),
        acked: 3,
    };
    let flat = to_format2(&dir);
    assert!(flat.len() >= 3);

    // An interrupted run left a copy of segment 0 in its group that
    // differs from the original only in the third chunk: it is replaced.
    let group = dir.join(names::group_dir_name(0, 0));
    fs::create_dir(&group).expect("mkdir");
    let copy = group.join(flat[0].file_name().expect("name"));
    fs::copy(&flat[0], &copy).expect("copy");
    set_header_version(&copy, 3);
    let mut b = fs::read(&copy).expect("read");
    let at = 2 * upgrade::COPY_CHUNK + 17;
    assert_ne!(b[at], 0, "the byte lies inside a record");
    b[at] ^= 0x40;
    fs::write(&copy, &b).expect("write");
    let r = upgrade::upgrade(&FsStorage, &dir).expect("upgrade");
    assert_eq!(r.replaced_copies, vec![copy.clone()]);
    assert!(r.completed_copies.is_empty());
    assert_eq!(r.converted, flat.len());
    assert_eq!(r.bytes_copied, flat.len() as u64 * seg);
    let log = Log::open(&dir).expect("open");
    check_log(&log, &e);
}

// ---------------------------------------------------------------------------
// Crash safety on the simulated disk.
// ---------------------------------------------------------------------------

/// Lays the format-2 fixture out at `dir` on a new disk (durably).
fn sim_format2(seed: u64, dir: &Path) -> SimDisk {
    let disk = SimDisk::new(seed);
    disk.mkdir_durable(dir).expect("mkdir");
    for (rel, bytes) in &format2_fixture().1 {
        disk.put_file(dir.join(rel), bytes).expect("put");
    }
    disk
}

/// Segment-named files directly in `dir` on the disk.
fn sim_flat(disk: &SimDisk, dir: &Path) -> usize {
    disk.list(dir)
        .iter()
        .filter(|n| names::parse_segment_file_name(n).is_some())
        .count()
}

/// After an interrupted run and a power loss: opening the log must refuse
/// (changing nothing) unless the conversion had fully reached the disk.
fn check_interrupted_state(disk: &SimDisk, dir: &Path, what: &str) {
    let flats = sim_flat(disk, dir);
    let groups = disk
        .list(dir)
        .iter()
        .filter(|n| names::parse_group_dir_name(n).is_some())
        .count();
    if flats == 0 {
        // Every original is gone: each was removed only once its copy was
        // durable, so the conversion is complete and the log opens.
        assert!(groups > 0, "{what}: nothing left");
        return;
    }
    // The files directly in the log directory, with their bytes.
    let flat_files = || -> Vec<(String, Vec<u8>)> {
        disk.list(dir)
            .into_iter()
            .filter(|n| !n.ends_with(".group") && n != "clients")
            .map(|n| {
                let b = disk.file_bytes(dir.join(&n)).unwrap_or_default();
                (n, b)
            })
            .collect()
    };
    let before = flat_files();
    let err = open_sim(disk, dir).expect_err("a log part-way through an upgrade must not open");
    let msg = err.to_string();
    if groups == 0 {
        assert!(
            matches!(err, Error::UnsupportedVersion { found: 2, .. }),
            "{what}: {msg}"
        );
    } else {
        assert!(
            matches!(err, Error::InvalidArgument(_))
                && msg.contains("was interrupted")
                && msg.contains("durq upgrade"),
            "{what}: {msg}"
        );
    }
    let after = flat_files();
    assert_eq!(before, after, "{what}: the refused open changed something");
}

/// How a crash scenario loses power.
#[derive(Debug, Clone, Copy)]
enum Loss {
    Power(LossMode),
    /// The process is killed (the page cache survives); the disk keeps
    /// everything written, synced or not, until a later power loss.
    Process,
}

/// One scenario: the upgrade crashes after `k` operations and `loss`
/// follows; optionally the re-run crashes too (after `k2` operations, with
/// a random loss); then the upgrade runs to the end, the power fails with
/// nothing pending kept, and the log must open with every record and the
/// client's position.
fn crash_scenario(seed: u64, k: u64, loss: Loss, k2: Option<u64>) {
    let (e, _) = format2_fixture();
    let dir = Path::new("/log");
    let what = format!("seed {seed}, crash after {k} ops, {loss:?}, then {k2:?}");
    let disk = sim_format2(seed, dir);
    disk.crash_after_ops(k);
    let r = upgrade::upgrade(&disk, dir);
    assert!(r.is_err(), "{what}: the run did not reach its crash point");
    assert!(disk.is_dead(), "{what}: {r:?}");
    match loss {
        Loss::Power(mode) => disk.power_loss_with(mode),
        Loss::Process => disk.process_crash(),
    }
    check_interrupted_state(&disk, dir, &what);
    if let Some(k2) = k2 {
        disk.crash_after_ops(k2);
        let r = upgrade::upgrade(&disk, dir);
        if disk.is_dead() {
            disk.power_loss();
            check_interrupted_state(&disk, dir, &format!("{what} (second crash)"));
        } else {
            disk.clear_faults();
            r.unwrap_or_else(|err| panic!("{what}: the re-run failed: {err}"));
        }
    }
    let r = upgrade::upgrade(&disk, dir).unwrap_or_else(|err| panic!("{what}: re-run: {err}"));
    assert!(r.already_current || r.segments > 0, "{what}: {r:?}");
    // What the finished upgrade reported done must be durable.
    disk.power_loss_with(LossMode::DropAll);
    assert_eq!(sim_flat(&disk, dir), 0, "{what}");
    assert!(
        !disk.list(dir).iter().any(|n| n.ends_with(".tmp")) || r.already_current,
        "{what}: {:?}",
        disk.list(dir)
    );
    let log = open_sim(&disk, dir).unwrap_or_else(|err| panic!("{what}: open: {err}"));
    check_log(&log, e);
}

/// The number of mutating operations a whole upgrade of the fixture
/// takes on the simulated disk.
fn ops_of_a_whole_run() -> u64 {
    let dir = Path::new("/log");
    let disk = sim_format2(1, dir);
    let before = disk.ops_count();
    let r = upgrade::upgrade(&disk, dir).expect("upgrade");
    assert_eq!(r.segments, r.converted);
    let ops = disk.ops_count() - before;
    // At least: per segment create, write, sync, rename, sync group,
    // remove, sync directory.
    assert!(ops >= 7 * r.segments as u64, "{ops} ops");
    ops
}

#[test]
fn a_whole_run_on_the_simulated_disk_is_durable_when_it_returns() {
    let (e, files) = format2_fixture();
    let dir = Path::new("/log");
    let disk = sim_format2(7, dir);
    let r = upgrade::upgrade(&disk, dir).expect("upgrade");
    let segments = files
        .iter()
        .filter(|(rel, _)| names::parse_segment_file_name(rel.to_str().expect("utf-8")).is_some())
        .count();
    assert_eq!(r.segments, segments);
    assert_eq!(r.converted, segments);
    assert!(r.groups_created.len() >= 2, "{r:?}");
    assert!(!r.resumed && !r.already_current);
    disk.power_loss_with(LossMode::DropAll);
    assert_eq!(sim_flat(&disk, dir), 0);
    let log = open_sim(&disk, dir).expect("open");
    check_log(&log, e);
}

/// A killed run may leave a complete copy whose bytes and names are only
/// in the page cache (here made so by hand: the upgrade itself syncs a copy
/// before naming it). The re-run must make the copy durable before it
/// removes the original.
#[test]
fn a_complete_copy_in_the_page_cache_only_is_synced_before_its_original_goes() {
    let (e, files) = format2_fixture();
    let dir = Path::new("/log");
    let disk = sim_format2(11, dir);
    let (rel, bytes) = files
        .iter()
        .find(|(rel, _)| names::parse_segment_file_name(rel.to_str().expect("utf-8")).is_some())
        .expect("a segment");
    let (base, seq) = layout::parse(rel);
    let copy = layout::expected_path(dir, base, base, seq);
    let mut b = bytes.clone();
    b[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    disk.create_dir_all(copy.parent().expect("group"))
        .expect("mkdir");
    let f = disk
        .open_file(&copy, durq::storage::OpenMode::CreateNew)
        .expect("create");
    f.write_at(&b, 0).expect("write");
    drop(f);
    disk.process_crash();
    let r = upgrade::upgrade(&disk, dir).expect("upgrade");
    assert_eq!(r.completed_copies, vec![copy.clone()]);
    disk.power_loss_with(LossMode::DropAll);
    assert_eq!(disk.durable_bytes(&copy), Some(b));
    check_log(&open_sim(&disk, dir).expect("open"), e);
}

/// Every crash point, with power loss keeping everything, nothing, or a
/// random part of what was not synced (three seeds), and with a process
/// kill (the page cache survives). The re-run must finish the job.
#[test]
fn a_crash_at_every_point_of_an_upgrade_loses_nothing() {
    let total = ops_of_a_whole_run();
    let mut scenarios = 0;
    for k in 0..total {
        crash_scenario(k, k, Loss::Power(LossMode::KeepAll), None);
        crash_scenario(k, k, Loss::Power(LossMode::DropAll), None);
        crash_scenario(k, k, Loss::Process, None);
        for seed in 1..=3u64 {
            crash_scenario(seed * 1_000_003 + k, k, Loss::Power(LossMode::Random), None);
        }
        scenarios += 6;
    }
    eprintln!("{scenarios} crash scenarios over {total} crash points");
}

/// A crash at every point, then a crash of the re-run at a pseudo-random
/// point (random power loss both times), then a run to the end.
#[test]
fn a_crash_of_the_rerun_too_loses_nothing() {
    let total = ops_of_a_whole_run();
    for k in 0..total {
        let k2 = (k * 7919 + 13) % (total / 2 + 1);
        crash_scenario(0xC0FFEE + k, k, Loss::Power(LossMode::Random), Some(k2));
    }
}

/// A sync failing with `EIO` (at every sync of a run, in turn) or a full
/// disk stops the upgrade with an error, the disk alive; what it did is
/// safe, with or without a power loss after, and a re-run finishes.
#[test]
fn a_failed_sync_or_a_full_disk_stops_the_upgrade_safely() {
    let (e, _) = format2_fixture();
    let dir = Path::new("/log");
    let disk = sim_format2(3, dir);
    let before = disk.sync_count();
    upgrade::upgrade(&disk, dir).expect("upgrade");
    let syncs = disk.sync_count() - before;
    eprintln!("{syncs} sync points, each failing in turn, with and without power loss");
    for n in 1..=syncs {
        for power_loss in [false, true] {
            let what = format!("sync {n} fails, power loss {power_loss}");
            let disk = sim_format2(n, dir);
            disk.fail_sync_at(n);
            let err = upgrade::upgrade(&disk, dir).expect_err(&what);
            assert!(matches!(err, Error::Io { .. }), "{what}: {err}");
            assert!(!disk.is_dead(), "{what}");
            if power_loss {
                disk.power_loss();
                check_interrupted_state(&disk, dir, &what);
            }
            upgrade::upgrade(&disk, dir).unwrap_or_else(|err| panic!("{what}: re-run: {err}"));
            disk.power_loss_with(LossMode::DropAll);
            assert_eq!(sim_flat(&disk, dir), 0, "{what}");
            check_log(&open_sim(&disk, dir).expect(&what), e);
        }
    }

    let disk = sim_format2(5, dir);
    let flats = sim_flat(&disk, dir);
    disk.set_disk_full(true);
    let err = upgrade::upgrade(&disk, dir).expect_err("disk full");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(sim_flat(&disk, dir), flats);
    assert!(!disk.list(dir).iter().any(|n| n.ends_with(".tmp")));
    disk.set_disk_full(false);
    upgrade::upgrade(&disk, dir).expect("re-run");
    disk.power_loss_with(LossMode::DropAll);
    check_log(&open_sim(&disk, dir).expect("open"), e);
}

// ---------------------------------------------------------------------------
// What an interrupted run leaves, crafted on the real file system.
// ---------------------------------------------------------------------------

/// The group directory of the converted log holding segment `seq`, for a
/// log whose first segment is `flat[0]`.
fn expected_group(dir: &Path, flat: &[PathBuf], seq: u64) -> PathBuf {
    let first = flat
        .iter()
        .find(|f| names::group_of(layout::seq_of(f)) == names::group_of(seq))
        .expect("a segment of that group");
    dir.join(names::group_dir_name(
        layout::base_of(first),
        names::group_of(seq),
    ))
}

/// Converts `flat[..n]` by hand as a run interrupted after them would have
/// (copies in their groups, originals removed).
fn convert_prefix(dir: &Path, flat: &[PathBuf], n: usize) {
    for f in &flat[..n] {
        let g = expected_group(dir, flat, layout::seq_of(f));
        fs::create_dir_all(&g).expect("mkdir");
        let to = g.join(f.file_name().expect("name"));
        fs::rename(f, &to).expect("move");
        set_header_version(&to, 3);
    }
}

#[test]
fn an_interrupted_upgrade_is_refused_by_open_and_finished_by_a_rerun() {
    let per_group = names::SEGMENTS_PER_GROUP as usize;
    for case in ["complete copy", "short copy", "differing copy", "no copy"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let (e, flat) = make_format2_log(&dir, 31 * (per_group as u64 + 6), 31 * 2);
        // Interrupted while converting the first segment of the second
        // group: the first group is done, its copy of the segment in hand
        // is in the state `case` says.
        let first_seq = layout::seq_of(&flat[0]) as usize;
        let n = per_group - first_seq;
        convert_prefix(&dir, &flat, n);
        let current = &flat[n];
        let g = expected_group(&dir, &flat, layout::seq_of(current));
        fs::create_dir(&g).expect("mkdir");
        let copy = g.join(current.file_name().expect("name"));
        let mut b = fs::read(current).expect("read");
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        match case {
            "complete copy" => fs::write(&copy, &b).expect("write"),
            "short copy" => fs::write(&copy, &b[..1000]).expect("write"),
            "differing copy" => {
                b[200] ^= 1;
                fs::write(&copy, &b).expect("write");
            }
            _ => {}
        }
        // And the temporary file of the next copy.
        let tmpfile = dir.join(format!("upgrade-1-0{}", names::TEMP_SUFFIX));
        fs::write(&tmpfile, &b[..512]).expect("write");

        // Open refuses, saying what happened, and changes nothing.
        let before = snapshot(&dir);
        let err = Log::open(&dir).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::InvalidArgument(_))
                && msg.contains("upgrade")
                && msg.contains("was interrupted")
                && msg.contains(&format!("`durq upgrade {}` again", dir.display())),
            "{case}: {msg}"
        );
        let o = durq(&["consume", p(&dir), "-c", CLIENT, "-n", "1"]);
        assert_eq!(code(&o), 2, "{case}");
        assert!(
            stderr(&o).contains("was interrupted"),
            "{case}: {}",
            stderr(&o)
        );
        // Recovery (which would take the segments not yet converted for
        // foreign files) refuses too, pointing to the upgrade.
        let o = durq(&["recover", p(&dir), "--salvage"]);
        assert_eq!(code(&o), 2, "{case}: {}", stdout(&o));
        assert!(
            stderr(&o).contains("was interrupted")
                && stderr(&o).contains(&format!("`durq upgrade {}` again", dir.display())),
            "{case}: {}",
            stderr(&o)
        );
        assert_eq!(snapshot(&dir), before, "{case}: refusing changed something");

        // A dry run says what the re-run does, changing nothing.
        let plan = upgrade::check(&FsStorage, &dir).expect("check");
        assert_eq!(
            snapshot(&dir),
            before,
            "{case}: the dry run changed something"
        );
        let r = upgrade::upgrade(&FsStorage, &dir).expect("upgrade");
        let expect = |mut r: UpgradeReport| {
            r.dry_run = false;
            r
        };
        assert_eq!(expect(plan), r, "{case}: the dry run said otherwise");
        assert!(r.resumed, "{case}");
        assert_eq!(r.already_converted, n, "{case}");
        assert_eq!(r.removed_temp_files, vec![tmpfile.clone()], "{case}: {r:?}");
        match case {
            "complete copy" => {
                assert_eq!(r.completed_copies, vec![copy.clone()]);
                assert!(r.replaced_copies.is_empty());
                assert_eq!(r.converted, flat.len() - n - 1);
            }
            "no copy" => {
                assert!(r.completed_copies.is_empty() && r.replaced_copies.is_empty());
                assert_eq!(r.converted, flat.len() - n);
            }
            _ => {
                assert_eq!(r.replaced_copies, vec![copy.clone()], "{case}");
                assert!(r.completed_copies.is_empty());
                assert_eq!(r.converted, flat.len() - n);
            }
        }
        // The groups existed already: only later ones were made.
        assert!(!r.groups_created.contains(&g), "{case}");
        check_groups(&dir, flat.len());
        assert!(!tmpfile.exists());
        let log = Log::open(&dir).expect("open");
        check_log(&log, &e);
    }
}

// ---------------------------------------------------------------------------
// Refusals: a clear error, nothing changed.
// ---------------------------------------------------------------------------

/// Runs the upgrade (library and command line) on `dir`, which it must
/// refuse changing nothing; returns the library's error and the command's
/// stderr.
fn refused(dir: &Path) -> (Error, String) {
    let before = snapshot(dir);
    let err = upgrade::upgrade(&FsStorage, dir).expect_err("must refuse");
    assert_eq!(
        snapshot(dir),
        before,
        "{err}: the library changed something"
    );
    let o = durq(&["upgrade", p(dir)]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        snapshot(dir),
        before,
        "{err}: the command changed something"
    );
    (err, stderr(&o))
}

#[test]
fn a_format2_log_with_a_missing_segment_is_refused_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let (_, flat) = make_format2_log(&dir, 31 * 12, 31 * 2);
    fs::remove_file(&flat[4]).expect("remove");
    let (err, msg) = refused(&dir);
    match &err {
        Error::MissingSegment {
            after,
            expected_seq,
            found,
            ..
        } => {
            assert_eq!(after, &flat[3]);
            assert_eq!(*expected_seq, layout::seq_of(&flat[4]));
            assert_eq!(found, &flat[5]);
        }
        other => panic!("{other}"),
    }
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert!(msg.contains("segment missing"), "{msg}");
}

#[test]
fn format2_logs_with_unsound_headers_are_refused_unchanged() {
    type Damage = fn(&[PathBuf]);
    let cases: [(&str, Damage); 5] = [
        ("header CRC", |flat| {
            let mut b = fs::read(&flat[2]).expect("read");
            b[40] ^= 8;
            fs::write(&flat[2], b).expect("write");
        }),
        ("name and header disagree", |flat| {
            let (base, seq) = layout::parse(&flat[2]);
            let to = flat[2].with_file_name(names::segment_file_name(base + 1, seq));
            fs::rename(&flat[2], to).expect("rename");
        }),
        ("version 3 header", |flat| set_header_version(&flat[2], 3)),
        ("version 1 header", |flat| set_header_version(&flat[2], 1)),
        ("not a segment", |flat| {
            fs::write(&flat[2], b"hello").expect("write");
        }),
    ];
    for (case, damage) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("log");
        let (_, flat) = make_format2_log(&dir, 31 * 8, 31 * 2);
        damage(&flat);
        let (err, msg) = refused(&dir);
        assert!(err.is_corruption(), "{case}: {err}");
        let named = match case {
            "name and header disagree" => {
                let (base, seq) = layout::parse(&flat[2]);
                flat[2].with_file_name(names::segment_file_name(base + 1, seq))
            }
            _ => flat[2].clone(),
        };
        assert!(msg.contains(p(&named)), "{case}: {msg}");
        assert!(msg.contains("nothing was changed"), "{case}: {msg}");
    }
}

#[test]
fn a_current_log_is_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let e = make_current_log(&dir, MIN_SEGMENT_SIZE, 31 * 8, 31 * 2);
    let before = snapshot(&dir);
    let r = upgrade::upgrade(&FsStorage, &dir).expect("upgrade");
    assert!(r.already_current, "{r:?}");
    assert_eq!(r.converted, 0);
    let o = durq(&["upgrade", p(&dir)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("already of format version 3"),
        "{}",
        stdout(&o)
    );
    assert_eq!(snapshot(&dir), before);
    check_log(&Log::open(&dir).expect("open"), &e);
}

#[test]
fn format1_segments_are_refused_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A directory holding a format-1 name only, and a format-2 log with
    // one beside it.
    let only = tmp.path().join("v1");
    fs::create_dir(&only).expect("mkdir");
    let mut seg = vec![0u8; 4096];
    seg[0..8].copy_from_slice(&durq::record::SEGMENT_MAGIC);
    seg[8..12].copy_from_slice(&1u32.to_le_bytes());
    fs::write(only.join("00000000000000000000.seg"), &seg).expect("write");
    let mixed = tmp.path().join("mixed");
    make_format2_log(&mixed, 31 * 4, 31 * 2);
    fs::write(mixed.join("00000000000000000000.seg"), &seg).expect("write");
    for dir in [&only, &mixed] {
        let (err, msg) = refused(dir);
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(msg.contains("format version 1"), "{msg}");
        assert!(msg.contains("00000000000000000000.seg"), "{msg}");
    }
}

#[test]
fn a_locked_log_is_refused_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    make_format2_log(&dir, 31 * 4, 31 * 2);
    let lock = FsStorage
        .try_lock(&dir.join(names::LOCK_FILE))
        .expect("lock");
    let (err, msg) = refused(&dir);
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(msg.contains("locked"), "{msg}");
    drop(lock);
    upgrade::upgrade(&FsStorage, &dir).expect("upgrade once unlocked");
}

#[test]
fn directories_that_are_no_interrupted_upgrade_are_refused_unchanged() {
    // A current log with one segment moved out of the middle of a group
    // into the log directory, as format 2: not what an upgrade leaves.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    make_current_log(&dir, MIN_SEGMENT_SIZE, 31 * 10, 31 * 2);
    let segs = layout::segment_files(&dir);
    let to = dir.join(segs[2].file_name().expect("name"));
    fs::rename(&segs[2], &to).expect("move");
    set_header_version(&to, 2);
    let (err, msg) = refused(&dir);
    assert!(err.is_corruption(), "{err}");
    assert!(msg.contains("nothing was changed"), "{msg}");
    // Opening it still reports the format-2 segment, not an upgrade.
    let err = Log::open(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedVersion { found: 2, path, .. } if path == &to),
        "{err}"
    );

    // A group directory the upgrade would not make (wrong base offset).
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let (_, flat) = make_format2_log(&dir, 31 * 10, 31 * 2);
    fs::create_dir(dir.join(names::group_dir_name(layout::base_of(&flat[0]) + 1, 0)))
        .expect("mkdir");
    let (err, msg) = refused(&dir);
    assert!(err.is_corruption(), "{err}");
    assert!(msg.contains("not one the upgrade makes"), "{msg}");

    // Not a log at all.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    fs::write(empty.join("notes.txt"), b"hi").expect("write");
    let err = upgrade::upgrade(&FsStorage, &empty).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let o = durq(&["upgrade", p(&empty)]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not a durq log"), "{}", stderr(&o));
    assert_eq!(layout::entries(&empty), vec!["notes.txt".to_owned()]);
}
