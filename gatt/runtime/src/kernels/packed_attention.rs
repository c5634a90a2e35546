//! Causal attention over sequences packed end to end in one row of tokens (training):
//! each sequence attends only to itself, with its own backward pass.
//!
//! Training on one padded or packed batch makes every linear layer one large matrix
//! product (the weights' gradients too) instead of one per sequence. The attention is
//! what must stay per sequence; done with candle's slices, the backward pass of each
//! slice allocates a zero tensor the size of the whole batch, for every sequence, head
//! group and layer. Here each (sequence, head) block is multiplied in place with gemm;
//! the probabilities are kept from the forward pass for the backward pass. CPU only.

use super::rows::contiguous_f32;
use super::softmax::{softmax_grad_in_place, softmax_in_place};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
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
    let op = Packed {
        segments: segments.to_vec(),
        scale,
        probs: Mutex::new(Arc::new(Vec::new())),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

struct Packed {
    segments: Vec<usize>,
    scale: f32,
    /// The forward pass's probabilities, block (segment, head) after block; shared with
    /// the backward pass, not copied (14 MB a layer at 2,048 tokens of 200-token samples).
    probs: Mutex<Arc<Vec<f32>>>,
}

/// A row-major matrix view: (pointer, row stride, column stride).
#[derive(Clone, Copy)]
struct View(*const f32, isize, isize);

impl View {
    fn rows(p: *const f32, row_len: usize) -> Self {
        View(p, row_len as isize, 1)
    }

    fn t(self) -> Self {
        View(self.0, self.2, self.1)
    }
}

/// `dst (m x n, row stride n) = a (m x k) b (k x n)`, or `+=` with `accumulate`.
///
/// # Safety
/// The views must address m x k and k x n readable elements, `dst` m x n writable ones
/// that no other thread touches meanwhile.
unsafe fn mm(m: usize, n: usize, k: usize, dst: *mut f32, a: View, b: View, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    gemm(
        m,
        n,
        k,
        dst,
        1,
        n as isize,
        accumulate,
        a.0,
        a.2,
        a.1,
        b.0,
        b.2,
        b.1,
        1.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    )
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

/// Offsets of each segment's first token and of its probability blocks.
struct Plan {
    starts: Vec<usize>,
    prob_starts: Vec<usize>,
    prob_len: usize,
}

impl Packed {
    fn plan(&self, nh: usize) -> Plan {
        let (mut starts, mut prob_starts) = (Vec::new(), Vec::new());
        let (mut t, mut p) = (0, 0);
        for &n in &self.segments {
            starts.push(t);
            prob_starts.push(p);
            t += n;
            p += nh * n * n;
        }
        Plan {
            starts,
            prob_starts,
            prob_len: p,
        }
    }
}

/// Causal softmax of each row of an n x n block of scores, in place (zero above the
/// diagonal).
fn causal_softmax(s: &mut [f32], n: usize, scale: f32) {
    for (i, row) in s.chunks_mut(n).enumerate() {
        softmax_in_place(&mut row[..=i], scale);
        row[i + 1..].fill(0.0);
    }
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
        let covered = self.segments.iter().sum::<usize>() == t;
        if nkv == 0 || nh % nkv != 0 || !covered || self.segments.contains(&0) {
            bail!(
                "packed attention: segments {:?} for {t} tokens",
                self.segments
            )
        }
        let q = contiguous_f32(s1, l1, "packed attention")?;
        let k = contiguous_f32(s2, l2, "packed attention")?;
        let v = contiguous_f32(s3, l3, "packed attention")?;
        let plan = self.plan(nh);
        let rep = nh / nkv;
        let mut probs = vec![0f32; plan.prob_len];
        let mut out = vec![0f32; nh * t * hd];
        let (pp, op) = (Shared(probs.as_mut_ptr()), Shared(out.as_mut_ptr()));
        let tasks: Vec<(usize, usize)> = (0..self.segments.len())
            .flat_map(|g| (0..nh).map(move |h| (g, h)))
            .collect();
        tasks.par_iter().for_each(|&(g, h)| {
            let (n, o) = (self.segments[g], plan.starts[g]);
            let kh = h / rep;
            let qh = View::rows(q[(h * t + o) * hd..].as_ptr(), hd);
            let kk = View::rows(k[(kh * t + o) * hd..].as_ptr(), hd);
            let vv = View::rows(v[(kh * t + o) * hd..].as_ptr(), hd);
            // SAFETY: block (g, h) of `probs` and rows o..o+n of head h of `out` belong
            // to this task alone; the inputs hold n rows of hd from these offsets.
            unsafe {
                let p = pp.at(plan.prob_starts[g] + h * n * n);
                mm(n, n, hd, p, qh, kk.t(), false);
                causal_softmax(std::slice::from_raw_parts_mut(p, n * n), n, self.scale);
                mm(
                    n,
                    hd,
                    n,
                    op.at((h * t + o) * hd),
                    View::rows(p, n),
                    vv,
                    false,
                );
            }
        });
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
        let rep = nh / nkv;
        let plan = self.fwd.plan(nh);
        if self.probs.len() != plan.prob_len {
            bail!("packed attention grad: the forward pass's probabilities are missing")
        }
        let (nq, nk) = (nh * t * hd, nkv * t * hd);
        let mut all = vec![0f32; nq + 2 * nk];
        let base = Shared(all.as_mut_ptr());
        let scale = self.fwd.scale;
        // One task per (segment, key head): it alone writes that head's dk and dv rows
        // and its query heads' dq rows.
        let tasks: Vec<(usize, usize)> = (0..self.fwd.segments.len())
            .flat_map(|g| (0..nkv).map(move |kh| (g, kh)))
            .collect();
        tasks.par_iter().for_each(|&(g, kh)| {
            let (n, o) = (self.fwd.segments[g], plan.starts[g]);
            let kk = View::rows(k[(kh * t + o) * hd..].as_ptr(), hd);
            let vv = View::rows(v[(kh * t + o) * hd..].as_ptr(), hd);
            let mut ds = vec![0f32; n * n];
            for h in kh * rep..(kh + 1) * rep {
                let p = &self.probs[plan.prob_starts[g] + h * n * n..][..n * n];
                let dout = View::rows(d_out[(h * t + o) * hd..].as_ptr(), hd);
                let qh = View::rows(q[(h * t + o) * hd..].as_ptr(), hd);
                // SAFETY: `ds` is this task's own n x n buffer; the rows written below
                // (head h of dq, head kh of dk and dv, segment g) belong to this task.
                unsafe {
                    // dP = dO V^T, then dS = scale * P * (dP - rowsum(dP * P)).
                    mm(n, n, hd, ds.as_mut_ptr(), dout, vv.t(), false);
                    for (drow, prow) in ds.chunks_mut(n).zip(p.chunks(n)) {
                        softmax_grad_in_place(prow, drow, scale);
                    }
                    let dq = base.at((h * t + o) * hd);
                    let dk = base.at(nq + (kh * t + o) * hd);
                    let dv = base.at(nq + nk + (kh * t + o) * hd);
                    let first = h == kh * rep;
                    mm(n, hd, n, dq, View::rows(ds.as_ptr(), n), kk, false);
                    mm(n, hd, n, dk, View::rows(ds.as_ptr(), n).t(), qh, !first);
                    mm(n, hd, n, dv, View::rows(p.as_ptr(), n).t(), dout, !first);
                }
            }
        });
        Ok((CpuStorage::F32(all), Shape::from(nq + 2 * nk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::{max_diff, probe_grads};
    use candle_core::{Device, Var, D};

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

    #[test]
    fn values_and_gradients_equal_each_sequence_alone() {
        let dev = Device::Cpu;
        let segments = [5usize, 1, 9, 3];
        let (nh, nkv, hd, t) = (4, 2, 8, segments.iter().sum::<usize>());
        let q = Var::randn(0f32, 1.0, (1, nh, t, hd), &dev).unwrap();
        let k = Var::randn(0f32, 1.0, (1, nkv, t, hd), &dev).unwrap();
        let v = Var::randn(0f32, 1.0, (1, nkv, t, hd), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (1, nh, t, hd), &dev).unwrap();
        let ours = packed(q.as_tensor(), k.as_tensor(), v.as_tensor(), &segments, 0.3).unwrap();
        let theirs = reference(q.as_tensor(), k.as_tensor(), v.as_tensor(), &segments, 0.3);
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
