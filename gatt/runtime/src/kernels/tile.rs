//! The small matrix products of the packed attention, a tile of 6 x 16 outputs at a time,
//! with the causal structure skipped rather than multiplied.
//!
//! One training sequence of 200 tokens gives per head products of 200 x 64 x 200 and
//! 200 x 200 x 64, half of whose terms are zero (the future of each query). `gemm` packs
//! both operands into panels before every product, which at these sizes costs about as
//! much as the part of the product tiles would skip, so tiles through `gemm` did not pay
//! (BENCHMARKS.md). Here the operands are read where they lie: `b` in rows of 16
//! contiguous floats, `a` broadcast one element at a time through any strides (rows,
//! or columns of a transposed matrix). The register tile is gemm's own f32 micro-kernel
//! shape on AVX2 (6 rows x 2 vectors of 8: 12 accumulators, 2 loads and 6 broadcasts per
//! 12 fused multiply-adds); a portable twin (same blocking, plain loops) serves other CPUs
//! and partial column blocks.

/// Columns of a tile (two AVX vectors of f32).
pub(super) const COLS: usize = 16;
/// Rows of a full tile.
pub(super) const ROWS: usize = 6;

/// A read-only matrix operand: element (r, k) at `ptr + r * rs + k * cs` (in floats).
#[derive(Clone, Copy)]
pub(super) struct Strided {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

impl Strided {
    /// Row-major with rows of `row_len` floats.
    pub fn rows(ptr: *const f32, row_len: usize) -> Self {
        Strided {
            ptr,
            rs: row_len,
            cs: 1,
        }
    }

    /// The transposed matrix (rows become columns).
    pub fn t(self) -> Self {
        Strided {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn at(self, r: usize, k: usize) -> *const f32 {
        self.ptr.wrapping_add(r * self.rs + k * self.cs)
    }
}

/// Which terms of a product are known to be zero or not wanted, so they are skipped
/// (in whole tiles; a tile that straddles the diagonal is computed whole). Each of the
/// attention's six products is one of these.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Causal {
    /// Output (i, j) is wanted only for j <= i (scores of a query against its past);
    /// tiles wholly above the diagonal are not written.
    Columns,
    /// `a(i, k)` is zero for k > i (probabilities, or their gradient, times values).
    DepthUpTo,
    /// `a(i, k)` is zero for k < i (the transpose of such a matrix, times queries).
    DepthFrom,
}

/// `c (m x n, row stride ldc) = a (m x depth) b (depth x n, row stride ldb)`, or `+=`
/// with `accumulate`, skipping what `causal` says is zero or unwanted.
///
/// # Safety
/// `a` must address m x depth readable floats, `b` depth rows of n readable floats from
/// `b` with stride `ldb`, `c` m rows of n writable floats with stride `ldc`, which no
/// other thread touches meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn product(
    m: usize,
    n: usize,
    depth: usize,
    a: Strided,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    causal: Causal,
) {
    let avx2 = has_avx2();
    for j0 in (0..n).step_by(COLS) {
        let cols = COLS.min(n - j0);
        for i0 in (0..m).step_by(ROWS) {
            let rows = ROWS.min(m - i0);
            let last = i0 + rows - 1;
            let (k0, k1) = match causal {
                Causal::Columns if j0 > last => continue,
                Causal::Columns => (0, depth),
                Causal::DepthUpTo => (0, depth.min(last + 1)),
                Causal::DepthFrom => (i0.min(depth), depth),
            };
            let t = Tile {
                rows,
                depth: k1 - k0,
                a: Strided {
                    ptr: a.at(i0, k0),
                    ..a
                },
                b: b.wrapping_add(k0 * ldb + j0),
                ldb,
                c: c.wrapping_add(i0 * ldc + j0),
                ldc,
                accumulate,
            };
            if avx2 && cols == COLS {
                #[cfg(target_arch = "x86_64")]
                avx2::tile(&t);
            } else {
                portable_tile(&t, cols);
            }
        }
    }
}

/// One tile: `c (rows x 16) (+)= a (rows x depth) b (depth x 16)`, rows <= 6.
struct Tile {
    rows: usize,
    depth: usize,
    a: Strided,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return super::qmatvec::has_avx2();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The tile with plain loops, over its first `cols` (<= 16) columns.
///
/// # Safety
/// As [`product`], for the tile's rows and columns.
unsafe fn portable_tile(t: &Tile, cols: usize) {
    let mut acc = [[0f32; COLS]; ROWS];
    for k in 0..t.depth {
        let b = std::slice::from_raw_parts(t.b.add(k * t.ldb), cols);
        for (r, acc) in acc.iter_mut().enumerate().take(t.rows) {
            let x = *t.a.at(r, k);
            for (acc, &b) in acc.iter_mut().zip(b) {
                *acc = x.mul_add(b, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(t.rows) {
        let c = std::slice::from_raw_parts_mut(t.c.add(r * t.ldc), cols);
        for (c, &v) in c.iter_mut().zip(acc) {
            *c = if t.accumulate { *c + v } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Tile, ROWS};
    use std::arch::x86_64::*;

    /// The tile, its row count a constant so the accumulators stay in registers.
    ///
    /// # Safety
    /// As [`super::product`], and the CPU has AVX2 and FMA (checked by the caller).
    pub(super) unsafe fn tile(t: &Tile) {
        match t.rows {
            6 => rows::<6>(t),
            5 => rows::<5>(t),
            4 => rows::<4>(t),
            3 => rows::<3>(t),
            2 => rows::<2>(t),
            1 => rows::<1>(t),
            _ => unreachable!("a tile has 1 to {ROWS} rows"),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const R: usize>(t: &Tile) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        let (a, rs, cs) = (t.a.ptr, t.a.rs, t.a.cs);
        for k in 0..t.depth {
            let b = t.b.add(k * t.ldb);
            let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
            let ak = a.add(k * cs);
            for r in 0..R {
                let x = _mm256_broadcast_ss(&*ak.add(r * rs));
                lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
            }
        }
        for r in 0..R {
            let c = t.c.add(r * t.ldc);
            if t.accumulate {
                lo[r] = _mm256_add_ps(lo[r], _mm256_loadu_ps(c));
                hi[r] = _mm256_add_ps(hi[r], _mm256_loadu_ps(c.add(8)));
            }
            _mm256_storeu_ps(c, lo[r]);
            _mm256_storeu_ps(c.add(8), hi[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition, with the same skipping rules.
    fn reference(m: usize, n: usize, d: usize, a: &[f32], a_t: bool, b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..d)
                    .map(|k| {
                        let x = if a_t { a[k * m + i] } else { a[i * d + k] };
                        x * b[k * n + j]
                    })
                    .sum();
            }
        }
        c
    }

    fn numbers(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 - 500.0) / 250.0)
            .collect()
    }

    /// Every causal mode equals the plain product where it promises to, on shapes with
    /// partial row tiles and partial column blocks, plain and accumulating, on the AVX2
    /// path (where the CPU has it) and on the portable one.
    #[test]
    fn products_equal_the_definition() {
        for (m, n, d) in [(13, 32, 9), (200, 64, 200), (7, 21, 64), (1, 16, 1)] {
            for causal in [Causal::Columns, Causal::DepthUpTo, Causal::DepthFrom] {
                // DepthUpTo / DepthFrom: `a` zero above / below the diagonal.
                let a_t = causal == Causal::DepthFrom;
                let mut a = numbers(m * d, 1);
                for i in 0..m {
                    for k in 0..d {
                        let zero = match causal {
                            Causal::DepthUpTo => k > i,
                            Causal::DepthFrom => k < i,
                            _ => false,
                        };
                        let at = if a_t { k * m + i } else { i * d + k };
                        if zero {
                            a[at] = 0.0;
                        }
                    }
                }
                let b = numbers(d * n, 2);
                let want = reference(m, n, d, &a, a_t, &b);
                let view = if a_t {
                    Strided::rows(a.as_ptr(), m).t()
                } else {
                    Strided::rows(a.as_ptr(), d)
                };
                for accumulate in [false, true] {
                    let start = numbers(m * n, 3);
                    let mut c = if accumulate {
                        start.clone()
                    } else {
                        vec![f32::NAN; m * n]
                    };
                    // SAFETY: the buffers hold the shapes given.
                    unsafe {
                        product(
                            m,
                            n,
                            d,
                            view,
                            b.as_ptr(),
                            n,
                            c.as_mut_ptr(),
                            n,
                            accumulate,
                            causal,
                        )
                    };
                    for i in 0..m {
                        for j in 0..n {
                            if causal == Causal::Columns && j > i {
                                continue;
                            }
                            let w =
                                want[i * n + j] + if accumulate { start[i * n + j] } else { 0.0 };
                            let got = c[i * n + j];
                            assert!(
                                (got - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                "{m}x{n}x{d} {causal:?} acc {accumulate} ({i},{j}): {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The AVX2 tile and the portable one agree (the portable one is what other CPUs run).
    #[test]
    fn avx2_and_portable_tiles_agree() {
        if !has_avx2() {
            eprintln!("no AVX2 on this CPU: only the portable tile is compared, above");
            return;
        }
        let (d, ld) = (37, 16);
        let a = numbers(ROWS * d, 4);
        let b = numbers(d * ld, 5);
        for rows in 1..=ROWS {
            let (mut x, mut y) = (vec![0f32; rows * ld], vec![0f32; rows * ld]);
            let t = |c: *mut f32| Tile {
                rows,
                depth: d,
                a: Strided::rows(a.as_ptr(), d),
                b: b.as_ptr(),
                ldb: ld,
                c,
                ldc: ld,
                accumulate: false,
            };
            // SAFETY: the buffers hold rows x d, d x 16 and rows x 16 floats.
            unsafe {
                #[cfg(target_arch = "x86_64")]
                avx2::tile(&t(x.as_mut_ptr()));
                portable_tile(&t(y.as_mut_ptr()), COLS);
            }
            for (p, q) in x.iter().zip(&y) {
                assert!(
                    (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
                    "{rows} rows: {p} vs {q}"
                );
            }
        }
    }
}
