//! The output projection and cross-entropy in one op (training): the negative
//! log-likelihood of each row's target under `h w`, computed a block of rows at a time,
//! so the (rows x vocab) logits are never all in memory, forward or backward.
//!
//! With the default model's 49,152-token vocabulary, 2,048 loss rows of logits are
//! 400 MB, and the composed ops (product, log-softmax, gather, and their backward passes)
//! hold several such tensors at once. Here the forward pass keeps only each row's
//! log-sum-exp; the backward pass recomputes a block's logits from it (one more product of
//! the block) and turns them into the gradient in place: `softmax - one_hot(target)`,
//! times the row's incoming gradient. CPU, f32; other devices use the composed ops.

use super::matmul::num_threads;
use super::rows::{contiguous_f32, for_row_blocks_by_work};
use crate::kernels::exp::exp_shifted_in_place;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
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

fn parallelism() -> Parallelism {
    match num_threads() {
        t if t > 1 => Parallelism::Rayon(t),
        _ => Parallelism::None,
    }
}

/// `dst (m x vocab) = h_rows (m x hidden) w`.
fn logits(h_rows: &[f32], w: &Weight, dst: &mut [f32]) {
    let m = h_rows.len() / w.hidden;
    debug_assert_eq!(dst.len(), m * w.vocab);
    // SAFETY: `h_rows` holds m x hidden contiguous elements, `w` addresses hidden x vocab
    // elements by its strides (from candle's layout), `dst` holds m x vocab.
    unsafe {
        gemm(
            m,
            w.vocab,
            w.hidden,
            dst.as_mut_ptr(),
            1,
            w.vocab as isize,
            false,
            h_rows.as_ptr(),
            1,
            w.hidden as isize,
            w.data.as_ptr(),
            w.cs,
            w.rs,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        )
    }
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
        let h = contiguous_f32(s1, l1, "linear cross-entropy")?;
        let w = Weight::of(s2, l2)?;
        let n = self.targets.len();
        if h.len() != n * w.hidden {
            bail!(
                "linear cross-entropy: {:?} rows for {:?} weights",
                l1.shape(),
                l2.shape()
            )
        }
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
            // SAFETY: `block` is m x vocab contiguous, `wt` addresses hidden x vocab
            // elements (read transposed), `grad_h` rows start..start + m are m x hidden;
            // `h_rows` is m x hidden contiguous (read transposed) and `grad_w` is
            // hidden x vocab, accumulated over the blocks.
            unsafe {
                gemm(
                    m,
                    hidden,
                    vocab,
                    grad_h[start * hidden..].as_mut_ptr(),
                    1,
                    hidden as isize,
                    false,
                    block.as_ptr(),
                    1,
                    vocab as isize,
                    wt.data.as_ptr(),
                    wt.rs,
                    wt.cs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism(),
                );
                if want_w {
                    gemm(
                        hidden,
                        vocab,
                        m,
                        grad_w.as_mut_ptr(),
                        1,
                        vocab as isize,
                        start > 0,
                        h_rows.as_ptr(),
                        hidden as isize,
                        1,
                        block.as_ptr(),
                        1,
                        vocab as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism(),
                    );
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::max_diff;
    use candle_core::{Device, Var, D};

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
        let h = Var::randn(0f32, 1.0, (n, hidden), &dev).unwrap();
        let embed = Var::randn(0f32, 1.0, (vocab, hidden), &dev).unwrap();
        let w = embed.as_tensor().t().unwrap();
        let targets: Vec<u32> = (0..n).map(|i| ((i * 97 + 13) % vocab) as u32).collect();
        let weights = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
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
        let frozen = Tensor::randn(0f32, 1.0, (hidden, vocab), &dev).unwrap();
        let g = linear_nll(h.as_tensor(), &frozen, &targets)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(h.as_tensor()).is_some());
        assert!(g.get(&frozen).is_none());
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
