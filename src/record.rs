//! Encoding and decoding of one record and of a segment header.
//!
//! Pure functions over byte slices, no I/O, so they can be fuzzed directly.
//! The layout is specified in `docs/format.md`; this module is its code.
//!
//! A record is a 24-byte header followed by the payload, padded with zeros to
//! a multiple of 8 bytes; every record starts 8-byte aligned.
//!
//! ```text
//! 0      4      8      12     16             24
//! +------+------+------+------+--------------+---------------- - - -+-----+
//! |magic | crc  | len  |flags |   offset     | payload (len bytes)    | pad |
//! +------+------+------+------+--------------+---------------- - - -+-----+
//!               |<------------- covered by crc ------------------------->|
//! ```
//!
//! `crc` is CRC-32 (IEEE, `crc32fast`) over the segment's 8-byte salt
//! followed by the record's bytes from byte 8 to its padded end: one
//! contiguous span, so a reader checks a record in one pass over the bytes
//! as they lie in the segment. The non-zero magic means an all-zero region
//! never parses as a record (the magic itself is compared exactly, so the
//! checksum need not cover it); the salt binds a record to its segment and
//! the offset field binds it to its place in the log.

/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 24;
/// Records start at multiples of this many bytes within a segment.
pub const RECORD_ALIGN: usize = 8;
/// The first four bytes of every record (little-endian `u32`).
pub const RECORD_MAGIC: u32 = 0xD1A9_5EC7;
/// Flag: this record is the last one of a write call (a group-commit batch).
pub const FLAG_END_OF_WRITE: u32 = 1;
/// Flag: a placeholder for a record that was lost to damage and set aside
/// by an explicit salvage (`durq recover --salvage`). Its payload is empty;
/// reading it is [`crate::Error::Lost`].
pub const FLAG_LOST: u32 = 2;
const KNOWN_FLAGS: u32 = FLAG_END_OF_WRITE | FLAG_LOST;

/// Bytes of a segment header; the first record starts right after it.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x89DURQ\r\n\x1a";
/// The segment format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 3;

/// Where the checksummed span of a record starts (after magic and crc).
pub const CRC_SPAN_START: usize = 8;

/// The largest payload any durq log accepts (a log with smaller segments has
/// a smaller limit: a record must fit in one segment).
pub const MAX_RECORD_BYTES: usize = (1 << 30) - 4096;

/// Segment base offsets, segment sequence numbers and cursor generations
/// are below this bound (2^62), and appends stop with an error before an
/// offset reaches it: a header or cursor carrying a larger value is corrupt.
/// It keeps every `+ 1` on them far from overflow.
pub const MAX_COUNTER: u64 = 1 << 62;

/// Record offsets and client positions are below this bound (2^63): a
/// segment based below [`MAX_COUNTER`] cannot hold enough records to reach
/// it, whatever its contents.
pub const MAX_POSITION: u64 = 1 << 63;

/// Rounds `n` up to the record alignment.
#[inline]
pub const fn align_up(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Total bytes a record with a payload of `payload_len` bytes occupies.
#[inline]
pub const fn encoded_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + align_up(payload_len)
}

/// A decoded record header (not yet checked against its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// The record's offset in the log.
    pub offset: u64,
    /// Flag bits.
    pub flags: u32,
    /// The stored checksum.
    pub crc: u32,
}

impl RecordHeader {
    /// Total bytes this record occupies in the segment.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.len as usize)
    }

    /// Whether the record is a placeholder for a record lost to damage.
    #[inline]
    pub fn is_lost(&self) -> bool {
        self.flags & FLAG_LOST != 0
    }

    /// Whether the record closes a write call.
    pub fn is_end_of_write(&self) -> bool {
        self.flags & FLAG_END_OF_WRITE != 0
    }
}

/// Why bytes at a position are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer than a header's bytes remain.
    Short,
    /// The magic does not match (for example zeros: the end of the log).
    Magic,
    /// Unknown flag bits are set.
    Flags,
    /// The length runs past the end of the segment.
    Length,
    /// The checksum does not match.
    Checksum,
}

impl Invalid {
    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            Invalid::Short => "truncated record header",
            Invalid::Magic => "bad record magic",
            Invalid::Flags => "unknown record flags",
            Invalid::Length => "record length runs past the end of the segment",
            Invalid::Checksum => "record checksum mismatch",
        }
    }
}

/// Parses the header at the start of `buf`. `room` is how many bytes remain
/// in the segment from the header's first byte; a length that does not fit
/// is rejected.
#[inline]
pub fn parse_header(buf: &[u8], room: usize) -> Result<RecordHeader, Invalid> {
    if buf.len() < RECORD_HEADER_LEN || room < RECORD_HEADER_LEN {
        return Err(Invalid::Short);
    }
    let magic = u32::from_le_bytes(word4(buf, 0));
    if magic != RECORD_MAGIC {
        return Err(Invalid::Magic);
    }
    let crc = u32::from_le_bytes(word4(buf, 4));
    let len = u32::from_le_bytes(word4(buf, 8));
    let flags = u32::from_le_bytes(word4(buf, 12));
    let offset = u64::from_le_bytes(word8(buf, 16));
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Invalid::Flags);
    }
    if encoded_len(len as usize) > room {
        return Err(Invalid::Length);
    }
    Ok(RecordHeader {
        len,
        offset,
        flags,
        crc,
    })
}

/// The checksum state a segment's salt gives: every record checksum in the
/// segment continues from it. Readers compute it once per segment.
pub fn salt_seed(salt: u64) -> u32 {
    crc32fast::hash(&salt.to_le_bytes())
}

/// Payloads up to this size are checksummed in one pass over the encoded
/// record; larger ones have their payload checksummed before the writer's
/// lock is taken and combined (`Hasher::combine` costs ~100 ns whatever the
/// size, so it only pays off for large payloads).
pub const INLINE_CRC_MAX: usize = 4096;

/// The checksum of an encoded record whose bytes from [`CRC_SPAN_START`] to
/// its padded end are `span`.
#[inline]
fn span_crc(seed: u32, span: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(span);
    h.finalize()
}

/// The checksum of a record from its covered header bytes, its payload's
/// own CRC state and its padding length (for payloads too large to hash
/// under the writer's lock).
fn combined_crc(seed: u32, header16: &[u8], payload: &crc32fast::Hasher, pad: usize) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(header16);
    h.combine(payload);
    h.update(&[0u8; RECORD_ALIGN][..pad]);
    h.finalize()
}

/// A CRC-32 state over `payload`, to be combined into a record checksum.
/// Computing it outside any lock keeps large payloads off the critical path.
pub fn payload_hasher(payload: &[u8]) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(payload);
    h
}

/// Checks a parsed header against the record's encoded bytes (`record` is
/// the whole record, header and padding included, `header.encoded_len()`
/// bytes), given the segment's [`salt_seed`].
#[inline]
pub fn check(header: &RecordHeader, seed: u32, record: &[u8]) -> Result<(), Invalid> {
    if record.len() != header.encoded_len() {
        return Err(Invalid::Length);
    }
    if crate::crc::update(seed, &record[CRC_SPAN_START..]) == header.crc {
        Ok(())
    } else {
        Err(Invalid::Checksum)
    }
}

/// [`check`] for a record read in two pieces: its 24 header bytes and its
/// body (payload and padding, `header.encoded_len() - 24` bytes).
pub fn check_split(
    header: &RecordHeader,
    seed: u32,
    header_bytes: &[u8],
    body: &[u8],
) -> Result<(), Invalid> {
    if header_bytes.len() != RECORD_HEADER_LEN
        || RECORD_HEADER_LEN + body.len() != header.encoded_len()
    {
        return Err(Invalid::Length);
    }
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    h.update(&header_bytes[CRC_SPAN_START..]);
    h.update(body);
    if h.finalize() == header.crc {
        Ok(())
    } else {
        Err(Invalid::Checksum)
    }
}

/// A fully checked record found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Its header.
    pub header: RecordHeader,
    /// Byte range of its payload within the buffer passed to [`decode`].
    pub payload_start: usize,
}

impl Decoded {
    /// End of the payload within the buffer.
    pub fn payload_end(&self) -> usize {
        self.payload_start + self.header.len as usize
    }
}

/// Decodes and fully checks the record starting at `pos` of `segment` (the
/// whole segment's bytes, header included).
pub fn decode(segment: &[u8], pos: usize, salt: u64) -> Result<Decoded, Invalid> {
    decode_seeded(segment, pos, salt_seed(salt))
}

/// [`decode`] with the segment's [`salt_seed`] computed once by the caller.
pub fn decode_seeded(segment: &[u8], pos: usize, seed: u32) -> Result<Decoded, Invalid> {
    if pos >= segment.len() {
        return Err(Invalid::Short);
    }
    let header = parse_header(&segment[pos..], segment.len() - pos)?;
    check(&header, seed, &segment[pos..pos + header.encoded_len()])?;
    Ok(Decoded {
        header,
        payload_start: pos + RECORD_HEADER_LEN,
    })
}

fn write_header(out: &mut [u8], crc: u32, len: u32, offset: u64, flags: u32) {
    out[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out[8..12].copy_from_slice(&len.to_le_bytes());
    out[12..16].copy_from_slice(&flags.to_le_bytes());
    out[16..24].copy_from_slice(&offset.to_le_bytes());
}

/// Fills in the checksum of the record encoded at `pos` of `buf`.
/// `payload_crc` is the payload's CRC state, used (instead of hashing the
/// bytes again) for payloads above [`INLINE_CRC_MAX`].
fn seal(buf: &mut [u8], pos: usize, salt: u64, payload_crc: &crc32fast::Hasher) {
    let len = u32::from_le_bytes(word4(buf, pos + 8)) as usize;
    let end = pos + encoded_len(len);
    let seed = salt_seed(salt);
    let crc = if len <= INLINE_CRC_MAX {
        span_crc(seed, &buf[pos + CRC_SPAN_START..end])
    } else {
        let pad = align_up(len) - len;
        combined_crc(
            seed,
            &buf[pos + CRC_SPAN_START..pos + RECORD_HEADER_LEN],
            payload_crc,
            pad,
        )
    };
    buf[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one encoded record to `out` (which must currently end at an
/// aligned position relative to the segment) and returns the position of its
/// header within `out`. `payload_crc` must be [`payload_hasher`] of the
/// payload when it is larger than [`INLINE_CRC_MAX`] (it is ignored
/// otherwise).
pub fn encode_into(
    out: &mut Vec<u8>,
    salt: u64,
    offset: u64,
    flags: u32,
    payload: &[u8],
    payload_crc: &crc32fast::Hasher,
) -> usize {
    debug_assert!(payload.len() <= MAX_RECORD_BYTES);
    let start = out.len();
    let mut header = [0u8; RECORD_HEADER_LEN];
    write_header(&mut header, 0, payload.len() as u32, offset, flags);
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out.resize(start + encoded_len(payload.len()), 0);
    seal(out, start, salt, payload_crc);
    start
}

/// Rewrites the flags (and so the checksum) of the record encoded at `pos`
/// in `buf`, given its payload's CRC state (as for [`encode_into`]).
pub fn set_flags(
    buf: &mut [u8],
    pos: usize,
    salt: u64,
    flags: u32,
    payload_crc: &crc32fast::Hasher,
) {
    buf[pos + 12..pos + 16].copy_from_slice(&flags.to_le_bytes());
    seal(buf, pos, salt, payload_crc);
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Offset of the segment's first record.
    pub base_offset: u64,
    /// Sequence number: each new segment's is one more than the previous.
    pub seq: u64,
    /// Random per-segment salt mixed into every record checksum.
    pub salt: u64,
    /// The file's total size in bytes.
    pub segment_size: u64,
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadSegmentHeader {
    /// Not a durq segment (wrong magic or too short).
    NotDurq(&'static str),
    /// Another format version.
    Version(u32),
    /// The header's checksum or fields are inconsistent.
    Corrupt(&'static str),
}

impl SegmentHeader {
    /// Encodes the header into its 64 bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.salt.to_le_bytes());
        b[40..48].copy_from_slice(&self.segment_size.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a segment header from the first bytes of a file.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, BadSegmentHeader> {
        if buf.len() < SEGMENT_HEADER_LEN {
            return Err(BadSegmentHeader::NotDurq(
                "file is shorter than a segment header",
            ));
        }
        if buf[0..8] != SEGMENT_MAGIC {
            return Err(BadSegmentHeader::NotDurq("bad segment magic"));
        }
        let stored_crc = u32::from_le_bytes(word4(buf, 60));
        let crc_ok = crc32fast::hash(&buf[0..60]) == stored_crc;
        let version = u32::from_le_bytes(word4(buf, 8));
        if version != FORMAT_VERSION {
            // A future version may lay out the rest differently; report the
            // version whether or not the rest checks out under our rules.
            return Err(BadSegmentHeader::Version(version));
        }
        if !crc_ok {
            return Err(BadSegmentHeader::Corrupt(
                "segment header checksum mismatch",
            ));
        }
        let header_len = u32::from_le_bytes(word4(buf, 12));
        if header_len as usize != SEGMENT_HEADER_LEN {
            return Err(BadSegmentHeader::Corrupt(
                "unexpected segment header length",
            ));
        }
        if buf[48..60].iter().any(|&b| b != 0) {
            return Err(BadSegmentHeader::Corrupt(
                "reserved header bytes are not zero",
            ));
        }
        let h = SegmentHeader {
            base_offset: u64::from_le_bytes(word8(buf, 16)),
            seq: u64::from_le_bytes(word8(buf, 24)),
            salt: u64::from_le_bytes(word8(buf, 32)),
            segment_size: u64::from_le_bytes(word8(buf, 40)),
        };
        if h.base_offset >= MAX_COUNTER || h.seq >= MAX_COUNTER {
            return Err(BadSegmentHeader::Corrupt(
                "base offset or sequence number out of range",
            ));
        }
        if h.segment_size < SEGMENT_HEADER_LEN as u64 {
            return Err(BadSegmentHeader::Corrupt(
                "segment size smaller than its header",
            ));
        }
        if !h.segment_size.is_multiple_of(RECORD_ALIGN as u64) {
            return Err(BadSegmentHeader::Corrupt(
                "segment size is not a multiple of the record alignment",
            ));
        }
        Ok(h)
    }
}

#[inline]
fn word4(buf: &[u8], at: usize) -> [u8; 4] {
    let mut w = [0u8; 4];
    w.copy_from_slice(&buf[at..at + 4]);
    w
}

#[inline]
fn word8(buf: &[u8], at: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&buf[at..at + 8]);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(salt: u64, offset: u64, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_into(
            &mut v,
            salt,
            offset,
            flags,
            payload,
            &payload_hasher(payload),
        );
        v
    }

    #[test]
    fn record_round_trips_and_is_aligned() {
        // Both checksum paths: one pass, and combined for large payloads.
        for len in [0usize, 1, 7, 8, 9, 100, 1000, INLINE_CRC_MAX + 1, 5003] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let buf = enc(42, 7, 0, &payload);
            assert_eq!(buf.len() % RECORD_ALIGN, 0);
            assert_eq!(buf.len(), encoded_len(len));
            let d = decode(&buf, 0, 42).unwrap();
            assert_eq!(d.header.offset, 7);
            assert_eq!(&buf[d.payload_start..d.payload_end()], &payload[..]);
        }
    }

    #[test]
    fn all_zero_region_never_parses_as_a_record() {
        let zeros = vec![0u8; 4096];
        for salt in [0u64, 1, u64::MAX] {
            assert_eq!(decode(&zeros, 0, salt), Err(Invalid::Magic));
        }
    }

    #[test]
    fn record_is_bound_to_salt_and_offset() {
        let buf = enc(1, 5, 0, b"hello");
        assert_eq!(decode(&buf, 0, 2), Err(Invalid::Checksum));
        let mut moved = buf.clone();
        moved[16..24].copy_from_slice(&6u64.to_le_bytes());
        assert_eq!(decode(&moved, 0, 1), Err(Invalid::Checksum));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        // 18 payload bytes and 6 of padding: every bit is covered.
        let buf = enc(99, 3, FLAG_END_OF_WRITE, b"some payload bytes");
        let used = encoded_len(18);
        for bit in 0..used * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&b, 0, 99).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn garbage_length_is_rejected_not_trusted() {
        let mut buf = enc(9, 0, 0, b"x");
        buf[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&buf, 0, 9), Err(Invalid::Length));
    }

    #[test]
    fn set_flags_keeps_the_record_valid() {
        let payload = b"abc";
        let mut buf = enc(5, 1, 0, payload);
        set_flags(&mut buf, 0, 5, FLAG_END_OF_WRITE, &payload_hasher(payload));
        let d = decode(&buf, 0, 5).unwrap();
        assert!(d.header.is_end_of_write());
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            base_offset: 10,
            seq: 2,
            salt: 77,
            segment_size: 1 << 20,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[20] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bad),
            Err(BadSegmentHeader::Corrupt(_))
        ));
        let mut future = b;
        future[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            SegmentHeader::decode(&future),
            Err(BadSegmentHeader::Version(FORMAT_VERSION + 1))
        );
        assert!(matches!(
            SegmentHeader::decode(&[0u8; 64]),
            Err(BadSegmentHeader::NotDurq(_))
        ));
        assert!(matches!(
            SegmentHeader::decode(b"short"),
            Err(BadSegmentHeader::NotDurq(_))
        ));
    }
}
