//! Fuzz target `decode_record`: the body is `fuzz_bodies::decode_record` in
//! `tests/support/fuzz_bodies.rs`, which `cargo test` also runs over this
//! target's corpus (`tests/fuzz_corpus.rs`).
#![no_main]

#[path = "../../tests/support/simdisk.rs"]
mod simdisk;

#[path = "../../tests/support/crash_runner.rs"]
mod crash_runner;

#[path = "../../tests/support/fuzz_bodies.rs"]
mod fuzz_bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_bodies::decode_record(data));
