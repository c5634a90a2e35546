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

/// Tokens before the loss span decoded with it, so that decoders that treat the first
/// token apart (SentencePiece's Metaspace drops its leading space) see the span in
/// context.
const DECODE_CONTEXT: usize = 8;

/// The loss tokens must decode to exactly the reply text and its end-of-turn marker,
/// decoded in context: `decode(context + span)` minus `decode(context)`, where the
/// context is up to `DECODE_CONTEXT` tokens before the span (the first must decode to a
/// prefix of the whole, else the decode is refused).
pub fn verify_decode(
    tokenizer: &Tokenizer,
    full: &str,
    ids: &[u32],
    span: &ReplySpan,
    tokens: &Range<usize>,
    turn: usize,
) -> Result<(), MaskError> {
    let want = &full[span.start..span.end];
    let decode = |ids: &[u32]| {
        tokenizer
            .decode(ids, false)
            .map_err(|e| MaskError::new(SkipReason::DecodeMismatch, format!("decoder: {e}")))
    };
    let from = tokens.start.saturating_sub(DECODE_CONTEXT);
    let context = decode(&ids[from..tokens.start])?;
    let whole = decode(&ids[from..tokens.end])?;
    let got = whole.strip_prefix(context.as_str()).ok_or_else(|| {
        MaskError::new(
            SkipReason::DecodeMismatch,
            format!(
                "messages[{turn}]: the tokens before the reply decode to {context:?}, which \
                 does not begin their decoding with the reply ({whole:?})"
            ),
        )
    })?;
    if got != want {
        return Err(MaskError::new(
            SkipReason::DecodeMismatch,
            format!("messages[{turn}]: loss tokens decode to {got:?}, expected {want:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SentencePiece-style tokenizer: words with their leading space as `▁`, and a
    /// decoder that drops the first token's leading space.
    fn metaspace() -> Tokenizer {
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"always","split":true},
            "post_processor":null,
            "decoder":{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"always","split":true},
            "model":{"type":"WordLevel","vocab":{"<unk>":0,"\u2581Hello":1,"\u2581world":2},"unk_token":"<unk>"}}"#;
        json.parse().unwrap()
    }

    #[test]
    fn a_leading_space_piece_decodes_in_context() {
        let tok = metaspace();
        let full = "Hello world";
        let enc = tok.encode(full, false).unwrap();
        assert_eq!(enc.get_ids(), [1, 2]);
        // Alone, the reply's piece decodes without its space.
        assert_eq!(tok.decode(&[2], false).unwrap(), "world");
        let span = ReplySpan {
            start: 5,
            end: 11,
            content_end: 11,
        };
        verify_decode(&tok, full, enc.get_ids(), &span, &(1..2), 1).unwrap();
        // A wrong span is still refused.
        let wrong = ReplySpan {
            start: 5,
            end: 11,
            content_end: 11,
        };
        let e = verify_decode(&tok, "Hello World", enc.get_ids(), &wrong, &(1..2), 1);
        assert_eq!(e.unwrap_err().reason, SkipReason::DecodeMismatch);
    }
}
