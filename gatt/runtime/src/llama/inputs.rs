//! Batch inputs for ragged sequences: left padding, rotary positions, logits rows.

use candle_core::{DType, Device, Result, Tensor};

/// Left-padded batch inputs for a set of ragged token sequences.
pub struct PaddedBatch {
    /// Token ids, (batch, longest) u32: sequence `s` after `pad[s]` copies of the pad id.
    pub tokens: Tensor,
    /// Rotary positions, (batch, longest) u32: 0, 1, ... from each sequence's first real
    /// token, 0 on padding.
    pub positions: Tensor,
    /// Padding length of each sequence.
    pub pad: Vec<usize>,
}

/// Builds the prompt step: sequences left-padded with `pad_id` to the longest one's
/// length.
pub fn pad_prompts(prompts: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<PaddedBatch> {
    let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let b = prompts.len();
    let mut tokens = Vec::with_capacity(b * len);
    let mut positions = Vec::with_capacity(b * len);
    let mut pad = Vec::with_capacity(b);
    for p in prompts {
        let n_pad = len - p.len();
        pad.push(n_pad);
        tokens.extend(std::iter::repeat_n(pad_id, n_pad).chain(p.iter().copied()));
        positions.extend((0..len).map(|i| i.saturating_sub(n_pad) as u32));
    }
    Ok(PaddedBatch {
        tokens: Tensor::from_vec(tokens, (b, len), device)?,
        positions: Tensor::from_vec(positions, (b, len), device)?,
        pad,
    })
}

/// Inputs for one decoding step: the next token of every sequence, at cache length `kv`.
/// Returns tokens and positions, each (batch, 1) u32; sequence `s` is at position
/// `kv - pad[s]`.
pub fn step_inputs(
    next: &[u32],
    pad: &[usize],
    kv: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let positions: Vec<u32> = pad.iter().map(|p| (kv - p) as u32).collect();
    Ok((
        Tensor::from_vec(next.to_vec(), (next.len(), 1), device)?,
        Tensor::from_vec(positions, (next.len(), 1), device)?,
    ))
}

/// Logits (batch, vocab) as plain f32 vectors, one per sequence.
pub fn logits_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    logits.to_dtype(DType::F32)?.to_vec2::<f32>()
}
