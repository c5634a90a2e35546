//! The feed-forward gate, `silu(gate) * up`, in one pass, with a one-pass backward.
//!
//! Composed, it is a SiLU (itself several ops in candle's backward pass) and a multiply,
//! each into a fresh intermediate-sized buffer, per layer and per direction. On other
//! devices than the CPU the composed form is used.

use super::exp::exp_shifted_in_place;
use super::rows::{contiguous_f32, for_row_blocks};
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};

/// `silu(gate) * up`, elementwise; both have the same shape.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.device().is_cpu() && gate.dtype() == DType::F32 && up.dtype() == DType::F32 {
        return gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul);
    }
    candle_nn::ops::silu(gate)? * up
}

/// `silu(a) * b` for the two halves of `both` (.., 2n), giving (.., n): the gate and up
/// products side by side as one stacked product of a decoding step leaves them, read in
/// place (inference only: no backward pass).
pub fn silu_mul_halves(both: &Tensor) -> Result<Tensor> {
    both.contiguous()?.apply_op1_no_bwd(&SiluMulHalves)
}

/// Rows of this many elements for splitting the work (any length works).
const ROW: usize = 1024;

/// `y = silu(g) · u`: exp(-g) in bulk, then `g / (1 + exp(-g)) · u`.
fn silu_mul_into(g: &[f32], u: &[f32], y: &mut [f32]) {
    for (y, &g) in y.iter_mut().zip(g) {
        *y = -g;
    }
    exp_shifted_in_place(y, 0.0);
    for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
        *y = g * (1.0 / (1.0 + *y)) * u;
    }
}

/// `silu(g) · u` of equal-length buffers, in parallel blocks.
pub(super) fn silu_mul_all(g: &[f32], u: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; g.len()];
    for_row_blocks(&mut y, ROW, |first, ys| {
        let at = first * ROW;
        silu_mul_into(&g[at..at + ys.len()], &u[at..at + ys.len()], ys);
    });
    y
}

/// The gradients of `silu(x) · u` for the output gradient `g`, stacked: [d gate | d up]
/// (2 x len).
pub(super) fn silu_mul_grad_all(x: &[f32], u: &[f32], g: &[f32]) -> Vec<f32> {
    let n = x.len();
    let mut out = vec![0f32; 2 * n];
    let (d_gate, d_up) = out.split_at_mut(n);
    // d_up holds s = sigmoid(x) first, as in the forward pass: exp(-x) in bulk, then
    // 1 / (1 + exp(-x)).
    for_row_blocks(d_up, ROW, |first, s| {
        let x = &x[first * ROW..first * ROW + s.len()];
        for (s, &x) in s.iter_mut().zip(x) {
            *s = -x;
        }
        exp_shifted_in_place(s, 0.0);
        s.iter_mut().for_each(|s| *s = 1.0 / (1.0 + *s));
    });
    let sig: &[f32] = d_up;
    for_row_blocks(d_gate, ROW, |first, dg| {
        let at = first * ROW;
        let len = dg.len();
        let (x, u, g) = (&x[at..at + len], &u[at..at + len], &g[at..at + len]);
        for ((((d, &x), &u), &g), &s) in dg.iter_mut().zip(x).zip(u).zip(g).zip(&sig[at..]) {
            *d = g * u * s * (1.0 + x * (1.0 - s));
        }
    });
    for_row_blocks(d_up, ROW, |first, du| {
        let at = first * ROW;
        let len = du.len();
        let (x, g) = (&x[at..at + len], &g[at..at + len]);
        for ((d, &x), &g) in du.iter_mut().zip(x).zip(g) {
            *d *= g * x;
        }
    });
    out
}

struct SiluMulHalves;

impl CustomOp1 for SiluMulHalves {
    fn name(&self) -> &'static str {
        "gatt-silu-mul-halves"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "silu mul")?;
        let mut dims = layout.dims().to_vec();
        let two_n = dims.last().copied().unwrap_or(0);
        if two_n == 0 || two_n % 2 != 0 {
            bail!("silu mul: the last dimension of {dims:?} is not two halves")
        }
        let n = two_n / 2;
        let mut y = vec![0f32; x.len() / 2];
        for_row_blocks(&mut y, n, |first, ys| {
            for (i, y) in ys.chunks_mut(n).enumerate() {
                let (g, u) = x[(first + i) * two_n..][..two_n].split_at(n);
                silu_mul_into(g, u, y);
            }
        });
        *dims.last_mut().expect("checked above") = n;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "gatt-silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s1, l1, "silu mul")?;
        let u = contiguous_f32(s2, l2, "silu mul")?;
        if l1.shape() != l2.shape() {
            bail!("silu mul: {:?} against {:?}", l1.shape(), l2.shape())
        }
        Ok((CpuStorage::F32(silu_mul_all(g, u)), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Both gradients in one pass, stacked as (2, ..): [d gate, d up].
        let both = gate.apply_op3_no_bwd(up, &grad.contiguous()?, &SiluMulGrad)?;
        let d_gate = both.get(0)?;
        let d_up = both.get(1)?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

/// d gate = g * u * s * (1 + x * (1 - s)) and d up = g * x * s, with s = sigmoid(x).
struct SiluMulGrad;

impl CustomOp3 for SiluMulGrad {
    fn name(&self) -> &'static str {
        "gatt-silu-mul-grad"
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
        let x = contiguous_f32(s1, l1, "silu mul grad")?;
        let u = contiguous_f32(s2, l2, "silu mul grad")?;
        let g = contiguous_f32(s3, l3, "silu mul grad")?;
        let out = silu_mul_grad_all(x, u, g);
        let mut dims = vec![2];
        dims.extend_from_slice(l1.dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::{max_diff, probe_grads, randn, var_randn};
    use candle_core::Device;

    /// The halves of one tensor give the same bits as the two tensors apart.
    #[test]
    fn halves_equal_the_two_tensors() {
        let dev = Device::Cpu;
        for rows in [1usize, 3, 40] {
            let both = randn(0f32, 3.0, (rows, 2 * 1500), &dev).unwrap();
            let (g, u) = (
                both.narrow(1, 0, 1500).unwrap(),
                both.narrow(1, 1500, 1500).unwrap(),
            );
            let want = silu_mul(&g, &u).unwrap();
            let got = silu_mul_halves(&both).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(max_diff(&got, &want), 0.0);
        }
        assert!(silu_mul_halves(&Tensor::zeros((2, 3), DType::F32, &dev).unwrap()).is_err());
    }

    #[test]
    fn values_and_gradients_equal_the_composed_ops() {
        let dev = Device::Cpu;
        // One block, and many blocks with a ragged last one.
        for shape in [(3usize, 5usize), (40, 1000)] {
            let gate = var_randn(0f32, 3.0, shape, &dev).unwrap();
            let up = var_randn(0f32, 1.0, shape, &dev).unwrap();
            let probe = randn(0f32, 1.0, shape, &dev).unwrap();
            let ours = silu_mul(gate.as_tensor(), up.as_tensor()).unwrap();
            let theirs =
                (candle_nn::ops::silu(gate.as_tensor()).unwrap() * up.as_tensor()).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-5);
            let g1 = probe_grads(&ours, &probe);
            let g2 = probe_grads(&theirs, &probe);
            for v in [gate.as_tensor(), up.as_tensor()] {
                assert!(
                    max_diff(g1.get(v).unwrap(), g2.get(v).unwrap()) < 1e-4,
                    "{shape:?}"
                );
            }
        }
    }
}
