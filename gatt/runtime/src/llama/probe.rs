//! What a forward pass records of its attention probabilities, when asked: every layer's
//! maps, or a summary reduced over layers and heads as each layer is computed (the
//! Llama 2 paper's Figure 10 needs no more, and the maps of a long dialogue would not fit
//! in memory: 30 layers x 9 heads x 2048² f32 is 4.5 GB for the default model).
//!
//! Only [`super::Model::attention_maps`] and [`super::Model::attention_summary`] pass a
//! probe; the decoding and training paths take none, so they pay nothing for it.

use crate::kernels::rows::contiguous_f32;
use candle_core::{DType, Result, Storage, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use std::ops::Range;

/// Attention of one sequence of `len` tokens, reduced over the model's layers and heads.
///
/// With `P[l][h][i][j]` the softmax attention probability of query position `i` onto key
/// position `j` in head `h` of layer `l` (each row sums to 1 over `j <= i`; zero for
/// `j > i`), as the model computes it in its forward pass:
///
/// - `max[i * len + j] = max over l, h of P[l][h][i][j]`: the paper's "maximum attention
///   activation across the network" (Figure 10);
/// - `mean[i * len + j] = mean over l, h of P[l][h][i][j]` (each row sums to 1);
/// - `mass[(l * heads + h) * len + i] = sum over j in keys, j <= i of P[l][h][i][j]`:
///   the share of head `h` of layer `l`'s attention that query `i` puts on the key span
///   `keys` (e.g. the instruction's tokens).
///
/// All row-major, f32.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttentionSummary {
    /// Tokens in the sequence.
    pub len: usize,
    /// Layers reduced over.
    pub layers: usize,
    /// Query heads per layer reduced over.
    pub heads: usize,
    /// The key positions whose attention mass `mass` records.
    pub keys: Range<usize>,
    /// len x len, max over layers and heads.
    pub max: Vec<f32>,
    /// len x len, mean over layers and heads.
    pub mean: Vec<f32>,
    /// layers x heads x len: attention mass of each query on `keys`.
    pub mass: Vec<f32>,
}

impl AttentionSummary {
    /// An empty summary to be filled layer by layer (`keys` is clipped to the sequence).
    pub(crate) fn new(len: usize, layers: usize, heads: usize, keys: Range<usize>) -> Self {
        let keys = keys.start.min(len)..keys.end.min(len);
        AttentionSummary {
            len,
            layers,
            heads,
            keys,
            max: vec![0.0; len * len],
            mean: vec![0.0; len * len],
            mass: vec![0.0; layers * heads * len],
        }
    }

    /// Folds in layer `layer`'s probabilities, `probs` heads x len x len row-major.
    pub(crate) fn add_layer(&mut self, layer: usize, probs: &[f32]) -> Result<()> {
        let (n, nh) = (self.len, self.heads);
        if layer >= self.layers || probs.len() != nh * n * n {
            candle_core::bail!(
                "attention summary: layer {layer} of {} with {} probabilities for {nh} heads \
                 x {n}²",
                self.layers,
                probs.len()
            )
        }
        let weight = 1.0 / (self.layers * nh) as f32;
        let keys = self.keys.clone();
        let mut mass = vec![0f32; nh * n];
        self.max
            .par_chunks_mut(n)
            .zip(self.mean.par_chunks_mut(n))
            .enumerate()
            .for_each(|(i, (max, mean))| {
                for h in 0..nh {
                    let row = &probs[(h * n + i) * n..][..=i];
                    for ((m, s), &p) in max.iter_mut().zip(mean.iter_mut()).zip(row) {
                        *m = m.max(p);
                        *s += p * weight;
                    }
                }
            });
        for h in 0..nh {
            for (i, m) in mass[h * n..][..n].iter_mut().enumerate() {
                let row = &probs[(h * n + i) * n..][..n];
                let end = keys.end.min(i + 1);
                *m = if keys.start < end {
                    row[keys.start..end].iter().sum()
                } else {
                    0.0
                };
            }
        }
        self.mass[layer * nh * n..][..nh * n].copy_from_slice(&mass);
        Ok(())
    }
}

/// What the forward pass records.
pub(crate) enum Probe<'a> {
    /// Every layer's probabilities, heads x len x len.
    Maps(&'a mut Vec<Tensor>),
    /// The reduction, and the next layer's index.
    Summary(&'a mut AttentionSummary, usize),
}

impl Probe<'_> {
    /// Records one layer's probabilities (heads x len x len, f32).
    pub(crate) fn record(&mut self, probs: &Tensor) -> Result<()> {
        match self {
            Probe::Maps(maps) => maps.push(probs.detach()),
            Probe::Summary(summary, layer) => {
                let probs = probs.to_dtype(DType::F32)?.contiguous()?;
                if probs.device().is_cpu() {
                    // Read in place: a copy would double the largest allocation.
                    let (storage, layout) = probs.storage_and_layout();
                    let Storage::Cpu(cpu) = &*storage else {
                        candle_core::bail!("attention: a CPU tensor without CPU storage")
                    };
                    summary.add_layer(*layer, contiguous_f32(cpu, layout, "attention")?)?
                } else {
                    let values = probs.flatten_all()?.to_vec1::<f32>()?;
                    summary.add_layer(*layer, &values)?
                }
                *layer += 1;
            }
        }
        Ok(())
    }
}
