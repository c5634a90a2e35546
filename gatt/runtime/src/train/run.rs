//! A training run on disk:
//!
//! ```text
//! OUT/train.json        arguments, base model, data, counts, timings (rewritten as it goes)
//! OUT/loss.jsonl        one line per optimizer step
//! OUT/loss.html         the loss curve
//! OUT/checkpoint/       weights + optimizer moments + step (replaced atomically)
//! OUT/adapter/          LoRA: peft layout (adapter_config.json, adapter_model.safetensors)
//! OUT/model/            full fine-tuning: a Hugging Face folder
//! ```

use super::{candle, data, Method, StepLog, TrainOptions, Trainer};
use crate::embedded::load_model;
use crate::export;
use candle_core::{Device, Tensor};
use gatt::dataset::{write_dir, write_file, write_json};
use gatt::model::ModelSource;
use gatt::{Error, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a training run reads, where it writes, and how it trains.
pub struct RunSpec {
    /// The masked samples (Parquet or JSONL, as `gatt mask` writes them).
    pub data: PathBuf,
    /// The base model as the user named it (`default`, a GGUF file, a Hugging Face
    /// folder; see [`ModelSource::resolve`]).
    pub model: String,
    /// The run folder: `train.json`, `loss.jsonl`, `loss.html`, `checkpoint/`, and
    /// `adapter/` (LoRA, peft layout) or `model/` (full, a Hugging Face folder).
    pub out: PathBuf,
    /// Training settings; resuming needs the same ones.
    pub opts: TrainOptions,
    /// Skip samples longer than this (default: the model's context length).
    pub max_len: Option<usize>,
    /// Save a checkpoint every N optimizer steps (and at the end).
    pub save_every: usize,
    /// Most tokens run forward and backward at once ([`Trainer::set_chunk_tokens`]):
    /// bounds the peak memory and changes only float rounding (and, with LoRA dropout,
    /// which masks are drawn), so a run may resume with another value, though not bit
    /// for bit.
    pub chunk_tokens: usize,
    /// Continue from `out/checkpoint` (same options, data path and sample count), or
    /// start from step 0 when there is none. Without it, a folder that holds a
    /// checkpoint is refused.
    pub resume: bool,
}

/// Totals of a finished run, also stored in `train.json` under `summary`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// Optimizer steps of the run.
    pub steps: usize,
    /// Samples trained on (after skipping).
    pub examples: usize,
    /// Samples left out, by reason ([`super::data::Skipped`] as JSON).
    pub skipped: serde_json::Value,
    /// Elements of all trainable tensors.
    pub trainable_parameters: usize,
    /// Tokens over all logged steps, steps before a resume included (padding not counted).
    pub tokens: usize,
    /// Of those, tokens that carried loss.
    pub loss_tokens: usize,
    /// Sum of the logged steps' wall-clock times, in seconds (loading, checkpoints and
    /// export not included).
    pub seconds: f64,
    /// Loss of the first logged step.
    pub first_loss: Option<f64>,
    /// Loss of the last logged step.
    pub last_loss: Option<f64>,
    /// `adapter` or `model`, relative to the run folder.
    pub output: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TrainJson {
    model: String,
    data: PathBuf,
    options: TrainOptions,
    max_len: Option<usize>,
    gatt_version: String,
    summary: Option<RunSummary>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointState {
    step: usize,
    options: TrainOptions,
    data: PathBuf,
    examples: usize,
}

/// True when `out` holds a run (a checkpoint) that a new run would overwrite; only a
/// resumed run may use such a folder.
pub fn holds_run(out: &Path) -> bool {
    out.join("checkpoint").exists()
}

/// Trains as `spec` says; `on_step` sees every logged step (progress bars).
///
/// # Errors
///
/// An input error for a model or data that cannot be used, a folder that holds another
/// run, or a checkpoint made with other settings; a runtime error when training fails (a
/// non-finite loss) or a file cannot be written. The last checkpoint is kept.
pub fn run(
    spec: &RunSpec,
    device: &Device,
    mut on_step: impl FnMut(&StepLog),
) -> Result<RunSummary> {
    let _lock = gatt::dataset::FolderLock::acquire(&spec.out)?;
    let source = ModelSource::resolve(&spec.model)?;
    let format = source.chat_format()?;
    let model = load_model(&source, device)?;
    let max_len = spec.max_len.unwrap_or(model.cfg.context_length);
    let (examples, skipped) = data::load(&spec.data, model.cfg.vocab, &format.stop_ids, max_len)?;
    let n_examples = examples.len();
    let ckpt_dir = spec.out.join("checkpoint");
    if !spec.resume && holds_run(&spec.out) {
        return Err(Error::input(format!(
            "{}: a run is already there; resume it or choose another folder",
            spec.out.display()
        )));
    }
    std::fs::create_dir_all(&spec.out).map_err(|e| Error::io(&spec.out, "create", e))?;
    let mut trainer = Trainer::new(model, examples, spec.opts.clone(), device)?;
    trainer.set_chunk_tokens(spec.chunk_tokens);
    let log_path = spec.out.join("loss.jsonl");
    let mut kept: Vec<(StepLog, String)> = Vec::new();
    if spec.resume && ckpt_dir.exists() {
        let state: CheckpointState = read_json(&ckpt_dir.join("state.json"))?;
        if state.options != spec.opts || state.data != spec.data || state.examples != n_examples {
            return Err(Error::input(format!(
                "{}: the checkpoint was made with other settings or data; resuming needs the \
                 same settings (saved ones are in {}/train.json)",
                spec.out.display(),
                spec.out.display()
            )));
        }
        let st = ckpt_dir.join("state.safetensors");
        let tensors = candle_core::safetensors::load(&st, device)
            .map_err(|e| Error::input(format!("{}: {e}", st.display())))?;
        trainer.restore(&tensors, state.step)?;
        kept = read_logs(&log_path)
            .into_iter()
            .filter(|(l, _)| l.step <= state.step)
            .collect();
    }
    // Lines are kept verbatim (re-serializing a float can change its last digit).
    let text: String = kept.iter().map(|(_, line)| format!("{line}\n")).collect();
    write_file(&log_path, text.as_bytes())?;
    let mut logs: Vec<StepLog> = kept.into_iter().map(|(l, _)| l).collect();
    let mut train_json = TrainJson {
        model: spec.model.clone(),
        data: spec.data.clone(),
        options: spec.opts.clone(),
        max_len: spec.max_len,
        gatt_version: env!("CARGO_PKG_VERSION").to_string(),
        summary: None,
    };
    write_json(&spec.out.join("train.json"), &train_json)?;
    let total = trainer.total_steps();
    let mut log_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, "open", e))?;
    while trainer.step < total {
        let log = trainer.train_step()?;
        let line = serde_json::to_string(&log).expect("logs serialize");
        writeln!(log_file, "{line}").map_err(|e| Error::io(&log_path, "write", e))?;
        on_step(&log);
        logs.push(log);
        if trainer.step % spec.save_every.max(1) == 0 || trainer.step == total {
            save_checkpoint(&trainer, &ckpt_dir, spec, n_examples)?;
            write_curve(&spec.out, &logs)?;
        }
    }
    write_curve(&spec.out, &logs)?;
    let trainable = trainer.params().iter().map(|p| p.var.elem_count()).sum();
    let output = match &spec.opts.method {
        Method::Lora(cfg) => {
            let cfg = cfg.clone();
            let base = hf_base(&source, &format, &spec.out)?;
            let base = base.display().to_string();
            super::lora::save_peft(trainer.model_mut(), &cfg, &base, &spec.out.join("adapter"))?;
            "adapter"
        }
        Method::Full => {
            let mut model = trainer.into_model();
            export::write(&mut model, &source, &format, &spec.out.join("model"), true)?;
            "model"
        }
    };
    let summary = RunSummary {
        steps: total,
        examples: n_examples,
        skipped: serde_json::to_value(&skipped).expect("counts serialize"),
        trainable_parameters: trainable,
        tokens: logs.iter().map(|l| l.tokens).sum(),
        loss_tokens: logs.iter().map(|l| l.loss_tokens).sum(),
        seconds: logs.iter().map(|l| l.seconds).sum(),
        first_loss: logs.first().map(|l| l.loss),
        last_loss: logs.last().map(|l| l.loss),
        output: output.into(),
    };
    train_json.summary = Some(summary.clone());
    write_json(&spec.out.join("train.json"), &train_json)?;
    Ok(summary)
}

/// The base of a LoRA run as a Hugging Face folder, the path its adapter's
/// `base_model_name_or_path` names so that peft's `AutoPeftModelForCausalLM` loads the
/// adapter by its folder alone: a Hugging Face source folder as it is; a GGUF
/// dequantized (f32, as trained on) into `RUN/base`, written once per run (4 bytes a
/// parameter). The path is absolute.
///
/// # Errors
///
/// The model cannot be read, or the folder cannot be written.
fn hf_base(source: &ModelSource, format: &gatt::model::ChatFormat, run: &Path) -> Result<PathBuf> {
    let dir = match source {
        ModelSource::HfDir(dir) => dir.clone(),
        _ => {
            let dir = run.join("base");
            if !dir.join("config.json").exists() {
                let mut model = load_model(source, &Device::Cpu)?;
                export::write(&mut model, source, format, &dir, true)?;
            }
            dir
        }
    };
    std::fs::canonicalize(&dir).map_err(|e| Error::io(&dir, "open", e))
}

/// Writes a merged Hugging Face folder from a LoRA run: base weights + adapters, into
/// `out` as [`export::write`] does (`overwrite` as there).
///
/// # Errors
///
/// An input error for a full fine-tuning run, a run without a finished adapter, a base
/// model or adapter that cannot be read, or an `out` that holds files without
/// `overwrite` (checked before anything is loaded).
pub fn merge(run_dir: &Path, out: &Path, overwrite: bool, device: &Device) -> Result<()> {
    gatt::dataset::check_user_dir(out, overwrite)?;
    let tj: TrainJson = read_json(&run_dir.join("train.json"))?;
    if tj.options.method == Method::Full {
        return Err(Error::input(format!(
            "{}: a full fine-tuning run; its model folder is {}/model already",
            run_dir.display(),
            run_dir.display()
        )));
    }
    let adapter = run_dir.join("adapter");
    if !adapter.join("adapter_config.json").exists() {
        return Err(Error::input(format!(
            "{}: no finished adapter (the run has not completed; resume it to finish it)",
            adapter.display()
        )));
    }
    let source = ModelSource::resolve(&tj.model)?;
    let format = source.chat_format()?;
    let mut model = load_model(&source, device)?;
    super::lora::load_peft(&mut model, &adapter, device)?;
    model.merge_lora().map_err(candle("merging the adapter"))?;
    export::write(&mut model, &source, &format, out, overwrite)
}

fn save_checkpoint(trainer: &Trainer, dir: &Path, spec: &RunSpec, examples: usize) -> Result<()> {
    let state = CheckpointState {
        step: trainer.step,
        options: spec.opts.clone(),
        data: spec.data.clone(),
        examples,
    };
    write_checkpoint(dir, &trainer.state_tensors(), &state)
}

/// Writes a checkpoint folder atomically: a failed write leaves the previous one.
fn write_checkpoint(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    state: &CheckpointState,
) -> Result<()> {
    write_dir(dir, |tmp| {
        let st = tmp.join("state.safetensors");
        crate::safetensors_file::save(tensors, &st)?;
        write_json(&tmp.join("state.json"), state)
    })
    .map_err(|e| {
        Error::runtime(format!(
            "{e}; the previous checkpoint in {} is intact",
            dir.display()
        ))
    })
}

fn write_curve(out: &Path, logs: &[StepLog]) -> Result<()> {
    let pts: Vec<(usize, f64)> = logs.iter().map(|l| (l.step, l.loss)).collect();
    write_file(
        &out.join("loss.html"),
        super::curve::html("gatt train: loss", &pts).as_bytes(),
    )
}

/// Logged steps with their original lines.
fn read_logs(path: &Path) -> Vec<(StepLog, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    // A line cut by a crash is dropped; the checkpoint decides where training resumes.
    text.lines()
        .filter_map(|l| Some((serde_json::from_str(l).ok()?, l.to_string())))
        .collect()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    serde_json::from_str(&text).map_err(|e| Error::input(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails part-way, as on a full disk: a child process of this test
    /// binary writes a checkpoint, lowers its file-size limit (writes past it fail with
    /// "file too large"), and writes the next one.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_write_failing_at_checkpoint_time_is_a_clear_error_and_keeps_the_last_checkpoint() {
        const CHILD: &str = "GATT_TEST_FILE_SIZE_LIMIT_CHILD";
        if let Some(dir) = std::env::var_os(CHILD) {
            failing_checkpoint_write(Path::new(&dir));
            println!("the failing write was exercised");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let name = "train::run::tests::a_write_failing_at_checkpoint_time_is_a_clear_error_and_keeps_the_last_checkpoint";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, root.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("the failing write was exercised"), "{text}");
    }

    fn failing_checkpoint_write(root: &Path) {
        let dir = root.join("checkpoint");
        let state = |step| CheckpointState {
            step,
            options: TrainOptions::default(),
            data: PathBuf::from("masked.parquet"),
            examples: 3,
        };
        let small = Tensor::arange(0f32, 1000.0, &Device::Cpu).unwrap();
        let tensors = HashMap::from([("param.w".to_string(), small)]);
        write_checkpoint(&dir, &tensors, &state(1)).unwrap();
        let before = std::fs::read(dir.join("state.json")).unwrap();
        let weights_before = std::fs::read(dir.join("state.safetensors")).unwrap();
        // SAFETY: plain libc calls; this child process runs this one test only.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: libc::RLIM_INFINITY,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
        let big = Tensor::zeros(1 << 20, candle_core::DType::F32, &Device::Cpu).unwrap();
        let tensors = HashMap::from([("param.w".to_string(), big)]);
        let err = write_checkpoint(&dir, &tensors, &state(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("disk full?"), "{err}");
        assert!(err.contains("previous checkpoint"), "{err}");
        // The step-1 checkpoint is untouched and no temporary folder is left behind.
        assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), before);
        assert_eq!(
            std::fs::read(dir.join("state.safetensors")).unwrap(),
            weights_before
        );
        let left: Vec<_> = std::fs::read_dir(root).unwrap().collect();
        assert_eq!(left.len(), 1, "left behind: {left:?}");
    }
}
