//! Fuzz target `crash_run`: the body is `fuzz_bodies::crash_run` in
//! `tests/support/fuzz_bodies.rs`, which `cargo test` also runs over this
//! target's corpus (`tests/fuzz_corpus.rs`). It drives the crash runner of
//! `tests/support/crash_runner.rs` from the fuzzer's bytes.
#![no_main]

#[path = "../../tests/support/simdisk.rs"]
mod simdisk;

#[path = "../../tests/support/crash_runner.rs"]
mod crash_runner;

#[path = "../../tests/support/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_bodies::crash_run(data));
