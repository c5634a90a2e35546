//! A matrix product whose right operand is frozen: its backward pass returns the
//! input's gradient only. candle's own matmul always computes both gradients, which
//! for LoRA (frozen base weights) costs a third more work per step for nothing.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

struct FrozenMatmul {
    /// (k, n), not a variable.
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => {
                Tensor::from_slice(&v[a..b], layout.shape(), &candle_core::Device::Cpu)?
            }
            _ => candle_core::bail!("frozen-matmul: expected a contiguous f32 input"),
        };
        let y = x.matmul(&self.w)?;
        let shape = y.shape().clone();
        let (s, _) = y.storage_and_layout();
        match &*s {
            candle_core::Storage::Cpu(c) => Ok((c.clone(), shape)),
            _ => candle_core::bail!("frozen-matmul: expected CPU storage"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w.t()?)?))
    }
}

/// `x` (rows, k) times the frozen `w` (k, n). On other devices than the CPU, or for
/// non-f32 inputs, an ordinary product (correct, just slower to differentiate).
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && w.device().is_cpu() {
        x.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() })
    } else {
        x.matmul(w)
    }
}
