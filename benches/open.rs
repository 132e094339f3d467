//! Open time of a log with 10 and with 1,000 small (64 KiB) segments of
//! 100-byte records. Recovery reads every segment's header but scans only
//! the last segment: `segments/*` has a nearly empty tail, so the
//! per-segment cost shows alone; `with_64MiB_tail/*` adds a default-sized
//! last segment holding 400,000 records, as a log in use has.
//!
//! Only `Log::open` is timed; closing is not. The spare segment is not
//! prepared in the background here (`background_preallocation(false)`), so
//! that no zero-filling of a spare runs during the next measurement.
//! Run: `cargo bench --bench open`.

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};

const SEGMENT_SIZE: u64 = 64 << 10;
const TAIL_RECORDS: usize = 400_000;

fn open(c: &mut Criterion) {
    let dir = common::scratch();
    let mut g = c.benchmark_group("open");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat);
    for segments in [10usize, 1000] {
        let path = dir.path().join(format!("log-{segments}"));
        drop(common::durq_with_segments(&path, segments, SEGMENT_SIZE));
        let options = durq::Options::new()
            .segment_size(SEGMENT_SIZE)
            .background_preallocation(false);
        g.bench_function(BenchmarkId::new("segments", segments), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let log = options.open(&path).unwrap();
                    total += start.elapsed();
                    assert!(log.recovery_report().segments > segments);
                    drop(log);
                }
                total
            })
        });
    }
    for segments in [10usize, 1000] {
        let path = dir.path().join(format!("tail-{segments}"));
        drop(common::durq_with_segments_and_tail(
            &path,
            segments,
            SEGMENT_SIZE,
            TAIL_RECORDS,
        ));
        let options = durq::Options::new().background_preallocation(false);
        g.bench_function(BenchmarkId::new("with_64MiB_tail", segments), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let log = options.open(&path).unwrap();
                    total += start.elapsed();
                    drop(log);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, open);
criterion_main!(benches);
