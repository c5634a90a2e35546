pub mod backend;
pub mod constraints;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod mask;
pub mod model;
pub mod report;
pub mod synth;
pub mod templates;
pub mod train;

use gatt::model::{resolve_format, ChatFormat, FormatError, AUTO_TEMPLATE};
use gatt::{Error, Result};
use std::path::PathBuf;

/// Where the tokenizer and chat template come from: `--model` or `--tokenizer`, with
/// `--template` overriding the template.
#[derive(clap::Args, Debug, Clone)]
pub struct FormatArgs {
    /// Model whose tokenizer and chat template to use: `default` (SmolLM2-135M-Instruct,
    /// fetched on first use), a .gguf file, or a Hugging Face model folder.
    #[arg(long, value_name = "M", conflicts_with = "tokenizer")]
    pub model: Option<String>,
    /// A tokenizer.json (its folder's tokenizer_config.json supplies the template), or a
    /// model folder.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Chat template: `auto` (the model's own), a built-in name (see `gatt templates`),
    /// a .jinja file, or a tokenizer_config.json. A .jinja file takes the tokenizer's own
    /// BOS and EOS (GGUF `tokenizer.ggml.bos/eos_token_id`, or the tokenizer_config.json
    /// or config.json next to tokenizer.json); where no end-of-turn token can be known,
    /// pass a tokenizer_config.json that names `eos_token`.
    #[arg(long, value_name = "NAME|PATH", default_value = AUTO_TEMPLATE)]
    pub template: String,
}

impl FormatArgs {
    /// The chat format these flags name; a missing tokenizer or template is reported
    /// with the flag that supplies it.
    pub fn load(&self) -> Result<ChatFormat> {
        resolve_format(
            self.model.as_deref(),
            self.tokenizer.as_deref(),
            &self.template,
        )
        .map_err(|e| match e {
            FormatError::NoSource => Error::input(
                "pass --model M (default, a .gguf file or a model folder) or --tokenizer PATH",
            ),
            FormatError::NoTemplate(what) => {
                Error::input(format!("{what}; pass --template NAME|PATH"))
            }
            FormatError::Model(e) => e.context("--model"),
            FormatError::Other(e) => e,
        })
    }
}
