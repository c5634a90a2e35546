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
    if sample.labels.len() != sample.input_ids.len() {
        outln!(
            "warning: labels has {} entries but input_ids has {}: shown as far as both go",
            sample.labels.len(),
            sample.input_ids.len()
        )?;
    }
    let color = std::io::stdout().is_terminal();
    if args.tokens {
        print_table(sample, tokenizer.as_ref())
    } else {
        print_runs(sample, tokenizer.as_ref(), color)
    }
}

fn print_table(s: &MaskedSample, tok: Option<&gatt::tokenizer::HfTokenizer>) -> Result<()> {
    for (i, (id, label)) in s.input_ids.iter().zip(&s.labels).enumerate() {
        // The decoded text, and the vocabulary's own piece (`▁Hello`, `ĠHello`): a
        // piece's leading space can vanish from a decoding of the token alone.
        let (piece, raw) = match tok {
            Some(t) => (
                decode_visibly(t, &[*id]),
                t.id_to_token(*id).unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        let mark = if *label == IGNORE { " " } else { "*" };
        outln!("{i:>6} {id:>7} {mark} {label:>7} {piece:?} {raw}")?;
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
    // A sample whose labels do not match its tokens (which `gatt train` refuses) is
    // shown as far as both go.
    let n = s.input_ids.len().min(s.labels.len());
    while start < n {
        let loss = s.labels[start] != IGNORE;
        let end = (start..n)
            .find(|&i| (s.labels[i] != IGNORE) != loss)
            .unwrap_or(n);
        let ids = &s.input_ids[start..end];
        let text = match tok {
            // Decoded in context, so a run keeps the space its first piece carries
            // (SentencePiece decoders drop it at the start of a decoding).
            Some(t) => {
                let before = decode_visibly(t, &s.input_ids[..start]);
                let upto = decode_visibly(t, &s.input_ids[..end]);
                match upto.strip_prefix(before.as_str()) {
                    Some(run) => run.to_string(),
                    None => decode_visibly(t, ids),
                }
            }
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

/// Decodes `ids`, showing an id the tokenizer does not know as `<?id N>` instead of
/// dropping it (a sample for another model must not look fine).
fn decode_visibly(t: &gatt::tokenizer::HfTokenizer, ids: &[u32]) -> String {
    let mut text = String::new();
    for known in ids.split_inclusive(|&id| t.id_to_token(id).is_none()) {
        let (last, head) = known
            .split_last()
            .expect("split_inclusive gives no empty slice");
        if t.id_to_token(*last).is_none() {
            text.push_str(&t.decode(head, false).unwrap_or_default());
            text.push_str(&format!("<?id {last}>"));
        } else {
            text.push_str(&t.decode(known, false).unwrap_or_default());
        }
    }
    text
}
