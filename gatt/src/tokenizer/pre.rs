//! What a GGUF's `tokenizer.ggml.pre` value stands for: the normalizer, split rules and
//! merge behaviour of the model's own `tokenizer.json`.
//!
//! llama.cpp names the pre-tokenizer of a byte-level BPE model in `tokenizer.ggml.pre`
//! and maps each name to regexes and flags in `src/llama-vocab.cpp` (`ignore_merges` for
//! Llama 3, for instance). Here each supported name is rebuilt the way the model's
//! `tokenizer.json` spells it, so that the ids are the model's own; the test against
//! llama.cpp's reference vocabularies (`vectors.rs`) checks every supported family. A
//! name not listed in [`SUPPORTED`] is refused rather than guessed.

use crate::error::{Error, Result};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::punctuation::Punctuation;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

/// The metadata key that names the pre-tokenizer.
pub const PRE_KEY: &str = "tokenizer.ggml.pre";

/// The `tokenizer.ggml.pre` values [`recipe`] rebuilds.
pub const SUPPORTED: &[&str] = &[
    "gpt-2",
    "llama-bpe",
    "llama3",
    "qwen2",
    "qwen35",
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "mpt",
    "falcon",
    "deepseek-llm",
    "deepseek-coder",
];

/// Llama 3 (`llama-bpe`): up to three digits per piece.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2: one digit per piece.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5: Qwen2's rules with combining marks kept with their letters.
const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek LLM's letters (the ranges its tokenizer.json lists).
const DEEPSEEK_LLM_LETTERS: &str = r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+";

/// DeepSeek LLM's punctuation: ASCII, full-width, quotes, ideographic.
const DEEPSEEK_LLM_PUNCTUATION: &str =
    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+";

/// CJK runs (DeepSeek).
const DEEPSEEK_CJK: &str = r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+";

/// How to rebuild one family's tokenizer around its BPE vocabulary.
pub(super) struct Recipe {
    /// Applied before splitting (the model's tokenizer.json has it; llama.cpp does not).
    pub normalizer: Option<NormalizerWrapper>,
    pub pre_tokenizer: PreTokenizerWrapper,
    /// A piece that is itself in the vocabulary becomes that token without merging
    /// (Llama 3's tokenizer.json sets `ignore_merges`; llama.cpp does the same).
    pub ignore_merges: bool,
}

/// The recipe for `tokenizer.ggml.pre = pre`; refused (naming the key and the value)
/// when the family is not one this crate rebuilds exactly.
pub(super) fn recipe(pre: &str) -> Result<Recipe> {
    let gpt2 = || ByteLevel::new(false, false, true);
    // After a regex split: bytes to characters only.
    let bytes = || ByteLevel::new(false, false, false).into();
    let seq = |parts: Vec<PreTokenizerWrapper>| Some(Sequence::new(parts).into());
    let (normalizer, pre_tokenizer, ignore_merges) = match pre {
        "gpt-2" => (None, Some(gpt2().into()), false),
        "llama-bpe" | "llama3" => (None, seq(vec![split(LLAMA3)?, bytes()]), true),
        "qwen2" => (Some(NFC.into()), seq(vec![split(QWEN2)?, bytes()]), false),
        "qwen35" => (None, seq(vec![split(QWEN35)?, bytes()]), false),
        // GPT-2's regex with every digit on its own.
        "smollm" | "starcoder" | "refact" => (
            None,
            seq(vec![Digits::new(true).into(), gpt2().into()]),
            false,
        ),
        "command-r" => (
            Some(NFC.into()),
            seq(vec![Digits::new(true).into(), gpt2().into()]),
            false,
        ),
        "mpt" => (Some(NFC.into()), Some(gpt2().into()), false),
        "falcon" => (
            None,
            seq(vec![
                Punctuation::new(SplitDelimiterBehavior::Contiguous).into(),
                gpt2().into(),
                Digits::new(false).into(),
                split("[0-9][0-9][0-9]")?,
            ]),
            false,
        ),
        "deepseek-coder" => (
            None,
            seq(vec![
                split(r"[\r\n]")?,
                split(r"\s?\p{L}+")?,
                split(r"\s?\p{P}+")?,
                split(DEEPSEEK_CJK)?,
                split(r"\p{N}")?,
                bytes(),
            ]),
            false,
        ),
        "deepseek-llm" => (
            None,
            seq(vec![
                split(r"[\r\n]")?,
                split(DEEPSEEK_LLM_LETTERS)?,
                split(DEEPSEEK_LLM_PUNCTUATION)?,
                split(r"\s+$")?,
                split(DEEPSEEK_CJK)?,
                Digits::new(true).into(),
                bytes(),
            ]),
            false,
        ),
        _ => (None, None, false),
    };
    let pre_tokenizer = pre_tokenizer.ok_or_else(|| {
        Error::input(format!(
            "{PRE_KEY} = {pre} is not supported (supported: {}); give the model's \
             tokenizer.json instead",
            SUPPORTED.join(", ")
        ))
    })?;
    Ok(Recipe {
        normalizer,
        pre_tokenizer,
        ignore_merges,
    })
}

/// A regex split that keeps every match as a piece of its own.
fn split(pattern: &str) -> Result<PreTokenizerWrapper> {
    let s = Split::new(
        SplitPattern::Regex(pattern.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| Error::runtime(format!("pre-tokenizer regex `{pattern}`: {e}")))?;
    Ok(s.into())
}
