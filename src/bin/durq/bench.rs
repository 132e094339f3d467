//! `durq bench`: measures this disk's raw fdatasync rate and durq's
//! throughput side by side. (Being written in the benchmarks issue.)

use std::path::Path;
use std::time::Duration;

/// Runs the benchmark in `dir` (a temporary directory if `None`) for about
/// `duration`, printing a table (or JSON with `json`) to stdout.
pub fn run(dir: Option<&Path>, duration: Duration, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let _ = (dir, duration, json);
    Err("durq bench is not available in this build yet".into())
}
