//! `gatt mask`: dialogue records in, train-ready masked samples out.

use super::FormatArgs;
use crate::out::outln;
use crate::progress;
use crate::values::{
    CutRepliesArg, ExportArg, FormatArg, OnErrorArg, PolicyArg, SpecialTextArg, TruncateArg,
};
use gatt::dataset::Format;
use gatt::mask::pipeline::{self, OnError, Output, PipelineError, Summary};
use gatt::mask::{CutReplies, MaskOptions, Masker, Policy, SkipReason, SpecialText};
use gatt::{Error, Result};
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
/// `--on-error skip`, is skipped and counted); nothing is truncated silently. Message
/// content that holds the text of a special token (e.g. `<|im_end|>` in a reply) is
/// refused as special_token_in_content, since the tokenizer would read it as the token
/// itself; `--special-text encode` encodes it as ordinary text instead. A record whose
/// meta.finished says a reply was cut at the token limit is refused as cut_reply (its
/// end-of-turn token would teach the model to stop mid-sentence); see --cut-replies.
///
/// Output columns (--export gatt): id, input_ids (u32), labels (i64, -100 = no loss,
/// unshifted), attention_mask, n_tokens, n_loss_tokens. Other layouts (--export), each
/// rendered from the same verified samples: `openai` (chat JSON lines, "weight": 0 on
/// assistant messages without loss), `prompt-completion` (TRL's conversational
/// layout), `tokenized` (exactly input_ids, attention_mask, labels). With
/// --policy gatt-expand each holds one row per assistant turn.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Dialogue records: .jsonl or .parquet (`messages: [{role, content}]`, or ShareGPT
    /// `conversations: [{from, value}]` with an optional top-level `system`). A record
    /// with both `messages` and `conversations` is an input error.
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
    #[arg(long, value_enum, default_value_t = OnError::default().into())]
    pub on_error: OnErrorArg,
    /// Records whose meta.finished says a reply was cut at the token limit.
    #[arg(long, value_enum, default_value_t = CutReplies::default().into())]
    pub cut_replies: CutRepliesArg,
    /// Output format (default: from the --out extension).
    #[arg(long, value_enum)]
    pub out_format: Option<FormatArg>,
    /// Layout of the output rows, for the trainer that reads them (see the README's
    /// "Consumers" table). openai is JSON lines only; openai and prompt-completion
    /// mark loss by message, so they take --policy gatt or gatt-expand (openai also
    /// assistant).
    #[arg(long, value_enum, default_value_t = ExportArg::Gatt)]
    pub export: ExportArg,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Loss policy, length limits and special-token text, shared with `gatt synth --mask`.
#[derive(clap::Args, Debug, Clone)]
pub struct MaskFlags {
    /// Which tokens carry loss.
    #[arg(long, value_enum, default_value_t = Policy::default().into())]
    pub policy: PolicyArg,
    /// Skip records longer than N tokens (counted in the summary), unless --truncate.
    #[arg(long, value_name = "N")]
    pub max_len: Option<usize>,
    /// With --max-len: drop the oldest turns (keeping the system message, the final
    /// exchange, and the first exchange when its user turn carries the record's
    /// instruction) instead of skipping.
    #[arg(long, value_enum, requires = "max_len")]
    pub truncate: Option<TruncateArg>,
    /// Message content that holds the text of a special token (e.g. `<|im_end|>`),
    /// which the tokenizer would read as the token itself: refuse the record, or encode
    /// the text as ordinary tokens.
    #[arg(long, value_enum, default_value_t = SpecialText::default().into())]
    pub special_text: SpecialTextArg,
}

impl MaskFlags {
    /// The library's masking options these flags name.
    pub fn options(&self) -> MaskOptions {
        MaskOptions {
            policy: self.policy.into(),
            max_len: self.max_len,
            truncate: self.truncate.map(Into::into),
            special_text: self.special_text.into(),
            cut_replies: CutReplies::default(),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| Error::runtime(format!("thread pool: {e}")))?;
    }
    let out_format = match args.out_format {
        Some(f) => f.into(),
        None => Format::from_path(&args.out)
            .map_err(|e| Error::input(format!("{e} (or pass --out-format)")))?,
    };
    super::refuse_overwriting("--out", &args.out, &args.format.input_files())?;
    let options = MaskOptions {
        cut_replies: args.cut_replies.into(),
        ..args.mask.options()
    };
    let masker = Masker::new(args.format.load()?, options);
    let output = Output {
        path: args.out.clone(),
        format: out_format,
        export: args.export.into(),
    };
    let summary = mask_file(&masker, &args.input, &[output], args.on_error.into())?;
    report(&summary, &args.out.display().to_string());
    outln!("{}", serde_json::to_string(&summary).unwrap_or_default())?;
    Ok(())
}

/// Masks every record of `input` into each of `outputs` with a progress bar; a record
/// that cannot be masked fails with a hint naming the flags that would let it through.
/// Shared with `gatt synth --mask`.
pub fn mask_file(
    masker: &Masker,
    input: &Path,
    outputs: &[Output],
    on_error: OnError,
) -> Result<Summary> {
    for o in outputs {
        if let Some(why) = o.export.refusal(masker.options(), o.format) {
            return Err(Error::input(format!("--export {}: {why}", o.export)));
        }
    }
    let bar = Bar(progress::bar(None, "records"));
    let result = pipeline::mask_to(masker, input, outputs, on_error, &bar);
    bar.0.finish_and_clear();
    result.map_err(|e| match e {
        PipelineError::Record {
            location,
            id,
            error,
        } => Error::input(format!("{error}{}", hint(error.reason, masker.options())))
            .at(location.with_id(id)),
        PipelineError::Other(e) => e,
    })
}

/// The progress bar of a masking run.
struct Bar(indicatif::ProgressBar);

impl pipeline::Progress for Bar {
    fn update(&self, s: &Summary) {
        self.0.set_position(s.records as u64);
        self.0.set_message(format!("{} tokens", s.tokens));
    }

    fn skipped_unreadable(&self, e: &Error) {
        self.0.suspend(|| eprintln!("gatt: skipped: {e}"));
    }
}

/// The flags that would let a record refused for `reason` through (not those already
/// given: with --truncate left a record still too long needs a higher --max-len).
fn hint(reason: SkipReason, opts: &MaskOptions) -> &'static str {
    match reason {
        SkipReason::TooLong if opts.truncate.is_some() => {
            "; raise --max-len, or pass --on-error skip to skip such records and count them"
        }
        SkipReason::TooLong => "; raise --max-len, or pass --truncate left",
        SkipReason::Invalid => "",
        SkipReason::CutReply => {
            "; pass --cut-replies drop-eot to train a cut final reply without its end-of-turn \
             token, --cut-replies keep to train it as it is, or --on-error skip to skip such \
             records and count them"
        }
        SkipReason::TemplateRewritesHistory => {
            "; where the template reads a switch such as `enable_thinking`, pass it with \
             --template-arg (e.g. --template-arg enable_thinking=true), or --on-error skip \
             to skip such records and count them"
        }
        SkipReason::SpecialTokenInContent => {
            "; pass --special-text encode to encode such text as ordinary tokens, or \
             --on-error skip to skip such records and count them"
        }
        _ => "; pass --on-error skip to skip such records and count them",
    }
}

/// Prints the counts of a masking run that wrote `out` (one path or a list).
pub fn report(s: &Summary, out: &str) {
    eprintln!(
        "gatt mask: {} records -> {} samples in {}; {} tokens, {} with loss ({:.1}%)",
        s.records,
        s.samples,
        out,
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
    if !s.skipped_samples.is_empty() {
        let parts: Vec<String> = s
            .skipped_samples
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        eprintln!(
            "gatt mask: skipped {} samples of records otherwise masked ({})",
            s.skipped_samples.values().sum::<usize>(),
            parts.join(", ")
        );
    }
}
