//! Attention probabilities: scale, causal mask and softmax over each row of the scores
//! in one pass, with a one-pass backward.
//!
//! Built from candle's ops, this is about ten passes over a heads x len x len tensor
//! (mask built, repeated and added, then scale, max, subtract, exp, sum, divide) and as
//! many again backwards; for sequences of a few hundred tokens that cost about as much
//! as the matrix products of training. On other devices than the CPU the probabilities
//! come from candle's ops (candle's fused softmax kernels have no backward pass, so
//! training uses the composed one).

use super::exp::exp_shifted_in_place;
use super::rows::{contiguous_f32, for_row_blocks};
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, D,
};

/// Row-wise softmax of `scale * scores` (.., rows, n_k), where row `r` is query
/// `r % n_q` of the last `n_q` positions and sees the keys up to its own position.
pub fn causal(scores: &Tensor, n_q: usize, scale: f64, training: bool) -> Result<Tensor> {
    let n_k = scores.dim(D::Minus1)?;
    if n_q == 0 || n_q > n_k {
        bail!("causal softmax: {n_q} queries over {n_k} keys")
    }
    if scores.device().is_cpu() && scores.dtype() == DType::F32 {
        let op = CausalSoftmax {
            n_q,
            scale: scale as f32,
        };
        return scores.contiguous()?.apply_op1(op);
    }
    let mut att = (scores * scale)?;
    if n_q > 1 {
        let rows = scores.dim(D::Minus2)?;
        let mask = causal_mask(n_q, n_k, scores.device())?.repeat((rows / n_q, 1))?;
        att = att.broadcast_add(&mask)?;
    }
    if training {
        candle_nn::ops::softmax(&att, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&att)
    }
}

/// Queries (the last `q` of `k` positions) see only earlier and equal positions.
fn causal_mask(q: usize, k: usize, device: &Device) -> Result<Tensor> {
    let offset = k - q;
    let mask: Vec<f32> = (0..q)
        .flat_map(|i| (0..k).map(move |j| if j <= i + offset { 0.0 } else { MASKED }))
        .collect();
    Tensor::from_vec(mask, (q, k), device)
}

/// Additive mask value for positions a query must not see (exp underflows to 0).
const MASKED: f32 = -1e9;

/// Softmax of `scale * row`, in place.
pub(super) fn softmax_in_place(row: &mut [f32], scale: f32) {
    row.iter_mut().for_each(|y| *y *= scale);
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    exp_shifted_in_place(row, max);
    let sum: f32 = row.iter().sum();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|y| *y *= inv);
}

/// The softmax's backward pass for one row, in place: `d` holds the gradient of the
/// probabilities `p` on entry and that of the scores on return,
/// `scale * p * (d - sum(p * d))`.
pub(super) fn softmax_grad_in_place(p: &[f32], d: &mut [f32], scale: f32) {
    let dot: f32 = p.iter().zip(d.iter()).map(|(p, g)| p * g).sum();
    for (d, &p) in d.iter_mut().zip(p) {
        *d = scale * p * (*d - dot);
    }
}

struct CausalSoftmax {
    n_q: usize,
    scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "causal softmax")?;
        let n_k = layout.dims()[layout.dims().len() - 1];
        let (n_q, scale) = (self.n_q, self.scale);
        let mut y = vec![0f32; x.len()];
        for_row_blocks(&mut y, n_k, |first, ys| {
            for (i, y) in ys.chunks_mut(n_k).enumerate() {
                let r = first + i;
                let x = &x[r * n_k..(r + 1) * n_k];
                let seen = r % n_q + 1 + (n_k - n_q);
                y[..seen].copy_from_slice(&x[..seen]);
                softmax_in_place(&mut y[..seen], scale);
            }
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _scores: &Tensor, probs: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let op = SoftmaxGrad { scale: self.scale };
        Ok(Some(probs.apply_op2_no_bwd(&grad, &op)?))
    }
}

/// d scores = scale * p * (g - sum(p * g)) per row; masked keys have p = 0.
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "causal-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = contiguous_f32(s1, l1, "causal softmax")?;
        let g = contiguous_f32(s2, l2, "causal softmax")?;
        let n_k = l1.dims()[l1.dims().len() - 1];
        let scale = self.scale;
        let mut d = vec![0f32; p.len()];
        for_row_blocks(&mut d, n_k, |first, ds| {
            for (i, d) in ds.chunks_mut(n_k).enumerate() {
                let r = first + i;
                let p = &p[r * n_k..(r + 1) * n_k];
                d.copy_from_slice(&g[r * n_k..(r + 1) * n_k]);
                softmax_grad_in_place(p, d, scale);
            }
        });
        Ok((CpuStorage::F32(d), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::{max_diff, probe_grads, randn, var_randn};

    /// The composed path (mask, scale, candle's softmax) as the reference.
    fn reference(scores: &Tensor, n_q: usize, scale: f64) -> Tensor {
        let (rows, n_k) = scores.dims2().unwrap();
        let mask = causal_mask(n_q, n_k, &Device::Cpu)
            .unwrap()
            .repeat((rows / n_q, 1))
            .unwrap();
        let att = (scores * scale).unwrap().broadcast_add(&mask).unwrap();
        candle_nn::ops::softmax(&att, D::Minus1).unwrap()
    }

    #[test]
    fn probabilities_and_gradients_equal_the_composed_ops() {
        // Small (one thread) and large (parallel blocks) cases; prompt (n_q = n_k),
        // continuation (n_q < n_k) and single-query decoding.
        for (groups, n_q, n_k) in [(3, 5, 5), (2, 4, 9), (3, 1, 7), (6, 150, 170)] {
            let s = var_randn(0f32, 3.0, (groups * n_q, n_k), &Device::Cpu).unwrap();
            let w = randn(0f32, 1.0, (groups * n_q, n_k), &Device::Cpu).unwrap();
            let ours = causal(s.as_tensor(), n_q, 0.125, true).unwrap();
            let theirs = reference(s.as_tensor(), n_q, 0.125);
            assert!(max_diff(&ours, &theirs) < 1e-6, "{groups} {n_q} {n_k}");
            let g_ours = probe_grads(&ours, &w);
            let g_theirs = probe_grads(&theirs, &w);
            let (a, b) = (g_ours.get(&s).unwrap(), g_theirs.get(&s).unwrap());
            assert!(max_diff(a, b) < 1e-6, "{groups} {n_q} {n_k}");
        }
    }

    #[test]
    fn masked_keys_get_zero_probability() {
        let s = randn(0f32, 1.0, (4, 4), &Device::Cpu).unwrap();
        let p: Vec<Vec<f32>> = causal(&s, 4, 1.0, false).unwrap().to_vec2().unwrap();
        for (i, row) in p.iter().enumerate() {
            assert!(row[i + 1..].iter().all(|&v| v == 0.0));
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(causal(&s, 5, 1.0, false).is_err());
    }
}
