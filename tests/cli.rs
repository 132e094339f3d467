//! The `durq` command-line tool, run as a separate process.
#![cfg(feature = "cli")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DURQ: &str = env!("CARGO_BIN_EXE_durq");

fn durq(args: &[&str]) -> Output {
    durq_with_stdin(args, b"")
}

fn durq_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(DURQ)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run durq");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for durq");
    feeder.join().expect("feeder");
    out
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A temporary directory; on tmpfs when there is one, for the tests that
/// make tens of thousands of fsyncs (what they prove does not depend on the
/// disk: a killed process's writes survive in the page cache).
fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(t) = tempfile::tempdir_in(shm)
    {
        return t;
    }
    tempfile::tempdir().expect("tempdir")
}

fn lines(n: std::ops::RangeInclusive<u64>) -> String {
    let mut s = String::new();
    for i in n {
        s.push_str(&i.to_string());
        s.push('\n');
    }
    s
}

/// Appends `n` messages `msg-0`.. with small segments; returns the dir.
fn make_log(root: &Path, n: u64, segment_size: &str) -> PathBuf {
    let dir = root.join("log");
    let mut input = String::new();
    for i in 0..n {
        input.push_str(&format!("msg-{i}\n"));
    }
    let o = durq_with_stdin(
        &["append", p(&dir), "--segment-size", segment_size],
        input.as_bytes(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    dir
}

/// Every file under `dir`, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                out.insert(path.clone(), b"<dir>".to_vec());
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    out
}

/// The segment group directories of the log in `dir`
/// (`BASE-GROUP.group`), in order.
fn group_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(durq::names::parse_group_dir_name)
                .is_some()
        })
        .collect();
    v.sort();
    v
}

/// Every segment file of the log in `dir`, in order: the `*.seg` files of
/// its group directories. A segment file lying directly in `dir` (the
/// layout of format version 2) would be a bug.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let flat: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert!(flat.is_empty(), "segment files outside any group: {flat:?}");
    let mut v = Vec::new();
    for g in group_dirs(dir) {
        let mut in_group: Vec<PathBuf> = std::fs::read_dir(&g)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        in_group.sort();
        v.extend(in_group);
    }
    v
}

/// Byte position of record `offset` in a segment starting at `base` whose
/// records all have payloads of `payload_len` bytes.
fn record_pos(base: u64, offset: u64, payload_len: usize) -> usize {
    64 + (offset - base) as usize * (24 + payload_len.div_ceil(8) * 8)
}

fn flip_bit(path: &Path, pos: usize) {
    let mut b = std::fs::read(path).expect("read");
    b[pos] ^= 0x10;
    std::fs::write(path, b).expect("write");
}

#[test]
fn seq_pipeline_appends_and_consumes_the_same_lines() {
    let tmp = fast_tempdir();
    let dir = tmp.path().join("data");
    let input = lines(1..=100_000);
    let o = durq_with_stdin(&["append", p(&dir)], input.as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Offsets are dense, in order, one per line.
    let offsets: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| l.parse().expect("offset"))
        .collect();
    assert_eq!(offsets, (0..100_000).collect::<Vec<u64>>());

    let o = durq(&["consume", p(&dir), "--client", "c"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), input);
    // Caught up: nothing more, and the position is durable.
    let o = durq(&["consume", p(&dir), "--client", "c"]);
    assert_eq!((code(&o), stdout(&o)), (0, String::new()));
    let o = durq(&["cursor", "list", p(&dir)]);
    assert_eq!(stdout(&o), "c\t100000\t0\n");
}

#[test]
fn nul_separated_messages_round_trip_with_newlines_inside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let o = durq_with_stdin(&["append", "-0", p(&dir)], b"a\nb\0\0last");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "0\n1\n2\n");
    let o = durq(&["consume", p(&dir), "-c", "x", "-0"]);
    assert_eq!(o.stdout, b"a\nb\0\0last\0");
    let o = durq(&["dump", p(&dir)]);
    assert_eq!(stdout(&o), "0\ta\\nb\n1\t\n2\tlast\n");
}

/// Feeds `msg-N` lines into a running `durq append` until it dies, reads
/// its stdout, and returns the offsets it printed.
fn append_until_killed(dir: &Path, kill_after: usize) -> Vec<u64> {
    let mut child = Command::new(DURQ)
        .args(["append", p(dir), "--segment-size", "64K"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let mut i = 0u64;
        loop {
            let mut chunk = String::new();
            for _ in 0..50 {
                chunk.push_str(&format!("msg-{i}\n"));
                i += 1;
            }
            if input.write_all(chunk.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = Vec::new();
    let mut line = String::new();
    while printed.len() < kill_after {
        line.clear();
        if out.read_line(&mut line).expect("read") == 0 {
            break;
        }
        printed.push(line.trim().parse::<u64>().expect("offset"));
    }
    child.kill().expect("SIGKILL");
    // Whatever it printed before dying is still in the pipe.
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read rest");
    printed.extend(rest.lines().map(|l| l.parse::<u64>().expect("offset")));
    child.wait().expect("wait");
    feeder.join().expect("feeder");
    printed
}

#[test]
fn every_offset_printed_by_append_survives_its_sigkill() {
    let tmp = fast_tempdir();
    let dir = tmp.path().join("data");
    let printed = append_until_killed(&dir, 3000);
    assert!(printed.len() >= 3000, "only {} printed", printed.len());
    assert_eq!(printed, (0..printed.len() as u64).collect::<Vec<u64>>());
    let log = durq::Log::open(&dir).expect("reopen");
    assert!(log.end() >= printed.len() as u64);
    for &off in &printed {
        let rec = log
            .read(off)
            .expect("read")
            .expect("printed offset present");
        assert_eq!(&rec[..], format!("msg-{off}").as_bytes(), "offset {off}");
    }
    let end = log.end();
    drop(log);
    // A second run continues the dense sequence after what survived.
    let more = append_until_killed(&dir, 100);
    assert_eq!(more, (end..end + more.len() as u64).collect::<Vec<u64>>());
}

#[test]
fn consume_killed_midstream_redelivers_only_what_was_not_acknowledged() {
    let tmp = fast_tempdir();
    let dir = make_log(tmp.path(), 3000, "64K");
    let mut child = Command::new(DURQ)
        .args(["consume", p(&dir), "--client", "c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = Vec::new();
    let mut line = String::new();
    while printed.len() < 700 {
        line.clear();
        assert!(out.read_line(&mut line).expect("read") > 0, "ended early");
        printed.push(line.trim_end().to_owned());
    }
    child.kill().expect("SIGKILL");
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read rest");
    printed.extend(rest.lines().map(str::to_owned));
    child.wait().expect("wait");
    assert!(printed.len() < 3000, "consume finished before the kill");

    let o = durq(&["consume", p(&dir), "--client", "c"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let again: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    let all: Vec<String> = (0..3000).map(|i| format!("msg-{i}")).collect();
    // In order, nothing lost, and at most the last printed line again.
    assert_eq!(&all[..printed.len()], &printed[..]);
    let resumed_at = all.len() - again.len();
    assert_eq!(&all[resumed_at..], &again[..]);
    assert!(
        resumed_at == printed.len() || resumed_at + 1 == printed.len(),
        "printed {} lines, second run resumed at {resumed_at}",
        printed.len()
    );
}

#[test]
fn consume_count_offsets_and_batch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 10, "4K");
    let o = durq(&["consume", p(&dir), "-c", "a", "--count", "3", "--offsets"]);
    assert_eq!(stdout(&o), "0\tmsg-0\n1\tmsg-1\n2\tmsg-2\n");
    let o = durq(&["consume", p(&dir), "-c", "a", "--batch", "4", "-n", "5"]);
    assert_eq!(stdout(&o), "msg-3\nmsg-4\nmsg-5\nmsg-6\nmsg-7\n");
    let o = durq(&["cursor", "list", p(&dir), "--json"]);
    let v = json(&o);
    assert_eq!(v["clients"][0]["acked"], 8);
    assert_eq!(v["clients"][0]["lag"], 2);
    // Another client is independent.
    let o = durq(&["consume", p(&dir), "-c", "b", "-n", "1"]);
    assert_eq!(stdout(&o), "msg-0\n");
}

#[test]
fn consume_follow_picks_up_messages_appended_by_another_process_and_sigint_exits_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 2, "4K");
    let mut child = Command::new(DURQ)
        .args(["consume", p(&dir), "-c", "f", "--follow", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    for want in ["msg-0\n", "msg-1\n"] {
        line.clear();
        out.read_line(&mut line).expect("read");
        assert_eq!(line, want);
    }
    // While caught up, the follower lets another process append.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = durq_with_stdin(&["append", p(&dir)], b"later\n");
        if code(&o) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "append stayed locked out");
        std::thread::sleep(Duration::from_millis(50));
    }
    line.clear();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "later\n");
    interrupt(&child);
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status, Some(130));
    let o = durq(&["cursor", "list", p(&dir)]);
    assert_eq!(stdout(&o), "f\t3\t0\n");
}

fn interrupt(child: &Child) {
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(st.success());
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn verify_reports_a_flipped_bit_with_file_and_position() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // "msg-N" for N < 10 is 5 bytes: 32-byte records from byte 64.
    let dir = make_log(tmp.path(), 300, "4K");
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains(": sound"), "{}", stdout(&o));

    let seg = &segment_files(&dir)[0];
    let pos = record_pos(0, 7, 5);
    flip_bit(seg, pos + 26);
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let text = stdout(&o);
    let expected = format!("problem: {} at byte {pos}: ", seg.display());
    assert!(text.contains(&expected), "{text}");
    assert!(text.contains("offset 7 unreadable"), "{text}");

    let o = durq(&["verify", p(&dir), "--json"]);
    assert_eq!(code(&o), 1);
    let v = json(&o);
    assert_eq!(v["sound"], false);
    assert_eq!(v["problems"][0]["kind"], "record_damage");
    assert_eq!(v["problems"][0]["file"], p(seg));
    assert_eq!(v["problems"][0]["position"], pos);
    assert_eq!(v["problems"][0]["lost"]["start"], 7);
    assert_eq!(v["problems"][0]["lost"]["end"], 8);
    // A damaged cursor is a problem too.
    let o = durq(&["consume", p(&dir), "-c", "c", "-n", "1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let cursor = dir.join("clients").join("c.cursor.0");
    flip_bit(&cursor, 20);
    let v = json(&durq(&["verify", p(&dir), "--json"]));
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["kind"].as_str().expect("kind"))
        .collect();
    assert!(kinds.contains(&"cursor"), "{v}");
}

/// A log with a torn tail, a leftover temp file and a flipped bit in a
/// sealed segment.
fn damaged_log(root: &Path) -> PathBuf {
    let dir = make_log(root, 300, "4K");
    let segs = segment_files(&dir);
    flip_bit(&segs[0], record_pos(0, 3, 5) + 25);
    tear_tail(segs.last().expect("last"));
    std::fs::write(dir.join("spare-9-9.tmp"), b"leftover").expect("tmp");
    dir
}

/// Writes the beginning of a record after the last one, as a write cut by
/// a power loss leaves it.
fn tear_tail(seg: &Path) {
    let mut b = std::fs::read(seg).expect("read");
    let end = b.iter().rposition(|&x| x != 0).expect("records") + 1;
    let end = end.div_ceil(8) * 8;
    b[end..end + 4].copy_from_slice(&durq::record::RECORD_MAGIC.to_le_bytes());
    b[end + 8..end + 12].copy_from_slice(&100u32.to_le_bytes());
    b[end + 24..end + 60].fill(0x55);
    std::fs::write(seg, b).expect("write");
}

#[test]
fn recover_dry_run_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = damaged_log(tmp.path());
    let before = snapshot(&dir);
    for args in [
        vec!["recover", p(&dir), "--dry-run"],
        vec!["recover", p(&dir), "--dry-run", "--salvage"],
        vec!["recover", p(&dir), "--dry-run", "--json"],
        vec!["stat", p(&dir)],
        vec!["verify", p(&dir)],
        vec!["dump", p(&dir)],
        vec!["cursor", "list", p(&dir)],
    ] {
        let o = durq(&args);
        assert!(code(&o) <= 1, "{args:?}: {}", stderr(&o));
        assert_eq!(before, snapshot(&dir), "{args:?} changed files");
    }
    let o = durq(&["recover", p(&dir), "--dry-run"]);
    assert_eq!(code(&o), 1);
    let text = stdout(&o);
    assert!(text.contains("leftover: would remove"), "{text}");
    assert!(text.contains("would salvage:"), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
}

#[test]
fn recover_fixes_a_torn_tail_and_removes_leftovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 50, "4K");
    tear_tail(&segment_files(&dir)[0]);
    std::fs::write(dir.join("spare-1-1.tmp"), b"x").expect("tmp");
    let o = durq(&["recover", p(&dir)]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("torn-tail: "), "{text}");
    assert!(text.contains("zeroed 64 byte(s)"), "{text}");
    assert!(text.contains("leftover: removed"), "{text}");
    assert!(
        text.contains("result: repaired: the log is sound and holds offsets 0..50"),
        "{text}"
    );
    assert!(!dir.join("spare-1-1.tmp").exists());
    // Idempotent, and the log works.
    let o = durq(&["recover", p(&dir)]);
    assert!(stdout(&o).contains("result: clean"), "{}", stdout(&o));
    let o = durq_with_stdin(&["append", p(&dir)], b"next\n");
    assert_eq!(stdout(&o), "50\n");
    let v = json(&durq(&["verify", p(&dir), "--json"]));
    assert_eq!(v["sound"], true);
    assert_eq!(v["notes"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn salvage_keeps_every_readable_record_and_reports_the_lost_offsets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 300, "4K");
    let segs = segment_files(&dir);
    assert!(segs.len() >= 3);
    let damaged_bytes = {
        flip_bit(&segs[0], record_pos(0, 3, 5) + 25);
        std::fs::read(&segs[0]).expect("read")
    };
    // Also the last record of the last segment, written whole: damage.
    let last = segs.last().expect("last");
    let base: u64 = last
        .file_name()
        .and_then(|s| s.to_str())
        .and_then(durq::names::parse_segment_file_name)
        .expect("base")
        .0;
    flip_bit(last, record_pos(base, 299, 7) + 25);

    // Without --salvage: reported, nothing changed, exit 1.
    let before = snapshot(&dir);
    let o = durq(&["recover", p(&dir)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("--salvage"), "{}", stdout(&o));
    assert_eq!(before.len(), snapshot(&dir).len());
    assert_eq!(
        before.get(&segs[0]),
        snapshot(&dir).get(&segs[0]),
        "segment changed without --salvage"
    );
    let o = durq(&["consume", p(&dir), "-c", "c"]);
    assert_eq!(code(&o), 2, "open must refuse a damaged last segment");

    let o = durq(&["recover", p(&dir), "--salvage", "--json"]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v["sound"], true);
    let actions = v["salvage_plan"]["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 2, "{v}");
    let lost: Vec<(u64, u64)> = actions
        .iter()
        .flat_map(|a| a["lost"].as_array().expect("lost").clone())
        .map(|s| (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap()))
        .collect();
    assert_eq!(lost, vec![(3, 4), (299, 300)]);
    let aside = PathBuf::from(actions[0]["set_aside"].as_str().expect("set aside"));
    assert!(aside.starts_with(dir.join("salvage")));
    assert_eq!(std::fs::read(&aside).expect("copy"), damaged_bytes);

    // Sound now; offsets never renumbered; consumers skip the lost ones.
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = durq(&["consume", p(&dir), "-c", "c"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    let want: Vec<String> = (0..300)
        .filter(|&i| i != 3 && i != 299)
        .map(|i| format!("msg-{i}"))
        .collect();
    assert_eq!(got, want);
    let o = durq(&["dump", p(&dir), "--from", "2", "--count", "3"]);
    assert_eq!(stdout(&o), "2\tmsg-2\n3\t(lost)\n4\tmsg-4\n");
    {
        // The borrowing scan stops at a placeholder with `Error::Lost`, and
        // a new scan goes on from the next offset.
        let log = durq::Log::open(&dir).expect("open");
        let mut seen = Vec::new();
        let err = log
            .scan(0, |off, _| {
                seen.push(off);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap_err();
        assert!(matches!(err, durq::Error::Lost { offset: 3, .. }), "{err}");
        assert_eq!(seen, vec![0, 1, 2]);
        let mut count = 0;
        let err = log
            .scan(4, |off, bytes| {
                assert_eq!(bytes, format!("msg-{off}").as_bytes());
                count += 1;
                std::ops::ControlFlow::Continue(())
            })
            .unwrap_err();
        assert!(
            matches!(err, durq::Error::Lost { offset: 299, .. }),
            "{err}"
        );
        assert_eq!(count, 295);
        // A batch consumer skips the placeholders too.
        let c = log.consumer("batch").expect("consumer");
        let mut got = Vec::new();
        loop {
            let batch = c.next_batch(50).expect("batch");
            let Some(last) = batch.last() else { break };
            c.ack_until(last.offset() + 1).expect("ack");
            for m in &batch {
                assert_eq!(m.payload(), format!("msg-{}", m.offset()).as_bytes());
                got.push(m.offset());
            }
        }
        let want: Vec<u64> = (0..300).filter(|&i| i != 3 && i != 299).collect();
        assert_eq!(got, want);
        assert_eq!(c.acked(), 300);
    }
    let o = durq_with_stdin(&["append", p(&dir)], b"new\n");
    assert_eq!(stdout(&o), "300\n");
}

#[test]
fn salvage_recreates_a_missing_middle_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 400, "4K");
    let segs = segment_files(&dir);
    assert!(segs.len() >= 4);
    std::fs::remove_file(&segs[1]).expect("remove");
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("segment missing"), "{}", stdout(&o));
    let o = durq(&["recover", p(&dir), "--salvage"]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("salvaged: recreated missing segment"),
        "{}",
        stdout(&o)
    );
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(segment_files(&dir), segs);
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// A log of at least 200 segments of 4 KiB in 4 groups (messages `msg-N`);
/// returns the directory and the number of messages.
fn make_grouped_log(root: &Path) -> (PathBuf, u64) {
    let n = 22_500;
    let dir = make_log(root, n, "4K");
    let segs = segment_files(&dir);
    assert!(segs.len() >= 200, "only {} segments", segs.len());
    assert_eq!(group_dirs(&dir).len(), 4, "{segs:?}");
    (dir, n)
}

/// The base offset and sequence number in a segment file's name.
fn seg_name(path: &Path) -> (u64, u64) {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(durq::names::parse_segment_file_name)
        .expect("segment file name")
}

/// The problems `durq verify --json` reports, as (kind, file) pairs.
fn verify_problems(dir: &Path) -> Vec<(String, String)> {
    let o = durq(&["verify", p(dir), "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let v = json(&o);
    assert_eq!(v["sound"], false);
    v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().expect("kind").to_owned(),
                p["file"].as_str().expect("file").to_owned(),
            )
        })
        .collect()
}

#[test]
fn verify_names_every_breach_of_the_group_layout() {
    let tmp = fast_tempdir();
    let (template, _) = make_grouped_log(&tmp.path().join("template"));
    let o = durq(&["verify", p(&template)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let fresh = |name: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        copy_tree(&template, &dir);
        dir
    };

    // (a) A segment removed from a middle group: named by the segment
    // before the gap and the one after it, once.
    let dir = fresh("a");
    let segs = segment_files(&dir);
    assert_eq!(seg_name(&segs[100]).1, 100);
    std::fs::remove_file(&segs[100]).expect("remove");
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("problem: {}: segment missing", segs[99].display())))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("should be number 100"), "{line}");
    assert!(line.contains(p(&segs[101])), "{line}");
    assert_eq!(
        verify_problems(&dir),
        vec![("missing_segment".to_owned(), p(&segs[99]).to_owned())]
    );

    // (b) A middle group's directory moved away: 64 segments missing, and
    // the group without a directory named.
    let dir = fresh("b");
    let segs = segment_files(&dir);
    let groups = group_dirs(&dir);
    std::fs::rename(&groups[2], tmp.path().join("moved-away")).expect("rename");
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "problem: {}: segment missing",
                segs[127].display()
            ))
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("should be number 128"), "{line}");
    assert!(line.contains(p(&segs[192])), "{line}");
    assert!(
        line.contains("segment group 2 has no directory (BASE-00000000000000000002.group)"),
        "{line}"
    );
    // Salvage cannot know where 64 segments began: nothing is changed.
    let before = snapshot(&dir);
    let o = durq(&["recover", p(&dir), "--salvage"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("64 segments are missing (numbers 128 to 191)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(before, snapshot(&dir));

    // (c) A file that is not a segment inside a group.
    let dir = fresh("c");
    let stray = group_dirs(&dir)[1].join("notes.txt");
    std::fs::write(&stray, b"mine").expect("write");
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!(
            "problem: {}: not a durq file, in a segment group directory",
            stray.display()
        )),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        verify_problems(&dir),
        vec![("layout".to_owned(), p(&stray).to_owned())]
    );
    // Salvage does not move it: reported, left alone.
    let o = durq(&["recover", p(&dir), "--salvage"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("unsalvageable: {}", stray.display())),
        "{}",
        stdout(&o)
    );
    assert!(stray.exists());

    // (d) A segment file of format version 2, lying directly in the log
    // directory as that format placed segments.
    let dir = fresh("d");
    let mut old = std::fs::read(&segment_files(&dir)[0]).expect("read");
    old[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&old[0..60]);
    old[60..64].copy_from_slice(&crc.to_le_bytes());
    let flat = dir.join(durq::names::segment_file_name(0, 0));
    std::fs::write(&flat, &old).expect("write");
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let text = stdout(&o);
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("problem: {}", flat.display())))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("format version 2 is not supported"), "{line}");
    assert!(line.contains("directly in the log directory"), "{line}");
    assert_eq!(
        verify_problems(&dir),
        vec![("old_format".to_owned(), p(&flat).to_owned())]
    );
    // Opening refuses it too, naming it.
    let o = durq(&["consume", p(&dir), "-c", "c", "-n", "1"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains(p(&flat)), "{}", stderr(&o));

    // A whole log of format version 2 (segments in the log directory, no
    // group): every command names a segment and its version.
    let dir = tmp.path().join("v2");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join(durq::names::segment_file_name(0, 0)), &old).expect("write");
    for cmd in [vec!["verify", p(&dir)], vec!["stat", p(&dir)]] {
        let o = durq(&cmd);
        assert_eq!(code(&o), 2, "{cmd:?}");
        assert!(
            stderr(&o).contains("segment format version 2 is not supported"),
            "{cmd:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn an_empty_group_left_before_a_removed_one_is_a_leftover_for_verify_and_open() {
    // Retention released groups 0 and 1, but group 0's directory stayed (its
    // removal failed or was lost): the groups holding segments are 2 and 3.
    // Neither verify nor open may take the gap between the leftover and
    // group 2 for a missing group.
    let tmp = fast_tempdir();
    let (dir, _) = make_grouped_log(&tmp.path().join("log"));
    let groups = group_dirs(&dir);
    for g in &groups[..2] {
        for seg in std::fs::read_dir(g).expect("read_dir") {
            std::fs::remove_file(seg.expect("entry").path()).expect("remove");
        }
    }
    std::fs::remove_dir(&groups[1]).expect("rmdir");
    let o = durq(&["verify", p(&dir), "--json"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let v = json(&o);
    let notes: Vec<(String, String)> = v["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().expect("kind").to_owned(),
                n["file"].as_str().expect("file").to_owned(),
            )
        })
        .filter(|(k, _)| k == "leftover")
        .collect();
    assert_eq!(
        notes,
        vec![("leftover".to_owned(), p(&groups[0]).to_owned())]
    );
    let log = durq::Log::open(&dir).expect("open");
    assert_eq!(log.first_offset(), seg_name(&segment_files(&dir)[0]).0);
    assert!(
        log.recovery_report()
            .removed_temp_files
            .contains(&groups[0]),
        "{:?}",
        log.recovery_report()
    );
    drop(log);
    assert!(!groups[0].exists());
}

#[test]
fn salvage_writes_segments_into_their_group_directory() {
    let tmp = fast_tempdir();
    let (dir, n) = make_grouped_log(tmp.path());
    let segs = segment_files(&dir);
    let groups = group_dirs(&dir);

    // A damaged sealed segment in a middle group.
    let seg = &segs[100];
    assert!(seg.starts_with(&groups[1]), "{}", seg.display());
    let (base, _) = seg_name(seg);
    assert!(base >= 10_000);
    let lost = base + 3;
    flip_bit(seg, record_pos(base, lost, 9) + 25);
    // Segment 64, the first of group 1 (whose name holds its base offset),
    // missing.
    assert_eq!(seg_name(&segs[64]).1, 64);
    std::fs::remove_file(&segs[64]).expect("remove");
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));

    let o = durq(&["recover", p(&dir), "--salvage", "--json"]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v["sound"], true, "{v}");
    let actions = v["salvage_plan"]["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 2, "{v}");
    assert_eq!(actions[0]["kind"], "rebuilt");
    assert_eq!(actions[0]["segment"], p(seg));
    let aside = PathBuf::from(actions[0]["set_aside"].as_str().expect("set aside"));
    assert!(
        aside.starts_with(dir.join("salvage")),
        "{}",
        aside.display()
    );
    assert_eq!(actions[1]["kind"], "recreated");
    assert_eq!(actions[1]["segment"], p(&segs[64]));
    // Every segment is back where it was, nothing else in the groups, and
    // no temporary file is left in the log directory.
    assert_eq!(segment_files(&dir), segs);
    assert_eq!(group_dirs(&dir), groups);
    for g in &groups {
        for e in std::fs::read_dir(g).expect("read_dir") {
            let path = e.expect("entry").path();
            assert!(segs.contains(&path), "{} in a group", path.display());
        }
    }
    let mut top: Vec<String> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| durq::names::parse_group_dir_name(n).is_none())
        .collect();
    top.sort();
    assert_eq!(top, ["durq.end", "durq.lock", "salvage"]);

    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let from = lost - 1;
    let o = durq(&["dump", p(&dir), "--from", &from.to_string(), "--count", "3"]);
    assert_eq!(
        stdout(&o),
        format!(
            "{from}\tmsg-{from}\n{lost}\t(lost)\n{}\tmsg-{}\n",
            lost + 1,
            lost + 1
        )
    );
    // The log reopens and reads through every group, the recreated
    // segment's offsets being placeholders too.
    let log = durq::Log::open(&dir).expect("reopen");
    assert_eq!(log.end(), n);
    let (base64, _) = seg_name(&segs[64]);
    let (base65, _) = seg_name(&segs[65]);
    for off in [0, base64 - 1, base65, lost - 1, lost + 1, n - 1] {
        let rec = log.read(off).expect("read").expect("present");
        assert_eq!(&rec[..], format!("msg-{off}").as_bytes(), "offset {off}");
    }
    for off in [base64, base65 - 1, lost] {
        assert!(
            matches!(log.read(off), Err(durq::Error::Lost { .. })),
            "offset {off}: {:?}",
            log.read(off)
        );
    }
    log.append("after").expect("append");
}

#[test]
fn verify_reports_a_damaged_sealed_header_that_open_does_not_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 600, "4K");
    let segs = segment_files(&dir);
    assert!(segs.len() >= 3, "{segs:?}");
    // Break the header checksum of a sealed segment (a byte of its salt).
    flip_bit(&segs[1], 33);
    // Opening the log reads only the last segment's header: appending works.
    let o = durq_with_stdin(&["append", p(&dir)], b"more\n");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // verify reads everything and names the file.
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.contains(segs[1].to_str().expect("utf-8")) && l.contains("checksum")),
        "{out}"
    );
    // The file is there: it is not a missing segment, and salvage must not
    // write a segment of placeholders over its (readable) records.
    assert!(!out.contains("segment missing"), "{out}");
    let damaged = std::fs::read(&segs[1]).expect("read");
    let o = durq(&["recover", p(&dir), "--salvage"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("unsalvageable: {}", segs[1].display()))),
        "{out}"
    );
    assert!(!out.contains("recreate"), "{out}");
    assert_eq!(std::fs::read(&segs[1]).expect("read"), damaged);
}

#[test]
fn json_outputs_parse_and_have_the_documented_shape() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 20, "4K");
    durq(&["consume", p(&dir), "-c", "billing", "-n", "5"]);

    let v = json(&durq(&["stat", p(&dir), "--json"]));
    for key in [
        "dir",
        "writer_active",
        "end_hint",
        "first_offset",
        "end_offset",
        "records",
        "segment_bytes",
        "segments",
        "clients",
        "recovery",
        "recovery_error",
        "salvage_files",
        "notes",
    ] {
        assert!(v.get(key).is_some(), "stat --json lacks {key}: {v}");
    }
    assert_eq!(v["end_offset"], 20);
    assert_eq!(v["records"], 20);
    assert_eq!(v["writer_active"], false);
    assert_eq!(v["segments"][0]["first_offset"], 0);
    assert!(v["segments"][0]["size_bytes"].is_u64());
    assert_eq!(v["clients"][0]["name"], "billing");
    assert_eq!(v["clients"][0]["acked"], 5);
    assert_eq!(v["clients"][0]["lag"], 15);
    assert_eq!(v["recovery"]["dry_run"], true);
    assert_eq!(v["recovery"]["end_offset"], 20);

    let v = json(&durq(&["verify", p(&dir), "--json"]));
    for key in [
        "dir",
        "sound",
        "writer_active",
        "first_offset",
        "end_offset",
        "segments_checked",
        "records_checked",
        "bytes_checked",
        "clients_checked",
        "problems",
        "notes",
        "segments",
    ] {
        assert!(v.get(key).is_some(), "verify --json lacks {key}: {v}");
    }
    assert_eq!(v["records_checked"], 20);
    assert_eq!(v["clients_checked"], 1);
    assert_eq!(v["segments"][0]["status"], "clean");

    let v = json(&durq(&["recover", p(&dir), "--dry-run", "--json"]));
    for key in [
        "dir",
        "dry_run",
        "salvage",
        "segments_checked",
        "records_checked",
        "damage",
        "salvage_plan",
        "report",
        "open_error",
        "first_offset",
        "end_offset",
        "sound",
    ] {
        assert!(v.get(key).is_some(), "recover --json lacks {key}: {v}");
    }
    assert_eq!(v["report"]["torn_tail"], Value::Null);

    let v = json(&durq(&["cursor", "list", p(&dir), "--json"]));
    assert_eq!(v["clients"][0]["name"], "billing");
    assert_eq!(v["end_offset"], 20);

    let o = durq(&["dump", p(&dir), "--format", "json", "--from", "18"]);
    let recs: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["offset"], 18);
    assert_eq!(recs[0]["lost"], false);
    assert_eq!(recs[0]["len"], 6);
    assert_eq!(recs[0]["encoding"], "utf8");
    assert_eq!(recs[0]["payload"], "msg-18");
    assert!(recs[0]["position"].is_u64());
    let o = durq(&["dump", p(&dir), "--format", "hex", "--from", "19"]);
    assert_eq!(stdout(&o), "19\t6\t6d73672d3139\n");
}

#[test]
fn bad_input_gets_a_clear_message_the_right_exit_code_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nonexistent");
    for cmd in [
        vec!["stat", p(&missing)],
        vec!["verify", p(&missing)],
        vec!["dump", p(&missing)],
        vec!["recover", p(&missing)],
        vec!["consume", p(&missing), "-c", "c"],
        vec!["cursor", "list", p(&missing)],
        vec!["cursor", "set", p(&missing), "c", "0"],
        vec!["cursor", "delete", p(&missing), "c"],
    ] {
        let o = durq(&cmd);
        assert_eq!(code(&o), 2, "{cmd:?}");
        let err = stderr(&o);
        assert!(err.starts_with("durq: error: "), "{cmd:?}: {err}");
        assert!(err.contains("does not exist"), "{cmd:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{cmd:?}: {err}");
        assert!(!missing.exists(), "{cmd:?} created the directory");
    }

    // A directory that is not a durq log.
    let other = tmp.path().join("documents");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("notes.txt"), b"mine").expect("write");
    let before = snapshot(&other);
    for cmd in [
        vec!["stat", p(&other)],
        vec!["verify", p(&other)],
        vec!["recover", p(&other)],
        vec!["consume", p(&other), "-c", "c"],
        vec!["append", p(&other)],
    ] {
        let o = durq_with_stdin(&cmd, b"x\n");
        assert_eq!(code(&o), 2, "{cmd:?}");
        assert!(stderr(&o).contains("durq log"), "{cmd:?}: {}", stderr(&o));
        assert_eq!(before, snapshot(&other), "{cmd:?} wrote something");
    }

    let dir = make_log(tmp.path(), 5, "4K");
    let before = snapshot(&dir);
    for (cmd, needle) in [
        (
            vec!["consume", p(&dir), "-c", "../x"],
            "invalid client name",
        ),
        (vec!["consume", p(&dir), "-c", ""], "invalid client name"),
        (
            vec!["cursor", "set", p(&dir), "a/b", "1"],
            "invalid client name",
        ),
        (vec!["cursor", "set", p(&dir), "c", "-5"], "negative"),
        (
            vec!["cursor", "set", p(&dir), "c", "abc"],
            "not a whole number",
        ),
        (vec!["dump", p(&dir), "--from", "-1"], "negative"),
        (vec!["dump", p(&dir), "--from", "x"], "not a whole number"),
        (vec!["cursor", "set", p(&dir), "c", "1"], "no client named"),
        (vec!["cursor", "delete", p(&dir), "c"], "no client named"),
        (
            vec!["append", p(&dir), "--segment-size", "8K"],
            "--segment-size",
        ),
        (
            vec!["consume", p(&dir), "-c", "c", "--timeout", "-1"],
            "seconds",
        ),
        (vec!["bogus"], "unrecognized subcommand"),
    ] {
        let o = durq(&cmd);
        assert_eq!(code(&o), 2, "{cmd:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{cmd:?}: {}", stderr(&o));
        assert_eq!(before, snapshot(&dir), "{cmd:?} wrote something");
    }
    let o = durq(&["cursor", "set", p(&dir), "c", "9", "--create"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("past the log's end 5"),
        "{}",
        stderr(&o)
    );

    // A bad segment size when creating: refused before anything is made.
    let fresh = tmp.path().join("fresh");
    let o = durq_with_stdin(&["append", p(&fresh), "--segment-size", "100"], b"x\n");
    assert_eq!(code(&o), 2);
    assert!(!fresh.exists());

    // A message too large: what came before is appended, exit 1.
    let o = durq_with_stdin(
        &["append", p(&dir)],
        format!("ok\n{}\nnever\n", "x".repeat(5000)).as_bytes(),
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(stdout(&o), "5\n");
    assert!(stderr(&o).contains("message 2 of stdin"), "{}", stderr(&o));

    // A file named like a segment that is not one.
    let junk = make_log(&tmp.path().join("j"), 1, "4K");
    std::fs::write(junk.join("00000000000000000099.seg"), b"not a segment").expect("junk");
    let o = durq(&["consume", p(&junk), "-c", "c"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("00000000000000000099.seg"),
        "{}",
        stderr(&o)
    );
    let o = durq(&["verify", p(&junk)]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("00000000000000000099.seg"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn commands_that_change_the_log_refuse_while_it_is_locked_and_read_only_ones_work() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 10, "4K");
    // Another handle (here: this process) has the log open for writing.
    let log = durq::Options::new()
        .segment_size(4096)
        .background_preallocation(false)
        .open(&dir)
        .expect("open");
    log.consumer("c")
        .expect("client")
        .ack_until(4)
        .expect("ack");
    let before = snapshot(&dir);
    for cmd in [
        vec!["append", p(&dir)],
        vec!["consume", p(&dir), "-c", "c"],
        vec!["recover", p(&dir)],
        vec!["recover", p(&dir), "--dry-run"],
        vec!["cursor", "set", p(&dir), "c", "1"],
        vec!["cursor", "delete", p(&dir), "c"],
    ] {
        let o = durq_with_stdin(&cmd, b"x\n");
        assert_eq!(code(&o), 2, "{cmd:?}");
        assert!(stderr(&o).contains("locked"), "{cmd:?}: {}", stderr(&o));
    }
    assert_eq!(before, snapshot(&dir));

    // Read-only commands show the state up to the writer's durable end.
    for i in 0..200 {
        log.append(format!("live-{i}")).expect("append");
    }
    let v = json(&durq(&["stat", p(&dir), "--json"]));
    assert_eq!(v["writer_active"], true);
    assert_eq!(v["end_offset"], 210);
    assert_eq!(v["clients"][0]["acked"], 4);
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = durq(&["dump", p(&dir), "--from", "208"]);
    assert_eq!(stdout(&o), "208\tlive-198\n209\tlive-199\n");
    let o = durq(&["cursor", "list", p(&dir)]);
    assert_eq!(stdout(&o), "c\t4\t206\n");
    log.append("one more").expect("append");
    let o = durq(&["dump", p(&dir), "--from", "210"]);
    assert_eq!(stdout(&o), "210\tone more\n");
    drop(log);
    // Other tests in this process fork children; a child shares the lock's
    // open file description between fork and exec, so the lock can outlive
    // the drop by a moment. Wait (boundedly) for that window to pass.
    let mut v = json(&durq(&["stat", p(&dir), "--json"]));
    for _ in 0..50 {
        if v["writer_active"] == false {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        v = json(&durq(&["stat", p(&dir), "--json"]));
    }
    assert_eq!(v["writer_active"], false);
    assert_eq!(v["end_offset"], 211);
}

#[test]
fn cursor_set_and_delete_move_and_remove_positions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 10, "4K");
    let o = durq(&["cursor", "set", p(&dir), "c", "4", "--create"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "client c: registered at position 4\n");
    let o = durq(&["consume", p(&dir), "-c", "c", "-n", "1"]);
    assert_eq!(stdout(&o), "msg-4\n");
    let o = durq(&["cursor", "set", p(&dir), "c", "--to-end"]);
    assert_eq!(stdout(&o), "client c: position 5 -> 10\n");
    let o = durq(&["cursor", "set", p(&dir), "c", "--to-start"]);
    assert_eq!(stdout(&o), "client c: position 10 -> 0\n");
    let o = durq(&["cursor", "delete", p(&dir), "c"]);
    assert_eq!(
        (code(&o), stdout(&o)),
        (0, "client c: deleted\n".to_owned())
    );
    let o = durq(&["cursor", "list", p(&dir)]);
    assert_eq!(stdout(&o), "");
}

#[test]
fn help_has_examples_and_exit_codes_and_version_prints() {
    let o = durq(&["--version"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).starts_with("durq "), "{}", stdout(&o));
    for cmd in [
        vec!["--help"],
        vec!["append", "--help"],
        vec!["consume", "--help"],
        vec!["stat", "--help"],
        vec!["verify", "--help"],
        vec!["recover", "--help"],
        vec!["dump", "--help"],
        vec!["cursor", "list", "--help"],
        vec!["cursor", "set", "--help"],
        vec!["cursor", "delete", "--help"],
        vec!["bench", "--help"],
    ] {
        let o = durq(&cmd);
        assert_eq!(code(&o), 0, "{cmd:?}");
        let h = stdout(&o);
        assert!(h.contains("Example"), "{cmd:?} has no example");
        assert!(h.contains("Exit codes"), "{cmd:?} has no exit codes");
    }
}

#[test]
fn stat_with_no_tty_draws_no_progress_bar_and_stdout_closed_early_is_quiet() {
    let tmp = fast_tempdir();
    let dir = tmp.path().join("data");
    let o = durq_with_stdin(&["append", p(&dir)], lines(1..=20_000).as_bytes());
    assert_eq!(code(&o), 0);
    let o = durq(&["verify", p(&dir)]);
    assert_eq!(stderr(&o), "", "no progress bar without a terminal");
    // `durq dump | head -1`: dump stops quietly when its reader goes away.
    let mut child = Command::new(DURQ)
        .args(["dump", p(&dir)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read");
    drop(out);
    let o = child.wait_with_output().expect("wait");
    assert_eq!(first, "0\t1\n");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
}

/// Makes everything under `root` readable (not writable) by other users.
fn open_for_reading_by_others(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).expect("metadata");
        let mode = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        if meta.is_dir() {
            for e in std::fs::read_dir(&path).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
        }
    }
}

#[test]
fn a_user_who_may_only_read_the_log_still_sees_whether_a_writer_is_active() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = make_log(tmp.path(), 20, "4K");
    // The reader runs a copy of the binary as another, unprivileged user
    // (`nobody`, through `setpriv`, when the tests run as root; otherwise
    // as this user, who may not write a 0444 file either).
    let bin = tmp.path().join("durq-copy");
    std::fs::copy(DURQ, &bin).expect("copy binary");
    open_for_reading_by_others(tmp.path());
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let lock = dir.join(durq::names::LOCK_FILE);
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let run = |args: &[&str]| -> Output {
        let mut cmd = if is_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        cmd.args(args).output().expect("run durq as a reader")
    };
    // The reader really cannot write the lock file.
    let probe = if is_root {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
            ])
            .arg(format!(": >> '{}'", lock.display()))
            .status()
            .expect("setpriv")
    } else {
        Command::new("sh")
            .arg("-c")
            .arg(format!(": >> '{}'", lock.display()))
            .status()
            .expect("sh")
    };
    assert!(
        !probe.success(),
        "the reader could write {}",
        lock.display()
    );

    let o = run(&["stat", p(&dir), "--json"]);
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v["writer_active"], false, "{v}");
    assert_eq!(v["end_offset"], 20);
    assert!(
        !v["notes"].to_string().contains("could not probe"),
        "{}",
        v["notes"]
    );

    // With a writer holding the lock, the reader sees it.
    let log = durq::Log::open(&dir).expect("writer");
    let v = json(&run(&["stat", p(&dir), "--json"]));
    assert_eq!(v["writer_active"], true, "{v}");
    drop(log);
}

/// The README's main job, shortened: `durq bench` measures in a scratch
/// directory inside the one given, reports every workload with a rate for
/// every round, and removes everything it created.
#[test]
fn bench_reports_every_workload_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let parent = tmp.path().join("measure-here");
    std::fs::create_dir(&parent).expect("mkdir");

    let o = durq(&["bench", p(&parent), "--duration", "0", "--json"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["durq_version"], env!("CARGO_PKG_VERSION"));
    let dir = v["dir"].as_str().expect("dir is a string");
    assert!(
        Path::new(dir).starts_with(&parent),
        "{dir} is not inside {}",
        parent.display()
    );
    let rounds = v["rounds"].as_u64().expect("rounds");
    assert_eq!(rounds, 3, "a run under 10 s has 3 rounds");
    let results = v["results"].as_array().expect("results");
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "raw_fdatasync",
            "append_1_thread",
            "append_16_threads",
            "consume_ack",
            "scan"
        ]
    );
    for r in results {
        let name = &r["name"];
        let median = r["median"].as_f64().expect("median is a number");
        assert!(
            median.is_finite() && median > 0.0,
            "{name}: median {median}"
        );
        let per_round = r["per_round"].as_array().expect("per_round");
        assert_eq!(per_round.len() as u64, rounds, "{name}");
        for x in per_round {
            let x = x.as_f64().expect("rate");
            assert!(x.is_finite() && x > 0.0, "{name}: a round measured {x}");
        }
        let ratio = r["ratio_to_raw"].as_f64().expect("ratio");
        assert!(ratio.is_finite() && ratio > 0.0, "{name}: ratio {ratio}");
        // Latency is measured for the appends only.
        let appends = name == "append_1_thread" || name == "append_16_threads";
        assert_eq!(r["p99_latency_us"].is_f64(), appends, "{name}: {r}");
    }
    assert_eq!(results[0]["ratio_to_raw"], 1.0);
    let left: Vec<_> = std::fs::read_dir(&parent)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "bench left files behind: {left:?}");

    // The table names each workload and the ratio column.
    let o = durq(&["bench", p(&parent), "--duration", "0"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let table = stdout(&o);
    for label in [
        "raw pwrite+fdatasync",
        "durq append, 1 thread",
        "durq append, 16 threads",
        "durq next+ack, 1 consumer",
        "durq scan with CRC",
        "vs raw",
    ] {
        assert!(table.contains(label), "table lacks {label:?}:\n{table}");
    }
    assert_eq!(std::fs::read_dir(&parent).expect("list").count(), 0);

    // A directory that does not exist is a usage error, named.
    let missing = tmp.path().join("no-such-dir");
    let o = durq(&["bench", p(&missing)]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no-such-dir"), "{}", stderr(&o));
    assert!(!missing.exists());
}

/// Ctrl-C during `durq bench` stops it within a workload, removes the
/// scratch directory and prints no results.
#[test]
fn bench_interrupted_removes_its_scratch_directory_and_exits_130() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(DURQ)
        .args(["bench", p(tmp.path()), "--duration", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run durq bench");
    // Wait until the scratch directory holds the log, then a little more,
    // so that the signal arrives while a workload runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let scratch = loop {
        let found = std::fs::read_dir(tmp.path())
            .expect("list")
            .map(|e| e.expect("entry").path())
            .find(|d| d.join("log").join("durq.lock").exists());
        if let Some(d) = found {
            break d;
        }
        assert!(Instant::now() < deadline, "bench never created its log");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&child);
    // A workload lasts 60 s / 25 = 2.4 s here.
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let o = child.wait_with_output().expect("output");
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(status, Some(130), "stderr: {err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!out.contains("vs raw"), "results printed: {out}");
    assert!(!scratch.exists(), "{} left behind", scratch.display());
    assert_eq!(std::fs::read_dir(tmp.path()).expect("list").count(), 0);
}
