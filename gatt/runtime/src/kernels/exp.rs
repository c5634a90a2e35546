//! `exp` for f32 slices, eight lanes at a time on AVX2, with a scalar twin that gives the
//! same bits.
//!
//! The SiLU gate and every softmax call `exp` once per element. glibc's scalar `expf` costs
//! about as much per element as a whole decoding step's integer products do per weight
//! row, so with 16 sequences in a batch the gate alone took a tenth of a step. This is the
//! Cephes polynomial (relative error within 2 ulp over the whole range): `x = n·ln2 + r`
//! with `|r| ≤ ln2/2`, `exp(r)` by a degree-7 polynomial, `2ⁿ` built in the exponent bits.
//! The scalar version performs the same operations (fused multiply-adds included), so a
//! result never depends on the CPU or on where a slice's vector part ends.

/// Below this `exp` is 0 (and `2ⁿ` would leave the normal range).
const LO: f32 = -87.336_55;
/// Above this `exp` is infinite.
const HI: f32 = 88.722_83;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts: `n · LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` coefficients, highest degree first: `exp(r) ≈ 1 + r + r²·P(r)`.
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `e^x` (0 below about -87.3, infinite above about 88.7, NaN for NaN).
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < LO {
        return 0.0;
    }
    if x > HI {
        return f32::INFINITY;
    }
    let n = (x * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    let mut p = P[0];
    for c in &P[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    // 2ⁿ in two halves: n reaches 128 just below HI, past the largest normal exponent.
    let n = n as i32;
    let half = n >> 1;
    let two = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    y * two(half) * two(n - half)
}

/// `xs[i] = e^(xs[i] - shift)` for every element.
pub fn exp_shifted_in_place(xs: &mut [f32], shift: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::qmatvec::has_avx2() {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe { avx2::exp_in_place::<false>(xs, 1.0, shift) };
        return;
    }
    xs.iter_mut().for_each(|x| *x = exp(*x - shift));
}

/// `xs[i] = e^(xs[i] / divisor - shift)` for every element, in one pass (a sampler's
/// weights at a temperature: the logits divided by it, shifted by the largest quotient).
/// The division and the subtraction round as the scalar `/` and `-` do, so the result has
/// the bits of dividing first and then calling [`exp_shifted_in_place`].
pub fn exp_scaled_shifted_in_place(xs: &mut [f32], divisor: f32, shift: f32) {
    #[cfg(target_arch = "x86_64")]
    if super::qmatvec::has_avx2() {
        // SAFETY: AVX2 and FMA were detected at run time.
        unsafe { avx2::exp_in_place::<true>(xs, divisor, shift) };
        return;
    }
    xs.iter_mut().for_each(|x| *x = exp(*x / divisor - shift));
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// `xs[i] = e^(xs[i] / divisor - shift)` ([`super::exp_scaled_shifted_in_place`]),
    /// or without the division when `DIVIDE` is false ([`super::exp_shifted_in_place`]),
    /// eight lanes at a time; the caller detected AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_in_place<const DIVIDE: bool>(
        xs: &mut [f32],
        divisor: f32,
        shift: f32,
    ) {
        let (d, s) = (_mm256_set1_ps(divisor), _mm256_set1_ps(shift));
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            let mut x = _mm256_loadu_ps(c.as_ptr());
            if DIVIDE {
                x = _mm256_div_ps(x, d);
            }
            _mm256_storeu_ps(c.as_mut_ptr(), exp8(_mm256_sub_ps(x, s)));
        }
        // The last 1-7 elements through the same lanes, padded with zeros (the scalar
        // twin would call the C library's `fmaf` for each fused multiply-add).
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut lanes = [0f32; 8];
            lanes[..rest.len()].copy_from_slice(rest);
            let mut x = _mm256_loadu_ps(lanes.as_ptr());
            if DIVIDE {
                x = _mm256_div_ps(x, d);
            }
            _mm256_storeu_ps(lanes.as_mut_ptr(), exp8(_mm256_sub_ps(x, s)));
            rest.copy_from_slice(&lanes[..rest.len()]);
        }
    }

    /// The scalar [`exp`], lane by lane.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        let low = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LO));
        let high = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HI));
        let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LO)), _mm256_set1_ps(HI));
        const RND: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let n = _mm256_round_ps::<RND>(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let ni = _mm256_cvtps_epi32(n);
        let half = _mm256_srai_epi32::<1>(ni);
        let two = |e: __m256i| {
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                e,
                _mm256_set1_epi32(127),
            )))
        };
        let y = _mm256_mul_ps(_mm256_mul_ps(y, two(half)), two(_mm256_sub_epi32(ni, half)));
        let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), low);
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), high);
        _mm256_blendv_ps(y, x, nan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error against f64 `exp` over the whole normal range, within 2 ulp.
    #[test]
    fn close_to_the_exact_value() {
        let mut worst = 0f64;
        let mut x = LO;
        while x <= HI {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_7;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e9), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(HI).is_finite());
        assert!(exp(LO) > 0.0);
    }

    /// The AVX2 lanes give the scalar bits, the tail included, for every kind of input.
    #[test]
    fn slices_match_the_scalar_bit_for_bit() {
        let mut xs: Vec<f32> = (0..20_003).map(|i| -95.0 + i as f32 * 0.0095).collect();
        xs.extend([
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            0.0,
            -0.0,
            LO,
            HI,
            -1e9,
            1e-30,
        ]);
        for shift in [0.0, 3.5] {
            let mut got = xs.clone();
            exp_shifted_in_place(&mut got, shift);
            for (&x, &g) in xs.iter().zip(&got) {
                let want = exp(x - shift);
                assert!(
                    want.to_bits() == g.to_bits() || (want.is_nan() && g.is_nan()),
                    "x={x} shift={shift}: {g} vs {want}"
                );
            }
        }
    }

    /// Dividing and exponentiating in one pass gives the bits of the two steps apart, the
    /// tail included: short slices (0 to 9, where the results are far from 0) and long
    /// ones whose lengths leave tails of 1 and 6.
    #[test]
    fn scaled_pass_matches_dividing_first() {
        let xs: Vec<f32> = (0..20_003)
            .map(|i| -60.0 + i as f32 * 0.0061)
            .chain([
                f32::NEG_INFINITY,
                f32::INFINITY,
                f32::NAN,
                -0.0,
                1e-30,
                37.0,
            ])
            .collect();
        assert_eq!(xs.len() % 8, 1);
        // Around x = 36, where x / divisor is close to the shift below.
        let near = 15_740;
        for divisor in [0.7f32, 1.0, 0.013] {
            let shift = 37.0 / divisor;
            let slices = (0..10)
                .map(|len| &xs[near..near + len])
                .chain([&xs[..], &xs[3..]]);
            for part in slices {
                let mut got = part.to_vec();
                exp_scaled_shifted_in_place(&mut got, divisor, shift);
                let mut want: Vec<f32> = part.iter().map(|x| x / divisor).collect();
                exp_shifted_in_place(&mut want, shift);
                assert!(part.len() > 10 || want.iter().all(|w| *w > 0.0));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "x={} divisor={divisor}: {g} vs {w}",
                        part[i]
                    );
                }
            }
        }
    }
}
