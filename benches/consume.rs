//! Consuming and reading, side by side with SQLite (WAL, `synchronous=FULL`):
//!
//! * `consume`: one durq consumer acknowledging every message durably
//!   (`next` + `ack`); batch consumers (`next` × N, then one `ack_until`)
//!   with N = 100 and 1,000, N = 100 taken with one `next_batch`, and
//!   N = 1,000 for a client that reads behind another reader (each
//!   segment's index already built past it); SQLite's consumer pattern, one
//!   transaction per message that reads the client's cursor row, the next
//!   message row, and updates the cursor row. Throughput in messages per
//!   second.
//! * `scan`: a sequential scan of 1,000,000 100-byte records with checksum
//!   verification, by `log.scan(0, ..)` (payloads borrowed) and by
//!   `log.iter(0)` (a `Record` per item), vs
//!   `SELECT id, payload FROM q ORDER BY id`.
//!
//! Run: `cargo bench --bench consume` (ratios: `cargo bench --bench targets`).

mod common;

use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const LEN: usize = 100;
const SCAN_RECORDS: u64 = 1_000_000;

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat);
}

/// Makes sure the durq client has at least `n` messages waiting (untimed).
fn durq_ensure(log: &durq::Log, consumer: &durq::Consumer, n: u64) {
    let payload = [4u8; LEN];
    while consumer.waiting() < n {
        let k = (n - consumer.waiting()).clamp(1, 10_000);
        log.append_batch(std::iter::repeat_n(&payload[..], k as usize))
            .unwrap();
    }
}

/// Takes `iters` batches of `batch` waiting messages, acknowledging each
/// batch with one `ack_until`; returns the time it took.
fn take_batches(
    consumer: &durq::Consumer,
    iters: u64,
    batch: u64,
    msgs: &mut Vec<durq::Message>,
) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        for _ in 0..batch {
            let m = consumer.next().unwrap().expect("a message is waiting");
            std::hint::black_box(m.payload().len());
            msgs.push(m);
        }
        consumer
            .ack_until(msgs.last().unwrap().offset() + 1)
            .unwrap();
        msgs.clear();
    }
    start.elapsed()
}

fn consume(c: &mut Criterion) {
    let dir = common::scratch();
    eprintln!("benchmark directory: {}", common::describe_fs(dir.path()));
    let mut g = c.benchmark_group("consume");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));

    let log = common::durq_log(&dir.path().join("durq"));
    let consumer = log.consumer("bench").unwrap();
    let mut msgs = Vec::new();
    g.bench_function("durq_next_ack_each", |b| {
        b.iter_custom(|iters| {
            durq_ensure(&log, &consumer, iters);
            let start = Instant::now();
            for _ in 0..iters {
                let msg = consumer.next().unwrap().expect("a message is waiting");
                std::hint::black_box(msg.payload().len());
                msg.ack().unwrap();
            }
            start.elapsed()
        })
    });

    for batch in [100u64, 1000] {
        g.throughput(Throughput::Elements(batch));
        msgs.reserve(batch as usize);
        g.bench_function(format!("durq_batch_{batch}_ack_until"), |b| {
            b.iter_custom(|iters| {
                durq_ensure(&log, &consumer, iters * batch);
                take_batches(&consumer, iters, batch, &mut msgs)
            })
        });
    }
    g.throughput(Throughput::Elements(100));
    g.bench_function("durq_next_batch_100_ack_until", |b| {
        b.iter_custom(|iters| {
            durq_ensure(&log, &consumer, iters * 100);
            let start = Instant::now();
            for _ in 0..iters {
                let batch = consumer.next_batch(100).unwrap();
                assert_eq!(batch.len(), 100);
                std::hint::black_box(batch.iter().map(|m| m.payload().len()).sum::<usize>());
                consumer
                    .ack_until(batch.last().unwrap().offset() + 1)
                    .unwrap();
            }
            start.elapsed()
        })
    });

    // A client that lags another: the other has read every message first,
    // so each segment's index frontier is past what this client reads.
    let behind = log.consumer("behind").unwrap();
    let batch = 1000u64;
    g.throughput(Throughput::Elements(batch));
    g.bench_function("durq_batch_1000_ack_until_behind_another_reader", |b| {
        b.iter_custom(|iters| {
            durq_ensure(&log, &behind, iters * batch);
            // The other reader goes through what this client will read.
            let from = behind.acked();
            for offset in from..from + iters * batch {
                std::hint::black_box(log.read(offset).unwrap());
            }
            take_batches(&behind, iters, batch, &mut msgs)
        })
    });
    drop(behind);
    drop(consumer);
    drop(log);

    g.throughput(Throughput::Elements(1));
    let conn = common::sqlite_open(&dir.path().join("sqlite.db"));
    g.bench_function("sqlite_txn_per_message", |b| {
        b.iter_custom(|iters| {
            let waiting = common::sqlite_waiting(&conn);
            if waiting < iters {
                common::sqlite_insert_batch(&conn, &[4u8; LEN], (iters - waiting) as usize);
            }
            let start = Instant::now();
            for _ in 0..iters {
                assert!(common::sqlite_consume_one(&conn));
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn scan(c: &mut Criterion) {
    let dir = common::scratch();
    let log = common::durq_prefilled(&dir.path().join("durq"), SCAN_RECORDS, LEN);
    let conn = common::sqlite_prefilled(&dir.path().join("sqlite.db"), SCAN_RECORDS, LEN);
    let mut g = c.benchmark_group("scan");
    configure(&mut g);
    g.throughput(Throughput::Elements(SCAN_RECORDS));
    g.bench_function("durq_scan_crc", |b| {
        b.iter(|| {
            let mut n = 0u64;
            let end = log
                .scan(0, |_, payload| {
                    std::hint::black_box(payload.len());
                    n += 1;
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!((n, end), (SCAN_RECORDS, SCAN_RECORDS));
        })
    });
    g.bench_function("durq_iter_crc", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for item in log.iter(0) {
                let (_, rec) = item.unwrap();
                std::hint::black_box(rec.len());
                n += 1;
            }
            assert_eq!(n, SCAN_RECORDS);
        })
    });
    g.bench_function("sqlite_select_in_order", |b| {
        b.iter(|| assert_eq!(common::sqlite_scan(&conn), SCAN_RECORDS))
    });
    g.finish();
}

criterion_group!(benches, consume, scan);
criterion_main!(benches);
