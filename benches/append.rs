//! Durable appends, side by side with the disk's limit and SQLite:
//!
//! * `append_100B`, `append_1KiB`: durq with 1, 4, 16 and 64 producer
//!   threads; the raw disk (`pwrite` + `fdatasync` of the same number of
//!   bytes a durq record occupies, into a preallocated zero-filled file);
//!   SQLite (WAL, `synchronous=FULL`), one INSERT per transaction, with the
//!   same thread counts sharing one connection behind a mutex.
//! * `append_batch_100`: `append_batch` of 100 records vs SQLite with 100
//!   INSERTs per transaction.
//! * `append_1MiB`: 1 MiB records vs 1 MiB `pwrite` + `fdatasync`.
//!
//! Throughput is in records per second (bytes per second for 1 MiB). With
//! threads, each sample's iteration count is spread over the threads.
//! Run: `cargo bench --bench append` (ratios: `cargo bench --bench targets`).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{RawFile, run_threads, scratch};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

const THREADS: [usize; 4] = [1, 4, 16, 64];

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat);
}

fn append_records(c: &mut Criterion) {
    for (name, len) in [("append_100B", 100usize), ("append_1KiB", 1024)] {
        let dir = scratch();
        if len == 100 {
            eprintln!("benchmark directory: {}", common::describe_fs(dir.path()));
        }
        let mut g = c.benchmark_group(name);
        configure(&mut g);
        g.throughput(Throughput::Elements(1));

        let encoded = durq::record::encoded_len(len);
        let mut raw = RawFile::create(&dir.path().join("raw"), 64 << 20).unwrap();
        let rec = vec![0x5au8; encoded];
        g.bench_function(BenchmarkId::new("raw_pwrite_fdatasync", encoded), |b| {
            b.iter(|| raw.write_sync(&rec).unwrap())
        });
        drop(raw);

        for threads in THREADS {
            let path = dir.path().join(format!("durq-{threads}"));
            let log = common::durq_log(&path);
            g.bench_function(BenchmarkId::new("durq", threads), |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, |t, n| {
                        let payload = vec![t as u8; len];
                        for _ in 0..n {
                            log.append(&payload).unwrap();
                        }
                    })
                })
            });
            drop(log);
            std::fs::remove_dir_all(&path).unwrap();
        }

        for threads in THREADS {
            let path = dir.path().join(format!("sqlite-{threads}.db"));
            let conn = Mutex::new(common::sqlite_open(&path));
            g.bench_function(BenchmarkId::new("sqlite_txn_per_insert", threads), |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, |t, n| {
                        let payload = vec![t as u8; len];
                        for _ in 0..n {
                            common::sqlite_insert(&conn.lock().unwrap(), &payload);
                        }
                    })
                })
            });
        }
        g.finish();
    }
}

fn append_batch(c: &mut Criterion) {
    let dir = scratch();
    let mut g = c.benchmark_group("append_batch_100");
    configure(&mut g);
    g.throughput(Throughput::Elements(100));
    let payload = [1u8; 100];

    let log = common::durq_log(&dir.path().join("durq"));
    g.bench_function("durq_append_batch", |b| {
        b.iter(|| {
            log.append_batch(std::iter::repeat_n(&payload[..], 100))
                .unwrap()
        })
    });
    drop(log);

    let conn = common::sqlite_open(&dir.path().join("sqlite.db"));
    g.bench_function("sqlite_100_per_txn", |b| {
        b.iter(|| common::sqlite_insert_batch(&conn, &payload, 100))
    });
    g.finish();
}

fn append_1mib(c: &mut Criterion) {
    const MIB: usize = 1 << 20;
    let dir = scratch();
    let mut g = c.benchmark_group("append_1MiB");
    configure(&mut g);
    g.throughput(Throughput::Bytes(MIB as u64));
    let payload = vec![2u8; MIB];

    let mut raw = RawFile::create(&dir.path().join("raw"), 256 << 20).unwrap();
    g.bench_function("raw_pwrite_fdatasync", |b| {
        b.iter(|| raw.write_sync(&payload).unwrap())
    });
    drop(raw);

    let log = common::durq_log(&dir.path().join("durq"));
    g.bench_function("durq", |b| b.iter(|| log.append(&payload).unwrap()));
    drop(log);
    g.finish();
}

criterion_group!(benches, append_records, append_batch, append_1mib);
criterion_main!(benches);
