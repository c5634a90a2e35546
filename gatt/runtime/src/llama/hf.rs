//! The Hugging Face layout of the same model: `config.json` and safetensors tensors
//! named `model.layers.N.self_attn.q_proj.weight`, in (out, in) orientation.
//!
//! llama.cpp permutes the rows of llama's query and key projections when it writes a
//! GGUF, so that rotating interleaved pairs equals Hugging Face's rotate-half; the model
//! keeps the GGUF order, and these converters apply or undo that permutation. qwen2
//! GGUFs are not permuted.

use super::{Config, Model, SourceTensor, TensorSource, WeightKind};
use candle_core::{DType, Device, Result, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// `model.layers.N.self_attn.q_proj.weight` -> `blk.N.attn_q.weight`, and so on.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let part = match rest {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}"))
}

/// Heads whose rows llama.cpp permutes for a tensor, by Hugging Face name.
/// Works on a weight's name (`...q_proj.weight`) or a module's (`...q_proj`, for the
/// output rows of a LoRA adapter).
pub fn permuted_heads(cfg: &Config, hf: &str) -> Option<usize> {
    if !cfg.rope_interleaved {
        return None;
    }
    let module = hf.strip_suffix(".weight").unwrap_or(hf);
    if module.ends_with("self_attn.q_proj") {
        Some(cfg.n_head)
    } else if module.ends_with("self_attn.k_proj") {
        Some(cfg.n_kv_head)
    } else {
        None
    }
}

/// Hugging Face row order -> GGUF row order (llama.cpp's `permute`), rows = heads x hd.
pub fn to_gguf_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let rest: usize = dims[1..].iter().product();
    let hd = dims[0] / heads;
    w.reshape((heads, 2, hd / 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// GGUF row order -> Hugging Face row order (inverse of [`to_gguf_rows`]).
pub fn to_hf_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let rest: usize = dims[1..].iter().product();
    let hd = dims[0] / heads;
    w.reshape((heads, hd / 2, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// Reads `config.json` of a llama or qwen2 model (`transformers` 4 or 5 layout).
///
/// # Errors
///
/// Another `model_type`, scaled rotary embeddings (`rope_scaling`, a `rope_type` other
/// than `default`), a missing number, or heads that do not divide `hidden_size`.
pub fn config_from_json(v: &Value) -> Result<Config> {
    let arch = v["model_type"].as_str().unwrap_or_default().to_string();
    let rope_interleaved = match arch.as_str() {
        "llama" => true,
        "qwen2" => false,
        other => candle_core::bail!(
            "unsupported model_type `{other}` in config.json (supported: llama, qwen2)"
        ),
    };
    // transformers 5 writes `rope_parameters: {rope_theta, rope_type}`; older versions
    // `rope_theta` and `rope_scaling`.
    let rope = &v["rope_parameters"];
    let scaled =
        !v["rope_scaling"].is_null() || rope["rope_type"].as_str().is_some_and(|t| t != "default");
    if scaled {
        candle_core::bail!(
            "config.json: scaled rotary embeddings (rope_scaling) are not supported"
        );
    }
    let rope_theta = v["rope_theta"].as_f64().or(rope["rope_theta"].as_f64());
    let num = |k: &str| -> Result<usize> {
        v[k].as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| candle_core::Error::Msg(format!("config.json has no number `{k}`")))
    };
    let hidden = num("hidden_size")?;
    let n_head = num("num_attention_heads")?;
    let n_kv_head = num("num_key_value_heads").unwrap_or(n_head);
    if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
        candle_core::bail!(
            "config.json: {n_head} attention heads and {n_kv_head} key/value heads do not fit"
        );
    }
    let head_dim = num("head_dim").unwrap_or(hidden / n_head);
    if num("vocab_size")? > 1 << 24 || num("intermediate_size")? > 1 << 20 {
        candle_core::bail!("config.json: vocab_size or intermediate_size is beyond any real model");
    }
    if head_dim * n_head != hidden {
        candle_core::bail!("config.json: head_dim x heads != hidden_size is not supported");
    }
    let cfg = Config {
        n_layer: num("num_hidden_layers")?,
        n_head,
        n_kv_head,
        hidden,
        head_dim,
        rope_base: rope_theta.unwrap_or(10_000.0) as f32,
        rms_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        context_length: num("max_position_embeddings")?,
        rope_interleaved,
        arch,
        vocab: num("vocab_size")?,
        intermediate: num("intermediate_size")?,
        tie_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(false),
    };
    cfg.check(|k| format!("config.json `{}`", k.hf))?;
    Ok(cfg)
}

/// `config.json` for a model, as `transformers` reads it.
pub fn config_to_json(cfg: &Config, bos: Option<u32>, eos: Option<u32>) -> Value {
    let (class, extra) = match cfg.arch.as_str() {
        "qwen2" => ("Qwen2ForCausalLM", json!({"use_sliding_window": false})),
        _ => (
            "LlamaForCausalLM",
            json!({"attention_bias": false, "mlp_bias": false, "pretraining_tp": 1}),
        ),
    };
    let mut v = json!({
        "architectures": [class],
        "model_type": cfg.arch,
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.intermediate,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "num_hidden_layers": cfg.n_layer,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_base,
        "rope_scaling": null,
        "rope_parameters": {"rope_theta": cfg.rope_base, "rope_type": "default"},
        "tie_word_embeddings": cfg.tie_embeddings,
        "vocab_size": cfg.vocab,
        "torch_dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

/// Tensors of a Hugging Face folder, served under their GGUF names.
struct HfSource<'a> {
    cfg: &'a Config,
    tensors: HashMap<String, Tensor>,
}

impl TensorSource for HfSource<'_> {
    fn get(&mut self, gguf: &str) -> Result<Option<SourceTensor>> {
        let Some((hf, t)) = self
            .tensors
            .iter()
            .find(|(k, _)| gguf_name(k).as_deref() == Some(gguf))
        else {
            return Ok(None);
        };
        let t = t.to_dtype(DType::F32)?;
        let t = match permuted_heads(self.cfg, hf) {
            Some(h) => to_gguf_rows(&t, h)?,
            None => t,
        };
        Ok(Some(SourceTensor::Dense(t)))
    }
}

/// Loads the weights of a Hugging Face folder (every `*.safetensors` file in it).
pub fn load_dir(dir: &Path, device: &Device) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", cfg_path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", cfg_path.display())))?;
    let cfg = config_from_json(&v)?;
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        candle_core::bail!("{}: no *.safetensors file", dir.display());
    }
    let mut tensors = HashMap::new();
    for f in &files {
        tensors.extend(candle_core::safetensors::load(f, device)?);
    }
    let vocab = cfg.vocab;
    let mut src = HfSource { cfg: &cfg, tensors };
    let model = Model::load(cfg.clone(), &mut src, device, super::Weights::Dense)?;
    if model.cfg.vocab != vocab {
        candle_core::bail!(
            "{}: embedding has {} rows but config.json says vocab_size {vocab}",
            dir.display(),
            model.cfg.vocab
        );
    }
    Ok(model)
}

/// Every weight in Hugging Face layout (contiguous f32, (out, in) matrices, q/k rows
/// un-permuted), by name: what [`Model::weights_mut`] lists, so adapters not merged and
/// matrices held quantized are left out, and a tied output projection is not written.
/// Drops the model's quantized blocks (see [`Model::weights_mut`]).
pub fn export_tensors(model: &mut Model) -> Result<HashMap<String, Tensor>> {
    let cfg = model.cfg.clone();
    let mut out = HashMap::new();
    for (name, kind, t) in model.weights_mut() {
        let t = t.detach();
        let t = match kind {
            WeightKind::Matrix => t.t()?.contiguous()?,
            _ => t.contiguous()?,
        };
        let t = match permuted_heads(&cfg, &name) {
            Some(h) => to_hf_rows(&t, h)?,
            None => t,
        };
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: Value) -> Value {
        let mut v = json!({
            "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "max_position_embeddings": 128,
            "vocab_size": 100, "intermediate_size": 96, "rms_norm_eps": 1e-5,
        });
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        v
    }

    #[test]
    fn rope_theta_is_read_from_either_transformers_layout() {
        let old = config_from_json(&cfg(json!({"rope_theta": 100000.0}))).unwrap();
        let new = config_from_json(&cfg(
            json!({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}),
        ))
        .unwrap();
        assert_eq!(old.rope_base, 100000.0);
        assert_eq!(new.rope_base, 100000.0);
        let scaled = cfg(json!({"rope_parameters": {"rope_theta": 1e4, "rope_type": "llama3"}}));
        assert!(config_from_json(&scaled).is_err());
        assert!(config_from_json(&cfg(json!({"model_type": "gpt2"}))).is_err());
        assert!(config_from_json(&cfg(json!({"num_attention_heads": 0}))).is_err());
    }

    #[test]
    fn row_permutations_are_inverse() {
        let w = Tensor::arange(0f32, 8.0 * 3.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let back = to_hf_rows(&to_gguf_rows(&w, 2).unwrap(), 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        // GGUF row h*D + 2p + s is HF row h*D + s*D/2 + p (D = 4 here).
        let g = to_gguf_rows(&w, 2).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(g[1][0], w.to_vec2::<f32>().unwrap()[2][0]);
    }
}
