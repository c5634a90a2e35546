//! From byte spans to token spans, and the checks that make a mask trustworthy.

use super::spans::ReplySpan;
use super::{MaskError, SkipReason};
use std::ops::Range;
use tokenizers::Tokenizer;

/// The tokens that exactly cover bytes `start..end`, or a seam error if a token
/// straddles either edge (a BPE merge across template text and reply).
pub fn token_span(
    offsets: &[(usize, usize)],
    start: usize,
    end: usize,
    turn: usize,
) -> Result<Range<usize>, MaskError> {
    let first = offsets.partition_point(|o| o.1 <= start);
    let last = offsets.partition_point(|o| o.1 <= end);
    let seam = |edge: &str, t: usize| {
        MaskError::new(
            SkipReason::SeamMerge,
            format!(
                "messages[{turn}]: token {t} (bytes {}..{}) crosses the {edge} of the reply at \
                 byte {}: the tokenizer merges template text and reply text, so the prompt \
                 tokens would differ from what the model sees at inference",
                offsets[t].0,
                offsets[t].1,
                if edge == "start" { start } else { end }
            ),
        )
    };
    if first >= offsets.len() || offsets[first].0 != start {
        return Err(seam("start", first.min(offsets.len().saturating_sub(1))));
    }
    if last < offsets.len() && offsets[last].0 < end {
        return Err(seam("end", last));
    }
    if last <= first {
        return Err(MaskError::new(
            SkipReason::EmptyMask,
            format!("messages[{turn}]: reply has no tokens"),
        ));
    }
    Ok(first..last)
}

/// The tokens before the reply must be the tokens of the prompt alone. Text between
/// special tokens is tokenized independently, so only the stretch after the last special
/// token needs re-tokenizing: the check costs a few tokens, not a second pass.
///
/// `tokenizer` re-tokenizes that stretch: the masker's own, or the same with
/// special-token matching off when content text was encoded apart.
pub fn verify_prompt(
    tokenizer: &Tokenizer,
    special_ids: &[u32],
    full: &str,
    ids: &[u32],
    offsets: &[(usize, usize)],
    first_reply_token: usize,
) -> Result<(), MaskError> {
    let head = &ids[..first_reply_token];
    let from = head
        .iter()
        .rposition(|id| special_ids.binary_search(id).is_ok())
        .map_or(0, |j| j + 1);
    let text_start = if from == 0 { 0 } else { offsets[from - 1].1 };
    let text_end = if first_reply_token == 0 {
        0
    } else {
        offsets[first_reply_token].0
    };
    if from == first_reply_token && text_start == text_end {
        return Ok(());
    }
    let alone = tokenizer
        .encode(&full[text_start..text_end], false)
        .map_err(|e| MaskError::new(SkipReason::TemplateError, format!("tokenizer: {e}")))?;
    if alone.get_ids() != &head[from..] {
        return Err(MaskError::new(
            SkipReason::SeamMerge,
            format!(
                "the prompt tokenizes differently alone ({:?}) than inside the conversation \
                 ({:?}): the model would see other tokens at inference",
                alone.get_ids(),
                &head[from..]
            ),
        ));
    }
    Ok(())
}

/// The loss tokens must decode to exactly the reply text and its end-of-turn marker.
pub fn verify_decode(
    tokenizer: &Tokenizer,
    full: &str,
    ids: &[u32],
    span: &ReplySpan,
    tokens: &Range<usize>,
    turn: usize,
) -> Result<(), MaskError> {
    let want = &full[span.start..span.end];
    let got = tokenizer
        .decode(&ids[tokens.clone()], false)
        .map_err(|e| MaskError::new(SkipReason::DecodeMismatch, format!("decoder: {e}")))?;
    if got != want {
        return Err(MaskError::new(
            SkipReason::DecodeMismatch,
            format!("messages[{turn}]: loss tokens decode to {got:?}, expected {want:?}"),
        ));
    }
    Ok(())
}
