//! Loss masks: which tokens of a rendered conversation the trainer learns from.
//!
//! The flow for one record is
//! `render (template) -> reply spans (text) -> tokenize once -> align spans to tokens ->
//! verify -> labels`. Nothing depends on `{% generation %}` tags: a reply's span is
//! found by rendering the conversation up to it with the generation prompt (exactly the
//! text the model sees at inference) and checking that the whole conversation continues
//! that text with the reply and an end-of-turn marker.
//!
//! Message content that holds the text of a special token is refused by default, or
//! encoded as ordinary text ([`SpecialText`]): never read as the token itself.
//!
//! [`Masker`] masks one record; [`pipeline`] masks a whole file in parallel.

mod align;
mod content;
mod cut;
pub mod export;
mod located;
pub mod pipeline;
mod spans;
mod special;

pub use cut::CutReplies;
pub use located::{Located, MessagePlace};
pub use special::SpecialText;

use crate::dialogue::{Dialogue, Message, Purpose, Role};
use crate::model::ChatFormat;
use crate::template::ChatTemplate;
use serde::Serialize;
use tokenizers::Tokenizer;

/// Label value that carries no loss (what PyTorch's cross-entropy ignores).
pub const IGNORE: i64 = -100;

/// Which tokens carry loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Only the final assistant reply and its end-of-turn marker (the paper's GAtt).
    #[default]
    Gatt,
    /// One sample per assistant turn: the conversation up to that reply, loss only on it.
    GattExpand,
    /// Every assistant reply (ordinary SFT, for ablations).
    Assistant,
    /// Every token.
    All,
}

crate::names::named_values!(Policy {
    Gatt => "gatt",
    GattExpand => "gatt-expand",
    Assistant => "assistant",
    All => "all",
});

/// How to treat records longer than [`MaskOptions::max_len`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Truncate {
    /// Drop the oldest user/assistant pairs (keeping the system message and the final
    /// exchange intact) until the record fits. When the first user turn carries the
    /// record's `instruction` (and the system message does not), that first exchange is
    /// kept too, so the final reply is never trained without its instruction.
    Left,
}

crate::names::named_values!(Truncate {
    Left => "left",
});

/// How [`Masker`] builds samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaskOptions {
    /// Which tokens carry loss.
    pub policy: Policy,
    /// Longest record in tokens (the whole rendered conversation); longer ones fail
    /// with [`SkipReason::TooLong`] unless truncated. `None`: no limit.
    pub max_len: Option<usize>,
    /// Shortens records longer than `max_len` instead of refusing them.
    pub truncate: Option<Truncate>,
    /// What to do with message content that holds the text of a special token: refuse
    /// the record ([`SkipReason::SpecialTokenInContent`], the default) or encode the
    /// text as ordinary tokens.
    pub special_text: SpecialText,
    /// What to do with a record whose `meta.finished` says a reply was cut at the token
    /// limit: refuse it ([`SkipReason::CutReply`], the default), or train a cut final
    /// reply without its end-of-turn token, or keep it as is.
    pub cut_replies: CutReplies,
}

/// One training sample, in the layout Hugging Face trainers read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskedSample {
    /// The record's id; expanded samples get `ID#TURN`.
    pub id: String,
    /// Token ids of the whole rendered conversation, as the model reads it.
    pub input_ids: Vec<u32>,
    /// Aligned with `input_ids` (the trainer shifts): the token id where there is
    /// loss, [`IGNORE`] elsewhere.
    pub labels: Vec<i64>,
    /// All ones, one per token (samples are not padded; trainers pad batches).
    pub attention_mask: Vec<u8>,
}

impl MaskedSample {
    /// Tokens in the sample.
    pub fn n_tokens(&self) -> usize {
        self.input_ids.len()
    }
    /// Tokens that carry loss.
    pub fn n_loss_tokens(&self) -> usize {
        self.labels.iter().filter(|l| **l != IGNORE).count()
    }
}

/// A record's samples with the messages they were built from: what the exports
/// ([`export`]) render, so that every export of a record comes from the same verified
/// samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedRecord {
    /// The messages as masked: the record's, less the oldest pairs `--truncate left`
    /// dropped.
    pub messages: Vec<Message>,
    /// The policy the samples were built under (which replies carry loss).
    pub policy: Policy,
    /// The samples, in order.
    pub samples: Vec<RecordSample>,
    /// Under [`Policy::GattExpand`], why the replies that gave no sample were refused
    /// (each error names its message); empty under the other policies.
    pub skipped: Vec<MaskError>,
}

/// One sample of a [`MaskedRecord`] and the messages it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordSample {
    /// The verified sample.
    pub sample: MaskedSample,
    /// The sample covers `messages[..end]` of its record (the whole record, or, under
    /// [`Policy::GattExpand`], the conversation up to one reply); `messages[end - 1]` is
    /// the reply the sample's final loss tokens hold.
    pub end: usize,
}

/// Why a record produced no sample; a run that skips such records counts them by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The record is malformed (role order, empty content, no final reply).
    Invalid,
    /// The template raised an error or could not render.
    TemplateError,
    /// The template renders earlier turns differently once later turns follow.
    TemplateRewritesHistory,
    /// The template changes the reply's text (e.g. strips it).
    TemplateAltersReply,
    /// No end-of-turn marker follows a reply.
    NoEndOfTurn,
    /// A token crosses the boundary between template text and reply.
    SeamMerge,
    /// The loss tokens do not decode to the reply and its marker.
    DecodeMismatch,
    /// Longer than [`MaskOptions::max_len`] (and not truncated).
    TooLong,
    /// No token carries loss.
    EmptyMask,
    /// The template's `{% generation %}` block of a reply does not enclose exactly the
    /// reply and its end-of-turn marker (the tokens the loss covers).
    GenerationMismatch,
    /// A message's content holds the text of a special token (e.g. `<|im_end|>`), which
    /// the tokenizer would read as the token itself; see [`SpecialText`].
    SpecialTokenInContent,
    /// A reply was cut at the token limit (`meta.finished`), see [`CutReplies`].
    CutReply,
}

impl SkipReason {
    /// The reason's name, as summaries count it (`seam_merge`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Invalid => "invalid",
            SkipReason::TemplateError => "template_error",
            SkipReason::TemplateRewritesHistory => "template_rewrites_history",
            SkipReason::TemplateAltersReply => "template_alters_reply",
            SkipReason::NoEndOfTurn => "no_end_of_turn",
            SkipReason::SeamMerge => "seam_merge",
            SkipReason::DecodeMismatch => "decode_mismatch",
            SkipReason::TooLong => "too_long",
            SkipReason::EmptyMask => "empty_mask",
            SkipReason::GenerationMismatch => "generation_mismatch",
            SkipReason::SpecialTokenInContent => "special_token_in_content",
            SkipReason::CutReply => "cut_reply",
        }
    }
}

/// A record that cannot be masked exactly: it is refused, never written wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskError {
    /// Which check failed (what a skipping run counts).
    pub reason: SkipReason,
    /// What was found, for the person who reads the error (the message, the tokens).
    pub detail: String,
}

impl std::error::Error for MaskError {}

impl MaskError {
    pub(crate) fn new(reason: SkipReason, detail: impl Into<String>) -> Self {
        MaskError {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for MaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.reason.as_str())
    }
}

/// Builds masked samples for one model's template and tokenizer.
pub struct Masker {
    template: ChatTemplate,
    tokenizer: Tokenizer,
    /// The special tokens: text between them is tokenized independently, and message
    /// content must not produce them.
    specials: special::Specials,
    opts: MaskOptions,
}

impl Masker {
    /// A masker for `format`'s chat template and tokenizer (its post-processor is
    /// dropped: the template writes every special token itself).
    pub fn new(format: ChatFormat, opts: MaskOptions) -> Self {
        let ChatFormat {
            mut tokenizer,
            template,
            ..
        } = format;
        // Special tokens come from the template text; a post-processor would only add
        // tokens or trim offsets, both wrong here (transformers tokenizes chat
        // templates with add_special_tokens=False).
        tokenizer.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        let specials = special::Specials::new(&tokenizer);
        Masker {
            template,
            tokenizer,
            specials,
            opts,
        }
    }

    /// The options samples are built with.
    pub fn options(&self) -> &MaskOptions {
        &self.opts
    }

    /// The chat template samples are rendered with.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The tokenizer samples are tokenized with.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The stamp of that tokenizer, written into sample files.
    pub fn tokenizer_stamp(&self) -> crate::dataset::TokenizerStamp {
        crate::dataset::TokenizerStamp::of(&self.tokenizer)
    }

    /// Masks one record (whose messages already carry the instruction where training
    /// wants it); every sample is verified before it is returned.
    ///
    /// # Errors
    ///
    /// A [`MaskError`] whose reason says which check refused the record; content that
    /// holds special-token text is refused unless [`MaskOptions::special_text`] says to
    /// encode it.
    pub fn mask(&self, d: &Dialogue) -> Result<Vec<MaskedSample>, MaskError> {
        let record = self.mask_record(d)?;
        match record.skipped.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(record.samples.into_iter().map(|s| s.sample).collect()),
        }
    }

    /// Masks one record as [`Masker::mask`] does, keeping the messages each sample
    /// covers (what [`export`] renders). Under [`Policy::GattExpand`] a reply that
    /// cannot be masked exactly costs only its own sample: it is returned in
    /// [`MaskedRecord::skipped`] and the other replies' samples are kept.
    ///
    /// # Errors
    ///
    /// A [`MaskError`] when the record as a whole cannot be masked (or, under
    /// [`Policy::GattExpand`], when no reply can).
    pub fn mask_record(&self, d: &Dialogue) -> Result<MaskedRecord, MaskError> {
        let _record = crate::template::memory::record_scope(&d.id);
        d.validate(Purpose::Training)
            .map_err(|e| MaskError::new(SkipReason::Invalid, e.to_string()))?;
        let end_of_turn = cut::final_end_of_turn(d, self.opts.cut_replies, self.opts.policy)?;
        let mut messages = d.messages.clone();
        let kept = kept_at_start(d);
        loop {
            let found = self.specials.find(&messages);
            if let (Some((i, text)), SpecialText::Refuse) = (found, self.opts.special_text) {
                let dropped = d.messages.len() - messages.len();
                return Err(special::in_content(record_index(i, kept, dropped), text));
            }
            let (full, generation) = self
                .template
                .render_generation(&messages, false)
                .map_err(|e| MaskError::new(SkipReason::TemplateError, e.to_string()))?;
            let enc = match found {
                None => special::encode(&self.tokenizer, &full)?,
                Some(_) => {
                    self.specials
                        .encode_apart(&self.tokenizer, &self.template, &messages, &full)?
                }
            };
            if let Some(max) = self.opts.max_len {
                if enc.ids.len() > max {
                    if self.opts.truncate == Some(Truncate::Left)
                        && drop_oldest_pair(&mut messages, kept)
                    {
                        continue;
                    }
                    let first = d.messages.first().map(|m| m.role) == Some(Role::System);
                    let truncated = match self.opts.truncate {
                        None => "",
                        Some(_) if kept > usize::from(first) => {
                            " even with every earlier exchange but the first (which carries \
                             the instruction) dropped"
                        }
                        Some(_) => " even with every earlier exchange dropped",
                    };
                    return Err(MaskError::new(
                        SkipReason::TooLong,
                        format!(
                            "{} tokens, more than the limit of {max}{truncated}",
                            enc.ids.len()
                        ),
                    ));
                }
            }
            let (samples, skipped) = self.samples(
                &d.id,
                &messages,
                &full,
                generation.as_deref(),
                &enc,
                end_of_turn,
            )?;
            return Ok(MaskedRecord {
                messages,
                policy: self.opts.policy,
                samples,
                skipped,
            });
        }
    }

    fn render(&self, messages: &[Message], gen_prompt: bool) -> Result<String, MaskError> {
        self.template
            .render(messages, gen_prompt)
            .map_err(|e| MaskError::new(SkipReason::TemplateError, e.to_string()))
    }

    fn samples(
        &self,
        id: &str,
        messages: &[Message],
        full: &str,
        generation: Option<&[std::ops::Range<usize>]>,
        enc: &special::Encoded,
        end_of_turn: bool,
    ) -> Result<(Vec<RecordSample>, Vec<MaskError>), MaskError> {
        let (ids, offsets) = (enc.ids.as_slice(), enc.offsets.as_slice());
        // The text between special tokens is re-tokenized as it was tokenized.
        let stretch = if enc.apart {
            &self.specials.plain
        } else {
            &self.tokenizer
        };
        if self.opts.policy == Policy::All {
            let everything = 0..ids.len();
            return Ok((
                vec![RecordSample {
                    sample: sample(
                        id.to_string(),
                        ids,
                        ids.len(),
                        std::slice::from_ref(&everything),
                    )?,
                    end: messages.len(),
                }],
                Vec::new(),
            ));
        }
        let replies: Vec<usize> = match self.opts.policy {
            Policy::Gatt => vec![messages.len() - 1],
            _ => messages
                .iter()
                .enumerate()
                .filter(|(_, m)| m.role == Role::Assistant)
                .map(|(i, _)| i)
                .collect(),
        };
        let reply_tokens = |i: usize| -> Result<std::ops::Range<usize>, MaskError> {
            let prompt = self.render(&messages[..i], true)?;
            let mut span =
                spans::reply_span(&self.template, full, &prompt, &messages[i].content, i)?;
            if let Some(blocks) = generation {
                spans::check_generation(full, messages, blocks, &span, i)?;
            }
            if !end_of_turn && i + 1 == messages.len() {
                // A cut final reply: its tokens carry loss, its end-of-turn marker does not.
                span.end = span.content_end;
            }
            let tokens = align::token_span(
                offsets,
                (full, ids, &self.specials.ids),
                span.start,
                span.end,
                i,
            )?;
            align::verify_prompt(
                stretch,
                &self.specials.ids,
                full,
                ids,
                offsets,
                tokens.start,
            )?;
            align::verify_decode(
                &self.tokenizer,
                &self.specials.ids,
                full,
                ids,
                offsets,
                &span,
                &tokens,
                i,
            )?;
            self.specials.verify_reply(full, enc, &span, &tokens, i)?;
            Ok(tokens)
        };
        if self.opts.policy == Policy::GattExpand {
            // One sample per reply: a reply that cannot be masked costs its own sample.
            let (mut samples, mut skipped) = (Vec::with_capacity(replies.len()), Vec::new());
            for (turn, &i) in replies.iter().enumerate() {
                let made = reply_tokens(i).and_then(|t| {
                    sample(
                        format!("{id}#{}", turn + 1),
                        ids,
                        t.end,
                        std::slice::from_ref(&t),
                    )
                });
                match made {
                    Ok(sample) => samples.push(RecordSample { sample, end: i + 1 }),
                    Err(e) => skipped.push(e),
                }
            }
            if samples.is_empty() {
                return Err(skipped.remove(0));
            }
            return Ok((samples, skipped));
        }
        let token_spans = replies
            .iter()
            .map(|&i| reply_tokens(i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            vec![RecordSample {
                sample: sample(id.to_string(), ids, ids.len(), &token_spans)?,
                end: messages.len(),
            }],
            Vec::new(),
        ))
    }
}

/// How many messages at the start of `d` truncation keeps: the system message, and the
/// first user/assistant pair when the first user turn carries the record's instruction
/// (`--placement first-user`): the final reply must not be trained without it.
fn kept_at_start(d: &Dialogue) -> usize {
    let system = usize::from(d.messages.first().map(|m| m.role) == Some(Role::System));
    let in_system = system == 1 && d.messages[0].content.contains(d.instruction.as_str());
    let in_first_user = d
        .messages
        .get(system)
        .is_some_and(|m| m.role == Role::User && m.content.contains(d.instruction.as_str()));
    if !d.instruction.is_empty() && !in_system && in_first_user {
        system + 2
    } else {
        system
    }
}

/// The index in the record of `messages[i]`, after `dropped` messages were removed by
/// [`drop_oldest_pair`] behind the `kept` first ones.
fn record_index(i: usize, kept: usize, dropped: usize) -> usize {
    if i < kept {
        i
    } else {
        i + dropped
    }
}

/// Removes the oldest user/assistant pair after the `kept` first messages; false when
/// only those and the final exchange are left.
fn drop_oldest_pair(messages: &mut Vec<Message>, kept: usize) -> bool {
    if messages.len() <= kept + 2 {
        return false;
    }
    messages.drain(kept..kept + 2);
    true
}

fn sample(
    id: String,
    ids: &[u32],
    len: usize,
    loss: &[std::ops::Range<usize>],
) -> Result<MaskedSample, MaskError> {
    let mut labels = vec![IGNORE; len];
    for r in loss {
        for t in r.clone() {
            labels[t] = i64::from(ids[t]);
        }
    }
    let s = MaskedSample {
        id,
        input_ids: ids[..len].to_vec(),
        labels,
        attention_mask: vec![1; len],
    };
    if s.n_loss_tokens() == 0 {
        return Err(MaskError::new(
            SkipReason::EmptyMask,
            "no token carries loss",
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod llamacpp_tests;
#[cfg(test)]
mod tests;
