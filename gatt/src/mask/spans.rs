//! Finding a reply in the rendered text.

use super::{MaskError, SkipReason};
use crate::dialogue::{Message, Role};
use crate::template::ChatTemplate;
use std::ops::Range;

/// Byte range of one reply in the rendered conversation: from where the model starts
/// writing (the end of the generation prompt) to the end of its end-of-turn marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySpan {
    pub start: usize,
    pub end: usize,
    /// Where the reply's content ends (its end-of-turn marker follows).
    pub content_end: usize,
}

/// Up to 24 characters of `text` from byte `at` (moved back to a character boundary).
fn snippet(text: &str, at: usize) -> String {
    let mut from = at.min(text.len());
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    text[from..].chars().take(24).collect()
}

/// Locates message `turn` (content `content`) in `full`, given `prompt`: the conversation
/// before it rendered with the generation prompt.
pub fn reply_span(
    template: &ChatTemplate,
    full: &str,
    prompt: &str,
    content: &str,
    turn: usize,
) -> Result<ReplySpan, MaskError> {
    if !full.starts_with(prompt) {
        let at = full
            .bytes()
            .zip(prompt.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(full.len().min(prompt.len()));
        // The thinking switch of reasoning templates (Qwen3, Gemma 4, ...) is the usual
        // cause: the generation prompt opens or closes a thinking block the history lacks.
        let hint = if template.source.contains("enable_thinking") {
            "; this template reads `enable_thinking`: rendering with it set (`true` or \
             `false`, as the model will be prompted) may make the two agree"
        } else {
            ""
        };
        return Err(MaskError::new(
            SkipReason::TemplateRewritesHistory,
            format!(
                "messages[{turn}]: the prompt the model sees at inference (the conversation \
                 before this reply, with the generation prompt) is not a prefix of the whole \
                 rendered conversation; they differ from byte {at} (prompt {:?}, conversation \
                 {:?}): the template rewrites earlier turns or its generation prompt differs \
                 from its assistant header{hint}",
                snippet(prompt, at),
                snippet(full, at),
            ),
        ));
    }
    let after = &full[prompt.len()..];
    // The template may put whitespace between its header and the reply (llama2's space).
    let gap = after
        .char_indices()
        .take_while(|(_, c)| c.is_whitespace())
        .map(|(i, c)| i + c.len_utf8())
        .chain(std::iter::once(0))
        .filter(|g| after[*g..].starts_with(content))
        .min()
        .ok_or_else(|| altered(after, content, turn))?;
    let rest = &after[gap + content.len()..];
    let marker = template
        .end_of_turn
        .iter()
        .filter_map(|m| rest.find(m.as_str()).map(|p| (p, m.len())))
        .min()
        .filter(|(p, _)| rest[..*p].trim().is_empty())
        .ok_or_else(|| {
            MaskError::new(
                SkipReason::NoEndOfTurn,
                format!(
                    "messages[{turn}]: no end-of-turn marker ({}) follows the reply in the \
                     rendered text",
                    if template.end_of_turn.is_empty() {
                        "none known for this template".to_string()
                    } else {
                        template.end_of_turn.join(", ")
                    }
                ),
            )
        })?;
    Ok(ReplySpan {
        start: prompt.len(),
        end: prompt.len() + gap + content.len() + marker.0 + marker.1,
        content_end: prompt.len() + gap + content.len(),
    })
}

/// The refusal of a reply the template does not write right after its generation
/// prompt, saying what it does instead: inserts text before the reply (the reply follows
/// later, verbatim), or strips or rewrites the reply (it is nowhere verbatim).
fn altered(after: &str, content: &str, turn: usize) -> MaskError {
    let what = match after.find(content).filter(|_| !content.is_empty()) {
        Some(at) => {
            let inserted: String = after[..at].chars().take(60).collect();
            let more = if after[..at].chars().count() > 60 {
                "..."
            } else {
                ""
            };
            format!(
                "the template inserts text between the generation prompt and the reply \
                 ({inserted:?}{more}), so the prompt the model sees at inference does not \
                 lead into the reply"
            )
        }
        None => "the template does not reproduce the reply verbatim (it strips or rewrites \
                 it), so its tokens cannot be located"
            .to_string(),
    };
    MaskError::new(
        SkipReason::TemplateAltersReply,
        format!("messages[{turn}]: {what}"),
    )
}

/// When the template marks the assistant's text with `{% generation %}` blocks (one per
/// assistant message, in order), the block of message `turn` must enclose exactly the
/// loss span: the reply and its end-of-turn marker, where only whitespace may follow
/// the marker inside the block (a newline the model never writes: it stops at the
/// marker).
pub fn check_generation(
    full: &str,
    messages: &[Message],
    blocks: &[Range<usize>],
    span: &ReplySpan,
    turn: usize,
) -> Result<(), MaskError> {
    let replies = messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .count();
    let mismatch = |what: String| {
        MaskError::new(
            SkipReason::GenerationMismatch,
            format!("messages[{turn}]: {what}"),
        )
    };
    if blocks.len() != replies {
        return Err(mismatch(format!(
            "the template marks {} {{% generation %}} blocks for {replies} assistant replies",
            blocks.len()
        )));
    }
    let k = messages[..turn]
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .count();
    let block = &blocks[k];
    let agrees = block.start == span.start
        && block.end >= span.end
        && full[span.end..block.end].trim().is_empty();
    if !agrees {
        return Err(mismatch(format!(
            "the template's {{% generation %}} block holds {:?}, the loss span {:?}",
            &full[block.clone()],
            &full[span.start..span.end]
        )));
    }
    Ok(())
}
