//! `gatt inspect`: one masked sample, token by token, with the loss tokens marked.

use super::FormatArgs;
use crate::out::outln;
use gatt::mask::{MaskedSample, IGNORE};
use gatt::{Error, Result};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Show a masked sample with its loss tokens highlighted (green on a terminal, [[...]]
/// when piped), to check by eye what the trainer will learn from.
///
/// Without --model/--tokenizer the token ids are shown instead of text.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// A masked file written by `gatt mask` (.parquet or .jsonl).
    pub file: PathBuf,
    /// Row to show (0-based), or use --id.
    #[arg(long, default_value_t = 0)]
    pub row: usize,
    /// Show the sample with this id instead of --row.
    #[arg(long)]
    pub id: Option<String>,
    /// One line per token: index, id, label, token text.
    #[arg(long)]
    pub tokens: bool,
    #[command(flatten)]
    pub format: FormatArgs,
}

pub fn run(args: Args) -> Result<()> {
    let samples = gatt::dataset::read_samples(&args.file)?;
    let sample = match &args.id {
        Some(id) => samples.iter().find(|s| &s.id == id).ok_or_else(|| {
            Error::input(format!("{}: no sample with id `{id}`", args.file.display()))
        })?,
        None => samples.get(args.row).ok_or_else(|| {
            Error::input(format!(
                "{}: --row {} out of range (the file has {} samples)",
                args.file.display(),
                args.row,
                samples.len()
            ))
        })?,
    };
    let tokenizer = if args.format.model.is_some() || args.format.tokenizer.is_some() {
        Some(args.format.load()?.tokenizer)
    } else {
        None
    };
    outln!(
        "id {}: {} tokens, {} with loss",
        sample.id,
        sample.n_tokens(),
        sample.n_loss_tokens()
    )?;
    let color = std::io::stdout().is_terminal();
    if args.tokens {
        print_table(sample, tokenizer.as_ref())
    } else {
        print_runs(sample, tokenizer.as_ref(), color)
    }
}

fn print_table(s: &MaskedSample, tok: Option<&gatt::tokenizer::HfTokenizer>) -> Result<()> {
    for (i, (id, label)) in s.input_ids.iter().zip(&s.labels).enumerate() {
        let piece = tok
            .and_then(|t| t.decode(&[*id], false).ok())
            .unwrap_or_default();
        let mark = if *label == IGNORE { " " } else { "*" };
        outln!("{i:>6} {id:>7} {mark} {label:>7} {piece:?}")?;
    }
    Ok(())
}

/// Contiguous runs of tokens with the same loss flag, decoded together.
fn print_runs(
    s: &MaskedSample,
    tok: Option<&gatt::tokenizer::HfTokenizer>,
    color: bool,
) -> Result<()> {
    let mut out = String::new();
    let mut start = 0;
    while start < s.input_ids.len() {
        let loss = s.labels[start] != IGNORE;
        let end = (start..s.input_ids.len())
            .find(|&i| (s.labels[i] != IGNORE) != loss)
            .unwrap_or(s.input_ids.len());
        let ids = &s.input_ids[start..end];
        let text = match tok {
            Some(t) => t.decode(ids, false).unwrap_or_default(),
            None => ids.iter().map(|i| format!("{i} ")).collect(),
        };
        match (loss, color) {
            (true, true) => out.push_str(&format!("\x1b[1;32m{text}\x1b[0m")),
            (true, false) => out.push_str(&format!("[[{text}]]")),
            (false, _) => out.push_str(&text),
        }
        start = end;
    }
    outln!("{out}")
}
