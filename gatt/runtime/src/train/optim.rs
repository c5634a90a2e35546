//! AdamW (decoupled weight decay) and global gradient-norm clipping. Written here, not
//! taken from candle-nn, because a checkpoint must hold the moment estimates so that a
//! resumed run continues bit for bit. On the CPU each parameter's step is one in-place
//! kernel (`kernels::adamw`), the same bits as the composed ops used elsewhere.

use crate::kernels::adamw;
use crate::kernels::rows::{contiguous_f32, for_each_task};
use candle_core::{DType, Result, Tensor, Var};
use std::sync::atomic::{AtomicU64, Ordering};

/// AdamW's hyper-parameters (Loshchilov & Hutter, "Decoupled Weight Decay
/// Regularization", ICLR 2019), named as in PyTorch's `torch.optim.AdamW`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Decay rate of the first-moment (gradient mean) estimate.
    pub beta1: f64,
    /// Decay rate of the second-moment (squared gradient) estimate.
    pub beta2: f64,
    /// Added to √v̂ in the update's denominator.
    pub eps: f64,
    /// Decoupled decay λ: a decayed weight is multiplied by (1 - lr·λ) each step.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's betas (0.9, 0.999) and eps 1e-8; no weight decay (PyTorch: 0.01).
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
    /// Its name in checkpoints: the Hugging Face weight name (full fine-tuning) or the
    /// adapter's module name with `.lora_A` / `.lora_B` (LoRA).
    pub name: String,
    /// The variable the model's forward pass reads.
    pub var: Var,
    /// Weight decay applies to matrices only (not norms, biases).
    pub decay: bool,
}

/// AdamW and its state (step count, both moment estimates of every parameter), all of
/// which a checkpoint saves so that a resumed run continues bit for bit.
pub struct AdamW {
    /// Hyper-parameters.
    pub cfg: AdamWConfig,
    /// Steps taken (for bias correction).
    pub t: usize,
    /// First-moment estimates, one per parameter, shaped like it.
    pub m: Vec<Tensor>,
    /// Second-moment estimates, one per parameter, shaped like it.
    pub v: Vec<Tensor>,
}

impl AdamW {
    /// Zero moments for `params`, at step 0.
    pub fn new(cfg: AdamWConfig, params: &[Param]) -> Result<Self> {
        let zeros = |p: &Param| p.var.as_tensor().zeros_like();
        Ok(AdamW {
            cfg,
            t: 0,
            m: params.iter().map(zeros).collect::<Result<_>>()?,
            v: params.iter().map(zeros).collect::<Result<_>>()?,
        })
    }

    /// Updates every parameter with its gradient (`grads[i]` for `params[i]`) times
    /// `grad_scale` (the clipping's, [`clip_scale`]; 1 for none) at learning rate `lr`:
    /// `w ← w·(1 - lr·λ) - lr·m̂ / (√v̂ + eps)`, with bias-corrected moments m̂ and v̂, and
    /// λ = `weight_decay` for parameters with `decay` (0 for the others). The moments are
    /// updated in place (tensors taken from [`AdamW::m`] and [`AdamW::v`] before a step
    /// see it).
    pub fn step(
        &mut self,
        params: &[Param],
        grads: &[Tensor],
        lr: f64,
        grad_scale: f64,
    ) -> Result<()> {
        self.t += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let w = p.var.as_tensor();
            let decays = p.decay && c.weight_decay > 0.0;
            let in_place =
                |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
            if [w, &self.m[i], &self.v[i]].into_iter().all(in_place) && g.dtype() == DType::F32 {
                let constants = adamw::Constants {
                    grad_scale,
                    beta1: c.beta1,
                    beta2: c.beta2,
                    bias_correction1: bc1,
                    bias_correction2: bc2,
                    eps: c.eps,
                    lr,
                    decay_factor: decays.then_some(1.0 - lr * c.weight_decay),
                };
                adamw::step(w, &self.m[i], &self.v[i], g, constants)?;
                continue;
            }
            let g = &if grad_scale != 1.0 {
                (g * grad_scale)?
            } else {
                g.clone()
            };
            self.m[i] = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            self.v[i] = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&self.m[i] / bc1)?;
            let v_hat = (&self.v[i] / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let mut w = w.detach();
            if decays {
                w = (w * (1.0 - lr * c.weight_decay))?;
            }
            p.var.set(&(w - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// The global L2 norm of `grads`, all tensors together. Contiguous f32 tensors on the
/// CPU are read where they lie and squared and summed in f64, 65,536 elements a task, the
/// tasks' sums added in order (the same result whatever the thread count); others by
/// candle's ops.
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads {
        if g.device().is_cpu() && g.dtype() == DType::F32 && g.is_contiguous() {
            let (storage, layout) = g.storage_and_layout();
            let candle_core::Storage::Cpu(cpu) = &*storage else {
                unreachable!("a CPU tensor has CPU storage")
            };
            let xs = contiguous_f32(cpu, layout, "gradient norm")?;
            let chunks: Vec<&[f32]> = xs.chunks(1 << 16).collect();
            let parts: Vec<AtomicU64> = chunks.iter().map(|_| AtomicU64::new(0)).collect();
            for_each_task(chunks.len(), |i| {
                let s = chunks[i].iter().map(|&x| x as f64 * x as f64).sum::<f64>();
                parts[i].store(s.to_bits(), Ordering::Relaxed);
            });
            sq += parts
                .iter()
                .map(|p| f64::from_bits(p.load(Ordering::Relaxed)))
                .sum::<f64>();
        } else {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    Ok(sq.sqrt())
}

/// The factor that brings gradients of global norm `norm` to at most `max_norm`:
/// `max_norm / (norm + 1e-6)` when the norm is larger (PyTorch's `clip_grad_norm_`),
/// else 1. A `max_norm` of 0 or less never clips.
pub fn clip_scale(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::rows::randn;
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
        opt.step(&params, &[g], 0.1, 1.0).unwrap();
        let w = params[0].var.as_tensor().to_vec1::<f32>().unwrap();
        // Bias-corrected first step: update = g / (|g| + eps) = sign(g).
        assert!(
            (w[0] - 0.9).abs() < 1e-5 && (w[1] + 1.9).abs() < 1e-5 && w[2] == 3.0,
            "{w:?}"
        );
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let g = vec![
            Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
            Tensor::new(&[4.0f32], &Device::Cpu).unwrap(),
        ];
        let n = grad_norm(&g).unwrap();
        assert!((n - 5.0).abs() < 1e-9);
        let s = clip_scale(n, 1.0);
        assert!((s * 5.0 - 1.0).abs() < 1e-5, "{s}");
        assert_eq!(clip_scale(n, 10.0), 1.0);
        assert_eq!(clip_scale(n, 0.0), 1.0);
        // A transposed (strided) gradient takes the other path, same norm.
        let m = Tensor::new(&[[1.0f32, 2.0], [2.0, 4.0]], &Device::Cpu).unwrap();
        let (a, b) = (
            grad_norm(&[m.t().unwrap()]).unwrap(),
            grad_norm(&[m]).unwrap(),
        );
        assert!((a - 5.0).abs() < 1e-6 && (b - 5.0).abs() < 1e-6, "{a} {b}");
    }

    /// The in-place kernel gives the bits of the composed ops (the path off the CPU), over
    /// three steps with clipping, weight decay on one parameter and a transposed gradient.
    #[test]
    fn in_place_steps_equal_the_composed_ops_bit_for_bit() {
        let dev = Device::Cpu;
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            ..AdamWConfig::default()
        };
        let make = || {
            vec![
                Param {
                    name: "a".into(),
                    var: Var::from_tensor(&randn(0f32, 1.0, (70_000,), &dev).unwrap()).unwrap(),
                    decay: true,
                },
                Param {
                    name: "b".into(),
                    var: Var::from_tensor(&randn(0f32, 1.0, (3, 5), &dev).unwrap()).unwrap(),
                    decay: false,
                },
            ]
        };
        let ours = make();
        let theirs: Vec<Param> = ours
            .iter()
            .map(|p| Param {
                name: p.name.clone(),
                var: Var::from_tensor(&p.var.as_tensor().copy().unwrap()).unwrap(),
                decay: p.decay,
            })
            .collect();
        let mut opt_ours = AdamW::new(cfg, &ours).unwrap();
        let mut opt_theirs = AdamW::new(cfg, &theirs).unwrap();
        for step in 0..3 {
            let grads = vec![
                randn(0f32, 1.0, (70_000,), &dev).unwrap(),
                randn(0f32, 1.0, (5, 3), &dev).unwrap().t().unwrap(),
            ];
            let scale = [1.0, 0.37, 0.9][step];
            opt_ours.step(&ours, &grads, 1e-3, scale).unwrap();
            // The composed path: moments off the in-place route (a strided view of each).
            composed_step(&mut opt_theirs, &theirs, &grads, 1e-3, scale);
        }
        for (p, q) in ours.iter().zip(&theirs) {
            let (a, b) = (
                p.var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                q.var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{}",
                p.name
            );
        }
        for i in 0..2 {
            for (x, y) in [
                (&opt_ours.m[i], &opt_theirs.m[i]),
                (&opt_ours.v[i], &opt_theirs.v[i]),
            ] {
                let (x, y) = (
                    x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                assert!(x.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    /// One step on the composed path: every moment made a strided view first (a column
    /// of a two-column copy), so `step` cannot take the in-place one.
    fn composed_step(opt: &mut AdamW, params: &[Param], grads: &[Tensor], lr: f64, scale: f64) {
        for t in opt.m.iter_mut().chain(opt.v.iter_mut()) {
            let last = t.rank();
            *t = Tensor::stack(&[&*t, &*t], last)
                .unwrap()
                .narrow(last, 0, 1)
                .unwrap()
                .squeeze(last)
                .unwrap();
            assert!(!t.is_contiguous());
        }
        opt.step(params, grads, lr, scale).unwrap();
    }
}
