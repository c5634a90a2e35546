//! Tokenizers: from a `tokenizer.json`, or rebuilt from a GGUF file's metadata
//! (the default model ships no tokenizer.json).

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

pub use tokenizers::Tokenizer as HfTokenizer;

/// Loads a Hugging Face `tokenizer.json`.
pub fn from_json_file(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(Error::input(format!(
            "{}: tokenizer file not found",
            path.display()
        )));
    }
    Tokenizer::from_file(path).map_err(|e| {
        Error::input(format!(
            "{}: not a valid tokenizer.json: {e}",
            path.display()
        ))
    })
}

fn md<'a>(content: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value> {
    content.metadata.get(key).ok_or_else(|| {
        Error::input(format!(
            "GGUF metadata has no `{key}`: the file carries no usable tokenizer"
        ))
    })
}

fn md_strings(content: &gguf_file::Content, key: &str) -> Result<Vec<String>> {
    let bad = |e: candle_core::Error| Error::input(format!("GGUF metadata `{key}`: {e}"));
    md(content, key)?
        .to_vec()
        .map_err(bad)?
        .iter()
        .map(|v| v.to_string().cloned().map_err(bad))
        .collect()
}

/// The pre-tokenizer regexes llama.cpp names in `tokenizer.ggml.pre`.
fn gguf_pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level_regex = ByteLevel::new(false, false, true);
    let byte_level_plain = ByteLevel::new(false, false, false);
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let s = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::runtime(format!("pre-tokenizer regex: {e}")))?;
        Ok(s.into())
    };
    Ok(match pre {
        // GPT-2's regex with every digit on its own (SmolLM, StarCoder).
        "smollm" | "starcoder" | "refact" => Sequence::new(vec![
            Digits::new(true).into(),
            byte_level_regex.into(),
        ])
        .into(),
        "gpt2" | "default" => byte_level_regex.into(),
        "qwen2" => Sequence::new(vec![
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")?,
            byte_level_plain.into(),
        ])
        .into(),
        "llama-bpe" | "llama3" => Sequence::new(vec![
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")?,
            byte_level_plain.into(),
        ])
        .into(),
        other => {
            return Err(Error::input(format!(
                "GGUF pre-tokenizer `{other}` is not supported (supported: smollm, gpt2, qwen2, \
                 llama-bpe); give the model's tokenizer.json instead"
            )))
        }
    })
}

/// Rebuilds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
///
/// Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is supported; control and
/// user-defined tokens become special added tokens, as llama.cpp treats them.
pub fn from_gguf(content: &gguf_file::Content) -> Result<Tokenizer> {
    let model = md(content, "tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| Error::input(format!("GGUF metadata `tokenizer.ggml.model`: {e}")))?;
    if model != "gpt2" {
        return Err(Error::input(format!(
            "GGUF tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`); \
             give the model's tokenizer.json instead"
        )));
    }
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_else(|| "default".to_string());
    let tokens = md_strings(content, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = md_strings(content, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(Error::input(format!(
                "GGUF metadata `tokenizer.ggml.merges`: malformed merge `{m}`"
            ))),
        })
        .collect::<Result<_>>()?;
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| Error::input(format!("GGUF `tokenizer.ggml.token_type`: {e}")))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::input(format!("GGUF tokenizer: cannot build BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(gguf_pre_tokenizer(&pre)?));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    // Control (3) and user-defined (4) tokens are matched before BPE, as special tokens.
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == 3 || **t == 4)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    let _added = tok.add_special_tokens(specials);
    Ok(tok)
}

/// Text of token `key` (e.g. `tokenizer.ggml.eos_token_id`) in a GGUF file.
pub fn gguf_token_text(content: &gguf_file::Content, key: &str) -> Option<String> {
    let id = content.metadata.get(key)?.to_u32().ok()? as usize;
    let tokens = content
        .metadata
        .get("tokenizer.ggml.tokens")?
        .to_vec()
        .ok()?;
    tokens.get(id)?.to_string().ok().cloned()
}

/// Ids of the special (added) tokens: text between them is tokenized independently.
pub fn special_ids(tok: &Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = tok
        .get_added_tokens_decoder()
        .iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| *id)
        .collect();
    ids.sort_unstable();
    ids
}
