//! Hyper-parameters of a llama-family model and the limits they are checked against.

use candle_core::quantized::gguf_file;
use candle_core::Result;

/// Hyper-parameters, read from the GGUF metadata (`{arch}.*` keys, [`Config::from_gguf`])
/// or a Hugging Face `config.json` ([`super::hf::config_from_json`]). Fields name their GGUF key /
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
