//! `durq bench [DIR]`: this disk's raw `fdatasync` rate and durq's
//! throughput, measured side by side in one run (in the spirit of
//! PostgreSQL's `pg_test_fsync`).
//!
//! The measurements are interleaved in rounds (raw, durq 1 thread, durq 16
//! threads, consume-and-ack, scan; raw again; ...) so that drift on a shared,
//! noisy machine affects every workload alike, and each row reports the
//! median over the rounds. Every durq rate is also given as a ratio to the
//! raw rate of the same round (the median of the per-round ratios).
//!
//! The workload functions are public so that the criterion benches in
//! `benches/` reuse them (they include this file as a module).

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Payload size of the small-record workloads, in bytes.
pub const RECORD_BYTES: usize = 100;
/// What a 100-byte payload occupies on disk in a durq segment (24-byte
/// header, padded to 8 bytes): the raw baseline writes records of this size.
pub const RAW_RECORD_BYTES: usize = 128;
/// Size of the preallocated raw-baseline file (the default segment size).
pub const RAW_FILE_BYTES: u64 = 64 << 20;

/// A preallocated, zero-filled, synced file, written in place with
/// `pwrite` + `fdatasync`: the disk's limit for durable appends.
pub struct RawFile {
    file: File,
    path: PathBuf,
    size: u64,
    pos: u64,
}

impl RawFile {
    /// Creates `path` with `size` zero bytes written and synced.
    pub fn create(path: &Path, size: u64) -> io::Result<RawFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let zeros = vec![0u8; 1 << 20];
        let mut pos = 0;
        while pos < size {
            let n = zeros.len().min((size - pos) as usize);
            file.write_all_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        file.sync_all()?;
        Ok(RawFile {
            file,
            path: path.to_owned(),
            size,
            pos: 0,
        })
    }

    /// Creates `path` empty, for writes that only ever go to its end, into
    /// newly allocated blocks (each `fdatasync` then also commits the new
    /// size): the disk's rate for durable writes of *new* data, which bounds
    /// any log that grows without reusing space.
    #[allow(dead_code)] // used by the benches, which share this module
    pub fn create_growing(path: &Path) -> io::Result<RawFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(RawFile {
            file,
            path: path.to_owned(),
            size: u64::MAX,
            pos: 0,
        })
    }

    /// Writes `buf` at the next position (wrapping at the end of the file)
    /// and `fdatasync`s it.
    pub fn write_sync(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.pos + buf.len() as u64 > self.size {
            self.pos = 0;
        }
        self.file.write_all_at(buf, self.pos)?;
        self.file.sync_data()?;
        self.pos += buf.len() as u64;
        Ok(())
    }
}

impl Drop for RawFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Operations counted during `elapsed`, with optional per-operation latencies.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Operations (records, messages) completed.
    pub ops: u64,
    /// Time they took.
    pub elapsed: Duration,
    /// Per-operation latencies in nanoseconds, if recorded.
    pub latencies_ns: Vec<u64>,
}

impl Sample {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, if any were recorded.
    pub fn latency_quantile(&mut self, q: f64) -> Option<Duration> {
        if self.latencies_ns.is_empty() {
            return None;
        }
        self.latencies_ns.sort_unstable();
        let i = ((self.latencies_ns.len() - 1) as f64 * q).round() as usize;
        Some(Duration::from_nanos(self.latencies_ns[i]))
    }
}

/// `pwrite` + `fdatasync` of `record_len` bytes, repeated for `slot`.
pub fn raw_sync_for(raw: &mut RawFile, record_len: usize, slot: Duration) -> io::Result<Sample> {
    let rec = vec![0x5au8; record_len];
    let start = Instant::now();
    let mut ops = 0;
    loop {
        raw.write_sync(&rec)?;
        ops += 1;
        let elapsed = start.elapsed();
        if elapsed >= slot {
            return Ok(Sample {
                ops,
                elapsed,
                latencies_ns: Vec::new(),
            });
        }
    }
}

/// `threads` producers calling `log.append` with `payload_len`-byte records
/// for `slot`; records each append's latency if `latencies` is set.
pub fn durq_append_for(
    log: &durq::Log,
    threads: usize,
    payload_len: usize,
    slot: Duration,
    latencies: bool,
) -> durq::Result<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            let stop = stop.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || -> durq::Result<(u64, Vec<u64>)> {
                let payload = vec![t as u8; payload_len];
                let mut lat = Vec::new();
                let mut n = 0u64;
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    log.append(&payload)?;
                    if latencies {
                        lat.push(t0.elapsed().as_nanos() as u64);
                    }
                    n += 1;
                }
                Ok((n, lat))
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(slot);
    stop.store(true, Ordering::Relaxed);
    let mut sample = Sample::default();
    let mut first_err = None;
    for h in handles {
        match h.join().expect("producer thread panicked") {
            Ok((n, lat)) => {
                sample.ops += n;
                sample.latencies_ns.extend(lat);
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    // Appends finishing after the stop flag are counted and so is their time.
    sample.elapsed = start.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok(sample),
    }
}

/// One consumer taking each message and acknowledging it durably
/// (`next` + `ack`) for `slot`. When it catches up, `payload_len`-byte
/// records are appended in batches outside the timed part.
pub fn durq_consume_ack_for(
    log: &durq::Log,
    consumer: &durq::Consumer,
    payload_len: usize,
    slot: Duration,
) -> durq::Result<Sample> {
    let payload = vec![7u8; payload_len];
    let mut timed = Duration::ZERO;
    let mut ops = 0;
    while timed < slot {
        let t0 = Instant::now();
        match consumer.next()? {
            Some(msg) => {
                std::hint::black_box(msg.payload().len());
                msg.ack()?;
                ops += 1;
                timed += t0.elapsed();
            }
            None => {
                timed += t0.elapsed();
                refill(log, &payload, 1000)?;
            }
        }
    }
    Ok(Sample {
        ops,
        elapsed: timed,
        latencies_ns: Vec::new(),
    })
}

/// How a batch consumer takes its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// `batch` calls of `Consumer::next`.
    OneByOne,
    /// One call of `Consumer::next_batch`.
    AtOnce,
}

/// A batch consumer: `batch` messages taken as `take` says, then one
/// `ack_until`, for `slot`.
pub fn durq_consume_batch_for(
    log: &durq::Log,
    consumer: &durq::Consumer,
    batch: usize,
    take: Take,
    payload_len: usize,
    slot: Duration,
) -> durq::Result<Sample> {
    let payload = vec![7u8; payload_len];
    let mut timed = Duration::ZERO;
    let mut ops = 0;
    let mut msgs = Vec::with_capacity(batch);
    while timed < slot {
        if consumer.waiting() < batch as u64 {
            refill(log, &payload, batch.max(1000))?;
        }
        let t0 = Instant::now();
        match take {
            Take::AtOnce => msgs = consumer.next_batch(batch)?,
            Take::OneByOne => {
                while msgs.len() < batch {
                    match consumer.next()? {
                        Some(m) => msgs.push(m),
                        None => break,
                    }
                }
            }
        }
        for m in &msgs {
            std::hint::black_box(m.payload().len());
        }
        if let Some(last) = msgs.last() {
            consumer.ack_until(last.offset() + 1)?;
        }
        ops += msgs.len() as u64;
        msgs.clear();
        timed += t0.elapsed();
    }
    Ok(Sample {
        ops,
        elapsed: timed,
        latencies_ns: Vec::new(),
    })
}

fn refill(log: &durq::Log, payload: &[u8], n: usize) -> durq::Result<()> {
    log.append_batch(std::iter::repeat_n(payload, n))?;
    Ok(())
}

/// Sequential scan with checksum verification (`log.scan(0, ..)`, payloads
/// borrowed from the mapped segments), restarted from the start as often
/// as fits in `slot`.
pub fn durq_scan_for(log: &durq::Log, slot: Duration) -> durq::Result<Sample> {
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        let before = ops;
        let mut out_of_time = false;
        log.scan(0, |_, payload| {
            std::hint::black_box(payload.len());
            ops += 1;
            if ops.is_multiple_of(4096) && start.elapsed() >= slot {
                out_of_time = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if out_of_time || ops == before || start.elapsed() >= slot {
            break;
        }
    }
    Ok(Sample {
        ops,
        elapsed: start.elapsed(),
        latencies_ns: Vec::new(),
    })
}

/// The median of the finite values of `xs` (NaN if there are none).
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The mount holding `path`: (device, mount point, file system type), read
/// from `/proc/self/mounts` (Linux); `None` elsewhere.
pub fn mount_of(path: &Path) -> Option<(String, String, String)> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(String, String, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(mnt), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mnt = mnt.replace("\\040", " ");
        if path.starts_with(&mnt) && best.as_ref().is_none_or(|b| mnt.len() >= b.1.len()) {
            best = Some((dev.to_owned(), mnt, fstype.to_owned()));
        }
    }
    best
}

/// A scratch directory removed (with its contents) when dropped.
pub struct Scratch {
    /// The directory.
    pub path: PathBuf,
}

impl Scratch {
    /// Creates a fresh directory `durq-bench-PID-N` inside `parent`.
    pub fn new_in(parent: &Path) -> io::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("durq-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path)?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One row of the report.
struct Row {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    rates: Vec<f64>,
    ratios: Vec<f64>,
    p99_us: Vec<f64>,
}

impl Row {
    fn new(key: &'static str, label: &'static str, unit: &'static str) -> Row {
        Row {
            key,
            label,
            unit,
            rates: Vec::new(),
            ratios: Vec::new(),
            p99_us: Vec::new(),
        }
    }
}

/// Runs the benchmark in `dir` (a temporary directory if `None`) for about
/// `duration`, printing a table (or JSON with `json`) to stdout.
///
/// `interrupted` is asked between workloads; once it says yes, the run
/// stops, removes its scratch directory, prints nothing on stdout and
/// returns `Ok(false)`.
pub fn run(
    dir: Option<&Path>,
    duration: Duration,
    json: bool,
    interrupted: fn() -> bool,
) -> Result<bool, Box<dyn std::error::Error>> {
    let parent = match dir {
        Some(d) => {
            if !d.is_dir() {
                return Err(format!("{} is not a directory", d.display()).into());
            }
            d.to_owned()
        }
        None => std::env::temp_dir(),
    };
    let scratch = Scratch::new_in(&parent).map_err(|e| {
        format!(
            "cannot create a scratch directory in {}: {e}",
            parent.display()
        )
    })?;
    let mount = mount_of(&scratch.path);
    let fstype = mount.as_ref().map(|m| m.2.clone());
    if !json {
        println!(
            "durq bench: {} ({}), about {:.0} s",
            scratch.path.display(),
            match &mount {
                Some((dev, mnt, fs)) => format!("{fs} on {dev}, mounted at {mnt}"),
                None => "file system unknown".into(),
            },
            duration.as_secs_f64()
        );
        if matches!(fstype.as_deref(), Some("tmpfs" | "ramfs")) {
            println!(
                "warning: {} is in memory; fdatasync does nothing there, so these numbers say nothing about a disk",
                scratch.path.display()
            );
        }
    }

    // Setup (not timed): the raw file, the log and its consumer.
    let mut raw = RawFile::create(&scratch.path.join("raw.dat"), RAW_FILE_BYTES)?;
    let log = durq::Log::open(scratch.path.join("log"))?;
    let consumer = log.consumer("bench")?;

    let workloads = 5;
    let rounds = if duration >= Duration::from_secs(10) {
        5
    } else {
        3
    };
    let slot = (duration / (rounds * workloads)).max(Duration::from_millis(50));
    let mut rows = [
        Row::new("raw_fdatasync", "raw pwrite+fdatasync, 128 B", "writes/s"),
        Row::new("append_1_thread", "durq append, 1 thread", "records/s"),
        Row::new("append_16_threads", "durq append, 16 threads", "records/s"),
        Row::new("consume_ack", "durq next+ack, 1 consumer", "messages/s"),
        Row::new("scan", "durq scan with CRC (Log::scan)", "records/s"),
    ];
    let progress = !json && io::stderr().is_terminal();
    let started = Instant::now();
    for round in 0..rounds {
        if progress {
            eprint!("\rround {}/{rounds}...", round + 1);
        }
        // Ctrl-C is honoured between workloads, so within one slot; a
        // round cut short is not reported.
        let stop = || {
            if interrupted() {
                if progress {
                    eprint!("\r                    \r");
                }
                eprintln!(
                    "durq: bench interrupted; removing {}",
                    scratch.path.display()
                );
                return true;
            }
            false
        };
        if stop() {
            return Ok(false);
        }
        let r = raw_sync_for(&mut raw, RAW_RECORD_BYTES, slot)?.rate();
        if stop() {
            return Ok(false);
        }
        let mut s1 = durq_append_for(&log, 1, RECORD_BYTES, slot, true)?;
        if stop() {
            return Ok(false);
        }
        let mut s16 = durq_append_for(&log, 16, RECORD_BYTES, slot, true)?;
        if stop() {
            return Ok(false);
        }
        let c = durq_consume_ack_for(&log, &consumer, RECORD_BYTES, slot)?;
        if stop() {
            return Ok(false);
        }
        let scan = durq_scan_for(&log, slot)?;
        rows[0].rates.push(r);
        rows[0].ratios.push(1.0);
        for (row, s) in rows[1..].iter_mut().zip([&mut s1, &mut s16]) {
            row.p99_us.push(
                s.latency_quantile(0.99)
                    .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6),
            );
        }
        for (row, rate) in rows[1..]
            .iter_mut()
            .zip([s1.rate(), s16.rate(), c.rate(), scan.rate()])
        {
            row.rates.push(rate);
            row.ratios.push(rate / r);
        }
    }
    let total = started.elapsed();
    if progress {
        eprint!("\r                    \r");
    }
    drop(consumer);
    drop(log);
    drop(raw);
    let dir_shown = scratch.path.display().to_string();
    drop(scratch);

    if json {
        print!(
            "{}",
            to_json(&dir_shown, mount.as_ref(), rounds, slot, total, &rows)
        );
    } else {
        print_table(rounds, slot, &rows);
    }
    Ok(true)
}

fn print_table(rounds: u32, slot: Duration, rows: &[Row]) {
    println!(
        "{rounds} interleaved rounds of {:.2} s per workload; medians over the rounds; {RECORD_BYTES}-byte records",
        slot.as_secs_f64()
    );
    println!();
    println!(
        "{:<30} {:>14} {:<12} {:>21} {:>10} {:>10}",
        "workload", "rate", "unit", "range over rounds", "vs raw", "p99"
    );
    for row in rows {
        let lo = row.rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = row.rates.iter().copied().fold(0.0, f64::max);
        let p99 = if row.p99_us.is_empty() {
            String::new()
        } else {
            format_latency(median(&row.p99_us))
        };
        println!(
            "{:<30} {:>14} {:<12} {:>21} {:>9.2}x {:>10}",
            row.label,
            group(median(&row.rates)),
            row.unit,
            format!("{}-{}", group(lo), group(hi)),
            median(&row.ratios),
            p99
        );
    }
    println!();
    println!(
        "\"vs raw\" is the median of the per-round ratios to the raw fdatasync rate: 1.00x for\n\
         one producer means durq costs one fdatasync per append, like the bare disk; several\n\
         producers share one fdatasync (group commit), so their rate can exceed the raw rate."
    );
}

fn format_latency(us: f64) -> String {
    if !us.is_finite() {
        String::new()
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

/// `1234567.8` as `1,234,568`.
fn group(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let s = format!("{x:.0}");
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn json_list(xs: &[f64]) -> String {
    let parts: Vec<String> = xs.iter().map(|&x| json_num(x)).collect();
    format!("[{}]", parts.join(", "))
}

/// The JSON shape is documented in `docs/benchmarks.md`.
fn to_json(
    dir: &str,
    mount: Option<&(String, String, String)>,
    rounds: u32,
    slot: Duration,
    total: Duration,
    rows: &[Row],
) -> String {
    let mut out = String::from("{\n");
    out.push_str(&format!(
        "  \"durq_version\": {},\n",
        json_str(env!("CARGO_PKG_VERSION"))
    ));
    out.push_str(&format!("  \"dir\": {},\n", json_str(dir)));
    match mount {
        Some((dev, mnt, fs)) => out.push_str(&format!(
            "  \"filesystem\": {{\"type\": {}, \"device\": {}, \"mount_point\": {}}},\n",
            json_str(fs),
            json_str(dev),
            json_str(mnt)
        )),
        None => out.push_str("  \"filesystem\": null,\n"),
    }
    out.push_str(&format!("  \"record_bytes\": {RECORD_BYTES},\n"));
    out.push_str(&format!("  \"rounds\": {rounds},\n"));
    out.push_str(&format!(
        "  \"slot_seconds\": {},\n",
        json_num(slot.as_secs_f64())
    ));
    out.push_str(&format!(
        "  \"total_seconds\": {},\n",
        json_num(total.as_secs_f64())
    ));
    out.push_str("  \"results\": [\n");
    for (i, row) in rows.iter().enumerate() {
        let p99 = if row.p99_us.is_empty() {
            "null".to_string()
        } else {
            json_num(median(&row.p99_us))
        };
        out.push_str(&format!(
            "    {{\"name\": {}, \"label\": {}, \"unit\": {}, \"median\": {}, \"ratio_to_raw\": {}, \"p99_latency_us\": {}, \"per_round\": {}, \"ratio_per_round\": {}}}{}\n",
            json_str(row.key),
            json_str(row.label),
            json_str(row.unit),
            json_num(median(&row.rates)),
            json_num(median(&row.ratios)),
            p99,
            json_list(&row.rates),
            json_list(&row.ratios),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    out.push_str("  ]\n}\n");
    out
}
