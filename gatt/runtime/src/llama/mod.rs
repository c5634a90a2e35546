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

pub mod hf;
mod inputs;
mod linear;
mod load;
mod weights;

use crate::kernels::{decode_attention, norm, packed_attention, rope, softmax, swiglu};

use crate::kernels::matmul::matmul;
pub use inputs::{logits_rows, pad_prompts, step_inputs, PaddedBatch};
pub use linear::{Dropout, Lora, Weights};
use linear::{Linear, Pass};
pub(crate) use load::{SourceTensor, TensorSource};
pub use weights::{module_of, WeightKind, LINEAR_NAMES};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use std::sync::Mutex;

/// Hyper-parameters, read from the GGUF metadata (`{arch}.*` keys, [`Config::from_gguf`])
/// or a Hugging Face `config.json` ([`hf::config_from_json`]). Fields name their GGUF key /
/// `config.json` key where they have one.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `general.architecture` / `model_type`: `llama` or `qwen2`.
    pub arch: String,
    /// Decoder blocks (`{arch}.block_count` / `num_hidden_layers`).
    pub n_layer: usize,
    /// Query heads (`{arch}.attention.head_count` / `num_attention_heads`).
    pub n_head: usize,
    /// Key/value heads, fewer than `n_head` with grouped-query attention
    /// (`{arch}.attention.head_count_kv` / `num_key_value_heads`).
    pub n_kv_head: usize,
    /// Width of the residual stream (`{arch}.embedding_length` / `hidden_size`).
    pub hidden: usize,
    /// Width of one head: `hidden / n_head` (GGUF), `head_dim` when `config.json` has it
    /// (it must still equal `hidden / n_head`).
    pub head_dim: usize,
    /// Rotary base θ (`{arch}.rope.freq_base` / `rope_theta`; 10 000 when absent).
    pub rope_base: f32,
    /// RMS norm epsilon (`{arch}.attention.layer_norm_rms_epsilon` / `rms_norm_eps`).
    pub rms_eps: f64,
    /// Longest sequence in tokens, and the length of the rotary tables
    /// (`{arch}.context_length` / `max_position_embeddings`).
    pub context_length: usize,
    /// Interleaved rotary pairs (llama) or halves (qwen2, "neox" style), by `arch`.
    pub rope_interleaved: bool,
    /// Vocabulary size: rows of the token embedding. Set from the weights at load
    /// (0 straight out of [`Config::from_gguf`]; `vocab_size` in `config.json` must agree).
    pub vocab: usize,
    /// Width of the MLP's gate and up projections. Set from the weights at load (0
    /// straight out of [`Config::from_gguf`]).
    pub intermediate: usize,
    /// The output projection is the token embedding (small models): set at load when
    /// there is no `output.weight` / `lm_head.weight` tensor.
    pub tie_embeddings: bool,
}

impl Config {
    /// Reads the hyper-parameters from a GGUF header's metadata, under llama.cpp's key
    /// names (GGUF spec: `general.architecture`, then `{arch}.block_count`,
    /// `{arch}.attention.head_count`, ...). `vocab`, `intermediate` and `tie_embeddings`
    /// are left for the loader to fill in from the tensors.
    ///
    /// # Errors
    ///
    /// An architecture other than `llama` or `qwen2`, or a missing or mistyped key
    /// (only `{arch}.rope.freq_base` is optional).
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let arch = ct
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        let rope_interleaved = match arch.as_str() {
            "llama" => true,
            "qwen2" => false,
            other => {
                candle_core::bail!("unsupported architecture `{other}` (supported: llama, qwen2)")
            }
        };
        let get = |k: &str| {
            ct.metadata.get(&format!("{arch}.{k}")).ok_or_else(|| {
                candle_core::Error::Msg(format!("GGUF metadata has no `{arch}.{k}`"))
            })
        };
        // A value of another type names its key (`not a u32` alone says nothing).
        let typed = |k: &str, e: candle_core::Error| {
            candle_core::Error::Msg(format!(
                "GGUF metadata `{arch}.{k}` has the wrong type: {e}"
            ))
        };
        let u32_of = |k: &str| -> Result<usize> {
            get(k)?
                .to_u32()
                .map(|v| v as usize)
                .map_err(|e| typed(k, e))
        };
        let f32_of = |k: &str| -> Result<f32> { get(k)?.to_f32().map_err(|e| typed(k, e)) };
        let n_head = u32_of("attention.head_count")?;
        let hidden = u32_of("embedding_length")?;
        let cfg = Config {
            n_layer: u32_of("block_count")?,
            n_head,
            n_kv_head: u32_of("attention.head_count_kv")?,
            hidden,
            head_dim: hidden.checked_div(n_head).unwrap_or(0),
            // Absent: llama's 10 000; present, it must be a number.
            rope_base: match get("rope.freq_base") {
                Ok(_) => f32_of("rope.freq_base")?,
                Err(_) => 10_000.0,
            },
            rms_eps: f32_of("attention.layer_norm_rms_epsilon")? as f64,
            context_length: u32_of("context_length")?,
            rope_interleaved,
            arch: arch.clone(),
            vocab: 0,
            intermediate: 0,
            tie_embeddings: false,
        };
        cfg.check(|k| format!("GGUF metadata `{arch}.{}`", k.gguf))?;
        // Head widths other than hidden / heads (written by some converters) would need
        // other projections' shapes: refused rather than computed wrongly.
        for key in ["attention.key_length", "attention.value_length"] {
            if get(key).is_ok() {
                let width = u32_of(key)?;
                if width != cfg.head_dim {
                    candle_core::bail!(
                        "GGUF metadata `{arch}.{key}` is {width}, not embedding_length / \
                         head_count = {}; such heads are not supported",
                        cfg.head_dim
                    )
                }
            }
        }
        Ok(cfg)
    }

    /// Checks the hyper-parameters against each other and against limits no real model
    /// of these architectures comes near ([`limits`]), so hostile or corrupt metadata is
    /// refused at load instead of dividing by zero or exhausting memory. `name` words a
    /// key for the message (GGUF or `config.json` spelling).
    ///
    /// # Errors
    ///
    /// A message naming the key and the value at fault.
    pub fn check(&self, name: impl Fn(&limits::Key) -> String) -> Result<()> {
        use limits::*;
        let within = |key: &Key, value: usize, max: usize| -> Result<()> {
            if value == 0 || value > max {
                candle_core::bail!("{} is {value}; it must be between 1 and {max}", name(key))
            }
            Ok(())
        };
        within(&LAYERS, self.n_layer, MAX_LAYERS)?;
        within(&HEADS, self.n_head, MAX_HEADS)?;
        within(&KV_HEADS, self.n_kv_head, self.n_head)?;
        within(&HIDDEN, self.hidden, MAX_HIDDEN)?;
        within(&CONTEXT, self.context_length, MAX_CONTEXT)?;
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            candle_core::bail!(
                "{} ({}) does not divide {} ({}): grouped-query attention needs it",
                name(&KV_HEADS),
                self.n_kv_head,
                name(&HEADS),
                self.n_head
            )
        }
        if self.head_dim == 0
            || self.head_dim * self.n_head != self.hidden
            || !self.head_dim.is_multiple_of(2)
        {
            candle_core::bail!(
                "{} ({}) is not an even head width times {} ({})",
                name(&HIDDEN),
                self.hidden,
                name(&HEADS),
                self.n_head
            )
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0 && self.rms_eps < 1.0) {
            candle_core::bail!(
                "{} is {}; it must be in (0, 1)",
                name(&RMS_EPS),
                self.rms_eps
            )
        }
        if !(self.rope_base.is_finite() && self.rope_base > 1.0) {
            candle_core::bail!(
                "{} is {}; it must be above 1",
                name(&ROPE_BASE),
                self.rope_base
            )
        }
        Ok(())
    }
}

/// Limits on hyper-parameters ([`Config::check`]): generous (several times the largest
/// llama/qwen2 models) but small enough that the tables and caches they size fit in
/// memory.
pub mod limits {
    /// A hyper-parameter's name in GGUF metadata (after `{arch}.`) and in `config.json`.
    pub struct Key {
        /// GGUF spelling, without the `{arch}.` prefix.
        pub gguf: &'static str,
        /// `config.json` spelling.
        pub hf: &'static str,
    }
    /// Decoder blocks.
    pub const LAYERS: Key = Key {
        gguf: "block_count",
        hf: "num_hidden_layers",
    };
    /// Query heads.
    pub const HEADS: Key = Key {
        gguf: "attention.head_count",
        hf: "num_attention_heads",
    };
    /// Key/value heads.
    pub const KV_HEADS: Key = Key {
        gguf: "attention.head_count_kv",
        hf: "num_key_value_heads",
    };
    /// Residual width.
    pub const HIDDEN: Key = Key {
        gguf: "embedding_length",
        hf: "hidden_size",
    };
    /// Context length.
    pub const CONTEXT: Key = Key {
        gguf: "context_length",
        hf: "max_position_embeddings",
    };
    /// RMS norm epsilon.
    pub const RMS_EPS: Key = Key {
        gguf: "attention.layer_norm_rms_epsilon",
        hf: "rms_norm_eps",
    };
    /// Rotary base.
    pub const ROPE_BASE: Key = Key {
        gguf: "rope.freq_base",
        hf: "rope_theta",
    };
    /// Most decoder blocks (the largest llama models have 126).
    pub const MAX_LAYERS: usize = 1024;
    /// Most query heads (the largest have 128).
    pub const MAX_HEADS: usize = 1024;
    /// Widest residual stream (the largest have 16 384).
    pub const MAX_HIDDEN: usize = 65_536;
    /// Longest context in tokens: 2^20 (rotary tables of this length take a few hundred
    /// MB at most).
    pub const MAX_CONTEXT: usize = 1 << 20;
}

/// How a batch's sequences lie in its rows of tokens.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// One sequence per row, left-padded by `pad[s]` slots (in the tokens for a prompt
    /// step, in the cache afterwards).
    Padded(&'a [usize]),
    /// One row holding the sequences end to end, of these lengths (training on the CPU).
    Packed(&'a [usize]),
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

/// Per-call decoding state: one KV cache per layer, keys and values of shape
/// (batch, kv_heads, positions, head_dim), positions including each sequence's left
/// padding.
pub struct Cache {
    kv: Vec<KvCache>,
    /// The element type keys and values are stored in.
    dtype: DType,
}

impl Cache {
    /// Keys and values kept in f32: decoding computes what one forward pass over the
    /// whole sequence would. `capacity` is the positions reserved up front (at least 16);
    /// candle's cache grows by as many again when a sequence outruns it.
    pub fn new(cfg: &Config, capacity: usize) -> Self {
        Self::with_dtype(cfg, capacity, DType::F32)
    }

    /// Keys and values stored as `dtype`. F16 (as llama.cpp does by default) halves the
    /// cache's memory and the bytes every decoding step reads from it, which with long
    /// prompts or many sequences is a large part of a step; values round to 11
    /// significant bits. The CPU's decoding steps read f16 directly, other paths convert.
    pub fn with_dtype(cfg: &Config, capacity: usize, dtype: DType) -> Self {
        Cache {
            kv: (0..cfg.n_layer)
                .map(|_| KvCache::new(2, capacity.max(16)))
                .collect(),
            dtype,
        }
    }

    /// Positions held per sequence, padding slots included.
    pub fn len(&self) -> usize {
        self.kv.first().map_or(0, |c| c.current_seq_len())
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type keys and values are stored in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A cache holding the sequences `seqs` side by side, each left-padded (with zeros)
    /// to the longest one's length, with room for `extra` more positions. Returns it with
    /// each sequence's padding, the `pad` that [`Model::forward`] takes. All sequences
    /// must come from caches of `dtype` of the same model.
    ///
    /// # Errors
    ///
    /// No sequences, or sequences of different shapes (layers, heads, widths, dtype).
    pub fn from_sequences(
        cfg: &Config,
        seqs: &[&SeqKv],
        extra: usize,
        dtype: DType,
    ) -> Result<(Self, Vec<usize>)> {
        let longest = seqs.iter().map(|s| s.len).max().unwrap_or(0);
        let pad: Vec<usize> = seqs.iter().map(|s| longest - s.len).collect();
        let mut cache = Cache::with_dtype(cfg, longest + extra, dtype);
        if longest == 0 {
            return Ok((cache, pad));
        }
        for (l, kv) in cache.kv.iter_mut().enumerate() {
            let side = |which: usize| -> Result<Tensor> {
                let rows = seqs
                    .iter()
                    .zip(&pad)
                    .map(|(s, &p)| {
                        let Some(layer) = s.layers.get(l) else {
                            candle_core::bail!("a cached sequence has too few layers")
                        };
                        let t = if which == 0 { &layer.0 } else { &layer.1 };
                        if p == 0 {
                            return Ok(t.clone());
                        }
                        let (one, heads, _, hd) = t.dims4()?;
                        let zeros = Tensor::zeros((one, heads, p, hd), t.dtype(), t.device())?;
                        Tensor::cat(&[&zeros, t], 2)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&rows, 0)
            };
            kv.append(&side(0)?.to_dtype(dtype)?, &side(1)?.to_dtype(dtype)?)?;
        }
        Ok((cache, pad))
    }

    /// A copy of sequence `s`'s positions `pad..pad + len` (its first `len` positions
    /// after its padding).
    ///
    /// # Errors
    ///
    /// When the cache holds no such sequence or positions.
    pub fn sequence(&self, s: usize, pad: usize, len: usize) -> Result<SeqKv> {
        let layers = self
            .kv
            .iter()
            .map(|kv| {
                let take = |t: Option<Tensor>| -> Result<Tensor> {
                    let Some(t) = t else {
                        candle_core::bail!("the cache is empty")
                    };
                    t.narrow(0, s, 1)?.narrow(2, pad, len)?.force_contiguous()
                };
                Ok((take(kv.k()?)?, take(kv.v()?)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SeqKv { layers, len })
    }
}

/// The keys and values of one sequence's first `len` positions, every layer's as
/// (1, kv_heads, len, head_dim) in the dtype of the cache they came from. With the CPU's
/// inference kernels they are a function of those positions' tokens alone (see
/// `decode_attention.rs`), so they can start the cache of any longer sequence that
/// begins with the same tokens.
#[derive(Clone)]
pub struct SeqKv {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl SeqKv {
    /// Keys and values of `len` positions, one (keys, values) pair per layer.
    #[cfg(test)]
    pub(crate) fn from_layers(layers: Vec<(Tensor, Tensor)>, len: usize) -> Self {
        SeqKv { layers, len }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// These positions followed by `more`'s (a copy).
    ///
    /// # Errors
    ///
    /// When the two come from different models or caches.
    pub fn concat(&self, more: &SeqKv) -> Result<SeqKv> {
        if self.layers.len() != more.layers.len() {
            candle_core::bail!("cached sequences of different models")
        }
        let layers = self
            .layers
            .iter()
            .zip(&more.layers)
            .map(|((k, v), (k2, v2))| Ok((Tensor::cat(&[k, k2], 2)?, Tensor::cat(&[v, v2], 2)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(SeqKv {
            layers,
            len: self.len + more.len,
        })
    }

    /// The first `len` positions (a copy; `len` at most [`SeqKv::len`]).
    ///
    /// # Errors
    ///
    /// When `len` is longer than what is held.
    pub fn prefix(&self, len: usize) -> Result<SeqKv> {
        if len > self.len {
            candle_core::bail!("a prefix of {len} positions of {}", self.len)
        }
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.narrow(2, 0, len)?.force_contiguous()?,
                    v.narrow(2, 0, len)?.force_contiguous()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SeqKv { layers, len })
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
    /// When set, every layer's attention probabilities are collected here.
    captured: Mutex<Option<Vec<Tensor>>>,
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
        let linears = self.layers.iter().flat_map(|l| {
            [
                &l.attn.q,
                &l.attn.k,
                &l.attn.v,
                &l.attn.o,
                &l.mlp.gate,
                &l.mlp.up,
                &l.mlp.down,
            ]
        });
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
        let x = self.hidden(tokens, positions, Rows::Padded(pad), Some(cache))?;
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
        self.hidden(tokens, positions, Rows::Padded(pad), None)
    }

    /// Final hidden states (1 x T x hidden) of sequences packed end to end in one row
    /// of T tokens (`positions` restart at 0 for each sequence; `segments` are the
    /// lengths): the training forward pass on the CPU, where every linear layer is then
    /// one product for the whole batch and no position is padding.
    pub fn hidden_states_packed(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        segments: &[usize],
    ) -> Result<Tensor> {
        if !self.device.is_cpu() {
            candle_core::bail!("packed sequences need the CPU; pad them on other devices")
        }
        self.hidden(tokens, positions, Rows::Packed(segments), None)
    }

    /// Attention probabilities of one sequence, one tensor per layer, each
    /// heads x len x len (row i: how much position i attends to each position; rows sum
    /// to 1, zero above the diagonal). For attention-to-instruction analyses.
    pub fn attention_maps(&self, ids: &[u32]) -> Result<Vec<Tensor>> {
        *self.captured.lock().expect("capture lock") = Some(Vec::new());
        let p = pad_prompts(&[ids.to_vec()], 0, &self.device)?;
        let result = self.hidden(&p.tokens, &p.positions, Rows::Padded(&p.pad), None);
        let maps = self
            .captured
            .lock()
            .expect("capture lock")
            .take()
            .unwrap_or_default();
        result.map(|_| maps)
    }

    /// Output projection of hidden-state rows (n x hidden) to logits (n x vocab).
    pub fn logits(&self, rows: &Tensor) -> Result<Tensor> {
        self.output.forward(rows, Pass::default())
    }

    fn hidden(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        rows: Rows,
        mut cache: Option<&mut Cache>,
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
        let pass = Pass {
            dropout: self.dropout.as_ref(),
            inference: !self.training && matches!(rows, Rows::Padded(_)),
        };
        let train = self.training;
        for (i, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| (&mut c.kv[i], c.dtype));
            let h = self.attention(
                layer,
                &layer.attn_norm.forward(&x, train)?,
                (&cos, &sin),
                rows,
                kv,
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
        kv: Option<(&mut KvCache, DType)>,
        pass: Pass,
    ) -> Result<Tensor> {
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
        let capturing = self.captured.lock().expect("capture lock").is_some();
        if cached && !self.training && !capturing && x.device().is_cpu() {
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
            if let Some(maps) = self.captured.lock().expect("capture lock").as_mut() {
                maps.push(att.reshape((nh, n_q, n_k))?.detach());
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
