//! Activation rows quantized to Q8 blocks once per product, as llama.cpp does: per 32
//! values `d = max|x| / 127` and `q = round(x / d)`, with `d · Σq` for the Q4_1 offset
//! term and `Σq` for the VNNI Q8_0 correction. The scalar and AVX2 quantizers give the
//! same bits.

use super::BLOCK;

/// Activation rows quantized to Q8 blocks, stored block-major so the `m` rows of one block
/// index are adjacent: block `b` of row `r` is entry `b·m + r`.
pub(super) struct QActs {
    /// Activation rows.
    pub(super) m: usize,
    /// Blocks per row: `k / 32`.
    pub(super) nb: usize,
    /// `nb·m` blocks of 32 quants.
    pub(super) qs: Vec<[i8; BLOCK]>,
    /// Block scales `d`.
    pub(super) d: Vec<f32>,
    /// `d · Σ q` per block (the Q4_1 offset term).
    pub(super) s: Vec<f32>,
    /// `Σ q` per block (the VNNI Q8_0 kernel's correction for its unsigned weights).
    pub(super) sum: Vec<i32>,
}

impl QActs {
    /// Quantizes the `m` rows of `x` (`m × k`, row-major); `simd`: use the AVX2 quantizer
    /// (the caller detected AVX2 + FMA + F16C), which gives the same bits.
    pub(super) fn new(x: &[f32], m: usize, k: usize, simd: bool) -> Self {
        let nb = k / BLOCK;
        let mut a = QActs {
            m,
            nb,
            qs: Vec::with_capacity(nb * m),
            d: Vec::with_capacity(nb * m),
            s: Vec::with_capacity(nb * m),
            sum: Vec::with_capacity(nb * m),
        };
        // Block-major order: entry b·m + r is pushed b·m + r-th.
        for b in 0..nb {
            for r in 0..m {
                let xb: &[f32; BLOCK] = x[r * k + b * BLOCK..][..BLOCK].try_into().unwrap();
                let mut q = [0i8; BLOCK];
                #[cfg(target_arch = "x86_64")]
                let (d, sum) = if simd {
                    // SAFETY: the caller picked a SIMD kernel, so AVX2 + FMA + F16C were detected.
                    unsafe { avx2::quantize_block(xb, &mut q) }
                } else {
                    quantize_block_scalar(xb, &mut q)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let (d, sum) = {
                    let _ = simd;
                    quantize_block_scalar(xb, &mut q)
                };
                a.qs.push(q);
                a.d.push(d);
                a.s.push(d * sum as f32);
                a.sum.push(sum);
            }
        }
        a
    }
}

/// Quantizes 32 values to Q8 (`d = max|x|/127`, `q = round_ties_even(x · 127/max|x|)`);
/// returns `(d, Σq)`. Bit-identical to the AVX2 version.
pub(super) fn quantize_block_scalar(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    if x.iter().any(|v| !v.is_finite()) {
        return non_finite_block(q);
    }
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let id = inverse_step(amax);
    let mut sum = 0i32;
    for (qi, &v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even() as i32;
        *qi = r as i8;
        sum += r;
    }
    (amax / 127.0, sum)
}

/// A block holding NaN or an infinity: scale NaN, so that every output it feeds is NaN
/// (as the f32 product would give), and zero quants.
fn non_finite_block(q: &mut [i8; BLOCK]) -> (f32, i32) {
    q.fill(0);
    (f32::NAN, 0)
}

/// `127 / max|x|`, or 0 where that is not finite (an all-zero block, or one so small that
/// the quotient overflows): such blocks quantize to zeros.
fn inverse_step(amax: f32) -> f32 {
    let id = 127.0 / amax;
    if id.is_finite() {
        id
    } else {
        0.0
    }
}

/// The AVX2 quantizer. Every function here requires AVX2, FMA and F16C at run time.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// AVX2 twin of `quantize_block_scalar` (bit-identical results).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn quantize_block(
        x: &[f32; BLOCK],
        q: &mut [i8; BLOCK],
    ) -> (f32, i32) {
        let p = x.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        // x - x is 0 for finite x and NaN for NaN or an infinity.
        let bad = v
            .iter()
            .map(|&x| _mm256_cmp_ps::<_CMP_UNORD_Q>(_mm256_sub_ps(x, x), _mm256_sub_ps(x, x)))
            .fold(_mm256_setzero_ps(), |a, b| _mm256_or_ps(a, b));
        if _mm256_movemask_ps(bad) != 0 {
            return super::non_finite_block(q);
        }
        let sign = _mm256_set1_ps(-0.0);
        let mx = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
        );
        let h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        let amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
        let id = _mm256_set1_ps(super::inverse_step(amax));
        const RND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let i0 = _mm256_cvtps_epi32(_mm256_round_ps::<RND>(_mm256_mul_ps(v[0], id)));
        let i1 = _mm256_cvtps_epi32(_mm256_round_ps::<RND>(_mm256_mul_ps(v[1], id)));
        let i2 = _mm256_cvtps_epi32(_mm256_round_ps::<RND>(_mm256_mul_ps(v[2], id)));
        let i3 = _mm256_cvtps_epi32(_mm256_round_ps::<RND>(_mm256_mul_ps(v[3], id)));
        let s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        // packs work per 128-bit lane; the final permute restores element order.
        let w = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, w);
        (amax / 127.0, _mm_cvtsi128_si32(s))
    }
}
