//! Tests: layout decoding and regrouping, activation quantization, scalar kernel vs the f64
//! product of the dequantized weights, SIMD kernels vs scalar (bit for bit), and chunked
//! threading.

#[cfg(target_arch = "x86_64")]
use super::acts::avx2;
use super::acts::quantize_block_scalar;
use super::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

const MS: [usize; 7] = [1, 2, 3, 4, 5, 16, 17];
const KS: [usize; 3] = [32, 576, 1536];
const NS: [usize; 3] = [1, 7, 576];
const TYPES: [QType; 2] = [QType::Q4_1, QType::Q8_0];

fn scalar() -> MatmulOptions {
    MatmulOptions {
        threads: Some(1),
        isa: Some(Isa::Scalar),
    }
}

/// The SIMD kernels this CPU has (each one not present says so on stderr).
fn simd_isas() -> Vec<Isa> {
    [Isa::Avx2, Isa::Vnni]
        .into_iter()
        .filter(|isa| {
            let ok = isa.available();
            if !ok {
                eprintln!("no {isa:?} on this CPU: that kernel is not tested");
            }
            ok
        })
        .collect()
}

fn on(isa: Isa, threads: usize) -> MatmulOptions {
    MatmulOptions {
        threads: Some(threads),
        isa: Some(isa),
    }
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Decodes GGUF block bytes directly (independent of the regrouped layout).
fn dequantize_gguf(qtype: QType, bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::new();
    for blk in bytes.chunks_exact(qtype.block_bytes()) {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        match qtype {
            QType::Q4_1 => {
                let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                let qs = &blk[4..20];
                out.extend(qs.iter().map(|&q| d * (q & 15) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
            QType::Q8_0 => out.extend(blk[2..34].iter().map(|&q| d * (q as i8) as f32)),
        }
    }
    out
}

/// Random weights with per-row scale and offset (so Q4_1's `m` term matters).
fn rand_weights(rng: &mut StdRng, n: usize, k: usize) -> Vec<f32> {
    let mut w = Vec::with_capacity(n * k);
    for _ in 0..n {
        let scale: f32 = rng.random_range(0.01..2.0);
        let off: f32 = rng.random_range(-0.5..0.5) * scale;
        w.extend((0..k).map(|_| off + scale * rng.random_range(-1.0f32..1.0)));
    }
    w
}

/// Random activations with occasional outliers (as in real hidden states), some zero blocks.
fn rand_acts(rng: &mut StdRng, m: usize, k: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..m * k)
        .map(|_| {
            let v: f32 = rng.random_range(-1.0..1.0);
            if rng.random_range(0..50) == 0 {
                v * 20.0
            } else {
                v
            }
        })
        .collect();
    if k >= 64 {
        x[32..64].fill(0.0); // an all-zero block (d = 0) in row 0
    }
    x
}

/// Checks `got` against the exact product of the dequantized weights with the unquantized
/// activations. The only intended error is activation quantization: each x is replaced by
/// `d8·q` with `|x − d8·q| ≤ d8/2 = max|x_block| / 254`, so
/// `|err(r, j)| ≤ Σ_blocks max|x_block|/254 · Σ_{i∈block} |W[j][i]|` exactly (a worst-case
/// bound, not a statistical one). On top we allow f32 summation error of
/// `1e-4 · Σ|W||x|` (about 40× smaller than the quantization term). Expressed against the row
/// norms this bound implies (Cauchy–Schwarz, `‖block maxima‖ ≤ ‖x‖`)
/// `|err| ≤ √32/254 · ‖x_r‖·‖W_j‖ ≈ 2.2e-2 · ‖x_r‖·‖W_j‖`, which is checked as well; typical
/// errors are ~1e-3 of the norms and the worst seen in these tests (blocks with outliers) ~8e-3.
/// Returns the largest `|err| / (‖x_r‖·‖W_j‖)` seen, or an error message.
fn check_vs_reference(w: &QMatrix, x: &[f32], m: usize, got: &[f32]) -> Result<f64, String> {
    let (n, k) = (w.n_out, w.k);
    let wd = w.dequantize();
    let mut worst = 0f64;
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        let xnorm = xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        for j in 0..n {
            let wr = &wd[j * k..(j + 1) * k];
            let (mut exact, mut bound, mut absprod, mut wnorm) = (0f64, 0f64, 0f64, 0f64);
            for (wb, xb) in wr.chunks_exact(BLOCK).zip(xr.chunks_exact(BLOCK)) {
                let amax = xb.iter().fold(0f32, |a, &v| a.max(v.abs())) as f64;
                let wabs: f64 = wb.iter().map(|&v| (v as f64).abs()).sum();
                bound += amax / 254.0 * wabs;
                for (&a, &b) in wb.iter().zip(xb) {
                    exact += a as f64 * b as f64;
                    absprod += (a as f64 * b as f64).abs();
                    wnorm += (a as f64).powi(2);
                }
            }
            let err = (got[r * n + j] as f64 - exact).abs();
            let tol = bound * (1.0 + 1e-6) + 1e-4 * absprod + 1e-30;
            if err.is_nan() || err > tol {
                return Err(format!(
                    "{:?} n={n} k={k} m={m} r={r} j={j}: got {} want {exact} err {err:e} > tol {tol:e}",
                    w.qtype,
                    got[r * n + j]
                ));
            }
            let denom = xnorm * wnorm.sqrt();
            if denom > 0.0 {
                worst = worst.max(err / denom);
            }
        }
    }
    if worst > 2.23e-2 {
        return Err(format!(
            "relative error {worst:e} above 2.23e-2 of the row norms"
        ));
    }
    Ok(worst)
}

#[test]
fn new_checks_sizes() {
    assert!(QMatrix::new(QType::Q4_1, 2, 64, vec![0; 80]).is_ok());
    assert!(QMatrix::new(QType::Q4_1, 2, 64, vec![0; 79]).is_err());
    assert!(QMatrix::new(QType::Q8_0, 3, 32, vec![0; 102]).is_ok());
    assert!(QMatrix::new(QType::Q8_0, 3, 33, vec![0; 102]).is_err());
    assert!(QMatrix::new(QType::Q8_0, 3, 0, vec![]).is_err());
}

/// Hand-built blocks pin down the byte layout and the element order of the nibbles.
#[test]
fn dequantize_known_blocks() {
    let mut b = Vec::new();
    b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
    b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
    b.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
    let w = QMatrix::new(QType::Q4_1, 1, 32, b).unwrap().dequantize();
    for i in 0..16 {
        assert_eq!(w[i], 0.5 * i as f32 - 1.0);
        assert_eq!(w[i + 16], 0.5 * (15 - i) as f32 - 1.0);
    }
    let mut b = Vec::new();
    b.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
    b.extend((0..32i32).map(|i| ((i - 16) * 8) as i8 as u8));
    let w = QMatrix::new(QType::Q8_0, 1, 32, b).unwrap().dequantize();
    for (i, &v) in w.iter().enumerate() {
        assert_eq!(v, 0.25 * ((i as i32 - 16) * 8) as f32);
    }
}

/// Regrouping keeps every element of every row, for row counts that fill groups and ones
/// that leave the last group padded.
#[test]
fn regrouping_keeps_every_element() {
    let mut rng = StdRng::seed_from_u64(7);
    for qt in TYPES {
        for (n, k) in [(1, 32), (8, 64), (9, 96), (17, 576)] {
            let bytes = quantize_gguf(qt, k, &rand_weights(&mut rng, n, k));
            let w = QMatrix::new(qt, n, k, bytes.clone()).unwrap();
            let got = w.dequantize();
            let want = dequantize_gguf(qt, &bytes);
            assert!(bits_equal(&got, &want), "{qt:?} n={n} k={k}");
        }
    }
}

/// A one-block product where activation quantization is lossless (only f32 rounding left).
#[test]
fn tiny_product_by_hand() {
    // max|x| = 127 gives d8 = 1 and q = x exactly; weights are exact in f16.
    let mut x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 4.0).collect();
    x[0] = -127.0;
    for qt in TYPES {
        let wf: Vec<f32> = (0..32).map(|i| (i % 16) as f32 * 0.5 - 2.0).collect();
        let w = QMatrix::quantize_from_f32(qt, 1, 32, &wf);
        let want: f32 = w.dequantize().iter().zip(&x).map(|(a, b)| a * b).sum();
        let opts = std::iter::once(scalar()).chain(simd_isas().into_iter().map(|i| on(i, 1)));
        for opts in opts {
            let got = w.matmul_with(&x, 1, opts)[0];
            assert!(
                (got - want).abs() <= 1e-6 * want.abs(),
                "{qt:?} {got} vs {want}"
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn activation_quantization_scalar_matches_avx2() {
    if !has_avx2() {
        eprintln!("no AVX2: skipped");
        return;
    }
    let mut rng = StdRng::seed_from_u64(1);
    for case in 0..2000 {
        let mut x = [0f32; BLOCK];
        for v in x.iter_mut() {
            *v = rng.random_range(-3.0..3.0);
        }
        if case % 7 == 0 {
            // exact .5 ties after scaling: max 127 so id = 1
            for (i, v) in x.iter_mut().enumerate() {
                *v = (i as f32 - 16.0) + 0.5;
            }
            x[0] = 127.0;
        }
        match case {
            1 => x = [0.0; BLOCK],
            // Blocks so small that 127 / max|x| overflows quantize to zeros.
            2 => x = [1e-37; BLOCK],
            3 => x[5] = f32::NAN,
            4 => x[31] = f32::INFINITY,
            5 => x[0] = f32::NEG_INFINITY,
            _ => {}
        }
        let (mut qa, mut qb) = ([0i8; BLOCK], [0i8; BLOCK]);
        let sa = quantize_block_scalar(&x, &mut qa);
        let sb = unsafe { avx2::quantize_block(&x, &mut qb) };
        assert_eq!(qa, qb, "case {case}");
        assert_eq!(sa.0.to_bits(), sb.0.to_bits(), "case {case}");
        assert_eq!(sa.0.is_nan(), (3..=5).contains(&case), "case {case}");
        assert_eq!(sa.1, sb.1);
        assert_eq!(sa.1, qa.iter().map(|&q| q as i32).sum::<i32>());
        assert!(qa.iter().all(|&q| q != -128));
    }
}

/// An activation that is NaN or infinite makes the outputs it feeds NaN, as the f32
/// product would, in every kernel alike.
#[test]
fn non_finite_activations_give_nan() {
    let mut rng = StdRng::seed_from_u64(11);
    for qt in TYPES {
        let w = QMatrix::quantize_from_f32(qt, 9, 64, &rand_weights(&mut rng, 9, 64));
        for bad in [f32::NAN, f32::INFINITY] {
            let mut x = rand_acts(&mut rng, 2, 64);
            x[64 + 40] = bad;
            for isa in std::iter::once(Isa::Scalar).chain(simd_isas()) {
                let y = w.matmul_with(&x, 2, on(isa, 1));
                assert!(
                    y[..9].iter().all(|v| v.is_finite()),
                    "{qt:?} {isa:?}: row 0 is clean"
                );
                assert!(y[9..].iter().all(|v| v.is_nan()), "{qt:?} {isa:?} {bad}");
            }
        }
    }
}

/// Runs `check` on every (format, k, n, m) of the test grid: random weights, random
/// activations.
fn for_each_case(seed: u64, mut check: impl FnMut(&QMatrix, &[f32], usize)) {
    let mut rng = StdRng::seed_from_u64(seed);
    for qt in TYPES {
        for k in KS {
            for n in NS {
                let w = QMatrix::quantize_from_f32(qt, n, k, &rand_weights(&mut rng, n, k));
                for m in MS {
                    check(&w, &rand_acts(&mut rng, m, k), m);
                }
            }
        }
    }
}

#[test]
fn scalar_kernel_vs_dequantized_reference() {
    let mut worst = 0f64;
    for_each_case(2, |w, x, m| {
        let y = w.matmul_with(x, m, scalar());
        worst = worst.max(check_vs_reference(w, x, m, &y).unwrap());
    });
    eprintln!("scalar: worst |err| / (|x||w|) = {worst:e}");
}

/// The SIMD kernels compute the same integer sums and the same float operations in the same
/// order as the scalar kernel, so their results are bit-identical (a sequence decodes the
/// same tokens on any x86 CPU).
#[test]
fn simd_kernels_match_scalar_bit_for_bit() {
    let isas = simd_isas();
    for_each_case(3, |w, x, m| {
        let ys = w.matmul_with(x, m, scalar());
        for &isa in &isas {
            let yv = w.matmul_with(x, m, on(isa, 1));
            check_vs_reference(w, x, m, &yv).unwrap();
            let (qt, n, k) = (w.qtype, w.n_out, w.k);
            assert!(bits_equal(&yv, &ys), "{qt:?} {isa:?} n={n} k={k} m={m}");
        }
    });
}

/// Each output row's numbers do not depend on the other rows of the call: row `r` of an
/// m-row product equals the one-row product of row `r` alone, bit for bit.
#[test]
fn a_row_computes_the_same_alone_as_in_a_batch() {
    let mut rng = StdRng::seed_from_u64(8);
    let (n, k, m) = (40, 576, 7);
    for qt in TYPES {
        let w = QMatrix::quantize_from_f32(qt, n, k, &rand_weights(&mut rng, n, k));
        let x = rand_acts(&mut rng, m, k);
        for isa in std::iter::once(Isa::Scalar).chain(simd_isas()) {
            let all = w.matmul_with(&x, m, on(isa, 1));
            for r in 0..m {
                let alone = w.matmul_with(&x[r * k..(r + 1) * k], 1, on(isa, 1));
                assert!(
                    bits_equal(&alone, &all[r * n..(r + 1) * n]),
                    "{qt:?} {isa:?} r={r}"
                );
            }
        }
    }
}

/// Every output is computed by the same code whatever the chunking, so the threaded results
/// must be bit-identical to the single-threaded ones (odd n_out, chunks of uneven size).
#[test]
fn threaded_chunking_is_exact() {
    let mut rng = StdRng::seed_from_u64(4);
    for qt in TYPES {
        for n in [1, 2, 3, 7, 33, 576, 577] {
            let k = 576;
            let w = QMatrix::quantize_from_f32(qt, n, k, &rand_weights(&mut rng, n, k));
            for m in MS {
                let x = rand_acts(&mut rng, m, k);
                for isa in std::iter::once(Isa::Scalar).chain(simd_isas()) {
                    let one = w.matmul_with(&x, m, on(isa, 1));
                    for t in [2, 3, 4, 7, 64] {
                        let y = w.matmul_with(&x, m, on(isa, t));
                        assert!(
                            bits_equal(&y, &one),
                            "{qt:?} n={n} m={m} threads={t} {isa:?}"
                        );
                    }
                    assert!(
                        bits_equal(&w.matmul(&x, m), &one),
                        "{qt:?} n={n} m={m} auto"
                    );
                }
            }
        }
    }
}

/// The reference check must reject real kernel bugs: swapping the nibble halves of one
/// Q4_1 block, or flipping a Q8_0 sign, is detected.
#[test]
fn reference_check_detects_wrong_results() {
    let mut rng = StdRng::seed_from_u64(5);
    let (n, k, m) = (7, 576, 3);
    let x = rand_acts(&mut rng, m, k);
    for qt in TYPES {
        let bytes = quantize_gguf(qt, k, &rand_weights(&mut rng, n, k));
        let w = QMatrix::new(qt, n, k, bytes.clone()).unwrap();
        let mut bad = bytes;
        let bb = qt.block_bytes();
        for blk in bad.chunks_exact_mut(bb).skip(3).step_by(9) {
            match qt {
                QType::Q4_1 => blk[4..].iter_mut().for_each(|q| *q = q.rotate_left(4)),
                QType::Q8_0 => blk[2..]
                    .iter_mut()
                    .step_by(2)
                    .for_each(|q| *q = (*q as i8).wrapping_neg() as u8),
            }
        }
        let wrong = QMatrix::new(qt, n, k, bad).unwrap();
        for isa in std::iter::once(Isa::Scalar).chain(simd_isas()) {
            let got = wrong.matmul_with(&x, m, on(isa, 1));
            assert!(
                check_vs_reference(&w, &x, m, &got).is_err(),
                "{qt:?} {isa:?}"
            );
            let right = w.matmul_with(&x, m, on(isa, 1));
            assert!(check_vs_reference(&w, &x, m, &right).is_ok());
        }
    }
}

#[test]
fn every_output_is_written_and_empty_products_work() {
    let mut rng = StdRng::seed_from_u64(6);
    for qt in TYPES {
        // 13 rows: one full group and a padded one.
        let w = QMatrix::quantize_from_f32(qt, 13, 64, &rand_weights(&mut rng, 13, 64));
        let x = rand_acts(&mut rng, 3, 64);
        for isa in std::iter::once(Isa::Scalar).chain(simd_isas()) {
            let y = w.matmul_with(&x, 3, on(isa, 2));
            assert_eq!(y.len(), 39);
            check_vs_reference(&w, &x, 3, &y).unwrap();
        }
        assert!(w.matmul(&[], 0).is_empty());
    }
}

/// A stacked product equals the separate products side by side, bit for bit, whatever
/// the threading (shares that span matrices included).
#[test]
fn stacked_products_equal_separate_ones() {
    let mut rng = StdRng::seed_from_u64(10);
    let k = 96;
    for qt in TYPES {
        let mats: Vec<QMatrix> = [13, 8, 1, 40]
            .iter()
            .map(|&n| QMatrix::quantize_from_f32(qt, n, k, &rand_weights(&mut rng, n, k)))
            .collect();
        let refs: Vec<&QMatrix> = mats.iter().collect();
        for m in [1, 3, 16] {
            let x = rand_acts(&mut rng, m, k);
            let mut want = Vec::new();
            let parts: Vec<Vec<f32>> = mats.iter().map(|w| w.matmul(&x, m)).collect();
            for r in 0..m {
                for (w, y) in mats.iter().zip(&parts) {
                    want.extend_from_slice(&y[r * w.n_out..(r + 1) * w.n_out]);
                }
            }
            for isa in std::iter::once(Isa::Scalar).chain(simd_isas()) {
                for t in [1, 2, 3, 5, 64] {
                    let got = QMatrix::matmul_stacked(&refs, &x, m, on(isa, t));
                    assert!(bits_equal(&got, &want), "{qt:?} m={m} {isa:?} threads={t}");
                }
            }
        }
    }
}
