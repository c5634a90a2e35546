//! RMS normalization, `y = x / sqrt(mean(x^2) + eps) * w` over the last dimension, with
//! a one-pass backward for training.
//!
//! candle's fused kernel has no backward pass, and the composed form (square, mean, add,
//! sqrt, divide, multiply) is six passes over the activations forward and about twice
//! that backward, each into a fresh buffer; the model normalizes twice per layer. On
//! other devices than the CPU training uses the composed form. Inference on the CPU uses
//! this forward pass too: candle's fused kernel sums the squares one at a time.

use super::rows::{contiguous_f32, for_row_blocks, for_row_blocks_by_work};
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// Normalizes `x` (.., hidden) and scales by `w` (hidden).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, training: bool) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        return x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps });
    }
    if !training {
        return candle_nn::ops::rms_norm(x, w, eps);
    }
    candle_nn::ops::rms_norm_slow(x, w, eps)
}

/// `1 / sqrt(mean(x^2) + eps)` of one row. The squares are summed in eight lanes, which
/// the compiler turns into SIMD (a plain sum keeps its order and stays scalar: with 16
/// sequences decoding, the model's norms took 4% of a step that way).
fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for i in 0..8 {
            lanes[i] += c[i] * c[i];
        }
    }
    let ss = lanes.iter().sum::<f32>() + tail;
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

/// `x / rms(x) * w` of every row of `x` (rows of `w.len()` elements).
pub(super) fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let mut y = vec![0f32; x.len()];
    for_row_blocks(&mut y, h, |first, ys| {
        for (i, y) in ys.chunks_mut(h).enumerate() {
            let x = &x[(first + i) * h..(first + i + 1) * h];
            let r = inv_rms(x, eps);
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = x * r * w;
            }
        }
    });
    y
}

/// The gradient of the rows' input for the output gradient `g`, written to `dx` (added
/// to it when `accumulate`): `r (g w) - x r^3 mean(g w x)` per row, r = 1 / rms(x).
pub(super) fn rms_norm_grad_x_rows(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    eps: f32,
    dx: &mut [f32],
    accumulate: bool,
) {
    let h = w.len();
    for_row_blocks(dx, h, |first, ds| {
        for (i, d) in ds.chunks_mut(h).enumerate() {
            let rows = (first + i) * h..(first + i + 1) * h;
            let (x, g) = (&x[rows.clone()], &g[rows]);
            let r = inv_rms(x, eps);
            let dot: f32 = x.iter().zip(g).zip(w).map(|((x, g), w)| x * g * w).sum();
            let c = r * r * r * dot / h as f32;
            for (((d, &x), &g), &w) in d.iter_mut().zip(x).zip(g).zip(w) {
                let v = r * g * w - x * c;
                *d = if accumulate { *d + v } else { v };
            }
        }
    });
}

/// The gradient of the weights (h): the sum over rows of `g x r`.
pub(super) fn rms_norm_grad_w_rows(x: &[f32], g: &[f32], eps: f32, h: usize) -> Vec<f32> {
    // Sums of 64 rows each, added in order: the same bits whatever the thread count.
    const ROWS: usize = 64;
    let n = x.len() / h.max(1);
    let mut partial = vec![0f32; n.div_ceil(ROWS) * h];
    for_row_blocks_by_work(&mut partial, h, ROWS * h * 3, |first, sums| {
        for (b, acc) in sums.chunks_exact_mut(h.max(1)).enumerate() {
            let rows = (first + b) * ROWS..((first + b + 1) * ROWS).min(n);
            for i in rows {
                let (x, g) = (&x[i * h..(i + 1) * h], &g[i * h..(i + 1) * h]);
                let r = inv_rms(x, eps);
                for ((a, &x), &g) in acc.iter_mut().zip(x).zip(g) {
                    *a += g * x * r;
                }
            }
        }
    });
    let mut dw = vec![0f32; h];
    for block in partial.chunks_exact(h.max(1)) {
        dw.iter_mut().zip(block).for_each(|(a, b)| *a += b);
    }
    dw
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "gatt-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "rms norm")?;
        let w = contiguous_f32(s2, l2, "rms norm")?;
        let h = w.len();
        if h == 0 || l1.dims().last() != Some(&h) {
            bail!("rms norm: {:?} rows against {h} weights", l1.shape())
        }
        Ok((
            CpuStorage::F32(rms_norm_rows(x, w, self.eps)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let eps = self.eps;
        let dx = if x.track_op() {
            Some(x.apply_op3_no_bwd(w, &grad, &RmsNormGradX { eps })?)
        } else {
            None
        };
        // A frozen weight (LoRA) needs no gradient; skip the reduction over rows.
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &RmsNormGradW { eps })?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// dx = r * (g * w) - x * r^3 * mean(g * w * x), per row (r = inv_rms(x)).
struct RmsNormGradX {
    eps: f32,
}

impl CustomOp3 for RmsNormGradX {
    fn name(&self) -> &'static str {
        "gatt-rms-norm-grad-x"
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
        let x = contiguous_f32(s1, l1, "rms norm grad")?;
        let w = contiguous_f32(s2, l2, "rms norm grad")?;
        let g = contiguous_f32(s3, l3, "rms norm grad")?;
        let mut dx = vec![0f32; x.len()];
        rms_norm_grad_x_rows(x, w, g, self.eps, &mut dx, false);
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// dw = sum over rows of g * x * r.
struct RmsNormGradW {
    eps: f32,
}

impl CustomOp2 for RmsNormGradW {
    fn name(&self) -> &'static str {
        "gatt-rms-norm-grad-w"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "rms norm grad")?;
        let g = contiguous_f32(s2, l2, "rms norm grad")?;
        let h = *l1.dims().last().unwrap_or(&0);
        let dw = rms_norm_grad_w_rows(x, g, self.eps, h);
        Ok((CpuStorage::F32(dw), Shape::from(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::{max_diff, probe_grads, randn, var_randn};
    use candle_core::Device;

    #[test]
    fn values_and_gradients_equal_the_composed_ops() {
        // One thread (few rows) and parallel blocks (many rows).
        for rows in [3, 700] {
            let dev = Device::Cpu;
            let x = var_randn(0f32, 2.0, (rows, 48), &dev).unwrap();
            let w = var_randn(1f32, 0.3, 48, &dev).unwrap();
            let probe = randn(0f32, 1.0, (rows, 48), &dev).unwrap();
            let ours = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5, true).unwrap();
            let theirs = candle_nn::ops::rms_norm_slow(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-5);
            let g1 = probe_grads(&ours, &probe);
            let g2 = probe_grads(&theirs, &probe);
            for v in [x.as_tensor(), w.as_tensor()] {
                let (a, b) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                let scale = b
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(max_diff(a, b) < 1e-4 * scale.max(1.0), "rows {rows}");
            }
        }
    }

    #[test]
    fn a_frozen_weight_gets_no_gradient() {
        let dev = Device::Cpu;
        let x = var_randn(0f32, 1.0, (4, 8), &dev).unwrap();
        let w = Tensor::ones(8, DType::F32, &dev).unwrap();
        let g = rms_norm(x.as_tensor(), &w, 1e-5, true)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(x.as_tensor()).is_some());
        assert!(g.get(&w).is_none());
    }
}
