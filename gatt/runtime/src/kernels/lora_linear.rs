//! A frozen linear layer with its LoRA adapter as one op (training on the CPU):
//! `y = x W + s · (x ∘ m) A B`, with `W` frozen, `A` and `B` trained, `m` the adapter's
//! dropout mask (or none).
//!
//! Composed of candle ops, this is three products and an addition, and candle's backward
//! pass gives every edge of that graph a zero tensor and an addition of its own: a
//! (rows x out) tensor cleared and added twice, a (rows x in) one once, per layer. Here the
//! adapter's product is added inside the base product's output (gemm accumulates), and the
//! backward pass writes `dx` in one buffer the same way: `dx = dy Wᵀ + s · ((dy Bᵀ) Aᵀ) ∘ m`.
//! Kept from the forward pass: `x A` (rows x rank, small).
//!
//! Without dropout, and for batches of at least [`MERGE_FROM_ROWS`] rows (training), the
//! adapter is merged into a copy of the weights first, `W' = W + s · A B` (in x out,
//! once per call), so the output and the input gradient are one product each,
//! `y = x W'` and `dx = dy W'ᵀ`, instead of one product with the frozen weights plus two
//! products through the rank (rows x rank x out, then x in): those have a reduction or an
//! output only 16 wide and run at less than half the speed of the big products here. The
//! merged copy lives until the backward pass (the size of the frozen weights once more).
//! CPU, f32.

use super::matmul::{gemm_parts, mm, mm_new, Raw, M};
use super::rows::contiguous_f32;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use std::sync::Mutex;

/// Batches from this many rows merge the adapter into the weights (see the module doc):
/// merging costs an in x out copy and an in x rank x out product, which a decoding step's
/// few rows would not win back.
pub const MERGE_FROM_ROWS: usize = 256;

/// `x W + scale · (x ∘ mask) A B` for `x` (.., in), frozen `w` (in, out), `a` (in, rank),
/// `b` (rank, out); `mask` has one factor per element of `x` (the dropout's 0 or
/// 1 / (1 - p)). Differentiable in `x`, `a` and `b` (not `w`).
///
/// # Errors
///
/// When the shapes do not fit or an operand is not an f32 tensor on the CPU.
pub fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f32,
    mask: Option<Vec<f32>>,
) -> Result<Tensor> {
    let all = [x, w, a, b];
    if all
        .iter()
        .any(|t| !t.device().is_cpu() || t.dtype() != DType::F32)
    {
        bail!("lora linear: expected f32 tensors on the CPU")
    }
    let k = *x.dims().last().unwrap_or(&0);
    let rows = x.elem_count() / k.max(1);
    let (wk, out) = w.dims2()?;
    let (ak, rank) = a.dims2()?;
    let (br, bo) = b.dims2()?;
    if wk != k || ak != k || br != rank || bo != out {
        bail!(
            "lora linear: x {:?}, w {:?}, a {:?}, b {:?} do not fit",
            x.shape(),
            w.shape(),
            a.shape(),
            b.shape()
        )
    }
    if mask.as_ref().is_some_and(|m| m.len() != rows * k) {
        bail!(
            "lora linear: the dropout mask does not fit x {:?}",
            x.shape()
        )
    }
    let op = LoraLinear {
        w: w.clone(),
        scale,
        mask,
        xa: Mutex::new(Vec::new()),
        merged: Mutex::new(None),
    };
    // `x` keeps its shape (rows are all its leading dimensions): a reshape here would be
    // one more node of candle's graph, with a zero tensor and an addition of its own in
    // the backward pass.
    x.contiguous()?
        .apply_op3(&a.contiguous()?, &b.contiguous()?, op)
}

struct LoraLinear {
    /// (in, out), frozen.
    w: Tensor,
    scale: f32,
    mask: Option<Vec<f32>>,
    /// `(x ∘ m) A` from the forward pass, rows x rank.
    xa: Mutex<Vec<f32>>,
    /// `W + s A B` laid out as `w`, when merged in the forward pass.
    merged: Mutex<Option<Vec<f32>>>,
}

/// The frozen weights as a matrix operand (any strides).
fn weights<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<M<'a>> {
    let CpuStorage::F32(v) = storage else {
        bail!("lora linear: expected f32 weights")
    };
    let st = layout.stride();
    Ok(M(
        &v[layout.start_offset()..],
        st[0] as isize,
        st[1] as isize,
    ))
}

/// `W + s · A B` in a new buffer laid out as `w` (in x out, dense in either order), or
/// `None` when `w` is not dense (then the adapter stays a separate product).
pub(super) fn merge(
    w: M,
    k: usize,
    out: usize,
    a: &[f32],
    b: &[f32],
    rank: usize,
    s: f32,
) -> Option<Vec<f32>> {
    let (rs, cs) = (w.1, w.2);
    let dense = (rs == out as isize && cs == 1) || (rs == 1 && cs == k as isize);
    if !dense || w.0.len() < k * out {
        return None;
    }
    let mut merged = w.0[..k * out].to_vec();
    if rank > 0 {
        // SAFETY: `merged` holds k x out elements at strides (rs, cs) (checked dense
        // above); `a` is k x rank and `b` rank x out, contiguous.
        unsafe {
            gemm_parts(
                k,
                out,
                rank,
                Raw::new(merged.as_mut_ptr(), rs, cs),
                1.0,
                Raw::new(a.as_ptr(), rank as isize, 1),
                Raw::new(b.as_ptr(), out as isize, 1),
                s,
            )
        }
    }
    Some(merged)
}

fn cpu(s: &Storage) -> Result<&CpuStorage> {
    match s {
        Storage::Cpu(c) => Ok(c),
        _ => bail!("lora linear: operands off the CPU"),
    }
}

impl LoraLinear {
    /// `x ∘ m`, or `x` itself without dropout.
    fn masked<'a>(&self, x: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
        match &self.mask {
            Some(m) => {
                *buf = x.iter().zip(m).map(|(x, m)| x * m).collect();
                buf
            }
            None => x,
        }
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "gatt-lora-linear"
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
        let x = contiguous_f32(s1, l1, "lora linear")?;
        let a = contiguous_f32(s2, l2, "lora linear")?;
        let b = contiguous_f32(s3, l3, "lora linear")?;
        let k = *l1.shape().dims().last().unwrap_or(&0);
        let rows = l1.shape().elem_count() / k.max(1);
        let (rank, out) = l3.shape().dims2()?;
        let mut out_dims = l1.shape().dims().to_vec();
        *out_dims.last_mut().expect("at least one dim") = out;
        let (ws, wl) = self.w.storage_and_layout();
        let w = weights(cpu(&ws)?, wl)?;
        let mut buf = Vec::new();
        let xd = self.masked(x, &mut buf);
        let mut xa = vec![0f32; rows * rank];
        mm(
            rows,
            rank,
            k,
            &mut xa,
            0.0,
            M::rows(xd, k),
            M::rows(a, rank),
            1.0,
        );
        let merged = match self.mask {
            None if rows >= MERGE_FROM_ROWS => merge(w, k, out, a, b, rank, self.scale),
            _ => None,
        };
        let y = match &merged {
            Some(m) => mm_new(rows, out, k, M::rows(x, k), M(m, w.1, w.2), 1.0),
            None => {
                let mut y = mm_new(rows, out, k, M::rows(x, k), w, 1.0);
                mm(
                    rows,
                    out,
                    rank,
                    &mut y,
                    1.0,
                    M::rows(&xa, rank),
                    M::rows(b, out),
                    self.scale,
                );
                y
            }
        };
        *self.xa.lock().expect("lora activations") = xa;
        *self.merged.lock().expect("merged weights") = merged;
        Ok((CpuStorage::F32(y), Shape::from(out_dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let k = *x.dims().last().unwrap_or(&0);
        let rows = x.elem_count() / k.max(1);
        let (rank, out) = b.dims2()?;
        let s = self.scale;
        let xa = self.xa.lock().expect("lora activations").clone();
        let (dys, dyl) = dy.storage_and_layout();
        let dyv = contiguous_f32(cpu(&dys)?, dyl, "lora linear")?;
        let (bs, bl) = b.storage_and_layout();
        let bv = contiguous_f32(cpu(&bs)?, bl, "lora linear")?;
        // g = dy Bᵀ (rows x rank)
        let mut g = vec![0f32; rows * rank];
        mm(
            rows,
            rank,
            out,
            &mut g,
            0.0,
            M::rows(dyv, out),
            M::rows(bv, out).t(),
            1.0,
        );
        // dB = s (x∘m A)ᵀ dy (rank x out)
        let db = if b.track_op() {
            let mut db = vec![0f32; rank * out];
            mm(
                rank,
                out,
                rows,
                &mut db,
                0.0,
                M::rows(&xa, rank).t(),
                M::rows(dyv, out),
                s,
            );
            Some(db)
        } else {
            None
        };
        let (xs, xl) = x.storage_and_layout();
        let xv = contiguous_f32(cpu(&xs)?, xl, "lora linear")?;
        // dA = s (x∘m)ᵀ g (in x rank)
        let da = if a.track_op() {
            let mut buf = Vec::new();
            let xd = self.masked(xv, &mut buf);
            let mut da = vec![0f32; k * rank];
            mm(
                k,
                rank,
                rows,
                &mut da,
                0.0,
                M::rows(xd, k).t(),
                M::rows(&g, rank),
                s,
            );
            Some(da)
        } else {
            None
        };
        // dx = dy Wᵀ + s ((g Aᵀ) ∘ m), or dy W'ᵀ with the merged weights.
        let merged = self.merged.lock().expect("merged weights");
        let dx = if let (true, Some(m)) = (x.track_op(), merged.as_ref()) {
            let (ws, wl) = self.w.storage_and_layout();
            let w = weights(cpu(&ws)?, wl)?;
            Some(mm_new(
                rows,
                k,
                out,
                M::rows(dyv, out),
                M(m, w.1, w.2).t(),
                1.0,
            ))
        } else if x.track_op() {
            let (as_, al) = a.storage_and_layout();
            let av = contiguous_f32(cpu(&as_)?, al, "lora linear")?;
            let (ws, wl) = self.w.storage_and_layout();
            let w = weights(cpu(&ws)?, wl)?;
            let mut dx = mm_new(rows, k, out, M::rows(dyv, out), w.t(), 1.0);
            match &self.mask {
                None => mm(
                    rows,
                    k,
                    rank,
                    &mut dx,
                    1.0,
                    M::rows(&g, rank),
                    M::rows(av, rank).t(),
                    s,
                ),
                Some(m) => {
                    let mut ga = vec![0f32; rows * k];
                    mm(
                        rows,
                        k,
                        rank,
                        &mut ga,
                        0.0,
                        M::rows(&g, rank),
                        M::rows(av, rank).t(),
                        1.0,
                    );
                    for ((d, g), m) in dx.iter_mut().zip(&ga).zip(m) {
                        *d += s * g * m;
                    }
                }
            }
            Some(dx)
        } else {
            None
        };
        let dev = x.device();
        Ok((
            dx.map(|v| Tensor::from_vec(v, x.shape(), dev))
                .transpose()?,
            da.map(|v| Tensor::from_vec(v, (k, rank), dev))
                .transpose()?,
            db.map(|v| Tensor::from_vec(v, (rank, out), dev))
                .transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::{max_diff, probe_grads, randn, var_randn};
    use candle_core::Device;

    /// Values and the gradients of x, A and B equal the composed ops, with and without a
    /// dropout mask, for transposed (strided) and row-major frozen weights, a batch
    /// dimension, and few rows or enough to merge the adapter into the weights; the
    /// frozen weights get no gradient.
    #[test]
    fn equals_composed_ops_forward_and_backward() {
        let (k, out) = (20, 13);
        for rows in [37, MERGE_FROM_ROWS + 3] {
            for with_mask in [false, true] {
                for transposed in [true, false] {
                    let wt = randn(0f32, 1.0, (out, k), &Device::Cpu).unwrap();
                    let w = if transposed {
                        wt.t().unwrap()
                    } else {
                        wt.t().unwrap().contiguous().unwrap()
                    };
                    check_against_composed(rows, &w, &wt, with_mask);
                }
            }
        }
    }

    fn check_against_composed(rows: usize, w: &Tensor, wt: &Tensor, with_mask: bool) {
        let dev = Device::Cpu;
        let (k, out) = w.dims2().unwrap();
        let rank = 4;
        {
            let x = var_randn(0f32, 1.0, (1, rows, k), &dev).unwrap();
            let a = var_randn(0f32, 1.0, (k, rank), &dev).unwrap();
            let b = var_randn(0f32, 1.0, (rank, out), &dev).unwrap();
            let mask: Option<Vec<f32>> =
                with_mask.then(|| (0..rows * k).map(|i| [0.0, 1.25][i % 3 % 2]).collect());
            let s = 0.7f32;
            let ours = lora_linear(x.as_tensor(), w, &a, &b, s, mask.clone()).unwrap();
            let xd = match &mask {
                Some(m) => (x.as_tensor()
                    * Tensor::from_vec(m.clone(), (1, rows, k), &dev).unwrap())
                .unwrap(),
                None => x.as_tensor().clone(),
            };
            let x2 = x.as_tensor().reshape((rows, k)).unwrap();
            let xd2 = xd.reshape((rows, k)).unwrap();
            let theirs = (x2.matmul(&w.contiguous().unwrap()).unwrap()
                + (xd2
                    .matmul(a.as_tensor())
                    .unwrap()
                    .matmul(b.as_tensor())
                    .unwrap()
                    * s as f64)
                    .unwrap())
            .unwrap()
            .reshape((1, rows, out))
            .unwrap();
            assert_eq!(ours.dims(), &[1, rows, out]);
            assert!(max_diff(&ours, &theirs) < 1e-4);
            let probe = randn(0f32, 1.0, (1, rows, out), &dev).unwrap();
            let (g1, g2) = (probe_grads(&ours, &probe), probe_grads(&theirs, &probe));
            for v in [x.as_tensor(), a.as_tensor(), b.as_tensor()] {
                let (p, q) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                // Relative to the largest gradient: those of A and B sum over all rows.
                let largest = q
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let d = max_diff(p, q);
                assert!(
                    d < 1e-5 * (1.0 + largest),
                    "{rows} rows, mask {with_mask}: {d}"
                );
            }
            assert!(g1.get(wt).is_none());
            assert!(g1.get(w).is_none());
        }
    }
}
