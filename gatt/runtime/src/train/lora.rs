//! LoRA adapters: which layers get one, how they start, and how they are saved in the
//! layout Python's `peft` loads (`adapter_config.json`, `adapter_model.safetensors`
//! with `base_model.model.<module>.lora_A.weight` (rank x in) and `lora_B.weight`
//! (out x rank), Hugging Face row order).

use crate::llama::{hf, module_of, Model, LINEAR_NAMES};
use candle_core::{Device, Tensor};
use gatt::dataset::{write_dir, write_json};
use gatt::seed::{self, Stream};
use gatt::{Error, Result};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// LoRA settings; in `adapter_config.json` they are peft's `r`, `lora_alpha`,
/// `lora_dropout` and `target_modules`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    /// Rank r of every adapter: A is (in, r), B is (r, out).
    pub rank: usize,
    /// peft's `lora_alpha`: adapter outputs are scaled by alpha / r.
    pub alpha: f64,
    /// Dropout probability on an adapter's input while training, in [0, 1).
    pub dropout: f32,
    /// Linear layers by Hugging Face name: q_proj, k_proj, v_proj, o_proj, gate_proj,
    /// up_proj, down_proj.
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    /// Rank 16, alpha 32, dropout 0.05, on every linear layer ([`LINEAR_NAMES`]).
    fn default() -> Self {
        LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.05,
            targets: LINEAR_NAMES.iter().map(|n| n.to_string()).collect(),
        }
    }
}

/// What is wrong with a [`LoraConfig`], by setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoraConfigError {
    /// A rank of 0.
    #[error("the LoRA rank must be at least 1")]
    Rank,
    /// A dropout probability outside [0, 1).
    #[error("the LoRA dropout must be in [0, 1)")]
    Dropout,
    /// An empty list of target layers.
    #[error("no target layer named")]
    NoTargets,
    /// A target that is not one of [`LINEAR_NAMES`].
    #[error("unknown target layer `{0}` (expected some of {names})", names = LINEAR_NAMES.join(", "))]
    UnknownTarget(String),
}

impl LoraConfig {
    /// peft's scaling: alpha / rank.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// The first setting that is out of range, if any.
    ///
    /// # Errors
    ///
    /// A rank of 0, a dropout outside [0, 1), no target, or an unknown target.
    pub fn check(&self) -> Result<(), LoraConfigError> {
        if self.rank == 0 {
            return Err(LoraConfigError::Rank);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(LoraConfigError::Dropout);
        }
        if self.targets.is_empty() {
            return Err(LoraConfigError::NoTargets);
        }
        match self
            .targets
            .iter()
            .find(|t| !LINEAR_NAMES.contains(&t.as_str()))
        {
            Some(t) => Err(LoraConfigError::UnknownTarget(t.clone())),
            None => Ok(()),
        }
    }

    /// [`LoraConfig::check`] as an input error.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|e| Error::input(e.to_string()))
    }
}

/// Adds fresh adapters to `model`: A uniform in +-1/sqrt(in) (peft's Kaiming default),
/// B zero, so training starts exactly at the base model. Seeded per layer name.
pub fn attach(
    model: &mut Model,
    cfg: &LoraConfig,
    seed: u64,
    device: &Device,
) -> Result<Vec<String>> {
    model
        .add_lora(
            &cfg.targets,
            cfg.scale(),
            cfg.dropout,
            |name, n_in, n_out| {
                // Stream: LoraInit (parent: the training seed, index: the layer's name).
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed::derive(
                    seed,
                    Stream::LoraInit,
                    seed::label(name),
                ));
                let bound = 1.0 / (n_in as f32).sqrt();
                let a: Vec<f32> = (0..n_in * cfg.rank)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                Ok((
                    Tensor::from_vec(a, (n_in, cfg.rank), device)?,
                    Tensor::zeros((cfg.rank, n_out), candle_core::DType::F32, device)?,
                ))
            },
        )
        .map_err(|e| Error::runtime(format!("adding LoRA adapters: {e}")))
}

fn peft_key(name: &str, ab: &str) -> String {
    format!("base_model.model.{name}.lora_{ab}.weight")
}

/// Writes the adapters of `model` as a peft adapter folder (atomically): `lora_A` as
/// (rank, in), `lora_B` as (out, rank) with Hugging Face's q/k row order, and an
/// `adapter_config.json` naming `base` as `base_model_name_or_path`.
pub fn save_peft(model: &mut Model, cfg: &LoraConfig, base: &str, out: &Path) -> Result<()> {
    let mut tensors = HashMap::new();
    let names: Vec<String> = model.loras_mut().into_iter().map(|(n, _)| n).collect();
    let heads: Vec<Option<usize>> = names
        .iter()
        .map(|n| hf::permuted_heads(&model.cfg, n))
        .collect();
    let conv = |e: candle_core::Error| Error::runtime(format!("exporting the adapter: {e}"));
    for ((name, lora), heads) in model.loras_mut().into_iter().zip(heads) {
        let a = lora
            .a
            .detach()
            .t()
            .map_err(conv)?
            .contiguous()
            .map_err(conv)?;
        let mut b = lora
            .b
            .detach()
            .t()
            .map_err(conv)?
            .contiguous()
            .map_err(conv)?;
        if let Some(h) = heads {
            b = hf::to_hf_rows(&b, h).map_err(conv)?;
        }
        tensors.insert(peft_key(&name, "A"), a);
        tensors.insert(peft_key(&name, "B"), b);
    }
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": cfg.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_rslora": false,
        "use_dora": false,
    });
    write_dir(out, |dir| {
        crate::safetensors_file::save(&tensors, &dir.join("adapter_model.safetensors"))?;
        write_json(&dir.join("adapter_config.json"), &config)
    })
}

/// Reads a peft adapter folder written by [`save_peft`] (or by peft itself, for
/// llama/qwen2 LoRA without biases) and attaches it to `model`, without dropout. Reads
/// `r`, `lora_alpha` and `target_modules` (a list of layer names, or one name) and
/// scales by `lora_alpha / r`; other settings (`use_rslora`, `rank_pattern`,
/// `layers_to_transform`, ...) are not read.
///
/// # Errors
///
/// An input error for a missing or invalid config, a missing tensor, or one whose shape
/// does not fit its layer.
pub fn load_peft(model: &mut Model, dir: &Path, device: &Device) -> Result<LoraConfig> {
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, "read", e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::input(format!("{}: invalid JSON: {e}", cfg_path.display())))?;
    let field = |k: &str| {
        v.get(k)
            .ok_or_else(|| Error::input(format!("{}: missing `{k}`", cfg_path.display())))
    };
    let targets: Vec<String> = match field("target_modules")? {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        _ => vec![],
    };
    let cfg = LoraConfig {
        rank: field("r")?.as_u64().unwrap_or(0) as usize,
        alpha: field("lora_alpha")?.as_f64().unwrap_or(0.0),
        dropout: 0.0,
        targets,
    };
    cfg.validate().map_err(|e| e.context(cfg_path.display()))?;
    refuse_unread_settings(&v).map_err(|e| e.context(cfg_path.display()))?;
    // peft's rank-stabilized LoRA scales by alpha / sqrt(r) instead of alpha / r.
    let scale = if v.get("use_rslora").and_then(|x| x.as_bool()) == Some(true) {
        cfg.alpha / (cfg.rank as f64).sqrt()
    } else {
        cfg.scale()
    };
    let st = dir.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&st, device)
        .map_err(|e| Error::input(format!("{}: {e}", st.display())))?;
    let mut wanted = Vec::new();
    for i in 0..model.cfg.n_layer {
        for t in &cfg.targets {
            let name = format!("model.layers.{i}.{}.{t}", module_of(t));
            wanted.push((hf::permuted_heads(&model.cfg, &name), name));
        }
    }
    let mut found = HashMap::new();
    for (heads, name) in wanted {
        let get = |ab: &str| {
            tensors.get(&peft_key(&name, ab)).cloned().ok_or_else(|| {
                Error::input(format!(
                    "{}: no tensor `{}`",
                    st.display(),
                    peft_key(&name, ab)
                ))
            })
        };
        let conv = |e: candle_core::Error| Error::input(format!("{}: {name}: {e}", st.display()));
        let a = get("A")?.to_dtype(candle_core::DType::F32).map_err(conv)?;
        let mut b = get("B")?.to_dtype(candle_core::DType::F32).map_err(conv)?;
        if let Some(h) = heads {
            b = hf::to_gguf_rows(&b, h).map_err(conv)?;
        }
        let pair = (
            a.t().map_err(conv)?.contiguous().map_err(conv)?,
            b.t().map_err(conv)?.contiguous().map_err(conv)?,
        );
        found.insert(name, pair);
    }
    model
        .add_lora(&cfg.targets, scale, 0.0, |name, n_in, n_out| {
            let (a, b) = found.remove(name).expect("every wanted adapter was read");
            if a.dims() != [n_in, cfg.rank] || b.dims() != [cfg.rank, n_out] {
                candle_core::bail!(
                    "{name}: adapter shapes {:?}/{:?} do not fit the layer ({n_in} -> {n_out}, rank {})",
                    a.dims(),
                    b.dims(),
                    cfg.rank
                );
            }
            Ok((a, b))
        })
        .map_err(|e| Error::input(format!("{}: {e}", st.display())))?;
    Ok(cfg)
}

/// Refuses `adapter_config.json` settings that change what the adapter computes and that
/// [`load_peft`] does not implement, rather than loading a different model silently:
/// DoRA, per-module ranks or alphas, adapters on some layers only, trained biases,
/// whole modules saved beside the adapter, biases on the B matrices (`lora_bias`), and
/// transposed (`fan_in_fan_out`) weights.
fn refuse_unread_settings(v: &serde_json::Value) -> Result<()> {
    use serde_json::Value;
    let set = |k: &str| match v.get(k) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => k != "bias" || s != "none",
        Some(_) => true,
    };
    let unread: Vec<&str> = [
        "use_dora",
        "rank_pattern",
        "alpha_pattern",
        "layers_to_transform",
        "layers_pattern",
        "bias",
        "modules_to_save",
        "fan_in_fan_out",
        "lora_bias",
    ]
    .into_iter()
    .filter(|k| set(k))
    .collect();
    if unread.is_empty() {
        return Ok(());
    }
    Err(Error::input(format!(
        "the adapter uses settings gatt cannot apply ({}); it would compute another model. \
         Merge it with peft (`merge_and_unload`) and load the merged folder instead",
        unread.join(", ")
    )))
}
