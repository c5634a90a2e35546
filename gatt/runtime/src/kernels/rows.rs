//! What the model's own CPU kernels share: borrowing a contiguous f32 buffer from candle's
//! storage, and splitting an output into blocks of whole rows over threads.

#[cfg(test)]
use candle_core::Tensor;
use candle_core::{bail, CpuStorage, Layout, Result};
use std::sync::Mutex;

/// Elements per parallel task (whole rows, at least one), and the size under which one
/// thread does it all: below this, waking a second thread costs more than it saves.
const ELEMS_PER_TASK: usize = 16 * 1024;

/// The elements of a contiguous f32 tensor; `op` names the kernel in the error.
pub fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("{op}: expected a contiguous f32 tensor"),
    }
}

/// Runs `f(first_row, block)` over blocks of whole rows of `out` (rows of `row_len`
/// elements; the caller reads its inputs at the same rows), in parallel when there is
/// enough work.
pub fn for_row_blocks<F>(out: &mut [f32], row_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    for_row_blocks_by_work(out, row_len, row_len, f)
}

/// [`for_row_blocks`] for rows that each cost about `row_work` element operations
/// (more than their length when a row reads many inputs).
///
/// The blocks run on candle's barrier pool, as candle's own element-wise ops and the
/// quantized products do: its workers spin between jobs, while waking rayon's sleeping
/// workers cost tens of microseconds per call, and with 16 sequences decoding that was
/// once per layer (the SiLU gate).
pub fn for_row_blocks_by_work<F>(out: &mut [f32], row_len: usize, row_work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let rows_per_task = (ELEMS_PER_TASK / row_work.max(1)).max(1);
    let block = rows_per_task * row_len.max(1);
    if out.len() <= block {
        f(0, out);
        return;
    }
    let blocks: Vec<Mutex<&mut [f32]>> = out.chunks_mut(block).map(Mutex::new).collect();
    candle_core::utils::barrier_pool().execute_chunked(blocks.len(), |range| {
        for i in range {
            f(
                i * rows_per_task,
                &mut blocks[i].lock().expect("block lock"),
            );
        }
    });
}

/// Largest absolute difference between two tensors of one shape (the kernels' tests
/// compare against candle's composed ops with it).
#[cfg(test)]
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of one shape")
}

/// Gradients of `sum(out * probe)`: a random probe checks every output's gradient path.
#[cfg(test)]
pub fn probe_grads(out: &Tensor, probe: &Tensor) -> candle_core::backprop::GradStore {
    (out * probe)
        .and_then(|p| p.sum_all())
        .and_then(|s| s.backward())
        .expect("a differentiable output")
}
