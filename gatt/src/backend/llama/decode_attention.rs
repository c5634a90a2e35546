//! Attention of one new token per sequence over its cached keys and values, in one pass
//! per (sequence, head), reading the cache in place.
//!
//! Decoding a batch otherwise runs, for every sequence and layer, about ten small tensor
//! ops (slices, copies, two products, the softmax, a concatenation); at 16 sequences
//! that bookkeeping costs more than the attention arithmetic. Decoding only (no backward
//! pass), on the CPU; other devices use the general path.

use super::exp::exp_shifted_in_place;
use super::qmatvec::has_avx2;
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// `q` (b, heads, 1, hd) against keys and values (b, kv_heads, len, hd), where sequence
/// `s` sees positions `pad[s]..len`; returns (b, 1, heads*hd), ready for the output
/// projection. Query heads share key heads in groups of heads / kv_heads.
pub fn one_query(q: &Tensor, k: &Tensor, v: &Tensor, pad: &[usize], scale: f32) -> Result<Tensor> {
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

/// Elements of an f32 tensor whose last dimension is contiguous, with its layout's
/// (b, head, position) strides.
fn strided<'a>(s: &'a CpuStorage, l: &Layout) -> Result<(&'a [f32], [usize; 3])> {
    let CpuStorage::F32(v) = s else {
        bail!("decode attention: expected f32")
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
/// sum must keep its order and stays scalar). Always inlined, so that the AVX2 twins
/// below compile it with their features.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `out += p * v`.
#[inline(always)]
fn axpy(p: f32, v: &[f32], out: &mut [f32]) {
    out.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
}

/// The same two loops compiled for AVX2 + FMA, chosen at run time (a portable build
/// otherwise gets 4-wide SSE without fused multiply-add).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        super::dot(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn axpy(p: f32, v: &[f32], out: &mut [f32]) {
        super::axpy(p, v, out)
    }
}

/// Multiply-adds from which one call is split over candle's (spinning) barrier pool.
const PARALLEL_FROM: usize = 64 << 10;

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
        if t != 1 || b2 != b || hd2 != hd || l3.shape() != l2.shape() || nkv == 0 {
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
        let (q, _) = strided(s1, l1)?;
        let (k, ks) = strided(s2, l2)?;
        let (v, vs) = strided(s3, l3)?;
        let rep = nh / nkv;
        let simd = cfg!(target_arch = "x86_64") && has_avx2();
        let dot = |a: &[f32], b: &[f32]| -> f32 {
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: AVX2 and FMA were detected at run time.
                return unsafe { avx2::dot(a, b) };
            }
            dot(a, b)
        };
        let axpy = |p: f32, v: &[f32], out: &mut [f32]| {
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: as above.
                return unsafe { avx2::axpy(p, v, out) };
            }
            axpy(p, v, out)
        };
        // Output row r is head r % nh of sequence r / nh.
        let attend = |r: usize, out: &mut [f32]| {
            let (s, h) = (r / nh, r % nh);
            let kh = h / rep;
            let q = &q[r * hd..(r + 1) * hd];
            let first = self.pad[s];
            let key = |j: usize| &k[s * ks[0] + kh * ks[1] + j * ks[2]..][..hd];
            let val = |j: usize| &v[s * vs[0] + kh * vs[1] + j * vs[2]..][..hd];
            let mut probs: Vec<f32> = (first..len).map(|j| self.scale * dot(q, key(j))).collect();
            let max = probs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            exp_shifted_in_place(&mut probs, max);
            let mut sum = 0f32;
            for (j, &p) in (first..len).zip(&probs) {
                sum += p;
                axpy(p, val(j), out);
            }
            let inv = 1.0 / sum;
            out.iter_mut().for_each(|o| *o *= inv);
        };
        let mut y = vec![0f32; b * nh * hd];
        // Each row reads two rows of the cache per key. Large calls split the rows over
        // candle's barrier pool, whose workers spin between jobs (waking rayon's pool
        // once per layer costs more than a small batch's attention).
        let pool = candle_core::utils::barrier_pool();
        let parts = pool.n_workers() + 1;
        if parts == 1 || 2 * hd * len * b * nh < PARALLEL_FROM {
            y.chunks_mut(hd)
                .enumerate()
                .for_each(|(r, out)| attend(r, out));
        } else {
            let per = (b * nh).div_ceil(parts);
            let chunks: Vec<Mutex<&mut [f32]>> = y.chunks_mut(per * hd).map(Mutex::new).collect();
            pool.execute(|p| {
                if let Some(chunk) = chunks.get(p) {
                    let mut out = chunk.lock().expect("chunk lock");
                    for (i, row) in out.chunks_mut(hd).enumerate() {
                        attend(p * per + i, row);
                    }
                }
            });
        }
        Ok((CpuStorage::F32(y), Shape::from((b, 1, nh * hd))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    #[test]
    fn equals_softmax_attention_over_each_sequences_own_keys() {
        let dev = Device::Cpu;
        // Few rows (one thread) and many (parallel blocks); two query heads per key head.
        for (b, len) in [(3usize, 6usize), (16, 300)] {
            let (nh, nkv, hd, cap) = (4, 2, 8, len + 5);
            let q = Tensor::randn(0f32, 1.0, (b, nh, 1, hd), &dev).unwrap();
            // Keys and values read in place from a larger cache, as during decoding.
            let kc = Tensor::randn(0f32, 1.0, (b, nkv, cap, hd), &dev).unwrap();
            let vc = Tensor::randn(0f32, 1.0, (b, nkv, cap, hd), &dev).unwrap();
            let (k, v) = (kc.narrow(2, 0, len).unwrap(), vc.narrow(2, 0, len).unwrap());
            let pad: Vec<usize> = (0..b).map(|s| s % 3).collect();
            let got = one_query(&q, &k, &v, &pad, 0.3).unwrap();
            assert_eq!(got.dims(), &[b, 1, nh * hd]);
            for (s, &p) in pad.iter().enumerate() {
                for h in 0..nh {
                    let qh = q.get(s).unwrap().get(h).unwrap(); // (1, hd)
                    let kh = k
                        .get(s)
                        .unwrap()
                        .get(h / 2)
                        .unwrap()
                        .narrow(0, p, len - p)
                        .unwrap();
                    let vh = v
                        .get(s)
                        .unwrap()
                        .get(h / 2)
                        .unwrap()
                        .narrow(0, p, len - p)
                        .unwrap();
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
    }

    #[test]
    fn padding_that_hides_every_key_is_an_error() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 1, 4), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 1, 3, 4), candle_core::DType::F32, &dev).unwrap();
        assert!(one_query(&q, &k, &k, &[3], 1.0).is_err());
    }
}
