//! The output projection and cross-entropy in one op (training): the negative
//! log-likelihood of each row's target under `h w`, computed a block of rows at a time,
//! so the (rows x vocab) logits are never all in memory, forward or backward.
//!
//! With the default model's 49,152-token vocabulary, 2,048 loss rows of logits are
//! 400 MB, and the composed ops (product, log-softmax, gather, and their backward passes)
//! hold several such tensors at once. Two ops:
//! - [`linear_nll`], each row's loss: the forward pass keeps only each row's log-sum-exp;
//!   the backward pass recomputes a block's logits from it (one more product of the
//!   block) and turns them into the gradient in place: `softmax - one_hot(target)`, times
//!   the row's incoming gradient.
//! - [`linear_cross_entropy`], the weighted sum of the rows' losses (a training loss):
//!   its incoming gradients are the known weights times one scalar, so the forward pass
//!   computes the gradients while each block's logits are at hand (as Liger-Kernel's fused
//!   linear cross-entropy does) and the backward pass only scales them; no second product
//!   of the logits.
//!
//! CPU, f32; other devices use the composed ops.

use super::matmul::{mm, M};
use super::rows::{contiguous_f32, for_row_blocks_by_work};
use crate::kernels::exp::exp_shifted_in_place;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// Rows of logits alive at once (128 x 49,152 x 4 bytes: 25 MB).
const BLOCK_ROWS: usize = 128;

/// Negative log-likelihood in nats, (n,) f32, of `targets[i]` under the logits of row
/// `i` of `h` (n, hidden) times `w` (hidden, vocab; any strides, e.g. the transposed
/// embedding of a tied model). Differentiable in both `h` and `w`.
///
/// # Errors
///
/// When the shapes do not fit, a target is outside the vocabulary, or an operand is not an
/// f32 tensor on the CPU.
pub fn linear_nll(h: &Tensor, w: &Tensor, targets: &[u32]) -> Result<Tensor> {
    check(h, w, targets)?;
    let op = LinearNll {
        targets: targets.to_vec(),
        lse: Mutex::new(Vec::new()),
    };
    h.contiguous()?.apply_op2(w, op)
}

struct LinearNll {
    targets: Vec<u32>,
    /// Each row's log-sum-exp of its logits, from the forward pass.
    lse: Mutex<Vec<f32>>,
}

/// `w` (hidden, vocab) as gemm reads it: base slice and (row, column) strides.
struct Weight<'a> {
    data: &'a [f32],
    hidden: usize,
    vocab: usize,
    rs: isize,
    cs: isize,
}

impl<'a> Weight<'a> {
    /// The weights as a product operand.
    fn view(&self) -> M<'a> {
        M(self.data, self.rs, self.cs)
    }

    fn of(storage: &'a CpuStorage, layout: &Layout) -> Result<Self> {
        let CpuStorage::F32(v) = storage else {
            bail!("linear cross-entropy: expected f32 weights")
        };
        let [hidden, vocab] = *layout.shape().dims() else {
            bail!("linear cross-entropy: expected (hidden, vocab) weights")
        };
        let st = layout.stride();
        Ok(Weight {
            data: &v[layout.start_offset()..],
            hidden,
            vocab,
            rs: st[0] as isize,
            cs: st[1] as isize,
        })
    }
}

/// The hidden rows (n x hidden, contiguous) and the weights of either op's forward pass.
fn operands<'a>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
    n: usize,
) -> Result<(&'a [f32], Weight<'a>)> {
    let h = contiguous_f32(s1, l1, "linear cross-entropy")?;
    let w = Weight::of(s2, l2)?;
    if h.len() != n * w.hidden {
        bail!(
            "linear cross-entropy: {:?} rows for {:?} weights",
            l1.shape(),
            l2.shape()
        )
    }
    Ok((h, w))
}

/// `dst (m x vocab) = h_rows (m x hidden) w`.
fn logits(h_rows: &[f32], w: &Weight, dst: &mut [f32]) {
    let m = h_rows.len() / w.hidden;
    debug_assert_eq!(dst.len(), m * w.vocab);
    mm(
        m,
        w.vocab,
        w.hidden,
        dst,
        0.0,
        M::rows(h_rows, w.hidden),
        w.view(),
        1.0,
    );
}

/// `grad_h (m x hidden) = d_logits (m x vocab) w^T`.
fn rows_grad(d_logits: &[f32], w: &Weight, grad_h: &mut [f32]) {
    let m = d_logits.len() / w.vocab;
    debug_assert_eq!(grad_h.len(), m * w.hidden);
    let a = M::rows(d_logits, w.vocab);
    mm(m, w.hidden, w.vocab, grad_h, 0.0, a, w.view().t(), 1.0);
}

/// `grad_w (hidden x vocab) = h_rows (m x hidden)^T d_logits (m x vocab)`, or `+=` with
/// `accumulate`.
fn weights_grad(
    h_rows: &[f32],
    d_logits: &[f32],
    w: &Weight,
    grad_w: &mut [f32],
    accumulate: bool,
) {
    let m = d_logits.len() / w.vocab;
    debug_assert_eq!(h_rows.len(), m * w.hidden);
    debug_assert_eq!(grad_w.len(), w.hidden * w.vocab);
    let (a, b) = (M::rows(h_rows, w.hidden).t(), M::rows(d_logits, w.vocab));
    let alpha = if accumulate { 1.0 } else { 0.0 };
    mm(w.hidden, w.vocab, m, grad_w, alpha, a, b, 1.0);
}

/// Largest element and log-sum-exp of a row; the row is left holding `exp(x - max)`.
fn max_and_lse(row: &mut [f32]) -> (f32, f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    exp_shifted_in_place(row, max);
    // Summed in f64: 49,152 terms in f32 lose about 1e-5 of the sum.
    let sum: f64 = row.iter().map(|&v| v as f64).sum();
    (max, max + sum.ln() as f32)
}

impl CustomOp2 for LinearNll {
    fn name(&self) -> &'static str {
        "gatt-linear-nll"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = self.targets.len();
        let (h, w) = operands(s1, l1, s2, l2, n)?;
        let mut nll = vec![0f32; n];
        let mut lse = vec![0f32; n];
        let mut buf = vec![0f32; BLOCK_ROWS.min(n) * w.vocab];
        for start in (0..n).step_by(BLOCK_ROWS) {
            let m = BLOCK_ROWS.min(n - start);
            let block = &mut buf[..m * w.vocab];
            logits(&h[start * w.hidden..(start + m) * w.hidden], &w, block);
            let targets = &self.targets[start..start + m];
            let out = Mutex::new((&mut nll[start..start + m], &mut lse[start..start + m]));
            for_row_blocks_by_work(block, w.vocab, w.vocab * 4, |first, rows| {
                for (i, row) in rows.chunks_exact_mut(w.vocab).enumerate() {
                    let r = first + i;
                    let target_logit = row[targets[r] as usize];
                    let (_, l) = max_and_lse(row);
                    let mut out = out.lock().expect("nll rows");
                    out.0[r] = l - target_logit;
                    out.1[r] = l;
                }
            });
        }
        *self.lse.lock().expect("log-sum-exp") = lse;
        Ok((CpuStorage::F32(nll), Shape::from(n)))
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        _nll: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let lse = self.lse.lock().expect("log-sum-exp").clone();
        let n = self.targets.len();
        let (h_storage, h_layout) = h.storage_and_layout();
        let (w_storage, w_layout) = w.storage_and_layout();
        let (candle_core::Storage::Cpu(hs), candle_core::Storage::Cpu(ws)) =
            (&*h_storage, &*w_storage)
        else {
            bail!("linear cross-entropy: operands off the CPU")
        };
        let hv = contiguous_f32(hs, h_layout, "linear cross-entropy")?;
        let wt = Weight::of(ws, w_layout)?;
        let (hidden, vocab) = (wt.hidden, wt.vocab);
        let want_w = w.track_op();
        let mut grad_h = vec![0f32; n * hidden];
        let mut grad_w = if want_w {
            vec![0f32; hidden * vocab]
        } else {
            Vec::new()
        };
        let mut buf = vec![0f32; BLOCK_ROWS.min(n) * vocab];
        for start in (0..n).step_by(BLOCK_ROWS) {
            let m = BLOCK_ROWS.min(n - start);
            let block = &mut buf[..m * vocab];
            let h_rows = &hv[start * hidden..(start + m) * hidden];
            logits(h_rows, &wt, block);
            let (targets, lse, grad) = (
                &self.targets[start..start + m],
                &lse[start..start + m],
                &grad[start..start + m],
            );
            // d nll / d logits = softmax - one_hot(target), times the row's gradient.
            for_row_blocks_by_work(block, vocab, vocab * 3, |first, rows| {
                for (i, row) in rows.chunks_exact_mut(vocab).enumerate() {
                    let r = first + i;
                    exp_shifted_in_place(row, lse[r]);
                    row[targets[r] as usize] -= 1.0;
                    let g = grad[r];
                    row.iter_mut().for_each(|x| *x *= g);
                }
            });
            rows_grad(
                block,
                &wt,
                &mut grad_h[start * hidden..(start + m) * hidden],
            );
            if want_w {
                weights_grad(h_rows, block, &wt, &mut grad_w, start > 0);
            }
        }
        drop((h_storage, w_storage));
        let grad_h = Tensor::from_vec(grad_h, (n, hidden), h.device())?;
        let grad_w = if want_w {
            Some(Tensor::from_vec(grad_w, (hidden, vocab), w.device())?)
        } else {
            None
        };
        Ok((Some(grad_h), grad_w))
    }
}

/// `sum_i weights[i] * nll_i`, a scalar f32 in nats, with `nll_i` the negative
/// log-likelihood of `targets[i]` under row `i` of `h` (n, hidden) times `w` (hidden,
/// vocab; any strides): the training loss of a micro-batch whose rows carry their share
/// of the step (`weights`, e.g. 1 / loss tokens of the step). Differentiable in `h` and
/// `w`; the gradients are computed in the forward pass, and only for the operands that
/// track them (`Tensor::track_op`: variables and what derives from them).
///
/// Equals `(linear_nll(h, w, targets) * weights).sum_all()` up to rounding, and its
/// gradients those of that expression, with one product of the logits fewer.
///
/// # Errors
///
/// As [`linear_nll`], and when `weights` does not hold one weight per row.
pub fn linear_cross_entropy(
    h: &Tensor,
    w: &Tensor,
    targets: &[u32],
    weights: &[f32],
) -> Result<Tensor> {
    let n = h.dims2()?.0;
    if weights.len() != n {
        bail!(
            "linear cross-entropy: {} weights for {n} rows",
            weights.len()
        )
    }
    check(h, w, targets)?;
    let h = h.contiguous()?;
    let op = WeightedNll {
        targets: targets.to_vec(),
        weights: weights.to_vec(),
        want_h: h.track_op(),
        want_w: w.track_op(),
        grads: Mutex::new((None, None)),
    };
    h.apply_op2(w, op)
}

/// What [`linear_nll`] and [`linear_cross_entropy`] refuse: operands off the CPU or not
/// f32, shapes that do not fit, a target outside the vocabulary.
fn check(h: &Tensor, w: &Tensor, targets: &[u32]) -> Result<()> {
    if !h.device().is_cpu() || h.dtype() != DType::F32 || w.dtype() != DType::F32 {
        bail!("linear cross-entropy: expected f32 tensors on the CPU")
    }
    let (n, _) = h.dims2()?;
    let (_, vocab) = w.dims2()?;
    if targets.len() != n {
        bail!(
            "linear cross-entropy: {} targets for {n} rows",
            targets.len()
        )
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("linear cross-entropy: target {t} outside a vocabulary of {vocab}")
    }
    Ok(())
}

struct WeightedNll {
    targets: Vec<u32>,
    weights: Vec<f32>,
    want_h: bool,
    want_w: bool,
    /// The gradients of `h` and `w` for an incoming gradient of 1, from the forward pass.
    grads: Mutex<(Option<Tensor>, Option<Tensor>)>,
}

impl CustomOp2 for WeightedNll {
    fn name(&self) -> &'static str {
        "gatt-linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (targets, weights) = (&self.targets, &self.weights);
        let n = targets.len();
        let (h, w) = operands(s1, l1, s2, l2, n)?;
        let (hidden, vocab) = (w.hidden, w.vocab);
        let mut loss = 0f64;
        let mut grad_h = if self.want_h {
            vec![0f32; n * hidden]
        } else {
            Vec::new()
        };
        let mut grad_w = if self.want_w {
            vec![0f32; hidden * vocab]
        } else {
            Vec::new()
        };
        let grads = self.want_h || self.want_w;
        let mut buf = vec![0f32; BLOCK_ROWS.min(n) * vocab];
        for start in (0..n).step_by(BLOCK_ROWS) {
            let m = BLOCK_ROWS.min(n - start);
            let block = &mut buf[..m * vocab];
            let h_rows = &h[start * hidden..(start + m) * hidden];
            logits(h_rows, &w, block);
            let (targets, weights) = (&targets[start..start + m], &weights[start..start + m]);
            let block_loss = Mutex::new(0f64);
            for_row_blocks_by_work(block, vocab, vocab * 5, |first, rows| {
                let mut part = 0f64;
                for (i, row) in rows.chunks_exact_mut(vocab).enumerate() {
                    let (r, t) = (first + i, targets[first + i] as usize);
                    let target_logit = row[t];
                    let (max, lse) = max_and_lse(row);
                    part += weights[r] as f64 * (lse - target_logit) as f64;
                    if grads {
                        // The row holds exp(x - max); d loss / d logits is
                        // weight * (softmax - one_hot(target)).
                        let to_prob = weights[r] * (max - lse).exp();
                        row.iter_mut().for_each(|x| *x *= to_prob);
                        row[t] -= weights[r];
                    }
                }
                *block_loss.lock().expect("loss lock") += part;
            });
            loss += block_loss.into_inner().expect("loss lock");
            if self.want_h {
                rows_grad(block, &w, &mut grad_h[start * hidden..(start + m) * hidden]);
            }
            if self.want_w {
                weights_grad(h_rows, block, &w, &mut grad_w, start > 0);
            }
        }
        let device = candle_core::Device::Cpu;
        let grad_h = if self.want_h {
            Some(Tensor::from_vec(grad_h, (n, hidden), &device)?)
        } else {
            None
        };
        let grad_w = if self.want_w {
            Some(Tensor::from_vec(grad_w, (hidden, vocab), &device)?)
        } else {
            None
        };
        *self.grads.lock().expect("gradients lock") = (grad_h, grad_w);
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        _h: &Tensor,
        _w: &Tensor,
        _loss: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let (grad_h, grad_w) = self.grads.lock().expect("gradients lock").clone();
        let scaled = |t: Option<Tensor>| match t {
            Some(t) if g != 1.0 => t.affine(g as f64, 0.0).map(Some),
            t => Ok(t),
        };
        Ok((scaled(grad_h)?, scaled(grad_w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::{max_diff, randn, var_randn};
    use candle_core::{Device, D};

    /// The composed reference: product, log-softmax, gather.
    fn composed(h: &Tensor, w: &Tensor, targets: &[u32]) -> Tensor {
        let t = Tensor::from_vec(targets.to_vec(), (targets.len(), 1), h.device()).unwrap();
        let logp = candle_nn::ops::log_softmax(&h.matmul(w).unwrap(), D::Minus1).unwrap();
        logp.gather(&t, 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap()
    }

    /// Forward values and the gradients of both operands equal the composed ops, over
    /// several row blocks (the last one partial) and with transposed weights (a tied
    /// embedding), and the gradient of the weights is left out when they are frozen.
    #[test]
    fn equals_composed_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let (n, hidden, vocab) = (2 * BLOCK_ROWS + 37, 24, 301);
        let h = var_randn(0f32, 1.0, (n, hidden), &dev).unwrap();
        let embed = var_randn(0f32, 1.0, (vocab, hidden), &dev).unwrap();
        let w = embed.as_tensor().t().unwrap();
        let targets: Vec<u32> = (0..n).map(|i| ((i * 97 + 13) % vocab) as u32).collect();
        let weights = randn(0f32, 1.0, n, &dev).unwrap();
        let ours = linear_nll(h.as_tensor(), &w, &targets).unwrap();
        let theirs = composed(h.as_tensor(), &w, &targets);
        assert!(
            max_diff(&ours, &theirs) < 1e-4,
            "{}",
            max_diff(&ours, &theirs)
        );
        let g_ours = (ours * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_theirs = (theirs * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [h.as_tensor(), embed.as_tensor()] {
            let (a, b) = (g_ours.get(v).unwrap(), g_theirs.get(v).unwrap());
            assert!(max_diff(a, b) < 1e-4, "{}", max_diff(a, b));
            // Not trivially zero: the check above can fail.
            assert!(
                b.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 1e-3
            );
        }
        let frozen = randn(0f32, 1.0, (hidden, vocab), &dev).unwrap();
        let g = linear_nll(h.as_tensor(), &frozen, &targets)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(h.as_tensor()).is_some());
        assert!(g.get(&frozen).is_none());
    }

    /// The weighted sum equals the per-row op times the weights, and its gradients
    /// (computed in the forward pass, scaled by the incoming gradient) equal the per-row
    /// op's; a frozen weight gets none, and a second backward pass gives the same.
    #[test]
    fn weighted_sum_equals_per_row_losses_times_weights() {
        let dev = Device::Cpu;
        let (n, hidden, vocab) = (BLOCK_ROWS + 29, 16, 257);
        let h = var_randn(0f32, 1.0, (n, hidden), &dev).unwrap();
        let embed = var_randn(0f32, 1.0, (vocab, hidden), &dev).unwrap();
        let w = embed.as_tensor().t().unwrap();
        let targets: Vec<u32> = (0..n).map(|i| ((i * 31 + 7) % vocab) as u32).collect();
        let weights: Vec<f32> = (0..n).map(|i| 0.01 + (i % 5) as f32 * 0.02).collect();
        let wt = Tensor::from_vec(weights.clone(), n, &dev).unwrap();
        // A scale on the loss checks that the backward pass applies its incoming gradient.
        let ours =
            (linear_cross_entropy(h.as_tensor(), &w, &targets, &weights).unwrap() * 3.0).unwrap();
        let theirs = ((linear_nll(h.as_tensor(), &w, &targets).unwrap() * &wt)
            .unwrap()
            .sum_all()
            .unwrap()
            * 3.0)
            .unwrap();
        let (a, b) = (
            ours.to_scalar::<f32>().unwrap(),
            theirs.to_scalar::<f32>().unwrap(),
        );
        assert!((a - b).abs() < 1e-4 * b.abs(), "{a} vs {b}");
        let g_ours = ours.backward().unwrap();
        let g_theirs = theirs.backward().unwrap();
        for v in [h.as_tensor(), embed.as_tensor()] {
            let (x, y) = (g_ours.get(v).unwrap(), g_theirs.get(v).unwrap());
            assert!(max_diff(x, y) < 1e-5, "{}", max_diff(x, y));
        }
        let again = ours.backward().unwrap();
        let d = max_diff(
            again.get(h.as_tensor()).unwrap(),
            g_ours.get(h.as_tensor()).unwrap(),
        );
        assert_eq!(d, 0.0);
        let frozen = randn(0f32, 1.0, (hidden, vocab), &dev).unwrap();
        let g = linear_cross_entropy(h.as_tensor(), &frozen, &targets, &weights)
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(h.as_tensor()).is_some());
        assert!(g.get(&frozen).is_none());
        let e = linear_cross_entropy(h.as_tensor(), &frozen, &targets, &weights[1..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("weights"), "{e}");
    }

    #[test]
    fn refuses_a_target_outside_the_vocabulary() {
        let dev = Device::Cpu;
        let h = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 5), DType::F32, &dev).unwrap();
        let e = linear_nll(&h, &w, &[1, 5]).unwrap_err().to_string();
        assert!(e.contains("target 5"), "{e}");
    }
}
