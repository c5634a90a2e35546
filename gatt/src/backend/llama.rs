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

mod frozen;
pub mod hf;

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::kv_cache::KvCache;
use std::io::{Read, Seek};
use std::sync::Mutex;

/// Hyper-parameters, read from the GGUF metadata (`{arch}.*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub hidden: usize,
    pub head_dim: usize,
    pub rope_base: f32,
    pub rms_eps: f64,
    pub context_length: usize,
    /// Interleaved rotary pairs (llama) or halves (qwen2, "neox" style).
    pub rope_interleaved: bool,
    /// Filled in from the weights once they are loaded.
    pub vocab: usize,
    pub intermediate: usize,
    /// The output projection is the token embedding (small models).
    pub tie_embeddings: bool,
}

impl Config {
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
        let n_head = get("attention.head_count")?.to_u32()? as usize;
        let hidden = get("embedding_length")?.to_u32()? as usize;
        Ok(Config {
            n_layer: get("block_count")?.to_u32()? as usize,
            n_head,
            n_kv_head: get("attention.head_count_kv")?.to_u32()? as usize,
            hidden,
            head_dim: hidden / n_head,
            rope_base: get("rope.freq_base")
                .and_then(|v| v.to_f32())
                .unwrap_or(10_000.0),
            rms_eps: get("attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
            context_length: get("context_length")?.to_u32()? as usize,
            rope_interleaved,
            arch,
            vocab: 0,
            intermediate: 0,
            tie_embeddings: false,
        })
    }
}

struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        if training {
            candle_nn::ops::rms_norm_slow(x, &self.weight, self.eps)
        } else {
            candle_nn::ops::rms_norm(x, &self.weight, self.eps)
        }
    }
}

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// Dequantized to f32 at load: candle's f32 matrix multiply picks AVX2/AVX-512 at
    /// run time and batches well, so prefill and batched decoding are many times faster
    /// on a portable build (about 4x the file's size in memory).
    #[default]
    Dense,
    /// Kept as stored in the file: least memory, but candle's quantized kernels only
    /// use SIMD when the binary is built for the CPU (`-C target-cpu=native`).
    Quantized,
}

enum Weight {
    /// Transposed: (in, out).
    Dense(Tensor),
    Quantized(QMatMul),
}

/// A low-rank adapter: `y += scale * dropout(x) A B`.
pub struct Lora {
    /// (in, rank), transposed like the dense weights.
    pub a: Tensor,
    /// (rank, out).
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f32,
}

/// A linear layer, with an optional (dequantized) bias and LoRA adapter.
struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    lora: Option<Lora>,
}

/// `x` (.., k) times `w` (k, n), as one matrix product for all rows: weights are read once.
fn matmul_rows(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = dims[dims.len() - 1];
    let rows = x.elem_count() / k;
    let x2 = x.reshape((rows, k))?;
    // A frozen weight under a differentiable input: skip its (unused) gradient.
    let y = if x2.track_op() && !w.track_op() {
        frozen::matmul(&x2, w)?
    } else {
        x2.matmul(w)?
    };
    let mut out = dims;
    *out.last_mut().expect("at least one dim") = w.dim(1)?;
    y.reshape(out)
}

impl Linear {
    fn forward(&self, x: &Tensor, dropout: Option<&Mutex<Dropout>>) -> Result<Tensor> {
        let mut y = match &self.weight {
            Weight::Quantized(q) => q.forward(x)?,
            Weight::Dense(w) => matmul_rows(x, w)?,
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let x = match dropout {
                Some(d) if l.dropout > 0.0 => {
                    let mask =
                        d.lock()
                            .expect("dropout rng")
                            .mask(x.dims(), l.dropout, x.device())?;
                    (x * mask)?
                }
                _ => x.clone(),
            };
            let delta = matmul_rows(&matmul_rows(&x, &l.a)?, &l.b)?;
            y = (y + (delta * l.scale)?)?;
        }
        Ok(y)
    }

    fn out_dim(&self) -> Result<usize> {
        match &self.weight {
            Weight::Dense(w) => w.dim(1),
            Weight::Quantized(q) => match q {
                QMatMul::QTensor(t) => Ok(t.shape().dims()[0]),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dim(0),
            },
        }
    }

    fn in_dim(&self) -> Result<usize> {
        match &self.weight {
            Weight::Dense(w) => w.dim(0),
            Weight::Quantized(q) => match q {
                QMatMul::QTensor(t) => Ok(t.shape().dims()[1]),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dim(1),
            },
        }
    }
}

/// Seeded inverted dropout for LoRA inputs while training (reproducible on resume).
/// A splitmix64 stream: one cheap 64-bit draw gives the keep/drop bits of two elements.
pub struct Dropout {
    state: u64,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Dropout { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn mask(&mut self, dims: &[usize], p: f32, device: &Device) -> Result<Tensor> {
        let n: usize = dims.iter().product();
        let keep = 1.0 / (1.0 - p);
        let threshold = (p as f64 * u32::MAX as f64) as u32;
        let mut m = Vec::with_capacity(n + 1);
        while m.len() < n {
            let r = self.next();
            for half in [r as u32, (r >> 32) as u32] {
                m.push(if half < threshold { 0.0 } else { keep });
            }
        }
        m.truncate(n);
        Tensor::from_vec(m, dims, device)
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
    fn forward(&self, x: &Tensor, d: Option<&Mutex<Dropout>>) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate.forward(x, d)?)?;
        self.down.forward(&(gate * self.up.forward(x, d)?)?, d)
    }
}

struct Layer {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    mlp: Mlp,
}

/// Per-call decoding state: one KV cache per layer.
pub struct Cache {
    kv: Vec<KvCache>,
}

impl Cache {
    pub fn new(cfg: &Config, capacity: usize) -> Self {
        Cache {
            kv: (0..cfg.n_layer)
                .map(|_| KvCache::new(2, capacity.max(16)))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.kv.first().map_or(0, |c| c.current_seq_len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Model {
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

/// What a named weight is, so converters know how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    /// A linear layer's matrix, stored transposed: (in, out).
    Matrix,
    /// The token embedding, (vocab, hidden).
    Embedding,
    /// A norm weight or a bias.
    Vector,
}

/// Every linear layer's name within a block, as Hugging Face and peft spell it.
pub const LINEAR_NAMES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

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

/// Where a loader finds each tensor: by GGUF name, as an f32 matrix in (out, in) layout
/// (Hugging Face orientation, llama.cpp's q/k row order) or a vector.
pub(crate) trait TensorSource {
    fn get(&mut self, gguf_name: &str) -> Result<Option<SourceTensor>>;
}

pub(crate) enum SourceTensor {
    Quantized(QTensor),
    Dense(Tensor),
}

impl SourceTensor {
    fn dense(self, device: &Device) -> Result<Tensor> {
        match self {
            SourceTensor::Quantized(q) => q.dequantize(device),
            SourceTensor::Dense(t) => t.to_dtype(DType::F32)?.to_device(device),
        }
    }
}

struct GgufSource<'a, R> {
    ct: &'a gguf_file::Content,
    reader: &'a mut R,
    device: Device,
}

impl<R: Read + Seek> TensorSource for GgufSource<'_, R> {
    fn get(&mut self, name: &str) -> Result<Option<SourceTensor>> {
        if !self.ct.tensor_infos.contains_key(name) {
            return Ok(None);
        }
        Ok(Some(SourceTensor::Quantized(self.ct.tensor(
            self.reader,
            name,
            &self.device,
        )?)))
    }
}

fn required(src: &mut dyn TensorSource, name: &str) -> Result<SourceTensor> {
    src.get(name)?
        .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor `{name}`")))
}

impl Model {
    pub fn from_gguf<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        weights: Weights,
    ) -> Result<Self> {
        let cfg = Config::from_gguf(ct)?;
        let mut src = GgufSource {
            ct,
            reader,
            device: device.clone(),
        };
        Self::load(cfg, &mut src, device, weights)
    }

    /// Builds the model from tensors named as in GGUF files.
    pub(crate) fn load(
        mut cfg: Config,
        src: &mut dyn TensorSource,
        device: &Device,
        weights: Weights,
    ) -> Result<Self> {
        let linear = |w: SourceTensor, b: Option<SourceTensor>| -> Result<Linear> {
            let weight = match (weights, w) {
                (Weights::Quantized, SourceTensor::Quantized(q)) => {
                    Weight::Quantized(QMatMul::from_qtensor(q)?)
                }
                // Stored transposed (in x out) so the product reads it contiguously.
                (_, w) => Weight::Dense(w.dense(device)?.t()?.contiguous()?),
            };
            Ok(Linear {
                weight,
                bias: b.map(|b| b.dense(device)).transpose()?,
                lora: None,
            })
        };
        let norm = |w: SourceTensor| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: w.dense(device)?,
                eps: cfg.rms_eps as f32,
            })
        };
        let embed = required(src, "token_embd.weight")?.dense(device)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            let mut opt = |n: &str| src.get(&format!("{p}.{n}"));
            let (bq, bk, bv) = (
                opt("attn_q.bias")?,
                opt("attn_k.bias")?,
                opt("attn_v.bias")?,
            );
            let mut t = |n: &str| required(src, &format!("{p}.{n}"));
            layers.push(Layer {
                attn_norm: norm(t("attn_norm.weight")?)?,
                attn: Attention {
                    q: linear(t("attn_q.weight")?, bq)?,
                    k: linear(t("attn_k.weight")?, bk)?,
                    v: linear(t("attn_v.weight")?, bv)?,
                    o: linear(t("attn_output.weight")?, None)?,
                },
                ffn_norm: norm(t("ffn_norm.weight")?)?,
                mlp: Mlp {
                    gate: linear(t("ffn_gate.weight")?, None)?,
                    up: linear(t("ffn_up.weight")?, None)?,
                    down: linear(t("ffn_down.weight")?, None)?,
                },
            });
        }
        let norm_out = norm(required(src, "output_norm.weight")?)?;
        // Small models tie the output projection to the embeddings.
        let (output, tied) = match src.get("output.weight")? {
            Some(w) => (linear(w, None)?, false),
            None => (
                Linear {
                    weight: Weight::Dense(embed.t()?.contiguous()?),
                    bias: None,
                    lora: None,
                },
                true,
            ),
        };
        cfg.vocab = embed.dim(0)?;
        cfg.intermediate = layers.first().map_or(Ok(0), |l| l.mlp.gate.out_dim())?;
        cfg.tie_embeddings = tied;
        let (cos, sin) = rope_tables(&cfg, device)?;
        Ok(Model {
            cfg,
            embed,
            layers,
            norm: norm_out,
            output,
            cos,
            sin,
            device: device.clone(),
            training: false,
            dropout: None,
            captured: Mutex::new(None),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Differentiable kernels (and LoRA dropout, seeded) for training; fused ones for
    /// inference. Inference kernels have no backward pass.
    pub fn set_training(&mut self, training: bool, dropout_seed: u64) {
        self.training = training;
        self.dropout = training.then(|| Mutex::new(Dropout::new(dropout_seed)));
    }

    /// Every weight by its Hugging Face name, for trainers and converters. A tied
    /// output projection is not listed (it is the embedding); after replacing
    /// `model.embed_tokens.weight`, call [`Model::retie`].
    pub fn weights_mut(&mut self) -> Vec<(String, WeightKind, &mut Tensor)> {
        let mut out: Vec<(String, WeightKind, &mut Tensor)> = Vec::new();
        out.push((
            "model.embed_tokens.weight".into(),
            WeightKind::Embedding,
            &mut self.embed,
        ));
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            let Layer {
                attn_norm,
                attn,
                ffn_norm,
                mlp,
            } = l;
            out.push((
                format!("{p}.input_layernorm.weight"),
                WeightKind::Vector,
                &mut attn_norm.weight,
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                WeightKind::Vector,
                &mut ffn_norm.weight,
            ));
            for (name, lin) in linears(attn, mlp) {
                let module = module_of(name);
                if let Weight::Dense(w) = &mut lin.weight {
                    out.push((format!("{p}.{module}.{name}.weight"), WeightKind::Matrix, w));
                }
                if let Some(b) = &mut lin.bias {
                    out.push((format!("{p}.{module}.{name}.bias"), WeightKind::Vector, b));
                }
            }
        }
        out.push((
            "model.norm.weight".into(),
            WeightKind::Vector,
            &mut self.norm.weight,
        ));
        if !self.cfg.tie_embeddings {
            if let Weight::Dense(w) = &mut self.output.weight {
                out.push(("lm_head.weight".into(), WeightKind::Matrix, w));
            }
        }
        out
    }

    /// Points a tied output projection at the (possibly replaced) embedding, so both
    /// share one tensor and one gradient.
    pub fn retie(&mut self) -> Result<()> {
        if self.cfg.tie_embeddings {
            self.output.weight = Weight::Dense(self.embed.t()?);
        }
        Ok(())
    }

    /// Adds a LoRA adapter to every linear layer named in `targets` (`q_proj`, ...);
    /// `init(name, in, out)` returns A (in, rank) and B (rank, out). Returns the
    /// adapters' names (`model.layers.0.self_attn.q_proj`) in order.
    pub fn add_lora(
        &mut self,
        targets: &[String],
        scale: f64,
        dropout: f32,
        mut init: impl FnMut(&str, usize, usize) -> Result<(Tensor, Tensor)>,
    ) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (name, lin) in l.linears_mut() {
                if !targets.iter().any(|t| t == name) {
                    continue;
                }
                let module = module_of(name);
                let full = format!("model.layers.{i}.{module}.{name}");
                let (a, b) = init(&full, lin.in_dim()?, lin.out_dim()?)?;
                lin.lora = Some(Lora {
                    a,
                    b,
                    scale,
                    dropout,
                });
                names.push(full);
            }
        }
        Ok(names)
    }

    /// The adapters by name (see [`Model::add_lora`]).
    pub fn loras_mut(&mut self) -> Vec<(String, &mut Lora)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            for (name, lin) in l.linears_mut() {
                let module = module_of(name);
                if let Some(lora) = &mut lin.lora {
                    out.push((format!("model.layers.{i}.{module}.{name}"), lora));
                }
            }
        }
        out
    }

    /// Folds every adapter into its dense weight (`W += scale * A B`) and drops it.
    pub fn merge_lora(&mut self) -> Result<()> {
        for l in &mut self.layers {
            for (_, lin) in l.linears_mut() {
                if let (Some(lora), Weight::Dense(w)) = (lin.lora.take(), &mut lin.weight) {
                    let delta = (lora.a.matmul(&lora.b)? * lora.scale)?;
                    *w = (w.detach() + delta.detach())?;
                }
            }
        }
        Ok(())
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
        let x = self.hidden(tokens, positions, pad, Some(cache))?;
        let last = x.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?;
        self.logits(&last)
    }

    /// Final hidden states (after the last norm) of every position, batch x len x
    /// hidden, without a cache: the training forward pass. Padding rows are zero.
    pub fn hidden_states(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        pad: &[usize],
    ) -> Result<Tensor> {
        self.hidden(tokens, positions, pad, None)
    }

    /// Attention probabilities of one sequence, one tensor per layer, each
    /// heads x len x len (row i: how much position i attends to each position; rows sum
    /// to 1, zero above the diagonal). For attention-to-instruction analyses.
    pub fn attention_maps(&self, ids: &[u32]) -> Result<Vec<Tensor>> {
        *self.captured.lock().expect("capture lock") = Some(Vec::new());
        let p = pad_prompts(&[ids.to_vec()], 0, &self.device)?;
        let result = self.hidden(&p.tokens, &p.positions, &p.pad, None);
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
        self.output.forward(rows, None)
    }

    fn hidden(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        pad: &[usize],
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
        let d = self.dropout.as_ref();
        let train = self.training;
        for (i, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| &mut c.kv[i]);
            let h = self.attention(
                layer,
                &layer.attn_norm.forward(&x, train)?,
                &cos,
                &sin,
                pad,
                kv,
            )?;
            x = (x + h)?;
            let h = layer.mlp.forward(&layer.ffn_norm.forward(&x, train)?, d)?;
            x = (x + h)?;
        }
        self.norm.forward(&x, train)
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        match (self.training, self.cfg.rope_interleaved) {
            (false, true) => candle_nn::rotary_emb::rope_i(x, cos, sin),
            (false, false) => candle_nn::rotary_emb::rope(x, cos, sin),
            (true, interleaved) => rope_differentiable(x, cos, sin, interleaved),
        }
    }

    /// Projections run batched; the attention itself runs per sequence over that
    /// sequence's own (unpadded) keys, so a sequence computes exactly what it would
    /// alone, whatever else shares the batch.
    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        pad: &[usize],
        kv: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim);
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let d = self.dropout.as_ref();
        let q = self.rope(&heads(layer.attn.q.forward(x, d)?, nh)?, cos, sin)?;
        let k = self.rope(&heads(layer.attn.k.forward(x, d)?, nkv)?, cos, sin)?;
        let v = heads(layer.attn.v.forward(x, d)?, nkv)?;
        let (k, v) = match kv {
            Some(kv) => kv.append(&k, &v)?,
            None => (k, v),
        };
        let kv_len = k.dim(2)?;
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
            let mut att = (qs.matmul(&ks.t()?)? / (hd as f64).sqrt())?;
            if n_q > 1 {
                let mask = causal_mask(n_q, n_k, x.device())?.repeat((rep, 1))?;
                att = att.broadcast_add(&mask)?;
            }
            let att = if self.training {
                candle_nn::ops::softmax(&att, D::Minus1)?
            } else {
                candle_nn::ops::softmax_last_dim(&att)?
            };
            if let Some(maps) = self.captured.lock().expect("capture lock").as_mut() {
                maps.push(att.reshape((nh, n_q, n_k))?.detach());
            }
            let y = att.matmul(&vs.contiguous()?)?.reshape((1, nh, n_q, hd))?;
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
        layer.attn.o.forward(&y, d)
    }
}

/// The Hugging Face sub-module that holds a linear layer.
pub fn module_of(linear: &str) -> &'static str {
    match linear {
        "q_proj" | "k_proj" | "v_proj" | "o_proj" => "self_attn",
        _ => "mlp",
    }
}

impl Layer {
    fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        linears(&mut self.attn, &mut self.mlp)
    }
}

fn linears<'a>(a: &'a mut Attention, m: &'a mut Mlp) -> [(&'static str, &'a mut Linear); 7] {
    [
        ("q_proj", &mut a.q),
        ("k_proj", &mut a.k),
        ("v_proj", &mut a.v),
        ("o_proj", &mut a.o),
        ("gate_proj", &mut m.gate),
        ("up_proj", &mut m.up),
        ("down_proj", &mut m.down),
    ]
}

/// Rotary embedding from ordinary tensor ops (candle's fused kernels have no
/// backward pass); `cos`/`sin` are batch x len x head_dim/2 (per-sequence positions).
fn rope_differentiable(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    interleaved: bool,
) -> Result<Tensor> {
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

/// Queries (the last `q` of `k` positions) see only earlier and equal positions.
fn causal_mask(q: usize, k: usize, device: &Device) -> Result<Tensor> {
    let offset = k - q;
    let mask: Vec<f32> = (0..q)
        .flat_map(|i| (0..k).map(move |j| if j <= i + offset { 0.0 } else { MASKED }))
        .collect();
    Tensor::from_vec(mask, (q, k), device)
}

/// Additive mask value for positions a query must not see (exp underflows to 0).
const MASKED: f32 = -1e9;

/// Left-padded batch inputs for a set of ragged token sequences.
pub struct PaddedBatch {
    pub tokens: Tensor,
    pub positions: Tensor,
    /// Padding length of each sequence.
    pub pad: Vec<usize>,
}

/// Builds the prompt step: sequences left-padded to a common length.
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

/// Logits as plain vectors, one per sequence.
pub fn logits_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    logits.to_dtype(DType::F32)?.to_vec2::<f32>()
}

#[cfg(test)]
pub(crate) mod tests;
