//! A llama-family decoder (llama, qwen2) over quantized GGUF weights, with batched,
//! ragged decoding: prompts of different lengths are left-padded, each sequence has its
//! own rotary positions, and a padding mask keeps every sequence blind to the others'
//! padding. Same layout as candle-transformers' model files: config, layers, forward.
//!
//! The same model trains: [`Model::set_training`] swaps candle's fused kernels (which
//! have no backward pass) for differentiable ones, [`Model::weights_mut`] exposes every
//! weight under its Hugging Face name so a trainer can make it a variable, and each
//! linear layer can carry a LoRA adapter. Weights loaded from GGUF keep llama.cpp's
//! row order for the query and key projections (interleaved rotary pairs);
//! [`hf`] converts to and from the Hugging Face layout.

mod cache;
mod config;
pub mod hf;
mod inputs;
mod linear;
mod load;
mod probe;
mod weights;

use crate::kernels::decoder_layer::{
    self, Adapter, GradSink, LayerShape, LayerWeights, Projection, RopeAngles,
};
use crate::kernels::{
    cross_entropy, decode_attention, norm, packed_attention, rope, softmax, swiglu,
};

use crate::kernels::matmul::matmul;
pub use cache::{Cache, SeqKv};
pub use config::{limits, Config};
pub use inputs::{logits_rows, pad_prompts, step_inputs, PaddedBatch};
pub use linear::{Dropout, Lora, Weights};
use linear::{Linear, Pass, Weight};
pub(crate) use load::{SourceTensor, TensorSource};
pub use probe::AttentionSummary;
use probe::Probe;
pub use weights::{module_of, WeightKind, LINEAR_NAMES};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use std::sync::{Arc, Mutex};

/// How a batch's sequences lie in its rows of tokens.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// One sequence per row, left-padded by `pad[s]` slots (in the tokens for a prompt
    /// step, in the cache afterwards).
    Padded(&'a [usize]),
    /// One row holding the sequences end to end, of these lengths (training on the CPU).
    Packed(&'a [usize]),
}

/// What a layer's attention keeps besides its output: the keys and values (a cache), or
/// its probabilities (a probe, which runs without a cache).
enum Side<'a, 'p> {
    Nothing,
    Cache(&'a mut KvCache, DType),
    Probe(&'a mut Probe<'p>),
}

struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        norm::rms_norm(x, &self.weight, self.eps, training)
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let gate = match Linear::forward_halves(&self.gate, &self.up, x, pass)? {
            Some(both) => swiglu::silu_mul_halves(&both)?,
            None => {
                let [gate, up] = Linear::forward_all([&self.gate, &self.up], x, pass)?;
                swiglu::silu_mul(&gate, &up)?
            }
        };
        self.down.forward(&gate, pass)
    }
}

struct Layer {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    mlp: Mlp,
}

impl Layer {
    /// q, k, v, o, gate, up, down: the order a forward pass runs them.
    fn linears(&self) -> [&Linear; 7] {
        let (a, m) = (&self.attn, &self.mlp);
        [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
    }
}

/// A llama-family decoder: token embedding (vocab, hidden), `n_layer` pre-norm blocks
/// (RMS norm, grouped-query attention with rotary positions, RMS norm, SwiGLU MLP), a
/// final RMS norm and the output projection to vocab logits (tied to the embedding in
/// small models). Built by [`Model::from_gguf`] or [`hf::load_dir`]; computes in f32.
pub struct Model {
    /// Its hyper-parameters, with `vocab`, `intermediate` and `tie_embeddings` as found
    /// in the weights.
    pub cfg: Config,
    /// (vocab, hidden).
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    training: bool,
    dropout: Option<Mutex<Dropout>>,
    /// The gradients the one-op layers compute (`kernels::decoder_layer`), until
    /// [`Model::backward`] moves them into the step's gradients.
    layer_grads: Arc<GradSink>,
    /// Whether training on the CPU runs each layer as one op (the default; off
    /// only to compare with the composed layer).
    fused_layers: bool,
}

fn rope_tables(cfg: &Config, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / cfg.rope_base.powf(2.0 * i as f32 / cfg.head_dim as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, half), device)?;
    let pos = Tensor::arange(0u32, cfg.context_length as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((cfg.context_length, 1))?;
    let freqs = pos.broadcast_mul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

impl Model {
    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// True when a position's logits, keys and values are a function of the tokens up
    /// to it alone, bit for bit, however the sequence is split between forward passes
    /// (whole prompt, parts from a kept cache, decoding steps) and whatever shares the
    /// batch: inference on the CPU with every matrix in the file's 8-bit or 4-bit blocks
    /// (Q8_0, Q4_1: the default model) and no LoRA adapter. Then a kept cache can start a longer sequence without changing
    /// anything it computes.
    pub fn positions_independent(&self) -> bool {
        let linears = self.layers.iter().flat_map(Layer::linears);
        self.device.is_cpu()
            && !self.training
            && self.output.rows_independent()
            && linears.into_iter().all(Linear::rows_independent)
    }

    /// The cache for sampling: f16 keys and values on the CPU, whose decoding steps read
    /// them directly (half the bytes), f32 elsewhere.
    pub fn sampling_cache(&self, capacity: usize) -> Cache {
        let dtype = if self.device.is_cpu() {
            DType::F16
        } else {
            DType::F32
        };
        Cache::with_dtype(&self.cfg, capacity, dtype)
    }

    /// Differentiable kernels (and LoRA dropout, seeded) for training; fused ones for
    /// inference. Inference kernels have no backward pass.
    pub fn set_training(&mut self, training: bool, dropout_seed: u64) {
        self.training = training;
        self.dropout = training.then(|| Mutex::new(Dropout::new(dropout_seed)));
    }

    /// Runs `tokens` (batch x new) through the model, appending to `cache`.
    ///
    /// `positions` (batch x new, u32) are each token's rotary position; `pad[s]` is the
    /// number of padding slots at the start of sequence `s` (in `tokens` for the prompt
    /// step, in the cache afterwards). Returns the logits of the last position of every
    /// sequence (batch x vocab).
    pub fn forward(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        pad: &[usize],
        cache: &mut Cache,
    ) -> Result<Tensor> {
        let t = tokens.dim(1)?;
        let x = self.hidden(tokens, positions, Rows::Padded(pad), Some(cache), None)?;
        let last = x.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?;
        let pass = Pass {
            dropout: None,
            inference: !self.training,
        };
        self.output.forward(&last, pass)
    }

    /// Final hidden states (after the last norm) of every position, batch x len x
    /// hidden, without a cache: the training forward pass. Padding positions take no
    /// part in any sequence's attention, but their rows are not zero (the residual
    /// stream still carries the pad token's embedding): callers skip them.
    pub fn hidden_states(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        pad: &[usize],
    ) -> Result<Tensor> {
        self.hidden(tokens, positions, Rows::Padded(pad), None, None)
    }

    /// Final hidden states (1 x T x hidden) of sequences packed end to end in one row
    /// of T tokens (`positions` restart at 0 for each sequence; `segments` are the
    /// lengths): the training forward pass on the CPU, where every linear layer is then
    /// one product for the whole batch and no position is padding. In training the
    /// layers run as one op each, whose trained tensors' gradients only
    /// [`Model::backward`] returns (candle's `Tensor::backward` leaves them out), once
    /// per forward pass.
    pub fn hidden_states_packed(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        segments: &[usize],
    ) -> Result<Tensor> {
        if !self.device.is_cpu() {
            candle_core::bail!("packed sequences need the CPU; pad them on other devices")
        }
        self.hidden(tokens, positions, Rows::Packed(segments), None, None)
    }

    /// Attention probabilities of one sequence, one tensor per layer, each
    /// heads x len x len (row i: how much position i attends to each position; rows sum
    /// to 1, zero above the diagonal), computed as [`Model::attention_summary`] computes
    /// them. For attention-to-instruction analyses of short sequences.
    pub fn attention_maps(&self, ids: &[u32]) -> Result<Vec<Tensor>> {
        let mut maps = Vec::with_capacity(self.cfg.n_layer);
        self.probe(ids, Probe::Maps(&mut maps))?;
        Ok(maps)
    }

    /// The attention of one sequence (`ids`, one forward pass over the whole of it, no
    /// cache) reduced over layers and heads as each layer is computed: max and mean
    /// (len x len) and each head's attention mass on the key positions `keys` (see
    /// [`AttentionSummary`] for the exact definitions). Every product is the f32 one
    /// (quantized weights dequantized), as Hugging Face transformers computes it; decoding
    /// multiplies 8-bit activations with the file's blocks, which moves probabilities by
    /// up to about 0.02. Memory: two len x len f32
    /// matrices, plus one layer's probabilities (heads x len x len) while it is reduced.
    ///
    /// # Errors
    ///
    /// An empty sequence, or one longer than the model's context.
    pub fn attention_summary(
        &self,
        ids: &[u32],
        keys: std::ops::Range<usize>,
    ) -> Result<AttentionSummary> {
        let mut summary = AttentionSummary::new(ids.len(), self.cfg.n_layer, self.cfg.n_head, keys);
        self.probe(ids, Probe::Summary(&mut summary, 0))?;
        Ok(summary)
    }

    /// One forward pass over `ids` alone that hands every layer's attention
    /// probabilities to `probe`.
    fn probe(&self, ids: &[u32], mut probe: Probe) -> Result<()> {
        if ids.is_empty() || ids.len() > self.cfg.context_length {
            candle_core::bail!(
                "attention of {} tokens: the model reads 1 to {} (its context)",
                ids.len(),
                self.cfg.context_length
            )
        }
        let p = pad_prompts(&[ids.to_vec()], 0, &self.device)?;
        let rows = Rows::Padded(&p.pad);
        self.hidden(&p.tokens, &p.positions, rows, None, Some(&mut probe))?;
        Ok(())
    }

    /// Output projection of hidden-state rows (n x hidden) to logits (n x vocab).
    pub fn logits(&self, rows: &Tensor) -> Result<Tensor> {
        self.output.forward(rows, Pass::default())
    }

    /// Negative log-likelihood in nats, (n,) f32, of `targets[i]` under the logits of
    /// hidden-state row `i` (`rows`: n x hidden), differentiable (the training loss).
    /// On the CPU with dense output weights (no bias, no adapter) the projection and the
    /// cross-entropy are one op that never holds all n x vocab logits
    /// (`kernels::cross_entropy`); otherwise the logits, their log-softmax and a gather.
    pub fn target_nll(&self, rows: &Tensor, targets: &[u32]) -> Result<Tensor> {
        if let Some(w) = self.fused_output(rows) {
            return cross_entropy::linear_nll(rows, w, targets);
        }
        let n = targets.len();
        let t = Tensor::from_vec(targets.to_vec(), (n, 1), rows.device())?;
        let logp = candle_nn::ops::log_softmax(&self.logits(rows)?, candle_core::D::Minus1)?;
        logp.gather(&t, 1)?.squeeze(1)?.neg()
    }

    /// The output weights (hidden, vocab) when the projection and the cross-entropy of
    /// `rows` can be one op: dense weights without bias or adapter, f32 rows on the CPU.
    fn fused_output(&self, rows: &Tensor) -> Option<&Tensor> {
        let out = &self.output;
        match (&out.weight, &out.bias, &out.lora) {
            (Weight::Dense(w), None, None)
                if rows.device().is_cpu() && rows.dtype() == DType::F32 =>
            {
                Some(w)
            }
            _ => None,
        }
    }

    /// `sum_i weights[i] * nll_i` of the rows' targets, a scalar f32 in nats (a
    /// micro-batch's share of the training loss; `weights`: (n,) f32). On the CPU with
    /// dense output weights one op that computes its gradients in the forward pass
    /// (`kernels::cross_entropy::linear_cross_entropy`); otherwise [`Model::target_nll`]
    /// times the weights, summed.
    pub fn weighted_target_nll(
        &self,
        rows: &Tensor,
        targets: &[u32],
        weights: &Tensor,
    ) -> Result<Tensor> {
        if let Some(w) = self.fused_output(rows) {
            let weights = weights.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            return cross_entropy::linear_cross_entropy(rows, w, targets, &weights);
        }
        (self.target_nll(rows, targets)? * weights)?.sum_all()
    }

    /// The gradients of `loss` (a scalar of this model's forward pass): candle's
    /// `Tensor::backward`, plus the gradients the one-op layers computed outside candle's
    /// graph (their weights in full fine-tuning, their adapters with LoRA), which
    /// candle's alone leaves out. Use it instead of `loss.backward()` when training. Each
    /// forward pass takes one backward pass; a second one over the same graph is an
    /// error. One model trains on one thread at a time: the layers' sums are the model's.
    ///
    /// # Errors
    ///
    /// When candle's backward pass fails, or runs a second time over one forward pass.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        // Sums left by a backward pass that was not the model's own belong to no step.
        self.layer_grads.clear();
        let mut store = loss.backward()?;
        self.layer_grads.drain_into(&mut store)?;
        Ok(store)
    }

    /// Runs the composed layer instead of the one-op layer (tests compare the two).
    #[cfg(test)]
    pub(crate) fn set_fused_layers(&mut self, on: bool) {
        self.fused_layers = on;
    }

    /// The layer's tensors when it can run as one op of training: on the CPU with packed
    /// rows and an input that carries the graph, every tensor contiguous f32 and either a
    /// variable itself (trained) or outside the graph (frozen) (a tensor computed from a
    /// variable would lose its gradient in the op), the projections dense without bias.
    /// Full fine-tuning and LoRA alike (with LoRA the first layer's input, the frozen
    /// embedding, is outside the graph: that layer stays composed). Dropout masks are not
    /// drawn here ([`Model::draw_masks`]).
    fn fused_weights(&self, layer: &Layer, x: &Tensor) -> Option<LayerWeights> {
        if !(self.fused_layers && self.training && x.device().is_cpu() && x.track_op()) {
            return None;
        }
        // The op reads every tensor in place: contiguous f32.
        let settled = |w: &Tensor| {
            w.dtype() == DType::F32 && w.is_contiguous() && (w.is_variable() || !w.track_op())
        };
        let projection = |l: &Linear| {
            let (Weight::Dense(w), None) = (&l.weight, &l.bias) else {
                return None;
            };
            let adapter = match &l.lora {
                None => None,
                Some(lo) if settled(&lo.a) && settled(&lo.b) => Some(Adapter {
                    a: lo.a.clone(),
                    b: lo.b.clone(),
                    scale: lo.scale as f32,
                    mask: None,
                }),
                Some(_) => return None,
            };
            settled(w).then(|| Projection {
                w: w.clone(),
                adapter,
            })
        };
        let norm = |n: &RmsNorm| settled(&n.weight).then(|| n.weight.clone());
        let [q, k, v, o, gate, up, down] = layer.linears().map(projection);
        Some(LayerWeights {
            attn_norm: norm(&layer.attn_norm)?,
            q: q?,
            k: k?,
            v: v?,
            o: o?,
            ffn_norm: norm(&layer.ffn_norm)?,
            gate: gate?,
            up: up?,
            down: down?,
        })
    }

    /// Draws the adapters' dropout masks of a one-op layer over `t` tokens, in the order
    /// and with the draws the composed layer makes, so both see the same masks.
    fn draw_masks(&self, w: &mut LayerWeights, layer: &Layer, t: usize, pass: Pass) -> Result<()> {
        let Some(dropout) = pass.dropout else {
            return Ok(());
        };
        for (p, l) in w.projections_mut().into_iter().zip(layer.linears()) {
            if let (Some(a), Some(lo)) = (&mut p.adapter, &l.lora) {
                if lo.dropout > 0.0 {
                    let n = t * p.w.dim(0)?;
                    let mut d = dropout.lock().expect("dropout rng");
                    a.mask = Some(d.mask_values(n, lo.dropout));
                }
            }
        }
        Ok(())
    }

    fn hidden(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        rows: Rows,
        mut cache: Option<&mut Cache>,
        mut probe: Option<&mut Probe>,
    ) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let half = self.cfg.head_dim / 2;
        let flat = positions.flatten_all()?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, t, half))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, t, half))?;
        let hidden = self.cfg.hidden;
        let mut x = self
            .embed
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, t, hidden))?;
        // A probe reads the f32 products (the file's blocks dequantized), as
        // transformers computes them, not decoding's 8-bit activation products.
        let pass = Pass {
            dropout: self.dropout.as_ref(),
            inference: !self.training && matches!(rows, Rows::Padded(_)) && probe.is_none(),
        };
        let train = self.training;
        let shape = LayerShape {
            heads: self.cfg.n_head,
            kv_heads: self.cfg.n_kv_head,
            head_dim: self.cfg.head_dim,
            eps: self.cfg.rms_eps as f32,
            interleaved: self.cfg.rope_interleaved,
        };
        // Read out of candle once per pass, for the layers that run as one op.
        let mut angles: Option<Arc<RopeAngles>> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            if let (Rows::Packed(segments), None, None) = (rows, &cache, &probe) {
                if let Some(mut w) = self.fused_weights(layer, &x) {
                    self.draw_masks(&mut w, layer, t, pass)?;
                    if angles.is_none() {
                        angles = Some(Arc::new(RopeAngles::new(&cos, &sin)?));
                    }
                    let a = angles.as_ref().expect("set above");
                    let sink = &self.layer_grads;
                    x = decoder_layer::decoder_layer(&x, w, shape, a, segments, sink)?;
                    continue;
                }
            }
            let side = match (cache.as_deref_mut(), probe.as_deref_mut()) {
                (Some(c), _) => Side::Cache(&mut c.kv[i], c.dtype),
                (None, Some(p)) => Side::Probe(p),
                (None, None) => Side::Nothing,
            };
            let h = self.attention(
                layer,
                &layer.attn_norm.forward(&x, train)?,
                (&cos, &sin),
                rows,
                side,
                pass,
            )?;
            x = (x + h)?;
            let h = layer
                .mlp
                .forward(&layer.ffn_norm.forward(&x, train)?, pass)?;
            x = (x + h)?;
        }
        self.norm.forward(&x, train)
    }

    /// Projections run batched; the attention itself runs per sequence over that
    /// sequence's own (unpadded) keys, so a sequence computes exactly what it would
    /// alone, whatever else shares the batch.
    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        rows: Rows,
        side: Side,
        pass: Pass,
    ) -> Result<Tensor> {
        let (kv, mut probe) = match side {
            Side::Cache(kv, dtype) => (Some((kv, dtype)), None),
            Side::Probe(p) => (None, Some(p)),
            Side::Nothing => (None, None),
        };
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim);
        let (angles, il, train) = ((cos, sin), self.cfg.rope_interleaved, self.training);
        let a = &layer.attn;
        let [q, k, v] = Linear::forward_all([&a.q, &a.k, &a.v], x, pass)?;
        let q = rope::rotated_heads(&q, nh, angles, il, train)?;
        let k = rope::rotated_heads(&k, nkv, angles, il, train)?;
        let v = rope::split_heads(&v, nkv)?;
        let cached = kv.is_some();
        let (k, v) = match kv {
            Some((kv, dtype)) => kv.append(&k.to_dtype(dtype)?, &v.to_dtype(dtype)?)?,
            None => (k, v),
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let pad = match rows {
            Rows::Padded(pad) => pad,
            Rows::Packed(segments) => {
                let y = packed_attention::packed(&q, &k, &v, segments, scale as f32)?;
                let y = y.transpose(1, 2)?.reshape((b, t, nh * hd))?;
                return layer.attn.o.forward(&y, pass);
            }
        };
        let kv_len = k.dim(2)?;
        if cached && !self.training && x.device().is_cpu() {
            // Prompts and decoding steps alike, row by row: a position computes the same
            // numbers whether its prompt is prefilled whole, in parts, or decoded.
            let y = decode_attention::causal_rows(&q, &k, &v, pad, scale as f32)?;
            return layer.attn.o.forward(&y, pass);
        }
        if t > 1 && kv_len != t {
            candle_core::bail!(
                "attention over {kv_len} cached positions with {t} new ones needs the CPU's \
                 inference path"
            )
        }
        let (k, v) = (k.to_dtype(DType::F32)?, v.to_dtype(DType::F32)?);
        let rep = nh / nkv;
        let mut ys = Vec::with_capacity(b);
        for (s, &p) in pad.iter().enumerate() {
            // In the prompt step the queries are padded too; afterwards only the cache.
            let (q_skip, n_q) = if t > 1 { (p, t - p) } else { (0, t) };
            let n_k = kv_len - p;
            // Grouped-query attention without copying keys: the `rep` query heads that
            // share a key head are stacked as extra query rows of that head.
            let qs = q
                .narrow(0, s, 1)?
                .narrow(2, q_skip, n_q)?
                .contiguous()?
                .reshape((nkv, rep * n_q, hd))?;
            let ks = k.narrow(0, s, 1)?.narrow(2, p, n_k)?.squeeze(0)?;
            let vs = v.narrow(0, s, 1)?.narrow(2, p, n_k)?.squeeze(0)?;
            let scores = matmul(&qs, &ks.t()?)?;
            let att = softmax::causal(&scores, n_q, scale, self.training)?;
            if let Some(probe) = probe.as_deref_mut() {
                probe.record(&att.reshape((nh, n_q, n_k))?)?;
            }
            // The CPU product reads the cache in place; others want it contiguous.
            let vs = if vs.device().is_cpu() {
                vs
            } else {
                vs.contiguous()?
            };
            let y = matmul(&att, &vs)?.reshape((1, nh, n_q, hd))?;
            ys.push(if q_skip > 0 {
                Tensor::cat(
                    &[
                        &Tensor::zeros((1, nh, q_skip, hd), y.dtype(), y.device())?,
                        &y,
                    ],
                    2,
                )?
            } else {
                y
            });
        }
        let y = Tensor::cat(&ys, 0)?;
        let y = y.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        layer.attn.o.forward(&y, pass)
    }
}

#[cfg(test)]
pub(crate) mod tests;
