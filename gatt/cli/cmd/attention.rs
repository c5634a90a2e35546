//! `gatt attention`: the Llama 2 paper's Figure 10 for one dialogue: how much attention
//! the tokens after the instruction pay to it, per model, side by side.

use super::backend::model_source;
use super::TemplateArgFlags;
use crate::out::outln;
use gatt::dataset::Location;
use gatt::dialogue::{Dialogue, Purpose, Role};
use gatt::mask::{Located, MaskOptions, Masker};
use gatt::model::{ModelSource, DEFAULT_MODEL};
use gatt::{Error, Result};
use gatt_eval::attention::{figure, write_figures, Layout, Reduced, TurnSpan};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Sequences longer than this are refused by default (--max-tokens).
pub const DEFAULT_MAX_TOKENS: usize = 4096;

/// Attention onto the instruction across a dialogue (the Llama 2 paper's Figure 10),
/// for one or more models side by side (e.g. base and GAtt-tuned).
///
/// The dialogue (a record as `gatt synth` or `gatt eval` writes it) is rendered with each
/// model's chat template and run through the model in one forward pass (f32 products, as
/// transformers computes them). The instruction is the record's `instruction` text where
/// the system message or the first user message holds it, else the whole system message;
/// its tokens are those whose bytes overlap it in the rendered text (each message is
/// found as the masker finds replies).
///
/// Definitions, with P[l][h][i][j] the softmax attention probability of query token i
/// onto key token j in head h of layer l:
///   heatmap[j][b] = max over the queries i in bin b of (max over l, h of P[l][h][i][j]),
///     for each instruction token j (the paper's "maximum attention activation across
///     the network"); bins hold --bin consecutive tokens after the instruction, never
///     straddling a turn;
///   mass(i) = sum over the instruction's tokens j of P[l][h][i][j], reduced over l, h by
///     max (mass_max) or mean (mass_mean);
///   per turn (turn t: from user message t to user message t+1): the mean of mass over
///     the turn's tokens after the instruction (turn_mass_*) and over its reply's content
///     tokens (reply_mass_*; the chart).
///
/// Every model reads the same messages (the record's replies, whoever wrote them), so
/// base and tuned are compared on the same text.
///
/// Writes into --out: attention.html (heatmaps, white 0 to dark blue 1, and per-turn
/// curves; opens offline), attention.json (definition, inputs, heatmaps, per-turn
/// values), turns.csv and tokens.csv (every later token's mass).
///
/// Refused (exit 2, naming file, line, record and field): an --id not in the file, a
/// record without an instruction, or whose `instruction` is in neither the system nor
/// the first user message, one the template renders in ways the masker refuses, one
/// longer than --max-tokens or the model's context.
///
/// Examples:
///   gatt attention --input eval/dialogues.jsonl --id eval-00003 --out att
///   gatt attention --input d.jsonl --model default --adapter run1/adapter --out att
///   gatt attention --input d.jsonl --model default --model run1/merged --bin 4 --out att
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Dialogue records (.jsonl or .parquet): `messages`, and `instruction` (optional).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// The record to show [default: the first].
    #[arg(long)]
    pub id: Option<String>,
    /// Output folder (created; files of the names above are replaced).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Models, each shown on its own (repeatable): `default`, a .gguf file or a Hugging
    /// Face folder (e.g. from `gatt train merge`).
    #[arg(long = "model", value_name = "M", default_value = DEFAULT_MODEL)]
    pub models: Vec<String>,
    /// A LoRA adapter folder (peft layout, e.g. a `gatt train` run's adapter/) applied to
    /// the first --model, shown after the models (repeatable).
    #[arg(long = "adapter", value_name = "DIR")]
    pub adapters: Vec<PathBuf>,
    /// Later tokens per heatmap column (bins never straddle a turn).
    #[arg(long, default_value_t = 8)]
    pub bin: usize,
    /// Longest rendered dialogue read, in tokens (the attention's memory grows with its
    /// square: about 8 x heads x tokens² bytes at the peak, 1.2 GB for the default model
    /// at 4096, beside the model in f32).
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// cpu, or cuda (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub template_args: TemplateArgFlags,
}

/// One panel of the figure: a model, maybe with an adapter.
struct Panel {
    name: String,
    source: ModelSource,
    adapter: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if a.bin == 0 {
        return Err(Error::input("--bin must be at least 1"));
    }
    if a.max_tokens == 0 {
        return Err(Error::input("--max-tokens must be at least 1"));
    }
    let (at, dialogue) = find_dialogue(&a.input, a.id.as_deref())?;
    dialogue
        .validate(Purpose::Chat)
        .map_err(|e| e.at(at.clone()))?;
    let instruction = instruction_of(&dialogue).map_err(|e| e.at(at.clone()))?;
    let mut panels = Vec::new();
    for m in &a.models {
        let source = model_source("--model", m)?;
        panels.push(Panel {
            name: file_name(source.path()),
            source,
            adapter: None,
        });
    }
    for ad in &a.adapters {
        let base = &panels[0];
        panels.push(Panel {
            name: format!("{} + {}", base.name, adapter_name(ad)),
            source: base.source.clone(),
            adapter: Some(ad.clone()),
        });
    }
    let mut inputs = vec![("--input", a.input.clone())];
    inputs.extend(
        panels
            .iter()
            .map(|p| ("--model", p.source.path().to_path_buf())),
    );
    for name in [
        "attention.json",
        "attention.html",
        "turns.csv",
        "tokens.csv",
    ] {
        super::refuse_overwriting("--out", &a.out.join(name), &inputs)?;
    }
    let device = gatt_runtime::device(&a.device).map_err(|e| e.context("--device"))?;
    let mut figures = Vec::new();
    let mut runs = Vec::new();
    for p in &panels {
        let started = Instant::now();
        let mut format = p.source.chat_format().map_err(|e| e.context("--model"))?;
        a.template_args.apply(&mut format.template)?;
        let masker = Masker::new(format, MaskOptions::default());
        let located = masker.locate(&dialogue.messages).map_err(|e| {
            Error::input(format!("{}: {e}", p.name))
                .at(Location::default().with_field("messages"))
                .at(at.clone())
        })?;
        let layout = layout(&located, &dialogue, &instruction);
        let n = located.ids.len();
        if n > a.max_tokens {
            return Err(Error::input(format!(
                "the dialogue renders to {n} tokens with {}'s chat template, more than the \
                 limit of {} (--max-tokens; memory grows with the square of the length)",
                p.name, a.max_tokens
            ))
            .at(at.clone()));
        }
        let mut model =
            gatt_runtime::load_model(&p.source, &device).map_err(|e| e.context("--model"))?;
        if n > model.cfg.context_length {
            return Err(Error::input(format!(
                "the dialogue renders to {n} tokens, more than {}'s context of {}",
                p.name, model.cfg.context_length
            ))
            .at(at.clone()));
        }
        if let Some(ad) = &p.adapter {
            gatt_runtime::train::lora::load_peft(&mut model, ad, &device)
                .map_err(|e| e.context("--adapter"))?;
        }
        let summary = model
            .attention_summary(&located.ids, layout.instruction.clone())
            .map_err(|e| Error::runtime(format!("{}: attention: {e}", p.name)))?;
        let reduced = Reduced {
            len: summary.len,
            layers: summary.layers,
            heads: summary.heads,
            max: &summary.max,
            mass: &summary.mass,
        };
        figures.push(figure(&p.name, &layout, &reduced, a.bin)?);
        let seconds = started.elapsed().as_secs_f64();
        runs.push(serde_json::json!({
            "name": p.name,
            "model": p.source.path(),
            "adapter": p.adapter,
            "tokens": n,
            "instruction_tokens": [layout.instruction.start, layout.instruction.end],
            "layers": summary.layers,
            "heads": summary.heads,
            "seconds": (seconds * 100.0).round() / 100.0,
        }));
        outln!(
            "gatt attention: {}: {n} tokens, instruction tokens {}..{}, {} turns ({seconds:.1} s)",
            p.name,
            layout.instruction.start,
            layout.instruction.end,
            layout.turns.len()
        )?;
    }
    let meta = serde_json::json!({
        "input": a.input,
        "id": dialogue.id,
        "instruction": &dialogue.messages[instruction.message].content[instruction.bytes.clone()],
        "instruction_message": instruction.message,
        "bin": a.bin,
        "models": runs,
        "gatt": env!("CARGO_PKG_VERSION"),
    });
    write_figures(&figures, meta, &a.out).map_err(|e| e.context("--out"))?;
    outln!("gatt attention: {}", a.out.join("attention.html").display())?;
    Ok(())
}

/// The record `id` of `input` (the first without one), with its place.
fn find_dialogue(input: &Path, id: Option<&str>) -> Result<(Location, Dialogue)> {
    let mut seen = 0usize;
    for record in gatt::dataset::read_dialogues(input).map_err(|e| e.context("--input"))? {
        let (at, d) = record.map_err(|e| e.context("--input"))?;
        match id {
            Some(id) if d.id != id => seen += 1,
            _ => return Ok((at.with_id(d.id.clone()), d)),
        }
    }
    Err(match id {
        Some(id) => Error::input(format!(
            "--id {id}: no record with this id among the {seen} records of the file"
        )),
        None => Error::input("--input: the file holds no records"),
    }
    .at(Location::in_file(input)))
}

/// Where the instruction is: a message and a byte range of its content.
struct Instruction {
    message: usize,
    bytes: Range<usize>,
}

/// The record's `instruction` in its system message, or else its first user message;
/// without one, the whole system message.
fn instruction_of(d: &Dialogue) -> Result<Instruction> {
    let system = d.messages.iter().position(|m| m.role == Role::System);
    let first_user = d.messages.iter().position(|m| m.role == Role::User);
    let text = d.instruction.trim();
    if text.is_empty() {
        return match system {
            Some(message) => Ok(Instruction {
                message,
                bytes: 0..d.messages[message].content.len(),
            }),
            None => Err(Error::input(
                "no instruction: the record's `instruction` is empty and it has no system \
                 message; give the instruction in `instruction` (as gatt synth writes it) \
                 and in the system or first user message",
            )
            .at(Location::default().with_field("instruction"))),
        };
    }
    for message in [system, first_user].into_iter().flatten() {
        if let Some(at) = d.messages[message].content.find(text) {
            return Ok(Instruction {
                message,
                bytes: at..at + text.len(),
            });
        }
    }
    Err(Error::input(format!(
        "the instruction {:?} is in neither the system message nor the first user message \
         (GAtt gives it once, at the start)",
        short(text)
    ))
    .at(Location::default().with_field("instruction")))
}

/// Up to 60 characters of `s`.
fn short(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// Token spans of the instruction and the turns in the rendered dialogue.
fn layout(l: &Located, d: &Dialogue, ins: &Instruction) -> Layout {
    let place = &l.messages[ins.message];
    let (start, end) = (
        place.content.start + ins.bytes.start,
        place.content.start + ins.bytes.end,
    );
    // Every token whose bytes overlap the instruction's.
    let first = l.offsets.partition_point(|o| o.1 <= start);
    let last = l.offsets.partition_point(|o| o.0 < end);
    let users: Vec<usize> = (0..d.messages.len())
        .filter(|&i| d.messages[i].role == Role::User)
        .collect();
    let turns = users
        .iter()
        .enumerate()
        .map(|(t, &u)| {
            let end = users
                .get(t + 1)
                .map_or(l.ids.len(), |&next| l.messages[next].tokens.start);
            let reply = d
                .messages
                .get(u + 1)
                .filter(|m| m.role == Role::Assistant)
                .map(|_| l.messages[u + 1].content_tokens.clone());
            TurnSpan {
                turn: t + 1,
                tokens: l.messages[u].tokens.start..end,
                reply,
            }
        })
        .collect();
    let pieces = l
        .offsets
        .iter()
        .map(|&(a, b)| l.text.get(a..b).unwrap_or("").to_string())
        .collect();
    Layout {
        instruction: first..last.max(first + 1).min(l.ids.len()),
        turns,
        pieces,
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

/// An adapter's name: its folder, or the run folder holding `adapter/`.
fn adapter_name(p: &Path) -> String {
    let name = file_name(p);
    match p.parent() {
        Some(parent) if name == "adapter" && parent.file_name().is_some() => {
            format!("{}/adapter", file_name(parent))
        }
        _ => name,
    }
}
