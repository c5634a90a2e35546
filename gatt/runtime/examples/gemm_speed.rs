//! f32 matrix-product speed (GFLOP/s) of `gemm` at the shapes of one training step of the
//! default model (2,048 packed tokens, hidden 576, MLP 1,536), on 1 and 2 threads.
//!
//! cargo run -p gatt-runtime --example gemm_speed

use gemm::{gemm, Parallelism};
use std::time::Instant;

fn run(m: usize, k: usize, n: usize, a_t: bool, threads: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // a is m x k row-major, or (a_t) k x m row-major read transposed.
    let (rs, cs) = if a_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let t = Instant::now();
        // SAFETY: the buffers hold m x k, k x n and m x n elements.
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
                cs,
                rs,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

fn main() {
    for threads in [1, 2] {
        for (m, k, n, at, what) in [
            (2048, 576, 1536, false, "x W (up/gate)"),
            (2048, 1536, 576, false, "x W (down)"),
            (2048, 576, 576, false, "x W (q/o)"),
            (576, 2048, 1536, true, "xT dy (weight grad)"),
            (300, 576, 49152, false, "lm head"),
        ] {
            println!(
                "{threads} thread(s) {m}x{k}x{n} {what}: {:.1} GFLOP/s",
                run(m, k, n, at, threads)
            );
        }
    }
}
