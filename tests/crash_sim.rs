//! Seeded crash simulation: thousands of scenarios on the simulated
//! power-loss disk, each checked against what every call returned (see
//! `docs/testing.md` and `tests/support/crash_runner.rs`).
//!
//! * `cargo test --release --test crash_sim` runs the default sweep (over
//!   10,000 scenarios, split by family over a few tests that run in
//!   parallel) and the targeted tests.
//! * `DURQ_CRASH_SCENARIOS=N` runs N scenarios in all instead (a soak);
//!   `DURQ_CRASH_START=K` starts each family's seeds further on.
//! * `DURQ_CRASH_SEED=S` replays exactly seed `S` (decimal or `0x` hex),
//!   printing every step; every other test then does nothing.

#[path = "support/simdisk.rs"]
mod simdisk;

#[path = "support/crash_runner.rs"]
mod crash_runner;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crash_runner::{
    Arm, End, Family, Round, Scenario, ScenarioStats, Size, Step, family_of, residues_of,
    run_scenario,
};
use simdisk::LossMode;

/// Scenarios per family in the default run (23,500 in all).
fn default_count(family: Family) -> u64 {
    match family {
        Family::SyncPoints => 8000,
        Family::BetweenOps => 7000,
        Family::Faults => 5000,
        Family::PageCache => 3000,
        Family::JournalFold => 500,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    match parsed {
        Ok(n) => Some(n),
        Err(e) => panic!("{name}={v:?} is not a number: {e}"),
    }
}

fn replaying() -> bool {
    std::env::var_os("DURQ_CRASH_SEED").is_some()
}

fn replay_command(seed: u64) -> String {
    format!("DURQ_CRASH_SEED={seed} cargo test --release --test crash_sim -- --nocapture")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_owned()
    }
}

/// Runs `family`'s share of scenarios; fails listing the failing seeds.
fn sweep(family: Family) {
    if replaying() {
        return;
    }
    let residues = residues_of(family);
    let count = match env_u64("DURQ_CRASH_SCENARIOS") {
        Some(total) => total * residues.len() as u64 / 20,
        None => default_count(family),
    };
    let start = env_u64("DURQ_CRASH_START").unwrap_or(0);
    let began = Instant::now();
    let mut stats = ScenarioStats::default();
    let mut failures: Vec<(u64, String)> = Vec::new();
    let mut failed = 0u64;
    let mut ran = 0u64;
    for i in 0..count {
        let r = residues[(i % residues.len() as u64) as usize];
        let seed = (start + i / residues.len() as u64) * 20 + r;
        debug_assert_eq!(family_of(seed), family);
        ran += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| crash_runner::run_seed(seed)));
        let msg = match outcome {
            Ok(Ok(s)) => {
                stats.add(&s);
                continue;
            }
            Ok(Err(msg)) => msg,
            Err(p) => format!("panicked: {}", panic_message(&*p)),
        };
        failed += 1;
        if failures.len() < 8 {
            failures.push((seed, msg));
        }
        if failed >= 50 {
            break; // enough to go on; do not burn the whole run
        }
    }
    println!(
        "{family:?}: {ran} scenarios in {:.1?}: {} rounds, {} steps, {} appends ok ({} failed), \
         {} acks ok, {} crash points hit, {} power losses, {} process crashes, {} crashes during \
         recovery, {} torn tails cut, {} EIO, {} ENOSPC rounds, {} records checked",
        began.elapsed(),
        stats.rounds,
        stats.steps,
        stats.appends_ok,
        stats.appends_failed,
        stats.acks_ok,
        stats.crash_points_hit,
        stats.power_losses,
        stats.process_crashes,
        stats.recovery_crashes,
        stats.torn_tails,
        stats.eio_fired,
        stats.enospc_rounds,
        stats.records_checked,
    );
    if !failures.is_empty() {
        let mut text = format!(
            "{failed} of {ran} {family:?} crash scenarios violated an invariant.\n\
             Replay the first one with:\n    {}\n",
            replay_command(failures[0].0)
        );
        for (seed, msg) in &failures {
            text.push_str(&format!(
                "\nseed {seed}: {msg}\n    {}\n",
                replay_command(*seed)
            ));
        }
        panic!("{text}");
    }
}

#[test]
fn sim_power_loss_at_sync_points() {
    sweep(Family::SyncPoints);
}

#[test]
fn sim_power_loss_between_operations() {
    sweep(Family::BetweenOps);
}

#[test]
fn sim_eio_and_enospc_then_power_loss() {
    sweep(Family::Faults);
}

#[test]
fn sim_process_crash_or_eio_reopen_then_power_loss() {
    sweep(Family::PageCache);
}

#[test]
fn sim_power_loss_around_cursor_journal_folds() {
    sweep(Family::JournalFold);
}

/// `DURQ_CRASH_SEED=S`: replays one seed, printing the scenario and every
/// step with its result.
#[test]
fn replay_seed() {
    let Some(seed) = env_u64("DURQ_CRASH_SEED") else {
        return;
    };
    let sc = crash_runner::scenario_for_seed(seed);
    println!(
        "seed {seed}: {:?} scenario, disk seed {}, segment size {}, retention {:?}, {} rounds",
        sc.family,
        sc.disk_seed,
        sc.segment_size,
        sc.retention,
        sc.rounds.len()
    );
    let (result, trace) = crash_runner::trace_seed(seed);
    for line in &trace {
        println!("  {line}");
    }
    match result {
        Ok(stats) => println!("seed {seed} holds every invariant: {stats:?}"),
        Err(msg) => panic!("seed {seed}: {msg}"),
    }
}

// ---------------------------------------------------------------------------
// Targeted deterministic tests: every crash point of one delicate operation.
// ---------------------------------------------------------------------------

/// The losses tried at every crash point: several random ones (different
/// disk seeds), the unlucky one (only synced state survives) and the lucky
/// one (everything pending survives).
const LOSSES: [(LossMode, u64); 6] = [
    (LossMode::Random, 1),
    (LossMode::Random, 2),
    (LossMode::Random, 3),
    (LossMode::Random, 4),
    (LossMode::DropAll, 5),
    (LossMode::KeepAll, 6),
];

/// Runs `make(arm, loss, disk_seed)` with the disk crashing at every sync
/// and at every mutating operation from the `Arm` step to the end of its
/// round, each with every loss in [`LOSSES`]. Returns how many sync points
/// and operations there are, and how many recoveries cut a torn tail.
fn every_crash_point(what: &str, make: impl Fn(Arm, LossMode, u64) -> Scenario) -> (u64, u64, u64) {
    if replaying() {
        return (0, 0, 0);
    }
    // The step after the `Arm` step of the (last) round that has one.
    let probe = make(Arm::CrashAfterOps(0), LossMode::Random, 0);
    let target = probe
        .rounds
        .iter()
        .enumerate()
        .rev()
        .find_map(|(r, round)| {
            let i = round.steps.iter().position(|s| matches!(s, Step::Arm(_)))?;
            Some((r, i + 1))
        })
        .expect("the scenario arms a crash point");
    let mut counts = (0, 0);
    let mut torn = 0;
    for syncs in [true, false] {
        for k in 0..10_000u64 {
            let arm = if syncs {
                Arm::CrashAfterSyncs(k)
            } else {
                Arm::CrashAfterOps(k)
            };
            let mut hit = false;
            for (loss, disk_seed) in LOSSES {
                let sc = make(arm, loss, disk_seed);
                let (result, _) = run_scenario(&sc, false);
                match result {
                    Ok(stats) => {
                        hit |= matches!(stats.crash_step, Some((r, i)) if r == target.0 && i >= target.1);
                        torn += stats.torn_tails;
                    }
                    Err(msg) => {
                        let (_, trace) = run_scenario(&sc, true);
                        panic!(
                            "{what}: crash point {arm:?}, {loss:?} loss, disk seed {disk_seed}: {msg}\n\
                             scenario: {sc:?}\ntrace:\n  {}",
                            trace.join("\n  ")
                        );
                    }
                }
            }
            if !hit {
                break; // past the last crash point of the step
            }
            if syncs {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    println!(
        "{what}: {} sync points and {} operations, each with {} losses; {torn} torn tails cut",
        counts.0,
        counts.1,
        LOSSES.len()
    );
    (counts.0, counts.1, torn)
}

fn one_round(
    segment_size: u64,
    retention: crash_runner::RetentionKind,
    steps: Vec<Step>,
    loss: LossMode,
    disk_seed: u64,
) -> Scenario {
    Scenario {
        family: Family::SyncPoints,
        disk_seed,
        segment_size,
        retention,
        rounds: vec![Round {
            steps,
            end: End::PowerLoss(loss),
            recovery_crash: None,
        }],
    }
}

#[test]
fn crash_at_every_point_of_a_rollover() {
    // 4 KiB segments: three 1,000-byte records (1,024 bytes each) leave
    // 960 bytes, so the 2,000-byte record rolls over to a new segment.
    let (syncs, ops, _) = every_crash_point("rollover", |arm, loss, seed| {
        one_round(
            4096,
            crash_runner::RetentionKind::KeepAll,
            vec![
                Step::Register(0),
                Step::Append(Size::Exact(1000)),
                Step::Append(Size::Exact(1000)),
                Step::Append(Size::Exact(1000)),
                Step::Next(0),
                Step::Ack(0, 0),
                Step::Read(1),
                Step::Arm(arm),
                Step::Append(Size::Exact(2000)),
                Step::Append(Size::Exact(20)),
                Step::Next(0),
            ],
            loss,
            seed,
        )
    });
    // Spare: create, zero-fill, fsync; header write and fdatasync; rename;
    // directory fsync; record write and fdatasync (and the end hint).
    assert!(syncs >= 4, "a rollover has at least 4 syncs, saw {syncs}");
    assert!(ops >= 9, "a rollover has at least 9 operations, saw {ops}");
}

#[test]
fn crash_at_every_point_of_a_rollover_inside_a_batch() {
    let (syncs, _, _) = every_crash_point("batch spanning two rollovers", |arm, loss, seed| {
        one_round(
            4096,
            crash_runner::RetentionKind::KeepAll,
            vec![
                Step::Register(0),
                Step::Append(Size::Exact(3000)),
                Step::Arm(arm),
                Step::Batch(vec![Size::Exact(1500); 6]),
                Step::AckUntil(0, 3),
            ],
            loss,
            seed,
        )
    });
    assert!(
        syncs >= 8,
        "two rollovers and three writes, saw {syncs} syncs"
    );
}

#[test]
fn crash_at_every_point_of_the_first_appends_to_a_new_log() {
    // The log was just created: its first segment's name must be durable
    // before the first append returns.
    let (syncs, _, _) = every_crash_point("first appends", |arm, loss, seed| {
        one_round(
            8192,
            crash_runner::RetentionKind::KeepAll,
            vec![
                Step::Append(Size::Exact(100)),
                Step::Arm(arm),
                Step::Append(Size::Exact(100)),
                Step::Register(0),
                Step::Append(Size::Exact(100)),
            ],
            loss,
            seed,
        )
    });
    assert!(syncs >= 1, "saw {syncs} sync points");
}

#[test]
fn crash_at_every_point_after_a_torn_tail_was_cut() {
    // Round 0 dies in the middle of a large batch, leaving a torn tail that
    // round 1's recovery cuts (zeroes and syncs); round 1 then crashes at
    // every point of the next appends, which land on the zeroed bytes.
    let mut torn = 0;
    for disk_seed in 1..=40u64 {
        torn += every_crash_point("appends after a torn tail", |arm, loss, seed| Scenario {
            family: Family::SyncPoints,
            disk_seed: disk_seed * 100 + seed,
            segment_size: 8192,
            retention: crash_runner::RetentionKind::KeepAll,
            rounds: vec![
                Round {
                    steps: vec![
                        Step::Register(0),
                        Step::Append(Size::Exact(500)),
                        Step::Arm(Arm::CrashAfterSyncs(0)),
                        Step::Batch(vec![Size::Exact(700); 8]),
                    ],
                    end: End::PowerLoss(LossMode::Random),
                    recovery_crash: None,
                },
                Round {
                    steps: vec![
                        Step::Arm(arm),
                        Step::Append(Size::Exact(1500)),
                        Step::Append(Size::Exact(1500)),
                        Step::Next(0),
                    ],
                    end: End::PowerLoss(loss),
                    recovery_crash: None,
                },
            ],
        })
        .2;
    }
    assert!(torn > 400, "only {torn} recoveries cut a torn tail");
}

#[test]
fn crash_at_every_point_of_retention_deleting_acked_segments() {
    // Three 1,000-byte records per 4 KiB segment: 12 records fill four
    // segments. Client 0 acks everything first; when client 1 does, the
    // acknowledgement deletes the four sealed segments one by one.
    let (_, ops, _) = every_crash_point("retention by acknowledgement", |arm, loss, seed| {
        let mut steps = vec![Step::Register(0), Step::Register(1)];
        steps.extend((0..13).map(|_| Step::Append(Size::Exact(1000))));
        steps.push(Step::AckUntil(0, 13));
        steps.push(Step::Arm(arm));
        steps.push(Step::AckUntil(1, 13));
        steps.push(Step::Append(Size::Exact(100)));
        one_round(
            4096,
            crash_runner::RetentionKind::AckedByAll,
            steps,
            loss,
            seed,
        )
    });
    // Journal write + sync, then per segment: unlink + directory sync.
    assert!(ops >= 10, "saw {ops} operations");
}

/// Appends `n` records of 1,000 bytes in batches of 12: three fit in a
/// 4 KiB segment, so 192 records fill the 64 segments of group 0.
fn fill(steps: &mut Vec<Step>, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(12) {
        steps.push(Step::Batch(vec![Size::Exact(1000); chunk.len()]));
    }
}

#[test]
fn crash_at_every_point_of_a_rollover_that_starts_a_new_group() {
    // 192 records fill segments 0 to 63 (group 0); the next append rolls
    // over into segment 64, the first of group 1: make the group's
    // directory, move the spare into it, sync the group and the log
    // directory.
    let (syncs, ops, _) = every_crash_point("rollover into a new group", |arm, loss, seed| {
        let mut steps = vec![Step::Register(0)];
        fill(&mut steps, 192);
        steps.push(Step::AckUntil(0, 100));
        steps.push(Step::Arm(arm));
        steps.push(Step::Append(Size::Exact(1000)));
        steps.push(Step::Append(Size::Exact(1000)));
        steps.push(Step::Next(0));
        one_round(
            4096,
            crash_runner::RetentionKind::KeepAll,
            steps,
            loss,
            seed,
        )
    });
    assert!(
        syncs >= 4 && ops >= 8,
        "rollover into a new group, saw {syncs} syncs, {ops} operations"
    );
}

#[test]
fn crash_at_every_point_of_retention_emptying_a_group() {
    // 198 records fill segments 0 to 65 (group 0 and two of group 1).
    // Client 1's acknowledgement up to 186 deletes segments 0 to 61; then,
    // armed, the one up to 196 deletes 62 and 63 (emptying group 0, whose
    // directory is removed) and 64.
    let (_, ops, _) = every_crash_point("retention emptying a group", |arm, loss, seed| {
        let mut steps = vec![Step::Register(0), Step::Register(1)];
        fill(&mut steps, 198);
        steps.push(Step::AckUntil(0, 198));
        steps.push(Step::AckUntil(1, 186));
        steps.push(Step::Arm(arm));
        // `AckUntil` picks its target relative to the acknowledged position:
        // 186 + 10 % (198 - 186 + 2) = 196.
        steps.push(Step::AckUntil(1, 10));
        steps.push(Step::Append(Size::Exact(100)));
        steps.push(Step::Next(1));
        one_round(
            4096,
            crash_runner::RetentionKind::AckedByAll,
            steps,
            loss,
            seed,
        )
    });
    // Journal write + sync, three unlinks + group syncs, rmdir + sync.
    assert!(ops >= 10, "saw {ops} operations");
}

#[test]
fn crash_at_every_point_of_retention_by_size() {
    // A bound of two segments: the append that creates the third one
    // deletes the oldest.
    let (_, ops, _) = every_crash_point("retention by size", |arm, loss, seed| {
        let mut steps = vec![Step::Register(0)];
        steps.extend((0..6).map(|_| Step::Append(Size::Exact(1000))));
        steps.push(Step::Arm(arm));
        steps.push(Step::Append(Size::Exact(1000)));
        steps.push(Step::Next(0));
        one_round(
            4096,
            crash_runner::RetentionKind::MaxBytes(2 * 4096),
            steps,
            loss,
            seed,
        )
    });
    assert!(ops >= 11, "rollover and deletion, saw {ops} operations");
}

#[test]
fn crash_at_every_point_of_a_cursor_journal_fold() {
    // Registration writes generation 0 with an empty journal of 2,048
    // entries; 2,048 in-order acks fill it; the next one folds the position
    // into a snapshot of generation 1 (temp file, fsync, rename, directory
    // fsync) and reuses the journal.
    let (syncs, ops, _) = every_crash_point("journal fold", |arm, loss, seed| {
        one_round(
            8192,
            crash_runner::RetentionKind::KeepAll,
            vec![
                Step::Register(0),
                Step::BigBatch(2100),
                Step::AckMany(0, 2048),
                Step::Arm(arm),
                Step::AckMany(0, 3),
            ],
            loss,
            seed,
        )
    });
    assert!(
        syncs >= 4 && ops >= 10,
        "saw {syncs} syncs, {ops} operations"
    );
}

#[test]
fn crash_at_every_point_of_a_seek() {
    // A seek writes a new snapshot generation: temp file, fsync, rename,
    // directory fsync.
    let (_, ops, _) = every_crash_point("seek", |arm, loss, seed| {
        one_round(
            4096,
            crash_runner::RetentionKind::KeepAll,
            vec![
                Step::Register(0),
                Step::Batch(vec![Size::Exact(100); 10]),
                Step::AckUntil(0, 6),
                Step::Next(0),
                Step::Next(0),
                Step::Ack(0, 0),
                Step::Arm(arm),
                Step::Seek(0, 2),
                Step::Next(0),
                Step::Ack(0, 0),
            ],
            loss,
            seed,
        )
    });
    assert!(ops >= 6, "saw {ops} operations");
}

/// The default run's seeds are spread over every family.
#[test]
fn seeds_cover_every_family() {
    for f in Family::ALL {
        assert!(!residues_of(f).is_empty(), "{f:?}");
    }
    let total: u64 = Family::ALL.iter().map(|&f| default_count(f)).sum();
    assert!(total >= 10_000, "default run is {total} scenarios");
}

// ---------------------------------------------------------------------------
// Engine bugs this suite found. Each test is the smallest scenario that shows
// one (see docs/testing.md, "Findings"): a regression test once the bug is
// fixed (all are, in 4e96c6f and 5667456), a failing test until then. The
// sweep seeds quoted reproduce the bug with its fix reverted (mutations
// M11-M15 of docs/testing.md).
// ---------------------------------------------------------------------------

fn must_hold(what: &str, sc: Scenario) {
    if replaying() {
        return;
    }
    let (result, trace) = run_scenario(&sc, true);
    if let Err(msg) = result {
        panic!("{what}: {msg}\ntrace:\n  {}", trace.join("\n  "));
    }
}

fn rounds(family: Family, segment_size: u64, rounds: Vec<(Vec<Step>, End)>) -> Scenario {
    Scenario {
        family,
        disk_seed: 7,
        segment_size,
        retention: crash_runner::RetentionKind::KeepAll,
        rounds: rounds
            .into_iter()
            .map(|(steps, end)| Round {
                steps,
                end,
                recovery_crash: None,
            })
            .collect(),
    }
}

/// `Consumer::ack_until` returns `Ok` without writing anything when its
/// target is not past the in-memory position, even when that position was
/// never made durable: after an ack whose journal `fdatasync` failed (EIO),
/// `ack_until` over the same offset says `Ok`, and a power loss takes it
/// back. (Seed 613 of `sim_eio_and_enospc_then_power_loss`.)
#[test]
fn bug_ack_until_returns_ok_for_an_ack_that_was_never_persisted() {
    must_hold(
        "ack_until after a failed ack",
        rounds(
            Family::Faults,
            4096,
            vec![(
                vec![
                    Step::Register(0),
                    Step::Batch(vec![Size::Exact(100); 5]),
                    Step::Next(0),
                    Step::Next(0),
                    // The next sync is the journal fdatasync of this ack.
                    Step::Arm(Arm::FailSyncAt(1)),
                    Step::Ack(0, 0),
                    // In memory the position is 1 already: Ok, nothing written.
                    Step::AckUntil(0, 0),
                ],
                End::PowerLoss(LossMode::DropAll),
            )],
        ),
    );
}

/// A `seek` whose snapshot was renamed into place but whose directory sync
/// failed returns an error and leaves the client usable with its old
/// generation; later acks go to the journal under the old generation and
/// return `Ok`, but once the rename reaches the disk the new snapshot wins
/// and those journal entries are ignored: acknowledged messages come back.
/// (Seed 5093 of `sim_eio_and_enospc_then_power_loss`.)
#[test]
fn bug_failed_seek_leaves_a_snapshot_that_hides_later_acks() {
    must_hold(
        "acks after a failed seek",
        rounds(
            Family::Faults,
            4096,
            vec![(
                vec![
                    Step::Register(0),
                    Step::Batch(vec![Size::Exact(100); 5]),
                    Step::Next(0),
                    Step::Ack(0, 0),
                    // A seek makes a snapshot: temp file fsync (1), rename,
                    // directory fsync (2): that one fails.
                    Step::Arm(Arm::FailSyncAt(2)),
                    Step::Seek(0, 0),
                    Step::Next(0),
                    Step::Ack(0, 0),
                ],
                // The lucky loss: the pending rename reaches the medium.
                End::PowerLoss(LossMode::KeepAll),
            )],
        ),
    );
}

/// After a process crash (SIGKILL: the page cache survives), `open` trusts
/// what the page cache shows and syncs none of it: a record whose append
/// never returned is shown below `end()` and read by consumers, then a power
/// loss takes it away. (Seed 497 of
/// `sim_process_crash_or_eio_reopen_then_power_loss`.)
#[test]
fn bug_records_shown_after_a_process_crash_vanish_at_power_loss() {
    must_hold(
        "record read after a process crash",
        rounds(
            Family::PageCache,
            4096,
            vec![
                (
                    vec![
                        Step::Register(0),
                        Step::Append(Size::Exact(100)),
                        Step::Arm(Arm::CrashAfterSyncs(0)),
                        // Written, then the process dies at its fdatasync.
                        Step::Append(Size::Exact(100)),
                    ],
                    End::ProcessCrash,
                ),
                (
                    vec![Step::Next(0), Step::Next(0), Step::Ack(0, 1)],
                    End::PowerLoss(LossMode::DropAll),
                ),
            ],
        ),
    );
}

/// The worst case of the same bug: the process dies between the rename of a
/// new segment and the directory fsync; the reopened log appends into that
/// segment (its records are `fdatasync`ed, the append returns `Ok`), but the
/// segment's name was never made durable: a power loss loses acknowledged
/// appends.
#[test]
fn bug_appends_acknowledged_after_a_process_crash_during_rollover_are_lost() {
    must_hold(
        "append after a process crash during rollover",
        rounds(
            Family::PageCache,
            4096,
            vec![
                (
                    vec![
                        Step::Register(0),
                        Step::Append(Size::Exact(3000)),
                        // The rollover's syncs: spare fsync (0), header
                        // fdatasync (1), directory fsync (2): die there.
                        Step::Arm(Arm::CrashAfterSyncs(2)),
                        Step::Append(Size::Exact(3000)),
                    ],
                    End::ProcessCrash,
                ),
                (
                    vec![Step::Append(Size::Exact(100))],
                    End::PowerLoss(LossMode::DropAll),
                ),
            ],
        ),
    );
}

/// After an `fdatasync` fails with EIO the log is poisoned, as it should be;
/// but reopening it (without a reboot) reads the page cache, where the
/// failed write is still visible although it can never become durable (the
/// kernel marked those pages clean). `open` accepts the record, later
/// appends go after it, and a power loss leaves a hole in the middle of the
/// log: the reopen after it fails, or acknowledged records become unreadable.
/// (Seed 277 of `sim_process_crash_or_eio_reopen_then_power_loss`.)
#[test]
fn bug_reopen_after_a_failed_fdatasync_trusts_the_page_cache() {
    must_hold(
        "reopen after EIO",
        rounds(
            Family::PageCache,
            4096,
            vec![
                (
                    vec![
                        Step::Register(0),
                        Step::Append(Size::Exact(100)),
                        Step::Arm(Arm::FailSyncAt(1)),
                        Step::Append(Size::Exact(100)),
                    ],
                    End::Reopen,
                ),
                (
                    vec![
                        Step::Append(Size::Exact(100)),
                        Step::Append(Size::Exact(100)),
                    ],
                    End::PowerLoss(LossMode::KeepAll),
                ),
            ],
        ),
    );
}

/// After a process crash, `open` makes the segment data and the log
/// directory durable (fixed for the data), but not the clients' cursor
/// state it read from the page cache: an ack whose journal entry was written
/// but never `fdatasync`ed (the process died in the sync) shows as the
/// client's position after the reopen, and a power loss takes it back.
/// (Seed 1898 of `sim_process_crash_or_eio_reopen_then_power_loss`.)
#[test]
fn bug_cursor_position_shown_after_a_process_crash_is_not_durable() {
    must_hold(
        "cursor position after a process crash",
        rounds(
            Family::PageCache,
            4096,
            vec![
                (
                    vec![
                        Step::Register(0),
                        Step::Batch(vec![Size::Exact(100); 5]),
                        Step::Next(0),
                        // The journal entry is written; the process dies in
                        // its fdatasync.
                        Step::Arm(Arm::CrashAfterSyncs(0)),
                        Step::Ack(0, 0),
                    ],
                    End::ProcessCrash,
                ),
                // The reopened log says the client is at 1.
                (vec![], End::PowerLoss(LossMode::DropAll)),
            ],
        ),
    );
}

/// The severe form of the same bug: the process dies between the rename of
/// a seek's snapshot and the directory fsync; the reopened log reads the new
/// generation from the page cache; acks after the reopen go to the journal
/// under that generation and return `Ok`; a power loss loses the rename, and
/// with it every one of those acks. Likewise a client whose registration was
/// interrupted is listed after the reopen and vanishes at the power loss.
#[test]
fn bug_acks_after_a_process_crash_during_a_seek_are_lost() {
    must_hold(
        "acks after a process crash during a seek",
        rounds(
            Family::PageCache,
            4096,
            vec![
                (
                    vec![
                        Step::Register(0),
                        Step::Batch(vec![Size::Exact(100); 10]),
                        Step::Next(0),
                        Step::Ack(0, 0),
                        // A seek's syncs: temp file (0), directory (1).
                        Step::Arm(Arm::CrashAfterSyncs(1)),
                        Step::Seek(0, 5),
                    ],
                    End::ProcessCrash,
                ),
                (
                    vec![
                        Step::Next(0),
                        Step::Ack(0, 0),
                        Step::Next(0),
                        Step::Ack(0, 0),
                    ],
                    End::PowerLoss(LossMode::DropAll),
                ),
            ],
        ),
    );
}

/// The fuzzer's entry point takes any bytes: it never panics, and on
/// arbitrary input it finds no violation in a correct engine.
#[test]
fn run_from_bytes_accepts_any_input() {
    if replaying() {
        return;
    }
    let mut inputs: Vec<Vec<u8>> = vec![Vec::new(), vec![0], vec![0xFF; 64], vec![0; 4096]];
    let mut state = 0x0BAD_5EEDu64;
    for i in 0..300u64 {
        let len = (i * 37) % 700;
        let mut v = Vec::with_capacity(len as usize);
        for _ in 0..len {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.push((state >> 56) as u8);
        }
        inputs.push(v);
    }
    for (i, data) in inputs.iter().enumerate() {
        if let Err(msg) = crash_runner::run_from_bytes(data) {
            panic!("input {i} ({} bytes, {data:02x?}): {msg}", data.len());
        }
    }
}
