//! The model's matrix product on the CPU: threads chosen by the product's size, and a
//! backward pass that computes only the gradients something needs.
//!
//! candle runs every product on all threads. For the small products of decoding one
//! sequence (1 x 576 x 1536) and of LoRA adapters (rows x 576 x rank), waking the
//! thread pool costs several times the product itself (92 x 576 x 16: about 20 us on one
//! thread, 120-180 us on two). And candle's backward pass computes the gradients of both
//! operands, where a frozen base weight needs none (a third of LoRA's backward work).
//! On other devices, and for other dtypes, the product is candle's own.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};

/// Products with fewer multiply-adds than this run on the calling thread.
const ONE_THREAD_BELOW: usize = 4 << 20;

struct Matmul;

impl CustomOp2 for Matmul {
    fn name(&self) -> &'static str {
        "gatt-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(a), CpuStorage::F32(b)) = (s1, s2) else {
            bail!("gatt-matmul: expected f32 operands")
        };
        let (m, k) = l1.shape().dims2()?;
        let (k2, n) = l2.shape().dims2()?;
        if k != k2 {
            bail!("gatt-matmul: ({m}, {k}) x ({k2}, {n}) do not fit")
        }
        let (a_rs, a_cs) = (l1.stride()[0] as isize, l1.stride()[1] as isize);
        let (b_rs, b_cs) = (l2.stride()[0] as isize, l2.stride()[1] as isize);
        let a = &a[l1.start_offset()..];
        let b = &b[l2.start_offset()..];
        let mut c = vec![0f32; m * n];
        let parallelism = match candle_core::utils::get_num_threads() {
            t if t > 1 && m * n * k >= ONE_THREAD_BELOW => Parallelism::Rayon(t),
            _ => Parallelism::None,
        };
        if m > 0 && n > 0 {
            // SAFETY: the layouts come from candle and address only elements of `a` and
            // `b` from their start offsets; `c` is a fresh contiguous m x n buffer.
            unsafe {
                gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    a_cs,
                    a_rs,
                    b.as_ptr(),
                    b_cs,
                    b_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        }
        Ok((CpuStorage::F32(c), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _c: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_a = if a.track_op() {
            Some(matmul(grad, &b.t()?)?)
        } else {
            None
        };
        let grad_b = if b.track_op() {
            Some(matmul(&a.t()?, grad)?)
        } else {
            None
        };
        Ok((grad_a, grad_b))
    }
}

/// `a` (m, k) times `b` (k, n).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cpu_f32 = a.device().is_cpu()
        && b.device().is_cpu()
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32;
    if cpu_f32 && a.rank() == 2 && b.rank() == 2 {
        a.apply_op2(b, Matmul)
    } else {
        a.matmul(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(x: &Tensor, y: &Tensor) -> f32 {
        (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn equals_candle_for_strided_operands_small_and_large() {
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 576, 64), (7, 5, 3), (92, 576, 16), (300, 96, 200)] {
            let a = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let bt = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let b = bt.t().unwrap(); // column-major view
            let want = a.matmul(&b.contiguous().unwrap()).unwrap();
            assert!(max_diff(&matmul(&a, &b).unwrap(), &want) < 1e-3);
            let wide = Tensor::randn(0f32, 1.0, (m, k + 3), &dev).unwrap();
            let a2 = wide.narrow(1, 2, k).unwrap(); // offset and row stride
            let want = a2
                .contiguous()
                .unwrap()
                .matmul(&b.contiguous().unwrap())
                .unwrap();
            assert!(max_diff(&matmul(&a2, &b).unwrap(), &want) < 1e-3);
        }
    }

    #[test]
    fn gradients_equal_candle_and_only_where_tracked() {
        let dev = Device::Cpu;
        let a = Var::randn(0f32, 1.0, (9, 6), &dev).unwrap();
        let b = Var::randn(0f32, 1.0, (6, 4), &dev).unwrap();
        let frozen = Tensor::randn(0f32, 1.0, (6, 4), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (9, 4), &dev).unwrap();
        let ours = (matmul(a.as_tensor(), b.as_tensor()).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let theirs = (a.as_tensor().matmul(b.as_tensor()).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [a.as_tensor(), b.as_tensor()] {
            assert!(max_diff(ours.get(v).unwrap(), theirs.get(v).unwrap()) < 1e-4);
        }
        let grads = matmul(a.as_tensor(), &frozen)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(a.as_tensor()).is_some());
        assert!(grads.get(&frozen).is_none());
    }
}
