//! `gatt synth`: the main job. A chat model in, a GAtt training set out.

use super::backend::{model_source, BackendArgs, JudgeArgs, SamplingArgs};
use super::mask::{mask_file, MaskFlags};
use crate::progress;
use crate::values::{AttachArg, CutModeArg, ExportArg, FormatArg, OnErrorArg, PlacementArg};
use gatt::catalog::{parse_kind, Catalog, CatalogOverride};
use gatt::dataset::Format;
use gatt::mask::export::Export;
use gatt::mask::pipeline::{OnError, Output};
use gatt::mask::{CutReplies, MaskOptions, Masker, Policy, SpecialText};
use gatt::model::ChatFormat;
use gatt::transform::{Attach, Placement};
use gatt::{ConstraintKind, Error, Result};
use gatt_synth::plan::Shard;
use gatt_synth::run::Provenance;
use gatt_synth::users::UserSource;
use gatt_synth::{CutMode, GateOptions, SynthOptions, Synthesizer};
use std::path::PathBuf;

/// The most candidates `--candidates` samples per turn.
const MAX_CANDIDATES: usize = 64;

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
/// Every sampled reply passes a quality gate: a reply cut at the token limit, empty,
/// degenerate (a phrase repeated over and over) or in the wrong script entirely is
/// rejected; when every candidate of a turn is rejected the turn is sampled again with
/// another seed (--resample-tries), then the dialogue is dropped. The report counts
/// what each gate rejected. Every flag is checked before the first request.
///
/// With --candidates K, the evaluator's checks pick the reply; hobby, figure and persona
/// (decided by code on probe turns only) are weighed on other turns by cheap signals, or
/// by a judge model's yes/no (--judge-model / --judge-endpoint, as in `gatt eval`). The
/// judge also counts in --min-adherence; run.json and the report say how many candidates
/// it judged and rejected.
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
    /// Combine at least K compatible constraints in one instruction (the number is drawn
    /// uniformly from --min-combined to --max-combined). `--min-combined 3
    /// --max-combined 3 --constraints figure,hobby,language` gives every dialogue a
    /// figure, a hobby and a language, as the paper's Table 30 evaluation does.
    #[arg(long, default_value_t = 1)]
    pub min_combined: usize,
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
    /// Sample K replies per turn and keep the best that passes the quality gate: by the
    /// evaluator's checks, cheap signals for hobby, figure and persona, and the verdicts
    /// of --judge-model when given.
    #[arg(long, default_value_t = 1)]
    pub candidates: usize,
    /// Replies cut at the token limit: resample the turn and drop the dialogue if it
    /// cannot finish; drop-eot: keep a final reply still cut, trained without its
    /// end-of-turn token; keep: as they are.
    #[arg(long, value_enum, default_value_t = CutMode::default().into())]
    pub cut_replies: CutModeArg,
    /// New tries (each with another seed) for a turn whose candidates the gate rejected
    /// (cut, empty, repetitive, wrong script or language, out of character) or whose
    /// chosen reply fell below --min-adherence, before the dialogue is dropped.
    #[arg(long, value_name = "N", default_value_t = GateOptions::DEFAULT_RESAMPLE_TRIES)]
    pub resample_tries: usize,
    /// Keep a dialogue only if its chosen replies passed at least this share of the
    /// evaluator's decided checks (language and format on every turn; hobby, figure and
    /// persona on probe turns, see --probe-rate; with --judge-model, also the judge's
    /// yes/no on hobby, figure and persona at every turn); 0 keeps all. A turn whose
    /// chosen reply passes less than this share of its own checks is sampled again (up
    /// to --resample-tries); at 1, a dialogue whose turn fails every try is dropped at
    /// once.
    #[arg(
        long,
        value_name = "R",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub min_adherence: f64,
    /// Probability that a user turn from the bank asks for a short answer ("Please keep
    /// your answer short."), so that the model finishes its replies within --max-tokens.
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub concise: f64,
    /// Probability that a user turn after the first is a probe question about the
    /// instruction's hobby, figure or persona ("What should I call you?"), from a bank
    /// disjoint from `gatt eval`'s probes; recorded in meta.probe_turns.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub probe_rate: f64,
    /// Share of dialogues with no instruction at all (no constraint, no probe): plain
    /// conversations mixed into the GAtt data, trained on their last reply like the
    /// others, so that the fine-tune keeps answering in the user's language when nobody
    /// asks otherwise (without them a model tuned on "Always answer in French" data
    /// drifts into French; `gatt eval --no-instruction` measures it). Their replies must
    /// be in the user's language (quality gate: `wrong_language`).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub plain_share: f64,
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
    /// Dialogues open at once: more let the last ones of a job finish together instead
    /// of one running alone at the end, at the cost of more kept KV caches
    /// (--session-cache) and of more work redone after an interruption (chunks finish
    /// later). 0: a new dialogue starts only when no open one has a request ready.
    /// Default with the embedded model: twice --batch, at most one per 8 MiB of
    /// --session-cache per turn (what the default model keeps of a dialogue, so that the
    /// open ones fit: the dialogue waiting longest is the next to go, and the first the
    /// cache would drop). With --endpoint: 0 (a server's prefix cache, llama.cpp's one
    /// prompt per slot, keeps few conversations). Only the order requests go out in
    /// depends on it, so the outputs do not on the CPU.
    #[arg(long, value_name = "N")]
    pub open_dialogues: Option<usize>,
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
    #[arg(long, value_enum, default_value_t = OnErrorArg::Skip, requires = "mask")]
    pub on_error: OnErrorArg,
    /// Model whose tokenizer and template --mask uses with --endpoint.
    #[arg(long, value_name = "M", requires = "mask")]
    pub mask_model: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
    // The judge (--judge-model or --judge-endpoint): asked about every candidate of a turn
    // with a choice (--candidates K >= 2) or, with --min-adherence, every kept reply;
    // needs one of them, and hobby, figure or persona in --constraints (check_args).
    #[command(flatten)]
    pub judge: JudgeArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The default longest reply of `gatt synth`, in tokens: with user turns asking for
/// short answers (--concise), the default model finishes most replies within it.
const SYNTH_MAX_TOKENS: usize = 320;

pub fn run(args: Args) -> Result<()> {
    // Everything the flags can get wrong is found here, before the first request.
    check_args(&args)?;
    if !args.resume && gatt_synth::run::holds_run(&args.out) {
        return Err(Error::input(format!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            args.out.display()
        )));
    }
    guard_out_folder(&args)?;
    let catalog = Catalog::with_overrides(&args.catalog)?;
    gatt_synth::plan::check_kinds(&catalog, &args.constraints)?;
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
    // The masker (tokenizer and template) before the synthesis, so that a --mask that
    // cannot work fails now, not after it.
    let masker = if args.mask {
        Some(Masker::new(mask_format(&args)?, mask_options(&args)))
    } else {
        None
    };
    let backend = args.backend.load()?;
    let judge = args.judge.load(&args.backend)?;
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
        min_combined: args.min_combined,
        max_combined: args.max_combined,
        terse: args.terse,
        attach: args.attach.into(),
        placement: args.placement.into(),
        candidates: args.candidates,
        sampling: args.sampling.params(args.candidates, SYNTH_MAX_TOKENS),
        concise: args.concise,
        probe_rate: args.probe_rate,
        plain_share: args.plain_share,
        user_sim: args.user_sim,
        shard: args.shard,
        chunk: args.chunk.unwrap_or_else(|| backend.preferred_batch()),
        gate: GateOptions {
            cut: args.cut_replies.into(),
            resample_tries: args.resample_tries,
            min_adherence: args.min_adherence,
        },
        open_dialogues: args
            .open_dialogues
            .unwrap_or_else(|| default_open_dialogues(&args)),
    };
    let scorer = crate::scoring::EvalScorer::new(&catalog);
    let synth = Synthesizer {
        backend: backend.as_ref(),
        catalog: &catalog,
        users: &users,
        scorer: &scorer,
        judge: judge.as_deref(),
        opts,
    };
    let format: Format = args.format.into();
    let total = synth.plans().len();
    let pb = progress::bar(Some(total as u64), "dialogues");
    let started = std::time::Instant::now();
    let summary = gatt_synth::run::run(&synth, &args.out, args.resume, format, provenance, &|p| {
        pb.set_position(p.dialogues_done as u64);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        // The model's speed: every sampled token, rejected candidates included.
        pb.set_message(format!("{:.1} tok/s", p.tokens_sampled as f64 / secs));
    })?;
    pb.finish_and_clear();
    let g = &summary.gate;
    eprintln!(
        "gatt synth: {} of {} dialogues kept ({} resumed), {} dropped by the quality gate \
         -> {} in {:.1}s",
        g.kept,
        summary.progress.dialogues_done,
        summary.progress.dialogues_resumed,
        g.dropped_total(),
        summary.output.display(),
        summary.seconds
    );
    let j = &g.judge;
    if j.questions > 0 {
        eprintln!(
            "gatt synth: the judge rejected {} of the {} candidates it judged ({} no, {} yes, \
             {} neither) and changed the kept reply of {} turns",
            j.candidates_rejected, j.candidates_judged, j.no, j.yes, j.neither, j.picks_changed
        );
    }
    let mask_summary = if let Some(masker) = masker {
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
        let s = match mask_file(&masker, &summary.output, &outputs, on_error) {
            Ok(s) => s,
            Err(e) => {
                // The report still says what was sampled and what the quality gate
                // rejected (e.g. every dialogue, so that there was nothing to mask).
                crate::synth_report::write(&args.out, &summary, None, &catalog)?;
                eprintln!(
                    "gatt synth: report (without masks) in {}",
                    args.out.join("report.md").display()
                );
                return Err(e);
            }
        };
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

/// The flag checks that need no file, model or network: run before anything else.
fn check_args(args: &Args) -> Result<()> {
    let fail = |m: &str| Err(Error::input(m.to_string()));
    if args.dialogues == 0 || args.turns == 0 {
        return fail("--dialogues and --turns must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.terse) {
        return fail("--terse is a probability between 0 and 1");
    }
    if !(0.0..=1.0).contains(&args.concise) {
        return fail("--concise is a probability between 0 and 1");
    }
    if !(0.0..=1.0).contains(&args.probe_rate) {
        return fail("--probe-rate is a probability between 0 and 1");
    }
    if !(0.0..=1.0).contains(&args.plain_share) {
        return fail("--plain-share is a probability between 0 and 1");
    }
    if !(0.0..=1.0).contains(&args.min_adherence) {
        return fail("--min-adherence is a share between 0 and 1");
    }
    if !(1..=MAX_CANDIDATES).contains(&args.candidates) {
        return fail(&format!(
            "--candidates must be between 1 and {MAX_CANDIDATES} (each candidate is one more \
             reply sampled for every turn)"
        ));
    }
    if args.max_combined == 0 {
        return fail("--max-combined must be at least 1");
    }
    if args.min_combined == 0 || args.min_combined > args.max_combined {
        return fail(&format!(
            "--min-combined must be between 1 and --max-combined ({})",
            args.max_combined
        ));
    }
    if args.chunk == Some(0) {
        return fail("--chunk must be at least 1");
    }
    if args.constraints.is_empty() {
        return fail("--constraints: name at least one kind");
    }
    let s = &args.sampling;
    if s.max_tokens == Some(0) {
        return fail("--max-tokens must be at least 1 (with 0 every reply would be empty)");
    }
    if s.temperature.is_nan() || s.temperature < 0.0 {
        return fail("--temperature must be 0 (greedy) or more");
    }
    if s.temperature == 0.0 && args.resample_tries > 0 {
        eprintln!(
            "gatt: warning: --temperature 0 samples greedily, so a rejected reply comes out \
             the same when its turn is sampled again: --resample-tries cannot help, and the \
             dialogue is dropped; raise --temperature for resampling to work"
        );
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return fail("--top-p is a share of probability mass, in (0, 1]");
    }
    if s.top_k == Some(0) {
        return fail("--top-k must be at least 1");
    }
    if s.repetition_penalty.is_nan() || s.repetition_penalty <= 0.0 {
        return fail("--repetition-penalty must be more than 0 (1 means none)");
    }
    let m = &args.mask_flags;
    let mask_flags_set = Policy::from(m.policy) != Policy::default()
        || m.max_len.is_some()
        || SpecialText::from(m.special_text) != SpecialText::default();
    if !args.mask && mask_flags_set {
        return fail(
            "--policy, --max-len, --truncate and --special-text shape the masks: pass --mask \
             too, or leave them out",
        );
    }
    if args.mask && args.backend.endpoint.is_some() && args.mask_model.is_none() {
        return fail(MASK_MODEL_NEEDED);
    }
    if let Some(flag) = args.judge.flag() {
        if args.candidates < 2 && args.min_adherence == 0.0 {
            return Err(Error::input(format!(
                "{flag} weighs the choice among --candidates K (K of 2 or more) and the \
                 --min-adherence filter: with one candidate and no --min-adherence it would \
                 judge nothing; pass either, or leave the judge out"
            )));
        }
        if !args.constraints.iter().any(gatt::judge::judged_kind) {
            return Err(Error::input(format!(
                "{flag} judges hobby, figure and persona, and --constraints holds none of \
                 them: add one, or leave the judge out"
            )));
        }
    }
    Ok(())
}

const MASK_MODEL_NEEDED: &str = "--mask with --endpoint needs --mask-model M: the model (GGUF or \
    folder) whose tokenizer and chat template the trainer will use";

/// The masks' options: cut replies the gate kept on purpose (`--cut-replies keep`) are
/// masked as they are; a final reply kept under `drop-eot` says so in its record.
fn mask_options(args: &Args) -> MaskOptions {
    let cut_replies = match CutMode::from(args.cut_replies) {
        CutMode::Keep => CutReplies::Keep,
        CutMode::Resample | CutMode::DropEot => CutReplies::Refuse,
    };
    MaskOptions {
        cut_replies,
        ..args.mask_flags.options()
    }
}

fn mask_format(args: &Args) -> Result<ChatFormat> {
    let (flag, spec) = match (&args.mask_model, &args.backend.endpoint) {
        (Some(m), _) => ("--mask-model", m.as_str()),
        (None, None) => ("--model", args.backend.model()?),
        (None, Some(_)) => return Err(Error::input(MASK_MODEL_NEEDED)),
    };
    let mut format = model_source(flag, spec)?.chat_format()?;
    // The samples are rendered as the chat model's prompts were.
    args.backend.template_args.apply(&mut format.template)?;
    Ok(format)
}

/// `--open-dialogues` when not given (see its help): 0 against a server; on the embedded
/// model twice `--batch`, capped so that the open dialogues' kept caches fit in
/// `--session-cache` at about 8 MiB per turn each (the default model keeps 23,040 bytes a
/// position; a turn adds some 350 positions with two candidates).
fn default_open_dialogues(args: &Args) -> usize {
    if args.backend.endpoint.is_some() {
        return 0;
    }
    let fit = args.backend.session_cache / (8 * args.turns.max(1));
    (2 * args.backend.batch).min(fit)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        synth: Args,
    }

    fn check(extra: &[&str]) -> Result<()> {
        let mut argv = vec!["synth", "--out", "x"];
        argv.extend_from_slice(extra);
        check_args(&Flags::try_parse_from(argv).unwrap().synth)
    }

    /// A judge needs something to weigh in (a choice or --min-adherence) and a kind it
    /// judges; with those, the flags pass.
    #[test]
    fn judge_flags_need_a_choice_and_a_judged_kind() {
        let e = check(&["--judge-model", "default"]).unwrap_err();
        assert!(
            e.is_input() && e.to_string().starts_with("--judge-model weighs"),
            "{e}"
        );
        let url = ["--judge-endpoint", "http://h:1", "--judge-api-model", "j"];
        let e = check(&url).unwrap_err();
        assert!(e.to_string().starts_with("--judge-endpoint weighs"), "{e}");
        let e = check(&[
            "--judge-model",
            "m",
            "--candidates",
            "2",
            "--constraints",
            "language",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("holds none of them"), "{e}");
        check(&["--judge-model", "m", "--candidates", "2"]).unwrap();
        check(&["--judge-model", "m", "--min-adherence", "0.5"]).unwrap();
        check(&[&url[..], &["--candidates", "4", "--constraints", "persona"]].concat()).unwrap();
        check(&["--candidates", "1"]).unwrap();
    }
}
