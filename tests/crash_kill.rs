//! Real process kills: a child process appends (single records and batches,
//! from two threads) and consumes with two named clients on the real file
//! system, reporting on stdout, after each call returns, what it was told;
//! the parent SIGKILLs it at random moments, reopens the directory, checks
//! the invariants against the reports (see `docs/testing.md`), and starts a
//! new child on the same log.
//!
//! The child is this very test binary, run as
//! `<exe> --exact kill_child --nocapture --test-threads=1` with
//! `DURQ_KILL_CHILD_DIR` set; without that variable `kill_child` does
//! nothing. `DURQ_KILL_RUNS=N` sets the number of kills (default 220).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durq::{Log, Options};

#[path = "support/layout.rs"]
mod layout;

const CHILD_DIR: &str = "DURQ_KILL_CHILD_DIR";
const CHILD_OPS: &str = "DURQ_KILL_CHILD_OPS";
const CHILD_SEED: &str = "DURQ_KILL_CHILD_SEED";
const CLIENTS: [&str; 2] = ["k0", "k1"];
/// Op ids of one child run start at `run * OPS_PER_RUN`; each of its two
/// appender threads has half of that range.
const OPS_PER_RUN: u64 = 1 << 32;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        ((u128::from(splitmix(&mut self.0)) * u128::from(n)) >> 64) as u64
    }
}

/// The length of record `idx` of append op `op`: mostly small, some large
/// enough that 4 KiB segments roll over often.
fn len_of(op: u64, idx: u32) -> usize {
    let mut s = op ^ (u64::from(idx) << 40) ^ 0x1234_5678;
    let h = splitmix(&mut s);
    match h % 20 {
        0 => 1000 + (h / 20 % 2500) as usize,
        1..=3 => 200 + (h / 20 % 800) as usize,
        _ => 12 + (h / 20 % 120) as usize,
    }
}

/// Record `idx` of op `op`: the op id and index, then bytes derived from both.
fn payload(op: u64, idx: u32) -> Vec<u8> {
    let len = len_of(op, idx);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&op.to_le_bytes());
    out.extend_from_slice(&idx.to_le_bytes());
    let mut s = op.wrapping_mul(31) ^ u64::from(idx);
    while out.len() < len {
        let w = splitmix(&mut s).to_le_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&w[..take]);
    }
    out
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

// ---------------------------------------------------------------------------
// The child.
// ---------------------------------------------------------------------------

/// One line per report, written whole (a pipe write of under 4 KiB is
/// atomic) and flushed before the next call.
fn emit(out: &Mutex<()>, line: String) {
    let _g = out.lock().unwrap_or_else(|e| e.into_inner());
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(format!("@ {line}\n").as_bytes());
    let _ = so.flush();
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The child's body: runs only when the parent starts this binary with
/// `DURQ_KILL_CHILD_DIR` set. Appends and consumes until killed (or, if
/// never killed, for a few seconds).
#[test]
fn kill_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let op_base = env_u64(CHILD_OPS).expect("op base");
    let seed = env_u64(CHILD_SEED).expect("seed");
    let mut rng = Rng(seed);
    let log = Options::new()
        .segment_size(if rng.below(2) == 0 { 4096 } else { 8192 })
        .background_preallocation(rng.below(2) == 0)
        .open(&dir)
        .expect("the child opens the log");
    let out = Arc::new(Mutex::new(()));
    emit(&out, format!("E {} {}", log.first_offset(), log.end()));
    let deadline = Instant::now() + Duration::from_secs(8);
    let producers: Vec<_> = (0..2u64)
        .map(|t| {
            let log = log.clone();
            let out = out.clone();
            let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0xA5A5_5A5A));
            std::thread::spawn(move || {
                let mut op = op_base + t * (OPS_PER_RUN / 2);
                while Instant::now() < deadline {
                    op += 1;
                    let n = if rng.below(4) == 0 {
                        1 + rng.below(12) as u32
                    } else {
                        1
                    };
                    let payloads: Vec<Vec<u8>> = (0..n).map(|i| payload(op, i)).collect();
                    emit(&out, format!("a {op} {n}"));
                    let r = if n == 1 {
                        log.append(&payloads[0]).map(|o| o..o + 1)
                    } else {
                        log.append_batch(&payloads)
                    };
                    match r {
                        Ok(range) => emit(&out, format!("A {op} {} {n}", range.start)),
                        Err(e) => {
                            emit(&out, format!("X {op} {e}"));
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            })
        })
        .collect();
    // The consumers, on this thread.
    let consumers: Vec<_> = CLIENTS
        .iter()
        .map(|name| {
            emit(&out, format!("r {name}"));
            let c = log.consumer(name).expect("the child registers its client");
            emit(&out, format!("P {name} {}", c.acked()));
            c
        })
        .collect();
    let mut held: Vec<Vec<(durq::Message, u64)>> = vec![Vec::new(), Vec::new()];
    let mut epochs = [0u64; 2];
    while Instant::now() < deadline {
        let ci = rng.below(2) as usize;
        let (name, c) = (CLIENTS[ci], &consumers[ci]);
        match rng.below(20) {
            0..=7 => match c.next() {
                Ok(Some(m)) => {
                    emit(
                        &out,
                        format!("N {name} {} {}", m.offset(), hash(m.payload())),
                    );
                    held[ci].push((m, epochs[ci]));
                    if held[ci].len() > 20 {
                        held[ci].swap_remove(0);
                    }
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => emit(&out, format!("x {name} next {e}")),
            },
            8..=14 => {
                if held[ci].is_empty() {
                    continue;
                }
                let i = rng.below(held[ci].len() as u64) as usize;
                let (m, ep) = held[ci].swap_remove(i);
                let off = m.offset();
                let cur = u8::from(ep == epochs[ci]);
                emit(&out, format!("t {name} {off} {cur}"));
                match m.ack() {
                    Ok(()) => emit(&out, format!("T {name} {off} {cur}")),
                    Err(e) => emit(&out, format!("x {name} ack {e}")),
                }
            }
            15 => {
                if !held[ci].is_empty() {
                    let i = rng.below(held[ci].len() as u64) as usize;
                    held[ci].swap_remove(i).0.nack();
                }
            }
            16..=18 => {
                let end = log.end();
                let acked = c.acked();
                let e = acked + rng.below(end.saturating_sub(acked) + 1);
                emit(&out, format!("u {name} {e}"));
                match c.ack_until(e) {
                    Ok(()) => emit(&out, format!("U {name} {e}")),
                    Err(err) => emit(&out, format!("x {name} ack_until {err}")),
                }
            }
            _ => {
                let (first, end) = (log.first_offset(), log.end());
                let p = first + rng.below(end - first + 1);
                emit(&out, format!("s {name} {p}"));
                match c.seek(p) {
                    Ok(()) => {
                        epochs[ci] += 1;
                        emit(&out, format!("S {name} {p}"));
                    }
                    Err(e) => emit(&out, format!("x {name} seek {e}")),
                }
            }
        }
    }
    for p in producers {
        let _ = p.join();
    }
    emit(&out, "D".into());
}

// ---------------------------------------------------------------------------
// The parent: the model of what the child was told, and the checks.
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct ClientModel {
    registered: bool,
    base: u64,
    ok_floor: u64,
    ok: BTreeSet<u64>,
    att_floor: u64,
    att: BTreeSet<u64>,
    ok_prefix: u64,
    lo: u64,
    hi: u64,
}

fn prefix(floor: u64, set: &BTreeSet<u64>) -> u64 {
    let mut p = floor;
    for &o in set.range(floor..) {
        if o != p {
            break;
        }
        p += 1;
    }
    p
}

impl ClientModel {
    fn set_position(&mut self, p: u64) {
        *self = ClientModel {
            registered: true,
            base: p,
            ok_floor: p,
            att_floor: p,
            ok_prefix: p,
            lo: p,
            hi: p,
            ..ClientModel::default()
        };
    }
    fn attempted(&mut self) {
        self.hi = self
            .hi
            .max(prefix(self.att_floor.max(self.base), &self.att));
    }
    fn confirmed(&mut self) {
        let p = prefix(self.ok_floor.max(self.base), &self.ok);
        if p > self.ok_prefix {
            self.ok_prefix = p;
            self.lo = self.lo.max(p);
        }
    }
}

#[derive(Default)]
struct Model {
    /// Op id -> record count, for every append attempted.
    attempted: HashMap<u64, u32>,
    /// Op id -> first offset, for every append that returned Ok.
    ok: BTreeMap<u64, u64>,
    /// Offsets a consumer (or an earlier open) saw, with their hash.
    seen: BTreeMap<u64, u64>,
    clients: BTreeMap<String, ClientModel>,
}

fn field<'a>(it: &mut impl Iterator<Item = &'a str>, line: &str) -> &'a str {
    it.next()
        .unwrap_or_else(|| panic!("short report line {line:?}"))
}

fn num<'a>(it: &mut impl Iterator<Item = &'a str>, line: &str) -> u64 {
    field(it, line)
        .parse()
        .unwrap_or_else(|e| panic!("bad number in report line {line:?}: {e}"))
}

impl Model {
    fn apply(&mut self, line: &str) {
        let mut it = line.split(' ');
        let kind = field(&mut it, line);
        match kind {
            "E" | "D" | "X" | "x" => {}
            "a" => {
                let op = num(&mut it, line);
                let n = num(&mut it, line) as u32;
                self.attempted.insert(op, n);
            }
            "A" => {
                let op = num(&mut it, line);
                let start = num(&mut it, line);
                self.ok.insert(op, start);
            }
            "N" => {
                let _name = field(&mut it, line);
                let off = num(&mut it, line);
                let h = num(&mut it, line);
                if let Some(prev) = self.seen.insert(off, h) {
                    assert_eq!(prev, h, "offset {off} was read with two different payloads");
                }
            }
            "r" => {
                // A registration attempt: the client may exist from now on.
                let name = field(&mut it, line);
                self.clients.entry(name.to_owned()).or_default();
            }
            "P" => {
                let name = field(&mut it, line);
                let p = num(&mut it, line);
                let c = self.clients.entry(name.to_owned()).or_default();
                if c.registered {
                    assert_eq!(
                        p, c.lo,
                        "client {name} started at {p}, but the parent recovered it at {}",
                        c.lo
                    );
                }
                c.set_position(p);
            }
            "t" | "T" => {
                let name = field(&mut it, line);
                let off = num(&mut it, line);
                let current = num(&mut it, line) == 1;
                let c = self.clients.get_mut(name).expect("ack of a known client");
                if current {
                    if kind == "t" {
                        c.att.insert(off);
                        c.attempted();
                    } else {
                        c.ok.insert(off);
                        c.confirmed();
                    }
                }
            }
            "u" | "U" => {
                let name = field(&mut it, line);
                let e = num(&mut it, line);
                let c = self.clients.get_mut(name).expect("ack of a known client");
                if kind == "u" {
                    c.att_floor = c.att_floor.max(e);
                    c.attempted();
                } else {
                    c.ok_floor = c.ok_floor.max(e);
                    c.confirmed();
                }
            }
            "s" => {
                let name = field(&mut it, line);
                let p = num(&mut it, line);
                let c = self.clients.get_mut(name).expect("seek of a known client");
                c.hi = c.hi.max(p);
                c.lo = c.lo.min(p);
            }
            "S" => {
                let name = field(&mut it, line);
                let p = num(&mut it, line);
                self.clients
                    .get_mut(name)
                    .expect("seek of a known client")
                    .set_position(p);
            }
            other => panic!("unknown report {other:?} in {line:?}"),
        }
    }

    /// Checks the reopened log against the reports; then makes what it
    /// shows the new baseline.
    fn check(&mut self, log: &Log, run: u64) {
        let report = log.recovery_report().clone();
        let (first, end) = (log.first_offset(), log.end());
        assert_eq!(report.end_offset, end, "run {run}: report end");
        assert_eq!(
            first, 0,
            "run {run}: no retention, yet offsets below {first} are gone"
        );
        let mut records = Vec::with_capacity(end as usize);
        for item in log.iter(0) {
            let (off, rec) = item.unwrap_or_else(|e| {
                panic!(
                    "run {run}: reading offset {} of {end} failed: {e}",
                    records.len()
                )
            });
            assert_eq!(off, records.len() as u64, "run {run}: offsets are dense");
            records.push(rec.to_vec());
        }
        assert_eq!(
            records.len() as u64,
            end,
            "run {run}: every offset below the end reads back"
        );
        assert!(
            log.read(end).unwrap().is_none(),
            "run {run}: nothing at the end"
        );
        // Nothing that was never appended; each record once, where its
        // append (if it returned) said.
        let mut placed = HashMap::new();
        for (off, rec) in records.iter().enumerate() {
            let off = off as u64;
            assert!(
                rec.len() >= 12,
                "run {run}: record {off} is too short to be ours"
            );
            let op = u64::from_le_bytes(rec[0..8].try_into().unwrap());
            let idx = u32::from_le_bytes(rec[8..12].try_into().unwrap());
            let n = self.attempted.get(&op).copied().unwrap_or_else(|| {
                panic!("run {run}: record {off} names op {op}, which was never attempted")
            });
            assert!(
                idx < n,
                "run {run}: record {off}: op {op} had {n} records, not {}",
                idx + 1
            );
            assert!(
                *rec == payload(op, idx),
                "run {run}: record {off} is not the payload of op {op} record {idx}"
            );
            if let Some(&start) = self.ok.get(&op) {
                assert_eq!(
                    start + u64::from(idx),
                    off,
                    "run {run}: op {op} record {idx} was acknowledged elsewhere"
                );
            }
            if let Some(prev) = placed.insert((op, idx), off) {
                panic!("run {run}: op {op} record {idx} appears at {prev} and {off}");
            }
        }
        // Every append that returned Ok is there.
        for (&op, &start) in &self.ok {
            let n = self.attempted[&op];
            for idx in 0..n {
                let off = start + u64::from(idx);
                assert!(
                    off < end,
                    "run {run}: op {op} returned Ok at {start} (+{idx}) but the log ends at {end}"
                );
            }
        }
        // Nothing a consumer saw is gone.
        for (&off, &h) in &self.seen {
            assert!(
                off < end,
                "run {run}: a consumer saw offset {off}; the log ends at {end}"
            );
            assert_eq!(
                hash(&records[off as usize]),
                h,
                "run {run}: offset {off} changed since a consumer saw it"
            );
        }
        // Acknowledgements.
        let infos = log.consumers().unwrap();
        for (name, c) in &self.clients {
            let info = infos.iter().find(|i| &i.name == name);
            match info {
                None => assert!(
                    !c.registered,
                    "run {run}: client {name} is gone after the kill"
                ),
                Some(i) if c.registered => {
                    assert!(
                        i.acked >= c.lo,
                        "run {run}: client {name} at {}, below {}: acknowledgements that returned were lost",
                        i.acked,
                        c.lo
                    );
                    assert!(
                        i.acked <= c.hi,
                        "run {run}: client {name} at {}, past {}: an unacknowledged message would be skipped",
                        i.acked,
                        c.hi
                    );
                }
                Some(_) => {}
            }
        }
        for i in &infos {
            assert!(
                self.clients.contains_key(&i.name),
                "run {run}: unknown client {}",
                i.name
            );
        }
        // (A registration killed between its journal and its snapshot leaves
        // a journal that open removes as a leftover, not a repair.)
        assert!(
            report.cursors.is_empty(),
            "run {run}: cursor repairs after a process kill: {:?}",
            report.cursors
        );
        // Baseline for the next run.
        for (off, rec) in records.iter().enumerate() {
            self.seen.insert(off as u64, hash(rec));
        }
        for i in &infos {
            self.clients
                .get_mut(&i.name)
                .expect("checked above")
                .set_position(i.acked);
        }
        self.clients.retain(|_, c| c.registered);
    }
}

fn open(dir: &Path) -> Log {
    Options::new()
        .segment_size(4096)
        .background_preallocation(false)
        .open(dir)
        .unwrap_or_else(|e| panic!("opening {} after a kill failed: {e}", dir.display()))
}

fn spawn_child(dir: &Path, run: u64, seed: u64) -> (Child, Receiver<Option<String>>) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_OPS, (run * OPS_PER_RUN).to_string())
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(report) = line.strip_prefix("@ ")
                && tx.send(Some(report.to_owned())).is_err()
            {
                return;
            }
        }
        let _ = tx.send(None);
    });
    (child, rx)
}

#[test]
fn kill_the_child_at_random_moments_and_check_what_it_was_told() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let runs = env_u64("DURQ_KILL_RUNS").unwrap_or(220);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let began = Instant::now();
    let mut model = Model::default();
    let mut rng = Rng(0x00C0_FFEE ^ env_u64("DURQ_KILL_SEED").unwrap_or(0));
    let (mut kills, mut lines, mut torn, mut finished) = (0u64, 0u64, 0u64, 0u64);
    // Create the log first, so that every child recovers one.
    drop(open(&dir));
    for run in 1..=runs {
        let (mut child, rx) = spawn_child(&dir, run, splitmix(&mut rng.0));
        // Kill after some reports, or some milliseconds after the first.
        let by_lines = rng.below(2) == 0;
        let after_lines = 1 + rng.below(60);
        let after_ms = rng.below(40);
        let mut got = 0u64;
        let mut eof = false;
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Some(line)) => {
                    model.apply(&line);
                    got += 1;
                    if got == 1 && !by_lines {
                        std::thread::sleep(Duration::from_millis(after_ms));
                        break;
                    }
                    if by_lines && got >= after_lines {
                        break;
                    }
                }
                Ok(None) => {
                    eof = true;
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("run {run}: the child reported nothing for 60 s");
                }
                Err(RecvTimeoutError::Disconnected) => {
                    eof = true;
                    break;
                }
            }
        }
        let status = child.try_wait().expect("try_wait");
        if status.is_none() {
            child.kill().expect("SIGKILL the child");
            kills += 1;
        } else {
            finished += 1;
        }
        let status = child.wait().expect("wait for the child");
        assert!(
            status.success() || status.code().is_none(),
            "run {run}: the child failed on its own: {status}"
        );
        // Reports already in the pipe are calls that returned: they count.
        while !eof {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Some(line)) => {
                    model.apply(&line);
                    got += 1;
                }
                Ok(None) | Err(RecvTimeoutError::Disconnected) => eof = true,
                Err(RecvTimeoutError::Timeout) => panic!("run {run}: the pipe did not close"),
            }
        }
        lines += got;
        let log = open(&dir);
        if log.recovery_report().torn_tail.is_some() {
            torn += 1;
        }
        model.check(&log, run);
        drop(log);
        // Recovery is idempotent: a second open finds nothing to do.
        let log = open(&dir);
        let second = log.recovery_report();
        assert!(
            second.is_clean(),
            "run {run}: the second open after a kill still repaired something: {second:?}"
        );
        drop(log);
    }
    let groups = layout::groups(&dir).len();
    println!(
        "{kills} kills ({finished} children finished on their own) in {:.1?}, {lines} reports, \
         {} appends acknowledged, {torn} torn tails cut, {} segments in {groups} groups",
        began.elapsed(),
        model.ok.len(),
        layout::segment_files(&dir).len(),
    );
    assert!(
        kills >= runs * 9 / 10,
        "only {kills} of {runs} children were killed"
    );
    // The default run writes a few hundred 4 KiB segments: kills landed on
    // logs spanning several segment group directories (64 segments each),
    // whose middle groups each reopen lists only when read.
    if runs >= 220 {
        assert!(groups >= 2, "the log never outgrew its first segment group");
    }
}
