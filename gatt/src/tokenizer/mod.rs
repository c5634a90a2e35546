//! Tokenizers: from a `tokenizer.json`, or rebuilt from a GGUF file's metadata
//! (the default model ships no tokenizer.json).
//!
//! A tokenizer rebuilt from GGUF metadata must give the ids of the model's own
//! `tokenizer.json`: the families this module rebuilds are checked against the reference
//! vocabularies llama.cpp ships with their expected ids, and any other family is refused.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file;
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, Tokenizer};

mod pre;
mod spm;

pub use pre::SUPPORTED as SUPPORTED_PRE_TOKENIZERS;
/// The tokenizer type every function here returns (Hugging Face `tokenizers`).
pub use tokenizers::Tokenizer as HfTokenizer;

/// Loads a Hugging Face `tokenizer.json`.
pub fn from_json_file(path: &Path) -> Result<Tokenizer> {
    check_tokenizer_file(path)?;
    Tokenizer::from_file(path).map_err(|e| {
        Error::input(format!(
            "{}: not a valid tokenizer.json: {e}",
            path.display()
        ))
    })
}

/// What a `--tokenizer` file must be before it is read: there, and not a GGUF file.
///
/// # Errors
///
/// An input error for a missing file, or a GGUF file (whose tokenizer is read through
/// `--model`).
pub fn check_tokenizer_file(path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(Error::input(format!(
            "{}: tokenizer file not found",
            path.display()
        )));
    }
    // A GGUF's tokenizer is in its metadata: read through the model, not as JSON.
    let gguf = std::fs::File::open(path)
        .and_then(|mut f| {
            let mut magic = [0u8; 4];
            std::io::Read::read_exact(&mut f, &mut magic).map(|()| magic)
        })
        .is_ok_and(|m| &m == b"GGUF");
    if gguf {
        return Err(Error::input(format!(
            "{}: a GGUF file, not a tokenizer.json: pass it as --model (its tokenizer is read \
             from the GGUF's metadata)",
            path.display()
        )));
    }
    Ok(())
}

/// A GGUF file's metadata: key to value (`gguf_file::Content::metadata`).
pub type Metadata = HashMap<String, gguf_file::Value>;

fn md<'a>(md: &'a Metadata, key: &str) -> Result<&'a gguf_file::Value> {
    md.get(key).ok_or_else(|| {
        Error::input(format!(
            "GGUF metadata has no `{key}`: the file carries no usable tokenizer"
        ))
    })
}

fn md_string(md: &Metadata, key: &str) -> Result<String> {
    self::md(md, key)?
        .to_string()
        .cloned()
        .map_err(|e| Error::input(format!("GGUF metadata `{key}`: {e}")))
}

fn md_strings(md: &Metadata, key: &str) -> Result<Vec<String>> {
    let bad = |e: candle_core::Error| Error::input(format!("GGUF metadata `{key}`: {e}"));
    self::md(md, key)?
        .to_vec()
        .map_err(bad)?
        .iter()
        .map(|v| v.to_string().cloned().map_err(bad))
        .collect()
}

/// Rebuilds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
///
/// See [`from_gguf_metadata`].
///
/// # Errors
///
/// As [`from_gguf_metadata`].
pub fn from_gguf(content: &gguf_file::Content) -> Result<Tokenizer> {
    from_gguf_metadata(&content.metadata)
}

/// Rebuilds the tokenizer described by GGUF metadata (`tokenizer.ggml.*` keys), so that
/// it gives the ids of the model's own `tokenizer.json`.
///
/// Two kinds of vocabulary are rebuilt:
/// - byte-level BPE (`tokenizer.ggml.model = gpt2`), with the pre-tokenizers named in
///   [`SUPPORTED_PRE_TOKENIZERS`] (`tokenizer.ggml.pre`);
/// - SentencePiece (`tokenizer.ggml.model = llama`, `tokenizer.ggml.pre = default`: Llama 2,
///   Mistral v0.1-v0.3, Phi-3), as `transformers` converts it (see the `spm` module).
///
/// Control
/// tokens (type 3) become special added tokens and user-defined ones (type 4) plain added
/// tokens: both are matched in the text before BPE, as llama.cpp and `transformers` do.
///
/// # Errors
///
/// An input error naming the key at fault when a key is missing or malformed, when
/// `tokenizer.ggml.pre` is absent (the split rules would be a guess) or names a
/// pre-tokenizer this crate does not rebuild exactly, and for any other tokenizer model
/// (`bert`, `t5`, `gemma4`, ...).
pub fn from_gguf_metadata(metadata: &Metadata) -> Result<Tokenizer> {
    let model = md_string(metadata, "tokenizer.ggml.model")?;
    if model == "gemma4" {
        // llama.cpp sets this family's split rules whatever `tokenizer.ggml.pre` says.
        let tokens = md_strings(metadata, "tokenizer.ggml.tokens")?;
        let types = token_types(metadata, tokens.len())?;
        let merges = md_strings(metadata, "tokenizer.ggml.merges")?
            .iter()
            .map(|m| spm::split_merge(m))
            .collect::<Result<_>>()?;
        return spm::build_gemma4(metadata, &tokens, &types, merges);
    }
    if model != "gpt2" && model != "llama" {
        return Err(Error::input(format!(
            "GGUF tokenizer model `tokenizer.ggml.model = {model}` is not supported (only \
             byte-level BPE, `gpt2`; SentencePiece, `llama`; and Gemma 4's, `gemma4`); give \
             the model's tokenizer.json instead"
        )));
    }
    let pre = match metadata.get(pre::PRE_KEY) {
        Some(_) => md_string(metadata, pre::PRE_KEY)?,
        None => {
            return Err(Error::input(format!(
                "GGUF metadata has no `{}`: which split rules the model's tokenizer uses is \
                 unknown (llama.cpp falls back to a default and warns that output quality \
                 degrades); reconvert the model with a current llama.cpp or give its \
                 tokenizer.json instead",
                pre::PRE_KEY
            )))
        }
    };
    let tokens = md_strings(metadata, "tokenizer.ggml.tokens")?;
    let types = token_types(metadata, tokens.len())?;
    if model == "llama" {
        if pre != "default" {
            return Err(Error::input(format!(
                "GGUF `{} = {pre}` with a SentencePiece vocabulary (`tokenizer.ggml.model = \
                 llama`) is not supported (only `default`); give the model's tokenizer.json \
                 instead",
                pre::PRE_KEY
            )));
        }
        let scores = md_floats(metadata, "tokenizer.ggml.scores")?;
        return spm::build(metadata, &tokens, &scores, &types);
    }
    let recipe = pre::recipe(&pre)?;
    let merges: Vec<(String, String)> = md_strings(metadata, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(Error::input(format!(
                "GGUF metadata `tokenizer.ggml.merges`: malformed merge `{m}`"
            ))),
        })
        .collect::<Result<_>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(recipe.ignore_merges)
        .build()
        .map_err(|e| Error::input(format!("GGUF tokenizer: cannot build BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    if let Some(n) = recipe.normalizer {
        tok.with_normalizer(Some(n))
            .map_err(|e| Error::runtime(format!("GGUF tokenizer: normalizer: {e}")))?;
    }
    tok.with_pre_tokenizer(Some(recipe.pre_tokenizer));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    add_typed_tokens(&mut tok, &tokens, &types, false);
    Ok(tok)
}

/// Adds the tokens llama.cpp matches whole in the text before splitting it (with
/// `parse_special`, as it tokenizes a rendered chat prompt): control (type 3),
/// user-defined (type 4) and unknown (type 2) tokens. All are special here, so message
/// content that holds their text is refused (`special_token_in_content`) or encoded as
/// ordinary text (`--special-text encode`), never read as the token: Phi-3's `</s>` (its
/// end-of-text id) and Gemma 4's `<|tool_call>` are user-defined, Llama 2's `<unk>` is
/// unknown. Never normalized; with `phi3_rstrip`, Phi-3's whitespace rule (see `spm`).
pub(super) fn add_typed_tokens(
    tok: &mut Tokenizer,
    tokens: &[String],
    types: &[i32],
    phi3_rstrip: bool,
) {
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, t)| [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED].contains(t))
        .map(|(s, _)| {
            let keeps_space = ["<unk>", "<s>", "<|endoftext|>"].contains(&s.as_str());
            AddedToken::from(s.clone(), true)
                .normalized(false)
                .rstrip(phi3_rstrip && !keeps_space)
        })
        .collect();
    let _added = tok.add_special_tokens(added);
}

/// `tokenizer.ggml.token_type`, one per token (ordinary when the key is absent).
fn token_types(metadata: &Metadata, n: usize) -> Result<Vec<i32>> {
    const KEY: &str = "tokenizer.ggml.token_type";
    let Some(v) = metadata.get(KEY) else {
        return Ok(vec![TOKEN_NORMAL; n]);
    };
    let bad = |e: candle_core::Error| Error::input(format!("GGUF metadata `{KEY}`: {e}"));
    let types: Vec<i32> = v
        .to_vec()
        .map_err(bad)?
        .iter()
        .map(|t| t.to_i32().map_err(bad))
        .collect::<Result<_>>()?;
    if types.len() != n {
        return Err(Error::input(format!(
            "GGUF metadata `{KEY}` has {} entries for {n} tokens",
            types.len()
        )));
    }
    Ok(types)
}

fn md_floats(md: &Metadata, key: &str) -> Result<Vec<f32>> {
    let bad = |e: candle_core::Error| Error::input(format!("GGUF metadata `{key}`: {e}"));
    self::md(md, key)?
        .to_vec()
        .map_err(bad)?
        .iter()
        .map(|v| v.to_f32().map_err(bad))
        .collect()
}

/// `tokenizer.ggml.token_type` of an ordinary token.
const TOKEN_NORMAL: i32 = 1;
/// `tokenizer.ggml.token_type` of the unknown token (`<unk>`).
const TOKEN_UNKNOWN: i32 = 2;
/// `tokenizer.ggml.token_type` of a control token (`<|im_end|>`): a special token.
const TOKEN_CONTROL: i32 = 3;
/// `tokenizer.ggml.token_type` of a user-defined token: matched whole, not special.
const TOKEN_USER_DEFINED: i32 = 4;

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

/// A hex sha256 of the vocabulary: every token's text and id, added tokens included, in
/// id order. Two tokenizers with the same hash map ids to the same tokens, so samples
/// tokenized by one train and score correctly under the other (a GGUF and the Hugging
/// Face folder `gatt model export` writes from it agree).
pub fn vocabulary_sha256(tok: &Tokenizer) -> String {
    use sha2::{Digest, Sha256};
    let mut pieces: Vec<(u32, String)> = tok
        .get_vocab(true)
        .into_iter()
        .map(|(piece, id)| (id, piece))
        .collect();
    pieces.sort_unstable();
    let mut h = Sha256::new();
    for (id, piece) in &pieces {
        h.update(id.to_le_bytes());
        h.update((piece.len() as u64).to_le_bytes());
        h.update(piece.as_bytes());
    }
    format!("{:x}", h.finalize())
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

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod vectors;
