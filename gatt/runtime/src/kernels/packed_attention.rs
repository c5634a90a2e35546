//! Causal attention over sequences packed end to end in one row of tokens (training):
//! each sequence attends only to itself, with its own backward pass.
//!
//! Training on one padded or packed batch makes every linear layer one large matrix
//! product (the weights' gradients too) instead of one per sequence. The attention is
//! what must stay per sequence; done with candle's slices, the backward pass of each
//! slice allocates a zero tensor the size of the whole batch, for every sequence, head
//! group and layer. Here each (sequence, key head) is one task: its products run in
//! tiles that skip the future of each query (`tile`), and the probabilities are kept
//! from the forward pass for the backward pass. CPU only.

use super::rows::{contiguous_f32, for_each_task};
use super::softmax::{softmax_grad_in_place, softmax_in_place};
use super::tile::{product, Causal, Strided, COLS};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// `q` (1, heads, T, hd), `k` and `v` (1, kv_heads, T, hd) with `T` the sum of
/// `segments` (the sequences' lengths, in order): returns (1, heads, T, hd).
pub fn packed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &[usize],
    scale: f32,
) -> Result<Tensor> {
    let op = Packed::new(segments, scale);
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

pub(super) struct Packed {
    segments: Vec<usize>,
    scale: f32,
    /// The forward pass's probabilities, block (segment, head) after block; shared with
    /// the backward pass, not copied (14 MB a layer at 2,048 tokens of 200-token samples).
    probs: Mutex<Arc<Vec<f32>>>,
}

/// Query heads, key/value heads (grouped: `nh` a multiple of `nkv`) and the head size.
#[derive(Clone, Copy)]
pub(super) struct Heads {
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
}

/// A buffer written by several tasks at disjoint places.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes only its own (segment, head) blocks; see the callers.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Row stride of a segment's score and probability blocks: its length rounded up to
/// whole tiles of columns.
fn padded(n: usize) -> usize {
    n.div_ceil(COLS) * COLS
}

/// Offsets of each segment's first token and of its probability blocks (nh blocks of
/// n rows x `padded(n)` per segment).
struct Plan {
    starts: Vec<usize>,
    prob_starts: Vec<usize>,
    prob_len: usize,
}

impl Packed {
    /// Attention over sequences of these lengths, scores scaled by `scale`.
    pub(super) fn new(segments: &[usize], scale: f32) -> Self {
        Packed {
            segments: segments.to_vec(),
            scale,
            probs: Mutex::new(Arc::new(Vec::new())),
        }
    }

    /// Refuses head counts that do not group evenly and segments that are empty or do
    /// not add up to the `t` tokens.
    pub(super) fn check(&self, nh: usize, nkv: usize, t: usize) -> Result<()> {
        let covered = self.segments.iter().sum::<usize>() == t;
        if nkv == 0 || !nh.is_multiple_of(nkv) || !covered || self.segments.contains(&0) {
            bail!(
                "packed attention: segments {:?} for {t} tokens, {nh} heads over {nkv}",
                self.segments
            )
        }
        Ok(())
    }

    fn plan(&self, nh: usize) -> Plan {
        let (mut starts, mut prob_starts) = (Vec::new(), Vec::new());
        let (mut t, mut p) = (0, 0);
        for &n in &self.segments {
            starts.push(t);
            prob_starts.push(p);
            t += n;
            p += nh * n * padded(n);
        }
        Plan {
            starts,
            prob_starts,
            prob_len: p,
        }
    }

    /// The forward pass on slices: `q` (heads x T x hd), `k` and `v` (kv_heads x T x hd),
    /// T the sum of the segments (checked by the caller). Returns the output (heads x T x
    /// hd) and the probabilities the backward pass reads.
    pub(super) fn forward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        heads: Heads,
    ) -> (Vec<f32>, Vec<f32>) {
        let Heads { nh, nkv, hd } = heads;
        let t: usize = self.segments.iter().sum();
        let plan = self.plan(nh);
        let rep = nh / nkv;
        let mut probs = vec![0f32; plan.prob_len];
        let mut out = vec![0f32; nh * t * hd];
        let (pp, op) = (Shared(probs.as_mut_ptr()), Shared(out.as_mut_ptr()));
        let tasks = self.tasks(nkv);
        for_each_task(tasks.len(), |i| {
            let (g, kh) = tasks[i];
            let (n, o) = (self.segments[g], plan.starts[g]);
            let ld = padded(n);
            let kt = transposed(&k[(kh * t + o) * hd..], n, hd, ld);
            let vv = v[(kh * t + o) * hd..].as_ptr();
            for h in kh * rep..(kh + 1) * rep {
                let qh = Strided::rows(q[(h * t + o) * hd..].as_ptr(), hd);
                // SAFETY: block (g, h) of `probs` (n x ld) and rows o..o+n of head h of
                // `out` belong to this task alone; `qh` and `vv` address n rows of hd,
                // `kt` hd rows of ld.
                unsafe {
                    let p = pp.at(plan.prob_starts[g] + h * n * ld);
                    // Scores of each query against its past (whole tiles at the diagonal).
                    product(
                        n,
                        ld,
                        hd,
                        qh,
                        kt.as_ptr(),
                        ld,
                        p,
                        ld,
                        false,
                        Causal::Columns,
                    );
                    let block = std::slice::from_raw_parts_mut(p, n * ld);
                    for (i, row) in block.chunks_exact_mut(ld).enumerate() {
                        softmax_in_place(&mut row[..=i], self.scale);
                        row[i + 1..].fill(0.0);
                    }
                    let out_h = op.at((h * t + o) * hd);
                    let ph = Strided::rows(p, ld);
                    product(n, hd, n, ph, vv, hd, out_h, hd, false, Causal::DepthUpTo);
                }
            }
        });
        (out, probs)
    }

    /// The backward pass on slices, for the output gradient `d_out` (heads x T x hd) and
    /// the forward pass's inputs and probabilities: [dq | dk | dv] stacked in one buffer.
    pub(super) fn backward(
        &self,
        probs: &[f32],
        d_out: &[f32],
        (q, k, v): (&[f32], &[f32], &[f32]),
        heads: Heads,
    ) -> Vec<f32> {
        let Heads { nh, nkv, hd } = heads;
        let t: usize = self.segments.iter().sum();
        let rep = nh / nkv;
        let plan = self.plan(nh);
        let (nq, nk) = (nh * t * hd, nkv * t * hd);
        let mut all = vec![0f32; nq + 2 * nk];
        let base = Shared(all.as_mut_ptr());
        let scale = self.scale;
        // One task per (segment, key head): it alone writes that head's dk and dv rows
        // and its query heads' dq rows.
        let tasks = self.tasks(nkv);
        for_each_task(tasks.len(), |i| {
            let (g, kh) = tasks[i];
            let (n, o) = (self.segments[g], plan.starts[g]);
            let ld = padded(n);
            let kk = k[(kh * t + o) * hd..].as_ptr();
            let vt = transposed(&v[(kh * t + o) * hd..], n, hd, ld);
            let mut ds = vec![0f32; n * ld];
            for h in kh * rep..(kh + 1) * rep {
                let p = &probs[plan.prob_starts[g] + h * n * ld..][..n * ld];
                let dout = &d_out[(h * t + o) * hd..];
                let qh = q[(h * t + o) * hd..].as_ptr();
                let (dq, dk, dv) = (
                    base.at((h * t + o) * hd),
                    base.at(nq + (kh * t + o) * hd),
                    base.at(nq + nk + (kh * t + o) * hd),
                );
                let first = h == kh * rep;
                let (dsv, pv) = (
                    Strided::rows(ds.as_ptr(), ld),
                    Strided::rows(p.as_ptr(), ld),
                );
                // SAFETY: `ds` is this task's own n x ld buffer, `vt` hd x ld; `dout`,
                // `qh` and `kk` address n rows of hd; the rows written (head h of dq,
                // head kh of dk and dv, segment g) belong to this task.
                unsafe {
                    // dP = dO V^T (row i: columns up to i), then
                    // dS = scale * P * (dP - rowsum(dP * P)), zero past the diagonal.
                    let dov = Strided::rows(dout.as_ptr(), hd);
                    let dsp = ds.as_mut_ptr();
                    product(
                        n,
                        ld,
                        hd,
                        dov,
                        vt.as_ptr(),
                        ld,
                        dsp,
                        ld,
                        false,
                        Causal::Columns,
                    );
                    for (i, (drow, prow)) in
                        ds.chunks_exact_mut(ld).zip(p.chunks_exact(ld)).enumerate()
                    {
                        softmax_grad_in_place(&prow[..=i], &mut drow[..=i], scale);
                        drow[i + 1..].fill(0.0);
                    }
                    product(n, hd, n, dsv, kk, hd, dq, hd, false, Causal::DepthUpTo);
                    product(n, hd, n, dsv.t(), qh, hd, dk, hd, !first, Causal::DepthFrom);
                    product(
                        n,
                        hd,
                        n,
                        pv.t(),
                        dout.as_ptr(),
                        hd,
                        dv,
                        hd,
                        !first,
                        Causal::DepthFrom,
                    );
                }
            }
        });
        all
    }

    /// One task per (segment, key head): the units both passes share out to threads.
    fn tasks(&self, nkv: usize) -> Vec<(usize, usize)> {
        let mut tasks: Vec<(usize, usize)> = (0..self.segments.len())
            .flat_map(|g| (0..nkv).map(move |kh| (g, kh)))
            .collect();
        // Longest sequences first (work grows with the square of the length), so the
        // threads do not wait on one long task taken last.
        tasks.sort_by_key(|&(g, _)| std::cmp::Reverse(self.segments[g]));
        tasks
    }
}

/// `n` rows of `hd` from `src` (row stride `hd`), transposed: hd rows of `ld` floats,
/// columns past n zero.
fn transposed(src: &[f32], n: usize, hd: usize, ld: usize) -> Vec<f32> {
    let mut t = vec![0f32; hd * ld];
    for (j, row) in src[..n * hd].chunks_exact(hd).enumerate() {
        for (d, &x) in row.iter().enumerate() {
            t[d * ld + j] = x;
        }
    }
    t
}

impl CustomOp3 for Packed {
    fn name(&self) -> &'static str {
        "gatt-packed-attention"
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
        let (_, nkv, _, _) = l2.shape().dims4()?;
        if b != 1 || l2.shape() != l3.shape() || l2.dims()[2] != t || l2.dims()[3] != hd {
            bail!(
                "packed attention: {:?} {:?} {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            )
        }
        self.check(nh, nkv, t)?;
        let q = contiguous_f32(s1, l1, "packed attention")?;
        let k = contiguous_f32(s2, l2, "packed attention")?;
        let v = contiguous_f32(s3, l3, "packed attention")?;
        let (out, probs) = self.forward(q, k, v, Heads { nh, nkv, hd });
        *self.probs.lock().expect("probabilities lock") = Arc::new(probs);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Shared, not taken: a second backward pass over the same graph still works.
        let probs = Arc::clone(&self.probs.lock().expect("probabilities lock"));
        let back = PackedGrad {
            fwd: self,
            probs,
            k: k.clone(),
        };
        // One op for the three gradients, stacked: [dq | dk | dv] flattened.
        let (nh, nkv) = (q.dim(1)?, k.dim(1)?);
        let (t, hd) = (q.dim(2)?, q.dim(3)?);
        let all = grad.contiguous()?.apply_op3_no_bwd(q, v, &back)?;
        let dq = all.narrow(0, 0, nh * t * hd)?.reshape(q.shape())?;
        let dk = all
            .narrow(0, nh * t * hd, nkv * t * hd)?
            .reshape(k.shape())?;
        let dv = all
            .narrow(0, (nh + nkv) * t * hd, nkv * t * hd)?
            .reshape(v.shape())?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// The backward pass: inputs (d out, q, v), with k and the probabilities held here.
struct PackedGrad<'a> {
    fwd: &'a Packed,
    probs: Arc<Vec<f32>>,
    k: Tensor,
}

impl CustomOp3 for PackedGrad<'_> {
    fn name(&self) -> &'static str {
        "gatt-packed-attention-grad"
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
        let (_, nh, t, hd) = l1.shape().dims4()?;
        let d_out = contiguous_f32(s1, l1, "packed attention grad")?;
        let q = contiguous_f32(s2, l2, "packed attention grad")?;
        let v = contiguous_f32(s3, l3, "packed attention grad")?;
        let (k_storage, k_layout) = self.k.storage_and_layout();
        let candle_core::Storage::Cpu(k_cpu) = &*k_storage else {
            bail!("packed attention grad: keys not on the CPU")
        };
        let k = contiguous_f32(k_cpu, k_layout, "packed attention grad")?;
        let nkv = k_layout.dims()[1];
        if self.probs.len() != self.fwd.plan(nh).prob_len {
            bail!("packed attention grad: the forward pass's probabilities are missing")
        }
        let heads = Heads { nh, nkv, hd };
        let all = self.fwd.backward(&self.probs, d_out, (q, k, v), heads);
        let (nq, nk) = (nh * t * hd, nkv * t * hd);
        Ok((CpuStorage::F32(all), Shape::from(nq + 2 * nk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::{max_diff, probe_grads, randn, var_randn};
    use candle_core::{Device, D};

    /// Each segment on its own with candle's ops (grouped heads repeated).
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, segments: &[usize], scale: f64) -> Tensor {
        let (nh, nkv) = (q.dim(1).unwrap(), k.dim(1).unwrap());
        let rep = nh / nkv;
        let mut outs = Vec::new();
        let mut o = 0;
        for &n in segments {
            let mut heads = Vec::new();
            for h in 0..nh {
                let qh = q.get(0).unwrap().get(h).unwrap().narrow(0, o, n).unwrap();
                let kh = k
                    .get(0)
                    .unwrap()
                    .get(h / rep)
                    .unwrap()
                    .narrow(0, o, n)
                    .unwrap();
                let vh = v
                    .get(0)
                    .unwrap()
                    .get(h / rep)
                    .unwrap()
                    .narrow(0, o, n)
                    .unwrap();
                let s = (qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap();
                let mask: Vec<f32> = (0..n)
                    .flat_map(|i| (0..n).map(move |j| if j <= i { 0.0 } else { -1e9 }))
                    .collect();
                let mask = Tensor::from_vec(mask, (n, n), &Device::Cpu).unwrap();
                let p = candle_nn::ops::softmax(&(s + mask).unwrap(), D::Minus1).unwrap();
                heads.push(p.matmul(&vh).unwrap());
            }
            outs.push(Tensor::stack(&heads, 0).unwrap());
            o += n;
        }
        Tensor::cat(&outs, 1).unwrap().unsqueeze(0).unwrap()
    }

    /// Short sequences with a narrow head, and longer ones with the default model's head
    /// size (whole tiles of 16 columns, several tiles of 6 rows, a partial last one).
    #[test]
    fn values_and_gradients_equal_each_sequence_alone() {
        equal_each_sequence_alone(&[5, 1, 9, 3], 4, 2, 8);
        equal_each_sequence_alone(&[40, 17, 33], 6, 2, 64);
    }

    fn equal_each_sequence_alone(segments: &[usize], nh: usize, nkv: usize, hd: usize) {
        let dev = Device::Cpu;
        let t = segments.iter().sum::<usize>();
        let q = var_randn(0f32, 1.0, (1, nh, t, hd), &dev).unwrap();
        let k = var_randn(0f32, 1.0, (1, nkv, t, hd), &dev).unwrap();
        let v = var_randn(0f32, 1.0, (1, nkv, t, hd), &dev).unwrap();
        let probe = randn(0f32, 1.0, (1, nh, t, hd), &dev).unwrap();
        let ours = packed(q.as_tensor(), k.as_tensor(), v.as_tensor(), segments, 0.3).unwrap();
        let theirs = reference(q.as_tensor(), k.as_tensor(), v.as_tensor(), segments, 0.3);
        assert!(max_diff(&ours, &theirs) < 1e-5);
        let g1 = probe_grads(&ours, &probe);
        let g2 = probe_grads(&theirs, &probe);
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let d = max_diff(
                g1.get(x.as_tensor()).unwrap(),
                g2.get(x.as_tensor()).unwrap(),
            );
            assert!(d < 1e-5, "d{name}: {d}");
        }
    }

    #[test]
    fn segments_that_do_not_cover_the_tokens_are_an_error() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 6, 4), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 1, 6, 4), candle_core::DType::F32, &dev).unwrap();
        assert!(packed(&q, &k, &k, &[2, 3], 1.0).is_err());
        assert!(packed(&q, &k, &k, &[6, 0], 1.0).is_err());
    }
}
