//! Bodies of the fuzz targets in `fuzz/fuzz_targets/`, as plain functions.
//!
//! Each target there is one line calling a function here, and
//! `tests/fuzz_corpus.rs` replays every committed corpus file through the same
//! functions, so `cargo test` on the stable toolchain checks what the fuzzers
//! found. A body panics (a fuzzer "crash") only when durq panics or breaks a
//! property it promises; bad input is expected to be refused with an error.
//!
//! Include it at the crate root next to the simulated disk and the crash
//! runner, which it uses as `crate::simdisk` and `crate::crash_runner`:
//!
//! ```ignore
//! #[path = "support/simdisk.rs"]
//! mod simdisk;
//! #[path = "support/crash_runner.rs"]
//! mod crash_runner;
//! #[path = "support/fuzz_bodies.rs"]
//! mod fuzz_bodies;
//! ```
//!
//! It uses only durq's public API, `arbitrary`, the simulated disk and the
//! crash runner.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::Unstructured;
use durq::cursor::{self, JOURNAL_ENTRY_LEN, JOURNAL_LEN, SNAPSHOT_LEN, Snapshot};
use durq::names;
use durq::record::{
    self, BadSegmentHeader, FLAG_END_OF_WRITE, FLAG_LOST, Invalid, RECORD_ALIGN, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN, SegmentHeader,
};
use durq::{Error, Log, Options, Retention};

use crate::simdisk::{LossMode, SimDisk};

/// Prints what the bodies do when `DURQ_FUZZ_TRACE` is set (to diagnose a
/// failing input; never set while fuzzing).
macro_rules! trace {
    ($($arg:tt)*) => {
        if trace_on() {
            eprintln!($($arg)*);
        }
    };
}

fn trace_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("DURQ_FUZZ_TRACE").is_some())
}

// Known bug 4: journal entries of a generation newer than every snapshot (a
// crafted journal, or one whose newest snapshot was lost to a damaged slot)
// are ignored at open, and become valid as soon as a snapshot of that
// generation is written (the clamp of a position past the end, a seek, a
// journal fold): the client's position jumps forward to whatever they say,
// skipping messages never acknowledged. Stepped around by not checking a
// forward jump of clients given a crafted journal.

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// The fuzz targets, by name, with their bodies (for the corpus replay).
pub const TARGETS: &[(&str, Body)] = &[
    ("decode_record", decode_record),
    ("open_dir", open_dir),
    ("crash_run", crash_run),
];

// ---------------------------------------------------------------------------
// crash_run
// ---------------------------------------------------------------------------

/// The seeded crash runner (`tests/support/crash_runner.rs`) with its
/// operations, crash points and faults taken from the input: panics when an
/// invariant is violated (durq panicking inside is a crash too).
pub fn crash_run(data: &[u8]) {
    if let Err(violation) = crate::crash_runner::run_from_bytes(data) {
        panic!("crash-consistency invariant violated: {violation}");
    }
}

// ---------------------------------------------------------------------------
// decode_record
// ---------------------------------------------------------------------------

/// Decoders of every on-disk structure on arbitrary bytes, plus round trips.
///
/// Never a panic; anything a decoder accepts is canonical (encoding the
/// decoded value gives back the very bytes); encode-then-decode gives back
/// what was encoded; any single-bit flip of an encoded structure is rejected
/// (within the bytes its checksum covers).
pub fn decode_record(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let salt: u64 = u.arbitrary().unwrap_or(0);
    let pos = usize::from(u.arbitrary::<u16>().unwrap_or(0));
    let room = match u.arbitrary::<u8>().unwrap_or(0) {
        0 => usize::MAX,
        1 => u.arbitrary::<usize>().unwrap_or(0),
        n => usize::from(n),
    };
    let round_trip_input = u.arbitrary::<&[u8]>().unwrap_or(&[]);
    let raw = u.take_rest();

    decode_arbitrary(raw, pos, room, salt);
    round_trips(round_trip_input);
}

fn decode_arbitrary(raw: &[u8], pos: usize, room: usize, salt: u64) {
    // One record at an arbitrary position (often out of range).
    if let Ok(d) = record::decode(raw, pos, salt) {
        check_canonical_record(raw, pos, salt, &d);
    }
    // The header parser alone, with an arbitrary room.
    let at = pos.min(raw.len());
    if let Ok(h) = record::parse_header(&raw[at..], room) {
        assert!(h.encoded_len() <= room);
        assert!(raw.len() - at >= RECORD_HEADER_LEN);
        let seed = record::salt_seed(salt);
        if let Some(whole) = raw.get(at..at + h.encoded_len()) {
            // The one-pass and the split checks agree on arbitrary bytes.
            let split = record::check_split(
                &h,
                seed,
                &whole[..RECORD_HEADER_LEN],
                &whole[RECORD_HEADER_LEN..],
            );
            assert_eq!(record::check(&h, seed, whole), split);
        }
        let _ = (h.encoded_len(), h.is_lost(), h.is_end_of_write());
    }
    // Every aligned position, as a scan of a segment would try them; both
    // the salt given and the salt read from a segment header in the bytes.
    let header_salt = SegmentHeader::decode(raw).map(|h| h.salt).ok();
    for salt in [Some(salt), header_salt].into_iter().flatten() {
        let mut p = 0;
        while p < raw.len() {
            match record::decode(raw, p, salt) {
                Ok(d) => {
                    check_canonical_record(raw, p, salt, &d);
                    p += d.header.encoded_len();
                }
                Err(why) => {
                    let _ = why.describe();
                    p += RECORD_ALIGN;
                }
            }
        }
    }
    // Segment header.
    match SegmentHeader::decode(raw) {
        Ok(h) => {
            assert_eq!(&h.encode()[..], &raw[..SEGMENT_HEADER_LEN], "not canonical");
            assert!(h.segment_size >= SEGMENT_HEADER_LEN as u64);
        }
        Err(BadSegmentHeader::Version(v)) => assert_ne!(v, record::FORMAT_VERSION),
        Err(_) => {}
    }
    // Cursor snapshot: the whole input and its first 64 bytes.
    for b in [raw, &raw[..raw.len().min(SNAPSHOT_LEN)]] {
        if let Ok(s) = Snapshot::decode(b) {
            assert_eq!(&s.encode()[..], b, "snapshot decode is not canonical");
        }
    }
    // Journal entries: every 32-byte chunk, and the whole input.
    let _ = cursor::decode_entry(raw);
    for chunk in raw.chunks(JOURNAL_ENTRY_LEN) {
        if let Some((generation, acked)) = cursor::decode_entry(chunk) {
            assert_eq!(&cursor::encode_entry(generation, acked)[..], chunk);
        }
    }
    // Durable-end hint.
    if let Some(end) = names::decode_end_hint(raw) {
        assert_eq!(names::encode_end_hint(end)[..12], raw[..12]);
    }
    // File names.
    let text = String::from_utf8_lossy(&raw[..raw.len().min(96)]);
    if let Some((base, seq)) = names::parse_segment_file_name(&text) {
        assert_eq!(names::segment_file_name(base, seq), text);
        assert_eq!(names::parse_format1_segment_file_name(&text), None);
    }
    if let Some(base) = names::parse_format1_segment_file_name(&text) {
        assert_eq!(format!("{base:020}{}", names::SEGMENT_SUFFIX), text);
    }
    if names::validate_client_name(&text).is_ok() {
        assert!(!text.is_empty() && !text.contains('/') && !text.starts_with('.'));
    }
}

/// A record `decode` accepted is exactly what `encode_into` writes.
fn check_canonical_record(raw: &[u8], pos: usize, salt: u64, d: &record::Decoded) {
    assert_eq!(d.payload_start, pos + RECORD_HEADER_LEN);
    let end = pos + d.header.encoded_len();
    assert!(end <= raw.len());
    let whole = &raw[pos..end];
    record::check(&d.header, record::salt_seed(salt), whole)
        .expect("decode accepted what check rejects");
    let payload = &raw[d.payload_start..d.payload_end()];
    let mut again = Vec::new();
    record::encode_into(
        &mut again,
        salt,
        d.header.offset,
        d.header.flags,
        payload,
        &record::payload_hasher(payload),
    );
    assert_eq!(&again[..], whole, "decoded record is not canonical");
}

/// Whether a difference of `x` in 64 bits is a burst of at most 32 bits,
/// which CRC-32 always detects.
fn short_burst(x: u64) -> bool {
    x != 0 && 64 - x.leading_zeros() - x.trailing_zeros() <= 32
}

fn round_trips(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let salt: u64 = u.arbitrary().unwrap_or(0);
    let other_salt: u64 = u.arbitrary().unwrap_or(1);
    let offset: u64 = u.arbitrary().unwrap_or(0);
    let flags = u32::from(u.arbitrary::<u8>().unwrap_or(0)) & (FLAG_END_OF_WRITE | FLAG_LOST);
    let prefix_words = usize::from(u.arbitrary::<u8>().unwrap_or(0) % 8);
    let flip: u32 = u.arbitrary().unwrap_or(0);
    let trailing = usize::from(u.arbitrary::<u8>().unwrap_or(0));
    let payload = u.take_rest();

    // Record: encode at an aligned position after some junk, decode back.
    let mut buf: Vec<u8> = (0..prefix_words * RECORD_ALIGN)
        .map(|i| i as u8 ^ 0xA5)
        .collect();
    let h = record::payload_hasher(payload);
    let start = record::encode_into(&mut buf, salt, offset, flags, payload, &h);
    assert_eq!(start, prefix_words * RECORD_ALIGN);
    assert_eq!(buf.len(), start + record::encoded_len(payload.len()));
    assert_eq!(buf.len() % RECORD_ALIGN, 0);
    let end = buf.len();
    buf.extend((0..trailing).map(|i| i as u8));
    let d = record::decode(&buf, start, salt).expect("an encoded record decodes");
    assert_eq!(d.header.offset, offset);
    assert_eq!(d.header.flags, flags);
    assert_eq!(d.header.len as usize, payload.len());
    assert_eq!(&buf[d.payload_start..d.payload_end()], payload);
    assert_eq!(d.header.encoded_len(), end - start);

    // Any single-bit flip in the record, padding included, is rejected. All
    // header bits every time; one payload or padding bit chosen by the input.
    let covered = end - start;
    let mut bits: Vec<usize> = (0..RECORD_HEADER_LEN * 8).collect();
    bits.push(flip as usize % (covered * 8));
    for bit in bits {
        let mut b = buf.clone();
        b[start + bit / 8] ^= 1 << (bit % 8);
        assert!(
            record::decode(&b, start, salt).is_err(),
            "flip of bit {bit} of a record (payload {} bytes) went unnoticed",
            payload.len()
        );
    }
    // Bound to its segment: another salt differing in a burst of at most 32
    // bits is always detected (longer differences collide with 2^-32).
    if short_burst(salt ^ other_salt) {
        assert_eq!(
            record::decode(&buf, start, other_salt),
            Err(Invalid::Checksum)
        );
    }
    // Rewriting the flags keeps it valid.
    let new_flags = flags ^ FLAG_END_OF_WRITE;
    record::set_flags(&mut buf, start, salt, new_flags, &h);
    let d = record::decode(&buf, start, salt).expect("set_flags keeps the record valid");
    assert_eq!(d.header.flags, new_flags);

    // Segment header. Base offsets and sequence numbers at or above
    // MAX_COUNTER are corrupt by definition.
    let sh = SegmentHeader {
        base_offset: offset % record::MAX_COUNTER,
        seq: u64::from(flip),
        salt,
        segment_size: other_salt,
    };
    let enc = sh.encode();
    let out_of_range = SegmentHeader {
        base_offset: record::MAX_COUNTER | offset,
        ..sh
    };
    assert!(SegmentHeader::decode(&out_of_range.encode()).is_err());
    if sh.segment_size >= SEGMENT_HEADER_LEN as u64
        && sh.segment_size.is_multiple_of(RECORD_ALIGN as u64)
    {
        assert_eq!(SegmentHeader::decode(&enc), Ok(sh));
        let bit = flip as usize % (SEGMENT_HEADER_LEN * 8);
        let mut b = enc;
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(
            SegmentHeader::decode(&b).is_err(),
            "flip of bit {bit} of a segment header went unnoticed"
        );
    } else {
        assert!(matches!(
            SegmentHeader::decode(&enc),
            Err(BadSegmentHeader::Corrupt(_))
        ));
    }

    // Cursor snapshot.
    let snap = Snapshot {
        generation: salt % record::MAX_COUNTER,
        acked: offset % record::MAX_POSITION,
    };
    let enc = snap.encode();
    assert!(
        Snapshot::decode(
            &Snapshot {
                generation: record::MAX_COUNTER | salt,
                ..snap
            }
            .encode()
        )
        .is_err()
    );
    assert_eq!(Snapshot::decode(&enc), Ok(snap));
    let bit = flip as usize % (SNAPSHOT_LEN * 8);
    let mut b = enc;
    b[bit / 8] ^= 1 << (bit % 8);
    assert!(
        Snapshot::decode(&b).is_err(),
        "flip of bit {bit} of a snapshot went unnoticed"
    );

    // Journal entry.
    let (entry_generation, entry_position) =
        (salt % record::MAX_COUNTER, offset % record::MAX_POSITION);
    let e = cursor::encode_entry(entry_generation, entry_position);
    assert_eq!(
        cursor::decode_entry(&e),
        Some((entry_generation, entry_position))
    );
    assert_eq!(
        cursor::decode_entry(&cursor::encode_entry(record::MAX_COUNTER | salt, offset)),
        None
    );
    let bit = flip as usize % (JOURNAL_ENTRY_LEN * 8);
    let mut b = e;
    b[bit / 8] ^= 1 << (bit % 8);
    assert_eq!(
        cursor::decode_entry(&b),
        None,
        "flip of bit {bit} of a journal entry went unnoticed"
    );

    // Durable-end hint: bytes 0..12 are checked, 12..16 are reserved.
    let hint = names::encode_end_hint(offset);
    assert_eq!(names::decode_end_hint(&hint), Some(offset));
    let bit = flip as usize % (12 * 8);
    let mut b = hint;
    b[bit / 8] ^= 1 << (bit % 8);
    assert_eq!(names::decode_end_hint(&b), None);

    // Segment file names.
    let name = names::segment_file_name(offset, salt);
    assert_eq!(names::parse_segment_file_name(&name), Some((offset, salt)));
    assert_eq!(names::parse_format1_segment_file_name(&name), None);
}

// ---------------------------------------------------------------------------
// open_dir
// ---------------------------------------------------------------------------

/// The log directory on the simulated disk.
pub const DIR: &str = "/db";

/// Client names the directory builder picks from (plus arbitrary ones).
const CLIENT_NAMES: &[&str] = &["a", "billing", "x.y-z_9", ".hidden", "a b", "c"];

/// Takes up to `n` bytes (fewer if the input runs out).
fn take<'a>(u: &mut Unstructured<'a>, n: usize) -> &'a [u8] {
    let n = n.min(u.len());
    u.bytes(n).unwrap_or(&[])
}

fn small(u: &mut Unstructured<'_>, max: u64) -> u64 {
    u.int_in_range(0..=max).unwrap_or(0)
}

/// A u64 that is usually small, sometimes anything, sometimes near the top.
fn offset_like(u: &mut Unstructured<'_>) -> u64 {
    match small(u, 7) {
        0 => u.arbitrary().unwrap_or(0),
        // Just past u64's end, or just below the format's limit (valid, but
        // with no room left to count up).
        1 if u.ratio(1, 2).unwrap_or(false) => record::MAX_COUNTER - 1 - small(u, 4),
        1 => u64::MAX - small(u, 64),
        2 => 0,
        _ => small(u, 200),
    }
}

/// The sequence number of the log's last segment, from the listings of
/// the groups (`Log::segments` reads every sealed segment's header and
/// fails on a damaged one, which says nothing about the last segment's
/// number).
fn last_seq(disk: &SimDisk) -> u64 {
    use durq::storage::Storage;
    let dir = std::path::Path::new(DIR);
    disk.list_dir(dir)
        .unwrap_or_default()
        .iter()
        .filter(|n| names::parse_group_dir_name(n).is_some())
        .flat_map(|g| disk.list_dir(&dir.join(g)).unwrap_or_default())
        .filter_map(|n| names::parse_segment_file_name(&n))
        .map(|(_, seq)| seq)
        .max()
        .unwrap_or(0)
}

fn client_name(u: &mut Unstructured<'_>) -> String {
    let i = small(u, CLIENT_NAMES.len() as u64) as usize;
    if let Some(n) = CLIENT_NAMES.get(i) {
        return (*n).to_owned();
    }
    let len = small(u, 70) as usize;
    let s: String = String::from_utf8_lossy(take(u, len))
        .chars()
        .filter(|&c| c != '/' && c != '\0')
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "z".to_owned()
    } else {
        s
    }
}

/// The path of segment `base`/`seq` in the group whose name says `gbase`.
fn seg_path(gbase: u64, base: u64, seq: u64) -> String {
    format!(
        "{}/{}",
        group_path(gbase, names::group_of(seq)),
        names::segment_file_name(base, seq)
    )
}

fn group_path(gbase: u64, group: u64) -> String {
    format!("{DIR}/{}", names::group_dir_name(gbase, group))
}

/// The base offset a group's name gives for a segment placed at `base`:
/// its own base when it starts the group, otherwise (retention removed the
/// group's first segments) usually something below it, sometimes anything.
fn group_base(u: &mut Unstructured<'_>, base: u64, seq: u64) -> u64 {
    if seq.is_multiple_of(names::SEGMENTS_PER_GROUP) && u.ratio(15, 16).unwrap_or(true) {
        return base;
    }
    match small(u, 7) {
        0 => offset_like(u),
        1 => base,
        _ => base.saturating_sub(small(u, 100)),
    }
}

fn client_path(name: &str, suffix: &str) -> String {
    format!("{DIR}/{}/{name}{suffix}", names::CLIENTS_DIR)
}

/// Appends records to `buf` (a segment being built, of final size `size`)
/// from `base` on; returns the number of records written.
fn add_records(
    u: &mut Unstructured<'_>,
    buf: &mut Vec<u8>,
    size: usize,
    salt: u64,
    base: u64,
    max_records: u64,
) -> u64 {
    let n = small(u, max_records);
    let mut written = 0u64;
    for i in 0..n {
        let len = match small(u, 7) {
            0 => small(u, 600) as usize,
            _ => small(u, 40) as usize,
        };
        let payload = take(u, len).to_vec();
        if buf.len() + record::encoded_len(payload.len()) > size {
            break;
        }
        let Some(mut offset) = base.checked_add(written) else {
            break;
        };
        let mut flags = if i + 1 == n || u.ratio(1, 3).unwrap_or(false) {
            FLAG_END_OF_WRITE
        } else {
            0
        };
        match small(u, 31) {
            0 => offset = offset_like(u),
            1 => flags |= FLAG_LOST,
            2 => flags = u.arbitrary().unwrap_or(0),
            _ => {}
        }
        let (payload, flags) = if flags & FLAG_LOST != 0 && u.ratio(3, 4).unwrap_or(true) {
            (Vec::new(), flags)
        } else {
            (payload, flags)
        };
        record::encode_into(
            buf,
            salt,
            offset,
            flags,
            &payload,
            &record::payload_hasher(&payload),
        );
        written += 1;
    }
    written
}

fn segment_bytes(base: u64, seq: u64, salt: u64, size: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(size);
    buf.extend_from_slice(
        &SegmentHeader {
            base_offset: base,
            seq,
            salt,
            segment_size: size as u64,
        }
        .encode(),
    );
    buf
}

fn segment_size(u: &mut Unstructured<'_>) -> usize {
    match small(u, 7) {
        0 => SEGMENT_HEADER_LEN + RECORD_ALIGN * small(u, 8) as usize,
        1 => 4096,
        _ => SEGMENT_HEADER_LEN + RECORD_ALIGN * small(u, 1024) as usize,
    }
}

/// Leaves the torn remains of one more write at the end of `buf`.
fn add_torn_tail(u: &mut Unstructured<'_>, buf: &mut Vec<u8>, size: usize, salt: u64, next: u64) {
    let mut write = Vec::new();
    for _ in 0..1 + small(u, 4) {
        let len = small(u, 100) as usize;
        let payload = take(u, len).to_vec();
        let offset = next.wrapping_add(write.len() as u64 % 7);
        record::encode_into(
            &mut write,
            salt,
            offset,
            0,
            &payload,
            &record::payload_hasher(&payload),
        );
    }
    let room = size.saturating_sub(buf.len());
    let keep = small(u, write.len().min(room) as u64) as usize;
    match small(u, 2) {
        // A prefix of the write.
        0 => buf.extend_from_slice(&write[..keep]),
        // The write with a hole of zeros (a sector that never made it).
        1 => {
            let hole = small(u, keep as u64) as usize;
            let hole_end = (hole + 512).min(keep);
            buf.extend_from_slice(&write[..keep]);
            let at = buf.len() - keep;
            buf[at + hole..at + hole_end].fill(0);
        }
        // Garbage.
        _ => buf.extend_from_slice(take(u, keep)),
    }
}

/// Lays out a log directory on `disk` from the input: a chain of valid
/// segments (so that opening gets deep), crafted segments, cursor
/// snapshots, ack journals, junk, and damage to any of them.
fn build_dir(u: &mut Unstructured<'_>, disk: &SimDisk) {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut chain_end = 0u64;
    let mut steps = 0;
    while !u.is_empty() && steps < 24 {
        steps += 1;
        match small(u, 11) {
            // A chain of valid, contiguous segments.
            0..=2 => {
                let n = 1 + small(u, 3);
                let mut base = if u.ratio(3, 4).unwrap_or(true) {
                    0
                } else {
                    offset_like(u)
                };
                let seq0 = if u.ratio(3, 4).unwrap_or(true) {
                    small(u, 3)
                } else {
                    offset_like(u)
                };
                let mut gbase = None;
                for i in 0..n {
                    let size = segment_size(u);
                    let salt: u64 = u.arbitrary().unwrap_or(1);
                    let seq = seq0.wrapping_add(i);
                    let g = match gbase {
                        Some(g) if !seq.is_multiple_of(names::SEGMENTS_PER_GROUP) => g,
                        _ => group_base(u, base, seq),
                    };
                    gbase = Some(g);
                    let mut buf = segment_bytes(base, seq, salt, size);
                    let count = add_records(u, &mut buf, size, salt, base, 40);
                    let next = base.saturating_add(count);
                    if i + 1 == n && u.ratio(1, 3).unwrap_or(false) {
                        add_torn_tail(u, &mut buf, size, salt, next);
                    }
                    buf.resize(size, 0);
                    files.insert(seg_path(g, base, seq), buf);
                    base = next;
                }
                chain_end = base;
            }
            // One crafted segment with arbitrary header fields.
            3 => {
                let base = offset_like(u);
                let name_base = if u.ratio(7, 8).unwrap_or(true) {
                    base
                } else {
                    offset_like(u)
                };
                let size = segment_size(u);
                let salt: u64 = u.arbitrary().unwrap_or(0);
                let seq = offset_like(u);
                let name_seq = if u.ratio(7, 8).unwrap_or(true) {
                    seq
                } else {
                    offset_like(u)
                };
                let mut buf = segment_bytes(base, seq, salt, size);
                add_records(u, &mut buf, size, salt, base, 20);
                buf.resize(size, 0);
                let gbase = group_base(u, name_base, name_seq);
                let path = if u.ratio(15, 16).unwrap_or(true) {
                    seg_path(gbase, name_base, name_seq)
                } else {
                    // In a group its number does not belong to.
                    format!(
                        "{}/{}",
                        group_path(gbase, offset_like(u)),
                        names::segment_file_name(name_base, name_seq)
                    )
                };
                files.insert(path, buf);
            }
            // A cursor snapshot.
            4 | 5 => {
                let name = client_name(u);
                let generation = match small(u, 3) {
                    0 => u.arbitrary().unwrap_or(0),
                    _ => small(u, 5),
                };
                let acked = match small(u, 3) {
                    0 => offset_like(u),
                    _ => small(u, chain_end.saturating_add(3).min(1000)),
                };
                let slot = if u.ratio(7, 8).unwrap_or(true) {
                    generation % 2
                } else {
                    1 - generation % 2
                };
                let enc = Snapshot { generation, acked }.encode();
                files.insert(
                    client_path(&name, &format!("{}{slot}", cursor::CURSOR_SUFFIX)),
                    enc.to_vec(),
                );
            }
            // An ack journal.
            6 => {
                let name = client_name(u);
                let len = match small(u, 7) {
                    0 => small(u, 4096) as usize,
                    _ => JOURNAL_LEN as usize,
                };
                let mut j = vec![0u8; len];
                let generation = small(u, 5);
                for i in 0..small(u, 6) {
                    let at = if u.ratio(3, 4).unwrap_or(true) {
                        i as usize * JOURNAL_ENTRY_LEN
                    } else {
                        small(u, 2047) as usize * JOURNAL_ENTRY_LEN
                    };
                    let g = if u.ratio(3, 4).unwrap_or(true) {
                        generation
                    } else {
                        small(u, 5)
                    };
                    let acked = small(u, chain_end.saturating_add(3).min(1000));
                    let e = cursor::encode_entry(g, acked);
                    if at + JOURNAL_ENTRY_LEN <= j.len() {
                        j[at..at + JOURNAL_ENTRY_LEN].copy_from_slice(&e);
                    }
                }
                files.insert(client_path(&name, cursor::JOURNAL_SUFFIX), j);
            }
            // Junk files.
            7 => {
                let name = match small(u, 11) {
                    0 => names::END_HINT_FILE.to_owned(),
                    1 => names::LOCK_FILE.to_owned(),
                    2 => "junk".to_owned(),
                    3 => format!("spare-1-0{}", names::TEMP_SUFFIX),
                    4 => format!(
                        "{}/{}{}",
                        names::CLIENTS_DIR,
                        client_name(u),
                        names::TEMP_SUFFIX
                    ),
                    5 => format!("{}/junk", names::CLIENTS_DIR),
                    6 if u.ratio(1, 4).unwrap_or(false) => {
                        // Named as format version 1 named segments.
                        format!("{:020}{}", offset_like(u), names::SEGMENT_SUFFIX)
                    }
                    6 => names::segment_file_name(offset_like(u), small(u, 3)),
                    7 => format!("{}/{}.cursor.7", names::CLIENTS_DIR, client_name(u)),
                    8 => format!("{}{}", names::segment_file_name(0, 0), names::TEMP_SUFFIX),
                    // Something else in a group directory.
                    9 => format!(
                        "{}/{}",
                        names::group_dir_name(offset_like(u), small(u, 3)),
                        match small(u, 2) {
                            0 => "junk".to_owned(),
                            1 => format!("spare-1-0{}", names::TEMP_SUFFIX),
                            _ => format!("{:020}{}", offset_like(u), names::SEGMENT_SUFFIX),
                        }
                    ),
                    10 => names::group_dir_name(offset_like(u), small(u, 3)),
                    _ => client_name(u),
                };
                let len = small(u, 300) as usize;
                files.insert(format!("{DIR}/{name}"), take(u, len).to_vec());
            }
            // Damage: xor bytes of an existing file.
            8 | 9 => {
                if files.is_empty() {
                    continue;
                }
                let i = small(u, files.len() as u64 - 1) as usize;
                if let Some(f) = files.values_mut().nth(i) {
                    for _ in 0..1 + small(u, 3) {
                        if f.is_empty() {
                            break;
                        }
                        let at = small(u, f.len() as u64 - 1) as usize;
                        let mask: u8 = u.arbitrary().unwrap_or(1);
                        f[at] ^= mask.max(1);
                    }
                }
            }
            // Truncate or extend an existing file.
            10 => {
                if files.is_empty() {
                    continue;
                }
                let i = small(u, files.len() as u64 - 1) as usize;
                if let Some(f) = files.values_mut().nth(i) {
                    let len = f.len() as u64;
                    let new_len = small(u, len + 64) as usize;
                    f.resize(new_len, 0);
                }
            }
            // A durable-end hint, valid or not.
            _ => {
                let hint = names::encode_end_hint(offset_like(u));
                files.insert(format!("{DIR}/{}", names::END_HINT_FILE), hint.to_vec());
            }
        }
    }
    for (path, bytes) in files {
        trace!("put {path} ({} bytes)", bytes.len());
        // A name may clash with a directory made for another file; skip it.
        let _ = disk.put_file(&path, &bytes);
    }
    if u.ratio(1, 16).unwrap_or(false) {
        // A directory where a segment file belongs.
        let _ = disk.put_file(format!("{}/inner", seg_path(0, small(u, 3), 0)), b"x");
    }
}

/// Open options from the input; the flag says whether retention may delete
/// segments by size (so a record just appended may already be gone).
fn options(u: &mut Unstructured<'_>, disk: &SimDisk) -> (Options, bool) {
    let size = match small(u, 3) {
        0 => 8192,
        1 => 65536,
        _ => 4096,
    };
    let retention = match small(u, 7) {
        0 => Retention::acked_by_all(),
        1 => Retention::max_bytes(small(u, 3) * 4096),
        _ => Retention::keep_all(),
    };
    let opts = Options::new()
        .storage(Arc::new(disk.clone()))
        .background_preallocation(false)
        .segment_size(size)
        .open_segments(1 + small(u, 3) as usize)
        .retention(retention);
    (opts, retention.size_bound().is_some())
}

/// Opens a directory laid out from the input on a simulated disk.
///
/// Never a panic. Either open fails with an error, or the log is usable:
/// every record can be iterated (or fails with an error), reads agree with
/// the iterator, clients deliver and acknowledge, a new record can be
/// appended and read back unless the log reports poisoning, and after a
/// crash (process or power loss) the reopened log still holds the appended
/// records and the acknowledged positions, and a further reopen finds
/// nothing more to repair.
pub fn open_dir(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let disk = SimDisk::new(u.arbitrary().unwrap_or(0));
    let (opts, size_bound) = options(&mut u, &disk);
    trace!("options: {opts:?}");
    build_dir(&mut u, &disk);
    let log = match opts.open(DIR) {
        Ok(log) => log,
        Err(e) => {
            trace!("open failed: {e}");
            return;
        }
    };
    trace!("opened: {:?}", log.recovery_report());
    exercise(&mut u, &disk, &opts, size_bound, log);
}

fn exercise(u: &mut Unstructured<'_>, disk: &SimDisk, opts: &Options, size_bound: bool, log: Log) {
    let end = log.end();
    let first = log.first_offset();
    assert!(first <= end, "first offset {first} past the end {end}");
    let report = log.recovery_report().clone();
    let _ = format!("{report:?} {log:?}");
    assert_eq!(report.end_offset, end);
    assert!(log.poisoned().is_none(), "a freshly opened log is poisoned");

    // The directory is locked.
    assert!(matches!(opts.open(DIR), Err(Error::Locked { .. })));

    // Segments are ordered and cover first..end. Listing them reads every
    // sealed segment's header, which open does not: a bad one is an error
    // naming a segment file.
    match log.segments() {
        Ok(segs) => {
            assert!(!segs.is_empty());
            assert_eq!(segs[0].first_offset, first);
            for w in segs.windows(2) {
                assert!(w[0].first_offset <= w[1].first_offset);
            }
        }
        Err(e) => {
            // It names a segment file or a group directory.
            let msg = e.to_string();
            assert!(
                msg.contains(names::SEGMENT_SUFFIX) || msg.contains(names::GROUP_SUFFIX),
                "{msg}"
            );
        }
    }

    // Iterate everything; reads agree with the iterator.
    let mut last: Option<u64> = None;
    for item in log.iter(0).take(20_000) {
        match item {
            Ok((off, rec)) => {
                assert!(
                    off >= first && off < end,
                    "iterated {off} outside {first}..{end}"
                );
                assert!(last.is_none_or(|l| off > l), "offsets not increasing");
                last = Some(off);
                match log.read(off) {
                    Ok(Some(again)) => assert_eq!(&again[..], &rec[..]),
                    Ok(None) => panic!("read({off}) is None but the iterator yielded it"),
                    Err(_) => {}
                }
            }
            Err(Error::Lost { offset, .. }) => {
                assert!(offset >= first && offset < end);
                last = Some(offset);
            }
            Err(_) => {}
        }
    }
    assert!(matches!(log.read(end), Ok(None)));
    assert!(matches!(log.read(u64::MAX), Ok(None)));
    if end > first {
        let _ = log.read(first + small(u, end - first - 1));
    }

    // Clients: positions are never past the end; each delivers and acks.
    let infos = log.consumers().expect("listing clients");
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut consumers = Vec::new();
    for info in &infos {
        assert!(
            info.acked <= end,
            "client {} acked {} past the end {end}",
            info.name,
            info.acked
        );
        let c = log
            .consumer(&info.name)
            .expect("a listed client has a usable handle");
        consumers.push(c);
    }
    for name in CLIENT_NAMES.iter().take(2) {
        if let Ok(c) = log.consumer(name)
            && !consumers.iter().any(|k| k.name() == c.name())
        {
            consumers.push(c);
        }
    }
    // Clients whose cursor is unusable can be removed and created again.
    for repair in &report.cursors {
        if u.ratio(1, 2).unwrap_or(false)
            && !infos.iter().any(|i| i.name == repair.client)
            && let Ok(true) = log.remove_consumer(&repair.client)
        {
            consumers.push(
                log.consumer(&repair.client)
                    .expect("a removed client can be created again"),
            );
        }
    }
    for c in &consumers {
        // A handle of a client removed (and created again) above.
        for _ in 0..small(u, 4) {
            match c.next() {
                Ok(Some(m)) => {
                    let off = m.offset();
                    assert!(off < log.end());
                    if let Ok(Some(r)) = log.read(off) {
                        assert_eq!(&r[..], m.payload());
                    }
                    if u.ratio(1, 8).unwrap_or(false) {
                        m.nack();
                        continue;
                    }
                    trace!("{}: ack {off}", c.name());
                    m.ack().expect("ack on a healthy disk");
                }
                Ok(None) => break,
                Err(_) => break,
            }
        }
        if u.ratio(1, 8).unwrap_or(false) {
            let to = small(u, end + 1);
            let r = c.seek(to);
            trace!("{}: seek {to}: {r:?}", c.name());
        }
        trace!("{}: acked {}", c.name(), c.acked());
        acked.insert(c.name().to_owned(), c.acked());
    }

    // Append and read back.
    let mut appended: Vec<(u64, Vec<u8>)> = Vec::new();
    for _ in 0..1 + small(u, 2) {
        let n = 1 + small(u, 3) as usize;
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let len = match small(u, 3) {
                    0 => small(u, 3000) as usize,
                    _ => small(u, 50) as usize,
                };
                let mut p = take(u, len).to_vec();
                p.push(i as u8);
                p
            })
            .collect();
        let before = log.end();
        let r = log.append_batch(&batch);
        trace!("append_batch of {n}: {r:?}");
        match r {
            Ok(range) => {
                assert_eq!(range.start, before, "append did not start at the end");
                assert_eq!(range.end - range.start, n as u64);
                assert_eq!(log.end(), range.end);
                for (off, p) in range.zip(batch) {
                    let back = log.read(off).expect("reading an appended record");
                    if size_bound && back.is_none() {
                        continue;
                    }
                    assert_eq!(
                        back.as_deref(),
                        Some(&p[..]),
                        "record {off} read back wrong"
                    );
                    appended.push((off, p));
                }
            }
            // The offset space, and that of segment sequence numbers, ends
            // below MAX_COUNTER: a crafted log near either limit refuses
            // appends cleanly.
            Err(durq::Error::InvalidArgument(_))
                if log.end() + n as u64 >= record::MAX_COUNTER
                    || last_seq(disk) + n as u64 + 1 >= record::MAX_COUNTER => {}
            Err(e) => {
                assert!(
                    log.poisoned().is_some(),
                    "append failed without poisoning the log: {e}"
                );
                break;
            }
        }
    }
    let end_after = log.end();
    drop(consumers);
    drop(log);

    // Crash and reopen: what returned is still there.
    let power = u.ratio(1, 2).unwrap_or(false);
    trace!("crash (power loss: {power})");
    if power {
        disk.power_loss_with(if u.ratio(1, 2).unwrap_or(false) {
            LossMode::DropAll
        } else {
            LossMode::Random
        });
    } else {
        disk.process_crash();
    }
    let log = opts
        .open(DIR)
        .unwrap_or_else(|e| panic!("reopen after a successful open failed: {e}"));
    assert!(
        log.end() >= end_after,
        "end went back from {end_after} to {}",
        log.end()
    );
    let first = log.first_offset();
    for (off, p) in &appended {
        if *off < first {
            continue; // deleted by retention
        }
        let back = log
            .read(*off)
            .unwrap_or_else(|e| panic!("appended record {off} unreadable after a crash: {e}"));
        assert_eq!(back.as_deref(), Some(&p[..]), "appended record {off} lost");
    }
    let infos = log.consumers().expect("listing clients");
    trace!("reopened: {:?}\nclients: {infos:?}", log.recovery_report());
    for (name, pos) in &acked {
        if let Some(info) = infos.iter().find(|i| &i.name == name) {
            // Acks were contiguous and each returned only once durable, and
            // a seek is durable on return: the position is exactly that
            // (lower: acks lost; higher: unacknowledged messages skipped).
            assert!(
                info.acked == *pos,
                "client {name}: durable position {pos}, found {} after a crash",
                info.acked
            );
        } else {
            panic!("client {name} vanished after a crash");
        }
    }
    let end2 = log.end();
    drop(log);

    // Recovery is done: a further reopen repairs nothing more.
    disk.process_crash();
    let log = opts.open(DIR).expect("third open");
    assert_eq!(log.end(), end2);
    assert!(
        log.recovery_report().torn_tail.is_none(),
        "second recovery found a torn tail again: {:?}",
        log.recovery_report()
    );
}
