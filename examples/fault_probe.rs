//! A probe for fault injection on the real file system: drives a durq log
//! and prints one line per outcome, so a script running it under
//! `fiu-run` (libfiu, Debian's `fiu-utils`) can inject `EIO` into
//! `fsync`/`fdatasync` and `ENOSPC` into `pwrite` and check, with `grep`,
//! that durq poisons or fails cleanly and recovers after a reopen.
//! `scripts/ci-fiu.sh` is that script; `docs/testing.md` explains it.
//!
//! ```text
//! fault_probe append DIR N [--segment-size B]   append N records, stop at the first error
//! fault_probe check DIR [--expect FILE]...      reopen, verify every record, append one
//! fault_probe consumer DIR NAME                 register a client, then append one record
//! fault_probe interactive DIR [--segment-size B]
//!     reads commands from stdin, one per line, and answers each with its
//!     outcome lines and a final `done`:
//!       append N | consumer NAME | ack NAME N | poisoned | quit
//! ```
//!
//! Record `o` always holds [`payload_for`]`(o)`, so `check` can verify every
//! record without being told what was written. Output lines:
//!
//! * `ok OFFSET` — an append returned `Ok`; the record must survive.
//! * `err KIND: message` — a call failed (`KIND` is the `durq::Error`
//!   variant; for I/O errors with the OS error code, e.g. `Io(os error 28)`).
//! * `after-error ok OFFSET` / `after-error err KIND: message` — appends tried
//!   after the first error of an `append` command (a poisoned log refuses
//!   them all).
//! * `poisoned yes: REASON` / `poisoned no`.
//! * `acked NAME OFFSET position P` — an ack returned `Ok`; the client's
//!   durable position is `P` and must not go back.
//! * `check passed: ...` / `check FAILED: ...` (exit status 1).
//!
//! Exit status: 0 when the probe ran (whatever the outcomes), 1 when `check`
//! fails, 2 on bad usage or when the log does not open.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Bytes of every record's payload.
const PAYLOAD_LEN: usize = 100;

/// Appends tried after the first error of an `append` command.
const AFTER_ERROR_TRIES: usize = 3;

/// The payload of the record at `offset`: its offset in text, then bytes
/// derived from it.
fn payload_for(offset: u64) -> Vec<u8> {
    let mut p = format!("fault-probe record {offset:020} ").into_bytes();
    let mut x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while p.len() < PAYLOAD_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(b'a' + (x % 26) as u8);
    }
    p
}

/// The error's kind for the output: the `durq::Error` variant, with the OS
/// error code for I/O errors.
fn kind(e: &durq::Error) -> String {
    match e {
        durq::Error::Io { source, .. } => match source.raw_os_error() {
            Some(code) => format!("Io(os error {code})"),
            None => format!("Io({:?})", source.kind()),
        },
        other => {
            let dbg = format!("{other:?}");
            dbg.split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("Error")
                .to_owned()
        }
    }
}

fn err_line(prefix: &str, e: &durq::Error) -> String {
    format!("{prefix}err {}: {e}", kind(e))
}

fn open(dir: &Path, segment_size: Option<u64>) -> durq::Result<durq::Log> {
    let mut opts = durq::Options::new();
    if let Some(s) = segment_size {
        opts = opts.segment_size(s);
    }
    opts.open(dir)
}

fn poisoned_line(log: &durq::Log) -> String {
    match log.poisoned() {
        Some(reason) => format!("poisoned yes: {reason}"),
        None => "poisoned no".to_owned(),
    }
}

/// Appends up to `n` records, stopping at the first error; then tries a few
/// more appends and reports whether the log is poisoned.
fn append_n(log: &durq::Log, n: u64, out: &mut impl Write) -> std::io::Result<bool> {
    let mut sane = true;
    let mut failed = false;
    for _ in 0..n {
        let expected = log.end();
        match log.append(payload_for(expected)) {
            Ok(off) => {
                writeln!(out, "ok {off}")?;
                if off != expected {
                    writeln!(out, "BUG: append returned {off}, expected {expected}")?;
                    sane = false;
                }
            }
            Err(e) => {
                writeln!(out, "{}", err_line("", &e))?;
                failed = true;
                break;
            }
        }
    }
    if failed {
        for _ in 0..AFTER_ERROR_TRIES {
            let expected = log.end();
            match log.append(payload_for(expected)) {
                Ok(off) => writeln!(out, "after-error ok {off}")?,
                Err(e) => writeln!(out, "{}", err_line("after-error ", &e))?,
            }
        }
    }
    writeln!(out, "{}", poisoned_line(log))?;
    Ok(sane)
}

fn cmd_append(dir: &Path, n: u64, segment_size: Option<u64>) -> ExitCode {
    let log = match open(dir, segment_size) {
        Ok(l) => l,
        Err(e) => {
            println!("{}", err_line("open ", &e));
            return ExitCode::from(2);
        }
    };
    println!("open ok end {}", log.end());
    let mut out = std::io::stdout().lock();
    match append_n(&log, n, &mut out) {
        Ok(true) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn cmd_consumer(dir: &Path, name: &str) -> ExitCode {
    let log = match open(dir, None) {
        Ok(l) => l,
        Err(e) => {
            println!("{}", err_line("open ", &e));
            return ExitCode::from(2);
        }
    };
    match log.consumer(name) {
        Ok(c) => println!("consumer ok {} acked {}", c.name(), c.acked()),
        Err(e) => println!("{}", err_line("consumer ", &e)),
    }
    let mut out = std::io::stdout().lock();
    let _ = append_n(&log, 1, &mut out);
    ExitCode::SUCCESS
}

/// Parses `ok OFFSET` and `acked NAME OFFSET position P` lines of earlier
/// probe runs.
fn read_expectations(files: &[PathBuf]) -> std::io::Result<(Vec<u64>, BTreeMap<String, u64>)> {
    let mut oks = Vec::new();
    let mut positions: BTreeMap<String, u64> = BTreeMap::new();
    for f in files {
        for line in std::fs::read_to_string(f)?.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["ok", off] => oks.extend(off.parse::<u64>().ok()),
                ["acked", name, _off, "position", p] => {
                    if let Ok(p) = p.parse::<u64>() {
                        let e = positions.entry((*name).to_owned()).or_default();
                        *e = (*e).max(p);
                    }
                }
                _ => {}
            }
        }
    }
    Ok((oks, positions))
}

fn cmd_check(dir: &Path, expect: &[PathBuf]) -> ExitCode {
    let (oks, positions) = match read_expectations(expect) {
        Ok(x) => x,
        Err(e) => {
            println!("check FAILED: reading expectations: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match open(dir, None) {
        Ok(l) => l,
        Err(e) => {
            println!("{}", err_line("open ", &e));
            println!("check FAILED: the log does not open");
            return ExitCode::from(1);
        }
    };
    let (first, end) = (log.first_offset(), log.end());
    let report = log.recovery_report();
    println!(
        "end {end} first {first} segments {}",
        log.segments().expect("segments").len()
    );
    println!(
        "recovery: clean {} torn_tail {} removed_temp_files {} unknown_files {} cursor_repairs {}",
        report.is_clean(),
        report
            .torn_tail
            .as_ref()
            .map_or("none".to_owned(), |t| format!(
                "{}@{} ({} bytes zeroed)",
                t.segment.display(),
                t.position,
                t.bytes_zeroed
            )),
        report.removed_temp_files.len(),
        report.unknown_files.len(),
        report.cursors.len()
    );
    for r in &report.cursors {
        println!("recovery cursor {}: {}", r.client, r.action);
    }
    let mut problems = 0u64;
    let mut intact = 0u64;
    let mut expected = first;
    for item in log.iter(first) {
        match item {
            Ok((off, rec)) => {
                if off != expected {
                    println!("bad {expected}: iteration jumped to {off}");
                    problems += 1;
                }
                if rec[..] != payload_for(off)[..] {
                    println!("bad {off}: payload differs from what was appended");
                    problems += 1;
                } else {
                    intact += 1;
                }
                expected = off + 1;
            }
            Err(e) => {
                println!("{}", err_line(&format!("bad {expected}: "), &e));
                problems += 1;
                break;
            }
        }
    }
    if expected != end {
        println!("bad: iteration stopped at {expected}, the end is {end}");
        problems += 1;
    }
    for off in &oks {
        if *off >= end || *off < first {
            println!("missing {off}: reported ok before the fault, not in the log");
            problems += 1;
        }
    }
    match log.consumers() {
        Ok(list) => {
            for c in &list {
                println!("client {} acked {}", c.name, c.acked);
                if let Some(p) = positions.get(&c.name)
                    && c.acked < *p
                {
                    println!(
                        "lost ack: client {} was durably at {p}, now at {}",
                        c.name, c.acked
                    );
                    problems += 1;
                }
            }
            for name in positions.keys() {
                if !list.iter().any(|c| &c.name == name) {
                    println!("lost client {name}");
                    problems += 1;
                }
            }
        }
        Err(e) => {
            println!("{}", err_line("consumers ", &e));
            problems += 1;
        }
    }
    // The log accepts appends again.
    match log.append(payload_for(end)) {
        Ok(off)
            if off == end
                && log.read(off).ok().flatten().as_deref() == Some(&payload_for(end)[..]) =>
        {
            println!("append-after-reopen ok {off}");
        }
        Ok(off) => {
            println!("append-after-reopen bad {off}: not readable as written");
            problems += 1;
        }
        Err(e) => {
            println!("{}", err_line("append-after-reopen ", &e));
            problems += 1;
        }
    }
    if problems == 0 {
        println!(
            "check passed: {intact} records intact, {} reported-ok records present",
            oks.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("check FAILED: {problems} problems");
        ExitCode::from(1)
    }
}

fn cmd_interactive(dir: &Path, segment_size: Option<u64>) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "pid {}", std::process::id());
    let log = match open(dir, segment_size) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(out, "{}", err_line("open ", &e));
            return ExitCode::from(2);
        }
    };
    let _ = writeln!(out, "open ok end {}", log.end());
    let _ = writeln!(out, "done");
    let mut consumers: BTreeMap<String, durq::Consumer> = BTreeMap::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let r = match words.as_slice() {
            ["append", n] => append_n(&log, n.parse().unwrap_or(0), &mut out).map(|_| ()),
            ["consumer", name] => match log.consumer(name) {
                Ok(c) => {
                    let r = writeln!(out, "consumer ok {} acked {}", c.name(), c.acked());
                    consumers.insert((*name).to_owned(), c);
                    r
                }
                Err(e) => writeln!(out, "{}", err_line("consumer ", &e)),
            },
            ["ack", name, n] => {
                let c = match consumers.get(*name) {
                    Some(c) => Ok(c.clone()),
                    None => log.consumer(name),
                };
                match c {
                    Ok(c) => ack_n(&c, n.parse().unwrap_or(0), &mut out),
                    Err(e) => writeln!(out, "{}", err_line("consumer ", &e)),
                }
            }
            ["poisoned"] => writeln!(out, "{}", poisoned_line(&log)),
            ["quit"] => break,
            _ => writeln!(out, "unknown command: {line}"),
        };
        if r.and_then(|()| writeln!(out, "done")).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Takes and acknowledges up to `n` messages, stopping at the first error.
fn ack_n(c: &durq::Consumer, n: u64, out: &mut impl Write) -> std::io::Result<()> {
    for _ in 0..n {
        match c.next() {
            Ok(Some(m)) => {
                let off = m.offset();
                if m.payload() != &payload_for(off)[..] {
                    writeln!(out, "BUG: message {off} is not what was appended")?;
                }
                match m.ack() {
                    Ok(()) => writeln!(out, "acked {} {off} position {}", c.name(), c.acked())?,
                    Err(e) => {
                        writeln!(out, "{}", err_line("", &e))?;
                        break;
                    }
                }
            }
            Ok(None) => {
                writeln!(out, "no message")?;
                break;
            }
            Err(e) => {
                writeln!(out, "{}", err_line("", &e))?;
                break;
            }
        }
    }
    Ok(())
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: fault_probe append DIR N [--segment-size B]\n       \
         fault_probe check DIR [--expect FILE]...\n       \
         fault_probe consumer DIR NAME\n       \
         fault_probe interactive DIR [--segment-size B]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut segment_size = None;
    let mut expect = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--segment-size" => match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => segment_size = Some(v),
                None => return usage(),
            },
            "--expect" => match it.next() {
                Some(f) => expect.push(PathBuf::from(f)),
                None => return usage(),
            },
            _ => positional.push(a.as_str()),
        }
    }
    match positional.as_slice() {
        ["append", dir, n] => match n.parse() {
            Ok(n) => cmd_append(Path::new(dir), n, segment_size),
            Err(_) => usage(),
        },
        ["check", dir] => cmd_check(Path::new(dir), &expect),
        ["consumer", dir, name] => cmd_consumer(Path::new(dir), name),
        ["interactive", dir] => cmd_interactive(Path::new(dir), segment_size),
        _ => usage(),
    }
}
