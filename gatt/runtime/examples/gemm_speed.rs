//! f32 matrix-product speed (GFLOP/s) of `gemm` at the shapes of one training step of the
//! default model (2,048 packed tokens, hidden 576, MLP 1,536): on one thread, on two
//! threads by gemm's own threading, and as two independent halves of the output on two
//! threads, cut as `kernels::matmul::gemm_parts` cuts them (by rows when the output has at
//! least as many rows as columns, by columns otherwise). Best of 6 runs each.
//!
//! cargo run --release -p gatt-runtime --example gemm_speed

use gemm::{gemm, Parallelism};
use std::time::Instant;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    OneThread,
    GemmThreads,
    Halves,
}

/// `c (rows x cols) = a (rows x k) b (k x cols)`, a at strides (rs, cs), b and c
/// row-major with `ld` elements per row (cols of them used).
///
/// # Safety
/// The pointers address the matrices at those strides.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    rows: usize,
    cols: usize,
    k: usize,
    c: usize,
    a: usize,
    rs: isize,
    cs: isize,
    b: usize,
    ld: usize,
    par: Parallelism,
) {
    gemm(
        rows,
        cols,
        k,
        c as *mut f32,
        1,
        ld as isize,
        false,
        a as *const f32,
        cs,
        rs,
        b as *const f32,
        1,
        ld as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

fn run(m: usize, k: usize, n: usize, a_t: bool, mode: Mode) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    // a is m x k row-major, or (a_t) k x m row-major read transposed.
    let (rs, cs) = if a_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (cp, ap, bp) = (
        c.as_mut_ptr() as usize,
        a.as_ptr() as usize,
        b.as_ptr() as usize,
    );
    let mut best = f64::INFINITY;
    for _ in 0..6 {
        let t = Instant::now();
        // SAFETY: the buffers hold m x k, k x n and m x n elements; the halves write
        // disjoint rows (or columns) of c.
        unsafe {
            match mode {
                Mode::OneThread => product(m, n, k, cp, ap, rs, cs, bp, n, Parallelism::None),
                Mode::GemmThreads => product(m, n, k, cp, ap, rs, cs, bp, n, Parallelism::Rayon(2)),
                Mode::Halves if m >= n => {
                    let h = m / 2;
                    let (c2, a2) = (cp + 4 * h * n, (ap as isize + 4 * h as isize * rs) as usize);
                    rayon::join(
                        || product(h, n, k, cp, ap, rs, cs, bp, n, Parallelism::None),
                        || product(m - h, n, k, c2, a2, rs, cs, bp, n, Parallelism::None),
                    );
                }
                Mode::Halves => {
                    let h = n / 2;
                    let (c2, b2) = (cp + 4 * h, bp + 4 * h);
                    rayon::join(
                        || product(m, h, k, cp, ap, rs, cs, bp, n, Parallelism::None),
                        || product(m, n - h, k, c2, ap, rs, cs, b2, n, Parallelism::None),
                    );
                }
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

fn main() {
    for (m, k, n, at, what) in [
        (2048, 576, 1536, false, "x W (up/gate)"),
        (2048, 1536, 576, false, "x W (down)"),
        (2048, 576, 576, false, "x W (q/o)"),
        (576, 2048, 1536, true, "xT dy (weight grad)"),
        (300, 576, 49152, false, "lm head"),
    ] {
        let speeds = [
            ("one thread", Mode::OneThread),
            ("gemm's 2 threads", Mode::GemmThreads),
            ("2 halves", Mode::Halves),
        ]
        .map(|(name, mode)| format!("{name} {:.1}", run(m, k, n, at, mode)));
        println!("{m}x{k}x{n} {what}: {}", speeds.join(", "));
    }
}
