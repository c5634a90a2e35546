//! AVX2 and VNNI kernels. Every function here requires its features at run time; the two
//! instruction sets share the tile code and differ only in the block's integer dot product
//! ([`IntDot`]).

use super::acts::QActs;
use super::{Out, QType, GROUP};
use std::arch::x86_64::*;

/// Software prefetch distance in bytes along the weights, every cache line of a block.
/// The hardware prefetcher alone left the 30 MB lm_head product (m=1) at ~7 GB/s;
/// prefetching 1 KB ahead gave ~13 GB/s (512 B and 2–4 KB were worse). Prefetching one
/// line per block instead of all of them left 16-row products of matrices that come
/// from memory 30% slower than those of cached ones (the lm_head at m=16: 4.7 ms, now 3.4).
const PF_DIST: usize = 1024;

/// A block's integer dot products for the 8 rows of a group: `w` holds the 8 quant
/// vectors (vector `v`, lane `j`: row `j`'s quants `4v .. 4v + 4`), `a` points at the
/// activation block's 32 quants. Returns the 8 exact sums.
trait IntDot {
    /// Q4_1 nibbles (0..15) times signed activations.
    unsafe fn q4(w: &[__m256i; 8], a: *const i8) -> __m256i;
    /// Prepares signed Q8_0 weight quants once per block for [`IntDot::q8`].
    unsafe fn q8_prepare(w: __m256i) -> __m256i;
    /// Prepared Q8_0 quants times activations; `sum` is the activation block's `Σq`.
    unsafe fn q8(w: &[__m256i; 8], a: *const i8, sum: i32) -> __m256i;
}

/// Four activation quants (`4v .. 4v + 4`) in every lane.
#[inline(always)]
unsafe fn quad(a: *const i8, v: usize) -> __m256i {
    _mm256_set1_epi32((a.add(4 * v) as *const i32).read_unaligned())
}

/// `maddubs` multiplies unsigned by signed bytes and adds pairs into i16, `madd` adds
/// those pairs into i32.
struct Avx2;

impl IntDot for Avx2 {
    #[inline(always)]
    unsafe fn q4(w: &[__m256i; 8], a: *const i8) -> __m256i {
        // Each i16 pair sum is at most 2·15·127 = 3810, so all eight fit in i16 (30480)
        // and one `madd` finishes the block.
        let p = |v: usize| _mm256_maddubs_epi16(w[v], quad(a, v));
        let s0 = _mm256_add_epi16(_mm256_add_epi16(p(0), p(1)), _mm256_add_epi16(p(2), p(3)));
        let s1 = _mm256_add_epi16(_mm256_add_epi16(p(4), p(5)), _mm256_add_epi16(p(6), p(7)));
        _mm256_madd_epi16(_mm256_add_epi16(s0, s1), _mm256_set1_epi16(1))
    }

    #[inline(always)]
    unsafe fn q8_prepare(w: __m256i) -> __m256i {
        w
    }

    #[inline(always)]
    unsafe fn q8(w: &[__m256i; 8], a: *const i8, _sum: i32) -> __m256i {
        // `maddubs` wants one unsigned operand: |w|, and the activations carrying w's sign.
        // A pair sum reaches 2·128·127, so each vector goes to i32 on its own.
        let ones = _mm256_set1_epi16(1);
        let p = |v: usize| {
            let s = _mm256_maddubs_epi16(
                _mm256_sign_epi8(w[v], w[v]),
                _mm256_sign_epi8(quad(a, v), w[v]),
            );
            _mm256_madd_epi16(s, ones)
        };
        let s0 = _mm256_add_epi32(_mm256_add_epi32(p(0), p(1)), _mm256_add_epi32(p(2), p(3)));
        let s1 = _mm256_add_epi32(_mm256_add_epi32(p(4), p(5)), _mm256_add_epi32(p(6), p(7)));
        _mm256_add_epi32(s0, s1)
    }
}

/// `dpbusd` multiplies unsigned by signed bytes and adds runs of four into i32 lanes.
struct Vnni;

impl IntDot for Vnni {
    #[inline(always)]
    unsafe fn q4(w: &[__m256i; 8], a: *const i8) -> __m256i {
        // Two chains of four, so consecutive `dpbusd`s need not wait on each other.
        let mut s0 = _mm256_setzero_si256();
        let mut s1 = _mm256_setzero_si256();
        for v in (0..8).step_by(2) {
            s0 = _mm256_dpbusd_epi32(s0, w[v], quad(a, v));
            s1 = _mm256_dpbusd_epi32(s1, w[v + 1], quad(a, v + 1));
        }
        _mm256_add_epi32(s0, s1)
    }

    #[inline(always)]
    unsafe fn q8_prepare(w: __m256i) -> __m256i {
        // w + 128 as unsigned bytes; `q8` subtracts 128·Σa again.
        _mm256_xor_si256(w, _mm256_set1_epi8(-128))
    }

    #[inline(always)]
    unsafe fn q8(w: &[__m256i; 8], a: *const i8, sum: i32) -> __m256i {
        let mut s0 = _mm256_setzero_si256();
        let mut s1 = _mm256_setzero_si256();
        for v in (0..8).step_by(2) {
            s0 = _mm256_dpbusd_epi32(s0, w[v], quad(a, v));
            s1 = _mm256_dpbusd_epi32(s1, w[v + 1], quad(a, v + 1));
        }
        _mm256_sub_epi32(_mm256_add_epi32(s0, s1), _mm256_set1_epi32(128 * sum))
    }
}

/// One group (8 weight rows) × `R` activation rows from `r0`: returns the 8 outputs of
/// each activation row.
#[inline(always)]
unsafe fn tile<I: IntDot, const R: usize>(
    qtype: QType,
    group: &[u8],
    a: &QActs,
    r0: usize,
) -> [__m256; R] {
    let gbb = qtype.group_block_bytes();
    debug_assert_eq!(group.len(), a.nb * gbb);
    debug_assert!(r0 + R <= a.m);
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut macc = [_mm256_setzero_ps(); R];
    for b in 0..a.nb {
        let blk = group.as_ptr().add(b * gbb);
        for line in (0..gbb).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PF_DIST + line) as *const i8);
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        let load =
            |v: usize| _mm256_loadu_si256(blk.add(qtype.quants_at() + 32 * v) as *const __m256i);
        let mut w = [_mm256_setzero_si256(); 8];
        let mut mn = _mm256_setzero_ps();
        match qtype {
            QType::Q4_1 => {
                mn = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
                // Vector v's low nibbles are elements 4v.., its high nibbles 16 + 4v...
                for v in 0..4 {
                    let raw = load(v);
                    w[v] = _mm256_and_si256(raw, mask);
                    w[v + 4] = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask);
                }
            }
            QType::Q8_0 => {
                for (v, wv) in w.iter_mut().enumerate() {
                    *wv = I::q8_prepare(load(v));
                }
            }
        }
        let i0 = b * a.m + r0;
        for r in 0..R {
            let i = i0 + r;
            let ap = a.qs.get_unchecked(i).as_ptr();
            let isum = match qtype {
                QType::Q4_1 => I::q4(&w, ap),
                QType::Q8_0 => I::q8(&w, ap, *a.sum.get_unchecked(i)),
            };
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(*a.d.get_unchecked(i)));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[r]);
            if qtype == QType::Q4_1 {
                macc[r] = _mm256_fmadd_ps(mn, _mm256_set1_ps(*a.s.get_unchecked(i)), macc[r]);
            }
        }
    }
    if qtype == QType::Q4_1 {
        for r in 0..R {
            acc[r] = _mm256_add_ps(acc[r], macc[r]);
        }
    }
    acc
}

/// Writes a tile's outputs: rows `r0..`, columns `j .. j + lanes` (`lanes` < 8 only for
/// the padded last group).
#[inline(always)]
unsafe fn store<const R: usize>(
    outs: &mut [Out],
    r0: usize,
    j: usize,
    lanes: usize,
    t: [__m256; R],
) {
    for (r, v) in t.into_iter().enumerate() {
        let out = &mut outs[r0 + r][j..j + lanes];
        if lanes == GROUP {
            _mm256_storeu_ps(out.as_mut_ptr() as *mut f32, v);
        } else {
            let mut tmp = [0f32; GROUP];
            _mm256_storeu_ps(tmp.as_mut_ptr(), v);
            for (o, &t) in out.iter_mut().zip(&tmp) {
                o.write(t);
            }
        }
    }
}

/// All groups of a chunk × all activation rows, in tiles of up to four rows.
#[inline(always)]
unsafe fn chunk<I: IntDot>(qtype: QType, groups: &[u8], a: &QActs, outs: &mut [Out]) {
    let n = outs[0].len();
    let gb = a.nb * qtype.group_block_bytes();
    for (g, group) in groups.chunks_exact(gb).enumerate() {
        let j = g * GROUP;
        let lanes = (n - j).min(GROUP);
        let mut r0 = 0;
        while a.m - r0 >= 8 {
            store(outs, r0, j, lanes, tile::<I, 8>(qtype, group, a, r0));
            r0 += 8;
        }
        while a.m - r0 >= 4 {
            store(outs, r0, j, lanes, tile::<I, 4>(qtype, group, a, r0));
            r0 += 4;
        }
        match a.m - r0 {
            3 => store(outs, r0, j, lanes, tile::<I, 3>(qtype, group, a, r0)),
            2 => store(outs, r0, j, lanes, tile::<I, 2>(qtype, group, a, r0)),
            1 => store(outs, r0, j, lanes, tile::<I, 1>(qtype, group, a, r0)),
            _ => {}
        }
    }
}

// The entry points, one per (format, instruction set): `groups` are the regrouped bytes
// of a chunk's weight rows, `outs[r]` takes activation row `r`'s outputs for them.
// Safety: the CPU has the features each one enables.

/// Q4_1 weights, AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1_avx2(groups: &[u8], a: &QActs, outs: &mut [Out]) {
    chunk::<Avx2>(QType::Q4_1, groups, a, outs)
}

/// Q8_0 weights, AVX2.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0_avx2(groups: &[u8], a: &QActs, outs: &mut [Out]) {
    chunk::<Avx2>(QType::Q8_0, groups, a, outs)
}

/// Q4_1 weights, AVX-512 VNNI on 256-bit registers.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(super) unsafe fn q4_1_vnni(groups: &[u8], a: &QActs, outs: &mut [Out]) {
    chunk::<Vnni>(QType::Q4_1, groups, a, outs)
}

/// Q8_0 weights, AVX-512 VNNI on 256-bit registers.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(super) unsafe fn q8_0_vnni(groups: &[u8], a: &QActs, outs: &mut [Out]) {
    chunk::<Vnni>(QType::Q8_0, groups, a, outs)
}
