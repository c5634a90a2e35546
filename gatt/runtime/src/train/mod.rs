//! Fine-tuning on GAtt masks, on candle.
//!
//! ```text
//! masked samples -> data (checks, token-budget batches) -> loss (labels != -100 only)
//!   -> backward -> optim (clip, AdamW, schedule) -> checkpoint / adapter / HF folder
//! ```
//!
//! [`Trainer`] is one model and its optimizer stepping through a fixed plan of
//! micro-batches; [`run`] adds the files: checkpoints (atomic, resumable), the loss log
//! and curve, and the final adapter (LoRA, in peft's layout) or model folder (full).

pub mod curve;
pub mod data;
pub mod lora;
pub mod loss;
pub mod optim;
mod run;
pub mod schedule;
pub mod score;

pub use data::Example;
pub use lora::LoraConfig;
pub use loss::LossMean;
pub use run::{holds_run, merge, run, RunSpec, RunSummary};

use crate::llama::{Model, WeightKind};
use candle_core::{Device, Tensor, Var};
use data::Batch;
use gatt::seed::Stream;
use gatt::{Error, Result};
use loss::{MicroBatch, StepTotals};
use optim::{AdamW, AdamWConfig, Param};
use schedule::Schedule;
use std::collections::HashMap;

/// What is trained.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every weight (small models: AdamW keeps two more copies of every weight).
    Full,
    /// Low-rank adapters on the chosen layers; the base stays frozen.
    Lora(LoraConfig),
}

/// Everything that decides the result of a training run (the resume fingerprint).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    /// Full fine-tuning or LoRA, with its settings.
    pub method: Method,
    /// Peak learning rate, reached at the end of the warm-up.
    pub lr: f64,
    /// Fraction of the optimizer steps spent in linear warm-up (at least one step).
    pub warmup_ratio: f64,
    /// Learning rate at the end of the cosine decay, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Passes over the data (at least 1).
    pub epochs: usize,
    /// At most this many optimizer steps, when fewer than the epochs make.
    pub max_steps: Option<usize>,
    /// Token budget of a micro-batch: longest sample x samples stays within it (a sample
    /// longer than the budget goes alone).
    pub batch_tokens: usize,
    /// Micro-batches per optimizer step, their gradients summed (at least 1).
    pub grad_accum: usize,
    /// Global L2 norm the gradients are clipped to; 0 or less: no clipping.
    pub max_grad_norm: f64,
    /// AdamW's betas, epsilon and weight decay.
    pub adamw: AdamWConfig,
    /// Whether a step's loss averages over loss tokens or over samples.
    pub loss_mean: LossMean,
    /// Seeds the shuffle, the LoRA initialization and the LoRA dropout (each its own
    /// `gatt::seed` stream).
    pub seed: u64,
}

impl Default for TrainOptions {
    /// LoRA with [`LoraConfig::default`], peak learning rate 2e-4 with 5% warm-up and a
    /// cosine down to 10%, one epoch, 4096-token micro-batches, one per step, gradient
    /// norm clipped to 1, no weight decay, token-mean loss, seed 0.
    fn default() -> Self {
        TrainOptions {
            method: Method::Lora(LoraConfig::default()),
            lr: 2e-4,
            warmup_ratio: 0.05,
            min_lr_ratio: 0.1,
            epochs: 1,
            max_steps: None,
            batch_tokens: 4096,
            grad_accum: 1,
            max_grad_norm: 1.0,
            adamw: AdamWConfig::default(),
            loss_mean: LossMean::Token,
            seed: 0,
        }
    }
}

/// One optimizer step, as logged.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepLog {
    /// 1-based.
    pub step: usize,
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
    /// Epochs done at the end of this step, fractional (micro-batches done / micro-batches
    /// per epoch).
    pub epoch: f64,
    /// The step's loss: cross-entropy in nats, averaged as [`TrainOptions::loss_mean`]
    /// says over all its micro-batches.
    pub loss: f64,
    /// Learning rate applied at this step.
    pub lr: f64,
    /// Global L2 norm of the step's gradients, before clipping.
    pub grad_norm: f64,
    /// Tokens of the step's samples (padding not counted).
    pub tokens: usize,
    /// Positions that predict a label (label != -100).
    pub loss_tokens: usize,
    /// Wall-clock time of the step, in seconds.
    pub seconds: f64,
}

/// One model and its AdamW optimizer stepping through a fixed plan of micro-batches:
/// every epoch's batches are laid out at construction, so a resumed run replays exactly
/// what an uninterrupted one would.
pub struct Trainer {
    model: Model,
    params: Vec<Param>,
    opt: AdamW,
    examples: Vec<Example>,
    /// Micro-batches in training order, epoch after epoch.
    plan: Vec<Batch>,
    schedule: Schedule,
    opts: TrainOptions,
    device: Device,
    /// Most tokens run forward and backward at once (see [`Trainer::set_chunk_tokens`]).
    chunk_tokens: usize,
    /// Optimizer steps done.
    pub step: usize,
}

/// Tokens a micro-batch runs forward and backward at once by default (see
/// [`Trainer::set_chunk_tokens`]): on the default model about 3 GiB of activations.
pub const DEFAULT_CHUNK_TOKENS: usize = 2048;

/// `samples` (indices into `examples`, in order) cut into runs of consecutive samples of
/// at most `budget` tokens in all; a sample longer than the budget runs alone.
fn chunks<'a>(samples: &'a [usize], examples: &[Example], budget: usize) -> Vec<&'a [usize]> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &s) in samples.iter().enumerate() {
        let n = examples[s].ids.len();
        if i > start && tokens + n > budget {
            out.push(&samples[start..i]);
            (start, tokens) = (i, 0);
        }
        tokens += n;
    }
    if start < samples.len() {
        out.push(&samples[start..]);
    }
    out
}

fn candle(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::runtime(format!("{what}: {e}"))
}

impl Trainer {
    /// Makes the trainable weights variables (all of them, or fresh LoRA adapters) and
    /// lays out the whole run's micro-batches.
    ///
    /// # Errors
    ///
    /// An input error for a zero token budget, `grad_accum` or epoch count, or a bad
    /// [`LoraConfig`]; a runtime error when candle cannot set up the variables.
    pub fn new(
        mut model: Model,
        examples: Vec<Example>,
        opts: TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        if opts.batch_tokens == 0 || opts.grad_accum == 0 || opts.epochs == 0 {
            return Err(Error::input(
                "the token budget of a micro-batch, the micro-batches per step and the epochs \
                 must be at least 1",
            ));
        }
        let mut params = Vec::new();
        match &opts.method {
            Method::Full => {
                for (name, kind, t) in model.weights_mut() {
                    let var = Var::from_tensor(t).map_err(candle("making weights trainable"))?;
                    *t = var.as_tensor().clone();
                    params.push(Param {
                        name,
                        var,
                        decay: kind != WeightKind::Vector,
                    });
                }
                model
                    .retie()
                    .map_err(candle("tying the output to the embedding"))?;
            }
            Method::Lora(cfg) => {
                cfg.validate()?;
                lora::attach(&mut model, cfg, opts.seed, device)?;
                for (name, l) in model.loras_mut() {
                    for (ab, t) in [("lora_A", &mut l.a), ("lora_B", &mut l.b)] {
                        let var =
                            Var::from_tensor(t).map_err(candle("making adapters trainable"))?;
                        *t = var.as_tensor().clone();
                        params.push(Param {
                            name: format!("{name}.{ab}"),
                            var,
                            decay: true,
                        });
                    }
                }
            }
        }
        let plan: Vec<Batch> = (0..opts.epochs)
            .flat_map(|epoch| data::epoch_batches(&examples, opts.batch_tokens, opts.seed, epoch))
            .collect();
        let mut total = plan.len().div_ceil(opts.grad_accum);
        if let Some(m) = opts.max_steps {
            total = total.min(m);
        }
        let schedule = Schedule {
            peak: opts.lr,
            warmup: ((total as f64 * opts.warmup_ratio).round() as usize).max(1),
            total,
            min_ratio: opts.min_lr_ratio,
        };
        let opt = AdamW::new(opts.adamw, &params).map_err(candle("optimizer"))?;
        Ok(Trainer {
            model,
            params,
            opt,
            examples,
            plan,
            schedule,
            opts,
            device: device.clone(),
            chunk_tokens: DEFAULT_CHUNK_TOKENS,
            step: 0,
        })
    }

    /// Runs each micro-batch forward and backward in chunks of consecutive samples of at
    /// most `tokens` tokens in all (a longer sample alone), their gradients summed: the
    /// activations held at once, and so the peak memory, follow the chunk and not
    /// `batch_tokens`. The loss and gradients are those of the whole micro-batch (each
    /// target keeps its weight in the step), up to float rounding; with LoRA dropout the
    /// masks drawn depend on the chunks. On the CPU only;
    /// elsewhere every sequence already runs alone. 0 is taken as 1 (one sample at a
    /// time).
    pub fn set_chunk_tokens(&mut self, tokens: usize) {
        self.chunk_tokens = tokens.max(1);
    }

    /// Optimizer steps of the whole run: micro-batches / `grad_accum`, rounded up, capped
    /// by `max_steps`.
    pub fn total_steps(&self) -> usize {
        self.schedule.total
    }

    /// The model being trained; its trainable weights are the [`Trainer::params`].
    pub fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// The trainable tensors, in the optimizer's order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Trainable values in the model's own layout, by name (for tests and checkpoints).
    pub fn param_tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().detach()))
            .collect()
    }

    /// Runs one optimizer step: every micro-batch of the step forward and backward,
    /// gradients summed, clipped, applied. Call it at most [`Trainer::total_steps`]
    /// times.
    ///
    /// # Errors
    ///
    /// A runtime error when candle fails, or when the loss is not finite (nothing is then
    /// updated).
    pub fn train_step(&mut self) -> Result<StepLog> {
        let started = std::time::Instant::now();
        let accum = self.opts.grad_accum;
        let range = self.step * accum..((self.step + 1) * accum).min(self.plan.len());
        let micro: Vec<Batch> = self.plan[range.clone()].to_vec();
        let all = micro.iter().flatten().map(|&i| &self.examples[i]);
        let totals = StepTotals::of(all);
        // Stream: TrainDropout (parent: the training seed, index: the step).
        self.model.set_training(
            true,
            gatt::seed::derive(self.opts.seed, Stream::TrainDropout, self.step as u64),
        );
        let (grads, loss, tokens, loss_tokens) = self.gradients(&micro, totals)?;
        if !loss.is_finite() {
            return Err(Error::runtime(format!(
                "the loss is {loss} at step {}; nothing was updated. Lower the learning rate, \
                 raise the warm-up ratio, or check the data; then resume from the last checkpoint",
                self.step + 1
            )));
        }
        let grad_norm = optim::grad_norm(&grads).map_err(candle("gradient norm"))?;
        let clip = optim::clip_scale(grad_norm, self.opts.max_grad_norm);
        let lr = self.schedule.lr(self.step);
        self.opt
            .step(&self.params, &grads, lr, clip)
            .map_err(candle("optimizer step"))?;
        self.step += 1;
        let per_epoch = self.plan.len() as f64 / self.opts.epochs as f64;
        Ok(StepLog {
            step: self.step,
            total_steps: self.total_steps(),
            epoch: range.end as f64 / per_epoch,
            loss,
            lr,
            grad_norm,
            tokens,
            loss_tokens,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The summed gradients of the micro-batches `micro` (each parameter's, zeros where
    /// the loss does not reach it), with the loss, tokens and loss tokens they hold;
    /// `totals` are the whole step's.
    fn gradients(
        &self,
        micro: &[Batch],
        totals: StepTotals,
    ) -> Result<(Vec<Tensor>, f64, usize, usize)> {
        let mut grads: Vec<Option<Tensor>> = vec![None; self.params.len()];
        let (mut loss, mut tokens, mut loss_tokens) = (0f64, 0, 0);
        // On the CPU a micro-batch's sequences run packed end to end in one row, in
        // chunks of at most `chunk_tokens`: every linear layer (and its weight gradient)
        // is one product per chunk, nothing is padding, and the activations held at once
        // do not grow with the micro-batch. Elsewhere each sequence runs on its own
        // (candle's backward pass of a per-sequence slice of a padded batch allocates the
        // whole batch again, for every sequence).
        let packed = self.device.is_cpu();
        let groups: Vec<&[usize]> = if packed {
            micro
                .iter()
                .flat_map(|m| chunks(m, &self.examples, self.chunk_tokens))
                .collect()
        } else {
            micro.iter().flatten().map(std::slice::from_ref).collect()
        };
        for group in groups {
            let refs: Vec<&Example> = group.iter().map(|&i| &self.examples[i]).collect();
            let (mean, device) = (self.opts.loss_mean, &self.device);
            let mb = if packed {
                MicroBatch::packed(&refs, mean, totals, device)
            } else {
                MicroBatch::new(&refs, mean, totals, device)
            }
            .map_err(candle("building a batch"))?;
            let l = loss::weighted_loss(&self.model, &mb).map_err(candle("forward pass"))?;
            loss += l.to_scalar::<f32>().map_err(candle("loss"))? as f64;
            let store = self.model.backward(&l).map_err(candle("backward pass"))?;
            for (g, p) in grads.iter_mut().zip(&self.params) {
                if let Some(new) = store.get(p.var.as_tensor()) {
                    let new = new.detach();
                    *g = Some(match g.take() {
                        Some(old) => (old + new).map_err(candle("summing gradients"))?,
                        None => new,
                    });
                }
            }
            tokens += mb.n_tokens;
            loss_tokens += mb.n_loss;
        }
        let grads = grads
            .into_iter()
            .zip(&self.params)
            .map(|(g, p)| g.map_or_else(|| p.var.as_tensor().zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()
            .map_err(candle("gradients"))?;
        Ok((grads, loss, tokens, loss_tokens))
    }

    /// Trainable tensors and optimizer moments (for a checkpoint). They share storage with
    /// the trainer's, which the next step updates in place: write them before it.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, p) in self.params.iter().enumerate() {
            out.insert(format!("param.{}", p.name), p.var.as_tensor().detach());
            out.insert(format!("adam_m.{}", p.name), self.opt.m[i].clone());
            out.insert(format!("adam_v.{}", p.name), self.opt.v[i].clone());
        }
        out
    }

    /// Restores what [`Trainer::state_tensors`] saved, at optimizer step `step`.
    ///
    /// # Errors
    ///
    /// An input error when a tensor is missing (a checkpoint of another run); a runtime
    /// error when one does not fit its variable.
    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            let get = |k: String| {
                tensors.get(&k).ok_or_else(|| {
                    Error::input(format!(
                        "checkpoint has no `{k}`; it belongs to another run"
                    ))
                })
            };
            p.var
                .set(get(format!("param.{}", p.name))?)
                .map_err(candle("restoring a weight"))?;
            // Copies: the optimizer updates its moments in place, and `tensors` is the
            // caller's.
            let copy = |t: &Tensor| t.copy().map_err(candle("restoring a moment"));
            self.opt.m[i] = copy(get(format!("adam_m.{}", p.name))?)?;
            self.opt.v[i] = copy(get(format!("adam_v.{}", p.name))?)?;
        }
        self.opt.t = step;
        self.step = step;
        Ok(())
    }

    /// Training mode off (inference kernels); the weights stay as trained.
    pub fn into_model(mut self) -> Model {
        self.model.set_training(false, 0);
        self.model
    }
}

#[cfg(test)]
mod tests;
