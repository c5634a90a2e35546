//! Every weight by its Hugging Face name, and LoRA adapters on the linear layers:
//! what trainers and converters work with.

use super::linear::{Lora, Weight};
use super::*;

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

impl Model {
    /// Every weight by its Hugging Face name, for trainers and converters. A tied
    /// output projection is not listed (it is the embedding); after replacing
    /// `model.embed_tokens.weight`, call [`Model::retie`]. Matrices held quantized
    /// ([`Weights::Quantized`]) are not listed, nor are LoRA adapters ([`Model::loras_mut`]).
    /// The few-row quantized blocks are dropped: the caller may change the weights (so
    /// inference afterwards runs on the f32 weights only).
    pub fn weights_mut(&mut self) -> Vec<(String, WeightKind, &mut Tensor)> {
        self.drop_blocks();
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
            self.output.blocks = None;
        }
        Ok(())
    }

    /// Forgets the file's quantized blocks, so every product uses the dense weights.
    pub fn drop_blocks(&mut self) {
        for l in &mut self.layers {
            for (_, lin) in l.linears_mut() {
                lin.blocks = None;
            }
        }
        self.output.blocks = None;
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
    ///
    /// # Errors
    ///
    /// An adapter on a weight held only quantized ([`super::Weights::Quantized`]) cannot
    /// be merged: that is an error, and the adapter stays where it was.
    pub fn merge_lora(&mut self) -> Result<()> {
        for l in &mut self.layers {
            for (_, lin) in l.linears_mut() {
                let Some(lora) = lin.lora.take() else {
                    continue;
                };
                let Weight::Dense(w) = &mut lin.weight else {
                    // Never drop an adapter silently: a quantized weight cannot take it.
                    lin.lora = Some(lora);
                    candle_core::bail!("a LoRA adapter cannot be merged into quantized weights");
                };
                let delta = (lora.a.matmul(&lora.b)? * lora.scale)?;
                *w = (w.detach() + delta.detach())?;
                lin.blocks = None;
            }
        }
        Ok(())
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
