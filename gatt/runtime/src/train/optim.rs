//! AdamW (decoupled weight decay) and global gradient-norm clipping. Written here, not
//! taken from candle-nn, because a checkpoint must hold the moment estimates so that a
//! resumed run continues bit for bit.

use candle_core::{Result, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// One trainable tensor.
pub struct Param {
    pub name: String,
    pub var: Var,
    /// Weight decay applies to matrices only (not norms, biases).
    pub decay: bool,
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Steps taken (for bias correction).
    pub t: usize,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, params: &[Param]) -> Result<Self> {
        let zeros = |p: &Param| p.var.as_tensor().zeros_like();
        Ok(AdamW {
            cfg,
            t: 0,
            m: params.iter().map(zeros).collect::<Result<_>>()?,
            v: params.iter().map(zeros).collect::<Result<_>>()?,
        })
    }

    pub fn step(&mut self, params: &[Param], grads: &[Tensor], lr: f64) -> Result<()> {
        self.t += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            self.m[i] = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            self.v[i] = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&self.m[i] / bc1)?;
            let v_hat = (&self.v[i] / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let mut w = p.var.as_tensor().detach();
            if p.decay && c.weight_decay > 0.0 {
                w = (w * (1.0 - lr * c.weight_decay))?;
            }
            p.var.set(&(w - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter() {
        sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * s)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_first_step_moves_each_weight_by_lr_against_its_gradient() {
        let var = Var::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "w".into(),
            var,
            decay: false,
        }];
        let mut opt = AdamW::new(AdamWConfig::default(), &params).unwrap();
        let g = Tensor::new(&[0.5f32, -4.0, 0.0], &Device::Cpu).unwrap();
        opt.step(&params, &[g], 0.1).unwrap();
        let w = params[0].var.as_tensor().to_vec1::<f32>().unwrap();
        // Bias-corrected first step: update = g / (|g| + eps) = sign(g).
        assert!(
            (w[0] - 0.9).abs() < 1e-5 && (w[1] + 1.9).abs() < 1e-5 && w[2] == 3.0,
            "{w:?}"
        );
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = vec![
            Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
            Tensor::new(&[4.0f32], &Device::Cpu).unwrap(),
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-9);
        let a = g[0].to_vec1::<f32>().unwrap()[0];
        let b = g[1].to_vec1::<f32>().unwrap()[0];
        assert!(((a * a + b * b).sqrt() - 1.0).abs() < 1e-4);
    }
}
