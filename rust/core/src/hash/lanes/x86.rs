//! The x86_64 kernels: AVX-512F on 16 lanes and AVX2 on 8, in `std::arch`
//! intrinsics.
//!
//! Every function here is a safe `#[target_feature]` function: the intrinsics
//! they call are safe inside it, and vectors enter and leave only through plain
//! arrays (`_mm512_setr_epi32` of sixteen words read from a `&[u8; 64]` compiles
//! to vector loads, not sixteen scalar ones; extracted words written to an array,
//! to vector stores), so there is no pointer to get wrong. Calling the two entry points,
//! [`range_avx512`] and [`range_avx2`], is what needs the CPU check: that is
//! `Engine::hash_range`'s business.
//!
//! A kernel's message words come from transposing the lanes' blocks (one block
//! per lane is a row; word `w` of every lane is a column) with unpack and
//! shuffle networks: 64 shuffles for 16 blocks, 48 for 8. The finished chaining
//! values go back through the same kind of network into one row per lane.

use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};

use super::{hash_range, Jobs, Kernel};

/// [`hash_range`] on the 16-lane AVX-512 kernel.
#[target_feature(enable = "avx512f")]
pub(super) fn range_avx512<J: Jobs + ?Sized>(key: &[u32; 8], jobs: &J, start: usize, out: &mut [[u8; 32]]) {
    // The closures are defined inside a `#[target_feature]` function and inherit
    // its features, so they may call the kernel's functions directly.
    let kernel = Kernel::new::<16>(
        |cv, blocks, params| avx512::compress(cv, blocks, params),
        |cv| avx512::rows(cv),
        |line| _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()),
    );
    hash_range::<16, J, _, _, _>(key, jobs, start, out, kernel);
}

/// [`hash_range`] on the 8-lane AVX2 kernel.
#[target_feature(enable = "avx2")]
pub(super) fn range_avx2<J: Jobs + ?Sized>(key: &[u32; 8], jobs: &J, start: usize, out: &mut [[u8; 32]]) {
    let kernel = Kernel::new::<8>(
        |cv, blocks, params| avx2::compress(cv, blocks, params),
        |cv| avx2::rows(cv),
        |line| _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()),
    );
    hash_range::<8, J, _, _, _>(key, jobs, start, out, kernel);
}

/// Little-endian word `i` of `b`, as the `i32` that `_mm*_setr_epi32` takes.
#[inline(always)]
fn word(b: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

mod avx512 {
    use std::arch::x86_64::*;

    use super::super::{Params, BLOCK_LEN, IV, SCHEDULE};
    use super::word;

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn xor(a: __m512i, b: __m512i) -> __m512i {
        _mm512_xor_si512(a, b)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn rot16(a: __m512i) -> __m512i {
        _mm512_ror_epi32::<16>(a)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn rot12(a: __m512i) -> __m512i {
        _mm512_ror_epi32::<12>(a)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn rot8(a: __m512i) -> __m512i {
        _mm512_ror_epi32::<8>(a)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn rot7(a: __m512i) -> __m512i {
        _mm512_ror_epi32::<7>(a)
    }

    /// Sixteen words, one per lane.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load(x: &[u32; 16]) -> __m512i {
        let w = |i: usize| x[i] as i32;
        _mm512_setr_epi32(
            w(0),
            w(1),
            w(2),
            w(3),
            w(4),
            w(5),
            w(6),
            w(7),
            w(8),
            w(9),
            w(10),
            w(11),
            w(12),
            w(13),
            w(14),
            w(15),
        )
    }

    /// A block's sixteen little-endian words.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load_block(b: &[u8; BLOCK_LEN]) -> __m512i {
        let w = |i: usize| word(b, i);
        _mm512_setr_epi32(
            w(0),
            w(1),
            w(2),
            w(3),
            w(4),
            w(5),
            w(6),
            w(7),
            w(8),
            w(9),
            w(10),
            w(11),
            w(12),
            w(13),
            w(14),
            w(15),
        )
    }

    /// The sixteen words of `v`, lane order.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store(v: __m512i) -> [u32; 16] {
        let halves = [_mm512_extracti64x4_epi64::<0>(v), _mm512_extracti64x4_epi64::<1>(v)];
        let mut out = [0u32; 16];
        for (h, half) in halves.into_iter().enumerate() {
            let q = [
                _mm256_extract_epi64::<0>(half),
                _mm256_extract_epi64::<1>(half),
                _mm256_extract_epi64::<2>(half),
                _mm256_extract_epi64::<3>(half),
            ];
            for (i, q) in q.into_iter().enumerate() {
                out[8 * h + 2 * i] = q as u32;
                out[8 * h + 2 * i + 1] = (q as u64 >> 32) as u32;
            }
        }
        out
    }

    /// The 32 bytes of `v`, little-endian.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn bytes(v: __m256i) -> [u8; 32] {
        let q = [
            _mm256_extract_epi64::<0>(v),
            _mm256_extract_epi64::<1>(v),
            _mm256_extract_epi64::<2>(v),
            _mm256_extract_epi64::<3>(v),
        ];
        let mut out = [0u8; 32];
        for (chunk, q) in out.chunks_exact_mut(8).zip(q) {
            chunk.copy_from_slice(&q.to_le_bytes());
        }
        out
    }

    /// Message words of 16 blocks: `m[w]` holds word `w` of every lane.
    ///
    /// Rows `r[l]` (lane `l`'s block) go through 32-bit then 64-bit unpacks, after
    /// which 128-bit lane `k` of `u[4i + j]` holds word `4k + j` of rows
    /// `4i..4i + 4`; two rounds of 128-bit shuffles gather the four quarters of
    /// each word.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose(blocks: &[&[u8; BLOCK_LEN]; 16]) -> [__m512i; 16] {
        let r: [__m512i; 16] = std::array::from_fn(|l| load_block(blocks[l]));
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        let mut m = [_mm512_setzero_si512(); 16];
        for j in 0..4 {
            let a = _mm512_shuffle_i32x4::<0x44>(u[j], u[4 + j]);
            let b = _mm512_shuffle_i32x4::<0xEE>(u[j], u[4 + j]);
            let c = _mm512_shuffle_i32x4::<0x44>(u[8 + j], u[12 + j]);
            let d = _mm512_shuffle_i32x4::<0xEE>(u[8 + j], u[12 + j]);
            m[j] = _mm512_shuffle_i32x4::<0x88>(a, c);
            m[4 + j] = _mm512_shuffle_i32x4::<0xDD>(a, c);
            m[8 + j] = _mm512_shuffle_i32x4::<0x88>(b, d);
            m[12 + j] = _mm512_shuffle_i32x4::<0xDD>(b, d);
        }
        m
    }

    /// One compression per lane (see `hash_range`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn compress(cv: &mut [[u32; 16]; 8], blocks: &[&[u8; BLOCK_LEN]; 16], params: &Params<16>) {
        let m = transpose(blocks);
        let mut v = [
            load(&cv[0]),
            load(&cv[1]),
            load(&cv[2]),
            load(&cv[3]),
            load(&cv[4]),
            load(&cv[5]),
            load(&cv[6]),
            load(&cv[7]),
            _mm512_set1_epi32(IV[0] as i32),
            _mm512_set1_epi32(IV[1] as i32),
            _mm512_set1_epi32(IV[2] as i32),
            _mm512_set1_epi32(IV[3] as i32),
            load(&params[0]),
            load(&params[1]),
            load(&params[2]),
            load(&params[3]),
        ];
        rounds!(v, m);
        for w in 0..8 {
            cv[w] = store(xor(v[w], v[w + 8]));
        }
    }

    /// Each lane's chaining value as 32 bytes: `cv` transposed.
    ///
    /// After the 32- and 64-bit unpacks, 128-bit lane `k` of `u[j]` holds words
    /// 0..4 of lane `4k + j` and the same lane of `u[4 + j]` its words 4..8.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) fn rows(cv: &[[u32; 16]; 8]) -> [[u8; 32]; 16] {
        let c: [__m512i; 8] = std::array::from_fn(|w| load(&cv[w]));
        let mut t = [_mm512_setzero_si512(); 8];
        for i in 0..4 {
            t[2 * i] = _mm512_unpacklo_epi32(c[2 * i], c[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(c[2 * i], c[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_si512(); 8];
        for g in 0..2 {
            u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
            u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
        }
        let mut out = [[0u8; 32]; 16];
        for j in 0..4 {
            // [lane j, lane 4 + j] and [lane 8 + j, lane 12 + j], 256 bits each.
            let p = _mm512_shuffle_i32x4::<0x44>(u[j], u[4 + j]);
            let q = _mm512_shuffle_i32x4::<0xEE>(u[j], u[4 + j]);
            let p = _mm512_shuffle_i32x4::<0xD8>(p, p);
            let q = _mm512_shuffle_i32x4::<0xD8>(q, q);
            out[j] = bytes(_mm512_extracti64x4_epi64::<0>(p));
            out[4 + j] = bytes(_mm512_extracti64x4_epi64::<1>(p));
            out[8 + j] = bytes(_mm512_extracti64x4_epi64::<0>(q));
            out[12 + j] = bytes(_mm512_extracti64x4_epi64::<1>(q));
        }
        out
    }
}

mod avx2 {
    use std::arch::x86_64::*;

    use super::super::{Params, BLOCK_LEN, IV, SCHEDULE};
    use super::word;

    #[target_feature(enable = "avx2")]
    #[inline]
    fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn xor(a: __m256i, b: __m256i) -> __m256i {
        _mm256_xor_si256(a, b)
    }

    /// Rotations by whole bytes are one byte shuffle.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn rot16(a: __m256i) -> __m256i {
        let bytes = _mm256_setr_epi8(
            2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
        );
        _mm256_shuffle_epi8(a, bytes)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn rot12(a: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<12>(a), _mm256_slli_epi32::<20>(a))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn rot8(a: __m256i) -> __m256i {
        let bytes = _mm256_setr_epi8(
            1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12,
        );
        _mm256_shuffle_epi8(a, bytes)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn rot7(a: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<7>(a), _mm256_slli_epi32::<25>(a))
    }

    /// Eight words, one per lane.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load(x: &[u32; 8]) -> __m256i {
        let w = |i: usize| x[i] as i32;
        _mm256_setr_epi32(w(0), w(1), w(2), w(3), w(4), w(5), w(6), w(7))
    }

    /// Eight little-endian words from the start of `b` (32 bytes or more).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load_half(b: &[u8]) -> __m256i {
        let w = |i: usize| word(b, i);
        _mm256_setr_epi32(w(0), w(1), w(2), w(3), w(4), w(5), w(6), w(7))
    }

    /// The eight words of `v`, lane order.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn store(v: __m256i) -> [u32; 8] {
        let q = [
            _mm256_extract_epi64::<0>(v),
            _mm256_extract_epi64::<1>(v),
            _mm256_extract_epi64::<2>(v),
            _mm256_extract_epi64::<3>(v),
        ];
        let mut out = [0u32; 8];
        for (i, q) in q.into_iter().enumerate() {
            out[2 * i] = q as u32;
            out[2 * i + 1] = (q as u64 >> 32) as u32;
        }
        out
    }

    /// The 32 bytes of `v`, little-endian.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn bytes(v: __m256i) -> [u8; 32] {
        let q = [
            _mm256_extract_epi64::<0>(v),
            _mm256_extract_epi64::<1>(v),
            _mm256_extract_epi64::<2>(v),
            _mm256_extract_epi64::<3>(v),
        ];
        let mut out = [0u8; 32];
        for (chunk, q) in out.chunks_exact_mut(8).zip(q) {
            chunk.copy_from_slice(&q.to_le_bytes());
        }
        out
    }

    /// 8x8 transpose of 32-bit words: `out[w]` is word `w` of every row.
    ///
    /// After the 32- and 64-bit unpacks, `u[j]` holds words `j` (low 128 bits) and
    /// `4 + j` (high) of rows 0..4, `u[4 + j]` the same of rows 4..8.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        let mut t = [_mm256_setzero_si256(); 8];
        for i in 0..4 {
            t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm256_setzero_si256(); 8];
        for g in 0..2 {
            u[4 * g] = _mm256_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 1] = _mm256_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
            u[4 * g + 2] = _mm256_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
            u[4 * g + 3] = _mm256_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
        }
        let mut out = [_mm256_setzero_si256(); 8];
        for j in 0..4 {
            out[j] = _mm256_permute2x128_si256::<0x20>(u[j], u[4 + j]);
            out[4 + j] = _mm256_permute2x128_si256::<0x31>(u[j], u[4 + j]);
        }
        out
    }

    /// One compression per lane (see `hash_range`).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn compress(cv: &mut [[u32; 8]; 8], blocks: &[&[u8; BLOCK_LEN]; 8], params: &Params<8>) {
        let lo = transpose(std::array::from_fn(|l| load_half(&blocks[l][..32])));
        let hi = transpose(std::array::from_fn(|l| load_half(&blocks[l][32..])));
        let m: [__m256i; 16] = std::array::from_fn(|w| if w < 8 { lo[w] } else { hi[w - 8] });
        let mut v = [
            load(&cv[0]),
            load(&cv[1]),
            load(&cv[2]),
            load(&cv[3]),
            load(&cv[4]),
            load(&cv[5]),
            load(&cv[6]),
            load(&cv[7]),
            _mm256_set1_epi32(IV[0] as i32),
            _mm256_set1_epi32(IV[1] as i32),
            _mm256_set1_epi32(IV[2] as i32),
            _mm256_set1_epi32(IV[3] as i32),
            load(&params[0]),
            load(&params[1]),
            load(&params[2]),
            load(&params[3]),
        ];
        rounds!(v, m);
        for w in 0..8 {
            cv[w] = store(xor(v[w], v[w + 8]));
        }
    }

    /// Each lane's chaining value as 32 bytes: `cv` transposed.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn rows(cv: &[[u32; 8]; 8]) -> [[u8; 32]; 8] {
        let r = transpose(std::array::from_fn(|w| load(&cv[w])));
        std::array::from_fn(|l| bytes(r[l]))
    }
}
