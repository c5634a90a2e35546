//! From byte spans to token spans, and the checks that make a mask trustworthy.

use super::spans::ReplySpan;
use super::{MaskError, SkipReason};
use std::ops::Range;
use tokenizers::Tokenizer;

/// The tokens that exactly cover bytes `start..end` of `full`, or a seam error if a token
/// straddles either edge (a BPE merge across template text and reply).
///
/// One straddle is no seam: a special token that ends the span and swallows the
/// whitespace after it (an added token with `rstrip`, as Phi-3's `<|end|>` takes the
/// `\n` that follows it in `transformers` and llama.cpp). It is the same token whether
/// the whitespace follows or not, so it is kept as the span's last token.
pub fn token_span(
    offsets: &[(usize, usize)],
    (full, ids, special_ids): (&str, &[u32], &[u32]),
    start: usize,
    end: usize,
    turn: usize,
) -> Result<Range<usize>, MaskError> {
    let first = offsets.partition_point(|o| o.1 <= start);
    let mut last = offsets.partition_point(|o| o.1 <= end);
    if last < offsets.len()
        && offsets[last].0 >= start
        && offsets[last].0 < end
        && special_ids.binary_search(&ids[last]).is_ok()
        && full
            .get(end..offsets[last].1)
            .is_some_and(|rest| rest.chars().all(char::is_whitespace))
    {
        last += 1;
    }
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
///
/// SentencePiece tokenizers that put `▁` before the text after every special token
/// (Llama 2's and Phi-3's `tokenizer.json`, llama.cpp alike) decode a reply that starts
/// right after a special token with one more leading space than the text has: that space
/// was inserted by the tokenizer, the tokens are the ones the model sees, and it is
/// accepted only there (the reply's first token follows a special token whose text, with
/// any whitespace it swallows, ends where the reply starts).
#[allow(clippy::too_many_arguments)]
pub fn verify_decode(
    tokenizer: &Tokenizer,
    special_ids: &[u32],
    full: &str,
    ids: &[u32],
    offsets: &[(usize, usize)],
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
    let inserted_space = tokens.start > 0
        && special_ids.binary_search(&ids[tokens.start - 1]).is_ok()
        && offsets[tokens.start - 1].1 == span.start
        && got.strip_prefix(' ') == Some(want);
    if got != want && !inserted_space {
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

    #[test]
    fn a_special_token_may_swallow_whitespace_after_the_span_and_nothing_else_may() {
        // "hi<|end|>\n": the reply and its end-of-turn marker are bytes 0..9; the marker's
        // token also covers the "\n" (rstrip), id 7 is special.
        let full = "hi<|end|>\nx";
        let offsets = [(0, 2), (2, 10), (10, 11)];
        let ctx = (full, &[5u32, 7, 9][..], &[7u32][..]);
        assert_eq!(token_span(&offsets, ctx, 0, 9, 1).unwrap(), 0..2);
        // The same straddle by an ordinary token is a seam.
        let plain = (full, &[5u32, 7, 9][..], &[][..]);
        let e = token_span(&offsets, plain, 0, 9, 1).unwrap_err();
        assert_eq!(e.reason, SkipReason::SeamMerge);
        // So is a special token that swallows text other than whitespace.
        let offsets = [(0, 2), (2, 11)];
        let e = token_span(&offsets, (full, &[5u32, 7][..], &[7u32][..]), 0, 9, 1).unwrap_err();
        assert_eq!(e.reason, SkipReason::SeamMerge);
    }

    #[test]
    fn the_space_a_tokenizer_puts_after_a_special_token_is_not_a_mismatch() {
        // Llama 2 / Phi-3 style: every segment between special tokens gets a `▁` prefix.
        let json = r#"{"version":"1.0","truncation":null,"padding":null,
            "added_tokens":[{"id":0,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
            "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"\u2581"},{"type":"Replace","pattern":{"String":" "},"content":"\u2581"}]},
            "pre_tokenizer":null,"post_processor":null,
            "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"\u2581"},"content":" "},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
            "model":{"type":"WordLevel","vocab":{"<s>":0,"\u2581hi":1,"hi":2,"<unk>":3},"unk_token":"<unk>"}}"#;
        let tok: Tokenizer = json.parse().unwrap();
        let full = "<s>hi";
        let enc = tok.encode(full, false).unwrap();
        assert_eq!(enc.get_ids(), [0, 1]);
        let span = ReplySpan {
            start: 3,
            content_end: 5,
            end: 5,
        };
        let offsets = enc.get_offsets();
        verify_decode(&tok, &[0], full, enc.get_ids(), offsets, &span, &(1..2), 1).unwrap();
        // Not after a special token, the extra space is a mismatch.
        let e =
            verify_decode(&tok, &[], full, enc.get_ids(), offsets, &span, &(1..2), 1).unwrap_err();
        assert_eq!(e.reason, SkipReason::DecodeMismatch);
    }

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
        verify_decode(
            &tok,
            &[],
            full,
            enc.get_ids(),
            enc.get_offsets(),
            &span,
            &(1..2),
            1,
        )
        .unwrap();
        // A wrong span is still refused.
        let wrong = ReplySpan {
            start: 5,
            end: 11,
            content_end: 11,
        };
        let e = verify_decode(
            &tok,
            &[],
            "Hello World",
            enc.get_ids(),
            enc.get_offsets(),
            &wrong,
            &(1..2),
            1,
        );
        assert_eq!(e.unwrap_err().reason, SkipReason::DecodeMismatch);
    }
}
