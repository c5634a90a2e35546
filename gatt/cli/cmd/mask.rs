//! `gatt mask`: dialogue records in, train-ready masked samples out.

use super::FormatArgs;
use crate::out::outln;
use crate::progress;
use gatt::dataset::{read_dialogues, Format, SampleWriter};
use gatt::mask::{MaskOptions, MaskedSample, Masker, Policy, SkipReason, Truncate};
use gatt::{Error, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Build loss masks: tokenize each dialogue with the model's chat template and mark the
/// tokens that carry loss.
///
/// The input's messages are masked as given (for GAtt data the instruction is already in
/// the first turn only). With the default policy `gatt` only the final assistant reply and
/// its end-of-turn token carry loss; every earlier token, earlier replies included, gets
/// label -100. Each sample is verified: the loss tokens must decode to exactly the reply
/// plus its end-of-turn marker, and the tokens before it must be exactly the prompt the
/// model sees at inference. A record that cannot be masked exactly fails (or, with
/// `--on-error skip`, is skipped and counted); nothing is truncated silently.
///
/// Output columns: id, input_ids (u32), labels (i64, -100 = no loss, unshifted),
/// attention_mask, n_tokens, n_loss_tokens.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Dialogue records: .jsonl or .parquet (`messages: [{role, content}]`, or ShareGPT
    /// `conversations: [{from, value}]`).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output file (.parquet or .jsonl); written atomically.
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub mask: MaskFlags,
    /// What to do with a record that cannot be masked exactly.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    pub on_error: OnError,
    /// Output format (default: from the --out extension).
    #[arg(long, value_enum)]
    pub out_format: Option<Format>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Loss policy and length limits, shared with `gatt synth --mask`.
#[derive(clap::Args, Debug, Clone)]
pub struct MaskFlags {
    /// Which tokens carry loss.
    #[arg(long, value_enum, default_value_t = Policy::Gatt)]
    pub policy: Policy,
    /// Skip records longer than N tokens (counted in the summary), unless --truncate.
    #[arg(long, value_name = "N")]
    pub max_len: Option<usize>,
    /// With --max-len: drop the oldest turns (keeping the system message and the final
    /// reply) instead of skipping.
    #[arg(long, value_enum, requires = "max_len")]
    pub truncate: Option<Truncate>,
}

impl MaskFlags {
    pub fn options(&self) -> MaskOptions {
        MaskOptions {
            policy: self.policy,
            max_len: self.max_len,
            truncate: self.truncate,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Stop at the first bad record (exit status 2).
    Fail,
    /// Skip it and count it by reason.
    Skip,
}

/// Records masked per parallel batch.
const BATCH: usize = 1024;

#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub records: usize,
    pub samples: usize,
    pub tokens: usize,
    pub loss_tokens: usize,
    pub skipped: BTreeMap<&'static str, usize>,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| Error::runtime(format!("thread pool: {e}")))?;
    }
    let out_format = match args.out_format {
        Some(f) => f,
        None => Format::from_path(&args.out)?,
    };
    let masker = Masker::new(args.format.load()?, args.mask.options());
    let summary = mask_file(&masker, &args.input, &args.out, out_format, args.on_error)?;
    report(&summary, &args.out);
    outln!("{}", serde_json::to_string(&summary).unwrap_or_default())?;
    Ok(())
}

/// Masks every record of `input` into `out`; shared with `gatt synth --mask`.
pub fn mask_file(
    masker: &Masker,
    input: &Path,
    out: &Path,
    out_format: Format,
    on_error: OnError,
) -> Result<Summary> {
    let mut records = read_dialogues(input)?;
    let mut writer = SampleWriter::create(out, out_format)?;
    let mut summary = Summary::default();
    let pb = progress::bar(None, "records");
    // Writing (Parquet encoding, compression) runs on its own thread, overlapping the
    // masking of the next batch.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<MaskedSample>>(2);
    let written = std::thread::scope(|scope| -> Result<SampleWriter> {
        let writer_thread = scope.spawn(move || -> Result<SampleWriter> {
            for batch in rx {
                for s in &batch {
                    writer.write(s)?;
                }
            }
            Ok(writer)
        });
        let masked = mask_batches(masker, &mut records, on_error, &mut summary, &pb, &tx);
        drop(tx);
        let writer = writer_thread
            .join()
            .expect("the writer thread does not panic");
        masked?;
        writer
    });
    let writer = written?;
    pb.finish_and_clear();
    if summary.samples == 0 {
        return Err(Error::input(format!(
            "{}: no record could be masked ({} records); output not written",
            input.display(),
            summary.records
        )));
    }
    writer.finish()?;
    Ok(summary)
}

/// Masks `records` batch by batch in parallel, counting into `summary` and sending the
/// samples to the writer, in input order.
fn mask_batches(
    masker: &Masker,
    records: &mut gatt::dataset::Records,
    on_error: OnError,
    summary: &mut Summary,
    pb: &indicatif::ProgressBar,
    tx: &std::sync::mpsc::SyncSender<Vec<MaskedSample>>,
) -> Result<()> {
    loop {
        let batch: Vec<_> = records.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            return Ok(());
        }
        let results: Vec<_> = batch
            .into_par_iter()
            .map(|r| r.map(|(loc, d)| (masker.mask(&d), loc, d.id)))
            .collect();
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            summary.records += 1;
            let (result, loc, id) = match r {
                Ok(x) => x,
                Err(e) if on_error == OnError::Skip => {
                    *summary.skipped.entry("unreadable").or_default() += 1;
                    pb.suspend(|| eprintln!("gatt: skipped: {e}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match result {
                Ok(samples) => {
                    for s in samples {
                        summary.samples += 1;
                        summary.tokens += s.n_tokens();
                        summary.loss_tokens += s.n_loss_tokens();
                        out.push(s);
                    }
                }
                Err(e) if on_error == OnError::Skip => {
                    *summary.skipped.entry(e.reason.as_str()).or_default() += 1;
                }
                Err(e) => {
                    return Err(Error::input(format!("{e}{}", hint(e.reason))).at(loc.with_id(id)))
                }
            }
        }
        // A closed channel means the writer failed; its error is reported by the caller.
        if tx.send(out).is_err() {
            return Ok(());
        }
        pb.set_position(summary.records as u64);
        pb.set_message(format!("{} tokens", summary.tokens));
    }
}

fn hint(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::TooLong => "; raise --max-len, or pass --truncate left",
        SkipReason::Invalid => "",
        _ => "; pass --on-error skip to skip such records and count them",
    }
}

pub fn report(s: &Summary, out: &Path) {
    eprintln!(
        "gatt mask: {} records -> {} samples in {}; {} tokens, {} with loss ({:.1}%)",
        s.records,
        s.samples,
        out.display(),
        s.tokens,
        s.loss_tokens,
        100.0 * s.loss_tokens as f64 / s.tokens.max(1) as f64
    );
    if !s.skipped.is_empty() {
        let parts: Vec<String> = s.skipped.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        eprintln!(
            "gatt mask: skipped {} ({})",
            s.skipped.values().sum::<usize>(),
            parts.join(", ")
        );
    }
}
