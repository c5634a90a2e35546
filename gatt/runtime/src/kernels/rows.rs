//! What the model's own CPU kernels share: borrowing a contiguous f32 buffer from candle's
//! storage, and splitting an output into blocks of whole rows over threads; for their tests,
//! seeded random inputs and comparisons against candle's composed ops.

use candle_core::{bail, CpuStorage, Layout, Result};
#[cfg(test)]
use candle_core::{Device, Shape, Tensor, Var};
use std::cell::Cell;
use std::ops::Range;
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
    on_pool(blocks.len(), |range| {
        for i in range {
            f(
                i * rows_per_task,
                &mut blocks[i].lock().expect("block lock"),
            );
        }
    });
}

/// Runs `f(i)` for every task `i` in `0..n`, on candle's barrier pool, each thread taking
/// the next task as it finishes one (so tasks may differ in size).
pub fn for_each_task<F>(n: usize, f: F)
where
    F: Fn(usize) + Sync,
{
    on_pool(n, |range| range.for_each(&f));
}

thread_local! {
    /// Whether this thread is running a task of [`on_pool`].
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// `f` over ranges covering `0..n` on candle's barrier pool (its workers and the calling
/// thread). All of the model's parallel CPU work goes through this one pool: candle's
/// element-wise ops use it, and a second pool (rayon's, for the products and the
/// attention until then) left one pool's threads spinning while the other's worked, more
/// threads than cores. A call from inside a task runs inline (the pool takes one job at
/// a time; from the calling thread it would wait for itself).
fn on_pool<F>(n: usize, f: F)
where
    F: Fn(Range<usize>) + Sync,
{
    if n == 0 {
        return;
    }
    if n == 1 || IN_TASK.with(Cell::get) {
        return f(0..n);
    }
    candle_core::utils::barrier_pool().execute_chunked(n, |range| {
        let _task = InTask::enter();
        f(range);
    });
}

/// Marks this thread as running a task of [`on_pool`] until dropped, so the mark is
/// cleared even when the task panics (candle's pool passes the panic on to the caller).
struct InTask {
    outer: bool,
}

impl InTask {
    fn enter() -> Self {
        InTask {
            outer: IN_TASK.with(|t| t.replace(true)),
        }
    }
}

impl Drop for InTask {
    fn drop(&mut self) {
        IN_TASK.with(|t| t.set(self.outer));
    }
}

#[cfg(test)]
thread_local! {
    /// The tests' generator: seeded alike on every thread, and every test runs on a
    /// thread of its own, so a test draws the same inputs on every run.
    static TEST_RNG: std::cell::RefCell<rand_chacha::ChaCha8Rng> =
        std::cell::RefCell::new(rand::SeedableRng::seed_from_u64(0x6a77));
}

/// Normal draws (`mean`, `std`) for tests, like `Tensor::randn` but from the seeded
/// test generator: a test gets the same inputs on every run, so a failure repeats.
#[cfg(test)]
pub fn randn(mean: f32, std: f32, shape: impl Into<Shape>, dev: &Device) -> Result<Tensor> {
    use rand::Rng;
    let shape = shape.into();
    let normal = rand_distr::Normal::new(mean, std).expect("a finite, non-negative std");
    let data: Vec<f32> = TEST_RNG.with(|r| {
        (0..shape.elem_count())
            .map(|_| r.borrow_mut().sample(normal))
            .collect()
    });
    Tensor::from_vec(data, shape, dev)
}

/// [`randn`] as a trainable variable (`Var::randn` from the seeded test generator).
#[cfg(test)]
pub fn var_randn(mean: f32, std: f32, shape: impl Into<Shape>, dev: &Device) -> Result<Var> {
    Var::from_tensor(&randn(mean, std, shape, dev)?)
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
