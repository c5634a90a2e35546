//! The GAtt training loss: cross-entropy only where a label is not -100, weighted so
//! that a whole optimizer step (all its micro-batches) averages either over loss tokens
//! (`token`, what Hugging Face trainers do) or over samples (`sample`: each sample's
//! token mean counts once, so long replies do not dominate).
//!
//! Only the rows that carry loss go through the output projection, and on the CPU a block
//! of them at a time ([`Model::weighted_target_nll`]): neither the vocabulary-sized logits
//! of every position nor those of all loss rows are ever built.

use super::data::Example;
use crate::llama::{pad_prompts, Model};
use candle_core::{Device, Result, Tensor};

/// How a step's loss averages the per-token cross-entropy (`token` or `sample` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossMean {
    /// Sum over loss tokens / loss tokens in the step.
    #[default]
    Token,
    /// Mean over the step's samples of each sample's mean over its loss tokens.
    Sample,
}

/// How a micro-batch's sequences lie in its tokens.
pub enum Sequences {
    /// One per row, left-padded by this many slots each.
    Padded(Vec<usize>),
    /// End to end in one row, of these lengths (CPU only): no padding at all, and every
    /// linear layer is one product for the whole micro-batch.
    Packed(Vec<usize>),
}

/// A micro-batch with the rows and targets that carry loss.
pub struct MicroBatch {
    /// Token ids, u32: (batch, longest) left-padded, or (1, total) packed.
    pub tokens: Tensor,
    /// Rotary positions, u32, shaped like `tokens`; each sequence starts at 0.
    pub positions: Tensor,
    /// How the sequences lie in `tokens`.
    pub sequences: Sequences,
    /// Indices into the flattened (batch x len) hidden states, (n_loss,) u32: the
    /// positions that predict a label.
    pub rows: Tensor,
    /// The token each of those positions predicts (n_loss).
    pub targets: Vec<u32>,
    /// Weight of each target in the step's loss, (n_loss,) f32: 1 / (the step's loss
    /// tokens), or 1 / (the step's samples x the sample's loss tokens).
    pub weights: Tensor,
    /// Real (non-padding) tokens.
    pub n_tokens: usize,
    /// Loss tokens (targets).
    pub n_loss: usize,
}

/// What a whole optimizer step holds, to weight each of its micro-batches.
#[derive(Debug, Clone, Copy)]
pub struct StepTotals {
    /// Loss tokens over all the step's samples.
    pub loss_tokens: usize,
    /// Samples in the step.
    pub samples: usize,
}

impl StepTotals {
    /// The totals of a step's samples.
    pub fn of<'a>(examples: impl IntoIterator<Item = &'a Example>) -> Self {
        let mut t = StepTotals {
            loss_tokens: 0,
            samples: 0,
        };
        for e in examples {
            t.loss_tokens += e.n_targets();
            t.samples += 1;
        }
        t
    }
}

impl MicroBatch {
    /// One sequence per row, left-padded (any device).
    pub fn new(
        examples: &[&Example],
        mean: LossMean,
        totals: StepTotals,
        device: &Device,
    ) -> Result<Self> {
        let ids: Vec<Vec<u32>> = examples.iter().map(|e| e.ids.clone()).collect();
        // The pad id is never seen: padded positions are skipped by attention and loss.
        let p = pad_prompts(&ids, 0, device)?;
        let len = p.tokens.dim(1)?;
        let starts: Vec<usize> = (0..examples.len()).map(|s| s * len + p.pad[s]).collect();
        Self::build(
            examples,
            &starts,
            mean,
            totals,
            device,
            p.tokens,
            p.positions,
            Sequences::Padded(p.pad),
        )
    }

    /// All sequences end to end in one row (CPU only).
    pub fn packed(
        examples: &[&Example],
        mean: LossMean,
        totals: StepTotals,
        device: &Device,
    ) -> Result<Self> {
        let (mut ids, mut positions, mut starts) = (Vec::new(), Vec::new(), Vec::new());
        for e in examples {
            starts.push(ids.len());
            ids.extend_from_slice(&e.ids);
            positions.extend(0..e.ids.len() as u32);
        }
        let t = ids.len();
        let tokens = Tensor::from_vec(ids, (1, t), device)?;
        let positions = Tensor::from_vec(positions, (1, t), device)?;
        let lengths = examples.iter().map(|e| e.ids.len()).collect();
        Self::build(
            examples,
            &starts,
            mean,
            totals,
            device,
            tokens,
            positions,
            Sequences::Packed(lengths),
        )
    }

    /// The loss rows, targets and weights, given where each sequence's first token is in
    /// the flattened tokens.
    #[allow(clippy::too_many_arguments)]
    fn build(
        examples: &[&Example],
        starts: &[usize],
        mean: LossMean,
        totals: StepTotals,
        device: &Device,
        tokens: Tensor,
        positions: Tensor,
        sequences: Sequences,
    ) -> Result<Self> {
        let (mut rows, mut targets, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for (e, &start) in examples.iter().zip(starts) {
            let n = e.n_targets();
            let w = match mean {
                LossMean::Token => 1.0 / totals.loss_tokens as f32,
                LossMean::Sample => 1.0 / (totals.samples as f32 * n as f32),
            };
            for (j, label) in e.targets() {
                rows.push((start + j) as u32);
                targets.push(label);
                weights.push(w);
            }
        }
        let n_loss = rows.len();
        Ok(MicroBatch {
            tokens,
            positions,
            sequences,
            rows: Tensor::from_vec(rows, n_loss, device)?,
            targets,
            weights: Tensor::from_vec(weights, n_loss, device)?,
            n_tokens: examples.iter().map(|e| e.ids.len()).sum(),
            n_loss,
        })
    }
}

/// The final hidden states of the micro-batch's loss rows, (n_loss, hidden).
fn loss_rows(model: &Model, b: &MicroBatch) -> Result<Tensor> {
    let h = match &b.sequences {
        Sequences::Padded(pad) => model.hidden_states(&b.tokens, &b.positions, pad)?,
        Sequences::Packed(lengths) => {
            model.hidden_states_packed(&b.tokens, &b.positions, lengths)?
        }
    };
    let (bs, t, hidden) = h.dims3()?;
    h.reshape((bs * t, hidden))?.index_select(&b.rows, 0)
}

/// Per-target negative log-likelihood (n_loss,), f32, in nats: cross-entropy of the
/// logits of `rows` against `targets`.
pub fn token_nll(model: &Model, b: &MicroBatch) -> Result<Tensor> {
    model.target_nll(&loss_rows(model, b)?, &b.targets)
}

/// This micro-batch's share of the step loss (a scalar to call `backward` on): each
/// target's negative log-likelihood times its weight, summed.
pub fn weighted_loss(model: &Model, b: &MicroBatch) -> Result<Tensor> {
    model.weighted_target_nll(&loss_rows(model, b)?, &b.targets, &b.weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;

    #[test]
    fn log_softmax_gather_matches_hand_computed_cross_entropy() {
        // Two rows of logits; targets 1 and 0.
        // Row 0: [0, ln 3] -> p(1) = 3/4 -> nll = ln(4/3).
        // Row 1: [ln 2, 0, 0] padded to 3 columns -> p(0) = 2/4 -> nll = ln 2.
        let dev = Device::Cpu;
        let l3 = 3f32.ln();
        let logits = Tensor::new(
            &[[0.0f32, l3, f32::NEG_INFINITY], [2f32.ln(), 0.0, 0.0]],
            &dev,
        )
        .unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let t = Tensor::new(&[[1u32], [0]], &dev).unwrap();
        let nll = logp
            .gather(&t, 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap();
        let v = nll.to_vec1::<f32>().unwrap();
        assert!((v[0] - (4.0f32 / 3.0).ln()).abs() < 1e-6, "{v:?}");
        assert!((v[1] - 2f32.ln()).abs() < 1e-6, "{v:?}");
    }
}
