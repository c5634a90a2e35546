//! `gatt eval`: how long does a model keep its instruction? Turn by turn.

use super::backend::{BackendArgs, SamplingArgs};
use super::synth::{load_catalog, parse_kinds};
use crate::out::out;
use crate::progress;
use gatt::backend::SamplingParams;
use gatt::{Error, Result};
use gatt_eval::{run_protocol, score_dialogue, write_report, ProtocolOptions, Report, ScoredTurn};
use std::path::PathBuf;

/// Measure instruction adherence across turns (the Llama 2 paper's Table 30).
///
/// The instruction is given once, in the system message, as a trained model sees it in
/// use; user turns come from the built-in bank, with probe questions ("What is your
/// name?") every --probe-every turns; the model's own replies stay in context; every
/// reply is checked (language by detection, format rules by code, hobby and figure on
/// probe turns). Several --model values are evaluated on the same dialogues.
/// With --input, scores existing dialogues instead (e.g. `gatt synth` output).
///
/// Writes report.json, report.md (turn x model table) and report.html (charts) into --out.
///
/// Examples:
///   gatt eval --model default --turns 12 --dialogues 50 --constraints language,figure,hobby --out base
///   gatt eval --input run1/dialogues.parquet --out run1/eval
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Output folder for the report.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Score the dialogues of this file instead of generating (needs `constraints`).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    #[arg(long, default_value_t = 12)]
    pub turns: usize,
    #[arg(long, default_value_t = 50)]
    pub dialogues: usize,
    /// Constraint kinds, one constraint of each per dialogue.
    #[arg(long, value_delimiter = ',', default_value = "language,figure,hobby")]
    pub constraints: Vec<String>,
    /// Ask a probe question every K turns (0: never).
    #[arg(long, default_value_t = 2)]
    pub probe_every: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace a built-in catalog: KIND=FILE. Repeatable.
    #[arg(long, value_name = "KIND=FILE")]
    pub catalog: Vec<String>,
    /// Draw the user turns from this bank instead of the built-in one (JSON
    /// `{"messages": [...]}`, like templates/users/bank.json), e.g. messages held out
    /// from training.
    #[arg(long, value_name = "FILE")]
    pub user_bank: Option<PathBuf>,
    /// Also let this model (`default`, .gguf, folder) judge persona, hobby and figure on
    /// every turn; its verdicts are reported apart, as `MODEL (judge)`.
    #[arg(long, value_name = "M", conflicts_with = "judge_endpoint")]
    pub judge_model: Option<String>,
    /// A judge behind an OpenAI-compatible server (uses --judge-api-model and
    /// --api-key-env).
    #[arg(long, value_name = "URL", requires = "judge_api_model")]
    pub judge_endpoint: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub judge_api_model: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The judge's backend, if one was asked for.
fn judge_backend(args: &Args) -> Result<Option<Box<dyn gatt::backend::ChatBackend>>> {
    let b = &args.backend;
    let judge = match (&args.judge_model, &args.judge_endpoint) {
        (Some(m), _) => BackendArgs {
            endpoint: None,
            ..b.with_model(m)
        },
        (None, Some(url)) => BackendArgs {
            endpoint: Some(url.clone()),
            api_model: args.judge_api_model.clone(),
            ..b.clone()
        },
        (None, None) => return Ok(None),
    };
    judge.load().map(Some)
}

pub fn run(args: Args) -> Result<()> {
    let mut catalog = load_catalog(&args.catalog)?;
    if let Some(path) = &args.user_bank {
        catalog.load_user_bank(path)?;
    }
    let judge = judge_backend(&args)?;
    let mut judged: Vec<gatt::Dialogue> = Vec::new();
    let mut rows: Vec<ScoredTurn> = Vec::new();
    let mut meta = serde_json::json!({ "gatt_version": env!("CARGO_PKG_VERSION") });
    if let Some(input) = &args.input {
        let dialogues = gatt::dataset::read_all(input)?;
        if dialogues.iter().all(|d| d.constraints.is_empty()) {
            return Err(Error::input(format!(
                "{}: no record has `constraints`; nothing to check",
                input.display()
            )));
        }
        for d in &dialogues {
            rows.extend(score_dialogue(d, &catalog));
        }
        if judge.is_some() {
            judged = dialogues;
        }
        meta["input"] = input.display().to_string().into();
    } else {
        if args.turns == 0 || args.dialogues == 0 {
            return Err(Error::input("--turns and --dialogues must be at least 1"));
        }
        let opts = ProtocolOptions {
            turns: args.turns,
            dialogues: args.dialogues,
            kinds: parse_kinds(&args.constraints)?,
            probe_every: args.probe_every,
            seed: args.seed,
            sampling: SamplingParams {
                n: 1,
                ..args.sampling.params(1)
            },
        };
        let backends: Vec<super::backend::BackendArgs> = match &args.backend.endpoint {
            Some(_) => vec![args.backend.clone()],
            None => args
                .backend
                .models
                .iter()
                .map(|m| args.backend.with_model(m))
                .collect(),
        };
        for b in backends {
            let backend = b.load()?;
            let total = (opts.turns * opts.dialogues) as u64;
            let pb = progress::bar(Some(total), &format!("replies ({})", backend.describe()));
            let dialogues = run_protocol(backend.as_ref(), &catalog, &opts, &|n| {
                pb.set_position(n as u64)
            })?;
            pb.finish_and_clear();
            let path = args.out.join(format!(
                "dialogues-{}.jsonl",
                rows_model_slug(&backend.describe())
            ));
            let mut w = gatt::dataset::DialogueWriter::create(&path, gatt::dataset::Format::Jsonl)?;
            for d in &dialogues {
                w.write(d)?;
                rows.extend(score_dialogue(d, &catalog));
            }
            w.finish()?;
            if judge.is_some() {
                judged.extend(dialogues);
            }
        }
        meta["protocol"] = serde_json::json!({
            "turns": args.turns, "dialogues": args.dialogues, "constraints": args.constraints,
            "probe_every": args.probe_every, "seed": args.seed,
        });
    }
    if let Some(j) = &judge {
        let params = SamplingParams {
            max_new_tokens: 4,
            temperature: 0.0,
            n: 1,
            ..SamplingParams::default()
        };
        let pb = progress::bar(None, &format!("judge verdicts ({})", j.describe()));
        let verdicts =
            gatt_eval::judge::judge_dialogues(j.as_ref(), &judged, &catalog, &params, &|n| {
                pb.set_position(n as u64)
            })?;
        pb.finish_and_clear();
        meta["judge"] = j.describe().into();
        rows.extend(verdicts);
    }
    let report = Report::from_scored(&rows, meta);
    write_report(&report, &args.out)?;
    eprintln!(
        "gatt eval: report in {}",
        args.out.join("report.md").display()
    );
    out!(
        "{}",
        std::fs::read_to_string(args.out.join("report.md")).unwrap_or_default()
    )?;
    Ok(())
}

/// A file-name-safe form of a model's description.
fn rows_model_slug(s: &str) -> String {
    let base = s.rsplit('/').next().unwrap_or(s);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
