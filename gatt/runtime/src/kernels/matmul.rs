//! The model's matrix product on the CPU: threads chosen by the product's size, and a
//! backward pass that computes only the gradients something needs.
//!
//! candle runs every product on all threads. For the small products of decoding one
//! sequence (1 x 576 x 1536) and of LoRA adapters (rows x 576 x rank), waking the
//! thread pool costs several times the product itself (92 x 576 x 16: about 20 us on one
//! thread, 120-180 us on two). And candle's backward pass computes the gradients of both
//! operands, where a frozen base weight needs none (a third of LoRA's backward work).
//! candle also asks for its thread count on every product, and on Linux that count is
//! read from `/proc/cpuinfo` each time (tens of microseconds); here it is read once.
//! Large products are cut into one block of output rows (or columns) per thread, each a
//! single-threaded gemm on candle's barrier pool ([`gemm_parts`]), not gemm's own
//! threading on rayon's pool. On other devices, and for other dtypes, the product is
//! candle's own.

use super::rows::for_each_task;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use std::sync::OnceLock;

/// Products with fewer multiply-adds than this run on the calling thread.
pub(super) const ONE_THREAD_BELOW: usize = 4 << 20;

/// candle's thread count (`CANDLE_NUM_THREADS`, `RAYON_NUM_THREADS` or the physical
/// cores), read once per process.
pub(super) fn num_threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(candle_core::utils::get_num_threads)
}

/// A matrix operand as gemm reads it: elements, row stride, column stride.
#[derive(Clone, Copy)]
pub(super) struct M<'a>(pub &'a [f32], pub isize, pub isize);

impl<'a> M<'a> {
    /// Row-major with rows of `n` elements.
    pub fn rows(v: &'a [f32], n: usize) -> Self {
        M(v, n as isize, 1)
    }

    /// The transposed matrix.
    pub fn t(self) -> Self {
        M(self.0, self.2, self.1)
    }
}

/// `dst (m x n, row-major) = alpha · dst + beta · a (m x k) b (k x n)`; `dst` is only
/// read when `alpha` is not 0.
#[allow(clippy::too_many_arguments)]
pub(super) fn mm(m: usize, n: usize, k: usize, dst: &mut [f32], alpha: f32, a: M, b: M, beta: f32) {
    assert!(dst.len() >= m * n, "lora linear: output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst[..m * n].iter_mut().for_each(|v| *v *= alpha);
        return;
    }
    // SAFETY: the operands come from contiguous buffers or candle layouts that address
    // m x k and k x n elements of their slices; `dst` holds m x n initialized elements.
    unsafe { gemm_into(m, n, k, dst.as_mut_ptr(), alpha, a, b, beta) }
}

/// `beta · a (m x k) b (k x n)` in a new m x n buffer that gemm writes directly, not
/// cleared first (one pass less over memory gemm overwrites anyway).
pub(super) fn mm_new(m: usize, n: usize, k: usize, a: M, b: M, beta: f32) -> Vec<f32> {
    if m == 0 || n == 0 || k == 0 {
        return vec![0f32; m * n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: operands as in `mm`; the spare capacity holds m x n elements; with alpha 0
    // gemm does not read them and, k being positive, writes every one before set_len.
    unsafe {
        gemm_into(
            m,
            n,
            k,
            v.spare_capacity_mut().as_mut_ptr().cast(),
            0.0,
            a,
            b,
            beta,
        );
        v.set_len(m * n);
    }
    v
}

/// gemm's `dst = alpha · dst + beta · a b` (m x n, rows n apart), on candle's threads
/// for large products, on the calling thread for small ones.
///
/// # Safety
/// `dst` must address m x n writable elements (readable too when `alpha` is not 0); the
/// operands must address m x k and k x n elements of their slices; k > 0.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    alpha: f32,
    a: M,
    b: M,
    beta: f32,
) {
    gemm_parts(
        m,
        n,
        k,
        Raw::new(dst, n as isize, 1),
        alpha,
        Raw::new(a.0.as_ptr(), a.1, a.2),
        Raw::new(b.0.as_ptr(), b.1, b.2),
        beta,
    )
}

/// A matrix as gemm addresses it: first element, row stride, column stride.
#[derive(Clone, Copy)]
pub(super) struct Raw {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

// SAFETY: a `Raw` is only an address; `gemm_parts` hands each thread disjoint output
// blocks, and the operands are only read.
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

impl Raw {
    pub fn new(ptr: *const f32, rs: isize, cs: isize) -> Self {
        Raw { ptr, rs, cs }
    }

    /// The matrix from row `r` and column `c` on.
    ///
    /// # Safety
    /// The element at (r, c) must lie inside the allocation.
    unsafe fn at(self, r: usize, c: usize) -> Self {
        Raw {
            ptr: self.ptr.offset(r as isize * self.rs + c as isize * self.cs),
            ..self
        }
    }
}

/// Output blocks are cut at multiples of this many rows or columns (gemm's register tile
/// is 16 x 4 or 4 x 16 floats with AVX2; with AVX-512 its tiles are 64 x 6, of which a
/// cut at 16 splits at most one row of tiles).
const PART_ALIGN: usize = 16;

/// gemm's `dst = alpha · dst + beta · a b` (m x n), cut into one block of output rows per
/// thread (columns when the output is wider than tall), each block a single-threaded
/// gemm. gemm's own threading (`Parallelism::Rayon`) shares packed panels between the
/// threads and meets at a barrier for each; on two cores that gave 76-104 GFLOP/s for
/// the 2,048 x 576 x 1,536 product against 118-122 for two independent halves (each
/// thread packs the other operand for itself: k x n extra reads, small next to m k n / 2
/// multiply-adds). `examples/gemm_speed.rs` measures both. Products under
/// [`ONE_THREAD_BELOW`] multiply-adds run on the calling thread.
///
/// # Safety
/// As for `gemm`: `dst` addresses m x n writable elements (readable when `alpha` is not
/// 0), `a` m x k and `b` k x n readable ones at their strides; no block of `dst` may
/// overlap another or an operand.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_parts(
    m: usize,
    n: usize,
    k: usize,
    dst: Raw,
    alpha: f32,
    a: Raw,
    b: Raw,
    beta: f32,
) {
    gemm_in_parts(num_threads(), m, n, k, dst, alpha, a, b, beta)
}

/// [`gemm_parts`] with at most `threads` parts.
///
/// # Safety
/// As for [`gemm_parts`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_in_parts(
    threads: usize,
    m: usize,
    n: usize,
    k: usize,
    dst: Raw,
    alpha: f32,
    a: Raw,
    b: Raw,
    beta: f32,
) {
    let one = |m: usize, n: usize, dst: Raw, a: Raw, b: Raw| {
        // SAFETY: the caller's contract, for a block of it.
        unsafe {
            gemm(
                m,
                n,
                k,
                dst.ptr as *mut f32,
                dst.cs,
                dst.rs,
                alpha != 0.0,
                a.ptr,
                a.cs,
                a.rs,
                b.ptr,
                b.cs,
                b.rs,
                alpha,
                beta,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    };
    let long = m.max(n);
    let parts = threads.min(long / PART_ALIGN);
    if parts < 2 || m * n * k < ONE_THREAD_BELOW {
        return one(m, n, dst, a, b);
    }
    // Part i covers [i * long / parts, (i + 1) * long / parts), rounded to PART_ALIGN.
    let edge = |i: usize| (i * long / parts).div_ceil(PART_ALIGN) * PART_ALIGN;
    let edge = |i: usize| if i == parts { long } else { edge(i).min(long) };
    for_each_task(parts, |i| {
        let (from, to) = (edge(i), edge(i + 1));
        if from >= to {
            return;
        }
        // SAFETY: rows (or columns) from..to lie inside the matrices, and each part
        // writes only its own rows (columns) of `dst`.
        unsafe {
            if m >= n {
                one(to - from, n, dst.at(from, 0), a.at(from, 0), b)
            } else {
                one(m, to - from, dst.at(0, from), a, b.at(0, from))
            }
        }
    });
}

/// Batch count, rows, columns and (batch, row, column) strides of a rank-2 or rank-3
/// operand; a rank-2 operand is one batch.
fn dims_and_strides(l: &Layout) -> Result<(usize, usize, usize, [isize; 3])> {
    let st = l.stride();
    match *l.shape().dims() {
        [r, c] => Ok((1, r, c, [0, st[0] as isize, st[1] as isize])),
        [b, r, c] => Ok((b, r, c, [st[0] as isize, st[1] as isize, st[2] as isize])),
        _ => bail!("gatt-matmul: expected rank 2 or 3, got {:?}", l.shape()),
    }
}

/// The product scaled by `scale` (the scale is free inside gemm; a LoRA adapter would
/// otherwise spend a pass over its output, and another backwards, multiplying by it).
struct Matmul {
    scale: f32,
}

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
        let (ba, m, k, sa) = dims_and_strides(l1)?;
        let (bb, k2, n, sb) = dims_and_strides(l2)?;
        if k != k2 || ba != bb {
            bail!(
                "gatt-matmul: {:?} x {:?} do not fit",
                l1.shape(),
                l2.shape()
            )
        }
        let a = &a[l1.start_offset()..];
        let b = &b[l2.start_offset()..];
        let len = ba * m * n;
        // The output is left uninitialized for gemm to write (zeroing it first is a whole
        // extra pass over fresh pages); an empty inner dimension gives zeros.
        let mut c: Vec<f32> = Vec::with_capacity(len);
        if k == 0 {
            c.resize(len, 0.0);
        } else if len > 0 {
            let dst = c.spare_capacity_mut().as_mut_ptr() as *mut f32;
            for i in 0..ba {
                // SAFETY: the layouts come from candle and address only elements of `a`
                // and `b` from their start offsets; `dst` has room for batch x m x n
                // elements and batch `i` writes only its own m x n block.
                unsafe {
                    gemm_parts(
                        m,
                        n,
                        k,
                        Raw::new(dst.add(i * m * n), n as isize, 1),
                        0.0,
                        Raw::new(a.as_ptr().offset(i as isize * sa[0]), sa[1], sa[2]),
                        Raw::new(b.as_ptr().offset(i as isize * sb[0]), sb[1], sb[2]),
                        self.scale,
                    )
                }
            }
            // SAFETY: with `read_dst` false and k > 0, gemm wrote every element of every
            // block.
            unsafe { c.set_len(len) };
        }
        let shape = if l1.shape().rank() == 2 {
            Shape::from((m, n))
        } else {
            Shape::from((ba, m, n))
        };
        Ok((CpuStorage::F32(c), shape))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _c: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let s = self.scale as f64;
        let grad_a = if a.track_op() {
            Some(matmul_scaled(grad, &b.t()?, s)?)
        } else {
            None
        };
        let grad_b = match (b.track_op(), a.rank(), b.rank()) {
            (false, ..) => None,
            // Rows of one batch times a matrix: the gradient of the matrix is a matrix.
            (true, 3, 2) => Some(matmul_scaled(&a.squeeze(0)?.t()?, &grad.squeeze(0)?, s)?),
            (true, ..) => Some(matmul_scaled(&a.t()?, grad, s)?),
        };
        Ok((grad_a, grad_b))
    }
}

/// `a` (m, k) times `b` (k, n), or batched: (batch, m, k) times (batch, k, n), or the
/// rows of one batch (1, m, k) times (k, n), giving (1, m, n).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_scaled(a, b, 1.0)
}

/// `scale * a b`, shapes as in [`matmul`].
pub fn matmul_scaled(a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let cpu_f32 = a.device().is_cpu()
        && b.device().is_cpu()
        && a.dtype() == DType::F32
        && b.dtype() == DType::F32;
    let ranks_fit = match (a.rank(), b.rank()) {
        (2, 2) | (3, 3) => true,
        (3, 2) => a.dim(0)? == 1,
        _ => false,
    };
    if cpu_f32 && ranks_fit {
        a.apply_op2(
            b,
            Matmul {
                scale: scale as f32,
            },
        )
    } else {
        let c = if a.rank() == b.rank() {
            a.matmul(b)?
        } else {
            a.broadcast_matmul(b)?
        };
        if scale == 1.0 {
            Ok(c)
        } else {
            c * scale
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::{max_diff, probe_grads, randn, var_randn};
    use candle_core::Device;

    #[test]
    fn products_cut_into_parts_equal_one_product() {
        // Tall (cut by rows) and wide (cut by columns) outputs, sizes off the 16-element
        // alignment, a transposed operand, accumulation into dst (alpha != 0), and more
        // parts than fit (`threads` 5 for 40 rows: 2 parts).
        let dev = Device::Cpu;
        for (m, k, n) in [(301, 97, 203), (40, 580, 333), (203, 170, 301)] {
            let a = randn(0f32, 1.0, (k, m), &dev).unwrap(); // read transposed
            let b = randn(0f32, 1.0, (k, n), &dev).unwrap();
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let start: Vec<f32> = (0..m * n).map(|i| (i % 13) as f32 * 0.25).collect();
            let run = |threads: usize| {
                let mut c = start.clone();
                // SAFETY: a is k x m read as its m x k transpose, b is k x n, c is m x n.
                unsafe {
                    gemm_in_parts(
                        threads,
                        m,
                        n,
                        k,
                        Raw::new(c.as_mut_ptr(), n as isize, 1),
                        0.5,
                        Raw::new(a.as_ptr(), 1, m as isize),
                        Raw::new(b.as_ptr(), n as isize, 1),
                        2.0,
                    )
                };
                c
            };
            let whole = run(1);
            // Blocks may sum in another order, and machines pick other kernels. Two
            // orders of one sum of n terms differ by at most 2 n eps (sum of |terms|)
            // (Higham, Accuracy and Stability of Numerical Algorithms, 3.1); here the
            // terms are 2 a_ip b_pj and 0.5 c_ij, with one more rounding of c for each
            // block of k that gemm adds in. Correct code stays within it; a dropped or
            // doubled block is off by a whole block's sum. Checked element by element,
            // so a NaN fails too.
            let bound: Vec<f32> = (0..m * n)
                .map(|ij| {
                    let (i, j) = (ij / n, ij % n);
                    let terms: f32 = (0..k).map(|p| (a[p * m + i] * b[p * n + j]).abs()).sum();
                    2.0 * (k + 2) as f32 * f32::EPSILON * (2.0 * terms + 0.5 * start[ij])
                })
                .collect();
            for threads in [2, 3, 5] {
                let parts = run(threads);
                for ij in 0..m * n {
                    let diff = (whole[ij] - parts[ij]).abs();
                    assert!(
                        diff <= bound[ij],
                        "{m}x{k}x{n} on {threads}, element {ij}: {} vs {}, bound {}",
                        whole[ij],
                        parts[ij],
                        bound[ij]
                    );
                }
            }
            // And the single product is the product: spot-check against a plain sum.
            for &(i, j) in &[(0, 0), (m - 1, n - 1), (m / 2, n / 3)] {
                let dot: f32 = (0..k).map(|p| a[p * m + i] * b[p * n + j]).sum();
                let want = 0.5 * start[i * n + j] + 2.0 * dot;
                assert!((whole[i * n + j] - want).abs() < 1e-3 * (1.0 + want.abs()));
            }
        }
    }

    #[test]
    fn equals_candle_for_strided_operands_small_and_large() {
        let dev = Device::Cpu;
        for (m, k, n) in [(1, 576, 64), (7, 5, 3), (92, 576, 16), (300, 96, 200)] {
            let a = randn(0f32, 1.0, (m, k), &dev).unwrap();
            let bt = randn(0f32, 1.0, (n, k), &dev).unwrap();
            let b = bt.t().unwrap(); // column-major view
            let want = a.matmul(&b.contiguous().unwrap()).unwrap();
            assert!(max_diff(&matmul(&a, &b).unwrap(), &want) < 1e-3);
            let wide = randn(0f32, 1.0, (m, k + 3), &dev).unwrap();
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
    fn an_empty_inner_dimension_gives_zeros() {
        let dev = Device::Cpu;
        let a = Tensor::zeros((3, 0), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((0, 4), DType::F32, &dev).unwrap();
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.dims(), &[3, 4]);
        assert_eq!(
            c.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn batched_equals_candle_for_strided_operands() {
        let dev = Device::Cpu;
        // Attention's shapes: heads x queries x dim times a key cache read in place
        // (a narrowed, transposed view with a batch stride larger than its block).
        let q = randn(0f32, 1.0, (3, 5, 8), &dev).unwrap();
        let cache = randn(0f32, 1.0, (3, 20, 8), &dev).unwrap();
        let keys = cache.narrow(1, 4, 11).unwrap();
        let want = q.matmul(&keys.t().unwrap().contiguous().unwrap()).unwrap();
        let got = matmul(&q, &keys.t().unwrap()).unwrap();
        assert_eq!(got.dims(), &[3, 5, 11]);
        assert!(max_diff(&got, &want) < 1e-4);
        let p = randn(0f32, 1.0, (3, 5, 11), &dev).unwrap();
        let want = p.matmul(&keys.contiguous().unwrap()).unwrap();
        assert!(max_diff(&matmul(&p, &keys).unwrap(), &want) < 1e-4);
    }

    /// The rows of one batch times a matrix, as a packed training chunk runs its
    /// layers: values and both gradients equal the product of the rows as a matrix.
    #[test]
    fn rows_of_one_batch_times_a_matrix() {
        let dev = Device::Cpu;
        let a = var_randn(0f32, 1.0, (1, 9, 6), &dev).unwrap();
        let b = var_randn(0f32, 1.0, (6, 4), &dev).unwrap();
        let w = randn(0f32, 1.0, (1, 9, 4), &dev).unwrap();
        let ours = matmul_scaled(a.as_tensor(), b.as_tensor(), 0.5).unwrap();
        assert_eq!(ours.dims(), &[1, 9, 4]);
        let theirs = (a
            .as_tensor()
            .squeeze(0)
            .unwrap()
            .matmul(b.as_tensor())
            .unwrap()
            * 0.5)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-4);
        let (g1, g2) = (probe_grads(&ours, &w), probe_grads(&theirs, &w));
        for v in [a.as_tensor(), b.as_tensor()] {
            let (p, q) = (g1.get(v).unwrap(), g2.get(v).unwrap());
            assert_eq!(p.dims(), v.dims());
            assert!(max_diff(p, q) < 1e-4);
        }
    }

    #[test]
    fn gradients_equal_candle_and_only_where_tracked() {
        let dev = Device::Cpu;
        let a = var_randn(0f32, 1.0, (9, 6), &dev).unwrap();
        let b = var_randn(0f32, 1.0, (6, 4), &dev).unwrap();
        let frozen = randn(0f32, 1.0, (6, 4), &dev).unwrap();
        let w = randn(0f32, 1.0, (9, 4), &dev).unwrap();
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
        // Scaled: the gradient carries the scale.
        let scaled = (matmul_scaled(a.as_tensor(), b.as_tensor(), 0.5).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [a.as_tensor(), b.as_tensor()] {
            let half = (theirs.get(v).unwrap() * 0.5).unwrap();
            assert!(max_diff(scaled.get(v).unwrap(), &half) < 1e-4);
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
