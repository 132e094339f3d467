//! Every performance target of the benchmarks issue, measured as a ratio in
//! one run: durq and its baseline (the raw disk, or SQLite in WAL mode with
//! `synchronous=FULL`) run in the same process, on the same disk, in
//! interleaved rounds (raw, durq, SQLite, raw, durq, SQLite, ...), so that
//! drift on a shared, noisy machine hits both sides alike. Each ratio is the
//! median of the per-round ratios. Also: p99 append latency at 64
//! producers, open time at 10 vs 1,000 segments, resident memory (RSS) at
//! 10 vs 1,000 segments (each measured in a fresh child process).
//!
//! Run: `cargo bench --bench targets` (about two minutes). Knobs:
//! `DURQ_ROUNDS` (default 5), `DURQ_SLOT_MS` (time per workload per round,
//! default 1000), `DURQ_BENCH_DIR` (where the scratch directory goes).
//! Prints a Markdown report to stdout.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{RawFile, Sample, cli, median};

const LEN: usize = 100;
const MIB: usize = 1 << 20;
const SCAN_RECORDS: u64 = 1_000_000;
const SMALL_SEGMENT: u64 = 64 << 10;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// In a child process: open the log at `path`, scan it, print RSS figures.
fn rss_child(path: &Path) {
    let before = common::rss_kib();
    let log = durq::Options::new()
        .segment_size(SMALL_SEGMENT)
        .open(path)
        .expect("open");
    let opened = common::rss_kib();
    let mut n = 0u64;
    for item in log.iter(0) {
        std::hint::black_box(item.expect("record").1.len());
        n += 1;
    }
    let scanned = common::rss_kib();
    println!(
        "RSS {} {} {} {} {} {} {n}",
        before.0,
        opened.0,
        scanned.0,
        scanned.1,
        scanned.2,
        log.segments().unwrap().len()
    );
}

/// (VmRSS before open, after open, after a full scan, RssAnon and RssFile
/// after the scan, segments, records) of a fresh process opening `path`.
fn rss_of(path: &Path) -> Vec<u64> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("DURQ_RSS_CHILD", path)
        .output()
        .expect("run the RSS child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RSS "))
        .unwrap_or_else(|| panic!("RSS child failed: {}", String::from_utf8_lossy(&out.stderr)));
    line.split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

struct Results {
    samples: BTreeMap<&'static str, Vec<Sample>>,
}

impl Results {
    fn push(&mut self, key: &'static str, s: Sample) {
        self.samples.entry(key).or_default().push(s);
    }
    fn rates(&self, key: &str) -> Vec<f64> {
        self.samples[key].iter().map(Sample::rate).collect()
    }
    /// Per-round ratios of `a` to `b` (b may be the mean of several keys).
    fn ratios(&self, a: &str, b: &[&str]) -> Vec<f64> {
        let ra = self.rates(a);
        (0..ra.len())
            .map(|i| {
                let base: f64 = b.iter().map(|k| self.rates(k)[i]).sum::<f64>() / b.len() as f64;
                ra[i] / base
            })
            .collect()
    }
}

fn fmt_rate(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    if let Some(path) = std::env::var_os("DURQ_RSS_CHILD") {
        rss_child(Path::new(&path));
        return;
    }
    let rounds = env_num("DURQ_ROUNDS", 5).max(1) as usize;
    let slot = Duration::from_millis(env_num("DURQ_SLOT_MS", 1000));
    let dir = common::scratch();
    let d = dir.path();
    eprintln!("benchmark directory: {}", common::describe_fs(d));
    let setup = Instant::now();

    // Setup, untimed: files, logs, databases, prefilled data for scans.
    let mut raw = RawFile::create(&d.join("raw-small"), cli::RAW_FILE_BYTES).unwrap();
    let mut raw_big = RawFile::create(&d.join("raw-1mib"), 256 << 20).unwrap();
    let mut raw_fresh = RawFile::create_growing(&d.join("raw-fresh")).unwrap();
    let log_append = common::durq_log(&d.join("append"));
    let log_batch = common::durq_log(&d.join("batch"));
    let log_big = common::durq_log(&d.join("big"));
    // The same with size-bound retention: released segments come back as
    // spares, so the log writes into blocks it already owns.
    let log_big_ret = durq::Options::new()
        .retention(durq::Retention::max_bytes(4 * durq::DEFAULT_SEGMENT_SIZE))
        .open(d.join("big-retained"))
        .unwrap();
    let log_ack = common::durq_log(&d.join("ack"));
    let consumer_ack = log_ack.consumer("bench").unwrap();
    let log_bc = common::durq_log(&d.join("batch-consumer"));
    let consumer_bc = log_bc.consumer("bench").unwrap();
    let log_scan = common::durq_prefilled(&d.join("scan"), SCAN_RECORDS, LEN);
    let sq_append = Mutex::new(common::sqlite_open(&d.join("append.db")));
    let sq_batch = common::sqlite_open(&d.join("batch.db"));
    let sq_consume = common::sqlite_open(&d.join("consume.db"));
    let sq_scan = common::sqlite_prefilled(&d.join("scan.db"), SCAN_RECORDS, LEN);
    eprintln!("setup took {:.1} s", setup.elapsed().as_secs_f64());

    let payload = [1u8; LEN];
    let big = vec![2u8; MIB];
    let mut res = Results {
        samples: BTreeMap::new(),
    };
    let mut p99_64 = Vec::new();
    let mut p50_64 = Vec::new();
    let mut p99_16 = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        eprintln!(
            "round {}/{rounds} ({:.0} s so far)",
            round + 1,
            started.elapsed().as_secs_f64()
        );
        res.push(
            "raw_128B_a",
            cli::raw_sync_for(&mut raw, cli::RAW_RECORD_BYTES, slot).unwrap(),
        );
        res.push(
            "durq_1",
            cli::durq_append_for(&log_append, 1, LEN, slot, false).unwrap(),
        );
        let mut s16 = cli::durq_append_for(&log_append, 16, LEN, slot, true).unwrap();
        p99_16.push(s16.latency_quantile(0.99).unwrap().as_secs_f64() * 1e3);
        res.push("durq_16", s16);
        let mut s64 = cli::durq_append_for(&log_append, 64, LEN, slot, true).unwrap();
        p99_64.push(s64.latency_quantile(0.99).unwrap().as_secs_f64() * 1e3);
        p50_64.push(s64.latency_quantile(0.5).unwrap().as_secs_f64() * 1e3);
        res.push("durq_64", s64);
        res.push(
            "raw_128B_b",
            cli::raw_sync_for(&mut raw, cli::RAW_RECORD_BYTES, slot).unwrap(),
        );
        res.push(
            "sqlite_1",
            common::sqlite_insert_threads_for(&sq_append, 1, LEN, slot),
        );
        res.push(
            "sqlite_64",
            common::sqlite_insert_threads_for(&sq_append, 64, LEN, slot),
        );

        res.push(
            "durq_batch_100",
            common::repeat_for(slot, 100, || {
                log_batch
                    .append_batch(std::iter::repeat_n(&payload[..], 100))
                    .unwrap();
            }),
        );
        res.push(
            "sqlite_batch_100",
            common::repeat_for(slot, 100, || {
                common::sqlite_insert_batch(&sq_batch, &payload, 100)
            }),
        );

        res.push(
            "raw_1MiB",
            cli::raw_sync_for(&mut raw_big, MIB, slot).unwrap(),
        );
        res.push(
            "durq_1MiB",
            common::repeat_for(slot, 1, || {
                log_big.append(&big).unwrap();
            }),
        );
        res.push(
            "durq_1MiB_retained",
            common::repeat_for(slot, 1, || {
                log_big_ret.append(&big).unwrap();
            }),
        );
        res.push(
            "raw_fresh_1MiB",
            common::repeat_for(slot, 1, || raw_fresh.write_sync(&big).unwrap()),
        );

        res.push(
            "durq_ack_each",
            cli::durq_consume_ack_for(&log_ack, &consumer_ack, LEN, slot).unwrap(),
        );
        res.push(
            "sqlite_consume",
            common::sqlite_consume_for(&sq_consume, LEN, slot),
        );
        for (name, batch, take) in [
            ("durq_batch_consumer_100", 100, cli::Take::OneByOne),
            ("durq_batch_consumer_100_next_batch", 100, cli::Take::AtOnce),
            ("durq_batch_consumer_1000", 1000, cli::Take::OneByOne),
        ] {
            res.push(
                name,
                cli::durq_consume_batch_for(&log_bc, &consumer_bc, batch, take, LEN, slot / 2)
                    .unwrap(),
            );
        }

        res.push("durq_scan", cli::durq_scan_for(&log_scan, slot).unwrap());
        res.push("durq_iter", {
            let t = Instant::now();
            let mut n = 0;
            while t.elapsed() < slot {
                for item in log_scan.iter(0) {
                    std::hint::black_box(item.unwrap().1.len());
                    n += 1;
                }
            }
            Sample {
                ops: n,
                elapsed: t.elapsed(),
                latencies_ns: Vec::new(),
            }
        });
        res.push(
            "sqlite_scan",
            common::repeat_for(slot, SCAN_RECORDS, || {
                assert_eq!(common::sqlite_scan(&sq_scan), SCAN_RECORDS)
            }),
        );
    }
    let rounds_time = started.elapsed();
    drop((consumer_ack, consumer_bc));
    drop((
        log_append,
        log_batch,
        log_big,
        log_big_ret,
        log_ack,
        log_bc,
        log_scan,
    ));
    drop((
        raw, raw_big, raw_fresh, sq_append, sq_batch, sq_consume, sq_scan,
    ));

    // Open time and memory: 10 vs 1,000 small segments, interleaved opens.
    eprintln!("building logs with 10 and 1,000 segments");
    let p10 = d.join("open-10");
    let p1000 = d.join("open-1000");
    drop(common::durq_with_segments(&p10, 10, SMALL_SEGMENT));
    drop(common::durq_with_segments(&p1000, 1000, SMALL_SEGMENT));
    let options = durq::Options::new()
        .segment_size(SMALL_SEGMENT)
        .background_preallocation(false);
    let mut open10 = Vec::new();
    let mut open1000 = Vec::new();
    for _ in 0..(4 * rounds) {
        for (p, v) in [(&p10, &mut open10), (&p1000, &mut open1000)] {
            let t = Instant::now();
            let log = options.open(p).unwrap();
            v.push(t.elapsed().as_secs_f64() * 1e3);
            drop(log);
        }
    }
    let open_ratios: Vec<f64> = open1000.iter().zip(&open10).map(|(a, b)| a / b).collect();
    // The same with a realistic tail: a full-size active segment holding
    // 400,000 records, which recovery scans.
    let t10 = d.join("tail-10");
    let t1000 = d.join("tail-1000");
    drop(common::durq_with_segments_and_tail(
        &t10,
        10,
        SMALL_SEGMENT,
        400_000,
    ));
    drop(common::durq_with_segments_and_tail(
        &t1000,
        1000,
        SMALL_SEGMENT,
        400_000,
    ));
    let big_options = durq::Options::new().background_preallocation(false);
    let mut tail10 = Vec::new();
    let mut tail1000 = Vec::new();
    for _ in 0..(2 * rounds) {
        for (p, v) in [(&t10, &mut tail10), (&t1000, &mut tail1000)] {
            let t = Instant::now();
            let log = big_options.open(p).unwrap();
            v.push(t.elapsed().as_secs_f64() * 1e3);
            drop(log);
        }
    }
    let tail_ratios: Vec<f64> = tail1000.iter().zip(&tail10).map(|(a, b)| a / b).collect();
    let rss10 = rss_of(&p10);
    let rss1000 = rss_of(&p1000);

    // The report.
    let m = |xs: Vec<f64>| median(&xs);
    println!("## durq targets: ratios measured in one run\n");
    println!(
        "{rounds} interleaved rounds, {:.2} s per workload per round ({:.0} s in all); \
         each ratio is the median of the per-round ratios; 100-byte records unless said.\n",
        slot.as_secs_f64(),
        rounds_time.as_secs_f64()
    );
    println!("| workload | durq | baseline | ratio | target | met |");
    println!("| --- | ---: | ---: | ---: | --- | --- |");
    let raw_ab = ["raw_128B_a", "raw_128B_b"];
    let row = |name: &str, a: &str, b: &[&str], target: f64| {
        let r = m(res.ratios(a, b));
        let base: Vec<f64> = (0..rounds)
            .map(|i| b.iter().map(|k| res.rates(k)[i]).sum::<f64>() / b.len() as f64)
            .collect();
        println!(
            "| {name} | {}/s | {}/s | {r:.2}x | >= {target}x | {} |",
            fmt_rate(m(res.rates(a))),
            fmt_rate(median(&base)),
            if r >= target { "yes" } else { "**no**" }
        );
    };
    row(
        "1 producer vs raw fdatasync (128 B)",
        "durq_1",
        &raw_ab,
        0.9,
    );
    row("16 producers vs raw", "durq_16", &raw_ab, 5.0);
    row("64 producers vs raw", "durq_64", &raw_ab, 20.0);
    row(
        "64 producers vs SQLite, 64 threads",
        "durq_64",
        &["sqlite_64"],
        15.0,
    );
    row(
        "append_batch of 100 vs SQLite 100/txn",
        "durq_batch_100",
        &["sqlite_batch_100"],
        1.0,
    );
    row(
        "1 MiB records vs raw 1 MiB pwrite+fdatasync",
        "durq_1MiB",
        &["raw_1MiB"],
        0.8,
    );
    row(
        "1 MiB records, size-bound retention (segments reused) vs raw 1 MiB pwrite+fdatasync",
        "durq_1MiB_retained",
        &["raw_1MiB"],
        0.8,
    );
    row(
        "1 MiB records vs raw 1 MiB appends to a growing file (new blocks; not a target)",
        "durq_1MiB",
        &["raw_fresh_1MiB"],
        0.8,
    );
    row(
        "1 consumer, next+ack each vs SQLite txn/message",
        "durq_ack_each",
        &["sqlite_consume"],
        1.0,
    );
    row(
        "batch consumer (100) vs SQLite txn/message",
        "durq_batch_consumer_100",
        &["sqlite_consume"],
        100.0,
    );
    row(
        "batch consumer (100, Consumer::next_batch) vs SQLite txn/message",
        "durq_batch_consumer_100_next_batch",
        &["sqlite_consume"],
        100.0,
    );
    row(
        "batch consumer (1,000) vs SQLite txn/message",
        "durq_batch_consumer_1000",
        &["sqlite_consume"],
        100.0,
    );
    row(
        "scan with CRC (Log::scan) vs SQLite SELECT in order",
        "durq_scan",
        &["sqlite_scan"],
        4.0,
    );
    row(
        "scan with CRC (Log::iter, a Record each) vs SQLite SELECT in order",
        "durq_iter",
        &["sqlite_scan"],
        4.0,
    );
    let p99 = median(&p99_64);
    println!(
        "| p99 append latency, 64 producers | {p99:.2} ms | | | <= 4 ms | {} |",
        if p99 <= 4.0 { "yes" } else { "**no**" }
    );
    let open_r = median(&open_ratios);
    println!(
        "| open, 1,000 segments vs 10 | {:.2} ms | {:.2} ms | {open_r:.2}x | <= 2x | {} |",
        median(&open1000),
        median(&open10),
        if open_r <= 2.0 { "yes" } else { "**no**" }
    );
    let tail_r = median(&tail_ratios);
    println!(
        "| open, 1,000 segments vs 10, with a 64 MiB tail of 400,000 records | {:.2} ms | {:.2} ms | {tail_r:.2}x | <= 2x | {} |",
        median(&tail1000),
        median(&tail10),
        if tail_r <= 2.0 { "yes" } else { "**no**" }
    );
    println!(
        "| RSS after open + full scan, 1,000 segments vs 10 | {} KiB | {} KiB | {:.2}x | flat | |",
        rss1000[2],
        rss10[2],
        rss1000[2] as f64 / rss10[2] as f64
    );

    println!("\n### Every workload (medians and range over rounds)\n");
    println!("| workload | median /s | min /s | max /s |");
    println!("| --- | ---: | ---: | ---: |");
    for (key, samples) in &res.samples {
        let rates: Vec<f64> = samples.iter().map(Sample::rate).collect();
        println!(
            "| {key} | {} | {} | {} |",
            fmt_rate(median(&rates)),
            fmt_rate(rates.iter().copied().fold(f64::INFINITY, f64::min)),
            fmt_rate(rates.iter().copied().fold(0.0, f64::max))
        );
    }
    println!(
        "\n64 producers: p50 {:.2} ms, p99 {p99:.2} ms (median over rounds); 16 producers: p99 {:.2} ms.",
        median(&p50_64),
        median(&p99_16)
    );
    println!(
        "Raw 1 MiB pwrite+fdatasync: {:.0} MiB/s in place, {:.0} MiB/s appended to a growing file; durq 1 MiB records: {:.0} MiB/s, {:.0} MiB/s with size-bound retention.",
        m(res.rates("raw_1MiB")),
        m(res.rates("raw_fresh_1MiB")),
        m(res.rates("durq_1MiB")),
        m(res.rates("durq_1MiB_retained"))
    );
    println!(
        "Open: {} segments {:.2} ms, {} segments {:.2} ms (medians of {} opens each).",
        rss10[5],
        median(&open10),
        rss1000[5],
        median(&open1000),
        open10.len()
    );
    for (name, r) in [("10", &rss10), ("1,000", &rss1000)] {
        println!(
            "RSS, {name} segments of 64 KiB ({} records): {} KiB before open, {} KiB after open, \
             {} KiB after a full scan (anonymous {} KiB, file-backed {} KiB).",
            r[6], r[0], r[1], r[2], r[3], r[4]
        );
    }
}
