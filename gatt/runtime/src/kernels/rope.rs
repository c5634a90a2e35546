//! Rotary position embedding: from a projection's output (batch x len x heads*head_dim)
//! to rotated heads (batch x heads x len x head_dim). Inference uses candle's fused
//! kernels; training on the CPU one pass each way, here.
//!
//! candle's fused rotary kernels have no backward pass. Composed from ordinary ops
//! (narrow, four multiplies, an add, a subtract, a concatenation, after a transposing
//! copy) it is about ten passes each way, and the backward of each narrow allocates a
//! full-size zero tensor. A rotation is orthogonal, so its backward is the same rotation
//! by the opposite angle. On other devices than the CPU the composed form is used.

use super::rows::{contiguous_f32, for_row_blocks};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// Splits `y` (b, t, n*hd) into `n` contiguous heads (b, n, t, hd).
pub fn split_heads(y: &Tensor, n: usize) -> Result<Tensor> {
    let (b, t, width) = y.dims3()?;
    y.reshape((b, t, n, width / n))?
        .transpose(1, 2)?
        .contiguous()
}

/// Splits `y` (b, t, n*hd) into `n` heads and rotates each by its position's angles;
/// `cos`/`sin` are (b, t, hd/2). Pairs are adjacent elements (`interleaved`, llama's
/// GGUF order) or the two halves of a head. `training` needs a backward pass, which
/// candle's fused kernels lack.
pub fn rotated_heads(
    y: &Tensor,
    n: usize,
    (cos, sin): (&Tensor, &Tensor),
    interleaved: bool,
    training: bool,
) -> Result<Tensor> {
    if !training {
        let heads = split_heads(y, n)?;
        return if interleaved {
            candle_nn::rotary_emb::rope_i(&heads, cos, sin)
        } else {
            candle_nn::rotary_emb::rope(&heads, cos, sin)
        };
    }
    if y.device().is_cpu() && y.dtype() == DType::F32 {
        let op = Rope {
            n,
            interleaved,
            back: false,
        };
        return y
            .contiguous()?
            .apply_op3(&cos.contiguous()?, &sin.contiguous()?, op);
    }
    composed(&split_heads(y, n)?, cos, sin, interleaved)
}

/// The rotation from ordinary tensor ops (any device); `x` is (b, h, t, d).
pub fn composed(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let half = d / 2;
    if interleaved {
        let cos = cos.reshape((b, 1, t, half, 1))?;
        let sin = sin.reshape((b, 1, t, half, 1))?;
        let x = x.reshape((b, h, t, half, 2))?;
        let x0 = x.narrow(4, 0, 1)?;
        let x1 = x.narrow(4, 1, 1)?;
        let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
        let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
        Tensor::cat(&[y0, y1], 4)?.reshape((b, h, t, d))
    } else {
        let cos = cos.reshape((b, 1, t, half))?;
        let sin = sin.reshape((b, 1, t, half))?;
        let x0 = x.narrow(3, 0, half)?;
        let x1 = x.narrow(3, half, half)?;
        let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
        let y1 = (x1.broadcast_mul(&cos)? + x0.broadcast_mul(&sin)?)?;
        Tensor::cat(&[y0, y1], 3)
    }
}

/// Forward: (b, t, n*hd) -> (b, n, t, hd), rotated by +angle. Back: (b, n, t, hd) ->
/// (b, t, n*hd), rotated by -angle (the gradient of the forward).
pub(super) struct Rope {
    pub n: usize,
    pub interleaved: bool,
    pub back: bool,
}

impl Rope {
    /// Index pairs (a, b) rotated together, with the angle index of each pair.
    fn pairs(&self, hd: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (half, interleaved) = (hd / 2, self.interleaved);
        (0..half).map(move |i| {
            if interleaved {
                (2 * i, 2 * i + 1, i)
            } else {
                (i, i + half, i)
            }
        })
    }

    /// The rotation of `x` (forward: b x t x n·hd rows; back: b x n x t x hd heads) by
    /// the angles `cos`/`sin` (b x t x hd/2), in the other layout; b follows from the
    /// sizes, which the caller checks.
    pub(super) fn apply(
        &self,
        x: &[f32],
        cos: &[f32],
        sin: &[f32],
        t: usize,
        hd: usize,
    ) -> Vec<f32> {
        let (n, half) = (self.n, hd / 2);
        let sign = if self.back { -1.0 } else { 1.0 };
        let mut y = vec![0f32; x.len()];
        // One output row is one head of one position.
        for_row_blocks(&mut y, hd, |first, ys| {
            for (i, y) in ys.chunks_mut(hd).enumerate() {
                let r = first + i;
                // Batch and position of this row, and where its input row starts.
                let (bi, ti, src) = if self.back {
                    let (bi, ti, hi) = (r / (t * n), (r / n) % t, r % n);
                    (bi, ti, ((bi * n + hi) * t + ti) * hd)
                } else {
                    let (bi, hi, ti) = (r / (n * t), (r / t) % n, r % t);
                    (bi, ti, ((bi * t + ti) * n + hi) * hd)
                };
                let x = &x[src..src + hd];
                let angle = (bi * t + ti) * half;
                let (c, s) = (&cos[angle..angle + half], &sin[angle..angle + half]);
                for (a, p, k) in self.pairs(hd) {
                    let (x0, x1, s) = (x[a], x[p], sign * s[k]);
                    y[a] = x0 * c[k] - x1 * s;
                    y[p] = x0 * s + x1 * c[k];
                }
            }
        });
        y
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "gatt-rope"
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
        let x = contiguous_f32(s1, l1, "rope")?;
        let cos = contiguous_f32(s2, l2, "rope")?;
        let sin = contiguous_f32(s3, l3, "rope")?;
        let n = self.n;
        let (b, t, hd, out_shape) = if self.back {
            let (b, n2, t, hd) = l1.shape().dims4()?;
            if n2 != n {
                bail!("rope: {n2} heads, expected {n}")
            }
            (b, t, hd, Shape::from((b, t, n * hd)))
        } else {
            let (b, t, width) = l1.shape().dims3()?;
            (b, t, width / n, Shape::from((b, n, t, width / n)))
        };
        let half = hd / 2;
        if hd % 2 != 0 || cos.len() != b * t * half || sin.len() != cos.len() {
            bail!("rope: head size {hd} against angle tables {:?}", l2.shape())
        }
        Ok((CpuStorage::F32(self.apply(x, cos, sin, t, hd)), out_shape))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = Rope {
            n: self.n,
            interleaved: self.interleaved,
            back: true,
        };
        let dy = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &back)?;
        Ok((Some(dy), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::{max_diff, probe_grads, randn, var_randn};
    use candle_core::Device;

    #[test]
    fn values_and_gradients_equal_the_composed_ops() {
        let dev = Device::Cpu;
        // Small (one thread) and large (parallel blocks); both pair orders.
        for (b, t, n, hd) in [(2, 3, 2, 4), (2, 70, 3, 64)] {
            for interleaved in [true, false] {
                let y = var_randn(0f32, 1.0, (b, t, n * hd), &dev).unwrap();
                let ang = randn(0f32, 2.0, (b, t, hd / 2), &dev).unwrap();
                let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
                let probe = randn(0f32, 1.0, (b, n, t, hd), &dev).unwrap();
                let ours =
                    rotated_heads(y.as_tensor(), n, (&cos, &sin), interleaved, true).unwrap();
                let heads = y
                    .as_tensor()
                    .reshape((b, t, n, hd))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap();
                let theirs = composed(&heads, &cos, &sin, interleaved).unwrap();
                assert_eq!(ours.dims(), theirs.dims());
                assert!(max_diff(&ours, &theirs) < 1e-5);
                let g1 = probe_grads(&ours, &probe);
                let g2 = probe_grads(&theirs, &probe);
                let (a, b) = (
                    g1.get(y.as_tensor()).unwrap(),
                    g2.get(y.as_tensor()).unwrap(),
                );
                assert!(max_diff(a, b) < 1e-5, "{interleaved}");
            }
        }
    }
}
