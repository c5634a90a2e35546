//! `gatt train`: fine-tune on masked samples (LoRA or full), and `gatt train merge`.

use super::backend::model_source;
use crate::out::outln;
use crate::progress;
use gatt::model::DEFAULT_MODEL;
use gatt::{Error, Result};
use gatt_runtime::train::lora::LoraConfigError;
use gatt_runtime::train::{self, LoraConfig, LossMean, Method, RunSpec, TrainOptions};
use std::path::PathBuf;

/// Fine-tune a model on GAtt masks (from `gatt mask` or `gatt synth --mask`).
///
/// The loss is cross-entropy on the tokens whose label is not -100, so with GAtt masks
/// the model learns only the final reply of each dialogue. A micro-batch holds samples of
/// similar length up to --batch-tokens (longest x count); each sample runs unpadded, so
/// no compute or loss goes to padding. The run folder
/// gets loss.jsonl, loss.html (the curve), train.json, a checkpoint after every
/// --save-every steps (an interrupted run continues with the same command plus
/// --resume), and at the end adapter/ (LoRA, in the layout Python's peft loads) or
/// model/ (full fine-tuning, a Hugging Face folder).
///
/// Examples:
///   gatt train --data run1/masked.parquet --out tune1
///   gatt train merge tune1 --out tune1/merged
///   gatt eval --model default --model tune1/merged --turns 12 --out cmp
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<TrainCommand>,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum TrainCommand {
    /// Fold a LoRA run's adapter into its base model and write a Hugging Face folder
    /// (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) that
    /// `gatt eval --model DIR`, `gatt generate --model DIR` and Python `transformers` load.
    Merge {
        /// The folder of a finished `gatt train` run.
        run: PathBuf,
        /// The folder to write: new or empty, unless --overwrite is given.
        #[arg(long, short)]
        out: PathBuf,
        /// Write into a folder that holds files: the files gatt writes are replaced,
        /// any others are kept.
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Masked samples (.parquet or .jsonl with input_ids and labels).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Model to start from: `default`, a .gguf file (dequantized to f32: quantized
    /// weights cannot be trained) or a Hugging Face folder (llama or qwen2).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Run folder.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// `lora` trains low-rank adapters (small, fast); `full` trains every weight.
    #[arg(long, default_value = "lora", value_parser = ["lora", "full"])]
    pub method: String,
    #[arg(long, default_value_t = LoraConfig::default().rank)]
    pub lora_r: usize,
    #[arg(long, default_value_t = LoraConfig::default().alpha)]
    pub lora_alpha: f64,
    /// Dropout on the adapters' input (peft's `lora_dropout`). At 0 each layer's adapter
    /// is merged into its weights for the step, one product instead of three (faster).
    #[arg(long, default_value_t = LoraConfig::default().dropout)]
    pub lora_dropout: f32,
    /// Layers that get adapters (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    pub targets: Vec<String>,
    /// Peak learning rate.
    #[arg(long, default_value_t = TrainOptions::default().lr)]
    pub lr: f64,
    /// Share of the steps spent warming the learning rate up (then cosine decay).
    #[arg(long, default_value_t = TrainOptions::default().warmup_ratio)]
    pub warmup_ratio: f64,
    /// The cosine decays to this share of the peak.
    #[arg(long, default_value_t = TrainOptions::default().min_lr_ratio)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    pub epochs: usize,
    /// Stop after N optimizer steps (the schedule spans N).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Token budget of a micro-batch (longest sample x samples).
    #[arg(long, default_value_t = TrainOptions::default().batch_tokens)]
    pub batch_tokens: usize,
    /// Run a micro-batch forward and backward in chunks of at most N tokens (whole
    /// samples; a longer sample alone), gradients summed: peak memory follows N, not
    /// --batch-tokens (BENCHMARKS.md). Loss and gradients are the same up to float
    /// rounding; with --lora-dropout above 0 the dropout masks drawn depend on the
    /// chunks, so resume with the same N for a bit-identical run.
    #[arg(long, value_name = "N", default_value_t = train::DEFAULT_CHUNK_TOKENS)]
    pub chunk_tokens: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = TrainOptions::default().grad_accum)]
    pub grad_accum: usize,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = TrainOptions::default().max_grad_norm)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = TrainOptions::default().adamw.weight_decay)]
    pub weight_decay: f64,
    /// `token`: mean over all loss tokens of a step (as Hugging Face trainers);
    /// `sample`: mean of each sample's mean, so long replies do not dominate.
    #[arg(long, value_enum, default_value_t = TrainOptions::default().loss_mean.into())]
    pub loss_mean: LossMeanArg,
    /// Skip samples longer than N tokens (default: the model's context length).
    #[arg(long, value_name = "N")]
    pub max_len: Option<usize>,
    #[arg(long, default_value_t = 50)]
    pub save_every: usize,
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    pub seed: u64,
    /// Continue the interrupted run in --out (same arguments).
    #[arg(long)]
    pub resume: bool,
    /// cpu, or cuda (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl TrainArgs {
    /// The training options these flags set, checked; an error names the flag at fault.
    fn options(&self) -> Result<TrainOptions> {
        let method = match self.method.as_str() {
            "full" => Method::Full,
            _ => Method::Lora(LoraConfig {
                rank: self.lora_r,
                alpha: self.lora_alpha,
                dropout: self.lora_dropout,
                targets: self.targets.clone(),
            }),
        };
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::input("--lr must be a positive number"));
        }
        if self.batch_tokens == 0 || self.grad_accum == 0 || self.epochs == 0 {
            return Err(Error::input(
                "--batch-tokens, --grad-accum and --epochs must be at least 1",
            ));
        }
        if self.chunk_tokens == 0 {
            return Err(Error::input("--chunk-tokens must be at least 1"));
        }
        if let Method::Lora(cfg) = &method {
            cfg.check().map_err(|e| {
                let flag = match e {
                    LoraConfigError::Rank => "--lora-r",
                    LoraConfigError::Dropout => "--lora-dropout",
                    LoraConfigError::NoTargets | LoraConfigError::UnknownTarget(_) => "--targets",
                };
                Error::input(format!("{flag}: {e}"))
            })?;
        }
        Ok(TrainOptions {
            method,
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            min_lr_ratio: self.min_lr_ratio,
            epochs: self.epochs,
            max_steps: self.max_steps,
            batch_tokens: self.batch_tokens,
            grad_accum: self.grad_accum,
            max_grad_norm: self.max_grad_norm,
            adamw: train::optim::AdamWConfig {
                weight_decay: self.weight_decay,
                ..Default::default()
            },
            loss_mean: self.loss_mean.into(),
            seed: self.seed,
        })
    }
}

pub fn run(args: Args) -> Result<()> {
    if let Some(TrainCommand::Merge {
        run,
        out,
        overwrite,
    }) = args.command
    {
        gatt::dataset::check_user_dir(&out, overwrite).map_err(|e| e.context("--out"))?;
        let device = gatt_runtime::device("cpu")?;
        train::merge(&run, &out, overwrite, &device)?;
        outln!(
            "gatt train merge: {} + adapter -> {}",
            run.display(),
            out.display()
        )?;
        return Ok(());
    }
    let a = args.train;
    let (Some(data), Some(out)) = (a.data.clone(), a.out.clone()) else {
        return Err(Error::input(
            "gatt train needs --data FILE and --out DIR (see `gatt train --help`)",
        ));
    };
    let opts = a.options()?;
    if !a.resume && train::holds_run(&out) {
        return Err(Error::input(format!(
            "{}: a run is already there; pass --resume to continue it or choose another --out",
            out.display()
        )));
    }
    let source = model_source("--model", &a.model)?;
    let tokenizer = source.tokenizer().map_err(|e| e.context("--model"))?;
    super::check_samples_tokenizer(&data, &tokenizer)?;
    let spec = RunSpec {
        data,
        model: a.model.clone(),
        out: out.clone(),
        opts,
        max_len: a.max_len,
        save_every: a.save_every,
        chunk_tokens: a.chunk_tokens,
        resume: a.resume,
    };
    let device = gatt_runtime::device(&a.device).map_err(|e| e.context("--device"))?;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let started = std::time::Instant::now();
    let mut tokens = 0usize;
    let summary = train::run(&spec, &device, |log| {
        let pb = bar.get_or_insert_with(|| {
            let pb = progress::bar(Some(log.total_steps as u64), "training steps");
            pb.set_position(log.step as u64 - 1);
            pb
        });
        tokens += log.tokens;
        pb.set_position(log.step as u64);
        pb.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s",
            log.loss,
            log.lr,
            tokens as f64 / started.elapsed().as_secs_f64()
        ));
    })
    .map_err(inspect_hint)?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    outln!(
        "gatt train: {} steps on {} samples ({} tokens, {} with loss) in {:.1}s; loss {} -> {}; {} in {}/{}",
        summary.steps,
        summary.examples,
        summary.tokens,
        summary.loss_tokens,
        summary.seconds,
        summary.first_loss.map_or("-".into(), |l| format!("{l:.4}")),
        summary.last_loss.map_or("-".into(), |l| format!("{l:.4}")),
        if summary.output == "adapter" { "adapter (peft layout)" } else { "model (Hugging Face folder)" },
        out.display(),
        summary.output,
    )?;
    Ok(())
}

/// `--loss-mean` values; the library's [`LossMean`] knows nothing of flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LossMeanArg {
    Token,
    Sample,
}

impl From<LossMeanArg> for LossMean {
    fn from(a: LossMeanArg) -> Self {
        match a {
            LossMeanArg::Token => LossMean::Token,
            LossMeanArg::Sample => LossMean::Sample,
        }
    }
}

impl From<LossMean> for LossMeanArg {
    fn from(m: LossMean) -> Self {
        match m {
            LossMean::Token => LossMeanArg::Token,
            LossMean::Sample => LossMeanArg::Sample,
        }
    }
}

/// An error at a row of a sample file gets the command that shows that sample.
pub(crate) fn inspect_hint(e: Error) -> Error {
    let row_in_file = e
        .location()
        .and_then(|l| Some((l.file.as_ref()?.display().to_string(), l.row?)));
    match row_in_file {
        Some((file, row)) if e.is_input() => Error::input(format!(
            "{e} (`gatt inspect {file} --row {row}` shows the sample)"
        )),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        train: TrainArgs,
    }

    /// Every flag left out gives the library's default, the method and targets included.
    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let a = Flags::parse_from(["train"]).train;
        assert_eq!(a.options().unwrap(), TrainOptions::default());
        assert_eq!(a.model, DEFAULT_MODEL);
    }

    #[test]
    fn a_bad_lora_setting_names_its_flag() {
        let a = Flags::parse_from(["train", "--targets", "q_proj,nope"]).train;
        let e = a.options().unwrap_err().to_string();
        assert!(
            e.starts_with("--targets: unknown target layer `nope`"),
            "{e}"
        );
    }
}
