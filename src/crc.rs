//! CRC-32 (IEEE 802.3, the checksum `crc32fast` computes) for the reader's
//! record checks, with a faster path for short spans.
//!
//! A record with a 100-byte payload has a 120-byte checksummed span. For
//! spans under 128 bytes `crc32fast` folds one 16-byte block at a time, a
//! serial chain of carry-less multiplies; that chain was most of the cost of
//! a sequential scan. Here each block of a short span is instead multiplied
//! by its own constant (`x^(128·d)` for the block `d` blocks before the
//! last) and the products are XORed together, so the multiplies are
//! independent and overlap. The 128-bit sum is then reduced to 32 bits as
//! usual (fold to 64 bits, Barrett reduction).
//!
//! The result is bit-for-bit the value `crc32fast` computes: the tests
//! compare the two for every length from 0 to 300 bytes (so every number
//! of leading zero bytes the fold tree imagines), at 16 alignments and 5
//! seeds, on every single-bit message up to 200 bytes, and on random
//! inputs. The writer keeps using `crc32fast`, so a
//! flaw here could only make a reader report a checksum error, never make
//! the format drift.

/// The CRC-32 of `data` continued from the checksum `crc` (as
/// `crc32fast::Hasher::new_with_initial(crc)` followed by `update(data)`
/// and `finalize()`).
#[inline]
pub(crate) fn update(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = x86::short(crc, data) {
        return v;
    }
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(data);
    h.finalize()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64 as arch;

    /// The longest span taken by the fold tree: 8 blocks of 16 bytes.
    /// Longer spans go to `crc32fast`, whose four-stream loop is fast there.
    pub(super) const MAX_SHORT: usize = 128;

    /// Fold constants: entry `d` moves a 128-bit block `d` blocks (`128·d`
    /// bits) towards the end of the message. As is usual for the reflected
    /// CRC-32, the low 64 bits of a block are multiplied by
    /// `x^(128·d + 32) mod P` and the high 64 bits by `x^(128·d − 32) mod P`,
    /// each bit-reflected and shifted left by one. Entry 0 is unused (a block
    /// already at the end is not moved); entries 1 and 4 are the constants
    /// of the published fold-by-1 and fold-by-4 loops, which the tests check.
    pub(super) const FOLD: [(i64, i64); 8] = [
        (0, 0),
        (0x1_7519_97d0, 0x0_ccaa_009e),
        (0x0_f1da_05aa, 0x1_5a54_6366),
        (0x0_3db1_ecdc, 0x1_7435_9406),
        (0x1_5444_2bd4, 0x1_c6e4_1596),
        (0x1_c756_9e54, 0x0_ae0b_5394),
        (0x0_df06_8dc2, 0x1_8cb4_4e58),
        (0x1_ea89_367e, 0x1_d7cf_c6ac),
    ];
    /// `x^64 mod P`, reflected and shifted (reduces 96 bits to 64).
    const K_64: i64 = 0x1_63cd_6124;
    /// The CRC-32 polynomial, reflected (33 bits).
    const POLY: i64 = 0x1_db71_0641;
    /// `floor(x^64 / P)`, reflected (the Barrett constant).
    const MU: i64 = 0x1_f701_1641;

    /// The checksum of `data` continued from `crc`, when `data` is 16 to
    /// [`MAX_SHORT`] bytes and the CPU has the instructions; `None`
    /// otherwise.
    #[inline]
    pub(super) fn short(crc: u32, data: &[u8]) -> Option<u32> {
        if data.len() > MAX_SHORT
            || !std::arch::is_x86_feature_detected!("pclmulqdq")
            || !std::arch::is_x86_feature_detected!("sse4.1")
        {
            return None;
        }
        let head = data.first_chunk::<16>()?;
        // SAFETY: the CPU has both features the function enables (checked
        // just above).
        Some(unsafe { fold_tree(crc, head, data) })
    }

    /// `data` is 16 to 128 bytes and `head` is its first 16.
    ///
    /// The span is taken as `n` whole blocks by imagining `z` zero bytes in
    /// front of it. A CRC register starting at zero is unchanged by leading
    /// zeros, so that is exact once the starting value (`!crc`, which a
    /// reflected CRC XORs onto the first four message bytes) is placed at
    /// byte `z`, where the message really starts.
    #[target_feature(enable = "pclmulqdq", enable = "sse2", enable = "sse4.1")]
    fn fold_tree(crc: u32, head: &[u8; 16], data: &[u8]) -> u32 {
        let n = data.len().div_ceil(16);
        let z = n * 16 - data.len();
        let start = u128::from(!crc);
        // Bytes past the first block fall off the top of the shift.
        let first = (u128::from_le_bytes(*head) ^ start) << (8 * z);
        let first = arch::_mm_set_epi64x((first >> 64) as i64, first as i64);
        // With z > 12 the starting value straddles into the second block.
        let spill = if z > 12 {
            (start >> (8 * (16 - z))) as i64
        } else {
            0
        };
        let rest = &data[16 - z..];
        match n {
            1 => reduce(first),
            2 => tree::<2>(first, spill, rest),
            3 => tree::<3>(first, spill, rest),
            4 => tree::<4>(first, spill, rest),
            5 => tree::<5>(first, spill, rest),
            6 => tree::<6>(first, spill, rest),
            7 => tree::<7>(first, spill, rest),
            _ => tree::<8>(first, spill, rest),
        }
    }

    /// Folds `first` and the `N - 1` blocks of `rest` (whose first block
    /// also gets `spill` XORed into its low bytes) to one 128-bit block and
    /// reduces it. Written per `N` so the loop unrolls.
    #[inline]
    #[target_feature(enable = "pclmulqdq", enable = "sse2", enable = "sse4.1")]
    fn tree<const N: usize>(first: arch::__m128i, spill: i64, rest: &[u8]) -> u32 {
        let mut acc = shift(first, N - 1);
        let mut blocks = rest.chunks_exact(16);
        for d in (0..N - 1).rev() {
            let Some(block) = blocks.next() else {
                // Unreachable: `rest` holds N - 1 whole blocks.
                break;
            };
            // SAFETY: `block` is 16 readable bytes; the load is unaligned.
            let mut b = unsafe { arch::_mm_loadu_si128(block.as_ptr().cast()) };
            if d == N - 2 {
                b = arch::_mm_xor_si128(b, arch::_mm_set_epi64x(0, spill));
            }
            acc = arch::_mm_xor_si128(acc, shift(b, d));
        }
        reduce(acc)
    }

    /// Block `b` moved `d` blocks towards the end of the message (modulo P).
    #[inline]
    #[target_feature(enable = "pclmulqdq", enable = "sse2")]
    fn shift(b: arch::__m128i, d: usize) -> arch::__m128i {
        if d == 0 {
            return b;
        }
        let (lo, hi) = FOLD[d];
        let k = arch::_mm_set_epi64x(hi, lo);
        arch::_mm_xor_si128(
            arch::_mm_clmulepi64_si128(b, k, 0x00),
            arch::_mm_clmulepi64_si128(b, k, 0x11),
        )
    }

    /// The CRC-32 of a message whose folded last block is `x`: 128 bits to
    /// 96 (low half times `x^96`), to 64 (low word times `x^64`), then a
    /// Barrett reduction to the 32-bit remainder, inverted as CRC-32 ends.
    #[inline]
    #[target_feature(enable = "pclmulqdq", enable = "sse2", enable = "sse4.1")]
    fn reduce(x: arch::__m128i) -> u32 {
        let low32 = arch::_mm_set_epi32(0, 0, 0, -1);
        let x = arch::_mm_xor_si128(
            arch::_mm_clmulepi64_si128(x, arch::_mm_set_epi64x(FOLD[1].1, 0), 0x10),
            arch::_mm_srli_si128(x, 8),
        );
        let x = arch::_mm_xor_si128(
            arch::_mm_clmulepi64_si128(
                arch::_mm_and_si128(x, low32),
                arch::_mm_set_epi64x(0, K_64),
                0x00,
            ),
            arch::_mm_srli_si128(x, 4),
        );
        let t1 = arch::_mm_clmulepi64_si128(
            arch::_mm_and_si128(x, low32),
            arch::_mm_set_epi64x(MU, 0),
            0x10,
        );
        let t2 = arch::_mm_clmulepi64_si128(
            arch::_mm_and_si128(t1, low32),
            arch::_mm_set_epi64x(0, POLY),
            0x00,
        );
        !(arch::_mm_extract_epi32(arch::_mm_xor_si128(x, t2), 1) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::update;

    fn reference(crc: u32, data: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new_with_initial(crc);
        h.update(data);
        h.finalize()
    }

    /// Deterministic pseudo-random bytes (a 64-bit LCG's high bits).
    fn bytes(n: usize, mut s: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 33) as u8
            })
            .collect()
    }

    /// `x^n mod P` in the plain (not reflected) representation.
    #[cfg(target_arch = "x86_64")]
    fn x_pow_mod(n: u32) -> u64 {
        const P: u64 = 0x1_04c1_1db7;
        let mut r: u64 = 1;
        for _ in 0..n {
            r <<= 1;
            if r & (1 << 32) != 0 {
                r ^= P;
            }
        }
        r
    }

    #[cfg(target_arch = "x86_64")]
    fn reflected(n: u32) -> i64 {
        (i64::from((x_pow_mod(n) as u32).reverse_bits())) << 1
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fold_constants_are_the_powers_of_x_they_claim() {
        for (d, &(lo, hi)) in super::x86::FOLD.iter().enumerate().skip(1) {
            let bits = 128 * d as u32;
            assert_eq!(lo, reflected(bits + 32), "low constant for d = {d}");
            assert_eq!(hi, reflected(bits - 32), "high constant for d = {d}");
        }
        // The published fold-by-1 (K3, K4) and fold-by-4 (K1, K2) constants.
        assert_eq!(super::x86::FOLD[1], (0x1751997d0, 0x0ccaa009e));
        assert_eq!(super::x86::FOLD[4], (0x154442bd4, 0x1c6e41596));
    }

    #[test]
    fn matches_crc32fast_at_every_length_seed_and_alignment() {
        let data = bytes(300 + 16, 7);
        let seeds = [0, 1, 0x8000_0000, 0xdead_beef, u32::MAX];
        for len in 0..=300 {
            for align in 0..16 {
                let d = &data[align..align + len];
                for seed in seeds {
                    assert_eq!(
                        update(seed, d),
                        reference(seed, d),
                        "len {len}, align {align}, seed {seed:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_crc32fast_on_special_bytes() {
        for len in 0..=200 {
            for fill in [0x00u8, 0xff, 0x80, 0x01] {
                let d = vec![fill; len];
                assert_eq!(update(0x1234_5678, &d), reference(0x1234_5678, &d));
            }
            // A single set bit at every position of the span.
            for bit in 0..len * 8 {
                let mut d = vec![0u8; len];
                d[bit / 8] = 1 << (bit % 8);
                assert_eq!(update(0, &d), reference(0, &d), "len {len} bit {bit}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_fold_tree_is_the_path_taken_where_the_cpu_has_it() {
        let has = std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("sse4.1");
        let d = bytes(120, 3);
        assert_eq!(super::x86::short(9, &d).is_some(), has);
        assert_eq!(super::x86::short(9, &d[..15]), None);
        assert_eq!(super::x86::short(9, &bytes(129, 3)), None);
    }

    proptest::proptest! {
        #[test]
        fn matches_crc32fast_on_random_spans(
            seed: u32,
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
        ) {
            proptest::prop_assert_eq!(update(seed, &data), reference(seed, &data));
        }
    }
}
