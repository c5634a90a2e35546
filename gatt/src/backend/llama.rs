//! A llama-family decoder (llama, qwen2) over quantized GGUF weights, with batched,
//! ragged decoding: prompts of different lengths are left-padded, each sequence has its
//! own rotary positions, and a padding mask keeps every sequence blind to the others'
//! padding. Same layout as candle-transformers' model files: config, layers, forward.

use candle_core::quantized::{gguf_file, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::Embedding;
use std::io::{Read, Seek};

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
        })
    }
}

struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
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

/// A linear layer, with an optional (dequantized) bias.
struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Quantized(q) => q.forward(x)?,
            // One matrix product for all rows of the batch: weights are read once.
            Weight::Dense(w) => {
                let dims = x.dims().to_vec();
                let k = dims[dims.len() - 1];
                let rows = x.elem_count() / k;
                let y = x.reshape((rows, k))?.matmul(w)?;
                let mut out = dims;
                *out.last_mut().expect("at least one dim") = w.dim(1)?;
                y.reshape(out)?
            }
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
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
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate.forward(x)?)?;
        self.down.forward(&(gate * self.up.forward(x)?)?)
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
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
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
    pub fn from_gguf<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        weights: Weights,
    ) -> Result<Self> {
        let cfg = Config::from_gguf(ct)?;
        let mut tensor = |name: &str| ct.tensor(reader, name, device);
        let linear = |w: QTensor, b: Option<QTensor>| -> Result<Linear> {
            let weight = match weights {
                // Stored transposed (in x out) so the product reads it contiguously.
                Weights::Dense => Weight::Dense(w.dequantize(device)?.t()?.contiguous()?),
                Weights::Quantized => Weight::Quantized(QMatMul::from_qtensor(w)?),
            };
            Ok(Linear {
                weight,
                bias: b.map(|b| b.dequantize(device)).transpose()?,
            })
        };
        let norm = |w: QTensor| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: w.dequantize(device)?,
                eps: cfg.rms_eps as f32,
            })
        };
        let embed_q = tensor("token_embd.weight")?;
        let embed = Embedding::new(embed_q.dequantize(device)?, cfg.hidden);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            let mut opt = |n: &str| tensor(&format!("{p}.{n}")).ok();
            let (bq, bk, bv) = (opt("attn_q.bias"), opt("attn_k.bias"), opt("attn_v.bias"));
            let mut t = |n: &str| tensor(&format!("{p}.{n}"));
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
        let norm_out = norm(tensor("output_norm.weight")?)?;
        // Small models tie the output projection to the embeddings.
        let output = match tensor("output.weight") {
            Ok(w) => linear(w, None)?,
            Err(_) => linear(embed_q, None)?,
        };
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
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
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
        let (b, t) = tokens.dims2()?;
        let half = self.cfg.head_dim / 2;
        let flat = positions.flatten_all()?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, t, half))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, t, half))?;
        let mut x = self.embed.forward(tokens)?;
        for (layer, kv) in self.layers.iter().zip(cache.kv.iter_mut()) {
            let h = self.attention(layer, &layer.attn_norm.forward(&x)?, &cos, &sin, pad, kv)?;
            x = (x + h)?;
            let h = layer.mlp.forward(&layer.ffn_norm.forward(&x)?)?;
            x = (x + h)?;
        }
        let last = x.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?;
        self.output.forward(&self.norm.forward(&last)?)
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if self.cfg.rope_interleaved {
            candle_nn::rotary_emb::rope_i(x, cos, sin)
        } else {
            candle_nn::rotary_emb::rope(x, cos, sin)
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
        kv: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim);
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = self.rope(&heads(layer.attn.q.forward(x)?, nh)?, cos, sin)?;
        let k = self.rope(&heads(layer.attn.k.forward(x)?, nkv)?, cos, sin)?;
        let v = heads(layer.attn.v.forward(x)?, nkv)?;
        let (k, v) = kv.append(&k, &v)?;
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
            let y = candle_nn::ops::softmax_last_dim(&att)?
                .matmul(&vs.contiguous()?)?
                .reshape((1, nh, n_q, hd))?;
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
        layer.attn.o.forward(&y)
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
mod tests;
