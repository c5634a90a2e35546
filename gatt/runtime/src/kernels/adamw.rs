//! AdamW's update in place, in one pass per tensor (training on the CPU).
//!
//! Composed of candle ops, one AdamW step is about fifteen element-wise passes per
//! parameter, each allocating a new tensor: for full fine-tuning of the default model,
//! fifteen passes over 540 MB a step, plus the clipping's scale. Here the first moment,
//! the second moment and the weight are each updated where they lie (candle's in-place
//! ops), with the clipping scale folded in. Every element gets exactly the f32 operations
//! the composed version performs (`x * a + 0` for each scalar product, as candle's
//! `affine`), so both give the same bits; `optim`'s tests check that.

use super::rows::{contiguous_f32, for_row_blocks_by_work};
use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};

/// The step's constants, as f32 in the order the composed ops apply them.
#[derive(Clone, Copy, Debug)]
pub struct Constants {
    /// Gradient scale from clipping; 1 for none.
    pub grad_scale: f64,
    /// Decay rates of the first and second moments.
    pub beta1: f64,
    pub beta2: f64,
    /// 1 - beta1^t and 1 - beta2^t at step t (1-based).
    pub bias_correction1: f64,
    pub bias_correction2: f64,
    /// Added to √v̂ in the denominator.
    pub eps: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// 1 - lr * weight decay, or `None` when the weight does not decay.
    pub decay_factor: Option<f64>,
}

/// The (scaled) gradient as the composed ops see it: `g * s + 0`, or `g` unscaled.
fn scaled(g: f32, s: Option<f32>) -> f32 {
    match s {
        Some(s) => g * s + 0.0,
        None => g,
    }
}

/// `m ← m * beta + g' * (1 - beta)`, or with `square`, `m ← m * beta + g'² * (1 - beta)`,
/// with `g'` the scaled gradient.
struct Moment {
    beta: f32,
    rest: f32,
    scale: Option<f32>,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "gatt-adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let g = contiguous_f32(s2, l2, "adamw gradient")?;
        let m = own_f32(s1, l1)?;
        if m.len() != g.len() {
            bail!(
                "adamw: a moment of {} elements for a gradient of {}",
                m.len(),
                g.len()
            )
        }
        let (beta, rest, scale, square) = (self.beta, self.rest, self.scale, self.square);
        for_row_blocks_by_work(m, 1, 1, |first, m| {
            for (m, &g) in m.iter_mut().zip(&g[first..]) {
                let g = scaled(g, scale);
                let g = if square { g * g } else { g };
                *m = (*m * beta + 0.0) + (g * rest + 0.0);
            }
        });
        Ok(())
    }
}

/// `w ← w' - (m̂ / (√v̂ + eps)) * lr`, with `w' = w * (1 - lr λ) + 0` for decayed
/// weights, `m̂ = m * (1 / bc1) + 0`, `v̂ = v * (1 / bc2) + 0`.
struct Weight {
    inv_bc1: f32,
    inv_bc2: f32,
    eps: f32,
    lr: f32,
    decay: Option<f32>,
}

impl InplaceOp3 for Weight {
    fn name(&self) -> &'static str {
        "gatt-adamw-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let m = contiguous_f32(s2, l2, "adamw first moment")?;
        let v = contiguous_f32(s3, l3, "adamw second moment")?;
        let w = own_f32(s1, l1)?;
        if w.len() != m.len() || w.len() != v.len() {
            bail!("adamw: moments do not fit a weight of {} elements", w.len())
        }
        let Weight {
            inv_bc1,
            inv_bc2,
            eps,
            lr,
            decay,
        } = *self;
        for_row_blocks_by_work(w, 1, 1, |first, w| {
            for ((w, &m), &v) in w.iter_mut().zip(&m[first..]).zip(&v[first..]) {
                let m_hat = m * inv_bc1 + 0.0;
                let v_hat = v * inv_bc2 + 0.0;
                let update = m_hat / (v_hat.sqrt() * 1.0 + eps);
                let kept = match decay {
                    Some(d) => *w * d + 0.0,
                    None => *w,
                };
                *w = kept - (update * lr + 0.0);
            }
        });
        Ok(())
    }
}

/// The contiguous f32 elements of a tensor updated in place.
fn own_f32<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("adamw: expected f32 tensors")
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&mut v[start..end]),
        None => bail!("adamw: expected a contiguous tensor"),
    }
}

/// One AdamW step of weight `w` in place, with its moments `m` and `v` (in place too)
/// and gradient `g` (any layout). `w`, `m`, `v`: contiguous f32 on the CPU, one shape.
///
/// # Errors
///
/// When a tensor is off the CPU, not f32, not contiguous, or of another size.
pub fn step(w: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, c: Constants) -> Result<()> {
    let scale = (c.grad_scale != 1.0).then_some(c.grad_scale as f32);
    // A transposed gradient (a tied embedding's) is copied once into order.
    let g = &g.contiguous()?;
    let moment = |beta: f64, square| Moment {
        beta: beta as f32,
        rest: (1.0 - beta) as f32,
        scale,
        square,
    };
    m.inplace_op2(g, &moment(c.beta1, false))?;
    v.inplace_op2(g, &moment(c.beta2, true))?;
    w.inplace_op3(
        m,
        v,
        &Weight {
            inv_bc1: (1.0 / c.bias_correction1) as f32,
            inv_bc2: (1.0 / c.bias_correction2) as f32,
            eps: c.eps as f32,
            lr: c.lr as f32,
            decay: c.decay_factor.map(|d| d as f32),
        },
    )
}
