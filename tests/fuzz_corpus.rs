//! Replays the fuzzers' corpora (`fuzz/corpus/<target>/`) through the fuzz
//! target bodies (`tests/support/fuzz_bodies.rs`) on the stable toolchain, so
//! every input a fuzzer kept — and every crash committed there — is checked by
//! plain `cargo test`.
//!
//! A few built-in inputs run too, so the test is never vacuous. Files named
//! `crash-*` are crash inputs the fuzzers found, kept as regressions for the
//! engine bugs they showed (all fixed). To replay one file (a crash artifact,
//! say) with its panic message and backtrace:
//!
//! ```text
//! DURQ_FUZZ_TARGET=open_dir DURQ_FUZZ_INPUT=fuzz/artifacts/open_dir/crash-... \
//!     cargo test --test fuzz_corpus replay_one -- --nocapture
//! ```

#[path = "support/simdisk.rs"]
mod simdisk;

#[path = "support/crash_runner.rs"]
mod crash_runner;

#[path = "support/fuzz_bodies.rs"]
mod fuzz_bodies;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The body of fuzz target `name`.
fn body(name: &str) -> fn(&[u8]) {
    fuzz_bodies::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target named {name:?}"))
        .1
}

/// Deterministic pseudo-random inputs (splitmix64), the same on every run.
fn builtin_inputs() -> Vec<Vec<u8>> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut inputs = vec![Vec::new(), vec![0u8; 64], vec![0xFF; 512], b"durq".to_vec()];
    for i in 0..48 {
        let len = (next() % (64 << (i % 6))) as usize;
        inputs.push((0..len).map(|_| next() as u8).collect());
    }
    inputs
}

/// The corpus files of `target`, sorted (an absent directory is empty).
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every corpus file and built-in input of `target`; fails listing
/// every input that panicked (not only the first).
fn replay(target: &str) {
    let f = body(target);
    let mut failures = Vec::new();
    let mut count = 0usize;
    let files = corpus_files(target);
    for path in &files {
        let data = std::fs::read(path).expect("reading a corpus file");
        count += 1;
        if let Err(p) = quietly(|| f(&data)) {
            failures.push(format!("{}: {p}", path.display()));
        }
    }
    for (i, data) in builtin_inputs().iter().enumerate() {
        count += 1;
        if let Err(p) = quietly(|| f(data)) {
            failures.push(format!("built-in input {i}: {p}"));
        }
    }
    assert!(count > 0, "no inputs replayed for {target}");
    eprintln!(
        "{target}: replayed {count} inputs ({} corpus files)",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} inputs of fuzz target {target} failed (replay one with \
         DURQ_FUZZ_TARGET={target} DURQ_FUZZ_INPUT=FILE cargo test --test fuzz_corpus \
         replay_one -- --nocapture):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, catching a panic and returning its message; the panic is not
/// printed (the test lists every failing input at the end instead). Panics
/// of other threads and tests print as usual.
fn quietly(f: impl FnOnce()) -> Result<(), String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    r.map_err(|p| panic_text(&*p))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_owned()
    }
}

#[test]
fn decode_record_corpus() {
    replay("decode_record");
}

#[test]
fn open_dir_corpus() {
    replay("open_dir");
}

#[test]
fn crash_run_corpus() {
    replay("crash_run");
}

#[test]
fn every_target_has_a_corpus_directory() {
    for (name, _) in fuzz_bodies::TARGETS {
        assert!(
            !corpus_files(name).is_empty(),
            "fuzz/corpus/{name}/ is empty or missing"
        );
    }
}

/// Replays one input given by `DURQ_FUZZ_INPUT` through the target named by
/// `DURQ_FUZZ_TARGET`, with the ordinary panic output. Does nothing without
/// them.
#[test]
fn replay_one() {
    let (Ok(target), Ok(input)) = (
        std::env::var("DURQ_FUZZ_TARGET"),
        std::env::var("DURQ_FUZZ_INPUT"),
    ) else {
        return;
    };
    let data = std::fs::read(&input).unwrap_or_else(|e| panic!("reading {input}: {e}"));
    eprintln!("replaying {input} ({} bytes) through {target}", data.len());
    body(&target)(&data);
}
