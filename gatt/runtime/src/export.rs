//! Writes a model as a Hugging Face folder (config.json, model.safetensors,
//! tokenizer.json, tokenizer_config.json, generation_config.json) that `transformers`,
//! peft, vLLM and this toolkit's model loader all load. Written into a temporary folder and
//! renamed into place, so a crash never leaves a half-written model.

use crate::llama::{hf, Model};
use gatt::dataset::{write_json, write_user_dir};
use gatt::model::{ChatFormat, ModelSource};
use gatt::{Error, Result};
use serde_json::json;
use std::path::Path;

/// Tokenizer files copied verbatim from a Hugging Face source folder.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// Writes `model` with the tokenizer and template of `source` into `out`: an absent or
/// empty folder, or (with `overwrite`) a folder whose files of the same names are
/// replaced and others kept ([`gatt::dataset::write_user_dir`]). Only dense weights are written ([`hf::export_tensors`]): merge
/// LoRA adapters first ([`Model::merge_lora`]). From a GGUF source the tokenizer files
/// are written from `format` (`tokenizer.json`, a `tokenizer_config.json` holding the
/// chat template, `generation_config.json` with every end-of-turn id); from a Hugging
/// Face source they are copied.
///
/// # Errors
///
/// An input error when `out` is a file, or holds files and `overwrite` is not set; a
/// runtime or I/O error when a tensor or file cannot be written. `out` is then left as it
/// was.
pub fn write(
    model: &mut Model,
    source: &ModelSource,
    format: &ChatFormat,
    out: &Path,
    overwrite: bool,
) -> Result<()> {
    write_user_dir(out, overwrite, |dir| fill(model, source, format, dir))
}

fn fill(model: &mut Model, source: &ModelSource, format: &ChatFormat, dir: &Path) -> Result<()> {
    let tok_id = |t: &str| {
        (!t.is_empty())
            .then(|| format.tokenizer.token_to_id(t))
            .flatten()
    };
    let bos = tok_id(&format.template.bos_token);
    let eos = tok_id(&format.template.eos_token).or(format.stop_ids.first().copied());
    let config = hf::config_to_json(&model.cfg, bos, eos);
    write_json(&dir.join("config.json"), &config)?;
    let tensors =
        hf::export_tensors(model).map_err(|e| Error::runtime(format!("exporting weights: {e}")))?;
    let st = dir.join("model.safetensors");
    crate::safetensors_file::save(&tensors, &st)?;
    match source {
        ModelSource::HfDir(src) => {
            for f in TOKENIZER_FILES {
                let from = src.join(f);
                if from.exists() {
                    std::fs::copy(&from, dir.join(f)).map_err(|e| Error::io(&from, "copy", e))?;
                }
            }
        }
        ModelSource::Gguf(_) => {
            let path = dir.join("tokenizer.json");
            format
                .tokenizer
                .save(&path, false)
                .map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
            let t = &format.template;
            write_json(
                &dir.join("tokenizer_config.json"),
                &json!({
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "chat_template": t.source,
                    "bos_token": (!t.bos_token.is_empty()).then_some(&t.bos_token),
                    "eos_token": (!t.eos_token.is_empty()).then_some(&t.eos_token),
                    "pad_token": (!t.eos_token.is_empty()).then_some(&t.eos_token),
                    "model_max_length": model.cfg.context_length,
                    "clean_up_tokenization_spaces": false,
                }),
            )?;
            write_json(
                &dir.join("generation_config.json"),
                &json!({"bos_token_id": bos, "eos_token_id": format.stop_ids}),
            )?;
        }
    }
    Ok(())
}
