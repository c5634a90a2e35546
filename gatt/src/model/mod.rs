//! Where a model comes from (`default`, a GGUF file, a Hugging Face folder) and what
//! every stage needs of it besides the weights: tokenizer, chat template, stop tokens.

pub mod fetch;
mod format;
mod resolve;

pub use fetch::{default_model_path, ensure_default_model, gatt_home};
pub use format::{load_template, read_gguf, ChatFormat, TokenizerSpecials};
pub use resolve::{resolve_format, FormatError, AUTO_TEMPLATE};

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The name [`ModelSource::resolve`] gives the default model (SmolLM2-135M-Instruct).
pub const DEFAULT_MODEL: &str = "default";

/// A model on disk, by file layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A single GGUF file (weights, tokenizer and template in its metadata).
    Gguf(PathBuf),
    /// A Hugging Face folder: config.json, *.safetensors, tokenizer.json,
    /// tokenizer_config.json.
    HfDir(PathBuf),
}

impl ModelSource {
    /// Resolves a model as the user names it: `default`, a `.gguf` file or a model
    /// folder. `default` downloads the default model on first use.
    ///
    /// # Errors
    ///
    /// An input error when `spec` names nothing usable; the download's error for
    /// `default`.
    pub fn resolve(spec: &str) -> Result<Self> {
        if spec == DEFAULT_MODEL {
            return Ok(ModelSource::Gguf(ensure_default_model()?));
        }
        let path = Path::new(spec);
        if path.is_dir() {
            if !path.join("tokenizer.json").exists() && !path.join("config.json").exists() {
                return Err(Error::input(format!(
                    "{spec}: folder has neither config.json nor tokenizer.json; \
                     expected a Hugging Face model folder"
                )));
            }
            return Ok(ModelSource::HfDir(path.to_path_buf()));
        }
        if path.is_file() {
            return Ok(ModelSource::Gguf(path.to_path_buf()));
        }
        Err(Error::input(format!(
            "{spec}: no such file or folder; expected `default`, a .gguf file or a \
             Hugging Face model folder"
        )))
    }

    /// The GGUF file or the model folder.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(p) | ModelSource::HfDir(p) => p,
        }
    }

    /// The tokenizer alone (for models whose template comes from elsewhere): rebuilt
    /// from a GGUF's `tokenizer.ggml.*` metadata, or a folder's `tokenizer.json`.
    ///
    /// # Errors
    ///
    /// An input error when the file is missing, unreadable as GGUF or `tokenizer.json`,
    /// or holds a tokenizer of a kind this crate does not build.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        match self {
            ModelSource::Gguf(p) => crate::tokenizer::from_gguf(&read_gguf(p)?),
            ModelSource::HfDir(d) => crate::tokenizer::from_json_file(&d.join("tokenizer.json")),
        }
    }

    /// The tokenizer with its own BOS and EOS tokens, awaiting a chat template named
    /// elsewhere ([`ChatFormat::with_template`]): a GGUF's `tokenizer.ggml.*` metadata,
    /// or a folder's `tokenizer.json` with [`TokenizerSpecials::of_hf_dir`].
    ///
    /// # Errors
    ///
    /// As [`ModelSource::tokenizer`].
    pub fn bare_format(&self) -> Result<ChatFormat> {
        match self {
            ModelSource::Gguf(p) => {
                let content = read_gguf(p)?;
                let tok =
                    crate::tokenizer::from_gguf(&content).map_err(|e| e.context(p.display()))?;
                ChatFormat::bare_with(tok, TokenizerSpecials::of_gguf(&content))
            }
            ModelSource::HfDir(d) => {
                let tok = crate::tokenizer::from_json_file(&d.join("tokenizer.json"))?;
                let specials = TokenizerSpecials::of_hf_dir(d, &tok)?;
                ChatFormat::bare_with(tok, specials)
            }
        }
    }

    /// Tokenizer, chat template and stop tokens, without loading the weights.
    ///
    /// # Errors
    ///
    /// An input error when the files are unreadable or hold no chat template.
    pub fn chat_format(&self) -> Result<ChatFormat> {
        Ok(self.try_chat_format()?)
    }

    /// [`ModelSource::chat_format`], telling a missing template apart.
    pub(crate) fn try_chat_format(&self) -> Result<ChatFormat, FormatError> {
        match self {
            ModelSource::Gguf(p) => ChatFormat::try_from_gguf(p),
            ModelSource::HfDir(p) => ChatFormat::try_from_hf_dir(p),
        }
    }
}
