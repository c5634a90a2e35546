//! The portable kernel: the same integer block sums and the same float operations, in the
//! same order, as the SIMD kernels, one output at a time.

use super::acts::QActs;
use super::{Out, QMatrix, QType, BLOCK};

/// Outputs `j0 .. j0 + outs[0].len()` of `w` for every activation row (`outs[r]` for row
/// `r`).
pub(super) fn chunk(w: &QMatrix, j0: usize, a: &QActs, outs: &mut [Out]) {
    let m = a.m;
    let (mut acc, mut macc) = (vec![0f32; m], vec![0f32; m]);
    for j in 0..outs[0].len() {
        acc.fill(0.0);
        macc.fill(0.0);
        for b in 0..a.nb {
            let (d, mn, q) = w.block(j0 + j, b);
            for r in 0..m {
                let i = b * m + r;
                let isum: i32 = (0..BLOCK).map(|t| q[t] * a.qs[i][t] as i32).sum();
                acc[r] = (isum as f32).mul_add(d * a.d[i], acc[r]);
                macc[r] = mn.mul_add(a.s[i], macc[r]);
            }
        }
        for r in 0..m {
            outs[r][j].write(match w.qtype {
                QType::Q4_1 => acc[r] + macc[r],
                QType::Q8_0 => acc[r],
            });
        }
    }
}
