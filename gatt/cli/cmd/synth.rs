//! `gatt synth`: the main job. A chat model in, a GAtt training set out.

use super::backend::{model_source, BackendArgs, SamplingArgs};
use super::mask::{mask_file, MaskFlags};
use crate::progress;
use crate::values::{AttachArg, ExportArg, FormatArg, OnErrorArg, PlacementArg};
use gatt::catalog::{parse_kind, Catalog, CatalogOverride};
use gatt::dataset::Format;
use gatt::mask::export::Export;
use gatt::mask::pipeline::{OnError, Output};
use gatt::mask::Masker;
use gatt::model::ChatFormat;
use gatt::transform::{Attach, Placement};
use gatt::{ConstraintKind, Error, Result};
use gatt_synth::plan::Shard;
use gatt_synth::run::Provenance;
use gatt_synth::users::UserSource;
use gatt_synth::{SynthOptions, Synthesizer};
use std::path::PathBuf;

/// Synthesize GAtt dialogues: sample constraints, phrase an instruction, attach it to
/// every user turn, sample each reply turn by turn with the chat model, then keep the
/// instruction only in the first turn. With --mask, also write the train-ready masks.
///
/// Writes into --out: dialogues.parquet (training records; `meta.augmented` holds the
/// conversation as sampled), masked.parquet (with --mask), report.md / report.json, and
/// run.json (arguments, versions, model hash, counts, timings). Work is saved chunk by
/// chunk: after an interruption, the same command with --resume finishes the job with
/// exactly the records a clean run would have.
///
/// Examples:
///   gatt synth --out run1 --dialogues 8 --turns 3 --mask
///   gatt synth --out big --dialogues 20000 --turns 6 --shard 2/4 --endpoint http://gpu:8000 --api-model m
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Output folder.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Dialogues in the whole job (before sharding).
    #[arg(long, default_value_t = 8)]
    pub dialogues: usize,
    /// User turns per dialogue.
    #[arg(long, default_value_t = 3)]
    pub turns: usize,
    /// Constraint kinds to sample from (comma-separated): hobby, language, figure,
    /// persona, format.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hobby,language,figure",
        value_parser = parse_kind
    )]
    pub constraints: Vec<ConstraintKind>,
    /// Combine up to K compatible constraints in one instruction.
    #[arg(long, default_value_t = 2)]
    pub max_combined: usize,
    /// Probability that an instruction is terse ("Language: French."); the paper used 0.5.
    #[arg(long, default_value_t = 0.5)]
    pub terse: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the instruction goes in each user turn while sampling.
    #[arg(long, value_enum, default_value_t = Attach::default().into())]
    pub attach: AttachArg,
    /// Where the instruction goes in the training record.
    #[arg(long, value_enum, default_value_t = Placement::default().into())]
    pub placement: PlacementArg,
    /// Sample K replies per turn and keep the best.
    #[arg(long, default_value_t = 1)]
    pub candidates: usize,
    /// Reuse the user turns of existing dialogues (.jsonl/.parquet/ShareGPT).
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// Let the chat model write each next user message.
    #[arg(long)]
    pub user_sim: bool,
    /// Replace a built-in catalog: KIND=FILE (e.g. hobby=hobbies.json, from
    /// `gatt constraints expand`). Repeatable.
    #[arg(long, value_name = "KIND=FILE")]
    pub catalog: Vec<CatalogOverride>,
    /// Continue an interrupted run in --out.
    #[arg(long)]
    pub resume: bool,
    /// Do share I of a job split over N machines (I/N).
    #[arg(long, default_value_t = Shard::default())]
    pub shard: Shard,
    /// Dialogues per saved chunk (default: the backend's batch).
    #[arg(long)]
    pub chunk: Option<usize>,
    /// Format of dialogues.* and masked.*.
    #[arg(long, value_enum, default_value_t = FormatArg::Parquet)]
    pub format: FormatArg,
    /// Also write the masked samples (masked.parquet) in this run.
    #[arg(long)]
    pub mask: bool,
    #[command(flatten)]
    pub mask_flags: MaskFlags,
    /// With --mask: the layouts to write, comma-separated, all from the same masked
    /// samples: gatt (masked.*), openai (openai.jsonl), prompt-completion
    /// (prompt_completion.*), tokenized (tokenized.*). See `gatt mask --help`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "gatt",
        requires = "mask"
    )]
    pub export: Vec<ExportArg>,
    /// With --mask: records that cannot be masked exactly are skipped and counted by
    /// default; `fail` stops instead.
    #[arg(long, value_enum, default_value_t = OnErrorArg::Skip)]
    pub on_error: OnErrorArg,
    /// Model whose tokenizer and template --mask uses with --endpoint.
    #[arg(long, value_name = "M")]
    pub mask_model: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: Args) -> Result<()> {
    if args.dialogues == 0 || args.turns == 0 {
        return Err(Error::input("--dialogues and --turns must be at least 1"));
    }
    if !(0.0..=1.0).contains(&args.terse) {
        return Err(Error::input("--terse is a probability between 0 and 1"));
    }
    if !args.resume && gatt_synth::run::holds_run(&args.out) {
        return Err(Error::input(format!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            args.out.display()
        )));
    }
    guard_out_folder(&args)?;
    let catalog = Catalog::with_overrides(&args.catalog)?;
    let users = match &args.users {
        Some(p) => UserSource::from_file(p).map_err(|e| e.context("--users"))?,
        None => UserSource::Bank(catalog.user_bank.clone()),
    };
    if let (Some(path), false) = (&args.users, args.user_sim) {
        let (short, total) = users.short_records(args.turns);
        if short > 0 {
            eprintln!(
                "gatt synth: warning: {}: {short} of {total} records have fewer than {} user \
                 turns, so their dialogues end early (give longer records, a smaller --turns, \
                 or --user-sim to continue them)",
                path.display(),
                args.turns
            );
        }
    }
    let backend = args.backend.load()?;
    let mut provenance = Provenance::new(backend.describe());
    if args.backend.endpoint.is_none() {
        let source = model_source("--model", args.backend.model()?)?;
        provenance.model_sha256 = Some(gatt::model::fetch::sha256_file(source.path())?);
    }
    let opts = SynthOptions {
        dialogues: args.dialogues,
        turns: args.turns,
        seed: args.seed,
        kinds: args.constraints.clone(),
        max_combined: args.max_combined,
        terse: args.terse,
        attach: args.attach.into(),
        placement: args.placement.into(),
        candidates: args.candidates,
        sampling: args.sampling.params(args.candidates),
        user_sim: args.user_sim,
        shard: args.shard,
        chunk: args.chunk.unwrap_or_else(|| backend.preferred_batch()),
    };
    let scorer = crate::scoring::EvalScorer::new(&catalog);
    let synth = Synthesizer {
        backend: backend.as_ref(),
        catalog: &catalog,
        users: &users,
        scorer: &scorer,
        opts,
    };
    let format: Format = args.format.into();
    let total = synth.plans().len();
    let pb = progress::bar(Some(total as u64), "dialogues");
    let started = std::time::Instant::now();
    let summary = gatt_synth::run::run(&synth, &args.out, args.resume, format, provenance, &|p| {
        pb.set_position(p.dialogues_done as u64);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        pb.set_message(format!("{:.1} tok/s", p.tokens_generated as f64 / secs));
    })?;
    pb.finish_and_clear();
    eprintln!(
        "gatt synth: {} dialogues ({} resumed) -> {} in {:.1}s",
        summary.progress.dialogues_done,
        summary.progress.dialogues_resumed,
        summary.output.display(),
        summary.seconds
    );
    let mask_summary = if args.mask {
        let masker = Masker::new(mask_format(&args)?, args.mask_flags.options());
        let mut outputs: Vec<Output> = Vec::new();
        for &e in &args.export {
            let export: Export = e.into();
            let format = match export {
                Export::Openai => Format::Jsonl,
                _ => format,
            };
            let path = args
                .out
                .join(format!("{}.{}", export.file_stem(), format.extension()));
            if !outputs.iter().any(|o| o.path == path) {
                outputs.push(Output {
                    path,
                    format,
                    export,
                });
            }
        }
        let on_error: OnError = args.on_error.into();
        let s = mask_file(&masker, &summary.output, &outputs, on_error)?;
        let names: Vec<String> = outputs
            .iter()
            .map(|o| o.path.display().to_string())
            .collect();
        super::mask::report(&s, &names.join(", "));
        Some(s)
    } else {
        None
    };
    crate::synth_report::write(&args.out, &summary, mask_summary.as_ref(), &catalog)?;
    eprintln!(
        "gatt synth: report in {}",
        args.out.join("report.md").display()
    );
    Ok(())
}

fn mask_format(args: &Args) -> Result<ChatFormat> {
    let (flag, spec) =
        match (&args.mask_model, &args.backend.endpoint) {
            (Some(m), _) => ("--mask-model", m.as_str()),
            (None, None) => ("--model", args.backend.model()?),
            (None, Some(_)) => return Err(Error::input(
                "--mask with --endpoint needs --mask-model M: the model (GGUF or folder) whose \
                 tokenizer and chat template the trainer will use",
            )),
        };
    let mut format = model_source(flag, spec)?.chat_format()?;
    // The samples are rendered as the chat model's prompts were.
    args.backend.template_args.apply(&mut format.template)?;
    Ok(format)
}

/// Refuses an `--out` folder that holds a user's files rather than a gatt run, and inputs
/// that lie inside it (synth writes `dialogues.*`, `masked.*`, reports and chunks there).
fn guard_out_folder(args: &Args) -> Result<()> {
    let foreign = std::fs::read_dir(&args.out)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name() != gatt::dataset::LOCK_FILE)
                .count()
        })
        .unwrap_or(0);
    if foreign > 0 && !gatt_synth::run::holds_run(&args.out) {
        return Err(Error::input(format!(
            "{}: the folder holds {foreign} entries and no gatt run; choose an empty or new \
             --out (synth would replace files of the names it writes)",
            args.out.display()
        )));
    }
    let mut inputs: Vec<(&str, std::path::PathBuf)> = Vec::new();
    if let Some(u) = &args.users {
        inputs.push(("--users", u.clone()));
    }
    for c in &args.catalog {
        inputs.push(("--catalog", c.path.clone()));
    }
    if let Some(m) = &args.mask_model {
        inputs.push(("--mask-model", m.into()));
    }
    let Ok(out) = std::fs::canonicalize(&args.out) else {
        return Ok(());
    };
    for (flag, path) in inputs {
        if std::fs::canonicalize(&path).is_ok_and(|p| p.starts_with(&out)) {
            return Err(Error::input(format!(
                "{flag} {}: it lies inside --out {}, where synth writes its outputs; move it \
                 or choose another --out",
                path.display(),
                args.out.display()
            )));
        }
    }
    Ok(())
}
