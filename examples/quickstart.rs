//! Quickstart: create a log in a temporary directory, append from several
//! threads, reopen it, read everything back, and print what happened.
//!
//! Run with `cargo run --release --example quickstart`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("quickstart-log");
    let threads = 8u64;
    let per_thread = 2_000u64;

    let log = durq::Options::new().segment_size(4 << 20).open(&dir)?;
    println!("created log in {}", dir.display());

    let start = Instant::now();
    std::thread::scope(|s| -> Result<(), durq::Error> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = &log;
                s.spawn(move || -> Result<(), durq::Error> {
                    for i in 0..per_thread {
                        let mut payload = format!("thread {t} message {i} ").into_bytes();
                        payload.resize(100, b'.');
                        log.append(&payload)?; // durable when it returns
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("appender thread panicked")?;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    let total = threads * per_thread;
    println!(
        "appended {total} durable 100-byte records from {threads} threads in {:.2?}: {:.0} appends/s",
        elapsed,
        total as f64 / elapsed.as_secs_f64()
    );
    let batch_start = Instant::now();
    let batch: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("batched {i}").into_bytes())
        .collect();
    let range = log.append_batch(&batch)?;
    println!(
        "append_batch of {} records (offsets {}..{}) in {:.2?}",
        batch.len(),
        range.start,
        range.end,
        batch_start.elapsed()
    );
    drop(log);

    let log = durq::Log::open(&dir)?;
    let report = log.recovery_report();
    println!(
        "reopened: {} segment(s), offsets {}..{}, recovery clean: {}",
        report.segments,
        log.first_offset(),
        log.end(),
        report.is_clean()
    );
    let scan = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0usize;
    for item in log.iter(0) {
        let (_offset, record) = item?;
        count += 1;
        bytes += record.len();
    }
    println!(
        "read back {count} records ({bytes} bytes), every checksum verified, in {:.2?}",
        scan.elapsed()
    );
    assert_eq!(count, total + batch.len() as u64);
    println!(
        "first record: {:?}",
        String::from_utf8_lossy(&log.read(0)?.unwrap_or_default())
    );
    Ok(())
}
