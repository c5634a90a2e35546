//! Attention of new tokens over their sequence's cached keys and values, in one pass per
//! (sequence, query, head), reading the cache in place.
//!
//! Decoding a batch otherwise runs, for every sequence and layer, about ten small tensor
//! ops (slices, copies, two products, the softmax, a concatenation); at 16 sequences
//! that bookkeeping costs more than the attention arithmetic. Inference only (no backward
//! pass), on the CPU; other devices use the general path.
//!
//! **Same numbers however a sequence is split.** Every query row is computed by the same
//! sequence of operations over the keys up to its own position, whether it is a decoding
//! step, one of a whole prompt's rows, or one of the new rows of a prompt whose beginning
//! is already cached ([`causal_rows`]). With the row-wise linear layers
//! of inference (`qmatvec.rs`), a position's keys, values and logits are then a function
//! of the tokens up to it alone, so a conversation's cache can be kept between turns and
//! extended without changing a single bit of what the model computes.

use super::exp::exp_shifted_in_place;
use super::qmatvec::has_avx2;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use half::f16;
use std::sync::Mutex;

/// `q` (b, heads, 1, hd) against keys and values (b, kv_heads, len, hd), where sequence
/// `s` sees positions `pad[s]..len`; returns (b, 1, heads*hd), ready for the output
/// projection. Query heads share key heads in groups of heads / kv_heads.
#[cfg(test)]
pub fn one_query(q: &Tensor, k: &Tensor, v: &Tensor, pad: &[usize], scale: f32) -> Result<Tensor> {
    causal_rows(q, k, v, pad, scale)
}

/// `q` (b, heads, t, hd), the queries of the last `t` of `len` positions, against keys
/// and values (b, kv_heads, len, hd): query `j` of sequence `s` is at position
/// `len - t + j` and sees positions `pad[s]..=len - t + j`; a query inside the padding
/// (`len - t + j < pad[s]`) sees none and gives zeros. Returns (b, t, heads*hd), ready
/// for the output projection. Each row is computed exactly as a decoding step (`t = 1`)
/// at that position computes it.
pub fn causal_rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pad: &[usize],
    scale: f32,
) -> Result<Tensor> {
    let op = OneQuery {
        pad: pad.to_vec(),
        scale,
    };
    q.contiguous()?.apply_op3_no_bwd(k, v, &op)
}

struct OneQuery {
    pad: Vec<usize>,
    scale: f32,
}

/// What a KV cache holds: f32, or f16 (half the bytes for every decoding step to read;
/// at 16 sequences the cache is a third of a step's memory traffic).
trait CacheElem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// The elements of an f32 or f16 storage.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// Eight elements as f32 (AVX2 + F16C callers only).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl CacheElem for f32 {
    fn to_f32(self) -> f32 {
        self
    }

    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl CacheElem for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    fn slice(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F16(v) => Some(v),
            _ => None,
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

/// Elements of a tensor whose last dimension is contiguous, with its layout's
/// (b, head, position) strides.
fn strided<'a, E: CacheElem>(s: &'a CpuStorage, l: &Layout) -> Result<(&'a [E], [usize; 3])> {
    let Some(v) = E::slice(s) else {
        bail!("decode attention: queries must be f32, keys and values both f32 or both f16")
    };
    let st = l.stride();
    if l.dims().len() != 4 || st[3] != 1 {
        bail!(
            "decode attention: expected (b, heads, len, dim) rows, got {:?}",
            l.shape()
        )
    }
    Ok((&v[l.start_offset()..], [st[0], st[1], st[2]]))
}

/// Dot product in eight independent lanes, which the compiler turns into SIMD (a plain
/// sum must keep its order and stays scalar): the portable path.
fn dot<E: CacheElem>(a: &[f32], b: &[E]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y.to_f32())
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i].to_f32();
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `out[i] = scale · q·kᵢ` for the keys `kᵢ = keys[i·stride..][..q.len()]`.
fn scores<E: CacheElem>(q: &[f32], keys: &[E], stride: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && q.len().is_multiple_of(8) {
        assert!(out.is_empty() || keys.len() >= (out.len() - 1) * stride + q.len());
        // SAFETY: AVX2, FMA and F16C were detected; the keys are in bounds (checked above).
        return unsafe { avx2::scores(q, keys, stride, scale, out) };
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = scale * dot(q, &keys[i * stride..][..q.len()]);
    }
}

/// `out = Σᵢ p[i] · vᵢ` for the values `vᵢ = vals[i·stride..][..out.len()]`.
fn weighted_sum<E: CacheElem>(p: &[f32], vals: &[E], stride: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && out.len().is_multiple_of(8) {
        assert!(p.is_empty() || vals.len() >= (p.len() - 1) * stride + out.len());
        // SAFETY: AVX2, FMA and F16C were detected; the values are in bounds (checked above).
        return unsafe { avx2::weighted_sum(p, vals, stride, out) };
    }
    out.fill(0.0);
    for (i, &pi) in p.iter().enumerate() {
        let v = &vals[i * stride..][..out.len()];
        out.iter_mut()
            .zip(v)
            .for_each(|(o, v)| *o += pi * v.to_f32());
    }
}

/// AVX2 + FMA + F16C kernels, chosen at run time, for head sizes that are multiples of 8.
/// Scores take four keys at a time and values accumulate in registers, so neither waits
/// on one chain of dependent additions.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::CacheElem;
    use std::arch::x86_64::*;

    /// The sums of four vectors' lanes, each as ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)).
    #[inline(always)]
    unsafe fn sum4(a: [__m256; 4]) -> __m128 {
        let h = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
    }

    /// One vector's lane sum, in the same order as [`sum4`].
    #[inline(always)]
    unsafe fn sum1(a: __m256) -> f32 {
        let h = _mm256_hadd_ps(a, a);
        let h = _mm256_hadd_ps(h, h);
        _mm_cvtss_f32(_mm_add_ps(
            _mm256_castps256_ps128(h),
            _mm256_extractf128_ps::<1>(h),
        ))
    }

    /// [`super::scores`], four keys at a time; the caller checked the CPU and the bounds.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores<E: CacheElem>(
        q: &[f32],
        keys: &[E],
        stride: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let (hd, n) = (q.len(), out.len());
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        let mut i = 0;
        while i + 4 <= n {
            let mut a = [_mm256_setzero_ps(); 4];
            for c in (0..hd).step_by(8) {
                let qv = _mm256_loadu_ps(qp.add(c));
                for (t, at) in a.iter_mut().enumerate() {
                    let k = E::load8(kp.add((i + t) * stride + c));
                    *at = _mm256_fmadd_ps(qv, k, *at);
                }
            }
            let s = _mm_mul_ps(sum4(a), _mm_set1_ps(scale));
            _mm_storeu_ps(out.as_mut_ptr().add(i), s);
            i += 4;
        }
        for (i, o) in out.iter_mut().enumerate().skip(i) {
            let mut a = _mm256_setzero_ps();
            for c in (0..hd).step_by(8) {
                let k = E::load8(kp.add(i * stride + c));
                a = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c)), k, a);
            }
            *o = sum1(a) * scale;
        }
    }

    /// [`super::weighted_sum`], 64 columns at a time in registers; the caller checked the
    /// CPU and the bounds.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum<E: CacheElem>(
        p: &[f32],
        vals: &[E],
        stride: usize,
        out: &mut [f32],
    ) {
        let hd = out.len();
        let mut c = 0;
        while c + 64 <= hd {
            columns::<E, 8>(p, vals, stride, c, out);
            c += 64;
        }
        while c < hd {
            columns::<E, 1>(p, vals, stride, c, out);
            c += 8;
        }
    }

    /// Columns `c .. c + 8·W` of the weighted sum, in `W` registers.
    #[inline(always)]
    unsafe fn columns<E: CacheElem, const W: usize>(
        p: &[f32],
        vals: &[E],
        stride: usize,
        c: usize,
        out: &mut [f32],
    ) {
        let mut acc = [_mm256_setzero_ps(); W];
        for (i, &pi) in p.iter().enumerate() {
            let pv = _mm256_set1_ps(pi);
            let row = vals.as_ptr().add(i * stride + c);
            for (r, ar) in acc.iter_mut().enumerate() {
                *ar = _mm256_fmadd_ps(pv, E::load8(row.add(8 * r)), *ar);
            }
        }
        for (r, ar) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * r), *ar);
        }
    }
}

/// Multiply-adds from which one call is split over candle's (spinning) barrier pool.
const PARALLEL_FROM: usize = 64 << 10;

impl OneQuery {
    /// The attention of every (sequence, query, head) row over keys and values of type
    /// `E`; `t` queries per sequence, the last `t` of `len` positions.
    fn run<E: CacheElem>(
        &self,
        (b, nh, nkv, t, len, hd): (usize, usize, usize, usize, usize, usize),
        q: &[f32],
        (k, ks): (&[E], [usize; 3]),
        (v, vs): (&[E], [usize; 3]),
    ) -> Vec<f32> {
        let rep = nh / nkv;
        // Output row r is head r % nh of query (r / nh) % t of sequence r / (nh t); the
        // queries are laid out (b, heads, t, hd).
        let attend = |r: usize, out: &mut [f32]| {
            let (h, j, s) = (r % nh, (r / nh) % t, r / (nh * t));
            let kh = h / rep;
            let first = self.pad[s];
            let end = len - t + j + 1;
            if end <= first {
                out.fill(0.0);
                return;
            }
            let qi = ((s * nh + h) * t + j) * hd;
            let q = &q[qi..qi + hd];
            let keys = &k[s * ks[0] + kh * ks[1] + first * ks[2]..];
            let vals = &v[s * vs[0] + kh * vs[1] + first * vs[2]..];
            let mut probs = vec![0f32; end - first];
            scores(q, keys, ks[2], self.scale, &mut probs);
            let max = probs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            exp_shifted_in_place(&mut probs, max);
            let sum: f32 = probs.iter().sum();
            weighted_sum(&probs, vals, vs[2], out);
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        };
        let rows = b * t * nh;
        let mut y = vec![0f32; rows * hd];
        // Each row reads two rows of the cache per key. Large calls split the rows over
        // candle's barrier pool, whose workers spin between jobs (waking rayon's pool
        // once per layer costs more than a small batch's attention).
        let pool = candle_core::utils::barrier_pool();
        let parts = pool.n_workers() + 1;
        if parts == 1 || 2 * hd * len * rows < PARALLEL_FROM {
            y.chunks_mut(hd)
                .enumerate()
                .for_each(|(r, out)| attend(r, out));
        } else {
            // More chunks than workers, taken as the workers free up: rows differ in
            // length (a prompt's rows; in a running batch, sequences at different
            // positions), and equal shares by count left workers waiting for the one
            // holding the longest rows.
            let per = rows.div_ceil(4 * parts);
            let chunks: Vec<Mutex<&mut [f32]>> = y.chunks_mut(per * hd).map(Mutex::new).collect();
            // Inline on the calling thread if it is a pool worker itself.
            pool.execute_chunked(chunks.len(), |range| {
                for c in range {
                    let mut out = chunks[c].lock().expect("chunk lock");
                    for (i, row) in out.chunks_mut(hd).enumerate() {
                        attend(c * per + i, row);
                    }
                }
            });
        }
        y
    }
}

impl CustomOp3 for OneQuery {
    fn name(&self) -> &'static str {
        "gatt-decode-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, nh, t, hd) = l1.shape().dims4()?;
        let (b2, nkv, len, hd2) = l2.shape().dims4()?;
        if t == 0
            || t > len
            || b2 != b
            || hd2 != hd
            || l3.shape() != l2.shape()
            || nkv == 0
            || nh % nkv != 0
        {
            bail!(
                "decode attention: queries {:?} against keys {:?} and values {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            )
        }
        if self.pad.len() != b || self.pad.iter().any(|&p| p >= len) {
            bail!(
                "decode attention: padding {:?} for {b} sequences of {len}",
                self.pad
            )
        }
        let (q, _) = strided::<f32>(s1, l1)?;
        let dims = (b, nh, nkv, t, len, hd);
        let y = match s2 {
            CpuStorage::F16(_) => self.run(dims, q, strided::<f16>(s2, l2)?, strided(s3, l3)?),
            _ => self.run(dims, q, strided::<f32>(s2, l2)?, strided(s3, l3)?),
        };
        Ok((CpuStorage::F32(y), Shape::from((b, t, nh * hd))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::randn;
    use candle_core::{DType, Device, D};

    #[test]
    fn equals_softmax_attention_over_each_sequences_own_keys() {
        let dev = Device::Cpu;
        // Few rows (one thread) and many (parallel chunks); 1, 2, 3 and 7 query heads per
        // key head; head sizes for the SIMD kernels (8, and 72 = one 64-column block and
        // a rest) and for the portable path (6); key counts with and without a rest after
        // fours.
        for (b, len, hd, nh, nkv) in [
            (3usize, 6usize, 8usize, 4usize, 2usize),
            (16, 300, 8, 9, 3),
            // Parallel with a short last chunk, and with fewer rows than chunks.
            (15, 300, 8, 9, 3),
            (2, 800, 8, 3, 1),
            (2, 7, 72, 4, 2),
            (3, 9, 6, 4, 2),
            (2, 13, 16, 7, 1),
            (2, 5, 8, 2, 2),
        ] {
            let cap = len + 5;
            let q = randn(0f32, 1.0, (b, nh, 1, hd), &dev).unwrap();
            // Keys and values read in place from a larger cache, as during decoding.
            let kc = randn(0f32, 1.0, (b, nkv, cap, hd), &dev).unwrap();
            let vc = randn(0f32, 1.0, (b, nkv, cap, hd), &dev).unwrap();
            let (k, v) = (kc.narrow(2, 0, len).unwrap(), vc.narrow(2, 0, len).unwrap());
            let pad: Vec<usize> = (0..b).map(|s| s % 3).collect();
            check_against_composed_ops(&q, &k, &v, &pad);
            // An f16 cache, against the same ops on its values widened to f32.
            let (k16, v16) = (f16_cache(&kc, len), f16_cache(&vc, len));
            let got = one_query(&q, &k16, &v16, &pad, 0.3).unwrap();
            let widened = (
                k16.to_dtype(DType::F32).unwrap(),
                v16.to_dtype(DType::F32).unwrap(),
            );
            let want = one_query(&q, &widened.0, &widened.1, &pad, 0.3).unwrap();
            // The same arithmetic on the same values.
            assert_eq!(crate::kernels::rows::max_diff(&got, &want), 0.0);
        }
    }

    /// The first `len` positions of an f16 copy of a cache, read in place.
    fn f16_cache(c: &Tensor, len: usize) -> Tensor {
        c.to_dtype(DType::F16).unwrap().narrow(2, 0, len).unwrap()
    }

    fn check_against_composed_ops(q: &Tensor, k: &Tensor, v: &Tensor, pad: &[usize]) {
        let (b, nh, _, hd) = q.dims4().unwrap();
        let len = k.dim(2).unwrap();
        let rep = nh / k.dim(1).unwrap();
        let got = one_query(q, k, v, pad, 0.3).unwrap();
        assert_eq!(got.dims(), &[b, 1, nh * hd]);
        for (s, &p) in pad.iter().enumerate() {
            for h in 0..nh {
                let qh = q.get(s).unwrap().get(h).unwrap(); // (1, hd)
                                                            // The positions sequence s sees of the key head that head h reads.
                let seen = |c: &Tensor| {
                    let c = c.get(s).unwrap().get(h / rep).unwrap();
                    c.narrow(0, p, len - p).unwrap()
                };
                let (kh, vh) = (seen(k), seen(v));
                let scores = (qh.matmul(&kh.t().unwrap()).unwrap() * 0.3).unwrap();
                let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
                let want = probs.matmul(&vh).unwrap().flatten_all().unwrap();
                let have = got
                    .get(s)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .narrow(0, h * hd, hd)
                    .unwrap();
                let diff: f32 = (want - have)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert!(diff < 1e-5, "sequence {s} head {h}: {diff}");
            }
        }
    }

    /// Every row of a block of queries is bit for bit the decoding step at its position
    /// over the keys up to it, and queries inside the padding give zeros.
    #[test]
    fn a_block_of_queries_equals_one_decoding_step_per_row() {
        let dev = Device::Cpu;
        for (b, len, t, hd, nh, nkv) in [
            (2usize, 9usize, 5usize, 8usize, 4usize, 2usize),
            (1, 300, 300, 16, 6, 3),
            (3, 40, 40, 6, 2, 1),
        ] {
            let q = randn(0f32, 1.0, (b, nh, t, hd), &dev).unwrap();
            let k = randn(0f32, 1.0, (b, nkv, len, hd), &dev)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap();
            let v = randn(0f32, 1.0, (b, nkv, len, hd), &dev)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap();
            let pad: Vec<usize> = (0..b).map(|s| (s * 3) % len.min(7)).collect();
            let block = causal_rows(&q, &k, &v, &pad, 0.3).unwrap();
            assert_eq!(block.dims(), &[b, t, nh * hd]);
            for j in 0..t {
                let at = len - t + j;
                let row = block.narrow(1, j, 1).unwrap();
                for (s, &p) in pad.iter().enumerate() {
                    let got = row.get(s).unwrap();
                    if at < p {
                        let zero = got.abs().unwrap().max_all().unwrap();
                        assert_eq!(zero.to_scalar::<f32>().unwrap(), 0.0);
                        continue;
                    }
                    let one = |x: &Tensor| x.narrow(0, s, 1).unwrap();
                    let step = one_query(
                        &one(&q).narrow(2, j, 1).unwrap(),
                        &one(&k).narrow(2, 0, at + 1).unwrap(),
                        &one(&v).narrow(2, 0, at + 1).unwrap(),
                        &[p],
                        0.3,
                    )
                    .unwrap();
                    let want = step.get(0).unwrap();
                    assert_eq!(
                        got.to_vec2::<f32>().unwrap(),
                        want.to_vec2::<f32>().unwrap(),
                        "sequence {s}, query {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn padding_that_hides_every_key_is_an_error() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 1, 4), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 1, 3, 4), candle_core::DType::F32, &dev).unwrap();
        assert!(one_query(&q, &k, &k, &[3], 1.0).is_err());
    }
}
