//! Building the model from named tensors: a GGUF file, or (through [`super::hf`]) a
//! Hugging Face folder.

use super::linear::{Linear, Weight};
use super::*;
use crate::kernels::qmatvec::{QMatrix, QType};
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use std::io::{Read, Seek};

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
    /// The file's blocks, kept beside dense CPU weights for products of a few rows (the
    /// formats the few-row kernels read; others use the dense product only).
    fn blocks(&self, device: &Device, weights: Weights) -> Result<Option<QMatrix>> {
        let SourceTensor::Quantized(q) = self else {
            return Ok(None);
        };
        if weights != Weights::Dense || !device.is_cpu() {
            return Ok(None);
        }
        let qtype = match q.dtype() {
            GgmlDType::Q4_1 => QType::Q4_1,
            GgmlDType::Q8_0 => QType::Q8_0,
            _ => return Ok(None),
        };
        let (n_out, k) = q.shape().dims2()?;
        QMatrix::new(qtype, n_out, k, q.data()?.into_owned())
            .map(Some)
            .map_err(candle_core::Error::Msg)
    }

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
    /// Loads a model from a GGUF file: `ct` is its parsed header, `reader` the file
    /// itself. Tensors are found under llama.cpp's names (`token_embd.weight`,
    /// `blk.N.attn_q.weight`, ..., `output_norm.weight`, and `output.weight` unless the
    /// output projection is tied to the embedding); the q/k/v biases (qwen2) are
    /// optional. `weights` chooses how the matrices are held.
    ///
    /// # Errors
    ///
    /// What [`Config::from_gguf`] refuses, a missing tensor, or one candle cannot read
    /// or dequantize.
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
            let blocks = w.blocks(device, weights)?;
            let weight = match (weights, w) {
                (Weights::Quantized, SourceTensor::Quantized(q)) => {
                    Weight::Quantized(QMatMul::from_qtensor(q)?)
                }
                // Stored transposed (in x out) so the product reads it contiguously.
                (_, w) => Weight::Dense(w.dense(device)?.t()?.contiguous()?),
            };
            Ok(Linear {
                weight,
                blocks,
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
        let embed = required(src, "token_embd.weight")?;
        let embed_blocks = embed.blocks(device, weights)?;
        let embed = embed.dense(device)?;
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
                    blocks: embed_blocks,
                    bias: None,
                    lora: None,
                },
                true,
            ),
        };
        cfg.vocab = embed.dim(0)?;
        cfg.intermediate = layers.first().map_or(Ok(0), |l| l.mlp.gate.out_dim())?;
        cfg.tie_embeddings = tied;
        check_shapes(&cfg, &embed, &layers, &norm_out, &output)?;
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
            layer_grads: Default::default(),
            fused_layers: true,
        })
    }
}

/// Checks every tensor's shape against the hyper-parameters, so a model whose metadata
/// disagrees with its weights is refused at load, naming the tensor, rather than failing
/// (or computing nonsense) at generation.
fn check_shapes(
    cfg: &Config,
    embed: &Tensor,
    layers: &[Layer],
    norm_out: &RmsNorm,
    output: &Linear,
) -> Result<()> {
    let (h, q, kv) = (
        cfg.hidden,
        cfg.n_head * cfg.head_dim,
        cfg.n_kv_head * cfg.head_dim,
    );
    let (vocab, width) = embed.dims2()?;
    if width != h || vocab == 0 || vocab > 1 << 24 {
        candle_core::bail!(
            "tensor `token_embd.weight` is {vocab} x {width}; the metadata says {h} wide \
             (and a vocabulary of 1 to 2^24 tokens)"
        )
    }
    let linear = |name: String, l: &Linear, out: usize, inp: usize| -> Result<()> {
        let (o, i) = (l.out_dim()?, l.in_dim()?);
        if (o, i) != (out, inp) {
            candle_core::bail!("tensor `{name}` maps {i} to {o}; the metadata says {inp} to {out}")
        }
        Ok(())
    };
    let norm = |name: String, n: &RmsNorm| -> Result<()> {
        if n.weight.dims() != [h] {
            candle_core::bail!(
                "tensor `{name}` has shape {:?}; the metadata says [{h}]",
                n.weight.dims()
            )
        }
        Ok(())
    };
    let ff = cfg.intermediate;
    for (i, l) in layers.iter().enumerate() {
        let p = |n: &str| format!("blk.{i}.{n}");
        norm(p("attn_norm.weight"), &l.attn_norm)?;
        norm(p("ffn_norm.weight"), &l.ffn_norm)?;
        linear(p("attn_q.weight"), &l.attn.q, q, h)?;
        linear(p("attn_k.weight"), &l.attn.k, kv, h)?;
        linear(p("attn_v.weight"), &l.attn.v, kv, h)?;
        linear(p("attn_output.weight"), &l.attn.o, h, q)?;
        linear(p("ffn_gate.weight"), &l.mlp.gate, ff, h)?;
        linear(p("ffn_up.weight"), &l.mlp.up, ff, h)?;
        linear(p("ffn_down.weight"), &l.mlp.down, h, ff)?;
    }
    norm("output_norm.weight".into(), norm_out)?;
    linear("output.weight".into(), output, vocab, h)
}
