//! The seeded crash-scenario runner: a workload of appends, batches,
//! rollovers, consumers and retention runs against durq on the simulated
//! power-loss disk (`simdisk.rs`); the disk loses power (or the process
//! crashes) at a chosen point; the log is reopened, sometimes with a second
//! crash during recovery; then the invariants of `docs/testing.md` are
//! checked against a model of what every call returned.
//!
//! # Including it
//!
//! The runner refers to the disk as `super::simdisk`, so a test file (or a
//! fuzz target) declares both modules side by side, the disk first:
//!
//! ```ignore
//! #[path = "support/simdisk.rs"]
//! mod simdisk;
//! #[path = "support/crash_runner.rs"]
//! mod crash_runner;
//! ```
//!
//! (from `fuzz/fuzz_targets/x.rs` the paths are
//! `../../tests/support/simdisk.rs` and `../../tests/support/crash_runner.rs`).
//!
//! # Entry points
//!
//! * [`run_seed`]: derives a whole scenario from a `u64` seed (the seed also
//!   picks the scenario family, see [`family_of`]) and runs it.
//! * [`run_from_bytes`]: the same runner with every choice (operations,
//!   crash points, faults, the disk's own seed) taken from a byte string, for
//!   a fuzzer. It never panics on any input (unless durq itself panics, which
//!   is a bug); it returns `Err` only for a real invariant violation.
//! * [`run_scenario`] with a hand-written [`Scenario`]: the targeted
//!   deterministic tests (every sync point of a rollover, retention, journal
//!   folds) use it.
//!
//! `Err(String)` always means an invariant was violated; the message says
//! which, with the round and step. [`trace_seed`] replays a seed and returns
//! the list of operations with their results as well.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use durq::{Consumer, Error, Log, Message, Options, RecoveryReport, Retention};

use super::simdisk::{LossMode, SimDisk};

/// The log directory on the simulated disk.
pub const DIR: &str = "/db";

/// Client names used by the scenarios (at most three clients).
pub const CLIENT_NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Payloads at least this long start with the op id (8 bytes) and the index
/// within the batch (4 bytes), so every record names the call that wrote it.
pub const ID_LEN: usize = 12;

// ---------------------------------------------------------------------------
// Randomness: a seeded PRNG or a fuzzer's bytes.
// ---------------------------------------------------------------------------

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where a scenario's choices come from.
pub struct Choices<'a> {
    src: Src<'a>,
}

enum Src<'a> {
    Rng(u64),
    Bytes { data: &'a [u8], pos: usize },
}

impl<'a> Choices<'a> {
    /// Choices from a PRNG seeded with `seed`.
    pub fn from_seed(seed: u64) -> Choices<'static> {
        Choices {
            src: Src::Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B),
        }
    }

    /// Choices read from `data`; once it is used up every choice is 0.
    pub fn from_bytes(data: &'a [u8]) -> Choices<'a> {
        Choices {
            src: Src::Bytes { data, pos: 0 },
        }
    }

    /// A value in `0..n` (0 if `n <= 1`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        match &mut self.src {
            Src::Rng(state) => ((u128::from(splitmix(state)) * u128::from(n)) >> 64) as u64,
            Src::Bytes { data, pos } => {
                let nbytes = if n <= 1 << 8 {
                    1
                } else if n <= 1 << 16 {
                    2
                } else if n <= 1 << 32 {
                    4
                } else {
                    8
                };
                let mut v = 0u64;
                for _ in 0..nbytes {
                    let b = data.get(*pos).copied().unwrap_or(0);
                    *pos = pos.saturating_add(1);
                    v = (v << 8) | u64::from(b);
                }
                v % n
            }
        }
    }

    /// A raw 64-bit value.
    pub fn raw(&mut self) -> u64 {
        match &mut self.src {
            Src::Rng(state) => splitmix(state),
            Src::Bytes { .. } => self.below(u64::MAX),
        }
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Whether a byte source is used up (never true for a PRNG).
    pub fn exhausted(&self) -> bool {
        match &self.src {
            Src::Rng(_) => false,
            Src::Bytes { data, pos } => *pos >= data.len(),
        }
    }
}

// ---------------------------------------------------------------------------
// Payloads.
// ---------------------------------------------------------------------------

/// The payload of record `idx` of append call `op`, `len` bytes long. From
/// [`ID_LEN`] bytes on it starts with `op` and `idx`; the rest (and all of a
/// shorter payload) is a stream derived from both.
pub fn payload(op: u64, idx: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    if len >= ID_LEN {
        out.extend_from_slice(&op.to_le_bytes());
        out.extend_from_slice(&idx.to_le_bytes());
    }
    let mut st = op
        .wrapping_mul(0xD6E8_FEB8_6659_FD93)
        .wrapping_add(u64::from(idx).wrapping_mul(0xA076_1D64_78BD_642F))
        ^ len as u64;
    while out.len() < len {
        let w = splitmix(&mut st).to_le_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&w[..take]);
    }
    out
}

/// FNV-1a, 64 bits: enough to tell two payloads apart in a check.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h ^ (bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A payload size, resolved against the log's maximum record size when the
/// step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Exactly this many bytes (capped at the maximum).
    Exact(u32),
    /// The maximum record size.
    Max,
    /// A random size from a mix: empty, tiny, small, medium, large, near-max.
    Pick(u64),
}

impl Size {
    fn resolve(self, max: usize) -> usize {
        match self {
            Size::Exact(n) => (n as usize).min(max),
            Size::Max => max,
            Size::Pick(raw) => {
                let class = raw % 100;
                let r = (raw / 100) as usize;
                let n = match class {
                    0..=4 => 0,
                    5..=14 => 1 + r % (ID_LEN - 1),
                    15..=59 => ID_LEN + r % 116,
                    60..=81 => 128 + r % 896,
                    82..=93 => 1024 + r % (max / 2).saturating_sub(1024).max(1),
                    _ => max.saturating_sub(r % 64),
                };
                n.min(max)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------

/// The kinds of scenario. The seed picks one ([`family_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Power loss at a sync point (`crash_after_syncs`).
    SyncPoints,
    /// Power loss at a mutating operation between syncs (`crash_after_ops`).
    BetweenOps,
    /// An `fsync` failing with EIO, or the disk filling up (ENOSPC), while
    /// the workload goes on; then a power loss.
    Faults,
    /// A process crash (SIGKILL: the page cache survives), or an EIO
    /// followed by a reopen without a power loss; the reopened log is used;
    /// then the power fails. What the reopened log showed must be durable.
    PageCache,
    /// Thousands of acknowledgements, so that the cursor journal fills and
    /// is folded into a new snapshot; power loss around the fold.
    JournalFold,
}

impl Family {
    /// Every family, in the order of [`family_of`]'s table.
    pub const ALL: [Family; 5] = [
        Family::SyncPoints,
        Family::BetweenOps,
        Family::Faults,
        Family::PageCache,
        Family::JournalFold,
    ];
}

/// Seeds are spread over the families by `seed % 20`: 7/20 sync points,
/// 6/20 between operations, 4/20 faults, 2/20 page cache, 1/20 journal
/// folds.
pub fn family_of(seed: u64) -> Family {
    match seed % 20 {
        0..=6 => Family::SyncPoints,
        7..=12 => Family::BetweenOps,
        13..=16 => Family::Faults,
        17..=18 => Family::PageCache,
        _ => Family::JournalFold,
    }
}

/// The residues `r` (of `seed % 20`) whose seeds belong to `family`.
pub fn residues_of(family: Family) -> Vec<u64> {
    (0..20).filter(|&r| family_of(r) == family).collect()
}

/// Which segments retention deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionKind {
    /// Keep everything (the default).
    KeepAll,
    /// `Retention::acked_by_all()`.
    AckedByAll,
    /// `Retention::max_bytes(n)`.
    MaxBytes(u64),
}

/// One operation of the workload. Choices that depend on the state (which
/// message, which offset) are `pick`s resolved when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `log.append` of one payload.
    Append(Size),
    /// `log.append` of a payload one to 64 bytes over the limit: refused.
    Oversized(u64),
    /// `log.append_batch` (possibly empty).
    Batch(Vec<Size>),
    /// `log.append_batch` of `n` payloads of 12 to 27 bytes.
    BigBatch(u32),
    /// `consumer.next()`; the message is kept in flight.
    Next(usize),
    /// `consumer.next_batch(n)`; the messages are kept in flight.
    NextBatch(usize, u32),
    /// Acknowledge one of the client's messages in flight.
    Ack(usize, u64),
    /// Give one of the client's messages back with `nack`.
    Nack(usize, u64),
    /// Drop one of the client's messages (gives it back).
    DropMsg(usize, u64),
    /// `consumer.ack_until` somewhere between the position and the end + 1.
    AckUntil(usize, u64),
    /// `n` times: take the next message and acknowledge it (or, every third
    /// time, `ack_until` just past it).
    AckMany(usize, u32),
    /// `consumer.seek` somewhere in the retained range (or one past it).
    Seek(usize, u64),
    /// `log.read` of a retained offset, and of the end.
    Read(u64),
    /// `log.iter` from some offset, up to `n` records.
    Iter(u64, u32),
    /// `log.consumer(name)`: register (or get) a client.
    Register(usize),
    /// `log.apply_retention()`.
    ApplyRetention,
    /// Drop the log and open it again, without a crash.
    CleanReopen,
    /// Arm a crash point or a fault on the disk.
    Arm(Arm),
}

/// A crash point or fault armed on the disk during a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// `crash_after_syncs(k)`.
    CrashAfterSyncs(u64),
    /// `crash_after_ops(k)`.
    CrashAfterOps(u64),
    /// `fail_sync_at(n)` (EIO), `n >= 1`.
    FailSyncAt(u64),
    /// `set_disk_full(true)`.
    DiskFull,
    /// `set_disk_full(false)`, then check that the log appends again.
    ClearDiskFull,
}

/// How a round ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Power loss with this loss mode.
    PowerLoss(LossMode),
    /// A process crash (the page cache survives).
    ProcessCrash,
    /// Drop the log and reopen without a crash (a process crash if the disk
    /// died).
    Reopen,
}

/// One round: steps, then a crash, then recovery and the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// The workload.
    pub steps: Vec<Step>,
    /// How the round ends.
    pub end: End,
    /// If set, the disk crashes again after this many mutating operations
    /// of the recovery (then loses power, or the process crashes, again).
    pub recovery_crash: Option<u64>,
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The family (decides which checks expect which faults).
    pub family: Family,
    /// The simulated disk's seed (loss and tearing decisions).
    pub disk_seed: u64,
    /// Segment size for the log.
    pub segment_size: u64,
    /// Retention policy.
    pub retention: RetentionKind,
    /// The rounds.
    pub rounds: Vec<Round>,
}

/// What one scenario did (for the summary line of a sweep).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScenarioStats {
    /// Rounds run (each ends with a crash or reopen and the checks).
    pub rounds: u64,
    /// Workload steps run.
    pub steps: u64,
    /// Appends and batches that returned `Ok`.
    pub appends_ok: u64,
    /// Append calls that returned an error (unknown outcome).
    pub appends_failed: u64,
    /// Acknowledgements (`ack`, `ack_until`) that returned `Ok`.
    pub acks_ok: u64,
    /// Power losses.
    pub power_losses: u64,
    /// Process crashes.
    pub process_crashes: u64,
    /// Crashes during recovery.
    pub recovery_crashes: u64,
    /// Recoveries that cut a torn tail.
    pub torn_tails: u64,
    /// Records read back and checked after recoveries.
    pub records_checked: u64,
    /// Syncs that failed with EIO.
    pub eio_fired: u64,
    /// Rounds run with a full disk for a while.
    pub enospc_rounds: u64,
    /// Times the disk reached an armed crash point.
    pub crash_points_hit: u64,
    /// Where the disk last died: (round, step index), if it did.
    pub crash_step: Option<(usize, usize)>,
}

impl ScenarioStats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, o: &ScenarioStats) {
        self.rounds += o.rounds;
        self.steps += o.steps;
        self.appends_ok += o.appends_ok;
        self.appends_failed += o.appends_failed;
        self.acks_ok += o.acks_ok;
        self.power_losses += o.power_losses;
        self.process_crashes += o.process_crashes;
        self.recovery_crashes += o.recovery_crashes;
        self.torn_tails += o.torn_tails;
        self.records_checked += o.records_checked;
        self.eio_fired += o.eio_fired;
        self.enospc_rounds += o.enospc_rounds;
        self.crash_points_hit += o.crash_points_hit;
    }
}

/// Derives the whole scenario from `seed` (the family from `seed % 20`).
pub fn scenario_for_seed(seed: u64) -> Scenario {
    let mut ch = Choices::from_seed(seed);
    generate(&mut ch, family_of(seed), seed)
}

/// Runs the scenario of `seed`.
pub fn run_seed(seed: u64) -> Result<ScenarioStats, String> {
    run_scenario(&scenario_for_seed(seed), false).0
}

/// Runs the scenario of `seed` recording a trace of every step and its
/// result; returns the trace with the result.
pub fn trace_seed(seed: u64) -> (Result<ScenarioStats, String>, Vec<String>) {
    run_scenario(&scenario_for_seed(seed), true)
}

/// Runs a scenario whose every choice comes from `data` (for a fuzzer).
/// Never panics on any input; `Err` only for an invariant violation.
pub fn run_from_bytes(data: &[u8]) -> Result<(), String> {
    let mut ch = Choices::from_bytes(data);
    let family = Family::ALL[ch.below(Family::ALL.len() as u64) as usize];
    let disk_seed = ch.below(u64::MAX);
    let sc = generate(&mut ch, family, disk_seed);
    run_scenario(&sc, false).0.map(|_| ())
}

fn generate(ch: &mut Choices<'_>, family: Family, disk_seed: u64) -> Scenario {
    let segment_size = if ch.chance(50) { 4096 } else { 8192 };
    let retention = match ch.below(10) {
        0..=5 => RetentionKind::KeepAll,
        6..=7 => RetentionKind::AckedByAll,
        _ => RetentionKind::MaxBytes(segment_size * ch.range(2, 4)),
    };
    let clients = ch.range(1, 3) as usize;
    let mut rounds = Vec::new();
    match family {
        Family::JournalFold => {
            let retention = if retention == RetentionKind::AckedByAll {
                retention
            } else {
                RetentionKind::KeepAll
            };
            // Registration makes generation 0 with an empty journal of 2,048
            // entries; the 2,049th durable ack folds it into a snapshot.
            let before = ch.range(2044, 2049) as u32;
            let arm = if ch.chance(50) {
                Arm::CrashAfterSyncs(ch.below(4))
            } else {
                Arm::CrashAfterOps(ch.below(12))
            };
            let steps = vec![
                Step::Register(0),
                Step::BigBatch(2200),
                Step::AckMany(0, before),
                Step::Arm(arm),
                Step::AckMany(0, 40),
            ];
            rounds.push(Round {
                steps,
                end: End::PowerLoss(loss_mode(ch)),
                recovery_crash: recovery_crash(ch),
            });
            return Scenario {
                family,
                disk_seed,
                segment_size: 8192,
                retention,
                rounds,
            };
        }
        Family::PageCache => {
            let n = ch.range(2, 3);
            for r in 0..n {
                let last = r + 1 == n;
                let mut steps = gen_steps(ch, family, r == 0, clients);
                let end = if last {
                    if ch.chance(70) {
                        let arm = crash_arm(ch);
                        insert_arm(ch, &mut steps, arm);
                    }
                    End::PowerLoss(loss_mode(ch))
                } else {
                    match ch.below(100) {
                        0..=59 => {
                            let arm = crash_arm(ch);
                            insert_arm(ch, &mut steps, arm);
                            End::ProcessCrash
                        }
                        60..=84 => {
                            let arm = Arm::FailSyncAt(ch.range(1, 6));
                            insert_arm(ch, &mut steps, arm);
                            End::Reopen
                        }
                        _ => End::ProcessCrash,
                    }
                };
                rounds.push(Round {
                    steps,
                    end,
                    recovery_crash: None,
                });
            }
        }
        Family::SyncPoints | Family::BetweenOps | Family::Faults => {
            let n = if ch.chance(40) { 2 } else { 1 };
            for r in 0..n {
                let mut steps = gen_steps(ch, family, r == 0, clients);
                match family {
                    Family::SyncPoints => {
                        let arm = Arm::CrashAfterSyncs(ch.below(4));
                        insert_arm(ch, &mut steps, arm);
                    }
                    Family::BetweenOps => {
                        let arm = Arm::CrashAfterOps(ch.below(12));
                        insert_arm(ch, &mut steps, arm);
                    }
                    _ => {
                        let len = steps.len() as u64;
                        if ch.chance(50) {
                            let at = ch.below(len + 1) as usize;
                            steps.insert(at, Step::Arm(Arm::FailSyncAt(ch.range(1, 6))));
                        } else {
                            let a = ch.below(len + 1) as usize;
                            let b = ch.range(a as u64, len) as usize;
                            steps.insert(b, Step::Arm(Arm::ClearDiskFull));
                            steps.insert(a, Step::Arm(Arm::DiskFull));
                        }
                        if ch.chance(50) {
                            // A crash point after the fault, so that the crash
                            // can land on the recovery path of the fault.
                            let len = steps.len() as u64;
                            let at = ch.range(len / 2, len) as usize;
                            steps.insert(at, Step::Arm(crash_arm(ch)));
                        }
                    }
                }
                rounds.push(Round {
                    steps,
                    end: End::PowerLoss(loss_mode(ch)),
                    recovery_crash: recovery_crash(ch),
                });
            }
        }
    }
    Scenario {
        family,
        disk_seed,
        segment_size,
        retention,
        rounds,
    }
}

fn crash_arm(ch: &mut Choices<'_>) -> Arm {
    if ch.chance(50) {
        Arm::CrashAfterSyncs(ch.below(4))
    } else {
        Arm::CrashAfterOps(ch.below(12))
    }
}

fn insert_arm(ch: &mut Choices<'_>, steps: &mut Vec<Step>, arm: Arm) {
    // One time in five the crash comes within the first few steps: right
    // after the log was created, or right after a recovery (a repair that
    // was not synced, a first segment whose name was not, show up there).
    let at = if ch.chance(20) {
        ch.below(steps.len().min(4) as u64 + 1)
    } else {
        ch.below(steps.len() as u64 + 1)
    } as usize;
    steps.insert(at, Step::Arm(arm));
}

fn loss_mode(ch: &mut Choices<'_>) -> LossMode {
    match ch.below(100) {
        0..=84 => LossMode::Random,
        85..=94 => LossMode::DropAll,
        _ => LossMode::KeepAll,
    }
}

fn recovery_crash(ch: &mut Choices<'_>) -> Option<u64> {
    if ch.chance(20) {
        Some(ch.below(6))
    } else {
        None
    }
}

fn gen_steps(ch: &mut Choices<'_>, family: Family, first: bool, clients: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    if first {
        for c in 0..clients.min(2) {
            steps.push(Step::Register(c));
        }
    }
    let n = ch.range(15, 45);
    for _ in 0..n {
        if ch.exhausted() {
            break;
        }
        let c = ch.below(clients as u64) as usize;
        let step = match ch.below(100) {
            0..=26 => Step::Append(Size::Pick(ch.raw())),
            27..=37 => {
                let k = if ch.chance(5) { 0 } else { ch.range(1, 16) };
                Step::Batch((0..k).map(|_| Size::Pick(ch.raw())).collect())
            }
            38 => Step::Oversized(ch.raw()),
            39..=52 => Step::Next(c),
            53..=62 => Step::Ack(c, ch.raw()),
            63..=64 => Step::Nack(c, ch.raw()),
            65 => Step::DropMsg(c, ch.raw()),
            66..=72 => Step::AckUntil(c, ch.raw()),
            73..=75 => Step::Seek(c, ch.raw()),
            76..=80 => Step::Read(ch.raw()),
            81..=83 => Step::Iter(ch.raw(), ch.range(1, 24) as u32),
            84..=85 => Step::Register(c),
            86..=88 => Step::ApplyRetention,
            89 if family != Family::Faults => Step::CleanReopen,
            89 => Step::Append(Size::Exact(ch.below(40) as u32)),
            90..=93 => Step::AckMany(c, ch.range(1, 8) as u32),
            94..=96 => Step::NextBatch(c, ch.range(1, 12) as u32),
            _ => Step::Append(Size::Exact(ch.range(12, 200) as u32)),
        };
        steps.push(step);
    }
    steps
}

// ---------------------------------------------------------------------------
// The model of what the calls returned.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Returned `Ok` with this first offset.
    Ok(u64),
    /// Returned an error that leaves the outcome open.
    Unknown,
    /// Refused before anything was written (too large, or the log was
    /// already poisoned): must never appear.
    Refused,
}

#[derive(Debug)]
struct AppendOp {
    sizes: Vec<u32>,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// Never attempted (or the attempt was lost in a crash).
    None,
    /// `log.consumer` returned `Ok` (or a recovery found the client).
    Ok,
    /// `log.consumer` returned an error: the client may or may not exist.
    Unknown,
}

/// What the calls of one client returned, as bounds on its durable position.
struct ClientModel {
    name: &'static str,
    reg: Reg,
    /// The in-memory position the engine started from (registration,
    /// a successful seek, or a reopen).
    base: u64,
    /// Everything below this was covered by an `ack_until` that returned Ok.
    ok_floor: u64,
    /// Offsets whose `ack` returned Ok.
    ok: BTreeSet<u64>,
    /// Everything below this was covered by an attempted `ack_until`.
    att_floor: u64,
    /// Offsets whose `ack` was attempted.
    att: BTreeSet<u64>,
    ok_prefix: u64,
    /// The recovered position must be at least this...
    lo: u64,
    /// ...and at most this.
    hi: u64,
    /// Bumped by a successful seek: older messages' acks are no-ops.
    epoch: u64,
    handle: Option<Consumer>,
    held: Vec<(Message, u64)>,
    /// Offsets this client gave back (dropped or nacked while in flight, in
    /// the current epoch) and has not been given again: the next messages
    /// it takes must be these first, smallest first. Checked only while no
    /// fault was injected (a failed call leaves the engine's set unknown).
    returned: BTreeSet<u64>,
    /// A seek failed since the position was last known: the position on
    /// disk may be that seek's target (even below what retention deleted
    /// meanwhile, on the strength of the in-memory position).
    seek_unknown: bool,
    /// The last open found the position below the first retained offset
    /// and that was accepted (see `seek_unknown`, size-bound retention): it
    /// stays so until the client seeks.
    below_first_accepted: bool,
}

fn prefix(floor: u64, set: &BTreeSet<u64>) -> u64 {
    let mut p = floor;
    for &o in set.range(floor..) {
        if o == p {
            p += 1;
        } else {
            break;
        }
    }
    p
}

impl ClientModel {
    fn new(name: &'static str) -> ClientModel {
        ClientModel {
            name,
            reg: Reg::None,
            base: 0,
            ok_floor: 0,
            ok: BTreeSet::new(),
            att_floor: 0,
            att: BTreeSet::new(),
            ok_prefix: 0,
            lo: 0,
            hi: 0,
            epoch: 0,
            handle: None,
            held: Vec::new(),
            returned: BTreeSet::new(),
            seek_unknown: false,
            below_first_accepted: false,
        }
    }

    /// The position is known exactly (registration, seek, recovery).
    fn set_position(&mut self, p: u64) {
        self.base = p;
        self.ok_floor = p;
        self.att_floor = p;
        self.ok.clear();
        self.att.clear();
        self.ok_prefix = p;
        self.lo = p;
        self.hi = p;
        self.epoch += 1;
        self.returned.clear();
        self.seek_unknown = false;
        self.below_first_accepted = false;
    }

    fn attempted(&mut self) {
        let p = prefix(self.att_floor.max(self.base), &self.att);
        self.hi = self.hi.max(p);
    }

    fn confirmed(&mut self) {
        let p = prefix(self.ok_floor.max(self.base), &self.ok);
        if p > self.ok_prefix {
            // The contiguous prefix of acknowledgements that returned Ok
            // grew: the engine promised it durable.
            self.ok_prefix = p;
            self.lo = self.lo.max(p);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reopen {
    /// After a power loss: everything on the disk is durable now.
    PowerLoss,
    /// After a process crash: the page cache survived.
    ProcessCrash,
    /// A reopen without any crash.
    Clean,
}

struct Runner<'s> {
    sc: &'s Scenario,
    disk: SimDisk,
    log: Option<Log>,
    ops: Vec<AppendOp>,
    small: HashMap<Vec<u8>, Vec<(u64, u32)>>,
    /// Offsets some reader saw, or that a successful open claimed (below
    /// its end), with a hash of their bytes: they must never vanish.
    seen: BTreeMap<u64, u64>,
    /// Lower bound of the first retained offset after a crash: deletions
    /// that `apply_retention` reported with `Ok` are durable.
    min_first: u64,
    /// Upper bound: no segment is gone that retention never tried to delete.
    max_first: u64,
    any_unknown_registration: bool,
    clients: Vec<ClientModel>,
    stats: ScenarioStats,
    trace: Option<Vec<String>>,
    round: usize,
    step_no: usize,
    /// A fault (EIO, ENOSPC) was injected since the last open: errors are
    /// expected, and a reopen without crash is not a clean one.
    faulted: bool,
    eio_injected: bool,
    /// The sync number at which the armed EIO fires, until it does.
    eio_target: Option<u64>,
    disk_full: bool,
    /// The log refused an append as poisoned: later appends must fail too.
    poisoned: bool,
    crash_armed: bool,
    /// The first offset when the log was last opened.
    first_at_open: u64,
}

/// Runs a scenario; with `trace`, also returns the list of steps and results.
pub fn run_scenario(sc: &Scenario, trace: bool) -> (Result<ScenarioStats, String>, Vec<String>) {
    let mut r = Runner {
        sc,
        disk: SimDisk::new(sc.disk_seed),
        log: None,
        ops: Vec::new(),
        small: HashMap::new(),
        seen: BTreeMap::new(),
        min_first: 0,
        max_first: 0,
        any_unknown_registration: false,
        clients: CLIENT_NAMES.iter().map(|n| ClientModel::new(n)).collect(),
        stats: ScenarioStats::default(),
        trace: trace.then(Vec::new),
        round: 0,
        step_no: 0,
        faulted: false,
        eio_injected: false,
        eio_target: None,
        disk_full: false,
        poisoned: false,
        crash_armed: false,
        first_at_open: 0,
    };
    let result = r.run();
    r.close();
    let trace = r.trace.take().unwrap_or_default();
    (result.map(|()| r.stats.clone()), trace)
}

fn describe_err(e: &Error) -> String {
    let s = e.to_string();
    if s.len() > 300 {
        let cut: String = s.chars().take(300).collect();
        format!("{cut}...")
    } else {
        s
    }
}

impl Runner<'_> {
    fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("[r{} s{}] {}", self.round, self.step_no, f()));
        }
    }

    fn violation<T>(&self, what: impl AsRef<str>) -> Result<T, String> {
        Err(format!(
            "invariant violated ({:?} scenario, round {}, step {}): {}",
            self.sc.family,
            self.round,
            self.step_no,
            what.as_ref()
        ))
    }

    fn options(&self) -> Options {
        let o = Options::new()
            .segment_size(self.sc.segment_size)
            .background_preallocation(false)
            .storage(Arc::new(self.disk.clone()));
        match self.sc.retention {
            RetentionKind::KeepAll => o,
            RetentionKind::AckedByAll => o.retention(Retention::acked_by_all()),
            RetentionKind::MaxBytes(n) => o.retention(Retention::max_bytes(n)),
        }
    }

    fn open(&self) -> durq::Result<Log> {
        self.options().open(DIR)
    }

    fn run(&mut self) -> Result<(), String> {
        let log = match self.open() {
            Ok(l) => l,
            Err(e) => return self.violation(format!("creating the log failed: {e}")),
        };
        self.log = Some(log);
        let sc = self.sc;
        for (i, round) in sc.rounds.iter().enumerate() {
            self.round = i;
            self.run_round(round)?;
        }
        Ok(())
    }

    fn run_round(&mut self, round: &Round) -> Result<(), String> {
        self.stats.rounds += 1;
        for (i, step) in round.steps.iter().enumerate() {
            self.step_no = i;
            if self.log.is_none() || self.disk.is_dead() {
                break;
            }
            self.stats.steps += 1;
            self.step(step)?;
            self.after_step()?;
            if self.disk.is_dead() {
                self.stats.crash_points_hit += 1;
                self.stats.crash_step = Some((self.round, i));
                self.note(|| "the disk died (crash point reached)".into());
                break;
            }
        }
        self.step_no = round.steps.len();
        self.end_round(round)
    }

    fn after_step(&mut self) -> Result<(), String> {
        if let Some(target) = self.eio_target
            && self.disk.sync_count() >= target
        {
            self.eio_target = None;
            self.stats.eio_fired += 1;
            self.note(|| "the armed EIO fired".into());
        }
        if let Some(log) = &self.log {
            let first = log.first_offset();
            self.max_first = self.max_first.max(first);
            if !self.faulted && !self.disk.is_dead() && first > self.first_at_open {
                // Nothing can have failed during this step (the disk fails
                // only when a fault is injected or it dies), so the segment
                // deletions made since the open were each followed by a
                // directory sync that returned: they must be durable.
                self.min_first = self.min_first.max(first);
            }
            if self.disk_full
                && !self.eio_injected
                && !self.disk.is_dead()
                && let Some(why) = log.poisoned()
            {
                return self.violation(format!(
                    "a full disk (ENOSPC) poisoned the log; it must fail cleanly: {why}"
                ));
            }
        }
        Ok(())
    }

    /// An operation failed: fine if the disk is dead or a fault was
    /// injected, a violation otherwise.
    fn op_failed(&mut self, what: &str, e: &Error) -> Result<(), String> {
        let msg = describe_err(e);
        self.note(|| format!("{what} -> Err({msg})"));
        if self.disk.is_dead() || self.faulted {
            return Ok(());
        }
        self.violation(format!(
            "{what} failed although no fault was injected and the disk is alive: {msg}"
        ))
    }

    fn new_op(&mut self, sizes: Vec<u32>) -> u64 {
        let op = self.ops.len() as u64;
        for (idx, &len) in sizes.iter().enumerate() {
            if (len as usize) < ID_LEN {
                self.small
                    .entry(payload(op, idx as u32, len as usize))
                    .or_default()
                    .push((op, idx as u32));
            }
        }
        self.ops.push(AppendOp {
            sizes,
            outcome: Outcome::Unknown,
        });
        op
    }

    fn log(&self) -> Result<Log, String> {
        match &self.log {
            Some(l) => Ok(l.clone()),
            None => self.violation("internal: no open log"),
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Append(size) => {
                let log = self.log()?;
                let len = size.resolve(log.max_record_size());
                self.append(&log, vec![len])
            }
            Step::Batch(sizes) => {
                let log = self.log()?;
                let max = log.max_record_size();
                let lens = sizes.iter().map(|s| s.resolve(max)).collect();
                self.append(&log, lens)
            }
            Step::BigBatch(n) => {
                let log = self.log()?;
                let lens = (0..*n).map(|i| ID_LEN + (i as usize * 7) % 16).collect();
                self.append(&log, lens)
            }
            Step::Oversized(raw) => {
                let log = self.log()?;
                let max = log.max_record_size();
                let len = max + 1 + (*raw % 64) as usize;
                let op = self.new_op(vec![len as u32]);
                self.ops[op as usize].outcome = Outcome::Refused;
                let r = log.append(payload(op, 0, len));
                self.note(|| format!("append oversized op {op} len {len} -> {r:?}"));
                match r {
                    Err(Error::RecordTooLarge { len: l, max: m }) if l == len && m == max => Ok(()),
                    other => self.violation(format!(
                        "an append of {len} bytes (limit {max}) must be refused with RecordTooLarge, got {other:?}"
                    )),
                }
            }
            Step::Next(c) => self.next(*c).map(|_| ()),
            Step::NextBatch(c, n) => self.next_batch(*c, *n),
            Step::Ack(c, pick) => self.ack(*c, *pick),
            Step::Nack(c, pick) | Step::DropMsg(c, pick) => {
                let cm = &mut self.clients[*c];
                if cm.held.is_empty() {
                    return Ok(());
                }
                let i = (*pick % cm.held.len() as u64) as usize;
                let (m, epoch) = cm.held.swap_remove(i);
                let off = m.offset();
                if matches!(step, Step::Nack(..)) {
                    m.nack();
                } else {
                    drop(m);
                }
                self.note(|| format!("give back {off} of client {c}"));
                self.gave_back(*c, off, epoch);
                Ok(())
            }
            Step::AckUntil(c, pick) => {
                let Some(h) = self.clients[*c].handle.clone() else {
                    return Ok(());
                };
                let log = self.log()?;
                let end = log.end();
                let acked = h.acked();
                let e = acked + pick % (end.saturating_sub(acked) + 2);
                self.ack_until(*c, &h, e, end)
            }
            Step::AckMany(c, n) => {
                for i in 0..*n {
                    if self.disk.is_dead() {
                        break;
                    }
                    let Some(h) = self.clients[*c].handle.clone() else {
                        return Ok(());
                    };
                    if i % 3 == 2 {
                        let end = self.log()?.end();
                        let target = h.acked() + 1;
                        self.ack_until(*c, &h, target, end)?;
                    } else if self.next(*c)? {
                        let last = self.clients[*c].held.len() as u64 - 1;
                        self.ack(*c, last)?;
                    } else {
                        break;
                    }
                }
                Ok(())
            }
            Step::Seek(c, pick) => self.seek(*c, *pick),
            Step::Read(pick) => self.read(*pick),
            Step::Iter(pick, n) => self.iter(*pick, *n),
            Step::Register(c) => self.register(*c),
            Step::ApplyRetention => {
                let log = self.log()?;
                let r = log.apply_retention();
                let first = log.first_offset();
                self.note(|| format!("apply_retention -> {r:?}; first {first}"));
                match r {
                    Ok(deleted) => {
                        if !deleted.is_empty() {
                            self.min_first = self.min_first.max(first);
                        }
                        Ok(())
                    }
                    Err(e) => self.op_failed("apply_retention", &e),
                }
            }
            Step::CleanReopen => {
                if self.disk.is_dead()
                    || self.crash_armed
                    || self.eio_target.is_some()
                    || (self.eio_injected && self.sc.family != Family::PageCache)
                    || self.disk_full
                {
                    return Ok(());
                }
                self.note(|| "clean reopen".into());
                self.close();
                self.recover(Reopen::Clean, None)
            }
            Step::Arm(arm) => {
                self.note(|| format!("arm {arm:?}"));
                match *arm {
                    Arm::CrashAfterSyncs(k) => {
                        self.disk.crash_after_syncs(k);
                        self.crash_armed = true;
                    }
                    Arm::CrashAfterOps(k) => {
                        self.disk.crash_after_ops(k);
                        self.crash_armed = true;
                    }
                    Arm::FailSyncAt(n) => {
                        let n = n.max(1);
                        self.disk.fail_sync_at(n);
                        self.eio_target = Some(self.disk.sync_count() + n);
                        self.faulted = true;
                        self.eio_injected = true;
                    }
                    Arm::DiskFull => {
                        self.disk.set_disk_full(true);
                        self.disk_full = true;
                        self.faulted = true;
                        self.stats.enospc_rounds += 1;
                    }
                    Arm::ClearDiskFull => {
                        self.disk.set_disk_full(false);
                        let was_full = self.disk_full;
                        self.disk_full = false;
                        if was_full
                            && !self.poisoned
                            && !self.eio_injected
                            && !self.disk.is_dead()
                            && !self.crash_armed
                        {
                            // Space is back: the log must append again.
                            let log = self.log()?;
                            if let Some(why) = log.poisoned() {
                                return self.violation(format!(
                                    "the log is poisoned after a disk-full episode: {why}"
                                ));
                            }
                            let op = self.new_op(vec![40]);
                            let r = log.append(payload(op, 0, 40));
                            self.note(|| format!("probe append op {op} after ENOSPC -> {r:?}"));
                            match r {
                                Ok(off) => {
                                    self.ops[op as usize].outcome = Outcome::Ok(off);
                                    self.stats.appends_ok += 1;
                                }
                                Err(e) => {
                                    return self.violation(format!(
                                        "after the disk had space again, an append failed: {e}"
                                    ));
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn append(&mut self, log: &Log, lens: Vec<usize>) -> Result<(), String> {
        let n = lens.len();
        let op = self.new_op(lens.iter().map(|&l| l as u32).collect());
        let payloads: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| payload(op, i as u32, l))
            .collect();
        let end0 = log.end();
        let was_poisoned = self.poisoned;
        let r = if n == 1 {
            log.append(&payloads[0]).map(|o| o..o + 1)
        } else {
            log.append_batch(&payloads)
        };
        self.note(|| format!("append op {op} lens {lens:?} at end {end0} -> {r:?}"));
        match r {
            Ok(range) => {
                if n > 0 && was_poisoned {
                    return self.violation(format!(
                        "a poisoned log accepted append op {op} at {range:?}"
                    ));
                }
                self.ops[op as usize].outcome = Outcome::Ok(range.start);
                self.stats.appends_ok += 1;
                if range.start != end0 || range.end - range.start != n as u64 {
                    return self.violation(format!(
                        "append op {op} of {n} records returned {range:?} but the end was {end0}"
                    ));
                }
                let end1 = log.end();
                if end1 != range.end {
                    return self.violation(format!(
                        "after append op {op} returned {range:?}, end() is {end1}"
                    ));
                }
                Ok(())
            }
            Err(e) => {
                self.stats.appends_failed += 1;
                if let Error::RecordTooLarge { .. } = e {
                    return self.violation(format!(
                        "append op {op} of sizes {lens:?} within the limit was refused: {e}"
                    ));
                }
                if was_poisoned {
                    // Refused up front: nothing may have been written.
                    self.ops[op as usize].outcome = Outcome::Refused;
                    if !matches!(e, Error::Poisoned { .. }) {
                        return self.violation(format!(
                            "a poisoned log failed append op {op} with another error: {e}"
                        ));
                    }
                    return Ok(());
                }
                self.op_failed(&format!("append op {op}"), &e)?;
                if self.disk.is_dead() {
                    return Ok(());
                }
                match e {
                    Error::AppendFailed { .. } => {
                        if let Some(why) = log.poisoned() {
                            return self.violation(format!(
                                "append op {op} failed 'cleanly' (AppendFailed) but the log is poisoned: {why}"
                            ));
                        }
                        Ok(())
                    }
                    Error::Poisoned { .. } => {
                        if log.poisoned().is_none() {
                            return self.violation(format!(
                                "append op {op} failed as poisoned but log.poisoned() is None"
                            ));
                        }
                        self.poisoned = true;
                        // No retry-and-pretend: the next append must fail too.
                        let probe = self.new_op(vec![16]);
                        self.ops[probe as usize].outcome = Outcome::Refused;
                        let r = log.append(payload(probe, 0, 16));
                        self.note(|| format!("probe append op {probe} on a poisoned log -> {r:?}"));
                        if !matches!(r, Err(Error::Poisoned { .. })) {
                            return self.violation(format!(
                                "after a failed write or fsync the log must refuse appends, got {r:?}"
                            ));
                        }
                        Ok(())
                    }
                    other => self.violation(format!(
                        "append op {op} failed with an unexpected kind of error: {other}"
                    )),
                }
            }
        }
    }

    /// Checks a record some reader saw (before any crash): it must be
    /// durable (below the end), belong to an attempted append, and stay the
    /// same bytes at that offset.
    fn observe(&mut self, end: u64, off: u64, bytes: &[u8]) -> Result<(), String> {
        if off >= end {
            return self.violation(format!(
                "a reader saw offset {off}, at or past the durable end {end}"
            ));
        }
        self.identify(off, bytes, None)?;
        let h = hash(bytes);
        if let Some(prev) = self.seen.insert(off, h)
            && prev != h
        {
            return self.violation(format!("offset {off} read back with different bytes"));
        }
        Ok(())
    }

    /// Checks where a record comes from: the op it names was attempted, its
    /// bytes are that op's payload, and an op that returned `Ok` put it at
    /// the offset it returned.
    fn identify(
        &self,
        off: u64,
        bytes: &[u8],
        placed: Option<&mut HashMap<(u64, u32), u64>>,
    ) -> Result<(), String> {
        if bytes.len() >= ID_LEN {
            let op = u64::from_le_bytes(bytes[0..8].try_into().unwrap_or([0; 8]));
            let idx = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or([0; 4]));
            let Some(info) = self.ops.get(op as usize) else {
                return self.violation(format!(
                    "record at offset {off} ({} bytes) names append op {op}, which was never attempted",
                    bytes.len()
                ));
            };
            let Some(&len) = info.sizes.get(idx as usize) else {
                return self.violation(format!(
                    "record at offset {off} names record {idx} of op {op}, which had {} records",
                    info.sizes.len()
                ));
            };
            if len as usize != bytes.len() || payload(op, idx, len as usize) != bytes {
                return self.violation(format!(
                    "record at offset {off} is not the payload of op {op} record {idx} ({} bytes, expected {len})",
                    bytes.len()
                ));
            }
            match info.outcome {
                Outcome::Ok(start) if start + u64::from(idx) != off => {
                    return self.violation(format!(
                        "op {op} record {idx} was acknowledged at offset {} but appears at {off}",
                        start + u64::from(idx)
                    ));
                }
                Outcome::Refused => {
                    return self.violation(format!(
                        "record of op {op}, which was refused before writing, appears at {off}"
                    ));
                }
                _ => {}
            }
            if let Some(p) = placed
                && let Some(prev) = p.insert((op, idx), off)
            {
                return self.violation(format!(
                    "record {idx} of op {op} appears twice, at offsets {prev} and {off}"
                ));
            }
            Ok(())
        } else {
            let ok = self.small.get(bytes).is_some_and(|cands| {
                cands.iter().any(
                    |&(op, idx)| match self.ops.get(op as usize).map(|o| o.outcome) {
                        Some(Outcome::Ok(start)) => start + u64::from(idx) == off,
                        Some(Outcome::Unknown) => true,
                        _ => false,
                    },
                )
            });
            if ok {
                Ok(())
            } else {
                self.violation(format!(
                    "record at offset {off} ({} bytes: {bytes:02x?}) matches no attempted append that could be there",
                    bytes.len()
                ))
            }
        }
    }

    /// `consumer.next()`; returns whether a message was taken.
    fn next(&mut self, c: usize) -> Result<bool, String> {
        let Some(h) = self.clients[c].handle.clone() else {
            return Ok(false);
        };
        let log = self.log()?;
        let r = h.next();
        match r {
            Ok(Some(m)) => {
                let off = m.offset();
                self.note(|| format!("next of client {c} -> {off}"));
                self.returned_first(c, &h, &[off])?;
                let end = log.end();
                self.took(c, end, m)?;
                Ok(true)
            }
            Ok(None) => {
                self.note(|| format!("next of client {c} -> None"));
                Ok(false)
            }
            Err(e) => self.take_failed(c, "next", e).map(|()| false),
        }
    }

    fn next_batch(&mut self, c: usize, n: u32) -> Result<(), String> {
        let Some(h) = self.clients[c].handle.clone() else {
            return Ok(());
        };
        let log = self.log()?;
        match h.next_batch(n as usize) {
            Ok(batch) => {
                let offsets: Vec<u64> = batch.iter().map(|m| m.offset()).collect();
                self.note(|| format!("next_batch({n}) of client {c} -> {offsets:?}"));
                if offsets.len() > n as usize || offsets.windows(2).any(|w| w[0] >= w[1]) {
                    return self.violation(format!(
                        "next_batch({n}) gave {offsets:?}: more than asked or out of order"
                    ));
                }
                self.returned_first(c, &h, &offsets)?;
                let end = log.end();
                for m in batch {
                    self.took(c, end, m)?;
                }
                Ok(())
            }
            Err(e) => self.take_failed(c, &format!("next_batch({n})"), e),
        }
    }

    /// Checks a message client `c` was given (the durable end read after
    /// it was taken is `end`) and keeps it in flight.
    fn took(&mut self, c: usize, end: u64, m: durq::Message) -> Result<(), String> {
        let off = m.offset();
        self.observe(end, off, m.payload())?;
        let (name, base) = (self.clients[c].name, self.clients[c].base);
        if off < base {
            return self.violation(format!(
                "client {name} was given offset {off}, below its position {base}"
            ));
        }
        let cm = &mut self.clients[c];
        let epoch = cm.epoch;
        cm.held.push((m, epoch));
        if cm.held.len() > 24 {
            let (m, epoch) = cm.held.swap_remove(0);
            let off = m.offset();
            drop(m);
            self.gave_back(c, off, epoch);
        }
        Ok(())
    }

    /// Client `c` dropped or nacked its message `off`, taken in `epoch`:
    /// the engine gives it back if it is still in flight (taken in the
    /// current epoch and not covered by an `ack_until`).
    fn gave_back(&mut self, c: usize, off: u64, epoch: u64) {
        let checking = !self.faulted && !self.disk.is_dead();
        let cm = &mut self.clients[c];
        let Some(h) = &cm.handle else {
            return;
        };
        if checking && epoch == cm.epoch && off >= h.acked() {
            cm.returned.insert(off);
        }
    }

    /// Messages given back come first, smallest offset first: `offsets`,
    /// just taken by client `c`, must begin with the ones it gave back.
    fn returned_first(&mut self, c: usize, h: &Consumer, offsets: &[u64]) -> Result<(), String> {
        if self.faulted || self.disk.is_dead() {
            self.clients[c].returned.clear();
            return Ok(());
        }
        let acked = h.acked();
        let cm = &mut self.clients[c];
        // An `ack_until` since covered those below the position.
        cm.returned = cm.returned.split_off(&acked);
        for &off in offsets {
            let Some(&r) = cm.returned.first() else {
                break;
            };
            if off != r {
                let (name, returned) = (cm.name, cm.returned.clone());
                return self.violation(format!(
                    "client {name} was given {off} while it had given back {returned:?}, which come first"
                ));
            }
            cm.returned.remove(&r);
        }
        Ok(())
    }

    /// A `next` or `next_batch` of client `c` that returned `e`.
    fn take_failed(&mut self, c: usize, what: &str, e: Error) -> Result<(), String> {
        if let Error::Truncated { offset, first } = e {
            self.note(|| format!("{what} of client {c} -> Truncated({offset}, {first})"));
            if offset >= first {
                return self.violation(format!(
                    "{what} reported offset {offset} truncated but the first retained offset is {first}"
                ));
            }
            return Ok(());
        }
        self.op_failed(&format!("{what} of client {c}"), &e)
    }

    fn ack(&mut self, c: usize, pick: u64) -> Result<(), String> {
        let cm = &mut self.clients[c];
        if cm.held.is_empty() {
            return Ok(());
        }
        let i = (pick % cm.held.len() as u64) as usize;
        let (m, epoch) = cm.held.swap_remove(i);
        let off = m.offset();
        let current = epoch == cm.epoch;
        if current {
            cm.att.insert(off);
            cm.attempted();
        }
        let r = m.ack();
        self.note(|| format!("ack {off} of client {c} (current epoch: {current}) -> {r:?}"));
        match r {
            Ok(()) => {
                self.stats.acks_ok += 1;
                if current {
                    let cm = &mut self.clients[c];
                    cm.ok.insert(off);
                    cm.confirmed();
                }
                Ok(())
            }
            Err(e) => self.op_failed(&format!("ack {off} of client {c}"), &e),
        }
    }

    fn ack_until(&mut self, c: usize, h: &Consumer, e: u64, end: u64) -> Result<(), String> {
        let clamped = e.min(end);
        {
            let cm = &mut self.clients[c];
            cm.att_floor = cm.att_floor.max(clamped);
            cm.attempted();
        }
        let r = h.ack_until(e);
        self.note(|| format!("ack_until({e}) of client {c} (end {end}) -> {r:?}"));
        match r {
            Ok(()) => {
                self.stats.acks_ok += 1;
                let cm = &mut self.clients[c];
                cm.ok_floor = cm.ok_floor.max(clamped);
                cm.confirmed();
                Ok(())
            }
            Err(e) => self.op_failed(&format!("ack_until of client {c}"), &e),
        }
    }

    fn seek(&mut self, c: usize, pick: u64) -> Result<(), String> {
        let Some(h) = self.clients[c].handle.clone() else {
            return Ok(());
        };
        let log = self.log()?;
        let (first, end) = (log.first_offset(), log.end());
        let p = first + pick % (end - first + 2);
        let target = p.clamp(first, end);
        let r = h.seek(p);
        self.note(|| format!("seek({p}) of client {c} [{first}, {end}] -> {r:?}"));
        match r {
            Ok(()) => {
                let got = h.acked();
                let cm = &mut self.clients[c];
                cm.set_position(target);
                if got != target {
                    return self.violation(format!(
                        "after seek({p}) in [{first}, {end}], acked() is {got}, expected {target}"
                    ));
                }
                Ok(())
            }
            Err(e) => {
                // Unknown outcome: the new position may or may not be on disk.
                let cm = &mut self.clients[c];
                cm.hi = cm.hi.max(target);
                cm.lo = cm.lo.min(target);
                cm.seek_unknown = true;
                self.op_failed(&format!("seek of client {c}"), &e)
            }
        }
    }

    fn read(&mut self, pick: u64) -> Result<(), String> {
        let log = self.log()?;
        let (first, end) = (log.first_offset(), log.end());
        if end > first {
            let off = first + pick % (end - first);
            match log.read(off) {
                Ok(Some(rec)) => {
                    self.note(|| format!("read {off} -> {} bytes", rec.len()));
                    self.observe(end, off, &rec)?;
                }
                Ok(None) => {
                    return self.violation(format!(
                        "read({off}) returned None inside the retained range [{first}, {end})"
                    ));
                }
                Err(e) => return self.op_failed(&format!("read {off}"), &e),
            }
        }
        match log.read(end) {
            Ok(None) => Ok(()),
            Ok(Some(_)) => self.violation(format!("read({end}) at the end returned a record")),
            Err(e) => self.op_failed(&format!("read {end} (the end)"), &e),
        }
    }

    fn iter(&mut self, pick: u64, n: u32) -> Result<(), String> {
        let log = self.log()?;
        let (first, end) = (log.first_offset(), log.end());
        let from = first + pick % (end - first + 1);
        let mut expect = from;
        for item in log.iter(from).take(n as usize) {
            match item {
                Ok((off, rec)) => {
                    if off != expect {
                        return self.violation(format!(
                            "iter({from}) yielded offset {off}, expected {expect}"
                        ));
                    }
                    expect += 1;
                    self.observe(end, off, &rec)?;
                }
                Err(e) => return self.op_failed(&format!("iter from {from}"), &e),
            }
        }
        self.note(|| format!("iter({from}) read {} records", expect - from));
        Ok(())
    }

    fn register(&mut self, c: usize) -> Result<(), String> {
        if self.clients[c].reg == Reg::Ok && self.clients[c].handle.is_some() {
            return Ok(());
        }
        let log = self.log()?;
        let first = log.first_offset();
        let name = self.clients[c].name;
        let r = log.consumer(name);
        match r {
            Ok(h) => {
                let start = h.acked();
                self.note(|| format!("register {name} -> Ok at {start}"));
                let cm = &mut self.clients[c];
                let was_unknown = cm.reg == Reg::Unknown;
                cm.reg = Reg::Ok;
                cm.set_position(start);
                cm.handle = Some(h);
                if start != first && !was_unknown {
                    return self.violation(format!(
                        "new client {name} starts at {start}, not at the first retained offset {first}"
                    ));
                }
                Ok(())
            }
            Err(e) => {
                let cm = &mut self.clients[c];
                if cm.reg == Reg::None {
                    cm.reg = Reg::Unknown;
                }
                self.any_unknown_registration = true;
                self.op_failed(&format!("register {name}"), &e)
            }
        }
    }

    /// Drops every handle and the log.
    fn close(&mut self) {
        for c in &mut self.clients {
            c.held.clear();
            c.returned.clear();
            c.handle = None;
        }
        self.log = None;
    }

    fn end_round(&mut self, round: &Round) -> Result<(), String> {
        if let Some(log) = &self.log {
            self.max_first = self.max_first.max(log.first_offset());
        }
        self.disk.set_disk_full(false);
        self.disk_full = false;
        self.close();
        let kind = match round.end {
            End::PowerLoss(mode) => {
                self.note(|| format!("power loss ({mode:?})"));
                self.disk.power_loss_with(mode);
                self.stats.power_losses += 1;
                Reopen::PowerLoss
            }
            End::ProcessCrash => {
                self.note(|| "process crash".into());
                self.disk.process_crash();
                self.stats.process_crashes += 1;
                Reopen::ProcessCrash
            }
            End::Reopen => {
                if self.disk.is_dead() {
                    self.note(|| "process crash (the disk had died)".into());
                    self.disk.process_crash();
                    self.stats.process_crashes += 1;
                    Reopen::ProcessCrash
                } else {
                    self.note(|| "reopen without a crash".into());
                    self.disk.clear_faults();
                    Reopen::Clean
                }
            }
        };
        self.recover(kind, round.recovery_crash)
    }

    /// Opens the log after a crash (or without one), checks everything,
    /// reopens once more to check that recovery is idempotent, and rebases
    /// the model on what the log now shows.
    fn recover(&mut self, kind: Reopen, recovery_crash: Option<u64>) -> Result<(), String> {
        self.crash_armed = false;
        if let Some(k) = recovery_crash {
            self.disk.crash_after_ops(k);
        }
        let mut crashed_in_recovery = false;
        let log = match self.open() {
            Ok(l) => {
                self.disk.clear_faults();
                l
            }
            Err(e) => {
                if recovery_crash.is_none() || !self.disk.is_dead() {
                    return self.violation(format!("opening the log after the crash failed: {e}"));
                }
                self.stats.recovery_crashes += 1;
                crashed_in_recovery = true;
                let e = describe_err(&e);
                match kind {
                    Reopen::ProcessCrash | Reopen::Clean => {
                        self.note(|| format!("crash during recovery ({e}); process crash"));
                        self.disk.process_crash();
                        self.stats.process_crashes += 1;
                    }
                    Reopen::PowerLoss => {
                        self.note(|| format!("crash during recovery ({e}); power loss"));
                        self.disk.power_loss();
                        self.stats.power_losses += 1;
                    }
                }
                match self.open() {
                    Ok(l) => l,
                    Err(e) => {
                        return self.violation(format!(
                            "opening the log after a crash during recovery failed: {e}"
                        ));
                    }
                }
            }
        };
        let kind = if crashed_in_recovery && kind == Reopen::Clean {
            Reopen::ProcessCrash
        } else {
            kind
        };
        let report = log.recovery_report().clone();
        self.note(|| format!("recovered: {}", summarize(&report)));
        if report.torn_tail.is_some() {
            self.stats.torn_tails += 1;
        }
        let records = self.check_recovered(&log, &report, kind)?;
        drop(log);
        // Idempotence: a second open finds nothing to repair.
        let log = match self.open() {
            Ok(l) => l,
            Err(e) => return self.violation(format!("the second open after recovery failed: {e}")),
        };
        let second = log.recovery_report().clone();
        self.check_second_report(&report, &second)?;
        self.rebase(&log, &records, kind)?;
        self.log = Some(log);
        self.faulted = false;
        self.eio_injected = false;
        self.eio_target = None;
        self.poisoned = false;
        self.disk_full = false;
        Ok(())
    }

    fn check_recovered(
        &mut self,
        log: &Log,
        rep: &RecoveryReport,
        kind: Reopen,
    ) -> Result<Vec<Vec<u8>>, String> {
        let (first, end) = (log.first_offset(), log.end());
        if rep.end_offset != end || rep.first_offset != first {
            return self.violation(format!(
                "the recovery report says offsets {}..{} but the log has {first}..{end}",
                rep.first_offset, rep.end_offset
            ));
        }
        let repaired = rep.torn_tail.is_some()
            || !rep.removed_temp_files.is_empty()
            || rep.cursors.iter().any(|c| {
                !c.action.contains("older than the first retained offset")
                    && !c.action.contains("ack journal missing")
            });
        if kind == Reopen::Clean && !self.faulted && repaired {
            return self.violation(format!(
                "a reopen without any crash or fault had to repair something: {}",
                summarize(rep)
            ));
        }
        if !rep.unknown_files.is_empty() {
            return self.violation(format!(
                "recovery found files durq does not know: {:?}",
                rep.unknown_files
            ));
        }
        if self.sc.retention == RetentionKind::KeepAll && first != 0 {
            return self.violation(format!(
                "no retention is configured but the first offset is {first}: segments were lost"
            ));
        }
        if first < self.min_first {
            return self.violation(format!(
                "segments deleted by an apply_retention that returned Ok came back: first offset {first} < {}",
                self.min_first
            ));
        }
        if first > self.max_first {
            return self.violation(format!(
                "the first offset is {first} but retention never deleted beyond {}: segments were lost",
                self.max_first
            ));
        }
        // Every record below the end reads back, densely.
        let mut records = Vec::with_capacity((end - first) as usize);
        for item in log.iter(first) {
            match item {
                Ok((off, rec)) => {
                    let want = first + records.len() as u64;
                    if off != want {
                        return self
                            .violation(format!("iter yielded offset {off}, expected {want}"));
                    }
                    records.push(rec.to_vec());
                }
                Err(e) => {
                    let at = first + records.len() as u64;
                    return self.violation(format!(
                        "reading the recovered log failed at offset {at} (end {end}): {e}"
                    ));
                }
            }
        }
        if first + records.len() as u64 != end {
            return self.violation(format!(
                "the recovered log holds offsets {first}..{} but its end is {end}",
                first + records.len() as u64
            ));
        }
        match log.read(end) {
            Ok(None) => {}
            other => {
                return self.violation(format!("read(end = {end}) returned {other:?}"));
            }
        }
        if end > first {
            let off = first + (end - first) / 2;
            match log.read(off) {
                Ok(Some(r)) if *r == records[(off - first) as usize][..] => {}
                other => {
                    return self.violation(format!("read({off}) disagrees with iter: {other:?}"));
                }
            }
        }
        self.stats.records_checked += records.len() as u64;
        // Nothing appears that was never appended; each record once.
        let mut placed = HashMap::new();
        for (i, bytes) in records.iter().enumerate() {
            self.identify(first + i as u64, bytes, Some(&mut placed))?;
        }
        // Every append that returned Ok is there, byte for byte.
        for (op, info) in self.ops.iter().enumerate() {
            let Outcome::Ok(start) = info.outcome else {
                continue;
            };
            for (idx, &len) in info.sizes.iter().enumerate() {
                let off = start + idx as u64;
                if off < first {
                    continue; // deleted by retention
                }
                if off >= end {
                    return self.violation(format!(
                        "append op {op} record {idx} returned Ok at offset {off}, but the recovered log ends at {end}: an acknowledged record was lost"
                    ));
                }
                let got = &records[(off - first) as usize];
                if got[..] != payload(op as u64, idx as u32, len as usize)[..] {
                    return self.violation(format!(
                        "append op {op} record {idx} at offset {off} reads back different bytes"
                    ));
                }
            }
        }
        // No reader saw a record that is now gone.
        for (&off, &h) in &self.seen {
            if off < first {
                continue; // deleted by retention (checked above)
            }
            if off >= end {
                return self.violation(format!(
                    "offset {off} was seen by a reader (or shown by an earlier open) but the recovered log ends at {end}"
                ));
            }
            if hash(&records[(off - first) as usize]) != h {
                return self.violation(format!(
                    "offset {off} holds different bytes than a reader saw before the crash"
                ));
            }
        }
        // The report matches what was cut.
        let segments = match log.segments() {
            Ok(s) => s,
            Err(e) => return self.violation(format!("listing the segments failed: {e}")),
        };
        let Some(last) = segments.last() else {
            return self.violation("the recovered log has no segment");
        };
        if let Some(t) = &rep.torn_tail
            && (t.offset != end || t.bytes_zeroed == 0 || t.segment != last.path)
        {
            return self.violation(format!(
                "torn tail report {t:?} does not match the log (end {end}, last segment {})",
                last.path.display()
            ));
        }
        self.check_tail_zero(&last.path, last.first_offset, last.end_offset)?;
        self.check_clients(log, rep, first, end)?;
        Ok(records)
    }

    /// After a successful open, the bytes after the last record of the last
    /// segment are zero (a torn tail was zeroed, nothing else is there).
    fn check_tail_zero(&self, path: &Path, base: u64, end: u64) -> Result<(), String> {
        let Some(bytes) = self.disk.file_bytes(path) else {
            return self.violation(format!("segment {} not on the disk", path.display()));
        };
        let mut pos = durq::record::SEGMENT_HEADER_LEN;
        for off in base..end {
            let h = bytes
                .get(pos..)
                .map(|b| durq::record::parse_header(b, bytes.len() - pos));
            match h {
                Some(Ok(h)) if h.offset == off => pos += h.encoded_len(),
                other => {
                    return self.violation(format!(
                        "walking {}: no record {off} at byte {pos}: {other:?}",
                        path.display()
                    ));
                }
            }
        }
        if let Some(i) = bytes
            .get(pos..)
            .and_then(|b| b.iter().position(|&x| x != 0))
        {
            return self.violation(format!(
                "{}: byte {} after the end of the log (byte {pos}) is not zero after recovery",
                path.display(),
                pos + i
            ));
        }
        Ok(())
    }

    fn check_clients(
        &self,
        log: &Log,
        rep: &RecoveryReport,
        first: u64,
        end: u64,
    ) -> Result<(), String> {
        let infos = match log.consumers() {
            Ok(i) => i,
            Err(e) => return self.violation(format!("listing clients failed: {e}")),
        };
        let by_name: BTreeMap<&str, u64> =
            infos.iter().map(|i| (i.name.as_str(), i.acked)).collect();
        for r in &rep.cursors {
            let model = self.clients.iter().find(|c| c.name == r.client);
            if model.is_some_and(|c| c.reg == Reg::Unknown) {
                continue; // a registration that failed: any leftover state is fine
            }
            if r.action.contains("older than the first retained offset")
                && (matches!(self.sc.retention, RetentionKind::MaxBytes(_))
                    || self.any_unknown_registration
                    || model.is_some_and(|c| c.seek_unknown || c.below_first_accepted))
            {
                // Size-bound retention deleted what it had not acked; or a
                // registration failed (retention did not know the client
                // whose files survived); or a seek backwards failed (unknown
                // outcome) while retention went by the position before it.
                continue;
            }
            if r.action.contains("ack journal missing") {
                // Left by a registration that failed (an Unknown client
                // earlier); recovery only recreates the journal at the
                // client's next ack, so every open reports it until then.
                // The position itself comes from the snapshot and is
                // checked below.
                continue;
            }
            return self.violation(format!(
                "unexpected cursor repair for client {:?} ({}): {}",
                r.client,
                r.file.display(),
                r.action
            ));
        }
        for name in by_name.keys() {
            if !self
                .clients
                .iter()
                .any(|c| c.name == *name && c.reg != Reg::None)
            {
                return self.violation(format!("client {name:?} exists but was never registered"));
            }
        }
        for c in &self.clients {
            let got = by_name.get(c.name).copied();
            match (c.reg, got) {
                (Reg::Ok, None) => {
                    return self.violation(format!(
                        "client {:?} was registered but is missing or unreadable after the crash",
                        c.name
                    ));
                }
                (Reg::Ok, Some(acked)) => {
                    if acked < c.lo {
                        return self.violation(format!(
                            "client {:?}: recovered position {acked} is below {}, the contiguous prefix of acknowledgements that returned Ok: acknowledgements were lost",
                            c.name, c.lo
                        ));
                    }
                    if acked > c.hi {
                        return self.violation(format!(
                            "client {:?}: recovered position {acked} is past {}, the first offset never acknowledged: a message would be skipped",
                            c.name, c.hi
                        ));
                    }
                    if acked > end {
                        return self.violation(format!(
                            "client {:?}: position {acked} is past the end {end}",
                            c.name
                        ));
                    }
                    if self.sc.retention == RetentionKind::AckedByAll
                        && !self.any_unknown_registration
                        && !c.seek_unknown
                        && !c.below_first_accepted
                        && acked < first
                    {
                        return self.violation(format!(
                            "client {:?} at {acked} never acknowledged offsets that retention deleted (first offset {first})",
                            c.name
                        ));
                    }
                }
                (Reg::Unknown, Some(acked)) if acked > end => {
                    return self.violation(format!(
                        "client {:?}: position {acked} is past the end {end}",
                        c.name
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_second_report(
        &self,
        first: &RecoveryReport,
        second: &RecoveryReport,
    ) -> Result<(), String> {
        let informational = |r: &durq::CursorRepair| {
            r.action.contains("older than the first retained offset")
                || r.action.contains("ack journal missing")
                || self
                    .clients
                    .iter()
                    .any(|c| c.name == r.client && c.reg == Reg::Unknown)
        };
        let repairs: Vec<_> = second
            .cursors
            .iter()
            .filter(|r| !informational(r))
            .collect();
        if second.torn_tail.is_some()
            || !second.removed_temp_files.is_empty()
            || !repairs.is_empty()
            || second.end_offset != first.end_offset
            || second.first_offset != first.first_offset
            || second.segments != first.segments
        {
            return self.violation(format!(
                "recovery is not idempotent: the first open reported {}, the second {}",
                summarize(first),
                summarize(second)
            ));
        }
        Ok(())
    }

    /// Makes what the reopened log shows the new baseline: its records and
    /// client positions count as shown to users (they must be durable).
    fn rebase(&mut self, log: &Log, records: &[Vec<u8>], kind: Reopen) -> Result<(), String> {
        let first = log.first_offset();
        for (i, r) in records.iter().enumerate() {
            self.seen.insert(first + i as u64, hash(r));
        }
        if kind == Reopen::PowerLoss {
            // Everything on the medium is durable now.
            self.min_first = self.min_first.max(first);
        }
        self.max_first = self.max_first.max(first);
        self.first_at_open = first;
        let infos = match log.consumers() {
            Ok(i) => i,
            Err(e) => return self.violation(format!("listing clients failed: {e}")),
        };
        for c in 0..self.clients.len() {
            let name = self.clients[c].name;
            match infos.iter().find(|i| i.name == name) {
                Some(info) => {
                    let h = match log.consumer(name) {
                        Ok(h) => h,
                        Err(e) => {
                            return self.violation(format!(
                                "client {name:?} is listed but cannot be opened: {e}"
                            ));
                        }
                    };
                    let cm = &mut self.clients[c];
                    cm.reg = Reg::Ok;
                    cm.set_position(info.acked);
                    cm.below_first_accepted = info.acked < first;
                    cm.handle = Some(h);
                }
                None => {
                    let cm = &mut self.clients[c];
                    cm.reg = Reg::None;
                    cm.handle = None;
                }
            }
        }
        Ok(())
    }
}

/// A one-line summary of a recovery report.
pub fn summarize(r: &RecoveryReport) -> String {
    let mut s = format!(
        "segments {}, offsets {}..{}",
        r.segments, r.first_offset, r.end_offset
    );
    if let Some(t) = &r.torn_tail {
        let _ = write!(
            s,
            ", torn tail at offset {} (byte {}, {} bytes zeroed, {} records discarded: {})",
            t.offset, t.position, t.bytes_zeroed, t.records_discarded, t.reason
        );
    }
    if !r.removed_temp_files.is_empty() {
        let _ = write!(s, ", removed {} temp files", r.removed_temp_files.len());
    }
    for c in &r.cursors {
        let _ = write!(s, ", cursor {:?}: {}", c.client, c.action);
    }
    s
}
