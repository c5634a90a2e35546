//! Exports: the same verified samples in the layouts trainers read as they are.
//!
//! Every export of a record is rendered from its [`MaskedRecord`], so they agree with
//! each other and with the masks: the loss a consumer computes from an export is on the
//! reply gatt's labels hold (see the README's "Consumers" table for what each consumer
//! adds, e.g. TRL's loss on the template text after the end-of-turn marker).
//!
//! - [`Export::Gatt`]: `id, input_ids, labels, attention_mask, n_tokens, n_loss_tokens`.
//! - [`Export::Openai`]: chat JSON lines `{"messages": [...]}`, every assistant message
//!   with `"weight": 1` where it carries loss and `"weight": 0` where it does not (the
//!   OpenAI fine-tuning format; axolotl reads it with `message_field_training: weight`).
//!   No other key: hosted checkers refuse unknown ones, so ids are not written.
//! - [`Export::PromptCompletion`]: `prompt` (the messages before the trained reply) and
//!   `completion` (a list holding that reply), TRL's conversational prompt-completion
//!   layout, whose loss is on the completion only.
//! - [`Export::Tokenized`]: exactly `input_ids`, `attention_mask`, `labels` (the
//!   layout the HF `Trainer`, TRL and axolotl take pre-tokenized).

use super::{MaskOptions, MaskedRecord, Policy, RecordSample, SpecialText};
use crate::dataset::Format;
use crate::dialogue::{Message, Role};
use serde::Serialize;

/// A layout masked samples are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Export {
    /// gatt's sample file: ids, tokens, labels and counts.
    #[default]
    Gatt,
    /// OpenAI chat fine-tuning JSON lines, loss marked by `weight` on assistant messages.
    Openai,
    /// TRL's conversational `prompt` / `completion` columns.
    PromptCompletion,
    /// Exactly `input_ids`, `attention_mask` and `labels`.
    Tokenized,
}

crate::names::named_values!(Export {
    Gatt => "gatt",
    Openai => "openai",
    PromptCompletion => "prompt-completion",
    Tokenized => "tokenized",
});

impl Export {
    /// Why samples built with `opts` cannot be written in this layout to a `format`
    /// file, or `None` when they can.
    ///
    /// The message layouts express loss by message: `openai` on assistant messages
    /// (every policy but `all`), `prompt-completion` on one final reply (`gatt` and
    /// `gatt-expand`). Their consumers tokenize message text reading special-token text
    /// as the token itself, so they cannot carry samples masked with
    /// [`SpecialText::Encode`]. `openai` is JSON lines only.
    pub fn refusal(self, opts: &MaskOptions, format: Format) -> Option<String> {
        let name = self.as_str();
        let policy = opts.policy;
        let messages = matches!(self, Export::Openai | Export::PromptCompletion);
        if messages && opts.special_text == SpecialText::Encode {
            return Some(format!(
                "the {name} export holds message text that the trainer tokenizes itself, \
                 reading special-token text (e.g. `<|im_end|>`) as the token; samples whose \
                 such text was encoded as ordinary tokens (special text `encode`) would \
                 train differently; use the tokenized or gatt export"
            ));
        }
        match (self, policy, format) {
            (Export::Openai, _, Format::Parquet) => Some(format!(
                "the {name} export is JSON lines (the OpenAI fine-tuning format); write it \
                 to a .jsonl file"
            )),
            (Export::Openai, Policy::All, _) | (Export::PromptCompletion, Policy::All, _) => {
                Some(format!(
                    "the {name} export marks loss by message and cannot put loss on system \
                     and user tokens (policy {policy}); use the tokenized or gatt export"
                ))
            }
            (Export::PromptCompletion, Policy::Assistant, _) => Some(format!(
                "the {name} export puts loss on one final reply and cannot hold loss on \
                 every reply (policy {policy}); use the openai, tokenized or gatt export"
            )),
            _ => None,
        }
    }

    /// The file name `gatt synth --mask` writes this export to (no extension for the
    /// caller to choose, except `openai`, always `.jsonl`).
    pub fn file_stem(self) -> &'static str {
        match self {
            Export::Gatt => "masked",
            Export::Openai => "openai",
            Export::PromptCompletion => "prompt_completion",
            Export::Tokenized => "tokenized",
        }
    }
}

/// A message of the openai export: `weight` on assistant messages only (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightedMessage<'a> {
    /// `system`, `user` or `assistant`.
    pub role: Role,
    /// The text, as masked.
    pub content: &'a str,
    /// 1 where the message carries loss, 0 where not; absent on non-assistant messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
}

/// One line of the openai export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenaiLine<'a> {
    /// The conversation the sample covers.
    pub messages: Vec<WeightedMessage<'a>>,
}

/// One row of the prompt-completion export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptCompletion<'a> {
    /// The messages before the trained reply.
    pub prompt: &'a [Message],
    /// The trained reply, alone in a list (TRL's conversational layout).
    pub completion: &'a [Message],
}

/// One row of the tokenized export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tokenized<'a> {
    /// Token ids of the sample.
    pub input_ids: &'a [u32],
    /// All ones, one per token.
    pub attention_mask: &'a [u8],
    /// The token id where there is loss, -100 elsewhere (unshifted).
    pub labels: &'a [i64],
}

/// Whether message `i` of a sample covering `messages[..end]` carries loss under
/// `policy`: the last one under `gatt` and `gatt-expand`, every assistant message under
/// `assistant`, every message under `all`.
pub fn trained(messages: &[Message], end: usize, policy: Policy, i: usize) -> bool {
    match policy {
        Policy::Gatt | Policy::GattExpand => i + 1 == end,
        Policy::Assistant => messages[i].role == Role::Assistant,
        Policy::All => true,
    }
}

/// The openai line of `sample` (of `record`).
pub fn openai<'a>(record: &'a MaskedRecord, sample: &RecordSample) -> OpenaiLine<'a> {
    let messages = &record.messages[..sample.end];
    OpenaiLine {
        messages: messages
            .iter()
            .enumerate()
            .map(|(i, m)| WeightedMessage {
                role: m.role,
                content: &m.content,
                weight: (m.role == Role::Assistant)
                    .then(|| u8::from(trained(messages, sample.end, record.policy, i))),
            })
            .collect(),
    }
}

/// The prompt-completion row of `sample` (of `record`): its last message is the
/// completion.
pub fn prompt_completion<'a>(
    record: &'a MaskedRecord,
    sample: &RecordSample,
) -> PromptCompletion<'a> {
    let (prompt, completion) = record.messages[..sample.end].split_at(sample.end - 1);
    PromptCompletion { prompt, completion }
}

/// The tokenized row of a sample.
pub fn tokenized(sample: &RecordSample) -> Tokenized<'_> {
    let s = &sample.sample;
    Tokenized {
        input_ids: &s.input_ids,
        attention_mask: &s.attention_mask,
        labels: &s.labels,
    }
}

#[cfg(test)]
mod tests;
