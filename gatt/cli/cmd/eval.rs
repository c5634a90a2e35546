//! `gatt eval`: how long does a model keep its instruction? Turn by turn.

use super::backend::{BackendArgs, JudgeArgs, SamplingArgs};
use crate::out::out;
use crate::progress;
use gatt::catalog::{parse_kind, Catalog, CatalogOverride};
use gatt::{ConstraintKind, Error, Result};
use gatt_eval::{evaluate_file, evaluate_models, write_report, ProtocolOptions};
use indicatif::ProgressBar;
use std::cell::RefCell;
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
///   gatt eval --no-instruction --model default --model tuned.gguf --out control
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Output folder for the report.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Score the dialogues of this file instead of generating (needs `constraints`).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    #[arg(long, default_value_t = ProtocolOptions::default().turns)]
    pub turns: usize,
    #[arg(long, default_value_t = ProtocolOptions::default().dialogues)]
    pub dialogues: usize,
    /// Constraint kinds, one constraint of each per dialogue.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "language,figure,hobby",
        value_parser = parse_kind
    )]
    pub constraints: Vec<ConstraintKind>,
    /// The control run for collateral damage: no instruction and no system message,
    /// plain questions only; every reply is checked for being in the user's language
    /// (the bank's questions are English). Run it on the base and on the fine-tune: a
    /// GAtt fine-tune that drifts into a trained language (French for an English
    /// question) scores lower than the base here. Report rows: `user_language`. No judge:
    /// there is no hobby, figure or persona to judge.
    #[arg(
        long,
        conflicts_with_all = ["constraints", "input", "judge_model", "judge_endpoint"]
    )]
    pub no_instruction: bool,
    /// Ask a probe question every K turns (0: never).
    #[arg(long, default_value_t = ProtocolOptions::default().probe_every)]
    pub probe_every: usize,
    #[arg(long, default_value_t = ProtocolOptions::default().seed)]
    pub seed: u64,
    /// Replace a built-in catalog: KIND=FILE. Repeatable.
    #[arg(long, value_name = "KIND=FILE")]
    pub catalog: Vec<CatalogOverride>,
    /// Draw the user turns from this bank instead of the built-in one (JSON
    /// `{"messages": [...]}`, like templates/users/bank.json), e.g. messages held out
    /// from training.
    #[arg(long, value_name = "FILE")]
    pub user_bank: Option<PathBuf>,
    #[command(flatten)]
    pub judge: JudgeArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

impl Args {
    /// The protocol these flags set.
    fn protocol(&self) -> ProtocolOptions {
        ProtocolOptions {
            turns: self.turns,
            dialogues: self.dialogues,
            kinds: if self.no_instruction {
                Vec::new()
            } else {
                self.constraints.clone()
            },
            probe_every: self.probe_every,
            seed: self.seed,
            sampling: self
                .sampling
                .params(1, gatt::backend::SamplingParams::DEFAULT_MAX_NEW_TOKENS),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    // A folder of an earlier evaluation is rewritten; one that holds other files is not.
    let held = std::fs::read_dir(&args.out).map_or(0, |entries| entries.count());
    if held > 0 && !args.out.join("report.json").exists() {
        return Err(Error::input(format!(
            "--out {}: the folder holds {held} entries and no gatt evaluation (report.json); \
             choose an empty or new folder (eval would replace files of the names it writes)",
            args.out.display()
        )));
    }
    let mut catalog = Catalog::with_overrides(&args.catalog)?;
    if let Some(path) = &args.user_bank {
        catalog.load_user_bank(path)?;
    }
    let judge = args.judge.load(&args.backend)?;
    let bars = Bars::default();
    let report = match &args.input {
        Some(input) => evaluate_file(input, judge.as_deref(), &catalog, &bars)?,
        None => {
            if args.turns == 0 || args.dialogues == 0 {
                return Err(Error::input("--turns and --dialogues must be at least 1"));
            }
            let opts = args.protocol();
            let backends: Vec<BackendArgs> = match &args.backend.endpoint {
                Some(_) => vec![args.backend.clone()],
                None => args
                    .backend
                    .models
                    .iter()
                    .map(|m| args.backend.with_model(m))
                    .collect(),
            };
            // Loaded one at a time, as the evaluation reaches each.
            let loaded = backends.iter().map(BackendArgs::load);
            evaluate_models(loaded, judge.as_deref(), &catalog, &opts, &args.out, &bars)?
        }
    };
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

/// One progress bar per phase of the evaluation.
#[derive(Default)]
struct Bars(RefCell<Option<ProgressBar>>);

impl gatt_eval::evaluate::Progress for Bars {
    fn begin(&self, what: &str, total: Option<usize>) {
        *self.0.borrow_mut() = Some(progress::bar(total.map(|n| n as u64), what));
    }

    fn advance(&self, done: usize) {
        if let Some(pb) = &*self.0.borrow() {
            pb.set_position(done as u64);
        }
    }

    fn end(&self) {
        if let Some(pb) = self.0.borrow_mut().take() {
            pb.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        eval: Args,
    }

    /// Every protocol flag left out gives the library's default, sampling included.
    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let a = Flags::parse_from(["eval", "--out", "x"]).eval;
        assert_eq!(a.protocol(), ProtocolOptions::default());
        assert_eq!(
            a.backend.in_flight,
            gatt::backend::HttpOptions::DEFAULT_IN_FLIGHT
        );
    }
}
