//! SentencePiece vocabularies (`tokenizer.ggml.model = llama`): Llama 2, Mistral v0.1-v0.3,
//! Phi-3 and the other models whose GGUF carries pieces and scores but no merges; and
//! Gemma 4's SentencePiece-style BPE, which carries merges ([`build_gemma4`]).
//!
//! The tokenizer is rebuilt as `transformers` converts such a vocabulary (its
//! `LlamaConverter`, and the GGUF loader that builds on it), which is what Llama 2's own
//! `tokenizer.json` holds:
//!
//! - normalizer: `Prepend("▁")` (when `tokenizer.ggml.add_space_prefix` is true, the
//!   default) then `Replace(" ", "▁")`;
//! - model: BPE with `byte_fallback` (`<0x0A>` for a byte no piece covers) whose merges are
//!   derived from the scores: every split `left + right` of a piece into two pieces is a
//!   merge, ranked by the piece's score, highest first. This is SentencePiece's own BPE
//!   rule (merge the adjacent pair whose union scores highest) and llama.cpp's
//!   (`llm_tokenizer_spm`);
//! - decoder: `▁` to space, bytes back to text, the first space stripped.
//!
//! Text after a special token gets the `▁` prefix again, in `transformers` (the normalizer
//! runs on each piece between added tokens) and in llama.cpp alike.
//!
//! **Phi-3.** llama.cpp strips the whitespace after Phi-3's special tokens (`<|end|>\n`
//! is one token), as Phi-3's own `tokenizer.json` marks them `rstrip`. Nothing in the
//! tokenizer metadata says so; llama.cpp keys it on `general.name` containing `phi-3` or
//! `phi3` (`llama-vocab.cpp`), and so does this module, with llama.cpp's exceptions
//! (`<unk>`, `<s>`, `<|endoftext|>` keep their whitespace).

#[cfg(test)]
use super::TOKEN_CONTROL;
use super::{add_typed_tokens, Metadata, TOKEN_NORMAL};
use crate::error::{Error, Result};
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper, Tokenizer};

/// Gemma 4's tokenizer (`tokenizer.ggml.model = gemma4`): SentencePiece-style BPE with
/// the merges given. As llama.cpp reads it (`LLAMA_VOCAB_PRE_TYPE_GEMMA4`): spaces become
/// `▁` (no `▁` is prepended unless `tokenizer.ggml.add_space_prefix` says so), the text
/// is split into runs of newlines and runs of anything else, the merges run on
/// characters, and a character no piece covers falls back to `<0xXX>` byte tokens.
///
/// # Errors
///
/// As [`build`].
pub(super) fn build_gemma4(
    metadata: &Metadata,
    tokens: &[String],
    types: &[i32],
    merges: Vec<(String, String)>,
) -> Result<Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .build()
        .map_err(|e| Error::runtime(format!("GGUF tokenizer: cannot build BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let prefix =
        metadata.contains_key("tokenizer.ggml.add_space_prefix") && add_space_prefix(metadata)?;
    tok.with_normalizer(Some(normalizer(prefix)?))
        .map_err(|e| Error::runtime(format!("GGUF tokenizer: normalizer: {e}")))?;
    let split = tokenizers::pre_tokenizers::split::Split::new(
        tokenizers::pre_tokenizers::split::SplitPattern::Regex(r"[^\n]+|[\n]+".into()),
        tokenizers::SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| Error::runtime(format!("GGUF tokenizer: pre-tokenizer: {e}")))?;
    tok.with_pre_tokenizer(Some(split));
    tok.with_decoder(Some(decoder(prefix)?));
    add_typed_tokens(&mut tok, tokens, types, false);
    Ok(tok)
}

/// A merge as GGUF stores it, `left right`: split at the first space after the first
/// character (a left part may itself be a space), as llama.cpp splits it.
///
/// # Errors
///
/// An input error quoting a merge without a space.
pub(super) fn split_merge(m: &str) -> Result<(String, String)> {
    let first = m.chars().next().map_or(0, char::len_utf8);
    match m[first..].find(' ') {
        Some(at) => Ok((m[..first + at].to_string(), m[first + at + 1..].to_string())),
        None => Err(Error::input(format!(
            "GGUF metadata `tokenizer.ggml.merges`: malformed merge `{m}`"
        ))),
    }
}

/// SentencePiece's word-boundary mark, which stands for a space in every piece.
const SPACE_MARK: &str = "\u{2581}";

/// Rebuilds a SentencePiece tokenizer from its pieces, scores and token types.
///
/// `tokens[i]`, `scores[i]` and `types[i]` describe token id `i`.
///
/// # Errors
///
/// An input error when the lengths disagree or `tokenizer.ggml.unknown_token_id` names no
/// token; a runtime error when `tokenizers` cannot build the model.
pub(super) fn build(
    metadata: &Metadata,
    tokens: &[String],
    scores: &[f32],
    types: &[i32],
) -> Result<Tokenizer> {
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(Error::input(format!(
            "GGUF metadata: {} tokens but {} scores and {} token types",
            tokens.len(),
            scores.len(),
            types.len()
        )));
    }
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = merges_by_score(tokens, scores, types);
    let unk = match metadata.get("tokenizer.ggml.unknown_token_id") {
        Some(v) => {
            let id = v.to_u32().map_err(|e| {
                Error::input(format!("GGUF `tokenizer.ggml.unknown_token_id`: {e}"))
            })?;
            Some(tokens.get(id as usize).cloned().ok_or_else(|| {
                Error::input(format!(
                    "GGUF `tokenizer.ggml.unknown_token_id` = {id} names no token (the \
                     vocabulary has {})",
                    tokens.len()
                ))
            })?)
        }
        None => None,
    };
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| Error::runtime(format!("GGUF tokenizer: cannot build BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let prefix = add_space_prefix(metadata)?;
    tok.with_normalizer(Some(normalizer(prefix)?))
        .map_err(|e| Error::runtime(format!("GGUF tokenizer: normalizer: {e}")))?;
    tok.with_decoder(Some(decoder(prefix)?));
    add_typed_tokens(&mut tok, tokens, types, is_phi3(metadata));
    Ok(tok)
}

/// `tokenizer.ggml.add_space_prefix`, true when absent (SentencePiece's
/// `add_dummy_prefix` default, and llama.cpp's).
fn add_space_prefix(metadata: &Metadata) -> Result<bool> {
    match metadata.get("tokenizer.ggml.add_space_prefix") {
        None => Ok(true),
        Some(v) => v
            .to_bool()
            .map_err(|e| Error::input(format!("GGUF `tokenizer.ggml.add_space_prefix`: {e}"))),
    }
}

/// Whether llama.cpp treats this vocabulary as Phi-3's (`general.name`, lower-cased,
/// contains `phi-3` or `phi3`).
fn is_phi3(metadata: &Metadata) -> bool {
    let name = metadata
        .get("general.name")
        .and_then(|v| v.to_string().ok())
        .map(|s| s.to_lowercase())
        .unwrap_or_default();
    name.contains("phi-3") || name.contains("phi3")
}

fn normalizer(prefix: bool) -> Result<NormalizerWrapper> {
    let replace = Replace::new(" ", SPACE_MARK)
        .map_err(|e| Error::runtime(format!("GGUF tokenizer: normalizer: {e}")))?;
    let mut parts: Vec<NormalizerWrapper> = Vec::new();
    if prefix {
        parts.push(Prepend::new(SPACE_MARK.to_string()).into());
    }
    parts.push(replace.into());
    Ok(NormalizerSequence::new(parts).into())
}

/// `▁` back to spaces, byte tokens back to text; with `prefix`, the prepended space
/// stripped again.
fn decoder(prefix: bool) -> Result<DecoderWrapper> {
    let replace = Replace::new(SPACE_MARK, " ")
        .map_err(|e| Error::runtime(format!("GGUF tokenizer: decoder: {e}")))?;
    let mut parts: Vec<DecoderWrapper> = vec![
        replace.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if prefix {
        parts.push(Strip::new(' ', 1, 0).into());
    }
    Ok(DecoderSequence::new(parts).into())
}

/// The merges SentencePiece's scores imply: for every ordinary piece, each way to split
/// it into two ordinary pieces, ranked by the piece's score (highest first; within one
/// piece by the ids of its parts, as `transformers`' `SentencePieceExtractor` orders them).
///
/// Only ordinary pieces (token type 1) take part: control, unknown, user-defined and byte
/// tokens are never the result of a merge.
fn merges_by_score(tokens: &[String], scores: &[f32], types: &[i32]) -> Vec<(String, String)> {
    let ordinary: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types[*i] == TOKEN_NORMAL)
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    // (score of the piece, id of the piece, id of left, id of right)
    let mut ranked: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (piece, &id) in &ordinary {
        for (cut, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(cut);
            if let (Some(&l), Some(&r)) = (ordinary.get(left), ordinary.get(right)) {
                ranked.push((scores[id], id, l, r));
            }
        }
    }
    // Highest score first; ties by piece id, then by the parts' ids (a total order, so
    // the result never depends on hash order).
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    ranked
        .into_iter()
        .map(|(_, _, l, r)| (tokens[l].clone(), tokens[r].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (Vec<String>, Vec<f32>, Vec<i32>) {
        let pieces = [
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("<0x0A>", 0.0, 6),
            ("<0x21>", 0.0, 6),
            ("\u{2581}", -1.0, 1),
            ("h", -2.0, 1),
            ("i", -3.0, 1),
            ("\u{2581}h", -4.0, 1),
            ("hi", -0.5, 1),
            ("\u{2581}hi", -5.0, 1),
        ];
        (
            pieces.iter().map(|p| p.0.to_string()).collect(),
            pieces.iter().map(|p| p.1).collect(),
            pieces.iter().map(|p| p.2).collect(),
        )
    }

    fn tokenizer() -> Tokenizer {
        let (tokens, scores, types) = tiny();
        let mut md = Metadata::new();
        md.insert(
            "tokenizer.ggml.unknown_token_id".into(),
            candle_core::quantized::gguf_file::Value::U32(0),
        );
        build(&md, &tokens, &scores, &types).unwrap()
    }

    #[test]
    fn the_higher_scoring_union_is_merged_first() {
        // "▁hi": "h"+"i" -> "hi" scores -0.5, above "▁"+"h" -> "▁h" at -4, so the
        // result is "▁" "hi" then "▁hi"; had "▁h" been merged first, "▁h"+"i" is no piece.
        let (tokens, scores, types) = tiny();
        let merges = merges_by_score(&tokens, &scores, &types);
        assert_eq!(merges[0], ("h".to_string(), "i".to_string()));
        let ids = tokenizer().encode("hi", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![10], "▁hi");
    }

    #[test]
    fn bytes_no_piece_covers_fall_back_to_byte_tokens() {
        let enc = tokenizer().encode("hi\n!", false).unwrap();
        assert_eq!(enc.get_ids(), &[10, 3, 4]);
        let text = tokenizer().decode(enc.get_ids(), false).unwrap();
        assert_eq!(text, "hi\n!");
    }

    #[test]
    fn text_after_a_special_token_gets_the_space_mark_again() {
        let ids = tokenizer()
            .encode("<s>hi", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, vec![1, 10]);
    }

    #[test]
    fn only_phi3_special_tokens_swallow_the_whitespace_after_them() {
        let (mut tokens, mut scores, mut types) = tiny();
        tokens.push("<|end|>".into());
        scores.push(0.0);
        types.push(TOKEN_CONTROL);
        let end = (tokens.len() - 1) as u32;
        let newline = 3;
        let encode = |name: &str| {
            let mut md = Metadata::new();
            md.insert(
                "general.name".into(),
                candle_core::quantized::gguf_file::Value::String(name.into()),
            );
            let tok = build(&md, &tokens, &scores, &types).unwrap();
            tok.encode("hi<|end|>\nhi", false)
                .unwrap()
                .get_ids()
                .to_vec()
        };
        assert_eq!(encode("Phi3"), vec![10, end, 10]);
        assert_eq!(encode("Llama-2"), vec![10, end, 5, newline, 9]);
    }
}
