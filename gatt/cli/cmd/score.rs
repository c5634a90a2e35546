//! `gatt score`: how likely a model finds given replies (NLL and perplexity).

use super::backend::model_source;
use super::train::inspect_hint;
use crate::out::outln;
use crate::progress;
use gatt::model::DEFAULT_MODEL;
use gatt::{Error, Result};
use gatt_runtime::train::score::score;
use std::path::PathBuf;

/// Score given replies: the negative log-likelihood a model assigns to the loss tokens of
/// masked samples (labels other than -100), per sample and in all, with the perplexity
/// exp(NLL per token).
///
/// This is the training loss without training. With GAtt masks it scores each dialogue's
/// final reply given everything before it, so scoring held-out reference answers under a
/// base model and under a fine-tune shows what the fine-tune cost in general quality
/// (lower is better; compare runs on the same file only).
///
/// Examples:
///   gatt mask --model default --input templates/reference/general_qa.jsonl --out qa.parquet
///   gatt score --data qa.parquet --model default
///   gatt score --data qa.parquet --model default --adapter tune1/adapter --out tuned.json
///   gatt score --data qa.parquet --model tune1/merged
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Masked samples (.parquet or .jsonl with input_ids and labels), masked with this
    /// model's tokenizer and chat template.
    #[arg(long)]
    pub data: PathBuf,
    /// The model: `default`, a .gguf file (dequantized to f32, as training reads it) or
    /// a Hugging Face folder (e.g. from `gatt train merge`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A LoRA adapter folder (peft layout, e.g. a `gatt train` run's adapter/) applied
    /// to --model, which must be the adapter's base.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Token budget of a forward pass (samples in file order; a longer one runs alone).
    #[arg(long, default_value_t = 4096)]
    pub batch_tokens: usize,
    /// Write the scores as JSON: totals and one entry per sample (row, id, loss_tokens,
    /// nll_sum, nll_mean; NLL in nats). Written atomically.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// cpu, or cuda (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: Args) -> Result<()> {
    if a.batch_tokens == 0 {
        return Err(Error::input("--batch-tokens must be at least 1"));
    }
    let source = model_source("--model", &a.model)?;
    if let Some(out) = &a.out {
        let mut inputs = vec![
            ("--data", a.data.clone()),
            ("--model", source.path().to_path_buf()),
        ];
        if let Some(ad) = &a.adapter {
            inputs.push(("--adapter", ad.clone()));
        }
        super::refuse_overwriting("--out", out, &inputs)?;
    }
    let device = gatt_runtime::device(&a.device).map_err(|e| e.context("--device"))?;
    let format = source.chat_format().map_err(|e| e.context("--model"))?;
    super::check_samples_tokenizer(&a.data, &format.tokenizer)?;
    let mut model = gatt_runtime::load_model(&source, &device).map_err(|e| e.context("--model"))?;
    if let Some(ad) = &a.adapter {
        gatt_runtime::train::lora::load_peft(&mut model, ad, &device)
            .map_err(|e| e.context("--adapter"))?;
    }
    let bar = progress::bar(None, "samples scored");
    let scores = score(
        &model,
        &a.data,
        &format.stop_ids,
        a.batch_tokens,
        &device,
        |n| bar.set_position(n as u64),
    )
    .map_err(inspect_hint)?;
    bar.finish_and_clear();
    if let Some(out) = &a.out {
        let doc = serde_json::json!({
            "data": a.data,
            "model": source.path(),
            "adapter": a.adapter,
            "scores": scores,
        });
        gatt::dataset::write_json(out, &doc).map_err(|e| e.context("--out"))?;
    }
    outln!(
        "gatt score: {} samples ({} loss tokens{}): NLL {:.4} nats/token, perplexity {:.3}{}",
        scores.samples.len(),
        scores.loss_tokens,
        if scores.without_loss > 0 {
            format!("; {} without loss tokens left out", scores.without_loss)
        } else {
            String::new()
        },
        scores.nll_per_token,
        scores.perplexity,
        a.out.as_ref().map_or(String::new(), |o| format!(
            "; per sample in {}",
            o.display()
        )),
    )?;
    Ok(())
}
