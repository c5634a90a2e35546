//! Which tokenizer made a file of masked samples: a stamp in the Parquet footer.
//!
//! Token ids mean nothing without their vocabulary. Samples masked for one model and
//! trained or scored under another (a Llama 2 vocabulary under SmolLM2) are silently
//! garbage: every id is in range, the loss is just high. `gatt mask` therefore writes
//! [`TokenizerStamp`] into the file-level key-value metadata of every Parquet file of
//! samples (key [`TOKENIZER_KEY`], a JSON value), and `gatt train` and `gatt score`
//! refuse a file whose stamp is not their model's. JSON lines have no footer: their
//! samples carry no stamp, and only the range of their ids is checked.

use super::{parquet::ParquetFile, Format, Location};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The Parquet key-value metadata key of the stamp.
pub const TOKENIZER_KEY: &str = "gatt.tokenizer";

/// The vocabulary a file's samples were tokenized with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerStamp {
    /// [`crate::tokenizer::vocabulary_sha256`] of the tokenizer.
    pub vocab_sha256: String,
    /// Tokens in the vocabulary, added tokens included.
    pub vocab_size: usize,
}

impl TokenizerStamp {
    /// The stamp of `tok`.
    pub fn of(tok: &tokenizers::Tokenizer) -> Self {
        TokenizerStamp {
            vocab_sha256: crate::tokenizer::vocabulary_sha256(tok),
            vocab_size: tok.get_vocab_size(true),
        }
    }

    /// Checks that samples stamped `self` (in `path`) may be read with `model`'s
    /// tokenizer.
    ///
    /// # Errors
    ///
    /// An input error naming both tokenizers when the vocabularies differ.
    pub fn check_against(&self, model: &TokenizerStamp, path: &Path) -> Result<()> {
        // Hex written in capitals by another tool is the same hash.
        if self.vocab_sha256.eq_ignore_ascii_case(&model.vocab_sha256) {
            return Ok(());
        }
        Err(Error::input(format!(
            "the samples were tokenized with another vocabulary ({} tokens, sha256 {}) \
             than the model's ({} tokens, sha256 {}): their ids would stand for other \
             tokens. Mask the dialogues again with this model (`gatt mask --model ...`)",
            self.vocab_size,
            short(&self.vocab_sha256),
            model.vocab_size,
            short(&model.vocab_sha256),
        ))
        .at(Location::in_file(path)))
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The stamp of the samples in `path`: `None` for JSON lines and for Parquet files
/// without one (written by other tools or older versions).
///
/// # Errors
///
/// An input error when the file cannot be read as Parquet, or its stamp is not valid
/// JSON of a [`TokenizerStamp`].
pub fn read_stamp(path: &Path) -> Result<Option<TokenizerStamp>> {
    if Format::from_path(path)? != Format::Parquet {
        return Ok(None);
    }
    let file = ParquetFile::open(path)?;
    let Some(value) = file.key_value(TOKENIZER_KEY) else {
        return Ok(None);
    };
    serde_json::from_str(value).map(Some).map_err(|e| {
        Error::input(format!(
            "the `{TOKENIZER_KEY}` stamp in the file's metadata is not readable ({e}); \
             it should be JSON such as {{\"vocab_sha256\": \"<64 hex digits>\", \
             \"vocab_size\": 49152}}, as `gatt mask` writes it: mask the dialogues again"
        ))
        .at(Location::in_file(path))
    })
}
